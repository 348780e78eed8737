//! Taking a batch off a channel, with an optional linger: the one way the
//! writer and the lookups form their batches.
//!
//! At low load every job is a batch of one, and each batch costs PostgreSQL
//! round trips, a WAL flush, broker frames and the wake-ups around them. A
//! linger lets a small batch wait a moment for company; a large batch (the
//! load already forms it) never waits. It must never hold a batch longer
//! than the linger it was given.

use std::time::Duration;
use tokio::sync::mpsc;

/// A batch at least this large goes at once: the load is forming batches
/// by itself, and waiting would only add latency.
pub(crate) const LINGER_BELOW: usize = 16;

/// Waits for at least one item, then takes what is waiting, up to `max`.
/// When that is fewer than [`LINGER_BELOW`] and `linger` is not zero,
/// sleeps `linger` once and takes what arrived meanwhile. Returns how many
/// were taken; 0 when the channel is closed and empty.
pub(crate) async fn gather<T>(
    rx: &mut mpsc::Receiver<T>,
    batch: &mut Vec<T>,
    max: usize,
    linger: Duration,
) -> usize {
    let taken = rx.recv_many(batch, max).await;
    if taken == 0 || linger.is_zero() || batch.len() >= LINGER_BELOW.min(max) {
        return taken;
    }
    // One sleep, not a wake-up per arrival: the point is fewer wake-ups.
    tokio::time::sleep(linger).await;
    let before = batch.len();
    while batch.len() < max {
        match rx.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
    taken + (batch.len() - before)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    const LINGER: Duration = Duration::from_millis(2);

    /// A sender of 1, then (once the gatherer holds it) of 2 and 3.
    async fn one_then_two_more(linger: Duration) -> (Vec<u32>, Duration) {
        let (tx, mut rx) = mpsc::channel(8);
        tx.send(1).await.expect("open");
        let start = Instant::now();
        let gathering = tokio::spawn(async move {
            let mut batch = Vec::new();
            let taken = gather(&mut rx, &mut batch, 8, linger).await;
            assert_eq!(taken, batch.len());
            // Handed back, so that the sends below find it open.
            (batch, start.elapsed(), rx)
        });
        // The gatherer takes 1 and either returns or sleeps.
        while tx.capacity() < 8 {
            tokio::task::yield_now().await;
        }
        tx.send(2).await.expect("open");
        tx.send(3).await.expect("open");
        let (batch, waited, _rx) = gathering.await.expect("the gatherer ran");
        (batch, waited)
    }

    #[tokio::test(start_paused = true)]
    async fn a_small_batch_waits_the_linger_for_what_arrives_meanwhile() {
        let (batch, waited) = one_then_two_more(LINGER).await;
        assert_eq!(batch, [1, 2, 3]);
        assert_eq!(waited, LINGER);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_linger_a_batch_goes_at_once() {
        let (batch, waited) = one_then_two_more(Duration::ZERO).await;
        assert_eq!(batch, [1]);
        assert_eq!(waited, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_batch_never_waits_and_none_exceeds_the_maximum() {
        let (tx, mut rx) = mpsc::channel(64);
        for i in 0..40 {
            tx.send(i).await.expect("open");
        }
        let start = Instant::now();
        let mut batch = Vec::new();
        assert_eq!(gather(&mut rx, &mut batch, 30, LINGER).await, 30);
        assert_eq!(start.elapsed(), Duration::ZERO);
        // The 10 left are a small batch: they wait the linger.
        let mut rest = Vec::new();
        assert_eq!(gather(&mut rx, &mut rest, 12, LINGER).await, 10);
        assert_eq!(start.elapsed(), LINGER);
        assert_eq!(rest, (30..40).collect::<Vec<_>>());
        drop(tx);
        assert_eq!(gather(&mut rx, &mut Vec::new(), 12, LINGER).await, 0);
    }
}
