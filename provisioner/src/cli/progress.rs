//! Progress of an apply: a live multi-line view with elapsed time per resource on a terminal
//! (indicatif), timestamped lines otherwise, or one JSON object per line (`--json`).

use std::collections::HashMap;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::engine::Address;
use crate::engine::events::{ExecutionEvent, Operation, TimedEvent};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    Live,
    Lines,
    Json,
}

fn past(operation: Operation) -> &'static str {
    match operation {
        Operation::Create => "created",
        Operation::Update => "updated",
        Operation::Delete => "deleted",
        Operation::Recover => "recovered",
    }
}

fn line(event: &ExecutionEvent) -> String {
    match event {
        ExecutionEvent::Started { address, operation } => {
            format!("{} {address}", operation.progressive())
        }
        ExecutionEvent::Finished {
            address,
            operation,
            elapsed_ms,
        } => {
            format!(
                "{} {address} ({:.1}s)",
                past(*operation),
                *elapsed_ms as f64 / 1000.0
            )
        }
        ExecutionEvent::Failed {
            address,
            operation,
            elapsed_ms,
            error,
        } => format!(
            "FAILED {} {address} after {:.1}s: {error}",
            operation.progressive(),
            *elapsed_ms as f64 / 1000.0
        ),
        ExecutionEvent::Throttled {
            address,
            retry_in_ms,
            concurrency_limit,
            ..
        } => format!(
            "throttled on {address}: retrying in {retry_in_ms} ms, concurrency now {concurrency_limit}"
        ),
        ExecutionEvent::Recovered { address, outcome } => format!("recovered {address}: {outcome}"),
        ExecutionEvent::Interrupted { in_flight } => {
            format!("interrupted: starting nothing new, waiting for {in_flight} call(s) in flight")
        }
    }
}

/// Consumes events until the sender side closes, printing each as a timestamped line naming
/// `label` (several deployments torn down at once by `gc`).
pub async fn render_labelled(label: String, mut events: UnboundedReceiver<TimedEvent>) {
    while let Some(timed) = events.recv().await {
        eprintln!(
            "[{}] {label}: {}",
            timed.at.format("%H:%M:%S%.3f"),
            line(&timed.event)
        );
    }
}

/// Consumes events until the sender side closes.
pub async fn render(mode: ProgressMode, mut events: UnboundedReceiver<TimedEvent>) {
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let mut bars: HashMap<(Address, &'static str), ProgressBar> = HashMap::new();
    while let Some(timed) = events.recv().await {
        match mode {
            ProgressMode::Json => {
                println!("{}", serde_json::to_string(&timed).unwrap_or_default());
            }
            ProgressMode::Lines => {
                eprintln!(
                    "[{}] {}",
                    timed.at.format("%H:%M:%S%.3f"),
                    line(&timed.event)
                );
            }
            ProgressMode::Live => match &timed.event {
                ExecutionEvent::Started { address, operation } => {
                    let bar = multi.add(ProgressBar::new_spinner());
                    bar.set_style(style.clone());
                    bar.set_message(line(&timed.event));
                    bar.enable_steady_tick(Duration::from_millis(120));
                    bars.insert((address.clone(), operation.progressive()), bar);
                }
                ExecutionEvent::Finished {
                    address, operation, ..
                }
                | ExecutionEvent::Failed {
                    address, operation, ..
                } => {
                    let text = line(&timed.event);
                    match bars.remove(&(address.clone(), operation.progressive())) {
                        // Finished work scrolls above; the live area keeps what is in flight.
                        Some(bar) => {
                            bar.finish_and_clear();
                            multi.remove(&bar);
                            let _ =
                                multi.println(format!("[{}] {text}", timed.at.format("%H:%M:%S")));
                        }
                        None => {
                            let _ = multi.println(text);
                        }
                    }
                }
                other => {
                    let _ = multi.println(line(other));
                }
            },
        }
    }
}
