//! Operator recovery against the real services: requeue and purge dead
//! letters exactly once, audited.

use courier_core::{DeadReason, JobState, LetterStatus};
use courier_ops::recovery::{self, RequeueOptions};
use courier_store::DeadFilter;
use courier_testkit::{PROVIDER, TestEnv};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn options(actor: &str, patch: Option<serde_json::Value>) -> RequeueOptions {
    RequeueOptions {
        actor: actor.into(),
        patch,
        rate: None,
        batch: 100,
        max_body_bytes: 1 << 20,
    }
}

#[tokio::test]
async fn a_requeued_job_runs_again_with_a_fresh_retry_budget_and_keeps_its_history() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    // Fails three times (the whole budget), then would succeed.
    let job = env.job(Some(json!({"fail_first": 3, "fail_status": 503})));
    env.publish(&job).await;
    env.wait_state(job.id, "dead", WAIT).await;
    let letter = env.store.dead_letters().await.expect("read")[0].clone();

    let filter = DeadFilter {
        ids: vec![letter.id],
        ..DeadFilter::default()
    };
    let report = recovery::requeue(
        &env.store,
        &env.publisher().await,
        &env.topology,
        &filter,
        &options("ada", None),
        |_| {},
    )
    .await
    .expect("requeue");
    assert_eq!((report.matched, report.affected), (1, 1));
    env.wait_state(job.id, "succeeded", WAIT).await;

    let attempts = env.store.attempts(job.id).await.expect("read attempts");
    assert_eq!(
        attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
        [1, 2, 3, 4],
        "history kept, numbering continues"
    );
    let row = env
        .store
        .job(job.id)
        .await
        .expect("read")
        .expect("recorded");
    assert_eq!((row.generation, row.run_base), (1, 3));
    assert_eq!(
        env.mock.calls_for(&job.id.to_string()).len(),
        4,
        "same idempotency key throughout"
    );
    let settled = env
        .store
        .dead_letter(letter.id)
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(settled.status, LetterStatus::Requeued);
    let action = env
        .store
        .action(settled.action_id.expect("linked to its action"))
        .await
        .expect("read")
        .expect("audited");
    assert_eq!(
        (
            action.actor.as_str(),
            action.action.as_str(),
            action.affected
        ),
        ("ada", "requeue", 1)
    );
    assert_eq!(
        env.store.actions_of(job.id).await.expect("read").len(),
        1,
        "the action shows in the job's timeline"
    );

    // Requeuing the same letter again changes nothing.
    let again = recovery::requeue(
        &env.store,
        &env.publisher().await,
        &env.topology,
        &filter,
        &options("ada", None),
        |_| {},
    )
    .await
    .expect("requeue again");
    assert_eq!(again.affected, 0);
    worker.shutdown();
    worker.wait().await;
    assert_eq!(env.mock.calls_for(&job.id.to_string()).len(), 4);
}

#[tokio::test]
async fn requeue_by_filter_applies_and_records_a_patch() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let bad: Vec<_> = (0..3)
        .map(|_| env.job(Some(json!({"status": 422}))))
        .collect();
    let other = env.job(Some(json!({"status": 500})));
    for j in bad.iter().chain([&other]) {
        env.publish(j).await;
    }
    let ids: Vec<_> = bad.iter().chain([&other]).map(|j| j.id).collect();
    env.wait_terminal(&ids, WAIT).await;

    // The fix: drop the field that made the provider refuse them.
    let filter = DeadFilter {
        provider: Some(PROVIDER.into()),
        reason: Some(DeadReason::Permanent),
        ..DeadFilter::default()
    };
    let patch = json!({"mock": null, "note": "fixed by ops"});
    let report = recovery::requeue(
        &env.store,
        &env.publisher().await,
        &env.topology,
        &filter,
        &options("ops", Some(patch.clone())),
        |_| {},
    )
    .await
    .expect("requeue");
    assert_eq!(report.affected, 3, "only the permanent ones");
    let conn = courier_amqp::connect(&courier_testkit::broker(), "sync-test")
        .await
        .expect("connect");
    let sync = recovery::sync_dead_letter_queue(
        &env.store,
        &conn,
        &env.publisher().await,
        &env.topology,
        Some(PROVIDER),
    )
    .await
    .expect("sync the dead-letter queue");
    assert_eq!(
        (sync.removed, sync.kept),
        (3, 1),
        "settled letters leave RabbitMQ, the pending one stays"
    );
    assert_eq!(
        env.message_count(&env.topology.dead_queue(Some(PROVIDER)))
            .await,
        1
    );
    let bad_ids: Vec<_> = bad.iter().map(|j| j.id).collect();
    env.wait_until("the patched jobs to succeed", WAIT, |store| {
        let ids = bad_ids.clone();
        async move {
            let mut n = 0;
            for id in &ids {
                n += usize::from(
                    store
                        .job(*id)
                        .await
                        .expect("read")
                        .is_some_and(|j| j.state == JobState::Succeeded),
                );
            }
            n == ids.len()
        }
    })
    .await;
    for letter in env.store.dead_letters().await.expect("read") {
        if letter.job_id == Some(other.id) {
            assert_eq!(
                letter.status,
                LetterStatus::Pending,
                "not matched by the filter"
            );
            continue;
        }
        let body: serde_json::Value =
            serde_json::from_slice(&letter.requeued_body.expect("patched body recorded"))
                .expect("json");
        assert_eq!(body["payload"]["note"], "fixed by ops");
        assert!(body["payload"].get("mock").is_none());
        let action = env
            .store
            .action(letter.action_id.expect("linked"))
            .await
            .expect("read")
            .expect("audited");
        assert_eq!(action.patch, Some(patch.clone()));
    }
    worker.shutdown();
    worker.wait().await;
}

#[tokio::test]
async fn a_patch_that_breaks_the_contract_is_refused_before_anything_changes() {
    let env = TestEnv::new().await;
    env.fabricate_dead_letters(3).await;
    let filter = DeadFilter {
        provider: Some(PROVIDER.into()),
        ..DeadFilter::default()
    };
    let mut opts = options("ops", Some(json!({"blob": "x".repeat(2000)})));
    opts.max_body_bytes = 1000;
    let err = recovery::requeue(
        &env.store,
        &env.publisher().await,
        &env.topology,
        &filter,
        &opts,
        |_| {},
    )
    .await
    .expect_err("the patched job would be too large");
    assert!(err.to_string().contains("field `body`"), "{err}");
    assert_eq!(
        env.store.count_pending(&filter).await.expect("count"),
        3,
        "nothing claimed"
    );
    assert_eq!(
        env.message_count(&env.topology.work_queue(PROVIDER)).await,
        0,
        "nothing published"
    );
}

#[tokio::test]
async fn purge_is_a_recorded_decision_not_a_delete() {
    let env = TestEnv::new().await;
    let jobs = env.fabricate_dead_letters(5).await;
    let filter = DeadFilter {
        ids: env
            .store
            .dead_letters()
            .await
            .expect("read")
            .iter()
            .take(3)
            .map(|l| l.id)
            .collect(),
        ..DeadFilter::default()
    };
    let report = recovery::purge(&env.store, &filter, "grace")
        .await
        .expect("purge");
    assert_eq!(report.affected, 3);
    let letters = env.store.dead_letters().await.expect("read");
    assert_eq!(letters.len(), 5, "nothing deleted");
    assert_eq!(
        letters
            .iter()
            .filter(|l| l.status == LetterStatus::Purged)
            .count(),
        3
    );
    let action = env
        .store
        .action(report.action)
        .await
        .expect("read")
        .expect("audited");
    assert_eq!(
        (
            action.actor.as_str(),
            action.action.as_str(),
            action.affected
        ),
        ("grace", "purge", 3)
    );
    assert_eq!(
        recovery::purge(&env.store, &filter, "grace")
            .await
            .expect("purge again")
            .affected,
        0
    );
    assert_eq!(
        env.store
            .count_pending(&DeadFilter::default())
            .await
            .expect("count"),
        2
    );
    assert_eq!(jobs.len(), 5);
}

#[tokio::test]
async fn retention_prunes_only_the_history_of_succeeded_jobs() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let ok = env.job(None);
    env.publish(&ok).await;
    env.wait_state(ok.id, "succeeded", WAIT).await;
    worker.shutdown();
    worker.wait().await;
    let dead = env.fabricate_dead_letters(1).await;

    let before_now = chrono::Utc::now() - chrono::Duration::hours(1);
    assert_eq!(
        env.store
            .prune_succeeded_attempts(before_now, 10)
            .await
            .expect("prune"),
        0,
        "too recent"
    );
    let pruned = env
        .store
        .prune_succeeded_attempts(chrono::Utc::now(), 10)
        .await
        .expect("prune");
    assert_eq!(pruned, 1);
    assert!(env.store.attempts(ok.id).await.expect("read").is_empty());
    assert_eq!(
        env.store.attempts(dead[0].id).await.expect("read").len(),
        1,
        "dead jobs keep their history"
    );
    assert_eq!(
        env.state_of(ok.id).await.as_deref(),
        Some("succeeded"),
        "the job's outcome stays"
    );
}
