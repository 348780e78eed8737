//! Courier's observability: what a worker tells Prometheus, its health
//! checks and its logs.
//!
//! Owns the metric families ([`metrics`]), the `/metrics`, `/healthz` and
//! `/readyz` endpoints ([`server`]), log setup ([`logging`]), the optional
//! OTLP span export ([`otlp`]), and secrets: resolving references to them
//! ([`secret`], rotating with their files) beside the scrubbing of every
//! resolved one from logs ([`redact`]), so that no secret is read without
//! the redaction learning it. It knows nothing of
//! RabbitMQ, PostgreSQL or HTTP providers: the worker reports events to it
//! and answers its readiness probe. It must never put an unbounded value
//! (job id, key, URL, payload) into a metric label.

pub mod http;
pub mod logging;
pub mod metrics;
pub mod otlp;
pub mod redact;
pub mod secret;
pub mod server;

pub use metrics::{DeferReason, InFlight, JobOutcome, Metrics};
pub use server::{Check, Probe};

/// The git commit this build came from (`unknown` outside a checkout).
pub const BUILD_COMMIT: &str = env!("COURIER_GIT_COMMIT");
