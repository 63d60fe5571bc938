//! `drift --skip-cluster` and `plan --refresh --skip-cluster` (issue 14, item 6): with the
//! stack's cluster unreachable, both fail naming the flag that leaves it out; with the flag they
//! compare the cloud side only and say so. The binary with the fake provider.

use std::path::PathBuf;
use std::process::Output;

use stacksmith_testkit::{fake_cloud_provisioner, unique_name, workspace_root};

struct World {
    dir: PathBuf,
}

impl World {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique_name("scope-flags"));
        std::fs::create_dir_all(dir.join("stacks")).unwrap();
        std::fs::copy(
            workspace_root().join("tests/fixtures/engine/stacks/demo.yaml"),
            dir.join("stacks/demo.yaml"),
        )
        .unwrap();
        // A kubeconfig whose API server refuses connections (the discard port).
        let kubeconfig = dir.join("unreachable.kubeconfig");
        std::fs::write(
            &kubeconfig,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster: { server: \"http://127.0.0.1:9\" }\n\
             users:\n- name: gone\n  user: { token: none }\ncontexts:\n- name: gone\n  context: { cluster: gone, user: gone }\n\
             current-context: gone\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("stacks/scoped.yaml"),
            format!(
                "extends: demo.yaml\nname: scoped\ncluster: {{ kubeconfig: {} }}\n",
                kubeconfig.display()
            ),
        )
        .unwrap();
        Self { dir }
    }

    fn run(&self, args: &[&str]) -> Output {
        fake_cloud_provisioner(env!("CARGO_BIN_EXE_provisioner"), &self.dir, "scope-test")
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// stderr with miette's wrapping undone (one space between words, no frame characters).
fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr)
        .replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn drift_and_plan_refresh_skip_an_unreachable_cluster_when_asked_and_say_how_when_not() {
    let world = World::new();
    let up = world.run(&["up", "--stack", "scoped", "--yes", "--skip-cluster-install"]);
    assert!(up.status.success(), "{}", stacksmith_testkit::describe(&up));

    let drift = world.run(&["drift", "--stack", "scoped"]);
    assert_eq!(drift.status.code(), Some(1), "{}", stderr(&drift));
    assert!(
        stderr(&drift).contains("pass --skip-cluster to compare the cloud side only"),
        "{}",
        stderr(&drift)
    );
    let drift = world.run(&["drift", "--stack", "scoped", "--skip-cluster"]);
    assert_eq!(drift.status.code(), Some(0), "{}", stderr(&drift));
    assert!(
        stderr(&drift).contains("the in-cluster objects were not compared (--skip-cluster)"),
        "{}",
        stderr(&drift)
    );

    let plan = world.run(&["plan", "--stack", "scoped", "--refresh"]);
    assert_eq!(plan.status.code(), Some(1), "{}", stderr(&plan));
    assert!(
        stderr(&plan).contains("--skip-cluster"),
        "{}",
        stderr(&plan)
    );
    let plan = world.run(&[
        "plan",
        "--stack",
        "scoped",
        "--refresh",
        "--skip-cluster",
        "--detailed-exitcode",
    ]);
    assert_eq!(plan.status.code(), Some(0), "{}", stderr(&plan));
}
