//! The `teams` table.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, FromRow)]
pub struct TeamRow {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateTeamError {
    #[error("a team named {0:?} already exists")]
    NameTaken(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

pub async fn create(pool: &PgPool, name: &str) -> Result<TeamRow, CreateTeamError> {
    sqlx::query_as::<_, TeamRow>(
        "WITH team AS (
             INSERT INTO teams (id, name) VALUES ($1, $2) RETURNING id, name, created_at
         ),
         counter AS (INSERT INTO team_usage (team_id) SELECT id FROM team)
         SELECT id, name, created_at FROM team",
    )
    .bind(Uuid::now_v7())
    .bind(name)
    .fetch_one(pool)
    .await
    .map_err(|error| {
        if super::is_unique_violation(&error) {
            CreateTeamError::NameTaken(name.to_owned())
        } else {
            CreateTeamError::Database(error)
        }
    })
}

pub async fn find(pool: &PgPool, id: Uuid) -> Result<Option<TeamRow>, sqlx::Error> {
    sqlx::query_as::<_, TeamRow>("SELECT id, name, created_at FROM teams WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Sets a team's concurrency quota (`None`: no cap) and fair-share weight. A new quota is
/// checked against an exact count of the team's leased tasks (its counter is kept only while it
/// has a quota), recounted in the same transaction.
pub async fn set_scheduling(
    pool: &PgPool,
    id: Uuid,
    max_concurrent_tasks: Option<i32>,
    share: i32,
) -> Result<(), sqlx::Error> {
    let mut transaction = pool.begin().await?;
    sqlx::query("UPDATE teams SET max_concurrent_tasks = $2, share = $3 WHERE id = $1")
        .bind(id)
        .bind(max_concurrent_tasks)
        .bind(share)
        .execute(&mut *transaction)
        .await?;
    if max_concurrent_tasks.is_some() {
        super::usage::recount_team(&mut transaction, id).await?;
    }
    transaction.commit().await?;
    Ok(())
}
