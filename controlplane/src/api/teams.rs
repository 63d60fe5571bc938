//! `/v1/teams`: the administrator creates teams and their API keys, and revokes keys.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::AdminCaller;
use crate::db;
use crate::db::teams::CreateTeamError;
use crate::problem::{ApiError, ApiJson, ApiPath};
use crate::state::AppState;

/// Checks a human-readable name (teams, keys): 1-100 characters, no control characters.
pub fn validate_name(name: &str) -> Result<(), ApiError> {
    let length = name.chars().count();
    if !(1..=100).contains(&length) || name.chars().any(char::is_control) || name.trim() != name {
        return Err(ApiError::Unprocessable(
            "name must have 1-100 characters, no control characters and no surrounding spaces"
                .to_owned(),
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTeamRequest {
    #[schema(min_length = 1, max_length = 100, example = "payments")]
    pub name: String,
    /// At most this many of the team's tasks are leased at once (all pools); none: no cap.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100000)]
    pub max_concurrent_tasks: Option<u32>,
    /// Fair-share weight: a team with share 2 gets twice the leased tasks of a team with 1 when
    /// both have a backlog.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1000, default = 1)]
    pub share: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Team {
    pub id: Uuid,
    pub name: String,
    pub max_concurrent_tasks: Option<i32>,
    pub share: i32,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    #[schema(min_length = 1, max_length = 100, example = "ci")]
    pub name: String,
}

/// A new API key. `key` is shown only in this response; the server keeps only its hash.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiKey {
    pub id: Uuid,
    pub team_id: Uuid,
    pub name: String,
    /// The first characters of the key, to recognise it later.
    pub prefix: String,
    /// The secret key: send it as `Authorization: Bearer <key>`.
    pub key: String,
    pub created_at: DateTime<Utc>,
}

/// Create a team (admin only).
#[utoipa::path(post, path = "/v1/teams", tag = "admin", security(("api_key" = [])),
    request_body = CreateTeamRequest,
    responses(
        (status = 201, description = "Team created", body = Team),
        (status = 400, description = "Malformed request", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the admin key", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Name taken", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid name", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::problem::Problem, content_type = "application/problem+json"),
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
    let row = db::teams::create(&state.db, &request.name)
        .await
        .map_err(|error| match error {
            CreateTeamError::NameTaken(name) => {
                ApiError::Conflict(format!("a team named {name:?} already exists"))
            }
            CreateTeamError::Database(error) => ApiError::Database(error),
        })?;
    db::teams::set_scheduling(&state.db, row.id, quota, share as i32).await?;
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
        (status = 400, description = "Malformed request", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the admin key", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such team", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid name", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_key(
    State(state): State<AppState>,
    _admin: AdminCaller,
    ApiPath(team_id): ApiPath<Uuid>,
    ApiJson(request): ApiJson<CreateApiKeyRequest>,
) -> Result<(StatusCode, axum::Json<CreatedApiKey>), ApiError> {
    validate_name(&request.name)?;
    let created = db::api_keys::create(&state.db, team_id, &request.name)
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

/// Revoke an API key (admin only). Takes effect on the next request; revoking twice is fine.
#[utoipa::path(delete, path = "/v1/teams/{team_id}/keys/{key_id}", tag = "admin", security(("api_key" = [])),
    params(("team_id" = Uuid, Path, description = "Team id"), ("key_id" = Uuid, Path, description = "Key id")),
    responses(
        (status = 204, description = "Key revoked"),
        (status = 400, description = "Malformed id", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the admin key", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such key for this team", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn revoke_key(
    State(state): State<AppState>,
    _admin: AdminCaller,
    ApiPath((team_id, key_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    db::api_keys::revoke(&state.db, key_id, Some(team_id))
        .await?
        .ok_or(ApiError::NotFound("API key"))?;
    Ok(StatusCode::NO_CONTENT)
}
