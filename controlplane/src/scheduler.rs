//! The server's background work for leasing: the LISTEN/NOTIFY listener that wakes long-polling
//! lease requests, and the reaper that ends expired leases.

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::task::JoinHandle;

use crate::state::AppState;

/// The channel the `tasks_notify_queued` trigger notifies, with the pool as payload.
pub const QUEUED_CHANNEL: &str = "stacksmith_task_queued";
const REAP_BATCH: i64 = 500;
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Starts the listener and the reaper; the caller aborts them at shutdown.
pub fn spawn_background(state: &AppState) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(listen(state.clone())),
        tokio::spawn(reap(state.clone())),
    ]
}

/// Wakes every waiting lease request when a task becomes queued. When Postgres notifications
/// are unavailable, waiting requests still poll at `scheduler.poll_interval_ms`.
async fn listen(state: AppState) {
    loop {
        match PgListener::connect_with(&state.db).await {
            Ok(mut listener) => match listener.listen(QUEUED_CHANNEL).await {
                Ok(()) => loop {
                    match listener.recv().await {
                        Ok(_) => state.task_queued.notify_waiters(),
                        Err(error) => {
                            tracing::warn!(%error, "task notifications interrupted; lease requests poll meanwhile");
                            break;
                        }
                    }
                },
                Err(error) => tracing::warn!(%error, "cannot LISTEN for task notifications"),
            },
            Err(error) => tracing::warn!(%error, "cannot connect the task notification listener"),
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

/// Ends expired leases: each counts as a failed attempt (retried after the backoff, or dead).
async fn reap(state: AppState) {
    let mut interval = tokio::time::interval(Duration::from_millis(
        state.config.scheduler.reaper_interval_ms,
    ));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match crate::db::scheduler::reap_expired(&state.db, REAP_BATCH).await {
            Ok(reaped) if !reaped.is_empty() => {
                crate::metrics::record_reaped(reaped.len());
                for task in &reaped {
                    tracing::info!(task_id = %task.id, state = %task.state, "lease expired");
                    if task.state == "dead" {
                        metrics::counter!(crate::metrics::DEAD_LETTERS, "pool" => task.pool.clone())
                            .increment(1);
                    } else {
                        metrics::counter!(crate::metrics::RETRIES, "pool" => task.pool.clone())
                            .increment(1);
                    }
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot reap expired leases"),
        }
    }
}
