//! `controlplane tasks submit --file tasks.jsonl`: submits a file of tasks, one JSON object per
//! line (the items of `POST /v1/tasks/batch`), in batches of up to 1,000.
//!
//! Every line gets an idempotency key unless it has its own: `{prefix}:{line digest}:{n}`, the
//! SHA-256 of the line's text and its occurrence among identical lines. Running the command
//! again after a failure (or twice) stores nothing twice; a new `--key-prefix` (a run id, a
//! date) submits the same lines again as new tasks. Blank lines and lines starting with `#` are
//! skipped.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::model::submission::{MAX_BATCH_TASKS, TaskBatchResponse};

/// What `submit` reads and where it sends it.
#[derive(Debug, Clone)]
pub struct SubmitOptions {
    /// Base URL, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// A team's API key.
    pub api_key: String,
    /// One task per line.
    pub file: PathBuf,
    /// Tasks per request (1 to 1,000).
    pub batch_size: usize,
    /// Scopes the derived idempotency keys; `None`: no derived keys (every run creates tasks).
    pub key_prefix: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Lines that are not JSON objects: nothing was sent.
    #[error("{}", .0.join("\n"))]
    BadLines(Vec<String>),
    #[error("{path} has no task (only blank lines and comments)")]
    Empty { path: PathBuf },
    #[error("cannot reach the control plane at {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    /// The API refused a batch: one line per bad item (`file:line: detail`), or its problem
    /// detail; the batches before it were stored.
    #[error("{}", .lines.join("\n"))]
    Refused { lines: Vec<String> },
    #[error("unexpected answer from the control plane: {0}")]
    Unexpected(String),
}

/// One submitted line.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Submitted {
    pub line: usize,
    pub task_id: uuid::Uuid,
    pub state: String,
    /// The task existed already (its key was used before with the same task).
    pub replayed: bool,
}

/// Submits the file; `on_batch` hears about each stored batch (for progress).
pub async fn submit(
    options: &SubmitOptions,
    mut on_batch: impl FnMut(&[Submitted]),
) -> Result<Vec<Submitted>, SubmitError> {
    let text = std::fs::read_to_string(&options.file).map_err(|source| SubmitError::Read {
        path: options.file.clone(),
        source,
    })?;
    let name = options.file.display().to_string();
    let mut items: Vec<(usize, serde_json::Value)> = Vec::new();
    let mut bad = Vec::new();
    let mut occurrences: HashMap<[u8; 32], usize> = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let number = number + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match serde_json::from_str::<serde_json::Value>(trimmed) {
            Ok(serde_json::Value::Object(mut object)) => {
                if let Some(prefix) = &options.key_prefix
                    && !object.contains_key("idempotency_key")
                {
                    let digest: [u8; 32] = Sha256::digest(trimmed.as_bytes()).into();
                    let seen = occurrences.entry(digest).or_default();
                    *seen += 1;
                    object.insert(
                        "idempotency_key".to_owned(),
                        format!("{prefix}:{}:{seen}", hex::encode(&digest[..12])).into(),
                    );
                }
                items.push((number, serde_json::Value::Object(object)));
            }
            Ok(_) => bad.push(format!("{name}:{number}: a task must be a JSON object")),
            Err(error) => bad.push(format!("{name}:{number}: not JSON: {error}")),
        }
    }
    if !bad.is_empty() {
        return Err(SubmitError::BadLines(bad));
    }
    if items.is_empty() {
        return Err(SubmitError::Empty {
            path: options.file.clone(),
        });
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|error| SubmitError::Unexpected(error.to_string()))?;
    let base = options.url.trim_end_matches('/');
    let size = options.batch_size.clamp(1, MAX_BATCH_TASKS);
    let mut submitted = Vec::with_capacity(items.len());
    for batch in items.chunks(size) {
        let body = serde_json::json!({
            "tasks": batch.iter().map(|(_, item)| item).collect::<Vec<_>>()
        });
        let response = client
            .post(format!("{base}/v1/tasks/batch"))
            .bearer_auth(&options.api_key)
            .json(&body)
            .send()
            .await
            .map_err(|source| SubmitError::Unreachable {
                url: base.to_owned(),
                source,
            })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(SubmitError::Refused {
                lines: refusal(&name, batch, status, &text, submitted.len()),
            });
        }
        let answer: TaskBatchResponse = serde_json::from_str(&text)
            .map_err(|error| SubmitError::Unexpected(format!("{error}: {text}")))?;
        if answer.items.len() != batch.len() {
            return Err(SubmitError::Unexpected(format!(
                "{} items answered for {} sent",
                answer.items.len(),
                batch.len()
            )));
        }
        let stored: Vec<Submitted> = batch
            .iter()
            .zip(answer.items)
            .map(|((line, _), item)| Submitted {
                line: *line,
                task_id: item.task.id,
                state: item.task.state.as_str().to_owned(),
                replayed: item.replayed,
            })
            .collect();
        on_batch(&stored);
        submitted.extend(stored);
    }
    Ok(submitted)
}

/// Why a batch was refused, as `file:line: detail` lines, and what was stored before it.
fn refusal(
    name: &str,
    batch: &[(usize, serde_json::Value)],
    status: reqwest::StatusCode,
    body: &str,
    stored_before: usize,
) -> Vec<String> {
    let problem: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let mut lines: Vec<String> = problem["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|error| {
            let index = usize::try_from(error["index"].as_u64()?).ok()?;
            let (line, _) = batch.get(index)?;
            Some(format!(
                "{name}:{line}: {}",
                error["detail"].as_str().unwrap_or_default()
            ))
        })
        .collect();
    if lines.is_empty() {
        let detail = problem["detail"].as_str().unwrap_or(body);
        lines.push(format!(
            "{name}: the control plane answered {status}: {detail}"
        ));
    }
    let first = batch.first().map_or(0, |(line, _)| *line);
    lines.push(format!(
        "nothing from line {first} on was stored; {stored_before} task(s) of the lines before were"
    ));
    lines
}
