//! Read models: what operators, the demo and tests ask of the store.
//!
//! Owns the read-only queries. It must never write.

use crate::{Store, StoreError};
use chrono::{DateTime, Utc};
use courier_core::{DeadReason, JobState, LetterStatus};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRecord {
    pub id: Uuid,
    pub provider: String,
    pub operation: String,
    pub idempotency_key: String,
    /// A row holding any other word fails to read: an error, never skipped.
    #[sqlx(try_from = "String")]
    pub state: JobState,
    pub attempts: i32,
    pub last_status: Option<i16>,
    pub last_error_class: Option<String>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duplicate_deliveries: i32,
    pub run_base: i32,
    pub generation: i32,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttemptRecord {
    pub job_id: Uuid,
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub duration_us: i64,
    pub http_status: Option<i16>,
    pub error_class: String,
    pub error: Option<String>,
    pub trace_id: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeadLetterRecord {
    pub id: Uuid,
    pub job_id: Option<Uuid>,
    pub provider: Option<String>,
    pub operation: Option<String>,
    #[sqlx(try_from = "String")]
    pub reason: DeadReason,
    pub detail: String,
    pub attempts: i32,
    pub last_status: Option<i16>,
    pub last_error: Option<String>,
    pub body: Vec<u8>,
    pub message_id: Option<String>,
    pub dead_at: DateTime<Utc>,
    #[sqlx(try_from = "String")]
    pub status: LetterStatus,
    pub generation: i32,
    pub action_id: Option<Uuid>,
    pub claimed_at: Option<DateTime<Utc>>,
    pub settled_at: Option<DateTime<Utc>>,
    pub requeued_body: Option<Vec<u8>>,
    /// Size and SHA-256 of the body that arrived (absent on letters recorded
    /// before they were kept); `body` is a prefix when it is shorter.
    pub body_size: Option<i64>,
    pub body_sha256: Option<Vec<u8>>,
}

impl Store {
    pub async fn job(&self, id: Uuid) -> Result<Option<JobRecord>, StoreError> {
        sqlx::query_as("SELECT * FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::query("read job"))
    }

    /// A job's attempts, oldest first.
    pub async fn attempts(&self, job_id: Uuid) -> Result<Vec<AttemptRecord>, StoreError> {
        sqlx::query_as("SELECT * FROM attempts WHERE job_id = $1 ORDER BY attempt")
            .bind(job_id)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("read attempts"))
    }

    /// Every dead letter, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetterRecord>, StoreError> {
        sqlx::query_as("SELECT * FROM dead_letters ORDER BY dead_at, id")
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("read dead letters"))
    }

    /// Jobs per state, e.g. `[("dead", 3), ("succeeded", 97)]`.
    pub async fn state_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        sqlx::query_as("SELECT state, count(*) FROM jobs GROUP BY state ORDER BY state")
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("count jobs by state"))
    }

    /// Jobs among `ids` that have reached a terminal state.
    pub async fn count_terminal(&self, ids: &[Uuid]) -> Result<i64, StoreError> {
        sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE id = ANY($1) AND state IN ('succeeded', 'dead')",
        )
        .bind(ids)
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::query("count terminal jobs"))
    }

    /// What is recorded of each of `ids`, for audits of a run (the fault
    /// suite): state, attempts, when it finished, and its dead letters.
    pub async fn summaries(&self, ids: &[Uuid]) -> Result<Vec<JobSummary>, StoreError> {
        sqlx::query_as(
            "SELECT j.id, j.state, j.attempts, j.finished_at,
                    (SELECT count(*) FROM dead_letters d WHERE d.job_id = j.id) AS dead_letters
             FROM jobs j WHERE j.id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query("summarise jobs"))
    }

    /// Dead letters whose message id is one of `ids` (for messages that
    /// never became a job), by reason.
    pub async fn dead_letters_by_message(
        &self,
        message_ids: &[String],
    ) -> Result<Vec<(String, String)>, StoreError> {
        sqlx::query_as("SELECT message_id, reason FROM dead_letters WHERE message_id = ANY($1)")
            .bind(message_ids)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("find dead letters by message id"))
    }

    /// Jobs that needed more than one attempt.
    pub async fn count_retried(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE attempts > 1")
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::query("count retried jobs"))
    }

    /// How far PostgreSQL's write-ahead log has come, in bytes since its
    /// start: the whole server's, so a difference measures a run's WAL only
    /// on an otherwise quiet server. For benchmarks.
    pub async fn wal_position(&self) -> Result<u64, StoreError> {
        let position: i64 =
            sqlx::query_scalar("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint")
                .fetch_one(&self.pool)
                .await
                .map_err(StoreError::query("read the WAL position"))?;
        Ok(u64::try_from(position).unwrap_or(0))
    }

    /// Each table of the namespace with its bytes on disk (heap, indexes,
    /// TOAST), largest first. For benchmarks and the capacity model.
    pub async fn table_bytes(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT c.relname::text, pg_total_relation_size(c.oid)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = current_schema() AND c.relkind = 'r'
             ORDER BY 2 DESC",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query("measure the namespace's tables"))?;
        Ok(rows
            .into_iter()
            .map(|(table, bytes)| (table, u64::try_from(bytes).unwrap_or(0)))
            .collect())
    }

    pub async fn count_attempts(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT count(*) FROM attempts")
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::query("count attempts"))
    }

    /// What the metrics sample from PostgreSQL: dead letters awaiting an
    /// operator per provider (served by the unsettled-letters index) and the
    /// letters operators have settled (one row per action, not per letter).
    pub async fn backlog(&self) -> Result<Backlog, StoreError> {
        let pending: Vec<(Option<String>, i64)> = sqlx::query_as(
            "SELECT provider, count(*) FROM dead_letters WHERE status = 'pending' GROUP BY provider",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query("count pending dead letters"))?;
        let (requeued, purged): (i64, i64) = sqlx::query_as(
            "SELECT coalesce(sum(affected) FILTER (WHERE action = 'requeue'), 0)::bigint,
                    coalesce(sum(affected) FILTER (WHERE action = 'purge'), 0)::bigint
             FROM operator_actions",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::query("sum operator actions"))?;
        Ok(Backlog {
            pending,
            requeued: u64::try_from(requeued).unwrap_or(0),
            purged: u64::try_from(purged).unwrap_or(0),
        })
    }
}

impl Store {
    /// How the jobs created in `[from, to)` fared: latency from `created_at`
    /// to the terminal outcome's commit, and the processing window (first
    /// attempt to last terminal commit). For benchmarks.
    pub async fn timing(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Timing, StoreError> {
        #[derive(sqlx::FromRow)]
        struct Row {
            terminal: i64,
            percentiles: Option<Vec<f64>>,
            max: Option<f64>,
            first_attempt: Option<DateTime<Utc>>,
            last_finish: Option<DateTime<Utc>>,
        }
        let row: Row =
            sqlx::query_as(
                "WITH j AS (
                     SELECT id, extract(epoch FROM finished_at - created_at)::float8 AS latency, finished_at
                     FROM jobs WHERE created_at >= $1 AND created_at < $2 AND finished_at IS NOT NULL)
                 SELECT count(*) AS terminal,
                        percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY latency) AS percentiles,
                        max(latency) AS max,
                        (SELECT min(a.started_at) FROM attempts a JOIN j ON j.id = a.job_id) AS first_attempt,
                        max(finished_at) AS last_finish
                 FROM j",
            )
            .bind(from)
            .bind(to)
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::query("measure job timing"))?;
        let p = row.percentiles.unwrap_or_default();
        Ok(Timing {
            terminal: row.terminal,
            p50: p.first().copied().unwrap_or(0.0),
            p90: p.get(1).copied().unwrap_or(0.0),
            p99: p.get(2).copied().unwrap_or(0.0),
            max: row.max.unwrap_or(0.0),
            first_attempt: row.first_attempt,
            last_finish: row.last_finish,
        })
    }
}

/// See [`Store::timing`]. Latencies in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    pub terminal: i64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub first_attempt: Option<DateTime<Utc>>,
    pub last_finish: Option<DateTime<Utc>>,
}

/// See [`Store::summaries`].
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobSummary {
    pub id: Uuid,
    pub state: String,
    pub attempts: i32,
    pub finished_at: Option<DateTime<Utc>>,
    pub dead_letters: i64,
}

/// See [`Store::backlog`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    /// Pending dead letters per provider (`None`: unrouted letters).
    pub pending: Vec<(Option<String>, i64)>,
    pub requeued: u64,
    pub purged: u64,
}

impl Store {
    /// Dead letters per reason, e.g. `[("permanent", 30)]`.
    pub async fn dead_letter_reasons(&self) -> Result<Vec<(String, i64)>, StoreError> {
        sqlx::query_as("SELECT reason, count(*) FROM dead_letters GROUP BY reason ORDER BY count(*) DESC, reason")
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("count dead letters by reason"))
    }
}
