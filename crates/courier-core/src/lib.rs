//! Courier's pure policy: the job contract, the config model, outcome
//! classification, the retry schedule and job state transitions.
//!
//! This crate owns every decision the pipeline makes and performs no I/O: no
//! sockets, no files, no environment, no clock reads (callers pass `now` and
//! randomness in). That keeps each rule unit- and property-testable without
//! services. It must never depend on lapin, sqlx or reqwest.

pub mod acks;
pub mod circuit;
pub mod classify;
pub mod config;
pub mod envelope;
pub mod failure;
pub mod ingest;
pub mod patch;
pub mod retry;
pub mod signals;
pub mod state;
pub mod template;
pub mod text;
pub mod trace;
pub mod webhook;

pub use classify::{AttemptClass, CallResult, Classification, classify};
pub use config::{Config, ConfigError};
pub use envelope::{InvalidJob, Job, JobEnvelope};
pub use failure::Failure;
pub use retry::{DeadReason, Decision, RetryPolicy};
pub use state::{ActionKind, DeliveryVerdict, JobState, LetterStatus, StoredProgress, UnknownName};
pub use trace::TraceContext;
