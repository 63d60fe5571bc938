//! Prometheus metrics: HTTP requests by route and status, latency histograms, rate-limited
//! requests, (computed at scrape time from Postgres) tasks by state and queue depth per pool, and
//! the pool autoscaler's gauges and scaling events (recorded by `crate::autoscaler`).

use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::rate_limit::Scope;
use crate::state::AppState;

pub const HTTP_REQUESTS: &str = "controlplane_http_requests_total";
pub const HTTP_DURATION: &str = "controlplane_http_request_duration_seconds";
pub const RATE_LIMITED: &str = "controlplane_rate_limited_requests_total";
pub const TASKS: &str = "controlplane_tasks";
pub const QUEUE_DEPTH: &str = "controlplane_queue_depth";
pub const LEASES: &str = "controlplane_leased_tasks_total";
pub const LEASE_LATENCY: &str = "controlplane_lease_request_duration_seconds";
pub const TASK_DURATION: &str = "controlplane_task_attempt_duration_seconds";
pub const RETRIES: &str = "controlplane_task_retries_total";
pub const DEAD_LETTERS: &str = "controlplane_dead_letters_total";
pub const REAPED: &str = "controlplane_expired_leases_total";
/// 1 on the replica leading the pool autoscaler, 0 on the others.
pub const AUTOSCALER_LEADER: &str = "controlplane_autoscaler_leader";
/// Per pool: the backlog the autoscaler sized the pool for (ready plus running tasks).
pub const AUTOSCALER_BACKLOG: &str = "controlplane_autoscaler_backlog_tasks";
/// Per pool: the worker Deployment's `spec.replicas` as the autoscaler found it.
pub const AUTOSCALER_CURRENT_REPLICAS: &str = "controlplane_autoscaler_current_replicas";
/// Per pool: the stabilized replica count the autoscaler decided.
pub const AUTOSCALER_DESIRED_REPLICAS: &str = "controlplane_autoscaler_desired_replicas";
/// Per pool and direction (`up`, `down`): replica changes the autoscaler made.
pub const AUTOSCALER_SCALINGS: &str = "controlplane_autoscaler_scaling_events_total";
const TASK_STATES: [&str; 8] = [
    "pending",
    "queued",
    "leased",
    "running",
    "succeeded",
    "failed",
    "dead",
    "cancelled",
];
const MAX_POOLS_REPORTED: i64 = 200;

/// The process-wide Prometheus recorder (installed once, shared by every server in the process).
pub fn prometheus_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(HTTP_DURATION.to_owned()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0,
                    ],
                )
                .expect("bucket list is not empty")
                .set_buckets_for_metric(
                    Matcher::Full(LEASE_LATENCY.to_owned()),
                    &[
                        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 20.0,
                    ],
                )
                .expect("bucket list is not empty")
                .set_buckets_for_metric(
                    Matcher::Full(TASK_DURATION.to_owned()),
                    &[0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0],
                )
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a global metrics recorder was already installed");
            }
            handle
        })
        .clone()
}

/// A lease request answered: how many tasks it leased and how long it took (long polls included).
pub fn record_leases(pool: &str, leased: usize, elapsed: std::time::Duration) {
    metrics::counter!(LEASES, "pool" => pool.to_owned()).increment(leased as u64);
    metrics::histogram!(LEASE_LATENCY, "pool" => pool.to_owned()).record(elapsed.as_secs_f64());
}

/// An attempt reported: its duration (lease to report), and a retry or a dead letter.
pub fn record_finished(task: &crate::api::tasks::Task, attempt_seconds: f64) {
    use crate::api::tasks::TaskState;
    let pool = task.pool.clone();
    record_attempt_duration(&pool, attempt_seconds);
    match task.state {
        TaskState::Queued => metrics::counter!(RETRIES, "pool" => pool).increment(1),
        TaskState::Dead => metrics::counter!(DEAD_LETTERS, "pool" => pool).increment(1),
        _ => {}
    }
}

/// Duration of one attempt, from its lease to its report.
pub fn record_attempt_duration(pool: &str, seconds: f64) {
    metrics::histogram!(TASK_DURATION, "pool" => pool.to_owned()).record(seconds);
}

/// Leases the reaper ended.
pub fn record_reaped(count: usize) {
    metrics::counter!(REAPED).increment(count as u64);
}

pub fn record_rate_limited(scope: Scope) {
    metrics::counter!(RATE_LIMITED, "scope" => scope.as_str()).increment(1);
}

/// Middleware: counts requests by method, route template and status; observes latency.
pub async fn track_requests(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(HTTP_REQUESTS, "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(HTTP_DURATION, "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

async fn record_task_gauges(state: &AppState) -> Result<(), sqlx::Error> {
    let counts = crate::db::tasks::count_by_state(&state.db).await?;
    for task_state in TASK_STATES {
        let count = counts
            .iter()
            .find(|(name, _)| name == task_state)
            .map_or(0, |(_, count)| *count);
        metrics::gauge!(TASKS, "state" => task_state).set(count as f64);
    }
    // Pools reported before but empty now go back to 0 instead of keeping a stale depth.
    static REPORTED_POOLS: std::sync::Mutex<BTreeSet<String>> =
        std::sync::Mutex::new(BTreeSet::new());
    let depths = crate::db::tasks::queue_depth_by_pool(&state.db, MAX_POOLS_REPORTED).await?;
    let mut reported = REPORTED_POOLS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for pool in reported.iter() {
        if !depths.iter().any(|(name, _)| name == pool) {
            metrics::gauge!(QUEUE_DEPTH, "pool" => pool.clone()).set(0.0);
        }
    }
    for (pool, depth) in depths {
        metrics::gauge!(QUEUE_DEPTH, "pool" => pool.clone()).set(depth as f64);
        if reported.len() < MAX_POOLS_REPORTED as usize * 4 {
            reported.insert(pool);
        }
    }
    Ok(())
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "observability",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String)))]
pub async fn metrics_endpoint(State(state): State<AppState>) -> Response {
    if let Err(error) = record_task_gauges(&state).await {
        tracing::warn!(%error, "cannot read task counts for metrics");
    }
    state.metrics.run_upkeep();
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
