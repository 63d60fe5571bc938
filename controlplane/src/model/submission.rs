//! Submissions: one task (`POST /v1/tasks`) or a batch (`POST /v1/tasks/batch`), idempotency
//! keys and the fingerprint a key is bound to.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::Invalid;
use super::task::{CreateTaskRequest, NewTask, RetryPolicy, Task};

/// Most tasks in one batch.
pub const MAX_BATCH_TASKS: usize = 1000;
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;

/// An idempotency key: 1-255 visible ASCII characters.
pub fn valid_idempotency_key(key: &str) -> bool {
    (1..=MAX_IDEMPOTENCY_KEY_BYTES).contains(&key.len())
        && key.bytes().all(|b| b.is_ascii_graphic())
}

/// What an idempotency key is bound to: the SHA-256 of the submission's canonical JSON (fields
/// in declaration order, defaults filled in), the same for `POST /v1/tasks` and a batch item.
pub fn fingerprint(request: &CreateTaskRequest) -> [u8; 32] {
    let canonical = serde_json::to_vec(request).unwrap_or_default();
    Sha256::digest(&canonical).into()
}

fn default_timeout_seconds() -> u32 {
    3600
}

/// One task of a batch: a task submission and, optionally, its own idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchTaskItem {
    /// Makes this item safe to submit again, in this batch or another (or as the
    /// `Idempotency-Key` of a single submission): the same key with the same task gives the
    /// task created first; with another task the batch is refused.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 255)]
    pub idempotency_key: Option<String>,
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

impl BatchTaskItem {
    /// The item's key and its task submission.
    pub fn into_parts(self) -> (Option<String>, CreateTaskRequest) {
        (
            self.idempotency_key,
            CreateTaskRequest {
                pool: self.pool,
                command: self.command,
                env: self.env,
                timeout_seconds: self.timeout_seconds,
                priority: self.priority,
                retry: self.retry,
            },
        )
    }
}

/// A batch of tasks for the calling team: stored all together or not at all.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTaskBatchRequest {
    /// 1 to 1,000 tasks.
    #[schema(min_items = 1, max_items = 1000)]
    pub tasks: Vec<BatchTaskItem>,
}

/// One item of a batch's answer, in the order of the request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BatchItem {
    pub task: Task,
    /// True when the item's idempotency key had been used before with the same task: `task` is
    /// the task created then (as it was created), and no new task was made.
    pub replayed: bool,
}

/// The answer to a batch.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskBatchResponse {
    pub items: Vec<BatchItem>,
}

/// A valid submission, ready to store.
#[derive(Debug, Clone)]
pub struct Submission {
    pub idempotency_key: Option<String>,
    /// What the key is bound to ([`fingerprint`]): computed only when there is a key.
    pub fingerprint: Option<[u8; 32]>,
    pub task: NewTask,
}

impl Submission {
    /// Validates one submission.
    pub fn new(
        idempotency_key: Option<String>,
        request: &CreateTaskRequest,
    ) -> Result<Self, Invalid> {
        if let Some(key) = &idempotency_key
            && !valid_idempotency_key(key)
        {
            return Err(Invalid(format!(
                "idempotency_key must be 1-{MAX_IDEMPOTENCY_KEY_BYTES} visible ASCII characters"
            )));
        }
        Ok(Self {
            task: request.validate()?,
            fingerprint: idempotency_key.as_ref().map(|_| fingerprint(request)),
            idempotency_key,
        })
    }
}

/// A bad item of a batch: its position (from 0) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ItemError {
    pub index: usize,
    pub detail: String,
}

/// Why a batch body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// The body as a whole (not an object with a `tasks` array of 1 to 1,000 items).
    Body(Invalid),
    /// Every bad item.
    Items(Vec<ItemError>),
}

/// Reads and validates a batch body, item by item, so that every bad item is named (a type
/// error in one item does not hide the others).
pub fn parse_batch(body: &serde_json::Value) -> Result<Vec<Submission>, BatchError> {
    let whole = |detail: String| BatchError::Body(Invalid(detail));
    let object = body
        .as_object()
        .ok_or_else(|| whole("the body must be an object with a `tasks` array".to_owned()))?;
    if let Some(unknown) = object.keys().find(|key| *key != "tasks") {
        return Err(whole(format!(
            "unknown field `{unknown}`, expected `tasks`"
        )));
    }
    let items = object
        .get("tasks")
        .and_then(|tasks| tasks.as_array())
        .ok_or_else(|| whole("`tasks` must be an array".to_owned()))?;
    if items.is_empty() || items.len() > MAX_BATCH_TASKS {
        return Err(whole(format!(
            "tasks must have 1 to {MAX_BATCH_TASKS} items, not {}",
            items.len()
        )));
    }
    let mut submissions = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (index, item) in items.iter().enumerate() {
        // Read from the tree in place, not from a copy of the item.
        let parsed = BatchTaskItem::deserialize(item)
            .map_err(|error| error.to_string())
            .and_then(|item| {
                let (key, request) = item.into_parts();
                Submission::new(key, &request).map_err(|invalid| invalid.0)
            });
        match parsed {
            Ok(submission) => submissions.push(submission),
            Err(detail) => errors.push(ItemError { index, detail }),
        }
    }
    if errors.is_empty() {
        Ok(submissions)
    } else {
        Err(BatchError::Items(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_item_is_named_by_its_index() {
        let body = serde_json::json!({"tasks": [
            {"pool": "ok", "command": ["true"]},
            {"pool": "Bad Pool", "command": ["true"]},
            {"pool": "ok", "command": "not a list"},
            {"pool": "ok", "command": ["true"], "idempotency_key": ""},
            {"pool": "ok", "command": ["true"], "surprise": 1},
        ]});
        let Err(BatchError::Items(errors)) = parse_batch(&body) else {
            panic!("not refused item by item");
        };
        let indexes: Vec<usize> = errors.iter().map(|e| e.index).collect();
        assert_eq!(indexes, [1, 2, 3, 4]);
        assert!(errors[0].detail.contains("pool"), "{errors:?}");
        assert!(errors[3].detail.contains("surprise"), "{errors:?}");
    }

    #[test]
    fn a_batch_item_and_a_single_submission_share_a_fingerprint() {
        let item: BatchTaskItem = serde_json::from_value(serde_json::json!(
            {"pool": "p", "command": ["true"], "idempotency_key": "k"}
        ))
        .unwrap();
        let single: CreateTaskRequest =
            serde_json::from_value(serde_json::json!({"pool": "p", "command": ["true"]})).unwrap();
        assert_eq!(fingerprint(&item.into_parts().1), fingerprint(&single));
    }

    #[test]
    fn empty_and_oversized_batches_are_refused() {
        assert!(parse_batch(&serde_json::json!({"tasks": []})).is_err());
        let many: Vec<_> = (0..=MAX_BATCH_TASKS)
            .map(|_| serde_json::json!({"pool": "p", "command": ["true"]}))
            .collect();
        assert!(parse_batch(&serde_json::json!({ "tasks": many })).is_err());
    }
}
