//! `provisioner refresh`: accepts the live values of the deployment's resources into state
//! (semantics in provisioner/docs/state.md): changed managed attributes are recorded as they are,
//! records of objects deleted out of band are removed so the next `up` creates them. Never changes
//! the stack file or the cloud. Under the state lock; the save goes through the journal.

use std::path::Path;
use std::process::ExitCode;

use miette::{IntoDiagnostic, miette};

use super::Output;
use super::apply_plan;
use super::deployment::{self, Deployment, Target};
use crate::engine::drift::{self, DriftStatus};
use crate::engine::drift_render;
use crate::engine::planner;
use crate::engine::provider::ProviderRegistry;
use crate::state::journal::Journal;

/// Arguments of `refresh`. Exit codes: 0 accepted (or nothing to accept), 1 error or declined.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// Accept without asking. Required when not attached to a terminal.
    #[arg(long)]
    pub yes: bool,
    /// Print what was accepted as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Wait this long for another run's lock (default: the stack's `state.lock_timeout`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub lock_timeout: Option<std::time::Duration>,
}

pub fn run(args: &Args, stacks_dir: &Path, output: &Output) -> miette::Result<ExitCode> {
    let runtime = deployment::runtime()?;
    runtime.block_on(async {
        let deployment = deployment::open(&args.target, stacks_dir, output).await?;
        let registry = deployment::providers(&deployment)?;
        let timeout = args.lock_timeout.unwrap_or(deployment.lock_timeout);
        apply_plan::locked(
            &deployment,
            "refresh",
            timeout,
            locked_refresh(args, &deployment, &registry),
        )
        .await
    })
}

async fn locked_refresh(
    args: &Args,
    deployment: &Deployment,
    registry: &ProviderRegistry,
) -> miette::Result<ExitCode> {
    let journal = Journal::open(
        deployment.backend.clone(),
        deployment.stack_name(),
        deployment.instance(),
    )
    .await
    .into_diagnostic()?;
    let state = journal.snapshot().await;
    if state.serial == 0 {
        return Err(miette!(
            "nothing to refresh: the deployment has no state ({})",
            deployment.backend.describe()
        ));
    }
    if !state.pending.is_empty() {
        return Err(miette!(
            help = "run `provisioner up` to settle them first",
            "state holds {} pending operation(s) from an interrupted run",
            state.pending.len()
        ));
    }
    let (report, live, owned) = super::drift::detect(deployment, registry, &state).await?;
    let mut preview = state.clone();
    let accepted = drift::accept_live(&mut preview, &deployment.desired, &live, chrono::Utc::now());
    if !args.json {
        eprint!("{}", drift_render::human(&report, false));
    }
    let not_adopted = report
        .entries
        .iter()
        .filter(|e| e.status == DriftStatus::Unmanaged)
        .count();
    if not_adopted > 0 {
        eprintln!(
            "note: {not_adopted} unmanaged object(s) are not adopted by refresh; delete them or \
             remove their stacksmith:* tags"
        );
    }
    let undeclared = planner::plan_member_removals(&state, &owned);
    if !undeclared.is_empty() {
        eprintln!(
            "note: refresh does not adopt rules and routes the stack does not declare; the next \
             `up` removes them unless the stack declares them:"
        );
        for removal in &undeclared {
            eprintln!("  {}", removal.note.as_deref().unwrap_or_default());
        }
    }
    let print_json = |applied: bool| {
        if args.json {
            let document = serde_json::json!({
                "version": 1,
                "applied": applied,
                "updated": accepted.updated,
                "removed": accepted.removed,
                "drift": report,
            });
            println!("{document}");
        }
    };
    if accepted.is_empty() {
        eprintln!("State already records the live values; nothing to accept.");
        print_json(false);
        return Ok(ExitCode::SUCCESS);
    }
    if !apply_plan::confirm(
        args.yes,
        &format!(
            "Record the live values of {} resource(s) and forget {} deleted one(s) in state?",
            accepted.updated.len(),
            accepted.removed.len()
        ),
        "review with `provisioner drift`, then pass --yes",
    )? {
        eprintln!("Not accepted.");
        return Ok(ExitCode::FAILURE);
    }
    journal
        .record(|document| {
            drift::accept_live(document, &deployment.desired, &live, chrono::Utc::now())
        })
        .await
        .into_diagnostic()?;
    eprintln!(
        "Accepted: {} resource(s) updated, {} removed from state. The stack file is unchanged: \
         `up` reverts what it still declares differently.",
        accepted.updated.len(),
        accepted.removed.len()
    );
    print_json(true);
    Ok(ExitCode::SUCCESS)
}
