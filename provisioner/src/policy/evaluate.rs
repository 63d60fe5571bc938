//! Loading the Rego files of a policies directory and evaluating them with `regorus`.
//!
//! Every `*.rego` file that does not end in `_test.rego` is a policy; in each of its packages the
//! rules `deny` and `warn` (when defined) must be sets of strings or of objects with `msg` and
//! optionally `address`. `*_test.rego` files hold `test_*` rules run by [`PolicySet::run_tests`].

use std::path::{Path, PathBuf};

use regorus::{Engine, Value as RegoValue};
use serde::Serialize;
use serde_json::Value;

use super::error::PolicyError;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Blocks `up`; `policy check` exits 1.
    Deny,
    /// Printed, blocks nothing.
    Warn,
}

/// One message of a `deny` or `warn` rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// The resource (or in-cluster object) the message is about, when the rule says.
    pub address: Option<String>,
    pub msg: String,
    /// The package of the rule, e.g. `stacksmith.database`.
    pub package: String,
}

/// A loaded policies directory.
#[derive(Clone)]
pub struct PolicySet {
    engine: Engine,
    /// Packages of the policy files (not tests), without the `data.` prefix, sorted.
    packages: Vec<String>,
    /// `(package, rule)` of every `test_*` rule in the test files.
    tests: Vec<TestRule>,
}

#[derive(Debug, Clone)]
struct TestRule {
    package: String,
    name: String,
    file: PathBuf,
}

/// The outcome of one Rego test rule.
#[derive(Debug, Clone, Serialize)]
pub struct TestOutcome {
    /// `data.<package>.<rule>`.
    pub rule: String,
    pub file: String,
    pub passed: bool,
    /// Why it failed: `false`, undefined, or an evaluation error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

fn rego_files(dir: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    let entries = std::fs::read_dir(dir).map_err(|source| PolicyError::ReadDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| PolicyError::ReadDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "rego") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(PolicyError::NoPolicies {
            path: dir.to_path_buf(),
        });
    }
    Ok(files)
}

fn is_test_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with("_test.rego"))
}

/// Names of the `test_*` rules of a test file: rules whose head starts a line.
fn test_rule_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .lines()
        .filter(|line| line.starts_with("test_"))
        .map(|line| {
            line.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .collect();
    names.dedup();
    names
}

impl PolicySet {
    /// Loads the policy files of `dir`; with `with_tests`, its `*_test.rego` files too.
    pub fn load(dir: &Path, with_tests: bool) -> Result<Self, PolicyError> {
        let mut engine = Engine::new();
        let mut packages = Vec::new();
        let mut tests = Vec::new();
        let mut policy_count = 0;
        for path in rego_files(dir)? {
            let test = is_test_file(&path);
            if test && !with_tests {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|source| PolicyError::ReadFile {
                path: path.clone(),
                source,
            })?;
            let shown = path.display().to_string();
            let shown = shown.strip_prefix("./").unwrap_or(&shown).to_owned();
            let package = engine
                .add_policy(shown, text.clone())
                .map_err(PolicyError::rego)?;
            let package = package.strip_prefix("data.").unwrap_or(&package).to_owned();
            if test {
                for name in test_rule_names(&text) {
                    tests.push(TestRule {
                        package: package.clone(),
                        name,
                        file: path.clone(),
                    });
                }
            } else {
                policy_count += 1;
                if !packages.contains(&package) {
                    packages.push(package);
                }
            }
        }
        if policy_count == 0 {
            return Err(PolicyError::NoPolicies {
                path: dir.to_path_buf(),
            });
        }
        packages.sort();
        Ok(Self {
            engine,
            packages,
            tests,
        })
    }

    /// The policy packages, e.g. `stacksmith.database`.
    pub fn packages(&self) -> &[String] {
        &self.packages
    }

    /// Evaluates `deny` and `warn` of every policy package against `input`. Findings are sorted
    /// (denies first, then by address and message).
    pub fn evaluate(&self, input: &Value) -> Result<Vec<Finding>, PolicyError> {
        let mut engine = self.engine.clone();
        let input = RegoValue::from_json_str(&input.to_string()).map_err(PolicyError::rego)?;
        engine.set_input(input);
        let mut findings = Vec::new();
        for package in &self.packages {
            for (rule, severity) in [("deny", Severity::Deny), ("warn", Severity::Warn)] {
                let path = format!("data.{package}.{rule}");
                // A query (unlike `eval_rule`) is undefined, not an error, when the package
                // declares no such rule.
                let results = engine
                    .eval_query(path.clone(), false)
                    .map_err(PolicyError::rego)?;
                let value = results
                    .result
                    .first()
                    .and_then(|r| r.expressions.first())
                    .map_or(RegoValue::Undefined, |e| e.value.clone());
                findings.extend(messages(&path, package, severity, &value)?);
            }
        }
        findings.sort();
        findings.dedup();
        Ok(findings)
    }

    /// Runs every `test_*` rule of the test files; a test passes when its rule is `true`.
    pub fn run_tests(&self) -> Vec<TestOutcome> {
        let mut outcomes = Vec::new();
        for test in &self.tests {
            let mut engine = self.engine.clone();
            engine.set_input(RegoValue::new_object());
            let rule = format!("data.{}.{}", test.package, test.name);
            let failure = match engine.eval_rule(rule.clone()) {
                Ok(RegoValue::Bool(true)) => None,
                Ok(RegoValue::Undefined) => Some("undefined (a condition did not hold)".to_owned()),
                Ok(other) => Some(format!("evaluated to {other}, expected true")),
                Err(error) => Some(PolicyError::rego(error).to_string()),
            };
            let file = test.file.display().to_string();
            outcomes.push(TestOutcome {
                rule,
                file: file.strip_prefix("./").unwrap_or(&file).to_owned(),
                passed: failure.is_none(),
                failure,
            });
        }
        outcomes
    }
}

/// The findings of one rule value: a set (or array) of strings or `{msg, address}` objects.
fn messages(
    path: &str,
    package: &str,
    severity: Severity,
    value: &RegoValue,
) -> Result<Vec<Finding>, PolicyError> {
    let bad = |found: String| PolicyError::BadRuleValue {
        rule: path.to_owned(),
        found,
    };
    let json: Value = match value {
        RegoValue::Undefined => return Ok(Vec::new()),
        other => serde_json::from_str(&other.to_json_str().map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?,
    };
    let items = match json {
        Value::Array(items) => items,
        other => return Err(bad(other.to_string())),
    };
    items
        .into_iter()
        .map(|item| {
            let (msg, address) = match &item {
                Value::String(msg) => (msg.clone(), None),
                Value::Object(map) => match map.get("msg") {
                    Some(Value::String(msg)) => (
                        msg.clone(),
                        map.get("address")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                    ),
                    _ => return Err(bad(item.to_string())),
                },
                _ => return Err(bad(item.to_string())),
            };
            Ok(Finding {
                severity,
                address,
                msg,
                package: package.to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_rules_are_found_at_the_start_of_lines() {
        let text = "package p_test\n\ntest_ok if {\n  true\n}\n\n# test_commented\n  test_indented if true\ntest_two if true\n";
        assert_eq!(test_rule_names(text), vec!["test_ok", "test_two"]);
    }
}
