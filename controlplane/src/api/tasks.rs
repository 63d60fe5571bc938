//! `/v1/tasks`: submit, read, list and cancel the calling team's tasks.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::TeamCaller;
use crate::db;
use crate::db::tasks::{CancelOutcome, ListFilter, NewTask, TaskRow};
use crate::problem::{ApiError, ApiJson, ApiPath, ApiQuery, PROBLEM_CONTENT_TYPE};
use crate::state::AppState;

pub const MAX_ARGV_ITEMS: usize = 256;
pub const MAX_ARG_BYTES: usize = 4096;
pub const MAX_ARGV_TOTAL_BYTES: usize = 64 * 1024;
pub const MAX_ENV_ENTRIES: usize = 128;
pub const MAX_ENV_NAME_BYTES: usize = 256;
pub const MAX_ENV_VALUE_BYTES: usize = 8192;
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;
const DEFAULT_PAGE_SIZE: u32 = 50;
const MAX_PAGE_SIZE: u32 = 200;

/// Lifecycle state of a task: `pending` (a workflow task waiting for its dependencies) ->
/// `queued` -> `leased` -> `succeeded`, or back to `queued` (a failed attempt with attempts left,
/// `run_at` later) or `dead` (attempts exhausted: a dead letter); `cancelled` at any point before
/// a final state. `running` and `failed` are not written (kept for compatibility).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Pending,
    Queued,
    Leased,
    Running,
    Succeeded,
    Failed,
    Dead,
    Cancelled,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Queued => "queued",
            Self::Leased => "leased",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Dead => "dead",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(value: &str) -> Result<Self, ApiError> {
        serde_json::from_value(serde_json::Value::String(value.to_owned())).map_err(|_| {
            ApiError::Internal(format!("unknown task state {value:?} in the database"))
        })
    }
}

/// How often a failed task is tried again. The delay before attempt n+1 is
/// `min(backoff_seconds * 2^(n-1), max_backoff_seconds)`, minus up to `jitter_percent` percent
/// of it at random.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Total attempts including the first one.
    #[serde(default = "default_max_attempts")]
    #[schema(minimum = 1, maximum = 20, default = 1)]
    pub max_attempts: u32,
    /// Delay before the next attempt.
    #[serde(default = "default_backoff_seconds")]
    #[schema(minimum = 0, maximum = 3600, default = 10)]
    pub backoff_seconds: u32,
    /// Upper bound of the delay.
    #[serde(default = "default_max_backoff_seconds")]
    #[schema(minimum = 0, maximum = 86400, default = 3600)]
    pub max_backoff_seconds: u32,
    /// Random reduction of each delay, in percent of it.
    #[serde(default = "default_jitter_percent")]
    #[schema(minimum = 0, maximum = 100, default = 10)]
    pub jitter_percent: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            backoff_seconds: default_backoff_seconds(),
            max_backoff_seconds: default_max_backoff_seconds(),
            jitter_percent: default_jitter_percent(),
        }
    }
}

fn default_max_backoff_seconds() -> u32 {
    3600
}
fn default_jitter_percent() -> u32 {
    10
}

fn default_max_attempts() -> u32 {
    1
}
fn default_backoff_seconds() -> u32 {
    10
}
fn default_timeout_seconds() -> u32 {
    3600
}

/// A task submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTaskRequest {
    /// Worker pool that runs the task: lowercase letters, digits and `-`, at most 63 characters.
    #[schema(
        min_length = 1,
        max_length = 63,
        pattern = "^[a-z0-9][a-z0-9-]*$",
        example = "default"
    )]
    pub pool: String,
    /// The program and its arguments (argv), run without a shell.
    #[schema(min_items = 1, max_items = 256, example = json!(["echo", "hello"]))]
    pub command: Vec<String>,
    /// Environment variables: names match `^[A-Za-z_][A-Za-z0-9_]*$`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Wall-clock limit of one attempt.
    #[serde(default = "default_timeout_seconds")]
    #[schema(minimum = 1, maximum = 86400, default = 3600)]
    pub timeout_seconds: u32,
    /// Higher runs first within a pool.
    #[serde(default)]
    #[schema(minimum = -1000, maximum = 1000, default = 0)]
    pub priority: i32,
    #[serde(default)]
    pub retry: RetryPolicy,
}

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::Unprocessable(detail.into())
}

pub fn valid_pool(pool: &str) -> bool {
    (1..=63).contains(&pool.len())
        && pool
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !pool.starts_with('-')
}

fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    (1..=MAX_ENV_NAME_BYTES).contains(&name.len())
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl CreateTaskRequest {
    /// Checks the limits serde cannot express.
    pub fn validate(&self) -> Result<NewTask, ApiError> {
        if !valid_pool(&self.pool) {
            return Err(invalid(
                "pool must be 1-63 lowercase letters, digits or '-', not starting with '-'",
            ));
        }
        if self.command.is_empty() || self.command.len() > MAX_ARGV_ITEMS {
            return Err(invalid(format!(
                "command must have 1 to {MAX_ARGV_ITEMS} items"
            )));
        }
        if self.command[0].is_empty() {
            return Err(invalid("command[0], the program, must not be empty"));
        }
        let mut total = 0;
        for arg in &self.command {
            if arg.len() > MAX_ARG_BYTES {
                return Err(invalid(format!(
                    "a command item exceeds {MAX_ARG_BYTES} bytes"
                )));
            }
            if arg.contains('\0') {
                return Err(invalid("command items must not contain NUL characters"));
            }
            total += arg.len();
        }
        if total > MAX_ARGV_TOTAL_BYTES {
            return Err(invalid(format!(
                "command exceeds {MAX_ARGV_TOTAL_BYTES} bytes in total"
            )));
        }
        if self.env.len() > MAX_ENV_ENTRIES {
            return Err(invalid(format!(
                "env has more than {MAX_ENV_ENTRIES} entries"
            )));
        }
        for (name, value) in &self.env {
            if !valid_env_name(name) {
                return Err(invalid(format!(
                    "env names must match ^[A-Za-z_][A-Za-z0-9_]*$ and have at most {MAX_ENV_NAME_BYTES} bytes"
                )));
            }
            if value.len() > MAX_ENV_VALUE_BYTES || value.contains('\0') {
                return Err(invalid(format!(
                    "env values must have at most {MAX_ENV_VALUE_BYTES} bytes and no NUL characters"
                )));
            }
        }
        if !(1..=86_400).contains(&self.timeout_seconds) {
            return Err(invalid("timeout_seconds must be between 1 and 86400"));
        }
        if !(-1000..=1000).contains(&self.priority) {
            return Err(invalid("priority must be between -1000 and 1000"));
        }
        if !(1..=20).contains(&self.retry.max_attempts) {
            return Err(invalid("retry.max_attempts must be between 1 and 20"));
        }
        if self.retry.backoff_seconds > 3600 {
            return Err(invalid("retry.backoff_seconds must be between 0 and 3600"));
        }
        if self.retry.max_backoff_seconds > 86_400 {
            return Err(invalid(
                "retry.max_backoff_seconds must be between 0 and 86400",
            ));
        }
        if self.retry.jitter_percent > 100 {
            return Err(invalid("retry.jitter_percent must be between 0 and 100"));
        }
        let to_i32 = |value: u32| i32::try_from(value).map_err(|_| invalid("number out of range"));
        Ok(NewTask {
            pool: self.pool.clone(),
            command: self.command.clone(),
            env: self.env.clone(),
            timeout_seconds: to_i32(self.timeout_seconds)?,
            priority: self.priority,
            max_attempts: to_i32(self.retry.max_attempts)?,
            retry_backoff_seconds: to_i32(self.retry.backoff_seconds)?,
            retry_max_backoff_seconds: to_i32(self.retry.max_backoff_seconds)?,
            retry_jitter_percent: to_i32(self.retry.jitter_percent)?,
        })
    }
}

/// A task as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Task {
    pub id: Uuid,
    pub pool: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub timeout_seconds: i32,
    pub priority: i32,
    pub retry: TaskRetry,
    pub state: TaskState,
    /// Attempts started so far.
    pub attempts: i32,
    /// Earliest time the task may run.
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the task reached a final state.
    pub finished_at: Option<DateTime<Utc>>,
    /// Incremented by every lease; the current lease's token.
    pub fencing_token: i64,
    /// Deadline of the current lease, while leased.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// What the successful attempt reported (any JSON).
    #[schema(value_type = Option<Value>)]
    pub result: Option<serde_json::Value>,
    /// Captured output of the last attempt (bounded).
    pub output: Option<String>,
    /// Exit code of the last attempt's process.
    pub exit_code: Option<i32>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// The workflow this task belongs to.
    pub workflow_id: Option<Uuid>,
    /// The task's name in its workflow.
    pub workflow_task: Option<String>,
    /// Results of the workflow dependencies, by task name (filled when the task is queued).
    #[schema(value_type = Object)]
    pub dependency_results: serde_json::Value,
}

/// The retry policy as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskRetry {
    pub max_attempts: i32,
    pub backoff_seconds: i32,
    pub max_backoff_seconds: i32,
    pub jitter_percent: i32,
}

impl TryFrom<TaskRow> for Task {
    type Error = ApiError;

    fn try_from(row: TaskRow) -> Result<Self, ApiError> {
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
            },
            attempts: row.attempts,
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

/// One page of tasks, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskPage {
    pub items: Vec<Task>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Filters and paging of `GET /v1/tasks`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListTasksQuery {
    /// Only tasks in this state.
    pub state: Option<TaskState>,
    /// Only tasks of this pool.
    #[param(max_length = 63)]
    pub pool: Option<String>,
    /// Page size.
    #[param(minimum = 1, maximum = 200, default = 50)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(max_length = 64)]
    pub cursor: Option<String>,
}

pub fn encode_cursor(id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

pub fn decode_cursor(cursor: &str) -> Result<Uuid, ApiError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| ApiError::BadRequest("invalid cursor".to_owned()))?;
    Uuid::from_slice(&bytes).map_err(|_| ApiError::BadRequest("invalid cursor".to_owned()))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|key| {
            (1..=MAX_IDEMPOTENCY_KEY_BYTES).contains(&key.len())
                && key.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_BYTES} visible ASCII characters"
            ))
        })?;
    Ok(Some(key.to_owned()))
}

fn json_response(status: StatusCode, body: &serde_json::Value, location: Option<&str>) -> Response {
    let content_type = if status.is_client_error() || status.is_server_error() {
        PROBLEM_CONTENT_TYPE
    } else {
        "application/json"
    };
    let mut response = (
        status,
        [(header::CONTENT_TYPE, content_type)],
        body.to_string(),
    )
        .into_response();
    if let Some(location) = location.and_then(|l| HeaderValue::from_str(l).ok()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

fn replay(
    stored: db::idempotency::StoredResponse,
    request_hash: &[u8],
) -> Result<Response, ApiError> {
    if stored.request_hash != request_hash {
        return Err(ApiError::IdempotencyMismatch);
    }
    let status = u16::try_from(stored.response_status)
        .ok()
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(StatusCode::OK);
    let location = stored
        .response_body
        .0
        .get("id")
        .and_then(|id| id.as_str())
        .map(|id| format!("/v1/tasks/{id}"));
    let mut response = json_response(status, &stored.response_body.0, location.as_deref());
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok(response)
}

pub async fn publish_event(state: &AppState, event: &str, task: &Task) {
    let mut redis = state.redis.clone();
    let mut pipeline = redis::pipe();
    pipeline
        .cmd("XADD")
        .arg(state.redis_key("task-events"))
        .arg("MAXLEN")
        .arg("~")
        .arg(100_000)
        .arg("*")
        .arg("event")
        .arg(event)
        .arg("task_id")
        .arg(task.id.to_string())
        .arg("pool")
        .arg(&task.pool)
        .ignore();
    if task.state == TaskState::Queued {
        state.add_queued_announcement(&mut pipeline);
    }
    let result: redis::RedisResult<()> = pipeline.query_async(&mut redis).await;
    if let Err(error) = result {
        // The database is the source of truth; the stream and the announcement only wake
        // schedulers early (the others poll).
        tracing::warn!(%error, task_id = %task.id, "cannot publish the task event to Redis");
    }
}

/// Submit a task.
///
/// With an `Idempotency-Key` header, a repeated request with the same key and body gets the
/// first response again (with `Idempotent-Replayed: true`); the same key with another body is a 422.
#[utoipa::path(post, path = "/v1/tasks", tag = "tasks", security(("api_key" = [])),
    params(("Idempotency-Key" = Option<String>, Header, max_length = 255, description = "Makes retries of this request safe")),
    request_body = CreateTaskRequest,
    responses(
        (status = 201, description = "Task queued", body = Task, headers(("Location" = String, description = "URL of the task"))),
        (status = 400, description = "Malformed request", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a team key", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid task or reused idempotency key", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_task(
    State(state): State<AppState>,
    caller: TeamCaller,
    headers: HeaderMap,
    ApiJson(request): ApiJson<CreateTaskRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let new_task = request.validate()?;
    let canonical = serde_json::to_vec(&request).map_err(|e| ApiError::Internal(e.to_string()))?;
    let request_hash: [u8; 32] = Sha256::digest(&canonical).into();

    if let Some(key) = &key
        && let Some(stored) = db::idempotency::find(&state.db, caller.team_id, key).await?
    {
        return replay(stored, &request_hash);
    }
    let (task, body) = match &key {
        // Without a key a single INSERT suffices (no transaction round trips).
        None => {
            let task =
                Task::try_from(db::tasks::insert(&state.db, caller.team_id, &new_task).await?)?;
            let body =
                serde_json::to_value(&task).map_err(|e| ApiError::Internal(e.to_string()))?;
            (task, body)
        }
        Some(key) => {
            let mut transaction = state.db.begin().await?;
            let task = Task::try_from(
                db::tasks::insert(&mut *transaction, caller.team_id, &new_task).await?,
            )?;
            let body =
                serde_json::to_value(&task).map_err(|e| ApiError::Internal(e.to_string()))?;
            let recorded = db::idempotency::record(
                &mut *transaction,
                caller.team_id,
                key,
                &request_hash,
                StatusCode::CREATED.as_u16(),
                &body,
            )
            .await?;
            if !recorded {
                // A concurrent request with the same key won; answer as it did.
                transaction.rollback().await?;
                let stored = db::idempotency::find(&state.db, caller.team_id, key)
                    .await?
                    .ok_or_else(|| ApiError::Internal("idempotency record vanished".to_owned()))?;
                return replay(stored, &request_hash);
            }
            transaction.commit().await?;
            (task, body)
        }
    };
    publish_event(&state, "created", &task).await;
    let location = format!("/v1/tasks/{}", task.id);
    Ok(json_response(StatusCode::CREATED, &body, Some(&location)))
}

/// Read one task of the calling team.
#[utoipa::path(get, path = "/v1/tasks/{task_id}", tag = "tasks", security(("api_key" = [])),
    params(("task_id" = Uuid, Path, description = "Task id")),
    responses(
        (status = 200, description = "The task", body = Task),
        (status = 400, description = "Malformed task id", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a team key", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task for this team", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_task(
    State(state): State<AppState>,
    caller: TeamCaller,
    ApiPath(task_id): ApiPath<Uuid>,
) -> Result<axum::Json<Task>, ApiError> {
    let row = db::tasks::find(&state.db, caller.team_id, task_id)
        .await?
        .ok_or(ApiError::NotFound("task"))?;
    Ok(axum::Json(row.try_into()?))
}

/// List the calling team's tasks, newest first.
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", security(("api_key" = [])),
    params(ListTasksQuery),
    responses(
        (status = 200, description = "One page of tasks", body = TaskPage),
        (status = 400, description = "Bad filter or cursor", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a team key", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_tasks(
    State(state): State<AppState>,
    caller: TeamCaller,
    ApiQuery(query): ApiQuery<ListTasksQuery>,
) -> Result<axum::Json<TaskPage>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE_SIZE}"
        )));
    }
    if query
        .pool
        .as_ref()
        .is_some_and(|pool| pool.len() > 63 || pool.contains('\0'))
    {
        return Err(ApiError::BadRequest(
            "pool has at most 63 characters".to_owned(),
        ));
    }
    let before_id = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let filter = ListFilter {
        state: query.state.map(|s| s.as_str().to_owned()),
        pool: query.pool,
        before_id,
        limit: i64::from(limit) + 1,
    };
    let mut rows = db::tasks::list(&state.db, caller.team_id, &filter).await?;
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let items = rows
        .into_iter()
        .map(Task::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if has_more {
        items.last().map(|task| encode_cursor(task.id))
    } else {
        None
    };
    Ok(axum::Json(TaskPage { items, next_cursor }))
}

/// Cancel a task. Cancelling a cancelled task returns it unchanged; a finished task is a 409.
#[utoipa::path(post, path = "/v1/tasks/{task_id}/cancel", tag = "tasks", security(("api_key" = [])),
    params(("task_id" = Uuid, Path, description = "Task id")),
    responses(
        (status = 200, description = "The cancelled task", body = Task),
        (status = 400, description = "Malformed task id", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a team key", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task for this team", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The task already finished", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn cancel_task(
    State(state): State<AppState>,
    caller: TeamCaller,
    ApiPath(task_id): ApiPath<Uuid>,
) -> Result<axum::Json<Task>, ApiError> {
    match db::tasks::cancel(&state.db, caller.team_id, task_id).await? {
        CancelOutcome::Cancelled(row) => {
            db::scheduler::end_lease_cancelled(&state.db, row.id).await?;
            if row.workflow_id.is_some() {
                // Dependents can never run now.
                let mut connection = state.db.acquire().await?;
                db::scheduler::stop_dependents(&mut connection, row.id).await?;
            }
            let task = Task::try_from(row)?;
            publish_event(&state, "cancelled", &task).await;
            Ok(axum::Json(task))
        }
        CancelOutcome::AlreadyFinished(row) => Err(ApiError::Conflict(format!(
            "the task already finished in state {}",
            row.state
        ))),
        CancelOutcome::NotFound => Err(ApiError::NotFound("task")),
    }
}

/// One attempt (lease) of a task.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Attempt {
    pub attempt: i32,
    pub lease_id: Uuid,
    pub fencing_token: i64,
    pub worker: Option<String>,
    pub leased_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `succeeded`, `failed`, `expired`, `released` or `cancelled`; absent while leased.
    pub outcome: Option<String>,
    pub error: Option<String>,
    /// When a failed attempt was followed by a retry: the earliest time of the next attempt.
    pub next_run_at: Option<DateTime<Utc>>,
}

/// The attempts of one task of the calling team, oldest first.
#[utoipa::path(get, path = "/v1/tasks/{task_id}/attempts", tag = "tasks", security(("api_key" = [])),
    params(("task_id" = Uuid, Path, description = "Task id")),
    responses(
        (status = 200, description = "The attempts", body = Vec<Attempt>),
        (status = 400, description = "Malformed task id", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a team key", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task for this team", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_attempts(
    State(state): State<AppState>,
    caller: TeamCaller,
    ApiPath(task_id): ApiPath<Uuid>,
) -> Result<axum::Json<Vec<Attempt>>, ApiError> {
    if db::tasks::find(&state.db, caller.team_id, task_id)
        .await?
        .is_none()
    {
        return Err(ApiError::NotFound("task"));
    }
    let rows = db::scheduler::attempts(&state.db, caller.team_id, task_id).await?;
    Ok(axum::Json(
        rows.into_iter()
            .map(|row| Attempt {
                attempt: row.attempt,
                lease_id: row.lease_id,
                fencing_token: row.fencing_token,
                worker: row.worker,
                leased_at: row.leased_at,
                finished_at: row.finished_at,
                outcome: row.outcome,
                error: row.error,
                next_run_at: row.next_run_at,
            })
            .collect(),
    ))
}
