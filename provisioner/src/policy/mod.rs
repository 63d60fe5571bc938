//! Policy as code: the Rego guardrails in `policies/` are evaluated against every plan.
//!
//! [`input`] builds the versioned input document from a plan and its stack; [`evaluate`] loads the
//! policies with `regorus` and collects the messages of their `deny` and `warn` rules (and runs
//! the `test_*` rules of `*_test.rego`); [`render`] turns a [`PolicyReport`] into text or JSON.
//! `plan` shows denies and warnings, `up` refuses to start while any `deny` holds. The check
//! reads only the policy files: no network IO.

pub mod error;
pub mod evaluate;
pub mod input;
pub mod render;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use error::{PolicyError, RegoLocation};
pub use evaluate::{Finding, PolicySet, Severity, TestOutcome};
pub use input::{INPUT_FORMAT_VERSION, PolicyInput};

use crate::engine::plan::Plan;
use crate::engine::planner::{self, PlanInput};
use crate::engine::types::TypeCatalog;
use crate::stack::LoadedStack;

/// The default policies directory, relative to the working directory (the repository root).
pub const DEFAULT_POLICIES_DIR: &str = "policies";

/// The environment variable naming the policies directory (default [`DEFAULT_POLICIES_DIR`]).
pub const POLICIES_DIR_VAR: &str = "STACKSMITH_POLICIES_DIR";

/// The policies directory `plan` and `up` use: `STACKSMITH_POLICIES_DIR`, else `policies` in the
/// working directory. A missing directory is an error: guardrails fail closed.
pub fn policies_dir() -> PathBuf {
    std::env::var_os(POLICIES_DIR_VAR)
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_POLICIES_DIR), PathBuf::from)
}

/// The outcome of checking one plan.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyReport {
    pub format_version: u32,
    /// The stack's display name (its file).
    pub stack: String,
    pub instance: Option<String>,
    /// The policy packages evaluated.
    pub packages: Vec<String>,
    /// Denies first, then warnings; each sorted by address.
    pub findings: Vec<Finding>,
}

impl PolicyReport {
    /// Whether no `deny` holds: `up` may proceed.
    pub fn passed(&self) -> bool {
        self.denies().next().is_none()
    }

    pub fn denies(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Deny)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Warn)
    }
}

/// Checks `plan` of `loaded` against the policies in `policies_dir`. A deny is reported in the
/// returned report (`passed() == false`); an unreadable directory or a Rego error is an `Err`.
/// Both must stop `up`.
pub fn check_plan(
    policies_dir: &Path,
    loaded: &LoadedStack,
    plan: &Plan,
) -> Result<PolicyReport, PolicyError> {
    let policies = PolicySet::load(policies_dir, false)?;
    let input = PolicyInput::from_plan(loaded, plan);
    check_input(&policies, loaded, &input)
}

/// Evaluates already loaded policies against an input document.
pub fn check_input(
    policies: &PolicySet,
    loaded: &LoadedStack,
    input: &PolicyInput,
) -> Result<PolicyReport, PolicyError> {
    let findings = policies.evaluate(&input.to_value())?;
    Ok(PolicyReport {
        format_version: 1,
        stack: loaded.display_name.clone(),
        instance: loaded.names.instance.clone(),
        packages: policies.packages().to_vec(),
        findings,
    })
}

/// The plan that creates the whole stack from nothing: no state is read, no provider is called.
/// Guardrails judge the properties a stack asks for, so this plan is enough to refuse an unsafe
/// stack before `up` touches state or the cloud.
pub fn plan_from_nothing(loaded: &LoadedStack) -> Result<Plan, PolicyError> {
    let desired = crate::engine::desired::derive(loaded);
    Ok(planner::plan(&PlanInput {
        desired: &desired,
        state: None,
        live: None,
        catalog: &TypeCatalog::builtin(),
    })?)
}

/// `up`'s gate. Checks `plan` (or, with `None`, [`plan_from_nothing`]) and returns the report
/// when no deny holds (it may hold warnings to print), or [`PolicyError::Denied`] with the report.
/// Any error must stop `up` too.
pub fn enforce(
    policies_dir: &Path,
    loaded: &LoadedStack,
    plan: Option<&Plan>,
) -> Result<PolicyReport, PolicyError> {
    let report = match plan {
        Some(plan) => check_plan(policies_dir, loaded, plan)?,
        None => check_plan(policies_dir, loaded, &plan_from_nothing(loaded)?)?,
    };
    if report.passed() {
        Ok(report)
    } else {
        Err(PolicyError::Denied {
            report: Box::new(report),
        })
    }
}
