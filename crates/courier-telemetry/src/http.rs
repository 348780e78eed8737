//! The one way Courier serves HTTP: the worker's endpoints and the admin
//! API both go through [`serve`].
//!
//! Owns the connection-level limits an HTTP client cannot get around:
//! request headers must arrive within [`HEADER_READ_TIMEOUT`] (a client that
//! trickles them holds nothing for long), HTTP/1.1 only, and a graceful stop
//! that lets requests in progress finish. [`read_body_within`] is the route
//! layer that bounds how long and how much of a body is read. It must never
//! decide what a route answers.

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::pin::pin;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Longest a client may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a client may take to send a request's body ([`read_body_within`]).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a graceful stop waits for requests in progress.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `stop` resolves.
pub async fn serve(listener: TcpListener, app: Router, stop: impl Future<Output = ()>) {
    let connections = TaskTracker::new();
    let draining = CancellationToken::new();
    let mut stop = pin!(stop);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause, go on.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let service = TowerToHyperService::new(
            app.clone()
                .map_request(|req: Request<hyper::body::Incoming>| req.map(Body::new)),
        );
        let draining = draining.clone();
        connections.spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let mut conn = pin!(http.serve_connection(TokioIo::new(stream), service));
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "HTTP connection ended");
                    }
                }
                _ = draining.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    draining.cancel();
    connections.close();
    if tokio::time::timeout(DRAIN_DEADLINE, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after {DRAIN_DEADLINE:?}; leaving them");
    }
}

/// A route layer (`axum::middleware::from_fn`) that reads the whole body
/// before the handler runs: at most `max_bytes`, within
/// [`BODY_READ_TIMEOUT`]. 413 or 408 otherwise, before any parsing.
pub async fn read_body_within(max_bytes: usize, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let read = axum::body::to_bytes(body, max_bytes);
    let bytes = match tokio::time::timeout(BODY_READ_TIMEOUT, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the body could not be read: over {max_bytes} bytes, or cut short"),
            );
        }
        Err(_) => {
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                &format!("the body did not arrive within {BODY_READ_TIMEOUT:?}"),
            );
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// An error answer in the shape every Courier API uses: `{"error": "…"}`.
fn refuse(status: StatusCode, why: &str) -> Response {
    let body = format!("{{\"error\":\"{}\"}}", why.replace(['"', '\\'], "'"));
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}
