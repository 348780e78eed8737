//! Group commit of outcomes: many jobs' results in one transaction.
//!
//! Owns the write path of the pipeline. One statement takes the whole batch
//! as arrays (UNNEST), so a batch costs one round trip however large it is
//! (two statements in a transaction when it counts duplicate deliveries).
//! Every write is idempotent: an attempt already recorded is skipped,
//! a job's row only moves forward (more attempts, never out of a terminal
//! state), a dead letter is written once per job and attempt.

use crate::{Store, StoreError};
use chrono::{DateTime, Utc};
use courier_core::envelope::KeptBody;
use courier_core::retry::DeadReason;
use courier_core::state::JobState;
use courier_core::text::printable;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use uuid::Uuid;

/// A job's new current state.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: Uuid,
    pub provider: String,
    pub operation: String,
    pub idempotency_key: String,
    pub state: JobState,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error_class: Option<&'static str>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The job's content fingerprint (courier_core::envelope::Fingerprint).
    pub fingerprint: [u8; 32],
    /// Throttled attempts in the current run, this one included.
    pub throttled_attempts: u32,
    /// Time the current run has waited on throttles, this retry's included.
    pub throttled_for: Duration,
}

/// One call to the provider.
#[derive(Debug, Clone)]
pub struct AttemptRow {
    pub job_id: Uuid,
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
    pub duration: Duration,
    pub http_status: Option<u16>,
    pub error_class: &'static str,
    pub error: Option<String>,
    /// The trace id the provider request carried (32 hex digits).
    pub trace_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct DeadLetterRow {
    pub id: Uuid,
    pub job_id: Option<Uuid>,
    pub provider: Option<String>,
    pub operation: Option<String>,
    pub reason: DeadReason,
    pub detail: String,
    pub attempts: u32,
    /// How often an operator had requeued the job when it died.
    pub generation: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    /// The original body, or its first bytes when it was larger than the
    /// worker's limit.
    pub body: Vec<u8>,
    /// What arrived: its size in bytes and its SHA-256.
    pub body_size: u64,
    pub body_sha256: [u8; 32],
    pub message_id: Option<String>,
}

impl DeadLetterRow {
    /// A dead letter of nothing but a reason: for a message of which nothing
    /// else can be stored or was learned.
    pub fn bare(job_id: Option<Uuid>, reason: DeadReason, detail: &str) -> DeadLetterRow {
        DeadLetterRow {
            id: Uuid::now_v7(),
            job_id,
            provider: None,
            operation: None,
            reason,
            detail: printable(detail, 2048),
            attempts: 0,
            generation: 0,
            last_status: None,
            last_error: None,
            body: Vec::new(),
            body_size: 0,
            body_sha256: KeptBody::of(&[], 0).sha256,
            message_id: None,
        }
    }
}

/// What one delivery came to.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The provider was called: an attempt, the job's new state, and a dead
    /// letter when the job died.
    Attempted {
        job: JobRow,
        attempt: AttemptRow,
        dead_letter: Option<DeadLetterRow>,
    },
    /// The message was dead-lettered without a call (invalid, or poison).
    /// `job` is set when the body was a readable job.
    Rejected {
        job: Option<JobRow>,
        dead_letter: DeadLetterRow,
    },
    /// Already done or superseded; nothing to call.
    Duplicate { job_id: Uuid },
    /// Sent to wait in the delay queues without an attempt (its provider
    /// paused, held, or its circuit open): nothing to record.
    Deferred { job_id: Uuid },
}

impl Outcome {
    /// The job this outcome is about, if it names one.
    pub fn job_id(&self) -> Option<Uuid> {
        match self {
            Outcome::Attempted { job, .. } => Some(job.id),
            Outcome::Rejected { job, dead_letter } => {
                job.as_ref().map(|j| j.id).or(dead_letter.job_id)
            }
            Outcome::Duplicate { job_id } | Outcome::Deferred { job_id } => Some(*job_id),
        }
    }

    /// The same outcome with every text made storable: PostgreSQL `text`
    /// cannot hold NUL (and nothing here needs control characters), so each
    /// string is made [`printable`]. For an outcome PostgreSQL refused for
    /// its content; nothing the pipeline builds today needs it, since input
    /// is validated where it enters.
    pub fn storable(&self) -> Outcome {
        let text = |s: &str| printable(s, STORABLE_TEXT_BYTES);
        let opt = |s: &Option<String>| s.as_deref().map(text);
        let job = |j: &JobRow| JobRow {
            provider: text(&j.provider),
            operation: text(&j.operation),
            idempotency_key: text(&j.idempotency_key),
            last_error: opt(&j.last_error),
            ..j.clone()
        };
        let letter = |d: &DeadLetterRow| DeadLetterRow {
            provider: opt(&d.provider),
            operation: opt(&d.operation),
            detail: text(&d.detail),
            last_error: opt(&d.last_error),
            message_id: opt(&d.message_id),
            ..d.clone()
        };
        match self {
            Outcome::Attempted {
                job: j,
                attempt,
                dead_letter,
            } => Outcome::Attempted {
                job: job(j),
                attempt: AttemptRow {
                    error: opt(&attempt.error),
                    trace_id: opt(&attempt.trace_id),
                    ..attempt.clone()
                },
                dead_letter: dead_letter.as_ref().map(letter),
            },
            Outcome::Rejected {
                job: j,
                dead_letter,
            } => Outcome::Rejected {
                job: j.as_ref().map(job),
                dead_letter: letter(dead_letter),
            },
            Outcome::Duplicate { job_id } => Outcome::Duplicate { job_id: *job_id },
            Outcome::Deferred { job_id } => Outcome::Deferred { job_id: *job_id },
        }
    }
}

/// Longest text [`Outcome::storable`] keeps of one field.
const STORABLE_TEXT_BYTES: usize = 64 * 1024;

fn i32_of(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn status_of(s: Option<u16>) -> Option<i16> {
    s.and_then(|s| i16::try_from(s).ok())
}

impl Store {
    /// Records a batch of outcomes in one transaction and announces it on
    /// [`Store::notify_channel`]. When this returns `Ok`, every outcome in the
    /// batch is durable.
    pub async fn commit(&self, batch: &[Outcome]) -> Result<Committed, StoreError> {
        if batch.is_empty() {
            return Ok(Committed::default());
        }
        let mut conn = self.connection().await?;
        commit_on(&mut conn, &self.notify_channel(), batch).await
    }
}

/// [`Store::commit`] on a connection: one statement (a transaction of two
/// when the batch holds duplicate deliveries).
pub(crate) async fn commit_on(
    conn: &mut sqlx::PgConnection,
    notify_channel: &str,
    batch: &[Outcome],
) -> Result<Committed, StoreError> {
    let mut committed = Committed::default();
    // One statement cannot touch a row twice: keep each job's latest state.
    let mut jobs: HashMap<Uuid, &JobRow> = HashMap::new();
    let mut attempts = Vec::new();
    let mut dead = Vec::new();
    let mut duplicates = Vec::new();
    for outcome in batch {
        let job = match outcome {
            Outcome::Attempted {
                job,
                attempt,
                dead_letter,
            } => {
                attempts.push(attempt);
                dead.extend(dead_letter.iter());
                Some(job)
            }
            Outcome::Rejected { job, dead_letter } => {
                dead.push(dead_letter);
                job.as_ref()
            }
            Outcome::Duplicate { job_id } => {
                duplicates.push(*job_id);
                None
            }
            Outcome::Deferred { .. } => None,
        };
        if let Some(job) = job {
            jobs.entry(job.id)
                .and_modify(|kept| {
                    if job.attempts > kept.attempts || job.state.is_terminal() {
                        *kept = job;
                    }
                })
                .or_insert(job);
        }
    }

    let attempts = AttemptColumns::of(&attempts);
    let jobs = JobColumns::of(jobs.values().copied());
    let dead = DeadLetterColumns::of(&dead);
    let notify = (notify_channel.to_owned(), batch.len().to_string());
    let record = record(&attempts, &jobs, &dead, &notify);
    // One statement is one transaction and one round trip; a batch
    // with duplicate deliveries (rare: redeliveries) also counts them,
    // in a transaction of two.
    let recorded = if duplicates.is_empty() {
        record
            .fetch_all(&mut *conn)
            .await
            .map_err(StoreError::query("record outcome batch"))?
    } else {
        let mut tx = sqlx::Connection::begin(&mut *conn)
            .await
            .map_err(StoreError::query("begin outcome batch"))?;
        let recorded = record
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::query("record outcome batch"))?;
        sqlx::query(
            "UPDATE jobs SET duplicate_deliveries = jobs.duplicate_deliveries + d.n
             FROM (SELECT id, count(*)::int AS n FROM UNNEST($1::uuid[]) AS id GROUP BY id) d
             WHERE jobs.id = d.id",
        )
        // Planned with today's statistics (see Store::progress).
        .persistent(false)
        .bind(&duplicates)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query("count duplicate deliveries"))?;
        tx.commit()
            .await
            .map_err(StoreError::query("commit outcome batch"))?;
        recorded
    };
    for (job_id, attempt, letter) in recorded {
        match (job_id, attempt, letter) {
            (Some(job_id), Some(attempt), _) => {
                committed.attempts.insert((job_id, attempt));
            }
            (_, _, Some(letter)) => {
                committed.dead_letters.insert(letter);
            }
            // The notification's row.
            _ => {}
        }
    }
    Ok(committed)
}

/// What a [`Store::commit`] newly recorded: the rest of its batch was
/// already there (a redelivery, or a second copy of one delivery).
#[derive(Debug, Default)]
pub struct Committed {
    attempts: HashSet<(Uuid, i32)>,
    dead_letters: HashSet<Uuid>,
}

impl Committed {
    /// Whether `outcome` changed the record, answered once per attempt or
    /// dead letter: a second outcome carrying the same one gets `false`.
    /// Duplicates always count (they are recorded as such).
    pub fn take(&mut self, outcome: &Outcome) -> bool {
        match outcome {
            Outcome::Attempted { job, attempt, .. } => {
                self.attempts.remove(&(job.id, i32_of(attempt.attempt)))
            }
            Outcome::Rejected { dead_letter, .. } => self.dead_letters.remove(&dead_letter.id),
            Outcome::Duplicate { .. } => true,
            // Nothing was recorded: nothing to count.
            Outcome::Deferred { .. } => false,
        }
    }
}

/// A batch's attempts as the arrays [`record`] unnests.
struct AttemptColumns<'a> {
    job_ids: Vec<Uuid>,
    numbers: Vec<i32>,
    started: Vec<DateTime<Utc>>,
    durations: Vec<i64>,
    statuses: Vec<Option<i16>>,
    classes: Vec<&'a str>,
    errors: Vec<Option<&'a str>>,
    traces: Vec<Option<&'a str>>,
}

impl<'a> AttemptColumns<'a> {
    fn of(rows: &[&'a AttemptRow]) -> Self {
        Self {
            job_ids: rows.iter().map(|r| r.job_id).collect(),
            numbers: rows.iter().map(|r| i32_of(r.attempt)).collect(),
            started: rows.iter().map(|r| r.started_at).collect(),
            durations: rows
                .iter()
                .map(|r| i64::try_from(r.duration.as_micros()).unwrap_or(i64::MAX))
                .collect(),
            statuses: rows.iter().map(|r| status_of(r.http_status)).collect(),
            classes: rows.iter().map(|r| r.error_class).collect(),
            errors: rows.iter().map(|r| r.error.as_deref()).collect(),
            traces: rows.iter().map(|r| r.trace_id.as_deref()).collect(),
        }
    }
}

/// A batch's job rows (one per job) as the arrays [`record`] unnests.
struct JobColumns<'a> {
    ids: Vec<Uuid>,
    providers: Vec<&'a str>,
    operations: Vec<&'a str>,
    keys: Vec<&'a str>,
    states: Vec<&'a str>,
    attempts: Vec<i32>,
    statuses: Vec<Option<i16>>,
    classes: Vec<Option<&'a str>>,
    errors: Vec<Option<&'a str>>,
    created: Vec<DateTime<Utc>>,
    next: Vec<Option<DateTime<Utc>>>,
    fingerprints: Vec<&'a [u8]>,
    throttled: Vec<i32>,
    throttled_ms: Vec<i64>,
}

impl<'a> JobColumns<'a> {
    fn of(rows: impl Iterator<Item = &'a JobRow>) -> Self {
        let rows: Vec<&JobRow> = rows.collect();
        Self {
            ids: rows.iter().map(|r| r.id).collect(),
            providers: rows.iter().map(|r| r.provider.as_str()).collect(),
            operations: rows.iter().map(|r| r.operation.as_str()).collect(),
            keys: rows.iter().map(|r| r.idempotency_key.as_str()).collect(),
            states: rows.iter().map(|r| r.state.as_str()).collect(),
            attempts: rows.iter().map(|r| i32_of(r.attempts)).collect(),
            statuses: rows.iter().map(|r| status_of(r.last_status)).collect(),
            classes: rows.iter().map(|r| r.last_error_class).collect(),
            errors: rows.iter().map(|r| r.last_error.as_deref()).collect(),
            created: rows.iter().map(|r| r.created_at).collect(),
            next: rows.iter().map(|r| r.next_attempt_at).collect(),
            fingerprints: rows.iter().map(|r| r.fingerprint.as_slice()).collect(),
            throttled: rows.iter().map(|r| i32_of(r.throttled_attempts)).collect(),
            throttled_ms: rows
                .iter()
                .map(|r| i64::try_from(r.throttled_for.as_millis()).unwrap_or(i64::MAX))
                .collect(),
        }
    }
}

/// A batch's dead letters as the arrays [`record`] unnests.
struct DeadLetterColumns<'a> {
    ids: Vec<Uuid>,
    job_ids: Vec<Option<Uuid>>,
    providers: Vec<Option<&'a str>>,
    operations: Vec<Option<&'a str>>,
    reasons: Vec<&'a str>,
    details: Vec<&'a str>,
    attempts: Vec<i32>,
    statuses: Vec<Option<i16>>,
    errors: Vec<Option<&'a str>>,
    bodies: Vec<&'a [u8]>,
    message_ids: Vec<Option<&'a str>>,
    generations: Vec<i32>,
    sizes: Vec<i64>,
    hashes: Vec<&'a [u8]>,
}

impl<'a> DeadLetterColumns<'a> {
    fn of(rows: &[&'a DeadLetterRow]) -> Self {
        Self {
            ids: rows.iter().map(|r| r.id).collect(),
            job_ids: rows.iter().map(|r| r.job_id).collect(),
            providers: rows.iter().map(|r| r.provider.as_deref()).collect(),
            operations: rows.iter().map(|r| r.operation.as_deref()).collect(),
            reasons: rows.iter().map(|r| r.reason.as_str()).collect(),
            details: rows.iter().map(|r| r.detail.as_str()).collect(),
            attempts: rows.iter().map(|r| i32_of(r.attempts)).collect(),
            statuses: rows.iter().map(|r| status_of(r.last_status)).collect(),
            errors: rows.iter().map(|r| r.last_error.as_deref()).collect(),
            bodies: rows.iter().map(|r| r.body.as_slice()).collect(),
            message_ids: rows.iter().map(|r| r.message_id.as_deref()).collect(),
            generations: rows.iter().map(|r| i32_of(r.generation)).collect(),
            sizes: rows
                .iter()
                .map(|r| i64::try_from(r.body_size).unwrap_or(i64::MAX))
                .collect(),
            hashes: rows.iter().map(|r| r.body_sha256.as_slice()).collect(),
        }
    }
}

/// A row [`record`] returns: an attempt newly inserted (job, number), a dead
/// letter newly inserted, or (all `None`) the notification.
type RecordedRow = (Option<Uuid>, Option<i32>, Option<Uuid>);

/// The statement that records a batch: attempts, job rows and dead letters
/// from arrays (an empty array inserts nothing), and the notification, in
/// one statement so that a batch costs one round trip. Its parts see one
/// snapshot and none reads what another writes: attempts and dead letters
/// have no foreign key to `jobs`, and each job appears once.
fn record<'q>(
    attempts: &'q AttemptColumns<'q>,
    jobs: &'q JobColumns<'q>,
    dead: &'q DeadLetterColumns<'q>,
    notify: &'q (String, String),
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, RecordedRow, sqlx::postgres::PgArguments> {
    sqlx::query_as(
        "WITH attempted AS (
             INSERT INTO attempts (job_id, attempt, started_at, duration_us, http_status, error_class, error, trace_id)
             SELECT * FROM UNNEST($1::uuid[], $2::int[], $3::timestamptz[], $4::bigint[], $5::smallint[], $6::text[],
                                  $7::text[], $8::text[])
             ON CONFLICT (job_id, attempt) DO NOTHING
             RETURNING job_id, attempt
         ), moved AS (
             INSERT INTO jobs (id, provider, operation, idempotency_key, state, attempts, last_status,
                               last_error_class, last_error, created_at, updated_at, next_attempt_at, finished_at,
                               fingerprint, throttled_attempts, throttled_ms)
             SELECT u.id, u.provider, u.operation, u.key, u.state, u.attempts, u.status, u.class, u.error,
                    u.created_at, now(), u.next_at, CASE WHEN u.state <> 'retrying' THEN now() END, u.fingerprint,
                    u.throttled, u.throttled_ms
             FROM UNNEST($9::uuid[], $10::text[], $11::text[], $12::text[], $13::text[], $14::int[], $15::smallint[],
                         $16::text[], $17::text[], $18::timestamptz[], $19::timestamptz[], $20::bytea[], $21::int[],
                         $22::int8[])
                  AS u(id, provider, operation, key, state, attempts, status, class, error, created_at, next_at,
                       fingerprint, throttled, throttled_ms)
             ON CONFLICT (id) DO UPDATE SET
                 fingerprint = EXCLUDED.fingerprint,
                 throttled_attempts = EXCLUDED.throttled_attempts,
                 throttled_ms = EXCLUDED.throttled_ms,
                 state = EXCLUDED.state,
                 attempts = EXCLUDED.attempts,
                 last_status = EXCLUDED.last_status,
                 last_error_class = EXCLUDED.last_error_class,
                 last_error = EXCLUDED.last_error,
                 updated_at = EXCLUDED.updated_at,
                 next_attempt_at = EXCLUDED.next_attempt_at,
                 finished_at = EXCLUDED.finished_at
             WHERE jobs.state IN ('queued', 'retrying')
               AND (jobs.attempts < EXCLUDED.attempts OR (jobs.state = 'queued' AND EXCLUDED.state = 'dead'))
         ), lettered AS (
             INSERT INTO dead_letters (id, job_id, provider, operation, reason, detail, attempts, last_status,
                                       last_error, body, message_id, generation, body_size, body_sha256)
             SELECT * FROM UNNEST($23::uuid[], $24::uuid[], $25::text[], $26::text[], $27::text[], $28::text[],
                                  $29::int[], $30::smallint[], $31::text[], $32::bytea[], $33::text[], $34::int[],
                                  $35::bigint[], $36::bytea[])
             ON CONFLICT (job_id, generation, attempts) WHERE job_id IS NOT NULL DO NOTHING
             RETURNING id
         ), notified AS (
             SELECT pg_notify($37, $38)
         )
         SELECT job_id, attempt, NULL::uuid FROM attempted
         UNION ALL SELECT NULL::uuid, NULL::int, id FROM lettered
         UNION ALL SELECT NULL::uuid, NULL::int, NULL::uuid FROM notified",
    )
    .bind(&attempts.job_ids)
    .bind(&attempts.numbers)
    .bind(&attempts.started)
    .bind(&attempts.durations)
    .bind(&attempts.statuses)
    .bind(&attempts.classes)
    .bind(&attempts.errors)
    .bind(&attempts.traces)
    .bind(&jobs.ids)
    .bind(&jobs.providers)
    .bind(&jobs.operations)
    .bind(&jobs.keys)
    .bind(&jobs.states)
    .bind(&jobs.attempts)
    .bind(&jobs.statuses)
    .bind(&jobs.classes)
    .bind(&jobs.errors)
    .bind(&jobs.created)
    .bind(&jobs.next)
    .bind(&jobs.fingerprints)
    .bind(&jobs.throttled)
    .bind(&jobs.throttled_ms)
    .bind(&dead.ids)
    .bind(&dead.job_ids)
    .bind(&dead.providers)
    .bind(&dead.operations)
    .bind(&dead.reasons)
    .bind(&dead.details)
    .bind(&dead.attempts)
    .bind(&dead.statuses)
    .bind(&dead.errors)
    .bind(&dead.bodies)
    .bind(&dead.message_ids)
    .bind(&dead.generations)
    .bind(&dead.sizes)
    .bind(&dead.hashes)
    .bind(&notify.0)
    .bind(&notify.1)
}
