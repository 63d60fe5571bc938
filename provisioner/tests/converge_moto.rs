//! Every shipped stack converges on its second run (issue 14, item 4): the `local` stack, cache
//! included, through the binary as the README shows it (`up --yes` twice, then `drift`), against
//! moto started by `tests/emulators/moto_server.py` (which keeps ElastiCache's member count,
//! deletes and cache subnet group deletes the way AWS does, see `provisioner/docs/testing.md`).
//!
//! The second `up` makes no mutating AWS call and at most 1.5 read calls per recorded resource,
//! `drift` right after `up` exits 0, and `down` leaves nothing of the deployment behind. The
//! cloud side only (see `moto_support`): the in-cluster half is `cluster_install.rs`'s.
//!
//! Needs the servers of `cargo xtask test` (moto and the Kubernetes emulator).

use std::time::Duration;

use provisioner::aws::CallLog;

mod moto_support;
use moto_support::Deployment;

const TEST_BOUND: Duration = Duration::from_secs(280);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_stack_with_its_cache_converges_on_its_second_up_and_drift_is_clean() {
    tokio::time::timeout(TEST_BOUND, tokio::task::spawn_blocking(scenario))
        .await
        .expect("the scenario finishes within its bound")
        .unwrap();
}

fn scenario() {
    let deployment = Deployment::new("cv", &stacksmith_testkit::aws_endpoint());
    deployment.up();
    let state = deployment.state();
    assert!(
        state
            .resources
            .keys()
            .any(|a| a.to_string() == "cache.replication_group"),
        "the local stack has its cache"
    );

    let (second, calls) = deployment.run_logged(&["up", "--yes"]);
    assert!(
        second.status.success(),
        "second up failed:\n{}",
        stacksmith_testkit::describe(&second)
    );
    let mutating: Vec<&String> = calls.iter().filter(|c| CallLog::is_mutating(c)).collect();
    assert!(
        mutating.is_empty(),
        "the second up changed something: {mutating:?}\n{}",
        stacksmith_testkit::describe(&second)
    );
    let recorded = deployment.state().resources.len();
    let reads = calls.len();
    eprintln!(
        "second up: {reads} read calls for {recorded} recorded resources ({:.2} per resource)",
        reads as f64 / recorded as f64
    );
    assert!(
        reads as f64 <= 1.5 * recorded as f64,
        "{reads} read calls for {recorded} resources: {calls:?}"
    );

    let drift = deployment.run(&["drift"]);
    assert_eq!(
        drift.status.code(),
        Some(0),
        "drift right after up:\n{}",
        stacksmith_testkit::describe(&drift)
    );

    let down = deployment.run(&["down", "--yes"]);
    assert!(
        down.status.success(),
        "down failed:\n{}",
        stacksmith_testkit::describe(&down)
    );
    deployment.deployed.set(false);
    let again = deployment.run(&["plan", "--detailed-exitcode"]);
    // After `down` the plan creates everything again (exit 2): nothing is recorded any more.
    assert_eq!(
        again.status.code(),
        Some(2),
        "{}",
        stacksmith_testkit::describe(&again)
    );
}
