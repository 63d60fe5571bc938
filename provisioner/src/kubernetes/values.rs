//! What the templates see: the stack's settings with defaults filled in and derived strings
//! precomputed, so templates only place values.

use serde::Serialize;

use super::{CloudOutputs, MANAGED_BY_LABEL, STACK_LABEL, SecretValues};
use crate::engine::desired::{CLUSTER_AUTOSCALER_NAMESPACE, CLUSTER_AUTOSCALER_SERVICE_ACCOUNT};
use crate::stack::LoadedStack;
use crate::stack::model::{NetworkPolicyMode, PodSecurityLevel, ResourceList, Resources};

/// The port the API listens on inside its pod.
const API_PORT: u16 = 8080;

/// The API's PriorityClass is `<qualified stack name>-controlplane` (cluster-scoped, so one per
/// stack): above every worker tier (the policy `controlplane.rego` denies a tier at or above it),
/// so a worker pod never preempts the API. Its value:
pub const API_PRIORITY: i32 = 1_000_000;
/// The node group the API runs on when the stack has one: its labels select the nodes, its
/// taints are tolerated.
pub const SYSTEM_NODE_GROUP: &str = "system";

/// Shutdown of an API pod: the preStop sleep while the endpoint is removed from the Service
/// everywhere, then the server's own grace for requests in flight, inside the pod's
/// termination grace period.
const API_PRESTOP_SECONDS: u32 = 5;
const API_SHUTDOWN_GRACE_MS: u32 = 20_000;
const API_TERMINATION_GRACE_SECONDS: u32 = 30;
/// A worker pod's termination grace period, and how much of it the worker leaves after its
/// drain to kill what is left and release its leases.
const WORKER_TERMINATION_GRACE_SECONDS: u32 = 120;
const WORKER_RELEASE_SECONDS: u32 = 10;

#[derive(Debug, Serialize)]
pub(super) struct RenderValues<'a> {
    /// The common labels, as YAML lines indented for `metadata.labels`.
    labels: String,
    namespaces: Vec<NamespaceValues>,
    network_policies: bool,
    /// Where the database and cache live: the private subnets.
    data_cidrs: Vec<String>,
    vpc_cidr: String,
    not_internet: &'static [&'static str],
    /// The `kubernetes` Service's ClusterIP as a /32: pods reach the Kubernetes API through it,
    /// and a network policy sees that address (it is translated to an endpoint after the check).
    kubernetes_service: String,
    priority_classes: Vec<PriorityClassValues>,
    quotas: Vec<QuotaValues>,
    controlplane: Option<ControlPlaneValues>,
    pools: Vec<PoolValues>,
    secrets: Option<&'a SecretValues>,
    /// The `monitoring` namespace, when the baseline has one: its Prometheus scrapes the API,
    /// the nodes and the Kubernetes API.
    monitoring: Option<String>,
    /// The Cluster Autoscaler, when `cluster.autoscaler` is on.
    cluster_autoscaler: Option<ClusterAutoscalerValues>,
}

/// What `80-cluster-autoscaler.yaml.tera` places.
#[derive(Debug, Serialize)]
struct ClusterAutoscalerValues {
    namespace: &'static str,
    service_account: &'static str,
    /// The IAM role the service account assumes (IRSA), from state; a placeholder saying so
    /// before `up` created it.
    role_arn: String,
    image: String,
    pull_policy: &'static str,
    /// `--node-group-auto-discovery`: the Auto Scaling groups tagged for this EKS cluster (EKS
    /// tags its managed node groups' groups `k8s.io/cluster-autoscaler/enabled` and
    /// `k8s.io/cluster-autoscaler/<cluster>`).
    auto_discovery: String,
    region: String,
    /// On the system node group, like the API (its labels and taints).
    node_selector: Vec<KeyValue>,
    tolerations: Vec<TolerationValues>,
}

/// The Cluster Autoscaler release for each Kubernetes minor version (it supports its own minor
/// only): the newest patch promoted to registry.k8s.io that we know of.
const CLUSTER_AUTOSCALER_RELEASES: &[(&str, &str)] = &[
    ("1.28", "v1.28.2"),
    ("1.29", "v1.29.2"),
    ("1.30", "v1.30.0"),
    ("1.31", "v1.31.0"),
    ("1.32", "v1.32.5"),
    ("1.33", "v1.33.3"),
    ("1.34", "v1.34.2"),
];

/// The Cluster Autoscaler image for a cluster of Kubernetes `version` (`"1.31"`): the release of
/// its minor version from [`CLUSTER_AUTOSCALER_RELEASES`], else that minor's `.0` release.
pub fn cluster_autoscaler_image(version: &str) -> String {
    let minor = version
        .trim_start_matches('v')
        .splitn(3, '.')
        .take(2)
        .collect::<Vec<_>>()
        .join(".");
    let tag = CLUSTER_AUTOSCALER_RELEASES
        .iter()
        .find(|(m, _)| *m == minor)
        .map_or_else(|| format!("v{minor}.0"), |(_, tag)| (*tag).to_owned());
    format!("registry.k8s.io/autoscaling/cluster-autoscaler:{tag}")
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
    /// `IfNotPresent` for a pinned image (a digest, or a tag other than `latest`), else `Always`.
    pull_policy: &'static str,
    replicas: u32,
    port: u16,
    url: String,
    resources: ResourceValues,
    autoscaling: Option<crate::stack::model::Autoscaling>,
    environment: Vec<KeyValue>,
    priority_class: String,
    /// The system node group's labels, as `nodeSelector`.
    node_selector: Vec<KeyValue>,
    /// Tolerations of the system node group's taints.
    tolerations: Vec<TolerationValues>,
    prestop_seconds: u32,
    termination_grace_seconds: u32,
}

#[derive(Debug, Serialize)]
struct TolerationValues {
    key: String,
    value: Option<String>,
    effect: &'static str,
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
    /// The team's image the slots run in.
    image: String,
    pull_policy: &'static str,
    concurrency: u32,
    min: u32,
    max: u32,
    tasks_per_replica: u32,
    /// One container per task slot (see `70-workers.yaml.tera`).
    slots: Vec<SlotValues>,
    /// The pool's pod resources divided by its slots: what each slot container gets.
    slot_resources: ResourceValues,
    termination_grace_seconds: u32,
    /// How long a stopping worker lets its running tasks finish (`--drain-seconds`).
    drain_seconds: u32,
    /// Destinations besides the API and DNS (`worker_pools.<name>.egress`); `None` for none.
    egress: Option<EgressValues>,
}

#[derive(Debug, Serialize)]
struct EgressValues {
    /// Blocks open on every port (the VPC's, the listed ones).
    cidrs: Vec<String>,
    /// TCP ports open to the internet.
    internet_ports: Vec<u16>,
}

/// What "the internet" leaves out: private, shared, loopback and link-local space (the latter
/// holds the instance metadata service).
const NOT_INTERNET: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
];

/// One task slot of a worker pod: a container with its own user id, health port, `/tmp` and
/// `/dev/shm`.
#[derive(Debug, Serialize)]
struct SlotValues {
    container: String,
    uid: u32,
    health_port: u32,
    port_name: String,
    tmp_volume: String,
    shm_volume: String,
}

/// The user id of the init container that copies the worker binary; slot `i` runs as
/// `RUNTIME_UID + 1 + i`, so no two containers of a worker pod share a user.
const RUNTIME_UID: u32 = 10000;
/// Slot `i` serves its `/healthz` on `FIRST_HEALTH_PORT + i` (the pod's containers share one
/// network namespace).
const FIRST_HEALTH_PORT: u32 = 8081;

impl<'a> RenderValues<'a> {
    pub(super) fn new(
        loaded: &LoadedStack,
        secrets: Option<&'a SecretValues>,
        outputs: &CloudOutputs,
    ) -> Self {
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
        let system_group = stack.cluster.node_groups.get(SYSTEM_NODE_GROUP);
        // Pods kept on the system node group: its labels selected, its taints tolerated.
        let node_selector = || -> Vec<KeyValue> {
            system_group
                .iter()
                .flat_map(|g| &g.labels)
                .map(|(key, value)| KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect()
        };
        let tolerations = || -> Vec<TolerationValues> {
            system_group
                .iter()
                .flat_map(|g| &g.taints)
                .map(|taint| TolerationValues {
                    key: taint.key.clone(),
                    value: taint.value.clone(),
                    effect: taint_effect(taint.effect),
                })
                .collect()
        };
        let controlplane = stack.controlplane.as_ref().map(|c| {
            // CONTROLPLANE_LISTEN is the pod's own address (the Deployment's `env`, from the
            // downward API): 60-controlplane.yaml.tera.
            let mut environment = vec![
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
            // The per-client limit's key behind a load balancer: the address it forwards for.
            let trusted: Vec<String> = c.trusted_proxies.as_ref().map_or_else(
                || {
                    stack
                        .network
                        .public_subnets
                        .iter()
                        .map(ToString::to_string)
                        .collect()
                },
                |list| list.iter().map(ToString::to_string).collect(),
            );
            if !trusted.is_empty() {
                environment.push(KeyValue {
                    key: "CONTROLPLANE_TRUSTED_PROXIES".into(),
                    value: trusted.join(","),
                });
            }
            environment.push(KeyValue {
                key: "CONTROLPLANE_SHUTDOWN_GRACE_MS".into(),
                value: API_SHUTDOWN_GRACE_MS.to_string(),
            });
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
                pull_policy: pull_policy(&c.image),
                replicas: c.replicas,
                port: API_PORT,
                url: format!("http://stacksmith-controlplane.{}.svc", c.namespace),
                resources: resources(c.resources.as_ref(), ("250m", "256Mi"), ("1", "512Mi")),
                autoscaling: c.autoscaling,
                environment,
                priority_class: api_priority_class(loaded),
                node_selector: node_selector(),
                tolerations: tolerations(),
                prestop_seconds: API_PRESTOP_SECONDS,
                termination_grace_seconds: API_TERMINATION_GRACE_SECONDS,
            }
        });
        let cluster_autoscaler = stack.cluster.autoscaler_enabled().then(|| {
            let image = stack
                .cluster
                .autoscaler
                .image
                .clone()
                .unwrap_or_else(|| cluster_autoscaler_image(&stack.cluster.version));
            ClusterAutoscalerValues {
                namespace: CLUSTER_AUTOSCALER_NAMESPACE,
                service_account: CLUSTER_AUTOSCALER_SERVICE_ACCOUNT,
                role_arn: outputs
                    .cluster_autoscaler_role_arn
                    .clone()
                    .unwrap_or_else(|| {
                        format!(
                            "{}the Cluster Autoscaler's IAM role ARN; `provisioner up` sets it",
                            super::PLACEHOLDER_PREFIX
                        )
                    }),
                pull_policy: pull_policy(&image),
                image,
                auto_discovery: format!(
                    "--node-group-auto-discovery=asg:tag=k8s.io/cluster-autoscaler/enabled,\
                     k8s.io/cluster-autoscaler/{}",
                    loaded.names.cluster
                ),
                region: stack.region.clone(),
                node_selector: node_selector(),
                tolerations: tolerations(),
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
                image: pool.image.clone(),
                pull_policy: pull_policy(&pool.image),
                concurrency: pool.concurrency,
                min: pool.replicas.min,
                max: pool.replicas.max,
                tasks_per_replica: pool.tasks_per_replica,
                slots: (0..pool.concurrency)
                    .map(|i| SlotValues {
                        container: format!("slot-{i}"),
                        uid: RUNTIME_UID + 1 + i,
                        health_port: FIRST_HEALTH_PORT + i,
                        port_name: format!("health-{i}"),
                        tmp_volume: format!("tmp-{i}"),
                        shm_volume: format!("shm-{i}"),
                    })
                    .collect(),
                slot_resources: divided(
                    &resources(pool.resources.as_ref(), ("100m", "128Mi"), ("1", "1Gi")),
                    pool.concurrency,
                ),
                termination_grace_seconds: WORKER_TERMINATION_GRACE_SECONDS,
                drain_seconds: WORKER_TERMINATION_GRACE_SECONDS - WORKER_RELEASE_SECONDS,
                egress: (!pool.egress.is_none()).then(|| EgressValues {
                    cidrs: pool
                        .egress
                        .vpc
                        .then(|| stack.network.cidr.to_string())
                        .into_iter()
                        .chain(pool.egress.cidrs.iter().map(ToString::to_string))
                        .collect(),
                    internet_ports: pool.egress.internet_ports.clone(),
                }),
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
            not_internet: NOT_INTERNET,
            kubernetes_service: format!("{}/32", stack.cluster.kubernetes_service_ip()),
            priority_classes: baseline
                .iter()
                .flat_map(|b| &b.priority_classes)
                .map(|(name, value)| PriorityClassValues {
                    name: name.clone(),
                    value: *value,
                    description: format!("Stacksmith worker tier {name}"),
                })
                .chain(stack.controlplane.iter().map(|_| PriorityClassValues {
                    name: api_priority_class(loaded),
                    value: API_PRIORITY,
                    description: "The Stacksmith API: above every worker tier".to_owned(),
                }))
                .collect(),
            monitoring: baseline
                .and_then(|b| b.namespaces.iter().find(|n| *n == "monitoring"))
                .cloned(),
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
            cluster_autoscaler,
        }
    }
}

/// How the kubelet pulls `image`: a pinned image (a digest, or a tag other than `latest`) never
/// changes, so it is pulled once per node (`IfNotPresent`) and a pod start does not depend on the
/// registry; anything else is pulled at every start (`Always`).
pub fn pull_policy(image: &str) -> &'static str {
    let name = image.rsplit('/').next().unwrap_or(image);
    let pinned = image.contains("@sha256:")
        || name
            .split_once(':')
            .is_some_and(|(_, tag)| !tag.is_empty() && tag != "latest");
    if pinned { "IfNotPresent" } else { "Always" }
}

/// The name of the API's PriorityClass.
pub fn api_priority_class(loaded: &LoadedStack) -> String {
    format!("{}-controlplane", loaded.names.qualified)
}

fn taint_effect(effect: crate::stack::model::TaintEffect) -> &'static str {
    use crate::stack::model::TaintEffect;
    match effect {
        TaintEffect::NoSchedule => "NoSchedule",
        TaintEffect::PreferNoSchedule => "PreferNoSchedule",
        TaintEffect::NoExecute => "NoExecute",
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

/// `whole` shared equally by `parts` containers, each share rounded up (CPU to a millicore,
/// memory to a byte), so the parts add up to at least the whole.
/// Shares are written the way the API server writes quantities back (`1` rather than `1000m`,
/// `32Mi` rather than `33554432`), so `plan` and `drift` see no difference; one part is the
/// whole, as written.
fn divided(whole: &ResourceValues, parts: u32) -> ResourceValues {
    let part = |list: &CpuMemory| {
        if parts <= 1 {
            return CpuMemory {
                cpu: list.cpu.clone(),
                memory: list.memory.clone(),
            };
        }
        CpuMemory {
            cpu: divide_quantity(&list.cpu, parts, 1000).map_or_else(
                || list.cpu.clone(),
                |milli| {
                    if milli.is_multiple_of(1000) {
                        (milli / 1000).to_string()
                    } else {
                        format!("{milli}m")
                    }
                },
            ),
            memory: divide_quantity(&list.memory, parts, 1)
                .map_or_else(|| list.memory.clone(), binary_bytes),
        }
    };
    ResourceValues {
        requests: part(&whole.requests),
        limits: part(&whole.limits),
    }
}

/// A Kubernetes quantity (as the `kubernetes-quantity` format accepts it) in units of
/// `1/scale`, divided by `parts` and rounded up; `None` for what does not parse, which the
/// schema already refused.
fn divide_quantity(quantity: &str, parts: u32, scale: u128) -> Option<u128> {
    const SUFFIXES: &[(&str, u128, u128)] = &[
        ("Ki", 1 << 10, 1),
        ("Mi", 1 << 20, 1),
        ("Gi", 1 << 30, 1),
        ("Ti", 1 << 40, 1),
        ("Pi", 1 << 50, 1),
        ("Ei", 1 << 60, 1),
        ("n", 1, 1_000_000_000),
        ("u", 1, 1_000_000),
        ("m", 1, 1000),
        ("k", 1000, 1),
        ("M", 1_000_000, 1),
        ("G", 1_000_000_000, 1),
        ("T", 1_000_000_000_000, 1),
        ("P", 1_000_000_000_000_000, 1),
        ("E", 1_000_000_000_000_000_000, 1),
    ];
    let (number, multiplier, divisor) = SUFFIXES
        .iter()
        .find_map(|(suffix, m, d)| quantity.strip_suffix(suffix).map(|n| (n, *m, *d)))
        .unwrap_or((quantity, 1, 1));
    let number = number.strip_prefix('+').unwrap_or(number);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits: u128 = format!("{whole}{fraction}").parse().ok()?;
    let fraction_scale = 10u128.checked_pow(u32::try_from(fraction.len()).ok()?)?;
    // value * scale / parts = digits * multiplier * scale / (fraction_scale * divisor * parts)
    let numerator = digits.checked_mul(multiplier)?.checked_mul(scale)?;
    let denominator = fraction_scale * divisor * u128::from(parts.max(1));
    Some(numerator.div_ceil(denominator))
}

/// Bytes with the largest binary suffix that divides them exactly.
fn binary_bytes(bytes: u128) -> String {
    for (suffix, unit) in [("Gi", 1u128 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_images_are_pulled_once() {
        assert_eq!(
            pull_policy("ghcr.io/acme/stacksmith-controlplane:1.0.0"),
            "IfNotPresent"
        );
        assert_eq!(
            pull_policy("123456789012.dkr.ecr.us-west-2.amazonaws.com/stacksmith@sha256:0123"),
            "IfNotPresent"
        );
        assert_eq!(pull_policy("registry.local:5000/stacksmith"), "Always");
        assert_eq!(pull_policy("ghcr.io/acme/stacksmith:latest"), "Always");
    }

    #[test]
    fn quantities_divide_rounding_up() {
        assert_eq!(divide_quantity("1", 4, 1000), Some(250));
        assert_eq!(divide_quantity("100m", 4, 1000), Some(25));
        assert_eq!(divide_quantity("100m", 3, 1000), Some(34));
        assert_eq!(divide_quantity("0.5", 2, 1000), Some(250));
        assert_eq!(divide_quantity("1Gi", 4, 1), Some(256 << 20));
        assert_eq!(divide_quantity("128Mi", 4, 1), Some(32 << 20));
        assert_eq!(divide_quantity("1G", 3, 1), Some(333_333_334));
        assert_eq!(divide_quantity("+2k", 2, 1), Some(1000));
        assert_eq!(divide_quantity("x", 2, 1), None);
        assert_eq!(binary_bytes(256 << 20), "256Mi");
        assert_eq!(binary_bytes(1 << 30), "1Gi");
        assert_eq!(binary_bytes(333_333_334), "333333334");
    }

    #[test]
    fn one_slot_keeps_the_quantities_as_written() {
        let whole = resources(None, ("100m", "128Mi"), ("1", "1Gi"));
        let one = divided(&whole, 1);
        assert_eq!(
            (one.limits.cpu.as_str(), one.limits.memory.as_str()),
            ("1", "1Gi")
        );
        let four = divided(&whole, 4);
        assert_eq!(
            (four.requests.cpu.as_str(), four.requests.memory.as_str()),
            ("25m", "32Mi")
        );
        assert_eq!(
            (four.limits.cpu.as_str(), four.limits.memory.as_str()),
            ("250m", "256Mi")
        );
    }
}
