//! The job contract, version 1: the JSON envelope an upstream publishes.
//!
//! Owns parsing and validating raw message bodies into [`Job`]s. Every
//! rejection is an [`InvalidJob`] naming the offending field, so a bad job can
//! be dead-lettered with a reason an operator can act on. It must never panic
//! on input, whatever the bytes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
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
}

/// Why a message body is not a valid job. `field` names the JSON field (or
/// `body` for the message as a whole).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {problem}")]
pub struct InvalidJob {
    pub field: String,
    pub problem: String,
}

impl InvalidJob {
    pub fn new(field: impl Into<String>, problem: impl fmt::Display) -> Self {
        Self {
            field: field.into(),
            problem: problem.to_string(),
        }
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
        let provider = required_str(&obj, "provider")?.to_owned();
        let operation = required_str(&obj, "operation")?.to_owned();
        let idempotency_key = match obj.get("idempotency_key") {
            None | Some(Value::Null) => id.to_string(),
            Some(Value::String(k)) if k.is_empty() => {
                return Err(InvalidJob::new("idempotency_key", "must not be empty"));
            }
            Some(Value::String(k)) if k.len() > MAX_IDEMPOTENCY_KEY_LEN => {
                return Err(InvalidJob::new(
                    "idempotency_key",
                    format!("longer than {MAX_IDEMPOTENCY_KEY_LEN} bytes"),
                ));
            }
            Some(Value::String(k)) => k.clone(),
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
        Ok(Job {
            id,
            provider,
            operation,
            idempotency_key,
            payload,
            created_at,
        })
    }

    /// The job id a rejected body claims, if one can be read: lets an invalid
    /// job's dead letter be tied to the job the upstream thinks it sent.
    pub fn claimed_id(body: &[u8]) -> Option<Uuid> {
        let value: Value = serde_json::from_slice(body).ok()?;
        Uuid::parse_str(value.get("id")?.as_str()?).ok()
    }
}

fn required_str<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<&'a str, InvalidJob> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(InvalidJob::new(field, "missing")),
        Some(Value::String(s)) if s.is_empty() => Err(InvalidJob::new(field, "must not be empty")),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(InvalidJob::new(field, "must be a string")),
    }
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
