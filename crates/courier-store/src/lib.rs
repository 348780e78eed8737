//! Courier's PostgreSQL edge: jobs, attempts and dead letters in the
//! namespace's schema; embedded migrations; group-committed outcomes.
//!
//! Only this crate knows sqlx. Writes go through [`Store::commit`], which
//! records a whole batch of outcomes in one transaction and is idempotent
//! (a redelivered outcome changes nothing), so callers may ack every delivery
//! in the batch once it returns. It must never decide what an outcome is;
//! it records what courier-core decided.

pub mod events;
mod held;
mod outcome;
pub mod providers;
mod queries;
pub mod recovery;
pub mod synthetic;

pub use events::{EventFilter, EventRecord, NewEvent, RecordError, Recorded, ReplayRecord};
pub use held::HeldConnection;
pub use outcome::{AttemptRow, Committed, DeadLetterRow, JobRow, Outcome};
pub use providers::{Lease, ProbeEnd, ProviderActivity, ProviderState, ProviderStates};
pub use queries::{AttemptRecord, Backlog, DeadLetterRecord, JobRecord, JobSummary, Timing};
pub use recovery::{ActionRecord, ClaimedLetter, DeadFilter, DeadStat, LetterKey};

use courier_core::Failure;
use courier_core::config::DatabaseConfig;
use courier_core::state::{JobState, StoredProgress};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;
use uuid::Uuid;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Database errors. The sqlx error is part of the message, not a `source`:
/// its own `Display` already includes its cause, and a chain would repeat it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot reach PostgreSQL at {addr}: {cause}")]
    Connect { addr: String, cause: sqlx::Error },
    #[error("database.url is not a PostgreSQL URL: {0}")]
    Url(sqlx::Error),
    #[error("applying migrations failed: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    #[error("{op} failed: {cause}")]
    Query {
        op: &'static str,
        cause: sqlx::Error,
    },
    #[error("the database holds what this worker cannot read: {what}")]
    Corrupt { what: String },
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(e)
    }
}

impl StoreError {
    fn query(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |cause| StoreError::Query { op, cause }
    }

    /// What retrying can achieve; decided here, once, for every caller.
    pub fn failure(&self) -> Failure {
        match self {
            StoreError::Connect { cause, .. } | StoreError::Query { cause, .. } => {
                failure_of(cause)
            }
            StoreError::Url(_) | StoreError::Corrupt { .. } => Failure::Setup,
            StoreError::Migrate(e) => match e {
                sqlx::migrate::MigrateError::Execute(cause)
                | sqlx::migrate::MigrateError::ExecuteMigration(cause, _) => failure_of(cause),
                _ => Failure::Setup,
            },
        }
    }
}

/// The class of a driver error. sqlx's enum is `#[non_exhaustive]`, so one
/// arm must catch variants a future version adds: they count as transient
/// (retried, reported), which can delay work but never drops it.
fn failure_of(e: &sqlx::Error) -> Failure {
    match e {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => failure_of_sqlstate(&code),
            None => Failure::Transient,
        },
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => Failure::Transient,
        // A value the driver cannot encode is this input's fault.
        sqlx::Error::Encode(_) | sqlx::Error::InvalidArgument(_) => Failure::Refused,
        sqlx::Error::Configuration(_)
        | sqlx::Error::ConfigFile(_)
        | sqlx::Error::RowNotFound
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::AnyDriverError(_)
        | sqlx::Error::Migrate(_)
        | sqlx::Error::InvalidSavePointStatement => Failure::Setup,
        _ => Failure::Transient,
    }
}

/// By SQLSTATE class (PostgreSQL manual, appendix A).
fn failure_of_sqlstate(code: &str) -> Failure {
    match code.get(..2).unwrap_or("") {
        // data exception (NUL in text, out of range, bad encoding) and
        // integrity constraint violation: this row can never be written.
        "22" | "23" => Failure::Refused,
        // connection exception, transaction rollback (serialization,
        // deadlock), insufficient resources, operator intervention
        // (statement timeout, shutdown), system error, and a lock not
        // available in time (55P03): it may work next time.
        "08" | "40" | "53" | "57" | "58" | "XX" => Failure::Transient,
        "55" if code == "55P03" => Failure::Transient,
        // read-only transaction (25006): a failover left us on a standby.
        "25" if code == "25006" => Failure::Transient,
        // syntax or access rule (a missing table or column, a permission),
        // invalid authorization, invalid schema name, and the rest: the
        // setup is wrong.
        _ => Failure::Setup,
    }
}

/// How to connect to `database`: its URL, the TLS rule and the timeouts.
fn connect_options(database: &DatabaseConfig) -> Result<PgConnectOptions, StoreError> {
    let url = database.url.as_str();
    let mut base = PgConnectOptions::from_str(url).map_err(StoreError::Url)?;
    // A mode anyone chose (in the URL, or PGSSLMODE) is kept. Otherwise:
    // TLS to a server on this machine protects nothing and costs a quarter
    // of the worker's CPU (measured with `courier bench drain`), so loopback
    // goes without; anywhere else the certificate and host name are checked
    // (libpq's `prefer` would fall back to plaintext silently and check
    // nothing).
    let chosen = url.contains("sslmode=")
        || url.contains("ssl-mode=")
        || std::env::var_os("PGSSLMODE").is_some();
    if !chosen {
        let mode = if is_loopback(base.get_host()) {
            sqlx::postgres::PgSslMode::Disable
        } else {
            sqlx::postgres::PgSslMode::VerifyFull
        };
        base = base.ssl_mode(mode);
    }
    let timeouts = [
        ("statement_timeout", database.statement_timeout),
        ("lock_timeout", database.lock_timeout),
    ]
    .map(|(name, value)| (name, format!("{}ms", value.as_millis())));
    Ok(base.options(timeouts.iter().map(|(n, v)| (*n, v.as_str()))))
}

/// Whether `host` is this machine (a name, an address, or a Unix socket
/// directory).
fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host.starts_with('/')
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A handle on one namespace's schema. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
    schema: String,
}

impl Store {
    /// Connects to `database`, creating `schema` if needed; every connection
    /// of the pool works inside it. `schema` must be a validated namespace.
    pub async fn connect(
        database: &DatabaseConfig,
        schema: &str,
        max_connections: u32,
    ) -> Result<Store, StoreError> {
        Self::connect_observed(database, schema, max_connections, None).await
    }

    /// [`Store::connect`], calling `on_connect` for every connection the
    /// pool opens (the worker counts them: reopening means reconnecting).
    pub async fn connect_observed(
        database: &DatabaseConfig,
        schema: &str,
        max_connections: u32,
        on_connect: Option<std::sync::Arc<dyn Fn() + Send + Sync>>,
    ) -> Result<Store, StoreError> {
        courier_core::config::check_namespace(schema)
            .map_err(|p| StoreError::Url(sqlx::Error::Configuration(p.into())))?;
        let base = connect_options(database)?;
        let addr = format!("{}:{}", base.get_host(), base.get_port());
        let connect_err = |cause| StoreError::Connect {
            addr: addr.clone(),
            cause,
        };

        let mut conn = base.connect().await.map_err(connect_err)?;
        // Two workers starting at once may race to create the schema.
        // The name passed check_namespace: lowercase letters, digits, `_`.
        if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
        )))
        .execute(&mut conn)
        .await
            && !is_duplicate(&e)
        {
            return Err(StoreError::Query {
                op: "create schema",
                cause: e,
            });
        }
        let _ = conn.close().await;

        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |_, _| {
                let on_connect = on_connect.clone();
                Box::pin(async move {
                    if let Some(hook) = on_connect {
                        hook();
                    }
                    Ok(())
                })
            })
            .connect_with(base.options([("search_path", schema)]))
            .await
            .map_err(connect_err)?;
        Ok(Store {
            pool,
            schema: schema.to_owned(),
        })
    }

    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Applies the embedded migrations to this schema.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(StoreError::query("ping"))?;
        Ok(())
    }

    /// A connection of the pool, for a run of statements.
    pub(crate) async fn connection(
        &self,
    ) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>, StoreError> {
        self.pool
            .acquire()
            .await
            .map_err(StoreError::query("take a database connection"))
    }

    /// What is recorded of each of `ids` (absent = never attempted).
    pub async fn progress(
        &self,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, StoredProgress>, StoreError> {
        progress_on(&mut *self.connection().await?, ids).await
    }
}

/// [`Store::progress`] on a connection.
pub(crate) async fn progress_on(
    conn: &mut sqlx::PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, StoredProgress>, StoreError> {
    {
        // Not a prepared statement: a plan cached while the table was small
        // (a fresh namespace, statistics not yet gathered) scans the whole
        // table forever after, and every lookup grows with the table
        // (found by `courier bench drain`: 7,165 jobs/s at 40k, 4,170 at 100k).
        type Row = (Uuid, String, i32, i32, i32, Option<Vec<u8>>, i32, i64);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, state, attempts, run_base, generation, fingerprint, throttled_attempts, throttled_ms
             FROM jobs WHERE id = ANY($1)",
        )
        .persistent(false)
        .bind(ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(StoreError::query("read job progress"))?;
        rows.into_iter()
            .map(
                |(
                    id,
                    state,
                    attempts,
                    run_base,
                    generation,
                    fingerprint,
                    throttled,
                    throttled_ms,
                )| {
                    // A row this worker cannot read is an error, not a job that
                    // was never attempted (that would run it again).
                    let state = JobState::parse(&state).ok_or_else(|| StoreError::Corrupt {
                        what: format!("job {id} has an unknown state {state:?}"),
                    })?;
                    let count = |n: i32| u32::try_from(n).unwrap_or(0);
                    let progress = StoredProgress {
                        state,
                        attempts: count(attempts),
                        run_base: count(run_base),
                        generation: count(generation),
                        fingerprint: fingerprint.and_then(|f| f.try_into().ok()),
                        throttled_attempts: count(throttled),
                        throttled_for: Duration::from_millis(
                            u64::try_from(throttled_ms).unwrap_or(0),
                        ),
                    };
                    Ok((id, progress))
                },
            )
            .collect()
    }
}

impl Store {
    /// The LISTEN/NOTIFY channel on which each commit announces itself.
    pub fn notify_channel(&self) -> String {
        format!("courier_{}", self.schema)
    }

    /// A listener woken after every outcome commit in this namespace: lets a
    /// waiter (a test, the demo's progress) re-check instead of polling.
    pub async fn listen(&self) -> Result<PgListener, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool)
            .await
            .map_err(StoreError::query("open listener"))?;
        listener
            .listen(&self.notify_channel())
            .await
            .map_err(StoreError::query("listen"))?;
        Ok(listener)
    }

    /// Runs `sql` in this namespace's schema, as written: for tests that
    /// must break the schema under a running worker, and for maintenance.
    pub async fn execute_unchecked(&self, sql: &str) -> Result<(), StoreError> {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&self.pool)
            .await
            .map_err(StoreError::query("run a statement"))?;
        Ok(())
    }

    /// PostgreSQL's plan for `sql` (with sequential scans off, so that a
    /// usable index shows even on a small table): for tests and for an
    /// operator asking why a query is slow.
    pub async fn explain(&self, sql: &str) -> Result<String, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(StoreError::query("begin explain"))?;
        sqlx::query("SET LOCAL enable_seqscan = off")
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query("explain"))?;
        let lines: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")))
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::query("explain"))?;
        // Ended now: a transaction left to the pool's drop holds its locks.
        tx.rollback()
            .await
            .map_err(StoreError::query("end explain"))?;
        Ok(lines.join("\n"))
    }

    /// Drops the whole schema: its jobs, attempts and dead letters.
    pub async fn drop_schema(&self) -> Result<(), StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
            self.schema
        )))
        .execute(&self.pool)
        .await
        .map_err(StoreError::query("drop schema"))?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn is_duplicate(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "23505" || c == "42P06")
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::postgres::PgSslMode;

    #[test]
    fn a_remote_database_is_verified_unless_the_url_says_otherwise() {
        let mode = |url: &str| {
            connect_options(&DatabaseConfig::with_url(url))
                .expect("a URL")
                .get_ssl_mode()
        };
        if std::env::var_os("PGSSLMODE").is_some() {
            return; // the environment chose; nothing to decide
        }
        assert!(matches!(
            mode("postgres://u@db.internal/x"),
            PgSslMode::VerifyFull
        ));
        assert!(matches!(
            mode("postgres://u@10.0.0.5:5432/x"),
            PgSslMode::VerifyFull
        ));
        assert!(matches!(
            mode("postgres://u@127.0.0.1/x"),
            PgSslMode::Disable
        ));
        assert!(matches!(
            mode("postgres://u@db.internal/x?sslmode=require"),
            PgSslMode::Require
        ));
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in [
            "localhost",
            "127.0.0.1",
            "127.0.0.53",
            "::1",
            "[::1]",
            "/var/run/postgresql",
        ] {
            assert!(super::is_loopback(host), "{host}");
        }
        for host in ["db.internal", "10.0.0.5", "192.168.1.1", "::2"] {
            assert!(!super::is_loopback(host), "{host}");
        }
    }
}
