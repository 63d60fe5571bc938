//! The control API against real Postgres (a database per test) and Redis (a key prefix per test).

mod common;

use std::collections::HashSet;

use common::{ADMIN_KEY, TestServer, expect_problem, task};
use controlplane::config::{Config, RateLimitConfig};
use serde_json::{Value, json};
use sqlx::PgPool;

#[sqlx::test(migrations = "./migrations")]
async fn a_team_never_sees_another_teams_tasks(pool: PgPool) {
    let server = TestServer::unlimited(pool).await;
    let (_, alice) = server.team_with_key("alice").await;
    let (_, bob) = server.team_with_key("bob").await;
    let created = server.submit(&alice, task("build")).await;
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let task_json: Value = created.json().await.unwrap();
    let id = task_json["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/tasks/{id}"));
    assert_eq!(task_json["state"], "queued");

    let get = |key: &str| {
        server
            .client
            .get(server.url(&location))
            .bearer_auth(key)
            .send()
    };
    assert_eq!(get(&alice).await.unwrap().status(), 200);
    expect_problem(get(&bob).await.unwrap(), 404).await;

    let list = |key: &str| {
        server
            .client
            .get(server.url("/v1/tasks"))
            .bearer_auth(key)
            .send()
    };
    let bob_list: Value = list(&bob).await.unwrap().json().await.unwrap();
    assert_eq!(bob_list["items"], json!([]));
    let alice_list: Value = list(&alice).await.unwrap().json().await.unwrap();
    assert_eq!(alice_list["items"][0]["id"], id.as_str());

    let cancel = |key: &str| {
        server
            .client
            .post(server.url(&format!("/v1/tasks/{id}/cancel")))
            .bearer_auth(key)
            .send()
    };
    expect_problem(cancel(&bob).await.unwrap(), 404).await;
    let cancelled: Value = cancel(&alice).await.unwrap().json().await.unwrap();
    assert_eq!(cancelled["state"], "cancelled");
    // Cancelling again is harmless.
    assert_eq!(cancel(&alice).await.unwrap().status(), 200);
    server.stop().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn admin_manages_teams_and_a_revoked_key_stops_working(pool: PgPool) {
    let server = TestServer::unlimited(pool).await;
    let admin_post = |path: &str, body: Value| {
        server
            .client
            .post(server.url(path))
            .bearer_auth(ADMIN_KEY)
            .json(&body)
            .send()
    };
    let team: Value = admin_post("/v1/teams", json!({"name": "payments"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let team_id = team["id"].as_str().unwrap();
    expect_problem(
        admin_post("/v1/teams", json!({"name": "payments"}))
            .await
            .unwrap(),
        409,
    )
    .await;

    let created = admin_post(&format!("/v1/teams/{team_id}/keys"), json!({"name": "ci"}))
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let key: Value = created.json().await.unwrap();
    let secret = key["key"].as_str().unwrap().to_owned();
    assert!(secret.starts_with(key["prefix"].as_str().unwrap()));
    // Only the digest is stored.
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE key_hash = sha256($1::bytea)")
            .bind(secret.as_bytes())
            .fetch_one(&server.pool)
            .await
            .unwrap();
    assert_eq!(stored, 1);

    assert_eq!(server.submit(&secret, task("p")).await.status(), 201);
    // A team key cannot administer; the admin key owns no tasks; no key is a 401.
    let as_team = server
        .client
        .post(server.url("/v1/teams"))
        .bearer_auth(&secret)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    expect_problem(as_team, 403).await;
    expect_problem(server.submit(ADMIN_KEY, task("p")).await, 403).await;
    let anonymous = server
        .client
        .get(server.url("/v1/tasks"))
        .send()
        .await
        .unwrap();
    expect_problem(anonymous, 401).await;
    expect_problem(
        admin_post(
            &format!("/v1/teams/{}/keys", uuid::Uuid::now_v7()),
            json!({"name": "k"}),
        )
        .await
        .unwrap(),
        404,
    )
    .await;

    let key_id = key["id"].as_str().unwrap();
    let revoke = server
        .client
        .delete(server.url(&format!("/v1/teams/{team_id}/keys/{key_id}")))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 204);
    expect_problem(server.submit(&secret, task("p")).await, 401).await;
    server.stop().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn idempotency_key_replays_the_first_response(pool: PgPool) {
    let server = TestServer::unlimited(pool).await;
    let (_, key) = server.team_with_key("team").await;
    let post = |idempotency: &str, body: Value| {
        server
            .client
            .post(server.url("/v1/tasks"))
            .bearer_auth(&key)
            .header("idempotency-key", idempotency)
            .json(&body)
            .send()
    };
    // Concurrent first uses of one key create exactly one task.
    let (first, second) = tokio::join!(post("k-1", task("p")), post("k-1", task("p")));
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (201, 201)
    );
    let first: Value = first.json().await.unwrap();
    let second: Value = second.json().await.unwrap();
    assert_eq!(first, second);

    let replay = post("k-1", task("p")).await.unwrap();
    assert_eq!(replay.status(), 201);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.json::<Value>().await.unwrap(), first);

    let problem = expect_problem(post("k-1", task("other")).await.unwrap(), 422).await;
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("idempotency-key-reused")
    );
    assert_eq!(post("k-2", task("p")).await.unwrap().status(), 201);
    expect_problem(post("bad key with spaces", task("p")).await.unwrap(), 400).await;

    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(&server.pool)
        .await
        .unwrap();
    assert_eq!(count, 2);
    server.stop().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn listing_pages_through_every_task_once_with_filters(pool: PgPool) {
    let server = TestServer::unlimited(pool).await;
    let (_, key) = server.team_with_key("team").await;
    let mut created = Vec::new();
    for index in 0..7 {
        let pool_name = if index % 2 == 0 { "even" } else { "odd" };
        let body: Value = server
            .submit(&key, task(pool_name))
            .await
            .json()
            .await
            .unwrap();
        created.push(body["id"].as_str().unwrap().to_owned());
    }
    let list = |query: String| {
        let request = server
            .client
            .get(server.url(&format!("/v1/tasks?{query}")))
            .bearer_auth(&key);
        async move { request.send().await.unwrap() }
    };
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &cursor {
            Some(cursor) => format!("limit=3&cursor={cursor}"),
            None => "limit=3".to_owned(),
        };
        let page: Value = list(query).await.json().await.unwrap();
        pages += 1;
        for item in page["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(pages, 3);
    created.reverse(); // Newest first.
    assert_eq!(seen, created);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 7);

    let odd: Value = list("pool=odd".to_owned()).await.json().await.unwrap();
    assert_eq!(odd["items"].as_array().unwrap().len(), 3);
    let cancel = server
        .client
        .post(server.url(&format!("/v1/tasks/{}/cancel", created[0])))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);
    let cancelled: Value = list("state=cancelled".to_owned())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cancelled["items"][0]["id"], created[0].as_str());
    assert_eq!(cancelled["items"].as_array().unwrap().len(), 1);
    let queued_even: Value = list("state=queued&pool=even".to_owned())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(queued_even["items"].as_array().unwrap().len(), 3);

    expect_problem(list("cursor=%21%21".to_owned()).await, 400).await;
    expect_problem(list("limit=0".to_owned()).await, 400).await;
    expect_problem(list("limit=abc".to_owned()).await, 400).await;
    expect_problem(list("state=sleeping".to_owned()).await, 400).await;
    server.stop().await;
}

fn header(response: &reqwest::Response, name: &str) -> u64 {
    response.headers()[name].to_str().unwrap().parse().unwrap()
}

#[sqlx::test(migrations = "./migrations")]
async fn per_key_limit_answers_429_with_rate_limit_headers(pool: PgPool) {
    let server = TestServer::with_rate_limit(
        pool,
        RateLimitConfig {
            per_key_rps: 1,
            burst: 3,
            ..RateLimitConfig::disabled()
        },
    )
    .await;
    let (_, key) = server.team_with_key("team").await;
    let (_, other_key) = server.team_with_key("other").await;
    // The burst (3) passes at once; within the next second (1 rps) the 4th request is refused.
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let response = server.submit(&key, task("p")).await;
        assert_eq!(response.status(), 201);
        assert_eq!(header(&response, "ratelimit-limit"), 3);
        remaining.push(header(&response, "ratelimit-remaining"));
    }
    assert_eq!(remaining, [2, 1, 0]);
    let limited = server.submit(&key, task("p")).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(header(&limited, "retry-after"), 1);
    assert_eq!(header(&limited, "ratelimit-limit"), 3);
    assert_eq!(header(&limited, "ratelimit-remaining"), 0);
    assert_eq!(header(&limited, "ratelimit-reset"), 1);
    expect_problem(limited, 429).await;
    // Another key has its own quota.
    assert_eq!(server.submit(&other_key, task("p")).await.status(), 201);

    let metrics = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(|line| line.starts_with("controlplane_rate_limited_requests_total{scope=\"key\"}")),
        "{metrics}"
    );
    server.stop().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn global_and_per_client_limits_apply(pool: PgPool) {
    let pool_for_second_server = pool.clone();
    let global = TestServer::with_rate_limit(
        pool.clone(),
        RateLimitConfig {
            global_rps: 2,
            ..RateLimitConfig::disabled()
        },
    )
    .await;
    let (_, first) = global.team_with_key("first").await;
    let (_, second) = global.team_with_key("second").await;
    assert_eq!(global.submit(&first, task("p")).await.status(), 201);
    assert_eq!(global.submit(&second, task("p")).await.status(), 201);
    let limited = global.submit(&first, task("p")).await;
    assert!(limited.headers().contains_key("retry-after"));
    expect_problem(limited, 429).await;
    global.stop().await;

    // Per client address, before authentication: a flood of bad keys is limited too.
    let per_client = TestServer::with_rate_limit(
        pool,
        RateLimitConfig {
            per_client_rps: 1,
            per_client_burst: 2,
            ..RateLimitConfig::disabled()
        },
    )
    .await;
    expect_problem(per_client.submit("sk_wrong", task("p")).await, 401).await;
    expect_problem(per_client.submit("sk_wrong", task("p")).await, 401).await;
    let limited = per_client.submit("sk_wrong", task("p")).await;
    assert_eq!(header(&limited, "ratelimit-limit"), 2);
    expect_problem(limited, 429).await;
    per_client.stop().await;

    // A known key's limits are checked in one call: the client address's limit still applies.
    let known = TestServer::with_rate_limit(
        pool_for_second_server,
        RateLimitConfig {
            per_client_rps: 1,
            per_client_burst: 2,
            ..RateLimitConfig::disabled()
        },
    )
    .await;
    let (_, key) = known.team_with_key("known").await;
    assert_eq!(known.submit(&key, task("p")).await.status(), 201);
    assert_eq!(known.submit(&key, task("p")).await.status(), 201);
    let limited = known.submit(&key, task("p")).await;
    assert_eq!(header(&limited, "ratelimit-limit"), 2);
    let problem = expect_problem(limited, 429).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("client"),
        "{problem}"
    );
    known.stop().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn a_key_revoked_elsewhere_stops_working_within_the_key_cache_time(pool: PgPool) {
    // Revoked on another replica or with `controlplane keys revoke`: this server trusts the key
    // it found valid for `api_key_cache_ms`, then asks the database again.
    let server = TestServer::start(
        pool.clone(),
        Config {
            api_key_cache_ms: 500,
            ..common::config(RateLimitConfig::disabled())
        },
    )
    .await;
    let (_, key) = server.team_with_key("cached").await;
    assert_eq!(server.submit(&key, task("p")).await.status(), 201);
    let key_id: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM api_keys WHERE key_hash = sha256($1::bytea)")
            .bind(key.as_bytes())
            .fetch_one(&pool)
            .await
            .unwrap();
    controlplane::store::api_keys::revoke(&pool, key_id, None)
        .await
        .unwrap()
        .unwrap();
    let revoked = std::time::Instant::now();
    let refused_after = loop {
        let response = server.submit(&key, task("p")).await;
        if response.status() == 401 {
            break revoked.elapsed();
        }
        assert_eq!(response.status(), 201);
        assert!(
            revoked.elapsed() < std::time::Duration::from_secs(5),
            "the revoked key still works after 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        refused_after < std::time::Duration::from_millis(500 + 1_000),
        "refused after {refused_after:?}"
    );
    server.stop().await;

    // With the cache off, at once.
    let uncached = TestServer::start(
        pool.clone(),
        Config {
            api_key_cache_ms: 0,
            ..common::config(RateLimitConfig::disabled())
        },
    )
    .await;
    let (_, key) = uncached.team_with_key("uncached").await;
    assert_eq!(uncached.submit(&key, task("p")).await.status(), 201);
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE key_hash = sha256($1::bytea)")
        .bind(key.as_bytes())
        .execute(&pool)
        .await
        .unwrap();
    expect_problem(uncached.submit(&key, task("p")).await, 401).await;
    uncached.stop().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn client_mistakes_are_problem_json_4xx(pool: PgPool) {
    let server = TestServer::unlimited(pool).await;
    let (_, key) = server.team_with_key("team").await;
    let raw = |content_type: &str, body: String| {
        server
            .client
            .post(server.url("/v1/tasks"))
            .bearer_auth(&key)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let malformed = raw("application/json", "{\"pool\": ".to_owned())
        .await
        .unwrap();
    expect_problem(malformed, 400).await;
    let unknown = raw(
        "application/json",
        json!({"pool": "p", "command": ["x"], "shell": true}).to_string(),
    )
    .await
    .unwrap();
    let problem = expect_problem(unknown, 422).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("unknown field"),
        "{problem}"
    );
    // The test server's body limit is 16 KiB.
    let oversized = raw(
        "application/json",
        json!({"pool": "p", "command": ["x".repeat(20_000)]}).to_string(),
    )
    .await
    .unwrap();
    expect_problem(oversized, 413).await;
    let wrong_type = raw("text/plain", task("p").to_string()).await.unwrap();
    expect_problem(wrong_type, 415).await;
    let wrong_types = raw(
        "application/json",
        json!({"pool": 1, "command": "echo"}).to_string(),
    )
    .await
    .unwrap();
    expect_problem(wrong_types, 422).await;

    let too_many_args: Vec<String> = (0..300).map(|i| i.to_string()).collect();
    expect_problem(
        server
            .submit(&key, json!({"pool": "p", "command": too_many_args}))
            .await,
        422,
    )
    .await;
    let huge_env: serde_json::Map<String, Value> =
        (0..200).map(|i| (format!("V{i}"), json!("x"))).collect();
    expect_problem(
        server
            .submit(
                &key,
                json!({"pool": "p", "command": ["x"], "env": huge_env}),
            )
            .await,
        422,
    )
    .await;
    expect_problem(
        server
            .submit(&key, json!({"pool": "p", "command": ["a\u{0}b"]}))
            .await,
        422,
    )
    .await;
    expect_problem(
        server
            .submit(&key, json!({"pool": "Bad Pool", "command": ["x"]}))
            .await,
        422,
    )
    .await;
    expect_problem(
        server
            .submit(
                &key,
                json!({"pool": "p", "command": ["x"], "timeout_seconds": 0}),
            )
            .await,
        422,
    )
    .await;

    let bad_path = server
        .client
        .get(server.url("/v1/tasks/not-a-uuid"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    expect_problem(bad_path, 400).await;
    let no_route = server
        .client
        .get(server.url("/v1/nothing"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    expect_problem(no_route, 404).await;
    let wrong_method = server
        .client
        .put(server.url("/v1/tasks"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    expect_problem(wrong_method, 405).await;
    server.stop().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn probes_metrics_openapi_and_offline_docs(pool: PgPool) {
    let server = TestServer::unlimited(pool).await;
    let (_, key) = server.team_with_key("team").await;
    for probe in ["/healthz", "/readyz", "/startupz"] {
        let response = server.client.get(server.url(probe)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{probe}");
    }
    let ready: Value = server
        .client
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"], json!({"postgres": "ok", "redis": "ok"}));

    let created: Value = server
        .submit(&key, task("metrics-pool"))
        .await
        .json()
        .await
        .unwrap();
    // Task events go to the Redis stream under this server's key prefix.
    let mut redis = server.redis.clone();
    let events: i64 = redis::cmd("XLEN")
        .arg(format!("{}:task-events", server.redis_prefix))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(events, 1);
    assert_eq!(created["pool"], "metrics-pool");

    let metrics = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        "controlplane_http_requests_total{method=\"POST\",route=\"/v1/tasks\",status=\"201\"}",
        "controlplane_http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/tasks\"",
        "controlplane_tasks{state=\"queued\"}",
        "controlplane_queue_depth{pool=\"metrics-pool\"} 1",
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected} in\n{metrics}"
        );
    }

    let document: Value = server
        .client
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/tasks",
        "/v1/tasks/{task_id}",
        "/v1/tasks/{task_id}/cancel",
        "/v1/teams",
        "/healthz",
    ] {
        assert!(
            document["paths"][path].is_object(),
            "{path} missing from the document"
        );
    }
    // The docs page and its assets are served from the binary (no CDN).
    let page = server
        .client
        .get(server.url("/docs/"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("://cdn") && !html.contains("unpkg.com"),
        "{html}"
    );
    for asset in ["/docs/swagger-ui-bundle.js", "/docs/swagger-initializer.js"] {
        let response = server.client.get(server.url(asset)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{asset}");
        let body = response.text().await.unwrap();
        if asset.ends_with("initializer.js") {
            assert!(body.contains("/openapi.json"), "{body}");
        }
    }
    server.stop().await;
}

/// Issue 16 item 11: every replica checks the same Postgres and Redis, so a readiness that failed
/// while they are slow would take every replica out of the Service at once. A slow dependency
/// keeps `/readyz` at 200 (`degraded`, the check `slow`), within the rendered probe's 5 s timeout;
/// `/startupz` still waits for every check to be `ok`.
#[sqlx::test(migrations = "./migrations")]
async fn slow_dependencies_keep_the_api_ready_within_the_probe_timeout(pool: PgPool) {
    use std::net::ToSocketAddrs;
    use std::time::{Duration, Instant};

    let redis_target = reqwest::Url::parse(&stacksmith_testkit::redis_url()).unwrap();
    let redis_proxy = common::StallProxy::start(
        (
            redis_target.host_str().unwrap(),
            redis_target.port().unwrap_or(6379),
        )
            .to_socket_addrs()
            .unwrap()
            .next()
            .unwrap(),
    )
    .await;
    let mut proxied = redis_target.clone();
    proxied.set_host(Some("127.0.0.1")).unwrap();
    proxied.set_port(Some(redis_proxy.addr.port())).unwrap();
    let redis = redis::Client::open(proxied.as_str())
        .unwrap()
        .get_connection_manager()
        .await
        .expect("Redis through the proxy");

    let options = pool.connect_options();
    let database_proxy = common::StallProxy::start(
        (options.get_host(), options.get_port())
            .to_socket_addrs()
            .unwrap()
            .next()
            .unwrap(),
    )
    .await;
    let slow_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(
            (*options)
                .clone()
                .host("127.0.0.1")
                .port(database_proxy.addr.port()),
        )
        .await
        .expect("Postgres through the proxy");

    let config = common::config(RateLimitConfig::disabled());
    let server = TestServer::start_with(slow_pool, config, redis).await;
    let probe = |path: &'static str| {
        let request = server.client.get(server.url(path));
        async move {
            let started = Instant::now();
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (status, body, started.elapsed())
        }
    };
    let (status, body, _) = probe("/readyz").await;
    assert_eq!((status, &body["status"]), (200, &json!("ok")), "{body}");

    redis_proxy.stall(true);
    database_proxy.stall(true);
    let (status, body, took) = probe("/readyz").await;
    assert_eq!(
        status, 200,
        "a slow database and cache keep the API ready: {body}"
    );
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["checks"], json!({"postgres": "slow", "redis": "slow"}));
    assert!(
        took < Duration::from_secs(5),
        "/readyz answered after {took:?}, beyond the probe's timeoutSeconds: 5"
    );

    redis_proxy.stall(false);
    database_proxy.stall(false);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body, _) = probe("/readyz").await;
        if status == 200 && body["status"] == "ok" {
            break;
        }
        assert!(Instant::now() < deadline, "never ok again: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.stop().await;
}

/// Issue 16 item 9: the per-key and global limits the stack states hold for the whole API, not
/// per replica: two servers sharing Redis (as the API's replicas do) admit one key's burst once
/// between them, and the global rate once between them.
#[sqlx::test(migrations = "./migrations")]
async fn limits_hold_across_replicas_sharing_redis(pool: PgPool) {
    let per_key = common::config(RateLimitConfig {
        per_key_rps: 1,
        burst: 3,
        ..RateLimitConfig::disabled()
    });
    let first = TestServer::start(pool.clone(), per_key.clone()).await;
    let second = TestServer::start(pool.clone(), per_key).await;
    let (_, key) = first.team_with_key("team").await;
    let (_, other_key) = first.team_with_key("other").await;
    let mut statuses = Vec::new();
    let mut remaining = Vec::new();
    for i in 0..4 {
        let server = if i % 2 == 0 { &first } else { &second };
        let response = server.submit(&key, task("p")).await;
        statuses.push(response.status().as_u16());
        if response.status() == 201 {
            remaining.push(header(&response, "ratelimit-remaining"));
        } else {
            assert_eq!(header(&response, "retry-after"), 1);
            expect_problem(response, 429).await;
        }
    }
    assert_eq!(
        statuses,
        [201, 201, 201, 429],
        "one burst of 3 for both replicas"
    );
    assert_eq!(remaining, [2, 1, 0]);
    // Another key has its own quota, on either replica.
    assert_eq!(second.submit(&other_key, task("p")).await.status(), 201);
    first.stop().await;
    second.stop().await;

    let global = common::config(RateLimitConfig {
        global_rps: 2,
        ..RateLimitConfig::disabled()
    });
    let first = TestServer::start(pool.clone(), global.clone()).await;
    let second = TestServer::start(pool, global).await;
    let (_, a) = first.team_with_key("a").await;
    let (_, b) = first.team_with_key("b").await;
    assert_eq!(first.submit(&a, task("p")).await.status(), 201);
    assert_eq!(second.submit(&b, task("p")).await.status(), 201);
    let limited = second.submit(&a, task("p")).await;
    assert!(limited.headers().contains_key("retry-after"));
    let problem = expect_problem(limited, 429).await;
    assert!(problem.to_string().contains("global"), "{problem}");
    first.stop().await;
    second.stop().await;
}
