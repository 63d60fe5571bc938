//! A database per run on the shared Postgres, dropped afterwards whatever the outcome, and the
//! processes a run starts, stopped when it ends.

use std::future::Future;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// Runs `body` against a fresh database named after `label`, then drops it (also on failure).
pub async fn with_database<T, F, Fut>(admin_url: &str, label: &str, body: F) -> anyhow::Result<T>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let name = stacksmith_testkit::unique_name(&format!("qbench_{label}"));
    let mut admin = PgConnection::connect(admin_url)
        .await
        .with_context(|| format!("cannot connect to {}", redact(admin_url)))?;
    // The name is made here of letters, digits and `_`: safe to splice into the statement.
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await?;
    let outcome = body(with_database_name(admin_url, &name)?).await;
    let dropped = sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await;
    let value = outcome?;
    dropped?;
    Ok(value)
}

/// `postgres://.../postgres?x` with the database name replaced.
pub fn with_database_name(url: &str, database: &str) -> anyhow::Result<String> {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let (server, _) = base
        .rsplit_once('/')
        .filter(|(server, _)| server.contains("://") && !server.ends_with('/'))
        .with_context(|| format!("the database URL names no database: {}", redact(url)))?;
    Ok(match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    })
}

/// The URL without its password, for output.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme_end), Some(at)) if url[scheme_end + 3..at].contains(':') => {
            let user_end = scheme_end + 3 + url[scheme_end + 3..at].find(':').unwrap_or(0);
            format!("{}:***{}", &url[..user_end], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// A child process stopped (SIGTERM, then SIGKILL after `grace`) when dropped or stopped.
pub struct Process {
    pub name: String,
    pub child: tokio::process::Child,
}

impl Process {
    /// Starts `command` with stdout and stderr appended to `log`.
    pub fn spawn(
        name: &str,
        command: &mut tokio::process::Command,
        log: &Path,
    ) -> anyhow::Result<Self> {
        let file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGTERM, then SIGKILL when it has not exited within `grace`.
    pub async fn stop(mut self, grace: Duration) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => {
                println!(
                    "queue-bench: {} did not stop within {grace:?}; killing it",
                    self.name
                );
                self.child.kill().await?;
            }
        }
        Ok(())
    }
}

/// CPU time (user + system, its waited-for children included) a process has used so far, from
/// `/proc/<pid>/stat` (in clock ticks of `USER_HZ`, 100 per second on Linux).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    const USER_HZ: f64 = 100.0;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14-17 (utime, stime, cutime, cstime) are 11-14 after the name and state.
    let ticks: u64 = fields
        .get(11..15)?
        .iter()
        .map(|f| f.parse::<u64>().ok())
        .sum::<Option<u64>>()?;
    Some(ticks as f64 / USER_HZ)
}

/// The parent process id of `pid` (field 4 of `/proc/<pid>/stat`).
fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The CPU time of the whole Postgres server on this machine: the postmaster with the backends
/// that exited (its waited-for children) and every live child (backends, autovacuum, WAL
/// writer, checkpointer). Differences of two readings give what a run cost the database,
/// whichever system drove it.
#[derive(Debug, Clone, Copy)]
pub struct PostgresCpu {
    postmaster: u32,
}

impl PostgresCpu {
    /// Finds the postmaster behind `database_url`; `None` when it is not a process of this
    /// machine that we may read.
    pub async fn find(database_url: &str) -> Option<Self> {
        use sqlx::Connection;
        let mut db = sqlx::PgConnection::connect(database_url).await.ok()?;
        let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut db)
            .await
            .ok()?;
        let postmaster = parent_pid(u32::try_from(backend).ok()?)?;
        let this = Self { postmaster };
        this.seconds().map(|_| this)
    }

    /// CPU seconds used so far.
    pub fn seconds(&self) -> Option<f64> {
        let mut total = cpu_seconds(self.postmaster)?;
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if parent_pid(pid) == Some(self.postmaster) {
                total += cpu_seconds(pid).unwrap_or(0.0);
            }
        }
        Some(total)
    }
}

/// Milliseconds per task of `seconds` of CPU, or `unknown`.
pub fn per_task_ms(seconds: Option<f64>, tasks: u64) -> String {
    seconds.map_or_else(
        || "unknown".to_owned(),
        |seconds| format!("{:.3}", seconds * 1000.0 / tasks.max(1) as f64),
    )
}

/// Polls `ready` every `every` until it holds or `limit` passes.
pub async fn wait_for<F, Fut>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut ready: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if ready().await? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!("{what}: not done within {limit:?}");
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_are_rewritten_and_redacted() {
        assert_eq!(
            with_database_name("postgres://postgres@127.0.0.1:5432/postgres", "x").unwrap(),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database_name("postgres://u:p@h/db?sslmode=disable", "x").unwrap(),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert!(with_database_name("postgres://h", "x").is_err());
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn cpu_time_of_this_process_is_read() {
        assert!(cpu_seconds(std::process::id()).is_some());
    }
}
