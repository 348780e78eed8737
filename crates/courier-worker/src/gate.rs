//! Provider protection in the worker: whether a call may go now, and what
//! each call says about the provider.
//!
//! Owns the worker's side of what every replica obeys through PostgreSQL
//! (courier-store's `providers`): the rate limits (slots leased in blocks
//! from a shared GCRA schedule and spent at their times), a pause the
//! provider asked for, an operator's hold, and the circuit breaker (this
//! worker's window of calls trips it for everyone; probes close it). The
//! shared state is read every [`REFRESH`]; what this worker learns itself
//! (a 429, a tripped window) applies here at once and is written for the
//! others. A job that cannot go soon is *deferred*: it waits in the delay
//! queues, spending no attempt. It must never call a provider: it only
//! says whether the pipeline may.

use crate::patience::{Abandoned, Io, Stop, persist};
use courier_core::circuit::{self, CircuitState, Window};
use courier_core::config::{CircuitPolicy, Config, RateLimit};
use courier_core::signals::Pause;
use courier_provider::CallReport;
use courier_store::{ProbeEnd, ProviderStates, Store};
use courier_telemetry::{DeferReason, Metrics};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often the shared state is read: how soon a pause or a circuit that
/// another worker set reaches this one.
pub const REFRESH: Duration = Duration::from_millis(250);
/// A pause this short is waited out in memory; a longer one defers the job.
const WAIT_IN_PLACE: Duration = Duration::from_secs(1);
/// How long a job waits when an operator's hold names no end, or when the
/// circuit is half-open and its probes are taken: then it is looked at again.
const HOLD_RECHECK: Duration = Duration::from_secs(5);
const PROBE_RECHECK: Duration = Duration::from_secs(1);
/// A leased slot not used within this long after its time is dropped: it
/// would add a burst on top of other workers' slots.
const STALE_SLOT: Duration = Duration::from_secs(1);
/// Longest a call's outcome waits for its pause to be shared.
const SHARE_WITHIN: Duration = Duration::from_secs(1);
/// Slots leased at most at once: a quarter of a second of the rate.
const LEASE_SPAN: Duration = Duration::from_millis(250);

/// Whether a call may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Call now; `probe` when the call is one of a half-open circuit's
    /// probes (its result decides the circuit).
    Call { probe: bool },
    /// Do not call: send the job to wait `wait` in the delay queues.
    Defer { wait: Duration, reason: DeferReason },
}

/// Every provider's protection, for one worker.
#[derive(Debug)]
pub struct Gate {
    providers: HashMap<String, Arc<ProviderGate>>,
    store: Store,
    metrics: Arc<Metrics>,
}

#[derive(Debug)]
struct ProviderGate {
    name: String,
    policy: CircuitPolicy,
    shared: Mutex<Shared>,
    window: Mutex<Window>,
    /// Milliseconds of this clock are the window's time.
    origin: Instant,
    limiter: Option<Limiter>,
    operations: HashMap<String, Limiter>,
}

/// What every worker obeys, as this one knows it.
#[derive(Debug, Clone, Copy)]
struct Shared {
    paused_until: Option<Instant>,
    /// `Some(None)`: held until released; `Some(Some(t))`: until `t`.
    held: Option<Option<Instant>>,
    circuit: CircuitState,
    open_until: Option<Instant>,
}

/// Why a call may not go now, from what every worker shares.
enum Blocked {
    /// Long enough to send the job to the delay queues.
    Defer { wait: Duration, reason: DeferReason },
    /// A pause short enough to wait out in place.
    Briefly(Duration),
}

impl Shared {
    /// Held, paused, or an open circuit whose probes are not due yet.
    fn blocked(&self, now: Instant) -> Option<Blocked> {
        if let Some(held) = self.held {
            let wait = held.map_or(HOLD_RECHECK, |until| until.saturating_duration_since(now));
            return Some(Blocked::Defer {
                wait: wait.min(HOLD_RECHECK),
                reason: DeferReason::Held,
            });
        }
        if let Some(until) = self.paused_until.filter(|t| *t > now) {
            let wait = until - now;
            return Some(if wait > WAIT_IN_PLACE {
                Blocked::Defer {
                    wait,
                    reason: DeferReason::Paused,
                }
            } else {
                Blocked::Briefly(wait)
            });
        }
        match (self.circuit, self.open_until) {
            (CircuitState::Open, Some(until)) if until > now => Some(Blocked::Defer {
                wait: until - now,
                reason: DeferReason::CircuitOpen,
            }),
            _ => None,
        }
    }
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            paused_until: None,
            held: None,
            circuit: CircuitState::Closed,
            open_until: None,
        }
    }
}

impl Gate {
    /// Makes sure the shared rows exist, reads them once, and keeps reading
    /// them every [`REFRESH`] until `stop`.
    pub async fn start(
        config: &Config,
        store: Store,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> Result<Arc<Gate>, courier_store::StoreError> {
        let mut providers = HashMap::new();
        let mut keys = Vec::new();
        for (name, p) in &config.providers {
            let limiter = p.rate_limit.map(|limit| {
                keys.push(name.clone());
                Limiter::new(name.clone(), limit, store.clone())
            });
            let operations = p
                .operations
                .iter()
                .filter_map(|(op, o)| {
                    let key = format!("{name}/{op}");
                    o.rate_limit.map(|limit| {
                        keys.push(key.clone());
                        (op.clone(), Limiter::new(key, limit, store.clone()))
                    })
                })
                .collect();
            providers.insert(
                name.clone(),
                Arc::new(ProviderGate {
                    name: name.clone(),
                    policy: p.circuit,
                    shared: Mutex::new(Shared::default()),
                    window: Mutex::new(Window::default()),
                    origin: Instant::now(),
                    limiter,
                    operations,
                }),
            );
        }
        let names: Vec<String> = config.providers.keys().cloned().collect();
        store.ensure_providers(&names, &keys).await?;
        let gate = Arc::new(Gate {
            providers,
            store,
            metrics,
        });
        gate.apply(gate.store.provider_states().await?);
        let refresher = gate.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(REFRESH);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = stop.cancelled() => return,
                }
                match tokio::time::timeout(REFRESH * 4, refresher.store.provider_states()).await {
                    Ok(Ok(states)) => refresher.apply(states),
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "reading provider state failed; keeping what is known")
                    }
                    Err(_) => tracing::debug!(
                        "reading provider state took too long; keeping what is known"
                    ),
                }
            }
        });
        Ok(gate)
    }

    /// Takes the shared state read from PostgreSQL. A pause this worker set
    /// itself and has not seen written yet is kept (the later one wins).
    fn apply(&self, states: ProviderStates) {
        let here = Instant::now();
        let local = |at: chrono::DateTime<chrono::Utc>| {
            let ahead = (at - states.now).to_std().unwrap_or(Duration::ZERO);
            here + ahead
        };
        for state in states.providers {
            let Some(gate) = self.providers.get(&state.provider) else {
                continue;
            };
            let mut shared = gate.lock_shared();
            let paused = state.paused_until.map(local).filter(|t| *t > here);
            shared.paused_until = match (shared.paused_until, paused) {
                (Some(mine), Some(theirs)) => Some(mine.max(theirs)),
                (Some(mine), None) if mine > here => Some(mine),
                (_, theirs) => theirs,
            };
            shared.held = state.held_by.as_ref().and_then(|_| match state.held_until {
                None => Some(None),
                Some(until) if until > states.now => Some(Some(local(until))),
                Some(_) => None,
            });
            shared.circuit = state.circuit;
            shared.open_until = state.open_until.map(local);
            let held = shared.held.is_some() || shared.paused_until.is_some();
            drop(shared);
            self.metrics.circuit_seen(&gate.name, state.circuit);
            self.metrics.provider_held(&gate.name, held);
        }
    }

    /// Whether a call to `provider`'s `operation` may go: waits out short
    /// pauses and the rate limits' slots here (cancelled by `stop`), and
    /// says to defer the job when the provider is paused, held or its
    /// circuit open.
    pub async fn admit(
        &self,
        provider: &str,
        operation: &str,
        stop: &CancellationToken,
    ) -> Result<Admit, Abandoned> {
        let Some(gate) = self.providers.get(provider) else {
            return Ok(Admit::Call { probe: false });
        };
        loop {
            let now = Instant::now();
            let shared = *gate.lock_shared();
            match shared.blocked(now) {
                Some(Blocked::Defer { wait, reason }) => return Ok(Admit::Defer { wait, reason }),
                Some(Blocked::Briefly(wait)) => {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => continue,
                        _ = stop.cancelled() => return Err(Abandoned),
                    }
                }
                None => {}
            }
            let probe = match shared.circuit {
                CircuitState::Closed => false,
                CircuitState::Open | CircuitState::HalfOpen => {
                    match self
                        .store
                        .take_probe(provider, gate.policy.probes, gate.policy.open_for)
                        .await
                    {
                        Ok(Some(moved)) => {
                            if moved {
                                self.moved(gate, CircuitState::HalfOpen);
                            }
                            true
                        }
                        Ok(None) => {
                            return Ok(Admit::Defer {
                                wait: PROBE_RECHECK,
                                reason: DeferReason::Probing,
                            });
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "taking a probe failed; the job waits");
                            return Ok(Admit::Defer {
                                wait: PROBE_RECHECK,
                                reason: DeferReason::Probing,
                            });
                        }
                    }
                }
            };
            // The operation's slot first, then the provider's: a provider
            // slot is used the moment it comes (a late one would burst).
            let started = Instant::now();
            if let Some(limiter) = gate.operations.get(operation) {
                limiter.acquire(&self.metrics, stop).await?;
            }
            if let Some(limiter) = &gate.limiter {
                limiter.acquire(&self.metrics, stop).await?;
                self.metrics.limiter_waited(provider, started.elapsed());
            }
            return Ok(Admit::Call { probe });
        }
    }

    /// Whether a call admitted a while ago may still go: the circuit may
    /// have opened, or the provider been paused or held, while it waited
    /// for a concurrency slot. A probe goes regardless (it was handed out
    /// to test the provider). Reads local state only.
    pub fn still_admitted(&self, provider: &str, probe: bool) -> Option<(Duration, DeferReason)> {
        let gate = self.providers.get(provider)?;
        let shared = *gate.lock_shared();
        if probe {
            return None;
        }
        match shared.blocked(Instant::now()) {
            Some(Blocked::Defer { wait, reason }) => Some((wait, reason)),
            Some(Blocked::Briefly(wait)) => Some((wait, DeferReason::Paused)),
            None if shared.circuit != CircuitState::Closed => {
                Some((PROBE_RECHECK, DeferReason::Probing))
            }
            None => None,
        }
    }

    /// What a call's report says about `provider`: a pause it asked for
    /// (for every worker), and its health (the circuit).
    pub async fn observe(&self, provider: &str, probe: bool, report: &CallReport) {
        let Some(gate) = self.providers.get(provider) else {
            return;
        };
        if let Some(pause) = report.pause {
            self.pause(gate, pause).await;
        }
        let failed = circuit::failure(&report.result);
        if probe {
            // A throttle says the provider is up: a success for the probe.
            let succeeded = failed != Some(true);
            match self
                .store
                .probe_result(
                    provider,
                    succeeded,
                    gate.policy.probes,
                    gate.policy.open_for,
                )
                .await
            {
                Ok(ProbeEnd::Closed) => {
                    gate.window
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clear();
                    gate.lock_shared().circuit = CircuitState::Closed;
                    self.moved(gate, CircuitState::Closed);
                }
                Ok(ProbeEnd::Reopened) => {
                    let mut shared = gate.lock_shared();
                    shared.circuit = CircuitState::Open;
                    shared.open_until = Some(Instant::now() + gate.policy.open_for);
                    drop(shared);
                    self.moved(gate, CircuitState::Open);
                }
                Ok(ProbeEnd::Counted) => {}
                Err(e) => tracing::warn!(error = %e, "recording a probe's result failed"),
            }
            return;
        }
        let Some(failed) = failed else {
            return;
        };
        let now_ms = gate.origin.elapsed().as_millis() as u64;
        let trips = {
            let mut window = gate.window.lock().unwrap_or_else(PoisonError::into_inner);
            window.record(now_ms, failed);
            failed && window.trips(&gate.policy, now_ms)
        };
        if trips {
            // Open here first: no call of this worker goes while the
            // others are told.
            {
                let mut shared = gate.lock_shared();
                if shared.circuit != CircuitState::Closed {
                    return;
                }
                shared.circuit = CircuitState::Open;
                shared.open_until = Some(Instant::now() + gate.policy.open_for);
            }
            match self
                .store
                .open_circuit(provider, gate.policy.open_for)
                .await
            {
                Ok(true) => {
                    tracing::warn!(
                        provider,
                        "circuit opened: too many calls failing; its jobs wait without spending attempts"
                    );
                    self.moved(gate, CircuitState::Open);
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "opening the circuit for every worker failed; it is open here")
                }
            }
        }
    }

    /// Pauses the provider here at once, and for every worker through
    /// PostgreSQL before the call's outcome is recorded (bounded: a slow
    /// database delays the others' pause, never this worker's).
    async fn pause(&self, gate: &ProviderGate, pause: Pause) {
        let until = Instant::now() + pause.length;
        {
            let mut shared = gate.lock_shared();
            shared.paused_until = Some(shared.paused_until.map_or(until, |t| t.max(until)));
        }
        self.metrics.provider_paused(&gate.name, pause.source);
        self.metrics.provider_held(&gate.name, true);
        tracing::info!(provider = %gate.name, pause_ms = pause.length.as_millis() as u64, source = pause.source.as_str(), "the provider asked for a pause: every worker waits");
        let shared = self
            .store
            .pause_provider(&gate.name, pause.length, pause.source.as_str());
        match tokio::time::timeout(SHARE_WITHIN, shared).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "sharing a provider's pause failed"),
            Err(_) => tracing::warn!("sharing a provider's pause took too long"),
        }
    }

    fn moved(&self, gate: &ProviderGate, to: CircuitState) {
        tracing::warn!(provider = %gate.name, circuit = to.as_str(), "circuit moved");
        self.metrics.circuit_moved(&gate.name, to);
    }
}

impl ProviderGate {
    fn lock_shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One rate limit's slots, leased in blocks from the shared schedule.
#[derive(Debug)]
struct Limiter {
    key: String,
    interval: Duration,
    /// The burst leased with: the configured one less what is kept as slack.
    burst: u32,
    slots: tokio::sync::Mutex<Slots>,
    /// Calls waiting for a slot: how many to lease next.
    waiting: AtomicUsize,
    most: u32,
    store: Store,
}

/// A limiter's leased slots and what it knows of its recent use.
#[derive(Debug, Default)]
struct Slots {
    /// Leased and not yet spent, soonest first.
    queue: VecDeque<Instant>,
    /// The last one leased: nothing is leased further ahead than
    /// [`LEASE_SPAN`] beyond it.
    last: Option<Instant>,
    /// Slots handed out in the current and the previous [`LEASE_SPAN`]: a
    /// lease takes at least as many as were used in one span, so a limit
    /// far above the rate costs a statement per span, not per call.
    span_start: Option<Instant>,
    this_span: u32,
    last_span: u32,
}

impl Slots {
    fn count_use(&mut self, now: Instant) {
        match self.span_start {
            Some(start) if now < start + LEASE_SPAN => {}
            Some(start) if now < start + 2 * LEASE_SPAN => {
                self.last_span = self.this_span;
                self.this_span = 0;
                self.span_start = Some(start + LEASE_SPAN);
            }
            _ => {
                self.last_span = 0;
                self.this_span = 0;
                self.span_start = Some(now);
            }
        }
        self.this_span = self.this_span.saturating_add(1);
    }
}

/// Part of the burst kept unspent: a provider enforcing exactly our limit
/// sees our calls after a delay that varies (the lease's round trip, the
/// scheduler, the network), and a call at the very edge of its schedule
/// that arrives a little early is refused. At least this much of the
/// tolerance, or one interval, is kept as slack.
const SLACK: Duration = Duration::from_millis(25);

impl Limiter {
    fn new(key: String, limit: RateLimit, store: Store) -> Limiter {
        let most = (limit.per_second * LEASE_SPAN.as_secs_f64()).ceil() as u32;
        let interval = Duration::from_secs_f64(1.0 / limit.per_second);
        let slack_slots = (SLACK.as_secs_f64() / interval.as_secs_f64())
            .ceil()
            .max(1.0) as u32;
        Limiter {
            key,
            interval,
            burst: limit.burst.saturating_sub(slack_slots).max(1),
            slots: tokio::sync::Mutex::new(Slots::default()),
            waiting: AtomicUsize::new(0),
            most: most.clamp(1, 1000),
            store,
        }
    }

    /// Waits for this call's slot.
    async fn acquire(&self, metrics: &Metrics, stop: &CancellationToken) -> Result<(), Abandoned> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let slot = self.next_slot(metrics, stop).await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        let at = slot?;
        tokio::select! {
            _ = tokio::time::sleep_until(at.into()) => Ok(()),
            _ = stop.cancelled() => Err(Abandoned),
        }
    }

    async fn next_slot(
        &self,
        metrics: &Metrics,
        stop: &CancellationToken,
    ) -> Result<Instant, Abandoned> {
        let mut guard = self.slots.lock().await;
        let state = &mut *guard;
        let now = Instant::now();
        state.count_use(now);
        while state.queue.front().is_some_and(|t| *t + STALE_SLOT < now) {
            state.queue.pop_front();
        }
        if let Some(slot) = state.queue.pop_front() {
            return Ok(slot);
        }
        // Lease no further ahead than LEASE_SPAN: slots held far ahead
        // would be lost if this worker died, and kept from the others.
        if let Some(ahead) = state
            .last
            .and_then(|t| t.checked_duration_since(now + LEASE_SPAN))
        {
            tokio::select! {
                _ = tokio::time::sleep(ahead) => {}
                _ = stop.cancelled() => return Err(Abandoned),
            }
        }
        let waiting = u32::try_from(self.waiting.load(Ordering::SeqCst)).unwrap_or(u32::MAX);
        let wanted = waiting.max(state.last_span).clamp(1, self.most);
        let lease = match persist(Io::LeaseSlots, stop, metrics, || {
            self.store
                .lease_slots(&self.key, wanted, self.interval, self.burst)
        })
        .await
        {
            Ok(lease) => lease,
            Err(Stop::Abandoned) => return Err(Abandoned),
            Err(Stop::Refused(e)) => {
                // Nothing to lease from: no call goes.
                tracing::error!(error = %e, key = %self.key, "leasing rate-limit slots is refused");
                return Err(Abandoned);
            }
        };
        let here = Instant::now();
        for i in 0..i64::from(lease.slots) {
            let offset_us = lease.first_us + i * lease.interval_us;
            let at = if offset_us <= 0 {
                here
            } else {
                here + Duration::from_micros(offset_us as u64)
            };
            state.queue.push_back(at);
        }
        state.last = state.queue.back().copied();
        Ok(state.queue.pop_front().unwrap_or(here))
    }
}
