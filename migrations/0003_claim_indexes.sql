-- Claiming dead letters for requeue walks pending letters oldest first and
-- stops after one batch: these indexes let it do so without scanning the
-- letters already settled (measured: 100k letters, 26.9 s → see BENCHMARKS).
DROP INDEX dead_letters_pending;
CREATE INDEX dead_letters_pending ON dead_letters (provider, dead_at, id) WHERE status = 'pending';
CREATE INDEX dead_letters_pending_by_age ON dead_letters (dead_at, id) WHERE status = 'pending';
CREATE INDEX dead_letters_requeueing ON dead_letters (claimed_at) WHERE status = 'requeueing';
