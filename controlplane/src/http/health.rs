//! Probes: `/healthz` (alive), `/readyz` (dependencies reachable), `/startupz` (started once).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::state::AppState;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Result of a probe.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthReport {
    /// `ok` or `unavailable`.
    pub status: String,
    /// Each check and its result (`ok` or what failed).
    pub checks: std::collections::BTreeMap<String, String>,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "observability",
    responses((status = 200, description = "Alive", body = HealthReport)))]
pub async fn healthz() -> Json<HealthReport> {
    Json(HealthReport {
        status: "ok".to_owned(),
        checks: Default::default(),
    })
}

async fn check_dependencies(state: &AppState) -> (bool, HealthReport) {
    let mut checks = std::collections::BTreeMap::new();
    let database = match tokio::time::timeout(
        CHECK_TIMEOUT,
        crate::store::migrations_applied(&state.db),
    )
    .await
    {
        Ok(Ok(true)) => "ok".to_owned(),
        Ok(Ok(false)) => "migrations not applied".to_owned(),
        Ok(Err(_)) => "unreachable".to_owned(),
        Err(_) => "timed out".to_owned(),
    };
    checks.insert("postgres".to_owned(), database);
    let mut redis = state.redis.clone();
    let ping = tokio::time::timeout(
        CHECK_TIMEOUT,
        redis::cmd("PING").query_async::<String>(&mut redis),
    )
    .await;
    let redis_status = match ping {
        Ok(Ok(_)) => "ok".to_owned(),
        Ok(Err(_)) => "unreachable".to_owned(),
        Err(_) => "timed out".to_owned(),
    };
    checks.insert("redis".to_owned(), redis_status);
    let healthy = checks.values().all(|value| value == "ok");
    (
        healthy,
        HealthReport {
            status: if healthy { "ok" } else { "unavailable" }.to_owned(),
            checks,
        },
    )
}

/// Postgres and Redis reachable, migrations applied, not shutting down.
#[utoipa::path(get, path = "/readyz", tag = "observability",
    responses((status = 200, description = "Ready", body = HealthReport),
              (status = 503, description = "Not ready", body = HealthReport)))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<HealthReport>) {
    let (healthy, mut report) = check_dependencies(&state).await;
    if state.lifecycle.is_draining() {
        report.status = "unavailable".to_owned();
        report
            .checks
            .insert("shutdown".to_owned(), "draining".to_owned());
        return (StatusCode::SERVICE_UNAVAILABLE, Json(report));
    }
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report))
}

/// Startup finished: the dependencies were ready at least once since the process started.
#[utoipa::path(get, path = "/startupz", tag = "observability",
    responses((status = 200, description = "Started", body = HealthReport),
              (status = 503, description = "Still starting", body = HealthReport)))]
pub async fn startupz(State(state): State<AppState>) -> (StatusCode, Json<HealthReport>) {
    if state.lifecycle.is_started() {
        return (
            StatusCode::OK,
            Json(HealthReport {
                status: "ok".to_owned(),
                checks: Default::default(),
            }),
        );
    }
    let (healthy, report) = check_dependencies(&state).await;
    if healthy {
        state.lifecycle.mark_started();
        (StatusCode::OK, Json(report))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(report))
    }
}
