//! The `controlplane` binary (migrate, teams, keys, healthcheck) and the Dockerfile lint.

mod common;

use std::process::Command;

use common::{TestServer, task};
use serde_json::Value;
use sqlx::PgPool;

fn controlplane(database_url: &str, args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_controlplane"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run controlplane");
    assert!(
        output.status.success(),
        "controlplane {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
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

#[sqlx::test(migrations = false)]
async fn cli_migrates_creates_teams_and_keys_and_revokes(pool: PgPool) {
    let url = database_url(&pool);
    let migrate = Command::new(env!("CARGO_BIN_EXE_controlplane"))
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .status()
        .expect("run migrate");
    assert!(migrate.success());
    assert!(
        controlplane::store::migrations_applied(&pool)
            .await
            .unwrap()
    );

    let team = controlplane(&url, &["teams", "create", "--name", "ops"]);
    let team_id = team["id"].as_str().unwrap();
    let key = controlplane(
        &url,
        &["keys", "create", "--team", team_id, "--name", "laptop"],
    );
    let secret = key["key"].as_str().unwrap().to_owned();

    let server = TestServer::unlimited(pool).await;
    assert_eq!(server.submit(&secret, task("p")).await.status(), 201);
    controlplane(
        &url,
        &["keys", "revoke", "--key-id", key["id"].as_str().unwrap()],
    );
    // The running server trusts a key it found valid for `api_key_cache_ms` (2 s by default),
    // then asks the database again.
    let revoked = std::time::Instant::now();
    while server.submit(&secret, task("p")).await.status() != 401 {
        assert!(
            revoked.elapsed() < std::time::Duration::from_secs(4),
            "the key revoked with the CLI still works after 4 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let address = server.base.trim_start_matches("http://").to_owned();
    // The server runs on this test's runtime: wait for the probe without blocking it.
    let healthy = tokio::process::Command::new(env!("CARGO_BIN_EXE_controlplane"))
        .args(["healthcheck", "--address", &address])
        .status()
        .await
        .unwrap();
    assert!(healthy.success());
    server.stop().await;
    // Nothing listens any more.
    let unhealthy = Command::new(env!("CARGO_BIN_EXE_controlplane"))
        .args(["healthcheck", "--address", &address])
        .status()
        .unwrap();
    assert!(!unhealthy.success());
}

#[test]
fn dockerfile_passes_hadolint() {
    let dockerfile = stacksmith_testkit::workspace_root().join("Dockerfile");
    let output = Command::new(stacksmith_testkit::venv_tool("hadolint"))
        .arg(&dockerfile)
        .output()
        .expect("run hadolint");
    assert!(
        output.status.success(),
        "hadolint:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
