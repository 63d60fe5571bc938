//! `provisioner drift`: reads every recorded resource back and lists the objects carrying the
//! deployment's ownership tags, then reports what changed behind the stack's back (as text, JSON,
//! Markdown or JUnit XML). When the stack renders in-cluster objects and its cluster can be
//! reached (the routes `plan --refresh` uses), they are compared too
//! ([`crate::kubernetes::drift`]). Read-only: no lock is taken and nothing is written but `--out`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use miette::{IntoDiagnostic, miette};

use super::Output;
use super::cluster;
use super::deployment::{self, Deployment, Target};
use crate::engine::drift::{self, DriftEntry, DriftInput, DriftReport};
use crate::engine::drift_render;
use crate::engine::executor::DEFAULT_PARALLELISM;
use crate::engine::planner::LiveSnapshot;
use crate::engine::provider::{OwnedObject, ProviderRegistry};
use crate::engine::refresh::{list_owned, read_live};
use crate::engine::resource::deployment_tags;
use crate::kubernetes::access::ClusterRoute;
use crate::kubernetes::apply::{Applier, ApplyError};
use crate::kubernetes::{self, RenderedFile, SecretValues};
use crate::state::StateDocument;

/// The report's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Text for people; coloured when stdout is a terminal.
    Human,
    /// The versioned JSON report (provisioner/docs/drift-report.md).
    Json,
    /// A Markdown table for a pull request comment or a CI step summary.
    Markdown,
    /// JUnit XML: one test case per object, drift as failures.
    Junit,
}

/// Arguments of `drift`. Exit codes: 0 no drift, 1 error, 2 drift found.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// The report's format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Write the report to FILE instead of stdout (a one-line summary still goes to stderr).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Compare the cloud side only: do not read the in-cluster objects (like `up
    /// --skip-cluster-install`), e.g. when the cluster's API cannot be reached from here.
    #[arg(long)]
    pub skip_cluster: bool,
}

pub fn run(args: &Args, stacks_dir: &Path, output: &Output) -> miette::Result<ExitCode> {
    let runtime = deployment::runtime()?;
    let report = runtime.block_on(async {
        let deployment = deployment::open(&args.target, stacks_dir, output).await?;
        let registry = deployment::providers(&deployment)?;
        let state = deployment.backend.load().await.into_diagnostic()?;
        let state = state.unwrap_or_else(|| {
            StateDocument::new(deployment.stack_name(), deployment.instance())
        });
        if !state.pending.is_empty() {
            eprintln!(
                "note: state holds {} pending operation(s) from an interrupted run; `up` settles them",
                state.pending.len()
            );
        }
        let (mut report, _, _) = detect(&deployment, &registry, &state).await?;
        let entries = if args.skip_cluster {
            if cluster::has_objects(&deployment) {
                eprintln!("note: the in-cluster objects were not compared (--skip-cluster)");
            }
            Vec::new()
        } else {
            in_cluster(&deployment, &state).await?
        };
        for entry in entries {
            report.push(entry);
        }
        Ok::<_, miette::Report>(report)
    })?;
    let text = match args.format {
        Format::Human => {
            let color = args.out.is_none()
                && std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none();
            drift_render::human(&report, color)
        }
        Format::Json => report.to_json(),
        Format::Markdown => drift_render::markdown(&report),
        Format::Junit => drift_render::junit(&report),
    };
    match &args.out {
        Some(path) => {
            std::fs::write(path, &text)
                .into_diagnostic()
                .map_err(|e| e.wrap_err(format!("writing the report to {}", path.display())))?;
            let s = &report.summary;
            eprintln!(
                "Drift: {} in sync, {} modified, {} deleted, {} unmanaged; report written to {}",
                s.in_sync,
                s.modified,
                s.deleted,
                s.unmanaged,
                path.display()
            );
        }
        None => std::io::stdout()
            .lock()
            .write_all(text.as_bytes())
            .into_diagnostic()?,
    }
    Ok(if report.has_drift() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// Reads every recorded resource and lists the owned objects (concurrently), then compares.
/// Returns the live values and the owned objects too, for `refresh`.
pub async fn detect(
    deployment: &Deployment,
    registry: &ProviderRegistry,
    state: &StateDocument,
) -> miette::Result<(DriftReport, LiveSnapshot, Vec<OwnedObject>)> {
    let ownership = deployment_tags(deployment.stack_name(), deployment.instance());
    let (live, owned) = tokio::join!(
        read_live(state, registry, DEFAULT_PARALLELISM),
        list_owned(registry, &ownership)
    );
    let live = live.map_err(|e| miette!("{e}"))?;
    let owned = owned.map_err(|e| miette!("{e}"))?;
    let report = drift::detect(&DriftInput {
        desired: &deployment.desired,
        state,
        live: &live,
        owned: &owned,
    });
    Ok((report, live, owned))
}

/// The in-cluster objects' entries, when the stack renders any and its cluster can be reached:
/// through `cluster.kubeconfig`, or the EKS cluster state records (`drift` reads AWS anyway, so
/// it takes that route like `plan --refresh`). Otherwise a note says why they were not compared.
async fn in_cluster(
    deployment: &Deployment,
    state: &StateDocument,
) -> miette::Result<Vec<DriftEntry>> {
    if !cluster::has_objects(deployment) {
        return Ok(Vec::new());
    }
    let route = cluster::route(deployment, Some(state));
    if let ClusterRoute::Unavailable(why) = &route {
        eprintln!("note: the in-cluster objects were not compared: {why}");
        return Ok(Vec::new());
    }
    // Secrets with placeholders: they are compared by their keys, never their values.
    let files = kubernetes::render_with(
        &deployment.loaded,
        Some(&SecretValues::placeholders()),
        &kubernetes::install::cloud_outputs(Some(state)),
    )
    .map_err(|e| miette!("{e}"))?;
    let applier = cluster::applier(deployment, &route).await.map_err(|e| {
        e.wrap_err(format!(
            "reading the in-cluster objects ({})",
            cluster::SKIP_HINT_DRIFT
        ))
    })?;
    let stack = &deployment.loaded.names.qualified;
    read_cluster(&applier, &files, stack).await.map_err(|e| {
        miette!(
            "reading the in-cluster objects through {}: {e}; {}",
            route.describe(),
            cluster::SKIP_HINT_DRIFT
        )
    })
}

/// Reads every rendered object and the stack's inventory, then compares (pure, in
/// [`kubernetes::drift::entries`]).
async fn read_cluster(
    applier: &Applier,
    files: &[RenderedFile],
    stack: &str,
) -> Result<Vec<DriftEntry>, ApplyError> {
    let mut live = Vec::new();
    for object in files.iter().flat_map(|f| &f.objects) {
        live.push(applier.get(object).await?);
    }
    let inventory = applier.inventory(stack).await?;
    Ok(kubernetes::drift::entries(files, &live, &inventory, stack))
}
