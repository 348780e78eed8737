//! The dashboard and the alert rules in deploy/ use the metric names the
//! worker exports, and the dashboard shows every family. (promtool checks
//! the rules' syntax and behaviour in CI; this checks the names.)

use courier_core::Config;
use courier_telemetry::Metrics;
use std::collections::BTreeSet;

fn deploy_file(path: &str) -> String {
    let full = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/").to_owned() + path;
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {full}: {e}"))
}

/// Every `courier_…` identifier in `text`.
fn referenced(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("courier_") {
        let start = i + at;
        let preceded_by_ident =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if !preceded_by_ident {
            names.insert(text[start..end].to_owned());
        }
        i = end;
    }
    names
}

/// The families the worker exports (name, type), as `# TYPE` lines say.
fn families() -> Vec<(String, String)> {
    let toml = "[providers.pay]\nbase_url = \"http://127.0.0.1:1\"\n[providers.pay.operations.charge]\nmethod = \"POST\"\npath = \"/c\"\n";
    let config = Config::from_toml(toml, "t.toml", &|_| None).expect("valid");
    let metrics = Metrics::new(&config.providers, "test");
    // What a running worker adds: its I/O operations and the sampled gauges.
    metrics.io_operation("record_outcomes");
    metrics.queue_depth("work", Some("pay"), 0);
    metrics.dead_letters_pending(Some("pay"), 0);
    metrics.operator_settled(0, 0);
    // What `courier ingest` adds for a source.
    metrics.ingest.source("hooks");
    metrics.ingest.unavailable("hooks", "broker");
    metrics
        .ingest
        .answered("hooks", false, std::time::Duration::ZERO);
    let text = metrics.encode();
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_owned(), t.to_owned()))
        .collect()
}

/// The sample names a family of `kind` appears under in a query.
fn sample_names(name: &str, kind: &str) -> Vec<String> {
    match kind {
        "counter" => vec![format!("{name}_total")],
        "histogram" => ["_bucket", "_sum", "_count"]
            .iter()
            .map(|s| format!("{name}{s}"))
            .collect(),
        "info" => vec![format!("{name}_info")],
        _ => vec![name.to_owned()],
    }
}

#[test]
fn the_worker_exports_every_documented_family() {
    let names: BTreeSet<String> = families().into_iter().map(|(n, _)| n).collect();
    for expected in [
        "courier_jobs_received",
        "courier_jobs_completed",
        "courier_job_latency_seconds",
        "courier_jobs_in_flight",
        "courier_retries_scheduled",
        "courier_dead_letters_created",
        "courier_provider_requests",
        "courier_provider_request_duration_seconds",
        "courier_provider_throttles",
        "courier_provider_retry_after_seconds",
        "courier_queue_messages",
        "courier_dead_letters_pending",
        "courier_operator_letters",
        "courier_outcome_batch_size",
        "courier_outcome_commit_duration_seconds",
        "courier_io_failures",
        "courier_broker_reconnects",
        "courier_database_connections_opened",
        "courier_build",
        "courier_ingest_events_received",
        "courier_ingest_events_verified",
        "courier_ingest_events_rejected",
        "courier_ingest_events_duplicate",
        "courier_ingest_events_enqueued",
        "courier_ingest_unavailable",
        "courier_ingest_answer_seconds",
    ] {
        assert!(
            names.contains(expected),
            "{expected} not exported: {names:?}"
        );
    }
}

#[test]
fn dashboard_and_alerts_use_only_exported_names_and_the_dashboard_shows_them_all() {
    let families = families();
    let exported: BTreeSet<String> = families
        .iter()
        .flat_map(|(n, k)| sample_names(n, k))
        .collect();
    let dashboard = referenced(&deploy_file("grafana/courier.json"));
    let alerts = referenced(&deploy_file("prometheus/alerts.yml"));
    for (file, names) in [("dashboard", &dashboard), ("alerts", &alerts)] {
        assert!(!names.is_empty(), "{file} references no metric");
        let unknown: Vec<_> = names.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses names the worker does not export: {unknown:?}"
        );
    }
    for (name, kind) in &families {
        assert!(
            sample_names(name, kind)
                .iter()
                .any(|s| dashboard.contains(s)),
            "the dashboard has no panel for {name}"
        );
    }
}
