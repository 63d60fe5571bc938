//! The `api_keys` table. Keys are stored as sha256 digests only.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

use crate::model::api_key::{ApiKeySecret, hash_key};

#[derive(Debug, Clone, FromRow)]
pub struct ApiKeyRow {
    pub id: Uuid,
    pub team_id: Uuid,
    pub name: String,
    pub key_prefix: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A key just created: its row and the secret, which is shown this one time only.
#[derive(Debug)]
pub struct CreatedApiKey {
    pub row: ApiKeyRow,
    pub secret: ApiKeySecret,
}

macro_rules! key_columns {
    () => {
        "id, team_id, name, key_prefix, created_at, revoked_at"
    };
}

/// Creates a key for `team_id`; `None` when the team does not exist.
pub async fn create(
    pool: &PgPool,
    team_id: Uuid,
    name: &str,
) -> Result<Option<CreatedApiKey>, sqlx::Error> {
    let secret = ApiKeySecret::generate();
    let row = sqlx::query_as::<_, ApiKeyRow>(concat!(
        "INSERT INTO api_keys (id, team_id, name, key_prefix, key_hash)
         SELECT $1, id, $3, $4, $5 FROM teams WHERE id = $2
         RETURNING ",
        key_columns!()
    ))
    .bind(Uuid::now_v7())
    .bind(team_id)
    .bind(name)
    .bind(secret.display_prefix())
    .bind(hash_key(secret.expose()).as_slice())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|row| CreatedApiKey { row, secret }))
}

/// Revokes a key (idempotent); `None` when no such key exists (for `team_id` when given).
pub async fn revoke(
    pool: &PgPool,
    key_id: Uuid,
    team_id: Option<Uuid>,
) -> Result<Option<ApiKeyRow>, sqlx::Error> {
    sqlx::query_as::<_, ApiKeyRow>(concat!(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
         WHERE id = $1 AND ($2::uuid IS NULL OR team_id = $2)
         RETURNING ",
        key_columns!()
    ))
    .bind(key_id)
    .bind(team_id)
    .fetch_optional(pool)
    .await
}

/// The active (not revoked) key whose digest is `key_hash`.
pub async fn find_active_by_hash(
    pool: &PgPool,
    key_hash: &[u8],
) -> Result<Option<ApiKeyRow>, sqlx::Error> {
    sqlx::query_as::<_, ApiKeyRow>(concat!(
        "SELECT ",
        key_columns!(),
        " FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL"
    ))
    .bind(key_hash)
    .fetch_optional(pool)
    .await
}
