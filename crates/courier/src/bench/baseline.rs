//! The broker's own limit on this machine: confirmed publishes of job-sized
//! persistent messages to a quorum work queue, then consume and ack with the
//! worker's prefetch. No HTTP, no database: what no worker can beat.
//!
//! Owns that measurement. It must never use anything but the broker.

use super::harness::Bench;
use courier_provider::FailureMix;
use futures_util::StreamExt;
use serde::Serialize;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Baseline {
    pub messages: u64,
    pub publish_seconds: f64,
    pub publish_per_second: f64,
    pub consume_seconds: f64,
    /// Consume + ack: the ceiling of a drain.
    pub consume_per_second: f64,
    /// Every process on the machine while consuming (mostly the broker).
    pub consume_machine_cpu_seconds_per_1000: f64,
}

pub async fn measure(messages: u64) -> anyhow::Result<Baseline> {
    let bench = Bench::new("baseline", vec!["mockpay".into()], FailureMix::default()).await?;
    eprintln!("baseline: publishing {messages} messages (confirmed) …");
    let published = bench.publish(messages as usize).await?;
    let queue = bench.topology.work_queue("mockpay");
    eprintln!("baseline: consuming and acking …");
    let prefetch = bench.config.broker.prefetch;
    let (channel, mut deliveries) =
        courier_amqp::consume(&bench.conn, &queue, prefetch, "baseline").await?;
    let machine_before = super::harness::machine_cpu_seconds()?;
    let clock = Instant::now();
    let mut received = 0u64;
    let mut acks = futures_util::stream::FuturesUnordered::new();
    while received < messages {
        tokio::select! {
            next = deliveries.next() => match next {
                Some(Ok(delivery)) => {
                    received += 1;
                    acks.push(async move { courier_amqp::ack(&delivery.acker).await });
                }
                Some(Err(e)) => return Err(e.into()),
                None => anyhow::bail!("the broker cancelled the baseline consumer"),
            },
            Some(result) = acks.next(), if !acks.is_empty() => result?,
        }
    }
    while let Some(result) = acks.next().await {
        result?;
    }
    let consumed = clock.elapsed();
    let machine = super::harness::machine_cpu_seconds()? - machine_before;
    courier_amqp::cancel(&channel, &deliveries).await?;
    drop(deliveries);
    bench.cleanup().await?;
    Ok(Baseline {
        messages,
        publish_seconds: published.as_secs_f64(),
        publish_per_second: per_second(messages, published),
        consume_seconds: consumed.as_secs_f64(),
        consume_per_second: per_second(messages, consumed),
        consume_machine_cpu_seconds_per_1000: machine / messages as f64 * 1000.0,
    })
}

fn per_second(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}
