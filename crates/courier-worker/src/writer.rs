//! The outcome writer: group commit, then ack.
//!
//! Owns the moment a delivery is acknowledged. Outcomes arrive on a channel;
//! the writer takes as many as are waiting (up to the batch limit), commits
//! them in one transaction, and only then acks their deliveries. It must
//! never ack before the commit returns.

use crate::patience::persist;
use courier_amqp::Acker;
use courier_store::{Outcome, Store};
use futures_util::future::join_all;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// An outcome and the delivery it settles.
#[derive(Debug)]
pub struct Completed {
    pub outcome: Outcome,
    pub acker: Acker,
}

/// Runs until every sender is dropped and the channel is drained, or until
/// `abandon` fires while a commit keeps failing (its deliveries then stay
/// unacked and come back).
pub async fn run(
    store: Store,
    mut rx: mpsc::Receiver<Completed>,
    batch_max: usize,
    abandon: CancellationToken,
) {
    let mut batch: Vec<Completed> = Vec::with_capacity(batch_max);
    while rx.recv_many(&mut batch, batch_max).await > 0 {
        let (outcomes, ackers): (Vec<Outcome>, Vec<Acker>) =
            batch.drain(..).map(|c| (c.outcome, c.acker)).unzip();
        if persist("recording outcomes", &abandon, || store.commit(&outcomes))
            .await
            .is_err()
        {
            tracing::error!(
                outcomes = outcomes.len(),
                "gave up recording outcomes; their deliveries will be redelivered"
            );
            return;
        }
        let acks = join_all(ackers.iter().map(courier_amqp::ack)).await;
        for result in acks {
            if let Err(e) = result {
                // The outcome is durable; a redelivery will be seen as a duplicate.
                tracing::warn!(error = %e, "ack after commit failed");
            }
        }
    }
}
