//! `provisioner validate` and `provisioner schema`, run as a user runs them: the real binary, from
//! the repository root.
//!
//! Golden files: `tests/fixtures/invalid-stacks/<case>.yaml` is a broken stack, `<case>.stderr` the
//! exact report. A first-line comment `# args: ...` adds arguments. Run with `STACKSMITH_BLESS=1`
//! to rewrite the golden files after an intended change, then review the diff.

use std::path::PathBuf;
use std::process::{Command, Output};

use provisioner::stack::{LoadRequest, Loaded, StackSource};
use stacksmith_testkit::workspace_root;

const STATE_URL: &str = "postgres://stacksmith@127.0.0.1:5432/stacksmith_state";

fn provisioner(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .args(args)
        .current_dir(workspace_root())
        .env("NO_COLOR", "1")
        .env("COLUMNS", "100")
        .env("STACKSMITH_STATE_URL", STATE_URL)
        .env_remove("STACKSMITH_STACKS_DIR")
        .env_remove("STACKSMITH_FIXTURE_NEVER_SET")
        .output()
        .expect("the provisioner binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn bless() -> bool {
    std::env::var_os("STACKSMITH_BLESS").is_some()
}

#[test]
fn every_shipped_stack_validates_for_every_instance_it_allows() {
    let stacks = provisioner::stack::available_stacks(&workspace_root().join("stacks"));
    for required in ["base", "production", "staging", "dev", "local"] {
        assert!(
            stacks.iter().any(|s| s == required),
            "stacks/{required}.yaml is missing"
        );
    }
    for name in &stacks {
        let output = provisioner(&["validate", "--stack", name]);
        assert!(
            output.status.success(),
            "stacks/{name}.yaml: {}",
            text(&output.stderr)
        );

        // A template validates for the shortest and the longest instance name it allows.
        let request = LoadRequest {
            source: StackSource::Named {
                dir: workspace_root().join("stacks"),
                name: name.clone(),
            },
            instance: None,
        };
        let loaded = provisioner::stack::load_with_env(&request, &|var| {
            (var == "STACKSMITH_STATE_URL").then(|| STATE_URL.to_owned())
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let Loaded::Deployable(loaded) = loaded else {
            continue;
        };
        let Some(instances) = loaded.stack.instances.as_ref().filter(|i| i.allowed) else {
            continue;
        };
        let longest = format!(
            "pr-{}",
            "9".repeat(usize::from(instances.max_name_length) - 3)
        );
        for instance in ["pr-1", longest.as_str()] {
            let output = provisioner(&["validate", "--stack", name, "--instance", instance]);
            assert!(
                output.status.success(),
                "{name} --instance {instance}: {}",
                text(&output.stderr)
            );
            let stdout = text(&output.stdout);
            assert!(
                stdout.contains(&format!("stack {name}-{instance},")),
                "{stdout}"
            );
        }
    }
}

#[test]
fn a_template_refuses_instance_names_longer_than_it_allows() {
    let output = provisioner(&[
        "validate",
        "--stack",
        "staging",
        "--instance",
        "pr-1234567890123",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("stack::instance::too_long"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn broken_stacks_report_their_golden_diagnostics() {
    let dir = workspace_root().join("tests/fixtures/invalid-stacks");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the fixtures directory exists")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 15,
        "at least 15 broken stacks, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let relative = case
            .strip_prefix(workspace_root())
            .expect("inside the workspace");
        let relative = relative.to_str().expect("a UTF-8 path");
        let source = std::fs::read_to_string(case).expect("the fixture reads");
        let mut args = vec!["validate", "--file", relative];
        if let Some(extra) = source
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# args: "))
        {
            args.extend(extra.split_whitespace());
        }
        let output = provisioner(&args);
        let stderr = text(&output.stderr);
        if output.status.code() != Some(1) {
            failures.push(format!(
                "{relative}: exit {:?}, expected 1\n{stderr}",
                output.status.code()
            ));
            continue;
        }
        if !names_file_line_column(&stderr) {
            failures.push(format!("{relative}: no file:line:col in\n{stderr}"));
        }
        let golden = case.with_extension("stderr");
        if bless() {
            std::fs::write(&golden, &stderr).expect("the golden file writes");
            continue;
        }
        match std::fs::read_to_string(&golden) {
            Ok(expected) if expected == stderr => {}
            Ok(expected) => failures.push(format!(
                "{relative}: report differs from {}\n--- expected\n{expected}\n--- actual\n{stderr}",
                golden.display()
            )),
            Err(_) => failures.push(format!(
                "{relative}: no golden file {} (run with STACKSMITH_BLESS=1)",
                golden.display()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// miette prints positions as `[path/to/file.yaml:LINE:COL]`.
fn names_file_line_column(report: &str) -> bool {
    report.lines().any(|line| {
        line.split_once(".yaml:").is_some_and(|(_, rest)| {
            let mut numbers = rest.trim_end_matches(']').split(':');
            numbers.next().is_some_and(|l| l.parse::<u32>().is_ok())
                && numbers.next().is_some_and(|c| c.parse::<u32>().is_ok())
        })
    })
}

#[test]
fn every_error_of_a_file_is_reported_in_one_run_as_json() {
    let output = provisioner(&[
        "validate",
        "--file",
        "tests/fixtures/invalid-stacks/many-errors-at-once.yaml",
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("validate --json prints JSON");
    assert_eq!(report["format_version"], 1);
    assert_eq!(report["valid"], false);
    let errors = report["results"][0]["errors"]
        .as_array()
        .expect("an errors list");
    let codes: Vec<&str> = errors
        .iter()
        .map(|e| e["code"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        codes,
        [
            "stack::unknown_key",
            "stack::wrong_type",
            "stack::empty_list",
            "stack::out_of_range"
        ]
    );
    for error in errors {
        let file = error["file"].as_str().unwrap_or_default();
        assert!(file.ends_with("many-errors-at-once.yaml"), "{error}");
        assert!(error["line"].as_u64().is_some_and(|l| l > 1), "{error}");
        assert!(error["column"].as_u64().is_some_and(|c| c >= 1), "{error}");
    }
    let help = errors[0]["help"].as_str().unwrap_or_default();
    assert!(help.starts_with("did you mean `flow_logs`?"), "{help}");
}

#[test]
fn validating_everything_reports_each_file() {
    let output = provisioner(&["validate", "--all", "--json"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let files: Vec<&str> = report["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|r| r["file"].as_str())
        .collect();
    assert!(files.contains(&"stacks/production.yaml"), "{files:?}");
    assert!(files.contains(&"stacks/base.yaml"), "{files:?}");
}

#[test]
fn a_misspelt_stack_name_suggests_the_nearest() {
    let output = provisioner(&["validate", "--stack", "prodution"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("did you mean `--stack production`?"),
        "{stderr}"
    );
}

#[test]
fn production_needs_its_state_url() {
    let output = Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .args(["validate", "--stack", "production"])
        .current_dir(workspace_root())
        .env("NO_COLOR", "1")
        .env_remove("STACKSMITH_STATE_URL")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("environment variable STACKSMITH_STATE_URL is not set"),
        "{stderr}"
    );
    assert!(stderr.contains("stacks/production.yaml:12:8"), "{stderr}");
}

#[test]
fn the_committed_schema_is_current() {
    let output = provisioner(&["schema"]);
    assert!(output.status.success());
    let generated = text(&output.stdout);
    let committed_path = workspace_root().join("stacks/stack.schema.json");
    if bless() {
        std::fs::write(&committed_path, &generated).expect("the schema writes");
        return;
    }
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    assert!(
        committed == generated,
        "stacks/stack.schema.json is stale: regenerate it with \
         `cargo run -p provisioner -- schema > stacks/stack.schema.json` \
         (or run the tests with STACKSMITH_BLESS=1)"
    );
    let schema: serde_json::Value = serde_json::from_str(&generated).expect("the schema is JSON");
    assert_eq!(schema["properties"]["network"]["$ref"], "#/$defs/Network");
}

#[test]
fn shipped_stacks_declare_the_schema_for_editors() {
    for name in ["production", "staging", "dev", "local", "base"] {
        let path = workspace_root().join(format!("stacks/{name}.yaml"));
        let text = std::fs::read_to_string(path).expect("reads");
        assert!(
            text.starts_with("# yaml-language-server: $schema=./stack.schema.json"),
            "{name}.yaml"
        );
    }
}
