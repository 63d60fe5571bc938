-- Losing a lease is not a failure of the task. A lease that expires without a heartbeat or a
-- report while the task is within its timeout means the worker vanished (killed, its node
-- reclaimed, scaled down): the task is queued again after its retry delay and the attempt does
-- not count against `max_attempts`, up to `max_lease_losses` lost leases per task (default 3);
-- a loss beyond them counts as a failed attempt. The attempt's outcome is `lost`.
--
-- Safe on a live database: the new columns have constant defaults (no table rewrite, one short
-- ACCESS EXCLUSIVE lock, given up after lock_timeout rather than queueing every query behind a
-- long transaction), and the widened CHECK is added NOT VALID (no scan of task_attempts; new
-- rows are checked, old rows all satisfy it).
SET LOCAL lock_timeout = '10s';

ALTER TABLE tasks
    ADD COLUMN lease_losses integer NOT NULL DEFAULT 0,
    ADD COLUMN max_lease_losses integer NOT NULL DEFAULT 3;

ALTER TABLE task_attempts DROP CONSTRAINT task_attempts_outcome_check;
ALTER TABLE task_attempts ADD CONSTRAINT task_attempts_outcome_check CHECK (outcome IN
    ('succeeded', 'failed', 'expired', 'lost', 'released', 'cancelled')) NOT VALID;
