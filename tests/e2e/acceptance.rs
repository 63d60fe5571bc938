//! The acceptance suite (`stacksmith-acceptance`, what `cargo xtask acceptance` runs) through its
//! binary: its refusals, and a whole run against moto and the Kubernetes emulator
//! (`tests/fixtures/acceptance/emulators.yaml`, `--allow-emulators`). No pods run in the emulator,
//! so the in-cluster check reports itself skipped; everything else (validate, up, plan again,
//! output, the Job and its NetworkPolicies made and removed, down twice) runs for real; then the
//! same behind the fault proxy (`stacksmith_testkit::faultproxy`) in front of moto.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use stacksmith_testkit::{describe, unique_name, workspace_binary, workspace_root};

/// A scratch working directory (state lands in its `.stacksmith/`), removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique_name("acceptance"));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The suite in `dir`, with no AWS settings of the caller's and the fixtures' stacks.
fn acceptance(dir: &Path) -> Command {
    acceptance_with_stacks(dir, &workspace_root().join("tests/fixtures/acceptance"))
}

/// The suite in `dir` with the stacks of `stacks`.
fn acceptance_with_stacks(dir: &Path, stacks: &Path) -> Command {
    let root = workspace_root();
    let mut command = Command::new(env!("CARGO_BIN_EXE_stacksmith-acceptance"));
    command
        .current_dir(dir)
        .arg("--provisioner")
        .arg(workspace_binary("provisioner"))
        .arg("--stacks-dir")
        .arg(stacks)
        .arg("--workflow")
        .arg(root.join("controlplane/workflows/local-release.json"))
        .env("STACKSMITH_POLICIES_DIR", root.join("policies"))
        .env("NO_COLOR", "1")
        .env_remove("STACKSMITH_ACC_ALLOW_EMULATORS")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", dir.join("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            dir.join("no-aws-credentials"),
        )
        .stdin(std::process::Stdio::null());
    command
}

fn with_dummy_credentials(command: &mut Command) -> &mut Command {
    command
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
}

fn run(command: &mut Command) -> Output {
    command.output().expect("the acceptance binary runs")
}

#[test]
fn refuses_to_run_without_stacksmith_acc() {
    let scratch = Scratch::new();
    let output = run(acceptance(&scratch.0)
        .env_remove("STACKSMITH_ACC")
        .args(["--stack", "aws"]));
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("set STACKSMITH_ACC=1"), "{stderr}");
}

#[test]
fn refuses_a_stack_that_targets_emulators_unless_allowed() {
    let scratch = Scratch::new();
    let output = run(with_dummy_credentials(
        acceptance(&scratch.0)
            .env("STACKSMITH_ACC", "1")
            .env("STACKSMITH_AWS_ENDPOINT", "http://127.0.0.1:9")
            .args(["--stack", "emulators", "--json"]),
    ));
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("aws.endpoint_url is http://127.0.0.1:9")
            && stderr.contains("--allow-emulators"),
        "{stderr}"
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    assert_eq!(report["outcome"], "failed");
    assert!(
        !report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "up"),
        "nothing may be created: {report:#}"
    );
    assert!(
        !scratch.0.join(".stacksmith").exists(),
        "a refused run writes no state"
    );
}

#[test]
fn refuses_without_aws_credentials() {
    let scratch = Scratch::new();
    let output = run(acceptance(&scratch.0)
        .env("STACKSMITH_ACC", "1")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("STACKSMITH_AWS_ENDPOINT", "http://127.0.0.1:9")
        .args(["--stack", "emulators", "--allow-emulators"]));
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no AWS credentials"), "{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("credentials  FAILED"), "{stdout}");
}

/// `GET path` on the Kubernetes emulator (plain HTTP on loopback), as JSON.
fn kube_get(path: &str) -> Value {
    let url = stacksmith_testkit::kube_url();
    let address = url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(address).expect("the Kubernetes emulator");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {address}\r\nAccept: application/json\r\n\r\n"
    )
    .expect("send");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("an answer");
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {reply}"))
}

/// Writes `dir/emulators.yaml`: the fixture with namespaces and a priority class of its own, so
/// that the run shares no in-cluster object with other tests installing into the same emulator
/// (`drift_moto` installs the `local` stack's `system`, `workload`... namespaces there).
fn own_namespaces(dir: &Path) -> String {
    let s = unique_name("x").replace('_', "-");
    let s = &s[s.len() - 8..];
    let fixture = workspace_root().join("tests/fixtures/acceptance/emulators.yaml");
    std::fs::write(
        dir.join("without-baseline.yaml"),
        format!("extends: {}\nbaseline: null\n", fixture.display()),
    )
    .unwrap();
    std::fs::write(
        dir.join("emulators.yaml"),
        format!(
            "extends: without-baseline.yaml\n\
             baseline:\n  \
               namespaces: [sys-{s}, work-{s}]\n  \
               pod_security: {{ sys-{s}: restricted, work-{s}: restricted }}\n  \
               network_policies: default-deny\n  \
               priority_classes: {{ standard-{s}: 500 }}\n\
             controlplane:\n  \
               namespace: sys-{s}\n  \
               worker_namespace: work-{s}\n  \
               api_client_namespaces: []\n  \
               worker_pools:\n    \
                 default: {{ tier: standard-{s}, concurrency: 4, replicas: {{ min: 1, max: 2 }}, tasks_per_replica: 10 }}\n"
        ),
    )
    .unwrap();
    format!("sys-{s}")
}

#[test]
fn a_whole_run_against_moto_and_the_kubernetes_emulator_deploys_checks_and_tears_down() {
    let scratch = Scratch::new();
    let stacks = scratch.0.join("stacks");
    std::fs::create_dir_all(&stacks).unwrap();
    let namespace = own_namespaces(&stacks);
    let output = run(with_dummy_credentials(
        acceptance_with_stacks(&scratch.0, &stacks)
            .env("STACKSMITH_ACC", "1")
            .env(
                "STACKSMITH_AWS_ENDPOINT",
                stacksmith_testkit::aws_endpoint(),
            )
            .env("STACKSMITH_KUBECONFIG", stacksmith_testkit::kubeconfig())
            .args([
                "--stack",
                "emulators",
                "--allow-emulators",
                "--json",
                "--job-start-seconds",
                "6",
            ]),
    ));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    println!("{}", String::from_utf8_lossy(&output.stdout));
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    assert_eq!(report["version"], 1);
    assert_eq!(report["target"], "emulators");
    assert_eq!(report["outcome"], "passed");
    let steps: Vec<(String, String, String)> = report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["status"].as_str().unwrap().to_owned(),
                s["detail"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let names: Vec<&str> = steps.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "validate",
            "stack",
            "credentials",
            "up",
            "plan again",
            "output",
            "pod reaches postgres",
            "pod reaches redis",
            "workflow",
            "down",
            "down again",
        ],
        "{report:#}"
    );
    for (name, status, detail) in &steps {
        match name.as_str() {
            "pod reaches postgres" | "pod reaches redis" | "workflow" => {
                assert_eq!(status, "skipped", "{name}: {detail}");
                assert!(
                    detail.starts_with("skipped (no pods run in the emulator"),
                    "{name}: {detail}"
                );
            }
            _ => assert_eq!(status, "passed", "{name}: {detail}"),
        }
    }
    let detail = |name: &str| &steps.iter().find(|(n, _, _)| n == name).unwrap().2;
    assert_eq!(detail("plan again"), "no change after up");
    assert!(
        detail("output").contains("database "),
        "{}",
        detail("output")
    );
    assert_eq!(detail("down again"), "nothing left to delete");

    // The Job, its ConfigMap and NetworkPolicies were made in the control plane's namespace
    // (the Job had to pass the emulator's admission) and removed again.
    let instance = report["instance"].as_str().unwrap();
    let selector = format!("labelSelector=stacksmith.dev/acceptance%3D{instance}");
    for path in [
        format!("/apis/batch/v1/namespaces/{namespace}/jobs"),
        format!("/api/v1/namespaces/{namespace}/configmaps"),
        format!("/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies"),
    ] {
        let list = kube_get(&format!("{path}?{selector}"));
        assert_eq!(
            list["items"].as_array().map(Vec::len),
            Some(0),
            "{path}: {list:#}"
        );
    }
}

/// The same run with moto behind the fault proxy (`stacksmith_testkit::faultproxy`), which adds
/// what moto lacks and AWS does: new EC2 ids and IAM roles not found for a while, clusters,
/// node groups, the database going through `CREATING`/`creating`/`backing-up` and `DELETING`
/// (durations of real AWS, scaled), throttling. The suite must pass as it does without faults,
/// and the proxy must have answered each kind of fault at least once (or the run proves nothing).
#[test]
fn a_whole_run_behind_the_fault_proxy_waits_out_propagation_lifecycles_and_throttling() {
    use stacksmith_testkit::faultproxy::{FaultConfig, FaultProxy, Rule};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime for the proxy");
    let proxy = runtime
        .block_on(FaultProxy::start(
            &stacksmith_testkit::aws_endpoint(),
            FaultConfig {
                seed: 15,
                rules: vec![Rule::throttle(0.1, "*")],
                consistency: Some(Duration::from_secs(2)),
                consistency_services: vec!["ec2".into(), "iam".into()],
                lifecycle_scale: Some(0.002),
            },
        ))
        .expect("the fault proxy starts");
    let scratch = Scratch::new();
    let stacks = scratch.0.join("stacks");
    std::fs::create_dir_all(&stacks).unwrap();
    own_namespaces(&stacks);
    let output = run(with_dummy_credentials(
        acceptance_with_stacks(&scratch.0, &stacks)
            .env("STACKSMITH_ACC", "1")
            .env("STACKSMITH_AWS_ENDPOINT", proxy.url())
            .env("STACKSMITH_KUBECONFIG", stacksmith_testkit::kubeconfig())
            .args([
                "--stack",
                "emulators",
                "--allow-emulators",
                "--json",
                "--job-start-seconds",
                "3",
            ]),
    ));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    assert_eq!(output.status.code(), Some(0), "{report:#}");
    assert_eq!(report["outcome"], "passed");
    for step in report["steps"].as_array().unwrap() {
        let name = step["name"].as_str().unwrap();
        let expected = if ["pod reaches postgres", "pod reaches redis", "workflow"].contains(&name)
        {
            "skipped"
        } else {
            "passed"
        };
        assert_eq!(step["status"], expected, "{step}");
    }
    let stats = proxy.stats();
    let mut faults: Vec<(String, u64, u64, u64)> = stats
        .iter()
        .filter(|(_, s)| s.not_found + s.lifecycle + s.throttled > 0)
        .map(|(op, s)| (op.clone(), s.not_found, s.lifecycle, s.throttled))
        .collect();
    faults.sort();
    eprintln!("faults answered (operation, not found, lifecycle, throttled): {faults:#?}");
    let sum = |pick: fn(&(String, u64, u64, u64)) -> u64| faults.iter().map(pick).sum::<u64>();
    assert!(
        sum(|f| f.1) > 0,
        "no new id was ever not found: {faults:#?}"
    );
    assert!(
        sum(|f| f.2) > 0,
        "no lifecycle state was ever shown: {faults:#?}"
    );
    assert!(sum(|f| f.3) > 0, "nothing was throttled: {faults:#?}");
    drop(proxy);
}
