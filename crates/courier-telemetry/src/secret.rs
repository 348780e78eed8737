//! Resolving secret references (`token_env`, `token_file`) into values, and
//! re-reading files when they change.
//!
//! Owns the only code that reads a secret. A secret from a file rotates
//! without a restart: [`reload_all`] (called on SIGHUP and on a short
//! interval by the running services) re-reads every file-backed secret still
//! in use, and users ask a [`SecretSource`] for the current value on each
//! use. A file that cannot be read, or reads empty, keeps the last good
//! value (and says so in the log): a half-written rotation must not take
//! the secret away. It must never put a secret's value into an error, a log
//! line or a `Debug` output.

use courier_core::config::SecretRef;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};

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
    #[error("the secret from {0} is refused: {1}")]
    Refused(String, String),
}

/// Where a secret comes from, for messages.
fn origin(reference: &SecretRef) -> String {
    match reference {
        SecretRef::Env(name) => format!("${name}"),
        SecretRef::File(path) => path.display().to_string(),
    }
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
    crate::redact::register_secret(&value);
    Ok(Secret(value))
}

/// What a value read from a secret's source must be, and what happens when
/// a re-read finds none.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// `Err` says why a value is refused (a rotated value that fails keeps
    /// the last good one, and is logged).
    pub check: fn(&str) -> Result<(), String>,
    /// A file gone or empty on a re-read: keep the last value (a provider's
    /// token: a half-done rotation must not stop the calls), or revoke it
    /// (an admin token: removing the file takes the access away).
    pub revoke_when_gone: bool,
}

impl Rules {
    /// Any non-empty value; kept when the file goes.
    pub const ANY: Rules = Rules {
        check: |_| Ok(()),
        revoke_when_gone: false,
    };
}

/// A secret that follows its source: the value as of the last reload.
/// Cheap to clone; clones share the value.
#[derive(Clone, Debug)]
pub struct SecretSource {
    inner: Arc<Source>,
}

#[derive(Debug)]
struct Source {
    reference: SecretRef,
    rules: Rules,
    /// `None` once revoked.
    current: RwLock<Option<Secret>>,
}

/// Every file-backed source in use, for [`reload_all`]. Dropped sources
/// fall out on the next reload.
static FILE_SOURCES: Mutex<Vec<Weak<Source>>> = Mutex::new(Vec::new());

impl SecretSource {
    /// Resolves `reference` now (failing as [`resolve`] does, or when the
    /// value breaks `rules`) and, for a file, keeps following it.
    pub fn open(reference: &SecretRef, rules: Rules) -> Result<SecretSource, SecretError> {
        let secret = resolve(reference)?;
        (rules.check)(secret.expose())
            .map_err(|why| SecretError::Refused(origin(reference), why))?;
        let inner = Arc::new(Source {
            reference: reference.clone(),
            rules,
            current: RwLock::new(Some(secret)),
        });
        if matches!(reference, SecretRef::File(_)) {
            FILE_SOURCES
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Arc::downgrade(&inner));
        }
        Ok(SecretSource { inner })
    }

    /// The value as of the last reload; `None` once revoked.
    pub fn current(&self) -> Option<Secret> {
        self.inner
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Re-reads the source; `true` when the value changed.
    fn reload(source: &Source) -> bool {
        let fresh = resolve(&source.reference).and_then(|fresh| {
            (source.rules.check)(fresh.expose())
                .map(|()| fresh)
                .map_err(|why| SecretError::Refused(origin(&source.reference), why))
        });
        let mut current = source
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match fresh {
            Ok(fresh) => {
                if current
                    .as_ref()
                    .is_some_and(|c| c.expose() == fresh.expose())
                {
                    return false;
                }
                *current = Some(fresh);
                true
            }
            Err(e @ (SecretError::File { .. } | SecretError::Empty(_)))
                if source.rules.revoke_when_gone =>
            {
                if current.take().is_some() {
                    tracing::warn!(error = %e, "a secret's file is gone or empty: revoked");
                    return true;
                }
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "re-reading a secret failed; keeping the last value");
                false
            }
        }
    }
}

/// Re-reads every file-backed secret in use; returns how many changed.
pub fn reload_all() -> usize {
    let sources: Vec<Arc<Source>> = {
        let mut all = FILE_SOURCES.lock().unwrap_or_else(PoisonError::into_inner);
        all.retain(|s| s.strong_count() > 0);
        all.iter().filter_map(Weak::upgrade).collect()
    };
    let changed = sources.iter().filter(|s| SecretSource::reload(s)).count();
    if changed > 0 {
        tracing::info!(changed, "secrets re-read from their files");
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_secret(value: &str) -> std::path::PathBuf {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "courier-secret-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        std::fs::write(&path, value).expect("write temp secret");
        path
    }

    #[test]
    fn reads_files_without_the_trailing_newline_and_never_shows_the_value() {
        let path = temp_secret("s3cr3t\n");
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

    #[test]
    fn a_file_secret_follows_its_file_and_survives_a_bad_rotation() {
        let path = temp_secret("first-value\n");
        let source = SecretSource::open(&SecretRef::File(path.clone()), Rules::ANY).expect("opens");
        let value = |s: &SecretSource| s.current().map(|v| v.expose().to_owned());
        assert_eq!(value(&source).as_deref(), Some("first-value"));
        std::fs::write(&path, "second-value\n").expect("rotate");
        assert!(reload_all() >= 1);
        assert_eq!(value(&source).as_deref(), Some("second-value"));
        // Half-written or gone: the last good value stays.
        std::fs::write(&path, "").expect("truncate");
        reload_all();
        assert_eq!(value(&source).as_deref(), Some("second-value"));
        let _ = std::fs::remove_file(&path);
        reload_all();
        assert_eq!(value(&source).as_deref(), Some("second-value"));
    }

    #[test]
    fn a_rotated_value_that_breaks_the_rules_is_refused_and_a_revocable_one_goes_with_its_file() {
        let long = Rules {
            check: |v| {
                if v.len() >= 8 {
                    Ok(())
                } else {
                    Err("short".into())
                }
            },
            revoke_when_gone: true,
        };
        let path = temp_secret("long-enough\n");
        let source = SecretSource::open(&SecretRef::File(path.clone()), long).expect("opens");
        std::fs::write(&path, "short\n").expect("rotate");
        reload_all();
        assert_eq!(
            source.current().map(|v| v.expose().to_owned()).as_deref(),
            Some("long-enough")
        );
        let _ = std::fs::remove_file(&path);
        reload_all();
        assert!(source.current().is_none(), "revoked");
        assert!(SecretSource::open(&SecretRef::File(path), long).is_err());
    }
}
