//! What a provider's answer says about calling it again soon.
//!
//! Owns reading the fields providers use to ask for a pause: `Retry-After`
//! on a 429 or 503, the IETF `RateLimit` field (draft-ietf-httpapi-ratelimit-
//! headers-11: `RateLimit: "default";r=0;t=30`, remaining `r` and seconds to
//! reset `t`), and the older `RateLimit-Remaining`/`RateLimit-Reset` and
//! `X-RateLimit-Remaining`/`X-RateLimit-Reset` (a reset above 10^9 is a Unix
//! time, else seconds). A pause applies to the provider, for every worker.
//! It must never parse headers it was not handed: the HTTP edge passes the
//! raw values in, and the clock.

use chrono::{DateTime, Utc};
use std::time::Duration;

/// The raw values of the fields that can ask for a pause.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hints {
    pub retry_after: Option<String>,
    pub ratelimit: Option<String>,
    pub ratelimit_remaining: Option<String>,
    pub ratelimit_reset: Option<String>,
    pub x_ratelimit_remaining: Option<String>,
    pub x_ratelimit_reset: Option<String>,
}

/// Which field asked for the pause (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PauseSource {
    /// `Retry-After` on a 429 or 503.
    RetryAfter,
    /// A `RateLimit` field (IETF or older) with nothing remaining.
    RateLimit,
    /// A 429 that named no time: a second.
    Throttled,
    /// An operator (`courier providers pause`).
    Manual,
}

impl PauseSource {
    pub const ALL: [PauseSource; 4] = [
        Self::RetryAfter,
        Self::RateLimit,
        Self::Throttled,
        Self::Manual,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RetryAfter => "retry_after",
            Self::RateLimit => "ratelimit",
            Self::Throttled => "throttled",
            Self::Manual => "manual",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// A pause a provider asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pause {
    pub length: Duration,
    pub source: PauseSource,
}

/// How long a bare 429 (no time named anywhere) pauses the provider.
pub const BARE_THROTTLE_PAUSE: Duration = Duration::from_secs(1);

/// The pause an answer asks for, if any. `cap` bounds it (the provider's
/// `retry.max_retry_after`).
pub fn pause(status: u16, hints: &Hints, now: DateTime<Utc>, cap: Duration) -> Option<Pause> {
    let throttled = status == 429 || status == 503;
    let retry_after = hints
        .retry_after
        .as_deref()
        .and_then(|v| crate::retry::parse_retry_after(v, now));
    let asked = match (throttled, retry_after) {
        (true, Some(length)) => Some(Pause {
            length,
            source: PauseSource::RetryAfter,
        }),
        _ => exhausted(hints, now).map(|length| Pause {
            length,
            source: PauseSource::RateLimit,
        }),
    };
    let asked = asked.or((status == 429).then_some(Pause {
        length: BARE_THROTTLE_PAUSE,
        source: PauseSource::Throttled,
    }))?;
    Some(Pause {
        length: asked.length.min(cap),
        ..asked
    })
}

/// When a `RateLimit` field says nothing is left: how long until it resets.
fn exhausted(hints: &Hints, now: DateTime<Utc>) -> Option<Duration> {
    if let Some(field) = hints.ratelimit.as_deref() {
        // One or more `"policy";r=…;t=…` items; the first with r=0 counts.
        for item in field.split(',') {
            let mut remaining = None;
            let mut reset = None;
            for param in item.split(';').skip(1) {
                match param.trim().split_once('=') {
                    Some(("r", v)) => remaining = v.trim().parse::<u64>().ok(),
                    Some(("t", v)) => reset = v.trim().parse::<u64>().ok(),
                    _ => {}
                }
            }
            if remaining == Some(0) {
                return Some(Duration::from_secs(reset.unwrap_or(1)));
            }
        }
    }
    for (remaining, reset) in [
        (&hints.ratelimit_remaining, &hints.ratelimit_reset),
        (&hints.x_ratelimit_remaining, &hints.x_ratelimit_reset),
    ] {
        let Some(remaining) = remaining
            .as_deref()
            .and_then(|v| v.trim().parse::<f64>().ok())
        else {
            continue;
        };
        if remaining > 0.0 {
            continue;
        }
        let reset = reset
            .as_deref()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
            .unwrap_or(1.0);
        let secs = if reset > 1e9 {
            // A Unix time (GitHub's form): the reset is that far away.
            (reset - now.timestamp() as f64).max(0.0)
        } else {
            reset
        };
        return Some(Duration::from_secs_f64(secs.min(30.0 * 86_400.0)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CAP: Duration = Duration::from_secs(3600);

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-02T10:00:00Z")
            .expect("valid")
            .with_timezone(&Utc)
    }

    fn hints(f: impl FnOnce(&mut Hints)) -> Hints {
        let mut h = Hints::default();
        f(&mut h);
        h
    }

    #[test]
    fn retry_after_on_429_and_503_pauses() {
        let h = hints(|h| h.retry_after = Some("30".into()));
        for status in [429, 503] {
            assert_eq!(
                pause(status, &h, now(), CAP),
                Some(Pause {
                    length: Duration::from_secs(30),
                    source: PauseSource::RetryAfter
                })
            );
        }
        let date = hints(|h| h.retry_after = Some("Wed, 02 Dec 2026 10:01:00 GMT".into()));
        assert_eq!(
            pause(429, &date, now(), CAP).map(|p| p.length),
            Some(Duration::from_secs(60))
        );
        assert_eq!(pause(500, &h, now(), CAP), None, "a 500 asks nothing");
    }

    #[test]
    fn the_ietf_ratelimit_field_pauses_when_nothing_remains() {
        let h = hints(|h| h.ratelimit = Some(r#""default";r=0;t=30"#.into()));
        assert_eq!(
            pause(200, &h, now(), CAP),
            Some(Pause {
                length: Duration::from_secs(30),
                source: PauseSource::RateLimit
            })
        );
        let left = hints(|h| h.ratelimit = Some(r#""default";r=5;t=30"#.into()));
        assert_eq!(pause(200, &left, now(), CAP), None);
        let two = hints(|h| h.ratelimit = Some(r#""burst";r=3;t=1, "day";r=0;t=600"#.into()));
        assert_eq!(
            pause(200, &two, now(), CAP).map(|p| p.length),
            Some(Duration::from_secs(600))
        );
    }

    #[test]
    fn the_older_fields_pause_with_a_delta_or_a_unix_time() {
        let delta = hints(|h| {
            h.ratelimit_remaining = Some("0".into());
            h.ratelimit_reset = Some("12".into());
        });
        assert_eq!(
            pause(200, &delta, now(), CAP).map(|p| p.length),
            Some(Duration::from_secs(12))
        );
        let unix = hints(|h| {
            h.x_ratelimit_remaining = Some("0".into());
            h.x_ratelimit_reset = Some((now().timestamp() + 90).to_string());
        });
        assert_eq!(
            pause(403, &unix, now(), CAP).map(|p| p.length),
            Some(Duration::from_secs(90))
        );
    }

    #[test]
    fn a_bare_429_pauses_a_second_and_everything_is_capped() {
        assert_eq!(
            pause(429, &Hints::default(), now(), CAP),
            Some(Pause {
                length: BARE_THROTTLE_PAUSE,
                source: PauseSource::Throttled
            })
        );
        let long = hints(|h| h.retry_after = Some("999999".into()));
        assert_eq!(
            pause(429, &long, now(), Duration::from_secs(60)).map(|p| p.length),
            Some(Duration::from_secs(60))
        );
    }

    proptest! {
        #[test]
        fn never_panics_and_never_exceeds_the_cap(
            status in 100u16..600, a in "\\PC{0,40}", b in "\\PC{0,40}", c in "\\PC{0,40}", d in "\\PC{0,20}",
        ) {
            let h = Hints {
                retry_after: Some(a),
                ratelimit: Some(b),
                ratelimit_remaining: Some(d.clone()),
                ratelimit_reset: Some(c.clone()),
                x_ratelimit_remaining: Some(d),
                x_ratelimit_reset: Some(c),
            };
            if let Some(p) = pause(status, &h, now(), CAP) {
                prop_assert!(p.length <= CAP);
            }
        }
    }
}
