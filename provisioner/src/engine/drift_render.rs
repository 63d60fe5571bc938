//! A [`DriftReport`] as text: for people (coloured on a TTY), as a Markdown table for a pull
//! request comment or a CI step summary, and as JUnit XML (one test case per object, drift as a
//! failure). Nothing here prints.

use std::fmt::Write as _;

use serde_json::Value;

use super::drift::{AttributeDrift, DriftEntry, DriftReport, DriftStatus};

const RESET: &str = "\x1b[0m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const MAGENTA: &str = "\x1b[35m";
const BOLD: &str = "\x1b[1m";

fn show(value: &Value) -> String {
    match value {
        Value::Null => "(absent)".to_owned(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

fn target(report: &DriftReport) -> String {
    match &report.instance {
        Some(instance) => format!("{} (instance {instance})", report.stack),
        None => report.stack.clone(),
    }
}

fn headline(report: &DriftReport) -> String {
    let s = &report.summary;
    format!(
        "{} in sync, {} modified, {} deleted, {} unmanaged",
        s.in_sync, s.modified, s.deleted, s.unmanaged
    )
}

/// One line per drifted object with its attributes below; objects in sync are only counted.
pub fn human(report: &DriftReport, color: bool) -> String {
    let paint = |code: &str, text: &str| {
        if color {
            format!("{code}{text}{RESET}")
        } else {
            text.to_owned()
        }
    };
    let mut out = String::new();
    let _ = writeln!(out, "Drift of stack {}", target(report));
    if !report.has_drift() {
        let _ = writeln!(
            out,
            "\n{} every object matches state ({} checked).",
            paint(GREEN, "No drift:"),
            report.summary.in_sync
        );
        return out;
    }
    for entry in report.drifted() {
        let (label, code) = match entry.status {
            DriftStatus::Modified => ("modified", YELLOW),
            DriftStatus::Deleted => ("deleted", RED),
            DriftStatus::Unmanaged => ("unmanaged", MAGENTA),
            DriftStatus::InSync => ("in sync", GREEN),
        };
        let id = entry
            .id
            .as_deref()
            .map(|id| format!(" ({id})"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "\n{} {}{id} {}",
            paint(code, &format!("{label:>9}")),
            paint(BOLD, &entry.address),
            entry.kind
        );
        if entry.status == DriftStatus::Modified {
            for attribute in &entry.attributes {
                let _ = writeln!(
                    out,
                    "          {}: expected {}, actual {}",
                    attribute.name,
                    show(&attribute.expected),
                    show(&attribute.actual)
                );
            }
        }
        if let Some(note) = &entry.note {
            let _ = writeln!(out, "          {note}");
        }
    }
    let _ = writeln!(out, "\n{}: {}.", paint(BOLD, "Drift"), headline(report));
    out
}

/// Escapes text for a Markdown table cell (pipes, newlines, backticks inside code spans).
fn cell(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace('\n', " ")
}

fn code(text: &str) -> String {
    if text.is_empty() {
        return String::new();
    }
    let fence = if text.contains('`') { "`` " } else { "`" };
    let close = if text.contains('`') { " ``" } else { "`" };
    format!("{fence}{}{close}", cell(text))
}

/// A heading, the counts, and a table of the drifted objects (one row per attribute).
pub fn markdown(report: &DriftReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### Drift: stack `{}`\n", cell(&target(report)));
    if !report.has_drift() {
        let _ = writeln!(
            out,
            "No drift: all {} objects match state.",
            report.summary.in_sync
        );
        return out;
    }
    let _ = writeln!(out, "**{}**\n", headline(report));
    let _ = writeln!(out, "| Object | Status | Attribute | Expected | Actual |");
    let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
    for entry in report.drifted() {
        let object = format!("{} {}", code(&entry.address), cell(&entry.kind));
        let status = entry.status.as_str().replace('_', " ");
        let rows: Vec<&AttributeDrift> = if entry.status == DriftStatus::Modified {
            entry.attributes.iter().collect()
        } else {
            Vec::new()
        };
        if rows.is_empty() {
            let note = entry.note.as_deref().unwrap_or("");
            let _ = writeln!(out, "| {object} | {status} | | | {} |", cell(note));
            continue;
        }
        for attribute in rows {
            let _ = writeln!(
                out,
                "| {object} | {status} | {} | {} | {} |",
                code(&attribute.name),
                code(&show(&attribute.expected)),
                code(&show(&attribute.actual)),
            );
        }
    }
    out
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 cannot carry at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn failure_text(entry: &DriftEntry) -> String {
    let mut text = String::new();
    for attribute in &entry.attributes {
        let _ = writeln!(
            text,
            "{}: expected {}, actual {}",
            attribute.name,
            show(&attribute.expected),
            show(&attribute.actual)
        );
    }
    if let Some(note) = &entry.note {
        let _ = writeln!(text, "{note}");
    }
    text
}

/// JUnit XML: a `testsuite` named after the deployment with one `testcase` per object
/// (`classname` the kind, `name` the address); drift is a `failure` whose `type` is the status
/// and whose text lists the attributes.
pub fn junit(report: &DriftReport) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let suite = xml_escape(&format!("drift: {}", target(report)));
    let (tests, failures) = (report.entries.len(), report.summary.drifted());
    let _ = writeln!(
        out,
        "<testsuites name=\"{suite}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\">"
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"{suite}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\">"
    );
    for entry in &report.entries {
        let _ = write!(
            out,
            "    <testcase classname=\"{}\" name=\"{}\"",
            xml_escape(&entry.kind),
            xml_escape(&entry.address)
        );
        if !entry.status.is_drift() {
            let _ = writeln!(out, "/>");
            continue;
        }
        let message = match entry.status {
            DriftStatus::Modified => format!(
                "modified: {}",
                entry
                    .attributes
                    .iter()
                    .map(|a| a.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            DriftStatus::Deleted => "deleted outside Stacksmith".to_owned(),
            DriftStatus::Unmanaged => "unmanaged: not recorded in state".to_owned(),
            DriftStatus::InSync => unreachable!("in-sync entries have no failure"),
        };
        let _ = writeln!(out, ">");
        let _ = writeln!(
            out,
            "      <failure type=\"{}\" message=\"{}\">{}</failure>",
            entry.status.as_str(),
            xml_escape(&message),
            xml_escape(&failure_text(entry))
        );
        let _ = writeln!(out, "    </testcase>");
    }
    let _ = writeln!(out, "  </testsuite>");
    let _ = writeln!(out, "</testsuites>");
    out
}
