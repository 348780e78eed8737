//! Courier's HTTP edge: calls to providers, and the built-in mock provider.
//!
//! Only this crate knows reqwest and HTTP servers. [`ProviderClient`] turns a
//! validated job and its operation into one request (base URL + rendered
//! path, `Idempotency-Key`, auth from a resolved secret, `traceparent`, a
//! Standard Webhooks signature when the provider has `signing`) and
//! reports what happened as a [`courier_core::CallResult`]; it never decides
//! whether to retry. Secrets are resolved once, at construction, marked
//! sensitive, and never logged or recorded.

pub mod chaos;
pub mod client;
pub mod mock;

pub use client::{CallReport, ProviderClient, ProviderError};
pub use mock::{Enforced, FailureMix, MockProvider};

/// Installs the process-wide rustls crypto provider (ring, the one TLS stack
/// shared with lapin and sqlx). Idempotent.
pub fn install_crypto() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
