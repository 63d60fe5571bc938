-- Long-polling lease requests are woken through Redis pub/sub (see src/scheduler.rs).
-- A transaction that calls pg_notify takes a database-wide lock held through its commit, so the
-- per-row trigger serialized every task submission; it goes.
DROP TRIGGER IF EXISTS tasks_notify_queued ON tasks;
DROP FUNCTION IF EXISTS stacksmith_notify_queued();
