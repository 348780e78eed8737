//! JSON Merge Patch (RFC 7386), applied by operators to a dead job's payload
//! before requeuing it.
//!
//! Owns the patch semantics only; where a patch applies (the job's
//! `payload`) and how it is recorded is the caller's business.

use serde_json::Value;

/// Applies `patch` to `target` in place: objects merge recursively, `null`
/// removes a member, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// Largest number magnitude a patch may hold: PostgreSQL's `jsonb` keeps a
/// number as its exact decimal digits, and serde_json cannot read back the
/// 309-digit expansion of values near `f64::MAX`.
pub const MAX_STORED_NUMBER: f64 = 1e300;

/// Why `value` cannot be kept in PostgreSQL's `jsonb` and read back (an
/// operator's patch is recorded in the audit trail), if it cannot: a NUL
/// in a key or a string, or a number beyond ±[`MAX_STORED_NUMBER`].
pub fn unstorable(value: &Value) -> Option<&'static str> {
    match value {
        Value::String(s) if s.contains('\0') => Some("a NUL (\\u0000) in a key or a string"),
        Value::Number(n) if n.as_f64().is_some_and(|f| f.abs() > MAX_STORED_NUMBER) => {
            Some("a number beyond ±1e300")
        }
        Value::Array(items) => items.iter().find_map(unstorable),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                Some("a NUL (\\u0000) in a key or a string")
            } else {
                unstorable(v)
            }
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn what_jsonb_cannot_keep_is_found_at_any_depth() {
        assert_eq!(
            unstorable(&json!({"a": [1, "b", {"c": null}, -1e300]})),
            None
        );
        assert!(unstorable(&json!({"a\u{0}": 1})).is_some());
        assert!(unstorable(&json!({"a": {"b": null, "c\u{0}": null}})).is_some());
        assert!(unstorable(&json!({"a": ["x", "y\u{0}"]})).is_some());
        assert!(unstorable(&json!({"a": [{"b": f64::MAX}]})).is_some());
        assert!(unstorable(&json!({"a": -1.5e301})).is_some());
    }

    #[test]
    fn follows_the_rfc_7386_examples() {
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (json!(["a"]), json!({"a": "b"}), json!({"a": "b"})),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ];
        for (mut target, patch, expected) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, expected, "patch {patch}");
        }
    }
}
