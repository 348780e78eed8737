-- Webhooks in (issue 13): the event log `courier ingest` writes, and the
-- operator replays of it.

-- One row per verified event a source sent, whatever the number of times it
-- was delivered: a redelivery (same source, same event id) finds this row
-- and creates nothing. Written in the transaction that waits for the
-- broker's confirm of the job it became, so an event is either recorded and
-- enqueued, or neither.
CREATE TABLE events (
    id          uuid PRIMARY KEY,                 -- Courier's (v7, time-ordered)
    source      text        NOT NULL,             -- ingest.sources.<name>
    event_id    text        NOT NULL,             -- the scheme's id header, else sha256:<hex of the body>
    headers     jsonb       NOT NULL,             -- the headers that matter (no signatures)
    body        bytea       NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    job_id      uuid        NOT NULL,             -- the job it became
    UNIQUE (source, event_id)
);
CREATE INDEX events_by_time ON events (received_at);

-- An operator's replay enqueues each matching event once per action: the
-- primary key makes a second row for the same action and event impossible.
CREATE TABLE event_replays (
    action_id    uuid NOT NULL REFERENCES operator_actions (id),
    event        uuid NOT NULL REFERENCES events (id),
    job_id       uuid NOT NULL,
    published_at timestamptz,                     -- NULL: the publish was not confirmed
    PRIMARY KEY (action_id, event)
);
CREATE INDEX event_replays_by_event ON event_replays (event);

ALTER TABLE operator_actions DROP CONSTRAINT operator_actions_action_check;
ALTER TABLE operator_actions ADD CONSTRAINT operator_actions_action_check
    CHECK (action IN ('requeue', 'purge', 'pause', 'resume', 'replay'));
