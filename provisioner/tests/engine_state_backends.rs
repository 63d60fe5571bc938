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
