//! The VPC teardown of the AWS providers against moto: what a cluster and its load balancers
//! leave in the VPC (a detached ENI, a security group tagged for the cluster) is swept before the
//! VPC is deleted, a security group nobody owns is left alone, and a VPC still holding a subnet
//! is given up on at the (shrunk) bound with an error that names the subnet and the group.

use std::time::Duration;

use aws_sdk_ec2::types::{ResourceType as Ec2Type, Tag, TagSpecification};
use provisioner::aws::{AwsContext, AwsProvider, AwsTarget, PollSettings};
use provisioner::engine::provider::{CallContext, Provider};
use provisioner::engine::{Address, ResourceType};

fn target() -> AwsTarget {
    AwsTarget {
        region: "us-east-1".into(),
        endpoint_url: Some(stacksmith_testkit::aws_endpoint()),
        profile: None,
        static_credentials: Some(("testing".into(), "testing".into())),
        poll: PollSettings {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(100),
            // The 10-minute dependency bound becomes 0.6 s.
            bound_scale: 0.001,
        },
        allow_deletion_protected: false,
        skip_final_db_snapshot: false,
    }
}

fn call(resource_type: &str) -> CallContext {
    CallContext {
        address: Address::new("network.test"),
        resource_type: ResourceType::new(resource_type),
        taken: Vec::new(),
    }
}

fn tags(kind: Ec2Type, tags: &[(&str, &str)]) -> TagSpecification {
    let mut spec = TagSpecification::builder().resource_type(kind);
    for (key, value) in tags {
        spec = spec.tags(Tag::builder().key(*key).value(*value).build());
    }
    spec.build()
}

#[tokio::test]
async fn vpc_leftovers_are_swept_and_what_still_blocks_the_vpc_is_named() {
    let sdk = target().load().await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let stack = stacksmith_testkit::unique_name("teardown")
        .replace('_', "-")
        .to_lowercase();
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.77.0.0/16")
        .tag_specifications(tags(
            Ec2Type::Vpc,
            &[("stacksmith:stack", &stack), ("stacksmith:instance", "")],
        ))
        .send()
        .await
        .unwrap();
    let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_owned();
    let subnet = ec2
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block("10.77.1.0/24")
        .send()
        .await
        .unwrap();
    let subnet = subnet.subnet().unwrap().subnet_id().unwrap().to_owned();
    let eni = ec2
        .create_network_interface()
        .subnet_id(&subnet)
        .description("aws-K8S-i-0gone")
        .send()
        .await
        .unwrap();
    let eni = eni
        .network_interface()
        .unwrap()
        .network_interface_id()
        .unwrap()
        .to_owned();
    let cluster_group = ec2
        .create_security_group()
        .vpc_id(&vpc)
        .group_name(format!("k8s-elb-{stack}"))
        .description("made by the cloud controller")
        .tag_specifications(tags(
            Ec2Type::SecurityGroup,
            &[(&format!("kubernetes.io/cluster/{stack}"), "owned")],
        ))
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_owned();
    let own_group = ec2
        .create_security_group()
        .vpc_id(&vpc)
        .group_name(format!("ours-{stack}"))
        .description("carries the deployment's ownership tags")
        .tag_specifications(tags(
            Ec2Type::SecurityGroup,
            &[("stacksmith:stack", &stack), ("stacksmith:instance", "")],
        ))
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_owned();
    let manual_group = ec2
        .create_security_group()
        .vpc_id(&vpc)
        .group_name(format!("by-hand-{stack}"))
        .description("nobody's")
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_owned();

    let provider = AwsProvider::new(AwsContext::new(target()));
    let error = provider
        .delete(&call("aws.ec2.vpc"), &vpc)
        .await
        .expect_err("the subnet still blocks the VPC");
    let message = error.to_string();
    assert!(
        message.contains(&format!("deleting VPC {vpc}")),
        "{message}"
    );
    assert!(message.contains("DependencyViolation"), "{message}");
    assert!(
        message.contains(&format!("subnet {subnet} (10.77.1.0/24)")),
        "{message}"
    );
    assert!(
        message.contains(&format!("security group {manual_group}")),
        "{message}"
    );

    let left: Vec<String> = ec2
        .describe_network_interfaces()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("vpc-id")
                .values(&vpc)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .network_interfaces()
        .iter()
        .filter_map(|e| e.network_interface_id().map(str::to_owned))
        .collect();
    assert!(!left.contains(&eni), "the detached ENI was swept: {left:?}");
    let groups: Vec<String> = ec2
        .describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("vpc-id")
                .values(&vpc)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .security_groups()
        .iter()
        .filter_map(|g| g.group_id().map(str::to_owned))
        .collect();
    assert!(!groups.contains(&cluster_group), "{groups:?}");
    assert!(!groups.contains(&own_group), "{groups:?}");
    assert!(
        groups.contains(&manual_group),
        "a group nobody owns is left: {groups:?}"
    );

    // Once what blocks it is gone, the same delete succeeds.
    provider
        .delete(&call("aws.ec2.subnet"), &subnet)
        .await
        .unwrap();
    ec2.delete_security_group()
        .group_id(&manual_group)
        .send()
        .await
        .unwrap();
    provider.delete(&call("aws.ec2.vpc"), &vpc).await.unwrap();
    let gone = ec2.describe_vpcs().vpc_ids(&vpc).send().await;
    assert!(gone.is_err() || gone.unwrap().vpcs().is_empty());
}
