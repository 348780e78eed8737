//! The pipeline end to end, in-process, against the real RabbitMQ and
//! PostgreSQL; the provider is the mock HTTP server on loopback.

use courier_core::{DeadReason, JobState};
use courier_testkit::{OPERATION, PROVIDER, TestEnv};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_successful_job_is_called_once_recorded_and_acked() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let mut job = env.job(None);
    job.idempotency_key = Some("order-1".into());
    env.publish(&job).await;
    env.wait_state(job.id, "succeeded", WAIT).await;

    let calls = env.mock.calls_for("order-1");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].method, "POST");
    assert_eq!(calls[0].path, "/v1/customers/cus_42/charges");
    let row = env
        .store
        .job(job.id)
        .await
        .expect("read")
        .expect("job recorded");
    assert_eq!(
        (row.provider.as_str(), row.operation.as_str()),
        (PROVIDER, OPERATION)
    );
    assert_eq!(row.attempts, 1);
    assert!(row.finished_at.is_some());
    let attempts = env.store.attempts(job.id).await.expect("read attempts");
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].http_status, Some(200));
    assert_eq!(attempts[0].error_class, "success");

    worker.shutdown();
    worker.wait().await;
    assert_eq!(
        env.message_count(&env.topology.work_queue(PROVIDER)).await,
        0,
        "acked, not requeued"
    );
}

#[tokio::test]
async fn the_job_id_is_the_idempotency_key_when_none_is_given() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let job = env.job(None);
    env.publish(&job).await;
    env.wait_state(job.id, "succeeded", WAIT).await;
    assert_eq!(env.mock.calls_for(&job.id.to_string()).len(), 1);
    worker.shutdown();
    worker.wait().await;
}

#[tokio::test]
async fn a_retryable_failure_is_retried_after_backoff_then_succeeds() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let job = env.job(Some(json!({"fail_first": 1, "fail_status": 503})));
    env.publish(&job).await;
    env.wait_state(job.id, "succeeded", WAIT).await;

    let attempts = env.store.attempts(job.id).await.expect("read attempts");
    let statuses: Vec<_> = attempts.iter().map(|a| a.http_status).collect();
    assert_eq!(statuses, [Some(503), Some(200)]);
    assert_eq!(attempts[0].error_class, "server_error");
    let calls = env.mock.calls_for(&job.id.to_string());
    assert_eq!(calls.len(), 2);
    let gap = calls[1].at - calls[0].at;
    assert!(
        gap >= Duration::from_secs(1),
        "retried after {gap:?}, before the 1 s backoff"
    );
    worker.shutdown();
    worker.wait().await;
}

#[tokio::test]
async fn exhausted_retries_dead_letter_the_job_with_its_whole_history() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let job = env.job(Some(json!({"status": 500})));
    env.publish(&job).await;
    env.wait_state(job.id, "dead", WAIT).await;

    let attempts = env.store.attempts(job.id).await.expect("read attempts");
    assert_eq!(
        attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(attempts.iter().all(|a| a.http_status == Some(500)));
    let dead = env.store.dead_letters().await.expect("read dead letters");
    assert_eq!(dead.len(), 1);
    let letter = &dead[0];
    assert_eq!(letter.job_id, Some(job.id));
    assert_eq!(letter.reason, DeadReason::RetriesExhausted);
    assert_eq!(letter.attempts, 3);
    assert_eq!(letter.last_status, Some(500));
    assert!(letter.detail.contains("3 attempts"), "{}", letter.detail);
    assert_eq!(
        letter.body,
        job.to_body(),
        "the original job is kept byte for byte"
    );
    worker.shutdown();
    worker.wait().await;
    assert_eq!(
        env.message_count(&env.topology.dead_queue(Some(PROVIDER)))
            .await,
        1
    );
}

#[tokio::test]
async fn a_permanent_4xx_is_dead_at_once() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let job = env.job(Some(json!({"status": 422})));
    env.publish(&job).await;
    env.wait_state(job.id, "dead", WAIT).await;
    assert_eq!(env.mock.calls_for(&job.id.to_string()).len(), 1);
    let dead = env.store.dead_letters().await.expect("read dead letters");
    assert_eq!(dead[0].reason, DeadReason::Permanent);
    assert_eq!(dead[0].last_status, Some(422));
    assert_eq!(dead[0].attempts, 1);
    worker.shutdown();
    worker.wait().await;
}

#[tokio::test]
async fn invalid_json_and_unknown_providers_are_dead_lettered_with_the_reason() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    env.publish_raw(PROVIDER, b"{this is not json", None).await;
    let mut stranger = env.job(None);
    stranger.provider = "nobody".into();
    env.publish_raw("nobody", &stranger.to_body(), None).await;
    let mut bad_op = env.job(None);
    bad_op.operation = "refund".into();
    env.publish(&bad_op).await;
    let mut missing_field = env.job(None);
    missing_field.payload = json!({"amount": 1});
    env.publish(&missing_field).await;

    env.wait_until("four dead letters", WAIT, |store| async move {
        store.dead_letters().await.expect("read").len() == 4
    })
    .await;
    let dead = env.store.dead_letters().await.expect("read dead letters");
    assert!(dead.iter().all(|d| d.reason == DeadReason::Invalid));
    let detail_of = |pred: &dyn Fn(&courier_store::DeadLetterRecord) -> bool| {
        dead.iter()
            .find(|d| pred(d))
            .map(|d| d.detail.clone())
            .expect("dead letter present")
    };
    let json_detail = detail_of(&|d| d.body == b"{this is not json");
    assert!(
        json_detail.starts_with("field `body`: not valid JSON"),
        "{json_detail}"
    );
    let stranger_detail = detail_of(&|d| d.job_id == Some(stranger.id));
    assert!(
        stranger_detail.starts_with("field `provider`"),
        "{stranger_detail}"
    );
    let op_detail = detail_of(&|d| d.job_id == Some(bad_op.id));
    assert!(op_detail.starts_with("field `operation`"), "{op_detail}");
    let field_detail = detail_of(&|d| d.job_id == Some(missing_field.id));
    assert!(
        field_detail.starts_with("field `payload.customer`"),
        "{field_detail}"
    );
    assert_eq!(
        env.mock.call_count(),
        0,
        "no invalid job reaches the provider"
    );

    worker.shutdown();
    worker.wait().await;
    assert_eq!(
        env.message_count(&env.topology.dead_queue(None)).await,
        1,
        "the unknown provider's letter"
    );
    assert_eq!(
        env.message_count(&env.topology.dead_queue(Some(PROVIDER)))
            .await,
        3
    );
    assert_eq!(
        env.message_count(&env.topology.unrouted()).await,
        0,
        "nothing left to loop"
    );
    assert_eq!(
        env.message_count(&env.topology.work_queue(PROVIDER)).await,
        0
    );
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let job = env.job(Some(
        json!({"fail_first": 1, "fail_status": 429, "retry_after": "3"}),
    ));
    env.publish(&job).await;
    env.wait_state(job.id, "succeeded", WAIT).await;
    let calls = env.mock.calls_for(&job.id.to_string());
    assert_eq!(calls.len(), 2);
    let gap = calls[1].at - calls[0].at;
    assert!(
        gap >= Duration::from_secs(3),
        "retried after {gap:?}, before Retry-After: 3"
    );
    let attempts = env.store.attempts(job.id).await.expect("read attempts");
    assert_eq!(attempts[0].error_class, "throttled");
    worker.shutdown();
    worker.wait().await;
}

#[tokio::test]
async fn a_duplicate_publish_of_a_succeeded_job_calls_the_provider_once() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let job = env.job(None);
    env.publish(&job).await;
    env.wait_state(job.id, "succeeded", WAIT).await;
    env.publish(&job).await;
    env.wait_until(
        "the duplicate delivery to be recorded",
        WAIT,
        |store| async move {
            store
                .job(job.id)
                .await
                .expect("read")
                .is_some_and(|j| j.duplicate_deliveries == 1)
        },
    )
    .await;
    assert_eq!(env.mock.calls_for(&job.id.to_string()).len(), 1);
    assert_eq!(env.store.attempts(job.id).await.expect("read").len(), 1);
    worker.shutdown();
    worker.wait().await;
    assert_eq!(
        env.message_count(&env.topology.work_queue(PROVIDER)).await,
        0,
        "the duplicate was acked"
    );
}

/// A copy delivered while the first is still calling the provider (what
/// RabbitMQ does after a lost connection, or a publisher sending twice)
/// waits for the first's outcome instead of calling again.
#[tokio::test]
async fn a_copy_delivered_while_the_first_is_calling_waits_and_does_not_call_again() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let job = env.job(Some(json!({"delay_ms": 500})));
    env.publish(&job).await;
    env.publish(&job).await;
    env.wait_until("both deliveries to be settled", WAIT, |store| async move {
        store
            .job(job.id)
            .await
            .expect("read")
            .is_some_and(|j| j.state == JobState::Succeeded && j.duplicate_deliveries == 1)
    })
    .await;
    assert_eq!(
        env.mock.calls_for(&job.id.to_string()).len(),
        1,
        "the provider was called for both copies"
    );
    assert_eq!(env.store.attempts(job.id).await.expect("read").len(), 1);
    worker.shutdown();
    worker.wait().await;
    assert_eq!(
        env.message_count(&env.topology.work_queue(PROVIDER)).await,
        0,
        "both copies were acked"
    );
}

#[tokio::test]
async fn a_retry_after_pauses_the_provider_and_fresh_jobs_wait_without_spending_attempts() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let slow = env.job(Some(
        json!({"fail_first": 1, "fail_status": 429, "retry_after": "3"}),
    ));
    env.publish(&slow).await;
    env.wait_state(slow.id, "retrying", WAIT).await;

    let fresh = env.job(None);
    env.publish(&fresh).await;
    env.wait_state(fresh.id, "succeeded", WAIT).await;
    env.wait_state(slow.id, "succeeded", WAIT).await;

    let throttled_at = env.mock.calls_for(&slow.id.to_string())[0].at;
    let fresh_calls = env.mock.calls_for(&fresh.id.to_string());
    assert_eq!(fresh_calls.len(), 1, "the fresh job was called once");
    let waited = fresh_calls[0].at - throttled_at;
    assert!(
        waited >= Duration::from_secs(3),
        "the fresh job went {waited:?} after the provider asked for 3 s"
    );
    let fresh_row = env
        .store
        .job(fresh.id)
        .await
        .expect("read")
        .expect("recorded");
    assert_eq!(fresh_row.attempts, 1, "waiting spent no attempt");
    let slow_attempts = env.store.attempts(slow.id).await.expect("read attempts");
    assert_eq!(slow_attempts.len(), 2);
    assert_eq!(slow_attempts[0].error_class, "throttled");
    worker.shutdown();
    worker.wait().await;
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_after_the_delivery_limit_instead_of_looping() {
    // The broker counts redeliveries; a message the worker keeps failing to
    // settle (here: requeued by hand to simulate crashes) must end up dead.
    let env = TestEnv::with_mix(
        courier_provider::FailureMix::default(),
        "[worker]\ndelivery_limit = 2",
    )
    .await;
    let job = env.job(None);
    env.publish(&job).await;
    let conn = courier_amqp::connect(&courier_testkit::broker(), "poison-test")
        .await
        .expect("connect");
    let (_ch, mut consumer) =
        courier_amqp::consume(&conn, &env.topology.work_queue(PROVIDER), 1, "")
            .await
            .expect("consume");
    use futures_util::StreamExt;
    for _ in 0..2 {
        let d = consumer.next().await.expect("open").expect("delivery");
        courier_amqp::requeue(&d.acker).await.expect("requeue");
    }
    drop(consumer);
    let _ = conn.close("done").await;

    let worker = env.start_worker().await;
    env.wait_state(job.id, "dead", WAIT).await;
    let dead = env.store.dead_letters().await.expect("read dead letters");
    assert_eq!(dead[0].reason, DeadReason::DeliveryLimit);
    assert_eq!(
        env.mock.call_count(),
        0,
        "poison is not sent to the provider"
    );
    worker.shutdown();
    worker.wait().await;
}

#[tokio::test]
async fn shutdown_lets_in_flight_jobs_finish_and_acks_them() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let jobs: Vec<_> = (0..4)
        .map(|_| env.job(Some(json!({"delay_ms": 300}))))
        .collect();
    for job in &jobs {
        env.publish(job).await;
    }
    assert!(env.mock.wait_for_calls(4, WAIT).await);
    worker.shutdown();
    worker.wait().await;
    for job in &jobs {
        assert_eq!(env.state_of(job.id).await.expect("recorded"), "succeeded");
    }
    assert_eq!(
        env.message_count(&env.topology.work_queue(PROVIDER)).await,
        0,
        "finished work is acked"
    );
}

#[tokio::test]
async fn the_provider_concurrency_cap_bounds_calls_in_flight_not_deliveries() {
    let env = TestEnv::new().await;
    let worker = start_with_concurrency(&env, 2).await;
    let jobs: Vec<_> = (0..8)
        .map(|_| env.job(Some(json!({"delay_ms": 150}))))
        .collect();
    for job in &jobs {
        env.publish(job).await;
    }
    let ids: Vec<_> = jobs.iter().map(|j| j.id).collect();
    env.wait_terminal(&ids, WAIT).await;
    assert_eq!(env.mock.call_count(), 8);
    assert_eq!(
        env.mock.max_in_flight(),
        2,
        "never more than the cap, and the cap was used"
    );
    worker.shutdown();
    worker.wait().await;
}

#[tokio::test]
async fn shutdown_finishes_calls_already_made_and_returns_deliveries_still_waiting_for_a_slot() {
    let env = TestEnv::new().await;
    let worker = start_with_concurrency(&env, 1).await;
    let jobs: Vec<_> = (0..3)
        .map(|_| env.job(Some(json!({"delay_ms": 500}))))
        .collect();
    for job in &jobs {
        env.publish(job).await;
    }
    assert!(env.mock.wait_for_calls(1, WAIT).await);
    worker.shutdown();
    worker.wait().await;

    assert_eq!(
        env.mock.call_count(),
        1,
        "no call starts after shutdown begins"
    );
    let mut states = Vec::new();
    for job in &jobs {
        states.push(env.state_of(job.id).await);
    }
    assert_eq!(
        states
            .iter()
            .filter(|s| s.as_deref() == Some("succeeded"))
            .count(),
        1
    );
    assert_eq!(
        states.iter().filter(|s| s.is_none()).count(),
        2,
        "{states:?}"
    );
    let back = env
        .wait_for_ready(&env.topology.work_queue(PROVIDER), 2)
        .await;
    assert_eq!(back, 2, "the two never called are back in their queue");
}

/// A worker on `env` whose provider makes at most `concurrency` calls at once.
async fn start_with_concurrency(env: &TestEnv, concurrency: usize) -> courier_testkit::Worker {
    let mut config = env.config();
    if let Some(provider) = config.providers.get_mut(PROVIDER) {
        provider.concurrency = concurrency;
    }
    courier_testkit::Worker::start(config)
        .await
        .expect("start the worker")
}
