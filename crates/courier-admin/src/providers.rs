//! `/providers`: each provider's protection as operators see it, and the
//! hold that pauses it for every worker.
//!
//! Owns the JSON shape (also what `courier providers --json` prints). It
//! must never read or write provider state itself: courier-worker's
//! `providers` does, the same code the CLI runs.

use crate::auth::{Authorized, Pause, Read};
use crate::error::{ApiError, ErrorBody};
use crate::routes::Shared;
use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use courier_core::config::RateLimit;
use courier_worker::providers::{self, ProviderOverview, ProvidersError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;
use uuid::Uuid;

/// Longest an operator's pause may be set for by `for_secs` (30 days).
const MAX_PAUSE_SECS: u64 = 30 * 86_400;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RateLimitView {
    /// Calls per second, the total across every worker.
    per_second: f64,
    /// Calls that may go at once after a quiet period.
    burst: u32,
}

impl From<RateLimit> for RateLimitView {
    fn from(l: RateLimit) -> Self {
        RateLimitView {
            per_second: l.per_second,
            burst: l.burst,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HoldView {
    /// Who paused it.
    by: String,
    since: Option<DateTime<Utc>>,
    /// Absent: until resumed.
    until: Option<DateTime<Utc>>,
}

/// One provider's protection.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProviderView {
    name: String,
    /// Absent: no limit.
    rate_limit: Option<RateLimitView>,
    /// Operations with a limit of their own.
    operation_limits: BTreeMap<String, RateLimitView>,
    /// Calls per second over the last 10 seconds, every worker's.
    calls_per_second: f64,
    /// The provider asked every worker to wait until then.
    paused_until: Option<DateTime<Utc>>,
    /// How it asked: retry_after, ratelimit or throttled.
    pause_source: Option<String>,
    /// An operator's pause.
    held: Option<HoldView>,
    /// closed, half_open or open
    circuit: String,
    circuit_since: DateTime<Utc>,
    /// When an open circuit lets its first probes through.
    open_until: Option<DateTime<Utc>>,
    /// Jobs ready in its work queue (absent when RabbitMQ could not say).
    queue_depth: Option<u32>,
}

impl From<&ProviderOverview> for ProviderView {
    fn from(p: &ProviderOverview) -> Self {
        ProviderView {
            name: p.name.clone(),
            rate_limit: p.rate_limit.map(RateLimitView::from),
            operation_limits: p
                .operation_limits
                .iter()
                .map(|(op, l)| (op.clone(), RateLimitView::from(*l)))
                .collect(),
            calls_per_second: p.calls_per_second,
            paused_until: p.paused_until,
            pause_source: p.pause_source.clone(),
            held: p.held.as_ref().map(|h| HoldView {
                by: h.by.clone(),
                since: h.since,
                until: h.until,
            }),
            circuit: p.circuit.as_str().to_owned(),
            circuit_since: p.circuit_since,
            open_until: p.open_until,
            queue_depth: p.queue_depth,
        }
    }
}

/// How long to pause: give at most one of `for_secs` and `until`; neither
/// pauses until resumed.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    for_secs: Option<u64>,
    until: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HoldResult {
    /// The audit record.
    action_id: Uuid,
    provider: String,
}

impl From<ProvidersError> for ApiError {
    fn from(e: ProvidersError) -> Self {
        match e {
            ProvidersError::Unknown(_) => ApiError::NotFound,
            ProvidersError::Store(e) => e.into(),
            ProvidersError::Amqp(e) => {
                tracing::error!(error = %e, "admin API broker error");
                ApiError::Internal("RabbitMQ could not answer".into())
            }
        }
    }
}

/// Every configured provider: limits, current rate, pauses, circuit, queue.
#[utoipa::path(get, path = "/providers",
    responses((status = 200, body = [ProviderView]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn list_providers(
    _: Authorized<Read>,
    State(s): Shared,
) -> Result<Json<Vec<ProviderView>>, ApiError> {
    let all = providers::overview(&s.config, &s.store, &s.link).await?;
    Ok(Json(all.iter().map(ProviderView::from).collect()))
}

/// Pause a provider for every worker: its jobs wait without spending attempts.
#[utoipa::path(post, path = "/providers/{name}/pause", request_body = PauseRequest,
    params(("name" = String, Path, description = "Provider name")),
    responses((status = 200, body = HoldResult), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn pause_provider(
    Authorized(actor, _): Authorized<Pause>,
    State(s): Shared,
    Path(name): Path<String>,
    body: Option<Json<PauseRequest>>,
) -> Result<Json<HoldResult>, ApiError> {
    let req = body.map(|Json(b)| b).unwrap_or_default();
    let until = match (req.for_secs, req.until) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "give for_secs or until, not both".into(),
            ));
        }
        (Some(secs), None) => {
            if secs == 0 || secs > MAX_PAUSE_SECS {
                return Err(ApiError::BadRequest(format!(
                    "for_secs: must be between 1 and {MAX_PAUSE_SECS}"
                )));
            }
            Some(Utc::now() + chrono::Duration::seconds(secs as i64))
        }
        (None, Some(until)) => {
            if until <= Utc::now() {
                return Err(ApiError::BadRequest("until: must be in the future".into()));
            }
            Some(until)
        }
        (None, None) => None,
    };
    let action_id =
        providers::pause(&s.config, &s.store, &name, &format!("api:{actor}"), until).await?;
    Ok(Json(HoldResult {
        action_id,
        provider: name,
    }))
}

/// End an operator's pause of a provider.
#[utoipa::path(post, path = "/providers/{name}/resume",
    params(("name" = String, Path, description = "Provider name")),
    responses((status = 200, body = HoldResult), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub(crate) async fn resume_provider(
    Authorized(actor, _): Authorized<Pause>,
    State(s): Shared,
    Path(name): Path<String>,
) -> Result<Json<HoldResult>, ApiError> {
    let action_id = providers::resume(&s.config, &s.store, &name, &format!("api:{actor}")).await?;
    Ok(Json(HoldResult {
        action_id,
        provider: name,
    }))
}
