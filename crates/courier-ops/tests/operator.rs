//! The operator core against the real services: what its verbs return
//! beyond recovery (which `recovery.rs` tests).

use courier_ops::{DeadQuery, Operator, OpsError};
use courier_testkit::{PROVIDER, TestEnv};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_providers_owner_and_runbook_show_with_it_and_with_its_dead_letters() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let job = env.job(Some(json!({"status": 422})));
    env.publish(&job).await;
    env.wait_state(job.id, "dead", WAIT).await;
    worker.shutdown();
    worker.wait().await;

    let mut config = env.config();
    let provider = config.providers.get_mut(PROVIDER).expect("configured");
    provider.owner = Some("payments-team".into());
    provider.runbook = Some("https://wiki.test/payments".into());
    let ops = Operator::connect(&config, "ops-test", 2)
        .await
        .expect("connect");

    let letters = ops
        .list_dead(&DeadQuery::default(), false, 10)
        .await
        .expect("list");
    assert_eq!(letters.len(), 1);
    let detail = ops.dead_letter(letters[0].id).await.expect("show");
    assert_eq!(detail.letter.job_id, Some(job.id));
    assert_eq!(detail.owner.as_deref(), Some("payments-team"));
    assert_eq!(
        detail.runbook.as_deref(),
        Some("https://wiki.test/payments")
    );
    assert_eq!(
        detail.job_attempts.len(),
        1,
        "the job's attempt comes with it"
    );
    // One key each in the document: the letter's count and the job's list.
    let doc = serde_json::to_value(&detail).expect("serialize");
    assert_eq!(doc["attempts"], 1);
    assert_eq!(doc["job_attempts"].as_array().map(Vec::len), Some(1));
    let text = serde_json::to_string(&detail).expect("serialize");
    assert_eq!(text.matches("\"attempts\":").count(), 1, "{text}");

    let providers = ops.providers().await.expect("providers");
    let mine = providers
        .iter()
        .find(|p| p.name == PROVIDER)
        .expect("listed");
    assert_eq!(mine.owner.as_deref(), Some("payments-team"));
    assert_eq!(mine.runbook.as_deref(), Some("https://wiki.test/payments"));
    ops.close().await;
}

#[tokio::test]
async fn requests_that_make_no_sense_are_refused_naming_the_field() {
    let env = TestEnv::new().await;
    let ops = Operator::connect(&env.config(), "ops-test", 2)
        .await
        .expect("connect");
    let refused = |r: Result<_, OpsError>| match r {
        Err(OpsError::Invalid(why)) => why,
        other => panic!("not refused: {other:?}"),
    };
    let why = refused(
        ops.list_dead(&DeadQuery::default(), false, 0)
            .await
            .map(|_| ()),
    );
    assert!(why.starts_with("limit"), "{why}");
    let why = refused(ops.find_jobs("", 10).await.map(|_| ()));
    assert!(why.starts_with("idempotency_key"), "{why}");
    let everything = courier_ops::Requeue::default();
    let why = refused(ops.preview_requeue(&everything).await.map(|_| ()));
    assert!(why.contains("say which letters"), "{why}");
    let too_fast = courier_ops::Requeue {
        query: DeadQuery {
            provider: Some(PROVIDER.into()),
            ..DeadQuery::default()
        },
        rate: Some(1e-300),
        ..courier_ops::Requeue::default()
    };
    let why = refused(ops.preview_requeue(&too_fast).await.map(|_| ()));
    assert!(why.starts_with("rate"), "{why}");
    let missing = ops.job(uuid::Uuid::now_v7()).await;
    assert!(matches!(
        missing,
        Err(OpsError::NotFound { what: "job", .. })
    ));
    ops.close().await;
}
