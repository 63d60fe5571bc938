//! `provisioner drift`, `refresh` and `up` (the binary) on the `local` stack against moto, with
//! out-of-band changes made through the AWS SDK: node group scaling changed, an extra ingress rule
//! on the database security group, a tag removed from the VPC, the private NAT route deleted, a
//! public subnet deleted and an unmanaged VPC created with the deployment's tags. Each is reported
//! exactly once, with no other drift, in all four formats; a clean deployment reports exit 0; `up`
//! converges; `refresh` accepts live values.
//!
//! moto gaps (see ../shared/design/emulators.md) shape the stack used here: it has no cache,
//! because moto ignores `NumCacheClusters` (a replication group would always read back with one
//! cluster instead of the stack's two, i.e. as drift) and never finishes deleting one. The
//! comparison itself is covered without a cloud in drift.rs.
//!
//! Needs the moto server of `cargo xtask test` (STACKSMITH_TEST_AWS_ENDPOINT).

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use aws_sdk_ec2::types::{IpPermission, IpRange, ResourceType as Ec2Type, Tag, TagSpecification};
use provisioner::aws::{AwsTarget, PollSettings};
use provisioner::engine::Address;
use provisioner::engine::drift::{DriftReport, DriftStatus};
use provisioner::state::StateDocument;
use serde_json::{Value, json};

mod drift_support;
use drift_support::{assert_valid, check_junit};

const TEST_BOUND: Duration = Duration::from_secs(280);

fn target() -> AwsTarget {
    AwsTarget {
        region: "us-east-1".into(),
        endpoint_url: Some(stacksmith_testkit::aws_endpoint()),
        profile: None,
        static_credentials: Some(("testing".into(), "testing".into())),
        poll: PollSettings::default(),
        ..AwsTarget::default()
    }
}

/// A working directory with a stack extending the `local` template without its cache. Dropped
/// after an `up`, it runs `down` (plain moto gives every cluster the same OIDC issuer, and a deployment left
/// behind would break the next one's OIDC provider).
struct Deployment {
    dir: PathBuf,
    instance: String,
    deployed: std::cell::Cell<bool>,
}

impl Deployment {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let instance = format!("d{:x}{:x}", std::process::id() % 4096, nanos % 65536);
        let dir = std::env::temp_dir().join(stacksmith_testkit::unique_name("drift-moto"));
        std::fs::create_dir_all(dir.join("stacks")).unwrap();
        let template =
            stacksmith_testkit::workspace_root().join("tests/fixtures/aws/local-instances.yaml");
        std::fs::write(
            dir.join("stacks/drift.yaml"),
            format!(
                "# The local stack without its cache (see drift_moto.rs).\nextends: {}\ncache: null\n",
                template.display()
            ),
        )
        .unwrap();
        Self {
            dir,
            instance,
            deployed: std::cell::Cell::new(false),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut full = vec!["--stacks-dir", "stacks"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--stack", "drift", "--instance", &self.instance]);
        stacksmith_testkit::provisioner_against_moto(
            env!("CARGO_BIN_EXE_provisioner"),
            &stacksmith_testkit::aws_endpoint(),
            "drift-moto-test",
        )
        .args(&full)
        .current_dir(&self.dir)
        .env(
            "STACKSMITH_POLICIES_DIR",
            stacksmith_testkit::workspace_root().join("policies"),
        )
        // `up` applies the in-cluster objects to the Kubernetes emulator of `cargo xtask`.
        .env("STACKSMITH_KUBECONFIG", stacksmith_testkit::kubeconfig())
        .output()
        .unwrap()
    }

    fn state(&self) -> StateDocument {
        let path = self
            .dir
            .join(format!(".stacksmith/state/local-{}.json", self.instance));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn id(&self, address: &str) -> String {
        self.state().resources[&Address::new(address)].id.clone()
    }

    fn up(&self) {
        self.deployed.set(true);
        let up = self.run(&["up", "--yes"]);
        assert!(up.status.success(), "up failed:\n{}", stderr(&up));
    }

    /// `drift --format json`: the exit code and the report (validated against the schema).
    fn drift_json(&self) -> (i32, DriftReport) {
        let out = self.run(&["drift", "--format", "json"]);
        let json = String::from_utf8(out.stdout).unwrap();
        assert!(
            matches!(out.status.code(), Some(0 | 2)),
            "drift failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_valid(&json);
        (
            out.status.code().unwrap(),
            serde_json::from_str(&json).unwrap(),
        )
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if self.deployed.get() {
            let down = self.run(&["down", "--yes"]);
            if !down.status.success() {
                eprintln!("cleanup: down failed:\n{}", stderr(&down));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn drifted(report: &DriftReport) -> Vec<String> {
    report
        .drifted()
        .map(|e| format!("{} {}", e.status.as_str(), e.address))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_band_changes_are_reported_once_in_every_format_and_up_converges_them() {
    tokio::time::timeout(TEST_BOUND, scenario())
        .await
        .expect("the scenario finishes within its bound");
}

async fn scenario() {
    let deployment = Deployment::new();
    let sdk = target().load().await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let eks = aws_sdk_eks::Client::new(&sdk);

    // 1. A clean deployment: no drift, exit 0.
    deployment.up();
    let (code, report) = deployment.drift_json();
    assert_eq!(
        code,
        0,
        "clean deployment drifts: {}",
        serde_json::to_string_pretty(&report.drifted().collect::<Vec<_>>()).unwrap()
    );
    assert!(report.summary.in_sync > 30, "{:?}", report.summary);
    assert_eq!(
        report.instance.as_deref(),
        Some(deployment.instance.as_str())
    );

    // 2. Out of band, through the SDK.
    let workers = deployment.id("cluster.node_group.workers");
    let (cluster, group) = workers.split_once('/').unwrap();
    eks.update_nodegroup_config()
        .cluster_name(cluster)
        .nodegroup_name(group)
        .scaling_config(
            aws_sdk_eks::types::NodegroupScalingConfig::builder()
                .min_size(1)
                .desired_size(2)
                .max_size(3)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let database_group = deployment.id("network.security_group.database");
    ec2.authorize_security_group_ingress()
        .group_id(&database_group)
        .ip_permissions(
            IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(22)
                .to_port(22)
                .ip_ranges(IpRange::builder().cidr_ip("10.0.0.0/8").build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let vpc = deployment.id("network.vpc");
    ec2.delete_tags()
        .resources(&vpc)
        .tags(Tag::builder().key("team").build())
        .send()
        .await
        .unwrap();
    let route = deployment.id("network.route.private_nat[0]");
    let (table, destination) = route.split_once('_').unwrap();
    ec2.delete_route()
        .route_table_id(table)
        .destination_cidr_block(destination)
        .send()
        .await
        .unwrap();
    let subnet = deployment.id("network.subnet.public[1]");
    ec2.delete_subnet().subnet_id(&subnet).send().await.unwrap();
    let rogue = ec2
        .create_vpc()
        .cidr_block("10.99.0.0/16")
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(Ec2Type::Vpc)
                .tags(
                    Tag::builder()
                        .key("stacksmith:stack")
                        .value("local")
                        .build(),
                )
                .tags(
                    Tag::builder()
                        .key("stacksmith:instance")
                        .value(&deployment.instance)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap()
        .vpc()
        .unwrap()
        .vpc_id()
        .unwrap()
        .to_owned();
    let unmanaged = format!("aws.ec2.vpc/{rogue}");

    // 3. JSON: each change exactly once, nothing else.
    let (code, report) = deployment.drift_json();
    assert_eq!(code, 2);
    let mut found = drifted(&report);
    found.sort();
    let mut expected = vec![
        "modified cluster.node_group.workers".to_owned(),
        "modified network.security_group.database".to_owned(),
        "modified network.vpc".to_owned(),
        "deleted network.route.private_nat[0]".to_owned(),
        "deleted network.subnet.public[1]".to_owned(),
        format!("unmanaged {unmanaged}"),
    ];
    expected.sort();
    assert_eq!(found, expected, "{}", report.to_json());
    let entry = |address: &str| {
        report
            .entries
            .iter()
            .find(|e| e.address == address)
            .unwrap()
    };
    let attributes = |address: &str| -> Vec<(String, Value, Value)> {
        entry(address)
            .attributes
            .iter()
            .map(|a| (a.name.clone(), a.expected.clone(), a.actual.clone()))
            .collect()
    };
    assert_eq!(
        attributes("cluster.node_group.workers"),
        vec![("scaling.desired".to_owned(), json!(1), json!(2))]
    );
    assert_eq!(
        attributes("network.vpc"),
        vec![("tags.team".to_owned(), json!("platform"), Value::Null)]
    );
    let rules = attributes("network.security_group.database");
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert!(rules[0].0.starts_with("ingress_rules[sgr-"), "{rules:?}");
    assert_eq!(rules[0].1, Value::Null);
    assert_eq!(rules[0].2["from_port"], json!(22));
    assert_eq!(rules[0].2["cidr_blocks"], json!(["10.0.0.0/8"]));
    assert_eq!(entry(&unmanaged).status, DriftStatus::Unmanaged);

    // The other three formats carry the same six objects.
    let junit_path = deployment.dir.join("drift.xml");
    let junit = deployment.run(&[
        "drift",
        "--format",
        "junit",
        "--out",
        junit_path.to_str().unwrap(),
    ]);
    assert_eq!(junit.status.code(), Some(2), "{}", stderr(&junit));
    let xml = std::fs::read_to_string(&junit_path).unwrap();
    // The objects are read again: compare as sets of (address, status).
    let again: DriftReport = {
        let (_, report) = deployment.drift_json();
        report
    };
    assert_eq!(drifted(&again).len(), 6);
    check_junit(&xml, &again);

    let markdown = deployment.run(&["drift", "--format", "markdown"]);
    assert_eq!(markdown.status.code(), Some(2));
    let markdown = String::from_utf8(markdown.stdout).unwrap();
    let human = deployment.run(&["drift"]);
    assert_eq!(human.status.code(), Some(2));
    let human = String::from_utf8(human.stdout).unwrap();
    for address in [
        "cluster.node_group.workers",
        "network.security_group.database",
        "network.vpc",
        "network.route.private_nat[0]",
        "network.subnet.public[1]",
        unmanaged.as_str(),
    ] {
        let rows = markdown
            .lines()
            .filter(|l| l.starts_with(&format!("| `{address}` ")))
            .count();
        assert_eq!(rows, 1, "{address} in the Markdown:\n{markdown}");
        let lines = human
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some(address))
            .count();
        assert_eq!(lines, 1, "{address} in the text:\n{human}");
    }
    assert!(
        human.contains("scaling.desired: expected 1, actual 2"),
        "{human}"
    );
    assert!(markdown.contains("**"), "{markdown}");

    // `plan --refresh` shows what `up` will do about it, the extra rule's removal included.
    let plan = deployment.run(&["plan", "--refresh", "--json"]);
    let plan: Value = serde_json::from_slice(&plan.stdout)
        .unwrap_or_else(|e| panic!("plan --refresh --json: {e}: {}", stderr(&plan)));
    let changed: Vec<(String, String)> = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] != "no_op")
        .map(|a| {
            (
                a["address"].as_str().unwrap().to_owned(),
                a["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for expected in [
        ("cluster.node_group.workers", "update"),
        ("network.vpc", "update"),
        ("network.route.private_nat[0]", "create"),
        ("network.subnet.public[1]", "create"),
        (
            "network.security_group.database.unrecorded_ingress_rules[0]",
            "delete",
        ),
    ] {
        assert!(
            changed.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "{expected:?} not in {changed:?}"
        );
    }

    // 4. `up` converges: the group scaled back, the tag, route and subnet restored, the extra
    // ingress rule revoked. The unmanaged VPC is not the stack's to delete: removed by hand.
    deployment.up();
    let (_, report) = deployment.drift_json();
    assert_eq!(
        drifted(&report),
        vec![format!("unmanaged {unmanaged}")],
        "{}",
        report.to_json()
    );
    let groups = eks
        .describe_nodegroup()
        .cluster_name(cluster)
        .nodegroup_name(group)
        .send()
        .await
        .unwrap();
    let scaling = groups.nodegroup().unwrap().scaling_config().unwrap();
    assert_eq!(scaling.desired_size(), Some(1), "up scaled the group back");
    let rules = ec2
        .describe_security_group_rules()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("group-id")
                .values(&database_group)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let ingress_ports: Vec<Option<i32>> = rules
        .security_group_rules()
        .iter()
        .filter(|r| r.is_egress() != Some(true))
        .map(|r| r.from_port())
        .collect();
    assert_eq!(ingress_ports, vec![Some(5432)], "up revoked the extra rule");
    ec2.delete_vpc().vpc_id(&rogue).send().await.unwrap();
    let (code, report) = deployment.drift_json();
    assert_eq!(code, 0, "after up: {:?}", drifted(&report));
    // Converged: a refreshed plan has nothing left to do.
    let plan = deployment.run(&["plan", "--refresh", "--detailed-exitcode"]);
    assert_eq!(
        plan.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&plan.stdout),
        stderr(&plan)
    );

    // An unmanaged log group under /stacksmith/ is found by its tags too.
    let logs = aws_sdk_cloudwatchlogs::Client::new(&sdk);
    let stray = format!("/stacksmith/local-{}/stray", deployment.instance);
    logs.create_log_group()
        .log_group_name(&stray)
        .tags("stacksmith:stack", "local")
        .tags("stacksmith:instance", &deployment.instance)
        .send()
        .await
        .unwrap();
    let (code, report) = deployment.drift_json();
    assert_eq!(code, 2);
    assert_eq!(
        drifted(&report),
        vec![format!("unmanaged aws.logs.log_group/{stray}")]
    );
    logs.delete_log_group()
        .log_group_name(&stray)
        .send()
        .await
        .unwrap();

    // 5. refresh: a scaling change is accepted into state (no drift), then `up` reverts it to
    // what the stack says.
    eks.update_nodegroup_config()
        .cluster_name(cluster)
        .nodegroup_name(group)
        .scaling_config(
            aws_sdk_eks::types::NodegroupScalingConfig::builder()
                .min_size(1)
                .desired_size(3)
                .max_size(3)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let serial = deployment.state().serial;
    let refresh = deployment.run(&["refresh", "--yes", "--json"]);
    assert!(refresh.status.success(), "refresh: {}", stderr(&refresh));
    let accepted: Value = serde_json::from_slice(&refresh.stdout).unwrap();
    assert_eq!(accepted["updated"], json!(["cluster.node_group.workers"]));
    assert_eq!(accepted["removed"], json!([]));
    let state = deployment.state();
    assert!(state.serial > serial);
    assert_eq!(
        state.resources[&Address::new("cluster.node_group.workers")].properties["scaling"]["desired"],
        json!(3)
    );
    let (code, _) = deployment.drift_json();
    assert_eq!(code, 0, "refresh accepted the live value");
    deployment.up();
    let groups = eks
        .describe_nodegroup()
        .cluster_name(cluster)
        .nodegroup_name(group)
        .send()
        .await
        .unwrap();
    assert_eq!(
        groups
            .nodegroup()
            .unwrap()
            .scaling_config()
            .unwrap()
            .desired_size(),
        Some(1),
        "up reverts what the stack declares differently"
    );

    // 6. Leave moto clean for the other tests.
    let down = deployment.run(&["down", "--yes"]);
    assert!(down.status.success(), "down: {}", stderr(&down));
    deployment.deployed.set(false);
}
