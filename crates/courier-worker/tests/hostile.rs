//! What a careless or hostile publisher can send, through the real pipeline:
//! each case once stopped a worker, walked a request out of its path, or
//! changed a job's budget. Each test checks what really happened: the rows
//! PostgreSQL holds, the requests the provider received, the messages in
//! the queues.

use courier_core::DeadReason;
use courier_core::config::{HttpMethod, Operation};
use courier_core::template::PathTemplate;
use courier_testkit::hostile::{Answer, Message, Value};
use courier_testkit::{PROVIDER, TestEnv, Worker, scrape};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn body(v: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&v).expect("serialise")
}

/// A v1 job for the mock provider as JSON, to be broken in some way.
fn job_json(env: &TestEnv) -> serde_json::Value {
    serde_json::to_value(env.job(None)).expect("a job is JSON")
}

async fn dead_letter_of(env: &TestEnv, job_id: uuid::Uuid) -> courier_store::DeadLetterRecord {
    env.wait_until("the dead letter", WAIT, |store| async move {
        store.dead_letters_of(job_id).await.expect("read").len() == 1
    })
    .await;
    env.store
        .dead_letters_of(job_id)
        .await
        .expect("read")
        .remove(0)
}

#[tokio::test]
async fn a_nul_anywhere_in_a_job_is_refused_naming_the_field_and_nothing_waits_behind_it() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let mut poisoned = Vec::new();
    for field in ["provider", "operation", "idempotency_key"] {
        let mut v = job_json(&env);
        v[field] = json!(format!("{}\u{0}x", v[field].as_str().unwrap_or("k")));
        poisoned.push((field.to_owned(), v));
    }
    let mut v = job_json(&env);
    v["\u{0}"] = json!(1);
    poisoned.push(("\\0".to_owned(), v));
    for (_, v) in &poisoned {
        env.publish_raw(PROVIDER, &body(v.clone()), None).await;
    }
    let fine = env.job(None);
    env.publish(&fine).await;

    env.wait_state(fine.id, "succeeded", WAIT).await;
    for (field, v) in &poisoned {
        let id = v["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("an id");
        let letter = dead_letter_of(&env, id).await;
        assert_eq!(letter.reason, DeadReason::Invalid);
        assert!(
            letter.detail.starts_with(&format!("field `{field}`")),
            "{field}: {}",
            letter.detail
        );
        assert!(!letter.detail.contains('\0'));
        assert_eq!(
            env.state_of(id).await,
            None,
            "no job row for an invalid job"
        );
    }
    assert_eq!(env.mock.call_count(), 1, "only the valid job was called");
    let (status, ready) = scrape::get(worker.telemetry_addr(), "/readyz").await;
    assert_eq!(status, 200, "{ready}");
    worker.shutdown();
    worker.wait().await;
}

#[tokio::test]
async fn a_path_field_cannot_walk_the_request_out_of_the_operation_or_the_base_path() {
    let env = TestEnv::new().await;
    let mut config = env.config();
    let provider = config
        .providers
        .get_mut(PROVIDER)
        .expect("the test provider");
    provider.base_url = format!("{}/api/v2", env.mock.base_url());
    provider.operations.insert(
        "walk".to_owned(),
        Operation {
            method: HttpMethod::Post,
            path: PathTemplate::parse("/v1/{a}/{b}").expect("a template"),
            rate_limit: None,
        },
    );
    let worker = Worker::start(config).await.expect("start the worker");
    let with = |a: &str, b: &str| {
        let mut job = env.job(None);
        job.operation = "walk".into();
        job.payload = json!({"a": a, "b": b});
        job
    };
    let walks = [
        with("..", ".."),
        with(".", "x"),
        with("x", "a/../../b"),
        with("x", "..\\.."),
    ];
    for job in &walks {
        env.publish(job).await;
    }
    let fine = with("cus 1", "v1.2");
    env.publish(&fine).await;

    env.wait_state(fine.id, "succeeded", WAIT).await;
    for job in &walks {
        let letter = dead_letter_of(&env, job.id).await;
        assert!(
            letter.detail.starts_with("field `payload."),
            "{}",
            letter.detail
        );
    }
    let calls = env.mock.calls();
    assert_eq!(calls.len(), 1, "only the valid job reached the provider");
    assert_eq!(calls[0].path, "/api/v2/v1/cus%201/v1.2");
    worker.shutdown();
    worker.wait().await;
}

#[tokio::test]
async fn forged_progress_headers_change_neither_the_budget_nor_the_attempt_count() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    // Three attempts allowed (testkit), every call fails: whatever the
    // headers say, a job gets exactly three, numbered 1, 2, 3.
    let failing = |_: ()| env.job(Some(json!({"status": 500})));
    let endless = failing(());
    env.publish_with_headers(&endless, &[("x-courier-run-base", Value::Int(1000))])
        .await;
    let aged = failing(());
    env.publish_with_headers(&aged, &[("x-courier-attempts", Value::Int(99))])
        .await;
    let other_generation = failing(());
    env.publish_with_headers(
        &other_generation,
        &[("x-courier-generation", Value::Int(7))],
    )
    .await;
    // A first delivery claiming to be the fiftieth is not poison.
    let fine = env.job(None);
    env.publish_with_headers(&fine, &[("x-delivery-count", Value::Int(50))])
        .await;

    let ids = [endless.id, aged.id, other_generation.id, fine.id];
    env.wait_terminal(&ids, WAIT).await;
    for job in [&endless, &aged, &other_generation] {
        let attempts = env.store.attempts(job.id).await.expect("read attempts");
        assert_eq!(
            attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
            [1, 2, 3],
            "job {}",
            job.id
        );
        assert_eq!(env.mock.calls_for(&job.id.to_string()).len(), 3);
        let row = env
            .store
            .job(job.id)
            .await
            .expect("read")
            .expect("recorded");
        assert_eq!(
            (row.state.as_str(), row.generation, row.run_base),
            ("dead", 0, 0)
        );
        let letter = dead_letter_of(&env, job.id).await;
        assert_eq!(
            (letter.reason.as_str(), letter.attempts),
            ("retries_exhausted", 3)
        );
    }
    assert_eq!(env.state_of(fine.id).await.as_deref(), Some("succeeded"));
    assert_eq!(env.mock.calls_for(&fine.id.to_string()).len(), 1);
    worker.shutdown();
    worker.wait().await;
}

#[tokio::test]
async fn a_replayed_copy_cannot_spend_a_running_jobs_attempts() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    // Three attempts 1 s then 2 s apart (testkit); each fails.
    let job = env.job(Some(json!({"status": 500})));
    env.publish(&job).await;
    env.wait_state(job.id, "retrying", WAIT).await;
    for _ in 0..3 {
        env.publish_with_headers(
            &job,
            &[("x-courier-attempts", Value::Int(i64::from(u32::MAX)))],
        )
        .await;
    }
    env.wait_state(job.id, "dead", WAIT).await;
    let calls = env.mock.calls_for(&job.id.to_string());
    assert_eq!(calls.len(), 3, "the replays called nobody");
    assert!(
        calls[1].at - calls[0].at >= Duration::from_secs(1),
        "backoff kept"
    );
    let row = env
        .store
        .job(job.id)
        .await
        .expect("read")
        .expect("recorded");
    assert_eq!((row.attempts, row.duplicate_deliveries), (3, 3));
    worker.shutdown();
    worker.wait().await;
}

#[tokio::test]
async fn a_different_job_under_a_known_id_is_dead_lettered_and_the_known_job_left_alone() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let original = env.job(None);
    env.publish(&original).await;
    env.wait_state(original.id, "succeeded", WAIT).await;

    let mut impostor = original.clone();
    impostor.payload = json!({"customer": "cus_other", "amount": 1});
    env.publish(&impostor).await;
    env.wait_until("the impostor's dead letter", WAIT, |store| async move {
        !store.dead_letters().await.expect("read").is_empty()
    })
    .await;
    let letters = env.store.dead_letters().await.expect("read");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason, DeadReason::Invalid);
    assert!(
        letters[0].detail.starts_with("field `id`"),
        "{}",
        letters[0].detail
    );
    assert_eq!(letters[0].job_id, None, "not filed under the job it is not");
    assert_eq!(letters[0].body, impostor.to_body());

    // The same job again (re-serialised, a new created_at) is a duplicate.
    let mut again = original.clone();
    again.created_at = chrono::Utc::now();
    env.publish(&again).await;
    env.wait_until("the duplicate", WAIT, |store| async move {
        store
            .job(original.id)
            .await
            .expect("read")
            .is_some_and(|j| j.duplicate_deliveries == 1)
    })
    .await;
    let row = env
        .store
        .job(original.id)
        .await
        .expect("read")
        .expect("recorded");
    assert_eq!((row.state.as_str(), row.attempts), ("succeeded", 1));
    assert_eq!(env.mock.call_count(), 1);
    worker.shutdown();
    worker.wait().await;
}

#[tokio::test]
async fn header_sized_input_cannot_break_a_publish_and_an_oversize_body_is_kept_as_a_prefix() {
    let env = TestEnv::new().await;
    let mut config = env.config();
    config.worker.max_body_bytes = 200_000;
    let worker = Worker::start(config).await.expect("start the worker");

    // A 140 KB field name: its dead letter's detail goes into a header.
    let mut v = job_json(&env);
    v["x".repeat(140_000)] = json!(1);
    let wide = v["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("an id");
    env.publish_raw(PROVIDER, &body(v), None).await;
    // A 100 KB traceparent (what fits the broker's frame) on a job that
    // needs a retry: the retry used to copy it.
    let traced = env.job(Some(json!({"fail_first": 1, "fail_status": 503})));
    env.publish_with_headers(
        &traced,
        &[("traceparent", Value::Text(vec![b'0'; 100_000]))],
    )
    .await;
    // A 2 MB body.
    let mut v = job_json(&env);
    v["payload"]["blob"] = json!("y".repeat(2_000_000));
    let huge_body = body(v.clone());
    let huge = v["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("an id");
    env.publish_raw(PROVIDER, &huge_body, None).await;

    env.wait_state(traced.id, "succeeded", WAIT).await;
    let attempts = env.store.attempts(traced.id).await.expect("read");
    assert_eq!(attempts.len(), 2);
    assert_eq!(
        attempts[0].trace_id.as_deref(),
        Some(format!("{:032x}", traced.id.as_u128()).as_str()),
        "a traceparent that is not W3C is ignored"
    );
    let letter = dead_letter_of(&env, wide).await;
    assert!(
        letter.detail.len() < 1024,
        "{} bytes of detail",
        letter.detail.len()
    );
    let letter = dead_letter_of(&env, huge).await;
    assert!(
        letter.detail.starts_with("field `body`"),
        "{}",
        letter.detail
    );
    assert_eq!(letter.body.as_slice(), &huge_body[..4096]);
    assert_eq!(letter.body_size, Some(huge_body.len() as i64));
    use sha2::Digest;
    assert_eq!(
        letter.body_sha256.as_deref(),
        Some(sha2::Sha256::digest(&huge_body).as_slice())
    );
    worker.shutdown();
    worker.wait().await;
    assert_eq!(
        env.message_count(&env.topology.dead_queue(Some(PROVIDER)))
            .await,
        2,
        "both dead letters reached the dead-letter queue"
    );
}

#[tokio::test]
async fn a_line_break_in_the_idempotency_key_is_invalid_not_a_transport_error() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let mut job = env.job(None);
    job.idempotency_key = Some("order-1\r\nX-Injected: yes".into());
    env.publish(&job).await;
    let letter = dead_letter_of(&env, job.id).await;
    assert_eq!(letter.reason, DeadReason::Invalid);
    assert!(
        letter.detail.starts_with("field `idempotency_key`"),
        "{}",
        letter.detail
    );
    assert_eq!(env.mock.call_count(), 0);
    worker.shutdown();
    worker.wait().await;
}

#[tokio::test]
async fn a_message_the_amqp_client_cannot_read_does_not_stop_the_worker() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info,courier=debug,lapin=info")
        .try_init();
    let env = TestEnv::new().await;
    let before = env.job(None);
    env.publish(&before).await;
    // A message_id that is not UTF-8, and a header name that is not: lapin's
    // parser fails the whole connection on either.
    let mut unreadable = Message {
        message_id: Some(vec![0xff, 0xfe, b'x']),
        content_type: Some(b"application/json".to_vec()),
        persistent: true,
        body: env.job(None).to_body(),
        ..Message::default()
    };
    assert_eq!(
        env.publish_hostile(PROVIDER, &unreadable).await,
        Answer::Ack
    );
    unreadable.message_id = None;
    unreadable.headers = vec![(vec![0xc3, 0x28], Value::Int(1))];
    assert_eq!(
        env.publish_hostile(PROVIDER, &unreadable).await,
        Answer::Ack
    );
    let after: Vec<_> = (0..20).map(|_| env.job(None)).collect();
    for job in &after {
        env.publish(job).await;
    }

    // They sit at the head of the queue: the worker starts all the same.
    let worker = env.start_worker().await;
    let mut ids: Vec<_> = after.iter().map(|j| j.id).collect();
    ids.push(before.id);
    env.wait_terminal(&ids, Duration::from_secs(90)).await;
    for id in &ids {
        assert_eq!(env.state_of(*id).await.as_deref(), Some("succeeded"));
    }
    // The broker dead-letters both after its delivery limit; the worker
    // recorded what it could and counted every lost connection.
    let dead = env.topology.dead_queue(Some(PROVIDER));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while env.message_count(&dead).await < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broker did not dead-letter them"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let letters = env.store.dead_letters().await.expect("read");
    assert!(!letters.is_empty());
    assert!(
        letters.iter().all(|l| l.reason == DeadReason::Unreadable),
        "only the unreadable: {letters:?}"
    );
    assert!(
        letters[0]
            .detail
            .contains(&env.topology.work_queue(PROVIDER)),
        "{}",
        letters[0].detail
    );
    let m = env
        .wait_for_metrics(&worker, "ready again", WAIT, |m| {
            m.value("courier_broker_unreadable_deliveries_total") >= 2.0
        })
        .await;
    assert!(
        m.value("courier_broker_reconnects_total") >= 2.0,
        "{}",
        m.text
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = scrape::get(worker.telemetry_addr(), "/readyz").await;
        if status == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worker.shutdown();
    worker.wait().await;
}

#[tokio::test]
async fn readyz_says_so_while_outcomes_cannot_be_committed_and_they_are_once_they_can() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let schema = env.namespace.clone();
    let admin = courier_store::Store::connect(&courier_testkit::database(), &schema, 1)
        .await
        .expect("connect");
    // Dead letters cannot be written while their table is away.
    admin
        .execute_unchecked("ALTER TABLE dead_letters RENAME TO dead_letters_away")
        .await
        .expect("rename the table");
    let invalid = env.publish_raw(PROVIDER, b"{not json", None).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let body = loop {
        let (status, body) = scrape::get(worker.telemetry_addr(), "/readyz").await;
        if status == 503 && body.contains("outcomes: outcomes cannot be committed") {
            break body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{status}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(body.contains("database: ok"), "{body}");
    admin
        .execute_unchecked("ALTER TABLE dead_letters_away RENAME TO dead_letters")
        .await
        .expect("rename the table back");
    env.wait_until("the dead letter", WAIT, |store| async move {
        !store.dead_letters().await.expect("read").is_empty()
    })
    .await;
    let letters = env.store.dead_letters().await.expect("read");
    assert_eq!(letters[0].message_id, Some(invalid.to_string()));
    let deadline = tokio::time::Instant::now() + WAIT;
    while scrape::get(worker.telemetry_addr(), "/readyz").await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "ready again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.shutdown();
    worker.wait().await;
}
