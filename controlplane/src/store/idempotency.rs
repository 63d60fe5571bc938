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
