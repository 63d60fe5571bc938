//! The queue engine against real Postgres and Redis: claims in one statement whose cost does not
//! depend on the backlog, fair share and quotas under batched claims, and the lease counters.

mod common;

use std::collections::HashMap;

use common::{ADMIN_KEY, TestServer, WORKER_KEY};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

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

async fn lease(server: &TestServer, pool: &str, max_tasks: u32) -> Vec<Value> {
    let response = post(
        server,
        WORKER_KEY,
        "/v1/leases",
        json!({"pool": pool, "max_tasks": max_tasks, "lease_seconds": 60}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["leases"].as_array().unwrap().clone()
}

async fn complete(server: &TestServer, lease: &Value) {
    let response = post(
        server,
        WORKER_KEY,
        &format!(
            "/v1/leases/{}/complete",
            lease["lease_id"].as_str().unwrap()
        ),
        json!({"fencing_token": lease["fencing_token"], "result": null}),
    )
    .await;
    assert_eq!(response.status(), 200);
}

/// A team created through the admin API with `share` and an optional quota; returns its id.
async fn team(server: &TestServer, name: &str, share: u32, quota: Option<u32>) -> Uuid {
    team_with_key(server, name, share, quota).await.0
}

/// [`team`], with an API key of the team.
async fn team_with_key(
    server: &TestServer,
    name: &str,
    share: u32,
    quota: Option<u32>,
) -> (Uuid, String) {
    let response = post(
        server,
        ADMIN_KEY,
        "/v1/teams",
        json!({"name": name, "share": share, "max_concurrent_tasks": quota}),
    )
    .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    let id: Uuid = body["id"].as_str().unwrap().parse().unwrap();
    let response = post(
        server,
        ADMIN_KEY,
        &format!("/v1/teams/{id}/keys"),
        json!({"name": "k"}),
    )
    .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    (id, body["key"].as_str().unwrap().to_owned())
}

/// `count` queued tasks of `team` in `pool`, in one statement.
async fn backlog(db: &PgPool, team: Uuid, pool: &str, count: i32) {
    sqlx::query(
        "INSERT INTO tasks (id, team_id, pool, command, timeout_seconds)
         SELECT gen_random_uuid(), $1, $2, ARRAY['true'], 60 FROM generate_series(1, $3)",
    )
    .bind(team)
    .bind(pool)
    .bind(count)
    .execute(db)
    .await
    .unwrap();
}

fn leases_by_team(leases: &[Value]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for lease in leases {
        *counts
            .entry(lease["team_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    counts
}

/// The shared buffers (pages) one claim of 10 tasks reads and writes, from
/// `EXPLAIN (ANALYZE, BUFFERS)`, and the tasks it leased; rolled back.
async fn claim_cost(db: &PgPool, pool: &str) -> (i64, usize) {
    let mut transaction = db.begin().await.unwrap();
    let lease_ids: Vec<Uuid> = (0..10).map(|_| Uuid::now_v7()).collect();
    let (plan,): (sqlx::types::Json<Value>,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}",
        controlplane::store::leases::CLAIM_STATEMENT
    )))
    .bind(pool)
    .bind(10_i64)
    .bind(60.0_f64)
    .bind("cost")
    .bind(controlplane::store::leases::TIMEOUT_GRACE_SECONDS)
    .bind(&lease_ids)
    .fetch_one(&mut *transaction)
    .await
    .unwrap();
    transaction.rollback().await.unwrap();
    let top = &plan.0[0]["Plan"];
    let blocks = ["Shared Hit Blocks", "Shared Read Blocks"]
        .iter()
        .map(|field| top[field].as_i64().unwrap())
        .sum();
    (blocks, top["Actual Rows"].as_u64().unwrap() as usize)
}

#[sqlx::test(migrations = "./migrations")]
async fn a_claim_costs_the_same_with_a_backlog_forty_times_larger(pool: PgPool) {
    let server = TestServer::unlimited(pool.clone()).await;
    let teams = [
        team(&server, "a", 1, None).await,
        team(&server, "b", 3, None).await,
        team(&server, "c", 1, Some(50)).await,
    ];
    for team in teams {
        backlog(&pool, team, "p", 500).await;
    }
    sqlx::query("ANALYZE tasks").execute(&pool).await.unwrap();
    let (small, leased) = claim_cost(&pool, "p").await;
    assert_eq!(leased, 10);
    // 40 times the queued tasks, and as many finished ones.
    for team in teams {
        backlog(&pool, team, "p", 19_500).await;
        backlog(&pool, team, "done", 20_000).await;
    }
    sqlx::query("UPDATE tasks SET state = 'succeeded' WHERE pool = 'done'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("VACUUM ANALYZE tasks")
        .execute(&pool)
        .await
        .unwrap();
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE state = 'queued'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(queued, 60_000);
    let (large, leased) = claim_cost(&pool, "p").await;
    assert_eq!(leased, 10);
    println!("claim of 10: {small} buffers with 1,500 queued, {large} with 60,000 queued");
    // A deeper index costs a page per probe at most; counting the backlog would cost thousands.
    assert!(
        large <= small + small / 2,
        "{large} buffers with 60,000 queued against {small} with 1,500"
    );
    server.stop().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn fair_share_holds_under_batched_claims(pool: PgPool) {
    let server = TestServer::unlimited(pool.clone()).await;
    let one = team(&server, "one", 1, None).await;
    let three = team(&server, "three", 3, None).await;
    backlog(&pool, one, "shared", 400).await;
    backlog(&pool, three, "shared", 400).await;

    // Leased tasks kept: each batch goes to the team furthest below its share.
    let mut held = Vec::new();
    for _ in 0..20 {
        held.extend(lease(&server, "shared", 8).await);
    }
    let counts = leases_by_team(&held);
    let (a, b) = (counts[&one.to_string()], counts[&three.to_string()]);
    assert_eq!(a + b, 160);
    let ratio = b as f64 / a as f64;
    assert!((2.7..=3.3).contains(&ratio), "held {a}:{b}");

    // Completed at once: every batch is split 1:3 by itself.
    for lease in &held {
        complete(&server, lease).await;
    }
    let mut done = Vec::new();
    for _ in 0..20 {
        let batch = lease(&server, "shared", 8).await;
        for lease in &batch {
            complete(&server, lease).await;
        }
        done.extend(batch);
    }
    let counts = leases_by_team(&done);
    let (a, b) = (counts[&one.to_string()], counts[&three.to_string()]);
    assert_eq!(a + b, 160);
    let ratio = b as f64 / a as f64;
    assert!((2.7..=3.3).contains(&ratio), "completed {a}:{b}");
    let (active,): (i64,) = sqlx::query_as("SELECT coalesce(sum(active), 0) FROM team_usage")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(active, 0, "every counter is back to zero");
    server.stop().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn quotas_hold_under_concurrent_batched_claims_and_counters_follow_every_lease_end(
    pool: PgPool,
) {
    let mut config = common::config(controlplane::config::RateLimitConfig::disabled());
    config.scheduler.reaper_interval_ms = 100;
    let server = TestServer::start(pool.clone(), config).await;
    let (capped, capped_key) = team_with_key(&server, "capped", 1, Some(5)).await;
    let (free, free_key) = team_with_key(&server, "free", 1, None).await;
    backlog(&pool, capped, "p1", 100).await;
    backlog(&pool, capped, "p2", 100).await;
    backlog(&pool, free, "p1", 100).await;

    // Rounds of 8 concurrent claims of up to 10 on two pools; between rounds leases end every
    // way a lease can end: completed, failed, released, cancelled, and (the 1 s leases of p2)
    // expired.
    let mut max_capped = 0;
    let mut held: Vec<Value> = Vec::new();
    for round in 0..6 {
        let mut handles = Vec::new();
        for index in 0..8 {
            let client = server.client.clone();
            let url = server.url("/v1/leases");
            let (pool_name, lease_seconds) = if index % 2 == 0 {
                ("p1", 60)
            } else {
                ("p2", 1)
            };
            handles.push(tokio::spawn(async move {
                let body: Value = client
                    .post(url)
                    .bearer_auth(WORKER_KEY)
                    .json(&json!({"pool": pool_name, "max_tasks": 10,
                                  "lease_seconds": lease_seconds}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                body["leases"].as_array().unwrap().clone()
            }));
        }
        for handle in handles {
            held.extend(handle.await.unwrap());
        }
        let capped_leased: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tasks WHERE team_id = $1 AND state = 'leased'",
        )
        .bind(capped)
        .fetch_one(&pool)
        .await
        .unwrap();
        max_capped = max_capped.max(capped_leased);
        assert!(capped_leased <= 5, "round {round}: {capped_leased} leased");
        let mut kept = Vec::new();
        let mut p1 = Vec::new();
        for lease in held.drain(..) {
            if lease["pool"] == "p1" {
                p1.push(lease);
            }
        }
        for (position, lease) in p1.into_iter().enumerate() {
            let lease_id = lease["lease_id"].as_str().unwrap();
            let token = &lease["fencing_token"];
            match position % 5 {
                0 => complete(&server, &lease).await,
                1 => {
                    let path = format!("/v1/leases/{lease_id}/fail");
                    let body = json!({"fencing_token": token, "error": "boom"});
                    assert_eq!(post(&server, WORKER_KEY, &path, body).await.status(), 200);
                }
                2 => {
                    let path = format!("/v1/leases/{lease_id}/release");
                    let body = json!({"fencing_token": token});
                    assert_eq!(post(&server, WORKER_KEY, &path, body).await.status(), 200);
                }
                3 => {
                    let key = if lease["team_id"] == capped.to_string().as_str() {
                        &capped_key
                    } else {
                        &free_key
                    };
                    let path = format!("/v1/tasks/{}/cancel", lease["task_id"].as_str().unwrap());
                    assert_eq!(post(&server, key, &path, json!({})).await.status(), 200);
                }
                _ => kept.push(lease),
            }
        }
        held = kept;
    }
    assert_eq!(max_capped, 5, "the capped team used its whole quota");
    // Bounded wait until the reaper ended the p2 leases.
    let started = std::time::Instant::now();
    loop {
        let leased: i64 =
            sqlx::query_scalar("SELECT count(*) FROM tasks WHERE pool = 'p2' AND state = 'leased'")
                .fetch_one(&pool)
                .await
                .unwrap();
        if leased == 0 {
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let lost: i64 = sqlx::query_scalar("SELECT sum(lease_losses) FROM tasks WHERE pool = 'p2'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(lost > 0, "some p2 leases expired");
    // The counters equal the leased tasks, per team and per team and pool.
    let drift: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM teams t LEFT JOIN team_usage u ON u.team_id = t.id
         WHERE coalesce(u.active, 0) <> (SELECT count(*) FROM tasks a
                                         WHERE a.team_id = t.id AND a.state = 'leased')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(drift, 0);
    let drift: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM team_pool_usage u
         WHERE u.active <> (SELECT count(*) FROM tasks a
                            WHERE a.team_id = u.team_id AND a.pool = u.pool
                              AND a.state = 'leased')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(drift, 0);
    server.stop().await;
}
