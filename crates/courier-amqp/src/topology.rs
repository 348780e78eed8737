//! Exchanges and queues under a namespace prefix, declared idempotently.
//!
//! Owns every name Courier gives a broker object and the arguments each is
//! declared with. Declaring twice is harmless; teardown removes exactly what
//! declare made (tests and the demo rely on that). It must never purge or
//! delete anything outside its namespace.
//!
//! ```text
//! <ns>.jobs (direct, key = provider) ──► <ns>.work.<provider> (quorum) ──► worker
//!    └─ alternate-exchange ─► <ns>.unrouted (fanout) ──► <ns>.unrouted (quorum)
//! worker ─ retry ─► <ns>.delay.<k> … <ns>.delay.0 ─► <ns>.retry (topic, #.provider) ─► work queue
//! worker ─ dead  ─► <ns>.dead (direct, key = provider | _unrouted) ─► <ns>.dead.<provider>
//! ```

use crate::Channel;
use crate::delay::{self, LEVELS};
use crate::{AmqpError, REPLY_TIMEOUT, within};
use lapin::ExchangeKind;
use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// Routing key and queue suffix of dead letters whose provider is unknown.
pub const UNROUTED: &str = "_unrouted";

/// Redeliveries after which the broker itself dead-letters a work-queue
/// message. A backstop behind the worker's own (lower, configurable) limit:
/// it only fires if the worker cannot even record a poison message.
pub const BROKER_DELIVERY_LIMIT: i64 = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    namespace: String,
    providers: Vec<String>,
}

impl Topology {
    pub fn new(namespace: &str, providers: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            namespace: namespace.to_owned(),
            providers: providers.into_iter().map(Into::into).collect(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn providers(&self) -> &[String] {
        &self.providers
    }

    pub fn jobs_exchange(&self) -> String {
        format!("{}.jobs", self.namespace)
    }

    pub fn work_queue(&self, provider: &str) -> String {
        format!("{}.work.{provider}", self.namespace)
    }

    /// Exchange and queue for jobs naming no configured provider.
    pub fn unrouted(&self) -> String {
        format!("{}.unrouted", self.namespace)
    }

    pub fn retry_exchange(&self) -> String {
        format!("{}.retry", self.namespace)
    }

    /// Whether a delivery that names `exchange` came back through the delay
    /// cascade: a retry is delivered under the exchange that dead-lettered
    /// it last (a delay level, or the retry exchange), never the jobs
    /// exchange publishers write to.
    pub fn is_retry_path(&self, exchange: &str) -> bool {
        exchange == self.retry_exchange()
            || exchange
                .strip_prefix(&self.namespace)
                .and_then(|rest| rest.strip_prefix(".delay."))
                .is_some_and(|level| level.parse::<u32>().is_ok_and(|l| l < LEVELS))
    }

    /// Exchange and queue of delay level `level`.
    pub fn delay_exchange(&self, level: u32) -> String {
        format!("{}.delay.{level}", self.namespace)
    }

    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.namespace)
    }

    pub fn dead_key(&self, provider: Option<&str>) -> String {
        provider.unwrap_or(UNROUTED).to_owned()
    }

    pub fn dead_queue(&self, provider: Option<&str>) -> String {
        format!("{}.dead.{}", self.namespace, self.dead_key(provider))
    }

    /// Every queue this topology declares.
    pub fn queues(&self) -> Vec<String> {
        let mut q: Vec<String> = self.providers.iter().map(|p| self.work_queue(p)).collect();
        q.extend(self.providers.iter().map(|p| self.dead_queue(Some(p))));
        q.push(self.unrouted());
        q.push(self.dead_queue(None));
        q.extend((0..LEVELS).map(|l| self.delay_exchange(l)));
        q
    }

    /// The delay cascade's queues, shortest wait first.
    pub fn delay_queues(&self) -> Vec<String> {
        (0..LEVELS).map(|l| self.delay_exchange(l)).collect()
    }

    /// Every exchange this topology declares.
    pub fn exchanges(&self) -> Vec<String> {
        let mut e = vec![
            self.jobs_exchange(),
            self.unrouted(),
            self.retry_exchange(),
            self.dead_exchange(),
        ];
        e.extend((0..LEVELS).map(|l| self.delay_exchange(l)));
        e
    }

    /// Declares everything; safe to repeat, and from several workers at once.
    pub async fn declare(&self, ch: &Channel) -> Result<(), AmqpError> {
        let unrouted = self.unrouted();
        let dead = self.dead_exchange();
        let retry = self.retry_exchange();

        let mut jobs_args = FieldTable::default();
        jobs_args.insert("alternate-exchange".into(), long_str(&unrouted));
        exchange(ch, &self.jobs_exchange(), ExchangeKind::Direct, jobs_args).await?;
        exchange(ch, &unrouted, ExchangeKind::Fanout, FieldTable::default()).await?;
        exchange(ch, &retry, ExchangeKind::Topic, FieldTable::default()).await?;
        exchange(ch, &dead, ExchangeKind::Direct, FieldTable::default()).await?;

        queue(ch, &unrouted, work_queue_args(&dead, UNROUTED)).await?;
        bind(ch, &unrouted, &unrouted, "").await?;
        queue(ch, &self.dead_queue(None), dead_queue_args()).await?;
        bind(ch, &self.dead_queue(None), &dead, UNROUTED).await?;

        for p in &self.providers {
            let work = self.work_queue(p);
            queue(ch, &work, work_queue_args(&dead, p)).await?;
            bind(ch, &work, &self.jobs_exchange(), p).await?;
            bind(ch, &work, &retry, &format!("#.{p}")).await?;
            queue(ch, &self.dead_queue(Some(p)), dead_queue_args()).await?;
            bind(ch, &self.dead_queue(Some(p)), &dead, p).await?;
        }

        for level in 0..LEVELS {
            let name = self.delay_exchange(level);
            let next = if level == 0 {
                retry.clone()
            } else {
                self.delay_exchange(level - 1)
            };
            exchange(ch, &name, ExchangeKind::Topic, FieldTable::default()).await?;
            queue(ch, &name, delay_queue_args(level, &next)).await?;
            bind(ch, &name, &name, &delay::level_pattern(level, true)).await?;
            within(
                REPLY_TIMEOUT,
                format!("bind exchange {name} to {next}"),
                ch.inner.exchange_bind(
                    next.as_str().into(),
                    name.as_str().into(),
                    delay::level_pattern(level, false).into(),
                    ExchangeBindOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await?;
        }
        Ok(())
    }

    /// Deletes every queue and exchange [`declare`](Self::declare) made,
    /// messages included.
    pub async fn teardown(&self, ch: &Channel) -> Result<(), AmqpError> {
        for q in self.queues() {
            delete_queue(ch, &q).await?;
        }
        for e in self.exchanges() {
            within(
                REPLY_TIMEOUT,
                format!("delete exchange {e}"),
                ch.inner
                    .exchange_delete(e.as_str().into(), ExchangeDeleteOptions::default()),
            )
            .await?;
        }
        Ok(())
    }
}

/// Deletes a queue and what it holds; a missing queue is no error.
pub async fn delete_queue(ch: &Channel, queue: &str) -> Result<(), AmqpError> {
    within(
        REPLY_TIMEOUT,
        format!("delete queue {queue}"),
        ch.inner
            .queue_delete(queue.into(), QueueDeleteOptions::default()),
    )
    .await?;
    Ok(())
}

/// Ready messages in a queue (not counting unacknowledged ones). The queue
/// must exist: asking about a missing one closes the channel.
pub async fn message_count(ch: &Channel, queue: &str) -> Result<u32, AmqpError> {
    let q = within(
        REPLY_TIMEOUT,
        format!("inspect queue {queue}"),
        ch.inner.queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        ),
    )
    .await?;
    Ok(q.message_count())
}

fn long_str(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

fn quorum() -> FieldTable {
    let mut a = FieldTable::default();
    a.insert("x-queue-type".into(), long_str("quorum"));
    a
}

/// Work queues are quorum queues: replicated on a cluster, and they count
/// redeliveries (`x-delivery-count`), which is how a message that crashes the
/// worker is recognised and dead-lettered instead of looping. What the broker
/// dead-letters itself (a message over the delivery limit: one the worker
/// could not even read) goes to the queue's own dead-letter queue under a
/// fixed key: its own routing key may be a retry's (`0.1.…provider`) or a
/// provider nobody configured, which the dead exchange does not route.
fn work_queue_args(dead_exchange: &str, dead_key: &str) -> FieldTable {
    let mut a = quorum();
    a.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(BROKER_DELIVERY_LIMIT),
    );
    a.insert("x-dead-letter-exchange".into(), long_str(dead_exchange));
    a.insert("x-dead-letter-routing-key".into(), long_str(dead_key));
    a
}

fn dead_queue_args() -> FieldTable {
    quorum()
}

/// Delay queues are quorum queues with at-least-once dead-lettering, so a
/// waiting retry survives a broker restart and is not lost on its way to the
/// next level (classic queues dead-letter at most once).
fn delay_queue_args(level: u32, next: &str) -> FieldTable {
    let mut a = quorum();
    let ttl = i64::try_from(delay::level_ttl_ms(level)).unwrap_or(i64::MAX);
    a.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
    a.insert("x-dead-letter-exchange".into(), long_str(next));
    a.insert("x-dead-letter-strategy".into(), long_str("at-least-once"));
    a.insert("x-overflow".into(), long_str("reject-publish"));
    a
}

async fn exchange(
    ch: &Channel,
    name: &str,
    kind: ExchangeKind,
    args: FieldTable,
) -> Result<(), AmqpError> {
    let options = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    within(
        REPLY_TIMEOUT,
        format!("declare exchange {name}"),
        ch.inner
            .exchange_declare(ShortString::from(name), kind, options, args),
    )
    .await
}

async fn queue(ch: &Channel, name: &str, args: FieldTable) -> Result<(), AmqpError> {
    let declared = tokio::time::timeout(
        REPLY_TIMEOUT,
        ch.inner
            .queue_declare(name.into(), QueueDeclareOptions::durable(), args),
    )
    .await
    .map_err(|_| AmqpError::Timeout {
        op: format!("declare queue {name}"),
    })?;
    declared.map_err(|cause| {
            let hint = if matches!(cause.kind(), lapin::ErrorKind::ProtocolError(e)
                if matches!(e.kind(), lapin::protocol::AMQPErrorKind::Soft(lapin::protocol::AMQPSoftError::PRECONDITIONFAILED)))
            {
                " (it exists with other arguments, e.g. declared by an older Courier: drain and delete it, and the worker declares it anew)"
            } else {
                ""
            };
            AmqpError::Broker {
                op: format!("declare queue {name}{hint}"),
                cause,
            }
        })?;
    Ok(())
}

async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) -> Result<(), AmqpError> {
    within(
        REPLY_TIMEOUT,
        format!("bind {queue} to {exchange}"),
        ch.inner.queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_recognised_by_the_exchange_that_delivered_them() {
        let t = Topology::new("ns", ["p"]);
        assert!(t.is_retry_path("ns.retry"));
        assert!(t.is_retry_path("ns.delay.0"));
        assert!(t.is_retry_path(&format!("ns.delay.{}", LEVELS - 1)));
        for not in [
            "ns.jobs",
            "",
            "ns.delay.x",
            "other.retry",
            "ns.delay.99",
            "ns.unrouted",
        ] {
            assert!(!t.is_retry_path(not), "{not}");
        }
    }
}
