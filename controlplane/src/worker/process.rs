//! One task's process: its argv run without a shell, in the sandbox of [`super::sandbox`] (a
//! clean environment: `PATH`, a private `HOME` and `TMPDIR`, the task's env, then
//! `STACKSMITH_TASK_ID`, `STACKSMITH_ATTEMPT`, `STACKSMITH_FENCING_TOKEN` and
//! `STACKSMITH_DEPENDENCY_RESULTS`; its own process group), stdin closed, stdout and stderr read as
//! it runs (each kept up to a bound), killed at the task's timeout or when the worker says so;
//! what it leaves behind is killed and removed before its output is collected.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Child;
use tokio::task::JoinHandle;

use super::sandbox::{Sandbox, TaskDirs};
use crate::model::lease::Lease;

/// A running task process.
pub struct TaskProcess {
    child: Child,
    stdout: Option<JoinHandle<(Vec<u8>, bool)>>,
    stderr: Option<JoinHandle<(Vec<u8>, bool)>>,
    deadline: tokio::time::Instant,
    sandbox: Sandbox,
    dirs: TaskDirs,
    /// The task's process group (its id).
    group: Option<u32>,
}

/// How the process ended.
pub enum Exit {
    Exited(std::process::ExitStatus),
    /// Its timeout passed (or it could not be waited for): it must be killed.
    TimedOut,
}

/// What the process printed.
pub struct Output {
    /// Standard output (the task's result when it succeeds).
    pub stdout: String,
    /// Standard output, then standard error after a `[stderr]` line (the attempt's output).
    pub combined: String,
}

impl TaskProcess {
    /// Starts the task's command in `sandbox`; `max_output_bytes` is kept per stream.
    pub async fn spawn(
        lease: &Lease,
        max_output_bytes: usize,
        sandbox: &Sandbox,
    ) -> std::io::Result<Self> {
        let dirs = sandbox
            .prepare(&format!("{}-{}", lease.task_id, lease.attempt))
            .map_err(|error| {
                std::io::Error::new(
                    error.kind(),
                    format!("cannot create the task's private directories: {error}"),
                )
            })?;
        let mut command = sandbox.command(
            &lease.command,
            &dirs,
            lease.env.clone(),
            [
                ("STACKSMITH_TASK_ID", lease.task_id.to_string()),
                ("STACKSMITH_ATTEMPT", lease.attempt.to_string()),
                ("STACKSMITH_FENCING_TOKEN", lease.fencing_token.to_string()),
                (
                    "STACKSMITH_DEPENDENCY_RESULTS",
                    lease.dependency_results.to_string(),
                ),
            ],
        );
        command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                sandbox.finish(None, dirs).await;
                return Err(error);
            }
        };
        // The task leads its own process group: the group's id is its.
        let group = child.id();
        let stdout = child
            .stdout
            .take()
            .map(|stream| tokio::spawn(read_bounded(stream, max_output_bytes)));
        let stderr = child
            .stderr
            .take()
            .map(|stream| tokio::spawn(read_bounded(stream, max_output_bytes)));
        let deadline = tokio::time::Instant::now()
            + Duration::from_secs(u64::try_from(lease.timeout_seconds).unwrap_or(1));
        Ok(Self {
            child,
            stdout,
            stderr,
            deadline,
            sandbox: sandbox.clone(),
            dirs,
            group,
        })
    }

    /// Resolves when the process exits or its timeout passes. Cancel-safe: call it again after
    /// another branch of a `select!` won.
    pub async fn wait(&mut self) -> Exit {
        tokio::select! {
            status = self.child.wait() => match status {
                Ok(status) => Exit::Exited(status),
                Err(error) => {
                    tracing::error!(%error, "cannot wait for the task's process");
                    Exit::TimedOut
                }
            },
            () = tokio::time::sleep_until(self.deadline) => Exit::TimedOut,
        }
    }

    /// Kills the process (timeout, lost lease, shutdown).
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// After the process ended (exited, or killed): kills what it left running and removes its
    /// files (see [`Sandbox::finish`]), then collects the output read so far and until the
    /// streams close. Grandchildren of a worker that is not alone in its container may outlive
    /// their process group and hold the pipes open: the wait for the readers is bounded.
    pub async fn output(self) -> Output {
        self.sandbox.finish(self.group, self.dirs).await;
        let collect = |handle: Option<JoinHandle<(Vec<u8>, bool)>>| async move {
            match handle {
                Some(handle) => tokio::time::timeout(Duration::from_secs(5), handle)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default(),
                None => (Vec::new(), false),
            }
        };
        let (out, out_truncated) = collect(self.stdout).await;
        let (err, err_truncated) = collect(self.stderr).await;
        let stdout = text(&out, out_truncated);
        let stderr = text(&err, err_truncated);
        let mut combined = stdout.clone();
        if !stderr.is_empty() {
            combined.push_str("\n[stderr]\n");
            combined.push_str(&stderr);
        }
        Output { stdout, combined }
    }
}

/// Reads a stream to its end, keeping the first `limit` bytes.
async fn read_bounded(mut stream: impl AsyncRead + Unpin, limit: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buffer = [0u8; 8192];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                let room = limit.saturating_sub(kept.len());
                if read > room {
                    truncated = true;
                }
                kept.extend_from_slice(&buffer[..read.min(room)]);
            }
        }
    }
    (kept, truncated)
}

fn text(bytes: &[u8], truncated: bool) -> String {
    let mut text = String::from_utf8_lossy(bytes).replace('\0', "");
    if truncated {
        text.push_str("\n[truncated]");
    }
    text
}
