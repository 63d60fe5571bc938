//! Derives the desired resource set from a validated stack: the network (VPC, subnets per AZ,
//! internet gateway, NAT per `nat` mode, route tables, routes, associations, flow logs), security
//! groups and rules, IAM roles, the EKS cluster, node groups and add-ons, the RDS database and the
//! ElastiCache replication group. Addresses are stable: they depend only on the stack's shape
//! (AZ index, node group name, add-on name), never on ids or ordering accidents.
//!
//! The in-cluster `baseline` and `controlplane` objects belong to the Kubernetes provider (a
//! later issue) and are not derived here.

use indexmap::IndexMap;
use serde_json::{Value, json};

use super::value::{OutputRef, generated_secret};
use super::{Address, DesiredResource, DesiredSet};
use crate::stack::LoadedStack;
use crate::stack::model::{AmiType, CapacityType, NatMode, Stack};

/// `ref(address, output)` as a property value.
fn output(address: &Address, name: &str) -> Value {
    OutputRef::new(address, name).to_value()
}

/// An address segment from a user-chosen name (node groups, add-ons): lowercase, with anything
/// outside `[a-z0-9_-]` turned into `_`.
pub fn segment(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "_".to_owned()
    } else {
        cleaned
    }
}

/// Where the Cluster Autoscaler runs: the service account its IAM role trusts.
pub const CLUSTER_AUTOSCALER_NAMESPACE: &str = "kube-system";
/// The Cluster Autoscaler's service account.
pub const CLUSTER_AUTOSCALER_SERVICE_ACCOUNT: &str = "cluster-autoscaler";

/// The Cluster Autoscaler's permissions: the upstream "full features" policy
/// (cluster-autoscaler/cloudprovider/aws/README.md) for Auto Scaling group auto-discovery.
/// Describe calls cannot be limited to resources; `SetDesiredCapacity` and
/// `TerminateInstanceInAutoScalingGroup` only act on groups tagged
/// `k8s.io/cluster-autoscaler/enabled=true` and `k8s.io/cluster-autoscaler/<cluster>=owned`,
/// which EKS puts on its managed node groups' Auto Scaling groups.
pub fn cluster_autoscaler_policy(cluster_name: &str) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Discover",
                "Effect": "Allow",
                "Action": [
                    "autoscaling:DescribeAutoScalingGroups",
                    "autoscaling:DescribeAutoScalingInstances",
                    "autoscaling:DescribeLaunchConfigurations",
                    "autoscaling:DescribeScalingActivities",
                    "autoscaling:DescribeTags",
                    "ec2:DescribeImages",
                    "ec2:DescribeInstanceTypes",
                    "ec2:DescribeLaunchTemplateVersions",
                    "ec2:GetInstanceTypesFromInstanceRequirements",
                    "eks:DescribeNodegroup",
                ],
                "Resource": "*",
            },
            {
                "Sid": "ScaleOwnGroups",
                "Effect": "Allow",
                "Action": [
                    "autoscaling:SetDesiredCapacity",
                    "autoscaling:TerminateInstanceInAutoScalingGroup",
                ],
                "Resource": "*",
                "Condition": {
                    "StringEquals": {
                        "aws:ResourceTag/k8s.io/cluster-autoscaler/enabled": "true",
                        format!("aws:ResourceTag/k8s.io/cluster-autoscaler/{cluster_name}"): "owned",
                    },
                },
            },
        ],
    })
}

struct Builder<'a> {
    stack: &'a Stack,
    qualified: String,
    resources: Vec<DesiredResource>,
}

impl Builder<'_> {
    fn tags(&self, name: &str, extra: &[(&str, &str)]) -> Value {
        let mut tags: IndexMap<String, String> = self.stack.tags.clone();
        tags.insert("Name".to_owned(), name.to_owned());
        for (key, value) in extra {
            tags.insert((*key).to_owned(), (*value).to_owned());
        }
        json!(tags)
    }

    fn add(&mut self, resource: DesiredResource) -> Address {
        let address = resource.address.clone();
        self.resources.push(resource);
        address
    }
}

/// The desired resources of a loaded stack (and instance), with the availability zones assumed
/// from the stack alone (`<region>a`, `b`, ... for `azs: N`). Verbs that create or compare
/// subnets use [`derive_in`] with the zones [`super::zones::resolve`] decided.
pub fn derive(loaded: &LoadedStack) -> DesiredSet {
    let zones = loaded.stack.network.azs.names(&loaded.stack.region);
    derive_in(loaded, &zones)
}

/// The desired resources of a loaded stack (and instance) whose subnets go to `zones`, one per
/// subnet index.
pub fn derive_in(loaded: &LoadedStack, zones: &[String]) -> DesiredSet {
    let stack = &loaded.stack;
    let names = &loaded.names;
    let mut b = Builder {
        stack,
        qualified: names.qualified.clone(),
        resources: Vec::new(),
    };
    let q = b.qualified.clone();
    let network = &stack.network;
    let azs = zones.to_vec();
    let partition = stack.partition();

    // --- network ---
    let vpc = b.add(
        DesiredResource::new("network.vpc", "aws.ec2.vpc")
            .with("cidr_block", json!(network.cidr.0.to_string()))
            .with("enable_dns_support", json!(true))
            .with("enable_dns_hostnames", json!(true))
            .with("tags", b.tags(&q, &[])),
    );
    let igw = b.add(
        DesiredResource::new("network.internet_gateway", "aws.ec2.internet_gateway")
            .with("vpc_id", output(&vpc, "id"))
            .with("tags", b.tags(&q, &[])),
    );
    let cluster_tag = format!("kubernetes.io/cluster/{}", names.cluster);
    let mut public_subnets = Vec::new();
    for (index, (cidr, az)) in network.public_subnets.iter().zip(&azs).enumerate() {
        let tags = b.tags(
            &format!("{q}-public-{az}"),
            &[
                ("kubernetes.io/role/elb", "1"),
                (cluster_tag.as_str(), "shared"),
            ],
        );
        public_subnets.push(
            b.add(
                DesiredResource::new(&format!("network.subnet.public[{index}]"), "aws.ec2.subnet")
                    .with("vpc_id", output(&vpc, "id"))
                    .with("cidr_block", json!(cidr.0.to_string()))
                    .with("availability_zone", json!(az))
                    .with("map_public_ip_on_launch", json!(true))
                    .with("tags", tags),
            ),
        );
    }
    let mut private_subnets = Vec::new();
    for (index, (cidr, az)) in network.private_subnets.iter().zip(&azs).enumerate() {
        let tags = b.tags(
            &format!("{q}-private-{az}"),
            &[
                ("kubernetes.io/role/internal-elb", "1"),
                (cluster_tag.as_str(), "shared"),
            ],
        );
        private_subnets.push(
            b.add(
                DesiredResource::new(
                    &format!("network.subnet.private[{index}]"),
                    "aws.ec2.subnet",
                )
                .with("vpc_id", output(&vpc, "id"))
                .with("cidr_block", json!(cidr.0.to_string()))
                .with("availability_zone", json!(az))
                .with("map_public_ip_on_launch", json!(false))
                .with("tags", tags),
            ),
        );
    }
    let public_table = b.add(
        DesiredResource::new("network.route_table.public", "aws.ec2.route_table")
            .with("vpc_id", output(&vpc, "id"))
            .with("tags", b.tags(&format!("{q}-public"), &[])),
    );
    b.add(
        DesiredResource::new("network.route.public_internet", "aws.ec2.route")
            .with("route_table_id", output(&public_table, "id"))
            .with("destination_cidr_block", json!("0.0.0.0/0"))
            .with("gateway_id", output(&igw, "id")),
    );
    for (index, subnet) in public_subnets.iter().enumerate() {
        b.add(
            DesiredResource::new(
                &format!("network.route_table_association.public[{index}]"),
                "aws.ec2.route_table_association",
            )
            .with("subnet_id", output(subnet, "id"))
            .with("route_table_id", output(&public_table, "id")),
        );
    }
    let nat_count = match network.nat {
        NatMode::None => 0,
        NatMode::Single => 1.min(public_subnets.len()),
        NatMode::PerAz => public_subnets.len(),
    };
    let mut nat_gateways = Vec::new();
    for (index, public_subnet) in public_subnets.iter().take(nat_count).enumerate() {
        let eip = b.add(
            DesiredResource::new(&format!("network.eip.nat[{index}]"), "aws.ec2.eip")
                .with("domain", json!("vpc"))
                .with("tags", b.tags(&format!("{q}-nat-{index}"), &[]))
                .after(&igw),
        );
        nat_gateways.push(
            b.add(
                DesiredResource::new(
                    &format!("network.nat_gateway[{index}]"),
                    "aws.ec2.nat_gateway",
                )
                .with("subnet_id", output(public_subnet, "id"))
                .with("allocation_id", output(&eip, "id"))
                .with("connectivity_type", json!("public"))
                .with("tags", b.tags(&format!("{q}-nat-{index}"), &[]))
                .after(&igw),
            ),
        );
    }
    for (index, subnet) in private_subnets.iter().enumerate() {
        let table = b.add(
            DesiredResource::new(
                &format!("network.route_table.private[{index}]"),
                "aws.ec2.route_table",
            )
            .with("vpc_id", output(&vpc, "id"))
            .with("tags", b.tags(&format!("{q}-private-{index}"), &[])),
        );
        if !nat_gateways.is_empty() {
            let nat = &nat_gateways[index.min(nat_gateways.len() - 1)];
            b.add(
                DesiredResource::new(
                    &format!("network.route.private_nat[{index}]"),
                    "aws.ec2.route",
                )
                .with("route_table_id", output(&table, "id"))
                .with("destination_cidr_block", json!("0.0.0.0/0"))
                .with("nat_gateway_id", output(nat, "id")),
            );
        }
        b.add(
            DesiredResource::new(
                &format!("network.route_table_association.private[{index}]"),
                "aws.ec2.route_table_association",
            )
            .with("subnet_id", output(subnet, "id"))
            .with("route_table_id", output(&table, "id")),
        );
    }
    if network.flow_logs {
        let log_group = b.add(
            DesiredResource::new("network.flow_log_group", "aws.logs.log_group")
                .with("name", json!(format!("/stacksmith/{q}/vpc-flow-logs")))
                .with("retention_in_days", json!(30))
                .with("tags", b.tags(&format!("{q}-flow-logs"), &[])),
        );
        let role = b.add(
            DesiredResource::new("iam.role.flow_logs", "aws.iam.role")
                .with("name", json!(format!("{q}-vpc-flow-logs")))
                .with("assume_role_service", json!("vpc-flow-logs.amazonaws.com"))
                .with("tags", b.tags(&format!("{q}-vpc-flow-logs"), &[])),
        );
        // The delivery role may write to its own log group and nothing else.
        let group_arn = format!(
            "arn:{}:logs:{}:*:log-group:/stacksmith/{q}/vpc-flow-logs",
            partition, stack.region
        );
        let delivery = b.add(
            DesiredResource::new("iam.role_policy.flow_logs", "aws.iam.role_policy")
                .with("role", output(&role, "name"))
                .with("name", json!("flow-log-delivery"))
                .with(
                    "document",
                    json!({
                        "Version": "2012-10-17",
                        "Statement": [{
                            "Sid": "DeliverFlowLogs",
                            "Effect": "Allow",
                            "Action": [
                                "logs:CreateLogStream",
                                "logs:PutLogEvents",
                                "logs:DescribeLogGroups",
                                "logs:DescribeLogStreams",
                            ],
                            "Resource": [group_arn.clone(), format!("{group_arn}:*")],
                        }],
                    }),
                ),
        );
        b.add(
            DesiredResource::new("network.flow_log", "aws.ec2.flow_log")
                .with("vpc_id", output(&vpc, "id"))
                .with("traffic_type", json!("ALL"))
                .with("log_group_name", output(&log_group, "name"))
                .with("iam_role_arn", output(&role, "arn"))
                .with("tags", b.tags(&format!("{q}-flow-log"), &[]))
                .after(&delivery),
        );
    }

    // --- security groups ---
    let cluster_sg = b.add(
        DesiredResource::new("network.security_group.cluster", "aws.ec2.security_group")
            .with("vpc_id", output(&vpc, "id"))
            .with("name", json!(format!("{q}-cluster")))
            .with("description", json!("EKS cluster and nodes"))
            .with("tags", b.tags(&format!("{q}-cluster"), &[])),
    );

    // --- IAM ---
    let managed = |policy: &str| json!(format!("arn:{partition}:iam::aws:policy/{policy}"));
    let cluster_role = b.add(
        DesiredResource::new("iam.role.cluster", "aws.iam.role")
            .with("name", json!(format!("{q}-eks-cluster")))
            .with("assume_role_service", json!("eks.amazonaws.com"))
            .with("tags", b.tags(&format!("{q}-eks-cluster"), &[])),
    );
    let cluster_policy = b.add(
        DesiredResource::new(
            "iam.role_policy_attachment.cluster",
            "aws.iam.role_policy_attachment",
        )
        .with("role", output(&cluster_role, "name"))
        .with("policy_arn", managed("AmazonEKSClusterPolicy")),
    );
    let node_role = b.add(
        DesiredResource::new("iam.role.node", "aws.iam.role")
            .with("name", json!(format!("{q}-eks-node")))
            .with("assume_role_service", json!("ec2.amazonaws.com"))
            .with("tags", b.tags(&format!("{q}-eks-node"), &[])),
    );
    let mut node_policies = Vec::new();
    for (suffix, policy) in [
        ("worker", "AmazonEKSWorkerNodePolicy"),
        ("cni", "AmazonEKS_CNI_Policy"),
        ("ecr", "AmazonEC2ContainerRegistryReadOnly"),
    ] {
        node_policies.push(
            b.add(
                DesiredResource::new(
                    &format!("iam.role_policy_attachment.node_{suffix}"),
                    "aws.iam.role_policy_attachment",
                )
                .with("role", output(&node_role, "name"))
                .with("policy_arn", managed(policy)),
            ),
        );
    }

    // --- EKS ---
    let cluster = &stack.cluster;
    let private_ids = Value::Array(private_subnets.iter().map(|s| output(s, "id")).collect());
    // EKS reports enabled log types as a set: keep them in one canonical order (the model's)
    // without duplicates, so a stack listing `[audit, api]` is not a change against `[api, audit]`.
    let mut logging = cluster.logging.clone();
    logging.sort_by_key(|t| *t as u8);
    logging.dedup();
    let log_types: Vec<Value> = logging
        .iter()
        .map(|t| serde_json::to_value(t).unwrap_or(Value::Null))
        .collect();
    let control_plane = b.add(
        DesiredResource::new("cluster.control_plane", "aws.eks.cluster")
            .with("name", json!(names.cluster))
            .with("version", json!(cluster.version))
            .with("service_cidr", json!(cluster.service_cidr.to_string()))
            .with("role_arn", output(&cluster_role, "arn"))
            .with("subnet_ids", private_ids.clone())
            .with("security_group_ids", json!([output(&cluster_sg, "id")]))
            .with("endpoint_public_access", json!(cluster.endpoint.public))
            .with("endpoint_private_access", json!(cluster.endpoint.private))
            .with(
                "public_access_cidrs",
                json!(
                    cluster
                        .endpoint
                        .public_cidrs
                        .iter()
                        .map(|c| c.0.to_string())
                        .collect::<Vec<_>>()
                ),
            )
            .with("enabled_log_types", Value::Array(log_types))
            // Access entries and the aws-auth ConfigMap both authenticate (EKS's default for new
            // clusters since access entries exist; one-way from CONFIG_MAP).
            .with("authentication_mode", json!("API_AND_CONFIG_MAP"))
            .with("tags", b.tags(&names.cluster, &[]))
            .after(&cluster_policy),
    );
    // Administrators besides the creator: an access entry each, with the cluster admin policy
    // on the whole cluster. Addressed by account and principal, so reordering the list changes
    // nothing.
    for admin in &cluster.access.admins {
        // arn:<partition>:iam::<account>:role/<name>
        let principal = admin.0.splitn(5, ':').nth(4).unwrap_or(admin.0.as_str());
        b.add(
            DesiredResource::new(
                &format!("cluster.access_entry.{}", segment(principal)),
                "aws.eks.access_entry",
            )
            .with("cluster_name", output(&control_plane, "name"))
            .with("principal_arn", json!(admin.0))
            .with(
                "policy_arn",
                json!(format!(
                    "arn:{partition}:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
                )),
            )
            .with("access_scope", json!("cluster"))
            .with("tags", b.tags(&format!("{}-admin", names.cluster), &[])),
        );
    }
    // --- IRSA: the cluster's OIDC provider and the EBS CSI driver's role ---
    let oidc = b.add(
        DesiredResource::new("iam.oidc_provider.cluster", "aws.iam.oidc_provider")
            .with("url", output(&control_plane, "oidc_issuer"))
            .with("client_ids", json!(["sts.amazonaws.com"]))
            .with("tags", b.tags(&format!("{}-oidc", names.cluster), &[])),
    );
    let ebs_csi_role = b.add(
        DesiredResource::new("iam.role.ebs_csi", "aws.iam.role")
            .with("name", json!(format!("{q}-ebs-csi")))
            .with(
                "assume_role_web_identity",
                json!({
                    "provider_arn": output(&oidc, "arn"),
                    "issuer": output(&control_plane, "oidc_issuer"),
                    "subject": "system:serviceaccount:kube-system:ebs-csi-controller-sa",
                    "audience": "sts.amazonaws.com",
                }),
            )
            .with("tags", b.tags(&format!("{q}-ebs-csi"), &[])),
    );
    let ebs_csi_policy = b.add(
        DesiredResource::new(
            "iam.role_policy_attachment.ebs_csi",
            "aws.iam.role_policy_attachment",
        )
        .with("role", output(&ebs_csi_role, "name"))
        .with(
            "policy_arn",
            managed("service-role/AmazonEBSCSIDriverPolicy"),
        ),
    );
    // --- IRSA: the Cluster Autoscaler's role (the upstream AWS policy for Auto Scaling group
    // auto-discovery: reads on everything, and scaling only the groups tagged for this cluster,
    // which EKS tags its managed node groups' groups with) ---
    if cluster.autoscaler_enabled() {
        let role = b.add(
            DesiredResource::new("iam.role.cluster_autoscaler", "aws.iam.role")
                .with("name", json!(format!("{q}-cluster-autoscaler")))
                .with(
                    "assume_role_web_identity",
                    json!({
                        "provider_arn": output(&oidc, "arn"),
                        "issuer": output(&control_plane, "oidc_issuer"),
                        "subject": format!(
                            "system:serviceaccount:{}:{}",
                            CLUSTER_AUTOSCALER_NAMESPACE, CLUSTER_AUTOSCALER_SERVICE_ACCOUNT
                        ),
                        "audience": "sts.amazonaws.com",
                    }),
                )
                .with("tags", b.tags(&format!("{q}-cluster-autoscaler"), &[])),
        );
        b.add(
            DesiredResource::new("iam.role_policy.cluster_autoscaler", "aws.iam.role_policy")
                .with("role", output(&role, "name"))
                .with("name", json!("cluster-autoscaler"))
                .with("document", cluster_autoscaler_policy(&names.cluster)),
        );
    }

    let mut node_groups = Vec::new();
    let autoscaled = cluster.autoscaler_enabled();
    for (name, group) in &cluster.node_groups {
        let taints: Vec<Value> = group
            .taints
            .iter()
            .map(|t| json!({ "key": t.key, "value": t.value, "effect": t.effect }))
            .collect();
        let mut resource = DesiredResource::new(&format!("cluster.node_group.{}", segment(name)), "aws.eks.node_group")
            .with("cluster_name", output(&control_plane, "name"))
            .with("node_group_name", json!(name))
            .with("node_role_arn", output(&node_role, "arn"))
            .with("subnet_ids", private_ids.clone())
            .with("instance_types", json!(group.instance_types))
            .with(
                "capacity_type",
                json!(match group.capacity {
                    CapacityType::OnDemand => "ON_DEMAND",
                    CapacityType::Spot => "SPOT",
                }),
            )
            .with("disk_size", json!(group.disk_gib))
            .with("scaling", {
                let mut scaling = json!({ "min": group.scaling.min, "desired": group.scaling.desired, "max": group.scaling.max });
                // The Cluster Autoscaler owns the size once the group exists (see
                // `types::satisfies`): `desired` is the size at creation.
                if autoscaled {
                    scaling["autoscaled"] = json!(true);
                }
                scaling
            })
            .with("labels", json!(group.labels))
            .with("taints", Value::Array(taints))
            // The group follows the cluster's Kubernetes version (UpdateNodegroupVersion after
            // the control plane), with an AMI of its instance types' architecture.
            .with("version", json!(cluster.version))
            .with(
                "ami_type",
                json!(
                    group
                        .ami_type
                        .unwrap_or_else(|| AmiType::for_instance_types(&group.instance_types))
                        .as_str()
                ),
            )
            .with("tags", b.tags(&format!("{}-{name}", names.cluster), &[]));
        for policy in &node_policies {
            resource = resource.after(policy);
        }
        node_groups.push(b.add(resource));
    }
    let network_policies = stack
        .baseline
        .as_ref()
        .is_some_and(|b| b.network_policies == crate::stack::model::NetworkPolicyMode::DefaultDeny);
    for (name, addon) in &cluster.addons {
        let mut configuration = addon.configuration();
        // The baseline's NetworkPolicies are only enforced when the VPC CNI runs its network
        // policy agent (off by default; VPC CNI 1.14 and later).
        if name == "vpc-cni" && network_policies {
            configuration
                .entry("enableNetworkPolicy".to_owned())
                .or_insert_with(|| json!("true"));
        }
        let mut resource =
            DesiredResource::new(&format!("cluster.addon.{}", segment(name)), "aws.eks.addon")
                .with("cluster_name", output(&control_plane, "name"))
                .with("addon_name", json!(name))
                .with("addon_version", json!(addon.version()));
        if !configuration.is_empty() {
            resource = resource.with("configuration", json!(configuration));
        }
        if name == "aws-ebs-csi-driver" {
            resource = resource
                .with("service_account_role_arn", output(&ebs_csi_role, "arn"))
                .after(&ebs_csi_policy);
        }
        // Add-ons such as CoreDNS need nodes to schedule on.
        for group in &node_groups {
            resource = resource.after(group);
        }
        b.add(resource);
    }

    // --- RDS ---
    if let Some(database) = &stack.database {
        let sg = b.add(
            DesiredResource::new("network.security_group.database", "aws.ec2.security_group")
                .with("vpc_id", output(&vpc, "id"))
                .with("name", json!(format!("{q}-database")))
                .with(
                    "description",
                    json!("PostgreSQL, reachable from the cluster"),
                )
                .with("tags", b.tags(&format!("{q}-database"), &[])),
        );
        b.add(
            DesiredResource::new(
                "network.security_group_rule.database_from_cluster",
                "aws.ec2.security_group_rule",
            )
            .with("security_group_id", output(&sg, "id"))
            .with("direction", json!("ingress"))
            .with("protocol", json!("tcp"))
            .with("from_port", json!(5432))
            .with("to_port", json!(5432))
            // Pods on managed nodes use the nodes' group: the cluster security group EKS
            // creates (`eks-cluster-sg-*`), not the groups given at CreateCluster (those sit
            // on the control plane's network interfaces only).
            .with(
                "source_security_group_id",
                output(&control_plane, "cluster_security_group_id"),
            ),
        );
        let subnet_group = b.add(
            DesiredResource::new("database.subnet_group", "aws.rds.db_subnet_group")
                .with("name", json!(format!("{}-subnets", names.database)))
                .with("subnet_ids", private_ids.clone())
                .with("tags", b.tags(&names.database, &[])),
        );
        let major = database.engine_version.split('.').next().unwrap_or("16");
        // Named after its family: a major version upgrade creates the new family's group and
        // moves the instance to it in the same modification as the engine version.
        let family = format!("postgres{major}");
        let parameter_group = b.add(
            DesiredResource::new("database.parameter_group", "aws.rds.db_parameter_group")
                .with("name", json!(format!("{}-pg{major}", names.database)))
                .with("family", json!(family))
                .with("parameters", json!(database.parameters))
                .with("tags", b.tags(&names.database, &[])),
        );
        b.add(
            DesiredResource::new("database.instance", "aws.rds.instance")
                .with("identifier", json!(names.database))
                .with("engine", json!("postgres"))
                .with("engine_version", json!(database.engine_version))
                .with(
                    "auto_minor_version_upgrade",
                    json!(database.auto_minor_version_upgrade),
                )
                .with("instance_class", json!(database.instance_class))
                .with("allocated_storage", json!(database.storage_gib))
                .with("multi_az", json!(database.multi_az))
                .with("deletion_protection", json!(database.deletion_protection))
                .with(
                    "backup_retention_period",
                    json!(database.backup_retention_days),
                )
                .with("storage_encrypted", json!(true))
                .with("db_subnet_group_name", output(&subnet_group, "name"))
                .with("parameter_group_name", output(&parameter_group, "name"))
                .with("vpc_security_group_ids", json!([output(&sg, "id")]))
                .with("master_username", json!("stacksmith"))
                .with("master_password", generated_secret(32))
                .with("tags", b.tags(&names.database, &[])),
        );
    }

    // --- ElastiCache ---
    if let Some(cache) = &stack.cache {
        let sg = b.add(
            DesiredResource::new("network.security_group.cache", "aws.ec2.security_group")
                .with("vpc_id", output(&vpc, "id"))
                .with("name", json!(format!("{q}-cache")))
                .with("description", json!("Redis, reachable from the cluster"))
                .with("tags", b.tags(&format!("{q}-cache"), &[])),
        );
        b.add(
            DesiredResource::new(
                "network.security_group_rule.cache_from_cluster",
                "aws.ec2.security_group_rule",
            )
            .with("security_group_id", output(&sg, "id"))
            .with("direction", json!("ingress"))
            .with("protocol", json!("tcp"))
            .with("from_port", json!(6379))
            .with("to_port", json!(6379))
            // Pods on managed nodes use the nodes' group: the cluster security group EKS
            // creates (`eks-cluster-sg-*`), not the groups given at CreateCluster (those sit
            // on the control plane's network interfaces only).
            .with(
                "source_security_group_id",
                output(&control_plane, "cluster_security_group_id"),
            ),
        );
        let subnet_group = b.add(
            DesiredResource::new("cache.subnet_group", "aws.elasticache.subnet_group")
                .with("name", json!(format!("{}-subnets", names.cache)))
                .with("subnet_ids", private_ids.clone())
                .with("tags", b.tags(&names.cache, &[])),
        );
        let mut group = DesiredResource::new(
            "cache.replication_group",
            "aws.elasticache.replication_group",
        )
        .with("replication_group_id", json!(names.cache))
        .with("engine", json!("redis"))
        .with("engine_version", json!(cache.engine_version))
        .with("node_type", json!(cache.node_type))
        .with("num_cache_clusters", json!(u32::from(cache.replicas) + 1))
        .with("automatic_failover_enabled", json!(cache.replicas > 0))
        .with(
            "transit_encryption_enabled",
            json!(cache.transit_encryption),
        )
        .with(
            "at_rest_encryption_enabled",
            json!(cache.at_rest_encryption),
        )
        .with("subnet_group_name", output(&subnet_group, "name"))
        .with("security_group_ids", json!([output(&sg, "id")]));
        if cache.transit_encryption {
            group = group.with("auth_token", generated_secret(64));
        }
        b.add(group.with("tags", b.tags(&names.cache, &[])));
    }

    DesiredSet {
        stack: stack.name.clone(),
        instance: names.instance.clone(),
        resources: b.resources,
    }
}
