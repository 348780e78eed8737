//! The web console in a real browser: Debian's Chromium driven by
//! playwright-core (`console/console.mjs`) against the admin server, a
//! worker, RabbitMQ and PostgreSQL; then what really happened is checked in
//! PostgreSQL and in the provider's own log.
//!
//! Needs Node.js, `/usr/bin/chromium` (or `CHROMIUM`) and the script's
//! `node_modules`: `scripts/test` installs them (`scripts/test-tools`).
//! Screenshots go to the test's temporary folder, or to
//! `COURIER_CONSOLE_SCREENSHOTS` (docs/console keeps the committed ones).

use courier_admin::AdminServer;
use courier_core::{ActionKind, LetterStatus};
use courier_provider::{FailureMix, MockProvider};
use courier_store::DeadLetterRecord;
use courier_testkit::{PROVIDER, ProviderTiming, TestEnv, admin_tokens, provider_toml};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;
use uuid::Uuid;

const LEAD: &str = "lead-token-0123456789abcdef";
const READER: &str = "reader-token-0123456789abcdef";
const OTHER: &str = "erp";
const WAIT: Duration = Duration::from_secs(60);

fn script_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console")
}

fn letter_of(letters: &[DeadLetterRecord], job: Uuid) -> Uuid {
    letters
        .iter()
        .find(|l| l.job_id == Some(job))
        .map(|l| l.id)
        .expect("the job's dead letter")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_recovers_dead_letters_in_the_browser() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists() && script_dir().join("node_modules/playwright-core").exists(),
        "the console test needs Debian's chromium and the script's node_modules: run scripts/test-tools (scripts/test does)"
    );
    let erp = MockProvider::start(FailureMix::default())
        .await
        .expect("start the second mock provider");
    let (tokens, _files) = admin_tokens(&[
        ("lead", LEAD, &["read", "requeue", "purge", "pause"]),
        ("reader", READER, &["read"]),
    ]);
    let extra = format!(
        "{tokens}\n{}",
        provider_toml(OTHER, &erp.base_url(), ProviderTiming::DEFAULT)
    );
    let env = TestEnv::with_providers(FailureMix::default(), &extra, &[OTHER]).await;

    // Dead letters: three declined by the provider (a 422 its payload
    // scripts), two recorded as dead without running, two of another
    // provider that no action here may touch.
    let worker = env.start_worker().await;
    let declined: Vec<_> = (0..3)
        .map(|_| env.job(Some(json!({"status": 422}))))
        .collect();
    let mut others = Vec::new();
    for _ in 0..2 {
        let mut job = env.job(Some(json!({"status": 422})));
        job.provider = OTHER.into();
        others.push(job);
    }
    for job in declined.iter().chain(&others) {
        env.publish(job).await;
    }
    for job in declined.iter().chain(&others) {
        env.wait_state(job.id, "dead", WAIT).await;
    }
    let fabricated = env.fabricate_dead_letters(2).await;
    let letters = env.store.dead_letters().await.expect("read dead letters");
    assert_eq!(letters.len(), 7);
    let single = letter_of(&letters, fabricated[0].id);
    let purged = letter_of(&letters, fabricated[1].id);

    let mut config = env.config();
    config
        .providers
        .get_mut(PROVIDER)
        .expect("the test provider")
        .owner = Some("payments-team".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = AdminServer::start(&config, listener)
        .await
        .expect("start the admin server");

    let screenshots = std::env::var("COURIER_CONSOLE_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("console-{}", env.namespace))
        });
    let patch = r#"{"mock": null}"#;
    let plan = json!({
        "url": format!("http://{}", server.addr),
        "chromium": chromium,
        "screenshots": screenshots,
        "lead": LEAD,
        "reader": READER,
        "provider": PROVIDER,
        "other": OTHER,
        "pending_all": 7,
        "pending": 5,
        "pending_other": 2,
        "bulk": 3,
        "single": single,
        "purge": purged,
        "job": declined[0].id,
        "patch": patch,
    });
    let run = tokio::process::Command::new("node")
        .arg(script_dir().join("console.mjs"))
        .env("COURIER_CONSOLE_PLAN", plan.to_string())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the browser test ends within 5 minutes")
        .expect("run node (is Node.js installed?)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the browser test failed:\n{stdout}\n{}\n(screenshots in {})",
        String::from_utf8_lossy(&out.stderr),
        screenshots.display()
    );

    // What the browser did, as PostgreSQL and the provider saw it: the
    // requeued jobs ran again and succeeded (the patch removed the script
    // that declined them, so the provider answered 200), the purged letter
    // is settled without a run, and the other provider's letters are
    // untouched by the filter's requeue.
    let requeued: Vec<Uuid> = declined
        .iter()
        .map(|j| j.id)
        .chain([fabricated[0].id])
        .collect();
    env.wait_terminal(&requeued, WAIT).await;
    for id in &requeued {
        assert_eq!(env.state_of(*id).await.as_deref(), Some("succeeded"));
    }
    for job in &declined {
        let answers: Vec<u16> = env
            .mock
            .calls_for(&job.id.to_string())
            .iter()
            .map(|c| c.status)
            .collect();
        assert_eq!(answers, [422, 200], "job {}", job.id);
    }
    assert_eq!(
        env.state_of(fabricated[1].id).await.as_deref(),
        Some("dead")
    );
    let letters = env.store.dead_letters().await.expect("read dead letters");
    let status = |id: Uuid| {
        letters
            .iter()
            .find(|l| l.id == id)
            .map(|l| l.status)
            .expect("letter")
    };
    assert_eq!(status(single), LetterStatus::Requeued);
    assert_eq!(status(purged), LetterStatus::Purged);
    for job in &others {
        assert_eq!(status(letter_of(&letters, job.id)), LetterStatus::Pending);
    }
    let actions = env.store.actions(10, None).await.expect("read the audit");
    // The filter's requeue went as far as its dry run counted, no further.
    assert!(
        actions[0].filter["until"].is_string(),
        "the bulk requeue was bounded: {}",
        actions[0].filter
    );
    let summary: Vec<(ActionKind, String, i32, Option<serde_json::Value>)> = actions
        .into_iter()
        .map(|a| (a.action, a.actor, a.affected, a.patch))
        .collect();
    assert_eq!(
        summary,
        [
            (
                ActionKind::Requeue,
                "api:lead".into(),
                3,
                Some(json!({"mock": null}))
            ),
            (ActionKind::Purge, "api:lead".into(), 1, None),
            (ActionKind::Requeue, "api:lead".into(), 1, None),
        ]
    );
    worker.shutdown();
    worker.wait().await;
}
