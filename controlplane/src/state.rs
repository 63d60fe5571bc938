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
    /// Woken when tasks become queued (LISTEN/NOTIFY); long-polling lease requests wait on it.
    pub task_queued: Arc<tokio::sync::Notify>,
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
            config: Arc::new(config),
            db,
            redis,
            lifecycle: Arc::default(),
            metrics: crate::metrics::prometheus_handle(),
        }
    }

    /// The Redis key `{prefix}:{suffix}`.
    pub fn redis_key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.config.redis_key_prefix)
    }
}
