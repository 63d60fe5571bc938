//! Recovery and member removal cannot fight (issue 14, item 1), through the binary against moto.
//!
//! The reported cases: `up` killed after `AuthorizeSecurityGroupIngress` (or `CreateRoute`,
//! `AssociateRouteTable`) was sent but before state recorded the object. Such objects carry no
//! tags, so they cannot be adopted by their ownership tags: the rerun used to drop the pending
//! create ("made nothing"), adopt the existing rule through its create, and in the same plan
//! delete it as an unrecorded member of the security group: the database lost its only ingress
//! rule while `up` and `plan` reported success. Here the state a kill at that point leaves is
//! written exactly (the record moved to a pending create with the resolved properties sent), and
//! also the state without the pending entry (the planner's own guard): the rerun keeps every
//! object, deletes nothing, and `plan --detailed-exitcode` and `drift` are clean afterwards.
//!
//! Needs the servers of `cargo xtask test` (moto and the Kubernetes emulator).

use std::time::Duration;

use chrono::Utc;
use provisioner::aws::CallLog;
use provisioner::engine::Address;
use provisioner::engine::resource::ownership_tags;
use provisioner::state::{PendingKind, PendingOperation};

mod moto_support;
use moto_support::Deployment;

const TEST_BOUND: Duration = Duration::from_secs(280);

const TAGLESS: &[&str] = &[
    "network.security_group_rule.database_from_cluster",
    "network.security_group_rule.cache_from_cluster",
    "network.route.public_internet",
    "network.route.private_nat[0]",
    "network.route_table_association.private[1]",
];

fn deletes(calls: &[String]) -> Vec<&String> {
    calls
        .iter()
        .filter(|c| {
            let op = c.rsplit(':').next().unwrap_or(c);
            op.starts_with("Delete") || op.starts_with("Revoke") || op.starts_with("Disassociate")
        })
        .collect()
}

fn assert_clean(deployment: &Deployment) {
    let plan = deployment.run(&["plan", "--refresh", "--detailed-exitcode"]);
    assert_eq!(
        plan.status.code(),
        Some(0),
        "plan after the rerun:\n{}",
        stacksmith_testkit::describe(&plan)
    );
    let drift = deployment.run(&["drift"]);
    assert_eq!(
        drift.status.code(),
        Some(0),
        "drift after the rerun:\n{}",
        stacksmith_testkit::describe(&drift)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_after_a_tagless_create_was_sent_is_settled_by_its_natural_key() {
    tokio::time::timeout(TEST_BOUND, tokio::task::spawn_blocking(scenario))
        .await
        .expect("the scenario finishes within its bound")
        .unwrap();
}

fn scenario() {
    let deployment = Deployment::new("rc", &stacksmith_testkit::aws_endpoint());
    deployment.up();
    let before = deployment.state();
    let ids: Vec<String> = TAGLESS.iter().map(|a| deployment.id(a)).collect();

    // 1. The state a SIGKILL leaves after the create was sent: each record is a pending create.
    let mut state = before.clone();
    for address in TAGLESS {
        let record = state
            .resources
            .shift_remove(&Address::new(*address))
            .unwrap();
        state.pending.push(PendingOperation {
            id: uuid::Uuid::new_v4().to_string(),
            kind: PendingKind::Create,
            address: record.address.clone(),
            resource_type: record.resource_type.clone(),
            resource_id: None,
            ownership_tags: ownership_tags("local", Some(&deployment.instance), &record.address),
            properties: record.properties.clone(),
            depends_on: record.depends_on.clone(),
            started_at: Utc::now(),
        });
    }
    deployment.write_state(&state);
    let (rerun, calls) = deployment.run_logged(&["up", "--yes"]);
    let stderr = String::from_utf8_lossy(&rerun.stderr).into_owned();
    assert!(
        rerun.status.success(),
        "rerun failed:\n{}",
        stacksmith_testkit::describe(&rerun)
    );
    assert!(
        stderr.matches("by its natural key").count() >= TAGLESS.len(),
        "every pending create is adopted by its natural key:\n{stderr}"
    );
    assert!(deletes(&calls).is_empty(), "the rerun deleted: {calls:?}");
    let mutating: Vec<_> = calls.iter().filter(|c| CallLog::is_mutating(c)).collect();
    assert!(
        mutating.is_empty(),
        "the rerun changed something: {mutating:?}"
    );
    let after: Vec<String> = TAGLESS.iter().map(|a| deployment.id(a)).collect();
    assert_eq!(after, ids, "the same objects are recorded again");
    assert_clean(&deployment);

    // 2. Without the pending entries (the planner's guard on its own): the unrecorded members
    //    the stack declares are adopted by their creates, never deleted.
    let mut state = deployment.state();
    for address in TAGLESS {
        state
            .resources
            .shift_remove(&Address::new(*address))
            .unwrap();
    }
    deployment.write_state(&state);
    let (plan, _) = deployment.run_logged(&["plan", "--refresh"]);
    let shown =
        String::from_utf8_lossy(&plan.stderr).into_owned() + &String::from_utf8_lossy(&plan.stdout);
    assert!(plan.status.success(), "{shown}");
    assert!(shown.contains("adopts the existing"), "{shown}");
    assert!(!shown.contains("unrecorded_"), "{shown}");
    let (rerun, calls) = deployment.run_logged(&["up", "--yes"]);
    assert!(
        rerun.status.success(),
        "rerun failed:\n{}",
        stacksmith_testkit::describe(&rerun)
    );
    assert!(deletes(&calls).is_empty(), "the rerun deleted: {calls:?}");
    let after: Vec<String> = TAGLESS.iter().map(|a| deployment.id(a)).collect();
    assert_eq!(after, ids, "the same objects are recorded again");
    assert_clean(&deployment);
}
