//! The Postgres backend: one row per deployment in `stacksmith_state`, serialized by a
//! session-level `pg_advisory_lock` on a dedicated connection, with the holder's [`LockInfo`] in
//! `stacksmith_state_locks` so waiters can name it. A crashed holder's session ends, which releases
//! the advisory lock by itself.

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Row};

use super::backend::{BackendError, LOCK_POLL_INTERVAL, LockGuard, StateBackend};
use super::{LockInfo, StateDocument, StoredDeployment};
use crate::engine::provider::BoxFuture;

/// Serializes concurrent schema creation.
const SCHEMA_LOCK_KEY: i64 = 0x5354_4b53_4d54_4800;

#[derive(Debug, Clone)]
pub struct PostgresBackend {
    url: String,
    pool: PgPool,
    deployment: String,
}

/// The advisory lock key of a deployment: the first 8 bytes of SHA-256 of its name.
fn lock_key(deployment: &str) -> i64 {
    let digest = Sha256::digest(format!("stacksmith-state:{deployment}").as_bytes());
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

impl PostgresBackend {
    /// Connects and creates the tables when missing.
    pub async fn connect(url: &str, deployment: &str) -> Result<Self, BackendError> {
        let pool = PgPoolOptions::new().max_connections(4).connect(url).await?;
        let mut transaction = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SCHEMA_LOCK_KEY)
            .execute(&mut *transaction)
            .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS stacksmith_state (
                deployment text PRIMARY KEY,
                lineage text NOT NULL,
                serial bigint NOT NULL,
                document jsonb NOT NULL,
                updated_at timestamptz NOT NULL DEFAULT now())",
        )
        .execute(&mut *transaction)
        .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS stacksmith_state_locks (
                deployment text PRIMARY KEY,
                info jsonb NOT NULL,
                backend_pid integer NOT NULL)",
        )
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(Self {
            url: url.to_owned(),
            pool,
            deployment: deployment.to_owned(),
        })
    }

    async fn lock_row(&self) -> Result<Option<(LockInfo, i32)>, BackendError> {
        let row = sqlx::query(
            "SELECT info::text AS info, backend_pid FROM stacksmith_state_locks WHERE deployment = $1",
        )
        .bind(&self.deployment)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let text: String = row.try_get("info")?;
        let pid: i32 = row.try_get("backend_pid")?;
        let info = serde_json::from_str(&text).map_err(|source| BackendError::Corrupt {
            location: format!("stacksmith_state_locks[{}]", self.deployment),
            source,
        })?;
        Ok(Some((info, pid)))
    }

    /// The lock row's holder, when its session still holds the advisory lock.
    async fn live_holder(&self) -> Result<Option<(LockInfo, i32)>, BackendError> {
        let Some((info, pid)) = self.lock_row().await? else {
            return Ok(None);
        };
        let holding: bool = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = $1 AND granted)",
        )
        .bind(pid)
        .fetch_one(&self.pool)
        .await?
        .try_get(0)?;
        Ok(holding.then_some((info, pid)))
    }
}

struct PostgresLock {
    connection: tokio::sync::Mutex<Option<PgConnection>>,
    deployment: String,
    key: i64,
    info: LockInfo,
}

impl LockGuard for PostgresLock {
    fn info(&self) -> &LockInfo {
        &self.info
    }

    fn release(self: Box<Self>) -> BoxFuture<'static, Result<(), BackendError>> {
        Box::pin(async move {
            let Some(mut connection) = self.connection.lock().await.take() else {
                return Ok(());
            };
            sqlx::query(
                "DELETE FROM stacksmith_state_locks WHERE deployment = $1 AND info->>'id' = $2",
            )
            .bind(&self.deployment)
            .bind(&self.info.id)
            .execute(&mut connection)
            .await?;
            sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(self.key)
                .execute(&mut connection)
                .await?;
            connection.close().await?;
            Ok(())
        })
    }
}

impl StateBackend for PostgresBackend {
    fn describe(&self) -> String {
        format!("postgres deployment {}", self.deployment)
    }

    fn lock<'a>(
        &'a self,
        info: LockInfo,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Box<dyn LockGuard>, BackendError>> {
        Box::pin(async move {
            let key = lock_key(&self.deployment);
            let mut connection = PgConnection::connect(&self.url).await?;
            let started = Instant::now();
            loop {
                let acquired: bool = sqlx::query("SELECT pg_try_advisory_lock($1)")
                    .bind(key)
                    .fetch_one(&mut connection)
                    .await?
                    .try_get(0)?;
                if acquired {
                    break;
                }
                if started.elapsed() >= timeout {
                    let _ = connection.close().await;
                    return Err(match self.lock_row().await? {
                        Some((holder, _)) => BackendError::Locked {
                            deployment: self.deployment.clone(),
                            holder: Box::new(holder),
                            waited: started.elapsed(),
                        },
                        None => BackendError::LockedUnknownHolder {
                            deployment: self.deployment.clone(),
                            waited: started.elapsed(),
                        },
                    });
                }
                tokio::time::sleep(LOCK_POLL_INTERVAL).await;
            }
            let body = serde_json::to_string(&info).expect("lock info serializes");
            sqlx::query(
                "INSERT INTO stacksmith_state_locks (deployment, info, backend_pid)
                 VALUES ($1, $2::jsonb, pg_backend_pid())
                 ON CONFLICT (deployment) DO UPDATE SET info = EXCLUDED.info, backend_pid = EXCLUDED.backend_pid",
            )
            .bind(&self.deployment)
            .bind(body)
            .execute(&mut connection)
            .await?;
            Ok(Box::new(PostgresLock {
                connection: tokio::sync::Mutex::new(Some(connection)),
                deployment: self.deployment.clone(),
                key,
                info,
            }) as Box<dyn LockGuard>)
        })
    }

    fn current_lock(&self) -> BoxFuture<'_, Result<Option<LockInfo>, BackendError>> {
        Box::pin(async move { Ok(self.live_holder().await?.map(|(info, _)| info)) })
    }

    fn force_unlock(&self) -> BoxFuture<'_, Result<Option<LockInfo>, BackendError>> {
        Box::pin(async move {
            let holder = self.live_holder().await?;
            if let Some((_, pid)) = &holder {
                // The advisory lock belongs to the holder's session: ending it releases the lock.
                sqlx::query("SELECT pg_terminate_backend($1)")
                    .bind(pid)
                    .execute(&self.pool)
                    .await?;
            }
            sqlx::query("DELETE FROM stacksmith_state_locks WHERE deployment = $1")
                .bind(&self.deployment)
                .execute(&self.pool)
                .await?;
            Ok(holder.map(|(info, _)| info))
        })
    }

    fn load(&self) -> BoxFuture<'_, Result<Option<StateDocument>, BackendError>> {
        Box::pin(async move {
            let row = sqlx::query(
                "SELECT document::text AS document FROM stacksmith_state WHERE deployment = $1",
            )
            .bind(&self.deployment)
            .fetch_optional(&self.pool)
            .await?;
            let Some(row) = row else { return Ok(None) };
            let text: String = row.try_get("document")?;
            serde_json::from_str(&text)
                .map(Some)
                .map_err(|source| BackendError::Corrupt {
                    location: format!("stacksmith_state[{}]", self.deployment),
                    source,
                })
        })
    }

    fn list_deployments(&self) -> BoxFuture<'_, Result<Vec<StoredDeployment>, BackendError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT deployment, document::text AS document FROM stacksmith_state ORDER BY deployment",
            )
            .fetch_all(&self.pool)
            .await?;
            rows.into_iter()
                .map(|row| -> Result<StoredDeployment, BackendError> {
                    let name: String = row.try_get("deployment")?;
                    let text: String = row.try_get("document")?;
                    let document =
                        serde_json::from_str(&text).map_err(|source| BackendError::Corrupt {
                            location: format!("stacksmith_state[{name}]"),
                            source,
                        })?;
                    Ok(StoredDeployment { name, document })
                })
                .collect()
        })
    }

    fn save<'a>(&'a self, document: &'a StateDocument) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let body = serde_json::to_string(document).expect("state serializes");
            let serial = i64::try_from(document.serial).unwrap_or(i64::MAX);
            // Refuse to overwrite a newer serial: that means this run no longer holds the lock.
            let written = sqlx::query(
                "INSERT INTO stacksmith_state (deployment, lineage, serial, document, updated_at)
                 VALUES ($1, $2, $3, $4::jsonb, now())
                 ON CONFLICT (deployment) DO UPDATE
                   SET lineage = EXCLUDED.lineage, serial = EXCLUDED.serial,
                       document = EXCLUDED.document, updated_at = now()
                   WHERE stacksmith_state.serial < EXCLUDED.serial",
            )
            .bind(&self.deployment)
            .bind(&document.lineage)
            .bind(serial)
            .bind(body)
            .execute(&self.pool)
            .await?;
            if written.rows_affected() == 0 {
                let found: i64 =
                    sqlx::query("SELECT serial FROM stacksmith_state WHERE deployment = $1")
                        .bind(&self.deployment)
                        .fetch_one(&self.pool)
                        .await?
                        .try_get(0)?;
                return Err(BackendError::Conflict {
                    deployment: self.deployment.clone(),
                    found: u64::try_from(found).unwrap_or(0),
                    attempted: document.serial,
                });
            }
            Ok(())
        })
    }
}
