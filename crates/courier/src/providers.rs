//! `courier providers`: each provider's protection, and pausing it by hand
//! for every worker. The terminal side only: courier-worker's `providers`
//! reads and writes, the same code the admin API runs.

use crate::exit;
use crate::settings;
use anyhow::Context as _;
use chrono::{DateTime, Utc};
use courier_store::Store;
use courier_worker::providers::{self, ProviderOverview, ProvidersError};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,
    /// Print JSON (the admin API's shape) instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Pause a provider for every worker: its jobs wait without spending attempts
    Pause {
        name: String,
        /// For how long, like 90s, 10m, 2h [default: until resumed]
        #[arg(long = "for", value_parser = length, conflicts_with = "until")]
        for_: Option<Duration>,
        /// Until when (RFC 3339)
        #[arg(long)]
        until: Option<DateTime<Utc>>,
        /// Who is asking (recorded in the audit trail) [default: $USER]
        #[arg(long)]
        actor: Option<String>,
    },
    /// End a pause set by hand
    Resume {
        name: String,
        #[arg(long)]
        actor: Option<String>,
    },
}

fn length(s: &str) -> Result<Duration, String> {
    match crate::operator::age(s)? {
        d if (1..=30 * 86_400).contains(&d.as_secs()) => Ok(d),
        _ => Err(format!("{s:?}: between 1 second and 30 days")),
    }
}

pub async fn providers(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let config = settings::load(config)?;
    let store = Store::connect(&config.database, &config.namespace, 2).await?;
    store.migrate().await?;
    let done = match args.action {
        None => {
            let link = courier_amqp::connect(&config.broker, "courier providers").await?;
            let all = providers::overview(&config, &store, &link).await?;
            let _ = link.close("done").await;
            if args.json {
                let views: Vec<_> = all.iter().map(courier_admin::ProviderView::from).collect();
                println!("{}", serde_json::to_string_pretty(&views)?);
            } else {
                print_table(&all);
            }
            return Ok(ExitCode::SUCCESS);
        }
        Some(Action::Pause {
            name,
            for_,
            until,
            actor,
        }) => {
            let until = match (for_, until) {
                (Some(d), _) => Some(Utc::now() + chrono::Duration::from_std(d)?),
                (None, Some(t)) if t <= Utc::now() => anyhow::bail!("--until: {t} is past"),
                (None, t) => t,
            };
            let actor = crate::operator::actor(actor);
            providers::pause(&config, &store, &name, &actor, until)
                .await
                .map(|id| (name, id, "paused"))
        }
        Some(Action::Resume { name, actor }) => {
            let actor = crate::operator::actor(actor);
            providers::resume(&config, &store, &name, &actor)
                .await
                .map(|id| (name, id, "resumed"))
        }
    };
    match done {
        Ok((name, id, verb)) => {
            if args.json {
                println!("{}", serde_json::json!({"action_id": id, "provider": name}));
            } else {
                println!("{name}: {verb} for every worker (audit record {id})");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(ProvidersError::Unknown(name)) => {
            eprintln!("error: no provider named {name:?} is configured");
            Ok(ExitCode::from(exit::NOT_FOUND))
        }
        Err(e) => Err(e).context("changing the provider's pause"),
    }
}

fn print_table(all: &[ProviderOverview]) {
    let now = Utc::now();
    println!(
        "{:<20} {:>12} {:>10} {:<28} {:<22} {:>8}",
        "PROVIDER", "LIMIT/s", "RATE/s", "PAUSED", "CIRCUIT", "QUEUED"
    );
    for p in all {
        let limit = p.rate_limit.map_or_else(
            || "-".to_owned(),
            |l| format!("{} (b{})", l.per_second, l.burst),
        );
        let paused = match (&p.held, p.paused_at(now)) {
            (Some(h), _) => match h.until {
                Some(u) => format!("by {} until {}", h.by, u.format("%H:%M:%S")),
                None => format!("by {} until resumed", h.by),
            },
            (None, Some(until)) => format!(
                "until {} ({})",
                until.format("%H:%M:%S"),
                p.pause_source.as_deref().unwrap_or("provider")
            ),
            (None, None) => "-".to_owned(),
        };
        let circuit = match p.open_until {
            Some(t) => format!("{} until {}", p.circuit.as_str(), t.format("%H:%M:%S")),
            None => p.circuit.as_str().to_owned(),
        };
        let queued = p
            .queue_depth
            .map_or_else(|| "?".to_owned(), |d| d.to_string());
        println!(
            "{:<20} {:>12} {:>10.1} {:<28} {:<22} {:>8}",
            crate::operator::shown(&p.name),
            limit,
            p.calls_per_second,
            paused,
            circuit,
            queued
        );
        for (op, l) in &p.operation_limits {
            println!(
                "  {:<18} {:>12}",
                crate::operator::shown(op),
                format!("{} (b{})", l.per_second, l.burst)
            );
        }
    }
}
