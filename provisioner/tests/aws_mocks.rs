//! What moto cannot show, with aws-smithy-mocks: objects in transitional states for several
//! polls, throttling answered by retries, DependencyViolation on delete retried until the
//! dependents are gone, waiters giving up at their bound, and secrets never echoed in errors.

use std::time::Duration;

use aws_sdk_ec2::error::ErrorMetadata;
use aws_smithy_mocks::{MockResponseInterceptor, Rule, RuleMode, create_mock_http_client, mock};
use indexmap::IndexMap;
use provisioner::aws::{AwsContext, AwsProvider, Clients, PollSettings};
use provisioner::engine::provider::{CallContext, Provider, ProviderError};
use provisioner::engine::{Address, ResourceType};
use serde_json::{Value, json};

const BOUND: Duration = Duration::from_secs(30);

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
    eks: Vec<&'a Rule>,
    rds: Vec<&'a Rule>,
    elasticache: Vec<&'a Rule>,
    logs: Vec<&'a Rule>,
}

fn provider(rules: Rules<'_>, poll: PollSettings) -> AwsProvider {
    AwsProvider::new(AwsContext::with_clients(clients(rules), poll))
}

fn clients(rules: Rules<'_>) -> Clients {
    Clients {
        ec2: client!(aws_sdk_ec2, &rules.ec2),
        iam: client!(aws_sdk_iam, &[]),
        eks: client!(aws_sdk_eks, &rules.eks),
        rds: client!(aws_sdk_rds, &rules.rds),
        elasticache: client!(aws_sdk_elasticache, &rules.elasticache),
        logs: client!(aws_sdk_cloudwatchlogs, &rules.logs),
    }
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

fn code(code: &str) -> ErrorMetadata {
    ErrorMetadata::builder()
        .code(code)
        .message(format!("mocked {code}"))
        .build()
}

async fn bounded<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, future)
        .await
        .expect("the call finishes within its bound")
}

#[tokio::test]
async fn vpc_delete_retries_dependency_violation_and_throttling_until_it_succeeds() {
    use aws_sdk_ec2::operation::delete_vpc::{DeleteVpcError, DeleteVpcOutput};
    let delete = mock!(aws_sdk_ec2::Client::delete_vpc)
        .sequence()
        .error(|| DeleteVpcError::generic(code("DependencyViolation")))
        .times(3)
        .error(|| DeleteVpcError::generic(code("RequestLimitExceeded")))
        .output(|| DeleteVpcOutput::builder().build())
        .build();
    // The leftover sweep before the delete finds nothing (see aws_teardown_mocks.rs).
    let vpcs = mock!(aws_sdk_ec2::Client::describe_vpcs).then_output(|| {
        aws_sdk_ec2::operation::describe_vpcs::DescribeVpcsOutput::builder().build()
    });
    let enis = mock!(aws_sdk_ec2::Client::describe_network_interfaces).then_output(|| {
        aws_sdk_ec2::operation::describe_network_interfaces::DescribeNetworkInterfacesOutput::builder().build()
    });
    let groups = mock!(aws_sdk_ec2::Client::describe_security_groups).then_output(|| {
        aws_sdk_ec2::operation::describe_security_groups::DescribeSecurityGroupsOutput::builder()
            .build()
    });
    let provider = provider(
        Rules {
            ec2: vec![&vpcs, &enis, &groups, &delete],
            ..Rules::default()
        },
        fast(),
    );
    bounded(provider.delete(&call("aws.ec2.vpc"), "vpc-1"))
        .await
        .expect("deleted once the dependents are gone");
    assert_eq!(delete.num_calls(), 5);
}

#[tokio::test]
async fn dependency_violation_that_never_clears_fails_at_the_bound() {
    use aws_sdk_ec2::operation::delete_subnet::DeleteSubnetError;
    let delete = mock!(aws_sdk_ec2::Client::delete_subnet)
        .sequence()
        .error(|| DeleteSubnetError::generic(code("DependencyViolation")))
        .repeatedly()
        .build();
    // Giving up, the delete lists what is in the subnet (here: nothing found).
    let enis = mock!(aws_sdk_ec2::Client::describe_network_interfaces).then_output(|| {
        aws_sdk_ec2::operation::describe_network_interfaces::DescribeNetworkInterfacesOutput::builder().build()
    });
    let instances = mock!(aws_sdk_ec2::Client::describe_instances).then_output(|| {
        aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput::builder().build()
    });
    let nats = mock!(aws_sdk_ec2::Client::describe_nat_gateways).then_output(|| {
        aws_sdk_ec2::operation::describe_nat_gateways::DescribeNatGatewaysOutput::builder().build()
    });
    let poll = PollSettings {
        bound_scale: 0.0001, // 10 minutes -> 60 ms
        ..fast()
    };
    let provider = provider(
        Rules {
            ec2: vec![&enis, &instances, &nats, &delete],
            ..Rules::default()
        },
        poll,
    );
    let error = bounded(provider.delete(&call("aws.ec2.subnet"), "subnet-1"))
        .await
        .unwrap_err();
    let ProviderError::Failed(message) = error else {
        panic!("expected a failure, got {error:?}");
    };
    assert!(message.contains("DependencyViolation"), "{message}");
    assert!(
        delete.num_calls() > 2,
        "it retried ({} calls)",
        delete.num_calls()
    );
}

#[tokio::test]
async fn throttled_create_is_reported_as_throttled_for_the_executor_to_retry() {
    use aws_sdk_ec2::operation::create_vpc::CreateVpcError;
    use aws_sdk_ec2::operation::describe_vpcs::DescribeVpcsOutput;
    let lookup = mock!(aws_sdk_ec2::Client::describe_vpcs)
        .then_output(|| DescribeVpcsOutput::builder().build());
    let create = mock!(aws_sdk_ec2::Client::create_vpc)
        .then_error(|| CreateVpcError::generic(code("RequestLimitExceeded")));
    let provider = provider(
        Rules {
            ec2: vec![&lookup, &create],
            ..Rules::default()
        },
        fast(),
    );
    let properties = props(json!({
        "cidr_block": "10.0.0.0/16",
        "enable_dns_support": true,
        "enable_dns_hostnames": true,
        "tags": { "Name": "x" },
    }));
    let error = bounded(provider.create(&call("aws.ec2.vpc"), &properties, &ownership()))
        .await
        .unwrap_err();
    assert_eq!(error, ProviderError::Throttled { retry_after: None });
    assert_eq!(create.num_calls(), 1);
}

fn nat(state: aws_sdk_ec2::types::NatGatewayState) -> aws_sdk_ec2::types::NatGateway {
    aws_sdk_ec2::types::NatGateway::builder()
        .nat_gateway_id("nat-1")
        .subnet_id("subnet-1")
        .state(state)
        .build()
}

#[tokio::test]
async fn nat_gateway_create_waits_through_pending_polls_and_throttling() {
    use aws_sdk_ec2::operation::create_nat_gateway::CreateNatGatewayOutput;
    use aws_sdk_ec2::operation::describe_nat_gateways::{
        DescribeNatGatewaysError, DescribeNatGatewaysOutput,
    };
    use aws_sdk_ec2::types::NatGatewayState;
    // The adoption lookup (by tag, no ids) finds nothing.
    let lookup = mock!(aws_sdk_ec2::Client::describe_nat_gateways)
        .match_requests(|input| input.nat_gateway_ids().is_empty())
        .then_output(|| DescribeNatGatewaysOutput::builder().build());
    let create = mock!(aws_sdk_ec2::Client::create_nat_gateway)
        .match_requests(|input| input.client_token().is_some_and(|t| !t.is_empty()))
        .then_output(|| {
            CreateNatGatewayOutput::builder()
                .nat_gateway(nat(NatGatewayState::Pending))
                .build()
        });
    let polls = mock!(aws_sdk_ec2::Client::describe_nat_gateways)
        .match_requests(|input| input.nat_gateway_ids() == ["nat-1"])
        .sequence()
        .output(|| {
            DescribeNatGatewaysOutput::builder()
                .nat_gateways(nat(NatGatewayState::Pending))
                .build()
        })
        .times(4)
        .error(|| DescribeNatGatewaysError::generic(code("RequestLimitExceeded")))
        .output(|| {
            DescribeNatGatewaysOutput::builder()
                .nat_gateways(nat(NatGatewayState::Available))
                .build()
        })
        .repeatedly()
        .build();
    let provider = provider(
        Rules {
            ec2: vec![&lookup, &create, &polls],
            ..Rules::default()
        },
        fast(),
    );
    let properties = props(json!({
        "subnet_id": "subnet-1",
        "allocation_id": "eipalloc-1",
        "connectivity_type": "public",
        "tags": { "Name": "nat" },
    }));
    let live = bounded(provider.create(&call("aws.ec2.nat_gateway"), &properties, &ownership()))
        .await
        .expect("created once available");
    assert_eq!(live.id, "nat-1");
    assert_eq!(live.outputs["state"], json!("available"));
    assert_eq!(create.num_calls(), 1);
    // 4 pending polls, 1 throttled poll, the available poll, then the final read.
    assert!(polls.num_calls() >= 6, "{} polls", polls.num_calls());
}

#[tokio::test]
async fn nat_gateway_stuck_pending_times_out_at_its_bound() {
    use aws_sdk_ec2::operation::describe_nat_gateways::DescribeNatGatewaysOutput;
    use aws_sdk_ec2::types::NatGatewayState;
    let delete = mock!(aws_sdk_ec2::Client::delete_nat_gateway).then_output(|| {
        aws_sdk_ec2::operation::delete_nat_gateway::DeleteNatGatewayOutput::builder()
            .nat_gateway_id("nat-1")
            .build()
    });
    let polls = mock!(aws_sdk_ec2::Client::describe_nat_gateways).then_output(|| {
        DescribeNatGatewaysOutput::builder()
            .nat_gateways(nat(NatGatewayState::Deleting))
            .build()
    });
    let poll = PollSettings {
        bound_scale: 0.0001, // 15 minutes -> 90 ms
        ..fast()
    };
    let provider = provider(
        Rules {
            ec2: vec![&delete, &polls],
            ..Rules::default()
        },
        poll,
    );
    let error = bounded(provider.delete(&call("aws.ec2.nat_gateway"), "nat-1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ProviderError::Failed(m) if m.contains("timed out")),
        "{error:?}"
    );
    assert!(polls.num_calls() > 2);
}

fn db(status: &str) -> aws_sdk_rds::types::DbInstance {
    aws_sdk_rds::types::DbInstance::builder()
        .db_instance_identifier("db-1")
        .db_instance_arn("arn:aws:rds:us-east-1:123456789012:db:db-1")
        .db_instance_status(status)
        .engine("postgres")
        .db_instance_class("db.t4g.medium")
        .build()
}

#[tokio::test]
async fn rds_instance_create_polls_creating_and_backing_up_and_never_echoes_the_password() {
    use aws_sdk_rds::operation::create_db_instance::CreateDbInstanceOutput;
    use aws_sdk_rds::operation::describe_db_instances::{
        DescribeDBInstancesError, DescribeDbInstancesOutput,
    };
    use aws_sdk_rds::operation::list_tags_for_resource::ListTagsForResourceOutput;
    let describe = mock!(aws_sdk_rds::Client::describe_db_instances)
        .sequence()
        .error(|| {
            DescribeDBInstancesError::generic(
                aws_sdk_rds::error::ErrorMetadata::builder()
                    .code("DBInstanceNotFound")
                    .build(),
            )
        })
        .output(|| {
            DescribeDbInstancesOutput::builder()
                .db_instances(db("creating"))
                .build()
        })
        .times(3)
        .output(|| {
            DescribeDbInstancesOutput::builder()
                .db_instances(db("backing-up"))
                .build()
        })
        .times(2)
        .output(|| {
            DescribeDbInstancesOutput::builder()
                .db_instances(db("available"))
                .build()
        })
        .repeatedly()
        .build();
    let create = mock!(aws_sdk_rds::Client::create_db_instance)
        .match_requests(|input| {
            input.master_user_password() == Some("pw-never-printed")
                && input.storage_encrypted() == Some(true)
                && input.multi_az() == Some(false)
        })
        .then_output(|| {
            CreateDbInstanceOutput::builder()
                .db_instance(db("creating"))
                .build()
        });
    let tags = mock!(aws_sdk_rds::Client::list_tags_for_resource)
        .then_output(|| ListTagsForResourceOutput::builder().build());
    let provider = provider(
        Rules {
            rds: vec![&describe, &create, &tags],
            ..Rules::default()
        },
        fast(),
    );
    let properties = props(json!({
        "identifier": "db-1",
        "engine": "postgres",
        "engine_version": "16.4",
        "instance_class": "db.t4g.medium",
        "allocated_storage": 20,
        "multi_az": false,
        "deletion_protection": false,
        "backup_retention_period": 7,
        "storage_encrypted": true,
        "db_subnet_group_name": "db-1-subnets",
        "parameter_group_name": "db-1-params",
        "vpc_security_group_ids": ["sg-1"],
        "master_username": "stacksmith",
        "master_password": "pw-never-printed",
        "tags": { "Name": "db-1" },
    }));
    let live = bounded(provider.create(&call("aws.rds.instance"), &properties, &ownership()))
        .await
        .expect("created once available");
    assert_eq!(create.num_calls(), 1);
    assert_eq!(live.outputs["status"], json!("available"));
    assert!(describe.num_calls() >= 7, "{} polls", describe.num_calls());
    let echoed = serde_json::to_string(&live).unwrap();
    assert!(
        !echoed.contains("pw-never-printed"),
        "the password leaked: {echoed}"
    );
}

#[tokio::test]
async fn replication_group_delete_waits_through_deleting_until_it_is_gone() {
    use aws_sdk_elasticache::operation::delete_replication_group::DeleteReplicationGroupOutput;
    use aws_sdk_elasticache::operation::describe_replication_groups::{
        DescribeReplicationGroupsError, DescribeReplicationGroupsOutput,
    };
    let group = |status: &str| {
        aws_sdk_elasticache::types::ReplicationGroup::builder()
            .replication_group_id("cache-1")
            .status(status)
            .build()
    };
    let describe = mock!(aws_sdk_elasticache::Client::describe_replication_groups)
        .sequence()
        .output(move || {
            DescribeReplicationGroupsOutput::builder()
                .replication_groups(group("available"))
                .build()
        })
        .output(move || {
            DescribeReplicationGroupsOutput::builder()
                .replication_groups(group("deleting"))
                .build()
        })
        .times(4)
        .error(|| {
            DescribeReplicationGroupsError::generic(
                aws_sdk_elasticache::error::ErrorMetadata::builder()
                    .code("ReplicationGroupNotFoundFault")
                    .build(),
            )
        })
        .repeatedly()
        .build();
    let delete = mock!(aws_sdk_elasticache::Client::delete_replication_group)
        .then_output(|| DeleteReplicationGroupOutput::builder().build());
    let provider = provider(
        Rules {
            elasticache: vec![&describe, &delete],
            ..Rules::default()
        },
        fast(),
    );
    bounded(provider.delete(&call("aws.elasticache.replication_group"), "cache-1"))
        .await
        .expect("deleted");
    assert_eq!(delete.num_calls(), 1);
    assert_eq!(describe.num_calls(), 6);
}

fn cluster(
    status: aws_sdk_eks::types::ClusterStatus,
    version: &str,
) -> aws_sdk_eks::types::Cluster {
    let mut tags = std::collections::HashMap::new();
    for (k, v) in ownership() {
        tags.insert(k, v);
    }
    aws_sdk_eks::types::Cluster::builder()
        .name("c1")
        .arn("arn:aws:eks:us-east-1:123456789012:cluster/c1")
        .version(version)
        .status(status)
        .set_tags(Some(tags))
        .build()
}

#[tokio::test]
async fn addon_latest_is_resolved_through_describe_addon_versions_and_pinned() {
    use aws_sdk_eks::operation::create_addon::CreateAddonOutput;
    use aws_sdk_eks::operation::describe_addon::{DescribeAddonError, DescribeAddonOutput};
    use aws_sdk_eks::operation::describe_addon_versions::DescribeAddonVersionsOutput;
    use aws_sdk_eks::operation::describe_cluster::DescribeClusterOutput;
    use aws_sdk_eks::types::{Addon, AddonInfo, AddonStatus, AddonVersionInfo, ClusterStatus};
    let describe_cluster = mock!(aws_sdk_eks::Client::describe_cluster).then_output(|| {
        DescribeClusterOutput::builder()
            .cluster(cluster(ClusterStatus::Active, "1.31"))
            .build()
    });
    let versions = mock!(aws_sdk_eks::Client::describe_addon_versions)
        .match_requests(|input| {
            input.addon_name() == Some("coredns") && input.kubernetes_version() == Some("1.31")
        })
        .then_output(|| {
            DescribeAddonVersionsOutput::builder()
                .addons(
                    AddonInfo::builder()
                        .addon_name("coredns")
                        .addon_versions(
                            AddonVersionInfo::builder()
                                .addon_version("v1.11.1-eksbuild.9")
                                .build(),
                        )
                        .addon_versions(
                            AddonVersionInfo::builder()
                                .addon_version("v1.11.3-eksbuild.1")
                                .build(),
                        )
                        .addon_versions(
                            AddonVersionInfo::builder()
                                .addon_version("v1.10.1-eksbuild.18")
                                .build(),
                        )
                        .build(),
                )
                .build()
        });
    let create = mock!(aws_sdk_eks::Client::create_addon)
        .match_requests(|input| input.addon_version() == Some("v1.11.3-eksbuild.1"))
        .then_output(|| CreateAddonOutput::builder().build());
    let addon = |status: AddonStatus| {
        Addon::builder()
            .addon_name("coredns")
            .cluster_name("c1")
            .addon_version("v1.11.3-eksbuild.1")
            .status(status)
            .build()
    };
    let describe = mock!(aws_sdk_eks::Client::describe_addon)
        .sequence()
        .output(move || {
            DescribeAddonOutput::builder()
                .addon(addon(AddonStatus::Creating))
                .build()
        })
        .times(3)
        .error(|| DescribeAddonError::generic(code("ThrottlingException")))
        .output(move || {
            DescribeAddonOutput::builder()
                .addon(addon(AddonStatus::Active))
                .build()
        })
        .repeatedly()
        .build();
    let provider = provider(
        Rules {
            eks: vec![&describe_cluster, &versions, &create, &describe],
            ..Rules::default()
        },
        fast(),
    );
    let properties = props(json!({
        "cluster_name": "c1",
        "addon_name": "coredns",
        "addon_version": "latest",
    }));
    let live = bounded(provider.create(&call("aws.eks.addon"), &properties, &ownership()))
        .await
        .expect("created");
    assert_eq!(live.id, "c1/coredns");
    assert_eq!(
        live.outputs["addon_version"],
        json!("v1.11.3-eksbuild.1"),
        "pinned"
    );
    assert_eq!(create.num_calls(), 1, "created with the newest version");
    assert!(describe.num_calls() >= 5);
}

#[tokio::test]
async fn cluster_version_upgrade_waits_for_the_update_and_the_cluster() {
    use aws_sdk_eks::operation::describe_cluster::DescribeClusterOutput;
    use aws_sdk_eks::operation::describe_update::DescribeUpdateOutput;
    use aws_sdk_eks::operation::update_cluster_version::UpdateClusterVersionOutput;
    use aws_sdk_eks::types::{ClusterStatus, Update, UpdateStatus};
    // read (1.30, ACTIVE), then UPDATING while the upgrade runs, then 1.31 ACTIVE.
    let describe = mock!(aws_sdk_eks::Client::describe_cluster)
        .sequence()
        .output(|| {
            DescribeClusterOutput::builder()
                .cluster(cluster(ClusterStatus::Active, "1.30"))
                .build()
        })
        .output(|| {
            DescribeClusterOutput::builder()
                .cluster(cluster(ClusterStatus::Updating, "1.30"))
                .build()
        })
        .times(3)
        .output(|| {
            DescribeClusterOutput::builder()
                .cluster(cluster(ClusterStatus::Active, "1.31"))
                .build()
        })
        .repeatedly()
        .build();
    let upgrade = mock!(aws_sdk_eks::Client::update_cluster_version)
        .match_requests(|input| input.version() == Some("1.31"))
        .then_output(|| {
            UpdateClusterVersionOutput::builder()
                .update(
                    Update::builder()
                        .id("u-1")
                        .status(UpdateStatus::InProgress)
                        .build(),
                )
                .build()
        });
    let update = |status: UpdateStatus| {
        DescribeUpdateOutput::builder()
            .update(Update::builder().id("u-1").status(status).build())
            .build()
    };
    let progress = mock!(aws_sdk_eks::Client::describe_update)
        .match_requests(|input| input.update_id() == Some("u-1"))
        .sequence()
        .output(move || update(UpdateStatus::InProgress))
        .times(4)
        .output(move || update(UpdateStatus::Successful))
        .build();
    // No node groups to bring to the control plane's version first.
    let groups = mock!(aws_sdk_eks::Client::list_nodegroups).then_output(|| {
        aws_sdk_eks::operation::list_nodegroups::ListNodegroupsOutput::builder().build()
    });
    let provider = provider(
        Rules {
            eks: vec![&describe, &upgrade, &progress, &groups],
            ..Rules::default()
        },
        fast(),
    );
    let properties = props(json!({
        "name": "c1",
        "version": "1.31",
        "tags": {},
    }));
    let live = bounded(provider.update(&call("aws.eks.cluster"), "c1", &properties))
        .await
        .expect("upgraded");
    assert_eq!(live.properties["version"], json!("1.31"));
    assert_eq!(upgrade.num_calls(), 1);
    assert_eq!(progress.num_calls(), 5, "polled until Successful");
}

#[tokio::test]
async fn failed_cluster_update_is_reported_with_its_reasons() {
    use aws_sdk_eks::operation::describe_cluster::DescribeClusterOutput;
    use aws_sdk_eks::operation::describe_update::DescribeUpdateOutput;
    use aws_sdk_eks::operation::update_cluster_version::UpdateClusterVersionOutput;
    use aws_sdk_eks::types::{ClusterStatus, ErrorDetail, Update, UpdateStatus};
    let describe = mock!(aws_sdk_eks::Client::describe_cluster).then_output(|| {
        DescribeClusterOutput::builder()
            .cluster(cluster(ClusterStatus::Active, "1.30"))
            .build()
    });
    let upgrade = mock!(aws_sdk_eks::Client::update_cluster_version).then_output(|| {
        UpdateClusterVersionOutput::builder()
            .update(Update::builder().id("u-2").build())
            .build()
    });
    let progress = mock!(aws_sdk_eks::Client::describe_update).then_output(|| {
        DescribeUpdateOutput::builder()
            .update(
                Update::builder()
                    .id("u-2")
                    .status(UpdateStatus::Failed)
                    .errors(
                        ErrorDetail::builder()
                            .error_message("add-ons are incompatible")
                            .build(),
                    )
                    .build(),
            )
            .build()
    });
    // No node groups to bring to the control plane's version first.
    let groups = mock!(aws_sdk_eks::Client::list_nodegroups).then_output(|| {
        aws_sdk_eks::operation::list_nodegroups::ListNodegroupsOutput::builder().build()
    });
    let provider = provider(
        Rules {
            eks: vec![&describe, &upgrade, &progress, &groups],
            ..Rules::default()
        },
        fast(),
    );
    let properties = props(json!({ "name": "c1", "version": "1.31", "tags": {} }));
    let error = bounded(provider.update(&call("aws.eks.cluster"), "c1", &properties))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ProviderError::Failed(m) if m.contains("add-ons are incompatible")),
        "{error:?}"
    );
}

#[tokio::test]
async fn cache_subnet_group_delete_retries_while_the_group_is_in_use() {
    // moto has no DeleteCacheSubnetGroup (aws_moto.rs says so): the real behaviour is here.
    use aws_sdk_elasticache::operation::delete_cache_subnet_group::{
        DeleteCacheSubnetGroupError, DeleteCacheSubnetGroupOutput,
    };
    let delete = mock!(aws_sdk_elasticache::Client::delete_cache_subnet_group)
        .sequence()
        .error(|| {
            DeleteCacheSubnetGroupError::generic(
                aws_sdk_elasticache::error::ErrorMetadata::builder()
                    .code("CacheSubnetGroupInUse")
                    .build(),
            )
        })
        .times(3)
        .output(|| DeleteCacheSubnetGroupOutput::builder().build())
        .build();
    let provider = provider(
        Rules {
            elasticache: vec![&delete],
            ..Rules::default()
        },
        fast(),
    );
    bounded(provider.delete(&call("aws.elasticache.subnet_group"), "cache-1-subnets"))
        .await
        .expect("deleted once the replication group is gone");
    assert_eq!(delete.num_calls(), 4);
}

fn protected_db() -> aws_sdk_rds::types::DbInstance {
    aws_sdk_rds::types::DbInstance::builder()
        .db_instance_identifier("db-1")
        .db_instance_status("available")
        .deletion_protection(true)
        .build()
}

#[tokio::test]
async fn rds_delete_of_a_protected_instance_is_refused_unless_allowed() {
    use aws_sdk_rds::operation::delete_db_instance::DeleteDbInstanceOutput;
    use aws_sdk_rds::operation::describe_db_instances::{
        DescribeDBInstancesError, DescribeDbInstancesOutput,
    };
    use aws_sdk_rds::operation::modify_db_instance::ModifyDbInstanceOutput;
    let not_found = || {
        DescribeDBInstancesError::generic(
            aws_sdk_rds::error::ErrorMetadata::builder()
                .code("DBInstanceNotFound")
                .build(),
        )
    };

    // Not allowed: refused, naming the instance, with no mutating call.
    let describe = mock!(aws_sdk_rds::Client::describe_db_instances).then_output(|| {
        DescribeDbInstancesOutput::builder()
            .db_instances(protected_db())
            .build()
    });
    let modify = mock!(aws_sdk_rds::Client::modify_db_instance)
        .then_output(|| ModifyDbInstanceOutput::builder().build());
    let delete = mock!(aws_sdk_rds::Client::delete_db_instance)
        .then_output(|| DeleteDbInstanceOutput::builder().build());
    let refusing = provider(
        Rules {
            rds: vec![&describe, &modify, &delete],
            ..Rules::default()
        },
        fast(),
    );
    let error = bounded(refusing.delete(&call("aws.rds.instance"), "db-1"))
        .await
        .expect_err("refused");
    let message = error.to_string();
    assert!(
        message.contains("db-1") && message.contains("--allow-deletion-protected"),
        "{message}"
    );
    assert_eq!((modify.num_calls(), delete.num_calls()), (0, 0));

    // Allowed: protection off first, then the delete, then gone.
    let describe = mock!(aws_sdk_rds::Client::describe_db_instances)
        .sequence()
        .output(|| {
            DescribeDbInstancesOutput::builder()
                .db_instances(protected_db())
                .build()
        })
        .error(not_found)
        .repeatedly()
        .build();
    let modify = mock!(aws_sdk_rds::Client::modify_db_instance)
        .match_requests(|input| {
            input.deletion_protection() == Some(false) && input.apply_immediately() == Some(true)
        })
        .then_output(|| ModifyDbInstanceOutput::builder().build());
    let delete = mock!(aws_sdk_rds::Client::delete_db_instance)
        .match_requests(|input| input.skip_final_snapshot() == Some(false))
        .then_output(|| DeleteDbInstanceOutput::builder().build());
    let allowing = AwsProvider::new(
        AwsContext::with_clients(
            clients(Rules {
                rds: vec![&describe, &modify, &delete],
                ..Rules::default()
            }),
            fast(),
        )
        .allowing_deletion_protected(true),
    );
    bounded(allowing.delete(&call("aws.rds.instance"), "db-1"))
        .await
        .expect("deleted");
    assert_eq!((modify.num_calls(), delete.num_calls()), (1, 1));
}

#[tokio::test]
async fn rds_delete_takes_a_final_snapshot_unless_the_stack_turns_it_off() {
    use aws_sdk_rds::operation::delete_db_instance::DeleteDbInstanceOutput;
    use aws_sdk_rds::operation::describe_db_instances::{
        DescribeDBInstancesError, DescribeDbInstancesOutput,
    };
    let not_found = || {
        DescribeDBInstancesError::generic(
            aws_sdk_rds::error::ErrorMetadata::builder()
                .code("DBInstanceNotFound")
                .build(),
        )
    };
    let available = || {
        aws_sdk_rds::types::DbInstance::builder()
            .db_instance_identifier("db-1")
            .db_instance_status("available")
            .deletion_protection(false)
            .build()
    };
    for skip in [false, true] {
        let describe = mock!(aws_sdk_rds::Client::describe_db_instances)
            .sequence()
            .output(move || {
                DescribeDbInstancesOutput::builder()
                    .db_instances(available())
                    .build()
            })
            .error(not_found)
            .repeatedly()
            .build();
        let delete = mock!(aws_sdk_rds::Client::delete_db_instance)
            .match_requests(move |input| {
                let snapshot = input.final_db_snapshot_identifier();
                if skip {
                    input.skip_final_snapshot() == Some(true) && snapshot.is_none()
                } else {
                    input.skip_final_snapshot() == Some(false)
                        && snapshot.is_some_and(|s| s.starts_with("db-1-final-"))
                }
            })
            .then_output(|| DeleteDbInstanceOutput::builder().build());
        let provider = AwsProvider::new(
            AwsContext::with_clients(
                clients(Rules {
                    rds: vec![&describe, &delete],
                    ..Rules::default()
                }),
                fast(),
            )
            .skipping_final_db_snapshot(skip),
        );
        bounded(provider.delete(&call("aws.rds.instance"), "db-1"))
            .await
            .expect("deleted");
        assert_eq!(delete.num_calls(), 1, "final snapshot skipped: {skip}");
    }
}

/// Issue 13 item 5: an add-on's configuration values reach EKS as JSON (`configurationValues`),
/// and read back as values, so the VPC CNI runs its network policy agent.
#[tokio::test]
async fn addon_configuration_values_are_sent_and_read_back() {
    use aws_sdk_eks::operation::create_addon::CreateAddonOutput;
    use aws_sdk_eks::operation::describe_addon::DescribeAddonOutput;
    use aws_sdk_eks::types::{Addon, AddonStatus};
    let create = mock!(aws_sdk_eks::Client::create_addon)
        .match_requests(|input| {
            input.addon_name() == Some("vpc-cni")
                && input
                    .configuration_values()
                    .and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok())
                    == Some(json!({"enableNetworkPolicy": "true"}))
        })
        .then_output(|| CreateAddonOutput::builder().build());
    let describe = mock!(aws_sdk_eks::Client::describe_addon).then_output(|| {
        DescribeAddonOutput::builder()
            .addon(
                Addon::builder()
                    .addon_name("vpc-cni")
                    .cluster_name("c1")
                    .addon_version("v1.19.0-eksbuild.1")
                    .configuration_values(r#"{"enableNetworkPolicy":"true"}"#)
                    .status(AddonStatus::Active)
                    .build(),
            )
            .build()
    });
    let provider = provider(
        Rules {
            eks: vec![&create, &describe],
            ..Rules::default()
        },
        fast(),
    );
    let properties = props(json!({
        "cluster_name": "c1",
        "addon_name": "vpc-cni",
        "addon_version": "v1.19.0-eksbuild.1",
        "configuration": { "enableNetworkPolicy": "true" },
    }));
    let live = bounded(provider.create(&call("aws.eks.addon"), &properties, &ownership()))
        .await
        .expect("created");
    assert_eq!(
        create.num_calls(),
        1,
        "CreateAddon carried the configuration"
    );
    assert_eq!(
        live.properties["configuration"],
        json!({"enableNetworkPolicy": "true"})
    );
}

/// The new half of a create-before-delete replacement carries the old half's ownership tags: a
/// create adopts an earlier attempt's object by those tags, but never one state records for the
/// address (`CallContext::taken`), which the plan deletes once the new object exists.
#[tokio::test]
async fn a_create_never_adopts_the_object_a_replacement_replaces() {
    use aws_sdk_ec2::operation::attach_internet_gateway::AttachInternetGatewayOutput;
    use aws_sdk_ec2::operation::create_internet_gateway::CreateInternetGatewayOutput;
    use aws_sdk_ec2::operation::describe_internet_gateways::DescribeInternetGatewaysOutput;
    use aws_sdk_ec2::types::InternetGateway;

    let tagged = mock!(aws_sdk_ec2::Client::describe_internet_gateways)
        .match_requests(|r| !r.filters().is_empty())
        .then_output(|| {
            DescribeInternetGatewaysOutput::builder()
                .internet_gateways(
                    InternetGateway::builder()
                        .internet_gateway_id("igw-old")
                        .build(),
                )
                .build()
        });
    let by_id = mock!(aws_sdk_ec2::Client::describe_internet_gateways)
        .match_requests(|r| r.filters().is_empty())
        .then_output(|| {
            DescribeInternetGatewaysOutput::builder()
                .internet_gateways(
                    InternetGateway::builder()
                        .internet_gateway_id("igw-new")
                        .attachments(
                            aws_sdk_ec2::types::InternetGatewayAttachment::builder()
                                .vpc_id("vpc-1")
                                .build(),
                        )
                        .build(),
                )
                .build()
        });
    let created = mock!(aws_sdk_ec2::Client::create_internet_gateway).then_output(|| {
        CreateInternetGatewayOutput::builder()
            .internet_gateway(
                InternetGateway::builder()
                    .internet_gateway_id("igw-new")
                    .build(),
            )
            .build()
    });
    let attached = mock!(aws_sdk_ec2::Client::attach_internet_gateway)
        .then_output(|| AttachInternetGatewayOutput::builder().build());
    let provider = provider(
        Rules {
            ec2: vec![&tagged, &by_id, &created, &attached],
            ..Rules::default()
        },
        fast(),
    );
    let properties: IndexMap<String, Value> = [("vpc_id".to_owned(), json!("vpc-1"))].into();
    let tags: IndexMap<String, String> = [
        ("stacksmith:stack".to_owned(), "local".to_owned()),
        (
            "stacksmith:address".to_owned(),
            "network.internet_gateway".to_owned(),
        ),
    ]
    .into();
    let mut context = call("aws.ec2.internet_gateway");
    context.taken = vec!["igw-old".to_owned()];
    let live = tokio::time::timeout(BOUND, provider.create(&context, &properties, &tags))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        live.id, "igw-new",
        "a new gateway, not the one being replaced"
    );
    assert_eq!(created.num_calls(), 1);
    assert_eq!(attached.num_calls(), 1);
}
