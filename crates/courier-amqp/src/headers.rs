//! Message properties and headers Courier reads and writes.
//!
//! Owns the header vocabulary (`x-courier-*`, `traceparent`) and the property
//! sets of each kind of message: fresh jobs, retries and dead letters. It must
//! never carry secrets or payload data in headers, and every header value
//! that came from input is validated or bounded here: a `traceparent` that
//! is not W3C is dropped, free text is cut to [`MAX_HEADER_TEXT_BYTES`].
//!
//! Headers are untrusted on the way in: any publisher can set
//! `x-courier-*` and even `x-delivery-count`. [`DeliveryMeta`] reads them
//! for what they are (claims, used to recognise stale copies); a job's
//! attempt count and budget come from PostgreSQL, and the delivery count is
//! believed only on a redelivery, when the broker itself has set it.

use courier_core::TraceContext;
use courier_core::text::printable;
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
/// On a dead letter whose body was cut: what arrived.
pub const BODY_BYTES: &str = "x-courier-body-bytes";
pub const BODY_SHA256: &str = "x-courier-body-sha256";

/// Longest free text (a dead letter's detail) put in a header.
pub const MAX_HEADER_TEXT_BYTES: usize = 1024;

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
    /// What a delivery carries. `x-delivery-count` only counts when the
    /// broker says this is a redelivery (a quorum queue sets the header
    /// then, over whatever the publisher wrote); on a first delivery it is 0.
    pub fn of(delivery: &crate::Delivery) -> Self {
        let mut meta = Self::of_properties(&delivery.properties);
        if !delivery.redelivered {
            meta.delivery_count = 0;
        }
        meta
    }

    /// What a message's properties claim, headers taken at their word.
    pub fn of_properties(props: &BasicProperties) -> Self {
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
                .and_then(as_string)
                .and_then(|tp| TraceContext::parse(&tp))
                .map(|tp| tp.to_string()),
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
        // Longer than any traceparent: not read at all.
        AMQPValue::LongString(s) if s.as_bytes().len() > 256 => None,
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn base(message_id: Option<&str>) -> BasicProperties {
    let props = BasicProperties::default()
        .with_content_type(CONTENT_TYPE_JSON.into())
        .with_delivery_mode(PERSISTENT);
    // A short string holds 255 bytes; a longer id (only a record from
    // elsewhere could hold one) is left out rather than break the frame.
    match message_id.filter(|id| id.len() <= 255) {
        Some(id) => props.with_message_id(id.into()),
        None => props,
    }
}

/// Puts free text, made printable and cut to [`MAX_HEADER_TEXT_BYTES`].
fn put_text(h: &mut FieldTable, k: &str, v: &str) {
    put_str(h, k, &printable(v, MAX_HEADER_TEXT_BYTES));
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
    /// Set when the message carries only a prefix of what arrived: its size
    /// and SHA-256.
    pub cut_body: Option<(u64, [u8; 32])>,
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
    put_text(&mut h, DEAD_DETAIL, dead.detail);
    if let Some(s) = dead.last_status {
        h.insert(LAST_STATUS.into(), AMQPValue::ShortUInt(s));
    }
    if let Some((size, sha256)) = dead.cut_body {
        h.insert(
            BODY_BYTES.into(),
            AMQPValue::LongLongInt(i64::try_from(size).unwrap_or(i64::MAX)),
        );
        let hex: String = sha256.iter().map(|b| format!("{b:02x}")).collect();
        put_str(&mut h, BODY_SHA256, &hex);
    }
    base(meta.message_id.as_deref()).with_headers(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_properties_carry_identity_trace_and_attempts() {
        let id = Uuid::now_v7();
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut original = job_properties(id, Some(tp));
        let mut h = original.headers().clone().unwrap_or_default();
        h.insert("x-death".into(), AMQPValue::LongUInt(3));
        h.insert(DELIVERY_COUNT.into(), AMQPValue::LongLongInt(2));
        original = original.with_headers(h);
        let meta = DeliveryMeta::of_properties(&original);
        assert_eq!(meta.delivery_count, 2);
        assert_eq!(meta.attempts, 0);

        let retry = retry_properties(&meta, 3);
        let back = DeliveryMeta::of_properties(&retry);
        assert_eq!(back.attempts, 3);
        assert_eq!(back.delivery_count, 0);
        assert_eq!(back.message_id, Some(id.to_string()));
        assert_eq!(back.traceparent.as_deref(), Some(tp));
        assert!(
            !retry
                .headers()
                .as_ref()
                .is_some_and(|h| h.contains_key("x-death"))
        );
        assert_eq!(*retry.delivery_mode(), Some(PERSISTENT));
    }

    #[test]
    fn a_traceparent_that_is_not_w3c_is_dropped() {
        for bad in ["00-abc-def-01", "garbage", &"x".repeat(140_000)] {
            let props = job_properties(Uuid::now_v7(), Some(bad));
            assert_eq!(
                DeliveryMeta::of_properties(&props).traceparent,
                None,
                "{}",
                &bad[..bad.len().min(20)]
            );
        }
    }

    #[test]
    fn free_text_in_dead_letter_headers_is_bounded_and_printable() {
        let detail = format!("field `{}`: unknown field\u{0}", "x".repeat(140_000));
        let dead = DeadLetterHeaders {
            reason: "invalid",
            detail: &detail,
            attempts: 0,
            last_status: None,
            cut_body: None,
        };
        let props = dead_letter_properties(&DeliveryMeta::default(), &dead);
        let headers = props.headers().clone().unwrap_or_default();
        let Some(AMQPValue::LongString(text)) = headers.inner().get(DEAD_DETAIL) else {
            panic!("detail header present");
        };
        assert!(text.as_bytes().len() <= MAX_HEADER_TEXT_BYTES + 3);
        assert!(!text.as_bytes().contains(&0));
    }
}
