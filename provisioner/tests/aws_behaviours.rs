//! What real AWS does that moto does not (issue 15), one scenario per behaviour, with
//! aws-smithy-mocks: the exact error codes and messages AWS answers (looked up in the API
//! references and in terraform-provider-aws / eksctl issue threads) and the status sequences it
//! goes through. Where a rule is stateful (EKS upgrades one minor version at a time, RDS refuses
//! to go back a minor version), a small simulation answers from the requests it sees, so the
//! test fails if the provider sends what AWS would refuse.
//!
//! `provisioner/docs/testing.md` ("AWS behaviours we rehearse") maps each behaviour to its test.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_smithy_mocks::{
    MockResponse, MockResponseInterceptor, Rule, RuleMode, create_mock_http_client, mock,
};
use indexmap::IndexMap;
use provisioner::aws::{AwsContext, AwsProvider, Clients, PollSettings};
use provisioner::engine::provider::{CallContext, Provider, ProviderError};
use provisioner::engine::{Address, ResourceType};
use serde_json::{Value, json};

const BOUND: Duration = Duration::from_secs(60);

fn fast() -> PollSettings {
    PollSettings {
        initial: Duration::from_millis(2),
        max: Duration::from_millis(10),
        bound_scale: 1.0,
    }
}

fn interceptor(rules: &[&Rule]) -> MockResponseInterceptor {
    let mut interceptor = MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny);
    for rule in rules {
        interceptor = interceptor.with_rule(rule);
    }
    interceptor
}

macro_rules! client {
    ($krate:ident, $rules:expr) => {
        $krate::Client::from_conf(
            $krate::Config::builder()
                .behavior_version($krate::config::BehaviorVersion::latest())
                .region($krate::config::Region::new("us-east-1"))
                .credentials_provider($krate::config::Credentials::new(
                    "testing", "testing", None, None, "mocks",
                ))
                // The providers' own retries are under test, not the SDK's.
                .retry_config($krate::config::retry::RetryConfig::disabled())
                .http_client(create_mock_http_client())
                .interceptor(interceptor($rules))
                .build(),
        )
    };
}

#[derive(Default)]
struct Rules<'a> {
    ec2: Vec<&'a Rule>,
    iam: Vec<&'a Rule>,
    eks: Vec<&'a Rule>,
    rds: Vec<&'a Rule>,
    elasticache: Vec<&'a Rule>,
}

fn aws(rules: Rules<'_>) -> AwsProvider {
    AwsProvider::new(AwsContext::with_clients(
        Clients {
            ec2: client!(aws_sdk_ec2, &rules.ec2),
            iam: client!(aws_sdk_iam, &rules.iam),
            eks: client!(aws_sdk_eks, &rules.eks),
            rds: client!(aws_sdk_rds, &rules.rds),
            elasticache: client!(aws_sdk_elasticache, &rules.elasticache),
            logs: client!(aws_sdk_cloudwatchlogs, &[]),
        },
        fast(),
    ))
}

fn call(resource_type: &str) -> CallContext {
    CallContext {
        address: Address::new("test.object"),
        resource_type: ResourceType::new(resource_type),
        taken: Vec::new(),
    }
}

fn props(value: Value) -> IndexMap<String, Value> {
    match value {
        Value::Object(map) => map.into_iter().collect(),
        _ => IndexMap::new(),
    }
}

fn ownership() -> IndexMap<String, String> {
    [
        ("stacksmith:stack", "mock"),
        ("stacksmith:instance", ""),
        ("stacksmith:address", "test.object"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn ownership_map() -> std::collections::HashMap<String, String> {
    ownership().into_iter().collect()
}

/// An error as AWS answers it: its code and its message.
fn aws_error(code: &str, message: &str) -> aws_sdk_ec2::error::ErrorMetadata {
    aws_sdk_ec2::error::ErrorMetadata::builder()
        .code(code)
        .message(message)
        .build()
}

async fn bounded<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, future)
        .await
        .expect("the call finishes within its bound")
}

// --- 2. RDS parameters ---

fn db(
    status: &str,
    version: &str,
    class: &str,
    group: &str,
    apply: &str,
) -> aws_sdk_rds::types::DbInstance {
    aws_sdk_rds::types::DbInstance::builder()
        .db_instance_identifier("db-1")
        .db_instance_arn("arn:aws:rds:us-east-1:123456789012:db:db-1")
        .db_instance_status(status)
        .engine("postgres")
        .engine_version(version)
        .db_instance_class(class)
        .allocated_storage(20)
        .multi_az(false)
        .deletion_protection(false)
        .auto_minor_version_upgrade(true)
        .backup_retention_period(7)
        .db_parameter_groups(
            aws_sdk_rds::types::DbParameterGroupStatus::builder()
                .db_parameter_group_name(group)
                .parameter_apply_status(apply)
                .build(),
        )
        .build()
}

fn rds_tags() -> Rule {
    mock!(aws_sdk_rds::Client::list_tags_for_resource).then_output(|| {
        aws_sdk_rds::operation::list_tags_for_resource::ListTagsForResourceOutput::builder().build()
    })
}

#[tokio::test]
async fn rds_dynamic_parameters_apply_at_once_and_static_ones_reboot_the_instances_using_the_group()
{
    use aws_sdk_rds::operation::describe_db_instances::DescribeDbInstancesOutput;
    use aws_sdk_rds::operation::describe_db_parameter_groups::DescribeDbParameterGroupsOutput;
    use aws_sdk_rds::operation::describe_db_parameters::DescribeDbParametersOutput;
    use aws_sdk_rds::operation::modify_db_parameter_group::{
        ModifyDBParameterGroupError, ModifyDbParameterGroupOutput,
    };
    use aws_sdk_rds::operation::reboot_db_instance::RebootDbInstanceOutput;
    use aws_sdk_rds::types::{ApplyMethod, DbParameterGroup, Parameter};

    let groups = mock!(aws_sdk_rds::Client::describe_db_parameter_groups).then_output(|| {
        DescribeDbParameterGroupsOutput::builder()
            .db_parameter_groups(
                DbParameterGroup::builder()
                    .db_parameter_group_name("db-1-pg16")
                    .db_parameter_group_family("postgres16")
                    .db_parameter_group_arn("arn:aws:rds:us-east-1:123456789012:pg:db-1-pg16")
                    .build(),
            )
            .build()
    });
    // The group's parameters as RDS describes them: the user-set ones (`source=user`) and, for
    // the apply types, every one.
    let parameters =
        mock!(aws_sdk_rds::Client::describe_db_parameters).then_compute_output(|input| {
            let parameter = |name: &str, value: Option<&str>, kind: &str| {
                Parameter::builder()
                    .parameter_name(name)
                    .set_parameter_value(value.map(str::to_owned))
                    .apply_type(kind)
                    .build()
            };
            let out = DescribeDbParametersOutput::builder()
                .parameters(parameter("log_connections", Some("0"), "dynamic"))
                .parameters(parameter(
                    "shared_preload_libraries",
                    Some("pg_stat_statements"),
                    "static",
                ));
            if input.source() == Some("user") {
                out.build()
            } else {
                out.parameters(parameter("work_mem", None, "dynamic"))
                    .build()
            }
        });
    // AWS's rule: `immediate` is accepted for dynamic parameters only.
    let modified: Arc<Mutex<Vec<(String, ApplyMethod)>>> = Arc::default();
    let seen = modified.clone();
    let modify =
        mock!(aws_sdk_rds::Client::modify_db_parameter_group).then_compute_response(move |input| {
            for p in input.parameters() {
                let name = p.parameter_name().unwrap_or_default().to_owned();
                let method = p
                    .apply_method()
                    .cloned()
                    .unwrap_or(ApplyMethod::PendingReboot);
                if name == "shared_preload_libraries" && method == ApplyMethod::Immediate {
                    return MockResponse::Error(ModifyDBParameterGroupError::generic(aws_error(
                        "InvalidParameterCombination",
                        "cannot use immediate apply method for static parameter",
                    )));
                }
                seen.lock().unwrap().push((name, method));
            }
            MockResponse::Output(ModifyDbParameterGroupOutput::builder().build())
        });
    // The instance using the group: `pending-reboot` until rebooted, and the status still reads
    // `available` for a poll right after the reboot call.
    let rebooted = Arc::new(Mutex::new(0u32));
    let polls_after = Arc::new(Mutex::new(0u32));
    let (r, p) = (rebooted.clone(), polls_after.clone());
    let describe =
        mock!(aws_sdk_rds::Client::describe_db_instances).then_compute_output(move |_| {
            let instance = if *r.lock().unwrap() == 0 {
                db(
                    "available",
                    "16.4",
                    "db.t4g.medium",
                    "db-1-pg16",
                    "pending-reboot",
                )
            } else {
                let mut polls = p.lock().unwrap();
                *polls += 1;
                match *polls {
                    1 => db(
                        "available",
                        "16.4",
                        "db.t4g.medium",
                        "db-1-pg16",
                        "pending-reboot",
                    ),
                    2 | 3 => db(
                        "rebooting",
                        "16.4",
                        "db.t4g.medium",
                        "db-1-pg16",
                        "applying",
                    ),
                    _ => db("available", "16.4", "db.t4g.medium", "db-1-pg16", "in-sync"),
                }
            };
            DescribeDbInstancesOutput::builder()
                .db_instances(instance)
                .build()
        });
    let reboot = {
        let r = rebooted.clone();
        mock!(aws_sdk_rds::Client::reboot_db_instance)
            .match_requests(|input| input.db_instance_identifier() == Some("db-1"))
            .then_compute_output(move |_| {
                *r.lock().unwrap() += 1;
                RebootDbInstanceOutput::builder().build()
            })
    };
    let tags = rds_tags();
    let provider = aws(Rules {
        rds: vec![&groups, &parameters, &modify, &describe, &reboot, &tags],
        ..Rules::default()
    });
    let wanted = props(json!({
        "name": "db-1-pg16",
        "family": "postgres16",
        "parameters": {
            "log_connections": "1",
            "shared_preload_libraries": "pg_stat_statements,auto_explain",
        },
        "tags": {},
    }));
    bounded(provider.update(&call("aws.rds.db_parameter_group"), "db-1-pg16", &wanted))
        .await
        .expect("updated");
    let modified = modified.lock().unwrap().clone();
    assert!(
        modified.contains(&("log_connections".to_owned(), ApplyMethod::Immediate)),
        "the dynamic parameter applies at once: {modified:?}"
    );
    assert!(
        modified.contains(&(
            "shared_preload_libraries".to_owned(),
            ApplyMethod::PendingReboot
        )),
        "the static one at the reboot: {modified:?}"
    );
    assert_eq!(
        *rebooted.lock().unwrap(),
        1,
        "the instance was rebooted once"
    );
    assert!(
        *polls_after.lock().unwrap() >= 4,
        "waited through `rebooting` until the parameters were in sync"
    );
}

// --- 3. IAM propagation ---

fn cluster(
    status: aws_sdk_eks::types::ClusterStatus,
    version: &str,
) -> aws_sdk_eks::types::builders::ClusterBuilder {
    aws_sdk_eks::types::Cluster::builder()
        .name("c1")
        .arn("arn:aws:eks:us-east-1:123456789012:cluster/c1")
        .version(version)
        .status(status)
        .set_tags(Some(ownership_map()))
}

fn active_cluster(version: &str) -> aws_sdk_eks::types::Cluster {
    use aws_sdk_eks::types::{
        AccessConfigResponse, AuthenticationMode, Certificate, ClusterStatus, Identity, Oidc,
        VpcConfigResponse,
    };
    cluster(ClusterStatus::Active, version)
        .endpoint("https://C1.gr7.us-east-1.eks.amazonaws.com")
        .certificate_authority(Certificate::builder().data("Q0E=").build())
        .identity(
            Identity::builder()
                .oidc(
                    Oidc::builder()
                        .issuer("https://oidc.eks.us-east-1.amazonaws.com/id/C1")
                        .build(),
                )
                .build(),
        )
        .resources_vpc_config(
            VpcConfigResponse::builder()
                .subnet_ids("subnet-1")
                .subnet_ids("subnet-2")
                .security_group_ids("sg-control-plane")
                .cluster_security_group_id("sg-eks-cluster")
                .endpoint_public_access(true)
                .endpoint_private_access(true)
                .public_access_cidrs("0.0.0.0/0")
                .build(),
        )
        .access_config(
            AccessConfigResponse::builder()
                .authentication_mode(AuthenticationMode::ApiAndConfigMap)
                .build(),
        )
        .build()
}

fn cluster_properties() -> IndexMap<String, Value> {
    props(json!({
        "name": "c1",
        "version": "1.31",
        "role_arn": "arn:aws:iam::123456789012:role/c1-eks-cluster",
        "subnet_ids": ["subnet-1", "subnet-2"],
        "security_group_ids": ["sg-control-plane"],
        "endpoint_public_access": true,
        "endpoint_private_access": true,
        "public_access_cidrs": [],
        "enabled_log_types": ["api", "audit"],
        "authentication_mode": "API_AND_CONFIG_MAP",
        "tags": {},
    }))
}

fn cluster_not_found() -> aws_sdk_eks::operation::describe_cluster::DescribeClusterError {
    aws_sdk_eks::operation::describe_cluster::DescribeClusterError::generic(aws_error(
        "ResourceNotFoundException",
        "No cluster found for name: c1.",
    ))
}

#[tokio::test]
async fn create_cluster_is_retried_while_iam_has_not_propagated_its_new_role() {
    use aws_sdk_eks::operation::create_cluster::{CreateClusterError, CreateClusterOutput};
    use aws_sdk_eks::operation::describe_cluster::DescribeClusterOutput;
    use aws_sdk_eks::types::ClusterStatus;
    // Not found (the adoption check), then CREATING twice, then ACTIVE.
    let describe = mock!(aws_sdk_eks::Client::describe_cluster)
        .sequence()
        .error(cluster_not_found)
        .output(|| {
            DescribeClusterOutput::builder()
                .cluster(cluster(ClusterStatus::Creating, "1.31").build())
                .build()
        })
        .times(2)
        .output(|| {
            DescribeClusterOutput::builder()
                .cluster(active_cluster("1.31"))
                .build()
        })
        .repeatedly()
        .build();
    // EKS's answer while the role has not propagated (HTTP 400), three times.
    let create = mock!(aws_sdk_eks::Client::create_cluster)
        .match_requests(|input| {
            input.access_config().and_then(|a| a.authentication_mode())
                == Some(&aws_sdk_eks::types::AuthenticationMode::ApiAndConfigMap)
                && input
                    .access_config()
                    .and_then(|a| a.bootstrap_cluster_creator_admin_permissions())
                    == Some(true)
        })
        .sequence()
        .error(|| {
            CreateClusterError::generic(aws_error(
                "InvalidParameterException",
                "Role with arn: arn:aws:iam::123456789012:role/c1-eks-cluster, could not be \
                 assumed because it does not exist or the trusted entity is not correct",
            ))
        })
        .times(3)
        .output(|| CreateClusterOutput::builder().build())
        .build();
    let provider = aws(Rules {
        eks: vec![&describe, &create],
        ..Rules::default()
    });
    let live = bounded(provider.create(
        &call("aws.eks.cluster"),
        &cluster_properties(),
        &ownership(),
    ))
    .await
    .expect("created once the role could be assumed");
    assert_eq!(create.num_calls(), 4, "three refusals, then the create");
    assert_eq!(
        live.outputs["cluster_security_group_id"],
        json!("sg-eks-cluster")
    );
    assert_eq!(
        live.properties["authentication_mode"],
        json!("API_AND_CONFIG_MAP")
    );
}

/// IAM is eventually consistent too (found by the fault proxy in front of moto): GetRole right
/// after CreateRole may answer NoSuchEntity; the role is read again until it shows, instead of
/// failing the create with "vanished after its creation".
#[tokio::test]
async fn a_new_iam_role_is_read_again_until_iam_shows_it() {
    use aws_sdk_iam::operation::create_role::CreateRoleOutput;
    use aws_sdk_iam::operation::get_role::{GetRoleError, GetRoleOutput};
    use aws_sdk_iam::operation::list_role_tags::ListRoleTagsOutput;
    use aws_sdk_iam::types::{Role, Tag};
    let no_such_entity = || {
        GetRoleError::generic(
            aws_sdk_iam::error::ErrorMetadata::builder()
                .code("NoSuchEntity")
                .message("The role with name c1-eks-node cannot be found.")
                .build(),
        )
    };
    // The adoption check finds nothing; then, after the create, NoSuchEntity twice more.
    let get = mock!(aws_sdk_iam::Client::get_role)
        .sequence()
        .error(no_such_entity)
        .times(3)
        .output(|| {
            GetRoleOutput::builder()
                .role(
                    Role::builder()
                        .role_name("c1-eks-node")
                        .role_id("AROAEXAMPLE")
                        .arn("arn:aws:iam::123456789012:role/c1-eks-node")
                        .path("/")
                        .create_date(aws_sdk_iam::primitives::DateTime::from_secs(0))
                        .build()
                        .unwrap(),
                )
                .build()
        })
        .repeatedly()
        .build();
    let create =
        mock!(aws_sdk_iam::Client::create_role).then_output(|| CreateRoleOutput::builder().build());
    let tags = mock!(aws_sdk_iam::Client::list_role_tags).then_output(|| {
        ListRoleTagsOutput::builder()
            .set_tags(Some(
                ownership()
                    .iter()
                    .map(|(k, v)| Tag::builder().key(k).value(v).build().unwrap())
                    .collect(),
            ))
            .build()
            .unwrap()
    });
    let provider = aws(Rules {
        iam: vec![&get, &create, &tags],
        ..Rules::default()
    });
    let live = bounded(provider.create(
        &call("aws.iam.role"),
        &props(json!({
            "name": "c1-eks-node",
            "assume_role_service": "ec2.amazonaws.com",
            "tags": {},
        })),
        &ownership(),
    ))
    .await
    .expect("created once IAM shows the role");
    assert_eq!(create.num_calls(), 1, "created once, read until visible");
    assert_eq!(get.num_calls(), 4);
    assert_eq!(live.id, "c1-eks-node");
}

#[tokio::test]
async fn another_invalid_parameter_of_create_cluster_is_not_retried() {
    use aws_sdk_eks::operation::create_cluster::CreateClusterError;
    let describe = mock!(aws_sdk_eks::Client::describe_cluster).then_error(cluster_not_found);
    let create = mock!(aws_sdk_eks::Client::create_cluster).then_error(|| {
        CreateClusterError::generic(aws_error(
            "InvalidParameterException",
            "unsupported Kubernetes version",
        ))
    });
    let provider = aws(Rules {
        eks: vec![&describe, &create],
        ..Rules::default()
    });
    let error = bounded(provider.create(
        &call("aws.eks.cluster"),
        &cluster_properties(),
        &ownership(),
    ))
    .await
    .unwrap_err();
    assert!(
        error.to_string().contains("unsupported Kubernetes version"),
        "{error}"
    );
    assert_eq!(create.num_calls(), 1);
}

// --- 4. EC2 eventual consistency ---

#[tokio::test]
async fn ec2_calls_naming_a_new_id_are_retried_until_it_has_propagated() {
    use aws_sdk_ec2::operation::authorize_security_group_ingress::{
        AuthorizeSecurityGroupIngressError, AuthorizeSecurityGroupIngressOutput,
    };
    use aws_sdk_ec2::operation::create_subnet::CreateSubnetOutput;
    use aws_sdk_ec2::operation::describe_security_group_rules::DescribeSecurityGroupRulesOutput;
    use aws_sdk_ec2::operation::describe_subnets::{DescribeSubnetsError, DescribeSubnetsOutput};
    use aws_sdk_ec2::operation::modify_subnet_attribute::{
        ModifySubnetAttributeError, ModifySubnetAttributeOutput,
    };
    use aws_sdk_ec2::types::{ReferencedSecurityGroup, SecurityGroupRule, Subnet};

    // A subnet: the adoption lookup (by tags) finds nothing; the new ID is unknown to
    // ModifySubnetAttribute twice and to DescribeSubnets once.
    let lookup = mock!(aws_sdk_ec2::Client::describe_subnets)
        .match_requests(|input| input.subnet_ids().is_empty())
        .then_output(|| DescribeSubnetsOutput::builder().build());
    let create = mock!(aws_sdk_ec2::Client::create_subnet).then_output(|| {
        CreateSubnetOutput::builder()
            .subnet(Subnet::builder().subnet_id("subnet-new").build())
            .build()
    });
    let not_found = |message: &str| {
        aws_error(
            "InvalidSubnetID.NotFound",
            &format!("The subnet ID '{message}' does not exist"),
        )
    };
    let modify = mock!(aws_sdk_ec2::Client::modify_subnet_attribute)
        .sequence()
        .error(move || ModifySubnetAttributeError::generic(not_found("subnet-new")))
        .times(2)
        .output(|| ModifySubnetAttributeOutput::builder().build())
        .build();
    let read = mock!(aws_sdk_ec2::Client::describe_subnets)
        .match_requests(|input| input.subnet_ids() == ["subnet-new"])
        .sequence()
        .error(move || DescribeSubnetsError::generic(not_found("subnet-new")))
        .output(|| {
            DescribeSubnetsOutput::builder()
                .subnets(
                    Subnet::builder()
                        .subnet_id("subnet-new")
                        .vpc_id("vpc-1")
                        .cidr_block("10.0.101.0/24")
                        .availability_zone("us-east-1a")
                        .map_public_ip_on_launch(true)
                        .build(),
                )
                .build()
        })
        .repeatedly()
        .build();
    // A rule on a group created a moment ago: InvalidGroup.NotFound once.
    let rules = mock!(aws_sdk_ec2::Client::describe_security_group_rules)
        .then_output(|| DescribeSecurityGroupRulesOutput::builder().build());
    let authorize = mock!(aws_sdk_ec2::Client::authorize_security_group_ingress)
        .sequence()
        .error(|| {
            AuthorizeSecurityGroupIngressError::generic(aws_error(
                "InvalidGroup.NotFound",
                "The security group 'sg-new' does not exist",
            ))
        })
        .output(|| {
            AuthorizeSecurityGroupIngressOutput::builder()
                .security_group_rules(
                    SecurityGroupRule::builder()
                        .security_group_rule_id("sgr-1")
                        .group_id("sg-new")
                        .is_egress(false)
                        .ip_protocol("tcp")
                        .from_port(5432)
                        .to_port(5432)
                        .referenced_group_info(
                            ReferencedSecurityGroup::builder()
                                .group_id("sg-eks-cluster")
                                .build(),
                        )
                        .build(),
                )
                .build()
        })
        .build();
    let provider = aws(Rules {
        ec2: vec![&lookup, &create, &modify, &read, &rules, &authorize],
        ..Rules::default()
    });
    let subnet = bounded(provider.create(
        &call("aws.ec2.subnet"),
        &props(json!({
            "vpc_id": "vpc-1",
            "cidr_block": "10.0.101.0/24",
            "availability_zone": "us-east-1a",
            "map_public_ip_on_launch": true,
            "tags": { "Name": "public" },
        })),
        &ownership(),
    ))
    .await
    .expect("created despite the new ID being unknown for a while");
    assert_eq!(subnet.id, "subnet-new");
    assert_eq!(create.num_calls(), 1, "created once");
    assert_eq!(modify.num_calls(), 3);
    let rule = bounded(provider.create(
        &call("aws.ec2.security_group_rule"),
        &props(json!({
            "security_group_id": "sg-new",
            "direction": "ingress",
            "protocol": "tcp",
            "from_port": 5432,
            "to_port": 5432,
            "source_security_group_id": "sg-eks-cluster",
        })),
        &ownership(),
    ))
    .await
    .expect("authorized once the group was known");
    assert_eq!(rule.id, "sgr-1");
    assert_eq!(authorize.num_calls(), 2);
}

#[tokio::test]
async fn an_id_that_never_appears_fails_at_the_propagation_bound() {
    use aws_sdk_ec2::operation::attach_internet_gateway::AttachInternetGatewayError;
    use aws_sdk_ec2::operation::create_internet_gateway::CreateInternetGatewayOutput;
    use aws_sdk_ec2::operation::describe_internet_gateways::DescribeInternetGatewaysOutput;
    use aws_sdk_ec2::types::InternetGateway;
    let lookup = mock!(aws_sdk_ec2::Client::describe_internet_gateways)
        .then_output(|| DescribeInternetGatewaysOutput::builder().build());
    let create = mock!(aws_sdk_ec2::Client::create_internet_gateway).then_output(|| {
        CreateInternetGatewayOutput::builder()
            .internet_gateway(
                InternetGateway::builder()
                    .internet_gateway_id("igw-1")
                    .build(),
            )
            .build()
    });
    let attach = mock!(aws_sdk_ec2::Client::attach_internet_gateway).then_error(|| {
        AttachInternetGatewayError::generic(aws_error(
            "InvalidVpcID.NotFound",
            "The vpc ID 'vpc-gone' does not exist",
        ))
    });
    let provider = AwsProvider::new(AwsContext::with_clients(
        Clients {
            ec2: client!(aws_sdk_ec2, &[&lookup, &create, &attach]),
            iam: client!(aws_sdk_iam, &[]),
            eks: client!(aws_sdk_eks, &[]),
            rds: client!(aws_sdk_rds, &[]),
            elasticache: client!(aws_sdk_elasticache, &[]),
            logs: client!(aws_sdk_cloudwatchlogs, &[]),
        },
        PollSettings {
            bound_scale: 0.001, // 2 minutes -> 120 ms
            ..fast()
        },
    ));
    let error = bounded(provider.create(
        &call("aws.ec2.internet_gateway"),
        &props(json!({ "vpc_id": "vpc-gone", "tags": {} })),
        &ownership(),
    ))
    .await
    .unwrap_err();
    let ProviderError::Failed(message) = error else {
        panic!("a failure, not {error:?}");
    };
    assert!(
        message.contains("InvalidVpcID.NotFound") && message.contains("still failing"),
        "{message}"
    );
    assert!(
        attach.num_calls() > 2,
        "retried ({} calls)",
        attach.num_calls()
    );
}

// --- 5. ElastiCache tags while not `available` ---

fn group(id: &str, status: &str, node_type: &str) -> aws_sdk_elasticache::types::ReplicationGroup {
    use aws_sdk_elasticache::types::{AutomaticFailoverStatus, Endpoint, NodeGroup};
    aws_sdk_elasticache::types::ReplicationGroup::builder()
        .replication_group_id(id)
        .arn(format!(
            "arn:aws:elasticache:us-east-1:123456789012:replicationgroup:{id}"
        ))
        .status(status)
        .cache_node_type(node_type)
        .automatic_failover(AutomaticFailoverStatus::Enabled)
        .member_clusters(format!("{id}-001"))
        .member_clusters(format!("{id}-002"))
        .node_groups(
            NodeGroup::builder()
                .primary_endpoint(
                    Endpoint::builder()
                        .address(format!("master.{id}.cache.amazonaws.com"))
                        .port(6379)
                        .build(),
                )
                .build(),
        )
        .build()
}

/// ElastiCache as it behaves around tagging: ListTagsForResource and AddTagsToResource are
/// refused while a group is not `available`, and tagging makes the group `modifying` for a
/// few polls. `statuses` holds each group's status.
struct CacheSim {
    statuses: Mutex<std::collections::HashMap<String, (String, u32)>>,
    tags: Mutex<std::collections::HashMap<String, Vec<(String, String)>>>,
    tag_calls_refused: Mutex<u32>,
}

impl CacheSim {
    fn status(&self, id: &str) -> String {
        let mut statuses = self.statuses.lock().unwrap();
        let entry = statuses
            .entry(id.to_owned())
            .or_insert(("available".to_owned(), 0));
        // `modifying` lasts a few polls, then the group is available again.
        if entry.0 == "modifying" {
            if entry.1 == 0 {
                entry.0 = "available".to_owned();
            } else {
                entry.1 -= 1;
            }
        }
        entry.0.clone()
    }

    fn id_of(arn: &str) -> String {
        arn.rsplit(':').next().unwrap_or_default().to_owned()
    }
}

#[tokio::test]
async fn a_modifying_cache_does_not_fail_refresh_or_drift_and_tag_changes_wait_until_it_is_available()
 {
    use aws_sdk_elasticache::operation::add_tags_to_resource::{
        AddTagsToResourceError, AddTagsToResourceOutput,
    };
    use aws_sdk_elasticache::operation::describe_cache_subnet_groups::DescribeCacheSubnetGroupsOutput;
    use aws_sdk_elasticache::operation::describe_replication_groups::DescribeReplicationGroupsOutput;
    use aws_sdk_elasticache::operation::list_tags_for_resource::{
        ListTagsForResourceError, ListTagsForResourceOutput,
    };
    use aws_sdk_elasticache::types::Tag;

    let sim = Arc::new(CacheSim {
        statuses: Mutex::new(
            [
                // Ours, modifying for two polls (another change is under way).
                ("mock-redis".to_owned(), ("modifying".to_owned(), 2)),
                // Another team's, modifying for a long time.
                ("payments-redis".to_owned(), ("modifying".to_owned(), 1_000)),
            ]
            .into_iter()
            .collect(),
        ),
        tags: Mutex::new(
            [(
                "mock-redis".to_owned(),
                ownership()
                    .into_iter()
                    .chain([("team".to_owned(), "platform".to_owned())])
                    .collect(),
            )]
            .into_iter()
            .collect(),
        ),
        tag_calls_refused: Mutex::new(0),
    });
    let s = sim.clone();
    let describe = mock!(aws_sdk_elasticache::Client::describe_replication_groups)
        .then_compute_output(move |input| {
            let ids: Vec<String> = match input.replication_group_id() {
                Some(id) => vec![id.to_owned()],
                None => vec!["mock-redis".to_owned(), "payments-redis".to_owned()],
            };
            let mut out = DescribeReplicationGroupsOutput::builder();
            for id in ids {
                out = out.replication_groups(group(&id, &s.status(&id), "cache.t4g.small"));
            }
            out.build()
        });
    let refused = || {
        aws_error(
            "InvalidReplicationGroupState",
            "Cluster not in available state to perform tagging operations.",
        )
    };
    let s = sim.clone();
    let list_tags = mock!(aws_sdk_elasticache::Client::list_tags_for_resource)
        .then_compute_response(move |input| {
            let id = CacheSim::id_of(input.resource_name().unwrap_or_default());
            if s.status(&id) != "available" {
                *s.tag_calls_refused.lock().unwrap() += 1;
                return MockResponse::Error(ListTagsForResourceError::generic(refused()));
            }
            let tags = s.tags.lock().unwrap().get(&id).cloned().unwrap_or_default();
            MockResponse::Output(
                ListTagsForResourceOutput::builder()
                    .set_tag_list(Some(
                        tags.into_iter()
                            .map(|(k, v)| Tag::builder().key(k).value(v).build())
                            .collect(),
                    ))
                    .build(),
            )
        });
    let s = sim.clone();
    let add_tags = mock!(aws_sdk_elasticache::Client::add_tags_to_resource).then_compute_response(
        move |input| {
            let id = CacheSim::id_of(input.resource_name().unwrap_or_default());
            if s.status(&id) != "available" {
                *s.tag_calls_refused.lock().unwrap() += 1;
                return MockResponse::Error(AddTagsToResourceError::generic(refused()));
            }
            let mut tags = s.tags.lock().unwrap();
            let entry = tags.entry(id.clone()).or_default();
            for tag in input.tags() {
                let key = tag.key().unwrap_or_default().to_owned();
                entry.retain(|(k, _)| *k != key);
                entry.push((key, tag.value().unwrap_or_default().to_owned()));
            }
            // Tagging itself makes the group `modifying` for a couple of polls.
            s.statuses
                .lock()
                .unwrap()
                .insert(id, ("modifying".to_owned(), 2));
            MockResponse::Output(AddTagsToResourceOutput::builder().build())
        },
    );
    let subnet_groups = mock!(aws_sdk_elasticache::Client::describe_cache_subnet_groups)
        .then_output(|| DescribeCacheSubnetGroupsOutput::builder().build());
    let provider = aws(Rules {
        elasticache: vec![&describe, &list_tags, &add_tags, &subnet_groups],
        ..Rules::default()
    });
    let kind = call("aws.elasticache.replication_group");

    // A refresh while it is modifying: no failure, and no `tags` reported (the recorded ones
    // stand) rather than "no tags" (drift).
    let live = bounded(provider.read(&kind, "mock-redis"))
        .await
        .expect("read while modifying")
        .expect("exists");
    assert!(
        !live.properties.contains_key("tags"),
        "{:?}",
        live.properties
    );
    assert_eq!(live.outputs["status"], json!("modifying"));

    // `drift`'s listing: another team's modifying group is not even asked for its tags.
    let refused_before = *sim.tag_calls_refused.lock().unwrap();
    let owned = bounded(provisioner::aws::elasticache::list_owned(
        provider.context(),
        &ownership(),
    ))
    .await
    .expect("listing does not fail on a modifying group");
    assert!(owned.iter().all(|o| o.id != "payments-redis"));
    assert_eq!(
        *sim.tag_calls_refused.lock().unwrap() - refused_before,
        0,
        "another team's group was left alone"
    );

    // A stack tag change: waits for `available`, tags, and leaves the group available.
    let wanted = props(json!({
        "replication_group_id": "mock-redis",
        "node_type": "cache.t4g.small",
        "num_cache_clusters": 2,
        "automatic_failover_enabled": true,
        "tags": { "team": "platform", "cost-center": "1234" },
    }));
    let updated = bounded(provider.update(&kind, "mock-redis", &wanted))
        .await
        .expect("tags changed");
    assert_eq!(add_tags.num_calls(), 1, "tagged once, when available");
    assert_eq!(updated.outputs["status"], json!("available"));
    assert_eq!(updated.properties["tags"]["cost-center"], json!("1234"));
}

// --- 6. Postgres versions ---

/// RDS's version rules, from the requests it sees: an older minor version than the running one
/// is refused ("Cannot upgrade postgres from 16.6 to 16.4"), a new major version needs
/// AllowMajorVersionUpgrade and a parameter group of the new family in the same call.
#[derive(Default)]
struct RdsVersionSim {
    modifications: Mutex<Vec<aws_sdk_rds::operation::modify_db_instance::ModifyDbInstanceInput>>,
}

fn rds_version_rules(
    sim: &Arc<RdsVersionSim>,
    running: &'static str,
    group: &'static str,
) -> (Rule, Rule) {
    use aws_sdk_rds::operation::describe_db_instances::DescribeDbInstancesOutput;
    use aws_sdk_rds::operation::modify_db_instance::{
        ModifyDBInstanceError, ModifyDbInstanceOutput,
    };
    let s = sim.clone();
    let modify = mock!(aws_sdk_rds::Client::modify_db_instance).then_compute_response(move |input| {
        let refuse = |message: String| {
            MockResponse::Error(ModifyDBInstanceError::generic(aws_error(
                "InvalidParameterCombination",
                &message,
            )))
        };
        if let Some(want) = input.engine_version() {
            let numbers = |v: &str| -> Vec<u64> { v.split('.').map(|p| p.parse().unwrap()).collect() };
            let (have, wanted) = (numbers(running), numbers(want));
            if wanted < have {
                return refuse(format!("Cannot upgrade postgres from {running} to {want}"));
            }
            if wanted[0] != have[0] {
                if input.allow_major_version_upgrade() != Some(true) {
                    return refuse(
                        "The AllowMajorVersionUpgrade flag must be present when upgrading to a new major version.".into(),
                    );
                }
                let family = format!("pg{}", wanted[0]);
                if !input.db_parameter_group_name().is_some_and(|g| g.ends_with(&family)) {
                    return refuse(format!(
                        "The parameter group {group} with DBParameterGroupFamily postgres{} can't be used for this instance. Use a parameter group with DBParameterGroupFamily postgres{}.",
                        have[0], wanted[0]
                    ));
                }
            }
        }
        s.modifications.lock().unwrap().push(input.clone());
        MockResponse::Output(ModifyDbInstanceOutput::builder().build())
    });
    let s = sim.clone();
    let describe =
        mock!(aws_sdk_rds::Client::describe_db_instances).then_compute_output(move |_| {
            // After a modification, the requested values show (status handling: item 7's test).
            let modifications = s.modifications.lock().unwrap();
            let last = modifications.last();
            let version = last.and_then(|m| m.engine_version()).unwrap_or(running);
            let class = last
                .and_then(|m| m.db_instance_class())
                .unwrap_or("db.t4g.medium");
            let group = last
                .and_then(|m| m.db_parameter_group_name())
                .unwrap_or(group);
            DescribeDbInstancesOutput::builder()
                .db_instances(db("available", version, class, group, "in-sync"))
                .build()
        });
    (modify, describe)
}

fn instance_properties(version: &str, class: &str, group: &str) -> IndexMap<String, Value> {
    props(json!({
        "identifier": "db-1",
        "engine": "postgres",
        "engine_version": version,
        "auto_minor_version_upgrade": true,
        "instance_class": class,
        "allocated_storage": 20,
        "multi_az": false,
        "deletion_protection": false,
        "backup_retention_period": 7,
        "vpc_security_group_ids": [],
        "parameter_group_name": group,
        "tags": {},
    }))
}

#[tokio::test]
async fn an_automatic_minor_upgrade_is_never_sent_back_and_a_major_upgrade_moves_the_parameter_group_in_the_same_call()
 {
    use provisioner::engine::planner::{PlanInput, plan};
    use provisioner::engine::types::TypeCatalog;

    // RDS moved the instance from 16.4 to 16.6 in a maintenance window; the stack still says
    // 16.4 and now asks for a bigger class.
    let sim = Arc::<RdsVersionSim>::default();
    let (modify, describe) = rds_version_rules(&sim, "16.6", "db-1-pg16");
    let tags = rds_tags();
    let first = aws(Rules {
        rds: vec![&modify, &describe, &tags],
        ..Rules::default()
    });
    let live = bounded(first.update(
        &call("aws.rds.instance"),
        "db-1",
        &instance_properties("16.4", "db.r6g.large", "db-1-pg16"),
    ))
    .await
    .expect("the class changes; 16.4 is not sent back");
    let sent = sim.modifications.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].engine_version(), None, "no version sent");
    assert_eq!(sent[0].db_instance_class(), Some("db.r6g.large"));
    assert_eq!(live.properties["engine_version"], json!("16.6"));

    // The planner: 16.6 running satisfies 16.4 asked (no change planned, no drift), 16.8 asked
    // is an upgrade, 17.2 too.
    let recorded = |version: &str| {
        serde_json::from_value::<provisioner::state::ResourceRecord>(json!({
            "address": "database.instance",
            "type": "aws.rds.instance",
            "id": "db-1",
            "properties": { "engine_version": version },
            "outputs": {},
            "updated_at": "2026-01-01T00:00:00Z",
        }))
        .unwrap()
    };
    let catalog = TypeCatalog::builtin();
    for (asked, changes) in [
        ("16.4", false),
        ("16.6", false),
        ("16.8", true),
        ("17.2", true),
    ] {
        let desired = provisioner::engine::DesiredSet {
            stack: "mock".into(),
            instance: None,
            resources: vec![
                provisioner::engine::DesiredResource::new("database.instance", "aws.rds.instance")
                    .with("engine_version", json!(asked)),
            ],
        };
        let mut state = provisioner::state::StateDocument::new("mock", None);
        state.serial = 1;
        state
            .resources
            .insert(Address::new("database.instance"), recorded("16.4"));
        let mut live = provisioner::engine::planner::LiveSnapshot::new();
        live.insert(
            Address::new("database.instance"),
            Some(provisioner::engine::provider::LiveResource {
                id: "db-1".into(),
                properties: props(json!({ "engine_version": "16.6" })),
                outputs: IndexMap::new(),
                tags: IndexMap::new(),
            }),
        );
        let plan = plan(&PlanInput {
            desired: &desired,
            state: Some(&state),
            live: Some(&live),
            catalog: &catalog,
        })
        .unwrap();
        assert_eq!(plan.has_changes(), changes, "16.6 running, {asked} asked");
    }

    // A major upgrade: engine version, AllowMajorVersionUpgrade and the new family's group go
    // in one ModifyDBInstance (the simulation refuses anything else).
    let sim = Arc::<RdsVersionSim>::default();
    let (modify, describe) = rds_version_rules(&sim, "16.6", "db-1-pg16");
    let tags = rds_tags();
    let provider = aws(Rules {
        rds: vec![&modify, &describe, &tags],
        ..Rules::default()
    });
    bounded(provider.update(
        &call("aws.rds.instance"),
        "db-1",
        &instance_properties("17.2", "db.t4g.medium", "db-1-pg17"),
    ))
    .await
    .expect("upgraded to 17.2");
    let sent = sim.modifications.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "one call");
    assert_eq!(sent[0].engine_version(), Some("17.2"));
    assert_eq!(sent[0].allow_major_version_upgrade(), Some(true));
    assert_eq!(sent[0].db_parameter_group_name(), Some("db-1-pg17"));
}

// --- 7. Waiters ---

#[tokio::test]
async fn a_modification_is_waited_for_until_it_shows_and_storage_optimization_counts_as_done() {
    use aws_sdk_rds::operation::describe_db_instances::DescribeDbInstancesOutput;
    use aws_sdk_rds::operation::modify_db_instance::ModifyDbInstanceOutput;
    let instance = |status: &str, class: &str, storage: i32| {
        let mut db = db(status, "16.4", class, "db-1-pg16", "in-sync");
        db.allocated_storage = Some(storage);
        DescribeDbInstancesOutput::builder()
            .db_instances(db)
            .build()
    };
    // Read, then right after ModifyDBInstance the status still reads `available` with the old
    // class twice, then `modifying`, then `available` with the new class.
    let describe = mock!(aws_sdk_rds::Client::describe_db_instances)
        .sequence()
        .output(move || instance("available", "db.t4g.medium", 20))
        .times(3)
        .output(move || instance("modifying", "db.t4g.medium", 20))
        .times(2)
        .output(move || instance("available", "db.r6g.large", 20))
        .repeatedly()
        .build();
    let modify = mock!(aws_sdk_rds::Client::modify_db_instance)
        .then_output(|| ModifyDbInstanceOutput::builder().build());
    let tags = rds_tags();
    let provider = aws(Rules {
        rds: vec![&describe, &modify, &tags],
        ..Rules::default()
    });
    let live = bounded(provider.update(
        &call("aws.rds.instance"),
        "db-1",
        &instance_properties("16.4", "db.r6g.large", "db-1-pg16"),
    ))
    .await
    .expect("modified");
    assert_eq!(live.properties["instance_class"], json!("db.r6g.large"));
    assert!(
        describe.num_calls() >= 7,
        "polled past the stale `available` ({} calls)",
        describe.num_calls()
    );

    // A storage change: `storage-optimization` for hours while the instance is usable; the
    // waiter accepts it (bounded, so a spin would fail this test).
    let describe = mock!(aws_sdk_rds::Client::describe_db_instances)
        .sequence()
        .output(move || instance("available", "db.t4g.medium", 20))
        .times(2)
        .output(move || instance("modifying", "db.t4g.medium", 20))
        .output(move || instance("storage-optimization", "db.t4g.medium", 100))
        .repeatedly()
        .build();
    let modify = mock!(aws_sdk_rds::Client::modify_db_instance)
        .match_requests(|input| input.allocated_storage() == Some(100))
        .then_output(|| ModifyDbInstanceOutput::builder().build());
    let tags = rds_tags();
    let provider = AwsProvider::new(AwsContext::with_clients(
        Clients {
            ec2: client!(aws_sdk_ec2, &[]),
            iam: client!(aws_sdk_iam, &[]),
            eks: client!(aws_sdk_eks, &[]),
            rds: client!(aws_sdk_rds, &[&describe, &modify, &tags]),
            elasticache: client!(aws_sdk_elasticache, &[]),
            logs: client!(aws_sdk_cloudwatchlogs, &[]),
        },
        PollSettings {
            bound_scale: 0.0005, // 40 minutes -> 1.2 s
            ..fast()
        },
    ));
    let mut grown = instance_properties("16.4", "db.t4g.medium", "db-1-pg16");
    grown.insert("allocated_storage".into(), json!(100));
    let live = bounded(provider.update(&call("aws.rds.instance"), "db-1", &grown))
        .await
        .expect("done while the storage is optimized");
    assert_eq!(live.outputs["status"], json!("storage-optimization"));
}

#[tokio::test]
async fn a_cache_modification_is_waited_for_until_the_new_node_type_shows() {
    use aws_sdk_elasticache::operation::describe_replication_groups::DescribeReplicationGroupsOutput;
    use aws_sdk_elasticache::operation::list_tags_for_resource::ListTagsForResourceOutput;
    use aws_sdk_elasticache::operation::modify_replication_group::ModifyReplicationGroupOutput;
    let answer = |status: &str, node_type: &str| {
        DescribeReplicationGroupsOutput::builder()
            .replication_groups(group("cache-1", status, node_type))
            .build()
    };
    let describe = mock!(aws_sdk_elasticache::Client::describe_replication_groups)
        .sequence()
        .output(move || answer("available", "cache.t4g.small"))
        .times(4)
        .output(move || answer("modifying", "cache.t4g.small"))
        .times(2)
        .output(move || answer("available", "cache.r6g.large"))
        .repeatedly()
        .build();
    let modify = mock!(aws_sdk_elasticache::Client::modify_replication_group)
        .then_output(|| ModifyReplicationGroupOutput::builder().build());
    let tags = mock!(aws_sdk_elasticache::Client::list_tags_for_resource)
        .then_output(|| ListTagsForResourceOutput::builder().build());
    let provider = aws(Rules {
        elasticache: vec![&describe, &modify, &tags],
        ..Rules::default()
    });
    let live = bounded(provider.update(
        &call("aws.elasticache.replication_group"),
        "cache-1",
        &props(json!({
            "replication_group_id": "cache-1",
            "node_type": "cache.r6g.large",
            "num_cache_clusters": 2,
            "automatic_failover_enabled": true,
            "tags": {},
        })),
    ))
    .await
    .expect("modified");
    assert_eq!(modify.num_calls(), 1);
    assert_eq!(live.properties["node_type"], json!("cache.r6g.large"));
    assert!(describe.num_calls() >= 7, "{} polls", describe.num_calls());
}

// --- 8. Deletes while not ready ---

#[tokio::test]
async fn deletes_refused_while_creating_or_snapshotting_are_retried_until_accepted() {
    use aws_sdk_elasticache::operation::delete_replication_group::{
        DeleteReplicationGroupError, DeleteReplicationGroupOutput,
    };
    use aws_sdk_elasticache::operation::describe_replication_groups::{
        DescribeReplicationGroupsError, DescribeReplicationGroupsOutput,
    };
    use aws_sdk_rds::operation::delete_db_instance::{
        DeleteDBInstanceError, DeleteDbInstanceOutput,
    };
    use aws_sdk_rds::operation::describe_db_instances::{
        DescribeDBInstancesError, DescribeDbInstancesOutput,
    };

    // RDS: an instance left `creating` by an interrupted `up`. RDS refuses a final snapshot
    // until it is available; the simulation refuses any delete sent while it is `creating`.
    let status = Arc::new(Mutex::new((String::from("creating"), 3u32)));
    let s = status.clone();
    let describe =
        mock!(aws_sdk_rds::Client::describe_db_instances).then_compute_response(move |_| {
            let mut state = s.lock().unwrap();
            if state.0 == "creating" {
                if state.1 == 0 {
                    state.0 = "available".into();
                } else {
                    state.1 -= 1;
                }
            }
            match state.0.as_str() {
                "gone" => MockResponse::Error(DescribeDBInstancesError::generic(aws_error(
                    "DBInstanceNotFound",
                    "DBInstance db-1 not found.",
                ))),
                status => MockResponse::Output(
                    DescribeDbInstancesOutput::builder()
                        .db_instances(db(status, "16.4", "db.t4g.medium", "db-1-pg16", "in-sync"))
                        .build(),
                ),
            }
        });
    let refused = Arc::new(Mutex::new(0u32));
    let (s, r) = (status.clone(), refused.clone());
    let delete =
        mock!(aws_sdk_rds::Client::delete_db_instance).then_compute_response(move |input| {
            let mut state = s.lock().unwrap();
            if state.0 == "creating" {
                *r.lock().unwrap() += 1;
                return MockResponse::Error(DeleteDBInstanceError::generic(aws_error(
                    "InvalidDBInstanceState",
                    "Instance db-1 is currently creating - a final snapshot cannot be taken.",
                )));
            }
            assert!(
                input
                    .final_db_snapshot_identifier()
                    .is_some_and(|s| s.starts_with("db-1-final-"))
            );
            state.0 = "gone".into();
            MockResponse::Output(DeleteDbInstanceOutput::builder().build())
        });
    let provider = aws(Rules {
        rds: vec![&describe, &delete],
        ..Rules::default()
    });
    bounded(provider.delete(&call("aws.rds.instance"), "db-1"))
        .await
        .expect("deleted once available, with its final snapshot");
    assert_eq!(delete.num_calls(), 1, "deleted once, after `creating`");
    assert_eq!(*refused.lock().unwrap(), 0, "never sent while creating");

    // ElastiCache: a group `snapshotting` (its daily backup) refuses deletion twice.
    let answer = |status: &str| {
        DescribeReplicationGroupsOutput::builder()
            .replication_groups(group("cache-1", status, "cache.t4g.small"))
            .build()
    };
    let describe = mock!(aws_sdk_elasticache::Client::describe_replication_groups)
        .sequence()
        .output(move || answer("snapshotting"))
        .output(move || answer("deleting"))
        .times(2)
        .error(|| {
            DescribeReplicationGroupsError::generic(aws_error(
                "ReplicationGroupNotFoundFault",
                "ReplicationGroup cache-1 not found.",
            ))
        })
        .repeatedly()
        .build();
    let delete = mock!(aws_sdk_elasticache::Client::delete_replication_group)
        .sequence()
        .error(|| {
            DeleteReplicationGroupError::generic(aws_error(
                "InvalidReplicationGroupState",
                "Replication group cache-1 has status snapshotting which is not valid for deletion.",
            ))
        })
        .times(2)
        .output(|| DeleteReplicationGroupOutput::builder().build())
        .build();
    let provider = aws(Rules {
        elasticache: vec![&describe, &delete],
        ..Rules::default()
    });
    bounded(provider.delete(&call("aws.elasticache.replication_group"), "cache-1"))
        .await
        .expect("deleted once the snapshot finished");
    assert_eq!(delete.num_calls(), 3);
}

// --- 9. Adoption after a crash ---

#[tokio::test]
async fn an_adopted_cluster_or_instance_still_creating_is_waited_for_before_its_outputs_are_used() {
    use aws_sdk_eks::operation::describe_cluster::DescribeClusterOutput;
    use aws_sdk_eks::types::ClusterStatus;
    use aws_sdk_rds::operation::describe_db_instances::DescribeDbInstancesOutput;
    use aws_sdk_rds::operation::list_tags_for_resource::ListTagsForResourceOutput;
    use aws_sdk_rds::types::{Endpoint, Tag};

    // EKS: the create an interrupted `up` sent made the cluster; it is CREATING, without an
    // endpoint or OIDC issuer yet.
    let describe = mock!(aws_sdk_eks::Client::describe_cluster)
        .sequence()
        .output(|| {
            DescribeClusterOutput::builder()
                .cluster(cluster(ClusterStatus::Creating, "1.31").build())
                .build()
        })
        .times(4)
        .output(|| {
            DescribeClusterOutput::builder()
                .cluster(with_logging(active_cluster("1.31"), &["api", "audit"]))
                .build()
        })
        .repeatedly()
        .build();
    let create = mock!(aws_sdk_eks::Client::create_cluster).then_output(|| {
        aws_sdk_eks::operation::create_cluster::CreateClusterOutput::builder().build()
    });
    let provider = aws(Rules {
        eks: vec![&describe, &create],
        ..Rules::default()
    });
    let live = bounded(provider.create(
        &call("aws.eks.cluster"),
        &cluster_properties(),
        &ownership(),
    ))
    .await
    .expect("adopted");
    assert_eq!(create.num_calls(), 0, "adopted, not created again");
    assert_eq!(
        live.outputs["oidc_issuer"],
        json!("https://oidc.eks.us-east-1.amazonaws.com/id/C1"),
        "the OIDC provider gets a URL"
    );
    assert!(live.outputs["endpoint"].is_string());

    // RDS: the instance is `creating`, without an endpoint.
    let creating = || {
        DescribeDbInstancesOutput::builder()
            .db_instances(db(
                "creating",
                "16.4",
                "db.t4g.medium",
                "db-1-pg16",
                "in-sync",
            ))
            .build()
    };
    let available = || {
        let mut instance = db("available", "16.4", "db.t4g.medium", "db-1-pg16", "in-sync");
        instance.endpoint = Some(
            Endpoint::builder()
                .address("db-1.abc.us-east-1.rds.amazonaws.com")
                .port(5432)
                .build(),
        );
        DescribeDbInstancesOutput::builder()
            .db_instances(instance)
            .build()
    };
    let describe = mock!(aws_sdk_rds::Client::describe_db_instances)
        .sequence()
        .output(creating)
        .times(3)
        .output(available)
        .repeatedly()
        .build();
    let tags = mock!(aws_sdk_rds::Client::list_tags_for_resource).then_output(|| {
        ListTagsForResourceOutput::builder()
            .set_tag_list(Some(
                ownership()
                    .into_iter()
                    .map(|(k, v)| Tag::builder().key(k).value(v).build())
                    .collect(),
            ))
            .build()
    });
    let create = mock!(aws_sdk_rds::Client::create_db_instance).then_output(|| {
        aws_sdk_rds::operation::create_db_instance::CreateDbInstanceOutput::builder().build()
    });
    let provider = aws(Rules {
        rds: vec![&describe, &tags, &create],
        ..Rules::default()
    });
    let live = bounded(provider.create(
        &call("aws.rds.instance"),
        &instance_properties("16.4", "db.t4g.medium", "db-1-pg16"),
        &ownership(),
    ))
    .await
    .expect("adopted");
    assert_eq!(create.num_calls(), 0);
    assert_eq!(
        live.outputs["address"],
        json!("db-1.abc.us-east-1.rds.amazonaws.com")
    );
}

fn with_logging(
    mut cluster: aws_sdk_eks::types::Cluster,
    types: &[&str],
) -> aws_sdk_eks::types::Cluster {
    use aws_sdk_eks::types::{LogSetup, LogType, Logging};
    cluster.logging = Some(
        Logging::builder()
            .cluster_logging(
                LogSetup::builder()
                    .set_types(Some(types.iter().map(|t| LogType::from(*t)).collect()))
                    .enabled(true)
                    .build(),
            )
            .build(),
    );
    cluster
}

// --- 10. Subnet deletes blocked by ENIs ---

#[tokio::test]
async fn a_subnet_blocked_by_interfaces_that_detach_later_is_swept_and_deleted() {
    use aws_sdk_ec2::operation::delete_network_interface::DeleteNetworkInterfaceOutput;
    use aws_sdk_ec2::operation::delete_subnet::{DeleteSubnetError, DeleteSubnetOutput};
    use aws_sdk_ec2::operation::describe_network_interfaces::DescribeNetworkInterfacesOutput;
    use aws_sdk_ec2::types::{NetworkInterface, NetworkInterfaceStatus};
    // The VPC CNI's interface is still attached at first (its node is terminating), then
    // detached; DeleteSubnet answers DependencyViolation while it exists.
    let interface = |status: NetworkInterfaceStatus| {
        DescribeNetworkInterfacesOutput::builder()
            .network_interfaces(
                NetworkInterface::builder()
                    .network_interface_id("eni-cni")
                    .subnet_id("subnet-1")
                    .status(status)
                    .description("aws-K8S-i-0123456789abcdef0")
                    .build(),
            )
            .build()
    };
    let deleted = Arc::new(Mutex::new(false));
    let d = deleted.clone();
    let enis = mock!(aws_sdk_ec2::Client::describe_network_interfaces)
        .match_requests(|input| {
            input
                .filters()
                .iter()
                .any(|f| f.name() == Some("subnet-id") && f.values() == ["subnet-1"])
        })
        .sequence()
        .output(move || interface(NetworkInterfaceStatus::InUse))
        .output(move || interface(NetworkInterfaceStatus::Available))
        .output(|| DescribeNetworkInterfacesOutput::builder().build())
        .repeatedly()
        .build();
    let delete_eni = mock!(aws_sdk_ec2::Client::delete_network_interface)
        .match_requests(|input| input.network_interface_id() == Some("eni-cni"))
        .then_compute_output(move |_| {
            *d.lock().unwrap() = true;
            DeleteNetworkInterfaceOutput::builder().build()
        });
    let d = deleted.clone();
    let delete = mock!(aws_sdk_ec2::Client::delete_subnet).then_compute_response(move |_| {
        if *d.lock().unwrap() {
            MockResponse::Output(DeleteSubnetOutput::builder().build())
        } else {
            MockResponse::Error(DeleteSubnetError::generic(aws_error(
                "DependencyViolation",
                "The subnet 'subnet-1' has dependencies and cannot be deleted.",
            )))
        }
    });
    let provider = aws(Rules {
        ec2: vec![&enis, &delete_eni, &delete],
        ..Rules::default()
    });
    bounded(provider.delete(&call("aws.ec2.subnet"), "subnet-1"))
        .await
        .expect("deleted once its detached interface was removed");
    assert_eq!(delete_eni.num_calls(), 1, "the attached one was left alone");
    assert_eq!(delete.num_calls(), 2);
}

// --- 11, 12, 13. EKS: no-op updates, version upgrades, access ---

/// EKS's control plane as its API behaves: UpdateClusterConfig takes one kind of update and
/// refuses one that changes nothing; UpdateClusterVersion goes one minor version at a time and
/// only with every managed node group at the control plane's version; a node group cannot be
/// newer than its cluster.
struct EksSim {
    state: Mutex<EksState>,
    calls: Mutex<Vec<String>>,
}

#[derive(Clone)]
struct EksState {
    version: (u32, u32),
    node_groups: Vec<(String, (u32, u32))>,
    public: bool,
    private: bool,
    cidrs: Vec<String>,
    logs: Vec<String>,
    mode: &'static str,
}

fn ver(v: (u32, u32)) -> String {
    format!("{}.{}", v.0, v.1)
}

fn parse_ver(v: &str) -> (u32, u32) {
    let (a, b) = v.split_once('.').unwrap();
    (a.parse().unwrap(), b.parse().unwrap())
}

fn eks_sim(state: EksState) -> (Arc<EksSim>, Vec<Rule>) {
    use aws_sdk_eks::operation::describe_cluster::DescribeClusterOutput;
    use aws_sdk_eks::operation::describe_nodegroup::DescribeNodegroupOutput;
    use aws_sdk_eks::operation::describe_update::DescribeUpdateOutput;
    use aws_sdk_eks::operation::list_nodegroups::ListNodegroupsOutput;
    use aws_sdk_eks::operation::update_cluster_config::{
        UpdateClusterConfigError, UpdateClusterConfigOutput,
    };
    use aws_sdk_eks::operation::update_cluster_version::{
        UpdateClusterVersionError, UpdateClusterVersionOutput,
    };
    use aws_sdk_eks::operation::update_nodegroup_version::{
        UpdateNodegroupVersionError, UpdateNodegroupVersionOutput,
    };
    use aws_sdk_eks::types::{
        AccessConfigResponse, AuthenticationMode, Nodegroup, NodegroupStatus, Update, UpdateStatus,
        VpcConfigResponse,
    };
    let sim = Arc::new(EksSim {
        state: Mutex::new(state),
        calls: Mutex::new(Vec::new()),
    });
    let update = |id: &str| {
        Update::builder()
            .id(id)
            .status(UpdateStatus::InProgress)
            .build()
    };
    let s = sim.clone();
    let describe = mock!(aws_sdk_eks::Client::describe_cluster).then_compute_output(move |_| {
        let st = s.state.lock().unwrap().clone();
        let mut c = active_cluster(&ver(st.version));
        c.resources_vpc_config = Some(
            VpcConfigResponse::builder()
                .subnet_ids("subnet-1")
                .subnet_ids("subnet-2")
                .security_group_ids("sg-control-plane")
                .cluster_security_group_id("sg-eks-cluster")
                .endpoint_public_access(st.public)
                .endpoint_private_access(st.private)
                .set_public_access_cidrs(Some(st.cidrs.clone()))
                .build(),
        );
        c.access_config = Some(
            AccessConfigResponse::builder()
                .authentication_mode(AuthenticationMode::from(st.mode))
                .build(),
        );
        let logs: Vec<&str> = st.logs.iter().map(String::as_str).collect();
        DescribeClusterOutput::builder()
            .cluster(with_logging(c, &logs))
            .build()
    });
    let s = sim.clone();
    let config = mock!(aws_sdk_eks::Client::update_cluster_config).then_compute_response(move |input| {
        let refuse = |message: String| {
            MockResponse::Error(UpdateClusterConfigError::generic(aws_error(
                "InvalidParameterException",
                &message,
            )))
        };
        let kinds = [
            input.resources_vpc_config().is_some(),
            input.logging().is_some(),
            input.access_config().is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return refuse("Only one type of update can be allowed.".into());
        }
        let mut st = s.state.lock().unwrap();
        if let Some(vpc) = input.resources_vpc_config() {
            let mut next = st.clone();
            next.public = vpc.endpoint_public_access().unwrap_or(st.public);
            next.private = vpc.endpoint_private_access().unwrap_or(st.private);
            if let Some(cidrs) = vpc.public_access_cidrs().first().map(|_| vpc.public_access_cidrs()) {
                next.cidrs = cidrs.to_vec();
            }
            if (next.public, next.private, &next.cidrs) == (st.public, st.private, &st.cidrs) {
                return refuse(format!(
                    "Cluster is already at the desired configuration with endpointPrivateAccess: {} , endpointPublicAccess: {}, and Public Endpoint Restrictions: [{}]",
                    st.private, st.public, st.cidrs.join(", ")
                ));
            }
            *st = next;
        }
        if let Some(logging) = input.logging() {
            let mut enabled: Vec<String> = st.logs.clone();
            for setup in logging.cluster_logging() {
                for t in setup.types() {
                    let t = t.as_str().to_owned();
                    enabled.retain(|e| *e != t);
                    if setup.enabled() == Some(true) {
                        enabled.push(t);
                    }
                }
            }
            enabled.sort();
            let mut before = st.logs.clone();
            before.sort();
            if enabled == before {
                return refuse("No changes needed for the logging config provided".into());
            }
            st.logs = enabled;
        }
        if let Some(access) = input.access_config() {
            st.mode = match access.authentication_mode().map(|m| m.as_str()) {
                Some("API_AND_CONFIG_MAP") => "API_AND_CONFIG_MAP",
                Some("API") => "API",
                _ => return refuse("Unsupported authentication mode update".into()),
            };
        }
        s.calls.lock().unwrap().push("UpdateClusterConfig".into());
        MockResponse::Output(UpdateClusterConfigOutput::builder().update(update("u-config")).build())
    });
    let s = sim.clone();
    let version = mock!(aws_sdk_eks::Client::update_cluster_version).then_compute_response(move |input| {
        let mut st = s.state.lock().unwrap();
        let want = parse_ver(input.version().unwrap_or_default());
        if want != (st.version.0, st.version.1 + 1) {
            return MockResponse::Error(UpdateClusterVersionError::generic(aws_error(
                "InvalidParameterException",
                &format!(
                    "Unsupported Kubernetes minor version update from {} to {}",
                    ver(st.version),
                    ver(want)
                ),
            )));
        }
        let behind: Vec<String> = st
            .node_groups
            .iter()
            .filter(|(_, v)| *v != st.version)
            .map(|(n, _)| n.clone())
            .collect();
        if !behind.is_empty() {
            return MockResponse::Error(UpdateClusterVersionError::generic(aws_error(
                "InvalidRequestException",
                &format!(
                    "Nodegroups {} must be updated to match cluster version {} before updating cluster version",
                    behind.join(", "),
                    ver(st.version)
                ),
            )));
        }
        st.version = want;
        s.calls.lock().unwrap().push(format!("UpdateClusterVersion {}", ver(want)));
        MockResponse::Output(UpdateClusterVersionOutput::builder().update(update("u-version")).build())
    });
    let s = sim.clone();
    let list = mock!(aws_sdk_eks::Client::list_nodegroups).then_compute_output(move |_| {
        let st = s.state.lock().unwrap();
        ListNodegroupsOutput::builder()
            .set_nodegroups(Some(
                st.node_groups.iter().map(|(n, _)| n.clone()).collect(),
            ))
            .build()
    });
    let s = sim.clone();
    let describe_group =
        mock!(aws_sdk_eks::Client::describe_nodegroup).then_compute_output(move |input| {
            let st = s.state.lock().unwrap();
            let name = input.nodegroup_name().unwrap_or_default();
            let version = st
                .node_groups
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| ver(*v))
                .unwrap_or_default();
            DescribeNodegroupOutput::builder()
                .nodegroup(
                    Nodegroup::builder()
                        .nodegroup_name(name)
                        .cluster_name("c1")
                        .version(version)
                        .status(NodegroupStatus::Active)
                        .set_tags(Some(ownership_map()))
                        .build(),
                )
                .build()
        });
    let s = sim.clone();
    let upgrade_group =
        mock!(aws_sdk_eks::Client::update_nodegroup_version).then_compute_response(move |input| {
            let mut st = s.state.lock().unwrap();
            let want = parse_ver(input.version().unwrap_or_default());
            if want > st.version {
                return MockResponse::Error(UpdateNodegroupVersionError::generic(aws_error(
                    "InvalidParameterException",
                    &format!(
                        "Requested Nodegroup version {} is invalid: the cluster runs {}",
                        ver(want),
                        ver(st.version)
                    ),
                )));
            }
            let cluster_version = st.version;
            let name = input.nodegroup_name().unwrap_or_default().to_owned();
            if let Some(group) = st.node_groups.iter_mut().find(|(n, _)| *n == name) {
                group.1 = want;
            }
            let _ = cluster_version;
            s.calls
                .lock()
                .unwrap()
                .push(format!("UpdateNodegroupVersion {name} {}", ver(want)));
            MockResponse::Output(
                UpdateNodegroupVersionOutput::builder()
                    .update(update("u-group"))
                    .build(),
            )
        });
    let progress = mock!(aws_sdk_eks::Client::describe_update).then_output(|| {
        DescribeUpdateOutput::builder()
            .update(Update::builder().status(UpdateStatus::Successful).build())
            .build()
    });
    (
        sim,
        vec![
            describe,
            config,
            version,
            list,
            describe_group,
            upgrade_group,
            progress,
        ],
    )
}

fn eks_provider(rules: &[Rule]) -> AwsProvider {
    let refs: Vec<&Rule> = rules.iter().collect();
    aws(Rules {
        eks: refs,
        ..Rules::default()
    })
}

fn initial(version: (u32, u32)) -> EksState {
    EksState {
        version,
        node_groups: vec![("system".into(), version), ("workers".into(), version)],
        public: true,
        private: true,
        cidrs: vec!["0.0.0.0/0".into()],
        logs: vec!["api".into(), "audit".into()],
        mode: "API_AND_CONFIG_MAP",
    }
}

#[tokio::test]
async fn eks_updates_that_change_nothing_are_not_sent_and_removing_public_cidrs_reopens_the_endpoint()
 {
    // Live: the endpoint restricted to one CIDR; logging api+audit.
    let mut state = initial((1, 31));
    state.cidrs = vec!["203.0.113.0/24".into()];
    let (sim, rules) = eks_sim(state);
    let provider = eks_provider(&rules);
    // The stack lists the log types in its own order and removed `public_cidrs`.
    let mut wanted = cluster_properties();
    wanted.insert("enabled_log_types".into(), json!(["audit", "api"]));
    let live = bounded(provider.update(&call("aws.eks.cluster"), "c1", &wanted))
        .await
        .expect("updated");
    assert_eq!(
        sim.state.lock().unwrap().cidrs,
        ["0.0.0.0/0"],
        "the endpoint is open again (sending no CIDRs would keep the old ones)"
    );
    assert_eq!(
        *sim.calls.lock().unwrap(),
        ["UpdateClusterConfig"],
        "one endpoint update; no logging update for the same set in another order"
    );
    assert_eq!(live.properties["public_access_cidrs"], json!([]));

    // The same again changes nothing and sends nothing (EKS would refuse it).
    bounded(provider.update(&call("aws.eks.cluster"), "c1", &wanted))
        .await
        .expect("a second update is a no-op");
    assert_eq!(sim.calls.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_two_minor_upgrade_steps_through_each_version_with_the_node_groups_following() {
    let (sim, rules) = eks_sim(initial((1, 29)));
    let provider = eks_provider(&rules);
    let mut wanted = cluster_properties();
    wanted.insert("version".into(), json!("1.31"));
    bounded(provider.update(&call("aws.eks.cluster"), "c1", &wanted))
        .await
        .expect("upgraded 1.29 -> 1.31");
    assert_eq!(
        *sim.calls.lock().unwrap(),
        [
            "UpdateClusterVersion 1.30",
            "UpdateNodegroupVersion system 1.30",
            "UpdateNodegroupVersion workers 1.30",
            "UpdateClusterVersion 1.31",
        ],
        "the simulation refuses any other order"
    );
    // Then each node group's own update (it depends on the cluster) brings it to 1.31.
    let group = props(json!({
        "cluster_name": "c1",
        "node_group_name": "workers",
        "version": "1.31",
    }));
    let mut group_props = group.clone();
    // Only the version is compared here: the other attributes as EKS reports them.
    for (k, v) in [
        (
            "scaling",
            json!({ "min": null, "desired": null, "max": null }),
        ),
        ("labels", json!({})),
        ("taints", json!([])),
    ] {
        group_props.insert(k.into(), v);
    }
    let live = bounded(provider.update(&call("aws.eks.node_group"), "c1/workers", &group_props))
        .await
        .expect("node group upgraded");
    assert_eq!(live.properties["version"], json!("1.31"));
    assert_eq!(
        sim.calls.lock().unwrap().last().map(String::as_str),
        Some("UpdateNodegroupVersion workers 1.31")
    );

    // A downgrade is refused before any call, naming what to write.
    let calls = sim.calls.lock().unwrap().len();
    wanted.insert("version".into(), json!("1.30"));
    let error = bounded(provider.update(&call("aws.eks.cluster"), "c1", &wanted))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("cannot downgrade"), "{error}");
    assert_eq!(sim.calls.lock().unwrap().len(), calls);
}

#[tokio::test]
async fn a_config_map_cluster_moves_to_access_entries_and_each_admin_gets_the_cluster_admin_policy()
{
    use aws_sdk_eks::operation::associate_access_policy::AssociateAccessPolicyOutput;
    use aws_sdk_eks::operation::create_access_entry::CreateAccessEntryOutput;
    use aws_sdk_eks::operation::describe_access_entry::DescribeAccessEntryOutput;
    use aws_sdk_eks::operation::list_associated_access_policies::ListAssociatedAccessPoliciesOutput;
    use aws_sdk_eks::types::{AccessEntry, AccessScope, AccessScopeType, AssociatedAccessPolicy};

    // A cluster made before access entries: CONFIG_MAP only.
    let mut state = initial((1, 31));
    state.mode = "CONFIG_MAP";
    let (sim, rules) = eks_sim(state);
    let provider = eks_provider(&rules);
    bounded(provider.update(&call("aws.eks.cluster"), "c1", &cluster_properties()))
        .await
        .expect("moved to API_AND_CONFIG_MAP");
    assert_eq!(sim.state.lock().unwrap().mode, "API_AND_CONFIG_MAP");

    // An administrator's access entry.
    const ADMIN: &str = "arn:aws:iam::123456789012:role/platform-admins";
    const POLICY: &str = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy";
    let associated = Arc::new(Mutex::new(Vec::<String>::new()));
    let create = mock!(aws_sdk_eks::Client::create_access_entry)
        .match_requests(|input| {
            input.cluster_name() == Some("c1")
                && input.principal_arn() == Some(ADMIN)
                && input.r#type() == Some("STANDARD")
        })
        .then_output(|| CreateAccessEntryOutput::builder().build());
    let describe = mock!(aws_sdk_eks::Client::describe_access_entry).then_output(|| {
        DescribeAccessEntryOutput::builder()
            .access_entry(
                AccessEntry::builder()
                    .cluster_name("c1")
                    .principal_arn(ADMIN)
                    .access_entry_arn("arn:aws:eks:us-east-1:123456789012:access-entry/c1/role/x")
                    .set_tags(Some(ownership_map()))
                    .build(),
            )
            .build()
    });
    let a = associated.clone();
    let list = mock!(aws_sdk_eks::Client::list_associated_access_policies).then_compute_output(
        move |_| {
            let mut out = ListAssociatedAccessPoliciesOutput::builder();
            for policy in a.lock().unwrap().iter() {
                out = out.associated_access_policies(
                    AssociatedAccessPolicy::builder()
                        .policy_arn(policy)
                        .access_scope(
                            AccessScope::builder()
                                .r#type(AccessScopeType::Cluster)
                                .build(),
                        )
                        .build(),
                );
            }
            out.build()
        },
    );
    let a = associated.clone();
    let associate = mock!(aws_sdk_eks::Client::associate_access_policy)
        .match_requests(|input| {
            input.access_scope().and_then(|s| s.r#type()) == Some(&AccessScopeType::Cluster)
        })
        .then_compute_output(move |input| {
            a.lock()
                .unwrap()
                .push(input.policy_arn().unwrap_or_default().to_owned());
            AssociateAccessPolicyOutput::builder().build()
        });
    let provider = aws(Rules {
        eks: vec![&create, &describe, &list, &associate],
        ..Rules::default()
    });
    let entry = props(json!({
        "cluster_name": "c1",
        "principal_arn": ADMIN,
        "policy_arn": POLICY,
        "access_scope": "cluster",
        "tags": {},
    }));
    let live = bounded(provider.create(&call("aws.eks.access_entry"), &entry, &ownership()))
        .await
        .expect("access entry created");
    assert_eq!(live.id, format!("c1/{ADMIN}"));
    assert_eq!(live.properties["policy_arn"], json!(POLICY));
    assert_eq!(live.properties["access_scope"], json!("cluster"));
    assert_eq!(*associated.lock().unwrap(), [POLICY]);
    // Reading it back is what state recorded: no change.
    let read = bounded(provider.read(&call("aws.eks.access_entry"), &live.id))
        .await
        .unwrap()
        .unwrap();
    for key in [
        "cluster_name",
        "principal_arn",
        "policy_arn",
        "access_scope",
    ] {
        assert_eq!(read.properties[key], entry[key], "{key}");
    }
}

// --- 14. Architecture, zones, partition ---

#[tokio::test]
async fn node_groups_are_created_with_their_version_and_ami_type() {
    use aws_sdk_eks::operation::create_nodegroup::CreateNodegroupOutput;
    use aws_sdk_eks::operation::describe_nodegroup::{
        DescribeNodegroupError, DescribeNodegroupOutput,
    };
    use aws_sdk_eks::types::{AmiTypes, Nodegroup, NodegroupStatus};
    let describe = mock!(aws_sdk_eks::Client::describe_nodegroup)
        .sequence()
        .error(|| {
            DescribeNodegroupError::generic(aws_error(
                "ResourceNotFoundException",
                "No node group found for name: graviton.",
            ))
        })
        .output(|| {
            DescribeNodegroupOutput::builder()
                .nodegroup(
                    Nodegroup::builder()
                        .nodegroup_name("graviton")
                        .version("1.31")
                        .ami_type(AmiTypes::Al2023Arm64Standard)
                        .status(NodegroupStatus::Active)
                        .build(),
                )
                .build()
        })
        .repeatedly()
        .build();
    // Without amiType EKS picks an x86 AMI and refuses Graviton instance types.
    let create = mock!(aws_sdk_eks::Client::create_nodegroup)
        .match_requests(|input| {
            input.ami_type() == Some(&AmiTypes::Al2023Arm64Standard)
                && input.version() == Some("1.31")
        })
        .then_output(|| CreateNodegroupOutput::builder().build());
    let provider = aws(Rules {
        eks: vec![&describe, &create],
        ..Rules::default()
    });
    let live = bounded(provider.create(
        &call("aws.eks.node_group"),
        &props(json!({
            "cluster_name": "c1",
            "node_group_name": "graviton",
            "node_role_arn": "arn:aws:iam::123456789012:role/c1-eks-node",
            "subnet_ids": ["subnet-1"],
            "instance_types": ["m7g.large"],
            "capacity_type": "ON_DEMAND",
            "disk_size": 20,
            "scaling": { "min": 1, "desired": 1, "max": 2 },
            "labels": {},
            "taints": [],
            "version": "1.31",
            "ami_type": "AL2023_ARM_64_STANDARD",
        })),
        &ownership(),
    ))
    .await
    .expect("created");
    assert_eq!(create.num_calls(), 1);
    assert_eq!(live.properties["ami_type"], json!("AL2023_ARM_64_STANDARD"));
}

/// Item 3 for node groups: the node role is made moments before CreateNodegroup, which EKS
/// refuses the same way as CreateCluster until IAM has propagated it.
#[tokio::test]
async fn create_nodegroup_is_retried_while_iam_has_not_propagated_its_node_role() {
    use aws_sdk_eks::operation::create_nodegroup::{CreateNodegroupError, CreateNodegroupOutput};
    use aws_sdk_eks::operation::describe_nodegroup::{
        DescribeNodegroupError, DescribeNodegroupOutput,
    };
    use aws_sdk_eks::types::{AmiTypes, Nodegroup, NodegroupStatus};
    let describe = mock!(aws_sdk_eks::Client::describe_nodegroup)
        .sequence()
        .error(|| {
            DescribeNodegroupError::generic(aws_error(
                "ResourceNotFoundException",
                "No node group found for name: workers.",
            ))
        })
        .output(|| {
            DescribeNodegroupOutput::builder()
                .nodegroup(
                    Nodegroup::builder()
                        .nodegroup_name("workers")
                        .version("1.31")
                        .ami_type(AmiTypes::Al2023X8664Standard)
                        .status(NodegroupStatus::Active)
                        .build(),
                )
                .build()
        })
        .repeatedly()
        .build();
    let create = mock!(aws_sdk_eks::Client::create_nodegroup)
        .sequence()
        .error(|| {
            CreateNodegroupError::generic(aws_error(
                "InvalidParameterException",
                "Role with arn: arn:aws:iam::123456789012:role/c1-eks-node, could not be \
                 assumed because it does not exist or the trusted entity is not correct",
            ))
        })
        .times(2)
        .output(|| CreateNodegroupOutput::builder().build())
        .build();
    let provider = aws(Rules {
        eks: vec![&describe, &create],
        ..Rules::default()
    });
    bounded(provider.create(
        &call("aws.eks.node_group"),
        &props(json!({
            "cluster_name": "c1",
            "node_group_name": "workers",
            "node_role_arn": "arn:aws:iam::123456789012:role/c1-eks-node",
            "subnet_ids": ["subnet-1"],
            "instance_types": ["t3.medium"],
            "capacity_type": "ON_DEMAND",
            "disk_size": 20,
            "scaling": { "min": 1, "desired": 1, "max": 2 },
            "labels": {},
            "taints": [],
            "version": "1.31",
            "ami_type": "AL2023_x86_64_STANDARD",
        })),
        &ownership(),
    ))
    .await
    .expect("created once the node role could be assumed");
    assert_eq!(create.num_calls(), 3, "two refusals, then the create");
}

#[tokio::test]
async fn availability_zones_are_read_from_describe_availability_zones() {
    use aws_sdk_ec2::operation::describe_availability_zones::DescribeAvailabilityZonesOutput;
    use aws_sdk_ec2::types::AvailabilityZone;
    use provisioner::engine::zones;
    use provisioner::stack::model::AvailabilityZones;
    // This account's us-east-1: no `b`, and `c` is use1-az3 (EKS takes no cluster subnets there).
    let describe = mock!(aws_sdk_ec2::Client::describe_availability_zones)
        .match_requests(|input| {
            input
                .filters()
                .iter()
                .any(|f| f.name() == Some("zone-type") && f.values() == ["availability-zone"])
        })
        .then_output(|| {
            let zone = |name: &str, id: &str| {
                AvailabilityZone::builder()
                    .zone_name(name)
                    .zone_id(id)
                    .build()
            };
            DescribeAvailabilityZonesOutput::builder()
                .availability_zones(zone("us-east-1a", "use1-az6"))
                .availability_zones(zone("us-east-1c", "use1-az3"))
                .availability_zones(zone("us-east-1d", "use1-az4"))
                .build()
        });
    let provider = aws(Rules {
        ec2: vec![&describe],
        ..Rules::default()
    });
    let offered = bounded(provider.availability_zones())
        .await
        .expect("read")
        .expect("the AWS provider knows them");
    let resolved = zones::resolve(
        &AvailabilityZones::Count(2),
        "us-east-1",
        None,
        Some(&offered),
    )
    .unwrap();
    assert_eq!(resolved.names, ["us-east-1a", "us-east-1d"]);
    assert!(!resolved.assumed);
}

// --- What the stack derives (1, 13, 14) ---

/// Derives a stack written on top of the fixtures' valid base.
fn derive(overrides: &str) -> provisioner::engine::DesiredSet {
    use provisioner::stack::{self, LoadRequest, Loaded, StackSource};
    let dir = std::env::temp_dir().join(stacksmith_testkit::unique_name("aws-behaviours"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        stacksmith_testkit::workspace_root().join("tests/fixtures/stacks/valid-base.yaml"),
        dir.join("base.yaml"),
    )
    .unwrap();
    std::fs::write(
        dir.join("probe.yaml"),
        format!("extends: base.yaml\n{overrides}"),
    )
    .unwrap();
    let request = LoadRequest {
        source: StackSource::Named {
            dir: dir.clone(),
            name: "probe".into(),
        },
        instance: None,
    };
    let loaded = match stack::load_with_env(&request, &|_| None) {
        Ok(Loaded::Deployable(loaded)) => loaded,
        other => panic!("the probe stack loads: {other:?}"),
    };
    std::fs::remove_dir_all(&dir).ok();
    provisioner::engine::desired::derive(&loaded)
}

fn resource<'a>(
    set: &'a provisioner::engine::DesiredSet,
    address: &str,
) -> &'a provisioner::engine::DesiredResource {
    set.get(&Address::new(address))
        .unwrap_or_else(|| panic!("{address} is derived"))
}

#[test]
fn the_database_and_cache_admit_the_security_group_eks_puts_on_managed_nodes() {
    let set = derive("tags: { probe: \"yes\" }\n");
    for rule in [
        "network.security_group_rule.database_from_cluster",
        "network.security_group_rule.cache_from_cluster",
    ] {
        assert_eq!(
            resource(&set, rule).properties["source_security_group_id"],
            json!({ "$ref": { "address": "cluster.control_plane", "output": "cluster_security_group_id" } }),
            "{rule}: the nodes' group, not the control plane's extra group"
        );
    }
}

#[test]
fn graviton_groups_get_an_arm_ami_and_every_arn_follows_the_region_partition() {
    let set = derive(
        "region: cn-north-1\nnetwork: { azs: [cn-north-1a, cn-north-1b] }\ncluster:\n  access:\n    admins: [arn:aws-cn:iam::123456789012:role/platform-admins]\n  node_groups:\n    workers:\n      instance_types: [m7g.large, c7g.large]\n      scaling: { min: 1, desired: 2, max: 3 }\n    gpu:\n      instance_types: [g5.xlarge]\n      scaling: { min: 0, desired: 0, max: 2 }\n",
    );
    assert_eq!(
        resource(&set, "cluster.node_group.workers").properties["ami_type"],
        json!("AL2023_ARM_64_STANDARD")
    );
    assert_eq!(
        resource(&set, "cluster.node_group.gpu").properties["ami_type"],
        json!("AL2023_x86_64_NVIDIA")
    );
    assert_eq!(
        resource(&set, "cluster.node_group.workers").properties["version"],
        json!("1.31")
    );
    let text = serde_json::to_string(&set).unwrap();
    assert!(
        !text.contains("arn:aws:"),
        "an `aws` partition ARN in cn-north-1"
    );
    assert!(text.contains("arn:aws-cn:iam::aws:policy/AmazonEKSClusterPolicy"));
    let entry = resource(
        &set,
        "cluster.access_entry.123456789012_role_platform-admins",
    );
    assert_eq!(
        entry.properties["policy_arn"],
        json!("arn:aws-cn:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy")
    );
    assert_eq!(
        resource(&set, "cluster.control_plane").properties["authentication_mode"],
        json!("API_AND_CONFIG_MAP")
    );
}
