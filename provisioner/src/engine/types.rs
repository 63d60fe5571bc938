//! What the planner and the graph need to know about each resource type, as plain data: which
//! attribute changes force a replacement (and why), in which order a replacement happens, and how
//! long a create typically takes (for the critical path).

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ResourceType;

/// Attributes holding a version the service raises on its own within a major version (RDS's
/// automatic minor version upgrades move PostgreSQL 16.4 to 16.6 in a maintenance window): for
/// these, a current value newer within the same major version than the wanted one is not a
/// change. Sending the older version back is refused ("Cannot upgrade postgres from 16.6 to
/// 16.4"), so the planner must not plan it and `drift` must not report it.
const VERSION_FLOORS: &[(&str, &str)] = &[("aws.rds.instance", "engine_version")];

/// Whether `current` satisfies `wanted` for one attribute of one type: equal, or (for the
/// [`VERSION_FLOORS`]) a version at least as new within the same major version. Shared by the
/// planner (desired against current) and `drift` (recorded against live).
pub fn satisfies(
    resource_type: &ResourceType,
    attribute: &str,
    wanted: &Value,
    current: &Value,
) -> bool {
    if wanted == current {
        return true;
    }
    if resource_type.as_str() == "aws.eks.node_group" && attribute == "scaling" {
        return autoscaled_scaling_satisfied(wanted, current);
    }
    let floor = VERSION_FLOORS
        .iter()
        .any(|(kind, name)| *kind == resource_type.as_str() && *name == attribute);
    match (floor, wanted.as_str(), current.as_str()) {
        (true, Some(wanted), Some(current)) => same_major_at_least(wanted, current),
        _ => false,
    }
}

/// A node group's `scaling` when the Cluster Autoscaler owns its size (`"autoscaled": true` in
/// the wanted value): `desired` is only the size at creation, so any current size within the
/// wanted `min` and `max` satisfies it (the autoscaler moved it; sending the stack's back would
/// undo its decision). `min` and `max` must be equal.
fn autoscaled_scaling_satisfied(wanted: &Value, current: &Value) -> bool {
    if wanted.get("autoscaled") != Some(&Value::Bool(true)) {
        return false;
    }
    let number = |value: &Value, key: &str| value.get(key).and_then(Value::as_u64);
    let (Some(min), Some(max)) = (number(wanted, "min"), number(wanted, "max")) else {
        return false;
    };
    number(current, "min") == Some(min)
        && number(current, "max") == Some(max)
        && number(current, "desired").is_some_and(|d| (min..=max).contains(&d))
}

/// The attributes that identify an object of a type that carries no tags (a route is its table
/// and destination, a rule its group, direction, protocol, ports and peer, an association its
/// subnet): such an object cannot be found by its ownership tags, so an interrupted create is
/// settled, and an unrecorded member matched to a declared resource, by these attributes.
const NATURAL_KEYS: &[(&str, &[&str])] = &[
    (
        "aws.ec2.route",
        &["route_table_id", "destination_cidr_block"],
    ),
    ("aws.ec2.route_table_association", &["subnet_id"]),
    (
        "aws.ec2.security_group_rule",
        &[
            "security_group_id",
            "direction",
            "protocol",
            "from_port",
            "to_port",
            "source_security_group_id",
            "cidr_blocks",
        ],
    ),
];

/// The natural key of a tag-less type (see [`NATURAL_KEYS`]); `None` for the others.
pub fn natural_key(resource_type: &ResourceType) -> Option<&'static [&'static str]> {
    NATURAL_KEYS
        .iter()
        .find(|(kind, _)| *kind == resource_type.as_str())
        .map(|(_, key)| *key)
}

/// Whether two objects of a tag-less type are the same cloud object: every attribute of its
/// natural key is equal, an absent attribute counting as `null` or an empty list. `value_of`
/// reads an attribute of each side (`None`: absent; `Some(None)`: not known yet, never equal).
pub fn same_natural_key<'a>(
    resource_type: &ResourceType,
    left: impl Fn(&str) -> Option<Option<&'a Value>>,
    right: impl Fn(&str) -> Option<Option<&'a Value>>,
) -> bool {
    let Some(key) = natural_key(resource_type) else {
        return false;
    };
    let normal = |v: Option<Option<&'a Value>>| -> Option<Option<&'a Value>> {
        match v {
            None => Some(None),
            Some(Some(Value::Null)) => Some(None),
            Some(Some(Value::Array(a))) if a.is_empty() => Some(None),
            Some(Some(v)) => Some(Some(v)),
            Some(None) => None,
        }
    };
    key.iter()
        .all(|name| match (normal(left(name)), normal(right(name))) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        })
}

/// `16.6` against `16.4`: true; `17.1` against `16.4` (another major) or `16.2`: false.
fn same_major_at_least(wanted: &str, current: &str) -> bool {
    let parse = |v: &str| -> Option<Vec<u64>> { v.split('.').map(|p| p.parse().ok()).collect() };
    match (parse(wanted), parse(current)) {
        (Some(w), Some(c)) if !w.is_empty() && w.first() == c.first() => c >= w,
        _ => false,
    }
}

/// How a replacement proceeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplacementOrder {
    /// Create the new resource, repoint dependents, then delete the old one (no downtime; needs
    /// names that may coexist).
    CreateBeforeDelete,
    /// Delete the old resource first (unique names, CIDRs that cannot overlap).
    DeleteBeforeCreate,
}

impl ReplacementOrder {
    pub fn describe(self) -> &'static str {
        match self {
            Self::CreateBeforeDelete => "create before delete",
            Self::DeleteBeforeCreate => "delete before create",
        }
    }
}

/// The static description of one resource type.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeSpec {
    pub name: ResourceType,
    /// Attributes whose change forces a replacement, with the reason shown in the plan.
    pub forces_replacement: Vec<(&'static str, &'static str)>,
    pub replacement_order: ReplacementOrder,
    /// Typical create time, used for the critical path.
    pub estimated_duration: Duration,
}

impl TypeSpec {
    pub fn replacement_reason(&self, attribute: &str) -> Option<&'static str> {
        self.forces_replacement
            .iter()
            .find(|(name, _)| *name == attribute)
            .map(|(_, reason)| *reason)
    }
}

/// A built-in type: name, replacement order, estimate, forcing attributes with reasons.
type BuiltinEntry = (
    &'static str,
    ReplacementOrder,
    Duration,
    Vec<(&'static str, &'static str)>,
);

/// Every known type, keyed by name. Unknown types get [`TypeCatalog::fallback`].
#[derive(Debug, Clone)]
pub struct TypeCatalog {
    specs: HashMap<ResourceType, TypeSpec>,
}

impl TypeCatalog {
    pub fn empty() -> Self {
        Self {
            specs: HashMap::new(),
        }
    }

    pub fn insert(&mut self, spec: TypeSpec) {
        self.specs.insert(spec.name.clone(), spec);
    }

    /// The spec of a type; a type nobody described replaces on no attribute, creates before it
    /// deletes and is estimated at ten seconds.
    pub fn spec(&self, resource_type: &ResourceType) -> TypeSpec {
        self.specs
            .get(resource_type)
            .cloned()
            .unwrap_or_else(|| Self::fallback(resource_type))
    }

    pub fn fallback(resource_type: &ResourceType) -> TypeSpec {
        TypeSpec {
            name: resource_type.clone(),
            forces_replacement: Vec::new(),
            replacement_order: ReplacementOrder::CreateBeforeDelete,
            estimated_duration: Duration::from_secs(10),
        }
    }

    /// The AWS types Stacksmith provisions, with the replacement rules of the AWS APIs.
    pub fn builtin() -> Self {
        use ReplacementOrder::{CreateBeforeDelete as Cbd, DeleteBeforeCreate as Dbc};
        let secs = Duration::from_secs;
        let mins = |m: u64| Duration::from_secs(m * 60);
        let entries: Vec<BuiltinEntry> = vec![
            (
                "aws.ec2.vpc",
                Cbd,
                secs(5),
                vec![("cidr_block", "a VPC's primary CIDR block cannot be changed")],
            ),
            (
                "aws.ec2.subnet",
                Dbc,
                secs(5),
                vec![
                    ("vpc_id", "a subnet cannot move to another VPC"),
                    ("cidr_block", "a subnet's CIDR block cannot be changed"),
                    (
                        "availability_zone",
                        "a subnet cannot move to another availability zone",
                    ),
                ],
            ),
            (
                "aws.ec2.internet_gateway",
                Cbd,
                secs(5),
                vec![("vpc_id", "the gateway is re-attached by creating a new one")],
            ),
            (
                "aws.ec2.eip",
                Cbd,
                secs(3),
                vec![("domain", "an address's domain is fixed")],
            ),
            (
                "aws.ec2.nat_gateway",
                Cbd,
                mins(2),
                vec![
                    ("subnet_id", "a NAT gateway cannot move to another subnet"),
                    (
                        "allocation_id",
                        "a NAT gateway's Elastic IP cannot be swapped",
                    ),
                    (
                        "connectivity_type",
                        "connectivity type is fixed at creation",
                    ),
                ],
            ),
            (
                "aws.ec2.route_table",
                Cbd,
                secs(3),
                vec![("vpc_id", "a route table cannot move to another VPC")],
            ),
            (
                "aws.ec2.route",
                Dbc,
                secs(2),
                vec![
                    ("route_table_id", "a route belongs to one route table"),
                    (
                        "destination_cidr_block",
                        "a route's destination identifies it",
                    ),
                ],
            ),
            (
                "aws.ec2.route_table_association",
                Dbc,
                secs(2),
                vec![("subnet_id", "an association is keyed by its subnet")],
            ),
            (
                "aws.ec2.security_group",
                Cbd,
                secs(4),
                vec![
                    ("vpc_id", "a security group cannot move to another VPC"),
                    ("name", "a security group cannot be renamed"),
                    ("description", "a security group's description is immutable"),
                ],
            ),
            (
                "aws.ec2.security_group_rule",
                Dbc,
                secs(2),
                vec![
                    ("security_group_id", "rules are immutable"),
                    ("direction", "rules are immutable"),
                    ("protocol", "rules are immutable"),
                    ("from_port", "rules are immutable"),
                    ("to_port", "rules are immutable"),
                    ("cidr_blocks", "rules are immutable"),
                    ("source_security_group_id", "rules are immutable"),
                ],
            ),
            (
                "aws.logs.log_group",
                Dbc,
                secs(2),
                vec![("name", "a log group cannot be renamed")],
            ),
            (
                "aws.ec2.flow_log",
                Dbc,
                secs(3),
                vec![
                    ("vpc_id", "a flow log is bound to its VPC"),
                    ("traffic_type", "a flow log's traffic type is fixed"),
                    ("log_group_name", "a flow log's destination is fixed"),
                ],
            ),
            (
                "aws.iam.role",
                Dbc,
                secs(3),
                vec![("name", "an IAM role cannot be renamed")],
            ),
            (
                "aws.iam.oidc_provider",
                Dbc,
                secs(3),
                vec![("url", "an OIDC provider is keyed by its issuer URL")],
            ),
            (
                "aws.iam.role_policy_attachment",
                Dbc,
                secs(2),
                vec![
                    ("role", "an attachment is keyed by role and policy"),
                    ("policy_arn", "an attachment is keyed by role and policy"),
                ],
            ),
            (
                "aws.iam.role_policy",
                Dbc,
                secs(2),
                vec![
                    ("role", "an inline policy belongs to one role"),
                    ("name", "an inline policy is keyed by role and name"),
                ],
            ),
            (
                "aws.eks.cluster",
                Dbc,
                mins(15),
                vec![
                    ("name", "an EKS cluster cannot be renamed"),
                    (
                        "role_arn",
                        "an EKS cluster's service role is fixed at creation",
                    ),
                    (
                        "subnet_ids",
                        "an EKS cluster's subnets are fixed at creation",
                    ),
                    (
                        "service_cidr",
                        "an EKS cluster's service CIDR is fixed at creation",
                    ),
                ],
            ),
            (
                "aws.eks.node_group",
                Dbc,
                mins(5),
                vec![
                    ("cluster_name", "a node group belongs to one cluster"),
                    ("node_group_name", "a node group cannot be renamed"),
                    (
                        "instance_types",
                        "a managed node group's instance types are fixed at creation",
                    ),
                    (
                        "capacity_type",
                        "a managed node group's capacity type is fixed at creation",
                    ),
                    (
                        "disk_size",
                        "a managed node group's disk size is fixed at creation",
                    ),
                    (
                        "subnet_ids",
                        "a managed node group's subnets are fixed at creation",
                    ),
                    (
                        "ami_type",
                        "a managed node group's AMI type is fixed at creation",
                    ),
                ],
            ),
            (
                "aws.eks.access_entry",
                Dbc,
                secs(5),
                vec![
                    ("cluster_name", "an access entry belongs to one cluster"),
                    ("principal_arn", "an access entry is keyed by its principal"),
                ],
            ),
            (
                "aws.eks.addon",
                Dbc,
                mins(1),
                vec![
                    ("cluster_name", "an add-on belongs to one cluster"),
                    ("addon_name", "an add-on is keyed by its name"),
                ],
            ),
            (
                "aws.rds.db_subnet_group",
                Dbc,
                secs(3),
                vec![("name", "a DB subnet group cannot be renamed")],
            ),
            (
                // Named after its family (`<db>-postgres16`): a major upgrade creates the new
                // family's group, moves the instance in the same ModifyDBInstance as the engine
                // version, then deletes the old group (which RDS refuses while it is in use).
                "aws.rds.db_parameter_group",
                Cbd,
                secs(3),
                vec![
                    ("name", "a DB parameter group cannot be renamed"),
                    ("family", "a DB parameter group's family is fixed"),
                ],
            ),
            (
                "aws.rds.instance",
                Dbc,
                mins(15),
                vec![
                    (
                        "identifier",
                        "an RDS identifier change is a new instance here",
                    ),
                    ("engine", "an RDS instance cannot change engine"),
                    (
                        "db_subnet_group_name",
                        "moving an RDS instance to another subnet group needs a new instance",
                    ),
                    (
                        "storage_encrypted",
                        "encryption at rest is fixed at creation",
                    ),
                ],
            ),
            (
                "aws.elasticache.subnet_group",
                Dbc,
                secs(3),
                vec![("name", "a cache subnet group cannot be renamed")],
            ),
            (
                "aws.elasticache.replication_group",
                Dbc,
                mins(40),
                vec![
                    (
                        "replication_group_id",
                        "a replication group cannot be renamed",
                    ),
                    (
                        "at_rest_encryption_enabled",
                        "encryption at rest is fixed at creation",
                    ),
                    (
                        "subnet_group_name",
                        "a replication group's subnet group is fixed at creation",
                    ),
                ],
            ),
        ];
        let mut catalog = Self::empty();
        for (name, order, duration, forces) in entries {
            catalog.insert(TypeSpec {
                name: ResourceType::new(name),
                forces_replacement: forces,
                replacement_order: order,
                estimated_duration: duration,
            });
        }
        catalog
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_autoscaled_node_group_size_within_its_bounds_satisfies_the_stack() {
        let group = ResourceType::new("aws.eks.node_group");
        let wanted = serde_json::json!({ "min": 1, "desired": 2, "max": 5, "autoscaled": true });
        let live = |min: u64, desired: u64, max: u64| serde_json::json!({ "min": min, "desired": desired, "max": max });
        assert!(satisfies(&group, "scaling", &wanted, &live(1, 4, 5)));
        assert!(satisfies(&group, "scaling", &wanted, &live(1, 1, 5)));
        assert!(!satisfies(&group, "scaling", &wanted, &live(1, 6, 5)));
        assert!(!satisfies(&group, "scaling", &wanted, &live(2, 4, 5)));
        assert!(!satisfies(&group, "scaling", &wanted, &live(1, 4, 6)));
        // Without the autoscaler the stack's size is the size.
        let fixed = serde_json::json!({ "min": 1, "desired": 2, "max": 5 });
        assert!(!satisfies(&group, "scaling", &fixed, &live(1, 4, 5)));
        assert!(satisfies(&group, "scaling", &fixed, &live(1, 2, 5)));
    }

    #[test]
    fn an_automatic_minor_upgrade_satisfies_the_older_version_of_the_same_major() {
        let rds = ResourceType::new("aws.rds.instance");
        let version = |wanted: &str, current: &str| {
            satisfies(&rds, "engine_version", &json!(wanted), &json!(current))
        };
        assert!(version("16.4", "16.4"));
        assert!(version("16.4", "16.6"));
        assert!(version("16.4", "16.10"), "compared by numbers, not text");
        assert!(
            !version("16.6", "16.4"),
            "an older live version is a change"
        );
        assert!(
            !version("16.4", "17.1"),
            "another major version is a change"
        );
        assert!(!version("17.2", "16.4"));
        // Only the declared attributes of the declared types.
        assert!(!satisfies(
            &rds,
            "instance_class",
            &json!("16.4"),
            &json!("16.6")
        ));
        let cache = ResourceType::new("aws.elasticache.replication_group");
        assert!(!satisfies(
            &cache,
            "engine_version",
            &json!("7.0"),
            &json!("7.1")
        ));
    }
}
