//! Log setup: JSON lines for production, pretty lines for a terminal.
//!
//! Owns the subscriber every binary installs: the format, the filter
//! (`RUST_LOG` wins over the default) and the redacting writer. Job lines
//! carry the `job` span's fields (job id, provider, operation, attempt,
//! trace id). It must never log payloads or headers itself; what others log
//! is scrubbed of registered secrets on the way out.

use crate::redact::Redacting;
use courier_core::config::LogFormat;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Installs the global subscriber writing to stderr. Does nothing if one is
/// already installed (tests may install their own first).
pub fn init(format: LogFormat, default_filter: &str) {
    init_with_writer(format, default_filter, std::io::stderr);
}

/// [`init`] with another writer (tests capture lines this way).
pub fn init_with_writer<W>(format: LogFormat, default_filter: &str, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    install(format, filter, writer);
}

/// Installs the subscriber with exactly `filter` (`RUST_LOG` is not read).
pub fn install<W>(format: LogFormat, filter: EnvFilter, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Redacting(writer));
    let installed = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.with_target(false).try_init(),
    };
    if installed.is_err() {
        tracing::debug!("a log subscriber was already installed");
    }
}
