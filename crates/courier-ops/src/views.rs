//! The documents operators read: dead letters, jobs and their timelines,
//! actions, providers, webhook events. One serde shape each, printed by `courier … --json`,
//! served by the admin API and described in its OpenAPI document.
//!
//! Owns the conversion from the store's records. It must never hold
//! anything but plain data: no handles, no I/O.

use chrono::{DateTime, Utc};
use courier_core::config::RateLimit;
use courier_core::{ActionKind, DeadReason, JobState, LetterStatus};
use courier_store::{
    ActionRecord, AttemptRecord, DeadLetterRecord, DeadStat, EventRecord, JobRecord, ReplayRecord,
};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLetterView {
    pub id: Uuid,
    pub job_id: Option<Uuid>,
    pub provider: Option<String>,
    pub operation: Option<String>,
    pub reason: DeadReason,
    pub detail: String,
    pub attempts: i32,
    pub last_status: Option<i16>,
    pub last_error: Option<String>,
    pub dead_at: DateTime<Utc>,
    pub status: LetterStatus,
    /// The operator action that settled it.
    pub action_id: Option<Uuid>,
    /// The original job (as a string when it was not JSON).
    pub job: Value,
}

impl From<&DeadLetterRecord> for DeadLetterView {
    fn from(l: &DeadLetterRecord) -> Self {
        DeadLetterView {
            id: l.id,
            job_id: l.job_id,
            provider: l.provider.clone(),
            operation: l.operation.clone(),
            reason: l.reason,
            detail: l.detail.clone(),
            attempts: l.attempts,
            last_status: l.last_status,
            last_error: l.last_error.clone(),
            dead_at: l.dead_at,
            status: l.status,
            action_id: l.action_id,
            job: serde_json::from_slice(&l.body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&l.body).into_owned())),
        }
    }
}

/// A dead letter with the attempts of its job.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLetterDetail {
    #[serde(flatten)]
    pub letter: DeadLetterView,
    /// Every attempt of its job, all runs (beside the letter's own
    /// `attempts`, the count when it died).
    pub job_attempts: Vec<AttemptView>,
    /// Who answers for the provider's failures (its config's `owner`).
    pub owner: Option<String>,
    /// The provider's runbook.
    pub runbook: Option<String>,
}

/// Pending dead letters of one provider and reason.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatView {
    pub provider: Option<String>,
    pub reason: DeadReason,
    pub pending: i64,
}

impl From<DeadStat> for StatView {
    fn from(s: DeadStat) -> Self {
        StatView {
            provider: s.provider,
            reason: s.reason,
            pending: s.count,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobView {
    pub id: Uuid,
    pub provider: String,
    pub operation: String,
    pub idempotency_key: String,
    pub state: JobState,
    pub attempts: i32,
    pub generation: i32,
    pub last_status: Option<i16>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Deliveries of the job after it was done, acked without a call.
    pub duplicate_deliveries: i32,
}

impl From<&JobRecord> for JobView {
    fn from(j: &JobRecord) -> Self {
        JobView {
            id: j.id,
            provider: j.provider.clone(),
            operation: j.operation.clone(),
            idempotency_key: j.idempotency_key.clone(),
            state: j.state,
            attempts: j.attempts,
            generation: j.generation,
            last_status: j.last_status,
            last_error: j.last_error.clone(),
            created_at: j.created_at,
            updated_at: j.updated_at,
            finished_at: j.finished_at,
            duplicate_deliveries: j.duplicate_deliveries,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttemptView {
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub duration_us: i64,
    pub http_status: Option<i16>,
    pub error_class: String,
    pub error: Option<String>,
    /// The W3C trace id the provider request carried.
    pub trace_id: Option<String>,
}

impl From<AttemptRecord> for AttemptView {
    fn from(a: AttemptRecord) -> Self {
        AttemptView {
            attempt: a.attempt,
            started_at: a.started_at,
            duration_us: a.duration_us,
            http_status: a.http_status,
            error_class: a.error_class,
            error: a.error,
            trace_id: a.trace_id,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActionView {
    pub id: Uuid,
    pub actor: String,
    pub action: ActionKind,
    pub filter: Value,
    pub patch: Option<Value>,
    pub matched: i32,
    pub affected: i32,
    pub started_at: DateTime<Utc>,
    /// Absent while it runs (or if it stopped without finishing).
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it stopped before the end, if it did; for a replay, also why
    /// some matching events were not replayed.
    pub error: Option<String>,
}

impl From<ActionRecord> for ActionView {
    fn from(a: ActionRecord) -> Self {
        ActionView {
            id: a.id,
            actor: a.actor,
            action: a.action,
            filter: a.filter,
            patch: a.patch,
            matched: a.matched,
            affected: a.affected,
            started_at: a.started_at,
            finished_at: a.finished_at,
            error: a.error,
        }
    }
}

/// A job with everything that happened to it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobTimeline {
    pub job: JobView,
    pub attempts: Vec<AttemptView>,
    pub dead_letters: Vec<DeadLetterView>,
    pub operator_actions: Vec<ActionView>,
}

/// What a requeue, purge or replay did, or (dry run) would do.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActionResult {
    /// The audit record; absent on a dry run.
    pub action_id: Option<Uuid>,
    pub dry_run: bool,
    /// Pending letters (events, for a replay) matching.
    pub matched: i64,
    /// Letters requeued or purged, or events replayed, by this call.
    pub affected: u64,
    /// Up to 20 of the matching letters or events (dry run only).
    pub sample: Vec<Uuid>,
    /// Settled messages removed from the RabbitMQ dead-letter queues.
    pub removed_from_queues: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RateLimitView {
    /// Calls per second, the total across every worker.
    pub per_second: f64,
    /// Calls that may go at once after a quiet period.
    pub burst: u32,
}

impl From<RateLimit> for RateLimitView {
    fn from(l: RateLimit) -> Self {
        RateLimitView {
            per_second: l.per_second,
            burst: l.burst,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct HoldView {
    /// Who paused it.
    pub by: String,
    pub since: Option<DateTime<Utc>>,
    /// Absent: until resumed.
    pub until: Option<DateTime<Utc>>,
}

/// One provider's protection.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProviderView {
    pub name: String,
    /// Who answers for its failures.
    pub owner: Option<String>,
    /// Where its on-call steps are written.
    pub runbook: Option<String>,
    /// Absent: no limit.
    pub rate_limit: Option<RateLimitView>,
    /// Operations with a limit of their own.
    pub operation_limits: BTreeMap<String, RateLimitView>,
    /// Calls per second over the last 10 seconds, every worker's.
    pub calls_per_second: f64,
    /// Share of those calls that failed (0 to 1); absent without calls.
    pub error_rate: Option<f64>,
    /// Jobs waiting in the delay queues for their next attempt.
    pub retrying: i64,
    /// Dead letters no operator has settled yet.
    pub dead_pending: i64,
    /// The provider asked every worker to wait until then.
    pub paused_until: Option<DateTime<Utc>>,
    /// How it asked: retry_after, ratelimit or throttled.
    pub pause_source: Option<String>,
    /// An operator's pause.
    pub held: Option<HoldView>,
    /// closed, half_open or open
    pub circuit: String,
    pub circuit_since: DateTime<Utc>,
    /// When an open circuit lets its first probes through.
    pub open_until: Option<DateTime<Utc>>,
    /// Jobs ready in its work queue (absent when RabbitMQ could not say).
    pub queue_depth: Option<u32>,
}

/// An operator's pause or resume of a provider.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HoldResult {
    /// The audit record.
    pub action_id: Uuid,
    pub provider: String,
}

/// A webhook event `courier ingest` verified, recorded and enqueued.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventView {
    /// Courier's id for it.
    pub id: Uuid,
    /// The source that sent it (`ingest.sources.<name>`).
    pub source: String,
    /// The sender's id for it (or `sha256:<hex>` of its body): what
    /// deduplicates its deliveries.
    pub event_id: String,
    pub received_at: DateTime<Utc>,
    /// The job it became when it arrived.
    pub job_id: Uuid,
    /// Its body's size.
    pub body_bytes: u64,
}

impl From<&EventRecord> for EventView {
    fn from(e: &EventRecord) -> Self {
        EventView {
            id: e.id,
            source: e.source.clone(),
            event_id: e.event_id.clone(),
            received_at: e.received_at,
            job_id: e.job_id,
            body_bytes: u64::try_from(e.body.len()).unwrap_or(u64::MAX),
        }
    }
}

/// How an event's `body` is spelled in its document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BodyEncoding {
    /// The body as it came: it was UTF-8 text.
    Utf8,
    /// The body's bytes in standard base64: they were not UTF-8.
    Base64,
}

/// An event with its body, headers, the job it became and its replays.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventDetail {
    #[serde(flatten)]
    pub event: EventView,
    /// The headers kept when it arrived (never its signatures).
    pub headers: BTreeMap<String, String>,
    /// The body, as `body_encoding` says.
    pub body: String,
    pub body_encoding: BodyEncoding,
    /// The job it became, as the worker recorded it (absent until a worker
    /// took it).
    pub job: Option<JobView>,
    /// Every operator replay of it, oldest first.
    pub replays: Vec<ReplayView>,
}

impl EventDetail {
    /// `event`'s document, with its job and its replays' job states where
    /// the worker recorded them.
    pub fn new(
        event: &EventRecord,
        job: Option<&JobRecord>,
        replays: Vec<ReplayView>,
    ) -> EventDetail {
        use base64::Engine as _;
        let headers = event
            .headers
            .as_object()
            .map(|h| {
                h.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        let (body, body_encoding) = match std::str::from_utf8(&event.body) {
            Ok(text) => (text.to_owned(), BodyEncoding::Utf8),
            Err(_) => (
                base64::engine::general_purpose::STANDARD.encode(&event.body),
                BodyEncoding::Base64,
            ),
        };
        EventDetail {
            event: EventView::from(event),
            headers,
            body,
            body_encoding,
            job: job.map(JobView::from),
            replays,
        }
    }
}

/// One operator action's replay of an event: a new job.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplayView {
    /// The replay action (see the audit log).
    pub action_id: Uuid,
    /// The new job; its idempotency key is
    /// `<source>:<event id>:replay:<action id>`.
    pub job_id: Uuid,
    /// When the broker confirmed its publish; absent: never confirmed (the
    /// action stopped, or could not build the job).
    pub published_at: Option<DateTime<Utc>>,
    /// The new job's state, once a worker recorded it.
    pub job_state: Option<JobState>,
}

impl ReplayView {
    pub fn new(r: &ReplayRecord, job_state: Option<JobState>) -> ReplayView {
        ReplayView {
            action_id: r.action_id,
            job_id: r.job_id,
            published_at: r.published_at,
            job_state,
        }
    }
}
