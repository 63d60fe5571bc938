//! `provisioner policy check` and `provisioner policy test`: the Rego guardrails in `policies/`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;

use super::Output;
use crate::engine::plan::Plan;
use crate::policy::{self, PolicyError, PolicyInput, PolicySet, render};
use crate::stack::error::render as render_stack_errors;
use crate::stack::{self, LoadRequest, LoadedStack, StackSource};

/// Arguments of `policy`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory holding the Rego policies (`*.rego`) and their tests (`*_test.rego`).
    #[arg(
        long,
        global = true,
        default_value = policy::DEFAULT_POLICIES_DIR,
        env = "STACKSMITH_POLICIES_DIR",
        value_name = "DIR"
    )]
    pub policies_dir: PathBuf,

    #[command(subcommand)]
    pub command: PolicyCommand,
}

/// The `policy` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Check a stack's plan against every policy. Without `--plan`, the stack is checked as if it
    /// were created from nothing (no state is read). Exit 0 when no `deny` holds, 1 on a deny or
    /// an error; warnings are printed and do not fail.
    Check(CheckArgs),
    /// Run the `test_*` rules of `<policies-dir>/*_test.rego` and report each. Exit 1 when one
    /// fails.
    Test(TestArgs),
}

/// Arguments of `policy check`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["stack", "file"])))]
pub struct CheckArgs {
    /// The stack: `<stacks-dir>/<NAME>.yaml`.
    #[arg(long, value_name = "NAME")]
    pub stack: Option<String>,
    /// A stack file anywhere.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Check the stack as this instance of a template.
    #[arg(long, value_name = "NAME")]
    pub instance: Option<String>,
    /// A saved plan (plan JSON, `format_version` 1) to check instead of planning from nothing.
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// Print the report as JSON on stdout (`format_version` 1).
    #[arg(long)]
    pub json: bool,
    /// Print the policy input document (JSON) instead of checking it, to write and debug
    /// policies. Secrets are never in it.
    #[arg(long, conflicts_with = "json")]
    pub print_input: bool,
}

/// Arguments of `policy test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Print the results as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs `policy check` or `policy test`.
pub fn run(args: &Args, stacks_dir: &Path, output: &Output) -> miette::Result<ExitCode> {
    match &args.command {
        PolicyCommand::Check(check) => run_check(check, &args.policies_dir, stacks_dir, output),
        PolicyCommand::Test(test) => run_test(test, &args.policies_dir),
    }
}

/// A policy error as a miette report; Rego errors keep the engine's `file:line:col` and source
/// excerpt.
pub fn diagnostic(error: PolicyError) -> miette::Report {
    match &error {
        PolicyError::Rego { detail, .. } => {
            miette::miette!(help = detail.clone(), "policy error: {error}")
        }
        PolicyError::Denied { report } => miette::miette!(
            help = format!(
                "{}fix the stack (each message names the key to change)",
                render::human(report)
            ),
            "{error}"
        ),
        _ => miette::miette!("policy error: {error}"),
    }
}

fn load_stack(
    args: &CheckArgs,
    stacks_dir: &Path,
    output: &Output,
) -> Result<LoadedStack, ExitCode> {
    let source = match (&args.stack, &args.file) {
        (Some(name), _) => StackSource::Named {
            dir: stacks_dir.to_path_buf(),
            name: name.clone(),
        },
        (None, Some(file)) => StackSource::File(file.clone()),
        (None, None) => unreachable!("clap requires --stack or --file"),
    };
    let request = LoadRequest {
        source,
        instance: args.instance.clone(),
    };
    match stack::load(&request).and_then(stack::Loaded::into_deployable) {
        Ok(loaded) => Ok(loaded),
        Err(errors) => {
            eprint!(
                "{}",
                render_stack_errors(&errors, output.color, output.width)
            );
            Err(ExitCode::FAILURE)
        }
    }
}

/// The plan to check: the saved one, or a plan from no state (every resource created).
fn plan_for(args: &CheckArgs, loaded: &LoadedStack) -> miette::Result<Plan> {
    if let Some(path) = &args.plan {
        let text = std::fs::read_to_string(path)
            .map_err(|e| miette::miette!("cannot read plan file {}: {e}", path.display()))?;
        let plan = Plan::from_json(&text)
            .map_err(|e| miette::miette!("plan file {}: {e}", path.display()))?;
        if plan.stack != loaded.stack.name || plan.instance != loaded.names.instance {
            return Err(miette::miette!(
                help = "pass the --stack and --instance the plan was made for",
                "plan file {} is for stack `{}`{}, not `{}`{}",
                path.display(),
                plan.stack,
                plan.instance
                    .as_deref()
                    .map(|i| format!(" instance `{i}`"))
                    .unwrap_or_default(),
                loaded.stack.name,
                loaded
                    .names
                    .instance
                    .as_deref()
                    .map(|i| format!(" instance `{i}`"))
                    .unwrap_or_default(),
            ));
        }
        return Ok(plan);
    }
    policy::plan_from_nothing(loaded).map_err(diagnostic)
}

fn run_check(
    args: &CheckArgs,
    policies_dir: &Path,
    stacks_dir: &Path,
    output: &Output,
) -> miette::Result<ExitCode> {
    let loaded = match load_stack(args, stacks_dir, output) {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let plan = plan_for(args, &loaded)?;
    let input = PolicyInput::from_plan(&loaded, &plan);
    if args.print_input {
        println!(
            "{}",
            serde_json::to_string_pretty(&input).expect("the policy input serializes")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let policies = PolicySet::load(policies_dir, false).map_err(diagnostic)?;
    let report = policy::check_input(&policies, &loaded, &input).map_err(diagnostic)?;
    if args.json {
        print!("{}", render::json(&report));
    } else {
        print!("{}", render::human(&report));
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[derive(Debug, Serialize)]
struct TestReport {
    format_version: u32,
    passed: usize,
    failed: usize,
    tests: Vec<policy::TestOutcome>,
}

fn run_test(args: &TestArgs, policies_dir: &Path) -> miette::Result<ExitCode> {
    let policies = PolicySet::load(policies_dir, true).map_err(diagnostic)?;
    let tests = policies.run_tests();
    if tests.is_empty() {
        return Err(miette::miette!(
            help = "tests are `test_*` rules, starting a line, in `*_test.rego` files",
            "no policy tests in {}",
            policies_dir.display()
        ));
    }
    let failed = tests.iter().filter(|t| !t.passed).count();
    if args.json {
        let report = TestReport {
            format_version: 1,
            passed: tests.len() - failed,
            failed,
            tests,
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the test report serializes")
        );
    } else {
        for test in &tests {
            match &test.failure {
                None => println!("PASS  {} ({})", test.rule, test.file),
                Some(failure) => println!("FAIL  {} ({}): {failure}", test.rule, test.file),
            }
        }
        println!("{} passed, {failed} failed", tests.len() - failed);
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
