//! Tasks: their states, retry policy, submissions and their validation, attempts.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Invalid, UnknownState};

pub const MAX_ARGV_ITEMS: usize = 256;
pub const MAX_ARG_BYTES: usize = 4096;
pub const MAX_ARGV_TOTAL_BYTES: usize = 64 * 1024;
pub const MAX_ENV_ENTRIES: usize = 128;
pub const MAX_ENV_NAME_BYTES: usize = 256;
pub const MAX_ENV_VALUE_BYTES: usize = 8192;

/// Lifecycle state of a task: `pending` (a workflow task waiting for its dependencies) ->
/// `queued` -> `leased` -> `succeeded`, or back to `queued` (a failed attempt with attempts left,
/// or a lost lease within the lease-loss budget; `run_at` later) or `dead` (attempts exhausted:
/// a dead letter); `cancelled` at any point before a final state. `running` and `failed` are not
/// written (kept for compatibility).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Pending,
    Queued,
    Leased,
    Running,
    Succeeded,
    Failed,
    Dead,
    Cancelled,
}

impl TaskState {
    /// Every state, in the order of the lifecycle.
    pub const ALL: [Self; 8] = [
        Self::Pending,
        Self::Queued,
        Self::Leased,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Dead,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Queued => "queued",
            Self::Leased => "leased",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Dead => "dead",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(value: &str) -> Result<Self, UnknownState> {
        serde_json::from_value(serde_json::Value::String(value.to_owned()))
            .map_err(|_| UnknownState(value.to_owned()))
    }
}

/// How often a failed task is tried again. The delay before attempt n+1 is
/// `min(backoff_seconds * 2^(n-1), max_backoff_seconds)`, minus up to `jitter_percent` percent
/// of it at random.
///
/// A lost lease (its deadline passed without a heartbeat or report: the worker was killed, its
/// node is gone) is not a failure of the task: the task is queued again after the same delay
/// (n: the leases lost so far) and the attempt does not count against `max_attempts`, up to
/// `max_lease_losses` lost leases; a loss beyond them counts as a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Total attempts including the first one.
    #[serde(default = "default_max_attempts")]
    #[schema(minimum = 1, maximum = 20, default = 1)]
    pub max_attempts: u32,
    /// Delay before the next attempt.
    #[serde(default = "default_backoff_seconds")]
    #[schema(minimum = 0, maximum = 3600, default = 10)]
    pub backoff_seconds: u32,
    /// Upper bound of the delay.
    #[serde(default = "default_max_backoff_seconds")]
    #[schema(minimum = 0, maximum = 86400, default = 3600)]
    pub max_backoff_seconds: u32,
    /// Random reduction of each delay, in percent of it.
    #[serde(default = "default_jitter_percent")]
    #[schema(minimum = 0, maximum = 100, default = 10)]
    pub jitter_percent: u32,
    /// Lost leases forgiven: each queues the task again without using an attempt.
    // Left out of the canonical form at its default, so Idempotency-Key fingerprints of
    // requests made before this field existed stay the same.
    #[serde(
        default = "default_max_lease_losses",
        skip_serializing_if = "is_default_max_lease_losses"
    )]
    #[schema(minimum = 0, maximum = 100, default = 3)]
    pub max_lease_losses: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            backoff_seconds: default_backoff_seconds(),
            max_backoff_seconds: default_max_backoff_seconds(),
            jitter_percent: default_jitter_percent(),
            max_lease_losses: default_max_lease_losses(),
        }
    }
}

fn default_max_backoff_seconds() -> u32 {
    3600
}
fn default_jitter_percent() -> u32 {
    10
}

fn default_max_attempts() -> u32 {
    1
}
/// Lost leases forgiven by default: a worker killed mid-task (a spot node reclaimed, a pool
/// scaled down) is routine, not the task's fault.
pub const DEFAULT_MAX_LEASE_LOSSES: u32 = 3;
fn default_max_lease_losses() -> u32 {
    DEFAULT_MAX_LEASE_LOSSES
}
fn is_default_max_lease_losses(value: &u32) -> bool {
    *value == DEFAULT_MAX_LEASE_LOSSES
}
fn default_backoff_seconds() -> u32 {
    10
}
fn default_timeout_seconds() -> u32 {
    3600
}

/// A task submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTaskRequest {
    /// Worker pool that runs the task: lowercase letters, digits and `-`, at most 63 characters.
    #[schema(
        min_length = 1,
        max_length = 63,
        pattern = "^[a-z0-9][a-z0-9-]*$",
        example = "default"
    )]
    pub pool: String,
    /// The program and its arguments (argv), run without a shell.
    #[schema(min_items = 1, max_items = 256, example = json!(["echo", "hello"]))]
    pub command: Vec<String>,
    /// Environment variables: names match `^[A-Za-z_][A-Za-z0-9_]*$`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Wall-clock limit of one attempt.
    #[serde(default = "default_timeout_seconds")]
    #[schema(minimum = 1, maximum = 86400, default = 3600)]
    pub timeout_seconds: u32,
    /// Higher runs first within a pool.
    #[serde(default)]
    #[schema(minimum = -1000, maximum = 1000, default = 0)]
    pub priority: i32,
    #[serde(default)]
    pub retry: RetryPolicy,
}

fn invalid(detail: impl Into<String>) -> Invalid {
    Invalid(detail.into())
}

pub fn valid_pool(pool: &str) -> bool {
    (1..=63).contains(&pool.len())
        && pool
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !pool.starts_with('-')
}

fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    (1..=MAX_ENV_NAME_BYTES).contains(&name.len())
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl CreateTaskRequest {
    /// Checks the limits serde cannot express.
    pub fn validate(&self) -> Result<NewTask, Invalid> {
        if !valid_pool(&self.pool) {
            return Err(invalid(
                "pool must be 1-63 lowercase letters, digits or '-', not starting with '-'",
            ));
        }
        if self.command.is_empty() || self.command.len() > MAX_ARGV_ITEMS {
            return Err(invalid(format!(
                "command must have 1 to {MAX_ARGV_ITEMS} items"
            )));
        }
        if self.command[0].is_empty() {
            return Err(invalid("command[0], the program, must not be empty"));
        }
        let mut total = 0;
        for arg in &self.command {
            if arg.len() > MAX_ARG_BYTES {
                return Err(invalid(format!(
                    "a command item exceeds {MAX_ARG_BYTES} bytes"
                )));
            }
            if arg.contains('\0') {
                return Err(invalid("command items must not contain NUL characters"));
            }
            total += arg.len();
        }
        if total > MAX_ARGV_TOTAL_BYTES {
            return Err(invalid(format!(
                "command exceeds {MAX_ARGV_TOTAL_BYTES} bytes in total"
            )));
        }
        if self.env.len() > MAX_ENV_ENTRIES {
            return Err(invalid(format!(
                "env has more than {MAX_ENV_ENTRIES} entries"
            )));
        }
        for (name, value) in &self.env {
            if !valid_env_name(name) {
                return Err(invalid(format!(
                    "env names must match ^[A-Za-z_][A-Za-z0-9_]*$ and have at most {MAX_ENV_NAME_BYTES} bytes"
                )));
            }
            if value.len() > MAX_ENV_VALUE_BYTES || value.contains('\0') {
                return Err(invalid(format!(
                    "env values must have at most {MAX_ENV_VALUE_BYTES} bytes and no NUL characters"
                )));
            }
        }
        if !(1..=86_400).contains(&self.timeout_seconds) {
            return Err(invalid("timeout_seconds must be between 1 and 86400"));
        }
        if !(-1000..=1000).contains(&self.priority) {
            return Err(invalid("priority must be between -1000 and 1000"));
        }
        if !(1..=20).contains(&self.retry.max_attempts) {
            return Err(invalid("retry.max_attempts must be between 1 and 20"));
        }
        if self.retry.backoff_seconds > 3600 {
            return Err(invalid("retry.backoff_seconds must be between 0 and 3600"));
        }
        if self.retry.max_backoff_seconds > 86_400 {
            return Err(invalid(
                "retry.max_backoff_seconds must be between 0 and 86400",
            ));
        }
        if self.retry.jitter_percent > 100 {
            return Err(invalid("retry.jitter_percent must be between 0 and 100"));
        }
        if self.retry.max_lease_losses > 100 {
            return Err(invalid("retry.max_lease_losses must be between 0 and 100"));
        }
        let to_i32 = |value: u32| i32::try_from(value).map_err(|_| invalid("number out of range"));
        Ok(NewTask {
            pool: self.pool.clone(),
            command: self.command.clone(),
            env: self.env.clone(),
            timeout_seconds: to_i32(self.timeout_seconds)?,
            priority: self.priority,
            max_attempts: to_i32(self.retry.max_attempts)?,
            retry_backoff_seconds: to_i32(self.retry.backoff_seconds)?,
            retry_max_backoff_seconds: to_i32(self.retry.max_backoff_seconds)?,
            retry_jitter_percent: to_i32(self.retry.jitter_percent)?,
            max_lease_losses: to_i32(self.retry.max_lease_losses)?,
        })
    }
}

/// A task as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Task {
    pub id: Uuid,
    pub pool: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub timeout_seconds: i32,
    pub priority: i32,
    pub retry: TaskRetry,
    pub state: TaskState,
    /// Attempts started so far (every lease, lost ones included; released ones not).
    pub attempts: i32,
    /// Leases lost so far (expired without a heartbeat or report: the worker vanished). Up to
    /// `retry.max_lease_losses` of them do not count against `retry.max_attempts`.
    #[serde(default)]
    pub lease_losses: i32,
    /// Earliest time the task may run.
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the task reached a final state.
    pub finished_at: Option<DateTime<Utc>>,
    /// Incremented by every lease; the current lease's token.
    pub fencing_token: i64,
    /// Deadline of the current lease, while leased.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// What the successful attempt reported (any JSON).
    #[schema(value_type = Option<Value>)]
    pub result: Option<serde_json::Value>,
    /// Captured output of the last attempt (bounded).
    pub output: Option<String>,
    /// Exit code of the last attempt's process.
    pub exit_code: Option<i32>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// The workflow this task belongs to.
    pub workflow_id: Option<Uuid>,
    /// The task's name in its workflow.
    pub workflow_task: Option<String>,
    /// Results of the workflow dependencies, by task name (filled when the task is queued).
    #[schema(value_type = Object)]
    pub dependency_results: serde_json::Value,
}

/// The retry policy as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskRetry {
    pub max_attempts: i32,
    pub backoff_seconds: i32,
    pub max_backoff_seconds: i32,
    pub jitter_percent: i32,
    #[serde(default)]
    pub max_lease_losses: i32,
}

/// A validated task submission.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub pool: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub timeout_seconds: i32,
    pub priority: i32,
    pub max_attempts: i32,
    pub retry_backoff_seconds: i32,
    pub retry_max_backoff_seconds: i32,
    pub retry_jitter_percent: i32,
    pub max_lease_losses: i32,
}

impl NewTask {
    /// The task as it is stored, queued, with the id `id` at `at`: what was submitted and the
    /// defaults of a new row (no attempt yet, token 0, nothing reported, runnable at once).
    pub fn queued(&self, id: Uuid, at: DateTime<Utc>) -> Task {
        Task {
            id,
            pool: self.pool.clone(),
            command: self.command.clone(),
            env: self.env.clone(),
            timeout_seconds: self.timeout_seconds,
            priority: self.priority,
            retry: TaskRetry {
                max_attempts: self.max_attempts,
                backoff_seconds: self.retry_backoff_seconds,
                max_backoff_seconds: self.retry_max_backoff_seconds,
                jitter_percent: self.retry_jitter_percent,
                max_lease_losses: self.max_lease_losses,
            },
            state: TaskState::Queued,
            attempts: 0,
            lease_losses: 0,
            run_at: at,
            created_at: at,
            updated_at: at,
            finished_at: None,
            fencing_token: 0,
            lease_expires_at: None,
            result: None,
            output: None,
            exit_code: None,
            last_error: None,
            workflow_id: None,
            workflow_task: None,
            dependency_results: serde_json::Value::Object(serde_json::Map::new()),
        }
    }
}

/// True for the states a task never leaves.
pub fn is_final(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::Succeeded | TaskState::Dead | TaskState::Cancelled | TaskState::Failed
    )
}

/// One attempt (lease) of a task.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Attempt {
    pub attempt: i32,
    pub lease_id: Uuid,
    pub fencing_token: i64,
    pub worker: Option<String>,
    pub leased_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// How the attempt ended: `succeeded`; `failed` (reported); `lost` (the lease expired
    /// without a heartbeat or report, within the task's timeout: the worker vanished; the task
    /// was queued again without using an attempt); `expired` (the lease expired and counted as
    /// a failed attempt: the task ran past its timeout, or it lost more leases than
    /// `retry.max_lease_losses`); `released` (given back by a stopping worker; not counted);
    /// `cancelled`. Absent while leased.
    pub outcome: Option<String>,
    pub error: Option<String>,
    /// When a failed attempt was followed by a retry: the earliest time of the next attempt.
    pub next_run_at: Option<DateTime<Utc>>,
}
