//! Requeuing dead letters: claim in PostgreSQL, republish with confirms,
//! mark done — batch by batch, paced, resumable.
//!
//! Owns the order that makes a requeue exactly-once: the claim (one
//! transaction: letters `requeueing`, jobs `queued` in a new generation)
//! commits before anything is published, and a letter is marked `requeued`
//! only after its publish is confirmed. A requeue that dies mid-way is run
//! again and finishes the rest (stale claims are taken over); a letter
//! published twice that way carries the same generation and attempts, so the
//! worker's idempotency rule runs it once. It must never publish a letter it
//! has not claimed.

use courier_amqp::{AmqpError, DeliveryMeta, Publisher, Topology};
use courier_core::patch::merge_patch;
use courier_core::{ActionKind, InvalidJob, Job};
use courier_store::{ClaimedLetter, DeadFilter, LetterKey, Store, StoreError};
use futures_util::future::join_all;
use serde_json::Value;
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Amqp(#[from] AmqpError),
    #[error("dead letter {letter}: the patched job is invalid: {problem}")]
    InvalidPatch { letter: Uuid, problem: InvalidJob },
}

#[derive(Debug, Clone)]
pub struct RequeueOptions {
    /// Who asked (recorded in the audit trail).
    pub actor: String,
    /// JSON merge patch applied to each job's `payload`.
    pub patch: Option<Value>,
    /// Most letters republished per second; `None` for as fast as possible.
    pub rate: Option<f64>,
    /// Letters claimed per transaction.
    pub batch: i64,
    /// Largest job body accepted after patching.
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionReport {
    pub action: Uuid,
    /// Pending letters matching the filter when the action began.
    pub matched: i64,
    /// Letters this action requeued or purged.
    pub affected: u64,
}

/// The body to republish: the original, or the original with its payload
/// patched (and then validated against the contract).
pub fn patched_body(
    letter: Uuid,
    body: &[u8],
    patch: Option<&Value>,
    max_body_bytes: usize,
) -> Result<Option<Vec<u8>>, RecoveryError> {
    let Some(patch) = patch else {
        return Ok(None);
    };
    let invalid = |problem| RecoveryError::InvalidPatch { letter, problem };
    let mut job: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(InvalidJob::new("body", format!("not valid JSON: {e}"))))?;
    let Some(payload) = job.get_mut("payload") else {
        return Err(invalid(InvalidJob::new("payload", "missing")));
    };
    merge_patch(payload, patch);
    let patched = serde_json::to_vec(&job).map_err(|e| invalid(InvalidJob::new("body", e)))?;
    Job::parse(&patched, max_body_bytes).map_err(invalid)?;
    Ok(Some(patched))
}

/// Letters whose patched body is checked per query before a requeue.
const VALIDATE_PAGE: i64 = 500;

/// Requeues every pending dead letter matching `filter`, calling `progress`
/// with the running total after each batch.
pub async fn requeue(
    store: &Store,
    publisher: &Publisher,
    topology: &Topology,
    filter: &DeadFilter,
    options: &RequeueOptions,
    mut progress: impl FnMut(u64),
) -> Result<ActionReport, RecoveryError> {
    let matched = store.count_pending(filter).await?;
    if let Some(patch) = &options.patch {
        // Refuse before claiming anything if the patch breaks any job; one
        // page of letters in memory at a time.
        let mut after = None;
        loop {
            let page = store.pending_page(filter, after, VALIDATE_PAGE).await?;
            for letter in &page {
                patched_body(letter.id, &letter.body, Some(patch), options.max_body_bytes)?;
            }
            match page.last() {
                Some(last) if page.len() as i64 == VALIDATE_PAGE => {
                    after = Some((last.dead_at, last.id));
                }
                _ => break,
            }
        }
    }
    let action = store
        .begin_action(
            &options.actor,
            ActionKind::Requeue,
            filter,
            options.patch.as_ref(),
        )
        .await?;
    let mut requeued = 0u64;
    let result = requeue_claimed(
        store,
        publisher,
        topology,
        filter,
        options,
        action,
        &mut requeued,
        &mut progress,
    )
    .await;
    // The audit row is finished whatever happened, with what was done.
    let error = result.as_ref().err().map(ToString::to_string);
    store
        .finish_action(
            action,
            matched,
            i64::try_from(requeued).unwrap_or(i64::MAX),
            error.as_deref(),
        )
        .await?;
    result?;
    Ok(ActionReport {
        action,
        matched,
        affected: requeued,
    })
}

/// Claims, republishes and settles batch after batch, counting into
/// `requeued`, paced to `options.rate`.
#[allow(clippy::too_many_arguments)]
async fn requeue_claimed(
    store: &Store,
    publisher: &Publisher,
    topology: &Topology,
    filter: &DeadFilter,
    options: &RequeueOptions,
    action: Uuid,
    requeued: &mut u64,
    progress: &mut impl FnMut(u64),
) -> Result<(), RecoveryError> {
    let started = Instant::now();
    loop {
        let claimed = store.claim_requeue(action, filter, options.batch).await?;
        if claimed.is_empty() {
            return Ok(());
        }
        let bodies: Vec<Option<Vec<u8>>> = claimed
            .iter()
            .map(|l| {
                patched_body(
                    l.id,
                    &l.body,
                    options.patch.as_ref(),
                    options.max_body_bytes,
                )
            })
            .collect::<Result<_, _>>()?;
        // What each job will be published as, recorded first: the worker
        // refuses a body its job's record does not name.
        let prints: Vec<(Uuid, [u8; 32])> = claimed
            .iter()
            .zip(&bodies)
            .filter_map(|(letter, patched)| {
                let body = patched.as_deref().unwrap_or(&letter.body);
                Job::parse(body, usize::MAX)
                    .ok()
                    .map(|job| (letter.job_id, job.fingerprint))
            })
            .collect();
        store.record_fingerprints(&prints).await?;
        let publishes = claimed.iter().zip(&bodies).map(|(letter, patched)| {
            let body = patched.as_deref().unwrap_or(&letter.body);
            async move {
                let meta = requeue_meta(letter);
                publisher
                    .publish_requeue(topology, &letter.provider, body, &meta)
                    .await
            }
        });
        for result in join_all(publishes).await {
            result?;
        }
        let ids: Vec<Uuid> = claimed.iter().map(|l| l.id).collect();
        *requeued += store.finish_requeue(action, &ids, &bodies).await?;
        progress(*requeued);
        // A rate that makes no sense (0, negative, NaN, 1e-300) is no pace:
        // the edges refuse it; here it must not panic either.
        let due = options
            .rate
            .filter(|r| r.is_finite() && *r > 0.0)
            .and_then(|rate| Duration::try_from_secs_f64(*requeued as f64 / rate).ok());
        if let Some(wait) = due.and_then(|due| due.checked_sub(started.elapsed())) {
            tokio::time::sleep(wait).await;
        }
    }
}

fn requeue_meta(letter: &ClaimedLetter) -> DeliveryMeta {
    let count = |n: i32| u32::try_from(n).unwrap_or(0);
    DeliveryMeta {
        message_id: letter
            .message_id
            .clone()
            .or_else(|| Some(letter.job_id.to_string())),
        attempts: count(letter.attempts),
        run_base: count(letter.attempts),
        generation: count(letter.generation),
        delivery_count: 0,
        traceparent: None,
    }
}

/// Purges every pending dead letter matching `filter` as a recorded decision.
pub async fn purge(
    store: &Store,
    filter: &DeadFilter,
    actor: &str,
) -> Result<ActionReport, RecoveryError> {
    let matched = store.count_pending(filter).await?;
    let action = store
        .begin_action(actor, ActionKind::Purge, filter, None)
        .await?;
    let purged = store.purge(action, filter).await?;
    store
        .finish_action(
            action,
            matched,
            i64::try_from(purged).unwrap_or(i64::MAX),
            None,
        )
        .await?;
    Ok(ActionReport {
        action,
        matched,
        affected: purged,
    })
}

/// Messages per round of [`sync_dead_letter_queue`].
const SYNC_BATCH: usize = 500;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueSync {
    /// Messages whose dead letter is settled, removed from the queue.
    pub removed: u64,
    /// Messages still pending (or unknown to PostgreSQL), kept.
    pub kept: u64,
}

/// Makes a dead-letter queue agree with PostgreSQL: removes the messages
/// whose dead letter was requeued or purged, keeps the rest (moved to the
/// back of the queue, in order). PostgreSQL is the source of truth; this
/// keeps a settled letter from being replayed from RabbitMQ by other means
/// (and even if one were, the worker's generation rule would skip it).
/// Cost: one pass over the queue; memory: one batch.
pub async fn sync_dead_letter_queue(
    store: &Store,
    link: &courier_amqp::Link,
    publisher: &Publisher,
    topology: &Topology,
    provider: Option<&str>,
) -> Result<QueueSync, RecoveryError> {
    let queue = topology.dead_queue(provider);
    let channel = link.channel().await?;
    let depth = u64::from(courier_amqp::topology::message_count(&channel, &queue).await?);
    let mut sync = QueueSync::default();
    while sync.removed + sync.kept < depth {
        let mut batch = Vec::with_capacity(SYNC_BATCH);
        while batch.len() < SYNC_BATCH && sync.removed + sync.kept + (batch.len() as u64) < depth {
            match courier_amqp::get(&channel, &queue).await? {
                Some(d) => batch.push(d),
                None => break,
            }
        }
        if batch.is_empty() {
            break;
        }
        let keys: Vec<Option<LetterKey>> = batch.iter().map(letter_key).collect();
        let wanted: Vec<LetterKey> = keys.iter().flatten().cloned().collect();
        let settled = store.settled_letters(&wanted).await?;
        for (delivery, key) in batch.iter().zip(&keys) {
            if key.as_ref().is_some_and(|k| settled.contains(k)) {
                sync.removed += 1;
            } else {
                publisher
                    .republish(
                        &topology.dead_exchange(),
                        &topology.dead_key(provider),
                        delivery,
                    )
                    .await?;
                sync.kept += 1;
            }
            courier_amqp::ack(&delivery.acker).await?;
        }
    }
    // Confirmed before the caller closes the connection, so that the broker
    // has handled the last acks (courier_amqp::close says why).
    if let Err(e) = courier_amqp::close(&channel).await {
        tracing::warn!(%queue, error = %e, "closing the channel after syncing a dead-letter queue");
    }
    Ok(sync)
}

fn letter_key(delivery: &courier_amqp::Delivery) -> Option<LetterKey> {
    let meta = DeliveryMeta::of(delivery);
    let signed = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    Some(LetterKey {
        message_id: meta.message_id?,
        generation: signed(meta.generation),
        attempts: signed(meta.attempts),
    })
}

/// Syncs every dead-letter queue a filter can touch: the named provider's,
/// or all of them (unrouted included) when it names none.
pub async fn sync_affected_queues(
    store: &Store,
    link: &courier_amqp::Link,
    publisher: &Publisher,
    topology: &Topology,
    filter: &DeadFilter,
) -> Result<QueueSync, RecoveryError> {
    let providers: Vec<Option<&str>> = match &filter.provider {
        Some(p) if topology.providers().contains(p) => vec![Some(p.as_str())],
        Some(_) => Vec::new(),
        None => topology
            .providers()
            .iter()
            .map(|p| Some(p.as_str()))
            .chain([None])
            .collect(),
    };
    let mut total = QueueSync::default();
    for provider in providers {
        let sync = sync_dead_letter_queue(store, link, publisher, topology, provider).await?;
        total.removed += sync.removed;
        total.kept += sync.kept;
    }
    Ok(total)
}
