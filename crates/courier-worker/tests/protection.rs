//! Provider protection against the real services: a rate limit shared by
//! every worker, provider signals obeyed by all, the circuit breaker, an
//! operator's pause, and a healthy provider flowing beside a broken one.
//! What is checked is what the provider received and what PostgreSQL holds.

use courier_core::JobState;
use courier_core::circuit::CircuitState;
use courier_core::envelope::JobEnvelope;
use courier_provider::{Enforced, FailureMix, MockProvider};
use courier_testkit::{OPERATION, PROVIDER, ProviderTiming, TestEnv, scrape};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

/// A provider section named `name` calling `base`, with `extra` TOML
/// (its rate_limit or circuit tables).
fn provider_toml(name: &str, base: &str, extra: &str) -> String {
    courier_testkit::provider_toml(name, base, ProviderTiming::QUICK) + extra
}

fn job_for(provider: &str, script: Option<Value>) -> JobEnvelope {
    let mut payload = json!({"customer": "cus_42"});
    if let Some(s) = script {
        payload["mock"] = s;
    }
    JobEnvelope::new(provider, OPERATION, payload, chrono::Utc::now())
}

async fn publish_all(env: &TestEnv, jobs: &[JobEnvelope]) -> Vec<Uuid> {
    for job in jobs {
        env.publish(job).await;
    }
    jobs.iter().map(|j| j.id).collect()
}

async fn limit_held_by(workers: usize) {
    const PER_SECOND: f64 = 20.0;
    const BURST: u32 = 4;
    const JOBS: usize = 100;
    let mock = MockProvider::start_enforcing(
        FailureMix::default(),
        // The provider tolerates 4 intervals (200 ms) more than the
        // workers' burst: in-process workers beside parallel tests see
        // scheduling delays the release processes of `courier bench
        // ratelimit` (same burst on both sides, 0 429s) do not.
        Enforced {
            per_second: PER_SECOND,
            burst: BURST + 4,
        },
        true,
    )
    .await
    .expect("start the enforcing provider");
    let limit =
        format!("[providers.limited.rate_limit]\nper_second = {PER_SECOND}\nburst = {BURST}\n");
    let env = TestEnv::with_providers(
        FailureMix::default(),
        &provider_toml("limited", &mock.base_url(), &limit),
        &["limited"],
    )
    .await;
    let mut running = Vec::new();
    for _ in 0..workers {
        running.push(env.start_worker().await);
    }
    let jobs: Vec<_> = (0..JOBS).map(|_| job_for("limited", None)).collect();
    let ids = publish_all(&env, &jobs).await;
    env.wait_terminal(&ids, WAIT).await;

    assert_eq!(mock.refused(), 0, "{workers} workers went over the limit");
    let calls = mock.calls();
    assert_eq!(calls.len(), JOBS, "each job called once");
    assert!(calls.iter().all(|c| c.status == 200));
    let span = calls[JOBS - 1].at - calls[0].at;
    let achieved = (JOBS - BURST as usize) as f64 / span.as_secs_f64();
    assert!(
        (0.85 * PER_SECOND..=1.02 * PER_SECOND).contains(&achieved),
        "{workers} workers called at {achieved:.1}/s under a limit of {PER_SECOND}/s"
    );
    for w in &running {
        w.shutdown();
    }
    for w in running {
        w.wait().await;
    }
}

#[tokio::test]
async fn one_worker_holds_the_limit_of_a_provider_that_enforces_it() {
    limit_held_by(1).await;
}

#[tokio::test]
async fn three_workers_together_hold_one_limit() {
    limit_held_by(3).await;
}

/// A provider's signal, seen by one worker, stops a worker that never saw
/// it: the pause goes through PostgreSQL.
async fn a_signal_pauses_every_worker(script: Value, ends_in: &str) {
    let env = TestEnv::new().await;
    let first = env.start_worker().await;
    let signalled = env.job(Some(script));
    env.publish(&signalled).await;
    env.wait_state(signalled.id, ends_in, WAIT).await;
    let said_at = env.mock.calls_for(&signalled.id.to_string())[0].at;
    let state = env
        .store
        .provider_state(PROVIDER)
        .await
        .expect("read provider state")
        .expect("provider row");
    let until = state.paused_until.expect("the pause is shared");
    assert!(until > chrono::Utc::now() + chrono::Duration::milliseconds(1500));

    // A second worker, which never saw the signal, takes over.
    let second = env.start_worker().await;
    first.shutdown();
    first.wait().await;
    let fresh = env.job(None);
    env.publish(&fresh).await;
    env.wait_state(fresh.id, "succeeded", WAIT).await;
    let called = env.mock.calls_for(&fresh.id.to_string());
    assert_eq!(called.len(), 1);
    let waited = called[0].at - said_at;
    assert!(
        waited >= Duration::from_secs(3),
        "the second worker called {waited:?} after the provider asked for 3 s"
    );
    let row = env.store.job(fresh.id).await.expect("read").expect("row");
    assert_eq!(row.attempts, 1, "the wait spent no attempt");
    second.shutdown();
    second.wait().await;
}

#[tokio::test]
async fn retry_after_pauses_the_provider_for_every_worker() {
    a_signal_pauses_every_worker(
        json!({"fail_first": 1, "fail_status": 429, "retry_after": "3"}),
        "retrying",
    )
    .await;
}

#[tokio::test]
async fn ratelimit_fields_pause_the_provider_for_every_worker() {
    a_signal_pauses_every_worker(
        json!({"headers": {"ratelimit": "\"default\";r=0;t=3", "ratelimit-policy": "\"default\";q=100;w=60"}}),
        "succeeded",
    )
    .await;
}

#[tokio::test]
async fn the_circuit_opens_holds_jobs_without_spending_attempts_probes_and_closes() {
    let mock = MockProvider::start(FailureMix::default())
        .await
        .expect("mock");
    let circuit = "[providers.flaky.circuit]\nfailure_rate = 0.5\nmin_calls = 4\nwindow_secs = 30\nopen_secs = 2\nprobes = 2\n";
    let env = TestEnv::with_providers(
        FailureMix::default(),
        &provider_toml("flaky", &mock.base_url(), circuit),
        &["flaky"],
    )
    .await;
    let worker = env.start_worker().await;
    mock.set_down(true);
    let jobs: Vec<_> = (0..6).map(|_| job_for("flaky", None)).collect();
    let ids = publish_all(&env, &jobs).await;
    // Down: the circuit opens, goes half-open after 2 s, its probe fails,
    // and it opens again; all the while the jobs wait.
    env.wait_for_metrics(&worker, "the circuit to open twice", WAIT, |s| {
        s.sum(
            "courier_circuit_transitions_total",
            &["provider=\"flaky\"", "to=\"open\""],
        ) >= 2.0
    })
    .await;
    let failed_while_down = mock.calls().len();
    mock.set_down(false);
    env.wait_terminal(&ids, WAIT).await;

    let scrape = scrape::metrics(worker.telemetry_addr()).await;
    assert!(
        scrape.sum(
            "courier_jobs_deferred_total",
            &["provider=\"flaky\"", "reason=\"circuit_open\""]
        ) >= 1.0,
        "jobs came back while the circuit was open and were sent to wait"
    );
    assert!(
        scrape.sum(
            "courier_circuit_transitions_total",
            &["provider=\"flaky\"", "to=\"closed\""]
        ) >= 1.0
    );
    let state = env
        .store
        .provider_state("flaky")
        .await
        .expect("read")
        .expect("row");
    assert_eq!(state.circuit, CircuitState::Closed);
    // The first calls tripped it, then only probes went until it closed.
    assert!(
        failed_while_down <= 6 + 2 * 2,
        "{failed_while_down} calls while the provider was down"
    );
    let mut recorded = 0;
    for id in &ids {
        let row = env.store.job(*id).await.expect("read").expect("row");
        assert_eq!(
            row.state,
            JobState::Succeeded,
            "nothing is dead because the provider was down"
        );
        recorded += env.store.attempts(*id).await.expect("attempts").len();
    }
    assert_eq!(
        recorded,
        mock.calls().len(),
        "every call the provider saw is a recorded attempt"
    );
    assert!(env.store.dead_letters().await.expect("letters").is_empty());
    worker.shutdown();
    worker.wait().await;
}

#[tokio::test]
async fn an_operator_pauses_and_resumes_a_provider_for_every_worker() {
    let env = TestEnv::new().await;
    let config = env.config();
    let worker = env.start_worker().await;
    let paused = courier_ops::providers::pause(&config, &env.store, PROVIDER, "ops-alice", None)
        .await
        .expect("pause");
    env.wait_for_metrics(&worker, "the worker to see the pause", WAIT, |s| {
        s.sum("courier_provider_held", &[]) == 1.0
    })
    .await;
    let job = env.job(None);
    env.publish(&job).await;
    env.wait_for_metrics(&worker, "the job to wait twice", WAIT, |s| {
        s.sum("courier_jobs_deferred_total", &["reason=\"held\""]) >= 2.0
    })
    .await;
    assert!(
        env.mock.calls_for(&job.id.to_string()).is_empty(),
        "held: not called"
    );
    let link = courier_amqp::connect(&courier_testkit::broker(), "protection-test")
        .await
        .expect("connect");
    let seen = courier_ops::providers::overview(&config, &env.store, &link)
        .await
        .expect("overview");
    let mine = seen.iter().find(|p| p.name == PROVIDER).expect("listed");
    assert_eq!(mine.held.as_ref().map(|h| h.by.as_str()), Some("ops-alice"));

    let resumed = courier_ops::providers::resume(&config, &env.store, PROVIDER, "ops-bob")
        .await
        .expect("resume");
    env.wait_state(job.id, "succeeded", WAIT).await;
    assert_eq!(env.store.attempts(job.id).await.expect("attempts").len(), 1);
    for (id, actor, action) in [
        (paused, "ops-alice", "pause"),
        (resumed, "ops-bob", "resume"),
    ] {
        let audit = env.store.action(id).await.expect("read").expect("audited");
        assert_eq!(
            (audit.actor.as_str(), audit.action.as_str()),
            (actor, action)
        );
        assert_eq!(audit.filter["provider"], PROVIDER);
    }
    let unknown = courier_ops::providers::pause(&config, &env.store, "nobody", "ops", None).await;
    assert!(matches!(
        unknown,
        Err(courier_ops::providers::ProvidersError::Unknown(_))
    ));
    let _ = link.close("done").await;
    worker.shutdown();
    worker.wait().await;
}

#[tokio::test]
async fn a_healthy_provider_keeps_flowing_while_another_times_out() {
    let stuck = MockProvider::start(FailureMix {
        timeout: 1.0,
        hang: Duration::from_secs(30),
        ..FailureMix::default()
    })
    .await
    .expect("mock");
    let env = TestEnv::with_providers(
        FailureMix::default(),
        &provider_toml(
            "stuck",
            &stuck.base_url(),
            "[providers.stuck.circuit]\nmin_calls = 10\n",
        ),
        &["stuck"],
    )
    .await;
    let worker = env.start_worker().await;
    let stuck_jobs: Vec<_> = (0..40).map(|_| job_for("stuck", None)).collect();
    let stuck_ids = publish_all(&env, &stuck_jobs).await;
    let healthy: Vec<_> = (0..200).map(|_| env.job(None)).collect();
    let started = Instant::now();
    let healthy_ids = publish_all(&env, &healthy).await;
    env.wait_terminal(&healthy_ids, WAIT).await;
    let took = started.elapsed();
    env.wait_for_metrics(&worker, "the stuck provider's circuit to open", WAIT, |s| {
        s.sum(
            "courier_circuit_transitions_total",
            &["provider=\"stuck\"", "to=\"open\""],
        ) >= 1.0
    })
    .await;
    for id in &stuck_ids {
        let state = env.state_of(*id).await;
        assert_ne!(
            state.as_deref(),
            Some("dead"),
            "a job died because its provider is down"
        );
    }
    assert!(
        env.mock.calls().len() >= 200,
        "every healthy job was called (in {took:?})"
    );
    worker.shutdown();
    worker.wait().await;
}

#[tokio::test]
async fn deliveries_waiting_for_a_rate_limit_slot_go_back_to_their_queue_at_shutdown() {
    let mock = MockProvider::start(FailureMix::default())
        .await
        .expect("mock");
    let env = TestEnv::with_providers(
        FailureMix::default(),
        &provider_toml(
            "slow",
            &mock.base_url(),
            "[providers.slow.rate_limit]\nper_second = 0.2\n",
        ),
        &["slow"],
    )
    .await;
    let worker = env.start_worker().await;
    let jobs: Vec<_> = (0..3).map(|_| job_for("slow", None)).collect();
    let ids = publish_all(&env, &jobs).await;
    assert!(mock.wait_for_calls(1, WAIT).await);
    worker.shutdown();
    worker.wait().await;

    assert_eq!(
        mock.call_count(),
        1,
        "the next slot is 5 s away: no other call"
    );
    let mut recorded = 0;
    for id in &ids {
        recorded += usize::from(env.state_of(*id).await.is_some());
    }
    assert_eq!(recorded, 1, "only the called job has a row");
    let back = env
        .wait_for_ready(&env.topology.work_queue("slow"), 2)
        .await;
    assert_eq!(
        back, 2,
        "the two waiting for a slot are back in their queue"
    );
}
