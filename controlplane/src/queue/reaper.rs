//! The reaper: ends expired leases, each as a failed attempt (retried after the backoff, or
//! dead).

use std::time::Duration;

use super::Queue;

const REAP_BATCH: i64 = 500;

/// Ends expired leases every `scheduler.reaper_interval_ms`, until aborted.
pub(super) async fn reap(queue: Queue) {
    let mut interval = tokio::time::interval(Duration::from_millis(
        queue.config.scheduler.reaper_interval_ms,
    ));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match crate::store::leases::reap_expired(&queue.db, REAP_BATCH).await {
            Ok(reaped) if !reaped.is_empty() => {
                crate::metrics::record_reaped(reaped.len());
                if reaped.iter().any(|task| task.state == "queued") {
                    queue.announce_queued().await;
                }
                for task in &reaped {
                    tracing::info!(task_id = %task.id, state = %task.state, "lease expired");
                    if task.state == "dead" {
                        crate::metrics::record_dead_letter(&task.pool);
                    } else {
                        crate::metrics::record_retry(&task.pool);
                    }
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot reap expired leases"),
        }
    }
}
