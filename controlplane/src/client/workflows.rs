//! `controlplane workflows run`: submits a workflow file to a control plane and follows it until
//! every task is final, the way a team's CI job would.
//!
//! The file is the body of `POST /v1/workflows` (JSON). Progress goes to stderr, one line per task
//! state change; the final workflow (tasks, states, results) goes to stdout, as JSON with
//! `--json`. The outcome is the exit code: succeeded 0, anything else (failed, cancelled, still
//! running at the deadline) 1.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::model::task::TaskState;
use crate::model::workflow::{Workflow, WorkflowState};

/// How `run` reaches the control plane and what it submits.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Base URL, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// A team's API key.
    pub api_key: String,
    /// The workflow: the body of `POST /v1/workflows`.
    pub file: PathBuf,
    /// Longest time to follow the workflow before giving up (exit 1; the workflow keeps running).
    pub wait: Duration,
    /// How often the workflow is read.
    pub poll: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot read the workflow file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not JSON: {source}")]
    NotJson {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot reach the control plane at {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    /// The API refused the request; `detail` is its problem+json detail (or the body).
    #[error("the control plane answered {status} to {what}: {detail}")]
    Refused {
        what: &'static str,
        status: reqwest::StatusCode,
        detail: String,
    },
    #[error("unexpected answer to {what}: {source}")]
    Unexpected {
        what: &'static str,
        source: reqwest::Error,
    },
}

/// Where the workflow ended up.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub workflow: Workflow,
    /// False when the deadline passed with tasks still running.
    pub finished: bool,
    pub elapsed: Duration,
}

impl RunOutcome {
    pub fn succeeded(&self) -> bool {
        self.finished && self.workflow.state == WorkflowState::Succeeded
    }
}

/// Submits the workflow and follows it; `progress` receives one line per task state change.
pub async fn run(
    options: &RunOptions,
    mut progress: impl FnMut(&str),
) -> Result<RunOutcome, RunError> {
    let text = std::fs::read_to_string(&options.file).map_err(|source| RunError::Read {
        path: options.file.clone(),
        source,
    })?;
    let body: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| RunError::NotJson {
            path: options.file.clone(),
            source,
        })?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|source| RunError::Unexpected {
            what: "building the HTTP client",
            source,
        })?;
    let base = options.url.trim_end_matches('/');
    let started = Instant::now();
    let submitted = client
        .post(format!("{base}/v1/workflows"))
        .bearer_auth(&options.api_key)
        .json(&body)
        .send()
        .await
        .map_err(|source| RunError::Unreachable {
            url: base.to_owned(),
            source,
        })?;
    let mut workflow: Workflow = answer(submitted, "submitting the workflow").await?;
    progress(&format!(
        "workflow {} submitted with {} tasks",
        workflow.id,
        workflow.tasks.len()
    ));
    let mut seen: BTreeMap<String, TaskState> = BTreeMap::new();
    // Bounded by `options.wait`.
    loop {
        for task in &workflow.tasks {
            if seen.get(&task.name) != Some(&task.task.state) {
                seen.insert(task.name.clone(), task.task.state);
                progress(&format!(
                    "[{:>6.1}s] {}: {}",
                    started.elapsed().as_secs_f64(),
                    task.name,
                    task.task.state.as_str()
                ));
            }
        }
        let finished = workflow.state != WorkflowState::Running;
        if finished || started.elapsed() >= options.wait {
            return Ok(RunOutcome {
                workflow,
                finished,
                elapsed: started.elapsed(),
            });
        }
        tokio::time::sleep(options.poll).await;
        let read = client
            .get(format!("{base}/v1/workflows/{}", workflow.id))
            .bearer_auth(&options.api_key)
            .send()
            .await;
        // Once submitted, the workflow runs whether or not we watch: a replica going away
        // (a rollout, a lost node) or a server error is retried until the deadline.
        match read {
            Ok(read) if read.status().is_server_error() => {
                progress(&format!(
                    "reading the workflow: {}; retrying",
                    read.status()
                ));
            }
            Ok(read) => workflow = answer(read, "reading the workflow").await?,
            Err(error) => progress(&format!(
                "cannot reach the control plane at {base} ({error}); retrying"
            )),
        }
    }
}

async fn answer<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
    what: &'static str,
) -> Result<T, RunError> {
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let detail = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|problem| problem["detail"].as_str().map(str::to_owned))
            .unwrap_or(body);
        return Err(RunError::Refused {
            what,
            status,
            detail,
        });
    }
    response
        .json()
        .await
        .map_err(|source| RunError::Unexpected { what, source })
}

/// The human summary of an outcome: the aggregate state, then each task's state and result.
pub fn summary(outcome: &RunOutcome) -> String {
    let workflow = &outcome.workflow;
    let mut text = if outcome.finished {
        format!(
            "workflow {} {} after {:.1}s\n",
            workflow.id,
            match workflow.state {
                WorkflowState::Running => "running",
                WorkflowState::Succeeded => "succeeded",
                WorkflowState::Failed => "failed",
                WorkflowState::Cancelled => "was cancelled",
            },
            outcome.elapsed.as_secs_f64()
        )
    } else {
        format!(
            "workflow {} still running after {:.1}s (it goes on; follow it at GET /v1/workflows/{})\n",
            workflow.id,
            outcome.elapsed.as_secs_f64(),
            workflow.id
        )
    };
    for task in &workflow.tasks {
        let detail = match (&task.task.result, &task.task.last_error) {
            (Some(result), _) => format!("result {result}"),
            (None, Some(error)) => format!("error: {error}"),
            (None, None) => String::new(),
        };
        text.push_str(&format!(
            "  {:<16} {:<10} {detail}\n",
            task.name,
            task.task.state.as_str()
        ));
    }
    text
}
