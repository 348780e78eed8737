//! What the worker reports about itself beyond per-job events: readiness,
//! broker reconnections, and the gauges sampled on an interval (queue
//! depths from RabbitMQ, the dead-letter backlog from PostgreSQL).
//!
//! Owns the readiness rules (broker connected, database answering, outcomes
//! committing, every queue consumed, not draining) and the sampling loop. Sampling is cheap by construction:
//! passive queue declares and two indexed aggregate queries per interval.
//! It must never let a failed sample affect job processing: a sample that
//! fails is logged at debug and tried again next interval.

use courier_amqp::{Channel, Link, Topology};
use courier_store::Store;
use courier_telemetry::{Check, Metrics, Probe};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Longest one sample of queue depths or of the backlog may take.
const SAMPLE_DEADLINE: Duration = Duration::from_secs(5);

/// Longest the database check may take.
const PING_DEADLINE: Duration = Duration::from_secs(1);

/// Which of the worker's long-running parts still run, and whether they
/// are getting their work done.
#[derive(Debug, Default)]
pub struct Running {
    /// Queues the worker consumes.
    pub queues: AtomicUsize,
    /// Queue consumers whose loop is running now (a new broker connection
    /// starts them anew; the broker may cancel one: a deleted queue).
    pub consumers: AtomicUsize,
    /// Set when the outcome writer has ended.
    pub writer_ended: AtomicBool,
    /// Set while the last attempt to commit outcomes failed: nothing is
    /// acknowledged until one succeeds.
    pub commit_failing: AtomicBool,
}

/// Readiness: the broker is connected, the database answers, every queue is
/// consumed, and the worker is not shutting down. Liveness: the broker
/// connection is not lost for good and the outcome writer runs.
#[derive(Debug)]
pub struct WorkerProbe {
    broker: Link,
    store: Store,
    draining: CancellationToken,
    running: Arc<Running>,
}

impl WorkerProbe {
    pub fn new(
        broker: Link,
        store: Store,
        draining: CancellationToken,
        running: Arc<Running>,
    ) -> Self {
        Self {
            broker,
            store,
            draining,
            running,
        }
    }
}

impl Probe for WorkerProbe {
    fn checks(&self) -> Pin<Box<dyn Future<Output = Vec<Check>> + Send + '_>> {
        Box::pin(async move {
            let draining = if self.draining.is_cancelled() {
                Err("shutting down; finishing in-flight jobs".to_owned())
            } else {
                Ok(())
            };
            let database = match tokio::time::timeout(PING_DEADLINE, self.store.ping()).await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {PING_DEADLINE:?}")),
            };
            let queues = self.running.queues.load(Ordering::SeqCst);
            let running = self.running.consumers.load(Ordering::SeqCst);
            let consumers = if running >= queues {
                Ok(())
            } else {
                Err(format!(
                    "{running} of {queues} queue consumers running (reconnecting to RabbitMQ, or the broker cancelled the others: was a queue deleted?)"
                ))
            };
            let outcomes = if self.running.commit_failing.load(Ordering::SeqCst) {
                Err(
                    "outcomes cannot be committed to PostgreSQL: nothing is acknowledged"
                        .to_owned(),
                )
            } else {
                Ok(())
            };
            vec![
                ("broker", self.broker.health().check()),
                ("database", database),
                ("outcomes", outcomes),
                ("consumers", consumers),
                ("draining", draining),
            ]
        })
    }

    fn alive(&self) -> Result<(), String> {
        if self.draining.is_cancelled() {
            return Ok(());
        }

        if self.running.writer_ended.load(Ordering::SeqCst) {
            return Err("the outcome writer stopped: nothing can be acknowledged".into());
        }
        Ok(())
    }
}

/// Counts every time the broker connection comes back, until `stop`.
pub async fn count_reconnections(link: Link, metrics: Arc<Metrics>, stop: CancellationToken) {
    let mut reconnections = link.reconnections();
    reconnections.mark_unchanged();
    loop {
        tokio::select! {
            changed = reconnections.changed() => {
                if changed.is_err() {
                    return;
                }
                tracing::info!("RabbitMQ connection re-established");
                metrics.broker_reconnected();
            }
            _ = stop.cancelled() => return,
        }
    }
}

/// Takes the sampled gauges' readings.
#[derive(Debug)]
pub struct Sampler {
    link: Link,
    channel: Option<Channel>,
    topology: Topology,
    store: Store,
    metrics: Arc<Metrics>,
}

impl Sampler {
    /// `link` is the worker's; the sampler opens its own channel on it.
    pub fn new(link: Link, topology: Topology, store: Store, metrics: Arc<Metrics>) -> Self {
        Self {
            link,
            channel: None,
            topology,
            store,
            metrics,
        }
    }

    async fn queues(&mut self) -> Result<(), courier_amqp::AmqpError> {
        let channel = match &self.channel {
            Some(ch) if ch.is_open() => ch.clone(),
            _ => {
                let ch = self.link.channel().await?;
                self.channel = Some(ch.clone());
                ch
            }
        };
        let count = |queue: String| {
            let channel = channel.clone();
            async move { courier_amqp::topology::message_count(&channel, &queue).await }
        };
        for provider in self.topology.providers().to_vec() {
            let work = count(self.topology.work_queue(&provider)).await?;
            self.metrics.queue_depth("work", Some(&provider), work);
            let dead = count(self.topology.dead_queue(Some(&provider))).await?;
            self.metrics.queue_depth("dead", Some(&provider), dead);
        }
        let unrouted = count(self.topology.unrouted()).await?;
        self.metrics.queue_depth("work", None, unrouted);
        let dead_unrouted = count(self.topology.dead_queue(None)).await?;
        self.metrics.queue_depth("dead", None, dead_unrouted);
        let mut waiting = 0u32;
        for queue in self.topology.delay_queues() {
            waiting = waiting.saturating_add(count(queue).await?);
        }
        self.metrics.queue_depth("retry", None, waiting);
        Ok(())
    }

    async fn backlog(&self) -> Result<(), courier_store::StoreError> {
        let backlog = self.store.backlog().await?;
        for provider in self.topology.providers() {
            let pending = backlog
                .pending
                .iter()
                .find(|(p, _)| p.as_deref() == Some(provider.as_str()))
                .map_or(0, |(_, n)| *n);
            self.metrics.dead_letters_pending(Some(provider), pending);
        }
        let unrouted = backlog
            .pending
            .iter()
            .filter(|(p, _)| {
                p.as_deref()
                    .is_none_or(|p| !self.topology.providers().iter().any(|c| c == p))
            })
            .map(|(_, n)| n)
            .sum();
        self.metrics.dead_letters_pending(None, unrouted);
        self.metrics
            .operator_settled(backlog.requeued, backlog.purged);
        Ok(())
    }
}

/// Samples every `interval` until `stop`, starting at once.
pub async fn sample(mut sampler: Sampler, interval: Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.cancelled() => return,
        }
        // A broker reply that never comes (a channel caught in a reconnect)
        // must neither stall sampling nor keep shutdown waiting.
        let queues = tokio::select! {
            sampled = tokio::time::timeout(SAMPLE_DEADLINE, sampler.queues()) => sampled,
            _ = stop.cancelled() => return,
        };
        match queues {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                sampler.channel = None;
                tracing::debug!(error = %e, "sampling queue depths failed; trying again next interval");
            }
            Err(_) => {
                sampler.channel = None;
                tracing::debug!(
                    "sampling queue depths took over {SAMPLE_DEADLINE:?}; trying again next interval"
                );
            }
        }
        let backlog = tokio::select! {
            sampled = tokio::time::timeout(SAMPLE_DEADLINE, sampler.backlog()) => sampled,
            _ = stop.cancelled() => return,
        };
        if !matches!(backlog, Ok(Ok(()))) {
            tracing::debug!("sampling the dead-letter backlog failed; trying again next interval");
        }
    }
}
