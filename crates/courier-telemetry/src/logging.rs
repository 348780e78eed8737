//! Log setup: JSON lines for production, pretty lines for a terminal.
//!
//! Owns the subscriber every binary installs: the format, the filter
//! (`RUST_LOG` wins over the default) and the redacting writer. Job lines
//! carry the `job` span's fields (job id, provider, operation, attempt,
//! trace id). It must never log payloads or headers itself; what others log
//! is scrubbed of registered secrets on the way out.

use crate::otlp::Exporter;
use crate::redact::Redacting;
use courier_core::config::LogFormat;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Installs the global subscriber writing to stderr, exporting spans to
/// `exporter` when there is one. Does nothing if a subscriber is already
/// installed (tests may install their own first).
pub fn init(format: LogFormat, default_filter: &str, exporter: Option<&Exporter>) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    install(format, filter, std::io::stderr, exporter);
}

/// Installs the subscriber with exactly `filter` (`RUST_LOG` is not read)
/// and another writer (tests capture lines this way).
pub fn install<W>(format: LogFormat, filter: EnvFilter, writer: W, exporter: Option<&Exporter>)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let lines = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(Redacting(writer))
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_writer(Redacting(writer))
            .boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(lines)
        .with(exporter.map(Exporter::layer))
        .try_init();
    if installed.is_err() {
        tracing::debug!("a log subscriber was already installed");
    }
}
