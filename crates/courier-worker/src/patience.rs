//! Retrying infrastructure operations (database, broker) while retrying can
//! succeed.
//!
//! Owns the one retry helper for I/O the pipeline cannot do without. What
//! retrying can achieve is the edge crates' decision ([`Failure`], from
//! `StoreError::failure` and `AmqpError::failure`); this module only acts on
//! it: transient and setup failures are retried with backoff (a setup
//! failure waits for an operator, loudly), a refused input is handed back at
//! once so the caller can set it aside. Job retries are not this: they go
//! through the delay queues. It must never retry forever past a
//! cancellation, nor retry an input the edge refused.

use backon::{BackoffBuilder, ExponentialBuilder};
use courier_amqp::AmqpError;
use courier_core::Failure;
use courier_store::StoreError;
use courier_telemetry::Metrics;
use std::fmt::Display;
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The operation was given up because `abandon` fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("abandoned")]
pub struct Abandoned;

/// Why [`persist`] stopped without a result.
#[derive(Debug, thiserror::Error)]
pub enum Stop<E> {
    #[error("abandoned")]
    Abandoned,
    /// The edge refused this input for good: retrying cannot help.
    #[error("refused: {0}")]
    Refused(E),
}

impl<E> From<Abandoned> for Stop<E> {
    fn from(_: Abandoned) -> Self {
        Stop::Abandoned
    }
}

/// An error whose edge crate has classified it.
pub trait Classified: Display {
    fn failure(&self) -> Failure;
    /// The broker closed the channel or connection while this operation was
    /// in flight: transient for it, unless it keeps happening to it.
    fn is_broker_refusal(&self) -> bool {
        false
    }
}

impl Classified for StoreError {
    fn failure(&self) -> Failure {
        StoreError::failure(self)
    }
}

impl Classified for AmqpError {
    fn failure(&self) -> Failure {
        AmqpError::failure(self)
    }
    fn is_broker_refusal(&self) -> bool {
        AmqpError::is_broker_refusal(self)
    }
}

/// Broker refusals in a row after which a publish counts as refused for
/// this message: the broker refusing the same message that often is about
/// the message, not about whatever else shared the channel.
const MAX_BROKER_REFUSALS: u32 = 4;

/// The operations the pipeline persists in; each failure is counted under
/// its label (`courier_io_failures_total{operation=…}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Io {
    ReadProgress,
    PublishRetry,
    PublishDeadLetter,
    RecordOutcomes,
    LeaseSlots,
}

impl Io {
    pub const ALL: [Io; 5] = [
        Io::ReadProgress,
        Io::PublishRetry,
        Io::PublishDeadLetter,
        Io::RecordOutcomes,
        Io::LeaseSlots,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Io::ReadProgress => "read_progress",
            Io::PublishRetry => "publish_retry",
            Io::PublishDeadLetter => "publish_dead_letter",
            Io::RecordOutcomes => "record_outcomes",
            Io::LeaseSlots => "lease_slots",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Io::ReadProgress => "reading job progress",
            Io::PublishRetry => "publishing a retry",
            Io::PublishDeadLetter => "publishing a dead letter",
            Io::RecordOutcomes => "recording outcomes",
            Io::LeaseSlots => "leasing rate-limit slots",
        }
    }
}

/// Runs `op` until it succeeds, backing off 50 ms → 10 s between failures,
/// logging and counting each one, until `abandon` fires or the edge refuses
/// the input.
pub async fn persist<T, E: Classified, F: Future<Output = Result<T, E>>>(
    io: Io,
    abandon: &CancellationToken,
    metrics: &Metrics,
    mut op: impl FnMut() -> F,
) -> Result<T, Stop<E>> {
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build();
    let mut refusals = 0;
    loop {
        let e = match op().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        metrics.io_failed(io.label());
        let what = io.describe();
        refusals = if e.is_broker_refusal() {
            refusals + 1
        } else {
            0
        };
        let failure = match e.failure() {
            Failure::Transient if refusals >= MAX_BROKER_REFUSALS => Failure::Refused,
            other => other,
        };
        let delay = delays.next().unwrap_or(Duration::from_secs(10));
        match failure {
            Failure::Refused => {
                tracing::error!(error = %e, "{what} failed for good: this input is refused");
                return Err(Stop::Refused(e));
            }
            Failure::Transient => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "{what} failed; retrying");
            }
            Failure::Setup => {
                tracing::error!(error = %e, retry_in_ms = delay.as_millis() as u64, "{what} failed: the setup needs an operator; retrying");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = abandon.cancelled() => return Err(Stop::Abandoned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug)]
    struct Fails(Failure, bool);

    impl Display for Fails {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{:?}", self.0)
        }
    }

    impl Classified for Fails {
        fn failure(&self) -> Failure {
            self.0
        }
        fn is_broker_refusal(&self) -> bool {
            self.1
        }
    }

    fn metrics() -> Metrics {
        Metrics::new(&Default::default(), "test")
    }

    #[tokio::test]
    async fn a_refused_input_is_handed_back_at_once() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = persist(
            Io::RecordOutcomes,
            &CancellationToken::new(),
            &metrics(),
            || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(Fails(Failure::Refused, false)) }
            },
        )
        .await;
        assert!(matches!(result, Err(Stop::Refused(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let result = persist(
            Io::ReadProgress,
            &CancellationToken::new(),
            &metrics(),
            || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 5 {
                        Err(Fails(Failure::Transient, false))
                    } else {
                        Ok(n)
                    }
                }
            },
        )
        .await;
        assert_eq!(result.ok(), Some(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_publish_the_broker_keeps_refusing_is_refused_in_the_end() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = persist(
            Io::PublishRetry,
            &CancellationToken::new(),
            &metrics(),
            || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(Fails(Failure::Transient, true)) }
            },
        )
        .await;
        assert!(matches!(result, Err(Stop::Refused(_))));
        assert_eq!(calls.load(Ordering::SeqCst), MAX_BROKER_REFUSALS);
    }

    #[tokio::test(start_paused = true)]
    async fn setup_failures_wait_for_an_operator_until_abandoned() {
        let abandon = CancellationToken::new();
        let calls = AtomicU32::new(0);
        let stop = abandon.clone();
        let result: Result<(), _> = persist(Io::RecordOutcomes, &abandon, &metrics(), || {
            if calls.fetch_add(1, Ordering::SeqCst) == 20 {
                stop.cancel();
            }
            async { Err(Fails(Failure::Setup, false)) }
        })
        .await;
        assert!(matches!(result, Err(Stop::Abandoned)));
        assert!(calls.load(Ordering::SeqCst) > 20);
    }
}
