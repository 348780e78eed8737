//! The `requeue` scenario: 100,000 dead letters sent back through the same
//! code path as `courier dead requeue`.

use anyhow::Context as _;
use courier_amqp::{Publisher, Topology};
use courier_core::envelope::JobEnvelope;
use courier_ops::recovery::{self, RequeueOptions};
use courier_store::{DeadFilter, Store};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

const PROVIDER: &str = "mockpay";

pub async fn requeue(
    letters: usize,
    batch: i64,
    json_out: Option<PathBuf>,
    keep: bool,
) -> anyhow::Result<ExitCode> {
    let config = courier_core::Config::from_toml("", "(bench)", &|k| std::env::var(k).ok())?;
    let namespace = super::harness::namespace("requeue");
    let store = Store::connect(&config.database, &namespace, 8).await?;
    store.migrate().await?;
    let conn = courier_amqp::connect(&config.broker, "courier bench").await?;
    let topology = Topology::new(&namespace, [PROVIDER]);
    let setup = conn.channel().await.context("opening a channel")?;
    topology.declare(&setup).await?;

    eprintln!("bench requeue: recording {letters} dead letters in {namespace} …");
    let setup_clock = Instant::now();
    let now = chrono::Utc::now();
    let mut made = 0;
    while made < letters {
        let n = (letters - made).min(5000);
        let outcomes: Vec<_> = (0..n)
            .map(|i| {
                let job = JobEnvelope::new(
                    PROVIDER,
                    "charge",
                    json!({"customer": format!("cus_{i}")}),
                    now,
                );
                courier_store::synthetic::dead_on_first_attempt(&job)
            })
            .collect();
        store.commit(&outcomes).await?;
        made += n;
    }
    let setup_secs = setup_clock.elapsed().as_secs_f64();

    let publisher = Publisher::open(&conn, config.broker.confirm_timeout).await?;
    let filter = DeadFilter {
        provider: Some(PROVIDER.into()),
        ..DeadFilter::default()
    };
    let options = RequeueOptions {
        actor: "bench".into(),
        patch: None,
        rate: None,
        batch,
        max_body_bytes: config.worker.max_body_bytes,
    };
    eprintln!("bench requeue: requeuing …");
    let clock = Instant::now();
    let report =
        recovery::requeue(&store, &publisher, &topology, &filter, &options, |_| {}).await?;
    let requeue_secs = clock.elapsed().as_secs_f64();
    let queued =
        courier_amqp::topology::message_count(&setup, &topology.work_queue(PROVIDER)).await?;
    let still_pending = store.count_pending(&DeadFilter::default()).await?;
    let exact = report.affected == letters as u64
        && u64::from(queued) == report.affected
        && still_pending == 0;

    let result = json!({
        "scenario": "requeue",
        "letters": letters,
        "batch": batch,
        "setup_seconds": setup_secs,
        "requeue_seconds": requeue_secs,
        "letters_per_second": letters as f64 / requeue_secs,
        "requeued": report.affected,
        "messages_in_work_queue": queued,
        "still_pending": still_pending,
        "exactly_once": exact,
    });
    println!("scenario        requeue");
    println!("letters         {letters}");
    println!("batch           {batch} per claim");
    println!(
        "requeue time    {requeue_secs:.2} s   ({:.0} letters/s)",
        letters as f64 / requeue_secs
    );
    println!(
        "republished     {queued} messages in {}",
        topology.work_queue(PROVIDER)
    );
    println!("exactly once    {}", if exact { "yes" } else { "NO" });
    if let Some(path) = json_out {
        std::fs::write(&path, serde_json::to_string_pretty(&result)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if !keep {
        topology.teardown(&setup).await?;
        store.drop_schema().await?;
    }
    let _ = conn.close("bench done").await;
    Ok(if exact {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
