//! The test harness: a private namespace per test against the real RabbitMQ
//! and PostgreSQL on loopback, with the built-in mock provider as the only
//! fake.
//!
//! Owns creating a unique namespace (exchanges, queues and a PostgreSQL
//! schema), the config that points a worker at it, publishing jobs, waiting
//! for outcomes (woken by the store's commit notifications, not by sleeping)
//! and tearing it all down when the [`TestEnv`] is dropped, even after a
//! failed assertion. It must never touch another namespace.

pub mod hostile;
pub mod proxy;
pub mod scrape;
pub mod tls;

use courier_amqp::{Link, Publisher, Topology};
use courier_core::config::{BrokerConfig, Config, DatabaseConfig, ENV_AMQP_URL, ENV_DATABASE_URL};
use courier_core::envelope::JobEnvelope;
use courier_provider::{FailureMix, MockProvider};
use courier_store::Store;
pub use courier_worker::Worker;
use serde_json::Value;
use std::future::Future;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The provider every test config defines.
pub const PROVIDER: &str = "mockpay";
/// Its operation: `POST /v1/customers/{customer}/charges`.
pub const OPERATION: &str = "charge";

/// Broker URL for tests: `COURIER_AMQP_URL`, else our machines' default.
pub fn amqp_url() -> String {
    std::env::var(ENV_AMQP_URL)
        .unwrap_or_else(|_| courier_core::config::DEFAULT_AMQP_URL.to_owned())
}

/// Database URL for tests: `COURIER_DATABASE_URL`, else our machines' default.
pub fn database_url() -> String {
    std::env::var(ENV_DATABASE_URL)
        .unwrap_or_else(|_| courier_core::config::DEFAULT_DATABASE_URL.to_owned())
}

/// The test broker, every setting but its URL at the default.
pub fn broker() -> BrokerConfig {
    BrokerConfig::with_url(&amqp_url())
}

/// The test database, every setting but its URL at the default.
pub fn database() -> DatabaseConfig {
    DatabaseConfig::with_url(&database_url())
}

/// How quickly a test provider times out and retries.
#[derive(Debug, Clone, Copy)]
pub struct ProviderTiming {
    pub timeout_ms: u64,
    pub base_delay_ms: u64,
    pub max_delay_secs: u64,
}

impl ProviderTiming {
    /// The testkit's own provider.
    pub const DEFAULT: Self = Self {
        timeout_ms: 10_000,
        base_delay_ms: 1000,
        max_delay_secs: 4,
    };
    /// For tests that wait out timeouts and retries.
    pub const QUICK: Self = Self {
        timeout_ms: 1000,
        base_delay_ms: 500,
        max_delay_secs: 2,
    };
}

/// A `[providers.<name>]` section with three attempts, no jitter, and the
/// `charge` operation; a test appends its own keys after it.
pub fn provider_toml(name: &str, base_url: &str, timing: ProviderTiming) -> String {
    let ProviderTiming {
        timeout_ms,
        base_delay_ms,
        max_delay_secs,
    } = timing;
    format!(
        r#"
[providers.{name}]
base_url = "{base_url}"
timeout_ms = {timeout_ms}
concurrency = 16

[providers.{name}.retry]
max_attempts = 3
base_delay_ms = {base_delay_ms}
max_delay_secs = {max_delay_secs}
jitter = 0.0

[providers.{name}.operations.{OPERATION}]
method = "POST"
path = "/v1/customers/{{customer}}/charges"
"#
    )
}

/// `[[admin.tokens]]` sections for `(name, token, scopes)`, each token in
/// a file of its own, as operators keep them. The files go when the
/// returned [`TokenFiles`] is dropped (keep it for the test's length).
pub fn admin_tokens(tokens: &[(&str, &str, &[&str])]) -> (String, TokenFiles) {
    let mut toml = String::new();
    let mut files = TokenFiles(Vec::new());
    for (name, token, scopes) in tokens {
        let file = std::env::temp_dir().join(format!("courier-token-{}", Uuid::now_v7().simple()));
        std::fs::write(&file, format!("{token}\n")).expect("write a token file");
        let scopes: Vec<String> = scopes.iter().map(|s| format!("{s:?}")).collect();
        toml.push_str(&format!(
            "[[admin.tokens]]\nname = \"{name}\"\ntoken_file = \"{}\"\nscopes = [{}]\n",
            file.display(),
            scopes.join(", ")
        ));
        files.0.push(file);
    }
    (toml, files)
}

/// The token files [`admin_tokens`] wrote, in its order; removed on drop.
#[derive(Debug)]
pub struct TokenFiles(Vec<std::path::PathBuf>);

impl TokenFiles {
    pub fn path(&self, index: usize) -> &std::path::Path {
        &self.0[index]
    }
}

impl Drop for TokenFiles {
    fn drop(&mut self) {
        for file in &self.0 {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// A namespace no other test uses.
pub fn unique_namespace() -> String {
    format!("t{}", Uuid::now_v7().simple())
}

/// One test's world.
#[derive(Debug)]
pub struct TestEnv {
    pub namespace: String,
    pub mock: MockProvider,
    pub store: Store,
    pub topology: Topology,
    link: Link,
    publisher: Publisher,
    toml: String,
    token_files: Vec<TokenFiles>,
}

impl TestEnv {
    /// A namespace whose provider answers 200 unless a job's payload scripts
    /// otherwise (see courier_provider::mock).
    pub async fn new() -> TestEnv {
        Self::with_mix(FailureMix::default(), "").await
    }

    /// A namespace whose provider fails per `mix`; `extra_toml` is appended
    /// to the config (e.g. a `[worker]` section).
    pub async fn with_mix(mix: FailureMix, extra_toml: &str) -> TestEnv {
        Self::with_providers(mix, extra_toml, &[]).await
    }

    /// As [`with_mix`](Self::with_mix), with more providers: `extra_toml`
    /// configures each of `others` (`[providers.<name>]`), and their queues
    /// are declared and removed with the namespace's.
    pub async fn with_providers(mix: FailureMix, extra_toml: &str, others: &[&str]) -> TestEnv {
        let namespace = unique_namespace();
        let mock = MockProvider::start(mix)
            .await
            .expect("start the mock provider");
        // Any free port for the worker's endpoints, and gauges sampled
        // often enough for a test to wait on them.
        let telemetry = if extra_toml.contains("[telemetry]") {
            ""
        } else {
            "[telemetry]\nlisten = \"127.0.0.1:0\"\npoll_interval_ms = 100\n"
        };
        let toml = format!(
            "namespace = \"{namespace}\"\n{extra_toml}\n{telemetry}\n{}",
            provider_toml(PROVIDER, &mock.base_url(), ProviderTiming::DEFAULT)
        );
        let store = Store::connect(&database(), &namespace, 4)
            .await
            .expect("connect to PostgreSQL (is it running? see README)");
        store.migrate().await.expect("migrate the test schema");
        let link = courier_amqp::connect(&broker(), "courier-testkit")
            .await
            .expect("connect to RabbitMQ (is it running? see README)");
        let topology = Topology::new(
            &namespace,
            std::iter::once(PROVIDER).chain(others.iter().copied()),
        );
        let ch = link.channel().await.expect("open a channel");
        topology
            .declare(&ch)
            .await
            .expect("declare the test topology");
        let publisher = Publisher::open(&link, broker().confirm_timeout)
            .await
            .expect("open a publisher");
        TestEnv {
            namespace,
            mock,
            store,
            topology,
            link,
            publisher,
            toml,
            token_files: Vec::new(),
        }
    }

    /// Keeps `files` (from [`admin_tokens`]) until this world is dropped.
    pub fn keep(&mut self, files: TokenFiles) {
        self.token_files.push(files);
    }

    /// This namespace's config file text.
    pub fn config_toml(&self) -> &str {
        &self.toml
    }

    /// The validated config, with connection URLs from the environment but
    /// never its namespace.
    pub fn config(&self) -> Config {
        let env = |k: &str| match k {
            ENV_AMQP_URL | ENV_DATABASE_URL => std::env::var(k).ok(),
            _ => None,
        };
        Config::from_toml(&self.toml, "testkit.toml", &env).expect("the test config is valid")
    }

    /// Starts an in-process worker on this namespace.
    pub async fn start_worker(&self) -> Worker {
        Worker::start(self.config())
            .await
            .expect("start the worker")
    }

    /// A job for the mock provider's `charge` operation. `script` goes under
    /// `"mock"` in the payload to make the provider misbehave.
    pub fn job(&self, script: Option<Value>) -> JobEnvelope {
        let mut payload = serde_json::json!({"customer": "cus_42", "amount": 1999});
        if let Some(s) = script {
            payload["mock"] = s;
        }
        JobEnvelope::new(PROVIDER, OPERATION, payload, chrono::Utc::now())
    }

    /// Publishes a job as an upstream would, with confirm.
    pub async fn publish(&self, job: &JobEnvelope) {
        self.publisher
            .publish_job(&self.topology, &job.provider, job.id, &job.to_body(), None)
            .await
            .expect("publish a job");
    }

    /// Publishes arbitrary bytes with `routing_key` to the jobs exchange.
    pub async fn publish_raw(
        &self,
        routing_key: &str,
        body: &[u8],
        traceparent: Option<&str>,
    ) -> Uuid {
        let id = Uuid::now_v7();
        self.publisher
            .publish_job(&self.topology, routing_key, id, body, traceparent)
            .await
            .expect("publish raw bytes");
        id
    }

    /// Deletes one of this namespace's queues, as an operator might by
    /// mistake under a running worker.
    pub async fn delete_queue(&self, queue: &str) {
        let ch = self.link.channel().await.expect("open a channel");
        courier_amqp::topology::delete_queue(&ch, queue)
            .await
            .expect("delete the queue");
    }

    /// Ready messages in one of this namespace's queues.
    pub async fn message_count(&self, queue: &str) -> u32 {
        let ch = self.link.channel().await.expect("open a channel");
        courier_amqp::topology::message_count(&ch, queue)
            .await
            .expect("inspect queue")
    }

    /// Waits (at most 10 s) until `queue` holds at least `n` ready messages
    /// and returns how many it holds: the broker requeues what a closed
    /// channel held on its own time.
    pub async fn wait_for_ready(&self, queue: &str, n: u32) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ready = self.message_count(queue).await;
            if ready >= n || Instant::now() > deadline {
                return ready;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until a scrape of `worker`'s `/metrics` satisfies `check`:
    /// counters are bumped just after a commit, gauges on an interval.
    /// Panics with `what` and the last scrape after `timeout`.
    pub async fn wait_for_metrics(
        &self,
        worker: &Worker,
        what: &str,
        timeout: Duration,
        check: impl Fn(&scrape::Scrape) -> bool,
    ) -> scrape::Scrape {
        let deadline = Instant::now() + timeout;
        loop {
            let scrape = scrape::metrics(worker.telemetry_addr()).await;
            if check(&scrape) {
                return scrape;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; last scrape:\n{}",
                    scrape.text
                );
            }
            // Counters move within microseconds of the commit this test
            // already awaited; gauges every poll_interval_ms (100 here).
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `check` holds, re-checking after every outcome commit in
    /// this namespace. Panics with `what` after `timeout`.
    pub async fn wait_until<F, Fut>(&self, what: &str, timeout: Duration, mut check: F)
    where
        F: FnMut(Store) -> Fut,
        Fut: Future<Output = bool>,
    {
        let mut listener = self.store.listen().await.expect("listen for commits");
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if check(self.store.clone()).await {
                return;
            }
            match tokio::time::timeout_at(deadline, listener.recv()).await {
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => panic!("listening for commits failed: {e}"),
                Err(_) => panic!("timed out after {timeout:?} waiting for {what}"),
            }
        }
    }

    /// Waits until every job in `ids` is succeeded or dead.
    pub async fn wait_terminal(&self, ids: &[Uuid], timeout: Duration) {
        let want = i64::try_from(ids.len()).expect("few ids");
        let ids = ids.to_vec();
        self.wait_until(&format!("{want} jobs to be terminal"), timeout, |store| {
            let ids = ids.clone();
            async move { store.count_terminal(&ids).await.expect("count terminal") == want }
        })
        .await;
    }

    /// Job `id`'s recorded state, if it has one.
    pub async fn state_of(&self, id: Uuid) -> Option<String> {
        self.store
            .job(id)
            .await
            .expect("read job")
            .map(|j| j.state.to_string())
    }

    /// Waits until job `id` is in `state`.
    pub async fn wait_state(&self, id: Uuid, state: &str, timeout: Duration) {
        self.wait_until(
            &format!("job {id} to be {state}"),
            timeout,
            |store| async move {
                store
                    .job(id)
                    .await
                    .expect("read job")
                    .is_some_and(|j| j.state.as_str() == state)
            },
        )
        .await;
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // Runs on success and on a failed assertion alike. Async cleanup in a
        // runtime of its own, on a thread of its own, so it works whatever
        // runtime (if any) is dropping us.
        let topology = self.topology.clone();
        let store = self.store.clone();
        let started = Instant::now();
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            rt.block_on(async move {
                if let Ok(link) = courier_amqp::connect(&broker(), "courier-testkit-cleanup").await
                    && let Ok(ch) = link.channel().await
                    && let Err(e) = topology.teardown(&ch).await
                {
                    eprintln!("testkit: tearing down {} failed: {e}", topology.namespace());
                }
                let store = Store::connect(&database(), store.schema(), 1).await;
                if let Ok(store) = store
                    && let Err(e) = store.drop_schema().await
                {
                    eprintln!("testkit: dropping schema {} failed: {e}", store.schema());
                }
            });
        });
        let _ = cleanup.join();
        if started.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "testkit: cleanup of {} took {:?}",
                self.namespace,
                started.elapsed()
            );
        }
    }
}

impl TestEnv {
    /// Records `n` jobs as dead (permanent 422 after one attempt) with their
    /// dead letters, as the worker would have, without running them: the
    /// starting point of operator-recovery tests at scale.
    pub async fn fabricate_dead_letters(&self, n: usize) -> Vec<JobEnvelope> {
        let jobs: Vec<JobEnvelope> = (0..n).map(|_| self.job(None)).collect();
        let outcomes: Vec<_> = jobs
            .iter()
            .map(courier_store::synthetic::dead_on_first_attempt)
            .collect();
        for chunk in outcomes.chunks(500) {
            self.store
                .commit(chunk)
                .await
                .expect("record fabricated dead letters");
        }
        jobs
    }

    /// Publishes `message` to this namespace's jobs exchange with
    /// `routing_key` as a hostile upstream would (any bytes in any property
    /// or header), and returns the broker's answer.
    pub async fn publish_hostile(
        &self,
        routing_key: &str,
        message: &hostile::Message,
    ) -> hostile::Answer {
        let mut raw = hostile::RawPublisher::connect_url(&amqp_url())
            .await
            .expect("connect the raw publisher");
        raw.publish(
            &self.topology.jobs_exchange(),
            routing_key.as_bytes(),
            message,
        )
        .await
        .expect("publish raw frames")
    }

    /// Publishes `job` with `headers` added as the upstream wrote them (e.g.
    /// Courier's own `x-courier-*`, or `x-delivery-count`).
    pub async fn publish_with_headers(
        &self,
        job: &JobEnvelope,
        headers: &[(&str, hostile::Value)],
    ) {
        let message = hostile::Message {
            message_id: Some(job.id.to_string().into_bytes()),
            content_type: Some(b"application/json".to_vec()),
            headers: headers
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.clone()))
                .collect(),
            persistent: true,
            body: job.to_body(),
            ..hostile::Message::default()
        };
        let answer = self.publish_hostile(&job.provider, &message).await;
        assert_eq!(answer, hostile::Answer::Ack, "the broker takes the job");
    }

    /// A publisher on a connection of its own.
    pub async fn publisher(&self) -> Publisher {
        Publisher::open(&self.link, broker().confirm_timeout)
            .await
            .expect("open a publisher")
    }
}
