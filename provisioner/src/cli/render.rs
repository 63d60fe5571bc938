//! `provisioner render`: the in-cluster objects as YAML files, for GitOps users.
//!
//! Secrets are left out unless `--include-secrets` is given. With it, the Secrets get the values
//! `up` applies (the database password and cache token decrypted from the deployment's state,
//! the API keys derived from the state key), or, when nothing is deployed yet, placeholders that
//! say so ([`kubernetes::SecretValues::placeholders`]). The Secrets file is written with mode
//! 0600; values are never printed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use miette::{IntoDiagnostic, WrapErr, miette};
use serde::Serialize;

use super::deployment;
use crate::engine::secrets::STATE_KEY_VAR;
use crate::kubernetes::{self, SecretValues, install};
use crate::stack::{self, LoadRequest, LoadedStack, StackSource};

/// Arguments of `render`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The stack: `<stacks-dir>/<NAME>.yaml`.
    #[arg(long, value_name = "NAME")]
    pub stack: String,
    /// Render the stack as this instance of a template.
    #[arg(long, value_name = "NAME")]
    pub instance: Option<String>,
    /// Directory to write the files into (created when missing; files of the same names are
    /// replaced).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Print what was written as JSON (`format_version` 1).
    #[arg(long)]
    pub json: bool,
    /// Also write the Secrets (database and Redis URLs, API keys) with the deployment's values
    /// from state, or placeholders when nothing is deployed. The file is mode 0600.
    #[arg(long)]
    pub include_secrets: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    format_version: u32,
    stack: String,
    files: Vec<FileReport>,
}

#[derive(Debug, Serialize)]
struct FileReport {
    path: String,
    objects: Vec<String>,
}

/// Renders and writes the files.
pub fn run(args: &Args, stacks_dir: &Path) -> miette::Result<ExitCode> {
    let request = LoadRequest {
        source: StackSource::Named {
            dir: stacks_dir.to_path_buf(),
            name: args.stack.clone(),
        },
        instance: args.instance.clone(),
    };
    let loaded = match stack::load(&request).and_then(stack::Loaded::into_deployable) {
        Ok(loaded) => loaded,
        Err(errors) => {
            let output = super::Output::from_environment();
            eprint!(
                "{}",
                stack::error::render(&errors, output.color, output.width)
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    let (secrets, outputs) = if args.include_secrets {
        let (secrets, outputs, source) = secret_values(loaded.clone())?;
        eprintln!("{source}");
        (Some(secrets), outputs)
    } else {
        (None, kubernetes::CloudOutputs::default())
    };
    let files = kubernetes::render_with(&loaded, secrets.as_ref(), &outputs)
        .into_diagnostic()
        .wrap_err("rendering the manifests")?;
    std::fs::create_dir_all(&args.out)
        .into_diagnostic()
        .wrap_err_with(|| format!("creating {}", args.out.display()))?;
    let mut report = Report {
        format_version: 1,
        stack: loaded.names.qualified.clone(),
        files: Vec::new(),
    };
    for file in &files {
        let path = args.out.join(&file.file_name);
        let has_secrets = file.objects.iter().any(|o| o.kind == "Secret");
        write_file(&path, &file.to_yaml(), has_secrets)
            .wrap_err_with(|| format!("writing {}", path.display()))?;
        report.files.push(FileReport {
            path: path.display().to_string(),
            objects: file
                .objects
                .iter()
                .map(kubernetes::RenderedObject::reference)
                .collect(),
        });
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report serializes")
        );
    } else {
        let count: usize = report.files.iter().map(|f| f.objects.len()).sum();
        println!(
            "wrote {count} objects of stack {} in {} files to {}",
            report.stack,
            report.files.len(),
            args.out.display()
        );
        if !args.include_secrets {
            println!(
                "secrets (database and Redis URLs, API keys) were not written; \
                 --include-secrets writes them (and the Cluster Autoscaler's role ARN from state)"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The Secrets' values and a sentence saying where they come from: the deployment's state when
/// it records resources, placeholders otherwise.
fn secret_values(
    loaded: LoadedStack,
) -> miette::Result<(SecretValues, kubernetes::CloudOutputs, String)> {
    let runtime = deployment::runtime()?;
    runtime.block_on(async {
        let deployment = deployment::connect(loaded).await?;
        let state = deployment.backend.load().await.into_diagnostic()?;
        let Some(state) = state.filter(|s| !s.resources.is_empty()) else {
            return Ok((
                SecretValues::placeholders(),
                kubernetes::CloudOutputs::default(),
                format!(
                    "note: {} records no resources: the Secrets hold placeholders (`up` applies \
                     the real values)",
                    deployment.backend.describe()
                ),
            ));
        };
        // Never create a key file here: a new key could not open what is in state.
        let from_environment = std::env::var(STATE_KEY_VAR).is_ok_and(|v| !v.is_empty());
        if !from_environment && !deployment.key_file.exists() {
            return Err(miette!(
                help = format!("set {STATE_KEY_VAR} to the key `up` used"),
                "cannot decrypt the secrets in state: no {STATE_KEY_VAR} and no key file at {}",
                deployment.key_file.display()
            ));
        }
        let cipher = deployment.cipher()?;
        let secrets = install::secret_values(&deployment.loaded, &state, &cipher)
            .map_err(|e| miette!("{e}"))?;
        Ok((
            secrets,
            install::cloud_outputs(Some(&state)),
            format!(
                "The Secrets hold the deployment's values from {}.",
                deployment.backend.describe()
            ),
        ))
    })
}

/// Writes a manifest file; one holding Secrets is readable by its owner only.
fn write_file(path: &Path, text: &str, private: bool) -> miette::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mode = if private { 0o600 } else { 0o644 };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .into_diagnostic()?;
    if private {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .into_diagnostic()?;
    }
    file.write_all(text.as_bytes()).into_diagnostic()
}
