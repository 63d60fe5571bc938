//! What the control plane's benchmarks share: their knobs and a scratch database.

use std::future::Future;

use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// A whole-number setting from the environment, or `default`.
pub fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `bench` against a fresh database on the test Postgres, dropped afterwards whatever the
/// outcome.
pub async fn with_scratch_database<F, Fut>(bench: F) -> anyhow::Result<()>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let admin_url = stacksmith_testkit::database_url();
    let database = stacksmith_testkit::unique_name("cp_bench");
    let mut admin = PgConnection::connect(&admin_url).await?;
    // The name is generated here (letters, digits, `_`): safe to splice into the statement.
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .execute(&mut admin)
        .await?;
    let (server_part, _) = admin_url
        .rsplit_once('/')
        .expect("database URL with a path");
    let outcome = bench(format!("{server_part}/{database}")).await;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {database} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    outcome
}
