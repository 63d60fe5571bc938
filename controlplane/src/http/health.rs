//! Probes: `/healthz` (alive), `/readyz` (dependencies reachable), `/startupz` (started once).
//!
//! Every replica checks the same Postgres and Redis, so a readiness that failed whenever they are
//! slow would take every replica out of the Service at once and turn slow answers into refused
//! connections. A check that does not answer within [`CHECK_TIMEOUT`] is reported as `slow`:
//! `/readyz` stays ready (status `degraded`); only a dependency that answers with an error
//! (`unreachable`), missing migrations or a shutdown make it fail. `/startupz` wants every check
//! `ok`. Both checks run at once, so a probe answers within [`CHECK_TIMEOUT`] and a little: the
//! rendered probes wait 5 s (`provisioner/templates/kubernetes/60-controlplane.yaml.tera`).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::state::AppState;

/// How long each dependency check may take before it counts as `slow`.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

const OK: &str = "ok";
const SLOW: &str = "slow";

/// Result of a probe.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthReport {
    /// `ok`, `degraded` (a dependency is slow) or `unavailable`.
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

/// Checks Postgres and Redis at once. Returns whether every check is `ok`, whether none failed
/// (each `ok` or `slow`), and the report (status `ok`, `degraded` or `unavailable`).
async fn check_dependencies(state: &AppState) -> (bool, bool, HealthReport) {
    let database = async {
        match tokio::time::timeout(CHECK_TIMEOUT, crate::store::migrations_applied(&state.db)).await
        {
            Ok(Ok(true)) => OK,
            Ok(Ok(false)) => "migrations not applied",
            // No connection free in time: the database is slow, not gone.
            Ok(Err(sqlx::Error::PoolTimedOut)) => SLOW,
            Ok(Err(_)) => "unreachable",
            Err(_) => SLOW,
        }
    };
    let redis = async {
        let mut redis = state.redis.clone();
        match tokio::time::timeout(
            CHECK_TIMEOUT,
            redis::cmd("PING").query_async::<String>(&mut redis),
        )
        .await
        {
            Ok(Ok(_)) => OK,
            // The connection's own response timeout: slow, not gone.
            Ok(Err(error)) if error.is_timeout() => SLOW,
            Ok(Err(_)) => "unreachable",
            Err(_) => SLOW,
        }
    };
    let (database, redis) = tokio::join!(database, redis);
    let checks: std::collections::BTreeMap<String, String> = [
        ("postgres".to_owned(), database.to_owned()),
        ("redis".to_owned(), redis.to_owned()),
    ]
    .into_iter()
    .collect();
    let healthy = checks.values().all(|value| value == OK);
    let serving = checks.values().all(|value| value == OK || value == SLOW);
    let status = if healthy {
        "ok"
    } else if serving {
        "degraded"
    } else {
        "unavailable"
    };
    (
        healthy,
        serving,
        HealthReport {
            status: status.to_owned(),
            checks,
        },
    )
}

/// Postgres and Redis reachable (slow is enough), migrations applied, not shutting down.
#[utoipa::path(get, path = "/readyz", tag = "observability",
    responses((status = 200, description = "Ready", body = HealthReport),
              (status = 503, description = "Not ready", body = HealthReport)))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<HealthReport>) {
    let (_, serving, mut report) = check_dependencies(&state).await;
    if state.lifecycle.is_draining() {
        report.status = "unavailable".to_owned();
        report
            .checks
            .insert("shutdown".to_owned(), "draining".to_owned());
        return (StatusCode::SERVICE_UNAVAILABLE, Json(report));
    }
    let status = if serving {
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
    let (healthy, _, report) = check_dependencies(&state).await;
    if healthy {
        state.lifecycle.mark_started();
        (StatusCode::OK, Json(report))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(report))
    }
}
