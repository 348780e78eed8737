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
    broker.url = courier_testkit::amqp_url().replacen(&upstream, &proxy.addr().to_string(), 1);
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
