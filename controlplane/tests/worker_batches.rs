//! The real `controlplane worker` holding batches of leases (real Postgres and Redis): SIGKILL
//! of a worker holding a batch loses no task and completes each once; a control-plane restart
//! under a running worker makes no finished task run again (its reports wait and are
//! delivered while their leases last).

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{TestServer, WORKER_KEY};
use controlplane::config::RateLimitConfig;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::process::{Child, Command};

fn worker(base: &str, pool: &str, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_controlplane"))
        .arg("worker")
        .args(["--url", base])
        .args(["--api-key", WORKER_KEY])
        .args(["--pool", pool])
        .args(["--wait-seconds", "1"])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the worker")
}

fn config() -> controlplane::config::Config {
    let mut config = common::config(RateLimitConfig::disabled());
    config.scheduler.reaper_interval_ms = 200;
    config.scheduler.poll_interval_ms = 200;
    config.shutdown_grace_ms = 1_000;
    config
}

/// Every task's (state, attempt outcomes), read from the database: the rows of ended attempts
/// and the success its task keeps (no row is written for it).
async fn outcomes(db: &PgPool) -> HashMap<String, (String, Vec<String>)> {
    let rows: Vec<(String, String, Vec<String>)> = sqlx::query_as(
        "SELECT t.id::text, t.state,
                coalesce(array_agg(a.outcome ORDER BY a.leased_at)
                         FILTER (WHERE a.leased_at IS NOT NULL), '{}')
         FROM tasks t
         LEFT JOIN LATERAL (
             SELECT outcome, leased_at FROM task_attempts WHERE task_id = t.id
             UNION ALL
             SELECT 'succeeded', t.leased_at
             WHERE t.state = 'succeeded'
               AND NOT EXISTS (SELECT 1 FROM task_attempts WHERE lease_id = t.lease_id)
         ) a ON true
         GROUP BY t.id, t.state",
    )
    .fetch_all(db)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(id, state, outcomes)| (id, (state, outcomes)))
        .collect()
}

/// Waits (bounded) until `count` tasks succeeded.
async fn wait_succeeded(db: &PgPool, count: i64, limit: Duration) {
    let started = Instant::now();
    loop {
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE state = 'succeeded'")
            .fetch_one(db)
            .await
            .unwrap();
        if done >= count {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "{done} of {count} succeeded after {limit:?}: {:?}",
            outcomes(db).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stop_worker(mut child: Child) {
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
}

#[sqlx::test(migrations = "./migrations")]
async fn sigkill_of_a_worker_holding_a_batch_completes_every_task_exactly_once(pool: PgPool) {
    let server = TestServer::start(pool.clone(), config()).await;
    let (_, key) = server.team_with_key("alice").await;
    // Twelve tasks in one batch: the even ones finish at once, the odd ones hang in their first
    // attempt. Retries without delay keep the test short; the rest is the default policy.
    let tasks: Vec<Value> = (0..12)
        .map(|n| {
            let script = if n % 2 == 0 {
                "echo quick".to_owned()
            } else {
                "if [ \"$STACKSMITH_ATTEMPT\" = 1 ]; then sleep 30; fi; echo slow".to_owned()
            };
            json!({"pool": "held", "command": ["sh", "-c", script],
                   "retry": {"backoff_seconds": 0}})
        })
        .collect();
    let response = server
        .client
        .post(server.url("/v1/tasks/batch"))
        .bearer_auth(&key)
        .json(&json!({ "tasks": tasks }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    let mut first = worker(
        &server.base,
        "held",
        &[
            "--concurrency",
            "12",
            "--lease-seconds",
            "2",
            "--name",
            "first",
        ],
    );
    // The quick half done, the slow half held by the worker.
    wait_succeeded(&pool, 6, Duration::from_secs(20)).await;
    let leased: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE state = 'leased'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(leased, 6);
    first.start_kill().unwrap();
    tokio::time::timeout(Duration::from_secs(10), first.wait())
        .await
        .unwrap()
        .unwrap();

    let second = worker(
        &server.base,
        "held",
        &[
            "--concurrency",
            "4",
            "--lease-seconds",
            "2",
            "--name",
            "second",
        ],
    );
    wait_succeeded(&pool, 12, Duration::from_secs(30)).await;
    let all = outcomes(&pool).await;
    assert_eq!(all.len(), 12);
    for (id, (state, attempts)) in &all {
        assert_eq!(state, "succeeded", "{id}: {attempts:?}");
        let succeeded = attempts.iter().filter(|o| *o == "succeeded").count();
        assert_eq!(succeeded, 1, "{id} succeeded once: {attempts:?}");
        assert!(
            attempts == &["succeeded"] || attempts == &["lost", "succeeded"],
            "{id}: {attempts:?}"
        );
    }
    let lost = all.values().filter(|(_, a)| a.len() == 2).count();
    assert_eq!(lost, 6, "the six held leases were lost and run again");
    stop_worker(second).await;
    server.stop().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn a_control_plane_restart_under_a_running_worker_runs_no_finished_task_again(pool: PgPool) {
    let server = TestServer::start(pool.clone(), config()).await;
    let address: std::net::SocketAddr = server.base.trim_start_matches("http://").parse().unwrap();
    let (_, key) = server.team_with_key("alice").await;
    let directory = std::env::temp_dir().join(stacksmith_testkit::unique_name("restart"));
    std::fs::create_dir_all(&directory).unwrap();
    let runs = directory.join("runs");
    // Every run of every task leaves a line.
    let tasks: Vec<Value> = (0..120)
        .map(|_| {
            json!({"pool": "steady", "env": {"RUNS": runs.display().to_string()},
                   "command": ["sh", "-c", "sleep 0.3; echo \"$STACKSMITH_TASK_ID\" >> \"$RUNS\""]})
        })
        .collect();
    let response = server
        .client
        .post(server.url("/v1/tasks/batch"))
        .bearer_auth(&key)
        .json(&json!({ "tasks": tasks }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let running = worker(
        &server.base,
        "steady",
        &["--concurrency", "8", "--lease-seconds", "12"],
    );
    wait_succeeded(&pool, 20, Duration::from_secs(30)).await;

    // The control plane goes away for 5 s and comes back on the same address.
    server.stop().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut restarted_config = config();
    restarted_config.listen = address;
    let restarted = TestServer::start(pool.clone(), restarted_config).await;
    assert_eq!(restarted.base, format!("http://{address}"));

    wait_succeeded(&pool, 120, Duration::from_secs(90)).await;
    let lines = std::fs::read_to_string(&runs).unwrap();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for line in lines.lines() {
        *counts.entry(line).or_default() += 1;
    }
    let again: Vec<(&&str, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert_eq!(counts.len(), 120, "every task ran");
    assert!(again.is_empty(), "tasks that ran again: {again:?}");
    let all = outcomes(&pool).await;
    assert!(
        all.values().all(|(_, attempts)| attempts == &["succeeded"]),
        "one attempt each"
    );
    stop_worker(running).await;
    restarted.stop().await;
    std::fs::remove_dir_all(&directory).unwrap();
}
