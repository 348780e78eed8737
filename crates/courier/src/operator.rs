//! `courier dead …` and `courier jobs …`: find, understand, fix and requeue
//! failed jobs.
//!
//! Owns the operator's terminal: filters from flags, tables for people,
//! `--json` for scripts (the admin API's documents, from courier-ops),
//! confirmation before changes, progress on long requeues (these helpers
//! serve `courier events`, `events.rs`, too). Every verb is courier-ops's
//! `Operator`, the same code the admin API runs.

use crate::exit;
use crate::settings;
use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use courier_core::DeadReason;
use courier_ops::views::{ActionResult, AttemptView, DeadLetterView, JobView};
use courier_ops::{DeadQuery, Operator, OpsError, Purge, Requeue};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::Value;
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
        /// Most letters listed (1 to 1000)
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print JSON (the admin API's document) instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Pending dead letters counted by provider and reason
    Stats {
        #[command(flatten)]
        filter: FilterArgs,
        /// Print JSON (the admin API's document) instead of a table
        #[arg(long)]
        json: bool,
    },
    /// One dead letter: the job, its payload and its attempt timeline
    Show {
        /// The dead letter's id (from `dead list`)
        id: Uuid,
        /// Print JSON (the admin API's document) instead of text
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
        /// Dead letter ids (or use the filters)
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
        /// The job's id
        id: Uuid,
        /// Print JSON (the admin API's document) instead of text
        #[arg(long)]
        json: bool,
    },
    /// Jobs carrying an idempotency key
    Find {
        /// The idempotency key the job carried
        #[arg(long)]
        idempotency_key: String,
        /// Most jobs listed, oldest first
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=courier_ops::MAX_LIST))]
        limit: i64,
        /// Print JSON (the admin API's document) instead of text
        #[arg(long)]
        json: bool,
    },
    /// Delete attempt rows of jobs that succeeded long ago (dead letters stay)
    Prune {
        /// Age [default: retention.succeeded_attempts_days from the config]
        #[arg(long, value_parser = age)]
        older_than: Option<Duration>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Most actions listed, newest first
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=courier_ops::MAX_LIST))]
    limit: i64,
    /// Only actions older than this one (its id): the next page
    #[arg(long)]
    before: Option<Uuid>,
    /// Print JSON (the admin API's document) instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct FilterArgs {
    /// Only this provider's letters
    #[arg(long)]
    provider: Option<String>,
    /// Only this operation's letters
    #[arg(long)]
    operation: Option<String>,
    /// permanent, retries_exhausted, invalid, delivery_limit, refused or unreadable
    #[arg(long, value_parser = reason)]
    reason: Option<DeadReason>,
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
    pub(crate) dry_run: bool,
    /// Do not ask for confirmation
    #[arg(long)]
    pub(crate) yes: bool,
    /// Who is acting (recorded) [default: the OS user]
    #[arg(long)]
    pub(crate) actor: Option<String>,
    /// Print JSON (the admin API's document) instead of text
    #[arg(long)]
    pub(crate) json: bool,
}

/// A reason is one of the six words, refused at the command line otherwise.
fn reason(s: &str) -> Result<DeadReason, String> {
    DeadReason::parse(s).ok_or_else(|| {
        let known: Vec<&str> = DeadReason::ALL.iter().map(|r| r.as_str()).collect();
        format!("not a reason; one of {}", known.join(", "))
    })
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
    fn query(self) -> DeadQuery {
        DeadQuery {
            provider: self.provider,
            operation: self.operation,
            reason: self.reason,
            status: self.status,
            since: self.since,
            until: self.until,
            search: self.search,
        }
    }
}

pub(crate) async fn open(config: Option<&Path>, name: &str) -> anyhow::Result<Operator> {
    let config = settings::load(config)?;
    Ok(Operator::connect(&config, name, 4).await?)
}

/// Prints `doc` as JSON on one line: the admin API's document.
pub(crate) fn print_json(doc: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(doc)?);
    Ok(())
}

/// A verb's answer, or the exit code for what was not found.
pub fn found<T>(answer: Result<T, OpsError>) -> anyhow::Result<Result<T, ExitCode>> {
    match answer {
        Ok(v) => Ok(Ok(v)),
        Err(e @ OpsError::NotFound { .. }) => {
            eprintln!("error: {e}");
            Ok(Err(ExitCode::from(exit::NOT_FOUND)))
        }
        Err(e) => Err(e.into()),
    }
}

pub fn actor(given: Option<String>) -> String {
    given
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

pub async fn dead(config: Option<&Path>, command: DeadCommand) -> anyhow::Result<ExitCode> {
    let ops = open(config, "courier dead").await?;
    let done = dead_with(&ops, command).await;
    ops.close().await;
    done
}

async fn dead_with(ops: &Operator, command: DeadCommand) -> anyhow::Result<ExitCode> {
    match command {
        DeadCommand::List {
            filter,
            all,
            limit,
            json,
        } => {
            let letters = ops.list_dead(&filter.query(), all, limit).await?;
            if json {
                print_json(&letters)?;
            } else {
                print_letters(&letters);
            }
        }
        DeadCommand::Stats { filter, json } => {
            let stats = ops.dead_stats(&filter.query()).await?;
            if json {
                print_json(&stats)?;
            } else {
                println!("{:<24} {:<18} {:>8}", "PROVIDER", "REASON", "PENDING");
                for s in &stats {
                    println!(
                        "{:<24} {:<18} {:>8}",
                        shown_opt(s.provider.as_deref()),
                        s.reason.as_str(),
                        s.pending
                    );
                }
                println!(
                    "{:<24} {:<18} {:>8}",
                    "total",
                    "",
                    stats.iter().map(|s| s.pending).sum::<i64>()
                );
            }
        }
        DeadCommand::Show { id, json } => {
            let detail = match found(ops.dead_letter(id).await)? {
                Ok(detail) => detail,
                Err(code) => return Ok(code),
            };
            if json {
                print_json(&detail)?;
            } else {
                print_letter(&detail.letter);
                if let Some(owner) = &detail.owner {
                    println!("  owner      {}", fit(owner, WIDTH - 13));
                }
                if let Some(runbook) = &detail.runbook {
                    println!("  runbook    {}", fit(runbook, WIDTH - 13));
                }
                print_attempts(&detail.job_attempts);
            }
        }
        DeadCommand::Requeue {
            ids,
            filter,
            change,
            patch,
            rate,
        } => {
            let requeue = Requeue {
                ids,
                query: filter.query(),
                patch: patch.map(|p| read_patch(&p)).transpose()?,
                rate,
            };
            let preview = ops.preview_requeue(&requeue).await?;
            let question = format!("Requeue {} dead letters?", preview.matched);
            if change.dry_run || !confirm(&change, &question, preview.matched)? {
                return show_preview(&preview, change.json, "requeue", "dead letters");
            }
            let bar = progress("requeueing", preview.matched, change.json);
            let result = ops
                .requeue(requeue, &actor(change.actor), |n| bar.set_position(n))
                .await?;
            bar.finish_and_clear();
            report_action("requeued", "dead letters", &result, change.json)?;
        }
        DeadCommand::Purge {
            ids,
            filter,
            change,
            older_than,
        } => {
            let purge = Purge {
                ids,
                query: filter.query(),
                older_than,
            };
            let preview = ops.preview_purge(&purge).await?;
            let question = format!("Purge {} dead letters?", preview.matched);
            if change.dry_run || !confirm(&change, &question, preview.matched)? {
                return show_preview(&preview, change.json, "purge", "dead letters");
            }
            let result = ops.purge(purge, &actor(change.actor)).await?;
            report_action("purged", "dead letters", &result, change.json)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn jobs(config: Option<&Path>, command: JobsCommand) -> anyhow::Result<ExitCode> {
    let ops = open(config, "courier jobs").await?;
    let done = jobs_with(&ops, command).await;
    ops.close().await;
    done
}

async fn jobs_with(ops: &Operator, command: JobsCommand) -> anyhow::Result<ExitCode> {
    match command {
        JobsCommand::Prune { older_than, json } => {
            let config = ops.config();
            let Some(age) = older_than.or(config.retention.succeeded_attempts) else {
                bail!(
                    "give --older-than, or set retention.succeeded_attempts_days in {}",
                    config.source
                );
            };
            let cutoff = Utc::now()
                - chrono::Duration::from_std(age).context("--older-than is too large")?;
            let pruned = ops.prune(cutoff).await?;
            if json {
                print_json(&serde_json::json!({"pruned_attempts": pruned, "cutoff": cutoff}))?;
            } else {
                println!(
                    "deleted {pruned} attempt rows of jobs that succeeded before {}",
                    cutoff.to_rfc3339()
                );
            }
        }
        JobsCommand::Show { id, json } => {
            let timeline = match found(ops.job(id).await)? {
                Ok(timeline) => timeline,
                Err(code) => return Ok(code),
            };
            if json {
                print_json(&timeline)?;
            } else {
                print_job(&timeline.job);
                print_attempts(&timeline.attempts);
                for l in &timeline.dead_letters {
                    println!(
                        "  dead       {} [{}]",
                        l.dead_at.format("%F %T"),
                        l.status.as_str()
                    );
                    println!("             letter {}", l.id);
                    println!("             {}", fit(&l.detail, WIDTH - 13));
                }
                for a in &timeline.operator_actions {
                    let what = format!("{} by {}", a.action, a.actor);
                    println!(
                        "  {:<10} {} at {}",
                        "operator",
                        fit(&what, 40),
                        a.started_at.format("%F %T")
                    );
                    if let Some(patch) = &a.patch {
                        println!("             patch {}", fit(&patch.to_string(), WIDTH - 19));
                    }
                }
            }
        }
        JobsCommand::Find {
            idempotency_key,
            limit,
            json,
        } => {
            let jobs = ops.find_jobs(&idempotency_key, limit).await?;
            if json {
                print_json(&jobs)?;
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
pub(crate) fn confirm(change: &ChangeArgs, question: &str, count: i64) -> anyhow::Result<bool> {
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

/// A dry run's answer: how many `noun` it would `what`, and which.
pub(crate) fn show_preview(
    preview: &ActionResult,
    json: bool,
    what: &str,
    noun: &str,
) -> anyhow::Result<ExitCode> {
    if json {
        print_json(preview)?;
    } else {
        println!(
            "would {what} {} {noun}; nothing changed. The first of them: {}",
            preview.matched,
            preview
                .sample
                .iter()
                .map(Uuid::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A progress bar on a terminal, `doing` what (e.g. "requeueing").
pub(crate) fn progress(doing: &str, len: i64, json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(u64::try_from(len).unwrap_or(0));
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{doing} [{{bar:40}}] {{pos}}/{{len}} {{per_sec}} eta {{eta}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

/// What an action did: how many `noun` it `verb`, of how many matching.
pub(crate) fn report_action(
    verb: &str,
    noun: &str,
    result: &ActionResult,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        return print_json(result);
    }
    println!(
        "{verb} {} of {} matching {noun} (action {})",
        result.affected,
        result.matched,
        result
            .action_id
            .map_or_else(|| "-".to_owned(), |a| a.to_string())
    );
    if result.removed_from_queues > 0 {
        println!(
            "removed {} settled messages from the RabbitMQ dead-letter queues",
            result.removed_from_queues
        );
    }
    Ok(())
}

pub async fn audit(config: Option<&Path>, args: AuditArgs) -> anyhow::Result<ExitCode> {
    let ops = open(config, "courier audit").await?;
    let actions = ops.actions(args.limit, args.before).await;
    ops.close().await;
    let actions = actions?;
    if args.json {
        print_json(&actions)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<19}  {:<8}  {:<30}  {:>7}  {:>8}",
        "STARTED", "ACTION", "ACTOR", "MATCHED", "AFFECTED"
    );
    for a in &actions {
        println!(
            "{:<19}  {:<8}  {:<30}  {:>7}  {:>8}",
            a.started_at.format("%F %T"),
            a.action.as_str(),
            fit(&a.actor, 31),
            a.matched,
            a.affected
        );
        println!("  id {}", a.id);
        println!("  filter {}", fit(&a.filter.to_string(), WIDTH - 9));
        if let Some(patch) = &a.patch {
            println!("  patch {}", fit(&patch.to_string(), WIDTH - 8));
        }
        match (&a.error, a.finished_at) {
            (Some(error), _) => println!("  error: {}", fit(error, WIDTH - 9)),
            (None, None) => println!("  not finished"),
            (None, Some(_)) => {}
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Text from the store as it may be shown on a terminal: whatever a
/// publisher put in a job (an escape sequence, a NUL) is written out, not
/// interpreted.
pub fn shown(text: &str) -> String {
    courier_core::text::printable(text, 4096)
}

pub(crate) fn shown_opt(text: Option<&str>) -> String {
    text.map_or_else(|| "-".to_owned(), shown)
}

/// Tables and records fit an 80-column terminal: a long field is cut
/// (`…`), and what does not fit a row goes on an indented line of its own.
pub const WIDTH: usize = 80;

/// `text` as it may be shown, cut to `width` characters.
pub fn fit(text: &str, width: usize) -> String {
    // printable() adds the `…` after its bound.
    courier_core::text::printable(text, width.saturating_sub(1))
}

pub(crate) fn status_of(status: Option<i16>) -> String {
    status.map_or("-".to_owned(), |s| s.to_string())
}

fn print_letters(letters: &[DeadLetterView]) {
    println!("{:<36}  {:<19}  {:>4}  REASON", "ID", "DEAD AT", "HTTP");
    println!("  PROVIDER / OPERATION: DETAIL");
    for l in letters {
        println!(
            "{:<36}  {:<19}  {:>4}  {}",
            l.id,
            l.dead_at.format("%F %T"),
            status_of(l.last_status),
            l.reason.as_str(),
        );
        let place = format!(
            "{} / {}",
            shown_opt(l.provider.as_deref()),
            shown_opt(l.operation.as_deref())
        );
        let line = format!("{}: {}", fit(&place, 30), shown(&l.detail));
        println!("  {}", fit(&line, WIDTH - 2));
    }
}

fn print_letter(l: &DeadLetterView) {
    println!("dead letter {} [{}]", l.id, l.status);
    println!(
        "  job        {}",
        l.job_id.map_or("-".to_owned(), |j| j.to_string())
    );
    let place = format!(
        "{} / {}",
        shown_opt(l.provider.as_deref()),
        shown_opt(l.operation.as_deref())
    );
    println!("  provider   {}", fit(&place, WIDTH - 13));
    println!("  reason     {}", l.reason);
    for line in wrap(&shown(&l.detail), WIDTH - 13) {
        println!("             {line}");
    }
    println!(
        "  attempts   {}   last status {}",
        l.attempts,
        status_of(l.last_status)
    );
    println!("  dead at    {}", l.dead_at.format("%F %T%.3f %Z"));
    println!("  job");
    let job = serde_json::to_string_pretty(&l.job).unwrap_or_default();
    for line in job.lines() {
        println!("    {}", fit(line, WIDTH - 4));
    }
}

/// `text` in lines of at most `width` characters, broken at spaces where
/// it can be.
pub(crate) fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let mut word = word.to_owned();
        while word.chars().count() > width {
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            let head: String = word.chars().take(width).collect();
            word = word.chars().skip(width).collect();
            lines.push(head);
        }
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

fn print_job(j: &JobView) {
    println!("job {} [{}]", j.id, j.state);
    let place = format!("{} / {}", shown(&j.provider), shown(&j.operation));
    println!("  provider   {}", fit(&place, WIDTH - 13));
    println!("  key        {}", fit(&j.idempotency_key, WIDTH - 13));
    println!(
        "  attempts   {} (generation {})   last status {}",
        j.attempts,
        j.generation,
        status_of(j.last_status)
    );
    println!(
        "  created    {}   updated {}",
        j.created_at.format("%F %T"),
        j.updated_at.format("%F %T")
    );
    if j.duplicate_deliveries > 0 {
        println!(
            "  duplicates {} deliveries after it was done, acked without a call",
            j.duplicate_deliveries
        );
    }
}

fn print_attempts(attempts: &[AttemptView]) {
    for a in attempts {
        println!(
            "  attempt {:>2}  {}  {:>8.1} ms  {:>4}  {}",
            a.attempt,
            a.started_at.format("%F %T%.3f"),
            a.duration_us as f64 / 1000.0,
            status_of(a.http_status),
            fit(&a.error_class, 14),
        );
        if let Some(error) = &a.error {
            println!("             {}", fit(error, WIDTH - 13));
        }
        if let Some(trace) = &a.trace_id {
            println!("             trace {}", fit(trace, WIDTH - 19));
        }
    }
}
