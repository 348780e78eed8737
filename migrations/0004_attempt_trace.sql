-- The W3C trace id each attempt's provider request carried: the link from a
-- job's history to its trace (the publisher's, continued, or one the worker
-- started for a job that came without one).
ALTER TABLE attempts ADD COLUMN trace_id text;
