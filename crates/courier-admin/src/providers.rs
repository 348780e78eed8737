//! `/providers`: each provider's protection as operators see it, and the
//! hold that pauses it for every worker.
//!
//! Owns the pause request's shape. It must never read or write provider
//! state itself: courier-ops's `Operator` does, the same code the CLI runs.

use crate::auth::{Authorized, Pause, Read};
use crate::body::{Object, present, whole};
use crate::error::{ApiError, Problem};
use crate::routes::Shared;
use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use courier_ops::views::{HoldResult, ProviderView};
use serde::Deserialize;
use utoipa::ToSchema;

/// How long to pause: give at most one of `for_secs` and `until`; neither
/// pauses until resumed.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    #[serde(default, deserialize_with = "whole")]
    #[schema(nullable = false, minimum = 1, maximum = 2592000)]
    for_secs: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    until: Option<DateTime<Utc>>,
}

/// Every configured provider: limits, current rate, pauses, circuit, queue.
#[utoipa::path(get, path = "/providers",
    responses((status = 200, body = [ProviderView]), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn list_providers(
    _: Authorized<Read>,
    State(s): Shared,
) -> Result<Json<Vec<ProviderView>>, ApiError> {
    Ok(Json(s.ops.providers().await?))
}

/// Pause a provider for every worker: its jobs wait without spending attempts.
#[utoipa::path(post, path = "/providers/{name}/pause", request_body(content = PauseRequest, description = "Absent: pause until resumed"),
    params(("name" = String, Path, description = "Provider name")),
    responses((status = 200, body = HoldResult), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 403, body = Problem, content_type = "application/problem+json"), (status = 408, body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 415, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn pause_provider(
    Authorized(actor, _): Authorized<Pause>,
    State(s): Shared,
    Path(name): Path<String>,
    body: Option<Object<PauseRequest>>,
) -> Result<Json<HoldResult>, ApiError> {
    let req = body.map(|Object(b)| b).unwrap_or_default();
    let until = match (req.for_secs, req.until) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "give for_secs or until, not both".into(),
            ));
        }
        (Some(secs), None) => {
            if secs == 0 || secs > courier_ops::MAX_PAUSE.as_secs() {
                return Err(ApiError::BadRequest(format!(
                    "for_secs: must be between 1 and {}",
                    courier_ops::MAX_PAUSE.as_secs()
                )));
            }
            Some(Utc::now() + chrono::Duration::seconds(secs as i64))
        }
        (None, until) => until,
    };
    Ok(Json(
        s.ops.pause(&name, &format!("api:{actor}"), until).await?,
    ))
}

/// End an operator's pause of a provider.
#[utoipa::path(post, path = "/providers/{name}/resume",
    params(("name" = String, Path, description = "Provider name")),
    responses((status = 200, body = HoldResult), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 408, body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn resume_provider(
    Authorized(actor, _): Authorized<Pause>,
    State(s): Shared,
    Path(name): Path<String>,
) -> Result<Json<HoldResult>, ApiError> {
    Ok(Json(s.ops.resume(&name, &format!("api:{actor}")).await?))
}
