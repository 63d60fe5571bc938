//! `controlplane worker`: leases tasks of one pool and runs them.
//!
//! Each task's command runs without a shell (argv), in a clean environment: `PATH`, a private
//! `HOME` and `TMPDIR`, its env, then `STACKSMITH_TASK_ID`, `STACKSMITH_ATTEMPT`,
//! `STACKSMITH_FENCING_TOKEN` and `STACKSMITH_DEPENDENCY_RESULTS` (the JSON results of its
//! workflow dependencies); never the worker's own variables ([`sandbox`], which also removes what
//! the task left behind). The worker heartbeats while it runs, kills it at its
//! timeout, and reports: exit 0 completes the task with stdout as its result (parsed as JSON when
//! it is JSON, else the text); anything else fails the attempt. A lease the server no longer
//! honours (409/404 on a heartbeat) kills the process without a report.
//!
//! On shutdown (SIGTERM/SIGINT) it stops leasing, lets running tasks finish for up to the drain
//! period, then kills the rest and releases their leases, and exits.
//!
//! This module leases, heartbeats and reports; [`process`] runs one task's process in the
//! [`sandbox`]; [`init`] is PID 1 of a worker container; `api` is the HTTP client.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::model::lease::{Lease, LeaseResponse};
use api::{Api, Reply};
use process::{Exit, Output, TaskProcess};

mod api;
pub mod init;
pub mod process;
pub mod sandbox;

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
    /// Tasks' environment, private directories and clean-up ([`sandbox`]).
    pub sandbox: sandbox::Sandbox,
}

/// Runs until `shutdown` resolves, then drains (see the module documentation).
pub async fn run(
    options: WorkerOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    anyhow::ensure!(options.concurrency >= 1, "--concurrency must be at least 1");
    anyhow::ensure!(
        !options.sandbox.exclusive || options.concurrency == 1,
        "--container-slot runs one task at a time: --concurrency must be 1"
    );
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
    let mut process =
        match TaskProcess::spawn(&lease, options.max_output_bytes, &options.sandbox).await {
            Ok(process) => process,
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
            exit = process.wait() => break match exit {
                Exit::Exited(status) => Ending::Exited(status),
                Exit::TimedOut => Ending::TimedOut,
            },
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
        process.kill().await;
    }
    let Output {
        stdout: stdout_text,
        combined: output,
    } = process.output().await;
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
