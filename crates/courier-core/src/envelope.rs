//! The job contract, version 1: the JSON envelope an upstream publishes.
//!
//! Owns parsing and validating raw message bodies into [`Job`]s. Every
//! rejection is an [`InvalidJob`] naming the offending field, so a bad job can
//! be dead-lettered with a reason an operator can act on. It must never panic
//! on input, whatever the bytes.

use crate::text::{has_control, printable};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::fmt;
use uuid::Uuid;

/// The only contract version this worker speaks.
pub const CONTRACT_VERSION: u64 = 1;

/// Every field of a v1 job; anything else is refused.
pub const KNOWN_FIELDS: [&str; 7] = [
    "version",
    "id",
    "provider",
    "operation",
    "idempotency_key",
    "payload",
    "created_at",
];

/// Longest accepted idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// The wire form of a v1 job, as published. Serialising one yields a body that
/// [`Job::parse`] accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEnvelope {
    pub version: u64,
    pub id: Uuid,
    pub provider: String,
    pub operation: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    pub payload: Value,
    pub created_at: DateTime<Utc>,
}

impl JobEnvelope {
    /// A new envelope with a fresh v7 id, stamped `now`.
    pub fn new(provider: &str, operation: &str, payload: Value, now: DateTime<Utc>) -> Self {
        Self {
            version: CONTRACT_VERSION,
            id: Uuid::now_v7(),
            provider: provider.to_owned(),
            operation: operation.to_owned(),
            idempotency_key: None,
            payload,
            created_at: now,
        }
    }

    pub fn to_body(&self) -> Vec<u8> {
        // Serialising a struct of strings, a Uuid, a DateTime and a Value
        // cannot fail: no map has non-string keys.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// What Courier keeps of a message body it sets aside (a dead letter): the
/// whole body up to `max_bytes`, else its first [`OVERSIZE_PREFIX_BYTES`],
/// with the size and SHA-256 of what arrived, so that one huge message
/// cannot make a huge row or a huge dead-letter message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptBody {
    pub bytes: Vec<u8>,
    pub size: u64,
    pub sha256: [u8; 32],
}

/// Bytes kept of a body over the size limit: enough to recognise it.
pub const OVERSIZE_PREFIX_BYTES: usize = 4096;

impl KeptBody {
    pub fn of(body: &[u8], max_bytes: usize) -> KeptBody {
        let keep = if body.len() > max_bytes {
            OVERSIZE_PREFIX_BYTES.min(max_bytes)
        } else {
            body.len()
        };
        KeptBody {
            bytes: body[..keep].to_vec(),
            size: body.len() as u64,
            sha256: Sha256::digest(body).into(),
        }
    }

    /// Whether only a prefix was kept.
    pub fn is_truncated(&self) -> bool {
        (self.bytes.len() as u64) < self.size
    }
}

/// A validated job: what the pipeline works with.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: Uuid,
    pub provider: String,
    pub operation: String,
    /// The key sent as `Idempotency-Key`: the job's own, else its id.
    pub idempotency_key: String,
    pub payload: Map<String, Value>,
    pub created_at: DateTime<Utc>,
    /// See [`Fingerprint`].
    pub fingerprint: Fingerprint,
}

/// Why a message body is not a valid job. `field` names the JSON field (or
/// `body` for the message as a whole).
///
/// Both parts may quote the input (an unknown field's name, a parser's
/// complaint about a character), so both are made [`printable`] and bounded
/// here, once: the reason can go into a PostgreSQL `text` column, an AMQP
/// header and a terminal whatever the publisher sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {problem}")]
pub struct InvalidJob {
    pub field: String,
    pub problem: String,
}

/// Longest field name kept in an [`InvalidJob`], in bytes.
const MAX_FIELD_LEN: usize = 80;
/// Longest problem text kept in an [`InvalidJob`], in bytes.
const MAX_PROBLEM_LEN: usize = 400;

impl InvalidJob {
    pub fn new(field: impl Into<String>, problem: impl fmt::Display) -> Self {
        Self {
            field: printable(&field.into(), MAX_FIELD_LEN),
            problem: printable(&problem.to_string(), MAX_PROBLEM_LEN),
        }
    }
}

/// Provider and operation names: what the config accepts, and so the only
/// names a job may carry (they become routing keys and labels).
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} must be 1-64 characters of a-z, 0-9, _ and -, starting with a letter or digit"
        ))
    }
}

/// What identifies a job's content: SHA-256 over its provider, operation,
/// effective idempotency key and payload, with object keys in sorted order
/// (so a re-serialisation of the same job matches, and a different job under
/// the same id does not). `created_at` is left out: a publisher that retries
/// by stamping a new envelope is still sending the same job.
pub type Fingerprint = [u8; 32];

fn fingerprint(
    provider: &str,
    operation: &str,
    key: &str,
    payload: &Map<String, Value>,
) -> Fingerprint {
    let mut hash = Sha256::new();
    for part in [provider, operation, key] {
        hash_str(&mut hash, part);
    }
    hash_object(&mut hash, payload);
    hash.finalize().into()
}

fn hash_str(hash: &mut Sha256, s: &str) {
    hash.update((s.len() as u64).to_be_bytes());
    hash.update(s.as_bytes());
}

fn hash_object(hash: &mut Sha256, object: &Map<String, Value>) {
    let mut keys: Vec<&String> = object.keys().collect();
    keys.sort_unstable();
    hash.update(b"{");
    hash.update((keys.len() as u64).to_be_bytes());
    for key in keys {
        hash_str(hash, key);
        hash_value(hash, &object[key.as_str()]);
    }
}

fn hash_value(hash: &mut Sha256, value: &Value) {
    match value {
        Value::Null => hash.update(b"n"),
        Value::Bool(b) => hash.update(if *b { b"t" } else { b"f" }),
        Value::Number(n) => {
            hash.update(b"#");
            hash_str(hash, &n.to_string());
        }
        Value::String(s) => {
            hash.update(b"s");
            hash_str(hash, s);
        }
        Value::Array(items) => {
            hash.update(b"[");
            hash.update((items.len() as u64).to_be_bytes());
            for item in items {
                hash_value(hash, item);
            }
        }
        Value::Object(object) => hash_object(hash, object),
    }
}

impl Job {
    /// Parses and validates a message body. Checks the contract only; whether
    /// the provider and operation exist is the config's business
    /// ([`crate::Config::operation`]).
    pub fn parse(body: &[u8], max_body_bytes: usize) -> Result<Job, InvalidJob> {
        if body.len() > max_body_bytes {
            return Err(InvalidJob::new(
                "body",
                format!(
                    "{} bytes exceeds the limit of {max_body_bytes} bytes",
                    body.len()
                ),
            ));
        }
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| InvalidJob::new("body", format!("not valid JSON: {e}")))?;
        let Value::Object(mut obj) = value else {
            return Err(InvalidJob::new("body", "must be a JSON object"));
        };

        let version = match obj.get("version") {
            None => return Err(InvalidJob::new("version", "missing")),
            Some(v) => v
                .as_u64()
                .ok_or_else(|| InvalidJob::new("version", "must be an unsigned integer"))?,
        };
        if version != CONTRACT_VERSION {
            return Err(InvalidJob::new(
                "version",
                format!("unsupported version {version}; this worker speaks {CONTRACT_VERSION}"),
            ));
        }
        let id = required_str(&obj, "id")?;
        let id =
            Uuid::parse_str(id).map_err(|e| InvalidJob::new("id", format!("not a UUID: {e}")))?;
        let provider = required_name(&obj, "provider")?;
        let operation = required_name(&obj, "operation")?;
        let idempotency_key = match obj.get("idempotency_key") {
            None | Some(Value::Null) => id.to_string(),
            Some(Value::String(k)) => {
                check_idempotency_key(k).map_err(|e| InvalidJob::new("idempotency_key", e))?;
                k.clone()
            }
            Some(_) => return Err(InvalidJob::new("idempotency_key", "must be a string")),
        };
        let created_at = required_str(&obj, "created_at")?;
        let created_at = DateTime::parse_from_rfc3339(created_at)
            .map_err(|e| InvalidJob::new("created_at", format!("not an RFC 3339 timestamp: {e}")))?
            .with_timezone(&Utc);
        let payload = match obj.remove("payload") {
            None => return Err(InvalidJob::new("payload", "missing")),
            Some(Value::Object(p)) => p,
            Some(_) => return Err(InvalidJob::new("payload", "must be a JSON object")),
        };
        if let Some(unknown) = obj.keys().find(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
            return Err(InvalidJob::new(
                unknown.clone(),
                "unknown field in a v1 job",
            ));
        }
        let fingerprint = fingerprint(&provider, &operation, &idempotency_key, &payload);
        Ok(Job {
            id,
            provider,
            operation,
            idempotency_key,
            payload,
            created_at,
            fingerprint,
        })
    }

    /// The job id a rejected body claims, if one can be read: lets an invalid
    /// job's dead letter be tied to the job the upstream thinks it sent.
    pub fn claimed_id(body: &[u8]) -> Option<Uuid> {
        let value: Value = serde_json::from_slice(body).ok()?;
        Uuid::parse_str(value.get("id")?.as_str()?).ok()
    }
}

fn required_name(obj: &Map<String, Value>, field: &str) -> Result<String, InvalidJob> {
    let name = required_str(obj, field)?;
    check_name(name).map_err(|problem| InvalidJob::new(field, problem))?;
    Ok(name.to_owned())
}

fn required_str<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<&'a str, InvalidJob> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(InvalidJob::new(field, "missing")),
        Some(Value::String(s)) if s.is_empty() => Err(InvalidJob::new(field, "must not be empty")),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(InvalidJob::new(field, "must be a string")),
    }
}

/// Whether `key` may be an idempotency key, or why not.
pub fn check_idempotency_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("must not be empty".into());
    }
    if key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(format!("longer than {MAX_IDEMPOTENCY_KEY_LEN} bytes"));
    }
    // It travels as an HTTP header: CR/LF would be refused there (or
    // worse), and a NUL cannot be stored.
    if has_control(key) {
        return Err("must not contain control characters (CR, LF, NUL, …)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Vec<u8> {
        serde_json::to_vec(&v).expect("serialise test body")
    }

    fn valid() -> Value {
        json!({
            "version": 1,
            "id": "0190b6c2-7c1e-7cc0-8f43-2f1d3c4b5a69",
            "provider": "stripe",
            "operation": "create_charge",
            "idempotency_key": "order-42",
            "payload": {"amount": 100},
            "created_at": "2026-11-24T10:00:00Z"
        })
    }

    #[test]
    fn parses_a_valid_job() {
        let job = Job::parse(&body(valid()), 1024).expect("valid job");
        assert_eq!(job.provider, "stripe");
        assert_eq!(job.idempotency_key, "order-42");
        assert_eq!(job.payload["amount"], 100);
    }

    #[test]
    fn idempotency_key_defaults_to_the_id() {
        let mut v = valid();
        v.as_object_mut().expect("object").remove("idempotency_key");
        let job = Job::parse(&body(v), 1024).expect("valid job");
        assert_eq!(job.idempotency_key, job.id.to_string());
    }

    #[test]
    fn envelope_round_trips_through_parse() {
        let env = JobEnvelope::new("p", "op", json!({"a": 1}), Utc::now());
        let job = Job::parse(&env.to_body(), 1024).expect("round trip");
        assert_eq!(job.id, env.id);
        assert_eq!(job.created_at, env.created_at);
    }

    fn field_of(v: Value) -> String {
        Job::parse(&body(v), 1024)
            .expect_err("must be invalid")
            .field
    }

    #[test]
    fn each_rejection_names_its_field() {
        let with = |k: &str, val: Value| {
            let mut v = valid();
            v[k] = val;
            v
        };
        let without = |k: &str| {
            let mut v = valid();
            v.as_object_mut().expect("object").remove(k);
            v
        };
        assert_eq!(field_of(with("version", json!(2))), "version");
        assert_eq!(field_of(without("version")), "version");
        assert_eq!(field_of(with("id", json!("nope"))), "id");
        assert_eq!(field_of(without("provider")), "provider");
        assert_eq!(field_of(with("operation", json!(7))), "operation");
        assert_eq!(field_of(with("payload", json!([1]))), "payload");
        assert_eq!(
            field_of(with("created_at", json!("yesterday"))),
            "created_at"
        );
        assert_eq!(
            field_of(with("idempotency_key", json!(""))),
            "idempotency_key"
        );
        assert_eq!(field_of(with("url", json!("http://evil"))), "url");
    }

    #[test]
    fn rejects_bad_json_and_oversize_as_body() {
        assert_eq!(
            Job::parse(b"{not json", 1024).expect_err("bad").field,
            "body"
        );
        assert_eq!(Job::parse(b"[]", 1024).expect_err("bad").field, "body");
        let big = body(valid());
        assert_eq!(Job::parse(&big, 10).expect_err("too big").field, "body");
    }

    #[test]
    fn control_characters_never_reach_a_stored_field() {
        let with = |k: &str, val: &str| {
            let mut v = valid();
            v[k] = json!(val);
            v
        };
        for field in ["provider", "operation", "idempotency_key"] {
            for bad in ["a\u{0}b", "line\r\nX-Injected: 1", "tab\there"] {
                let err = Job::parse(&body(with(field, bad)), 1024).expect_err("refused");
                assert_eq!(err.field, field, "{bad:?}");
            }
        }
        // An unknown field named by a NUL: the reason is refused, and the
        // text that describes it is printable.
        let mut v = valid();
        v["\u{0}\u{1b}[2J"] = json!(1);
        let err = Job::parse(&body(v), 1024).expect_err("unknown field");
        assert_eq!(err.field, "\\0\\u{1b}[2J");
        assert!(!crate::text::has_control(&err.to_string()));
        // A 140 KB field name is cut, not copied.
        let mut v = valid();
        v["x".repeat(140_000)] = json!(1);
        let err = Job::parse(&body(v), 1 << 20).expect_err("unknown field");
        assert!(
            err.to_string().len() < 1024,
            "{} bytes",
            err.to_string().len()
        );
    }

    #[test]
    fn a_bad_id_is_described_without_echoing_control_characters() {
        let mut v = valid();
        v["id"] = json!("\u{0}");
        let err = Job::parse(&body(v), 1024).expect_err("bad id");
        assert_eq!(err.field, "id");
        assert!(!crate::text::has_control(&err.problem), "{err}");
    }

    #[test]
    fn names_follow_the_config_rules() {
        let mut v = valid();
        v["provider"] = json!("Stripe");
        assert_eq!(
            Job::parse(&body(v), 1024).expect_err("upper case").field,
            "provider"
        );
    }

    #[test]
    fn the_fingerprint_is_the_content_not_the_serialisation() {
        let a = Job::parse(br#"{"version":1,"id":"0190b6c2-7c1e-7cc0-8f43-2f1d3c4b5a69","provider":"p","operation":"o","payload":{"a":1,"b":{"c":[1,"x"],"d":null}},"created_at":"2026-11-24T10:00:00Z"}"#, 1024).expect("valid");
        let reordered = Job::parse(br#"{"payload":{"b":{"d":null,"c":[1,"x"]},"a":1},"created_at":"2026-11-25T10:00:00Z","operation":"o","provider":"p","id":"0190b6c2-7c1e-7cc0-8f43-2f1d3c4b5a69","version":1}"#, 1024).expect("valid");
        assert_eq!(
            a.fingerprint, reordered.fingerprint,
            "key order and created_at do not matter"
        );
        let changed = Job::parse(br#"{"version":1,"id":"0190b6c2-7c1e-7cc0-8f43-2f1d3c4b5a69","provider":"p","operation":"o","payload":{"a":2,"b":{"c":[1,"x"],"d":null}},"created_at":"2026-11-24T10:00:00Z"}"#, 1024).expect("valid");
        assert_ne!(a.fingerprint, changed.fingerprint);
        let keyed = Job::parse(br#"{"version":1,"id":"0190b6c2-7c1e-7cc0-8f43-2f1d3c4b5a69","provider":"p","operation":"o","idempotency_key":"k","payload":{"a":1,"b":{"c":[1,"x"],"d":null}},"created_at":"2026-11-24T10:00:00Z"}"#, 1024).expect("valid");
        assert_ne!(a.fingerprint, keyed.fingerprint);
    }

    #[test]
    fn an_oversize_body_is_kept_as_a_prefix_with_its_size_and_hash() {
        let big = vec![b'x'; 2_000_000];
        let kept = KeptBody::of(&big, 262_144);
        assert_eq!(kept.bytes.len(), OVERSIZE_PREFIX_BYTES);
        assert_eq!(kept.size, 2_000_000);
        assert!(kept.is_truncated());
        assert_eq!(kept.sha256, <[u8; 32]>::from(Sha256::digest(&big)));
        let small = KeptBody::of(b"{}", 262_144);
        assert_eq!(
            (small.bytes.as_slice(), small.size, small.is_truncated()),
            (&b"{}"[..], 2, false)
        );
    }

    #[test]
    fn claimed_id_reads_what_it_can() {
        let mut v = valid();
        v["version"] = json!(99);
        assert!(Job::claimed_id(&body(v)).is_some());
        assert_eq!(Job::claimed_id(b"garbage"), None);
    }
}

#[cfg(test)]
mod contract_docs {
    //! The published contract (docs/) and this parser must agree.
    use super::*;

    fn docs() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs")
    }

    #[test]
    fn every_documented_example_is_a_valid_job() {
        let dir = docs().join("examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("docs/examples exists") {
            let path = entry.expect("dir entry").path();
            let body = std::fs::read(&path).expect("read example");
            Job::parse(&body, 1 << 20).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
        assert!(seen >= 2, "examples present");
    }

    #[test]
    fn the_json_schema_lists_exactly_the_fields_the_parser_knows() {
        let schema: Value = serde_json::from_slice(
            &std::fs::read(docs().join("job.schema.json")).expect("read schema"),
        )
        .expect("schema is JSON");
        let mut props: Vec<&str> = schema["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .map(String::as_str)
            .collect();
        props.sort_unstable();
        let mut known = KNOWN_FIELDS.to_vec();
        known.sort_unstable();
        assert_eq!(props, known);
        let required: Vec<&str> = schema["required"]
            .as_array()
            .expect("required")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let optional: Vec<&&str> = known.iter().filter(|f| !required.contains(f)).collect();
        assert_eq!(optional, [&"idempotency_key"]);
        assert_eq!(schema["additionalProperties"], Value::Bool(false));
        assert_eq!(schema["properties"]["version"]["const"], CONTRACT_VERSION);
    }
}
