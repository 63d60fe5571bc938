//! The `tasks` table. Every function takes the owning team: another team's task does not exist.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{FromRow, PgExecutor};
use std::collections::BTreeMap;
use uuid::Uuid;

use crate::model::UnknownState;
use crate::model::task::{NewTask, Task, TaskRetry, TaskState};

#[derive(Debug, Clone, FromRow)]
pub struct TaskRow {
    pub id: Uuid,
    pub team_id: Uuid,
    pub pool: String,
    pub command: Vec<String>,
    pub env: Json<BTreeMap<String, String>>,
    pub timeout_seconds: i32,
    pub priority: i32,
    pub max_attempts: i32,
    pub retry_backoff_seconds: i32,
    pub state: String,
    pub attempts: i32,
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub retry_max_backoff_seconds: i32,
    pub retry_jitter_percent: i32,
    pub fencing_token: i64,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub result: Option<Json<serde_json::Value>>,
    pub output: Option<String>,
    pub exit_code: Option<i32>,
    pub last_error: Option<String>,
    pub workflow_id: Option<Uuid>,
    pub workflow_node: Option<String>,
    pub dependency_results: Json<serde_json::Value>,
    pub lease_losses: i32,
    pub max_lease_losses: i32,
}

macro_rules! task_columns {
    () => {
        "id, team_id, pool, command, env, timeout_seconds, priority, max_attempts, \
     retry_backoff_seconds, state, attempts, run_at, created_at, updated_at, finished_at, \
     retry_max_backoff_seconds, retry_jitter_percent, fencing_token, lease_expires_at, result, \
     output, exit_code, last_error, workflow_id, workflow_node, dependency_results, \
     lease_losses, max_lease_losses"
    };
}

pub(crate) use task_columns;

impl TryFrom<TaskRow> for Task {
    type Error = UnknownState;

    fn try_from(row: TaskRow) -> Result<Self, UnknownState> {
        Ok(Self {
            state: TaskState::parse(&row.state)?,
            id: row.id,
            pool: row.pool,
            command: row.command,
            env: row.env.0,
            timeout_seconds: row.timeout_seconds,
            priority: row.priority,
            retry: TaskRetry {
                max_attempts: row.max_attempts,
                backoff_seconds: row.retry_backoff_seconds,
                max_backoff_seconds: row.retry_max_backoff_seconds,
                jitter_percent: row.retry_jitter_percent,
                max_lease_losses: row.max_lease_losses,
            },
            attempts: row.attempts,
            lease_losses: row.lease_losses,
            run_at: row.run_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
            finished_at: row.finished_at,
            fencing_token: row.fencing_token,
            lease_expires_at: row.lease_expires_at,
            result: row.result.map(|json| json.0),
            output: row.output,
            exit_code: row.exit_code,
            last_error: row.last_error,
            workflow_id: row.workflow_id,
            workflow_task: row.workflow_node,
            dependency_results: row.dependency_results.0,
        })
    }
}

/// Inserts a task; a workflow task (`workflow`: its workflow, its name, whether it waits for
/// dependencies) starts `pending` when it has dependencies.
pub async fn insert_in_workflow(
    executor: impl PgExecutor<'_>,
    team_id: Uuid,
    task: &NewTask,
    workflow: Option<(Uuid, &str, bool)>,
) -> Result<TaskRow, sqlx::Error> {
    let state = match workflow {
        Some((_, _, true)) => "pending",
        _ => "queued",
    };
    sqlx::query_as::<_, TaskRow>(concat!(
        "INSERT INTO tasks (id, team_id, pool, command, env, timeout_seconds, priority,
                            max_attempts, retry_backoff_seconds, retry_max_backoff_seconds,
                            retry_jitter_percent, state, workflow_id, workflow_node,
                            max_lease_losses)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
         RETURNING ",
        task_columns!()
    ))
    .bind(Uuid::now_v7())
    .bind(team_id)
    .bind(&task.pool)
    .bind(&task.command)
    .bind(Json(&task.env))
    .bind(task.timeout_seconds)
    .bind(task.priority)
    .bind(task.max_attempts)
    .bind(task.retry_backoff_seconds)
    .bind(task.retry_max_backoff_seconds)
    .bind(task.retry_jitter_percent)
    .bind(state)
    .bind(workflow.map(|(id, _, _)| id))
    .bind(workflow.map(|(_, name, _)| name))
    .bind(task.max_lease_losses)
    .fetch_one(executor)
    .await
}

/// Inserts queued tasks, of one team or several, in one statement. Returns the tasks in the
/// order of `tasks`, made from what was submitted and the time the database stored them at
/// (only the ids and that time come back: the rest of a new row is its defaults,
/// [`NewTask::queued`]).
pub async fn insert_many(
    executor: impl PgExecutor<'_>,
    tasks: &[(Uuid, &NewTask)],
) -> Result<Vec<Task>, sqlx::Error> {
    let ids: Vec<Uuid> = tasks.iter().map(|_| Uuid::now_v7()).collect();
    let column =
        |f: &dyn Fn(&NewTask) -> i32| -> Vec<i32> { tasks.iter().map(|(_, t)| f(t)).collect() };
    let rows = sqlx::query_as::<_, (Uuid, DateTime<Utc>)>(
        "INSERT INTO tasks (id, team_id, pool, command, env, timeout_seconds, priority,
                            max_attempts, retry_backoff_seconds, retry_max_backoff_seconds,
                            retry_jitter_percent, max_lease_losses, state)
         SELECT id, team_id, pool, ARRAY(SELECT jsonb_array_elements_text(command)), env,
                timeout_seconds, priority, max_attempts, retry_backoff_seconds,
                retry_max_backoff_seconds, retry_jitter_percent, max_lease_losses, 'queued'
         FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::jsonb[], $5::jsonb[], $6::int[],
                     $7::int[], $8::int[], $9::int[], $10::int[], $11::int[], $12::int[])
              AS i(id, team_id, pool, command, env, timeout_seconds, priority, max_attempts,
                   retry_backoff_seconds, retry_max_backoff_seconds, retry_jitter_percent,
                   max_lease_losses)
         RETURNING id, created_at",
    )
    .bind(&ids)
    .bind(tasks.iter().map(|(team, _)| *team).collect::<Vec<Uuid>>())
    .bind(
        tasks
            .iter()
            .map(|(_, t)| t.pool.as_str())
            .collect::<Vec<&str>>(),
    )
    .bind(
        tasks
            .iter()
            .map(|(_, t)| Json(&t.command))
            .collect::<Vec<_>>(),
    )
    .bind(tasks.iter().map(|(_, t)| Json(&t.env)).collect::<Vec<_>>())
    .bind(column(&|t| t.timeout_seconds))
    .bind(column(&|t| t.priority))
    .bind(column(&|t| t.max_attempts))
    .bind(column(&|t| t.retry_backoff_seconds))
    .bind(column(&|t| t.retry_max_backoff_seconds))
    .bind(column(&|t| t.retry_jitter_percent))
    .bind(column(&|t| t.max_lease_losses))
    .fetch_all(executor)
    .await?;
    let stored: std::collections::HashMap<Uuid, DateTime<Utc>> = rows.into_iter().collect();
    Ok(ids
        .iter()
        .zip(tasks)
        .filter_map(|(id, (_, task))| Some(task.queued(*id, *stored.get(id)?)))
        .collect())
}

pub async fn find(
    executor: impl PgExecutor<'_>,
    team_id: Uuid,
    id: Uuid,
) -> Result<Option<TaskRow>, sqlx::Error> {
    sqlx::query_as::<_, TaskRow>(concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks WHERE id = $1 AND team_id = $2"
    ))
    .bind(id)
    .bind(team_id)
    .fetch_optional(executor)
    .await
}

/// Filters and page position of a listing. Pages are ordered newest first (by id, UUIDv7).
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub state: Option<String>,
    pub pool: Option<String>,
    /// Only tasks with an id strictly below this one (the last id of the previous page).
    pub before_id: Option<Uuid>,
    pub limit: i64,
}

/// A page of a team's tasks, newest first. Each state is read from its own range of the index
/// `(team_id, state, id DESC)` (at most `limit` rows each) and the ranges are merged, so a page
/// costs the same however many tasks the team has, with one index on a team's tasks instead of
/// two (every index is written again at each state change of a task).
pub async fn list(
    executor: impl PgExecutor<'_>,
    team_id: Uuid,
    filter: &ListFilter,
) -> Result<Vec<TaskRow>, sqlx::Error> {
    let states: Vec<&str> = match filter.state.as_deref() {
        Some(state) => vec![state],
        None => TaskState::ALL.iter().map(|state| state.as_str()).collect(),
    };
    sqlx::query_as::<_, TaskRow>(concat!(
        "SELECT ",
        task_columns!(),
        " FROM unnest($2::text[]) AS s(wanted)
         CROSS JOIN LATERAL (
             SELECT * FROM tasks t
             WHERE t.team_id = $1 AND t.state = s.wanted
               AND ($3::text IS NULL OR t.pool = $3)
               AND ($4::uuid IS NULL OR t.id < $4)
             ORDER BY t.id DESC
             LIMIT $5
         ) page
         ORDER BY id DESC
         LIMIT $5"
    ))
    .bind(team_id)
    .bind(&states)
    .bind(&filter.pool)
    .bind(filter.before_id)
    .bind(filter.limit)
    .fetch_all(executor)
    .await
}

/// Number of tasks per state, over all teams (for metrics).
pub async fn count_by_state(
    executor: impl PgExecutor<'_>,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT state, count(*) FROM tasks GROUP BY state")
        .fetch_all(executor)
        .await
}

/// Queued tasks per pool, the deepest `limit` pools (for metrics).
pub async fn queue_depth_by_pool(
    executor: impl PgExecutor<'_>,
    limit: i64,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT pool, count(*) AS depth FROM tasks WHERE state = 'queued'
         GROUP BY pool ORDER BY depth DESC, pool LIMIT $1",
    )
    .bind(limit)
    .fetch_all(executor)
    .await
}
