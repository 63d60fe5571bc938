//! `controlplane worker`: leases tasks of one pool and runs them.
//!
//! Each task's command runs without a shell (argv), with its env plus `STACKSMITH_TASK_ID`,
//! `STACKSMITH_ATTEMPT`, `STACKSMITH_FENCING_TOKEN` and `STACKSMITH_DEPENDENCY_RESULTS` (the JSON
//! results of its workflow dependencies). The worker heartbeats while it runs, kills it at its
//! timeout, and reports: exit 0 completes the task with stdout as its result (parsed as JSON when
//! it is JSON, else the text); anything else fails the attempt. A lease the server no longer
//! honours (409/404 on a heartbeat) kills the process without a report.
//!
//! On shutdown (SIGTERM/SIGINT) it stops leasing, lets running tasks finish for up to the drain
//! period, then kills the rest and releases their leases, and exits.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::api::leases::{Lease, LeaseResponse};

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Base URL of the control plane, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    pub api_key: String,
    pub pool: String,
    pub concurrency: usize,
    pub lease_seconds: u32,
    /// Long-poll wait of each lease request.
    pub wait_seconds: u32,
    /// Output kept per stream (stdout, stderr).
    pub max_output_bytes: usize,
    /// How long running tasks may finish after a shutdown signal.
    pub drain: Duration,
    /// Recorded with each attempt.
    pub name: String,
}

/// The answer to a request about a lease.
enum Reply<T> {
    Ok(T),
    /// 404 or 409: the lease is gone; nothing more to do with it.
    Gone(String),
}

struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    async fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<Reply<R>> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await?;
        let status = response.status();
        if status.is_success() {
            return Ok(Reply::Ok(response.json().await?));
        }
        let text = response.text().await.unwrap_or_default();
        if status.as_u16() == 404 || status.as_u16() == 409 {
            return Ok(Reply::Gone(text));
        }
        anyhow::bail!("{path}: HTTP {status}: {text}")
    }

    /// A report, retried a few times on network and server errors.
    async fn report<B: Serialize>(&self, path: &str, body: &B) {
        for attempt in 1..=5u32 {
            match self.post::<B, serde_json::Value>(path, body).await {
                Ok(Reply::Ok(_)) => return,
                Ok(Reply::Gone(detail)) => {
                    tracing::warn!(
                        path,
                        detail,
                        "the server refused the report: the lease ended"
                    );
                    return;
                }
                Err(error) => {
                    tracing::warn!(path, %error, attempt, "cannot report; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
            }
        }
        tracing::error!(path, "giving up on the report; the lease will expire");
    }
}

/// Runs until `shutdown` resolves, then drains (see the module documentation).
pub async fn run(
    options: WorkerOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    anyhow::ensure!(options.concurrency >= 1, "--concurrency must be at least 1");
    anyhow::ensure!(
        (1..=600).contains(&options.lease_seconds),
        "--lease-seconds must be between 1 and 600"
    );
    let api = Arc::new(Api {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(u64::from(options.wait_seconds) + 30))
            .build()
            .context("HTTP client")?,
        base: options.url.trim_end_matches('/').to_owned(),
        key: options.api_key.clone(),
    });
    let options = Arc::new(options);
    let (kill_tx, kill_rx) = watch::channel(false);
    let mut running: JoinSet<()> = JoinSet::new();
    tokio::pin!(shutdown);
    tracing::info!(pool = %options.pool, concurrency = options.concurrency, "worker started");
    // Runs until the shutdown signal; each turn leases at most the free slots.
    loop {
        while running.try_join_next().is_some() {}
        let free = options.concurrency - running.len();
        if free == 0 {
            tokio::select! {
                _ = running.join_next() => continue,
                () = &mut shutdown => break,
            }
        }
        let request = serde_json::json!({
            "pool": options.pool,
            "max_tasks": free.min(100),
            "wait_seconds": options.wait_seconds,
            "lease_seconds": options.lease_seconds,
            "worker": options.name,
        });
        let lease_call = api.post::<_, LeaseResponse>("/v1/leases", &request);
        tokio::pin!(lease_call);
        let (outcome, stopping) = tokio::select! {
            outcome = &mut lease_call => (outcome, false),
            () = &mut shutdown => (lease_call.await, true),
        };
        let leases = match outcome {
            Ok(Reply::Ok(response)) => response.leases,
            Ok(Reply::Gone(detail)) => {
                tracing::warn!(detail, "lease request refused");
                if !stopping && sleep_or_stop(&mut shutdown, Duration::from_secs(1)).await {
                    break;
                }
                Vec::new()
            }
            Err(error) => {
                tracing::warn!(%error, "cannot lease; retrying");
                if !stopping && sleep_or_stop(&mut shutdown, Duration::from_secs(1)).await {
                    break;
                }
                Vec::new()
            }
        };
        if stopping {
            for lease in leases {
                release(&api, &lease).await;
            }
            break;
        }
        for lease in leases {
            running.spawn(run_task(
                api.clone(),
                options.clone(),
                lease,
                kill_rx.clone(),
            ));
        }
    }
    tracing::info!(
        running = running.len(),
        "stopping: no more leases; draining"
    );
    let drained = tokio::time::timeout(options.drain, async {
        while running.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            running = running.len(),
            "drain period over: killing the remaining tasks and releasing their leases"
        );
        let _ = kill_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(15), async {
            while running.join_next().await.is_some() {}
        })
        .await;
    }
    tracing::info!("worker stopped");
    Ok(())
}

/// Sleeps `delay`; true when the shutdown signal came first.
async fn sleep_or_stop(
    shutdown: &mut std::pin::Pin<&mut (impl Future<Output = ()> + Send)>,
    delay: Duration,
) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => false,
        () = shutdown.as_mut() => true,
    }
}

async fn release(api: &Api, lease: &Lease) {
    api.report(
        &format!("/v1/leases/{}/release", lease.lease_id),
        &serde_json::json!({"fencing_token": lease.fencing_token}),
    )
    .await;
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

enum Ending {
    Exited(std::process::ExitStatus),
    TimedOut,
    /// The server no longer honours the lease: stop without a report.
    LeaseLost,
    /// Shutdown: give the task back.
    Killed,
}

async fn run_task(
    api: Arc<Api>,
    options: Arc<WorkerOptions>,
    lease: Lease,
    mut kill: watch::Receiver<bool>,
) {
    let lease_path = format!("/v1/leases/{}", lease.lease_id);
    tracing::info!(task_id = %lease.task_id, attempt = lease.attempt, "running");
    let mut command = tokio::process::Command::new(&lease.command[0]);
    command
        .args(&lease.command[1..])
        .envs(&lease.env)
        .env("STACKSMITH_TASK_ID", lease.task_id.to_string())
        .env("STACKSMITH_ATTEMPT", lease.attempt.to_string())
        .env("STACKSMITH_FENCING_TOKEN", lease.fencing_token.to_string())
        .env(
            "STACKSMITH_DEPENDENCY_RESULTS",
            lease.dependency_results.to_string(),
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            api.report(
                &format!("{lease_path}/fail"),
                &serde_json::json!({
                    "fencing_token": lease.fencing_token,
                    "error": format!("cannot start {:?}: {error}", lease.command[0]),
                }),
            )
            .await;
            return;
        }
    };
    let limit = options.max_output_bytes;
    let stdout = child
        .stdout
        .take()
        .map(|stream| tokio::spawn(read_bounded(stream, limit)));
    let stderr = child
        .stderr
        .take()
        .map(|stream| tokio::spawn(read_bounded(stream, limit)));
    let timeout = tokio::time::sleep(Duration::from_secs(
        u64::try_from(lease.timeout_seconds).unwrap_or(1),
    ));
    tokio::pin!(timeout);
    let period = Duration::from_millis(u64::from(options.lease_seconds) * 1000 / 3)
        .max(Duration::from_millis(200));
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let heartbeat_body = serde_json::json!({
        "fencing_token": lease.fencing_token,
        "lease_seconds": options.lease_seconds,
    });
    // Bounded by the task's timeout.
    let ending = loop {
        tokio::select! {
            status = child.wait() => match status {
                Ok(status) => break Ending::Exited(status),
                Err(error) => {
                    tracing::error!(%error, "cannot wait for the task's process");
                    break Ending::TimedOut;
                }
            },
            () = &mut timeout => break Ending::TimedOut,
            _ = heartbeat.tick() => {
                match api.post::<_, serde_json::Value>(&format!("{lease_path}/heartbeat"), &heartbeat_body).await {
                    Ok(Reply::Ok(_)) => {}
                    Ok(Reply::Gone(detail)) => {
                        tracing::warn!(task_id = %lease.task_id, detail, "lease lost: stopping the task");
                        break Ending::LeaseLost;
                    }
                    Err(error) => tracing::warn!(%error, "heartbeat failed; retrying"),
                }
            }
            Ok(()) = kill.changed() => if *kill.borrow() { break Ending::Killed },
        }
    };
    if !matches!(ending, Ending::Exited(_)) {
        let _ = child.kill().await;
    }
    // Grandchildren may hold the pipes open: bounded wait for the readers.
    let collect = |handle: Option<tokio::task::JoinHandle<(Vec<u8>, bool)>>| async move {
        match handle {
            Some(handle) => tokio::time::timeout(Duration::from_secs(5), handle)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default(),
            None => (Vec::new(), false),
        }
    };
    let (out, out_truncated) = collect(stdout).await;
    let (err, err_truncated) = collect(stderr).await;
    let stdout_text = text(&out, out_truncated);
    let stderr_text = text(&err, err_truncated);
    let mut output = stdout_text.clone();
    if !stderr_text.is_empty() {
        output.push_str("\n[stderr]\n");
        output.push_str(&stderr_text);
    }
    match ending {
        Ending::Exited(status) if status.success() => {
            let trimmed = stdout_text.trim();
            let result = serde_json::from_str::<serde_json::Value>(trimmed)
                .unwrap_or_else(|_| serde_json::Value::String(trimmed.to_owned()));
            api.report(
                &format!("{lease_path}/complete"),
                &serde_json::json!({
                    "fencing_token": lease.fencing_token,
                    "result": result,
                    "output": output,
                    "exit_code": 0,
                }),
            )
            .await;
        }
        Ending::Exited(status) => {
            api.report(
                &format!("{lease_path}/fail"),
                &serde_json::json!({
                    "fencing_token": lease.fencing_token,
                    "error": format!("the command exited with {status}"),
                    "output": output,
                    "exit_code": status.code(),
                }),
            )
            .await;
        }
        Ending::TimedOut => {
            api.report(
                &format!("{lease_path}/fail"),
                &serde_json::json!({
                    "fencing_token": lease.fencing_token,
                    "error": format!("timed out after {} s: killed", lease.timeout_seconds),
                    "output": output,
                }),
            )
            .await;
        }
        Ending::LeaseLost => {}
        Ending::Killed => release(&api, &lease).await,
    }
    tracing::info!(task_id = %lease.task_id, "done");
}
