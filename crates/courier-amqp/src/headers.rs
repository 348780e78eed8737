//! Message properties and headers Courier reads and writes.
//!
//! Owns the header vocabulary (`x-courier-*`, `traceparent`) and the property
//! sets of each kind of message: fresh jobs, retries and dead letters. It must
//! never carry secrets or payload data in headers.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use uuid::Uuid;

/// Attempts already made when the message was published (absent = 0).
pub const ATTEMPTS: &str = "x-courier-attempts";
/// Attempts made before the current run (an operator's requeue starts a new
/// run with a fresh retry budget).
pub const RUN_BASE: &str = "x-courier-run-base";
/// How often an operator has requeued the job.
pub const GENERATION: &str = "x-courier-generation";
/// Set by quorum queues on redelivery: how often the broker handed it out.
pub const DELIVERY_COUNT: &str = "x-delivery-count";
/// W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
pub const DEAD_REASON: &str = "x-courier-dead-reason";
pub const DEAD_DETAIL: &str = "x-courier-dead-detail";
pub const LAST_STATUS: &str = "x-courier-last-status";

pub const CONTENT_TYPE_JSON: &str = "application/json";
const PERSISTENT: u8 = 2;

/// What the pipeline needs to know about a delivery besides its body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryMeta {
    pub message_id: Option<String>,
    pub attempts: u32,
    pub run_base: u32,
    pub generation: u32,
    pub delivery_count: u32,
    pub traceparent: Option<String>,
}

impl DeliveryMeta {
    pub fn of(props: &BasicProperties) -> Self {
        let headers = props.headers().as_ref();
        let int = |name: &str| {
            headers
                .and_then(|h| h.inner().get(name))
                .and_then(as_u32)
                .unwrap_or(0)
        };
        Self {
            message_id: props.message_id().as_ref().map(|m| m.as_str().to_owned()),
            attempts: int(ATTEMPTS),
            run_base: int(RUN_BASE),
            generation: int(GENERATION),
            delivery_count: int(DELIVERY_COUNT),
            traceparent: headers
                .and_then(|h| h.inner().get(TRACEPARENT))
                .and_then(as_string),
        }
    }
}

fn as_u32(v: &AMQPValue) -> Option<u32> {
    let n: i128 = match v {
        AMQPValue::ShortShortInt(n) => (*n).into(),
        AMQPValue::ShortShortUInt(n) => (*n).into(),
        AMQPValue::ShortInt(n) => (*n).into(),
        AMQPValue::ShortUInt(n) => (*n).into(),
        AMQPValue::LongInt(n) => (*n).into(),
        AMQPValue::LongUInt(n) => (*n).into(),
        AMQPValue::LongLongInt(n) => (*n).into(),
        _ => return None,
    };
    u32::try_from(n).ok()
}

fn as_string(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn base(message_id: Option<&str>) -> BasicProperties {
    let props = BasicProperties::default()
        .with_content_type(CONTENT_TYPE_JSON.into())
        .with_delivery_mode(PERSISTENT);
    match message_id {
        Some(id) => props.with_message_id(id.into()),
        None => props,
    }
}

fn put_str(h: &mut FieldTable, k: &str, v: &str) {
    h.insert(
        ShortString::from(k),
        AMQPValue::LongString(LongString::from(v.as_bytes().to_vec())),
    );
}

/// Properties of a fresh job, as an upstream publishes it.
pub fn job_properties(id: Uuid, traceparent: Option<&str>) -> BasicProperties {
    let mut h = FieldTable::default();
    if let Some(tp) = traceparent {
        put_str(&mut h, TRACEPARENT, tp);
    }
    base(Some(&id.to_string())).with_headers(h)
}

/// The job's identity, trace and progress as headers.
fn progress_headers(meta: &DeliveryMeta, attempts: u32) -> FieldTable {
    let mut h = FieldTable::default();
    if let Some(tp) = &meta.traceparent {
        put_str(&mut h, TRACEPARENT, tp);
    }
    h.insert(ATTEMPTS.into(), AMQPValue::LongUInt(attempts));
    if meta.run_base > 0 {
        h.insert(RUN_BASE.into(), AMQPValue::LongUInt(meta.run_base));
    }
    if meta.generation > 0 {
        h.insert(GENERATION.into(), AMQPValue::LongUInt(meta.generation));
    }
    h
}

/// Properties of a retry: the job's identity and trace, plus the attempts
/// made. Broker bookkeeping (`x-death`, delivery counts) is left behind.
pub fn retry_properties(meta: &DeliveryMeta, attempts: u32) -> BasicProperties {
    base(meta.message_id.as_deref()).with_headers(progress_headers(meta, attempts))
}

/// Properties of a job an operator requeued: a new run starting after
/// `meta.attempts`, in generation `meta.generation`.
pub fn requeue_properties(meta: &DeliveryMeta) -> BasicProperties {
    base(meta.message_id.as_deref()).with_headers(progress_headers(meta, meta.attempts))
}

/// Why a message is in the dead-letter queue, as headers on it.
#[derive(Debug, Clone)]
pub struct DeadLetterHeaders<'a> {
    pub reason: &'a str,
    pub detail: &'a str,
    pub attempts: u32,
    pub last_status: Option<u16>,
}

pub fn dead_letter_properties(
    meta: &DeliveryMeta,
    dead: &DeadLetterHeaders<'_>,
) -> BasicProperties {
    let mut h = FieldTable::default();
    if let Some(tp) = &meta.traceparent {
        put_str(&mut h, TRACEPARENT, tp);
    }
    h.insert(ATTEMPTS.into(), AMQPValue::LongUInt(dead.attempts));
    put_str(&mut h, DEAD_REASON, dead.reason);
    put_str(&mut h, DEAD_DETAIL, dead.detail);
    if let Some(s) = dead.last_status {
        h.insert(LAST_STATUS.into(), AMQPValue::ShortUInt(s));
    }
    base(meta.message_id.as_deref()).with_headers(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_properties_carry_identity_trace_and_attempts() {
        let id = Uuid::now_v7();
        let mut original = job_properties(id, Some("00-abc-def-01"));
        let mut h = original.headers().clone().unwrap_or_default();
        h.insert("x-death".into(), AMQPValue::LongUInt(3));
        h.insert(DELIVERY_COUNT.into(), AMQPValue::LongLongInt(2));
        original = original.with_headers(h);
        let meta = DeliveryMeta::of(&original);
        assert_eq!(meta.delivery_count, 2);
        assert_eq!(meta.attempts, 0);

        let retry = retry_properties(&meta, 3);
        let back = DeliveryMeta::of(&retry);
        assert_eq!(back.attempts, 3);
        assert_eq!(back.delivery_count, 0);
        assert_eq!(back.message_id, Some(id.to_string()));
        assert_eq!(back.traceparent.as_deref(), Some("00-abc-def-01"));
        assert!(
            !retry
                .headers()
                .as_ref()
                .is_some_and(|h| h.contains_key("x-death"))
        );
        assert_eq!(*retry.delivery_mode(), Some(PERSISTENT));
    }
}
