//! What operators see and steer of each provider's protection: its limits,
//! the rate it is called at, a pause it asked for, an operator's hold, its
//! circuit and its queue; and the hold itself (pause / resume for every
//! worker, audited).
//!
//! Owns the one answer the CLI (`courier providers`) and the admin API
//! (`/providers`) both give. It must never decide anything a worker decides
//! (courier-worker's `gate` does): it reads the shared state and writes only
//! an operator's hold.

use crate::views::{HoldView, ProviderView, RateLimitView};
use chrono::{DateTime, Utc};
use courier_amqp::{AmqpError, Link, Topology};
use courier_core::Config;
use courier_core::circuit::CircuitState;
use courier_store::{ProviderActivity, Store, StoreError};
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

/// Over how long the current rate is measured (from the attempts recorded).
pub const RATE_WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ProvidersError {
    #[error("no provider named {0:?} is configured")]
    Unknown(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Amqp(#[from] AmqpError),
}

/// Every configured provider (in name order), with what every worker shares
/// about it.
pub async fn overview(
    config: &Config,
    store: &Store,
    link: &Link,
) -> Result<Vec<ProviderView>, ProvidersError> {
    let names: Vec<String> = config.providers.keys().cloned().collect();
    store.ensure_providers(&names, &[]).await?;
    let states = store.provider_states().await?;
    let activity: BTreeMap<String, ProviderActivity> = store
        .provider_activity(RATE_WINDOW)
        .await?
        .into_iter()
        .map(|a| (a.provider.clone(), a))
        .collect();
    let topology = Topology::new(&config.namespace, names.iter().cloned());
    // The broker's view is a nicety: without it the rest still answers.
    let channel = link.channel().await.ok();
    let mut out = Vec::with_capacity(names.len());
    for (name, provider) in &config.providers {
        let Some(state) = states.providers.iter().find(|s| &s.provider == name) else {
            continue;
        };
        let queue_depth = match &channel {
            Some(ch) => courier_amqp::topology::message_count(ch, &topology.work_queue(name))
                .await
                .ok(),
            None => None,
        };
        let paused_until = state.paused_until.filter(|t| *t > states.now);
        let activity = activity.get(name).cloned().unwrap_or_default();
        out.push(ProviderView {
            name: name.clone(),
            owner: provider.owner.clone(),
            runbook: provider.runbook.clone(),
            rate_limit: provider.rate_limit.map(RateLimitView::from),
            operation_limits: provider
                .operations
                .iter()
                .filter_map(|(op, o)| o.rate_limit.map(|l| (op.clone(), RateLimitView::from(l))))
                .collect(),
            calls_per_second: activity.calls as f64 / RATE_WINDOW.as_secs_f64(),
            error_rate: (activity.calls > 0)
                .then(|| activity.failures as f64 / activity.calls as f64),
            retrying: activity.retrying,
            dead_pending: activity.dead_pending,
            paused_until,
            pause_source: paused_until.and(state.pause_source.clone()),
            held: state.held_by.clone().map(|by| HoldView {
                by,
                since: state.held_since,
                until: state.held_until,
            }),
            circuit: state.circuit.as_str().to_owned(),
            circuit_since: state.circuit_since,
            open_until: state
                .open_until
                .filter(|_| state.circuit == CircuitState::Open),
            queue_depth,
        });
    }
    Ok(out)
}

/// Holds `name` for every worker until `until` (or until resumed): its jobs
/// wait in the delay queues without spending attempts. Audited; returns the
/// action's id.
pub async fn pause(
    config: &Config,
    store: &Store,
    name: &str,
    actor: &str,
    until: Option<DateTime<Utc>>,
) -> Result<Uuid, ProvidersError> {
    steer(config, store, name, actor, Steer::Hold { until }).await
}

/// Ends an operator's hold on `name`. Audited; returns the action's id.
pub async fn resume(
    config: &Config,
    store: &Store,
    name: &str,
    actor: &str,
) -> Result<Uuid, ProvidersError> {
    steer(config, store, name, actor, Steer::Release).await
}

/// What an operator does to a provider's hold.
#[derive(Debug, Clone, Copy)]
enum Steer {
    Hold { until: Option<DateTime<Utc>> },
    Release,
}

async fn steer(
    config: &Config,
    store: &Store,
    name: &str,
    actor: &str,
    steer: Steer,
) -> Result<Uuid, ProvidersError> {
    let name = known(config, name)?;
    store
        .ensure_providers(std::slice::from_ref(&name), &[])
        .await?;
    let id = match steer {
        Steer::Hold { until } => store.hold_provider(&name, actor, until).await?,
        Steer::Release => store.release_provider(&name, actor).await?,
    }
    .ok_or_else(|| ProvidersError::Unknown(name.clone()))?;
    tracing::info!(provider = %name, actor, ?steer, "an operator steered a provider");
    Ok(id)
}

fn known(config: &Config, name: &str) -> Result<String, ProvidersError> {
    if config.providers.contains_key(name) {
        Ok(name.to_owned())
    } else {
        Err(ProvidersError::Unknown(name.to_owned()))
    }
}
