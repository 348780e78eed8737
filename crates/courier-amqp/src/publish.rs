//! Publishing with publisher confirms.
//!
//! Owns the one confirmed-publish path every Courier publish takes (jobs,
//! retries, dead letters): a publish returns only once the broker has taken
//! responsibility for the message, and anything else is an error. It must
//! never fire and forget.

use crate::delay;
use crate::headers::{self, DeadLetterHeaders, DeliveryMeta};
use crate::{AmqpError, topology::Topology};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use uuid::Uuid;

/// A confirm-mode channel. Cheap to clone; clones share the channel.
#[derive(Clone, Debug)]
pub struct Publisher {
    channel: Channel,
}

impl Publisher {
    pub async fn open(conn: &Connection) -> Result<Self, AmqpError> {
        let channel = conn
            .create_channel()
            .await
            .map_err(AmqpError::broker("open channel"))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(AmqpError::broker("confirm.select"))?;
        Ok(Self { channel })
    }

    pub(crate) fn channel_status(&self) -> lapin::ChannelStatus {
        self.channel.status().clone()
    }

    /// Publishes and waits for the broker's confirm. With `mandatory`, a
    /// message no queue takes is an error instead of silently dropped.
    pub async fn publish(
        &self,
        exchange: &str,
        key: &str,
        body: &[u8],
        props: BasicProperties,
        mandatory: bool,
    ) -> Result<(), AmqpError> {
        let options = BasicPublishOptions {
            mandatory,
            ..BasicPublishOptions::default()
        };
        let confirm = self
            .channel
            .basic_publish(exchange.into(), key.into(), options, body, props)
            .await
            .map_err(AmqpError::broker(format!("publish to {exchange}")))?
            .await
            .map_err(AmqpError::broker(format!("confirm from {exchange}")))?;
        match confirm {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(_)) => Err(AmqpError::Returned {
                exchange: exchange.to_owned(),
                key: key.to_owned(),
            }),
            Confirmation::Nack(_) => Err(AmqpError::Nacked {
                exchange: exchange.to_owned(),
                key: key.to_owned(),
            }),
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
