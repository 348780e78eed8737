//! Courier's RabbitMQ edge: connecting, the topology under a namespace,
//! publishing with confirms, consuming, and the binary delay cascade that
//! carries waiting retries.
//!
//! Only this crate knows lapin. It decides nothing about jobs: what to retry,
//! when and why comes from courier-core; this crate only moves bytes where it
//! is told, and reports every failure as an [`AmqpError`].

pub mod delay;
pub mod headers;
pub mod publish;
pub mod topology;

pub use headers::DeliveryMeta;
pub use lapin::message::Delivery;
pub use lapin::{Acker, BasicProperties, Channel, Connection, Consumer};
pub use publish::Publisher;
pub use topology::Topology;

use lapin::ConnectionProperties;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use std::time::Duration;

/// Broker errors. The lapin error is part of the message, not a `source`:
/// its own `Display` already includes its causes, and a chain would repeat them.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    #[error("cannot reach RabbitMQ at {addr}: {cause}")]
    Connect { addr: String, cause: String },
    #[error("{op} failed: {cause}")]
    Broker { op: String, cause: lapin::Error },
    #[error("RabbitMQ refused (nacked) a publish to exchange {exchange:?} with key {key:?}")]
    Nacked { exchange: String, key: String },
    #[error("no queue is bound for exchange {exchange:?} and key {key:?}: the message came back")]
    Returned { exchange: String, key: String },
    #[error("cannot {op}: the delivery's channel is closed; the broker will redeliver it")]
    Unsettled { op: &'static str },
}

impl AmqpError {
    pub(crate) fn broker(op: impl Into<String>) -> impl FnOnce(lapin::Error) -> AmqpError {
        let op = op.into();
        move |cause| AmqpError::Broker { op, cause }
    }
}

/// How long the first connection may take before we say the broker is
/// unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Connects with lapin's automatic recovery on: connections, channels,
/// topology and consumers come back by themselves after a broker restart.
/// The first connection fails fast instead: recovery's reconnect schedule is
/// for brokers that went away, not for one that was never there.
pub async fn connect(url: &str, connection_name: &str) -> Result<Connection, AmqpError> {
    let addr = broker_address(url);
    let unreachable = |cause: String| AmqpError::Connect {
        addr: addr.clone(),
        cause,
    };
    let uri: lapin::uri::AMQPUri = url
        .parse()
        .map_err(|e: String| unreachable(format!("invalid URL: {e}")))?;
    let probe = tokio::net::TcpStream::connect((uri.authority.host.as_str(), uri.authority.port));
    match tokio::time::timeout(CONNECT_TIMEOUT, probe).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(unreachable(e.to_string())),
        Err(_) => return Err(unreachable(format!("no answer within {CONNECT_TIMEOUT:?}"))),
    }
    let props = ConnectionProperties::default()
        .with_connection_name(connection_name.into())
        .enable_auto_recover();
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, props)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable(format!(
            "no AMQP handshake within {CONNECT_TIMEOUT:?}"
        ))),
    }
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
    conn: &Connection,
    queue: &str,
    prefetch: u16,
    consumer_tag: &str,
) -> Result<(Channel, Consumer), AmqpError> {
    let channel = conn
        .create_channel()
        .await
        .map_err(AmqpError::broker("open channel"))?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .map_err(AmqpError::broker("basic.qos"))?;
    let consumer = channel
        .basic_consume(
            queue.into(),
            consumer_tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(AmqpError::broker(format!("consume {queue}")))?;
    Ok((channel, consumer))
}

/// Acknowledges a delivery: the broker forgets it.
pub async fn ack(acker: &Acker) -> Result<(), AmqpError> {
    let sent = acker
        .ack(lapin::options::BasicAckOptions::default())
        .await
        .map_err(AmqpError::broker("basic.ack"))?;
    if sent {
        Ok(())
    } else {
        Err(AmqpError::Unsettled { op: "ack" })
    }
}

/// Returns a delivery to its queue for another consumer.
pub async fn requeue(acker: &Acker) -> Result<(), AmqpError> {
    let options = lapin::options::BasicNackOptions {
        requeue: true,
        ..lapin::options::BasicNackOptions::default()
    };
    let sent = acker
        .nack(options)
        .await
        .map_err(AmqpError::broker("basic.nack"))?;
    if sent {
        Ok(())
    } else {
        Err(AmqpError::Unsettled { op: "requeue" })
    }
}

/// Tells the broker to stop sending `consumer` deliveries.
pub async fn cancel(channel: &Channel, consumer: &Consumer) -> Result<(), AmqpError> {
    channel
        .basic_cancel(
            consumer.tag(),
            lapin::options::BasicCancelOptions::default(),
        )
        .await
        .map_err(AmqpError::broker("basic.cancel"))
}

/// Takes one message from `queue` without consuming it for good: it stays
/// unacked until acked or requeued. `None` when the queue is empty.
pub async fn get(channel: &Channel, queue: &str) -> Result<Option<Delivery>, AmqpError> {
    let message = channel
        .basic_get(
            queue.into(),
            lapin::options::BasicGetOptions { no_ack: false },
        )
        .await
        .map_err(AmqpError::broker(format!("basic.get from {queue}")))?;
    Ok(message.map(|m| m.delivery))
}

/// Whether the broker is usable right now: the connection is up (not
/// reconnecting or closed) and the publisher's confirm channel is open.
/// Cheap to clone and to ask; it reads state lapin keeps, no round trip.
#[derive(Clone, Debug)]
pub struct BrokerHealth {
    connection: lapin::ConnectionStatus,
    publisher: lapin::ChannelStatus,
}

impl BrokerHealth {
    pub fn of(conn: &Connection, publisher: &Publisher) -> Self {
        Self {
            connection: conn.status().clone(),
            publisher: publisher.channel_status(),
        }
    }

    /// The connection is gone for good: closed, or failed beyond what
    /// auto-recovery retries.
    pub fn lost(&self) -> bool {
        self.connection.closed() || self.connection.errored()
    }

    /// `Err` says what is wrong, for a readiness answer.
    pub fn check(&self) -> Result<(), String> {
        if self.connection.reconnecting() {
            return Err("connection lost; reconnecting".into());
        }
        if !self.connection.connected() {
            return Err("not connected".into());
        }
        if !self.publisher.connected() {
            return Err("publisher channel not open".into());
        }
        Ok(())
    }
}

/// Yields once each time auto-recovery re-establishes `conn`.
pub fn reconnections(conn: &Connection) -> impl futures_util::Stream<Item = ()> + Send + 'static {
    use futures_util::StreamExt;
    conn.events_listener().filter_map(|event| async move {
        match event {
            lapin::Event::Connected => Some(()),
            lapin::Event::Error(e) => {
                tracing::warn!(error = %e, "RabbitMQ connection error");
                None
            }
            _ => None,
        }
    })
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
