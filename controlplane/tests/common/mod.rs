//! Starts a control plane in process on 127.0.0.1:0 against a test database and Redis.
#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::net::SocketAddr;
use std::time::Duration;

use controlplane::config::{Config, HttpLimits, RateLimitConfig, Secret};
use controlplane::{AppState, ServeError, Server};
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

pub const ADMIN_KEY: &str = "test-admin-key-0123456789abcdef-0123456789";
pub const WORKER_KEY: &str = "test-worker-key-0123456789abcdef-0123456789";

pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    pub pool: PgPool,
    pub redis: redis::aio::ConnectionManager,
    pub redis_prefix: String,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), ServeError>>>,
}

pub fn config(rate_limit: RateLimitConfig) -> Config {
    Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        database_url: Secret::new(stacksmith_testkit::database_url()),
        redis_url: Secret::new(stacksmith_testkit::redis_url()),
        redis_key_prefix: stacksmith_testkit::unique_name("cp_test"),
        admin_key: Some(Secret::new(ADMIN_KEY)),
        worker_key: Some(Secret::new(WORKER_KEY)),
        rate_limit,
        limits: HttpLimits {
            body_limit_bytes: 16 * 1024,
            ..HttpLimits::default()
        },
        shutdown_grace_ms: 5_000,
        ..Config::default()
    }
}

pub async fn redis_connection() -> redis::aio::ConnectionManager {
    redis::Client::open(stacksmith_testkit::redis_url())
        .expect("Redis URL")
        .get_connection_manager()
        .await
        .expect("Redis reachable")
}

impl TestServer {
    pub async fn start(pool: PgPool, config: Config) -> Self {
        let redis = redis_connection().await;
        Self::start_with(pool, config, redis).await
    }

    /// Starts a server on this database pool and Redis connection (e.g. through a
    /// [`StallProxy`]).
    pub async fn start_with(
        pool: PgPool,
        config: Config,
        redis: redis::aio::ConnectionManager,
    ) -> Self {
        let redis_prefix = config.redis_key_prefix.clone();
        let state = AppState::new(config, pool.clone(), redis.clone());
        let server = Server::bind(state).await.expect("bind 127.0.0.1:0");
        let base = format!("http://{}", server.local_addr().expect("local address"));
        let (shutdown, stop) = oneshot::channel::<()>();
        let handle = tokio::spawn(server.run(async move {
            let _ = stop.await;
        }));
        Self {
            base,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("HTTP client"),
            pool,
            redis,
            redis_prefix,
            shutdown: Some(shutdown),
            handle: Some(handle),
        }
    }

    pub async fn with_rate_limit(pool: PgPool, rate_limit: RateLimitConfig) -> Self {
        Self::start(pool, config(rate_limit)).await
    }

    pub async fn unlimited(pool: PgPool) -> Self {
        Self::with_rate_limit(pool, RateLimitConfig::disabled()).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Creates a team and a key directly in the database; returns (team id, key).
    pub async fn team_with_key(&self, name: &str) -> (Uuid, String) {
        let team = controlplane::store::teams::create(&self.pool, name)
            .await
            .expect("create team");
        let key = controlplane::store::api_keys::create(&self.pool, team.id, "test")
            .await
            .expect("create key")
            .expect("team exists");
        (team.id, key.secret.expose().to_owned())
    }

    pub async fn submit(&self, key: &str, body: serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/tasks"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    /// Stops the server and waits for it (bounded), then deletes its Redis keys.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(15), handle)
                .await
                .expect("server stops within its grace period")
                .expect("server task")
                .expect("server result");
        }
        let _: redis::RedisResult<i64> = redis::cmd("DEL")
            .arg(format!("{}:task-events", self.redis_prefix))
            .query_async(&mut self.redis)
            .await;
    }
}

/// `POST /v1/leases` at `url` with the worker key and `body`: the leases granted (a 200 is
/// expected). Takes the client and URL rather than the server, so it can run in a spawned task.
pub async fn request_leases(
    client: &reqwest::Client,
    url: &str,
    body: serde_json::Value,
) -> Vec<serde_json::Value> {
    let response = client
        .post(url)
        .bearer_auth(WORKER_KEY)
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200, "POST /v1/leases");
    let body: serde_json::Value = response.json().await.expect("JSON body");
    body["leases"].as_array().expect("leases").clone()
}

pub fn task(pool: &str) -> serde_json::Value {
    serde_json::json!({"pool": pool, "command": ["echo", "hello"]})
}

/// Asserts an RFC 9457 problem response with `status`, and returns its document.
pub async fn expect_problem(response: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(
        response.status().as_u16(),
        status,
        "status of {}",
        response.url()
    );
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("x-request-id header")
        .to_owned();
    let problem: serde_json::Value = response.json().await.expect("problem JSON");
    assert_eq!(problem["status"], status);
    assert!(
        problem["type"].is_string() && problem["title"].is_string(),
        "{problem}"
    );
    assert!(problem["instance"].is_string(), "{problem}");
    assert_eq!(problem["request_id"], request_id.as_str());
    problem
}

/// A TCP proxy on 127.0.0.1 in front of `target` that can stall: while stalled, it holds what
/// either side sends (a dependency that has become slow, not gone). Its tasks end with the test's
/// runtime.
pub struct StallProxy {
    pub addr: SocketAddr,
    stalled: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl StallProxy {
    pub async fn start(target: SocketAddr) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let stalled = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stalled.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                for (mut from, mut to) in [
                    (
                        Box::new(client_read) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                        Box::new(server_write) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                    ),
                    (Box::new(server_read) as _, Box::new(client_write) as _),
                ] {
                    let flag = flag.clone();
                    tokio::spawn(async move {
                        let mut buffer = vec![0u8; 16 * 1024];
                        loop {
                            let read = match from.read(&mut buffer).await {
                                Ok(0) | Err(_) => break,
                                Ok(read) => read,
                            };
                            while flag.load(Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                            if to.write_all(&buffer[..read]).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            }
        });
        Self { addr, stalled }
    }

    pub fn stall(&self, stalled: bool) {
        self.stalled
            .store(stalled, std::sync::atomic::Ordering::SeqCst);
    }
}
