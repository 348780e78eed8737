//! The outcome writer: group commit, then count, then ack.
//!
//! Owns the moment a delivery is acknowledged. Outcomes arrive on a channel;
//! the writer takes as many as are waiting (up to the batch limit), commits
//! them in one transaction, and only then counts what the commit newly
//! recorded in the metrics and acks the deliveries, so the job counters show
//! exactly what PostgreSQL holds. It must never ack before the commit
//! returns.

use crate::patience::{Io, persist};
use chrono::Utc;
use courier_amqp::Acker;
use courier_core::JobState;
use courier_core::retry::DeadReason;
use courier_store::{Outcome, Store};
use courier_telemetry::{JobOutcome, Metrics};
use futures_util::future::join_all;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// An outcome and the delivery it settles.
#[derive(Debug)]
pub struct Completed {
    pub outcome: Outcome,
    pub acker: Acker,
    /// The provider whose queue the delivery came from (`None`: unrouted).
    pub queue_provider: Option<String>,
}

/// Runs until every sender is dropped and the channel is drained, or until
/// `abandon` fires while a commit keeps failing (its deliveries then stay
/// unacked and come back).
pub async fn run(
    store: Store,
    metrics: Arc<Metrics>,
    mut rx: mpsc::Receiver<Completed>,
    batch_max: usize,
    abandon: CancellationToken,
) {
    let mut batch: Vec<Completed> = Vec::with_capacity(batch_max);
    while rx.recv_many(&mut batch, batch_max).await > 0 {
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut settle = Vec::with_capacity(batch.len());
        for c in batch.drain(..) {
            outcomes.push(c.outcome);
            settle.push((c.acker, c.queue_provider));
        }
        let commit = || async {
            let clock = Instant::now();
            let committed = store.commit(&outcomes).await?;
            metrics.batch_committed(outcomes.len(), clock.elapsed());
            Ok::<_, courier_store::StoreError>(committed)
        };
        let Ok(mut committed) = persist(Io::RecordOutcomes, &abandon, &metrics, commit).await
        else {
            tracing::error!(
                outcomes = outcomes.len(),
                "gave up recording outcomes; their deliveries will be redelivered"
            );
            return;
        };
        for (outcome, (_, queue_provider)) in outcomes.iter().zip(&settle) {
            // A second copy of work already recorded changed nothing: not
            // counted again.
            if committed.take(outcome) {
                count(&metrics, outcome, queue_provider.as_deref());
            }
        }
        let acks = join_all(settle.iter().map(|(acker, _)| courier_amqp::ack(acker))).await;
        for result in acks {
            if let Err(e) = result {
                // The outcome is durable; a redelivery will be seen as a duplicate.
                tracing::warn!(error = %e, "ack after commit failed");
            }
        }
    }
}

/// Counts one committed outcome.
fn count(metrics: &Metrics, outcome: &Outcome, queue_provider: Option<&str>) {
    let since = |created_at: chrono::DateTime<Utc>| (Utc::now() - created_at).to_std().ok();
    match outcome {
        Outcome::Attempted {
            job, dead_letter, ..
        } => {
            let result = match job.state {
                JobState::Succeeded => JobOutcome::Succeeded,
                JobState::Dead => JobOutcome::Dead,
                JobState::Retrying | JobState::Queued => JobOutcome::Retried,
            };
            metrics.completed(
                Some(&job.provider),
                Some(&job.operation),
                result,
                since(job.created_at),
                job.attempts,
            );
            if let Some(letter) = dead_letter {
                metrics.dead_lettered(letter.provider.as_deref(), letter.reason);
            }
        }
        Outcome::Rejected { job, dead_letter } => {
            let result = match dead_letter.reason {
                DeadReason::Invalid => JobOutcome::Invalid,
                _ => JobOutcome::Dead,
            };
            metrics.completed(
                dead_letter.provider.as_deref(),
                dead_letter.operation.as_deref(),
                result,
                job.as_ref().and_then(|j| since(j.created_at)),
                dead_letter.attempts,
            );
            metrics.dead_lettered(dead_letter.provider.as_deref(), dead_letter.reason);
        }
        Outcome::Duplicate { .. } => {
            metrics.completed(queue_provider, None, JobOutcome::Duplicate, None, 0)
        }
    }
}
