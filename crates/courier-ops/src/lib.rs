//! Courier's operator core: one [`Operator`] handle, built from the config,
//! that the CLI (`courier dead|jobs|providers …`), the admin API and the
//! console share.
//!
//! Owns the operator's verbs (list, stats, show, timeline, dry run,
//! requeue, purge, prune, provider pause and resume, the webhook event log
//! and its replay), their validation (a request that makes no sense is
//! refused here, naming the field, whatever face it came through), and the
//! documents they return (`views`). Recovery's exactly-once order is
//! `recovery`; replay's is `events`; provider holds are `providers`. It must
//! never print, parse flags or speak HTTP: those are the faces' jobs, and a
//! face must never reach the store or the broker around it.

pub mod events;
pub mod providers;
pub mod recovery;
pub mod views;

use chrono::{DateTime, Utc};
use courier_amqp::{AmqpError, Link, Publisher, Topology};
use courier_core::{Config, DeadReason, LetterStatus};
use courier_store::{DeadFilter, EventFilter, Store, StoreError};
pub use events::{EventQuery, Replay};
use providers::ProvidersError;
use recovery::{RecoveryError, RequeueOptions};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use utoipa::IntoParams;
use uuid::Uuid;
use views::{
    ActionResult, ActionView, AttemptView, DeadLetterDetail, DeadLetterView, EventDetail,
    EventView, HoldResult, JobTimeline, JobView, ProviderView, ReplayView, StatView,
};

/// Most rows a listing returns.
pub const MAX_LIST: i64 = 1000;
/// Slowest and fastest requeue rates accepted, in letters per second.
pub const MIN_RATE: f64 = 0.01;
pub const MAX_RATE: f64 = 100_000.0;
/// Longest an operator's pause may be set for (30 days).
pub const MAX_PAUSE: Duration = Duration::from_secs(30 * 86_400);
/// Letters (or events) shown by a dry run.
const SAMPLE: i64 = 20;

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The request makes no sense; the message names the field.
    #[error("{0}")]
    Invalid(String),
    #[error("no {what} {id}")]
    NotFound { what: &'static str, id: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Amqp(#[from] AmqpError),
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
}

impl From<ProvidersError> for OpsError {
    fn from(e: ProvidersError) -> Self {
        match e {
            ProvidersError::Unknown(name) => OpsError::NotFound {
                what: "provider",
                id: name,
            },
            ProvidersError::Store(e) => OpsError::Store(e),
            ProvidersError::Amqp(e) => OpsError::Amqp(e),
        }
    }
}

/// Which dead letters: every field narrows the match. The same fields as
/// the CLI's flags and the API's query parameters. A text field that is
/// empty, all white space or holds a NUL is refused (it could only match
/// nothing); the admin API's document says so with a pattern.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadQuery {
    #[param(min_length = 1)]
    pub provider: Option<String>,
    #[param(min_length = 1)]
    pub operation: Option<String>,
    #[param(inline)]
    pub reason: Option<DeadReason>,
    /// Last HTTP status.
    #[param(minimum = 100, maximum = 599)]
    pub status: Option<i16>,
    /// Dead at or after.
    pub since: Option<DateTime<Utc>>,
    /// Dead before.
    pub until: Option<DateTime<Utc>>,
    /// Text in the reason detail or the last error.
    #[param(min_length = 1)]
    pub search: Option<String>,
}

impl DeadQuery {
    /// The store's filter for these fields and `ids`, or the field that
    /// makes no sense.
    pub fn filter(&self, ids: Vec<Uuid>) -> Result<DeadFilter, OpsError> {
        let filter = DeadFilter {
            ids,
            provider: self.provider.clone(),
            operation: self.operation.clone(),
            reason: self.reason,
            last_status: self.status,
            since: self.since,
            until: self.until,
            text: self.search.clone(),
        };
        filter.check().map_err(OpsError::Invalid)?;
        if let Some(status) = self.status
            && !(100..=599).contains(&status)
        {
            return Err(OpsError::Invalid(
                "status: an HTTP status is between 100 and 599".into(),
            ));
        }
        Ok(filter)
    }
}

/// A requeue: which letters, and how.
#[derive(Debug, Clone, Default)]
pub struct Requeue {
    pub ids: Vec<Uuid>,
    pub query: DeadQuery,
    /// JSON merge patch applied to each job's payload.
    pub patch: Option<Value>,
    /// Most jobs republished per second.
    pub rate: Option<f64>,
}

/// A purge: which letters.
#[derive(Debug, Clone, Default)]
pub struct Purge {
    pub ids: Vec<Uuid>,
    pub query: DeadQuery,
    /// Only letters dead for longer than this.
    pub older_than: Option<Duration>,
}

/// Everything an operator's verb needs, wired once. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Operator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    store: Store,
    link: Link,
    publisher: Publisher,
    topology: Topology,
}

impl Operator {
    /// Connects to the store (migrating it) and the broker of `config`;
    /// `name` is the broker connection's, `pool` the most database
    /// connections.
    pub async fn connect(config: &Config, name: &str, pool: u32) -> Result<Operator, OpsError> {
        let store = Store::connect(&config.database, &config.namespace, pool).await?;
        store.migrate().await?;
        let link = courier_amqp::connect(&config.broker, name).await?;
        let publisher = Publisher::open(&link, config.broker.confirm_timeout).await?;
        Ok(Operator {
            inner: Arc::new(Inner {
                topology: Topology::new(&config.namespace, config.providers.keys().cloned()),
                config: config.clone(),
                store,
                link,
                publisher,
            }),
        })
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Closes the broker connection (bounded).
    pub async fn close(&self) {
        let _ = self.inner.link.close("done").await;
    }

    /// Dead letters matching, newest first: pending ones, or `all`.
    pub async fn list_dead(
        &self,
        query: &DeadQuery,
        all: bool,
        limit: i64,
    ) -> Result<Vec<DeadLetterView>, OpsError> {
        let statuses: &[LetterStatus] = if all {
            &LetterStatus::ALL
        } else {
            &[LetterStatus::Pending]
        };
        let letters = self
            .inner
            .store
            .list_dead(&query.filter(Vec::new())?, statuses, limit_in(limit)?)
            .await?;
        Ok(letters.iter().map(DeadLetterView::from).collect())
    }

    /// Pending dead letters counted by provider and reason.
    pub async fn dead_stats(&self, query: &DeadQuery) -> Result<Vec<StatView>, OpsError> {
        let stats = self
            .inner
            .store
            .dead_stats(&query.filter(Vec::new())?)
            .await?;
        Ok(stats.into_iter().map(StatView::from).collect())
    }

    /// One dead letter and its job's attempts.
    pub async fn dead_letter(&self, id: Uuid) -> Result<DeadLetterDetail, OpsError> {
        let store = &self.inner.store;
        let letter = store.dead_letter(id).await?.ok_or(OpsError::NotFound {
            what: "dead letter",
            id: id.to_string(),
        })?;
        let attempts = match letter.job_id {
            Some(job) => store.attempts(job).await?,
            None => Vec::new(),
        };
        let provider = letter
            .provider
            .as_ref()
            .and_then(|p| self.inner.config.providers.get(p));
        Ok(DeadLetterDetail {
            letter: DeadLetterView::from(&letter),
            job_attempts: attempts.into_iter().map(AttemptView::from).collect(),
            owner: provider.and_then(|p| p.owner.clone()),
            runbook: provider.and_then(|p| p.runbook.clone()),
        })
    }

    /// A job, dead or alive, with its attempts, dead letters and the
    /// operator actions that touched it.
    pub async fn job(&self, id: Uuid) -> Result<JobTimeline, OpsError> {
        let store = &self.inner.store;
        let job = store.job(id).await?.ok_or(OpsError::NotFound {
            what: "job",
            id: id.to_string(),
        })?;
        let attempts = store.attempts(id).await?;
        let letters = store.dead_letters_of(id).await?;
        let actions = store.actions_of(id).await?;
        Ok(JobTimeline {
            job: JobView::from(&job),
            attempts: attempts.into_iter().map(AttemptView::from).collect(),
            dead_letters: letters.iter().map(DeadLetterView::from).collect(),
            operator_actions: actions.into_iter().map(ActionView::from).collect(),
        })
    }

    /// The audit log: every operator action, newest first; `before` pages
    /// on from an action's id.
    pub async fn actions(
        &self,
        limit: i64,
        before: Option<Uuid>,
    ) -> Result<Vec<ActionView>, OpsError> {
        let actions = self.inner.store.actions(limit_in(limit)?, before).await?;
        Ok(actions.into_iter().map(ActionView::from).collect())
    }

    /// Jobs carrying an idempotency key, oldest first.
    pub async fn find_jobs(&self, key: &str, limit: i64) -> Result<Vec<JobView>, OpsError> {
        if key.is_empty() {
            return Err(OpsError::Invalid(
                "idempotency_key: must not be empty".into(),
            ));
        }
        let limit = limit_in(limit)?;
        // A key the contract refuses (too long, control characters) is
        // carried by no job; asking PostgreSQL would fail on a NUL.
        if courier_core::envelope::check_idempotency_key(key).is_err() {
            return Ok(Vec::new());
        }
        let jobs = self.inner.store.jobs_by_key(key, limit).await?;
        Ok(jobs.iter().map(JobView::from).collect())
    }

    /// How many pending letters `req` would requeue, and the first of
    /// them; changes nothing, and refuses what the requeue would refuse.
    pub async fn preview_requeue(&self, req: &Requeue) -> Result<ActionResult, OpsError> {
        self.dry_run(&self.requeue_filter(req)?).await
    }

    /// As [`Operator::preview_requeue`], for a purge.
    pub async fn preview_purge(&self, req: &Purge) -> Result<ActionResult, OpsError> {
        self.dry_run(&self.purge_filter(req)?).await
    }

    async fn dry_run(&self, filter: &DeadFilter) -> Result<ActionResult, OpsError> {
        let store = &self.inner.store;
        let matched = store.count_pending(filter).await?;
        let sample = store
            .list_dead(filter, &[LetterStatus::Pending], SAMPLE)
            .await?;
        Ok(ActionResult {
            action_id: None,
            dry_run: true,
            matched,
            affected: 0,
            sample: sample.iter().map(|l| l.id).collect(),
            removed_from_queues: 0,
        })
    }

    /// The filter a requeue works on, once its request is known to make
    /// sense (a dry run and the requeue itself check the same).
    fn requeue_filter(&self, req: &Requeue) -> Result<DeadFilter, OpsError> {
        let filter = req.query.filter(req.ids.clone())?;
        refuse_everything(&filter)?;
        if let Some(rate) = req.rate
            && !(MIN_RATE..=MAX_RATE).contains(&rate)
        {
            return Err(OpsError::Invalid(format!(
                "rate: must be between {MIN_RATE} and {MAX_RATE} letters per second"
            )));
        }
        if let Some(patch) = &req.patch
            && !patch.is_object()
        {
            return Err(OpsError::Invalid(
                "patch: must be a JSON object (a merge patch for the payload)".into(),
            ));
        }
        if let Some(why) = req.patch.as_ref().and_then(courier_core::patch::unstorable) {
            return Err(OpsError::Invalid(format!("patch: must not hold {why}")));
        }
        Ok(filter)
    }

    /// Requeues the letters `req` names, each exactly once, audited as
    /// `actor`; `progress` hears how many are done. Then removes the settled
    /// letters from the RabbitMQ dead-letter queues.
    pub async fn requeue(
        &self,
        req: Requeue,
        actor: &str,
        progress: impl FnMut(u64),
    ) -> Result<ActionResult, OpsError> {
        let filter = self.requeue_filter(&req)?;
        let inner = &self.inner;
        let options = RequeueOptions {
            actor: actor.to_owned(),
            patch: req.patch,
            rate: req.rate,
            batch: 500,
            max_body_bytes: inner.config.worker.max_body_bytes,
        };
        let report = recovery::requeue(
            &inner.store,
            &inner.publisher,
            &inner.topology,
            &filter,
            &options,
            progress,
        )
        .await?;
        Ok(self.settled(report, &filter).await)
    }

    /// The filter a purge works on (see [`Operator::requeue_filter`]).
    fn purge_filter(&self, req: &Purge) -> Result<DeadFilter, OpsError> {
        let mut filter = req.query.filter(req.ids.clone())?;
        if let Some(age) = req.older_than {
            let cutoff = chrono::Duration::from_std(age)
                .ok()
                .and_then(|age| Utc::now().checked_sub_signed(age))
                .ok_or_else(|| {
                    OpsError::Invalid("older_than: further back than time goes".into())
                })?;
            filter.until = Some(filter.until.map_or(cutoff, |u| u.min(cutoff)));
        }
        refuse_everything(&filter)?;
        Ok(filter)
    }

    /// Purges the letters `req` names: a recorded decision, never a delete.
    pub async fn purge(&self, req: Purge, actor: &str) -> Result<ActionResult, OpsError> {
        let filter = self.purge_filter(&req)?;
        let report = recovery::purge(&self.inner.store, &filter, actor).await?;
        Ok(self.settled(report, &filter).await)
    }

    /// Removes settled letters from the RabbitMQ dead-letter queues; a
    /// failure here leaves extra messages, never lost ones, so it is
    /// logged, not returned.
    async fn settled(&self, report: recovery::ActionReport, filter: &DeadFilter) -> ActionResult {
        let inner = &self.inner;
        let removed = match recovery::sync_affected_queues(
            &inner.store,
            &inner.link,
            &inner.publisher,
            &inner.topology,
            filter,
        )
        .await
        {
            Ok(sync) => sync.removed,
            Err(e) => {
                tracing::warn!(error = %e, "syncing the dead-letter queues failed");
                0
            }
        };
        ActionResult {
            action_id: Some(report.action),
            dry_run: false,
            matched: report.matched,
            affected: report.affected,
            sample: Vec::new(),
            removed_from_queues: removed,
        }
    }

    /// Webhook events matching, newest first; `before` pages on from an
    /// event's id.
    pub async fn list_events(
        &self,
        query: &EventQuery,
        limit: i64,
        before: Option<Uuid>,
    ) -> Result<Vec<EventView>, OpsError> {
        let events = self
            .inner
            .store
            .list_events(&query.filter(Vec::new())?, before, limit_in(limit)?)
            .await?;
        Ok(events.iter().map(EventView::from).collect())
    }

    /// One event: its body and headers, the job it became and its replays.
    pub async fn show_event(&self, id: Uuid) -> Result<EventDetail, OpsError> {
        let store = &self.inner.store;
        let event = store.event(id).await?.ok_or(OpsError::NotFound {
            what: "event",
            id: id.to_string(),
        })?;
        let job = store.job(event.job_id).await?;
        let replays = store.replays_of(id).await?;
        let jobs: Vec<Uuid> = replays.iter().map(|r| r.job_id).collect();
        let states = events::job_states(store, &jobs).await?;
        let replays = replays
            .iter()
            .map(|r| ReplayView::new(r, states.get(&r.job_id).copied()))
            .collect();
        Ok(EventDetail::new(&event, job.as_ref(), replays))
    }

    /// How many events `req` would replay, and the newest of them; changes
    /// nothing, and refuses what the replay would refuse.
    pub async fn preview_replay(&self, req: &Replay) -> Result<ActionResult, OpsError> {
        let filter = events::replay_filter(req, Utc::now())?;
        let store = &self.inner.store;
        let matched = store.count_events(&filter).await?;
        let sample = store.list_events(&filter, None, SAMPLE).await?;
        Ok(ActionResult {
            action_id: None,
            dry_run: true,
            matched,
            affected: 0,
            sample: sample.iter().map(|e| e.id).collect(),
            removed_from_queues: 0,
        })
    }

    /// Replays the events `req` names, each once, as new jobs of one
    /// action audited as `actor`; `progress` hears how many are published.
    /// Events that could not be replayed (their source is no longer
    /// configured) are counted out and said in the action's `error`.
    pub async fn replay_events(
        &self,
        req: Replay,
        actor: &str,
        progress: impl FnMut(u64),
    ) -> Result<ActionResult, OpsError> {
        let filter: EventFilter = events::replay_filter(&req, Utc::now())?;
        let inner = &self.inner;
        let target = events::ReplayTarget {
            store: &inner.store,
            publisher: &inner.publisher,
            topology: &inner.topology,
            sources: inner.config.ingest.as_ref().map(|i| &i.sources),
            max_body_bytes: inner.config.worker.max_body_bytes,
        };
        let report = events::replay(target, &filter, actor, progress).await?;
        Ok(ActionResult {
            action_id: Some(report.action),
            dry_run: false,
            matched: report.matched,
            affected: report.replayed,
            sample: Vec::new(),
            removed_from_queues: 0,
        })
    }

    /// Deletes the attempt rows of jobs that succeeded before `cutoff`
    /// (dead letters and their attempts stay); returns how many.
    pub async fn prune(&self, cutoff: DateTime<Utc>) -> Result<u64, OpsError> {
        Ok(self
            .inner
            .store
            .prune_succeeded_attempts(cutoff, 10_000)
            .await?)
    }

    /// Every configured provider's protection.
    pub async fn providers(&self) -> Result<Vec<ProviderView>, OpsError> {
        let inner = &self.inner;
        Ok(providers::overview(&inner.config, &inner.store, &inner.link).await?)
    }

    /// Pauses `name` for every worker until `until` (`None`: until resumed).
    pub async fn pause(
        &self,
        name: &str,
        actor: &str,
        until: Option<DateTime<Utc>>,
    ) -> Result<HoldResult, OpsError> {
        if let Some(until) = until {
            let now = Utc::now();
            if until <= now {
                return Err(OpsError::Invalid("until: must be in the future".into()));
            }
            if (until - now).to_std().is_ok_and(|d| d > MAX_PAUSE) {
                return Err(OpsError::Invalid(format!(
                    "until: at most {} days ahead",
                    MAX_PAUSE.as_secs() / 86_400
                )));
            }
        }
        let inner = &self.inner;
        let action_id = providers::pause(&inner.config, &inner.store, name, actor, until).await?;
        Ok(HoldResult {
            action_id,
            provider: name.to_owned(),
        })
    }

    /// Ends an operator's pause of `name`.
    pub async fn resume(&self, name: &str, actor: &str) -> Result<HoldResult, OpsError> {
        let inner = &self.inner;
        let action_id = providers::resume(&inner.config, &inner.store, name, actor).await?;
        Ok(HoldResult {
            action_id,
            provider: name.to_owned(),
        })
    }
}

fn limit_in(limit: i64) -> Result<i64, OpsError> {
    if (1..=MAX_LIST).contains(&limit) {
        Ok(limit)
    } else {
        Err(OpsError::Invalid(format!(
            "limit: must be between 1 and {MAX_LIST}"
        )))
    }
}

/// A requeue or purge must say which letters: ids or a filter.
fn refuse_everything(filter: &DeadFilter) -> Result<(), OpsError> {
    if *filter == DeadFilter::default() {
        return Err(OpsError::Invalid(
            "say which letters: give ids or at least one filter".into(),
        ));
    }
    Ok(())
}
