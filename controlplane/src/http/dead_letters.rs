//! `/v1/dead-letters`: tasks that ran out of attempts, and their redrive.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::TeamCaller;
use super::problem::{ApiError, ApiJson, ApiQuery};
use super::state::AppState;
use super::tasks::{TaskPage, decode_cursor, encode_cursor};
use crate::model::task::Task;
use crate::store;
use crate::store::tasks::ListFilter;

const DEFAULT_PAGE_SIZE: u32 = 50;
const MAX_PAGE_SIZE: u32 = 200;
pub const MAX_REDRIVE: usize = 100;

/// Paging of `GET /v1/dead-letters`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListDeadLettersQuery {
    /// Page size.
    #[param(minimum = 1, maximum = 200, default = 50)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(max_length = 64)]
    pub cursor: Option<String>,
}

/// Tasks to queue again.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedriveRequest {
    /// Dead tasks of the calling team (1 to 100).
    #[schema(min_items = 1, max_items = 100)]
    pub task_ids: Vec<Uuid>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RedriveResponse {
    /// The tasks queued again, with fresh attempts.
    pub redriven: Vec<Task>,
    /// Ids that are not dead tasks of the team (unknown, another team's, or not dead).
    pub skipped: Vec<Uuid>,
}

/// List the calling team's dead letters (tasks whose attempts are exhausted), newest first.
#[utoipa::path(get, path = "/v1/dead-letters", tag = "tasks", security(("api_key" = [])),
    params(ListDeadLettersQuery),
    responses(
        (status = 200, description = "One page of dead tasks", body = TaskPage),
        (status = 400, description = "Bad cursor or limit", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a team key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_dead_letters(
    State(state): State<AppState>,
    caller: TeamCaller,
    ApiQuery(query): ApiQuery<ListDeadLettersQuery>,
) -> Result<axum::Json<TaskPage>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE_SIZE}"
        )));
    }
    let before_id = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let filter = ListFilter {
        state: Some("dead".to_owned()),
        pool: None,
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

/// Queue dead tasks again (one or many), with their attempts reset.
#[utoipa::path(post, path = "/v1/dead-letters/redrive", tag = "tasks", security(("api_key" = [])),
    request_body = RedriveRequest,
    responses(
        (status = 200, description = "What was redriven and what was skipped", body = RedriveResponse),
        (status = 400, description = "Malformed request", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a team key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid request", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn redrive(
    State(state): State<AppState>,
    caller: TeamCaller,
    ApiJson(request): ApiJson<RedriveRequest>,
) -> Result<axum::Json<RedriveResponse>, ApiError> {
    if request.task_ids.is_empty() || request.task_ids.len() > MAX_REDRIVE {
        return Err(ApiError::Unprocessable(format!(
            "task_ids must have 1 to {MAX_REDRIVE} items"
        )));
    }
    let rows = store::leases::redrive(&state.db, caller.team_id, &request.task_ids).await?;
    if !rows.is_empty() {
        state.queue.announce_queued().await;
    }
    let redriven = rows
        .into_iter()
        .map(Task::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    let mut skipped: Vec<Uuid> = request
        .task_ids
        .iter()
        .filter(|id| !redriven.iter().any(|task| task.id == **id))
        .copied()
        .collect();
    skipped.sort();
    skipped.dedup();
    Ok(axum::Json(RedriveResponse { redriven, skipped }))
}
