//! One queue's consumer: takes deliveries (as many as the prefetch lets the
//! broker send), runs each through the pipeline, hands outcomes to the
//! writer. The provider's concurrency cap applies to its calls only, inside
//! the pipeline, so database round trips never hold a call slot.
//!
//! Owns the consume loop and what happens to a delivery whose processing was
//! abandoned (it goes back to its queue). It must never ack: acks belong to
//! the writer, after the commit.

use crate::observe::Running;
use crate::pipeline::Pipeline;
use crate::writer::Completed;
use courier_amqp::Channel;
use futures_util::StreamExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Longest the broker may take to confirm a consumer's cancel.
const CANCEL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug)]
pub struct Consumer {
    pub pipeline: Arc<Pipeline>,
    /// `None` for the unrouted queue.
    pub provider: Option<String>,
    pub channel: Channel,
    pub deliveries: courier_amqp::Consumer,
    pub outcomes: mpsc::Sender<Completed>,
    pub tasks: TaskTracker,
    /// Fired at shutdown, or when this consumer's connection is lost.
    pub stop: CancellationToken,
    /// Told when this consumer's loop ends.
    pub running: Arc<Running>,
}

/// Consumes until `stop`, then cancels the broker subscription and hands the
/// subscription back: it must outlive the writer's acks (dropping it closes
/// the channel, and acks on a closed channel are lost).
pub async fn run(mut c: Consumer) -> (Channel, courier_amqp::Consumer) {
    let queue = c.deliveries.queue();
    loop {
        let delivery = tokio::select! {
            _ = c.stop.cancelled() => break,
            next = c.deliveries.next() => match next {
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    // A closed channel ends this consumer (the supervisor
                    // subscribes the queue again); anything else, wait.
                    if !c.channel.is_open() {
                        tracing::warn!(%queue, error = %e, "the consumer's channel is closed");
                        break;
                    }
                    tracing::warn!(%queue, error = %e, "consumer error; waiting");
                    tokio::select! {
                        _ = c.stop.cancelled() => break,
                        _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => continue,
                    }
                }
                None => {
                    tracing::info!(%queue, "consumer cancelled by the broker");
                    break;
                }
            },
        };
        let in_flight = c.pipeline.metrics().received(c.provider.as_deref());
        let pipeline = c.pipeline.clone();
        let provider = c.provider.clone();
        let outcomes = c.outcomes.clone();
        c.tasks.spawn(async move {
            let _in_flight = in_flight;
            match pipeline.process(provider.as_deref(), &delivery).await {
                Ok(handled) => {
                    // A writer stuck on PostgreSQL fills the channel; at
                    // shutdown's end the delivery goes back instead.
                    let room = tokio::select! {
                        room = outcomes.reserve() => room,
                        _ = pipeline.abandoned().cancelled() => {
                            let _ = courier_amqp::requeue(&delivery.acker).await;
                            return;
                        }
                    };
                    match room {
                        Ok(room) => room.send(Completed {
                            outcome: handled.outcome,
                            turn: handled.turn,
                            acker: delivery.acker,
                            queue_provider: provider,
                        }),
                        Err(_) => tracing::error!(
                            "outcome writer is gone; the delivery will be redelivered"
                        ),
                    }
                }
                Err(_abandoned) => {
                    if let Err(e) = courier_amqp::requeue(&delivery.acker).await {
                        tracing::debug!(error = %e, "nack of an abandoned delivery; the broker requeues it on close");
                    }
                }
            }
        });
    }
    c.running.consumers.fetch_sub(1, Ordering::SeqCst);
    // Stop the broker sending more; what it already sent and we did not take
    // stays unacked and returns to the queue when the channel closes.
    // Bounded: a reply lost in a reconnect must not hold up shutdown.
    match tokio::time::timeout(
        CANCEL_DEADLINE,
        courier_amqp::cancel(&c.channel, &c.deliveries),
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(%queue, error = %e, "cancelling the consumer"),
        Err(_) => tracing::warn!(%queue, "the broker did not confirm the consumer's cancel"),
    }
    (c.channel, c.deliveries)
}
