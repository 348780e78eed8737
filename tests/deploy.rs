//! What ships beside the binary stays true to it: the Kubernetes manifests
//! (deploy/kubernetes), the image (Dockerfile, .dockerignore) and the
//! systemd unit (deploy/systemd).
//!
//! Without a cluster or a Docker engine, this checks what can be checked:
//! every manifest against the Kubernetes API's schemas and the committed CRD
//! schemas (deploy/kubernetes/validate.py, in `target/test-tools/venv`,
//! which `scripts/test-tools` installs), the ConfigMap's courier.toml
//! through Courier's own config loader with the environment the pods get,
//! ports, secrets and users against that config and the image, the KEDA
//! queue regex against the queue names courier-amqp declares, the pods'
//! grace against the worker's shutdown deadlines, the image's build against
//! the scripts' release build, and the unit's `systemd-analyze security`
//! exposure.

use courier_core::Config;
use courier_core::config::SecretRef;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative))
        .unwrap_or_else(|e| panic!("reading {relative}: {e}"))
}

fn python() -> PathBuf {
    std::env::var_os("COURIER_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/test-tools/venv/bin/python"))
}

/// Runs deploy/kubernetes/validate.py with `args`.
fn validator(args: &[&str]) -> Output {
    let python = python();
    assert!(
        python.exists(),
        "{} is missing: run scripts/test-tools (scripts/test does)",
        python.display()
    );
    Command::new(&python)
        .arg(root().join("deploy/kubernetes/validate.py"))
        .args(args)
        .output()
        .expect("run validate.py")
}

fn report(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn scratch(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("deploy-{}-{name}", std::process::id()))
}

/// What validate.py read from the manifests (after validating them).
fn facts() -> &'static Value {
    static FACTS: OnceLock<Value> = OnceLock::new();
    FACTS.get_or_init(|| {
        let file = scratch("facts.json");
        let out = validator(&["--facts", file.to_str().expect("a UTF-8 path")]);
        assert!(
            out.status.success(),
            "validate.py failed:\n{}",
            report(&out)
        );
        let facts = serde_json::from_str(&std::fs::read_to_string(&file).expect("the facts"))
            .expect("the facts are JSON");
        let _ = std::fs::remove_file(&file);
        facts
    })
}

fn deployment(name: &str) -> &'static Value {
    let d = &facts()["deployments"][name];
    assert!(d.is_object(), "no Deployment {name} in deploy/kubernetes");
    d
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The ConfigMap's courier.toml, loaded as `deployment`'s pods load it:
/// with the environment its manifest gives them (Secret values from
/// secrets.example.yaml).
fn config_for(name: &str) -> Config {
    let env = deployment(name)["env"].clone();
    let lookup = move |key: &str| env[key].as_str().map(str::to_owned);
    let text = facts()["courier.toml"].as_str().expect("courier.toml");
    Config::from_toml(
        text,
        "deploy/kubernetes/configmap.yaml (courier.toml)",
        &lookup,
    )
    .unwrap_or_else(|e| panic!("the ConfigMap's courier.toml, as {name} loads it: {e}"))
}

#[test]
fn kubernetes_manifests_validate_against_the_api_and_crd_schemas() {
    let out = validator(&[]);
    let text = report(&out);
    assert!(out.status.success(), "validate.py failed:\n{text}");
    let passed = text.lines().filter(|l| l.starts_with("ok ")).count();
    let summary = text
        .lines()
        .find_map(|l| l.strip_prefix("validated "))
        .unwrap_or_else(|| panic!("no summary:\n{text}"));
    let counted: usize = summary
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a count");
    assert!(
        counted > 0 && counted == passed,
        "{counted} resources validated, {passed} passed:\n{text}"
    );
    println!("{text}");
}

#[test]
fn the_configmap_holds_a_config_each_pod_accepts() {
    let worker = config_for("courier-worker");
    let admin = config_for("courier-admin");
    let ingest = config_for("courier-ingest");
    for (name, config) in [
        ("courier-worker", &worker),
        ("courier-admin", &admin),
        ("courier-ingest", &ingest),
    ] {
        // COURIER_CONFIG names the mounted courier.toml.
        let d = deployment(name);
        let path = d["env"]["COURIER_CONFIG"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} sets no COURIER_CONFIG"));
        assert_eq!(
            d["files"][path]["key"], "courier.toml",
            "{name}: COURIER_CONFIG={path} is not the mounted courier.toml"
        );
        // The URLs come from the Secret, not the file's loopback defaults.
        assert!(
            !config.database.url.contains("127.0.0.1"),
            "{name}: COURIER_DATABASE_URL is not set from the Secret"
        );
    }

    // The worker: providers, its telemetry port, its tokens.
    assert!(!worker.providers.is_empty(), "a worker needs providers");
    let w = deployment("courier-worker");
    assert!(
        worker.telemetry.listen.ip().is_unspecified(),
        "telemetry.listen {} is not reachable from the kubelet or Prometheus",
        worker.telemetry.listen
    );
    assert_eq!(
        w["ports"]["metrics"],
        u64::from(worker.telemetry.listen.port()),
        "the worker's metrics port is not telemetry.listen's"
    );
    for (provider, p) in &worker.providers {
        if let Some(auth) = &p.auth {
            assert_secret(
                "courier-worker",
                &format!("providers.{provider}.auth"),
                &auth.secret,
            );
        }
    }

    // The admin API: its port, its tokens.
    assert!(
        !admin.admin.tokens.is_empty(),
        "admin serve needs admin.tokens"
    );
    let a = deployment("courier-admin");
    assert!(
        admin.admin.listen.ip().is_unspecified(),
        "admin.listen {} is not reachable from the Service",
        admin.admin.listen
    );
    assert_eq!(
        a["ports"]["http"],
        u64::from(admin.admin.listen.port()),
        "the admin API's port is not admin.listen's"
    );
    for token in &admin.admin.tokens {
        assert_secret(
            "courier-admin",
            &format!("admin.tokens {}", token.name),
            &token.secret,
        );
    }

    // The webhook receiver: its sources, the hooks' port, its secrets, and
    // its probes on the telemetry port.
    let hooks = ingest
        .ingest
        .as_ref()
        .expect("`courier ingest` needs an [ingest] in the ConfigMap");
    assert!(!hooks.sources.is_empty(), "[ingest] has no sources");
    let i = deployment("courier-ingest");
    assert!(
        hooks.listen.ip().is_unspecified(),
        "ingest.listen {} is not reachable from the Service",
        hooks.listen
    );
    assert_eq!(
        i["ports"]["hooks"],
        u64::from(hooks.listen.port()),
        "the receiver's hooks port is not ingest.listen's"
    );
    for (source, s) in &hooks.sources {
        for (n, secret) in s.secrets.iter().enumerate() {
            assert_secret(
                "courier-ingest",
                &format!("ingest.sources.{source}.secrets[{n}]"),
                secret,
            );
        }
    }
    assert!(
        ingest.telemetry.listen.ip().is_unspecified(),
        "telemetry.listen {} is not reachable from the kubelet or Prometheus",
        ingest.telemetry.listen
    );
    assert_eq!(
        i["ports"]["metrics"],
        u64::from(ingest.telemetry.listen.port()),
        "the receiver's metrics port is not telemetry.listen's"
    );
    assert_ne!(
        hooks.listen.port(),
        ingest.telemetry.listen.port(),
        "ingest.listen and telemetry.listen share a port"
    );
    // Probes on telemetry.listen, for the worker and the receiver alike:
    // readiness asks /readyz (PostgreSQL and RabbitMQ answer), liveness and
    // startup /healthz.
    for (name, telemetry) in [
        ("courier-worker", &worker.telemetry),
        ("courier-ingest", &ingest.telemetry),
    ] {
        let probes = &deployment(name)["probes"];
        for (probe, path) in [
            ("startupProbe", "/healthz"),
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
        ] {
            assert_eq!(
                probes[probe]["port"],
                u64::from(telemetry.listen.port()),
                "{name}: its {probe} is not on telemetry.listen's port"
            );
            assert_eq!(probes[probe]["path"], path, "{name}: {probe}");
        }
    }
}

/// `reference` (a `token_env`/`secret_env` or `token_file`/`secret_file`)
/// resolves in `name`'s pods: its variable is set from a Secret, or its file
/// is mounted from one.
fn assert_secret(name: &str, key: &str, reference: &SecretRef) {
    let d = deployment(name);
    match reference {
        SecretRef::Env(var) => assert!(
            d["env"][var].is_string(),
            "{key}: the variable {var} is not set in {name}'s pods"
        ),
        SecretRef::File(path) => {
            let path = path.to_str().expect("a UTF-8 path");
            assert_eq!(
                d["files"][path]["secret"], true,
                "{key}: {path} is not a Secret file mounted in {name}'s pods"
            );
        }
    }
}

#[test]
fn the_keda_queue_regex_counts_the_work_queues_and_nothing_else() {
    let config = config_for("courier-worker");
    // The configured providers, and names at the edges of what a provider
    // may be called.
    let mut providers: Vec<String> = config.providers.keys().cloned().collect();
    providers.extend(["0", "a", "x-y_z", &"p".repeat(64)].map(String::from));
    let topology = courier_amqp::Topology::new(&config.namespace, &providers);
    let work: Vec<String> = providers.iter().map(|p| topology.work_queue(p)).collect();
    let mut other: Vec<String> = topology
        .queues()
        .into_iter()
        .filter(|q| !work.contains(q))
        .collect();
    // Another namespace's work queues on the same broker are not ours,
    // even when its name ends or starts like ours.
    for neighbour in [
        format!("x{}", config.namespace),
        format!("{}_x", config.namespace),
    ] {
        courier_core::config::check_namespace(&neighbour).expect("a namespace");
        let theirs = courier_amqp::Topology::new(&neighbour, &providers);
        other.extend(providers.iter().map(|p| theirs.work_queue(p)));
    }
    assert!(
        other.iter().any(|q| q.contains(".delay.")) && other.iter().any(|q| q.contains(".dead.")),
        "{other:?}"
    );
    let file = scratch("queues.json");
    std::fs::write(
        &file,
        serde_json::json!({"work": work, "other": other}).to_string(),
    )
    .expect("write the queue names");
    let out = validator(&["--queues", file.to_str().expect("a UTF-8 path")]);
    let _ = std::fs::remove_file(&file);
    assert!(out.status.success(), "{}", report(&out));
    assert!(
        !strings(&facts()["queueRegexes"]).is_empty(),
        "no rabbitmq trigger"
    );
}

/// `const NAME: Duration = Duration::from_secs(N);` in `file`.
fn const_secs(file: &str, name: &str) -> u64 {
    let text = read(file);
    let line = text
        .lines()
        .find(|l| l.contains(&format!("const {name}: Duration")))
        .unwrap_or_else(|| panic!("{file} no longer declares {name}: update this test"));
    line.split("from_secs(")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{file}: cannot read {name} from {line:?}"))
}

#[test]
fn the_kill_comes_after_the_worker_has_drained() {
    // After the grace: abandoning the calls left, the writer's flush (both
    // bounded by FLUSH_DEADLINE), closing the broker connection and the
    // reporters (STEP_DEADLINE each).
    let shutdown = "crates/courier-worker/src/shutdown.rs";
    let after_grace =
        2 * const_secs(shutdown, "FLUSH_DEADLINE") + 2 * const_secs(shutdown, "STEP_DEADLINE");
    let grace = config_for("courier-worker").worker.shutdown_grace.as_secs();
    let w = deployment("courier-worker");
    let pre_stop = w["preStopSleepSeconds"].as_u64().expect("preStop sleep");
    let period = w["terminationGracePeriodSeconds"].as_u64().expect("grace");
    assert!(
        period >= pre_stop + grace + after_grace,
        "terminationGracePeriodSeconds {period} < preStop {pre_stop} + shutdown_grace_secs {grace} + {after_grace} s of flushing and closing"
    );
    let a = deployment("courier-admin");
    assert!(
        a["terminationGracePeriodSeconds"].as_u64() > a["preStopSleepSeconds"].as_u64(),
        "the admin API's preStop sleep eats its whole grace"
    );
    // The receiver: after the sleep, SIGTERM stops its HTTP server, which
    // gives the requests in progress up to its drain deadline.
    let drain = const_secs("crates/courier-telemetry/src/http.rs", "DRAIN_DEADLINE");
    let i = deployment("courier-ingest");
    let pre_stop = i["preStopSleepSeconds"].as_u64().expect("preStop sleep");
    let period = i["terminationGracePeriodSeconds"].as_u64().expect("grace");
    assert!(
        pre_stop > 0 && period >= pre_stop + drain,
        "the receiver's terminationGracePeriodSeconds {period} < preStop {pre_stop} + {drain} s of draining requests"
    );

    // systemd: the example config's grace, the same deadlines.
    let example = Config::from_toml(
        &read("deploy/courier.example.toml"),
        "deploy/courier.example.toml",
        &|_| None,
    )
    .expect("the example config");
    let unit = read("deploy/systemd/courier.service");
    let stop: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.trim().parse().ok())
        .expect("TimeoutStopSec= in seconds");
    let needed = example.worker.shutdown_grace.as_secs() + after_grace;
    assert!(
        stop >= needed,
        "courier.service: TimeoutStopSec={stop} < {needed}"
    );
}

/// The Dockerfile's instructions: continuation lines joined, comments
/// dropped, as (INSTRUCTION, rest).
fn dockerfile() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in read("Dockerfile").lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && pending.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => pending.push_str(part),
            None => {
                pending.push_str(line);
                let (word, rest) = pending.split_once(' ').unwrap_or((&pending, ""));
                out.push((word.to_uppercase(), rest.trim().to_owned()));
                pending.clear();
            }
        }
    }
    out
}

fn instructions(word: &str) -> Vec<String> {
    dockerfile()
        .into_iter()
        .filter(|(w, _)| w == word)
        .map(|(_, rest)| rest)
        .collect()
}

#[test]
fn the_image_runs_as_the_manifests_say_and_their_commands_exist() {
    let entrypoint: Vec<String> =
        serde_json::from_str(instructions("ENTRYPOINT").last().expect("an ENTRYPOINT"))
            .expect("ENTRYPOINT in exec form");
    let user = instructions("USER").last().expect("a USER").clone();
    let (uid, gid) = user.split_once(':').unwrap_or((&user, &user));
    let uid: u64 = uid
        .parse()
        .expect("USER is numeric (runAsNonRoot needs a uid)");
    let gid: u64 = gid.parse().expect("USER's group is numeric");
    assert_ne!(uid, 0, "the image runs as root");
    let copied = instructions("COPY");
    let binary = entrypoint.first().expect("an entrypoint binary");
    assert!(
        copied.iter().any(|c| c.ends_with(&format!(" {binary}"))),
        "ENTRYPOINT {binary} is not what the image copies in: {copied:?}"
    );

    let deployments = facts()["deployments"].as_object().expect("deployments");
    for name in ["courier-worker", "courier-admin", "courier-ingest"] {
        assert!(deployments.contains_key(name), "no Deployment {name}");
    }
    for (name, d) in deployments {
        for id in d["runAsUser"].as_array().expect("runAsUser") {
            assert_eq!(id, uid, "{name}: runAsUser is not the image's USER {uid}");
        }
        for id in d["runAsGroup"].as_array().expect("runAsGroup") {
            assert_eq!(id, gid, "{name}: runAsGroup is not the image's group {gid}");
        }
        if !d["command"].is_null() {
            assert_eq!(
                strings(&d["command"]),
                entrypoint,
                "{name}: command is not the image's ENTRYPOINT"
            );
        }
        // The args are a command this very binary has.
        let args = strings(&d["args"]);
        let out = Command::new(env!("CARGO_BIN_EXE_courier"))
            .args(&args)
            .arg("--help")
            .output()
            .expect("run courier");
        assert!(
            out.status.success(),
            "{name}: `courier {}` is not a command:\n{}",
            args.join(" "),
            report(&out)
        );
    }
}

#[test]
fn the_image_is_the_release_build_the_scripts_make() {
    let build = read("scripts/demo")
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("cargo build"))
        .expect("scripts/demo builds courier")
        .to_owned();
    let runs = instructions("RUN");
    assert!(
        runs.iter().any(|r| r
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .ends_with(&build)),
        "the Dockerfile does not run scripts/demo's `{build}`: {runs:?}"
    );
    let text = read("Dockerfile");
    for moved in [
        "CARGO_TARGET_DIR",
        "--target",
        "--profile",
        "CARGO_BUILD_TARGET",
    ] {
        assert!(
            !text.contains(moved),
            "the Dockerfile sets {moved}: the binary would not be in target/release"
        );
    }
    // The builder's WORKDIR + target/release/courier: where that build
    // leaves the binary, as scripts/demo runs it.
    assert!(read("scripts/demo").contains("target/release/courier"));
    let workdir = instructions("WORKDIR").first().expect("a WORKDIR").clone();
    let source = format!("{}/target/release/courier", workdir.trim_end_matches('/'));
    let copies = instructions("COPY");
    assert!(
        copies
            .iter()
            .any(|c| c.starts_with("--from=builder") && c.contains(&format!(" {source} "))),
        "the image does not copy {source}: {copies:?}"
    );
    assert_eq!(
        Path::new(env!("CARGO_BIN_EXE_courier")).file_name(),
        Some(std::ffi::OsStr::new("courier")),
        "the binary is no longer called courier"
    );

    // The builder's toolchain is one the workspace accepts, on the Debian
    // release the runtime image is built from (the binary links its glibc).
    let from = instructions("FROM");
    let builder = from
        .iter()
        .find(|f| f.contains("/rust:"))
        .expect("a rust builder");
    let tag = builder
        .split("/rust:")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .expect("a rust tag");
    let version = |v: &str| -> Vec<u32> { v.split('.').map(|n| n.parse().unwrap_or(0)).collect() };
    let wanted = read("Cargo.toml")
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"').to_owned())
        .expect("rust-version");
    let toolchain = tag.split('-').next().expect("a version");
    assert!(
        version(toolchain) >= version(&wanted),
        "rust:{tag} is older than rust-version {wanted}"
    );
    let runtime = from.last().expect("a runtime stage");
    for (codename, number) in [("bookworm", "debian12"), ("trixie", "debian13")] {
        assert_eq!(
            tag.contains(codename),
            runtime.contains(number),
            "the builder (rust:{tag}) and the runtime ({runtime}) are different Debian releases"
        );
    }
}

#[test]
fn the_build_context_lets_in_what_the_build_reads() {
    let ignore = read(".dockerignore");
    let rules: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        rules.first(),
        Some(&"*"),
        ".dockerignore starts by leaving everything out"
    );
    let allowed: Vec<&str> = rules
        .iter()
        .filter_map(|r| r.strip_prefix('!'))
        .map(|r| r.trim_end_matches('/'))
        .collect();
    assert!(!allowed.contains(&"target") && !allowed.contains(&".git"));

    // Top-level entries the build reads: the manifests, the members, every
    // file the crates embed or declare as a target.
    let mut needed = vec!["Cargo.toml".to_owned(), "Cargo.lock".to_owned()];
    let top = |path: &Path| -> Option<String> {
        let path = path.canonicalize().ok()?;
        let relative = path.strip_prefix(root()).ok()?;
        relative
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
    };
    for entry in std::fs::read_dir(root().join("crates")).expect("crates/") {
        let krate = entry.expect("an entry").path();
        let Ok(manifest) = std::fs::read_to_string(krate.join("Cargo.toml")) else {
            continue;
        };
        needed.extend(top(&krate));
        for line in manifest.lines() {
            if let Some(path) = line.trim().strip_prefix("path = \"") {
                needed.extend(top(&krate.join(path.trim_end_matches('"'))));
            }
        }
        let mut dirs = vec![krate.join("src")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten() {
                let file = entry.expect("an entry").path();
                if file.is_dir() {
                    dirs.push(file);
                    continue;
                }
                if file.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&file).expect("a source file");
                for (mac, base) in [
                    ("include_str!(\"", file.parent().expect("a folder")),
                    ("include_bytes!(\"", file.parent().expect("a folder")),
                    ("migrate!(\"", krate.as_path()),
                ] {
                    for piece in text.split(mac).skip(1) {
                        let path = piece.split('"').next().expect("a path");
                        needed.extend(top(&base.join(path)));
                    }
                }
            }
        }
    }
    needed.sort();
    needed.dedup();
    let missing: Vec<&String> = needed
        .iter()
        .filter(|n| !allowed.contains(&n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        ".dockerignore leaves out what the build reads: {missing:?}"
    );
}

#[test]
fn the_systemd_unit_is_sandboxed() {
    let unit = root().join("deploy/systemd/courier.service");
    let version = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| {
            panic!("systemd-analyze: {e}: install Debian's systemd (scripts/test-tools does)")
        });
    let number: u32 = String::from_utf8_lossy(&version.stdout)
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("systemd's version");
    assert!(
        number >= 250,
        "systemd {number} cannot review a unit file offline (250+)"
    );

    // Exposure on systemd's 0-10 scale, at most 1.5 ("OK"; 8.5 before the
    // sandbox). --threshold counts tenths.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=15", "--no-pager"])
        .arg(&unit)
        .output()
        .expect("run systemd-analyze security");
    let text = report(&out);
    let overall = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level:\n{text}"));
    println!("{overall}");
    assert!(out.status.success(), "the unit is too exposed:\n{text}");

    // `verify` knows every key and finds nothing to say; it wants an
    // ExecStart that exists, so it reads a copy pointing at /bin/true.
    let copy = scratch("courier.service");
    std::fs::write(
        &copy,
        read("deploy/systemd/courier.service").replace("/usr/local/bin/courier", "/bin/true"),
    )
    .expect("write the copy");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--no-pager"])
        .arg(&copy)
        .output()
        .expect("run systemd-analyze verify");
    let _ = std::fs::remove_file(&copy);
    let said = report(&out);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify:\n{said}"
    );
}
