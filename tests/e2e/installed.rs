//! The installed control plane runs as installed: `provisioner up` applies a shipped stack to a
//! Kubernetes API emulator of this test's own, the test kubelet (`stacksmith_testkit::kubelet`)
//! runs every Deployment it applied as a cluster would (init containers, env from the Secrets and
//! ConfigMaps read back, probes, Service names, a projected service-account token, the database
//! and cache endpoints `up` recorded leading to the local Postgres and Redis with the stack's TLS
//! and auth), and `up`'s rollout wait passes on the readiness the kubelet reports. Then a team's
//! workflow submitted through the Service name is run by the installed worker pool, survives
//! the loss of an API replica and of a worker pod, and a second `up` changes nothing.
//!
//! The cloud side is the provisioner's fake provider (its endpoints are names such as
//! `<id>.fake.internal`, which the kubelet resolves); needs root, the suite's Postgres and Redis,
//! and the emulators' venv (`cargo xtask test`).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::{Value, json};
use stacksmith_testkit::kubelet::emulator::{PrivateEmulator, emulator_python};
use stacksmith_testkit::kubelet::{Image, Kubelet, KubeletConfig, PodView};
use stacksmith_testkit::{
    describe, fake_cloud_provisioner, unique_name, workspace_binary, workspace_root,
};

const API: &str = "stacksmith-controlplane";
const SYSTEM: &str = "system";

struct Sandbox {
    dir: PathBuf,
    emulator: PrivateEmulator,
}

impl Sandbox {
    fn new(label: &str) -> Self {
        let dir = std::env::temp_dir().join(unique_name(label));
        std::fs::create_dir_all(dir.join("stacks")).unwrap();
        for entry in std::fs::read_dir(workspace_root().join("stacks"))
            .unwrap()
            .flatten()
        {
            std::fs::copy(entry.path(), dir.join("stacks").join(entry.file_name())).unwrap();
        }
        let emulator = PrivateEmulator::start(&emulator_python(), &dir.join("emulator")).unwrap();
        Self { dir, emulator }
    }

    fn write_stack(&self, name: &str, text: &str) {
        std::fs::write(self.dir.join("stacks").join(format!("{name}.yaml")), text).unwrap();
    }

    fn provisioner(&self, args: &[&str]) -> Output {
        fake_cloud_provisioner(
            workspace_binary("provisioner").to_str().unwrap(),
            &self.dir,
            "installed-test-key",
        )
        .env("STACKSMITH_STACKS_DIR", self.dir.join("stacks"))
        .env("STACKSMITH_KUBECONFIG", &self.emulator.kubeconfig)
        .args(args)
        .output()
        .expect("the provisioner runs")
    }

    fn kubelet(&self, stack: &str) -> Kubelet {
        let controlplane = workspace_binary("controlplane");
        let bin = controlplane.parent().unwrap().display().to_string();
        Kubelet::start(KubeletConfig {
            api_url: self.emulator.url.clone(),
            stack: stack.to_owned(),
            scratch: self.dir.join("kubelet"),
            images: vec![
                // The control plane image is the binary we built (distroless: nothing else).
                Image {
                    reference: "ghcr.io/acme/stacksmith-controlplane".into(),
                    path: bin,
                },
                // The default task runtime image: this machine's /usr/bin and /bin.
                Image {
                    reference: "docker.io/library/debian".into(),
                    path: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                },
            ],
            postgres_url: Some(stacksmith_testkit::database_url()),
            redis_url: Some(stacksmith_testkit::redis_url()),
            verbose: true,
        })
        .unwrap()
    }

    /// A Secret value as `up` applied it.
    fn secret(&self, namespace: &str, name: &str, key: &str) -> String {
        let url = format!(
            "{}/api/v1/namespaces/{namespace}/secrets/{name}",
            self.emulator.url
        );
        let secret: Value = blocking_get(&url);
        secret["stringData"][key]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no {key} in {namespace}/{name}: {secret}"))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept for a look: {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn blocking_get(url: &str) -> Value {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async { reqwest::get(url).await.unwrap().json().await.unwrap() })
}

/// An HTTP call through a Service address, as a team or the administrator.
fn call(method: &str, url: &str, key: &str, body: Option<Value>) -> (u16, Value) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut request = client
            .request(method.parse().unwrap(), url)
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    })
}

fn ready(pods: &[PodView], owner: &str, count: usize) -> bool {
    pods.iter().filter(|p| p.owner == owner && p.ready).count() >= count
}

/// The workflow of the test: long enough tasks that pods can be killed under them.
fn workflow(dir: &Path) -> PathBuf {
    let path = dir.join("workflow.json");
    let sleep = |name: &str, deps: &[&str], seconds: u32| {
        json!({
            "name": name,
            "pool": "default",
            "depends_on": deps,
            "command": ["sh", "-c", format!("sleep {seconds}; echo '{{\"task\": \"{name}\", \"host\": \"'$(hostname)'\"}}'")]
        })
    };
    let body = json!({
        "name": "installed",
        "tasks": [
            sleep("checkout", &[], 1),
            sleep("build", &["checkout"], 6),
            sleep("test", &["build"], 6),
            sleep("lint", &["build"], 1),
            sleep("package", &["test", "lint"], 1),
        ]
    });
    std::fs::write(&path, body.to_string()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

#[test]
fn the_local_stack_runs_as_installed_and_keeps_running() {
    let sandbox = Sandbox::new("installed");
    // The shipped `local` stack, with two API replicas behind its Service.
    let stack = format!(
        "kubelet-{}",
        &unique_name("k")[2..]
            .replace('_', "")
            .chars()
            .rev()
            .take(6)
            .collect::<String>()
    );
    sandbox.write_stack(
        &stack,
        &format!("extends: local.yaml\nname: {stack}\ncontrolplane:\n  replicas: 2\n  autoscaling: {{ min: 2, max: 3, cpu_percent: 80 }}\n"),
    );
    let mut kubelet = sandbox.kubelet(&stack);

    // `up` waits for the rollouts: they pass only on the kubelet's readiness.
    let up = sandbox.provisioner(&[
        "up",
        "--stack",
        &stack,
        "--yes",
        "--rollout-timeout",
        "180s",
    ]);
    assert!(
        up.status.success(),
        "{}\nkubelet: {:#?}",
        describe(&up),
        kubelet.events()
    );
    let api = format!("Deployment/{API}");
    let pool = "Deployment/stacksmith-worker-default";
    let pods = kubelet
        .wait_for(
            "two API replicas and a worker pod ready",
            Duration::from_secs(60),
            |pods| ready(pods, &api, 2) && ready(pods, pool, 1),
        )
        .unwrap();
    let before: Vec<String> = pods.iter().map(|p| p.name.clone()).collect();

    // The database endpoint up recorded leads to a database of the kubelet, migrated by the
    // API's init containers, both at once.
    let events = kubelet.events().join("\n");
    assert!(
        events.contains("init container migrate exited 0"),
        "{events}"
    );
    assert!(events.contains("fake.internal"), "{events}");

    // A team, through the Service, as the administrator.
    let service = kubelet.service(SYSTEM, API).expect("the API's Service");
    let base = format!("http://{service}");
    let admin = sandbox.secret(SYSTEM, API, "CONTROLPLANE_ADMIN_KEY");
    let (status, team) = call(
        "POST",
        &format!("{base}/v1/teams"),
        &admin,
        Some(json!({"name": "installed"})),
    );
    assert_eq!(status, 201, "{team}");
    let team_id = team["id"].as_str().unwrap();
    let (status, key) = call(
        "POST",
        &format!("{base}/v1/teams/{team_id}/keys"),
        &admin,
        Some(json!({"name": "ci"})),
    );
    assert_eq!(status, 201, "{key}");
    let team_key = key["key"].as_str().unwrap().to_owned();

    // The workflow, from a client pod, through the Service name.
    let controlplane = workspace_binary("controlplane").display().to_string();
    let file = workflow(&sandbox.dir);
    let run = {
        let argv: Vec<String> = [
            controlplane.as_str(),
            "workflows",
            "run",
            "--url",
            "http://stacksmith-controlplane.system.svc",
            "--wait-seconds",
            "240",
            "--json",
            "--file",
            file.to_str().unwrap(),
        ]
        .map(str::to_owned)
        .into();
        let env = vec![("CONTROLPLANE_API_KEY".to_owned(), team_key.clone())];
        let kubelet = &kubelet;
        std::thread::scope(|scope| {
            let client = scope.spawn(move || {
                kubelet
                    .run_client(&argv, &env, 65534, Duration::from_secs(300))
                    .unwrap()
            });
            // Mid-workflow: an API replica, then the worker pod running `build`, are lost.
            std::thread::sleep(Duration::from_secs(3));
            let victim = kubelet.pods().into_iter().find(|p| p.owner == api).unwrap();
            assert!(kubelet.delete_pod(&victim.name));
            std::thread::sleep(Duration::from_secs(3));
            let worker = kubelet
                .pods()
                .into_iter()
                .find(|p| p.owner == pool && p.ready)
                .unwrap();
            assert!(kubelet.delete_pod(&worker.name));
            client.join().unwrap()
        })
    };
    assert!(
        run.status.success(),
        "{}\nkubelet: {:#?}",
        describe(&run),
        kubelet.events()
    );
    let outcome: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(outcome["state"], "succeeded", "{outcome}");
    // Run by the installed worker pods: each result names the pod (its host name).
    for task in outcome["tasks"].as_array().unwrap() {
        let host = task["task"]["result"]["host"].as_str().unwrap_or_default();
        assert!(host.starts_with("stacksmith-worker-default-"), "{task}");
    }

    // Both lost pods were replaced.
    kubelet
        .wait_for("the lost pods replaced", Duration::from_secs(60), |pods| {
            ready(pods, &api, 2) && ready(pods, pool, 1)
        })
        .unwrap();

    // A second `up` changes nothing and keeps everything running.
    let running: Vec<PodView> = kubelet.pods();
    let again = sandbox.provisioner(&[
        "up",
        "--stack",
        &stack,
        "--yes",
        "--rollout-timeout",
        "120s",
    ]);
    assert!(again.status.success(), "{}", describe(&again));
    std::thread::sleep(Duration::from_secs(2));
    let after = kubelet.pods();
    let names = |pods: &[PodView]| {
        pods.iter()
            .map(|p| (p.name.clone(), p.restarts))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(&running),
        names(&after),
        "the second up restarted pods"
    );
    assert!(
        after.iter().all(|p| p.ready || p.owner.starts_with("Job/")),
        "{after:#?}"
    );
    assert_ne!(
        before,
        names(&after)
            .into_iter()
            .map(|(n, _)| n)
            .collect::<Vec<_>>()
    );
    kubelet.stop();
}
