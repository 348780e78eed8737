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
use crate::webhook::{self, Scheme, Verified};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

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

/// The id an event is deduplicated by, and only from what the signature
/// covers: Standard Webhooks' `webhook-id` (signed with the body); for
/// Stripe the body's own `id` (`evt_…`: a resend of the event carries
/// it again, whatever else changed), else the body's SHA-256; for GitHub
/// the body's SHA-256 (`X-GitHub-Delivery` is not signed and GitHub's
/// signature has no timestamp, so an id a sender may change would let a
/// captured body be enqueued again and again).
pub fn event_id(scheme: Scheme, verified: &Verified, body: &[u8]) -> String {
    let signed_id = match scheme {
        Scheme::StandardWebhooks => verified.event_id.clone(),
        Scheme::Stripe => serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("id")?.as_str().map(str::to_owned)),
        Scheme::Github => None,
    };
    match signed_id {
        Some(id) if webhook::is_event_id(&id) => id,
        _ => format!("sha256:{}", hex(&Sha256::digest(body))),
    }
}

/// The job an event becomes, named by the event: every delivery of one
/// event (a sender's retry after a 503 the broker had in fact confirmed)
/// publishes the same job, which the worker runs once. A UUID of version 8
/// over SHA-256 of the source and the event id.
pub fn job_id(source: &str, event_id: &str) -> Uuid {
    let mut hash = Sha256::new();
    hash.update(b"courier-event-job\0");
    hash.update(source.as_bytes());
    hash.update(b"\0");
    hash.update(event_id.as_bytes());
    let digest: [u8; 32] = hash.finalize().into();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
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
/// and the event itself (`event`: the body as JSON, or `event_text` when
/// the body is not JSON). Only what the sender sent, so every delivery of
/// one event makes the same payload (the job's content fingerprint); when
/// it arrived is the envelope's `created_at`.
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

    const EMPTY_HASH: &str =
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    fn verified(id: Option<&str>) -> Verified {
        Verified {
            event_id: id.map(str::to_owned),
            timestamp: None,
        }
    }

    #[test]
    fn an_event_is_known_by_what_its_signature_covers() {
        let standard = Scheme::StandardWebhooks;
        assert_eq!(event_id(standard, &verified(Some("msg_1")), b"{}"), "msg_1");
        // Stripe: the body's own id; a body without one, by its hash.
        let stripe = br#"{"id":"evt_1","type":"invoice.paid"}"#;
        assert_eq!(event_id(Scheme::Stripe, &verified(None), stripe), "evt_1");
        assert_eq!(event_id(Scheme::Stripe, &verified(None), b"{}"), EMPTY_HASH);
        let bad_id = br#"{"id":"evt 1\n"}"#;
        assert!(event_id(Scheme::Stripe, &verified(None), bad_id).starts_with("sha256:"));
        // GitHub: the delivery id is not signed, so the body's hash.
        assert_eq!(
            event_id(Scheme::Github, &verified(Some("72d3162e")), b"{}"),
            EMPTY_HASH
        );
    }

    #[test]
    fn every_delivery_of_an_event_is_the_same_job_and_other_events_are_not() {
        let a = job_id("payments", "msg_1");
        assert_eq!(a, job_id("payments", "msg_1"));
        assert_eq!(a.get_version_num(), 8);
        assert_ne!(a, job_id("payments", "msg_2"));
        assert_ne!(a, job_id("billing", "msg_1"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(job_id("ab", "c"), job_id("a", "bc"));
        let at = "2026-12-03T10:00:00Z".parse().expect("a time");
        let later = "2026-12-03T10:05:00Z".parse().expect("a time");
        let key = || idempotency_key("payments", "msg_1");
        let first = event_job(&source(), a, "msg_1", b"{\"x\":1}", at, key());
        let again = event_job(&source(), a, "msg_1", b"{\"x\":1}", later, key());
        let print = |e: &JobEnvelope| {
            Job::parse(&e.to_body(), 1 << 20)
                .expect("valid")
                .fingerprint
        };
        assert_eq!(
            print(&first),
            print(&again),
            "the same content, whenever it came"
        );
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
        fn every_key_fits_the_contract(event in "[!-~]{1,256}", action in any::<u128>()) {
            let action = Uuid::from_u128(action);
            let first = idempotency_key("a-source-name-that-is-long-enough-to-matter-0123456789abcdefghij", &event);
            let replay = replay_key("a-source-name-that-is-long-enough-to-matter-0123456789abcdefghij", &event, action);
            prop_assert!(first.len() <= MAX_IDEMPOTENCY_KEY_LEN);
            prop_assert!(replay.len() <= MAX_IDEMPOTENCY_KEY_LEN);
            prop_assert_ne!(first, replay);
        }
    }
}
