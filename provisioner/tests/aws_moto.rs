//! The `local` stack against moto, through the engine (planner + executor) and the AWS providers.
//!
//! * network and IAM: `up` creates every resource, each is checked with its own describe calls,
//!   a second `up` plans nothing and makes no mutating API call, a refresh shows no drift, a new
//!   stack tag is applied in place, and removing everything deletes it all;
//! * the whole platform (EKS, RDS, ElastiCache too; add-ons excluded: moto has no add-on API, see
//!   aws_mocks.rs): created and checked, a second `up` makes no mutating call, node group scaling
//!   and the RDS class change in place.
//!
//! Needs the moto server of `cargo xtask test` (STACKSMITH_TEST_AWS_ENDPOINT). Each test uses its
//! own instance, so its names and ownership tags are its own.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ec2::types::Filter;
use provisioner::aws::{self, AwsContext, AwsProvider, AwsTarget, CallLog, PollSettings};
use provisioner::engine::executor::{self, ExecutorOptions};
use provisioner::engine::plan::{ActionKind, Plan};
use provisioner::engine::planner::{self, PlanInput};
use provisioner::engine::provider::ProviderRegistry;
use provisioner::engine::refresh::read_live;
use provisioner::engine::secrets::{StateCipher, is_encrypted};
use provisioner::engine::{DesiredSet, ResourceType, desired};
use provisioner::stack::{LoadRequest, LoadedStack, StackSource};
use provisioner::state::StateBackend;
use provisioner::state::journal::Journal;
use provisioner::state::local::LocalBackend;

const TEST_BOUND: Duration = Duration::from_secs(240);

fn target() -> AwsTarget {
    AwsTarget {
        region: "us-east-1".into(),
        endpoint_url: Some(stacksmith_testkit::aws_endpoint()),
        profile: None,
        static_credentials: Some(("testing".into(), "testing".into())),
        poll: PollSettings {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            bound_scale: 0.05,
        },
        allow_deletion_protected: false,
        skip_final_db_snapshot: false,
    }
}

fn load_local(instance: &str) -> LoadedStack {
    let request = LoadRequest {
        source: StackSource::File(
            stacksmith_testkit::workspace_root().join("tests/fixtures/aws/local-instances.yaml"),
        ),
        instance: Some(instance.to_owned()),
    };
    provisioner::stack::load(&request)
        .and_then(|l| l.into_deployable())
        .unwrap_or_else(|e| panic!("the local stack does not load: {e:?}"))
}

/// The network and IAM resources.
fn network(loaded: &LoadedStack) -> DesiredSet {
    let mut set = desired::derive(loaded);
    set.resources.retain(|r| {
        let t = r.resource_type.as_str();
        let a = r.address.to_string();
        // IRSA needs the cluster's OIDC issuer: it belongs to the platform test.
        let irsa = a.starts_with("iam.oidc_provider") || a.ends_with("ebs_csi");
        // The database's and cache's rules admit the cluster security group EKS makes: they
        // belong to the platform test too.
        let from_cluster = a.ends_with("_from_cluster");
        !irsa
            && !from_cluster
            && (t.starts_with("aws.ec2.")
                || t.starts_with("aws.iam.")
                || t.starts_with("aws.logs."))
    });
    set
}

/// Everything but the EKS add-ons (moto answers 404 to the add-on APIs).
fn platform(loaded: &LoadedStack) -> DesiredSet {
    let mut set = desired::derive(loaded);
    set.resources
        .retain(|r| r.resource_type.as_str() != "aws.eks.addon");
    assert!(
        set.resources
            .iter()
            .all(|r| aws::TYPES.contains(&r.resource_type.as_str()))
    );
    set
}

fn unique_instance(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}{:x}{:x}", std::process::id() % 4096, nanos % 65536)
}

struct World {
    dir: PathBuf,
    stack: String,
    provider: Arc<AwsProvider>,
    registry: ProviderRegistry,
}

impl World {
    fn new(stack: &str) -> Self {
        let dir = std::env::temp_dir().join(stacksmith_testkit::unique_name("aws-network"));
        std::fs::create_dir_all(&dir).unwrap();
        let provider = Arc::new(AwsProvider::new(AwsContext::new(target())));
        let mut registry = ProviderRegistry::new();
        for name in aws::TYPES {
            registry.register(ResourceType::new(name), provider.clone());
        }
        Self {
            dir,
            stack: stack.to_owned(),
            provider,
            registry,
        }
    }

    fn backend(&self) -> Arc<dyn StateBackend> {
        Arc::new(LocalBackend::new(&self.dir.join("state"), "aws"))
    }

    fn calls(&self) -> Vec<String> {
        self.provider.context().log.calls()
    }

    async fn plan(&self, desired: &DesiredSet, refresh: bool) -> Plan {
        let journal = Journal::open(self.backend(), &self.stack, desired.instance.as_deref())
            .await
            .unwrap();
        let snapshot = journal.snapshot().await;
        let state = (snapshot.serial > 0).then_some(snapshot);
        let live = match (&state, refresh) {
            (Some(state), true) => Some(read_live(state, &self.registry, 8).await.unwrap()),
            _ => None,
        };
        planner::plan(&PlanInput {
            desired,
            state: state.as_ref(),
            live: live.as_ref(),
            catalog: &self.registry.catalog(),
        })
        .unwrap()
    }

    async fn up(&self, desired: &DesiredSet) -> Plan {
        let plan = self.plan(desired, false).await;
        let journal = Arc::new(
            Journal::open(self.backend(), &self.stack, desired.instance.as_deref())
                .await
                .unwrap(),
        );
        let options = ExecutorOptions {
            cipher: Some(StateCipher::from_passphrase("aws-moto-test")),
            ..ExecutorOptions::default()
        };
        let report = executor::apply(&plan, journal, &self.registry, options)
            .await
            .unwrap();
        assert!(report.succeeded(), "apply failed: {}", report.summary());
        plan
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn mutating(calls: &[String]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| CallLog::is_mutating(c))
        .cloned()
        .collect()
}

async fn ec2() -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::new(&target().load().await)
}

fn instance_filter(instance: &str) -> Filter {
    Filter::builder()
        .name("tag:stacksmith:instance")
        .values(instance)
        .build()
}

fn tag<'a>(tags: &'a [aws_sdk_ec2::types::Tag], key: &str) -> Option<&'a str> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

/// Every resource, checked with its own describe calls against what the stack says.
async fn check_network(loaded: &LoadedStack, instance: &str) {
    let ec2 = ec2().await;
    let stack = &loaded.stack;
    let vpcs = ec2
        .describe_vpcs()
        .filters(instance_filter(instance))
        .send()
        .await
        .unwrap();
    assert_eq!(vpcs.vpcs().len(), 1, "one VPC for the instance");
    let vpc = &vpcs.vpcs()[0];
    let vpc_id = vpc.vpc_id().unwrap();
    assert_eq!(
        vpc.cidr_block(),
        Some(stack.network.cidr.0.to_string().as_str())
    );
    assert_eq!(tag(vpc.tags(), "stacksmith:stack"), Some("local"));
    assert_eq!(tag(vpc.tags(), "stacksmith:address"), Some("network.vpc"));
    assert_eq!(tag(vpc.tags(), "team"), Some("platform"));
    for (attribute, name) in [
        (
            aws_sdk_ec2::types::VpcAttributeName::EnableDnsSupport,
            "support",
        ),
        (
            aws_sdk_ec2::types::VpcAttributeName::EnableDnsHostnames,
            "hostnames",
        ),
    ] {
        let out = ec2
            .describe_vpc_attribute()
            .vpc_id(vpc_id)
            .attribute(attribute)
            .send()
            .await
            .unwrap();
        let value = out
            .enable_dns_support()
            .or(out.enable_dns_hostnames())
            .and_then(|a| a.value());
        assert_eq!(value, Some(true), "DNS {name}");
    }

    let subnets = ec2
        .describe_subnets()
        .filters(instance_filter(instance))
        .send()
        .await
        .unwrap();
    let cluster_tag = format!("kubernetes.io/cluster/{}", loaded.names.cluster);
    let azs = stack.network.azs.names(&stack.region);
    let mut public_ids = Vec::new();
    let mut private_ids = Vec::new();
    for (kind, cidrs, role_tag, public) in [
        (
            "public",
            &stack.network.public_subnets,
            "kubernetes.io/role/elb",
            true,
        ),
        (
            "private",
            &stack.network.private_subnets,
            "kubernetes.io/role/internal-elb",
            false,
        ),
    ] {
        for (index, (cidr, az)) in cidrs.iter().zip(&azs).enumerate() {
            let address = format!("network.subnet.{kind}[{index}]");
            let subnet = subnets
                .subnets()
                .iter()
                .find(|s| tag(s.tags(), "stacksmith:address") == Some(address.as_str()))
                .unwrap_or_else(|| panic!("{address} exists"));
            assert_eq!(subnet.vpc_id(), Some(vpc_id));
            assert_eq!(subnet.cidr_block(), Some(cidr.0.to_string().as_str()));
            assert_eq!(subnet.availability_zone(), Some(az.as_str()));
            assert_eq!(subnet.map_public_ip_on_launch(), Some(public), "{address}");
            assert_eq!(tag(subnet.tags(), role_tag), Some("1"), "{address}");
            assert_eq!(
                tag(subnet.tags(), &cluster_tag),
                Some("shared"),
                "{address}"
            );
            if public {
                public_ids.push(subnet.subnet_id().unwrap().to_owned());
            } else {
                private_ids.push(subnet.subnet_id().unwrap().to_owned());
            }
        }
    }
    assert_eq!(
        subnets.subnets().len(),
        public_ids.len() + private_ids.len()
    );

    let gateways = ec2
        .describe_internet_gateways()
        .filters(instance_filter(instance))
        .send()
        .await
        .unwrap();
    assert_eq!(gateways.internet_gateways().len(), 1);
    let igw = &gateways.internet_gateways()[0];
    assert_eq!(igw.attachments()[0].vpc_id(), Some(vpc_id));
    let igw_id = igw.internet_gateway_id().unwrap();

    // nat: single in the local stack.
    let nats = ec2.describe_nat_gateways().send().await.unwrap();
    let ours: Vec<_> = nats
        .nat_gateways()
        .iter()
        .filter(|n| tag(n.tags(), "stacksmith:instance") == Some(instance))
        .collect();
    assert_eq!(ours.len(), 1, "nat: single");
    let nat = ours[0];
    assert_eq!(nat.subnet_id(), Some(public_ids[0].as_str()));
    assert_eq!(
        nat.state(),
        Some(&aws_sdk_ec2::types::NatGatewayState::Available)
    );
    let addresses = ec2
        .describe_addresses()
        .filters(instance_filter(instance))
        .send()
        .await
        .unwrap();
    assert_eq!(addresses.addresses().len(), 1);
    assert_eq!(
        nat.nat_gateway_addresses()[0].allocation_id(),
        addresses.addresses()[0].allocation_id()
    );

    let tables = ec2
        .describe_route_tables()
        .filters(instance_filter(instance))
        .send()
        .await
        .unwrap();
    let table = |address: &str| {
        tables
            .route_tables()
            .iter()
            .find(|t| tag(t.tags(), "stacksmith:address") == Some(address))
            .unwrap_or_else(|| panic!("{address} exists"))
    };
    let public = table("network.route_table.public");
    assert!(
        public
            .routes()
            .iter()
            .any(|r| r.destination_cidr_block() == Some("0.0.0.0/0")
                && r.gateway_id() == Some(igw_id))
    );
    let associated: Vec<_> = public
        .associations()
        .iter()
        .filter_map(|a| a.subnet_id())
        .collect();
    for id in &public_ids {
        assert!(
            associated.contains(&id.as_str()),
            "public subnet {id} associated"
        );
    }
    for (index, subnet) in private_ids.iter().enumerate() {
        let private = table(&format!("network.route_table.private[{index}]"));
        assert!(
            private
                .routes()
                .iter()
                .any(|r| r.destination_cidr_block() == Some("0.0.0.0/0")
                    && r.nat_gateway_id() == nat.nat_gateway_id())
        );
        assert!(
            private
                .associations()
                .iter()
                .any(|a| a.subnet_id() == Some(subnet.as_str()))
        );
    }

    let groups = ec2
        .describe_security_groups()
        .filters(instance_filter(instance))
        .send()
        .await
        .unwrap();
    let group = |suffix: &str| {
        let name = format!("{}-{suffix}", loaded.names.qualified);
        groups
            .security_groups()
            .iter()
            .find(|g| g.group_name() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("security group {name} exists"))
    };
    assert_eq!(group("cluster").vpc_id(), Some(vpc_id));
    let mut guarded = vec!["database"];
    if stack.cache.is_some() {
        guarded.push("cache");
    }
    for suffix in guarded {
        // Their rules come with the cluster (see check_platform).
        assert_eq!(group(suffix).vpc_id(), Some(vpc_id));
    }

    // Flow logs: the VPC's traffic goes to the stack's log group (moto serves CreateFlowLogs
    // with a CloudWatch Logs destination and checks that the group exists).
    let sdk = target().load().await;
    let logs = aws_sdk_cloudwatchlogs::Client::new(&sdk);
    let group_name = format!("/stacksmith/{}/vpc-flow-logs", loaded.names.qualified);
    let groups = logs
        .describe_log_groups()
        .log_group_name_prefix(&group_name)
        .send()
        .await
        .unwrap();
    assert_eq!(groups.log_groups().len(), 1, "one flow log group");
    let log_group = &groups.log_groups()[0];
    assert_eq!(log_group.log_group_name(), Some(group_name.as_str()));
    assert_eq!(log_group.retention_in_days(), Some(30));
    let group_tags = logs
        .list_tags_for_resource()
        .resource_arn(log_group.log_group_arn().unwrap())
        .send()
        .await
        .unwrap();
    let group_tags = group_tags.tags().unwrap();
    assert_eq!(
        group_tags.get("stacksmith:instance").map(String::as_str),
        Some(instance)
    );
    assert_eq!(
        group_tags.get("stacksmith:address").map(String::as_str),
        Some("network.flow_log_group")
    );
    assert_eq!(group_tags.get("team").map(String::as_str), Some("platform"));
    let flow_logs = ec2
        .describe_flow_logs()
        .filter(instance_filter(instance))
        .send()
        .await
        .unwrap();
    assert_eq!(flow_logs.flow_logs().len(), 1, "one flow log");
    let flow_log = &flow_logs.flow_logs()[0];
    assert_eq!(flow_log.resource_id(), Some(vpc_id));
    assert_eq!(flow_log.log_group_name(), Some(group_name.as_str()));
    assert_eq!(
        flow_log.traffic_type(),
        Some(&aws_sdk_ec2::types::TrafficType::All)
    );
    assert_eq!(
        flow_log.deliver_logs_status(),
        Some("SUCCESS"),
        "the log group existed when the flow log was created"
    );
    let flow_role = format!("{}-vpc-flow-logs", loaded.names.qualified);
    assert!(
        flow_log
            .deliver_logs_permission_arn()
            .is_some_and(|arn| arn.ends_with(&format!("role/{flow_role}"))),
        "flow log delivers as {flow_role}"
    );

    let iam = aws_sdk_iam::Client::new(&sdk);
    for (role, service, policies) in [
        (
            "eks-cluster",
            "eks.amazonaws.com",
            vec!["AmazonEKSClusterPolicy"],
        ),
        (
            "eks-node",
            "ec2.amazonaws.com",
            vec![
                "AmazonEKSWorkerNodePolicy",
                "AmazonEKS_CNI_Policy",
                "AmazonEC2ContainerRegistryReadOnly",
            ],
        ),
        ("vpc-flow-logs", "vpc-flow-logs.amazonaws.com", vec![]),
    ] {
        let name = format!("{}-{role}", loaded.names.qualified);
        let out = iam.get_role().role_name(&name).send().await.unwrap();
        let document = out.role().unwrap().assume_role_policy_document().unwrap();
        assert!(
            document.contains(service),
            "{name} trusts {service}: {document}"
        );
        let attached = iam
            .list_attached_role_policies()
            .role_name(&name)
            .send()
            .await
            .unwrap();
        let mut arns: Vec<_> = attached
            .attached_policies()
            .iter()
            .filter_map(|p| p.policy_arn())
            .map(str::to_owned)
            .collect();
        arns.sort();
        let mut expected: Vec<_> = policies
            .iter()
            .map(|p| format!("arn:aws:iam::aws:policy/{p}"))
            .collect();
        expected.sort();
        assert_eq!(arns, expected, "{name} policies");
    }

    // The flow-log role may deliver to its own log group and nothing else.
    let flow_role = format!("{}-vpc-flow-logs", loaded.names.qualified);
    let inline = iam
        .list_role_policies()
        .role_name(&flow_role)
        .send()
        .await
        .unwrap();
    assert_eq!(
        inline.policy_names(),
        ["flow-log-delivery"],
        "{flow_role} inline policies"
    );
    let policy = iam
        .get_role_policy()
        .role_name(&flow_role)
        .policy_name("flow-log-delivery")
        .send()
        .await
        .unwrap();
    let document: serde_json::Value =
        provisioner::aws::iam::parse_document(policy.policy_document()).unwrap();
    let statement = &document["Statement"][0];
    assert_eq!(statement["Effect"], "Allow");
    for action in ["logs:CreateLogStream", "logs:PutLogEvents"] {
        assert!(
            statement["Action"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == action),
            "{flow_role} may {action}: {document}"
        );
    }
    let group = format!(
        "log-group:/stacksmith/{}/vpc-flow-logs",
        loaded.names.qualified
    );
    let resources = statement["Resource"].as_array().unwrap();
    assert!(
        !resources.is_empty()
            && resources
                .iter()
                .all(|r| r.as_str().unwrap().contains(&group)),
        "{flow_role} is scoped to its log group: {document}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn network_and_iam_of_the_local_stack_converge_against_moto() {
    tokio::time::timeout(TEST_BOUND, network_scenario())
        .await
        .expect("the scenario finishes within its bound");
}

async fn network_scenario() {
    let instance = unique_instance("n");
    let mut loaded = load_local(&instance);
    // The cache is left to the platform test: moto never finishes deleting a replication group.
    loaded.stack.cache = None;
    let desired = network(&loaded);
    assert!(
        desired.resources.len() > 25,
        "the slice is the whole network and IAM"
    );
    let world = World::new(&desired.stack);

    // 1. up creates everything.
    let plan = world.up(&desired).await;
    assert!(plan.actions.iter().all(|a| a.action == ActionKind::Create));
    assert_eq!(plan.actions.len(), desired.resources.len());
    check_network(&loaded, &instance).await;

    // 2. A second up: no changes, no mutating call.
    let before = world.calls().len();
    let again = world.up(&desired).await;
    assert!(!again.has_changes(), "second plan: {:?}", again.actions);
    let made = world.calls()[before..].to_vec();
    assert!(
        mutating(&made).is_empty(),
        "second up mutated: {:?}",
        mutating(&made)
    );

    // 3. Refresh: every object read back equals what state says (no drift).
    let before = world.calls().len();
    let refreshed = world.plan(&desired, true).await;
    let drift: Vec<_> = refreshed
        .actions
        .iter()
        .filter(|a| a.action != ActionKind::NoOp)
        .map(|a| (a.address.to_string(), a.changes.clone()))
        .collect();
    assert!(drift.is_empty(), "refresh shows drift: {drift:?}");
    assert!(mutating(&world.calls()[before..]).is_empty());

    // 4. A new stack tag: in-place updates only, applied, visible on the objects.
    let mut tagged = loaded.clone();
    tagged
        .stack
        .tags
        .insert("cost-center".to_owned(), "cc-42".to_owned());
    let changed = network(&tagged);
    let plan = world.plan(&changed, false).await;
    let updates: Vec<_> = plan
        .actions
        .iter()
        .filter(|a| a.action != ActionKind::NoOp)
        .collect();
    assert!(!updates.is_empty());
    assert!(
        updates.iter().all(|a| a.action == ActionKind::Update),
        "only in-place updates: {:?}",
        updates
            .iter()
            .map(|a| (&a.address, a.action))
            .collect::<Vec<_>>()
    );
    let before = world.calls().len();
    world.up(&changed).await;
    let made = mutating(&world.calls()[before..]);
    assert!(
        !made.is_empty(),
        "updates {:?} made no mutating call: {:?}",
        updates.iter().map(|a| &a.address).collect::<Vec<_>>(),
        &world.calls()[before..]
    );
    assert!(
        made.iter().all(|c| c.ends_with(":CreateTags")
            || c.ends_with(":TagRole")
            || c.ends_with(":TagResource")),
        "tag updates only: {made:?}"
    );
    let vpcs = ec2()
        .await
        .describe_vpcs()
        .filters(instance_filter(&instance))
        .send()
        .await
        .unwrap();
    assert_eq!(tag(vpcs.vpcs()[0].tags(), "cost-center"), Some("cc-42"));
    assert!(
        !world.plan(&changed, true).await.has_changes(),
        "converged after the update"
    );

    // 5. Removing every resource (what `down` plans) deletes them all, dependents first.
    let before = recorded(&world).await;
    let empty = DesiredSet {
        resources: Vec::new(),
        ..changed.clone()
    };
    let plan = world.up(&empty).await;
    assert!(plan.actions.iter().all(|a| a.action == ActionKind::Delete));
    assert_eq!(plan.actions.len(), before.len());
    check_nothing_left(&world, &before, &instance).await;
    let state = world.backend().load().await.unwrap().unwrap();
    assert!(state.resources.is_empty(), "state records nothing");
}

/// After `down`: every object state recorded reads back as gone through its provider, and no
/// EC2 object, IAM role or OIDC provider, EKS cluster or log group carries the instance's tag
/// (or name) any more. `kept` lists the addresses deliberately left (see the callers).
async fn check_nothing_left(world: &World, recorded: &[(String, String, String)], instance: &str) {
    use provisioner::engine::Address;
    use provisioner::engine::provider::{CallContext, Provider};
    for (address, resource_type, id) in recorded {
        let context = CallContext {
            address: Address::new(address),
            resource_type: ResourceType::new(resource_type),
            taken: Vec::new(),
        };
        let live = world.provider.read(&context, id).await.unwrap();
        assert!(live.is_none(), "{address} ({resource_type} {id}) is gone");
    }
    let ec2 = ec2().await;
    let filter = || instance_filter(instance);
    let vpcs = ec2.describe_vpcs().filters(filter()).send().await.unwrap();
    assert!(vpcs.vpcs().is_empty(), "no VPC left");
    let subnets = ec2
        .describe_subnets()
        .filters(filter())
        .send()
        .await
        .unwrap();
    assert!(subnets.subnets().is_empty(), "no subnet left");
    let groups = ec2
        .describe_security_groups()
        .filters(filter())
        .send()
        .await
        .unwrap();
    assert!(
        groups.security_groups().is_empty(),
        "no security group left"
    );
    let gateways = ec2
        .describe_internet_gateways()
        .filters(filter())
        .send()
        .await
        .unwrap();
    assert!(
        gateways.internet_gateways().is_empty(),
        "no internet gateway left"
    );
    let tables = ec2
        .describe_route_tables()
        .filters(filter())
        .send()
        .await
        .unwrap();
    assert!(tables.route_tables().is_empty(), "no route table left");
    let addresses = ec2
        .describe_addresses()
        .filters(filter())
        .send()
        .await
        .unwrap();
    assert!(addresses.addresses().is_empty(), "no elastic IP left");
    let flow_logs = ec2
        .describe_flow_logs()
        .filter(filter())
        .send()
        .await
        .unwrap();
    assert!(flow_logs.flow_logs().is_empty(), "no flow log left");
    let nats = ec2.describe_nat_gateways().send().await.unwrap();
    assert!(
        nats.nat_gateways()
            .iter()
            .filter(|n| tag(n.tags(), "stacksmith:instance") == Some(instance))
            .all(|n| n.state() == Some(&aws_sdk_ec2::types::NatGatewayState::Deleted)),
        "every NAT gateway deleted"
    );

    let sdk = target().load().await;
    let iam = aws_sdk_iam::Client::new(&sdk);
    let roles = iam.list_roles().max_items(1000).send().await.unwrap();
    for role in roles.roles() {
        // The emulator is shared: another test may delete its own role between the list and
        // this read, and a role that is gone carries no tag.
        let tags = match iam
            .list_role_tags()
            .role_name(role.role_name())
            .send()
            .await
        {
            Ok(tags) => tags,
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_no_such_entity_exception()) =>
            {
                continue;
            }
            Err(error) => panic!("ListRoleTags {}: {error:?}", role.role_name()),
        };
        assert!(
            !tags
                .tags()
                .iter()
                .any(|t| t.key() == "stacksmith:instance" && t.value() == instance),
            "role {} left",
            role.role_name()
        );
    }
    let providers = iam.list_open_id_connect_providers().send().await.unwrap();
    for oidc in providers.open_id_connect_provider_list() {
        let arn = oidc.arn().unwrap();
        let tags = match iam
            .list_open_id_connect_provider_tags()
            .open_id_connect_provider_arn(arn)
            .send()
            .await
        {
            Ok(tags) => tags,
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_no_such_entity_exception()) =>
            {
                continue;
            }
            Err(error) => panic!("ListOpenIDConnectProviderTags {arn}: {error:?}"),
        };
        assert!(
            !tags
                .tags()
                .iter()
                .any(|t| t.key() == "stacksmith:instance" && t.value() == instance),
            "OIDC provider {arn} left"
        );
    }
    let logs = aws_sdk_cloudwatchlogs::Client::new(&sdk);
    let groups = logs
        .describe_log_groups()
        .log_group_name_prefix("/stacksmith/")
        .send()
        .await
        .unwrap();
    assert!(
        !groups
            .log_groups()
            .iter()
            .any(|g| g.log_group_name().is_some_and(|n| n.contains(instance))),
        "no log group left"
    );
}

/// (address, type, id) of every recorded resource.
async fn recorded(world: &World) -> Vec<(String, String, String)> {
    let state = world.backend().load().await.unwrap().unwrap();
    state
        .resources
        .values()
        .map(|r| {
            (
                r.address.to_string(),
                r.resource_type.to_string(),
                r.id.clone(),
            )
        })
        .collect()
}

/// EKS, RDS and ElastiCache as the stack says, checked with their own describe calls.
async fn check_platform(loaded: &LoadedStack, node_scaling: (i32, i32, i32), db_class: &str) {
    let stack = &loaded.stack;
    let names = &loaded.names;
    let sdk = target().load().await;
    let eks = aws_sdk_eks::Client::new(&sdk);
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let instance = names.instance.clone().unwrap();

    let subnets = ec2
        .describe_subnets()
        .filters(instance_filter(&instance))
        .send()
        .await
        .unwrap();
    let mut private: Vec<String> = subnets
        .subnets()
        .iter()
        .filter(|s| tag(s.tags(), "kubernetes.io/role/internal-elb").is_some())
        .filter_map(|s| s.subnet_id().map(str::to_owned))
        .collect();
    private.sort();

    let cluster = eks
        .describe_cluster()
        .name(&names.cluster)
        .send()
        .await
        .unwrap()
        .cluster()
        .cloned()
        .unwrap();
    assert_eq!(cluster.version(), Some(stack.cluster.version.as_str()));
    let vpc = cluster.resources_vpc_config().unwrap();

    // Pods on managed nodes reach Postgres and Redis through the cluster security group EKS
    // made (`eks-cluster-sg-*`, on the nodes), not through the group given at CreateCluster
    // (only on the control plane's network interfaces): the database's and cache's only ingress
    // rule admits exactly that group, on its port.
    let eks_group = vpc
        .cluster_security_group_id()
        .expect("EKS reports the cluster security group");
    let groups = ec2
        .describe_security_groups()
        .filters(instance_filter(&instance))
        .send()
        .await
        .unwrap();
    let mut guarded = vec![("database", 5432)];
    if stack.cache.is_some() {
        guarded.push(("cache", 6379));
    }
    for (suffix, port) in guarded {
        let name = format!("{}-{suffix}", names.qualified);
        let sg = groups
            .security_groups()
            .iter()
            .find(|g| g.group_name() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("security group {name} exists"));
        assert_eq!(sg.ip_permissions().len(), 1, "{suffix} ingress rules");
        let rule = &sg.ip_permissions()[0];
        assert_eq!(rule.ip_protocol(), Some("tcp"));
        assert_eq!((rule.from_port(), rule.to_port()), (Some(port), Some(port)));
        assert!(rule.ip_ranges().is_empty(), "{suffix}: no CIDR sources");
        assert_eq!(rule.user_id_group_pairs().len(), 1);
        assert_eq!(
            rule.user_id_group_pairs()[0].group_id(),
            Some(eks_group),
            "{suffix} admits the nodes' group"
        );
    }
    let mut subnet_ids = vpc.subnet_ids().to_vec();
    subnet_ids.sort();
    assert_eq!(
        subnet_ids, private,
        "the cluster runs in the private subnets"
    );
    assert_eq!(vpc.endpoint_public_access(), stack.cluster.endpoint.public);
    assert_eq!(
        vpc.endpoint_private_access(),
        stack.cluster.endpoint.private
    );
    assert!(
        cluster
            .role_arn()
            .unwrap()
            .ends_with(&format!("{}-eks-cluster", names.qualified))
    );
    let tags = cluster.tags().unwrap();
    assert_eq!(
        tags.get("stacksmith:address").map(String::as_str),
        Some("cluster.control_plane")
    );
    let logged: Vec<String> = cluster
        .logging()
        .unwrap()
        .cluster_logging()
        .iter()
        .filter(|s| s.enabled() == Some(true))
        .flat_map(|s| s.types().iter().map(|t| t.as_str().to_owned()))
        .collect();
    for wanted in &stack.cluster.logging {
        let name = serde_json::to_value(wanted).unwrap();
        assert!(
            logged.iter().any(|l| Some(l.as_str()) == name.as_str()),
            "log type {name}"
        );
    }

    for (name, group) in &stack.cluster.node_groups {
        let out = eks
            .describe_nodegroup()
            .cluster_name(&names.cluster)
            .nodegroup_name(name)
            .send()
            .await
            .unwrap();
        let node_group = out.nodegroup().unwrap();
        assert_eq!(node_group.instance_types(), group.instance_types.as_slice());
        assert_eq!(
            node_group.capacity_type().map(|c| c.as_str()),
            Some("ON_DEMAND")
        );
        assert_eq!(node_group.disk_size(), Some(group.disk_gib as i32));
        let scaling = node_group.scaling_config().unwrap();
        assert_eq!(
            (
                scaling.min_size(),
                scaling.desired_size(),
                scaling.max_size()
            ),
            (
                Some(node_scaling.0),
                Some(node_scaling.1),
                Some(node_scaling.2)
            )
        );
        let labels = node_group.labels().unwrap();
        for (k, v) in &group.labels {
            assert_eq!(labels.get(k), Some(v));
        }
        assert!(
            node_group
                .node_role()
                .unwrap()
                .ends_with(&format!("{}-eks-node", names.qualified))
        );
    }

    let database = stack.database.as_ref().unwrap();
    let rds = aws_sdk_rds::Client::new(&sdk);
    let db = rds
        .describe_db_instances()
        .db_instance_identifier(&names.database)
        .send()
        .await
        .unwrap()
        .db_instances()
        .first()
        .cloned()
        .unwrap();
    assert_eq!(db.db_instance_class(), Some(db_class));
    assert_eq!(db.engine(), Some("postgres"));
    assert_eq!(db.engine_version(), Some(database.engine_version.as_str()));
    assert_eq!(db.allocated_storage(), Some(database.storage_gib as i32));
    assert_eq!(db.multi_az(), Some(database.multi_az));
    assert_eq!(
        db.backup_retention_period(),
        Some(database.backup_retention_days as i32)
    );
    assert_eq!(db.deletion_protection(), Some(database.deletion_protection));
    assert_eq!(db.storage_encrypted(), Some(true));
    assert_eq!(
        db.db_subnet_group().and_then(|g| g.db_subnet_group_name()),
        Some(format!("{}-subnets", names.database).as_str())
    );
    // The parameter group is named after its family (a major upgrade moves to a new one).
    let major = database.engine_version.split('.').next().unwrap();
    let parameter_group = format!("{}-pg{major}", names.database);
    assert_eq!(
        db.db_parameter_groups()
            .first()
            .and_then(|g| g.db_parameter_group_name()),
        Some(parameter_group.as_str())
    );
    let parameters = rds
        .describe_db_parameters()
        .db_parameter_group_name(&parameter_group)
        .source("user")
        .send()
        .await
        .unwrap();
    for (k, v) in &database.parameters {
        assert!(
            parameters
                .parameters()
                .iter()
                .any(|p| p.parameter_name() == Some(k) && p.parameter_value() == Some(v)),
            "parameter {k}"
        );
    }
    let groups = ec2
        .describe_security_groups()
        .filters(instance_filter(&instance))
        .send()
        .await
        .unwrap();
    let database_sg = groups
        .security_groups()
        .iter()
        .find(|g| g.group_name() == Some(format!("{}-database", names.qualified).as_str()))
        .unwrap();
    assert_eq!(
        db.vpc_security_groups()
            .iter()
            .filter_map(|g| g.vpc_security_group_id())
            .collect::<Vec<_>>(),
        vec![database_sg.group_id().unwrap()]
    );

    // IRSA: the OIDC provider of the cluster's issuer, the EBS CSI role federated through it.
    let iam = aws_sdk_iam::Client::new(&sdk);
    let issuer = cluster
        .identity()
        .and_then(|i| i.oidc())
        .and_then(|o| o.issuer())
        .unwrap();
    let providers = iam.list_open_id_connect_providers().send().await.unwrap();
    let mut provider_arn = None;
    for entry in providers.open_id_connect_provider_list() {
        let arn = entry.arn().unwrap();
        let provider = iam
            .get_open_id_connect_provider()
            .open_id_connect_provider_arn(arn)
            .send()
            .await
            .unwrap();
        if issuer.ends_with(provider.url().unwrap().trim_start_matches("https://")) {
            assert_eq!(provider.client_id_list(), ["sts.amazonaws.com".to_owned()]);
            provider_arn = Some(arn.to_owned());
        }
    }
    let provider_arn = provider_arn.expect("an OIDC provider for the cluster's issuer");
    let role = iam
        .get_role()
        .role_name(format!("{}-ebs-csi", names.qualified))
        .send()
        .await
        .unwrap();
    // IAM returns policy documents URL-encoded.
    let trust = provisioner::aws::iam::parse_document(
        role.role().unwrap().assume_role_policy_document().unwrap(),
    )
    .unwrap()
    .to_string();
    assert!(trust.contains(&provider_arn), "{trust}");
    assert!(trust.contains("ebs-csi-controller-sa"), "{trust}");
    let attached = iam
        .list_attached_role_policies()
        .role_name(format!("{}-ebs-csi", names.qualified))
        .send()
        .await
        .unwrap();
    assert_eq!(
        attached.attached_policies()[0].policy_arn(),
        Some("arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy")
    );

    let cache = stack.cache.as_ref().unwrap();
    let elasticache = aws_sdk_elasticache::Client::new(&sdk);
    let group = elasticache
        .describe_replication_groups()
        .replication_group_id(&names.cache)
        .send()
        .await
        .unwrap()
        .replication_groups()
        .first()
        .cloned()
        .unwrap();
    assert_eq!(group.cache_node_type(), Some(cache.node_type.as_str()));
    assert_eq!(
        group.at_rest_encryption_enabled(),
        Some(cache.at_rest_encryption)
    );
    assert_eq!(
        group.transit_encryption_enabled(),
        Some(cache.transit_encryption)
    );
    assert_eq!(group.auth_token_enabled(), Some(cache.transit_encryption));
    assert_eq!(
        group.automatic_failover().map(|f| f.as_str()),
        Some(if cache.replicas > 0 {
            "enabled"
        } else {
            "disabled"
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_local_platform_is_created_checked_and_updated_in_place_against_moto() {
    tokio::time::timeout(TEST_BOUND, platform_scenario())
        .await
        .expect("the scenario finishes within its bound");
}

async fn platform_scenario() {
    let instance = unique_instance("p");
    let loaded = load_local(&instance);
    let desired = platform(&loaded);
    let world = World::new(&desired.stack);
    let workers = &loaded.stack.cluster.node_groups["workers"].scaling;
    let scaling = (
        workers.min as i32,
        workers.desired as i32,
        workers.max as i32,
    );
    let class = loaded
        .stack
        .database
        .as_ref()
        .unwrap()
        .instance_class
        .clone();

    // 1. up creates everything; each object is checked with its own describe calls.
    let plan = world.up(&desired).await;
    assert!(plan.actions.iter().all(|a| a.action == ActionKind::Create));
    check_network(&loaded, &instance).await;
    check_platform(&loaded, scaling, &class).await;

    // The generated secrets are in state, sealed.
    let state = world.backend().load().await.unwrap().unwrap();
    let db = &state.resources[&provisioner::engine::Address::new("database.instance")];
    assert!(
        is_encrypted(&db.properties["master_password"]),
        "master password sealed"
    );
    let cache = &state.resources[&provisioner::engine::Address::new("cache.replication_group")];
    assert!(
        is_encrypted(&cache.properties["auth_token"]),
        "auth token sealed"
    );

    // 2. A second up: nothing to do, no mutating call.
    let before = world.calls().len();
    let again = world.up(&desired).await;
    assert!(!again.has_changes(), "second plan: {:?}", again.actions);
    let made = world.calls()[before..].to_vec();
    assert!(
        mutating(&made).is_empty(),
        "second up mutated: {:?}",
        mutating(&made)
    );

    // 3. Node group scaling and the RDS class change in place.
    let mut changed = loaded.clone();
    {
        let group = changed
            .stack
            .cluster
            .node_groups
            .get_mut("workers")
            .unwrap();
        group.scaling.desired = group.scaling.max;
        group.scaling.max += 1;
    }
    changed.stack.database.as_mut().unwrap().instance_class = "db.t4g.large".into();
    let changed_set = platform(&changed);
    let plan = world.plan(&changed_set, false).await;
    let mut touched: Vec<(String, ActionKind)> = plan
        .actions
        .iter()
        .filter(|a| a.action != ActionKind::NoOp)
        .map(|a| (a.address.to_string(), a.action))
        .collect();
    touched.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        touched,
        vec![
            ("cluster.node_group.workers".to_owned(), ActionKind::Update),
            ("database.instance".to_owned(), ActionKind::Update),
        ]
    );
    let before = world.calls().len();
    world.up(&changed_set).await;
    let mut made: Vec<String> = mutating(&world.calls()[before..])
        .iter()
        .map(|c| c.rsplit(':').next().unwrap_or(c).to_owned())
        .collect();
    made.sort();
    assert_eq!(
        made,
        vec![
            "ModifyDBInstance".to_owned(),
            "UpdateNodegroupConfig".to_owned()
        ]
    );
    let group = &changed.stack.cluster.node_groups["workers"].scaling;
    check_platform(
        &changed,
        (group.min as i32, group.desired as i32, group.max as i32),
        "db.t4g.large",
    )
    .await;
    assert!(
        !world.plan(&changed_set, false).await.has_changes(),
        "converged"
    );

    // 4. `down`: the plan against an empty desired set deletes everything, dependents first.
    // Except the cache, which moto cannot take down: it never finishes deleting a replication
    // group (the status stays `deleting`) and has no DeleteCacheSubnetGroup. So the cache's two
    // records leave state before `down`, the replication group is only asked to delete, and both
    // are checked to be what is left. aws_mocks.rs covers the real behaviour:
    // `replication_group_delete_waits_through_deleting_until_it_is_gone` and
    // `cache_subnet_group_delete_retries_while_the_group_is_in_use`.
    let journal = Journal::open(world.backend(), &world.stack, Some(instance.as_str()))
        .await
        .unwrap();
    let cache_records: Vec<(String, String)> = journal
        .record(|document| {
            let cache: Vec<_> = document
                .resources
                .values()
                .filter(|r| r.resource_type.as_str().starts_with("aws.elasticache."))
                .map(|r| (r.resource_type.to_string(), r.id.clone()))
                .collect();
            document
                .resources
                .retain(|_, r| !r.resource_type.as_str().starts_with("aws.elasticache."));
            cache
        })
        .await
        .unwrap();
    assert_eq!(
        cache_records.len(),
        2,
        "cache subnet group and replication group"
    );
    let before = recorded(&world).await;
    let nothing = DesiredSet {
        resources: Vec::new(),
        ..changed_set.clone()
    };
    let plan = world.up(&nothing).await;
    assert!(plan.actions.iter().all(|a| a.action == ActionKind::Delete));
    assert_eq!(plan.actions.len(), before.len());
    check_nothing_left(&world, &before, &instance).await;
    let eks = aws_sdk_eks::Client::new(&target().load().await);
    let clusters = eks.list_clusters().send().await.unwrap();
    assert!(
        !clusters.clusters().contains(&loaded.names.cluster),
        "the cluster is gone"
    );
    let state = world.backend().load().await.unwrap().unwrap();
    assert!(state.resources.is_empty(), "state records nothing");

    let cache = aws_sdk_elasticache::Client::new(&target().load().await);
    let group_id = &cache_records
        .iter()
        .find(|(t, _)| t == "aws.elasticache.replication_group")
        .unwrap()
        .1;
    cache
        .delete_replication_group()
        .replication_group_id(group_id)
        .send()
        .await
        .unwrap();
    // AWS removes a deleted group after a while; our moto launcher removes it at once (moto
    // itself kept it `deleting` for ever); the fault proxy shows `deleting` for a scaled while.
    let described = cache
        .describe_replication_groups()
        .replication_group_id(group_id)
        .send()
        .await;
    match described {
        Ok(groups) => assert_eq!(
            groups.replication_groups()[0].status(),
            Some("deleting"),
            "a deleted replication group is deleting or gone"
        ),
        Err(error) => assert!(
            error
                .as_service_error()
                .is_some_and(|e| e.is_replication_group_not_found_fault()),
            "a deleted replication group is deleting or gone: {error:?}"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_groups_carrying_the_ownership_tags_are_listed_for_drift() {
    use provisioner::engine::provider::Provider;
    let instance = unique_instance("own");
    let prefix = format!("local-{instance}");
    let sdk = target().load().await;
    let iam = aws_sdk_iam::Client::new(&sdk);
    let tag = |key: &str, value: &str| {
        aws_sdk_iam::types::Tag::builder()
            .key(key)
            .value(value)
            .build()
            .unwrap()
    };
    let trust = aws::iam::trust_policy("ec2.amazonaws.com");
    let create = |name: String, tags: Vec<aws_sdk_iam::types::Tag>| {
        let (iam, trust) = (iam.clone(), trust.clone());
        async move {
            iam.create_role()
                .role_name(name)
                .assume_role_policy_document(trust)
                .set_tags(Some(tags))
                .send()
                .await
                .unwrap();
        }
    };
    let stray = format!("{prefix}-stray");
    let untagged = format!("{prefix}-untagged");
    let other_instance = format!("{prefix}-other");
    create(
        stray.clone(),
        vec![
            tag("stacksmith:stack", "local"),
            tag("stacksmith:instance", &instance),
        ],
    )
    .await;
    create(untagged.clone(), vec![tag("team", "platform")]).await;
    create(
        other_instance.clone(),
        vec![
            tag("stacksmith:stack", "local"),
            tag("stacksmith:instance", "elsewhere"),
        ],
    )
    .await;

    let rds = aws_sdk_rds::Client::new(&sdk);
    let rds_tag = |key: &str, value: &str| {
        aws_sdk_rds::types::Tag::builder()
            .key(key)
            .value(value)
            .build()
    };
    let owned_params = format!("{prefix}-postgres-params");
    let foreign_params = format!("{prefix}-foreign-params");
    for (name, instance_tag) in [
        (&owned_params, instance.as_str()),
        (&foreign_params, "elsewhere"),
    ] {
        rds.create_db_parameter_group()
            .db_parameter_group_name(name)
            .db_parameter_group_family("postgres16")
            .description("drift listing test")
            .tags(rds_tag("stacksmith:stack", "local"))
            .tags(rds_tag("stacksmith:instance", instance_tag))
            .send()
            .await
            .unwrap();
    }

    let provider = AwsProvider::new(AwsContext::new(target()));
    let ownership = [
        ("stacksmith:stack".to_owned(), "local".to_owned()),
        ("stacksmith:instance".to_owned(), instance.clone()),
    ]
    .into_iter()
    .collect();
    let owned = provider.list_owned(&ownership).await.unwrap();
    let roles: Vec<&str> = owned
        .iter()
        .filter(|o| o.resource_type.as_str() == "aws.iam.role")
        .map(|o| o.id.as_str())
        .collect();
    assert_eq!(
        roles,
        [stray.as_str()],
        "only the role carrying this deployment's tags"
    );
    let parameter_groups: Vec<&str> = owned
        .iter()
        .filter(|o| o.resource_type.as_str() == "aws.rds.db_parameter_group")
        .map(|o| o.id.as_str())
        .collect();
    assert_eq!(parameter_groups, [owned_params.as_str()]);

    for name in [stray, untagged, other_instance] {
        iam.delete_role().role_name(name).send().await.unwrap();
    }
    for name in [owned_params, foreign_params] {
        rds.delete_db_parameter_group()
            .db_parameter_group_name(name)
            .send()
            .await
            .unwrap();
    }
}

/// The moto of `cargo xtask test` matches EC2 filter values as AWS does (only `*` and `?` are
/// wildcards, `\` escapes; `tests/emulators/moto_server.py`): plain moto uses fnmatch, where the
/// `[0]` of an address is a character class, so recovery by ownership tags found nothing there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ec2_tag_filters_match_like_aws_brackets_are_literal() {
    let ec2 = ec2().await;
    let instance = unique_instance("tf");
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.9.0.0/16")
        .send()
        .await
        .unwrap()
        .vpc
        .unwrap()
        .vpc_id
        .unwrap();
    let address = "network.subnet.private[0]";
    let ownership = indexmap::IndexMap::from([
        ("stacksmith:stack".to_owned(), "local".to_owned()),
        ("stacksmith:instance".to_owned(), instance.clone()),
        ("stacksmith:address".to_owned(), address.to_owned()),
    ]);
    let tags: Vec<aws_sdk_ec2::types::Tag> = ownership
        .iter()
        .map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build())
        .collect();
    let subnet = ec2
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block("10.9.1.0/24")
        .tag_specifications(
            aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::Subnet)
                .set_tags(Some(tags))
                .build(),
        )
        .send()
        .await
        .unwrap()
        .subnet
        .unwrap()
        .subnet_id
        .unwrap();
    let found = |value: &'static str| {
        let ec2 = ec2.clone();
        let instance = instance.clone();
        async move {
            ec2.describe_subnets()
                .filters(instance_filter(&instance))
                .filters(
                    Filter::builder()
                        .name("tag:stacksmith:address")
                        .values(value)
                        .build(),
                )
                .send()
                .await
                .unwrap()
                .subnets()
                .iter()
                .filter_map(|s| s.subnet_id().map(str::to_owned))
                .collect::<Vec<_>>()
        }
    };
    // Literal brackets, wildcards, escapes; no character classes, no case folding.
    for (value, matches) in [
        ("network.subnet.private[0]", true),
        ("network.subnet.private[?]", true),
        ("*[0]", true),
        ("network.subnet.*", true),
        (r"network.subnet.private\[0\]", true),
        ("network.subnet.private0", false),
        ("network.subnet.private[1]", false),
        ("network.subnet.private[01]", false),
        ("Network.subnet.private[0]", false),
    ] {
        let ids = found(value).await;
        assert_eq!(
            ids == std::slice::from_ref(&subnet),
            matches,
            "tag:stacksmith:address={value} found {ids:?}"
        );
    }
    // Recovery's lookup through the provider finds it by its ownership tags.
    let provider = AwsProvider::new(AwsContext::new(target()));
    let call = provisioner::engine::provider::CallContext {
        address: provisioner::engine::Address::parse(address).unwrap(),
        resource_type: ResourceType::new("aws.ec2.subnet"),
        taken: Vec::new(),
    };
    use provisioner::engine::provider::Provider;
    let adopted = provider.find_by_tags(&call, &ownership).await.unwrap();
    assert_eq!(
        adopted.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(),
        [subnet.as_str()]
    );
    ec2.delete_subnet().subnet_id(&subnet).send().await.unwrap();
    ec2.delete_vpc().vpc_id(&vpc).send().await.unwrap();
}
