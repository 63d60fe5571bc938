//! The load driver of `cargo xtask bench queue` (a benchmark, not a test; see README.md,
//! "Benchmarks"). xtask builds it and the control plane with the `bench-release` profile,
//! installs the peers, and runs it; it can also be run by hand:
//!
//!     queue-bench --controlplane target/.../controlplane --database-url postgres://... \
//!         --redis-url redis://... [--tasks 20000] [--graphile-dir DIR --node NODE] \
//!         [--pgqueuer-python PYTHON --pgqueuer-driver driver.py] [--backlog]
//!
//! Every system runs against the same Postgres, each run in a database of its own (dropped
//! afterwards), with the same number of jobs, the same 16 producers and no-op jobs, back to back:
//!
//! - Stacksmith through HTTP (`controlplane serve`, release build, rate limits off): `single`
//!   submits one task per `POST /v1/tasks`, `batch` up to `--batch-size` per
//!   `POST /v1/tasks/batch`; in both, `--workers` loops lease up to `--lease-batch` tasks per
//!   long-polling `POST /v1/leases` and report them (no process per task);
//! - Stacksmith `worker`: the real `controlplane worker` running `true`, a process per task, with
//!   the CPU each task cost the worker and the server;
//! - graphile-worker and pgqueuer through our drivers (`tests/bench/queue/`), with their own
//!   performance-test settings, one submit per call (`single`) or batched (`batch`).
//!
//! The slow modes run once each; the `batch` runs (about a second each) run in `--rounds`
//! rounds (default 3), every system once per round in an order that turns, and the ratios use
//! each system's median: the machine's speed drifts between runs, and the last system run
//! would otherwise carry the drift.
//!
//! A run's clock starts when the producers start (workers are already waiting) and stops when
//! the last job's completion is committed. Every run ends with a check that each job completed
//! exactly once. Then: lease latency of an idle long-polling worker, `POST /v1/tasks` at a fixed
//! rate with rate limiting on, and with `--backlog` the throughput with 100,000 tasks queued
//! against 1,000. The output ends with one `RESULT` line per system and mode, the ratios, and
//! one `TARGET` line per target of issue 17.

mod peers;
mod report;
mod scratch;
mod stacksmith;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use report::Report;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "queue-bench",
    about = "Queue throughput of Stacksmith against graphile-worker and pgqueuer on one Postgres"
)]
pub struct Args {
    /// The `controlplane` binary to benchmark (a release-like build).
    #[arg(long)]
    pub controlplane: PathBuf,
    /// An admin-capable Postgres URL: each run creates and drops a database of its own there.
    #[arg(long, env = "STACKSMITH_TEST_DATABASE_URL")]
    pub database_url: String,
    /// Redis for the control plane (each run uses a key prefix of its own).
    #[arg(long, env = "STACKSMITH_TEST_REDIS_URL")]
    pub redis_url: String,
    /// Jobs per run.
    #[arg(long, default_value_t = 20_000)]
    pub tasks: u64,
    /// Concurrent producers.
    #[arg(long, default_value_t = 16)]
    pub producers: u64,
    /// Jobs per submit call in `batch` mode.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: u64,
    /// Stacksmith's lease loops in `single` and `batch` mode.
    #[arg(long, default_value_t = 4)]
    pub workers: u64,
    /// Tasks per lease request (at most 1,000); graphile-worker's local queue holds 500.
    #[arg(long, default_value_t = 500)]
    pub lease_batch: u64,
    /// Tasks in `worker` mode (a process each); default: `--tasks`.
    #[arg(long)]
    pub worker_tasks: Option<u64>,
    /// `controlplane worker --concurrency` in `worker` mode.
    #[arg(long, default_value_t = 32)]
    pub worker_concurrency: u64,
    /// A folder holding our graphile-worker driver (`driver.mjs`) and its `node_modules`.
    #[arg(long)]
    pub graphile_dir: Option<PathBuf>,
    /// The Node.js to run graphile-worker with (it wants Node 22).
    #[arg(long, default_value = "node")]
    pub node: PathBuf,
    /// graphile-worker processes (its performance test runs 4, each with 24 concurrent jobs).
    #[arg(long, default_value_t = 4)]
    pub graphile_processes: u64,
    /// The Python of a venv holding pgqueuer.
    #[arg(long)]
    pub pgqueuer_python: Option<PathBuf>,
    /// Our pgqueuer driver (`tests/bench/queue/pgqueuer/driver.py`).
    #[arg(long)]
    pub pgqueuer_driver: Option<PathBuf>,
    /// Systems to run (stacksmith, graphile-worker, pgqueuer); default: all that are available.
    #[arg(long, value_delimiter = ',')]
    pub systems: Vec<String>,
    /// Modes to run (single, batch, worker); default: all.
    #[arg(long, value_delimiter = ',')]
    pub modes: Vec<String>,
    /// Rounds of the `batch` runs: every system once per round, in an order that turns each
    /// round (each system takes every place), the ratios from each system's median. A batch
    /// run lasts about a second; the machine's speed drifts from run to run.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Also measure throughput with a large backlog queued against a small one.
    #[arg(long)]
    pub backlog: bool,
    /// The two backlog sizes compared by `--backlog`.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000u64, 100_000])]
    pub backlog_sizes: Vec<u64>,
    /// Samples of submit-to-lease latency with one idle long-polling worker (0: skip).
    #[arg(long, default_value_t = 300)]
    pub latency_samples: u64,
    /// Requests per second of the open-loop submit run with rate limiting on (0: skip).
    #[arg(long, default_value_t = 1000)]
    pub submit_rps: u64,
    /// Seconds of the open-loop submit run.
    #[arg(long, default_value_t = 10)]
    pub submit_seconds: u64,
    /// Where the servers' and workers' logs go.
    #[arg(long, default_value = "queue-bench-logs")]
    pub logs: PathBuf,
    /// Upper bound of each run (a run that has not finished by then fails).
    #[arg(long, default_value_t = 900)]
    pub run_timeout_seconds: u64,
}

impl Args {
    fn wants_system(&self, name: &str) -> bool {
        self.systems.is_empty() || self.systems.iter().any(|s| s == name)
    }
    fn wants_mode(&self, name: &str) -> bool {
        self.modes.is_empty() || self.modes.iter().any(|m| m == name)
    }
    fn run_timeout(&self) -> Duration {
        Duration::from_secs(self.run_timeout_seconds)
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    // Every system talks to the same local Postgres without TLS (unless the URL asks for it):
    // each client's default differs (sqlx and asyncpg try TLS first, node-postgres does not),
    // and encrypting loopback traffic measures the cipher, not the queue.
    if !args.database_url.contains("sslmode=") {
        let separator = if args.database_url.contains('?') {
            '&'
        } else {
            '?'
        };
        args.database_url = format!("{}{separator}sslmode=disable", args.database_url);
    }
    anyhow::ensure!(args.tasks > 0, "--tasks must be at least 1");
    anyhow::ensure!(args.producers > 0, "--producers must be at least 1");
    anyhow::ensure!(
        (1..=1000).contains(&args.batch_size),
        "--batch-size must be 1-1000"
    );
    anyhow::ensure!(
        (1..=1000).contains(&args.lease_batch),
        "--lease-batch must be 1-1000"
    );
    std::fs::create_dir_all(&args.logs)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(&args))?;
    report.print(&args);
    if report.failures.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "{} run(s) failed or did not complete every job exactly once",
            report.failures.len()
        )
    }
}

/// A peer the run wants and can start; says why when it is wanted and cannot be.
fn wanted_peer(
    wanted: bool,
    peer: impl FnOnce() -> Option<peers::Peer>,
    skipped: &str,
) -> Option<peers::Peer> {
    if !wanted {
        return None;
    }
    let peer = peer();
    if peer.is_none() {
        println!("queue-bench: {skipped}");
    }
    peer
}

async fn run(args: &Args) -> anyhow::Result<Report> {
    let mut report = Report {
        load_at_start: report::load_average(),
        ..Report::default()
    };
    println!(
        "queue-bench: {} jobs per run, {} producers, on {}",
        args.tasks,
        args.producers,
        scratch::redact(&args.database_url)
    );
    // One run each of the slow modes: one submit per job, and a process per task.
    if args.wants_system("stacksmith") {
        if args.wants_mode("single") {
            let outcome = stacksmith::throughput(args, stacksmith::Mode::Single, 0).await;
            report.record_optional("stacksmith single", outcome);
        }
        if args.wants_mode("worker") {
            report.record("stacksmith worker", stacksmith::worker_mode(args).await);
        }
    }
    let graphile = wanted_peer(
        args.wants_system("graphile-worker"),
        || peers::Peer::graphile(args),
        "graphile-worker skipped (no --graphile-dir)",
    );
    let pgqueuer = wanted_peer(
        args.wants_system("pgqueuer"),
        || peers::Peer::pgqueuer(args),
        "pgqueuer skipped (no --pgqueuer-python and --pgqueuer-driver)",
    );
    for (name, peer) in [("graphile-worker", &graphile), ("pgqueuer", &pgqueuer)] {
        if let Some(peer) = peer
            && args.wants_mode("single")
        {
            report.record(
                &format!("{name} single"),
                peers::throughput(args, peer, "single").await,
            );
        }
    }
    // The batch runs, interleaved in rounds.
    if args.wants_mode("batch") {
        let mut systems: Vec<(&str, Option<&peers::Peer>)> = Vec::new();
        if args.wants_system("stacksmith") {
            systems.push(("stacksmith", None));
        }
        for (name, peer) in [("graphile-worker", &graphile), ("pgqueuer", &pgqueuer)] {
            if let Some(peer) = peer {
                systems.push((name, Some(peer)));
            }
        }
        let rounds = args.rounds.max(1);
        for round in 0..rounds {
            for place in 0..systems.len() {
                let (name, peer) = systems[(round as usize + place) % systems.len()];
                let label = format!("{name} batch (round {} of {rounds})", round + 1);
                let outcome = match peer {
                    None => stacksmith::throughput(args, stacksmith::Mode::Batch, 0).await,
                    Some(peer) => peers::throughput(args, peer, "batch").await.map(Some),
                };
                let outcome = outcome.map(|outcome| {
                    outcome.map(|mut outcome| {
                        outcome.round = Some(round + 1);
                        outcome
                    })
                });
                report.record_optional(&label, outcome);
            }
        }
    }
    if args.wants_system("stacksmith") {
        if args.backlog {
            for &backlog in &args.backlog_sizes {
                let outcome = stacksmith::throughput(args, stacksmith::Mode::Batch, backlog).await;
                report.record_optional(&format!("stacksmith batch backlog {backlog}"), outcome);
            }
        }
        if args.latency_samples > 0 {
            match stacksmith::lease_latency(args).await {
                Ok(latency) => {
                    println!("{}", latency.line());
                    report.lease_latency = Some(latency);
                }
                Err(error) => {
                    println!("queue-bench: lease latency failed: {error:#}");
                    report.failures.push(format!("lease latency: {error:#}"));
                }
            }
        }
        if args.submit_rps > 0 {
            match stacksmith::submit_load(args).await {
                Ok(load) => {
                    println!("{}", load.line());
                    report.submit_load = Some(load);
                }
                Err(error) => {
                    println!("queue-bench: submit load failed: {error:#}");
                    report.failures.push(format!("submit load: {error:#}"));
                }
            }
        }
    }
    Ok(report)
}
