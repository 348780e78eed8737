//! A database connection one task keeps for its stream of statements: the
//! outcome writer's commits, a lookup slot's reads.
//!
//! Owns when such a task talks to the pool. Taking a connection from the
//! pool and giving it back cost a round trip each (sqlx checks the
//! connection both ways), more than the statement itself when batches are
//! small: at 1,000 jobs/s each commit and each lookup is a batch of one. A
//! kept connection is taken once and replaced only after an error (it may
//! be broken); a connection not kept goes back after each statement. It
//! must never hold a connection across anything but its own statement.

use crate::outcome::{Committed, Outcome, commit_on};
use crate::{Store, StoreError, progress_on};
use courier_core::state::StoredProgress;
use sqlx::pool::PoolConnection;
use std::collections::HashMap;
use tokio::sync::Mutex;
use uuid::Uuid;

/// A connection kept for one task's statements (see the module docs).
#[derive(Debug)]
pub struct HeldConnection {
    store: Store,
    keep: bool,
    conn: Mutex<Option<PoolConnection<sqlx::Postgres>>>,
}

impl Store {
    /// A connection for one task's statements, kept between them when
    /// `keep` (the pool must then have room for it beside everyone else),
    /// else taken from the pool for each.
    pub fn held_connection(&self, keep: bool) -> HeldConnection {
        HeldConnection {
            store: self.clone(),
            keep,
            conn: Mutex::new(None),
        }
    }
}

impl HeldConnection {
    /// [`Store::commit`] on this connection.
    pub async fn commit(&self, batch: &[Outcome]) -> Result<Committed, StoreError> {
        if batch.is_empty() {
            return Ok(Committed::default());
        }
        let mut slot = self.checkout().await?;
        let conn = slot.as_mut().expect("checked out");
        let result = commit_on(conn, &self.store.notify_channel(), batch).await;
        self.check_in(&mut slot, result.is_ok());
        result
    }

    /// [`Store::progress`] on this connection.
    pub async fn progress(
        &self,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, StoredProgress>, StoreError> {
        let mut slot = self.checkout().await?;
        let conn = slot.as_mut().expect("checked out");
        let result = progress_on(conn, ids).await;
        self.check_in(&mut slot, result.is_ok());
        result
    }

    async fn checkout(
        &self,
    ) -> Result<tokio::sync::MutexGuard<'_, Option<PoolConnection<sqlx::Postgres>>>, StoreError>
    {
        let mut slot = self.conn.lock().await;
        if slot.is_none() {
            *slot = Some(self.store.connection().await?);
        }
        Ok(slot)
    }

    /// Keeps the connection after a success when asked to; after a failure
    /// it is closed, not returned: it may be broken.
    fn check_in(&self, slot: &mut Option<PoolConnection<sqlx::Postgres>>, ok: bool) {
        if ok && self.keep {
            return;
        }
        if let Some(mut conn) = slot.take()
            && !ok
        {
            conn.close_on_drop();
        }
    }
}
