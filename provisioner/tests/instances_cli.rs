//! Instances of a template stack through the binary with the fake provider
//! (`STACKSMITH_PROVIDER=fake`): the `stacksmith:expires-at` tag fixed at the first `up`,
//! `instances`, `gc` tearing down only expired instances, `down` of one instance leaving the
//! others, and production stacks refusing `down` without `--destroy-production`.
//!
//! Time is set with `STACKSMITH_NOW` (an RFC 3339 "now" read only at the binary's edge), so an
//! instance can be made "expired" without waiting for its TTL.

use stacksmith_testkit::{describe, fake_cloud_provisioner};
use std::path::PathBuf;
use std::process::{Command, Output};

use provisioner::engine::fake::{FakeObject, FakeProvider};
use serde_json::Value;

const DEMO_STACK: &str = "tests/fixtures/engine/stacks/demo.yaml";
const EXPIRES_AT: &str = "stacksmith:expires-at";

struct Sandbox {
    dir: PathBuf,
}

impl Sandbox {
    /// A working directory with `stacks/demo.yaml`, made a template with a 48h TTL, and with
    /// `tags` replacing the stack's tags line when given.
    fn new(tags: Option<&str>) -> Self {
        let dir = std::env::temp_dir().join(stacksmith_testkit::unique_name("instances-cli"));
        std::fs::create_dir_all(dir.join("stacks")).unwrap();
        let mut stack =
            std::fs::read_to_string(stacksmith_testkit::workspace_root().join(DEMO_STACK)).unwrap();
        stack = stack.replace(
            "\nstate:\n",
            "\ninstances: { allowed: true, ttl: 48h, max_name_length: 8 }\n\nstate:\n",
        );
        if let Some(tags) = tags {
            let start = stack.find("\ntags:").unwrap() + 1;
            let end = start + stack[start..].find('\n').unwrap();
            stack.replace_range(start..end, tags);
        }
        if tags.is_some_and(|t| t.contains("production")) {
            // The guardrails want a protected database in production.
            stack = stack.replace("deletion_protection: false", "deletion_protection: true");
        }
        std::fs::write(dir.join("stacks/demo.yaml"), stack).unwrap();
        Self { dir }
    }

    fn cloud(&self) -> PathBuf {
        self.dir.join("cloud")
    }

    /// Runs the binary at the given "now".
    fn run(&self, now: &str, args: &[&str]) -> Output {
        self.command(now, args).output().unwrap()
    }

    fn command(&self, now: &str, args: &[&str]) -> Command {
        let mut command = fake_cloud_provisioner(
            env!("CARGO_BIN_EXE_provisioner"),
            &self.dir,
            "instances-cli-test-key",
        );
        command.args(args).env("STACKSMITH_NOW", now);
        command
    }

    fn ok(&self, now: &str, args: &[&str]) -> Output {
        let output = self.run(now, args);
        assert!(output.status.success(), "{args:?}: {}", describe(&output));
        output
    }

    fn up(&self, now: &str, instance: &str) {
        self.ok(
            now,
            &["up", "--stack", "demo", "--instance", instance, "--yes"],
        );
    }

    fn objects(&self) -> Vec<FakeObject> {
        if !self.cloud().exists() {
            return Vec::new();
        }
        FakeProvider::objects(&self.cloud()).unwrap()
    }

    /// Objects in the fake cloud that belong to `instance`.
    fn objects_of(&self, instance: &str) -> Vec<FakeObject> {
        self.objects()
            .into_iter()
            .filter(|o| o.tags.get("stacksmith:instance").map(String::as_str) == Some(instance))
            .collect()
    }

    fn instances_json(&self, now: &str) -> Value {
        let output = self.ok(now, &["instances", "--stack", "demo", "--json"]);
        serde_json::from_slice(&output.stdout).unwrap()
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

fn listed(document: &Value) -> Vec<String> {
    document["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instance"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn every_taggable_resource_carries_an_expiry_fixed_at_the_first_up() {
    let sandbox = Sandbox::new(None);
    sandbox.up("2026-12-01T10:00:00Z", "pr-1");
    let objects = sandbox.objects_of("pr-1");
    let resources = objects.len();
    assert!(
        resources > 40,
        "the whole demo stack exists ({resources} objects)"
    );
    let tagged: Vec<&FakeObject> = objects
        .iter()
        .filter(|o| o.properties.contains_key("tags"))
        .collect();
    assert!(tagged.len() > 20, "most resources have tags");
    for object in &tagged {
        assert_eq!(
            object.properties["tags"][EXPIRES_AT], "2026-12-03T10:00:00Z",
            "{} ({})",
            object.id, object.resource_type
        );
    }

    // A day later the recorded lifetime is kept: nothing to change, the tag does not move.
    let plan = sandbox.run(
        "2026-12-02T10:00:00Z",
        &[
            "plan",
            "--stack",
            "demo",
            "--instance",
            "pr-1",
            "--detailed-exitcode",
        ],
    );
    assert_eq!(plan.status.code(), Some(0), "{}", describe(&plan));
    // The expiry tag is expected, not drift.
    let drift = sandbox.run(
        "2026-12-02T10:00:00Z",
        &["drift", "--stack", "demo", "--instance", "pr-1"],
    );
    assert_eq!(drift.status.code(), Some(0), "{}", describe(&drift));
    sandbox.up("2026-12-02T10:00:00Z", "pr-1");
    for object in sandbox.objects_of("pr-1") {
        if object.properties.contains_key("tags") {
            assert_eq!(
                object.properties["tags"][EXPIRES_AT],
                "2026-12-03T10:00:00Z"
            );
        }
    }

    let listing = sandbox.instances_json("2026-12-02T16:30:00Z");
    assert_eq!(listing["format_version"], 1);
    let instance = &listing["instances"][0];
    assert_eq!(instance["instance"], "pr-1");
    assert_eq!(instance["deployment"], "demo-pr-1");
    assert_eq!(instance["created_at"], "2026-12-01T10:00:00Z");
    assert_eq!(instance["expires_at"], "2026-12-03T10:00:00Z");
    assert_eq!(instance["age_seconds"], 30 * 3600 + 1800);
    assert_eq!(instance["expired"], false);
    assert_eq!(instance["resources"], resources);

    let table = sandbox.ok("2026-12-02T16:30:00Z", &["instances", "--stack", "demo"]);
    let table = text(&table.stdout);
    assert!(table.starts_with("INSTANCE"), "{table}");
    assert!(table.contains("pr-1") && table.contains("1d 6h"), "{table}");
    assert!(
        table.contains("2026-12-03T10:00:00Z (in 17h 30m)"),
        "{table}"
    );
}

#[test]
fn gc_tears_down_only_the_expired_instances() {
    let sandbox = Sandbox::new(None);
    sandbox.up("2026-12-01T00:00:00Z", "pr-old");
    let resources = sandbox.objects().len();
    sandbox.up("2026-12-01T01:00:00Z", "pr-old2");
    sandbox.up("2026-12-02T12:00:00Z", "pr-new");
    let now = "2026-12-03T06:00:00Z";

    let listing = sandbox.instances_json(now);
    assert_eq!(listed(&listing), ["pr-old", "pr-old2", "pr-new"]);
    let expired: Vec<bool> = listing["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["expired"].as_bool().unwrap())
        .collect();
    assert_eq!(expired, [true, true, false]);

    let dry = sandbox.ok(now, &["gc", "--stack", "demo", "--dry-run", "--json"]);
    let report: Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["expired"][0]["outcome"], "would_tear_down");
    assert_eq!(report["expired"].as_array().unwrap().len(), 2);
    assert_eq!(report["kept"][0]["instance"], "pr-new");
    assert_eq!(
        sandbox.objects().len(),
        3 * resources,
        "a dry run deletes nothing"
    );

    let refused = sandbox.run(now, &["gc", "--stack", "demo"]);
    assert_eq!(refused.status.code(), Some(1), "{}", describe(&refused));
    assert!(
        text(&refused.stderr).contains("--yes"),
        "{}",
        describe(&refused)
    );
    assert_eq!(sandbox.objects().len(), 3 * resources);

    let gc = sandbox.ok(now, &["gc", "--stack", "demo", "--yes", "--json"]);
    let report: Value = serde_json::from_slice(&gc.stdout).unwrap();
    let outcomes: Vec<(&str, &str)> = report["expired"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["instance"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [("pr-old", "torn_down"), ("pr-old2", "torn_down")]
    );
    let stderr = text(&gc.stderr);
    assert!(
        stderr.contains("pr-old: deleted") || stderr.contains("pr-old: deleting"),
        "{stderr}"
    );
    assert!(sandbox.objects_of("pr-old").is_empty());
    assert!(sandbox.objects_of("pr-old2").is_empty());
    assert_eq!(
        sandbox.objects_of("pr-new").len(),
        resources,
        "the unexpired instance is untouched"
    );
    assert_eq!(sandbox.objects().len(), resources);
    assert_eq!(listed(&sandbox.instances_json(now)), ["pr-new"]);

    let again = sandbox.ok(now, &["gc", "--stack", "demo", "--yes"]);
    assert!(
        text(&again.stderr).contains("No expired instance"),
        "{}",
        describe(&again)
    );
    assert_eq!(sandbox.objects_of("pr-new").len(), resources);
}

#[test]
fn down_of_one_instance_leaves_the_others_intact() {
    let sandbox = Sandbox::new(None);
    let now = "2026-12-01T00:00:00Z";
    sandbox.up(now, "pr-a");
    let resources = sandbox.objects().len();
    sandbox.up(now, "pr-b");
    sandbox.ok(
        now,
        &["down", "--stack", "demo", "--instance", "pr-a", "--yes"],
    );
    assert!(sandbox.objects_of("pr-a").is_empty());
    assert_eq!(sandbox.objects_of("pr-b").len(), resources);
    assert_eq!(listed(&sandbox.instances_json(now)), ["pr-b"]);
    let plan = sandbox.run(
        now,
        &[
            "plan",
            "--stack",
            "demo",
            "--instance",
            "pr-b",
            "--detailed-exitcode",
        ],
    );
    assert_eq!(plan.status.code(), Some(0), "{}", describe(&plan));
}

#[test]
fn production_down_is_refused_without_destroy_production() {
    let sandbox = Sandbox::new(Some(
        "tags: { team: platform, managed-by: stacksmith, cost-center: \"1234\", environment: production }",
    ));
    let now = "2026-12-01T00:00:00Z";
    sandbox.ok(now, &["up", "--stack", "demo", "--yes"]);
    let resources = sandbox.objects().len();
    assert!(resources > 40, "{resources} objects");

    let refused = sandbox.run(now, &["down", "--stack", "demo", "--yes"]);
    assert_eq!(refused.status.code(), Some(1), "{}", describe(&refused));
    let stderr = text(&refused.stderr);
    assert!(stderr.contains("production"), "{stderr}");
    assert!(stderr.contains("--destroy-production"), "{stderr}");
    assert_eq!(sandbox.objects().len(), resources, "nothing deleted");
    assert!(
        !stderr.contains("Locking the state"),
        "refused before touching state: {stderr}"
    );

    // Production also protects its database: both flags are needed, each for its own reason.
    let protected = sandbox.run(
        now,
        &["down", "--stack", "demo", "--yes", "--destroy-production"],
    );
    assert_eq!(protected.status.code(), Some(1), "{}", describe(&protected));
    assert!(
        text(&protected.stderr).contains("--allow-deletion-protected"),
        "{}",
        describe(&protected)
    );
    assert_eq!(sandbox.objects().len(), resources, "nothing deleted");
    sandbox.ok(
        now,
        &[
            "down",
            "--stack",
            "demo",
            "--yes",
            "--destroy-production",
            "--allow-deletion-protected",
        ],
    );
    assert!(sandbox.objects().is_empty());
}

#[test]
fn a_saved_plan_applies_the_expiry_it_was_made_with() {
    let sandbox = Sandbox::new(None);
    let plan = sandbox.ok(
        "2026-12-01T08:00:00Z",
        &[
            "plan",
            "--stack",
            "demo",
            "--instance",
            "pr-9",
            "--out",
            "pr-9.plan.json",
        ],
    );
    assert!(plan.status.success());
    sandbox.ok(
        "2026-12-01T09:30:00Z",
        &[
            "up",
            "--stack",
            "demo",
            "--instance",
            "pr-9",
            "--plan",
            "pr-9.plan.json",
            "--yes",
        ],
    );
    for object in sandbox.objects_of("pr-9") {
        if object.properties.contains_key("tags") {
            assert_eq!(
                object.properties["tags"][EXPIRES_AT],
                "2026-12-03T08:00:00Z"
            );
        }
    }
    let listing = sandbox.instances_json("2026-12-01T10:00:00Z");
    assert_eq!(
        listing["instances"][0]["created_at"],
        "2026-12-01T08:00:00Z"
    );
    assert_eq!(
        listing["instances"][0]["expires_at"],
        "2026-12-03T08:00:00Z"
    );
    let again = sandbox.run(
        "2026-12-02T10:00:00Z",
        &[
            "plan",
            "--stack",
            "demo",
            "--instance",
            "pr-9",
            "--detailed-exitcode",
        ],
    );
    assert_eq!(again.status.code(), Some(0), "{}", describe(&again));
}

#[test]
fn a_delete_that_keeps_failing_makes_down_exit_1_naming_it_and_a_rerun_finishes() {
    let sandbox = Sandbox::new(None);
    let now = "2026-12-01T00:00:00Z";
    sandbox.up(now, "pr-1");
    let resources = sandbox.objects().len();
    let failed = sandbox
        .command(
            now,
            &["down", "--stack", "demo", "--instance", "pr-1", "--yes"],
        )
        .env("STACKSMITH_FAKE_FAIL", "network.vpc")
        .output()
        .unwrap();
    assert_eq!(failed.status.code(), Some(1), "{}", describe(&failed));
    let stderr = text(&failed.stderr);
    assert!(stderr.contains("FAILED deleting network.vpc"), "{stderr}");
    let left = sandbox.objects_of("pr-1");
    assert!(
        !left.is_empty() && left.len() < resources,
        "everything but what the VPC holds up went: {} of {resources} left",
        left.len()
    );
    assert!(
        left.iter()
            .any(|o| o.tags["stacksmith:address"] == "network.vpc")
    );
    assert_eq!(
        listed(&sandbox.instances_json(now)),
        ["pr-1"],
        "the instance is still listed while something of it exists"
    );

    sandbox.ok(
        now,
        &["down", "--stack", "demo", "--instance", "pr-1", "--yes"],
    );
    assert!(sandbox.objects_of("pr-1").is_empty());
}
