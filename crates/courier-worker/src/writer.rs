//! The outcome writer: group commit, then count, then ack.
//!
//! Owns the moment a delivery is acknowledged. Outcomes arrive on a channel;
//! the writer takes as many as are waiting (up to the batch limit; a small
//! batch waits `worker.linger_ms` for company, [`crate::gather`]), commits
//! them in one transaction, and only then counts what the commit newly
//! recorded in the metrics and acks the deliveries, so the job counters show
//! exactly what PostgreSQL holds.
//!
//! No single outcome may block the others: when PostgreSQL refuses a batch
//! for its content (a value it cannot store), the batch is split until the
//! refused outcomes are isolated; the rest commits and is acked. A refused
//! outcome is recorded again with every text made storable, else as a bare
//! dead letter naming the refusal, else (when even that is refused) the
//! delivery goes to its queue's dead-letter exchange. It must never ack
//! before the commit that records the delivery returns.

use crate::gather::gather;
use crate::observe::Running;
use crate::patience::{Io, Stop, persist};
use crate::turns::Turn;
use chrono::Utc;
use courier_amqp::Acker;
use courier_core::JobState;
use courier_core::retry::DeadReason;
use courier_store::{DeadLetterRow, HeldConnection, Outcome, StoreError};
use courier_telemetry::{JobOutcome, Metrics};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// An outcome and the delivery it settles.
#[derive(Debug)]
pub struct Completed {
    pub outcome: Outcome,
    /// Ends once the outcome is committed: another delivery of the job may
    /// then look it up.
    pub turn: Option<Turn>,
    pub acker: Acker,
    /// The provider whose queue the delivery came from (`None`: unrouted).
    pub queue_provider: Option<String>,
}

/// What committing one outcome came to.
#[derive(Debug)]
pub enum Recorded {
    /// It is in PostgreSQL; `true` when this commit put it there (rather
    /// than finding it recorded already).
    Yes(bool),
    /// PostgreSQL refuses it for its content.
    Refused(StoreError),
}

/// Runs until every sender is dropped and the channel is drained, or until
/// `abandon` fires while a commit keeps failing (its deliveries then stay
/// unacked and come back).
pub async fn run(
    store: HeldConnection,
    metrics: Arc<Metrics>,
    mut rx: mpsc::Receiver<Completed>,
    batch_max: usize,
    linger: Duration,
    abandon: CancellationToken,
    running: Arc<Running>,
) {
    let mut batch: Vec<Completed> = Vec::with_capacity(batch_max);
    while gather(&mut rx, &mut batch, batch_max, linger).await > 0 {
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut settle = Vec::with_capacity(batch.len());
        let mut turns = Vec::with_capacity(batch.len());
        for c in batch.drain(..) {
            outcomes.push(c.outcome);
            settle.push((c.acker, c.queue_provider));
            turns.push(c.turn);
        }
        let Ok(recorded) = commit_isolating(&store, &metrics, &abandon, &running, &outcomes).await
        else {
            tracing::error!(
                outcomes = outcomes.len(),
                "gave up recording outcomes; their deliveries will be redelivered"
            );
            return;
        };
        let mut acks = Vec::with_capacity(settle.len());
        for ((outcome, (acker, queue_provider)), recorded) in
            outcomes.iter().zip(&settle).zip(recorded)
        {
            match recorded {
                // A second copy of work already recorded changed nothing:
                // not counted again.
                Recorded::Yes(newly) => {
                    if newly {
                        count(&metrics, outcome, queue_provider.as_deref());
                    }
                    acks.push(acker);
                }
                Recorded::Refused(e) => {
                    match set_aside(&store, &metrics, &abandon, &running, outcome, &e).await {
                        Ok(true) => {
                            metrics.dead_lettered(queue_provider.as_deref(), DeadReason::Refused);
                            acks.push(acker);
                        }
                        Ok(false) => {
                            // Sent before the acks below, so that none of
                            // them covers this delivery.
                            if let Err(e) = courier_amqp::reject(acker).await {
                                tracing::warn!(error = %e, "reject after a refused record failed");
                            }
                        }
                        Err(Stop::Abandoned) => return,
                        Err(Stop::Refused(never)) => match never {},
                    }
                }
            }
        }
        // Recorded: other deliveries of these jobs may look them up now.
        drop(turns);
        match courier_amqp::ack_committed(acks).await {
            Ok(sent) => metrics.acks_sent(sent.multiple, sent.single),
            // The outcomes are durable; a redelivery will be seen as a duplicate.
            Err(e) => tracing::warn!(error = %e, "ack after commit failed"),
        }
    }
}

/// Commits `outcomes`, splitting the batch when PostgreSQL refuses it for
/// its content, until each refused outcome stands alone. Costs one extra
/// transaction per halving: about 2·log2(batch) per refused outcome, none
/// when nothing is refused. Marks the worker not ready while commits fail.
pub async fn commit_isolating(
    store: &HeldConnection,
    metrics: &Metrics,
    abandon: &CancellationToken,
    running: &Running,
    outcomes: &[Outcome],
) -> Result<Vec<Recorded>, Stop<std::convert::Infallible>> {
    let mut recorded: Vec<Option<Recorded>> = outcomes.iter().map(|_| None).collect();
    // A stack of ranges still to commit: the whole batch at first.
    let mut pending = Vec::with_capacity(8);
    pending.push(0..outcomes.len());
    while let Some(range) = pending.pop() {
        if range.is_empty() {
            continue;
        }
        let part = &outcomes[range.clone()];
        let commit = || async {
            let clock = Instant::now();
            let result = store.commit(part).await;
            running
                .commit_failing
                .store(result.is_err(), Ordering::SeqCst);
            let committed = result?;
            metrics.batch_committed(part.len(), clock.elapsed());
            Ok::<_, StoreError>(committed)
        };
        match persist(Io::RecordOutcomes, abandon, metrics, commit).await {
            Ok(mut committed) => {
                for (i, outcome) in range.clone().zip(part) {
                    recorded[i] = Some(Recorded::Yes(committed.take(outcome)));
                }
            }
            Err(Stop::Abandoned) => return Err(Stop::Abandoned),
            Err(Stop::Refused(e)) if range.len() == 1 => {
                running.commit_failing.store(false, Ordering::SeqCst);
                recorded[range.start] = Some(Recorded::Refused(e));
            }
            Err(Stop::Refused(_)) => {
                let middle = range.start + range.len() / 2;
                pending.push(middle..range.end);
                pending.push(range.start..middle);
            }
        }
    }
    Ok(recorded
        .into_iter()
        .map(|r| r.unwrap_or(Recorded::Yes(false)))
        .collect())
}

/// Records an outcome PostgreSQL refused: with its texts made storable, else
/// as a bare dead letter that says why. `Ok(false)`: nothing could be
/// recorded.
async fn set_aside(
    store: &HeldConnection,
    metrics: &Metrics,
    abandon: &CancellationToken,
    running: &Running,
    outcome: &Outcome,
    refused: &StoreError,
) -> Result<bool, Stop<std::convert::Infallible>> {
    tracing::error!(error = %refused, job_id = ?outcome.job_id(), "PostgreSQL refused an outcome; recording it in a storable form");
    let storable = outcome.storable();
    let bare = Outcome::Rejected {
        job: None,
        dead_letter: DeadLetterRow::bare(
            outcome.job_id(),
            DeadReason::Refused,
            &format!("PostgreSQL refused the outcome: {refused}"),
        ),
    };
    for attempt in [storable, bare] {
        let result = commit_isolating(
            store,
            metrics,
            abandon,
            running,
            std::slice::from_ref(&attempt),
        )
        .await?;
        if matches!(result.first(), Some(Recorded::Yes(_))) {
            return Ok(true);
        }
    }
    tracing::error!(job_id = ?outcome.job_id(), "not even a bare dead letter could be recorded; the broker dead-letters the message");
    Ok(false)
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
        Outcome::Deferred { .. } => {}
    }
}
