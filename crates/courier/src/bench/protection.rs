//! `courier bench ratelimit | isolation | overhead | outage`: provider
//! protection measured with real worker processes.
//!
//! Owns these scenarios' scripts and reports. `ratelimit` runs against a
//! mock that enforces exactly the configured limit and counts what it
//! refuses; `isolation` puts a provider that never answers beside a healthy
//! one; `overhead` alternates drains with and without a limit far above
//! the achievable rate; `outage` takes the provider down for a while under
//! a steady flow and follows its circuit from PostgreSQL.

use super::harness::{self, Bench, RunResult};
use super::{RETRY, TERMINAL_TIMEOUT};
use chrono::{DateTime, Utc};
use courier_core::circuit::CircuitState;
use courier_provider::{Enforced, FailureMix, MockProvider};
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Serialize)]
pub struct RateLimitRun {
    pub processes: usize,
    pub configured_per_second: f64,
    pub burst: u32,
    pub jobs: u64,
    /// First to last call.
    pub seconds: f64,
    /// Calls beyond the burst over `seconds`.
    pub achieved_per_second: f64,
    /// Calls the provider refused with 429 for going over its limit.
    pub refused_429: usize,
    /// Rate-limit leases (one `UPDATE … RETURNING` each).
    pub leases: i64,
    /// Reads of the shared provider state.
    pub state_reads: i64,
    pub statements_per_second: f64,
    pub worker_cpu_seconds_per_1000_jobs: f64,
}

/// One limit shared by `processes` worker processes, against a provider
/// enforcing it (with `slack` more calls of burst), for about `seconds`.
pub async fn ratelimit(
    per_second: f64,
    burst: u32,
    slack: u32,
    seconds: u64,
    processes: &[usize],
) -> anyhow::Result<Vec<RateLimitRun>> {
    let mut runs = Vec::new();
    for &n in processes {
        let mock = MockProvider::start_enforcing(
            FailureMix::default(),
            Enforced {
                per_second,
                burst: burst + slack,
            },
            false,
        )
        .await?;
        let mut bench = Bench::with_mock("ratelimit", vec!["mockpay".into()], mock).await?;
        bench.provider_tables = format!(
            "[providers.{{provider}}.rate_limit]\nper_second = {per_second}\nburst = {burst}\n"
        );
        let result = ratelimit_in(&bench, per_second, burst, seconds, n).await;
        bench.cleanup().await?;
        runs.push(result?);
    }
    Ok(runs)
}

async fn ratelimit_in(
    bench: &Bench,
    per_second: f64,
    burst: u32,
    seconds: u64,
    processes: usize,
) -> anyhow::Result<RateLimitRun> {
    let jobs = (per_second * seconds as f64) as u64 + u64::from(burst);
    eprintln!(
        "ratelimit: {jobs} jobs at {per_second}/s (burst {burst}), {processes} process(es) …"
    );
    bench.publish(jobs as usize).await?;
    let mut workers = Vec::new();
    for _ in 0..processes {
        workers.push(bench.start_worker(RETRY).await?);
    }
    bench
        .wait_terminal(&mut workers, 0, jobs, TERMINAL_TIMEOUT)
        .await?;
    let mut cpu = 0.0;
    for w in &workers {
        cpu += w.cpu_seconds()?;
    }
    for w in workers {
        w.stop().await?;
    }
    let (calls, first, last) = bench.store.attempt_span().await?;
    let span = match (first, last) {
        (Some(a), Some(b)) => (b - a).as_seconds_f64(),
        _ => anyhow::bail!("ratelimit: no attempts recorded"),
    };
    // Sessions flush their statistics when they end: the workers have.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (leases, state_reads) = bench.store.coordination_statements().await?;
    Ok(RateLimitRun {
        processes,
        configured_per_second: per_second,
        burst,
        jobs,
        seconds: span,
        achieved_per_second: (calls - i64::from(burst)) as f64 / span,
        refused_429: bench.mock.refused(),
        leases,
        state_reads,
        statements_per_second: (leases + state_reads) as f64 / span,
        worker_cpu_seconds_per_1000_jobs: cpu / jobs as f64 * 1000.0,
    })
}

pub fn print_ratelimit(runs: &[RateLimitRun]) {
    println!(
        "{:>9} {:>11} {:>6} {:>7} {:>8} {:>11} {:>7} {:>6} {:>7} {:>7} {:>8} {:>9}",
        "processes",
        "configured",
        "burst",
        "jobs",
        "seconds",
        "achieved/s",
        "ratio",
        "429s",
        "leases",
        "reads",
        "stmts/s",
        "cpu s/1k"
    );
    for r in runs {
        println!(
            "{:>9} {:>11.1} {:>6} {:>7} {:>8.1} {:>11.2} {:>7.3} {:>6} {:>7} {:>7} {:>8.1} {:>9.3}",
            r.processes,
            r.configured_per_second,
            r.burst,
            r.jobs,
            r.seconds,
            r.achieved_per_second,
            r.achieved_per_second / r.configured_per_second,
            r.refused_429,
            r.leases,
            r.state_reads,
            r.statements_per_second,
            r.worker_cpu_seconds_per_1000_jobs
        );
    }
}

/// A healthy provider drained alone, then beside one whose every call
/// times out.
pub async fn isolation(jobs: u64, stuck_jobs: u64) -> anyhow::Result<Vec<RunResult>> {
    let mut runs = Vec::new();
    for stuck in [0, stuck_jobs] {
        let mut bench = Bench::new(
            "isolation",
            vec!["healthy".into(), "stuck".into()],
            FailureMix::default(),
        )
        .await?;
        let hanging = MockProvider::start_lean(FailureMix {
            timeout: 1.0,
            hang: Duration::from_secs(60),
            ..FailureMix::default()
        })
        .await?;
        bench.urls.insert("stuck".into(), hanging.base_url());
        bench.provider_toml = "timeout_ms = 1000".into();
        let result = isolation_in(&bench, jobs, stuck).await;
        drop(hanging);
        bench.cleanup().await?;
        runs.push(result?);
    }
    Ok(runs)
}

async fn isolation_in(bench: &Bench, jobs: u64, stuck: u64) -> anyhow::Result<RunResult> {
    let label = if stuck == 0 {
        "healthy alone".to_owned()
    } else {
        format!("beside {stuck} timing out")
    };
    eprintln!("isolation: {label}: publishing …");
    let from = Utc::now();
    publish_to(bench, "stuck", stuck).await?;
    publish_to(bench, "healthy", jobs).await?;
    let to = Utc::now();
    let mut worker = bench.start_worker(RETRY).await?;
    bench
        .wait_terminal(std::slice::from_mut(&mut worker), 0, jobs, TERMINAL_TIMEOUT)
        .await?;
    let cpu = worker.cpu_seconds()?;
    let rss = worker.peak_rss_mb()?;
    worker.stop().await?;
    bench
        .result(&label, jobs, from, to, None, cpu, rss, 1)
        .await
}

async fn publish_to(bench: &Bench, provider: &str, count: u64) -> anyhow::Result<()> {
    use futures_util::StreamExt as _;
    let publishes = futures_util::stream::iter(0..count as usize).map(|i| async move {
        let job = harness::bench_job(provider, i);
        bench
            .publisher
            .publish_job(&bench.topology, provider, job.id, &job.to_body(), None)
            .await
    });
    let mut results = publishes.buffer_unordered(256);
    while let Some(r) = results.next().await {
        r?;
    }
    Ok(())
}

/// Drains without a limit and with one far above the achievable rate,
/// alternating, `rounds` times each.
pub async fn overhead(jobs: u64, rounds: usize) -> anyhow::Result<Vec<RunResult>> {
    let mut runs = Vec::new();
    for round in 1..=rounds {
        for limited in [false, true] {
            let mut bench =
                Bench::new("overhead", vec!["mockpay".into()], FailureMix::default()).await?;
            if limited {
                bench.provider_tables =
                    "[providers.{provider}.rate_limit]\nper_second = 1000000.0\nburst = 1000\n"
                        .into();
            }
            let label = format!(
                "{} (round {round})",
                if limited {
                    "limit 1,000,000/s"
                } else {
                    "no limit"
                }
            );
            let result = drain_once(&bench, &label, jobs).await;
            bench.cleanup().await?;
            runs.push(result?);
        }
    }
    Ok(runs)
}

async fn drain_once(bench: &Bench, label: &str, jobs: u64) -> anyhow::Result<RunResult> {
    eprintln!("{label}: publishing {jobs} jobs …");
    let from = Utc::now();
    bench.publish(jobs as usize).await?;
    let to = Utc::now();
    harness::wait_for_quiet_host(Duration::from_secs(60)).await?;
    let machine_before = harness::machine_cpu_seconds()?;
    let mut worker = bench.start_worker(RETRY).await?;
    bench
        .wait_terminal(std::slice::from_mut(&mut worker), 0, jobs, TERMINAL_TIMEOUT)
        .await?;
    let machine = harness::machine_cpu_seconds()? - machine_before;
    let cpu = worker.cpu_seconds()?;
    let rss = worker.peak_rss_mb()?;
    worker.stop().await?;
    let mut run = bench
        .result(label, jobs, from, to, None, cpu, rss, 1)
        .await?;
    run.machine_cpu_seconds_per_1000_jobs = machine / jobs as f64 * 1000.0;
    Ok(run)
}

/// How long after a circuit opens a call may still start that was admitted
/// before.
const IN_FLIGHT: chrono::Duration = chrono::Duration::milliseconds(100);

#[derive(Debug, Serialize)]
pub struct OutageReport {
    pub offered_per_second: f64,
    pub published: u64,
    pub down_seconds: f64,
    pub succeeded: i64,
    pub dead: i64,
    /// Calls while the provider was down, and how many of them were probes.
    pub calls_while_down: i64,
    /// Calls started while the circuit was open (probes go half-open),
    /// leaving out its first [`IN_FLIGHT`]: calls admitted before it opened
    /// (probes handed out in a half-open moment before a failed one
    /// reopened it, calls another worker had admitted) start just after.
    pub calls_while_open: i64,
    /// Circuit transitions, seconds from the outage's start.
    pub timeline: Vec<(f64, String)>,
    /// From the provider's return to the circuit closed.
    pub recovery_to_closed_seconds: Option<f64>,
    /// From the provider's return to every job published before it done:
    /// the backlog the outage left drained.
    pub recovery_to_backlog_drained_seconds: Option<f64>,
    pub most_attempts_of_a_job: i64,
}

/// `rate` jobs/s for `before + down + after` seconds; the provider answers
/// 503 to every call for `down` seconds in between.
pub async fn outage(
    rate: f64,
    before: u64,
    down: u64,
    after: u64,
    open_secs: u64,
) -> anyhow::Result<OutageReport> {
    let mut bench = Bench::new("outage", vec!["mockpay".into()], FailureMix::default()).await?;
    bench.provider_tables = format!("[providers.{{provider}}.circuit]\nopen_secs = {open_secs}\n");
    let result = outage_in(&bench, rate, before, down, after).await;
    bench.cleanup().await?;
    result
}

async fn outage_in(
    bench: &Bench,
    rate: f64,
    before: u64,
    down: u64,
    after: u64,
) -> anyhow::Result<OutageReport> {
    let mut worker = bench.start_worker(RETRY).await?;
    let total = Duration::from_secs(before + down + after);
    eprintln!("outage: {rate}/s for {total:?}, the provider down from {before} s for {down} s …");
    let (watching, stop_watching) = tokio::sync::watch::channel(false);
    let publishing = bench.publish_at(rate, total);
    let breaking = async {
        tokio::time::sleep(Duration::from_secs(before)).await;
        bench.mock.set_down(true);
        let went = Utc::now();
        tokio::time::sleep(Duration::from_secs(down)).await;
        bench.mock.set_down(false);
        (went, Utc::now())
    };
    let watch = watch_circuit(bench, stop_watching);
    let (published, (went_at, back_at), mut timeline) = {
        let both = async {
            let (p, b) = tokio::join!(publishing, breaking);
            let _ = watching.send(true);
            (p, b)
        };
        let ((published, broke), timeline) = tokio::join!(both, watch);
        (published?, broke, timeline?)
    };
    {
        bench
            .wait_terminal(
                std::slice::from_mut(&mut worker),
                0,
                published,
                TERMINAL_TIMEOUT,
            )
            .await?;
    }
    let backlog_drained = bench
        .store
        .timing(went_at - chrono::Duration::days(1), back_at)
        .await?
        .last_finish
        .map(|t| (t - back_at).as_seconds_f64());
    worker.stop().await?;
    // Calls while open: from each opening to its open_until (probes come
    // after, half-open, however briefly), less the first IN_FLIGHT.
    let mut calls_while_open = 0;
    for (since, _, until) in timeline.iter().filter(|(_, s, _)| *s == CircuitState::Open) {
        let until = until.unwrap_or_else(Utc::now);
        let from = *since + IN_FLIGHT;
        if from < until {
            calls_while_open += bench.store.attempts_started_between(from, until).await?;
        }
    }
    let closed_after = timeline
        .iter()
        .find(|(at, state, _)| *at >= back_at && *state == CircuitState::Closed)
        .map(|(at, _, _)| (*at - back_at).as_seconds_f64());
    let counts: std::collections::BTreeMap<String, i64> =
        bench.store.state_counts().await?.into_iter().collect();
    let calls_while_down = bench
        .store
        .attempts_started_between(went_at, back_at)
        .await?;
    let most_attempts = bench.store.most_attempts().await?;
    timeline.retain(|(at, _, _)| *at >= went_at);
    Ok(OutageReport {
        offered_per_second: rate,
        published,
        down_seconds: (back_at - went_at).as_seconds_f64(),
        succeeded: counts.get("succeeded").copied().unwrap_or(0),
        dead: counts.get("dead").copied().unwrap_or(0),
        calls_while_down,
        calls_while_open,
        timeline: timeline
            .iter()
            .map(|(at, s, _)| ((*at - went_at).as_seconds_f64(), s.as_str().to_owned()))
            .collect(),
        recovery_to_closed_seconds: closed_after,
        recovery_to_backlog_drained_seconds: backlog_drained,
        most_attempts_of_a_job: most_attempts,
    })
}

type Transition = (DateTime<Utc>, CircuitState, Option<DateTime<Utc>>);

/// The circuit's transitions as PostgreSQL records them (read every 50 ms
/// until `stop`): when each state was entered, and an open one's end.
async fn watch_circuit(
    bench: &Bench,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Vec<Transition>> {
    let mut seen: Vec<Transition> = Vec::new();
    loop {
        if let Some(state) = bench.store.provider_state("mockpay").await? {
            let changed = seen
                .last()
                .is_none_or(|(since, s, _)| *s != state.circuit || *since != state.circuit_since);
            if changed {
                seen.push((state.circuit_since, state.circuit, state.open_until));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = stop.changed() => return Ok(seen),
        }
    }
}

pub fn print_outage(r: &OutageReport) {
    println!(
        "offered {:.0}/s, published {}, provider down {:.1} s",
        r.offered_per_second, r.published, r.down_seconds
    );
    println!(
        "succeeded {}, dead {}, most attempts of a job {}",
        r.succeeded, r.dead, r.most_attempts_of_a_job
    );
    println!(
        "calls while down {}, calls while the circuit was open {}",
        r.calls_while_down, r.calls_while_open
    );
    for (at, state) in &r.timeline {
        println!("  {at:>7.1} s  circuit {state}");
    }
    match r.recovery_to_closed_seconds {
        Some(s) => println!("provider back → circuit closed: {s:.1} s"),
        None => println!("provider back → circuit closed: never seen"),
    }
    match r.recovery_to_backlog_drained_seconds {
        Some(s) => println!("provider back → every job published before done: {s:.1} s"),
        None => println!("provider back → every job published before done: never seen"),
    }
}
