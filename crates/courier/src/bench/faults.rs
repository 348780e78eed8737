//! `courier bench faults`: the fault suite. Thousands of jobs through the
//! real pipeline (a `courier run` process, the local RabbitMQ and
//! PostgreSQL) while something breaks, then the invariants, checked from
//! PostgreSQL and from a provider that logged every call it received.
//!
//! Owns the scenarios (worker killed with SIGKILL, RabbitMQ stopped and
//! started, PostgreSQL restarted, a provider misbehaving on the wire, hostile
//! input mixed into normal traffic, the node holding the work queue's leader
//! stopped in a three-node cluster) and their audit: every published job
//! has exactly one terminal state, nothing lost, duplicate calls no more
//! than the crashes explain, no call after a recorded success, the worker
//! alive and ready at the end. It restarts the machine's RabbitMQ and
//! PostgreSQL, so it must never run beside other tests, and it must always
//! start them again (and the cluster's node), whatever failed.

use super::harness::{Bench, WorkerProcess, bench_job};
use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use courier_provider::FailureMix;
use courier_provider::chaos::{Chaos, ChaosProvider};
use courier_testkit::hostile::{Answer as Broker, Message, RawPublisher, Value};
use futures_util::StreamExt;
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Every scenario, in the order they run. node-kill runs only when named:
/// on RabbitMQ 3.10 it can leave retries parked in a delay queue for
/// minutes (docs/SCALING.md), which would fail a suite that asserts every
/// job terminal within its deadline.
pub const SCENARIOS: [&str; 7] = [
    "kill",
    "broker",
    "database",
    "provider",
    "hostile",
    "node",
    "node-kill",
];

/// How big and how long each scenario is.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    /// Jobs published per scenario.
    pub jobs: u64,
    /// Kills of the worker in the kill scenario.
    pub kills: u32,
    /// Offered rate while publishing, jobs per second.
    pub rate: f64,
    /// How long RabbitMQ or PostgreSQL stays down.
    pub outage: Duration,
}

impl Size {
    pub const FULL: Size = Size {
        jobs: 20_000,
        kills: 6,
        rate: 1_000.0,
        outage: Duration::from_secs(5),
    };
    /// What CI runs: every scenario, smaller.
    pub const SHORT: Size = Size {
        jobs: 3_000,
        kills: 5,
        rate: 500.0,
        outage: Duration::from_secs(3),
    };
}

/// One scenario's result.
#[derive(Debug, Clone, Serialize)]
pub struct FaultReport {
    pub scenario: String,
    pub published: u64,
    /// Publishes that never got a confirm (they failed loudly, each
    /// retried until the scenario's deadline): not jobs.
    pub unconfirmed: u64,
    pub terminal: u64,
    pub lost: u64,
    pub succeeded: u64,
    pub dead: u64,
    pub provider_calls: u64,
    pub attempts_recorded: u64,
    /// Calls the record does not explain (a call whose outcome was never
    /// committed: made by a worker that was killed).
    pub duplicate_calls: u64,
    /// Calls for a job whose success was already committed.
    pub calls_after_success: u64,
    /// Kills, outages: what broke.
    pub faults: u32,
    /// From the broker's or database's return to the offered rate again.
    pub recovery_seconds: Option<f64>,
    pub worker_peak_rss_mb: f64,
    pub seconds: f64,
    pub ready_at_end: bool,
    /// Scenario-specific checks that failed (empty: all held).
    pub violations: Vec<String>,
}

impl FaultReport {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.lost == 0
            && self.calls_after_success == 0
            && self.ready_at_end
            && self.violations.is_empty()
    }
}

const RETRY: &str = "max_attempts = 5\nbase_delay_ms = 200\nmax_delay_secs = 2\njitter = 0.2";
/// Provider settings of every fault worker: a short timeout, so that a
/// provider that never answers costs little.
const PROVIDER: &str = "timeout_ms = 1500\nconcurrency = 64\n";
const TERMINAL_DEADLINE: Duration = Duration::from_secs(600);
/// How long the node scenario waits with the node down, once the
/// publishing is over, before it brings the node back.
const NODE_DOWN_WAIT: Duration = Duration::from_secs(120);
/// How long a publish is retried before it counts as failed.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(120);

pub async fn run(only: &[String], size: Size) -> anyhow::Result<Vec<FaultReport>> {
    let mut reports = Vec::new();
    for scenario in SCENARIOS {
        let named = only.iter().any(|s| s == scenario);
        if (!only.is_empty() || scenario == "node-kill") && !named {
            continue;
        }
        eprintln!("faults: {scenario} …");
        let report = scenario_run(scenario, size).await?;
        eprintln!(
            "faults: {scenario}: {} published, {} terminal, {} lost, {} duplicate calls, {} after success{}",
            report.published,
            report.terminal,
            report.lost,
            report.duplicate_calls,
            report.calls_after_success,
            if report.passed() { "" } else { " — FAILED" }
        );
        reports.push(report);
    }
    Ok(reports)
}

async fn scenario_run(scenario: &str, size: Size) -> anyhow::Result<FaultReport> {
    let chaos = match scenario {
        "provider" => Chaos {
            server_error: 0.10,
            throttle: 0.05,
            timeout: 0.03,
            reset: 0.05,
            malformed: 0.03,
            redirect: 0.01,
            slow_body: 0.05,
            huge_body: 0.02,
            latency: Duration::from_millis(1),
            hang: Duration::from_secs(3),
        },
        // Calls take a little while, so that a kill finds some in flight.
        _ => Chaos {
            server_error: 0.02,
            latency: Duration::from_millis(3),
            ..Chaos::default()
        },
    };
    let provider = ChaosProvider::start(chaos)
        .await
        .context("starting the chaos provider")?;
    // The node scenario runs on the three-node cluster, every other on the
    // machine's broker.
    let cluster = scenario
        .starts_with("node")
        .then(Cluster::find)
        .transpose()?;
    let cluster_urls = cluster.as_ref().map(Cluster::urls).transpose()?;
    let mock = courier_provider::MockProvider::start_lean(FailureMix::default())
        .await
        .context("starting the mock provider")?;
    let mut bench = Bench::on_broker(
        &format!("faults_{}", scenario.replace('-', "_")),
        vec!["mockpay".into()],
        mock,
        cluster_urls.as_ref().map(|urls| urls.join(",")).as_deref(),
    )
    .await?;
    bench.provider_url = provider.base_url();
    bench.provider_toml = PROVIDER.to_owned();
    let started = Instant::now();
    let result = match scenario {
        "kill" => kill(&bench, size).await,
        "broker" => outage(&bench, size, Service::RabbitMq).await,
        "database" => outage(&bench, size, Service::PostgreSql).await,
        "provider" => plain(&bench, size).await,
        "hostile" => hostile(&bench, size).await,
        "node" | "node-kill" => match (&cluster, &cluster_urls) {
            (Some(cluster), Some(urls)) => {
                let how = if scenario == "node" {
                    NodeLoss::Stop
                } else {
                    NodeLoss::Kill
                };
                node_loss(&mut bench, size, cluster, urls, how).await
            }
            _ => bail!("the node scenarios have no cluster"),
        },
        other => bail!("no fault scenario {other:?}"),
    };
    // The namespace goes whatever happened; the services are up again (the
    // outage scenarios restore them themselves).
    let audited = match result {
        Ok(run) => audit(&bench, &provider, scenario, run, started.elapsed()).await,
        Err(e) => Err(e),
    };
    let cleaned = bench.cleanup().await;
    let report = audited?;
    cleaned?;
    Ok(report)
}

/// What a scenario hands to the audit.
struct Run {
    ids: Vec<Uuid>,
    unconfirmed: u64,
    faults: u32,
    recovery_seconds: Option<f64>,
    peak_rss_mb: f64,
    worker: WorkerProcess,
    violations: Vec<String>,
}

/// Publishes `count` jobs at `rate`, each retried until it is confirmed or
/// [`PUBLISH_DEADLINE`] passes (then counted, never silently dropped).
async fn publish_steadily(bench: &Bench, count: u64, rate: f64) -> (Vec<Uuid>, u64) {
    let failures = AtomicU64::new(0);
    let start = Instant::now();
    let said = std::sync::Mutex::new(Instant::now() - Duration::from_secs(2));
    let publishes = futures_util::stream::iter(0..count).map(|i| {
        let (failures, said) = (&failures, &said);
        async move {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
            let job = bench_job("mockpay", i as usize);
            let body = job.to_body();
            let mut wait = Duration::from_millis(50);
            let deadline = Instant::now() + PUBLISH_DEADLINE;
            loop {
                match bench
                    .publisher
                    .publish_job(&bench.topology, "mockpay", job.id, &body, None)
                    .await
                {
                    Ok(()) => return Some(job.id),
                    Err(e) if Instant::now() < deadline => {
                        let n = failures.fetch_add(1, Ordering::Relaxed) + 1;
                        let say = {
                            let mut last = said
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            let due = last.elapsed() >= Duration::from_secs(1);
                            if due {
                                *last = Instant::now();
                            }
                            due
                        };
                        if say {
                            eprintln!("  publishes failing ({n} so far, retried): {e}");
                        }
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_millis(500));
                    }
                    Err(_) => return None,
                }
            }
        }
    });
    let results: Vec<Option<Uuid>> = publishes.buffer_unordered(4096).collect().await;
    let ids: Vec<Uuid> = results.iter().flatten().copied().collect();
    let unconfirmed = count - ids.len() as u64;
    (ids, unconfirmed)
}

/// Waits until `ids` are all terminal in PostgreSQL.
async fn wait_terminal(bench: &Bench, ids: &[Uuid]) -> anyhow::Result<()> {
    let deadline = Instant::now() + TERMINAL_DEADLINE;
    let mut last = Instant::now();
    loop {
        let done = bench.store.count_terminal(ids).await.unwrap_or(0);
        if done as usize >= ids.len() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "only {done} of {} jobs terminal after {TERMINAL_DEADLINE:?}",
                ids.len()
            );
        }
        if last.elapsed() > Duration::from_secs(5) {
            eprintln!("  … {done}/{} terminal", ids.len());
            last = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Publish, drain, nothing broken but the provider.
async fn plain(bench: &Bench, size: Size) -> anyhow::Result<Run> {
    let worker = bench.start_worker(RETRY).await?;
    let (ids, unconfirmed) = publish_steadily(bench, size.jobs, size.rate * 4.0).await;
    wait_terminal(bench, &ids).await?;
    Ok(Run {
        ids,
        unconfirmed,
        faults: 0,
        recovery_seconds: None,
        peak_rss_mb: worker.peak_rss_mb()?,
        worker,
        violations: Vec::new(),
    })
}

/// SIGKILL the worker every few seconds while jobs flow, restart it at once.
async fn kill(bench: &Bench, size: Size) -> anyhow::Result<Run> {
    let mut worker = bench.start_worker(RETRY).await?;
    let seconds = size.jobs as f64 / size.rate;
    let every = Duration::from_secs_f64((seconds / f64::from(size.kills + 1)).max(1.0));
    let publishing = publish_steadily(bench, size.jobs, size.rate);
    tokio::pin!(publishing);
    let mut kills = 0;
    let mut peak: f64 = 0.0;
    let mut ticks = tokio::time::interval(every);
    ticks.tick().await;
    let (ids, unconfirmed) = loop {
        tokio::select! {
            done = &mut publishing => break done,
            _ = ticks.tick() => {
                if kills < size.kills {
                    peak = peak.max(worker.peak_rss_mb().unwrap_or(0.0));
                    worker.kill();
                    kills += 1;
                    eprintln!("  kill -9 #{kills}");
                    worker = bench.start_worker(RETRY).await?;
                }
            }
        }
    };
    while kills < size.kills {
        worker.kill();
        kills += 1;
        eprintln!("  kill -9 #{kills} (after publishing)");
        worker = bench.start_worker(RETRY).await?;
    }
    wait_terminal(bench, &ids).await?;
    Ok(Run {
        ids,
        unconfirmed,
        faults: kills,
        recovery_seconds: None,
        peak_rss_mb: peak.max(worker.peak_rss_mb()?),
        worker,
        violations: Vec::new(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    RabbitMq,
    PostgreSql,
}

/// Stops and starts a service of this machine. Needs the rights to.
fn service(which: Service, up: bool) -> anyhow::Result<()> {
    let status = match which {
        Service::RabbitMq => {
            let status = Command::new("rabbitmqctl")
                .arg("-q")
                .arg(if up { "start_app" } else { "stop_app" })
                .status()
                .context("running rabbitmqctl")?;
            if up && status.success() {
                Command::new("rabbitmqctl")
                    .args(["-q", "await_startup"])
                    .status()
                    .context("running rabbitmqctl await_startup")?
            } else {
                status
            }
        }
        Service::PostgreSql => {
            let version = std::fs::read_dir("/etc/postgresql")
                .context("finding the PostgreSQL cluster")?
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .max()
                .context("no PostgreSQL cluster in /etc/postgresql")?;
            Command::new("pg_ctlcluster")
                .args(["--skip-systemctl-redirect", &version, "main"])
                .arg(if up { "start" } else { "stop" })
                .args(if up { &[][..] } else { &["-m", "fast"][..] })
                .status()
                .context("running pg_ctlcluster")?
        }
    };
    if !status.success() {
        bail!("{which:?} {}: {status}", if up { "start" } else { "stop" });
    }
    Ok(())
}

/// Starts the service again when dropped, whatever happened in between.
struct Restore(Service, bool);

impl Drop for Restore {
    fn drop(&mut self) {
        if !self.1
            && let Err(e) = service(self.0, true)
        {
            eprintln!("faults: could not start {:?} again: {e}", self.0);
        }
    }
}

/// Stops RabbitMQ or PostgreSQL for `size.outage` while jobs are published
/// steadily, then measures how long the worker takes to get back to the
/// offered rate.
async fn outage(bench: &Bench, size: Size, which: Service) -> anyhow::Result<Run> {
    let mut worker = bench.start_worker(RETRY).await?;
    let total = size.jobs as f64 / size.rate;
    let publishing = publish_steadily(bench, size.jobs, size.rate);
    tokio::pin!(publishing);
    // Terminal outcomes over time, from the worker's own counter (which
    // answers while PostgreSQL is away).
    let mut progress = Vec::<(Instant, u64)>::new();
    let mut peak: f64 = 0.0;
    let fault_at = Instant::now() + Duration::from_secs_f64(total / 3.0);
    let mut restore: Option<Restore> = None;
    let mut back_at: Option<Instant> = None;
    let mut samples = tokio::time::interval(Duration::from_millis(250));
    let (ids, unconfirmed) = loop {
        tokio::select! {
            done = &mut publishing => break done,
            _ = samples.tick() => {
                sample(&mut worker, &mut progress).await;
                peak = peak.max(worker.rss_mb().unwrap_or(0.0));
                if restore.is_none() && back_at.is_none() && Instant::now() >= fault_at {
                    eprintln!("  stopping {which:?} for {:?}", size.outage);
                    let stop = tokio::task::spawn_blocking(move || service(which, false));
                    stop.await??;
                    restore = Some(Restore(which, false));
                }
                if let Some(r) = restore.as_mut()
                    && Instant::now() >= fault_at + size.outage
                {
                    // "Back" is when the port accepts connections again, not
                    // when the start command returns (it waits longer).
                    let starting = tokio::task::spawn_blocking(move || service(which, true));
                    let port = match which {
                        Service::RabbitMq => 5672,
                        Service::PostgreSql => 5432,
                    };
                    let mut open = None;
                    while open.is_none() && !starting.is_finished() {
                        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                            open = Some(Instant::now());
                        } else {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    starting.await??;
                    r.1 = true;
                    restore = None;
                    back_at = Some(open.unwrap_or_else(Instant::now));
                    eprintln!("  {which:?} is back");
                }
            }
        }
    };
    drop(restore);
    sample_until_terminal(bench, &mut worker, &ids, &mut progress).await?;
    let recovery = back_at.and_then(|back| back_to_rate(&progress, back, size.rate));
    let mut violations = Vec::new();
    if back_at.is_none() {
        violations.push(format!(
            "the {which:?} outage never happened: the publishing ended first"
        ));
    }
    peak = peak.max(worker.peak_rss_mb().unwrap_or(0.0));
    Ok(Run {
        ids,
        unconfirmed,
        faults: u32::from(back_at.is_some()),
        recovery_seconds: recovery,
        peak_rss_mb: peak,
        worker,
        violations,
    })
}

/// The three-node RabbitMQ cluster of `scripts/cluster`, which the node
/// scenario runs on and stops a node of. scripts/faults starts it and names
/// the script in `COURIER_CLUSTER_SCRIPT`.
#[derive(Debug, Clone)]
struct Cluster {
    script: PathBuf,
}

impl Cluster {
    fn find() -> anyhow::Result<Cluster> {
        let script = std::env::var_os("COURIER_CLUSTER_SCRIPT")
            .map_or_else(|| PathBuf::from("scripts/cluster"), PathBuf::from);
        if !script.is_file() {
            bail!(
                "the node scenario runs on the three-node cluster of scripts/cluster: run it \
                 through scripts/faults, or set COURIER_CLUSTER_SCRIPT to that script"
            );
        }
        let cluster = Cluster { script };
        cluster.run(&["status"]).context(
            "the node scenario needs all three nodes of the cluster up: scripts/cluster start",
        )?;
        Ok(cluster)
    }

    /// Runs the script with `args`; its stdout, trimmed.
    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.script)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running {}", self.script.display()))?;
        if !out.status.success() {
            bail!("scripts/cluster {}: {}", args.join(" "), out.status);
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The nodes' AMQP URLs, node 1 first.
    fn urls(&self) -> anyhow::Result<Vec<String>> {
        Ok(self.run(&["urls"])?.lines().map(str::to_owned).collect())
    }

    /// The node (0-based) holding the leader of the quorum queue `queue`.
    fn leader(&self, queue: &str) -> anyhow::Result<usize> {
        let name = self.run(&["leader", queue])?;
        name.strip_prefix("courier-c")
            .and_then(|rest| rest.split('@').next())
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| n.checked_sub(1))
            .with_context(|| format!("scripts/cluster leader answered {name:?}"))
    }
}

/// Starts a stopped node of the cluster again when dropped, whatever
/// happened in between (the namespace's teardown is slow with a member
/// of every quorum queue away).
struct NodeBack(Cluster, Option<usize>);

impl NodeBack {
    fn start(&mut self) -> anyhow::Result<()> {
        match self.1.take() {
            Some(node) => self
                .0
                .run(&["start-node", &(node + 1).to_string()])
                .map(drop),
            None => Ok(()),
        }
    }
}

impl Drop for NodeBack {
    fn drop(&mut self) {
        if let Err(e) = self.start() {
            eprintln!("faults: could not start the cluster's node again: {e}");
        }
    }
}

/// How the node is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeLoss {
    /// A graceful shutdown: the node hands its leaders over, then closes
    /// its connections.
    Stop,
    /// SIGKILL of the node's VM: connections drop at once, and the others
    /// notice and elect.
    Kill,
}

/// Loses the node holding the leader of the work queue, which is also the
/// node the worker is connected to, a third into a steady publish: the
/// queue elects a leader on a node left, the worker connects to the next
/// node. The bench's publisher connected to a node at random, so in some
/// runs it loses its node too, as an upstream service would. Measures from
/// the loss until the worker last completed under the offered rate; the
/// node comes back only after every job is terminal.
async fn node_loss(
    bench: &mut Bench,
    size: Size,
    cluster: &Cluster,
    urls: &[String],
    how: NodeLoss,
) -> anyhow::Result<Run> {
    let queue = bench.topology.work_queue("mockpay");
    let leader = leader_of(cluster, &queue, None).await?;
    let listed: Vec<&str> = (0..urls.len())
        .map(|i| urls[(leader + i) % urls.len()].as_str())
        .collect();
    bench.worker_env.push((
        courier_core::config::ENV_AMQP_URL.to_owned(),
        listed.join(","),
    ));
    bench.broker_toml = "connect_order = \"listed\"".to_owned();
    let bench = &*bench;
    let mut worker = bench.start_worker(RETRY).await?;
    let total = size.jobs as f64 / size.rate;
    let publishing = publish_steadily(bench, size.jobs, size.rate);
    tokio::pin!(publishing);
    let mut progress = Vec::<(Instant, u64)>::new();
    let mut peak: f64 = 0.0;
    let fault_at = Instant::now() + Duration::from_secs_f64(total / 3.0);
    let mut back = NodeBack(cluster.clone(), None);
    let mut stopping = None;
    let mut lost_at = None;
    let mut samples = tokio::time::interval(Duration::from_millis(250));
    let (ids, unconfirmed) = loop {
        tokio::select! {
            done = &mut publishing => break done,
            _ = samples.tick() => {
                sample(&mut worker, &mut progress).await;
                peak = peak.max(worker.rss_mb().unwrap_or(0.0));
                if lost_at.is_none() && Instant::now() >= fault_at {
                    eprintln!("  {how:?} of node {} (leader of {queue}, the worker's node)", leader + 1);
                    lost_at = Some(Instant::now());
                    back.1 = Some(leader);
                    let cluster = cluster.clone();
                    let node = (leader + 1).to_string();
                    let verb = match how {
                        NodeLoss::Stop => "stop-node",
                        NodeLoss::Kill => "kill-node",
                    };
                    stopping = Some(tokio::task::spawn_blocking(move || {
                        let clock = Instant::now();
                        cluster.run(&[verb, &node]).map(|_| clock.elapsed())
                    }));
                }
            }
        }
    };
    let published_by = Instant::now();
    let mut violations = Vec::new();
    match stopping {
        Some(stop) => {
            let took = stop.await??;
            match leader_of(cluster, &queue, Some(leader)).await {
                Ok(now) => eprintln!(
                    "  node {} down ({how:?} took {:.1} s); {queue} leads on node {}",
                    leader + 1,
                    took.as_secs_f64(),
                    now + 1
                ),
                Err(e) => violations.push(format!("no new leader for {queue}: {e}")),
            }
        }
        None => violations.push("the node loss never happened: the publishing ended first".into()),
    }
    // Most jobs finish with the node down. Retries parked in a delay queue
    // whose dead-lettering ran on the lost node may wait for it (RabbitMQ
    // 3.10's at-least-once dead-lettering: two CI runs stuck with 22 jobs
    // `retrying` and no message ready anywhere): after NODE_DOWN_WAIT the
    // node comes back, as after any maintenance, and what was parked is
    // said, with where the namespace's messages are.
    let parked =
        sample_until_terminal_within(bench, &mut worker, &ids, &mut progress, NODE_DOWN_WAIT).await;
    if parked > 0 && back.1.is_some() {
        let live = (leader + 1) % urls.len() + 1;
        let queues = cluster
            .run(&[
                "ctl",
                &live.to_string(),
                "list_queues",
                "name",
                "type",
                "leader",
                "messages",
                "messages_ready",
                "messages_unacknowledged",
            ])
            .unwrap_or_else(|e| format!("(could not list the queues: {e})"));
        eprintln!(
            "  {parked} jobs not terminal {NODE_DOWN_WAIT:?} into the outage; the namespace's queues on node {live}:"
        );
        for line in queues
            .lines()
            .filter(|l| l.contains(bench.topology.namespace()))
        {
            eprintln!("    {line}");
        }
        let cluster = cluster.clone();
        let node = (leader + 1).to_string();
        tokio::task::spawn_blocking(move || cluster.run(&["start-node", &node])).await??;
        back.1 = None;
        eprintln!("  node {} back; waiting for the parked jobs", leader + 1);
    }
    sample_until_terminal(bench, &mut worker, &ids, &mut progress).await?;
    // The stop closes the node's connections only after it hands its
    // leaders over, seconds in: the dip comes late, so this measures until
    // the last second below the rate, not until the first at it.
    let recovery = lost_at.and_then(|lost| {
        say_timeline(&progress, lost);
        last_below_rate(&progress, lost..published_by, size.rate)
    });
    let restarting = tokio::task::spawn_blocking(move || back.start());
    restarting.await??;
    Ok(Run {
        ids,
        unconfirmed,
        faults: u32::from(lost_at.is_some()),
        recovery_seconds: recovery,
        peak_rss_mb: peak.max(worker.peak_rss_mb().unwrap_or(0.0)),
        worker,
        violations,
    })
}

/// The node (0-based) leading `queue`, other than `lost`, asked for up to
/// half a minute (a new queue's or an election's leader takes a moment to
/// show in the management API).
async fn leader_of(cluster: &Cluster, queue: &str, lost: Option<usize>) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (asked, name) = (cluster.clone(), queue.to_owned());
        let answer = tokio::task::spawn_blocking(move || asked.leader(&name)).await?;
        match answer {
            Ok(node) if Some(node) != lost => return Ok(node),
            Ok(_) if Instant::now() > deadline => bail!("still on the lost node"),
            Err(e) if Instant::now() > deadline => return Err(e),
            _ => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// Seconds from the start of `span` (the fault) to the end of the last
/// one-second window within it that completed under 90 % of `rate` (0:
/// none did; `None`: the span's last window was still under it, so the
/// rate never came back while there was work). The span ends with the
/// publishing: after it the work runs out, and the rate with it.
fn last_below_rate(
    progress: &[(Instant, u64)],
    span: std::ops::Range<Instant>,
    rate: f64,
) -> Option<f64> {
    let mut until = span.start;
    let mut last_window_below = false;
    for (i, &(t, n)) in progress.iter().enumerate() {
        let window_start = progress[..i]
            .iter()
            .rev()
            .find(|(u, _)| t.duration_since(*u) >= Duration::from_secs(1));
        if let Some(&(u, m)) = window_start
            && u >= span.start
            && t <= span.end
            && (n.saturating_sub(m) as f64) < 0.9 * rate * t.duration_since(u).as_secs_f64()
        {
            until = t;
            last_window_below = true;
        } else if t <= span.end && window_start.is_some_and(|(u, _)| *u >= span.start) {
            last_window_below = false;
        }
    }
    (!last_window_below).then(|| until.duration_since(span.start).as_secs_f64())
}

/// Outcomes per second from `from` on, on stderr: what a reader of the
/// report needs to see the dip.
fn say_timeline(progress: &[(Instant, u64)], from: Instant) {
    let mut line = String::from("  outcomes per second after the fault:");
    let mut mark = progress.iter().find(|(t, _)| *t >= from).copied();
    for &(t, n) in progress {
        if let Some((u, m)) = mark
            && t.duration_since(u) >= Duration::from_secs(1)
        {
            line.push_str(&format!(" {}", n.saturating_sub(m)));
            mark = Some((t, n));
            if line.len() > 400 {
                break;
            }
        }
    }
    eprintln!("{line}");
}

/// Adds the worker's terminal outcomes so far to `progress`. A failed
/// sample is skipped: a 0 would read as a dip.
async fn sample(worker: &mut WorkerProcess, progress: &mut Vec<(Instant, u64)>) {
    if let Ok(done) = worker.terminal_outcomes().await {
        progress.push((Instant::now(), done));
    }
}

/// Keeps sampling every 250 ms until `ids` are all terminal in PostgreSQL.
async fn sample_until_terminal(
    bench: &Bench,
    worker: &mut WorkerProcess,
    ids: &[Uuid],
    progress: &mut Vec<(Instant, u64)>,
) -> anyhow::Result<()> {
    let left = sample_until_terminal_within(bench, worker, ids, progress, TERMINAL_DEADLINE).await;
    if left > 0 {
        bail!("{left} jobs still not terminal after {TERMINAL_DEADLINE:?}");
    }
    Ok(())
}

/// Samples until every job of `ids` is terminal or `limit` passed; the
/// jobs still not terminal then (0: all are).
async fn sample_until_terminal_within(
    bench: &Bench,
    worker: &mut WorkerProcess,
    ids: &[Uuid],
    progress: &mut Vec<(Instant, u64)>,
    limit: Duration,
) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        sample(worker, progress).await;
        let done = bench.store.count_terminal(ids).await.unwrap_or(0) as usize;
        if done >= ids.len() || Instant::now() > deadline {
            return ids.len().saturating_sub(done);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Seconds from `back` until a one-second window first completes at least
/// 90 % of `rate` (or the work runs out: everything published is done).
fn back_to_rate(progress: &[(Instant, u64)], back: Instant, rate: f64) -> Option<f64> {
    let after: Vec<&(Instant, u64)> = progress.iter().filter(|(t, _)| *t >= back).collect();
    let last = after.last()?.1;
    for (i, (t, n)) in after.iter().enumerate() {
        if let Some((_, later)) = after[i..]
            .iter()
            .find(|(u, _)| u.duration_since(*t) >= Duration::from_secs(1))
        {
            if later.saturating_sub(*n) as f64 >= 0.9 * rate {
                return Some(t.duration_since(back).as_secs_f64());
            }
        } else if *n == last {
            return Some(t.duration_since(back).as_secs_f64());
        }
    }
    None
}

/// Normal jobs with every hostile input of issue 9 mixed in.
async fn hostile(bench: &Bench, size: Size) -> anyhow::Result<Run> {
    let worker = bench.start_worker(RETRY).await?;
    let mut raw = RawPublisher::connect_url(bench.config.broker.first_url())
        .await
        .context("connecting the hostile publisher")?;
    let exchange = bench.topology.jobs_exchange();
    let mut violations = Vec::new();
    // (message id, the reason its dead letter must give)
    let mut expected_dead: Vec<(String, &str)> = Vec::new();
    let mut forged: Vec<Uuid> = Vec::new();
    let mut unreadable = 0;
    let normal = size.jobs;
    let mut ids = Vec::new();
    let every = (normal / 40).max(1);
    for i in 0..normal {
        let job = bench_job("mockpay", i as usize);
        bench
            .publisher
            .publish_job(&bench.topology, "mockpay", job.id, &job.to_body(), None)
            .await?;
        ids.push(job.id);
        if i % every != 0 {
            continue;
        }
        let n = (i / every) as usize;
        let mut message = Message {
            content_type: Some(b"application/json".to_vec()),
            persistent: true,
            ..Message::default()
        };
        let mut v = serde_json::to_value(bench_job("mockpay", 1_000_000 + n))?;
        let id = v["id"].as_str().unwrap_or_default().to_owned();
        message.message_id = Some(id.clone().into_bytes());
        let reason = match n % 10 {
            0 => {
                v["idempotency_key"] = "k\u{0}".into();
                "invalid"
            }
            1 => {
                v["\u{0}"] = 1.into();
                "invalid"
            }
            2 => {
                v["payload"]["customer"] = "..".into();
                "invalid"
            }
            3 => {
                v["x".repeat(140_000)] = 1.into();
                "invalid"
            }
            4 => {
                v["payload"]["blob"] = "y".repeat(300_000).into();
                "invalid"
            }
            5 => {
                v["idempotency_key"] = "a\r\nInjected: 1".into();
                "invalid"
            }
            6 => {
                // A different job under the id of one already published.
                v["id"] = ids[0].to_string().into();
                message.message_id = Some(ids[0].to_string().into_bytes());
                v["payload"]["amount"] = 1.into();
                "conflict"
            }
            7 => {
                message.headers = vec![
                    (b"x-courier-run-base".to_vec(), Value::Int(1_000)),
                    (b"x-courier-attempts".to_vec(), Value::Int(99)),
                    (b"x-delivery-count".to_vec(), Value::Int(50)),
                    (b"traceparent".to_vec(), Value::Text(vec![b'0'; 60_000])),
                ];
                "forged"
            }
            8 => {
                message.message_id = Some(vec![0xff, 0xfe, b'x']);
                "unreadable"
            }
            _ => {
                message.body = b"{not json".to_vec();
                "invalid"
            }
        };
        if message.body.is_empty() {
            message.body = serde_json::to_vec(&v)?;
        }
        match raw.publish(&exchange, b"mockpay", &message).await? {
            Broker::Ack => {}
            other => violations.push(format!(
                "the broker refused a hostile message ({reason}): {other:?}"
            )),
        }
        match reason {
            "forged" => forged.push(id.parse()?),
            "unreadable" => unreadable += 1,
            "conflict" => expected_dead.push((ids[0].to_string(), "invalid")),
            reason => expected_dead.push((id, reason)),
        }
    }
    ids.extend(&forged);
    wait_terminal(bench, &ids).await?;
    // Each hostile message ends as a dead letter with its reason…
    let wanted: Vec<String> = expected_dead.iter().map(|(id, _)| id.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let found = loop {
        let found = bench.store.dead_letters_by_message(&wanted).await?;
        if found.len() >= wanted.len() || Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (id, reason) in &expected_dead {
        if !found.iter().any(|(m, r)| m == id && r == reason) {
            violations.push(format!("no {reason} dead letter for message {id}"));
        }
    }
    // … the forged ones ran as ordinary jobs, on their first attempt …
    for summary in bench.store.summaries(&forged).await? {
        if summary.state != "succeeded" && summary.attempts > 5 {
            violations.push(format!(
                "forged job {} made {} attempts",
                summary.id, summary.attempts
            ));
        }
    }
    // … and the unreadable ones reach the dead-letter queue by the broker.
    let dead_queue = bench.topology.dead_queue(Some("mockpay"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let dlq = courier_amqp::topology::message_count(&bench.channel, &dead_queue).await?;
        if dlq as usize >= expected_dead.len() + unreadable {
            break;
        }
        if Instant::now() > deadline {
            violations.push(format!(
                "{dlq} messages in {dead_queue}, expected {} (including {unreadable} unreadable)",
                expected_dead.len() + unreadable
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(Run {
        ids,
        unconfirmed: 0,
        faults: (expected_dead.len() + forged.len() + unreadable) as u32,
        recovery_seconds: None,
        peak_rss_mb: worker.peak_rss_mb()?,
        worker,
        violations,
    })
}

/// Checks the invariants of a finished run.
async fn audit(
    bench: &Bench,
    provider: &ChaosProvider,
    scenario: &str,
    run: Run,
    took: Duration,
) -> anyhow::Result<FaultReport> {
    let summaries = bench.store.summaries(&run.ids).await?;
    let mut calls: HashMap<String, Vec<DateTime<Utc>>> = HashMap::new();
    for call in provider.calls() {
        if let Some(key) = call.idempotency_key {
            calls.entry(key).or_default().push(call.at);
        }
    }
    let (mut terminal, mut succeeded, mut dead, mut attempts, mut duplicates, mut after) =
        (0, 0, 0, 0, 0, 0);
    let mut provider_calls = 0;
    for s in &summaries {
        let seen = calls.get(&s.id.to_string()).map_or(&[][..], Vec::as_slice);
        provider_calls += seen.len() as u64;
        attempts += u64::try_from(s.attempts).unwrap_or(0);
        duplicates += (seen.len() as u64).saturating_sub(u64::try_from(s.attempts).unwrap_or(0));
        match s.state.as_str() {
            "succeeded" => {
                succeeded += 1;
                terminal += 1;
                if let Some(finished) = s.finished_at {
                    after += seen.iter().filter(|at| **at > finished).count() as u64;
                }
            }
            "dead" => {
                dead += 1;
                terminal += 1;
            }
            _ => {}
        }
    }
    let ready = run.worker.alive_and_ready().await;
    let mut violations = run.violations;
    if scenario != "kill" && duplicates > 0 {
        violations.push(format!(
            "{duplicates} duplicate calls without a crash to explain them"
        ));
    }
    let log = std::fs::read_to_string(run.worker.log_path()).unwrap_or_default();
    if log.contains("panicked") {
        violations.push("the worker panicked (see its log)".into());
    }
    run.worker.stop().await.context("stopping the worker")?;
    Ok(FaultReport {
        scenario: scenario.to_owned(),
        published: run.ids.len() as u64,
        unconfirmed: run.unconfirmed,
        terminal,
        lost: run.ids.len() as u64 - terminal,
        succeeded,
        dead,
        provider_calls,
        attempts_recorded: attempts,
        duplicate_calls: duplicates,
        calls_after_success: after,
        faults: run.faults,
        recovery_seconds: run.recovery_seconds,
        worker_peak_rss_mb: run.peak_rss_mb,
        seconds: took.as_secs_f64(),
        ready_at_end: ready,
        violations,
    })
}

pub fn print(reports: &[FaultReport]) {
    println!(
        "{:<9} {:>9} {:>8} {:>5} {:>9} {:>6} {:>7} {:>7} {:>6} {:>8} {:>7} {:>6} {:>7}  result",
        "scenario",
        "published",
        "terminal",
        "lost",
        "succeeded",
        "dead",
        "calls",
        "dupl.",
        "after",
        "faults",
        "recov s",
        "rss",
        "time s"
    );
    for r in reports {
        println!(
            "{:<9} {:>9} {:>8} {:>5} {:>9} {:>6} {:>7} {:>7} {:>6} {:>8} {:>7} {:>6.1} {:>7.1}  {}",
            r.scenario,
            r.published,
            r.terminal,
            r.lost,
            r.succeeded,
            r.dead,
            r.provider_calls,
            r.duplicate_calls,
            r.calls_after_success,
            r.faults,
            r.recovery_seconds
                .map_or("-".to_owned(), |s| format!("{s:.1}")),
            r.worker_peak_rss_mb,
            r.seconds,
            if r.passed() {
                "ok".to_owned()
            } else {
                format!("FAILED: {}", r.violations.join("; "))
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples every 250 ms of a run that completes `per_second[i]` outcomes
    /// in second `i`, evenly.
    fn progress(start: Instant, per_second: &[u64]) -> Vec<(Instant, u64)> {
        let mut samples = vec![(start, 0)];
        let mut done = 0;
        for (second, n) in per_second.iter().enumerate() {
            for quarter in 1..=4u32 {
                done += n / 4;
                let at = start
                    + Duration::from_secs(second as u64)
                    + Duration::from_millis(250) * quarter;
                samples.push((at, done));
            }
        }
        samples
    }

    #[test]
    fn a_run_that_never_dips_recovers_at_once() {
        let start = Instant::now();
        let p = progress(start, &[1000; 10]);
        let end = start + Duration::from_secs(10);
        assert_eq!(last_below_rate(&p, start..end, 1000.0), Some(0.0));
    }

    #[test]
    fn recovery_ends_with_the_last_second_under_the_rate() {
        let start = Instant::now();
        let p = progress(start, &[1000, 1000, 1000, 200, 1800, 1000, 1000, 1000]);
        let end = start + Duration::from_secs(8);
        let recovered = last_below_rate(&p, start..end, 1000.0).unwrap_or(f64::NAN);
        // The last window holding part of second 3 ends inside second 4.
        assert!((4.0..=5.0).contains(&recovered), "{recovered}");
    }

    #[test]
    fn the_tail_after_the_publishing_is_not_a_dip() {
        let start = Instant::now();
        let p = progress(start, &[1000, 1000, 1000, 1000, 0, 0, 0]);
        let end = start + Duration::from_secs(4);
        assert_eq!(last_below_rate(&p, start..end, 1000.0), Some(0.0));
    }

    #[test]
    fn a_rate_that_never_returns_is_no_recovery() {
        let start = Instant::now();
        let p = progress(start, &[1000, 1000, 300, 300, 300, 300]);
        let end = start + Duration::from_secs(6);
        assert_eq!(last_below_rate(&p, start..end, 1000.0), None);
    }
}
