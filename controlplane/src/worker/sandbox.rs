//! What a task's process may see, and what is left of it afterwards (README, "What a task can
//! see"; ARCHITECTURE.md, invariant "a task never sees the worker's credentials").
//!
//! - **Environment**: a task's process starts from an empty environment: `PATH` (the worker's, so
//!   the image's tools are found, else a standard one), a private `HOME` and `TMPDIR`, the task's
//!   own `env`, then the `STACKSMITH_*` variables. Nothing else of the worker's environment (its
//!   key, `DATABASE_URL`, ...) is passed on.
//! - **The worker's memory**: [`harden_worker`] makes the worker non-dumpable
//!   (`prctl(PR_SET_DUMPABLE, 0)`): the kernel then refuses `/proc/<worker>/environ`, `mem`,
//!   `fd`, `maps`, `ptrace` and `process_vm_readv` to a process of the same user without
//!   `CAP_SYS_PTRACE`, and the worker writes no core dump. Tasks start dumpable again (execve
//!   resets it): a task can read its own `/proc/self`, and on a laptop a concurrent task of the
//!   same user can read it too.
//! - **Files**: `HOME` and `TMPDIR` are fresh 0700 directories below the task root, removed after
//!   the task.
//! - **Leftovers**: the task is the leader of a new process group, killed whole when it ends. A
//!   worker that owns its container ([`Sandbox::exclusive`], `--container-slot`) also kills every
//!   other process of its PID namespace after each task (`kill(-1)`, which spares PID 1 and the
//!   caller) and empties the task root and `/dev/shm`, so the next task, maybe another team's,
//!   finds nothing of this one.

use std::ffi::OsString;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::process::{DumpableBehavior, Pid, Signal};

/// `PATH` for tasks when the worker has none: Debian's and the OCI images' default.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Makes the current process non-dumpable: its `/proc/<pid>/environ`, `mem`, `fd`, `maps` and the
/// like are refused to other processes of the same user (they need `CAP_SYS_PTRACE`), it cannot
/// be attached with `ptrace`, and it writes no core dump. Called first thing by `controlplane
/// worker`, whose environment holds the worker key.
pub fn harden_worker() -> io::Result<()> {
    rustix::process::set_dumpable_behavior(DumpableBehavior::NotDumpable).map_err(io::Error::from)
}

/// Where tasks' private directories go, and whether the worker owns its PID namespace.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// The directory below which each task gets its `HOME` and `TMPDIR`.
    pub root: PathBuf,
    /// The worker is alone in its container with one task slot: after each task, kill every
    /// other process of the PID namespace and empty `root`.
    pub exclusive: bool,
    /// `PATH` given to tasks.
    pub path: OsString,
    /// With `exclusive`: the directories emptied after each task (`root` and `/dev/shm`, the
    /// slot's own memory-backed `emptyDir` in a worker pod).
    pub scratch: Vec<PathBuf>,
}

/// The private directories of one running task; [`Sandbox::finish`] removes them.
#[derive(Debug)]
pub struct TaskDirs {
    base: PathBuf,
    pub home: PathBuf,
    pub tmp: PathBuf,
}

impl Sandbox {
    /// Tasks' directories below `root` (default: the worker's temporary directory).
    pub fn new(root: Option<PathBuf>, exclusive: bool) -> Self {
        let root = root.unwrap_or_else(std::env::temp_dir);
        Self {
            scratch: if exclusive {
                vec![root.clone(), PathBuf::from("/dev/shm")]
            } else {
                Vec::new()
            },
            root,
            exclusive,
            path: std::env::var_os("PATH")
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| DEFAULT_PATH.into()),
        }
    }

    /// Creates the task's `HOME` and `TMPDIR` (0700; a random name, never an existing directory).
    pub fn prepare(&self, label: &str) -> io::Result<TaskDirs> {
        let label: String = label
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(40)
            .collect();
        let base = self.root.join(format!(
            "stacksmith-task-{label}-{:016x}",
            rand::random::<u64>()
        ));
        let mut builder = std::fs::DirBuilder::new();
        builder.mode(0o700);
        builder.create(&base)?;
        let home = base.join("home");
        let tmp = base.join("tmp");
        builder.create(&home)?;
        builder.create(&tmp)?;
        Ok(TaskDirs { base, home, tmp })
    }

    /// The task's command: `argv` with a clean environment (see the module documentation), its
    /// own process group, in the worker's working directory.
    pub fn command(
        &self,
        argv: &[String],
        dirs: &TaskDirs,
        task_env: impl IntoIterator<Item = (String, String)>,
        stacksmith_env: impl IntoIterator<Item = (&'static str, String)>,
    ) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .env_clear()
            .env("PATH", &self.path)
            .env("HOME", &dirs.home)
            .env("TMPDIR", &dirs.tmp)
            .envs(task_env)
            .envs(stacksmith_env)
            .process_group(0);
        command
    }

    /// After the task's process ended (exited, or killed and waited for): kills what it left
    /// running (its process group; with `exclusive`, every other process of the namespace) and
    /// removes its directories (with `exclusive`, everything in the task root). Never fails: what
    /// cannot be cleaned is logged.
    pub async fn finish(&self, process_group: Option<u32>, dirs: TaskDirs) {
        if let Some(group) = process_group
            .and_then(|g| i32::try_from(g).ok())
            .and_then(Pid::from_raw)
        {
            // ESRCH: the group is already empty.
            let _ = rustix::process::kill_process_group(group, Signal::KILL);
        }
        if self.exclusive {
            kill_everything_else().await;
            let scratch = self.scratch.clone();
            let _ = tokio::task::spawn_blocking(move || {
                for dir in &scratch {
                    empty_directory(dir);
                }
            })
            .await;
        } else {
            let _ = tokio::task::spawn_blocking(move || remove_tree(&dirs.base)).await;
        }
    }
}

/// Kills every process of this PID namespace but PID 1 and this one (`kill(-1, SIGKILL)`), until
/// none is left (bounded). Only for a worker that owns its namespace: anywhere else this would
/// kill every process of the user.
async fn kill_everything_else() {
    let me = std::process::id();
    for _ in 0..200 {
        // ESRCH: nothing left to signal.
        if rustix::process::kill_process_group(Pid::INIT, Signal::KILL).is_err() {
            return;
        }
        // Killed processes stay until PID 1 (the init) has reaped them.
        if other_processes(me).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::warn!(
        left = ?other_processes(me),
        "processes a task left are still there after being killed"
    );
}

/// The process ids of `/proc` other than 1 and `me`.
fn other_processes(me: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != 1 && *pid != me)
        .collect()
}

/// Removes everything inside `dir`, keeping `dir`.
fn empty_directory(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        remove_tree(&entry.path());
    }
}

/// Removes a file or a directory tree without following symbolic links; directories a task made
/// unreadable (`chmod 000`) are made accessible first (they belong to the worker's user).
fn remove_tree(path: &Path) {
    let Ok(metadata) = std::fs::symlink_metadata(path) else {
        return;
    };
    if !metadata.is_dir() {
        if let Err(error) = std::fs::remove_file(path) {
            tracing::warn!(path = %path.display(), %error, "cannot remove a task's file");
        }
        return;
    }
    if std::fs::remove_dir_all(path).is_ok() {
        return;
    }
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            remove_tree(&entry.path());
        }
    }
    if let Err(error) = std::fs::remove_dir(path) {
        tracing::warn!(path = %path.display(), %error, "cannot remove a task's directory");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_directories_are_0700_and_removed_even_when_made_unreadable() {
        let root = std::env::temp_dir().join(format!("sandbox-test-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        let sandbox = Sandbox::new(Some(root.clone()), false);
        let dirs = sandbox.prepare("a/../b").unwrap();
        for dir in [&dirs.base, &dirs.home, &dirs.tmp] {
            let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", dir.display());
        }
        assert!(
            dirs.base
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("stacksmith-task-ab-")
        );
        let locked = dirs.tmp.join("locked");
        std::fs::create_dir(&locked).unwrap();
        std::fs::write(locked.join("file"), "x").unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
        let base = dirs.base.clone();
        remove_tree(&dirs.base);
        assert!(!base.exists());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
