//! What the runs measured, and the closing summary: `RESULT` lines, ratios and the targets of
//! issue 17.

use crate::Args;

/// One run of one system in one mode.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub system: &'static str,
    pub mode: &'static str,
    /// Jobs completed within the measured window.
    pub tasks: u64,
    pub seconds: f64,
    /// Tasks already queued when the clock started (backlog runs only).
    pub backlog: Option<u64>,
    /// More `name=value` pairs for the `RESULT` line (CPU per task, ...).
    pub extra: Vec<(&'static str, String)>,
    /// Why the exactly-once check failed, when it did.
    pub exactly_once_problem: Option<String>,
    /// Which round of the interleaved batch runs (`--rounds`), for those.
    pub round: Option<u32>,
}

impl Outcome {
    pub fn tasks_per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.tasks as f64 / self.seconds
        } else {
            0.0
        }
    }

    pub fn result_line(&self) -> String {
        let mut line = format!(
            "RESULT system={} mode={} tasks={} seconds={:.3} tasks_per_s={:.1}",
            self.system,
            self.mode,
            self.tasks,
            self.seconds,
            self.tasks_per_s()
        );
        if let Some(backlog) = self.backlog {
            line.push_str(&format!(" backlog={backlog}"));
        }
        if let Some(round) = self.round {
            line.push_str(&format!(" round={round}"));
        }
        line.push_str(if self.exactly_once_problem.is_none() {
            " exactly_once=yes"
        } else {
            " exactly_once=NO"
        });
        for (name, value) in &self.extra {
            line.push_str(&format!(" {name}={value}"));
        }
        line
    }
}

/// Submit-to-lease latency of an idle long-polling worker.
#[derive(Debug, Clone)]
pub struct Latency {
    pub samples: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn line(&self) -> String {
        format!(
            "LATENCY system=stacksmith what=submit_to_lease idle_workers=1 samples={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
            self.samples, self.p50_ms, self.p99_ms, self.max_ms
        )
    }
}

/// The open-loop `POST /v1/tasks` run with rate limiting on.
#[derive(Debug, Clone, Default)]
pub struct SubmitLoad {
    pub rps: u64,
    pub seconds: u64,
    pub created: u64,
    pub limited: u64,
    pub other_status: u64,
    pub transport_errors: u64,
    pub not_sent: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl SubmitLoad {
    pub fn line(&self) -> String {
        format!(
            "SUBMIT_LOAD system=stacksmith rps={} seconds={} rate_limiting=on created={} limited={} other_status={} transport_errors={} not_sent={} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2}",
            self.rps,
            self.seconds,
            self.created,
            self.limited,
            self.other_status,
            self.transport_errors,
            self.not_sent,
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.max_ms
        )
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
    pub lease_latency: Option<Latency>,
    pub submit_load: Option<SubmitLoad>,
    pub failures: Vec<String>,
    pub load_at_start: String,
}

impl Report {
    /// Records a run (printing its `RESULT` line) or its failure.
    pub fn record(&mut self, name: &str, outcome: anyhow::Result<Outcome>) {
        match outcome {
            Ok(outcome) => {
                println!("{}", outcome.result_line());
                if let Some(problem) = &outcome.exactly_once_problem {
                    println!("queue-bench: {name}: NOT exactly once: {problem}");
                    self.failures.push(format!("{name}: {problem}"));
                }
                self.outcomes.push(outcome);
            }
            Err(error) => {
                println!("queue-bench: {name} failed: {error:#}");
                self.failures.push(format!("{name}: {error:#}"));
            }
        }
    }

    /// [`Report::record`], or a note that the run was skipped because the control plane has no
    /// batch submit yet.
    pub fn record_optional(&mut self, name: &str, outcome: anyhow::Result<Option<Outcome>>) {
        match outcome {
            Ok(None) => println!(
                "queue-bench: {name} skipped: this control plane has no POST /v1/tasks/batch"
            ),
            Ok(Some(outcome)) => self.record(name, Ok(outcome)),
            Err(error) => self.record(name, Err(error)),
        }
    }

    /// A system's throughput in a mode: the median of its runs (the batch runs are repeated in
    /// rounds, `--rounds`).
    fn throughput(&self, system: &str, mode: &str, backlog: Option<u64>) -> Option<f64> {
        median(
            self.outcomes
                .iter()
                .filter(|o| o.system == system && o.mode == mode && o.backlog == backlog)
                .map(Outcome::tasks_per_s)
                .collect(),
        )
    }

    /// The summary: every `RESULT` line again, the ratios, and the targets.
    pub fn print(&self, args: &Args) {
        println!();
        println!(
            "== results (load average at start: {}, at end: {})",
            self.load_at_start,
            load_average()
        );
        for outcome in &self.outcomes {
            println!("{}", outcome.result_line());
        }
        for system in ["stacksmith", "graphile-worker", "pgqueuer"] {
            let rounds = self
                .outcomes
                .iter()
                .filter(|o| o.system == system && o.round.is_some())
                .count();
            if let Some(value) = self
                .throughput(system, "batch", None)
                .filter(|_| rounds > 1)
            {
                println!(
                    "MEDIAN system={system} mode=batch rounds={rounds} tasks_per_s={value:.1}"
                );
            }
        }
        if let Some(latency) = &self.lease_latency {
            println!("{}", latency.line());
        }
        if let Some(load) = &self.submit_load {
            println!("{}", load.line());
        }
        println!("== ratios (tasks/s over tasks/s, same invocation; medians of the rounds)");
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let pairs = [
            ("stacksmith", "batch", "graphile-worker", "batch"),
            ("stacksmith", "single", "pgqueuer", "single"),
            ("stacksmith", "single", "graphile-worker", "single"),
            ("stacksmith", "batch", "pgqueuer", "batch"),
            ("stacksmith", "worker", "stacksmith", "single"),
        ];
        let mut ratios = Vec::new();
        for (system_a, mode_a, system_b, mode_b) in pairs {
            let value = ratio(
                self.throughput(system_a, mode_a, None),
                self.throughput(system_b, mode_b, None),
            );
            if let Some(value) = value {
                println!("RATIO {system_a}/{mode_a} over {system_b}/{mode_b} = {value:.2}");
            }
            ratios.push(((system_a, mode_a, system_b, mode_b), value));
        }
        let backlog_ratio = match args.backlog_sizes.as_slice() {
            [small, large, ..] => {
                let value = ratio(
                    self.throughput("stacksmith", "batch", Some(*large)),
                    self.throughput("stacksmith", "batch", Some(*small)),
                );
                if let Some(value) = value {
                    println!(
                        "RATIO stacksmith/batch backlog={large} over stacksmith/batch backlog={small} = {value:.2}"
                    );
                }
                value
            }
            _ => None,
        };
        println!("== targets (issue 17)");
        let target = |name: &str, value: Option<f64>, goal: &str, met: fn(f64) -> bool| match value
        {
            Some(value) => println!(
                "TARGET {name} value={value:.2} goal={goal} met={}",
                if met(value) { "yes" } else { "NO" }
            ),
            None => println!("TARGET {name} value=none goal={goal} met=not-measured"),
        };
        target(
            "batched_over_graphile_worker_batched",
            ratios[0].1,
            ">=1.0",
            |v| v >= 1.0,
        );
        target("single_over_pgqueuer_single", ratios[1].1, ">=2.0", |v| {
            v >= 2.0
        });
        target("backlog_large_over_small", backlog_ratio, ">=0.8", |v| {
            v >= 0.8
        });
        target(
            "submit_load_1000rps_p99_ms",
            self.submit_load.as_ref().map(|l| l.p99_ms),
            "<10",
            |v| v < 10.0,
        );
        target(
            "lease_latency_idle_worker_p99_ms",
            self.lease_latency.as_ref().map(|l| l.p99_ms),
            "<20",
            |v| v < 20.0,
        );
        if self.failures.is_empty() {
            println!("== every job of every run completed exactly once");
        } else {
            println!("== failures:");
            for failure in &self.failures {
                println!("  {failure}");
            }
        }
    }
}

/// The median of `values` (the mean of the middle two for an even count); `None` when empty.
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    match values.len() {
        0 => None,
        n if n % 2 == 1 => Some(values[middle]),
        _ => Some((values[middle - 1] + values[middle]) / 2.0),
    }
}

/// `/proc/loadavg`'s first three fields (the machine is shared: figures are only comparable
/// within one invocation).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn the_median_of_the_rounds() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0]), Some(3.0));
        assert_eq!(median(vec![5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}
