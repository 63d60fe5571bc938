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

/// The stored responses of `keys` (of one team) that exist, by key.
pub async fn find_many(
    executor: impl PgExecutor<'_>,
    team_id: Uuid,
    keys: &[&str],
) -> Result<Vec<(String, StoredResponse)>, sqlx::Error> {
    #[derive(FromRow)]
    struct Row {
        idempotency_key: String,
        #[sqlx(flatten)]
        stored: StoredResponse,
    }
    let rows = sqlx::query_as::<_, Row>(
        "SELECT idempotency_key, request_hash, response_status, response_body
         FROM idempotency_keys WHERE team_id = $1 AND idempotency_key = ANY($2)",
    )
    .bind(team_id)
    .bind(keys)
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.idempotency_key, row.stored))
        .collect())
}

/// A response to record under a key.
pub struct NewRecord<'a> {
    pub team_id: Uuid,
    pub key: &'a str,
    pub request_hash: &'a [u8],
    pub status: u16,
    pub body: &'a serde_json::Value,
}

/// Records responses in one statement. Returns how many were recorded: fewer than given when
/// some keys were recorded concurrently by another request.
pub async fn record_many(
    executor: impl PgExecutor<'_>,
    records: &[NewRecord<'_>],
) -> Result<u64, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (team_id, idempotency_key, request_hash, response_status, response_body)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::bytea[], $4::smallint[], $5::jsonb[])
         ON CONFLICT DO NOTHING",
    )
    .bind(records.iter().map(|r| r.team_id).collect::<Vec<_>>())
    .bind(records.iter().map(|r| r.key).collect::<Vec<_>>())
    .bind(records.iter().map(|r| r.request_hash).collect::<Vec<_>>())
    .bind(
        records
            .iter()
            .map(|r| i16::try_from(r.status).unwrap_or(i16::MAX))
            .collect::<Vec<_>>(),
    )
    .bind(records.iter().map(|r| Json(r.body)).collect::<Vec<_>>())
    .execute(executor)
    .await?;
    Ok(inserted.rows_affected())
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
