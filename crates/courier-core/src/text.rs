//! Text from untrusted input made safe to store, send as a header or print.
//!
//! Owns the one rule for free text that came from a publisher, a provider or
//! an HTTP client and goes somewhere with limits of its own: PostgreSQL
//! `text` refuses NUL, AMQP headers and terminals must not carry control
//! characters, and nothing may grow without bound. It must never be used to
//! make invalid input acceptable: identifiers are validated where they
//! enter (the envelope), not escaped here.

/// Whether `s` holds a control character (C0, DEL or C1).
pub fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// `s` with every control character written as an escape (`\0`, `\n`,
/// `\u{1b}`) and cut to at most `max_bytes` bytes (an ellipsis marks the
/// cut). Everything else is kept as written.
pub fn printable(s: &str, max_bytes: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max_bytes));
    for c in s.chars() {
        let escaped = match c {
            '\0' => Some("\\0".to_owned()),
            '\n' => Some("\\n".to_owned()),
            '\r' => Some("\\r".to_owned()),
            '\t' => Some("\\t".to_owned()),
            c if c.is_control() => Some(format!("\\u{{{:x}}}", u32::from(c))),
            _ => None,
        };
        let len = escaped.as_ref().map_or(c.len_utf8(), String::len);
        if out.len() + len > max_bytes {
            out.push('…');
            return out;
        }
        match escaped {
            Some(e) => out.push_str(&e),
            None => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(printable("a\0b\nc\u{1b}[31m", 100), "a\\0b\\nc\\u{1b}[31m");
        assert_eq!(printable("zürich ✓", 100), "zürich ✓");
        assert!(has_control("x\u{85}"));
        assert!(!has_control("plain text"));
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        let cut = printable(&"é".repeat(100), 11);
        assert_eq!(cut, format!("{}…", "é".repeat(5)));
    }

    proptest! {
        #[test]
        fn the_result_is_bounded_and_free_of_control_characters(s in "\\PC*|[\\x00-\\x1f\\x7f-\\u{9f}]*", max in 1usize..200) {
            let out = printable(&s, max);
            prop_assert!(!has_control(&out));
            prop_assert!(out.len() <= max + '…'.len_utf8());
        }
    }
}
