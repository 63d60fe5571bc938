//! `GET /metrics` and the middleware that counts requests; the task gauges (tasks by state, queue
//! depth per pool) are read from Postgres at scrape time.

use std::collections::BTreeSet;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::state::AppState;
use crate::metrics::{HTTP_DURATION, HTTP_REQUESTS, QUEUE_DEPTH, TASKS};
use crate::model::task::TaskState;

const MAX_POOLS_REPORTED: i64 = 200;

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
    let counts = crate::store::tasks::count_by_state(&state.db).await?;
    for task_state in TaskState::ALL.map(TaskState::as_str) {
        let count = counts
            .iter()
            .find(|(name, _)| name == task_state)
            .map_or(0, |(_, count)| *count);
        metrics::gauge!(TASKS, "state" => task_state).set(count as f64);
    }
    // Pools reported before but empty now go back to 0 instead of keeping a stale depth.
    static REPORTED_POOLS: std::sync::Mutex<BTreeSet<String>> =
        std::sync::Mutex::new(BTreeSet::new());
    let depths = crate::store::tasks::queue_depth_by_pool(&state.db, MAX_POOLS_REPORTED).await?;
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
