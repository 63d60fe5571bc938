//! One container of a pod, started the way a container runtime starts it, for tests that need a
//! process to run as it runs in a cluster: as a non-root user with no capabilities and
//! `no_new_privs` (the pod's `securityContext`: `runAsUser`, `capabilities.drop: [ALL]`,
//! `allowPrivilegeEscalation: false`), as PID 1 of a PID namespace of its own (containers of a pod
//! do not share one unless `shareProcessNamespace` is set), in a mount namespace with its own
//! `/proc` and a fresh tmpfs for each `emptyDir` mount (`/tmp`, `/dev/shm`), with exactly the
//! environment given (`env`/`envFrom`). The network namespace is the test's (loopback).
//!
//! Needs root (the suite runs as root) and util-linux's `unshare` and `setpriv`. Stop it with
//! [`Container::kill`] (or drop it): killing PID 1 of a PID namespace kills every process in it.
//!
//! The container's user must be able to reach what it executes, as in an image: a binary under a
//! cargo target directory in root's `HOME` (mode 0700, as CI keeps it) is not. Run the copy that
//! [`runnable_by_any_user`] makes, as a worker pod runs the copy its `runtime` init container made.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// What to start.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// `command` + `args`.
    pub argv: Vec<String>,
    /// The complete environment.
    pub env: Vec<(String, String)>,
    /// `runAsUser` and `runAsGroup`.
    pub uid: u32,
    pub gid: u32,
    /// `emptyDir` mount points, each a fresh tmpfs (mode 0777, as the kubelet makes them).
    pub empty_dirs: Vec<PathBuf>,
    /// Where the container's stdout and stderr go.
    pub log: Option<PathBuf>,
}

/// A running container; dropping it kills it.
#[derive(Debug)]
pub struct Container {
    runtime: Child,
}

/// Where [`runnable_by_any_user`] puts its copies: outside `/tmp` and `/dev/shm` (a container
/// mounts its own there), every directory on the way searchable by every user.
const RUNNABLE_DIR: &str = "/var/tmp/stacksmith-test-binaries";

/// A copy of `binary` that every user can read and execute (mode 0555, in a directory every user
/// can search), named by the binary's size and modification time so that test processes running
/// at once share one copy and a rebuilt binary gets a new one. Panics when it cannot copy.
pub fn runnable_by_any_user(binary: &Path) -> PathBuf {
    let metadata = std::fs::metadata(binary)
        .unwrap_or_else(|e| panic!("{} cannot be read: {e}", binary.display()));
    let modified = metadata
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let name = binary
        .file_name()
        .expect("a binary's path ends in its name")
        .to_string_lossy();
    let dir = Path::new(RUNNABLE_DIR).join(format!("{name}-{}-{modified}", metadata.len()));
    let copy = dir.join(&*name);
    if copy.is_file() {
        return copy;
    }
    std::fs::create_dir_all(&dir).expect("create the directory of runnable binaries");
    for ancestor in [Path::new(RUNNABLE_DIR), dir.as_path()] {
        std::fs::set_permissions(ancestor, std::fs::Permissions::from_mode(0o755))
            .expect("make the directory searchable by every user");
    }
    // Copied beside, then renamed into place: a concurrent test never runs a partial copy.
    let partial = dir.join(format!(".{name}.{}", std::process::id()));
    std::fs::copy(binary, &partial).expect("copy the binary");
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o555))
        .expect("make the copy executable by every user");
    std::fs::rename(&partial, &copy).expect("move the copy into place");
    copy
}

impl Container {
    /// Starts `spec`. Panics when `unshare` cannot run (not root, no util-linux), or when the
    /// container's user could not reach the executable (see [`runnable_by_any_user`]).
    pub fn start(spec: &ContainerSpec) -> Self {
        if let Some(executable) = spec.argv.first().map(Path::new)
            && executable.is_absolute()
        {
            assert!(
                reachable_by_others(executable),
                "{} is not executable by uid {}: start runnable_by_any_user(..) instead",
                executable.display(),
                spec.uid
            );
        }
        let mut script = String::from("set -e\n");
        for dir in &spec.empty_dirs {
            script.push_str(&format!(
                "mount -t tmpfs -o mode=0777,nosuid,nodev emptydir '{}'\n",
                dir.display()
            ));
        }
        script.push_str(&format!(
            "exec setpriv --reuid={uid} --regid={gid} --clear-groups --inh-caps=-all \
             --ambient-caps=-all --bounding-set=-all --no-new-privs -- \"$@\"\n",
            uid = spec.uid,
            gid = spec.gid
        ));
        let mut command = Command::new("unshare");
        command
            .args([
                "--pid",
                "--fork",
                "--mount",
                "--propagation",
                "private",
                "--mount-proc",
                "--",
                "/bin/sh",
                "-c",
                &script,
                "container",
            ])
            .args(&spec.argv)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        match &spec.log {
            Some(path) => {
                let file = std::fs::File::create(path).expect("create the container's log");
                command.stdout(file.try_clone().expect("log")).stderr(file);
            }
            None => {
                command.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let runtime = command.spawn().expect("start unshare (util-linux) as root");
        Self { runtime }
    }

    /// PID 1 of the container as the test sees it (in the test's PID namespace), once started.
    pub fn init_pid(&self) -> Option<u32> {
        let id = self.runtime.id();
        std::fs::read_to_string(format!("/proc/{id}/task/{id}/children"))
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// Sends `signal` (a number) to PID 1 of the container.
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.init_pid() {
            let _ = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(pid.to_string())
                .status();
        }
    }

    /// Waits (bounded) for the container to end; its PID 1's exit status as `unshare` reports it.
    pub fn wait(&mut self, limit: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.runtime.try_wait() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }

    /// Kills PID 1 (and with it the whole PID namespace), then the runtime process.
    pub fn kill(&mut self) {
        self.signal(9);
        let _ = self.wait(std::time::Duration::from_secs(5));
        let _ = self.runtime.kill();
        let _ = self.runtime.wait();
    }
}

/// True when a user other than the owner may execute `path` and search every directory above it.
fn reachable_by_others(path: &Path) -> bool {
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode())
            .unwrap_or(0)
    };
    mode(path) & 0o001 != 0
        && path
            .ancestors()
            .skip(1)
            .all(|dir| dir.as_os_str().is_empty() || mode(dir) & 0o001 != 0)
}

impl Drop for Container {
    fn drop(&mut self) {
        if matches!(self.runtime.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}
