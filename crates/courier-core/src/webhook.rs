//! Webhook signatures: signing what Courier sends and verifying what it
//! receives, for three schemes.
//!
//! Owns the wire formats and their rules: [Standard Webhooks]
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64> …`
//! over `{id}.{timestamp}.{body}`), Stripe (`Stripe-Signature:
//! t=<ts>,v1=<hex>,…` over `{t}.{body}`) and GitHub (`X-Hub-Signature-256:
//! sha256=<hex>` over the body). All three are HMAC-SHA256; any configured
//! key matching any signature sent verifies, so a key rotates by adding the
//! new one before the old one goes. Comparisons are constant time
//! (`Mac::verify_slice`), every header is bounded before it is parsed, and a
//! timestamp is judged only once the signature holds (so
//! `stale_timestamp` means a genuine but old or early message: a replay or a
//! clock off, never a forgery). It must never perform I/O (callers pass the
//! headers, the clock and the keys), and never put a key into an error or a
//! `Debug` output.
//!
//! [Standard Webhooks]: https://www.standardwebhooks.com

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac as _};
use sha2::Sha256;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// Longest signature header read; a longer one is refused unparsed.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// Most signatures (or Stripe elements) one header may list.
pub const MAX_SIGNATURES: usize = 64;
/// Longest event id (`webhook-id`, `X-GitHub-Delivery`) accepted.
pub const MAX_EVENT_ID_BYTES: usize = 256;

/// Standard Webhooks' secret prefix; the rest is the key in base64.
const WHSEC: &str = "whsec_";
/// An HMAC-SHA256 tag.
const TAG_BYTES: usize = 32;

/// A signature scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    StandardWebhooks,
    Stripe,
    Github,
}

impl Scheme {
    pub const ALL: [Scheme; 3] = [Self::StandardWebhooks, Self::Stripe, Self::Github];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::StandardWebhooks => "standard-webhooks",
            Self::Stripe => "stripe",
            Self::Github => "github",
        }
    }
}

impl std::str::FromStr for Scheme {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|scheme| scheme.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "{:?} is not a webhook scheme: use \"standard-webhooks\", \"stripe\" or \"github\"",
                    crate::text::printable(s, 64)
                )
            })
    }
}

/// One HMAC key. `Debug` prints `SigningKey(***)`; there is no `Display`
/// and no way to read the key back.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

impl SigningKey {
    /// The key a secret stands for under `scheme`: Standard Webhooks'
    /// `whsec_<base64>` (the prefix is optional, as in the spec's
    /// libraries) decoded; Stripe's `whsec_…` string and GitHub's secret as
    /// they are, byte for byte. The error never holds the secret.
    pub fn parse(scheme: Scheme, secret: &str) -> Result<SigningKey, String> {
        if secret.is_empty() {
            return Err("the secret is empty".to_owned());
        }
        let key = match scheme {
            Scheme::StandardWebhooks => {
                let encoded = secret.strip_prefix(WHSEC).unwrap_or(secret);
                // The decoder's own error names the offending byte: not
                // repeated here.
                BASE64.decode(encoded).map_err(|_| {
                    "not a Standard Webhooks secret: expected whsec_ followed by base64".to_owned()
                })?
            }
            Scheme::Stripe | Scheme::Github => secret.as_bytes().to_vec(),
        };
        if key.is_empty() {
            return Err("the secret holds no key bytes".to_owned());
        }
        Ok(SigningKey(key))
    }

    fn mac(&self, parts: &[&[u8]]) -> HmacSha256 {
        // HMAC takes a key of any length: this cannot fail.
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        for part in parts {
            mac.update(part);
        }
        mac
    }
}

/// What a verified message says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Standard Webhooks: `webhook-id` (signed); GitHub:
    /// `X-GitHub-Delivery` (not covered by GitHub's signature); Stripe:
    /// `None` (the event id is the body's `id`).
    pub event_id: Option<String>,
    /// The signed timestamp (Standard Webhooks, Stripe).
    pub timestamp: Option<i64>,
}

/// Why a message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// No signature header, or none of the scheme's version (`v1`).
    MissingSignature,
    /// A header present but not of the scheme's form, or over its bounds.
    Malformed,
    /// No configured key made any of the signatures.
    BadSignature,
    /// Signed, but the timestamp is further from now than the tolerance.
    StaleTimestamp,
}

impl Rejection {
    pub const ALL: [Rejection; 4] = [
        Self::MissingSignature,
        Self::Malformed,
        Self::BadSignature,
        Self::StaleTimestamp,
    ];

    /// The word for metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingSignature => "missing_signature",
            Self::Malformed => "malformed",
            Self::BadSignature => "bad_signature",
            Self::StaleTimestamp => "stale_timestamp",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The value of `webhook-signature` for a Standard Webhooks message: one
/// `v1,<base64>` per key, space-separated (empty without keys).
pub fn sign_standard(keys: &[SigningKey], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let timestamp = timestamp.to_string();
    keys.iter()
        .map(|key| {
            let tag = key
                .mac(&[msg_id.as_bytes(), b".", timestamp.as_bytes(), b".", body])
                .finalize()
                .into_bytes();
            format!("v1,{}", BASE64.encode(tag))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The value of `Stripe-Signature` for `body` at `timestamp`: `t=<ts>`
/// and one `v1=<hex>` per key (for tests and tools: Courier does not send
/// Stripe's scheme).
pub fn sign_stripe(keys: &[SigningKey], timestamp: i64, body: &[u8]) -> String {
    let t = timestamp.to_string();
    let mut header = format!("t={t}");
    for key in keys {
        let tag = key.mac(&[t.as_bytes(), b".", body]).finalize().into_bytes();
        header.push_str(",v1=");
        header.push_str(&hex(&tag));
    }
    header
}

/// The value of `X-Hub-Signature-256` for `body`: `sha256=<hex>` (GitHub
/// sends one signature; for tests and tools).
pub fn sign_github(key: &SigningKey, body: &[u8]) -> String {
    format!("sha256={}", hex(&key.mac(&[body]).finalize().into_bytes()))
}

/// Verifies a received message under `scheme` with any of `keys`.
/// `header` looks a header up by its lowercase name; `now` is in unix
/// seconds; `tolerance_secs` bounds the signed timestamp's distance from
/// `now`, either way (GitHub's scheme has none: ignored).
pub fn verify(
    scheme: Scheme,
    keys: &[SigningKey],
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
    now: i64,
    tolerance_secs: u64,
) -> Result<Verified, Rejection> {
    match scheme {
        Scheme::StandardWebhooks => verify_standard(keys, header, body, now, tolerance_secs),
        Scheme::Stripe => verify_stripe(keys, header, body, now, tolerance_secs),
        Scheme::Github => verify_github(keys, header, body),
    }
}

/// A header's value, refused when over [`MAX_HEADER_BYTES`].
fn bounded(
    header: &dyn Fn(&str) -> Option<String>,
    name: &str,
) -> Result<Option<String>, Rejection> {
    match header(name) {
        Some(v) if v.len() > MAX_HEADER_BYTES => Err(Rejection::Malformed),
        v => Ok(v),
    }
}

/// Whether `value` may be an event id: present, at most
/// [`MAX_EVENT_ID_BYTES`], no control characters, no spaces. The one rule
/// for ids, whether a header or a body carries them.
pub fn is_event_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_EVENT_ID_BYTES
        && !value.chars().any(|c| c.is_control() || c.is_whitespace())
}

fn event_id(value: String) -> Result<String, Rejection> {
    if is_event_id(&value) {
        Ok(value)
    } else {
        Err(Rejection::Malformed)
    }
}

/// Unix seconds as senders write them: ASCII digits, no sign, at most 12
/// of them (past the year 33000: none sent today).
fn unix_seconds(value: &str) -> Result<i64, Rejection> {
    if value.is_empty() || value.len() > 12 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Rejection::Malformed);
    }
    value.parse().map_err(|_| Rejection::Malformed)
}

fn fresh(timestamp: i64, now: i64, tolerance_secs: u64) -> Result<(), Rejection> {
    if timestamp.abs_diff(now) > tolerance_secs {
        return Err(Rejection::StaleTimestamp);
    }
    Ok(())
}

/// Whether any key's tag over `parts` equals any of `tags`, each compared
/// in constant time.
fn any_matches(keys: &[SigningKey], parts: &[&[u8]], tags: &[Vec<u8>]) -> bool {
    keys.iter().any(|key| {
        let mac = key.mac(parts);
        tags.iter().any(|tag| mac.clone().verify_slice(tag).is_ok())
    })
}

fn verify_standard(
    keys: &[SigningKey],
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
    now: i64,
    tolerance_secs: u64,
) -> Result<Verified, Rejection> {
    let Some(signatures) = bounded(header, "webhook-signature")? else {
        return Err(Rejection::MissingSignature);
    };
    let id = bounded(header, "webhook-id")?.ok_or(Rejection::Malformed)?;
    let id = event_id(id)?;
    let timestamp = bounded(header, "webhook-timestamp")?.ok_or(Rejection::Malformed)?;
    let timestamp = unix_seconds(&timestamp)?;
    let mut tags = Vec::new();
    for (i, entry) in signatures.split(' ').filter(|e| !e.is_empty()).enumerate() {
        if i >= MAX_SIGNATURES {
            return Err(Rejection::Malformed);
        }
        let (version, signature) = entry.split_once(',').ok_or(Rejection::Malformed)?;
        // Other versions (v1a: asymmetric) are not ours to check.
        if version != "v1" {
            continue;
        }
        let tag = BASE64.decode(signature).map_err(|_| Rejection::Malformed)?;
        tags.push(tag);
    }
    if tags.is_empty() {
        return Err(Rejection::MissingSignature);
    }
    let ts = timestamp.to_string();
    let parts: [&[u8]; 5] = [id.as_bytes(), b".", ts.as_bytes(), b".", body];
    if !any_matches(keys, &parts, &tags) {
        return Err(Rejection::BadSignature);
    }
    fresh(timestamp, now, tolerance_secs)?;
    Ok(Verified {
        event_id: Some(id),
        timestamp: Some(timestamp),
    })
}

fn verify_stripe(
    keys: &[SigningKey],
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
    now: i64,
    tolerance_secs: u64,
) -> Result<Verified, Rejection> {
    let Some(value) = bounded(header, "stripe-signature")? else {
        return Err(Rejection::MissingSignature);
    };
    let mut timestamp = None;
    let mut tags = Vec::new();
    for (i, element) in value.split(',').enumerate() {
        if i >= MAX_SIGNATURES {
            return Err(Rejection::Malformed);
        }
        let (name, content) = element.trim().split_once('=').ok_or(Rejection::Malformed)?;
        match name {
            "t" if timestamp.is_some() => return Err(Rejection::Malformed),
            "t" => timestamp = Some(unix_seconds(content)?),
            "v1" => tags.push(unhex(content).ok_or(Rejection::Malformed)?),
            // v0 (test mode's old scheme) and whatever comes next.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(Rejection::Malformed)?;
    if tags.is_empty() {
        return Err(Rejection::MissingSignature);
    }
    let ts = timestamp.to_string();
    if !any_matches(keys, &[ts.as_bytes(), b".", body], &tags) {
        return Err(Rejection::BadSignature);
    }
    fresh(timestamp, now, tolerance_secs)?;
    Ok(Verified {
        event_id: None,
        timestamp: Some(timestamp),
    })
}

fn verify_github(
    keys: &[SigningKey],
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
) -> Result<Verified, Rejection> {
    let Some(value) = bounded(header, "x-hub-signature-256")? else {
        return Err(Rejection::MissingSignature);
    };
    let tag = value
        .strip_prefix("sha256=")
        .and_then(unhex)
        .ok_or(Rejection::Malformed)?;
    let delivery = bounded(header, "x-github-delivery")?
        .map(event_id)
        .transpose()?;
    if !any_matches(keys, &[body], &[tag]) {
        return Err(Rejection::BadSignature);
    }
    Ok(Verified {
        event_id: delivery,
        timestamp: None,
    })
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// A hex HMAC-SHA256 tag (64 digits, either case); `None` otherwise.
fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() != TAG_BYTES * 2 {
        return None;
    }
    let digit = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some((digit(pair[0])? << 4) | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn headers(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name: &str| map.get(name).cloned()
    }

    fn key(scheme: Scheme, secret: &str) -> SigningKey {
        SigningKey::parse(scheme, secret).expect("a valid secret")
    }

    // The specification's test vector, as the Standard Webhooks reference
    // libraries check it: standard-webhooks/standard-webhooks,
    // libraries/go/webhook_test.go (`TestWebhookSign`).
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1614265330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn standard(id: &str, ts: i64, signature: &str) -> impl Fn(&str) -> Option<String> + use<> {
        headers(&[
            ("webhook-id", id),
            ("webhook-timestamp", &ts.to_string()),
            ("webhook-signature", signature),
        ])
    }

    #[test]
    fn standard_webhooks_signs_the_specifications_test_vector() {
        let k = key(Scheme::StandardWebhooks, SPEC_SECRET);
        assert_eq!(
            sign_standard(std::slice::from_ref(&k), SPEC_ID, SPEC_TS, SPEC_BODY),
            SPEC_SIGNATURE
        );
        // The prefix is optional (the libraries strip it).
        let bare = key(Scheme::StandardWebhooks, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        assert_eq!(
            sign_standard(&[bare], SPEC_ID, SPEC_TS, SPEC_BODY),
            SPEC_SIGNATURE
        );
        let verified = verify(
            Scheme::StandardWebhooks,
            &[k],
            &standard(SPEC_ID, SPEC_TS, SPEC_SIGNATURE),
            SPEC_BODY,
            SPEC_TS + 10,
            300,
        );
        assert_eq!(
            verified,
            Ok(Verified {
                event_id: Some(SPEC_ID.to_owned()),
                timestamp: Some(SPEC_TS)
            })
        );
    }

    #[test]
    fn github_verifies_its_documented_example() {
        // docs.github.com, "Validating webhook deliveries", "Testing the
        // webhook payload validation".
        let k = key(Scheme::Github, "It's a Secret to Everybody");
        let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign_github(&k, b"Hello, World!"), expected);
        let got = verify(
            Scheme::Github,
            std::slice::from_ref(&k),
            &headers(&[
                ("x-hub-signature-256", expected),
                ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            ]),
            b"Hello, World!",
            0,
            0,
        );
        assert_eq!(
            got,
            Ok(Verified {
                event_id: Some("72d3162e-cc78-11e3-81ab-4c9367dc0958".to_owned()),
                timestamp: None
            })
        );
        // Upper-case hex is the same tag.
        let upper = format!("sha256={}", expected["sha256=".len()..].to_uppercase());
        assert!(
            verify(
                Scheme::Github,
                std::slice::from_ref(&k),
                &headers(&[("x-hub-signature-256", &upper)]),
                b"Hello, World!",
                0,
                0
            )
            .is_ok()
        );
        assert_eq!(
            verify(
                Scheme::Github,
                &[k],
                &headers(&[("x-hub-signature-256", expected)]),
                b"Hello, World?",
                0,
                0
            ),
            Err(Rejection::BadSignature)
        );
    }

    // Stripe's scheme ("Verify signatures manually"): signed_payload = t +
    // "." + body, HMAC-SHA256 with the endpoint's whsec_ string as the key,
    // hex. The expected tag was produced once, independently of this code:
    //   printf '%s' '1700000000.{"id":"evt_test_webhook","object":"event"}' \
    //     | openssl dgst -sha256 -hmac 'whsec_courier_stripe_test_secret'
    const STRIPE_SECRET: &str = "whsec_courier_stripe_test_secret";
    const STRIPE_TS: i64 = 1700000000;
    const STRIPE_BODY: &[u8] = br#"{"id":"evt_test_webhook","object":"event"}"#;
    const STRIPE_TAG: &str = "dcdfe64570b497ee2dd3bf84527972310c516217dbc5dc7abada6e52191a8078";

    #[test]
    fn stripe_verifies_a_tag_computed_by_openssl() {
        let k = key(Scheme::Stripe, STRIPE_SECRET);
        assert_eq!(
            sign_stripe(std::slice::from_ref(&k), STRIPE_TS, STRIPE_BODY),
            format!("t={STRIPE_TS},v1={STRIPE_TAG}")
        );
        // Stripe's own shape: a v1 that does not match, the matching one,
        // and a v0 to ignore.
        let other = "6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39";
        let header = format!("t={STRIPE_TS},v1={other},v1={STRIPE_TAG},v0={other}");
        let got = verify(
            Scheme::Stripe,
            std::slice::from_ref(&k),
            &headers(&[("stripe-signature", &header)]),
            STRIPE_BODY,
            STRIPE_TS + 299,
            300,
        );
        assert_eq!(
            got,
            Ok(Verified {
                event_id: None,
                timestamp: Some(STRIPE_TS)
            })
        );
        for (now, want) in [
            (STRIPE_TS + 301, Err(Rejection::StaleTimestamp)),
            (STRIPE_TS - 301, Err(Rejection::StaleTimestamp)),
            (STRIPE_TS - 300, Ok(())),
        ] {
            let got = verify(
                Scheme::Stripe,
                std::slice::from_ref(&k),
                &headers(&[("stripe-signature", &header)]),
                STRIPE_BODY,
                now,
                300,
            );
            assert_eq!(got.map(|_| ()), want, "now = {now}");
        }
        let only_v0 = format!("t={STRIPE_TS},v0={STRIPE_TAG}");
        let no_t = format!("v1={STRIPE_TAG}");
        let two_t = format!("t={STRIPE_TS},t={STRIPE_TS},v1={STRIPE_TAG}");
        let short = format!("t={STRIPE_TS},v1=abcd");
        let not_hex = format!("t={STRIPE_TS},v1={}", "zz".repeat(32));
        for (value, want) in [
            (only_v0.as_str(), Rejection::MissingSignature),
            (no_t.as_str(), Rejection::Malformed),
            (two_t.as_str(), Rejection::Malformed),
            (short.as_str(), Rejection::Malformed),
            (not_hex.as_str(), Rejection::Malformed),
            ("t=-5,v1=00", Rejection::Malformed),
            ("garbage", Rejection::Malformed),
        ] {
            let got = verify(
                Scheme::Stripe,
                std::slice::from_ref(&k),
                &headers(&[("stripe-signature", value)]),
                STRIPE_BODY,
                STRIPE_TS,
                300,
            );
            assert_eq!(got, Err(want), "{value}");
        }
    }

    #[test]
    fn every_scheme_names_a_missing_signature() {
        let body = b"{}";
        for scheme in Scheme::ALL {
            let k = key(scheme, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
            assert_eq!(
                verify(scheme, &[k], &headers(&[]), body, 0, 300),
                Err(Rejection::MissingSignature),
                "{}",
                scheme.as_str()
            );
        }
    }

    #[test]
    fn standard_webhooks_refusals() {
        let k = key(Scheme::StandardWebhooks, SPEC_SECRET);
        let keys = std::slice::from_ref(&k);
        let check = |h: &dyn Fn(&str) -> Option<String>, body: &[u8], now: i64| {
            verify(Scheme::StandardWebhooks, keys, h, body, now, 300)
        };
        let now = SPEC_TS;
        // Signature present, its id or timestamp not.
        assert_eq!(
            check(
                &headers(&[
                    ("webhook-timestamp", "1614265330"),
                    ("webhook-signature", SPEC_SIGNATURE)
                ]),
                SPEC_BODY,
                now
            ),
            Err(Rejection::Malformed)
        );
        assert_eq!(
            check(
                &headers(&[
                    ("webhook-id", SPEC_ID),
                    ("webhook-signature", SPEC_SIGNATURE)
                ]),
                SPEC_BODY,
                now
            ),
            Err(Rejection::Malformed)
        );
        for bad_ts in [
            "",
            "soon",
            "-1614265330",
            "1614265330.5",
            "99999999999999999999",
        ] {
            assert_eq!(
                check(
                    &headers(&[
                        ("webhook-id", SPEC_ID),
                        ("webhook-timestamp", bad_ts),
                        ("webhook-signature", SPEC_SIGNATURE)
                    ]),
                    SPEC_BODY,
                    now
                ),
                Err(Rejection::Malformed),
                "{bad_ts:?}"
            );
        }
        for bad in [
            "v1",
            "v1,not*base64",
            "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ] {
            assert_eq!(
                check(&standard(SPEC_ID, SPEC_TS, bad), SPEC_BODY, now),
                Err(Rejection::Malformed),
                "{bad}"
            );
        }
        let long_id = "m".repeat(MAX_EVENT_ID_BYTES + 1);
        assert_eq!(
            check(&standard(&long_id, SPEC_TS, SPEC_SIGNATURE), SPEC_BODY, now),
            Err(Rejection::Malformed)
        );
        assert_eq!(
            check(&standard("msg\n1", SPEC_TS, SPEC_SIGNATURE), SPEC_BODY, now),
            Err(Rejection::Malformed)
        );
        // Only versions that are not ours.
        assert_eq!(
            check(
                &standard(
                    SPEC_ID,
                    SPEC_TS,
                    "v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
                ),
                SPEC_BODY,
                now
            ),
            Err(Rejection::MissingSignature)
        );
        // A wrong key, a changed body, id or timestamp.
        let wrong = key(
            Scheme::StandardWebhooks,
            "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldY",
        );
        assert_eq!(
            verify(
                Scheme::StandardWebhooks,
                &[wrong],
                &standard(SPEC_ID, SPEC_TS, SPEC_SIGNATURE),
                SPEC_BODY,
                now,
                300
            ),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            check(
                &standard(SPEC_ID, SPEC_TS, SPEC_SIGNATURE),
                b"{\"test\": 2432232315}",
                now
            ),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            check(
                &standard("msg_other", SPEC_TS, SPEC_SIGNATURE),
                SPEC_BODY,
                now
            ),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            check(
                &standard(SPEC_ID, SPEC_TS + 1, SPEC_SIGNATURE),
                SPEC_BODY,
                now
            ),
            Err(Rejection::BadSignature)
        );
        // No keys at all: nothing verifies.
        assert_eq!(
            verify(
                Scheme::StandardWebhooks,
                &[],
                &standard(SPEC_ID, SPEC_TS, SPEC_SIGNATURE),
                SPEC_BODY,
                now,
                300
            ),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn timestamps_are_judged_both_ways_and_only_once_signed() {
        let k = key(Scheme::StandardWebhooks, SPEC_SECRET);
        let keys = std::slice::from_ref(&k);
        let h = standard(SPEC_ID, SPEC_TS, SPEC_SIGNATURE);
        let at =
            |now: i64| verify(Scheme::StandardWebhooks, keys, &h, SPEC_BODY, now, 300).map(|_| ());
        assert_eq!(at(SPEC_TS + 300), Ok(()));
        assert_eq!(at(SPEC_TS - 300), Ok(()));
        assert_eq!(at(SPEC_TS + 301), Err(Rejection::StaleTimestamp), "too old");
        assert_eq!(
            at(SPEC_TS - 301),
            Err(Rejection::StaleTimestamp),
            "from the future"
        );
        // A forgery with an old timestamp is a forgery.
        let forged = standard(SPEC_ID, 1, SPEC_SIGNATURE);
        assert_eq!(
            verify(
                Scheme::StandardWebhooks,
                keys,
                &forged,
                SPEC_BODY,
                SPEC_TS,
                300
            ),
            Err(Rejection::BadSignature)
        );
        // GitHub has no timestamp: the tolerance does not apply.
        let g = key(Scheme::Github, "It's a Secret to Everybody");
        let sig = sign_github(&g, b"x");
        assert!(
            verify(
                Scheme::Github,
                &[g],
                &headers(&[("x-hub-signature-256", &sig)]),
                b"x",
                i64::MAX,
                0
            )
            .is_ok()
        );
    }

    #[test]
    fn any_key_matching_any_signature_verifies_a_rotation() {
        let old = key(Scheme::StandardWebhooks, SPEC_SECRET);
        let new = key(
            Scheme::StandardWebhooks,
            "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldY",
        );
        let third = key(
            Scheme::StandardWebhooks,
            "whsec_enl6enl6enl6enl6enl6enl6enl6",
        );
        let both = sign_standard(&[old.clone(), new.clone()], SPEC_ID, SPEC_TS, SPEC_BODY);
        assert_eq!(both.split(' ').count(), 2);
        assert!(both.starts_with(SPEC_SIGNATURE), "{both}");
        let h = standard(SPEC_ID, SPEC_TS, &both);
        for keys in [
            vec![old.clone()],
            vec![new.clone()],
            vec![third.clone(), new.clone()],
        ] {
            assert!(verify(Scheme::StandardWebhooks, &keys, &h, SPEC_BODY, SPEC_TS, 300).is_ok());
        }
        assert_eq!(
            verify(
                Scheme::StandardWebhooks,
                &[third],
                &h,
                SPEC_BODY,
                SPEC_TS,
                300
            ),
            Err(Rejection::BadSignature)
        );
        // Stripe: the same rule.
        let s_old = key(Scheme::Stripe, "whsec_old");
        let s_new = key(Scheme::Stripe, "whsec_new");
        let header = sign_stripe(&[s_old, s_new.clone()], STRIPE_TS, STRIPE_BODY);
        assert!(
            verify(
                Scheme::Stripe,
                &[s_new],
                &headers(&[("stripe-signature", &header)]),
                STRIPE_BODY,
                STRIPE_TS,
                300
            )
            .is_ok()
        );
    }

    #[test]
    fn hostile_headers_are_bounded() {
        let k = key(Scheme::StandardWebhooks, SPEC_SECRET);
        let keys = std::slice::from_ref(&k);
        // 65 signatures, the valid one last: refused without looking for it.
        let many = format!(
            "{} {SPEC_SIGNATURE}",
            vec!["v1,AAAA"; MAX_SIGNATURES].join(" ")
        );
        assert!(many.len() <= MAX_HEADER_BYTES);
        assert_eq!(
            verify(
                Scheme::StandardWebhooks,
                keys,
                &standard(SPEC_ID, SPEC_TS, &many),
                SPEC_BODY,
                SPEC_TS,
                300
            ),
            Err(Rejection::Malformed)
        );
        // 64 are read.
        let enough = format!(
            "{} {SPEC_SIGNATURE}",
            vec!["v1,AAAA"; MAX_SIGNATURES - 1].join(" ")
        );
        assert!(
            verify(
                Scheme::StandardWebhooks,
                keys,
                &standard(SPEC_ID, SPEC_TS, &enough),
                SPEC_BODY,
                SPEC_TS,
                300
            )
            .is_ok()
        );
        let huge = format!("{SPEC_SIGNATURE}{}", " ".repeat(MAX_HEADER_BYTES));
        assert_eq!(
            verify(
                Scheme::StandardWebhooks,
                keys,
                &standard(SPEC_ID, SPEC_TS, &huge),
                SPEC_BODY,
                SPEC_TS,
                300
            ),
            Err(Rejection::Malformed)
        );
        let s = key(Scheme::Stripe, STRIPE_SECRET);
        let stripe_many = format!("t={STRIPE_TS}{}", ",v0=x".repeat(MAX_SIGNATURES + 1));
        assert_eq!(
            verify(
                Scheme::Stripe,
                &[s],
                &headers(&[("stripe-signature", &stripe_many)]),
                STRIPE_BODY,
                STRIPE_TS,
                300
            ),
            Err(Rejection::Malformed)
        );
        let g = key(Scheme::Github, "It's a Secret to Everybody");
        for bad in [
            "sha256=",
            "sha1=757107ea",
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        ] {
            assert_eq!(
                verify(
                    Scheme::Github,
                    std::slice::from_ref(&g),
                    &headers(&[("x-hub-signature-256", bad)]),
                    b"Hello, World!",
                    0,
                    0
                ),
                Err(Rejection::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn secrets_parse_per_scheme_and_never_show() {
        let secret = "whsec_c2VjcmV0LXZhbHVlLW9mLXRoaXMta2V5";
        let k = key(Scheme::StandardWebhooks, secret);
        assert_eq!(format!("{k:?}"), "SigningKey(***)");
        assert_eq!(k.0, b"secret-value-of-this-key");
        assert_eq!(key(Scheme::Stripe, secret).0, secret.as_bytes());
        assert_eq!(key(Scheme::Github, "plain").0, b"plain");
        for (scheme, bad) in [
            (Scheme::StandardWebhooks, "whsec_not base64!"),
            (Scheme::StandardWebhooks, "whsec_"),
            (Scheme::StandardWebhooks, ""),
            (Scheme::Stripe, ""),
            (Scheme::Github, ""),
        ] {
            let e = SigningKey::parse(scheme, bad).expect_err("refused");
            assert!(bad.is_empty() || !e.contains(bad), "{e}");
            assert!(!e.contains("not base64"), "{e}");
        }
    }

    #[test]
    fn names_round_trip() {
        for scheme in Scheme::ALL {
            assert_eq!(scheme.as_str().parse::<Scheme>(), Ok(scheme));
        }
        let e = "svix".parse::<Scheme>().expect_err("unknown");
        for name in ["standard-webhooks", "stripe", "github"] {
            assert!(e.contains(name), "{e}");
        }
        let words: Vec<_> = Rejection::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            words,
            [
                "missing_signature",
                "malformed",
                "bad_signature",
                "stale_timestamp"
            ]
        );
    }

    proptest! {
        #[test]
        fn signed_messages_verify_and_any_flipped_byte_does_not(
            body in proptest::collection::vec(any::<u8>(), 1..512),
            id in "[!-~]{1,64}",
            ts in 0i64..4_000_000_000,
            key_bytes in proptest::collection::vec(any::<u8>(), 1..64),
            flip in any::<proptest::sample::Index>(),
            mask in 1u8..=255,
        ) {
            let secret = format!("whsec_{}", BASE64.encode(&key_bytes));
            let k = key(Scheme::StandardWebhooks, &secret);
            let keys = std::slice::from_ref(&k);
            let signature = sign_standard(keys, &id, ts, &body);
            let h = standard(&id, ts, &signature);
            let verified = verify(Scheme::StandardWebhooks, keys, &h, &body, ts, 300);
            prop_assert_eq!(verified, Ok(Verified { event_id: Some(id.clone()), timestamp: Some(ts) }));
            let mut flipped = body.clone();
            flipped[flip.index(body.len())] ^= mask;
            prop_assert_eq!(
                verify(Scheme::StandardWebhooks, keys, &h, &flipped, ts, 300),
                Err(Rejection::BadSignature)
            );

            let s = key(Scheme::Stripe, &secret);
            let header = sign_stripe(std::slice::from_ref(&s), ts, &body);
            let sh = headers(&[("stripe-signature", &header)]);
            prop_assert!(verify(Scheme::Stripe, std::slice::from_ref(&s), &sh, &body, ts, 300).is_ok());
            prop_assert_eq!(
                verify(Scheme::Stripe, std::slice::from_ref(&s), &sh, &flipped, ts, 300),
                Err(Rejection::BadSignature)
            );

            let g = key(Scheme::Github, &secret);
            let gh = headers(&[("x-hub-signature-256", &sign_github(&g, &body))]);
            prop_assert!(verify(Scheme::Github, std::slice::from_ref(&g), &gh, &body, 0, 0).is_ok());
            prop_assert_eq!(
                verify(Scheme::Github, std::slice::from_ref(&g), &gh, &flipped, 0, 0),
                Err(Rejection::BadSignature)
            );
        }
    }
}
