//! The state every handler shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use metrics_exporter_prometheus::PrometheusHandle;
use redis::aio::ConnectionManager;
use sqlx::PgPool;

use crate::auth::hash_key;
use crate::config::Config;
use crate::rate_limit::RateLimiters;

/// Startup and shutdown progress, reported by `/startupz` and `/readyz`.
#[derive(Debug, Default)]
pub struct Lifecycle {
    started: AtomicBool,
    draining: AtomicBool,
}

impl Lifecycle {
    pub fn mark_started(&self) {
        self.started.store(true, Ordering::SeqCst);
    }
    pub fn is_started(&self) -> bool {
        self.started.load(Ordering::SeqCst)
    }
    /// Shutdown began: readiness fails so load balancers stop sending traffic.
    pub fn mark_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: PgPool,
    pub redis: ConnectionManager,
    pub rate_limiters: Arc<RateLimiters>,
    pub admin_key_hash: Option<[u8; 32]>,
    pub worker_key_hash: Option<[u8; 32]>,
    /// Woken when tasks become claimable (by this server at once, by the others through Redis
    /// pub/sub); long-polling lease requests wait on it.
    pub task_queued: Arc<tokio::sync::Notify>,
    /// Tells this server's own wake-ups apart from the other servers' on the pub/sub channel.
    pub server_id: Arc<str>,
    pub lifecycle: Arc<Lifecycle>,
    pub metrics: PrometheusHandle,
}

impl AppState {
    pub fn new(config: Config, db: PgPool, redis: ConnectionManager) -> Self {
        Self {
            rate_limiters: Arc::new(RateLimiters::new(&config.rate_limit)),
            admin_key_hash: config.admin_key.as_ref().map(|key| hash_key(key.expose())),
            worker_key_hash: config.worker_key.as_ref().map(|key| hash_key(key.expose())),
            task_queued: Arc::default(),
            server_id: uuid::Uuid::new_v4().to_string().into(),
            config: Arc::new(config),
            db,
            redis,
            lifecycle: Arc::default(),
            metrics: crate::metrics::prometheus_handle(),
        }
    }

    /// Tasks became claimable: wakes this server's waiting lease requests at once and the other
    /// servers' through Redis pub/sub. Losing the Redis message only delays the others to their
    /// next poll (`scheduler.poll_interval_ms`).
    pub async fn announce_queued(&self) {
        let mut pipeline = redis::pipe();
        self.add_queued_announcement(&mut pipeline);
        let mut redis = self.redis.clone();
        let published: redis::RedisResult<()> = pipeline.query_async(&mut redis).await;
        if let Err(error) = published {
            tracing::warn!(%error, "cannot announce queued tasks to the other servers");
        }
    }

    /// [`Self::announce_queued`] inside a caller's pipeline (one round trip with its commands):
    /// wakes this server's waiting lease requests now and adds the PUBLISH for the others.
    pub fn add_queued_announcement(&self, pipeline: &mut redis::Pipeline) {
        self.task_queued.notify_waiters();
        pipeline
            .cmd("PUBLISH")
            .arg(self.redis_key(crate::scheduler::QUEUED_CHANNEL))
            .arg(&*self.server_id)
            .ignore();
    }

    /// The Redis key `{prefix}:{suffix}`.
    pub fn redis_key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.config.redis_key_prefix)
    }
}
