//! `provisioner down`: deletes everything a deployment's state records, dependents first (the
//! planner's plan against an empty desired set), through the same lock, journal, executor and
//! progress as `up`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use miette::{IntoDiagnostic, miette};

use super::Output;
use super::apply_plan::{self, Progress};
use super::deployment::{self, Deployment, Target};
use crate::engine::DesiredSet;
use crate::engine::executor::DEFAULT_PARALLELISM;
use crate::engine::planner::{self, PlanInput};
use crate::engine::provider::ProviderRegistry;
use crate::engine::recovery::resolve_pending;
use crate::engine::render::render_plan;
use crate::state::StateDocument;
use crate::state::journal::Journal;

/// Arguments of `down`. Exit codes: 0 everything deleted (or nothing recorded), 1 error,
/// failure, refusal or interrupt.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// Delete without asking. Required when not attached to a terminal.
    #[arg(long)]
    pub yes: bool,
    /// Turn off deletion protection (RDS) before deleting; without it `down` refuses to touch a
    /// deployment holding protected resources.
    #[arg(long)]
    pub allow_deletion_protected: bool,
    /// At most N provider calls at once.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PARALLELISM)]
    pub parallelism: usize,
    /// Progress as one JSON object per line on stdout, for CI.
    #[arg(long)]
    pub json: bool,
    /// Wait this long for another run's lock (default: the stack's `state.lock_timeout`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub lock_timeout: Option<std::time::Duration>,
}

pub fn run(args: &Args, stacks_dir: &Path, output: &Output) -> miette::Result<ExitCode> {
    if args.parallelism == 0 {
        return Err(miette!("--parallelism must be at least 1"));
    }
    let runtime = deployment::runtime()?;
    runtime.block_on(async {
        let mut deployment = deployment::open(&args.target, stacks_dir, output).await?;
        deployment.aws.allow_deletion_protected = args.allow_deletion_protected;
        let registry = deployment::providers(&deployment)?;
        let timeout = args.lock_timeout.unwrap_or(deployment.lock_timeout);
        apply_plan::locked(
            &deployment,
            "down",
            timeout,
            locked_down(args, &deployment, &registry, output.color),
        )
        .await
    })
}

/// Recorded resources whose deletion protection is on.
fn protected(state: &StateDocument) -> Vec<String> {
    state
        .resources
        .values()
        .chain(state.deposed.iter())
        .filter(|r| r.properties.get("deletion_protection") == Some(&serde_json::Value::Bool(true)))
        .map(|r| format!("{} ({})", r.address, r.id))
        .collect()
}

async fn locked_down(
    args: &Args,
    deployment: &Deployment,
    registry: &ProviderRegistry,
    color: bool,
) -> miette::Result<ExitCode> {
    let journal = Arc::new(
        Journal::open(
            deployment.backend.clone(),
            deployment.stack_name(),
            deployment.instance(),
        )
        .await
        .into_diagnostic()?,
    );
    let progress = Progress::start(args.json);
    let recovered = resolve_pending(&journal, registry, Some(&progress.sender))
        .await
        .map_err(|e| miette!("{e}"))?;
    if !recovered.is_empty() {
        eprintln!(
            "Settled {} pending operation(s) from an interrupted run.",
            recovered.len()
        );
    }
    let state = journal.snapshot().await;
    let guarded = protected(&state);
    if !guarded.is_empty() && !args.allow_deletion_protected {
        progress.finish().await;
        return Err(miette!(
            help =
                "pass --allow-deletion-protected to turn deletion protection off and delete them",
            "refusing to delete resources with deletion protection: {}",
            guarded.join(", ")
        ));
    }
    let state = (state.serial > 0).then_some(state);
    let nothing = DesiredSet {
        resources: Vec::new(),
        ..deployment.desired.clone()
    };
    let plan = planner::plan(&PlanInput {
        desired: &nothing,
        state: state.as_ref(),
        live: None,
        catalog: &registry.catalog(),
    })
    .map_err(|e| miette!("{e}"))?;
    if args.json {
        let event = serde_json::json!({
            "event": "plan",
            "at": chrono::Utc::now(),
            "state": plan.state,
            "summary": plan.summary,
        });
        println!("{event}");
    } else {
        eprint!("{}", render_plan(&plan, color));
    }
    if !plan.has_changes() {
        progress.finish().await;
        eprintln!("Nothing to delete.");
        return Ok(ExitCode::SUCCESS);
    }
    if !guarded.is_empty() {
        eprintln!(
            "Deletion protection will be turned off for: {}",
            guarded.join(", ")
        );
    }
    let question = format!(
        "Delete every resource of {}?",
        deployment.backend.describe()
    );
    if !apply_plan::confirm(
        args.yes,
        &question,
        "review with `provisioner state list`, then pass --yes",
    )? {
        progress.finish().await;
        eprintln!("Nothing deleted.");
        return Ok(ExitCode::FAILURE);
    }
    let succeeded = apply_plan::execute(
        &plan,
        journal,
        registry,
        args.parallelism,
        args.json,
        progress,
        None,
    )
    .await?;
    Ok(if succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
