-- Teams own API keys and tasks. Every query on tasks is scoped by team_id.
CREATE TABLE teams (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (char_length(name) BETWEEN 1 AND 100),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- API keys are stored only as the sha256 of the full key; `key_prefix` (the first characters
-- of the key) lets people recognise a key without revealing it.
CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    team_id     uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    key_prefix  text NOT NULL,
    key_hash    bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_team ON api_keys (team_id);

-- Tasks. The columns for leasing (state, priority, pool, run_at, attempts, lease_*) exist from
-- the start so the scheduler can claim work with
--   SELECT ... WHERE state = 'queued' AND pool = $1 AND run_at <= now()
--   ORDER BY priority DESC, run_at, id FOR UPDATE SKIP LOCKED
-- without a schema rewrite.
CREATE TABLE tasks (
    id                     uuid PRIMARY KEY,  -- UUIDv7: time ordered, the pagination key
    team_id                uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    pool                   text NOT NULL,
    command                text[] NOT NULL,
    env                    jsonb NOT NULL DEFAULT '{}'::jsonb,
    timeout_seconds        integer NOT NULL CHECK (timeout_seconds > 0),
    priority               integer NOT NULL DEFAULT 0,
    max_attempts           integer NOT NULL DEFAULT 1 CHECK (max_attempts >= 1),
    retry_backoff_seconds  integer NOT NULL DEFAULT 0 CHECK (retry_backoff_seconds >= 0),
    state                  text NOT NULL DEFAULT 'queued'
                           CHECK (state IN ('queued', 'leased', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts               integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    run_at                 timestamptz NOT NULL DEFAULT now(),
    lease_owner            text,
    lease_expires_at       timestamptz,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    finished_at            timestamptz
);
CREATE INDEX tasks_team_order ON tasks (team_id, id DESC);
CREATE INDEX tasks_team_state_order ON tasks (team_id, state, id DESC);
CREATE INDEX tasks_claimable ON tasks (pool, priority DESC, run_at, id) WHERE state = 'queued';
CREATE INDEX tasks_lease_expiry ON tasks (lease_expires_at) WHERE state IN ('leased', 'running');

-- Idempotency-Key records: the fingerprint of the first request and the response it got.
CREATE TABLE idempotency_keys (
    team_id          uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    idempotency_key  text NOT NULL,
    request_hash     bytea NOT NULL,
    response_status  smallint NOT NULL,
    response_body    jsonb NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, idempotency_key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
