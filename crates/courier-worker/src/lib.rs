//! Courier's runtime: wires RabbitMQ, the providers and PostgreSQL into the
//! pipeline, and shuts it down without losing work.
//!
//! consume → validate → idempotency check → call → classify → retry/dead
//! publish (confirmed) → record outcome (group commit) → ack.
//!
//! Owns the wiring ([`Worker::start`]), the per-delivery pipeline
//! ([`pipeline`]), the consumers ([`consumer`]), the outcome writer
//! ([`writer`]), what the worker reports about itself ([`observe`]: the
//! readiness probe and the sampled gauges) and shutdown. Decisions come from courier-core; I/O goes
//! through courier-amqp, courier-provider and courier-store. It must never
//! ack a delivery before its outcome is committed.

pub mod consumer;
pub mod gate;
pub mod lookup;
pub mod observe;
pub mod patience;
pub mod pipeline;
pub mod supervisor;
pub mod turns;
pub mod writer;

use courier_amqp::{AmqpError, Link, Publisher, Topology};
use courier_core::Config;
use courier_provider::{ProviderClient, ProviderError};
use courier_store::{Store, StoreError};
use courier_telemetry::Metrics;
use pipeline::Pipeline;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long shutdown gives the outcome writer to flush after in-flight work
/// has finished or been abandoned.
const FLUSH_DEADLINE: Duration = Duration::from_secs(10);
/// How long shutdown waits for the broker to confirm a close, and for the
/// telemetry tasks to end.
const STEP_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Amqp(#[from] AmqpError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("telemetry.listen: cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running worker.
#[derive(Debug)]
pub struct Worker {
    stop: CancellationToken,
    main: JoinHandle<()>,
    telemetry_addr: SocketAddr,
    metrics: Arc<Metrics>,
}

impl Worker {
    /// Connects, migrates (when configured), declares the topology and starts
    /// consuming every provider's queue and the unrouted queue.
    pub async fn start(config: Config) -> Result<Worker, WorkerError> {
        courier_telemetry::redact::register_url_passwords([
            config.broker.url.as_str(),
            config.database.url.as_str(),
        ]);
        let listen = config.telemetry.listen;
        let telemetry_listener =
            courier_telemetry::server::bind(listen)
                .await
                .map_err(|source| WorkerError::Listen {
                    addr: listen,
                    source,
                })?;
        let telemetry_addr =
            telemetry_listener
                .local_addr()
                .map_err(|source| WorkerError::Listen {
                    addr: listen,
                    source,
                })?;
        let metrics = Arc::new(Metrics::new(
            &config.providers,
            courier_telemetry::BUILD_COMMIT,
        ));
        for io in patience::Io::ALL {
            metrics.io_operation(io.label());
        }
        let counted = metrics.clone();
        let store = Store::connect_observed(
            &config.database,
            &config.namespace,
            config.database.max_connections,
            Some(Arc::new(move || counted.database_connection_opened())),
        )
        .await?;
        if config.database.migrate_on_start {
            store.migrate().await?;
        }
        let name = format!(
            "courier-worker {} pid {}",
            config.namespace,
            std::process::id()
        );
        // The first connection fails fast (unreachable, refused, TLS): a
        // wrong address or password is for an operator to fix. Later losses
        // are the supervisor's to repair.
        let link = courier_amqp::connect(&config.broker, &name).await?;
        let topology = Topology::new(&config.namespace, config.providers.keys().cloned());
        topology.declare(&link.channel().await?).await?;
        let publisher = Publisher::open(&link, config.broker.confirm_timeout).await?;
        let mut clients = HashMap::new();
        for (name, provider) in &config.providers {
            clients.insert(name.clone(), ProviderClient::new(provider)?);
        }

        let stop = CancellationToken::new();
        let abandon = CancellationToken::new();
        let gate = gate::Gate::start(&config, store.clone(), metrics.clone(), stop.clone()).await?;
        let pipeline = Arc::new(Pipeline::new(
            config,
            topology,
            publisher,
            store.clone(),
            clients,
            stop.clone(),
            abandon.clone(),
            metrics.clone(),
            gate,
        ));

        let running = Arc::new(observe::Running::default());
        running
            .queues
            .store(pipeline.config().providers.len() + 1, Ordering::SeqCst);
        // Every delivery the broker may have sent us at once.
        let in_flight = usize::from(pipeline.config().broker.prefetch)
            * (pipeline.config().providers.len() + 1);
        let (outcomes, outcome_rx) = mpsc::channel(in_flight);
        let flush_abandon = CancellationToken::new();
        let writer = tokio::spawn({
            let writer = writer::run(
                store.clone(),
                metrics.clone(),
                outcome_rx,
                pipeline.config().worker.outcome_batch_max,
                flush_abandon.clone(),
                running.clone(),
            );
            let running = running.clone();
            async move {
                writer.await;
                running.writer_ended.store(true, Ordering::SeqCst);
            }
        });

        // Consumers live in the supervisor: it subscribes every queue on
        // the current connection and starts over on a new one when it is
        // lost for good.
        let tasks = TaskTracker::new();
        let supervisor = tokio::spawn(supervisor::run(supervisor::Supervisor {
            link: link.clone(),
            pipeline: pipeline.clone(),
            outcomes,
            tasks: tasks.clone(),
            stop: stop.clone(),
            running: running.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
        }));
        if let Some(age) = pipeline.config().retention.succeeded_attempts {
            tokio::spawn(retention(
                store.clone(),
                age,
                pipeline.config().retention.interval,
                stop.clone(),
            ));
        }

        // What the worker reports about itself; `/readyz` answers
        // "draining" until the very end of shutdown.
        let telemetry_stop = CancellationToken::new();
        let probe = observe::WorkerProbe::new(link.clone(), store.clone(), stop.clone(), running);
        let reporters = vec![
            tokio::spawn(courier_telemetry::server::serve(
                telemetry_listener,
                metrics.clone(),
                Arc::new(probe),
                telemetry_stop.clone(),
            )),
            tokio::spawn(observe::count_reconnections(
                link.clone(),
                metrics.clone(),
                telemetry_stop.clone(),
            )),
            tokio::spawn(observe::sample(
                observe::Sampler::new(
                    link.clone(),
                    pipeline.topology().clone(),
                    store.clone(),
                    metrics.clone(),
                ),
                pipeline.config().telemetry.poll_interval,
                stop.clone(),
            )),
        ];
        tracing::info!(
            namespace = %pipeline.config().namespace,
            providers = pipeline.config().providers.len(),
            telemetry = %telemetry_addr,
            "worker started"
        );

        let main = tokio::spawn(shutdown_sequence(Shutdown {
            stop: stop.clone(),
            abandon,
            flush_abandon,
            grace: pipeline.config().worker.shutdown_grace,
            supervisor,
            tasks,
            writer,
            link,
            store,
            telemetry_stop,
            reporters,
        }));
        Ok(Worker {
            stop,
            main,
            telemetry_addr,
            metrics,
        })
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served (the real port
    /// when `telemetry.listen` asked for port 0).
    pub fn telemetry_addr(&self) -> SocketAddr {
        self.telemetry_addr
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Begins graceful shutdown: stop consuming, finish or requeue in-flight
    /// work, flush outcomes. Returns at once; [`Worker::wait`] for the end.
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    /// Waits until the worker has shut down.
    pub async fn wait(self) {
        if let Err(e) = self.main.await {
            tracing::error!(error = %e, "worker shutdown task failed");
        }
    }
}

/// Applies `retention.succeeded_attempts` every `interval` until `stop`.
async fn retention(store: Store, age: Duration, interval: Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.cancelled() => return,
        }
        let cutoff =
            chrono::Utc::now() - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
        match store.prune_succeeded_attempts(cutoff, 10_000).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(
                pruned,
                "retention: deleted attempt rows of old succeeded jobs"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "retention pass failed; trying again next interval")
            }
        }
    }
}

struct Shutdown {
    stop: CancellationToken,
    abandon: CancellationToken,
    flush_abandon: CancellationToken,
    grace: Duration,
    /// Hands back the last connection's subscriptions when it ends.
    supervisor: JoinHandle<Vec<supervisor::Subscription>>,
    tasks: TaskTracker,
    writer: JoinHandle<()>,
    link: Link,
    store: Store,
    /// Fired last: `/readyz` answers "draining" until the very end.
    telemetry_stop: CancellationToken,
    /// The telemetry server, the reconnection counter, the sampler.
    reporters: Vec<JoinHandle<()>>,
}

async fn shutdown_sequence(s: Shutdown) {
    s.stop.cancelled().await;
    tracing::info!("shutting down: no new deliveries; finishing in-flight jobs");
    // Held until the writer has acked: dropping a subscription closes its
    // channel and strands the acks of its deliveries.
    let subscriptions = s.supervisor.await.unwrap_or_default();
    s.tasks.close();
    if tokio::time::timeout(s.grace, s.tasks.wait()).await.is_err() {
        tracing::warn!(
            unfinished = s.tasks.len(),
            "shutdown grace period over: requeuing jobs still in flight"
        );
        s.abandon.cancel();
        if tokio::time::timeout(FLUSH_DEADLINE, s.tasks.wait())
            .await
            .is_err()
        {
            tracing::error!(
                unfinished = s.tasks.len(),
                "jobs still in flight after abandoning them; their deliveries return when the connection closes"
            );
        }
    }
    // Every sender is gone now, so the writer ends once it has flushed.
    let mut writer = s.writer;
    if tokio::time::timeout(FLUSH_DEADLINE, &mut writer)
        .await
        .is_err()
    {
        tracing::error!(
            "outcome writer could not flush in time: its deliveries stay unacked and will be redelivered"
        );
        s.flush_abandon.cancel();
        let _ = writer.await;
    }
    drop(subscriptions);
    // Closing the connection returns every unacked delivery to its queue.
    if let Err(e) = s.link.close("courier worker shutdown").await {
        tracing::debug!(error = %e, "closing the broker connection");
    }
    s.store.close().await;
    s.telemetry_stop.cancel();
    for mut reporter in s.reporters {
        if tokio::time::timeout(STEP_DEADLINE, &mut reporter)
            .await
            .is_err()
        {
            reporter.abort();
        }
    }
    tracing::info!("worker stopped");
}
