//! What happens to one delivery, from bytes to an [`Outcome`].
//!
//! Owns the order of the steps: parse, idempotency check, poison check,
//! operation lookup, provider call, decision, and the confirmed publish of a
//! retry or dead letter. Every path ends in an outcome for the writer;
//! nothing is dropped. A job's attempt number, retry budget and generation
//! come from PostgreSQL (`state::verdict`), never from the headers a
//! publisher could set. It must never ack (the writer does, after the
//! commit) and never sleep for a retry (the delay queues wait instead).

use crate::gate::{Admit, Gate};
use crate::lookup::ProgressLookup;
use crate::patience::{Abandoned, Io, Stop, persist};
use crate::turns::{Turn, Turns};
use chrono::Utc;
use courier_amqp::headers::DeadLetterHeaders;
use courier_amqp::{Delivery, DeliveryMeta, Publisher, Topology};
use courier_core::config::{Operation, ProviderConfig};
use courier_core::envelope::KeptBody;
use courier_core::retry::{DeadReason, Decision};
use courier_core::state::{Admission, DeliveredProgress, DeliveryVerdict, JobState, verdict};
use courier_core::{
    AttemptClass, CallResult, Classification, Config, InvalidJob, Job, TraceContext, classify,
};
use courier_provider::{CallReport, ProviderClient};
use courier_store::{AttemptRow, DeadLetterRow, JobRow, Outcome, Store};
use courier_telemetry::DeferReason;
use courier_telemetry::Metrics;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

/// Everything a delivery's processing needs, shared by all consumers.
#[derive(Debug)]
pub struct Pipeline {
    config: Config,
    topology: Topology,
    publisher: Publisher,
    clients: HashMap<String, ProviderClient>,
    /// Each provider's concurrency cap: calls in flight.
    slots: HashMap<String, Arc<Semaphore>>,
    /// Shutdown began: a delivery that has not started its call goes back
    /// to its queue instead.
    stop: CancellationToken,
    abandon: CancellationToken,
    metrics: Arc<Metrics>,
    lookup: ProgressLookup,
    /// Provider protection: rate limits, pauses, holds, circuits.
    gate: Arc<Gate>,
    /// One delivery of a job at a time, until its outcome is committed.
    turns: Turns,
}

/// A delivery's outcome, and the job's turn, which the writer ends once the
/// outcome is committed (`None`: no readable job).
#[derive(Debug)]
pub struct Handled {
    pub outcome: Outcome,
    pub turn: Option<Turn>,
}

/// A delivery cleared to call its provider, with what the call needs.
struct Ready<'a> {
    admission: Admission,
    /// The trusted progress (from PostgreSQL), not the one the delivery
    /// claimed: what the rest of its life writes into headers and records.
    meta: DeliveryMeta,
    provider: &'a ProviderConfig,
    operation: &'a Operation,
    path: String,
    client: &'a ProviderClient,
}

/// What screening a delivery found.
enum Screened<'a> {
    Ready(Ready<'a>),
    /// It ends without a call (boxed: the rarer, larger case).
    Done(Box<Outcome>),
}

/// What calling a provider gave.
enum Called {
    Answered(CallReport),
    /// Deferred without a call (protection said not now; boxed as above).
    Done(Box<Outcome>),
}

/// Why a job dies, with the words an operator reads.
struct Death {
    reason: DeadReason,
    detail: String,
    last_status: Option<u16>,
    last_error: Option<String>,
}

/// Which job a dead letter belongs to.
#[derive(Clone, Copy)]
enum Owner<'a> {
    /// A readable job.
    Job(&'a Job),
    /// A body that is no valid job: tied to the id it claims, if any.
    Claimed,
    /// A body that claims a recorded job's id but is another job: tied to
    /// no job (the recorded one is left alone).
    Nobody,
}

impl Pipeline {
    // The worker's parts, wired once at start.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        topology: Topology,
        publisher: Publisher,
        store: Store,
        clients: HashMap<String, ProviderClient>,
        stop: CancellationToken,
        abandon: CancellationToken,
        metrics: Arc<Metrics>,
        gate: Arc<Gate>,
    ) -> Self {
        let lookup = ProgressLookup::start(
            &store,
            crate::keeps_connections(&config),
            config.worker.linger,
            metrics.clone(),
            abandon.clone(),
        );
        let slots = config
            .providers
            .values()
            .map(|p| (p.name.clone(), Arc::new(Semaphore::new(p.concurrency))))
            .collect();
        Self {
            config,
            topology,
            publisher,
            clients,
            slots,
            stop,
            abandon,
            metrics,
            lookup,
            gate,
            turns: Turns::default(),
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Fired when shutdown gives up on the work still in flight.
    pub fn abandoned(&self) -> &CancellationToken {
        &self.abandon
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// Processes one delivery from `queue_provider`'s work queue (`None`: the
    /// unrouted queue). `Err` only when shutdown abandoned it mid-way; the
    /// caller then returns the delivery to its queue.
    pub async fn process(
        &self,
        queue_provider: Option<&str>,
        delivery: &Delivery,
    ) -> Result<Handled, Abandoned> {
        let meta = DeliveryMeta::of(delivery);
        let job = match Job::parse(&delivery.data, self.config.worker.max_body_bytes) {
            Ok(job) => job,
            Err(invalid) => {
                tracing::warn!(error = %invalid, message_id = ?meta.message_id, "invalid job");
                // Nothing it claims about progress is believed.
                let meta = DeliveryMeta {
                    attempts: 0,
                    run_base: 0,
                    generation: 0,
                    ..meta
                };
                let outcome = Box::pin(self.reject(
                    queue_provider,
                    delivery,
                    &meta,
                    Owner::Claimed,
                    invalid_death(&invalid),
                ))
                .await?;
                return Ok(Handled {
                    outcome,
                    turn: None,
                });
            }
        };
        // A copy of this job still in hand here (redelivered after a lost
        // connection) finishes first, so the lookup sees its outcome.
        let turn = self.turns.take(job.id, &self.stop).await?;
        // What PostgreSQL holds of the job decides whether this is work,
        // and which attempt: known before the span, which carries it.
        let progress = self.lookup.get(job.id).await?;
        let delivered = DeliveredProgress {
            attempts: meta.attempts,
            generation: meta.generation,
            via_retry: self.topology.is_retry_path(delivery.exchange.as_str()),
        };
        let verdict = verdict(progress, delivered, &job.fingerprint);
        let attempt = match verdict {
            DeliveryVerdict::Process(admission) => admission.attempt,
            DeliveryVerdict::Duplicate | DeliveryVerdict::Conflict => {
                progress.map_or(0, |p| p.attempts)
            }
        };
        // The job's trace: the publisher's when it sent one, else the one
        // its id spells. Settled before the span is entered, so that an
        // exported span continues it (courier_telemetry::otlp).
        let parent = meta.traceparent.as_deref().and_then(TraceContext::parse);
        let own = TraceContext::for_attempt(parent, job.id.as_u128(), rand::random());
        let span = tracing::info_span!(
            "job",
            job_id = %job.id,
            provider = %job.provider,
            operation = %job.operation,
            attempt,
            trace_id = %own.trace_id(),
        );
        let trace = courier_telemetry::otlp::continue_trace(&span, parent, own);
        // Boxed, as are the steps below: a delivery waiting for its lookup,
        // a rate-limit slot or a concurrency slot then holds only the
        // futures of the steps it has reached. Inline, every task was the
        // size of the largest path (7 KB), times every prefetched delivery
        // of every provider (docs/SCALING.md).
        let outcome = Box::pin(
            self.process_job(queue_provider, delivery, &meta, job, verdict, trace)
                .instrument(span),
        )
        .await?;
        Ok(Handled {
            outcome,
            turn: Some(turn),
        })
    }

    /// A readable job's delivery: screened (duplicate, conflict, poison, no
    /// such operation), then the provider called within its protection,
    /// then the answer settled into an outcome.
    async fn process_job(
        &self,
        queue_provider: Option<&str>,
        delivery: &Delivery,
        meta: &DeliveryMeta,
        job: Job,
        verdict: DeliveryVerdict,
        trace: TraceContext,
    ) -> Result<Outcome, Abandoned> {
        let ready =
            match Box::pin(self.screen(queue_provider, delivery, meta, &job, verdict)).await? {
                Screened::Ready(ready) => ready,
                Screened::Done(outcome) => return Ok(*outcome),
            };
        let report = match Box::pin(self.call(&ready, delivery, &job, &trace)).await? {
            Called::Answered(report) => report,
            Called::Done(outcome) => return Ok(*outcome),
        };
        Box::pin(self.settle(&ready, delivery, &job, &trace, report)).await
    }

    /// Whether this delivery may call its provider: not a duplicate, not
    /// another job under a recorded id, not poison, and an operation the
    /// config knows. What is not ends here, in an outcome.
    async fn screen<'a>(
        &'a self,
        queue_provider: Option<&str>,
        delivery: &Delivery,
        meta: &DeliveryMeta,
        job: &Job,
        verdict: DeliveryVerdict,
    ) -> Result<Screened<'a>, Abandoned> {
        let admission = match verdict {
            DeliveryVerdict::Process(admission) => admission,
            DeliveryVerdict::Duplicate => {
                tracing::info!(
                    "duplicate delivery of a job already done; acknowledging without a call"
                );
                return Ok(Screened::Done(Box::new(Outcome::Duplicate {
                    job_id: job.id,
                })));
            }
            DeliveryVerdict::Conflict => {
                tracing::warn!("a different job under a recorded job's id; dead-lettering it");
                let death = invalid_death(&InvalidJob::new(
                    "id",
                    format!(
                        "{} is already the id of a different job (another provider, operation, idempotency key or payload); a new job needs a new id",
                        job.id
                    ),
                ));
                let meta = DeliveryMeta {
                    attempts: 0,
                    run_base: 0,
                    generation: 0,
                    ..meta.clone()
                };
                return self
                    .reject(queue_provider, delivery, &meta, Owner::Nobody, death)
                    .await
                    .map(|o| Screened::Done(Box::new(o)));
            }
        };
        // What the rest of this delivery's life writes into headers and
        // records: the trusted progress, not the one the delivery claimed.
        let meta = DeliveryMeta {
            attempts: admission.attempt - 1,
            run_base: admission.run_base,
            generation: admission.generation,
            ..meta.clone()
        };
        if meta.delivery_count >= self.config.worker.delivery_limit {
            tracing::error!(
                deliveries = meta.delivery_count,
                "delivered too often without an outcome; dead-lettering as poison"
            );
            let death = Death {
                reason: DeadReason::DeliveryLimit,
                detail: format!(
                    "delivered {} times without an outcome (worker.delivery_limit = {}): it may crash or stall the worker",
                    meta.delivery_count, self.config.worker.delivery_limit
                ),
                last_status: None,
                last_error: None,
            };
            return self
                .reject(queue_provider, delivery, &meta, Owner::Job(job), death)
                .await
                .map(|o| Screened::Done(Box::new(o)));
        }
        let (provider, operation, path) = match self.resolve(queue_provider, job) {
            Ok(resolved) => resolved,
            Err(invalid) => {
                tracing::warn!(error = %invalid, "job cannot run");
                let death = invalid_death(&invalid);
                return self
                    .reject(queue_provider, delivery, &meta, Owner::Job(job), death)
                    .await
                    .map(|o| Screened::Done(Box::new(o)));
            }
        };
        let Some(client) = self.clients.get(&provider.name) else {
            // Config and clients are built from the same map at start.
            unreachable!("a configured provider without a client")
        };

        Ok(Screened::Ready(Ready {
            admission,
            meta,
            provider,
            operation,
            path,
            client,
        }))
    }

    /// Calls the provider within its protection (rate limits, pause, hold,
    /// circuit, concurrency cap); a job that cannot go soon is deferred.
    async fn call(
        &self,
        ready: &Ready<'_>,
        delivery: &Delivery,
        job: &Job,
        trace: &TraceContext,
    ) -> Result<Called, Abandoned> {
        let Ready {
            provider,
            operation,
            path,
            client,
            meta,
            ..
        } = ready;
        let traceparent = trace.to_string();
        // Provider protection: the rate limits' slots, a pause, a hold, the
        // circuit. A job that cannot go soon waits in the delay queues and
        // spends no attempt; one waiting here goes back at shutdown.
        let probe =
            match Box::pin(self.gate.admit(&provider.name, &job.operation, &self.stop)).await? {
                Admit::Call { probe } => probe,
                Admit::Defer { wait, reason } => {
                    return Box::pin(self.defer(&provider.name, delivery, meta, job, wait, reason))
                        .await
                        .map(|o| Called::Done(Box::new(o)));
                }
            };
        // Held for the call only: the provider's concurrency cap. A delivery
        // still waiting for a slot when shutdown begins is not called: it
        // goes back to its queue (only calls already made are finished).
        let slot = match self.slots.get(&provider.name) {
            Some(slots) => tokio::select! {
                slot = slots.acquire() => Some(slot),
                _ = self.stop.cancelled() => return Err(Abandoned),
            },
            None => None,
        };
        // The wait for a slot may have outlasted the admission.
        if let Some((wait, reason)) = self.gate.still_admitted(&provider.name, probe) {
            drop(slot);
            return Box::pin(self.defer(&provider.name, delivery, meta, job, wait, reason))
                .await
                .map(|o| Called::Done(Box::new(o)));
        }
        // Shutdown may abandon a call that outlives the grace period: the
        // delivery goes back to the queue and the next try carries the same
        // Idempotency-Key.
        let report = tokio::select! {
            report = Box::pin(client.call(job, operation, path, Some(&traceparent))) => report,
            _ = self.abandon.cancelled() => return Err(Abandoned),
        };
        drop(slot);
        Box::pin(self.gate.observe(&provider.name, probe, &report)).await;
        Ok(Called::Answered(report))
    }

    /// Turns the provider's answer into the outcome: classified, decided
    /// (succeed, retry after a delay, dead), the retry or dead letter
    /// published with its confirm.
    async fn settle(
        &self,
        ready: &Ready<'_>,
        delivery: &Delivery,
        job: &Job,
        trace: &TraceContext,
        report: CallReport,
    ) -> Result<Outcome, Abandoned> {
        let Ready {
            admission,
            meta,
            provider,
            ..
        } = ready;
        let attempt = admission.attempt;
        let class = classify(&report.result, &provider.statuses);
        // The retry budget counts from the start of the current run (an
        // operator's requeue starts a new one), throttles aside.
        let decision = provider
            .retry
            .decide(admission.spent(), class, rand::random());
        let throttled = matches!(class, Classification::Throttled { .. });
        let status = match report.result {
            CallResult::Response { status, .. } => Some(status),
            CallResult::Timeout | CallResult::Connect | CallResult::Transport => None,
        };
        let attempt_class = AttemptClass::of(&report.result);
        self.metrics.provider_request(
            &provider.name,
            &job.operation,
            attempt_class,
            class,
            report.duration,
        );
        // A success is in PostgreSQL (its attempt row) and the metrics; a
        // line each at info cost 14 % of the worker's CPU at full drain.
        // What did not succeed is logged at info: that is what an operator
        // reads the log for.
        if matches!(decision, Decision::Succeeded) {
            tracing::debug!(
                status,
                duration_ms = report.duration.as_millis() as u64,
                "attempt succeeded"
            );
        } else {
            tracing::info!(
                status,
                class = attempt_class.as_str(),
                duration_ms = report.duration.as_millis() as u64,
                ?decision,
                "attempt finished"
            );
        }
        let attempt_row = AttemptRow {
            job_id: job.id,
            attempt,
            started_at: report.started_at,
            duration: report.duration,
            http_status: status,
            error_class: attempt_class.as_str(),
            error: report.error.clone(),
            trace_id: Some(trace.trace_id()),
        };
        let mut job_row = job_row(job, JobState::Retrying, attempt);
        job_row.throttled_attempts = admission.throttled_attempts + u32::from(throttled);
        job_row.throttled_for = admission.throttled_for;
        job_row.last_status = status;
        job_row.last_error_class =
            (attempt_class != AttemptClass::Success).then_some(attempt_class.as_str());
        job_row.last_error = report.error.clone();

        let death = match decision {
            Decision::Succeeded => {
                job_row.state = JobState::Succeeded;
                None
            }
            Decision::Retry { delay } => {
                // The cascade counts whole seconds; never retry early.
                let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
                let published = persist(Io::PublishRetry, &self.abandon, &self.metrics, || {
                    self.publisher.publish_retry(
                        &self.topology,
                        &provider.name,
                        &delivery.data,
                        meta,
                        attempt,
                        secs,
                    )
                })
                .await;
                match published {
                    Ok(()) => {
                        if throttled {
                            job_row.throttled_for += Duration::from_secs(secs);
                        }
                        job_row.next_attempt_at = Some(
                            Utc::now()
                                + chrono::Duration::seconds(
                                    i64::try_from(secs).unwrap_or(i64::MAX),
                                ),
                        );
                        None
                    }
                    Err(Stop::Abandoned) => return Err(Abandoned),
                    // The broker will not take this job's retry: it cannot
                    // wait, so it is set aside where an operator sees it.
                    Err(Stop::Refused(e)) => Some(Death {
                        reason: DeadReason::Refused,
                        detail: format!("RabbitMQ refuses this job's retry: {e}"),
                        last_status: status,
                        last_error: report.error.clone(),
                    }),
                }
            }
            Decision::Dead(reason) => {
                let what = report.error.clone().unwrap_or_else(|| "no error".into());
                let detail = match reason {
                    DeadReason::RetriesExhausted => {
                        format!("gave up after {attempt} attempts; last: {what}")
                    }
                    DeadReason::Permanent => format!("{what} is not retryable"),
                    DeadReason::Invalid
                    | DeadReason::DeliveryLimit
                    | DeadReason::Refused
                    | DeadReason::Unreadable => what.clone(),
                };
                Some(Death {
                    reason,
                    detail,
                    last_status: status,
                    last_error: report.error.clone(),
                })
            }
        };
        let dead_letter = match death {
            None => None,
            Some(death) => {
                job_row.state = JobState::Dead;
                let owner = Owner::Job(job);
                let letter = self
                    .dead_letter(Some(&provider.name), delivery, meta, owner, attempt, death)
                    .await?;
                Some(letter)
            }
        };
        Ok(Outcome::Attempted {
            job: job_row,
            attempt: attempt_row,
            dead_letter,
        })
    }

    /// Sends a job to wait `wait` in the delay queues without an attempt
    /// (its provider is paused, held or its circuit open): published with
    /// the progress it had, so it comes back as the same attempt.
    async fn defer(
        &self,
        provider: &str,
        delivery: &Delivery,
        meta: &DeliveryMeta,
        job: &Job,
        wait: Duration,
        reason: DeferReason,
    ) -> Result<Outcome, Abandoned> {
        let secs = u64::try_from(wait.as_millis().div_ceil(1000))
            .unwrap_or(u64::MAX)
            .max(1);
        let published = persist(Io::PublishRetry, &self.abandon, &self.metrics, || {
            self.publisher.publish_retry(
                &self.topology,
                provider,
                &delivery.data,
                meta,
                meta.attempts,
                secs,
            )
        })
        .await;
        match published {
            Ok(()) => {
                self.metrics.job_deferred(provider, reason);
                tracing::debug!(
                    wait_secs = secs,
                    reason = reason.as_str(),
                    "deferred without an attempt"
                );
                Ok(Outcome::Deferred { job_id: job.id })
            }
            Err(Stop::Abandoned) => Err(Abandoned),
            // The broker will not take it back: it goes back to its queue
            // (its delivery count rises; it is not lost).
            Err(Stop::Refused(_)) => Err(Abandoned),
        }
    }

    /// The provider config, operation and rendered path a job runs with, or
    /// why it cannot run: no such provider, routed to the wrong queue, no such
    /// operation, or a path field missing from the payload.
    fn resolve(
        &self,
        queue_provider: Option<&str>,
        job: &Job,
    ) -> Result<(&ProviderConfig, &Operation, String), InvalidJob> {
        let Some(queue_provider) = queue_provider else {
            return Err(InvalidJob::new(
                "provider",
                format!(
                    "no provider named {:?} is configured (nothing consumes its routing key)",
                    job.provider
                ),
            ));
        };
        if job.provider != queue_provider {
            return Err(InvalidJob::new(
                "provider",
                format!(
                    "names {:?} but arrived on the queue of {queue_provider:?}",
                    job.provider
                ),
            ));
        }
        let (provider, operation) = self.config.operation(job)?;
        let path = operation.path.render(&job.payload)?;
        Ok((provider, operation, path))
    }

    /// Dead-letters a delivery that will not be attempted.
    async fn reject(
        &self,
        queue_provider: Option<&str>,
        delivery: &Delivery,
        meta: &DeliveryMeta,
        owner: Owner<'_>,
        death: Death,
    ) -> Result<Outcome, Abandoned> {
        let job_row = match owner {
            Owner::Job(j) => {
                let mut row = job_row(j, JobState::Dead, meta.attempts);
                row.last_error = Some(death.detail.clone());
                Some(row)
            }
            Owner::Claimed | Owner::Nobody => None,
        };
        let dead_letter = self
            .dead_letter(queue_provider, delivery, meta, owner, meta.attempts, death)
            .await?;
        Ok(Outcome::Rejected {
            job: job_row,
            dead_letter,
        })
    }

    /// Publishes the dead letter (confirmed) and returns its record. A body
    /// over the size limit travels and is kept as a prefix with its size and
    /// hash. If RabbitMQ refuses the dead-letter message, PostgreSQL (the
    /// source of truth) still records the letter, and says so.
    async fn dead_letter(
        &self,
        queue_provider: Option<&str>,
        delivery: &Delivery,
        meta: &DeliveryMeta,
        owner: Owner<'_>,
        attempts: u32,
        mut death: Death,
    ) -> Result<DeadLetterRow, Abandoned> {
        let kept = KeptBody::of(&delivery.data, self.config.worker.max_body_bytes);
        let headers = DeadLetterHeaders {
            reason: death.reason.as_str(),
            detail: &death.detail,
            attempts,
            last_status: death.last_status,
            cut_body: kept.is_truncated().then_some((kept.size, kept.sha256)),
        };
        let published = persist(Io::PublishDeadLetter, &self.abandon, &self.metrics, || {
            self.publisher.publish_dead_letter(
                &self.topology,
                queue_provider,
                &kept.bytes,
                meta,
                &headers,
            )
        })
        .await;
        match published {
            Ok(()) => {}
            Err(Stop::Abandoned) => return Err(Abandoned),
            Err(Stop::Refused(e)) => {
                death.detail = format!(
                    "{} (not copied to the dead-letter queue: RabbitMQ refused it: {e})",
                    death.detail
                );
            }
        }
        tracing::warn!(reason = death.reason.as_str(), detail = %death.detail, "dead-lettered");
        let job = match owner {
            Owner::Job(j) => Some(j),
            Owner::Claimed | Owner::Nobody => None,
        };
        let job_id = match owner {
            Owner::Job(j) => Some(j.id),
            Owner::Claimed => Job::claimed_id(&delivery.data),
            Owner::Nobody => None,
        };
        Ok(DeadLetterRow {
            id: Uuid::now_v7(),
            job_id,
            provider: job
                .map(|j| j.provider.clone())
                .or_else(|| queue_provider.map(str::to_owned)),
            operation: job.map(|j| j.operation.clone()),
            reason: death.reason,
            detail: death.detail,
            attempts,
            generation: meta.generation,
            last_status: death.last_status,
            last_error: death.last_error,
            body: kept.bytes,
            body_size: kept.size,
            body_sha256: kept.sha256,
            message_id: meta.message_id.clone(),
        })
    }
}

fn invalid_death(invalid: &InvalidJob) -> Death {
    Death {
        reason: DeadReason::Invalid,
        detail: invalid.to_string(),
        last_status: None,
        last_error: None,
    }
}

fn job_row(job: &Job, state: JobState, attempts: u32) -> JobRow {
    JobRow {
        id: job.id,
        provider: job.provider.clone(),
        operation: job.operation.clone(),
        idempotency_key: job.idempotency_key.clone(),
        state,
        attempts,
        last_status: None,
        last_error_class: None,
        last_error: None,
        created_at: job.created_at,
        next_attempt_at: None,
        fingerprint: job.fingerprint,
        throttled_attempts: 0,
        throttled_for: Duration::ZERO,
    }
}
