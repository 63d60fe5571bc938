//! The autoscaler's reading of the queue: per pool, the tasks ready to run and the tasks being
//! run (both counted from partial indexes: `tasks_claimable` and `tasks_lease_expiry`).

use std::collections::HashMap;

use sqlx::PgExecutor;

/// The work a pool holds right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolBacklog {
    /// Queued tasks whose `run_at` has come (retries waiting for their backoff are not counted).
    pub ready: u64,
    /// Leased or running tasks.
    pub in_flight: u64,
}

impl PoolBacklog {
    /// What the pool has to hold: the tasks ready to run plus those it runs.
    pub fn total(&self) -> u64 {
        self.ready + self.in_flight
    }
}

/// The backlog of each of `pools`; pools without tasks are absent from the map.
pub async fn by_pool(
    executor: impl PgExecutor<'_>,
    pools: &[String],
) -> Result<HashMap<String, PoolBacklog>, sqlx::Error> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT pool,
                count(*) FILTER (WHERE state = 'queued' AND run_at <= now()),
                count(*) FILTER (WHERE state IN ('leased', 'running'))
         FROM tasks
         WHERE pool = ANY($1) AND state IN ('queued', 'leased', 'running')
         GROUP BY pool",
    )
    .bind(pools)
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(pool, ready, in_flight)| {
            let count = |value: i64| u64::try_from(value).unwrap_or(0);
            (
                pool,
                PoolBacklog {
                    ready: count(ready),
                    in_flight: count(in_flight),
                },
            )
        })
        .collect())
}
