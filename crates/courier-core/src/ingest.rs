//! What an inbound webhook event becomes: the id it is known by, the
//! headers kept of it, and the job it is enqueued as (first time and on a
//! replay).
//!
//! Owns the rules `courier ingest` and the operator's replay share, so an
//! event replayed is the same job as the one first enqueued, bar its id and
//! idempotency key. It must never verify a signature (`webhook.rs` does,
//! before anything here runs) nor decide whether an event is new (the
//! store's unique key does).

use crate::config::IngestSource;
use crate::envelope::{CONTRACT_VERSION, JobEnvelope, MAX_IDEMPOTENCY_KEY_LEN};
use crate::text::printable;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Longest event id accepted from a sender's header, in bytes.
pub const MAX_EVENT_ID_LEN: usize = 180;
/// Longest header value kept in the event log, in bytes.
pub const MAX_KEPT_HEADER_LEN: usize = 256;

/// Headers kept with an event: what says what it is and who sent it. Never
/// the signatures (they verify once and say nothing after).
pub const KEPT_HEADERS: [&str; 8] = [
    "content-type",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "x-github-event",
    "x-github-delivery",
    "x-github-hook-id",
    "x-request-id",
];

/// The id an event is deduplicated by: the sender's (the scheme's id
/// header), else the SHA-256 of the body, so that the same bytes sent again
/// are the same event. A sender's id that is not 1 to
/// [`MAX_EVENT_ID_LEN`] visible ASCII characters is refused, naming the
/// header.
pub fn event_id(header: &str, sent: Option<&str>, body: &[u8]) -> Result<String, String> {
    match sent {
        None => Ok(format!("sha256:{}", hex(&Sha256::digest(body)))),
        Some(id)
            if (1..=MAX_EVENT_ID_LEN).contains(&id.len())
                && id.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(id.to_owned())
        }
        Some(_) => Err(format!(
            "{header}: must be 1 to {MAX_EVENT_ID_LEN} visible ASCII characters"
        )),
    }
}

/// [`KEPT_HEADERS`] that came, printable and bounded, as a JSON object.
pub fn kept_headers(header: &dyn Fn(&str) -> Option<String>) -> Value {
    let kept: Map<String, Value> = KEPT_HEADERS
        .iter()
        .filter_map(|name| {
            header(name).map(|v| {
                (
                    (*name).to_owned(),
                    Value::String(printable(&v, MAX_KEPT_HEADER_LEN)),
                )
            })
        })
        .collect();
    Value::Object(kept)
}

/// The key the first job of an event carries: the same for every delivery
/// of the event, so that a downstream that deduplicates by it sees one.
pub fn idempotency_key(source: &str, event_id: &str) -> String {
    let key = format!("{source}:{event_id}");
    if key.len() <= MAX_IDEMPOTENCY_KEY_LEN - REPLAY_SUFFIX_LEN {
        key
    } else {
        format!(
            "{source}:sha256:{}",
            hex(&Sha256::digest(event_id.as_bytes()))
        )
    }
}

/// `:replay:` and a UUID.
const REPLAY_SUFFIX_LEN: usize = 8 + 36;

/// The key a replayed job carries: new for each replay action (an operator
/// replays to have the event handled again), the same for every publish of
/// one action.
pub fn replay_key(source: &str, event_id: &str, action: Uuid) -> String {
    format!("{}:replay:{action}", idempotency_key(source, event_id))
}

/// What the job's payload says of the event: where it came from, its id,
/// when it arrived, and the event itself (`event`: the body as JSON, or
/// `event_text` when the body is not JSON).
pub fn event_job(
    source: &IngestSource,
    job_id: Uuid,
    event_id: &str,
    body: &[u8],
    received_at: DateTime<Utc>,
    idempotency_key: String,
) -> JobEnvelope {
    let mut payload = Map::new();
    payload.insert("source".into(), Value::String(source.name.clone()));
    payload.insert("event_id".into(), Value::String(event_id.to_owned()));
    payload.insert(
        "received_at".into(),
        Value::String(received_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
    );
    match serde_json::from_slice::<Value>(body) {
        Ok(event) => payload.insert("event".into(), event),
        Err(_) => payload.insert(
            "event_text".into(),
            Value::String(String::from_utf8_lossy(body).into_owned()),
        ),
    };
    JobEnvelope {
        version: CONTRACT_VERSION,
        id: job_id,
        provider: source.provider.clone(),
        operation: source.operation.clone(),
        idempotency_key: Some(idempotency_key),
        payload: Value::Object(payload),
        created_at: received_at,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Job;
    use crate::config::SecretRef;
    use proptest::prelude::*;
    use std::time::Duration;

    fn source() -> IngestSource {
        IngestSource {
            name: "payments".into(),
            scheme: crate::webhook::Scheme::StandardWebhooks,
            secrets: vec![SecretRef::Env("X".into())],
            tolerance: Duration::from_secs(300),
            provider: "orders".into(),
            operation: "payment_event".into(),
        }
    }

    #[test]
    fn the_senders_id_is_kept_and_a_missing_one_is_the_bodys_hash() {
        assert_eq!(
            event_id("webhook-id", Some("msg_1"), b"{}").expect("valid"),
            "msg_1"
        );
        let hashed = event_id("webhook-id", None, b"{}").expect("valid");
        assert_eq!(
            hashed,
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(hashed, event_id("webhook-id", None, b"{}").expect("valid"));
    }

    #[test]
    fn a_senders_id_that_is_no_plain_token_is_refused_naming_the_header() {
        for bad in [
            "",
            "a b",
            "line\nbreak",
            "é",
            &"x".repeat(MAX_EVENT_ID_LEN + 1),
        ] {
            let err = event_id("x-github-delivery", Some(bad), b"{}").expect_err("refused");
            assert!(err.starts_with("x-github-delivery:"), "{err}");
        }
    }

    #[test]
    fn kept_headers_are_the_listed_ones_bounded_and_printable() {
        let kept = kept_headers(&|name| match name {
            "webhook-id" => Some("msg_1".into()),
            "user-agent" => Some(format!("evil\n{}", "a".repeat(1000))),
            "webhook-signature" => Some("v1,secret-looking".into()),
            _ => None,
        });
        let kept = kept.as_object().expect("valid");
        assert_eq!(kept.len(), 2);
        assert_eq!(kept["webhook-id"], "msg_1");
        let agent = kept["user-agent"].as_str().expect("valid");
        assert!(agent.len() <= MAX_KEPT_HEADER_LEN + 4 && !agent.contains('\n'));
    }

    #[test]
    fn the_job_carries_the_event_and_parses_as_a_v1_job() {
        let at = "2026-12-03T10:00:00Z".parse().expect("valid");
        let id = Uuid::now_v7();
        let env = event_job(
            &source(),
            id,
            "msg_1",
            br#"{"type":"payment.completed","amount":1200}"#,
            at,
            idempotency_key("payments", "msg_1"),
        );
        let job = Job::parse(&env.to_body(), 1 << 20).expect("valid");
        assert_eq!(job.id, id);
        assert_eq!(
            (job.provider.as_str(), job.operation.as_str()),
            ("orders", "payment_event")
        );
        assert_eq!(job.idempotency_key, "payments:msg_1");
        assert_eq!(job.payload["event"]["amount"], 1200);
        assert_eq!(job.payload["event_id"], "msg_1");
        assert_eq!(job.payload["source"], "payments");
        let text = event_job(&source(), id, "e", b"a=1&b=2", at, "k".into());
        assert_eq!(text.payload["event_text"], "a=1&b=2");
    }

    proptest! {
        #[test]
        fn every_key_fits_the_contract(event in "[!-~]{1,180}", action in any::<u128>()) {
            let action = Uuid::from_u128(action);
            let first = idempotency_key("a-source-name-that-is-long-enough-to-matter-0123456789abcdefghij", &event);
            let replay = replay_key("a-source-name-that-is-long-enough-to-matter-0123456789abcdefghij", &event, action);
            prop_assert!(first.len() <= MAX_IDEMPOTENCY_KEY_LEN);
            prop_assert!(replay.len() <= MAX_IDEMPOTENCY_KEY_LEN);
            prop_assert_ne!(first, replay);
        }
    }
}
