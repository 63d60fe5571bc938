use serde_json::Value as Json;

use super::*;
use crate::stack::{LoadRequest, Loaded, StackSource};

fn load(name: &str, instance: Option<&str>) -> LoadedStack {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../stacks");
    let request = LoadRequest {
        source: StackSource::Named {
            dir,
            name: name.to_owned(),
        },
        instance: instance.map(str::to_owned),
    };
    let env = |var: &str| {
        (var == "STACKSMITH_STATE_URL").then(|| "postgres://127.0.0.1/state".to_owned())
    };
    match crate::stack::load_with_env(&request, &env) {
        Ok(Loaded::Deployable(loaded)) => *loaded,
        Ok(Loaded::Abstract { .. }) => panic!("{name} is abstract"),
        Err(errors) => panic!("{name}: {errors}"),
    }
}

fn secrets() -> SecretValues {
    SecretValues {
        database_url: "postgres://stacksmith:s3cret@db.internal:5432/stacksmith".into(),
        redis_url: "rediss://:t0ken@cache.internal:6379".into(),
        admin_key: "admin-key-value".into(),
        worker_key: "worker-key-value".into(),
    }
}

fn objects(files: &[RenderedFile]) -> Vec<&RenderedObject> {
    files.iter().flat_map(|f| &f.objects).collect()
}

fn find<'a>(files: &'a [RenderedFile], kind: &str, name: &str) -> &'a Json {
    &objects(files)
        .into_iter()
        .find(|o| o.kind == kind && o.name == name)
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
        .object
}

#[test]
fn production_renders_every_object_of_the_baseline_and_the_control_plane() {
    let files = render(&load("production", None), Some(&secrets())).unwrap();
    let mut kinds: Vec<String> = objects(&files).iter().map(|o| o.reference()).collect();
    kinds.sort();
    for expected in [
        "Namespace/system",
        "Namespace/workload",
        "Namespace/data",
        "Namespace/monitoring",
        "PriorityClass/premium",
        "ResourceQuota/workload/stacksmith-quota",
        "NetworkPolicy/system/default-deny",
        "NetworkPolicy/workload/allow-dns",
        "NetworkPolicy/system/stacksmith-controlplane",
        "NetworkPolicy/workload/stacksmith-worker",
        "ServiceAccount/system/stacksmith-controlplane",
        "Role/workload/stacksmith-worker-scaler",
        "RoleBinding/workload/stacksmith-worker-scaler",
        "ConfigMap/system/stacksmith-controlplane",
        "Secret/system/stacksmith-controlplane",
        "Secret/workload/stacksmith-worker",
        "Deployment/system/stacksmith-controlplane",
        "Service/system/stacksmith-controlplane",
        "HorizontalPodAutoscaler/system/stacksmith-controlplane",
        "PodDisruptionBudget/system/stacksmith-controlplane",
        "Deployment/workload/stacksmith-worker-default",
        "Deployment/workload/stacksmith-worker-premium",
    ] {
        assert!(
            kinds.iter().any(|k| k == expected),
            "{expected} missing from {kinds:#?}"
        );
    }
    let file_names: Vec<&str> = files.iter().map(|f| f.file_name.as_str()).collect();
    let mut sorted = file_names.clone();
    sorted.sort();
    assert_eq!(file_names, sorted, "files come in apply order");
}

#[test]
fn every_object_carries_the_inventory_labels() {
    let files = render(&load("staging", Some("pr-9")), Some(&secrets())).unwrap();
    for object in objects(&files) {
        let labels = &object.object["metadata"]["labels"];
        assert_eq!(
            labels[MANAGED_BY_LABEL],
            "stacksmith",
            "{}",
            object.reference()
        );
        assert_eq!(
            labels[STACK_LABEL],
            "staging-pr-9",
            "{}",
            object.reference()
        );
    }
}

#[test]
fn the_control_plane_deployment_is_hardened() {
    let files = render(&load("production", None), None).unwrap();
    let deployment = find(&files, "Deployment", "stacksmith-controlplane");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let container = &pod["containers"][0];
    assert_eq!(
        container["image"],
        "ghcr.io/acme/stacksmith-controlplane:1.0.0"
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );
    assert_eq!(container["resources"]["requests"]["cpu"], "500m");
    assert_eq!(container["resources"]["limits"]["memory"], "1Gi");
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert!(container[probe]["httpGet"]["path"].is_string(), "{probe}");
    }
    assert!(pod["affinity"]["podAntiAffinity"].is_object());
    assert_eq!(
        pod["topologySpreadConstraints"][0]["topologyKey"],
        "topology.kubernetes.io/zone"
    );
    let hpa = find(&files, "HorizontalPodAutoscaler", "stacksmith-controlplane");
    assert_eq!(hpa["spec"]["minReplicas"], 3);
    assert_eq!(hpa["spec"]["maxReplicas"], 10);
    let config = find(&files, "ConfigMap", "stacksmith-controlplane");
    assert_eq!(config["data"]["CONTROLPLANE_RATE_PER_KEY_RPS"], "100");
    assert_eq!(config["data"]["CONTROLPLANE_RATE_GLOBAL_RPS"], "1000");
    assert_eq!(
        config["data"]["CONTROLPLANE_AUTOSCALER_NAMESPACE"], "workload",
        "the autoscaler looks for the worker Deployments where they are rendered"
    );
}

#[test]
fn worker_pools_get_their_tier_size_and_resources() {
    let files = render(&load("production", None), None).unwrap();
    let default = find(&files, "Deployment", "stacksmith-worker-default");
    assert_eq!(default["spec"]["replicas"], 2);
    // What the control plane's pool autoscaler reads (controlplane/src/autoscaler/pools.rs).
    assert_eq!(default["metadata"]["namespace"], "workload");
    let labels = &default["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/name"], "stacksmith-worker");
    assert_eq!(labels["stacksmith.dev/pool"], "default");
    let annotations = &default["metadata"]["annotations"];
    assert_eq!(annotations["stacksmith.dev/min-replicas"], "2");
    assert_eq!(annotations["stacksmith.dev/max-replicas"], "50");
    assert_eq!(annotations["stacksmith.dev/tasks-per-replica"], "10");
    assert_eq!(annotations[super::REPLICAS_ANNOTATION], "autoscaled");
    let pod = &default["spec"]["template"]["spec"];
    assert_eq!(pod["priorityClassName"], "standard");
    assert_eq!(pod["automountServiceAccountToken"], false);
    let args = &pod["containers"][0]["args"];
    assert_eq!(args[0], "worker");
    assert!(
        args.as_array()
            .unwrap()
            .iter()
            .any(|a| a == "http://stacksmith-controlplane.system.svc")
    );
    let premium = find(&files, "Deployment", "stacksmith-worker-premium");
    assert_eq!(
        premium["spec"]["template"]["spec"]["priorityClassName"],
        "premium"
    );
}

#[test]
fn worker_pods_have_one_isolated_container_per_task_slot_in_the_pool_image() {
    let files = render(&load("production", None), None).unwrap();
    let default = find(&files, "Deployment", "stacksmith-worker-default");
    let pod = &default["spec"]["template"]["spec"];
    assert_eq!(
        pod["shareProcessNamespace"], false,
        "one PID namespace per slot"
    );
    // The init container copies the worker binary out of the control plane image.
    let init = &pod["initContainers"][0];
    assert_eq!(init["image"], "ghcr.io/acme/stacksmith-controlplane:1.0.0");
    assert_eq!(init["args"][0], "runtime");
    assert_eq!(init["volumeMounts"][0]["mountPath"], "/stacksmith");
    // production's default pool: concurrency 4, the default image, 100m/128Mi to 1/1Gi per pod.
    let slots = pod["containers"].as_array().unwrap();
    assert_eq!(slots.len(), 4);
    let mut uids = vec![init["securityContext"]["runAsUser"].as_u64().unwrap()];
    let mut ports = Vec::new();
    for (i, slot) in slots.iter().enumerate() {
        assert_eq!(slot["name"], format!("slot-{i}"));
        assert_eq!(slot["image"], crate::stack::model::DEFAULT_POOL_IMAGE);
        assert_eq!(slot["command"][0], "/stacksmith/bin/controlplane");
        let args: Vec<&str> = slot["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let concurrency = args.iter().position(|a| *a == "--concurrency").unwrap();
        assert_eq!(args[concurrency + 1], "1");
        assert!(args.contains(&"--container-slot"), "{args:?}");
        let security = &slot["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true);
        assert_eq!(security["allowPrivilegeEscalation"], false);
        assert_eq!(security["capabilities"]["drop"][0], "ALL");
        assert_eq!(security["runAsUser"], security["runAsGroup"]);
        uids.push(security["runAsUser"].as_u64().unwrap());
        ports.push(slot["ports"][0]["containerPort"].as_u64().unwrap());
        let mounts = slot["volumeMounts"].as_array().unwrap();
        assert_eq!(mounts[0]["mountPath"], "/stacksmith");
        assert_eq!(mounts[0]["readOnly"], true);
        assert_eq!(mounts[1]["mountPath"], "/tmp");
        assert_eq!(mounts[1]["name"], format!("tmp-{i}"), "a /tmp of its own");
        assert_eq!(
            mounts[2]["mountPath"], "/dev/shm",
            "not the pod's shared one"
        );
        assert_eq!(slot["resources"]["requests"]["cpu"], "25m");
        assert_eq!(slot["resources"]["limits"]["memory"], "256Mi");
    }
    let distinct = |values: &[u64]| {
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        sorted.len() == values.len()
    };
    assert!(distinct(&uids), "no two containers share a user: {uids:?}");
    assert!(distinct(&ports), "one health port per slot: {ports:?}");
    let volumes = pod["volumes"].as_array().unwrap();
    assert_eq!(
        volumes.len(),
        9,
        "the runtime, one /tmp and one /dev/shm per slot"
    );
}

#[test]
fn network_policies_allow_only_what_the_platform_needs() {
    let loaded = load("production", None);
    let files = render(&loaded, None).unwrap();
    let api = find(&files, "NetworkPolicy", "stacksmith-controlplane");
    let egress_cidrs: Vec<&str> = api["spec"]["egress"][0]["to"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|to| to["ipBlock"]["cidr"].as_str())
        .collect();
    assert_eq!(egress_cidrs, ["10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24"]);
    let ports: Vec<i64> = api["spec"]["egress"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["port"].as_i64())
        .collect();
    assert_eq!(ports, [5432, 6379]);
    let sources: Vec<&str> = api["spec"]["ingress"][0]["from"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| {
            f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"].as_str()
        })
        .collect();
    assert_eq!(sources, ["workload", "ingress-nginx", "monitoring"]);
    let system = find(&files, "Namespace", "system");
    assert_eq!(
        system["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
}

#[test]
fn secrets_are_rendered_only_when_given_and_never_debug_printed() {
    let loaded = load("local", None);
    let without = render(&loaded, None).unwrap();
    assert!(objects(&without).iter().all(|o| o.kind != "Secret"));
    let values = secrets();
    let with = render(&loaded, Some(&values)).unwrap();
    let secret = find(&with, "Secret", "stacksmith-controlplane");
    assert_eq!(
        secret["stringData"]["DATABASE_URL"],
        values.database_url.as_str()
    );
    assert!(!format!("{values:?}").contains("s3cret"));
}

#[test]
fn values_with_yaml_syntax_cannot_break_the_document() {
    let mut loaded = load("local", None);
    let controlplane = loaded.stack.controlplane.as_mut().unwrap();
    controlplane.image = "evil\": injected\nkind: Pod #".to_owned();
    let files = render(&loaded, None).unwrap();
    let deployment = find(&files, "Deployment", "stacksmith-controlplane");
    assert_eq!(deployment["kind"], "Deployment");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        "evil\": injected\nkind: Pod #"
    );
}

#[test]
fn autoscaled_deployments_keep_their_live_replica_count() {
    let files = render(&load("production", None), None).unwrap();
    let object = |kind: &str, name: &str| {
        files
            .iter()
            .flat_map(|f| &f.objects)
            .find(|o| o.kind == kind && o.name == name)
            .unwrap()
            .clone()
    };
    let worker = object("Deployment", "stacksmith-worker-default");
    let live = serde_json::json!({ "spec": { "replicas": 7 } });
    // A live count within the pool's bounds is the autoscaler's: not compared, not applied.
    assert_eq!(worker.replicas_for(Some(&live)), Some(7));
    assert!(
        worker.reconciled_with(Some(&live))["spec"]
            .get("replicas")
            .is_none()
    );
    assert!(
        worker.applied_with(Some(&live))["spec"]
            .get("replicas")
            .is_none()
    );
    // Outside the pool's bounds (production's default pool: 2 to 50) it is corrected.
    let below = serde_json::json!({ "spec": { "replicas": 1 } });
    assert_eq!(worker.reconciled_with(Some(&below))["spec"]["replicas"], 2);
    assert_eq!(worker.replicas_for(Some(&below)), Some(2));
    let above = serde_json::json!({ "spec": { "replicas": 80 } });
    assert_eq!(worker.reconciled_with(Some(&above))["spec"]["replicas"], 50);
    assert_eq!(
        worker.reconciled_with(None)["spec"]["replicas"],
        2,
        "created at the pool's minimum"
    );
    assert_eq!(worker.applied_with(None)["spec"]["replicas"], 2);
    // Production's control plane has an HPA, which owns its replica count (3 to 10).
    let api = object("Deployment", "stacksmith-controlplane");
    assert_eq!(
        api.object["metadata"]["annotations"][super::REPLICAS_ANNOTATION],
        "autoscaled"
    );
    assert!(
        api.reconciled_with(Some(&live))["spec"]
            .get("replicas")
            .is_none()
    );
    assert_eq!(api.reconciled_with(Some(&below))["spec"]["replicas"], 3);
    // Anything else is applied as rendered.
    let service = object("Service", "stacksmith-controlplane");
    assert_eq!(*service.reconciled_with(Some(&live)), service.object);
}
