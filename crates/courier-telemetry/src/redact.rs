//! Scrubbing secret values from everything the process logs.
//!
//! Owns the process-wide list of secret values (provider tokens, admin
//! tokens, passwords in connection URLs) and the log writer that replaces
//! them with `[redacted]`. Secrets are registered where they are resolved,
//! so no code path has to remember to hide them; this is the backstop
//! behind not logging headers and payloads in the first place. It must never
//! store a secret anywhere but this in-memory list.

use std::io::{self, Write};
use std::sync::RwLock;
use tracing_subscriber::fmt::MakeWriter;

/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";
/// Shorter values are not registered: scrubbing them would mangle ordinary
/// words, and a secret that short is no secret.
const MIN_SECRET_LEN: usize = 6;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Registers a value that must never appear in a log line, as written and
/// as JSON or `Debug` output would escape it.
pub fn register_secret(value: &str) {
    if value.len() < MIN_SECRET_LEN {
        return;
    }
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    for form in [value.to_owned(), escaped] {
        if !secrets.contains(&form) {
            secrets.push(form);
        }
    }
    // Longest first: a secret that is a prefix of another must not be
    // replaced inside it, leaving the other's tail behind.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// Registers the passwords of connection URLs, decoded and as written.
pub fn register_url_passwords<'a>(urls: impl IntoIterator<Item = &'a str>) {
    for url in urls {
        if let Some(password) = courier_core::config::url_password(url) {
            register_secret(&password);
        }
        if let Some(raw) = url
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('@'))
            .and_then(|(userinfo, _)| userinfo.split_once(':'))
            .map(|(_, password)| password)
        {
            register_secret(raw);
        }
    }
}

/// `text` with every registered secret replaced.
pub fn scrub(text: &str) -> std::borrow::Cow<'_, str> {
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    let mut out = std::borrow::Cow::Borrowed(text);
    for secret in secrets.iter() {
        if out.contains(secret.as_str()) {
            out = std::borrow::Cow::Owned(out.replace(secret.as_str(), REDACTED));
        }
    }
    out
}

/// Wraps a log writer so that each formatted line is scrubbed.
#[derive(Debug, Clone)]
pub struct Redacting<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactingWriter<M::Writer>;
    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter(self.0.make_writer())
    }
}

#[derive(Debug)]
pub struct RedactingWriter<W>(W);

impl<W: Write> Write for RedactingWriter<W> {
    /// The formatter hands over a whole event at once.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(text) => self.0.write_all(scrub(text).as_bytes())?,
            Err(_) => self.0.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_inside_a_longer_one_does_not_leave_a_tail() {
        register_secret("tok_prefix");
        register_secret("tok_prefix_and_more");
        assert_eq!(scrub("x tok_prefix_and_more y"), "x [redacted] y");
    }

    #[test]
    fn escaped_forms_and_url_passwords_are_scrubbed() {
        register_secret("pa\"ss\\word");
        assert_eq!(scrub(r#"{"v":"pa\"ss\\word"}"#), r#"{"v":"[redacted]"}"#);
        register_url_passwords(["postgres://u:s3cr%40t-pw@h/db"]);
        assert_eq!(
            scrub("s3cr@t-pw and s3cr%40t-pw"),
            "[redacted] and [redacted]"
        );
    }

    #[test]
    fn registered_secrets_are_scrubbed_and_short_values_ignored() {
        register_secret("sk_live_abcdef123");
        register_secret("abc");
        let line = "calling with Bearer sk_live_abcdef123 (abc)";
        assert_eq!(scrub(line), "calling with Bearer [redacted] (abc)");

        let mut out = Vec::new();
        RedactingWriter(&mut out)
            .write_all(line.as_bytes())
            .expect("write");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "calling with Bearer [redacted] (abc)"
        );
    }
}
