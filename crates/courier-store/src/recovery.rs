//! Operator recovery: finding dead letters and settling them exactly once.
//!
//! Owns the dead-letter lifecycle (pending → requeueing → requeued, or
//! pending → purged) and the audit of every operator action. Claiming is one
//! transaction with `FOR UPDATE SKIP LOCKED`, so two operators requeuing the
//! same letters at once each get a disjoint share. A claim that was never
//! finished (the process died mid-way) may be taken over after
//! [`STALE_CLAIM_SECS`]; its job is already `queued`, so a second publish is
//! absorbed by the idempotency rule. It must never publish anything: the
//! caller republishes between [`Store::claim_requeue`] and
//! [`Store::finish_requeue`].

use crate::queries::{DeadLetterRecord, JobRecord};
use crate::{Store, StoreError};
use chrono::{DateTime, Utc};
use courier_core::{ActionKind, DeadReason, LetterStatus};
use serde_json::Value;
use uuid::Uuid;

/// A claim older than this is considered abandoned and may be taken over.
pub const STALE_CLAIM_SECS: f64 = 300.0;

/// Which dead letters an operator means. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeadFilter {
    pub ids: Vec<Uuid>,
    pub provider: Option<String>,
    pub operation: Option<String>,
    pub reason: Option<DeadReason>,
    pub last_status: Option<i16>,
    /// Dead at or after.
    pub since: Option<DateTime<Utc>>,
    /// Dead before.
    pub until: Option<DateTime<Utc>>,
    /// Case-insensitive substring of the detail or the last error.
    pub text: Option<String>,
}

impl DeadFilter {
    /// Refuses a filter that makes no sense, naming the field: an empty
    /// string matches nothing (an empty `text`, everything).
    pub fn check(&self) -> Result<(), String> {
        for (field, value) in [
            ("provider", &self.provider),
            ("operation", &self.operation),
            ("search", &self.text),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(format!("{field}: must not be empty"));
            }
            // PostgreSQL's text cannot hold one: nothing could match.
            if value.as_deref().is_some_and(|v| v.contains('\0')) {
                return Err(format!("{field}: must not contain NUL"));
            }
        }
        Ok(())
    }

    /// The filter as recorded in the audit trail.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "ids": self.ids,
            "provider": self.provider,
            "operation": self.operation,
            "reason": self.reason,
            "last_status": self.last_status,
            "since": self.since,
            "until": self.until,
            "text": self.text,
        })
    }
}

/// `$1`..`$8` of every filtered query; further parameters start at `$9`.
const FILTER: &str = "($1::uuid[] IS NULL OR id = ANY($1))
    AND ($2::text IS NULL OR provider = $2)
    AND ($3::text IS NULL OR operation = $3)
    AND ($4::text IS NULL OR reason = $4)
    AND ($5::smallint IS NULL OR last_status = $5)
    AND ($6::timestamptz IS NULL OR dead_at >= $6)
    AND ($7::timestamptz IS NULL OR dead_at < $7)
    AND ($8::text IS NULL OR strpos(lower(detail), lower($8)) > 0 OR strpos(lower(coalesce(last_error, '')), lower($8)) > 0)";

macro_rules! bind_filter {
    ($query:expr, $f:expr) => {
        $query
            .bind((!$f.ids.is_empty()).then_some(&$f.ids))
            .bind(&$f.provider)
            .bind(&$f.operation)
            .bind($f.reason.map(|r| r.as_str()))
            .bind($f.last_status)
            .bind($f.since)
            .bind($f.until)
            .bind(&$f.text)
    };
}

/// A letter claimed for requeue, with what its republish needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedLetter {
    pub id: Uuid,
    pub job_id: Uuid,
    pub provider: String,
    pub body: Vec<u8>,
    pub message_id: Option<String>,
    /// The job's attempts so far: the new run starts after them.
    pub attempts: i32,
    /// The job's generation after this requeue.
    pub generation: i32,
}

/// Dead letters per provider and reason.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeadStat {
    pub provider: Option<String>,
    #[sqlx(try_from = "String")]
    pub reason: DeadReason,
    pub count: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ActionRecord {
    pub id: Uuid,
    pub actor: String,
    #[sqlx(try_from = "String")]
    pub action: ActionKind,
    pub filter: Value,
    pub patch: Option<Value>,
    pub matched: i32,
    pub affected: i32,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Why the action stopped before the end, if it did.
    pub error: Option<String>,
}

impl Store {
    /// Dead letters matching `filter` in one of `statuses`, newest first.
    pub async fn list_dead(
        &self,
        filter: &DeadFilter,
        statuses: &[LetterStatus],
        limit: i64,
    ) -> Result<Vec<DeadLetterRecord>, StoreError> {
        let sql = format!(
            "SELECT * FROM dead_letters WHERE {FILTER} AND status = ANY($9) ORDER BY dead_at DESC, id DESC LIMIT $10"
        );
        bind_filter!(sqlx::query_as(sqlx::AssertSqlSafe(sql)), filter)
            .bind(statuses.iter().map(|s| s.as_str()).collect::<Vec<_>>())
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("list dead letters"))
    }

    /// Up to `limit` pending letters matching `filter`, oldest first, after
    /// `after` (the `(dead_at, id)` of the previous page's last letter).
    pub async fn pending_page(
        &self,
        filter: &DeadFilter,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<DeadLetterRecord>, StoreError> {
        let sql = format!(
            "SELECT * FROM dead_letters WHERE {FILTER} AND status = 'pending'
               AND ($9::timestamptz IS NULL OR (dead_at, id) > ($9, $10))
             ORDER BY dead_at, id LIMIT $11"
        );
        bind_filter!(sqlx::query_as(sqlx::AssertSqlSafe(sql)), filter)
            .bind(after.map(|(at, _)| at))
            .bind(after.map(|(_, id)| id))
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("page through pending dead letters"))
    }

    /// Pending dead letters matching `filter`.
    pub async fn count_pending(&self, filter: &DeadFilter) -> Result<i64, StoreError> {
        let sql =
            format!("SELECT count(*) FROM dead_letters WHERE {FILTER} AND status = 'pending'");
        bind_filter!(sqlx::query_scalar(sqlx::AssertSqlSafe(sql)), filter)
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::query("count dead letters"))
    }

    /// Pending dead letters per provider and reason.
    pub async fn dead_stats(&self, filter: &DeadFilter) -> Result<Vec<DeadStat>, StoreError> {
        let sql = format!(
            "SELECT provider, reason, count(*) AS count FROM dead_letters WHERE {FILTER} AND status = 'pending'
             GROUP BY provider, reason ORDER BY count DESC, provider, reason"
        );
        bind_filter!(sqlx::query_as(sqlx::AssertSqlSafe(sql)), filter)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("count dead letters by reason"))
    }

    pub async fn dead_letter(&self, id: Uuid) -> Result<Option<DeadLetterRecord>, StoreError> {
        sqlx::query_as("SELECT * FROM dead_letters WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::query("read dead letter"))
    }

    /// A job's dead letters, oldest first.
    pub async fn dead_letters_of(&self, job_id: Uuid) -> Result<Vec<DeadLetterRecord>, StoreError> {
        sqlx::query_as("SELECT * FROM dead_letters WHERE job_id = $1 ORDER BY dead_at, id")
            .bind(job_id)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("read a job's dead letters"))
    }

    /// At most `limit` jobs carrying `key` as their idempotency key, oldest
    /// first.
    pub async fn jobs_by_key(&self, key: &str, limit: i64) -> Result<Vec<JobRecord>, StoreError> {
        sqlx::query_as("SELECT * FROM jobs WHERE idempotency_key = $1 ORDER BY created_at LIMIT $2")
            .bind(key)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("find jobs by idempotency key"))
    }

    /// Operator actions that settled one of the job's dead letters.
    pub async fn actions_of(&self, job_id: Uuid) -> Result<Vec<ActionRecord>, StoreError> {
        sqlx::query_as(
            "SELECT DISTINCT a.* FROM operator_actions a JOIN dead_letters d ON d.action_id = a.id
             WHERE d.job_id = $1 ORDER BY a.started_at",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query("read a job's operator actions"))
    }

    /// The audit log: operator actions, newest first, older than `before`
    /// when given (ids are time-ordered UUIDv7s, so the primary key pages).
    pub async fn actions(
        &self,
        limit: i64,
        before: Option<Uuid>,
    ) -> Result<Vec<ActionRecord>, StoreError> {
        sqlx::query_as(
            "SELECT * FROM operator_actions WHERE $2::uuid IS NULL OR id < $2
             ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .bind(before)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query("read the operator actions"))
    }

    pub async fn action(&self, id: Uuid) -> Result<Option<ActionRecord>, StoreError> {
        sqlx::query_as("SELECT * FROM operator_actions WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::query("read operator action"))
    }

    /// Records the start of an operator action on dead letters; returns
    /// its id.
    pub async fn begin_action(
        &self,
        actor: &str,
        action: ActionKind,
        filter: &DeadFilter,
        patch: Option<&Value>,
    ) -> Result<Uuid, StoreError> {
        self.begin_action_on(actor, action, filter.to_json(), patch)
            .await
    }

    /// Records the start of an operator action on whatever `filter` (as
    /// the audit trail shows it) selects; returns its id.
    pub async fn begin_action_on(
        &self,
        actor: &str,
        action: ActionKind,
        filter: Value,
        patch: Option<&Value>,
    ) -> Result<Uuid, StoreError> {
        let id = Uuid::now_v7();
        sqlx::query("INSERT INTO operator_actions (id, actor, action, filter, patch) VALUES ($1, $2, $3, $4, $5)")
            .bind(id)
            .bind(actor)
            .bind(action.as_str())
            .bind(filter)
            .bind(patch)
            .execute(&self.pool)
            .await
            .map_err(StoreError::query("record operator action"))?;
        Ok(id)
    }

    /// Records the end of an operator action: what matched, what it did,
    /// and why it stopped early (`error`), if it did.
    pub async fn finish_action(
        &self,
        id: Uuid,
        matched: i64,
        affected: i64,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE operator_actions SET matched = $2, affected = $3, finished_at = now(), error = $4 WHERE id = $1")
            .bind(id)
            .bind(i32::try_from(matched).unwrap_or(i32::MAX))
            .bind(i32::try_from(affected).unwrap_or(i32::MAX))
            .bind(error.map(|e| courier_core::text::printable(e, 1024)))
            .execute(&self.pool)
            .await
            .map_err(StoreError::query("finish operator action"))?;
        Ok(())
    }

    /// Claims up to `limit` matching letters for `action` and moves their jobs
    /// to a new generation in state `queued`, in one transaction. Letters
    /// whose body never parsed as a job cannot be requeued.
    pub async fn claim_requeue(
        &self,
        action: Uuid,
        filter: &DeadFilter,
        limit: i64,
    ) -> Result<Vec<ClaimedLetter>, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(StoreError::query("begin claim"))?;
        // Two passes, each walking an index and stopping at `limit`: first
        // claims abandoned by a requeue that died, then pending letters,
        // oldest first. Letters without an operation never parsed as a job
        // (so there is no job row to requeue); they can only be purged.
        let mut claimed: Vec<(Uuid, Uuid)> = Vec::new();
        // Jobs of newly claimed letters start a new generation; a taken-over
        // claim's job already did (and may have run since), so it is left as
        // it is and the republished copy is judged by the idempotency rule.
        let mut new_generation: Vec<Uuid> = Vec::new();
        for (pass, candidates) in [
            "status = 'requeueing' AND claimed_at < now() - make_interval(secs => $10)",
            "status = 'pending'",
        ]
        .into_iter()
        .enumerate()
        {
            let room = limit - i64::try_from(claimed.len()).unwrap_or(i64::MAX);
            if room <= 0 {
                break;
            }
            let sql = format!(
                "WITH picked AS (
                     SELECT id FROM dead_letters
                     WHERE {FILTER} AND {candidates}
                       AND job_id IS NOT NULL AND provider IS NOT NULL AND operation IS NOT NULL
                     ORDER BY dead_at, id
                     LIMIT $9
                     FOR UPDATE SKIP LOCKED)
                 UPDATE dead_letters d SET status = 'requeueing', claimed_at = now(), action_id = $11
                 FROM picked WHERE d.id = picked.id
                 RETURNING d.id, d.job_id"
            );
            let rows: Vec<(Uuid, Uuid)> =
                bind_filter!(sqlx::query_as(sqlx::AssertSqlSafe(sql)), filter)
                    .bind(room)
                    .bind(STALE_CLAIM_SECS)
                    .bind(action)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(StoreError::query("claim dead letters"))?;
            if pass == 1 {
                new_generation.extend(rows.iter().map(|(_, job)| *job));
            }
            claimed.extend(rows);
        }
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        sqlx::query(
            "UPDATE jobs SET state = 'queued', run_base = attempts, generation = generation + 1,
                             throttled_attempts = 0, throttled_ms = 0,
                             updated_at = now(), finished_at = NULL, next_attempt_at = NULL
             WHERE id = ANY($1) AND state = 'dead'",
        )
        .bind(&new_generation)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query("queue requeued jobs"))?;
        let letter_ids: Vec<Uuid> = claimed.iter().map(|(l, _)| *l).collect();
        let letters: Vec<ClaimedLetter> = sqlx::query_as(
            "SELECT d.id, d.job_id, d.provider, d.body, d.message_id, j.attempts, j.generation
             FROM dead_letters d JOIN jobs j ON j.id = d.job_id
             WHERE d.id = ANY($1) ORDER BY d.dead_at, d.id",
        )
        .bind(&letter_ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::query("read claimed letters"))?;
        tx.commit()
            .await
            .map_err(StoreError::query("commit claim"))?;
        Ok(letters)
    }

    /// Records the fingerprint of the job each requeued letter will be
    /// published as (a patch changes it), before it is published: the
    /// worker refuses a body that does not match its job's record.
    pub async fn record_fingerprints(&self, jobs: &[(Uuid, [u8; 32])]) -> Result<(), StoreError> {
        let ids: Vec<Uuid> = jobs.iter().map(|(id, _)| *id).collect();
        let prints: Vec<&[u8]> = jobs.iter().map(|(_, f)| f.as_slice()).collect();
        sqlx::query(
            "UPDATE jobs SET fingerprint = u.fingerprint
             FROM UNNEST($1::uuid[], $2::bytea[]) AS u(id, fingerprint)
             WHERE jobs.id = u.id AND jobs.state = 'queued'",
        )
        .bind(&ids)
        .bind(&prints)
        .execute(&self.pool)
        .await
        .map_err(StoreError::query("record requeued jobs' fingerprints"))?;
        Ok(())
    }

    /// Marks letters `action` republished; `bodies` holds the patched body
    /// where a patch changed it.
    pub async fn finish_requeue(
        &self,
        action: Uuid,
        ids: &[Uuid],
        bodies: &[Option<Vec<u8>>],
    ) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "UPDATE dead_letters d SET status = 'requeued', settled_at = now(), requeued_body = u.body
             FROM UNNEST($2::uuid[], $3::bytea[]) AS u(id, body)
             WHERE d.id = u.id AND d.action_id = $1 AND d.status = 'requeueing'",
        )
        .bind(action)
        .bind(ids)
        .bind(bodies)
        .execute(&self.pool)
        .await
        .map_err(StoreError::query("mark dead letters requeued"))?;
        Ok(result.rows_affected())
    }

    /// Discards the matching pending letters as a recorded decision: they
    /// stay in the table, `purged`, linked to `action`.
    pub async fn purge(&self, action: Uuid, filter: &DeadFilter) -> Result<u64, StoreError> {
        let sql = format!(
            "UPDATE dead_letters SET status = 'purged', settled_at = now(), action_id = $9
             WHERE {FILTER} AND status = 'pending'"
        );
        let result = bind_filter!(sqlx::query(sqlx::AssertSqlSafe(sql)), filter)
            .bind(action)
            .execute(&self.pool)
            .await
            .map_err(StoreError::query("purge dead letters"))?;
        Ok(result.rows_affected())
    }
}

/// How a dead-letter message in RabbitMQ names its PostgreSQL record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LetterKey {
    pub message_id: String,
    pub generation: i32,
    pub attempts: i32,
}

impl Store {
    /// Which of `keys` name a dead letter that is settled (requeued or
    /// purged). A key with no record, or a pending one, is not settled.
    pub async fn settled_letters(
        &self,
        keys: &[LetterKey],
    ) -> Result<std::collections::HashSet<LetterKey>, StoreError> {
        let ids: Vec<&str> = keys.iter().map(|k| k.message_id.as_str()).collect();
        let generations: Vec<i32> = keys.iter().map(|k| k.generation).collect();
        let attempts: Vec<i32> = keys.iter().map(|k| k.attempts).collect();
        let rows: Vec<(String, i32, i32)> = sqlx::query_as(
            "SELECT DISTINCT d.message_id, d.generation, d.attempts
             FROM dead_letters d
             JOIN UNNEST($1::text[], $2::int[], $3::int[]) AS k(message_id, generation, attempts)
               ON d.message_id = k.message_id AND d.generation = k.generation AND d.attempts = k.attempts
             WHERE d.status IN ('requeued', 'purged')",
        )
        .bind(&ids)
        .bind(&generations)
        .bind(&attempts)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query("look up settled dead letters"))?;
        Ok(rows
            .into_iter()
            .map(|(message_id, generation, attempts)| LetterKey {
                message_id,
                generation,
                attempts,
            })
            .collect())
    }
}

impl Store {
    /// Deletes attempt rows of jobs that succeeded before `cutoff`, at most
    /// `batch` per statement, until none are left; returns how many. Dead
    /// and unfinished jobs keep their history.
    pub async fn prune_succeeded_attempts(
        &self,
        cutoff: DateTime<Utc>,
        batch: i64,
    ) -> Result<u64, StoreError> {
        let mut pruned = 0;
        loop {
            let result = sqlx::query(
                "DELETE FROM attempts WHERE (job_id, attempt) IN (
                     SELECT a.job_id, a.attempt FROM attempts a JOIN jobs j ON j.id = a.job_id
                     WHERE j.state = 'succeeded' AND j.finished_at < $1
                     LIMIT $2)",
            )
            .bind(cutoff)
            .bind(batch)
            .execute(&self.pool)
            .await
            .map_err(StoreError::query("prune attempts of succeeded jobs"))?;
            pruned += result.rows_affected();
            if result.rows_affected() == 0 {
                return Ok(pruned);
            }
        }
    }
}
