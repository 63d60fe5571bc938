//! The state every handler shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use redis::aio::ConnectionManager;
use sqlx::PgPool;

use super::key_cache::KeyCache;
use super::rate_limit::RateLimiters;
use crate::config::Config;
use crate::model::api_key::hash_key;
use crate::queue::Queue;

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
    /// The queue's rules and wake-ups (shares `config`, `db` and `redis`).
    pub queue: Queue,
    pub rate_limiters: Arc<RateLimiters>,
    /// Team keys found valid recently (`api_key_cache_ms`).
    pub key_cache: Arc<KeyCache>,
    pub admin_key_hash: Option<[u8; 32]>,
    pub worker_key_hash: Option<[u8; 32]>,
    pub lifecycle: Arc<Lifecycle>,
    pub metrics: PrometheusHandle,
}

impl AppState {
    pub fn new(config: Config, db: PgPool, redis: ConnectionManager) -> Self {
        let config = Arc::new(config);
        Self {
            rate_limiters: Arc::new(RateLimiters::new(&config.rate_limit)),
            key_cache: Arc::new(KeyCache::new(Duration::from_millis(
                config.api_key_cache_ms,
            ))),
            admin_key_hash: config.admin_key.as_ref().map(|key| hash_key(key.expose())),
            worker_key_hash: config.worker_key.as_ref().map(|key| hash_key(key.expose())),
            queue: Queue::new(config.clone(), db.clone(), redis.clone()),
            config,
            db,
            redis,
            lifecycle: Arc::default(),
            metrics: crate::metrics::prometheus_handle(),
        }
    }
}
