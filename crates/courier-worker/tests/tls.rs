//! `amqps://` is TLS for real: a handshake with certificate checks before
//! the first AMQP byte, against a loopback TLS listener with a test CA in
//! front of the real RabbitMQ.

use courier_core::config::BrokerTls;
use courier_testkit::tls::{TestPki, TlsProxy};
use courier_testkit::{TestEnv, Worker};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(30);

fn upstream() -> String {
    courier_amqp::broker_address(&courier_testkit::amqp_url())
}

fn pki() -> TestPki {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("courier-pki-{}", uuid::Uuid::now_v7().simple()));
    TestPki::create(&dir)
}

/// The test broker's URL (credentials, vhost) at `addr` with `scheme`.
fn url_at(scheme: &str, addr: std::net::SocketAddr) -> String {
    let plain = courier_testkit::amqp_url();
    let url = plain.replacen(&upstream(), &addr.to_string(), 1);
    url.replacen("amqp://", &format!("{scheme}://"), 1)
}

#[tokio::test]
async fn amqps_to_a_plaintext_listener_sends_a_tls_hello_and_fails_clearly() {
    // A plaintext AMQP listener that records what the client sends first.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let first_bytes = tokio::spawn(async move {
        loop {
            // (The client probes the port first, sending nothing.)
            let (mut socket, _) = listener.accept().await.expect("the client connects");
            let mut seen = vec![0u8; 512];
            let n = socket.read(&mut seen).await.expect("read");
            if n == 0 {
                continue;
            }
            seen.truncate(n);
            // What RabbitMQ answers anything that is not its protocol header.
            let _ = socket.write_all(b"AMQP\x00\x00\x09\x01").await;
            return seen;
        }
    });
    let mut broker = courier_testkit::broker();
    broker.urls = vec![url_at("amqps", addr)];
    let err = courier_amqp::connect(&broker, "tls-test")
        .await
        .expect_err("a plaintext listener cannot complete a TLS handshake");
    let text = err.to_string();
    assert!(text.contains("TLS"), "the error says what failed: {text}");
    assert!(text.contains(&addr.to_string()), "and where: {text}");
    let seen = first_bytes.await.expect("the listener saw the client");
    assert_eq!(
        seen.first(),
        Some(&0x16),
        "a TLS handshake record, not {:?}",
        String::from_utf8_lossy(&seen)
    );
    assert!(
        !String::from_utf8_lossy(&seen).contains("guest"),
        "no credentials in the clear"
    );
}

#[tokio::test]
async fn a_worker_runs_jobs_over_amqps_and_checks_the_brokers_certificate() {
    let env = TestEnv::new().await;
    let pki = pki();
    let proxy = TlsProxy::start(&upstream(), &pki, false).await;

    // Without the test CA, the broker's certificate is not trusted.
    let mut untrusted = courier_testkit::broker();
    untrusted.urls = vec![url_at("amqps", proxy.addr())];
    let err = courier_amqp::connect(&untrusted, "tls-test")
        .await
        .expect_err("unknown issuer");
    assert!(err.to_string().contains("TLS"), "{err}");
    assert_eq!(proxy.handshakes(), 0);

    let mut config = env.config();
    config.broker.urls = vec![url_at("amqps", proxy.addr())];
    config.broker.tls = BrokerTls {
        ca_file: Some(pki.ca.clone()),
        ..BrokerTls::default()
    };
    let worker = Worker::start(config)
        .await
        .expect("start the worker over TLS");
    let job = env.job(None);
    env.publish(&job).await;
    env.wait_state(job.id, "succeeded", WAIT).await;
    assert!(
        proxy.handshakes() >= 1,
        "the worker's connection went through the TLS listener"
    );
    assert_eq!(proxy.client_certificates(), 0);
    worker.shutdown();
    worker.wait().await;
}

#[tokio::test]
async fn a_client_certificate_is_presented_when_configured_and_required_when_asked() {
    let pki = pki();
    let proxy = TlsProxy::start(&upstream(), &pki, true).await;
    let mut broker = courier_testkit::broker();
    broker.urls = vec![url_at("amqps", proxy.addr())];
    broker.tls.ca_file = Some(pki.ca.clone());
    courier_amqp::connect(&broker, "tls-test")
        .await
        .expect_err("the listener wants a client certificate");

    broker.tls.cert_file = Some(pki.client_cert.clone());
    broker.tls.key_file = Some(pki.client_key.clone());
    let link = courier_amqp::connect(&broker, "tls-test")
        .await
        .expect("mutual TLS");
    link.channel().await.expect("a channel over mutual TLS");
    assert_eq!(proxy.client_certificates(), 1);
    let _ = link.close("done").await;
}
