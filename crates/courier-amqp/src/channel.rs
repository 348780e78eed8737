//! A broker channel and a queue's stream of deliveries, as the rest of
//! Courier holds them: handles of this crate, not lapin's.
//!
//! Owns the boundary: other crates declare, inspect and consume through
//! these and the functions beside them (`consume`, `topology`), never
//! through lapin's own types, so that the AMQP client can change under
//! this crate alone. It must never add behaviour of its own: each method is
//! the lapin call it wraps, with errors as [`AmqpError`].

use crate::AmqpError;
use courier_core::acks::AckWindow;
use futures_util::Stream;
use lapin::BasicProperties;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// An open AMQP channel. Dropping it closes the channel; deliveries taken
/// on it can no longer be acked after that.
#[derive(Debug, Clone)]
pub struct Channel {
    pub(crate) inner: lapin::Channel,
    pub(crate) acks: Arc<ChannelAcks>,
}

/// What a channel's deliveries are acked through: the deliveries the broker
/// still holds unacked on it ([`AckWindow`]). It holds no handle of the
/// channel itself, so dropping the [`Channel`] still closes it.
#[derive(Debug)]
pub(crate) struct ChannelAcks {
    pub(crate) window: Mutex<Held>,
    /// Held from taking acks out of the window until their frames are sent:
    /// a second sender's multiple ack must not overtake the first's frames
    /// (it would settle their tags, and RabbitMQ closes a channel on an ack
    /// of a tag it no longer holds).
    pub(crate) sending: tokio::sync::Mutex<()>,
}

/// A channel's unacked deliveries, and lapin's handles of those committed
/// (a multiple ack goes through the handle of the last tag it covers).
#[derive(Debug, Default)]
pub(crate) struct Held {
    pub(crate) window: AckWindow,
    pub(crate) committed: std::collections::HashMap<u64, lapin::Acker>,
}

impl ChannelAcks {
    pub(crate) fn window(&self) -> std::sync::MutexGuard<'_, Held> {
        // Consistent after every call (none panics midway).
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Channel {
    pub(crate) fn new(inner: lapin::Channel) -> Self {
        let acks = Arc::new(ChannelAcks {
            window: Mutex::new(Held::default()),
            sending: tokio::sync::Mutex::new(()),
        });
        Self { inner, acks }
    }

    /// Whether the channel is open (its connection up, not closed by the
    /// broker).
    pub fn is_open(&self) -> bool {
        self.inner.status().connected()
    }
}

/// A message the broker delivered: its body, the exchange it came through,
/// and the handle that settles it. What its properties say is read with
/// `DeliveryMeta::of`; `Publisher::republish` sends it on unchanged.
#[derive(Debug)]
pub struct Delivery {
    pub data: Vec<u8>,
    pub exchange: String,
    pub acker: Acker,
    pub(crate) properties: BasicProperties,
    pub(crate) redelivered: bool,
}

impl Delivery {
    /// A delivery taken on the channel `acks` belongs to, which from now on
    /// counts it as held.
    pub(crate) fn taken(d: lapin::message::Delivery, acks: &Arc<ChannelAcks>) -> Self {
        acks.window().window.delivered(d.delivery_tag);
        Delivery {
            data: d.data,
            exchange: d.exchange.to_string(),
            acker: Acker {
                inner: d.acker,
                tag: d.delivery_tag,
                channel: acks.clone(),
            },
            properties: d.properties,
            redelivered: d.redelivered,
        }
    }
}

/// Settles one delivery, once: `ack`, `ack_committed` (with others of its
/// channel), `requeue` or `reject` (functions of this crate, each within
/// its deadline).
#[derive(Debug)]
pub struct Acker {
    pub(crate) inner: lapin::Acker,
    pub(crate) tag: u64,
    pub(crate) channel: Arc<ChannelAcks>,
}

/// A queue's deliveries, as the broker sends them (at most the channel's
/// prefetch unacked at once).
#[derive(Debug)]
pub struct Consumer {
    pub(crate) inner: lapin::Consumer,
    pub(crate) acks: Arc<ChannelAcks>,
}

impl Consumer {
    /// The queue consumed.
    pub fn queue(&self) -> String {
        self.inner.queue().to_string()
    }
}

impl Stream for Consumer {
    type Item = Result<Delivery, AmqpError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        Pin::new(&mut this.inner).poll_next(cx).map(|next| {
            next.map(|d| {
                d.map(|d| Delivery::taken(d, &this.acks))
                    .map_err(AmqpError::broker("consume"))
            })
        })
    }
}
