//! Every metric family a worker exports, and the rules for their labels.
//!
//! Owns the names (Prometheus conventions: `courier_…_total` counters,
//! `…_seconds` durations), the help texts, the buckets and the label sets.
//! Labels are bounded: provider and operation only take configured names
//! (anything else becomes `_unknown`, a job with no provider queue
//! `_unrouted`), outcomes and classes are closed vocabularies. It must never
//! put a job id, an idempotency key, a URL or a payload value in a label.
//!
//! The families are grouped the way a dashboard reads them: the job flow,
//! the provider calls, provider protection (throttles and Retry-After, the
//! rate limiter's waits, pauses by source, deferred jobs, the circuit
//! breaker's state and transitions), queues and backlog, and the worker's
//! own machinery.

use courier_core::config::ProviderConfig;
use courier_core::retry::DeadReason;
use courier_core::{AttemptClass, Classification};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The provider label of a delivery from the unrouted queue.
pub const UNROUTED: &str = "_unrouted";
/// The label of a provider or operation that is not configured.
pub const UNKNOWN: &str = "_unknown";
/// Retry counts at or above this share one `attempt` label value.
const ATTEMPT_LABEL_CAP: u32 = 10;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub provider: String,
    pub operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub provider: String,
    pub operation: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub provider: String,
    pub operation: String,
    /// [`AttemptClass`]: success, throttled, client_error, server_error,
    /// unexpected_status, timeout, connect, transport.
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    pub provider: String,
    pub operation: String,
    /// The attempt that failed and will be retried; `10+` beyond nine.
    pub attempt: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLabels {
    pub provider: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PauseLabels {
    pub provider: String,
    /// retry_after, ratelimit, throttled (a 429 naming no time) or manual.
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeferLabels {
    pub provider: String,
    /// Why a job was sent to wait in the delay queues without an attempt:
    /// paused, held (an operator), circuit_open, probing.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    pub provider: String,
    /// closed, open or half_open.
    pub to: &'static str,
}

/// Why a job waits in the delay queues instead of being called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeferReason {
    /// The provider asked for a pause (Retry-After, RateLimit fields).
    Paused,
    /// An operator paused the provider.
    Held,
    /// The circuit is open.
    CircuitOpen,
    /// The circuit is half-open and its probes are taken.
    Probing,
}

impl DeferReason {
    pub const ALL: [DeferReason; 4] = [Self::Paused, Self::Held, Self::CircuitOpen, Self::Probing];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Paused => "paused",
            Self::Held => "held",
            Self::CircuitOpen => "circuit_open",
            Self::Probing => "probing",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// work, retry (the delay cascade, all providers) or dead.
    pub kind: &'static str,
    pub provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// requeue or purge.
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IoLabels {
    pub operation: &'static str,
}

/// How a `basic.ack` frame settled deliveries.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AckLabels {
    /// `multiple` (a committed prefix of a channel) or `single`.
    pub kind: &'static str,
}

/// Who owns a provider, for alert rules to join on (`group_left`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OwnerLabels {
    provider: String,
    owner: String,
    runbook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
}

/// What one delivery came to, once its outcome is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    Succeeded,
    /// Failed and scheduled for another attempt.
    Retried,
    Dead,
    /// Broke the contract; dead-lettered without a call.
    Invalid,
    /// A redelivery of work already recorded; acknowledged without a call.
    Duplicate,
}

impl JobOutcome {
    pub const ALL: [JobOutcome; 5] = [
        Self::Succeeded,
        Self::Retried,
        Self::Dead,
        Self::Invalid,
        Self::Duplicate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Retried => "retried",
            Self::Dead => "dead",
            Self::Invalid => "invalid",
            Self::Duplicate => "duplicate",
        }
    }

    fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Dead | Self::Invalid)
    }
}

/// The worker's metric families and the registry that exports them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Configured provider → operation names: the only label values allowed.
    known: BTreeMap<String, BTreeSet<String>>,
    jobs_received: Family<ProviderLabels, Counter>,
    jobs_completed: Family<OutcomeLabels, Counter>,
    job_latency: Family<OutcomeLabels, Histogram>,
    jobs_in_flight: Family<ProviderLabels, Gauge>,
    retries_scheduled: Family<RetryLabels, Counter>,
    dead_letters: Family<DeadLabels, Counter>,
    provider_requests: Family<RequestLabels, Counter>,
    provider_request_duration: Family<OperationLabels, Histogram>,
    provider_throttles: Family<OperationLabels, Counter>,
    provider_retry_after: Family<ProviderLabels, Histogram>,
    limiter_wait: Family<ProviderLabels, Histogram>,
    provider_pauses: Family<PauseLabels, Counter>,
    jobs_deferred: Family<DeferLabels, Counter>,
    circuit_state: Family<ProviderLabels, Gauge>,
    provider_held: Family<ProviderLabels, Gauge>,
    circuit_transitions: Family<TransitionLabels, Counter>,
    queue_messages: Family<QueueLabels, Gauge>,
    dead_letters_pending: Family<ProviderLabels, Gauge>,
    operator_letters: Family<ActionLabels, Gauge>,
    outcome_batch_size: Histogram,
    outcome_commit_duration: Histogram,
    io_failures: Family<IoLabels, Counter>,
    broker_acks: Family<AckLabels, Counter>,
    broker_reconnects: Counter,
    broker_unreadable: Counter,
    database_connections: Counter,
    /// `courier ingest`'s families (empty in a worker).
    pub ingest: IngestMetrics,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn request_buckets() -> Histogram {
    // 1 ms … 33 s
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

fn latency_buckets() -> Histogram {
    // 5 ms … 5.8 h: a job's life includes its retry delays.
    Histogram::new(exponential_buckets(0.005, 2.0, 23))
}

fn limiter_buckets() -> Histogram {
    // 1 ms … 65 s
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

fn retry_after_buckets() -> Histogram {
    Histogram::new([1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0])
}

impl Metrics {
    /// The families for a worker running `providers`. `commit` is the git
    /// commit the binary was built from (`unknown` when not known).
    pub fn new(providers: &BTreeMap<String, ProviderConfig>, commit: &'static str) -> Metrics {
        let known = providers
            .iter()
            .map(|(name, p)| (name.clone(), p.operations.keys().cloned().collect()))
            .collect();
        let mut registry = Registry::default();
        let jobs_received = Family::default();
        registry.register(
            "courier_jobs_received",
            "Deliveries taken from a work queue (a retried job is received again)",
            jobs_received.clone(),
        );
        let jobs_completed = Family::default();
        registry.register(
            "courier_jobs_completed",
            "Deliveries whose outcome was committed, by outcome: succeeded, retried, dead, invalid, duplicate",
            jobs_completed.clone(),
        );
        let job_latency: HistogramFamily<OutcomeLabels> =
            Family::new_with_constructor(latency_buckets);
        registry.register(
            "courier_job_latency_seconds",
            "End-to-end time from a job's created_at to its terminal outcome being committed (sync lag)",
            job_latency.clone(),
        );
        let jobs_in_flight = Family::default();
        registry.register(
            "courier_jobs_in_flight",
            "Deliveries being processed now",
            jobs_in_flight.clone(),
        );
        let retries_scheduled = Family::default();
        registry.register(
            "courier_retries_scheduled",
            "Retries published to the delay queues, by the attempt that failed",
            retries_scheduled.clone(),
        );
        let dead_letters = Family::default();
        registry.register(
            "courier_dead_letters_created",
            "Dead letters recorded, by reason",
            dead_letters.clone(),
        );
        let provider_requests = Family::default();
        registry.register(
            "courier_provider_requests",
            "Provider HTTP requests by result class",
            provider_requests.clone(),
        );
        let provider_request_duration: HistogramFamily<OperationLabels> =
            Family::new_with_constructor(request_buckets);
        registry.register(
            "courier_provider_request_duration_seconds",
            "Provider HTTP request duration, response body included",
            provider_request_duration.clone(),
        );
        let provider_throttles = Family::default();
        registry.register(
            "courier_provider_throttles",
            "Responses in which the provider throttled us (429, or 503 with Retry-After)",
            provider_throttles.clone(),
        );
        let provider_retry_after: HistogramFamily<ProviderLabels> =
            Family::new_with_constructor(retry_after_buckets);
        registry.register(
            "courier_provider_retry_after_seconds",
            "The wait a provider asked for in Retry-After",
            provider_retry_after.clone(),
        );
        let limiter_wait: HistogramFamily<ProviderLabels> =
            Family::new_with_constructor(limiter_buckets);
        registry.register(
            "courier_limiter_wait_seconds",
            "How long a call waited for its slot under the provider's rate limit (shared by every worker)",
            limiter_wait.clone(),
        );
        let provider_pauses = Family::default();
        registry.register(
            "courier_provider_pauses",
            "Pauses of a provider for every worker, by source: retry_after, ratelimit (its RateLimit fields), throttled (a 429 naming no time), manual",
            provider_pauses.clone(),
        );
        let jobs_deferred = Family::default();
        registry.register(
            "courier_jobs_deferred",
            "Jobs sent back to wait in the delay queues without spending an attempt: paused, held, circuit_open, probing",
            jobs_deferred.clone(),
        );
        let provider_held = Family::default();
        registry.register(
            "courier_provider_held",
            "1 while this worker holds calls to the provider: paused by the provider's signal or by an operator",
            provider_held.clone(),
        );
        let circuit_state = Family::default();
        registry.register(
            "courier_circuit_state",
            "The provider's circuit as this worker last saw it: 0 closed, 1 half-open, 2 open",
            circuit_state.clone(),
        );
        let circuit_transitions = Family::default();
        registry.register(
            "courier_circuit_transitions",
            "Circuit transitions this worker made, by the state entered",
            circuit_transitions.clone(),
        );
        let queue_messages = Family::default();
        registry.register(
            "courier_queue_messages",
            "Messages ready in the namespace's queues (sampled every telemetry.poll_interval_ms)",
            queue_messages.clone(),
        );
        let dead_letters_pending = Family::default();
        registry.register(
            "courier_dead_letters_pending",
            "Dead letters in PostgreSQL awaiting an operator (sampled)",
            dead_letters_pending.clone(),
        );
        let operator_letters = Family::default();
        registry.register(
            "courier_operator_letters",
            "Dead letters settled by operators (CLI or admin API) so far, by action: PostgreSQL's total, sampled (the same in every worker: aggregate with max)",
            operator_letters.clone(),
        );
        let outcome_batch_size = Histogram::new([
            1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
        ]);
        registry.register(
            "courier_outcome_batch_size",
            "Outcomes per group commit",
            outcome_batch_size.clone(),
        );
        let outcome_commit_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "courier_outcome_commit_duration_seconds",
            "Duration of one successful group commit of outcomes",
            outcome_commit_duration.clone(),
        );
        let io_failures = Family::default();
        registry.register(
            "courier_io_failures",
            "Failed broker or database operations the worker retried (record_outcomes failing means nothing is acked)",
            io_failures.clone(),
        );
        let broker_acks = Family::default();
        registry.register(
            "courier_broker_acks",
            "basic.ack frames sent after commits, by kind: multiple (one frame for a channel's committed prefix) or single",
            broker_acks.clone(),
        );
        let broker_reconnects = Counter::default();
        registry.register(
            "courier_broker_reconnects",
            "Times the RabbitMQ connection was lost and replaced by a new one",
            broker_reconnects.clone(),
        );
        let broker_unreadable = Counter::default();
        registry.register(
            "courier_broker_unreadable_deliveries",
            "Times RabbitMQ delivered a message the AMQP client cannot read (the connection is replaced; the broker dead-letters the message after its delivery limit)",
            broker_unreadable.clone(),
        );
        let database_connections = Counter::default();
        registry.register(
            "courier_database_connections_opened",
            "PostgreSQL connections opened by the pool (growth beyond its size means reconnects)",
            database_connections.clone(),
        );
        let ingest = IngestMetrics::register(&mut registry);
        let owners = Family::<OwnerLabels, Gauge>::default();
        for (name, p) in providers {
            owners
                .get_or_create(&OwnerLabels {
                    provider: name.clone(),
                    owner: p.owner.clone().unwrap_or_default(),
                    runbook: p.runbook.clone().unwrap_or_default(),
                })
                .set(1);
        }
        registry.register(
            "courier_provider_info",
            "1 per configured provider, labelled with its owner and runbook (empty when not configured), for alerts to join on",
            owners,
        );
        registry.register(
            "courier_build",
            "The running build",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                commit,
            }),
        );
        let metrics = Metrics {
            registry,
            known,
            jobs_received,
            jobs_completed,
            job_latency,
            jobs_in_flight,
            retries_scheduled,
            dead_letters,
            provider_requests,
            provider_request_duration,
            provider_throttles,
            provider_retry_after,
            limiter_wait,
            provider_pauses,
            jobs_deferred,
            circuit_state,
            provider_held,
            circuit_transitions,
            queue_messages,
            dead_letters_pending,
            operator_letters,
            outcome_batch_size,
            outcome_commit_duration,
            io_failures,
            broker_acks,
            broker_reconnects,
            broker_unreadable,
            database_connections,
            ingest,
        };
        metrics.start_at_zero();
        metrics
    }

    /// Creates every series a configured provider will have, at zero, so
    /// that dashboards show them from the start and the first increment of
    /// a counter is not lost to `increase()` (which needs two samples).
    fn start_at_zero(&self) {
        for kind in ["multiple", "single"] {
            let _ = self.broker_acks.get_or_create(&AckLabels { kind });
        }
        let _ = self.jobs_received.get_or_create(&ProviderLabels {
            provider: UNROUTED.to_owned(),
        });
        for (provider, operations) in &self.known {
            let p = ProviderLabels {
                provider: provider.clone(),
            };
            let _ = self.jobs_received.get_or_create(&p);
            let _ = self.jobs_in_flight.get_or_create(&p);
            let _ = self.provider_retry_after.get_or_create(&p);
            let _ = self.limiter_wait.get_or_create(&p);
            let _ = self.circuit_state.get_or_create(&p);
            let _ = self.provider_held.get_or_create(&p);
            for source in courier_core::signals::PauseSource::ALL {
                let _ = self.provider_pauses.get_or_create(&PauseLabels {
                    provider: provider.clone(),
                    source: source.as_str(),
                });
            }
            for reason in DeferReason::ALL {
                let _ = self.jobs_deferred.get_or_create(&DeferLabels {
                    provider: provider.clone(),
                    reason: reason.as_str(),
                });
            }
            for to in courier_core::circuit::CircuitState::ALL {
                let _ = self.circuit_transitions.get_or_create(&TransitionLabels {
                    provider: provider.clone(),
                    to: to.as_str(),
                });
            }
            for reason in DeadReason::ALL {
                let _ = self.dead_letters.get_or_create(&DeadLabels {
                    provider: provider.clone(),
                    reason: reason.as_str(),
                });
            }
            for operation in operations {
                let o = OperationLabels {
                    provider: provider.clone(),
                    operation: operation.clone(),
                };
                let _ = self.provider_request_duration.get_or_create(&o);
                let _ = self.provider_throttles.get_or_create(&o);
                for outcome in JobOutcome::ALL {
                    let labels = OutcomeLabels {
                        provider: provider.clone(),
                        operation: operation.clone(),
                        outcome: outcome.as_str(),
                    };
                    if outcome.is_terminal() && outcome != JobOutcome::Invalid {
                        let _ = self.job_latency.get_or_create(&labels);
                    }
                    let _ = self.jobs_completed.get_or_create(&labels);
                }
                for class in AttemptClass::ALL {
                    let _ = self.provider_requests.get_or_create(&RequestLabels {
                        provider: provider.clone(),
                        operation: operation.clone(),
                        class: class.as_str(),
                    });
                }
                let _ = self.retries_scheduled.get_or_create(&RetryLabels {
                    provider: provider.clone(),
                    operation: operation.clone(),
                    attempt: "1".to_owned(),
                });
            }
        }
    }

    /// Creates the failure counter of an I/O operation at zero.
    pub fn io_operation(&self, operation: &'static str) {
        let _ = self.io_failures.get_or_create(&IoLabels { operation });
    }

    /// The exposition (OpenMetrics text, which Prometheus scrapes).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// `provider` as a label: configured names only.
    pub fn provider_label(&self, provider: Option<&str>) -> String {
        match provider {
            None => UNROUTED.to_owned(),
            Some(p) if self.known.contains_key(p) => p.to_owned(),
            Some(_) => UNKNOWN.to_owned(),
        }
    }

    fn operation_labels(&self, provider: Option<&str>, operation: Option<&str>) -> OperationLabels {
        let provider = self.provider_label(provider);
        let operation = match (self.known.get(&provider), operation) {
            (Some(ops), Some(op)) if ops.contains(op) => op.to_owned(),
            _ => UNKNOWN.to_owned(),
        };
        OperationLabels {
            provider,
            operation,
        }
    }

    // ---- job flow ----------------------------------------------------------

    /// A delivery taken from `provider`'s work queue (`None`: unrouted). The
    /// returned guard counts it in flight until dropped.
    pub fn received(&self, provider: Option<&str>) -> InFlight {
        let labels = ProviderLabels {
            provider: self.provider_label(provider),
        };
        self.jobs_received.get_or_create(&labels).inc();
        let gauge = self.jobs_in_flight.get_or_create_owned(&labels);
        gauge.inc();
        InFlight(gauge)
    }

    /// A committed outcome. `latency` (from the job's `created_at`) is
    /// recorded for terminal outcomes; `failed_attempt` is the attempt
    /// number behind a retry.
    pub fn completed(
        &self,
        provider: Option<&str>,
        operation: Option<&str>,
        outcome: JobOutcome,
        latency: Option<Duration>,
        failed_attempt: u32,
    ) {
        let OperationLabels {
            provider,
            operation,
        } = self.operation_labels(provider, operation);
        if outcome == JobOutcome::Retried {
            let attempt = if failed_attempt >= ATTEMPT_LABEL_CAP {
                format!("{ATTEMPT_LABEL_CAP}+")
            } else {
                failed_attempt.to_string()
            };
            self.retries_scheduled
                .get_or_create(&RetryLabels {
                    provider: provider.clone(),
                    operation: operation.clone(),
                    attempt,
                })
                .inc();
        }
        let labels = OutcomeLabels {
            provider,
            operation,
            outcome: outcome.as_str(),
        };
        if let (true, Some(latency)) = (outcome.is_terminal(), latency) {
            self.job_latency
                .get_or_create(&labels)
                .observe(latency.as_secs_f64());
        }
        self.jobs_completed.get_or_create(&labels).inc();
    }

    /// A committed dead letter.
    pub fn dead_lettered(&self, provider: Option<&str>, reason: DeadReason) {
        self.dead_letters
            .get_or_create(&DeadLabels {
                provider: self.provider_label(provider),
                reason: reason.as_str(),
            })
            .inc();
    }

    // ---- provider calls and throttling -------------------------------------

    /// One provider request and how it ended.
    pub fn provider_request(
        &self,
        provider: &str,
        operation: &str,
        class: AttemptClass,
        classification: Classification,
        duration: Duration,
    ) {
        let labels = self.operation_labels(Some(provider), Some(operation));
        self.provider_request_duration
            .get_or_create(&labels)
            .observe(duration.as_secs_f64());
        self.provider_requests
            .get_or_create(&RequestLabels {
                provider: labels.provider.clone(),
                operation: labels.operation.clone(),
                class: class.as_str(),
            })
            .inc();
        if let Classification::Throttled { retry_after } = classification {
            if let Some(wait) = retry_after {
                self.provider_retry_after
                    .get_or_create(&ProviderLabels {
                        provider: labels.provider.clone(),
                    })
                    .observe(wait.as_secs_f64());
            }
            self.provider_throttles.get_or_create(&labels).inc();
        }
    }

    // ---- queues and backlog (sampled) --------------------------------------

    /// Messages ready in a queue: `kind` is work, retry or dead.
    pub fn queue_depth(&self, kind: &'static str, provider: Option<&str>, messages: u32) {
        let provider = match (kind, provider) {
            ("retry", _) => String::new(),
            (_, p) => self.provider_label(p),
        };
        self.queue_messages
            .get_or_create(&QueueLabels { kind, provider })
            .set(i64::from(messages));
    }

    /// Dead letters awaiting an operator, per provider (`None`: letters
    /// with no provider, from the unrouted queue).
    pub fn dead_letters_pending(&self, provider: Option<&str>, letters: i64) {
        self.dead_letters_pending
            .get_or_create(&ProviderLabels {
                provider: self.provider_label(provider),
            })
            .set(letters);
    }

    /// Letters settled by operators so far, as PostgreSQL counts them. A
    /// gauge, not a counter: every worker reports the same global total,
    /// and a restarted worker must not add the history again.
    pub fn operator_settled(&self, requeued: u64, purged: u64) {
        for (action, total) in [("requeue", requeued), ("purge", purged)] {
            self.operator_letters
                .get_or_create(&ActionLabels { action })
                .set(i64::try_from(total).unwrap_or(i64::MAX));
        }
    }

    // ---- the worker's machinery --------------------------------------------

    /// One group commit of `size` outcomes that took `duration`.
    pub fn batch_committed(&self, size: usize, duration: Duration) {
        self.outcome_batch_size.observe(size as f64);
        self.outcome_commit_duration.observe(duration.as_secs_f64());
    }

    /// Ack frames sent after a commit.
    pub fn acks_sent(&self, multiple: usize, single: usize) {
        for (kind, frames) in [("multiple", multiple), ("single", single)] {
            if frames > 0 {
                self.broker_acks
                    .get_or_create(&AckLabels { kind })
                    .inc_by(frames as u64);
            }
        }
    }

    /// A failed broker or database operation that will be retried.
    pub fn io_failed(&self, operation: &'static str) {
        self.io_failures
            .get_or_create(&IoLabels { operation })
            .inc();
    }

    /// A call waited `waited` for its rate-limit slot.
    pub fn limiter_waited(&self, provider: &str, waited: Duration) {
        let provider = self.provider_label(Some(provider));
        self.limiter_wait
            .get_or_create(&ProviderLabels { provider })
            .observe(waited.as_secs_f64());
    }

    /// The provider was paused for every worker.
    pub fn provider_paused(&self, provider: &str, source: courier_core::signals::PauseSource) {
        let provider = self.provider_label(Some(provider));
        self.provider_pauses
            .get_or_create(&PauseLabels {
                provider,
                source: source.as_str(),
            })
            .inc();
    }

    /// A job was sent to wait without an attempt.
    pub fn job_deferred(&self, provider: &str, reason: DeferReason) {
        let provider = self.provider_label(Some(provider));
        self.jobs_deferred
            .get_or_create(&DeferLabels {
                provider,
                reason: reason.as_str(),
            })
            .inc();
    }

    /// The provider's circuit as last seen.
    pub fn circuit_seen(&self, provider: &str, state: courier_core::circuit::CircuitState) {
        let provider = self.provider_label(Some(provider));
        self.circuit_state
            .get_or_create(&ProviderLabels { provider })
            .set(state.level());
    }

    /// Whether this worker holds calls to the provider (paused or held).
    pub fn provider_held(&self, provider: &str, held: bool) {
        let provider = self.provider_label(Some(provider));
        self.provider_held
            .get_or_create(&ProviderLabels { provider })
            .set(i64::from(held));
    }

    /// This worker moved the provider's circuit to `to`.
    pub fn circuit_moved(&self, provider: &str, to: courier_core::circuit::CircuitState) {
        let label = self.provider_label(Some(provider));
        self.circuit_transitions
            .get_or_create(&TransitionLabels {
                provider: label,
                to: to.as_str(),
            })
            .inc();
        self.circuit_seen(provider, to);
    }

    pub fn broker_reconnected(&self) {
        self.broker_reconnects.inc();
    }

    pub fn unreadable_delivery(&self) {
        self.broker_unreadable.inc();
    }

    pub fn database_connection_opened(&self) {
        self.database_connections.inc();
    }
}

/// Counts one delivery in flight until dropped.
#[derive(Debug)]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_core::Config;

    fn metrics() -> Metrics {
        let toml = r#"
[providers.pay]
base_url = "http://127.0.0.1:1"
owner = "payments-team"
runbook = "https://wiki.test/pay"
[providers.pay.operations.charge]
method = "POST"
path = "/c"
"#;
        let config = Config::from_toml(toml, "t.toml", &|_| None).expect("valid");
        Metrics::new(&config.providers, "abc123")
    }

    #[test]
    fn labels_take_only_configured_names() {
        let m = metrics();
        m.completed(Some("pay"), Some("charge"), JobOutcome::Succeeded, None, 1);
        m.completed(Some("pay"), Some("job-4711"), JobOutcome::Invalid, None, 0);
        m.completed(Some("cust-99"), Some("x"), JobOutcome::Invalid, None, 0);
        m.completed(None, None, JobOutcome::Invalid, None, 0);
        let text = m.encode();
        assert!(text.contains(
            r#"courier_jobs_completed_total{provider="pay",operation="charge",outcome="succeeded"} 1"#
        ));
        assert!(text.contains(
            r#"courier_jobs_completed_total{provider="pay",operation="_unknown",outcome="invalid"} 1"#
        ));
        assert!(text.contains(
            r#"courier_jobs_completed_total{provider="_unknown",operation="_unknown",outcome="invalid"} 1"#
        ));
        assert!(text.contains(
            r#"courier_jobs_completed_total{provider="_unrouted",operation="_unknown",outcome="invalid"} 1"#
        ));
        assert!(!text.contains("job-4711") && !text.contains("cust-99"));
    }

    #[test]
    fn retries_are_counted_by_attempt_with_a_cap() {
        let m = metrics();
        for attempt in [1, 1, 2, 12] {
            m.completed(
                Some("pay"),
                Some("charge"),
                JobOutcome::Retried,
                None,
                attempt,
            );
        }
        let text = m.encode();
        for (attempt, n) in [("1", 2), ("2", 1), ("10+", 1)] {
            let line = format!(
                r#"courier_retries_scheduled_total{{provider="pay",operation="charge",attempt="{attempt}"}} {n}"#
            );
            assert!(text.contains(&line), "{line} in\n{text}");
        }
    }

    #[test]
    fn latency_is_observed_for_terminal_outcomes_only() {
        let m = metrics();
        let second = Some(Duration::from_secs(1));
        m.completed(Some("pay"), Some("charge"), JobOutcome::Retried, second, 1);
        m.completed(
            Some("pay"),
            Some("charge"),
            JobOutcome::Succeeded,
            second,
            2,
        );
        let text = m.encode();
        assert!(text.contains(
            r#"courier_job_latency_seconds_count{provider="pay",operation="charge",outcome="succeeded"} 1"#
        ));
        assert!(!text.contains(r#"courier_job_latency_seconds_count{provider="pay",operation="charge",outcome="retried"}"#));
    }

    #[test]
    fn in_flight_goes_back_down_when_the_guard_drops() {
        let m = metrics();
        let a = m.received(Some("pay"));
        let b = m.received(Some("pay"));
        assert!(
            m.encode()
                .contains(r#"courier_jobs_in_flight{provider="pay"} 2"#)
        );
        drop(a);
        drop(b);
        let text = m.encode();
        assert!(text.contains(r#"courier_jobs_in_flight{provider="pay"} 0"#));
        assert!(text.contains(r#"courier_jobs_received_total{provider="pay"} 2"#));
    }

    #[test]
    fn operator_totals_are_the_sampled_totals() {
        let m = metrics();
        m.operator_settled(5, 2);
        m.operator_settled(7, 2);
        let text = m.encode();
        assert!(text.contains(r#"courier_operator_letters{action="requeue"} 7"#));
        assert!(text.contains(r#"courier_operator_letters{action="purge"} 2"#));
    }

    #[test]
    fn throttles_record_the_wait_asked_for() {
        let m = metrics();
        let throttled = Classification::Throttled {
            retry_after: Some(Duration::from_secs(30)),
        };
        m.provider_request(
            "pay",
            "charge",
            AttemptClass::Throttled,
            throttled,
            Duration::from_millis(3),
        );
        let text = m.encode();
        assert!(
            text.contains(
                r#"courier_provider_throttles_total{provider="pay",operation="charge"} 1"#
            )
        );
        assert!(text.contains(r#"courier_provider_retry_after_seconds_sum{provider="pay"} 30.0"#));
        assert!(text.contains(
            r#"courier_provider_requests_total{provider="pay",operation="charge",class="throttled"} 1"#
        ));
        assert!(text.contains(r#"courier_build_info{version=""#));
    }

    #[test]
    fn each_provider_has_an_info_series_naming_its_owner() {
        let text = metrics().encode();
        assert!(
            text.contains(r#"courier_provider_info{provider="pay",owner="payments-team",runbook="https://wiki.test/pay"} 1"#),
            "{text}"
        );
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub source: String,
    /// missing_signature, malformed, bad_signature, stale_timestamp,
    /// too_large, unknown_source.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UnavailableLabels {
    pub source: String,
    /// database, broker, secret.
    pub cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnswerLabels {
    pub source: String,
    /// enqueued, duplicate.
    pub outcome: &'static str,
}

/// The webhook receiver's families. The `source` label takes configured
/// source names only (the receiver passes [`UNKNOWN`] for any other path).
#[derive(Debug)]
pub struct IngestMetrics {
    received: Family<SourceLabels, Counter>,
    verified: Family<SourceLabels, Counter>,
    rejected: Family<RejectLabels, Counter>,
    duplicates: Family<SourceLabels, Counter>,
    enqueued: Family<SourceLabels, Counter>,
    unavailable: Family<UnavailableLabels, Counter>,
    answer: Family<AnswerLabels, Histogram>,
}

fn answer_buckets() -> Histogram {
    // 0.25 ms … 8 s: a sender gives up after seconds.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

impl IngestMetrics {
    fn register(registry: &mut Registry) -> IngestMetrics {
        let received = Family::default();
        registry.register(
            "courier_ingest_events_received",
            "Webhook requests received, before verification",
            received.clone(),
        );
        let verified = Family::default();
        registry.register(
            "courier_ingest_events_verified",
            "Webhook requests whose signature verified",
            verified.clone(),
        );
        let rejected = Family::default();
        registry.register(
            "courier_ingest_events_rejected",
            "Webhook requests refused (401, 413, 400, 404), by reason; a burst of bad_signature means a rotated secret or an attack",
            rejected.clone(),
        );
        let duplicates = Family::default();
        registry.register(
            "courier_ingest_events_duplicate",
            "Verified events the source had sent before: answered 2xx, nothing created",
            duplicates.clone(),
        );
        let enqueued = Family::default();
        registry.register(
            "courier_ingest_events_enqueued",
            "Events recorded and published as jobs (confirmed) before the 2xx",
            enqueued.clone(),
        );
        let unavailable = Family::default();
        registry.register(
            "courier_ingest_unavailable",
            "Verified events answered 503 (500 for a row PostgreSQL refuses) because PostgreSQL, RabbitMQ or the source's secret was unavailable; the sender retries",
            unavailable.clone(),
        );
        let answer: HistogramFamily<AnswerLabels> = Family::new_with_constructor(answer_buckets);
        registry.register(
            "courier_ingest_answer_seconds",
            "Time from a webhook's body being read to its 2xx answer",
            answer.clone(),
        );
        IngestMetrics {
            received,
            verified,
            rejected,
            duplicates,
            enqueued,
            unavailable,
            answer,
        }
    }

    /// Creates a source's series at zero.
    pub fn source(&self, source: &str) {
        let labels = SourceLabels {
            source: source.to_owned(),
        };
        let _ = self.received.get_or_create(&labels);
        let _ = self.verified.get_or_create(&labels);
        let _ = self.duplicates.get_or_create(&labels);
        let _ = self.enqueued.get_or_create(&labels);
        let _ = self.rejected.get_or_create(&RejectLabels {
            source: source.to_owned(),
            reason: "bad_signature",
        });
    }

    pub fn received(&self, source: &str) {
        self.received
            .get_or_create(&SourceLabels {
                source: source.to_owned(),
            })
            .inc();
    }

    pub fn verified(&self, source: &str) {
        self.verified
            .get_or_create(&SourceLabels {
                source: source.to_owned(),
            })
            .inc();
    }

    pub fn rejected(&self, source: &str, reason: &'static str) {
        self.rejected
            .get_or_create(&RejectLabels {
                source: source.to_owned(),
                reason,
            })
            .inc();
    }

    pub fn unavailable(&self, source: &str, cause: &'static str) {
        self.unavailable
            .get_or_create(&UnavailableLabels {
                source: source.to_owned(),
                cause,
            })
            .inc();
    }

    /// A 2xx: a new event (`duplicate` false) or one sent before.
    pub fn answered(&self, source: &str, duplicate: bool, took: Duration) {
        let labels = SourceLabels {
            source: source.to_owned(),
        };
        if duplicate {
            self.duplicates.get_or_create(&labels).inc();
        } else {
            self.enqueued.get_or_create(&labels).inc();
        }
        self.answer
            .get_or_create(&AnswerLabels {
                source: source.to_owned(),
                outcome: if duplicate { "duplicate" } else { "enqueued" },
            })
            .observe(took.as_secs_f64());
    }
}
