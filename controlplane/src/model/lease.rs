//! Leases: what a worker asks for, what it gets (the task to run, its fencing token and
//! deadline), and how it reports the end of an attempt.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

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
    #[schema(minimum = 1, maximum = 100, default = 1)]
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
