//! Outcome classification: what one provider call's result means.
//!
//! Owns the single decision "success, retry, throttled or permanent" for every
//! call result. Decided by one exhaustive `match` (no wildcard arm), so a new
//! kind of result forces a decision here. It must never look at response
//! bodies or perform I/O; the HTTP edge reports a [`CallResult`] and this
//! module judges it.

use std::collections::BTreeSet;
use std::time::Duration;

/// What happened on the wire, as reported by the HTTP edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallResult {
    /// The provider answered with a status. `retry_after` is its parsed
    /// `Retry-After` header, if any.
    Response {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// No complete answer within the provider's timeout.
    Timeout,
    /// Could not connect (refused, DNS, TLS handshake).
    Connect,
    /// The connection failed mid-request or the response was malformed.
    Transport,
}

/// What the result means for the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classification {
    Success,
    /// Worth trying again after backoff.
    Retryable,
    /// The provider asked us to slow down; retry no sooner than it asked.
    Throttled {
        retry_after: Option<Duration>,
    },
    /// Trying again cannot help.
    Permanent,
}

/// Per-provider exceptions to the default status rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusOverrides {
    pub retryable: BTreeSet<u16>,
    pub permanent: BTreeSet<u16>,
}

/// Classifies a call result. Defaults: 2xx success; timeouts, connection and
/// transport errors, 408, 425, 429 and 5xx retryable (429, and 503 carrying
/// `Retry-After`, as throttles); every other status permanent. Overrides win.
pub fn classify(result: &CallResult, overrides: &StatusOverrides) -> Classification {
    match *result {
        CallResult::Timeout | CallResult::Connect | CallResult::Transport => {
            Classification::Retryable
        }
        CallResult::Response {
            status,
            retry_after,
        } => {
            if overrides.permanent.contains(&status) {
                return Classification::Permanent;
            }
            if overrides.retryable.contains(&status) {
                return if retry_after.is_some() {
                    Classification::Throttled { retry_after }
                } else {
                    Classification::Retryable
                };
            }
            match status {
                200..=299 => Classification::Success,
                429 => Classification::Throttled { retry_after },
                503 if retry_after.is_some() => Classification::Throttled { retry_after },
                408 | 425 | 500..=599 => Classification::Retryable,
                // 1xx cannot be final, redirects are not followed (a provider
                // that moved is a config error), and the rest are refusals.
                0..=199 | 300..=407 | 409..=424 | 426..=428 | 430..=499 | 600..=u16::MAX => {
                    Classification::Permanent
                }
            }
        }
    }
}

/// The error class recorded with each attempt and used as a metric label: a
/// small, fixed vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptClass {
    Success,
    Throttled,
    ServerError,
    ClientError,
    UnexpectedStatus,
    Timeout,
    Connect,
    Transport,
}

impl AttemptClass {
    pub const ALL: [AttemptClass; 8] = [
        Self::Success,
        Self::Throttled,
        Self::ServerError,
        Self::ClientError,
        Self::UnexpectedStatus,
        Self::Timeout,
        Self::Connect,
        Self::Transport,
    ];

    pub fn of(result: &CallResult) -> Self {
        match *result {
            CallResult::Timeout => Self::Timeout,
            CallResult::Connect => Self::Connect,
            CallResult::Transport => Self::Transport,
            CallResult::Response { status, .. } => match status {
                200..=299 => Self::Success,
                429 => Self::Throttled,
                400..=428 | 430..=499 => Self::ClientError,
                500..=599 => Self::ServerError,
                0..=199 | 300..=399 | 600..=u16::MAX => Self::UnexpectedStatus,
            },
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Throttled => "throttled",
            Self::ServerError => "server_error",
            Self::ClientError => "client_error",
            Self::UnexpectedStatus => "unexpected_status",
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::Transport => "transport",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn status(s: u16) -> Classification {
        classify(
            &CallResult::Response {
                status: s,
                retry_after: None,
            },
            &StatusOverrides::default(),
        )
    }

    #[test]
    fn defaults_follow_the_contract() {
        assert_eq!(status(200), Classification::Success);
        assert_eq!(status(204), Classification::Success);
        for s in [408, 425, 500, 502, 503, 504] {
            assert_eq!(status(s), Classification::Retryable, "{s}");
        }
        assert_eq!(status(429), Classification::Throttled { retry_after: None });
        for s in [301, 400, 401, 403, 404, 409, 422] {
            assert_eq!(status(s), Classification::Permanent, "{s}");
        }
        let ov = StatusOverrides::default();
        assert_eq!(
            classify(&CallResult::Timeout, &ov),
            Classification::Retryable
        );
        assert_eq!(
            classify(&CallResult::Connect, &ov),
            Classification::Retryable
        );
        assert_eq!(
            classify(&CallResult::Transport, &ov),
            Classification::Retryable
        );
    }

    #[test]
    fn a_503_with_retry_after_is_a_throttle() {
        let ra = Some(Duration::from_secs(7));
        let r = CallResult::Response {
            status: 503,
            retry_after: ra,
        };
        assert_eq!(
            classify(&r, &StatusOverrides::default()),
            Classification::Throttled { retry_after: ra }
        );
    }

    #[test]
    fn overrides_win() {
        let ov = StatusOverrides {
            retryable: [409].into(),
            permanent: [503].into(),
        };
        let r = |s| CallResult::Response {
            status: s,
            retry_after: None,
        };
        assert_eq!(classify(&r(409), &ov), Classification::Retryable);
        assert_eq!(classify(&r(503), &ov), Classification::Permanent);
    }

    proptest! {
        #[test]
        fn every_status_gets_exactly_the_documented_class(s in any::<u16>()) {
            let c = status(s);
            let expected = if (200..300).contains(&s) {
                Classification::Success
            } else if s == 429 {
                Classification::Throttled { retry_after: None }
            } else if s == 408 || s == 425 || (500..600).contains(&s) {
                Classification::Retryable
            } else {
                Classification::Permanent
            };
            prop_assert_eq!(c, expected);
        }

        #[test]
        fn attempt_class_agrees_with_classification(s in any::<u16>()) {
            let r = CallResult::Response { status: s, retry_after: None };
            let success = AttemptClass::of(&r) == AttemptClass::Success;
            prop_assert_eq!(success, classify(&r, &StatusOverrides::default()) == Classification::Success);
        }
    }
}
