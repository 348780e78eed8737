//! Resolving secret references (`token_env`, `token_file`) into values.
//!
//! Owns the only code that reads a secret. It must never put a secret's value
//! into an error, a log line or a `Debug` output.

use courier_core::config::SecretRef;
use std::fmt;

/// A resolved secret. `Debug` and `Display` print `***`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set (or not UTF-8)")]
    EnvMissing(String),
    #[error("cannot read {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the secret from {0} is empty")]
    Empty(String),
}

/// Reads the secret a reference points at. A trailing newline in a file is
/// not part of the secret.
pub fn resolve(reference: &SecretRef) -> Result<Secret, SecretError> {
    let (value, origin) = match reference {
        SecretRef::Env(name) => (
            std::env::var(name).map_err(|_| SecretError::EnvMissing(name.clone()))?,
            format!("${name}"),
        ),
        SecretRef::File(path) => (
            std::fs::read_to_string(path).map_err(|source| SecretError::File {
                path: path.display().to_string(),
                source,
            })?,
            path.display().to_string(),
        ),
    };
    let value = value.trim_end_matches(['\n', '\r']).to_owned();
    if value.is_empty() {
        return Err(SecretError::Empty(origin));
    }
    courier_telemetry::redact::register_secret(&value);
    Ok(Secret(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_files_without_the_trailing_newline_and_never_shows_the_value() {
        let path = std::env::temp_dir().join(format!("courier-secret-{}", std::process::id()));
        std::fs::write(&path, "s3cr3t\n").expect("write temp secret");
        let s = resolve(&SecretRef::File(path.clone())).expect("resolves");
        assert_eq!(s.expose(), "s3cr3t");
        assert!(!format!("{s:?}").contains("s3cr3t"));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn missing_sources_are_named() {
        let e =
            resolve(&SecretRef::Env("COURIER_TEST_SURELY_UNSET_VAR".into())).expect_err("unset");
        assert!(e.to_string().contains("COURIER_TEST_SURELY_UNSET_VAR"));
        let e =
            resolve(&SecretRef::File("/nonexistent/courier/token".into())).expect_err("no file");
        assert!(e.to_string().contains("/nonexistent/courier/token"));
    }
}
