//! `provision-bench`: the provisioner's speed targets of issue 14, measured through the binary
//! against a private moto behind our fault proxy (run by `cargo xtask bench provision`).
//!
//! 1. **`up` against the critical path.** `up` of the shipped `local` stack (the cloud side,
//!    cache included) with the proxy showing AWS's lifecycle states at scaled durations (EKS
//!    `CREATING`, RDS `creating`/`backing-up`, ElastiCache `creating`). Each resource's duration
//!    is read from `up --json`'s progress events as they arrive; the critical path is the longest
//!    chain of the stack's dependency graph (`provisioner graph`) weighed with those same
//!    durations. `wall / critical` says how much the executor adds to what AWS makes it wait
//!    for (target: at most 1.05).
//! 2. **`drift` of a production-sized stack** (`stacks/production.yaml`: 3 AZs with a NAT
//!    gateway each, 3 node groups, a multi-AZ database, a cache; without its managed add-ons,
//!    which moto cannot serve) with a fixed latency added to
//!    every AWS call (default 80 ms; real AWS answers in tens of milliseconds): the wall time of
//!    the whole `drift --skip-cluster` process (target: under 2 s), and its calls.
//!
//! Prints a text report, or one JSON document with `--json`; exits 1 when a target is missed.
//! Needs the test servers' environment (`cargo xtask bench provision` provides it).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::{Value, json};
use stacksmith_testkit::faultproxy::{FaultConfig, FaultProxy, Rule, Stats};
use stacksmith_testkit::moto::MotoServer;

#[derive(Debug, Parser)]
#[command(about = "The provisioner's speed targets against moto behind the fault proxy")]
struct Args {
    /// Real lifecycle durations times this (0.002: a 15-minute EKS create shows CREATING 1.8 s).
    #[arg(long, default_value_t = 0.002)]
    lifecycle_scale: f64,
    /// Latency added to every AWS call during the drift runs, in milliseconds.
    #[arg(long, default_value_t = 80)]
    latency_ms: u64,
    /// How many `up` runs (each on a fresh emulator); the report gives each and the worst.
    #[arg(long, default_value_t = 3)]
    up_runs: usize,
    /// How many `drift` runs; the report gives the median and the worst.
    #[arg(long, default_value_t = 5)]
    drift_runs: usize,
    /// The provisioner binary (default: next to this program).
    #[arg(long)]
    provisioner: Option<PathBuf>,
    /// One JSON document on stdout instead of the text report.
    #[arg(long)]
    json: bool,
}

const UP_TARGET: f64 = 1.05;
const DRIFT_TARGET: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("provision-bench: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// A scratch folder with the shipped stacks and the bench's own stack files.
struct Workdir {
    dir: PathBuf,
    root: PathBuf,
    provisioner: PathBuf,
}

impl Workdir {
    fn new(provisioner: PathBuf) -> Result<Self> {
        let root = stacksmith_testkit::workspace_root();
        let dir = std::env::temp_dir().join(stacksmith_testkit::unique_name("provision-bench"));
        std::fs::create_dir_all(dir.join("stacks"))?;
        for entry in std::fs::read_dir(root.join("stacks"))?.flatten() {
            std::fs::copy(entry.path(), dir.join("stacks").join(entry.file_name()))?;
        }
        // Production keeps its state in Postgres; here it stays in a local file.
        std::fs::write(
            dir.join("stacks/production-bench.yaml"),
            "# production.yaml with local state, against the bench's own emulator\n\
             extends: production.yaml\nstate: { backend: local, lock_timeout: 5m }\n\
             aws: { endpoint_url: \"${env:STACKSMITH_AWS_ENDPOINT}\" }\n\
             # moto has no EKS add-on API (404): no managed add-ons here\n\
             cluster: { addons: {} }\n",
        )?;
        Ok(Self {
            dir,
            root,
            provisioner,
        })
    }

    fn command(&self, endpoint: &str, args: &[&str]) -> Command {
        let mut command = stacksmith_testkit::provisioner_against_moto(
            &self.provisioner,
            endpoint,
            "provision-bench",
        );
        command
            .args(args)
            .current_dir(&self.dir)
            .env("STACKSMITH_STACKS_DIR", self.dir.join("stacks"))
            // production.yaml names it; production-bench.yaml keeps state in a local file.
            .env("STACKSMITH_STATE_URL", "postgres://unused.invalid/state")
            .env("STACKSMITH_POLICIES_DIR", self.policies(args));
        command
    }

    /// The shipped policies; for `production-bench` without `cluster_addons.rego`, which
    /// rightly denies a production stack without its add-ons (moto has no add-on API).
    fn policies(&self, args: &[&str]) -> PathBuf {
        let shipped = self.root.join("policies");
        if !args.contains(&"production-bench") {
            return shipped;
        }
        let dir = self.dir.join("policies-without-addons");
        let _ = std::fs::create_dir_all(&dir);
        for entry in std::fs::read_dir(&shipped).into_iter().flatten().flatten() {
            let name = entry.file_name();
            if !name.to_string_lossy().starts_with("cluster_addons") {
                let _ = std::fs::copy(entry.path(), dir.join(name));
            }
        }
        dir
    }

    fn run(&self, endpoint: &str, args: &[&str]) -> Result<String> {
        let output = self
            .command(endpoint, args)
            .output()
            .with_context(|| format!("running {}", self.provisioner.display()))?;
        if !output.status.success() {
            bail!(
                "`provisioner {}` failed ({}):\n{}{}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Clears the local state files (each `up` run starts on a fresh emulator).
    fn clear_state(&self) {
        let _ = std::fs::remove_dir_all(self.dir.join(".stacksmith"));
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The edges `(dependency, dependent)` of `provisioner graph`'s DOT.
fn edges_of(dot: &str) -> Vec<(String, String)> {
    dot.lines()
        .filter_map(|line| {
            let (from, to) = line.trim().split_once("\" -> \"")?;
            let from = from.strip_prefix('"')?;
            let to = to.split('"').next()?;
            Some((from.to_owned(), to.to_owned()))
        })
        .collect()
}

/// The longest chain through `edges` weighed with `durations` (nodes without one weigh
/// nothing): its total and its nodes.
fn critical_path(
    edges: &[(String, String)],
    durations: &HashMap<String, Duration>,
) -> (Duration, Vec<String>) {
    let mut nodes: Vec<&str> = durations.keys().map(String::as_str).collect();
    for (from, to) in edges {
        nodes.push(from);
        nodes.push(to);
    }
    nodes.sort_unstable();
    nodes.dedup();
    let mut dependencies: HashMap<&str, Vec<&str>> = HashMap::new();
    for (from, to) in edges {
        dependencies.entry(to.as_str()).or_default().push(from);
    }
    // Finish time of each node's chain, memoised (the graph is acyclic: the planner checks).
    fn finish<'a>(
        node: &'a str,
        dependencies: &HashMap<&'a str, Vec<&'a str>>,
        durations: &HashMap<String, Duration>,
        memo: &mut HashMap<&'a str, (Duration, Option<&'a str>)>,
    ) -> Duration {
        if let Some((total, _)) = memo.get(node) {
            return *total;
        }
        let mut best = (Duration::ZERO, None);
        for &dependency in dependencies.get(node).into_iter().flatten() {
            let total = finish(dependency, dependencies, durations, memo);
            if total > best.0 || best.1.is_none() {
                best = (total, Some(dependency));
            }
        }
        let own = durations.get(node).copied().unwrap_or_default();
        memo.insert(node, (best.0 + own, best.1));
        best.0 + own
    }
    let mut memo = HashMap::new();
    let mut last = None;
    let mut longest = Duration::ZERO;
    for node in &nodes {
        let total = finish(node, &dependencies, durations, &mut memo);
        if total > longest || last.is_none() {
            longest = total;
            last = Some(*node);
        }
    }
    let mut path = Vec::new();
    let mut at = last;
    while let Some(node) = at {
        path.push(node.to_owned());
        at = memo.get(node).and_then(|(_, previous)| *previous);
    }
    path.reverse();
    (longest, path)
}

struct UpRun {
    process_wall: Duration,
    /// From the first `started` event to the last `finished` one.
    apply_wall: Duration,
    critical: Duration,
    path: Vec<String>,
    resources: usize,
    calls: u64,
}

/// One `up --json` of `local`, with each resource's duration from its progress events.
fn up_once(work: &Workdir, proxy: &FaultProxy, edges: &[(String, String)]) -> Result<UpRun> {
    let started = Instant::now();
    let mut child = work
        .command(
            &proxy.url(),
            &[
                "up",
                "--yes",
                "--json",
                "--skip-cluster-install",
                "--stack",
                "local",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("up's stdout")?;
    let mut began: HashMap<String, Instant> = HashMap::new();
    let mut durations: HashMap<String, Duration> = HashMap::new();
    let (mut first, mut last) = (None::<Instant>, None::<Instant>);
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        let now = Instant::now();
        let Ok(event) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let address = event["address"].as_str().unwrap_or_default().to_owned();
        match event["event"].as_str() {
            Some("started") => {
                first.get_or_insert(now);
                began.insert(address, now);
            }
            Some("finished") => {
                last = Some(now);
                if let Some(at) = began.get(&address) {
                    *durations.entry(address).or_default() += now - *at;
                }
            }
            Some("failed") => bail!("up failed: {line}"),
            _ => {}
        }
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!("up failed:\n{}", String::from_utf8_lossy(&output.stderr));
    }
    let process_wall = started.elapsed();
    let (Some(first), Some(last)) = (first, last) else {
        bail!("up emitted no progress events");
    };
    let (critical, path) = critical_path(edges, &durations);
    Ok(UpRun {
        process_wall,
        apply_wall: last - first,
        critical,
        path,
        resources: durations.len(),
        calls: total_calls(&proxy.stats()),
    })
}

fn total_calls(stats: &Stats) -> u64 {
    stats.values().map(|s| s.calls).sum()
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

fn run(args: Args) -> Result<bool> {
    let provisioner = match args.provisioner.clone() {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .context("this program's folder")?
            .join("provisioner"),
    };
    if !provisioner.is_file() {
        bail!(
            "{} is missing: build the workspace first",
            provisioner.display()
        );
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let moto = MotoServer::start();
    let lifecycle = FaultConfig {
        seed: 14,
        lifecycle_scale: Some(args.lifecycle_scale),
        ..FaultConfig::default()
    };
    let proxy = runtime
        .block_on(FaultProxy::start(&moto.url(), lifecycle.clone()))
        .map_err(|e| anyhow::anyhow!("the fault proxy: {e}"))?;
    let work = Workdir::new(provisioner)?;
    let endpoint = proxy.url();

    // 1. up of `local` against its critical path.
    let edges = edges_of(&work.run(&endpoint, &["graph", "--stack", "local"])?);
    let mut ups = Vec::new();
    for index in 0..args.up_runs.max(1) {
        moto.reset();
        proxy.reset();
        work.clear_state();
        let run = up_once(&work, &proxy, &edges)?;
        eprintln!(
            "provision-bench: up {}/{}: apply {:.2}s, critical path {:.2}s, ratio {:.3}",
            index + 1,
            args.up_runs.max(1),
            run.apply_wall.as_secs_f64(),
            run.critical.as_secs_f64(),
            run.apply_wall.as_secs_f64() / run.critical.as_secs_f64()
        );
        ups.push(run);
    }
    let ratio = |run: &UpRun| run.apply_wall.as_secs_f64() / run.critical.as_secs_f64();
    let worst_ratio = ups.iter().map(ratio).fold(0.0, f64::max);

    // 2. drift of production with latency on every call.
    moto.reset();
    proxy.reset();
    work.clear_state();
    eprintln!("provision-bench: up of production-bench (3 AZs, NAT per AZ, 3 node groups) ...");
    work.run(
        &endpoint,
        &[
            "up",
            "--yes",
            "--skip-cluster-install",
            "--stack",
            "production-bench",
        ],
    )?;
    let state = std::fs::read_to_string(work.dir.join(".stacksmith/state/production.json"))
        .context("production-bench's state")?;
    let recorded = serde_json::from_str::<Value>(&state)?["resources"]
        .as_object()
        .map_or(0, |r| r.len());
    proxy.configure(FaultConfig {
        rules: vec![Rule::latency(Duration::from_millis(args.latency_ms), "*")],
        ..lifecycle
    });
    let mut drifts = Vec::new();
    let mut drift_calls = 0;
    for index in 0..args.drift_runs.max(1) {
        proxy.reset();
        let started = Instant::now();
        let output = work
            .command(
                &endpoint,
                &[
                    "drift",
                    "--skip-cluster",
                    "--stack",
                    "production-bench",
                    "--format",
                    "json",
                ],
            )
            .output()?;
        let wall = started.elapsed();
        if output.status.code() != Some(0) {
            bail!(
                "drift did not exit 0 ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        drift_calls = total_calls(&proxy.stats());
        eprintln!(
            "provision-bench: drift {}/{}: {:.2}s, {drift_calls} calls",
            index + 1,
            args.drift_runs.max(1),
            wall.as_secs_f64()
        );
        drifts.push(wall);
    }
    let drift_worst = drifts.iter().max().copied().unwrap_or_default();
    let drift_median = median(drifts.clone());
    let up_held = worst_ratio <= UP_TARGET;
    let drift_held = drift_median < DRIFT_TARGET;

    let secs = |d: Duration| (d.as_secs_f64() * 1000.0).round() / 1000.0;
    let report = json!({
        "format_version": 1,
        "up": {
            "stack": "local",
            "lifecycle_scale": args.lifecycle_scale,
            "runs": ups.iter().map(|r| json!({
                "apply_wall_s": secs(r.apply_wall),
                "process_wall_s": secs(r.process_wall),
                "critical_path_s": secs(r.critical),
                "ratio": (ratio(r) * 1000.0).round() / 1000.0,
                "resources": r.resources,
                "calls": r.calls,
            })).collect::<Vec<_>>(),
            "critical_path": ups.last().map(|r| r.path.clone()).unwrap_or_default(),
            "worst_ratio": (worst_ratio * 1000.0).round() / 1000.0,
            "target": UP_TARGET,
            "held": up_held,
        },
        "drift": {
            "stack": "production",
            "recorded_resources": recorded,
            "latency_ms": args.latency_ms,
            "runs_s": drifts.iter().map(|d| secs(*d)).collect::<Vec<_>>(),
            "median_s": secs(drift_median),
            "worst_s": secs(drift_worst),
            "calls": drift_calls,
            "target_s": DRIFT_TARGET.as_secs_f64(),
            "held": drift_held,
        },
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "up of local (lifecycle x{}): worst wall/critical {:.3} (target <= {UP_TARGET}): {}\n  critical path: {}",
            args.lifecycle_scale,
            worst_ratio,
            if up_held { "held" } else { "MISSED" },
            ups.last().map(|r| r.path.join(" -> ")).unwrap_or_default()
        );
        println!(
            "drift of production ({recorded} resources, +{} ms per call): median {:.2}s, worst {:.2}s, {drift_calls} calls (target < {}s): {}",
            args.latency_ms,
            drift_median.as_secs_f64(),
            drift_worst.as_secs_f64(),
            DRIFT_TARGET.as_secs(),
            if drift_held { "held" } else { "MISSED" }
        );
    }
    drop(work);
    Ok(up_held && drift_held)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_critical_path_is_the_longest_weighed_chain() {
        let edges = vec![
            ("vpc".to_owned(), "subnet".to_owned()),
            ("vpc".to_owned(), "igw".to_owned()),
            ("subnet".to_owned(), "cluster".to_owned()),
            ("igw".to_owned(), "route".to_owned()),
        ];
        let ms = Duration::from_millis;
        let durations: HashMap<String, Duration> = [
            ("vpc", ms(100)),
            ("subnet", ms(50)),
            ("igw", ms(300)),
            ("cluster", ms(1000)),
            ("route", ms(10)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let (total, path) = critical_path(&edges, &durations);
        assert_eq!(total, ms(1150));
        assert_eq!(path, ["vpc", "subnet", "cluster"]);
    }

    #[test]
    fn edges_are_read_from_the_graphs_dot() {
        let dot = "digraph \"local\" {\n  \"a\" [label=\"a\"];\n  \"a\" -> \"b[0]\" [color=red];\n  \"b[0]\" -> \"c\";\n}\n";
        assert_eq!(
            edges_of(dot),
            [
                ("a".to_owned(), "b[0]".to_owned()),
                ("b[0]".to_owned(), "c".to_owned())
            ]
        );
    }
}
