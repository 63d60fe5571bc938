//! `/v1/tasks`: submit, read, list and cancel the calling team's tasks.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::TeamCaller;
use super::problem::{ApiError, ApiJson, ApiPath, ApiQuery, PROBLEM_CONTENT_TYPE};
use super::state::AppState;
use crate::model::submission::{
    BatchError, BatchItem, CreateTaskBatchRequest, ItemError, MAX_IDEMPOTENCY_KEY_BYTES,
    Submission, TaskBatchResponse, parse_batch, valid_idempotency_key,
};
use crate::model::task::{Attempt, CreateTaskRequest, Task, TaskState};
use crate::queue::submit::{OnKeyReused, Outcome, SubmitError};
use crate::store;
use crate::store::leases::CancelOutcome;
use crate::store::tasks::ListFilter;

const DEFAULT_PAGE_SIZE: u32 = 50;
const MAX_PAGE_SIZE: u32 = 200;

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
        .filter(|key| valid_idempotency_key(key))
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

/// The response first given to an idempotency key, again.
fn replay(status: u16, body: &serde_json::Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let location = body
        .get("id")
        .and_then(|id| id.as_str())
        .map(|id| format!("/v1/tasks/{id}"));
    let mut response = json_response(status, body, location.as_deref());
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
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
        (status = 400, description = "Malformed request", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a team key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid task or reused idempotency key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_task(
    State(state): State<AppState>,
    caller: TeamCaller,
    headers: HeaderMap,
    ApiJson(request): ApiJson<CreateTaskRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let submission = Submission::new(key, &request)?;
    // Stored together with the other submissions waiting; answered after the commit.
    match state.queue.submit_one(caller.team_id, submission).await? {
        Outcome::Created(task) => {
            let body =
                serde_json::to_value(&task).map_err(|e| ApiError::Internal(e.to_string()))?;
            let location = format!("/v1/tasks/{}", task.id);
            Ok(json_response(StatusCode::CREATED, &body, Some(&location)))
        }
        Outcome::Replayed { status, body } => Ok(replay(status, &body)),
        Outcome::KeyReused => Err(ApiError::IdempotencyMismatch),
    }
}

/// Submit up to 1,000 tasks at once, all stored or none.
///
/// The tasks are stored for the calling team in one statement, in one transaction with their
/// idempotency records. Any invalid item refuses the whole batch with a 422 whose `errors` name
/// every bad item by its position (from 0). An item's `idempotency_key` works like the
/// `Idempotency-Key` of `POST /v1/tasks` (the same keys): used before (in any request, or earlier
/// in this batch) with the same task, the item gives the task created first (`replayed`) and
/// creates nothing; with another task, the batch is refused. The answer lists the items in
/// order: 201 when at least one task was created, 200 when every item was replayed.
#[utoipa::path(post, path = "/v1/tasks/batch", tag = "tasks", security(("api_key" = [])),
    request_body = CreateTaskBatchRequest,
    responses(
        (status = 200, description = "Every item was replayed: nothing new", body = TaskBatchResponse),
        (status = 201, description = "Tasks queued", body = TaskBatchResponse),
        (status = 400, description = "Malformed request", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a team key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "An idempotency key stayed contended by concurrent requests; retry", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid items (each named in `errors`) or an idempotency key reused with another task; nothing stored", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_task_batch(
    State(state): State<AppState>,
    caller: TeamCaller,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    let submissions = parse_batch(&body).map_err(|error| match error {
        BatchError::Body(invalid) => ApiError::from(invalid),
        BatchError::Items(errors) => ApiError::InvalidItems(errors),
    })?;
    let items: Vec<(Uuid, &Submission)> = submissions
        .iter()
        .map(|submission| (caller.team_id, submission))
        .collect();
    let outcomes = match state.queue.submit(&items, OnKeyReused::StoreNothing).await {
        Ok(outcomes) => outcomes,
        Err(SubmitError::KeysReused(indexes)) => {
            return Err(ApiError::InvalidItems(
                indexes
                    .into_iter()
                    .map(|index| ItemError {
                        index,
                        detail: format!(
                            "idempotency_key {:?} was first used with a different task",
                            submissions[index]
                                .idempotency_key
                                .as_deref()
                                .unwrap_or_default()
                        ),
                    })
                    .collect(),
            ));
        }
        Err(error) => return Err(error.into()),
    };
    let mut created = false;
    let mut answer = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        answer.push(match outcome {
            Outcome::Created(task) => {
                created = true;
                BatchItem {
                    task: *task,
                    replayed: false,
                }
            }
            Outcome::Replayed { body, .. } => BatchItem {
                task: serde_json::from_value(body)
                    .map_err(|e| ApiError::Internal(format!("a stored response: {e}")))?,
                replayed: true,
            },
            Outcome::KeyReused => {
                return Err(ApiError::Internal(
                    "a reused key outside all-or-nothing".to_owned(),
                ));
            }
        });
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(TaskBatchResponse { items: answer })).into_response())
}

/// Read one task of the calling team.
#[utoipa::path(get, path = "/v1/tasks/{task_id}", tag = "tasks", security(("api_key" = [])),
    params(("task_id" = Uuid, Path, description = "Task id")),
    responses(
        (status = 200, description = "The task", body = Task),
        (status = 400, description = "Malformed task id", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a team key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task for this team", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_task(
    State(state): State<AppState>,
    caller: TeamCaller,
    ApiPath(task_id): ApiPath<Uuid>,
) -> Result<axum::Json<Task>, ApiError> {
    let row = store::tasks::find(&state.db, caller.team_id, task_id)
        .await?
        .ok_or(ApiError::NotFound("task"))?;
    Ok(axum::Json(row.try_into()?))
}

/// List the calling team's tasks, newest first.
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", security(("api_key" = [])),
    params(ListTasksQuery),
    responses(
        (status = 200, description = "One page of tasks", body = TaskPage),
        (status = 400, description = "Bad filter or cursor", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a team key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::http::problem::Problem, content_type = "application/problem+json"),
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
    let mut rows = store::tasks::list(&state.db, caller.team_id, &filter).await?;
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
        (status = 400, description = "Malformed task id", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a team key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task for this team", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The task already finished", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn cancel_task(
    State(state): State<AppState>,
    caller: TeamCaller,
    ApiPath(task_id): ApiPath<Uuid>,
) -> Result<axum::Json<Task>, ApiError> {
    match store::leases::cancel(&state.db, caller.team_id, task_id).await? {
        CancelOutcome::Cancelled(row) => {
            let task = Task::try_from(row)?;
            state.queue.publish_event("cancelled", &task).await;
            Ok(axum::Json(task))
        }
        CancelOutcome::AlreadyFinished(row) => Err(ApiError::Conflict(format!(
            "the task already finished in state {}",
            row.state
        ))),
        CancelOutcome::NotFound => Err(ApiError::NotFound("task")),
    }
}

/// The attempts of one task of the calling team, oldest first.
#[utoipa::path(get, path = "/v1/tasks/{task_id}/attempts", tag = "tasks", security(("api_key" = [])),
    params(("task_id" = Uuid, Path, description = "Task id")),
    responses(
        (status = 200, description = "The attempts", body = Vec<Attempt>),
        (status = 400, description = "Malformed task id", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a team key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task for this team", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_attempts(
    State(state): State<AppState>,
    caller: TeamCaller,
    ApiPath(task_id): ApiPath<Uuid>,
) -> Result<axum::Json<Vec<Attempt>>, ApiError> {
    if store::tasks::find(&state.db, caller.team_id, task_id)
        .await?
        .is_none()
    {
        return Err(ApiError::NotFound("task"));
    }
    let rows = store::leases::attempts(&state.db, caller.team_id, task_id).await?;
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
