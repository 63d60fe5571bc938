//! What the rendered Deployments rely on, through the binary: `migrate` in every API replica at
//! once (the API Deployment's init container), `serve` with a `rediss://` cache (ElastiCache with
//! transit encryption), and `worker --health-listen` (the worker pods' probes) with the worker key
//! in `CONTROLPLANE_WORKER_KEY` (the worker Secret's key). The whole installed system runs in
//! `tests/e2e/installed.rs` (the test kubelet).

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{TestServer, WORKER_KEY};
use controlplane::config::RateLimitConfig;
use sqlx::PgPool;
use stacksmith_testkit::tls::TlsTerminator;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_controlplane");

/// The URL of the per-test database behind `pool`.
fn database_url(pool: &PgPool) -> String {
    let database = pool
        .connect_options()
        .get_database()
        .expect("database name")
        .to_owned();
    let base = stacksmith_testkit::database_url();
    let (server, _) = base.rsplit_once('/').expect("URL with a database path");
    format!("{server}/{database}")
}

/// `GET path` on `address` with a short timeout: the status, or None when nothing answers.
async fn status_of(address: &str, path: &str) -> Option<u16> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let response = client
        .get(format!("http://{address}{path}"))
        .send()
        .await
        .ok()?;
    Some(response.status().as_u16())
}

/// Polls `GET path` until it answers `want` (bounded by `limit`); the last status seen otherwise.
async fn wait_status(address: &str, path: &str, want: u16, limit: Duration) -> Option<u16> {
    let deadline = Instant::now() + limit;
    loop {
        let status = status_of(address, path).await;
        if status == Some(want) || Instant::now() >= deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[sqlx::test(migrations = false)]
async fn every_replica_migrates_at_once_on_a_fresh_database(pool: PgPool) {
    // Each API replica's init container runs `migrate` when a rollout starts them together.
    let url = database_url(&pool);
    let replicas: Vec<_> = (0..8)
        .map(|_| {
            Command::new(BIN)
                .arg("migrate")
                .env("DATABASE_URL", &url)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("start migrate")
        })
        .collect();
    for replica in replicas {
        let output = tokio::time::timeout(Duration::from_secs(60), replica.wait_with_output())
            .await
            .expect("migrate finishes")
            .unwrap();
        assert!(
            output.status.success(),
            "a concurrent migrate failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // One schema: each migration recorded once, all successful.
    let versions: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    let distinct: std::collections::BTreeSet<i64> = versions.iter().map(|(v, _)| *v).collect();
    assert_eq!(distinct.len(), versions.len(), "{versions:?}");
    assert!(versions.iter().all(|(_, ok)| *ok), "{versions:?}");
    assert!(
        controlplane::store::migrations_applied(&pool)
            .await
            .unwrap()
    );
}

/// Starts `controlplane serve` with `redis_url`, trusting `ca_file` when given.
fn serve(
    database_url: &str,
    redis_url: &str,
    port: u16,
    ca_file: Option<&std::path::Path>,
) -> tokio::process::Child {
    let mut command = Command::new(BIN);
    command
        .arg("serve")
        .env_clear()
        .env("DATABASE_URL", database_url)
        .env("REDIS_URL", redis_url)
        .env("CONTROLPLANE_LISTEN", format!("127.0.0.1:{port}"))
        .env("CONTROLPLANE_REDIS_PREFIX", format!("tls-{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(ca) = ca_file {
        command.env("SSL_CERT_FILE", ca);
    }
    command.spawn().expect("start serve")
}

#[sqlx::test]
async fn serve_uses_a_rediss_url_through_tls(pool: PgPool) {
    // ElastiCache with transit encryption: `up` records a `rediss://` URL.
    let redis: std::net::SocketAddr = {
        let url = stacksmith_testkit::redis_url();
        let hostport = url.trim_start_matches("redis://").trim_end_matches('/');
        tokio::net::lookup_host(hostport)
            .await
            .unwrap()
            .next()
            .unwrap()
    };
    let dir = std::env::temp_dir().join(format!("stacksmith-tls-{}", std::process::id()));
    let terminator =
        TlsTerminator::start("127.0.0.1:0".parse().unwrap(), &["localhost"], redis, &dir).unwrap();
    let rediss = format!("rediss://localhost:{}", terminator.address().port());
    let url = database_url(&pool);

    let port = free_port();
    let mut trusted = serve(&url, &rediss, port, Some(terminator.ca_file()));
    let address = format!("127.0.0.1:{port}");
    let ready = wait_status(&address, "/readyz", 200, Duration::from_secs(30)).await;
    if ready != Some(200) {
        trusted.start_kill().unwrap();
        let output = trusted.wait_with_output().await.unwrap();
        panic!(
            "serve with {rediss} is not ready ({ready:?}): {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    trusted.start_kill().unwrap();
    let _ = trusted.wait().await;

    // TLS is really spoken: without the CA, the certificate is refused and serve exits.
    let port = free_port();
    let untrusted = serve(&url, &rediss, port, None);
    let output = tokio::time::timeout(Duration::from_secs(30), untrusted.wait_with_output())
        .await
        .expect("serve exits when it cannot verify the cache's certificate")
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("certificate") || stderr.contains("Certificate"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[sqlx::test]
async fn a_worker_serves_its_probes_where_the_pod_looks(pool: PgPool) {
    let mut config = common::config(RateLimitConfig::disabled());
    config.scheduler.poll_interval_ms = 200;
    let server = TestServer::start(pool, config).await;
    let worker = |key: &str, port: u16| {
        // As the worker pod runs it: the key from the worker Secret's CONTROLPLANE_WORKER_KEY.
        Command::new(BIN)
            .args(["worker", "--url", &server.base, "--pool", "probes"])
            .args(["--wait-seconds", "1"])
            .args(["--health-listen", &format!("127.0.0.1:{port}")])
            .env_clear()
            .env("CONTROLPLANE_WORKER_KEY", key)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start the worker")
    };
    let port = free_port();
    let mut good = worker(WORKER_KEY, port);
    let address = format!("127.0.0.1:{port}");
    assert_eq!(
        wait_status(&address, "/healthz", 200, Duration::from_secs(20)).await,
        Some(200)
    );
    assert_eq!(
        wait_status(&address, "/readyz", 200, Duration::from_secs(20)).await,
        Some(200),
        "ready once the API answers its lease requests"
    );

    // A key the API refuses: alive, never ready (the rollout wait reports it).
    let bad_port = free_port();
    let mut bad = worker("not-the-worker-key-but-long-enough-000000", bad_port);
    let bad_address = format!("127.0.0.1:{bad_port}");
    assert_eq!(
        wait_status(&bad_address, "/healthz", 200, Duration::from_secs(20)).await,
        Some(200)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(status_of(&bad_address, "/readyz").await, Some(503));

    // SIGTERM: stops leasing, no longer ready while it drains.
    for child in [&mut good, &mut bad] {
        let pid = child.id().unwrap().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
    }
    for child in [&mut good, &mut bad] {
        let exited = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
        assert!(exited.is_ok(), "the worker exits after SIGTERM");
    }
    server.stop().await;
}

/// Starts a `controlplane serve` replica on `port` with the per-client limit (1 rps, burst 3)
/// and `trusted` proxies, its limits shared with every replica of Redis key `prefix`.
fn serve_limited(
    database_url: &str,
    port: u16,
    prefix: &str,
    trusted: &str,
) -> tokio::process::Child {
    Command::new(BIN)
        .arg("serve")
        .env_clear()
        .env("DATABASE_URL", database_url)
        .env("REDIS_URL", stacksmith_testkit::redis_url())
        .env("CONTROLPLANE_LISTEN", format!("127.0.0.1:{port}"))
        .env("CONTROLPLANE_REDIS_PREFIX", prefix)
        .env("CONTROLPLANE_RATE_PER_CLIENT_RPS", "1")
        .env("CONTROLPLANE_RATE_PER_CLIENT_BURST", "3")
        .env("CONTROLPLANE_TRUSTED_PROXIES", trusted)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start serve")
}

/// Issue 16 item 9: the per-client (per address) limit holds across API replicas, and behind a
/// load balancer each client gets its own bucket. Two `serve` processes share one Redis, as the
/// API's replicas do. A client connecting from 127.0.0.1 (not a trusted proxy) gets one burst
/// from both replicas together, whatever `X-Forwarded-For` it sends; connections from 127.0.0.2
/// (the trusted proxy, as an ALB in the public subnets) count against the address its header
/// names, so two clients behind it have a bucket each. The limit is checked before
/// authentication: an allowed request without a key answers 401, a limited one 429.
#[sqlx::test(migrations = "./migrations")]
async fn the_per_client_limit_holds_across_replicas_and_behind_a_trusted_proxy(pool: PgPool) {
    let url = database_url(&pool);
    let prefix = stacksmith_testkit::unique_name("client-limit");
    let ports = [free_port(), free_port()];
    let mut replicas: Vec<_> = ports
        .iter()
        .map(|port| serve_limited(&url, *port, &prefix, "127.0.0.2/32"))
        .collect();
    for port in ports {
        let address = format!("127.0.0.1:{port}");
        let ready = wait_status(&address, "/readyz", 200, Duration::from_secs(30)).await;
        assert_eq!(ready, Some(200), "replica on {port} is not ready");
    }
    let from = |source: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(source))
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    };
    let direct = from([127, 0, 0, 1]);
    let proxy = from([127, 0, 0, 2]);
    async fn status(client: &reqwest::Client, port: u16, forwarded: Option<&str>) -> u16 {
        let mut request = client
            .post(format!("http://127.0.0.1:{port}/v1/tasks"))
            .json(&common::task("p"));
        if let Some(value) = forwarded {
            request = request.header("x-forwarded-for", value);
        }
        request.send().await.expect("request").status().as_u16()
    }

    // An untrusted peer: its forged X-Forwarded-For is ignored, and the two replicas share one
    // burst of 3 for its address.
    let mut statuses = Vec::new();
    for i in 0..4 {
        let forged = format!("198.51.100.{i}");
        statuses.push(status(&direct, ports[i % 2], Some(&forged)).await);
    }
    assert_eq!(
        statuses,
        [401, 401, 401, 429],
        "one burst for 127.0.0.1 on both replicas"
    );

    // Behind the trusted proxy: the client its header names has a bucket of its own, shared by
    // the replicas too.
    let mut first = Vec::new();
    for i in 0..4 {
        first.push(status(&proxy, ports[i % 2], Some("203.0.113.1")).await);
    }
    assert_eq!(
        first,
        [401, 401, 401, 429],
        "203.0.113.1 gets one burst on both replicas"
    );
    // Another client behind the same proxy is not limited by the first one's requests; the
    // load balancer appends what it saw, so a client's own forged entry on the left is skipped.
    assert_eq!(
        status(&proxy, ports[1], Some("192.0.2.99, 203.0.113.2")).await,
        401,
        "203.0.113.2 has its own bucket"
    );
    // The proxy's own bucket is untouched by its clients' requests.
    assert_eq!(status(&proxy, ports[0], None).await, 401);

    for replica in &mut replicas {
        let _ = replica.start_kill();
    }
    for replica in replicas {
        let _ = tokio::time::timeout(Duration::from_secs(10), replica.wait_with_output()).await;
    }
}
