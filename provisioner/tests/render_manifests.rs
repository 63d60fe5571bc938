//! Rendered in-cluster manifests are valid Kubernetes for the stack's version
//! (`kubernetes-validate --strict`) and pass `checkov` with no failed check; the only skipped checks
//! are the ones listed, each with its reason, in `tests/checkov/config.yaml`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use provisioner::kubernetes::{self, SecretValues};
use provisioner::stack::{LoadRequest, LoadedStack, StackSource};
use stacksmith_testkit::{unique_name, venv_tool, workspace_root};

const STATE_URL: &str = "postgres://stacksmith@127.0.0.1:5432/stacksmith_state";

struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique_name("stacksmith-render"));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        Self(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn load(name: &str) -> LoadedStack {
    let request = LoadRequest {
        source: StackSource::Named {
            dir: workspace_root().join("stacks"),
            name: name.to_owned(),
        },
        instance: None,
    };
    let env = |var: &str| (var == "STACKSMITH_STATE_URL").then(|| STATE_URL.to_owned());
    provisioner::stack::load_with_env(&request, &env)
        .and_then(provisioner::stack::Loaded::into_deployable)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Renders `stack` with the CLI (no secrets) into `dir/cli`, and through the library with secrets
/// into `dir/with-secrets`, so that every kind of object is checked.
fn render_both_ways(stack: &str, dir: &Path) -> Vec<PathBuf> {
    let cli_dir = dir.join("cli");
    let output = Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .args(["render", "--stack", stack, "--json", "--out"])
        .arg(&cli_dir)
        .current_dir(workspace_root())
        .env("STACKSMITH_STATE_URL", STATE_URL)
        .output()
        .expect("provisioner runs");
    assert!(
        output.status.success(),
        "render --stack {stack}: {}",
        text(&output)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("render --json prints JSON");
    assert_eq!(report["format_version"], 1);

    let secrets = SecretValues {
        database_url: "postgres://stacksmith:example@db.example.internal:5432/stacksmith".into(),
        redis_url: "rediss://:example@cache.example.internal:6379".into(),
        admin_key: "example-admin-key".into(),
        worker_key: "example-worker-key".into(),
    };
    let secret_dir = dir.join("with-secrets");
    std::fs::create_dir_all(&secret_dir).expect("a directory");
    for file in kubernetes::render(&load(stack), Some(&secrets)).expect("renders") {
        std::fs::write(secret_dir.join(&file.file_name), file.to_yaml()).expect("writes");
    }
    let mut files: Vec<PathBuf> = [cli_dir, secret_dir]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(d)
                .expect("reads")
                .map(|e| e.expect("an entry").path())
        })
        .collect();
    files.sort();
    assert!(
        files
            .iter()
            .any(|f| f.ends_with("with-secrets/51-secrets.yaml"))
    );
    assert!(
        !files.iter().any(|f| f.ends_with("cli/51-secrets.yaml")),
        "the CLI must not write secrets"
    );
    files
}

fn check_stack(stack: &str) {
    let scratch = ScratchDir::new();
    let files = render_both_ways(stack, &scratch.0);
    let version = format!("{}.0", load(stack).stack.cluster.version);

    let output = Command::new(venv_tool("kubernetes-validate"))
        .args(["--strict", "--quiet", "-k", &version])
        .args(&files)
        .output()
        .expect("kubernetes-validate runs");
    assert!(
        output.status.success(),
        "kubernetes-validate {version} on {stack}:\n{}",
        text(&output)
    );

    let output = Command::new(venv_tool("checkov"))
        .arg("--config-file")
        .arg(workspace_root().join("tests/checkov/config.yaml"))
        .arg("-d")
        .arg(&scratch.0)
        .output()
        .expect("checkov runs");
    let report = text(&output);
    assert!(
        output.status.success(),
        "checkov failed on {stack}:\n{report}"
    );
    assert!(report.contains("Failed checks: 0"), "{report}");
    assert!(
        !report.contains("Passed checks: 0,"),
        "checkov checked nothing:\n{report}"
    );
}

#[test]
fn production_manifests_are_valid_and_pass_checkov() {
    check_stack("production");
}

#[test]
fn local_manifests_are_valid_and_pass_checkov() {
    check_stack("local");
}

#[test]
fn every_skipped_checkov_check_has_its_reason() {
    let config =
        std::fs::read_to_string(workspace_root().join("tests/checkov/config.yaml")).expect("reads");
    let lines: Vec<&str> = config.lines().collect();
    let mut skipped = 0;
    for (i, line) in lines.iter().enumerate() {
        let Some(check) = line.trim().strip_prefix("- CKV") else {
            continue;
        };
        skipped += 1;
        let reason = lines[..i]
            .iter()
            .rev()
            .take_while(|l| l.trim_start().starts_with('#'))
            .count();
        assert!(
            reason > 0,
            "CKV{check} is skipped without a reason comment above it"
        );
        assert!(
            lines[i - reason].contains(&format!("CKV{}", check.trim())),
            "the comment above CKV{check} must name it"
        );
    }
    assert!(skipped <= 4, "new skips need review: {skipped}");
}
