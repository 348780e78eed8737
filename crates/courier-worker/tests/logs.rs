//! The worker's logs, captured through the production log setup at the
//! most verbose level every library offers: the provider's token and job
//! payloads never appear, and every line about a job names it.
//!
//! Its own test binary: the log subscriber is process-wide.

use courier_core::config::LogFormat;
use courier_testkit::{PROVIDER, TestEnv};
use serde_json::{Value, json};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing_subscriber::fmt::MakeWriter;

const WAIT: Duration = Duration::from_secs(30);

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[tokio::test]
async fn the_provider_token_and_payloads_never_reach_the_logs() {
    let logs = Captured::default();
    // Exactly "trace", whatever RUST_LOG says.
    courier_telemetry::logging::install(
        LogFormat::Json,
        tracing_subscriber::EnvFilter::new("trace"),
        logs.clone(),
        None,
    );

    let token = format!("sk_live_{}", uuid::Uuid::now_v7().simple());
    let token_file =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{token}.token"));
    std::fs::write(&token_file, format!("{token}\n")).expect("write the token file");
    let auth = format!(
        "[providers.{PROVIDER}.auth]\nscheme = \"bearer\"\ntoken_file = {:?}\n",
        token_file.display().to_string()
    );
    let env = TestEnv::with_mix(Default::default(), &auth).await;
    let worker = env.start_worker().await;

    let marker = format!("pan_{}", uuid::Uuid::now_v7().simple());
    let mut jobs = Vec::new();
    for script in [
        None,
        Some(json!({"fail_first": 1})),
        Some(json!({"status": 400})),
    ] {
        let mut job = env.job(script);
        job.payload["card"] = json!(marker);
        env.publish(&job).await;
        jobs.push(job);
    }
    let ids: Vec<_> = jobs.iter().map(|j| j.id).collect();
    env.wait_terminal(&ids, WAIT).await;
    worker.shutdown();
    worker.wait().await;
    let _ = std::fs::remove_file(&token_file);

    // The token was in play: the provider saw it on every call.
    let calls = env.mock.calls();
    assert_eq!(calls.len(), 4);
    let bearer = format!("Bearer {token}");
    assert!(
        calls
            .iter()
            .all(|c| c.authorization.as_deref() == Some(bearer.as_str()))
    );

    let text = logs.text();
    assert!(
        text.lines().count() > 50,
        "trace logging captured too little:\n{text}"
    );
    assert!(
        !text.contains(&token),
        "the provider token leaked into the logs"
    );
    assert!(
        !text.contains(&marker),
        "a payload value leaked into the logs"
    );

    // Every line is JSON; every line inside a job's span names the job.
    let mut attempt_lines = 0;
    for line in text.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        let Some(span) = v.get("span").filter(|s| s["name"] == "job") else {
            continue;
        };
        for field in ["job_id", "provider", "operation", "attempt"] {
            assert!(span.get(field).is_some(), "{field} missing: {line}");
        }
        if v["message"] == "attempt finished" || v["message"] == "attempt succeeded" {
            attempt_lines += 1;
            assert!(ids.iter().any(|id| span["job_id"] == id.to_string()));
            assert_eq!(span["provider"], PROVIDER);
            assert_eq!(span["trace_id"].as_str().map(str::len), Some(32));
        }
    }
    assert_eq!(attempt_lines, 4, "one line per attempt");
}
