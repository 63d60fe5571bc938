//! Leasing, retries, dead letters, fair share, quotas and workflows against real Postgres and
//! Redis, through the HTTP API (the worker's side driven by the test, or by the real
//! `controlplane worker` binary in `worker.rs`).

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{ADMIN_KEY, TestServer, WORKER_KEY, expect_problem};
use controlplane::config::RateLimitConfig;
use serde_json::{Value, json};
use sqlx::PgPool;

async fn post(server: &TestServer, key: &str, path: &str, body: Value) -> reqwest::Response {
    server
        .client
        .post(server.url(path))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("request")
}

async fn get(server: &TestServer, key: &str, path: &str) -> Value {
    let response = server
        .client
        .get(server.url(path))
        .bearer_auth(key)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().await.expect("JSON")
}

async fn lease(server: &TestServer, pool: &str, max_tasks: u32, lease_seconds: u32) -> Vec<Value> {
    common::request_leases(
        &server.client,
        &server.url("/v1/leases"),
        json!({"pool": pool, "max_tasks": max_tasks, "lease_seconds": lease_seconds, "worker": "test"}),
    )
    .await
}

async fn complete(server: &TestServer, lease: &Value, result: Value) -> reqwest::Response {
    post(
        server,
        WORKER_KEY,
        &format!("/v1/leases/{}/complete", lease["lease_id"].as_str().unwrap()),
        json!({"fencing_token": lease["fencing_token"], "result": result, "output": "ok", "exit_code": 0}),
    )
    .await
}

async fn fail(server: &TestServer, lease: &Value, error: &str) -> reqwest::Response {
    post(
        server,
        WORKER_KEY,
        &format!("/v1/leases/{}/fail", lease["lease_id"].as_str().unwrap()),
        json!({"fencing_token": lease["fencing_token"], "error": error, "exit_code": 1}),
    )
    .await
}

async fn submit(server: &TestServer, key: &str, body: Value) -> Value {
    let response = server.submit(key, body).await;
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .expect("a timestamp")
        .parse()
        .expect("RFC 3339")
}

#[sqlx::test(migrations = "./migrations")]
async fn a_lease_is_fenced_and_a_task_completes_once(pool: PgPool) {
    let server = TestServer::unlimited(pool).await;
    let (_, key) = server.team_with_key("alice").await;
    let task = submit(&server, &key, json!({"pool": "build", "command": ["true"]})).await;
    let id = task["id"].as_str().unwrap();

    // Only workers lease.
    expect_problem(
        post(&server, &key, "/v1/leases", json!({"pool": "build"})).await,
        403,
    )
    .await;
    expect_problem(
        post(
            &server,
            WORKER_KEY,
            "/v1/leases",
            json!({"pool": "build", "max_tasks": 0}),
        )
        .await,
        422,
    )
    .await;
    assert!(lease(&server, "other", 5, 30).await.is_empty());

    let leases = lease(&server, "build", 5, 30).await;
    assert_eq!(leases.len(), 1);
    let first = &leases[0];
    assert_eq!(first["task_id"], id);
    assert_eq!(first["fencing_token"], 1);
    assert_eq!(first["attempt"], 1);
    assert_eq!(
        get(&server, &key, &format!("/v1/tasks/{id}")).await["state"],
        "leased"
    );
    // Nothing else to lease.
    assert!(lease(&server, "build", 5, 30).await.is_empty());

    let lease_id = first["lease_id"].as_str().unwrap();
    let heartbeat = post(
        &server,
        WORKER_KEY,
        &format!("/v1/leases/{lease_id}/heartbeat"),
        json!({"fencing_token": 1, "lease_seconds": 60}),
    )
    .await;
    assert_eq!(heartbeat.status(), 200);
    let extended: Value = heartbeat.json().await.unwrap();
    assert!(time(&extended["lease_expires_at"]) > time(&first["lease_expires_at"]));

    // A wrong token is stale; an unknown lease is a 404.
    let wrong = post(
        &server,
        WORKER_KEY,
        &format!("/v1/leases/{lease_id}/complete"),
        json!({"fencing_token": 7}),
    )
    .await;
    expect_problem(wrong, 409).await;
    let unknown = post(
        &server,
        WORKER_KEY,
        &format!("/v1/leases/{}/complete", uuid::Uuid::now_v7()),
        json!({"fencing_token": 1}),
    )
    .await;
    expect_problem(unknown, 404).await;

    let done = complete(&server, first, json!({"artifact": "a.tar"})).await;
    assert_eq!(done.status(), 200);
    let done: Value = done.json().await.unwrap();
    assert_eq!(done["state"], "succeeded");
    assert_eq!(done["result"], json!({"artifact": "a.tar"}));
    assert_eq!(done["output"], "ok");
    // Completing twice is refused: a task is never completed twice.
    expect_problem(complete(&server, first, json!(null)).await, 409).await;
    expect_problem(fail(&server, first, "late").await, 409).await;

    let attempts = get(&server, &key, &format!("/v1/tasks/{id}/attempts")).await;
    assert_eq!(attempts.as_array().unwrap().len(), 1);
    assert_eq!(attempts[0]["outcome"], "succeeded");

    let metrics = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "controlplane_leased_tasks_total{pool=\"build\"}",
        "controlplane_lease_request_duration_seconds_bucket",
        "controlplane_task_attempt_duration_seconds_bucket",
        "controlplane_tasks{state=\"succeeded\"}",
        "controlplane_tasks{state=\"dead\"}",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    server.stop().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn retries_follow_the_backoff_policy_then_dead_letters_redrive(pool: PgPool) {
    let server = TestServer::unlimited(pool.clone()).await;
    let (_, key) = server.team_with_key("alice").await;
    let task = submit(
        &server,
        &key,
        json!({"pool": "etl", "command": ["false"],
               "retry": {"max_attempts": 4, "backoff_seconds": 10, "max_backoff_seconds": 25, "jitter_percent": 20}}),
    )
    .await;
    let id = task["id"].as_str().unwrap().to_owned();
    // Bounded: four attempts.
    for attempt in 1..=4 {
        let leases = lease(&server, "etl", 1, 30).await;
        assert_eq!(leases.len(), 1, "attempt {attempt} is leased");
        assert_eq!(leases[0]["attempt"], attempt);
        let failed: Value = fail(&server, &leases[0], "boom")
            .await
            .json()
            .await
            .unwrap();
        if attempt < 4 {
            assert_eq!(failed["state"], "queued");
            assert_eq!(failed["last_error"], "boom");
            // Not ready before its run_at...
            assert!(lease(&server, "etl", 1, 30).await.is_empty());
            // ...and the test moves it to now instead of sleeping.
            sqlx::query("UPDATE tasks SET run_at = now() WHERE id = $1::uuid")
                .bind(&id)
                .execute(&pool)
                .await
                .unwrap();
        } else {
            assert_eq!(failed["state"], "dead");
        }
    }
    let attempts = get(&server, &key, &format!("/v1/tasks/{id}/attempts")).await;
    let attempts = attempts.as_array().unwrap();
    assert_eq!(attempts.len(), 4);
    // min(10 * 2^(n-1), 25) seconds, minus at most 20 %.
    for (attempt, expected) in [(0, 10.0), (1, 20.0), (2, 25.0)] {
        let recorded = &attempts[attempt];
        assert_eq!(recorded["outcome"], "failed");
        let delay =
            (time(&recorded["next_run_at"]) - time(&recorded["finished_at"])).as_seconds_f64();
        assert!(
            (expected * 0.8 - 0.001..=expected + 0.001).contains(&delay),
            "attempt {} waited {delay} s, expected {} to {expected}",
            attempt + 1,
            expected * 0.8
        );
    }
    assert!(attempts[3]["next_run_at"].is_null());

    // The dead letter, and its redrive.
    let dead = get(&server, &key, "/v1/dead-letters").await;
    assert_eq!(dead["items"].as_array().unwrap().len(), 1);
    assert_eq!(dead["items"][0]["id"], id.as_str());
    let (_, other) = server.team_with_key("bob").await;
    assert_eq!(
        get(&server, &other, "/v1/dead-letters").await["items"],
        json!([])
    );
    let foreign: Value = post(
        &server,
        &other,
        "/v1/dead-letters/redrive",
        json!({"task_ids": [id]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(foreign["redriven"], json!([]));
    expect_problem(
        post(
            &server,
            &key,
            "/v1/dead-letters/redrive",
            json!({"task_ids": []}),
        )
        .await,
        422,
    )
    .await;
    let redriven: Value = post(
        &server,
        &key,
        "/v1/dead-letters/redrive",
        json!({"task_ids": [id]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(redriven["redriven"][0]["state"], "queued");
    assert_eq!(redriven["redriven"][0]["attempts"], 0);
    assert_eq!(
        get(&server, &key, "/v1/dead-letters").await["items"],
        json!([])
    );
    let again = lease(&server, "etl", 1, 30).await;
    assert_eq!(again[0]["attempt"], 1);
    assert_eq!(again[0]["fencing_token"], 5);
    assert_eq!(complete(&server, &again[0], json!(1)).await.status(), 200);
    server.stop().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn an_expired_lease_is_reaped_and_its_late_completion_rejected(pool: PgPool) {
    let mut config = common::config(RateLimitConfig::disabled());
    config.scheduler.reaper_interval_ms = 100;
    let server = TestServer::start(pool, config).await;
    let (_, key) = server.team_with_key("alice").await;
    let task = submit(
        &server,
        &key,
        json!({"pool": "p", "command": ["true"], "retry": {"max_attempts": 2, "backoff_seconds": 0}}),
    )
    .await;
    let id = task["id"].as_str().unwrap();
    let first = lease(&server, "p", 1, 1).await.remove(0);
    // Bounded wait for the reaper.
    let started = Instant::now();
    loop {
        let state = get(&server, &key, &format!("/v1/tasks/{id}")).await["state"].clone();
        if state == "queued" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "still {state}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second = lease(&server, "p", 1, 30).await.remove(0);
    assert_eq!(second["fencing_token"], 2);
    assert_eq!(second["attempt"], 2);
    let late = complete(&server, &first, json!("late")).await;
    let problem = expect_problem(late, 409).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("expired"),
        "{problem}"
    );
    assert_eq!(complete(&server, &second, json!("ok")).await.status(), 200);
    let attempts = get(&server, &key, &format!("/v1/tasks/{id}/attempts")).await;
    // The worker vanished within the task's timeout: a lost lease, not a failed attempt.
    assert_eq!(attempts[0]["outcome"], "lost");
    assert_eq!(attempts[1]["outcome"], "succeeded");
    let task = get(&server, &key, &format!("/v1/tasks/{id}")).await;
    assert_eq!(
        (task["attempts"].clone(), task["lease_losses"].clone()),
        (json!(2), json!(1))
    );
    server.stop().await;
}

/// Waits (bounded) until the task is in `state`, and returns it.
async fn wait_for_state(server: &TestServer, key: &str, id: &str, state: &str) -> Value {
    let started = Instant::now();
    loop {
        let task = get(server, key, &format!("/v1/tasks/{id}")).await;
        if task["state"] == state {
            return task;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "not {state}: {task}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn lost_leases_are_forgiven_up_to_the_budget_then_count_as_failed_attempts(pool: PgPool) {
    let mut config = common::config(RateLimitConfig::disabled());
    config.scheduler.reaper_interval_ms = 100;
    let server = TestServer::start(pool, config).await;
    let (_, key) = server.team_with_key("alice").await;
    // The default budget, shown on every task.
    let defaults = submit(&server, &key, json!({"pool": "other", "command": ["true"]})).await;
    assert_eq!(defaults["retry"]["max_lease_losses"], 3);
    assert_eq!(defaults["retry"]["max_attempts"], 1);
    assert_eq!(defaults["lease_losses"], 0);

    // max_attempts 1: any counted failure makes it dead; two lost leases are forgiven.
    let task = submit(
        &server,
        &key,
        json!({"pool": "p", "command": ["true"],
               "retry": {"backoff_seconds": 0, "max_lease_losses": 2}}),
    )
    .await;
    let id = task["id"].as_str().unwrap();
    for lost in 1..=2 {
        let leased = lease(&server, "p", 1, 1).await;
        assert_eq!(leased.len(), 1, "lease {lost}");
        assert_eq!(leased[0]["attempt"], lost);
        let task = wait_for_state(&server, &key, id, "queued").await;
        assert_eq!(task["lease_losses"], lost, "{task}");
        assert_eq!(task["attempts"], lost);
        assert!(
            task["last_error"].as_str().unwrap().contains("lost"),
            "{task}"
        );
    }
    // The third loss is beyond the budget: a failed attempt, and the only one allowed.
    assert_eq!(lease(&server, "p", 1, 1).await.len(), 1);
    let dead = wait_for_state(&server, &key, id, "dead").await;
    assert_eq!(
        (dead["attempts"].clone(), dead["lease_losses"].clone()),
        (json!(3), json!(2))
    );
    let attempts = get(&server, &key, &format!("/v1/tasks/{id}/attempts")).await;
    let outcomes: Vec<&str> = attempts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["lost", "lost", "expired"]);
    assert!(attempts[0]["next_run_at"].is_string());
    assert!(
        attempts[2]["error"]
            .as_str()
            .unwrap()
            .contains("max_lease_losses"),
        "{attempts}"
    );

    // A lease that reached its latest deadline (the task ran past its timeout) is a failed
    // attempt even with the whole budget left.
    let overran = submit(&server, &key, json!({"pool": "q", "command": ["true"]})).await;
    let overran_id = overran["id"].as_str().unwrap();
    assert_eq!(lease(&server, "q", 1, 600).await.len(), 1);
    sqlx::query(
        "UPDATE tasks SET leased_at = now() - interval '2 hours',
                          lease_expires_at = now() - interval '1 second'
         WHERE id = $1::uuid",
    )
    .bind(overran_id)
    .execute(&server.pool)
    .await
    .unwrap();
    let dead = wait_for_state(&server, &key, overran_id, "dead").await;
    assert_eq!(dead["lease_losses"], 0);
    let attempts = get(&server, &key, &format!("/v1/tasks/{overran_id}/attempts")).await;
    assert_eq!(attempts[0]["outcome"], "expired");
    assert!(
        attempts[0]["error"].as_str().unwrap().contains("timeout"),
        "{attempts}"
    );
    server.stop().await;
}

/// Starts a long poll (8 s) on `polled`, submits a task of its pool through `queueing` half a
/// second later, and asserts the poll got the task well before the 8 s polling interval.
async fn assert_long_poll_woken(polled: &TestServer, queueing: &TestServer) {
    let (_, key) = queueing.team_with_key("alice").await;
    let waiting = spawn_long_poll(polled, "wake", 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    submit(queueing, &key, json!({"pool": "wake", "command": ["true"]})).await;
    assert_woken_with_one_task(waiting).await;
}

/// A long poll of [`spawn_long_poll`] for one task got it well before polling would have.
async fn assert_woken_with_one_task(waiting: tokio::task::JoinHandle<(Duration, Vec<Value>)>) {
    let (elapsed, leases) = tokio::time::timeout(Duration::from_secs(15), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert!(elapsed < Duration::from_secs(4), "woken after {elapsed:?}");
}

/// Polling alone would take 8 s: only a wake-up can answer a long poll sooner.
fn slow_polling_config() -> controlplane::config::Config {
    let mut config = common::config(RateLimitConfig::disabled());
    config.scheduler.poll_interval_ms = 8_000;
    config
}

#[sqlx::test(migrations = "./migrations")]
async fn a_long_poll_wakes_when_a_task_is_queued(pool: PgPool) {
    let server = TestServer::start(pool, slow_polling_config()).await;
    assert_long_poll_woken(&server, &server).await;
    server.stop().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn a_long_poll_on_one_server_wakes_when_another_server_queues_a_task(pool: PgPool) {
    // Two replicas of one deployment: the same database and Redis key prefix.
    let config = slow_polling_config();
    let polled = TestServer::start(pool.clone(), config.clone()).await;
    let queueing = TestServer::start(pool, config).await;
    assert_long_poll_woken(&polled, &queueing).await;
    queueing.stop().await;
    polled.stop().await;
}

/// A long poll (up to 8 s) for `max_tasks` of `pool` on `server`: how long it waited and what
/// it got.
fn spawn_long_poll(
    server: &TestServer,
    pool: &'static str,
    max_tasks: u32,
) -> tokio::task::JoinHandle<(Duration, Vec<Value>)> {
    let client = server.client.clone();
    let url = server.url("/v1/leases");
    tokio::spawn(async move {
        let started = Instant::now();
        let leases = common::request_leases(
            &client,
            &url,
            json!({"pool": pool, "max_tasks": max_tasks, "wait_seconds": 8}),
        )
        .await;
        (started.elapsed(), leases)
    })
}

#[sqlx::test(migrations = "./migrations")]
async fn long_polls_are_woken_one_at_a_time_per_pool_and_a_full_claim_wakes_the_next(pool: PgPool) {
    let server = TestServer::start(pool, slow_polling_config()).await;
    let (_, key) = server.team_with_key("alice").await;
    // Three workers wait on pool "a", one on pool "b".
    let a: Vec<_> = (0..3).map(|_| spawn_long_poll(&server, "a", 1)).collect();
    let b = spawn_long_poll(&server, "b", 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Three tasks of pool "a" in one batch: one wake-up, which each full claim passes on.
    let tasks: Vec<Value> = (0..3)
        .map(|_| json!({"pool": "a", "command": ["true"]}))
        .collect();
    let response = server
        .client
        .post(server.url("/v1/tasks/batch"))
        .bearer_auth(&key)
        .json(&json!({"tasks": tasks}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    for waiting in a {
        assert_woken_with_one_task(waiting).await;
    }
    // The worker of pool "b" was not woken for them; a task of its own wakes it.
    assert!(!b.is_finished(), "a wake-up of pool a reached pool b");
    submit(&server, &key, json!({"pool": "b", "command": ["true"]})).await;
    assert_woken_with_one_task(b).await;
    server.stop().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn fair_share_serves_a_small_team_despite_a_huge_backlog(pool: PgPool) {
    let server = TestServer::unlimited(pool.clone()).await;
    let (big, _) = server.team_with_key("big").await;
    let (small, small_key) = server.team_with_key("small").await;
    // 10,000 older tasks of the big team, in one statement.
    sqlx::query(
        "INSERT INTO tasks (id, team_id, pool, command, timeout_seconds, created_at, run_at)
         SELECT gen_random_uuid(), $1, 'shared', ARRAY['true'], 60,
                now() - interval '1 hour', now() - interval '1 hour'
         FROM generate_series(1, 10000)",
    )
    .bind(big)
    .execute(&pool)
    .await
    .unwrap();
    for _ in 0..10 {
        submit(
            &server,
            &small_key,
            json!({"pool": "shared", "command": ["true"]}),
        )
        .await;
    }
    let mut small_done = 0;
    let mut leased_total = 0;
    // Bounded: three batches of ten.
    for _ in 0..3 {
        let batch = lease(&server, "shared", 10, 30).await;
        assert_eq!(batch.len(), 10);
        leased_total += batch.len();
        for lease in &batch {
            if lease["team_id"] == small.to_string().as_str() {
                small_done += 1;
            }
            assert_eq!(complete(&server, lease, json!(null)).await.status(), 200);
        }
        if small_done == 10 {
            break;
        }
    }
    assert_eq!(
        small_done, 10,
        "the small team finished within {leased_total} leases"
    );
    assert!(leased_total <= 20, "took {leased_total} leases");
    let big_queued: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tasks WHERE team_id = $1 AND state = 'queued'")
            .bind(big)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(big_queued >= 9_990);
    server.stop().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn concurrency_quotas_hold_under_concurrent_claims(pool: PgPool) {
    let server = TestServer::unlimited(pool).await;
    let team: Value = post(
        &server,
        ADMIN_KEY,
        "/v1/teams",
        json!({"name": "capped", "max_concurrent_tasks": 3}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(team["max_concurrent_tasks"], 3);
    let team_id = team["id"].as_str().unwrap();
    let key: Value = post(
        &server,
        ADMIN_KEY,
        &format!("/v1/teams/{team_id}/keys"),
        json!({"name": "k"}),
    )
    .await
    .json()
    .await
    .unwrap();
    let key = key["key"].as_str().unwrap().to_owned();
    let (_, free_key) = server.team_with_key("free").await;
    for _ in 0..10 {
        submit(&server, &key, json!({"pool": "q1", "command": ["true"]})).await;
        submit(&server, &key, json!({"pool": "q2", "command": ["true"]})).await;
    }
    for _ in 0..4 {
        submit(
            &server,
            &free_key,
            json!({"pool": "q1", "command": ["true"]}),
        )
        .await;
    }
    // Six concurrent claimers on two pools.
    let mut handles = Vec::new();
    for index in 0..6 {
        let client = server.client.clone();
        let url = server.url("/v1/leases");
        let pool_name = if index % 2 == 0 { "q1" } else { "q2" };
        handles.push(tokio::spawn(async move {
            common::request_leases(&client, &url, json!({"pool": pool_name, "max_tasks": 10})).await
        }));
    }
    let mut leases = Vec::new();
    for handle in handles {
        leases.extend(handle.await.unwrap());
    }
    let capped: Vec<&Value> = leases.iter().filter(|l| l["team_id"] == team_id).collect();
    let free = leases.iter().filter(|l| l["team_id"] != team_id).count();
    assert_eq!(capped.len(), 3, "the quota holds across pools and claimers");
    assert_eq!(free, 4, "the other team is not held back");
    assert!(lease(&server, "q1", 10, 30).await.is_empty());
    // A slot frees up: one more task of the capped team.
    assert_eq!(
        complete(&server, capped[0], json!(null)).await.status(),
        200
    );
    let next = lease(&server, "q2", 10, 30).await;
    assert_eq!(next.len(), 1);
    server.stop().await;
}

async fn run_workflow_by_hand(server: &TestServer, pool: &str, max_leases: usize) -> Vec<String> {
    // Plays a worker: each task's result names it and echoes the results it received.
    let mut order = Vec::new();
    for _ in 0..max_leases {
        let leases = lease(server, pool, 10, 30).await;
        if leases.is_empty() {
            break;
        }
        for lease in leases {
            let name = lease["command"][1].as_str().unwrap().to_owned();
            let result = json!({"name": name, "received": lease["dependency_results"]});
            assert_eq!(complete(server, &lease, result).await.status(), 200);
            order.push(name);
        }
    }
    order
}

#[sqlx::test(migrations = "./migrations")]
async fn a_workflow_runs_in_dependency_order_and_passes_results(pool: PgPool) {
    let server = TestServer::unlimited(pool).await;
    let (_, key) = server.team_with_key("alice").await;
    let node = |name: &str, deps: &[&str]| json!({"name": name, "depends_on": deps, "pool": "dag", "command": ["echo", name]});
    // Submitted out of order on purpose.
    let created = post(
        &server,
        &key,
        "/v1/workflows",
        json!({"name": "release", "tasks": [
            node("deploy", &["test", "lint"]), node("test", &["build"]), node("lint", &["build"]),
            node("build", &[]),
        ]}),
    )
    .await;
    assert_eq!(created.status(), 201);
    let workflow: Value = created.json().await.unwrap();
    let id = workflow["id"].as_str().unwrap();
    assert_eq!(workflow["state"], "running");
    assert_eq!(workflow["counts"], json!({"pending": 3, "queued": 1}));

    let order = run_workflow_by_hand(&server, "dag", 10).await;
    assert_eq!(order.first().map(String::as_str), Some("build"));
    assert_eq!(order.last().map(String::as_str), Some("deploy"));
    assert_eq!(order.len(), 4);

    let done = get(&server, &key, &format!("/v1/workflows/{id}")).await;
    assert_eq!(done["state"], "succeeded");
    let deploy = done["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "deploy")
        .unwrap();
    assert_eq!(deploy["depends_on"], json!(["lint", "test"]));
    let received = &deploy["task"]["result"]["received"];
    assert_eq!(received["test"]["name"], "test");
    assert_eq!(received["lint"]["name"], "lint");
    assert_eq!(received["test"]["received"]["build"]["name"], "build");

    // Invalid graphs are 422.
    for (tasks, needle) in [
        (json!([node("a", &["b"]), node("b", &["a"])]), "cycle"),
        (json!([node("a", &["a"])]), "cycle"),
        (json!([node("a", &["ghost"])]), "ghost"),
        (json!([node("a", &[]), node("a", &[])]), "twice"),
    ] {
        let problem = expect_problem(
            post(&server, &key, "/v1/workflows", json!({"tasks": tasks})).await,
            422,
        )
        .await;
        assert!(
            problem["detail"].as_str().unwrap().contains(needle),
            "{problem}"
        );
    }
    let (_, other) = server.team_with_key("bob").await;
    let foreign = server
        .client
        .get(server.url(&format!("/v1/workflows/{id}")))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    expect_problem(foreign, 404).await;
    server.stop().await;
}

fn states(workflow: &Value) -> Vec<(String, String)> {
    let mut states: Vec<(String, String)> = workflow["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["task"]["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    states.sort();
    states
}

fn pair(name: &str, state: &str) -> (String, String) {
    (name.to_owned(), state.to_owned())
}

#[sqlx::test(migrations = "./migrations")]
async fn failure_policies_and_cancel_stop_dependents(pool: PgPool) {
    let server = TestServer::unlimited(pool).await;
    let (_, key) = server.team_with_key("alice").await;
    let node = |name: &str, deps: &[&str], pool: &str| json!({"name": name, "depends_on": deps, "pool": pool, "command": ["echo", name]});
    let submit_workflow = |policy: &'static str, pool: &'static str| {
        let body = json!({"failure_policy": policy, "tasks": [
            node("a", &[], pool), node("b", &["a"], pool), node("c", &["b"], pool),
            node("side", &[], &format!("{pool}-side")),
        ]});
        let server = &server;
        let key = key.clone();
        async move {
            let response = post(server, &key, "/v1/workflows", body).await;
            assert_eq!(response.status(), 201);
            response.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };

    // fail_fast: a dies -> b, c and the untouched side task are cancelled.
    let id = submit_workflow("fail_fast", "ff").await;
    let a = lease(&server, "ff", 1, 30).await.remove(0);
    assert_eq!(fail(&server, &a, "broken").await.status(), 200);
    let workflow = get(&server, &key, &format!("/v1/workflows/{id}")).await;
    assert_eq!(workflow["state"], "failed");
    assert_eq!(
        states(&workflow),
        vec![
            pair("a", "dead"),
            pair("b", "cancelled"),
            pair("c", "cancelled"),
            pair("side", "cancelled")
        ]
    );
    assert!(lease(&server, "ff-side", 1, 30).await.is_empty());

    // continue: only a's dependents are cancelled; the side branch still runs.
    let id = submit_workflow("continue", "co").await;
    let a = lease(&server, "co", 1, 30).await.remove(0);
    assert_eq!(fail(&server, &a, "broken").await.status(), 200);
    let workflow = get(&server, &key, &format!("/v1/workflows/{id}")).await;
    assert_eq!(
        states(&workflow),
        vec![
            pair("a", "dead"),
            pair("b", "cancelled"),
            pair("c", "cancelled"),
            pair("side", "queued")
        ]
    );
    let side = lease(&server, "co-side", 1, 30).await.remove(0);
    assert_eq!(complete(&server, &side, json!(null)).await.status(), 200);
    let workflow = get(&server, &key, &format!("/v1/workflows/{id}")).await;
    assert_eq!(workflow["state"], "failed");

    // Cancelling a task stops its dependents (continue: the side branch is not touched).
    let id = submit_workflow("continue", "cx").await;
    let workflow = get(&server, &key, &format!("/v1/workflows/{id}")).await;
    let a_id = workflow["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "a")
        .unwrap()["task"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cancelled = post(
        &server,
        &key,
        &format!("/v1/tasks/{a_id}/cancel"),
        json!({}),
    )
    .await;
    assert_eq!(cancelled.status(), 200);
    let workflow = get(&server, &key, &format!("/v1/workflows/{id}")).await;
    assert_eq!(
        states(&workflow),
        vec![
            pair("a", "cancelled"),
            pair("b", "cancelled"),
            pair("c", "cancelled"),
            pair("side", "queued")
        ]
    );
    assert!(lease(&server, "cx", 1, 30).await.is_empty());
    server.stop().await;
}
