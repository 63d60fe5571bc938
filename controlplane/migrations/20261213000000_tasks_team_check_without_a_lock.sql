-- A task's team, kept without a foreign key. The key's check ran for every inserted task: a
-- `SELECT ... FOR KEY SHARE` of the team's row, which many concurrent submits of one team
-- share through a MultiXact (measured: 15 % of a batch insert's Postgres CPU). The server
-- stores only the team of the key that authenticated the request (its row references the
-- team), and never deletes a team; a team deleted by hand takes its tasks with it, as the key's
-- ON DELETE CASCADE did, through the trigger below.
--
-- Safe on a live database: dropping a constraint takes the table's lock only for a moment.
SET LOCAL lock_timeout = '10s';

ALTER TABLE tasks DROP CONSTRAINT IF EXISTS tasks_team_id_fkey;

CREATE FUNCTION stacksmith_delete_team_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM tasks WHERE team_id = OLD.id;
    RETURN OLD;
END
$$;

CREATE TRIGGER teams_delete_tasks BEFORE DELETE ON teams
    FOR EACH ROW EXECUTE FUNCTION stacksmith_delete_team_tasks();
