//! The worker's hold on RabbitMQ: a consumer per queue on the current
//! connection, and a new connection when that one is lost for good.
//!
//! A connection can be lost for good: the network, a broker restart, or a
//! frame lapin's parser cannot read (a message whose `message_id`, another
//! property or a header name is not UTF-8 kills the whole connection, and
//! comes back first on the next one). lapin's own recovery is off
//! (courier-amqp's `link` says why); this module resubscribes. No
//! released version of the parser (amq-protocol 10.6.3) reads such frames,
//! so the worker must survive them: the supervisor notices the loss within
//! a tenth of a second, ends that connection's consumers (their deliveries
//! return to their queues), counts it, records it in PostgreSQL once per
//! episode, and connects again with a short backoff. Until the message is
//! gone (the queue's delivery limit dead-letters it, after
//! `BROKER_DELIVERY_LIMIT` deliveries) every queue is consumed one delivery
//! at a time, so that no other message is in flight when the connection
//! dies and none gets its delivery count raised with the culprit's.
//!
//! It must never ack, and never stop trying to reconnect while the worker
//! runs: a worker that refuses to run because of one message is the failure
//! this module exists to prevent.

use crate::consumer::{self, Consumer};
use crate::observe::Running;
use crate::patience::{Io, persist};
use crate::pipeline::Pipeline;
use crate::writer::Completed;
use courier_amqp::{Channel, Link, Loss};
use courier_core::retry::DeadReason;
use courier_store::{DeadLetterRow, Outcome, Store};
use courier_telemetry::Metrics;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often the connection's state is looked at.
const WATCH_INTERVAL: Duration = Duration::from_millis(100);
/// First wait before reconnecting, doubled up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// The cap while an unreadable message cycles: each cycle brings it closer
/// to the broker's delivery limit, so cycles should be quick (20 of them
/// take about five seconds).
const BACKOFF_MAX_UNREADABLE: Duration = Duration::from_millis(250);
/// A connection that has lived this long resets the backoff, ends an
/// episode of unreadable messages, and lifts one-at-a-time consuming.
const HEALTHY_AFTER: Duration = Duration::from_secs(5);

/// A subscription handed back at shutdown: it must outlive the writer's
/// acks (dropping it closes its channel, and acks on a closed channel are
/// lost).
pub type Subscription = (Channel, courier_amqp::Consumer);

#[derive(Debug)]
pub struct Supervisor {
    pub link: Link,
    pub pipeline: Arc<Pipeline>,
    pub outcomes: mpsc::Sender<Completed>,
    pub tasks: TaskTracker,
    pub stop: CancellationToken,
    pub running: Arc<Running>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
}

/// One connection's consumers, one per queue (`None`: the unrouted queue).
struct Session {
    cancel: CancellationToken,
    consumers: HashMap<Option<String>, JoinHandle<Subscription>>,
    /// Set while a queue could not be subscribed: when to try again.
    retry_at: Option<Instant>,
}

impl Session {
    /// Ends the consumers and hands their subscriptions back.
    async fn end(self) -> Vec<Subscription> {
        self.cancel.cancel();
        let mut subscriptions = Vec::new();
        for (_, consumer) in self.consumers {
            if let Ok(subscription) = consumer.await {
                subscriptions.push(subscription);
            }
        }
        subscriptions
    }
}

/// Why a session ended.
enum End {
    /// The connection is lost for good: a new one is needed.
    Lost(Loss),
    /// An episode of unreadable messages is over: the queues are subscribed
    /// again at full prefetch (a channel's `basic.qos` does not change the
    /// prefetch of a consumer already running).
    Healthy,
}

/// Runs until `stop`; returns the last connection's subscriptions.
pub async fn run(s: Supervisor) -> Vec<Subscription> {
    let mut backoff = BACKOFF_MIN;
    // Set while an episode of unreadable messages lasts: when it began.
    let mut episode: Option<Instant> = None;
    loop {
        let careful = episode.is_some();
        // Whoever finds the connection lost first replaces it (any user of
        // the link heals it on its next channel): the session watches the
        // connection it subscribed on, by its epoch.
        let epoch = s.link.epoch();
        let mut session = Session {
            cancel: s.stop.child_token(),
            consumers: HashMap::new(),
            retry_at: None,
        };
        let born = Instant::now();
        let end = loop {
            // (Re)subscribe every queue without a running consumer: at once,
            // then after a consumer ended (its channel was closed: the
            // broker's consumer timeout, a deleted queue), at most every
            // BACKOFF_MAX. A reply lapin never resolves (the connection died
            // under it) must not hold the supervisor: the loss is watched.
            if session.retry_at.is_none_or(|at| Instant::now() >= at) {
                let subscribed = tokio::select! {
                    subscribed = subscribe_missing(&s, &mut session, careful) => subscribed,
                    loss = lost(&s.link, epoch) => Err(loss),
                    _ = s.stop.cancelled() => return session.end().await,
                };
                if let Err(loss) = subscribed {
                    break End::Lost(loss);
                }
            }
            tokio::select! {
                _ = s.stop.cancelled() => return session.end().await,
                _ = tokio::time::sleep(WATCH_INTERVAL) => {}
            }
            if let Some(loss) = s.link.loss_since(epoch).await {
                break End::Lost(loss);
            }
            if let Some(queue) = session
                .consumers
                .iter()
                .find(|(_, c)| c.is_finished())
                .map(|(q, _)| q.clone())
            {
                tracing::warn!(queue = ?queue, "a queue consumer ended (its channel was closed, or its queue is gone); subscribing it again");
                if let Some(ended) = session.consumers.remove(&queue) {
                    drop(ended.await);
                }
                session.retry_at.get_or_insert(Instant::now() + BACKOFF_MAX);
            }
            if born.elapsed() >= HEALTHY_AFTER {
                backoff = BACKOFF_MIN;
                if episode.take().is_some() {
                    break End::Healthy;
                }
            }
        };
        drop(session.end().await);
        let loss = match end {
            End::Healthy => {
                tracing::info!(
                    "no unreadable message for {HEALTHY_AFTER:?}: consuming at full prefetch again"
                );
                continue;
            }
            End::Lost(loss) => loss,
        };
        if loss.unreadable {
            s.metrics.unreadable_delivery();
            tracing::error!(detail = %loss.detail, "RabbitMQ delivered a message the AMQP client cannot read; reconnecting and consuming one message at a time until the broker dead-letters it");
            if episode.is_none() {
                episode = Some(Instant::now());
                record_unreadable(&s, &loss).await;
            }
        } else {
            tracing::warn!(detail = %loss.detail, "the RabbitMQ connection is lost for good; reconnecting");
        }
        if !wait(&s.stop, &mut backoff, cap(episode)).await {
            return Vec::new();
        }
        reconnect(&s, &mut backoff, cap(episode)).await;
    }
}

/// The longest wait between reconnections.
fn cap(episode: Option<Instant>) -> Duration {
    if episode.is_some() {
        BACKOFF_MAX_UNREADABLE
    } else {
        BACKOFF_MAX
    }
}

/// Resolves once the connection of `epoch` is lost for good.
async fn lost(link: &Link, epoch: u64) -> Loss {
    loop {
        if let Some(loss) = link.loss_since(epoch).await {
            return loss;
        }
        tokio::time::sleep(WATCH_INTERVAL).await;
    }
}

/// Subscribes every queue of the worker that has no consumer in `session`;
/// `careful`: one delivery at a time. A queue that cannot be subscribed
/// (deleted, say) waits for the next try without holding up the others;
/// `Err` only when the connection is lost.
async fn subscribe_missing(
    s: &Supervisor,
    session: &mut Session,
    careful: bool,
) -> Result<(), Loss> {
    let config = s.pipeline.config();
    let prefetch = if careful {
        1
    } else {
        // Every provider's queue and the unrouted queue.
        config.broker.queue_prefetch(config.providers.len() + 1)
    };
    let queues = config
        .providers
        .values()
        .map(|p| Some(p.name.clone()))
        .chain([None]);
    session.retry_at = None;
    for provider in queues {
        if session.consumers.contains_key(&provider) {
            continue;
        }
        let queue = match &provider {
            Some(p) => s.pipeline.topology().work_queue(p),
            None => s.pipeline.topology().unrouted(),
        };
        let (channel, deliveries) = match courier_amqp::consume(&s.link, &queue, prefetch, "").await
        {
            Ok(subscribed) => subscribed,
            Err(e) => {
                if let Some(loss) = s.link.loss().await {
                    return Err(loss);
                }
                tracing::warn!(%queue, error = %e, "cannot consume this queue; trying again");
                session.retry_at = Some(Instant::now() + BACKOFF_MAX);
                continue;
            }
        };
        s.running.consumers.fetch_add(1, Ordering::SeqCst);
        let consumer = tokio::spawn(consumer::run(Consumer {
            pipeline: s.pipeline.clone(),
            provider: provider.clone(),
            channel,
            deliveries,
            outcomes: s.outcomes.clone(),
            tasks: s.tasks.clone(),
            stop: session.cancel.clone(),
            running: s.running.clone(),
        }));
        session.consumers.insert(provider, consumer);
    }
    Ok(())
}

/// Waits `backoff` (then doubles it) unless `stop` fires first: `false`.
async fn wait(stop: &CancellationToken, backoff: &mut Duration, cap: Duration) -> bool {
    let delay = (*backoff).min(cap);
    *backoff = (delay * 2).min(cap);
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = stop.cancelled() => false,
    }
}

/// Replaces the connection, trying until it works or the worker stops.
async fn reconnect(s: &Supervisor, backoff: &mut Duration, cap: Duration) {
    loop {
        match s.link.reconnect_if_lost().await {
            Ok(()) => {
                tracing::info!("connected to RabbitMQ again");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "reconnecting to RabbitMQ failed; trying again");
                if !wait(&s.stop, backoff, cap).await {
                    return;
                }
            }
        }
    }
}

/// Records an episode of unreadable messages where operators look for what
/// died: a dead letter that says what is known (when, which queues) and
/// where the message will be.
async fn record_unreadable(s: &Supervisor, loss: &Loss) {
    let topology = s.pipeline.topology();
    let queues: Vec<String> = topology
        .providers()
        .iter()
        .map(|p| topology.work_queue(p))
        .chain([topology.unrouted()])
        .collect();
    let detail = format!(
        "RabbitMQ delivered a message the AMQP client cannot read, which closes the connection: {}. \
         It is at the head of one of {}; a property (message_id, type, app_id, …) or a header name \
         is probably not UTF-8. RabbitMQ dead-letters it after {} deliveries, to the dead-letter \
         queue of the queue it was in (<namespace>.dead.<provider>, or .dead._unrouted). \
         Inspect it there with the management UI; Courier cannot read it.",
        loss.detail,
        queues.join(", "),
        courier_amqp::topology::BROKER_DELIVERY_LIMIT,
    );
    let letter = DeadLetterRow::bare(None, DeadReason::Unreadable, &detail);
    let outcome = [Outcome::Rejected {
        job: None,
        dead_letter: letter,
    }];
    let recorded = persist(Io::RecordOutcomes, &s.stop, &s.metrics, || {
        s.store.commit(&outcome)
    })
    .await;
    match recorded {
        Ok(_) => s.metrics.dead_lettered(None, DeadReason::Unreadable),
        Err(e) => tracing::error!(error = %e, "recording the unreadable message failed"),
    }
}
