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
    common::request_leases(
        &server.client,
        &server.url("/v1/leases"),
        json!({"pool": pool, "max_tasks": max_tasks, "lease_seconds": 60}),
    )
    .await
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
    .bind(0_i16)
    .fetch_one(&mut *transaction)
    .await
    .unwrap();
    transaction.rollback().await.unwrap();
    buffers_and_rows(&plan.0)
}

/// The shared buffers an `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)` plan read or hit, and the
/// rows it returned.
fn buffers_and_rows(plan: &Value) -> (i64, usize) {
    let top = &plan[0]["Plan"];
    let blocks = ["Shared Hit Blocks", "Shared Read Blocks"]
        .iter()
        .map(|field| top[field].as_i64().unwrap())
        .sum();
    (blocks, top["Actual Rows"].as_u64().unwrap() as usize)
}

/// Prepares the claim statement as `generic_claim` on `connection` (a session of `claim_pool`).
async fn prepare_generic_claim(connection: &mut sqlx::PgConnection) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "PREPARE generic_claim (text, bigint, float8, text, integer, uuid[], smallint) AS {}",
        controlplane::store::leases::CLAIM_STATEMENT
    )))
    .execute(connection)
    .await
    .unwrap();
}

/// `EXECUTE generic_claim` for up to `tasks` tasks of `pool`. EXECUTE takes no bind parameters:
/// the values are written out (all of them ours).
fn execute_generic_claim(pool: &str, tasks: usize) -> String {
    let lease_ids = (0..tasks)
        .map(|_| format!("'{}'", Uuid::now_v7()))
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "EXECUTE generic_claim ('{pool}', {tasks}, 60, 'cost', {}, ARRAY[{lease_ids}]::uuid[], 0)",
        controlplane::store::leases::TIMEOUT_GRACE_SECONDS
    )
}

/// As [`claim_cost`], but planned as the server's claim sessions plan it (`claim_pool`: one
/// generic plan, whatever the parameters).
async fn generic_claim_cost(db: &PgPool, pool: &str) -> (i64, usize) {
    let claims = controlplane::store::leases::claim_pool(db);
    let mut connection = claims.acquire().await.unwrap();
    let mode: String = sqlx::query_scalar("SHOW plan_cache_mode")
        .fetch_one(&mut *connection)
        .await
        .unwrap();
    assert_eq!(mode, "force_generic_plan");
    prepare_generic_claim(&mut connection).await;
    let mut transaction = sqlx::Connection::begin(&mut *connection).await.unwrap();
    let (plan,): (sqlx::types::Json<Value>,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}",
        execute_generic_claim(pool, 10)
    )))
    .fetch_one(&mut *transaction)
    .await
    .unwrap();
    transaction.rollback().await.unwrap();
    drop(connection);
    claims.close().await;
    buffers_and_rows(&plan.0)
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
    let (small_generic, leased) = generic_claim_cost(&pool, "p").await;
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
    let (large_generic, leased) = generic_claim_cost(&pool, "p").await;
    assert_eq!(leased, 10);
    println!(
        "claim of 10: {small} buffers with 1,500 queued, {large} with 60,000 queued; \
         planned generically: {small_generic} and {large_generic}"
    );
    // A deeper index costs a page per probe at most; counting the backlog would cost thousands.
    assert!(
        large <= small + small / 2,
        "{large} buffers with 60,000 queued against {small} with 1,500"
    );
    // The server's claims run with a generic plan (`claim_pool`): it reads the same indexes.
    assert!(
        large_generic <= small_generic + small_generic / 2 && large_generic <= large + large / 2,
        "planned generically: {large_generic} buffers with 60,000 queued against \
         {small_generic} with 1,500 (custom plans: {large})"
    );
    server.stop().await;
}

/// The relations an `EXPLAIN (FORMAT JSON)` plan reads, each with how (node type and index).
fn scans(node: &Value, found: &mut Vec<(String, String, String)>) {
    if let Some(relation) = node["Relation Name"].as_str() {
        found.push((
            relation.to_owned(),
            node["Node Type"].as_str().unwrap_or_default().to_owned(),
            node["Index Name"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    for child in node["Plans"].as_array().into_iter().flatten() {
        scans(child, found);
    }
}

/// How `plan` reads `tasks`: (node type, index) of each of its scans of the table (the update
/// itself left out).
fn task_scans(plan: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    scans(&plan[0]["Plan"], &mut found);
    found
        .into_iter()
        .filter(|(relation, node, _)| relation == "tasks" && node != "ModifyTable")
        .map(|(_, node, index)| (node, index))
        .collect()
}

/// No statistics are ever gathered here (as on a new database, or one whose autovacuum is off or
/// behind): a claim session makes its generic plan while `tasks` is small and keeps it as the
/// table grows forty times; the plan must still read the granted tasks through an index, never
/// scan the table (which it did, and a claim of 500 among 60,000 tasks took 33 ms).
#[sqlx::test(migrations = "./migrations")]
async fn a_claim_planned_while_tasks_was_small_reads_it_through_indexes_after_it_grew(
    pool: PgPool,
) {
    let server = TestServer::unlimited(pool.clone()).await;
    let team = team(&server, "a", 1, None).await;
    backlog(&pool, team, "p", 300).await;
    let claims = controlplane::store::leases::claim_pool(&pool);
    let mut connection = claims.acquire().await.unwrap();
    prepare_generic_claim(&mut connection).await;
    // The first execution makes the session's plan, with 300 tasks in the table.
    let mut transaction = sqlx::Connection::begin(&mut *connection).await.unwrap();
    let leased = sqlx::raw_sql(sqlx::AssertSqlSafe(execute_generic_claim("p", 10)))
        .fetch_all(&mut *transaction)
        .await
        .unwrap();
    assert_eq!(leased.len(), 10);
    transaction.rollback().await.unwrap();

    backlog(&pool, team, "p", 12_000).await;
    let mut transaction = sqlx::Connection::begin(&mut *connection).await.unwrap();
    let (plan,): (sqlx::types::Json<Value>,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}",
        execute_generic_claim("p", 500)
    )))
    .fetch_one(&mut *transaction)
    .await
    .unwrap();
    transaction.rollback().await.unwrap();
    drop(connection);
    claims.close().await;
    let (buffers, leased) = buffers_and_rows(&plan.0);
    assert_eq!(leased, 500);
    let reads = task_scans(&plan.0);
    println!("claim of 500 among 12,300 tasks: {buffers} buffers; tasks read by {reads:?}");
    assert!(
        reads.iter().all(|(node, index)| node.contains("Index")
            && ["tasks_claimable", "tasks_pkey"].contains(&index.as_str())),
        "the claim reads tasks other than through its indexes: {reads:?}"
    );
    server.stop().await;
}

/// A batch of 500 completions among 1,000 live leases and 15,000 ended ones (whose entries stay
/// in `tasks_lease_expiry` until a vacuum), without statistics: one probe of `tasks_lease` per
/// report, not a hash of every leased task.
#[sqlx::test(migrations = "./migrations")]
async fn a_batch_of_completions_probes_each_lease_without_statistics(pool: PgPool) {
    let server = TestServer::unlimited(pool.clone()).await;
    let team = team(&server, "a", 1, None).await;
    backlog(&pool, team, "p", 20_000).await;
    sqlx::query(
        "UPDATE tasks SET state = 'leased', lease_id = gen_random_uuid(), fencing_token = 1,
                          leased_at = now(), lease_expires_at = now() + interval '60 seconds'
         WHERE id IN (SELECT id FROM tasks ORDER BY id LIMIT 16000)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE tasks SET state = 'succeeded', lease_expires_at = NULL
         WHERE id IN (SELECT id FROM tasks ORDER BY id LIMIT 15000)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let leases: Vec<Uuid> = sqlx::query_scalar(
        "SELECT lease_id FROM tasks WHERE state = 'leased' ORDER BY lease_id LIMIT 500",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut transaction = pool.begin().await.unwrap();
    let (plan,): (sqlx::types::Json<Value>,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}",
        controlplane::store::leases::COMPLETION_STATEMENT
    )))
    .bind(&leases)
    .bind(vec![1_i64; leases.len()])
    .bind(vec![None::<sqlx::types::Json<Value>>; leases.len()])
    .bind(vec![None::<String>; leases.len()])
    .bind(vec![Some(0_i32); leases.len()])
    .fetch_one(&mut *transaction)
    .await
    .unwrap();
    transaction.rollback().await.unwrap();
    let (buffers, completed) = buffers_and_rows(&plan.0);
    assert_eq!(completed, 500);
    let reads = task_scans(&plan.0);
    println!("500 completions: {buffers} buffers; tasks read by {reads:?}");
    assert_eq!(
        reads,
        vec![("Index Scan".to_owned(), "tasks_lease".to_owned())],
        "the completions read tasks other than by probing tasks_lease"
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
    let (active,): (i64,) = sqlx::query_as("SELECT coalesce(sum(active), 0) FROM lease_stripes")
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
    backlog(&pool, free, "p2", 100).await;

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
                common::request_leases(
                    &client,
                    &url,
                    json!({"pool": pool_name, "max_tasks": 10, "lease_seconds": lease_seconds}),
                )
                .await
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
    // The counters equal the leased tasks: per team with a quota, and per team and pool (the
    // sum of the stripes).
    let drift: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM teams t LEFT JOIN team_usage u ON u.team_id = t.id
         WHERE t.max_concurrent_tasks IS NOT NULL
           AND coalesce(u.active, 0) <> (SELECT count(*) FROM tasks a
                                         WHERE a.team_id = t.id AND a.state = 'leased')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(drift, 0);
    let drift: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT team_id, pool, sum(active) AS active
                               FROM lease_stripes GROUP BY team_id, pool) u
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

#[sqlx::test(migrations = "./migrations")]
async fn counters_are_recounted_when_a_quota_is_set_and_reconciled_when_they_drift(pool: PgPool) {
    let server = TestServer::unlimited(pool.clone()).await;
    let team = team(&server, "t", 1, None).await;
    backlog(&pool, team, "p", 50).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.extend(lease(&server, "p", 5).await);
    }
    assert_eq!(held.len(), 20);
    let stripes = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT coalesce(sum(active), 0) FROM lease_stripes WHERE team_id = $1 AND pool = 'p'",
        )
        .bind(team)
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let quota_counter = || async {
        sqlx::query_scalar::<_, i32>("SELECT active FROM team_usage WHERE team_id = $1")
            .bind(team)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(stripes().await, 20);
    // Without a quota the team's counter is not kept; setting one counts its leased tasks.
    assert_eq!(quota_counter().await, 0);
    controlplane::store::teams::set_scheduling(&pool, team, Some(22), 1)
        .await
        .unwrap();
    assert_eq!(quota_counter().await, 20);
    // The quota holds from there: 2 more at most.
    assert_eq!(lease(&server, "p", 5).await.len(), 2);
    // Drifted counters (a manual fix in SQL, a server of an older version) are set right.
    sqlx::query("UPDATE team_usage SET active = 3")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO lease_stripes (team_id, pool, stripe, active) VALUES ($1, 'p', 7, 40),
                ($1, 'gone', 2, 5)
         ON CONFLICT (team_id, pool, stripe) DO UPDATE SET active = EXCLUDED.active",
    )
    .bind(team)
    .execute(&pool)
    .await
    .unwrap();
    let fixed = controlplane::store::usage::reconcile(&pool).await.unwrap();
    assert!(fixed >= 2, "{fixed} counters fixed");
    assert_eq!(quota_counter().await, 22);
    assert_eq!(stripes().await, 22);
    let gone: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(active), 0) FROM lease_stripes WHERE pool = 'gone'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(gone, 0);
    assert_eq!(
        controlplane::store::usage::reconcile(&pool).await.unwrap(),
        0
    );
    server.stop().await;
}

async fn get(server: &TestServer, key: &str, path: &str) -> reqwest::Response {
    server
        .client
        .get(server.url(path))
        .bearer_auth(key)
        .send()
        .await
        .expect("request")
}

async fn task_count(db: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(db)
        .await
        .unwrap()
}

fn ids(answer: &Value) -> Vec<String> {
    answer["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["task"]["id"].as_str().unwrap().to_owned())
        .collect()
}

fn replayed(answer: &Value) -> Vec<bool> {
    answer["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["replayed"].as_bool().unwrap())
        .collect()
}

#[sqlx::test(migrations = "./migrations")]
async fn a_batch_is_atomic_and_stays_in_its_team(pool: PgPool) {
    let server = TestServer::unlimited(pool.clone()).await;
    let (alice, alice_key) = server.team_with_key("alice").await;
    let (_, bob_key) = server.team_with_key("bob").await;

    let batch = json!({"tasks": [
        {"pool": "p", "command": ["echo", "1"]},
        {"pool": "p", "command": ["echo", "2"], "priority": 5, "env": {"A": "b"}},
        {"pool": "q", "command": ["echo", "3"], "retry": {"max_attempts": 2}, "timeout_seconds": 7},
    ]});
    let response = post(&server, &alice_key, "/v1/tasks/batch", batch).await;
    assert_eq!(response.status(), 201);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(replayed(&answer), [false, false, false]);
    assert_eq!(answer["items"][1]["task"]["priority"], 5);
    assert_eq!(answer["items"][2]["task"]["pool"], "q");
    for (index, id) in ids(&answer).into_iter().enumerate() {
        let mine = get(&server, &alice_key, &format!("/v1/tasks/{id}")).await;
        assert_eq!(mine.status(), 200);
        // The answer is made from the submission and the stored time: it is the stored task.
        let stored: Value = mine.json().await.unwrap();
        assert_eq!(answer["items"][index]["task"], stored);
        let theirs = get(&server, &bob_key, &format!("/v1/tasks/{id}")).await;
        assert_eq!(
            theirs.status(),
            404,
            "another team's task does not exist for bob"
        );
    }
    let owners: Vec<Uuid> = sqlx::query_scalar("SELECT DISTINCT team_id FROM tasks")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(owners, [alice]);
    // Leasable at once: the batch announced its tasks.
    assert_eq!(lease(&server, "p", 10).await.len(), 2);

    // Two bad items among four: both named, nothing stored.
    let before = task_count(&pool).await;
    let response = post(
        &server,
        &alice_key,
        "/v1/tasks/batch",
        json!({"tasks": [
            {"pool": "p", "command": ["true"]},
            {"pool": "Not A Pool", "command": ["true"]},
            {"pool": "p", "command": ["true"]},
            {"pool": "p", "command": [], "team_id": "someone else's"},
        ]}),
    )
    .await;
    let problem = common::expect_problem(response, 422).await;
    let indexes: Vec<u64> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|error| error["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, [1, 3], "{problem}");
    assert!(
        problem["errors"][1]["detail"]
            .as_str()
            .unwrap()
            .contains("team_id"),
        "{problem}"
    );
    assert_eq!(task_count(&pool).await, before);

    // Size limits, and a body that is no batch.
    let many: Vec<Value> = (0..1001)
        .map(|_| json!({"pool": "p", "command": ["true"]}))
        .collect();
    let response = post(
        &server,
        &alice_key,
        "/v1/tasks/batch",
        json!({ "tasks": many }),
    )
    .await;
    common::expect_problem(response, 422).await;
    let response = post(&server, &alice_key, "/v1/tasks/batch", json!({"tasks": []})).await;
    common::expect_problem(response, 422).await;
    let response = post(&server, &alice_key, "/v1/tasks/batch", json!([1, 2])).await;
    common::expect_problem(response, 422).await;
    assert_eq!(task_count(&pool).await, before);
    // The worker key owns no tasks.
    let response = post(
        &server,
        WORKER_KEY,
        "/v1/tasks/batch",
        json!({"tasks": [{"pool": "p", "command": ["true"]}]}),
    )
    .await;
    common::expect_problem(response, 403).await;

    // The OpenAPI document lists the endpoint and its schemas.
    let document: Value = server
        .client
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(document["paths"]["/v1/tasks/batch"]["post"].is_object());
    for schema in ["CreateTaskBatchRequest", "TaskBatchResponse", "ItemError"] {
        assert!(
            document["components"]["schemas"][schema].is_object(),
            "{schema} missing"
        );
    }

    // 1,000 tasks in one request.
    let thousand: Vec<Value> = (0..1000)
        .map(|n| json!({"pool": "big", "command": ["echo", n.to_string()]}))
        .collect();
    let response = post(
        &server,
        &alice_key,
        "/v1/tasks/batch",
        json!({ "tasks": thousand }),
    )
    .await;
    assert_eq!(response.status(), 201);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["items"][999]["task"]["command"][1], "999");
    assert_eq!(task_count(&pool).await, before + 1000);
    server.stop().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn idempotency_keys_hold_within_and_across_batches_and_single_submissions(pool: PgPool) {
    let server = TestServer::unlimited(pool.clone()).await;
    let (_, key) = server.team_with_key("alice").await;
    let (_, other_key) = server.team_with_key("bob").await;
    let a = json!({"pool": "p", "command": ["echo", "a"], "idempotency_key": "k-a"});
    let b = json!({"pool": "p", "command": ["echo", "b"], "idempotency_key": "k-b"});
    let plain = json!({"pool": "p", "command": ["echo", "plain"]});

    // Within a batch: the same key and task twice is one task.
    let response = post(
        &server,
        &key,
        "/v1/tasks/batch",
        json!({"tasks": [a.clone(), b.clone(), plain.clone(), a.clone()]}),
    )
    .await;
    assert_eq!(response.status(), 201);
    let first: Value = response.json().await.unwrap();
    assert_eq!(replayed(&first), [false, false, false, true]);
    let first_ids = ids(&first);
    assert_eq!(first_ids[0], first_ids[3]);
    assert_eq!(task_count(&pool).await, 3);

    // Across batches: a key seen before gives its task; only new items create.
    let c = json!({"pool": "p", "command": ["echo", "c"], "idempotency_key": "k-c"});
    let response = post(
        &server,
        &key,
        "/v1/tasks/batch",
        json!({"tasks": [a.clone(), c.clone()]}),
    )
    .await;
    assert_eq!(response.status(), 201);
    let second: Value = response.json().await.unwrap();
    assert_eq!(replayed(&second), [true, false]);
    assert_eq!(ids(&second)[0], first_ids[0]);
    assert_eq!(task_count(&pool).await, 4);

    // Everything replayed: 200, nothing new.
    let response = post(
        &server,
        &key,
        "/v1/tasks/batch",
        json!({"tasks": [b.clone(), c.clone()]}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(task_count(&pool).await, 4);

    // A key reused with another task refuses the whole batch, naming the item.
    let b_changed = json!({"pool": "p", "command": ["echo", "B!"], "idempotency_key": "k-b"});
    let d = json!({"pool": "p", "command": ["echo", "d"], "idempotency_key": "k-d"});
    let response = post(
        &server,
        &key,
        "/v1/tasks/batch",
        json!({"tasks": [d.clone(), b_changed]}),
    )
    .await;
    let problem = common::expect_problem(response, 422).await;
    assert_eq!(problem["errors"][0]["index"], 1, "{problem}");
    assert!(
        problem["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("k-b")
    );
    // Within one batch, too.
    let d_changed = json!({"pool": "q", "command": ["echo", "d"], "idempotency_key": "k-d"});
    let response = post(
        &server,
        &key,
        "/v1/tasks/batch",
        json!({"tasks": [d.clone(), plain.clone(), d_changed]}),
    )
    .await;
    let problem = common::expect_problem(response, 422).await;
    assert_eq!(problem["errors"][0]["index"], 2, "{problem}");
    assert_eq!(task_count(&pool).await, 4, "refused batches stored nothing");

    // The same keys as the Idempotency-Key of a single submission, both ways.
    let single = |body: Value, idempotency_key: &str| {
        server
            .client
            .post(server.url("/v1/tasks"))
            .bearer_auth(&key)
            .header("Idempotency-Key", idempotency_key)
            .json(&body)
            .send()
    };
    let replay = single(json!({"pool": "p", "command": ["echo", "a"]}), "k-a")
        .await
        .unwrap();
    assert_eq!(replay.status(), 201);
    assert_eq!(
        replay.headers()["idempotent-replayed"].to_str().unwrap(),
        "true"
    );
    let replayed_task: Value = replay.json().await.unwrap();
    assert_eq!(replayed_task["id"], first_ids[0].as_str());
    let created = single(json!({"pool": "p", "command": ["echo", "e"]}), "k-e")
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let e: Value = created.json().await.unwrap();
    let response = post(
        &server,
        &key,
        "/v1/tasks/batch",
        json!({"tasks": [{"pool": "p", "command": ["echo", "e"], "idempotency_key": "k-e"}]}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(ids(&answer)[0], e["id"].as_str().unwrap());
    assert_eq!(task_count(&pool).await, 5);

    // Keys belong to a team: bob's k-a is his own.
    let response = post(
        &server,
        &other_key,
        "/v1/tasks/batch",
        json!({"tasks": [a]}),
    )
    .await;
    assert_eq!(response.status(), 201);
    assert_eq!(task_count(&pool).await, 6);

    // Concurrent batches with the same new key: one task.
    let mut handles = Vec::new();
    for _ in 0..6 {
        let client = server.client.clone();
        let url = server.url("/v1/tasks/batch");
        let key = key.clone();
        handles.push(tokio::spawn(async move {
            let response = client
                .post(url)
                .bearer_auth(key)
                .json(&json!({"tasks": [
                    {"pool": "p", "command": ["echo", "race"], "idempotency_key": "k-race"}
                ]}))
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success(), "{}", response.status());
            let answer: Value = response.json().await.unwrap();
            answer["items"][0]["task"]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }));
    }
    let mut race_ids = Vec::new();
    for handle in handles {
        race_ids.push(handle.await.unwrap());
    }
    race_ids.dedup();
    assert_eq!(race_ids.len(), 1, "one task for the key");
    assert_eq!(task_count(&pool).await, 7);
    server.stop().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn tasks_submit_sends_a_jsonl_file_in_batches_and_a_second_run_creates_nothing(pool: PgPool) {
    let server = TestServer::unlimited(pool.clone()).await;
    let (_, key) = server.team_with_key("alice").await;
    let directory = std::env::temp_dir().join(stacksmith_testkit::unique_name("tasks_submit"));
    std::fs::create_dir_all(&directory).unwrap();
    let file = directory.join("tasks.jsonl");
    let mut lines = vec!["# nightly jobs".to_owned(), String::new()];
    for n in 0..5 {
        lines.push(json!({"pool": "p", "command": ["echo", n.to_string()]}).to_string());
    }
    // Two identical lines are two tasks.
    lines.push(json!({"pool": "p", "command": ["echo", "twice"]}).to_string());
    lines.push(json!({"pool": "p", "command": ["echo", "twice"]}).to_string());
    std::fs::write(&file, lines.join("\n")).unwrap();
    let run = |file: &std::path::Path| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_controlplane"))
            .args([
                "tasks",
                "submit",
                "--url",
                &server.base,
                "--batch-size",
                "3",
            ])
            .arg("--file")
            .arg(file)
            .env("CONTROLPLANE_API_KEY", &key)
            .env("RUST_LOG", "warn")
            .output()
    };
    let first = run(&file).await.unwrap();
    assert!(first.status.success(), "{first:?}");
    let printed: Vec<Value> = String::from_utf8_lossy(&first.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(printed.len(), 7);
    assert_eq!(printed[0]["line"], 3);
    assert!(printed.iter().all(|item| item["replayed"] == false));
    assert_eq!(task_count(&pool).await, 7);

    let second = run(&file).await.unwrap();
    assert!(second.status.success(), "{second:?}");
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("0 created, 7 already submitted"),
        "{second:?}"
    );
    assert_eq!(task_count(&pool).await, 7, "the second run created nothing");

    // A bad line: named with its line number, nothing of its batch stored.
    let bad = directory.join("bad.jsonl");
    std::fs::write(
        &bad,
        [
            json!({"pool": "p", "command": ["echo", "new"]}).to_string(),
            json!({"pool": "NOPE", "command": ["true"]}).to_string(),
        ]
        .join("\n"),
    )
    .unwrap();
    let refused = run(&bad).await.unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("bad.jsonl:2:"), "{stderr}");
    assert_eq!(task_count(&pool).await, 7);
    std::fs::remove_dir_all(&directory).unwrap();
    server.stop().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn concurrent_single_submissions_are_stored_together_and_answered_after_the_commit(
    pool: PgPool,
) {
    let server = TestServer::unlimited(pool.clone()).await;
    let (_, key) = server.team_with_key("alice").await;
    // 200 requests at once: 180 without a key, 10 with one key and one body, 10 with another
    // key and two bodies.
    let mut handles = Vec::new();
    for n in 0..200 {
        let client = server.client.clone();
        let url = server.url("/v1/tasks");
        let key = key.clone();
        let db = pool.clone();
        handles.push(tokio::spawn(async move {
            let (body, idempotency_key) = match n {
                0..180 => (
                    json!({"pool": "g", "command": ["echo", n.to_string()]}),
                    None,
                ),
                180..190 => (
                    json!({"pool": "g", "command": ["echo", "same"]}),
                    Some("same"),
                ),
                _ => (
                    json!({"pool": "g", "command": ["echo", (n % 2).to_string()]}),
                    Some("contested"),
                ),
            };
            let mut request = client.post(url).bearer_auth(key).json(&body);
            if let Some(idempotency_key) = idempotency_key {
                request = request.header("Idempotency-Key", idempotency_key);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let replayed = response.headers().contains_key("idempotent-replayed");
            let answer: Value = response.json().await.unwrap();
            if status == 201 {
                // Answered after the commit: another connection sees the row.
                let id: Uuid = answer["id"].as_str().unwrap().parse().unwrap();
                let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE id = $1")
                    .bind(id)
                    .fetch_one(&db)
                    .await
                    .unwrap();
                assert_eq!(
                    stored, 1,
                    "request {n} answered before its row was committed"
                );
            }
            (
                n,
                status,
                replayed,
                answer["id"].as_str().map(str::to_owned),
            )
        }));
    }
    let mut answers = Vec::new();
    for handle in handles {
        answers.push(handle.await.unwrap());
    }
    let plain_created = answers
        .iter()
        .filter(|(n, status, replayed, _)| *n < 180 && *status == 201 && !replayed)
        .count();
    assert_eq!(plain_created, 180);
    // One key, one body: one task, every answer its id.
    let same: Vec<&Option<String>> = answers
        .iter()
        .filter(|(n, ..)| (180..190).contains(n))
        .map(|(_, status, _, id)| {
            assert_eq!(*status, 201);
            id
        })
        .collect();
    assert!(same.iter().all(|id| *id == same[0]));
    assert_eq!(
        answers
            .iter()
            .filter(|(n, _, replayed, _)| (180..190).contains(n) && !replayed)
            .count(),
        1,
        "exactly one request created the task"
    );
    // One key, two bodies: the requests with the body stored first get its task, the others 422.
    let contested: Vec<(u16, Option<String>)> = answers
        .iter()
        .filter(|(n, ..)| *n >= 190)
        .map(|(_, status, _, id)| (*status, id.clone()))
        .collect();
    let winners: Vec<&Option<String>> = contested
        .iter()
        .filter(|(status, _)| *status == 201)
        .map(|(_, id)| id)
        .collect();
    assert_eq!(winners.len(), 5, "{contested:?}");
    assert!(winners.iter().all(|id| *id == winners[0]));
    assert_eq!(
        contested
            .iter()
            .filter(|(status, _)| *status == 422)
            .count(),
        5
    );
    assert_eq!(task_count(&pool).await, 182);

    // Fewer groups than requests: they were stored together.
    let metrics = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let groups: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("controlplane_submit_group_size_count "))
        .expect("the group size histogram")
        .trim()
        .parse()
        .unwrap();
    assert!(groups < 200.0, "{groups} groups for 200 requests");
    server.stop().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn a_batched_report_fences_each_item_on_its_own(pool: PgPool) {
    let server = TestServer::unlimited(pool.clone()).await;
    let (_, key) = server.team_with_key("alice").await;
    let mut tasks = Vec::new();
    for n in 0..6 {
        let body = json!({"pool": "r", "command": ["echo", n.to_string()],
                          "retry": {"max_attempts": 2, "backoff_seconds": 0}});
        let response = server.submit(&key, body).await;
        assert_eq!(response.status(), 201);
        tasks.push(response.json::<Value>().await.unwrap());
    }
    let leases = lease(&server, "r", 10).await;
    assert_eq!(leases.len(), 6);
    let report = |lease: &Value, kind: &str, token: Value| json!({"lease_id": lease["lease_id"], "fencing_token": token, "kind": kind});
    let token = |lease: &Value| lease["fencing_token"].clone();
    let mut complete_0 = report(&leases[0], "complete", token(&leases[0]));
    complete_0["result"] = json!({"n": 0});
    complete_0["output"] = json!("done");
    let mut fail_2 = report(&leases[2], "fail", token(&leases[2]));
    fail_2["error"] = json!("boom");
    let mut heartbeat_4 = report(&leases[4], "heartbeat", token(&leases[4]));
    heartbeat_4["lease_seconds"] = json!(120);
    let body = json!({"reports": [
        complete_0,
        // A stale token fails only its own item.
        report(&leases[1], "complete", json!(token(&leases[1]).as_i64().unwrap() + 7)),
        fail_2,
        report(&leases[3], "release", token(&leases[3])),
        heartbeat_4,
        // Reported twice in one batch: the second is gone.
        report(&leases[0], "complete", token(&leases[0])),
        // Never leased.
        json!({"lease_id": Uuid::now_v7(), "fencing_token": 1, "kind": "heartbeat"}),
        // A failure without its error.
        report(&leases[5], "fail", token(&leases[5])),
    ]});
    let response = post(&server, WORKER_KEY, "/v1/leases/reports", body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let outcomes: Vec<&str> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|result| result["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        [
            "ok",
            "gone",
            "ok",
            "ok",
            "ok",
            "gone",
            "not_found",
            "invalid"
        ],
        "{answer}"
    );
    let results = &answer["results"];
    assert_eq!(results[0]["task_state"], "succeeded");
    assert!(results[1]["detail"].as_str().unwrap().contains("stale"));
    assert_eq!(
        results[2]["task_state"], "queued",
        "retried: a second attempt is allowed"
    );
    assert_eq!(results[3]["task_state"], "queued");
    assert!(results[4]["lease_expires_at"].is_string());
    assert!(results[7]["detail"].as_str().unwrap().contains("error"));

    let state = |id: &Value| {
        let pool = pool.clone();
        let id: Uuid = id.as_str().unwrap().parse().unwrap();
        async move {
            sqlx::query_as::<_, (String, Option<sqlx::types::Json<Value>>, i32)>(
                "SELECT state, result, attempts FROM tasks WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let (s0, result0, _) = state(&leases[0]["task_id"]).await;
    assert_eq!(
        (s0.as_str(), result0.unwrap().0),
        ("succeeded", json!({"n": 0}))
    );
    assert_eq!(
        state(&leases[1]["task_id"]).await.0,
        "leased",
        "the stale item did nothing"
    );
    assert_eq!(state(&leases[2]["task_id"]).await.0, "queued");
    let (s3, _, attempts3) = state(&leases[3]["task_id"]).await;
    assert_eq!(
        (s3.as_str(), attempts3),
        ("queued", 0),
        "a release does not count"
    );
    assert_eq!(state(&leases[4]["task_id"]).await.0, "leased");
    assert_eq!(state(&leases[5]["task_id"]).await.0, "leased");
    // The lease that was reported twice completed once: its task keeps it, and no attempt
    // row was written for it.
    let (succeeded,): (i64,) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM tasks WHERE lease_id = $1::uuid AND state = 'succeeded')
                + (SELECT count(*) FROM task_attempts WHERE lease_id = $1::uuid)",
    )
    .bind(leases[0]["lease_id"].as_str().unwrap())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(succeeded, 1);
    // The counters followed: three leases ended.
    let (active,): (i64,) = sqlx::query_as("SELECT coalesce(sum(active), 0) FROM lease_stripes")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(active, 3);
    // An empty batch is refused as a whole.
    let response = post(
        &server,
        WORKER_KEY,
        "/v1/leases/reports",
        json!({"reports": []}),
    )
    .await;
    common::expect_problem(response, 422).await;
    // A team key cannot report.
    let response = post(&server, &key, "/v1/leases/reports", json!({"reports": []})).await;
    common::expect_problem(response, 403).await;
    server.stop().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn a_success_stays_on_its_task_and_other_ends_write_one_attempt_row_also_for_the_previous_version(
    pool: PgPool,
) {
    let server = TestServer::unlimited(pool.clone()).await;
    let (team_id, key) = team_with_key(&server, "attempts", 1, None).await;
    backlog(&pool, team_id, "a", 4).await;
    let leases = lease(&server, "a", 4).await;
    assert_eq!(leases.len(), 4);
    let attempt_rows = || async {
        sqlx::query_as::<_, (String, Option<String>)>(
            "SELECT lease_id::text, outcome FROM task_attempts ORDER BY lease_id",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let listed = |lease: &Value| {
        let path = format!("/v1/tasks/{}/attempts", lease["task_id"].as_str().unwrap());
        let (server, key) = (&server, &key);
        async move {
            let listed: Value = get(server, key, &path).await.json().await.unwrap();
            listed.as_array().unwrap().clone()
        }
    };
    // A live lease has no row; its task lists it as the current attempt.
    assert!(attempt_rows().await.is_empty());
    let live = listed(&leases[0]).await;
    assert_eq!(live.len(), 1);
    assert_eq!(live[0]["lease_id"], leases[0]["lease_id"]);
    assert_eq!(live[0]["outcome"], Value::Null);
    // The previous version wrote the row when it leased: a server of that version took the
    // second and third leases.
    for lease in &leases[1..3] {
        sqlx::query(
            "INSERT INTO task_attempts (lease_id, task_id, attempt, fencing_token, worker)
             SELECT lease_id, id, attempts, fencing_token, lease_owner FROM tasks
             WHERE lease_id = $1::uuid",
        )
        .bind(lease["lease_id"].as_str().unwrap())
        .execute(&pool)
        .await
        .unwrap();
    }
    // Ended by a batched report (two completions and a failure) and a single completion.
    let report = |lease: &Value, kind: &str| {
        json!({"lease_id": lease["lease_id"], "fencing_token": lease["fencing_token"],
               "kind": kind, "error": (kind == "fail").then_some("exit 1")})
    };
    let response = post(
        &server,
        WORKER_KEY,
        "/v1/leases/reports",
        json!({"reports": [report(&leases[0], "complete"), report(&leases[1], "complete"),
                           report(&leases[3], "fail")]}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert!(
        answer["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|result| result["outcome"] == "ok"),
        "{answer}"
    );
    complete(&server, &leases[2]).await;
    // No row was written for a success; the failure wrote one. The previous version's rows
    // stay as they were.
    let id = |lease: &Value| lease["lease_id"].as_str().unwrap().to_owned();
    let mut expected = vec![
        (id(&leases[1]), None),
        (id(&leases[2]), None),
        (id(&leases[3]), Some("failed".to_owned())),
    ];
    expected.sort();
    assert_eq!(attempt_rows().await, expected);
    // Listed: one attempt each, ended as it ended, after it began.
    for (lease, outcome) in leases
        .iter()
        .zip(["succeeded", "succeeded", "succeeded", "failed"])
    {
        let attempts = listed(lease).await;
        assert_eq!(attempts.len(), 1, "{attempts:?}");
        assert_eq!(attempts[0]["lease_id"], lease["lease_id"]);
        assert_eq!(attempts[0]["outcome"], outcome, "{attempts:?}");
        assert!(
            attempts[0]["finished_at"].as_str() >= attempts[0]["leased_at"].as_str(),
            "{attempts:?}"
        );
    }
    // A report about an ended lease is stale (409, or `gone` in a batch), not unknown.
    let response = post(
        &server,
        WORKER_KEY,
        &format!(
            "/v1/leases/{}/complete",
            leases[0]["lease_id"].as_str().unwrap()
        ),
        json!({"fencing_token": leases[0]["fencing_token"], "result": null}),
    )
    .await;
    let problem = common::expect_problem(response, 409).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("succeeded"),
        "{problem}"
    );
    let response = post(
        &server,
        WORKER_KEY,
        "/v1/leases/reports",
        json!({"reports": [report(&leases[0], "complete"), report(&leases[2], "complete")]}),
    )
    .await;
    let answer: Value = response.json().await.unwrap();
    for result in answer["results"].as_array().unwrap() {
        assert_eq!(result["outcome"], "gone", "{answer}");
        assert!(
            result["detail"].as_str().unwrap().contains("succeeded"),
            "{answer}"
        );
    }
    server.stop().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn a_team_deleted_by_hand_takes_its_tasks_with_it(pool: PgPool) {
    // Tasks keep their team without a foreign key (20261213000000): a trigger on teams
    // deletes a team's tasks, as the key's ON DELETE CASCADE did.
    let server = TestServer::unlimited(pool.clone()).await;
    let (gone, _) = team_with_key(&server, "gone", 1, None).await;
    let (kept, _) = team_with_key(&server, "kept", 1, None).await;
    backlog(&pool, gone, "a", 3).await;
    backlog(&pool, kept, "a", 2).await;
    let leases = lease(&server, "a", 5).await;
    assert_eq!(leases.len(), 5);
    sqlx::query("DELETE FROM teams WHERE id = $1")
        .bind(gone)
        .execute(&pool)
        .await
        .unwrap();
    let left: Vec<Uuid> = sqlx::query_scalar("SELECT DISTINCT team_id FROM tasks")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(left, [kept]);
    assert_eq!(task_count(&pool).await, 2);
    server.stop().await;
}
