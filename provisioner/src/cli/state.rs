//! `provisioner state`: inspect recorded resources and remove a stale lock.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use miette::{IntoDiagnostic, miette};

use super::Output;
use super::deployment::{self, Target};
use crate::engine::secrets::is_encrypted;

/// Arguments of `state`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: StateCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum StateCommand {
    /// List recorded resources (address, type, id), deposed objects and pending operations.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Show one recorded resource; secret values print as `(sensitive)`.
    Show {
        #[command(flatten)]
        target: Target,
        /// The resource address, e.g. `network.subnet.private[1]`.
        address: String,
    },
    /// Remove the state lock regardless of holder (after a crashed run on another host).
    Unlock {
        #[command(flatten)]
        target: Target,
    },
}

fn redact(value: &serde_json::Value) -> serde_json::Value {
    if is_encrypted(value) {
        serde_json::Value::String("(sensitive)".into())
    } else {
        value.clone()
    }
}

pub fn run(args: &Args, stacks_dir: &Path, output: &Output) -> miette::Result<ExitCode> {
    let runtime = deployment::runtime()?;
    runtime.block_on(async {
        match &args.command {
            StateCommand::List { target } => {
                let deployment = deployment::open(target, stacks_dir, output).await?;
                let Some(state) = deployment.backend.load().await.into_diagnostic()? else {
                    eprintln!("No state for {} yet.", deployment.backend.describe());
                    return Ok(ExitCode::SUCCESS);
                };
                eprintln!(
                    "{} (lineage {}, serial {})",
                    deployment.backend.describe(),
                    state.lineage,
                    state.serial
                );
                // A closed pipe (`| head`) ends the listing quietly.
                let mut out = std::io::stdout().lock();
                for record in state.resources.values() {
                    let _ = writeln!(
                        out,
                        "{}\t{}\t{}",
                        record.address, record.resource_type, record.id
                    );
                }
                for record in &state.deposed {
                    let _ = writeln!(
                        out,
                        "{}\t{}\t{}\t(deposed)",
                        record.address, record.resource_type, record.id
                    );
                }
                for pending in &state.pending {
                    let _ = writeln!(
                        out,
                        "{}\t{}\t{}\t(pending {:?} since {})",
                        pending.address,
                        pending.resource_type,
                        pending.resource_id.as_deref().unwrap_or("-"),
                        pending.kind,
                        pending.started_at.format("%Y-%m-%dT%H:%M:%SZ")
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            StateCommand::Show { target, address } => {
                let deployment = deployment::open(target, stacks_dir, output).await?;
                let state = deployment.backend.load().await.into_diagnostic()?;
                let record = state
                    .as_ref()
                    .and_then(|s| s.resources.values().find(|r| r.address.as_str() == address))
                    .ok_or_else(|| {
                        miette!(
                            "`{address}` is not in the state of {}",
                            deployment.backend.describe()
                        )
                    })?;
                let mut shown = serde_json::to_value(record).into_diagnostic()?;
                for section in ["properties", "outputs"] {
                    if let Some(map) = shown.get_mut(section).and_then(|m| m.as_object_mut()) {
                        for value in map.values_mut() {
                            *value = redact(value);
                        }
                    }
                }
                let _ = writeln!(
                    std::io::stdout(),
                    "{}",
                    serde_json::to_string_pretty(&shown).into_diagnostic()?
                );
                Ok(ExitCode::SUCCESS)
            }
            StateCommand::Unlock { target } => {
                let deployment = deployment::open(target, stacks_dir, output).await?;
                match deployment
                    .backend
                    .force_unlock()
                    .await
                    .map_err(|e| miette!("{e}"))?
                {
                    Some(holder) => eprintln!("Removed the lock held by {}.", holder.describe()),
                    None => eprintln!("{} was not locked.", deployment.backend.describe()),
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}
