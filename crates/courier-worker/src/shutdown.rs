//! Shutdown without losing work, and the retention pass that runs until it.
//!
//! Owns the order of a worker's shutdown: stop consuming, finish (or, after
//! the grace period, abandon) in-flight calls, let the writer commit and ack
//! what is done, close the consumers' channels and wait for the broker to
//! confirm, close the broker connection (which returns every unacked
//! delivery), close the store, and only then stop answering `/readyz`. It
//! must never close the connection before the writer has acked or before
//! the channels' closes are confirmed, and never drop a subscription whose
//! deliveries still wait for their ack.

use crate::supervisor;
use courier_amqp::Link;
use courier_store::Store;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long shutdown gives the outcome writer to flush after in-flight work
/// has finished or been abandoned.
const FLUSH_DEADLINE: Duration = Duration::from_secs(10);
/// How long shutdown waits for the broker to confirm a close, and for the
/// telemetry tasks to end.
const STEP_DEADLINE: Duration = Duration::from_secs(5);

/// Applies `retention.succeeded_attempts` every `interval` until `stop`.
pub(crate) async fn retention(
    store: Store,
    age: Duration,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.cancelled() => return,
        }
        let cutoff =
            chrono::Utc::now() - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
        match store.prune_succeeded_attempts(cutoff, 10_000).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(
                pruned,
                "retention: deleted attempt rows of old succeeded jobs"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "retention pass failed; trying again next interval")
            }
        }
    }
}

pub(crate) struct Shutdown {
    pub(crate) stop: CancellationToken,
    pub(crate) abandon: CancellationToken,
    pub(crate) flush_abandon: CancellationToken,
    pub(crate) grace: Duration,
    /// Hands back the last connection's subscriptions when it ends.
    pub(crate) supervisor: JoinHandle<Vec<supervisor::Subscription>>,
    pub(crate) tasks: TaskTracker,
    pub(crate) writer: JoinHandle<()>,
    pub(crate) link: Link,
    pub(crate) store: Store,
    /// Fired last: `/readyz` answers "draining" until the very end.
    pub(crate) telemetry_stop: CancellationToken,
    /// The telemetry server, the reconnection counter, the sampler.
    pub(crate) reporters: Vec<JoinHandle<()>>,
}

pub(crate) async fn sequence(s: Shutdown) {
    s.stop.cancelled().await;
    tracing::info!("shutting down: no new deliveries; finishing in-flight jobs");
    // Held until the writer has acked: dropping a subscription closes its
    // channel and strands the acks of its deliveries.
    let subscriptions = s.supervisor.await.unwrap_or_default();
    s.tasks.close();
    if tokio::time::timeout(s.grace, s.tasks.wait()).await.is_err() {
        tracing::warn!(
            unfinished = s.tasks.len(),
            "shutdown grace period over: requeuing jobs still in flight"
        );
        s.abandon.cancel();
        if tokio::time::timeout(FLUSH_DEADLINE, s.tasks.wait())
            .await
            .is_err()
        {
            tracing::error!(
                unfinished = s.tasks.len(),
                "jobs still in flight after abandoning them; their deliveries return when the connection closes"
            );
        }
    }
    // Every sender is gone now, so the writer ends once it has flushed.
    let mut writer = s.writer;
    if tokio::time::timeout(FLUSH_DEADLINE, &mut writer)
        .await
        .is_err()
    {
        tracing::error!(
            "outcome writer could not flush in time: its deliveries stay unacked and will be redelivered"
        );
        s.flush_abandon.cancel();
        let _ = writer.await;
    }
    // Closed and confirmed, not just dropped: the broker handles a channel's
    // acks before its close, and a dropped channel's close would race the
    // connection's (courier_amqp::close says how that loses acks).
    let closes = subscriptions
        .iter()
        .map(|(channel, _)| courier_amqp::close(channel));
    for closed in futures_util::future::join_all(closes).await {
        if let Err(e) = closed {
            tracing::debug!(error = %e, "closing a consumer's channel");
        }
    }
    drop(subscriptions);
    // Closing the connection returns every unacked delivery to its queue.
    if let Err(e) = s.link.close("courier worker shutdown").await {
        tracing::debug!(error = %e, "closing the broker connection");
    }
    s.store.close().await;
    s.telemetry_stop.cancel();
    for mut reporter in s.reporters {
        if tokio::time::timeout(STEP_DEADLINE, &mut reporter)
            .await
            .is_err()
        {
            reporter.abort();
        }
    }
    tracing::info!("worker stopped");
}
