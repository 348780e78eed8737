//! Batched idempotency lookups: what PostgreSQL holds of each delivered job.
//!
//! Owns turning many concurrent "what is recorded of job X?" questions into
//! one query: requests queue on a channel and the lookup task answers all
//! that are waiting with one `WHERE id = ANY(…)`. Under load a query serves
//! dozens of deliveries; alone, a request waits for nothing but its own
//! query, unless `worker.linger_ms` asks a small batch to wait for company
//! ([`crate::gather`]). It must never answer from a cache: every answer comes from a query
//! issued after the question was asked.

use crate::gather::gather;
use crate::patience::{Abandoned, Io, persist};
use courier_core::StoredProgress;
use courier_store::{HeldConnection, Store};
use courier_telemetry::Metrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Most ids in one query.
const BATCH_MAX: usize = 512;
/// Queries running at once. More means smaller batches and more of
/// PostgreSQL's CPU per job; two keep one batch forming while one runs.
pub(crate) const QUERIES_IN_FLIGHT: usize = 2;

type Request = (Uuid, oneshot::Sender<Option<StoredProgress>>);

/// A handle to the lookup task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ProgressLookup {
    requests: mpsc::Sender<Request>,
}

impl ProgressLookup {
    /// Starts the lookup task; it ends when every handle is dropped.
    /// Each query slot keeps its own connection when `keep`.
    /// A small batch of requests waits `linger` for company.
    pub fn start(
        store: &Store,
        keep: bool,
        linger: Duration,
        metrics: Arc<Metrics>,
        abandon: CancellationToken,
    ) -> Self {
        let (requests, rx) = mpsc::channel(4 * BATCH_MAX);
        let slots = (0..QUERIES_IN_FLIGHT)
            .map(|_| store.held_connection(keep))
            .collect();
        tokio::spawn(run(slots, linger, metrics, abandon, rx));
        Self { requests }
    }

    /// What is recorded of `id` (`None`: never attempted). `Err` when
    /// shutdown abandoned the lookup.
    pub async fn get(&self, id: Uuid) -> Result<Option<StoredProgress>, Abandoned> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send((id, reply))
            .await
            .map_err(|_| Abandoned)?;
        answer.await.map_err(|_| Abandoned)
    }
}

async fn run(
    slots: Vec<HeldConnection>,
    linger: Duration,
    metrics: Arc<Metrics>,
    abandon: CancellationToken,
    mut rx: mpsc::Receiver<Request>,
) {
    // A free slot is a connection no query is using.
    let (free, mut freed) = mpsc::channel(slots.len());
    for slot in slots {
        let _ = free.try_send(slot);
    }
    loop {
        let Some(slot) = freed.recv().await else {
            return;
        };
        let mut batch: Vec<Request> = Vec::with_capacity(BATCH_MAX);
        if gather(&mut rx, &mut batch, BATCH_MAX, linger).await == 0 {
            return;
        }
        let (metrics, abandon, free) = (metrics.clone(), abandon.clone(), free.clone());
        tokio::spawn(async move {
            let ids: Vec<Uuid> = batch.iter().map(|(id, _)| *id).collect();
            // On abandon, dropping the replies tells every waiting delivery
            // it was abandoned; it goes back to its queue.
            // A refused read (a row this worker cannot understand) is not
            // a job never attempted: the deliveries wait, the worker says so.
            if let Ok(progress) =
                persist(Io::ReadProgress, &abandon, &metrics, || slot.progress(&ids)).await
            {
                for (id, reply) in batch {
                    let _ = reply.send(progress.get(&id).copied());
                }
            }
            let _ = free.try_send(slot);
        });
    }
}
