//! The web console's files, served at `/` beside the API they call.
//!
//! Owns serving three files compiled into the binary (`console/`: a page,
//! its script and its stylesheet; no CDN, no build step) with headers that
//! keep the page to itself: a Content-Security-Policy allowing only this
//! origin's script, style and API, no framing, no referrer. The files hold
//! no data and need no token; everything the page shows comes from the API
//! with the token the operator signs in with. It must never render data on
//! the server or accept a token any other way than the API does.

use crate::AdminState;
use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;

const PAGE: &str = include_str!("../console/index.html");
const SCRIPT: &str = include_str!("../console/console.js");
const STYLE: &str = include_str!("../console/console.css");

/// Only this origin's files and API; inline script and style are refused,
/// so text from a job that reached the page could not run even if it were
/// ever written as markup (the script writes text nodes only).
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; \
    frame-ancestors 'none'";

pub(crate) fn router() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/", get(|| file(PAGE, "text/html; charset=utf-8")))
        .route(
            "/console.js",
            get(|| file(SCRIPT, "text/javascript; charset=utf-8")),
        )
        .route(
            "/console.css",
            get(|| file(STYLE, "text/css; charset=utf-8")),
        )
}

async fn file(body: &'static str, content_type: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
            // A new build's console replaces the old at the next load.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}
