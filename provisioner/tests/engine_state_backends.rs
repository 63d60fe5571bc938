//! Both state backends through the `StateBackend` trait: round trips, locks that name their
//! holder, stale-lock takeover, forced unlock, and refusal of lost-lock writes (Postgres).

use std::sync::Arc;
use std::time::Duration;

use provisioner::state::local::LocalBackend;
use provisioner::state::postgres::PostgresBackend;
use provisioner::state::{BackendError, LockInfo, StateBackend, StateDocument};

fn local() -> (Arc<dyn StateBackend>, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(stacksmith_testkit::unique_name("engine-state"));
    (Arc::new(LocalBackend::new(&dir, "demo")), dir)
}

async fn postgres() -> Arc<dyn StateBackend> {
    // One database for the backends' tests, one deployment name per test.
    let url = stacksmith_testkit::database_url();
    Arc::new(
        PostgresBackend::connect(&url, &stacksmith_testkit::unique_name("deployment"))
            .await
            .expect("Postgres at STACKSMITH_TEST_DATABASE_URL"),
    )
}

async fn round_trip_and_locking(backend: Arc<dyn StateBackend>) {
    assert!(backend.load().await.unwrap().is_none());
    let mut document = StateDocument::new("demo", None);
    document.serial = 1;
    backend.save(&document).await.unwrap();
    document.serial = 2;
    document.pending.clear();
    backend.save(&document).await.unwrap();
    assert_eq!(backend.load().await.unwrap().unwrap(), document);

    let first = backend
        .lock(LockInfo::for_this_process("up"), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        backend.current_lock().await.unwrap().as_ref(),
        Some(first.info())
    );
    let started = std::time::Instant::now();
    match backend
        .lock(LockInfo::for_this_process("up"), Duration::from_millis(500))
        .await
    {
        Err(BackendError::Locked { holder, waited, .. }) => {
            assert_eq!(holder.id, first.info().id);
            assert!(waited >= Duration::from_millis(500));
            assert!(started.elapsed() >= Duration::from_millis(500), "it waited");
        }
        Err(other) => panic!("expected a Locked error, got {other}"),
        Ok(_) => panic!("a second lock was granted"),
    }
    first.release().await.unwrap();
    assert!(backend.current_lock().await.unwrap().is_none());

    let again = backend
        .lock(LockInfo::for_this_process("up"), Duration::ZERO)
        .await
        .unwrap();
    let removed = backend.force_unlock().await.unwrap();
    assert_eq!(removed.as_ref().map(|l| &l.id), Some(&again.info().id));
    backend
        .lock(LockInfo::for_this_process("up"), Duration::from_secs(5))
        .await
        .expect("the lock is free after a forced unlock")
        .release()
        .await
        .unwrap();
}

#[tokio::test]
async fn local_backend_round_trips_and_locks() {
    let (backend, dir) = local();
    round_trip_and_locking(backend).await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn postgres_backend_round_trips_and_locks() {
    round_trip_and_locking(postgres().await).await;
}

#[tokio::test]
async fn a_local_lock_of_a_dead_process_is_taken_over() {
    let dir = std::env::temp_dir().join(stacksmith_testkit::unique_name("engine-state"));
    let backend = LocalBackend::new(&dir, "demo");
    let mut dead = LockInfo::for_this_process("up");
    dead.pid = u32::MAX - 7; // no such process on this host
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("demo.json.lock"),
        serde_json::to_vec(&dead).unwrap(),
    )
    .unwrap();
    let taken = backend
        .lock(LockInfo::for_this_process("up"), Duration::ZERO)
        .await
        .expect("a stale lock is taken over");
    assert_ne!(taken.info().id, dead.id);

    // A lock from another host is honoured until it is older than the bound.
    taken.release().await.unwrap();
    let mut remote = LockInfo::for_this_process("up");
    remote.host = "another-host".into();
    std::fs::write(
        dir.join("demo.json.lock"),
        serde_json::to_vec(&remote).unwrap(),
    )
    .unwrap();
    assert!(matches!(
        backend
            .lock(LockInfo::for_this_process("up"), Duration::ZERO)
            .await,
        Err(BackendError::Locked { .. })
    ));
    let short = backend.clone().with_stale_after(Duration::ZERO);
    short
        .lock(LockInfo::for_this_process("up"), Duration::ZERO)
        .await
        .expect("an expired remote lock is taken over");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn postgres_refuses_a_write_that_does_not_advance_the_serial() {
    let backend = postgres().await;
    let mut document = StateDocument::new("demo", None);
    document.serial = 5;
    backend.save(&document).await.unwrap();
    document.serial = 5;
    document.resources.clear();
    match backend.save(&document).await {
        Err(BackendError::Conflict {
            found, attempted, ..
        }) => assert_eq!((found, attempted), (5, 5)),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

/// Saves the documents of a stack, two instances of it (with lifetimes) and another stack through
/// `open(deployment)`, then lists the store through the first backend.
async fn lists_every_deployment_of_its_store<F, Fut>(stack: &str, open: F)
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Arc<dyn StateBackend>>,
{
    use provisioner::state::{InstanceLifetime, deployment_name};
    let created = chrono::DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
        .unwrap()
        .to_utc();
    let lifetime = InstanceLifetime::starting(created, Some(Duration::from_secs(48 * 3600)));
    let other = format!("{stack}-other");
    let deployments = [
        (stack, None),
        (stack, Some("pr-1")),
        (stack, Some("pr-2")),
        (other.as_str(), None),
    ];
    let mut first = None;
    for (name, instance) in deployments {
        let backend = open(deployment_name(name, instance)).await;
        let mut document = StateDocument::new(name, instance);
        document.serial = 1;
        document.lifetime = instance.map(|_| lifetime);
        backend.save(&document).await.unwrap();
        first.get_or_insert(backend);
    }
    let listed = first.unwrap().list_deployments().await.unwrap();
    let ours: Vec<(String, Option<String>, Option<InstanceLifetime>)> = listed
        .into_iter()
        .filter(|d| d.document.stack == stack || d.document.stack == other)
        .map(|d| (d.name, d.document.instance, d.document.lifetime))
        .collect();
    assert_eq!(
        ours,
        [
            (stack.to_owned(), None, None),
            (format!("{stack}-other"), None, None),
            (
                format!("{stack}-pr-1"),
                Some("pr-1".to_owned()),
                Some(lifetime)
            ),
            (
                format!("{stack}-pr-2"),
                Some("pr-2".to_owned()),
                Some(lifetime)
            ),
        ]
    );
    assert_eq!(
        lifetime.expires_at.unwrap().to_rfc3339(),
        "2026-12-03T10:00:00+00:00"
    );
}

#[tokio::test]
async fn local_backend_lists_the_deployments_of_its_directory() {
    let dir = std::env::temp_dir().join(stacksmith_testkit::unique_name("engine-state-list"));
    let open = |deployment: String| {
        let dir = dir.clone();
        async move { Arc::new(LocalBackend::new(&dir, &deployment)) as Arc<dyn StateBackend> }
    };
    // Locks, key files and a save's temp files are not deployments.
    std::fs::create_dir_all(&dir).unwrap();
    for stray in ["demo.json.lock", "demo.key", "demo.json.1234.tmp"] {
        std::fs::write(dir.join(stray), "{}").unwrap();
    }
    lists_every_deployment_of_its_store("demo", open).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn postgres_backend_lists_the_deployments_of_its_table() {
    let url = stacksmith_testkit::database_url();
    let stack = stacksmith_testkit::unique_name("list")
        .replace('_', "-")
        .to_lowercase();
    let open = |deployment: String| {
        let url = url.clone();
        async move {
            Arc::new(PostgresBackend::connect(&url, &deployment).await.unwrap())
                as Arc<dyn StateBackend>
        }
    };
    lists_every_deployment_of_its_store(&stack, open).await;
}
