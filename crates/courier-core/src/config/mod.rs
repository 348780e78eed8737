//! The config model: one TOML file, a few environment overrides, validated
//! into runtime types.
//!
//! Owns the runtime types (here), the raw serde structs (`raw.rs`: what a
//! user writes), the env overrides and the exhaustive conversion into
//! [`Config`] (`validate.rs`: what the worker runs on), and the namespace
//! and URL rules (`urls.rs`). Every
//! error names the key and the file. It must never read files or the
//! environment itself (callers pass the text and an env lookup) and must never
//! accept a secret as a literal: secrets are references (`token_env`,
//! `token_file`) resolved at the edge.

use crate::classify::StatusOverrides;
use crate::envelope::{InvalidJob, Job, check_name};
use crate::retry::{MAX_DELAY_SECS, RetryPolicy};
use crate::template::PathTemplate;
mod raw;
#[cfg(test)]
mod tests;
mod urls;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;
pub use urls::{check_namespace, redact_url, url_password};
use validate::Validator;

/// Our machines' broker: RabbitMQ's well-known default account on loopback.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Our machines' database: trust auth on loopback.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const DEFAULT_NAMESPACE: &str = "courier";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8081";
/// Where a worker serves `/metrics`, `/healthz` and `/readyz` by default.
pub const DEFAULT_TELEMETRY_LISTEN: &str = "127.0.0.1:9464";
/// Highest `worker.delivery_limit`; the broker dead-letters on its own above
/// this (courier-amqp's `BROKER_DELIVERY_LIMIT`).
pub const MAX_DELIVERY_LIMIT: u32 = 15;
/// `worker.linger_ms` unless set: enough for the lookups and commits of
/// a worker at a few thousand jobs a second to share round trips, a few
/// milliseconds added to each job at low load (docs/BENCHMARKS.md).
pub const DEFAULT_LINGER_MS: u64 = 1;
/// Longest accepted `worker.linger_ms`: every job at low load may wait this
/// long twice (its lookup and its commit).
pub const MAX_LINGER: Duration = Duration::from_millis(50);

/// Environment variables that override the file.
pub const ENV_NAMESPACE: &str = "COURIER_NAMESPACE";
pub const ENV_AMQP_URL: &str = "COURIER_AMQP_URL";
pub const ENV_DATABASE_URL: &str = "COURIER_DATABASE_URL";
pub const ENV_LOG_FORMAT: &str = "COURIER_LOG_FORMAT";
/// OpenTelemetry's own variable for the collector: overrides
/// `telemetry.otlp_endpoint`.
pub const ENV_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// A config error: which file, which key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: `{key}`: {problem}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub problem: String,
}

// ---- validated: what the worker runs on -----------------------------------

#[derive(Debug, Clone)]
pub struct Config {
    /// Where this config came from, for messages.
    pub source: String,
    /// Prefix of every exchange and queue, and the PostgreSQL schema.
    pub namespace: String,
    pub broker: BrokerConfig,
    pub database: DatabaseConfig,
    pub worker: WorkerConfig,
    pub admin: AdminConfig,
    pub retention: RetentionConfig,
    pub telemetry: TelemetryConfig,
    pub providers: BTreeMap<String, ProviderConfig>,
    /// `courier ingest`, the webhook receiver (`None`: no `[ingest]`).
    pub ingest: Option<IngestConfig>,
}

/// Where `courier ingest` listens by default.
pub const DEFAULT_INGEST_LISTEN: &str = "127.0.0.1:8090";
/// Default of [`IngestConfig::max_body_bytes`], when half of
/// `worker.max_body_bytes` is more.
pub const DEFAULT_INGEST_MAX_BODY: usize = 1024 * 1024;
/// Longest `tolerance_secs` accepted: a signed event can be sent again
/// (by anyone who captured it) for that long.
pub const MAX_INGEST_TOLERANCE_SECS: u64 = 3600;
/// Default of [`IngestSource::tolerance`].
pub const DEFAULT_INGEST_TOLERANCE: Duration = Duration::from_secs(300);

/// `courier ingest`: webhooks in, verified, recorded, enqueued.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub listen: std::net::SocketAddr,
    /// Larger bodies are answered 413 before they are read.
    pub max_body_bytes: usize,
    /// By name: each is served at `POST /hooks/<name>`.
    pub sources: BTreeMap<String, IngestSource>,
}

/// One sender of webhooks and the job its events become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestSource {
    pub name: String,
    pub scheme: crate::webhook::Scheme,
    /// Every key a signature may verify with (several during a rotation).
    pub secrets: Vec<SecretRef>,
    /// How far a signed timestamp may be from now, either way (schemes
    /// without one ignore it).
    pub tolerance: Duration,
    pub provider: String,
    pub operation: String,
}

/// A worker's own observability: the metrics and health endpoints, and how
/// it logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// Serves `/metrics`, `/healthz` and `/readyz`.
    pub listen: std::net::SocketAddr,
    /// How often queue depths and pending dead letters are sampled.
    pub poll_interval: Duration,
    pub log_format: LogFormat,
    /// Base URL of an OpenTelemetry collector (OTLP/HTTP); `None`: spans
    /// are not exported.
    pub otlp_endpoint: Option<String>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for a log pipeline (production default).
    Json,
    /// Human-readable lines, for a terminal.
    Pretty,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(LogFormat::Json),
            "pretty" => Ok(LogFormat::Pretty),
            other => Err(format!(
                "{other:?} is not a log format: use \"json\" or \"pretty\""
            )),
        }
    }
}

/// The admin HTTP API.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: std::net::SocketAddr,
    pub tokens: Vec<AdminToken>,
}

/// A bearer token for the admin API: a name (recorded as the actor), where
/// its secret lives, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminToken {
    pub name: String,
    pub secret: SecretRef,
    pub scopes: Vec<Scope>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// See dead letters and jobs.
    Read,
    /// Requeue dead letters.
    Requeue,
    /// Purge dead letters.
    Purge,
    /// Pause and resume providers for every worker.
    Pause,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Requeue => "requeue",
            Self::Purge => "purge",
            Self::Pause => "pause",
        }
    }
}

/// How long the store keeps what it no longer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Attempt rows of jobs that succeeded longer ago than this are deleted;
    /// `None` keeps them forever. Dead letters are kept until settled.
    pub succeeded_attempts: Option<Duration>,
    /// How often a worker applies the retention.
    pub interval: Duration,
}

#[derive(Clone)]
pub struct BrokerConfig {
    /// The cluster's nodes, one URL each (at least one, all of one scheme):
    /// Courier connects to one and moves to the next when it is lost. May
    /// hold passwords (from the environment): never print them.
    pub urls: Vec<String>,
    /// Which node of `urls` the first connection tries first.
    pub connect_order: ConnectOrder,
    /// Deliveries a provider's consumer may hold unacknowledged.
    pub prefetch: u16,
    /// Deliveries all of a worker's consumers may hold together: with many
    /// providers each queue's prefetch is this shared out, so a worker's
    /// memory does not grow with the number of providers
    /// ([`BrokerConfig::queue_prefetch`]).
    pub prefetch_budget: u32,
    /// Longest wait for the broker to confirm a publish.
    pub confirm_timeout: Duration,
    /// Files for `amqps://` (all optional): the broker's certificate is
    /// always verified, against these CAs besides the bundled public roots.
    pub tls: BrokerTls,
}

/// Where the first connection to a cluster goes. Either way a lost
/// connection is replaced by one to the next node that answers, starting
/// after the node lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConnectOrder {
    /// A node at random: workers sharing one config spread over the nodes.
    #[default]
    Random,
    /// The first listed node that answers: a preferred node (say, in the
    /// same zone), the others for failover.
    Listed,
}

/// TLS files for an `amqps://` broker URL; read at each connect, so that
/// renewed certificates are picked up on the next reconnect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerTls {
    /// PEM: CA certificates to trust besides the bundled public roots.
    pub ca_file: Option<PathBuf>,
    /// PEM: a client certificate (chain) for mutual TLS, with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM: the client certificate's private key (PKCS#8).
    pub key_file: Option<PathBuf>,
}

/// Default of [`BrokerConfig::confirm_timeout`]: a confirm takes
/// milliseconds; one that has not come in this long never will on this
/// channel.
pub const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(15);

impl BrokerConfig {
    /// One node's `url` with every other setting at its default (tools,
    /// tests).
    pub fn with_url(url: &str) -> Self {
        Self {
            urls: vec![url.to_owned()],
            connect_order: ConnectOrder::Random,
            prefetch: 256,
            prefetch_budget: DEFAULT_PREFETCH_BUDGET,
            confirm_timeout: DEFAULT_CONFIRM_TIMEOUT,
            tls: BrokerTls::default(),
        }
    }
}

#[derive(Clone)]
pub struct DatabaseConfig {
    /// May hold a password (from the environment): never print it.
    pub url: String,
    pub max_connections: u32,
    pub migrate_on_start: bool,
    /// PostgreSQL cancels any statement running longer (`statement_timeout`).
    pub statement_timeout: Duration,
    /// PostgreSQL gives up waiting for a lock after this (`lock_timeout`).
    pub lock_timeout: Duration,
}

/// Defaults of [`DatabaseConfig`]'s timeouts: far above any statement
/// Courier runs (its batches take milliseconds), low enough that a stuck
/// one is noticed.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

impl DatabaseConfig {
    /// `url` with every other setting at its default (tools, tests).
    pub fn with_url(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            max_connections: 8,
            migrate_on_start: true,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        }
    }
}

impl fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<String> = self.urls.iter().map(|u| redact_url(u)).collect();
        f.debug_struct("BrokerConfig")
            .field("urls", &urls)
            .field("connect_order", &self.connect_order)
            .field("prefetch", &self.prefetch)
            .field("prefetch_budget", &self.prefetch_budget)
            .field("confirm_timeout", &self.confirm_timeout)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Default of [`BrokerConfig::prefetch_budget`]: one provider still gets
/// the full default prefetch, and a worker's memory stays flat as providers
/// are added (each delivery in flight may hold an HTTP connection of ~22
/// KB: the largest cost under load, measured in docs/SCALING.md).
pub const DEFAULT_PREFETCH_BUDGET: u32 = 512;

impl Config {
    /// Every URL Courier connects with (the broker's nodes, the database):
    /// what may carry a password to keep out of logs.
    pub fn connection_urls(&self) -> impl Iterator<Item = &str> {
        self.broker
            .urls
            .iter()
            .chain([&self.database.url])
            .map(String::as_str)
    }
}

impl BrokerConfig {
    /// Each queue's prefetch when a worker consumes `queues` queues: the
    /// budget shared out evenly, never above `prefetch`, never below 1 (a
    /// queue always gets deliveries).
    pub fn queue_prefetch(&self, queues: usize) -> u16 {
        let share = self.prefetch_budget / u32::try_from(queues.max(1)).unwrap_or(u32::MAX);
        u16::try_from(share)
            .unwrap_or(u16::MAX)
            .clamp(1, self.prefetch.max(1))
    }

    /// The first node's URL: where a tool that needs one node connects.
    pub fn first_url(&self) -> &str {
        self.urls.first().map(String::as_str).unwrap_or_default()
    }
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("migrate_on_start", &self.migrate_on_start)
            .field("statement_timeout", &self.statement_timeout)
            .field("lock_timeout", &self.lock_timeout)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// How long shutdown waits for in-flight jobs before requeuing them.
    pub shutdown_grace: Duration,
    /// Most outcomes committed in one transaction.
    pub outcome_batch_max: usize,
    /// Largest accepted message body.
    pub max_body_bytes: usize,
    /// Deliveries of one message without an outcome before it is treated as
    /// poison and dead-lettered.
    pub delivery_limit: u32,
    /// How long a small batch of outcomes or lookups waits for company
    /// before it goes to PostgreSQL (zero: it goes at once). Trades latency
    /// at low load for fewer round trips; see [`DEFAULT_LINGER_MS`].
    pub linger: Duration,
}

#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub name: String,
    /// Without a trailing slash.
    pub base_url: String,
    pub timeout: Duration,
    /// Most calls in flight to this provider from one worker.
    pub concurrency: usize,
    pub headers: Vec<(String, String)>,
    pub auth: Option<AuthConfig>,
    pub retry: RetryPolicy,
    pub statuses: StatusOverrides,
    pub operations: BTreeMap<String, Operation>,
    /// The provider's total rate, across every worker (`None`: unlimited).
    pub rate_limit: Option<RateLimit>,
    pub circuit: CircuitPolicy,
    /// Who answers for this provider's failures (a team): shown beside its
    /// dead letters and joined onto its alerts.
    pub owner: Option<String>,
    /// Where its on-call steps are written (an http(s) URL).
    pub runbook: Option<String>,
    /// Signs every call (`None`: calls go unsigned).
    pub signing: Option<SigningConfig>,
}

/// How a provider's calls are signed: the scheme (only
/// [`Scheme::StandardWebhooks`](crate::webhook::Scheme) goes out) and one
/// key per secret; with several (a rotation) each call carries one
/// signature per key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningConfig {
    pub scheme: crate::webhook::Scheme,
    pub secrets: Vec<SecretRef>,
}

/// Most keys one provider signs with at once.
pub const MAX_SIGNING_SECRETS: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    pub scheme: AuthScheme,
    pub secret: SecretRef,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthScheme {
    /// `Authorization: Bearer <secret>`
    Bearer,
    /// `<name>: <secret>`
    Header(String),
}

/// Where a secret lives. Resolved at the edge, never stored in config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }

    /// Whether the payload travels as a JSON body.
    pub fn sends_body(self) -> bool {
        match self {
            Self::Post | Self::Put | Self::Patch => true,
            Self::Get | Self::Delete => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Operation {
    pub method: HttpMethod,
    pub path: PathTemplate,
    /// A limit of its own, inside the provider's.
    pub rate_limit: Option<RateLimit>,
}

/// A rate limit: the total for every worker process of the namespace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Calls per second, sustained.
    pub per_second: f64,
    /// Calls that may go at once after a quiet period.
    pub burst: u32,
}

/// When a provider's circuit opens and closes again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CircuitPolicy {
    /// Open when at least this share of calls failed…
    pub failure_rate: f64,
    /// …among at least this many…
    pub min_calls: u32,
    /// …in this window.
    pub window: Duration,
    /// Stay open this long, then let probes through.
    pub open_for: Duration,
    /// Successful probe calls that close it again.
    pub probes: u32,
}

impl Default for CircuitPolicy {
    fn default() -> Self {
        Self {
            failure_rate: 0.5,
            min_calls: 20,
            window: Duration::from_secs(30),
            open_for: Duration::from_secs(30),
            probes: 3,
        }
    }
}

impl Config {
    /// Parses and validates `text` (from `source`, named in errors), after
    /// applying the environment overrides found through `env`.
    pub fn from_toml(
        text: &str,
        source: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            ConfigError {
                file: match line {
                    Some(l) => format!("{source}:{l}"),
                    None => source.to_owned(),
                },
                key: e.message().split('`').nth(1).unwrap_or("").to_owned(),
                problem: e.message().to_owned(),
            }
        })?;
        Validator { source }.config(raw, env)
    }

    /// The provider and operation a job names, or why it cannot run.
    pub fn operation(&self, job: &Job) -> Result<(&ProviderConfig, &Operation), InvalidJob> {
        let provider = self.providers.get(&job.provider).ok_or_else(|| {
            InvalidJob::new(
                "provider",
                format!("no provider named {:?} is configured", job.provider),
            )
        })?;
        let op = provider.operations.get(&job.operation).ok_or_else(|| {
            InvalidJob::new(
                "operation",
                format!(
                    "provider {:?} has no operation {:?}",
                    job.provider, job.operation
                ),
            )
        })?;
        Ok((provider, op))
    }
}
