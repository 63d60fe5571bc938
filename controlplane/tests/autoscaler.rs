//! The pool autoscaler against the Kubernetes API emulator (`cargo xtask env`/`test` start it
//! and write a kubeconfig for it) and real Postgres: worker Deployments shaped like the
//! provisioner renders them, tasks queued and drained in the database, the loop run in process
//! with short windows. Also the leader election: two autoscalers on one database, one patches.

use std::time::{Duration, Instant};

use controlplane::autoscaler::decision::StabilizationWindows;
use controlplane::autoscaler::leader::Leadership;
use controlplane::autoscaler::pools::{
    FIELD_MANAGER, MAX_REPLICAS_ANNOTATION, MIN_REPLICAS_ANNOTATION, POOL_LABEL,
    TASKS_PER_REPLICA_ANNOTATION,
};
use controlplane::autoscaler::{Autoscaler, AutoscalerSettings, kube_client};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

const INTERVAL: Duration = Duration::from_millis(100);
const POLL: Duration = Duration::from_millis(50);

/// A fresh namespace in the emulator, and a client for it.
async fn namespace() -> (kube::Client, String) {
    let client = kube_client(Some(&stacksmith_testkit::kubeconfig()))
        .await
        .expect("a client for the Kubernetes emulator");
    let name = format!("autoscale-{}", &Uuid::new_v4().simple().to_string()[..12]);
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("create the test namespace");
    (client, name)
}

/// A worker Deployment as `70-workers.yaml.tera` renders it (labels, annotations, replicas).
async fn worker_deployment(
    client: &kube::Client,
    namespace: &str,
    pool: &str,
    (min, max, tasks_per_replica): (u32, u32, u32),
) -> Api<Deployment> {
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {
            "name": format!("stacksmith-worker-{pool}"),
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/name": "stacksmith-worker",
                "app.kubernetes.io/component": "worker",
                POOL_LABEL: pool,
            },
            "annotations": {
                MIN_REPLICAS_ANNOTATION: min.to_string(),
                MAX_REPLICAS_ANNOTATION: max.to_string(),
                TASKS_PER_REPLICA_ANNOTATION: tasks_per_replica.to_string(),
            },
        },
        "spec": {
            "replicas": min,
            "selector": {"matchLabels": {"app.kubernetes.io/name": "stacksmith-worker", POOL_LABEL: pool}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "stacksmith-worker", POOL_LABEL: pool}},
                "spec": {"containers": [{"name": "worker", "image": "stacksmith/controlplane:test"}]},
            },
        },
    }))
    .unwrap();
    let api = Api::<Deployment>::namespaced(client.clone(), namespace);
    api.create(&PostParams::default(), &deployment)
        .await
        .expect("create the worker Deployment");
    api
}

async fn replicas(api: &Api<Deployment>, pool: &str) -> i32 {
    api.get(&format!("stacksmith-worker-{pool}"))
        .await
        .expect("read the worker Deployment")
        .spec
        .and_then(|spec| spec.replicas)
        .expect("spec.replicas")
}

async fn team(db: &PgPool) -> Uuid {
    controlplane::store::teams::create(db, &stacksmith_testkit::unique_name("scaling"))
        .await
        .expect("create a team")
        .id
}

async fn queue_tasks(db: &PgPool, team: Uuid, pool: &str, count: i32) {
    sqlx::query(
        "INSERT INTO tasks (id, team_id, pool, command, timeout_seconds)
         SELECT gen_random_uuid(), $1, $2, ARRAY['true'], 60 FROM generate_series(1, $3)",
    )
    .bind(team)
    .bind(pool)
    .bind(count)
    .execute(db)
    .await
    .expect("queue tasks");
}

/// What workers would do to the backlog, all at once: every task of the pool succeeds.
async fn drain(db: &PgPool, pool: &str) {
    sqlx::query(
        "UPDATE tasks SET state = 'succeeded', finished_at = now(), updated_at = now()
         WHERE pool = $1 AND state IN ('queued', 'leased', 'running')",
    )
    .bind(pool)
    .execute(db)
    .await
    .expect("drain the queue");
}

fn settings(namespace: &str, identity: &str, windows: StabilizationWindows) -> AutoscalerSettings {
    AutoscalerSettings {
        namespace: namespace.to_owned(),
        interval: INTERVAL,
        windows,
        identity: identity.to_owned(),
    }
}

/// Polls the pool's replicas until `wanted` (bounded); returns when it was first seen and every
/// value seen on the way.
async fn wait_for_replicas(
    api: &Api<Deployment>,
    pool: &str,
    wanted: i32,
    deadline: Duration,
) -> (Instant, Vec<i32>) {
    let started = Instant::now();
    let mut seen = Vec::new();
    loop {
        let now = replicas(api, pool).await;
        if seen.last() != Some(&now) {
            seen.push(now);
        }
        if now == wanted {
            return (Instant::now(), seen);
        }
        assert!(
            started.elapsed() < deadline,
            "{pool} never reached {wanted} replicas within {deadline:?}; saw {seen:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn wait_until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < deadline, "{what} within {deadline:?}");
        tokio::time::sleep(POLL).await;
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn a_pool_scales_up_to_max_and_down_to_min_after_its_windows(db: PgPool) {
    let metrics = controlplane::metrics::prometheus_handle();
    let (client, namespace) = namespace().await;
    let pool = "batch";
    // min 2, max 5, 4 tasks per replica; 30 tasks ask for 8 replicas.
    let deployments = worker_deployment(&client, &namespace, pool, (2, 5, 4)).await;
    let team = team(&db).await;
    let windows = StabilizationWindows {
        scale_up: Duration::from_millis(1_000),
        scale_down: Duration::from_millis(3_000),
    };
    let autoscaler = Autoscaler::new(
        settings(&namespace, "solo", windows),
        &db.connect_options(),
        client.clone(),
    );
    let status = autoscaler.status();
    let task = tokio::spawn(autoscaler.run());
    wait_until("the only autoscaler leads", Duration::from_secs(10), || {
        status.is_leading()
    })
    .await;
    // A few rounds with an empty queue: recommendations of `min` fill the scale-up window.
    tokio::time::sleep(INTERVAL * 5).await;
    assert_eq!(replicas(&deployments, pool).await, 2);

    queue_tasks(&db, team, pool, 30).await;
    let queued_at = Instant::now();
    let (scaled_up_at, seen) =
        wait_for_replicas(&deployments, pool, 5, Duration::from_secs(15)).await;
    assert!(seen.iter().all(|&r| r <= 5), "above max: {seen:?}");
    let waited = scaled_up_at - queued_at;
    assert!(
        waited >= windows.scale_up - INTERVAL * 2,
        "scaled up after {waited:?}, before the scale-up window of {:?} passed",
        windows.scale_up
    );
    // It stays at max while the backlog lasts.
    tokio::time::sleep(INTERVAL * 5).await;
    assert_eq!(replicas(&deployments, pool).await, 5);
    let exposition = metrics.render();
    assert!(
        exposition.contains(&format!(
            "controlplane_autoscaler_desired_replicas{{pool=\"{pool}\"}} 5"
        )),
        "{exposition}"
    );
    assert!(
        exposition.contains("controlplane_autoscaler_scaling_events_total"),
        "{exposition}"
    );

    drain(&db, pool).await;
    let drained_at = Instant::now();
    let (scaled_down_at, seen) =
        wait_for_replicas(&deployments, pool, 2, Duration::from_secs(15)).await;
    let waited = scaled_down_at - drained_at;
    assert!(
        waited >= windows.scale_down - INTERVAL * 2,
        "scaled down after {waited:?}, before the scale-down window of {:?} passed; saw {seen:?}",
        windows.scale_down
    );
    assert_eq!(seen, vec![5, 2], "straight to min, never below");
    // An empty queue never takes the pool below min.
    tokio::time::sleep(INTERVAL * 10).await;
    assert_eq!(replicas(&deployments, pool).await, 2);
    assert_eq!(status.scalings(), 2);

    // The replicas were written through the scale subresource by the autoscaler's field manager.
    let deployment = deployments
        .get(&format!("stacksmith-worker-{pool}"))
        .await
        .unwrap();
    let managers = deployment.metadata.managed_fields.unwrap_or_default();
    assert!(
        managers
            .iter()
            .any(|entry| entry.manager.as_deref() == Some(FIELD_MANAGER)
                && entry.subresource.as_deref() == Some("scale")),
        "{managers:?}"
    );
    task.abort();
}

#[sqlx::test(migrations = "./migrations")]
async fn of_two_autoscalers_only_the_leader_patches_and_the_other_takes_over(db: PgPool) {
    let (client, namespace) = namespace().await;
    let pool = "shared";
    let deployments = worker_deployment(&client, &namespace, pool, (1, 20, 1)).await;
    let team = team(&db).await;
    let windows = StabilizationWindows {
        scale_up: Duration::ZERO,
        scale_down: Duration::from_secs(60),
    };
    let start = |identity: &str| {
        let autoscaler = Autoscaler::new(
            settings(&namespace, identity, windows),
            &db.connect_options(),
            client.clone(),
        );
        let status = autoscaler.status();
        (status, tokio::spawn(autoscaler.run()))
    };
    let (first, first_task) = start("first");
    let (second, second_task) = start("second");
    wait_until("one autoscaler leads", Duration::from_secs(10), || {
        first.is_leading() || second.is_leading()
    })
    .await;
    // Several rounds of both: the follower never takes the lock.
    tokio::time::sleep(INTERVAL * 5).await;
    assert!(
        first.is_leading() != second.is_leading(),
        "exactly one leads"
    );
    let (leader, leader_task, follower, follower_task) = if first.is_leading() {
        (first, first_task, second, second_task)
    } else {
        (second, second_task, first, first_task)
    };

    queue_tasks(&db, team, pool, 3).await;
    wait_for_replicas(&deployments, pool, 3, Duration::from_secs(10)).await;
    queue_tasks(&db, team, pool, 3).await;
    wait_for_replicas(&deployments, pool, 6, Duration::from_secs(10)).await;
    tokio::time::sleep(INTERVAL * 5).await;
    assert_eq!(leader.scalings(), 2, "the leader made both changes");
    assert_eq!(follower.scalings(), 0, "the follower patched nothing");
    assert!(!follower.is_leading());

    // The leader stops: its session ends, the lock is free, the other one leads and scales.
    leader_task.abort();
    let _ = leader_task.await;
    wait_until("the follower takes over", Duration::from_secs(10), || {
        follower.is_leading()
    })
    .await;
    queue_tasks(&db, team, pool, 2).await;
    wait_for_replicas(&deployments, pool, 8, Duration::from_secs(10)).await;
    assert_eq!(follower.scalings(), 1);
    assert_eq!(leader.scalings(), 2);
    follower_task.abort();
}

#[sqlx::test(migrations = "./migrations")]
async fn leadership_is_lost_with_the_leader_session(db: PgPool) {
    let options = db.connect_options();
    let mut first = Leadership::new(&options, "first-session");
    let mut second = Leadership::new(&options, "second-session");
    assert!(first.try_lead().await.unwrap());
    assert!(!second.try_lead().await.unwrap());
    assert!(first.try_lead().await.unwrap(), "a leader stays leader");

    // The server ends the leader's session (a network cut or a Postgres restart looks alike).
    let terminated: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name = 'stacksmith-autoscaler/first-session'
           AND datname = current_database()",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(terminated, vec![true]);
    // The lock went with the session: the other replica takes it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !second.try_lead().await.unwrap() {
        assert!(Instant::now() < deadline, "the lock is released");
        tokio::time::sleep(POLL).await;
    }
    // The old leader finds out on its next query through the session, and cannot lead again.
    let session = first.connection().expect("still believes it leads");
    assert!(
        controlplane::store::backlog::by_pool(session, &[])
            .await
            .is_err()
    );
    assert!(!first.session_alive().await);
    assert!(second.session_alive().await);
    first.resign().await;
    assert!(!first.is_leading());
    assert!(!first.try_lead().await.unwrap());
    assert!(second.try_lead().await.unwrap());
}

/// The URL of the per-test database behind `db`.
fn database_url(db: &PgPool) -> String {
    let database = db
        .connect_options()
        .get_database()
        .expect("database name")
        .to_owned();
    let base = stacksmith_testkit::database_url();
    let (server, _) = base.rsplit_once('/').expect("URL with a database path");
    format!("{server}/{database}")
}

#[sqlx::test(migrations = "./migrations")]
async fn serve_runs_the_autoscaler_when_given_a_namespace(db: PgPool) {
    let (client, namespace) = namespace().await;
    let pool = "served";
    let deployments = worker_deployment(&client, &namespace, pool, (1, 3, 2)).await;
    let team = team(&db).await;
    let mut serve = tokio::process::Command::new(env!("CARGO_BIN_EXE_controlplane"))
        .arg("serve")
        .env("DATABASE_URL", database_url(&db))
        .env("REDIS_URL", stacksmith_testkit::redis_url())
        .env(
            "CONTROLPLANE_REDIS_PREFIX",
            stacksmith_testkit::unique_name("autoscaler_serve"),
        )
        .env("CONTROLPLANE_LISTEN", "127.0.0.1:0")
        .env("CONTROLPLANE_AUTOSCALER_NAMESPACE", &namespace)
        .env(
            "CONTROLPLANE_AUTOSCALER_KUBECONFIG",
            stacksmith_testkit::kubeconfig(),
        )
        .env("CONTROLPLANE_AUTOSCALER_INTERVAL_MS", "200")
        .env("CONTROLPLANE_AUTOSCALER_SCALE_DOWN_WINDOW_MS", "600000")
        .env("HOSTNAME", "serve-under-test")
        .env("RUST_LOG", "info,sqlx=warn")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start controlplane serve");

    // The log, read as it is written: the decision is logged just after the scale is
    // patched, so the test waits for both before it stops the server.
    let logs = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let logs = logs.clone();
        let stderr = serve.stderr.take().expect("piped stderr");
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut logs = logs.lock().unwrap();
                logs.push_str(&line);
                logs.push('\n');
            }
        })
    };
    let decision_line = || {
        logs.lock()
            .unwrap()
            .lines()
            .find(|line| line.contains("scaled worker pool"))
            .map(str::to_owned)
    };
    // 5 tasks at 2 per replica ask for 3 replicas, the maximum.
    queue_tasks(&db, team, pool, 5).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut scaled = false;
    while Instant::now() < deadline {
        scaled = scaled || replicas(&deployments, pool).await == 3;
        if scaled && decision_line().is_some() {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    serve.start_kill().expect("stop controlplane serve");
    serve.wait().await.expect("controlplane stopped");
    reader.await.expect("log reader");
    let logs = logs.lock().unwrap().clone();
    assert!(
        scaled,
        "the pool never reached 3 replicas; serve logged:\n{logs}"
    );
    let decision = decision_line().unwrap_or_else(|| panic!("no scaling decision logged:\n{logs}"));
    let decision: serde_json::Value = serde_json::from_str(&decision).expect("a JSON log line");
    let fields = &decision["fields"];
    assert_eq!(fields["pool"], pool, "{decision}");
    assert_eq!(fields["direction"], "up", "{decision}");
    assert_eq!(
        (fields["from"].as_u64(), fields["to"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(fields["ready_tasks"], 5, "{decision}");
}
