//! What every worker obeys about a provider, shared through PostgreSQL: the
//! rate limits' schedules, a pause the provider asked for, an operator's
//! hold, and the circuit breaker's state.
//!
//! Owns the statements, each one atomic: a lease of rate-limit slots is one
//! `UPDATE … RETURNING` on a GCRA row, so the slots of every replica form
//! one stream; a circuit transition is one conditional `UPDATE`, so two
//! workers cannot both move it. It must never decide when to pause, trip or
//! close: courier-core's `signals` and `circuit` do, and the worker acts.

use crate::{Store, StoreError};
use chrono::{DateTime, Utc};
use courier_core::ActionKind;
use courier_core::circuit::CircuitState;
use std::time::Duration;
use uuid::Uuid;

/// A provider's shared state, as read.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderState {
    pub provider: String,
    pub paused_until: Option<DateTime<Utc>>,
    pub pause_source: Option<String>,
    pub held_by: Option<String>,
    pub held_until: Option<DateTime<Utc>>,
    pub held_since: Option<DateTime<Utc>>,
    pub circuit: CircuitState,
    pub circuit_since: DateTime<Utc>,
    pub open_until: Option<DateTime<Utc>>,
    pub probes_taken: i32,
    pub probes_ok: i32,
}

/// Every provider's state, and the database's clock when it was read (to
/// turn the stored times into waits on the reader's own clock).
#[derive(Debug, Clone)]
pub struct ProviderStates {
    pub now: DateTime<Utc>,
    pub providers: Vec<ProviderState>,
}

/// A block of rate-limit slots: the `i`-th may be used `first + i ×
/// interval` after the database's now (a negative or zero offset: at once).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lease {
    pub slots: u32,
    /// Microseconds from the database's now to the first slot.
    pub first_us: i64,
    pub interval_us: i64,
}

/// What a probe call's result did to the circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeEnd {
    /// Enough probes succeeded: closed.
    Closed,
    /// A probe failed: open again.
    Reopened,
    /// Counted; more probes are due.
    Counted,
}

type StateRow = (
    DateTime<Utc>,
    String,
    Option<DateTime<Utc>>,
    Option<String>,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    i32,
    i32,
);

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl Store {
    /// Makes sure every provider and rate limit has its row.
    pub async fn ensure_providers(
        &self,
        providers: &[String],
        limit_keys: &[String],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO provider_state (provider) SELECT * FROM UNNEST($1::text[]) ON CONFLICT DO NOTHING",
        )
        .bind(providers)
        .execute(&self.pool)
        .await
        .map_err(StoreError::query("create provider state"))?;
        sqlx::query(
            "INSERT INTO rate_limits (key) SELECT * FROM UNNEST($1::text[]) ON CONFLICT DO NOTHING",
        )
        .bind(limit_keys)
        .execute(&self.pool)
        .await
        .map_err(StoreError::query("create rate limits"))?;
        Ok(())
    }

    /// Leases `slots` slots of the limit `key`: `interval` apart, with a
    /// `burst` allowed after a quiet period (GCRA: the slot may go `tolerance
    /// = (burst − 1) × interval` before its theoretical time, never before
    /// now). One statement; replicas leasing at once get disjoint slots.
    pub async fn lease_slots(
        &self,
        key: &str,
        slots: u32,
        interval: Duration,
        burst: u32,
    ) -> Result<Lease, StoreError> {
        let interval_us = micros(interval).max(1);
        let tolerance_us = interval_us.saturating_mul(i64::from(burst.saturating_sub(1)));
        let (first_us,): (i64,) = sqlx::query_as(
            "UPDATE rate_limits SET tat = GREATEST(tat, now()) + make_interval(secs => $2::float8 * $3 / 1e6)
             WHERE key = $1
             RETURNING (extract(epoch FROM (tat - make_interval(secs => $2::float8 * $3 / 1e6) - now())) * 1e6)::int8 - $4",
        )
        .bind(key)
        .bind(f64::from(slots))
        .bind(interval_us as f64)
        .bind(tolerance_us)
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::query("lease rate-limit slots"))?;
        Ok(Lease {
            slots,
            first_us,
            interval_us,
        })
    }

    /// Every provider's state.
    pub async fn provider_states(&self) -> Result<ProviderStates, StoreError> {
        let rows: Vec<StateRow> = sqlx::query_as(
            "SELECT now(), provider, paused_until, pause_source, held_by, held_until, held_since, circuit,
                    circuit_since, open_until, probes_taken, probes_ok
             FROM provider_state ORDER BY provider",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query("read provider state"))?;
        let now = match rows.first() {
            Some(row) => row.0,
            None => self.now().await?,
        };
        let providers = rows.into_iter().map(state_of).collect::<Result<_, _>>()?;
        Ok(ProviderStates { now, providers })
    }

    /// One provider's state.
    pub async fn provider_state(
        &self,
        provider: &str,
    ) -> Result<Option<ProviderState>, StoreError> {
        Ok(self
            .provider_states()
            .await?
            .providers
            .into_iter()
            .find(|p| p.provider == provider))
    }

    async fn now(&self) -> Result<DateTime<Utc>, StoreError> {
        sqlx::query_scalar("SELECT now()")
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::query("read the database's clock"))
    }

    /// Pauses a provider for every worker for `length` (a longer pause
    /// already set stays).
    pub async fn pause_provider(
        &self,
        provider: &str,
        length: Duration,
        source: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE provider_state SET
                 pause_source = CASE WHEN paused_until IS NULL OR paused_until < now() + make_interval(secs => $2)
                                     THEN $3 ELSE pause_source END,
                 paused_until = GREATEST(coalesce(paused_until, now()), now() + make_interval(secs => $2)),
                 updated_at = now()
             WHERE provider = $1",
        )
        .bind(provider)
        .bind(length.as_secs_f64())
        .bind(source)
        .execute(&self.pool)
        .await
        .map_err(StoreError::query("pause a provider"))?;
        Ok(())
    }

    /// Opens the circuit for `open_for`, unless it is open already.
    /// `true` when this call opened it.
    pub async fn open_circuit(
        &self,
        provider: &str,
        open_for: Duration,
    ) -> Result<bool, StoreError> {
        let opened = sqlx::query(
            "UPDATE provider_state SET circuit = 'open', circuit_since = now(),
                 open_until = now() + make_interval(secs => $2), probes_taken = 0, probes_ok = 0, updated_at = now()
             WHERE provider = $1 AND circuit <> 'open'",
        )
        .bind(provider)
        .bind(open_for.as_secs_f64())
        .execute(&self.pool)
        .await
        .map_err(StoreError::query("open a circuit"))?;
        Ok(opened.rows_affected() == 1)
    }

    /// Takes one of the `probes` probe calls of a circuit whose open period
    /// is over (moving it to half-open). `Some(moved)` when a probe is
    /// granted (`moved`: this call made it half-open). A half-open circuit
    /// whose probes were all handed out longer than `open_for` ago (their
    /// workers died) hands them out again.
    pub async fn take_probe(
        &self,
        provider: &str,
        probes: u32,
        open_for: Duration,
    ) -> Result<Option<bool>, StoreError> {
        let granted: Option<(bool,)> = sqlx::query_as(
            "UPDATE provider_state SET
                 probes_taken = CASE WHEN circuit = 'half_open' AND circuit_since >= now() - make_interval(secs => $3)
                                     THEN probes_taken + 1 ELSE 1 END,
                 probes_ok = CASE WHEN circuit = 'half_open' AND circuit_since >= now() - make_interval(secs => $3)
                                  THEN probes_ok ELSE 0 END,
                 circuit_since = CASE WHEN circuit = 'half_open' AND circuit_since >= now() - make_interval(secs => $3)
                                      THEN circuit_since ELSE now() END,
                 circuit = 'half_open', updated_at = now()
             WHERE provider = $1
               AND ((circuit = 'open' AND open_until <= now())
                    OR (circuit = 'half_open' AND (probes_taken < $2 OR circuit_since < now() - make_interval(secs => $3))))
             RETURNING probes_taken = 1",
        )
        .bind(provider)
        .bind(i32::try_from(probes).unwrap_or(i32::MAX))
        .bind(open_for.as_secs_f64())
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::query("take a probe"))?;
        Ok(granted.map(|(moved,)| moved))
    }

    /// Records a probe call's result: `probes` successes close the circuit,
    /// one failure opens it again for `open_for`.
    pub async fn probe_result(
        &self,
        provider: &str,
        succeeded: bool,
        probes: u32,
        open_for: Duration,
    ) -> Result<ProbeEnd, StoreError> {
        // A failed probe reopens the circuit; enough good ones close it.
        let state: Option<(String,)> = sqlx::query_as(
            "UPDATE provider_state SET
                 circuit = CASE WHEN NOT $3 THEN 'open' WHEN probes_ok + 1 >= $2 THEN 'closed' ELSE circuit END,
                 circuit_since = CASE WHEN NOT $3 OR probes_ok + 1 >= $2 THEN now() ELSE circuit_since END,
                 open_until = CASE WHEN NOT $3 THEN now() + make_interval(secs => $4) ELSE open_until END,
                 probes_taken = CASE WHEN NOT $3 THEN 0 ELSE probes_taken END,
                 probes_ok = CASE WHEN NOT $3 THEN 0 ELSE probes_ok + 1 END,
                 updated_at = now()
             WHERE provider = $1 AND circuit = 'half_open'
             RETURNING circuit",
        )
        .bind(provider)
        .bind(i32::try_from(probes).unwrap_or(i32::MAX))
        .bind(succeeded)
        .bind(open_for.as_secs_f64())
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::query("end a probe"))?;
        Ok(match state.as_ref().map(|(c,)| c.as_str()) {
            Some("open") => ProbeEnd::Reopened,
            Some("closed") => ProbeEnd::Closed,
            _ => ProbeEnd::Counted,
        })
    }

    /// An operator holds a provider (every worker stops calling it) until
    /// `until`, or until released; audited. Returns the action's id.
    pub async fn hold_provider(
        &self,
        provider: &str,
        actor: &str,
        until: Option<DateTime<Utc>>,
    ) -> Result<Option<Uuid>, StoreError> {
        self.operator_hold(provider, actor, ActionKind::Pause, until)
            .await
    }

    /// An operator releases a held provider; audited.
    pub async fn release_provider(
        &self,
        provider: &str,
        actor: &str,
    ) -> Result<Option<Uuid>, StoreError> {
        self.operator_hold(provider, actor, ActionKind::Resume, None)
            .await
    }

    async fn operator_hold(
        &self,
        provider: &str,
        actor: &str,
        action: ActionKind,
        until: Option<DateTime<Utc>>,
    ) -> Result<Option<Uuid>, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(StoreError::query("begin a provider hold"))?;
        let hold = action == ActionKind::Pause;
        let changed = sqlx::query(
            "UPDATE provider_state SET
                 held_by = CASE WHEN $2 THEN $3 END,
                 held_until = CASE WHEN $2 THEN $4 END,
                 held_since = CASE WHEN $2 THEN now() END,
                 updated_at = now()
             WHERE provider = $1",
        )
        .bind(provider)
        .bind(hold)
        .bind(actor)
        .bind(until)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query("hold or release a provider"))?;
        if changed.rows_affected() == 0 {
            return Ok(None);
        }
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO operator_actions (id, actor, action, filter, matched, affected, finished_at)
             VALUES ($1, $2, $3, $4, 1, 1, now())",
        )
        .bind(id)
        .bind(actor)
        .bind(action.as_str())
        .bind(serde_json::json!({"provider": provider, "until": until}))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query("record a provider hold"))?;
        tx.commit()
            .await
            .map_err(StoreError::query("commit a provider hold"))?;
        Ok(Some(id))
    }

    /// What each provider is doing: calls and failed calls in the last
    /// `window` (from the attempts recorded), jobs waiting for a retry and
    /// dead letters waiting for an operator.
    pub async fn provider_activity(
        &self,
        window: Duration,
    ) -> Result<Vec<ProviderActivity>, StoreError> {
        sqlx::query_as(
            "WITH calls AS (
                SELECT j.provider, count(*) AS calls,
                       count(*) FILTER (WHERE a.error_class <> 'success') AS failures
                FROM attempts a JOIN jobs j ON j.id = a.job_id
                WHERE a.started_at >= now() - make_interval(secs => $1)
                GROUP BY j.provider),
             retrying AS (
                SELECT provider, count(*) AS retrying FROM jobs
                WHERE state = 'retrying' GROUP BY provider),
             dead AS (
                SELECT provider, count(*) AS dead_pending FROM dead_letters
                WHERE status = 'pending' AND provider IS NOT NULL GROUP BY provider)
             SELECT provider,
                    coalesce(c.calls, 0) AS calls, coalesce(c.failures, 0) AS failures,
                    coalesce(r.retrying, 0) AS retrying, coalesce(d.dead_pending, 0) AS dead_pending
             FROM calls c FULL JOIN retrying r USING (provider) FULL JOIN dead d USING (provider)",
        )
        .bind(window.as_secs_f64())
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query("read the providers' activity"))
    }
}

/// One provider's recent calls and waiting work.
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct ProviderActivity {
    pub provider: String,
    pub calls: i64,
    /// Calls that did not succeed (any error class but `success`).
    pub failures: i64,
    /// Jobs waiting in the delay queues for their next attempt.
    pub retrying: i64,
    /// Dead letters no operator has settled yet.
    pub dead_pending: i64,
}

impl Store {
    /// Attempts recorded, and the first and the last of their starts.
    pub async fn attempt_span(
        &self,
    ) -> Result<(i64, Option<DateTime<Utc>>, Option<DateTime<Utc>>), StoreError> {
        sqlx::query_as("SELECT count(*), min(started_at), max(started_at) FROM attempts")
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::query("read the attempts' span"))
    }

    /// The most attempts any job has made.
    pub async fn most_attempts(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT coalesce(max(attempts), 0)::int8 FROM jobs")
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::query("read the most attempts"))
    }

    /// Attempts started in `[from, to)`.
    pub async fn attempts_started_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        sqlx::query_scalar(
            "SELECT count(*) FROM attempts WHERE started_at >= $1 AND started_at < $2",
        )
        .bind(from)
        .bind(to)
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::query("count attempts in a period"))
    }

    /// What the providers' coordination has cost this schema so far, from
    /// PostgreSQL's own statistics (flushed when a session ends or idles):
    /// rate-limit leases (rows updated) and provider-state reads (scans).
    pub async fn coordination_statements(&self) -> Result<(i64, i64), StoreError> {
        sqlx::query_as(
            "SELECT coalesce(sum(n_tup_upd) FILTER (WHERE relname = 'rate_limits'), 0)::int8,
                    coalesce(sum(seq_scan + coalesce(idx_scan, 0)) FILTER (WHERE relname = 'provider_state'), 0)::int8
             FROM pg_stat_user_tables WHERE schemaname = current_schema()",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::query("read the coordination's statistics"))
    }
}

fn state_of(row: StateRow) -> Result<ProviderState, StoreError> {
    let (
        _,
        provider,
        paused_until,
        pause_source,
        held_by,
        held_until,
        held_since,
        circuit,
        circuit_since,
        open_until,
        probes_taken,
        probes_ok,
    ) = row;
    let circuit = CircuitState::parse(&circuit).ok_or_else(|| StoreError::Corrupt {
        what: format!("provider {provider:?} has an unknown circuit state {circuit:?}"),
    })?;
    Ok(ProviderState {
        provider,
        paused_until,
        pause_source,
        held_by,
        held_until,
        held_since,
        circuit,
        circuit_since,
        open_until,
        probes_taken,
        probes_ok,
    })
}
