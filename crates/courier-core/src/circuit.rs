//! The circuit breaker's rules: which calls count as failures, when the
//! failures seen in a window open the circuit, and the states it moves
//! through (closed → open → half-open → closed, or open again).
//!
//! Owns the policy; the state itself is shared by every worker through
//! PostgreSQL (courier-store), and each worker judges its own window of
//! calls. It must never read a clock: callers pass the time in, in
//! milliseconds of a monotonic clock of their choosing.

use crate::classify::CallResult;
use crate::config::CircuitPolicy;
use std::collections::VecDeque;

/// A circuit's state, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CircuitState {
    /// Calls go.
    Closed,
    /// No call goes until the open period ends; jobs wait without spending
    /// attempts.
    Open,
    /// A few probe calls go; their successes close it, a failure opens it
    /// again.
    HalfOpen,
}

impl CircuitState {
    pub const ALL: [CircuitState; 3] = [Self::Closed, Self::Open, Self::HalfOpen];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The gauge's value: 0 closed, 1 half-open, 2 open.
    pub fn level(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }
}

/// Whether a call tells about the provider's health: `Some(true)` a
/// failure (a timeout, no connection, a broken answer, a 5xx), `Some(false)`
/// an answer from a working provider (2xx, 4xx: the provider judged the
/// request), `None` a throttle (a 429, or a 503 that named when to come
/// back), which says nothing about health and is obeyed instead.
pub fn failure(result: &CallResult) -> Option<bool> {
    match result {
        CallResult::Timeout | CallResult::Connect | CallResult::Transport => Some(true),
        CallResult::Response { status: 429, .. } => None,
        CallResult::Response {
            status: 503,
            retry_after: Some(_),
        } => None,
        CallResult::Response { status, .. } => Some((500..=599).contains(status)),
    }
}

/// One worker's recent calls to one provider.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// (when, failed), oldest first.
    calls: VecDeque<(u64, bool)>,
    failures: u32,
}

/// Most calls a window remembers: enough for any rate the policy can ask
/// about, bounded whatever the traffic.
const MAX_REMEMBERED: usize = 10_000;

impl Window {
    /// Records a call at `now_ms`.
    pub fn record(&mut self, now_ms: u64, failed: bool) {
        self.calls.push_back((now_ms, failed));
        self.failures += u32::from(failed);
        if self.calls.len() > MAX_REMEMBERED
            && let Some((_, f)) = self.calls.pop_front()
        {
            self.failures -= u32::from(f);
        }
    }

    /// Forgets calls older than the policy's window.
    fn expire(&mut self, policy: &CircuitPolicy, now_ms: u64) {
        let horizon = now_ms.saturating_sub(policy.window.as_millis() as u64);
        while let Some(&(at, failed)) = self.calls.front() {
            if at >= horizon {
                break;
            }
            self.calls.pop_front();
            self.failures -= u32::from(failed);
        }
    }

    /// Whether the calls of the last window open the circuit: at least
    /// `min_calls`, of which at least `failure_rate` failed.
    pub fn trips(&mut self, policy: &CircuitPolicy, now_ms: u64) -> bool {
        self.expire(policy, now_ms);
        let calls = self.calls.len() as u32;
        calls >= policy.min_calls
            && f64::from(self.failures) >= policy.failure_rate * f64::from(calls)
    }

    /// Forgets everything (the circuit closed again: a fresh start).
    pub fn clear(&mut self) {
        self.calls.clear();
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn policy() -> CircuitPolicy {
        CircuitPolicy {
            failure_rate: 0.5,
            min_calls: 4,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(30),
            probes: 2,
        }
    }

    #[test]
    fn what_counts_as_a_failure() {
        let status = |status, retry_after| CallResult::Response {
            status,
            retry_after,
        };
        assert_eq!(failure(&CallResult::Timeout), Some(true));
        assert_eq!(failure(&CallResult::Connect), Some(true));
        assert_eq!(failure(&status(502, None)), Some(true));
        assert_eq!(failure(&status(503, None)), Some(true));
        assert_eq!(failure(&status(503, Some(Duration::from_secs(1)))), None);
        assert_eq!(failure(&status(429, None)), None);
        assert_eq!(failure(&status(404, None)), Some(false));
        assert_eq!(failure(&status(200, None)), Some(false));
    }

    #[test]
    fn opens_on_the_failure_rate_among_enough_recent_calls() {
        let p = policy();
        let mut w = Window::default();
        for t in 0..3 {
            w.record(t, true);
        }
        assert!(!w.trips(&p, 3), "too few calls to judge");
        w.record(4, false);
        assert!(w.trips(&p, 4), "3 of 4 failed");
        // Ten seconds on, those calls no longer count.
        assert!(!w.trips(&p, 20_000));
    }

    #[test]
    fn a_healthy_mix_stays_closed() {
        let p = policy();
        let mut w = Window::default();
        for t in 0..100 {
            w.record(t, t % 3 == 0);
        }
        assert!(!w.trips(&p, 100), "a third failing is under half");
    }

    proptest! {
        #[test]
        fn the_count_of_failures_stays_true(calls in proptest::collection::vec((0u64..50_000, any::<bool>()), 0..300)) {
            let p = policy();
            let mut w = Window::default();
            let mut sorted = calls;
            sorted.sort_by_key(|(t, _)| *t);
            for (t, f) in &sorted {
                w.record(*t, *f);
                let _ = w.trips(&p, *t);
                prop_assert_eq!(w.failures as usize, w.calls.iter().filter(|(_, f)| *f).count());
            }
        }
    }
}
