//! The queue's rules above the store: waking long-polling lease requests when tasks become
//! claimable (at once on this server, through Redis pub/sub on the others), the task event
//! stream, the reaper of expired leases, and what reports mean for metrics.

pub mod group_commit;
pub mod reaper;
pub mod reports;
pub mod submit;
pub mod wakeups;

use std::sync::Arc;

use redis::aio::ConnectionManager;
use sqlx::PgPool;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::model::task::TaskState;

/// What the queue's rules work with: the database, Redis, and this server's wake-ups. Cheap to
/// clone (handles).
#[derive(Clone)]
pub struct Queue {
    pub config: Arc<Config>,
    pub db: PgPool,
    /// Where claims run (`store::leases::claim_pool`: planned once per session).
    pub claims: PgPool,
    pub redis: ConnectionManager,
    /// Where long-polling lease requests wait, per pool: woken one at a time when tasks of their
    /// pool become claimable (by this server at once, by the others through Redis pub/sub).
    pub wakeups: Arc<wakeups::Wakeups>,
    /// Tells this server's own wake-ups apart from the other servers' on the pub/sub channel.
    pub server_id: Arc<str>,
    /// Where single submissions wait to be stored together.
    pub group_commit: Arc<group_commit::GroupCommit>,
}

impl Queue {
    pub fn new(config: Arc<Config>, db: PgPool, redis: ConnectionManager) -> Self {
        Self {
            config,
            claims: crate::store::leases::claim_pool(&db),
            db,
            redis,
            wakeups: Arc::default(),
            server_id: uuid::Uuid::new_v4().to_string().into(),
            group_commit: Arc::default(),
        }
    }

    /// The Redis key `{prefix}:{suffix}`.
    pub fn redis_key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.config.redis_key_prefix)
    }

    /// Starts the pub/sub listener and the reaper; the caller aborts them at shutdown.
    pub fn spawn_background(&self) -> Vec<JoinHandle<()>> {
        vec![
            tokio::spawn(wakeups::listen(self.clone())),
            tokio::spawn(reaper::reap(self.clone())),
        ]
    }
}

/// An attempt reported: its duration (lease to report), and a retry or a dead letter.
pub fn record_report(pool: &str, state: TaskState, attempt_seconds: f64) {
    crate::metrics::record_attempt_duration(pool, attempt_seconds);
    match state {
        TaskState::Queued => crate::metrics::record_retry(pool),
        TaskState::Dead => crate::metrics::record_dead_letter(pool),
        _ => {}
    }
}
