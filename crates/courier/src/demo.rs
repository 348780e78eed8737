//! `courier demo`: the whole pipeline on this machine in one command.
//!
//! Owns the demo's script: check the services, reset the demo namespace,
//! start the built-in mock provider (failing a share of calls in every way a
//! real provider does), publish N jobs, run a worker in-process, show
//! progress, and print a summary with where to look next. The data stays in
//! the namespace afterwards for inspection; the next demo run resets it.

use crate::exit;
use anyhow::Context as _;
use courier_amqp::{Publisher, Topology};
use courier_core::Config;
use courier_core::config::redact_url;
use courier_core::envelope::JobEnvelope;
use courier_provider::{FailureMix, MockProvider};
use courier_store::Store;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

const PROVIDER: &str = "mockpay";
const PUBLISH_CONCURRENCY: usize = 256;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many jobs to publish
    #[arg(long, default_value_t = 1000)]
    jobs: usize,
    /// Share of provider calls that fail (server errors, 429s, timeouts, 4xx)
    #[arg(long, default_value_t = 0.2, value_parser = share)]
    failure_rate: f64,
    /// Namespace for the demo's queues and schema (reset at start)
    #[arg(long, default_value = "demo")]
    namespace: String,
    /// Give up if jobs are still not terminal after this many seconds
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Print the summary as JSON
    #[arg(long)]
    json: bool,
}

fn share(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err("must be between 0.0 and 1.0".into())
    }
}

pub async fn demo(args: Args) -> anyhow::Result<ExitCode> {
    let mix = FailureMix {
        server_error: 0.45 * args.failure_rate,
        throttle: 0.2 * args.failure_rate,
        timeout: 0.15 * args.failure_rate,
        permanent: 0.2 * args.failure_rate,
        hang: Duration::from_millis(1000),
        latency: Duration::ZERO,
    };
    let mock = MockProvider::start(mix)
        .await
        .context("starting the mock provider")?;
    let config = demo_config(&args.namespace, &mock.base_url())?;
    let topology = Topology::new(&config.namespace, [PROVIDER]);

    say(
        &args,
        &format!(
            "Courier demo: {} jobs, mock provider at {} failing {:.0}% of calls",
            args.jobs,
            mock.base_url(),
            args.failure_rate * 100.0
        ),
    );
    say(
        &args,
        &format!(
            "  RabbitMQ   {}",
            config
                .broker
                .urls
                .iter()
                .map(|url| courier_amqp::broker_address(url))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    say(
        &args,
        &format!("  PostgreSQL {}", redact_url(&config.database.url)),
    );

    // Reset the namespace so every run starts clean.
    let store = Store::connect(&config.database, &config.namespace, 4).await?;
    store.drop_schema().await?;
    let store = Store::connect(&config.database, &config.namespace, 4).await?;
    store.migrate().await?;
    let conn = courier_amqp::connect(&config.broker, "courier demo").await?;
    if let Ok(ch) = conn.channel().await {
        // Deleting what does not exist yet is fine; anything else shows up
        // when the worker declares the topology.
        let _ = topology.teardown(&ch).await;
    }

    let worker = courier_worker::Worker::start(config.clone()).await?;
    let started = Instant::now();
    let publisher = Publisher::open(&conn, config.broker.confirm_timeout).await?;
    publish_all(&args, &publisher, &topology).await?;
    let published_in = started.elapsed();

    let finished = watch_progress(&args, &store).await?;
    let wall = started.elapsed();
    worker.shutdown();
    worker.wait().await;
    let _ = conn.close("demo done").await;

    let summary = Summary::collect(&store, args.jobs, wall, published_in).await?;
    if args.json {
        println!("{}", summary.to_json());
    } else {
        summary.print(&config, &topology);
    }
    if finished && summary.terminal() == args.jobs as i64 {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: only {} of {} jobs reached a terminal state within {} s",
            summary.terminal(),
            args.jobs,
            args.timeout_secs
        );
        Ok(ExitCode::from(exit::INCOMPLETE))
    }
}

fn say(args: &Args, line: &str) {
    if !args.json {
        println!("{line}");
    }
}

fn demo_config(namespace: &str, base_url: &str) -> anyhow::Result<Config> {
    let toml = format!(
        r#"namespace = "{namespace}"

[worker]
shutdown_grace_secs = 10

# Any free port: the demo must not collide with a running worker's.
[telemetry]
listen = "127.0.0.1:0"

[providers.{PROVIDER}]
base_url = "{base_url}"
timeout_ms = 300
concurrency = 64

[providers.{PROVIDER}.retry]
max_attempts = 4
base_delay_ms = 500
max_delay_secs = 4
jitter = 0.5

[providers.{PROVIDER}.operations.create_charge]
method = "POST"
path = "/v1/customers/{{customer}}/charges"
"#
    );
    let env = |k: &str| match k {
        courier_core::config::ENV_AMQP_URL | courier_core::config::ENV_DATABASE_URL => {
            std::env::var(k).ok()
        }
        _ => None,
    };
    Ok(Config::from_toml(&toml, "(demo config)", &env)?)
}

async fn publish_all(
    args: &Args,
    publisher: &Publisher,
    topology: &Topology,
) -> anyhow::Result<()> {
    let bar = bar(args, args.jobs, "publishing");
    let mut in_flight = JoinSet::new();
    for n in 0..args.jobs {
        if in_flight.len() >= PUBLISH_CONCURRENCY
            && let Some(done) = in_flight.join_next().await
        {
            done??;
            bar.inc(1);
        }
        let payload = serde_json::json!({"customer": format!("cus_{}", n % 97), "amount": 100 + n});
        let job = JobEnvelope::new(PROVIDER, "create_charge", payload, chrono::Utc::now());
        let publisher = publisher.clone();
        let topology = topology.clone();
        in_flight.spawn(async move {
            publisher
                .publish_job(&topology, PROVIDER, job.id, &job.to_body(), None)
                .await
        });
    }
    while let Some(done) = in_flight.join_next().await {
        done??;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(())
}

fn bar(args: &Args, len: usize, what: &str) -> ProgressBar {
    if args.json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    let style = ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos}/{len} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(what.to_owned());
    bar
}

/// Shows progress until every job is terminal (true) or the timeout (false).
async fn watch_progress(args: &Args, store: &Store) -> anyhow::Result<bool> {
    let bar = bar(args, args.jobs, "processing");
    let plain = !args.json && !std::io::stderr().is_terminal();
    let mut listener = store.listen().await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut last_plain = Instant::now();
    loop {
        let counts = Counts::of(&store.state_counts().await?);
        let terminal = counts.succeeded + counts.dead;
        bar.set_position(terminal as u64);
        bar.set_message(format!(
            "succeeded {} · retrying {} · dead {}",
            counts.succeeded, counts.retrying, counts.dead
        ));
        if plain && last_plain.elapsed() >= Duration::from_secs(2) {
            eprintln!(
                "progress: {terminal}/{} terminal (succeeded {}, retrying {}, dead {})",
                args.jobs, counts.succeeded, counts.retrying, counts.dead
            );
            last_plain = Instant::now();
        }
        if terminal >= args.jobs as i64 {
            bar.finish_and_clear();
            return Ok(true);
        }
        // Wake on the next commit, or re-check at least every half second.
        let wake = tokio::time::Instant::now() + Duration::from_millis(500);
        match tokio::time::timeout_at(wake.min(deadline), listener.recv()).await {
            Ok(Ok(_)) => {
                // Coalesce bursts of commits into one refresh.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Err(e)) => return Err(e).context("listening for outcome commits"),
            Err(_) if tokio::time::Instant::now() >= deadline => {
                bar.abandon();
                return Ok(false);
            }
            Err(_) => {}
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    succeeded: i64,
    retrying: i64,
    dead: i64,
}

impl Counts {
    fn of(rows: &[(String, i64)]) -> Counts {
        let mut c = Counts::default();
        for (state, n) in rows {
            match state.as_str() {
                "succeeded" => c.succeeded = *n,
                "retrying" => c.retrying = *n,
                "dead" => c.dead = *n,
                _ => {}
            }
        }
        c
    }
}

struct Summary {
    jobs: usize,
    counts: Counts,
    dead_reasons: Vec<(String, i64)>,
    retried: i64,
    attempts: i64,
    wall: Duration,
    published_in: Duration,
}

impl Summary {
    async fn collect(
        store: &Store,
        jobs: usize,
        wall: Duration,
        published_in: Duration,
    ) -> anyhow::Result<Summary> {
        Ok(Summary {
            jobs,
            counts: Counts::of(&store.state_counts().await?),
            dead_reasons: store.dead_letter_reasons().await?,
            retried: store.count_retried().await?,
            attempts: store.count_attempts().await?,
            wall,
            published_in,
        })
    }

    fn terminal(&self) -> i64 {
        self.counts.succeeded + self.counts.dead
    }

    fn rate(&self) -> f64 {
        self.terminal() as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "jobs": self.jobs,
            "succeeded": self.counts.succeeded,
            "retrying": self.counts.retrying,
            "dead": self.counts.dead,
            "dead_by_reason": self.dead_reasons.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            "retried": self.retried,
            "attempts": self.attempts,
            "wall_seconds": self.wall.as_secs_f64(),
            "publish_seconds": self.published_in.as_secs_f64(),
            "jobs_per_second": self.rate(),
        })
    }

    fn print(&self, config: &Config, topology: &Topology) {
        let reasons = self
            .dead_reasons
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        println!();
        println!("  outcome      jobs");
        println!("  ──────────  ──────");
        println!("  succeeded   {:>6}", self.counts.succeeded);
        println!(
            "  dead        {:>6}   {}",
            self.counts.dead,
            if reasons.is_empty() {
                String::new()
            } else {
                format!("({reasons})")
            }
        );
        println!(
            "  retried     {:>6}   (needed more than one attempt)",
            self.retried
        );
        println!("  not done    {:>6}", self.jobs as i64 - self.terminal());
        println!("  ──────────  ──────");
        println!("  attempts    {:>6}   provider calls in all", self.attempts);
        println!(
            "  wall time   {:>6.1} s (published in {:.1} s) → {:.0} jobs/s",
            self.wall.as_secs_f64(),
            self.published_in.as_secs_f64(),
            self.rate()
        );
        let ns = &config.namespace;
        println!();
        println!("Where to look next (the demo's jobs stay in namespace {ns}):");
        println!("  dead letters by reason:  COURIER_NAMESPACE={ns} courier dead stats");
        println!("  the dead letters:        COURIER_NAMESPACE={ns} courier dead list");
        println!("  one job's whole life:    COURIER_NAMESPACE={ns} courier jobs show <job id>");
        println!(
            "  RabbitMQ:                rabbitmqctl list_queues name messages | grep '^{ns}\\.'  ({} holds the dead letters)",
            topology.dead_queue(Some(PROVIDER))
        );
    }
}
