//! The reaper: ends expired leases. A lease lost within the task's timeout queues the task again
//! without using an attempt, up to its `max_lease_losses`; otherwise the expiry is a failed
//! attempt (retried after the backoff, or dead). The rule is `store::leases::reap_expired`.
//! Every minute it also sets the lease counters right if they drifted (`store::usage`).

use std::time::Duration;

use super::Queue;
use crate::store::leases::Expiry;

const REAP_BATCH: i64 = 500;
/// How often the lease counters are checked against the tasks (and set right when they drifted).
const RECONCILE_INTERVAL: Duration = Duration::from_secs(60);

/// Ends expired leases every `scheduler.reaper_interval_ms`, until aborted.
pub(super) async fn reap(queue: Queue) {
    let mut interval = tokio::time::interval(Duration::from_millis(
        queue.config.scheduler.reaper_interval_ms,
    ));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_reconcile = tokio::time::Instant::now();
    loop {
        interval.tick().await;
        if tokio::time::Instant::now() >= next_reconcile {
            next_reconcile = tokio::time::Instant::now() + RECONCILE_INTERVAL;
            match crate::store::usage::reconcile(&queue.db).await {
                Ok(0) => {}
                Ok(fixed) => tracing::warn!(fixed, "lease counters had drifted; set right"),
                Err(error) => tracing::warn!(%error, "cannot reconcile the lease counters"),
            }
        }
        match crate::store::leases::reap_expired(&queue.db, REAP_BATCH).await {
            Ok(reaped) if !reaped.is_empty() => {
                crate::metrics::record_reaped(reaped.len());
                if reaped
                    .iter()
                    .any(|(task, _)| task.state == "queued" && task.run_at <= chrono::Utc::now())
                {
                    queue.announce_queued().await;
                }
                for (task, expiry) in &reaped {
                    tracing::info!(task_id = %task.id, state = %task.state, ?expiry, "lease expired");
                    match expiry {
                        Expiry::Lost => crate::metrics::record_lease_lost(&task.pool),
                        Expiry::Failed if task.state == "dead" => {
                            crate::metrics::record_dead_letter(&task.pool);
                        }
                        Expiry::Failed => crate::metrics::record_retry(&task.pool),
                    }
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot reap expired leases"),
        }
    }
}
