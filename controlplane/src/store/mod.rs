//! Postgres: the pool, the embedded migrations and one repository module per table.

pub mod api_keys;
pub mod backlog;
pub mod idempotency;
pub mod leases;
pub mod tasks;
pub mod teams;
pub mod usage;
pub mod workflows;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// The migrations in `controlplane/migrations/`, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Opens a connection pool to `database_url`.
///
/// Its sessions run with `jit = off`: the claim statement's row estimates pass Postgres's JIT
/// thresholds, and compiling it took 0.9 s of CPU per call (measured with `EXPLAIN ANALYZE` on
/// Postgres 15) for a statement that runs in milliseconds; no query of ours scans enough rows
/// for JIT to pay.
pub async fn connect(database_url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options = database_url
        .parse::<PgConnectOptions>()?
        .options([("jit", "off")]);
    pool_options(max_connections).connect_with(options).await
}

/// The settings of every pool of the server (`connect`, `leases::claim_pool`): at most
/// `max_connections`, and a request waits at most 5 s for one.
pub(crate) fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
}

/// Applies the pending migrations.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// True when every embedded migration has been applied successfully.
pub async fn migrations_applied(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let applied: Vec<i64> = match sqlx::query_scalar(
        "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
    )
    .fetch_all(pool)
    .await
    {
        Ok(versions) => versions,
        // 42P01: the migrations table does not exist yet.
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42P01") => {
            return Ok(false);
        }
        Err(error) => return Err(error),
    };
    Ok(MIGRATOR
        .iter()
        .filter(|migration| migration.migration_type.is_up_migration())
        .all(|migration| applied.binary_search(&migration.version).is_ok()))
}

/// True when `error` is a violation of a unique constraint.
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}
