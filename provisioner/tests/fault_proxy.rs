//! The fault proxy of the testkit (`stacksmith_testkit::faultproxy`) in front of moto, each rule
//! proved through the AWS SDK (so the answers parse as the errors AWS sends): throttling codes
//! and statuses per service, 500/503, latency, eventual consistency of new EC2 ids and IAM
//! roles, EKS/RDS/ElastiCache lifecycle states with scaled durations, and determinism from the
//! seed. Then `up` of the shipped `local` stack (cache included) behind 30% throttling succeeds
//! with at most twice the calls of an unthrottled run.
//!
//! Needs the servers of `cargo xtask test` (moto, and the Kubernetes emulator for `up`).

use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_sdk_ec2::error::ProvideErrorMetadata;
use stacksmith_testkit::faultproxy::{FaultConfig, FaultProxy, Rule};

mod moto_support;
use moto_support::Deployment;

const TEST_BOUND: Duration = Duration::from_secs(280);

async fn sdk(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .retry_config(RetryConfig::disabled())
        .load()
        .await
}

async fn proxy(config: FaultConfig) -> FaultProxy {
    FaultProxy::start(&stacksmith_testkit::aws_endpoint(), config)
        .await
        .expect("the proxy starts")
}

/// The code and HTTP status of an SDK error.
fn code_and_status<E: ProvideErrorMetadata>(
    error: aws_sdk_ec2::error::SdkError<E, aws_sdk_ec2::config::http::HttpResponse>,
) -> (String, u16) {
    let status = error
        .raw_response()
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    let code = error
        .as_service_error()
        .and_then(|e| e.code())
        .unwrap_or("?")
        .to_owned();
    (code, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_answers_carry_each_services_own_code_and_status() {
    let proxy = proxy(FaultConfig {
        rules: vec![
            Rule::throttle(1.0, "*:Describe*"),
            Rule::throttle(1.0, "*:List*"),
        ],
        ..FaultConfig::default()
    })
    .await;
    let sdk = sdk(&proxy.url()).await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk)
        .describe_vpcs()
        .send()
        .await
        .unwrap_err();
    assert_eq!(code_and_status(ec2), ("RequestLimitExceeded".into(), 503));
    let iam = aws_sdk_iam::Client::new(&sdk)
        .list_roles()
        .send()
        .await
        .unwrap_err();
    assert_eq!(code_and_status(iam), ("Throttling".into(), 400));
    let rds = aws_sdk_rds::Client::new(&sdk)
        .describe_db_instances()
        .send()
        .await
        .unwrap_err();
    assert_eq!(code_and_status(rds), ("Throttling".into(), 400));
    let cache = aws_sdk_elasticache::Client::new(&sdk)
        .describe_replication_groups()
        .send()
        .await
        .unwrap_err();
    assert_eq!(code_and_status(cache), ("Throttling".into(), 400));
    let eks = aws_sdk_eks::Client::new(&sdk)
        .list_clusters()
        .send()
        .await
        .unwrap_err();
    assert_eq!(code_and_status(eks), ("ThrottlingException".into(), 429));
    let logs = aws_sdk_cloudwatchlogs::Client::new(&sdk)
        .describe_log_groups()
        .send()
        .await
        .unwrap_err();
    assert_eq!(code_and_status(logs), ("ThrottlingException".into(), 400));
    let stats = proxy.stats();
    assert_eq!(stats["ec2:DescribeVpcs"].throttled, 1);
    assert_eq!(stats["eks:ListClusters"].throttled, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_and_latency_apply_to_the_operations_their_rule_names() {
    let proxy = proxy(FaultConfig {
        rules: vec![
            Rule::server_error(500, 1.0, "ec2:DescribeVpcs"),
            Rule::server_error(503, 1.0, "eks:ListClusters"),
            Rule::latency(Duration::from_millis(300), "ec2:DescribeSubnets"),
        ],
        ..FaultConfig::default()
    })
    .await;
    let sdk = sdk(&proxy.url()).await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let error = ec2.describe_vpcs().send().await.unwrap_err();
    assert_eq!(code_and_status(error), ("InternalError".into(), 500));
    let eks = aws_sdk_eks::Client::new(&sdk)
        .list_clusters()
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        code_and_status(eks),
        ("ServiceUnavailableException".into(), 503)
    );
    let started = Instant::now();
    ec2.describe_subnets().send().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Other operations pass untouched.
    let started = Instant::now();
    ec2.describe_route_tables().send().await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(300));
    assert_eq!(proxy.stats()["ec2:DescribeSubnets"].delayed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_throttles_the_same_calls() {
    let pattern = |seed: u64| async move {
        let proxy = proxy(FaultConfig {
            seed,
            rules: vec![Rule::throttle(0.3, "ec2:DescribeAvailabilityZones")],
            ..FaultConfig::default()
        })
        .await;
        let ec2 = aws_sdk_ec2::Client::new(&sdk(&proxy.url()).await);
        let mut outcomes = Vec::new();
        for _ in 0..40 {
            outcomes.push(ec2.describe_availability_zones().send().await.is_ok());
        }
        outcomes
    };
    let first = pattern(11).await;
    assert_eq!(first, pattern(11).await);
    assert_ne!(first, pattern(12).await);
    let throttled = first.iter().filter(|ok| !**ok).count();
    assert!((4..=20).contains(&throttled), "{throttled} of 40");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_ec2_ids_and_iam_roles_are_not_found_for_a_while() {
    let proxy = proxy(FaultConfig {
        consistency: Some(Duration::from_millis(1500)),
        consistency_services: vec!["ec2".into(), "iam".into()],
        ..FaultConfig::default()
    })
    .await;
    let sdk = sdk(&proxy.url()).await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.77.0.0/16")
        .send()
        .await
        .unwrap()
        .vpc()
        .unwrap()
        .vpc_id()
        .unwrap()
        .to_owned();
    let error = ec2.describe_vpcs().vpc_ids(&vpc).send().await.unwrap_err();
    assert_eq!(code_and_status(error).0, "InvalidVpcID.NotFound");
    let error = ec2
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block("10.77.1.0/24")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code_and_status(error).0, "InvalidVpcID.NotFound");
    let iam = aws_sdk_iam::Client::new(&sdk);
    let role = stacksmith_testkit::unique_name("proxy-role").replace('_', "-");
    iam.create_role()
        .role_name(&role)
        .assume_role_policy_document("{}")
        .send()
        .await
        .unwrap();
    let error = iam.get_role().role_name(&role).send().await.unwrap_err();
    assert_eq!(code_and_status(error), ("NoSuchEntity".into(), 404));
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(
        ec2.describe_vpcs()
            .vpc_ids(&vpc)
            .send()
            .await
            .unwrap()
            .vpcs()
            .len(),
        1
    );
    iam.get_role().role_name(&role).send().await.unwrap();
    iam.delete_role().role_name(&role).send().await.unwrap();
    ec2.delete_vpc().vpc_id(&vpc).send().await.unwrap();
    assert!(proxy.stats()["ec2:DescribeVpcs"].not_found >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_states_last_their_scaled_durations() {
    tokio::time::timeout(TEST_BOUND, lifecycle())
        .await
        .expect("within the bound");
}

async fn lifecycle() {
    // 15 minutes of EKS CREATING become 1.8 s; RDS creating 12 min 1.44 s, backing-up 0.36 s.
    let proxy = proxy(FaultConfig {
        lifecycle_scale: Some(0.002),
        ..FaultConfig::default()
    })
    .await;
    let sdk = sdk(&proxy.url()).await;
    let name = stacksmith_testkit::unique_name("lc").replace('_', "-");

    // ElastiCache: creating, tag calls refused meanwhile, then available.
    let cache = aws_sdk_elasticache::Client::new(&sdk);
    let group = cache
        .create_replication_group()
        .replication_group_id(&name)
        .replication_group_description("lifecycle")
        .engine("redis")
        .cache_node_type("cache.t4g.small")
        .num_cache_clusters(2)
        .send()
        .await
        .unwrap();
    let arn = group.replication_group().unwrap().arn().unwrap().to_owned();
    let status = |cache: aws_sdk_elasticache::Client, id: String| async move {
        cache
            .describe_replication_groups()
            .replication_group_id(id)
            .send()
            .await
            .unwrap()
            .replication_groups()[0]
            .status()
            .unwrap()
            .to_owned()
    };
    assert_eq!(status(cache.clone(), name.clone()).await, "creating");
    let refused = cache
        .list_tags_for_resource()
        .resource_name(&arn)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code_and_status(refused).0, "InvalidReplicationGroupState");

    // RDS: creating, then backing-up, then available.
    let rds = aws_sdk_rds::Client::new(&sdk);
    rds.create_db_instance()
        .db_instance_identifier(&name)
        .engine("postgres")
        .db_instance_class("db.t4g.medium")
        .allocated_storage(20)
        .master_username("stacksmith")
        .master_user_password("a-password-long-enough")
        .send()
        .await
        .unwrap();
    let db_status = |rds: aws_sdk_rds::Client, id: String| async move {
        rds.describe_db_instances()
            .db_instance_identifier(id)
            .send()
            .await
            .unwrap()
            .db_instances()[0]
            .db_instance_status()
            .unwrap()
            .to_owned()
    };
    let mut seen = vec![db_status(rds.clone(), name.clone()).await];
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.last().map(String::as_str) != Some("available") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = db_status(rds.clone(), name.clone()).await;
        if seen.last() != Some(&now) {
            seen.push(now);
        }
    }
    assert_eq!(seen, ["creating", "backing-up", "available"]);
    assert_eq!(status(cache.clone(), name.clone()).await, "available");
    cache
        .list_tags_for_resource()
        .resource_name(&arn)
        .send()
        .await
        .unwrap();
    rds.delete_db_instance()
        .db_instance_identifier(&name)
        .skip_final_snapshot(true)
        .send()
        .await
        .unwrap();
    cache
        .delete_replication_group()
        .replication_group_id(&name)
        .send()
        .await
        .unwrap();

    // EKS: CREATING without an endpoint, then ACTIVE; DELETING until the time is up, then gone.
    let eks = aws_sdk_eks::Client::new(&sdk);
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.78.0.0/16")
        .send()
        .await
        .unwrap()
        .vpc()
        .unwrap()
        .vpc_id()
        .unwrap()
        .to_owned();
    let subnet = ec2
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block("10.78.1.0/24")
        .send()
        .await
        .unwrap()
        .subnet()
        .unwrap()
        .subnet_id()
        .unwrap()
        .to_owned();
    eks.create_cluster()
        .name(&name)
        .role_arn("arn:aws:iam::123456789012:role/eks")
        .resources_vpc_config(
            aws_sdk_eks::types::VpcConfigRequest::builder()
                .subnet_ids(&subnet)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let cluster = eks.describe_cluster().name(&name).send().await.unwrap();
    let cluster = cluster.cluster().unwrap();
    assert_eq!(cluster.status().unwrap().as_str(), "CREATING");
    assert_eq!(cluster.endpoint(), None);
    tokio::time::sleep(Duration::from_millis(1900)).await;
    let cluster = eks.describe_cluster().name(&name).send().await.unwrap();
    assert_eq!(
        cluster.cluster().unwrap().status().unwrap().as_str(),
        "ACTIVE"
    );
    eks.delete_cluster().name(&name).send().await.unwrap();
    let cluster = eks.describe_cluster().name(&name).send().await.unwrap();
    assert_eq!(
        cluster.cluster().unwrap().status().unwrap().as_str(),
        "DELETING"
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let gone = eks.describe_cluster().name(&name).send().await.unwrap_err();
    assert_eq!(code_and_status(gone).0, "ResourceNotFoundException");
    ec2.delete_subnet().subnet_id(&subnet).send().await.unwrap();
    ec2.delete_vpc().vpc_id(&vpc).send().await.unwrap();
}

/// With 30% of all calls throttled (the SDK's own retries on), `up` of the shipped `local`
/// stack still succeeds, with at most twice the calls (attempts at the proxy) of an unthrottled
/// run, and its second `up` changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_of_the_local_stack_succeeds_behind_30_percent_throttling() {
    tokio::time::timeout(Duration::from_secs(560), throttled_up())
        .await
        .expect("within the bound");
}

async fn throttled_up() {
    let calm = proxy(FaultConfig::default()).await;
    let baseline = Deployment::new("tb", &calm.url());
    tokio::task::block_in_place(|| baseline.up());
    let calm_calls: u64 = calm.stats().values().map(|s| s.calls).sum();

    let stormy = proxy(FaultConfig {
        seed: 14,
        rules: vec![Rule::throttle(0.3, "*")],
        ..FaultConfig::default()
    })
    .await;
    let deployment = Deployment::new("tt", &stormy.url());
    tokio::task::block_in_place(|| deployment.up());
    let stats = stormy.stats();
    let calls: u64 = stats.values().map(|s| s.calls).sum();
    let throttled: u64 = stats.values().map(|s| s.throttled).sum();
    eprintln!(
        "RESULT throttled-up calm_calls={calm_calls} calls={calls} throttled={throttled} ratio={:.2}",
        calls as f64 / calm_calls as f64
    );
    assert!(throttled > 0);
    assert!(
        calls <= 2 * calm_calls,
        "{calls} calls behind throttling, {calm_calls} without"
    );
    let (second, log) = tokio::task::block_in_place(|| deployment.run_logged(&["up", "--yes"]));
    assert!(
        second.status.success(),
        "{}",
        stacksmith_testkit::describe(&second)
    );
    let mutating: Vec<_> = log
        .iter()
        .filter(|c| provisioner::aws::CallLog::is_mutating(c))
        .collect();
    assert!(mutating.is_empty(), "{mutating:?}");
    // `down` runs when a deployment is dropped: off the runtime's threads, proxies still up.
    tokio::task::block_in_place(|| {
        drop(deployment);
        drop(baseline);
    });
}

/// Issue 14, item 5: an AWS error is one line naming the operation, AWS's code and message, the
/// HTTP status and the request id; an answer without a code (moto's HTML error page) says so
/// instead of dumping the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_errors_read_as_one_line_with_status_code_message_and_request_id() {
    let proxy = proxy(FaultConfig {
        rules: vec![Rule::throttle(1.0, "ec2:DescribeVpcs")],
        ..FaultConfig::default()
    })
    .await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk(&proxy.url()).await);
    let error = ec2.describe_vpcs().send().await.unwrap_err();
    let line = provisioner::aws::ApiError::new("DescribeVpcs", error).to_string();
    assert!(
        line.starts_with("DescribeVpcs: RequestLimitExceeded: Request limit exceeded. (HTTP 503, request id f4a17000-"),
        "{line}"
    );
    assert!(!line.contains('\n'));

    // moto answers IncreaseReplicaCount with an HTML 500 page.
    let cache = aws_sdk_elasticache::Client::new(&sdk(&stacksmith_testkit::aws_endpoint()).await);
    let error = cache
        .increase_replica_count()
        .replication_group_id("nothing-here")
        .apply_immediately(true)
        .new_replica_count(2)
        .send()
        .await
        .unwrap_err();
    let line = provisioner::aws::ApiError::new("IncreaseReplicaCount", error).to_string();
    assert!(line.starts_with("IncreaseReplicaCount: "), "{line}");
    assert!(!line.contains('\n') && !line.contains('<'), "{line}");
    assert!(line.len() < 200, "{line}");
}
