//! `courier events …`: the webhook event log `courier ingest` records:
//! list it, read an event, replay events as new jobs.
//!
//! Owns the event log's terminal: filters from flags (a time as RFC 3339
//! or as an age), tables for people, `--json` for scripts (the admin API's
//! documents), confirmation before a replay, progress while it runs. The
//! helpers are `courier dead`'s (`operator.rs`); every verb is courier-ops's
//! `Operator`, the same code the admin API runs.

use crate::operator::{
    ChangeArgs, WIDTH, actor, age, confirm, fit, found, open, print_json, progress, report_action,
    show_preview, wrap,
};
use chrono::{DateTime, Utc};
use courier_ops::views::{BodyEncoding, EventDetail, EventView};
use courier_ops::{EventQuery, Operator, Replay};
use std::path::Path;
use std::process::ExitCode;
use uuid::Uuid;

#[derive(Debug, clap::Subcommand)]
pub enum EventsCommand {
    /// List recorded webhook events, newest first
    List {
        #[command(flatten)]
        filter: EventFilterArgs,
        /// Most events listed (1 to 1000)
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=courier_ops::MAX_LIST))]
        limit: i64,
        /// Only events older than this one (its id): the next page
        #[arg(long)]
        before: Option<Uuid>,
        /// Print JSON (the admin API's document) instead of a table
        #[arg(long)]
        json: bool,
    },
    /// One event: its headers and body, the job it became, its replays
    Show {
        /// The event's id (from `events list`)
        id: Uuid,
        /// Print JSON (the admin API's document) instead of text
        #[arg(long)]
        json: bool,
    },
    /// Enqueue events again, each once, as new jobs of one audited action
    Replay {
        /// Event ids (or use the filters)
        ids: Vec<Uuid>,
        #[command(flatten)]
        filter: EventFilterArgs,
        /// Every recorded event (the filters still narrow): needed when
        /// neither ids nor a filter are given
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        change: ChangeArgs,
    },
}

#[derive(Debug, clap::Args)]
pub struct EventFilterArgs {
    /// Only this source's events (a name under ingest.sources)
    #[arg(long)]
    source: Option<String>,
    /// Only the event its sender gave this id (or sha256:<hex> of its body)
    #[arg(long)]
    event_id: Option<String>,
    /// Received at or after: RFC 3339, or an age such as 90m, 12h, 7d
    #[arg(long, value_parser = when)]
    since: Option<DateTime<Utc>>,
    /// Received before: RFC 3339, or an age such as 90m, 12h, 7d
    #[arg(long, value_parser = when)]
    until: Option<DateTime<Utc>>,
}

impl EventFilterArgs {
    fn query(self) -> EventQuery {
        EventQuery {
            source: self.source,
            event_id: self.event_id,
            since: self.since,
            until: self.until,
        }
    }
}

/// A moment: an RFC 3339 timestamp, or an age (`30d`: thirty days ago).
fn when(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = s.parse::<DateTime<Utc>>() {
        return Ok(at);
    }
    let ago = age(s).map_err(|_| {
        format!("{s:?}: expected an RFC 3339 time or an age such as 90m, 12h or 7d")
    })?;
    chrono::Duration::from_std(ago)
        .ok()
        .and_then(|ago| Utc::now().checked_sub_signed(ago))
        .ok_or_else(|| format!("{s:?}: further back than time goes"))
}

pub async fn events(config: Option<&Path>, command: EventsCommand) -> anyhow::Result<ExitCode> {
    let ops = open(config, "courier events").await?;
    let done = events_with(&ops, command).await;
    ops.close().await;
    done
}

async fn events_with(ops: &Operator, command: EventsCommand) -> anyhow::Result<ExitCode> {
    match command {
        EventsCommand::List {
            filter,
            limit,
            before,
            json,
        } => {
            let events = ops.list_events(&filter.query(), limit, before).await?;
            if json {
                print_json(&events)?;
            } else {
                print_events(&events);
            }
        }
        EventsCommand::Show { id, json } => {
            let detail = match found(ops.show_event(id).await)? {
                Ok(detail) => detail,
                Err(code) => return Ok(code),
            };
            if json {
                print_json(&detail)?;
            } else {
                print_event(&detail);
            }
        }
        EventsCommand::Replay {
            ids,
            filter,
            all,
            change,
        } => {
            let replay = Replay {
                ids,
                query: filter.query(),
                all,
            };
            let preview = ops.preview_replay(&replay).await?;
            let question = format!("Replay {} events as new jobs?", preview.matched);
            if change.dry_run || !confirm(&change, &question, preview.matched)? {
                return show_preview(&preview, change.json, "replay", "events");
            }
            let bar = progress("replaying", preview.matched, change.json);
            let result = ops
                .replay_events(replay, &actor(change.actor), |n| bar.set_position(n))
                .await?;
            bar.finish_and_clear();
            report_action("replayed", "events", &result, change.json)?;
            let missed = u64::try_from(result.matched)
                .unwrap_or(0)
                .saturating_sub(result.affected);
            if !change.json && missed > 0 {
                println!("{missed} not replayed: `courier audit` says why (the action's error)");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_events(events: &[EventView]) {
    println!("{:<36}  {:<19}  SOURCE", "ID", "RECEIVED AT");
    println!("  EVENT ID (BODY SIZE)");
    for e in events {
        println!(
            "{:<36}  {:<19}  {}",
            e.id,
            e.received_at.format("%F %T"),
            fit(&e.source, WIDTH - 59)
        );
        let size = format!(" ({} bytes)", e.body_bytes);
        println!(
            "  {}{size}",
            fit(&e.event_id, WIDTH - 2 - size.chars().count())
        );
    }
}

fn print_event(d: &EventDetail) {
    let e = &d.event;
    println!("event {}", e.id);
    println!("  source     {}", fit(&e.source, WIDTH - 13));
    println!("  event id   {}", fit(&e.event_id, WIDTH - 13));
    println!("  received   {}", e.received_at.format("%F %T%.3f %Z"));
    let state = d.job.as_ref().map_or_else(
        || "not recorded by a worker yet".to_owned(),
        |j| j.state.to_string(),
    );
    println!("  job        {} [{state}]", e.job_id);
    if !d.headers.is_empty() {
        println!("  headers");
        for (name, value) in &d.headers {
            println!("    {}", fit(&format!("{name}: {value}"), WIDTH - 4));
        }
    }
    match d.body_encoding {
        BodyEncoding::Utf8 => {
            println!("  body ({} bytes)", e.body_bytes);
            let pretty = serde_json::from_str::<serde_json::Value>(&d.body)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok());
            for line in pretty.as_deref().unwrap_or(&d.body).lines() {
                println!("    {}", fit(line, WIDTH - 4));
            }
        }
        BodyEncoding::Base64 => {
            println!("  body ({} bytes, not UTF-8; as base64)", e.body_bytes);
            for line in wrap(&d.body, WIDTH - 4) {
                println!("    {line}");
            }
        }
    }
    for r in &d.replays {
        println!("  replay     action {}", r.action_id);
        let state = r
            .job_state
            .map_or_else(|| "not recorded yet".to_owned(), |s| s.to_string());
        println!("             job {} [{state}]", r.job_id);
        match r.published_at {
            Some(at) => println!("             published {}", at.format("%F %T")),
            None => println!("             never confirmed: not published"),
        }
    }
}
