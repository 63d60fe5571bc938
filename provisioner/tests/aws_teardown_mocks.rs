//! `down`'s hard cases in the AWS providers, with aws-smithy-mocks: the VPC's leftovers (detached
//! ENIs, security groups made by Kubernetes or the load balancer controller) swept before the VPC
//! is deleted; DependencyViolation retried with backoff until the dependents are gone; and a
//! delete blocked forever giving up at its bound with an error that names what blocks it.

use std::time::Duration;

use aws_sdk_ec2::error::ErrorMetadata;
use aws_sdk_ec2::types::{
    InstanceState, InstanceStateName, NetworkInterface, NetworkInterfaceAttachment,
    NetworkInterfaceStatus, NetworkInterfaceType, Reservation, SecurityGroup, Subnet, Tag, Vpc,
};
use aws_smithy_mocks::{MockResponseInterceptor, Rule, RuleMode, create_mock_http_client, mock};
use provisioner::aws::{AwsContext, AwsProvider, Clients, PollSettings};
use provisioner::engine::provider::{CallContext, Provider, ProviderError};
use provisioner::engine::{Address, ResourceType};

fn fast() -> PollSettings {
    PollSettings {
        initial: Duration::from_millis(2),
        max: Duration::from_millis(10),
        bound_scale: 1.0,
    }
}

/// The 10-minute dependency bound shrunk to 60 ms.
fn give_up_quickly() -> PollSettings {
    PollSettings {
        bound_scale: 0.0001,
        ..fast()
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
                .retry_config($krate::config::retry::RetryConfig::disabled())
                .http_client(create_mock_http_client())
                .interceptor(interceptor($rules))
                .build(),
        )
    };
}

fn provider(ec2: &[&Rule], poll: PollSettings) -> AwsProvider {
    let clients = Clients {
        ec2: client!(aws_sdk_ec2, ec2),
        iam: client!(aws_sdk_iam, &[]),
        eks: client!(aws_sdk_eks, &[]),
        rds: client!(aws_sdk_rds, &[]),
        elasticache: client!(aws_sdk_elasticache, &[]),
        logs: client!(aws_sdk_cloudwatchlogs, &[]),
    };
    AwsProvider::new(AwsContext::with_clients(clients, poll))
}

fn call(resource_type: &str) -> CallContext {
    CallContext {
        address: Address::new("test.object"),
        resource_type: ResourceType::new(resource_type),
        taken: Vec::new(),
    }
}

fn code(code: &str) -> ErrorMetadata {
    ErrorMetadata::builder()
        .code(code)
        .message(format!("mocked {code}"))
        .build()
}

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

async fn bounded<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .expect("the call finishes within its bound")
}

fn our_vpc() -> Rule {
    use aws_sdk_ec2::operation::describe_vpcs::DescribeVpcsOutput;
    mock!(aws_sdk_ec2::Client::describe_vpcs).then_output(|| {
        DescribeVpcsOutput::builder()
            .vpcs(
                Vpc::builder()
                    .vpc_id("vpc-1")
                    .tags(tag("stacksmith:stack", "staging"))
                    .tags(tag("stacksmith:instance", "pr-1"))
                    .build(),
            )
            .build()
    })
}

fn load_balancer_eni() -> NetworkInterface {
    NetworkInterface::builder()
        .network_interface_id("eni-lb")
        .status(NetworkInterfaceStatus::InUse)
        .interface_type(NetworkInterfaceType::NetworkLoadBalancer)
        .description("ELB net/k8s-default-web-0123456789/abcdef")
        .build()
}

fn node_eni() -> NetworkInterface {
    NetworkInterface::builder()
        .network_interface_id("eni-node")
        .status(NetworkInterfaceStatus::InUse)
        .attachment(
            NetworkInterfaceAttachment::builder()
                .instance_id("i-0node")
                .build(),
        )
        .description("aws-K8S-i-0node")
        .build()
}

#[tokio::test]
async fn vpc_delete_sweeps_leftovers_then_retries_dependency_violation_until_free() {
    use aws_sdk_ec2::operation::delete_network_interface::DeleteNetworkInterfaceOutput;
    use aws_sdk_ec2::operation::delete_security_group::DeleteSecurityGroupOutput;
    use aws_sdk_ec2::operation::delete_vpc::{DeleteVpcError, DeleteVpcOutput};
    use aws_sdk_ec2::operation::describe_network_interfaces::DescribeNetworkInterfacesOutput;
    use aws_sdk_ec2::operation::describe_security_groups::DescribeSecurityGroupsOutput;
    use aws_sdk_ec2::operation::revoke_security_group_ingress::RevokeSecurityGroupIngressOutput;

    let vpc = our_vpc();
    // The sweep deletes detached interfaces only.
    let enis = mock!(aws_sdk_ec2::Client::describe_network_interfaces).then_output(|| {
        DescribeNetworkInterfacesOutput::builder()
            .network_interfaces(
                NetworkInterface::builder()
                    .network_interface_id("eni-left")
                    .status(NetworkInterfaceStatus::Available)
                    .description("aws-K8S-i-0gone")
                    .build(),
            )
            .network_interfaces(node_eni())
            .build()
    });
    let delete_eni = mock!(aws_sdk_ec2::Client::delete_network_interface)
        .match_requests(|r| r.network_interface_id() == Some("eni-left"))
        .then_output(|| DeleteNetworkInterfaceOutput::builder().build());
    let elb_group = SecurityGroup::builder()
        .group_id("sg-elb")
        .group_name("k8s-elb-a1b2c3")
        .tags(tag(
            "kubernetes.io/cluster/stacksmith-staging-pr-1",
            "owned",
        ))
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("-1")
                .user_id_group_pairs(
                    aws_sdk_ec2::types::UserIdGroupPair::builder()
                        .group_id("sg-controller")
                        .build(),
                )
                .build(),
        )
        .build();
    let controller_group = SecurityGroup::builder()
        .group_id("sg-controller")
        .group_name("k8s-traffic-stacksmith-abc")
        .tags(tag("elbv2.k8s.aws/cluster", "stacksmith-staging-pr-1"))
        .build();
    let someone_elses = SecurityGroup::builder()
        .group_id("sg-manual")
        .group_name("made-by-hand")
        .build();
    let default_group = SecurityGroup::builder()
        .group_id("sg-default")
        .group_name("default")
        .build();
    let groups = mock!(aws_sdk_ec2::Client::describe_security_groups).then_output(move || {
        DescribeSecurityGroupsOutput::builder()
            .security_groups(default_group.clone())
            .security_groups(elb_group.clone())
            .security_groups(controller_group.clone())
            .security_groups(someone_elses.clone())
            .build()
    });
    let revoke = mock!(aws_sdk_ec2::Client::revoke_security_group_ingress)
        .match_requests(|r| r.group_id() == Some("sg-elb"))
        .then_output(|| RevokeSecurityGroupIngressOutput::builder().build());
    let delete_groups = mock!(aws_sdk_ec2::Client::delete_security_group)
        .match_requests(|r| matches!(r.group_id(), Some("sg-elb" | "sg-controller")))
        .then_output(|| DeleteSecurityGroupOutput::builder().build());
    let delete_vpc = mock!(aws_sdk_ec2::Client::delete_vpc)
        .sequence()
        .error(|| DeleteVpcError::generic(code("DependencyViolation")))
        .times(4)
        .output(|| DeleteVpcOutput::builder().build())
        .build();
    let provider = provider(
        &[
            &vpc,
            &enis,
            &delete_eni,
            &groups,
            &revoke,
            &delete_groups,
            &delete_vpc,
        ],
        fast(),
    );
    bounded(provider.delete(&call("aws.ec2.vpc"), "vpc-1"))
        .await
        .expect("deleted once the leftovers are gone");
    assert_eq!(delete_eni.num_calls(), 1, "the detached ENI was deleted");
    assert_eq!(
        revoke.num_calls(),
        1,
        "the rule naming another group was revoked"
    );
    assert_eq!(
        delete_groups.num_calls(),
        2,
        "the Kubernetes and controller groups were deleted, the hand-made one was not"
    );
    assert_eq!(delete_vpc.num_calls(), 5, "four refusals, then deleted");
}

#[tokio::test]
async fn vpc_delete_blocked_forever_gives_up_naming_what_blocks_it() {
    use aws_sdk_ec2::operation::delete_vpc::DeleteVpcError;
    use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
    use aws_sdk_ec2::operation::describe_internet_gateways::DescribeInternetGatewaysOutput;
    use aws_sdk_ec2::operation::describe_nat_gateways::DescribeNatGatewaysOutput;
    use aws_sdk_ec2::operation::describe_network_interfaces::DescribeNetworkInterfacesOutput;
    use aws_sdk_ec2::operation::describe_security_groups::DescribeSecurityGroupsOutput;
    use aws_sdk_ec2::operation::describe_subnets::DescribeSubnetsOutput;

    let vpc = our_vpc();
    let all_enis = mock!(aws_sdk_ec2::Client::describe_network_interfaces).then_output(|| {
        DescribeNetworkInterfacesOutput::builder()
            .network_interfaces(load_balancer_eni())
            .network_interfaces(node_eni())
            .build()
    });
    let groups = mock!(aws_sdk_ec2::Client::describe_security_groups).then_output(|| {
        DescribeSecurityGroupsOutput::builder()
            .security_groups(
                SecurityGroup::builder()
                    .group_id("sg-default")
                    .group_name("default")
                    .build(),
            )
            .build()
    });
    let instances = mock!(aws_sdk_ec2::Client::describe_instances).then_output(|| {
        DescribeInstancesOutput::builder()
            .reservations(
                Reservation::builder()
                    .instances(
                        aws_sdk_ec2::types::Instance::builder()
                            .instance_id("i-0node")
                            .state(
                                InstanceState::builder()
                                    .name(InstanceStateName::Running)
                                    .build(),
                            )
                            .tags(tag("Name", "workers-node"))
                            .build(),
                    )
                    .instances(
                        aws_sdk_ec2::types::Instance::builder()
                            .instance_id("i-0old")
                            .state(
                                InstanceState::builder()
                                    .name(InstanceStateName::Terminated)
                                    .build(),
                            )
                            .build(),
                    )
                    .build(),
            )
            .build()
    });
    let nats = mock!(aws_sdk_ec2::Client::describe_nat_gateways)
        .then_output(|| DescribeNatGatewaysOutput::builder().build());
    let subnets = mock!(aws_sdk_ec2::Client::describe_subnets).then_output(|| {
        DescribeSubnetsOutput::builder()
            .subnets(
                Subnet::builder()
                    .subnet_id("subnet-extra")
                    .cidr_block("10.0.99.0/24")
                    .build(),
            )
            .build()
    });
    let gateways = mock!(aws_sdk_ec2::Client::describe_internet_gateways)
        .then_output(|| DescribeInternetGatewaysOutput::builder().build());
    let delete_vpc = mock!(aws_sdk_ec2::Client::delete_vpc)
        .sequence()
        .error(|| DeleteVpcError::generic(code("DependencyViolation")))
        .repeatedly()
        .build();
    let provider = provider(
        &[
            &vpc,
            &all_enis,
            &groups,
            &instances,
            &nats,
            &subnets,
            &gateways,
            &delete_vpc,
        ],
        give_up_quickly(),
    );
    let error = bounded(provider.delete(&call("aws.ec2.vpc"), "vpc-1"))
        .await
        .unwrap_err();
    let ProviderError::Failed(message) = error else {
        panic!("expected a failure, got {error:?}");
    };
    assert!(
        delete_vpc.num_calls() > 2,
        "it retried ({} calls)",
        delete_vpc.num_calls()
    );
    assert!(message.contains("deleting VPC vpc-1"), "{message}");
    assert!(message.contains("DependencyViolation"), "{message}");
    assert!(message.contains("blocked by:"), "{message}");
    for blocker in [
        "network interface eni-lb (in-use, type network_load_balancer, \"ELB net/k8s-default-web-0123456789/abcdef\")",
        "network interface eni-node (in-use, attached to i-0node",
        "instance i-0node (running, \"workers-node\")",
        "subnet subnet-extra (10.0.99.0/24)",
    ] {
        assert!(message.contains(blocker), "{blocker} in {message}");
    }
    assert!(
        !message.contains("i-0old"),
        "terminated instances block nothing: {message}"
    );
    assert!(!message.contains("sg-default"), "{message}");
}

#[tokio::test]
async fn subnet_and_security_group_deletes_name_their_blockers_when_they_give_up() {
    use aws_sdk_ec2::operation::delete_security_group::DeleteSecurityGroupError;
    use aws_sdk_ec2::operation::delete_subnet::DeleteSubnetError;
    use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
    use aws_sdk_ec2::operation::describe_nat_gateways::DescribeNatGatewaysOutput;
    use aws_sdk_ec2::operation::describe_network_interfaces::DescribeNetworkInterfacesOutput;
    use aws_sdk_ec2::operation::describe_security_groups::DescribeSecurityGroupsOutput;

    let enis = mock!(aws_sdk_ec2::Client::describe_network_interfaces).then_output(|| {
        DescribeNetworkInterfacesOutput::builder()
            .network_interfaces(node_eni())
            .build()
    });
    let instances = mock!(aws_sdk_ec2::Client::describe_instances)
        .then_output(|| DescribeInstancesOutput::builder().build());
    let nats = mock!(aws_sdk_ec2::Client::describe_nat_gateways)
        .then_output(|| DescribeNatGatewaysOutput::builder().build());
    let referencing = mock!(aws_sdk_ec2::Client::describe_security_groups)
        .match_requests(|r| {
            r.filters()
                .iter()
                .any(|f| f.name() == Some("ip-permission.group-id"))
        })
        .then_output(|| {
            DescribeSecurityGroupsOutput::builder()
                .security_groups(
                    SecurityGroup::builder()
                        .group_id("sg-nodes")
                        .group_name("stacksmith-nodes")
                        .build(),
                )
                .build()
        });
    let no_egress_reference = mock!(aws_sdk_ec2::Client::describe_security_groups)
        .then_output(|| DescribeSecurityGroupsOutput::builder().build());
    let subnet = mock!(aws_sdk_ec2::Client::delete_subnet)
        .sequence()
        .error(|| DeleteSubnetError::generic(code("DependencyViolation")))
        .repeatedly()
        .build();
    let group = mock!(aws_sdk_ec2::Client::delete_security_group)
        .sequence()
        .error(|| DeleteSecurityGroupError::generic(code("DependencyViolation")))
        .repeatedly()
        .build();
    let provider = provider(
        &[
            &enis,
            &instances,
            &nats,
            &referencing,
            &no_egress_reference,
            &subnet,
            &group,
        ],
        give_up_quickly(),
    );

    let error = bounded(provider.delete(&call("aws.ec2.subnet"), "subnet-1"))
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("deleting subnet subnet-1"), "{message}");
    assert!(
        message.contains("network interface eni-node (in-use, attached to i-0node"),
        "{message}"
    );

    let error = bounded(provider.delete(&call("aws.ec2.security_group"), "sg-db"))
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("deleting security group sg-db"),
        "{message}"
    );
    assert!(message.contains("eni-node"), "{message}");
    assert!(
        message.contains("security group sg-nodes (\"stacksmith-nodes\") (a rule references it)"),
        "{message}"
    );
}
