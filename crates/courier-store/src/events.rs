//! The webhook event log: what `courier ingest` verified, recorded and
//! enqueued, and the operator's replays of it.
//!
//! Owns the `events` and `event_replays` tables. An event is recorded in
//! the same transaction that waits for the broker's confirm of the job it
//! became ([`Store::record_event`]): the row commits only after the confirm,
//! so an event is recorded and enqueued, or neither (the sender, answered
//! 503, delivers it again). Deduplication is the `(source, event_id)` key:
//! a concurrent second delivery waits on the first one's row lock and then
//! finds it. A replay gives each matching event one row per operator
//! action. It must never publish: callers pass the publish in, or publish
//! between [`Store::claim_replays`] and [`Store::finish_replays`].

use crate::{Store, StoreError};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::future::Future;
use uuid::Uuid;

/// A verified event, about to be recorded.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Courier's id for it (v7).
    pub id: Uuid,
    pub source: String,
    /// The sender's id for it: what deduplicates.
    pub event_id: String,
    /// The headers that matter, as a JSON object.
    pub headers: Value,
    pub body: Vec<u8>,
    pub received_at: DateTime<Utc>,
    /// The job it becomes.
    pub job_id: Uuid,
}

/// What recording an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Recorded now, and its job published and confirmed.
    New,
    /// The source sent this event before: nothing was written or published.
    Duplicate { id: Uuid, job_id: Uuid },
}

/// Why an event was not recorded; nothing of it was kept either way.
#[derive(Debug, thiserror::Error)]
pub enum RecordError<E> {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The publish the caller passed in failed; the row was rolled back.
    #[error("publishing the event's job failed: {0}")]
    Publish(E),
}

/// A recorded event.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRecord {
    pub id: Uuid,
    pub source: String,
    pub event_id: String,
    pub headers: Value,
    pub body: Vec<u8>,
    pub received_at: DateTime<Utc>,
    pub job_id: Uuid,
}

/// One replay of an event by an operator action.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReplayRecord {
    pub action_id: Uuid,
    pub event: Uuid,
    pub job_id: Uuid,
    /// `None`: its publish was never confirmed (the action stopped).
    pub published_at: Option<DateTime<Utc>>,
}

/// Which events an operator means. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    /// Courier's ids.
    pub ids: Vec<Uuid>,
    pub source: Option<String>,
    /// The sender's id.
    pub event_id: Option<String>,
    /// Received at or after.
    pub since: Option<DateTime<Utc>>,
    /// Received before.
    pub until: Option<DateTime<Utc>>,
}

impl EventFilter {
    /// The filter as recorded in the audit trail.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "ids": self.ids,
            "source": self.source,
            "event_id": self.event_id,
            "since": self.since,
            "until": self.until,
        })
    }
}

/// `$1`..`$5` of every filtered query; further parameters start at `$6`.
const FILTER: &str = "($1::uuid[] IS NULL OR id = ANY($1))
    AND ($2::text IS NULL OR source = $2)
    AND ($3::text IS NULL OR event_id = $3)
    AND ($4::timestamptz IS NULL OR received_at >= $4)
    AND ($5::timestamptz IS NULL OR received_at < $5)";

macro_rules! bind_event_filter {
    ($query:expr, $f:expr) => {
        $query
            .bind((!$f.ids.is_empty()).then_some(&$f.ids))
            .bind(&$f.source)
            .bind(&$f.event_id)
            .bind($f.since)
            .bind($f.until)
    };
}

impl Store {
    /// Records `event` unless its source sent it before, calling `publish`
    /// between the insert and the commit: the row commits only once the
    /// publish succeeded, and is rolled back when it failed. A duplicate is
    /// found without calling `publish`.
    pub async fn record_event<F, Fut, E>(
        &self,
        event: &NewEvent,
        publish: F,
    ) -> Result<Recorded, RecordError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(), E>>,
    {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(StoreError::query("begin recording an event"))?;
        // ON CONFLICT waits for a concurrent insert of the same key to
        // commit or roll back: of two deliveries at once, one records and
        // publishes, the other finds its row.
        let inserted: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO events (id, source, event_id, headers, body, received_at, job_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (source, event_id) DO NOTHING
             RETURNING id",
        )
        .bind(event.id)
        .bind(&event.source)
        .bind(&event.event_id)
        .bind(&event.headers)
        .bind(&event.body)
        .bind(event.received_at)
        .bind(event.job_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::query("record an event"))?;
        if inserted.is_none() {
            let (id, job_id): (Uuid, Uuid) =
                sqlx::query_as("SELECT id, job_id FROM events WHERE source = $1 AND event_id = $2")
                    .bind(&event.source)
                    .bind(&event.event_id)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(StoreError::query("find a recorded event"))?;
            return Ok(Recorded::Duplicate { id, job_id });
        }
        publish().await.map_err(RecordError::Publish)?;
        tx.commit()
            .await
            .map_err(StoreError::query("commit an event"))?;
        Ok(Recorded::New)
    }

    /// Events matching `filter`, newest first, older than `before` when
    /// given (ids are time-ordered v7s, so the primary key pages).
    pub async fn list_events(
        &self,
        filter: &EventFilter,
        before: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let sql = format!(
            "SELECT * FROM events WHERE {FILTER} AND ($6::uuid IS NULL OR id < $6)
             ORDER BY id DESC LIMIT $7"
        );
        bind_event_filter!(sqlx::query_as(sqlx::AssertSqlSafe(sql)), filter)
            .bind(before)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("list events"))
    }

    pub async fn event(&self, id: Uuid) -> Result<Option<EventRecord>, StoreError> {
        sqlx::query_as("SELECT * FROM events WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::query("read an event"))
    }

    /// Events matching `filter`.
    pub async fn count_events(&self, filter: &EventFilter) -> Result<i64, StoreError> {
        let sql = format!("SELECT count(*) FROM events WHERE {FILTER}");
        bind_event_filter!(sqlx::query_scalar(sqlx::AssertSqlSafe(sql)), filter)
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::query("count events"))
    }

    /// Every replay of an event, oldest first.
    pub async fn replays_of(&self, event: Uuid) -> Result<Vec<ReplayRecord>, StoreError> {
        sqlx::query_as("SELECT * FROM event_replays WHERE event = $1 ORDER BY action_id")
            .bind(event)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("read an event's replays"))
    }

    /// Gives up to `limit` events matching `filter`, after `after` (the
    /// last id of the previous page), a replay row of `action` each with a
    /// new job id, and returns them with it. An event this action already
    /// replayed is not taken again.
    pub async fn claim_replays(
        &self,
        action: Uuid,
        filter: &EventFilter,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<(EventRecord, Uuid)>, StoreError> {
        let sql = format!(
            "SELECT * FROM events WHERE {FILTER} AND ($6::uuid IS NULL OR id > $6)
             ORDER BY id LIMIT $7"
        );
        let events: Vec<EventRecord> =
            bind_event_filter!(sqlx::query_as(sqlx::AssertSqlSafe(sql)), filter)
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::query("page through events"))?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
        let jobs: Vec<Uuid> = events.iter().map(|_| Uuid::now_v7()).collect();
        let claimed: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "INSERT INTO event_replays (action_id, event, job_id)
             SELECT $1, u.event, u.job_id FROM UNNEST($2::uuid[], $3::uuid[]) AS u(event, job_id)
             ON CONFLICT (action_id, event) DO NOTHING
             RETURNING event, job_id",
        )
        .bind(action)
        .bind(&ids)
        .bind(&jobs)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query("claim events for a replay"))?;
        let claimed: std::collections::HashMap<Uuid, Uuid> = claimed.into_iter().collect();
        Ok(events
            .into_iter()
            .filter_map(|e| claimed.get(&e.id).copied().map(|job| (e, job)))
            .collect())
    }

    /// Marks the replays of `events` by `action` published (confirmed).
    pub async fn finish_replays(&self, action: Uuid, events: &[Uuid]) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "UPDATE event_replays SET published_at = now()
             WHERE action_id = $1 AND event = ANY($2) AND published_at IS NULL",
        )
        .bind(action)
        .bind(events)
        .execute(&self.pool)
        .await
        .map_err(StoreError::query("mark replays published"))?;
        Ok(result.rows_affected())
    }
}
