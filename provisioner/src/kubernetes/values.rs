//! What the templates see: the stack's settings with defaults filled in and derived strings
//! precomputed, so templates only place values.

use serde::Serialize;

use super::{MANAGED_BY_LABEL, STACK_LABEL, SecretValues};
use crate::stack::LoadedStack;
use crate::stack::model::{NetworkPolicyMode, PodSecurityLevel, ResourceList, Resources};

/// The port the API listens on inside its pod.
const API_PORT: u16 = 8080;

#[derive(Debug, Serialize)]
pub(super) struct RenderValues<'a> {
    /// The common labels, as YAML lines indented for `metadata.labels`.
    labels: String,
    namespaces: Vec<NamespaceValues>,
    network_policies: bool,
    /// Where the database and cache live: the private subnets.
    data_cidrs: Vec<String>,
    vpc_cidr: String,
    priority_classes: Vec<PriorityClassValues>,
    quotas: Vec<QuotaValues>,
    controlplane: Option<ControlPlaneValues>,
    pools: Vec<PoolValues>,
    secrets: Option<&'a SecretValues>,
}

#[derive(Debug, Serialize)]
struct NamespaceValues {
    name: String,
    pod_security: &'static str,
}

#[derive(Debug, Serialize)]
struct PriorityClassValues {
    name: String,
    value: i32,
    description: String,
}

#[derive(Debug, Serialize)]
struct QuotaValues {
    namespace: String,
    hard: Vec<KeyValue>,
}

#[derive(Debug, Serialize)]
struct KeyValue {
    key: String,
    value: String,
}

#[derive(Debug, Serialize)]
struct ControlPlaneValues {
    namespace: String,
    worker_namespace: String,
    api_client_namespaces: Vec<String>,
    image: String,
    replicas: u32,
    port: u16,
    url: String,
    resources: ResourceValues,
    autoscaling: Option<crate::stack::model::Autoscaling>,
    environment: Vec<KeyValue>,
}

#[derive(Debug, Serialize)]
struct ResourceValues {
    requests: CpuMemory,
    limits: CpuMemory,
}

#[derive(Debug, Serialize)]
struct CpuMemory {
    cpu: String,
    memory: String,
}

#[derive(Debug, Serialize)]
struct PoolValues {
    name: String,
    deployment: String,
    tier: String,
    concurrency: u32,
    min: u32,
    max: u32,
    tasks_per_replica: u32,
    resources: ResourceValues,
}

impl<'a> RenderValues<'a> {
    pub(super) fn new(loaded: &LoadedStack, secrets: Option<&'a SecretValues>) -> Self {
        let stack = &loaded.stack;
        let labels = [
            (MANAGED_BY_LABEL, "stacksmith"),
            (STACK_LABEL, loaded.names.qualified.as_str()),
        ]
        .iter()
        .map(|(key, value)| format!("    {key}: {}", serde_json::Value::from(*value)))
        .collect::<Vec<_>>()
        .join("\n");
        let baseline = stack.baseline.as_ref();
        let mut namespace_names: Vec<String> =
            baseline.map(|b| b.namespaces.clone()).unwrap_or_default();
        if let Some(controlplane) = &stack.controlplane {
            for namespace in [&controlplane.namespace, &controlplane.worker_namespace] {
                if !namespace_names.contains(namespace) {
                    namespace_names.push(namespace.clone());
                }
            }
        }
        let namespaces = namespace_names
            .into_iter()
            .map(|name| {
                let level = baseline
                    .and_then(|b| b.pod_security.get(&name))
                    .copied()
                    .unwrap_or(PodSecurityLevel::Baseline);
                NamespaceValues {
                    pod_security: pod_security_name(level),
                    name,
                }
            })
            .collect();
        let controlplane = stack.controlplane.as_ref().map(|c| {
            let mut environment = vec![
                KeyValue {
                    key: "CONTROLPLANE_LISTEN".into(),
                    value: format!("0.0.0.0:{API_PORT}"),
                },
                KeyValue {
                    key: "CONTROLPLANE_REDIS_PREFIX".into(),
                    value: format!("{}:", loaded.names.qualified),
                },
                // The pool autoscaler scales the worker Deployments of this namespace, reading
                // each pool's bounds from their annotations (70-workers.yaml.tera).
                KeyValue {
                    key: "CONTROLPLANE_AUTOSCALER_NAMESPACE".into(),
                    value: c.worker_namespace.clone(),
                },
            ];
            if let Some(limit) = c.rate_limit {
                environment.extend([
                    KeyValue {
                        key: "CONTROLPLANE_RATE_PER_KEY_RPS".into(),
                        value: limit.per_key_rps.to_string(),
                    },
                    KeyValue {
                        key: "CONTROLPLANE_RATE_BURST".into(),
                        value: limit.burst.to_string(),
                    },
                    KeyValue {
                        key: "CONTROLPLANE_RATE_GLOBAL_RPS".into(),
                        value: limit.global_rps.to_string(),
                    },
                ]);
            }
            ControlPlaneValues {
                namespace: c.namespace.clone(),
                worker_namespace: c.worker_namespace.clone(),
                api_client_namespaces: c.api_client_namespaces.clone(),
                image: c.image.clone(),
                replicas: c.replicas,
                port: API_PORT,
                url: format!("http://stacksmith-controlplane.{}.svc", c.namespace),
                resources: resources(c.resources.as_ref(), ("250m", "256Mi"), ("1", "512Mi")),
                autoscaling: c.autoscaling,
                environment,
            }
        });
        let pools = stack
            .controlplane
            .iter()
            .flat_map(|c| &c.worker_pools)
            .map(|(name, pool)| PoolValues {
                name: name.clone(),
                deployment: format!("stacksmith-worker-{name}"),
                tier: pool.tier.clone(),
                concurrency: pool.concurrency,
                min: pool.replicas.min,
                max: pool.replicas.max,
                tasks_per_replica: pool.tasks_per_replica,
                resources: resources(pool.resources.as_ref(), ("100m", "128Mi"), ("1", "1Gi")),
            })
            .collect();
        Self {
            labels,
            namespaces,
            network_policies: baseline
                .is_some_and(|b| b.network_policies == NetworkPolicyMode::DefaultDeny),
            data_cidrs: stack
                .network
                .private_subnets
                .iter()
                .map(ToString::to_string)
                .collect(),
            vpc_cidr: stack.network.cidr.to_string(),
            priority_classes: baseline
                .iter()
                .flat_map(|b| &b.priority_classes)
                .map(|(name, value)| PriorityClassValues {
                    name: name.clone(),
                    value: *value,
                    description: format!("Stacksmith worker tier {name}"),
                })
                .collect(),
            quotas: baseline
                .iter()
                .flat_map(|b| &b.quotas)
                .map(|(namespace, hard)| QuotaValues {
                    namespace: namespace.clone(),
                    hard: hard
                        .iter()
                        .map(|(key, q)| KeyValue {
                            key: key.clone(),
                            value: q.0.clone(),
                        })
                        .collect(),
                })
                .collect(),
            controlplane,
            pools,
            secrets,
        }
    }
}

fn pod_security_name(level: PodSecurityLevel) -> &'static str {
    match level {
        PodSecurityLevel::Privileged => "privileged",
        PodSecurityLevel::Baseline => "baseline",
        PodSecurityLevel::Restricted => "restricted",
    }
}

/// Requests and limits, each quantity defaulted on its own.
fn resources(
    given: Option<&Resources>,
    requests: (&str, &str),
    limits: (&str, &str),
) -> ResourceValues {
    let pick = |list: Option<&ResourceList>, (cpu, memory): (&str, &str)| CpuMemory {
        cpu: list
            .and_then(|l| l.cpu.as_ref())
            .map_or_else(|| cpu.to_owned(), |q| q.0.clone()),
        memory: list
            .and_then(|l| l.memory.as_ref())
            .map_or_else(|| memory.to_owned(), |q| q.0.clone()),
    };
    ResourceValues {
        requests: pick(given.and_then(|r| r.requests.as_ref()), requests),
        limits: pick(given.and_then(|r| r.limits.as_ref()), limits),
    }
}
