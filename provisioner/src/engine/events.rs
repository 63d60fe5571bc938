//! Progress events of an apply. The CLI renders them as a live view (TTY), timestamped lines, or
//! one JSON object per line (`--json`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Address;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Create,
    Update,
    Delete,
    /// Reading a resource to settle a pending operation left by an interrupted run.
    Recover,
}

impl Operation {
    pub fn progressive(self) -> &'static str {
        match self {
            Self::Create => "creating",
            Self::Update => "updating",
            Self::Delete => "deleting",
            Self::Recover => "recovering",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ExecutionEvent {
    Started {
        address: Address,
        operation: Operation,
    },
    Finished {
        address: Address,
        operation: Operation,
        elapsed_ms: u64,
    },
    Failed {
        address: Address,
        operation: Operation,
        elapsed_ms: u64,
        error: String,
    },
    Throttled {
        address: Address,
        operation: Operation,
        retry_in_ms: u64,
        concurrency_limit: usize,
    },
    Recovered {
        address: Address,
        outcome: String,
    },
    Interrupted {
        in_flight: usize,
    },
}

/// An event with its time, the unit the sinks receive.
#[derive(Debug, Clone, Serialize)]
pub struct TimedEvent {
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub event: ExecutionEvent,
}

pub type EventSender = tokio::sync::mpsc::UnboundedSender<TimedEvent>;

pub(crate) fn emit(sink: Option<&EventSender>, event: ExecutionEvent) {
    if let Some(sink) = sink {
        // A closed receiver only means nobody is watching progress.
        let _ = sink.send(TimedEvent {
            at: Utc::now(),
            event,
        });
    }
}

pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
