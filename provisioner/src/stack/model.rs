//! The stack file's typed model: what `stacks/<name>.yaml` may say, with the defaults it gets.
//!
//! The JSON Schema that editors and the loader use (`stacks/stack.schema.json`) is generated from
//! these types, so a field documented here is a field the loader accepts, and nothing else is.
//! String fields with a `format` are checked by [`super::formats`] before the typed model is built.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use indexmap::IndexMap;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A Stacksmith stack: the AWS network, IAM, EKS cluster, database, cache and in-cluster platform
/// of one environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Stacksmith stack file")]
pub struct Stack {
    /// A stack file this one builds on, relative to this file: mappings merge deeply, lists are
    /// replaced, and this file wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<String>,
    /// Marks a file that only holds shared defaults for other stacks (such as `base.yaml`): it is
    /// checked for unknown keys and types but cannot be deployed. Not inherited through `extends`.
    #[serde(
        default,
        rename = "abstract",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub is_abstract: bool,
    /// The stack's name: lowercase letters, digits and hyphens. With an instance, resources are
    /// named `<name>-<instance>`.
    #[schemars(extend("format" = "stack-name"))]
    pub name: String,
    /// The AWS region, e.g. `us-west-2`.
    #[schemars(extend("format" = "aws-region"))]
    pub region: String,
    /// Tags added to every taggable resource, next to Stacksmith's own `stacksmith:*` tags.
    #[serde(default)]
    pub tags: IndexMap<String, String>,
    /// How to reach AWS.
    #[serde(default)]
    pub aws: AwsSettings,
    /// Where the stack's state is kept.
    #[serde(default)]
    pub state: StateSettings,
    /// Makes this stack a template for ephemeral copies (`--instance pr-123`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<InstanceSettings>,
    /// The VPC.
    pub network: Network,
    /// The EKS cluster.
    pub cluster: Cluster,
    /// RDS PostgreSQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<Database>,
    /// ElastiCache Redis replication group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<Cache>,
    /// In-cluster objects installed before the control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
    /// The Stacksmith control plane installed into the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controlplane: Option<ControlPlane>,
}

impl Stack {
    /// The ARN partition of the stack's region (`aws`, `aws-cn`, `aws-us-gov`).
    pub fn partition(&self) -> &'static str {
        partition_of(&self.region)
    }
}

/// The ARN partition of a region (`aws`, `aws-cn`, `aws-us-gov`).
pub fn partition_of(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// How to reach AWS.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsSettings {
    /// Endpoint for every AWS service (emulators such as moto); otherwise AWS's own endpoints or
    /// the standard `AWS_ENDPOINT_URL*` environment variables.
    #[serde(default)]
    #[schemars(extend("format" = "http-url"))]
    pub endpoint_url: Option<String>,
    /// A named profile; otherwise the standard AWS credential chain.
    #[serde(default)]
    pub profile: Option<String>,
}

/// Where the stack's state is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateSettings {
    /// `local` keeps state in `.stacksmith/state/<stack>[-<instance>].json`; `postgres` in the
    /// database at `url`.
    #[serde(default)]
    pub backend: StateBackend,
    /// Connection URL of the `postgres` backend.
    #[serde(default)]
    pub url: Option<String>,
    /// How long a run waits for another run's lock before giving up, e.g. `5m`.
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout: HumanDuration,
}

impl Default for StateSettings {
    fn default() -> Self {
        Self {
            backend: StateBackend::default(),
            url: None,
            lock_timeout: default_lock_timeout(),
        }
    }
}

fn default_lock_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

/// A state backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StateBackend {
    /// A JSON file next to the stacks, locked with a lock file.
    #[default]
    Local,
    /// A Postgres table, locked with an advisory lock.
    Postgres,
}

/// Ephemeral copies of a template stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceSettings {
    /// Whether `--instance NAME` may be used with this stack.
    pub allowed: bool,
    /// Age after which `provisioner gc` tears an instance down, e.g. `48h`.
    #[serde(default)]
    pub ttl: Option<HumanDuration>,
    /// Longest instance name accepted. Resource names are checked against AWS limits with an
    /// instance name this long, so a template that validates fits every instance it allows.
    #[serde(default = "default_max_instance_name")]
    #[schemars(range(min = 1, max = 32))]
    pub max_name_length: u8,
}

fn default_max_instance_name() -> u8 {
    12
}

/// The VPC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// The VPC's IPv4 CIDR block, e.g. `10.0.0.0/16`.
    pub cidr: Cidr,
    /// Availability zones: a count (the region's first N zones) or an explicit list.
    pub azs: AvailabilityZones,
    /// One public subnet per AZ (needed for NAT gateways and internet-facing load balancers).
    #[serde(default)]
    pub public_subnets: Vec<Cidr>,
    /// One private subnet per AZ, for nodes, the database and the cache.
    pub private_subnets: Vec<Cidr>,
    /// NAT gateways for the private subnets: `none`, `single` or `per-az`.
    #[serde(default)]
    pub nat: NatMode,
    /// VPC flow logs to CloudWatch Logs.
    #[serde(default = "yes")]
    pub flow_logs: bool,
}

/// Availability zones, by count or by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum AvailabilityZones {
    /// The region's first N zones (`a`, `b`, `c`, ...).
    Count(#[schemars(range(min = 1, max = 6))] u8),
    /// Explicit zone names, e.g. `[us-west-2a, us-west-2b]`.
    Names(Vec<String>),
}

impl AvailabilityZones {
    /// The zone names in `region`.
    pub fn names(&self, region: &str) -> Vec<String> {
        match self {
            Self::Count(n) => (b'a'..)
                .take(usize::from(*n))
                .map(|c| format!("{region}{}", c as char))
                .collect(),
            Self::Names(names) => names.clone(),
        }
    }
}

/// NAT gateways.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NatMode {
    /// No NAT: private subnets have no route to the internet.
    None,
    /// One NAT gateway in the first public subnet.
    #[default]
    Single,
    /// One NAT gateway per AZ.
    PerAz,
}

/// The EKS cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// The cluster's name; with an instance it becomes `<name>-<instance>`.
    pub name: String,
    /// Kubernetes version, e.g. `"1.31"` (quote it: YAML reads 1.30 as the number 1.3).
    #[schemars(extend("format" = "kubernetes-version"))]
    pub version: String,
    /// Who may reach the API endpoint.
    #[serde(default)]
    pub endpoint: ClusterEndpoint,
    /// Control plane log types sent to CloudWatch.
    #[serde(default)]
    pub logging: Vec<ClusterLogType>,
    /// The block Kubernetes Services take their ClusterIPs from (EKS `serviceIpv4Cidr`, fixed at
    /// the cluster's creation): inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16, between /12
    /// and /24, apart from the VPC. The `kubernetes` Service gets its first address, which the
    /// network policies let the API's pool autoscaler reach.
    #[serde(default = "default_service_cidr")]
    pub service_cidr: Cidr,
    /// Managed node groups by name.
    pub node_groups: IndexMap<String, NodeGroup>,
    /// Managed add-ons: name to version, or `latest` (resolved and pinned in state on first
    /// apply), or to `{ version, configuration }` with the add-on's configuration values (its
    /// schema: `aws eks describe-addon-configuration`).
    #[serde(default)]
    pub addons: IndexMap<String, Addon>,
    /// Bring-your-own cluster: apply in-cluster objects through this kubeconfig instead of the
    /// EKS endpoint (also how the `local` stack reaches the Kubernetes emulator).
    #[serde(default)]
    pub kubeconfig: Option<String>,
    /// Who may administer the cluster's Kubernetes API besides the identity that created it.
    #[serde(default)]
    pub access: ClusterAccess,
    /// The Cluster Autoscaler, which adds nodes to a node group (up to its `scaling.max`) when
    /// pods cannot be scheduled and removes idle ones (down to `scaling.min`). On by default
    /// when a node group has `max > min`.
    #[serde(default)]
    pub autoscaler: ClusterAutoscaler,
}

/// `cluster.autoscaler`: whether the Cluster Autoscaler runs, and which image.
///
/// When on, `up` creates its IAM role, trusted through the cluster's OIDC provider for the
/// `kube-system/cluster-autoscaler` service account only (IRSA), with the upstream policy for
/// Auto Scaling group auto-discovery (scaling actions limited to the groups tagged for this
/// cluster, which EKS managed node groups are), and installs it in `kube-system`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterAutoscaler {
    /// `true` or `false`; unset: on when some node group has `scaling.max` above `scaling.min`.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// The image, e.g. `registry.k8s.io/autoscaling/cluster-autoscaler:v1.31.3`; unset: the
    /// release matching `cluster.version`'s minor version (the Cluster Autoscaler supports the
    /// Kubernetes minor version of its own).
    #[serde(default)]
    pub image: Option<String>,
}

impl Cluster {
    /// Whether the Cluster Autoscaler runs in this cluster: as `cluster.autoscaler.enabled`
    /// says, else when some node group may grow (`scaling.max > scaling.min`).
    pub fn autoscaler_enabled(&self) -> bool {
        self.autoscaler.enabled.unwrap_or_else(|| {
            self.node_groups
                .values()
                .any(|g| g.scaling.max > g.scaling.min)
        })
    }
}

/// One managed add-on: its version, or its version and configuration values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Addon {
    /// A version such as `v1.19.0-eksbuild.1`, or `latest`.
    Version(String),
    /// A version and configuration values.
    Configured(AddonSettings),
}

/// An add-on's version and configuration values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddonSettings {
    /// A version such as `v1.19.0-eksbuild.1`, or `latest`.
    #[serde(default = "latest")]
    pub version: String,
    /// Configuration values, as the add-on's configuration schema describes them (sent to EKS as
    /// JSON). The provisioner adds what the stack needs: `enableNetworkPolicy: "true"` for
    /// `vpc-cni` when `baseline.network_policies` is `default-deny`.
    #[serde(default)]
    pub configuration: IndexMap<String, serde_json::Value>,
}

fn latest() -> String {
    "latest".to_owned()
}

impl Addon {
    /// The version, or `latest`.
    pub fn version(&self) -> &str {
        match self {
            Self::Version(version) => version,
            Self::Configured(settings) => &settings.version,
        }
    }

    /// The configuration values the stack gives (none for a bare version).
    pub fn configuration(&self) -> IndexMap<String, serde_json::Value> {
        match self {
            Self::Version(_) => IndexMap::new(),
            Self::Configured(settings) => settings.configuration.clone(),
        }
    }
}

/// EKS's own choice for a VPC in 10.0.0.0/8 (it takes 10.100.0.0/16 otherwise).
fn default_service_cidr() -> Cidr {
    Cidr(ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(172, 20, 0, 0), 16).expect("a valid prefix"))
}

impl Cluster {
    /// The ClusterIP of the `kubernetes` Service: the service CIDR's first address.
    pub fn kubernetes_service_ip(&self) -> std::net::Ipv4Addr {
        let network = u32::from(self.service_cidr.0.network());
        std::net::Ipv4Addr::from(network.saturating_add(1))
    }
}

/// Access to the cluster's Kubernetes API. The cluster authenticates through EKS access entries
/// and the `aws-auth` ConfigMap (`API_AND_CONFIG_MAP`); the identity that creates the cluster is
/// an administrator, and so is every principal listed here (an access entry with
/// `AmazonEKSClusterAdminPolicy` on the whole cluster), so a teammate's `up` and `down` can reach
/// the API too.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterAccess {
    /// IAM roles or users that administer the cluster, e.g.
    /// `arn:aws:iam::123456789012:role/platform-admins`.
    #[serde(default)]
    pub admins: Vec<IamPrincipalArn>,
}

/// The ARN of an IAM role or user. Checked by the `iam-principal-arn` format.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IamPrincipalArn(pub String);

impl JsonSchema for IamPrincipalArn {
    fn schema_name() -> Cow<'static, str> {
        "IamPrincipalArn".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": "iam-principal-arn",
            "description": "The ARN of an IAM role or user, e.g. arn:aws:iam::123456789012:role/platform-admins.",
        })
    }
}

/// Who may reach the cluster's API endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterEndpoint {
    /// A public endpoint.
    #[serde(default = "yes")]
    pub public: bool,
    /// A private endpoint inside the VPC.
    #[serde(default = "yes")]
    pub private: bool,
    /// CIDRs allowed to reach the public endpoint.
    #[serde(default)]
    pub public_cidrs: Vec<Cidr>,
}

impl Default for ClusterEndpoint {
    fn default() -> Self {
        Self {
            public: true,
            private: true,
            public_cidrs: Vec::new(),
        }
    }
}

/// EKS control plane log types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub enum ClusterLogType {
    Api,
    Audit,
    Authenticator,
    ControllerManager,
    Scheduler,
}

/// A managed node group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeGroup {
    /// EC2 instance types, most preferred first.
    #[schemars(length(min = 1))]
    pub instance_types: Vec<String>,
    /// `on-demand` or `spot`.
    #[serde(default)]
    pub capacity: CapacityType,
    /// Node counts.
    pub scaling: Scaling,
    /// Root volume size in GiB.
    #[serde(default = "default_disk_gib")]
    #[schemars(range(min = 20, max = 16384))]
    pub disk_gib: u32,
    /// Kubernetes labels on the nodes.
    #[serde(default)]
    pub labels: IndexMap<String, String>,
    /// Kubernetes taints on the nodes.
    #[serde(default)]
    pub taints: Vec<Taint>,
    /// The nodes' AMI type. By default it follows the instance types: Amazon Linux 2023 for
    /// their architecture (`AL2023_ARM_64_STANDARD` for Graviton types such as `m7g.large`),
    /// with the NVIDIA or Neuron drivers for GPU (`g*`, `p*`) and Inferentia/Trainium types.
    #[serde(default)]
    pub ami_type: Option<AmiType>,
}

fn default_disk_gib() -> u32 {
    20
}

/// The AMI types of EKS managed node groups (AWS's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(missing_docs)]
pub enum AmiType {
    #[serde(rename = "AL2023_x86_64_STANDARD")]
    Al2023X8664Standard,
    #[serde(rename = "AL2023_ARM_64_STANDARD")]
    Al2023Arm64Standard,
    #[serde(rename = "AL2023_x86_64_NVIDIA")]
    Al2023X8664Nvidia,
    #[serde(rename = "AL2023_ARM_64_NVIDIA")]
    Al2023Arm64Nvidia,
    #[serde(rename = "AL2023_x86_64_NEURON")]
    Al2023X8664Neuron,
    #[serde(rename = "BOTTLEROCKET_x86_64")]
    BottlerocketX8664,
    #[serde(rename = "BOTTLEROCKET_ARM_64")]
    BottlerocketArm64,
    #[serde(rename = "BOTTLEROCKET_x86_64_NVIDIA")]
    BottlerocketX8664Nvidia,
    #[serde(rename = "BOTTLEROCKET_ARM_64_NVIDIA")]
    BottlerocketArm64Nvidia,
    #[serde(rename = "AL2_x86_64")]
    Al2X8664,
    #[serde(rename = "AL2_ARM_64")]
    Al2Arm64,
    #[serde(rename = "AL2_x86_64_GPU")]
    Al2X8664Gpu,
}

/// A CPU architecture of EC2 instances and AMIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    X86_64,
    Arm64,
}

impl Architecture {
    pub fn name(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::Arm64 => "arm64 (Graviton)",
        }
    }

    /// The architecture of an EC2 instance type, from its family: Graviton families carry a `g`
    /// after their generation number (`m7g`, `c6gn`, `r6gd`, `t4g`, `im4gn`, `g5g`), and `a1`.
    pub fn of_instance_type(instance_type: &str) -> Self {
        let family = instance_type.split('.').next().unwrap_or_default();
        if family == "a1" {
            return Self::Arm64;
        }
        let after_generation = family
            .trim_start_matches(|c: char| c.is_ascii_alphabetic())
            .trim_start_matches(|c: char| c.is_ascii_digit());
        if after_generation
            .split('-')
            .next()
            .unwrap_or_default()
            .contains('g')
        {
            Self::Arm64
        } else {
            Self::X86_64
        }
    }
}

impl AmiType {
    /// AWS's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Al2023X8664Standard => "AL2023_x86_64_STANDARD",
            Self::Al2023Arm64Standard => "AL2023_ARM_64_STANDARD",
            Self::Al2023X8664Nvidia => "AL2023_x86_64_NVIDIA",
            Self::Al2023Arm64Nvidia => "AL2023_ARM_64_NVIDIA",
            Self::Al2023X8664Neuron => "AL2023_x86_64_NEURON",
            Self::BottlerocketX8664 => "BOTTLEROCKET_x86_64",
            Self::BottlerocketArm64 => "BOTTLEROCKET_ARM_64",
            Self::BottlerocketX8664Nvidia => "BOTTLEROCKET_x86_64_NVIDIA",
            Self::BottlerocketArm64Nvidia => "BOTTLEROCKET_ARM_64_NVIDIA",
            Self::Al2X8664 => "AL2_x86_64",
            Self::Al2Arm64 => "AL2_ARM_64",
            Self::Al2X8664Gpu => "AL2_x86_64_GPU",
        }
    }

    pub fn architecture(self) -> Architecture {
        match self {
            Self::Al2023Arm64Standard
            | Self::Al2023Arm64Nvidia
            | Self::BottlerocketArm64
            | Self::BottlerocketArm64Nvidia
            | Self::Al2Arm64 => Architecture::Arm64,
            _ => Architecture::X86_64,
        }
    }

    /// The Amazon Linux 2023 AMI for these instance types: their architecture, with NVIDIA
    /// drivers when one is a GPU type (`g*`, `p*`) and Neuron drivers for Inferentia and
    /// Trainium (`inf*`, `trn*`).
    pub fn for_instance_types(instance_types: &[String]) -> Self {
        let family = |t: &String| t.split('.').next().unwrap_or_default().to_owned();
        let arm = instance_types
            .first()
            .is_some_and(|t| Architecture::of_instance_type(t) == Architecture::Arm64);
        let gpu = instance_types.iter().any(|t| {
            let f = family(t);
            f.starts_with('p')
                || (f.starts_with('g') && f.len() > 1 && f.as_bytes()[1].is_ascii_digit())
        });
        let neuron = instance_types
            .iter()
            .any(|t| family(t).starts_with("inf") || family(t).starts_with("trn"));
        match (arm, gpu, neuron) {
            (true, true, _) => Self::Al2023Arm64Nvidia,
            (true, false, _) => Self::Al2023Arm64Standard,
            (false, true, _) => Self::Al2023X8664Nvidia,
            (false, false, true) => Self::Al2023X8664Neuron,
            (false, false, false) => Self::Al2023X8664Standard,
        }
    }
}

/// On-demand or spot capacity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[allow(missing_docs)]
pub enum CapacityType {
    #[default]
    OnDemand,
    Spot,
}

/// Node counts of a node group: `min <= desired <= max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Scaling {
    pub min: u32,
    pub desired: u32,
    #[schemars(range(min = 1))]
    pub max: u32,
}

/// A Kubernetes taint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Taint {
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
    pub effect: TaintEffect,
}

/// What a taint does to pods that do not tolerate it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(missing_docs)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

/// RDS PostgreSQL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Database {
    /// PostgreSQL version, e.g. `"16.4"`; the parameter group family follows from it.
    #[schemars(extend("format" = "engine-version"))]
    pub engine_version: String,
    /// RDS instance class, e.g. `db.r6g.large`.
    #[schemars(extend("format" = "rds-instance-class"))]
    pub instance_class: String,
    /// Allocated storage in GiB.
    #[schemars(range(min = 20, max = 65536))]
    pub storage_gib: u32,
    /// A standby in a second AZ.
    #[serde(default)]
    pub multi_az: bool,
    /// Refuse deletion until turned off.
    #[serde(default)]
    pub deletion_protection: bool,
    /// Let RDS apply minor version upgrades (16.4 to 16.6) in the maintenance window. The
    /// instance then runs `engine_version` or a newer minor version of the same major version;
    /// Stacksmith never sends an older one back. A new major version (`"17.2"`) is an upgrade
    /// `up` performs, with the parameter group of the new family.
    #[serde(default = "yes")]
    pub auto_minor_version_upgrade: bool,
    /// Take a final snapshot (`<id>-final-<timestamp>`) when `down` deletes the instance. Turn it
    /// off for ephemeral copies whose data nobody needs.
    #[serde(default = "default_final_snapshot")]
    pub final_snapshot: bool,
    /// Days of automated backups (0 turns them off).
    #[serde(default = "default_backup_days")]
    #[schemars(range(max = 35))]
    pub backup_retention_days: u8,
    /// Entries of the DB parameter group.
    #[serde(default)]
    pub parameters: IndexMap<String, String>,
}

fn default_final_snapshot() -> bool {
    true
}

fn default_backup_days() -> u8 {
    7
}

/// ElastiCache Redis replication group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cache {
    /// Redis version, e.g. `"7.1"`.
    #[schemars(extend("format" = "engine-version"))]
    pub engine_version: String,
    /// Node type, e.g. `cache.r6g.large`.
    #[schemars(extend("format" = "cache-node-type"))]
    pub node_type: String,
    /// Read replicas next to the primary.
    #[serde(default = "default_replicas")]
    #[schemars(range(max = 5))]
    pub replicas: u8,
    /// TLS between clients and Redis (required for an auth token).
    #[serde(default = "yes")]
    pub transit_encryption: bool,
    /// Encryption of data at rest.
    #[serde(default = "yes")]
    pub at_rest_encryption: bool,
}

fn default_replicas() -> u8 {
    1
}

/// In-cluster objects installed before the control plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// Namespaces to create.
    pub namespaces: Vec<String>,
    /// Pod Security Standard enforced per namespace.
    #[serde(default)]
    pub pod_security: IndexMap<String, PodSecurityLevel>,
    /// `default-deny` installs default-deny policies plus the allow rules the platform needs.
    #[serde(default)]
    pub network_policies: NetworkPolicyMode,
    /// PriorityClasses by tier name, with their values.
    #[serde(default)]
    pub priority_classes: IndexMap<String, i32>,
    /// ResourceQuota entries per namespace, e.g. `{ workload: { pods: "500" } }`.
    #[serde(default)]
    pub quotas: IndexMap<String, IndexMap<String, Quantity>>,
}

/// A Pod Security Standard level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[allow(missing_docs)]
pub enum PodSecurityLevel {
    Privileged,
    Baseline,
    Restricted,
}

/// Network policies installed by the baseline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkPolicyMode {
    /// Deny all traffic by default, allow what the platform needs.
    #[default]
    DefaultDeny,
    /// Install no network policies.
    None,
}

/// The Stacksmith control plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlPlane {
    /// Container image, pinned to a tag or digest.
    #[schemars(extend("format" = "container-image"))]
    pub image: String,
    /// Replicas of the API.
    #[schemars(range(min = 1))]
    pub replicas: u32,
    /// Requests and limits of each API pod.
    #[serde(default)]
    pub resources: Option<Resources>,
    /// Horizontal autoscaling of the API on CPU.
    #[serde(default)]
    pub autoscaling: Option<Autoscaling>,
    /// Request rate limits of the API.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// Worker pools by name.
    #[serde(default)]
    pub worker_pools: IndexMap<String, WorkerPool>,
    /// Namespace of the API (one of `baseline.namespaces`).
    #[serde(default = "default_controlplane_namespace")]
    pub namespace: String,
    /// Namespace of the worker Deployments, which the API may scale (one of
    /// `baseline.namespaces`).
    #[serde(default = "default_worker_namespace")]
    pub worker_namespace: String,
    /// Namespaces whose pods may call the API besides the workers (the ingress controller's and
    /// monitoring's), when `baseline.network_policies` is `default-deny`.
    #[serde(default = "default_api_clients")]
    pub api_client_namespaces: Vec<String>,
    /// The proxies whose `X-Forwarded-For` names the client for the API's per-client rate limit
    /// (the load balancers in front of it); unset: the VPC's public subnets, where an
    /// internet-facing Application Load Balancer's nodes are (it appends each client's address;
    /// nodes and pods live in the private subnets, so their headers are ignored).
    #[serde(default)]
    pub trusted_proxies: Option<Vec<Cidr>>,
}

fn default_api_clients() -> Vec<String> {
    vec!["ingress-nginx".to_owned(), "monitoring".to_owned()]
}

fn default_controlplane_namespace() -> String {
    "system".to_owned()
}

fn default_worker_namespace() -> String {
    "workload".to_owned()
}

/// Requests and limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Resources {
    #[serde(default)]
    pub requests: Option<ResourceList>,
    #[serde(default)]
    pub limits: Option<ResourceList>,
}

/// CPU and memory quantities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct ResourceList {
    #[serde(default)]
    pub cpu: Option<Quantity>,
    #[serde(default)]
    pub memory: Option<Quantity>,
}

/// Horizontal autoscaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Autoscaling {
    #[schemars(range(min = 1))]
    pub min: u32,
    #[schemars(range(min = 1))]
    pub max: u32,
    #[schemars(range(min = 1, max = 100))]
    pub cpu_percent: u8,
}

/// Request rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second per API key.
    #[schemars(range(min = 1))]
    pub per_key_rps: u32,
    /// Requests a key may send at once above the sustained rate.
    #[schemars(range(min = 1))]
    pub burst: u32,
    /// Sustained requests per second over all keys.
    #[schemars(range(min = 1))]
    pub global_rps: u32,
}

/// A worker pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerPool {
    /// Priority tier: a key of `baseline.priority_classes`.
    pub tier: String,
    /// Tasks one worker pod runs at once: the pod has one container per task slot, each with its
    /// own user id, process namespace and `/tmp`, so tasks of one pod cannot see each other.
    #[schemars(range(min = 1, max = 32))]
    pub concurrency: u32,
    /// The image the pool's tasks run in (the team's choice, pinned to a tag or digest). The worker
    /// binary is copied into it from the control plane image when the pod starts, so it needs
    /// glibc 2.36 or newer (Debian 12, Ubuntu 24.04, UBI 10 and later); the tasks' commands are
    /// looked up in its `PATH`. The default, Debian 12 slim, has a POSIX shell (`sh`) and coreutils.
    #[serde(default = "default_pool_image")]
    #[schemars(extend("format" = "container-image"))]
    pub image: String,
    /// Bounds of the pool's Deployment, scaled by queue depth.
    pub replicas: ReplicaRange,
    /// Queued tasks per replica the autoscaler aims for.
    #[serde(default = "default_tasks_per_replica")]
    #[schemars(range(min = 1))]
    pub tasks_per_replica: u32,
    /// Requests and limits of each worker pod, shared equally by its task slots.
    #[serde(default)]
    pub resources: Option<Resources>,
    /// Where the pool's tasks may connect besides the API and DNS, when
    /// `baseline.network_policies` is `default-deny` (rendered as the pool's NetworkPolicy).
    /// Nothing else by default.
    #[serde(default)]
    pub egress: PoolEgress,
}

/// A worker pool's network egress. Link-local addresses (the instance metadata service and its
/// node credentials) stay unreachable whatever is listed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolEgress {
    /// Every address of the stack's VPC, on every port.
    #[serde(default)]
    pub vpc: bool,
    /// These blocks, on every port.
    #[serde(default)]
    pub cidrs: Vec<Cidr>,
    /// The internet (every public address) on these TCP ports, e.g. `[443]` to clone code and
    /// fetch packages over HTTPS.
    #[serde(default)]
    pub internet_ports: Vec<u16>,
}

impl PoolEgress {
    /// Whether the pool may reach nothing besides the API and DNS.
    pub fn is_none(&self) -> bool {
        !self.vpc && self.cidrs.is_empty() && self.internet_ports.is_empty()
    }
}

fn default_tasks_per_replica() -> u32 {
    10
}

/// The image a worker pool's tasks run in unless the pool names one: Debian 12 (the release the
/// control plane image is built on, so the copied worker binary finds the glibc it was linked
/// against), slim, with `sh` for tasks such as `sh -c '...'`.
pub const DEFAULT_POOL_IMAGE: &str = "docker.io/library/debian:12-slim";

fn default_pool_image() -> String {
    DEFAULT_POOL_IMAGE.to_owned()
}

/// Replica bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct ReplicaRange {
    pub min: u32,
    #[schemars(range(min = 1))]
    pub max: u32,
}

fn yes() -> bool {
    true
}

/// An IPv4 CIDR block. Checked by the `ipv4-cidr` format before the model is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr(pub ipnet::Ipv4Net);

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(deserializer)?;
        text.parse().map(Cidr).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Cidr {
    fn schema_name() -> Cow<'static, str> {
        "Cidr".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": "ipv4-cidr",
            "description": "An IPv4 CIDR block, e.g. 10.0.1.0/24.",
        })
    }
}

/// A duration written like `90s`, `5m` or `48h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map(HumanDuration)
            .map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": "duration",
            "description": "A duration such as 90s, 5m, 48h or 1h 30m.",
        })
    }
}

/// A Kubernetes quantity such as `500m`, `512Mi` or `100`; numbers are accepted too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity(pub String);

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Whole(u64),
            Fraction(f64),
        }
        Ok(Quantity(match Raw::deserialize(deserializer)? {
            Raw::Text(text) => text,
            Raw::Whole(n) => n.to_string(),
            Raw::Fraction(f) => f.to_string(),
        }))
    }
}

impl JsonSchema for Quantity {
    fn schema_name() -> Cow<'static, str> {
        "Quantity".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                { "type": "string", "format": "kubernetes-quantity" },
                { "type": "number", "minimum": 0 }
            ],
            "description": "A Kubernetes quantity, e.g. 500m, 512Mi, 2 or \"100\".",
        })
    }
}
