//! Courier's RabbitMQ edge: connecting, the topology under a namespace,
//! publishing with confirms, consuming, and the binary delay cascade that
//! carries waiting retries.
//!
//! Only this crate knows lapin. It decides nothing about jobs: what to retry,
//! when and why comes from courier-core; this crate only moves bytes where it
//! is told, and reports every failure as an [`AmqpError`].

mod channel;
pub mod delay;
pub mod headers;
mod link;
pub mod publish;
pub mod topology;

pub use channel::{Acker, Channel, Consumer, Delivery};
pub use headers::DeliveryMeta;
pub use link::{Link, Loss};
pub use publish::Publisher;
pub use topology::Topology;

use courier_core::Failure;
use courier_core::config::BrokerConfig;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::types::FieldTable;
use std::sync::Arc;

/// Broker errors. The lapin error is part of the message, not a `source`:
/// its own `Display` already includes its causes, and a chain would repeat them.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    #[error("cannot reach RabbitMQ at {addr}: {cause}")]
    Connect { addr: String, cause: String },
    #[error("{op} failed: {cause}")]
    Broker { op: String, cause: lapin::Error },
    #[error("publishing to {exchange:?} failed: {cause}")]
    Publish {
        exchange: String,
        cause: lapin::Error,
    },
    #[error("RabbitMQ refused (nacked) a publish to exchange {exchange:?} with key {key:?}")]
    Nacked { exchange: String, key: String },
    #[error("no queue is bound for exchange {exchange:?} and key {key:?}: the message came back")]
    Returned { exchange: String, key: String },
    #[error("{op}: no answer from RabbitMQ in time")]
    Timeout { op: String },
    #[error("message refused before publishing: {0}")]
    TooLarge(String),
    #[error("cannot {op}: the delivery's channel is closed; the broker will redeliver it")]
    Unsettled { op: &'static str },
}

impl AmqpError {
    pub(crate) fn broker(op: impl Into<String>) -> impl FnOnce(lapin::Error) -> AmqpError {
        let op = op.into();
        move |cause| AmqpError::Broker { op, cause }
    }

    /// What retrying can achieve; decided here, once, for every caller.
    ///
    /// A broker error that closes a channel or the connection fails every
    /// publish in flight on it, not only the one that caused it, so such
    /// errors are transient for each publish: Courier bounds what it puts in
    /// a message beforehand ([`AmqpError::TooLarge`]), and the caller may
    /// treat a publish refused over and over as refused for good.
    pub fn failure(&self) -> Failure {
        match self {
            AmqpError::Connect { .. } => Failure::Setup,
            AmqpError::Broker { cause, .. } => failure_of(cause, false),
            AmqpError::Publish { cause, .. } => failure_of(cause, true),
            // Nacks come from a queue that cannot take the message now
            // (`reject-publish` overflow, a quorum queue without a leader).
            AmqpError::Nacked { .. } | AmqpError::Timeout { .. } | AmqpError::Unsettled { .. } => {
                Failure::Transient
            }
            // A binding is missing: the topology was changed under us.
            AmqpError::Returned { .. } => Failure::Setup,
            AmqpError::TooLarge(_) => Failure::Refused,
        }
    }

    /// Whether the broker closed the channel or connection while this
    /// publish was in flight (see [`AmqpError::failure`]).
    pub fn is_broker_refusal(&self) -> bool {
        matches!(self, AmqpError::Publish { cause, .. } if matches!(cause.kind(), lapin::ErrorKind::ProtocolError(_)))
    }
}

/// How long the broker may take to answer a request (open a channel, set a
/// prefetch, start or cancel a consumer, declare).
pub const REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long an ack or nack may take to leave. It needs no answer, only the
/// connection's writer: a connection that died without lapin resolving its
/// pending requests (a parse error ends its I/O loop) would hold the outcome
/// writer, and every delivery behind it, forever.
const SETTLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Awaits a lapin request for at most `limit`. Every request to the broker
/// goes through here: lapin resolves none of them when its connection dies
/// under it in some ways, and an unbounded wait stalls whoever waits.
pub(crate) async fn within<T>(
    limit: std::time::Duration,
    op: impl Into<String>,
    request: impl std::future::Future<Output = Result<T, lapin::Error>>,
) -> Result<T, AmqpError> {
    match tokio::time::timeout(limit, request).await {
        Ok(answer) => answer.map_err(AmqpError::broker(op)),
        Err(_) => Err(AmqpError::Timeout { op: op.into() }),
    }
}

/// The class of a lapin error. lapin's enum is `#[non_exhaustive]`: a kind a
/// future version adds counts as transient (retried, reported).
fn failure_of(e: &lapin::Error, publishing: bool) -> Failure {
    match e.kind() {
        lapin::ErrorKind::IOError(_)
        | lapin::ErrorKind::RuntimeShutdownError(_)
        | lapin::ErrorKind::MissingHeartbeatError
        | lapin::ErrorKind::InvalidChannel(_)
        | lapin::ErrorKind::InvalidChannelState(..)
        | lapin::ErrorKind::InvalidConnectionState(_)
        | lapin::ErrorKind::ChannelsLimitReached
        | lapin::ErrorKind::FutureCompleted
        // The connection is lost and a new one will be made.
        | lapin::ErrorKind::ParsingError(_) => Failure::Transient,
        // Our frame could not be encoded: this message's fault.
        lapin::ErrorKind::SerialisationError(_) => Failure::Refused,
        lapin::ErrorKind::InvalidProtocolVersion(_)
        | lapin::ErrorKind::AuthProviderError(_)
        | lapin::ErrorKind::NoDefaultRuntime => Failure::Setup,
        lapin::ErrorKind::ProtocolError(amqp) => match amqp.kind() {
            AMQPErrorKind::Soft(soft) => match soft {
                AMQPSoftError::CONTENTTOOLARGE | AMQPSoftError::RESOURCELOCKED => {
                    Failure::Transient
                }
                // On a publish, a precondition is the message's (its size);
                // on a declare, the topology's (other arguments).
                AMQPSoftError::PRECONDITIONFAILED if publishing => Failure::Transient,
                AMQPSoftError::PRECONDITIONFAILED
                | AMQPSoftError::NOROUTE
                | AMQPSoftError::NOCONSUMERS
                | AMQPSoftError::ACCESSREFUSED
                | AMQPSoftError::NOTFOUND => Failure::Setup,
            },
            AMQPErrorKind::Hard(hard) => match hard {
                AMQPHardError::CONNECTIONFORCED
                | AMQPHardError::CHANNELERROR
                | AMQPHardError::RESOURCEERROR
                | AMQPHardError::INTERNALERROR
                | AMQPHardError::FRAMEERROR
                | AMQPHardError::SYNTAXERROR
                | AMQPHardError::COMMANDINVALID
                | AMQPHardError::UNEXPECTEDFRAME => Failure::Transient,
                AMQPHardError::INVALIDPATH
                | AMQPHardError::NOTALLOWED
                | AMQPHardError::NOTIMPLEMENTED => Failure::Setup,
            },
        },
        _ => Failure::Transient,
    }
}

/// Connects to the broker `broker` describes (TLS for `amqps://`). See
/// [`Link::connect`].
pub async fn connect(broker: &BrokerConfig, connection_name: &str) -> Result<Link, AmqpError> {
    Link::connect(broker, connection_name).await
}

/// `host:port` of a broker URL, without credentials, for messages.
pub fn broker_address(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

/// Opens a channel consuming `queue` with at most `prefetch` deliveries
/// unacknowledged, manual acks. Dropping the returned [`Consumer`] closes its
/// channel, after which its deliveries can no longer be acked: keep it until
/// every delivery it gave out is settled.
pub async fn consume(
    link: &Link,
    queue: &str,
    prefetch: u16,
    consumer_tag: &str,
) -> Result<(Channel, Consumer), AmqpError> {
    let channel = link.channel().await?;
    set_prefetch(&channel, prefetch).await?;
    let consumer = within(
        REPLY_TIMEOUT,
        "basic.consume",
        channel.inner.basic_consume(
            queue.into(),
            consumer_tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    let acks = channel.acks.clone();
    Ok((
        channel,
        Consumer {
            inner: consumer,
            acks,
        },
    ))
}

/// Acknowledges a delivery on its own: the broker forgets it.
pub async fn ack(acker: &Acker) -> Result<(), AmqpError> {
    let sent = within(
        SETTLE_TIMEOUT,
        "basic.ack",
        acker.inner.ack(lapin::options::BasicAckOptions::default()),
    )
    .await;
    // Sent or not, the tag is no longer ours to cover: a channel that lost
    // the frame is closing, and its deliveries go back to the queue.
    acker.channel.window().window.settled(acker.tag);
    if sent? {
        Ok(())
    } else {
        Err(AmqpError::Unsettled { op: "ack" })
    }
}

/// Ack frames sent by [`ack_committed`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AcksSent {
    /// `basic.ack` frames with `multiple`, each covering several deliveries.
    pub multiple: usize,
    /// Frames acking one delivery.
    pub single: usize,
}

/// Acknowledges deliveries whose outcomes are committed, with as few frames
/// as the rule of [`courier_core::acks`] allows: per channel, one multiple
/// ack for the committed deliveries with nothing uncommitted before them
/// (deliveries acked or settled earlier aside), one ack each for the rest.
/// A delivery still in hand is never covered. Every channel is tried; the
/// first error is returned once all were.
pub async fn ack_committed<'a>(
    ackers: impl IntoIterator<Item = &'a Acker>,
) -> Result<AcksSent, AmqpError> {
    let mut channels: Vec<&Arc<channel::ChannelAcks>> = Vec::new();
    for acker in ackers {
        let mut held = acker.channel.window();
        if held.window.committed(acker.tag) {
            held.committed.insert(acker.tag, acker.inner.clone());
        }
        drop(held);
        if !channels.iter().any(|c| Arc::ptr_eq(c, &acker.channel)) {
            channels.push(&acker.channel);
        }
    }
    let mut sent = AcksSent::default();
    let mut first_error = None;
    for acks in channels {
        match ack_channel(acks).await {
            Ok(frames) => {
                sent.multiple += frames.multiple;
                sent.single += frames.single;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(sent), Err)
}

async fn ack_channel(acks: &channel::ChannelAcks) -> Result<AcksSent, AmqpError> {
    let _sending = acks.sending.lock().await;
    let frames: Vec<(lapin::Acker, bool)> = {
        let mut held = acks.window();
        let plan = held.window.take();
        let multiple = plan.covered > 1;
        let through = plan.through.map(|tag| (tag, multiple));
        let mut frames = Vec::with_capacity(plan.frames());
        for (tag, multiple) in through
            .into_iter()
            .chain(plan.singles.iter().map(|&tag| (tag, false)))
        {
            if let Some(acker) = held.committed.remove(&tag) {
                frames.push((acker, multiple));
            }
        }
        // Every committed delivery was taken: the prefix's other handles
        // are settled by the multiple ack.
        held.committed.clear();
        frames
    };
    let sent = AcksSent {
        multiple: frames.iter().filter(|(_, m)| *m).count(),
        single: frames.iter().filter(|(_, m)| !*m).count(),
    };
    let sends = frames.iter().map(|(acker, multiple)| {
        within(
            SETTLE_TIMEOUT,
            "basic.ack",
            acker.ack(lapin::options::BasicAckOptions {
                multiple: *multiple,
            }),
        )
    });
    // Queued in this order on the channel; awaited together.
    for result in futures_util::future::join_all(sends).await {
        if !result? {
            return Err(AmqpError::Unsettled { op: "ack" });
        }
    }
    Ok(sent)
}

/// Returns a delivery to its queue for another consumer.
pub async fn requeue(acker: &Acker) -> Result<(), AmqpError> {
    nack(acker, true, "requeue").await
}

/// Refuses a delivery without requeueing it: the queue's dead-letter
/// exchange takes it (the last resort when even its dead letter cannot be
/// recorded).
pub async fn reject(acker: &Acker) -> Result<(), AmqpError> {
    nack(acker, false, "reject").await
}

async fn nack(acker: &Acker, requeue: bool, op: &'static str) -> Result<(), AmqpError> {
    let options = lapin::options::BasicNackOptions {
        requeue,
        ..lapin::options::BasicNackOptions::default()
    };
    let sent = within(SETTLE_TIMEOUT, "basic.nack", acker.inner.nack(options)).await;
    acker.channel.window().window.settled(acker.tag);
    if sent? {
        Ok(())
    } else {
        Err(AmqpError::Unsettled { op })
    }
}

/// Changes how many unacked deliveries the broker may send on `channel`
/// (applies to deliveries from now on).
pub async fn set_prefetch(channel: &Channel, prefetch: u16) -> Result<(), AmqpError> {
    within(
        REPLY_TIMEOUT,
        "basic.qos",
        channel
            .inner
            .basic_qos(prefetch, BasicQosOptions::default()),
    )
    .await
}

/// Tells the broker to stop sending `consumer` deliveries.
pub async fn cancel(channel: &Channel, consumer: &Consumer) -> Result<(), AmqpError> {
    within(
        REPLY_TIMEOUT,
        "basic.cancel",
        channel.inner.basic_cancel(
            consumer.inner.tag(),
            lapin::options::BasicCancelOptions::default(),
        ),
    )
    .await
}

/// Closes `channel` and waits for the broker to confirm it. The broker
/// handles what was sent on the channel before the close (the last acks)
/// first. Close a channel this way before closing its connection: a channel
/// that is only dropped closes later, on lapin's own time, and when that
/// races the connection's close lapin tears the connection down, and the
/// broker can drop acks it had already received.
pub async fn close(channel: &Channel) -> Result<(), AmqpError> {
    within(
        REPLY_TIMEOUT,
        "channel.close",
        channel.inner.close(200, "OK".into()),
    )
    .await
}

/// Takes one message from `queue` without consuming it for good: it stays
/// unacked until acked or requeued. `None` when the queue is empty.
pub async fn get(channel: &Channel, queue: &str) -> Result<Option<Delivery>, AmqpError> {
    let message = within(
        REPLY_TIMEOUT,
        "basic.get",
        channel.inner.basic_get(
            queue.into(),
            lapin::options::BasicGetOptions { no_ack: false },
        ),
    )
    .await?;
    Ok(message.map(|m| Delivery::taken(m.delivery, &channel.acks)))
}

/// Whether the broker connection is usable right now: up (not reconnecting
/// or closed). Reads state lapin keeps; no round trip.
#[derive(Clone, Debug)]
pub struct BrokerHealth {
    connection: lapin::ConnectionStatus,
}

impl BrokerHealth {
    pub(crate) fn of_connection(conn: &lapin::Connection) -> Self {
        Self {
            connection: conn.status().clone(),
        }
    }

    /// `Err` says what is wrong, for a readiness answer.
    pub fn check(&self) -> Result<(), String> {
        if !self.connection.connected() {
            return Err("not connected (reconnecting)".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn broker_address_drops_credentials_and_vhost() {
        assert_eq!(
            super::broker_address("amqp://u:p@host:5672/%2f"),
            "host:5672"
        );
        assert_eq!(
            super::broker_address("amqp://127.0.0.1:5672"),
            "127.0.0.1:5672"
        );
    }
}
