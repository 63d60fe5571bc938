//! Project automation. Two commands matter to a newcomer (see README.md):
//!
//! - `cargo xtask local`: the main job against local emulators;
//! - `cargo xtask test`: every test, with the servers they need.
//!
//! Both start what they need and stop it at the end: a Python venv with moto (and the other
//! PyPI tools in `tests/requirements/*.txt`), Postgres and Redis (reused when already reachable on
//! their usual ports, otherwise private servers on free ports, installed when missing and possible).
//! Everything binds to 127.0.0.1.

mod bench;
mod environment;
mod image;
mod installed;
mod process;
mod python;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use environment::TestEnvironment;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test [ARGS...]   start the test servers, run every test (cargo nextest, or cargo test when
                   nextest is absent) with ARGS passed to the runner, stop the servers
  local            the main job (needs root): start the emulators and the test kubelet;
                   validate, plan and render the `local` stack, create it in moto and install
                   it in the cluster (`up`, from clean local state), print its outputs; then
                   run a DAG workflow through the installed control plane's Service in its
                   worker pool's pods, and `up` again (changes nothing, the pods keep running)
  chaos [--rounds N] [--seed S] [--first-round R]
                   the chaos suite's long run: SIGKILL at random progress events of `up` and
                   `down` of the `local` stack behind the fault proxy, N rounds (default 50)
                   from seed S (default 14), numbered from R (default 0: a failing round is
                   rerun alone with --first-round R --rounds 1); prints `RESULT chaos rounds=...`;
                   then kills `up` as each kind of create call reaches the proxy
  env              start the test servers, print their environment variables, wait for Ctrl-C
  acceptance --stack NAME [ARGS...]
                   the acceptance suite on AWS (only with STACKSMITH_ACC=1 and AWS credentials):
                   deploy an instance of tests/fixtures/acceptance/NAME.yaml, check from a pod
                   that Postgres and Redis answer, run a workflow through the installed control
                   plane, tear it all down, print a report (--json); with --allow-emulators it
                   starts moto and the Kubernetes emulator and runs against them instead
                   (`stacksmith-acceptance --help` lists ARGS)
{IMAGE}
  help             this text
{BENCHES}

environment:
  STACKSMITH_CACHE_DIR   where the Python venvs live (default: $HOME/.cache/stacksmith)
  STACKSMITH_TEST_DATABASE_URL, STACKSMITH_TEST_REDIS_URL
                         use these servers instead of finding or starting them
  STACKSMITH_TEST_PRIVATE_SERVERS=1
                         start private Postgres and Redis on free ports even when the
                         machine's own answer on 5432 and 6379
  STACKSMITH_BLESS=1     rewrite golden files instead of comparing (then review the diff)";

fn usage() -> String {
    USAGE
        .replace("{BENCHES}", bench::USAGE)
        .replace("{IMAGE}", image::USAGE)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = args
        .split_first()
        .map_or(("help", &[][..]), |(c, r)| (c.as_str(), r));
    let result = match command {
        "test" => test(rest),
        "chaos" => chaos(rest),
        "local" => local(),
        "env" => hold_environment(),
        "acceptance" => acceptance(rest),
        "bench" => bench::run(rest),
        "image" => image::run(rest),
        "help" | "--help" | "-h" => {
            println!("{}", usage());
            Ok(ExitCode::SUCCESS)
        }
        other => Err(format!("unknown command `{other}`\n\n{}", usage())),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("xtask: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ sits in the workspace")
        .to_path_buf()
}

/// The cargo that runs us, so toolchain overrides carry over.
fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(root());
    command
}

/// Cargo's target directory as cargo will use it.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

fn test(runner_args: &[String]) -> Result<ExitCode, String> {
    // Build first, so compile time is not spent while the servers idle.
    let nextest = process::succeeds(cargo().args(["nextest", "--version"]));
    let mut build = cargo();
    if nextest {
        build.args(["nextest", "run", "--workspace", "--no-run"]);
    } else {
        build.args(["test", "--workspace", "--no-run"]);
    }
    process::run("building the workspace and its tests", &mut build)?;

    let environment = TestEnvironment::start()?;
    let mut run = cargo();
    if nextest {
        run.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
        let chosen = runner_args
            .iter()
            .any(|arg| arg.starts_with("--test-threads") || arg.starts_with("-j"));
        if !chosen {
            // Most of the slow tests wait (on emulated cloud lifecycles, rollouts, kills and
            // restarts) rather than compute: twice as many at once as there are cores took the
            // warm run on 2 cores from 285 s to 178 s.
            let cores = std::thread::available_parallelism().map_or(2, usize::from);
            run.arg(format!("--test-threads={}", cores * 2));
        }
    } else {
        run.args(["test", "--workspace", "--no-fail-fast"]);
    }
    run.args(runner_args);
    environment.apply(&mut run);
    println!("xtask: running the tests");
    let status = run.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    drop(environment);
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `cargo xtask chaos`: the chaos suite (`provisioner/tests/chaos_moto.rs`) with many rounds.
fn chaos(args: &[String]) -> Result<ExitCode, String> {
    let mut rounds = "50".to_owned();
    let mut seed = "14".to_owned();
    let mut first = "0".to_owned();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let value = |rest: &mut std::slice::Iter<'_, String>| {
            rest.next()
                .filter(|v| v.parse::<u64>().is_ok())
                .cloned()
                .ok_or_else(|| format!("{arg} takes a number"))
        };
        match arg.as_str() {
            "--rounds" => rounds = value(&mut rest)?,
            "--seed" => seed = value(&mut rest)?,
            "--first-round" => first = value(&mut rest)?,
            other => return Err(format!("chaos: unknown argument `{other}`\n\n{}", usage())),
        }
    }
    // --workspace: the features of `cargo xtask test`'s build, so nothing is rebuilt.
    let test = ["test", "--workspace", "--test", "chaos_moto"];
    process::run(
        "building the chaos suite",
        cargo().args(test).arg("--no-run"),
    )?;
    let environment = TestEnvironment::start()?;
    let mut run = cargo();
    run.args(test)
        .args(["--", "--nocapture"])
        .env("STACKSMITH_CHAOS_ROUNDS", &rounds)
        .env("STACKSMITH_CHAOS_SEED", &seed)
        .env("STACKSMITH_CHAOS_FIRST_ROUND", &first)
        // And a kill as each kind of create call is received (chaos_moto.rs, EVERY_KILL_POINT).
        .env("STACKSMITH_CHAOS_KILL_AT", "all");
    environment.apply(&mut run);
    println!("xtask: {rounds} chaos rounds from seed {seed}, starting at round {first}");
    let status = run.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    drop(environment);
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn local() -> Result<ExitCode, String> {
    if !process::is_root() {
        return Err(
            "`cargo xtask local` runs the installed control plane through the test \
                    kubelet, which needs root (PID, UTS and mount namespaces, `setpriv` to the \
                    pods' users, Service ports below 1024): run it as root (in a VM or a \
                    container)"
                .to_owned(),
        );
    }
    process::run(
        "building the workspace",
        // --all-targets: the same feature set as `cargo xtask test`, so the two share one build.
        cargo().args(["build", "--workspace", "--all-targets"]),
    )?;
    let environment = TestEnvironment::start_with_external_kubelet()?;
    let debug = target_dir().join("debug");
    let manifests = root().join(".stacksmith").join("manifests").join("local");
    // The moto server is fresh each run: state left by an earlier run would name objects this
    // one never had, so the local stack starts from clean local state.
    clear_local_state(&root().join(".stacksmith").join("state"))?;
    let local = |args: &[&str]| -> Vec<String> {
        args.iter()
            .map(|a| a.to_string())
            .chain(["--stack".into(), "local".into()])
            .collect()
    };
    let mut render = local(&["render"]);
    render.extend(["--out".into(), manifests.display().to_string()]);
    let provisioner = |what: &str, args: &[String]| -> Result<bool, String> {
        println!("xtask: {what}: provisioner {}", args.join(" "));
        provisioner_command(&environment, &debug, args)
            .status()
            .map(|status| status.success())
            .map_err(|e| format!("cannot run the provisioner: {e}"))
    };
    let steps: [(&str, Vec<String>); 3] = [
        ("validate the stack", local(&["validate"])),
        ("plan it (checked against policies/)", local(&["plan"])),
        ("render its in-cluster objects", render),
    ];
    for (what, args) in steps {
        if !provisioner(what, &args)? {
            return Ok(ExitCode::FAILURE);
        }
    }
    // The kubelet runs what `up` applies: started first, so `up`'s rollout wait sees the
    // readiness of pods that really run.
    let logs = root().join(".stacksmith").join("local");
    let mut cluster = installed::Cluster::start(&environment, &debug, &logs)?;
    let up = local(&["up", "--yes"]);
    if !provisioner(
        "create it in moto and install it in the cluster (the rollout waits for the kubelet)",
        &up,
    )? || !provisioner("print its outputs", &local(&["output"]))?
    {
        cluster.print_pods("the pods the kubelet runs");
        eprintln!(
            "xtask: what the kubelet saw: {}; the pods' logs: {}",
            logs.join("kubelet.log").display(),
            installed::PODS_LOGS
        );
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "xtask: the local stack is up in moto at {} (the outputs are above)",
        environment.aws_endpoint
    );
    let before = cluster.wait_running()?;
    cluster.print_endpoints_and_migrations();
    cluster.print_pods("the installed control plane runs as applied");

    if !cluster.run_workflow(&root())? {
        eprintln!(
            "xtask: the workflow did not succeed in the installed worker pool (kubelet log: {}, \
             the pods' logs: {})",
            logs.join("kubelet.log").display(),
            installed::PODS_LOGS
        );
        return Ok(ExitCode::FAILURE);
    }

    // `up` again: nothing to change, and every pod keeps running.
    println!(
        "xtask: up again (changes nothing): provisioner {}",
        up.join(" ")
    );
    let again = provisioner_command(&environment, &debug, &up)
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run the provisioner: {e}"))?;
    let text = String::from_utf8_lossy(&again.stderr);
    eprint!("{text}");
    if !again.status.success() {
        return Ok(ExitCode::FAILURE);
    }
    let after = cluster.wait_running()?;
    let kept = |pods: &[installed::Pod]| -> Vec<(String, u32)> {
        pods.iter()
            .map(|p| (format!("{}/{}", p.namespace, p.name), p.restarts))
            .collect()
    };
    let cluster_unchanged = text
        .lines()
        .any(|l| l.starts_with("Cluster: 0 created, 0 configured,") && l.contains(" 0 pruned"));
    if !cluster_unchanged || kept(&before) != kept(&after) {
        cluster.print_pods("after the second up");
        eprintln!(
            "xtask: the second up changed the cluster or its pods (before: {:?})",
            kept(&before)
        );
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "xtask: the second up changed nothing: the same {} pods run, none restarted",
        after.len()
    );
    drop(cluster);
    drop(environment);
    println!(
        "xtask: done: the local stack is up and its installed control plane ran a workflow in its \
         worker pool"
    );
    Ok(ExitCode::SUCCESS)
}

/// `provisioner ARGS` against the environment's emulators, from the workspace root.
fn provisioner_command(environment: &TestEnvironment, debug: &Path, args: &[String]) -> Command {
    let mut command = Command::new(debug.join("provisioner"));
    command.current_dir(root()).args(args);
    environment.apply(&mut command);
    with_emulator_credentials(&mut command);
    command
}

/// moto accepts any credentials; these keep a developer's real ones (and the instance metadata
/// service) out of a run against the emulator.
fn with_emulator_credentials(command: &mut Command) {
    command
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env("AWS_EC2_METADATA_DISABLED", "true");
}

/// Removes the `local` stack's state files (`local.json`, its lock and key, `local-<instance>`).
fn clear_local_state(dir: &Path) -> Result<(), String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let ours = name.starts_with("local.") || name.starts_with("local-");
        if ours && entry.path().is_file() {
            println!(
                "xtask: removing {} (moto starts empty every run)",
                entry.path().display()
            );
            std::fs::remove_file(entry.path())
                .map_err(|e| format!("cannot remove {}: {e}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// `cargo xtask acceptance`: builds the workspace and runs `stacksmith-acceptance` from the
/// workspace root; with `--allow-emulators`, against moto and the Kubernetes emulator it starts
/// (with dummy AWS credentials), otherwise with the caller's environment and credentials.
fn acceptance(args: &[String]) -> Result<ExitCode, String> {
    if std::env::var("STACKSMITH_ACC").as_deref() != Ok("1") {
        return Err(
            "the acceptance suite creates AWS resources that cost money and deletes them \
             again; set STACKSMITH_ACC=1 to run it (with AWS credentials of the account to use)"
                .to_owned(),
        );
    }
    if !args
        .iter()
        .any(|a| a == "--stack" || a.starts_with("--stack="))
        && !args.iter().any(|a| a == "--help" || a == "-h")
    {
        return Err(
            "usage: cargo xtask acceptance --stack NAME [ARGS...] (NAME: a stack of \
             tests/fixtures/acceptance/, e.g. `aws`)"
                .to_owned(),
        );
    }
    process::run(
        "building the workspace",
        cargo().args(["build", "--workspace", "--all-targets"]),
    )?;
    let debug = target_dir().join("debug");
    let mut command = Command::new(debug.join("stacksmith-acceptance"));
    command
        .current_dir(root())
        .arg("--provisioner")
        .arg(debug.join("provisioner"))
        .args(args);
    let emulators = args.iter().any(|a| a == "--allow-emulators");
    let environment = if emulators {
        let environment = TestEnvironment::start()?;
        environment.apply(&mut command);
        with_emulator_credentials(&mut command);
        Some(environment)
    } else {
        None
    };
    let status = command
        .status()
        .map_err(|e| format!("cannot run stacksmith-acceptance: {e}"))?;
    drop(environment);
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

fn hold_environment() -> Result<ExitCode, String> {
    let environment = TestEnvironment::start()?;
    println!("# The test servers are up. In another shell:");
    for (name, value) in environment.variables() {
        println!("export {name}={value}");
    }
    println!("# Press Ctrl-C to stop them.");
    loop {
        std::thread::park();
    }
}
