//! What moto cannot show about the members drift and `up` look at, with aws-smithy-mocks: AWS
//! defaults are never members (a route table's `local` route, routes propagated from a virtual
//! private gateway, a security group's "all traffic out" egress rule), every other route and
//! rule is, with its parent; and a deleted route table has no members instead of an error.

use aws_sdk_ec2::error::ErrorMetadata;
use aws_sdk_ec2::types::{Route, RouteOrigin, RouteTable, SecurityGroupRule};
use aws_smithy_mocks::{MockResponseInterceptor, Rule, RuleMode, create_mock_http_client, mock};
use provisioner::aws::{AwsContext, AwsProvider, Clients, PollSettings};
use provisioner::engine::provider::{CallContext, OwnedObject, Provider};
use provisioner::engine::{Address, ResourceType};
use serde_json::json;

macro_rules! client {
    ($krate:ident, $rules:expr) => {{
        let mut interceptor = MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny);
        for rule in $rules {
            interceptor = interceptor.with_rule(rule);
        }
        $krate::Client::from_conf(
            $krate::Config::builder()
                .behavior_version($krate::config::BehaviorVersion::latest())
                .region($krate::config::Region::new("us-east-1"))
                .credentials_provider($krate::config::Credentials::new(
                    "testing", "testing", None, None, "mocks",
                ))
                .retry_config($krate::config::retry::RetryConfig::disabled())
                .http_client(create_mock_http_client())
                .interceptor(interceptor)
                .build(),
        )
    }};
}

fn provider(ec2: &[&Rule]) -> AwsProvider {
    let none: &[&Rule] = &[];
    let clients = Clients {
        ec2: client!(aws_sdk_ec2, ec2),
        iam: client!(aws_sdk_iam, none),
        eks: client!(aws_sdk_eks, none),
        rds: client!(aws_sdk_rds, none),
        elasticache: client!(aws_sdk_elasticache, none),
        logs: client!(aws_sdk_cloudwatchlogs, none),
    };
    AwsProvider::new(AwsContext::with_clients(clients, PollSettings::default()))
}

fn call(resource_type: &str) -> CallContext {
    CallContext {
        address: Address::new("network.object"),
        resource_type: ResourceType::new(resource_type),
        taken: Vec::new(),
    }
}

fn ids(members: &[OwnedObject]) -> Vec<(&str, &str, &str)> {
    members
        .iter()
        .map(|m| {
            let parent = m.member_of.as_ref().expect("members name their parent");
            (m.id.as_str(), parent.id.as_str(), parent.attribute.as_str())
        })
        .collect()
}

#[tokio::test]
async fn a_route_tables_members_leave_out_the_local_and_propagated_routes() {
    let tables = mock!(aws_sdk_ec2::Client::describe_route_tables).then_output(|| {
        aws_sdk_ec2::operation::describe_route_tables::DescribeRouteTablesOutput::builder()
            .route_tables(
                RouteTable::builder()
                    .route_table_id("rtb-1")
                    .routes(
                        Route::builder()
                            .destination_cidr_block("10.0.0.0/16")
                            .gateway_id("local")
                            .origin(RouteOrigin::CreateRouteTable)
                            .build(),
                    )
                    .routes(
                        Route::builder()
                            .destination_cidr_block("172.16.0.0/12")
                            .gateway_id("vgw-1")
                            .origin(RouteOrigin::EnableVgwRoutePropagation)
                            .build(),
                    )
                    .routes(
                        Route::builder()
                            .destination_cidr_block("0.0.0.0/0")
                            .nat_gateway_id("nat-1")
                            .origin(RouteOrigin::CreateRoute)
                            .build(),
                    )
                    .routes(
                        Route::builder()
                            .destination_cidr_block("10.9.0.0/16")
                            .vpc_peering_connection_id("pcx-1")
                            .origin(RouteOrigin::CreateRoute)
                            .build(),
                    )
                    .build(),
            )
            .build()
    });
    let members = provider(&[&tables])
        .list_members(&call("aws.ec2.route_table"), "rtb-1")
        .await
        .unwrap();
    assert_eq!(
        ids(&members),
        vec![
            ("rtb-1_0.0.0.0/0", "rtb-1", "routes"),
            ("rtb-1_10.9.0.0/16", "rtb-1", "routes"),
        ]
    );
    assert_eq!(members[0].resource_type.as_str(), "aws.ec2.route");
    assert_eq!(members[0].properties["nat_gateway_id"], json!("nat-1"));
    assert_eq!(
        members[1].properties["vpc_peering_connection_id"],
        json!("pcx-1")
    );
}

#[tokio::test]
async fn a_security_groups_members_leave_out_the_default_egress_rule() {
    let rules = mock!(aws_sdk_ec2::Client::describe_security_group_rules).then_output(|| {
        aws_sdk_ec2::operation::describe_security_group_rules::DescribeSecurityGroupRulesOutput::builder()
            .security_group_rules(
                SecurityGroupRule::builder()
                    .security_group_rule_id("sgr-default")
                    .group_id("sg-1")
                    .is_egress(true)
                    .ip_protocol("-1")
                    .from_port(-1)
                    .to_port(-1)
                    .cidr_ipv4("0.0.0.0/0")
                    .build(),
            )
            .security_group_rules(
                SecurityGroupRule::builder()
                    .security_group_rule_id("sgr-egress-https")
                    .group_id("sg-1")
                    .is_egress(true)
                    .ip_protocol("tcp")
                    .from_port(443)
                    .to_port(443)
                    .cidr_ipv4("0.0.0.0/0")
                    .build(),
            )
            .security_group_rules(
                SecurityGroupRule::builder()
                    .security_group_rule_id("sgr-ssh")
                    .group_id("sg-1")
                    .is_egress(false)
                    .ip_protocol("tcp")
                    .from_port(22)
                    .to_port(22)
                    .cidr_ipv4("10.0.0.0/8")
                    .build(),
            )
            .build()
    });
    let members = provider(&[&rules])
        .list_members(&call("aws.ec2.security_group"), "sg-1")
        .await
        .unwrap();
    assert_eq!(
        ids(&members),
        vec![
            ("sgr-egress-https", "sg-1", "egress_rules"),
            ("sgr-ssh", "sg-1", "ingress_rules"),
        ]
    );
    assert_eq!(members[1].properties["cidr_blocks"], json!(["10.0.0.0/8"]));
    assert_eq!(members[1].properties["direction"], json!("ingress"));
}

#[tokio::test]
async fn a_deleted_route_table_has_no_members_and_other_types_have_none() {
    let gone = mock!(aws_sdk_ec2::Client::describe_route_tables).then_error(|| {
        aws_sdk_ec2::operation::describe_route_tables::DescribeRouteTablesError::generic(
            ErrorMetadata::builder()
                .code("InvalidRouteTableID.NotFound")
                .message("The routeTable ID 'rtb-gone' does not exist")
                .build(),
        )
    });
    let provider = provider(&[&gone]);
    let members = provider
        .list_members(&call("aws.ec2.route_table"), "rtb-gone")
        .await
        .unwrap();
    assert!(members.is_empty());
    // No call at all for a type without members (the mock would answer only route tables).
    let members = provider
        .list_members(&call("aws.ec2.subnet"), "subnet-1")
        .await
        .unwrap();
    assert!(members.is_empty());
    assert_eq!(gone.num_calls(), 1);
}
