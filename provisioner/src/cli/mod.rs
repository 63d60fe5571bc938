//! The `provisioner` command line: one module per verb, each with its `Args` and `run`.

mod apply_plan;
mod cluster;
mod deployment;
mod down;
mod drift;
mod gc;
mod graph;
mod instances;
mod kubeconfig;
mod output;
mod output_verb;
mod plan;
mod policy;
mod progress;
mod refresh;
mod render;
mod schema;
mod state;
mod token;
mod up;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use output::Output;

/// Stands up a Stacksmith platform (AWS network, IAM, EKS, RDS, ElastiCache and the in-cluster
/// control plane) from a declarative stack file in `stacks/<name>.yaml`.
///
/// Exit codes: 0 success, 1 error; verbs that report changes or drift document a 2.
#[derive(Debug, Parser)]
#[command(name = "provisioner", version, about, long_about = None, max_term_width = 100)]
pub struct Cli {
    /// Directory holding the stack files.
    #[arg(
        long,
        global = true,
        default_value = "stacks",
        env = "STACKSMITH_STACKS_DIR",
        value_name = "DIR"
    )]
    pub stacks_dir: PathBuf,

    /// The verb.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check stack files: unknown keys, types, CIDRs, scaling bounds, names after instance suffixes.
    /// Every error is reported with file, line and column. Exit 0 when valid, 1 otherwise.
    Validate(validate::Args),
    /// Print the JSON Schema of stack files (committed as stacks/stack.schema.json).
    Schema(schema::Args),
    /// Write the in-cluster objects (baseline and control plane) as YAML files for GitOps.
    /// Secrets only with --include-secrets (never printed).
    Render(render::Args),
    /// Show what `up` would change. Exit codes with --detailed-exitcode: 0 no changes, 1 error,
    /// 2 changes present.
    Plan(plan::Args),
    /// Settle interrupted operations, read the recorded resources back (drift is converged),
    /// plan, confirm and apply. Exit 0 applied, 1 failed.
    Up(up::Args),
    /// Print the deployment's cluster endpoint and CA, database and cache endpoints, from state
    /// only; secrets only with --show-secrets.
    Output(output_verb::Args),
    /// Delete everything the deployment's state records, dependents first. Exit 0 deleted, 1
    /// failed or refused.
    Down(down::Args),
    /// List the instances of a template stack (`up --instance NAME`) with their age and expiry
    /// (`stacksmith:expires-at`, the creation time plus the stack's `instances.ttl`).
    Instances(instances::Args),
    /// Tear down the expired instances of a template stack, concurrently; unexpired ones are
    /// never touched. Exit 0 all expired ones torn down (or none, or --dry-run), 1 otherwise.
    Gc(gc::Args),
    /// Report what changed behind the stack's back: per resource in sync, modified (expected and
    /// actual values), deleted, and unmanaged objects carrying the stack's ownership tags. Exit 0
    /// no drift, 1 error, 2 drift.
    Drift(drift::Args),
    /// Accept the live values of the deployment's resources into state (deleted ones are
    /// forgotten, so `up` creates them again). Never changes the stack file or the cloud.
    Refresh(refresh::Args),
    /// Print a bearer token for the stack's EKS cluster as a client.authentication.k8s.io/v1beta1
    /// ExecCredential (made like `aws eks get-token`; what `kubeconfig`'s user runs).
    Token(token::Args),
    /// Write a kubeconfig for the deployment's EKS cluster (endpoint and CA from state) whose user
    /// runs `provisioner token`; to stdout or `--out FILE` (mode 0600).
    Kubeconfig(kubeconfig::Args),
    /// Print the resource graph as Graphviz DOT with the critical path marked.
    Graph(graph::Args),
    /// Inspect state (`list`, `show ADDR`) or remove a stale lock (`unlock`).
    State(state::Args),
    /// Policy as code: check a stack's plan against the Rego guardrails in `policies/`
    /// (`policy check`) or run the policies' own tests (`policy test`).
    Policy(policy::Args),
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Diagnostics (raw AWS answers, the SDK's own logs) only when asked for with RUST_LOG.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let output = Output::from_environment();
    let result = match cli.command {
        Command::Validate(args) => validate::run(&args, &cli.stacks_dir, &output),
        Command::Schema(args) => schema::run(&args),
        Command::Render(args) => render::run(&args, &cli.stacks_dir),
        Command::Plan(args) => plan::run(&args, &cli.stacks_dir, &output),
        Command::Up(args) => up::run(&args, &cli.stacks_dir, &output),
        Command::Output(args) => output_verb::run(&args, &cli.stacks_dir, &output),
        Command::Down(args) => down::run(&args, &cli.stacks_dir, &output),
        Command::Instances(args) => instances::run(&args, &cli.stacks_dir, &output),
        Command::Gc(args) => gc::run(&args, &cli.stacks_dir, &output),
        Command::Drift(args) => drift::run(&args, &cli.stacks_dir, &output),
        Command::Refresh(args) => refresh::run(&args, &cli.stacks_dir, &output),
        Command::Token(args) => token::run(&args, &cli.stacks_dir, &output),
        Command::Kubeconfig(args) => kubeconfig::run(&args, &cli.stacks_dir, &output),
        Command::Graph(args) => graph::run(&args, &cli.stacks_dir, &output),
        Command::State(args) => state::run(&args, &cli.stacks_dir, &output),
        Command::Policy(args) => policy::run(&args, &cli.stacks_dir, &output),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            output.report(&error);
            ExitCode::FAILURE
        }
    }
}
