//! Drift without a cloud: the comparison (`engine::drift::detect`) and `refresh`'s
//! `accept_live` on hand-made state, live values and owned objects, covering each kind of drift
//! the moto scenario (drift_moto.rs) shows plus what moto cannot (attributes a provider does not
//! read back, secrets, AWS defaults, members of unmanaged parents); the four renderings (the
//! JSON validates against the committed schema, the JUnit XML parses); and the binary's exit
//! codes with the fake provider.

use std::path::PathBuf;
use std::process::Command;

use chrono::Utc;
use indexmap::IndexMap;
use provisioner::engine::drift::{
    self, AttributeDrift, DriftEntry, DriftInput, DriftReport, DriftStatus,
};
use provisioner::engine::drift_render;
use provisioner::engine::plan::StateVersion;
use provisioner::engine::planner::LiveSnapshot;
use provisioner::engine::provider::{LiveResource, MemberOf, OwnedObject};
use provisioner::engine::{Address, DesiredResource, DesiredSet, ResourceType};
use provisioner::state::{ResourceRecord, StateDocument};
use serde_json::{Value, json};

mod drift_support;
use drift_support::{assert_valid, check_junit, schema};

fn map(value: Value) -> IndexMap<String, Value> {
    match value {
        Value::Object(m) => m.into_iter().collect(),
        _ => panic!("an object"),
    }
}

fn ownership() -> IndexMap<String, String> {
    let mut tags = IndexMap::new();
    tags.insert("stacksmith:stack".to_owned(), "demo".to_owned());
    tags.insert("stacksmith:instance".to_owned(), String::new());
    tags
}

struct Case {
    desired: DesiredSet,
    state: StateDocument,
    live: LiveSnapshot,
    owned: Vec<OwnedObject>,
}

impl Case {
    fn new() -> Self {
        let mut state = StateDocument::new("demo", None);
        state.serial = 7;
        Self {
            desired: DesiredSet {
                stack: "demo".into(),
                instance: None,
                resources: Vec::new(),
            },
            state,
            live: LiveSnapshot::new(),
            owned: Vec::new(),
        }
    }

    /// A resource the stack declares with `desired`, recorded with `recorded`, and read back as
    /// `live` (`None`: gone). Recorded objects are also found by their tags.
    fn resource(
        mut self,
        address: &str,
        kind: &str,
        id: &str,
        desired: Value,
        recorded: Value,
        live: Option<Value>,
    ) -> Self {
        let mut resource = DesiredResource::new(address, kind);
        resource.properties = map(desired);
        self.desired.resources.push(resource);
        self.state.resources.insert(
            Address::new(address),
            ResourceRecord {
                address: Address::new(address),
                resource_type: ResourceType::new(kind),
                id: id.to_owned(),
                properties: map(recorded),
                outputs: map(json!({ "id": id })),
                depends_on: Vec::new(),
                updated_at: Utc::now(),
            },
        );
        let mut tags = ownership();
        tags.insert("stacksmith:address".into(), address.into());
        self.live.insert(
            Address::new(address),
            live.clone().map(|properties| LiveResource {
                id: id.to_owned(),
                properties: map(properties),
                outputs: map(json!({ "id": id, "status": "live" })),
                tags: tags.clone(),
            }),
        );
        if let Some(properties) = live {
            self.owned.push(OwnedObject {
                resource_type: ResourceType::new(kind),
                id: id.to_owned(),
                tags,
                properties: map(properties),
                member_of: None,
            });
        }
        self
    }

    fn owned(mut self, object: OwnedObject) -> Self {
        self.owned.push(object);
        self
    }

    fn detect(&self) -> DriftReport {
        drift::detect(&DriftInput {
            desired: &self.desired,
            state: &self.state,
            live: &self.live,
            owned: &self.owned,
        })
    }
}

fn rule(id: &str, group: &str, port: u16, source: Value) -> OwnedObject {
    OwnedObject {
        resource_type: ResourceType::new("aws.ec2.security_group_rule"),
        id: id.to_owned(),
        tags: IndexMap::new(),
        properties: map(json!({
            "security_group_id": group, "direction": "ingress", "protocol": "tcp",
            "from_port": port, "to_port": port, "source": source,
        })),
        member_of: Some(MemberOf {
            resource_type: ResourceType::new("aws.ec2.security_group"),
            id: group.to_owned(),
            attribute: "ingress_rules".to_owned(),
        }),
    }
}

/// The six out-of-band changes of the issue, plus objects in sync.
fn drifted() -> Case {
    let tags = json!({ "Name": "demo", "team": "platform" });
    Case::new()
        .resource(
            "network.vpc",
            "aws.ec2.vpc",
            "vpc-1",
            json!({ "cidr_block": "10.0.0.0/16", "tags": tags }),
            json!({ "cidr_block": "10.0.0.0/16", "tags": tags }),
            // AWS defaults the stack does not set are not drift.
            Some(json!({ "cidr_block": "10.0.0.0/16", "tags": { "Name": "demo" },
                          "instance_tenancy": "default" })),
        )
        .resource(
            "network.subnet.public[1]",
            "aws.ec2.subnet",
            "subnet-2",
            json!({ "cidr_block": "10.0.102.0/24" }),
            json!({ "cidr_block": "10.0.102.0/24" }),
            None,
        )
        .resource(
            "network.route.private_nat[0]",
            "aws.ec2.route",
            "rtb-1_0.0.0.0/0",
            json!({ "route_table_id": { "$ref": { "address": "network.route_table.private[0]", "output": "id" } },
                    "destination_cidr_block": "0.0.0.0/0" }),
            json!({ "route_table_id": "rtb-1", "destination_cidr_block": "0.0.0.0/0" }),
            None,
        )
        .resource(
            "network.security_group.database",
            "aws.ec2.security_group",
            "sg-db",
            json!({ "name": "demo-database" }),
            json!({ "name": "demo-database" }),
            Some(json!({ "name": "demo-database" })),
        )
        .resource(
            "network.security_group_rule.database_from_cluster",
            "aws.ec2.security_group_rule",
            "sgr-managed",
            json!({ "from_port": 5432 }),
            json!({ "from_port": 5432 }),
            Some(json!({ "from_port": 5432 })),
        )
        .owned(rule("sgr-managed", "sg-db", 5432, json!("sg-cluster")))
        .owned(rule("sgr-extra", "sg-db", 22, json!("0.0.0.0/0")))
        .resource(
            "cluster.node_group.workers",
            "aws.eks.node_group",
            "demo/workers",
            json!({ "scaling": { "min": 1, "desired": 1, "max": 3 } }),
            json!({ "scaling": { "min": 1, "desired": 1, "max": 3 } }),
            Some(json!({ "scaling": { "min": 1, "desired": 2, "max": 3 } })),
        )
        .resource(
            "database.instance",
            "aws.rds.instance",
            "demo-db",
            json!({ "instance_class": "db.t4g.micro", "master_password": { "$secret": { "length": 32 } },
                    "engine_version": "16.4" }),
            // Secrets are never compared; an attribute the provider does not read back counts as
            // unchanged.
            json!({ "instance_class": "db.t4g.micro", "master_password": { "$encrypted": "v1:00:00" },
                    "engine_version": "16.4" }),
            Some(json!({ "instance_class": "db.t4g.micro" })),
        )
        .owned(OwnedObject {
            resource_type: ResourceType::new("aws.ec2.vpc"),
            id: "vpc-rogue".into(),
            tags: ownership(),
            properties: map(json!({ "cidr_block": "10.99.0.0/16" })),
            member_of: None,
        })
        // A rule of the unmanaged VPC's group: its parent is reported, not the rule.
        .owned(rule("sgr-rogue", "sg-rogue", 80, json!("0.0.0.0/0")))
}

fn entry<'a>(report: &'a DriftReport, address: &str) -> &'a DriftEntry {
    report
        .entries
        .iter()
        .find(|e| e.address == address)
        .unwrap_or_else(|| panic!("no entry for {address}: {report:#?}"))
}

fn attribute(name: &str, expected: Value, actual: Value) -> AttributeDrift {
    AttributeDrift {
        name: name.to_owned(),
        expected,
        actual,
    }
}

#[test]
fn each_out_of_band_change_is_reported_once_with_its_attributes() {
    let report = drifted().detect();
    let drifted: Vec<(&str, DriftStatus)> = report
        .drifted()
        .map(|e| (e.address.as_str(), e.status))
        .collect();
    assert_eq!(
        drifted,
        vec![
            ("network.vpc", DriftStatus::Modified),
            ("network.subnet.public[1]", DriftStatus::Deleted),
            ("network.route.private_nat[0]", DriftStatus::Deleted),
            ("network.security_group.database", DriftStatus::Modified),
            ("cluster.node_group.workers", DriftStatus::Modified),
            ("aws.ec2.vpc/vpc-rogue", DriftStatus::Unmanaged),
        ]
    );
    assert_eq!(
        entry(&report, "network.vpc").attributes,
        vec![attribute("tags.team", json!("platform"), Value::Null)]
    );
    assert_eq!(
        entry(&report, "cluster.node_group.workers").attributes,
        vec![attribute("scaling.desired", json!(1), json!(2))]
    );
    let group = entry(&report, "network.security_group.database");
    assert_eq!(group.attributes.len(), 1);
    assert_eq!(group.attributes[0].name, "ingress_rules[sgr-extra]");
    assert_eq!(group.attributes[0].expected, Value::Null);
    assert_eq!(group.attributes[0].actual["from_port"], json!(22));
    let rogue = entry(&report, "aws.ec2.vpc/vpc-rogue");
    assert_eq!(rogue.id.as_deref(), Some("vpc-rogue"));
    assert_eq!(
        rogue.attributes,
        vec![attribute("cidr_block", Value::Null, json!("10.99.0.0/16"))]
    );
    for in_sync in [
        "network.security_group_rule.database_from_cluster",
        "database.instance",
    ] {
        assert_eq!(entry(&report, in_sync).status, DriftStatus::InSync);
    }
    assert_eq!(report.summary.in_sync, 2);
    assert_eq!(report.summary.modified, 3);
    assert_eq!(report.summary.deleted, 2);
    assert_eq!(report.summary.unmanaged, 1);
    assert_eq!(report.state.serial, 7);
    assert!(report.has_drift());
}

#[test]
fn a_stack_change_not_yet_applied_is_not_drift_and_live_equal_to_state_is_in_sync() {
    let case = Case::new().resource(
        "network.vpc",
        "aws.ec2.vpc",
        "vpc-1",
        // The stack now also asks for DNS hostnames and another CIDR: `plan` shows those.
        json!({ "cidr_block": "10.1.0.0/16", "enable_dns_hostnames": true }),
        json!({ "cidr_block": "10.0.0.0/16" }),
        Some(json!({ "cidr_block": "10.0.0.0/16", "enable_dns_hostnames": false })),
    );
    let report = case.detect();
    assert!(!report.has_drift(), "{report:#?}");
    assert_eq!(report.summary.in_sync, 1);
}

#[test]
fn a_resource_the_stack_no_longer_declares_is_compared_on_its_recorded_attributes() {
    let mut case = Case::new().resource(
        "network.eip.nat[1]",
        "aws.ec2.eip",
        "eipalloc-1",
        json!({}),
        json!({ "domain": "vpc" }),
        Some(json!({ "domain": "standard" })),
    );
    case.desired.resources.clear();
    let report = case.detect();
    assert_eq!(
        entry(&report, "network.eip.nat[1]").attributes,
        vec![attribute("domain", json!("vpc"), json!("standard"))]
    );
}

#[test]
fn tag_keys_that_are_not_words_are_quoted_and_added_tags_are_drift() {
    let case = Case::new().resource(
        "network.subnet.private[0]",
        "aws.ec2.subnet",
        "subnet-1",
        json!({ "tags": {} }),
        json!({ "tags": { "kubernetes.io/role/internal-elb": "1" } }),
        Some(json!({ "tags": { "owner": "someone" } })),
    );
    let report = case.detect();
    assert_eq!(
        entry(&report, "network.subnet.private[0]").attributes,
        vec![
            attribute(
                "tags[\"kubernetes.io/role/internal-elb\"]",
                json!("1"),
                Value::Null
            ),
            attribute("tags.owner", Value::Null, json!("someone")),
        ]
    );
}

#[test]
fn refresh_accepts_live_values_and_forgets_deleted_objects() {
    let case = drifted();
    let mut state = case.state.clone();
    let accepted = drift::accept_live(&mut state, &case.desired, &case.live, Utc::now());
    assert_eq!(
        accepted.updated,
        vec!["network.vpc", "cluster.node_group.workers"]
    );
    assert_eq!(
        accepted.removed,
        vec!["network.subnet.public[1]", "network.route.private_nat[0]"]
    );
    let workers = &state.resources[&Address::new("cluster.node_group.workers")];
    assert_eq!(workers.properties["scaling"]["desired"], json!(2));
    assert_eq!(workers.outputs["status"], json!("live"));
    let db = &state.resources[&Address::new("database.instance")];
    assert_eq!(
        db.properties["master_password"],
        json!({ "$encrypted": "v1:00:00" }),
        "secrets stay as recorded"
    );
    assert_eq!(db.properties["engine_version"], json!("16.4"));
    // After accepting, only what refresh does not adopt is left: the extra rule and the VPC.
    let after = drift::detect(&DriftInput {
        desired: &case.desired,
        state: &state,
        live: &case.live,
        owned: &case.owned,
    });
    let left: Vec<&str> = after.drifted().map(|e| e.address.as_str()).collect();
    assert_eq!(
        left,
        vec!["network.security_group.database", "aws.ec2.vpc/vpc-rogue"]
    );
    let mut again = state.clone();
    assert!(drift::accept_live(&mut again, &case.desired, &case.live, Utc::now()).is_empty());
}

#[test]
fn the_json_report_validates_against_its_schema_and_the_schema_rejects_wrong_reports() {
    let report = drifted().detect();
    let json = report.to_json();
    assert_valid(&json);
    assert_valid(&Case::new().detect().to_json());
    let parsed: DriftReport = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed, report, "the JSON reads back");
    let validator = schema();
    let mut wrong: Value = serde_json::from_str(&json).unwrap();
    wrong["version"] = json!(2);
    assert!(!validator.is_valid(&wrong), "version 2 is not version 1");
    let mut wrong: Value = serde_json::from_str(&json).unwrap();
    wrong["entries"][0]["status"] = json!("drifted");
    assert!(!validator.is_valid(&wrong), "unknown status");
    let mut wrong: Value = serde_json::from_str(&json).unwrap();
    wrong["entries"][0]["attributes"] = json!([]);
    assert!(!validator.is_valid(&wrong), "modified without attributes");
}

#[test]
fn kubernetes_objects_can_be_appended_to_a_report() {
    let mut report = DriftReport::new(
        "demo",
        None,
        StateVersion {
            lineage: None,
            serial: 0,
        },
    );
    report.push(DriftEntry {
        address: "kubernetes/stacksmith/Deployment/api".into(),
        kind: "kubernetes:apps/v1/Deployment".into(),
        id: None,
        status: DriftStatus::Modified,
        attributes: vec![attribute("spec.replicas", json!(2), json!(5))],
        note: None,
    });
    assert_eq!(report.summary.modified, 1);
    assert_valid(&report.to_json());
    assert!(drift_render::markdown(&report).contains("`spec.replicas`"));
}

#[test]
fn junit_markdown_and_human_renderings_carry_every_drifted_object() {
    let report = drifted().detect();
    check_junit(&drift_render::junit(&report), &report);
    let xml = drift_render::junit(&report);
    assert!(
        xml.contains("scaling.desired: expected 1, actual 2"),
        "{xml}"
    );

    let markdown = drift_render::markdown(&report);
    let rows: Vec<&str> = markdown.lines().filter(|l| l.starts_with("| `")).collect();
    // One row per attribute of modified objects, one per deleted or unmanaged object.
    assert_eq!(rows.len(), 1 + 1 + 1 + 1 + 1 + 1, "{markdown}");
    assert!(
        markdown.contains(
            "| `network.vpc` aws.ec2.vpc | modified | `tags.team` | `\"platform\"` | `(absent)` |"
        ),
        "{markdown}"
    );

    let human = drift_render::human(&report, false);
    assert!(!human.contains('\x1b'), "no colour without a terminal");
    assert!(
        human.contains("scaling.desired: expected 1, actual 2"),
        "{human}"
    );
    assert!(
        human.contains("3 modified, 2 deleted, 1 unmanaged"),
        "{human}"
    );
    assert!(drift_render::human(&report, true).contains('\x1b'));

    let clean = Case::new().detect();
    assert!(drift_render::human(&clean, false).contains("No drift"));
    assert!(drift_render::markdown(&clean).contains("No drift"));
    check_junit(&drift_render::junit(&clean), &clean);
}

// --- the binary, with the fake provider ---

struct FakeWorld {
    dir: PathBuf,
}

impl FakeWorld {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(stacksmith_testkit::unique_name("drift-cli"));
        std::fs::create_dir_all(dir.join("stacks")).unwrap();
        let demo =
            stacksmith_testkit::workspace_root().join("tests/fixtures/engine/stacks/demo.yaml");
        std::fs::copy(demo, dir.join("stacks/demo.yaml")).unwrap();
        Self { dir }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_provisioner"))
            .args(args)
            .current_dir(&self.dir)
            .env("STACKSMITH_PROVIDER", "fake")
            .env("STACKSMITH_FAKE_CLOUD_DIR", self.dir.join("cloud"))
            .env("STACKSMITH_STATE_KEY", "drift-test")
            .env(
                "STACKSMITH_POLICIES_DIR",
                stacksmith_testkit::workspace_root().join("policies"),
            )
            .env_remove("NO_COLOR")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    }

    /// The fake cloud's object of one address.
    fn object_path(&self, address: &str) -> PathBuf {
        for entry in std::fs::read_dir(self.dir.join("cloud")).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let object: Value = serde_json::from_str(&text).unwrap();
            if object["tags"]["stacksmith:address"] == json!(address) {
                return path;
            }
        }
        panic!("no fake object for {address}");
    }
}

impl Drop for FakeWorld {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn the_binary_exits_0_without_drift_2_with_drift_and_refresh_then_up_converge() {
    let world = FakeWorld::new();
    let up = world.run(&["up", "--stack", "demo", "--yes"]);
    assert!(up.status.success(), "up: {}", stderr(&up));

    let missing = world.run(&["drift", "--stack", "nosuchstack"]);
    assert_eq!(missing.status.code(), Some(1), "an error is exit 1");

    let clean = world.run(&["drift", "--stack", "demo", "--format", "json"]);
    assert_eq!(clean.status.code(), Some(0), "{}", stderr(&clean));
    let json = String::from_utf8(clean.stdout).unwrap();
    assert_valid(&json);
    let report: DriftReport = serde_json::from_str(&json).unwrap();
    assert!(report.summary.in_sync > 5 && !report.has_drift());

    // Out of band: one object deleted, one object's tags changed, one unmanaged object.
    let state: StateDocument = serde_json::from_str(
        &std::fs::read_to_string(world.dir.join(".stacksmith/state/demo.json")).unwrap(),
    )
    .unwrap();
    let (deleted, modified) = (
        "network.security_group.cache".to_owned(),
        "network.vpc".to_owned(),
    );
    assert!(state.resources.contains_key(&Address::new(&deleted)));
    std::fs::remove_file(world.object_path(&deleted)).unwrap();
    let path = world.object_path(&modified);
    let mut object: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    object["properties"]["tags"]["added-by-hand"] = json!("yes");
    std::fs::write(&path, object.to_string()).unwrap();
    let rogue = json!({
        "id": "vpc-rogue", "type": "aws.ec2.vpc",
        "tags": { "stacksmith:stack": "demo", "stacksmith:instance": "" },
        "properties": { "cidr_block": "10.99.0.0/16" }, "outputs": {}
    });
    std::fs::write(world.dir.join("cloud/vpc-rogue.json"), rogue.to_string()).unwrap();

    let out = world.dir.join("drift.xml");
    let drifted = world.run(&[
        "drift",
        "--stack",
        "demo",
        "--format",
        "junit",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(drifted.status.code(), Some(2), "{}", stderr(&drifted));
    assert!(
        stderr(&drifted).contains("1 modified, 1 deleted, 1 unmanaged"),
        "{}",
        stderr(&drifted)
    );
    let xml = std::fs::read_to_string(&out).unwrap();
    assert!(xml.contains(&format!("name=\"{modified}\"")));
    assert!(
        xml.contains("tags.added-by-hand: expected (absent), actual &quot;yes&quot;"),
        "{xml}"
    );

    let human = world.run(&["drift", "--stack", "demo"]);
    assert_eq!(human.status.code(), Some(2));
    let text = String::from_utf8(human.stdout).unwrap();
    assert!(
        text.contains(&deleted) && text.contains("aws.ec2.vpc/vpc-rogue"),
        "{text}"
    );

    // refresh: refuses unattended without --yes, then records the live values.
    let refused = world.run(&["refresh", "--stack", "demo"]);
    assert_eq!(refused.status.code(), Some(1));
    let serial_before = state.serial;
    let refreshed = world.run(&["refresh", "--stack", "demo", "--yes", "--json"]);
    assert!(refreshed.status.success(), "{}", stderr(&refreshed));
    let accepted: Value = serde_json::from_slice(&refreshed.stdout).unwrap();
    assert_eq!(accepted["updated"], json!([modified]));
    assert_eq!(accepted["removed"], json!([deleted]));
    let after: StateDocument = serde_json::from_str(
        &std::fs::read_to_string(world.dir.join(".stacksmith/state/demo.json")).unwrap(),
    )
    .unwrap();
    assert!(
        after.serial > serial_before,
        "refresh saved through the journal"
    );
    assert!(!after.resources.contains_key(&Address::new(&deleted)));
    assert_eq!(
        after.resources[&Address::new(&modified)].properties["tags"]["added-by-hand"],
        json!("yes")
    );
    assert!(
        !world.dir.join(".stacksmith/state/demo.json.lock").exists(),
        "the lock is released"
    );
    // Only the unmanaged object is left; refresh does not adopt it.
    let json = world.run(&["drift", "--stack", "demo", "--format", "json"]);
    let report: DriftReport = serde_json::from_slice(&json.stdout).unwrap();
    let left: Vec<&str> = report.drifted().map(|e| e.address.as_str()).collect();
    assert_eq!(left, vec!["aws.ec2.vpc/vpc-rogue"]);

    // up converges: the deleted object is created again, the stack's tags restored.
    let up = world.run(&["up", "--stack", "demo", "--yes"]);
    assert!(up.status.success(), "up: {}", stderr(&up));
    std::fs::remove_file(world.dir.join("cloud/vpc-rogue.json")).unwrap();
    let clean = world.run(&["drift", "--stack", "demo", "--format", "markdown"]);
    assert_eq!(
        clean.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&clean.stdout)
    );
    let object: Value =
        serde_json::from_str(&std::fs::read_to_string(world.object_path(&modified)).unwrap())
            .unwrap();
    assert!(object["properties"]["tags"].get("added-by-hand").is_none());
}

#[test]
fn up_removes_the_unrecorded_members_of_recorded_objects_only() {
    let case = drifted();
    let removals = provisioner::engine::planner::plan_member_removals(&case.state, &case.owned);
    let planned: Vec<(String, Option<String>)> = removals
        .iter()
        .map(|a| (a.address.to_string(), a.resource_id.clone()))
        .collect();
    // The extra rule of the recorded group; not the recorded rule, not the unmanaged group's rule.
    assert_eq!(
        planned,
        vec![(
            "network.security_group.database.unrecorded_ingress_rules[0]".to_owned(),
            Some("sgr-extra".to_owned())
        )]
    );
    let removal = &removals[0];
    assert_eq!(
        removal.action,
        provisioner::engine::plan::ActionKind::Delete
    );
    assert_eq!(
        removal.resource_type.as_str(),
        "aws.ec2.security_group_rule"
    );
    assert!(
        removal
            .note
            .as_deref()
            .unwrap()
            .contains("not declared by the stack")
    );
}

/// Reads answered "throttled" `throttles` times before they succeed.
struct ThrottlingReads {
    throttles: usize,
    calls: std::sync::atomic::AtomicUsize,
}

impl provisioner::engine::provider::Provider for ThrottlingReads {
    fn type_spec(&self, resource_type: &ResourceType) -> provisioner::engine::types::TypeSpec {
        provisioner::engine::types::TypeCatalog::builtin().spec(resource_type)
    }

    fn create<'a>(
        &'a self,
        _: &'a provisioner::engine::provider::CallContext,
        _: &'a IndexMap<String, Value>,
        _: &'a IndexMap<String, String>,
    ) -> provisioner::engine::provider::BoxFuture<
        'a,
        Result<LiveResource, provisioner::engine::provider::ProviderError>,
    > {
        unreachable!("drift only reads")
    }

    fn read<'a>(
        &'a self,
        _: &'a provisioner::engine::provider::CallContext,
        id: &'a str,
    ) -> provisioner::engine::provider::BoxFuture<
        'a,
        Result<Option<LiveResource>, provisioner::engine::provider::ProviderError>,
    > {
        Box::pin(async move {
            let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if call < self.throttles {
                return Err(provisioner::engine::provider::ProviderError::Throttled {
                    retry_after: Some(std::time::Duration::from_millis(1)),
                });
            }
            Ok(Some(LiveResource {
                id: id.to_owned(),
                ..LiveResource::default()
            }))
        })
    }

    fn find_by_tags<'a>(
        &'a self,
        _: &'a provisioner::engine::provider::CallContext,
        _: &'a IndexMap<String, String>,
    ) -> provisioner::engine::provider::BoxFuture<
        'a,
        Result<Vec<LiveResource>, provisioner::engine::provider::ProviderError>,
    > {
        unreachable!("drift only reads")
    }

    fn update<'a>(
        &'a self,
        _: &'a provisioner::engine::provider::CallContext,
        _: &'a str,
        _: &'a IndexMap<String, Value>,
    ) -> provisioner::engine::provider::BoxFuture<
        'a,
        Result<LiveResource, provisioner::engine::provider::ProviderError>,
    > {
        unreachable!("drift only reads")
    }

    fn delete<'a>(
        &'a self,
        _: &'a provisioner::engine::provider::CallContext,
        _: &'a str,
    ) -> provisioner::engine::provider::BoxFuture<
        'a,
        Result<(), provisioner::engine::provider::ProviderError>,
    > {
        unreachable!("drift only reads")
    }
}

#[tokio::test]
async fn throttled_reads_are_retried_a_bounded_number_of_times() {
    use provisioner::engine::refresh::{THROTTLED_ATTEMPTS, read_live};
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    let case = Case::new().resource(
        "network.vpc",
        "aws.ec2.vpc",
        "vpc-1",
        json!({}),
        json!({}),
        Some(json!({})),
    );
    let registry = |throttles| {
        let provider = Arc::new(ThrottlingReads {
            throttles,
            calls: Default::default(),
        });
        let mut registry = provisioner::engine::provider::ProviderRegistry::new();
        registry.register_fallback(provider.clone());
        (registry, provider)
    };
    let (patient, provider) = registry(THROTTLED_ATTEMPTS as usize - 1);
    let live = read_live(&case.state, &patient, 4)
        .await
        .expect("retried until read");
    assert!(live[&Address::new("network.vpc")].is_some());
    assert_eq!(
        provider.calls.load(Ordering::SeqCst),
        THROTTLED_ATTEMPTS as usize
    );

    let (hopeless, provider) = registry(usize::MAX);
    let error = read_live(&case.state, &hopeless, 4).await.unwrap_err();
    assert!(error.to_string().contains("throttled"), "{error}");
    assert_eq!(
        provider.calls.load(Ordering::SeqCst),
        THROTTLED_ATTEMPTS as usize
    );
}
