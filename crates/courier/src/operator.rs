//! `courier dead …` and `courier jobs …`: find, understand, fix and requeue
//! failed jobs.
//!
//! Owns the operator's terminal: filters from flags, tables for people,
//! `--json` for scripts, confirmation before changes, progress on long
//! requeues. The exactly-once machinery is courier-worker's `recovery`.

use crate::exit;
use crate::settings;
use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use courier_amqp::{Publisher, Topology};
use courier_store::{DeadFilter, DeadLetterRecord, Store};
use courier_worker::recovery::{self, RequeueOptions};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, clap::Subcommand)]
pub enum DeadCommand {
    /// List dead letters (pending by default), newest first
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Include requeued and purged letters
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Pending dead letters counted by provider and reason
    Stats {
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long)]
        json: bool,
    },
    /// One dead letter: the job, its payload and its attempt timeline
    Show {
        id: Uuid,
        #[arg(long)]
        json: bool,
    },
    /// Send dead letters back to their queue, each exactly once
    Requeue {
        /// Dead letter ids (or use the filters)
        ids: Vec<Uuid>,
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        change: ChangeArgs,
        /// JSON merge patch for each job's payload, inline or @file
        #[arg(long)]
        patch: Option<String>,
        /// Most jobs republished per second (0.01 to 100000)
        #[arg(long, value_parser = rate)]
        rate: Option<f64>,
    },
    /// Discard dead letters (kept as a recorded decision, never deleted)
    Purge {
        ids: Vec<Uuid>,
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        change: ChangeArgs,
        /// Only letters dead for longer than this (e.g. 30d, 12h, 90m)
        #[arg(long, value_parser = age)]
        older_than: Option<Duration>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum JobsCommand {
    /// Any job, dead or alive: state, attempts, dead letters, operator actions
    Show {
        id: Uuid,
        #[arg(long)]
        json: bool,
    },
    /// Jobs carrying an idempotency key
    Find {
        #[arg(long)]
        idempotency_key: String,
        /// Most jobs listed, oldest first
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Delete attempt rows of jobs that succeeded long ago (dead letters stay)
    Prune {
        /// Age [default: retention.succeeded_attempts_days from the config]
        #[arg(long, value_parser = age)]
        older_than: Option<Duration>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct FilterArgs {
    #[arg(long)]
    provider: Option<String>,
    #[arg(long)]
    operation: Option<String>,
    /// permanent, retries_exhausted, invalid or delivery_limit
    #[arg(long)]
    reason: Option<String>,
    /// Last HTTP status
    #[arg(long)]
    status: Option<i16>,
    /// Dead at or after (RFC 3339)
    #[arg(long)]
    since: Option<DateTime<Utc>>,
    /// Dead before (RFC 3339)
    #[arg(long)]
    until: Option<DateTime<Utc>>,
    /// Text in the reason detail or the last error
    #[arg(long)]
    search: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ChangeArgs {
    /// Show how many and which, change nothing
    #[arg(long)]
    dry_run: bool,
    /// Do not ask for confirmation
    #[arg(long)]
    yes: bool,
    /// Who is acting (recorded) [default: the OS user]
    #[arg(long)]
    actor: Option<String>,
    #[arg(long)]
    json: bool,
}

fn rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.01..=100_000.0).contains(&r) => Ok(r),
        _ => Err(format!(
            "{s:?}: a rate between 0.01 and 100000 letters per second"
        )),
    }
}

pub fn age(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit, like 30d"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?}: too long"))
}

impl FilterArgs {
    fn into_filter(self, ids: Vec<Uuid>) -> anyhow::Result<DeadFilter> {
        let filter = DeadFilter {
            ids,
            provider: self.provider,
            operation: self.operation,
            reason: self.reason,
            last_status: self.status,
            since: self.since,
            until: self.until,
            text: self.search,
        };
        filter
            .check()
            .map_err(|problem| anyhow::anyhow!("--{problem}"))?;
        Ok(filter)
    }

    fn is_empty(&self) -> bool {
        self.provider.is_none()
            && self.operation.is_none()
            && self.reason.is_none()
            && self.status.is_none()
            && self.since.is_none()
            && self.until.is_none()
            && self.search.is_none()
    }
}

async fn open(config: Option<&Path>) -> anyhow::Result<(courier_core::Config, Store)> {
    let config = settings::load(config)?;
    let store = Store::connect(&config.database, &config.namespace, 4).await?;
    store.migrate().await?;
    Ok((config, store))
}

pub fn actor(given: Option<String>) -> String {
    given
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

pub async fn dead(config: Option<&Path>, command: DeadCommand) -> anyhow::Result<ExitCode> {
    let (config, store) = open(config).await?;
    match command {
        DeadCommand::List {
            filter,
            all,
            limit,
            json,
        } => {
            let statuses: &[&str] = if all {
                &["pending", "requeueing", "requeued", "purged"]
            } else {
                &["pending"]
            };
            let letters = store
                .list_dead(&filter.into_filter(Vec::new())?, statuses, limit)
                .await?;
            if json {
                println!(
                    "{}",
                    Value::Array(letters.iter().map(letter_json).collect())
                );
            } else {
                print_letters(&letters);
            }
        }
        DeadCommand::Stats { filter, json } => {
            let stats = store.dead_stats(&filter.into_filter(Vec::new())?).await?;
            if json {
                let rows: Vec<Value> = stats
                    .iter()
                    .map(|s| json!({"provider": s.provider, "reason": s.reason, "count": s.count}))
                    .collect();
                println!("{}", Value::Array(rows));
            } else {
                println!("{:<24} {:<18} {:>8}", "PROVIDER", "REASON", "PENDING");
                for s in &stats {
                    println!(
                        "{:<24} {:<18} {:>8}",
                        shown_opt(s.provider.as_deref()),
                        shown(&s.reason),
                        s.count
                    );
                }
                println!(
                    "{:<24} {:<18} {:>8}",
                    "total",
                    "",
                    stats.iter().map(|s| s.count).sum::<i64>()
                );
            }
        }
        DeadCommand::Show { id, json } => {
            let Some(letter) = store.dead_letter(id).await? else {
                eprintln!("error: no dead letter {id}");
                return Ok(ExitCode::from(exit::NOT_FOUND));
            };
            let attempts = match letter.job_id {
                Some(job) => store.attempts(job).await?,
                None => Vec::new(),
            };
            if json {
                let mut v = letter_json(&letter);
                v["attempts"] = attempts_json(&attempts);
                println!("{v}");
            } else {
                print_letter(&letter);
                print_attempts(&attempts);
            }
        }
        DeadCommand::Requeue {
            ids,
            filter,
            change,
            patch,
            rate,
        } => {
            if ids.is_empty() && filter.is_empty() {
                bail!("say which letters: give ids or at least one filter (e.g. --provider)");
            }
            let patch = patch.map(|p| read_patch(&p)).transpose()?;
            let filter = filter.into_filter(ids)?;
            let count = store.count_pending(&filter).await?;
            if change.dry_run
                || !confirm(&change, &format!("Requeue {count} dead letters?"), count)?
            {
                return preview(&store, &filter, count, change.json, "requeue").await;
            }
            let conn = courier_amqp::connect(&config.broker, "courier dead requeue").await?;
            let publisher = Publisher::open(&conn, config.broker.confirm_timeout).await?;
            let topology = Topology::new(&config.namespace, config.providers.keys().cloned());
            let options = RequeueOptions {
                actor: actor(change.actor),
                patch,
                rate,
                batch: 500,
                max_body_bytes: config.worker.max_body_bytes,
            };
            let bar = progress(count, change.json);
            let report = recovery::requeue(&store, &publisher, &topology, &filter, &options, |n| {
                bar.set_position(n)
            })
            .await?;
            bar.finish_and_clear();
            sync_queues(&store, &conn, &publisher, &topology, &filter, change.json).await?;
            let _ = conn.close("requeued").await;
            report_action("requeued", &report, change.json);
        }
        DeadCommand::Purge {
            ids,
            filter,
            change,
            older_than,
        } => {
            if ids.is_empty() && filter.is_empty() && older_than.is_none() {
                bail!("say which letters: give ids, a filter or --older-than");
            }
            let mut filter = filter.into_filter(ids)?;
            if let Some(age) = older_than {
                let cutoff = Utc::now()
                    - chrono::Duration::from_std(age).context("--older-than is too large")?;
                filter.until = Some(filter.until.map_or(cutoff, |u| u.min(cutoff)));
            }
            let count = store.count_pending(&filter).await?;
            if change.dry_run || !confirm(&change, &format!("Purge {count} dead letters?"), count)?
            {
                return preview(&store, &filter, count, change.json, "purge").await;
            }
            let report = recovery::purge(&store, &filter, &actor(change.actor)).await?;
            let conn = courier_amqp::connect(&config.broker, "courier dead purge").await?;
            let publisher = Publisher::open(&conn, config.broker.confirm_timeout).await?;
            let topology = Topology::new(&config.namespace, config.providers.keys().cloned());
            sync_queues(&store, &conn, &publisher, &topology, &filter, change.json).await?;
            let _ = conn.close("purged").await;
            report_action("purged", &report, change.json);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn jobs(config: Option<&Path>, command: JobsCommand) -> anyhow::Result<ExitCode> {
    let (config, store) = open(config).await?;
    match command {
        JobsCommand::Prune { older_than, json } => {
            let Some(age) = older_than.or(config.retention.succeeded_attempts) else {
                bail!(
                    "give --older-than, or set retention.succeeded_attempts_days in {}",
                    config.source
                );
            };
            let cutoff = Utc::now()
                - chrono::Duration::from_std(age).context("--older-than is too large")?;
            let pruned = store.prune_succeeded_attempts(cutoff, 10_000).await?;
            if json {
                println!("{}", json!({"pruned_attempts": pruned, "cutoff": cutoff}));
            } else {
                println!(
                    "deleted {pruned} attempt rows of jobs that succeeded before {}",
                    cutoff.to_rfc3339()
                );
            }
        }
        JobsCommand::Show { id, json } => {
            let Some(job) = store.job(id).await? else {
                eprintln!("error: no job {id} is recorded (it may not have been attempted yet)");
                return Ok(ExitCode::from(exit::NOT_FOUND));
            };
            let attempts = store.attempts(id).await?;
            let letters = store.dead_letters_of(id).await?;
            let actions = store.actions_of(id).await?;
            if json {
                println!(
                    "{}",
                    json!({
                        "job": job_json(&job),
                        "attempts": attempts_json(&attempts),
                        "dead_letters": letters.iter().map(letter_json).collect::<Vec<_>>(),
                        "operator_actions": actions.iter().map(|a| json!({
                            "id": a.id, "actor": a.actor, "action": a.action, "filter": a.filter,
                            "patch": a.patch, "affected": a.affected, "at": a.started_at,
                        })).collect::<Vec<_>>(),
                    })
                );
            } else {
                print_job(&job);
                print_attempts(&attempts);
                for l in &letters {
                    println!(
                        "  dead {} [{}] {} ({})",
                        l.dead_at.format("%F %T"),
                        shown(&l.status),
                        shown(&l.detail),
                        l.id
                    );
                }
                for a in &actions {
                    println!(
                        "  {} by {} at {}{}",
                        shown(&a.action),
                        shown(&a.actor),
                        a.started_at.format("%F %T"),
                        a.patch
                            .as_ref()
                            .map(|p| format!(" with patch {p}"))
                            .unwrap_or_default()
                    );
                }
            }
        }
        JobsCommand::Find {
            idempotency_key,
            limit,
            json,
        } => {
            let jobs = store.jobs_by_key(&idempotency_key, limit).await?;
            if json {
                println!("{}", Value::Array(jobs.iter().map(job_json).collect()));
            } else if jobs.is_empty() {
                println!("no job carries idempotency key {}", shown(&idempotency_key));
            } else {
                for j in &jobs {
                    print_job(j);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Removes settled letters from the RabbitMQ dead-letter queues the filter
/// touches.
async fn sync_queues(
    store: &Store,
    conn: &courier_amqp::Link,
    publisher: &Publisher,
    topology: &Topology,
    filter: &DeadFilter,
    json: bool,
) -> anyhow::Result<()> {
    let sync = recovery::sync_affected_queues(store, conn, publisher, topology, filter)
        .await
        .context("syncing the RabbitMQ dead-letter queues")?;
    if !json && sync.removed > 0 {
        println!(
            "removed {} settled messages from the RabbitMQ dead-letter queues",
            sync.removed
        );
    }
    Ok(())
}

fn read_patch(arg: &str) -> anyhow::Result<Value> {
    let text = match arg.strip_prefix('@') {
        Some(file) => {
            std::fs::read_to_string(file).with_context(|| format!("reading patch file {file}"))?
        }
        None => arg.to_owned(),
    };
    let patch: Value = serde_json::from_str(&text).context("--patch is not valid JSON")?;
    if !patch.is_object() {
        bail!("--patch must be a JSON object (a merge patch for the payload)");
    }
    Ok(patch)
}

/// Asks on a terminal; without one, `--yes` is required.
fn confirm(change: &ChangeArgs, question: &str, count: i64) -> anyhow::Result<bool> {
    if change.yes || count == 0 {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        bail!("{question} Refusing without --yes when not on a terminal (or use --dry-run)");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

async fn preview(
    store: &Store,
    filter: &DeadFilter,
    count: i64,
    json: bool,
    what: &str,
) -> anyhow::Result<ExitCode> {
    let sample = store.list_dead(filter, &["pending"], 20).await?;
    if json {
        println!(
            "{}",
            json!({"dry_run": true, "action": what, "matched": count,
            "sample": sample.iter().map(|l| l.id).collect::<Vec<_>>()})
        );
    } else {
        println!("would {what} {count} dead letters; nothing changed. The first of them:");
        print_letters(&sample);
    }
    Ok(ExitCode::SUCCESS)
}

fn progress(len: i64, json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(u64::try_from(len).unwrap_or(0));
    bar.set_style(
        ProgressStyle::with_template("requeueing [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

fn report_action(verb: &str, report: &recovery::ActionReport, json: bool) {
    if json {
        println!(
            "{}",
            json!({"action": report.action, "matched": report.matched, verb: report.affected})
        );
    } else {
        println!(
            "{verb} {} of {} matching dead letters (action {})",
            report.affected, report.matched, report.action
        );
    }
}

/// Text from the store as it may be shown on a terminal: whatever a
/// publisher put in a job (an escape sequence, a NUL) is written out, not
/// interpreted.
pub fn shown(text: &str) -> String {
    courier_core::text::printable(text, 4096)
}

fn shown_opt(text: Option<&str>) -> String {
    text.map_or_else(|| "-".to_owned(), shown)
}

fn body_json(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

fn letter_json(l: &DeadLetterRecord) -> Value {
    json!({
        "id": l.id, "job_id": l.job_id, "provider": l.provider, "operation": l.operation,
        "reason": l.reason, "detail": l.detail, "attempts": l.attempts, "last_status": l.last_status,
        "last_error": l.last_error, "dead_at": l.dead_at, "status": l.status, "action_id": l.action_id,
        "job": body_json(&l.body),
    })
}

fn job_json(j: &courier_store::JobRecord) -> Value {
    json!({
        "id": j.id, "provider": j.provider, "operation": j.operation, "idempotency_key": j.idempotency_key,
        "state": j.state, "attempts": j.attempts, "generation": j.generation, "last_status": j.last_status,
        "last_error": j.last_error, "created_at": j.created_at, "updated_at": j.updated_at,
        "finished_at": j.finished_at, "duplicate_deliveries": j.duplicate_deliveries,
    })
}

fn attempts_json(attempts: &[courier_store::AttemptRecord]) -> Value {
    Value::Array(
        attempts
            .iter()
            .map(|a| json!({"attempt": a.attempt, "started_at": a.started_at, "duration_us": a.duration_us,
                "http_status": a.http_status, "error_class": a.error_class, "error": a.error,
                "trace_id": a.trace_id}))
            .collect(),
    )
}

fn print_letters(letters: &[DeadLetterRecord]) {
    println!(
        "{:<36}  {:<19}  {:<12} {:<18} {:>6}  DETAIL",
        "ID", "DEAD AT", "PROVIDER", "REASON", "STATUS"
    );
    for l in letters {
        let detail = courier_core::text::printable(&l.detail, 60);
        println!(
            "{:<36}  {:<19}  {:<12} {:<18} {:>6}  {detail}",
            l.id,
            l.dead_at.format("%F %T"),
            shown_opt(l.provider.as_deref()),
            shown(&l.reason),
            l.last_status.map_or("-".to_owned(), |s| s.to_string()),
        );
    }
}

fn print_letter(l: &DeadLetterRecord) {
    println!("dead letter {} [{}]", l.id, shown(&l.status));
    println!(
        "  job        {}",
        l.job_id.map_or("-".to_owned(), |j| j.to_string())
    );
    println!(
        "  provider   {} / {}",
        shown_opt(l.provider.as_deref()),
        shown_opt(l.operation.as_deref())
    );
    println!("  reason     {}: {}", shown(&l.reason), shown(&l.detail));
    println!(
        "  attempts   {}   last status {}",
        l.attempts,
        l.last_status.map_or("-".to_owned(), |s| s.to_string())
    );
    println!("  dead at    {}", l.dead_at.to_rfc3339());
    println!("  job        {}", body_json(&l.body));
}

fn print_job(j: &courier_store::JobRecord) {
    println!("job {} [{}]", j.id, shown(&j.state));
    println!(
        "  provider   {} / {}   key {}",
        shown(&j.provider),
        shown(&j.operation),
        shown(&j.idempotency_key)
    );
    println!(
        "  attempts   {} (generation {})   last status {}",
        j.attempts,
        j.generation,
        j.last_status.map_or("-".to_owned(), |s| s.to_string())
    );
    println!(
        "  created    {}   updated {}",
        j.created_at.to_rfc3339(),
        j.updated_at.to_rfc3339()
    );
}

fn print_attempts(attempts: &[courier_store::AttemptRecord]) {
    for a in attempts {
        println!(
            "  attempt {:>2}  {}  {:>8.1} ms  {:>4}  {:<14} {}{}",
            a.attempt,
            a.started_at.format("%F %T%.3f"),
            a.duration_us as f64 / 1000.0,
            a.http_status.map_or("-".to_owned(), |s| s.to_string()),
            shown(&a.error_class),
            a.error.as_deref().map(shown).unwrap_or_default(),
            a.trace_id
                .as_deref()
                .map_or(String::new(), |t| format!("  trace {t}")),
        );
    }
}
