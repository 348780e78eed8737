//! `courier bench <scenario>`: measured runs against the local RabbitMQ and
//! PostgreSQL, each in a namespace of its own that is removed afterwards.
//!
//! Owns the scenarios' scripts and their reports (a table for people, JSON
//! for machines). The worker under test is a real `courier run` process;
//! every throughput is also given as a ratio to the broker's own limit
//! ([`baseline`]) measured in the same run. Figures belong in
//! docs/BENCHMARKS.md, never in tests.

mod baseline;
mod faults;
mod harness;
mod ingest;
mod protection;
mod requeue;

use anyhow::{Context as _, bail};
use baseline::Baseline;
use chrono::Utc;
use courier_provider::FailureMix;
use harness::{Bench, RunResult};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The retry policy of bench workers unless a scenario says otherwise.
const RETRY: &str = "max_attempts = 5\nbase_delay_ms = 1000\nmax_delay_secs = 8\njitter = 0.2";
const TERMINAL_TIMEOUT: Duration = Duration::from_secs(1800);

#[derive(Debug, clap::Args)]
pub struct Output {
    /// Write the results as JSON to this file
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Scenario {
    /// The broker's own limit: confirmed publish, then consume + ack, no HTTP, no database
    Baseline {
        /// Jobs published
        #[arg(long, default_value_t = 100_000)]
        jobs: u64,
        #[command(flatten)]
        out: Output,
    },
    /// N jobs published first, then one worker drains them against the mock provider (instant 200)
    Drain {
        /// Jobs published
        #[arg(long, default_value_t = 100_000)]
        jobs: u64,
        /// The worker's `worker.linger_ms` (unset: the default)
        #[arg(long)]
        linger_ms: Option<u64>,
        #[command(flatten)]
        out: Output,
    },
    /// Fixed offered rates (shares of a calibration drain's rate) for a fixed time: latency at each
    Steady {
        /// Shares of the drain rate to offer
        #[arg(long, value_delimiter = ',', default_value = "0.25,0.5,0.9")]
        shares: Vec<f64>,
        /// Offer these rates (jobs/s) instead, without a calibration drain
        #[arg(long, value_delimiter = ',')]
        rates: Vec<f64>,
        /// Seconds at each rate
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Jobs in the calibration drain
        #[arg(long, default_value_t = 20_000)]
        calibrate: u64,
        /// The worker's `worker.linger_ms` (unset: the default; the
        /// calibration drain always runs with the default)
        #[arg(long)]
        linger_ms: Option<u64>,
        #[command(flatten)]
        out: Output,
    },
    /// 30% of calls fail retryably, 5% permanently: throughput and time until every job is terminal
    Failing {
        /// Jobs published
        #[arg(long, default_value_t = 20_000)]
        jobs: u64,
        #[command(flatten)]
        out: Output,
    },
    /// 50 providers at once, each its own queue
    Providers {
        /// Jobs published
        #[arg(long, default_value_t = 100_000)]
        jobs: u64,
        /// Providers the jobs are spread over
        #[arg(long, default_value_t = 50)]
        providers: usize,
        /// The workers' broker.prefetch (default: the config's default)
        #[arg(long)]
        prefetch: Option<u16>,
        /// The workers' broker.prefetch_budget (default: the config's default)
        #[arg(long)]
        prefetch_budget: Option<u32>,
        #[command(flatten)]
        out: Output,
    },
    /// Per-job cost with a small and a large backlog waiting (it must stay flat)
    Backlog {
        /// Jobs waiting in the small backlog
        #[arg(long, default_value_t = 10_000)]
        small: u64,
        /// Jobs waiting in the large backlog
        #[arg(long, default_value_t = 1_000_000)]
        large: u64,
        /// Jobs measured in each phase
        #[arg(long, default_value_t = 10_000)]
        measure: u64,
        #[command(flatten)]
        out: Output,
    },
    /// The same drain with 1, 2 and 4 worker processes on the same queues;
    /// fails unless every job succeeded with one attempt and one call
    Processes {
        /// Jobs published
        #[arg(long, default_value_t = 100_000)]
        jobs: u64,
        /// Worker process counts to run, one drain each
        #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
        processes: Vec<usize>,
        #[command(flatten)]
        out: Output,
    },
    /// The fault suite: kill -9, RabbitMQ and PostgreSQL outages, a provider
    /// misbehaving on the wire, hostile input; invariants checked after each.
    /// Restarts the machine's RabbitMQ and PostgreSQL: run it alone.
    Faults {
        /// Only these scenarios (kill, broker, database, provider, hostile,
        /// node: the work queue leader's node stopped in scripts/cluster's
        /// cluster; node-kill: killed, run only when named)
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// The short version CI runs
        #[arg(long)]
        short: bool,
        /// Jobs per scenario [default: 20000, short: 3000]
        #[arg(long)]
        jobs: Option<u64>,
        #[command(flatten)]
        out: Output,
    },
    /// One rate limit shared by 1 and by 3 worker processes, against a provider enforcing it exactly
    Ratelimit {
        /// The limit, calls per second across every process
        #[arg(long, default_value_t = 200.0)]
        per_second: f64,
        /// Calls that may go at once after a quiet period
        #[arg(long, default_value_t = 20)]
        burst: u32,
        /// Seconds of calls in each run
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Worker process counts to run, one run each
        #[arg(long, value_delimiter = ',', default_value = "1,3")]
        processes: Vec<usize>,
        /// Calls the provider tolerates beyond the workers' burst (0: it
        /// enforces the very limit the workers keep)
        #[arg(long, default_value_t = 0)]
        provider_slack: u32,
        #[command(flatten)]
        out: Output,
    },
    /// A healthy provider drained alone, then beside one whose every call times out
    Isolation {
        /// Jobs published
        #[arg(long, default_value_t = 50_000)]
        jobs: u64,
        /// Jobs for the provider that times out
        #[arg(long, default_value_t = 2_000)]
        stuck: u64,
        #[command(flatten)]
        out: Output,
    },
    /// Drains without a limit and with one far above the achievable rate, alternating
    Overhead {
        /// Jobs published
        #[arg(long, default_value_t = 100_000)]
        jobs: u64,
        /// Alternating rounds without and with the limit
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        #[command(flatten)]
        out: Output,
    },
    /// A steady flow while the provider is down for a while: circuit timeline, dead letters, recovery
    Outage {
        /// Jobs offered per second
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
        /// Seconds of normal traffic before the outage
        #[arg(long, default_value_t = 20)]
        before: u64,
        /// Seconds the provider answers 503 to everything
        #[arg(long, default_value_t = 60)]
        down: u64,
        /// Seconds of traffic after the provider is back
        #[arg(long, default_value_t = 30)]
        after: u64,
        /// The circuit's open_secs
        #[arg(long, default_value_t = 30)]
        open_secs: u64,
        #[command(flatten)]
        out: Output,
    },
    /// Signed webhooks into a real `courier ingest` by keep-alive clients:
    /// events/s to 2xx, time to each 2xx, then exactly one row and one job
    /// per event, redeliveries adding nothing, and one worker draining them
    Ingest {
        /// Events sent (each a distinct webhook-id)
        #[arg(long, default_value_t = 20_000)]
        events: u64,
        /// Concurrent HTTP/1.1 clients, one keep-alive connection each; a
        /// list runs once per value, each in its own namespace
        #[arg(long, value_delimiter = ',', default_value = "32")]
        concurrency: Vec<usize>,
        /// Bytes of each event's JSON body
        #[arg(long, default_value_t = 600)]
        body_bytes: usize,
        /// The receiver's database.max_connections (default: the config's
        /// default): events recorded at once
        #[arg(long)]
        database_connections: Option<u32>,
        #[command(flatten)]
        out: Output,
    },
    /// Requeue N dead letters with `courier dead requeue`'s code path
    Requeue {
        /// Dead letters requeued
        #[arg(long, default_value_t = 100_000)]
        letters: usize,
        /// Letters claimed per transaction (the CLI uses 500)
        #[arg(long, default_value_t = 500)]
        batch: i64,
        /// Keep the namespace afterwards
        #[arg(long)]
        keep: bool,
        #[command(flatten)]
        out: Output,
    },
}

pub async fn bench(scenario: Scenario) -> anyhow::Result<ExitCode> {
    // Checks that fail the command once the report is out.
    let mut failed_checks: Vec<String> = Vec::new();
    let (name, out, baseline, runs) = match scenario {
        Scenario::Faults {
            only,
            short,
            jobs,
            out,
        } => {
            let mut size = if short {
                faults::Size::SHORT
            } else {
                faults::Size::FULL
            };
            if let Some(jobs) = jobs {
                size.jobs = jobs;
            }
            let reports = faults::run(&only, size).await?;
            faults::print(&reports);
            if let Some(path) = out.json {
                let report = serde_json::json!({
                    "scenario": "faults",
                    "measured_at": Utc::now(),
                    "short": short,
                    "reports": reports,
                });
                std::fs::write(&path, serde_json::to_string_pretty(&report)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            return Ok(if reports.iter().all(faults::FaultReport::passed) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Scenario::Ratelimit {
            per_second,
            burst,
            seconds,
            processes,
            provider_slack,
            out,
        } => {
            let runs =
                protection::ratelimit(per_second, burst, provider_slack, seconds, &processes)
                    .await?;
            protection::print_ratelimit(&runs);
            write_json(out, "ratelimit", &runs)?;
            return Ok(ExitCode::SUCCESS);
        }
        Scenario::Outage {
            rate,
            before,
            down,
            after,
            open_secs,
            out,
        } => {
            let report = protection::outage(rate, before, down, after, open_secs).await?;
            protection::print_outage(&report);
            write_json(out, "outage", &report)?;
            return Ok(ExitCode::SUCCESS);
        }
        Scenario::Isolation { jobs, stuck, out } => {
            let baseline = baseline::measure(jobs).await?;
            (
                "isolation",
                out,
                baseline,
                protection::isolation(jobs, stuck).await?,
            )
        }
        Scenario::Overhead { jobs, rounds, out } => {
            let baseline = baseline::measure(jobs).await?;
            (
                "overhead",
                out,
                baseline,
                protection::overhead(jobs, rounds).await?,
            )
        }
        Scenario::Requeue {
            letters,
            batch,
            keep,
            out,
        } => return requeue::requeue(letters, batch, out.json, keep).await,
        Scenario::Ingest {
            events,
            concurrency,
            body_bytes,
            database_connections,
            out,
        } => {
            let runs = ingest::run(events, &concurrency, body_bytes, database_connections).await?;
            ingest::print(&runs);
            write_json(out, "ingest", &runs)?;
            let failures: Vec<&str> = runs
                .iter()
                .flat_map(|r| r.failures.iter().map(String::as_str))
                .collect();
            if !failures.is_empty() {
                bail!("{}", failures.join("; "));
            }
            return Ok(ExitCode::SUCCESS);
        }
        Scenario::Baseline { jobs, out } => {
            ("baseline", out, baseline::measure(jobs).await?, vec![])
        }
        Scenario::Drain {
            jobs,
            linger_ms,
            out,
        } => {
            let baseline = baseline::measure(jobs).await?;
            let worker = linger_toml(linger_ms);
            let runs =
                vec![drain_with("drain", jobs, 1, FailureMix::default(), 1, "", &worker).await?];
            ("drain", out, baseline, runs)
        }
        Scenario::Processes {
            jobs,
            processes,
            out,
        } => {
            let baseline = baseline::measure(jobs).await?;
            let mut runs = Vec::new();
            for n in processes {
                let label = format!("{n} process{}", if n == 1 { "" } else { "es" });
                let run = drain(&label, jobs, 1, FailureMix::default(), n).await?;
                if let Err(e) = exactly_once(&run) {
                    failed_checks.push(e.to_string());
                }
                runs.push(run);
            }
            ("processes", out, baseline, runs)
        }
        Scenario::Failing { jobs, out } => {
            let baseline = baseline::measure(jobs).await?;
            let mix = FailureMix {
                server_error: 0.30,
                permanent: 0.05,
                ..FailureMix::default()
            };
            let runs = vec![drain("30% retryable, 5% permanent", jobs, 1, mix, 1).await?];
            ("failing", out, baseline, runs)
        }
        Scenario::Providers {
            jobs,
            providers,
            prefetch,
            prefetch_budget,
            out,
        } => {
            let baseline = baseline::measure(jobs).await?;
            let label = format!("{providers} providers");
            let mut broker = String::new();
            if let Some(n) = prefetch {
                broker.push_str(&format!("prefetch = {n}\n"));
            }
            if let Some(n) = prefetch_budget {
                broker.push_str(&format!("prefetch_budget = {n}\n"));
            }
            let runs = vec![
                drain_with(
                    &label,
                    jobs,
                    providers,
                    FailureMix::default(),
                    1,
                    &broker,
                    "",
                )
                .await?,
            ];
            ("providers", out, baseline, runs)
        }
        Scenario::Steady {
            shares,
            rates,
            seconds,
            calibrate,
            linger_ms,
            out,
        } => {
            let baseline = baseline::measure(calibrate).await?;
            let seconds = Duration::from_secs(seconds);
            let worker = linger_toml(linger_ms);
            let runs = steady(&shares, &rates, seconds, calibrate, &worker).await?;
            ("steady", out, baseline, runs)
        }
        Scenario::Backlog {
            small,
            large,
            measure,
            out,
        } => {
            let baseline = baseline::measure(measure.max(10_000)).await?;
            let runs = backlog(&[small, large], measure).await?;
            ("backlog", out, baseline, runs)
        }
    };
    let runs: Vec<RunResult> = runs
        .into_iter()
        .map(|mut r| {
            r.ratio_to_baseline = Some(r.jobs_per_second / baseline.consume_per_second);
            r
        })
        .collect();
    print_report(name, &baseline, &runs);
    if let Some(path) = out.json {
        let report = serde_json::json!({
            "scenario": name,
            "measured_at": Utc::now(),
            "baseline": baseline,
            "runs": runs,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if !failed_checks.is_empty() {
        bail!("{}", failed_checks.join("; "));
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes a scenario's report to `--json`, if given.
fn write_json(out: Output, name: &str, report: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(path) = out.json {
        let report = serde_json::json!({
            "scenario": name,
            "measured_at": Utc::now(),
            "report": report,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Publishes `jobs` across `providers` providers, then drains them with
/// `processes` worker processes.
async fn drain(
    label: &str,
    jobs: u64,
    providers: usize,
    mix: FailureMix,
    processes: usize,
) -> anyhow::Result<RunResult> {
    drain_with(label, jobs, providers, mix, processes, "", "").await
}

/// The workers' `[worker]` keys for a linger (none: the default).
fn linger_toml(linger_ms: Option<u64>) -> String {
    linger_ms
        .map(|ms| format!("linger_ms = {ms}"))
        .unwrap_or_default()
}

/// As [`drain`], with keys for the workers' `[broker]` and `[worker]` tables.
async fn drain_with(
    label: &str,
    jobs: u64,
    providers: usize,
    mix: FailureMix,
    processes: usize,
    broker_toml: &str,
    worker_toml: &str,
) -> anyhow::Result<RunResult> {
    let names = if providers == 1 {
        vec!["mockpay".to_owned()]
    } else {
        (0..providers).map(|i| format!("p{i:02}")).collect()
    };
    let mut bench = Bench::new("drain", names, mix).await?;
    bench.broker_toml = broker_toml.to_owned();
    bench.worker_toml = worker_toml.to_owned();
    if mix != FailureMix::default() {
        // Failing at random by design: a chance run of failures would open
        // the circuit and turn the scenario into an outage.
        bench.provider_tables = "[providers.{provider}.circuit]\nfailure_rate = 1.0\n".into();
    }
    // The namespace goes even when the run fails.
    let result = drain_in(&mut bench, label, jobs, processes).await;
    bench.cleanup().await?;
    result
}

async fn drain_in(
    bench: &mut Bench,
    label: &str,
    jobs: u64,
    processes: usize,
) -> anyhow::Result<RunResult> {
    eprintln!("{label}: publishing {jobs} jobs …");
    let from = Utc::now();
    let broker_publishing = harness::cpu_seconds_of("beam.smp");
    let published = bench.publish(jobs as usize).await?;
    let broker_publishing = harness::cpu_seconds_of("beam.smp") - broker_publishing;
    let to = Utc::now();
    eprintln!(
        "{label}: published in {:.1} s; draining with {processes} worker process(es) …",
        published.as_secs_f64()
    );
    let machine_before = harness::machine_cpu_seconds()?;
    let broker_before = harness::cpu_seconds_of("beam.smp");
    let wal_before = bench.store.wal_position().await?;
    let mut workers = Vec::new();
    for _ in 0..processes {
        workers.push(bench.start_worker(RETRY).await?);
    }
    // The workers' PostgreSQL sessions live from here to the end.
    let database_before = harness::cpu_seconds_of("postgres");
    bench
        .wait_terminal(&mut workers, 0, jobs, TERMINAL_TIMEOUT)
        .await?;
    let machine = harness::machine_cpu_seconds()? - machine_before;
    let per_1000 = |seconds: f64| seconds / jobs as f64 * 1000.0;
    let tables = bench.store.table_bytes().await?;
    let cost = harness::Cost {
        broker_publish_cpu_seconds_per_1000_jobs: per_1000(broker_publishing),
        broker_cpu_seconds_per_1000_jobs: per_1000(
            harness::cpu_seconds_of("beam.smp") - broker_before,
        ),
        database_cpu_seconds_per_1000_jobs: per_1000(
            harness::cpu_seconds_of("postgres") - database_before,
        ),
        wal_bytes_per_job: bench.store.wal_position().await?.saturating_sub(wal_before) as f64
            / jobs as f64,
        table_bytes_per_job: tables.iter().map(|(_, b)| *b as f64).sum::<f64>() / jobs as f64,
        tables,
    };
    let (cpu, rss) = usage(&workers)?;
    let pids: Vec<u32> = workers
        .iter()
        .map(harness::WorkerProcess::process_id)
        .collect();
    let threads = harness::ThreadReading::of(&pids);
    for w in workers {
        w.stop().await?;
    }
    let mut run = bench
        .result(label, jobs, from, to, None, cpu, rss, processes)
        .await?;
    run.machine_cpu_seconds_per_1000_jobs = per_1000(machine);
    run.cost = Some(cost);
    run.worker_threads = threads.since(&harness::ThreadReading::default(), jobs);
    Ok(run)
}

/// Fails unless every job of a drain that never fails succeeded with one
/// attempt and one provider call: with several processes consuming one
/// queue, an outcome lost or a job run twice shows here.
fn exactly_once(run: &RunResult) -> anyhow::Result<()> {
    let succeeded = run.outcomes.get("succeeded").copied().unwrap_or(0);
    let jobs = i64::try_from(run.jobs)?;
    if succeeded != jobs || run.attempts != jobs || run.provider_calls != run.jobs {
        bail!(
            "{}: {} jobs, {succeeded} succeeded, {} attempts, {} provider calls",
            run.label,
            run.jobs,
            run.attempts,
            run.provider_calls
        );
    }
    Ok(())
}

/// CPU seconds summed and the largest peak RSS over `workers`.
fn usage(workers: &[harness::WorkerProcess]) -> anyhow::Result<(f64, f64)> {
    let mut cpu = 0.0;
    let mut rss: f64 = 0.0;
    for w in workers {
        cpu += w.cpu_seconds()?;
        rss = rss.max(w.peak_rss_mb()?);
    }
    Ok((cpu, rss))
}

async fn steady(
    shares: &[f64],
    rates: &[f64],
    duration: Duration,
    calibrate: u64,
    worker_toml: &str,
) -> anyhow::Result<Vec<RunResult>> {
    let mut runs = Vec::new();
    let offered: Vec<(String, f64)> = if rates.is_empty() {
        let calibration =
            drain("calibration drain", calibrate, 1, FailureMix::default(), 1).await?;
        let drain_rate = calibration.jobs_per_second;
        runs.push(calibration);
        shares
            .iter()
            .map(|share| {
                let rate = drain_rate * share;
                (
                    format!("{:.0}% of drain ({rate:.0}/s)", share * 100.0),
                    rate,
                )
            })
            .collect()
    } else {
        rates.iter().map(|r| (format!("{r:.0}/s"), *r)).collect()
    };
    let mut bench = Bench::new("steady", vec!["mockpay".into()], FailureMix::default()).await?;
    bench.worker_toml = worker_toml.to_owned();
    let result = steady_in(&mut bench, &offered, duration).await;
    bench.cleanup().await?;
    runs.extend(result?);
    Ok(runs)
}

async fn steady_in(
    bench: &mut Bench,
    offered: &[(String, f64)],
    duration: Duration,
) -> anyhow::Result<Vec<RunResult>> {
    let mut worker = bench.start_worker(RETRY).await?;
    let mut runs = Vec::new();
    let mut done = 0;
    for (label, rate) in offered {
        let (label, rate) = (label.as_str(), *rate);
        eprintln!("steady: offering {rate:.0} jobs/s for {duration:?} …");
        let cpu_before = worker.cpu_seconds()?;
        let threads_before = harness::ThreadReading::of(&[worker.process_id()]);
        let machine_before = harness::machine_cpu_seconds()?;
        let others_before = harness::SteadyCost::reading()?;
        let from = Utc::now();
        let clock = Instant::now();
        let sent = bench.publish_at(rate, duration).await?;
        let to = Utc::now();
        bench
            .wait_terminal(
                std::slice::from_mut(&mut worker),
                done,
                sent,
                TERMINAL_TIMEOUT,
            )
            .await?;
        let wall = clock.elapsed().as_secs_f64();
        done += sent;
        let cpu = worker.cpu_seconds()? - cpu_before;
        let threads =
            harness::ThreadReading::of(&[worker.process_id()]).since(&threads_before, sent);
        let machine = harness::machine_cpu_seconds()? - machine_before;
        let others =
            harness::SteadyCost::between(others_before, harness::SteadyCost::reading()?, sent);
        let mut run = bench
            .result(
                label,
                sent,
                from,
                to,
                Some(wall),
                cpu,
                worker.peak_rss_mb()?,
                1,
            )
            .await?;
        // Offered, not drained: the rate is what was asked of the worker.
        run.jobs_per_second = sent as f64 / duration.as_secs_f64();
        run.machine_cpu_seconds_per_1000_jobs = machine / sent as f64 * 1000.0;
        run.steady_cost = Some(others);
        run.worker_threads = threads;
        runs.push(run);
    }
    worker.stop().await?;
    Ok(runs)
}

async fn backlog(backlogs: &[u64], measure: u64) -> anyhow::Result<Vec<RunResult>> {
    let mut runs = Vec::new();
    for &waiting in backlogs {
        let mut bench =
            Bench::new("backlog", vec!["mockpay".into()], FailureMix::default()).await?;
        let result = backlog_in(&mut bench, waiting, measure).await;
        bench.cleanup().await?;
        runs.push(result?);
    }
    Ok(runs)
}

/// Publishes `waiting` jobs, then measures one worker over the first
/// `measure` of them; the rest stay queued.
async fn backlog_in(bench: &mut Bench, waiting: u64, measure: u64) -> anyhow::Result<RunResult> {
    let label = format!("{waiting} waiting");
    eprintln!("backlog: publishing {waiting} jobs …");
    let from = Utc::now();
    bench.publish(waiting as usize).await?;
    let to = Utc::now();
    let measured = measure.min(waiting);
    let settled = harness::wait_for_quiet_host(Duration::from_secs(120)).await?;
    eprintln!(
        "backlog: host quiet after {:.0} s; draining the first {measured} …",
        settled.as_secs_f64()
    );
    let machine_before = harness::machine_cpu_seconds()?;
    let mut worker = bench.start_worker(RETRY).await?;
    let clock = Instant::now();
    bench
        .wait_terminal(
            std::slice::from_mut(&mut worker),
            0,
            measured,
            TERMINAL_TIMEOUT,
        )
        .await?;
    let wall = clock.elapsed().as_secs_f64();
    let machine = harness::machine_cpu_seconds()? - machine_before;
    let cpu = worker.cpu_seconds()?;
    let rss = worker.peak_rss_mb()?;
    worker.stop().await?;
    let finished = bench.store.timing(from, to).await?.terminal;
    let mut run = bench
        .result(
            &label,
            u64::try_from(finished).unwrap_or(0),
            from,
            to,
            Some(wall),
            cpu,
            rss,
            1,
        )
        .await?;
    run.jobs_per_second = measured as f64 / wall;
    run.worker_cpu_seconds_per_1000_jobs = cpu / measured as f64 * 1000.0;
    run.machine_cpu_seconds_per_1000_jobs = machine / measured as f64 * 1000.0;
    Ok(run)
}

fn print_report(name: &str, baseline: &Baseline, runs: &[RunResult]) {
    println!("scenario {name}");
    println!(
        "baseline (broker only, {} messages): publish {:.0}/s confirmed, consume+ack {:.0}/s ({:.3} host CPU s/1k)",
        baseline.messages,
        baseline.publish_per_second,
        baseline.consume_per_second,
        baseline.consume_machine_cpu_seconds_per_1000
    );
    if runs.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<30} {:>8} {:>8} {:>9} {:>6} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>7}  outcomes",
        "run",
        "jobs",
        "wall s",
        "jobs/s",
        "×base",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "cpu s/1k",
        "host s/1k",
        "rss MB"
    );
    for r in runs {
        let outcomes: Vec<String> = r.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!(
            "{:<30} {:>8} {:>8.2} {:>9.0} {:>6.2} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>9.3} {:>9.3} {:>7.1}  {}",
            r.label,
            r.jobs,
            r.wall_seconds,
            r.jobs_per_second,
            r.ratio_to_baseline.unwrap_or(f64::NAN),
            r.latency_ms.p50,
            r.latency_ms.p90,
            r.latency_ms.p99,
            r.latency_ms.max,
            r.worker_cpu_seconds_per_1000_jobs,
            r.machine_cpu_seconds_per_1000_jobs,
            r.worker_peak_rss_mb,
            outcomes.join(", "),
        );
    }
    for r in runs {
        if !r.worker_threads.is_empty() {
            let threads: Vec<String> = r
                .worker_threads
                .iter()
                .map(|t| {
                    format!(
                        "{} ×{} {:.3} CPU s/1k, {:.2} switches/job",
                        t.name, t.threads, t.cpu_seconds_per_1000_jobs, t.context_switches_per_job
                    )
                })
                .collect();
            println!("{}: worker threads: {}", r.label, threads.join("; "));
        }
        if let Some(c) = &r.steady_cost {
            println!(
                "{}: broker {:.3} CPU s/1k, PostgreSQL {:.3}, the bench itself (publisher, mock provider) {:.3}",
                r.label,
                c.broker_cpu_seconds_per_1000_jobs,
                c.database_cpu_seconds_per_1000_jobs,
                c.bench_cpu_seconds_per_1000_jobs,
            );
        }
        if let Some(c) = &r.cost {
            let tables: Vec<String> = c
                .tables
                .iter()
                .map(|(t, b)| format!("{t} {:.0}", *b as f64 / r.jobs as f64))
                .collect();
            println!(
                "{}: broker {:.3} CPU s/1k publishing, {:.3} draining, PostgreSQL {:.3} CPU s/1k, WAL {:.0} B/job, tables {:.0} B/job ({})",
                r.label,
                c.broker_publish_cpu_seconds_per_1000_jobs,
                c.broker_cpu_seconds_per_1000_jobs,
                c.database_cpu_seconds_per_1000_jobs,
                c.wal_bytes_per_job,
                c.table_bytes_per_job,
                tables.join(", ")
            );
        }
    }
}
