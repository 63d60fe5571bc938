//! Human-readable plan output, coloured like a diff when `color` is set (a TTY).

use std::fmt::Write as _;

use serde_json::Value;

use super::plan::{ActionKind, AttributeChange, Plan, ResourceAction};

const RESET: &str = "\x1b[0m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const MAGENTA: &str = "\x1b[35m";
const BOLD: &str = "\x1b[1m";

struct Palette {
    color: bool,
}

impl Palette {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("{code}{text}{RESET}")
        } else {
            text.to_owned()
        }
    }
}

fn symbol(kind: ActionKind) -> (&'static str, &'static str) {
    match kind {
        ActionKind::Create => ("+", GREEN),
        ActionKind::Update => ("~", YELLOW),
        ActionKind::Replace => ("-/+", MAGENTA),
        ActionKind::Delete => ("-", RED),
        ActionKind::NoOp => (" ", ""),
    }
}

fn show(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Renders the plan. Unchanged resources are only counted.
pub fn render_plan(plan: &Plan, color: bool) -> String {
    let palette = Palette { color };
    let mut out = String::new();
    let target = match &plan.instance {
        Some(instance) => format!("{} (instance {instance})", plan.stack),
        None => plan.stack.clone(),
    };
    let _ = writeln!(out, "Plan for stack {target}");
    let changed: Vec<&ResourceAction> = plan
        .actions
        .iter()
        .filter(|a| a.action != ActionKind::NoOp)
        .collect();
    if changed.is_empty() {
        let _ = writeln!(
            out,
            "\nNo changes. {} resources match the stack.",
            plan.summary.no_op
        );
        return out;
    }
    let _ = writeln!(
        out,
        "\nSymbols: {} create, {} update in place, {} replace, {} delete\n",
        palette.paint(GREEN, "+"),
        palette.paint(YELLOW, "~"),
        palette.paint(MAGENTA, "-/+"),
        palette.paint(RED, "-")
    );
    for action in changed {
        render_action(&mut out, action, &palette);
    }
    let summary = &plan.summary;
    let _ = writeln!(
        out,
        "{}",
        palette.paint(
            BOLD,
            &format!(
                "Plan: {} to create, {} to update, {} to replace, {} to delete, {} unchanged.",
                summary.create, summary.update, summary.replace, summary.delete, summary.no_op
            )
        )
    );
    out
}

fn render_action(out: &mut String, action: &ResourceAction, palette: &Palette) {
    let (mark, code) = symbol(action.action);
    let verb = match action.action {
        ActionKind::Create => "will be created".to_owned(),
        ActionKind::Update => "will be updated in place".to_owned(),
        ActionKind::Replace => format!(
            "must be replaced ({})",
            action.replacement_order.map_or("", |o| o.describe())
        ),
        ActionKind::Delete if action.deposed => "(deposed object) will be deleted".to_owned(),
        ActionKind::Delete => "will be deleted".to_owned(),
        ActionKind::NoOp => "is unchanged".to_owned(),
    };
    let id = action
        .resource_id
        .as_deref()
        .map(|id| format!(" [id {id}]"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "{}",
        palette.paint(
            code,
            &format!(
                "{mark} {} ({}){id} {verb}",
                action.address, action.resource_type
            )
        )
    );
    if let Some(note) = &action.note {
        let _ = writeln!(out, "    # {note}");
    }
    for reason in &action.replacement_reasons {
        let _ = writeln!(out, "    # replaced because {reason}");
    }
    for change in &action.changes {
        render_change(out, action.action, change, palette);
    }
    out.push('\n');
}

fn render_change(out: &mut String, kind: ActionKind, change: &AttributeChange, palette: &Palette) {
    let after = if change.sensitive {
        "(sensitive)".to_owned()
    } else if change.after_unknown {
        "(known after apply)".to_owned()
    } else {
        change
            .after
            .as_ref()
            .map(show)
            .unwrap_or_else(|| "null".to_owned())
    };
    let before = if change.sensitive {
        "(sensitive)".to_owned()
    } else {
        change
            .before
            .as_ref()
            .map(show)
            .unwrap_or_else(|| "null".to_owned())
    };
    let forces = if change.forces_replacement.is_some() {
        palette.paint(RED, " # forces replacement")
    } else {
        String::new()
    };
    let line = match kind {
        ActionKind::Create => palette.paint(GREEN, &format!("+ {} = {after}", change.name)),
        ActionKind::Delete => palette.paint(RED, &format!("- {} = {before}", change.name)),
        _ if change.before.is_none() && !change.sensitive => {
            palette.paint(GREEN, &format!("+ {} = {after}", change.name))
        }
        _ if change.after.is_none() && !change.after_unknown && !change.sensitive => {
            palette.paint(RED, &format!("- {} = {before}", change.name))
        }
        _ => palette.paint(YELLOW, &format!("~ {} = {before} -> {after}", change.name)),
    };
    let _ = writeln!(out, "    {line}{forces}");
}
