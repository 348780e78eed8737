-- Hardening against hostile input (issue 9).

-- What a job's content was when it was recorded (SHA-256 over provider,
-- operation, idempotency key and payload): a different job published under
-- a known id is refused instead of being taken for a duplicate.
ALTER TABLE jobs ADD COLUMN fingerprint bytea;

-- A dead letter keeps the original body only up to the worker's size limit;
-- above it, `body` holds a prefix and these two say what arrived.
ALTER TABLE dead_letters ADD COLUMN body_size bigint;
ALTER TABLE dead_letters ADD COLUMN body_sha256 bytea;

-- `courier jobs find --idempotency-key` searches by key alone.
DROP INDEX jobs_by_idempotency_key;
CREATE INDEX jobs_by_idempotency_key ON jobs (idempotency_key);

-- 'refused': RabbitMQ or PostgreSQL would not take what Courier had to write
-- about the message; 'unreadable': the AMQP client could not read it at all.
ALTER TABLE dead_letters DROP CONSTRAINT dead_letters_reason_check;
ALTER TABLE dead_letters ADD CONSTRAINT dead_letters_reason_check
    CHECK (reason IN ('permanent', 'retries_exhausted', 'invalid', 'delivery_limit', 'refused', 'unreadable'));

-- An operator action that stopped early says why (its row is finished
-- either way, with what it did).
ALTER TABLE operator_actions ADD COLUMN error text;
