//! The worker's own HTTP endpoints: `/metrics`, `/healthz`, `/readyz`.
//!
//! Owns the routes and their answers. Readiness is asked of a [`Probe`] the
//! worker provides (broker connected, database reachable, not draining), on
//! each request, with a deadline, so a hung dependency reads as not ready
//! rather than as a hung probe. It must never do work beyond answering:
//! no admin actions live here (those are courier-admin's, behind tokens).

use crate::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Longest a readiness check may take before it counts as failed.
const PROBE_DEADLINE: Duration = Duration::from_secs(2);
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One readiness check's result: its name and, when failing, why.
pub type Check = (&'static str, Result<(), String>);

/// What decides liveness and readiness.
pub trait Probe: Send + Sync + 'static {
    /// Readiness: may the worker be sent work?
    fn checks(&self) -> Pin<Box<dyn Future<Output = Vec<Check>> + Send + '_>>;
    /// Liveness: `Err` when the process can no longer recover by itself
    /// and should be restarted.
    fn alive(&self) -> Result<(), String>;
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    probe: Arc<dyn Probe>,
}

/// The routes, without a listener.
pub fn router(metrics: Arc<Metrics>, probe: Arc<dyn Probe>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, probe })
}

/// Binds `addr`; the caller learns the real address (port 0 picks one).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until `stop`.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    probe: Arc<dyn Probe>,
    stop: CancellationToken,
) {
    crate::http::serve(listener, router(metrics, probe), stop.cancelled_owned()).await;
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, OPENMETRICS)],
        state.metrics.encode(),
    )
        .into_response()
}

/// 200 while the worker can recover by itself, else 503 with the reason.
async fn healthz(State(state): State<AppState>) -> Response {
    match state.probe.alive() {
        Ok(()) => "ok\n".into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", crate::redact::scrub(&why)),
        )
            .into_response(),
    }
}

/// 200 when every check passes, else 503; the body lists each check
/// (error texts scrubbed of secrets: the endpoint needs no token).
async fn readyz(State(state): State<AppState>) -> Response {
    let checks = match tokio::time::timeout(PROBE_DEADLINE, state.probe.checks()).await {
        Ok(checks) => checks,
        Err(_) => vec![("probe", Err(format!("no answer within {PROBE_DEADLINE:?}")))],
    };
    let ready = checks.iter().all(|(_, r)| r.is_ok());
    let mut body = String::new();
    for (name, result) in &checks {
        match result {
            Ok(()) => body.push_str(&format!("{name}: ok\n")),
            Err(why) => body.push_str(&format!("{name}: {}\n", crate::redact::scrub(why))),
        }
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}
