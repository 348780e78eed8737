//! Job states and the rule that decides whether a delivery is new work.
//!
//! Owns the state vocabulary stored in PostgreSQL and [`verdict`], the
//! idempotency rule: a delivery whose attempt is already recorded, or whose
//! job is terminal, is a duplicate and must not reach the provider again.

/// A job's current state, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Failed at least once; a retry is waiting in the delay queues.
    Retrying,
    Succeeded,
    Dead,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retrying => "retrying",
            Self::Succeeded => "succeeded",
            Self::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Retrying, Self::Succeeded, Self::Dead]
            .into_iter()
            .find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        match self {
            Self::Succeeded | Self::Dead => true,
            Self::Retrying => false,
        }
    }
}

/// What the store knows of a job when a delivery for it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredProgress {
    pub state: JobState,
    /// Attempts recorded so far.
    pub attempts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryVerdict {
    /// New work: call the provider.
    Process,
    /// Already done or superseded: acknowledge without calling anyone.
    Duplicate,
}

/// Decides whether a delivery carrying `delivery_attempts` (attempts made
/// before it was published: 0 for a fresh job) is new work.
pub fn verdict(stored: Option<StoredProgress>, delivery_attempts: u32) -> DeliveryVerdict {
    match stored {
        None => DeliveryVerdict::Process,
        Some(p) if p.state.is_terminal() => DeliveryVerdict::Duplicate,
        Some(p) if p.attempts > delivery_attempts => DeliveryVerdict::Duplicate,
        Some(_) => DeliveryVerdict::Process,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_jobs_are_never_processed_again() {
        for state in [JobState::Succeeded, JobState::Dead] {
            for attempts in [0, 1, 5] {
                let p = StoredProgress { state, attempts };
                assert_eq!(verdict(Some(p), 99), DeliveryVerdict::Duplicate);
            }
        }
    }

    #[test]
    fn a_stale_copy_of_an_earlier_attempt_is_a_duplicate() {
        let p = StoredProgress {
            state: JobState::Retrying,
            attempts: 2,
        };
        assert_eq!(verdict(Some(p), 0), DeliveryVerdict::Duplicate);
        assert_eq!(verdict(Some(p), 1), DeliveryVerdict::Duplicate);
        assert_eq!(verdict(Some(p), 2), DeliveryVerdict::Process);
        assert_eq!(verdict(None, 0), DeliveryVerdict::Process);
    }

    #[test]
    fn states_round_trip() {
        for s in [JobState::Retrying, JobState::Succeeded, JobState::Dead] {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
        }
    }
}
