//! `provisioner policy check` and `provisioner policy test`, run as a user runs them: the real
//! binary, from the repository root, against the shipped `policies/` and stacks, the unsafe
//! variants of the production stack in `tests/fixtures/unsafe-stacks/`, and throwaway policy
//! directories for errors. Everything is local: no state is read, no network.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use provisioner::engine::desired;
use provisioner::engine::planner::{self, PlanInput};
use provisioner::engine::types::TypeCatalog;
use provisioner::policy::{self, PolicyError, Severity};
use provisioner::stack::{LoadRequest, LoadedStack, StackSource};
use serde_json::Value;
use stacksmith_testkit::{unique_name, workspace_root};

const STATE_URL: &str = "postgres://stacksmith:hunter2@127.0.0.1:5432/stacksmith_state";

/// Each unsafe variant, the address its deny must name, and a fragment of the message.
const UNSAFE: &[(&str, &str, &str)] = &[
    ("tags-missing-cost-center", "network.vpc", "`cost-center`"),
    (
        "database-deletion-protection-off",
        "database.instance",
        "deletion protection",
    ),
    ("database-single-az", "database.instance", "multi-AZ"),
    (
        "database-short-backups",
        "database.instance",
        "backups for 3 days",
    ),
    (
        "cache-at-rest-encryption-off",
        "cache.replication_group",
        "at rest",
    ),
    (
        "cache-transit-encryption-off",
        "cache.replication_group",
        "in transit",
    ),
    (
        "cache-transit-encryption-off",
        "cache.replication_group",
        "auth token",
    ),
    (
        "endpoint-open-to-world",
        "cluster.control_plane",
        "0.0.0.0/0",
    ),
    (
        "endpoint-no-public-cidrs",
        "cluster.control_plane",
        "0.0.0.0/0",
    ),
    (
        "node-group-unbounded",
        "cluster.node_group.workers",
        "500 nodes",
    ),
    (
        "node-groups-without-autoscaler",
        "cluster.node_group.workers",
        "nothing adds nodes",
    ),
    (
        "network-policies-not-enforced",
        "baseline.network_policy.default_deny",
        "would not be enforced",
    ),
    (
        "autoscaling-without-metrics-server",
        "controlplane.deployment",
        "metrics-server",
    ),
    (
        "tier-above-the-api",
        "baseline.priority_class.premium",
        "could preempt the API",
    ),
    (
        "controlplane-single-replica",
        "controlplane.deployment",
        "runs 1 replica",
    ),
    (
        "controlplane-no-limits",
        "controlplane.deployment",
        "limit for cpu",
    ),
    (
        "controlplane-no-rate-limit",
        "controlplane.deployment",
        "no rate limit",
    ),
    (
        "controlplane-latest-image",
        "controlplane.deployment",
        "not pinned",
    ),
    (
        "controlplane-untagged-image",
        "controlplane.deployment",
        "not pinned",
    ),
    (
        "pod-security-system-baseline",
        "baseline.namespace.system",
        "`baseline`",
    ),
    (
        "network-policies-none",
        "baseline.network_policy.default_deny",
        "`none`",
    ),
    (
        "worker-pool-latest-image",
        "controlplane.worker_pool.default",
        "not pinned",
    ),
    (
        "pod-security-workload-baseline",
        "baseline.namespace.workload",
        "must be `restricted`",
    ),
];

fn provisioner(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .args(args)
        .current_dir(workspace_root())
        .env("NO_COLOR", "1")
        .env("COLUMNS", "100")
        .env("STACKSMITH_STATE_URL", STATE_URL)
        .env_remove("STACKSMITH_STACKS_DIR")
        .env_remove("STACKSMITH_POLICIES_DIR")
        .output()
        .expect("the provisioner binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn unsafe_file(case: &str) -> String {
    format!("tests/fixtures/unsafe-stacks/{case}.yaml")
}

fn load(source: StackSource) -> LoadedStack {
    let request = LoadRequest {
        source,
        instance: None,
    };
    let env = |name: &str| (name == "STACKSMITH_STATE_URL").then(|| STATE_URL.to_owned());
    provisioner::stack::load_with_env(&request, &env)
        .and_then(provisioner::stack::Loaded::into_deployable)
        .unwrap_or_else(|errors| panic!("the stack loads: {errors}"))
}

fn plan_of(loaded: &LoadedStack) -> provisioner::engine::plan::Plan {
    let desired = desired::derive(loaded);
    planner::plan(&PlanInput {
        desired: &desired,
        state: None,
        live: None,
        catalog: &TypeCatalog::builtin(),
    })
    .expect("the stack plans")
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(files: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(unique_name("stacksmith_policy"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        for (name, content) in files {
            std::fs::write(dir.join(name), content).expect("write fixture");
        }
        Self(dir)
    }
    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn production_passes_every_policy() {
    let output = provisioner(&["policy", "check", "--stack", "production"]);
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {}",
        text(&output.stderr)
    );
    assert!(
        stdout.contains("Policies: 0 denied, 0 warnings"),
        "{stdout}"
    );

    let output = provisioner(&["policy", "check", "--stack", "production", "--json"]);
    assert!(output.status.success());
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!(report["passed"], true);
    assert_eq!(report["findings"], serde_json::json!([]));
    let packages = report["packages"].as_array().expect("packages");
    for guardrail in [
        "tags",
        "database",
        "cache",
        "cluster_endpoint",
        "node_groups",
        "controlplane",
        "pod_security",
        "network_policies",
        "cluster_addons",
    ] {
        assert!(
            packages.contains(&Value::from(format!("stacksmith.{guardrail}"))),
            "stacksmith.{guardrail} was not evaluated: {packages:?}"
        );
    }
}

#[test]
fn the_other_shipped_stacks_have_no_deny() {
    // `up` of these stacks (the local one runs against moto in tests) must not be blocked.
    for stack in ["staging", "dev", "local"] {
        let output = provisioner(&["policy", "check", "--stack", stack]);
        assert!(
            output.status.success(),
            "stacks/{stack}.yaml: {}{}",
            text(&output.stdout),
            text(&output.stderr)
        );
    }
}

#[test]
fn every_unsafe_variant_fails_the_check_naming_the_address() {
    for (case, address, fragment) in UNSAFE {
        let file = unsafe_file(case);
        let output = provisioner(&["policy", "check", "--file", &file]);
        let stdout = text(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{file}: stdout {stdout}\nstderr {}",
            text(&output.stderr)
        );
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("  deny  {address}: ")) && l.contains(fragment));
        assert!(
            line.is_some(),
            "{file}: no deny naming `{address}` with `{fragment}` in:\n{stdout}"
        );

        let output = provisioner(&["policy", "check", "--file", &file, "--json"]);
        assert_eq!(output.status.code(), Some(1), "{file} --json");
        let report: Value = serde_json::from_slice(&output.stdout).expect("JSON report");
        assert_eq!(report["passed"], false);
        let named = report["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .any(|f| {
                f["severity"] == "deny"
                    && f["address"] == *address
                    && f["msg"].as_str().is_some_and(|m| m.contains(fragment))
            });
        assert!(named, "{file}: JSON has no deny for {address}: {report}");
    }
}

#[test]
fn every_unsafe_fixture_is_covered_and_extends_production() {
    let dir = workspace_root().join("tests/fixtures/unsafe-stacks");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("unsafe-stacks exists")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    files.sort();
    for file in &files {
        let case = file.trim_end_matches(".yaml");
        assert!(
            UNSAFE.iter().any(|(c, _, _)| *c == case),
            "{file} is not checked by this test: add it to UNSAFE"
        );
        let content = std::fs::read_to_string(dir.join(file)).expect("read fixture");
        assert!(
            content.contains("extends: ../../../stacks/production.yaml"),
            "{file} must be a variant of the production stack"
        );
    }
    // One variant (at least) per guardrail.
    for guardrail in [
        "tags-",
        "database-",
        "cache-",
        "endpoint-",
        "node-group-",
        "controlplane-",
        "pod-security-",
        "network-policies-",
    ] {
        assert!(
            files.iter().any(|f| f.starts_with(guardrail)),
            "no unsafe variant for {guardrail}*"
        );
    }
}

#[test]
fn check_plan_blocks_every_unsafe_variant_and_passes_production() {
    // `check_plan` is what `plan` and `up` call: a report that has not `passed()` stops `up`
    // before the executor (and so any provider call) starts.
    let policies = workspace_root().join("policies");
    let production = load(StackSource::Named {
        dir: workspace_root().join("stacks"),
        name: "production".into(),
    });
    let report = policy::check_plan(&policies, &production, &plan_of(&production)).expect("check");
    assert!(report.passed(), "{:?}", report.findings);
    assert_eq!(report.findings, vec![]);

    for (case, address, _) in UNSAFE {
        let loaded = load(StackSource::File(workspace_root().join(unsafe_file(case))));
        let report = policy::check_plan(&policies, &loaded, &plan_of(&loaded)).expect("check");
        assert!(!report.passed(), "{case} passed");
        assert!(
            report
                .denies()
                .any(|f| f.severity == Severity::Deny && f.address.as_deref() == Some(*address)),
            "{case}: {:?}",
            report.findings
        );
    }
}

#[test]
fn a_saved_plan_with_an_unencrypted_database_is_denied() {
    // No stack key turns database encryption off, so the guardrail is proven on a plan file.
    let production = load(StackSource::Named {
        dir: workspace_root().join("stacks"),
        name: "production".into(),
    });
    let mut plan = plan_of(&production);
    let database = plan
        .actions
        .iter_mut()
        .find(|a| a.address.as_str() == "database.instance")
        .expect("the production plan creates the database");
    let change = database
        .changes
        .iter_mut()
        .find(|c| c.name == "storage_encrypted")
        .expect("storage_encrypted is planned");
    change.after = Some(Value::Bool(false));
    if let Some(desired) = database.desired.as_mut() {
        desired.insert("storage_encrypted".into(), Value::Bool(false));
    }
    let dir = TempDir::new(&[("plan.json", &plan.to_json())]);
    let plan_file = format!("{}/plan.json", dir.path());

    let output = provisioner(&[
        "policy",
        "check",
        "--stack",
        "production",
        "--plan",
        &plan_file,
    ]);
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{stdout}{}",
        text(&output.stderr)
    );
    assert!(
        stdout.contains("  deny  database.instance: storage is not encrypted"),
        "{stdout}"
    );

    // The unmodified plan passes, and a plan for another stack is refused.
    let dir = TempDir::new(&[("plan.json", &plan_of(&production).to_json())]);
    let plan_file = format!("{}/plan.json", dir.path());
    let output = provisioner(&[
        "policy",
        "check",
        "--stack",
        "production",
        "--plan",
        &plan_file,
    ]);
    assert!(output.status.success(), "{}", text(&output.stdout));
    let output = provisioner(&[
        "policy", "check", "--stack", "staging", "--plan", &plan_file,
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("is for stack `production`"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn the_input_document_is_versioned_and_carries_no_secret() {
    let output = provisioner(&["policy", "check", "--stack", "production", "--print-input"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let raw = text(&output.stdout);
    assert!(!raw.contains("hunter2"), "the state URL's password leaked");
    let input: Value = serde_json::from_str(&raw).expect("JSON input");
    assert_eq!(input["format_version"], policy::INPUT_FORMAT_VERSION);
    assert_eq!(input["stack"]["name"], "production");
    assert_eq!(input["stack"]["environment"], "production");
    assert_eq!(input["stack"]["config"]["state"]["url"], "(sensitive)");
    let resources = input["resources"].as_array().expect("resources");
    let database = resources
        .iter()
        .find(|r| r["address"] == "database.instance")
        .expect("database.instance");
    assert_eq!(database["type"], "aws.rds.instance");
    assert_eq!(database["action"], "create");
    assert_eq!(database["before"], Value::Null);
    assert_eq!(database["after"]["multi_az"], true);
    assert_eq!(database["after"]["master_password"], "(sensitive)");
    assert_eq!(
        database["sensitive"],
        serde_json::json!(["master_password"])
    );
    assert_eq!(
        input["platform"]["controlplane"]["address"],
        "controlplane.deployment"
    );
    assert_eq!(
        input["platform"]["baseline"]["namespaces"][0]["address"],
        "baseline.namespace.system"
    );
}

#[test]
fn policy_test_runs_every_shipped_test_and_passes() {
    let output = provisioner(&["policy", "test"]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");

    // Every shipped guardrail has a test file with a passing and a failing input.
    let dir = workspace_root().join("policies");
    for entry in std::fs::read_dir(&dir).expect("policies/") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        let Some(guardrail) = name.strip_suffix(".rego") else {
            continue;
        };
        if guardrail.ends_with("_test") || guardrail == "lib" {
            continue;
        }
        let tests = std::fs::read_to_string(dir.join(format!("{guardrail}_test.rego")))
            .unwrap_or_else(|_| panic!("policies/{guardrail}.rego has no {guardrail}_test.rego"));
        assert!(
            tests.contains("_passes if"),
            "{guardrail}_test.rego has no passing-input test (`test_..._passes`)"
        );
        assert!(
            tests.contains("_denied"),
            "{guardrail}_test.rego has no failing-input test (`test_..._denied...`)"
        );
        let ran = stdout
            .lines()
            .filter(|l| l.starts_with(&format!("PASS  data.stacksmith.{guardrail}_test.")))
            .count();
        assert!(ran >= 2, "{guardrail}: only {ran} tests ran:\n{stdout}");
    }
}

const GOOD_POLICY: &str = "package demo\n\nimport rego.v1\n\ndeny contains {\"address\": \"network.vpc\", \"msg\": \"no\"} if input.bad\n";

#[test]
fn a_failing_rego_test_fails_policy_test() {
    let dir = TempDir::new(&[
        ("demo.rego", GOOD_POLICY),
        (
            "demo_test.rego",
            "package demo_test\n\nimport rego.v1\n\nimport data.demo\n\ntest_good_input_passes if {\n\tcount(demo.deny) == 0 with input as {\"bad\": false}\n}\n\ntest_wrong_expectation if {\n\tcount(demo.deny) == 0 with input as {\"bad\": true}\n}\n",
        ),
    ]);
    let output = provisioner(&["policy", "--policies-dir", dir.path(), "test"]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("PASS  data.demo_test.test_good_input_passes"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAIL  data.demo_test.test_wrong_expectation"),
        "{stdout}"
    );
    assert!(stdout.contains("1 passed, 1 failed"), "{stdout}");
}

#[test]
fn a_rego_syntax_error_is_reported_with_file_line_and_column() {
    let dir = TempDir::new(&[
        ("demo.rego", GOOD_POLICY),
        (
            "broken.rego",
            "package broken\n\nimport rego.v1\n\ndeny contains msg if {\n\tmsg := \"x\" +\n}\n",
        ),
    ]);
    for args in [
        vec![
            "policy",
            "--policies-dir",
            dir.path(),
            "check",
            "--stack",
            "production",
        ],
        vec!["policy", "--policies-dir", dir.path(), "test"],
    ] {
        let output = provisioner(&args);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        let expected = format!("{}/broken.rego:6:9: ", dir.path());
        assert!(
            stderr.contains(&expected),
            "{args:?}: no `{expected}` in {stderr}"
        );
    }
}

#[test]
fn a_rego_evaluation_error_is_an_error_not_a_pass() {
    // A deny rule that produces a number, not a message, cannot be reported: the check fails.
    let dir = TempDir::new(&[(
        "numbers.rego",
        "package numbers\n\nimport rego.v1\n\ndeny contains 42 if true\n",
    )]);
    let output = provisioner(&[
        "policy",
        "--policies-dir",
        dir.path(),
        "check",
        "--stack",
        "production",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("data.numbers.deny produced"),
        "{}",
        text(&output.stderr)
    );

    // A runtime error in a rule (division by zero) carries its location too.
    let dir = TempDir::new(&[(
        "divide.rego",
        "package divide\n\nimport rego.v1\n\ndeny contains msg if {\n\tx := count(input.resources) / 0\n\tmsg := sprintf(\"%v\", [x])\n}\n",
    )]);
    let output = provisioner(&[
        "policy",
        "--policies-dir",
        dir.path(),
        "check",
        "--stack",
        "production",
    ]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stdout));
    let expected = format!("{}/divide.rego:6:33: error: divide by zero", dir.path());
    assert!(stderr.contains(&expected), "no `{expected}` in {stderr}");
}

#[test]
fn a_missing_policies_directory_is_an_error() {
    let missing = std::env::temp_dir().join(unique_name("no_policies"));
    let error = policy::PolicySet::load(&missing, false)
        .err()
        .expect("an error");
    assert!(matches!(error, PolicyError::ReadDir { .. }), "{error}");
    let empty = TempDir::new(&[]);
    let error = policy::PolicySet::load(Path::new(empty.path()), false)
        .err()
        .expect("an error");
    assert!(matches!(error, PolicyError::NoPolicies { .. }), "{error}");
}

#[test]
fn the_up_gate_refuses_unsafe_stacks_before_any_state_or_cloud_call() {
    // `policy::enforce(dir, loaded, None)` is what `up` runs right after loading the stack, before
    // it connects to state or calls a provider: it plans from nothing, in memory.
    let policies = workspace_root().join("policies");
    let production = load(StackSource::Named {
        dir: workspace_root().join("stacks"),
        name: "production".into(),
    });
    let report = policy::enforce(&policies, &production, None).expect("production passes");
    assert!(report.findings.is_empty(), "{:?}", report.findings);

    for (case, address, _) in UNSAFE {
        let loaded = load(StackSource::File(workspace_root().join(unsafe_file(case))));
        match policy::enforce(&policies, &loaded, None) {
            Err(PolicyError::Denied { report }) => {
                assert!(
                    report
                        .denies()
                        .any(|f| f.address.as_deref() == Some(*address)),
                    "{case}: {:?}",
                    report.findings
                );
                let error = PolicyError::Denied { report };
                assert!(
                    error.to_string().starts_with("refusing to apply: "),
                    "{error}"
                );
            }
            other => panic!("{case}: expected a refusal, got {other:?}"),
        }
        // The same gate on the plan `up` is about to apply.
        let plan = plan_of(&loaded);
        assert!(matches!(
            policy::enforce(&policies, &loaded, Some(&plan)),
            Err(PolicyError::Denied { .. })
        ));
    }

    // Guardrails fail closed: no policies, no `up`.
    let missing = std::env::temp_dir().join(unique_name("no_policies"));
    assert!(matches!(
        policy::enforce(&missing, &production, None),
        Err(PolicyError::ReadDir { .. })
    ));
}

#[test]
fn up_refuses_every_unsafe_variant_before_touching_state_or_the_cloud() {
    // The real binary with the fake provider: a refused `up` must leave no object in the fake
    // cloud. The state URL points at a closed loopback port, so had `up` opened its state before
    // the policy gate it would fail with a connection error instead of the policy refusal.
    let cloud = std::env::temp_dir().join(unique_name("policy_up_cloud"));
    let mut cases: Vec<(&str, &str)> = UNSAFE.iter().map(|(c, a, _)| (*c, *a)).collect();
    cases.dedup_by_key(|(case, _)| *case);
    for (case, address) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_provisioner"))
            .args(["--stacks-dir", "tests/fixtures/unsafe-stacks", "up"])
            .args(["--stack", case, "--yes"])
            .current_dir(workspace_root())
            .env("NO_COLOR", "1")
            .env(
                "STACKSMITH_STATE_URL",
                "postgres://stacksmith@127.0.0.1:1/closed",
            )
            .env("STACKSMITH_PROVIDER", "fake")
            .env("STACKSMITH_FAKE_CLOUD_DIR", &cloud)
            .env("STACKSMITH_STATE_KEY", "policy-cli-test-key")
            .env_remove("STACKSMITH_POLICIES_DIR")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("the provisioner binary runs");
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{case}: {stderr}");
        assert!(stderr.contains("refusing to apply"), "{case}: {stderr}");
        assert!(stderr.contains(address), "{case}: {stderr}");
        assert!(!stderr.contains("127.0.0.1:1"), "{case}: {stderr}");
        assert!(!cloud.exists(), "{case}: the fake cloud was touched");
    }
}
