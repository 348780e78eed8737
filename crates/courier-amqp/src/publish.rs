//! Publishing with publisher confirms.
//!
//! Owns the one confirmed-publish path every Courier publish takes (jobs,
//! retries, dead letters): a publish returns only once the broker has taken
//! responsibility for the message, and anything else is an error. It must
//! never fire and forget.

use crate::delay;
use crate::headers::{self, DeadLetterHeaders, DeliveryMeta};
use crate::{AmqpError, Link, topology::Topology};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::AMQPValue;
use lapin::{BasicProperties, Channel, Confirmation};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Most bytes of properties and headers Courier puts on a message. The
/// broker's frame limit (128 KiB by default) closes the whole connection when
/// a content header exceeds it; nothing Courier writes comes near this, so a
/// message over it is refused here, before it can do that.
pub const MAX_PROPERTIES_BYTES: usize = 16 * 1024;

/// A confirm-mode channel on a [`Link`], reopened on the link's current
/// connection whenever it is closed (a broker error, a reconnection), a
/// confirm did not come or a publish was nacked. Cheap to clone; clones share the channel.
#[derive(Clone, Debug)]
pub struct Publisher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    link: Link,
    slot: tokio::sync::Mutex<Slot>,
    confirm_timeout: Duration,
}

/// The channel in use, numbered: channel ids repeat across connections, so
/// a late failure on an old channel must not discard the one that replaced
/// it.
#[derive(Debug, Default)]
struct Slot {
    channel: Option<Channel>,
    generation: u64,
    /// When a nack last replaced the channel (see [`Publisher::publish`]).
    replaced_after_nack: Option<std::time::Instant>,
}

/// At most one channel replaced per this span because of nacks: a full
/// queue (x-overflow = reject-publish) nacks every publish to it, and must
/// not make every other publish reopen a channel.
const NACK_REPLACE_EVERY: Duration = Duration::from_secs(1);

impl Publisher {
    /// Opens the confirm channel at once, so a broker that refuses it is
    /// known now rather than at the first publish.
    pub async fn open(link: &Link, confirm_timeout: Duration) -> Result<Self, AmqpError> {
        let publisher = Self {
            inner: Arc::new(Inner {
                link: link.clone(),
                slot: tokio::sync::Mutex::new(Slot::default()),
                confirm_timeout,
            }),
        };
        publisher.channel().await?;
        Ok(publisher)
    }

    /// The open confirm channel and its generation, opened anew when there
    /// is none.
    async fn channel(&self) -> Result<(Channel, u64), AmqpError> {
        let mut slot = self.inner.slot.lock().await;
        if let Some(channel) = slot.channel.as_ref()
            && channel.status().connected()
        {
            return Ok((channel.clone(), slot.generation));
        }
        let channel = self.inner.link.channel().await?.inner;
        crate::within(
            crate::REPLY_TIMEOUT,
            "confirm.select",
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        slot.generation += 1;
        slot.channel = Some(channel.clone());
        Ok((channel, slot.generation))
    }

    /// Lets go of the channel of `generation` if it is still the one in
    /// use: the next publish opens a fresh one. Publishes still waiting on
    /// the old one keep it open until they have their confirms (lapin
    /// closes a channel when its last handle is dropped).
    async fn discard(&self, generation: u64) {
        let mut slot = self.inner.slot.lock().await;
        if slot.generation == generation {
            slot.channel = None;
        }
    }

    /// [`discard`](Self::discard) after a nack, at most once per
    /// [`NACK_REPLACE_EVERY`].
    async fn discard_after_nack(&self, generation: u64) {
        let mut slot = self.inner.slot.lock().await;
        let due = slot
            .replaced_after_nack
            .is_none_or(|at| at.elapsed() >= NACK_REPLACE_EVERY);
        if slot.generation == generation && due {
            slot.channel = None;
            slot.replaced_after_nack = Some(std::time::Instant::now());
        }
    }

    /// Sends a delivery on unchanged (body and properties) and waits for
    /// the broker's confirm; a message no queue takes is an error.
    pub async fn republish(
        &self,
        exchange: &str,
        key: &str,
        delivery: &crate::Delivery,
    ) -> Result<(), AmqpError> {
        self.publish(
            exchange,
            key,
            &delivery.data,
            delivery.properties.clone(),
            true,
        )
        .await
    }

    /// Publishes and waits for the broker's confirm. With `mandatory`, a
    /// message no queue takes is an error instead of silently dropped.
    pub(crate) async fn publish(
        &self,
        exchange: &str,
        key: &str,
        body: &[u8],
        props: BasicProperties,
        mandatory: bool,
    ) -> Result<(), AmqpError> {
        check_properties(&props).map_err(AmqpError::TooLarge)?;
        let options = BasicPublishOptions {
            mandatory,
            ..BasicPublishOptions::default()
        };
        let failed = |cause| AmqpError::Publish {
            exchange: exchange.to_owned(),
            cause,
        };
        let (channel, generation) = self.channel().await?;
        let publish = async {
            channel
                .basic_publish(exchange.into(), key.into(), options, body, props)
                .await
                .map_err(failed)?
                .await
                .map_err(failed)
        };
        let confirm = match tokio::time::timeout(self.inner.confirm_timeout, publish).await {
            Ok(Ok(confirm)) => confirm,
            Ok(Err(e)) => {
                self.discard(generation).await;
                return Err(e);
            }
            Err(_) => {
                // A confirm this late will not come on this channel.
                self.discard(generation).await;
                return Err(AmqpError::Timeout {
                    op: "publisher confirm".into(),
                });
            }
        };
        match confirm {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(_)) => Err(AmqpError::Returned {
                exchange: exchange.to_owned(),
                key: key.to_owned(),
            }),
            Confirmation::Nack(_) => {
                // A nack can come from the channel rather than the queue:
                // after the node of a quorum queue's leader is killed,
                // RabbitMQ 3.10 kept nacking every later publish on a channel
                // that had published to it, while a fresh channel's were
                // confirmed (docs/SCALING.md, the node-kill scenario).
                self.discard_after_nack(generation).await;
                Err(AmqpError::Nacked {
                    exchange: exchange.to_owned(),
                    key: key.to_owned(),
                })
            }
        }
    }

    /// Publishes a job body as an upstream service does: to the namespace's
    /// jobs exchange, routed by provider.
    pub async fn publish_job(
        &self,
        topology: &Topology,
        provider: &str,
        id: Uuid,
        body: &[u8],
        traceparent: Option<&str>,
    ) -> Result<(), AmqpError> {
        let props = headers::job_properties(id, traceparent);
        self.publish(&topology.jobs_exchange(), provider, body, props, false)
            .await
    }

    /// Republishes a job an operator requeued, to the jobs exchange.
    pub async fn publish_requeue(
        &self,
        topology: &Topology,
        provider: &str,
        body: &[u8],
        meta: &DeliveryMeta,
    ) -> Result<(), AmqpError> {
        let props = headers::requeue_properties(meta);
        self.publish(&topology.jobs_exchange(), provider, body, props, false)
            .await
    }

    /// Schedules a retry `delay_secs` from now through the delay cascade.
    pub async fn publish_retry(
        &self,
        topology: &Topology,
        provider: &str,
        body: &[u8],
        meta: &DeliveryMeta,
        attempts: u32,
        delay_secs: u64,
    ) -> Result<(), AmqpError> {
        let exchange = topology.delay_exchange(delay::entry_level(delay_secs));
        let key = delay::routing_key(delay_secs, provider);
        let props = headers::retry_properties(meta, attempts);
        self.publish(&exchange, &key, body, props, true).await
    }

    /// Puts a message in the dead-letter queue of `provider` (or of the
    /// unrouted jobs when `provider` is `None`).
    pub async fn publish_dead_letter(
        &self,
        topology: &Topology,
        provider: Option<&str>,
        body: &[u8],
        meta: &DeliveryMeta,
        dead: &DeadLetterHeaders<'_>,
    ) -> Result<(), AmqpError> {
        let key = topology.dead_key(provider);
        let props = headers::dead_letter_properties(meta, dead);
        self.publish(&topology.dead_exchange(), &key, body, props, true)
            .await
    }
}

/// Refuses properties the client could not encode (a short string over 255
/// bytes fails the whole connection in lapin) or the broker would not take
/// (over [`MAX_PROPERTIES_BYTES`]).
fn check_properties(props: &BasicProperties) -> Result<(), String> {
    let shorts = [
        ("content_type", props.content_type()),
        ("content_encoding", props.content_encoding()),
        ("correlation_id", props.correlation_id()),
        ("reply_to", props.reply_to()),
        ("expiration", props.expiration()),
        ("message_id", props.message_id()),
        ("type", props.kind()),
        ("user_id", props.user_id()),
        ("app_id", props.app_id()),
        ("cluster_id", props.cluster_id()),
    ];
    let mut size = 64;
    for (name, value) in shorts {
        let len = value.as_ref().map_or(0, |s| s.as_str().len());
        if len > 255 {
            return Err(format!(
                "property {name} is {len} bytes (a short string holds 255)"
            ));
        }
        size += len + 1;
    }
    if let Some(headers) = props.headers() {
        for (key, value) in headers.inner() {
            if key.as_str().len() > 255 {
                return Err(format!(
                    "a header name is {} bytes (at most 255)",
                    key.as_str().len()
                ));
            }
            size += key.as_str().len() + 1 + value_size(value);
        }
    }
    if size > MAX_PROPERTIES_BYTES {
        return Err(format!(
            "{size} bytes of properties and headers (at most {MAX_PROPERTIES_BYTES})"
        ));
    }
    Ok(())
}

fn value_size(value: &AMQPValue) -> usize {
    match value {
        AMQPValue::LongString(s) => s.as_bytes().len() + 5,
        AMQPValue::ShortString(s) => s.as_str().len() + 2,
        AMQPValue::ByteArray(b) => b.as_slice().len() + 5,
        AMQPValue::FieldArray(a) => 5 + a.as_slice().iter().map(value_size).sum::<usize>(),
        AMQPValue::FieldTable(t) => {
            5 + t
                .inner()
                .iter()
                .map(|(k, v)| k.as_str().len() + 1 + value_size(v))
                .sum::<usize>()
        }
        _ => 9,
    }
}
