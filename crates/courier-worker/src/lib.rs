//! Courier's runtime: wires RabbitMQ, the providers and PostgreSQL into the
//! pipeline, and shuts it down without losing work.
//!
//! consume → validate → idempotency check → call → classify → retry/dead
//! publish (confirmed) → record outcome (group commit) → ack.
//!
//! Owns the wiring ([`Worker::start`]), the per-delivery pipeline
//! ([`pipeline`]), the consumers ([`consumer`]), the outcome writer
//! ([`writer`]), what the worker reports about itself ([`observe`]: the
//! readiness probe and the sampled gauges) and shutdown (`shutdown.rs`). Decisions come from courier-core; I/O goes
//! through courier-amqp, courier-provider and courier-store. It must never
//! ack a delivery before its outcome is committed.

pub mod consumer;
pub mod gate;
mod gather;
pub mod lookup;
pub mod observe;
pub mod patience;
pub mod pipeline;
mod shutdown;
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
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
        courier_telemetry::redact::register_url_passwords(config.connection_urls());
        let (telemetry_listener, telemetry_addr) = bind_telemetry(config.telemetry.listen).await?;
        let metrics = Arc::new(Metrics::new(
            &config.providers,
            courier_telemetry::BUILD_COMMIT,
        ));
        for io in patience::Io::ALL {
            metrics.io_operation(io.label());
        }
        let Services {
            store,
            link,
            topology,
            publisher,
            clients,
        } = Services::connect(&config, &metrics).await?;

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
        let config = pipeline.config();

        let running = Arc::new(observe::Running::default());
        running
            .queues
            .store(config.providers.len() + 1, Ordering::SeqCst);
        let writer = spawn_writer(&pipeline, &store, &metrics, &running);

        // Consumers live in the supervisor: it subscribes every queue on
        // the current connection and starts over on a new one when it is
        // lost for good.
        let tasks = TaskTracker::new();
        let supervisor = tokio::spawn(supervisor::run(supervisor::Supervisor {
            link: link.clone(),
            pipeline: pipeline.clone(),
            outcomes: writer.outcomes,
            tasks: tasks.clone(),
            stop: stop.clone(),
            running: running.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
        }));
        if let Some(age) = config.retention.succeeded_attempts {
            tokio::spawn(shutdown::retention(
                store.clone(),
                age,
                config.retention.interval,
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
                config.telemetry.poll_interval,
                stop.clone(),
            )),
        ];
        tracing::info!(
            namespace = %config.namespace,
            providers = config.providers.len(),
            telemetry = %telemetry_addr,
            "worker started"
        );

        let main = tokio::spawn(shutdown::sequence(shutdown::Shutdown {
            stop: stop.clone(),
            abandon,
            flush_abandon: writer.abandon,
            grace: config.worker.shutdown_grace,
            supervisor,
            tasks,
            writer: writer.task,
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

/// Binds the telemetry listener first: a taken port is an operator's to
/// fix before anything connects.
async fn bind_telemetry(
    listen: SocketAddr,
) -> Result<(tokio::net::TcpListener, SocketAddr), WorkerError> {
    let error = |source| WorkerError::Listen {
        addr: listen,
        source,
    };
    let listener = courier_telemetry::server::bind(listen)
        .await
        .map_err(error)?;
    let addr = listener.local_addr().map_err(error)?;
    Ok((listener, addr))
}

/// The connections a worker runs on.
struct Services {
    store: Store,
    link: Link,
    topology: Topology,
    publisher: Publisher,
    clients: HashMap<String, ProviderClient>,
}

impl Services {
    /// Connects to PostgreSQL (migrating when configured) and RabbitMQ
    /// (declaring the topology), and builds each provider's client. The
    /// first connection fails fast (unreachable, refused, TLS): a wrong
    /// address or password is for an operator to fix. Later losses are the
    /// supervisor's to repair.
    async fn connect(config: &Config, metrics: &Arc<Metrics>) -> Result<Services, WorkerError> {
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
        let link = courier_amqp::connect(&config.broker, &name).await?;
        let topology = Topology::new(&config.namespace, config.providers.keys().cloned());
        topology.declare(&link.channel().await?).await?;
        let publisher = Publisher::open(&link, config.broker.confirm_timeout).await?;
        let mut clients = HashMap::new();
        for (name, provider) in &config.providers {
            clients.insert(name.clone(), ProviderClient::new(provider)?);
        }
        Ok(Services {
            store,
            link,
            topology,
            publisher,
            clients,
        })
    }
}

/// The outcome writer, running: where outcomes go, its task, and the token
/// that makes it give up flushing at the end of shutdown.
struct WriterTask {
    outcomes: mpsc::Sender<writer::Completed>,
    task: JoinHandle<()>,
    abandon: CancellationToken,
}

/// Whether the outcome writer and the lookups keep their connections
/// (`courier_store::HeldConnection`): only when the pool has room for them
/// and one more for everything else (the gate, the probe, retention).
pub(crate) fn keeps_connections(config: &courier_core::config::Config) -> bool {
    config.database.max_connections > 1 + lookup::QUERIES_IN_FLIGHT as u32
}

fn spawn_writer(
    pipeline: &Pipeline,
    store: &Store,
    metrics: &Arc<Metrics>,
    running: &Arc<observe::Running>,
) -> WriterTask {
    let config = pipeline.config();
    // Every delivery the broker may have sent us at once.
    let in_flight = usize::from(config.broker.prefetch) * (config.providers.len() + 1);
    let (outcomes, outcome_rx) = mpsc::channel(in_flight);
    let abandon = CancellationToken::new();
    let writer = writer::run(
        store.held_connection(keeps_connections(config)),
        metrics.clone(),
        outcome_rx,
        config.worker.outcome_batch_max,
        config.worker.linger,
        abandon.clone(),
        running.clone(),
    );
    let running = running.clone();
    let task = tokio::spawn(async move {
        writer.await;
        running.writer_ended.store(true, Ordering::SeqCst);
    });
    WriterTask {
        outcomes,
        task,
        abandon,
    }
}
