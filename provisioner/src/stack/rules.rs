//! Rules that span several fields (subnets inside the VPC, scaling bounds, names after instance
//! suffixes...), checked on the typed stack once its shape is right. Each error points at the
//! field to change, found again in the merged tree.

use std::collections::HashMap;

use super::error::StackError;
use super::model::{AmiType, Architecture, AvailabilityZones, Cidr, NatMode, Stack, StateBackend};
use super::naming::{self, NameSource, Names};
use super::source::Location;
use super::yaml::{Node, PathSegment};

/// A path into the stack, written `path!["network", "private_subnets", 1]`.
macro_rules! path {
    ($($segment:expr),* $(,)?) => { [$(PathSegment::from($segment)),*] };
}

impl From<&str> for PathSegment {
    fn from(key: &str) -> Self {
        PathSegment::Key(key.to_owned())
    }
}

impl From<&String> for PathSegment {
    fn from(key: &String) -> Self {
        PathSegment::Key(key.clone())
    }
}

impl From<usize> for PathSegment {
    fn from(index: usize) -> Self {
        PathSegment::Index(index)
    }
}

struct Rules<'a> {
    root: &'a Node,
    errors: Vec<StackError>,
}

impl Rules<'_> {
    /// Where a value is written; falls back to its key, then to the file's start.
    fn at(&self, path: &[PathSegment]) -> Location {
        self.root
            .at(path)
            .map(|n| n.location)
            .or_else(|| self.root.key_location_at(path))
            .unwrap_or_else(|| self.root.location.sub(0, 0))
    }

    /// Where the key of a value is written.
    fn key_at(&self, path: &[PathSegment]) -> Location {
        self.root
            .key_location_at(path)
            .unwrap_or_else(|| self.at(path))
    }

    fn push(&mut self, error: StackError) {
        self.errors.push(error);
    }
}

/// Checks every cross-field rule of a well-formed stack. `instance` is the instance being
/// validated; for a template without one, names are checked with the longest instance allowed.
pub fn check(stack: &Stack, root: &Node, instance: Option<&str>) -> Vec<StackError> {
    let mut rules = Rules {
        root,
        errors: Vec::new(),
    };
    network(stack, &mut rules);
    cluster(stack, &mut rules);
    cluster_access(stack, &mut rules);
    engines(stack, &mut rules);
    baseline_and_controlplane(stack, &mut rules);
    state(stack, &mut rules);
    names(stack, instance, &mut rules);
    rules.errors
}

fn network(stack: &Stack, rules: &mut Rules<'_>) {
    let network = &stack.network;
    let vpc = network.cidr.0;
    let azs = network.azs.names(&stack.region);
    if !(16..=28).contains(&vpc.prefix_len()) {
        rules.push(
            StackError::new(
                "stack::network::vpc_size",
                Some(rules.at(&path!["network", "cidr"])),
                format!(
                    "a VPC's CIDR block must be between /16 and /28, not /{}",
                    vpc.prefix_len()
                ),
            )
            .label("outside /16../28")
            .help("use e.g. `cidr: 10.0.0.0/16`"),
        );
    }
    if let AvailabilityZones::Names(names) = &network.azs {
        for (i, az) in names.iter().enumerate() {
            let in_region = az
                .strip_prefix(stack.region.as_str())
                .is_some_and(|s| s.len() == 1 && s.chars().all(|c| c.is_ascii_lowercase()));
            if !in_region {
                rules.push(
                    StackError::new(
                        "stack::network::az_region",
                        Some(rules.at(&path!["network", "azs", i])),
                        format!("`{az}` is not an availability zone of {}", stack.region),
                    )
                    .label("not in the stack's region")
                    .help(format!(
                        "zones of {} are named `{}a`, `{}b`, ...",
                        stack.region, stack.region, stack.region
                    )),
                );
            }
        }
    }
    if azs.len() < 2 {
        rules.push(
            StackError::new(
                "stack::network::too_few_azs",
                Some(rules.at(&path!["network", "azs"])),
                "EKS needs subnets in at least two availability zones",
            )
            .label(format!("{} zone", azs.len()))
            .help("use `azs: 2` or more"),
        );
    }
    let azs_location = rules.at(&path!["network", "azs"]);
    let count_rule = |rules: &mut Rules<'_>, key: &str, subnets: &[Cidr], optional: bool| {
        if subnets.len() != azs.len() && !(optional && subnets.is_empty()) {
            rules.push(
                StackError::new(
                    "stack::network::subnets_per_az",
                    Some(rules.at(&path!["network", key])),
                    format!(
                        "{} availability zones need {} {key} (one per AZ), found {}",
                        azs.len(),
                        azs.len(),
                        subnets.len()
                    ),
                )
                .label("one per AZ")
                .related(azs_location, format!("{} availability zones", azs.len()))
                .help(format!(
                    "list exactly {} CIDR blocks, one for each of {}",
                    azs.len(),
                    azs.join(", ")
                )),
            );
        }
    };
    count_rule(rules, "public_subnets", &network.public_subnets, true);
    count_rule(rules, "private_subnets", &network.private_subnets, false);
    if network.nat != NatMode::None && network.public_subnets.is_empty() {
        let mode = match network.nat {
            NatMode::PerAz => "per-az",
            _ => "single",
        };
        rules.push(
            StackError::new("stack::network::nat_needs_public_subnets", Some(rules.at(&path!["network", "nat"])), format!("`nat: {mode}` needs public subnets for its NAT gateways, and `network.public_subnets` is empty"))
                .label("NAT gateways live in public subnets")
                .help(format!("add `public_subnets:` with one CIDR per AZ ({}), or write `nat: none`", azs.len())),
        );
    }
    let vpc_location = rules.at(&path!["network", "cidr"]);
    let mut seen: Vec<(Cidr, Vec<PathSegment>)> = Vec::new();
    for key in ["public_subnets", "private_subnets"] {
        let subnets = if key == "public_subnets" {
            &network.public_subnets
        } else {
            &network.private_subnets
        };
        for (i, subnet) in subnets.iter().enumerate() {
            let here = path!["network", key, i];
            let location = rules.at(&here);
            if !vpc.contains(&subnet.0) {
                rules.push(
                    StackError::new(
                        "stack::network::subnet_outside_vpc",
                        Some(location),
                        format!("subnet {subnet} lies outside the VPC's {vpc}"),
                    )
                    .label("not inside network.cidr")
                    .related(vpc_location, "the VPC's block")
                    .help(format!(
                        "pick a block inside {vpc}, e.g. {}",
                        example_subnet(vpc, subnet.0.prefix_len())
                    )),
                );
            } else if !(16..=28).contains(&subnet.0.prefix_len()) {
                rules.push(
                    StackError::new(
                        "stack::network::subnet_size",
                        Some(location),
                        format!(
                            "a subnet must be between /16 and /28, not /{}",
                            subnet.0.prefix_len()
                        ),
                    )
                    .label("outside /16../28")
                    .help("use e.g. a /24"),
                );
            }
            if let Some((other, other_path)) = seen.iter().find(|(other, _)| {
                other.0.contains(&subnet.0.network()) || subnet.0.contains(&other.0.network())
            }) {
                let other_location = rules.at(other_path);
                rules.push(
                    StackError::new(
                        "stack::network::subnets_overlap",
                        Some(location),
                        format!(
                            "subnet {subnet} overlaps {other} ({})",
                            super::schema::display_path(other_path)
                        ),
                    )
                    .label("overlaps another subnet")
                    .related(other_location, "the other subnet")
                    .help("give every subnet its own block: no address may belong to two subnets"),
                );
            }
            seen.push((*subnet, here.to_vec()));
        }
    }
}

/// EKS's rules for `serviceIpv4Cidr` (CreateCluster): a private block, /12 to /24, apart from
/// the VPC.
fn service_cidr(stack: &Stack, rules: &mut Rules<'_>) {
    let services = stack.cluster.service_cidr.0;
    let vpc = stack.network.cidr.0;
    let private = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
        .iter()
        .filter_map(|block| block.parse::<ipnet::Ipv4Net>().ok())
        .any(|block| block.contains(&services));
    let location = rules.at(&path!["cluster", "service_cidr"]);
    let problem = if !private {
        Some((
            format!(
                "the service CIDR {services} is not inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16"
            ),
            "not a private block",
        ))
    } else if !(12..=24).contains(&services.prefix_len()) {
        Some((
            format!(
                "the service CIDR must be between /12 and /24, not /{}",
                services.prefix_len()
            ),
            "outside /12../24",
        ))
    } else if services.contains(&vpc.network()) || vpc.contains(&services.network()) {
        Some((
            format!("the service CIDR {services} overlaps the VPC's {vpc}"),
            "overlaps network.cidr",
        ))
    } else {
        None
    };
    if let Some((message, label)) = problem {
        rules.push(
            StackError::new("stack::cluster::service_cidr", Some(location), message)
                .label(label)
                .help("EKS takes Services' ClusterIPs from a private /12../24 block apart from the VPC, e.g. `service_cidr: 172.20.0.0/16` (10.100.0.0/16 for a VPC in 172.16.0.0/12)"),
        );
    }
}

fn example_subnet(vpc: ipnet::Ipv4Net, prefix: u8) -> String {
    vpc.subnets(prefix.max(vpc.prefix_len()))
        .ok()
        .and_then(|mut s| s.next())
        .map_or_else(|| vpc.to_string(), |n| n.to_string())
}

fn cluster(stack: &Stack, rules: &mut Rules<'_>) {
    let cluster = &stack.cluster;
    service_cidr(stack, rules);
    if !cluster.endpoint.public && !cluster.endpoint.private {
        rules.push(
            StackError::new(
                "stack::cluster::no_endpoint",
                Some(rules.key_at(&path!["cluster", "endpoint"])),
                "the cluster endpoint must be public, private or both",
            )
            .label("both are off")
            .help("set `private: true` (reachable from the VPC) or `public: true`"),
        );
    }
    if !cluster.endpoint.public && !cluster.endpoint.public_cidrs.is_empty() {
        rules.push(
            StackError::new(
                "stack::cluster::public_cidrs_without_public",
                Some(rules.at(&path!["cluster", "endpoint", "public_cidrs"])),
                "`public_cidrs` restrict a public endpoint, but `public` is false",
            )
            .label("has no effect")
            .help("remove `public_cidrs`, or set `public: true`"),
        );
    }
    if cluster.node_groups.is_empty() {
        rules.push(
            StackError::new("stack::cluster::no_node_groups", Some(rules.at(&path!["cluster", "node_groups"])), "the cluster has no node groups, so nothing can run on it")
                .label("empty")
                .help("add one, e.g. `workers: { instance_types: [m5.large], scaling: { min: 1, desired: 2, max: 3 } }`"),
        );
    }
    for (name, group) in &cluster.node_groups {
        let base = path!["cluster", "node_groups", name];
        if !is_resource_name(name, 63) {
            rules.push(
                StackError::new(
                    "stack::cluster::node_group_name",
                    Some(rules.key_at(&base)),
                    format!("`{name}` is not a valid node group name"),
                )
                .label("invalid name")
                .help("use up to 63 letters, digits, `-` and `_`, starting with a letter or digit"),
            );
        }
        let scaling = group.scaling;
        let scaling_path = |field: &str| {
            let mut p = base.to_vec();
            p.extend(path!["scaling", field]);
            p
        };
        if scaling.min > scaling.max {
            rules.push(
                StackError::new("stack::cluster::scaling_bounds", Some(rules.at(&scaling_path("min"))), format!("node group `{name}`: `scaling.min` ({}) is greater than `scaling.max` ({})", scaling.min, scaling.max))
                    .label("min > max")
                    .related(rules.at(&scaling_path("max")), "max")
                    .help("scaling must satisfy min <= desired <= max"),
            );
        } else if !(scaling.min..=scaling.max).contains(&scaling.desired) {
            rules.push(
                StackError::new(
                    "stack::cluster::scaling_bounds",
                    Some(rules.at(&scaling_path("desired"))),
                    format!(
                        "node group `{name}`: `scaling.desired` ({}) is outside min..max ({}..{})",
                        scaling.desired, scaling.min, scaling.max
                    ),
                )
                .label("not between min and max")
                .help("scaling must satisfy min <= desired <= max"),
            );
        }
        let types_path = {
            let mut p = base.to_vec();
            p.extend(path!["instance_types"]);
            p
        };
        let architectures: Vec<(usize, Architecture)> = group
            .instance_types
            .iter()
            .map(|t| Architecture::of_instance_type(t))
            .enumerate()
            .collect();
        if let Some((i, other)) = architectures
            .iter()
            .find(|(_, a)| Some(a) != architectures.first().map(|(_, a)| a))
        {
            let mut at = types_path.clone();
            at.push(PathSegment::Index(*i));
            rules.push(
                StackError::new(
                    "stack::cluster::mixed_architectures",
                    Some(rules.at(&at)),
                    format!(
                        "node group `{name}` mixes architectures: `{}` is {} but `{}` is {}",
                        group.instance_types[*i],
                        other.name(),
                        group.instance_types[0],
                        architectures[0].1.name()
                    ),
                )
                .label("another architecture")
                .related(rules.at(&types_path), "the group's instance types")
                .help("one AMI serves a node group: list instance types of one architecture, or split the group"),
            );
        } else if let (Some(ami), Some((_, arch))) = (group.ami_type, architectures.first())
            && ami.architecture() != *arch
        {
            let mut at = base.to_vec();
            at.extend(path!["ami_type"]);
            rules.push(
                StackError::new(
                    "stack::cluster::ami_architecture",
                    Some(rules.at(&at)),
                    format!(
                        "node group `{name}`: `{}` is an {} AMI but its instance types are {}",
                        ami.as_str(),
                        ami.architecture().name(),
                        arch.name()
                    ),
                )
                .label("wrong architecture")
                .related(rules.at(&types_path), "the instance types")
                .help(format!(
                    "remove `ami_type` to get `{}`, or pick an AMI type of the same architecture",
                    AmiType::for_instance_types(&group.instance_types).as_str()
                )),
            );
        }
        for (i, taint) in group.taints.iter().enumerate() {
            if taint.key.trim().is_empty() {
                let mut p = base.to_vec();
                p.extend(path!["taints", i, "key"]);
                rules.push(
                    StackError::new(
                        "stack::cluster::taint_key",
                        Some(rules.at(&p)),
                        "a taint needs a key",
                    )
                    .label("empty key")
                    .help("e.g. `key: node-role.kubernetes.io/system`"),
                );
            }
        }
    }
}

fn cluster_access(stack: &Stack, rules: &mut Rules<'_>) {
    let partition = stack.partition();
    let admins = &stack.cluster.access.admins;
    for (i, admin) in admins.iter().enumerate() {
        let here = path!["cluster", "access", "admins", i];
        let arn_partition = admin.0.split(':').nth(1).unwrap_or_default();
        if arn_partition != partition {
            rules.push(
                StackError::new(
                    "stack::cluster::admin_partition",
                    Some(rules.at(&here)),
                    format!(
                        "`{}` is in the `{arn_partition}` partition, but {} is in `{partition}`",
                        admin.0, stack.region
                    ),
                )
                .label("another partition")
                .help(format!("write the ARN as `arn:{partition}:iam::...`")),
            );
        }
        if let Some(first) = admins[..i].iter().position(|other| other == admin) {
            let first_location = rules.at(&path!["cluster", "access", "admins", first]);
            rules.push(
                StackError::new(
                    "stack::cluster::duplicate_admin",
                    Some(rules.at(&here)),
                    format!("`{}` is listed twice", admin.0),
                )
                .label("duplicate")
                .related(first_location, "first listed here")
                .help("list each administrator once"),
            );
        }
    }
}

fn engines(stack: &Stack, rules: &mut Rules<'_>) {
    let major = |version: &str| {
        version
            .split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok())
            .unwrap_or(0)
    };
    if let Some(database) = &stack.database
        && !(12..=17).contains(&major(&database.engine_version))
    {
        rules.push(
            StackError::new(
                "stack::database::engine_version",
                Some(rules.at(&path!["database", "engine_version"])),
                format!(
                    "RDS offers PostgreSQL 12 to 17, not {}",
                    database.engine_version
                ),
            )
            .label("unsupported major version")
            .help("use e.g. `engine_version: \"16.4\"`"),
        );
    }
    if let Some(cache) = &stack.cache
        && !(6..=7).contains(&major(&cache.engine_version))
    {
        rules.push(
            StackError::new(
                "stack::cache::engine_version",
                Some(rules.at(&path!["cache", "engine_version"])),
                format!(
                    "ElastiCache offers Redis 6 and 7, not {}",
                    cache.engine_version
                ),
            )
            .label("unsupported major version")
            .help("use e.g. `engine_version: \"7.1\"`"),
        );
    }
}

fn baseline_and_controlplane(stack: &Stack, rules: &mut Rules<'_>) {
    let namespaces: Vec<String> = stack
        .baseline
        .as_ref()
        .map(|b| b.namespaces.clone())
        .unwrap_or_default();
    if let Some(baseline) = &stack.baseline {
        let mut first_seen: HashMap<&str, usize> = HashMap::new();
        for (i, namespace) in baseline.namespaces.iter().enumerate() {
            let location = rules.at(&path!["baseline", "namespaces", i]);
            if !is_dns_label(namespace) {
                rules.push(
                    StackError::new("stack::baseline::namespace_name", Some(location), format!("`{namespace}` is not a valid namespace name"))
                        .label("invalid name")
                        .help("use up to 63 lowercase letters, digits and `-`, starting and ending with a letter or digit"),
                );
            }
            if let Some(first) = first_seen.insert(namespace, i) {
                rules.push(
                    StackError::new(
                        "stack::baseline::duplicate_namespace",
                        Some(location),
                        format!("namespace `{namespace}` is listed twice"),
                    )
                    .label("again here")
                    .related(
                        rules.at(&path!["baseline", "namespaces", first]),
                        "first here",
                    )
                    .help("remove one of them"),
                );
            }
        }
        for (field, keys) in [
            (
                "pod_security",
                baseline.pod_security.keys().collect::<Vec<_>>(),
            ),
            ("quotas", baseline.quotas.keys().collect()),
        ] {
            for key in keys {
                if !namespaces.contains(key) {
                    rules.push(unknown_reference(
                        rules,
                        &path!["baseline", field, key],
                        "namespace",
                        key,
                        &namespaces,
                        "baseline.namespaces",
                    ));
                }
            }
        }
    }
    let Some(controlplane) = &stack.controlplane else {
        return;
    };
    if let Some(autoscaling) = controlplane.autoscaling
        && autoscaling.min > autoscaling.max
    {
        rules.push(
            StackError::new(
                "stack::controlplane::autoscaling_bounds",
                Some(rules.at(&path!["controlplane", "autoscaling", "min"])),
                format!(
                    "`autoscaling.min` ({}) is greater than `autoscaling.max` ({})",
                    autoscaling.min, autoscaling.max
                ),
            )
            .label("min > max")
            .help("autoscaling must satisfy min <= max"),
        );
    }
    if let Some(limit) = controlplane.rate_limit {
        if limit.burst < limit.per_key_rps {
            rules.push(
                StackError::new(
                    "stack::controlplane::burst",
                    Some(rules.at(&path!["controlplane", "rate_limit", "burst"])),
                    format!(
                        "`burst` ({}) is below `per_key_rps` ({}): a key could never use its rate",
                        limit.burst, limit.per_key_rps
                    ),
                )
                .label("too small")
                .help(format!("use `burst: {}` or more", limit.per_key_rps)),
            );
        }
        if limit.global_rps < limit.per_key_rps {
            rules.push(
                StackError::new(
                    "stack::controlplane::global_rate",
                    Some(rules.at(&path!["controlplane", "rate_limit", "global_rps"])),
                    format!(
                        "`global_rps` ({}) is below `per_key_rps` ({})",
                        limit.global_rps, limit.per_key_rps
                    ),
                )
                .label("below the per-key rate")
                .help(format!("use `global_rps: {}` or more", limit.per_key_rps)),
            );
        }
    }
    if stack.baseline.is_some() {
        for (field, namespace) in [
            ("namespace", &controlplane.namespace),
            ("worker_namespace", &controlplane.worker_namespace),
        ] {
            if !namespaces.contains(namespace) {
                rules.push(unknown_reference(
                    rules,
                    &path!["controlplane", field],
                    "namespace",
                    namespace,
                    &namespaces,
                    "baseline.namespaces",
                ));
            }
        }
    }
    let tiers: Vec<String> = stack
        .baseline
        .as_ref()
        .map(|b| b.priority_classes.keys().cloned().collect())
        .unwrap_or_default();
    for (name, pool) in &controlplane.worker_pools {
        let base = path!["controlplane", "worker_pools", name];
        if !is_dns_label(name) {
            rules.push(
                StackError::new("stack::controlplane::pool_name", Some(rules.key_at(&base)), format!("`{name}` is not a valid worker pool name (it names a Deployment)"))
                    .label("invalid name")
                    .help("use lowercase letters, digits and `-`, starting and ending with a letter or digit"),
            );
        }
        if !tiers.contains(&pool.tier) {
            let mut p = base.to_vec();
            p.push(PathSegment::from("tier"));
            rules.push(unknown_reference(
                rules,
                &p,
                "tier",
                &pool.tier,
                &tiers,
                "baseline.priority_classes",
            ));
        }
        if pool.replicas.min > pool.replicas.max {
            let mut p = base.to_vec();
            p.extend(path!["replicas", "min"]);
            rules.push(
                StackError::new("stack::controlplane::replica_bounds", Some(rules.at(&p)), format!("worker pool `{name}`: `replicas.min` ({}) is greater than `replicas.max` ({})", pool.replicas.min, pool.replicas.max))
                    .label("min > max")
                    .help("replicas must satisfy min <= max"),
            );
        }
    }
}

fn unknown_reference(
    rules: &Rules<'_>,
    path: &[PathSegment],
    what: &str,
    name: &str,
    known: &[String],
    list: &str,
) -> StackError {
    let location = match path.last() {
        Some(PathSegment::Key(k))
            if !["tier", "namespace", "worker_namespace"].contains(&k.as_str()) =>
        {
            rules.key_at(path)
        }
        _ => rules.at(path),
    };
    let help = match super::schema::nearest(name, known) {
        Some(best) => format!("did you mean `{best}`? Known: {}", known.join(", ")),
        None if known.is_empty() => format!("`{list}` is empty: add `{name}` there first"),
        None => format!(
            "add `{name}` to `{list}`, or use one of: {}",
            known.join(", ")
        ),
    };
    StackError::new(
        "stack::unknown_reference",
        Some(location),
        format!("{what} `{name}` is not defined in `{list}`"),
    )
    .label(format!("unknown {what}"))
    .help(help)
}

fn state(stack: &Stack, rules: &mut Rules<'_>) {
    if stack.state.backend == StateBackend::Postgres
        && stack.state.url.as_deref().is_none_or(str::is_empty)
    {
        rules.push(
            StackError::new(
                "stack::state::postgres_url",
                Some(rules.at(&path!["state", "backend"])),
                "the postgres state backend needs `state.url`",
            )
            .label("no url")
            .help("add e.g. `url: ${env:STACKSMITH_STATE_URL}`"),
        );
    }
}

fn names(stack: &Stack, instance: Option<&str>, rules: &mut Rules<'_>) {
    let template = stack.instances.as_ref().filter(|i| i.allowed);
    let placeholder;
    let (instance, hypothetical) = match (instance, template) {
        (Some(i), _) => (Some(i), false),
        (None, Some(t)) => {
            placeholder = "x".repeat(usize::from(t.max_name_length));
            (Some(placeholder.as_str()), true)
        }
        (None, None) => (None, false),
    };
    let names = Names::new(stack, instance);
    for violation in naming::violations(&names, stack.database.is_some(), stack.cache.is_some()) {
        let (field, path) = match violation.source {
            NameSource::StackName => ("name", path!["name"].to_vec()),
            NameSource::ClusterName => ("cluster.name", path!["cluster", "name"].to_vec()),
        };
        let context = match (instance, hypothetical) {
            (Some(_), true) => format!(
                " with an instance name of {} characters (the longest `instances.max_name_length` allows)",
                instance.map_or(0, str::len)
            ),
            (Some(i), false) => format!(" with instance `{i}`"),
            (None, _) => String::new(),
        };
        let help = match (violation.excess, hypothetical) {
            (Some(excess), true) => format!(
                "shorten `{field}` by {excess} characters, or lower `instances.max_name_length`"
            ),
            (Some(excess), false) => {
                format!("shorten `{field}` or the instance name by {excess} characters")
            }
            (None, _) => format!("change `{field}`"),
        };
        rules.push(
            StackError::new(
                "stack::name::aws_limit",
                Some(rules.at(&path)),
                format!(
                    "the {} `{}`{context} {}",
                    violation.what, violation.name, violation.rule
                ),
            )
            .label(format!("`{field}` makes the {}", violation.what))
            .help(help),
        );
    }
}

fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

fn is_resource_name(name: &str, limit: usize) -> bool {
    !name.is_empty()
        && name.len() <= limit
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}
