//! Stacksmith's runs: the release `controlplane serve` in a database of its own, driven over
//! HTTP by in-process producers and lease loops, or by the real `controlplane worker`.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use redis::AsyncCommands;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use tokio::sync::{Mutex, Semaphore, watch};
use tokio::task::JoinSet;

use crate::Args;
use crate::report::{Latency, Outcome, SubmitLoad};
use crate::scratch::{self, Process};

const POOL: &str = "bench";

/// How the producers submit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One task per `POST /v1/tasks`.
    Single,
    /// Up to `--batch-size` tasks per `POST /v1/tasks/batch`.
    Batch,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::Batch => "batch",
        }
    }
}

/// A random key for this run only.
fn run_key(prefix: &str) -> String {
    format!(
        "{prefix}{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// A `controlplane serve` on 127.0.0.1 with a team, its key and a worker key.
struct ControlPlane {
    process: Process,
    base: String,
    team_key: String,
    worker_key: String,
    redis_prefix: String,
    redis_url: String,
}

/// Rate limits for [`ControlPlane::start`].
#[derive(Debug, Clone, Copy)]
enum Limits {
    /// None: the throughput and latency runs measure the queue.
    Off,
    /// Those of the `submit_load` benchmark: per key 1500 rps (burst 500), global 5000 rps, per
    /// client 5000 rps (burst 10,000).
    SubmitLoad,
}

impl ControlPlane {
    async fn start(
        args: &Args,
        database_url: &str,
        label: &str,
        limits: Limits,
    ) -> anyhow::Result<Self> {
        let binary = &args.controlplane;
        cli(binary, database_url, &["migrate"]).await?;
        let team = cli(
            binary,
            database_url,
            &["teams", "create", "--name", "bench"],
        )
        .await?;
        let team_id = json_field(&team, "id")?;
        let key = cli(
            binary,
            database_url,
            &["keys", "create", "--team", &team_id, "--name", "bench"],
        )
        .await?;
        let team_key = json_field(&key, "key")?;
        let worker_key = run_key("bench-worker-");
        let redis_prefix = stacksmith_testkit::unique_name("qbench");
        let (per_key, burst, global, per_client, per_client_burst) = match limits {
            Limits::Off => (0, 0, 0, 0, 0),
            Limits::SubmitLoad => (1500, 500, 5000, 5000, 10_000),
        };
        let log = args.logs.join(format!("{label}-serve.log"));
        let mut command = tokio::process::Command::new(binary);
        command
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("REDIS_URL", &args.redis_url)
            .env("CONTROLPLANE_LISTEN", "127.0.0.1:0")
            .env("CONTROLPLANE_REDIS_PREFIX", &redis_prefix)
            .env("CONTROLPLANE_WORKER_KEY", &worker_key)
            .env("CONTROLPLANE_SHUTDOWN_GRACE_MS", "2000")
            .env("CONTROLPLANE_CONCURRENCY_LIMIT", "2048")
            .env("CONTROLPLANE_RATE_PER_KEY_RPS", per_key.to_string())
            .env("CONTROLPLANE_RATE_BURST", burst.to_string())
            .env("CONTROLPLANE_RATE_GLOBAL_RPS", global.to_string())
            .env("CONTROLPLANE_RATE_PER_CLIENT_RPS", per_client.to_string())
            .env(
                "CONTROLPLANE_RATE_PER_CLIENT_BURST",
                per_client_burst.to_string(),
            );
        let mut process = Process::spawn("controlplane serve", &mut command, &log)?;
        // `serve` binds port 0 and logs the address it got.
        let mut address = None;
        let deadline = Instant::now() + Duration::from_secs(30);
        while address.is_none() {
            if let Some(status) = process.child.try_wait()? {
                anyhow::bail!(
                    "controlplane serve exited during start-up ({status}); see {}",
                    log.display()
                );
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "controlplane serve did not log its address within 30 s; see {}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            address = listening_address(&std::fs::read_to_string(&log).unwrap_or_default());
        }
        let base = format!("http://{}", address.unwrap_or_default());
        let client = reqwest::Client::new();
        scratch::wait_for(
            "controlplane serve /readyz",
            Duration::from_secs(30),
            Duration::from_millis(50),
            || {
                let request = client.get(format!("{base}/readyz")).send();
                async move { Ok(request.await.is_ok_and(|r| r.status() == 200)) }
            },
        )
        .await?;
        Ok(Self {
            process,
            base,
            team_key,
            worker_key,
            redis_prefix,
            redis_url: args.redis_url.clone(),
        })
    }

    fn cpu_seconds(&self) -> f64 {
        self.process
            .pid()
            .and_then(scratch::cpu_seconds)
            .unwrap_or(0.0)
    }

    /// Stops the server and removes its Redis keys.
    async fn stop(self) -> anyhow::Result<()> {
        self.process.stop(Duration::from_secs(10)).await?;
        let client = redis::Client::open(self.redis_url.as_str())?;
        let mut redis = client.get_multiplexed_async_connection().await?;
        let keys: Vec<String> = {
            let mut scan = redis
                .scan_match::<_, String>(format!("{}:*", self.redis_prefix))
                .await?;
            let mut keys = Vec::new();
            while let Some(key) = scan.next_item().await {
                keys.push(key?);
            }
            keys
        };
        if !keys.is_empty() {
            let _: i64 = redis::cmd("DEL").arg(keys).query_async(&mut redis).await?;
        }
        Ok(())
    }
}

/// The address in `serve`'s JSON log line `listening`.
fn listening_address(log: &str) -> Option<String> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["fields"]["message"] == "listening")
        .and_then(|line| line["fields"]["address"].as_str().map(str::to_owned))
}

fn json_field(text: &str, field: &str) -> anyhow::Result<String> {
    let value: Value =
        serde_json::from_str(text.trim()).with_context(|| format!("not JSON: {text}"))?;
    value[field]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no `{field}` in {text}"))
}

/// Runs a `controlplane` subcommand against `database_url` and returns its stdout.
async fn cli(binary: &PathBuf, database_url: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = tokio::process::Command::new(binary)
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .with_context(|| format!("cannot run {}", binary.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "`controlplane {}` failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(1024)
        .build()?)
}

/// One task as the producers submit it: `{"pool": .., "command": ["true"], "env": {"BENCH_JOB":
/// "<index>"}}`, serialized from a struct (a `serde_json::Value` per task cost the driver, which
/// shares the machine with the system it measures, more than the task's JSON).
#[derive(serde::Serialize)]
struct TaskBody {
    pool: &'static str,
    command: [&'static str; 1],
    env: BenchEnv,
}

#[derive(serde::Serialize)]
struct BenchEnv {
    #[serde(rename = "BENCH_JOB")]
    bench_job: String,
}

fn task_body(index: u64) -> TaskBody {
    TaskBody {
        pool: POOL,
        command: ["true"],
        env: BenchEnv {
            bench_job: index.to_string(),
        },
    }
}

#[derive(serde::Serialize)]
struct BatchBody {
    tasks: Vec<TaskBody>,
}

/// Submits one task.
async fn submit_one(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    index: u64,
) -> anyhow::Result<()> {
    let response = client
        .post(format!("{base}/v1/tasks"))
        .bearer_auth(key)
        .json(&task_body(index))
        .send()
        .await?;
    let status = response.status();
    anyhow::ensure!(
        status == 201,
        "POST /v1/tasks answered {status}: {}",
        response.text().await.unwrap_or_default()
    );
    Ok(())
}

/// Submits tasks `range` in one `POST /v1/tasks/batch`.
async fn submit_batch(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    range: std::ops::Range<u64>,
) -> anyhow::Result<()> {
    let body = BatchBody {
        tasks: range.map(task_body).collect(),
    };
    let response = client
        .post(format!("{base}/v1/tasks/batch"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await?;
    let status = response.status();
    anyhow::ensure!(
        status.is_success(),
        "POST /v1/tasks/batch answered {status}: {}",
        response.text().await.unwrap_or_default()
    );
    Ok(())
}

/// The part of a lease the lease loops use (a worker would read the task's command too); the
/// other fields are skipped while parsing, not built into a tree.
#[derive(Debug, serde::Deserialize)]
struct LeaseItem {
    lease_id: String,
    fencing_token: i64,
    task_id: String,
}

#[derive(Debug, serde::Deserialize)]
struct LeaseReply {
    leases: Vec<LeaseItem>,
}

#[derive(Debug, serde::Serialize)]
struct CompleteReport<'a> {
    lease_id: &'a str,
    fencing_token: i64,
    kind: &'static str,
}

#[derive(Debug, serde::Serialize)]
struct ReportsRequest<'a> {
    reports: Vec<CompleteReport<'a>>,
}

#[derive(Debug, serde::Deserialize)]
struct ReportResultItem {
    outcome: String,
}

#[derive(Debug, serde::Deserialize)]
struct ReportsReply {
    results: Vec<ReportResultItem>,
}

/// What the lease loops completed: each task id once, and how many came back again.
#[derive(Default)]
struct Completions {
    count: AtomicU64,
    duplicates: AtomicU64,
    ids: Mutex<HashSet<String>>,
    last: Mutex<Option<Instant>>,
}

impl Completions {
    async fn add(&self, task_id: &str) {
        if self.ids.lock().await.insert(task_id.to_owned()) {
            self.count.fetch_add(1, Ordering::SeqCst);
            *self.last.lock().await = Some(Instant::now());
        } else {
            self.duplicates.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// One lease loop: lease up to `lease_batch` tasks (long poll) and report them, until `target`
/// tasks are done or `deadline` passes. The next lease request goes out while the previous
/// batch is being reported (as `controlplane worker` does, and graphile-worker's local queue):
/// at most one batch waits for the reporter.
struct LeaseLoop {
    client: reqwest::Client,
    base: String,
    worker_key: String,
    worker: String,
    lease_batch: u64,
    /// One `POST /v1/leases/reports` for all the tasks of a lease, or one
    /// `POST /v1/leases/{id}/complete` each (concurrently).
    batched_reports: bool,
    target: u64,
    done: Arc<Completions>,
    deadline: Instant,
}

impl LeaseLoop {
    async fn run(self) -> anyhow::Result<()> {
        let this = Arc::new(self);
        let (to_report, mut reports) = tokio::sync::mpsc::channel::<Vec<LeaseItem>>(1);
        let reporter = {
            let this = this.clone();
            tokio::spawn(async move {
                while let Some(leases) = reports.recv().await {
                    if this.batched_reports {
                        this.report_batch(&leases).await?;
                    } else {
                        this.report_each(leases).await?;
                    }
                }
                anyhow::Ok(())
            })
        };
        let leasing = this.lease_until_done(&to_report).await;
        drop(to_report);
        let reported = reporter.await?;
        leasing.and(reported)
    }

    async fn lease_until_done(
        &self,
        to_report: &tokio::sync::mpsc::Sender<Vec<LeaseItem>>,
    ) -> anyhow::Result<()> {
        let Self {
            client,
            base,
            worker_key,
            ..
        } = self;
        while self.done.count.load(Ordering::SeqCst) < self.target && Instant::now() < self.deadline
        {
            let response = client
                .post(format!("{base}/v1/leases"))
                .bearer_auth(worker_key)
                .json(
                    &json!({"pool": POOL, "max_tasks": self.lease_batch, "wait_seconds": 1,
                              "lease_seconds": 120, "worker": self.worker}),
                )
                .send()
                .await?;
            let status = response.status();
            anyhow::ensure!(status == 200, "POST /v1/leases answered {status}");
            let LeaseReply { leases } = response.json().await?;
            if leases.is_empty() {
                continue;
            }
            // The reporter stopped only on an error, which `run` returns.
            if to_report.send(leases).await.is_err() {
                break;
            }
        }
        Ok(())
    }

    async fn report_batch(&self, leases: &[LeaseItem]) -> anyhow::Result<()> {
        let reports = ReportsRequest {
            reports: leases
                .iter()
                .map(|lease| CompleteReport {
                    lease_id: &lease.lease_id,
                    fencing_token: lease.fencing_token,
                    kind: "complete",
                })
                .collect(),
        };
        let response = self
            .client
            .post(format!("{}/v1/leases/reports", self.base))
            .bearer_auth(&self.worker_key)
            .json(&reports)
            .send()
            .await?;
        let status = response.status();
        anyhow::ensure!(status == 200, "POST /v1/leases/reports answered {status}");
        let ReportsReply { results } = response.json().await?;
        anyhow::ensure!(
            results.len() == leases.len(),
            "{} results for {} reports",
            results.len(),
            leases.len()
        );
        for (lease, result) in leases.iter().zip(&results) {
            anyhow::ensure!(
                result.outcome == "ok",
                "the completion of lease {} was refused: {}",
                lease.lease_id,
                result.outcome
            );
            self.done.add(&lease.task_id).await;
        }
        Ok(())
    }

    async fn report_each(&self, leases: Vec<LeaseItem>) -> anyhow::Result<()> {
        let mut reports = JoinSet::new();
        for lease in leases {
            let (client, base, key) = (
                self.client.clone(),
                self.base.clone(),
                self.worker_key.clone(),
            );
            reports.spawn(async move {
                let lease_id = &lease.lease_id;
                let response = client
                    .post(format!("{base}/v1/leases/{lease_id}/complete"))
                    .bearer_auth(&key)
                    .json(&json!({"fencing_token": lease.fencing_token, "result": null}))
                    .send()
                    .await?;
                let status = response.status();
                anyhow::ensure!(
                    status == 200,
                    "POST /v1/leases/{lease_id}/complete answered {status}"
                );
                Ok(lease.task_id)
            });
        }
        while let Some(report) = reports.join_next().await {
            self.done.add(&report??).await;
        }
        Ok(())
    }
}

/// Whether `POST /v1/leases/reports` exists (an empty batch is refused, not unknown).
async fn batched_reports_available(client: &reqwest::Client, base: &str, key: &str) -> bool {
    let response = client
        .post(format!("{base}/v1/leases/reports"))
        .bearer_auth(key)
        .json(&json!({"reports": []}))
        .send()
        .await;
    response.is_ok_and(|r| r.status() != 404 && r.status() != 405)
}

/// Counts that tell whether every task ran exactly once.
struct TaskCounts {
    total: i64,
    succeeded: i64,
    attempts: i64,
    successful_attempts: i64,
    tasks_with_attempts: i64,
}

async fn task_counts(database_url: &str) -> anyhow::Result<TaskCounts> {
    let mut db = PgConnection::connect(database_url).await?;
    let row: (i64, i64, i64, i64, i64) = sqlx::query_as(
        // Every attempt: the rows of ended attempts, and a success kept on its task (no row
        // is written for it; servers before that wrote one).
        "WITH attempts AS (
             SELECT task_id, outcome FROM task_attempts
             UNION ALL
             SELECT t.id, 'succeeded' FROM tasks t
             WHERE t.state = 'succeeded' AND t.lease_id IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM task_attempts a WHERE a.lease_id = t.lease_id)
         )
         SELECT (SELECT count(*) FROM tasks),
                (SELECT count(*) FROM tasks WHERE state = 'succeeded'),
                (SELECT count(*) FROM attempts),
                (SELECT count(*) FROM attempts WHERE outcome = 'succeeded'),
                (SELECT count(DISTINCT task_id) FROM attempts)",
    )
    .fetch_one(&mut db)
    .await?;
    Ok(TaskCounts {
        total: row.0,
        succeeded: row.1,
        attempts: row.2,
        successful_attempts: row.3,
        tasks_with_attempts: row.4,
    })
}

/// `None` when `completed` tasks succeeded once each, with one attempt each and no other
/// attempt, out of `submitted` stored tasks; otherwise what is wrong.
fn exactly_once(counts: &TaskCounts, submitted: u64, completed: u64) -> Option<String> {
    let (submitted, completed) = (submitted as i64, completed as i64);
    let ok = counts.total == submitted
        && counts.succeeded == completed
        && counts.successful_attempts == completed
        && counts.attempts == completed
        && counts.tasks_with_attempts == completed;
    (!ok).then(|| {
        format!(
            "expected {submitted} tasks stored and {completed} succeeded with one attempt each; \
             found {} stored, {} succeeded, {} attempts ({} succeeded) over {} tasks",
            counts.total,
            counts.succeeded,
            counts.attempts,
            counts.successful_attempts,
            counts.tasks_with_attempts
        )
    })
}

/// Submits tasks `[from, to)` as the team of `key` on the server at `base` with `producers`
/// concurrent producers in `mode`. With `pace`,
/// a producer waits while `pace.0` (submitted in this run) exceeds `pace.1` (completed) by
/// `pace.2` or more, so a backlog keeps its size.
async fn produce(
    (client, base, key): (&reqwest::Client, &str, &str),
    mode: Mode,
    producers: u64,
    batch_size: u64,
    (from, to): (u64, u64),
    pace: Option<(Arc<AtomicU64>, Arc<Completions>, u64)>,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(from));
    let mut set = JoinSet::new();
    for _ in 0..producers {
        let (client, base, key, next, pace) = (
            client.clone(),
            base.to_owned(),
            key.to_owned(),
            next.clone(),
            pace.clone(),
        );
        set.spawn(async move {
            let step = match mode {
                Mode::Single => 1,
                Mode::Batch => batch_size,
            };
            loop {
                if let Some((submitted, done, slack)) = &pace {
                    while submitted.load(Ordering::SeqCst)
                        >= done.count.load(Ordering::SeqCst) + slack
                    {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                let start = next.fetch_add(step, Ordering::SeqCst);
                if start >= to {
                    return anyhow::Ok(());
                }
                let end = (start + step).min(to);
                match mode {
                    Mode::Single => submit_one(&client, &base, &key, start).await?,
                    Mode::Batch => submit_batch(&client, &base, &key, start..end).await?,
                }
                if let Some((submitted, _, _)) = &pace {
                    submitted.fetch_add(end - start, Ordering::SeqCst);
                }
            }
        });
    }
    while let Some(result) = set.join_next().await {
        result??;
    }
    Ok(())
}

/// `single` or `batch`: producers submit `--tasks` tasks while `--workers` lease loops complete
/// them. With `backlog` > 0, that many tasks are queued first (not timed), the loops complete
/// `--tasks` tasks while the producers keep the backlog at its size, and the clock runs from
/// the start of both to the last completion.
///
/// `None` when the control plane has no batch submit (`POST /v1/tasks/batch`) and the run needs
/// it.
pub async fn throughput(args: &Args, mode: Mode, backlog: u64) -> anyhow::Result<Option<Outcome>> {
    let label = if backlog > 0 {
        format!("stacksmith-{}-backlog-{backlog}", mode.name())
    } else {
        format!("stacksmith-{}", mode.name())
    };
    println!("queue-bench: {label}: {} tasks", args.tasks);
    scratch::with_database(
        &args.database_url,
        &label.replace('-', "_"),
        |url| async move {
            let cp = ControlPlane::start(args, &url, &label, Limits::Off).await?;
            let needs_batch = mode == Mode::Batch || backlog > 0;
            if needs_batch && !batch_submit_available(&http_client()?, &cp.base, &cp.team_key).await
            {
                cp.stop().await?;
                return Ok(None);
            }
            let outcome = throughput_run(args, mode, backlog, &cp, &url)
                .await
                .map(Some);
            let stopped = cp.stop().await;
            let outcome = outcome?;
            stopped?;
            Ok(outcome)
        },
    )
    .await
}

async fn throughput_run(
    args: &Args,
    mode: Mode,
    backlog: u64,
    cp: &ControlPlane,
    url: &str,
) -> anyhow::Result<Outcome> {
    let client = http_client()?;
    if backlog > 0 {
        let started = Instant::now();
        produce(
            (&client, &cp.base, &cp.team_key),
            Mode::Batch,
            args.producers,
            1000,
            (0, backlog),
            None,
        )
        .await?;
        println!(
            "queue-bench: queued a backlog of {backlog} tasks in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let target = args.tasks;
    let done = Arc::new(Completions::default());
    let (go, gate) = watch::channel(false);
    let deadline = Instant::now() + args.run_timeout();
    let batched_reports = batched_reports_available(&client, &cp.base, &cp.worker_key).await;
    let mut workers = JoinSet::new();
    for index in 0..args.workers {
        let lease_loop = LeaseLoop {
            client: client.clone(),
            base: cp.base.clone(),
            worker_key: cp.worker_key.clone(),
            worker: format!("bench-{index}"),
            lease_batch: args.lease_batch,
            batched_reports,
            target,
            done: done.clone(),
            deadline,
        };
        let mut gate = gate.clone();
        workers.spawn(async move {
            gate.wait_for(|go| *go).await?;
            lease_loop.run().await
        });
    }
    // Let the lease loops reach the gate before the clock starts.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let postgres = scratch::PostgresCpu::find(url).await;
    let postgres_before = postgres.and_then(|p| p.seconds());
    let cpu_before = cp.cpu_seconds();
    let started = Instant::now();
    let _ = go.send(true);
    let pace = (backlog > 0).then(|| {
        (
            Arc::new(AtomicU64::new(0)),
            done.clone(),
            (2 * args.batch_size).max(args.producers),
        )
    });
    produce(
        (&client, &cp.base, &cp.team_key),
        mode,
        args.producers,
        args.batch_size,
        (backlog, backlog + target),
        pace,
    )
    .await?;
    let submitted_after = started.elapsed();
    while let Some(result) = workers.join_next().await {
        result??;
    }
    let completed = done.count.load(Ordering::SeqCst);
    let finished = done.last.lock().await.unwrap_or_else(Instant::now);
    let seconds = finished.duration_since(started).as_secs_f64();
    let server_cpu = cp.cpu_seconds() - cpu_before;
    let postgres_cpu = postgres_before
        .zip(postgres.and_then(|p| p.seconds()))
        .map(|(before, after)| after - before);
    anyhow::ensure!(
        completed >= target,
        "only {completed} of {target} tasks completed within {:?}",
        args.run_timeout()
    );
    let counts = task_counts(url).await?;
    let mut problem = exactly_once(&counts, backlog + target, completed);
    let duplicates = done.duplicates.load(Ordering::SeqCst);
    if duplicates > 0 {
        problem = Some(format!(
            "{duplicates} completions of an already completed task{}",
            problem.map(|p| format!("; {p}")).unwrap_or_default()
        ));
    }
    Ok(Outcome {
        system: "stacksmith",
        mode: mode.name(),
        tasks: completed,
        seconds,
        backlog: (backlog > 0).then_some(backlog),
        extra: vec![
            (
                "reports",
                if batched_reports { "batch" } else { "single" }.to_owned(),
            ),
            (
                "submitted_after_s",
                format!("{:.3}", submitted_after.as_secs_f64()),
            ),
            (
                "server_cpu_ms_per_task",
                format!("{:.3}", server_cpu * 1000.0 / completed.max(1) as f64),
            ),
            (
                "postgres_cpu_ms_per_task",
                scratch::per_task_ms(postgres_cpu, completed),
            ),
        ],
        exactly_once_problem: problem,
        round: None,
    })
}

/// `worker`: the real `controlplane worker` runs `true` for every task (a process per task).
pub async fn worker_mode(args: &Args) -> anyhow::Result<Outcome> {
    let tasks = args.worker_tasks.unwrap_or(args.tasks);
    println!(
        "queue-bench: stacksmith-worker: {tasks} tasks, controlplane worker --concurrency {}",
        args.worker_concurrency
    );
    scratch::with_database(&args.database_url, "stacksmith_worker", |url| async move {
        let cp = ControlPlane::start(args, &url, "stacksmith-worker", Limits::Off).await?;
        let outcome = worker_run(args, tasks, &cp, &url).await;
        let stopped = cp.stop().await;
        let outcome = outcome?;
        stopped?;
        Ok(outcome)
    })
    .await
}

async fn worker_run(
    args: &Args,
    tasks: u64,
    cp: &ControlPlane,
    url: &str,
) -> anyhow::Result<Outcome> {
    let log = args.logs.join("stacksmith-worker-worker.log");
    let mut command = tokio::process::Command::new(&args.controlplane);
    command
        .args(["worker", "--url", &cp.base, "--pool", POOL])
        .args(["--concurrency", &args.worker_concurrency.to_string()])
        .args(["--wait-seconds", "5", "--lease-seconds", "60"])
        .args(["--drain-seconds", "5", "--name", "bench-worker"])
        .env("CONTROLPLANE_WORKER_KEY", &cp.worker_key)
        .env("RUST_LOG", "warn");
    let worker = Process::spawn("controlplane worker", &mut command, &log)?;
    // Let it start and wait on its first long poll.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let worker_pid = worker.pid().context("the worker exited at once")?;
    let cpu = || {
        (
            scratch::cpu_seconds(worker_pid).unwrap_or(0.0),
            cp.cpu_seconds(),
        )
    };
    let client = http_client()?;
    let mut db = PgConnection::connect(url).await?;
    let before = cpu();
    let started = Instant::now();
    // The fastest submission available, so the worker is what is measured.
    let mode = if batch_submit_available(&client, &cp.base, &cp.team_key).await {
        Mode::Batch
    } else {
        Mode::Single
    };
    let producing = {
        let (client, base, key) = (client.clone(), cp.base.clone(), cp.team_key.clone());
        let (producers, batch_size) = (args.producers, args.batch_size);
        tokio::spawn(async move {
            produce(
                (&client, &base, &key),
                mode,
                producers,
                batch_size,
                (0, tasks),
                None,
            )
            .await
        })
    };
    let deadline = started + args.run_timeout();
    loop {
        let (succeeded, failed): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state = 'succeeded'),
                    count(*) FILTER (WHERE state IN ('dead', 'failed', 'cancelled'))
             FROM tasks",
        )
        .fetch_one(&mut db)
        .await?;
        anyhow::ensure!(failed == 0, "{failed} tasks failed; see {}", log.display());
        if succeeded as u64 >= tasks {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{succeeded} of {tasks} tasks succeeded within {:?}; see {}",
            args.run_timeout(),
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = cpu();
    producing.await??;
    worker.stop(Duration::from_secs(15)).await?;
    let counts = task_counts(url).await?;
    let per_task = |seconds: f64| format!("{:.3}", seconds * 1000.0 / tasks as f64);
    Ok(Outcome {
        system: "stacksmith",
        mode: "worker",
        tasks,
        seconds,
        backlog: None,
        extra: vec![
            ("submit", mode.name().to_owned()),
            ("concurrency", args.worker_concurrency.to_string()),
            ("worker_cpu_ms_per_task", per_task(after.0 - before.0)),
            ("server_cpu_ms_per_task", per_task(after.1 - before.1)),
        ],
        exactly_once_problem: exactly_once(&counts, tasks, tasks),
        round: None,
    })
}

/// Whether `POST /v1/tasks/batch` exists (an empty batch is refused, not unknown).
async fn batch_submit_available(client: &reqwest::Client, base: &str, key: &str) -> bool {
    let response = client
        .post(format!("{base}/v1/tasks/batch"))
        .bearer_auth(key)
        .json(&json!({"tasks": []}))
        .send()
        .await;
    response.is_ok_and(|r| r.status() != 404 && r.status() != 405)
}

/// Submit-to-lease latency with one idle worker long-polling: for each sample the worker's
/// `POST /v1/leases` (wait up to 20 s) is parked first, then one task is submitted; the time
/// from sending the submit to receiving the lease is recorded.
pub async fn lease_latency(args: &Args) -> anyhow::Result<Latency> {
    let samples = args.latency_samples;
    println!("queue-bench: lease latency: {samples} samples, one idle long-polling worker");
    scratch::with_database(&args.database_url, "stacksmith_latency", |url| async move {
        let cp = ControlPlane::start(args, &url, "stacksmith-latency", Limits::Off).await?;
        let outcome = latency_run(samples, &cp).await;
        let stopped = cp.stop().await;
        let outcome = outcome?;
        stopped?;
        Ok(outcome)
    })
    .await
}

async fn latency_run(samples: u64, cp: &ControlPlane) -> anyhow::Result<Latency> {
    let client = http_client()?;
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    // Warm the connections.
    submit_one(&client, &cp.base, &cp.team_key, 0).await?;
    for index in 0..=samples {
        let lease = {
            let (client, base, key) = (client.clone(), cp.base.clone(), cp.worker_key.clone());
            tokio::spawn(async move {
                let response = client
                    .post(format!("{base}/v1/leases"))
                    .bearer_auth(&key)
                    .json(&json!({"pool": POOL, "max_tasks": 1, "wait_seconds": 5,
                                  "worker": "latency"}))
                    .send()
                    .await?;
                let received = Instant::now();
                let body: Value = response.error_for_status()?.json().await?;
                anyhow::Ok((received, body))
            })
        };
        // The first round only takes the warm-up task; later rounds find the pool empty and
        // park the request first.
        if index > 0 {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let sent = Instant::now();
        if index > 0 {
            submit_one(&client, &cp.base, &cp.team_key, index).await?;
        }
        let (received, body) = lease.await??;
        let leases = body["leases"].as_array().cloned().unwrap_or_default();
        anyhow::ensure!(
            leases.len() == 1,
            "sample {index}: expected one lease, got {body}"
        );
        if index > 0 {
            let micros = u64::try_from(received.duration_since(sent).as_micros()).unwrap_or(1);
            histogram.saturating_record(micros.max(1));
        }
        let lease = &leases[0];
        let response = client
            .post(format!(
                "{}/v1/leases/{}/complete",
                cp.base,
                lease["lease_id"].as_str().unwrap_or_default()
            ))
            .bearer_auth(&cp.worker_key)
            .json(&json!({"fencing_token": lease["fencing_token"], "result": null}))
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == 200,
            "complete answered {}",
            response.status()
        );
    }
    let ms = |micros: u64| micros as f64 / 1000.0;
    Ok(Latency {
        samples: histogram.len(),
        p50_ms: ms(histogram.value_at_quantile(0.50)),
        p99_ms: ms(histogram.value_at_quantile(0.99)),
        max_ms: ms(histogram.max()),
    })
}

/// `POST /v1/tasks` open-loop at `--submit-rps` for `--submit-seconds` with rate limiting on
/// (the limits of the `submit_load` benchmark). Latency counts from the moment a request was
/// due, so a stalled server cannot hide its queueing delay; at most 1,000 requests are in
/// flight (ticks beyond are counted as not sent).
pub async fn submit_load(args: &Args) -> anyhow::Result<SubmitLoad> {
    println!(
        "queue-bench: submit load: {} requests/s for {} s with rate limiting on",
        args.submit_rps, args.submit_seconds
    );
    scratch::with_database(&args.database_url, "stacksmith_submit", |url| async move {
        let cp = ControlPlane::start(args, &url, "stacksmith-submit", Limits::SubmitLoad).await?;
        let outcome = submit_run(args.submit_rps, args.submit_seconds, &cp).await;
        let stopped = cp.stop().await;
        let outcome = outcome?;
        stopped?;
        Ok(outcome)
    })
    .await
}

async fn submit_run(rps: u64, seconds: u64, cp: &ControlPlane) -> anyhow::Result<SubmitLoad> {
    const MAX_IN_FLIGHT: usize = 1000;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(MAX_IN_FLIGHT)
        .build()?;
    let url = Arc::new(format!("{}/v1/tasks", cp.base));
    let key = Arc::new(cp.team_key.clone());
    let body =
        json!({"pool": "bench", "command": ["echo", "hello"], "env": {"A": "1"}, "priority": 5});
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let counts: Arc<[AtomicU64; 5]> = Arc::new(Default::default());
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // The first second warms up (connections opened on both sides, statements prepared) and is
    // not recorded: before it, the first requests waited up to 190 ms for new connections.
    let warmup = rps;
    let total = warmup + rps * seconds;
    let period = Duration::from_secs_f64(1.0 / rps as f64);
    let started = Instant::now();
    let mut requests = JoinSet::new();
    for index in 0..total {
        let due = started + period.mul_f64(index as f64);
        let recorded = index >= warmup;
        tokio::time::sleep_until(due.into()).await;
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            if recorded {
                counts[4].fetch_add(1, Ordering::Relaxed);
            }
            continue;
        };
        let (client, url, key, body) = (client.clone(), url.clone(), key.clone(), body.clone());
        let (histogram, counts) = (histogram.clone(), counts.clone());
        requests.spawn(async move {
            let result = client
                .post(url.as_str())
                .bearer_auth(key.as_str())
                .json(&body)
                .send()
                .await;
            let latency = due.elapsed();
            drop(permit);
            if !recorded {
                return;
            }
            let slot = match result {
                Ok(response) if response.status() == 201 => 0,
                Ok(response) if response.status() == 429 => 1,
                Ok(_) => 2,
                Err(_) => 3,
            };
            counts[slot].fetch_add(1, Ordering::Relaxed);
            let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            histogram.lock().await.saturating_record(micros.max(1));
        });
    }
    while let Some(result) = requests.join_next().await {
        result?;
    }
    let histogram = histogram.lock().await;
    let ms = |micros: u64| micros as f64 / 1000.0;
    let count = |slot: usize| counts[slot].load(Ordering::Relaxed);
    Ok(SubmitLoad {
        rps,
        seconds,
        created: count(0),
        limited: count(1),
        other_status: count(2),
        transport_errors: count(3),
        not_sent: count(4),
        p50_ms: ms(histogram.value_at_quantile(0.50)),
        p90_ms: ms(histogram.value_at_quantile(0.90)),
        p99_ms: ms(histogram.value_at_quantile(0.99)),
        max_ms: ms(histogram.max()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_address_is_read_from_the_log() {
        let log = r#"{"timestamp":"x","level":"INFO","fields":{"message":"migrations","n":3}}
{"timestamp":"x","level":"INFO","fields":{"message":"listening","address":"127.0.0.1:40123"},"target":"controlplane::server"}"#;
        assert_eq!(listening_address(log).as_deref(), Some("127.0.0.1:40123"));
        assert_eq!(listening_address("not json\n"), None);
    }

    #[test]
    fn exactly_once_needs_one_attempt_per_completed_task() {
        let counts = TaskCounts {
            total: 10,
            succeeded: 10,
            attempts: 10,
            successful_attempts: 10,
            tasks_with_attempts: 10,
        };
        assert_eq!(exactly_once(&counts, 10, 10), None);
        let twice = TaskCounts {
            attempts: 11,
            ..counts
        };
        assert!(exactly_once(&twice, 10, 10).is_some());
        let lost = TaskCounts {
            total: 9,
            succeeded: 9,
            attempts: 9,
            successful_attempts: 9,
            tasks_with_attempts: 9,
        };
        assert!(exactly_once(&lost, 10, 10).is_some());
    }
}
