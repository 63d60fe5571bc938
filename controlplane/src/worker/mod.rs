//! `controlplane worker`: leases tasks of one pool and runs them.
//!
//! Each task's command runs without a shell (argv), in a clean environment: `PATH`, a private
//! `HOME` and `TMPDIR`, its env, then `STACKSMITH_TASK_ID`, `STACKSMITH_ATTEMPT`,
//! `STACKSMITH_FENCING_TOKEN` and `STACKSMITH_DEPENDENCY_RESULTS` (the JSON results of its
//! workflow dependencies); never the worker's own variables ([`sandbox`], which also removes what
//! the task left behind). The worker kills it at its timeout and reports: exit 0 completes the
//! task with stdout as its result (parsed as JSON when it is JSON, else the text); anything else
//! fails the attempt. Heartbeats and reports of all its leases go through one [`reporter`] in
//! batches (`POST /v1/leases/reports`); a finished task frees its slot at once while its report
//! is delivered, retried for as long as its lease lasts. A lease the server no longer honours
//! (`gone` or `not_found` for a heartbeat) kills the process without a report.
//!
//! On shutdown (SIGTERM/SIGINT) it stops leasing, lets running tasks finish for up to the drain
//! period, then kills the rest and releases their leases, and exits.
//!
//! This module leases and runs tasks; [`reporter`] heartbeats and reports; [`process`] runs one
//! task's process in the [`sandbox`]; [`init`] is PID 1 of a worker container; `api` is the HTTP
//! client.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::model::lease::{Lease, LeaseReportItem, LeaseResponse, ReportKind};
use api::{Api, Reply};
use process::{Exit, Output, TaskProcess};
use reporter::Reporter;

mod api;
pub mod health;
pub mod init;
pub mod process;
pub mod reporter;
pub mod sandbox;

/// How long a stopping worker waits for its last reports (each also bounded by its lease).
const REPORT_FLUSH_LIMIT: Duration = Duration::from_secs(60);

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
    /// Where to serve `/healthz` and `/readyz` ([`health`]); none when unset.
    pub health_listen: Option<std::net::SocketAddr>,
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
    let readiness = health::Readiness::default();
    let probes = match options.health_listen {
        Some(address) => Some(
            health::serve(address, readiness.clone())
                .await
                .with_context(|| format!("cannot serve the probes on {address}"))?,
        ),
        None => None,
    };
    let options = Arc::new(options);
    let (kill_tx, kill_rx) = watch::channel(false);
    let reporter = Reporter::new(options.lease_seconds);
    let reporting = tokio::spawn(reporter.clone().run(api.clone()));
    let mut running: JoinSet<()> = JoinSet::new();
    tokio::pin!(shutdown);
    tracing::info!(pool = %options.pool, concurrency = options.concurrency, "worker started");
    // Runs until the shutdown signal; each turn leases at most the free slots, while the tasks
    // already leased run.
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
            "max_tasks": free.min(1000),
            "wait_seconds": options.wait_seconds,
            "lease_seconds": options.lease_seconds,
            "worker": options.name,
        });
        let requested = tokio::time::Instant::now();
        let lease_call = api.post::<_, LeaseResponse>("/v1/leases", &request);
        tokio::pin!(lease_call);
        let (outcome, stopping) = tokio::select! {
            outcome = &mut lease_call => (outcome, false),
            () = &mut shutdown => (lease_call.await, true),
        };
        let leases = match outcome {
            Ok(Reply::Ok(response)) => {
                readiness.reached();
                response.leases
            }
            Ok(Reply::Gone(detail)) => {
                tracing::warn!(detail, "lease request refused");
                readiness.not_ready(format!("lease request refused: {detail}"));
                if !stopping && sleep_or_stop(&mut shutdown, Duration::from_secs(1)).await {
                    break;
                }
                Vec::new()
            }
            Err(error) => {
                tracing::warn!(%error, "cannot lease; retrying");
                readiness.not_ready(format!("cannot lease: {error}"));
                if !stopping && sleep_or_stop(&mut shutdown, Duration::from_secs(1)).await {
                    break;
                }
                Vec::new()
            }
        };
        if stopping {
            for lease in leases {
                reporter.hold(&lease, requested);
                reporter.finish(lease.lease_id, report(ReportKind::Release));
            }
            break;
        }
        for lease in leases {
            let lost = reporter.hold(&lease, requested);
            running.spawn(run_task(
                reporter.clone(),
                options.clone(),
                lease,
                lost,
                kill_rx.clone(),
            ));
        }
    }
    readiness.not_ready("stopping: no more leases");
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
    // The last reports (completions, releases), for as long as their leases last.
    reporter.flush(REPORT_FLUSH_LIMIT).await;
    reporting.abort();
    if let Some(probes) = probes {
        probes.abort();
    }
    tracing::info!(unreported = reporter.pending(), "worker stopped");
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

/// A final report of `kind` (the reporter fills in the lease and its token).
fn report(kind: ReportKind) -> LeaseReportItem {
    LeaseReportItem {
        lease_id: uuid::Uuid::nil(),
        fencing_token: 0,
        kind,
        lease_seconds: None,
        result: None,
        output: None,
        exit_code: None,
        error: None,
    }
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
    reporter: Reporter,
    options: Arc<WorkerOptions>,
    lease: Lease,
    mut lost: watch::Receiver<bool>,
    mut kill: watch::Receiver<bool>,
) {
    tracing::info!(task_id = %lease.task_id, attempt = lease.attempt, "running");
    let mut process =
        match TaskProcess::spawn(&lease, options.max_output_bytes, &options.sandbox).await {
            Ok(process) => process,
            Err(error) => {
                reporter.finish(
                    lease.lease_id,
                    LeaseReportItem {
                        error: Some(format!("cannot start {:?}: {error}", lease.command[0])),
                        ..report(ReportKind::Fail)
                    },
                );
                return;
            }
        };
    // Bounded by the task's timeout.
    let ending = loop {
        tokio::select! {
            exit = process.wait() => break match exit {
                Exit::Exited(status) => Ending::Exited(status),
                Exit::TimedOut => Ending::TimedOut,
            },
            Ok(()) = lost.changed() => if *lost.borrow() { break Ending::LeaseLost },
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
    let final_report = match ending {
        Ending::Exited(status) if status.success() => {
            let trimmed = stdout_text.trim();
            let result = serde_json::from_str::<serde_json::Value>(trimmed)
                .unwrap_or_else(|_| serde_json::Value::String(trimmed.to_owned()));
            Some(LeaseReportItem {
                result: Some(result),
                output: Some(output),
                exit_code: Some(0),
                ..report(ReportKind::Complete)
            })
        }
        Ending::Exited(status) => Some(LeaseReportItem {
            error: Some(format!("the command exited with {status}")),
            output: Some(output),
            exit_code: status.code(),
            ..report(ReportKind::Fail)
        }),
        Ending::TimedOut => Some(LeaseReportItem {
            error: Some(format!(
                "timed out after {} s: killed",
                lease.timeout_seconds
            )),
            output: Some(output),
            ..report(ReportKind::Fail)
        }),
        Ending::LeaseLost => None,
        Ending::Killed => Some(report(ReportKind::Release)),
    };
    match final_report {
        // The slot is free now; the reporter delivers the report.
        Some(final_report) => reporter.finish(lease.lease_id, final_report),
        None => reporter.forget(lease.lease_id),
    }
    tracing::info!(task_id = %lease.task_id, "done");
}
