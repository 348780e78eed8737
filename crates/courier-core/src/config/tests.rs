//! The config's rules, each held by a test: defaults, bounds, errors that
//! name the key and the file, secrets only as references; and the shipped
//! example file is valid.

use super::*;

const GOOD: &str = r#"
namespace = "prod"
[broker]
prefetch = 100
[providers.stripe]
base_url = "https://api.stripe.test/"
timeout_ms = 5000
headers = { "Stripe-Version" = "2024-01-01" }
auth = { scheme = "bearer", token_env = "STRIPE_TOKEN" }
retryable_statuses = [409]
[providers.stripe.retry]
max_attempts = 4
base_delay_ms = 250
[providers.stripe.operations.create_charge]
method = "post"
path = "/v1/customers/{customer}/charges"
"#;

fn no_env(_: &str) -> Option<String> {
    None
}

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, "courier.toml", &no_env)
}

fn err_key(text: &str) -> String {
    let e = load(text).expect_err("must be refused");
    assert!(e.to_string().starts_with("courier.toml"), "{e}");
    e.key
}

#[test]
fn a_provider_names_its_owner_and_runbook() {
    let with = |extra: &str| {
        format!(
            "[providers.crm]\nbase_url = \"https://crm.test\"\n{extra}\n[providers.crm.operations.sync]\nmethod = \"POST\"\npath = \"/sync\"\n"
        )
    };
    let c = load(&with(
        "owner = \"sales-platform\"\nrunbook = \"https://wiki.test/crm\"",
    ))
    .expect("valid");
    assert_eq!(c.providers["crm"].owner.as_deref(), Some("sales-platform"));
    assert_eq!(
        c.providers["crm"].runbook.as_deref(),
        Some("https://wiki.test/crm")
    );
    let bare = load(&with("")).expect("valid");
    assert_eq!(
        (
            bare.providers["crm"].owner.clone(),
            bare.providers["crm"].runbook.clone()
        ),
        (None, None)
    );
    assert_eq!(
        err_key(&with("runbook = \"ftp://wiki.test\"")),
        "providers.crm.runbook"
    );
    assert_eq!(
        err_key(&with("runbook = \"see the wiki\"")),
        "providers.crm.runbook"
    );
    assert_eq!(err_key(&with("owner = \"\"")), "providers.crm.owner");
    assert_eq!(err_key(&with("owner = \"a\\nb\"")), "providers.crm.owner");
}

#[test]
fn loads_a_good_file() {
    let c = load(GOOD).expect("valid");
    assert_eq!(c.namespace, "prod");
    assert_eq!(c.broker.urls, [DEFAULT_AMQP_URL]);
    let p = &c.providers["stripe"];
    assert_eq!(p.base_url, "https://api.stripe.test");
    assert_eq!(p.retry.max_attempts, 4);
    assert_eq!(p.operations["create_charge"].method, HttpMethod::Post);
    assert_eq!(
        p.auth.as_ref().map(|a| &a.secret),
        Some(&SecretRef::Env("STRIPE_TOKEN".into()))
    );
    assert!(p.statuses.retryable.contains(&409));
}

#[test]
fn env_overrides_the_file() {
    let env = |k: &str| match k {
        ENV_NAMESPACE => Some("staging".to_owned()),
        ENV_DATABASE_URL => Some("postgres://u:pw@db:5432/x".to_owned()),
        _ => None,
    };
    let c = Config::from_toml(GOOD, "f.toml", &env).expect("valid");
    assert_eq!(c.namespace, "staging");
    assert_eq!(c.database.url, "postgres://u:pw@db:5432/x");
    assert!(
        !format!("{:?}", c.database).contains("pw"),
        "Debug must redact the password"
    );
}

#[test]
fn the_linger_defaults_to_a_millisecond_turns_off_and_is_bounded() {
    assert_eq!(
        load(GOOD).expect("good").worker.linger,
        Duration::from_millis(1)
    );
    let off = load(&format!("{GOOD}[worker]\nlinger_ms = 0\n")).expect("0 is off");
    assert_eq!(off.worker.linger, Duration::ZERO);
    assert_eq!(
        err_key(&format!("{GOOD}[worker]\nlinger_ms = 51\n")),
        "worker.linger_ms"
    );
}

#[test]
fn errors_name_the_key() {
    assert_eq!(err_key("namespace = \"Bad-NS\""), "namespace");
    assert_eq!(
        err_key(&GOOD.replace("max_attempts = 4", "max_attempts = 0")),
        "providers.stripe.retry.max_attempts"
    );
    assert_eq!(
        err_key(&GOOD.replace("method = \"post\"", "method = \"FETCH\"")),
        "providers.stripe.operations.create_charge.method"
    );
    assert_eq!(
        err_key(&GOOD.replace("{customer}", "{customer")),
        "providers.stripe.operations.create_charge.path"
    );
    assert_eq!(
        err_key(&GOOD.replace("https://api.stripe.test/", "ftp://x")),
        "providers.stripe.base_url"
    );
    assert_eq!(
        err_key(&GOOD.replace("token_env = \"STRIPE_TOKEN\"", "")),
        "providers.stripe.auth.token_env"
    );
    assert_eq!(
        err_key(&GOOD.replace("timeout_ms = 5000", "timeout_secs = 5")),
        "timeout_secs"
    );
}

#[test]
fn protection_keys_default_and_errors_name_them() {
    let c = load(GOOD).expect("valid");
    let stripe = &c.providers["stripe"];
    assert_eq!(stripe.rate_limit, None, "no limit unless configured");
    assert_eq!(stripe.circuit, CircuitPolicy::default());
    assert_eq!(
        (
            stripe.circuit.failure_rate,
            stripe.circuit.min_calls,
            stripe.circuit.probes
        ),
        (0.5, 20, 3)
    );
    let limited = format!(
        "{GOOD}\n[providers.stripe.rate_limit]\nper_second = 50.0\nburst = 10\n\
         [providers.stripe.operations.create_charge.rate_limit]\nper_second = 5.0\n\
         [providers.stripe.circuit]\nopen_secs = 10\n"
    );
    let c = load(&limited).expect("valid");
    let stripe = &c.providers["stripe"];
    assert_eq!(
        stripe.rate_limit,
        Some(RateLimit {
            per_second: 50.0,
            burst: 10
        })
    );
    assert_eq!(
        stripe.operations["create_charge"].rate_limit,
        Some(RateLimit {
            per_second: 5.0,
            burst: 1
        })
    );
    assert_eq!(stripe.circuit.open_for, Duration::from_secs(10));
    for (good, bad, key) in [
        (
            "per_second = 50.0",
            "per_second = 0.0",
            "providers.stripe.rate_limit.per_second",
        ),
        (
            "burst = 10",
            "burst = 0",
            "providers.stripe.rate_limit.burst",
        ),
        (
            "open_secs = 10",
            "open_secs = 0",
            "providers.stripe.circuit.open_secs",
        ),
    ] {
        assert_eq!(err_key(&limited.replacen(good, bad, 1)), key, "{bad}");
    }
    let rate = limited.replace("open_secs = 10", "failure_rate = 1.5");
    assert_eq!(err_key(&rate), "providers.stripe.circuit.failure_rate");
    let unknown = limited.replace("open_secs = 10", "open_for = 10");
    assert_eq!(err_key(&unknown), "open_for");
}

#[test]
fn url_passwords_are_decoded() {
    assert_eq!(
        url_password("postgres://u:p%40ss%2Fw0rd@h/db").as_deref(),
        Some("p@ss/w0rd")
    );
    assert_eq!(url_password("amqp://guest@h:5672/%2f"), None);
    assert_eq!(
        url_password("postgres://u@h/db?sslmode=require&password=s%C3%A9cr%20t").as_deref(),
        Some("sécr t")
    );
}

#[test]
fn a_password_in_the_query_is_refused_in_the_file_and_redacted() {
    let e = load("[database]\nurl = \"postgres://u@db.internal/x?password=hunter22\"\n")
        .expect_err("refused");
    assert_eq!(e.key, "database.url");
    assert!(!e.to_string().contains("hunter22"), "{e}");
    let shown = redact_url("postgres://u@db.internal/x?password=hunter22&sslmode=verify-full");
    assert!(
        !shown.contains("hunter22") && shown.contains("sslmode=verify-full"),
        "{shown}"
    );
    let env =
        |k: &str| (k == ENV_DATABASE_URL).then(|| "postgres://u@db/x?password=hunter22".to_owned());
    let c = Config::from_toml("", "f.toml", &env).expect("the environment may carry it");
    assert!(!format!("{:?}", c.database).contains("hunter22"));
}

#[test]
fn broker_tls_needs_amqps_and_pairs_its_files() {
    let amqps = |tls: &str| {
        let env =
            |k: &str| (k == ENV_AMQP_URL).then(|| "amqps://u:p@mq.internal:5671/%2f".to_owned());
        Config::from_toml(&format!("[broker.tls]\n{tls}\n"), "f.toml", &env)
    };
    let c = amqps("ca_file = \"/etc/ca.pem\"").expect("valid");
    assert_eq!(
        c.broker.tls.ca_file.as_deref(),
        Some(std::path::Path::new("/etc/ca.pem"))
    );
    assert_eq!(
        amqps("cert_file = \"/c.pem\"").expect_err("no key").key,
        "broker.tls.key_file"
    );
    assert_eq!(
        amqps("key_file = \"/k.pem\"").expect_err("no cert").key,
        "broker.tls.cert_file"
    );
    assert_eq!(
        err_key("[broker.tls]\nca_file = \"/etc/ca.pem\"\n"),
        "broker.tls"
    );
}

#[test]
fn the_prefetch_budget_is_shared_out_between_queues() {
    let c = load(GOOD).expect("valid");
    assert_eq!((c.broker.prefetch, c.broker.prefetch_budget), (100, 512));
    // Few queues: each its own prefetch; many: the budget shared out.
    assert_eq!(c.broker.queue_prefetch(2), 100);
    assert_eq!(c.broker.queue_prefetch(51), 10);
    assert_eq!(c.broker.queue_prefetch(501), 1);
    // Never 0: more queues than the budget still get one each.
    assert_eq!(c.broker.queue_prefetch(5000), 1);
    assert_eq!(c.broker.queue_prefetch(0), 100);
    let budget = load("[broker]\nprefetch_budget = 100000\n").expect("valid");
    assert_eq!(budget.broker.queue_prefetch(51), 256);
    assert_eq!(
        err_key("[broker]\nprefetch_budget = 0\n"),
        "broker.prefetch_budget"
    );
}

#[test]
fn broker_urls_name_a_clusters_nodes_of_one_scheme() {
    let nodes = "[broker]\nurls = [\"amqp://mq-1:5672/%2f\", \"amqp://mq-2:5672/%2f\"]\n";
    let c = load(nodes).expect("valid");
    assert_eq!(
        c.broker.urls,
        ["amqp://mq-1:5672/%2f", "amqp://mq-2:5672/%2f"]
    );
    assert_eq!(c.broker.first_url(), "amqp://mq-1:5672/%2f");
    assert_eq!(c.broker.connect_order, ConnectOrder::Random);
    let listed = format!("{nodes}connect_order = \"listed\"\n");
    assert_eq!(
        load(&listed).expect("valid").broker.connect_order,
        ConnectOrder::Listed
    );
    assert_eq!(
        err_key(&format!("{nodes}connect_order = \"leader\"\n")),
        "broker.connect_order"
    );
    let one = load("[broker]\nurl = \"amqp://mq-1:5672/%2f\"\n").expect("valid");
    assert_eq!(one.broker.urls, ["amqp://mq-1:5672/%2f"]);

    assert_eq!(
        err_key("[broker]\nurl = \"amqp://a/\"\nurls = [\"amqp://b/\"]\n"),
        "broker.urls"
    );
    assert_eq!(err_key("[broker]\nurls = []\n"), "broker.urls");
    assert_eq!(
        err_key("[broker]\nurls = [\"amqp://a/\", \"http://b/\"]\n"),
        "broker.urls[1]"
    );
    let e = load("[broker]\nurls = [\"amqp://a/\", \"amqp://u:hunter22@b/\"]\n")
        .expect_err("a password in the file");
    assert_eq!(e.key, "broker.urls[1]");
    assert!(!e.to_string().contains("hunter22"), "{e}");
    // A TLS list with one plaintext node would fall back to the clear.
    let e = load("[broker]\nurls = [\"amqps://a/\", \"amqp://b/\"]\n").expect_err("mixed");
    assert_eq!(e.key, "broker.urls");
    assert!(e.to_string().contains("in the clear"), "{e}");

    // The environment's list (passwords allowed there) wins over the file.
    let env = |k: &str| {
        (k == ENV_AMQP_URL)
            .then(|| "amqps://u:p@mq-1:5671/%2f, amqps://u:p@mq-2:5671/%2f".to_owned())
    };
    let c = Config::from_toml(nodes, "f.toml", &env).expect("valid");
    assert_eq!(
        c.broker.urls,
        ["amqps://u:p@mq-1:5671/%2f", "amqps://u:p@mq-2:5671/%2f"]
    );
    let debug = format!("{:?}", c.broker);
    assert!(
        !debug.contains(":p@"),
        "Debug redacts every node's password: {debug}"
    );
    let empty = |k: &str| (k == ENV_AMQP_URL).then(|| " , ".to_owned());
    assert_eq!(
        Config::from_toml("", "f.toml", &empty)
            .expect_err("empty")
            .key,
        "broker.urls"
    );
}

#[test]
fn telemetry_defaults_and_overrides() {
    let c = load(GOOD).expect("valid");
    assert_eq!(c.telemetry.listen.to_string(), DEFAULT_TELEMETRY_LISTEN);
    assert_eq!(c.telemetry.log_format, LogFormat::Json);
    assert_eq!(c.telemetry.poll_interval, Duration::from_secs(15));

    let pretty = format!("{GOOD}\n[telemetry]\nlog_format = \"pretty\"\npoll_interval_ms = 250\n");
    let c = load(&pretty).expect("valid");
    assert_eq!(c.telemetry.log_format, LogFormat::Pretty);
    assert_eq!(c.telemetry.poll_interval, Duration::from_millis(250));
    let env = |k: &str| (k == ENV_LOG_FORMAT).then(|| "json".to_owned());
    let c = Config::from_toml(&pretty, "f.toml", &env).expect("valid");
    assert_eq!(c.telemetry.log_format, LogFormat::Json, "the env wins");

    let bad = format!("{GOOD}\n[telemetry]\nlog_format = \"xml\"\n");
    assert_eq!(err_key(&bad), "telemetry.log_format");
    let bad = format!("{GOOD}\n[telemetry]\nlisten = \"nowhere\"\n");
    assert_eq!(err_key(&bad), "telemetry.listen");
    assert_eq!(load(GOOD).expect("valid").telemetry.otlp_endpoint, None);
    let otlp = format!("{GOOD}\n[telemetry]\notlp_endpoint = \"http://otel:4318/\"\n");
    assert_eq!(
        load(&otlp)
            .expect("valid")
            .telemetry
            .otlp_endpoint
            .as_deref(),
        Some("http://otel:4318")
    );
    let bad = format!("{GOOD}\n[telemetry]\notlp_endpoint = \"grpc://otel\"\n");
    assert_eq!(err_key(&bad), "telemetry.otlp_endpoint");
}

#[test]
fn secrets_are_refused_as_literals() {
    let with_header = GOOD.replace("\"Stripe-Version\"", "\"X-Api-Key\"");
    assert_eq!(err_key(&with_header), "providers.stripe.headers.X-Api-Key");
    let with_pw = format!("[broker]\nurl = \"amqp://u:secret@h:5672/%2f\"\n{}", "");
    let e = load(&with_pw).expect_err("password refused");
    assert_eq!(e.key, "broker.url");
    assert!(
        !e.to_string().contains("secret"),
        "the error must not echo the password: {e}"
    );
    assert_eq!(
        err_key(&GOOD.replace("https://api.stripe.test/", "https://u:p@api.stripe.test/")),
        "providers.stripe.base_url"
    );
}

#[test]
fn a_provider_signs_with_one_secret_or_a_rotation() {
    let with = |signing: &str| {
        format!(
            "[providers.crm]\nbase_url = \"https://crm.test\"\nsigning = {signing}\n[providers.crm.operations.sync]\nmethod = \"POST\"\npath = \"/sync\"\n"
        )
    };
    let signing = |text: &str| {
        load(&with(text)).expect("valid").providers["crm"]
            .signing
            .clone()
    };
    assert_eq!(
        load(GOOD).expect("valid").providers["stripe"].signing,
        None,
        "unsigned unless configured"
    );
    assert_eq!(
        signing(r#"{ scheme = "standard-webhooks", secret_env = "CRM_SIGNING" }"#),
        Some(SigningConfig {
            scheme: crate::webhook::Scheme::StandardWebhooks,
            secrets: vec![SecretRef::Env("CRM_SIGNING".into())],
        })
    );
    assert_eq!(
        signing(r#"{ scheme = "standard-webhooks", secret_file = "/run/secrets/crm" }"#)
            .map(|s| s.secrets),
        Some(vec![SecretRef::File("/run/secrets/crm".into())])
    );
    assert_eq!(
        signing(
            r#"{ scheme = "standard-webhooks", secrets = [{ secret_env = "OLD" }, { secret_file = "/run/secrets/new" }] }"#
        )
        .map(|s| s.secrets),
        Some(vec![
            SecretRef::Env("OLD".into()),
            SecretRef::File("/run/secrets/new".into())
        ])
    );

    for (text, key) in [
        (
            r#"{ scheme = "stripe", secret_env = "X" }"#,
            "providers.crm.signing.scheme",
        ),
        (
            r#"{ scheme = "github", secret_env = "X" }"#,
            "providers.crm.signing.scheme",
        ),
        (
            r#"{ scheme = "hmac", secret_env = "X" }"#,
            "providers.crm.signing.scheme",
        ),
        (
            r#"{ scheme = "standard-webhooks" }"#,
            "providers.crm.signing.secret_env",
        ),
        (
            r#"{ scheme = "standard-webhooks", secret_env = "" }"#,
            "providers.crm.signing.secret_env",
        ),
        (
            r#"{ scheme = "standard-webhooks", secret_env = "X", secret_file = "/f" }"#,
            "providers.crm.signing.secret_env",
        ),
        (
            r#"{ scheme = "standard-webhooks", secret_env = "X", secrets = [{ secret_env = "Y" }] }"#,
            "providers.crm.signing.secrets",
        ),
        (
            r#"{ scheme = "standard-webhooks", secrets = [] }"#,
            "providers.crm.signing.secrets",
        ),
        (
            r#"{ scheme = "standard-webhooks", secrets = [{ secret_env = "A" }, {}] }"#,
            "providers.crm.signing.secrets[1].secret_env",
        ),
        (
            r#"{ scheme = "standard-webhooks", secrets = [{ secret_env = "A", secret_file = "/f" }] }"#,
            "providers.crm.signing.secrets[0].secret_env",
        ),
    ] {
        assert_eq!(err_key(&with(text)), key, "{text}");
    }
    let nine: Vec<String> = (0..=MAX_SIGNING_SECRETS)
        .map(|i| format!("{{ secret_env = \"K{i}\" }}"))
        .collect();
    assert_eq!(
        err_key(&with(&format!(
            "{{ scheme = \"standard-webhooks\", secrets = [{}] }}",
            nine.join(", ")
        ))),
        "providers.crm.signing.secrets"
    );
    // A secret as a literal is an unknown key, named as such.
    let literal = load(&with(
        r#"{ scheme = "standard-webhooks", secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }"#,
    ))
    .expect_err("a literal secret is refused");
    assert_eq!(literal.key, "secret");
    let e = err_key(&with(r#"{ scheme = "stripe", secret_env = "X" }"#));
    assert_eq!(e, "providers.crm.signing.scheme");
    let message = load(&with(r#"{ scheme = "stripe", secret_env = "X" }"#))
        .expect_err("refused")
        .to_string();
    assert!(message.contains("standard-webhooks"), "{message}");
}

#[test]
fn parse_errors_carry_the_line() {
    let e = load("namespace = \"a\"\n[broker]\nprefetch = \"many\"\n").expect_err("type error");
    assert!(e.file.starts_with("courier.toml:"), "{e}");
}

#[test]
fn operation_lookup_names_the_field() {
    let c = load(GOOD).expect("valid");
    let mut job = Job {
        id: uuid::Uuid::now_v7(),
        provider: "stripe".into(),
        operation: "refund".into(),
        idempotency_key: "k".into(),
        payload: serde_json::Map::new(),
        created_at: chrono::Utc::now(),
        fingerprint: [0; 32],
    };
    assert_eq!(
        c.operation(&job).expect_err("unknown op").field,
        "operation"
    );
    job.provider = "nope".into();
    assert_eq!(
        c.operation(&job).expect_err("unknown provider").field,
        "provider"
    );
}

mod example_file {
    #[test]
    fn the_shipped_example_config_is_valid() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/courier.example.toml");
        let text = std::fs::read_to_string(&path).expect("read the example config");
        let config =
            super::super::Config::from_toml(&text, "deploy/courier.example.toml", &|_| None)
                .expect("valid");
        assert_eq!(config.providers.len(), 2);
    }
}

const INGEST: &str = r#"
[ingest]
listen = "127.0.0.1:8090"
[ingest.sources.payments]
scheme = "standard-webhooks"
secrets = [{ secret_env = "PAYMENTS_WEBHOOK_SECRET" }, { secret_file = "/run/secrets/payments-next" }]
tolerance_secs = 120
provider = "stripe"
operation = "create_charge"
[ingest.sources.repo]
scheme = "github"
secrets = [{ secret_env = "GITHUB_WEBHOOK_SECRET" }]
provider = "stripe"
operation = "create_charge"
"#;

#[test]
fn ingest_sources_name_their_scheme_secrets_tolerance_and_job() {
    let c = load(&format!("{GOOD}{INGEST}")).expect("valid");
    let ingest = c.ingest.expect("an [ingest] table");
    assert_eq!(ingest.listen.to_string(), "127.0.0.1:8090");
    // Half of worker.max_body_bytes (256 KiB by default), below 1 MiB.
    assert_eq!(ingest.max_body_bytes, 128 * 1024);
    let payments = &ingest.sources["payments"];
    assert_eq!(payments.scheme, crate::webhook::Scheme::StandardWebhooks);
    assert_eq!(
        payments.secrets,
        [
            SecretRef::Env("PAYMENTS_WEBHOOK_SECRET".into()),
            SecretRef::File("/run/secrets/payments-next".into())
        ]
    );
    assert_eq!(payments.tolerance, Duration::from_secs(120));
    assert_eq!(
        (payments.provider.as_str(), payments.operation.as_str()),
        ("stripe", "create_charge")
    );
    assert_eq!(ingest.sources["repo"].tolerance, DEFAULT_INGEST_TOLERANCE);
    assert!(load(GOOD).expect("valid").ingest.is_none());
}

#[test]
fn ingest_mistakes_are_refused_naming_the_key() {
    let with = |from: &str, to: &str| format!("{GOOD}{}", INGEST.replacen(from, to, 1));
    for (from, to, key) in [
        (
            "scheme = \"standard-webhooks\"",
            "scheme = \"hmac\"",
            "ingest.sources.payments.scheme",
        ),
        (
            "provider = \"stripe\"",
            "provider = \"nobody\"",
            "ingest.sources.payments.provider",
        ),
        (
            "operation = \"create_charge\"",
            "operation = \"refund\"",
            "ingest.sources.payments.operation",
        ),
        (
            "tolerance_secs = 120",
            "tolerance_secs = 0",
            "ingest.sources.payments.tolerance_secs",
        ),
        (
            "tolerance_secs = 120",
            "tolerance_secs = 86400",
            "ingest.sources.payments.tolerance_secs",
        ),
        (
            "listen = \"127.0.0.1:8090\"",
            "max_body_bytes = 1048576",
            "ingest.max_body_bytes",
        ),
        (
            "[ingest.sources.payments]",
            "[ingest.sources.Payments]",
            "ingest.sources.Payments",
        ),
        (
            "listen = \"127.0.0.1:8090\"",
            "listen = \"anywhere\"",
            "ingest.listen",
        ),
        (
            "listen = \"127.0.0.1:8090\"",
            "max_body_bytes = 262144",
            "ingest.max_body_bytes",
        ),
        (
            "secrets = [{ secret_env = \"GITHUB_WEBHOOK_SECRET\" }]",
            "secrets = []",
            "ingest.sources.repo.secrets",
        ),
        (
            "{ secret_env = \"PAYMENTS_WEBHOOK_SECRET\" }",
            "{ secret_env = \"A\", secret_file = \"/b\" }",
            "ingest.sources.payments.secrets[0].secret_env",
        ),
        (
            "secrets = [{ secret_env = \"GITHUB_WEBHOOK_SECRET\" }]",
            "secrets = [{ secret_env = \"GITHUB_WEBHOOK_SECRET\" }]\ntolerance_secs = 60",
            "ingest.sources.repo.tolerance_secs",
        ),
        (
            "secrets = [{ secret_env",
            "secret = \"whsec_literal\"\nsecrets = [{ secret_env",
            "secret",
        ),
    ] {
        assert_eq!(err_key(&with(from, to)), key, "{to}");
    }
    assert_eq!(
        err_key(&format!("{GOOD}[ingest]\n")),
        "ingest.sources",
        "an [ingest] without sources"
    );
}
