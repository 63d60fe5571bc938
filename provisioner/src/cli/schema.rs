//! `provisioner schema`: the JSON Schema of stack files.

use std::process::ExitCode;

use crate::stack::schema::json_schema_text;

/// Arguments of `schema`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Prints the schema to stdout.
pub fn run(_args: &Args) -> miette::Result<ExitCode> {
    print!("{}", json_schema_text());
    Ok(ExitCode::SUCCESS)
}
