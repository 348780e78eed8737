//! The webhook event log as operators see it and replay it: which events
//! (`EventQuery`, validated here, naming the field), and the replay of an
//! event as a new job.
//!
//! Owns the replay's order: one operator action (`replay`, audited with
//! its filter) gives each matching event one replay row in PostgreSQL
//! before anything is published (`Store::claim_replays`: a second row for
//! the same action and event cannot exist), publishes each event's job with
//! a publisher confirm, and marks a replay published only after its
//! confirm. An event whose source is no longer configured, or whose job
//! would no longer fit, is left unpublished and said in the action's
//! `error`; the rest go on. An action that stops half-way is not resumed:
//! its unconfirmed replays stay visible (`published_at` absent), and a new
//! action replays again. It must never publish an event it has not
//! claimed, nor reuse an action's claims for another.

use crate::OpsError;
use chrono::{DateTime, Utc};
use courier_amqp::{Publisher, Topology};
use courier_core::ActionKind;
use courier_core::config::IngestSource;
use courier_core::ingest;
use courier_store::{EventFilter, Store};
use futures_util::future::join_all;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use utoipa::IntoParams;
use uuid::Uuid;

/// Which events: every field narrows the match. The same fields as the
/// CLI's flags and the API's query parameters. A text field that is empty,
/// all white space or holds a NUL is refused (it could only match
/// nothing); the admin API's document says so with a pattern.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// The source that sent it (`ingest.sources.<name>`).
    #[param(min_length = 1)]
    pub source: Option<String>,
    /// The sender's id for it (or `sha256:<hex>` of its body).
    #[param(min_length = 1)]
    pub event_id: Option<String>,
    /// Received at or after.
    pub since: Option<DateTime<Utc>>,
    /// Received before.
    pub until: Option<DateTime<Utc>>,
}

impl EventQuery {
    /// The store's filter for these fields and `ids`, or the field that
    /// makes no sense.
    pub fn filter(&self, ids: Vec<Uuid>) -> Result<EventFilter, OpsError> {
        for (field, value) in [("source", &self.source), ("event_id", &self.event_id)] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(OpsError::Invalid(format!("{field}: must not be empty")));
            }
            // PostgreSQL's text cannot hold one: nothing could match.
            if value.as_deref().is_some_and(|v| v.contains('\0')) {
                return Err(OpsError::Invalid(format!("{field}: must not contain NUL")));
            }
        }
        Ok(EventFilter {
            ids,
            source: self.source.clone(),
            event_id: self.event_id.clone(),
            since: self.since,
            until: self.until,
        })
    }
}

/// A replay: which events. Without ids or a filter it is refused, unless
/// `all` says the whole log is meant.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    pub ids: Vec<Uuid>,
    pub query: EventQuery,
    /// Every event (the filter, if any, still narrows).
    pub all: bool,
}

/// The filter a replay works on: refused when it names no events and
/// `all` was not said; events received after `now` are left out, so that
/// an action ends and does not replay what arrives while it runs.
pub(crate) fn replay_filter(req: &Replay, now: DateTime<Utc>) -> Result<EventFilter, OpsError> {
    let mut filter = req.query.filter(req.ids.clone())?;
    if !req.all && filter == EventFilter::default() {
        return Err(OpsError::Invalid(
            "ids: a replay needs ids or a filter (source, event_id, since, until), or `all` for every event".into(),
        ));
    }
    filter.until = Some(filter.until.map_or(now, |u| u.min(now)));
    Ok(filter)
}

/// Events claimed, built and published per round.
const PAGE: i64 = 100;

/// What a replay action did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    pub action: Uuid,
    /// Events matching when the action began.
    pub matched: i64,
    /// Events whose new job was published and confirmed.
    pub replayed: u64,
    /// Why the others were not, with how many each (also the action's
    /// recorded `error`).
    pub not_replayed: BTreeMap<String, u64>,
}

/// Where a replay publishes and what it may build.
#[derive(Debug, Clone, Copy)]
pub struct ReplayTarget<'a> {
    pub store: &'a Store,
    pub publisher: &'a Publisher,
    pub topology: &'a Topology,
    /// `ingest.sources` of the config (`None`: no `[ingest]`).
    pub sources: Option<&'a BTreeMap<String, IngestSource>>,
    /// `worker.max_body_bytes`: a job over it would be refused.
    pub max_body_bytes: usize,
}

/// Replays every event matching `filter` once, as one action audited as
/// `actor`; `progress` hears how many are published. The action's row is
/// finished whatever happened, with what was done and why not all.
pub async fn replay(
    to: ReplayTarget<'_>,
    filter: &EventFilter,
    actor: &str,
    mut progress: impl FnMut(u64),
) -> Result<ReplayReport, OpsError> {
    let store = to.store;
    let matched = store.count_events(filter).await?;
    let action = store
        .begin_action_on(actor, ActionKind::Replay, filter.to_json(), None)
        .await?;
    let mut report = ReplayReport {
        action,
        matched,
        replayed: 0,
        not_replayed: BTreeMap::new(),
    };
    let result = replay_claimed(to, filter, &mut report, &mut progress).await;
    let mut problems: Vec<String> = report
        .not_replayed
        .iter()
        .map(|(why, n)| format!("{n} not replayed: {why}"))
        .collect();
    if let Err(e) = &result {
        problems.insert(0, e.to_string());
    }
    let error = (!problems.is_empty()).then(|| problems.join("; "));
    if let Some(error) = &error {
        tracing::info!(%action, error, "replay did not publish every matching event");
    }
    store
        .finish_action(
            action,
            matched,
            i64::try_from(report.replayed).unwrap_or(i64::MAX),
            error.as_deref(),
        )
        .await?;
    result?;
    Ok(report)
}

/// One event's job, ready to publish.
struct Ready<'a> {
    event: Uuid,
    provider: &'a str,
    job_id: Uuid,
    body: Vec<u8>,
}

/// Claims, builds, publishes and settles page after page, counting into
/// `report`.
async fn replay_claimed(
    to: ReplayTarget<'_>,
    filter: &EventFilter,
    report: &mut ReplayReport,
    progress: &mut impl FnMut(u64),
) -> Result<(), OpsError> {
    let action = report.action;
    let mut after = None;
    loop {
        let claimed = to.store.claim_replays(action, filter, after, PAGE).await?;
        let Some((last, _)) = claimed.last() else {
            return Ok(());
        };
        after = Some(last.id);
        let mut ready = Vec::with_capacity(claimed.len());
        for (event, job_id) in &claimed {
            let Some(source) = to.sources.and_then(|s| s.get(&event.source)) else {
                let why = format!(
                    "source {:?} is not configured (ingest.sources)",
                    courier_core::text::printable(&event.source, 64)
                );
                *report.not_replayed.entry(why).or_default() += 1;
                continue;
            };
            let key = ingest::replay_key(&event.source, &event.event_id, action);
            let body = ingest::event_job(
                source,
                *job_id,
                &event.event_id,
                &event.body,
                event.received_at,
                key,
            )
            .to_body();
            if body.len() > to.max_body_bytes {
                let why = format!(
                    "the job would be over worker.max_body_bytes ({})",
                    to.max_body_bytes
                );
                *report.not_replayed.entry(why).or_default() += 1;
                continue;
            }
            ready.push(Ready {
                event: event.id,
                provider: &source.provider,
                job_id: *job_id,
                body,
            });
        }
        let publishes = ready.iter().map(|r| {
            to.publisher
                .publish_job(to.topology, r.provider, r.job_id, &r.body, None)
        });
        let results = join_all(publishes).await;
        let confirmed: Vec<Uuid> = ready
            .iter()
            .zip(&results)
            .filter(|(_, published)| published.is_ok())
            .map(|(r, _)| r.event)
            .collect();
        report.replayed += to.store.finish_replays(action, &confirmed).await?;
        progress(report.replayed);
        // The broker refused or went away: the rest of this page and the
        // pages after it stay unpublished; a new action replays them.
        if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
            return Err(e.into());
        }
    }
}

/// The replay jobs' states, by job id, for the ones the worker recorded.
pub(crate) async fn job_states(
    store: &Store,
    jobs: &[Uuid],
) -> Result<HashMap<Uuid, courier_core::JobState>, OpsError> {
    let mut states = HashMap::new();
    for &job in jobs {
        if let Some(record) = store.job(job).await? {
            states.insert(job, record.state);
        }
    }
    Ok(states)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("a timestamp")
    }

    #[test]
    fn empty_or_nul_text_is_refused_naming_the_field() {
        for (query, field) in [
            (
                EventQuery {
                    source: Some(" ".into()),
                    ..EventQuery::default()
                },
                "source",
            ),
            (
                EventQuery {
                    event_id: Some("a\0b".into()),
                    ..EventQuery::default()
                },
                "event_id",
            ),
        ] {
            let Err(OpsError::Invalid(why)) = query.filter(Vec::new()) else {
                panic!("{query:?} accepted");
            };
            assert!(why.starts_with(&format!("{field}:")), "{why}");
        }
    }

    #[test]
    fn a_replay_without_ids_or_filter_is_refused_naming_ids_unless_all() {
        let now = at("2026-12-03T10:00:00Z");
        let Err(OpsError::Invalid(why)) = replay_filter(&Replay::default(), now) else {
            panic!("an unfiltered replay was accepted");
        };
        assert!(why.starts_with("ids:"), "{why}");
        let all = replay_filter(
            &Replay {
                all: true,
                ..Replay::default()
            },
            now,
        )
        .expect("all is explicit");
        assert_eq!(all.until, Some(now), "nothing received after it began");
        let later = replay_filter(
            &Replay {
                query: EventQuery {
                    source: Some("payments".into()),
                    until: Some(at("2030-01-01T00:00:00Z")),
                    ..EventQuery::default()
                },
                ..Replay::default()
            },
            now,
        )
        .expect("a filter");
        assert_eq!(later.until, Some(now));
        let earlier = at("2026-01-01T00:00:00Z");
        let kept = replay_filter(
            &Replay {
                query: EventQuery {
                    until: Some(earlier),
                    ..EventQuery::default()
                },
                ..Replay::default()
            },
            now,
        )
        .expect("a filter");
        assert_eq!(kept.until, Some(earlier));
    }
}
