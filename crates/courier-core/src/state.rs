//! Job states and the rule that decides whether a delivery is new work.
//!
//! Owns the state vocabulary stored in PostgreSQL and [`verdict`], the
//! idempotency rule: a delivery whose attempt is already recorded, or whose
//! job is terminal, is a duplicate and must not reach the provider again.

/// A job's current state, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Sent back by an operator; a new run of attempts begins.
    Queued,
    /// Failed at least once; a retry is waiting in the delay queues.
    Retrying,
    Succeeded,
    Dead,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Retrying => "retrying",
            Self::Succeeded => "succeeded",
            Self::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Queued, Self::Retrying, Self::Succeeded, Self::Dead]
            .into_iter()
            .find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        match self {
            Self::Succeeded | Self::Dead => true,
            Self::Queued | Self::Retrying => false,
        }
    }
}

/// What the store knows of a job when a delivery for it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredProgress {
    pub state: JobState,
    /// Attempts recorded so far.
    pub attempts: u32,
    /// How often an operator has requeued the job.
    pub generation: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryVerdict {
    /// New work: call the provider.
    Process,
    /// Already done or superseded: acknowledge without calling anyone.
    Duplicate,
}

/// What a delivery says about the job's progress when it was published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeliveredProgress {
    /// Attempts made before it was published: 0 for a fresh job.
    pub attempts: u32,
    /// Requeues before it was published.
    pub generation: u32,
}

/// Decides whether a delivery is new work: not for a terminal job, not for a
/// copy from an earlier generation (e.g. a dead letter shovelled back by
/// hand after an operator's requeue), not for a copy of an earlier attempt.
pub fn verdict(stored: Option<StoredProgress>, delivered: DeliveredProgress) -> DeliveryVerdict {
    match stored {
        None => DeliveryVerdict::Process,
        Some(p) if p.state.is_terminal() => DeliveryVerdict::Duplicate,
        Some(p) if p.generation > delivered.generation => DeliveryVerdict::Duplicate,
        Some(p) if p.attempts > delivered.attempts => DeliveryVerdict::Duplicate,
        Some(_) => DeliveryVerdict::Process,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivered(attempts: u32, generation: u32) -> DeliveredProgress {
        DeliveredProgress {
            attempts,
            generation,
        }
    }

    fn stored(state: JobState, attempts: u32, generation: u32) -> Option<StoredProgress> {
        Some(StoredProgress {
            state,
            attempts,
            generation,
        })
    }

    #[test]
    fn terminal_jobs_are_never_processed_again() {
        for state in [JobState::Succeeded, JobState::Dead] {
            for attempts in [0, 1, 5] {
                let v = verdict(stored(state, attempts, 0), delivered(99, 9));
                assert_eq!(v, DeliveryVerdict::Duplicate);
            }
        }
    }

    #[test]
    fn a_stale_copy_of_an_earlier_attempt_is_a_duplicate() {
        let p = stored(JobState::Retrying, 2, 0);
        assert_eq!(verdict(p, delivered(0, 0)), DeliveryVerdict::Duplicate);
        assert_eq!(verdict(p, delivered(1, 0)), DeliveryVerdict::Duplicate);
        assert_eq!(verdict(p, delivered(2, 0)), DeliveryVerdict::Process);
        assert_eq!(verdict(None, delivered(0, 0)), DeliveryVerdict::Process);
    }

    #[test]
    fn a_requeued_job_runs_but_copies_of_its_old_generation_do_not() {
        let p = stored(JobState::Queued, 3, 1);
        assert_eq!(verdict(p, delivered(3, 1)), DeliveryVerdict::Process);
        assert_eq!(verdict(p, delivered(3, 0)), DeliveryVerdict::Duplicate);
    }

    #[test]
    fn states_round_trip() {
        for s in [
            JobState::Queued,
            JobState::Retrying,
            JobState::Succeeded,
            JobState::Dead,
        ] {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
        }
    }
}
