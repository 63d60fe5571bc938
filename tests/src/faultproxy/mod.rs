//! A fault-injecting HTTP proxy for AWS APIs, put in front of moto by tests and benchmarks.
//!
//! moto answers every call at once, never throttles, and makes every resource ready at once
//! (see `provisioner/docs/testing.md`). The proxy adds what real AWS does, deterministically
//! from a seed, per AWS operation (`service:Operation`, parsed from the query protocol's
//! `Action=`, `X-Amz-Target` or EKS's REST path, see [`operation`]):
//!
//! * **throttling** with each service's own code and status ([`answers`]): EC2
//!   `RequestLimitExceeded` (503), IAM/RDS/ElastiCache `Throttling` (400), EKS
//!   `ThrottlingException` (429), Logs `ThrottlingException` (400);
//! * **server errors** (500, 503) in each service's shape;
//! * **added latency** per call;
//! * **eventual consistency**: for a while after EC2 made an id (`CreateVpc`, `CreateSubnet`,
//!   ...), calls naming it answer `InvalidVpcID.NotFound`, `InvalidSubnetID.NotFound`, ...; after
//!   IAM `CreateRole`, calls naming the role answer `NoSuchEntity`;
//! * **lifecycle states with scaled durations**, by rewriting describe answers: an EKS cluster
//!   is `CREATING` (without endpoint) then `ACTIVE`, `DELETING` until gone; node groups
//!   `CREATING`/`DELETING`; an RDS instance `creating` then `backing-up` then `available`,
//!   `modifying` after ModifyDBInstance; an ElastiCache group `creating`, `modifying` after
//!   ModifyReplicationGroup (and refusing tag calls and changes meanwhile with
//!   `InvalidReplicationGroupState`, as AWS does).
//!
//! A request that gets a throttling, error or not-found answer never reaches moto. Every
//! decision is drawn from `(seed, operation, n-th call of that operation, rule)`, so a run that
//! makes the same calls gets the same faults whatever the interleaving of other operations.
//! `GET /_faultproxy/stats` answers the calls and faults per operation as JSON.

pub mod answers;
pub mod operation;
mod server;

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

pub use answers::Answer;
pub use operation::Operation;
pub use server::FaultProxy;

/// What a rule does to a call it picks.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// The service's throttling answer.
    Throttle,
    /// A 500 or 503 in the service's shape.
    ServerError(u16),
    /// The call is forwarded after this delay.
    Latency(Duration),
}

/// A fault applied with `probability` to the operations `operations` matches: `*`, `ec2:*`,
/// `ec2:Describe*`, `eks:CreateCluster` (a `*` matches any run of characters).
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub operations: String,
    pub fault: Fault,
    pub probability: f64,
}

impl Rule {
    pub fn throttle(probability: f64, operations: &str) -> Self {
        Self {
            operations: operations.to_owned(),
            fault: Fault::Throttle,
            probability,
        }
    }

    pub fn server_error(status: u16, probability: f64, operations: &str) -> Self {
        Self {
            operations: operations.to_owned(),
            fault: Fault::ServerError(status),
            probability,
        }
    }

    pub fn latency(delay: Duration, operations: &str) -> Self {
        Self {
            operations: operations.to_owned(),
            fault: Fault::Latency(delay),
            probability: 1.0,
        }
    }

    /// `throttle[=P][@OPS]`, `error=STATUS[:P][@OPS]`, `latency=MS[ms][@OPS]` (OPS defaults to
    /// `*`, P to 1): `throttle=0.3`, `error=503:0.1@eks:*`, `latency=80ms@ec2:Describe*`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (head, operations) = match spec.split_once('@') {
            Some((head, ops)) => (head, ops),
            None => (spec, "*"),
        };
        let (kind, value) = match head.split_once('=') {
            Some((kind, value)) => (kind, Some(value)),
            None => (head, None),
        };
        let probability = |text: Option<&str>| -> Result<f64, String> {
            let p = match text {
                None => 1.0,
                Some(t) => t
                    .parse::<f64>()
                    .map_err(|_| format!("`{t}` is not a probability (0 to 1) in `{spec}`"))?,
            };
            if (0.0..=1.0).contains(&p) {
                Ok(p)
            } else {
                Err(format!("probability {p} is outside 0..=1 in `{spec}`"))
            }
        };
        match kind {
            "throttle" => Ok(Self::throttle(probability(value)?, operations)),
            "error" => {
                let value = value.ok_or_else(|| format!("`{spec}`: error=STATUS[:P]"))?;
                let (status, p) = match value.split_once(':') {
                    Some((s, p)) => (s, Some(p)),
                    None => (value, None),
                };
                let status: u16 = status
                    .parse()
                    .ok()
                    .filter(|s| matches!(s, 500 | 503))
                    .ok_or_else(|| format!("`{spec}`: the status is 500 or 503"))?;
                Ok(Self::server_error(status, probability(p)?, operations))
            }
            "latency" => {
                let value = value.ok_or_else(|| format!("`{spec}`: latency=MS"))?;
                let ms: u64 = value
                    .trim_end_matches("ms")
                    .parse()
                    .map_err(|_| format!("`{spec}`: latency in milliseconds"))?;
                Ok(Self::latency(Duration::from_millis(ms), operations))
            }
            other => Err(format!(
                "unknown fault `{other}` in `{spec}` (throttle, error, latency)"
            )),
        }
    }

    pub fn matches(&self, operation: &Operation) -> bool {
        glob(&self.operations, &operation.key())
    }
}

/// `*` matches any run of characters; everything else literally.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (index, part) in parts.iter().enumerate() {
        if index == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if index == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// The proxy's whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultConfig {
    pub seed: u64,
    pub rules: Vec<Rule>,
    /// How long an id EC2 (or IAM, see `consistency_services`) just made answers "not found".
    pub consistency: Option<Duration>,
    /// The services whose new ids are eventually consistent (`ec2`, `iam`).
    pub consistency_services: Vec<String>,
    /// Real lifecycle durations times this factor (0.001: a 15-minute EKS create lasts 0.9 s);
    /// `None`: describe answers are passed through unchanged.
    pub lifecycle_scale: Option<f64>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            rules: Vec::new(),
            consistency: None,
            consistency_services: vec!["ec2".into()],
            lifecycle_scale: None,
        }
    }
}

/// Real durations of the lifecycle states the proxy shows (AWS: EKS 13-16 min, RDS 10-20 min,
/// ElastiCache up to 40), before scaling.
pub mod durations {
    use std::time::Duration;
    const fn mins(m: u64) -> Duration {
        Duration::from_secs(m * 60)
    }
    pub const EKS_CLUSTER_CREATING: Duration = mins(15);
    pub const EKS_CLUSTER_DELETING: Duration = mins(10);
    pub const EKS_NODEGROUP_CREATING: Duration = mins(4);
    pub const EKS_NODEGROUP_DELETING: Duration = mins(5);
    pub const RDS_CREATING: Duration = mins(12);
    pub const RDS_BACKING_UP: Duration = mins(3);
    pub const RDS_MODIFYING: Duration = mins(2);
    pub const CACHE_CREATING: Duration = mins(15);
    pub const CACHE_MODIFYING: Duration = mins(5);
}

/// Calls and faults of one operation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct OperationStats {
    /// Requests received (each SDK attempt counts).
    pub calls: u64,
    pub throttled: u64,
    pub server_errors: u64,
    pub delayed: u64,
    pub not_found: u64,
    /// Describe answers whose state the lifecycle rewrote, and calls refused while transitional.
    pub lifecycle: u64,
}

/// Statistics per `service:Operation`.
pub type Stats = HashMap<String, OperationStats>;

/// A deterministic draw in `[0, 1)` for the `n`-th call of `operation` under rule `rule`.
pub fn draw(seed: u64, operation: &str, n: u64, rule: usize) -> f64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in operation.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let mut x = seed
        ^ hash
        ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ (rule as u64).wrapping_mul(0xd1b5_4a32_d192_ed03);
    // splitmix64
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_from_their_spec() {
        assert_eq!(
            Rule::parse("throttle=0.3").unwrap(),
            Rule::throttle(0.3, "*")
        );
        assert_eq!(
            Rule::parse("error=503:0.1@eks:*").unwrap(),
            Rule::server_error(503, 0.1, "eks:*")
        );
        assert_eq!(
            Rule::parse("latency=80ms@ec2:Describe*").unwrap(),
            Rule::latency(Duration::from_millis(80), "ec2:Describe*")
        );
        assert!(Rule::parse("error=404").is_err());
        assert!(Rule::parse("throttle=2").is_err());
        assert!(Rule::parse("explode").is_err());
    }

    #[test]
    fn globs_match_operations() {
        assert!(glob("*", "ec2:CreateVpc"));
        assert!(glob("ec2:*", "ec2:CreateVpc"));
        assert!(glob("ec2:Describe*", "ec2:DescribeVpcs"));
        assert!(!glob("ec2:Describe*", "ec2:CreateVpc"));
        assert!(glob("*:Create*", "eks:CreateCluster"));
        assert!(!glob("eks:CreateCluster", "eks:CreateClusterX"));
    }

    #[test]
    fn draws_are_deterministic_and_spread() {
        assert_eq!(
            draw(7, "ec2:CreateVpc", 3, 0),
            draw(7, "ec2:CreateVpc", 3, 0)
        );
        assert_ne!(
            draw(7, "ec2:CreateVpc", 3, 0),
            draw(8, "ec2:CreateVpc", 3, 0)
        );
        let hits = (0..10_000)
            .filter(|n| draw(42, "ec2:DescribeVpcs", *n, 0) < 0.3)
            .count();
        assert!((2_700..3_300).contains(&hits), "{hits}");
    }
}
