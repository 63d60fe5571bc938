-- Claims in one statement: counters of leased tasks per team (all pools: what quotas are checked
-- against) and per team and pool (what fair share ranks by), changed in the transactions that
-- change leases, so a claim never counts tasks. `serve` sets them right every minute if they
-- drifted (servers of the previous version do not keep them during a rolling upgrade).
--
-- Safe on a live database: a new table, a column with a constant default (no rewrite), a
-- lock_timeout, and initial values computed from the partial index of leased tasks.
SET LOCAL lock_timeout = '10s';

CREATE TABLE team_usage (
    team_id  uuid PRIMARY KEY REFERENCES teams (id) ON DELETE CASCADE,
    active   integer NOT NULL DEFAULT 0
);
ALTER TABLE team_pool_usage ADD COLUMN active integer NOT NULL DEFAULT 0;

INSERT INTO team_usage (team_id, active)
SELECT t.id, (SELECT count(*) FROM tasks a WHERE a.team_id = t.id AND a.state IN ('leased', 'running'))
FROM teams t;

INSERT INTO team_pool_usage (team_id, pool, last_leased_at, active)
SELECT team_id, pool, now(), count(*)::int FROM tasks
WHERE state IN ('leased', 'running') GROUP BY team_id, pool
ON CONFLICT (team_id, pool) DO UPDATE SET active = EXCLUDED.active;
