//! `provisioner down`: deletes everything a deployment's state records, dependents first (the
//! planner's plan against an empty desired set), through the same lock, journal, executor and
//! progress as `up`.
//!
//! Before the EKS cluster is deleted, the Services of type LoadBalancer are deleted through the
//! cluster (reached like `up` reaches it) and waited for ([`crate::kubernetes::teardown`]), so the load balancers, security
//! groups and ENIs AWS made for them do not block the VPC; the AWS providers then sweep what is
//! left in the VPC and retry "still in use" errors (`crate::aws::teardown`). A production stack
//! (tag `environment: production`) is refused without `--destroy-production`.
//! [`tear_down`] is also what `gc` runs for each expired instance.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use miette::{IntoDiagnostic, miette};

use super::Output;
use super::apply_plan::{self, Progress};
use super::cluster;
use super::deployment::{self, Deployment, Target};
use crate::engine::DesiredSet;
use crate::engine::executor::DEFAULT_PARALLELISM;
use crate::engine::plan::{ActionKind, Plan};
use crate::engine::planner::{self, PlanInput};
use crate::engine::provider::ProviderRegistry;
use crate::engine::recovery::resolve_pending;
use crate::engine::render::render_plan;
use crate::kubernetes::access::{self, ClusterRoute};
use crate::kubernetes::teardown;
use crate::stack::model::Stack;
use crate::state::StateDocument;
use crate::state::journal::Journal;

/// How long `down` waits for the LoadBalancer Services (and so their load balancers) to go.
const LOAD_BALANCER_TIMEOUT: Duration = Duration::from_secs(10 * 60);

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
    /// Required to tear down a production stack (one tagged `environment: production`); without
    /// it `down` refuses before touching state or the cloud.
    #[arg(long)]
    pub destroy_production: bool,
    /// Do not delete the cluster's Services of type LoadBalancer before the cluster (for a
    /// cluster that cannot be reached any more); leftovers may then block the VPC's deletion.
    #[arg(long)]
    pub skip_load_balancer_cleanup: bool,
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

/// How a teardown reports its progress.
pub enum Reporting {
    /// `down` itself: the full plan, then progress live, as lines or as JSON lines.
    Verb { json: bool, color: bool },
    /// One of several deployments torn down at once (`gc`): a one-line plan summary and
    /// progress lines naming the deployment.
    Labelled(String),
}

/// What one teardown may do and how it reports.
pub struct Teardown {
    pub yes: bool,
    pub allow_deletion_protected: bool,
    pub skip_load_balancer_cleanup: bool,
    pub parallelism: usize,
    pub lock_timeout: Option<Duration>,
    pub reporting: Reporting,
}

/// Whether the stack is a production one: its `environment` tag says `production` (or `prod`).
pub fn is_production(stack: &Stack) -> bool {
    stack.tags.iter().any(|(key, value)| {
        key.eq_ignore_ascii_case("environment")
            && ["production", "prod"]
                .iter()
                .any(|name| value.trim().eq_ignore_ascii_case(name))
    })
}

pub fn run(args: &Args, stacks_dir: &Path, output: &Output) -> miette::Result<ExitCode> {
    if args.parallelism == 0 {
        return Err(miette!("--parallelism must be at least 1"));
    }
    let loaded = deployment::load_stack(&args.target, stacks_dir, output)?;
    if is_production(&loaded.stack) && !args.destroy_production {
        return Err(miette!(
            help = "if you really mean to delete production, pass --destroy-production",
            "refusing to tear down `{}`: the stack is tagged environment: production",
            crate::state::deployment_name(&args.target.stack, args.target.instance.as_deref())
        ));
    }
    let runtime = deployment::runtime()?;
    runtime.block_on(async {
        let deployment = deployment::connect(loaded).await?;
        let teardown = Teardown {
            yes: args.yes,
            allow_deletion_protected: args.allow_deletion_protected,
            skip_load_balancer_cleanup: args.skip_load_balancer_cleanup,
            parallelism: args.parallelism,
            lock_timeout: args.lock_timeout,
            reporting: Reporting::Verb {
                json: args.json,
                color: output.color,
            },
        };
        let deleted = tear_down(deployment, &teardown).await?;
        Ok(if deleted {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

/// Deletes everything `deployment`'s state records under its lock. `Ok(true)` when everything is
/// gone (or nothing was recorded), `Ok(false)` when a delete failed, the run was interrupted or
/// the confirmation was declined; errors are refusals and failures before any delete.
pub async fn tear_down(mut deployment: Deployment, teardown: &Teardown) -> miette::Result<bool> {
    deployment.aws.allow_deletion_protected = teardown.allow_deletion_protected;
    let registry = deployment::providers(&deployment)?;
    let timeout = teardown.lock_timeout.unwrap_or(deployment.lock_timeout);
    apply_plan::locked(
        &deployment,
        "down",
        timeout,
        locked_down(teardown, &deployment, &registry),
    )
    .await
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
    teardown: &Teardown,
    deployment: &Deployment,
    registry: &ProviderRegistry,
) -> miette::Result<bool> {
    let journal = Arc::new(
        Journal::open(
            deployment.backend.clone(),
            deployment.stack_name(),
            deployment.instance(),
        )
        .await
        .into_diagnostic()?,
    );
    let (progress, json) = match &teardown.reporting {
        Reporting::Verb { json, .. } => (Progress::start(*json), *json),
        Reporting::Labelled(label) => (Progress::labelled(label.clone()), false),
    };
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
    if !guarded.is_empty() && !teardown.allow_deletion_protected {
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
    match &teardown.reporting {
        Reporting::Verb { json: true, .. } => {
            let event = serde_json::json!({
                "event": "plan",
                "at": chrono::Utc::now(),
                "state": plan.state,
                "summary": plan.summary,
            });
            println!("{event}");
        }
        Reporting::Verb { color, .. } => eprint!("{}", render_plan(&plan, *color)),
        Reporting::Labelled(label) => {
            eprintln!("{label}: {} resource(s) to delete", plan.summary.delete)
        }
    }
    if !plan.has_changes() {
        progress.finish().await;
        eprintln!("Nothing to delete.");
        return Ok(true);
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
        teardown.yes,
        &question,
        "review with `provisioner state list`, then pass --yes",
    )? {
        progress.finish().await;
        eprintln!("Nothing deleted.");
        return Ok(false);
    }
    if deletes_cluster(&plan) && !teardown.skip_load_balancer_cleanup {
        remove_load_balancer_services(deployment, state.as_ref()).await?;
    }
    apply_plan::execute(
        &plan,
        journal,
        registry,
        teardown.parallelism,
        json,
        progress,
        None,
    )
    .await
}

fn deletes_cluster(plan: &Plan) -> bool {
    plan.actions
        .iter()
        .any(|a| a.action == ActionKind::Delete && a.resource_type.as_str() == "aws.eks.cluster")
}

/// Deletes the cluster's Services of type LoadBalancer and waits until they are gone. The cluster
/// is reached like `up` reaches it: `cluster.kubeconfig`, else the EKS endpoint in state with a
/// token.
async fn remove_load_balancer_services(
    deployment: &Deployment,
    state: Option<&StateDocument>,
) -> miette::Result<()> {
    let route = cluster::route(deployment, state);
    if let ClusterRoute::Unavailable(why) = &route {
        eprintln!(
            "note: Services of type LoadBalancer were not deleted before the cluster: {why}; \
             load balancers they made are left to the VPC sweep"
        );
        return Ok(());
    }
    let help = "if the cluster cannot be reached any more, pass --skip-load-balancer-cleanup";
    let client = access::connect(&route, &deployment.aws)
        .await
        .map_err(|e| miette!(help = help, "{e}"))?;
    let deleted = teardown::delete_load_balancer_services(
        &client,
        LOAD_BALANCER_TIMEOUT,
        Duration::from_secs(2),
    )
    .await
    .map_err(|e| miette!(help = help, "{e}"))?;
    if deleted.is_empty() {
        eprintln!(
            "No Service of type LoadBalancer in the cluster ({}).",
            route.describe()
        );
    } else {
        eprintln!(
            "Deleted the Services of type LoadBalancer (and waited for them): {}",
            deleted.join(", ")
        );
    }
    Ok(())
}
