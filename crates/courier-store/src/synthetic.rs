//! Synthetic outcomes for benchmarks and tests: exactly what the worker
//! records for a job that died of a permanent 422 on its first attempt.
//!
//! Owns nothing but the construction of such records, so that recovery can be
//! measured and tested at scale without first running thousands of jobs to
//! their death. It must never be used by the pipeline itself.

use crate::outcome::{AttemptRow, DeadLetterRow, JobRow, Outcome};
use courier_core::envelope::{Job, JobEnvelope, KeptBody};
use courier_core::retry::DeadReason;
use courier_core::state::JobState;
use std::time::Duration;
use uuid::Uuid;

const ERROR: &str = "HTTP 422 Unprocessable Entity";

/// The outcome of `job` dying on its first attempt with a 422.
pub fn dead_on_first_attempt(job: &JobEnvelope) -> Outcome {
    let body = job.to_body();
    let fingerprint = Job::parse(&body, usize::MAX).map_or([0; 32], |j| j.fingerprint);
    let kept = KeptBody::of(&body, usize::MAX);
    Outcome::Attempted {
        job: JobRow {
            id: job.id,
            provider: job.provider.clone(),
            operation: job.operation.clone(),
            idempotency_key: job
                .idempotency_key
                .clone()
                .unwrap_or_else(|| job.id.to_string()),
            state: JobState::Dead,
            attempts: 1,
            last_status: Some(422),
            last_error_class: Some("client_error"),
            last_error: Some(ERROR.into()),
            created_at: job.created_at,
            next_attempt_at: None,
            fingerprint,
            throttled_attempts: 0,
            throttled_for: Duration::ZERO,
        },
        attempt: AttemptRow {
            job_id: job.id,
            attempt: 1,
            started_at: chrono::Utc::now(),
            duration: Duration::from_millis(3),
            http_status: Some(422),
            error_class: "client_error",
            error: Some(ERROR.into()),
            trace_id: None,
        },
        dead_letter: Some(DeadLetterRow {
            id: Uuid::now_v7(),
            job_id: Some(job.id),
            provider: Some(job.provider.clone()),
            operation: Some(job.operation.clone()),
            reason: DeadReason::Permanent,
            detail: format!("{ERROR} is not retryable"),
            attempts: 1,
            generation: 0,
            last_status: Some(422),
            last_error: Some(ERROR.into()),
            body: kept.bytes,
            body_size: kept.size,
            body_sha256: kept.sha256,
            message_id: Some(job.id.to_string()),
        }),
    }
}
