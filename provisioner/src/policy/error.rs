//! Errors of loading and evaluating policies.

use std::path::PathBuf;

/// A place in a policy file, 1-based.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RegoLocation {
    pub file: String,
    pub line: u32,
    pub column: u32,
}

impl std::fmt::Display for RegoLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Why policies could not be checked. Any of these blocks `up` just like a deny.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the policies directory {}: {source}", path.display())]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read policy file {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no policy files (*.rego) in {}", path.display())]
    NoPolicies { path: PathBuf },
    /// A syntax error, or an error while evaluating, reported by the Rego engine. `location` is
    /// where the engine points (file, line, column), when it does.
    #[error("{}{summary}", location.as_ref().map(|l| format!("{l}: ")).unwrap_or_default())]
    Rego {
        location: Option<RegoLocation>,
        /// The first line of the engine's message.
        summary: String,
        /// The engine's full message, with the offending source line.
        detail: String,
    },
    #[error("rule {rule} produced {found}, expected a set of strings or of objects with `msg`")]
    BadRuleValue { rule: String, found: String },
    /// The stack could not be planned (from no state) to be checked.
    #[error("cannot plan the stack to check it: {0}")]
    Plan(#[from] crate::engine::planner::PlanError),
    /// [`super::enforce`] found denies: `up` must not proceed.
    #[error("refusing to apply: {} policy violation(s) in {}", report.denies().count(), report.stack)]
    Denied { report: Box<super::PolicyReport> },
}

impl PolicyError {
    /// Wraps an error of the Rego engine, extracting the `--> file:line:col` it points at.
    pub(crate) fn rego(error: impl std::fmt::Display) -> Self {
        let detail = format!("{error:#}");
        let location = parse_location(&detail);
        let summary = detail
            .lines()
            .rev()
            .find(|line| !line.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_owned();
        Self::Rego {
            location,
            summary,
            detail: detail.trim().to_owned(),
        }
    }
}

/// The first `--> file:line:col` in a regorus message.
fn parse_location(message: &str) -> Option<RegoLocation> {
    let start = message.find("--> ")? + 4;
    let rest = message[start..].lines().next()?.trim();
    let mut parts = rest.rsplitn(3, ':');
    let column = parts.next()?.parse().ok()?;
    let line = parts.next()?.parse().ok()?;
    let file = parts.next()?.to_owned();
    Some(RegoLocation { file, line, column })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_location_of_a_regorus_message_is_extracted() {
        let message = "\n--> policies/x.rego:3:7\n  |\n3 | deny contains msg if {\n  |       ^\nerror: unexpected token";
        assert_eq!(
            parse_location(message),
            Some(RegoLocation {
                file: "policies/x.rego".into(),
                line: 3,
                column: 7
            })
        );
        assert_eq!(parse_location("no location here"), None);
    }
}
