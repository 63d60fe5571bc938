//! What the drift tests share: the committed JSON Schema and the JUnit check.

use std::path::Path;

use provisioner::engine::drift::DriftReport;
use serde_json::Value;

/// The committed schema of the JSON report, compiled.
pub fn schema() -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/drift-report.schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).expect("the committed schema compiles")
}

/// Validates `json` against the committed schema, panicking with every error.
pub fn assert_valid(json: &str) {
    let document: Value = serde_json::from_str(json).expect("the report is JSON");
    let validator = schema();
    let errors: Vec<String> = validator
        .iter_errors(&document)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "schema violations: {errors:#?}\n{json}");
}

/// The JUnit XML parses; one test case per entry, a failure per drifted one.
pub fn check_junit(xml: &str, report: &DriftReport) {
    let document = roxmltree::Document::parse(xml).expect("the JUnit XML parses");
    let cases: Vec<roxmltree::Node> = document
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(cases.len(), report.entries.len());
    let failed: Vec<(&str, &str)> = cases
        .iter()
        .filter_map(|case| {
            let failure = case.children().find(|n| n.has_tag_name("failure"))?;
            Some((case.attribute("name")?, failure.attribute("type")?))
        })
        .collect();
    let expected: Vec<(&str, &str)> = report
        .drifted()
        .map(|e| (e.address.as_str(), e.status.as_str()))
        .collect();
    assert_eq!(failed, expected);
    let suite = document
        .descendants()
        .find(|n| n.has_tag_name("testsuite"))
        .unwrap();
    assert_eq!(
        suite.attribute("failures"),
        Some(report.summary.drifted().to_string().as_str())
    );
}
