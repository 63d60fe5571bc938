//! Names of the AWS resources a stack creates, with instance suffixes, and AWS's limits on them.

use super::model::Stack;

/// The instance-qualified names of a stack's named resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// `<name>` or `<name>-<instance>`: prefix of every resource name, and the state's name.
    pub qualified: String,
    /// The instance, when this is an ephemeral copy of a template.
    pub instance: Option<String>,
    /// EKS cluster name.
    pub cluster: String,
    /// RDS DB instance identifier.
    pub database: String,
    /// ElastiCache replication group id.
    pub cache: String,
}

impl Names {
    /// The names of `stack`, optionally as instance `instance`.
    pub fn new(stack: &Stack, instance: Option<&str>) -> Self {
        let suffixed = |base: &str| match instance {
            Some(i) => format!("{base}-{i}"),
            None => base.to_owned(),
        };
        let qualified = suffixed(&stack.name);
        Self {
            instance: instance.map(str::to_owned),
            cluster: suffixed(&stack.cluster.name),
            database: format!("{qualified}-postgres"),
            cache: format!("{qualified}-redis"),
            qualified,
        }
    }
}

/// Which stack field a name is made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameSource {
    /// `name:`
    StackName,
    /// `cluster.name:`
    ClusterName,
}

/// A name that breaks an AWS rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameViolation {
    /// The kind of resource, e.g. "ElastiCache replication group id".
    pub what: &'static str,
    /// The offending name.
    pub name: String,
    /// The field it comes from.
    pub source: NameSource,
    /// The rule broken.
    pub rule: String,
    /// Characters over the limit, for length violations.
    pub excess: Option<usize>,
}

/// Every AWS naming rule the names break.
pub fn violations(names: &Names, has_database: bool, has_cache: bool) -> Vec<NameViolation> {
    let mut out = Vec::new();
    check(
        &mut out,
        "EKS cluster name",
        &names.cluster,
        NameSource::ClusterName,
        100,
        Charset::Cluster,
    );
    if has_database {
        check(
            &mut out,
            "RDS DB instance identifier",
            &names.database,
            NameSource::StackName,
            63,
            Charset::LowercaseHyphen,
        );
    }
    if has_cache {
        check(
            &mut out,
            "ElastiCache replication group id",
            &names.cache,
            NameSource::StackName,
            40,
            Charset::LowercaseHyphen,
        );
    }
    out
}

enum Charset {
    /// `[0-9A-Za-z][A-Za-z0-9-_]*`
    Cluster,
    /// Lowercase letters, digits and hyphens; starts with a letter; no `--`, no trailing `-`.
    LowercaseHyphen,
}

fn check(
    out: &mut Vec<NameViolation>,
    what: &'static str,
    name: &str,
    source: NameSource,
    limit: usize,
    charset: Charset,
) {
    let length = name.chars().count();
    if length > limit {
        out.push(NameViolation {
            what,
            name: name.to_owned(),
            source,
            rule: format!("is {length} characters long; AWS allows at most {limit}"),
            excess: Some(length - limit),
        });
    }
    let charset_ok = match charset {
        Charset::Cluster => {
            name.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        }
        Charset::LowercaseHyphen => {
            name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !name.contains("--")
                && !name.ends_with('-')
        }
    };
    if !charset_ok {
        let rule = match charset {
            Charset::Cluster => {
                "must start with a letter or digit and hold only letters, digits, `-` and `_`"
            }
            Charset::LowercaseHyphen => {
                "must start with a lowercase letter and hold only lowercase letters, digits and single hyphens"
            }
        };
        out.push(NameViolation {
            what,
            name: name.to_owned(),
            source,
            rule: rule.to_owned(),
            excess: None,
        });
    }
}
