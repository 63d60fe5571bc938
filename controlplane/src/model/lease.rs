//! Leases: what a worker asks for, what it gets (the task to run, its fencing token and
//! deadline), and how it reports the end of an attempt.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::Invalid;
use super::task::TaskState;

pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;
pub const MAX_ERROR_BYTES: usize = 4096;
pub const MAX_RESULT_BYTES: usize = 64 * 1024;

fn default_max_tasks() -> u32 {
    1
}
fn default_lease_seconds() -> u32 {
    30
}

/// A lease request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// The pool whose tasks to lease.
    #[schema(
        min_length = 1,
        max_length = 63,
        pattern = "^[a-z0-9][a-z0-9-]*$",
        example = "default"
    )]
    pub pool: String,
    /// At most this many tasks.
    #[serde(default = "default_max_tasks")]
    #[schema(minimum = 1, maximum = 1000, default = 1)]
    pub max_tasks: u32,
    /// Long poll: wait up to this long for a task when none is ready (capped by the server).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 20, default = 0)]
    pub wait_seconds: u32,
    /// Lease duration; heartbeats extend it by as much.
    #[serde(default = "default_lease_seconds")]
    #[schema(minimum = 1, maximum = 600, default = 30)]
    pub lease_seconds: u32,
    /// Name of the worker (recorded with each attempt).
    #[serde(default)]
    #[schema(max_length = 100)]
    pub worker: Option<String>,
}

/// A leased task: what to run and the lease to report on.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Lease {
    pub lease_id: Uuid,
    /// Present it in heartbeats and reports; also usable to fence side effects downstream.
    pub fencing_token: i64,
    /// The lease ends then unless a heartbeat extends it.
    pub lease_expires_at: DateTime<Utc>,
    pub task_id: Uuid,
    pub team_id: Uuid,
    pub pool: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub timeout_seconds: i32,
    /// This attempt's number (1 for the first).
    pub attempt: i32,
    pub max_attempts: i32,
    /// Results of the task's workflow dependencies, by task name.
    #[schema(value_type = Object)]
    pub dependency_results: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LeaseResponse {
    /// Possibly empty (nothing ready within the wait).
    pub leases: Vec<Lease>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    pub fencing_token: i64,
    /// New lease duration from now.
    #[serde(default = "default_lease_seconds")]
    #[schema(minimum = 1, maximum = 600, default = 30)]
    pub lease_seconds: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatResponse {
    pub lease_expires_at: DateTime<Utc>,
}

/// A successful attempt.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    pub fencing_token: i64,
    /// The task's result (any JSON, at most 64 KiB); workflow dependents receive it.
    #[serde(default)]
    #[schema(value_type = Option<Value>)]
    pub result: Option<serde_json::Value>,
    /// Captured output (at most 64 KiB).
    #[serde(default)]
    #[schema(max_length = 65536)]
    pub output: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i32>,
}

/// A failed attempt: retried after the task's backoff, or dead when attempts are exhausted.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailRequest {
    pub fencing_token: i64,
    /// What went wrong (at most 4096 bytes).
    #[schema(min_length = 1, max_length = 4096)]
    pub error: String,
    #[serde(default)]
    #[schema(max_length = 65536)]
    pub output: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    pub fencing_token: i64,
}

/// Most reports in one `POST /v1/leases/reports`.
pub const MAX_REPORTS: usize = 1000;

/// What a report in a batch does to its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReportKind {
    /// Extend the lease by `lease_seconds` from now.
    Heartbeat,
    /// The attempt succeeded (`result`, `output`, `exit_code`).
    Complete,
    /// The attempt failed (`error` required; `output`, `exit_code`): retried after the task's
    /// backoff, or dead.
    Fail,
    /// Give the task back without running it to the end (not counted as an attempt).
    Release,
}

/// One report of a batch: about one lease, fenced by its token.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseReportItem {
    pub lease_id: Uuid,
    pub fencing_token: i64,
    pub kind: ReportKind,
    /// `heartbeat`: the new lease duration from now (default 30).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 600)]
    pub lease_seconds: Option<u32>,
    /// `complete`: the task's result (any JSON, at most 64 KiB).
    #[serde(default)]
    #[schema(value_type = Option<Value>)]
    pub result: Option<serde_json::Value>,
    /// `complete`, `fail`: captured output (at most 64 KiB).
    #[serde(default)]
    #[schema(max_length = 65536)]
    pub output: Option<String>,
    /// `complete`, `fail`.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// `fail`: what went wrong (1 to 4096 bytes).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 4096)]
    pub error: Option<String>,
}

/// Several reports in one request; each is applied or refused on its own.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseReportsRequest {
    /// 1 to 1,000 reports.
    #[schema(min_items = 1, max_items = 1000)]
    pub reports: Vec<LeaseReportItem>,
}

/// How one report ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReportOutcome {
    /// Applied.
    Ok,
    /// The lease ended (expired, reported, released, cancelled, or earlier in this batch) or the
    /// token is stale: what `POST /v1/leases/{id}/...` answers with 409. Stop the task's work.
    Gone,
    /// No lease with this id ever existed (404 for a single report).
    NotFound,
    /// The report breaks a rule (`detail`); nothing was done (422 for a single report).
    Invalid,
}

/// The answer to one report, in the order of the request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LeaseReportResult {
    pub lease_id: Uuid,
    pub outcome: ReportOutcome,
    /// Why it was not applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// `heartbeat` applied: the new deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// `complete`, `fail`, `release` applied: the task's state now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_state: Option<TaskState>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LeaseReportsResponse {
    pub results: Vec<LeaseReportResult>,
}

/// A report's lease duration, checked.
pub fn check_lease_seconds(value: u32) -> Result<i32, Invalid> {
    if !(1..=600).contains(&value) {
        return Err(Invalid(
            "lease_seconds must be between 1 and 600".to_owned(),
        ));
    }
    Ok(value as i32)
}

/// A report's output, checked.
pub fn check_output(output: Option<&String>) -> Result<(), Invalid> {
    if output.is_some_and(|o| o.len() > MAX_OUTPUT_BYTES) {
        return Err(Invalid(format!("output exceeds {MAX_OUTPUT_BYTES} bytes")));
    }
    if output.is_some_and(|o| o.contains('\0')) {
        return Err(Invalid("output must not contain NUL characters".to_owned()));
    }
    Ok(())
}

/// A result, checked.
pub fn check_result(result: Option<&serde_json::Value>) -> Result<(), Invalid> {
    if let Some(result) = result
        && serde_json::to_vec(result).map_or(0, |bytes| bytes.len()) > MAX_RESULT_BYTES
    {
        return Err(Invalid(format!("result exceeds {MAX_RESULT_BYTES} bytes")));
    }
    Ok(())
}

/// An error text, checked.
pub fn check_error(error: Option<&String>) -> Result<(), Invalid> {
    match error {
        Some(error)
            if !error.is_empty() && error.len() <= MAX_ERROR_BYTES && !error.contains('\0') =>
        {
            Ok(())
        }
        _ => Err(Invalid(format!(
            "error is required: 1-{MAX_ERROR_BYTES} bytes without NUL characters"
        ))),
    }
}

impl LeaseReportItem {
    /// Checks the fields its kind uses (and refuses the ones it does not).
    pub fn check(&self) -> Result<(), Invalid> {
        let unused =
            |field: &str| Invalid(format!("{field} does not go with a {:?} report", self.kind));
        match self.kind {
            ReportKind::Heartbeat => {
                if self.result.is_some() || self.output.is_some() || self.error.is_some() {
                    return Err(unused("result, output or error"));
                }
                check_lease_seconds(self.lease_seconds.unwrap_or(30))?;
            }
            ReportKind::Complete => {
                if self.error.is_some() || self.lease_seconds.is_some() {
                    return Err(unused("error or lease_seconds"));
                }
                check_output(self.output.as_ref())?;
                check_result(self.result.as_ref())?;
            }
            ReportKind::Fail => {
                if self.result.is_some() || self.lease_seconds.is_some() {
                    return Err(unused("result or lease_seconds"));
                }
                check_output(self.output.as_ref())?;
                check_error(self.error.as_ref())?;
            }
            ReportKind::Release => {
                if self.result.is_some()
                    || self.output.is_some()
                    || self.error.is_some()
                    || self.lease_seconds.is_some()
                    || self.exit_code.is_some()
                {
                    return Err(unused("a field other than lease_id and fencing_token"));
                }
            }
        }
        Ok(())
    }
}
