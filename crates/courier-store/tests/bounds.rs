//! What bounds the store puts on a query, against the real PostgreSQL.

use courier_core::Failure;
use courier_store::Store;
use courier_testkit::TestEnv;
use std::time::Duration;

#[tokio::test]
async fn a_statement_over_the_timeout_is_cancelled_and_counts_as_transient() {
    let env = TestEnv::new().await;
    let mut database = courier_testkit::database();
    database.statement_timeout = Duration::from_millis(200);
    let store = Store::connect(&database, &env.namespace, 1)
        .await
        .expect("connect");
    let started = std::time::Instant::now();
    let err = store
        .execute_unchecked("SELECT pg_sleep(5)")
        .await
        .expect_err("cancelled");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("statement timeout"), "{err}");
    assert_eq!(err.failure(), Failure::Transient);
}

#[tokio::test]
async fn finding_jobs_by_key_is_limited_and_uses_an_index() {
    let env = TestEnv::new().await;
    let mut jobs: Vec<_> = (0..5).map(|_| env.job(None)).collect();
    for job in &mut jobs {
        job.idempotency_key = Some("shared-key".into());
    }
    let outcomes: Vec<_> = jobs
        .iter()
        .map(courier_store::synthetic::dead_on_first_attempt)
        .collect();
    env.store.commit(&outcomes).await.expect("record");
    let found = env.store.jobs_by_key("shared-key", 3).await.expect("find");
    assert_eq!(found.len(), 3);
    let plan = env
        .store
        .explain("SELECT * FROM jobs WHERE idempotency_key = 'shared-key' LIMIT 3")
        .await
        .expect("explain");
    assert!(plan.contains("jobs_by_idempotency_key"), "{plan}");
}
