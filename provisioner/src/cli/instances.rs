//! `provisioner instances`: the instances of a template stack (`up --instance NAME`) found in the
//! stack's state backend, with their age and expiry. `gc` uses the same listing.

use std::path::Path;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use miette::{IntoDiagnostic, miette};
use serde::Serialize;

use super::Output;
use super::deployment::{self, Target};
use crate::engine::lifetime::format_expiry;
use crate::state::{InstanceLifetime, StoredDeployment};

/// Arguments of `instances`. Exit codes: 0 listed (also when there are none), 1 error.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The template stack: `<stacks-dir>/<NAME>.yaml`.
    #[arg(long, value_name = "NAME")]
    pub stack: String,
    /// One JSON document on stdout (`format_version` 1) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The listing's JSON format version.
pub const INSTANCES_FORMAT_VERSION: u32 = 1;

/// One instance of a stack, as its state records it.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceInfo {
    pub instance: String,
    /// The state's name (`<stack>-<instance>`).
    pub deployment: String,
    pub created_at: DateTime<Utc>,
    /// Seconds since `created_at`.
    pub age_seconds: i64,
    /// `null` when the stack sets no `instances.ttl`: such an instance never expires.
    pub expires_at: Option<DateTime<Utc>>,
    pub expired: bool,
    /// `true` for state written before lifetimes were recorded: the creation time is the
    /// earliest record's time.
    pub estimated: bool,
    /// Resources recorded in state.
    pub resources: usize,
}

/// The instances of `stack` among the deployments of its state backend: documents of this stack
/// with an instance that still record something (a torn-down instance's empty state is skipped).
pub fn instances_of(
    stack: &str,
    ttl: Option<std::time::Duration>,
    stored: Vec<StoredDeployment>,
    now: DateTime<Utc>,
) -> Vec<InstanceInfo> {
    let mut found: Vec<InstanceInfo> = stored
        .into_iter()
        .filter(|stored| stored.document.stack == stack && !stored.document.is_empty())
        .filter_map(|stored| {
            let document = stored.document;
            let instance = document.instance.clone()?;
            let (lifetime, estimated) = match document.lifetime {
                Some(lifetime) => (lifetime, false),
                None => {
                    let earliest = document
                        .resources
                        .values()
                        .map(|record| record.updated_at)
                        .min()
                        .unwrap_or(now);
                    (InstanceLifetime::starting(earliest, ttl), true)
                }
            };
            Some(InstanceInfo {
                instance,
                deployment: stored.name,
                created_at: lifetime.created_at,
                age_seconds: (now - lifetime.created_at).num_seconds(),
                expires_at: lifetime.expires_at,
                expired: lifetime.expired(now),
                estimated,
                resources: document.resources.len(),
            })
        })
        .collect();
    found.sort_by(|a, b| {
        a.created_at
            .cmp(&b.created_at)
            .then(a.instance.cmp(&b.instance))
    });
    found
}

/// Lists the instances of the template stack `stack` at `now`, from its state backend.
pub async fn list(
    stack: &str,
    stacks_dir: &Path,
    output: &Output,
    now: DateTime<Utc>,
) -> miette::Result<(Option<std::time::Duration>, Vec<InstanceInfo>)> {
    let target = Target {
        stack: stack.to_owned(),
        instance: None,
    };
    let deployment = deployment::open(&target, stacks_dir, output).await?;
    if deployment.loaded.stack.instances.is_none() {
        return Err(miette!(
            "stack `{stack}` is not a template for instances (it has no `instances` section)"
        ));
    }
    let ttl = deployment.instance_ttl();
    let stored = deployment
        .backend
        .list_deployments()
        .await
        .into_diagnostic()?;
    Ok((ttl, instances_of(stack, ttl, stored, now)))
}

/// `3d 4h`, `5h 2m`, `12m`, `40s`; negative spans (the future) as `in ...`.
pub fn human_span(seconds: i64) -> String {
    let (prefix, seconds) = if seconds < 0 {
        ("in ", -seconds)
    } else {
        ("", seconds)
    };
    let (days, hours, minutes) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60);
    let text = if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes}m")
    } else if minutes > 0 {
        format!("{minutes}m")
    } else {
        format!("{seconds}s")
    };
    format!("{prefix}{text}")
}

/// The human expiry column: `2026-12-03T20:00:00Z (in 1d 2h)`, `... (expired 3h ago)`, `never`.
pub fn describe_expiry(info: &InstanceInfo, now: DateTime<Utc>) -> String {
    match info.expires_at {
        None => "never (no ttl)".to_owned(),
        Some(at) if info.expired => format!(
            "{} (expired {} ago)",
            format_expiry(at),
            human_span((now - at).num_seconds())
        ),
        Some(at) => format!(
            "{} ({})",
            format_expiry(at),
            human_span((now - at).num_seconds())
        ),
    }
}

pub fn run(args: &Args, stacks_dir: &Path, output: &Output) -> miette::Result<ExitCode> {
    let now = deployment::now()?;
    let runtime = deployment::runtime()?;
    let (ttl, found) = runtime.block_on(list(&args.stack, stacks_dir, output, now))?;
    if args.json {
        let document = serde_json::json!({
            "format_version": INSTANCES_FORMAT_VERSION,
            "stack": args.stack,
            "now": now,
            "ttl_seconds": ttl.map(|ttl| ttl.as_secs()),
            "instances": found,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&document).into_diagnostic()?
        );
        return Ok(ExitCode::SUCCESS);
    }
    if found.is_empty() {
        eprintln!("No instances of `{}`.", args.stack);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 5]> = found
        .iter()
        .map(|info| {
            [
                info.instance.clone(),
                format!(
                    "{}{}",
                    human_span(info.age_seconds),
                    if info.estimated { " (estimated)" } else { "" }
                ),
                describe_expiry(info, now),
                info.resources.to_string(),
                info.deployment.clone(),
            ]
        })
        .collect();
    let header = ["INSTANCE", "AGE", "EXPIRES", "RESOURCES", "STATE"];
    let widths: Vec<usize> = (0..header.len())
        .map(|column| {
            rows.iter()
                .map(|row| row[column].len())
                .chain([header[column].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[&str]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    println!("{}", line(&header));
    for row in &rows {
        println!(
            "{}",
            line(&row.iter().map(String::as_str).collect::<Vec<_>>())
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::human_span;

    #[test]
    fn spans_read_naturally() {
        assert_eq!(human_span(40), "40s");
        assert_eq!(human_span(12 * 60 + 5), "12m");
        assert_eq!(human_span(5 * 3600 + 120), "5h 2m");
        assert_eq!(human_span(3 * 86_400 + 4 * 3600), "3d 4h");
        assert_eq!(human_span(-(26 * 3600)), "in 1d 2h");
    }
}
