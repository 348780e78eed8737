//! What a worker tells Prometheus and a load balancer, against the real
//! RabbitMQ and PostgreSQL: exact counters after a known mix of outcomes,
//! readiness through a broker outage and a shutdown, and trace ids carried
//! from the AMQP headers to the provider and into the attempts table.

use courier_core::TraceContext;
use courier_ops::recovery::{self, RequeueOptions};
use courier_store::DeadFilter;
use courier_testkit::proxy::TcpProxy;
use courier_testkit::scrape::{self, Scrape};
use courier_testkit::{PROVIDER, TestEnv, Worker};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn series(name: &str, labels: &str) -> String {
    format!("{name}{{{labels}}}")
}

fn op(outcome: &str) -> String {
    format!(r#"provider="{PROVIDER}",operation="charge",outcome="{outcome}""#)
}

#[tokio::test]
async fn metrics_count_exactly_what_a_known_mix_of_jobs_did() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let succeed: Vec<_> = (0..3).map(|_| env.job(None)).collect();
    let retry_once: Vec<_> = (0..2)
        .map(|_| env.job(Some(json!({"fail_first": 1}))))
        .collect();
    let permanent = env.job(Some(json!({"status": 400})));
    let exhausted = env.job(Some(json!({"fail_first": 9, "fail_status": 500})));
    let throttled = env.job(Some(
        json!({"fail_first": 1, "fail_status": 429, "retry_after": "1"}),
    ));
    let jobs: Vec<_> = succeed
        .iter()
        .chain(&retry_once)
        .chain([&permanent, &exhausted, &throttled])
        .collect();
    for job in &jobs {
        env.publish(job).await;
    }
    env.publish_raw(PROVIDER, b"{not json", None).await;
    let ids: Vec<_> = jobs.iter().map(|j| j.id).collect();
    env.wait_terminal(&ids, WAIT).await;
    env.wait_until("the invalid job's dead letter", WAIT, |s| async move {
        s.dead_letters().await.expect("read").len() == 3
    })
    .await;

    // 14 deliveries: 8 first attempts, 5 retries, 1 invalid.
    let m = env
        .wait_for_metrics(&worker, "14 committed outcomes", WAIT, |m| {
            m.sum("courier_jobs_completed_total", &[]) == 14.0
        })
        .await;
    let completed = |outcome: &str| m.value(&series("courier_jobs_completed_total", &op(outcome)));
    assert_eq!(completed("succeeded"), 6.0);
    assert_eq!(completed("retried"), 5.0, "2 + 1 + 2 retries");
    assert_eq!(completed("dead"), 2.0);
    let invalid = format!(r#"provider="{PROVIDER}",operation="_unknown",outcome="invalid""#);
    assert_eq!(
        m.value(&series("courier_jobs_completed_total", &invalid)),
        1.0
    );
    assert_eq!(
        m.sum("courier_jobs_completed_total", &[r#"outcome="duplicate""#]),
        0.0
    );
    assert_eq!(
        m.value(&series(
            "courier_jobs_received_total",
            &format!(r#"provider="{PROVIDER}""#)
        )),
        14.0
    );
    assert_eq!(
        m.value(&series(
            "courier_jobs_in_flight",
            &format!(r#"provider="{PROVIDER}""#)
        )),
        0.0
    );

    // 13 provider requests, by class.
    let requests = |class: &str| {
        m.value(&series(
            "courier_provider_requests_total",
            &format!(r#"provider="{PROVIDER}",operation="charge",class="{class}""#),
        ))
    };
    assert_eq!(requests("success"), 6.0);
    assert_eq!(requests("server_error"), 5.0, "2 x 503, 3 x 500");
    assert_eq!(requests("client_error"), 1.0);
    assert_eq!(requests("throttled"), 1.0);
    let per_op = format!(r#"provider="{PROVIDER}",operation="charge""#);
    assert_eq!(
        m.value(&series(
            "courier_provider_request_duration_seconds_count",
            &per_op
        )),
        13.0
    );
    assert_eq!(
        m.value(&series("courier_provider_throttles_total", &per_op)),
        1.0
    );
    let provider = format!(r#"provider="{PROVIDER}""#);
    assert_eq!(
        m.value(&series(
            "courier_provider_retry_after_seconds_count",
            &provider
        )),
        1.0
    );
    assert_eq!(
        m.value(&series(
            "courier_provider_retry_after_seconds_sum",
            &provider
        )),
        1.0
    );

    // Retries by the attempt that failed; dead letters by reason.
    let retries = |attempt: &str| {
        m.value(&series(
            "courier_retries_scheduled_total",
            &format!(r#"{per_op},attempt="{attempt}""#),
        ))
    };
    assert_eq!((retries("1"), retries("2")), (4.0, 1.0));
    for reason in ["permanent", "retries_exhausted", "invalid"] {
        let labels = format!(r#"provider="{PROVIDER}",reason="{reason}""#);
        assert_eq!(
            m.value(&series("courier_dead_letters_created_total", &labels)),
            1.0,
            "{reason}"
        );
    }

    // Sync lag: one observation per terminal job with a created_at.
    let latency =
        |outcome: &str| m.value(&series("courier_job_latency_seconds_count", &op(outcome)));
    assert_eq!((latency("succeeded"), latency("dead")), (6.0, 2.0));
    let slowest_floor = 3.0; // the exhausted job waited 1 s + 2 s between attempts
    assert!(m.value(&series("courier_job_latency_seconds_sum", &op("dead"))) >= slowest_floor);

    assert_eq!(m.value("courier_outcome_batch_size_sum"), 14.0);
    assert!(m.value("courier_outcome_commit_duration_seconds_count") >= 1.0);
    assert_eq!(m.sum("courier_io_failures_total", &[]), 0.0);
    assert!(m.value("courier_database_connections_opened_total") >= 1.0);
    assert!(
        m.text.contains(&format!(
            r#"courier_build_info{{version="{}""#,
            env!("CARGO_PKG_VERSION")
        )),
        "build info"
    );

    // Sampled: the dead-letter queue and the PostgreSQL backlog hold the 3,
    // the work and delay queues nothing. Each is sampled at its own moment
    // (the dead letter is published before its commit; a delay queue can be
    // sampled while the last retry still sat in it, before the dead-letter
    // queue got it): wait until one sampling shows them all settled.
    let work = series(
        "courier_queue_messages",
        &format!(r#"kind="work",provider="{PROVIDER}""#),
    );
    let delayed = series("courier_queue_messages", r#"kind="retry",provider="""#);
    env.wait_for_metrics(&worker, "sampled queue depths", WAIT, |m| {
        m.get(&series(
            "courier_queue_messages",
            &format!(r#"kind="dead",provider="{PROVIDER}""#),
        )) == Some(3.0)
            && m.get(&series("courier_dead_letters_pending", &provider)) == Some(3.0)
            && m.get(&work) == Some(0.0)
            && m.get(&delayed) == Some(0.0)
    })
    .await;

    // An operator requeues the permanent failure with its script removed.
    let letter = env
        .store
        .dead_letters()
        .await
        .expect("read")
        .into_iter()
        .find(|l| l.job_id == Some(permanent.id))
        .expect("the permanent failure's letter");
    let options = RequeueOptions {
        actor: "ada".into(),
        patch: Some(json!({"mock": null})),
        rate: None,
        batch: 10,
        max_body_bytes: 1 << 20,
    };
    let filter = DeadFilter {
        ids: vec![letter.id],
        ..DeadFilter::default()
    };
    recovery::requeue(
        &env.store,
        &env.publisher().await,
        &env.topology,
        &filter,
        &options,
        |_| {},
    )
    .await
    .expect("requeue");
    env.wait_state(permanent.id, "succeeded", WAIT).await;
    let m = env
        .wait_for_metrics(&worker, "the requeue sampled", WAIT, |m| {
            m.get(r#"courier_operator_letters{action="requeue"}"#) == Some(1.0)
                && m.get(&series("courier_dead_letters_pending", &provider)) == Some(2.0)
        })
        .await;
    assert_eq!(completed_after(&m, "succeeded"), 7.0);
    assert_eq!(
        m.get(r#"courier_operator_letters{action="purge"}"#),
        Some(0.0)
    );

    worker.shutdown();
    worker.wait().await;
}

/// The key the worker sends: the job's own, else its id.
fn key_of(job: &courier_core::JobEnvelope) -> String {
    job.idempotency_key
        .clone()
        .unwrap_or_else(|| job.id.to_string())
}

fn completed_after(m: &Scrape, outcome: &str) -> f64 {
    m.value(&series("courier_jobs_completed_total", &op(outcome)))
}

/// Polls `/readyz` until it answers `status`; returns the body.
async fn wait_ready_status(worker: &Worker, status: u16, what: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (got, body) = scrape::get(worker.telemetry_addr(), "/readyz").await;
        if got == status {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: /readyz still answers {got}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn readyz_follows_the_broker_connection_and_goes_unready_while_draining() {
    let env = TestEnv::new().await;
    let upstream = courier_amqp::broker_address(&courier_testkit::amqp_url());
    let proxy = TcpProxy::start(&upstream).await;
    let mut config = env.config();
    config.broker.urls =
        vec![courier_testkit::amqp_url().replacen(&upstream, &proxy.addr().to_string(), 1)];
    config.worker.shutdown_grace = Duration::from_secs(10);
    let worker = Worker::start(config).await.expect("start the worker");

    let (status, body) = scrape::get(worker.telemetry_addr(), "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let body = wait_ready_status(&worker, 200, "a fresh worker").await;
    assert_eq!(
        body,
        "broker: ok\ndatabase: ok\noutcomes: ok\nconsumers: ok\ndraining: ok\n"
    );

    proxy.cut();
    let body = wait_ready_status(&worker, 503, "RabbitMQ cut off").await;
    assert!(
        body.starts_with("broker: ") && !body.starts_with("broker: ok"),
        "{body}"
    );
    assert!(body.contains("database: ok"), "{body}");
    let (status, _) = scrape::get(worker.telemetry_addr(), "/healthz").await;
    assert_eq!(status, 200, "alive, only not ready");

    proxy.restore();
    wait_ready_status(&worker, 200, "RabbitMQ back").await;
    let m = scrape::metrics(worker.telemetry_addr()).await;
    assert!(
        m.value("courier_broker_reconnects_total") >= 1.0,
        "{}",
        m.text
    );

    // A slow call keeps the worker draining after shutdown begins.
    let slow = env.job(Some(json!({"delay_ms": 1500})));
    env.publish(&slow).await;
    assert!(
        env.mock.wait_for_calls(1, WAIT).await,
        "the slow call began"
    );
    worker.shutdown();
    let body = wait_ready_status(&worker, 503, "draining").await;
    assert!(body.contains("draining: shutting down"), "{body}");
    tokio::time::timeout(WAIT, worker.wait())
        .await
        .expect("shutdown ends after a broker outage");
    assert_eq!(env.state_of(slow.id).await.as_deref(), Some("succeeded"));
}

#[tokio::test]
async fn a_trace_continues_from_the_amqp_headers_to_the_provider_and_the_attempts() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let traced = env.job(Some(json!({"fail_first": 1})));
    env.publish_raw(PROVIDER, &traced.to_body(), Some(parent))
        .await;
    let untraced = env.job(Some(json!({"fail_first": 1})));
    env.publish(&untraced).await;
    env.wait_terminal(&[traced.id, untraced.id], WAIT).await;

    // Both attempts of the retried job (the retry travels through the delay
    // queues) carry the publisher's trace id, each with a span of its own.
    let calls = env.mock.calls_for(&key_of(&traced));
    assert_eq!(calls.len(), 2);
    let sent: Vec<TraceContext> = calls
        .iter()
        .map(|c| {
            TraceContext::parse(c.traceparent.as_deref().expect("traceparent sent"))
                .expect("a valid traceparent")
        })
        .collect();
    for ctx in &sent {
        assert_eq!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(
            ctx.span_id(),
            "00f067aa0ba902b7",
            "a child span, not the parent"
        );
    }
    assert_ne!(sent[0].span_id(), sent[1].span_id());
    let attempts = env.store.attempts(traced.id).await.expect("read attempts");
    assert_eq!(
        attempts
            .iter()
            .map(|a| a.trace_id.as_deref())
            .collect::<Vec<_>>(),
        [Some("4bf92f3577b34da6a3ce929d0e0e4736"); 2]
    );

    // A job published without one gets the trace its id spells, on every
    // attempt, sent and recorded.
    let own_trace = untraced.id.simple().to_string();
    let calls = env.mock.calls_for(&key_of(&untraced));
    assert_eq!(calls.len(), 2);
    for call in &calls {
        let ctx = TraceContext::parse(call.traceparent.as_deref().expect("traceparent sent"))
            .expect("a valid traceparent");
        assert_eq!(ctx.trace_id(), own_trace);
    }
    let attempts = env
        .store
        .attempts(untraced.id)
        .await
        .expect("read attempts");
    assert!(
        attempts
            .iter()
            .all(|a| a.trace_id.as_deref() == Some(own_trace.as_str()))
    );

    worker.shutdown();
    worker.wait().await;
}

#[tokio::test]
async fn readyz_says_which_queue_consumer_stopped_and_the_worker_consumes_it_again_once_it_is_back()
{
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    wait_ready_status(&worker, 200, "a fresh worker").await;

    env.delete_queue(&env.topology.work_queue(PROVIDER)).await;
    let body = wait_ready_status(&worker, 503, "its work queue deleted").await;
    assert!(
        body.contains("consumers: 1 of 2 queue consumers running"),
        "{body}"
    );
    assert!(
        body.contains("broker: ok") && body.contains("draining: ok"),
        "{body}"
    );
    let (status, _) = scrape::get(worker.telemetry_addr(), "/healthz").await;
    assert_eq!(
        status, 200,
        "not ready, but a restart would not fix the queue"
    );

    // The queue is declared again (by an operator, or another worker): the
    // worker subscribes it again by itself, and jobs flow.
    let link = courier_amqp::connect(&courier_testkit::broker(), "redeclare")
        .await
        .expect("connect");
    env.topology
        .declare(&link.channel().await.expect("channel"))
        .await
        .expect("declare again");
    wait_ready_status(&worker, 200, "its work queue back").await;
    let job = env.job(None);
    env.publish(&job).await;
    env.wait_state(job.id, "succeeded", WAIT).await;

    worker.shutdown();
    worker.wait().await;
}
