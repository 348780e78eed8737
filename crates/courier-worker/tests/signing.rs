//! Signed provider calls end to end: a provider configured with
//! `signing` gets a Standard Webhooks signature on every call, which the
//! mock provider verifies as a receiver would, against the real RabbitMQ
//! and PostgreSQL.

use courier_core::DeadReason;
use courier_core::webhook::{Rejection, Scheme, SigningKey};
use courier_testkit::{PROVIDER, TestEnv};
use std::path::PathBuf;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// Test keys (`whsec_` + base64): the old one, the new one, and one the
/// provider never knew.
const OLD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NEW: &str = "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldY";
const STRANGER: &str = "whsec_enl6enl6enl6enl6enl6enl6enl6";

fn key(secret: &str) -> SigningKey {
    SigningKey::parse(Scheme::StandardWebhooks, secret).expect("a test key")
}

/// Secret files in a directory of their own, removed on drop.
struct SecretFiles(PathBuf);

impl SecretFiles {
    fn new(secrets: &[&str]) -> (SecretFiles, Vec<String>) {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("signing-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("create the secrets directory");
        let paths = secrets
            .iter()
            .enumerate()
            .map(|(i, secret)| {
                let path = dir.join(format!("key-{i}"));
                std::fs::write(&path, format!("{secret}\n")).expect("write a secret file");
                path.display().to_string()
            })
            .collect();
        (SecretFiles(dir), paths)
    }
}

impl Drop for SecretFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A test world whose provider signs with `secrets` (one file each).
async fn signed_env(secrets: &[&str]) -> (TestEnv, SecretFiles) {
    let (files, paths) = SecretFiles::new(secrets);
    let list: Vec<String> = paths
        .iter()
        .map(|p| format!("{{ secret_file = {p:?} }}"))
        .collect();
    let signing = format!(
        "[providers.{PROVIDER}.signing]\nscheme = \"standard-webhooks\"\nsecrets = [{}]\n",
        list.join(", ")
    );
    (TestEnv::with_mix(Default::default(), &signing).await, files)
}

#[tokio::test]
async fn calls_are_signed_with_every_key_of_a_rotation_and_verify_with_either() {
    let (env, _files) = signed_env(&[OLD, NEW]).await;
    // The receiver already moved to the new key only.
    env.mock.set_verify(vec![key(NEW)]);
    let worker = env.start_worker().await;

    let job = env.job(None);
    env.publish(&job).await;
    env.wait_state(job.id, "succeeded", WAIT).await;
    let calls = env.mock.calls_for(&job.id.to_string());
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].status, 200);
    assert_eq!(
        calls[0].signature,
        Some(Ok(())),
        "verified with the new key"
    );
    assert_eq!(
        calls[0].webhook_id.as_deref(),
        Some(job.id.to_string().as_str())
    );

    // A receiver still on the old key verifies the next call as well.
    env.mock.set_verify(vec![key(OLD)]);
    let second = env.job(None);
    env.publish(&second).await;
    env.wait_state(second.id, "succeeded", WAIT).await;
    let calls = env.mock.calls_for(&second.id.to_string());
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].signature,
        Some(Ok(())),
        "verified with the old key"
    );

    let row = env
        .store
        .job(job.id)
        .await
        .expect("read")
        .expect("job recorded");
    assert_eq!(row.attempts, 1);
    worker.shutdown();
    worker.wait().await;
}

#[tokio::test]
async fn a_call_signed_with_a_key_the_provider_does_not_know_is_refused_and_dead_at_once() {
    let (env, _files) = signed_env(&[STRANGER]).await;
    env.mock.set_verify(vec![key(NEW)]);
    let worker = env.start_worker().await;

    let job = env.job(None);
    env.publish(&job).await;
    env.wait_state(job.id, "dead", WAIT).await;
    let calls = env.mock.calls_for(&job.id.to_string());
    assert_eq!(calls.len(), 1, "a 401 is not retried");
    assert_eq!(calls[0].status, 401);
    assert_eq!(calls[0].signature, Some(Err(Rejection::BadSignature)));
    assert_eq!(
        calls[0].webhook_id.as_deref(),
        Some(job.id.to_string().as_str())
    );
    let dead = env.store.dead_letters().await.expect("read dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].job_id, Some(job.id));
    assert_eq!(dead[0].reason, DeadReason::Permanent);
    assert_eq!(dead[0].last_status, Some(401));
    assert_eq!(dead[0].attempts, 1);
    worker.shutdown();
    worker.wait().await;
}
