//! The HTTP layer: the routes (one module per resource), authentication and rate limits, problem
//! responses, the OpenAPI document, metrics over HTTP, the shared state and the server.

pub mod auth;
pub mod dead_letters;
pub mod health;
pub mod key_cache;
pub mod leases;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod rate_limit;
pub mod server;
pub mod state;
pub mod tasks;
pub mod teams;
pub mod workflows;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};

use state::AppState;

/// The authenticated `/v1` routes (the caller's middleware adds authentication).
/// `batch_body_limit`: the body limit of `POST /v1/tasks/batch` and `POST /v1/leases/reports`
/// (the others have the server's).
pub fn v1_routes(batch_body_limit: usize) -> Router<AppState> {
    Router::new()
        .route("/v1/tasks", post(tasks::create_task).get(tasks::list_tasks))
        .route(
            "/v1/tasks/batch",
            post(tasks::create_task_batch).layer(DefaultBodyLimit::max(batch_body_limit)),
        )
        .route("/v1/tasks/{task_id}", get(tasks::get_task))
        .route("/v1/tasks/{task_id}/cancel", post(tasks::cancel_task))
        .route("/v1/tasks/{task_id}/attempts", get(tasks::list_attempts))
        .route("/v1/dead-letters", get(dead_letters::list_dead_letters))
        .route("/v1/dead-letters/redrive", post(dead_letters::redrive))
        .route("/v1/workflows", post(workflows::create_workflow))
        .route("/v1/workflows/{workflow_id}", get(workflows::get_workflow))
        .route("/v1/leases", post(leases::create_leases))
        .route(
            "/v1/leases/reports",
            post(leases::report).layer(DefaultBodyLimit::max(batch_body_limit)),
        )
        .route("/v1/leases/{lease_id}/heartbeat", post(leases::heartbeat))
        .route("/v1/leases/{lease_id}/complete", post(leases::complete))
        .route("/v1/leases/{lease_id}/fail", post(leases::fail))
        .route("/v1/leases/{lease_id}/release", post(leases::release))
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
        .route("/metrics", get(metrics::metrics_endpoint))
}
