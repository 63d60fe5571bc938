//! The `provisioner` binary with the fake provider (`STACKSMITH_PROVIDER=fake`): exit codes,
//! saved plans, SIGKILL in the middle of an apply at several points, Ctrl-C, and two concurrent
//! `up` runs on one stack with local and Postgres state.

use stacksmith_testkit::describe;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use provisioner::engine::fake::{FakeObject, FakeProvider};

const DEMO_STACK: &str = "tests/fixtures/engine/stacks/demo.yaml";
/// Resources the demo stack derives (see the golden case `stack_demo_full_create`).
const DEMO_RESOURCES: usize = 58;

struct Sandbox {
    dir: PathBuf,
}

impl Sandbox {
    /// A working directory with `stacks/demo.yaml`; `state` replaces the stack's state section.
    fn new(state: Option<&str>) -> Self {
        let dir = std::env::temp_dir().join(stacksmith_testkit::unique_name("engine-cli"));
        std::fs::create_dir_all(dir.join("stacks")).unwrap();
        let mut stack =
            std::fs::read_to_string(stacksmith_testkit::workspace_root().join(DEMO_STACK)).unwrap();
        if let Some(state) = state {
            let start = stack.find("state:").unwrap();
            let end = start + stack[start..].find("\n\n").unwrap();
            stack.replace_range(start..end, state);
        }
        std::fs::write(dir.join("stacks/demo.yaml"), stack).unwrap();
        Self { dir }
    }

    fn cloud(&self) -> PathBuf {
        self.dir.join("cloud")
    }

    fn command(&self, latency_ms: u64, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_provisioner"));
        command
            .args(args)
            .current_dir(&self.dir)
            .env("STACKSMITH_PROVIDER", "fake")
            .env(
                "STACKSMITH_POLICIES_DIR",
                stacksmith_testkit::workspace_root().join("policies"),
            )
            .env("STACKSMITH_FAKE_CLOUD_DIR", self.cloud())
            .env("STACKSMITH_FAKE_LATENCY_MS", latency_ms.to_string())
            .env("STACKSMITH_STATE_KEY", "engine-cli-test-key")
            .env("NO_COLOR", "1")
            .env_remove("STACKSMITH_FAKE_FAIL")
            .env_remove("STACKSMITH_FAKE_THROTTLE")
            .stdin(Stdio::null());
        command
    }

    fn run(&self, latency_ms: u64, args: &[&str]) -> Output {
        self.command(latency_ms, args).output().unwrap()
    }

    fn spawn(&self, latency_ms: u64, args: &[&str]) -> Child {
        self.command(latency_ms, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn objects(&self) -> Vec<FakeObject> {
        if !self.cloud().exists() {
            return Vec::new();
        }
        FakeProvider::objects(&self.cloud()).unwrap()
    }

    fn lock_file(&self) -> PathBuf {
        self.dir.join(".stacksmith/state/demo.json.lock")
    }

    fn state_text(&self) -> String {
        std::fs::read_to_string(self.dir.join(".stacksmith/state/demo.json")).unwrap_or_default()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Polls `condition` every 10 ms until it holds; panics after `limit`.
fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Objects per ownership address; panics on any duplicate.
fn per_address(objects: &[FakeObject]) -> HashMap<String, usize> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for object in objects {
        *counts
            .entry(object.tags["stacksmith:address"].clone())
            .or_default() += 1;
    }
    let duplicates: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "duplicate objects: {duplicates:?}");
    counts
}

/// After convergence: one object per resource, nothing pending, and a plan with no changes.
fn assert_converged(sandbox: &Sandbox) {
    assert_eq!(per_address(&sandbox.objects()).len(), DEMO_RESOURCES);
    let listing = sandbox.run(0, &["state", "list", "--stack", "demo"]);
    assert!(listing.status.success(), "{}", describe(&listing));
    let listing = text(&listing.stdout);
    assert_eq!(listing.lines().count(), DEMO_RESOURCES, "{listing}");
    assert!(
        !listing.contains("pending") && !listing.contains("deposed"),
        "{listing}"
    );
    let plan = sandbox.run(0, &["plan", "--stack", "demo", "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(0), "{}", describe(&plan));
}

#[test]
fn plan_exit_codes_json_and_saved_plans() {
    let sandbox = Sandbox::new(None);
    let plan = sandbox.run(0, &["plan", "--stack", "demo", "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(2), "{}", describe(&plan));
    assert!(text(&plan.stdout).contains(&format!("Plan: {DEMO_RESOURCES} to create")));
    assert!(
        !text(&plan.stdout).contains('\x1b'),
        "no colour when not a terminal"
    );

    let json = sandbox.run(
        0,
        &["plan", "--stack", "demo", "--json", "--out", "saved.json"],
    );
    assert!(json.status.success(), "{}", describe(&json));
    let document: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(document["format_version"], 1);
    assert_eq!(document["summary"]["create"], DEMO_RESOURCES);
    std::fs::copy(
        sandbox.dir.join("saved.json"),
        sandbox.dir.join("stale.json"),
    )
    .unwrap();

    let up = sandbox.run(
        0,
        &["up", "--stack", "demo", "--plan", "saved.json", "--yes"],
    );
    assert!(up.status.success(), "{}", describe(&up));
    assert_converged(&sandbox);
    // The secrets stay encrypted: the fake cloud saw the password, state and output did not.
    let database = sandbox
        .objects()
        .into_iter()
        .find(|o| o.tags["stacksmith:address"] == "database.instance")
        .unwrap();
    let password = database.properties["master_password"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!sandbox.state_text().contains(&password));
    let show = sandbox.run(
        0,
        &["state", "show", "--stack", "demo", "database.instance"],
    );
    assert!(show.status.success(), "{}", describe(&show));
    assert!(!text(&show.stdout).contains(&password));
    assert!(text(&show.stdout).contains("(sensitive)"));

    // The same plan again: state moved since it was made.
    let stale = sandbox.run(
        0,
        &["up", "--stack", "demo", "--plan", "stale.json", "--yes"],
    );
    assert_eq!(stale.status.code(), Some(1), "{}", describe(&stale));
    assert!(
        text(&stale.stderr).contains("state moved since the plan was made"),
        "{}",
        describe(&stale)
    );
    assert_eq!(per_address(&sandbox.objects()).len(), DEMO_RESOURCES);
}

#[test]
fn up_refuses_to_run_unattended_without_yes() {
    let sandbox = Sandbox::new(None);
    let up = sandbox.run(0, &["up", "--stack", "demo"]);
    assert_eq!(up.status.code(), Some(1), "{}", describe(&up));
    assert!(text(&up.stderr).contains("--yes"), "{}", describe(&up));
    assert!(sandbox.objects().is_empty());
    assert!(!sandbox.lock_file().exists(), "the lock was released");
}

#[test]
fn graph_prints_dot_with_the_critical_path() {
    let sandbox = Sandbox::new(None);
    let graph = sandbox.run(0, &["graph", "--stack", "demo"]);
    assert!(graph.status.success(), "{}", describe(&graph));
    let dot = text(&graph.stdout);
    assert!(dot.starts_with("digraph \"demo\" {"), "{dot}");
    assert!(dot.contains("\"cache.replication_group\" [label=\"cache.replication_group\\naws.elasticache.replication_group\\n~40m\", color=red"), "{dot}");
    assert!(dot.contains("critical path: 40m13s"), "{dot}");
}

#[test]
fn up_json_progress_is_one_object_per_line() {
    let sandbox = Sandbox::new(None);
    let up = sandbox.run(
        0,
        &[
            "up",
            "--stack",
            "demo",
            "--yes",
            "--json",
            "--parallelism",
            "3",
        ],
    );
    assert!(up.status.success(), "{}", describe(&up));
    let lines: Vec<serde_json::Value> = text(&up.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("every line is JSON"))
        .collect();
    let started = lines.iter().filter(|l| l["event"] == "started").count();
    let finished = lines.iter().filter(|l| l["event"] == "finished").count();
    assert_eq!((started, finished), (DEMO_RESOURCES, DEMO_RESOURCES));
    // Replaying the stream, never more than --parallelism resources were in flight.
    let mut in_flight = 0usize;
    let mut most = 0usize;
    for line in &lines {
        match line["event"].as_str() {
            Some("started") => in_flight += 1,
            Some("finished") => in_flight -= 1,
            _ => {}
        }
        most = most.max(in_flight);
    }
    assert!((1..=3).contains(&most), "{most} in flight");
    assert_eq!(lines[0]["event"], "plan");
    assert_eq!(lines[0]["summary"]["create"], DEMO_RESOURCES);
    // The cloud side's summary, then the in-cluster step's event: the demo stack has a
    // baseline, and the fake cloud's cluster cannot be reached.
    let [.., summary, cluster] = lines.as_slice() else {
        panic!("too few events: {lines:?}");
    };
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["succeeded"], true);
    assert_eq!(cluster["event"], "cluster");
    assert_eq!(cluster["installed"], false);
}

/// Starts `up` with 120 ms per call, waits for `ready`, kills it with SIGKILL, then runs `up`
/// again and checks it converges without duplicates.
fn kill_then_converge(point: &str, ready: impl Fn(&Sandbox) -> bool) {
    let sandbox = Sandbox::new(None);
    let mut child = sandbox.spawn(120, &["up", "--stack", "demo", "--yes"]);
    wait_until(Duration::from_secs(60), point, || ready(&sandbox));
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "{point}: the run finished before the kill"
    );
    let before = sandbox.objects().len();
    assert!(
        before < DEMO_RESOURCES,
        "{point}: killed too late ({before} objects)"
    );
    assert!(
        sandbox.lock_file().exists(),
        "{point}: the killed run left its lock"
    );
    // Calls were in flight: the journal holds their pending entries.
    let state: serde_json::Value = serde_json::from_str(&sandbox.state_text()).unwrap();
    let pending = state["pending"].as_array().map_or(0, Vec::len);
    assert!(pending > 0, "{point}: no pending entry in {state}");

    let rerun = sandbox.run(0, &["up", "--stack", "demo", "--yes"]);
    assert!(rerun.status.success(), "{point}: {}", describe(&rerun));
    assert!(
        text(&rerun.stderr).contains(&format!("Settled {pending} pending operation(s)")),
        "{point}: {}",
        describe(&rerun)
    );
    if point == "an unrecorded object" {
        assert!(
            text(&rerun.stderr).contains("by its ownership tags"),
            "{}",
            describe(&rerun)
        );
    }
    assert_converged(&sandbox);
}

#[test]
fn sigkill_right_after_the_first_pending_entry_is_journalled() {
    kill_then_converge("a pending entry in state", |s| {
        s.state_text().contains("\"pending\"")
    });
}

#[test]
fn sigkill_after_the_first_objects_exist() {
    kill_then_converge("3 objects", |s| s.objects().len() >= 3);
}

#[test]
fn sigkill_in_the_middle_of_the_apply() {
    kill_then_converge("20 objects", |s| s.objects().len() >= 20);
}

#[test]
fn sigkill_near_the_end_of_the_apply() {
    kill_then_converge("40 objects", |s| s.objects().len() >= 40);
}

#[test]
fn state_unlock_removes_a_lock_left_by_a_killed_run() {
    let sandbox = Sandbox::new(None);
    let mut child = sandbox.spawn(120, &["up", "--stack", "demo", "--yes"]);
    wait_until(Duration::from_secs(60), "the lock", || {
        sandbox.lock_file().exists()
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let unlock = sandbox.run(0, &["state", "unlock", "--stack", "demo"]);
    assert!(unlock.status.success(), "{}", describe(&unlock));
    assert!(
        text(&unlock.stderr).contains("Removed the lock held by"),
        "{}",
        describe(&unlock)
    );
    assert!(!sandbox.lock_file().exists());
}

#[test]
fn ctrl_c_finishes_calls_in_flight_records_them_and_exits_1() {
    let sandbox = Sandbox::new(None);
    let child = sandbox.spawn(150, &["up", "--stack", "demo", "--yes"]);
    wait_until(Duration::from_secs(60), "5 objects", || {
        sandbox.objects().len() >= 5
    });
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        text(&output.stderr).contains("(interrupted)"),
        "{}",
        describe(&output)
    );
    let state = sandbox.state_text();
    let document: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert!(
        document.get("pending").is_none(),
        "in-flight calls were settled: {state}"
    );
    let recorded = document["resources"].as_object().unwrap().len();
    assert_eq!(recorded, sandbox.objects().len());
    assert!(recorded < DEMO_RESOURCES);
    assert!(!sandbox.lock_file().exists(), "the lock was released");
}

/// Two `up` runs on one stack: a second run with a short lock timeout fails naming the holder; a
/// third with a long one waits until the first releases the lock, then finds nothing to do.
fn concurrent_ups(sandbox: &Sandbox, first_holds_lock: impl Fn() -> bool) {
    let first = sandbox.spawn(200, &["up", "--stack", "demo", "--yes"]);
    wait_until(
        Duration::from_secs(60),
        "the first run's lock",
        &first_holds_lock,
    );

    let second = sandbox.run(
        0,
        &["up", "--stack", "demo", "--yes", "--lock-timeout", "1s"],
    );
    assert_eq!(second.status.code(), Some(1), "{}", describe(&second));
    // miette wraps long messages: compare with the frame and line breaks removed.
    let stderr = text(&second.stderr)
        .replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(stderr.contains("locked by"), "{stderr}");
    assert!(stderr.contains("provisioner up"), "{stderr}");
    assert!(stderr.contains(&format!("pid {}", first.id())), "{stderr}");

    let third = sandbox.spawn(
        0,
        &["up", "--stack", "demo", "--yes", "--lock-timeout", "120s"],
    );
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", describe(&first));
    let third = third.wait_with_output().unwrap();
    assert!(third.status.success(), "{}", describe(&third));
    assert!(
        text(&third.stderr).contains("No changes."),
        "{}",
        describe(&third)
    );
    assert_converged(sandbox);
}

#[test]
fn two_concurrent_ups_with_local_state() {
    let sandbox = Sandbox::new(None);
    let lock = sandbox.lock_file();
    concurrent_ups(&sandbox, || lock.exists());
}

fn postgres_database() -> String {
    let admin = stacksmith_testkit::database_url();
    let name = stacksmith_testkit::unique_name("engine_state").to_lowercase();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use sqlx::Connection;
        let mut connection = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut connection)
            .await
            .unwrap();
    });
    let (base, _) = admin.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

#[test]
fn two_concurrent_ups_with_postgres_state() {
    let url = postgres_database();
    let sandbox = Sandbox::new(Some(&format!(
        "state:\n  backend: postgres\n  url: {url}\n  lock_timeout: 5s"
    )));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let lock_held = || {
        runtime.block_on(async {
            use sqlx::Connection;
            let Ok(mut connection) = sqlx::PgConnection::connect(&url).await else {
                return false;
            };
            let held: Result<(i64,), _> = sqlx::query_as(
                "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
                 WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()",
            )
            .fetch_one(&mut connection)
            .await;
            let _ = connection.close().await;
            held.is_ok_and(|(n,)| n > 0)
        })
    };
    concurrent_ups(&sandbox, lock_held);
    assert!(
        !sandbox.dir.join(".stacksmith/state/demo.json").exists(),
        "state went to Postgres"
    );
}

#[test]
fn sigkill_after_an_object_exists_that_state_has_not_recorded() {
    // The window the ownership tags are for: the cloud made the object, the journal only says
    // "create pending". The rerun must adopt it rather than create a second one.
    kill_then_converge("an unrecorded object", |s| {
        let state = s.state_text();
        s.objects().iter().any(|o| !state.contains(&o.id))
    });
}

#[test]
fn plan_refresh_shows_drift_and_out_of_band_deletes() {
    let sandbox = Sandbox::new(None);
    let up = sandbox.run(0, &["up", "--stack", "demo", "--yes"]);
    assert!(up.status.success(), "{}", describe(&up));
    let objects = sandbox.objects();
    let find = |address: &str| {
        objects
            .iter()
            .find(|o| o.tags["stacksmith:address"] == address)
            .unwrap()
            .clone()
    };
    // Someone edits the VPC's tags and deletes a route table behind our back.
    let mut vpc = find("network.vpc");
    vpc.properties["tags"]["team"] = serde_json::json!("someone-else");
    std::fs::write(
        sandbox.cloud().join(format!("{}.json", vpc.id)),
        serde_json::to_vec(&vpc).unwrap(),
    )
    .unwrap();
    let table = find("network.route_table.private[1]");
    std::fs::remove_file(sandbox.cloud().join(format!("{}.json", table.id))).unwrap();

    let without = sandbox.run(0, &["plan", "--stack", "demo", "--detailed-exitcode"]);
    assert_eq!(without.status.code(), Some(0), "{}", describe(&without));
    let with = sandbox.run(
        0,
        &[
            "plan",
            "--stack",
            "demo",
            "--refresh",
            "--detailed-exitcode",
        ],
    );
    assert_eq!(with.status.code(), Some(2), "{}", describe(&with));
    let shown = text(&with.stdout);
    assert!(shown.contains("~ network.vpc (aws.ec2.vpc)"), "{shown}");
    assert!(shown.contains("\"team\":\"someone-else\""), "{shown}");
    assert!(
        shown.contains("+ network.route_table.private[1]"),
        "{shown}"
    );
    assert!(shown.contains("deleted outside Stacksmith"), "{shown}");
}

/// The sealed secrets in the state file (`{"$encrypted": ...}` values), as text.
fn sealed_values(sandbox: &Sandbox) -> Vec<String> {
    let state: serde_json::Value = serde_json::from_str(&sandbox.state_text()).unwrap();
    let mut found = Vec::new();
    for record in state["resources"].as_object().unwrap().values() {
        for value in record["properties"].as_object().unwrap().values() {
            if let Some(sealed) = value.get("$encrypted").and_then(|v| v.as_str()) {
                found.push(sealed.to_owned());
            }
        }
    }
    found
}

#[test]
fn output_reads_state_and_shows_secrets_only_when_asked() {
    let sandbox = Sandbox::new(None);
    let before = sandbox.run(0, &["output", "--stack", "demo"]);
    assert_eq!(before.status.code(), Some(1), "{}", describe(&before));
    assert!(
        text(&before.stderr).contains("nothing is deployed"),
        "{}",
        describe(&before)
    );

    let up = sandbox.run(0, &["up", "--stack", "demo", "--yes"]);
    assert!(up.status.success(), "{}", describe(&up));
    assert_eq!(
        sealed_values(&sandbox).len(),
        2,
        "password and auth token sealed"
    );
    // `output` reads state only: with the fake cloud gone it still answers.
    std::fs::rename(sandbox.cloud(), sandbox.dir.join("cloud-away")).unwrap();

    let plain = sandbox.run(0, &["output", "--stack", "demo"]);
    assert!(plain.status.success(), "{}", describe(&plain));
    let shown = text(&plain.stdout);
    for expected in [
        "cluster:",
        "database:",
        "cache:",
        ".fake.internal",
        "(sensitive)",
    ] {
        assert!(shown.contains(expected), "{expected} in:\n{shown}");
    }

    let json = sandbox.run(0, &["output", "--stack", "demo", "--json"]);
    assert!(json.status.success(), "{}", describe(&json));
    let document: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(document["stack"], "demo");
    assert!(
        document["cluster"]["endpoint"]
            .as_str()
            .unwrap()
            .ends_with(".fake.internal")
    );
    assert!(document["database"]["address"].as_str().is_some());
    assert!(document["cache"]["address"].as_str().is_some());
    assert_eq!(document["database"]["username"], "stacksmith");
    assert_eq!(document["database"]["password"], "(sensitive)");
    assert_eq!(document["cache"]["auth_token"], "(sensitive)");

    let secret = sandbox.run(
        0,
        &["output", "--stack", "demo", "--json", "--show-secrets"],
    );
    assert!(secret.status.success(), "{}", describe(&secret));
    let document: serde_json::Value = serde_json::from_slice(&secret.stdout).unwrap();
    let password = document["database"]["password"].as_str().unwrap();
    let token = document["cache"]["auth_token"].as_str().unwrap();
    assert_eq!(
        (password.len(), token.len()),
        (32, 64),
        "the generated lengths"
    );
    assert!(!text(&secret.stderr).contains(password));
    for other in [&plain, &json] {
        let all = format!("{}{}", text(&other.stdout), text(&other.stderr));
        assert!(
            !all.contains(password) && !all.contains(token),
            "no secret without the flag"
        );
    }

    // Another key cannot open them: an error, no garbage.
    let wrong = sandbox
        .command(0, &["output", "--stack", "demo", "--show-secrets"])
        .env("STACKSMITH_STATE_KEY", "another-key")
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(1), "{}", describe(&wrong));
    assert!(
        text(&wrong.stderr).contains("cannot decrypt"),
        "{}",
        describe(&wrong)
    );
}

#[test]
fn down_refuses_unattended_then_deletes_everything_and_empties_state() {
    let sandbox = Sandbox::new(None);
    let up = sandbox.run(0, &["up", "--stack", "demo", "--yes"]);
    assert!(up.status.success(), "{}", describe(&up));
    assert_eq!(per_address(&sandbox.objects()).len(), DEMO_RESOURCES);

    let refused = sandbox.run(0, &["down", "--stack", "demo"]);
    assert_eq!(refused.status.code(), Some(1), "{}", describe(&refused));
    assert!(
        text(&refused.stderr).contains("--yes"),
        "{}",
        describe(&refused)
    );
    assert_eq!(per_address(&sandbox.objects()).len(), DEMO_RESOURCES);
    assert!(!sandbox.lock_file().exists(), "the lock was released");

    let down = sandbox.run(0, &["down", "--stack", "demo", "--yes", "--json"]);
    assert!(down.status.success(), "{}", describe(&down));
    let events: Vec<serde_json::Value> = text(&down.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events[0]["event"], "plan");
    assert_eq!(events[0]["summary"]["delete"], DEMO_RESOURCES);
    assert_eq!(events.last().unwrap()["event"], "summary");
    assert_eq!(events.last().unwrap()["succeeded"], true);
    assert!(sandbox.objects().is_empty(), "the fake cloud is empty");
    let listing = sandbox.run(0, &["state", "list", "--stack", "demo"]);
    assert!(listing.status.success(), "{}", describe(&listing));
    assert_eq!(text(&listing.stdout), "", "state records nothing");
    assert!(!sandbox.lock_file().exists(), "the lock was released");

    let again = sandbox.run(0, &["down", "--stack", "demo", "--yes"]);
    assert!(again.status.success(), "{}", describe(&again));
    assert!(
        text(&again.stderr).contains("Nothing to delete"),
        "{}",
        describe(&again)
    );
}

#[test]
fn down_refuses_deletion_protected_resources_unless_allowed() {
    let sandbox = Sandbox::new(None);
    let path = sandbox.dir.join("stacks/demo.yaml");
    let stack = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        stack.replace("deletion_protection: false", "deletion_protection: true"),
    )
    .unwrap();
    let up = sandbox.run(0, &["up", "--stack", "demo", "--yes"]);
    assert!(up.status.success(), "{}", describe(&up));

    let refused = sandbox.run(0, &["down", "--stack", "demo", "--yes"]);
    assert_eq!(refused.status.code(), Some(1), "{}", describe(&refused));
    let stderr = text(&refused.stderr);
    assert!(stderr.contains("database.instance"), "{stderr}");
    assert!(stderr.contains("--allow-deletion-protected"), "{stderr}");
    assert_eq!(
        per_address(&sandbox.objects()).len(),
        DEMO_RESOURCES,
        "nothing deleted"
    );

    let allowed = sandbox.run(
        0,
        &[
            "down",
            "--stack",
            "demo",
            "--yes",
            "--allow-deletion-protected",
        ],
    );
    assert!(allowed.status.success(), "{}", describe(&allowed));
    assert!(sandbox.objects().is_empty());
}
