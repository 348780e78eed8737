//! The retry policy: capped exponential backoff with jitter, `Retry-After`,
//! and the decision what to do after each attempt.
//!
//! Owns [`RetryPolicy::decide`], the one function that turns a classified
//! attempt into succeed / retry-after-delay / dead. Pure: the caller passes
//! randomness and the current time. It must never sleep; a retry's wait is
//! carried out by the broker's delay queues, not here.

use crate::classify::Classification;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// The longest delay the broker's delay cascade can hold: 2^18 - 1 seconds
/// (about three days). Policies are validated against it.
pub const MAX_DELAY_SECS: u64 = (1 << 18) - 1;

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included. 1 means never retry.
    pub max_attempts: u32,
    /// Delay after the first failure, before jitter.
    pub base_delay: Duration,
    /// Cap on the exponential delay.
    pub max_delay: Duration,
    /// Share of the delay taken off at random, 0.0 ..= 1.0 ("equal jitter" at 0.5).
    pub jitter: f64,
    /// Cap on how long a provider's `Retry-After` may make us wait.
    pub max_retry_after: Duration,
    /// Longest a job may spend waiting on throttles (429, or 503 with
    /// `Retry-After`) in one run: throttled attempts do not count against
    /// `max_attempts`, this bounds them instead.
    pub max_throttled: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(600),
            jitter: 0.2,
            max_retry_after: Duration::from_secs(3600),
            max_throttled: Duration::from_secs(3600),
        }
    }
}

/// What a job has used of its budget in the current run, this attempt
/// included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Spent {
    /// Attempts that were not throttled.
    pub attempts: u32,
    /// Time waited on throttles before this attempt.
    pub throttled_for: Duration,
}

/// What to do with a job after an attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    Succeeded,
    Retry { delay: Duration },
    Dead(DeadReason),
}

/// Why a job was dead-lettered; `as_str` is the code stored and labelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DeadReason {
    /// The provider refused it in a way retrying cannot fix.
    Permanent,
    /// Every allowed attempt failed.
    RetriesExhausted,
    /// The message is not a valid job (contract, provider, operation, payload).
    Invalid,
    /// The message was delivered too often without an outcome: it kills or
    /// stalls the worker itself.
    DeliveryLimit,
    /// RabbitMQ or PostgreSQL refuses to take what Courier must write about
    /// this message (its retry, its record); the detail says which and why.
    Refused,
    /// RabbitMQ delivered a message the AMQP client cannot read (a property
    /// or header name that is not UTF-8): nothing of it could be learned but
    /// when and where; the broker dead-letters the message itself.
    Unreadable,
}

impl DeadReason {
    pub const ALL: [DeadReason; 6] = [
        Self::Permanent,
        Self::RetriesExhausted,
        Self::Invalid,
        Self::DeliveryLimit,
        Self::Refused,
        Self::Unreadable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Permanent => "permanent",
            Self::RetriesExhausted => "retries_exhausted",
            Self::Invalid => "invalid",
            Self::DeliveryLimit => "delivery_limit",
            Self::Refused => "refused",
            Self::Unreadable => "unreadable",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

crate::state::stored_as_text!(DeadReason, "dead-letter reason");

impl RetryPolicy {
    /// The backoff after attempt `failed_attempt` (1-based) failed.
    /// `unit` is a uniform random number in `[0, 1)`.
    pub fn backoff(&self, failed_attempt: u32, unit: f64) -> Duration {
        let doublings = failed_attempt.saturating_sub(1).min(63);
        let factor = 1u64 << doublings;
        let exp = u32::try_from(factor)
            .ok()
            .and_then(|f| self.base_delay.checked_mul(f))
            .unwrap_or(self.max_delay)
            .min(self.max_delay);
        let keep = 1.0 - self.jitter.clamp(0.0, 1.0) * unit.clamp(0.0, 1.0);
        exp.mul_f64(keep)
    }

    /// Decides after an attempt classified as `class`, given what the job
    /// has `spent` of its budget in the current run. A throttled attempt
    /// (the provider asked us to slow down) does not count against
    /// `max_attempts`: it waits what the provider asked, within
    /// `max_throttled` in all.
    pub fn decide(&self, spent: Spent, class: Classification, unit: f64) -> Decision {
        match class {
            Classification::Success => Decision::Succeeded,
            Classification::Permanent => Decision::Dead(DeadReason::Permanent),
            Classification::Retryable => {
                if spent.attempts >= self.max_attempts {
                    return Decision::Dead(DeadReason::RetriesExhausted);
                }
                Decision::Retry {
                    delay: self.backoff(spent.attempts.max(1), unit),
                }
            }
            Classification::Throttled { retry_after } => {
                let delay = match retry_after {
                    Some(asked) => asked.min(self.max_retry_after).max(Duration::from_secs(1)),
                    None => self.backoff(spent.attempts.max(1), unit),
                };
                if spent.throttled_for + delay > self.max_throttled {
                    return Decision::Dead(DeadReason::RetriesExhausted);
                }
                Decision::Retry { delay }
            }
        }
    }
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP-date (IMF-fixdate
/// or the other RFC 9110 forms chrono reads as RFC 2822). A date in the past
/// means "now". Unparseable values are ignored (`None`).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            jitter: 0.0,
            max_retry_after: Duration::from_secs(120),
            max_throttled: Duration::from_secs(600),
        }
    }

    #[test]
    fn doubles_then_caps() {
        let p = policy();
        let d: Vec<_> = (1..=8).map(|n| p.backoff(n, 0.0).as_millis()).collect();
        assert_eq!(d, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    }

    fn spent(attempts: u32) -> Spent {
        Spent {
            attempts,
            throttled_for: Duration::ZERO,
        }
    }

    #[test]
    fn decides_by_class_and_attempt() {
        let p = policy();
        assert_eq!(
            p.decide(spent(1), Classification::Success, 0.0),
            Decision::Succeeded
        );
        assert_eq!(
            p.decide(spent(1), Classification::Permanent, 0.0),
            Decision::Dead(DeadReason::Permanent)
        );
        assert_eq!(
            p.decide(spent(2), Classification::Retryable, 0.0),
            Decision::Retry {
                delay: Duration::from_secs(1)
            }
        );
        assert_eq!(
            p.decide(spent(5), Classification::Retryable, 0.0),
            Decision::Dead(DeadReason::RetriesExhausted)
        );
    }

    #[test]
    fn a_throttle_waits_what_the_provider_asked_within_the_caps() {
        let p = policy();
        let throttled = |s| Classification::Throttled {
            retry_after: Some(Duration::from_secs(s)),
        };
        assert_eq!(
            p.decide(spent(1), throttled(10), 0.0),
            Decision::Retry {
                delay: Duration::from_secs(10)
            }
        );
        assert_eq!(
            p.decide(spent(1), throttled(9999), 0.0),
            Decision::Retry {
                delay: Duration::from_secs(120)
            }
        );
        assert_eq!(
            p.decide(spent(1), throttled(0), 0.0),
            Decision::Retry {
                delay: Duration::from_secs(1)
            },
            "never at once"
        );
    }

    #[test]
    fn throttles_do_not_spend_attempts_but_are_bounded_in_time() {
        let p = RetryPolicy {
            max_throttled: Duration::from_secs(60),
            ..policy()
        };
        let throttled = Classification::Throttled {
            retry_after: Some(Duration::from_secs(10)),
        };
        // Attempts are all spent, yet a throttle is retried…
        assert!(matches!(
            p.decide(spent(5), throttled, 0.0),
            Decision::Retry { .. }
        ));
        // …until the time waited on throttles would pass the bound.
        let long = Spent {
            attempts: 1,
            throttled_for: Duration::from_secs(55),
        };
        assert_eq!(
            p.decide(long, throttled, 0.0),
            Decision::Dead(DeadReason::RetriesExhausted)
        );
    }

    #[test]
    fn parses_both_retry_after_forms() {
        let now = DateTime::parse_from_rfc3339("2026-11-24T10:00:00Z")
            .expect("valid")
            .with_timezone(&Utc);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Tue, 24 Nov 2026 10:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Tue, 24 Nov 2026 09:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn reason_codes_round_trip() {
        for r in DeadReason::ALL {
            assert_eq!(DeadReason::parse(r.as_str()), Some(r));
        }
    }

    prop_compose! {
        fn any_policy()(max_attempts in 1u32..20, base_ms in 1u64..10_000, cap_s in 1u64..MAX_DELAY_SECS,
                        jitter in 0.0f64..=1.0, ra_s in 0u64..MAX_DELAY_SECS) -> RetryPolicy {
            RetryPolicy {
                max_attempts,
                base_delay: Duration::from_millis(base_ms),
                max_delay: Duration::from_secs(cap_s),
                jitter,
                max_retry_after: Duration::from_secs(ra_s),
                max_throttled: Duration::from_secs(3600),
            }
        }
    }

    proptest! {
        #[test]
        fn backoff_stays_within_jitter_band_and_cap(p in any_policy(), n in 1u32..200, unit in 0.0f64..1.0) {
            let d = p.backoff(n, unit);
            prop_assert!(d <= p.max_delay);
            let unjittered = p.backoff(n, 0.0);
            prop_assert!(d.as_secs_f64() >= unjittered.as_secs_f64() * (1.0 - p.jitter) - 1e-9);
        }

        #[test]
        fn unjittered_backoff_never_shrinks(p in any_policy(), n in 1u32..200) {
            prop_assert!(p.backoff(n + 1, 0.0) >= p.backoff(n, 0.0));
        }

        #[test]
        fn never_retries_past_max_attempts(p in any_policy(), n in 1u32..40, unit in 0.0f64..1.0) {
            let d = p.decide(spent(n), Classification::Retryable, unit);
            if n >= p.max_attempts {
                prop_assert_eq!(d, Decision::Dead(DeadReason::RetriesExhausted));
            } else {
                let is_retry = matches!(d, Decision::Retry { .. });
                prop_assert!(is_retry);
            }
        }

        #[test]
        fn retry_waits_at_least_what_the_provider_asked_up_to_the_cap(
            p in any_policy(), n in 1u32..40, unit in 0.0f64..1.0, asked in 0u64..1_000_000) {
            let asked = Duration::from_secs(asked);
            if let Decision::Retry { delay } = p.decide(spent(n), Classification::Throttled { retry_after: Some(asked) }, unit) {
                prop_assert!(delay >= asked.min(p.max_retry_after));
                prop_assert!(delay <= p.max_retry_after.max(Duration::from_secs(1)));
            }
        }
    }
}
