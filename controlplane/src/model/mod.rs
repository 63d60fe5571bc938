//! The domain: tasks, their states and retry policy, leases and attempts, workflows, teams and
//! API keys, with their validation. No SQL, no HTTP: `store` persists these types, `http` shows
//! them, and the worker and the clients read them off the wire.

pub mod api_key;
pub mod lease;
pub mod submission;
pub mod task;
pub mod team;
pub mod workflow;

/// A submission or request that breaks a rule of the model; the text says which.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid request: {0}")]
pub struct Invalid(pub String);

/// A state name read back from storage that the model does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown task state {0:?} in the database")]
pub struct UnknownState(pub String);
