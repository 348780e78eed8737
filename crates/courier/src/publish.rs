//! `courier publish`: what an upstream service does, from the command line.
//!
//! Owns turning a JSON document into a v1 job (filling `version`, `id` and
//! `created_at` when absent), validating it against the contract, and
//! publishing it with a confirm. `--raw` sends the bytes untouched, which is
//! how the tests publish deliberately broken jobs.

use crate::settings;
use anyhow::Context as _;
use courier_amqp::{Publisher, Topology};
use courier_core::Job;
use serde_json::Value;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Read the job from this file [default: stdin]
    #[arg(long)]
    file: Option<PathBuf>,
    /// Publish the bytes as they are, unvalidated, with this routing key
    #[arg(long, value_name = "PROVIDER")]
    raw: Option<String>,
    /// W3C traceparent header to attach
    #[arg(long)]
    traceparent: Option<String>,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

pub async fn publish(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let config = settings::load(config)?;
    let body = match &args.file {
        Some(f) => std::fs::read(f).with_context(|| format!("reading job file {}", f.display()))?,
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("reading the job from stdin")?;
            buf
        }
    };
    let source = args
        .file
        .as_ref()
        .map_or_else(|| "stdin".to_owned(), |f| f.display().to_string());
    let (routing_key, id, body) = match &args.raw {
        Some(key) => (
            key.clone(),
            Job::claimed_id(&body).unwrap_or_else(uuid::Uuid::now_v7),
            body,
        ),
        None => {
            let body = complete(&body).with_context(|| format!("job in {source}"))?;
            let job = Job::parse(&body, config.worker.max_body_bytes)
                .with_context(|| format!("job in {source}"))?;
            (job.provider, job.id, body)
        }
    };
    let conn = courier_amqp::connect(&config.broker, "courier publish").await?;
    let topology = Topology::new(&config.namespace, [routing_key.as_str()]);
    let publisher = Publisher::open(&conn, config.broker.confirm_timeout).await?;
    publisher
        .publish_job(
            &topology,
            &routing_key,
            id,
            &body,
            args.traceparent.as_deref(),
        )
        .await?;
    let _ = conn.close("published").await;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"id": id, "provider": routing_key, "confirmed": true})
        );
    } else {
        println!(
            "published job {id} to {}.jobs with key {routing_key:?} (confirmed)",
            config.namespace
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Fills the fields an upstream may leave to us: `version`, `id`, `created_at`.
fn complete(body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut value: Value = serde_json::from_slice(body).context("not valid JSON")?;
    let obj = value
        .as_object_mut()
        .context("a job must be a JSON object")?;
    obj.entry("version")
        .or_insert(Value::from(courier_core::envelope::CONTRACT_VERSION));
    obj.entry("id")
        .or_insert_with(|| Value::from(uuid::Uuid::now_v7().to_string()));
    obj.entry("created_at")
        .or_insert_with(|| Value::from(chrono::Utc::now().to_rfc3339()));
    Ok(serde_json::to_vec(&value)?)
}
