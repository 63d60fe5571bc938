//! The journal: the in-memory state document of a run, saved through the backend after every
//! change (pending entry written, pending entry settled).
//!
//! Saves use group commit: a change is applied in memory, then [`Journal::record`] returns only
//! once a save that includes it is durable. Changes made while a save is in flight are written
//! together by the next save, so concurrent steps do not queue one fsync each. Every save
//! increments the serial.

use std::sync::Arc;

use tokio::sync::Mutex;

use super::{BackendError, StateBackend, StateDocument};

struct Pending {
    document: StateDocument,
    /// Incremented on every change.
    version: u64,
}

pub struct Journal {
    backend: Arc<dyn StateBackend>,
    current: Mutex<Pending>,
    /// The highest change version known to be saved; held while saving.
    saved: Mutex<u64>,
}

impl Journal {
    /// Loads the deployment's state, or starts a new document (not saved until the first change).
    pub async fn open(
        backend: Arc<dyn StateBackend>,
        stack: &str,
        instance: Option<&str>,
    ) -> Result<Self, BackendError> {
        let document = backend
            .load()
            .await?
            .unwrap_or_else(|| StateDocument::new(stack, instance));
        Ok(Self::from_document(backend, document))
    }

    pub fn from_document(backend: Arc<dyn StateBackend>, document: StateDocument) -> Self {
        Self {
            backend,
            current: Mutex::new(Pending {
                document,
                version: 0,
            }),
            saved: Mutex::new(0),
        }
    }

    pub async fn snapshot(&self) -> StateDocument {
        self.current.lock().await.document.clone()
    }

    /// Applies `change` and waits until a save containing it is durable. On a failed save the
    /// in-memory document keeps the change; the caller stops.
    pub async fn record<T>(
        &self,
        change: impl FnOnce(&mut StateDocument) -> T,
    ) -> Result<T, BackendError> {
        let (result, version) = {
            let mut current = self.current.lock().await;
            let result = change(&mut current.document);
            current.version += 1;
            (result, current.version)
        };
        let mut saved = self.saved.lock().await;
        if *saved >= version {
            // A save that started after our change already wrote it.
            return Ok(result);
        }
        let (document, covered) = {
            let mut current = self.current.lock().await;
            current.document.serial += 1;
            (current.document.clone(), current.version)
        };
        self.backend.save(&document).await?;
        *saved = covered;
        Ok(result)
    }
}
