//! The real `controlplane worker` binary against an in-process server (real Postgres and Redis):
//! a workflow with result passing, timeouts and bounded output, SIGKILL mid-task (the lease
//! expires, the task runs again, the late report is rejected) and SIGTERM (drain and release).

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{TestServer, WORKER_KEY, expect_problem};
use controlplane::config::RateLimitConfig;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::process::{Child, Command};

fn worker(server: &TestServer, pool: &str, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_controlplane"))
        .arg("worker")
        .args(["--url", &server.base])
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

async fn server(pool: PgPool) -> TestServer {
    let mut config = common::config(RateLimitConfig::disabled());
    config.scheduler.reaper_interval_ms = 200;
    config.scheduler.poll_interval_ms = 200;
    TestServer::start(pool, config).await
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

/// Polls `path` until `done` holds (bounded by `limit`).
async fn wait_for(
    server: &TestServer,
    key: &str,
    path: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let value = get(server, key, path).await;
        if done(&value) {
            return value;
        }
        assert!(started.elapsed() < limit, "{path} after {limit:?}: {value}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stop_worker(mut child: Child) {
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
}

#[sqlx::test(migrations = "./migrations")]
async fn a_worker_runs_a_workflow_passing_results_through_the_environment(pool: PgPool) {
    let server = server(pool).await;
    let (_, key) = server.team_with_key("alice").await;
    // Each task prints JSON: its name and the results it received.
    let node = |name: &str, deps: &[&str]| {
        json!({"name": name, "depends_on": deps, "pool": "wf", "command": [
            "sh", "-c", format!("printf '{{\"name\":\"{name}\",\"received\":%s}}' \"$STACKSMITH_DEPENDENCY_RESULTS\"")
        ]})
    };
    let created = server
        .client
        .post(server.url("/v1/workflows"))
        .bearer_auth(&key)
        .json(
            &json!({"tasks": [node("fetch", &[]), node("left", &["fetch"]),
                                node("right", &["fetch"]), node("join", &["left", "right"])]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let worker = worker(&server, "wf", &["--concurrency", "2"]);
    let workflow = wait_for(
        &server,
        &key,
        &format!("/v1/workflows/{id}"),
        Duration::from_secs(30),
        |w| w["state"] != "running",
    )
    .await;
    assert_eq!(workflow["state"], "succeeded", "{workflow}");
    let join = workflow["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "join")
        .unwrap();
    let result = &join["task"]["result"];
    assert_eq!(result["name"], "join");
    assert_eq!(
        result["received"]["left"]["received"]["fetch"]["name"],
        "fetch"
    );
    assert_eq!(result["received"]["right"]["name"], "right");
    assert_eq!(join["task"]["exit_code"], 0);
    stop_worker(worker).await;
    server.stop().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn a_timeout_kills_the_command_and_output_is_bounded(pool: PgPool) {
    let server = server(pool).await;
    let (_, key) = server.team_with_key("alice").await;
    let slow: Value = server
        .submit(
            &key,
            json!({"pool": "t", "command": ["sleep", "30"], "timeout_seconds": 1}),
        )
        .await
        .json()
        .await
        .unwrap();
    let noisy: Value = server
        .submit(
            &key,
            json!({"pool": "t", "command": ["sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x; echo oops >&2; exit 3"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let worker = worker(
        &server,
        "t",
        &["--concurrency", "2", "--max-output-bytes", "1000"],
    );
    let started = Instant::now();
    let slow = wait_for(
        &server,
        &key,
        &format!("/v1/tasks/{}", slow["id"].as_str().unwrap()),
        Duration::from_secs(20),
        |t| t["state"] == "dead",
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(
        slow["last_error"].as_str().unwrap().contains("timed out"),
        "{slow}"
    );
    let noisy = wait_for(
        &server,
        &key,
        &format!("/v1/tasks/{}", noisy["id"].as_str().unwrap()),
        Duration::from_secs(20),
        |t| t["state"] == "dead",
    )
    .await;
    assert_eq!(noisy["exit_code"], 3);
    let output = noisy["output"].as_str().unwrap();
    assert!(output.starts_with("xxxx"));
    assert!(
        output.contains("[truncated]") && output.contains("oops"),
        "{output}"
    );
    assert!(output.len() < 1200, "{} bytes kept", output.len());
    stop_worker(worker).await;
    server.stop().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn a_worker_killed_mid_task_loses_its_lease_and_the_task_runs_again(pool: PgPool) {
    let server = server(pool).await;
    let (_, key) = server.team_with_key("alice").await;
    // The first attempt hangs; the second finishes at once.
    let task: Value = server
        .submit(
            &key,
            json!({"pool": "k", "retry": {"max_attempts": 3, "backoff_seconds": 0},
                   "command": ["sh", "-c", "if [ \"$STACKSMITH_ATTEMPT\" = 1 ]; then sleep 15; fi; echo second"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = task["id"].as_str().unwrap().to_owned();
    let mut first = worker(&server, "k", &["--lease-seconds", "2", "--name", "first"]);
    let attempts_path = format!("/v1/tasks/{id}/attempts");
    let attempts = wait_for(
        &server,
        &key,
        &attempts_path,
        Duration::from_secs(15),
        |a| a.as_array().is_some_and(|a| !a.is_empty()),
    )
    .await;
    let old_lease = attempts[0]["lease_id"].as_str().unwrap().to_owned();
    let old_token = attempts[0]["fencing_token"].as_i64().unwrap();
    // SIGKILL: no release, no report.
    first.start_kill().unwrap();
    tokio::time::timeout(Duration::from_secs(10), first.wait())
        .await
        .unwrap()
        .unwrap();

    let second = worker(&server, "k", &["--lease-seconds", "2", "--name", "second"]);
    let done = wait_for(
        &server,
        &key,
        &format!("/v1/tasks/{id}"),
        Duration::from_secs(30),
        |t| t["state"] == "succeeded",
    )
    .await;
    assert_eq!(done["result"], "second");
    let attempts = get(&server, &key, &attempts_path).await;
    assert_eq!(attempts[0]["outcome"], "lost");
    assert_eq!(attempts[0]["worker"], "first");
    assert_eq!(attempts[1]["outcome"], "succeeded");
    assert_eq!(attempts[1]["worker"], "second");

    // The killed worker's late completion is rejected.
    let late = server
        .client
        .post(server.url(&format!("/v1/leases/{old_lease}/complete")))
        .bearer_auth(WORKER_KEY)
        .json(&json!({"fencing_token": old_token, "result": "late"}))
        .send()
        .await
        .unwrap();
    expect_problem(late, 409).await;
    assert_eq!(
        get(&server, &key, &format!("/v1/tasks/{id}")).await["result"],
        "second"
    );
    stop_worker(second).await;
    server.stop().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn a_workflow_survives_the_sigkill_of_its_worker_with_default_settings(pool: PgPool) {
    let server = server(pool).await;
    let (_, key) = server.team_with_key("alice").await;
    // Default retry and failure policies (max_attempts 1, fail_fast). `left` hangs in its
    // first attempt, long enough for its worker to be killed under it.
    let node = |name: &str, deps: &[&str]| {
        json!({"name": name, "depends_on": deps, "pool": "spot", "command": [
            "sh", "-c", format!("if [ {name} = left ] && [ \"$STACKSMITH_ATTEMPT\" = 1 ]; then sleep 20; fi; echo {name}")
        ]})
    };
    let created = server
        .client
        .post(server.url("/v1/workflows"))
        .bearer_auth(&key)
        .json(
            &json!({"tasks": [node("fetch", &[]), node("left", &["fetch"]),
                                node("right", &["fetch"]), node("join", &["left", "right"])]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/workflows/{id}");
    let task_of = |workflow: &Value, name: &str| -> Value {
        workflow["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap()["task"]
            .clone()
    };
    // A short lease keeps the test short; the task settings are the defaults.
    let mut first = worker(
        &server,
        "spot",
        &["--concurrency", "2", "--lease-seconds", "2"],
    );
    let running = wait_for(&server, &key, &path, Duration::from_secs(20), |w| {
        task_of(w, "left")["state"] == "leased" && task_of(w, "right")["state"] == "succeeded"
    })
    .await;
    assert_eq!(task_of(&running, "left")["attempts"], 1);
    // SIGKILL mid-task: no report, no release.
    first.start_kill().unwrap();
    tokio::time::timeout(Duration::from_secs(10), first.wait())
        .await
        .unwrap()
        .unwrap();

    let second = worker(&server, "spot", &["--lease-seconds", "2"]);
    // The lost lease is noticed after 2 s, `left` runs again after its retry delay (10 s by
    // default, less up to 10 % jitter).
    let workflow = wait_for(&server, &key, &path, Duration::from_secs(45), |w| {
        w["state"] != "running"
    })
    .await;
    assert_eq!(workflow["state"], "succeeded", "{workflow}");
    for name in ["fetch", "right", "join"] {
        let task = task_of(&workflow, name);
        assert_eq!(task["result"], name);
        assert_eq!(
            (task["attempts"].clone(), task["lease_losses"].clone()),
            (json!(1), json!(0))
        );
    }
    let left = task_of(&workflow, "left");
    assert_eq!(left["result"], "left");
    assert_eq!(
        (left["attempts"].clone(), left["lease_losses"].clone()),
        (json!(2), json!(1))
    );
    let attempts = get(
        &server,
        &key,
        &format!("/v1/tasks/{}/attempts", left["id"].as_str().unwrap()),
    )
    .await;
    let outcomes: Vec<&str> = attempts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["lost", "succeeded"]);
    stop_worker(second).await;
    server.stop().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn sigterm_stops_leasing_and_releases_unfinished_tasks(pool: PgPool) {
    let server = server(pool).await;
    let (_, key) = server.team_with_key("alice").await;
    let task: Value = server
        .submit(&key, json!({"pool": "s", "command": ["sleep", "20"]}))
        .await
        .json()
        .await
        .unwrap();
    let id = task["id"].as_str().unwrap().to_owned();
    let mut worker = worker(&server, "s", &["--drain-seconds", "1"]);
    wait_for(
        &server,
        &key,
        &format!("/v1/tasks/{id}"),
        Duration::from_secs(15),
        |t| t["state"] == "leased",
    )
    .await;
    let pid = worker.id().unwrap().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(20), worker.wait())
        .await
        .expect("the worker exits after its drain period")
        .unwrap();
    assert!(exit.success(), "{exit}");
    let task = get(&server, &key, &format!("/v1/tasks/{id}")).await;
    assert_eq!(task["state"], "queued", "{task}");
    assert_eq!(task["attempts"], 0);
    let attempts = get(&server, &key, &format!("/v1/tasks/{id}/attempts")).await;
    assert_eq!(attempts[0]["outcome"], "released");
    server.stop().await;
}

/// `controlplane workflows run` as a team's CI job would use it.
async fn run_workflow(
    server: &TestServer,
    key: &str,
    file: &std::path::Path,
) -> std::process::Output {
    let run = Command::new(env!("CARGO_BIN_EXE_controlplane"))
        .args(["workflows", "run", "--url", &server.base, "--file"])
        .arg(file)
        .args(["--wait-seconds", "30", "--json"])
        .env("CONTROLPLANE_API_KEY", key)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("workflows run ends within its wait")
        .expect("run the binary")
}

#[sqlx::test(migrations = "./migrations")]
async fn workflows_run_follows_the_shipped_workflow_to_success_and_fails_on_a_dead_task(
    pool: PgPool,
) {
    let server = server(pool).await;
    let (_, key) = server.team_with_key("alice").await;
    let worker = worker(&server, "default", &["--concurrency", "2"]);

    // The workflow `cargo xtask local` runs.
    let shipped =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/local-release.json");
    let output = run_workflow(&server, &key, &shipped).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let workflow: Value =
        serde_json::from_slice(&output.stdout).expect("--json prints the workflow");
    assert_eq!(workflow["state"], "succeeded");
    let package = workflow["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "package")
        .expect("the package task");
    // Results flow along the DAG: package saw both of its dependencies' results.
    assert_eq!(
        package["task"]["result"]["checks"]["unit-tests"]["passed"],
        128
    );
    assert_eq!(package["task"]["result"]["checks"]["lint"]["warnings"], 0);
    for task in ["checkout", "unit-tests", "lint", "package"] {
        assert!(stderr.contains(&format!("{task}: succeeded")), "{stderr}");
    }

    // A task that exits non-zero with no retries left: the workflow fails, and so does the run.
    let dir = std::env::temp_dir().join(stacksmith_testkit::unique_name("wf"));
    std::fs::create_dir_all(&dir).unwrap();
    let failing = dir.join("failing.json");
    std::fs::write(
        &failing,
        json!({
            "tasks": [
                {"name": "build", "pool": "default", "command": ["false"], "retry": {"max_attempts": 1}},
                {"name": "ship", "depends_on": ["build"], "pool": "default", "command": ["true"]}
            ]
        })
        .to_string(),
    )
    .unwrap();
    let output = run_workflow(&server, &key, &failing).await;
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let workflow: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(workflow["state"], "failed");

    // A workflow the API refuses (a cycle) is a clear error, not a hang.
    std::fs::write(
        &failing,
        json!({"tasks": [
            {"name": "a", "depends_on": ["b"], "pool": "default", "command": ["true"]},
            {"name": "b", "depends_on": ["a"], "pool": "default", "command": ["true"]}
        ]})
        .to_string(),
    )
    .unwrap();
    let output = run_workflow(&server, &key, &failing).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("422") && stderr.contains("cycle"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    stop_worker(worker).await;
    server.stop().await;
}

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

/// `controlplane check` (what the acceptance suite's Job runs in the cluster), one JSON value per
/// stdout line.
async fn check(database_url: &str, redis_url: &str, args: &[&str]) -> (Option<i32>, Vec<Value>) {
    let output = Command::new(env!("CARGO_BIN_EXE_controlplane"))
        .arg("check")
        .args(["--timeout-seconds", "5", "--wait-seconds", "30"])
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("REDIS_URL", redis_url)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("controlplane check ends within its deadlines")
        .expect("run controlplane check");
    let lines = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON value per line"))
        .collect();
    (output.status.code(), lines)
}

#[sqlx::test(migrations = "./migrations")]
async fn check_reaches_the_database_and_cache_and_runs_a_workflow_as_a_throwaway_team(
    pool: PgPool,
) {
    let url = database_url(&pool);
    let server = server(pool.clone()).await;
    let worker = worker(&server, "default", &["--concurrency", "2"]);
    let workflow = std::env::temp_dir().join(format!(
        "{}.json",
        stacksmith_testkit::unique_name("check-workflow")
    ));
    std::fs::write(
        &workflow,
        json!({"tasks": [
            {"name": "a", "pool": "default", "command": ["sh", "-c", "echo 1"]},
            {"name": "b", "depends_on": ["a"], "pool": "default", "command": ["sh", "-c", "echo 2"]},
        ]})
        .to_string(),
    )
    .unwrap();
    let redis_url = stacksmith_testkit::redis_url();
    let (code, lines) = check(
        &url,
        &redis_url,
        &[
            "--url",
            &server.base,
            "--workflow",
            workflow.to_str().unwrap(),
        ],
    )
    .await;
    let _ = std::fs::remove_file(&workflow);
    assert_eq!(code, Some(0), "{lines:#?}");
    let checks: Vec<&str> = lines.iter().map(|l| l["check"].as_str().unwrap()).collect();
    assert_eq!(checks, ["postgres", "redis", "workflow"], "{lines:#?}");
    assert!(lines.iter().all(|l| l["ok"] == true), "{lines:#?}");
    assert!(lines[0]["server_version"].is_string(), "{lines:#?}");
    assert_eq!(lines[1]["answer"], "PONG");
    assert_eq!(lines[2]["state"], "succeeded");
    assert_eq!(lines[2]["tasks"].as_array().map(Vec::len), Some(2));
    // The throwaway team's key is revoked once the workflow is done, and never printed.
    let active: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM api_keys k JOIN teams t ON t.id = k.team_id \
         WHERE t.name LIKE 'acceptance-%' AND k.revoked_at IS NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(active, 0);
    assert!(!lines.iter().any(|l| l.to_string().contains("sk_")));

    // An unreachable cache fails its check (and the exit code); the database still passes.
    let (code, lines) = check(&url, "redis://127.0.0.1:1", &[]).await;
    assert_eq!(code, Some(1), "{lines:#?}");
    assert_eq!(lines.len(), 2, "no workflow without --url: {lines:#?}");
    assert_eq!(lines[0]["ok"], true);
    assert_eq!(lines[1]["check"], "redis");
    assert_eq!(lines[1]["ok"], false);
    assert!(lines[1]["error"].is_string(), "{lines:#?}");
    stop_worker(worker).await;
    server.stop().await;
}

/// A Redis that speaks only TLS, like ElastiCache with transit encryption (the stacks' default,
/// which the provisioner hands over as `rediss://:TOKEN@HOST:6379`), with a certificate of a CA
/// of its own that `SSL_CERT_FILE` names. Killed when dropped.
struct TlsRedis {
    _server: std::process::Child,
    dir: std::path::PathBuf,
    url: String,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self._server.kill();
        let _ = self._server.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tls_redis() -> TlsRedis {
    let dir = std::env::temp_dir().join(stacksmith_testkit::unique_name("tls-redis"));
    std::fs::create_dir_all(&dir).unwrap();
    let openssl = |args: &[&str]| {
        let output = std::process::Command::new("openssl")
            .current_dir(&dir)
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(output.status.success(), "openssl {args:?}: {output:?}");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=stacksmith-test-ca",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "1",
        "-extfile",
        "ext",
    ]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let server = std::process::Command::new("redis-server")
        .current_dir(&dir)
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--tls-port", &port.to_string()])
        .args([
            "--tls-cert-file",
            "server.pem",
            "--tls-key-file",
            "server.key",
        ])
        .args(["--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no"])
        .args(["--requirepass", "t0k/en"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server runs");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "redis-server did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    TlsRedis {
        _server: server,
        url: format!("rediss://:t0k%2Fen@127.0.0.1:{port}"),
        dir,
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn check_reaches_a_cache_that_speaks_only_tls_as_elasticache_with_transit_encryption(
    pool: PgPool,
) {
    let redis = tls_redis();
    let url = database_url(&pool);
    let output = Command::new(env!("CARGO_BIN_EXE_controlplane"))
        .args(["check", "--timeout-seconds", "5"])
        .env("DATABASE_URL", &url)
        .env("REDIS_URL", &redis.url)
        .env("SSL_CERT_FILE", redis.dir.join("ca.pem"))
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("controlplane check ends")
        .expect("run controlplane check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let redis_line: Value = serde_json::from_str(stdout.lines().nth(1).unwrap()).unwrap();
    assert_eq!(redis_line["answer"], "PONG", "{stdout}");
}
