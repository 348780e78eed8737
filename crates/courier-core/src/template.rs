//! Path templates: `/customers/{customer_id}/charges` filled from a job's
//! payload. Owns the template grammar and percent-encoding of the values it
//! inserts. It must never let a payload value change the URL's structure:
//! every inserted value is one path segment, percent-encoded, and a value
//! that would still move the request (`.`, `..`, which URL parsers resolve
//! even when encoded, or a separator) is refused as invalid.

use crate::envelope::InvalidJob;
use serde_json::{Map, Value};
use std::fmt::Write as _;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Field(String),
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    source: String,
    pieces: Vec<Piece>,
}

impl PathTemplate {
    /// Parses a template; the error says what is wrong with it.
    pub fn parse(source: &str) -> Result<Self, String> {
        if !source.starts_with('/') {
            return Err("must start with `/`".into());
        }
        let mut pieces = Vec::new();
        let mut rest = source;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Literal(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("unclosed `{{` in {source:?}"))?;
            let name = &after[..close];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "placeholder {{{name}}} must be a payload field name (letters, digits, _)"
                ));
            }
            pieces.push(Piece::Field(name.to_owned()));
            rest = &after[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("unmatched `}}` in {source:?}"));
        }
        if !rest.is_empty() {
            pieces.push(Piece::Literal(rest.to_owned()));
        }
        Ok(Self {
            source: source.to_owned(),
            pieces,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Fills the template from the payload. A missing or non-scalar field is
    /// an [`InvalidJob`] naming `payload.<field>`.
    pub fn render(&self, payload: &Map<String, Value>) -> Result<String, InvalidJob> {
        let mut out = String::with_capacity(self.source.len() + 16);
        for piece in &self.pieces {
            match piece {
                Piece::Literal(s) => out.push_str(s),
                Piece::Field(name) => {
                    let field = format!("payload.{name}");
                    let value = match payload.get(name) {
                        None | Some(Value::Null) => {
                            return Err(InvalidJob::new(
                                field,
                                "missing (the operation's path needs it)",
                            ));
                        }
                        Some(Value::String(s)) if s.is_empty() => {
                            return Err(InvalidJob::new(field, "must not be empty"));
                        }
                        Some(Value::String(s)) => {
                            check_segment(s).map_err(|problem| InvalidJob::new(&field, problem))?;
                            s.clone()
                        }
                        Some(Value::Number(n)) => n.to_string(),
                        Some(Value::Bool(b)) => b.to_string(),
                        Some(_) => {
                            return Err(InvalidJob::new(
                                field,
                                "must be a string, number or boolean",
                            ));
                        }
                    };
                    encode_segment(&value, &mut out);
                }
            }
        }
        Ok(out)
    }
}

/// Why a string cannot be a path segment: `%2E%2E` is still `..` to the
/// `url` crate (and to most servers), which would move the request above
/// the operation's path and the base URL's prefix; a separator would split
/// it into segments the template never had.
fn check_segment(value: &str) -> Result<(), &'static str> {
    if value == "." || value == ".." {
        return Err("must not be `.` or `..` (a path segment that moves the request)");
    }
    if value.contains(['/', '\\']) {
        return Err("must not contain a path separator (`/` or `\\`)");
    }
    if crate::text::has_control(value) {
        return Err("must not contain control characters");
    }
    Ok(())
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so `?`,
/// `#`, `%` and the like in a value stay inside one segment.
fn encode_segment(value: &str, out: &mut String) {
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' | b'.' => {
                out.push(byte as char)
            }
            _ => {
                let _ = write!(out, "%{byte:02X}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn payload(v: Value) -> Map<String, Value> {
        v.as_object().expect("object").clone()
    }

    #[test]
    fn fills_fields_and_encodes_them() {
        let t = PathTemplate::parse("/customers/{id}/charges/{n}").expect("valid");
        let p = payload(json!({"id": "a b?c#d", "n": 7}));
        assert_eq!(
            t.render(&p).expect("renders"),
            "/customers/a%20b%3Fc%23d/charges/7"
        );
    }

    #[test]
    fn dot_segments_and_separators_are_refused() {
        let t = PathTemplate::parse("/x/{a}/{b}").expect("valid");
        for (a, b) in [
            ("..", ".."),
            (".", "x"),
            ("x", ".."),
            ("a/b", "x"),
            ("x", "..\\.."),
            ("x", "a\u{0}"),
        ] {
            let err = t
                .render(&payload(json!({"a": a, "b": b})))
                .expect_err("refused");
            assert!(
                err.field == "payload.a" || err.field == "payload.b",
                "{err}"
            );
        }
        assert_eq!(
            t.render(&payload(json!({"a": "v1.2", "b": "...x"})))
                .expect("renders"),
            "/x/v1.2/...x"
        );
        assert_eq!(
            t.render(&payload(json!({"a": "%2E%2E", "b": "..."})))
                .expect("renders"),
            "/x/%252E%252E/...",
            "an encoded dot is data, encoded again"
        );
    }

    #[test]
    fn missing_field_names_it() {
        let t = PathTemplate::parse("/x/{customer_id}").expect("valid");
        let err = t.render(&payload(json!({}))).expect_err("missing");
        assert_eq!(err.field, "payload.customer_id");
        let err = t
            .render(&payload(json!({"customer_id": {"a": 1}})))
            .expect_err("object");
        assert_eq!(err.field, "payload.customer_id");
    }

    #[test]
    fn rejects_malformed_templates() {
        assert!(PathTemplate::parse("x").is_err());
        assert!(PathTemplate::parse("/x/{").is_err());
        assert!(PathTemplate::parse("/x/{a-b}").is_err());
        assert!(PathTemplate::parse("/x/}").is_err());
        assert!(PathTemplate::parse("/plain").is_ok());
    }
}
