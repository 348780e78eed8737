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

/// Registers a value that must never appear in a log line.
pub fn register_secret(value: &str) {
    if value.len() < MIN_SECRET_LEN {
        return;
    }
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|s| s == value) {
        secrets.push(value.to_owned());
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
