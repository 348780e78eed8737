//! The config model: one TOML file, a few environment overrides, validated
//! into runtime types.
//!
//! Owns the raw serde structs (what a user writes), the env overrides, and the
//! exhaustive conversion into [`Config`] (what the worker runs on). Every
//! error names the key and the file. It must never read files or the
//! environment itself (callers pass the text and an env lookup) and must never
//! accept a secret as a literal: secrets are references (`token_env`,
//! `token_file`) resolved at the edge.

use crate::classify::StatusOverrides;
use crate::envelope::{InvalidJob, Job, check_name};
use crate::retry::{MAX_DELAY_SECS, RetryPolicy};
use crate::template::PathTemplate;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

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

// ---- raw: what users write ------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    namespace: Option<String>,
    broker: RawBroker,
    database: RawDatabase,
    worker: RawWorker,
    admin: RawAdmin,
    retention: RawRetention,
    telemetry: RawTelemetry,
    providers: BTreeMap<String, RawProvider>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTelemetry {
    listen: Option<String>,
    poll_interval_ms: Option<u64>,
    log_format: Option<String>,
    otlp_endpoint: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAdmin {
    listen: Option<String>,
    tokens: Vec<RawAdminToken>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdminToken {
    name: String,
    token_env: Option<String>,
    token_file: Option<PathBuf>,
    scopes: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRetention {
    succeeded_attempts_days: Option<u32>,
    interval_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawBroker {
    url: Option<String>,
    prefetch: Option<u16>,
    confirm_timeout_ms: Option<u64>,
    tls: Option<RawBrokerTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawBrokerTls {
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDatabase {
    url: Option<String>,
    max_connections: Option<u32>,
    migrate_on_start: Option<bool>,
    statement_timeout_ms: Option<u64>,
    lock_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawWorker {
    shutdown_grace_secs: Option<u64>,
    outcome_batch_max: Option<usize>,
    max_body_bytes: Option<usize>,
    delivery_limit: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    base_url: String,
    timeout_ms: Option<u64>,
    concurrency: Option<usize>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    auth: Option<RawAuth>,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    retryable_statuses: Vec<u16>,
    #[serde(default)]
    permanent_statuses: Vec<u16>,
    #[serde(default)]
    operations: BTreeMap<String, RawOperation>,
    rate_limit: Option<RawRateLimit>,
    #[serde(default)]
    circuit: RawCircuit,
    owner: Option<String>,
    runbook: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    per_second: f64,
    burst: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCircuit {
    failure_rate: Option<f64>,
    min_calls: Option<u32>,
    window_secs: Option<u64>,
    open_secs: Option<u64>,
    probes: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    scheme: String,
    header: Option<String>,
    token_env: Option<String>,
    token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRetry {
    max_attempts: Option<u32>,
    base_delay_ms: Option<u64>,
    max_delay_secs: Option<u64>,
    jitter: Option<f64>,
    max_retry_after_secs: Option<u64>,
    max_throttled_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOperation {
    method: String,
    path: String,
    rate_limit: Option<RawRateLimit>,
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
    /// May hold a password (from the environment): never print it.
    pub url: String,
    /// Deliveries a provider's consumer may hold unacknowledged.
    pub prefetch: u16,
    /// Longest wait for the broker to confirm a publish.
    pub confirm_timeout: Duration,
    /// Files for `amqps://` (all optional): the broker's certificate is
    /// always verified, against these CAs besides the bundled public roots.
    pub tls: BrokerTls,
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
    /// `url` with every other setting at its default (tools, tests).
    pub fn with_url(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            prefetch: 256,
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
        f.debug_struct("BrokerConfig")
            .field("url", &redact_url(&self.url))
            .field("prefetch", &self.prefetch)
            .field("confirm_timeout", &self.confirm_timeout)
            .field("tls", &self.tls)
            .finish()
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
}

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
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
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

struct Validator<'a> {
    source: &'a str,
}

impl Validator<'_> {
    fn err(&self, key: impl Into<String>, problem: impl fmt::Display) -> ConfigError {
        ConfigError {
            file: self.source.to_owned(),
            key: key.into(),
            problem: problem.to_string(),
        }
    }

    fn config(
        &self,
        raw: RawConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let namespace = match env(ENV_NAMESPACE) {
            Some(ns) => ns,
            None => raw
                .namespace
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
        };
        check_namespace(&namespace).map_err(|p| self.err("namespace", p))?;

        let broker_url = self.url_setting(
            raw.broker.url,
            "broker.url",
            ENV_AMQP_URL,
            DEFAULT_AMQP_URL,
            env,
            &["amqp", "amqps"],
        )?;
        let database_url = self.url_setting(
            raw.database.url,
            "database.url",
            ENV_DATABASE_URL,
            DEFAULT_DATABASE_URL,
            env,
            &["postgres", "postgresql"],
        )?;
        let prefetch = raw.broker.prefetch.unwrap_or(256);
        if prefetch == 0 {
            return Err(self.err("broker.prefetch", "must be at least 1"));
        }
        let max_connections = raw.database.max_connections.unwrap_or(8);
        if max_connections == 0 {
            return Err(self.err("database.max_connections", "must be at least 1"));
        }
        let worker = WorkerConfig {
            shutdown_grace: Duration::from_secs(raw.worker.shutdown_grace_secs.unwrap_or(30)),
            outcome_batch_max: self.positive(
                raw.worker.outcome_batch_max,
                512,
                "worker.outcome_batch_max",
            )?,
            max_body_bytes: self.positive(
                raw.worker.max_body_bytes,
                256 * 1024,
                "worker.max_body_bytes",
            )?,
            delivery_limit: raw.worker.delivery_limit.unwrap_or(10),
        };
        if !(2..=MAX_DELIVERY_LIMIT).contains(&worker.delivery_limit) {
            return Err(self.err(
                "worker.delivery_limit",
                format!("must be between 2 and {MAX_DELIVERY_LIMIT} (the broker's own backstop is higher)"),
            ));
        }
        let admin = self.admin(raw.admin)?;
        let retention = RetentionConfig {
            succeeded_attempts: match raw.retention.succeeded_attempts_days {
                None => None,
                Some(0) => {
                    return Err(self.err(
                        "retention.succeeded_attempts_days",
                        "must be at least 1 (leave it out to keep everything)",
                    ));
                }
                Some(days) => Some(Duration::from_secs(u64::from(days) * 86_400)),
            },
            interval: Duration::from_secs(raw.retention.interval_secs.unwrap_or(3600).max(1)),
        };
        let telemetry = self.telemetry(raw.telemetry, env)?;
        let mut providers = BTreeMap::new();
        for (name, p) in raw.providers {
            let validated = self.provider(&name, p)?;
            providers.insert(name, validated);
        }
        Ok(Config {
            source: self.source.to_owned(),
            namespace,
            broker: BrokerConfig {
                tls: self.broker_tls(&broker_url, raw.broker.tls)?,
                url: broker_url,
                prefetch,
                confirm_timeout: Duration::from_millis(self.positive_u64(
                    raw.broker.confirm_timeout_ms,
                    DEFAULT_CONFIRM_TIMEOUT.as_millis() as u64,
                    "broker.confirm_timeout_ms",
                )?),
            },
            database: DatabaseConfig {
                url: database_url,
                max_connections,
                migrate_on_start: raw.database.migrate_on_start.unwrap_or(true),
                statement_timeout: Duration::from_millis(self.positive_u64(
                    raw.database.statement_timeout_ms,
                    DEFAULT_STATEMENT_TIMEOUT.as_millis() as u64,
                    "database.statement_timeout_ms",
                )?),
                lock_timeout: Duration::from_millis(self.positive_u64(
                    raw.database.lock_timeout_ms,
                    DEFAULT_LOCK_TIMEOUT.as_millis() as u64,
                    "database.lock_timeout_ms",
                )?),
            },
            worker,
            admin,
            retention,
            telemetry,
            providers,
        })
    }

    fn telemetry(
        &self,
        raw: RawTelemetry,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<TelemetryConfig, ConfigError> {
        let listen = raw.listen.as_deref().unwrap_or(DEFAULT_TELEMETRY_LISTEN);
        let listen = listen.parse().map_err(|e| {
            self.err(
                "telemetry.listen",
                format!("{listen:?} is not an address like {DEFAULT_TELEMETRY_LISTEN}: {e}"),
            )
        })?;
        let poll_interval_ms = raw.poll_interval_ms.unwrap_or(15_000);
        if poll_interval_ms < 10 {
            return Err(self.err("telemetry.poll_interval_ms", "must be at least 10"));
        }
        let log_format = match env(ENV_LOG_FORMAT) {
            Some(v) => v.parse().map_err(|p| self.err(ENV_LOG_FORMAT, p))?,
            None => match raw.log_format {
                Some(v) => v.parse().map_err(|p| self.err("telemetry.log_format", p))?,
                None => LogFormat::Json,
            },
        };
        let otlp_endpoint = match env(ENV_OTLP_ENDPOINT).or(raw.otlp_endpoint) {
            None => None,
            Some(url) if url.is_empty() => None,
            Some(url) => match url::Url::parse(&url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.password().is_none() => {
                    Some(url.trim_end_matches('/').to_owned())
                }
                _ => {
                    return Err(self.err(
                        "telemetry.otlp_endpoint",
                        format!("{url:?} is not an http(s) URL without credentials, like http://127.0.0.1:4318"),
                    ));
                }
            },
        };
        Ok(TelemetryConfig {
            listen,
            poll_interval: Duration::from_millis(poll_interval_ms),
            log_format,
            otlp_endpoint,
        })
    }

    fn admin(&self, raw: RawAdmin) -> Result<AdminConfig, ConfigError> {
        let listen = raw.listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN);
        let listen = listen.parse().map_err(|e| {
            self.err(
                "admin.listen",
                format!("{listen:?} is not an address like 127.0.0.1:8081: {e}"),
            )
        })?;
        let mut tokens = Vec::new();
        for (i, t) in raw.tokens.into_iter().enumerate() {
            let key = |k: &str| format!("admin.tokens[{i}].{k}");
            if t.name.is_empty() {
                return Err(self.err(
                    key("name"),
                    "must not be empty (it is recorded as the actor)",
                ));
            }
            let secret = match (t.token_env, t.token_file) {
                (Some(e), None) if !e.is_empty() => SecretRef::Env(e),
                (None, Some(f)) => SecretRef::File(f),
                (Some(_), Some(_)) => {
                    return Err(
                        self.err(key("token_env"), "give token_env or token_file, not both")
                    );
                }
                _ => {
                    return Err(self.err(
                        key("token_env"),
                        "missing: a token needs token_env or token_file",
                    ));
                }
            };
            let mut scopes = Vec::new();
            for s in &t.scopes {
                scopes.push(match s.as_str() {
                    "read" => Scope::Read,
                    "requeue" => Scope::Requeue,
                    "purge" => Scope::Purge,
                    "pause" => Scope::Pause,
                    other => {
                        return Err(self.err(
                            key("scopes"),
                            format!("{other:?} is not one of read, requeue, purge, pause"),
                        ));
                    }
                });
            }
            tokens.push(AdminToken {
                name: t.name,
                secret,
                scopes,
            });
        }
        Ok(AdminConfig { listen, tokens })
    }

    fn broker_tls(&self, url: &str, raw: Option<RawBrokerTls>) -> Result<BrokerTls, ConfigError> {
        let Some(raw) = raw else {
            return Ok(BrokerTls::default());
        };
        if !url.starts_with("amqps://") {
            return Err(self.err(
                "broker.tls",
                "only applies to an amqps:// broker.url (this one is not TLS)",
            ));
        }
        match (&raw.cert_file, &raw.key_file) {
            (Some(_), None) => {
                return Err(self.err(
                    "broker.tls.key_file",
                    "missing: cert_file needs its key_file",
                ));
            }
            (None, Some(_)) => {
                return Err(self.err(
                    "broker.tls.cert_file",
                    "missing: key_file needs its cert_file",
                ));
            }
            _ => {}
        }
        Ok(BrokerTls {
            ca_file: raw.ca_file,
            cert_file: raw.cert_file,
            key_file: raw.key_file,
        })
    }

    fn positive_u64(&self, v: Option<u64>, default: u64, key: &str) -> Result<u64, ConfigError> {
        match v.unwrap_or(default) {
            0 => Err(self.err(key, "must be at least 1")),
            n => Ok(n),
        }
    }

    fn positive(&self, v: Option<usize>, default: usize, key: &str) -> Result<usize, ConfigError> {
        match v.unwrap_or(default) {
            0 => Err(self.err(key, "must be at least 1")),
            n => Ok(n),
        }
    }

    /// A connection URL: env wins, then the file, then our machines' default.
    /// A password written into the file is refused: it belongs in the env.
    fn url_setting(
        &self,
        file_value: Option<String>,
        key: &str,
        env_name: &str,
        default: &str,
        env: &dyn Fn(&str) -> Option<String>,
        schemes: &[&str],
    ) -> Result<String, ConfigError> {
        if let Some(v) = env(env_name) {
            let parsed = url::Url::parse(&v)
                .map_err(|e| self.err(key, format!("{env_name} is not a URL: {e}")))?;
            if !schemes.contains(&parsed.scheme()) {
                return Err(self.err(key, format!("{env_name} must use one of {schemes:?}")));
            }
            return Ok(v);
        }
        let Some(v) = file_value else {
            return Ok(default.to_owned());
        };
        let parsed = url::Url::parse(&v).map_err(|e| self.err(key, format!("not a URL: {e}")))?;
        if !schemes.contains(&parsed.scheme()) {
            return Err(self.err(key, format!("must use one of {schemes:?}")));
        }
        if parsed.password().is_some() || query_password(&parsed).is_some() {
            return Err(self.err(
                key,
                format!("contains a password; set the whole URL in {env_name} instead"),
            ));
        }
        Ok(v)
    }

    fn provider(&self, name: &str, p: RawProvider) -> Result<ProviderConfig, ConfigError> {
        let key = |k: &str| format!("providers.{name}.{k}");
        check_name(name).map_err(|problem| self.err(format!("providers.{name}"), problem))?;
        let base = url::Url::parse(&p.base_url)
            .map_err(|e| self.err(key("base_url"), format!("not a URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(self.err(key("base_url"), "must be an http:// or https:// URL"));
        }
        if base.password().is_some() || !base.username().is_empty() {
            return Err(self.err(
                key("base_url"),
                "must not contain credentials; use [auth] with token_env or token_file",
            ));
        }
        if base.query().is_some() {
            return Err(self.err(key("base_url"), "must not contain a query string"));
        }
        let timeout_ms = p.timeout_ms.unwrap_or(10_000);
        if timeout_ms == 0 {
            return Err(self.err(key("timeout_ms"), "must be at least 1"));
        }
        let concurrency = self.positive(p.concurrency, 64, &key("concurrency"))?;
        let mut headers = Vec::new();
        for (h, v) in p.headers {
            if looks_secret(&h) {
                return Err(self.err(
                    key(&format!("headers.{h}")),
                    "looks like a credential; secrets never go in config literals: use [auth] with token_env or token_file",
                ));
            }
            if !h
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                || h.is_empty()
            {
                return Err(self.err(key(&format!("headers.{h}")), "not a valid header name"));
            }
            headers.push((h, v));
        }
        let auth = p.auth.map(|a| self.auth(name, a)).transpose()?;
        let retry = self.retry(name, p.retry)?;
        for s in p.retryable_statuses.iter().chain(&p.permanent_statuses) {
            if !(100..=599).contains(s) {
                return Err(self.err(
                    key("retryable_statuses"),
                    format!("{s} is not an HTTP status"),
                ));
            }
        }
        if let Some(both) = p
            .retryable_statuses
            .iter()
            .find(|s| p.permanent_statuses.contains(s))
        {
            return Err(self.err(
                key("permanent_statuses"),
                format!("{both} is also listed in retryable_statuses"),
            ));
        }
        if p.operations.is_empty() {
            return Err(self.err(key("operations"), "a provider needs at least one operation"));
        }
        let provider_rate_limit = p
            .rate_limit
            .map(|r| self.rate_limit(&key("rate_limit"), r))
            .transpose()?;
        let circuit = self.circuit(name, p.circuit)?;
        let mut operations = BTreeMap::new();
        for (op_name, op) in p.operations {
            let op_key = |k: &str| key(&format!("operations.{op_name}.{k}"));
            check_name(&op_name)
                .map_err(|problem| self.err(key(&format!("operations.{op_name}")), problem))?;
            let method = match op.method.to_ascii_uppercase().as_str() {
                "GET" => HttpMethod::Get,
                "POST" => HttpMethod::Post,
                "PUT" => HttpMethod::Put,
                "PATCH" => HttpMethod::Patch,
                "DELETE" => HttpMethod::Delete,
                other => {
                    return Err(self.err(
                        op_key("method"),
                        format!("{other:?} is not one of GET, POST, PUT, PATCH, DELETE"),
                    ));
                }
            };
            let path = PathTemplate::parse(&op.path).map_err(|p| self.err(op_key("path"), p))?;
            let rate_limit = op
                .rate_limit
                .map(|r| self.rate_limit(&op_key("rate_limit"), r))
                .transpose()?;
            if let (Some(op_limit), Some(provider_limit)) = (&rate_limit, &provider_rate_limit)
                && op_limit.per_second > provider_limit.per_second
            {
                return Err(self.err(
                    op_key("rate_limit.per_second"),
                    format!(
                        "{} is above the provider's own limit ({}): an operation's limit is inside the provider's",
                        op_limit.per_second, provider_limit.per_second
                    ),
                ));
            }
            operations.insert(
                op_name,
                Operation {
                    method,
                    path,
                    rate_limit,
                },
            );
        }
        Ok(ProviderConfig {
            name: name.to_owned(),
            base_url: p.base_url.trim_end_matches('/').to_owned(),
            timeout: Duration::from_millis(timeout_ms),
            concurrency,
            headers,
            auth,
            retry,
            statuses: StatusOverrides {
                retryable: p.retryable_statuses.into_iter().collect(),
                permanent: p.permanent_statuses.into_iter().collect(),
            },
            operations,
            rate_limit: provider_rate_limit,
            circuit,
            owner: self.label(p.owner, &key("owner"))?,
            runbook: match p.runbook {
                Some(url) => {
                    let parsed = url::Url::parse(&url)
                        .map_err(|e| self.err(key("runbook"), format!("not a URL: {e}")))?;
                    if !matches!(parsed.scheme(), "http" | "https") {
                        return Err(self.err(key("runbook"), "must be an http:// or https:// URL"));
                    }
                    Some(self.label(Some(url), &key("runbook"))?.unwrap_or_default())
                }
                None => None,
            },
        })
    }

    /// Text that goes into metric labels and tables: present, short and
    /// printable.
    fn label(&self, text: Option<String>, key: &str) -> Result<Option<String>, ConfigError> {
        let Some(text) = text else {
            return Ok(None);
        };
        if text.is_empty() || text.len() > 256 || text.chars().any(char::is_control) {
            return Err(self.err(
                key.to_owned(),
                "must be 1 to 256 characters without control characters",
            ));
        }
        Ok(Some(text))
    }

    fn rate_limit(&self, key: &str, raw: RawRateLimit) -> Result<RateLimit, ConfigError> {
        if !(raw.per_second.is_finite() && raw.per_second > 0.0 && raw.per_second <= 1_000_000.0) {
            return Err(self.err(
                format!("{key}.per_second"),
                "must be a number of calls per second above 0 (at most 1000000)",
            ));
        }
        let burst = raw.burst.unwrap_or(1);
        if !(1..=100_000).contains(&burst) {
            return Err(self.err(format!("{key}.burst"), "must be between 1 and 100000"));
        }
        Ok(RateLimit {
            per_second: raw.per_second,
            burst,
        })
    }

    fn circuit(&self, provider: &str, raw: RawCircuit) -> Result<CircuitPolicy, ConfigError> {
        let key = |k: &str| format!("providers.{provider}.circuit.{k}");
        let d = CircuitPolicy::default();
        let policy = CircuitPolicy {
            failure_rate: raw.failure_rate.unwrap_or(d.failure_rate),
            min_calls: raw.min_calls.unwrap_or(d.min_calls),
            window: raw.window_secs.map_or(d.window, Duration::from_secs),
            open_for: raw.open_secs.map_or(d.open_for, Duration::from_secs),
            probes: raw.probes.unwrap_or(d.probes),
        };
        if !(policy.failure_rate > 0.0 && policy.failure_rate <= 1.0) {
            return Err(self.err(key("failure_rate"), "must be above 0 and at most 1"));
        }
        if policy.min_calls == 0 {
            return Err(self.err(key("min_calls"), "must be at least 1"));
        }
        if policy.window.is_zero() || policy.window.as_secs() > 86_400 {
            return Err(self.err(key("window_secs"), "must be between 1 and 86400"));
        }
        if policy.open_for.is_zero() || policy.open_for.as_secs() > 86_400 {
            return Err(self.err(key("open_secs"), "must be between 1 and 86400"));
        }
        if !(1..=1000).contains(&policy.probes) {
            return Err(self.err(key("probes"), "must be between 1 and 1000"));
        }
        Ok(policy)
    }

    fn auth(&self, provider: &str, a: RawAuth) -> Result<AuthConfig, ConfigError> {
        let key = |k: &str| format!("providers.{provider}.auth.{k}");
        let secret = match (a.token_env, a.token_file) {
            (Some(e), None) if !e.is_empty() => SecretRef::Env(e),
            (None, Some(f)) => SecretRef::File(f),
            (Some(_), Some(_)) => {
                return Err(self.err(key("token_env"), "give token_env or token_file, not both"));
            }
            _ => {
                return Err(self.err(
                    key("token_env"),
                    "missing: auth needs token_env or token_file",
                ));
            }
        };
        let scheme = match (a.scheme.as_str(), a.header) {
            ("bearer", None) => AuthScheme::Bearer,
            ("bearer", Some(_)) => {
                return Err(self.err(key("header"), "only for scheme = \"header\""));
            }
            ("header", Some(h)) if !h.is_empty() => AuthScheme::Header(h),
            ("header", _) => {
                return Err(self.err(key("header"), "scheme = \"header\" needs the header name"));
            }
            (other, _) => {
                return Err(self.err(
                    key("scheme"),
                    format!("{other:?} is not \"bearer\" or \"header\""),
                ));
            }
        };
        Ok(AuthConfig { scheme, secret })
    }

    fn retry(&self, provider: &str, r: RawRetry) -> Result<RetryPolicy, ConfigError> {
        let key = |k: &str| format!("providers.{provider}.retry.{k}");
        let d = RetryPolicy::default();
        let policy = RetryPolicy {
            max_attempts: r.max_attempts.unwrap_or(d.max_attempts),
            base_delay: r
                .base_delay_ms
                .map(Duration::from_millis)
                .unwrap_or(d.base_delay),
            max_delay: r
                .max_delay_secs
                .map(Duration::from_secs)
                .unwrap_or(d.max_delay),
            jitter: r.jitter.unwrap_or(d.jitter),
            max_retry_after: r
                .max_retry_after_secs
                .map(Duration::from_secs)
                .unwrap_or(d.max_retry_after),
            max_throttled: r
                .max_throttled_secs
                .map(Duration::from_secs)
                .unwrap_or(d.max_throttled),
        };
        if policy.max_attempts == 0 {
            return Err(self.err(key("max_attempts"), "must be at least 1"));
        }
        if policy.base_delay.is_zero() {
            return Err(self.err(key("base_delay_ms"), "must be at least 1"));
        }
        if policy.max_delay < policy.base_delay {
            return Err(self.err(key("max_delay_secs"), "must not be below base_delay_ms"));
        }
        if policy.max_delay.as_secs() > MAX_DELAY_SECS {
            return Err(self.err(
                key("max_delay_secs"),
                format!("must be at most {MAX_DELAY_SECS}"),
            ));
        }
        if policy.max_retry_after.as_secs() > MAX_DELAY_SECS {
            return Err(self.err(
                key("max_retry_after_secs"),
                format!("must be at most {MAX_DELAY_SECS}"),
            ));
        }
        if !(0.0..=1.0).contains(&policy.jitter) {
            return Err(self.err(key("jitter"), "must be between 0.0 and 1.0"));
        }
        if policy.max_throttled.as_secs() > 30 * 86_400 {
            return Err(self.err(
                key("max_throttled_secs"),
                "must be at most 2592000 (30 days)",
            ));
        }
        Ok(policy)
    }
}

/// A namespace becomes a queue prefix and a PostgreSQL schema name.
pub fn check_namespace(ns: &str) -> Result<(), String> {
    let ok = ns.len() <= 40
        && ns.starts_with(|c: char| c.is_ascii_lowercase())
        && ns
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{ns:?} must be 1-40 characters of a-z, 0-9 and _, starting with a letter"
        ))
    }
}

fn looks_secret(header: &str) -> bool {
    let h = header.to_ascii_lowercase();
    [
        "authorization",
        "cookie",
        "token",
        "secret",
        "password",
        "key",
        "signature",
    ]
    .iter()
    .any(|s| h.contains(s))
}

/// The password a connection URL carries, decoded, if it has one: in the
/// user info (`u:pw@`) or as a `password=` query parameter (which libpq and
/// sqlx accept). Used to keep it out of logs and messages.
pub fn url_password(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    if let Some(p) = query_password(&u) {
        return Some(p);
    }
    let encoded = u.password()?;
    Some(
        url::form_urlencoded::parse(format!("p={}", encoded.replace('+', "%2B")).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default(),
    )
}

fn query_password(u: &url::Url) -> Option<String> {
    u.query_pairs()
        .find(|(k, _)| k == "password")
        .map(|(_, v)| v.into_owned())
}

/// A URL with its password replaced, fit for logs and messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            if query_password(&u).is_some() {
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if k == "password" {
                            "***".to_owned()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        Err(_) => "<unparseable url>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
namespace = "prod"
[broker]
prefetch = 100
[providers.stripe]
base_url = "https://api.stripe.test/"
timeout_ms = 5000
headers = { "Stripe-Version" = "2024-01-01" }
auth = { scheme = "bearer", token_env = "STRIPE_TOKEN" }
retryable_statuses = [409]
[providers.stripe.retry]
max_attempts = 4
base_delay_ms = 250
[providers.stripe.operations.create_charge]
method = "post"
path = "/v1/customers/{customer}/charges"
"#;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, "courier.toml", &no_env)
    }

    fn err_key(text: &str) -> String {
        let e = load(text).expect_err("must be refused");
        assert!(e.to_string().starts_with("courier.toml"), "{e}");
        e.key
    }

    #[test]
    fn a_provider_names_its_owner_and_runbook() {
        let with = |extra: &str| {
            format!(
                "[providers.crm]\nbase_url = \"https://crm.test\"\n{extra}\n[providers.crm.operations.sync]\nmethod = \"POST\"\npath = \"/sync\"\n"
            )
        };
        let c = load(&with(
            "owner = \"sales-platform\"\nrunbook = \"https://wiki.test/crm\"",
        ))
        .expect("valid");
        assert_eq!(c.providers["crm"].owner.as_deref(), Some("sales-platform"));
        assert_eq!(
            c.providers["crm"].runbook.as_deref(),
            Some("https://wiki.test/crm")
        );
        let bare = load(&with("")).expect("valid");
        assert_eq!(
            (
                bare.providers["crm"].owner.clone(),
                bare.providers["crm"].runbook.clone()
            ),
            (None, None)
        );
        assert_eq!(
            err_key(&with("runbook = \"ftp://wiki.test\"")),
            "providers.crm.runbook"
        );
        assert_eq!(
            err_key(&with("runbook = \"see the wiki\"")),
            "providers.crm.runbook"
        );
        assert_eq!(err_key(&with("owner = \"\"")), "providers.crm.owner");
        assert_eq!(err_key(&with("owner = \"a\\nb\"")), "providers.crm.owner");
    }

    #[test]
    fn loads_a_good_file() {
        let c = load(GOOD).expect("valid");
        assert_eq!(c.namespace, "prod");
        assert_eq!(c.broker.url, DEFAULT_AMQP_URL);
        let p = &c.providers["stripe"];
        assert_eq!(p.base_url, "https://api.stripe.test");
        assert_eq!(p.retry.max_attempts, 4);
        assert_eq!(p.operations["create_charge"].method, HttpMethod::Post);
        assert_eq!(
            p.auth.as_ref().map(|a| &a.secret),
            Some(&SecretRef::Env("STRIPE_TOKEN".into()))
        );
        assert!(p.statuses.retryable.contains(&409));
    }

    #[test]
    fn env_overrides_the_file() {
        let env = |k: &str| match k {
            ENV_NAMESPACE => Some("staging".to_owned()),
            ENV_DATABASE_URL => Some("postgres://u:pw@db:5432/x".to_owned()),
            _ => None,
        };
        let c = Config::from_toml(GOOD, "f.toml", &env).expect("valid");
        assert_eq!(c.namespace, "staging");
        assert_eq!(c.database.url, "postgres://u:pw@db:5432/x");
        assert!(
            !format!("{:?}", c.database).contains("pw"),
            "Debug must redact the password"
        );
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(err_key("namespace = \"Bad-NS\""), "namespace");
        assert_eq!(
            err_key(&GOOD.replace("max_attempts = 4", "max_attempts = 0")),
            "providers.stripe.retry.max_attempts"
        );
        assert_eq!(
            err_key(&GOOD.replace("method = \"post\"", "method = \"FETCH\"")),
            "providers.stripe.operations.create_charge.method"
        );
        assert_eq!(
            err_key(&GOOD.replace("{customer}", "{customer")),
            "providers.stripe.operations.create_charge.path"
        );
        assert_eq!(
            err_key(&GOOD.replace("https://api.stripe.test/", "ftp://x")),
            "providers.stripe.base_url"
        );
        assert_eq!(
            err_key(&GOOD.replace("token_env = \"STRIPE_TOKEN\"", "")),
            "providers.stripe.auth.token_env"
        );
        assert_eq!(
            err_key(&GOOD.replace("timeout_ms = 5000", "timeout_secs = 5")),
            "timeout_secs"
        );
    }

    #[test]
    fn protection_keys_default_and_errors_name_them() {
        let c = load(GOOD).expect("valid");
        let stripe = &c.providers["stripe"];
        assert_eq!(stripe.rate_limit, None, "no limit unless configured");
        assert_eq!(stripe.circuit, CircuitPolicy::default());
        assert_eq!(
            (
                stripe.circuit.failure_rate,
                stripe.circuit.min_calls,
                stripe.circuit.probes
            ),
            (0.5, 20, 3)
        );
        let limited = format!(
            "{GOOD}\n[providers.stripe.rate_limit]\nper_second = 50.0\nburst = 10\n\
             [providers.stripe.operations.create_charge.rate_limit]\nper_second = 5.0\n\
             [providers.stripe.circuit]\nopen_secs = 10\n"
        );
        let c = load(&limited).expect("valid");
        let stripe = &c.providers["stripe"];
        assert_eq!(
            stripe.rate_limit,
            Some(RateLimit {
                per_second: 50.0,
                burst: 10
            })
        );
        assert_eq!(
            stripe.operations["create_charge"].rate_limit,
            Some(RateLimit {
                per_second: 5.0,
                burst: 1
            })
        );
        assert_eq!(stripe.circuit.open_for, Duration::from_secs(10));
        for (good, bad, key) in [
            (
                "per_second = 50.0",
                "per_second = 0.0",
                "providers.stripe.rate_limit.per_second",
            ),
            (
                "burst = 10",
                "burst = 0",
                "providers.stripe.rate_limit.burst",
            ),
            (
                "open_secs = 10",
                "open_secs = 0",
                "providers.stripe.circuit.open_secs",
            ),
        ] {
            assert_eq!(err_key(&limited.replacen(good, bad, 1)), key, "{bad}");
        }
        let rate = limited.replace("open_secs = 10", "failure_rate = 1.5");
        assert_eq!(err_key(&rate), "providers.stripe.circuit.failure_rate");
        let unknown = limited.replace("open_secs = 10", "open_for = 10");
        assert_eq!(err_key(&unknown), "open_for");
    }

    #[test]
    fn url_passwords_are_decoded() {
        assert_eq!(
            url_password("postgres://u:p%40ss%2Fw0rd@h/db").as_deref(),
            Some("p@ss/w0rd")
        );
        assert_eq!(url_password("amqp://guest@h:5672/%2f"), None);
        assert_eq!(
            url_password("postgres://u@h/db?sslmode=require&password=s%C3%A9cr%20t").as_deref(),
            Some("sécr t")
        );
    }

    #[test]
    fn a_password_in_the_query_is_refused_in_the_file_and_redacted() {
        let e = load("[database]\nurl = \"postgres://u@db.internal/x?password=hunter22\"\n")
            .expect_err("refused");
        assert_eq!(e.key, "database.url");
        assert!(!e.to_string().contains("hunter22"), "{e}");
        let shown = redact_url("postgres://u@db.internal/x?password=hunter22&sslmode=verify-full");
        assert!(
            !shown.contains("hunter22") && shown.contains("sslmode=verify-full"),
            "{shown}"
        );
        let env = |k: &str| {
            (k == ENV_DATABASE_URL).then(|| "postgres://u@db/x?password=hunter22".to_owned())
        };
        let c = Config::from_toml("", "f.toml", &env).expect("the environment may carry it");
        assert!(!format!("{:?}", c.database).contains("hunter22"));
    }

    #[test]
    fn broker_tls_needs_amqps_and_pairs_its_files() {
        let amqps = |tls: &str| {
            let env = |k: &str| {
                (k == ENV_AMQP_URL).then(|| "amqps://u:p@mq.internal:5671/%2f".to_owned())
            };
            Config::from_toml(&format!("[broker.tls]\n{tls}\n"), "f.toml", &env)
        };
        let c = amqps("ca_file = \"/etc/ca.pem\"").expect("valid");
        assert_eq!(
            c.broker.tls.ca_file.as_deref(),
            Some(std::path::Path::new("/etc/ca.pem"))
        );
        assert_eq!(
            amqps("cert_file = \"/c.pem\"").expect_err("no key").key,
            "broker.tls.key_file"
        );
        assert_eq!(
            amqps("key_file = \"/k.pem\"").expect_err("no cert").key,
            "broker.tls.cert_file"
        );
        assert_eq!(
            err_key("[broker.tls]\nca_file = \"/etc/ca.pem\"\n"),
            "broker.tls"
        );
    }

    #[test]
    fn telemetry_defaults_and_overrides() {
        let c = load(GOOD).expect("valid");
        assert_eq!(c.telemetry.listen.to_string(), DEFAULT_TELEMETRY_LISTEN);
        assert_eq!(c.telemetry.log_format, LogFormat::Json);
        assert_eq!(c.telemetry.poll_interval, Duration::from_secs(15));

        let pretty =
            format!("{GOOD}\n[telemetry]\nlog_format = \"pretty\"\npoll_interval_ms = 250\n");
        let c = load(&pretty).expect("valid");
        assert_eq!(c.telemetry.log_format, LogFormat::Pretty);
        assert_eq!(c.telemetry.poll_interval, Duration::from_millis(250));
        let env = |k: &str| (k == ENV_LOG_FORMAT).then(|| "json".to_owned());
        let c = Config::from_toml(&pretty, "f.toml", &env).expect("valid");
        assert_eq!(c.telemetry.log_format, LogFormat::Json, "the env wins");

        let bad = format!("{GOOD}\n[telemetry]\nlog_format = \"xml\"\n");
        assert_eq!(err_key(&bad), "telemetry.log_format");
        let bad = format!("{GOOD}\n[telemetry]\nlisten = \"nowhere\"\n");
        assert_eq!(err_key(&bad), "telemetry.listen");
        assert_eq!(load(GOOD).expect("valid").telemetry.otlp_endpoint, None);
        let otlp = format!("{GOOD}\n[telemetry]\notlp_endpoint = \"http://otel:4318/\"\n");
        assert_eq!(
            load(&otlp)
                .expect("valid")
                .telemetry
                .otlp_endpoint
                .as_deref(),
            Some("http://otel:4318")
        );
        let bad = format!("{GOOD}\n[telemetry]\notlp_endpoint = \"grpc://otel\"\n");
        assert_eq!(err_key(&bad), "telemetry.otlp_endpoint");
    }

    #[test]
    fn secrets_are_refused_as_literals() {
        let with_header = GOOD.replace("\"Stripe-Version\"", "\"X-Api-Key\"");
        assert_eq!(err_key(&with_header), "providers.stripe.headers.X-Api-Key");
        let with_pw = format!("[broker]\nurl = \"amqp://u:secret@h:5672/%2f\"\n{}", "");
        let e = load(&with_pw).expect_err("password refused");
        assert_eq!(e.key, "broker.url");
        assert!(
            !e.to_string().contains("secret"),
            "the error must not echo the password: {e}"
        );
        assert_eq!(
            err_key(&GOOD.replace("https://api.stripe.test/", "https://u:p@api.stripe.test/")),
            "providers.stripe.base_url"
        );
    }

    #[test]
    fn parse_errors_carry_the_line() {
        let e = load("namespace = \"a\"\n[broker]\nprefetch = \"many\"\n").expect_err("type error");
        assert!(e.file.starts_with("courier.toml:"), "{e}");
    }

    #[test]
    fn operation_lookup_names_the_field() {
        let c = load(GOOD).expect("valid");
        let mut job = Job {
            id: uuid::Uuid::now_v7(),
            provider: "stripe".into(),
            operation: "refund".into(),
            idempotency_key: "k".into(),
            payload: serde_json::Map::new(),
            created_at: chrono::Utc::now(),
            fingerprint: [0; 32],
        };
        assert_eq!(
            c.operation(&job).expect_err("unknown op").field,
            "operation"
        );
        job.provider = "nope".into();
        assert_eq!(
            c.operation(&job).expect_err("unknown provider").field,
            "provider"
        );
    }
}

#[cfg(test)]
mod example_file {
    #[test]
    fn the_shipped_example_config_is_valid() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/courier.example.toml");
        let text = std::fs::read_to_string(&path).expect("read the example config");
        let config = super::Config::from_toml(&text, "deploy/courier.example.toml", &|_| None)
            .expect("valid");
        assert_eq!(config.providers.len(), 2);
    }
}
