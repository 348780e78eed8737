//! Acks after commits against the real RabbitMQ on loopback: a multiple ack
//! settles the committed prefix of a channel and nothing still in hand.

use courier_amqp::topology::message_count;
use courier_amqp::{AcksSent, Delivery, Publisher, Topology, ack_committed, connect, consume};
use futures_util::StreamExt;
use std::time::Duration;

fn broker() -> courier_core::config::BrokerConfig {
    courier_core::config::BrokerConfig::with_url(
        &std::env::var("COURIER_AMQP_URL")
            .unwrap_or_else(|_| courier_core::config::DEFAULT_AMQP_URL.to_owned()),
    )
}

/// A connection, a namespace's topology and a confirmed publisher.
struct Setup {
    conn: courier_amqp::Link,
    ch: courier_amqp::Channel,
    topo: Topology,
    queue: String,
    publisher: Publisher,
}

impl Setup {
    async fn new() -> Self {
        let conn = connect(&broker(), "courier-amqp-acks-test")
            .await
            .expect("connect");
        let ch = conn.channel().await.expect("channel");
        let topo = Topology::new(&format!("t{}", uuid::Uuid::now_v7().simple()), ["alpha"]);
        topo.declare(&ch).await.expect("declare");
        let queue = topo.work_queue("alpha");
        let publisher = Publisher::open(&conn, broker().confirm_timeout)
            .await
            .expect("publisher");
        Self {
            conn,
            ch,
            topo,
            queue,
            publisher,
        }
    }
}

async fn next(consumer: &mut courier_amqp::Consumer) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("a delivery within 10 s")
        .expect("stream open")
        .expect("delivery")
}

/// Publishes `n` jobs and takes them on `consumer`. With the channel's
/// prefetch at `n`, taking them all proves the broker held nothing unacked
/// before: it sends no more than the prefetch allows.
async fn publish_and_take(
    publisher: &Publisher,
    topo: &Topology,
    consumer: &mut courier_amqp::Consumer,
    n: usize,
) -> Vec<Delivery> {
    for _ in 0..n {
        publisher
            .publish_job(topo, "alpha", uuid::Uuid::now_v7(), b"{}", None)
            .await
            .expect("publish");
    }
    let mut taken = Vec::new();
    for _ in 0..n {
        taken.push(next(consumer).await);
    }
    taken
}

#[tokio::test]
async fn a_multiple_ack_covers_the_committed_prefix_and_never_a_delivery_in_hand() {
    let Setup {
        conn,
        ch,
        topo,
        queue,
        publisher,
    } = Setup::new().await;
    for i in 0..8u8 {
        publisher
            .publish_job(&topo, "alpha", uuid::Uuid::now_v7(), &[b'0' + i], None)
            .await
            .expect("publish");
    }
    let (consumer_ch, mut consumer) = consume(&conn, &queue, 16, "t").await.expect("consume");
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(next(&mut consumer).await);
    }
    let body = |d: &Delivery| d.data[0] - b'0';
    assert_eq!(
        held.iter().map(body).collect::<Vec<_>>(),
        (0..8).collect::<Vec<_>>()
    );

    // 0, 1, 3 and 4 committed; 2 still in hand: one multiple ack through 1,
    // singles for 3 and 4.
    let sent = ack_committed([0, 1, 3, 4].map(|i| &held[i].acker))
        .await
        .expect("acks");
    assert_eq!(
        sent,
        AcksSent {
            multiple: 1,
            single: 2
        }
    );
    // 5 requeued (settled by its own frame), then 6 committed: 2 still
    // stops the prefix, so 6 goes alone.
    courier_amqp::requeue(&held[5].acker)
        .await
        .expect("requeue");
    let sent = ack_committed([&held[6].acker]).await.expect("ack");
    assert_eq!(
        sent,
        AcksSent {
            multiple: 0,
            single: 1
        }
    );
    assert!(
        consumer_ch.is_open(),
        "no ack named a tag the broker forgot"
    );

    // Closing the channel returns what is not acked: 2 and 7 (in hand) and 5
    // (requeued, redelivered to this consumer or waiting).
    drop(consumer);
    drop(consumer_ch);
    let (_again_ch, mut again) = consume(&conn, &queue, 16, "t2").await.expect("consume");
    let mut back = Vec::new();
    for _ in 0..3 {
        back.push(body(&next(&mut again).await));
    }
    back.sort_unstable();
    assert_eq!(back, [2, 5, 7], "the deliveries not committed came back");
    // Returned messages are delivered before new ones: a message published
    // now comes next unless another came back with them.
    publisher
        .publish_job(&topo, "alpha", uuid::Uuid::now_v7(), b"S", None)
        .await
        .expect("publish");
    assert_eq!(next(&mut again).await.data, b"S", "nothing else came back");
    topo.teardown(&ch).await.expect("teardown");
}

#[tokio::test]
async fn once_the_delivery_in_hand_is_committed_one_frame_acks_everything_up_to_it() {
    const PREFETCH: u16 = 50;
    let Setup {
        conn,
        ch,
        topo,
        queue,
        publisher,
    } = Setup::new().await;
    let (consumer_ch, mut consumer) = consume(&conn, &queue, PREFETCH, "t")
        .await
        .expect("consume");
    let n = usize::from(PREFETCH);
    let held = publish_and_take(&publisher, &topo, &mut consumer, n).await;
    // All but the first committed: acked one by one, the first being in hand.
    let sent = ack_committed(held[1..].iter().map(|d| &d.acker))
        .await
        .expect("acks");
    assert_eq!(
        sent,
        AcksSent {
            multiple: 0,
            single: n - 1
        }
    );
    let sent = ack_committed([&held[0].acker]).await.expect("ack");
    assert_eq!(
        sent,
        AcksSent {
            multiple: 0,
            single: 1
        }
    );

    // A full prefetch again: the broker sent it, so all of the above were
    // acked. Committed together (in any order), they take one frame.
    let fresh = publish_and_take(&publisher, &topo, &mut consumer, n).await;
    let sent = ack_committed(fresh.iter().rev().map(|d| &d.acker))
        .await
        .expect("acks");
    assert_eq!(
        sent,
        AcksSent {
            multiple: 1,
            single: 0
        }
    );
    // And once more: the multiple ack settled every one of them.
    let last = publish_and_take(&publisher, &topo, &mut consumer, n).await;
    let sent = ack_committed(last.iter().map(|d| &d.acker))
        .await
        .expect("acks");
    assert_eq!(
        sent,
        AcksSent {
            multiple: 1,
            single: 0
        }
    );
    assert!(
        consumer_ch.is_open(),
        "no ack named a tag the broker forgot"
    );
    assert_eq!(message_count(&ch, &queue).await.expect("queue"), 0);
    topo.teardown(&ch).await.expect("teardown");
}
