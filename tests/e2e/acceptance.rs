//! The acceptance suite (`stacksmith-acceptance`, what `cargo xtask acceptance` runs) through its
//! binary: its refusals, and whole runs against moto (`tests/fixtures/acceptance/emulators.yaml`,
//! `--allow-emulators`):
//! - with a Kubernetes emulator of the test's own and the test kubelet
//!   (`stacksmith_testkit::kubelet`) running the stack, behind the fault proxy
//!   (`stacksmith_testkit::faultproxy`) in front of moto: every step passes, the in-cluster one
//!   included (the check Job's pod reaches the Postgres and Redis behind the endpoints `up`
//!   recorded, runs a workflow through the installed API and worker pool; its result is read back
//!   from the Job's status and its pod's log through the API);
//! - the same where the cache stops admitting the nodes' new connections after `up` (as a
//!   security group that drops them): the in-cluster step fails with the reason, the suite still
//!   tears down (`down` twice) and exits 1;
//! - against the shared emulator, which has no kubelet (no Node): the in-cluster step is reported
//!   skipped, and says why; everything else runs for real.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use stacksmith_testkit::kubelet::emulator::{PrivateEmulator, emulator_python};
use stacksmith_testkit::kubelet::{Image, Kubelet, KubeletConfig};
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

/// `GET path` on the shared Kubernetes emulator (plain HTTP on loopback), as JSON.
fn kube_get(path: &str) -> Value {
    kube_get_at(&stacksmith_testkit::kube_url(), path)
}

/// `GET path` on the Kubernetes emulator at `url`, as JSON.
fn kube_get_at(url: &str, path: &str) -> Value {
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

/// Against the shared emulator, which has no kubelet: the in-cluster step is skipped and says so.
#[test]
fn without_a_kubelet_a_whole_run_deploys_tears_down_and_reports_the_in_cluster_step_skipped() {
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
    assert_eq!(names, STEPS, "{report:#}");
    for (name, status, detail) in &steps {
        match name.as_str() {
            "pod reaches postgres" | "pod reaches redis" | "workflow" => {
                assert_eq!(status, "skipped", "{name}: {detail}");
                assert!(
                    detail.starts_with("skipped (no pods run in the emulator: it has no kubelet"),
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

/// An instance name of the fixture stack (`acc-` and six hex digits, as the suite makes them).
fn instance_name() -> String {
    let digits: String = unique_name("a")
        .chars()
        .filter(|c| c.is_ascii_digit() || ('a'..='f').contains(c))
        .collect();
    format!("acc-{}", &digits[digits.len() - 6..])
}

/// A Kubernetes emulator of the test's own and the test kubelet running the instance's stack
/// (`acceptance-emulators-<instance>`): the control plane's image is the binaries we built, the
/// task image this machine's `/usr/bin`, the endpoints `up` records lead to the suite's Postgres
/// and Redis. The kubelet stops (and deletes its Node) before the emulator.
struct Cluster {
    kubelet: Kubelet,
    emulator: PrivateEmulator,
}

impl Cluster {
    fn start(dir: &Path, instance: &str) -> Self {
        let emulator = PrivateEmulator::start(&emulator_python(), &dir.join("emulator"))
            .expect("a Kubernetes emulator of the test's own");
        let kubelet = Kubelet::start(KubeletConfig {
            api_url: emulator.url.clone(),
            stack: format!("acceptance-emulators-{instance}"),
            scratch: dir.join("kubelet"),
            images: vec![Image::controlplane(), Image::debian()],
            postgres_url: Some(stacksmith_testkit::database_url()),
            redis_url: Some(stacksmith_testkit::redis_url()),
            verbose: true,
        })
        .expect("the test kubelet starts (it needs root)");
        Cluster { kubelet, emulator }
    }

    /// The suite against this cluster and moto at `aws` (text report on stdout).
    fn acceptance(&self, dir: &Path, aws: &str, instance: &str, check_seconds: u32) -> Command {
        let mut command = acceptance(dir);
        with_dummy_credentials(&mut command)
            .env("STACKSMITH_ACC", "1")
            .env("STACKSMITH_AWS_ENDPOINT", aws)
            .env("STACKSMITH_KUBECONFIG", &self.emulator.kubeconfig)
            .args([
                "--stack",
                "emulators",
                "--allow-emulators",
                "--instance",
                instance,
                "--job-start-seconds",
                "60",
                "--check-seconds",
                &check_seconds.to_string(),
            ]);
        command
    }
}

/// The steps of a text report: (name, status word, detail).
fn text_steps(report: &str, names: &[&str]) -> Vec<(String, String, String)> {
    report
        .lines()
        .skip(1)
        .filter_map(|line| {
            let line = line.trim_start();
            // The longest name first: "down again" before "down".
            let mut candidates: Vec<&&str> =
                names.iter().filter(|n| line.starts_with(**n)).collect();
            candidates.sort_by_key(|n| std::cmp::Reverse(n.len()));
            let name = candidates.first()?;
            let rest = line[name.len()..].trim_start();
            let (status, rest) = rest.split_once(' ')?;
            // "  12.3 s  detail"
            let detail = rest
                .trim_start()
                .split_once(" s")
                .map_or("", |(_, d)| d)
                .trim()
                .to_owned();
            Some(((**name).to_owned(), status.to_owned(), detail))
        })
        .collect()
}

const STEPS: [&str; 11] = [
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
];

/// The whole run with the test kubelet running the stack and moto behind the fault proxy, which
/// adds what moto lacks and AWS does: new EC2 ids and IAM roles not found for a while, clusters,
/// node groups, the database and the cache going through their lifecycle states (durations of
/// real AWS, scaled), throttling. Every step passes, the in-cluster one for real; the proxy must
/// have answered each kind of fault at least once (or the run proves nothing).
#[test]
fn with_the_test_kubelet_behind_the_fault_proxy_every_step_passes_the_in_cluster_one_for_real() {
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
    let instance = instance_name();
    let cluster = Cluster::start(&scratch.0, &instance);
    let output = run(&mut cluster.acceptance(&scratch.0, &proxy.url(), &instance, 300));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    println!("{stdout}");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\nkubelet: {:#?}",
        cluster.kubelet.events()
    );
    assert!(
        stdout.starts_with(&format!(
            "Acceptance of emulators (instance {instance}) against emulators: passed"
        )),
        "{stdout}"
    );
    let steps = text_steps(&stdout, &STEPS);
    let names: Vec<&str> = steps.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, STEPS, "{stdout}");
    for (name, status, detail) in &steps {
        assert_eq!(status, "passed", "{name}: {detail}\n{stdout}");
    }
    let detail = |name: &str| steps.iter().find(|(n, _, _)| n == name).unwrap().2.clone();
    assert!(
        detail("pod reaches postgres").starts_with("PostgreSQL "),
        "{stdout}"
    );
    assert!(
        detail("pod reaches redis").starts_with("PONG in "),
        "{stdout}"
    );
    assert!(
        detail("workflow").contains(" succeeded (4 tasks)"),
        "{stdout}"
    );
    assert_eq!(detail("down again"), "nothing left to delete");

    // The check ran as a Job's pod on the kubelet's Node; the Job succeeded. The runner goes on
    // when the Job counts a succeeded pod (its `Complete` condition may come later, as on a
    // real cluster), so `down` may delete the Job before the kubelet marks it Complete.
    let events = cluster.kubelet.events().join("\n");
    let job = format!("stacksmith-acceptance-{instance}");
    assert!(
        events.contains(&format!("(Job/{job})"))
            && (events.contains(&format!("job system/{job}: Complete"))
                || events.contains(&format!("/jobs/{job}: 0 active, 1 succeeded"))),
        "{events}"
    );
    let nodes = kube_get_at(&cluster.emulator.url, "/api/v1/nodes");
    assert_eq!(
        nodes["items"][0]["metadata"]["name"],
        cluster.kubelet.node()
    );

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

/// After `up`, the cache stops admitting new connections from the nodes (AWS drops the packets,
/// as a security group that does not admit them does: issue 15 item 1). The check Job's pod
/// cannot reach Redis: the in-cluster step fails with the reason, and the suite still tears the
/// instance down (`down` twice) and exits 1.
#[test]
fn a_cache_the_pods_cannot_reach_fails_the_in_cluster_step_and_the_suite_still_tears_down() {
    use std::io::BufRead;
    let scratch = Scratch::new();
    let instance = instance_name();
    let cluster = Cluster::start(&scratch.0, &instance);
    let mut child = cluster
        .acceptance(
            &scratch.0,
            &stacksmith_testkit::aws_endpoint(),
            &instance,
            120,
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the acceptance binary runs");
    let stderr = child.stderr.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let kubelet = &cluster.kubelet;
    let (cut, text) = std::thread::scope(|scope| {
        // Once `up` and `output` passed, before the check Job exists.
        let watcher = scope.spawn(move || {
            let mut cut = 0;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                eprintln!("{line}");
                if line.starts_with("acceptance: output passed") {
                    cut = kubelet.drop_cache_traffic();
                }
            }
            cut
        });
        let mut text = String::new();
        stdout.read_to_string(&mut text).unwrap();
        (watcher.join().unwrap(), text)
    });
    let status = child.wait().unwrap();
    println!("{text}");
    assert_eq!(
        cut,
        1,
        "the cache endpoint was cut: {:#?}",
        kubelet.events()
    );
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("against emulators: FAILED"), "{text}");
    let steps = text_steps(&text, &STEPS);
    let step = |name: &str| {
        steps
            .iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("no step {name}: {text}"))
            .clone()
    };
    for name in ["up", "plan again", "output", "pod reaches postgres"] {
        assert_eq!(step(name).1, "passed", "{name}: {text}");
    }
    let (_, status, detail) = step("pod reaches redis");
    assert_eq!(status, "FAILED", "{text}");
    assert!(
        (detail.contains("timed out") || detail.contains("no answer within"))
            && detail.contains(": a pod of the cluster cannot reach the cache at master."),
        "a readable reason: {detail}"
    );
    assert_eq!(step("down").1, "passed", "{text}");
    assert_eq!(
        step("down again"),
        (
            "down again".to_owned(),
            "passed".to_owned(),
            "nothing left to delete".to_owned()
        ),
        "{text}"
    );
}
