//! What a real EKS cluster does with the rendered objects (issue 16): each test renders the shipped
//! stacks through the binary (`provisioner render`) or the library and checks one behaviour the
//! cluster depends on, named after the item.

use std::path::{Path, PathBuf};
use std::process::Command;

use provisioner::kubernetes::{self, SecretValues};
use provisioner::stack::{LoadRequest, LoadedStack, StackSource};
use serde_json::Value as Json;
use stacksmith_testkit::{describe, unique_name, workspace_root};

const STATE_URL: &str = "postgres://stacksmith@127.0.0.1:5432/stacksmith_state";

struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique_name("stacksmith-eks"));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        Self(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every object `provisioner render --stack <stack>` writes, from the stacks in `stacks_dir`.
fn render_cli(stacks_dir: &Path, stack: &str) -> Vec<Json> {
    let scratch = ScratchDir::new();
    let out = scratch.0.join("out");
    let output = Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .arg("--stacks-dir")
        .arg(stacks_dir)
        .args(["render", "--stack", stack, "--out"])
        .arg(&out)
        .current_dir(workspace_root())
        .env("STACKSMITH_STATE_URL", STATE_URL)
        .output()
        .expect("provisioner runs");
    assert!(output.status.success(), "render: {}", describe(&output));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&out)
        .expect("reads")
        .map(|e| e.expect("an entry").path())
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|file| {
            let text = std::fs::read_to_string(file).expect("reads");
            stacksmith_testkit::rendered_objects(&text)
        })
        .collect()
}

fn shipped(stack: &str) -> Vec<Json> {
    render_cli(&workspace_root().join("stacks"), stack)
}

fn find<'a>(objects: &'a [Json], kind: &str, name: &str) -> &'a Json {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
}

fn of_kind<'a>(objects: &'a [Json], kind: &'a str) -> impl Iterator<Item = &'a Json> + 'a {
    objects.iter().filter(move |o| o["kind"] == kind)
}

fn api(objects: &[Json]) -> &Json {
    find(objects, "Deployment", "stacksmith-controlplane")
}

fn workers(objects: &[Json]) -> Vec<&Json> {
    of_kind(objects, "Deployment")
        .filter(|d| d["metadata"]["labels"]["app.kubernetes.io/name"] == "stacksmith-worker")
        .collect()
}

fn load(name: &str) -> LoadedStack {
    let request = LoadRequest {
        source: StackSource::Named {
            dir: workspace_root().join("stacks"),
            name: name.to_owned(),
        },
        instance: None,
    };
    let env = |var: &str| (var == "STACKSMITH_STATE_URL").then(|| STATE_URL.to_owned());
    provisioner::stack::load_with_env(&request, &env)
        .and_then(provisioner::stack::Loaded::into_deployable)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn library_render(loaded: &LoadedStack, secrets: &SecretValues) -> Vec<Json> {
    kubernetes::render(loaded, Some(secrets))
        .expect("renders")
        .into_iter()
        .flat_map(|f| f.objects)
        .map(|o| o.object)
        .collect()
}

fn secrets(password: &str) -> SecretValues {
    SecretValues {
        database_url: format!("postgres://stacksmith:{password}@db.internal:5432/stacksmith"),
        redis_url: "rediss://:token@cache.internal:6379".into(),
        admin_key: "admin-key".into(),
        worker_key: format!("worker-key-{password}"),
    }
}

fn annotation<'a>(deployment: &'a Json, key: &str) -> Option<&'a str> {
    deployment["spec"]["template"]["metadata"]["annotations"][key].as_str()
}

/// A copy of the shipped stacks with `production.yaml` edited by `edit`.
fn edited_stacks(scratch: &ScratchDir, edit: impl Fn(String) -> String) -> PathBuf {
    let dir = scratch.0.join("stacks");
    std::fs::create_dir_all(&dir).expect("a directory");
    for entry in std::fs::read_dir(workspace_root().join("stacks")).expect("reads") {
        let path = entry.expect("an entry").path();
        let text = std::fs::read_to_string(&path).expect("reads");
        let text = if path.file_name().is_some_and(|n| n == "production.yaml") {
            let edited = edit(text.clone());
            assert_ne!(edited, text, "the edit changed nothing");
            edited
        } else {
            text
        };
        std::fs::write(dir.join(path.file_name().expect("a name")), text).expect("writes");
    }
    dir
}

/// Item 8: the pod templates carry the checksum of the ConfigMap they read, so a new rate limit
/// (or endpoint) rolls the API's pods; nothing else in the Deployment changes.
#[test]
fn a_configuration_change_changes_the_pod_template() {
    let before = shipped("production");
    let scratch = ScratchDir::new();
    let stacks = edited_stacks(&scratch, |text| {
        text.replace(
            "rate_limit: { per_key_rps: 100,",
            "rate_limit: { per_key_rps: 150,",
        )
    });
    let after = render_cli(&stacks, "production");
    let (old, new) = (api(&before), api(&after));
    let old_sum = annotation(old, "stacksmith.dev/configmap-checksum").expect("a checksum");
    let new_sum = annotation(new, "stacksmith.dev/configmap-checksum").expect("a checksum");
    assert_eq!(old_sum.len(), 64, "a SHA-256 in hex: {old_sum}");
    assert_ne!(
        old_sum, new_sum,
        "the rate limit changed, so must the template"
    );
    let mut unchanged = new.clone();
    unchanged["spec"]["template"]["metadata"]["annotations"]["stacksmith.dev/configmap-checksum"] =
        old_sum.into();
    assert_eq!(&unchanged, old, "only the checksum differs");
    // Rendering twice gives the same checksum (no run-to-run noise for `plan`).
    assert_eq!(
        annotation(
            api(&shipped("production")),
            "stacksmith.dev/configmap-checksum"
        ),
        Some(old_sum)
    );
}

/// Item 8, Secrets: a rotated database password or worker key changes the checksum of the pods
/// that read it (API and workers); placeholders (plan, drift, render before `up`) give none, so
/// `plan` never reports a difference it cannot know.
#[test]
fn a_rotated_secret_changes_the_pod_templates_that_read_it() {
    let loaded = load("production");
    let first = library_render(&loaded, &secrets("one"));
    let second = library_render(&loaded, &secrets("two"));
    let key = "stacksmith.dev/secret-checksum";
    let a = annotation(api(&first), key).expect("the API reads a Secret");
    assert_ne!(Some(a), annotation(api(&second), key));
    for (one, two) in workers(&first).into_iter().zip(workers(&second)) {
        let one = annotation(one, key).expect("the workers read a Secret");
        assert_ne!(Some(one), annotation(two, key));
    }
    assert_eq!(
        library_render(&loaded, &secrets("one")),
        first,
        "the same values render the same objects"
    );
    let placeholders = library_render(&loaded, &SecretValues::placeholders());
    for deployment in of_kind(&placeholders, "Deployment") {
        assert_eq!(annotation(deployment, key), None, "{deployment}");
    }
    assert_eq!(
        annotation(api(&placeholders), "stacksmith.dev/configmap-checksum"),
        annotation(api(&first), "stacksmith.dev/configmap-checksum"),
        "the ConfigMap's checksum does not depend on the Secrets"
    );
}

/// Item 11: the probes wait longer than `/readyz`'s checks (2 s, run at once), and a
/// crash-looping API never blocks a node drain.
#[test]
fn probes_outwait_the_checks_and_unhealthy_pods_can_be_evicted() {
    for stack in ["production", "local"] {
        let objects = shipped(stack);
        let container = &api(&objects)["spec"]["template"]["spec"]["containers"][0];
        for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
            let timeout = container[probe]["timeoutSeconds"].as_u64().unwrap_or(1);
            assert!(
                timeout >= 3,
                "{stack}: {probe} timeoutSeconds {timeout} <= the 2 s checks"
            );
        }
        for pdb in of_kind(&objects, "PodDisruptionBudget") {
            assert_eq!(
                pdb["spec"]["unhealthyPodEvictionPolicy"], "AlwaysAllow",
                "{stack}: {pdb}"
            );
        }
    }
}

/// Item 12: the API sleeps in preStop while its endpoint leaves the Service, then drains within
/// the grace period; workers drain for most of their grace period; every pool has a PDB.
#[test]
fn pods_shut_down_inside_their_grace_period() {
    for stack in ["production", "local"] {
        let objects = shipped(stack);
        let spec = &api(&objects)["spec"]["template"]["spec"];
        let grace = spec["terminationGracePeriodSeconds"].as_u64().expect("set");
        let pre_stop = spec["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .expect("a preStop sleep");
        assert!(pre_stop >= 5, "{stack}: preStop {pre_stop}s");
        let config = find(&objects, "ConfigMap", "stacksmith-controlplane");
        let drain_ms: u64 = config["data"]["CONTROLPLANE_SHUTDOWN_GRACE_MS"]
            .as_str()
            .expect("the API's shutdown grace is set")
            .parse()
            .expect("a number");
        assert!(
            pre_stop * 1000 + drain_ms < grace * 1000,
            "{stack}: preStop {pre_stop}s + drain {drain_ms}ms must fit in {grace}s"
        );
        for worker in workers(&objects) {
            let spec = &worker["spec"]["template"]["spec"];
            let grace = spec["terminationGracePeriodSeconds"].as_u64().expect("set");
            for container in spec["containers"].as_array().expect("containers") {
                let args: Vec<&str> = container["args"]
                    .as_array()
                    .expect("args")
                    .iter()
                    .filter_map(Json::as_str)
                    .collect();
                let at = args
                    .iter()
                    .position(|a| *a == "--drain-seconds")
                    .expect("--drain-seconds");
                let drain: u64 = args[at + 1].parse().expect("a number");
                assert!(
                    drain > grace / 2 && drain < grace,
                    "{stack}: drain {drain}s of {grace}s"
                );
            }
            let name = worker["metadata"]["name"].as_str().expect("a name");
            let pdb = find(&objects, "PodDisruptionBudget", name);
            assert_eq!(
                pdb["spec"]["selector"]["matchLabels"],
                worker["spec"]["selector"]["matchLabels"]
            );
        }
    }
}

/// Item 10: the API has its own PriorityClass above every worker tier, runs on the `system` node
/// group (its labels selected, its taints tolerated), and spreads over zones as a hard rule.
#[test]
fn the_api_is_placed_on_system_nodes_above_every_tier() {
    let objects = shipped("production");
    let spec = &api(&objects)["spec"]["template"]["spec"];
    let class = spec["priorityClassName"]
        .as_str()
        .expect("a priority class");
    let value = find(&objects, "PriorityClass", class)["value"]
        .as_i64()
        .expect("a value");
    for tier in of_kind(&objects, "PriorityClass").filter(|c| c["metadata"]["name"] != class) {
        assert!(tier["value"].as_i64().expect("a value") < value, "{tier}");
    }
    assert_eq!(spec["nodeSelector"], serde_json::json!({"role": "system"}));
    assert_eq!(
        spec["tolerations"],
        serde_json::json!([{"key": "node-role.kubernetes.io/system", "operator": "Equal",
            "value": "true", "effect": "NoSchedule"}])
    );
    let zone = spec["topologySpreadConstraints"]
        .as_array()
        .expect("spread")
        .iter()
        .find(|c| c["topologyKey"] == "topology.kubernetes.io/zone")
        .expect("a zone spread");
    assert_eq!(zone["whenUnsatisfiable"], "DoNotSchedule");

    // Local has no `system` node group: no node selection, and still a priority class.
    let local = shipped("local");
    let spec = &api(&local)["spec"]["template"]["spec"];
    assert!(spec["nodeSelector"].is_null() && spec["tolerations"].is_null());
    assert!(spec["priorityClassName"].is_string());
}

/// Item 7: Prometheus in `monitoring` may reach its targets (the API's metrics port,
/// node-exporter, the kubelets, the Kubernetes API), the API's pods say where to scrape, and the
/// namespace's Pod Security level admits node-exporter (host network, PID and paths).
#[test]
fn monitoring_can_scrape() {
    let objects = shipped("production");
    let namespace = find(&objects, "Namespace", "monitoring");
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    let policy = find(&objects, "NetworkPolicy", "prometheus-scrape");
    assert_eq!(policy["metadata"]["namespace"], "monitoring");
    let egress = policy["spec"]["egress"].as_array().expect("egress");
    let port = |p: u64| {
        egress.iter().any(|rule| {
            rule["ports"]
                .as_array()
                .is_some_and(|ports| ports.iter().any(|x| x["port"] == p))
        })
    };
    for p in [8080, 9100, 10250, 443] {
        assert!(port(p), "no egress to port {p}: {policy}");
    }
    let template = &api(&objects)["spec"]["template"];
    assert_eq!(
        template["metadata"]["annotations"]["prometheus.io/scrape"],
        "true"
    );
    assert_eq!(
        template["metadata"]["annotations"]["prometheus.io/port"],
        template["spec"]["containers"][0]["ports"][0]["containerPort"].to_string()
    );
}

/// Item 2: a pinned image (the stacks pin tags; the guardrails refuse `latest`) is pulled once per
/// node, so no pod start depends on the registry.
#[test]
fn pinned_images_are_pulled_if_not_present() {
    for stack in ["production", "local"] {
        let objects = shipped(stack);
        for deployment in of_kind(&objects, "Deployment") {
            let spec = &deployment["spec"]["template"]["spec"];
            for container in ["initContainers", "containers"]
                .iter()
                .filter_map(|f| spec[f].as_array())
                .flatten()
            {
                assert_eq!(
                    container["imagePullPolicy"], "IfNotPresent",
                    "{stack}: {} pulls {} every start",
                    container["name"], container["image"]
                );
            }
        }
    }
}

/// Issue 13 item 5: a pool's `egress` is rendered as its NetworkPolicy: the `default` pool of the
/// shipped stacks reaches the internet on 443 (to clone code), never private or link-local space
/// (the instance metadata service), and a pool that declares nothing gets no policy of its own.
#[test]
fn a_pool_reaches_what_its_egress_declares() {
    let objects = shipped("production");
    let default = find(&objects, "NetworkPolicy", "stacksmith-worker-default");
    assert_eq!(
        default["spec"]["podSelector"]["matchLabels"]["stacksmith.dev/pool"],
        "default"
    );
    let rule = &default["spec"]["egress"][0];
    assert_eq!(
        rule["ports"],
        serde_json::json!([{"protocol": "TCP", "port": 443}])
    );
    let block = &rule["to"][0]["ipBlock"];
    assert_eq!(block["cidr"], "0.0.0.0/0");
    let except: Vec<&str> = block["except"]
        .as_array()
        .expect("except")
        .iter()
        .filter_map(Json::as_str)
        .collect();
    for private in [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
    ] {
        assert!(except.contains(&private), "{private} reachable: {except:?}");
    }
    assert!(
        !objects.iter().any(|o| o["kind"] == "NetworkPolicy"
            && o["metadata"]["name"] == "stacksmith-worker-premium"),
        "the premium pool declares no egress"
    );

    let scratch = ScratchDir::new();
    let stacks = edited_stacks(&scratch, |text| {
        text.replace(
            "premium: { tier: premium, concurrency: 2, replicas: { min: 1, max: 10 } }",
            "premium: { tier: premium, concurrency: 2, replicas: { min: 1, max: 10 }, egress: { vpc: true, cidrs: [192.168.10.0/24] } }",
        )
    });
    let objects = render_cli(&stacks, "production");
    let premium = find(&objects, "NetworkPolicy", "stacksmith-worker-premium");
    assert_eq!(
        premium["spec"]["egress"],
        serde_json::json!([{"to": [{"ipBlock": {"cidr": "10.0.0.0/16"}}, {"ipBlock": {"cidr": "192.168.10.0/24"}}]}])
    );
}

/// Issue 16 item 5: production's node groups may grow, so the Cluster Autoscaler is installed,
/// and its NetworkPolicy lets it reach what it needs under default-deny: DNS, the Kubernetes
/// API (the `kubernetes` Service's ClusterIP, which a policy sees, and the endpoints in the VPC)
/// and AWS APIs over HTTPS, never the instance metadata service. `local` turns it off.
#[test]
fn production_runs_the_cluster_autoscaler_with_the_egress_it_needs() {
    let objects = shipped("production");
    let deployment = find(&objects, "Deployment", "cluster-autoscaler");
    assert_eq!(deployment["metadata"]["namespace"], "kube-system");
    let policy = find(&objects, "NetworkPolicy", "cluster-autoscaler");
    assert_eq!(policy["metadata"]["namespace"], "kube-system");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        deployment["spec"]["template"]["metadata"]["labels"],
        "the policy selects the autoscaler's pods"
    );
    let egress = policy["spec"]["egress"].as_array().unwrap();
    let reaches = |cidr: &str, port: u64| {
        egress.iter().any(|rule| {
            rule["to"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|to| to["ipBlock"]["cidr"] == cidr)
                && rule["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["port"] == port)
        })
    };
    assert!(
        reaches("172.20.0.1/32", 443),
        "the Kubernetes API's ClusterIP: {egress:?}"
    );
    assert!(
        reaches("10.0.0.0/16", 443),
        "the API endpoints and VPC endpoints: {egress:?}"
    );
    assert!(
        reaches("0.0.0.0/0", 443),
        "AWS's regional endpoints: {egress:?}"
    );
    let internet = egress
        .iter()
        .find(|rule| rule["to"][0]["ipBlock"]["cidr"] == "0.0.0.0/0")
        .unwrap();
    let except = internet["to"][0]["ipBlock"]["except"].to_string();
    assert!(
        except.contains("169.254.0.0/16"),
        "never the metadata service: {except}"
    );
    assert!(
        egress
            .iter()
            .any(|rule| rule["ports"].to_string().contains("53")),
        "DNS: {egress:?}"
    );
    // The per-client rate limit trusts the load balancers' subnets for X-Forwarded-For.
    let environment = api(&objects)["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    let config = of_kind(&objects, "ConfigMap")
        .map(|c| c["data"].to_string())
        .collect::<String>();
    assert!(
        format!("{environment}{config}").contains("10.0.101.0/24,10.0.102.0/24,10.0.103.0/24"),
        "CONTROLPLANE_TRUSTED_PROXIES is the public subnets"
    );

    let local = shipped("local");
    assert!(
        !local
            .iter()
            .any(|o| o["metadata"]["name"] == "cluster-autoscaler"),
        "the local stack turns the autoscaler off"
    );
}
