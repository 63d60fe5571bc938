//! Benchmark (not a test): end-to-end tasks/s (submit -> lease -> complete) and lease latency,
//! then pgbench on the same database for comparison.
//!
//!     cargo bench -p controlplane --bench orchestration_load
//!
//! Starts the control plane in process on 127.0.0.1:0 (rate limits off) against a fresh
//! database on the test Postgres (dropped afterwards). ORCH_BENCH_TASKS tasks (default 5000)
//! are submitted over HTTP by ORCH_BENCH_SUBMITTERS concurrent clients (default 16) while
//! ORCH_BENCH_WORKERS worker loops (default 4) lease batches of ORCH_BENCH_BATCH (default 10)
//! with long polls and complete every task over HTTP (the command is not run: this measures
//! the control plane). Lease latency is the time of each `POST /v1/leases` that returned tasks.
//!
//! A task costs 3 write transactions (the insert, the claim, the completion). pgbench then runs
//! its TPC-B-like script (5 statements per transaction) on the same database with as many
//! clients as workers for ORCH_BENCH_PGBENCH_SECONDS (default 10); the report gives
//! tasks/s * 3 divided by pgbench's transactions/s.

mod common;

use common::{env_u32, with_scratch_database};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use controlplane::config::{Config, HttpLimits, RateLimitConfig, Secret};
use controlplane::{AppState, Server};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::Mutex;

const WORKER_KEY: &str = "bench-worker-key-0123456789abcdef-0123456789";
const TRANSACTIONS_PER_TASK: f64 = 3.0;

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    with_scratch_database(|database_url| async move { load(&database_url).await }).await
}

async fn load(database_url: &str) -> anyhow::Result<()> {
    let tasks = u64::from(env_u32("ORCH_BENCH_TASKS", 5000).clamp(1, 1_000_000));
    let submitters = env_u32("ORCH_BENCH_SUBMITTERS", 16).clamp(1, 256) as u64;
    let workers = env_u32("ORCH_BENCH_WORKERS", 4).clamp(1, 64);
    let batch = env_u32("ORCH_BENCH_BATCH", 10).clamp(1, 100);
    let pgbench_seconds = env_u32("ORCH_BENCH_PGBENCH_SECONDS", 10).clamp(1, 120);

    let pool = controlplane::store::connect(database_url, 40).await?;
    controlplane::store::migrate(&pool).await?;
    let team = controlplane::store::teams::create(&pool, "bench").await?;
    let key = controlplane::store::api_keys::create(&pool, team.id, "bench")
        .await?
        .expect("team exists");
    let redis = redis::Client::open(stacksmith_testkit::redis_url())?
        .get_connection_manager()
        .await?;
    let prefix = stacksmith_testkit::unique_name("cp_bench");
    let config = Config {
        listen: ([127, 0, 0, 1], 0).into(),
        database_url: Secret::new(database_url),
        redis_url: Secret::new(stacksmith_testkit::redis_url()),
        redis_key_prefix: prefix.clone(),
        worker_key: Some(Secret::new(WORKER_KEY)),
        rate_limit: RateLimitConfig::disabled(),
        limits: HttpLimits {
            concurrency_limit: 2048,
            ..HttpLimits::default()
        },
        ..Config::default()
    };
    let server = Server::bind(AppState::new(config, pool.clone(), redis.clone())).await?;
    let base = format!("http://{}", server.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server_task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;

    println!(
        "orchestration_load: {tasks} tasks, {submitters} submitters, {workers} workers leasing up to {batch} at a time, against {base}"
    );
    let lease_latency = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let completed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();

    let next = Arc::new(AtomicU64::new(0));
    let mut submit_handles = Vec::new();
    for _ in 0..submitters {
        let (client, next, errors) = (client.clone(), next.clone(), errors.clone());
        let url = format!("{base}/v1/tasks");
        let secret = key.secret.expose().to_owned();
        submit_handles.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < tasks {
                let response = client
                    .post(&url)
                    .bearer_auth(&secret)
                    .json(&json!({"pool": "bench", "command": ["true"]}))
                    .send()
                    .await;
                if !response.is_ok_and(|r| r.status() == 201) {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let mut worker_handles = Vec::new();
    for index in 0..workers {
        let (client, completed, errors, latency) = (
            client.clone(),
            completed.clone(),
            errors.clone(),
            lease_latency.clone(),
        );
        let base = base.clone();
        worker_handles.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(600);
            while completed.load(Ordering::Relaxed) < tasks && Instant::now() < deadline {
                let asked = Instant::now();
                let response = client
                    .post(format!("{base}/v1/leases"))
                    .bearer_auth(WORKER_KEY)
                    .json(
                        &json!({"pool": "bench", "max_tasks": batch, "wait_seconds": 1,
                                  "worker": format!("bench-{index}")}),
                    )
                    .send()
                    .await;
                let Ok(response) = response else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let body: Value = response.json().await.unwrap_or_default();
                let leases = body["leases"].as_array().cloned().unwrap_or_default();
                if leases.is_empty() {
                    continue;
                }
                let micros = u64::try_from(asked.elapsed().as_micros()).unwrap_or(u64::MAX);
                latency.lock().await.saturating_record(micros.max(1));
                for lease in leases {
                    let response = client
                        .post(format!(
                            "{base}/v1/leases/{}/complete",
                            lease["lease_id"].as_str().unwrap_or_default()
                        ))
                        .bearer_auth(WORKER_KEY)
                        .json(&json!({"fencing_token": lease["fencing_token"], "result": null}))
                        .send()
                        .await;
                    if response.is_ok_and(|r| r.status() == 200) {
                        completed.fetch_add(1, Ordering::Relaxed);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for handle in submit_handles {
        handle.await?;
    }
    let submitted_after = started.elapsed();
    for handle in worker_handles {
        handle.await?;
    }
    let elapsed = started.elapsed();
    let done = completed.load(Ordering::Relaxed);
    let tasks_per_second = done as f64 / elapsed.as_secs_f64();
    let histogram = lease_latency.lock().await;
    let ms = |micros: u64| micros as f64 / 1000.0;
    println!(
        "completed {done} of {tasks} tasks in {:.2} s (all submitted after {:.2} s): {tasks_per_second:.0} tasks/s end to end; errors: {}",
        elapsed.as_secs_f64(),
        submitted_after.as_secs_f64(),
        errors.load(Ordering::Relaxed)
    );
    println!(
        "lease latency ms (requests that got tasks, {}): p50 {:.2}  p99 {:.2}  max {:.2}",
        histogram.len(),
        ms(histogram.value_at_quantile(0.50)),
        ms(histogram.value_at_quantile(0.99)),
        ms(histogram.max()),
    );
    let _ = stop.send(());
    server_task.await??;
    let mut redis = redis;
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{prefix}:task-events"))
        .query_async(&mut redis)
        .await?;
    pool.close().await;

    // pgbench on the same database, as many clients as workers.
    let init = tokio::process::Command::new("pgbench")
        .args(["-i", "-q", "-s", "1", database_url])
        .output()
        .await?;
    anyhow::ensure!(
        init.status.success(),
        "pgbench -i failed: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let clients = workers.to_string();
    let seconds = pgbench_seconds.to_string();
    let bench = tokio::process::Command::new("pgbench")
        .args([
            "-n",
            "-c",
            &clients,
            "-j",
            "2",
            "-T",
            &seconds,
            database_url,
        ])
        .output()
        .await?;
    let report = String::from_utf8_lossy(&bench.stdout);
    anyhow::ensure!(bench.status.success(), "pgbench failed: {report}");
    let tps = report
        .lines()
        .find_map(|line| {
            line.strip_prefix("tps = ")
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|value| value.parse::<f64>().ok())
        })
        .ok_or_else(|| anyhow::anyhow!("no tps in the pgbench report: {report}"))?;
    println!(
        "pgbench (TPC-B-like, {clients} clients, {seconds} s): {tps:.0} transactions/s; \
         this run: {:.0} task transactions/s ({TRANSACTIONS_PER_TASK} per task); ratio {:.2}",
        tasks_per_second * TRANSACTIONS_PER_TASK,
        tasks_per_second * TRANSACTIONS_PER_TASK / tps
    );
    Ok(())
}
