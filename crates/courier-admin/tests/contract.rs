//! The admin API keeps the contract its own OpenAPI document states:
//! schemathesis (`--checks all`) generates requests from the live
//! `/openapi.json`, valid and invalid, and holds every answer to the
//! document (status, content type, schema), every valid request to being
//! accepted and every invalid one to being refused. Zero failures.
//!
//! Needs schemathesis in `target/test-tools/venv` (or `SCHEMATHESIS`):
//! `scripts/test` installs it (`scripts/test-tools`). The seed is fixed so
//! that CI repeats itself; `COURIER_CONTRACT_SEED=random` explores anew.

use courier_admin::AdminServer;
use courier_testkit::{TestEnv, admin_tokens};
use std::path::{Path, PathBuf};
use std::time::Duration;

const TOKEN: &str = "contract-token-0123456789abcdef";

fn tool() -> PathBuf {
    std::env::var_os("SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/test-tools/venv/bin/schemathesis")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_request_the_api_answers_against_its_document() {
    let schemathesis = tool();
    assert!(
        schemathesis.exists(),
        "{} is missing: run scripts/test-tools (scripts/test does)",
        schemathesis.display()
    );
    let (tokens, files) =
        admin_tokens(&[("contract", TOKEN, &["read", "requeue", "purge", "pause"])]);
    let mut env = TestEnv::with_mix(Default::default(), &tokens).await;
    env.keep(files);
    // Letters to find, show, requeue and purge, so that not every lookup
    // is a 404.
    env.fabricate_dead_letters(5).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = AdminServer::start(&env.config(), listener)
        .await
        .expect("start the admin server");

    let seed = std::env::var("COURIER_CONTRACT_SEED").unwrap_or_else(|_| "20261203".into());
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/contract/schemathesis.toml");
    let scratch =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("contract-{}", env.namespace));
    std::fs::create_dir_all(&scratch).expect("a scratch folder");
    let mut command = tokio::process::Command::new(&schemathesis);
    command
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("http://{}/openapi.json", server.addr))
        .args(["--checks", "all"])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--max-examples", "40"])
        // One worker: CPython 3.11 fails parsing source in two threads at
        // once ("AST constructor recursion depth mismatch").
        .args(["--workers", "1"])
        .args(["--request-timeout", "20"])
        .env("NO_COLOR", "1")
        // Its cache of past crashes (`.schemathesis/`, replayed first) goes
        // with this run, not into the source tree.
        .current_dir(&scratch)
        .kill_on_drop(true);
    if seed != "random" {
        command.args(["--seed", &seed]);
    }
    let out = tokio::time::timeout(Duration::from_secs(600), command.output())
        .await
        .expect("schemathesis ends within 10 minutes")
        .expect("run schemathesis");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found the API answering against its document:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&scratch);
    // It really ran: every operation was tested, and nothing errored.
    let document: serde_json::Value =
        serde_json::from_str(&courier_admin::openapi_json()).expect("the document is JSON");
    let operations: usize = document["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|p| p.as_object().map_or(0, |m| m.len()))
        .sum();
    assert!(
        report.contains(&format!("Tested: {operations}")),
        "{report}"
    );
    assert!(!report.contains("Runtime Error"), "{report}");
}
