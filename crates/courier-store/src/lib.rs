//! Courier's PostgreSQL edge: jobs, attempts and dead letters in the
//! namespace's schema; embedded migrations; group-committed outcomes.
//!
//! Only this crate knows sqlx. Writes go through [`Store::commit`], which
//! records a whole batch of outcomes in one transaction and is idempotent
//! (a redelivered outcome changes nothing), so callers may ack every delivery
//! in the batch once it returns. It must never decide what an outcome is;
//! it records what courier-core decided.

mod outcome;
mod queries;
pub mod recovery;
pub mod synthetic;

pub use outcome::{AttemptRow, Committed, DeadLetterRow, JobRow, Outcome};
pub use queries::{AttemptRecord, Backlog, DeadLetterRecord, JobRecord, Timing};
pub use recovery::{ActionRecord, ClaimedLetter, DeadFilter, DeadStat, LetterKey};

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
    /// Connects to `url`, creating `schema` if needed; every connection of
    /// the pool works inside it. `schema` must be a validated namespace.
    pub async fn connect(
        url: &str,
        schema: &str,
        max_connections: u32,
    ) -> Result<Store, StoreError> {
        Self::connect_observed(url, schema, max_connections, None).await
    }

    /// [`Store::connect`], calling `on_connect` for every connection the
    /// pool opens (the worker counts them: reopening means reconnecting).
    pub async fn connect_observed(
        url: &str,
        schema: &str,
        max_connections: u32,
        on_connect: Option<std::sync::Arc<dyn Fn() + Send + Sync>>,
    ) -> Result<Store, StoreError> {
        courier_core::config::check_namespace(schema)
            .map_err(|p| StoreError::Url(sqlx::Error::Configuration(p.into())))?;
        let mut base = PgConnectOptions::from_str(url).map_err(StoreError::Url)?;
        // TLS to a server on this machine protects nothing and costs a
        // quarter of the worker's CPU (measured with `courier bench drain`):
        // on loopback, the default `prefer` becomes `disable`. A mode anyone
        // chose (in the URL, or PGSSLMODE) is kept.
        let chosen = url.contains("sslmode=")
            || url.contains("ssl-mode=")
            || std::env::var_os("PGSSLMODE").is_some();
        if is_loopback(base.get_host())
            && !chosen
            && matches!(base.get_ssl_mode(), sqlx::postgres::PgSslMode::Prefer)
        {
            base = base.ssl_mode(sqlx::postgres::PgSslMode::Disable);
        }
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

    /// What is recorded of each of `ids` (absent = never attempted).
    pub async fn progress(
        &self,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, StoredProgress>, StoreError> {
        // Not a prepared statement: a plan cached while the table was small
        // (a fresh namespace, statistics not yet gathered) scans the whole
        // table forever after, and every lookup grows with the table
        // (found by `courier bench drain`: 7,165 jobs/s at 40k, 4,170 at 100k).
        let rows: Vec<(Uuid, String, i32, i32)> =
            sqlx::query_as("SELECT id, state, attempts, generation FROM jobs WHERE id = ANY($1)")
                .persistent(false)
                .bind(ids)
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::query("read job progress"))?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, state, attempts, generation)| {
                let state = JobState::parse(&state)?;
                let count = |n: i32| u32::try_from(n).unwrap_or(0);
                let progress = StoredProgress {
                    state,
                    attempts: count(attempts),
                    generation: count(generation),
                };
                Some((id, progress))
            })
            .collect())
    }

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
