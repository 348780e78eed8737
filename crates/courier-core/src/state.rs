//! Job states and the rule that decides whether a delivery is new work.
//!
//! Owns the vocabularies stored in PostgreSQL as text (a job's state, a dead
//! letter's status, an operator action's kind; the dead reason is in
//! `retry.rs`), each read back through `TryFrom<String>` so that a row
//! holding anything else is an error, never skipped; and [`verdict`], the
//! idempotency rule: a delivery whose attempt is already recorded, or whose
//! job is terminal, is a duplicate and must not reach the provider again.
//! It must never let a delivery's own headers decide a job's attempt count,
//! retry budget or generation: those come from what Courier recorded.

use crate::envelope::Fingerprint;

/// A stored word that is not one of its vocabulary's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a {what}")]
pub struct UnknownName {
    pub what: &'static str,
    pub value: String,
}

/// `Display` and `TryFrom<String>` (for reading rows) from a vocabulary's
/// `as_str` and `parse`.
macro_rules! stored_as_text {
    ($ty:ty, $what:literal) => {
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl TryFrom<String> for $ty {
            type Error = $crate::state::UnknownName;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value).ok_or($crate::state::UnknownName { what: $what, value })
            }
        }
    };
}
pub(crate) use stored_as_text;

/// A job's current state, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

    pub const ALL: [JobState; 4] = [Self::Queued, Self::Retrying, Self::Succeeded, Self::Dead];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        match self {
            Self::Succeeded | Self::Dead => true,
            Self::Queued | Self::Retrying => false,
        }
    }
}

stored_as_text!(JobState, "job state");

/// Where a dead letter stands with operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum LetterStatus {
    /// Waiting for an operator.
    Pending,
    /// Claimed by a requeue that has not finished republishing it.
    Requeueing,
    Requeued,
    /// Discarded by an operator: a recorded decision, the row stays.
    Purged,
}

impl LetterStatus {
    pub const ALL: [LetterStatus; 4] = [
        Self::Pending,
        Self::Requeueing,
        Self::Requeued,
        Self::Purged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Requeueing => "requeueing",
            Self::Requeued => "requeued",
            Self::Purged => "purged",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

stored_as_text!(LetterStatus, "dead-letter status");

/// What an operator did, as the audit log records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ActionKind {
    Requeue,
    Purge,
    /// Held a provider for every worker.
    Pause,
    /// Ended such a hold.
    Resume,
    /// Enqueued recorded webhook events again.
    Replay,
}

impl ActionKind {
    pub const ALL: [ActionKind; 5] = [
        Self::Requeue,
        Self::Purge,
        Self::Pause,
        Self::Resume,
        Self::Replay,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requeue => "requeue",
            Self::Purge => "purge",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Replay => "replay",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

stored_as_text!(ActionKind, "operator action");

/// What the store knows of a job when a delivery for it arrives. This, not
/// anything a delivery carries, is the source of a job's attempt count,
/// retry budget and generation: headers can be set by any publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredProgress {
    pub state: JobState,
    /// Attempts recorded so far.
    pub attempts: u32,
    /// Attempts made before the current run (an operator's requeue starts a
    /// new run with a fresh retry budget).
    pub run_base: u32,
    /// How often an operator has requeued the job.
    pub generation: u32,
    /// The content the job was recorded with (absent for rows written
    /// before fingerprints were kept).
    pub fingerprint: Option<Fingerprint>,
    /// Throttled attempts in the current run (they spend no retry budget).
    pub throttled_attempts: u32,
    /// Time the current run has waited on throttles.
    pub throttled_for: std::time::Duration,
}

/// What a delivery's headers claim about the job's progress when it was
/// published. Untrusted: used only to recognise stale copies, never to give
/// a job more or fewer attempts than PostgreSQL says it has had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeliveredProgress {
    /// Attempts made before it was published: 0 for a fresh job.
    pub attempts: u32,
    /// Requeues before it was published.
    pub generation: u32,
    /// It came back through Courier's retry exchange (not the jobs exchange
    /// publishers write to).
    pub via_retry: bool,
}

/// What to do with a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryVerdict {
    /// New work: call the provider as attempt `attempt`.
    Process(Admission),
    /// Already done or superseded: acknowledge without calling anyone.
    Duplicate,
    /// A different job under an id already recorded: refuse it (the
    /// recorded job is left alone).
    Conflict,
}

/// The attempt a delivery runs as, all of it from the trusted side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// This attempt's number, 1-based, over the job's whole life.
    pub attempt: u32,
    /// Attempts before the current run: the retry budget counts from here.
    pub run_base: u32,
    pub generation: u32,
    /// Throttled attempts so far in the current run.
    pub throttled_attempts: u32,
    /// Time the current run has waited on throttles so far.
    pub throttled_for: std::time::Duration,
}

impl Admission {
    /// What the current run has spent of its budget, this attempt included
    /// (throttled attempts do not count).
    pub fn spent(&self) -> crate::retry::Spent {
        crate::retry::Spent {
            attempts: self
                .attempt
                .saturating_sub(self.run_base)
                .saturating_sub(self.throttled_attempts),
            throttled_for: self.throttled_for,
        }
    }
}

/// Decides whether a delivery is new work, and as which attempt.
///
/// - A copy from before an operator's requeue (its generation is below the
///   recorded one) is a duplicate, whatever its body.
/// - A different job under a recorded id is a conflict. (An operator's
///   requeue that patches a payload records the new fingerprint before it
///   publishes the patched job.)
/// - A terminal job is done: a duplicate.
/// - Through the jobs exchange (where publishers write) come only a job's
///   first delivery and an operator's requeue: for a job already running
///   (`retrying`) it is a duplicate, whatever attempts it claims. Only the
///   retry exchange continues a running job.
/// - A retry copy of an earlier attempt is a duplicate; otherwise it runs as
///   the attempt after the recorded ones, or one later: Courier publishes a
///   retry before committing the attempt that caused it, and that commit
///   may not have landed yet (PostgreSQL was slow). Never further.
pub fn verdict(
    stored: Option<StoredProgress>,
    delivered: DeliveredProgress,
    fingerprint: &Fingerprint,
) -> DeliveryVerdict {
    let ahead = u32::from(delivered.via_retry);
    let Some(p) = stored else {
        return DeliveryVerdict::Process(Admission {
            attempt: delivered.attempts.min(ahead) + 1,
            run_base: 0,
            generation: 0,
            throttled_attempts: 0,
            throttled_for: std::time::Duration::ZERO,
        });
    };
    if p.generation > delivered.generation {
        return DeliveryVerdict::Duplicate;
    }
    if p.fingerprint.is_some_and(|f| f != *fingerprint) {
        return DeliveryVerdict::Conflict;
    }
    if p.state.is_terminal() {
        return DeliveryVerdict::Duplicate;
    }
    let runs = match p.state {
        JobState::Queued => true,
        JobState::Retrying => delivered.via_retry && delivered.attempts >= p.attempts,
        JobState::Succeeded | JobState::Dead => false,
    };
    if !runs {
        return DeliveryVerdict::Duplicate;
    }
    DeliveryVerdict::Process(Admission {
        attempt: delivered.attempts.min(p.attempts + ahead).max(p.attempts) + 1,
        run_base: p.run_base,
        generation: p.generation,
        throttled_attempts: p.throttled_attempts,
        throttled_for: p.throttled_for,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The word stored, the word in JSON and the word read back are one.
    #[test]
    fn every_stored_vocabulary_reads_back_what_it_writes_and_refuses_the_rest() {
        fn check<T>(all: &[T], as_str: fn(&T) -> &'static str)
        where
            T: serde::Serialize
                + serde::de::DeserializeOwned
                + TryFrom<String>
                + PartialEq
                + std::fmt::Debug
                + std::fmt::Display,
        {
            for v in all {
                let word = as_str(v);
                assert_eq!(
                    serde_json::to_value(v).expect("json"),
                    serde_json::json!(word)
                );
                assert_eq!(
                    serde_json::from_value::<T>(serde_json::json!(word))
                        .ok()
                        .as_ref(),
                    Some(v)
                );
                assert_eq!(T::try_from(word.to_owned()).ok().as_ref(), Some(v));
                assert_eq!(v.to_string(), word);
            }
            assert!(T::try_from("Pending ".to_owned()).is_err());
            assert!(serde_json::from_value::<T>(serde_json::json!("permanet")).is_err());
        }
        check(&JobState::ALL, |v| v.as_str());
        check(&LetterStatus::ALL, |v| v.as_str());
        check(&ActionKind::ALL, |v| v.as_str());
        check(&crate::DeadReason::ALL, |v| v.as_str());
    }

    const BODY: Fingerprint = [1; 32];
    const OTHER: Fingerprint = [2; 32];

    fn delivered(attempts: u32, generation: u32) -> DeliveredProgress {
        DeliveredProgress {
            attempts,
            generation,
            via_retry: false,
        }
    }

    fn retried(attempts: u32) -> DeliveredProgress {
        DeliveredProgress {
            via_retry: true,
            ..delivered(attempts, 0)
        }
    }

    fn stored(state: JobState, attempts: u32, generation: u32) -> Option<StoredProgress> {
        Some(StoredProgress {
            state,
            attempts,
            run_base: 0,
            generation,
            fingerprint: Some(BODY),
            throttled_attempts: 0,
            throttled_for: std::time::Duration::ZERO,
        })
    }

    fn attempt(v: DeliveryVerdict) -> u32 {
        match v {
            DeliveryVerdict::Process(a) => a.attempt,
            other => panic!("expected Process, got {other:?}"),
        }
    }

    #[test]
    fn terminal_jobs_are_never_processed_again() {
        for state in [JobState::Succeeded, JobState::Dead] {
            for attempts in [0, 1, 5] {
                let v = verdict(stored(state, attempts, 0), delivered(99, 9), &BODY);
                assert_eq!(v, DeliveryVerdict::Duplicate);
            }
        }
    }

    #[test]
    fn a_stale_copy_of_an_earlier_attempt_is_a_duplicate() {
        let p = stored(JobState::Retrying, 2, 0);
        assert_eq!(verdict(p, retried(0), &BODY), DeliveryVerdict::Duplicate);
        assert_eq!(verdict(p, retried(1), &BODY), DeliveryVerdict::Duplicate);
        assert_eq!(attempt(verdict(p, retried(2), &BODY)), 3);
        assert_eq!(attempt(verdict(None, delivered(0, 0), &BODY)), 1);
    }

    #[test]
    fn the_jobs_exchange_starts_a_job_or_a_requeued_run_never_continues_one() {
        for claimed in [0, 2, 3, 99] {
            let v = verdict(
                stored(JobState::Retrying, 2, 0),
                delivered(claimed, 0),
                &BODY,
            );
            assert_eq!(v, DeliveryVerdict::Duplicate, "claiming {claimed}");
        }
    }

    #[test]
    fn a_requeued_job_runs_but_copies_of_its_old_generation_do_not() {
        let mut p = stored(JobState::Queued, 3, 1);
        if let Some(p) = p.as_mut() {
            p.run_base = 3;
        }
        let v = verdict(p, delivered(3, 1), &BODY);
        assert_eq!(
            v,
            DeliveryVerdict::Process(Admission {
                attempt: 4,
                run_base: 3,
                generation: 1,
                throttled_attempts: 0,
                throttled_for: std::time::Duration::ZERO
            })
        );
        assert_eq!(
            verdict(p, delivered(3, 0), &BODY),
            DeliveryVerdict::Duplicate
        );
        assert_eq!(
            verdict(p, delivered(3, 0), &OTHER),
            DeliveryVerdict::Duplicate,
            "an old generation's body may differ"
        );
        assert_eq!(
            verdict(p, delivered(3, 9), &OTHER),
            DeliveryVerdict::Conflict,
            "a queued job is not anyone's to take: the requeue recorded its body"
        );
    }

    #[test]
    fn a_different_job_under_a_recorded_id_is_a_conflict() {
        for state in [
            JobState::Queued,
            JobState::Retrying,
            JobState::Succeeded,
            JobState::Dead,
        ] {
            assert_eq!(
                verdict(stored(state, 1, 0), delivered(1, 0), &OTHER),
                DeliveryVerdict::Conflict
            );
        }
        let unknown = Some(StoredProgress {
            fingerprint: None,
            ..stored(JobState::Retrying, 1, 0).expect("some")
        });
        assert!(matches!(
            verdict(unknown, retried(1), &OTHER),
            DeliveryVerdict::Process(_)
        ));
    }

    #[test]
    fn forged_progress_headers_change_nothing_the_store_knows() {
        // A fresh job claiming 50 attempts and generation 7 runs as attempt
        // 1, with no run base and generation 0.
        assert_eq!(
            verdict(None, delivered(50, 7), &BODY),
            DeliveryVerdict::Process(Admission {
                attempt: 1,
                run_base: 0,
                generation: 0,
                throttled_attempts: 0,
                throttled_for: std::time::Duration::ZERO
            })
        );
        assert_eq!(
            verdict(stored(JobState::Retrying, 1, 0), delivered(66, 3), &BODY),
            DeliveryVerdict::Duplicate,
            "a replayed copy cannot spend a running job's attempts"
        );
        assert_eq!(
            attempt(verdict(
                stored(JobState::Queued, 4, 0),
                delivered(66, 3),
                &BODY
            )),
            5
        );
    }

    #[test]
    fn a_retry_may_be_one_attempt_ahead_of_a_commit_still_on_its_way() {
        assert_eq!(
            attempt(verdict(stored(JobState::Retrying, 1, 0), retried(2), &BODY)),
            3
        );
        assert_eq!(attempt(verdict(None, retried(1), &BODY)), 2);
        assert_eq!(
            attempt(verdict(
                stored(JobState::Retrying, 1, 0),
                retried(40),
                &BODY
            )),
            3
        );
    }

    proptest! {
        #[test]
        fn no_header_moves_a_job_more_than_one_attempt_ahead_of_its_record(
            recorded in 0u32..1000, run_base in 0u32..1000, generation in 0u32..10,
            claimed in any::<u32>(), claimed_generation in any::<u32>(), via_retry: bool,
            queued: bool,
        ) {
            let p = StoredProgress {
                state: if queued { JobState::Queued } else { JobState::Retrying },
                attempts: recorded,
                run_base: run_base.min(recorded),
                generation,
                fingerprint: Some(BODY),
                throttled_attempts: 0,
                throttled_for: std::time::Duration::ZERO,
            };
            let d = DeliveredProgress { attempts: claimed, generation: claimed_generation, via_retry };
            let v = verdict(Some(p), d, &BODY);
            if !queued && !via_retry {
                prop_assert_eq!(v, DeliveryVerdict::Duplicate);
            }
            if let DeliveryVerdict::Process(a) = v {
                prop_assert!(a.attempt == recorded + 1 || (via_retry && a.attempt == recorded + 2));
                prop_assert_eq!(a.run_base, p.run_base);
                prop_assert_eq!(a.generation, generation);
            }
        }
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
