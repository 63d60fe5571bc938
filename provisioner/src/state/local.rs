//! The local-file backend: `.stacksmith/state/<deployment>.json` with a sibling `.lock` file.
//! Saves are atomic (temp file, fsync, rename, fsync of the directory); the lock file is created
//! exclusively and holds a [`LockInfo`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::backend::{BackendError, LOCK_POLL_INTERVAL, LockGuard, StateBackend};
use super::{LockInfo, StateDocument, StoredDeployment};
use crate::engine::provider::BoxFuture;

/// Locks older than this are stale even when their process cannot be checked (another host).
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(6 * 3600);

#[derive(Debug, Clone)]
pub struct LocalBackend {
    path: PathBuf,
    lock_path: PathBuf,
    stale_after: Duration,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> BackendError + '_ {
    move |source| BackendError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl LocalBackend {
    /// State at `<dir>/<deployment>.json`.
    pub fn new(state_dir: &Path, deployment: &str) -> Self {
        let path = state_dir.join(format!("{deployment}.json"));
        Self::at(path)
    }

    pub fn at(path: PathBuf) -> Self {
        let lock_path = path.with_extension("json.lock");
        Self {
            path,
            lock_path,
            stale_after: DEFAULT_STALE_AFTER,
        }
    }

    pub fn with_stale_after(mut self, stale_after: Duration) -> Self {
        self.stale_after = stale_after;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The default key file for secrets of this deployment: `<deployment>.key` beside the state.
    pub fn key_file(&self) -> PathBuf {
        self.path.with_extension("key")
    }

    fn read_lock(&self) -> Result<Option<LockInfo>, BackendError> {
        match std::fs::read_to_string(&self.lock_path) {
            Ok(text) => {
                serde_json::from_str(&text)
                    .map(Some)
                    .map_err(|source| BackendError::Corrupt {
                        location: self.lock_path.display().to_string(),
                        source,
                    })
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(io_error(&self.lock_path)(error)),
        }
    }

    fn try_create_lock(&self, info: &LockInfo) -> Result<bool, BackendError> {
        if let Some(parent) = self.lock_path.parent() {
            std::fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        // Write to a private temp file, then hard-link it into place: the link fails when a lock
        // exists, and readers never see a half-written lock file.
        let temp = self
            .lock_path
            .with_extension(format!("lock.{}.tmp", info.id));
        let body = serde_json::to_vec_pretty(info).expect("lock info serializes");
        let mut file = std::fs::File::create(&temp).map_err(io_error(&temp))?;
        file.write_all(&body).map_err(io_error(&temp))?;
        file.sync_all().map_err(io_error(&temp))?;
        let linked = std::fs::hard_link(&temp, &self.lock_path);
        let _ = std::fs::remove_file(&temp);
        match linked {
            Ok(()) => {
                sync_dir(&self.lock_path)?;
                Ok(true)
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(error) => Err(io_error(&self.lock_path)(error)),
        }
    }

    fn acquire_blocking(&self, info: &LockInfo, timeout: Duration) -> Result<(), BackendError> {
        let started = Instant::now();
        loop {
            if self.try_create_lock(info)? {
                return Ok(());
            }
            match self.read_lock() {
                Ok(Some(holder)) if holder.is_stale(self.stale_after, chrono::Utc::now()) => {
                    // Remove only the stale lock we inspected: a fresh one written since differs.
                    if self.read_lock().ok().flatten().as_ref() == Some(&holder) {
                        let _ = std::fs::remove_file(&self.lock_path);
                    }
                    continue;
                }
                Ok(Some(holder)) if started.elapsed() >= timeout => {
                    return Err(BackendError::Locked {
                        deployment: self.path.display().to_string(),
                        holder: Box::new(holder),
                        waited: started.elapsed(),
                    });
                }
                // Released between our attempt and the read: try again at once.
                Ok(None) => continue,
                Ok(Some(_)) | Err(_) if started.elapsed() < timeout => {
                    std::thread::sleep(LOCK_POLL_INTERVAL)
                }
                Ok(Some(_)) | Err(_) => {
                    return Err(BackendError::LockedUnknownHolder {
                        deployment: self.path.display().to_string(),
                        waited: started.elapsed(),
                    });
                }
            }
        }
    }
}

/// fsync of the directory holding `path`, so a rename or link survives a power cut.
fn sync_dir(path: &Path) -> Result<(), BackendError> {
    if let Some(dir) = path.parent() {
        let handle = std::fs::File::open(dir).map_err(io_error(dir))?;
        handle.sync_all().map_err(io_error(dir))?;
    }
    Ok(())
}

struct LocalLock {
    lock_path: PathBuf,
    info: LockInfo,
}

impl LockGuard for LocalLock {
    fn info(&self) -> &LockInfo {
        &self.info
    }

    fn release(self: Box<Self>) -> BoxFuture<'static, Result<(), BackendError>> {
        Box::pin(async move {
            // Only remove the lock if it is still ours (someone may have force-unlocked it).
            let ours = std::fs::read_to_string(&self.lock_path)
                .ok()
                .and_then(|text| serde_json::from_str::<LockInfo>(&text).ok())
                .is_some_and(|held| held.id == self.info.id);
            if ours {
                std::fs::remove_file(&self.lock_path).map_err(io_error(&self.lock_path))?;
            }
            Ok(())
        })
    }
}

impl StateBackend for LocalBackend {
    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    fn lock<'a>(
        &'a self,
        info: LockInfo,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Box<dyn LockGuard>, BackendError>> {
        Box::pin(async move {
            let backend = self.clone();
            let held = info.clone();
            tokio::task::spawn_blocking(move || backend.acquire_blocking(&held, timeout))
                .await
                .expect("the lock task does not panic")?;
            Ok(Box::new(LocalLock {
                lock_path: self.lock_path.clone(),
                info,
            }) as Box<dyn LockGuard>)
        })
    }

    fn current_lock(&self) -> BoxFuture<'_, Result<Option<LockInfo>, BackendError>> {
        Box::pin(async move { self.read_lock() })
    }

    fn force_unlock(&self) -> BoxFuture<'_, Result<Option<LockInfo>, BackendError>> {
        Box::pin(async move {
            let held = self.read_lock()?;
            match std::fs::remove_file(&self.lock_path) {
                Ok(()) => Ok(held),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(error) => Err(io_error(&self.lock_path)(error)),
            }
        })
    }

    fn load(&self) -> BoxFuture<'_, Result<Option<StateDocument>, BackendError>> {
        Box::pin(async move {
            match std::fs::read_to_string(&self.path) {
                Ok(text) => {
                    serde_json::from_str(&text)
                        .map(Some)
                        .map_err(|source| BackendError::Corrupt {
                            location: self.path.display().to_string(),
                            source,
                        })
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(error) => Err(io_error(&self.path)(error)),
            }
        })
    }

    fn list_deployments(&self) -> BoxFuture<'_, Result<Vec<StoredDeployment>, BackendError>> {
        Box::pin(async move {
            let Some(dir) = self.path.parent() else {
                return Ok(Vec::new());
            };
            let entries = match std::fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(error) => return Err(io_error(dir)(error)),
            };
            let mut found = Vec::new();
            for entry in entries {
                let path = entry.map_err(io_error(dir))?.path();
                // `<deployment>.json` only: not locks, keys or a save's temp files.
                let Some(name) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".json"))
                    .filter(|n| !n.contains('.'))
                    .map(str::to_owned)
                else {
                    continue;
                };
                if let Some(document) = LocalBackend::at(path).load().await? {
                    found.push(StoredDeployment { name, document });
                }
            }
            found.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(found)
        })
    }

    fn save<'a>(&'a self, document: &'a StateDocument) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            if let Some(parent) = self.path.parent() {
                std::fs::create_dir_all(parent).map_err(io_error(parent))?;
            }
            let temp = self
                .path
                .with_extension(format!("json.{}.tmp", std::process::id()));
            let mut body = serde_json::to_vec_pretty(document).expect("state serializes");
            body.push(b'\n');
            let mut file = std::fs::File::create(&temp).map_err(io_error(&temp))?;
            file.write_all(&body).map_err(io_error(&temp))?;
            file.sync_all().map_err(io_error(&temp))?;
            drop(file);
            std::fs::rename(&temp, &self.path).map_err(io_error(&self.path))?;
            sync_dir(&self.path)
        })
    }
}
