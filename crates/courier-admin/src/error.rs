//! API errors as JSON: one shape, one status per kind.
//!
//! Owns the mapping from failures to HTTP statuses. Messages never carry
//! secrets or internals beyond what an operator needs.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
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
        let mut response = (
            status,
            Json(ErrorBody {
                error: self.to_string(),
            }),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                "www-authenticate",
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
