//! What every throughput scenario shares: a namespace of its own, the
//! built-in mock provider, publishing jobs fast (confirmed, many in flight),
//! worker processes started from this very binary, and the measurements
//! (wall time, latency from PostgreSQL, CPU and peak RSS from /proc).
//!
//! Owns setting up and tearing down a bench namespace and turning a run into
//! a [`RunResult`]. It must never measure anything the worker does not do
//! in production: the worker is a real `courier run` process.

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use courier_amqp::{Channel, Link, Publisher, Topology};
use courier_core::Config;
use courier_core::envelope::JobEnvelope;
use courier_provider::{FailureMix, MockProvider};
use courier_store::Store;
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The operation every bench job runs.
pub const OPERATION: &str = "charge";
/// Confirmed publishes in flight while loading a queue.
const PUBLISH_WINDOW: usize = 2048;
/// Linux reports process CPU time in these ticks (USER_HZ, fixed ABI).
const TICKS_PER_SECOND: f64 = 100.0;

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub label: String,
    pub jobs: u64,
    pub worker_processes: usize,
    pub wall_seconds: f64,
    pub jobs_per_second: f64,
    /// Throughput ÷ the broker's consume-and-ack rate measured in the same run.
    pub ratio_to_baseline: Option<f64>,
    pub latency_ms: Latency,
    pub worker_cpu_seconds_per_1000_jobs: f64,
    /// Every process on the machine (broker, database, mock provider,
    /// publisher, worker) over the run: on a shared 2-core machine this,
    /// not the worker alone, bounds the throughput.
    pub machine_cpu_seconds_per_1000_jobs: f64,
    pub worker_peak_rss_mb: f64,
    /// Jobs by state, from PostgreSQL.
    pub outcomes: BTreeMap<String, i64>,
    pub attempts: i64,
    /// Calls the mock provider answered in the namespace's life.
    pub provider_calls: u64,
    /// What the run cost the broker and the database (drains only).
    pub cost: Option<Cost>,
    /// What a steady run cost the other processes (steady runs only).
    pub steady_cost: Option<SteadyCost>,
    /// The worker's CPU and context switches by kind of thread (steady
    /// runs and drains; empty elsewhere).
    pub worker_threads: Vec<ThreadCost>,
}

/// One kind of thread in the worker processes (threads grouped by name:
/// the runtime's workers, lapin's I/O loop): where the worker's CPU goes,
/// and how often those threads sleep and wake.
#[derive(Debug, Clone, Serialize)]
pub struct ThreadCost {
    pub name: String,
    pub threads: usize,
    pub cpu_seconds_per_1000_jobs: f64,
    /// Voluntary and involuntary context switches.
    pub context_switches_per_job: f64,
}

/// Each thread of some processes, by (process, thread) id: its name, CPU
/// ticks and context switches so far.
#[derive(Debug, Clone, Default)]
pub struct ThreadReading(BTreeMap<(u32, u32), (String, f64, u64)>);

impl ThreadReading {
    /// Reads every thread of `pids` (a thread that ends while it is read is
    /// left out).
    pub fn of(pids: &[u32]) -> Self {
        let mut threads = BTreeMap::new();
        for &pid in pids {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                continue;
            };
            for task in tasks.filter_map(Result::ok) {
                let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                    continue;
                };
                let read = |file: &str| std::fs::read_to_string(task.path().join(file)).ok();
                let (Some(name), Some(stat), Some(status)) =
                    (read("comm"), read("stat"), read("status"))
                else {
                    continue;
                };
                let switches = status
                    .lines()
                    .filter_map(|l| {
                        l.strip_prefix("voluntary_ctxt_switches:")
                            .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                    })
                    .filter_map(|v| v.trim().parse::<u64>().ok())
                    .sum();
                if let Some(ticks) = process_cpu_ticks(&stat) {
                    threads.insert((pid, tid), (name.trim_end().to_owned(), ticks, switches));
                }
            }
        }
        Self(threads)
    }

    /// What each kind of thread used from `before` to this reading, over
    /// `jobs`, most CPU first (a thread born in between counts from zero).
    pub fn since(&self, before: &Self, jobs: u64) -> Vec<ThreadCost> {
        let mut kinds: BTreeMap<&str, (usize, f64, u64)> = BTreeMap::new();
        for (id, (name, ticks, switches)) in &self.0 {
            let (ticks_before, switches_before) =
                before.0.get(id).map_or((0.0, 0), |(_, t, s)| (*t, *s));
            let kind = kinds.entry(name).or_default();
            kind.0 += 1;
            kind.1 += ticks - ticks_before;
            kind.2 += switches.saturating_sub(switches_before);
        }
        let jobs = jobs.max(1) as f64;
        let mut costs: Vec<ThreadCost> = kinds
            .into_iter()
            .map(|(name, (threads, ticks, switches))| ThreadCost {
                name: name.to_owned(),
                threads,
                cpu_seconds_per_1000_jobs: ticks / TICKS_PER_SECOND / jobs * 1000.0,
                context_switches_per_job: switches as f64 / jobs,
            })
            .collect();
        costs.sort_by(|a, b| {
            b.cpu_seconds_per_1000_jobs
                .total_cmp(&a.cpu_seconds_per_1000_jobs)
        });
        costs
    }
}

/// CPU seconds per 1,000 jobs of the processes beside the worker while a
/// steady rate was offered and drained: the broker's and the database's
/// share of the host, and the bench's own (its publisher and the mock
/// provider), which a production worker does not pay for.
#[derive(Debug, Clone, Serialize)]
pub struct SteadyCost {
    pub broker_cpu_seconds_per_1000_jobs: f64,
    pub database_cpu_seconds_per_1000_jobs: f64,
    pub bench_cpu_seconds_per_1000_jobs: f64,
}

impl SteadyCost {
    /// CPU seconds of the broker, the database and this process so far.
    pub fn reading() -> anyhow::Result<[f64; 3]> {
        Ok([
            cpu_seconds_of("beam.smp"),
            cpu_seconds_of("postgres"),
            cpu_seconds_of_pid("self")?,
        ])
    }

    /// The cost between two [`SteadyCost::reading`]s over `jobs`.
    pub fn between(before: [f64; 3], after: [f64; 3], jobs: u64) -> Self {
        let per_1000 = |i: usize| (after[i] - before[i]) / jobs.max(1) as f64 * 1000.0;
        Self {
            broker_cpu_seconds_per_1000_jobs: per_1000(0),
            database_cpu_seconds_per_1000_jobs: per_1000(1),
            bench_cpu_seconds_per_1000_jobs: per_1000(2),
        }
    }
}

/// What a drain cost the services, per job: the capacity model's inputs
/// (docs/SCALING.md).
#[derive(Debug, Clone, Serialize)]
pub struct Cost {
    /// CPU of every RabbitMQ node on the machine (`beam.smp` processes)
    /// while the jobs were published (confirmed, persistent)…
    pub broker_publish_cpu_seconds_per_1000_jobs: f64,
    /// … and while they were drained (delivered, acked; retries).
    pub broker_cpu_seconds_per_1000_jobs: f64,
    /// CPU of every PostgreSQL process that lived through the run.
    pub database_cpu_seconds_per_1000_jobs: f64,
    /// PostgreSQL's write-ahead log written during the run (the whole
    /// server's: a quiet server is assumed).
    pub wal_bytes_per_job: f64,
    /// The namespace's tables on disk after the run, per job.
    pub table_bytes_per_job: f64,
    /// Each table's bytes on disk after the run, largest first.
    pub tables: Vec<(String, u64)>,
}

/// CPU seconds used so far by every process named `comm` (its
/// /proc/PID/comm) that is alive now, with their reaped children's: a
/// PostgreSQL backend or autovacuum worker that exits between two readings
/// moves into its postmaster's children time, so the difference still
/// counts it.
pub fn cpu_seconds_of(comm: &str) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim_end() == comm)
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|stat| Some(process_cpu_ticks(&stat)? + children_cpu_ticks(&stat)?))
        .sum::<f64>()
        / TICKS_PER_SECOND
}

/// User + system CPU seconds of process `pid` (a number, or `self`) so far.
pub fn cpu_seconds_of_pid(pid: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    Ok(process_cpu_ticks(&stat).context("unreadable /proc stat")? / TICKS_PER_SECOND)
}

/// A memory figure of `/proc/<pid>/status` (`VmHWM`: the peak resident
/// memory, `VmRSS`: the current one) in MiB.
pub fn memory_mb_of_pid(pid: &str, field: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .with_context(|| format!("no {field} in /proc status"))?;
    Ok(kib / 1024.0)
}

/// cutime + cstime (fields 16 and 17): the CPU of reaped children.
fn children_cpu_ticks(stat: &str) -> Option<f64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(13)?.parse::<f64>().ok()? + fields.get(14)?.parse::<f64>().ok()?)
}

/// utime + stime from a /proc/PID/stat line (fields 14 and 15, counted
/// after the parenthesised command name, which may hold spaces).
fn process_cpu_ticks(stat: &str) -> Option<f64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?)
}

/// From the job's `created_at` to its terminal outcome's commit.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// A fresh namespace for `scenario`: `bench_<scenario>_<suffix>`, the
/// suffix the time in milliseconds and the process id, in hex (a namespace
/// is at most 40 characters; the process id keeps two benches started in
/// the same millisecond, as parallel tests do, apart).
pub fn namespace(scenario: &str) -> String {
    format!(
        "bench_{scenario}_{:x}{:06x}",
        Utc::now().timestamp_millis(),
        std::process::id()
    )
}

/// A bench namespace: queues, schema and mock provider.
pub struct Bench {
    pub namespace: String,
    pub config: Config,
    pub store: Store,
    pub conn: Link,
    pub topology: Topology,
    pub publisher: Publisher,
    pub channel: Channel,
    /// Kept alive for the workers (they call it unless `provider_url` says
    /// otherwise).
    pub mock: MockProvider,
    pub providers: Vec<String>,
    /// Where workers send their calls: the mock, unless a scenario points
    /// them elsewhere (the fault suite's chaos provider).
    pub provider_url: String,
    /// Keys added to every provider table of the workers' config.
    pub provider_toml: String,
    /// Tables added after each provider's (`{provider}` is its name), e.g.
    /// its rate_limit or circuit.
    pub provider_tables: String,
    /// Keys of the workers' `[broker]` table (prefetch, connect order).
    pub broker_toml: String,
    /// Keys of the workers' `[worker]` table (the linger).
    pub worker_toml: String,
    /// Environment of the workers besides this process's own (a node-loss
    /// run lists the cluster's nodes in its own order).
    pub worker_env: Vec<(String, String)>,
    /// Providers sent to another base URL than `provider_url`.
    pub urls: std::collections::BTreeMap<String, String>,
    workers_started: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for Bench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bench")
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl Bench {
    /// A fresh [`namespace`] with `providers`, all served by one mock
    /// provider failing per `mix`.
    pub async fn new(
        scenario: &str,
        providers: Vec<String>,
        mix: FailureMix,
    ) -> anyhow::Result<Bench> {
        let mock = MockProvider::start_lean(mix)
            .await
            .context("starting the mock provider")?;
        Self::with_mock(scenario, providers, mock).await
    }

    /// As [`new`](Self::new), with the providers served by `mock`.
    pub async fn with_mock(
        scenario: &str,
        providers: Vec<String>,
        mock: MockProvider,
    ) -> anyhow::Result<Bench> {
        Self::on_broker(scenario, providers, mock, None).await
    }

    /// As [`with_mock`](Self::with_mock), on the broker nodes `amqp_urls`
    /// (comma-separated, as `COURIER_AMQP_URL` takes them) instead of the
    /// environment's: the node-loss scenario's cluster. The workers get the
    /// environment's unless `worker_env` says otherwise.
    pub async fn on_broker(
        scenario: &str,
        providers: Vec<String>,
        mock: MockProvider,
        amqp_urls: Option<&str>,
    ) -> anyhow::Result<Bench> {
        let config = Config::from_toml("", "(bench)", &|k| match (k, amqp_urls) {
            (courier_core::config::ENV_AMQP_URL, Some(urls)) => Some(urls.to_owned()),
            _ => std::env::var(k).ok(),
        })?;
        let namespace = namespace(scenario);
        let store = Store::connect(&config.database, &namespace, 4).await?;
        store.migrate().await?;
        let conn = courier_amqp::connect(&config.broker, "courier bench").await?;
        let topology = Topology::new(&namespace, providers.iter().cloned());
        let channel = conn.channel().await.context("opening a channel")?;
        topology.declare(&channel).await?;
        let publisher = Publisher::open(&conn, config.broker.confirm_timeout).await?;
        Ok(Bench {
            namespace,
            config,
            store,
            conn,
            topology,
            publisher,
            channel,
            provider_url: mock.base_url(),
            mock,
            providers,
            provider_toml: String::new(),
            provider_tables: String::new(),
            broker_toml: String::new(),
            worker_toml: String::new(),
            worker_env: Vec::new(),
            urls: Default::default(),
            workers_started: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Publishes `count` jobs (provider `i % providers`), confirmed, with
    /// `created_at` = now. Returns how long it took.
    pub async fn publish(&self, count: usize) -> anyhow::Result<Duration> {
        let clock = Instant::now();
        let publishes = futures_util::stream::iter(0..count).map(|i| async move {
            let provider = &self.providers[i % self.providers.len()];
            let job = bench_job(provider, i);
            self.publisher
                .publish_job(&self.topology, provider, job.id, &job.to_body(), None)
                .await
        });
        let mut results = publishes.buffer_unordered(PUBLISH_WINDOW);
        while let Some(result) = results.next().await {
            result?;
        }
        Ok(clock.elapsed())
    }

    /// Publishes `rate` jobs per second for `duration`, paced every
    /// millisecond (coarser bursts would measure their own queueing).
    pub async fn publish_at(&self, rate: f64, duration: Duration) -> anyhow::Result<u64> {
        let tick = Duration::from_millis(1);
        let mut ticks = tokio::time::interval(tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < duration {
            ticks.tick().await;
            let due = (rate * start.elapsed().as_secs_f64()) as u64;
            let batch: Vec<_> = (sent..due)
                .map(|i| {
                    let provider = &self.providers[i as usize % self.providers.len()];
                    let job = bench_job(provider, i as usize);
                    (provider, job.id, job.to_body())
                })
                .collect();
            let publishes = batch.iter().map(|(provider, id, body)| {
                self.publisher
                    .publish_job(&self.topology, provider, *id, body, None)
            });
            for result in futures_util::future::join_all(publishes).await {
                result?;
            }
            sent = due;
        }
        Ok(sent)
    }

    /// The config a bench worker runs with: every provider at the mock,
    /// `retry` as each provider's `[retry]` table.
    fn worker_toml(&self, telemetry_port: u16, retry: &str) -> String {
        let mut toml = format!(
            "namespace = \"{}\"\n\n[telemetry]\nlisten = \"127.0.0.1:{telemetry_port}\"\npoll_interval_ms = 1000\n",
            self.namespace
        );
        if !self.broker_toml.is_empty() {
            toml.push_str(&format!("\n[broker]\n{}\n", self.broker_toml));
        }
        if !self.worker_toml.is_empty() {
            toml.push_str(&format!("\n[worker]\n{}\n", self.worker_toml));
        }
        for provider in &self.providers {
            let url = self.urls.get(provider).unwrap_or(&self.provider_url);
            toml.push_str(&format!(
                "\n[providers.{provider}]\nbase_url = \"{url}\"\n{}\n[providers.{provider}.retry]\n{retry}\n\n[providers.{provider}.operations.{OPERATION}]\nmethod = \"POST\"\npath = \"/v1/customers/{{customer}}/charges\"\n{}\n",
                self.provider_toml,
                self.provider_tables.replace("{provider}", provider)
            ));
        }
        toml
    }

    /// Starts a `courier run` process on this namespace and waits until it
    /// is ready.
    pub async fn start_worker(&self, retry: &str) -> anyhow::Result<WorkerProcess> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let n = self
            .workers_started
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        let dir = std::env::temp_dir();
        let config_path = dir.join(format!("{}-{n}.toml", self.namespace));
        std::fs::write(&config_path, self.worker_toml(port, retry))?;
        let log_path = dir.join(format!("{}-{n}.log", self.namespace));
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(std::env::current_exe()?)
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            // COURIER_BENCH_WORKER_LOG: the workers' log filter, to look
            // into a failing scenario (their logs are then kept).
            .env(
                "RUST_LOG",
                std::env::var("COURIER_BENCH_WORKER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env("COURIER_LOG_FORMAT", "json")
            .envs(self.worker_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting a worker process")?;
        let worker = WorkerProcess {
            child: Some(child),
            telemetry: SocketAddr::from(([127, 0, 0, 1], port)),
            config_path,
            log_path,
            ready_within: Duration::from_secs(60)
                + Duration::from_millis(200) * u32::try_from(self.providers.len()).unwrap_or(0),
            http: {
                courier_provider::install_crypto();
                reqwest::Client::new()
            },
        };
        worker.wait_ready().await?;
        Ok(worker)
    }

    /// Waits until `workers` together have committed `n` terminal outcomes
    /// more than `before`, reporting progress on stderr.
    pub async fn wait_terminal(
        &self,
        workers: &mut [WorkerProcess],
        before: u64,
        n: u64,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last_report = Instant::now();
        loop {
            let mut done = 0;
            for w in workers.iter_mut() {
                done += w.terminal_outcomes().await?;
            }
            let done = done.saturating_sub(before);
            if done >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("only {done} of {n} jobs terminal after {timeout:?}");
            }
            if last_report.elapsed() > Duration::from_secs(5) {
                eprintln!("  … {done}/{n} terminal");
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The result of a run over the jobs created in `[from, to)`. `wall`
    /// defaults to first attempt → last terminal commit.
    #[allow(clippy::too_many_arguments)]
    pub async fn result(
        &self,
        label: &str,
        jobs: u64,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        wall: Option<f64>,
        cpu_seconds: f64,
        peak_rss_mb: f64,
        workers: usize,
    ) -> anyhow::Result<RunResult> {
        let timing = self.store.timing(from, to).await?;
        if u64::try_from(timing.terminal).unwrap_or(0) != jobs {
            bail!(
                "{label}: {} of {jobs} jobs are recorded as finished in PostgreSQL",
                timing.terminal
            );
        }
        let wall = wall.unwrap_or_else(|| match (timing.first_attempt, timing.last_finish) {
            (Some(a), Some(b)) => (b - a).as_seconds_f64().max(1e-3),
            _ => f64::NAN,
        });
        let outcomes = self.store.state_counts().await?.into_iter().collect();
        Ok(RunResult {
            label: label.to_owned(),
            jobs,
            worker_processes: workers,
            wall_seconds: wall,
            jobs_per_second: jobs as f64 / wall,
            ratio_to_baseline: None,
            latency_ms: Latency {
                p50: timing.p50 * 1000.0,
                p90: timing.p90 * 1000.0,
                p99: timing.p99 * 1000.0,
                max: timing.max * 1000.0,
            },
            worker_cpu_seconds_per_1000_jobs: cpu_seconds / jobs as f64 * 1000.0,
            machine_cpu_seconds_per_1000_jobs: f64::NAN,
            worker_peak_rss_mb: peak_rss_mb,
            outcomes,
            attempts: self.store.count_attempts().await?,
            provider_calls: self.mock.call_count() as u64,
            cost: None,
            steady_cost: None,
            worker_threads: Vec::new(),
        })
    }

    /// Removes the namespace's queues, exchanges and schema.
    pub async fn cleanup(self) -> anyhow::Result<()> {
        // A fresh channel for each try: the setup channel may have died with
        // a broker restart (the fault suite's), and RabbitMQ now and then
        // answers a quorum queue's delete with INTERNAL_ERROR, which closes
        // the connection. Deletes are idempotent, and the link reconnects on
        // the next channel.
        const TRIES: u32 = 3;
        for tried in 1..=TRIES {
            let torn_down = match self.conn.channel().await {
                Ok(channel) => self.topology.teardown(&channel).await,
                Err(e) => Err(e),
            };
            match torn_down {
                Ok(()) => break,
                Err(e) if tried < TRIES => eprintln!("cleanup: {e}; trying again"),
                Err(e) => return Err(e.into()),
            }
        }
        self.store.drop_schema().await?;
        let _ = self.conn.close("bench done").await;
        Ok(())
    }
}

pub fn bench_job(provider: &str, i: usize) -> JobEnvelope {
    JobEnvelope::new(
        provider,
        OPERATION,
        json!({
            "customer": format!("cus_{i:08}"),
            "amount": 1999,
            "currency": "eur",
            "description": "Order #A-10042, 2 items",
        }),
        Utc::now(),
    )
}

/// Busy CPU seconds of the whole machine since boot (all cores; from
/// /proc/stat: user, nice, system, irq, softirq, steal).
pub fn machine_cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| ticks.get(i))
        .sum::<f64>();
    Ok(busy / TICKS_PER_SECOND)
}

/// Waits until the machine is nearly idle (under a tenth of a core busy
/// over a second), at most `limit`: after loading a large backlog the
/// broker keeps writing it to disk for a while, and that work belongs to the
/// publish, not to the run measured next.
/// `COURIER_BENCH_QUIET_SECS` caps the wait (the tests, run beside each
/// other, set 0: their host is never quiet and they measure nothing).
pub async fn wait_for_quiet_host(limit: Duration) -> anyhow::Result<Duration> {
    let limit = std::env::var("COURIER_BENCH_QUIET_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(limit, |cap| limit.min(Duration::from_secs(cap)));
    let clock = Instant::now();
    while clock.elapsed() < limit {
        let before = machine_cpu_seconds()?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        if machine_cpu_seconds()? - before < 0.1 {
            break;
        }
    }
    Ok(clock.elapsed())
}

/// A `courier run` child process.
#[derive(Debug)]
pub struct WorkerProcess {
    /// `None` once stopped.
    child: Option<Child>,
    telemetry: SocketAddr,
    config_path: PathBuf,
    log_path: PathBuf,
    http: reqwest::Client,
    ready_within: Duration,
}

impl WorkerProcess {
    async fn wait_ready(&self) -> anyhow::Result<()> {
        // Declaring and subscribing costs a few round trips per provider.
        let deadline = Instant::now() + self.ready_within;
        loop {
            let url = format!("http://{}/readyz", self.telemetry);
            if let Ok(r) = self.http.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the worker did not become ready; its log: {}",
                    self.log_path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Succeeded, dead and invalid outcomes committed so far.
    pub async fn terminal_outcomes(&mut self) -> anyhow::Result<u64> {
        let text = self
            .http
            .get(format!("http://{}/metrics", self.telemetry))
            .send()
            .await?
            .text()
            .await?;
        let terminal = text
            .lines()
            .filter(|l| l.starts_with("courier_jobs_completed_total{"))
            .filter(|l| {
                ["succeeded", "dead", "invalid"]
                    .iter()
                    .any(|o| l.contains(&format!("outcome=\"{o}\"")))
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>();
        Ok(terminal as u64)
    }

    /// User + system CPU seconds so far.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        cpu_seconds_of_pid(&self.pid())
    }

    /// Peak resident memory (VmHWM) in MiB.
    pub fn peak_rss_mb(&self) -> anyhow::Result<f64> {
        memory_mb_of_pid(&self.pid(), "VmHWM")
    }

    /// The process id (0 once stopped).
    pub fn process_id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn pid(&self) -> String {
        self.process_id().to_string()
    }

    /// SIGKILL: no shutdown, nothing flushed, as a crash.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `/healthz` and `/readyz` answer 200.
    pub async fn alive_and_ready(&self) -> bool {
        let mut ok = true;
        for path in ["/healthz", "/readyz"] {
            let url = format!("http://{}{path}", self.telemetry);
            ok &= self
                .http
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
        }
        ok
    }

    /// Where the worker logs (kept while it runs).
    pub fn log_path(&self) -> &std::path::Path {
        &self.log_path
    }

    /// Current resident memory (VmRSS) in MiB.
    pub fn rss_mb(&self) -> anyhow::Result<f64> {
        memory_mb_of_pid(&self.pid(), "VmRSS")
    }

    /// SIGTERM, then wait for the graceful shutdown.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = tokio::task::spawn_blocking(move || child.wait()).await??;
        if !status.success() {
            bail!("the worker exited with {status}");
        }
        Ok(())
    }
}

/// A bench that fails midway must not leave a worker running.
impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.config_path);
        // Asked for a log filter: someone is looking into a run.
        if std::env::var_os("COURIER_BENCH_WORKER_LOG").is_none() {
            let _ = std::fs::remove_file(&self.log_path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ThreadReading, children_cpu_ticks, process_cpu_ticks};
    use std::sync::mpsc;

    #[test]
    fn cpu_ticks_are_read_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (beam (smp) x) S 1 2 3 4 5 6 7 8 9 10 150 25 7 3 20 0 4";
        assert_eq!(process_cpu_ticks(stat), Some(175.0));
        assert_eq!(children_cpu_ticks(stat), Some(10.0));
    }

    #[test]
    fn a_busy_thread_s_cpu_is_counted_under_its_name_and_per_job() {
        let pid = std::process::id();
        let before = ThreadReading::of(&[pid]);
        let (stop, stopped) = mpsc::channel::<()>();
        let burner = std::thread::Builder::new()
            .name("tick-burner".into())
            .spawn(move || {
                // Busy until told to stop: the reading below must see it.
                while stopped.try_recv().is_err() {
                    std::hint::black_box((0..1_000u64).sum::<u64>());
                }
            })
            .expect("spawn the busy thread");
        // Wait for three ticks (30 ms of its CPU), not for a time.
        let (after, burnt) = loop {
            let after = ThreadReading::of(&[pid]);
            if let Some(c) = after
                .since(&before, 10)
                .into_iter()
                .find(|c| c.name == "tick-burner" && c.cpu_seconds_per_1000_jobs >= 3.0)
            {
                break (after, c);
            }
            std::thread::yield_now();
        };
        stop.send(()).expect("the busy thread listens");
        burner.join().expect("the busy thread ends cleanly");
        // Born after `before`, it counts from zero: one thread, its whole life.
        assert_eq!(burnt.threads, 1);
        // The same reading over twice the jobs costs half per job.
        let halved = after
            .since(&before, 20)
            .into_iter()
            .find(|c| c.name == "tick-burner")
            .expect("the busy thread is read");
        assert!(
            (halved.cpu_seconds_per_1000_jobs * 2.0 - burnt.cpu_seconds_per_1000_jobs).abs() < 1e-9,
            "{halved:?} against {burnt:?}"
        );
        // A thread that has ended is no longer read.
        let ended = ThreadReading::of(&[pid]).since(&before, 10);
        assert!(ended.iter().all(|c| c.name != "tick-burner"), "{ended:?}");
    }
}
