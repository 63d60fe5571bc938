//! The control-plane half of `cargo xtask local`: migrates a database of its own on the local
//! Postgres, starts `controlplane serve` and a `controlplane worker` for the `default` pool, creates
//! a team with a key, and runs `controlplane/workflows/local-release.json` through
//! `controlplane workflows run` (a DAG whose last task receives its dependencies' results).
//! Everything it starts stops when it returns.

use std::collections::hash_map::RandomState;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::environment::TestEnvironment;
use crate::process::{Server, exchange, free_port, wait_until};

/// The database the local control plane uses (created when missing, migrated every run).
const DATABASE: &str = "stacksmith_local";
/// The workflow run against it, relative to the workspace root.
pub const WORKFLOW: &str = "controlplane/workflows/local-release.json";

/// A key for this run only: 48 hex digits from the process's random hasher seeds.
fn run_key(prefix: &str) -> String {
    let mut key = String::from(prefix);
    for part in 0..3u64 {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(part ^ u64::from(std::process::id()));
        key.push_str(&format!("{:016x}", hasher.finish()));
    }
    key
}

/// `postgres://.../postgres` with the database name replaced.
fn with_database(url: &str, database: &str) -> Result<String, String> {
    let (server, _) = url
        .rsplit_once('/')
        .ok_or_else(|| format!("the database URL has no database name: {url}"))?;
    Ok(format!("{server}/{database}"))
}

/// The value of `"field": "..."` in a one-line JSON object the controlplane CLI printed.
fn json_string_field(text: &str, field: &str) -> Option<String> {
    let start = text.find(&format!("\"{field}\":\""))? + field.len() + 4;
    let end = start + text[start..].find('"')?;
    Some(text[start..end].to_owned())
}

fn controlplane_output(binary: &Path, database_url: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(binary)
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    if !output.status.success() {
        return Err(format!(
            "`controlplane {}` failed ({})",
            args.join(" "),
            output.status
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs the control plane and the workflow; true when the workflow succeeded.
pub fn run(
    environment: &TestEnvironment,
    binary: &Path,
    root: &Path,
    logs: &Path,
) -> Result<bool, String> {
    let database_url = with_database(&environment.database_url, DATABASE)?;
    println!(
        "xtask: migrate the control plane's database `{DATABASE}`: controlplane migrate --create-database"
    );
    controlplane_output(binary, &database_url, &["migrate", "--create-database"])?;

    std::fs::create_dir_all(logs).map_err(|e| format!("cannot create {}: {e}", logs.display()))?;
    let port = free_port()?;
    let admin_key = run_key("local-admin-");
    let worker_key = run_key("local-worker-");
    let url = format!("http://127.0.0.1:{port}");
    let serve_log = logs.join("controlplane-serve.log");
    println!(
        "xtask: start the control plane: controlplane serve on {url} (log: {})",
        serve_log.display()
    );
    let mut serve = Server {
        name: "controlplane serve",
        child: Command::new(binary)
            .arg("serve")
            .env("DATABASE_URL", &database_url)
            .env("REDIS_URL", &environment.redis_url)
            .env("CONTROLPLANE_LISTEN", format!("127.0.0.1:{port}"))
            .env("CONTROLPLANE_REDIS_PREFIX", "stacksmith-local")
            .env("CONTROLPLANE_ADMIN_KEY", &admin_key)
            .env("CONTROLPLANE_WORKER_KEY", &worker_key)
            .env("CONTROLPLANE_SHUTDOWN_GRACE_MS", "2000")
            .stdout(Stdio::null())
            .stderr(log_file(&serve_log)?)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?,
    };
    let readiness = format!("GET /readyz HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    wait_until(
        "controlplane serve",
        Duration::from_secs(30),
        Some(&serve_log),
        &mut serve.child,
        || {
            exchange(port, readiness.as_bytes()).is_some_and(|answer| {
                answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200")
            })
        },
    )?;

    // Team names are unique and the database outlives runs: one team per run.
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let team_name = format!("local-demo-{seconds}");
    let team = controlplane_output(
        binary,
        &database_url,
        &["teams", "create", "--name", &team_name],
    )?;
    let team_id = json_string_field(&team, "id").ok_or_else(|| format!("no team id in {team}"))?;
    let key = controlplane_output(
        binary,
        &database_url,
        &[
            "keys",
            "create",
            "--team",
            &team_id,
            "--name",
            "xtask-local",
        ],
    )?;
    let team_key = json_string_field(&key, "key").ok_or("no key in the output of `keys create`")?;
    println!("xtask: created team {team_name} ({team_id}) and an API key for it");

    let worker_log = logs.join("controlplane-worker.log");
    println!(
        "xtask: start a worker: controlplane worker --pool default --concurrency 2 (log: {})",
        worker_log.display()
    );
    let _worker = Server {
        name: "controlplane worker",
        child: Command::new(binary)
            .args([
                "worker",
                "--url",
                &url,
                "--pool",
                "default",
                "--concurrency",
                "2",
            ])
            .args([
                "--wait-seconds",
                "2",
                "--drain-seconds",
                "5",
                "--name",
                "xtask-local",
            ])
            .env("CONTROLPLANE_WORKER_KEY", &worker_key)
            .stdout(Stdio::null())
            .stderr(log_file(&worker_log)?)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?,
    };

    println!("xtask: run a workflow: controlplane workflows run --file {WORKFLOW}");
    let status = Command::new(binary)
        .args([
            "workflows",
            "run",
            "--url",
            &url,
            "--wait-seconds",
            "60",
            "--file",
        ])
        .arg(root.join(WORKFLOW))
        .env("CONTROLPLANE_API_KEY", &team_key)
        .env("RUST_LOG", "warn")
        .status()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    Ok(status.success())
}

fn log_file(path: &Path) -> Result<File, String> {
    File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_the_cli_output_are_found() {
        let team = r#"{"id":"0193a1b2-0000-7000-8000-000000000001","name":"local-demo"}"#;
        assert_eq!(
            json_string_field(team, "id").as_deref(),
            Some("0193a1b2-0000-7000-8000-000000000001")
        );
        assert_eq!(json_string_field(team, "missing"), None);
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", DATABASE).unwrap(),
            "postgres://postgres@127.0.0.1:5432/stacksmith_local"
        );
        let key = run_key("local-admin-");
        assert!(key.len() >= 32 && key != run_key("local-admin-"));
    }
}
