//! What the verbs that change things (`up`, `down`) share once they
//! hold a plan: the state lock around the work, the progress renderer, the confirmation, and the
//! executor run under Ctrl-C with its summary.

use std::future::Future;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use miette::{IntoDiagnostic, miette};

use super::deployment::Deployment;
use super::progress::{self, ProgressMode};
use crate::engine::events::TimedEvent;
use crate::engine::executor::{self, ExecutorOptions, Interrupt};
use crate::engine::plan::Plan;
use crate::engine::provider::ProviderRegistry;
use crate::engine::secrets::StateCipher;
use crate::state::LockInfo;
use crate::state::journal::Journal;

/// Runs `work` while holding the deployment's state lock (as `holder`), then releases it; the
/// work's error wins over a failed release.
pub async fn locked<T>(
    deployment: &Deployment,
    holder: &str,
    timeout: Duration,
    work: impl Future<Output = miette::Result<T>>,
) -> miette::Result<T> {
    eprintln!("Locking the state ({}) ...", deployment.backend.describe());
    let lock = deployment
        .backend
        .lock(LockInfo::for_this_process(holder), timeout)
        .await
        .map_err(|e| miette!("{e}"))?;
    let result = work.await;
    let released = lock.release().await;
    let value = result?;
    released.map_err(|e| miette!("releasing the state lock: {e}"))?;
    Ok(value)
}

/// The progress renderer: live on a terminal, lines otherwise, JSON lines with `--json`.
pub struct Progress {
    pub sender: tokio::sync::mpsc::UnboundedSender<TimedEvent>,
    renderer: tokio::task::JoinHandle<()>,
}

impl Progress {
    pub fn start(json: bool) -> Self {
        let mode = if json {
            ProgressMode::Json
        } else if std::io::stderr().is_terminal() {
            ProgressMode::Live
        } else {
            ProgressMode::Lines
        };
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let renderer = tokio::spawn(progress::render(mode, receiver));
        Self { sender, renderer }
    }

    /// Timestamped lines naming `label`, for one of several deployments handled at once.
    pub fn labelled(label: String) -> Self {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let renderer = tokio::spawn(progress::render_labelled(label, receiver));
        Self { sender, renderer }
    }

    /// Waits for every event sent so far to be rendered.
    pub async fn finish(self) {
        drop(self.sender);
        let _ = self.renderer.await;
    }
}

/// `true` with `yes`; otherwise asks on the terminal (only `yes` is accepted) and refuses to run
/// unattended.
pub fn confirm(yes: bool, question: &str, help: &str) -> miette::Result<bool> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(miette!(
            help = help.to_owned(),
            "refusing to run unattended: stdin is not a terminal and --yes was not given"
        ));
    }
    eprint!("{question} Only `yes` is accepted: ");
    std::io::stderr().flush().into_diagnostic()?;
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .into_diagnostic()?;
    Ok(answer.trim() == "yes")
}

/// Applies `plan` (Ctrl-C stops starting new calls), prints the summary (and a `summary` event
/// with `json`), and says whether every step succeeded.
pub async fn execute(
    plan: &Plan,
    journal: Arc<Journal>,
    registry: &ProviderRegistry,
    parallelism: usize,
    json: bool,
    progress: Progress,
    cipher: Option<StateCipher>,
) -> miette::Result<bool> {
    let interrupt = Interrupt::new();
    let on_signal = interrupt.clone();
    let signal_task = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.trigger();
        }
    });
    let Progress { sender, renderer } = progress;
    let report = executor::apply(
        plan,
        journal,
        registry,
        ExecutorOptions {
            parallelism,
            events: Some(sender),
            interrupt,
            cipher,
            ..ExecutorOptions::default()
        },
    )
    .await
    .map_err(|e| miette!("{e}"));
    signal_task.abort();
    let _ = renderer.await;
    let report = report?;
    if json {
        let summary = serde_json::json!({
            "event": "summary",
            "succeeded": report.succeeded(),
            "completed": report.completed.len(),
            "failed": report.failed.len(),
            "not_started": report.not_started.len(),
            "interrupted": report.interrupted,
            "elapsed_ms": report.elapsed.as_millis() as u64,
        });
        println!("{summary}");
    }
    eprintln!("{}", report.summary());
    Ok(report.succeeded())
}
