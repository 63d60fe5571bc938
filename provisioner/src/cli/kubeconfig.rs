//! `provisioner kubeconfig`: a kubeconfig for the deployment's EKS cluster: its endpoint and CA
//! from state, and a user whose credentials come from `provisioner token` (an exec credential
//! plugin, so kubectl gets a fresh token whenever the last one expires). Written as JSON, which
//! is YAML too; to stdout, or to `--out FILE` with mode 0600.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use miette::{IntoDiagnostic, WrapErr, miette};

use super::Output;
use super::deployment::{self, Target};
use crate::kubernetes::access;

/// Arguments of `kubeconfig`. Exit codes: 0 written, 1 error (nothing deployed, no endpoint).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// Write the kubeconfig to FILE (mode 0600, replaced when it exists) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub fn run(args: &Args, stacks_dir: &Path, output: &Output) -> miette::Result<ExitCode> {
    let runtime = deployment::runtime()?;
    let text = runtime.block_on(async {
        let deployment = deployment::open(&args.target, stacks_dir, output).await?;
        let state = deployment.backend.load().await.into_diagnostic()?;
        let state = state.ok_or_else(|| {
            miette!(
                help = "run `provisioner up` first",
                "nothing is deployed: {} records no resources",
                deployment.backend.describe()
            )
        })?;
        let cluster = access::eks_cluster(&state).map_err(|e| miette!("{e}"))?;
        // kubectl runs the exec plugin from its own working directory: name the binary and the
        // stacks directory absolutely.
        let program = std::env::current_exe().into_diagnostic()?;
        let stacks_dir = std::path::absolute(stacks_dir).into_diagnostic()?;
        let user = access::exec_user(
            &program,
            Some(&stacks_dir),
            &args.target.stack,
            args.target.instance.as_deref(),
        );
        let kubeconfig = access::eks_kubeconfig(&cluster, user);
        let mut text = serde_json::to_string_pretty(&kubeconfig).into_diagnostic()?;
        text.push('\n');
        Ok::<_, miette::Report>(text)
    })?;
    match &args.out {
        Some(path) => {
            write_private(path, &text).wrap_err_with(|| format!("writing {}", path.display()))?;
            eprintln!("Wrote the kubeconfig to {}.", path.display());
        }
        None => {
            std::io::stdout()
                .lock()
                .write_all(text.as_bytes())
                .into_diagnostic()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `text` to `path` readable by its owner only (also when the file existed).
fn write_private(path: &Path, text: &str) -> miette::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .into_diagnostic()?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .into_diagnostic()?;
    file.write_all(text.as_bytes()).into_diagnostic()
}
