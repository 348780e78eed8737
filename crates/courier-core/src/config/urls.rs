//! Names and addresses in the config: the namespace rule, header names
//! that look like credentials, and URLs with their password kept out of
//! sight.
//!
//! Owns finding a URL's password (so redaction can know it) and writing a
//! URL without it. It must never return a password in a message.

/// A namespace becomes a queue prefix and a PostgreSQL schema name.
pub fn check_namespace(ns: &str) -> Result<(), String> {
    let ok = ns.len() <= 40
        && ns.starts_with(|c: char| c.is_ascii_lowercase())
        && ns
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{ns:?} must be 1-40 characters of a-z, 0-9 and _, starting with a letter"
        ))
    }
}

pub(super) fn looks_secret(header: &str) -> bool {
    let h = header.to_ascii_lowercase();
    [
        "authorization",
        "cookie",
        "token",
        "secret",
        "password",
        "key",
        "signature",
    ]
    .iter()
    .any(|s| h.contains(s))
}

/// The password a connection URL carries, decoded, if it has one: in the
/// user info (`u:pw@`) or as a `password=` query parameter (which libpq and
/// sqlx accept). Used to keep it out of logs and messages.
pub fn url_password(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    if let Some(p) = query_password(&u) {
        return Some(p);
    }
    let encoded = u.password()?;
    Some(
        url::form_urlencoded::parse(format!("p={}", encoded.replace('+', "%2B")).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default(),
    )
}

pub(super) fn query_password(u: &url::Url) -> Option<String> {
    u.query_pairs()
        .find(|(k, _)| k == "password")
        .map(|(_, v)| v.into_owned())
}

/// A URL with its password replaced, fit for logs and messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            if query_password(&u).is_some() {
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if k == "password" {
                            "***".to_owned()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        Err(_) => "<unparseable url>".to_owned(),
    }
}
