//! One provider's HTTP client.
//!
//! Owns building and sending a provider request and reporting the result.
//! It must never retry, sleep between attempts or judge the result: that is
//! courier-core's classification, applied by the worker.

use chrono::{DateTime, Utc};
use courier_core::config::{AuthScheme, Operation, ProviderConfig};
use courier_core::retry::parse_retry_after;
use courier_core::signals::{self, Hints, Pause};
use courier_core::webhook::{self, Scheme, SigningKey};
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
    #[error("providers.{provider}.signing: {source}")]
    Signing {
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
    signing: Option<Signing>,
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

/// The keys that sign each call (Standard Webhooks), one per secret, read
/// from the secrets' current values on each call (a `secret_file`
/// rotates without a restart).
#[derive(Debug, Clone)]
struct Signing {
    secrets: Vec<SecretSource>,
}

/// A signing secret must be a Standard Webhooks key (`whsec_<base64>`): a
/// rotated file that is not one is refused and the last good key kept. The
/// reason never holds the value.
const SIGNING_RULES: Rules = Rules {
    check: |v| SigningKey::parse(Scheme::StandardWebhooks, v).map(|_| ()),
    revoke_when_gone: false,
};

impl Signing {
    /// `webhook-id`, `webhook-timestamp` and `webhook-signature` for
    /// `body` as sent; `None` when no key is at hand (the provider's 401
    /// says so).
    fn headers(&self, msg_id: &str, body: &[u8]) -> Option<[(&'static str, HeaderValue); 3]> {
        let keys: Vec<SigningKey> = self
            .secrets
            .iter()
            .filter_map(SecretSource::current)
            .filter_map(|s| SigningKey::parse(Scheme::StandardWebhooks, s.expose()).ok())
            .collect();
        if keys.is_empty() {
            return None;
        }
        let timestamp = Utc::now().timestamp();
        let mut signature =
            HeaderValue::from_str(&webhook::sign_standard(&keys, msg_id, timestamp, body)).ok()?;
        signature.set_sensitive(true);
        Some([
            ("webhook-id", HeaderValue::from_str(msg_id).ok()?),
            ("webhook-timestamp", HeaderValue::from(timestamp)),
            ("webhook-signature", signature),
        ])
    }
}

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
        let signing = match &config.signing {
            None => None,
            Some(signing) => {
                let secrets = signing
                    .secrets
                    .iter()
                    .map(|r| SecretSource::open(r, SIGNING_RULES))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|source| ProviderError::Signing {
                        provider: provider.clone(),
                        source,
                    })?;
                Some(Signing { secrets })
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
            signing,
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
        // Serialized once: the bytes signed are the bytes sent.
        let body = if operation.method.sends_body() {
            match serde_json::to_vec(&job.payload) {
                Ok(body) => Some(body),
                Err(e) => {
                    // A JSON object always serializes; kept total anyway.
                    return CallReport {
                        result: CallResult::Transport,
                        started_at,
                        duration: clock.elapsed(),
                        error: Some(truncate(
                            format!("cannot serialize the payload: {e}"),
                            MAX_ERROR_LEN,
                        )),
                        pause: None,
                    };
                }
            }
        } else {
            None
        };
        if let Some(signing) = &self.signing {
            let signed = body.as_deref().unwrap_or_default();
            if let Some(headers) = signing.headers(&job.id.to_string(), signed) {
                for (name, value) in headers {
                    request = request.header(name, value);
                }
            }
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::{FailureMix, MockProvider};
    use courier_core::config::Config;
    use courier_core::envelope::JobEnvelope;
    use courier_core::webhook::Rejection;

    const KEY: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn secret_file(value: &str) -> std::path::PathBuf {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "courier-signing-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        std::fs::write(&path, format!("{value}\n")).expect("write a secret file");
        path
    }

    fn config(base_url: &str, secret: &std::path::Path) -> Config {
        let toml = format!(
            r#"
[providers.p]
base_url = "{base_url}"
signing = {{ scheme = "standard-webhooks", secret_file = {:?} }}
[providers.p.operations.create]
method = "POST"
path = "/things"
[providers.p.operations.read]
method = "GET"
path = "/things/{{thing}}"
"#,
            secret.display().to_string()
        );
        Config::from_toml(&toml, "test.toml", &|_| None).expect("valid")
    }

    fn job(operation: &str) -> Job {
        let envelope = JobEnvelope::new(
            "p",
            operation,
            serde_json::json!({"thing": "t1", "note": "zürich ✓"}),
            Utc::now(),
        );
        Job::parse(&envelope.to_body(), 1 << 20).expect("a valid job")
    }

    #[tokio::test]
    async fn a_signed_call_is_signed_over_the_bytes_sent_with_or_without_a_body() {
        let secret = secret_file(KEY);
        let mock = MockProvider::start(FailureMix::default())
            .await
            .expect("start the mock");
        mock.set_verify(vec![
            SigningKey::parse(Scheme::StandardWebhooks, KEY).expect("key"),
        ]);
        let config = config(&mock.base_url(), &secret);
        let provider = &config.providers["p"];
        let client = ProviderClient::new(provider).expect("a client");

        let post = job("create");
        let report = client
            .call(&post, &provider.operations["create"], "/things", None)
            .await;
        assert_eq!(report.error, None);
        let get = job("read");
        let report = client
            .call(&get, &provider.operations["read"], "/things/t1", None)
            .await;
        assert_eq!(report.error, None);

        let calls = mock.calls();
        let seen: Vec<_> = calls
            .iter()
            .map(|c| (c.method.as_str(), c.signature, c.webhook_id.clone()))
            .collect();
        assert_eq!(
            seen,
            [
                ("POST", Some(Ok(())), Some(post.id.to_string())),
                ("GET", Some(Ok(())), Some(get.id.to_string())),
            ]
        );

        // A receiver with another key refuses the same calls.
        mock.set_verify(vec![
            SigningKey::parse(
                Scheme::StandardWebhooks,
                "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldY",
            )
            .expect("key"),
        ]);
        let report = client
            .call(&post, &provider.operations["create"], "/things", None)
            .await;
        assert_eq!(report.error.as_deref(), Some("HTTP 401 Unauthorized"));
        assert_eq!(
            mock.calls().last().map(|c| c.signature),
            Some(Some(Err(Rejection::BadSignature)))
        );
        let _ = std::fs::remove_file(&secret);
    }

    #[tokio::test]
    async fn a_signing_secret_that_is_no_key_is_refused_without_showing_it() {
        let value = "whsec_not base64 at all!";
        let secret = secret_file(value);
        let config = config("http://127.0.0.1:9", &secret);
        let e = ProviderClient::new(&config.providers["p"]).expect_err("refused");
        let text = e.to_string();
        assert!(text.starts_with("providers.p.signing: "), "{text}");
        assert!(!text.contains(value), "{text}");
        let _ = std::fs::remove_file(&secret);
    }
}
