//! Courier's admin HTTP API: the operator's recovery tools over JSON.
//!
//! Owns the routes (`routes.rs`), bearer-token authorization with scopes
//! (`auth.rs`), the OpenAPI 3.1 document generated from the handlers'
//! annotations ([`openapi`]) and the web console's files (`console.rs`,
//! `console/`), a page that calls this same API with the operator's token. Every handler authorizes before it touches the
//! store, so a caller without the right token learns nothing, not even
//! whether a job exists. It must never implement an operator's verb itself:
//! every route calls courier-ops's `Operator`, the same code the CLI runs.

pub mod auth;
mod body;
mod console;
mod error;
mod providers;
mod routes;

pub use auth::{AuthError, Tokens};
pub use error::ApiError;
pub use routes::MAX_REQUEST_BYTES;

use courier_core::Config;
use courier_ops::Operator;
use std::net::SocketAddr;
use std::sync::Arc;
use utoipa::OpenApi as _;

/// What every handler needs.
#[derive(Debug)]
pub struct AdminState {
    pub ops: Operator,
    pub tokens: Tokens,
}

/// The API's routes, without a listener.
pub fn router(state: Arc<AdminState>) -> axum::Router {
    routes::router(state)
}

/// The OpenAPI 3.1 document of [`router`], generated from the code, as
/// served at `/openapi.json` and kept in `docs/openapi.json`.
pub fn openapi_json() -> String {
    let document = routes::with_rules(&routes::ApiDoc::openapi());
    serde_json::to_string_pretty(&document).unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Ops(#[from] courier_ops::OpsError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running admin server; stops when dropped.
#[derive(Debug)]
pub struct AdminServer {
    pub addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// Connects to the store and broker of `config` and serves on `listener`
    /// (bind `config.admin.listen`, or `127.0.0.1:0` in tests).
    pub async fn start(
        config: &Config,
        listener: tokio::net::TcpListener,
    ) -> Result<AdminServer, StartError> {
        let tokens = Tokens::resolve(&config.admin.tokens)?;
        let ops =
            Operator::connect(config, "courier admin", config.database.max_connections).await?;
        let state = Arc::new(AdminState { ops, tokens });
        let addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: config.admin.listen,
            source,
        })?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = router(state);
        let done = tokio::spawn(courier_telemetry::http::serve(listener, app, async {
            let _ = stopped.await;
        }));
        tracing::info!(%addr, "admin API listening");
        Ok(AdminServer {
            addr,
            _stop: stop,
            done,
        })
    }

    /// Serves until the task ends (it does not end by itself).
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}
