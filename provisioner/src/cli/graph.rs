//! `provisioner graph`: the resource graph as Graphviz DOT, critical path in bold red.

use std::path::Path;
use std::process::ExitCode;

use miette::miette;

use super::Output;
use super::deployment::{self, Target};
use crate::engine::graph::ResourceGraph;
use crate::engine::types::TypeCatalog;

/// Arguments of `graph`. Render with `provisioner graph --stack NAME | dot -Tsvg > graph.svg`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
}

pub fn run(args: &Args, stacks_dir: &Path, output: &Output) -> miette::Result<ExitCode> {
    let loaded = deployment::load_stack(&args.target, stacks_dir, output)?;
    let desired = crate::engine::desired::derive(&loaded);
    let graph = ResourceGraph::build(&desired).map_err(|e| miette!("{e}"))?;
    print!("{}", graph.to_dot(&desired, &TypeCatalog::builtin()));
    Ok(ExitCode::SUCCESS)
}
