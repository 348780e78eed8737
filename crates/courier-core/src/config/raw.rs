//! What users write: the config file's serde shapes, before validation.
//!
//! Owns the TOML structure (every table denies unknown keys, so a typo is
//! an error naming it). It must never hold a default or a rule: those are
//! `validate.rs`'s.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawConfig {
    pub(super) namespace: Option<String>,
    pub(super) broker: RawBroker,
    pub(super) database: RawDatabase,
    pub(super) worker: RawWorker,
    pub(super) admin: RawAdmin,
    pub(super) retention: RawRetention,
    pub(super) telemetry: RawTelemetry,
    pub(super) providers: BTreeMap<String, RawProvider>,
    pub(super) ingest: Option<RawIngest>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawTelemetry {
    pub(super) listen: Option<String>,
    pub(super) poll_interval_ms: Option<u64>,
    pub(super) log_format: Option<String>,
    pub(super) otlp_endpoint: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAdmin {
    pub(super) listen: Option<String>,
    pub(super) tokens: Vec<RawAdminToken>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdminToken {
    pub(super) name: String,
    pub(super) token_env: Option<String>,
    pub(super) token_file: Option<PathBuf>,
    pub(super) scopes: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRetention {
    pub(super) succeeded_attempts_days: Option<u32>,
    pub(super) interval_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawBroker {
    pub(super) url: Option<String>,
    pub(super) urls: Option<Vec<String>>,
    pub(super) connect_order: Option<String>,
    pub(super) prefetch: Option<u16>,
    pub(super) prefetch_budget: Option<u32>,
    pub(super) confirm_timeout_ms: Option<u64>,
    pub(super) tls: Option<RawBrokerTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawBrokerTls {
    pub(super) ca_file: Option<PathBuf>,
    pub(super) cert_file: Option<PathBuf>,
    pub(super) key_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawDatabase {
    pub(super) url: Option<String>,
    pub(super) max_connections: Option<u32>,
    pub(super) migrate_on_start: Option<bool>,
    pub(super) statement_timeout_ms: Option<u64>,
    pub(super) lock_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawWorker {
    pub(super) shutdown_grace_secs: Option<u64>,
    pub(super) outcome_batch_max: Option<usize>,
    pub(super) max_body_bytes: Option<usize>,
    pub(super) delivery_limit: Option<u32>,
    pub(super) linger_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProvider {
    pub(super) base_url: String,
    pub(super) timeout_ms: Option<u64>,
    pub(super) concurrency: Option<usize>,
    #[serde(default)]
    pub(super) headers: BTreeMap<String, String>,
    pub(super) auth: Option<RawAuth>,
    #[serde(default)]
    pub(super) retry: RawRetry,
    #[serde(default)]
    pub(super) retryable_statuses: Vec<u16>,
    #[serde(default)]
    pub(super) permanent_statuses: Vec<u16>,
    #[serde(default)]
    pub(super) operations: BTreeMap<String, RawOperation>,
    pub(super) rate_limit: Option<RawRateLimit>,
    #[serde(default)]
    pub(super) circuit: RawCircuit,
    pub(super) owner: Option<String>,
    pub(super) runbook: Option<String>,
    pub(super) signing: Option<RawSigning>,
}

/// How calls to a provider are signed: one secret (`secret_env` or
/// `secret_file`) or several (`secrets`, during a rotation).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSigning {
    pub(super) scheme: String,
    pub(super) secret_env: Option<String>,
    pub(super) secret_file: Option<PathBuf>,
    pub(super) secrets: Option<Vec<RawSecretRef>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    pub(super) per_second: f64,
    pub(super) burst: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawCircuit {
    pub(super) failure_rate: Option<f64>,
    pub(super) min_calls: Option<u32>,
    pub(super) window_secs: Option<u64>,
    pub(super) open_secs: Option<u64>,
    pub(super) probes: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    pub(super) scheme: String,
    pub(super) header: Option<String>,
    pub(super) token_env: Option<String>,
    pub(super) token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRetry {
    pub(super) max_attempts: Option<u32>,
    pub(super) base_delay_ms: Option<u64>,
    pub(super) max_delay_secs: Option<u64>,
    pub(super) jitter: Option<f64>,
    pub(super) max_retry_after_secs: Option<u64>,
    pub(super) max_throttled_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOperation {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) rate_limit: Option<RawRateLimit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawIngest {
    pub(super) listen: Option<String>,
    pub(super) max_body_bytes: Option<usize>,
    pub(super) sources: BTreeMap<String, RawIngestSource>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIngestSource {
    pub(super) scheme: String,
    #[serde(default)]
    pub(super) secrets: Vec<RawSecretRef>,
    pub(super) tolerance_secs: Option<u64>,
    pub(super) provider: String,
    pub(super) operation: String,
}

/// One secret by reference: exactly one of the two.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecretRef {
    pub(super) secret_env: Option<String>,
    pub(super) secret_file: Option<PathBuf>,
}
