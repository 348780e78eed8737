//! Retrying infrastructure operations (database, broker) until they succeed
//! or the worker gives up on them.
//!
//! Owns the one retry helper for I/O the pipeline cannot do without. Job
//! retries are not this: they go through the delay queues. It must never
//! retry forever past a cancellation.

use backon::{BackoffBuilder, ExponentialBuilder};
use courier_telemetry::Metrics;
use std::fmt::Display;
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The operation was given up because `abandon` fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("abandoned")]
pub struct Abandoned;

/// The operations the pipeline persists in; each failure is counted under
/// its label (`courier_io_failures_total{operation=…}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Io {
    ReadProgress,
    PublishRetry,
    PublishDeadLetter,
    RecordOutcomes,
}

impl Io {
    pub const ALL: [Io; 4] = [
        Io::ReadProgress,
        Io::PublishRetry,
        Io::PublishDeadLetter,
        Io::RecordOutcomes,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Io::ReadProgress => "read_progress",
            Io::PublishRetry => "publish_retry",
            Io::PublishDeadLetter => "publish_dead_letter",
            Io::RecordOutcomes => "record_outcomes",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Io::ReadProgress => "reading job progress",
            Io::PublishRetry => "publishing a retry",
            Io::PublishDeadLetter => "publishing a dead letter",
            Io::RecordOutcomes => "recording outcomes",
        }
    }
}

/// Runs `op` until it succeeds, backing off 50 ms → 10 s between failures,
/// logging and counting each one, until `abandon` fires.
pub async fn persist<T, E: Display, F: Future<Output = Result<T, E>>>(
    io: Io,
    abandon: &CancellationToken,
    metrics: &Metrics,
    mut op: impl FnMut() -> F,
) -> Result<T, Abandoned> {
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build();
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                metrics.io_failed(io.label());
                let what = io.describe();
                let delay = delays.next().unwrap_or(Duration::from_secs(10));
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "{what} failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = abandon.cancelled() => return Err(Abandoned),
                }
            }
        }
    }
}
