-- The durable pipeline: one row per job (its current state), one row per
-- attempt, one row per dead letter. Everything lives in the namespace's own
-- schema (the connection's search_path), so environments and tests share a
-- database without seeing each other.

CREATE TABLE jobs (
    id                   uuid PRIMARY KEY,
    provider             text        NOT NULL,
    operation            text        NOT NULL,
    idempotency_key      text        NOT NULL,
    state                text        NOT NULL CHECK (state IN ('retrying', 'succeeded', 'dead')),
    -- attempts recorded so far; a delivery carrying fewer is a stale duplicate
    attempts             integer     NOT NULL,
    last_status          smallint,
    last_error_class     text,
    last_error           text,
    -- when the upstream created the job (from the envelope)
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL,
    next_attempt_at      timestamptz,
    finished_at          timestamptz,
    -- deliveries skipped because the job was already done or superseded
    duplicate_deliveries integer     NOT NULL DEFAULT 0
);

CREATE INDEX jobs_by_idempotency_key ON jobs (provider, idempotency_key);
CREATE INDEX jobs_not_succeeded ON jobs (state, updated_at) WHERE state <> 'succeeded';

-- No foreign key to jobs: both are written in the same transaction by the
-- outcome writer, and the check would cost a lookup per row on the hot path.
CREATE TABLE attempts (
    job_id      uuid        NOT NULL,
    attempt     integer     NOT NULL,
    started_at  timestamptz NOT NULL,
    duration_us bigint      NOT NULL,
    http_status smallint,
    error_class text        NOT NULL,
    -- truncated, never a full response body
    error       text,
    PRIMARY KEY (job_id, attempt)
);

CREATE TABLE dead_letters (
    id          uuid PRIMARY KEY,
    -- NULL when the message did not even carry a readable job id
    job_id      uuid,
    provider    text,
    operation   text,
    reason      text        NOT NULL CHECK (reason IN ('permanent', 'retries_exhausted', 'invalid', 'delivery_limit')),
    detail      text        NOT NULL,
    attempts    integer     NOT NULL,
    last_status smallint,
    last_error  text,
    -- the original message body, byte for byte, even when it is not JSON
    body        bytea       NOT NULL,
    message_id  text,
    dead_at     timestamptz NOT NULL DEFAULT now(),
    status      text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'requeued', 'purged'))
);

-- A job dies once per run: a redelivered copy of the same final attempt
-- must not make a second dead letter.
CREATE UNIQUE INDEX dead_letters_once_per_attempt ON dead_letters (job_id, attempts) WHERE job_id IS NOT NULL;
CREATE INDEX dead_letters_pending ON dead_letters (provider, dead_at) WHERE status = 'pending';
