//! Lock records: who holds a deployment's state, from where, since when.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// Unique per acquisition, so a holder only ever releases its own lock.
    pub id: String,
    /// The user and command holding the lock, e.g. `alice: provisioner up`.
    pub holder: String,
    pub host: String,
    pub pid: u32,
    pub created_at: DateTime<Utc>,
}

impl LockInfo {
    /// A lock record for this process.
    pub fn for_this_process(operation: &str) -> Self {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("USERNAME"))
            .unwrap_or_else(|_| "unknown".to_owned());
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            holder: format!("{user}: provisioner {operation}"),
            host: this_host(),
            pid: std::process::id(),
            created_at: Utc::now(),
        }
    }

    /// A lock is stale when its process is gone (same host) or it is older than `stale_after`.
    pub fn is_stale(&self, stale_after: Duration, now: DateTime<Utc>) -> bool {
        let age = now.signed_duration_since(self.created_at);
        let too_old = age.to_std().is_ok_and(|age| age > stale_after);
        let dead_here = self.host == this_host() && !process_alive(self.pid);
        too_old || dead_here
    }

    pub fn describe(&self) -> String {
        format!(
            "{} (host {}, pid {}, since {})",
            self.holder,
            self.host,
            self.pid,
            self.created_at.format("%Y-%m-%dT%H:%M:%SZ")
        )
    }
}

/// This machine's host name.
pub fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".to_owned())
}

/// Whether a process with this pid runs on this host (Linux: `/proc/<pid>` exists and is not a
/// zombie). Elsewhere the pid cannot be checked and is assumed alive; the age bound applies.
pub fn process_alive(pid: u32) -> bool {
    let proc_root = std::path::Path::new("/proc");
    if !proc_root.join("self").exists() {
        return true;
    }
    match std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")) {
        // Field 3 (after the parenthesised command) is the state; `Z` is a zombie, `X` dead.
        Ok(stat) => match stat.rsplit_once(')') {
            Some((_, rest)) => !matches!(rest.trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness_by_dead_pid_and_by_age() {
        let mut info = LockInfo::for_this_process("up");
        let now = Utc::now();
        assert!(!info.is_stale(Duration::from_secs(3600), now));
        info.pid = u32::MAX - 1;
        assert!(info.is_stale(Duration::from_secs(3600), now));
        let mut old = LockInfo::for_this_process("up");
        old.host = "elsewhere".into();
        old.created_at = now - chrono::Duration::hours(2);
        assert!(old.is_stale(Duration::from_secs(3600), now));
        assert!(!old.is_stale(Duration::from_secs(3 * 3600), now));
    }
}
