//! API errors as RFC 9457 problem details (`application/problem+json`):
//! one shape, one status per kind.
//!
//! Owns the mapping from failures to HTTP statuses, and the rewriting of
//! the plain-text errors axum's extractors answer with (a body that is not
//! JSON, a wrong content type, a query that does not parse) into the same
//! shape. Messages never carry secrets or internals beyond what an operator
//! needs.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";
/// Most of a plain-text error body kept as a problem's detail.
const DETAIL_MAX: usize = 4096;

/// The body of every error response (RFC 9457).
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// Always `about:blank`: the status says what kind of problem it is.
    #[serde(rename = "type")]
    pub kind: String,
    /// The status's reason phrase.
    pub title: String,
    pub status: u16,
    /// What went wrong, for people; names the field when one is at fault.
    pub detail: String,
}

/// A problem-details response.
pub fn problem(status: StatusCode, detail: String) -> Response {
    let body = Problem {
        kind: "about:blank".into(),
        title: status.canonical_reason().unwrap_or("Error").into(),
        status: status.as_u16(),
        detail,
    };
    let mut response = (status, serde_json::to_vec(&body).unwrap_or_default()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

/// Rewrites an error answered in plain text (axum's rejections, an
/// unknown route) as problem details, keeping its status and the headers
/// that go with it (`WWW-Authenticate`, `Allow`).
pub async fn as_problem(response: Response) -> Response {
    let status = response.status();
    let already = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if already || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, DETAIL_MAX)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let detail = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    let mut out = problem(status, detail);
    for kept in [header::WWW_AUTHENTICATE, header::ALLOW] {
        if let Some(v) = parts.headers.get(&kept) {
            out.headers_mut().insert(kept, v.clone());
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("this token lacks the {0:?} scope")]
    Forbidden(&'static str),
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("the request took too long; a read can be tried again")]
    Timeout,
}

impl From<courier_ops::OpsError> for ApiError {
    fn from(e: courier_ops::OpsError) -> Self {
        use courier_ops::OpsError;
        use courier_ops::recovery::RecoveryError;
        match e {
            OpsError::Invalid(why) => ApiError::BadRequest(why),
            OpsError::NotFound { .. } => ApiError::NotFound,
            OpsError::Recovery(e @ RecoveryError::InvalidPatch { .. }) => {
                ApiError::BadRequest(e.to_string())
            }
            OpsError::Store(e) => {
                tracing::error!(error = %e, "admin API store error");
                ApiError::Internal("the database could not answer".into())
            }
            OpsError::Amqp(e) => {
                tracing::error!(error = %e, "admin API broker error");
                ApiError::Internal("RabbitMQ could not answer".into())
            }
            OpsError::Recovery(e) => {
                tracing::error!(error = %e, "admin API recovery error");
                ApiError::Internal("the action could not complete; it can be run again".into())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Timeout => StatusCode::SERVICE_UNAVAILABLE,
        };
        let mut response = problem(status, self.to_string());
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                "www-authenticate",
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
