//! The webhook receiver end to end, against the real RabbitMQ and
//! PostgreSQL: signed HTTP requests in, rows in `events`, jobs in the work
//! queue, and the worker running them at the mock provider.

use courier_core::webhook::{self, Scheme, SigningKey};
use courier_ingest::IngestServer;
use courier_testkit::proxy::TcpProxy;
use courier_testkit::scrape::{self, Scrape};
use courier_testkit::{PROVIDER, TestEnv};
use std::path::PathBuf;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
/// The spec's own example secret (Standard Webhooks test vector).
const OLD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NEW_SECRET: &str = "whsec_c2Vjb25kIHNlY3JldCBvZiB0aGUgcm90YXRpb24=";
const STRIPE_SECRET: &str = "whsec_stripe_test_secret";
const GITHUB_SECRET: &str = "It's a Secret to Everybody";

/// Secret files of one test, removed when it ends.
struct Secrets(Vec<PathBuf>);

impl Secrets {
    fn write(namespace: &str, values: &[(&str, &str)]) -> Secrets {
        Secrets(
            values
                .iter()
                .map(|(name, value)| {
                    let path = std::env::temp_dir().join(format!("{namespace}-{name}.secret"));
                    std::fs::write(&path, value).expect("write a secret file");
                    path
                })
                .collect(),
        )
    }
}

impl Drop for Secrets {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A namespace with three sources (one per scheme), all becoming
/// `mockpay`'s `event` operation (a path with no payload field).
async fn env_with_sources() -> (TestEnv, Secrets) {
    let probe = courier_testkit::unique_namespace();
    let secrets = Secrets::write(
        &probe,
        &[
            ("old", OLD_SECRET),
            ("new", NEW_SECRET),
            ("stripe", STRIPE_SECRET),
            ("github", GITHUB_SECRET),
        ],
    );
    let file = |i: usize| secrets.0[i].display().to_string();
    let extra = format!(
        r#"
[ingest]
listen = "127.0.0.1:0"
max_body_bytes = 4096

[ingest.sources.payments]
scheme = "standard-webhooks"
secrets = [{{ secret_file = "{old}" }}, {{ secret_file = "{new}" }}]
provider = "{PROVIDER}"
operation = "event"

[ingest.sources.billing]
scheme = "stripe"
secrets = [{{ secret_file = "{stripe}" }}]
tolerance_secs = 60
provider = "{PROVIDER}"
operation = "event"

[ingest.sources.repo]
scheme = "github"
secrets = [{{ secret_file = "{github}" }}]
provider = "{PROVIDER}"
operation = "event"

[providers.{PROVIDER}.operations.event]
method = "POST"
path = "/v1/events"
"#,
        old = file(0),
        new = file(1),
        stripe = file(2),
        github = file(3),
    );
    (TestEnv::with_mix(Default::default(), &extra).await, secrets)
}

async fn start(env: &TestEnv) -> IngestServer {
    start_with(env, env.config()).await
}

async fn start_with(env: &TestEnv, config: courier_core::Config) -> IngestServer {
    let _ = env;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    IngestServer::start(&config, listener)
        .await
        .expect("start the receiver")
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn key(scheme: Scheme, secret: &str) -> SigningKey {
    SigningKey::parse(scheme, secret).expect("a valid secret")
}

/// POSTs `body` to `/hooks/<source>` with `headers`; the status and the
/// JSON answer.
async fn post(
    server: &IngestServer,
    source: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, serde_json::Value) {
    courier_provider::install_crypto();
    let mut request = reqwest::Client::new()
        .post(format!("http://{}/hooks/{source}", server.addr))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.expect("the receiver answers");
    let status = response.status().as_u16();
    let json = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, json)
}

fn standard(id: &str, ts: i64, body: &[u8], keys: &[SigningKey]) -> Vec<(&'static str, String)> {
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", ts.to_string()),
        (
            "webhook-signature",
            webhook::sign_standard(keys, id, ts, body),
        ),
    ]
}

async fn events_of(env: &TestEnv, source: &str) -> Vec<courier_store::EventRecord> {
    let filter = courier_store::EventFilter {
        source: Some(source.to_owned()),
        ..Default::default()
    };
    env.store
        .list_events(&filter, None, 100)
        .await
        .expect("read events")
}

#[tokio::test]
async fn a_verified_event_is_recorded_enqueued_answered_and_a_redelivery_creates_nothing() {
    let (env, _secrets) = env_with_sources().await;
    let server = start(&env).await;
    let body = br#"{"type":"payment.completed","data":{"amount":1200}}"#;
    // Signed with the new key only: both are configured during the rotation.
    let headers = standard(
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        now(),
        body,
        &[key(Scheme::StandardWebhooks, NEW_SECRET)],
    );
    let (status, first) = post(&server, "payments", &headers, body).await;
    assert_eq!(status, 200, "{first}");
    let job_id: uuid::Uuid = first["job"]
        .as_str()
        .expect("the job id")
        .parse()
        .expect("a UUID");
    // The sender retries (its own timeout, say): 2xx again, nothing new.
    let (status, again) = post(&server, "payments", &headers, body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["job"], first["job"]);

    let events = events_of(&env, "payments").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_id, "msg_p5jXN8AQM9LWM0D4loKWxJek");
    assert_eq!(events[0].body, body);
    assert_eq!(events[0].job_id, job_id);
    assert_eq!(
        events[0].headers["webhook-id"],
        "msg_p5jXN8AQM9LWM0D4loKWxJek"
    );
    assert!(events[0].headers.get("webhook-signature").is_none());
    let queue = env.topology.work_queue(PROVIDER);
    assert_eq!(
        env.message_count(&queue).await,
        1,
        "one job for two deliveries"
    );

    let worker = env.start_worker().await;
    env.wait_state(job_id, "succeeded", WAIT).await;
    let calls = env.mock.calls_for("payments:msg_p5jXN8AQM9LWM0D4loKWxJek");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].path, "/v1/events");

    let scrape = Scrape::parse(scrape::get(server.telemetry_addr, "/metrics").await.1);
    assert_eq!(
        scrape.value("courier_ingest_events_received_total{source=\"payments\"}"),
        2.0
    );
    assert_eq!(
        scrape.value("courier_ingest_events_enqueued_total{source=\"payments\"}"),
        1.0
    );
    assert_eq!(
        scrape.value("courier_ingest_events_duplicate_total{source=\"payments\"}"),
        1.0
    );
    worker.shutdown();
    worker.wait().await;
}

#[tokio::test]
async fn a_bad_missing_or_stale_signature_is_401_counted_and_nothing_is_kept() {
    let (env, _secrets) = env_with_sources().await;
    let server = start(&env).await;
    let body = br#"{"type":"payment.completed"}"#;
    let wrong = key(
        Scheme::StandardWebhooks,
        "whsec_d3JvbmcgS2V5IG9mIGFuIGF0dGFja2Vy",
    );
    let good = key(Scheme::StandardWebhooks, OLD_SECRET);
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("bad_signature", standard("msg_1", now(), body, &[wrong])),
        (
            "missing_signature",
            standard("msg_2", now(), body, &[])
                .into_iter()
                .filter(|(n, _)| *n != "webhook-signature")
                .collect(),
        ),
        (
            "stale_timestamp",
            standard("msg_3", now() - 3600, body, std::slice::from_ref(&good)),
        ),
        (
            "stale_timestamp",
            standard("msg_4", now() + 3600, body, std::slice::from_ref(&good)),
        ),
    ];
    for (reason, headers) in &cases {
        let (status, answer) = post(&server, "payments", headers, body).await;
        assert_eq!(status, 401, "{reason}: {answer}");
    }
    // A body changed after signing.
    let headers = standard("msg_5", now(), body, &[good]);
    let (status, _) = post(
        &server,
        "payments",
        &headers,
        br#"{"type":"payment.refunded"}"#,
    )
    .await;
    assert_eq!(status, 401);

    assert!(events_of(&env, "payments").await.is_empty());
    assert_eq!(
        env.message_count(&env.topology.work_queue(PROVIDER)).await,
        0
    );
    let scrape = Scrape::parse(scrape::get(server.telemetry_addr, "/metrics").await.1);
    let rejected = |reason: &str| {
        scrape.value(&format!(
            "courier_ingest_events_rejected_total{{source=\"payments\",reason=\"{reason}\"}}"
        ))
    };
    assert_eq!(rejected("bad_signature"), 2.0);
    assert_eq!(rejected("missing_signature"), 1.0);
    assert_eq!(rejected("stale_timestamp"), 2.0);
    assert_eq!(
        scrape.value("courier_ingest_events_verified_total{source=\"payments\"}"),
        0.0
    );
}

#[tokio::test]
async fn an_oversize_body_is_413_and_an_unknown_source_404_and_nothing_is_kept() {
    let (env, _secrets) = env_with_sources().await;
    let server = start(&env).await;
    let body = format!("{{\"pad\":\"{}\"}}", "x".repeat(5000));
    let headers = standard(
        "msg_big",
        now(),
        body.as_bytes(),
        &[key(Scheme::StandardWebhooks, OLD_SECRET)],
    );
    let (status, _) = post(&server, "payments", &headers, body.as_bytes()).await;
    assert_eq!(status, 413);
    let (status, _) = post(&server, "nobody", &headers, b"{}").await;
    assert_eq!(status, 404);
    assert!(events_of(&env, "payments").await.is_empty());
    assert_eq!(
        env.message_count(&env.topology.work_queue(PROVIDER)).await,
        0
    );
}

#[tokio::test]
async fn stripe_and_github_signatures_verify_and_their_events_are_recorded() {
    let (env, _secrets) = env_with_sources().await;
    let server = start(&env).await;

    let body = br#"{"id":"evt_1","type":"invoice.paid"}"#;
    let ts = now();
    let signature = webhook::sign_stripe(&[key(Scheme::Stripe, STRIPE_SECRET)], ts, body);
    let (status, answer) = post(&server, "billing", &[("stripe-signature", signature)], body).await;
    assert_eq!(status, 200, "{answer}");
    let stripe = events_of(&env, "billing").await;
    assert_eq!(stripe.len(), 1);
    // Stripe sends no id header: the event is known by its body's `id`.
    assert_eq!(stripe[0].event_id, "evt_1");
    let stale = webhook::sign_stripe(&[key(Scheme::Stripe, STRIPE_SECRET)], ts - 120, body);
    let (status, _) = post(&server, "billing", &[("stripe-signature", stale)], body).await;
    assert_eq!(status, 401, "outside tolerance_secs = 60");

    let body = br#"{"action":"opened","number":7}"#;
    let signature = webhook::sign_github(&key(Scheme::Github, GITHUB_SECRET), body);
    let headers = [
        ("x-hub-signature-256", signature),
        (
            "x-github-delivery",
            "72d3162e-cc78-11e3-81ab-4c9367dc0958".to_owned(),
        ),
        ("x-github-event", "pull_request".to_owned()),
    ];
    let (status, answer) = post(&server, "repo", &headers, body).await;
    assert_eq!(status, 200, "{answer}");
    let github = events_of(&env, "repo").await;
    assert_eq!(github.len(), 1);
    // GitHub does not sign its delivery id: the event is known by its
    // body, so a captured body resent under a fresh delivery id is a
    // duplicate, not a new job.
    assert!(
        github[0].event_id.starts_with("sha256:"),
        "{}",
        github[0].event_id
    );
    let resent = [
        headers[0].clone(),
        (
            "x-github-delivery",
            "a-fresh-id-chosen-by-whoever-captured-it".to_owned(),
        ),
    ];
    let (status, answer) = post(&server, "repo", &resent, body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["duplicate"], true);
    assert_eq!(github[0].headers["x-github-event"], "pull_request");
    assert_eq!(
        env.message_count(&env.topology.work_queue(PROVIDER)).await,
        2
    );
}

/// With the broker, then the database, unreachable, a verified event gets
/// 503 and leaves nothing behind; delivered again once they are back, it
/// is recorded and enqueued once.
#[tokio::test]
async fn with_the_broker_or_the_database_down_the_answer_is_503_and_nothing_is_half_recorded() {
    let (env, _secrets) = env_with_sources().await;
    let amqp = courier_amqp::broker_address(&courier_testkit::amqp_url());
    let broker = TcpProxy::start(&amqp).await;
    let pg = TcpProxy::start("127.0.0.1:5432").await;
    let mut config = env.config();
    config.broker.urls =
        vec![courier_testkit::amqp_url().replacen(&amqp, &broker.addr().to_string(), 1)];
    config.broker.confirm_timeout = Duration::from_secs(1);
    config.database.url = config
        .database
        .url
        .replacen("127.0.0.1:5432", &pg.addr().to_string(), 1);
    assert!(
        config.database.url.contains(&pg.addr().to_string()),
        "{}",
        config.database.url
    );
    let server = start_with(&env, config).await;
    let body = br#"{"type":"shipment.delivered"}"#;
    let keys = [key(Scheme::StandardWebhooks, OLD_SECRET)];
    let queue = env.topology.work_queue(PROVIDER);

    broker.cut();
    let headers = standard("msg_outage_1", now(), body, &keys);
    let (status, answer) = post(&server, "payments", &headers, body).await;
    assert_eq!(status, 503, "{answer}");
    assert!(events_of(&env, "payments").await.is_empty(), "rolled back");
    broker.restore();

    pg.cut();
    let (status, answer) = post(&server, "payments", &headers, body).await;
    assert_eq!(status, 503, "{answer}");
    pg.restore();
    assert_eq!(env.message_count(&queue).await, 0, "nothing enqueued");

    // The sender's retry, once both are back (the pool and the link
    // reconnect on use).
    let mut status = 0;
    for _ in 0..20 {
        let headers = standard("msg_outage_1", now(), body, &keys);
        status = post(&server, "payments", &headers, body).await.0;
        if status == 200 {
            break;
        }
        // The sender's backoff; the receiver reconnects on the next request.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(status, 200);
    assert_eq!(events_of(&env, "payments").await.len(), 1);
    assert_eq!(env.message_count(&queue).await, 1);
    let scrape = Scrape::parse(scrape::get(server.telemetry_addr, "/metrics").await.1);
    assert!(
        scrape.value("courier_ingest_unavailable_total{source=\"payments\",cause=\"broker\"}")
            >= 1.0
    );
    assert!(
        scrape.value("courier_ingest_unavailable_total{source=\"payments\",cause=\"database\"}")
            >= 1.0
    );
}

/// Senders retry on their own timeouts, so the same event can arrive
/// several times at once: every copy gets 2xx, one job exists.
#[tokio::test]
async fn concurrent_deliveries_of_one_event_make_one_job() {
    let (env, _secrets) = env_with_sources().await;
    let server = start(&env).await;
    let body = br#"{"type":"order.shipped"}"#;
    let headers = standard(
        "msg_concurrent",
        now(),
        body,
        &[key(Scheme::StandardWebhooks, OLD_SECRET)],
    );
    let answers =
        futures_util::future::join_all((0..16).map(|_| post(&server, "payments", &headers, body)))
            .await;
    let jobs: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|(status, answer)| {
            assert_eq!(*status, 200, "{answer}");
            answer["job"].as_str().expect("a job id").to_owned()
        })
        .collect();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(events_of(&env, "payments").await.len(), 1);
    assert_eq!(
        env.message_count(&env.topology.work_queue(PROVIDER)).await,
        1
    );
}
