//! End-to-end: the `courier` binary as users run it, against the real
//! RabbitMQ and PostgreSQL on loopback, each test in its own namespace.

use courier_core::{JobState, LetterStatus};
use courier_testkit::{PROVIDER, TestEnv, admin_tokens};
use serde_json::json;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn courier() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_courier"));
    cmd.env_remove("COURIER_CONFIG")
        .env_remove("COURIER_NAMESPACE");
    cmd
}

/// Writes `text` to a file of this test's own, under target/ (kept for
/// reading a failed run's logs, removed by `cargo clean`).
fn temp_file(name: &str, text: &str) -> PathBuf {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "courier-e2e-{}-{name}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::write(&path, text).expect("write temp file");
    path
}

/// `courier run` on the env's config, logs to a file (a full pipe would stall it).
fn spawn_worker(env: &TestEnv) -> (Child, PathBuf) {
    let config = temp_file("courier.toml", env.config_toml());
    let log = config.with_extension("log");
    let child = courier()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("create log file"))
        .spawn()
        .expect("spawn courier run");
    (child, log)
}

fn run_with_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child = courier()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn courier");
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for courier")
}

async fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("poll child") {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "courier did not exit within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_flight_finishes_what_it_can_and_requeues_the_rest() {
    let env = TestEnv::with_mix(Default::default(), "[worker]\nshutdown_grace_secs = 1").await;
    let quick: Vec<_> = (0..8)
        .map(|_| env.job(Some(json!({"delay_ms": 300}))))
        .collect();
    let slow: Vec<_> = (0..8)
        .map(|_| env.job(Some(json!({"delay_ms": 5000}))))
        .collect();
    for job in quick.iter().chain(&slow) {
        env.publish(job).await;
    }
    let (mut child, log) = spawn_worker(&env);
    assert!(
        env.mock.wait_for_calls(16, WAIT).await,
        "all 16 jobs in flight; log: {}",
        log.display()
    );

    let pid = child.id().to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    assert!(sent.success());
    let status = wait_exit(&mut child, Duration::from_secs(20)).await;
    assert!(
        status.success(),
        "graceful shutdown exits 0, got {status}; log: {}",
        log.display()
    );

    for job in &quick {
        let row = env
            .store
            .job(job.id)
            .await
            .expect("read")
            .expect("quick job recorded");
        assert_eq!(
            row.state,
            JobState::Succeeded,
            "in-flight work within the grace period completes"
        );
    }
    for job in &slow {
        assert!(
            env.state_of(job.id).await.is_none(),
            "unfinished work is not recorded as done"
        );
    }
    assert_eq!(
        env.message_count(&env.topology.work_queue(PROVIDER)).await,
        8,
        "unfinished work is back in the queue"
    );

    let worker = env.start_worker().await;
    let ids: Vec<_> = quick.iter().chain(&slow).map(|j| j.id).collect();
    env.wait_terminal(&ids, WAIT).await;
    for job in &slow {
        assert_eq!(env.state_of(job.id).await.expect("recorded"), "succeeded");
    }
    worker.shutdown();
    worker.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_flight_loses_no_job() {
    let env = TestEnv::new().await;
    let mut jobs = Vec::new();
    for n in 0..60 {
        let script = match n % 3 {
            0 => json!({"delay_ms": 200}),
            1 => json!({"delay_ms": 100, "fail_first": 1, "fail_status": 503}),
            _ => json!({"delay_ms": 100, "status": 400}),
        };
        let job = env.job(Some(script));
        env.publish(&job).await;
        jobs.push(job);
    }
    let (mut child, log) = spawn_worker(&env);
    assert!(
        env.mock.wait_for_calls(20, WAIT).await,
        "worker got going; log: {}",
        log.display()
    );
    child.kill().expect("kill -9");
    let status = child.wait().expect("reap");
    assert!(!status.success(), "killed, not exited");

    // A second worker (a new process, as after a crash) picks up everything.
    let (mut second, log2) = spawn_worker(&env);
    let ids: Vec<_> = jobs.iter().map(|j| j.id).collect();
    env.wait_terminal(&ids, WAIT).await;
    second.kill().expect("stop the second worker");
    let _ = second.wait();

    for (n, job) in jobs.iter().enumerate() {
        let row = env
            .store
            .job(job.id)
            .await
            .expect("read")
            .expect("every job recorded");
        let expected = if n % 3 == 2 {
            JobState::Dead
        } else {
            JobState::Succeeded
        };
        assert_eq!(
            row.state,
            expected,
            "job {n}; logs: {} {}",
            log.display(),
            log2.display()
        );
    }
    let dead = env.store.dead_letters().await.expect("read dead letters");
    assert_eq!(dead.len(), 20, "one dead letter per dead job, no more");
}

#[tokio::test]
async fn demo_runs_the_pipeline_and_accounts_for_every_job() {
    let env = TestEnv::new().await;
    let out = courier()
        .args([
            "demo",
            "--jobs",
            "60",
            "--failure-rate",
            "0.3",
            "--json",
            "--namespace",
            &env.namespace,
        ])
        .output()
        .expect("run courier demo");
    assert!(
        out.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("demo --json prints JSON");
    let succeeded = summary["succeeded"].as_i64().expect("succeeded");
    let dead = summary["dead"].as_i64().expect("dead");
    assert_eq!(succeeded + dead, 60);
    assert_eq!(summary["retrying"], 0);
    let counts = env.store.state_counts().await.expect("count states");
    let total: i64 = counts.iter().map(|(_, n)| n).sum();
    assert_eq!(total, 60, "one row, one terminal state per job: {counts:?}");
    assert_eq!(
        env.store.dead_letters().await.expect("read").len() as i64,
        dead
    );
}

#[tokio::test]
async fn publish_sends_a_valid_job_and_refuses_an_invalid_one_naming_the_field() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let config = temp_file("courier.toml", env.config_toml());
    let config = config.to_str().expect("utf-8 path");

    let job = json!({"provider": PROVIDER, "operation": "charge", "payload": {"customer": "c1"}});
    let out = run_with_stdin(&["publish", "--config", config, "--json"], &job.to_string());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON out");
    let id: uuid::Uuid = printed["id"].as_str().expect("id").parse().expect("uuid");
    env.wait_state(id, "succeeded", WAIT).await;

    let bad = json!({"provider": PROVIDER, "payload": {}});
    let out = run_with_stdin(&["publish", "--config", config], &bad.to_string());
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("field `operation`: missing") && err.contains("stdin"),
        "{err}"
    );
    worker.shutdown();
    worker.wait().await;
}

#[test]
fn a_bad_config_is_refused_naming_the_key_and_the_file() {
    let path = temp_file(
        "bad.toml",
        "[providers.x]\nbase_url = \"http://127.0.0.1:1\"\n[providers.x.retry]\nmax_attempts = 0\n",
    );
    let out = courier()
        .arg("run")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run courier");
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("providers.x.retry.max_attempts"), "{err}");
}

#[test]
fn unreachable_services_are_named_with_their_address_and_a_hint() {
    let out = courier()
        .arg("migrate")
        .env(
            "COURIER_DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/postgres",
        )
        .output()
        .expect("run courier");
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("PostgreSQL at 127.0.0.1:1") && err.contains("scripts/services.sh"),
        "{err}"
    );

    let out = courier()
        .args(["publish", "--raw", "x"])
        .env("COURIER_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .stdin(Stdio::null())
        .output()
        .expect("run courier");
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("RabbitMQ at 127.0.0.1:1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operators_requeuing_the_same_1000_letters_republish_each_exactly_once() {
    let env = TestEnv::new().await;
    let jobs = env.fabricate_dead_letters(1000).await;
    let config = temp_file("courier.toml", env.config_toml());
    let config = config.to_str().expect("utf-8 path");

    let dry = courier()
        .args([
            "dead",
            "requeue",
            "--config",
            config,
            "--provider",
            PROVIDER,
            "--dry-run",
            "--json",
        ])
        .output()
        .expect("run courier");
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let preview: serde_json::Value = serde_json::from_slice(&dry.stdout).expect("JSON");
    assert_eq!(preview["matched"], 1000);
    assert_eq!(
        env.store
            .count_pending(&Default::default())
            .await
            .expect("count"),
        1000,
        "a dry run changes nothing"
    );

    let requeue = |actor: &str| {
        courier()
            .args([
                "dead",
                "requeue",
                "--config",
                config,
                "--provider",
                PROVIDER,
                "--yes",
                "--json",
                "--actor",
                actor,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn courier dead requeue")
    };
    let (a, b) = (requeue("alice"), requeue("bob"));
    let (a, b) = (
        a.wait_with_output().expect("wait"),
        b.wait_with_output().expect("wait"),
    );
    for out in [&a, &b] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let affected = |out: &Output| {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
        v["affected"].as_u64().expect("count")
    };
    assert_eq!(
        affected(&a) + affected(&b),
        1000,
        "together, every letter once"
    );
    assert_eq!(
        env.message_count(&env.topology.work_queue(PROVIDER)).await,
        1000,
        "exactly 1000 republished"
    );
    let letters = env.store.dead_letters().await.expect("read");
    assert!(letters.iter().all(|l| l.status == LetterStatus::Requeued));

    let worker = env.start_worker().await;
    let ids: Vec<_> = jobs.iter().map(|j| j.id).collect();
    env.wait_terminal(&ids, WAIT).await;
    worker.shutdown();
    worker.wait().await;
    assert_eq!(
        env.store.state_counts().await.expect("count"),
        [("succeeded".to_owned(), 1000)]
    );
    assert_eq!(env.mock.call_count(), 1000, "one provider call per job");
}

#[tokio::test]
async fn dead_show_of_an_unknown_letter_says_so() {
    let env = TestEnv::new().await;
    let out = courier()
        .args(["dead", "show", &uuid::Uuid::now_v7().to_string()])
        .env("COURIER_NAMESPACE", &env.namespace)
        .output()
        .expect("run courier");
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn providers_lists_pauses_and_resumes_from_the_command_line() {
    let env = TestEnv::new().await;
    let config = temp_file("courier.toml", env.config_toml());
    let run = |args: &[&str]| {
        let out = courier()
            .arg("--config")
            .arg(&config)
            .arg("providers")
            .args(args)
            .env("USER", "ops-carol")
            .output()
            .expect("run courier providers");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let listed = |held: bool| {
        let (code, out) = run(&["--json"]);
        assert_eq!(code, Some(0), "{out}");
        let all: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        assert_eq!(all[0]["name"], PROVIDER);
        assert_eq!(all[0]["circuit"], "closed");
        assert_eq!(all[0]["held"].is_object(), held, "{all}");
        all
    };
    listed(false);
    let (code, out) = run(&["pause", PROVIDER, "--for", "10m"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("paused for every worker"), "{out}");
    let all = listed(true);
    assert_eq!(all[0]["held"]["by"], "ops-carol");
    let state = env
        .store
        .provider_state(PROVIDER)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(state.held_by.as_deref(), Some("ops-carol"));
    let (code, table) = run(&[]);
    assert_eq!(code, Some(0));
    assert!(table.contains("by ops-carol until"), "{table}");
    let (code, _) = run(&["resume", PROVIDER]);
    assert_eq!(code, Some(0));
    listed(false);
    let (code, _) = run(&["pause", "nobody"]);
    assert_eq!(code, Some(6), "an unknown provider is not found");
}

#[test]
fn bench_requeue_runs_at_a_tiny_size_and_cleans_up() {
    let out = courier()
        .args(["bench", "requeue", "--letters", "300", "--batch", "100"])
        .output()
        .expect("run courier bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("exactly once    yes"), "{table}");
}

/// Runs `courier bench <args> --json FILE` and returns the report.
fn bench_json(args: &[&str]) -> serde_json::Value {
    let json = temp_file("bench.json", "");
    let out = courier()
        .arg("bench")
        .args(args)
        .arg("--json")
        .arg(&json)
        .env("COURIER_BENCH_QUIET_SECS", "0")
        .output()
        .expect("run courier bench");
    assert!(
        out.status.success(),
        "bench {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&json).expect("read the bench report");
    serde_json::from_str(&text).expect("the report is JSON")
}

#[test]
fn bench_drain_reports_every_figure_beside_the_baseline() {
    let report = bench_json(&["drain", "--jobs", "300"]);
    let baseline = &report["baseline"];
    assert_eq!(baseline["messages"], 300);
    assert!(baseline["consume_per_second"].as_f64().expect("a rate") > 0.0);
    let run = &report["runs"][0];
    assert_eq!(run["jobs"], 300);
    assert_eq!(
        run["outcomes"],
        json!({"succeeded": 300}),
        "nothing lost or doubled"
    );
    assert_eq!(run["attempts"], 300);
    for figure in [
        "wall_seconds",
        "jobs_per_second",
        "ratio_to_baseline",
        "worker_cpu_seconds_per_1000_jobs",
        "worker_peak_rss_mb",
    ] {
        assert!(run[figure].as_f64().expect(figure) > 0.0, "{figure}: {run}");
    }
    let latency = &run["latency_ms"];
    assert!(latency["p50"].as_f64() <= latency["p99"].as_f64());
    assert!(latency["p99"].as_f64() <= latency["max"].as_f64());
}

#[test]
fn baseline_processes_and_providers_benches_run_at_a_tiny_size() {
    let report = bench_json(&["baseline", "--jobs", "200"]);
    assert_eq!(report["runs"], json!([]));

    let report = bench_json(&["processes", "--jobs", "200"]);
    let workers: Vec<_> = report["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| {
            (
                r["worker_processes"].clone(),
                r["outcomes"]["succeeded"].clone(),
                r["attempts"].clone(),
                r["provider_calls"].clone(),
            )
        })
        .collect();
    let once = |n: u64| (json!(n), json!(200), json!(200), json!(200));
    assert_eq!(workers, [once(1), once(2), once(4)]);

    let report = bench_json(&["providers", "--jobs", "200", "--providers", "5"]);
    assert_eq!(report["runs"][0]["outcomes"], json!({"succeeded": 200}));
}

#[test]
fn backlog_and_steady_benches_run_at_a_tiny_size() {
    let report = bench_json(&[
        "backlog",
        "--small",
        "100",
        "--large",
        "400",
        "--measure",
        "100",
    ]);
    let measured: Vec<_> = report["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["label"].clone())
        .collect();
    assert_eq!(measured, [json!("100 waiting"), json!("400 waiting")]);

    let report = bench_json(&[
        "steady",
        "--shares",
        "0.5",
        "--seconds",
        "1",
        "--calibrate",
        "200",
    ]);
    let runs = report["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2, "calibration, then one rate");
    assert!(runs[1]["jobs"].as_u64().expect("jobs") > 0);
}

#[test]
fn the_failing_bench_runs_at_a_tiny_size() {
    let report = bench_json(&["failing", "--jobs", "100"]);
    let outcomes = &report["runs"][0]["outcomes"];
    let terminal =
        outcomes["succeeded"].as_i64().unwrap_or(0) + outcomes["dead"].as_i64().unwrap_or(0);
    assert_eq!(terminal, 100, "every job terminal: {outcomes}");
    assert!(
        report["runs"][0]["attempts"].as_i64().expect("attempts") > 100,
        "failures were retried"
    );
}

#[test]
fn the_ratelimit_bench_holds_the_limit_at_a_tiny_size() {
    let report = bench_json(&[
        "ratelimit",
        "--per-second",
        "40",
        "--burst",
        "5",
        "--seconds",
        "3",
        "--processes",
        "1,2",
        // Beside parallel tests, scheduling delays bunch calls that the
        // release bench on a quiet machine spreads (0 429s, no slack): a
        // call leased on time reaches the provider late, next to the
        // following one. One burst of slack; the rate check below still
        // holds the limit (CI runs with the deploy tests beside them saw one
        // 429 at a slack of 3, and one at 5).
        "--provider-slack",
        "10",
    ]);
    let runs = report["report"].as_array().expect("runs");
    assert_eq!(runs.len(), 2);
    for run in runs {
        assert_eq!(run["refused_429"], 0, "{run}");
        let achieved = run["achieved_per_second"].as_f64().expect("a rate");
        assert!((30.0..=41.0).contains(&achieved), "{run}");
        assert!(run["leases"].as_i64().expect("leases") > 0, "{run}");
    }
}

#[test]
fn the_isolation_overhead_and_outage_benches_run_at_a_tiny_size() {
    let report = bench_json(&["isolation", "--jobs", "300", "--stuck", "30"]);
    let labels: Vec<_> = report["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| (r["label"].clone(), r["outcomes"]["succeeded"].clone()))
        .collect();
    assert_eq!(
        labels,
        [
            (json!("healthy alone"), json!(300)),
            (json!("beside 30 timing out"), json!(300))
        ]
    );

    let report = bench_json(&["overhead", "--jobs", "200", "--rounds", "1"]);
    assert_eq!(report["runs"].as_array().expect("runs").len(), 2);

    let report = bench_json(&[
        "outage",
        "--rate",
        "50",
        "--before",
        "1",
        "--down",
        "4",
        "--after",
        "2",
        "--open-secs",
        "2",
    ]);
    let outage = &report["report"];
    assert_eq!(outage["dead"], 0, "{outage}");
    assert_eq!(outage["calls_while_open"], 0, "{outage}");
    assert_eq!(outage["succeeded"], outage["published"], "{outage}");
}

/// Waits until `log` holds a line containing `needle`; the worker writes
/// it when the event happened.
async fn wait_for_log(log: &std::path::Path, needle: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if std::fs::read_to_string(log).is_ok_and(|text| text.contains(needle)) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{needle:?} never logged; log: {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_ignores_proxy_variables_and_rereads_its_token_file_on_sighup() {
    let token = temp_file("provider-token", "first-token-0123456789\n");
    let env = TestEnv::with_mix(
        Default::default(),
        &format!(
            "[providers.{PROVIDER}.auth]\nscheme = \"bearer\"\ntoken_file = \"{}\"\n",
            token.display()
        ),
    )
    .await;
    // A "proxy" nobody configured for Courier: it must see no connection.
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    proxy.set_nonblocking(true).expect("non-blocking");
    let proxy_url = format!("http://{}", proxy.local_addr().expect("address"));
    let config = temp_file("courier.toml", env.config_toml());
    let log = config.with_extension("log");
    let mut child = courier()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .envs([
            ("HTTP_PROXY", &proxy_url),
            ("HTTPS_PROXY", &proxy_url),
            ("ALL_PROXY", &proxy_url),
            ("http_proxy", &proxy_url),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("create log file"))
        .spawn()
        .expect("spawn courier run");

    let first = env.job(None);
    env.publish(&first).await;
    env.wait_state(first.id, "succeeded", WAIT).await;
    std::fs::write(&token, "second-token-0123456789\n").expect("rotate the token");
    let sent = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(sent.success());
    wait_for_log(&log, "secrets re-read from their files").await;
    let second = env.job(None);
    env.publish(&second).await;
    env.wait_state(second.id, "succeeded", WAIT).await;
    child.kill().expect("stop the worker");
    let _ = child.wait();

    let seen = |id: uuid::Uuid| env.mock.calls_for(&id.to_string())[0].authorization.clone();
    assert_eq!(
        seen(first.id).as_deref(),
        Some("Bearer first-token-0123456789")
    );
    assert_eq!(
        seen(second.id).as_deref(),
        Some("Bearer second-token-0123456789")
    );
    assert!(
        proxy.accept().is_err(),
        "the worker went through the proxy in HTTP(S)_PROXY"
    );
    let logged = std::fs::read_to_string(&log).expect("read the log");
    assert!(
        !logged.contains("token-0123456789"),
        "a token reached the log"
    );
}

#[tokio::test]
async fn dead_list_and_show_write_out_control_characters_instead_of_sending_them_to_the_terminal() {
    let env = TestEnv::new().await;
    let hostile = "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{1b}[31mred";
    let mut letter =
        courier_store::DeadLetterRow::bare(None, courier_core::DeadReason::Invalid, "x");
    letter.detail = format!("field `{hostile}`: unknown field");
    letter.provider = Some(format!("p{hostile}"));
    letter.body = format!("{{\"a\":\"{hostile}\"").into_bytes();
    let id = letter.id;
    env.store
        .commit(&[courier_store::Outcome::Rejected {
            job: None,
            dead_letter: letter,
        }])
        .await
        .expect("record a hostile dead letter");
    let config = temp_file("courier.toml", env.config_toml());
    for args in [
        vec!["dead", "list"],
        vec!["dead", "show", &id.to_string()],
        vec!["dead", "stats"],
    ] {
        let out = courier()
            .args(&args)
            .arg("--config")
            .arg(&config)
            .output()
            .expect("run courier");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.stdout.iter().any(|b| *b == 0x1b || *b == 0x07),
            "{args:?} printed control characters"
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("\\u{1b}"),
            "{args:?} shows them escaped"
        );
    }
}

/// The CLI's `--json` and the admin API print the same documents: one
/// operator core (courier-ops) answers both. Compared as bytes, except the
/// providers' current call rate, which moves between the two asks.
#[tokio::test]
async fn the_cli_json_and_the_admin_api_agree_for_every_command() {
    const TOKEN: &str = "parity-token-0123456789";
    let (tokens, _files) = admin_tokens(&[("parity", TOKEN, &["read", "requeue", "purge"])]);
    // A webhook source, for `courier events`.
    let ingest = r#"
[ingest]
listen = "127.0.0.1:0"

[ingest.sources.payments]
scheme = "standard-webhooks"
secrets = [{ secret_env = "COURIER_TEST_WEBHOOK_SECRET" }]
provider = "mockpay"
operation = "charge"
"#;
    let env = TestEnv::with_mix(Default::default(), &format!("{tokens}\n{ingest}")).await;
    let worker = env.start_worker().await;
    let mut jobs = Vec::new();
    for _ in 0..3 {
        let mut job = env.job(Some(json!({"status": 422})));
        job.idempotency_key = Some("parity-key".into());
        env.publish(&job).await;
        jobs.push(job);
    }
    for job in &jobs {
        env.wait_state(job.id, "dead", WAIT).await;
    }
    worker.shutdown();
    worker.wait().await;
    let letter = env.store.dead_letters().await.expect("read")[0].id;
    let job = jobs[0].id;
    let event = courier_store::NewEvent {
        id: uuid::Uuid::now_v7(),
        source: "payments".into(),
        event_id: "evt_parity".into(),
        headers: json!({"webhook-id": "evt_parity"}),
        body: br#"{"type":"payment.completed"}"#.to_vec(),
        received_at: chrono::Utc::now(),
        job_id: uuid::Uuid::now_v7(),
    };
    env.store
        .record_event(&event, || async { Ok::<(), std::convert::Infallible>(()) })
        .await
        .expect("record an event");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = courier_admin::AdminServer::start(&env.config(), listener)
        .await
        .expect("start the admin API");
    courier_provider::install_crypto();
    let http = reqwest::Client::new();
    let config = temp_file("courier.toml", env.config_toml());
    let cli = |args: &[&str]| {
        let out = courier()
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .expect("run courier");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("UTF-8")
            .trim_end()
            .to_owned()
    };
    let api = |method: reqwest::Method, path: String, body: Option<serde_json::Value>| {
        let mut request = http
            .request(method, format!("http://{}{path}", server.addr))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.expect("call the API");
            assert!(
                response.status().is_success(),
                "{path}: {}",
                response.status()
            );
            response.text().await.expect("body")
        }
    };
    let (letter, job, event) = (letter.to_string(), job.to_string(), event.id.to_string());
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;
    let pairs: Vec<(
        Vec<&str>,
        reqwest::Method,
        String,
        Option<serde_json::Value>,
    )> = vec![
        (
            vec!["dead", "list", "--provider", PROVIDER, "--json"],
            get.clone(),
            format!("/dead-letters?provider={PROVIDER}"),
            None,
        ),
        (
            vec!["dead", "list", "--all", "--limit", "2", "--json"],
            get.clone(),
            "/dead-letters?all=true&limit=2".into(),
            None,
        ),
        (
            vec!["dead", "stats", "--json"],
            get.clone(),
            "/dead-letters/stats".into(),
            None,
        ),
        (
            vec!["dead", "show", &letter, "--json"],
            get.clone(),
            format!("/dead-letters/{letter}"),
            None,
        ),
        (
            vec!["jobs", "show", &job, "--json"],
            get.clone(),
            format!("/jobs/{job}"),
            None,
        ),
        (
            vec!["jobs", "find", "--idempotency-key", "parity-key", "--json"],
            get.clone(),
            "/jobs?idempotency_key=parity-key".into(),
            None,
        ),
        (
            vec![
                "dead",
                "requeue",
                "--provider",
                PROVIDER,
                "--dry-run",
                "--json",
            ],
            post.clone(),
            "/dead-letters/requeue".into(),
            Some(json!({"filter": {"provider": PROVIDER}, "dry_run": true})),
        ),
        (
            vec![
                "dead",
                "purge",
                "--provider",
                PROVIDER,
                "--dry-run",
                "--json",
            ],
            post.clone(),
            "/dead-letters/purge".into(),
            Some(json!({"filter": {"provider": PROVIDER}, "dry_run": true})),
        ),
        (
            vec!["events", "list", "--source", "payments", "--json"],
            get.clone(),
            "/events?source=payments".into(),
            None,
        ),
        (
            vec!["events", "show", &event, "--json"],
            get.clone(),
            format!("/events/{event}"),
            None,
        ),
        (
            vec![
                "events",
                "replay",
                "--source",
                "payments",
                "--dry-run",
                "--json",
            ],
            post.clone(),
            "/events/replay".into(),
            Some(json!({"filter": {"source": "payments"}, "dry_run": true})),
        ),
    ];
    for (args, method, path, body) in pairs {
        let from_cli = cli(&args);
        let from_api = api(method, path, body).await;
        assert_eq!(from_cli, from_api, "courier {}", args.join(" "));
        assert!(from_cli.len() > 2, "{args:?} printed nothing to compare");
    }
    // The same commands for people fit an 80-column terminal.
    for args in [
        vec!["dead", "list"],
        vec!["dead", "stats"],
        vec!["dead", "show", &letter],
        vec!["jobs", "show", &job],
        vec!["jobs", "find", "--idempotency-key", "parity-key"],
        vec!["events", "list"],
        vec!["events", "show", &event],
        vec!["providers"],
    ] {
        let text = cli(&args);
        assert!(text.lines().count() > 1, "{args:?} printed: {text}");
        for line in text.lines() {
            assert!(
                line.chars().count() <= 80,
                "courier {}: a line of {} columns: {line}",
                args.join(" "),
                line.chars().count()
            );
        }
    }
    let without_rate = |text: &str| {
        let mut v: serde_json::Value = serde_json::from_str(text).expect("JSON");
        for p in v.as_array_mut().expect("a list") {
            p["calls_per_second"] = serde_json::Value::Null;
            p["error_rate"] = serde_json::Value::Null;
        }
        v
    };
    // The audit log, once an action is in it.
    cli(&["providers", "pause", PROVIDER, "--actor", "parity"]);
    cli(&["providers", "resume", PROVIDER, "--actor", "parity"]);
    let audit = cli(&["audit", "--json"]);
    assert_eq!(audit, api(get.clone(), "/actions".into(), None).await);
    let actions: serde_json::Value = serde_json::from_str(&audit).expect("JSON");
    assert_eq!(actions[0]["action"], "resume", "{audit}");
    assert_eq!(actions[1]["action"], "pause", "{audit}");
    for line in cli(&["audit"]).lines() {
        assert!(line.chars().count() <= 80, "courier audit: {line}");
    }
    assert_eq!(
        without_rate(&cli(&["providers", "--json"])),
        without_rate(&api(get, "/providers".into(), None).await),
    );
}
