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

use std::path::PathBuf;
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

impl Container {
    /// Starts `spec`. Panics when `unshare` cannot run (not root, no util-linux).
    pub fn start(spec: &ContainerSpec) -> Self {
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

impl Drop for Container {
    fn drop(&mut self) {
        if matches!(self.runtime.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}
