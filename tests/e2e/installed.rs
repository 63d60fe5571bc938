//! The installed control plane runs as installed: `provisioner up` applies a shipped stack to a
//! Kubernetes API emulator of this test's own, the test kubelet (`stacksmith_testkit::kubelet`)
//! runs every Deployment and Job it applied as a cluster would (init containers, env from the
//! Secrets and ConfigMaps read back, probes, Service names, a projected service-account token, the
//! database and cache endpoints `up` recorded leading to the local Postgres and Redis with the
//! stack's TLS and auth), and `up`'s rollout wait passes on the readiness the kubelet reports.
//!
//! Every shipped stack that renders a control plane (`local`, `dev`, `staging`, `production`;
//! `every_shipped_control_plane_stack_has_an_installed_test` keeps the list true) is installed
//! as shipped (only its name, and its `cluster.kubeconfig` pointing at the emulator, set by the
//! test): every Deployment and Job runs, a team's workflow submitted through the Service name runs
//! on the pools it names, and a second `up` changes nothing. `local` also survives the loss of an
//! API replica and of a worker pod mid-workflow; on `dev`, the API's pool autoscaler scales a
//! pool by its backlog through the Kubernetes API with its projected token, and its Role is what
//! allows it: narrowed, the scale is refused (logged, counted, the API keeps serving) until the
//! next `up` restores it.
//!
//! The cloud side is the provisioner's fake provider (its endpoints are names such as
//! `<id>.fake.internal`, which the kubelet resolves); needs root, the suite's Postgres and Redis,
//! and the emulators' venv (`cargo xtask test`).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stacksmith_testkit::kubelet::emulator::{PrivateEmulator, emulator_python};
use stacksmith_testkit::kubelet::{Image, Kubelet, KubeletConfig, PodView};
use stacksmith_testkit::{
    describe, fake_cloud_provisioner, rendered_objects, unique_name, workspace_binary,
    workspace_root,
};

const API: &str = "stacksmith-controlplane";
const SYSTEM: &str = "system";
/// The label naming a worker Deployment's pool.
const POOL_LABEL: &str = "stacksmith.dev/pool";
/// The stacks this file installs: every shipped stack that renders a control plane.
const INSTALLED_STACKS: [&str; 4] = ["dev", "local", "production", "staging"];

struct Sandbox {
    dir: PathBuf,
    emulator: PrivateEmulator,
    /// `STACKSMITH_STATE_URL` for stacks keeping their state in Postgres (production).
    state_url: Option<String>,
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
        Self {
            dir,
            emulator,
            state_url: None,
        }
    }

    fn write_stack(&self, name: &str, text: &str) {
        std::fs::write(self.dir.join("stacks").join(format!("{name}.yaml")), text).unwrap();
    }

    fn provisioner(&self, args: &[&str]) -> Output {
        let mut command = fake_cloud_provisioner(
            workspace_binary("provisioner").to_str().unwrap(),
            &self.dir,
            "installed-test-key",
        );
        command
            .env("STACKSMITH_STACKS_DIR", self.dir.join("stacks"))
            .env("STACKSMITH_KUBECONFIG", &self.emulator.kubeconfig)
            .args(args);
        if let Some(url) = &self.state_url {
            command.env("STACKSMITH_STATE_URL", url);
        }
        command.output().expect("the provisioner runs")
    }

    /// `up` with a rollout timeout; its output when it failed.
    fn up(&self, stack: &str, kubelet: &Kubelet) -> Output {
        let up = self.provisioner(&["up", "--stack", stack, "--yes", "--rollout-timeout", "180s"]);
        assert!(
            up.status.success(),
            "{}\nkubelet: {:#?}",
            describe(&up),
            kubelet.events()
        );
        up
    }

    fn kubelet(&self, stack: &str) -> Kubelet {
        Kubelet::start(KubeletConfig {
            api_url: self.emulator.url.clone(),
            stack: stack.to_owned(),
            scratch: self.dir.join("kubelet"),
            images: vec![Image::controlplane(), Image::debian()],
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
        let (_, secret) = kube_call("GET", &url, None, None);
        secret["stringData"][key]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no {key} in {namespace}/{name}: {secret}"))
    }

    /// Objects of a collection carrying the stack's label, as the administrator reads them.
    fn list(&self, collection: &str, stack: &str) -> Vec<Value> {
        let url = format!(
            "{}{collection}?labelSelector=stacksmith.dev%2Fstack%3D{stack}",
            self.emulator.url
        );
        let (status, list) = kube_call("GET", &url, None, None);
        assert_eq!(status, 200, "{list}");
        list["items"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // The state database this sandbox made, if any.
        if let Some(name) = self
            .state_url
            .as_deref()
            .and_then(|url| url.rsplit_once('/'))
            .map(|(_, name)| name.to_owned())
            .filter(|name| name.starts_with("installed_state"))
        {
            let admin = stacksmith_testkit::database_url();
            runtime().block_on(async {
                use sqlx::Connection;
                if let Ok(mut connection) = sqlx::PgConnection::connect(&admin).await {
                    let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(drop))
                        .execute(&mut connection)
                        .await;
                }
            });
        }
        if std::thread::panicking() {
            eprintln!("kept for a look: {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A call to the Kubernetes API: as the administrator (no token), or with a service account's
/// bearer token; a merge patch when a body is given to PATCH.
fn kube_call(method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    runtime().block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut request = client
            .request(method.parse().unwrap(), url)
            .bearer_auth(token.unwrap_or("admin"));
        if let Some(body) = body {
            let content_type = if method == "PATCH" {
                "application/merge-patch+json"
            } else {
                "application/json"
            };
            request = request
                .header("Content-Type", content_type)
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    })
}

/// An HTTP call through a Service address, as a team or the administrator.
fn call(method: &str, url: &str, key: &str, body: Option<Value>) -> (u16, Value) {
    runtime().block_on(async {
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

fn text_of(url: &str) -> String {
    runtime().block_on(async { reqwest::get(url).await.unwrap().text().await.unwrap() })
}

fn ready(pods: &[PodView], owner: &str, count: usize) -> bool {
    pods.iter().filter(|p| p.owner == owner && p.ready).count() >= count
}

/// Waits (bounded) until `done` answers something.
fn eventually<T>(what: &str, limit: Duration, mut done: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = done() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not after {limit:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A stack name of this run: `<base>-<6 characters>`.
fn stack_name(base: &str) -> String {
    let suffix: String = unique_name("k")[2..]
        .replace('_', "")
        .chars()
        .rev()
        .take(6)
        .collect();
    format!("{base}-{suffix}")
}

/// A database of its own for a stack keeping its state in Postgres.
fn state_database() -> String {
    let admin = stacksmith_testkit::database_url();
    let name = unique_name("installed_state").to_lowercase();
    runtime().block_on(async {
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

/// A shipped stack installed by `up` and run by the kubelet.
struct Installed {
    sandbox: Sandbox,
    kubelet: Kubelet,
    stack: String,
    /// `Deployment/<name>` -> replicas, `Job/<name>` -> 1, of what `up` applied.
    workloads: Vec<(String, usize)>,
    /// The worker pools: (pool, Deployment name).
    pools: Vec<(String, String)>,
}

impl Installed {
    /// `base` as shipped, with its name made unique and its cluster the emulator (`extra`: more
    /// YAML for the stack file); `up`, then every Deployment and Job of it running.
    fn up(base: &str, extra: &str) -> Self {
        let mut sandbox = Sandbox::new(&format!("installed_{base}"));
        let stack = stack_name(base);
        // The emulated cluster has no nodes to add, and the kubelet runs only the images we
        // build: each node group is fixed at its desired size, so the stack installs no Cluster
        // Autoscaler (provisioner/tests/cluster_autoscaler.rs installs one in the emulator).
        let fixed_groups = match base {
            "production" => {
                "  node_groups:\n    system: { scaling: { min: 3, desired: 3, max: 3 } }\n    \
                 workers: { scaling: { min: 4, desired: 4, max: 4 } }\n    \
                 data: { scaling: { min: 2, desired: 2, max: 2 } }\n"
            }
            "staging" | "dev" => {
                "  node_groups:\n    workers: { scaling: { min: 2, desired: 2, max: 2 } }\n"
            }
            _ => "",
        };
        sandbox.write_stack(
            &stack,
            &format!(
                "extends: {base}.yaml\nname: {stack}\ncluster:\n  kubeconfig: ${{env:STACKSMITH_KUBECONFIG}}\n{fixed_groups}{extra}"
            ),
        );
        // A stack keeping its state in Postgres (`STACKSMITH_STATE_URL`) gets a database of its
        // own.
        if std::fs::read_to_string(sandbox.dir.join(format!("stacks/{base}.yaml")))
            .unwrap()
            .contains("backend: postgres")
        {
            sandbox.state_url = Some(state_database());
        }
        let kubelet = sandbox.kubelet(&stack);
        // `up` waits for the rollouts: they pass only on the kubelet's readiness.
        sandbox.up(&stack, &kubelet);
        let mut workloads = Vec::new();
        let mut pools = Vec::new();
        for deployment in sandbox.list("/apis/apps/v1/deployments", &stack) {
            let name = deployment["metadata"]["name"].as_str().unwrap().to_owned();
            let replicas = deployment["spec"]["replicas"].as_u64().unwrap_or(1) as usize;
            if let Some(pool) = deployment["metadata"]["labels"][POOL_LABEL].as_str() {
                pools.push((pool.to_owned(), name.clone()));
            }
            workloads.push((format!("Deployment/{name}"), replicas));
        }
        for job in sandbox.list("/apis/batch/v1/jobs", &stack) {
            let name = job["metadata"]["name"].as_str().unwrap();
            workloads.push((format!("Job/{name}"), 1));
        }
        assert!(
            workloads
                .iter()
                .any(|(w, _)| *w == format!("Deployment/{API}")),
            "{workloads:?}"
        );
        assert!(!pools.is_empty(), "{workloads:?}");
        let installed = Self {
            sandbox,
            kubelet,
            stack,
            workloads,
            pools,
        };
        installed.wait_running("every Deployment and Job of the stack running");
        installed
    }

    /// Every Deployment has its replicas ready, every Job has succeeded.
    fn wait_running(&self, what: &str) -> Vec<PodView> {
        let workloads = self.workloads.clone();
        self.kubelet
            .wait_for(what, Duration::from_secs(90), move |pods| {
                workloads.iter().all(|(owner, count)| {
                    if owner.starts_with("Job/") {
                        pods.iter()
                            .any(|p| p.owner == *owner && p.phase == "Succeeded")
                    } else {
                        ready(pods, owner, *count)
                    }
                })
            })
            .unwrap()
    }

    fn base_url(&self) -> String {
        let service = self
            .kubelet
            .service(SYSTEM, API)
            .expect("the API's Service");
        format!("http://{service}")
    }

    /// A team and its key, made through the Service with the administrator key `up` applied.
    fn team_key(&self, name: &str) -> String {
        let base = self.base_url();
        let admin = self.sandbox.secret(SYSTEM, API, "CONTROLPLANE_ADMIN_KEY");
        let (status, team) = call(
            "POST",
            &format!("{base}/v1/teams"),
            &admin,
            Some(json!({"name": name})),
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
        key["key"].as_str().unwrap().to_owned()
    }

    /// `controlplane workflows run` of `file` from a client pod, through the Service name.
    fn run_workflow(&self, file: &Path, team_key: &str) -> Output {
        let controlplane = workspace_binary("controlplane").display().to_string();
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
        let env = vec![("CONTROLPLANE_API_KEY".to_owned(), team_key.to_owned())];
        self.kubelet
            .run_client(&argv, &env, 65534, Duration::from_secs(300))
            .unwrap()
    }

    /// A workflow with a task on each pool of the stack, through the Service name; each task
    /// runs in a pod of its pool.
    fn workflow_on_every_pool(&self) {
        let team_key = self.team_key("pools");
        let tasks: Vec<Value> = self
            .pools
            .iter()
            .map(|(pool, _)| {
                json!({
                    "name": format!("on-{pool}"),
                    "pool": pool,
                    "command": ["sh", "-c", format!("echo '{{\"pool\": \"{pool}\", \"host\": \"'$(hostname)'\"}}'")]
                })
            })
            .collect();
        let file = write_workflow(
            &self.sandbox.dir,
            "pools.json",
            &json!({"name": "pools", "tasks": tasks}),
        );
        let run = self.run_workflow(&file, &team_key);
        assert!(
            run.status.success(),
            "{}\nkubelet: {:#?}",
            describe(&run),
            self.kubelet.events()
        );
        let outcome: Value = serde_json::from_slice(&run.stdout).unwrap();
        assert_eq!(outcome["state"], "succeeded", "{outcome}");
        let done = outcome["tasks"].as_array().unwrap();
        assert_eq!(done.len(), self.pools.len(), "{outcome}");
        for task in done {
            let result = &task["task"]["result"];
            let pool = result["pool"].as_str().unwrap_or_default();
            let deployment = &self.pools.iter().find(|(p, _)| p == pool).unwrap().1;
            let host = result["host"].as_str().unwrap_or_default();
            assert!(host.starts_with(&format!("{deployment}-")), "{task}");
        }
    }

    /// `plan` sees nothing to change, in the cloud or in the cluster (exit 0).
    fn plan_is_clean(&self) {
        let plan =
            self.sandbox
                .provisioner(&["plan", "--stack", &self.stack, "--detailed-exitcode"]);
        assert_eq!(plan.status.code(), Some(0), "{}", describe(&plan));
    }

    /// A second `up` changes nothing: same pods, no restarts, all still ready, and `plan` has
    /// nothing left to do.
    fn second_up_changes_nothing(&self) {
        let names = |pods: &[PodView]| {
            let mut names: Vec<(String, u32)> = pods
                .iter()
                .filter(|p| p.phase != "Terminating")
                .map(|p| (p.name.clone(), p.restarts))
                .collect();
            names.sort();
            names
        };
        let running = self.kubelet.pods();
        self.sandbox.up(&self.stack, &self.kubelet);
        std::thread::sleep(Duration::from_secs(2));
        let after = self.kubelet.pods();
        assert_eq!(
            names(&running),
            names(&after),
            "the second up restarted pods"
        );
        assert!(
            after
                .iter()
                .all(|p| p.ready || p.owner.starts_with("Job/") || p.phase == "Terminating"),
            "{after:#?}"
        );
        self.plan_is_clean();
    }
}

fn write_workflow(dir: &Path, name: &str, body: &Value) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, body.to_string()).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

/// The workflow of the local test: long enough tasks that pods can be killed under them.
fn workflow(dir: &Path) -> PathBuf {
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
    write_workflow(dir, "workflow.json", &body)
}

/// The stacks of `stacks/` whose render holds the control plane's Deployment are exactly the
/// ones this file installs.
#[test]
fn every_shipped_control_plane_stack_has_an_installed_test() {
    let mut sandbox = Sandbox::new("installed_render");
    // production keeps its state in Postgres: loading it needs the variable, rendering does not
    // read the state.
    sandbox.state_url = Some("postgres://render@127.0.0.1:1/unused".to_owned());
    let mut with_control_plane = Vec::new();
    for entry in std::fs::read_dir(workspace_root().join("stacks"))
        .unwrap()
        .flatten()
    {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(name) = file.strip_suffix(".yaml") else {
            continue;
        };
        let text = std::fs::read_to_string(entry.path()).unwrap();
        if text.lines().any(|l| l.trim() == "abstract: true") {
            continue;
        }
        let out = sandbox.dir.join("rendered").join(name);
        let render =
            sandbox.provisioner(&["render", "--stack", name, "--out", out.to_str().unwrap()]);
        assert!(render.status.success(), "{name}: {}", describe(&render));
        let objects: Vec<Value> = std::fs::read_dir(&out)
            .unwrap()
            .flatten()
            .flat_map(|f| rendered_objects(&std::fs::read_to_string(f.path()).unwrap()))
            .collect();
        if objects
            .iter()
            .any(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == API)
        {
            with_control_plane.push(name.to_owned());
        }
    }
    with_control_plane.sort();
    assert_eq!(with_control_plane, INSTALLED_STACKS);
}

#[test]
fn the_local_stack_runs_as_installed_and_keeps_running() {
    // The shipped `local` stack, with two API replicas behind its Service.
    let installed = Installed::up(
        "local",
        "controlplane:\n  replicas: 2\n  autoscaling: { min: 2, max: 3, cpu_percent: 80 }\n",
    );
    let kubelet = &installed.kubelet;
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

    // The workflow, from a client pod, through the Service name.
    let team_key = installed.team_key("installed");
    let file = workflow(&installed.sandbox.dir);
    let run = std::thread::scope(|scope| {
        let client = scope.spawn(|| installed.run_workflow(&file, &team_key));
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
    });
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
    let replaced = installed.wait_running("the lost pods replaced");
    let after: Vec<String> = replaced.iter().map(|p| p.name.clone()).collect();
    assert_ne!(before, after);

    // A second `up` changes nothing and keeps everything running.
    installed.second_up_changes_nothing();
    let mut installed = installed;
    installed.kubelet.stop();
}

/// `staging` as shipped (a per-PR copy's template): everything runs, the workflow runs on its
/// pool, a second `up` changes nothing.
#[test]
fn the_staging_stack_runs_as_installed() {
    let mut installed = Installed::up("staging", "");
    installed.workflow_on_every_pool();
    installed.second_up_changes_nothing();
    installed.kubelet.stop();
}

/// `production` as shipped: three API replicas (on the tainted system nodes: their node selector
/// and toleration are admitted), two pools of different tiers (priority classes), the workload
/// namespace's quota admitting every pod, state in Postgres.
#[test]
fn the_production_stack_runs_as_installed() {
    let mut installed = Installed::up("production", "");
    let api = installed
        .workloads
        .iter()
        .find(|(w, _)| *w == format!("Deployment/{API}"))
        .unwrap();
    assert_eq!(api.1, 3);
    let mut pools: Vec<&str> = installed.pools.iter().map(|(p, _)| p.as_str()).collect();
    pools.sort();
    assert_eq!(pools, ["default", "premium"]);
    installed.workflow_on_every_pool();
    installed.second_up_changes_nothing();
    installed.kubelet.stop();
}

/// `dev` as shipped, then its pool autoscaler: a backlog scales the default pool through the
/// `scale` subresource with the API pod's projected token; the Role allows exactly that (not
/// Secrets, not another namespace); narrowed, the scale is refused and reported while the API
/// keeps serving; the next `up` restores the Role and the pool catches up.
#[test]
fn the_dev_stack_runs_as_installed_and_its_autoscaler_is_bound_by_its_role() {
    let mut installed = Installed::up("dev", "");
    installed.workflow_on_every_pool();
    installed.second_up_changes_nothing();
    autoscaler_is_bound_by_its_role(&installed);
    installed.kubelet.stop();
}

fn autoscaler_is_bound_by_its_role(installed: &Installed) {
    let kubelet = &installed.kubelet;
    let emulator = installed.sandbox.emulator.url.clone();
    let (pool, deployment) = installed
        .pools
        .iter()
        .find(|(p, _)| p == "default")
        .cloned()
        .unwrap();
    let owner = format!("Deployment/{deployment}");
    let workers = installed
        .sandbox
        .list("/apis/apps/v1/deployments", &installed.stack)
        .into_iter()
        .find(|d| d["metadata"]["name"] == deployment.as_str())
        .unwrap();
    let namespace = workers["metadata"]["namespace"]
        .as_str()
        .unwrap()
        .to_owned();
    let annotation = |key: &str| -> usize {
        workers["metadata"]["annotations"][key]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let per_replica = annotation("stacksmith.dev/tasks-per-replica");
    let min = annotation("stacksmith.dev/min-replicas");
    let max = annotation("stacksmith.dev/max-replicas");
    assert!(min + 2 < max, "the pool can grow by two: {min}..{max}");
    let deployment_url =
        format!("{emulator}/apis/apps/v1/namespaces/{namespace}/deployments/{deployment}");
    let replicas = || -> usize {
        let (_, object) = kube_call("GET", &deployment_url, None, None);
        object["spec"]["replicas"].as_u64().unwrap() as usize
    };
    assert_eq!(replicas(), min);

    // The API pod's projected token: its Role allows the worker Deployments and their scale in
    // the worker namespace, and nothing else.
    let api_pod = kubelet
        .pods()
        .into_iter()
        .find(|p| p.owner == format!("Deployment/{API}") && p.ready)
        .unwrap();
    let token_file = kubelet
        .log_of(&api_pod.name, "controlplane")
        .parent()
        .unwrap()
        .join("serviceaccount/token");
    let token = std::fs::read_to_string(&token_file).unwrap();
    let as_api = |method: &str, path: &str, body: Option<Value>| {
        kube_call(method, &format!("{emulator}{path}"), Some(&token), body).0
    };
    let scale = json!({"spec": {"replicas": 1}});
    assert_eq!(
        as_api(
            "GET",
            &format!("/apis/apps/v1/namespaces/{namespace}/deployments/{deployment}/scale"),
            None
        ),
        200
    );
    assert_eq!(
        as_api(
            "GET",
            &format!("/api/v1/namespaces/{namespace}/secrets"),
            None
        ),
        403,
        "the worker namespace's Secrets"
    );
    assert_eq!(
        as_api(
            "GET",
            &format!("/api/v1/namespaces/{SYSTEM}/secrets/{API}"),
            None
        ),
        403,
        "the API's own Secret"
    );
    assert_eq!(
        as_api(
            "PATCH",
            &format!("/apis/apps/v1/namespaces/{SYSTEM}/deployments/{API}/scale"),
            Some(scale.clone())
        ),
        403,
        "a Deployment of another namespace"
    );
    assert_eq!(
        as_api(
            "PATCH",
            &format!("/apis/apps/v1/namespaces/{namespace}/deployments/{deployment}"),
            Some(scale)
        ),
        403,
        "the worker Deployment itself (only its scale)"
    );
    assert_eq!(
        as_api("GET", "/apis/apps/v1/namespaces/default/deployments", None),
        403,
        "another namespace's Deployments"
    );

    // A backlog of tasks that keep running: the autoscaler (one round every 15 s) sizes the pool
    // for it through `scale`, and the kubelet runs the new replicas.
    let team_key = installed.team_key("backlog");
    let base = installed.base_url();
    let submit = |count: usize| {
        let tasks: Vec<Value> = (0..count)
            .map(|_| json!({"pool": pool, "command": ["sleep", "600"]}))
            .collect();
        let (status, body) = call(
            "POST",
            &format!("{base}/v1/tasks/batch"),
            &team_key,
            Some(json!({"tasks": tasks})),
        );
        assert!(status == 201 || status == 200, "{status} {body}");
    };
    let first = (min + 1) * per_replica;
    submit(first);
    eventually(
        "the autoscaler scales the pool for its backlog",
        Duration::from_secs(60),
        || (replicas() == min + 1).then_some(()),
    );
    let (_, object) = kube_call("GET", &deployment_url, None, None);
    let managers: Vec<&Value> = object["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["manager"] == "stacksmith-autoscaler")
        .collect();
    assert!(
        managers.iter().any(|m| m["subresource"] == "scale"),
        "{managers:?}"
    );
    kubelet
        .wait_for(
            "the new worker replica running",
            Duration::from_secs(60),
            |pods| ready(pods, &owner, min + 1),
        )
        .unwrap();

    // The Role narrowed (no more `deployments/scale`): the next scale is refused, the API logs
    // and counts it, and keeps serving.
    let role_url = format!(
        "{emulator}/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles/stacksmith-worker-scaler"
    );
    let (status, role) = kube_call(
        "PATCH",
        &role_url,
        None,
        Some(json!({"rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch"]},
        ]})),
    );
    assert_eq!(status, 200, "{role}");
    submit(2 * per_replica);
    let failures = eventually(
        "the refused scale reported",
        Duration::from_secs(60),
        || {
            let metrics = text_of(&format!("{base}/metrics"));
            metrics
                .lines()
                .find(|l| {
                    l.starts_with("controlplane_autoscaler_scale_failures_total")
                        && l.contains("reason=\"Forbidden\"")
                        && l.contains(&format!("pool=\"{pool}\""))
                })
                .map(str::to_owned)
        },
    );
    assert!(!failures.ends_with(" 0"), "{failures}");
    assert_eq!(replicas(), min + 1, "the refused scale changed nothing");
    let logs: String = kubelet
        .pods()
        .iter()
        .filter(|p| p.owner == format!("Deployment/{API}"))
        .map(|p| {
            std::fs::read_to_string(kubelet.log_of(&p.name, "controlplane")).unwrap_or_default()
        })
        .collect();
    let refusal = logs
        .lines()
        .find(|l| l.contains("cannot scale worker pool"))
        .unwrap_or_else(|| panic!("no refusal logged:\n{logs}"));
    assert!(refusal.contains("Forbidden"), "{refusal}");
    assert!(refusal.contains("deployments/scale"), "{refusal}");
    let api = kubelet
        .pods()
        .into_iter()
        .find(|p| p.name == api_pod.name)
        .unwrap();
    assert!(api.ready && api.restarts == 0, "{api:?}");
    let (status, _) = call("GET", &format!("{base}/readyz"), &team_key, None);
    assert_eq!(status, 200);

    // The next `up` restores the Role, and the pool catches up with its backlog.
    installed.sandbox.up(&installed.stack, kubelet);
    let (_, role) = kube_call("GET", &role_url, None, None);
    assert!(role.to_string().contains("deployments/scale"), "{role}");
    eventually(
        "the pool scaled once the Role allows it again",
        Duration::from_secs(60),
        || (replicas() == min + 3).then_some(()),
    );
    kubelet
        .wait_for(
            "the new worker replicas running",
            Duration::from_secs(60),
            |pods| ready(pods, &owner, min + 3),
        )
        .unwrap();
    // The size the autoscaler chose is not a change to undo.
    installed.plan_is_clean();
}

/// `up`'s rollout wait is Kubernetes' "complete" (and `kubectl rollout status`'s): with every
/// wanted replica updated and available but an old replica still running (`status.replicas`
/// above `updatedReplicas`), the rollout is not done; `up` waits, and names why when it times
/// out. Once the old replica is gone, `up` passes.
#[test]
fn up_waits_until_no_old_replica_of_a_rollout_is_left() {
    let sandbox = Sandbox::new("installed_rollout");
    let stack = stack_name("rollout");
    sandbox.write_stack(&stack, &format!("extends: local.yaml\nname: {stack}\n"));
    // The emulator runs with `--kubelet external`: no pod runs, the statuses are this test's.
    let old_replicas = std::sync::atomic::AtomicU64::new(1);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let emulator = sandbox.emulator.url.clone();
    let (first, second) = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for deployment in sandbox.list("/apis/apps/v1/deployments", &stack) {
                    let wanted = deployment["spec"]["replicas"].as_u64().unwrap_or(1);
                    let old = old_replicas.load(std::sync::atomic::Ordering::Relaxed);
                    let url = format!(
                        "{emulator}/apis/apps/v1/namespaces/{}/deployments/{}/status",
                        deployment["metadata"]["namespace"].as_str().unwrap(),
                        deployment["metadata"]["name"].as_str().unwrap()
                    );
                    let status = json!({"status": {
                        "observedGeneration": deployment["metadata"]["generation"],
                        "replicas": wanted + old,
                        "updatedReplicas": wanted,
                        "readyReplicas": wanted + old,
                        "availableReplicas": wanted + old,
                        "conditions": [
                            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                            {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"},
                        ],
                    }});
                    kube_call("PATCH", &url, None, Some(status));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let up = |timeout: &str| {
            sandbox.provisioner(&[
                "up",
                "--stack",
                &stack,
                "--yes",
                "--rollout-timeout",
                timeout,
            ])
        };
        let first = up("4s");
        old_replicas.store(0, std::sync::atomic::Ordering::Relaxed);
        let second = up("60s");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (first, second)
    });
    assert!(!first.status.success(), "{}", describe(&first));
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(
        stderr.contains("1 old replicas pending termination"),
        "{}",
        describe(&first)
    );
    assert!(second.status.success(), "{}", describe(&second));
}
