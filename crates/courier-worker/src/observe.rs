//! What the worker reports about itself beyond per-job events: readiness,
//! broker reconnections, and the gauges sampled on an interval (queue
//! depths from RabbitMQ, the dead-letter backlog from PostgreSQL).
//!
//! Owns the readiness rules (broker connected, database answering, not
//! draining) and the sampling loop. Sampling is cheap by construction:
//! passive queue declares and two indexed aggregate queries per interval.
//! It must never let a failed sample affect job processing: a sample that
//! fails is logged at debug and tried again next interval.

use courier_amqp::{BrokerHealth, Channel, Connection, Topology};
use courier_store::Store;
use courier_telemetry::{Check, Metrics, Probe};
use futures_util::{Stream, StreamExt};
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

/// Which of the worker's long-running parts still run.
#[derive(Debug, Default)]
pub struct Running {
    /// Queue consumers started.
    pub consumers_started: AtomicUsize,
    /// Queue consumers whose loop has ended (shutdown, or the broker
    /// cancelled them: a deleted queue).
    pub consumers_ended: AtomicUsize,
    /// Set when the outcome writer has ended.
    pub writer_ended: AtomicBool,
}

/// Readiness: the broker is connected, the database answers, every queue is
/// consumed, and the worker is not shutting down. Liveness: the broker
/// connection is not lost for good and the outcome writer runs.
#[derive(Debug)]
pub struct WorkerProbe {
    broker: BrokerHealth,
    store: Store,
    draining: CancellationToken,
    running: Arc<Running>,
}

impl WorkerProbe {
    pub fn new(
        broker: BrokerHealth,
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
            let started = self.running.consumers_started.load(Ordering::SeqCst);
            let ended = self.running.consumers_ended.load(Ordering::SeqCst);
            let consumers = if ended == 0 {
                Ok(())
            } else {
                Err(format!(
                    "{} of {started} queue consumers running (the broker cancelled the others: was a queue deleted?)",
                    started - ended.min(started)
                ))
            };
            vec![
                ("broker", self.broker.check()),
                ("database", database),
                ("consumers", consumers),
                ("draining", draining),
            ]
        })
    }

    fn alive(&self) -> Result<(), String> {
        if self.draining.is_cancelled() {
            return Ok(());
        }
        if self.broker.lost() {
            return Err("the RabbitMQ connection is lost and auto-recovery gave up".into());
        }
        if self.running.writer_ended.load(Ordering::SeqCst) {
            return Err("the outcome writer stopped: nothing can be acknowledged".into());
        }
        Ok(())
    }
}

/// Counts every reconnection the broker connection reports, until `stop`.
pub async fn count_reconnections(
    reconnections: impl Stream<Item = ()>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut reconnections = std::pin::pin!(reconnections);
    loop {
        tokio::select! {
            next = reconnections.next() => match next {
                Some(()) => {
                    tracing::info!("RabbitMQ connection re-established");
                    metrics.broker_reconnected();
                }
                None => return,
            },
            _ = stop.cancelled() => return,
        }
    }
}

/// Takes the sampled gauges' readings.
#[derive(Debug)]
pub struct Sampler {
    conn: Arc<Connection>,
    channel: Option<Channel>,
    topology: Topology,
    store: Store,
    metrics: Arc<Metrics>,
}

impl Sampler {
    /// `conn` is the worker's; the sampler opens its own channel on it.
    pub fn new(
        conn: Arc<Connection>,
        topology: Topology,
        store: Store,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            conn,
            channel: None,
            topology,
            store,
            metrics,
        }
    }

    async fn queues(&mut self) -> Result<(), courier_amqp::AmqpError> {
        let channel = match &self.channel {
            Some(ch) if ch.status().connected() => ch.clone(),
            _ => {
                let ch = self.conn.create_channel().await.map_err(|cause| {
                    courier_amqp::AmqpError::Broker {
                        op: "open a sampling channel".into(),
                        cause,
                    }
                })?;
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
