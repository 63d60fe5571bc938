//! The acceptance report: one entry per step, as text or versioned JSON.

use std::time::Duration;

use serde::Serialize;

/// The version of the JSON report; bumped on any incompatible change.
pub const REPORT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Passed,
    Failed,
    Skipped,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Passed => "passed",
            Status::Failed => "FAILED",
            Status::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub name: String,
    pub status: Status,
    pub seconds: f64,
    /// What was seen: a one-line summary, or why it failed or was skipped.
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub version: u32,
    pub stack: String,
    pub instance: String,
    /// `aws`, or `emulators` when the stack's endpoints are overridden (`--allow-emulators`).
    pub target: &'static str,
    /// `passed` when no step failed (skipped steps allowed), otherwise `failed`.
    pub outcome: Status,
    pub seconds: f64,
    pub steps: Vec<Step>,
}

impl Report {
    pub fn new(stack: &str, instance: &str, target: &'static str) -> Self {
        Report {
            version: REPORT_VERSION,
            stack: stack.to_owned(),
            instance: instance.to_owned(),
            target,
            outcome: Status::Passed,
            seconds: 0.0,
            steps: Vec::new(),
        }
    }

    /// Records a step and says it on stderr as it happens.
    pub fn record(
        &mut self,
        name: &str,
        status: Status,
        took: Duration,
        detail: impl Into<String>,
    ) {
        let step = Step {
            name: name.to_owned(),
            status,
            seconds: (took.as_secs_f64() * 10.0).round() / 10.0,
            detail: detail.into(),
        };
        eprintln!(
            "acceptance: {} {} ({:.1} s){}",
            step.name,
            step.status.word(),
            step.seconds,
            if step.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", step.detail)
            }
        );
        if status == Status::Failed {
            self.outcome = Status::Failed;
        }
        self.steps.push(step);
    }

    pub fn failed(&self) -> bool {
        self.outcome == Status::Failed
    }

    pub fn text(&self) -> String {
        let width = self.steps.iter().map(|s| s.name.len()).max().unwrap_or(0);
        let mut out = format!(
            "Acceptance of {} (instance {}) against {}: {} in {:.0} s\n",
            self.stack,
            self.instance,
            self.target,
            self.outcome.word(),
            self.seconds
        );
        for step in &self.steps {
            out.push_str(&format!(
                "  {:<width$}  {:<7}  {:>7.1} s  {}\n",
                step.name,
                step.status.word(),
                step.seconds,
                step.detail
            ));
        }
        out
    }
}
