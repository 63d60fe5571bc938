//! `provisioner validate`: checks stack files and reports every error with its position.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;

use super::Output;
use crate::stack::error::{ErrorRecord, render};
use crate::stack::{self, LoadRequest, Loaded, StackSource};

/// Arguments of `validate`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["stack", "file", "all"])))]
pub struct Args {
    /// The stack to check: `<stacks-dir>/<NAME>.yaml`.
    #[arg(long, value_name = "NAME")]
    pub stack: Option<String>,
    /// A stack file anywhere.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Every stack file in the stacks directory.
    #[arg(long)]
    pub all: bool,
    /// Check the stack as this instance of a template (names carry the suffix).
    #[arg(long, value_name = "NAME", conflicts_with = "all")]
    pub instance: Option<String>,
    /// Print a JSON report on stdout instead of human output (`format_version` 1).
    #[arg(long)]
    pub json: bool,
}

/// The `--json` report.
#[derive(Debug, Serialize)]
struct Report {
    format_version: u32,
    valid: bool,
    results: Vec<FileResult>,
}

#[derive(Debug, Serialize)]
struct FileResult {
    file: String,
    valid: bool,
    #[serde(rename = "abstract")]
    is_abstract: bool,
    stack: Option<String>,
    instance: Option<String>,
    errors: Vec<ErrorRecord>,
}

/// Validates and prints; exit code 0 when every file is valid, 1 otherwise.
pub fn run(args: &Args, stacks_dir: &Path, output: &Output) -> miette::Result<ExitCode> {
    let sources: Vec<StackSource> = match (&args.stack, &args.file) {
        (Some(name), _) => vec![StackSource::Named {
            dir: stacks_dir.to_path_buf(),
            name: name.clone(),
        }],
        (None, Some(file)) => vec![StackSource::File(file.clone())],
        (None, None) => stack::available_stacks(stacks_dir)
            .into_iter()
            .map(|name| StackSource::Named {
                dir: stacks_dir.to_path_buf(),
                name,
            })
            .collect(),
    };
    if sources.is_empty() {
        return Err(miette::miette!(
            help = "pass `--stacks-dir DIR`, or run from the repository root",
            "no stack files (*.yaml) in {}",
            stacks_dir.display()
        ));
    }
    let mut results = Vec::new();
    for source in sources {
        let file = match &source {
            StackSource::Named { dir, name } => {
                dir.join(format!("{name}.yaml")).display().to_string()
            }
            StackSource::File(path) => path.display().to_string(),
        };
        let file = file.strip_prefix("./").map(str::to_owned).unwrap_or(file);
        let request = LoadRequest {
            source,
            instance: args.instance.clone(),
        };
        let result = match stack::load(&request) {
            Ok(Loaded::Deployable(loaded)) => {
                if !args.json {
                    let names = &loaded.names;
                    println!(
                        "{}: valid (stack {}, cluster {}, database {}, cache {})",
                        loaded.display_name,
                        names.qualified,
                        names.cluster,
                        names.database,
                        names.cache
                    );
                }
                FileResult {
                    file,
                    valid: true,
                    is_abstract: false,
                    stack: Some(loaded.names.qualified.clone()),
                    instance: args.instance.clone(),
                    errors: vec![],
                }
            }
            Ok(Loaded::Abstract { display_name }) => {
                if !args.json {
                    println!("{display_name}: valid (abstract: shared defaults for other stacks)");
                }
                FileResult {
                    file,
                    valid: true,
                    is_abstract: true,
                    stack: None,
                    instance: None,
                    errors: vec![],
                }
            }
            Err(errors) => {
                if !args.json {
                    eprint!("{}", render(&errors, output.color, output.width));
                }
                FileResult {
                    file,
                    valid: false,
                    is_abstract: false,
                    stack: None,
                    instance: args.instance.clone(),
                    errors: errors.to_json(),
                }
            }
        };
        results.push(result);
    }
    let valid = results.iter().all(|r| r.valid);
    if args.json {
        let report = Report {
            format_version: 1,
            valid,
            results,
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report serializes")
        );
    }
    Ok(if valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
