//! The `provisioner` binary on an instance of the shipped `local` stack (cache included) against
//! moto (or the fault proxy in front of it), for the suites of issue 14: `converge_moto.rs`,
//! `recovery_moto.rs`, `fault_proxy.rs` and `chaos_moto.rs`. The cloud side only (`up
//! --skip-cluster-install`, `drift`/`plan --skip-cluster`, added here).

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

use provisioner::engine::Address;
use provisioner::state::StateDocument;

pub struct Deployment {
    pub dir: PathBuf,
    pub instance: String,
    pub endpoint: String,
    /// Whether `down` runs when the value is dropped.
    pub deployed: std::cell::Cell<bool>,
}

impl Deployment {
    /// A new instance of the `local` stack against `endpoint` (moto's URL or the proxy's).
    pub fn new(prefix: &str, endpoint: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let instance = format!("{prefix}{:x}{:x}", std::process::id() % 4096, nanos % 65536);
        let dir = std::env::temp_dir().join(stacksmith_testkit::unique_name(prefix));
        std::fs::create_dir_all(dir.join("stacks")).unwrap();
        let template =
            stacksmith_testkit::workspace_root().join("tests/fixtures/aws/local-instances.yaml");
        std::fs::write(
            dir.join("stacks/shipped.yaml"),
            format!(
                "# The shipped local stack (its name stays `local`), cache included. (A file holding\n# nothing but `extends` does not load: the loader reports every key missing.)\nextends: {}\ninstances: {{ allowed: true, ttl: 2h }}\n",
                template.display()
            ),
        )
        .unwrap();
        Self {
            dir,
            instance,
            endpoint: endpoint.to_owned(),
            deployed: std::cell::Cell::new(false),
        }
    }

    /// The binary with `args`, the stack and instance, against this deployment's endpoint.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut full = vec!["--stacks-dir", "stacks"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--stack", "shipped", "--instance", &self.instance]);
        // The cloud side only: every instance of `local` puts its in-cluster objects in the same
        // namespaces of the one Kubernetes emulator, so concurrent tests would see each other's.
        match args.first() {
            Some(&"up") => full.push("--skip-cluster-install"),
            Some(&"drift" | &"plan") => full.push("--skip-cluster"),
            _ => {}
        }
        let mut command = stacksmith_testkit::provisioner_against_moto(
            env!("CARGO_BIN_EXE_provisioner"),
            &self.endpoint,
            "moto-suites-test",
        );
        command
            .args(&full)
            .current_dir(&self.dir)
            .env(
                "STACKSMITH_POLICIES_DIR",
                stacksmith_testkit::workspace_root().join("policies"),
            )
            .env("STACKSMITH_KUBECONFIG", stacksmith_testkit::kubeconfig());
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs `args` with the AWS call log on: the output and the calls made (`service:Operation`).
    pub fn run_logged(&self, args: &[&str]) -> (Output, Vec<String>) {
        stacksmith_testkit::output_with_aws_calls(&mut self.command(args), &self.dir)
    }

    /// `up --yes`, which must succeed.
    pub fn up(&self) {
        self.deployed.set(true);
        let up = self.run(&["up", "--yes"]);
        assert!(
            up.status.success(),
            "up failed:\n{}",
            stacksmith_testkit::describe(&up)
        );
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir
            .join(format!(".stacksmith/state/local-{}.json", self.instance))
    }

    pub fn state(&self) -> StateDocument {
        serde_json::from_str(&std::fs::read_to_string(self.state_path()).unwrap()).unwrap()
    }

    pub fn write_state(&self, state: &StateDocument) {
        std::fs::write(
            self.state_path(),
            serde_json::to_string_pretty(state).unwrap(),
        )
        .unwrap();
    }

    pub fn id(&self, address: &str) -> String {
        self.state().resources[&Address::new(address)].id.clone()
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if self.deployed.get() {
            let down = self.run(&["down", "--yes"]);
            if !down.status.success() {
                eprintln!(
                    "cleanup: down failed:\n{}",
                    stacksmith_testkit::describe(&down)
                );
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
