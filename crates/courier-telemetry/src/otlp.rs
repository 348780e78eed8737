//! Optional export of the worker's spans to an OpenTelemetry collector over
//! OTLP/HTTP (protobuf), and the link between a job's `traceparent` and
//! those spans.
//!
//! Owns the exporter (off unless `telemetry.otlp_endpoint` is set: no
//! provider, no thread, no cost), its HTTP client (our reqwest, handed to the
//! runtime: the batch processor exports from a thread of its own), and
//! [`continue_trace`], which makes a job's span a child of the trace its
//! publisher started. It must never export anything but spans of Courier's
//! own code (`courier*` targets): the exporter's HTTP client would otherwise
//! trace its own exports.

use courier_core::TraceContext;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Longest one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[error("telemetry.otlp_endpoint: cannot build the OTLP exporter: {0}")]
pub struct OtlpError(String);

/// A running exporter; [`Exporter::shutdown`] flushes what is buffered.
#[derive(Debug)]
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// An exporter to `endpoint` (the collector's base URL, e.g.
    /// `http://127.0.0.1:4318`; `/v1/traces` is appended), sending from
    /// the tokio runtime `runtime`. reqwest needs a rustls crypto provider
    /// installed first (`courier_provider::install_crypto`).
    pub fn start(
        endpoint: &str,
        service: &str,
        runtime: tokio::runtime::Handle,
    ) -> Result<Exporter, OtlpError> {
        let client = RuntimeClient {
            http: reqwest::Client::builder()
                .timeout(EXPORT_TIMEOUT)
                // Only the configured endpoint, never an ambient HTTP(S)_PROXY.
                .no_proxy()
                .build()
                .map_err(|e| OtlpError(e.to_string()))?,
            runtime,
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .with_timeout(EXPORT_TIMEOUT)
            .with_http_client(client)
            .build()
            .map_err(|e| OtlpError(e.to_string()))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(service.to_owned())
                    .build(),
            )
            .build();
        Ok(Exporter { provider })
    }

    /// The tracing layer that turns spans into exported ones.
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        use tracing_subscriber::Layer as _;
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("courier"))
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                meta.target().starts_with("courier")
            }))
    }

    /// Exports what is buffered and stops. Blocks: call it from a thread
    /// that is not one of the runtime's workers.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("OTLP exporter shutdown: {e}");
        }
    }
}

/// Makes `span` (not yet entered) a child of the job's trace, and returns
/// the context the provider request should carry: the span's own id when
/// spans are exported, else `fallback`'s. Without an exporter this costs a
/// lookup that finds no layer.
pub fn continue_trace(
    span: &tracing::Span,
    parent: Option<TraceContext>,
    fallback: TraceContext,
) -> TraceContext {
    // A job that came without a parent still belongs to its own trace.
    let remote = parent.unwrap_or(fallback);
    let context = SpanContext::new(
        TraceId::from(remote.trace_id_bits()),
        SpanId::from(remote.span_id_bits()),
        if remote.sampled() {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        },
        true,
        TraceState::default(),
    );
    if span
        .set_parent(opentelemetry::Context::new().with_remote_span_context(context))
        .is_err()
    {
        return fallback;
    }
    let own = span.context().span().span_context().clone();
    if !own.is_valid() {
        return fallback;
    }
    TraceContext::from_bits(
        u128::from_be_bytes(own.trace_id().to_bytes()),
        u64::from_be_bytes(own.span_id().to_bytes()),
        own.is_sampled(),
    )
}

/// Our reqwest client, run on the worker's runtime: the batch processor
/// calls from its own thread, where no runtime is.
#[derive(Debug, Clone)]
struct RuntimeClient {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let http = self.http.clone();
        self.runtime
            .spawn(async move {
                let response = http.execute(request).await?;
                let status = response.status();
                let headers = response.headers().clone();
                let body = response.bytes().await?;
                let mut answer = Response::builder().status(status).body(body)?;
                *answer.headers_mut() = headers;
                Ok::<_, HttpError>(answer)
            })
            .await?
    }
}
