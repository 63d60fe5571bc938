//! Workflows: DAGs of named tasks with `depends_on`.
//!
//! A task is queued when all its dependencies succeeded, with their results in
//! `dependency_results` (the worker passes them as `STACKSMITH_DEPENDENCY_RESULTS`). When a task
//! dies or is cancelled, its transitive dependents are cancelled (they can never run); with the
//! `fail_fast` policy every task of the workflow that has not started is cancelled as well.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::Invalid;
use super::task::{CreateTaskRequest, NewTask, RetryPolicy, Task, TaskState};

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
    pub fn as_str(self) -> &'static str {
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
fn invalid(detail: impl Into<String>) -> Invalid {
    Invalid(detail.into())
}

fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Validates the request and returns its tasks in dependency order.
pub fn validate(request: &CreateWorkflowRequest) -> Result<Vec<NewWorkflowTask>, Invalid> {
    if let Some(name) = &request.name {
        super::team::validate_name(name)?;
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

/// A validated workflow task: its name, its task and the names it depends on.
#[derive(Debug, Clone)]
pub struct NewWorkflowTask {
    pub name: String,
    pub task: NewTask,
    pub depends_on: Vec<String>,
}

impl Workflow {
    /// A workflow with its tasks (in submission order): counts per state and the aggregate
    /// state.
    pub fn assemble(
        id: Uuid,
        name: Option<String>,
        failure_policy: &str,
        created_at: DateTime<Utc>,
        tasks: Vec<(Task, Vec<String>)>,
    ) -> Self {
        let mut counts: BTreeMap<String, u32> = BTreeMap::new();
        let mut nodes = Vec::with_capacity(tasks.len());
        for (task, depends_on) in tasks {
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
        Self {
            id,
            name,
            failure_policy: if failure_policy == "continue" {
                FailurePolicy::Continue
            } else {
                FailurePolicy::FailFast
            },
            state,
            counts,
            created_at,
            tasks: nodes,
        }
    }
}
