//! The string formats of the stack schema (`"format": "ipv4-cidr"`, ...): their checks, and how an
//! error explains them.

/// A format: its name in the schema, its check, what it is and an example of a good value.
pub struct Format {
    /// Name used in the schema's `format` keyword.
    pub name: &'static str,
    /// Whether a string has this format.
    pub check: fn(&str) -> bool,
    /// What a value of this format is, for error messages.
    pub description: &'static str,
    /// A good value.
    pub example: &'static str,
}

/// Every format the stack schema uses.
pub const FORMATS: &[Format] = &[
    Format {
        name: "ipv4-cidr",
        check: is_cidr,
        description: "an IPv4 CIDR block",
        example: "10.0.1.0/24",
    },
    Format {
        name: "duration",
        check: is_duration,
        description: "a duration",
        example: "5m",
    },
    Format {
        name: "stack-name",
        check: is_stack_name,
        description: "a name of lowercase letters, digits and single hyphens, starting with a letter",
        example: "staging",
    },
    Format {
        name: "aws-region",
        check: is_region,
        description: "an AWS region",
        example: "us-west-2",
    },
    Format {
        name: "kubernetes-version",
        check: is_major_minor,
        description: "a Kubernetes version as MAJOR.MINOR in quotes",
        example: "\"1.31\"",
    },
    Format {
        name: "engine-version",
        check: is_engine_version,
        description: "an engine version such as MAJOR.MINOR, in quotes",
        example: "\"16.4\"",
    },
    Format {
        name: "rds-instance-class",
        check: is_rds_class,
        description: "an RDS instance class",
        example: "db.r6g.large",
    },
    Format {
        name: "cache-node-type",
        check: is_cache_node_type,
        description: "an ElastiCache node type",
        example: "cache.r6g.large",
    },
    Format {
        name: "http-url",
        check: is_http_url,
        description: "an http:// or https:// URL",
        example: "http://127.0.0.1:5000",
    },
    Format {
        name: "container-image",
        check: is_container_image,
        description: "a container image reference",
        example: "ghcr.io/acme/stacksmith-controlplane:1.0.0",
    },
    Format {
        name: "iam-principal-arn",
        check: is_iam_principal_arn,
        description: "the ARN of an IAM role or user",
        example: "arn:aws:iam::123456789012:role/platform-admins",
    },
    Format {
        name: "kubernetes-quantity",
        check: is_quantity,
        description: "a Kubernetes quantity",
        example: "512Mi",
    },
];

/// `arn:<partition>:iam::<12 digits>:role/<path/name>` or `...:user/<path/name>`.
fn is_iam_principal_arn(text: &str) -> bool {
    let mut parts = text.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let name = resource
        .strip_prefix("role/")
        .or_else(|| resource.strip_prefix("user/"));
    ["aws", "aws-cn", "aws-us-gov"].contains(&partition)
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && name.is_some_and(|n| {
            !n.is_empty()
                && !n.ends_with('/')
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-/".contains(c))
        })
}

/// The format named `name`.
pub fn find(name: &str) -> Option<&'static Format> {
    FORMATS.iter().find(|f| f.name == name)
}

/// Why a string is not a valid CIDR block, or `None` when it is one.
pub fn cidr_problem(text: &str) -> Option<String> {
    match text.parse::<ipnet::Ipv4Net>() {
        Err(_) => {
            let Some((address, prefix)) = text.split_once('/') else {
                return Some(format!(
                    "`{text}` has no prefix length; write it as ADDRESS/LENGTH, e.g. `{text}/24`"
                ));
            };
            if address.parse::<std::net::Ipv4Addr>().is_err() {
                return Some(format!(
                    "`{address}` is not an IPv4 address (four numbers 0-255 separated by dots)"
                ));
            }
            match prefix.parse::<u8>() {
                Ok(p) if p > 32 => Some(format!("the prefix length /{p} is over 32")),
                _ => Some(format!(
                    "`/{prefix}` is not a prefix length between 0 and 32"
                )),
            }
        }
        Ok(net) if net.addr() != net.network() => Some(format!(
            "`{text}` has host bits set: the network is `{}`",
            net.trunc()
        )),
        Ok(_) => None,
    }
}

fn is_cidr(text: &str) -> bool {
    cidr_problem(text).is_none()
}

fn is_duration(text: &str) -> bool {
    humantime::parse_duration(text).is_ok()
}

fn is_stack_name(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.first().is_some_and(u8::is_ascii_lowercase)
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && !text.ends_with('-')
        && !text.contains("--")
}

fn is_region(text: &str) -> bool {
    // e.g. us-west-2, eu-central-1, us-gov-west-1, ap-southeast-4
    let parts: Vec<&str> = text.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].parse::<u8>().is_ok()
}

fn numbers(text: &str) -> Option<Vec<u32>> {
    text.split('.')
        .map(|p| {
            if p.is_empty() || p.len() > 4 {
                None
            } else {
                p.parse().ok()
            }
        })
        .collect()
}

fn is_major_minor(text: &str) -> bool {
    numbers(text).is_some_and(|n| n.len() == 2)
}

fn is_engine_version(text: &str) -> bool {
    numbers(text).is_some_and(|n| (1..=3).contains(&n.len()))
}

fn is_instance_type_like(text: &str, prefix: &str) -> bool {
    text.strip_prefix(prefix).is_some_and(|rest| {
        let parts: Vec<&str> = rest.split('.').collect();
        parts.len() == 2
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    })
}

fn is_rds_class(text: &str) -> bool {
    is_instance_type_like(text, "db.")
}

fn is_cache_node_type(text: &str) -> bool {
    is_instance_type_like(text, "cache.")
}

fn is_http_url(text: &str) -> bool {
    ["http://", "https://"].iter().any(|scheme| {
        text.strip_prefix(scheme)
            .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace))
    })
}

fn is_container_image(text: &str) -> bool {
    !text.is_empty() && !text.contains(char::is_whitespace) && !text.ends_with([':', '@', '/'])
}

fn is_quantity(text: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E", "",
    ];
    let number = SUFFIXES
        .iter()
        .find_map(|s| text.strip_suffix(s).filter(|n| !n.is_empty()));
    number.is_some_and(|n| {
        let n = n.strip_prefix('+').unwrap_or(n);
        !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && n.bytes().filter(|b| *b == b'.').count() <= 1
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        assert!(is_cidr("10.0.0.0/16"));
        assert!(!is_cidr("10.0.0.0/33"));
        assert!(!is_cidr("10.0.0/16"));
        assert!(!is_cidr("10.0.0.0"));
        assert!(cidr_problem("10.0.1.5/24").unwrap().contains("10.0.1.0/24"));
        assert!(cidr_problem("10.0.0.0/33").unwrap().contains("over 32"));
        assert!(
            cidr_problem("10.0.300.0/24")
                .unwrap()
                .contains("not an IPv4 address")
        );
    }

    #[test]
    fn names_and_versions() {
        assert!(is_stack_name("staging"));
        assert!(is_stack_name("pr-123"));
        assert!(!is_stack_name("Staging"));
        assert!(!is_stack_name("a--b"));
        assert!(!is_stack_name("1abc"));
        assert!(is_region("us-west-2"));
        assert!(is_region("us-gov-west-1"));
        assert!(!is_region("uswest2"));
        assert!(is_major_minor("1.31"));
        assert!(!is_major_minor("1.31.2"));
        assert!(!is_major_minor("v1.31"));
        assert!(is_engine_version("16.4"));
        assert!(is_engine_version("7"));
        assert!(is_rds_class("db.r6g.large"));
        assert!(!is_rds_class("r6g.large"));
        assert!(is_cache_node_type("cache.t4g.micro"));
    }

    #[test]
    fn iam_principal_arns() {
        for good in [
            "arn:aws:iam::123456789012:role/platform-admins",
            "arn:aws:iam::123456789012:role/teams/platform/admin",
            "arn:aws-cn:iam::123456789012:user/alice",
            "arn:aws-us-gov:iam::123456789012:role/ops+on.call@example_1",
        ] {
            assert!(is_iam_principal_arn(good), "{good}");
        }
        for bad in [
            "arn:aws:iam::12345678901:role/short-account",
            "arn:aws:iam::123456789012:group/admins",
            "arn:aws:sts::123456789012:assumed-role/admin/session",
            "arn:aws:iam::123456789012:role/",
            "arn:other:iam::123456789012:role/x",
            "platform-admins",
        ] {
            assert!(!is_iam_principal_arn(bad), "{bad}");
        }
    }

    #[test]
    fn quantities() {
        for good in ["500m", "512Mi", "1", "100", "2.5", "1Gi"] {
            assert!(is_quantity(good), "{good}");
        }
        for bad in ["", "Mi", "1 Gi", "one", "1.2.3"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }
}
