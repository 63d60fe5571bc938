//! Server-side apply of the rendered baseline and control plane into the Kubernetes emulator that
//! `cargo xtask test` starts (kmock behind our adapter in tests/emulators/): every object is
//! created; a second apply changes nothing; a worker pool removed from the stack has its
//! Deployment pruned; a rollout that never becomes ready fails within its timeout, saying why.
//!
//! Each test renames the namespaces and tiers of the `local` stack with a unique suffix, so tests
//! running at once in one emulator never touch each other's objects.

use std::time::{Duration, Instant};

use indexmap::IndexMap;
use provisioner::kubernetes::apply::{Applier, ApplyError, ApplyOptions, Change};
use provisioner::kubernetes::{self, SecretValues};
use provisioner::stack::{LoadRequest, LoadedStack, StackSource};
use stacksmith_testkit::{kubeconfig, unique_name, workspace_root};

/// The `local` stack, made unique: its namespaces, tiers and instance carry `suffix`.
fn isolated_local_stack() -> LoadedStack {
    let suffix = unique_name("t").replace('_', "-").to_lowercase();
    let suffix = &suffix[suffix.len() - 8..];
    let request = LoadRequest {
        source: StackSource::Named {
            dir: workspace_root().join("stacks"),
            name: "local".into(),
        },
        instance: None,
    };
    let mut loaded = provisioner::stack::load(&request)
        .and_then(provisioner::stack::Loaded::into_deployable)
        .expect("the local stack loads");
    loaded.names.qualified = format!("local-{suffix}");
    let baseline = loaded
        .stack
        .baseline
        .as_mut()
        .expect("local has a baseline");
    let rename = |name: &str| format!("{name}-{suffix}");
    baseline.namespaces = baseline.namespaces.iter().map(|n| rename(n)).collect();
    baseline.pod_security = baseline
        .pod_security
        .iter()
        .map(|(n, l)| (rename(n), *l))
        .collect();
    baseline.quotas = baseline
        .quotas
        .iter()
        .map(|(n, q)| (rename(n), q.clone()))
        .collect();
    baseline.priority_classes = baseline
        .priority_classes
        .iter()
        .map(|(n, v)| (rename(n), *v))
        .collect();
    let controlplane = loaded
        .stack
        .controlplane
        .as_mut()
        .expect("local has a control plane");
    controlplane.namespace = rename(&controlplane.namespace);
    controlplane.worker_namespace = rename(&controlplane.worker_namespace);
    for pool in controlplane.worker_pools.values_mut() {
        pool.tier = rename(&pool.tier);
    }
    loaded
}

fn secrets() -> SecretValues {
    SecretValues {
        database_url: "postgres://stacksmith:example@127.0.0.1:5432/stacksmith".into(),
        redis_url: "redis://127.0.0.1:6379".into(),
        admin_key: "example-admin-key".into(),
        worker_key: "example-worker-key".into(),
    }
}

fn options(loaded: &LoadedStack, rollout_timeout: Duration) -> ApplyOptions {
    ApplyOptions {
        stack: loaded.names.qualified.clone(),
        rollout_timeout,
        poll_interval: Duration::from_millis(200),
    }
}

async fn applier() -> Applier {
    Applier::connect(&kubeconfig())
        .await
        .expect("the emulator is reachable")
}

#[tokio::test]
async fn apply_creates_everything_then_changes_nothing() {
    let loaded = isolated_local_stack();
    let files = kubernetes::render(&loaded, Some(&secrets())).expect("renders");
    let expected = files.iter().map(|f| f.objects.len()).sum::<usize>();
    let applier = applier().await;

    let first = applier
        .apply(&files, &options(&loaded, Duration::from_secs(30)))
        .await
        .expect("first apply");
    assert_eq!(first.applied.len(), expected);
    let not_created: Vec<_> = first
        .applied
        .iter()
        .filter(|(_, c)| *c != Change::Created)
        .collect();
    assert!(
        not_created.is_empty(),
        "a fresh stack's objects are all created: {not_created:?}"
    );
    assert!(first.pruned.is_empty());

    let second = applier
        .apply(&files, &options(&loaded, Duration::from_secs(30)))
        .await
        .expect("second apply");
    let changed: Vec<_> = second
        .applied
        .iter()
        .filter(|(_, c)| *c != Change::Unchanged)
        .collect();
    assert!(
        changed.is_empty(),
        "a second apply changes nothing: {changed:?}"
    );
    assert!(!second.changed());
}

#[tokio::test]
async fn a_removed_worker_pool_is_pruned() {
    let mut loaded = isolated_local_stack();
    let controlplane = loaded.stack.controlplane.as_mut().unwrap();
    let mut batch = controlplane.worker_pools["default"].clone();
    batch.concurrency = 8;
    controlplane.worker_pools.insert("batch".into(), batch);
    let applier = applier().await;
    let files = kubernetes::render(&loaded, Some(&secrets())).unwrap();
    applier
        .apply(&files, &options(&loaded, Duration::from_secs(30)))
        .await
        .expect("apply with two pools");

    let controlplane = loaded.stack.controlplane.as_mut().unwrap();
    controlplane.worker_pools = controlplane
        .worker_pools
        .iter()
        .filter(|(name, _)| *name != "batch")
        .map(|(n, p)| (n.clone(), p.clone()))
        .collect::<IndexMap<_, _>>();
    let files = kubernetes::render(&loaded, Some(&secrets())).unwrap();
    let report = applier
        .apply(&files, &options(&loaded, Duration::from_secs(30)))
        .await
        .expect("apply with one pool");
    let worker_namespace = &loaded.stack.controlplane.as_ref().unwrap().worker_namespace;
    let mut pruned = report.pruned.clone();
    pruned.sort();
    assert_eq!(
        pruned,
        [
            format!("Deployment/{worker_namespace}/stacksmith-worker-batch"),
            // The pool's egress (a copy of `default`'s) and disruption budget go with it.
            format!("NetworkPolicy/{worker_namespace}/stacksmith-worker-batch"),
            format!("PodDisruptionBudget/{worker_namespace}/stacksmith-worker-batch"),
        ]
    );

    let again = applier
        .apply(&files, &options(&loaded, Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(
        again.pruned.is_empty(),
        "pruned objects stay gone: {:?}",
        again.pruned
    );
}

#[tokio::test]
async fn apply_and_plan_keep_the_replica_count_the_pool_autoscaler_chose() {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Api, Patch, PatchParams};
    use provisioner::kubernetes::diff::{ObjectAction, in_cluster_changes};

    let loaded = isolated_local_stack();
    let files = kubernetes::render(&loaded, Some(&secrets())).unwrap();
    let applier = applier().await;
    applier
        .apply(&files, &options(&loaded, Duration::from_secs(30)))
        .await
        .expect("first apply");

    // The control plane's autoscaler scales the pool through the scale subresource, as its own
    // field manager (controlplane/src/autoscaler/pools.rs).
    let worker_namespace = &loaded.stack.controlplane.as_ref().unwrap().worker_namespace;
    let deployments: Api<Deployment> = Api::namespaced(
        kube::Client::try_from(kube_config().await).unwrap(),
        worker_namespace,
    );
    let name = "stacksmith-worker-default";
    let rendered = deployments.get(name).await.unwrap();
    // Server-side apply's ownership transfer: once created, `stacksmith` no longer owns the
    // replica count; the temporary `stacksmith-replicas` manager does, until the autoscaler
    // changes it (https://kubernetes.io/docs/reference/using-api/server-side-apply/).
    let owners_of_replicas = |deployment: &Deployment| -> Vec<String> {
        deployment
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .filter(|e| {
                e.fields_v1
                    .as_ref()
                    .is_some_and(|f| !f.0["f:spec"]["f:replicas"].is_null())
            })
            .filter_map(|e| e.manager.clone())
            .collect()
    };
    assert_eq!(owners_of_replicas(&rendered), ["stacksmith-replicas"]);
    let rendered_replicas = rendered.spec.clone().unwrap().replicas.unwrap();
    let scaled = rendered_replicas + 3;
    deployments
        .patch_scale(
            name,
            &PatchParams {
                field_manager: Some("stacksmith-autoscaler".into()),
                ..PatchParams::default()
            },
            &Patch::Merge(&serde_json::json!({ "spec": { "replicas": scaled } })),
        )
        .await
        .expect("scale the pool");

    let changes = in_cluster_changes(&applier, &files, &loaded.names.qualified)
        .await
        .unwrap();
    let worker = changes
        .iter()
        .find(|c| c.kind == "Deployment" && c.name == name)
        .expect("the worker Deployment is planned");
    assert_eq!(
        worker.action,
        ObjectAction::NoChange,
        "a scaled pool is not a planned change: {worker:?}"
    );

    let again = applier
        .apply(&files, &options(&loaded, Duration::from_secs(30)))
        .await
        .expect("second apply");
    let reference = format!("Deployment/{worker_namespace}/{name}");
    let (_, change) = again
        .applied
        .iter()
        .find(|(r, _)| *r == reference)
        .expect("the worker Deployment is applied");
    assert_eq!(
        *change,
        Change::Unchanged,
        "up leaves the scaled pool alone"
    );
    let live = deployments.get(name).await.unwrap();
    assert_eq!(owners_of_replicas(&live), ["stacksmith-autoscaler"]);
    assert_eq!(
        live.spec.unwrap().replicas,
        Some(scaled),
        "the autoscaler's choice survives `up` (rendered: {rendered_replicas})"
    );

    // Scaled below the pool's minimum: `up` brings it back, and owns nothing afterwards.
    deployments
        .patch_scale(
            name,
            &PatchParams {
                field_manager: Some("stacksmith-autoscaler".into()),
                ..PatchParams::default()
            },
            &Patch::Merge(&serde_json::json!({ "spec": { "replicas": 0 } })),
        )
        .await
        .expect("scale the pool to zero");
    applier
        .apply(&files, &options(&loaded, Duration::from_secs(30)))
        .await
        .expect("third apply");
    let live = deployments.get(name).await.unwrap();
    assert_eq!(live.spec.clone().unwrap().replicas, Some(rendered_replicas));
    assert_eq!(owners_of_replicas(&live), ["stacksmith-replicas"]);
}

async fn kube_config() -> kube::Config {
    let file = kube::config::Kubeconfig::read_from(kubeconfig()).unwrap();
    kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_rollout_that_never_becomes_ready_fails_within_its_timeout() {
    let mut loaded = isolated_local_stack();
    loaded.stack.controlplane.as_mut().unwrap().image =
        "registry.example/stacksmith-controlplane:never-ready".into();
    let files = kubernetes::render(&loaded, Some(&secrets())).unwrap();
    let timeout = Duration::from_secs(3);
    let started = Instant::now();
    let error = applier()
        .await
        .apply(&files, &options(&loaded, timeout))
        .await
        .expect_err("the rollout never completes");
    assert!(
        started.elapsed() < timeout + Duration::from_secs(20),
        "bounded by the timeout: {:?}",
        started.elapsed()
    );
    let ApplyError::RolloutTimeout { not_ready, .. } = &error else {
        panic!("{error}")
    };
    assert!(
        not_ready
            .iter()
            .any(|line| line.contains("stacksmith-controlplane")
                && line.contains("ProgressDeadlineExceeded")),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .starts_with("rollout not complete after 3s"),
        "{error}"
    );
}

/// Issue 16 item 13: the API server refuses to change a PriorityClass's `value` in an update
/// ("value: Forbidden: may not be changed in an update", which the emulator reproduces); `up`
/// deletes and recreates the class, and the next apply changes nothing.
#[tokio::test]
async fn a_changed_priority_class_value_is_recreated() {
    let mut loaded = isolated_local_stack();
    let applier = applier().await;
    let files = kubernetes::render(&loaded, Some(&secrets())).unwrap();
    applier
        .apply(&files, &options(&loaded, Duration::from_secs(30)))
        .await
        .expect("first apply");
    let baseline = loaded.stack.baseline.as_mut().unwrap();
    let (tier, value) = baseline.priority_classes.iter_mut().next().expect("a tier");
    let tier = tier.clone();
    *value += 7;
    let new_value = i64::from(*value);
    let files = kubernetes::render(&loaded, Some(&secrets())).unwrap();
    let report = applier
        .apply(&files, &options(&loaded, Duration::from_secs(30)))
        .await
        .expect("a changed PriorityClass value is applied");
    assert!(
        report
            .applied
            .iter()
            .any(|(r, c)| *r == format!("PriorityClass/{tier}") && *c == Change::Configured),
        "{:?}",
        report.applied
    );
    let classes: kube::Api<k8s_openapi::api::scheduling::v1::PriorityClass> =
        kube::Api::all(kube::Client::try_from(kube_config().await).unwrap());
    let live = classes.get(&tier).await.expect("recreated");
    assert_eq!(i64::from(live.value), new_value);
    let again = applier
        .apply(&files, &options(&loaded, Duration::from_secs(30)))
        .await
        .expect("third apply");
    assert!(!again.changed(), "{:?}", again.applied);
}

/// Issue 16 item 8 against the emulator: a rotated Secret value changes the applied pod
/// template (so the Deployment rolls), and applying the same values again changes nothing.
#[tokio::test]
async fn a_rotated_secret_rolls_the_pods() {
    let loaded = isolated_local_stack();
    let applier = applier().await;
    let files = kubernetes::render(&loaded, Some(&secrets())).unwrap();
    applier
        .apply(&files, &options(&loaded, Duration::from_secs(30)))
        .await
        .expect("first apply");
    let namespace = loaded
        .stack
        .controlplane
        .as_ref()
        .unwrap()
        .namespace
        .clone();
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> = kube::Api::namespaced(
        kube::Client::try_from(kube_config().await).unwrap(),
        &namespace,
    );
    let checksum = |d: &k8s_openapi::api::apps::v1::Deployment| {
        d.spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()["stacksmith.dev/secret-checksum"]
            .clone()
    };
    let before = checksum(&deployments.get("stacksmith-controlplane").await.unwrap());
    let rotated = SecretValues {
        database_url: "postgres://stacksmith:rotated@127.0.0.1:5432/stacksmith".into(),
        ..secrets()
    };
    let files = kubernetes::render(&loaded, Some(&rotated)).unwrap();
    let report = applier
        .apply(&files, &options(&loaded, Duration::from_secs(30)))
        .await
        .expect("apply the rotated password");
    let reference = format!("Deployment/{namespace}/stacksmith-controlplane");
    assert!(
        report
            .applied
            .iter()
            .any(|(r, c)| *r == reference && *c == Change::Configured),
        "{:?}",
        report.applied
    );
    let after = checksum(&deployments.get("stacksmith-controlplane").await.unwrap());
    assert_ne!(before, after);
    let again = applier
        .apply(&files, &options(&loaded, Duration::from_secs(30)))
        .await
        .expect("same values again");
    assert!(!again.changed(), "{:?}", again.applied);
}

/// Issue 16 item 6: pods reach the Kubernetes API through the `kubernetes` Service's ClusterIP,
/// the first address of the cluster's service CIDR, which a network policy sees before it is
/// translated; the API's policy (its pool autoscaler calls the Kubernetes API) admits exactly that
/// address on 443, as the cluster serves it.
#[tokio::test]
async fn the_api_may_reach_the_kubernetes_service_of_the_cluster() {
    let loaded = isolated_local_stack();
    let services: kube::Api<k8s_openapi::api::core::v1::Service> = kube::Api::namespaced(
        kube::Client::try_from(kube_config().await).unwrap(),
        "default",
    );
    let cluster_ip = services
        .get("kubernetes")
        .await
        .expect("the cluster serves the `kubernetes` Service")
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a ClusterIP");
    let files = kubernetes::render(&loaded, Some(&secrets())).unwrap();
    let policy = files
        .iter()
        .flat_map(|f| &f.objects)
        .find(|o| o.kind == "NetworkPolicy" && o.name == "stacksmith-controlplane")
        .expect("the API's policy");
    let admitted = policy.object["spec"]["egress"]
        .as_array()
        .expect("egress rules")
        .iter()
        .any(|rule| {
            rule["to"].as_array().is_some_and(|to| {
                to.iter()
                    .any(|peer| peer["ipBlock"]["cidr"] == format!("{cluster_ip}/32"))
            }) && rule["ports"]
                .as_array()
                .is_some_and(|ports| ports.iter().any(|p| p["port"] == 443))
        });
    assert!(
        admitted,
        "the API's policy does not admit {cluster_ip}:443: {}",
        policy.object
    );
}
