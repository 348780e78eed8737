//! The topology and the delay cascade against the real RabbitMQ on loopback.

use courier_amqp::headers::DeliveryMeta;
use courier_amqp::topology::message_count;
use courier_amqp::{Publisher, Topology, connect, consume};
use futures_util::StreamExt;
use std::time::{Duration, Instant};

fn broker() -> courier_core::config::BrokerConfig {
    courier_core::config::BrokerConfig::with_url(
        &std::env::var("COURIER_AMQP_URL")
            .unwrap_or_else(|_| courier_core::config::DEFAULT_AMQP_URL.to_owned()),
    )
}

fn unique_namespace() -> String {
    format!("t{}", uuid::Uuid::now_v7().simple())
}

#[tokio::test]
async fn declare_is_idempotent_and_teardown_removes_everything() {
    let conn = connect(&broker(), "courier-amqp-test")
        .await
        .expect("connect");
    let ch = conn.channel().await.expect("channel");
    let topo = Topology::new(&unique_namespace(), ["alpha", "beta"]);
    topo.declare(&ch).await.expect("declare");
    topo.declare(&ch).await.expect("declare again");
    for q in topo.queues() {
        assert_eq!(
            message_count(&ch, &q).await.expect("queue exists"),
            0,
            "{q}"
        );
    }
    topo.teardown(&ch).await.expect("teardown");
    let probe = conn.channel().await.expect("channel");
    assert!(
        message_count(&probe, &topo.work_queue("alpha"))
            .await
            .is_err(),
        "queue must be gone"
    );
}

#[tokio::test]
async fn a_retry_waits_its_delay_in_the_cascade_then_returns_to_the_work_queue() {
    let conn = connect(&broker(), "courier-amqp-test")
        .await
        .expect("connect");
    let ch = conn.channel().await.expect("channel");
    let topo = Topology::new(&unique_namespace(), ["alpha"]);
    topo.declare(&ch).await.expect("declare");
    let publisher = Publisher::open(&conn, broker().confirm_timeout)
        .await
        .expect("publisher");
    let (_consumer_ch, mut consumer) = consume(&conn, &topo.work_queue("alpha"), 10, "t")
        .await
        .expect("consume");

    let meta = DeliveryMeta {
        message_id: Some("m-1".into()),
        ..DeliveryMeta::default()
    };
    let sent = Instant::now();
    publisher
        .publish_retry(&topo, "alpha", b"{}", &meta, 2, 3)
        .await
        .expect("publish retry");
    let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
        .await
        .expect("the retry must come back")
        .expect("stream open")
        .expect("delivery");
    let waited = sent.elapsed();
    courier_amqp::ack(&delivery.acker).await.expect("ack");
    assert!(
        waited >= Duration::from_secs(3),
        "came back after {waited:?}, before its 3 s delay"
    );
    let back = DeliveryMeta::of(&delivery);
    assert_eq!(back.attempts, 2);
    assert_eq!(back.message_id.as_deref(), Some("m-1"));
    topo.teardown(&ch).await.expect("teardown");
}
