//! Load run (not a test): task submission at a fixed rate with rate limiting enabled.
//!
//!     cargo bench -p controlplane --bench submit_load
//!
//! Starts the control plane in process on 127.0.0.1:0 against a fresh database on the test
//! Postgres (dropped afterwards) and the test Redis, then sends `POST /v1/tasks` open-loop at
//! SUBMIT_LOAD_RPS (default 1000) for SUBMIT_LOAD_SECONDS (default 10). Latency counts from
//! the moment a request was due, so a stalled server cannot hide its queueing delay. At most
//! MAX_IN_FLIGHT requests are outstanding; ticks beyond that are counted as not sent.
//! Limits: per key SUBMIT_LOAD_PER_KEY_RPS (default 1500, burst 500), global 5000 rps,
//! per client 5000 rps (burst 10000).

mod common;

use common::{env_u32, with_scratch_database};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use controlplane::config::{Config, HttpLimits, RateLimitConfig, Secret};
use controlplane::{AppState, Server};
use hdrhistogram::Histogram;
use tokio::sync::{Mutex, Semaphore};

const MAX_IN_FLIGHT: usize = 1000;

#[derive(Default)]
struct Counts {
    created: AtomicU64,
    limited: AtomicU64,
    other_status: AtomicU64,
    transport_errors: AtomicU64,
    not_sent: AtomicU64,
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let rps = env_u32("SUBMIT_LOAD_RPS", 1000).max(1);
    let seconds = env_u32("SUBMIT_LOAD_SECONDS", 10).clamp(1, 120);
    let per_key_rps = env_u32("SUBMIT_LOAD_PER_KEY_RPS", 1500);

    with_scratch_database(|database_url| async move {
        load(&database_url, rps, seconds, per_key_rps).await
    })
    .await
}

async fn load(database_url: &str, rps: u32, seconds: u32, per_key_rps: u32) -> anyhow::Result<()> {
    let pool = controlplane::store::connect(database_url, 30).await?;
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
        rate_limit: RateLimitConfig {
            per_key_rps,
            burst: 500,
            global_rps: 5000,
            per_client_rps: 5000,
            per_client_burst: 10_000,
            trusted_proxies: Vec::new(),
        },
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
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(MAX_IN_FLIGHT)
        .build()?;
    let url = format!("{base}/v1/tasks");
    let secret = Arc::new(key.secret.expose().to_owned());
    let body = serde_json::json!({"pool": "bench", "command": ["echo", "hello"], "env": {"A": "1"}, "priority": 5});
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let counts = Arc::new(Counts::default());
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let total = u64::from(rps) * u64::from(seconds);
    let period = Duration::from_secs_f64(1.0 / f64::from(rps));

    println!("submit_load: {rps} requests/s for {seconds} s ({total} requests) to {url}");
    println!(
        "rate limits: per key {per_key_rps} rps (burst 500), global 5000 rps, per client 5000 rps"
    );
    let started = Instant::now();
    let mut requests = Vec::with_capacity(total as usize);
    for index in 0..total {
        let due = started + period.mul_f64(index as f64);
        tokio::time::sleep_until(due.into()).await;
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            counts.not_sent.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let (client, url, secret, body) =
            (client.clone(), url.clone(), secret.clone(), body.clone());
        let (histogram, counts) = (histogram.clone(), counts.clone());
        requests.push(tokio::spawn(async move {
            let result = client
                .post(&url)
                .bearer_auth(secret.as_str())
                .json(&body)
                .send()
                .await;
            let latency = due.elapsed();
            drop(permit);
            match result {
                Ok(response) if response.status() == 201 => &counts.created,
                Ok(response) if response.status() == 429 => &counts.limited,
                Ok(_) => &counts.other_status,
                Err(_) => &counts.transport_errors,
            }
            .fetch_add(1, Ordering::Relaxed);
            let micros = u64::try_from(latency.as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            histogram.lock().await.saturating_record(micros);
        }));
    }
    let sending = started.elapsed();
    for request in requests {
        request.await?;
    }
    let elapsed = started.elapsed();

    let histogram = histogram.lock().await;
    let ms = |micros: u64| micros as f64 / 1000.0;
    println!(
        "sent {} in {:.2} s ({:.0} req/s offered), all answered after {:.2} s",
        histogram.len(),
        sending.as_secs_f64(),
        histogram.len() as f64 / sending.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "201 created: {}  429 limited: {}  other status: {}  transport errors: {}  not sent (client at {MAX_IN_FLIGHT} in flight): {}",
        counts.created.load(Ordering::Relaxed),
        counts.limited.load(Ordering::Relaxed),
        counts.other_status.load(Ordering::Relaxed),
        counts.transport_errors.load(Ordering::Relaxed),
        counts.not_sent.load(Ordering::Relaxed),
    );
    println!(
        "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        ms(histogram.value_at_quantile(0.50)),
        ms(histogram.value_at_quantile(0.90)),
        ms(histogram.value_at_quantile(0.99)),
        ms(histogram.value_at_quantile(0.999)),
        ms(histogram.max()),
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(&pool)
        .await?;
    println!("tasks stored: {stored}");

    let _ = stop.send(());
    server_task.await??;
    let mut redis = redis;
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{prefix}:task-events"))
        .query_async(&mut redis)
        .await?;
    pool.close().await;
    Ok(())
}
