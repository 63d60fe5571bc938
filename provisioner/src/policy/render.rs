//! Human and JSON renderings of a [`PolicyReport`]. The CLI prints them; nothing here prints.

use super::{Finding, PolicyReport, Severity};

fn line(finding: &Finding) -> String {
    let label = match finding.severity {
        Severity::Deny => "deny",
        Severity::Warn => "warn",
    };
    match &finding.address {
        Some(address) => format!(
            "  {label}  {address}: {} [{}]",
            finding.msg, finding.package
        ),
        None => format!("  {label}  {} [{}]", finding.msg, finding.package),
    }
}

/// The report as text: one line per finding, denies first, and a summary line.
pub fn human(report: &PolicyReport) -> String {
    let denies: Vec<&Finding> = report.denies().collect();
    let warnings: Vec<&Finding> = report.warnings().collect();
    let mut out = String::new();
    if !denies.is_empty() {
        out.push_str("Policy violations (these block `up`):\n");
        for finding in &denies {
            out.push_str(&line(finding));
            out.push('\n');
        }
    }
    if !warnings.is_empty() {
        out.push_str("Policy warnings:\n");
        for finding in &warnings {
            out.push_str(&line(finding));
            out.push('\n');
        }
    }
    let subject = match &report.instance {
        Some(instance) => format!("{} (instance {instance})", report.stack),
        None => report.stack.clone(),
    };
    out.push_str(&format!(
        "Policies: {} denied, {} warning{} ({} packages checked on {subject})\n",
        denies.len(),
        warnings.len(),
        if warnings.len() == 1 { "" } else { "s" },
        report.packages.len(),
    ));
    out
}

/// The report as pretty JSON (`format_version` 1) with `passed`, ending in a newline.
pub fn json(report: &PolicyReport) -> String {
    let mut value = serde_json::to_value(report).expect("a policy report always serializes");
    if let Some(map) = value.as_object_mut() {
        map.insert(
            "passed".to_owned(),
            serde_json::Value::Bool(report.passed()),
        );
    }
    let mut text = serde_json::to_string_pretty(&value).expect("a JSON value always serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(findings: Vec<Finding>) -> PolicyReport {
        PolicyReport {
            format_version: 1,
            stack: "stacks/production.yaml".into(),
            instance: None,
            packages: vec!["stacksmith.database".into()],
            findings,
        }
    }

    #[test]
    fn denies_are_listed_before_warnings_with_their_address() {
        let text = human(&report(vec![
            Finding {
                severity: Severity::Deny,
                address: Some("database.instance".into()),
                msg: "not multi-AZ".into(),
                package: "stacksmith.database".into(),
            },
            Finding {
                severity: Severity::Warn,
                address: None,
                msg: "heads up".into(),
                package: "stacksmith.database".into(),
            },
        ]));
        assert_eq!(
            text,
            "Policy violations (these block `up`):\n  deny  database.instance: not multi-AZ [stacksmith.database]\n\
             Policy warnings:\n  warn  heads up [stacksmith.database]\n\
             Policies: 1 denied, 1 warning (1 packages checked on stacks/production.yaml)\n"
        );
    }

    #[test]
    fn json_says_whether_the_plan_passed() {
        let value: serde_json::Value = serde_json::from_str(&json(&report(vec![]))).unwrap();
        assert_eq!(value["passed"], true);
        assert_eq!(value["format_version"], 1);
    }
}
