//! Schemathesis against `/openapi.json` of a running server: no 5xx, and every response matches
//! the document (status codes, content types, headers, bodies). Bounded by `--max-examples`.

mod common;

use std::time::Duration;

use common::{ADMIN_KEY, TestServer, WORKER_KEY};
use controlplane::config::RateLimitConfig;
use sqlx::PgPool;

const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance";
const RUN_TIME_LIMIT: Duration = Duration::from_secs(150);

async fn schemathesis(schema_url: &str, key: &str, selection: &[&str], max_examples: u32) {
    let tool = stacksmith_testkit::venv_tool("schemathesis");
    let mut command = tokio::process::Command::new(&tool);
    command
        .arg("run")
        .arg(schema_url)
        .args(["--checks", CHECKS])
        .args(["--max-examples", &max_examples.to_string()])
        .args(["--request-timeout", "10"])
        .args(["--seed", "20261123"])
        .arg("--no-color")
        .arg("--header")
        .arg(format!("Authorization: Bearer {key}"))
        .args(selection)
        .kill_on_drop(true);
    let output = tokio::time::timeout(RUN_TIME_LIMIT, command.output())
        .await
        .expect("schemathesis finishes within its time limit")
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", tool.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("passed"), "{stdout}");
}

#[sqlx::test(migrations = "./migrations")]
async fn responses_conform_to_the_openapi_document(pool: PgPool) {
    let mut config = common::config(RateLimitConfig::disabled());
    // Generated long polls would otherwise wait up to 20 s each.
    config.scheduler.max_lease_wait_ms = 100;
    let server = TestServer::start(pool, config).await;
    let (_, key) = server.team_with_key("schemathesis").await;
    let schema_url = server.url("/openapi.json");
    // Team operations with a team key, admin operations with the admin key, leases with the
    // worker key.
    schemathesis(
        &schema_url,
        &key,
        &["--exclude-tag", "admin", "--exclude-tag", "workers"],
        40,
    )
    .await;
    schemathesis(&schema_url, ADMIN_KEY, &["--include-tag", "admin"], 40).await;
    schemathesis(&schema_url, WORKER_KEY, &["--include-tag", "workers"], 40).await;
    server.stop().await;
}
