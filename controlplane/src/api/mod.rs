//! HTTP routes, one module per resource.

pub mod health;
pub mod tasks;
pub mod teams;

use axum::Router;
use axum::routing::{delete, get, post};

use crate::state::AppState;

/// The authenticated `/v1` routes (the caller's middleware adds authentication).
pub fn v1_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/tasks", post(tasks::create_task).get(tasks::list_tasks))
        .route("/v1/tasks/{task_id}", get(tasks::get_task))
        .route("/v1/tasks/{task_id}/cancel", post(tasks::cancel_task))
        .route("/v1/teams", post(teams::create_team))
        .route("/v1/teams/{team_id}/keys", post(teams::create_key))
        .route(
            "/v1/teams/{team_id}/keys/{key_id}",
            delete(teams::revoke_key),
        )
}

/// Probes and metrics: no authentication, no rate limit.
pub fn operational_routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/startupz", get(health::startupz))
        .route("/metrics", get(crate::metrics::metrics_endpoint))
}
