//! A broker channel and a queue's stream of deliveries, as the rest of
//! Courier holds them: handles of this crate, not lapin's.
//!
//! Owns the boundary: other crates declare, inspect and consume through
//! these and the functions beside them (`consume`, `topology`), never
//! through lapin's own types, so that the AMQP client can change under
//! this crate alone. It must never add behaviour of its own: each method is
//! the lapin call it wraps, with errors as [`AmqpError`].

use crate::AmqpError;
use futures_util::Stream;
use lapin::BasicProperties;
use std::pin::Pin;
use std::task::{Context, Poll};

/// An open AMQP channel. Dropping it closes the channel; deliveries taken
/// on it can no longer be acked after that.
#[derive(Debug, Clone)]
pub struct Channel {
    pub(crate) inner: lapin::Channel,
}

impl Channel {
    pub(crate) fn new(inner: lapin::Channel) -> Self {
        Self { inner }
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

impl From<lapin::message::Delivery> for Delivery {
    fn from(d: lapin::message::Delivery) -> Self {
        Delivery {
            data: d.data,
            exchange: d.exchange.to_string(),
            acker: Acker(d.acker),
            properties: d.properties,
            redelivered: d.redelivered,
        }
    }
}

/// Settles one delivery, once: `ack`, `requeue` or `reject` (functions of
/// this crate, each within its deadline).
#[derive(Debug)]
pub struct Acker(pub(crate) lapin::Acker);

/// A queue's deliveries, as the broker sends them (at most the channel's
/// prefetch unacked at once).
#[derive(Debug)]
pub struct Consumer {
    pub(crate) inner: lapin::Consumer,
}

impl Consumer {
    /// The queue consumed.
    pub fn queue(&self) -> String {
        self.inner.queue().to_string()
    }
}

impl Stream for Consumer {
    type Item = Result<Delivery, AmqpError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner)
            .poll_next(cx)
            .map(|next| next.map(|d| d.map(Delivery::from).map_err(AmqpError::broker("consume"))))
    }
}
