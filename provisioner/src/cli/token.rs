//! `provisioner token`: a bearer token for the stack's EKS cluster, printed as a
//! `client.authentication.k8s.io/v1beta1` ExecCredential (what kubectl reads from the exec user
//! `provisioner kubeconfig` writes). Made like `aws eks get-token` (see
//! [`crate::kubernetes::eks_auth`]) with the stack's region and profile or the standard AWS
//! credential chain. Reads the stack file only, not state: kubectl runs it from any directory
//! (with its own environment, so the stack's `${env:...}` values must be set there, as for any
//! verb).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use miette::{IntoDiagnostic, miette};

use super::Output;
use super::deployment::{self, Target};
use crate::aws::AwsTarget;
use crate::kubernetes::eks_auth;

/// Arguments of `token`. Exit codes: 0 printed, 1 error (no credentials, invalid stack).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
}

pub fn run(args: &Args, stacks_dir: &Path, output: &Output) -> miette::Result<ExitCode> {
    let loaded = deployment::load_stack(&args.target, stacks_dir, output)?;
    let aws = AwsTarget::from_stack(&loaded.stack);
    let runtime = deployment::runtime()?;
    let token = runtime
        .block_on(eks_auth::token(&aws, &loaded.names.cluster))
        .map_err(|e| {
            miette!(
                help = "configure AWS credentials (environment, profile or SSO) as for the AWS CLI",
                "cannot make a token for EKS cluster {}: {e}",
                loaded.names.cluster
            )
        })?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", token.exec_credential()).into_diagnostic()?;
    Ok(ExitCode::SUCCESS)
}
