//! `/v1/teams`: the administrator creates teams and their API keys, and revokes keys.

use axum::extract::State;
use axum::http::StatusCode;
use uuid::Uuid;

use super::auth::AdminCaller;
use super::problem::{ApiError, ApiJson, ApiPath};
use super::state::AppState;
use crate::model::team::{
    CreateApiKeyRequest, CreateTeamRequest, CreatedApiKey, Team, validate_name,
};
use crate::store;
use crate::store::teams::CreateTeamError;

/// Create a team (admin only).
#[utoipa::path(post, path = "/v1/teams", tag = "admin", security(("api_key" = [])),
    request_body = CreateTeamRequest,
    responses(
        (status = 201, description = "Team created", body = Team),
        (status = 400, description = "Malformed request", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the admin key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Name taken", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid name", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_team(
    State(state): State<AppState>,
    _admin: AdminCaller,
    ApiJson(request): ApiJson<CreateTeamRequest>,
) -> Result<(StatusCode, axum::Json<Team>), ApiError> {
    validate_name(&request.name)?;
    if request
        .max_concurrent_tasks
        .is_some_and(|quota| !(1..=100_000).contains(&quota))
    {
        return Err(ApiError::Unprocessable(
            "max_concurrent_tasks must be between 1 and 100000".to_owned(),
        ));
    }
    let share = request.share.unwrap_or(1);
    if !(1..=1000).contains(&share) {
        return Err(ApiError::Unprocessable(
            "share must be between 1 and 1000".to_owned(),
        ));
    }
    let quota = request.max_concurrent_tasks.map(|quota| quota as i32);
    let row = store::teams::create(&state.db, &request.name)
        .await
        .map_err(|error| match error {
            CreateTeamError::NameTaken(name) => {
                ApiError::Conflict(format!("a team named {name:?} already exists"))
            }
            CreateTeamError::Database(error) => ApiError::Database(error),
        })?;
    store::teams::set_scheduling(&state.db, row.id, quota, share as i32).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(Team {
            id: row.id,
            name: row.name,
            max_concurrent_tasks: quota,
            share: share as i32,
            created_at: row.created_at,
        }),
    ))
}

/// Create an API key for a team (admin only). The key is in this response only.
#[utoipa::path(post, path = "/v1/teams/{team_id}/keys", tag = "admin", security(("api_key" = [])),
    params(("team_id" = Uuid, Path, description = "Team id")),
    request_body = CreateApiKeyRequest,
    responses(
        (status = 201, description = "Key created", body = CreatedApiKey),
        (status = 400, description = "Malformed request", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the admin key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such team", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid name", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_key(
    State(state): State<AppState>,
    _admin: AdminCaller,
    ApiPath(team_id): ApiPath<Uuid>,
    ApiJson(request): ApiJson<CreateApiKeyRequest>,
) -> Result<(StatusCode, axum::Json<CreatedApiKey>), ApiError> {
    validate_name(&request.name)?;
    let created = store::api_keys::create(&state.db, team_id, &request.name)
        .await?
        .ok_or(ApiError::NotFound("team"))?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedApiKey {
            id: created.row.id,
            team_id: created.row.team_id,
            name: created.row.name,
            prefix: created.row.key_prefix,
            key: created.secret.expose().to_owned(),
            created_at: created.row.created_at,
        }),
    ))
}

/// Revoke an API key (admin only). Takes effect on the next request to this server, and within
/// `api_key_cache_ms` (2 s by default) on every other replica; revoking twice is fine.
#[utoipa::path(delete, path = "/v1/teams/{team_id}/keys/{key_id}", tag = "admin", security(("api_key" = [])),
    params(("team_id" = Uuid, Path, description = "Team id"), ("key_id" = Uuid, Path, description = "Key id")),
    responses(
        (status = 204, description = "Key revoked"),
        (status = 400, description = "Malformed id", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the admin key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such key for this team", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn revoke_key(
    State(state): State<AppState>,
    _admin: AdminCaller,
    ApiPath((team_id, key_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    store::api_keys::revoke(&state.db, key_id, Some(team_id))
        .await?
        .ok_or(ApiError::NotFound("API key"))?;
    state.key_cache.forget_key(key_id);
    Ok(StatusCode::NO_CONTENT)
}
