//! Golden planner cases: each directory under `tests/fixtures/plans/` holds the inputs (a
//! `desired.json` resource set or a `stack.yaml` (+ `instance`), optionally `state.json` and
//! `live.json`) and the expected plan as text (`expected.txt`, no colour) and JSON
//! (`expected.json`). `STACKSMITH_BLESS=1` rewrites the expectations from the current planner.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use provisioner::engine::planner::{self, LiveSnapshot, PlanInput};
use provisioner::engine::provider::LiveResource;
use provisioner::engine::render::render_plan;
use provisioner::engine::types::TypeCatalog;
use provisioner::engine::{Address, DesiredSet, desired};
use provisioner::stack::{self, LoadRequest, StackSource};
use provisioner::state::StateDocument;

fn cases_dir() -> PathBuf {
    stacksmith_testkit::workspace_root().join("tests/fixtures/plans")
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn desired_set(case: &Path) -> DesiredSet {
    if let Some(set) = read_json(&case.join("desired.json")) {
        return set;
    }
    let instance = std::fs::read_to_string(case.join("instance"))
        .ok()
        .map(|i| i.trim().to_owned());
    let request = LoadRequest {
        source: StackSource::File(case.join("stack.yaml")),
        instance,
    };
    let loaded = stack::load(&request)
        .and_then(|l| l.into_deployable())
        .unwrap_or_else(|e| panic!("{}: the stack does not load: {e:?}", case.display()));
    desired::derive(&loaded)
}

/// Runs one case; returns a description of each mismatch.
fn check(case: &Path, bless: bool) -> Vec<String> {
    let desired = desired_set(case);
    let state: Option<StateDocument> = read_json(&case.join("state.json"));
    let live: Option<HashMap<Address, Option<LiveResource>>> = read_json(&case.join("live.json"));
    let live: Option<LiveSnapshot> = live;
    let plan = planner::plan(&PlanInput {
        desired: &desired,
        state: state.as_ref(),
        live: live.as_ref(),
        catalog: &TypeCatalog::builtin(),
    })
    .unwrap_or_else(|e| panic!("{}: {e}", case.display()));
    let text = render_plan(&plan, false);
    let json = plan.to_json();
    let mut problems = Vec::new();
    for (file, actual) in [("expected.txt", &text), ("expected.json", &json)] {
        let path = case.join(file);
        if bless {
            std::fs::write(&path, actual).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(expected) if &expected == actual => {}
            Ok(expected) => problems.push(format!(
                "{}: differs from the planner's output.\n--- expected\n{expected}\n--- actual\n{actual}",
                path.display()
            )),
            Err(_) => problems.push(format!("{} is missing (bless with STACKSMITH_BLESS=1)", path.display())),
        }
    }
    // The JSON must read back as the same plan: `up --plan FILE` depends on it.
    let reread = provisioner::engine::plan::Plan::from_json(&json).expect("plan JSON reads back");
    if reread != plan {
        problems.push(format!(
            "{}: the plan JSON does not round-trip",
            case.display()
        ));
    }
    problems
}

#[test]
fn planner_golden_cases() {
    let bless = std::env::var("STACKSMITH_BLESS").is_ok_and(|v| v == "1");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .expect("tests/fixtures/plans exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 20,
        "expected at least 20 golden cases, found {}",
        cases.len()
    );
    let problems: Vec<String> = cases.iter().flat_map(|case| check(case, bless)).collect();
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

#[test]
fn the_planner_is_deterministic() {
    let case = cases_dir().join("mixed_every_action");
    let desired = desired_set(&case);
    let state: Option<StateDocument> = read_json(&case.join("state.json"));
    let input = PlanInput {
        desired: &desired,
        state: state.as_ref(),
        live: None,
        catalog: &TypeCatalog::builtin(),
    };
    let first = planner::plan(&input).unwrap();
    for _ in 0..5 {
        assert_eq!(planner::plan(&input).unwrap(), first);
    }
}
