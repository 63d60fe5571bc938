-- Orchestration: leases with fencing tokens, retries with exponential backoff and jitter, dead
-- letters, workflows (DAGs of tasks), per-team quotas and fair-share weights.

-- Teams: an optional cap on leased tasks (all pools together) and a fair-share weight.
ALTER TABLE teams
    ADD COLUMN max_concurrent_tasks integer CHECK (max_concurrent_tasks > 0),
    ADD COLUMN share integer NOT NULL DEFAULT 1 CHECK (share BETWEEN 1 AND 1000);

-- A workflow is a DAG of tasks; its tasks point at it.
CREATE TABLE workflows (
    id              uuid PRIMARY KEY,
    team_id         uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    name            text,
    failure_policy  text NOT NULL CHECK (failure_policy IN ('fail_fast', 'continue')),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workflows_team ON workflows (team_id, id DESC);

-- States: `pending` waits for workflow dependencies; `dead` ran out of attempts (a dead letter).
-- `failed` stays allowed for old rows but is no longer written: a failed attempt is either
-- queued again (with a later run_at) or dead.
ALTER TABLE tasks DROP CONSTRAINT tasks_state_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_state_check CHECK (state IN
    ('pending', 'queued', 'leased', 'running', 'succeeded', 'failed', 'dead', 'cancelled'));

ALTER TABLE tasks
    ADD COLUMN retry_max_backoff_seconds integer NOT NULL DEFAULT 3600
        CHECK (retry_max_backoff_seconds >= 0),
    ADD COLUMN retry_jitter_percent integer NOT NULL DEFAULT 10
        CHECK (retry_jitter_percent BETWEEN 0 AND 100),
    -- The current lease (NULL unless leased) and the fencing token, incremented by every lease.
    ADD COLUMN lease_id uuid,
    ADD COLUMN fencing_token bigint NOT NULL DEFAULT 0,
    ADD COLUMN leased_at timestamptz,
    -- What the last attempt reported.
    ADD COLUMN result jsonb,
    ADD COLUMN output text,
    ADD COLUMN exit_code integer,
    ADD COLUMN last_error text,
    -- Workflow membership: the task's name in its workflow, and its dependencies' results
    -- (filled when it becomes queued).
    ADD COLUMN workflow_id uuid REFERENCES workflows (id) ON DELETE CASCADE,
    ADD COLUMN workflow_node text,
    ADD COLUMN dependency_results jsonb NOT NULL DEFAULT '{}'::jsonb;

-- Claims pick a team first (fair share), then its best task: priority, then age.
DROP INDEX tasks_claimable;
CREATE INDEX tasks_claimable ON tasks (team_id, pool, priority DESC, run_at, id) WHERE state = 'queued';
-- Leased tasks per team and pool (fair share and quotas count them on every claim).
CREATE INDEX tasks_active ON tasks (team_id, pool) WHERE state IN ('leased', 'running');
CREATE UNIQUE INDEX tasks_lease ON tasks (lease_id) WHERE lease_id IS NOT NULL;
CREATE INDEX tasks_workflow ON tasks (workflow_id) WHERE workflow_id IS NOT NULL;

CREATE TABLE task_dependencies (
    task_id     uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    depends_on  uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    PRIMARY KEY (task_id, depends_on)
);
CREATE INDEX task_dependencies_reverse ON task_dependencies (depends_on);

-- One row per lease (attempt): who held it, how it ended, and when the next attempt may run.
-- A lease id that is here but no longer on its task is stale (409), not unknown (404).
CREATE TABLE task_attempts (
    lease_id       uuid PRIMARY KEY,
    task_id        uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt        integer NOT NULL,
    fencing_token  bigint NOT NULL,
    worker         text,
    leased_at      timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    outcome        text CHECK (outcome IN ('succeeded', 'failed', 'expired', 'released', 'cancelled')),
    error          text,
    next_run_at    timestamptz
);
CREATE INDEX task_attempts_task ON task_attempts (task_id, attempt);

-- When each team last got a task of each pool: the fair-share tie-break (round robin).
CREATE TABLE team_pool_usage (
    team_id         uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    pool            text NOT NULL,
    last_leased_at  timestamptz NOT NULL,
    PRIMARY KEY (team_id, pool)
);

-- The delay before attempt `failed_attempts + 1`: base * 2^(failed_attempts - 1), capped, minus
-- up to `jitter_percent` percent at random.
CREATE FUNCTION stacksmith_retry_delay(base integer, cap integer, jitter_percent integer,
                                       failed_attempts integer)
RETURNS interval LANGUAGE sql VOLATILE AS $$
    SELECT make_interval(secs => d * (1 - (jitter_percent / 100.0) * random()))
    FROM (SELECT least(base::float8 * power(2::float8, greatest(failed_attempts - 1, 0)), cap::float8) AS d) s
$$;

-- Wakes long-polling lease requests: one notification per pool and transaction (Postgres
-- folds identical notifications of a transaction into one).
CREATE FUNCTION stacksmith_notify_queued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('stacksmith_task_queued', NEW.pool);
    RETURN NULL;
END
$$;
CREATE TRIGGER tasks_notify_queued
    AFTER INSERT OR UPDATE OF state ON tasks
    FOR EACH ROW WHEN (NEW.state = 'queued')
    EXECUTE FUNCTION stacksmith_notify_queued();
