//! `provisioner gc`: tears down the expired instances of a template stack, concurrently, each
//! through `down`'s path (its own state lock, journal and executor). Instances that have not
//! expired, and instances of a stack without a TTL, are never touched.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use miette::{IntoDiagnostic, miette};

use super::Output;
use super::deployment::{self, Target};
use super::down::{self, Reporting, Teardown};
use super::instances::{self, InstanceInfo, describe_expiry};
use crate::engine::executor::DEFAULT_PARALLELISM;

/// Arguments of `gc`. Exit codes: 0 every expired instance torn down (or none expired, or
/// `--dry-run`), 1 error or at least one teardown failed.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The template stack: `<stacks-dir>/<NAME>.yaml`.
    #[arg(long, value_name = "NAME")]
    pub stack: String,
    /// Only say which instances have expired and would be torn down.
    #[arg(long)]
    pub dry_run: bool,
    /// Tear down without asking. Required when not attached to a terminal.
    #[arg(long)]
    pub yes: bool,
    /// A report as one JSON document on stdout (`format_version` 1); progress stays on stderr.
    #[arg(long)]
    pub json: bool,
    /// At most N provider calls at once, per instance.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PARALLELISM)]
    pub parallelism: usize,
    /// Tear down at most N instances at once.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub concurrent_instances: usize,
}

/// What happened to one expired instance.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
enum Outcome {
    WouldTearDown,
    TornDown,
    Failed { error: String },
}

pub fn run(args: &Args, stacks_dir: &Path, output: &Output) -> miette::Result<ExitCode> {
    if args.parallelism == 0 || args.concurrent_instances == 0 {
        return Err(miette!(
            "--parallelism and --concurrent-instances must be at least 1"
        ));
    }
    let now = deployment::now()?;
    let runtime = deployment::runtime()?;
    runtime.block_on(async {
        let (_, found) = instances::list(&args.stack, stacks_dir, output, now).await?;
        let (expired, kept): (Vec<InstanceInfo>, Vec<InstanceInfo>) =
            found.into_iter().partition(|info| info.expired);
        for info in &kept {
            eprintln!(
                "keeping {}: expires {}",
                info.instance,
                describe_expiry(info, now)
            );
        }
        for info in &expired {
            eprintln!(
                "{} {}: expired {}",
                if args.dry_run {
                    "would tear down"
                } else {
                    "tearing down"
                },
                info.instance,
                describe_expiry(info, now)
            );
        }
        let outcomes: Vec<Outcome> = if args.dry_run || expired.is_empty() {
            expired.iter().map(|_| Outcome::WouldTearDown).collect()
        } else {
            let names: Vec<&str> = expired.iter().map(|i| i.instance.as_str()).collect();
            let question = format!(
                "Tear down {} expired instance(s) of `{}` ({})?",
                expired.len(),
                args.stack,
                names.join(", ")
            );
            if !super::apply_plan::confirm(
                args.yes,
                &question,
                "review with `provisioner gc --dry-run`, then pass --yes",
            )? {
                eprintln!("Nothing deleted.");
                return Ok(ExitCode::FAILURE);
            }
            tear_down_all(args, stacks_dir, output, &expired).await
        };
        if expired.is_empty() {
            eprintln!("No expired instance of `{}`.", args.stack);
        }
        let failed = outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Failed { .. }))
            .count();
        for (info, outcome) in expired.iter().zip(&outcomes) {
            match outcome {
                Outcome::TornDown => eprintln!("{}: torn down", info.instance),
                Outcome::Failed { error } => eprintln!("{}: FAILED: {error}", info.instance),
                Outcome::WouldTearDown => {}
            }
        }
        if args.json {
            let entries: Vec<serde_json::Value> = expired
                .iter()
                .zip(&outcomes)
                .map(|(info, outcome)| {
                    let mut entry = serde_json::to_value(info).unwrap_or_default();
                    if let (Some(entry), serde_json::Value::Object(outcome)) = (
                        entry.as_object_mut(),
                        serde_json::to_value(outcome).unwrap_or_default(),
                    ) {
                        entry.extend(outcome);
                    }
                    entry
                })
                .collect();
            let report = serde_json::json!({
                "format_version": instances::INSTANCES_FORMAT_VERSION,
                "stack": args.stack,
                "now": now,
                "dry_run": args.dry_run,
                "expired": entries,
                "kept": kept,
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&report).into_diagnostic()?
            );
        }
        Ok(if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

/// Tears the instances down concurrently (at most `--concurrent-instances` at once); one failing
/// does not stop the others.
async fn tear_down_all(
    args: &Args,
    stacks_dir: &Path,
    output: &Output,
    expired: &[InstanceInfo],
) -> Vec<Outcome> {
    let mut tasks = tokio::task::JoinSet::new();
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(args.concurrent_instances));
    for (index, info) in expired.iter().enumerate() {
        let target = Target {
            stack: args.stack.clone(),
            instance: Some(info.instance.clone()),
        };
        let teardown = Teardown {
            yes: true,
            allow_deletion_protected: false,
            skip_load_balancer_cleanup: false,
            parallelism: args.parallelism,
            lock_timeout: None,
            reporting: Reporting::Labelled(info.instance.clone()),
        };
        let stacks_dir: PathBuf = stacks_dir.to_path_buf();
        let output = *output;
        let slots = slots.clone();
        tasks.spawn(async move {
            // The semaphore is never closed, so a permit always comes.
            let _permit = slots.acquire_owned().await;
            let result = async {
                let deployment = deployment::open(&target, &stacks_dir, &output).await?;
                down::tear_down(deployment, &teardown).await
            }
            .await;
            let outcome = match result {
                Ok(true) => Outcome::TornDown,
                Ok(false) => Outcome::Failed {
                    error: "some deletes failed (see above); run `gc` again or `down` for this instance".to_owned(),
                },
                Err(error) => Outcome::Failed {
                    error: format!("{error}"),
                },
            };
            (index, outcome)
        });
    }
    let mut outcomes: Vec<Option<Outcome>> = vec![None; expired.len()];
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((index, outcome)) => outcomes[index] = Some(outcome),
            Err(error) => eprintln!("a teardown task ended abnormally: {error}"),
        }
    }
    outcomes
        .into_iter()
        .map(|outcome| {
            outcome.unwrap_or(Outcome::Failed {
                error: "the teardown task ended abnormally".to_owned(),
            })
        })
        .collect()
}
