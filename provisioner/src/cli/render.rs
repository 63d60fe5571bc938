//! `provisioner render`: the in-cluster objects as YAML files, for GitOps users.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use miette::{IntoDiagnostic, WrapErr};
use serde::Serialize;

use crate::kubernetes;
use crate::stack::{self, LoadRequest, StackSource};

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
    let files = kubernetes::render(&loaded, None)
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
        std::fs::write(&path, file.to_yaml())
            .into_diagnostic()
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
        println!("secrets (database and Redis URLs, API keys) are never written to files");
    }
    Ok(ExitCode::SUCCESS)
}
