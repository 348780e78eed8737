//! One provider's HTTP client.
//!
//! Owns building and sending a provider request and reporting the result.
//! It must never retry, sleep between attempts or judge the result: that is
//! courier-core's classification, applied by the worker.

use chrono::{DateTime, Utc};
use courier_core::config::{AuthScheme, Operation, ProviderConfig};
use courier_core::retry::parse_retry_after;
use courier_core::signals::{self, Hints, Pause};
use courier_core::{CallResult, Job};
use courier_telemetry::secret::{Rules, SecretError, SecretSource};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::error::Error as _;
use std::time::{Duration, Instant};

/// Longest error text kept for an attempt.
pub const MAX_ERROR_LEN: usize = 300;
/// Most response-body bytes read (and discarded) to keep a connection reusable.
const MAX_DRAIN_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("providers.{provider}.auth: {source}")]
    Secret {
        provider: String,
        #[source]
        source: SecretError,
    },
    #[error("providers.{provider}.headers.{header}: not a valid header")]
    Header { provider: String, header: String },
    #[error("providers.{provider}: cannot build the HTTP client: {source}")]
    Client {
        provider: String,
        #[source]
        source: reqwest::Error,
    },
}

/// What one call did.
#[derive(Debug, Clone)]
pub struct CallReport {
    pub result: CallResult,
    pub started_at: DateTime<Utc>,
    pub duration: Duration,
    /// Short, secret-free description of a failure; `None` on 2xx.
    pub error: Option<String>,
    /// A pause the provider asked for (`Retry-After`, `RateLimit` fields),
    /// for every worker.
    pub pause: Option<Pause>,
}

#[derive(Debug, Clone)]
pub struct ProviderClient {
    http: reqwest::Client,
    base_url: String,
    auth: Option<Auth>,
    /// The longest pause a provider may ask for.
    max_pause: Duration,
}

/// The auth header, built from the secret's current value on each call (a
/// `token_file` rotates without a restart).
#[derive(Debug, Clone)]
struct Auth {
    header: HeaderName,
    bearer: bool,
    secret: SecretSource,
}

impl Auth {
    fn value(&self) -> Option<HeaderValue> {
        let secret = self.secret.current()?;
        let mut value = header_value(self.bearer, secret.expose()).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

fn header_value(
    bearer: bool,
    secret: &str,
) -> Result<HeaderValue, reqwest::header::InvalidHeaderValue> {
    if bearer {
        HeaderValue::from_str(&format!("Bearer {secret}"))
    } else {
        HeaderValue::from_str(secret)
    }
}

/// A provider token must make a header value (no line breaks): a rotated
/// file that does not is refused and the last good token kept.
const TOKEN_RULES: Rules = Rules {
    check: |v| {
        header_value(true, v)
            .map(|_| ())
            .map_err(|_| "not a valid HTTP header value".to_owned())
    },
    revoke_when_gone: false,
};

impl Auth {}

impl ProviderClient {
    pub fn new(config: &ProviderConfig) -> Result<Self, ProviderError> {
        crate::install_crypto();
        let provider = config.name.clone();
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let bad = || ProviderError::Header {
                provider: provider.clone(),
                header: name.clone(),
            };
            headers.insert(
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?,
                HeaderValue::from_str(value).map_err(|_| bad())?,
            );
        }
        let auth = match &config.auth {
            None => None,
            Some(auth) => {
                let secret = SecretSource::open(&auth.secret, TOKEN_RULES).map_err(|source| {
                    ProviderError::Secret {
                        provider: provider.clone(),
                        source,
                    }
                })?;
                let (header, bearer) = match &auth.scheme {
                    AuthScheme::Bearer => (reqwest::header::AUTHORIZATION, true),
                    AuthScheme::Header(h) => (
                        HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                            ProviderError::Header {
                                provider: provider.clone(),
                                header: h.clone(),
                            }
                        })?,
                        false,
                    ),
                };
                let auth = Auth {
                    header,
                    bearer,
                    secret,
                };
                if auth.value().is_none() {
                    return Err(ProviderError::Header {
                        provider: provider.clone(),
                        header: auth.header.to_string(),
                    });
                }
                Some(auth)
            }
        };
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(config.concurrency)
            .redirect(reqwest::redirect::Policy::none())
            // HTTP(S)_PROXY from the environment would send provider tokens
            // to a proxy nobody configured for Courier.
            .no_proxy()
            .tcp_nodelay(true)
            .user_agent(concat!("courier/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| ProviderError::Client { provider, source })?;
        Ok(Self {
            http,
            base_url: config.base_url.clone(),
            auth,
            max_pause: config.retry.max_retry_after,
        })
    }

    /// Sends `job` as `operation`, to `path` (already rendered from the
    /// payload).
    pub async fn call(
        &self,
        job: &Job,
        operation: &Operation,
        path: &str,
        traceparent: Option<&str>,
    ) -> CallReport {
        let started_at = Utc::now();
        let clock = Instant::now();
        let method = reqwest::Method::from_bytes(operation.method.as_str().as_bytes())
            .unwrap_or(reqwest::Method::POST);
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url))
            .header("Idempotency-Key", &job.idempotency_key);
        if let Some(tp) = traceparent {
            request = request.header("traceparent", tp);
        }
        if let Some(auth) = &self.auth {
            // Checked at start; a rotated value that is no header value is
            // sent as nothing, and the provider's 401 says so.
            if let Some(value) = auth.value() {
                request = request.header(auth.header.clone(), value);
            }
        }
        if operation.method.sends_body() {
            request = request.json(&job.payload);
        }
        let mut pause = None;
        let (result, error) = match request.send().await {
            Ok(mut response) => {
                let status = response.status();
                let header = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(|v| v.chars().take(256).collect::<String>())
                };
                let hints = Hints {
                    retry_after: header("retry-after"),
                    ratelimit: header("ratelimit"),
                    ratelimit_remaining: header("ratelimit-remaining"),
                    ratelimit_reset: header("ratelimit-reset"),
                    x_ratelimit_remaining: header("x-ratelimit-remaining"),
                    x_ratelimit_reset: header("x-ratelimit-reset"),
                };
                let now = Utc::now();
                pause = signals::pause(status.as_u16(), &hints, now, self.max_pause);
                let retry_after = hints
                    .retry_after
                    .as_deref()
                    .and_then(|v| parse_retry_after(v, now));
                let mut drained = 0;
                while drained < MAX_DRAIN_BYTES {
                    match response.chunk().await {
                        Ok(Some(chunk)) => drained += chunk.len(),
                        Ok(None) | Err(_) => break,
                    }
                }
                let error = (!status.is_success()).then(|| format!("HTTP {status}"));
                (
                    CallResult::Response {
                        status: status.as_u16(),
                        retry_after,
                    },
                    error,
                )
            }
            Err(e) => {
                let result = if e.is_timeout() {
                    CallResult::Timeout
                } else if e.is_connect() {
                    CallResult::Connect
                } else {
                    CallResult::Transport
                };
                (result, Some(describe(e)))
            }
        };
        CallReport {
            result,
            started_at,
            duration: clock.elapsed(),
            error,
            pause,
        }
    }
}

/// The error and its causes, without the URL (whose path carries payload
/// values), truncated.
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    truncate(text, MAX_ERROR_LEN)
}

pub fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}
