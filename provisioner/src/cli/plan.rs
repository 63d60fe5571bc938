//! `provisioner plan`: what `up` would change, as a coloured diff or versioned JSON.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use miette::{IntoDiagnostic, miette};

use super::Output;
use super::cluster;
use super::deployment::{self, Target};
use crate::engine::executor::DEFAULT_PARALLELISM;
use crate::engine::planner::{self, PlanInput};
use crate::engine::refresh::{read_live, read_members};
use crate::engine::render::render_plan;
use crate::kubernetes::access::ClusterRoute;
use crate::policy;

/// Arguments of `plan`.
///
/// Exit codes: 0 success (with `--detailed-exitcode`: no changes), 1 error or a policy `deny`,
/// 2 changes present (only with `--detailed-exitcode`).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// Print the plan as JSON (`format_version` 1, see provisioner/docs/plan-json.md).
    #[arg(long)]
    pub json: bool,
    /// Also save the plan as JSON to FILE, for `up --plan FILE`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Exit 0 when there are no changes, 1 on error, 2 when there are changes.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Read every recorded resource from its provider first, so drift shows as changes.
    #[arg(long)]
    pub refresh: bool,
    /// Plan the cloud side only: do not read the in-cluster objects (like `up
    /// --skip-cluster-install`), e.g. when the cluster's API cannot be reached from here.
    #[arg(long)]
    pub skip_cluster: bool,
}

pub fn run(args: &Args, stacks_dir: &Path, output: &Output) -> miette::Result<ExitCode> {
    let runtime = deployment::runtime()?;
    let (plan, report, cluster_plan) = runtime.block_on(async {
        let deployment = deployment::open(&args.target, stacks_dir, output).await?;
        let state = deployment.backend.load().await.into_diagnostic()?;
        if let Some(state) = &state
            && !state.pending.is_empty()
        {
            eprintln!(
                "note: state holds {} pending operation(s) from an interrupted run; `up` settles them before applying",
                state.pending.len()
            );
        }
        // With --refresh: live values, and the members of the recorded objects (the rules and
        // routes the stack does not declare show as deletes, as `up` plans them).
        let (live, members) = match (&state, args.refresh) {
            (Some(state), true) => {
                let registry = deployment::providers(&deployment)?;
                let (live, members) = tokio::join!(
                    read_live(state, &registry, DEFAULT_PARALLELISM),
                    read_members(state, &registry, DEFAULT_PARALLELISM)
                );
                (
                    Some(live.into_diagnostic()?),
                    members.into_diagnostic()?,
                )
            }
            _ => (None, Vec::new()),
        };
        let registry = deployment::providers(&deployment)?;
        let catalog = registry.catalog();
        let (zones, note) = deployment.zones(state.as_ref(), &registry, false).await?;
        if let Some(note) = note {
            eprintln!("note: {note}");
        }
        let (desired, _) =
            deployment.desired_with_lifetime(state.as_ref(), deployment::now()?, &zones.names);
        let plan = planner::plan(&PlanInput {
            desired: &desired,
            state: state.as_ref(),
            live: live.as_ref(),
            catalog: &catalog,
        })
        .map_err(|e| miette!("{e}"))?;
        let plan = match &state {
            Some(state) => planner::with_member_removals(plan, state, &members)
                    .map_err(|e| miette!("{e}"))?,
            None => plan,
        };
        let report = policy::check_plan(&policy::policies_dir(), &deployment.loaded, &plan)
            .map_err(super::policy::diagnostic)?;
        let cluster_plan = if args.skip_cluster {
            if cluster::has_objects(&deployment) {
                eprintln!("note: the in-cluster objects were not compared (--skip-cluster)");
            }
            None
        } else {
            in_cluster_plan(&deployment, state.as_ref(), args.refresh).await?
        };
        Ok::<_, miette::Report>((plan, report, cluster_plan))
    })?;
    let plan_json = || cluster::plan_json(&plan, cluster_plan.as_ref());
    if let Some(path) = &args.out {
        std::fs::write(path, plan_json())
            .into_diagnostic()
            .map_err(|e| e.wrap_err(format!("writing the plan to {}", path.display())))?;
    }
    let mut stdout = std::io::stdout().lock();
    let text = if args.json {
        plan_json()
    } else {
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        let mut text = render_plan(&plan, color);
        if let Some(cluster_plan) = &cluster_plan {
            text.push_str(&cluster::render_plan(cluster_plan));
        }
        text
    };
    stdout.write_all(text.as_bytes()).into_diagnostic()?;
    if let Some(path) = &args.out
        && !args.json
    {
        writeln!(
            stdout,
            "Saved the plan to {}; apply it with `provisioner up --plan {}`.",
            path.display(),
            path.display()
        )
        .into_diagnostic()?;
    }
    // Policy findings go to stderr so that `--json` stays one plan document on stdout.
    if !report.findings.is_empty() {
        eprint!("{}", policy::render::human(&report));
    }
    if !report.passed() {
        eprintln!("`up` would refuse this plan: a policy denies it.");
        return Ok(ExitCode::FAILURE);
    }
    let cluster_changes = cluster_plan
        .as_ref()
        .is_some_and(|c| c.summary.has_changes());
    let changes = plan.has_changes() || cluster_changes;
    Ok(if args.detailed_exitcode && changes {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// The in-cluster part of the plan, when the cluster can be read: through `cluster.kubeconfig`
/// always; through the EKS endpoint only with `--refresh` (it needs AWS credentials, which `plan`
/// otherwise never touches). Otherwise a note says why the objects were not compared.
async fn in_cluster_plan(
    deployment: &deployment::Deployment,
    state: Option<&crate::state::StateDocument>,
    refresh: bool,
) -> miette::Result<Option<cluster::ClusterPlan>> {
    if !cluster::has_objects(deployment) {
        return Ok(None);
    }
    let route = cluster::route(deployment, state);
    match &route {
        ClusterRoute::Unavailable(why) => {
            eprintln!("note: the in-cluster objects were not compared: {why}");
            Ok(None)
        }
        ClusterRoute::Eks(_) if !refresh => {
            eprintln!(
                "note: the in-cluster objects were not compared: pass --refresh to read them from \
                 the EKS cluster (with AWS credentials)"
            );
            Ok(None)
        }
        _ => cluster::plan(deployment, &route, state)
            .await
            .map(Some)
            .map_err(|e| {
                e.wrap_err(format!(
                    "reading the in-cluster objects ({})",
                    cluster::SKIP_HINT_DRIFT
                ))
            }),
    }
}
