//! The state backend seam.

use std::time::Duration;

use super::{LockInfo, StateDocument, StoredDeployment};
use crate::engine::provider::BoxFuture;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("state I/O on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("state at {location} is not valid state JSON: {source}")]
    Corrupt {
        location: String,
        source: serde_json::Error,
    },
    #[error("state of `{deployment}` is locked by {}; waited {waited:?}. If that run is gone, `provisioner state unlock` removes the lock", holder.describe())]
    Locked {
        deployment: String,
        holder: Box<LockInfo>,
        waited: Duration,
    },
    #[error(
        "state of `{deployment}` is locked by another session (holder unknown); waited {waited:?}"
    )]
    LockedUnknownHolder {
        deployment: String,
        waited: Duration,
    },
    #[error(
        "state of `{deployment}` was written by someone else (serial {found} >= {attempted}): this run lost its lock"
    )]
    Conflict {
        deployment: String,
        found: u64,
        attempted: u64,
    },
    #[error("Postgres state backend: {0}")]
    Database(#[from] sqlx::Error),
}

/// A held lock. Dropping it without [`LockGuard::release`] leaves a record that later runs detect
/// as stale (local: dead pid or age; Postgres: the session ended).
pub trait LockGuard: Send + Sync {
    fn info(&self) -> &LockInfo;
    fn release(self: Box<Self>) -> BoxFuture<'static, Result<(), BackendError>>;
}

/// Where one deployment's state lives.
pub trait StateBackend: Send + Sync {
    /// A human description (`file .stacksmith/state/demo.json`, `postgres deployment demo`).
    fn describe(&self) -> String;

    /// Takes the deployment's lock, waiting up to `timeout` (polling), or fails naming the holder.
    fn lock<'a>(
        &'a self,
        info: LockInfo,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Box<dyn LockGuard>, BackendError>>;

    /// The current lock holder, if any.
    fn current_lock(&self) -> BoxFuture<'_, Result<Option<LockInfo>, BackendError>>;

    /// Removes a lock regardless of holder; returns what was removed.
    fn force_unlock(&self) -> BoxFuture<'_, Result<Option<LockInfo>, BackendError>>;

    /// The saved document, `None` when the deployment has no state yet.
    fn load(&self) -> BoxFuture<'_, Result<Option<StateDocument>, BackendError>>;

    /// Saves atomically. The caller holds the lock and has incremented the serial.
    fn save<'a>(&'a self, document: &'a StateDocument) -> BoxFuture<'a, Result<(), BackendError>>;

    /// Every deployment kept in the same store as this one (the same state directory, the same
    /// database), with its saved document: how `instances` and `gc` find a stack's instances.
    fn list_deployments(&self) -> BoxFuture<'_, Result<Vec<StoredDeployment>, BackendError>>;
}

/// How often lock waiters poll.
pub const LOCK_POLL_INTERVAL: Duration = Duration::from_millis(200);
