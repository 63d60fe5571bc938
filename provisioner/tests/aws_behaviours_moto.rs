//! What real AWS does that moto does not (issue 15), through the `provisioner` binary against
//! moto (`cargo xtask test` starts it through `tests/emulators/moto_server.py`, which gives EKS
//! clusters their cluster security group and an OIDC issuer of their own). The scenarios with
//! exact error codes and status sequences are in `aws_behaviours.rs` (aws-smithy-mocks).
//!
//! Needs the moto server of `cargo xtask test` (STACKSMITH_TEST_AWS_ENDPOINT).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// A working directory with a stack extending the `local` template (without its cache).
struct Workdir {
    dir: PathBuf,
    instance: String,
}

impl Workdir {
    fn new(overrides: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let instance = format!("z{:x}{:x}", std::process::id() % 4096, nanos % 65536);
        let dir = std::env::temp_dir().join(stacksmith_testkit::unique_name("aws-behaviours"));
        std::fs::create_dir_all(dir.join("stacks")).unwrap();
        let template =
            stacksmith_testkit::workspace_root().join("tests/fixtures/aws/local-instances.yaml");
        std::fs::write(
            dir.join("stacks/probe.yaml"),
            format!("extends: {}\ncache: null\n{overrides}", template.display()),
        )
        .unwrap();
        Self { dir, instance }
    }

    fn run(&self, endpoint: &str, with_credentials: bool, args: &[&str]) -> Output {
        let mut full = vec!["--stacks-dir", "stacks"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--stack", "probe", "--instance", &self.instance]);
        let mut command = Command::new(env!("CARGO_BIN_EXE_provisioner"));
        command
            .args(&full)
            .current_dir(&self.dir)
            .env("STACKSMITH_AWS_ENDPOINT", endpoint)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("STACKSMITH_STATE_KEY", "aws-behaviours-test")
            .env("STACKSMITH_AWS_CALL_LOG", self.dir.join("calls.log"))
            .env(
                "STACKSMITH_POLICIES_DIR",
                stacksmith_testkit::workspace_root().join("policies"),
            )
            .env("NO_COLOR", "1")
            .env("STACKSMITH_KUBECONFIG", "")
            .env_remove("STACKSMITH_PROVIDER")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            // No shared credentials or config file of the machine's user.
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.dir.join("no-credentials"),
            )
            .env("AWS_CONFIG_FILE", self.dir.join("no-config"))
            .stdin(Stdio::null());
        if with_credentials {
            command
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing");
        }
        command.output().unwrap()
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(self.dir.join("calls.log")).unwrap_or_default()
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The zone each private subnet is planned in, in index order.
fn planned_zones(plan: &str) -> Vec<String> {
    let mut zones = Vec::new();
    let mut in_private = false;
    for line in plan.lines() {
        if line.starts_with("+ network.subnet.") {
            in_private = line.starts_with("+ network.subnet.private[");
        }
        if in_private && let Some(rest) = line.trim().strip_prefix("+ availability_zone = ") {
            zones.push(rest.trim_matches('"').to_owned());
        }
    }
    zones
}

/// Five zones in us-east-1 on moto's map (a use1-az6, b az1, c az2, d az4, e az3, f az5): EKS
/// takes no cluster subnets in use1-az3, so the fifth subnet goes to `f`, not `e`. Without
/// credentials `plan` still works, assumes the letters and says so.
#[test]
fn plan_reads_the_regions_zones_and_assumes_letters_only_without_credentials() {
    let work = Workdir::new(
        "network:\n  azs: 5\n  public_subnets: [10.0.101.0/24, 10.0.102.0/24, 10.0.103.0/24, 10.0.104.0/24, 10.0.105.0/24]\n  private_subnets: [10.0.1.0/24, 10.0.2.0/24, 10.0.3.0/24, 10.0.4.0/24, 10.0.5.0/24]\n",
    );
    let endpoint = stacksmith_testkit::aws_endpoint();
    let output = work.run(&endpoint, true, &["plan"]);
    let shown = text(&output);
    assert!(output.status.success(), "{shown}");
    assert_eq!(
        planned_zones(&shown),
        [
            "us-east-1a",
            "us-east-1b",
            "us-east-1c",
            "us-east-1d",
            "us-east-1f"
        ],
        "{shown}"
    );
    assert!(
        work.calls()
            .to_lowercase()
            .contains("ec2:describeavailabilityzones"),
        "{}",
        work.calls()
    );
    assert!(!shown.contains("could not be read"), "{shown}");

    // No credentials (and nothing listening): the plan assumes the letters and says why.
    let output = work.run("http://127.0.0.1:9", false, &["plan"]);
    let shown = text(&output);
    assert!(output.status.success(), "{shown}");
    assert!(
        shown.contains("availability zones of us-east-1 could not be read")
            && shown.contains("`up` reads them from DescribeAvailabilityZones"),
        "{shown}"
    );
    assert_eq!(
        planned_zones(&shown),
        [
            "us-east-1a",
            "us-east-1b",
            "us-east-1c",
            "us-east-1d",
            "us-east-1e"
        ],
    );
}
