//! The `workflows` table and the dependencies between its tasks.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

use super::tasks::{TaskRow, task_columns};
use crate::model::UnknownState;
use crate::model::task::Task;
use crate::model::workflow::{NewWorkflowTask, Workflow};

#[derive(Debug, Clone, FromRow)]
pub struct WorkflowRow {
    pub id: Uuid,
    pub team_id: Uuid,
    pub name: Option<String>,
    pub failure_policy: String,
    pub created_at: DateTime<Utc>,
}

/// Inserts a workflow whose tasks are in dependency order (every dependency before its
/// dependents). Tasks without dependencies are queued at once.
pub async fn insert(
    db: &PgPool,
    team_id: Uuid,
    name: Option<&str>,
    failure_policy: &str,
    tasks: &[NewWorkflowTask],
) -> Result<(WorkflowRow, Vec<(TaskRow, Vec<String>)>), sqlx::Error> {
    let mut transaction = db.begin().await?;
    let workflow = sqlx::query_as::<_, WorkflowRow>(
        "INSERT INTO workflows (id, team_id, name, failure_policy) VALUES ($1, $2, $3, $4)
         RETURNING id, team_id, name, failure_policy, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(team_id)
    .bind(name)
    .bind(failure_policy)
    .fetch_one(&mut *transaction)
    .await?;
    let mut inserted: Vec<(TaskRow, Vec<String>)> = Vec::with_capacity(tasks.len());
    for spec in tasks {
        let row = super::tasks::insert_in_workflow(
            &mut *transaction,
            team_id,
            &spec.task,
            Some((workflow.id, &spec.name, !spec.depends_on.is_empty())),
        )
        .await?;
        for dependency in &spec.depends_on {
            let depends_on = inserted
                .iter()
                .find(|(task, _)| task.workflow_node.as_deref() == Some(dependency.as_str()))
                .map(|(task, _)| task.id)
                .ok_or(sqlx::Error::RowNotFound)?;
            sqlx::query("INSERT INTO task_dependencies (task_id, depends_on) VALUES ($1, $2)")
                .bind(row.id)
                .bind(depends_on)
                .execute(&mut *transaction)
                .await?;
        }
        inserted.push((row, spec.depends_on.clone()));
    }
    transaction.commit().await?;
    Ok((workflow, inserted))
}

/// A workflow of `team_id` with its tasks (in creation order) and each task's dependency names.
pub async fn find(
    db: &PgPool,
    team_id: Uuid,
    id: Uuid,
) -> Result<Option<(WorkflowRow, Vec<(TaskRow, Vec<String>)>)>, sqlx::Error> {
    let Some(workflow) = sqlx::query_as::<_, WorkflowRow>(
        "SELECT id, team_id, name, failure_policy, created_at FROM workflows
         WHERE id = $1 AND team_id = $2",
    )
    .bind(id)
    .bind(team_id)
    .fetch_optional(db)
    .await?
    else {
        return Ok(None);
    };
    let tasks = sqlx::query_as::<_, TaskRow>(concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks WHERE workflow_id = $1 ORDER BY id"
    ))
    .bind(id)
    .fetch_all(db)
    .await?;
    let edges: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT td.task_id, d.workflow_node FROM task_dependencies td
         JOIN tasks t ON t.id = td.task_id JOIN tasks d ON d.id = td.depends_on
         WHERE t.workflow_id = $1 ORDER BY d.id",
    )
    .bind(id)
    .fetch_all(db)
    .await?;
    let tasks = tasks
        .into_iter()
        .map(|task| {
            let depends_on = edges
                .iter()
                .filter(|(task_id, _)| *task_id == task.id)
                .map(|(_, name)| name.clone())
                .collect();
            (task, depends_on)
        })
        .collect();
    Ok(Some((workflow, tasks)))
}

/// The model of a workflow read with [`find`] or written with [`insert`].
pub fn to_model(
    workflow: WorkflowRow,
    tasks: Vec<(TaskRow, Vec<String>)>,
) -> Result<Workflow, UnknownState> {
    let tasks = tasks
        .into_iter()
        .map(|(row, depends_on)| Ok((Task::try_from(row)?, depends_on)))
        .collect::<Result<Vec<_>, UnknownState>>()?;
    Ok(Workflow::assemble(
        workflow.id,
        workflow.name,
        &workflow.failure_policy,
        workflow.created_at,
        tasks,
    ))
}
