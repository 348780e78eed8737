//! The admin API against the real services: auth and scopes, requeue over
//! HTTP, and the OpenAPI document matching what is served.

use courier_admin::AdminServer;
use courier_testkit::{PROVIDER, TestEnv};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::PathBuf;

const READER: &str = "reader-token-0123456789";
const REQUEUER: &str = "requeuer-token-0123456789";
const PURGER: &str = "purger-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

fn token_file(token: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("admin-token-{}", uuid::Uuid::now_v7().simple()));
    std::fs::write(&path, format!("{token}\n")).expect("write token file");
    path
}

async fn start() -> (TestEnv, AdminServer, reqwest::Client) {
    let tokens: String = [
        ("oncall-read", READER, "[\"read\"]"),
        ("oncall-requeue", REQUEUER, "[\"requeue\"]"),
        ("janitor", PURGER, "[\"purge\"]"),
        ("lead", ADMIN, "[\"read\", \"requeue\", \"purge\"]"),
    ]
    .iter()
    .map(|(name, token, scopes)| {
        format!(
            "[[admin.tokens]]\nname = \"{name}\"\ntoken_file = \"{}\"\nscopes = {scopes}\n",
            token_file(token).display()
        )
    })
    .collect();
    let env = TestEnv::with_mix(Default::default(), &tokens).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = AdminServer::start(&env.config(), listener)
        .await
        .expect("start the admin API");
    courier_provider::install_crypto();
    (env, server, reqwest::Client::new())
}

fn url(server: &AdminServer, path: &str) -> String {
    format!("http://{}{path}", server.addr)
}

/// Every route, the scope it needs, and a request body where it takes one.
fn routes() -> Vec<(&'static str, String, &'static str, Option<Value>)> {
    let unknown = uuid::Uuid::now_v7();
    vec![
        ("GET", "/dead-letters".into(), "read", None),
        ("GET", "/dead-letters/stats".into(), "read", None),
        ("GET", format!("/dead-letters/{unknown}"), "read", None),
        ("GET", format!("/jobs/{unknown}"), "read", None),
        ("GET", "/jobs?idempotency_key=nope".into(), "read", None),
        (
            "POST",
            "/dead-letters/requeue".into(),
            "requeue",
            Some(json!({"filter": {"provider": PROVIDER}, "dry_run": true})),
        ),
        (
            "POST",
            "/dead-letters/purge".into(),
            "purge",
            Some(json!({"filter": {"provider": PROVIDER}, "dry_run": true})),
        ),
    ]
}

async fn call(
    client: &reqwest::Client,
    server: &AdminServer,
    method: &str,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = match method {
        "GET" => client.get(url(server, path)),
        _ => client.post(url(server, path)),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn no_token_is_401_and_a_token_without_the_scope_is_403_on_every_route() {
    let (env, server, client) = start().await;
    let tokens = [("read", READER), ("requeue", REQUEUER), ("purge", PURGER)];
    for (method, path, scope, body) in routes() {
        let (status, _) = call(&client, &server, method, &path, body.as_ref(), None).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a token"
        );
        let (status, _) = call(
            &client,
            &server,
            method,
            &path,
            body.as_ref(),
            Some("not-a-token"),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} with a wrong token"
        );
        for (has, token) in tokens {
            let (status, _) =
                call(&client, &server, method, &path, body.as_ref(), Some(token)).await;
            if has == scope {
                assert!(
                    status == StatusCode::OK || status == StatusCode::NOT_FOUND,
                    "{method} {path} as {has}: {status}"
                );
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path} as {has}");
            }
        }
    }
    drop(env);
}

#[tokio::test]
async fn without_the_right_token_nobody_learns_whether_a_job_exists() {
    let (env, server, client) = start().await;
    let jobs = env.fabricate_dead_letters(1).await;
    let known = format!("/jobs/{}", jobs[0].id);
    let unknown = format!("/jobs/{}", uuid::Uuid::now_v7());
    for token in [None, Some("wrong"), Some(REQUEUER)] {
        let a = call(&client, &server, "GET", &known, None, token).await;
        let b = call(&client, &server, "GET", &unknown, None, token).await;
        assert_eq!(
            a, b,
            "same answer for a known and an unknown job with token {token:?}"
        );
    }
    let (status, body) = call(&client, &server, "GET", &known, None, Some(READER)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["job"]["state"], "dead");
    assert_eq!(body["attempts"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn requeue_over_http_is_exact_and_audited_with_the_token_name() {
    let (env, server, client) = start().await;
    env.fabricate_dead_letters(5).await;
    let ids: Vec<_> = env
        .store
        .dead_letters()
        .await
        .expect("read")
        .iter()
        .take(2)
        .map(|l| l.id)
        .collect();

    let (status, dry) = call(
        &client,
        &server,
        "POST",
        "/dead-letters/requeue",
        Some(&json!({"ids": ids, "dry_run": true})),
        Some(ADMIN),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (dry["matched"].as_i64(), dry["dry_run"].as_bool()),
        (Some(2), Some(true))
    );
    assert_eq!(
        env.store
            .count_pending(&Default::default())
            .await
            .expect("count"),
        5,
        "dry run changed nothing"
    );

    let body = json!({"ids": ids, "patch": {"note": "retry after fix"}});
    let (status, done) = call(
        &client,
        &server,
        "POST",
        "/dead-letters/requeue",
        Some(&body),
        Some(ADMIN),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["affected"], 2);
    let (_, again) = call(
        &client,
        &server,
        "POST",
        "/dead-letters/requeue",
        Some(&body),
        Some(ADMIN),
    )
    .await;
    assert_eq!(
        again["affected"], 0,
        "a second requeue of the same letters republishes nothing"
    );
    assert_eq!(
        env.message_count(&env.topology.work_queue(PROVIDER)).await,
        2
    );

    let action: uuid::Uuid = done["action_id"]
        .as_str()
        .expect("action id")
        .parse()
        .expect("uuid");
    let audit = env
        .store
        .action(action)
        .await
        .expect("read")
        .expect("audited");
    assert_eq!(audit.actor, "api:lead");
    assert_eq!(audit.patch, Some(json!({"note": "retry after fix"})));

    let (status, _) = call(
        &client,
        &server,
        "POST",
        "/dead-letters/purge",
        Some(&json!({})),
        Some(ADMIN),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "an unfiltered purge is refused"
    );
}

#[tokio::test]
async fn the_served_openapi_document_is_the_committed_one_and_describes_every_route() {
    let (_env, server, client) = start().await;
    let served: Value = client
        .get(url(&server, "/openapi.json"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON");
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/openapi.json"
        ))
        .expect("read docs/openapi.json"),
    )
    .expect("docs/openapi.json is JSON");
    assert_eq!(
        served, committed,
        "docs/openapi.json is stale: run `courier admin openapi > docs/openapi.json`"
    );
    assert_eq!(served["openapi"], "3.1.0");
    assert_eq!(
        served["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );

    let documented: Vec<(String, String)> = served["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .expect("operations")
                .keys()
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let mut routed: Vec<(String, String)> = routes()
        .into_iter()
        .map(|(m, p, _, _)| {
            let template = p.split('?').next().unwrap_or_default().to_owned();
            let template = match template.rsplit_once('/') {
                Some((base, last)) if last.parse::<uuid::Uuid>().is_ok() => {
                    format!("{base}/{{id}}")
                }
                _ => template,
            };
            (m.to_owned(), template)
        })
        .collect();
    routed.sort();
    let mut documented_sorted = documented.clone();
    documented_sorted.sort();
    assert_eq!(
        documented_sorted, routed,
        "every route documented, every documented route tested"
    );
    for (method, path, _, body) in routes() {
        let (status, reply) =
            call(&client, &server, method, &path, body.as_ref(), Some(ADMIN)).await;
        assert!(
            status == StatusCode::OK
                || (status == StatusCode::NOT_FOUND && reply["error"] == "not found"),
            "{method} {path} is served: {status} {reply}"
        );
        for op in documented.iter().filter(|(m, _)| *m == method) {
            assert!(
                served["paths"][&op.1][method.to_lowercase()]["responses"]
                    .as_object()
                    .is_some_and(|r| !r.is_empty())
            );
        }
    }
}
