//! The ready-to-copy GitHub Actions workflows of `.ci/workflows/`: each parses as YAML and has
//! the shape GitHub requires (triggers, jobs with `runs-on` and steps that either `run` or `uses`
//! a pinned action), and every `provisioner` command in them parses with the binary's own command
//! line (so a renamed verb or flag breaks this test, not a team's CI at night).

use std::path::{Path, PathBuf};

use clap::Parser;
use provisioner::cli::Cli;
use provisioner::stack::source::SourceMap;
use serde_json::Value;

fn workflows_dir() -> PathBuf {
    stacksmith_testkit::workspace_root().join(".ci/workflows")
}

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    let mut sources = SourceMap::default();
    let id = sources.add(path.display().to_string(), path, text);
    let node = provisioner::stack::yaml::parse(id, sources.file(id))
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e:?}", path.display()));
    node.to_json()
}

fn workflow(name: &str) -> Value {
    load(&workflows_dir().join(name))
}

/// Every `run` script of the workflow.
fn scripts(workflow: &Value) -> Vec<String> {
    workflow["jobs"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|job| job["steps"].as_array().unwrap().iter())
        .filter_map(|step| step["run"].as_str().map(str::to_owned))
        .collect()
}

/// The `provisioner ...` commands of a script, expressions replaced by sample values, cut at
/// shell operators and redirections.
fn provisioner_commands(script: &str) -> Vec<Vec<String>> {
    let script = script.replace("${{ github.event.number }}", "123");
    let mut commands = Vec::new();
    for line in script.lines() {
        for command in line.split(['|', '&', ';']) {
            let command = command.split(">>").next().unwrap_or("").trim();
            let words: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
            if words.first().map(String::as_str) == Some("provisioner") {
                commands.push(words);
            }
        }
    }
    commands
}

fn all_commands(workflow: &Value) -> Vec<String> {
    scripts(workflow)
        .iter()
        .flat_map(|script| provisioner_commands(script))
        .map(|words| words.join(" "))
        .collect()
}

#[test]
fn every_workflow_has_the_shape_github_requires_and_valid_provisioner_commands() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(workflows_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        assert_eq!(
            text.matches("${{").count(),
            text.matches("}}").count(),
            "{}: unbalanced expressions",
            path.display()
        );
        let workflow = load(path);
        let file = path.display();
        assert!(workflow["name"].is_string(), "{file}: name");
        assert!(workflow["on"].is_object(), "{file}: on");
        let jobs = workflow["jobs"].as_object().unwrap();
        assert!(!jobs.is_empty(), "{file}: jobs");
        for (name, job) in jobs {
            assert!(job["runs-on"].is_string(), "{file}: {name}: runs-on");
            let steps = job["steps"].as_array().unwrap();
            assert!(!steps.is_empty(), "{file}: {name}: steps");
            for step in steps {
                let runs = step.get("run").is_some();
                let uses = step.get("uses").and_then(Value::as_str);
                assert!(
                    runs != uses.is_some(),
                    "{file}: {name}: a step runs a script or uses an action: {step}"
                );
                if let Some(action) = uses {
                    assert!(action.contains('@'), "{file}: {action} is pinned");
                }
            }
        }
        let commands: Vec<Vec<String>> = scripts(&workflow)
            .iter()
            .flat_map(|script| provisioner_commands(script))
            .collect();
        assert!(!commands.is_empty(), "{file} runs the provisioner");
        for words in commands {
            if let Err(error) = Cli::try_parse_from(&words) {
                panic!("{file}: `{}` does not parse:\n{error}", words.join(" "));
            }
        }
    }
}

#[test]
fn nightly_drift_reports_junit_and_markdown_and_fails_on_exit_2() {
    let workflow = workflow("nightly-drift.yml");
    assert!(workflow["on"]["schedule"][0]["cron"].is_string());
    let commands = all_commands(&workflow);
    assert!(
        commands.contains(
            &"provisioner drift --stack production --format junit --out drift.xml".to_owned()
        ),
        "{commands:?}"
    );
    assert!(
        commands.contains(&"provisioner drift --stack production --format markdown".to_owned()),
        "{commands:?}"
    );
    let scripts = scripts(&workflow).join("\n");
    assert!(scripts.contains(">> \"$GITHUB_STEP_SUMMARY\""), "{scripts}");
    assert!(
        scripts.contains("2) echo \"::error"),
        "exit 2 fails visibly: {scripts}"
    );
    let steps = workflow["jobs"]["drift"]["steps"].as_array().unwrap();
    let upload = steps
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/upload-artifact@"))
        })
        .expect("the JUnit report is uploaded");
    assert_eq!(upload["with"]["path"], "drift.xml");
    assert_eq!(upload["if"], "always()");
}

#[test]
fn pr_environment_ups_on_open_and_downs_on_close_one_group_per_pr() {
    let workflow = workflow("pr-environment.yml");
    let types: Vec<&str> = workflow["on"]["pull_request"]["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for wanted in ["opened", "synchronize", "closed"] {
        assert!(types.contains(&wanted), "{types:?}");
    }
    assert_eq!(
        workflow["concurrency"]["group"],
        "stacksmith-pr-environment-${{ github.event.number }}"
    );
    assert_eq!(workflow["concurrency"]["cancel-in-progress"], false);
    let up = &workflow["jobs"]["up"];
    let down = &workflow["jobs"]["down"];
    assert_eq!(up["if"], "github.event.action != 'closed'");
    assert_eq!(down["if"], "github.event.action == 'closed'");
    let job_commands = |job: &Value| -> Vec<String> {
        job["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["run"].as_str())
            .flat_map(provisioner_commands)
            .map(|words| words.join(" "))
            .collect()
    };
    assert!(
        job_commands(up)
            .contains(&"provisioner up --stack staging --instance pr-123 --yes".to_owned()),
        "{:?}",
        job_commands(up)
    );
    assert_eq!(
        job_commands(down),
        ["provisioner down --stack staging --instance pr-123 --yes"]
    );
}
