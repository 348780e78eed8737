//! The outcome writer's isolation of refused outcomes, against the real
//! PostgreSQL: one outcome it cannot store must not keep the others out.

use courier_store::Outcome;
use courier_store::synthetic::dead_on_first_attempt;
use courier_testkit::TestEnv;
use courier_worker::observe::Running;
use courier_worker::writer::{Recorded, commit_isolating};
use std::sync::atomic::Ordering;
use tokio_util::sync::CancellationToken;

/// An outcome PostgreSQL refuses: a NUL in a `text` column. The pipeline
/// never builds one (input is validated where it enters); the writer must
/// cope anyway.
fn unstorable(env: &TestEnv) -> Outcome {
    let mut outcome = dead_on_first_attempt(&env.job(None));
    if let Outcome::Attempted { job, .. } = &mut outcome {
        job.idempotency_key = "order\u{0}42".into();
    }
    outcome
}

#[tokio::test]
async fn a_refused_outcome_is_isolated_and_the_rest_of_its_batch_committed() {
    let env = TestEnv::new().await;
    let metrics = courier_telemetry::Metrics::new(&env.config().providers, "test");
    let running = Running::default();
    let mut batch: Vec<Outcome> = (0..7)
        .map(|_| dead_on_first_attempt(&env.job(None)))
        .collect();
    batch[2] = unstorable(&env);
    batch[5] = unstorable(&env);

    let recorded = commit_isolating(
        &env.store.held_connection(true),
        &metrics,
        &CancellationToken::new(),
        &running,
        &batch,
    )
    .await
    .expect("not abandoned");
    let refused: Vec<usize> = recorded
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(r, Recorded::Refused(_)))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(refused, [2, 5]);
    for (outcome, recorded) in batch.iter().zip(&recorded) {
        let id = outcome.job_id().expect("a job");
        match recorded {
            Recorded::Yes(newly) => {
                assert!(newly);
                assert_eq!(env.state_of(id).await.as_deref(), Some("dead"));
            }
            Recorded::Refused(e) => {
                assert_eq!(e.failure(), courier_core::Failure::Refused, "{e}");
                assert_eq!(env.state_of(id).await, None);
            }
        }
    }
    assert!(
        !running.commit_failing.load(Ordering::SeqCst),
        "a refusal is no outage"
    );

    // What the writer records instead: the same outcome, storable.
    let storable = batch[2].storable();
    let again = commit_isolating(
        &env.store.held_connection(true),
        &metrics,
        &CancellationToken::new(),
        &running,
        &[storable],
    )
    .await
    .expect("not abandoned");
    assert!(matches!(again[..], [Recorded::Yes(true)]));
    let row = env
        .store
        .job(batch[2].job_id().expect("a job"))
        .await
        .expect("read")
        .expect("recorded");
    assert_eq!(row.idempotency_key, "order\\042");
}
