//! The webhook event log's operator verbs against the real services: list
//! and show recorded events, replay them as new jobs exactly once per
//! action, audited.

use chrono::Utc;
use courier_core::ActionKind;
use courier_core::envelope::JobEnvelope;
use courier_ops::views::BodyEncoding;
use courier_ops::{EventQuery, Operator, OpsError, Replay};
use courier_store::{EventFilter, NewEvent, Recorded};
use courier_testkit::{OPERATION, PROVIDER, TestEnv};
use serde_json::{Value, json};
use uuid::Uuid;

/// One configured source, `payments`, whose events become `charge` jobs.
const INGEST: &str = r#"
[ingest]
listen = "127.0.0.1:0"

[ingest.sources.payments]
scheme = "standard-webhooks"
secrets = [{ secret_env = "COURIER_TEST_WEBHOOK_SECRET" }]
provider = "mockpay"
operation = "charge"
"#;

async fn start() -> (TestEnv, Operator) {
    let env = TestEnv::with_mix(Default::default(), INGEST).await;
    let ops = Operator::connect(&env.config(), "courier-ops events test", 4)
        .await
        .expect("connect the operator");
    (env, ops)
}

/// Records an event as `courier ingest` does (its own publish left out).
async fn seed(env: &TestEnv, source: &str, event_id: &str, body: &[u8]) -> NewEvent {
    let event = NewEvent {
        id: Uuid::now_v7(),
        source: source.into(),
        event_id: event_id.into(),
        headers: json!({"webhook-id": event_id, "content-type": "application/json"}),
        body: body.to_vec(),
        received_at: Utc::now(),
        job_id: Uuid::now_v7(),
    };
    let recorded = env
        .store
        .record_event(&event, || async { Ok::<(), std::convert::Infallible>(()) })
        .await
        .expect("record an event");
    assert_eq!(recorded, Recorded::New);
    event
}

/// Takes every message from the provider's work queue: (message id, job).
async fn drain(env: &TestEnv) -> Vec<(Option<String>, JobEnvelope)> {
    let link = courier_amqp::connect(&courier_testkit::broker(), "events-test-reader")
        .await
        .expect("connect");
    let channel = link.channel().await.expect("a channel");
    let queue = env.topology.work_queue(PROVIDER);
    let mut jobs = Vec::new();
    while let Some(delivery) = courier_amqp::get(&channel, &queue)
        .await
        .expect("basic.get")
    {
        let meta = courier_amqp::DeliveryMeta::of(&delivery);
        let job: JobEnvelope = serde_json::from_slice(&delivery.data).expect("a v1 job");
        courier_amqp::ack(&delivery.acker).await.expect("ack");
        jobs.push((meta.message_id, job));
    }
    let _ = link.close("done").await;
    jobs
}

fn payments() -> EventQuery {
    EventQuery {
        source: Some("payments".into()),
        ..EventQuery::default()
    }
}

#[tokio::test]
async fn a_replay_enqueues_each_matching_event_once_as_a_new_job_and_is_audited() {
    let (env, ops) = start().await;
    let mut seeded = Vec::new();
    for n in 0..3 {
        let body = json!({"type": "payment.completed", "n": n}).to_string();
        seeded.push(seed(&env, "payments", &format!("msg_{n}"), body.as_bytes()).await);
    }
    let retired = seed(&env, "retired", "msg_r", b"{}").await;

    // A dry run counts and changes nothing.
    let preview = ops
        .preview_replay(&Replay {
            query: payments(),
            ..Replay::default()
        })
        .await
        .expect("preview");
    assert_eq!((preview.matched, preview.dry_run), (3, true));
    assert_eq!(preview.sample.len(), 3);
    assert_eq!(
        env.message_count(&env.topology.work_queue(PROVIDER)).await,
        0
    );

    let result = ops
        .replay_events(
            Replay {
                query: payments(),
                ..Replay::default()
            },
            "ada",
            |_| {},
        )
        .await
        .expect("replay");
    assert_eq!((result.matched, result.affected), (3, 3));
    let action = result.action_id.expect("an audited action");

    // Exactly one message per matching event, each a new job with the
    // replay's key.
    let published = drain(&env).await;
    assert_eq!(published.len(), 3, "one message per event");
    for event in &seeded {
        let replays = env.store.replays_of(event.id).await.expect("read replays");
        assert_eq!(replays.len(), 1);
        let replay = &replays[0];
        assert_eq!(replay.action_id, action);
        assert!(replay.published_at.is_some(), "confirmed and marked");
        assert_ne!(replay.job_id, event.job_id, "a new job id");
        let (message_id, job) = published
            .iter()
            .find(|(_, j)| j.payload["event_id"] == event.event_id.as_str())
            .expect("its message");
        assert_eq!(job.id, replay.job_id);
        assert_eq!(message_id.as_deref(), Some(job.id.to_string().as_str()));
        assert_eq!(
            job.idempotency_key.as_deref(),
            Some(format!("payments:{}:replay:{action}", event.event_id).as_str())
        );
        assert_eq!(
            (job.provider.as_str(), job.operation.as_str()),
            (PROVIDER, OPERATION)
        );
        let body: Value = serde_json::from_slice(&event.body).expect("JSON");
        assert_eq!(job.payload["event"], body);
        assert_eq!(job.payload["source"], "payments");
    }
    assert!(
        env.store
            .replays_of(retired.id)
            .await
            .expect("read")
            .is_empty(),
        "the filter left it out"
    );

    // The same action cannot take an event again.
    let filter = EventFilter {
        source: Some("payments".into()),
        ..EventFilter::default()
    };
    let again = env
        .store
        .claim_replays(action, &filter, None, 100)
        .await
        .expect("claim");
    assert!(again.is_empty(), "claimed a second time: {again:?}");

    let audit = env
        .store
        .action(action)
        .await
        .expect("read")
        .expect("audited");
    assert_eq!(audit.action, ActionKind::Replay);
    assert_eq!(audit.actor, "ada");
    assert_eq!((audit.matched, audit.affected), (3, 3));
    assert_eq!(audit.filter["source"], "payments");
    assert!(audit.finished_at.is_some() && audit.error.is_none());

    // The event's document shows the replay; a second action enqueues
    // again, with a key of its own.
    let shown = ops.show_event(seeded[0].id).await.expect("show");
    assert_eq!(shown.replays.len(), 1);
    assert_eq!(shown.body_encoding, BodyEncoding::Utf8);
    assert_eq!(shown.headers["webhook-id"], "msg_0");
    assert!(shown.job.is_none(), "no worker ran the original job");
    let second = ops
        .replay_events(
            Replay {
                ids: vec![seeded[0].id],
                ..Replay::default()
            },
            "ada",
            |_| {},
        )
        .await
        .expect("replay again");
    assert_eq!(second.affected, 1);
    let second_action = second.action_id.expect("an action");
    assert_ne!(second_action, action);
    let published = drain(&env).await;
    assert_eq!(published.len(), 1);
    assert_eq!(
        published[0].1.idempotency_key.as_deref(),
        Some(format!("payments:msg_0:replay:{second_action}").as_str())
    );
    assert_eq!(
        env.store
            .replays_of(seeded[0].id)
            .await
            .expect("read")
            .len(),
        2
    );
    ops.close().await;
}

#[tokio::test]
async fn an_event_whose_source_is_gone_is_counted_out_and_said_in_the_action() {
    let (env, ops) = start().await;
    let kept = seed(&env, "payments", "msg_1", b"{\"ok\":true}").await;
    let gone = seed(&env, "retired", "msg_2", b"{}").await;
    let result = ops
        .replay_events(
            Replay {
                ids: vec![kept.id, gone.id],
                ..Replay::default()
            },
            "ada",
            |_| {},
        )
        .await
        .expect("the replay goes on");
    assert_eq!((result.matched, result.affected), (2, 1));
    assert_eq!(drain(&env).await.len(), 1);
    let audit = env
        .store
        .action(result.action_id.expect("an action"))
        .await
        .expect("read")
        .expect("audited");
    assert_eq!((audit.matched, audit.affected), (2, 1));
    let error = audit.error.expect("why one was not replayed");
    assert!(error.contains("\"retired\""), "{error}");
    assert!(audit.finished_at.is_some());
    let replays = env.store.replays_of(gone.id).await.expect("read");
    assert_eq!(replays.len(), 1);
    assert_eq!(replays[0].published_at, None, "left visible, unpublished");
    let shown = ops.show_event(gone.id).await.expect("show");
    assert_eq!(shown.replays[0].published_at, None);
    ops.close().await;
}

#[tokio::test]
async fn a_replay_without_ids_or_filter_is_refused_naming_ids() {
    let (env, ops) = start().await;
    seed(&env, "payments", "msg_1", b"{}").await;
    let Err(OpsError::Invalid(why)) = ops.preview_replay(&Replay::default()).await else {
        panic!("an unfiltered dry run was accepted");
    };
    assert!(why.starts_with("ids:"), "{why}");
    let Err(OpsError::Invalid(why)) = ops.replay_events(Replay::default(), "ada", |_| {}).await
    else {
        panic!("an unfiltered replay was accepted");
    };
    assert!(why.starts_with("ids:"), "{why}");
    assert_eq!(
        env.message_count(&env.topology.work_queue(PROVIDER)).await,
        0
    );
    assert!(
        ops.actions(10, None).await.expect("audit").is_empty(),
        "nothing was begun"
    );
    // `all` says the whole log is meant.
    let all = ops
        .replay_events(
            Replay {
                all: true,
                ..Replay::default()
            },
            "ada",
            |_| {},
        )
        .await
        .expect("replay all");
    assert_eq!(all.affected, 1);
    ops.close().await;
}

#[tokio::test]
async fn events_are_listed_newest_first_filtered_paged_and_shown() {
    let (env, ops) = start().await;
    let first = seed(&env, "payments", "msg_1", b"{}").await;
    let second = seed(&env, "payments", "msg_2", &[0xff, 0x00, 0xfe]).await;
    seed(&env, "other", "msg_3", b"plain text").await;

    let listed = ops.list_events(&payments(), 50, None).await.expect("list");
    assert_eq!(
        listed.iter().map(|e| e.id).collect::<Vec<_>>(),
        [second.id, first.id]
    );
    let page = ops
        .list_events(&payments(), 50, Some(second.id))
        .await
        .expect("the next page");
    assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), [first.id]);
    let by_id = EventQuery {
        event_id: Some("msg_3".into()),
        ..EventQuery::default()
    };
    assert_eq!(
        ops.list_events(&by_id, 50, None).await.expect("list").len(),
        1
    );

    let shown = ops.show_event(second.id).await.expect("show");
    assert_eq!(shown.body_encoding, BodyEncoding::Base64);
    assert_eq!(shown.body, "/wD+");
    assert_eq!(shown.event.body_bytes, 3);
    assert!(matches!(
        ops.show_event(Uuid::now_v7()).await,
        Err(OpsError::NotFound { .. })
    ));

    for (query, field) in [
        (
            EventQuery {
                source: Some("".into()),
                ..EventQuery::default()
            },
            "source",
        ),
        (
            EventQuery {
                event_id: Some("a\0".into()),
                ..EventQuery::default()
            },
            "event_id",
        ),
    ] {
        let Err(OpsError::Invalid(why)) = ops.list_events(&query, 50, None).await else {
            panic!("{query:?} accepted");
        };
        assert!(why.starts_with(&format!("{field}:")), "{why}");
    }
    assert!(matches!(
        ops.list_events(&payments(), 0, None).await,
        Err(OpsError::Invalid(_))
    ));
    ops.close().await;
}
