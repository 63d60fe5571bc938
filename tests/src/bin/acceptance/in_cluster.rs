//! The in-cluster step: a Job in the control plane's namespace runs `controlplane check` with
//! the control plane's own configuration and Secret, so it reaches Postgres and Redis the way the
//! API does and runs a workflow through the installed API and worker pools. Its exit code and the
//! JSON lines of its log are the verdict, read back as on any cluster: the Job's status (its
//! `Complete` or `Failed` condition, with the reason) and its pod's log through the API.
//!
//! The Job's pods get the API's egress (a NetworkPolicy copying the API's egress rules, plus the
//! API's port) and the API admits them (a NetworkPolicy on the API's pods); everything made here
//! is deleted at the end, before `down`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use serde_json::{Value, json};

/// Label on everything the suite makes in the cluster.
pub const LABEL: &str = "stacksmith.dev/acceptance";
const API_NAME: &str = "stacksmith-controlplane";
/// The provisioner's inventory label.
const STACK_LABEL: &str = "stacksmith.dev/stack";

/// What the check Job came to.
#[derive(Debug)]
pub enum Outcome {
    /// The Job never started a pod within the start deadline; how many Nodes the cluster has
    /// (None when they cannot be listed): without any, nothing runs pods in this cluster.
    NotStarted {
        waited: Duration,
        nodes: Option<usize>,
    },
    /// The Job ran; each JSON line of its log (`controlplane check`), whether it succeeded, and
    /// the reason and message of its `Failed` condition.
    Ran {
        succeeded: bool,
        checks: Vec<Value>,
        log_tail: Vec<String>,
        failure: Option<String>,
    },
    /// Started but did not finish in time; what its pod said.
    TimedOut { pod_status: String },
}

#[derive(Debug, Clone)]
pub struct CheckSettings {
    pub run_id: String,
    /// The stack's deployment name (`<name>-<instance>`), the value of `stacksmith.dev/stack`.
    pub qualified_name: String,
    pub namespace: String,
    pub image: String,
    pub workflow: String,
    pub start_deadline: Duration,
    pub finish_deadline: Duration,
}

pub async fn client(kubeconfig: &Path) -> Result<Client, String> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let file = kube::config::Kubeconfig::read_from(kubeconfig)
        .map_err(|e| format!("cannot read {}: {e}", kubeconfig.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| format!("{}: {e}", kubeconfig.display()))?;
    Client::try_from(config).map_err(|e| format!("{}: {e}", kubeconfig.display()))
}

/// The installed API: its Deployment carries the stack's inventory label.
pub async fn find_api(client: &Client, settings: &CheckSettings) -> Result<(), String> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), &settings.namespace);
    let deployment = api
        .get_opt(API_NAME)
        .await
        .map_err(|e| format!("cannot read the control plane Deployment: {e}"))?
        .ok_or_else(|| {
            format!(
                "no Deployment {API_NAME} in namespace {}: the control plane is not installed",
                settings.namespace
            )
        })?;
    let label = deployment
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(STACK_LABEL))
        .cloned()
        .unwrap_or_default();
    if label != settings.qualified_name {
        return Err(format!(
            "the control plane in namespace {} belongs to `{label}`, not to `{}`",
            settings.namespace, settings.qualified_name
        ));
    }
    Ok(())
}

fn name(settings: &CheckSettings) -> String {
    format!("stacksmith-acceptance-{}", settings.run_id)
}

/// The run's label, and the stack's inventory label: what runs the stack's Jobs (a cluster, or the
/// testkit's kubelet, which runs the objects of the stack) runs this one too. Nothing applies the
/// stack while the check runs, so no prune removes them before `remove` does.
fn labels(settings: &CheckSettings) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL.to_owned(), settings.run_id.clone()),
        (STACK_LABEL.to_owned(), settings.qualified_name.clone()),
    ])
}

fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("the suite's objects are well-formed")
}

/// Creates the NetworkPolicies (when the API has one), the workflow ConfigMap and the Job.
pub async fn create(client: &Client, settings: &CheckSettings) -> Result<(), String> {
    let ns = &settings.namespace;
    let name = name(settings);
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), ns);
    let post = PostParams::default();
    if let Some(api_policy) = policies
        .get_opt(API_NAME)
        .await
        .map_err(|e| format!("cannot read NetworkPolicy {API_NAME}: {e}"))?
    {
        let spec = serde_json::to_value(api_policy.spec.unwrap_or_default())
            .expect("a NetworkPolicy spec is JSON");
        let api_ports = spec["ingress"][0]["ports"].clone();
        let mut egress = spec["egress"].as_array().cloned().unwrap_or_default();
        egress.push(json!({
            "to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": API_NAME}}}],
            "ports": api_ports,
        }));
        let egress_policy: NetworkPolicy = from_json(json!({
            "metadata": {"name": name, "labels": labels(settings)},
            "spec": {
                "podSelector": {"matchLabels": labels(settings)},
                "policyTypes": ["Egress"],
                "egress": egress,
            },
        }));
        let ingress_policy: NetworkPolicy = from_json(json!({
            "metadata": {"name": format!("{name}-api"), "labels": labels(settings)},
            "spec": {
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": API_NAME}},
                "policyTypes": ["Ingress"],
                "ingress": [{
                    "from": [{"podSelector": {"matchLabels": labels(settings)}}],
                    "ports": api_ports,
                }],
            },
        }));
        for policy in [egress_policy, ingress_policy] {
            policies
                .create(&post, &policy)
                .await
                .map_err(|e| format!("cannot create a NetworkPolicy: {e}"))?;
        }
    }
    let config_map: ConfigMap = from_json(json!({
        "metadata": {"name": name, "labels": labels(settings)},
        "data": {"workflow.json": settings.workflow},
    }));
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(&post, &config_map)
        .await
        .map_err(|e| format!("cannot create ConfigMap {name}: {e}"))?;
    let restricted = json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "runAsUser": 10001,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    });
    let wait_seconds = settings
        .finish_deadline
        .as_secs()
        .saturating_sub(30)
        .max(30);
    let job: Job = from_json(json!({
        "metadata": {"name": name, "labels": labels(settings)},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": settings.finish_deadline.as_secs(),
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {"labels": labels(settings)},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": false,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": 10001,
                        "runAsGroup": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [{
                        "name": "check",
                        "image": settings.image,
                        "command": ["controlplane"],
                        "args": [
                            "check",
                            "--url", format!("http://{API_NAME}.{ns}.svc"),
                            "--workflow", "/acceptance/workflow.json",
                            "--wait-seconds", wait_seconds.to_string(),
                        ],
                        "envFrom": [
                            {"configMapRef": {"name": API_NAME}},
                            {"secretRef": {"name": API_NAME}},
                        ],
                        "resources": {
                            "requests": {"cpu": "50m", "memory": "64Mi"},
                            "limits": {"cpu": "250m", "memory": "128Mi"},
                        },
                        "securityContext": restricted,
                        "volumeMounts": [
                            {"name": "workflow", "mountPath": "/acceptance", "readOnly": true},
                        ],
                    }],
                    "volumes": [{"name": "workflow", "configMap": {"name": name}}],
                },
            },
        },
    }));
    Api::<Job>::namespaced(client.clone(), ns)
        .create(&post, &job)
        .await
        .map_err(|e| format!("cannot create Job {name}: {e}"))?;
    Ok(())
}

/// Waits for the Job: first for a pod (within `start_deadline`), then for the end (within
/// `finish_deadline`), then reads its pod's log.
pub async fn wait(client: &Client, settings: &CheckSettings) -> Result<Outcome, String> {
    let ns = &settings.namespace;
    let name = name(settings);
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = ListParams::default().labels(&format!("{LABEL}={}", settings.run_id));
    let started = Instant::now();
    let mut running_since: Option<Instant> = None;
    loop {
        let job = jobs
            .get(&name)
            .await
            .map_err(|e| format!("cannot read Job {name}: {e}"))?;
        let status = job.status.unwrap_or_default();
        let pod_list = pods
            .list(&selector)
            .await
            .map_err(|e| format!("cannot list the Job's pods: {e}"))?;
        let condition = |kind: &str| {
            status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == kind && c.status == "True")
                .cloned()
        };
        let (complete, failed) = (condition("Complete"), condition("Failed"));
        // backoffLimit 0: the first failed pod fails the Job (its condition may come a moment
        // after the count).
        let finished = complete.is_some()
            || failed.is_some()
            || status.succeeded.unwrap_or(0) > 0
            || status.failed.unwrap_or(0) > 0;
        if finished {
            let succeeded = complete.is_some() || status.succeeded.unwrap_or(0) > 0;
            // The newest pod is the last attempt.
            let newest = pod_list
                .items
                .iter()
                .max_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0));
            let (checks, log_tail) = match newest {
                Some(pod) => read_log(&pods, pod).await,
                None => (Vec::new(), vec!["(the Job's pod is gone)".to_owned()]),
            };
            let failure = failed.map(|c| {
                format!(
                    "{}: {}",
                    c.reason.unwrap_or_else(|| "Failed".to_owned()),
                    c.message.unwrap_or_default()
                )
            });
            return Ok(Outcome::Ran {
                succeeded,
                checks,
                log_tail,
                failure,
            });
        }
        let has_pod = status.start_time.is_some() || !pod_list.items.is_empty();
        match (has_pod, running_since) {
            (true, None) => running_since = Some(Instant::now()),
            (false, None) if started.elapsed() >= settings.start_deadline => {
                let nodes = Api::<Node>::all(client.clone())
                    .list(&ListParams::default())
                    .await
                    .ok()
                    .map(|list| list.items.len());
                return Ok(Outcome::NotStarted {
                    waited: started.elapsed(),
                    nodes,
                });
            }
            (_, Some(since)) if since.elapsed() >= settings.finish_deadline => {
                let pod_status = pod_list
                    .items
                    .first()
                    .map(describe_pod)
                    .unwrap_or_else(|| "no pod".to_owned());
                return Ok(Outcome::TimedOut { pod_status });
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn read_log(pods: &Api<Pod>, pod: &Pod) -> (Vec<Value>, Vec<String>) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let params = LogParams {
        container: Some("check".to_owned()),
        ..LogParams::default()
    };
    let text = match pods.logs(&name, &params).await {
        Ok(text) => text,
        Err(error) => return (Vec::new(), vec![format!("cannot read the log: {error}")]),
    };
    let checks = text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|value| value.get("check").is_some())
        .collect();
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let tail = lines[lines.len().saturating_sub(10)..].to_vec();
    (checks, tail)
}

/// A pending or running pod's phase and its container's waiting reason (ImagePullBackOff...).
fn describe_pod(pod: &Pod) -> String {
    let status = pod.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or_else(|| "unknown".to_owned());
    let waiting = status
        .container_statuses
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| c.state.and_then(|s| s.waiting))
        .map(|w| {
            format!(
                "{} {}",
                w.reason.unwrap_or_default(),
                w.message.unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    if waiting.is_empty() {
        format!("pod phase {phase}")
    } else {
        format!("pod phase {phase}, waiting: {waiting}")
    }
}

/// Deletes everything `create` made (whatever exists of it); what could not be deleted.
pub async fn remove(client: &Client, settings: &CheckSettings) -> Vec<String> {
    let ns = &settings.namespace;
    let name = name(settings);
    let mut problems = Vec::new();
    let background = DeleteParams::background();
    let gone =
        |result: Result<(), kube::Error>, what: &str, problems: &mut Vec<String>| match result {
            Ok(()) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => problems.push(format!("{what}: {error}")),
        };
    // Background propagation: the Job's pods go with it.
    let result = Api::<Job>::namespaced(client.clone(), ns)
        .delete(&name, &background)
        .await
        .map(drop);
    gone(result, &format!("Job {name}"), &mut problems);
    let result = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .delete(&name, &background)
        .await
        .map(drop);
    gone(result, &format!("ConfigMap {name}"), &mut problems);
    for policy in [name.clone(), format!("{name}-api")] {
        let result = Api::<NetworkPolicy>::namespaced(client.clone(), ns)
            .delete(&policy, &background)
            .await
            .map(drop);
        gone(result, &format!("NetworkPolicy {policy}"), &mut problems);
    }
    problems
}
