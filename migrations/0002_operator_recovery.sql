-- Operator recovery: requeue and purge dead letters exactly once, audited.

-- 'queued': an operator sent the job back; a new run of attempts begins.
ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_state_check CHECK (state IN ('queued', 'retrying', 'succeeded', 'dead'));
-- attempts made before the current run: the retry budget counts from here
ALTER TABLE jobs ADD COLUMN run_base integer NOT NULL DEFAULT 0;

-- Every operator action: who, what, on which filter, with which patch, how many.
CREATE TABLE operator_actions (
    id          uuid PRIMARY KEY,
    actor       text        NOT NULL,
    action      text        NOT NULL CHECK (action IN ('requeue', 'purge')),
    filter      jsonb       NOT NULL,
    patch       jsonb,
    matched     integer     NOT NULL DEFAULT 0,
    affected    integer     NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);

-- pending → requeueing (claimed by one action; the job is already 'queued')
--         → requeued (republished, confirmed)
-- pending → purged
ALTER TABLE dead_letters DROP CONSTRAINT dead_letters_status_check;
ALTER TABLE dead_letters ADD CONSTRAINT dead_letters_status_check
    CHECK (status IN ('pending', 'requeueing', 'requeued', 'purged'));
ALTER TABLE dead_letters ADD COLUMN action_id uuid REFERENCES operator_actions (id);
ALTER TABLE dead_letters ADD COLUMN claimed_at timestamptz;
ALTER TABLE dead_letters ADD COLUMN settled_at timestamptz;
-- the body actually republished, when a patch changed it
ALTER TABLE dead_letters ADD COLUMN requeued_body bytea;
CREATE INDEX dead_letters_by_job ON dead_letters (job_id);
CREATE INDEX dead_letters_unsettled ON dead_letters (status, dead_at) WHERE status IN ('pending', 'requeueing');

-- Each requeue starts a new generation of the job; a dead letter is unique per
-- job, generation and attempt count (an invalid job requeued and rejected
-- again has the same attempt count, but a new generation).
ALTER TABLE jobs ADD COLUMN generation integer NOT NULL DEFAULT 0;
ALTER TABLE dead_letters ADD COLUMN generation integer NOT NULL DEFAULT 0;
DROP INDEX dead_letters_once_per_attempt;
CREATE UNIQUE INDEX dead_letters_once_per_attempt ON dead_letters (job_id, generation, attempts) WHERE job_id IS NOT NULL;
