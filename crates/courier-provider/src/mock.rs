//! The built-in mock provider: a real HTTP server on loopback for the demo,
//! the benchmarks and the tests.
//!
//! Owns the fake side of the wire. Each call answers according to, first, a
//! script in the job's payload (`"mock": {"status": 400}`, `{"fail_first": 2,
//! "fail_status": 503, "retry_after": "2"}`, `{"delay_ms": 500}`) and
//! otherwise a random [`FailureMix`]. It records every call (the
//! `Idempotency-Key`, auth and `traceparent` headers included) so tests can
//! assert on what the provider saw. A script may add response headers
//! (`{"headers": {"ratelimit": "\"default\";r=0;t=3"}}`). The mock can
//! enforce a rate limit exactly (GCRA: `per_second`, `burst`), answering
//! 429 to every call over it and counting them, and can be taken down
//! (every call a 503 without `Retry-After`) and brought back. Given keys
//! ([`MockProvider::set_verify`]), it verifies every call's Standard
//! Webhooks signature as a receiver would (tolerance 300 s), answers 401 to
//! a call that fails, and records the verdict and the `webhook-id`. It must
//! never be used as a stand-in for RabbitMQ or PostgreSQL.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use courier_core::webhook::{self, Rejection, Scheme, SigningKey};
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Shares of calls (0.0 ..= 1.0 each, summing to at most 1) answered with a
/// failure when the payload carries no script.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FailureMix {
    /// 500/502/503 without Retry-After.
    pub server_error: f64,
    /// 429 with `Retry-After: 1`.
    pub throttle: f64,
    /// No answer before the client's timeout.
    pub timeout: f64,
    /// 400/404/422.
    pub permanent: f64,
    /// How long a "timeout" call hangs.
    pub hang: Duration,
    /// Added to every call.
    pub latency: Duration,
}

/// A call as the provider saw it.
#[derive(Debug, Clone)]
pub struct RecordedCall {
    pub method: String,
    pub path: String,
    pub idempotency_key: Option<String>,
    pub authorization: Option<String>,
    pub traceparent: Option<String>,
    /// The `webhook-id` header as sent.
    pub webhook_id: Option<String>,
    /// The signature's verdict; `None` while verification is off.
    pub signature: Option<Result<(), Rejection>>,
    pub status: u16,
    pub at: Instant,
}

/// How far a signed timestamp may be from the mock's clock.
const VERIFY_TOLERANCE_SECS: u64 = 300;

/// A limit the mock enforces: a call is refused (429) when it comes more
/// than `(burst − 1) / per_second` before its theoretical arrival time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Enforced {
    pub per_second: f64,
    pub burst: u32,
}

#[derive(Debug)]
struct Enforcer {
    interval: Duration,
    tolerance: Duration,
    /// Theoretical arrival time of the next call.
    tat: Mutex<Option<Instant>>,
    refused: AtomicUsize,
}

impl Enforcer {
    /// Whether a call arriving now conforms (and if so, takes its place).
    fn admit(&self) -> bool {
        let now = Instant::now();
        let mut tat = self.tat.lock().unwrap_or_else(PoisonError::into_inner);
        let due = tat.map_or(now, |t| t.max(now));
        if due > now + self.tolerance {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return false;
        }
        *tat = Some(due + self.interval);
        true
    }
}

#[derive(Debug)]
struct MockState {
    mix: FailureMix,
    enforcer: Option<Enforcer>,
    down: std::sync::atomic::AtomicBool,
    /// Keys every call's signature must verify with; `None`: not checked.
    verify: Mutex<Option<Vec<SigningKey>>>,
    calls: Mutex<Vec<RecordedCall>>,
    per_key: Mutex<HashMap<String, u32>>,
    count: watch::Sender<usize>,
    /// Off for benchmarks: no scripts, nothing recorded but the count.
    recording: bool,
    lean_calls: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// A running mock provider; stops when dropped.
#[derive(Debug)]
pub struct MockProvider {
    addr: SocketAddr,
    state: Arc<MockState>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl MockProvider {
    /// Starts on `127.0.0.1:0` (a free port).
    pub async fn start(mix: FailureMix) -> std::io::Result<MockProvider> {
        Self::start_with(mix, true).await
    }

    /// A mock for benchmarks: answers by `mix` alone (payload scripts are
    /// not read) and records nothing, so that its own cost stays small
    /// next to the worker's.
    pub async fn start_lean(mix: FailureMix) -> std::io::Result<MockProvider> {
        Self::start_with(mix, false).await
    }

    /// A lean mock (see [`start_lean`](Self::start_lean)) that also
    /// enforces `limit`, counting the calls it refuses.
    pub async fn start_enforcing(
        mix: FailureMix,
        limit: Enforced,
        recording: bool,
    ) -> std::io::Result<MockProvider> {
        Self::start_inner(mix, Some(limit), recording).await
    }

    async fn start_with(mix: FailureMix, recording: bool) -> std::io::Result<MockProvider> {
        Self::start_inner(mix, None, recording).await
    }

    async fn start_inner(
        mix: FailureMix,
        limit: Option<Enforced>,
        recording: bool,
    ) -> std::io::Result<MockProvider> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (count, _) = watch::channel(0);
        let state = Arc::new(MockState {
            mix,
            enforcer: limit.map(|l| {
                let interval = Duration::from_secs_f64(1.0 / l.per_second);
                Enforcer {
                    interval,
                    tolerance: interval * l.burst.saturating_sub(1),
                    tat: Mutex::new(None),
                    refused: AtomicUsize::new(0),
                }
            }),
            down: std::sync::atomic::AtomicBool::new(false),
            verify: Mutex::new(None),
            calls: Mutex::new(Vec::new()),
            per_key: Mutex::new(HashMap::new()),
            count,
            recording,
            lean_calls: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let app = Router::new().fallback(handle).with_state(state.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "mock provider stopped");
            }
        });
        Ok(MockProvider {
            addr,
            state,
            _stop: stop,
        })
    }

    /// Calls refused for going over the enforced limit.
    pub fn refused(&self) -> usize {
        self.state
            .enforcer
            .as_ref()
            .map_or(0, |e| e.refused.load(Ordering::SeqCst))
    }

    /// Takes the provider down (every call a 503 without `Retry-After`) or
    /// brings it back.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// From now on, verifies every call's Standard Webhooks signature
    /// with `keys` (any one matching verifies): a call that fails is
    /// answered 401 and recorded with its [`Rejection`].
    pub fn set_verify(&self, keys: Vec<SigningKey>) {
        *self
            .state
            .verify
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(keys);
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every call so far, in arrival order.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.state
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The most calls that were ever being answered at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn call_count(&self) -> usize {
        if self.state.recording {
            *self.state.count.borrow()
        } else {
            self.state.lean_calls.load(Ordering::Relaxed)
        }
    }

    /// Calls that carried `key` as their `Idempotency-Key`.
    pub fn calls_for(&self, key: &str) -> Vec<RecordedCall> {
        self.calls()
            .into_iter()
            .filter(|c| c.idempotency_key.as_deref() == Some(key))
            .collect()
    }

    /// Waits until at least `n` calls have arrived; false on timeout.
    pub async fn wait_for_calls(&self, n: usize, timeout: Duration) -> bool {
        let mut rx = self.state.count.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|&c| c >= n))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// The script a payload may carry under `"mock"`.
#[derive(Debug, Default)]
struct Script {
    status: Option<u16>,
    fail_first: u32,
    fail_status: u16,
    retry_after: Option<String>,
    headers: Vec<(String, String)>,
    delay: Duration,
}

impl Script {
    fn of(body: &[u8]) -> Option<Script> {
        let v: Value = serde_json::from_slice(body).ok()?;
        let m = v.get("mock")?;
        let num = |k: &str| m.get(k).and_then(Value::as_u64);
        Some(Script {
            status: num("status").and_then(|s| u16::try_from(s).ok()),
            fail_first: num("fail_first")
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
            fail_status: num("fail_status")
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(503),
            retry_after: m.get("retry_after").map(|r| match r {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
            headers: m
                .get("headers")
                .and_then(Value::as_object)
                .map(|h| {
                    h.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                        .collect()
                })
                .unwrap_or_default(),
            delay: Duration::from_millis(num("delay_ms").unwrap_or(0)),
        })
    }
}

/// Counts a call as being answered until dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(
    State(state): State<Arc<MockState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let _answered = InFlight(&state.in_flight);
    let refused = state.enforcer.as_ref().is_some_and(|e| !e.admit());
    let down = state.down.load(Ordering::SeqCst);
    let keys = state
        .verify
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let signature = keys.map(|keys| {
        webhook::verify(
            Scheme::StandardWebhooks,
            &keys,
            &header,
            &body,
            chrono::Utc::now().timestamp(),
            VERIFY_TOLERANCE_SECS,
        )
        .map(|_| ())
    });
    let forged = matches!(signature, Some(Err(_)));
    if !state.recording {
        let nth_call = state.lean_calls.fetch_add(1, Ordering::Relaxed) + 1;
        let (status, retry_after, delay) = if refused {
            (429, None, Duration::ZERO)
        } else if down {
            (503, None, Duration::ZERO)
        } else if forged {
            (401, None, Duration::ZERO)
        } else {
            by_mix(&state.mix, nth_call as u32)
        };
        return answer(status, retry_after, Vec::new(), delay).await;
    }
    let key = header("idempotency-key");
    let nth_call = {
        let mut per_key = state.per_key.lock().unwrap_or_else(PoisonError::into_inner);
        let n = per_key.entry(key.clone().unwrap_or_default()).or_insert(0);
        *n += 1;
        *n
    };

    let mix = state.mix;
    let (status, retry_after, extra, delay) = match Script::of(&body) {
        _ if refused => (429, None, Vec::new(), Duration::ZERO),
        _ if down => (503, None, Vec::new(), Duration::ZERO),
        _ if forged => (401, None, Vec::new(), Duration::ZERO),
        Some(script) => {
            let (status, retry_after) = if let Some(s) = script.status {
                (s, script.retry_after)
            } else if nth_call <= script.fail_first {
                (script.fail_status, script.retry_after)
            } else {
                (200, None)
            };
            (status, retry_after, script.headers, script.delay)
        }
        None => {
            let (status, retry_after, delay) = by_mix(&mix, nth_call);
            (status, retry_after, Vec::new(), delay)
        }
    };

    {
        let mut calls = state.calls.lock().unwrap_or_else(PoisonError::into_inner);
        calls.push(RecordedCall {
            method: method.to_string(),
            path: uri.path().to_owned(),
            idempotency_key: key,
            authorization: header("authorization"),
            traceparent: header("traceparent"),
            webhook_id: header("webhook-id"),
            signature,
            status,
            at: Instant::now(),
        });
        state.count.send_replace(calls.len());
    }
    answer(status, retry_after, extra, delay).await
}

/// The answer `mix` draws for a call without a script.
fn by_mix(mix: &FailureMix, nth_call: u32) -> (u16, Option<String>, Duration) {
    let r: f64 = rand::random();
    let mut edge = mix.server_error;
    if r < edge {
        ([500, 502, 503][nth_call as usize % 3], None, mix.latency)
    } else if r < {
        edge += mix.throttle;
        edge
    } {
        (429, Some("1".to_owned()), mix.latency)
    } else if r < {
        edge += mix.timeout;
        edge
    } {
        (200, None, mix.hang)
    } else if r < edge + mix.permanent {
        ([400, 404, 422][nth_call as usize % 3], None, mix.latency)
    } else {
        (200, None, mix.latency)
    }
}

async fn answer(
    status: u16,
    retry_after: Option<String>,
    headers: Vec<(String, String)>,
    delay: Duration,
) -> Response {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, "{}").into_response();
    let extra = retry_after
        .map(|ra| ("retry-after".to_owned(), ra))
        .into_iter()
        .chain(headers);
    for (name, value) in extra {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(name.as_bytes()),
            axum::http::HeaderValue::from_str(&value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}
