//! From what users write to what the worker runs on: every default, bound
//! and rule of the config, each error naming its key and the file.
//!
//! Owns the one exhaustive conversion of the raw shapes into [`Config`]. It
//! must never read a file or the environment (the caller passes an env
//! lookup) and never accept a secret as a literal.

use super::raw::*;
use super::urls::{looks_secret, query_password};
use super::*;

pub(super) struct Validator<'a> {
    pub(super) source: &'a str,
}

impl Validator<'_> {
    fn err(&self, key: impl Into<String>, problem: impl fmt::Display) -> ConfigError {
        ConfigError {
            file: self.source.to_owned(),
            key: key.into(),
            problem: problem.to_string(),
        }
    }

    pub(super) fn config(
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

        let broker_urls = self.broker_urls(raw.broker.url, raw.broker.urls, env)?;
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
        let prefetch_budget = raw
            .broker
            .prefetch_budget
            .unwrap_or(DEFAULT_PREFETCH_BUDGET);
        if prefetch_budget == 0 {
            return Err(self.err("broker.prefetch_budget", "must be at least 1"));
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
            linger: Duration::from_millis(raw.worker.linger_ms.unwrap_or(DEFAULT_LINGER_MS)),
        };
        if worker.linger > MAX_LINGER {
            return Err(self.err(
                "worker.linger_ms",
                format!(
                    "must be at most {} (every job at low load waits this long twice)",
                    MAX_LINGER.as_millis()
                ),
            ));
        }
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
        let ingest = match raw.ingest {
            None => None,
            Some(raw) => Some(self.ingest(raw, &providers, worker.max_body_bytes)?),
        };
        Ok(Config {
            source: self.source.to_owned(),
            namespace,
            broker: BrokerConfig {
                tls: self.broker_tls(&broker_urls, raw.broker.tls)?,
                urls: broker_urls,
                connect_order: match raw.broker.connect_order.as_deref() {
                    None | Some("random") => ConnectOrder::Random,
                    Some("listed") => ConnectOrder::Listed,
                    Some(_) => {
                        return Err(
                            self.err("broker.connect_order", "must be \"random\" or \"listed\"")
                        );
                    }
                },
                prefetch,
                prefetch_budget,
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
            ingest,
        })
    }

    fn ingest(
        &self,
        raw: RawIngest,
        providers: &BTreeMap<String, ProviderConfig>,
        job_max_bytes: usize,
    ) -> Result<IngestConfig, ConfigError> {
        let listen = raw.listen.as_deref().unwrap_or(DEFAULT_INGEST_LISTEN);
        let listen = listen.parse().map_err(|e| {
            self.err(
                "ingest.listen",
                format!("{listen:?} is not an address like {DEFAULT_INGEST_LISTEN}: {e}"),
            )
        })?;
        // By default half the worker's limit (at most 1 MiB): the job an
        // event becomes carries its body, and a verified event must not be
        // refused for its size after the sender was told nothing else.
        let max_body_bytes = self.positive(
            raw.max_body_bytes,
            DEFAULT_INGEST_MAX_BODY.min(job_max_bytes / 2).max(1),
            "ingest.max_body_bytes",
        )?;
        if max_body_bytes >= job_max_bytes {
            return Err(self.err(
                "ingest.max_body_bytes",
                format!(
                    "must be below worker.max_body_bytes ({job_max_bytes}): the job an event becomes carries its body"
                ),
            ));
        }
        if raw.sources.is_empty() {
            return Err(self.err(
                "ingest.sources",
                "missing: name at least one source ([ingest.sources.<name>])",
            ));
        }
        let mut sources = BTreeMap::new();
        for (name, s) in raw.sources {
            let key = |k: &str| format!("ingest.sources.{name}.{k}");
            check_name(&name).map_err(|p| {
                self.err(
                    format!("ingest.sources.{name}"),
                    format!("not a source name: {p}"),
                )
            })?;
            let scheme: crate::webhook::Scheme = s
                .scheme
                .parse()
                .map_err(|p: String| self.err(key("scheme"), p))?;
            if s.secrets.is_empty() {
                return Err(self.err(
                    key("secrets"),
                    "missing: at least one { secret_env = \"…\" } or { secret_file = \"…\" }",
                ));
            }
            let mut secrets = Vec::new();
            for (i, r) in s.secrets.into_iter().enumerate() {
                secrets.push(self.secret_ref(r, &key(&format!("secrets[{i}]")))?);
            }
            let tolerance = match (scheme, s.tolerance_secs) {
                (crate::webhook::Scheme::Github, Some(_)) => {
                    return Err(self.err(
                        key("tolerance_secs"),
                        "github signatures carry no timestamp: leave it out",
                    ));
                }
                (_, Some(secs)) if !(1..=MAX_INGEST_TOLERANCE_SECS).contains(&secs) => {
                    return Err(self.err(
                        key("tolerance_secs"),
                        format!("must be between 1 and {MAX_INGEST_TOLERANCE_SECS} (a captured event may be replayed within it)"),
                    ));
                }
                (_, Some(secs)) => Duration::from_secs(secs),
                (_, None) => DEFAULT_INGEST_TOLERANCE,
            };
            match providers.get(&s.provider) {
                None => {
                    return Err(self.err(
                        key("provider"),
                        format!("no provider named {:?} is configured", s.provider),
                    ));
                }
                Some(p) if !p.operations.contains_key(&s.operation) => {
                    return Err(self.err(
                        key("operation"),
                        format!(
                            "provider {:?} has no operation {:?}",
                            s.provider, s.operation
                        ),
                    ));
                }
                Some(_) => {}
            }
            sources.insert(
                name.clone(),
                IngestSource {
                    name,
                    scheme,
                    secrets,
                    tolerance,
                    provider: s.provider,
                    operation: s.operation,
                },
            );
        }
        Ok(IngestConfig {
            listen,
            max_body_bytes,
            sources,
        })
    }

    /// `{ secret_env = "…" }` or `{ secret_file = "…" }`, exactly one.
    fn secret_ref(&self, raw: RawSecretRef, key: &str) -> Result<SecretRef, ConfigError> {
        match (raw.secret_env, raw.secret_file) {
            (Some(e), None) if !e.is_empty() => Ok(SecretRef::Env(e)),
            (None, Some(f)) => Ok(SecretRef::File(f)),
            (Some(_), Some(_)) => Err(self.err(
                format!("{key}.secret_env"),
                "give secret_env or secret_file, not both",
            )),
            _ => Err(self.err(
                format!("{key}.secret_env"),
                "missing: a secret needs secret_env or secret_file",
            )),
        }
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

    fn broker_tls(
        &self,
        urls: &[String],
        raw: Option<RawBrokerTls>,
    ) -> Result<BrokerTls, ConfigError> {
        let Some(raw) = raw else {
            return Ok(BrokerTls::default());
        };
        if !urls.iter().all(|url| url.starts_with("amqps://")) {
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
            return self.env_url(v, key, env_name, schemes);
        }
        match file_value {
            Some(v) => self.file_url(v, key, env_name, schemes),
            None => Ok(default.to_owned()),
        }
    }

    /// The broker's nodes: `COURIER_AMQP_URL` (comma-separated) wins, then
    /// `broker.url` (one node) or `broker.urls` (a cluster's), then our
    /// machines' default. All of one scheme: a plaintext node in a TLS
    /// list would carry the connection in the clear once a TLS node is lost.
    fn broker_urls(
        &self,
        url: Option<String>,
        urls: Option<Vec<String>>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<String>, ConfigError> {
        const SCHEMES: &[&str] = &["amqp", "amqps"];
        let list = if let Some(v) = env(ENV_AMQP_URL) {
            let list = v
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(|u| self.env_url(u.to_owned(), "broker.urls", ENV_AMQP_URL, SCHEMES))
                .collect::<Result<Vec<_>, _>>()?;
            if list.is_empty() {
                return Err(self.err("broker.urls", format!("{ENV_AMQP_URL} holds no URL")));
            }
            list
        } else {
            match (url, urls) {
                (Some(_), Some(_)) => {
                    return Err(self.err(
                        "broker.urls",
                        "set broker.url (one node) or broker.urls (a cluster's nodes), not both",
                    ));
                }
                (Some(url), None) => {
                    vec![self.file_url(url, "broker.url", ENV_AMQP_URL, SCHEMES)?]
                }
                (None, Some(urls)) if urls.is_empty() => {
                    return Err(self.err("broker.urls", "must name at least one node"));
                }
                (None, Some(urls)) => urls
                    .into_iter()
                    .enumerate()
                    .map(|(i, url)| {
                        self.file_url(url, &format!("broker.urls[{i}]"), ENV_AMQP_URL, SCHEMES)
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                (None, None) => vec![DEFAULT_AMQP_URL.to_owned()],
            }
        };
        let tls = list[0].starts_with("amqps://");
        if list.iter().any(|url| url.starts_with("amqps://") != tls) {
            return Err(self.err(
                "broker.urls",
                "mixes amqp:// and amqps:// nodes: a plaintext node would carry the connection in the clear",
            ));
        }
        Ok(list)
    }

    fn env_url(
        &self,
        v: String,
        key: &str,
        env_name: &str,
        schemes: &[&str],
    ) -> Result<String, ConfigError> {
        self.parse_url(&v, key, &format!("{env_name} "), schemes)?;
        Ok(v)
    }

    /// `v` parsed as a URL of one of `schemes`; `source` starts the
    /// complaint ("COURIER_AMQP_URL ", or nothing for the file's key).
    fn parse_url(
        &self,
        v: &str,
        key: &str,
        source: &str,
        schemes: &[&str],
    ) -> Result<url::Url, ConfigError> {
        let parsed =
            url::Url::parse(v).map_err(|e| self.err(key, format!("{source}is not a URL: {e}")))?;
        if !schemes.contains(&parsed.scheme()) {
            return Err(self.err(key, format!("{source}must use one of {schemes:?}")));
        }
        Ok(parsed)
    }

    fn file_url(
        &self,
        v: String,
        key: &str,
        env_name: &str,
        schemes: &[&str],
    ) -> Result<String, ConfigError> {
        let parsed = self.parse_url(&v, key, "", schemes)?;
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
        let signing = p.signing.map(|s| self.signing(name, s)).transpose()?;
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
            signing,
        })
    }

    /// `signing = { scheme = "standard-webhooks", secret_env | secret_file
    /// | secrets = [...] }`: exactly one way to name the keys.
    fn signing(&self, provider: &str, raw: RawSigning) -> Result<SigningConfig, ConfigError> {
        let key = |k: &str| format!("providers.{provider}.signing.{k}");
        let scheme: crate::webhook::Scheme = raw
            .scheme
            .parse()
            .map_err(|p: String| self.err(key("scheme"), p))?;
        if scheme != crate::webhook::Scheme::StandardWebhooks {
            return Err(self.err(
                key("scheme"),
                format!(
                    "only \"standard-webhooks\" signs outgoing calls (\"{}\" is for verifying what comes in)",
                    scheme.as_str()
                ),
            ));
        }
        let secrets = match (raw.secret_env, raw.secret_file, raw.secrets) {
            (env, file, None) if env.is_some() || file.is_some() => {
                vec![self.secret_ref(
                    RawSecretRef {
                        secret_env: env,
                        secret_file: file,
                    },
                    &format!("providers.{provider}.signing"),
                )?]
            }
            (None, None, Some(list)) => {
                if list.is_empty() || list.len() > MAX_SIGNING_SECRETS {
                    return Err(self.err(
                        key("secrets"),
                        format!(
                            "must list 1 to {MAX_SIGNING_SECRETS} {{ secret_env = \"…\" }} or {{ secret_file = \"…\" }}"
                        ),
                    ));
                }
                list.into_iter()
                    .enumerate()
                    .map(|(i, r)| self.secret_ref(r, &key(&format!("secrets[{i}]"))))
                    .collect::<Result<Vec<_>, _>>()?
            }
            (None, None, None) => {
                return Err(self.err(
                    key("secret_env"),
                    "missing: signing needs secret_env, secret_file or secrets",
                ));
            }
            _ => {
                return Err(self.err(
                    key("secrets"),
                    "give one of secret_env, secret_file or secrets",
                ));
            }
        };
        Ok(SigningConfig { scheme, secrets })
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
