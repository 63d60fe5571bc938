//! `/v1/workflows`: submit a workflow (a DAG of named tasks) and read it back. The rules are
//! in `crate::model::workflow`.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::auth::TeamCaller;
use super::problem::{ApiError, ApiJson, ApiPath};
use super::state::AppState;
use crate::model::workflow::{CreateWorkflowRequest, Workflow, validate};
use crate::store;

/// Submit a workflow: a DAG of named tasks.
#[utoipa::path(post, path = "/v1/workflows", tag = "tasks", security(("api_key" = [])),
    request_body = CreateWorkflowRequest,
    responses(
        (status = 201, description = "Workflow created; tasks without dependencies are queued", body = Workflow, headers(("Location" = String, description = "URL of the workflow"))),
        (status = 400, description = "Malformed request", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a team key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid workflow: unknown dependency, cycle, duplicate name or invalid task", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_workflow(
    State(state): State<AppState>,
    caller: TeamCaller,
    ApiJson(request): ApiJson<CreateWorkflowRequest>,
) -> Result<Response, ApiError> {
    let tasks = validate(&request)?;
    let (workflow, rows) = store::workflows::insert(
        &state.db,
        caller.team_id,
        request.name.as_deref(),
        request.failure_policy.as_str(),
        &tasks,
    )
    .await?;
    state.queue.announce_queued().await;
    let workflow = store::workflows::to_model(workflow, rows)?;
    let location = format!("/v1/workflows/{}", workflow.id);
    let mut response = (StatusCode::CREATED, axum::Json(workflow)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// Read a workflow: each task's state and result, and the aggregate state.
#[utoipa::path(get, path = "/v1/workflows/{workflow_id}", tag = "tasks", security(("api_key" = [])),
    params(("workflow_id" = Uuid, Path, description = "Workflow id")),
    responses(
        (status = 200, description = "The workflow", body = Workflow),
        (status = 400, description = "Malformed workflow id", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a team key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such workflow for this team", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_workflow(
    State(state): State<AppState>,
    caller: TeamCaller,
    ApiPath(workflow_id): ApiPath<Uuid>,
) -> Result<axum::Json<Workflow>, ApiError> {
    let (workflow, tasks) = store::workflows::find(&state.db, caller.team_id, workflow_id)
        .await?
        .ok_or(ApiError::NotFound("workflow"))?;
    Ok(axum::Json(store::workflows::to_model(workflow, tasks)?))
}
