//! The admin API against the real services: auth and scopes, requeue over
//! HTTP, and the OpenAPI document matching what is served.

use courier_admin::AdminServer;
use courier_testkit::{PROVIDER, TestEnv, admin_tokens};
use reqwest::StatusCode;
use serde_json::{Value, json};

const READER: &str = "reader-token-0123456789";
const REQUEUER: &str = "requeuer-token-0123456789";
const PURGER: &str = "purger-token-0123456789";
const PAUSER: &str = "pauser-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

async fn start() -> (TestEnv, AdminServer, reqwest::Client) {
    start_with("").await
}

/// As [`start`], with `extra` appended to the config.
async fn start_with(extra: &str) -> (TestEnv, AdminServer, reqwest::Client) {
    let (tokens, files) = admin_tokens(&[
        ("oncall-read", READER, &["read"]),
        ("oncall-requeue", REQUEUER, &["requeue"]),
        ("janitor", PURGER, &["purge"]),
        ("oncall-pause", PAUSER, &["pause"]),
        ("lead", ADMIN, &["read", "requeue", "purge", "pause"]),
    ]);
    let mut env = TestEnv::with_mix(Default::default(), &format!("{tokens}\n{extra}")).await;
    env.keep(files);
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
        ("GET", "/providers".into(), "read", None),
        ("GET", "/actions".into(), "read", None),
        (
            "POST",
            "/providers/{name}/pause".into(),
            "pause",
            Some(json!({"for_secs": 1})),
        ),
        ("POST", "/providers/{name}/resume".into(), "pause", None),
        ("GET", "/events?source=payments".into(), "read", None),
        ("GET", format!("/events/{unknown}"), "read", None),
        (
            "POST",
            "/events/replay".into(),
            "requeue",
            Some(json!({"filter": {"source": "payments"}, "dry_run": true})),
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
    let tokens = [
        ("read", READER),
        ("requeue", REQUEUER),
        ("purge", PURGER),
        ("pause", PAUSER),
    ];
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
async fn me_names_the_token_and_its_scopes_and_refuses_no_token() {
    let (env, server, client) = start().await;
    let (status, _) = call(&client, &server, "GET", "/me", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, me) = call(&client, &server, "GET", "/me", None, Some(ADMIN)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        me,
        json!({"token": "lead", "scopes": ["read", "requeue", "purge", "pause"]})
    );
    // A token without `read` may still learn what it is.
    let (status, me) = call(&client, &server, "GET", "/me", None, Some(PURGER)).await;
    assert_eq!(
        (status, me),
        (
            StatusCode::OK,
            json!({"token": "janitor", "scopes": ["purge"]})
        )
    );
    drop(env);
}

#[tokio::test]
async fn the_console_is_served_without_a_token_and_keeps_to_its_own_origin() {
    let (env, server, client) = start().await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/console.js", "text/javascript"),
        ("/console.css", "text/css"),
    ] {
        let resp = client
            .get(url(&server, path))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        let policy = header("content-security-policy");
        assert!(policy.contains("script-src 'self'"), "{path}: {policy}");
        assert!(!policy.contains("unsafe-inline"), "{path}: {policy}");
        assert!(
            policy.contains("frame-ancestors 'none'"),
            "{path}: {policy}"
        );
        assert_eq!(header("x-content-type-options"), "nosniff");
        let body = resp.text().await.expect("body");
        // Nothing is fetched from elsewhere: no CDN, works offline.
        assert!(!body.contains("https://"), "{path} names another origin");
        assert!(!body.contains("http://"), "{path} names another origin");
    }
    drop(env);
}

#[tokio::test]
async fn providers_are_listed_paused_and_resumed_over_http_and_audited() {
    let (env, server, client) = start().await;
    let (status, listed) = call(&client, &server, "GET", "/providers", None, Some(READER)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed[0]["name"], PROVIDER);
    assert_eq!(listed[0]["circuit"], "closed");
    assert_eq!(listed[0]["held"], Value::Null);
    assert_eq!(listed[0]["queue_depth"], 0);

    let pause = format!("/providers/{PROVIDER}/pause");
    for (bad, field) in [
        (json!({"for_secs": 0}), "for_secs"),
        (
            json!({"for_secs": 60, "until": "2030-01-01T00:00:00Z"}),
            "for_secs",
        ),
        (json!({"until": "2001-01-01T00:00:00Z"}), "until"),
    ] {
        let (status, reply) =
            call(&client, &server, "POST", &pause, Some(&bad), Some(PAUSER)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(
            reply["detail"].as_str().is_some_and(|e| e.contains(field)),
            "{reply}"
        );
    }
    let (status, done) = call(
        &client,
        &server,
        "POST",
        &pause,
        Some(&json!({"for_secs": 600})),
        Some(PAUSER),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let state = env
        .store
        .provider_state(PROVIDER)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(state.held_by.as_deref(), Some("api:oncall-pause"));
    let until = state.held_until.expect("paused for a time");
    let ahead = until - chrono::Utc::now();
    assert!(ahead > chrono::Duration::seconds(590) && ahead <= chrono::Duration::seconds(600));
    let action: uuid::Uuid = done["action_id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    let audit = env
        .store
        .action(action)
        .await
        .expect("read")
        .expect("audited");
    assert_eq!(
        (audit.actor.as_str(), audit.action.as_str()),
        ("api:oncall-pause", "pause")
    );

    let (_, listed) = call(&client, &server, "GET", "/providers", None, Some(READER)).await;
    assert_eq!(listed[0]["held"]["by"], "api:oncall-pause");

    let resume = format!("/providers/{PROVIDER}/resume");
    let (status, _) = call(&client, &server, "POST", &resume, None, Some(PAUSER)).await;
    assert_eq!(status, StatusCode::OK);
    let state = env
        .store
        .provider_state(PROVIDER)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(state.held_by, None);

    let (status, _) = call(
        &client,
        &server,
        "POST",
        "/providers/nobody/pause",
        None,
        Some(PAUSER),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
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
    // The rules that span fields are in it (added to what utoipa derives).
    let schemas = &served["components"]["schemas"];
    assert_eq!(
        schemas["RequeueRequest"]["anyOf"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(
        schemas["PurgeRequest"]["anyOf"].as_array().map(Vec::len),
        Some(3)
    );
    assert_eq!(
        schemas["PauseRequest"]["not"]["required"],
        json!(["for_secs", "until"])
    );
    assert_eq!(schemas["RequeueRequest"]["additionalProperties"], false);
    assert!(schemas["NulFreeJson"]["anyOf"].is_array());
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
        // Any valid token may ask who it is (tested on its own above).
        .chain([("GET".to_owned(), "/me".to_owned())])
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
                || (status == StatusCode::NOT_FOUND && reply["detail"] == "not found"),
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

#[tokio::test]
async fn a_caller_without_a_token_learns_nothing_from_a_malformed_request() {
    let (_env, server, client) = start().await;
    for (path, body) in [
        ("/dead-letters/requeue", "{not json"),
        ("/dead-letters/purge", "[1,2,"),
    ] {
        let resp = client
            .post(url(&server, path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
        let text = resp.text().await.expect("body");
        assert!(
            !text.contains("JSON") && !text.contains("parse"),
            "{path}: {text}"
        );
    }
    let resp = client
        .get(url(
            &server,
            "/dead-letters?status=not-a-number&since=yesterday",
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_and_oversized_tokens_are_refused() {
    let (_env, server, client) = start().await;
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let resp = client
            .get(url(&server, "/dead-letters"))
            .header("authorization", format!("{scheme} {READER}"))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), StatusCode::OK, "{scheme}");
    }
    let huge = "x".repeat(64 * 1024);
    let (status, _) = call(&client, &server, "GET", "/dead-letters", None, Some(&huge)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn filters_that_match_nothing_or_everything_by_accident_are_refused() {
    let (env, server, client) = start().await;
    env.fabricate_dead_letters(3).await;
    for (method, path, body) in [
        ("GET", "/dead-letters?search=", None),
        ("GET", "/dead-letters/stats?reason=permanant", None),
        (
            "POST",
            "/dead-letters/purge",
            Some(json!({"filter": {"search": ""}})),
        ),
        (
            "POST",
            "/dead-letters/requeue",
            Some(json!({"filter": {"provider": " "}})),
        ),
    ] {
        let (status, answer) =
            call(&client, &server, method, path, body.as_ref(), Some(ADMIN)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path}: {answer}");
        let error = answer["detail"].as_str().unwrap_or_default();
        assert!(
            ["search", "reason", "provider"]
                .iter()
                .any(|f| error.contains(f)),
            "names the field: {error}"
        );
    }
    assert_eq!(
        env.store
            .count_pending(&Default::default())
            .await
            .expect("count"),
        3,
        "nothing was purged or requeued"
    );
}

#[tokio::test]
async fn an_absurd_rate_is_refused_and_leaves_no_unfinished_audit_row() {
    let (env, server, client) = start().await;
    env.fabricate_dead_letters(2).await;
    for rate in [json!(1e-300), json!(0), json!(-5), json!(1e12)] {
        let body = json!({"filter": {"provider": PROVIDER}, "rate": rate});
        let (status, answer) = call(
            &client,
            &server,
            "POST",
            "/dead-letters/requeue",
            Some(&body),
            Some(ADMIN),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "rate {rate}: {answer}");
    }
    let jobs = env.store.dead_letters().await.expect("read");
    for letter in &jobs {
        assert!(
            env.store
                .actions_of(letter.job_id.expect("a job"))
                .await
                .expect("read")
                .is_empty()
        );
    }
    // A sane rate works, and its audit row is finished.
    let body = json!({"filter": {"provider": PROVIDER}, "rate": 1000.0});
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
    let action: uuid::Uuid = done["action_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("an action");
    let record = env
        .store
        .action(action)
        .await
        .expect("read")
        .expect("recorded");
    assert!(record.finished_at.is_some() && record.error.is_none());
    assert_eq!(record.affected, 2);
}

#[tokio::test]
async fn a_client_that_trickles_its_headers_or_body_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_env, server, _client) = start().await;
    let trickle = |request: String| {
        let addr = server.addr;
        async move {
            let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
            socket
                .write_all(request.as_bytes())
                .await
                .expect("send a part");
            let started = std::time::Instant::now();
            let mut answer = Vec::new();
            // The server answers or closes; nothing more is sent.
            let _ = socket.read_to_end(&mut answer).await;
            (
                started.elapsed(),
                String::from_utf8_lossy(&answer).into_owned(),
            )
        }
    };
    let headers = trickle("GET /dead-letters HTTP/1.1\r\nHost: x\r\nAuthoriz".to_owned());
    let body = trickle(format!(
        "POST /dead-letters/purge HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {PURGER}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"filter\":"
    ));
    // Without a token the body is not even waited for.
    let tokenless = trickle(
        "POST /dead-letters/requeue HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"ids\":".to_owned(),
    );
    let ((header_wait, _), (body_wait, body_answer), (tokenless_wait, tokenless_answer)) =
        tokio::join!(headers, body, tokenless);
    let limit = courier_telemetry::http::HEADER_READ_TIMEOUT + std::time::Duration::from_secs(5);
    assert!(
        header_wait < limit,
        "headers: connection held {header_wait:?}"
    );
    assert!(body_wait < limit, "body: connection held {body_wait:?}");
    assert!(body_answer.starts_with("HTTP/1.1 408"), "{body_answer}");
    assert!(
        tokenless_answer.starts_with("HTTP/1.1 401"),
        "{tokenless_answer}"
    );
    assert!(
        tokenless_wait < std::time::Duration::from_secs(5),
        "answered without waiting for the body: {tokenless_wait:?}"
    );
}

#[tokio::test]
async fn an_admin_token_file_rotates_without_a_restart() {
    let old = "rotating-token-old-0123456789";
    let new = "rotating-token-new-0123456789";
    let (tokens, files) = admin_tokens(&[("rotating", old, &["read"])]);
    let file = files.path(0);
    let env = TestEnv::with_mix(Default::default(), &tokens).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = AdminServer::start(&env.config(), listener)
        .await
        .expect("start");
    courier_provider::install_crypto();
    let client = reqwest::Client::new();
    let status = |token: &'static str| {
        let (client, server) = (&client, &server);
        async move {
            call(client, server, "GET", "/dead-letters", None, Some(token))
                .await
                .0
        }
    };
    assert_eq!(status(old).await, StatusCode::OK);
    std::fs::write(file, format!("{new}\n")).expect("rotate the token");
    // What SIGHUP (or the periodic re-read) does in `courier admin serve`.
    courier_telemetry::secret::reload_all();
    assert_eq!(status(new).await, StatusCode::OK);
    assert_eq!(status(old).await, StatusCode::UNAUTHORIZED);
}

/// Every error is RFC 9457 problem details, the extractors' own refusals
/// (a body that is not JSON, no JSON content type, a query that does not
/// parse, an unknown route) included.
#[tokio::test]
async fn every_error_is_problem_details() {
    let (_env, server, client) = start().await;
    let requeue = url(&server, "/dead-letters/requeue");
    let answers = [
        // Not JSON.
        client
            .post(&requeue)
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body("{not json"),
        // No JSON content type.
        client.post(&requeue).bearer_auth(ADMIN).body("{}"),
        // A query that does not parse.
        client
            .get(url(&server, "/dead-letters?status=abc"))
            .bearer_auth(ADMIN),
        // A path id that is not a UUID.
        client
            .get(url(&server, "/dead-letters/not-a-uuid"))
            .bearer_auth(ADMIN),
        // No token.
        client.get(url(&server, "/dead-letters")),
        // A validation refusal of the operator core.
        client
            .get(url(&server, "/dead-letters?limit=0"))
            .bearer_auth(ADMIN),
    ];
    for request in answers {
        let response = request.send().await.expect("request");
        let status = response.status();
        assert!(status.is_client_error(), "{status}");
        assert_eq!(
            response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "{status}"
        );
        let body: Value = response.json().await.expect("a JSON body");
        assert_eq!(body["status"], status.as_u16(), "{body}");
        assert_eq!(body["type"], "about:blank", "{body}");
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_413_as_documented_and_changes_nothing() {
    let (env, server, client) = start().await;
    env.fabricate_dead_letters(2).await;
    let huge = json!({"filter": {"search": "x".repeat(courier_admin::MAX_REQUEST_BYTES + 1)}});
    let resp = client
        .post(url(&server, "/dead-letters/requeue"))
        .bearer_auth(ADMIN)
        .json(&huge)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("application/problem+json"))
    );
    let document: Value =
        serde_json::from_str(&courier_admin::openapi_json()).expect("the document is JSON");
    assert!(document["paths"]["/dead-letters/requeue"]["post"]["responses"]["413"].is_object());
    assert_eq!(
        env.store
            .count_pending(&Default::default())
            .await
            .expect("count"),
        2,
        "nothing was requeued"
    );
}

/// One webhook source, `payments`, whose events become `charge` jobs.
const INGEST: &str = r#"
[ingest]
listen = "127.0.0.1:0"

[ingest.sources.payments]
scheme = "standard-webhooks"
secrets = [{ secret_env = "COURIER_TEST_WEBHOOK_SECRET" }]
provider = "mockpay"
operation = "charge"
"#;

#[tokio::test]
async fn events_are_listed_and_replayed_over_http_with_the_requeue_scope_and_audited() {
    let (env, server, client) = start_with(INGEST).await;
    let mut seeded = Vec::new();
    for n in 0..2 {
        let event = courier_store::NewEvent {
            id: uuid::Uuid::now_v7(),
            source: "payments".into(),
            event_id: format!("msg_{n}"),
            headers: json!({"webhook-id": format!("msg_{n}")}),
            body: json!({"n": n}).to_string().into_bytes(),
            received_at: chrono::Utc::now(),
            job_id: uuid::Uuid::now_v7(),
        };
        env.store
            .record_event(&event, || async { Ok::<(), std::convert::Infallible>(()) })
            .await
            .expect("record an event");
        seeded.push(event);
    }

    let (status, listed) = call(
        &client,
        &server,
        "GET",
        "/events?source=payments&limit=10",
        None,
        Some(READER),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let ids: Vec<&str> = listed
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    let newest_first = [seeded[1].id.to_string(), seeded[0].id.to_string()];
    assert_eq!(ids, newest_first);
    let (status, shown) = call(
        &client,
        &server,
        "GET",
        &format!("/events/{}", seeded[0].id),
        None,
        Some(READER),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (shown["body"].as_str(), shown["body_encoding"].as_str()),
        (Some("{\"n\":0}"), Some("utf8"))
    );

    let (status, refused) = call(
        &client,
        &server,
        "POST",
        "/events/replay",
        Some(&json!({})),
        Some(REQUEUER),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert!(
        refused["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("ids:")),
        "{refused}"
    );
    let replay = json!({"filter": {"source": "payments"}});
    let (status, _) = call(
        &client,
        &server,
        "POST",
        "/events/replay",
        Some(&replay),
        Some(READER),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, done) = call(
        &client,
        &server,
        "POST",
        "/events/replay",
        Some(&replay),
        Some(REQUEUER),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(
        (done["matched"].as_i64(), done["affected"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(
        env.message_count(&env.topology.work_queue(PROVIDER)).await,
        2,
        "one new job per event"
    );
    let action: uuid::Uuid = done["action_id"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("an action");
    let audit = env
        .store
        .action(action)
        .await
        .expect("read")
        .expect("audited");
    assert_eq!(
        (audit.actor.as_str(), audit.action.as_str()),
        ("api:oncall-requeue", "replay")
    );
    assert_eq!((audit.matched, audit.affected), (2, 2));
    let (_, shown) = call(
        &client,
        &server,
        "GET",
        &format!("/events/{}", seeded[0].id),
        None,
        Some(READER),
    )
    .await;
    assert_eq!(shown["replays"][0]["action_id"], action.to_string());
    assert!(shown["replays"][0]["published_at"].is_string(), "{shown}");
}
