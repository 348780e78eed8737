//! The `courier` command: run a worker, apply migrations, publish a job, or
//! watch the whole pipeline work in `courier demo`.
//!
//! Owns the terminal: argument parsing, logging setup, tables, progress and
//! exit codes. Only this crate prints. It must never contain pipeline logic;
//! it wires the library crates together.

mod bench;
mod demo;
mod events;
mod exit;
mod operator;
mod providers;
mod publish;
mod settings;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

// glibc's malloc was a fifth of the worker's CPU at drain: every delivery,
// call and outcome allocates. jemalloc takes 15 % off the worker's CPU per
// job there for about 4 MB more peak RSS (docs/BENCHMARKS.md, "The
// allocator"); its settings are in .cargo/config.toml.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(
    name = "courier",
    version,
    about = "A durable job runner for API integrations"
)]
struct Cli {
    /// Config file [default: ./courier.toml if present, else built-in defaults]
    #[arg(long, global = true, env = "COURIER_CONFIG")]
    config: Option<PathBuf>,
    /// Log format [default: `run` and `admin serve` take telemetry.log_format
    /// (json unless configured), other commands pretty]
    #[arg(long, global = true, env = "COURIER_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a worker until SIGTERM or Ctrl-C
    Run,
    /// Apply the database migrations to the namespace's schema
    Migrate,
    /// Publish a job (JSON from a file or stdin) with a publisher confirm
    Publish(publish::Args),
    /// Run the whole pipeline against a built-in mock provider and show what happened
    Demo(demo::Args),
    /// Find, inspect, requeue and purge dead letters
    #[command(subcommand)]
    Dead(operator::DeadCommand),
    /// Look up any job, dead or alive
    #[command(subcommand)]
    Jobs(operator::JobsCommand),
    /// The webhook event log: list and read recorded events, replay them as new jobs
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// Each provider's rate limit, current rate, pause, circuit and queue; pause and resume by hand
    Providers(providers::Args),
    /// The audit log: every operator action, who, when, filter, patch, how many
    Audit(operator::AuditArgs),
    /// The admin HTTP API
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Receive webhooks on ingest.listen: verify, record, enqueue, then answer (until SIGTERM / Ctrl-C)
    Ingest,
    /// Measure a scenario against the local services (figures go in docs/BENCHMARKS.md)
    #[command(subcommand)]
    Bench(bench::Scenario),
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Serve the admin API on admin.listen until SIGTERM / Ctrl-C
    Serve,
    /// Print the API's OpenAPI 3.1 document (kept in docs/openapi.json)
    Openapi,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Run | Command::Admin(_) | Command::Ingest => "info",
        // The demo's dead letters are expected; its summary tells of them.
        Command::Demo(_) => "error",
        Command::Migrate
        | Command::Publish(_)
        | Command::Dead(_)
        | Command::Jobs(_)
        | Command::Events(_)
        | Command::Providers(_)
        | Command::Audit(_)
        | Command::Bench(_) => "warn",
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A service logs for a log pipeline and may export its spans; a bad
    // config is reported after logging starts, by the command itself.
    let service = matches!(
        cli.command,
        Command::Run | Command::Admin(AdminCommand::Serve) | Command::Ingest
    );
    let telemetry = service
        .then(|| settings::load(cli.config.as_deref()).ok())
        .flatten()
        .map(|c| c.telemetry);
    let format = match (cli.log_format, &telemetry) {
        (Some(LogFormat::Json), _) => courier_core::config::LogFormat::Json,
        (Some(LogFormat::Pretty), _) => courier_core::config::LogFormat::Pretty,
        (None, Some(t)) => t.log_format,
        (None, None) if service => courier_core::config::LogFormat::Json,
        (None, None) => courier_core::config::LogFormat::Pretty,
    };
    let exporter = match telemetry.as_ref().and_then(|t| t.otlp_endpoint.as_deref()) {
        None => None,
        Some(endpoint) => {
            courier_provider::install_crypto();
            match courier_telemetry::otlp::Exporter::start(
                endpoint,
                "courier",
                runtime.handle().clone(),
            ) {
                Ok(exporter) => Some(exporter),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(exit::INVALID);
                }
            }
        }
    };
    courier_telemetry::logging::init(format, default_level, exporter.as_ref());
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run => run(cli.config.as_deref()).await,
            Command::Migrate => migrate(cli.config.as_deref()).await,
            Command::Publish(args) => publish::publish(cli.config.as_deref(), args).await,
            Command::Demo(args) => demo::demo(args).await,
            Command::Dead(command) => operator::dead(cli.config.as_deref(), command).await,
            Command::Jobs(command) => operator::jobs(cli.config.as_deref(), command).await,
            Command::Events(command) => events::events(cli.config.as_deref(), command).await,
            Command::Providers(args) => providers::providers(cli.config.as_deref(), args).await,
            Command::Audit(args) => operator::audit(cli.config.as_deref(), args).await,
            Command::Bench(scenario) => bench::bench(scenario).await,
            Command::Admin(AdminCommand::Serve) => admin_serve(cli.config.as_deref()).await,
            Command::Ingest => ingest(cli.config.as_deref()).await,
            Command::Admin(AdminCommand::Openapi) => {
                println!("{}", courier_admin::openapi_json());
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    // Flushes the spans still buffered; the runtime is still up to send them.
    if let Some(exporter) = exporter {
        exporter.shutdown();
    }
    match result {
        Ok(code) => code,
        Err(e) => exit::report(&e),
    }
}

async fn run(config: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    let config = settings::load(config)?;
    if config.providers.is_empty() {
        anyhow::bail!(courier_core::ConfigError {
            file: config.source.clone(),
            key: "providers".into(),
            problem:
                "no providers configured: a worker needs at least one [providers.<name>] table"
                    .into(),
        });
    }
    let worker = courier_worker::Worker::start(config).await?;
    let rotation = tokio::spawn(follow_secret_files());
    wait_for_signal().await;
    rotation.abort();
    worker.shutdown();
    worker.wait().await;
    Ok(ExitCode::SUCCESS)
}

async fn admin_serve(config: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    let config = settings::load(config)?;
    if config.admin.tokens.is_empty() {
        anyhow::bail!(courier_core::ConfigError {
            file: config.source.clone(),
            key: "admin.tokens".into(),
            problem: "no tokens configured: every admin request needs a bearer token".into(),
        });
    }
    let listener = tokio::net::TcpListener::bind(config.admin.listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {} (admin.listen): {e}",
                config.admin.listen
            )
        })?;
    let server = courier_admin::AdminServer::start(&config, listener).await?;
    println!(
        "admin API on http://{} (OpenAPI at /openapi.json)",
        server.addr
    );
    let rotation = tokio::spawn(follow_secret_files());
    wait_for_signal().await;
    rotation.abort();
    drop(server);
    Ok(ExitCode::SUCCESS)
}

async fn ingest(config: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    let config = settings::load(config)?;
    let Some(listen) = config.ingest.as_ref().map(|i| i.listen) else {
        anyhow::bail!(courier_core::ConfigError {
            file: config.source.clone(),
            key: "ingest".into(),
            problem: "missing: `courier ingest` needs an [ingest] table with at least one [ingest.sources.<name>]".into(),
        });
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen} (ingest.listen): {e}"))?;
    let server = courier_ingest::IngestServer::start(&config, listener).await?;
    println!(
        "webhook receiver on http://{} (POST /hooks/<source>)",
        server.addr
    );
    let rotation = tokio::spawn(follow_secret_files());
    wait_for_signal().await;
    rotation.abort();
    server.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// How often secret files are re-read without a SIGHUP: a Kubernetes
/// Secret's update reaches the pod's files within about a minute anyway.
const SECRET_REREAD: std::time::Duration = std::time::Duration::from_secs(30);

/// Re-reads every `token_file` on SIGHUP and every [`SECRET_REREAD`], so
/// tokens rotate without a restart.
async fn follow_secret_files() {
    let mut every = tokio::time::interval(SECRET_REREAD);
    every.tick().await;
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hangup) => loop {
                tokio::select! {
                    _ = hangup.recv() => tracing::info!("SIGHUP: re-reading secret files"),
                    _ = every.tick() => {}
                }
                courier_telemetry::secret::reload_all();
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; secret files are re-read every {SECRET_REREAD:?}")
            }
        }
    }
    loop {
        every.tick().await;
        courier_telemetry::secret::reload_all();
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the worker");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn migrate(config: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    let config = settings::load(config)?;
    let store = courier_store::Store::connect(&config.database, &config.namespace, 1).await?;
    store.migrate().await?;
    println!("migrations applied to schema {:?}", config.namespace);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory as _;

    /// `--help` explains every flag and argument of every command.
    #[test]
    fn every_flag_and_argument_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path}: {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "courier", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }
}
