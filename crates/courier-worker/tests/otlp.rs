//! Span export over OTLP/HTTP to a collector on loopback: a job published
//! with a `traceparent` is exported as a span of that trace, a child of the
//! publisher's span, and the provider request continues from that span.
//!
//! Its own test binary: the log subscriber is process-wide.

use axum::body::Bytes;
use courier_core::TraceContext;
use courier_core::config::LogFormat;
use courier_testkit::{PROVIDER, TestEnv};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A collector: keeps every export request's body.
async fn collector() -> (String, Arc<Mutex<Vec<Bytes>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let kept = kept.clone();
            async move {
                kept.lock().unwrap_or_else(|e| e.into_inner()).push(body);
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the collector");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, bodies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_span_is_exported_in_the_publishers_trace_and_the_call_continues_it() {
    let (url, bodies) = collector().await;
    courier_provider::install_crypto();
    let exporter = courier_telemetry::otlp::Exporter::start(
        &url,
        "courier-test",
        tokio::runtime::Handle::current(),
    )
    .expect("start the exporter");
    courier_telemetry::logging::install(
        LogFormat::Json,
        tracing_subscriber::EnvFilter::new("info"),
        std::io::sink,
        Some(&exporter),
    );

    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let job = env.job(None);
    env.publish_raw(PROVIDER, &job.to_body(), Some(PARENT))
        .await;
    env.wait_terminal(&[job.id], WAIT).await;
    worker.shutdown();
    worker.wait().await;
    tokio::task::spawn_blocking(move || exporter.shutdown())
        .await
        .expect("flush the exporter");

    let spans: Vec<_> = bodies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|b| ExportTraceServiceRequest::decode(b.clone()).expect("an OTLP protobuf body"))
        .flat_map(|r| r.resource_spans)
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect();
    let parent = TraceContext::parse(PARENT).expect("valid");
    let job_span = spans
        .iter()
        .find(|s| s.name == "job")
        .unwrap_or_else(|| panic!("no job span among {} exported", spans.len()));
    assert_eq!(job_span.trace_id, parent.trace_id_bits().to_be_bytes());
    assert_eq!(job_span.parent_span_id, parent.span_id_bits().to_be_bytes());

    // The provider saw our span as its parent.
    let call = &env.mock.calls()[0];
    let sent =
        TraceContext::parse(call.traceparent.as_deref().expect("traceparent sent")).expect("valid");
    assert_eq!(sent.trace_id(), parent.trace_id());
    assert_eq!(
        sent.span_id_bits().to_be_bytes().as_slice(),
        job_span.span_id
    );
}
