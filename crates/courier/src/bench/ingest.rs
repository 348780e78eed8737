//! The `ingest` scenario: signed webhooks sent to a real `courier ingest`
//! process by many keep-alive HTTP/1.1 clients, then the jobs they became
//! drained by one worker, in the same namespace and the same run.
//!
//! Owns the load (events signed the Standard Webhooks way, ahead of the
//! clock), the time to each 2xx, the receiver's cost, and the checks that
//! nothing was lost or made twice: the `events` table and the work queue
//! each hold exactly one entry per event, and a redelivery adds nothing. It
//! must never measure an answer that was not a 2xx as a success.

use super::harness::{self, Bench, Latency, RunResult, cpu_seconds_of_pid, memory_mb_of_pid};
use super::{RETRY, TERMINAL_TIMEOUT};
use anyhow::{Context as _, bail};
use chrono::Utc;
use courier_core::webhook::{self, Scheme, SigningKey};
use courier_provider::FailureMix;
use courier_store::EventFilter;
use serde::Serialize;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The provider the events' jobs go to.
const PROVIDER: &str = "mockpay";
/// The source the events are sent as (`POST /hooks/payments`).
const SOURCE: &str = "payments";
/// The operation the events become: a fixed path, no payload field in it.
const EVENT_OPERATION: &str = "event";
/// A Standard Webhooks secret (the spec's own example): the receiver it
/// guards listens on loopback for one run.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The receiver's tolerance for a signed timestamp, in seconds (its
/// default).
const TOLERANCE_SECS: u64 = 300;
/// Signatures older than this are made again at send time: a run that
/// would outlast the tolerance signs the rest lazily.
const RESIGN_AFTER: Duration = Duration::from_secs(TOLERANCE_SECS - 60);
/// Events sent again in the duplicate pass.
const REDELIVERED: usize = 1_000;
/// PostgreSQL's backends report their statistics after at most this long
/// idle (PGSTAT_IDLE_INTERVAL is 10 s).
const STATS_SETTLE: Duration = Duration::from_secs(12);
/// Non-2xx answers kept verbatim in the report.
const ERROR_SAMPLES: usize = 5;

/// One measured ingest run at one client concurrency.
#[derive(Debug, Clone, Serialize)]
pub struct IngestRun {
    pub label: String,
    pub namespace: String,
    pub events: u64,
    pub concurrency: usize,
    /// The receiver's `database.max_connections` (`None`: its default):
    /// events being recorded at once.
    pub database_connections: Option<u32>,
    /// Mean body size sent.
    pub body_bytes: f64,
    /// Seconds to sign every event before the clock started.
    pub presign_seconds: f64,
    /// Events signed at send time (the run outlasted [`RESIGN_AFTER`]).
    pub signed_lazily: u64,
    /// First request sent to last answer read.
    pub wall_seconds: f64,
    /// Events verified, recorded, published with a confirm and answered 2xx,
    /// per second of wall time.
    pub events_per_second: f64,
    /// Request sent to its 2xx answer read, in ms.
    pub latency_ms: Latency,
    /// Answers that were not 2xx, and requests that got no answer.
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// 2xx answers saying `"duplicate": true` in the first pass (none due).
    pub unexpected_duplicates: u64,
    pub ingest_cpu_seconds_per_1000_events: f64,
    pub ingest_peak_rss_mb: f64,
    /// TCP data segments between the receiver and the services per event:
    /// its round trips (`None`: `ss` could not tell).
    pub wire: Option<Wire>,
    /// Busy CPU of the whole machine while sending, per 1,000 events: the
    /// receiver, the broker, PostgreSQL and the bench's own clients.
    pub machine_cpu_seconds_per_1000_events: f64,
    /// The bench process's share of that (clients, signing at send time).
    pub client_cpu_seconds_per_1000_events: f64,
    pub broker_cpu_seconds_per_1000_events: f64,
    pub database_cpu_seconds_per_1000_events: f64,
    /// PostgreSQL's counters over the first pass, per event.
    pub database: Option<DatabaseCounts>,
    /// Rows in the namespace's `events` table after the first pass.
    pub events_stored: i64,
    /// Messages in the provider's work queue after the first pass.
    pub queue_depth: u32,
    pub redelivery: Redelivery,
    /// The event jobs drained by one worker after the pass.
    pub drain: RunResult,
    /// Checks that failed: the bench fails once the report is out.
    pub failures: Vec<String>,
}

/// PostgreSQL's cumulative statistics over a pass, per event: what each
/// event cost the database in transactions and WAL.
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseCounts {
    pub commits_per_event: f64,
    pub rollbacks_per_event: f64,
    pub wal_records_per_event: f64,
    pub wal_bytes_per_event: f64,
    /// WAL flushes to disk (fdatasync) per event: below 1 when commits are
    /// grouped.
    pub wal_syncs_per_event: f64,
}

/// The second pass: the first events sent again.
#[derive(Debug, Clone, Serialize)]
pub struct Redelivery {
    pub sent: u64,
    /// 2xx answers with `"duplicate": true`.
    pub duplicates: u64,
    pub errors: u64,
    /// Rows and messages after it, minus those before: 0 due.
    pub events_added: i64,
    pub messages_added: i64,
    /// TCP data segments per redelivery, as [`IngestRun::wire`].
    pub wire: Option<Wire>,
}

/// TCP data segments between the receiver and PostgreSQL and RabbitMQ, per
/// event: with one request in flight per connection, a segment each way is
/// a round trip (PostgreSQL); many publishes on one connection may share
/// one (RabbitMQ).
#[derive(Debug, Clone, Serialize)]
pub struct Wire {
    pub database_out: f64,
    pub database_in: f64,
    pub broker_out: f64,
    pub broker_in: f64,
}

/// A process's connections (local, peer address) with their data segments
/// (out, in) so far.
type Sockets = std::collections::HashMap<(String, String), (u64, u64)>;

/// The ports PostgreSQL and RabbitMQ listen on, from the bench's URLs.
struct ServicePorts {
    database: u16,
    broker: Vec<u16>,
}

impl ServicePorts {
    fn of(bench: &Bench) -> ServicePorts {
        let database = url_port(&bench.config.database.url, 5432);
        let broker = bench
            .config
            .broker
            .urls
            .iter()
            .map(|url| {
                url_port(
                    url,
                    if url.starts_with("amqps:") {
                        5671
                    } else {
                        5672
                    },
                )
            })
            .collect();
        ServicePorts { database, broker }
    }
}

impl Wire {
    /// What the connections sent and received from `before` to `after`, per
    /// event; a connection opened in between counts from zero.
    fn between(
        before: Option<&Sockets>,
        after: Option<&Sockets>,
        ports: &ServicePorts,
        events: u64,
    ) -> Option<Wire> {
        let (before, after) = (before?, after?);
        let n = events.max(1) as f64;
        let mut wire = Wire {
            database_out: 0.0,
            database_in: 0.0,
            broker_out: 0.0,
            broker_in: 0.0,
        };
        for (key, (out, into)) in after {
            let (out_before, in_before) = before.get(key).copied().unwrap_or((0, 0));
            let out = out.saturating_sub(out_before) as f64 / n;
            let into = into.saturating_sub(in_before) as f64 / n;
            let port: Option<u16> = key.1.rsplit_once(':').and_then(|(_, p)| p.parse().ok());
            match port {
                Some(p) if p == ports.database => {
                    wire.database_out += out;
                    wire.database_in += into;
                }
                Some(p) if ports.broker.contains(&p) => {
                    wire.broker_out += out;
                    wire.broker_in += into;
                }
                _ => {}
            }
        }
        Some(wire)
    }
}

/// Runs the scenario once for each of `concurrencies`, each in a fresh
/// namespace.
pub async fn run(
    events: u64,
    concurrencies: &[usize],
    body_bytes: usize,
    database_connections: Option<u32>,
) -> anyhow::Result<Vec<IngestRun>> {
    courier_provider::install_crypto();
    let mut runs = Vec::new();
    for &concurrency in concurrencies {
        let mut bench = Bench::new("ingest", vec![PROVIDER.into()], FailureMix::default()).await?;
        // The workers' config gets the operation the events become.
        bench.provider_tables = format!(
            "[providers.{{provider}}.operations.{EVENT_OPERATION}]\nmethod = \"POST\"\npath = \"/v1/events\"\n"
        );
        let result = run_in(
            &bench,
            events,
            concurrency.max(1),
            body_bytes,
            database_connections,
        )
        .await;
        bench.cleanup().await?;
        runs.push(result?);
    }
    Ok(runs)
}

/// One event, signed or to be signed.
struct Event {
    id: String,
    body: Vec<u8>,
    /// `webhook-timestamp` and `webhook-signature` made before the clock.
    signed: (i64, String),
}

/// What a pass of requests got.
#[derive(Default)]
struct Sent {
    /// Time to each 2xx, in seconds.
    latencies: Vec<f64>,
    errors: u64,
    error_samples: Vec<String>,
    duplicates: u64,
    signed_lazily: u64,
}

async fn run_in(
    bench: &Bench,
    events: u64,
    concurrency: usize,
    body_bytes: usize,
    database_connections: Option<u32>,
) -> anyhow::Result<IngestRun> {
    let label = match database_connections {
        None => format!("{concurrency} clients"),
        Some(n) => format!("{concurrency} clients, {n} db"),
    };
    let dir = std::env::temp_dir();
    let secret = TempFile::write(
        dir.join(format!("{}-ingest.secret", bench.namespace)),
        SECRET,
    )?;
    let free_port = || -> anyhow::Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    };
    let (port, telemetry_port) = (free_port()?, free_port()?);
    let config = TempFile::write(
        dir.join(format!("{}-ingest.toml", bench.namespace)),
        &ingest_toml(bench, port, telemetry_port, database_connections, &secret.0),
    )?;
    let receiver =
        IngestProcess::start(&config.0, &dir, &bench.namespace, [telemetry_port, port]).await?;

    eprintln!("ingest ({label}): signing {events} events …");
    let key = SigningKey::parse(Scheme::StandardWebhooks, SECRET)
        .map_err(|e| anyhow::anyhow!("the bench's secret: {e}"))?;
    let clock = Instant::now();
    let run_tag = format!("{:x}", Utc::now().timestamp_millis());
    let now = Utc::now().timestamp();
    // The signatures' age counts from their timestamp.
    let signed_at = Instant::now();
    let all: Vec<Event> = (0..events as usize)
        .map(|i| {
            let id = format!("msg_{run_tag}_{i:08}");
            let body = event_body(i, body_bytes);
            let signature = webhook::sign_standard(std::slice::from_ref(&key), &id, now, &body);
            Event {
                id,
                body,
                signed: (now, signature),
            }
        })
        .collect();
    let presign_seconds = clock.elapsed().as_secs_f64();
    let all = Arc::new(all);
    let mean_body = all.iter().map(|e| e.body.len()).sum::<usize>() as f64 / events.max(1) as f64;

    let settled = harness::wait_for_quiet_host(Duration::from_secs(60)).await?;
    eprintln!(
        "ingest ({label}): host quiet after {:.0} s; sending {events} events ({mean_body:.0} B) …",
        settled.as_secs_f64()
    );
    let database_before = database_counters(bench).await;
    let machine_before = harness::machine_cpu_seconds()?;
    let client_before = own_cpu_seconds()?;
    let broker_before = harness::cpu_seconds_of("beam.smp");
    let postgres_before = harness::cpu_seconds_of("postgres");
    let receiver_before = receiver.cpu_seconds()?;
    let ports = ServicePorts::of(bench);
    let wire_before = receiver.segments();
    let from = Utc::now();
    let clock = Instant::now();
    let url = format!("http://127.0.0.1:{port}/hooks/{SOURCE}");
    let sent = send(&url, &all, all.len(), concurrency, &key, signed_at).await;
    let wall = clock.elapsed().as_secs_f64();
    let to = Utc::now();
    let per_1000 = |seconds: f64| seconds / events.max(1) as f64 * 1000.0;
    let receiver_cpu = receiver.cpu_seconds()? - receiver_before;
    let wire = Wire::between(
        wire_before.as_ref(),
        receiver.segments().as_ref(),
        &ports,
        events,
    );
    let machine = harness::machine_cpu_seconds()? - machine_before;
    let client = own_cpu_seconds()? - client_before;
    let broker = harness::cpu_seconds_of("beam.smp") - broker_before;
    let postgres = harness::cpu_seconds_of("postgres") - postgres_before;
    let peak_rss = receiver.peak_rss_mb()?;
    eprintln!(
        "ingest ({label}): {} answered 2xx in {wall:.1} s ({:.0}/s), {} errors; checking …",
        sent.latencies.len(),
        sent.latencies.len() as f64 / wall,
        sent.errors
    );

    let mut failures = Vec::new();
    if sent.errors > 0 {
        failures.push(format!(
            "{label}: {} of {events} requests got no 2xx (first: {})",
            sent.errors,
            sent.error_samples.first().map_or("", String::as_str)
        ));
    }
    if sent.duplicates > 0 {
        failures.push(format!(
            "{label}: {} first deliveries were answered as duplicates",
            sent.duplicates
        ));
    }
    // The counters of the receiver's sessions reach the view once they
    // have been idle a while.
    let database = match database_before {
        Some(before) => {
            tokio::time::sleep(STATS_SETTLE).await;
            database_counters(bench)
                .await
                .map(|after| after.per_event(&before, events))
        }
        None => None,
    };
    let queue = bench.topology.work_queue(PROVIDER);
    let events_stored = bench.store.count_events(&EventFilter::default()).await?;
    let queue_depth = courier_amqp::topology::message_count(&bench.channel, &queue).await?;
    if u64::try_from(events_stored).ok() != Some(events) {
        failures.push(format!(
            "{label}: the events table holds {events_stored} rows for {events} events"
        ));
    }
    if u64::from(queue_depth) != events {
        failures.push(format!(
            "{label}: the work queue holds {queue_depth} messages for {events} events"
        ));
    }

    let again = REDELIVERED.min(all.len());
    eprintln!("ingest ({label}): sending {again} of the events again …");
    let wire_before = receiver.segments();
    let resent = send(&url, &all, again, concurrency, &key, signed_at).await;
    let resent_wire = Wire::between(
        wire_before.as_ref(),
        receiver.segments().as_ref(),
        &ports,
        again as u64,
    );
    let redelivery = Redelivery {
        sent: again as u64,
        duplicates: resent.duplicates,
        errors: resent.errors,
        events_added: bench.store.count_events(&EventFilter::default()).await? - events_stored,
        messages_added: i64::from(
            courier_amqp::topology::message_count(&bench.channel, &queue).await?,
        ) - i64::from(queue_depth),
        wire: resent_wire,
    };
    if redelivery.duplicates != again as u64
        || redelivery.errors > 0
        || redelivery.events_added != 0
        || redelivery.messages_added != 0
    {
        failures.push(format!(
            "{label}: {again} redeliveries gave {} duplicates and {} errors, added {} events and {} messages",
            redelivery.duplicates,
            redelivery.errors,
            redelivery.events_added,
            redelivery.messages_added
        ));
    }
    receiver.stop().await?;

    // The drain of the same jobs, by one worker, on a quiet host.
    harness::wait_for_quiet_host(Duration::from_secs(60)).await?;
    eprintln!("ingest ({label}): draining the {queue_depth} event jobs with one worker …");
    let machine_before = harness::machine_cpu_seconds()?;
    let mut worker = bench.start_worker(RETRY).await?;
    let clock = Instant::now();
    let drained = bench
        .wait_terminal(
            std::slice::from_mut(&mut worker),
            0,
            u64::from(queue_depth),
            TERMINAL_TIMEOUT,
        )
        .await;
    let drain_wall = clock.elapsed().as_secs_f64();
    let drain_machine = harness::machine_cpu_seconds()? - machine_before;
    let (worker_cpu, worker_rss) = (worker.cpu_seconds()?, worker.peak_rss_mb()?);
    worker.stop().await?;
    drained?;
    let mut drain = bench
        .result(
            "drain of the event jobs",
            u64::from(queue_depth),
            from,
            to,
            None,
            worker_cpu,
            worker_rss,
            1,
        )
        .await?;
    let jobs = drain.jobs.max(1) as f64;
    drain.machine_cpu_seconds_per_1000_jobs = drain_machine / jobs * 1000.0;
    eprintln!(
        "ingest ({label}): drained at {:.0} jobs/s ({drain_wall:.1} s from the worker's start)",
        drain.jobs_per_second
    );
    if let Err(e) = super::exactly_once(&drain) {
        failures.push(e.to_string());
    }

    let mut latencies = sent.latencies;
    Ok(IngestRun {
        label,
        namespace: bench.namespace.clone(),
        events,
        concurrency,
        database_connections,
        body_bytes: mean_body,
        presign_seconds,
        signed_lazily: sent.signed_lazily,
        wall_seconds: wall,
        events_per_second: latencies.len() as f64 / wall,
        latency_ms: percentiles(&mut latencies),
        errors: sent.errors,
        error_samples: sent.error_samples,
        unexpected_duplicates: sent.duplicates,
        ingest_cpu_seconds_per_1000_events: per_1000(receiver_cpu),
        ingest_peak_rss_mb: peak_rss,
        wire,
        machine_cpu_seconds_per_1000_events: per_1000(machine),
        client_cpu_seconds_per_1000_events: per_1000(client),
        broker_cpu_seconds_per_1000_events: per_1000(broker),
        database_cpu_seconds_per_1000_events: per_1000(postgres),
        database,
        events_stored,
        queue_depth,
        redelivery,
        drain,
        failures,
    })
}

/// The receiver's config: the bench's namespace, a telemetry port of its
/// own, its provider at the mock with the events' operation, one Standard
/// Webhooks source, every other
/// setting at its default (database, broker: the environment's).
fn ingest_toml(
    bench: &Bench,
    port: u16,
    telemetry_port: u16,
    database_connections: Option<u32>,
    secret_file: &Path,
) -> String {
    let secret_file = secret_file.display().to_string();
    let database = database_connections
        .map(|n| format!("\n[database]\nmax_connections = {n}\n"))
        .unwrap_or_default();
    format!(
        r#"namespace = "{namespace}"
{database}
[telemetry]
listen = "127.0.0.1:{telemetry_port}"

[ingest]
listen = "127.0.0.1:{port}"

[ingest.sources.{SOURCE}]
scheme = "standard-webhooks"
secrets = [{{ secret_file = {secret_file:?} }}]
provider = "{PROVIDER}"
operation = "{EVENT_OPERATION}"

[providers.{PROVIDER}]
base_url = "{url}"

[providers.{PROVIDER}.operations.{EVENT_OPERATION}]
method = "POST"
path = "/v1/events"
"#,
        namespace = bench.namespace,
        url = bench.provider_url,
    )
}

/// A payment provider's event of about `size` bytes (never less than its
/// fields need): the note in its metadata pads it.
fn event_body(i: usize, size: usize) -> Vec<u8> {
    let created = 1_796_000_000 + i as i64;
    let mut event = json!({
        "id": format!("evt_3Q{i:022}"),
        "object": "event",
        "type": "payment_intent.succeeded",
        "created": created,
        "livemode": false,
        "data": {
            "object": {
                "id": format!("pi_3Q{i:022}"),
                "object": "payment_intent",
                "amount": 1999,
                "amount_received": 1999,
                "currency": "eur",
                "customer": format!("cus_{i:08}"),
                "description": "Order #A-10042, 2 items",
                "payment_method": format!("pm_1Q{i:022}"),
                "receipt_email": format!("customer{i}@example.com"),
                "status": "succeeded",
                "metadata": { "order_id": format!("A-{i:06}"), "note": "" },
            }
        }
    });
    let bare = event.to_string().len();
    if size > bare {
        let note: String = "Leave the parcel at the front desk, please. "
            .chars()
            .cycle()
            .take(size - bare)
            .collect();
        event["data"]["object"]["metadata"]["note"] = note.into();
    }
    event.to_string().into_bytes()
}

/// Sends the first `count` of `events` with `concurrency` clients, each its
/// own keep-alive HTTP/1.1 connection taking the next unsent event.
async fn send(
    url: &str,
    events: &Arc<Vec<Event>>,
    count: usize,
    concurrency: usize,
    key: &SigningKey,
    signed_at: Instant,
) -> Sent {
    let next = Arc::new(AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..concurrency.min(count.max(1)) {
        let (url, events, next, key) = (url.to_owned(), events.clone(), next.clone(), key.clone());
        clients.spawn(async move {
            let mut sent = Sent::default();
            let http = match reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(60))
                .build()
            {
                Ok(http) => http,
                Err(e) => {
                    sent.errors += 1;
                    sent.error_samples.push(format!("no HTTP client: {e}"));
                    return sent;
                }
            };
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return sent;
                }
                let event = &events[i];
                let (timestamp, signature) = if signed_at.elapsed() < RESIGN_AFTER {
                    event.signed.clone()
                } else {
                    sent.signed_lazily += 1;
                    let now = Utc::now().timestamp();
                    let signature = webhook::sign_standard(
                        std::slice::from_ref(&key),
                        &event.id,
                        now,
                        &event.body,
                    );
                    (now, signature)
                };
                let request = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("user-agent", "courier-bench")
                    .header("webhook-id", &event.id)
                    .header("webhook-timestamp", timestamp.to_string())
                    .header("webhook-signature", signature)
                    .body(event.body.clone());
                let clock = Instant::now();
                let answer = match request.send().await {
                    Ok(response) => {
                        let status = response.status();
                        response.bytes().await.map(|body| (status, body))
                    }
                    Err(e) => Err(e),
                };
                let took = clock.elapsed().as_secs_f64();
                match answer {
                    Ok((status, body)) if status.is_success() => {
                        sent.latencies.push(took);
                        if serde_json::from_slice::<serde_json::Value>(&body)
                            .is_ok_and(|v| v["duplicate"] == true)
                        {
                            sent.duplicates += 1;
                        }
                    }
                    Ok((status, body)) => {
                        sent.errors += 1;
                        if sent.error_samples.len() < ERROR_SAMPLES {
                            sent.error_samples.push(format!(
                                "{status}: {}",
                                String::from_utf8_lossy(&body[..body.len().min(200)])
                            ));
                        }
                    }
                    Err(e) => {
                        sent.errors += 1;
                        if sent.error_samples.len() < ERROR_SAMPLES {
                            sent.error_samples.push(format!("no answer: {e}"));
                        }
                    }
                }
            }
        });
    }
    let mut all = Sent::default();
    while let Some(joined) = clients.join_next().await {
        match joined {
            Ok(sent) => {
                all.latencies.extend(sent.latencies);
                all.errors += sent.errors;
                all.duplicates += sent.duplicates;
                all.signed_lazily += sent.signed_lazily;
                let room = ERROR_SAMPLES.saturating_sub(all.error_samples.len());
                all.error_samples
                    .extend(sent.error_samples.into_iter().take(room));
            }
            Err(e) => {
                all.errors += 1;
                all.error_samples.push(format!("a client task failed: {e}"));
            }
        }
    }
    all
}

/// p50/p90/p99/max of `seconds`, in ms (nearest rank).
fn percentiles(seconds: &mut [f64]) -> Latency {
    seconds.sort_by(f64::total_cmp);
    let at = |q: f64| {
        if seconds.is_empty() {
            return f64::NAN;
        }
        let rank = ((q * seconds.len() as f64).ceil() as usize).clamp(1, seconds.len());
        seconds[rank - 1] * 1000.0
    };
    Latency {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: at(1.0),
    }
}

/// PostgreSQL's cumulative counters for the whole server's database.
#[derive(Debug, Clone, Copy)]
struct DatabaseCounters {
    commits: i64,
    rollbacks: i64,
    wal_records: i64,
    wal_bytes: f64,
    wal_syncs: i64,
}

impl DatabaseCounters {
    fn per_event(&self, before: &DatabaseCounters, events: u64) -> DatabaseCounts {
        let n = events.max(1) as f64;
        DatabaseCounts {
            commits_per_event: (self.commits - before.commits) as f64 / n,
            rollbacks_per_event: (self.rollbacks - before.rollbacks) as f64 / n,
            wal_records_per_event: (self.wal_records - before.wal_records) as f64 / n,
            wal_bytes_per_event: (self.wal_bytes - before.wal_bytes) / n,
            wal_syncs_per_event: (self.wal_syncs - before.wal_syncs) as f64 / n,
        }
    }
}

/// The database's transaction counters and the server's WAL counters
/// (`pg_stat_database`, `pg_stat_wal`), read with `psql`: only
/// courier-store speaks to PostgreSQL from Rust, and these views are no
/// business of it. `None` when they cannot be read: the report goes on
/// without them.
async fn database_counters(bench: &Bench) -> Option<DatabaseCounters> {
    const QUERY: &str =
        "SELECT d.xact_commit, d.xact_rollback, w.wal_records, w.wal_bytes, w.wal_sync
         FROM pg_stat_database d CROSS JOIN pg_stat_wal w
         WHERE d.datname = current_database()";
    let url = bench.config.database.url.clone();
    let output = tokio::task::spawn_blocking(move || {
        let mut psql = Command::new("psql");
        psql.args(["-X", "-A", "-t", "-q", "-w", "-d"])
            // The password goes in the environment, never on a command line.
            .arg(without_password(&url))
            .args(["-c", QUERY])
            .env("PGCONNECT_TIMEOUT", "5")
            .stdin(Stdio::null());
        if let Some(password) = courier_core::config::url_password(&url) {
            psql.env("PGPASSWORD", password);
        }
        psql.output()
    })
    .await;
    let output = match output {
        Ok(Ok(output)) if output.status.success() => output,
        Ok(Ok(output)) => {
            eprintln!(
                "ingest: PostgreSQL's statistics are not readable ({}); reported without",
                String::from_utf8_lossy(&output.stderr).trim()
            );
            return None;
        }
        Ok(Err(e)) => {
            eprintln!(
                "ingest: cannot run psql ({e}); PostgreSQL's statistics are reported without"
            );
            return None;
        }
        Err(e) => {
            eprintln!("ingest: reading PostgreSQL's statistics failed ({e}); reported without");
            return None;
        }
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let fields: Vec<&str> = text.trim().split('|').collect();
    let int = |i: usize| fields.get(i)?.trim().parse::<i64>().ok();
    Some(DatabaseCounters {
        commits: int(0)?,
        rollbacks: int(1)?,
        wal_records: int(2)?,
        wal_bytes: fields.get(3)?.trim().parse().ok()?,
        wal_syncs: int(4)?,
    })
}

/// `url` without the password in its user info or its query.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{user}@{host}")
        }
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|pair| !pair.starts_with("password="))
                .collect();
            if kept.is_empty() {
                path.to_owned()
            } else {
                format!("{path}?{}", kept.join("&"))
            }
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// The port of a URL's (first) host, else `default`.
fn url_port(url: &str, default: u16) -> u16 {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = host.split(',').next().unwrap_or(host);
    host.rsplit_once(':')
        .filter(|(_, port)| !port.ends_with(']'))
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or(default)
}

/// User + system CPU seconds of this process so far.
fn own_cpu_seconds() -> anyhow::Result<f64> {
    cpu_seconds_of_pid("self")
}

/// A file of this run's, removed when it ends.
struct TempFile(PathBuf);

impl TempFile {
    fn write(path: PathBuf, text: &str) -> anyhow::Result<TempFile> {
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(TempFile(path))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A `courier ingest` child process.
struct IngestProcess {
    /// `None` once stopped.
    child: Option<Child>,
    log_path: PathBuf,
}

impl IngestProcess {
    /// Starts `courier ingest --config <config>` and waits until its
    /// `/readyz` answers 200 (PostgreSQL and RabbitMQ both reached) on one
    /// of `ports` (the telemetry listener's, or the hooks' own).
    async fn start(
        config: &Path,
        dir: &Path,
        namespace: &str,
        ports: [u16; 2],
    ) -> anyhow::Result<IngestProcess> {
        let log_path = dir.join(format!("{namespace}-ingest.log"));
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(std::env::current_exe()?)
            .arg("ingest")
            .arg("--config")
            .arg(config)
            // COURIER_BENCH_WORKER_LOG: the log filter of every process the
            // bench starts (their logs are then kept).
            .env(
                "RUST_LOG",
                std::env::var("COURIER_BENCH_WORKER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env("COURIER_LOG_FORMAT", "json")
            .env_remove("COURIER_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting `courier ingest`")?;
        let mut process = IngestProcess {
            child: Some(child),
            log_path,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            for port in ports {
                let url = format!("http://127.0.0.1:{port}/readyz");
                if let Ok(r) = http.get(&url).send().await
                    && r.status().is_success()
                {
                    return Ok(process);
                }
            }
            if let Some(child) = process.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                process.child = None;
                bail!(
                    "`courier ingest` exited with {status}; its log: {}",
                    process.log_path.display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "`courier ingest` did not become ready; its log: {}",
                    process.log_path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn pid(&self) -> String {
        self.child
            .as_ref()
            .map_or_else(|| "0".to_owned(), |c| c.id().to_string())
    }

    fn cpu_seconds(&self) -> anyhow::Result<f64> {
        cpu_seconds_of_pid(&self.pid())
    }

    /// Every established TCP connection of the process with its data
    /// segments out and in so far (`ss -tinp`); `None` when `ss` fails.
    fn segments(&self) -> Option<Sockets> {
        let output = Command::new("ss")
            .args(["-tinpH", "state", "established"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&output.stdout);
        let owner = format!("pid={},", self.pid());
        let mut sockets = Sockets::new();
        let mut current: Option<(String, String)> = None;
        for line in text.lines() {
            if !line.starts_with(char::is_whitespace) {
                // Recv-Q Send-Q Local Peer users:((…))
                let fields: Vec<&str> = line.split_whitespace().collect();
                current = (line.contains(&owner) && fields.len() >= 4)
                    .then(|| (fields[2].to_owned(), fields[3].to_owned()));
                continue;
            }
            if let Some(key) = current.take() {
                let count = |name: &str| -> u64 {
                    line.split_whitespace()
                        .find_map(|f| f.strip_prefix(name))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0)
                };
                sockets.insert(key, (count("data_segs_out:"), count("data_segs_in:")));
            }
        }
        Some(sockets)
    }

    /// Peak resident memory (VmHWM) in MiB.
    fn peak_rss_mb(&self) -> anyhow::Result<f64> {
        memory_mb_of_pid(&self.pid(), "VmHWM")
    }

    /// SIGTERM, then wait for the graceful shutdown.
    async fn stop(mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = tokio::task::spawn_blocking(move || child.wait()).await??;
        if !status.success() {
            bail!(
                "`courier ingest` exited with {status}; its log: {}",
                self.log_path.display()
            );
        }
        Ok(())
    }
}

/// A bench that fails midway must not leave the receiver running.
impl Drop for IngestProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::env::var_os("COURIER_BENCH_WORKER_LOG").is_none() {
            let _ = std::fs::remove_file(&self.log_path);
        }
    }
}

pub fn print(runs: &[IngestRun]) {
    println!("scenario ingest");
    let Some(first) = runs.first() else {
        return;
    };
    println!(
        "{} events of {:.0} B each, signed (standard-webhooks), POST /hooks/{SOURCE} → `courier ingest` → PostgreSQL + RabbitMQ (confirmed) → 2xx",
        first.events, first.body_bytes
    );
    println!();
    println!(
        "{:<20} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>10} {:>9} {:>8} {:>7}",
        "clients",
        "events",
        "wall s",
        "events/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "ingest s/1k",
        "host s/1k",
        "rss MB",
        "errors"
    );
    for r in runs {
        println!(
            "{:<20} {:>8} {:>8.2} {:>9.0} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>10.3} {:>9.3} {:>8.1} {:>7}",
            r.label,
            r.events,
            r.wall_seconds,
            r.events_per_second,
            r.latency_ms.p50,
            r.latency_ms.p90,
            r.latency_ms.p99,
            r.latency_ms.max,
            r.ingest_cpu_seconds_per_1000_events,
            r.machine_cpu_seconds_per_1000_events,
            r.ingest_peak_rss_mb,
            r.errors,
        );
    }
    println!();
    for r in runs {
        println!(
            "{}: CPU s/1k: bench clients {:.3}, broker {:.3}, PostgreSQL {:.3}{}",
            r.label,
            r.client_cpu_seconds_per_1000_events,
            r.broker_cpu_seconds_per_1000_events,
            r.database_cpu_seconds_per_1000_events,
            if r.signed_lazily > 0 {
                format!("; {} events signed at send time", r.signed_lazily)
            } else {
                String::new()
            }
        );
        let wire = |w: &Option<Wire>| {
            w.as_ref().map_or_else(
                || "unknown".to_owned(),
                |w| {
                    format!(
                        "PostgreSQL {:.2} out / {:.2} in, RabbitMQ {:.2} out / {:.2} in",
                        w.database_out, w.database_in, w.broker_out, w.broker_in
                    )
                },
            )
        };
        println!(
            "{}: receiver's TCP data segments per event: {}; per redelivery: {}",
            r.label,
            wire(&r.wire),
            wire(&r.redelivery.wire)
        );
        if let Some(d) = &r.database {
            println!(
                "{}: per event: {:.2} commits, {:.2} rollbacks, {:.1} WAL records, {:.0} WAL bytes, {:.3} WAL fsyncs",
                r.label,
                d.commits_per_event,
                d.rollbacks_per_event,
                d.wal_records_per_event,
                d.wal_bytes_per_event,
                d.wal_syncs_per_event
            );
        }
        println!(
            "{}: events table {} rows, work queue {} messages; {} sent again: {} duplicates, {} errors, {} events and {} messages added",
            r.label,
            r.events_stored,
            r.queue_depth,
            r.redelivery.sent,
            r.redelivery.duplicates,
            r.redelivery.errors,
            r.redelivery.events_added,
            r.redelivery.messages_added
        );
        println!(
            "{}: drained by one worker at {:.0} jobs/s (worker {:.3} CPU s/1k, host {:.3} s/1k, {:.1} MB); ingest {:.0} events/s",
            r.label,
            r.drain.jobs_per_second,
            r.drain.worker_cpu_seconds_per_1000_jobs,
            r.drain.machine_cpu_seconds_per_1000_jobs,
            r.drain.worker_peak_rss_mb,
            r.events_per_second
        );
        for sample in &r.error_samples {
            println!("{}: error: {sample}", r.label);
        }
        for failure in &r.failures {
            println!("{}: FAILED: {failure}", r.label);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{event_body, percentiles, url_port, without_password};

    #[test]
    fn an_event_body_is_json_of_the_size_asked() {
        let body = event_body(7, 600);
        assert_eq!(body.len(), 600);
        let event: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(event["data"]["object"]["customer"], "cus_00000007");
        // Never shorter than its fields.
        assert!(event_body(7, 10).len() > 300);
    }

    #[test]
    fn a_url_loses_its_password_and_tells_its_port() {
        assert_eq!(
            without_password("postgres://u:p%40ss@db:6432/x?sslmode=disable&password=q"),
            "postgres://u@db:6432/x?sslmode=disable"
        );
        assert_eq!(
            without_password("postgres://postgres@127.0.0.1:5432/postgres"),
            "postgres://postgres@127.0.0.1:5432/postgres"
        );
        assert_eq!(url_port("postgres://u:p@db:6432/x", 5432), 6432);
        assert_eq!(url_port("amqp://guest:guest@127.0.0.1/%2f", 5672), 5672);
        assert_eq!(url_port("amqps://[::1]:5671/vh", 1), 5671);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut s: Vec<f64> = (1..=100).map(|i| f64::from(i) / 1000.0).collect();
        let l = percentiles(&mut s);
        assert_eq!((l.p50, l.p90, l.p99, l.max), (50.0, 90.0, 99.0, 100.0));
    }
}
