//! `courier providers`: each provider's protection, and pausing it by hand
//! for every worker. The terminal side only: courier-ops's `Operator`
//! reads and writes, the same code the admin API runs.

use crate::settings;
use chrono::{DateTime, Utc};
use courier_ops::Operator;
use courier_ops::views::ProviderView;
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
        /// The provider, as named in the config
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
        /// The provider, as named in the config
        name: String,
        /// Who is asking (recorded in the audit trail) [default: $USER]
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
    let ops = Operator::connect(&config, "courier providers", 2).await?;
    let done = run(&ops, args).await;
    ops.close().await;
    done
}

async fn run(ops: &Operator, args: Args) -> anyhow::Result<ExitCode> {
    let (done, verb) = match args.action {
        None => {
            let all = ops.providers().await?;
            if args.json {
                println!("{}", serde_json::to_string(&all)?);
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
                (None, t) => t,
            };
            let actor = crate::operator::actor(actor);
            (ops.pause(&name, &actor, until).await, "paused")
        }
        Some(Action::Resume { name, actor }) => {
            let actor = crate::operator::actor(actor);
            (ops.resume(&name, &actor).await, "resumed")
        }
    };
    let hold = match crate::operator::found(done)? {
        Ok(hold) => hold,
        Err(code) => return Ok(code),
    };
    if args.json {
        println!("{}", serde_json::to_string(&hold)?);
    } else {
        println!(
            "{}: {verb} for every worker (audit record {})",
            crate::operator::shown(&hold.provider),
            hold.action_id
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One row per provider, 80 columns; a pause, a hold or an open circuit's
/// end goes on an indented line below it.
fn print_table(all: &[ProviderView]) {
    use crate::operator::{WIDTH, fit};
    let now = Utc::now();
    println!(
        "{:<24} {:>14} {:>8} {:<10} {:>9}",
        "PROVIDER", "LIMIT/s", "RATE/s", "CIRCUIT", "QUEUED"
    );
    for p in all {
        let limit = p.rate_limit.as_ref().map_or_else(
            || "-".to_owned(),
            |l| format!("{} (b{})", l.per_second, l.burst),
        );
        let queued = p
            .queue_depth
            .map_or_else(|| "?".to_owned(), |d| d.to_string());
        println!(
            "{:<24} {:>14} {:>8.1} {:<10} {:>9}",
            fit(&p.name, 24),
            fit(&limit, 14),
            p.calls_per_second,
            fit(&p.circuit, 10),
            queued
        );
        let note = |text: String| println!("  {}", fit(&text, WIDTH - 2));
        match (&p.owner, &p.runbook) {
            (Some(owner), Some(runbook)) => note(format!("owner {owner} · runbook {runbook}")),
            (Some(owner), None) => note(format!("owner {owner}")),
            (None, Some(runbook)) => note(format!("runbook {runbook}")),
            (None, None) => {}
        }
        match (&p.held, p.paused_until.filter(|t| *t > now)) {
            (Some(h), _) => note(match h.until {
                Some(u) => format!("paused by {} until {}", h.by, u.format("%F %T")),
                None => format!("paused by {} until resumed", h.by),
            }),
            (None, Some(until)) => note(format!(
                "paused until {} ({})",
                until.format("%F %T"),
                p.pause_source.as_deref().unwrap_or("provider")
            )),
            (None, None) => {}
        }
        if let Some(t) = p.open_until {
            note(format!("circuit open until {}", t.format("%F %T")));
        }
        for (op, l) in &p.operation_limits {
            note(format!(
                "operation {}: {} (b{})",
                crate::operator::shown(op),
                l.per_second,
                l.burst
            ));
        }
    }
}
