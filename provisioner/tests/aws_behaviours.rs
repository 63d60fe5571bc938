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

fn provider(rules: Rules<'_>) -> AwsProvider {
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
    let parameters = mock!(aws_sdk_rds::Client::describe_db_parameters).then_compute_output(
        |input| {
            let parameter = |name: &str, value: Option<&str>, kind: &str| {
                Parameter::builder()
                    .parameter_name(name)
                    .set_parameter_value(value.map(str::to_owned))
                    .apply_type(kind)
                    .build()
            };
            let out = DescribeDbParametersOutput::builder()
                .parameters(parameter("log_connections", Some("0"), "dynamic"))
                .parameters(parameter("shared_preload_libraries", Some("pg_stat_statements"), "static"));
            if input.source() == Some("user") {
                out.build()
            } else {
                out.parameters(parameter("work_mem", None, "dynamic")).build()
            }
        },
    );
    // AWS's rule: `immediate` is accepted for dynamic parameters only.
    let modified: Arc<Mutex<Vec<(String, ApplyMethod)>>> = Arc::default();
    let seen = modified.clone();
    let modify = mock!(aws_sdk_rds::Client::modify_db_parameter_group).then_compute_response(
        move |input| {
            for p in input.parameters() {
                let name = p.parameter_name().unwrap_or_default().to_owned();
                let method = p.apply_method().cloned().unwrap_or(ApplyMethod::PendingReboot);
                if name == "shared_preload_libraries" && method == ApplyMethod::Immediate {
                    return MockResponse::Error(ModifyDBParameterGroupError::generic(aws_error(
                        "InvalidParameterCombination",
                        "cannot use immediate apply method for static parameter",
                    )));
                }
                seen.lock().unwrap().push((name, method));
            }
            MockResponse::Output(ModifyDbParameterGroupOutput::builder().build())
        },
    );
    // The instance using the group: `pending-reboot` until rebooted, and the status still reads
    // `available` for a poll right after the reboot call.
    let rebooted = Arc::new(Mutex::new(0u32));
    let polls_after = Arc::new(Mutex::new(0u32));
    let (r, p) = (rebooted.clone(), polls_after.clone());
    let describe = mock!(aws_sdk_rds::Client::describe_db_instances).then_compute_output(move |_| {
        let instance = if *r.lock().unwrap() == 0 {
            db("available", "16.4", "db.t4g.medium", "db-1-pg16", "pending-reboot")
        } else {
            let mut polls = p.lock().unwrap();
            *polls += 1;
            match *polls {
                1 => db("available", "16.4", "db.t4g.medium", "db-1-pg16", "pending-reboot"),
                2 | 3 => db("rebooting", "16.4", "db.t4g.medium", "db-1-pg16", "applying"),
                _ => db("available", "16.4", "db.t4g.medium", "db-1-pg16", "in-sync"),
            }
        };
        DescribeDbInstancesOutput::builder().db_instances(instance).build()
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
    let provider = provider(Rules {
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
    assert_eq!(*rebooted.lock().unwrap(), 1, "the instance was rebooted once");
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
    let provider = provider(Rules {
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
    assert_eq!(live.outputs["cluster_security_group_id"], json!("sg-eks-cluster"));
    assert_eq!(
        live.properties["authentication_mode"],
        json!("API_AND_CONFIG_MAP")
    );
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
    let provider = provider(Rules {
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
    assert!(error.to_string().contains("unsupported Kubernetes version"), "{error}");
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
                            ReferencedSecurityGroup::builder().group_id("sg-eks-cluster").build(),
                        )
                        .build(),
                )
                .build()
        })
        .build();
    let provider = provider(Rules {
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
            .internet_gateway(InternetGateway::builder().internet_gateway_id("igw-1").build())
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
    assert!(attach.num_calls() > 2, "retried ({} calls)", attach.num_calls());
}
