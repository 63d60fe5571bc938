//! `provisioner up` installs the cluster baseline and the control plane after the cloud side: the
//! real binary, the fake cloud provider, and the Kubernetes emulator of `cargo xtask test`
//! (through `cluster.kubeconfig`, the bring-your-own-cluster path the `local` stack uses).
//!
//! Every run uses its own namespaces, priority classes and stack name, so runs never meet.
//! `drift` compares the installed objects with the stack after out-of-band changes made here with
//! kube-rs.

use std::path::PathBuf;
use std::process::Output;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use provisioner::engine::drift::{DriftReport, DriftStatus};
use serde_json::json;
use stacksmith_testkit::{
    describe, fake_cloud_provisioner, kubeconfig, unique_name, workspace_root,
};

mod drift_support;
use drift_support::{assert_valid, check_junit};

struct Sandbox {
    dir: PathBuf,
    suffix: String,
}

/// The worker pools of the sandbox's stack by default.
const ONE_POOL: &str = "default: { tier: standard-SUFFIX, concurrency: 2, replicas: { min: 1, max: 3 }, tasks_per_replica: 10 }";

impl Sandbox {
    fn new() -> Self {
        Self::with_pools(&[ONE_POOL])
    }

    /// A sandbox whose stack has these worker pools (`SUFFIX` stands for the run's suffix).
    fn with_pools(pools: &[&str]) -> Self {
        let name = unique_name("cluster-install")
            .replace('_', "-")
            .to_lowercase();
        let suffix = name[name.len() - 8..].to_owned();
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(dir.join("stacks")).unwrap();
        // The demo stack without its baseline: maps merge under `extends`, and this stack brings
        // its own namespaces.
        let demo = std::fs::read_to_string(
            workspace_root().join("tests/fixtures/engine/stacks/demo.yaml"),
        )
        .unwrap();
        let cut = demo.find("\nbaseline:").expect("demo.yaml has a baseline");
        let end = demo[cut + 1..]
            .find("\n\n")
            .map_or(demo.len(), |offset| cut + 1 + offset);
        let demo = format!("{}{}", &demo[..cut], &demo[end..]);
        std::fs::write(dir.join("stacks/demo.yaml"), demo).unwrap();
        let sandbox = Self { dir, suffix };
        sandbox.write_stack(pools);
        sandbox
    }

    /// (Re)writes the stack `cluster` with these worker pools.
    fn write_stack(&self, pools: &[&str]) {
        let s = &self.suffix;
        let pools: String = pools
            .iter()
            .map(|pool| format!("    {}\n", pool.replace("SUFFIX", s)))
            .collect();
        // No Cluster Autoscaler: its objects have fixed names in `kube-system`, which concurrent
        // stacks on the one emulator would fight over (cluster_autoscaler.rs installs it).
        let stack = format!(
            "extends: demo.yaml\n\
             name: k{s}\n\
             cluster: {{ kubeconfig: {kubeconfig}, autoscaler: {{ enabled: false }} }}\n\
             baseline:\n  \
               namespaces: [sys-{s}, work-{s}]\n  \
               pod_security: {{ sys-{s}: restricted, work-{s}: baseline }}\n  \
               network_policies: default-deny\n  \
               priority_classes: {{ standard-{s}: 500 }}\n\
             controlplane:\n  \
               image: ghcr.io/acme/stacksmith-controlplane:1.0.0\n  \
               replicas: 2\n  \
               namespace: sys-{s}\n  \
               worker_namespace: work-{s}\n  \
               api_client_namespaces: []\n  \
               resources: {{ requests: {{ cpu: 100m, memory: 128Mi }}, limits: {{ cpu: 500m, memory: 512Mi }} }}\n  \
               rate_limit: {{ per_key_rps: 50, burst: 100, global_rps: 500 }}\n  \
               worker_pools:\n{pools}",
            kubeconfig = kubeconfig().display(),
        );
        std::fs::write(self.dir.join("stacks/cluster.yaml"), stack).unwrap();
    }

    fn up(&self) -> Output {
        self.run(&[
            "up",
            "--stack",
            "cluster",
            "--yes",
            "--rollout-timeout",
            "60s",
        ])
    }

    /// The binary in the sandbox with the fake cloud, the shipped policies and the state key.
    fn run(&self, args: &[&str]) -> Output {
        fake_cloud_provisioner(
            env!("CARGO_BIN_EXE_provisioner"),
            &self.dir,
            "cluster-install-test-key",
        )
        .args(args)
        .output()
        .expect("the provisioner binary runs")
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn client() -> kube::Client {
    let file = Kubeconfig::read_from(kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn secret_value(secret: &Secret, key: &str) -> String {
    if let Some(value) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return String::from_utf8(value.0.clone()).unwrap();
    }
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .cloned()
        .unwrap_or_else(|| panic!("the secret has no {key}"))
}

#[tokio::test]
async fn up_installs_the_baseline_and_control_plane_then_changes_nothing() {
    let sandbox = Sandbox::new();
    let s = &sandbox.suffix;

    let first = sandbox.up();
    assert!(first.status.success(), "{}", describe(&first));
    let stderr = String::from_utf8_lossy(&first.stderr).into_owned();
    assert!(
        stderr.contains("Applying the cluster baseline and control plane"),
        "{stderr}"
    );
    assert!(
        stderr.contains(" created, 0 configured, 0 unchanged, 0 pruned"),
        "{stderr}"
    );

    let client = client().await;
    let namespace = Api::<Namespace>::all(client.clone())
        .get(&format!("sys-{s}"))
        .await
        .expect("the system namespace exists");
    let labels = namespace.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("restricted")
    );
    let deployment = Api::<Deployment>::namespaced(client.clone(), &format!("sys-{s}"))
        .get("stacksmith-controlplane")
        .await
        .expect("the control plane Deployment exists");
    assert_eq!(deployment.spec.unwrap().replicas, Some(2));
    Api::<Deployment>::namespaced(client.clone(), &format!("work-{s}"))
        .get("stacksmith-worker-default")
        .await
        .expect("the worker pool Deployment exists");

    // The connection strings come from the provisioned outputs and the secrets in state.
    let secret = Api::<Secret>::namespaced(client.clone(), &format!("sys-{s}"))
        .get("stacksmith-controlplane")
        .await
        .expect("the control plane Secret exists");
    let database_url = secret_value(&secret, "DATABASE_URL");
    let rest = database_url
        .strip_prefix("postgres://stacksmith:")
        .unwrap_or_else(|| panic!("a Postgres URL with the master user: {database_url}"));
    let (password, host) = rest.split_once('@').unwrap();
    assert!(password.len() >= 16, "a generated password");
    assert!(
        host.contains(".fake.internal:5432/"),
        "the database endpoint from state: {host}"
    );
    assert!(secret_value(&secret, "REDIS_URL").starts_with("rediss://:"));
    let admin_key = secret_value(&secret, "CONTROLPLANE_ADMIN_KEY");
    assert_eq!(admin_key.len(), 43);
    // Secrets reach the cluster only: not the output, not the state file.
    let state = std::fs::read_to_string(sandbox.dir.join(format!(".stacksmith/state/k{s}.json")))
        .expect("local state");
    for secret in [password, admin_key.as_str()] {
        assert!(!describe(&first).contains(secret), "a secret was printed");
        assert!(
            !state.contains(secret),
            "a secret is in state in plain text"
        );
    }

    // A second `up` changes nothing, in the cloud or in the cluster, and keeps the same keys.
    let second = sandbox.up();
    assert!(second.status.success(), "{}", describe(&second));
    let stderr = String::from_utf8_lossy(&second.stderr).into_owned();
    assert!(
        stderr.contains("Cluster: 0 created, 0 configured, ") && stderr.contains(" 0 pruned"),
        "{stderr}"
    );
    let again = Api::<Secret>::namespaced(client, &format!("sys-{s}"))
        .get("stacksmith-controlplane")
        .await
        .unwrap();
    assert_eq!(secret_value(&again, "CONTROLPLANE_ADMIN_KEY"), admin_key);
}

fn json_of(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", describe(output)))
}

/// The plan JSON's entry for `reference` among `cluster_objects.objects`.
fn cluster_object<'a>(plan: &'a serde_json::Value, reference: &str) -> &'a serde_json::Value {
    plan["cluster_objects"]["objects"]
        .as_array()
        .expect("cluster_objects.objects")
        .iter()
        .find(|o| o["reference"] == reference)
        .unwrap_or_else(|| panic!("{reference} is not in the plan: {plan:#}"))
}

const BATCH_POOL: &str = "batch: { tier: standard-SUFFIX, concurrency: 1, replicas: { min: 1, max: 2 }, tasks_per_replica: 5 }";
const BIGGER_DEFAULT_POOL: &str = "default: { tier: standard-SUFFIX, concurrency: 2, replicas: { min: 2, max: 3 }, tasks_per_replica: 10 }";

#[tokio::test]
async fn plan_shows_in_cluster_creates_then_nothing_then_updates_and_prunes() {
    let sandbox = Sandbox::with_pools(&[ONE_POOL, BATCH_POOL]);
    let s = &sandbox.suffix;
    let default_pool = format!("Deployment/work-{s}/stacksmith-worker-default");
    let batch_pool = format!("Deployment/work-{s}/stacksmith-worker-batch");
    let plan_json = || sandbox.run(&["plan", "--stack", "cluster", "--json"]);

    // Before the first `up`, every object is to be created.
    let before = plan_json();
    assert!(before.status.success(), "{}", describe(&before));
    let plan = json_of(&before);
    let summary = &plan["cluster_objects"]["summary"];
    assert!(summary["create"].as_u64().unwrap() > 10, "{summary}");
    assert_eq!(
        (
            &summary["update"],
            &summary["delete"],
            &summary["no_change"]
        ),
        (&0.into(), &0.into(), &0.into())
    );
    assert_eq!(cluster_object(&plan, &batch_pool)["action"], "create");

    let up = sandbox.up();
    assert!(up.status.success(), "{}", describe(&up));

    // After it, nothing: the cloud side and every in-cluster object match the stack.
    let after = sandbox.run(&["plan", "--stack", "cluster", "--detailed-exitcode"]);
    assert_eq!(after.status.code(), Some(0), "{}", describe(&after));
    let text = String::from_utf8_lossy(&after.stdout).into_owned();
    assert!(
        text.contains("Cluster: 0 to create, 0 to update, 0 to delete, "),
        "{text}"
    );
    let plan = json_of(&plan_json());
    assert_eq!(cluster_object(&plan, &default_pool)["action"], "no_change");
    assert_eq!(cluster_object(&plan, &batch_pool)["action"], "no_change");

    // `render --include-secrets` writes the Secrets `up` applied, to a private file, and never
    // prints them.
    let manifests = sandbox.dir.join("manifests");
    let render = sandbox.run(&[
        "render",
        "--stack",
        "cluster",
        "--include-secrets",
        "--out",
        manifests.to_str().unwrap(),
    ]);
    assert!(render.status.success(), "{}", describe(&render));
    let secrets_file = manifests.join("51-secrets.yaml");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&secrets_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let written =
        stacksmith_testkit::rendered_objects(&std::fs::read_to_string(&secrets_file).unwrap());
    let written_key = written
        .iter()
        .find(|o| o["metadata"]["name"] == "stacksmith-controlplane")
        .and_then(|o| o["stringData"]["CONTROLPLANE_ADMIN_KEY"].as_str())
        .expect("the control plane Secret with the admin key")
        .to_owned();
    let live = Api::<Secret>::namespaced(client().await, &format!("sys-{s}"))
        .get("stacksmith-controlplane")
        .await
        .unwrap();
    assert_eq!(written_key, secret_value(&live, "CONTROLPLANE_ADMIN_KEY"));
    assert!(
        !describe(&render).contains(&written_key),
        "a secret was printed"
    );

    // A bigger default pool and no batch pool: the plan names the update and the prune.
    sandbox.write_stack(&[BIGGER_DEFAULT_POOL]);
    let changed = sandbox.run(&["plan", "--stack", "cluster", "--detailed-exitcode"]);
    assert_eq!(changed.status.code(), Some(2), "{}", describe(&changed));
    let text = String::from_utf8_lossy(&changed.stdout).into_owned();
    assert!(
        text.contains(&format!("~ {default_pool} (update: ")) && text.contains("spec.replicas"),
        "{text}"
    );
    assert!(text.contains(&format!("- {batch_pool} (delete")), "{text}");
    let plan = json_of(&plan_json());
    let update = cluster_object(&plan, &default_pool);
    assert_eq!(update["action"], "update");
    let fields: Vec<&str> = update["changed_fields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    assert!(fields.contains(&"spec.replicas"), "{fields:?}");
    assert!(
        fields.contains(&r#"metadata.annotations["stacksmith.dev/min-replicas"]"#),
        "{fields:?}"
    );
    assert_eq!(cluster_object(&plan, &batch_pool)["action"], "delete");

    // `up --skip-cluster-install` leaves the cluster alone and says so.
    let skipped = sandbox.run(&[
        "up",
        "--stack",
        "cluster",
        "--yes",
        "--skip-cluster-install",
    ]);
    assert!(skipped.status.success(), "{}", describe(&skipped));
    assert!(
        String::from_utf8_lossy(&skipped.stderr).contains("--skip-cluster-install"),
        "{}",
        describe(&skipped)
    );
    let plan = json_of(&plan_json());
    assert_eq!(cluster_object(&plan, &batch_pool)["action"], "delete");

    // `up` applies the change and prunes the pool (`--json`: the `cluster` event says so); then
    // the plan is empty again.
    let json_up = sandbox.run(&[
        "up",
        "--stack",
        "cluster",
        "--yes",
        "--json",
        "--rollout-timeout",
        "60s",
    ]);
    assert!(json_up.status.success(), "{}", describe(&json_up));
    let stdout = String::from_utf8_lossy(&json_up.stdout).into_owned();
    let event: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("events")).unwrap();
    assert_eq!(event["event"], "cluster", "{stdout}");
    assert_eq!(event["installed"], true);
    assert_eq!(event["configured"], 1);
    // The pool's PodDisruptionBudget goes with it.
    let batch_budget = batch_pool.replacen("Deployment/", "PodDisruptionBudget/", 1);
    assert_eq!(
        event["pruned"],
        serde_json::json!([batch_budget, batch_pool])
    );
    let up = sandbox.up();
    assert!(up.status.success(), "{}", describe(&up));
    let stderr = String::from_utf8_lossy(&up.stderr).into_owned();
    assert!(
        stderr.contains("Cluster: 0 created, 0 configured, ") && stderr.contains(", 0 pruned"),
        "{stderr}"
    );
    let settled = sandbox.run(&["plan", "--stack", "cluster", "--detailed-exitcode"]);
    assert_eq!(settled.status.code(), Some(0), "{}", describe(&settled));
    let plan = json_of(&plan_json());
    assert!(
        plan["cluster_objects"]["objects"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["reference"] != batch_pool.as_str()),
        "the batch pool is gone: {plan:#}"
    );
}

/// `drift --format F` of the sandbox's stack.
fn drift(sandbox: &Sandbox, format: &str) -> Output {
    sandbox.run(&["drift", "--stack", "cluster", "--format", format])
}

/// The drifted entries of a JSON drift report as (kind, address, status).
fn drifted(report: &DriftReport) -> Vec<(&str, &str, DriftStatus)> {
    report
        .drifted()
        .map(|e| (e.kind.as_str(), e.address.as_str(), e.status))
        .collect()
}

#[tokio::test]
async fn drift_reports_out_of_band_cluster_changes_but_not_a_scaled_pool_and_up_converges() {
    let sandbox = Sandbox::new();
    let s = &sandbox.suffix;
    let (sys, work) = (format!("sys-{s}"), format!("work-{s}"));
    let up = sandbox.up();
    assert!(up.status.success(), "{}", describe(&up));

    // Right after `up`: the cloud and the cluster match, every in-cluster object is compared.
    let clean = drift(&sandbox, "json");
    assert_eq!(clean.status.code(), Some(0), "{}", describe(&clean));
    assert_valid(&String::from_utf8_lossy(&clean.stdout));
    let report: DriftReport = serde_json::from_slice(&clean.stdout).unwrap();
    assert!(!report.has_drift(), "{}", describe(&clean));
    let pool_address = format!("kubernetes/{work}/Deployment/stacksmith-worker-default");
    let pool = |report: &DriftReport| {
        report
            .entries
            .iter()
            .find(|e| e.kind == "kubernetes:apps/v1/Deployment" && e.address == pool_address)
            .cloned()
            .unwrap_or_else(|| panic!("no entry for the worker pool: {report:#?}"))
    };
    assert_eq!(pool(&report).status, DriftStatus::InSync);
    assert!(
        report
            .entries
            .iter()
            .any(|e| e.kind == "kubernetes:v1/Namespace"
                && e.address == format!("kubernetes/Namespace/{sys}")),
        "cluster-scoped objects are compared too: {report:#?}"
    );
    let compared = report.summary.in_sync;

    // Out of band: a changed ConfigMap value, a deleted NetworkPolicy, an object carrying the
    // stack's inventory label that the stack does not render, and the autoscaler's kind of
    // change (a worker pool scaled through the scale subresource, within its bounds).
    let client = client().await;
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), &sys);
    config_maps
        .patch(
            "stacksmith-controlplane",
            &PatchParams::default(),
            &Patch::Merge(json!({ "data": { "CONTROLPLANE_RATE_BURST": "999" } })),
        )
        .await
        .expect("the control plane ConfigMap is patched");
    Api::<NetworkPolicy>::namespaced(client.clone(), &work)
        .delete("stacksmith-worker", &DeleteParams::default())
        .await
        .expect("the workers' NetworkPolicy is deleted");
    let stray: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": format!("stray-{s}"), "namespace": work,
                      "labels": { "stacksmith.dev/stack": format!("k{s}") } },
        "data": { "made": "by hand" }
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), &work)
        .create(&PostParams::default(), &stray)
        .await
        .expect("the stray ConfigMap is created");
    let deployments = Api::<Deployment>::namespaced(client.clone(), &work);
    deployments
        .patch_scale(
            "stacksmith-worker-default",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 3 } })),
        )
        .await
        .expect("the worker pool is scaled");

    let changed = drift(&sandbox, "json");
    assert_eq!(changed.status.code(), Some(2), "{}", describe(&changed));
    let json_text = String::from_utf8_lossy(&changed.stdout).into_owned();
    assert_valid(&json_text);
    let report: DriftReport = serde_json::from_str(&json_text).unwrap();
    let config_address = format!("kubernetes/{sys}/ConfigMap/stacksmith-controlplane");
    let policy_address = format!("kubernetes/{work}/NetworkPolicy/stacksmith-worker");
    let stray_address = format!("kubernetes/{work}/ConfigMap/stray-{s}");
    // In apply order (network policies before config), then the inventory's leftovers.
    assert_eq!(
        drifted(&report),
        vec![
            (
                "kubernetes:networking.k8s.io/v1/NetworkPolicy",
                policy_address.as_str(),
                DriftStatus::Deleted
            ),
            (
                "kubernetes:v1/ConfigMap",
                config_address.as_str(),
                DriftStatus::Modified
            ),
            (
                "kubernetes:v1/ConfigMap",
                stray_address.as_str(),
                DriftStatus::Unmanaged
            ),
        ],
        "{json_text}"
    );
    let modified = report
        .drifted()
        .find(|e| e.status == DriftStatus::Modified)
        .unwrap();
    let attributes: Vec<(&str, &serde_json::Value, &serde_json::Value)> = modified
        .attributes
        .iter()
        .map(|a| (a.name.as_str(), &a.expected, &a.actual))
        .collect();
    assert_eq!(
        attributes,
        vec![("data.CONTROLPLANE_RATE_BURST", &json!("100"), &json!("999"))]
    );
    assert_eq!(
        (
            report.summary.modified,
            report.summary.deleted,
            report.summary.unmanaged
        ),
        (1, 1, 1)
    );
    assert_eq!(report.summary.in_sync, compared - 2, "{json_text}");
    // The scaled pool is not drift: the autoscaler owns its size.
    assert_eq!(pool(&report).status, DriftStatus::InSync);
    let live_pool = deployments.get("stacksmith-worker-default").await.unwrap();
    assert_eq!(live_pool.spec.unwrap().replicas, Some(3));
    // Secret values are never shown (the Secret is compared by its keys).
    let secret = Api::<Secret>::namespaced(client.clone(), &sys)
        .get("stacksmith-controlplane")
        .await
        .unwrap();
    let admin_key = secret_value(&secret, "CONTROLPLANE_ADMIN_KEY");
    assert!(!json_text.contains(&admin_key), "a secret was printed");
    assert!(!json_text.contains("PLACEHOLDER"), "{json_text}");

    // The same report as JUnit XML and as text.
    let junit = drift(&sandbox, "junit");
    assert_eq!(junit.status.code(), Some(2), "{}", describe(&junit));
    let xml = String::from_utf8_lossy(&junit.stdout).into_owned();
    check_junit(&xml, &report);
    assert!(
        xml.contains(
            "data.CONTROLPLANE_RATE_BURST: expected &quot;100&quot;, actual &quot;999&quot;"
        ),
        "{xml}"
    );
    let human = drift(&sandbox, "human");
    assert_eq!(human.status.code(), Some(2), "{}", describe(&human));
    let text = String::from_utf8_lossy(&human.stdout).into_owned();
    assert!(
        text.contains("1 modified, 1 deleted, 1 unmanaged"),
        "{text}"
    );

    // `up` converges: the value back, the policy again, the stray object pruned, the pool's size
    // kept; then no drift.
    let up = sandbox.up();
    assert!(up.status.success(), "{}", describe(&up));
    let settled = drift(&sandbox, "json");
    assert_eq!(settled.status.code(), Some(0), "{}", describe(&settled));
    let report: DriftReport = serde_json::from_slice(&settled.stdout).unwrap();
    assert_eq!(report.summary.in_sync, compared, "{report:#?}");
    let stray_gone = Api::<ConfigMap>::namespaced(client.clone(), &work)
        .get_opt(&format!("stray-{s}"))
        .await
        .unwrap();
    assert!(stray_gone.is_none(), "`up` prunes the stray object");
    let live_pool = deployments.get("stacksmith-worker-default").await.unwrap();
    assert_eq!(
        live_pool.spec.unwrap().replicas,
        Some(3),
        "`up` keeps the pool's size"
    );
}
