//! The kubelet's container runtime: one container of a pod as a process tree started the way a
//! container runtime starts it, with util-linux's `unshare` and `setpriv` (the kubelet runs as
//! root): PID 1 of a PID namespace of its own (containers of a pod do not share one), a UTS
//! namespace named after the pod, a mount namespace with its own `/proc`, a fresh `/run`, the
//! pod's volumes bind-mounted where the container mounts them (emptyDirs are directories of the
//! pod, shared by the containers that mount them), the pod's `/etc/hosts` (Service names) and
//! the image's trust store, the root filesystem read-only when `readOnlyRootFilesystem` says so,
//! then the command as the container's user and group with no capabilities and `no_new_privs`,
//! with exactly the environment given. The network namespace is the kubelet's: each pod has its
//! own loopback address instead (see `network.rs`).
//!
//! The "image" is this machine's root filesystem; an image reference maps to the `PATH` under
//! which its entrypoint is found (the binaries we built).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A bind mount into the container.
#[derive(Debug, Clone)]
pub struct Mount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct Launch {
    /// `command` + `args`, `$(VAR)` references expanded.
    pub argv: Vec<String>,
    /// The complete environment.
    pub env: Vec<(String, String)>,
    pub uid: u32,
    pub gid: u32,
    /// The pod's name (the container's host name).
    pub hostname: String,
    pub mounts: Vec<Mount>,
    pub read_only_root: bool,
    pub workdir: String,
    /// Where its stdout and stderr go (appended: restarts add to it).
    pub log: PathBuf,
    /// Its output as a pipe instead (one-off client containers).
    pub capture: bool,
}

/// A running container; dropping it kills it.
#[derive(Debug)]
pub struct Running {
    runtime: Option<Child>,
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// A tool of this machine by its name on the kubelet's own PATH.
fn host_tool(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|path| path.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("/usr/bin").join(name))
}

fn kill_pid(signal: i32, pid: u32) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

impl Running {
    pub fn start(launch: &Launch) -> std::io::Result<Self> {
        // The script runs with the container's environment, whose PATH is the image's: the
        // tools here are this machine's, and the container's PATH is restored for its command.
        let mut script = String::from(
            "set -e\n__kubelet_path=\"$PATH\"\nPATH=/usr/sbin:/usr/bin:/sbin:/bin\n\
             mount -t tmpfs -o mode=0755,nosuid,nodev run /run\n",
        );
        // Every source is staged under /run first: a target may cover another's source (a
        // pod's directory under /tmp, mounted at /tmp).
        script.push_str("mkdir -p /run/.kubelet\n");
        for (index, mount) in launch.mounts.iter().enumerate() {
            let source = quote(&mount.source.display().to_string());
            let stage = if mount.source.is_dir() {
                "mkdir"
            } else {
                "touch"
            };
            script.push_str(&format!(
                "{stage} /run/.kubelet/{index}\nmount --bind {source} /run/.kubelet/{index}\n"
            ));
        }
        for mount in &launch.mounts {
            let target = quote(&mount.target.display().to_string());
            if mount.source.is_dir() {
                script.push_str(&format!("mkdir -p {target}\n"));
            } else {
                script.push_str(&format!(
                    "[ -e {target} ] || {{ mkdir -p \"$(dirname {target})\"; : > {target}; }}\n"
                ));
            }
        }
        if launch.read_only_root {
            script.push_str("mount -o remount,bind,ro /\n");
        }
        for (index, mount) in launch.mounts.iter().enumerate() {
            let target = quote(&mount.target.display().to_string());
            script.push_str(&format!("mount --bind /run/.kubelet/{index} {target}\n"));
            if mount.read_only {
                script.push_str(&format!("mount -o remount,bind,ro {target}\n"));
            }
        }
        for index in 0..launch.mounts.len() {
            script.push_str(&format!("umount /run/.kubelet/{index}\n"));
        }
        script.push_str("rm -rf /run/.kubelet\n");
        script.push_str(&format!(
            "hostname {host}\ncd {dir}\nPATH=\"$__kubelet_path\"\nunset __kubelet_path\n\
             exec {setpriv} --reuid={uid} --regid={gid} --clear-groups \
             --inh-caps=-all --ambient-caps=-all --bounding-set=-all --no-new-privs -- \"$@\"\n",
            setpriv = quote(&host_tool("setpriv").display().to_string()),
            host = quote(&launch.hostname),
            dir = quote(&launch.workdir),
            uid = launch.uid,
            gid = launch.gid
        ));
        // Found on the kubelet's PATH (the container's PATH is the image's).
        let mut command = Command::new(host_tool("unshare"));
        command
            .args([
                "--pid",
                "--fork",
                "--uts",
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
            .args(&launch.argv)
            .env_clear()
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        if launch.capture {
            command.stdout(Stdio::piped()).stderr(Stdio::piped());
        } else {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&launch.log)?;
            command.stdout(file.try_clone()?).stderr(file);
        }
        Ok(Self {
            runtime: Some(command.spawn()?),
        })
    }

    /// PID 1 of the container as the kubelet sees it, once started.
    pub fn init_pid(&self) -> Option<u32> {
        let id = self.runtime.as_ref()?.id();
        std::fs::read_to_string(format!("/proc/{id}/task/{id}/children"))
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// Sends `signal` to PID 1 of the container.
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.init_pid() {
            kill_pid(signal, pid);
        }
    }

    /// The exit code once it ended (128 + signal when a signal ended it).
    pub fn exited(&mut self) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        let runtime = self.runtime.as_mut()?;
        match runtime.try_wait() {
            Ok(Some(status)) => Some(
                status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
            ),
            Ok(None) => None,
            Err(_) => Some(255),
        }
    }

    /// Kills PID 1 (and with it the whole PID namespace), then the runtime process.
    pub fn kill(&mut self) {
        self.signal(9);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while self.exited().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if let Some(runtime) = self.runtime.as_mut() {
            let _ = runtime.kill();
            let _ = runtime.wait();
        }
    }

    /// Waits (bounded) for the end and its output (for `capture`d containers); killed at the
    /// limit.
    pub fn output(mut self, limit: std::time::Duration) -> std::process::Output {
        let init_pid = self.init_pid();
        let child = self.runtime.take().expect("a started container");
        let runtime_pid = child.id();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = sender.send(child.wait_with_output());
        });
        if let Ok(Ok(output)) = receiver.recv_timeout(limit) {
            return output;
        }
        for pid in init_pid.into_iter().chain([runtime_pid]) {
            kill_pid(9, pid);
        }
        receiver
            .recv_timeout(std::time::Duration::from_secs(5))
            .ok()
            .and_then(Result::ok)
            .unwrap_or_else(|| std::process::Output {
                status: std::os::unix::process::ExitStatusExt::from_raw(9),
                stdout: Vec::new(),
                stderr: Vec::new(),
            })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.exited().is_none() && self.runtime.is_some() {
            self.kill();
        }
    }
}
