-- Fewer writes per task. Fewer indexes on tasks: a task changes state three times or more (queued, leased, succeeded)
-- and every change writes a new entry into every index of the table.
--
-- * tasks_active (team_id, pool) of leased tasks: claims read the lease counters instead
--   (20261211000000_lease_counters.sql); their reconciliation (every minute) counts a team's
--   leased tasks through tasks_team_state_order (team_id, state, ...), and the pool autoscaler
--   a pool's through tasks_lease_expiry (the same rows).
-- * tasks_team_order (team_id, id DESC): a page of a team's tasks in every state merges one
--   range of tasks_team_state_order (team_id, state, id DESC) per state (store::tasks::list).
--
-- Safe on a live database: dropping an index takes the table's lock only for a moment.
SET LOCAL lock_timeout = '10s';

DROP INDEX IF EXISTS tasks_active;
DROP INDEX IF EXISTS tasks_team_order;

-- The fair-share counters of leased tasks per team and pool, striped: a claim adds its leases to
-- one of 16 stripes and a report subtracts its ended leases from one (a stripe may go below
-- zero; their sum is the count), so claims and reports of one busy team no longer queue for one
-- row lock each. The quota counters (team_usage) are kept only for teams with a quota, where
-- claims must wait for each other. team_pool_usage, which this replaces, stays until no server
-- of the previous version runs (they still write it during a rolling upgrade).
CREATE TABLE lease_stripes (
    team_id         uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    pool            text NOT NULL,
    stripe          smallint NOT NULL CHECK (stripe BETWEEN 0 AND 15),
    active          integer NOT NULL DEFAULT 0,
    last_leased_at  timestamptz NOT NULL DEFAULT '-infinity',
    PRIMARY KEY (team_id, pool, stripe)
);

INSERT INTO lease_stripes (team_id, pool, stripe, active, last_leased_at)
SELECT u.team_id, u.pool, 0,
       (SELECT count(*) FROM tasks a
        WHERE a.team_id = u.team_id AND a.pool = u.pool AND a.state IN ('leased', 'running')),
       u.last_leased_at
FROM team_pool_usage u;
