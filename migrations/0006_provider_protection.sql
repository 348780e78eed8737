-- Provider protection (issue 10): one rate limit for every worker, pauses a
-- provider asked for, the circuit breaker, an operator's hold. Everything a
-- worker obeys about a provider lives here, shared by every replica.

-- Throttled attempts do not spend a job's retry budget; the time they made
-- it wait is bounded instead (retry.max_throttled_secs). Both per run.
ALTER TABLE jobs ADD COLUMN throttled_attempts integer NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN throttled_ms bigint NOT NULL DEFAULT 0;

-- A rate limit (`provider`, or `provider/operation`) as a GCRA schedule:
-- `tat` is the theoretical arrival time after the last slot handed out.
-- Workers lease blocks of slots with one UPDATE … RETURNING.
CREATE TABLE rate_limits (
    key text PRIMARY KEY,
    tat timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE provider_state (
    provider     text PRIMARY KEY,
    -- the provider asked every worker to wait (Retry-After, RateLimit fields)
    paused_until timestamptz,
    pause_source text,
    -- an operator's hold: who, until when (NULL: until resumed)
    held_by      text,
    held_until   timestamptz,
    held_since   timestamptz,
    circuit      text        NOT NULL DEFAULT 'closed' CHECK (circuit IN ('closed', 'open', 'half_open')),
    circuit_since timestamptz NOT NULL DEFAULT now(),
    open_until   timestamptz,
    -- half-open: probe calls handed out, and those that succeeded
    probes_taken integer     NOT NULL DEFAULT 0,
    probes_ok    integer     NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Operators pause and resume providers; both are audited like requeues.
ALTER TABLE operator_actions DROP CONSTRAINT operator_actions_action_check;
ALTER TABLE operator_actions ADD CONSTRAINT operator_actions_action_check
    CHECK (action IN ('requeue', 'purge', 'pause', 'resume'));

-- `courier providers` shows each provider's rate over the last seconds.
CREATE INDEX attempts_by_time ON attempts USING brin (started_at);
