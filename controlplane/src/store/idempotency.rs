//! The `idempotency_keys` table: the first response given to an `Idempotency-Key`.

use sqlx::types::Json;
use sqlx::{FromRow, PgExecutor};
use uuid::Uuid;

#[derive(Debug, Clone, FromRow)]
pub struct StoredResponse {
    pub request_hash: Vec<u8>,
    pub response_status: i16,
    pub response_body: Json<serde_json::Value>,
}

pub async fn find(
    executor: impl PgExecutor<'_>,
    team_id: Uuid,
    key: &str,
) -> Result<Option<StoredResponse>, sqlx::Error> {
    sqlx::query_as::<_, StoredResponse>(
        "SELECT request_hash, response_status, response_body FROM idempotency_keys
         WHERE team_id = $1 AND idempotency_key = $2",
    )
    .bind(team_id)
    .bind(key)
    .fetch_optional(executor)
    .await
}

/// Records the response; false when the key was recorded concurrently by another request.
pub async fn record(
    executor: impl PgExecutor<'_>,
    team_id: Uuid,
    key: &str,
    request_hash: &[u8],
    status: u16,
    body: &serde_json::Value,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (team_id, idempotency_key, request_hash, response_status, response_body)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(team_id)
    .bind(key)
    .bind(request_hash)
    .bind(i16::try_from(status).unwrap_or(i16::MAX))
    .bind(Json(body))
    .execute(executor)
    .await?;
    Ok(inserted.rows_affected() == 1)
}
