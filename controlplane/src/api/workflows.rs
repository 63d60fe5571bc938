//! `/v1/workflows`: DAGs of named tasks with `depends_on`.
//!
//! A task is queued when all its dependencies succeeded, with their results in
//! `dependency_results` (the worker passes them as `STACKSMITH_DEPENDENCY_RESULTS`). When a task
//! dies or is cancelled, its transitive dependents are cancelled (they can never run); with the
//! `fail_fast` policy every task of the workflow that has not started is cancelled as well.

use std::collections::{BTreeMap, HashMap};

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::TeamCaller;
use crate::db;
use crate::db::tasks::TaskRow;
use crate::db::workflows::{NewWorkflowTask, WorkflowRow};
use crate::problem::{ApiError, ApiJson, ApiPath};
use crate::state::AppState;

use super::tasks::{CreateTaskRequest, RetryPolicy, Task, TaskState};

pub const MAX_WORKFLOW_TASKS: usize = 100;

/// What happens to the rest of a workflow when one of its tasks dies or is cancelled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Every task that has not started is cancelled.
    #[default]
    FailFast,
    /// Only the failed task's dependents are cancelled; other branches go on.
    Continue,
}

impl FailurePolicy {
    fn as_str(self) -> &'static str {
        match self {
            Self::FailFast => "fail_fast",
            Self::Continue => "continue",
        }
    }
}

fn default_timeout_seconds() -> u32 {
    3600
}

/// One task of a workflow: a task submission plus its name and dependencies.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowTaskRequest {
    /// Unique in the workflow: letters, digits, `_` and `-`, at most 63 characters.
    #[schema(
        min_length = 1,
        max_length = 63,
        pattern = "^[A-Za-z0-9_-]+$",
        example = "build"
    )]
    pub name: String,
    /// Names of the tasks that must succeed first.
    #[serde(default)]
    #[schema(max_items = 100)]
    pub depends_on: Vec<String>,
    #[schema(
        min_length = 1,
        max_length = 63,
        pattern = "^[a-z0-9][a-z0-9-]*$",
        example = "default"
    )]
    pub pool: String,
    #[schema(min_items = 1, max_items = 256, example = json!(["echo", "hello"]))]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default = "default_timeout_seconds")]
    #[schema(minimum = 1, maximum = 86400, default = 3600)]
    pub timeout_seconds: u32,
    #[serde(default)]
    #[schema(minimum = -1000, maximum = 1000, default = 0)]
    pub priority: i32,
    #[serde(default)]
    pub retry: RetryPolicy,
}

/// A workflow submission.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkflowRequest {
    #[serde(default)]
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    /// 1 to 100 tasks; `depends_on` must name tasks of this list and form no cycle.
    #[schema(min_items = 1, max_items = 100)]
    pub tasks: Vec<WorkflowTaskRequest>,
}

/// Aggregate state of a workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowState {
    /// Some task is pending, queued or leased.
    Running,
    /// Every task succeeded.
    Succeeded,
    /// Every task is final and some task is dead.
    Failed,
    /// Every task is final, none dead, some cancelled.
    Cancelled,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkflowTask {
    pub name: String,
    pub depends_on: Vec<String>,
    pub task: Task,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Workflow {
    pub id: Uuid,
    pub name: Option<String>,
    pub failure_policy: FailurePolicy,
    pub state: WorkflowState,
    /// Number of tasks per state.
    pub counts: BTreeMap<String, u32>,
    pub created_at: DateTime<Utc>,
    /// In submission order.
    pub tasks: Vec<WorkflowTask>,
}

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::Unprocessable(detail.into())
}

fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Validates the request and returns its tasks in dependency order.
fn validate(request: &CreateWorkflowRequest) -> Result<Vec<NewWorkflowTask>, ApiError> {
    if let Some(name) = &request.name {
        super::teams::validate_name(name)?;
    }
    if request.tasks.is_empty() || request.tasks.len() > MAX_WORKFLOW_TASKS {
        return Err(invalid(format!(
            "tasks must have 1 to {MAX_WORKFLOW_TASKS} items"
        )));
    }
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (position, task) in request.tasks.iter().enumerate() {
        if !valid_name(&task.name) {
            return Err(invalid(format!(
                "task name {:?} must be 1-63 letters, digits, '_' or '-'",
                task.name
            )));
        }
        if index.insert(&task.name, position).is_some() {
            return Err(invalid(format!("task name {:?} is used twice", task.name)));
        }
    }
    let mut specs = Vec::with_capacity(request.tasks.len());
    for task in &request.tasks {
        if task.depends_on.len() > MAX_WORKFLOW_TASKS {
            return Err(invalid("depends_on has more than 100 items"));
        }
        for dependency in &task.depends_on {
            if !index.contains_key(dependency.as_str()) {
                return Err(invalid(format!(
                    "task {:?} depends on {dependency:?}, which is not a task of this workflow",
                    task.name
                )));
            }
        }
        let submission = CreateTaskRequest {
            pool: task.pool.clone(),
            command: task.command.clone(),
            env: task.env.clone(),
            timeout_seconds: task.timeout_seconds,
            priority: task.priority,
            retry: task.retry.clone(),
        };
        let new_task = submission
            .validate()
            .map_err(|error| invalid(format!("task {:?}: {error}", task.name)))?;
        let mut depends_on = task.depends_on.clone();
        depends_on.sort();
        depends_on.dedup();
        specs.push(NewWorkflowTask {
            name: task.name.clone(),
            task: new_task,
            depends_on,
        });
    }
    // Kahn's algorithm: a topological order, or the tasks left on a cycle.
    let mut remaining: Vec<usize> = specs.iter().map(|spec| spec.depends_on.len()).collect();
    let mut ready: Vec<usize> = (0..specs.len()).filter(|&i| remaining[i] == 0).collect();
    ready.reverse();
    let mut order = Vec::with_capacity(specs.len());
    while let Some(next) = ready.pop() {
        order.push(next);
        for (i, spec) in specs.iter().enumerate() {
            if spec.depends_on.contains(&specs[next].name) {
                remaining[i] -= 1;
                if remaining[i] == 0 {
                    ready.push(i);
                }
            }
        }
    }
    if order.len() < specs.len() {
        let mut cycle: Vec<&str> = (0..specs.len())
            .filter(|i| !order.contains(i))
            .map(|i| specs[i].name.as_str())
            .collect();
        cycle.sort_unstable();
        return Err(invalid(format!(
            "the dependencies form a cycle through: {}",
            cycle.join(", ")
        )));
    }
    let mut slots: Vec<Option<NewWorkflowTask>> = specs.into_iter().map(Some).collect();
    Ok(order.into_iter().filter_map(|i| slots[i].take()).collect())
}

fn view(workflow: WorkflowRow, tasks: Vec<(TaskRow, Vec<String>)>) -> Result<Workflow, ApiError> {
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    let mut nodes = Vec::with_capacity(tasks.len());
    for (row, depends_on) in tasks {
        let task = Task::try_from(row)?;
        *counts.entry(task.state.as_str().to_owned()).or_default() += 1;
        nodes.push(WorkflowTask {
            name: task.workflow_task.clone().unwrap_or_default(),
            depends_on,
            task,
        });
    }
    let states: Vec<TaskState> = nodes.iter().map(|node| node.task.state).collect();
    let state = if states.iter().any(|s| {
        matches!(
            s,
            TaskState::Pending | TaskState::Queued | TaskState::Leased | TaskState::Running
        )
    }) {
        WorkflowState::Running
    } else if states.iter().all(|s| *s == TaskState::Succeeded) {
        WorkflowState::Succeeded
    } else if states
        .iter()
        .any(|s| matches!(s, TaskState::Dead | TaskState::Failed))
    {
        WorkflowState::Failed
    } else {
        WorkflowState::Cancelled
    };
    Ok(Workflow {
        id: workflow.id,
        name: workflow.name,
        failure_policy: if workflow.failure_policy == "continue" {
            FailurePolicy::Continue
        } else {
            FailurePolicy::FailFast
        },
        state,
        counts,
        created_at: workflow.created_at,
        tasks: nodes,
    })
}

/// Submit a workflow: a DAG of named tasks.
#[utoipa::path(post, path = "/v1/workflows", tag = "tasks", security(("api_key" = [])),
    request_body = CreateWorkflowRequest,
    responses(
        (status = 201, description = "Workflow created; tasks without dependencies are queued", body = Workflow, headers(("Location" = String, description = "URL of the workflow"))),
        (status = 400, description = "Malformed request", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a team key", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid workflow: unknown dependency, cycle, duplicate name or invalid task", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_workflow(
    State(state): State<AppState>,
    caller: TeamCaller,
    ApiJson(request): ApiJson<CreateWorkflowRequest>,
) -> Result<Response, ApiError> {
    let tasks = validate(&request)?;
    let (workflow, rows) = db::workflows::insert(
        &state.db,
        caller.team_id,
        request.name.as_deref(),
        request.failure_policy.as_str(),
        &tasks,
    )
    .await?;
    state.announce_queued().await;
    let workflow = view(workflow, rows)?;
    let location = format!("/v1/workflows/{}", workflow.id);
    let mut response = (StatusCode::CREATED, axum::Json(workflow)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// Read a workflow: each task's state and result, and the aggregate state.
#[utoipa::path(get, path = "/v1/workflows/{workflow_id}", tag = "tasks", security(("api_key" = [])),
    params(("workflow_id" = Uuid, Path, description = "Workflow id")),
    responses(
        (status = 200, description = "The workflow", body = Workflow),
        (status = 400, description = "Malformed workflow id", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a team key", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such workflow for this team", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_workflow(
    State(state): State<AppState>,
    caller: TeamCaller,
    ApiPath(workflow_id): ApiPath<Uuid>,
) -> Result<axum::Json<Workflow>, ApiError> {
    let (workflow, tasks) = db::workflows::find(&state.db, caller.team_id, workflow_id)
        .await?
        .ok_or(ApiError::NotFound("workflow"))?;
    Ok(axum::Json(view(workflow, tasks)?))
}
