//! `provisioner up`: settles what an interrupted run left pending, plans, asks, and applies.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use miette::{IntoDiagnostic, miette};

use super::Output;
use super::apply_plan::{self, Progress};
use super::cluster;
use super::deployment::{self, Target};
use crate::engine::executor::DEFAULT_PARALLELISM;
use crate::engine::lifetime;
use crate::engine::plan::Plan;
use crate::engine::planner::{self, PlanInput};
use crate::engine::recovery::resolve_pending;
use crate::engine::refresh::{read_live, read_members};
use crate::engine::render::render_plan;
use crate::kubernetes::access::ClusterRoute;
use crate::kubernetes::apply::Change;
use crate::kubernetes::install;
use crate::policy;
use crate::state::InstanceLifetime;
use crate::state::journal::Journal;

/// Arguments of `up`. Exit codes: 0 applied (or nothing to do), 1 error, failure or interrupt.
///
/// Providers: the AWS providers (region, endpoint and credentials from the stack and the standard
/// AWS chain); `STACKSMITH_PROVIDER=fake` selects the test-only fake provider (see
/// provisioner/docs/testing.md).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// Apply without asking. Required when not attached to a terminal.
    #[arg(long)]
    pub yes: bool,
    /// Apply exactly this saved plan (`plan --out FILE`); refused when state moved since.
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// At most N provider calls at once (lowered automatically while providers throttle).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PARALLELISM, value_parser = parse_parallelism)]
    pub parallelism: usize,
    /// Progress as one JSON object per line on stdout, for CI.
    #[arg(long)]
    pub json: bool,
    /// Wait this long for another run's lock (default: the stack's `state.lock_timeout`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub lock_timeout: Option<std::time::Duration>,
    /// How long the in-cluster Deployments may take to roll out.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub rollout_timeout: std::time::Duration,
    /// Plan from state alone, without reading the recorded resources back first (then changes
    /// made outside Stacksmith are not reverted).
    #[arg(long)]
    pub no_refresh: bool,
    /// Converge the cloud side only: leave the in-cluster objects (baseline, control plane) as
    /// they are. Without it, `up` applies them through `cluster.kubeconfig` or, when the stack
    /// sets none, the EKS endpoint in state with a token, and fails when the cluster cannot be
    /// reached.
    #[arg(long)]
    pub skip_cluster_install: bool,
}

fn parse_parallelism(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("a whole number of at least 1".to_owned()),
    }
}

pub fn run(args: &Args, stacks_dir: &Path, output: &Output) -> miette::Result<ExitCode> {
    let runtime = deployment::runtime()?;
    runtime.block_on(apply(args, stacks_dir, output))
}

async fn apply(args: &Args, stacks_dir: &Path, output: &Output) -> miette::Result<ExitCode> {
    let loaded = deployment::load_stack(&args.target, stacks_dir, output)?;
    // The guardrails judge what the stack asks for before state is opened or any provider is
    // called; the concrete plan is checked again below, before anything is applied.
    policy::enforce(&policy::policies_dir(), &loaded, None).map_err(super::policy::diagnostic)?;
    let deployment = deployment::connect(loaded).await?;
    let registry = deployment::providers(&deployment)?;
    let saved_plan = match &args.plan {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .into_diagnostic()
                .map_err(|e| e.wrap_err(format!("reading {}", path.display())))?;
            Some(Plan::from_json(&text).map_err(|e| miette!("{}: {e}", path.display()))?)
        }
        None => None,
    };
    let timeout = args.lock_timeout.unwrap_or(deployment.lock_timeout);
    apply_plan::locked(
        &deployment,
        "up",
        timeout,
        locked_apply(args, &deployment, &registry, saved_plan),
    )
    .await
}

async fn locked_apply(
    args: &Args,
    deployment: &deployment::Deployment,
    registry: &crate::engine::provider::ProviderRegistry,
    saved_plan: Option<Plan>,
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

    let now = deployment::now()?;
    let (plan, lifetime) = match saved_plan {
        Some(plan) => {
            let state = journal.snapshot().await;
            let current_lineage = (state.serial > 0).then(|| state.lineage.clone());
            if plan.stack != deployment.stack_name()
                || plan.instance.as_deref() != deployment.instance()
            {
                return Err(miette!(
                    "the plan is for stack {} (instance {:?}), not this one",
                    plan.stack,
                    plan.instance
                ));
            }
            if plan.state.lineage != current_lineage || plan.state.serial != state.serial {
                return Err(miette!(
                    help = "make a new plan with `provisioner plan --out FILE`",
                    "state moved since the plan was made (plan: lineage {:?} serial {}; now: lineage {:?} serial {})",
                    plan.state.lineage,
                    plan.state.serial,
                    current_lineage,
                    state.serial
                ));
            }
            if !state.pending.is_empty() {
                return Err(miette!(
                    "state holds pending operations; run `up` without --plan to settle them"
                ));
            }
            let lifetime = deployment.instance().map(|_| {
                let recorded = Some(&state)
                    .filter(|state| !state.is_empty())
                    .and_then(|state| state.lifetime);
                recorded.unwrap_or_else(|| match lifetime::expiry_in_plan(&plan) {
                    Some(expires_at) => InstanceLifetime {
                        created_at: deployment
                            .instance_ttl()
                            .and_then(|ttl| chrono::Duration::from_std(ttl).ok())
                            .and_then(|ttl| expires_at.checked_sub_signed(ttl))
                            .unwrap_or(now),
                        expires_at: Some(expires_at),
                    },
                    None => InstanceLifetime::starting(now, deployment.instance_ttl()),
                })
            });
            (plan, lifetime)
        }
        None => {
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
            let state = (state.serial > 0).then_some(state);
            // Reading every recorded resource (and the rules and routes of the recorded groups
            // and tables) first makes drift a change: `up` converges it.
            let (live, members) = match (&state, args.no_refresh) {
                (Some(state), false) => {
                    let (live, members) = tokio::join!(
                        read_live(state, registry, args.parallelism),
                        read_members(state, registry, args.parallelism)
                    );
                    (
                        Some(live.map_err(|e| miette!("{e}"))?),
                        members.map_err(|e| miette!("{e}"))?,
                    )
                }
                _ => (None, Vec::new()),
            };
            let (zones, _) = deployment.zones(state.as_ref(), registry, true).await?;
            let (desired, lifetime) =
                deployment.desired_with_lifetime(state.as_ref(), now, &zones.names);
            let plan = planner::plan(&PlanInput {
                desired: &desired,
                state: state.as_ref(),
                live: live.as_ref(),
                catalog: &registry.catalog(),
            })
            .map_err(|e| miette!("{e}"))?;
            let plan = match &state {
                Some(state) => planner::with_member_removals(plan, state, &members)
                    .map_err(|e| miette!("{e}"))?,
                None => plan,
            };
            (plan, lifetime)
        }
    };
    if args.json {
        let event = serde_json::json!({
            "event": "plan",
            "at": chrono::Utc::now(),
            "state": plan.state,
            "summary": plan.summary,
        });
        println!("{event}");
    } else {
        let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        eprint!("{}", render_plan(&plan, color));
    }
    let report = policy::enforce(&policy::policies_dir(), &deployment.loaded, Some(&plan))
        .map_err(super::policy::diagnostic)?;
    if !report.findings.is_empty() {
        eprint!("{}", policy::render::human(&report));
    }
    if !plan.has_changes() {
        progress.finish().await;
        let state = journal.snapshot().await;
        return install_in_cluster(args, deployment, &state).await;
    }
    if !apply_plan::confirm(
        args.yes,
        "Apply these changes?",
        "review with `provisioner plan`, then pass --yes",
    )? {
        eprintln!("Not applied.");
        return Ok(ExitCode::FAILURE);
    }
    if lifetime.is_some() && journal.snapshot().await.lifetime != lifetime {
        journal
            .record(|document| document.lifetime = lifetime)
            .await
            .into_diagnostic()?;
    }
    let needs_cipher = plan.actions.iter().any(|a| {
        a.desired.as_ref().is_some_and(|d| {
            d.values()
                .any(|v| crate::engine::value::as_secret_request(v).is_some())
        })
    });
    let cipher = if needs_cipher {
        Some(deployment.cipher()?)
    } else {
        None
    };
    let succeeded = apply_plan::execute(
        &plan,
        journal.clone(),
        registry,
        args.parallelism,
        args.json,
        progress,
        cipher,
    )
    .await?;
    if !succeeded {
        return Ok(ExitCode::FAILURE);
    }
    let state = journal.snapshot().await;
    install_in_cluster(args, deployment, &state).await
}

/// The in-cluster half of `up`: renders the baseline and the control plane with the provisioned
/// outputs and applies them (server-side apply, prune, rollout wait). Runs on every `up`, so the
/// cluster converges like the cloud side does.
async fn install_in_cluster(
    args: &Args,
    deployment: &deployment::Deployment,
    state: &crate::state::StateDocument,
) -> miette::Result<ExitCode> {
    let loaded = &deployment.loaded;
    if !cluster::has_objects(deployment) {
        return Ok(ExitCode::SUCCESS);
    }
    let not_installed = |reason: &str| {
        if args.json {
            let event = serde_json::json!({
                "event": "cluster",
                "at": chrono::Utc::now(),
                "installed": false,
                "reason": reason,
            });
            println!("{event}");
        }
        Ok(ExitCode::SUCCESS)
    };
    if args.skip_cluster_install {
        eprintln!(
            "note: the in-cluster objects were not applied (--skip-cluster-install); `up` without \
             it applies them"
        );
        return not_installed("--skip-cluster-install");
    }
    let route = cluster::route(deployment, Some(state));
    if let ClusterRoute::Unavailable(why) = &route {
        eprintln!(
            "note: the in-cluster objects (baseline, control plane) were not installed: {why}. \
             To install them, {}.",
            cluster::HOW_TO_INSTALL
        );
        return not_installed(why);
    }
    let help = "the cloud side converged; make the cluster reachable and run `up` again, or \
                pass --skip-cluster-install to converge the cloud side only";
    let cipher = deployment.cipher()?;
    let secrets = install::secret_values(loaded, state, &cipher).map_err(|e| miette!("{e}"))?;
    eprintln!(
        "Applying the cluster baseline and control plane through {} ...",
        route.describe()
    );
    let applier = cluster::applier(deployment, &route)
        .await
        .map_err(|e| miette!(help = help, "{e}"))?;
    let outputs = install::cloud_outputs(Some(state));
    let report = install::install(&applier, loaded, &secrets, &outputs, args.rollout_timeout)
        .await
        .map_err(|e| miette!(help = help, "{e}"))?;
    let count = |change: Change| report.applied.iter().filter(|(_, c)| *c == change).count();
    let (created, configured, unchanged) = (
        count(Change::Created),
        count(Change::Configured),
        count(Change::Unchanged),
    );
    if args.json {
        let event = serde_json::json!({
            "event": "cluster",
            "at": chrono::Utc::now(),
            "installed": true,
            "through": route.describe(),
            "created": created,
            "configured": configured,
            "unchanged": unchanged,
            "pruned": report.pruned,
        });
        println!("{event}");
    }
    eprintln!(
        "Cluster: {created} created, {configured} configured, {unchanged} unchanged, {} pruned; \
         every Deployment rolled out.",
        report.pruned.len()
    );
    Ok(ExitCode::SUCCESS)
}
