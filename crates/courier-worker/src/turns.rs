//! One delivery of a job at a time in this worker, from its lookup until
//! its outcome is committed.
//!
//! When a connection is lost, RabbitMQ redelivers what was unacked on it,
//! possibly to this same worker on its new connection, while the first
//! delivery is still calling the provider or waiting for its commit.
//! PostgreSQL cannot tell the second copy the job is being done (nothing is
//! recorded yet), so without a turn it would call the provider again. The
//! second copy waits for the first's turn to end, then looks the job up
//! afresh and finds the outcome recorded: a duplicate, acked without a call.
//! A publisher sending one id twice at once gets the same.
//!
//! Owns the in-process register of jobs being handled. It must never hold a
//! turn past the commit of its outcome (the writer drops it), and never
//! reach across processes: two workers can still both hold a redelivered
//! job; the provider's idempotency key covers that case.

use crate::patience::Abandoned;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The jobs this worker is handling. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Turns {
    taken: Arc<Mutex<HashMap<Uuid, watch::Sender<()>>>>,
}

/// A job's turn: while it lives, other deliveries of the job wait.
#[derive(Debug)]
pub struct Turn {
    id: Uuid,
    taken: Arc<Mutex<HashMap<Uuid, watch::Sender<()>>>>,
}

impl Turns {
    /// Takes `id`'s turn, waiting while another delivery of the job holds
    /// it; `Err` when `stop` fires first.
    pub async fn take(&self, id: Uuid, stop: &CancellationToken) -> Result<Turn, Abandoned> {
        loop {
            let mut ended = {
                let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
                match taken.get(&id) {
                    Some(holder) => holder.subscribe(),
                    None => {
                        taken.insert(id, watch::channel(()).0);
                        return Ok(Turn {
                            id,
                            taken: self.taken.clone(),
                        });
                    }
                }
            };
            // The holder's sender is dropped when its turn ends.
            tokio::select! {
                _ = ended.changed() => {}
                _ = stop.cancelled() => return Err(Abandoned),
            }
        }
    }

    /// Whether no job holds a turn.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.taken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.taken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_second_delivery_waits_for_the_first_turn_to_end() {
        let turns = Turns::default();
        let stop = CancellationToken::new();
        let id = Uuid::now_v7();
        let first = turns.take(id, &stop).await.expect("free");
        let second = {
            let turns = turns.clone();
            let stop = stop.clone();
            tokio::spawn(async move { turns.take(id, &stop).await.map(|_| ()) })
        };
        // Another job is not held up.
        let other = turns.take(Uuid::now_v7(), &stop).await.expect("free");
        drop(other);
        // On this single-threaded runtime, yielding runs the second
        // delivery until it waits (or, were it not to wait, to its end).
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!second.is_finished(), "the second delivery did not wait");
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("the second delivery got its turn")
            .expect("joined")
            .expect("not abandoned");
        assert!(turns.is_empty(), "a turn outlived its holder");
    }

    #[tokio::test]
    async fn a_waiting_delivery_is_abandoned_at_shutdown() {
        let turns = Turns::default();
        let stop = CancellationToken::new();
        let id = Uuid::now_v7();
        let _first = turns.take(id, &stop).await.expect("free");
        let waiting = {
            let turns = turns.clone();
            let stop = stop.clone();
            tokio::spawn(async move { turns.take(id, &stop).await.map(|_| ()) })
        };
        stop.cancel();
        let waited = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("shutdown ended the wait")
            .expect("joined");
        assert!(waited.is_err());
    }
}
