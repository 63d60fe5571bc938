//! `/v1/leases`: workers lease tasks, heartbeat, and report how each attempt ended.
//!
//! Every lease carries a fencing token (incremented by each lease of a task). Heartbeats and
//! reports must present it; a lease that ended (expired, reported, released, cancelled) or a
//! token that is not the current one is a 409, so a task is never completed twice.

use std::time::Duration;

use axum::extract::State;
use chrono::Utc;
use uuid::Uuid;

use super::auth::WorkerCaller;
use super::problem::{ApiError, ApiJson, ApiPath};
use super::state::AppState;
use crate::model::lease::{
    CompleteRequest, FailRequest, HeartbeatRequest, HeartbeatResponse, LeaseReportsRequest,
    LeaseReportsResponse, LeaseRequest, LeaseResponse, MAX_REPORTS, ReleaseRequest, check_error,
    check_lease_seconds, check_output, check_result,
};
use crate::model::task::{Task, TaskState, valid_pool};
use crate::queue::reports::ReportError;
use crate::store;
use crate::store::leases::{LeaseError, Report};

fn lease_error(error: LeaseError) -> ApiError {
    match error {
        LeaseError::NotFound => ApiError::NotFound("lease"),
        LeaseError::Stale(detail) => ApiError::Conflict(detail),
        LeaseError::Database(error) => ApiError::Database(error),
    }
}

/// Lease tasks of a pool.
///
/// Teams are served fairly: the team with the fewest leased tasks in the pool relative to its
/// share goes first (ties: the team served least recently), within its concurrency quota; a
/// team's tasks go by priority, then age. With `wait_seconds`, the request waits until a task is
/// ready (woken at once when tasks are queued, polling as the fallback).
///
/// Heartbeat before `lease_expires_at`. A lease that expires without a heartbeat or report is
/// lost: the task is queued again after its retry delay without using an attempt, up to its
/// `retry.max_lease_losses` (default 3); beyond them, or past the task's timeout, the expiry
/// counts as a failed attempt. Delivery is at least once.
#[utoipa::path(post, path = "/v1/leases", tag = "workers", security(("api_key" = [])),
    request_body = LeaseRequest,
    responses(
        (status = 200, description = "The leased tasks (possibly none)", body = LeaseResponse),
        (status = 400, description = "Malformed request", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a worker key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid request", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_leases(
    State(state): State<AppState>,
    _worker: WorkerCaller,
    ApiJson(request): ApiJson<LeaseRequest>,
) -> Result<axum::Json<LeaseResponse>, ApiError> {
    if !valid_pool(&request.pool) {
        return Err(ApiError::Unprocessable(
            "pool must be 1-63 lowercase letters, digits or '-', not starting with '-'".to_owned(),
        ));
    }
    if !(1..=1000).contains(&request.max_tasks) {
        return Err(ApiError::Unprocessable(
            "max_tasks must be between 1 and 1000".to_owned(),
        ));
    }
    if request.wait_seconds > 20 {
        return Err(ApiError::Unprocessable(
            "wait_seconds must be between 0 and 20".to_owned(),
        ));
    }
    let lease_seconds = check_lease_seconds(request.lease_seconds)?;
    let worker = request.worker.unwrap_or_default();
    if worker.len() > 100 || worker.contains('\0') {
        return Err(ApiError::Unprocessable(
            "worker has at most 100 bytes and no NUL characters".to_owned(),
        ));
    }
    let scheduler = &state.config.scheduler;
    // Stay below the request timeout, which would answer 503 instead.
    let wait_cap = scheduler
        .max_lease_wait_ms
        .min(state.config.limits.request_timeout_ms.saturating_sub(1_000));
    let wait = Duration::from_millis((u64::from(request.wait_seconds) * 1000).min(wait_cap));
    let deadline = tokio::time::Instant::now() + wait;
    let poll = Duration::from_millis(scheduler.poll_interval_ms);
    let started = std::time::Instant::now();
    let waiters = state.queue.wakeups.pool(&request.pool);
    let spacing = Duration::from_millis(scheduler.claim_spacing_ms);
    // Bounded by `deadline`.
    loop {
        let notified = waiters.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // While the pool is drained, claims go `spacing` apart: tasks that trickle in meanwhile
        // are leased together.
        let slot = waiters.claim_slot(spacing).min(deadline);
        if slot > tokio::time::Instant::now() {
            tokio::time::sleep_until(slot).await;
        }
        let claimed = store::leases::claim(
            &state.queue.claims,
            &request.pool,
            request.max_tasks as usize,
            lease_seconds,
            &worker,
        )
        .await?;
        let full = claimed.len() == request.max_tasks as usize;
        waiters.claimed(full, spacing);
        if full {
            // A full claim may have left tasks: pass the wake-up on to the next request waiting.
            waiters.notify.notify_one();
        }
        let now = tokio::time::Instant::now();
        if !claimed.is_empty() || now >= deadline {
            crate::metrics::record_leases(&request.pool, claimed.len(), started.elapsed());
            return Ok(axum::Json(LeaseResponse { leases: claimed }));
        }
        let sleep_until = deadline.min(now + poll);
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep_until(sleep_until) => {}
        }
    }
}

/// Report on many leases at once: heartbeats, completions, failures, releases.
///
/// Each report is fenced by its own token and answered on its own, in the order of the request
/// (`ok`, `gone`: the lease ended or the token is stale, `not_found`, `invalid` with `detail`);
/// one refused report does not affect the others. The valid ones are applied in one transaction.
/// A report after the one that ended its lease in the same batch is `gone`.
#[utoipa::path(post, path = "/v1/leases/reports", tag = "workers", security(("api_key" = [])),
    request_body = LeaseReportsRequest,
    responses(
        (status = 200, description = "One result per report, in order", body = LeaseReportsResponse),
        (status = 400, description = "Malformed request", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a worker key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not 1 to 1,000 reports", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn report(
    State(state): State<AppState>,
    _worker: WorkerCaller,
    ApiJson(request): ApiJson<LeaseReportsRequest>,
) -> Result<axum::Json<LeaseReportsResponse>, ApiError> {
    if request.reports.is_empty() || request.reports.len() > MAX_REPORTS {
        return Err(ApiError::Unprocessable(format!(
            "reports must have 1 to {MAX_REPORTS} items"
        )));
    }
    let results = state
        .queue
        .report(&request.reports)
        .await
        .map_err(|error| match error {
            ReportError::Database(error) => ApiError::Database(error),
            ReportError::UnknownState(unknown) => ApiError::from(unknown),
        })?;
    Ok(axum::Json(LeaseReportsResponse { results }))
}

/// Extend a lease.
#[utoipa::path(post, path = "/v1/leases/{lease_id}/heartbeat", tag = "workers", security(("api_key" = [])),
    params(("lease_id" = Uuid, Path, description = "Lease id")),
    request_body = HeartbeatRequest,
    responses(
        (status = 200, description = "The new deadline", body = HeartbeatResponse),
        (status = 400, description = "Malformed request", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a worker key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such lease", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The lease ended or the fencing token is stale", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid request", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn heartbeat(
    State(state): State<AppState>,
    _worker: WorkerCaller,
    ApiPath(lease_id): ApiPath<Uuid>,
    ApiJson(request): ApiJson<HeartbeatRequest>,
) -> Result<axum::Json<HeartbeatResponse>, ApiError> {
    let lease_seconds = check_lease_seconds(request.lease_seconds)?;
    let deadline =
        store::leases::heartbeat(&state.db, lease_id, request.fencing_token, lease_seconds)
            .await
            .map_err(lease_error)?;
    Ok(axum::Json(HeartbeatResponse {
        lease_expires_at: deadline,
    }))
}

/// Report a successful attempt.
#[utoipa::path(post, path = "/v1/leases/{lease_id}/complete", tag = "workers", security(("api_key" = [])),
    params(("lease_id" = Uuid, Path, description = "Lease id")),
    request_body = CompleteRequest,
    responses(
        (status = 200, description = "The task, succeeded", body = Task),
        (status = 400, description = "Malformed request", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a worker key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such lease", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The lease ended or the fencing token is stale", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid request", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn complete(
    State(state): State<AppState>,
    _worker: WorkerCaller,
    ApiPath(lease_id): ApiPath<Uuid>,
    ApiJson(request): ApiJson<CompleteRequest>,
) -> Result<axum::Json<Task>, ApiError> {
    check_output(request.output.as_ref())?;
    check_result(request.result.as_ref())?;
    let report = Report {
        result: request.result.clone(),
        output: request.output.clone(),
        exit_code: request.exit_code,
        error: None,
    };
    let (row, seconds) =
        store::leases::complete(&state.db, lease_id, request.fencing_token, &report)
            .await
            .map_err(lease_error)?;
    let task = Task::try_from(row)?;
    crate::queue::record_report(&task.pool, task.state, seconds);
    if task.workflow_id.is_some() {
        // Dependents whose last dependency this was are queued now.
        state.queue.announce_queued().await;
    }
    Ok(axum::Json(task))
}

/// Report a failed attempt (the task is retried after its backoff, or becomes a dead letter).
#[utoipa::path(post, path = "/v1/leases/{lease_id}/fail", tag = "workers", security(("api_key" = [])),
    params(("lease_id" = Uuid, Path, description = "Lease id")),
    request_body = FailRequest,
    responses(
        (status = 200, description = "The task: queued for a retry, or dead", body = Task),
        (status = 400, description = "Malformed request", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a worker key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such lease", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The lease ended or the fencing token is stale", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid request", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn fail(
    State(state): State<AppState>,
    _worker: WorkerCaller,
    ApiPath(lease_id): ApiPath<Uuid>,
    ApiJson(request): ApiJson<FailRequest>,
) -> Result<axum::Json<Task>, ApiError> {
    check_output(request.output.as_ref())?;
    check_error(Some(&request.error))?;
    let report = Report {
        result: None,
        output: request.output.clone(),
        exit_code: request.exit_code,
        error: Some(request.error.clone()),
    };
    let (row, seconds) = store::leases::fail(&state.db, lease_id, request.fencing_token, &report)
        .await
        .map_err(lease_error)?;
    let task = Task::try_from(row)?;
    crate::queue::record_report(&task.pool, task.state, seconds);
    if task.state == TaskState::Queued && task.run_at <= Utc::now() {
        // A retry without backoff is claimable at once.
        state.queue.announce_queued().await;
    }
    Ok(axum::Json(task))
}

/// Give a leased task back without running it (worker shutdown): it is queued again at once and
/// the attempt does not count.
#[utoipa::path(post, path = "/v1/leases/{lease_id}/release", tag = "workers", security(("api_key" = [])),
    params(("lease_id" = Uuid, Path, description = "Lease id")),
    request_body = ReleaseRequest,
    responses(
        (status = 200, description = "The task, queued again", body = Task),
        (status = 400, description = "Malformed request", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a worker key", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such lease", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The lease ended or the fencing token is stale", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid request", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn release(
    State(state): State<AppState>,
    _worker: WorkerCaller,
    ApiPath(lease_id): ApiPath<Uuid>,
    ApiJson(request): ApiJson<ReleaseRequest>,
) -> Result<axum::Json<Task>, ApiError> {
    let row = store::leases::release(&state.db, lease_id, request.fencing_token)
        .await
        .map_err(lease_error)?;
    state.queue.announce_queued().await;
    Ok(axum::Json(Task::try_from(row)?))
}
