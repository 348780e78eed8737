//! The publisher against a broker that stops answering: a confirm that
//! does not come is an error in bounded time, not a hang.

use courier_amqp::Publisher;
use courier_core::Failure;
use courier_testkit::TestEnv;
use courier_testkit::proxy::TcpProxy;
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_confirm_that_never_comes_is_a_transient_error_within_the_confirm_timeout() {
    let env = TestEnv::new().await;
    let upstream = courier_amqp::broker_address(&courier_testkit::amqp_url());
    let proxy = TcpProxy::start(&upstream).await;
    let mut broker = courier_testkit::broker();
    broker.urls =
        vec![courier_testkit::amqp_url().replacen(&upstream, &proxy.addr().to_string(), 1)];
    broker.confirm_timeout = Duration::from_millis(500);
    let link = courier_amqp::connect(&broker, "confirm-timeout-test")
        .await
        .expect("connect through the proxy");
    let publisher = Publisher::open(&link, broker.confirm_timeout)
        .await
        .expect("open a publisher");
    let job = env.job(None);
    publisher
        .publish_job(&env.topology, &job.provider, job.id, &job.to_body(), None)
        .await
        .expect("a publish while the broker answers");

    proxy.freeze();
    let started = Instant::now();
    let err = publisher
        .publish_job(&env.topology, &job.provider, job.id, &job.to_body(), None)
        .await
        .expect_err("no confirm while the broker is silent");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("confirm"), "{err}");
    assert_eq!(err.failure(), Failure::Transient);
    proxy.thaw();
}

/// `broker.urls`: a worker whose node is lost carries on through the next
/// node, and every job published before and after the loss succeeds once.
/// The two "nodes" are proxies in front of the machine's broker: cutting
/// one closes its connections and refuses new ones, as a dead node does
/// (`scripts/cluster` and `courier bench faults --only node` do it to a
/// real node of a real cluster).
#[tokio::test]
async fn a_lost_node_is_replaced_by_the_next_and_every_job_succeeds_once() {
    let env = TestEnv::new().await;
    let upstream = courier_amqp::broker_address(&courier_testkit::amqp_url());
    let first = TcpProxy::start(&upstream).await;
    let second = TcpProxy::start(&upstream).await;
    let via = |node: &TcpProxy| {
        courier_testkit::amqp_url().replacen(&upstream, &node.addr().to_string(), 1)
    };
    let mut config = env.config();
    config.broker.urls = vec![via(&first), via(&second)];
    config.broker.connect_order = courier_core::config::ConnectOrder::Listed;
    let worker = courier_worker::Worker::start(config)
        .await
        .expect("start the worker on the first node");

    let before: Vec<_> = (0..5).map(|_| env.job(None)).collect();
    for job in &before {
        env.publish(job).await;
    }
    for job in &before {
        env.wait_state(job.id, "succeeded", Duration::from_secs(30))
            .await;
    }
    // The first node dies for good: only the second can carry the work.
    first.cut();
    let after: Vec<_> = (0..5).map(|_| env.job(None)).collect();
    for job in &after {
        env.publish(job).await;
    }
    for job in before.iter().chain(&after) {
        env.wait_state(job.id, "succeeded", Duration::from_secs(60))
            .await;
        assert_eq!(
            env.mock.calls_for(&job.id.to_string()).len(),
            1,
            "one call per job"
        );
        assert_eq!(env.store.attempts(job.id).await.expect("read").len(), 1);
    }
    worker.shutdown();
    worker.wait().await;
}
