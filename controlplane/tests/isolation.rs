//! Task isolation and the worker's runtime, through the real `controlplane worker` started the way
//! a worker pod starts each task slot (`provisioner/templates/kubernetes/70-workers.yaml.tera`):
//! as PID 1 of its own PID namespace, as its own non-root user with no capabilities and
//! `no_new_privs`, with its own `/tmp` and `/dev/shm`, the worker key in its environment (never in
//! its arguments), `--concurrency 1 --container-slot` (`stacksmith_testkit::container`). Against an
//! in-process server on real Postgres and Redis.
//!
//! - A hostile task (`stacksmith-task-probe probe`) tries every way to the worker's key and to a
//!   concurrently running task of another team that planted a secret in its environment, `HOME`,
//!   `TMPDIR`, `/tmp` and `/dev/shm`; every way is refused, and the report is printed.
//! - What a task leaves running or on disk is gone before the slot's next task, and no zombie
//!   stays: the worker as PID 1 reaps the orphans.
//! - Without `--container-slot` (a worker run as PID 1 by `docker run`), orphaned grandchildren
//!   that exit on their own are reaped too.
//! - SIGTERM to the slot's PID 1 (what the kubelet sends) reaches the worker, which drains, gives
//!   its task back and exits 0.
//! - `controlplane runtime install` (the worker pod's init container) copies a runnable binary.
//! - The control: one container running two tasks at once (a laptop's `--concurrency 2`): the
//!   probe does find the other task's secret there (so it would find a leak), never the worker's.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{TestServer, WORKER_KEY};
use controlplane::config::RateLimitConfig;
use serde_json::{Value, json};
use sqlx::PgPool;
use stacksmith_testkit::container::{Container, ContainerSpec, runnable_by_any_user};
use stacksmith_testkit::workspace_binary;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Stands in for the database URL a worker might have in its environment.
const DATABASE_URL: &str = "postgres://stacksmith:db-password-never-seen@10.0.1.5:5432/stacksmith";

async fn server(pool: PgPool) -> TestServer {
    let mut config = common::config(RateLimitConfig::disabled());
    config.scheduler.reaper_interval_ms = 200;
    config.scheduler.poll_interval_ms = 200;
    TestServer::start(pool, config).await
}

fn log_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(stacksmith_testkit::unique_name("isolation"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A task slot container as the worker pod template starts it (command and arguments as
/// rendered, plus a short long-poll and a larger output bound for the probe's report).
fn slot(server: &TestServer, pool: &str, uid: u32, extra: &[&str], log: PathBuf) -> Container {
    // The slot's user runs the copy the pod's `runtime` init container would have made.
    let controlplane =
        runnable_by_any_user(std::path::Path::new(env!("CARGO_BIN_EXE_controlplane")));
    let mut argv = vec![
        controlplane.to_string_lossy().into_owned(),
        "worker".into(),
        "--url".into(),
        server.base.clone(),
        "--pool".into(),
        pool.into(),
        "--wait-seconds".into(),
        "1".into(),
        "--max-output-bytes".into(),
        "65536".into(),
    ];
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    Container::start(&ContainerSpec {
        argv,
        env: vec![
            ("CONTROLPLANE_WORKER_KEY".into(), WORKER_KEY.into()),
            ("DATABASE_URL".into(), DATABASE_URL.into()),
            ("RUST_LOG".into(), "info".into()),
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
        ],
        uid,
        gid: uid,
        empty_dirs: vec![PathBuf::from("/tmp"), PathBuf::from("/dev/shm")],
        log: Some(log),
    })
}

async fn submit(server: &TestServer, key: &str, body: Value) -> String {
    let response = server
        .client
        .post(server.url("/v1/tasks"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// Polls the task until it is final (bounded).
async fn finished(server: &TestServer, key: &str, id: &str, logs: &std::path::Path) -> Value {
    let started = Instant::now();
    loop {
        let task: Value = server
            .client
            .get(server.url(&format!("/v1/tasks/{id}")))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if ["succeeded", "failed", "dead", "cancelled"].contains(&task["state"].as_str().unwrap())
            || started.elapsed() > Duration::from_secs(90)
        {
            assert_eq!(
                task["state"],
                "succeeded",
                "{task:#}\n--- worker logs\n{}",
                logs_text(logs)
            );
            return task;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn logs_text(dir: &std::path::Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        text.push_str(&format!("== {}\n", entry.path().display()));
        text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
    }
    text
}

fn probe_binary() -> String {
    runnable_by_any_user(&workspace_binary("stacksmith-task-probe"))
        .to_string_lossy()
        .into_owned()
}

/// Waits (bounded) for the planter task to connect and say where it planted (lines up to an
/// empty one); the connection is kept open so that the planter stays alive.
async fn planter_connects(
    listener: TcpListener,
    logs: &std::path::Path,
) -> (TcpStream, Vec<String>) {
    let said = async {
        let (stream, _) = listener.accept().await.expect("the planter connects");
        let mut reader = BufReader::new(stream);
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).await.unwrap_or(0) == 0 || line.trim().is_empty() {
                break;
            }
            lines.push(line.trim().to_owned());
        }
        (reader.into_inner(), lines)
    };
    tokio::time::timeout(Duration::from_secs(90), said)
        .await
        .unwrap_or_else(|_| panic!("the planter never ran:\n{}", logs_text(logs)))
}

#[sqlx::test(migrations = "./migrations")]
async fn a_task_reaches_neither_the_worker_key_nor_another_teams_task(pool: PgPool) {
    let server = server(pool).await;
    let (_, prober) = server.team_with_key("prober").await;
    let (_, planter) = server.team_with_key("planter").await;
    let logs = log_dir();
    // Two task slots of one worker pod.
    let _slot0 = slot(
        &server,
        "iso",
        10001,
        &["--container-slot"],
        logs.join("slot-0.log"),
    );
    let _slot1 = slot(
        &server,
        "iso",
        10002,
        &["--container-slot"],
        logs.join("slot-1.log"),
    );
    // The other team's task plants its secret and says where, then waits for the probe.
    let secret = format!(
        "planted-secret-{}",
        stacksmith_testkit::unique_name("s").replace('_', "-")
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let planted = submit(
        &server,
        &planter,
        json!({"pool": "iso", "command": [probe_binary(), "plant"], "timeout_seconds": 240,
               "env": {"PLANTED_SECRET": secret, "PROBE_READY_ADDR": address}}),
    )
    .await;
    let (planter_connection, planter_said) = planter_connects(listener, &logs).await;
    let planter_dir = |name: &str| {
        planter_said
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_owned()
    };
    let (planter_home, planter_tmp) = (planter_dir("HOME"), planter_dir("TMPDIR"));
    // The probe runs while the planter's task is alive in the other slot.
    let probe = submit(
        &server,
        &prober,
        json!({"pool": "iso", "timeout_seconds": 120,
               "command": [probe_binary(), "probe", planter_home, planter_tmp]}),
    )
    .await;
    let task = finished(&server, &prober, &probe, &logs).await;
    drop(planter_connection);
    let planted_task = finished(&server, &planter, &planted, &logs).await;
    assert_eq!(planted_task["result"]["planted"], true);

    let report = &task["result"];
    println!(
        "isolation report of the probe task:\n{}",
        serde_json::to_string_pretty(report).unwrap()
    );
    // Nothing of the worker's or the other team's secrets anywhere in what the task returned.
    let everything = task.to_string();
    for value in [WORKER_KEY, DATABASE_URL, secret.as_str()] {
        assert!(
            !everything.contains(value),
            "a secret reached the task: {value}"
        );
    }
    assert_eq!(
        report["own_environment"]["unexpected"],
        json!([]),
        "the task's environment holds only PATH, HOME, TMPDIR and STACKSMITH_*"
    );
    assert_eq!(report["summary"]["leaks"], 0, "{report:#}");
    // The processes it can see: its slot's init (PID 1) and worker, nothing of the other slot.
    let processes = report["processes"].as_array().unwrap();
    let pids: Vec<u64> = processes
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect();
    assert!(
        pids.len() == 2 && pids[0] == 1,
        "only its own slot's init (PID 1) and worker: {processes:?}"
    );
    for process in processes {
        assert_eq!(process["comm"], "controlplane");
        assert_eq!(
            process["uid"], report["uid"],
            "its slot's user, not the other slot's: {processes:?}"
        );
    }
    let attempts = report["attempts"].as_array().unwrap();
    let outcome_of = |target: &str| -> Vec<String> {
        attempts
            .iter()
            .filter(|a| a["target"] == target)
            .map(|a| a["outcome"].as_str().unwrap().to_owned())
            .collect()
    };
    for pid in pids {
        for file in ["environ", "mem", "maps", "fd", "root", "cwd", "exe"] {
            let outcomes = outcome_of(&format!("/proc/{pid}/{file}"));
            assert_eq!(outcomes.len(), 1, "/proc/{pid}/{file} was tried");
            assert!(
                outcomes[0].starts_with("refused"),
                "/proc/{pid}/{file}: {}",
                outcomes[0]
            );
        }
        // World-readable by design; the worker key is never in its arguments.
        let cmdline = outcome_of(&format!("/proc/{pid}/cmdline"));
        assert!(cmdline[0].starts_with("readable, no secret"), "{cmdline:?}");
    }
    for dir in [&planter_dir("HOME"), &planter_dir("TMPDIR")] {
        for target in [dir.clone(), format!("{dir}/secret")] {
            let outcomes = outcome_of(&target);
            assert!(
                !outcomes.is_empty() && outcomes.iter().all(|o| o.starts_with("absent")),
                "{target}: {outcomes:?}"
            );
        }
    }
    assert_eq!(
        report["other_task_directories_in_tmp"],
        json!([]),
        "no other task's directory in sight"
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn a_slot_keeps_nothing_of_a_task_for_the_next_and_leaves_no_zombie(pool: PgPool) {
    let server = server(pool).await;
    let (_, key) = server.team_with_key("slots").await;
    let logs = log_dir();
    let _slot = slot(
        &server,
        "leftovers",
        10003,
        &["--container-slot"],
        logs.join("slot.log"),
    );
    // A task that leaves a daemon (its own session, out of its process group), an orphan that
    // exits on its own, and files in /tmp and /dev/shm.
    let first = submit(
        &server,
        &key,
        json!({"pool": "leftovers", "command": ["sh", "-c",
            "setsid sleep 300 </dev/null >/dev/null 2>&1 & (sleep 0.2 &) ; \
             echo left > /tmp/left-behind; echo left > /dev/shm/left-behind; \
             echo \"$HOME\""]}),
    )
    .await;
    let first_task = finished(&server, &key, &first, &logs).await;
    let first_home = first_task["result"].as_str().unwrap().to_owned();
    assert!(
        first_home.starts_with("/tmp/stacksmith-task-"),
        "{first_home}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = submit(
        &server,
        &key,
        json!({"pool": "leftovers", "command": [probe_binary(), "probe", first_home]}),
    )
    .await;
    let report = finished(&server, &key, &second, &logs).await["result"].clone();
    let processes = report["processes"].as_array().unwrap();
    assert_eq!(
        processes.len(),
        2,
        "only the init and the worker are left of the first task: {processes:?}"
    );
    assert!(
        processes
            .iter()
            .all(|p| !p["state"].as_str().unwrap().starts_with('Z')),
        "no zombie: {processes:?}"
    );
    for dir in ["/tmp", "/dev/shm"] {
        let entries: Vec<&str> = report["scratch"][dir]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        assert!(
            entries.iter().all(|e| e.starts_with("stacksmith-task-")),
            "{dir} holds only the running task's directory: {entries:?}"
        );
    }
    assert_eq!(report["other_task_directories_in_tmp"], json!([]));
    let home_attempts: Vec<&Value> = report["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["what"] == "another task's directory")
        .collect();
    assert!(
        home_attempts
            .iter()
            .all(|a| a["outcome"].as_str().unwrap().starts_with("absent")),
        "the first task's HOME is gone: {home_attempts:?}"
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn a_worker_as_pid_1_reaps_orphaned_grandchildren(pool: PgPool) {
    let server = server(pool).await;
    let (_, key) = server.team_with_key("reaping").await;
    let logs = log_dir();
    // `docker run ... controlplane worker --concurrency 2`: PID 1, no --container-slot.
    let _worker = slot(
        &server,
        "reap",
        10004,
        &["--concurrency", "2"],
        logs.join("worker.log"),
    );
    // Orphans that outlive their parent for a moment, then exit on their own (as a daemon's
    // double fork does): they are reparented to PID 1, which must reap them.
    let orphans = submit(
        &server,
        &key,
        json!({"pool": "reap", "command": ["sh", "-c",
            "for i in 1 2 3; do setsid sh -c 'sleep 0.3' </dev/null >/dev/null 2>&1 & done; exit 0"]}),
    )
    .await;
    finished(&server, &key, &orphans, &logs).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let probe = submit(
        &server,
        &key,
        json!({"pool": "reap", "command": [probe_binary(), "probe"]}),
    )
    .await;
    let report = finished(&server, &key, &probe, &logs).await["result"].clone();
    let processes = report["processes"].as_array().unwrap();
    assert!(
        processes
            .iter()
            .all(|p| !p["state"].as_str().unwrap().starts_with('Z')),
        "no zombie: {processes:?}"
    );
    assert_eq!(
        processes.len(),
        2,
        "the orphans are gone, reaped by PID 1: {processes:?}"
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn sigterm_to_the_slots_pid_1_drains_the_worker_and_gives_the_task_back(pool: PgPool) {
    let server = server(pool).await;
    let (_, key) = server.team_with_key("draining").await;
    let logs = log_dir();
    let mut slot = slot(
        &server,
        "drain",
        10005,
        &["--container-slot", "--drain-seconds", "1"],
        logs.join("slot.log"),
    );
    let id = submit(
        &server,
        &key,
        json!({"pool": "drain", "command": ["sleep", "60"], "timeout_seconds": 120}),
    )
    .await;
    let started = Instant::now();
    loop {
        let task: Value = server
            .client
            .get(server.url(&format!("/v1/tasks/{id}")))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if task["state"] == "leased" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never leased: {task}\n{}",
            logs_text(&logs)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // What the kubelet does on a pod's deletion: SIGTERM to each container's PID 1.
    slot.signal(15);
    let status = tokio::task::spawn_blocking(move || {
        let status = slot.wait(Duration::from_secs(30));
        (slot, status)
    })
    .await
    .unwrap()
    .1
    .unwrap_or_else(|| panic!("the slot did not stop:\n{}", logs_text(&logs)));
    assert!(
        status.success(),
        "PID 1 exits with the worker's status: {status}\n{}",
        logs_text(&logs)
    );
    let task: Value = server
        .client
        .get(server.url(&format!("/v1/tasks/{id}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        task["state"], "queued",
        "released for another worker: {task}"
    );
}

#[test]
fn runtime_install_copies_a_runnable_worker_binary() {
    use std::os::unix::fs::PermissionsExt;
    let dir = log_dir().join("runtime");
    for _ in 0..2 {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_controlplane"))
            .args(["runtime", "install", "--to"])
            .arg(dir.join("bin"))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            stacksmith_testkit::describe(&output)
        );
    }
    let copy = dir.join("bin/controlplane");
    let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o555,
        "read and execute for every slot's user, writable by none"
    );
    let version = std::process::Command::new(&copy)
        .arg("--version")
        .output()
        .unwrap();
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("controlplane "));
    let leftovers: Vec<_> = std::fs::read_dir(dir.join("bin"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers, ["controlplane"], "no partial copies left");
}

/// The probe is no vacuous oracle, and the README's laptop row holds: one worker with two task
/// slots in one container (same user, same PID namespace, same /tmp), as `controlplane worker
/// --concurrency 2` runs on a laptop. The worker's key stays out of reach (non-dumpable); the
/// other team's concurrent task does not.
#[sqlx::test(migrations = "./migrations")]
async fn without_slot_containers_concurrent_tasks_see_each_other_but_not_the_worker_key(
    pool: PgPool,
) {
    let server = server(pool).await;
    let (_, prober) = server.team_with_key("prober").await;
    let (_, planter) = server.team_with_key("planter").await;
    let logs = log_dir();
    let _worker = slot(
        &server,
        "shared",
        10006,
        &["--concurrency", "2"],
        logs.join("worker.log"),
    );
    let secret = format!(
        "planted-secret-{}",
        stacksmith_testkit::unique_name("s").replace('_', "-")
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let planted = submit(
        &server,
        &planter,
        json!({"pool": "shared", "command": [probe_binary(), "plant"], "timeout_seconds": 240,
               "env": {"PLANTED_SECRET": secret, "PROBE_READY_ADDR": address}}),
    )
    .await;
    let (connection, _) = planter_connects(listener, &logs).await;
    let probe = submit(
        &server,
        &prober,
        json!({"pool": "shared", "command": [probe_binary(), "probe"], "timeout_seconds": 120}),
    )
    .await;
    let report = finished(&server, &prober, &probe, &logs).await["result"].clone();
    drop(connection);
    finished(&server, &planter, &planted, &logs).await;
    let attempts = report["attempts"].as_array().unwrap();
    let leaks: Vec<&str> = attempts
        .iter()
        .filter(|a| a["outcome"].as_str().unwrap().starts_with("LEAK"))
        .map(|a| a["target"].as_str().unwrap())
        .collect();
    assert!(
        leaks.iter().any(|t| t.ends_with("/environ")),
        "the other task's environment is readable by a task of the same user: {report:#}"
    );
    assert!(
        leaks.iter().any(|t| t.ends_with("/secret")),
        "and its private directories too: {report:#}"
    );
    for leak in attempts
        .iter()
        .filter(|a| a["outcome"].as_str().unwrap().starts_with("LEAK"))
    {
        let outcome = leak["outcome"].as_str().unwrap();
        assert!(
            !outcome.contains("CONTROLPLANE_WORKER_KEY") && !outcome.contains("DATABASE_URL"),
            "never the worker's: {leak}"
        );
    }
    // The worker (PID 1 and its child) stays unreadable.
    for process in report["processes"].as_array().unwrap() {
        if process["comm"] == "controlplane" {
            let environ = format!("/proc/{}/environ", process["pid"]);
            let outcome = attempts
                .iter()
                .find(|a| a["target"] == environ.as_str())
                .unwrap()["outcome"]
                .as_str()
                .unwrap();
            assert!(outcome.starts_with("refused"), "{environ}: {outcome}");
        }
    }
}
