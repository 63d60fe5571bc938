//! The OpenAPI 3 document, generated from the handlers' annotations, and the offline docs page.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{dead_letters, health, leases, metrics, tasks, teams, workflows};

#[derive(OpenApi)]
#[openapi(
    info(title = "Stacksmith control plane", description = "Tasks API for teams. Errors are RFC 9457 application/problem+json. Rate-limited responses carry RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset and Retry-After. Delivery is at least once: every lease carries a fencing token that heartbeats and reports must present (a stale one is a 409). A lease that expires without a heartbeat or report within the task's timeout is lost, not failed: the task is queued again after its retry delay without using an attempt, up to retry.max_lease_losses (default 3) lost leases."),
    paths(
        tasks::create_task, tasks::create_task_batch, tasks::list_tasks, tasks::get_task, tasks::cancel_task,
        tasks::list_attempts, dead_letters::list_dead_letters, dead_letters::redrive,
        workflows::create_workflow, workflows::get_workflow,
        leases::create_leases, leases::report, leases::heartbeat, leases::complete, leases::fail, leases::release,
        teams::create_team, teams::create_key, teams::revoke_key,
        health::healthz, health::readyz, health::startupz, metrics::metrics_endpoint,
    ),
    components(schemas(crate::http::problem::Problem)),
    modifiers(&BearerAuth),
    tags(
        (name = "tasks", description = "A team's tasks"),
        (name = "workers", description = "Leases for workers (worker key or admin key)"),
        (name = "admin", description = "Teams and API keys (admin key only)"),
        (name = "observability", description = "Probes and metrics"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A team key (sk_...) or the admin key"))
                    .build(),
            ),
        );
    }
}

/// The document served at `/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
