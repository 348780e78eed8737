//! `courier ingest`: the webhook receiver. Providers call back ("payment
//! completed", "order shipped"); each call is verified, recorded, enqueued
//! as a job, and only then answered.
//!
//! Owns the front door, `POST /hooks/<source>`, in this order: the body is
//! bounded (413, before it is read past the limit); the signature is
//! verified in constant time before anything else looks at the request
//! (401, counted, never stored); the event id is taken (400 when the
//! sender's is no plain token); the job is built (413 when it would not fit
//! `worker.max_body_bytes`); the event is recorded in PostgreSQL in the
//! transaction that waits for the broker's confirm of its job (503 when
//! either is down: nothing is half-recorded, the sender retries); then 2xx.
//! A redelivered event is found by its `(source, event id)` and answered
//! 2xx again, creating nothing. `/metrics`, `/healthz` and `/readyz` are
//! served on `telemetry.listen`, apart from the hooks: the hooks' port
//! faces the senders, the telemetry port only Prometheus and the
//! orchestrator. It must never store or enqueue an event whose signature did
//! not verify, nor answer 2xx before the commit.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::Utc;
use courier_amqp::{AmqpError, Link, Publisher, Topology};
use courier_core::config::{Config, IngestSource};
use courier_core::webhook::{self, Scheme, SigningKey};
use courier_core::{Failure, ingest};
use courier_store::{NewEvent, RecordError, Recorded, Store, StoreError};
use courier_telemetry::metrics::{Metrics, UNKNOWN};
use courier_telemetry::secret::{Rules, SecretError, SecretSource};
use courier_telemetry::server::{Check, Probe};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::task::TaskTracker;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(
        "{file}: `ingest`: missing: `courier ingest` needs an [ingest] table with at least one source"
    )]
    NotConfigured { file: String },
    #[error("ingest.sources.{source_name}.secrets: {error}")]
    Secret {
        source_name: String,
        #[source]
        error: SecretError,
    },
    #[error("cannot listen on {addr} (ingest.listen): {error}")]
    Listen {
        addr: SocketAddr,
        #[source]
        error: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Amqp(#[from] AmqpError),
}

/// One configured source and its keys, read on each request (a
/// `secret_file` rotates without a restart).
#[derive(Debug)]
struct Source {
    config: IngestSource,
    secrets: Vec<SecretSource>,
}

impl Source {
    /// The keys as of now; a secret that no longer parses is skipped (its
    /// rotation was refused and the last good value kept by `SecretSource`).
    fn keys(&self) -> Vec<SigningKey> {
        self.secrets
            .iter()
            .filter_map(|s| s.current())
            .filter_map(|s| SigningKey::parse(self.config.scheme, s.expose()).ok())
            .collect()
    }
}

/// A secret is accepted only when it makes a key of its source's scheme.
fn rules(scheme: Scheme) -> Rules {
    fn check(scheme: Scheme, value: &str) -> Result<(), String> {
        SigningKey::parse(scheme, value).map(|_| ())
    }
    Rules {
        check: match scheme {
            Scheme::StandardWebhooks => |v| check(Scheme::StandardWebhooks, v),
            Scheme::Stripe => |v| check(Scheme::Stripe, v),
            Scheme::Github => |v| check(Scheme::Github, v),
        },
        // A half-done rotation must not turn every event away.
        revoke_when_gone: false,
    }
}

#[derive(Debug)]
struct Ingest {
    sources: BTreeMap<String, Source>,
    store: Store,
    link: Link,
    publisher: Publisher,
    topology: Topology,
    metrics: Arc<Metrics>,
    /// The largest job the worker accepts: an event's job must fit it.
    job_max_bytes: usize,
    /// Recordings in progress, each in a task of its own.
    recordings: TaskTracker,
    /// Requests in progress beyond which new ones are refused at once
    /// (503), before their bodies are read: memory stays bounded by this
    /// times `max_body_bytes` whoever is sending.
    admission: Arc<tokio::sync::Semaphore>,
}

/// Requests a receiver takes at once per database connection (each holds
/// one across its publish's confirm; the others wait for one, up to the
/// pool's acquire timeout). With 8 connections and the default body limit
/// (128 KiB) that is 256 requests and 32 MiB of bodies at most; 128
/// senders at once are all taken (docs/BENCHMARKS.md).
const IN_FLIGHT_PER_CONNECTION: usize = 32;

/// A running receiver; stops when dropped.
#[derive(Debug)]
pub struct IngestServer {
    /// Where the hooks are served.
    pub addr: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub telemetry_addr: SocketAddr,
    _stop: tokio::sync::watch::Sender<()>,
    done: tokio::task::JoinHandle<()>,
    recordings: TaskTracker,
}

impl IngestServer {
    /// Resolves every source's secrets, connects to PostgreSQL (migrating
    /// when configured) and RabbitMQ, declares the topology, and serves the
    /// hooks on `listener` and the telemetry on `telemetry.listen`.
    pub async fn start(
        config: &Config,
        listener: tokio::net::TcpListener,
    ) -> Result<IngestServer, IngestError> {
        let Some(ingest) = &config.ingest else {
            return Err(IngestError::NotConfigured {
                file: config.source.clone(),
            });
        };
        let mut sources = BTreeMap::new();
        for (name, source) in &ingest.sources {
            let secrets = source
                .secrets
                .iter()
                .map(|r| SecretSource::open(r, rules(source.scheme)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| IngestError::Secret {
                    source_name: name.clone(),
                    error,
                })?;
            sources.insert(
                name.clone(),
                Source {
                    config: source.clone(),
                    secrets,
                },
            );
        }
        let store = Store::connect(
            &config.database,
            &config.namespace,
            config.database.max_connections,
        )
        .await?;
        if config.database.migrate_on_start {
            store.migrate().await?;
        }
        let link = courier_amqp::connect(&config.broker, "courier ingest").await?;
        let topology = Topology::new(&config.namespace, config.providers.keys().cloned());
        topology.declare(&link.channel().await?).await?;
        let publisher = Publisher::open(&link, config.broker.confirm_timeout).await?;
        let metrics = Arc::new(Metrics::new(
            &config.providers,
            option_env!("COURIER_COMMIT").unwrap_or("unknown"),
        ));
        for name in sources.keys() {
            metrics.ingest.source(name);
        }
        let state = Arc::new(Ingest {
            sources,
            store,
            link,
            publisher,
            topology,
            metrics,
            job_max_bytes: config.worker.max_body_bytes,
            recordings: TaskTracker::new(),
            admission: Arc::new(tokio::sync::Semaphore::new(
                IN_FLIGHT_PER_CONNECTION * config.database.max_connections as usize,
            )),
        });
        let addr = listener.local_addr().map_err(|error| IngestError::Listen {
            addr: ingest.listen,
            error,
        })?;
        let telemetry = tokio::net::TcpListener::bind(config.telemetry.listen)
            .await
            .map_err(|error| IngestError::Listen {
                addr: config.telemetry.listen,
                error,
            })?;
        let telemetry_addr = telemetry
            .local_addr()
            .map_err(|error| IngestError::Listen {
                addr: config.telemetry.listen,
                error,
            })?;
        let recordings = state.recordings.clone();
        let probe: Arc<dyn Probe> = Arc::new(IngestProbe(state.clone()));
        let telemetry_app = courier_telemetry::server::router(state.metrics.clone(), probe);
        let app = router(state, ingest.max_body_bytes);
        let (stop, stopped) = tokio::sync::watch::channel(());
        let until_stopped = |mut stopped: tokio::sync::watch::Receiver<()>| async move {
            let _ = stopped.changed().await;
        };
        let hooks = courier_telemetry::http::serve(listener, app, until_stopped(stopped.clone()));
        let metrics =
            courier_telemetry::http::serve(telemetry, telemetry_app, until_stopped(stopped));
        let done = tokio::spawn(async move {
            tokio::join!(hooks, metrics);
        });
        tracing::info!(%addr, %telemetry_addr, "webhook receiver listening");
        Ok(IngestServer {
            addr,
            telemetry_addr,
            _stop: stop,
            done,
            recordings,
        })
    }

    /// Stops taking connections and waits for the requests in progress
    /// (each ends recorded and enqueued, or rolled back; bounded by the HTTP
    /// server's drain deadline).
    pub async fn shutdown(self) {
        drop(self._stop);
        let _ = self.done.await;
        // A request the drain deadline cut off may still be recording.
        self.recordings.close();
        self.recordings.wait().await;
    }
}

fn router(state: Arc<Ingest>, max_body_bytes: usize) -> Router {
    let admission = state.admission.clone();
    Router::new()
        .route("/hooks/{source}", post(receive))
        // Refuses a larger declared length at once, and stops reading a
        // body that grows past it: 413 either way.
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn(move |req, next| {
            courier_telemetry::http::read_body_within(max_body_bytes, req, next)
        }))
        // Outermost: a request over the limit is refused before its body
        // is read.
        .layer(axum::middleware::from_fn(move |req, next: Next| {
            let admission = admission.clone();
            async move {
                let Ok(_permit) = admission.try_acquire_owned() else {
                    let mut busy = refuse(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "too many webhook requests in progress; deliver it again",
                    );
                    busy.headers_mut().insert(
                        axum::http::header::RETRY_AFTER,
                        axum::http::HeaderValue::from_static("1"),
                    );
                    return busy;
                };
                next.run(req).await
            }
        }))
        .with_state(state)
}

/// An answer with a JSON body: `{"error": "…"}` or what was done.
fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn refuse(status: StatusCode, why: impl Into<String>) -> Response {
    answer(status, serde_json::json!({ "error": why.into() }))
}

async fn receive(
    State(state): State<Arc<Ingest>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let Some(source) = state.sources.get(&name) else {
        state.metrics.ingest.received(UNKNOWN);
        state.metrics.ingest.rejected(UNKNOWN, "unknown_source");
        return refuse(StatusCode::NOT_FOUND, "no such webhook source");
    };
    let metrics = &state.metrics.ingest;
    metrics.received(&name);
    let keys = source.keys();
    if keys.is_empty() {
        metrics.unavailable(&name, "secret");
        tracing::error!(source = %name, "no usable signing secret: answering 503");
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the receiver has no usable secret for this source",
        );
    }
    let header = |name: &str| -> Option<String> {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let now = Utc::now();
    let verified = match webhook::verify(
        source.config.scheme,
        &keys,
        &header,
        &body,
        now.timestamp(),
        source.config.tolerance.as_secs(),
    ) {
        Ok(verified) => verified,
        Err(rejection) => {
            metrics.rejected(&name, rejection.as_str());
            tracing::warn!(source = %name, reason = rejection.as_str(), "webhook refused: signature did not verify");
            return refuse(
                StatusCode::UNAUTHORIZED,
                format!("signature: {}", rejection.as_str().replace('_', " ")),
            );
        }
    };
    metrics.verified(&name);
    let event_id = ingest::event_id(source.config.scheme, &verified, &body);
    let job_id = ingest::job_id(&name, &event_id);
    let job = ingest::event_job(
        &source.config,
        job_id,
        &event_id,
        &body,
        now,
        ingest::idempotency_key(&name, &event_id),
    )
    .to_body();
    if job.len() > state.job_max_bytes {
        metrics.rejected(&name, "too_large");
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the event makes a job of {} bytes, over worker.max_body_bytes ({})",
                job.len(),
                state.job_max_bytes
            ),
        );
    }
    let event = NewEvent {
        id: Uuid::now_v7(),
        source: name.clone(),
        event_id,
        headers: ingest::kept_headers(&header),
        body: body.to_vec(),
        received_at: now,
        job_id,
    };
    // In a task of its own: a sender that hangs up (or a shutdown) must
    // not stop a recording between the publish and the commit; shutdown
    // waits for these tasks.
    let recording = {
        let state = state.clone();
        let provider = source.config.provider.clone();
        let event = event.clone();
        state.clone().recordings.spawn(async move {
            let publish = || {
                state
                    .publisher
                    .publish_job(&state.topology, &provider, job_id, &job, None)
            };
            state.store.record_event(&event, publish).await
        })
    };
    let Ok(recorded) = recording.await else {
        metrics.unavailable(&name, "database");
        return unavailable(Failure::Transient, "the event could not be recorded");
    };
    match recorded {
        Ok(Recorded::New) => {
            metrics.answered(&name, false, started.elapsed());
            answer(
                StatusCode::OK,
                serde_json::json!({ "event": event.id, "event_id": event.event_id, "job": job_id }),
            )
        }
        Ok(Recorded::Duplicate { id, job_id }) => {
            metrics.answered(&name, true, started.elapsed());
            answer(
                StatusCode::OK,
                serde_json::json!({ "event": id, "event_id": event.event_id, "job": job_id, "duplicate": true }),
            )
        }
        Err(RecordError::Store(e)) => {
            metrics.unavailable(&name, "database");
            tracing::error!(source = %name, error = %e, class = ?e.failure(), "recording a webhook event failed: answering 503");
            unavailable(e.failure(), "the event could not be recorded")
        }
        Err(RecordError::Publish(e)) => {
            metrics.unavailable(&name, "broker");
            tracing::error!(source = %name, error = %e, "publishing a webhook event's job failed: answering 503");
            unavailable(e.failure(), "the event could not be enqueued")
        }
    }
}

/// 503 asks the sender to deliver again; nothing of the event was kept.
/// A refusal that a retry cannot fix (PostgreSQL refusing the row) is a
/// 500 instead: still retried by senders, but told apart in their logs.
fn unavailable(failure: Failure, why: &str) -> Response {
    let status = match failure {
        Failure::Transient | Failure::Setup => StatusCode::SERVICE_UNAVAILABLE,
        Failure::Refused => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut response = refuse(status, format!("{why}; nothing was kept: deliver it again"));
    response.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("5"),
    );
    response
}

/// Ready when both PostgreSQL and RabbitMQ answer: an event can only be
/// taken when it can be recorded and enqueued.
struct IngestProbe(Arc<Ingest>);

const PING_DEADLINE: Duration = Duration::from_secs(1);

impl Probe for IngestProbe {
    fn checks(&self) -> Pin<Box<dyn Future<Output = Vec<Check>> + Send + '_>> {
        Box::pin(async move {
            let database = match tokio::time::timeout(PING_DEADLINE, self.0.store.ping()).await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {PING_DEADLINE:?}")),
            };
            vec![
                ("broker", self.0.link.health().check()),
                ("database", database),
            ]
        })
    }

    fn alive(&self) -> Result<(), String> {
        Ok(())
    }
}
