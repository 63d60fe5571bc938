//! Which availability zones a deployment's subnets go to. A pure decision (no IO): the caller
//! passes what state recorded and, when it could read them, the zones the region offers.
//!
//! `network.azs: N` means "N zones of the region", not `<region>a`, `b`, `c`: zone letters are
//! mapped per account, some regions have no `b` for a given account, and EKS refuses cluster
//! subnets in a few zones (by zone ID). So:
//! * a zone recorded in state for a subnet index stays (a subnet cannot move; asking for another
//!   zone would replace it);
//! * new indices take the region's offered zones (`available`, default zones, not refused by
//!   EKS) in name order, skipping those already used;
//! * when the offered zones are unknown (`plan` without AWS credentials, the fake provider), the
//!   letters are assumed and the result says so.

use serde::{Deserialize, Serialize};

use crate::stack::model::AvailabilityZones;
use crate::state::StateDocument;

/// Zone IDs where EKS does not place cluster subnets (its user guide, "Amazon EKS networking
/// requirements"; CreateCluster answers `UnsupportedAvailabilityZoneException`).
pub const EKS_UNSUPPORTED_ZONE_IDS: &[&str] = &["use1-az3", "usw1-az2", "cac1-az3"];

/// A zone the region offers: its account-specific name and its stable ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Zone {
    pub name: String,
    pub id: String,
}

/// The zones of a deployment, one per subnet index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedZones {
    pub names: Vec<String>,
    /// Some names were assumed from letters because the region's zones could not be read.
    pub assumed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZoneError {
    #[error(
        "the stack asks for {wanted} availability zones, but {region} offers {offered} that EKS \
         supports ({names}); lower `network.azs`"
    )]
    TooFew {
        wanted: usize,
        region: String,
        offered: usize,
        names: String,
    },
    #[error(
        "availability zone {name} ({id}) does not take EKS cluster subnets; list other zones in \
         `network.azs`"
    )]
    Unsupported { name: String, id: String },
    #[error("{region} offers no availability zone named {name}; it offers {names}")]
    NotOffered {
        name: String,
        region: String,
        names: String,
    },
}

/// The zone recorded for each subnet index (private first, then public), by address.
pub fn recorded(state: Option<&StateDocument>, count: usize) -> Vec<Option<String>> {
    (0..count)
        .map(|index| {
            let state = state?;
            ["private", "public"].iter().find_map(|kind| {
                let address = format!("network.subnet.{kind}[{index}]");
                state
                    .resources
                    .values()
                    .find(|r| r.address.to_string() == address)
                    .and_then(|r| r.properties.get("availability_zone"))
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            })
        })
        .collect()
}

/// Whether resolving `azs` needs the region's offered zones (some index has no recorded zone).
pub fn needs_offered(azs: &AvailabilityZones, state: Option<&StateDocument>) -> bool {
    match azs {
        AvailabilityZones::Names(_) => false,
        AvailabilityZones::Count(n) => recorded(state, usize::from(*n)).iter().any(Option::is_none),
    }
}

/// The zones for `azs` in `region`.
pub fn resolve(
    azs: &AvailabilityZones,
    region: &str,
    state: Option<&StateDocument>,
    offered: Option<&[Zone]>,
) -> Result<ResolvedZones, ZoneError> {
    let list = |zones: &[&Zone]| {
        zones
            .iter()
            .map(|z| z.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match azs {
        AvailabilityZones::Names(names) => {
            if let Some(offered) = offered {
                for name in names {
                    match offered.iter().find(|z| &z.name == name) {
                        None => {
                            return Err(ZoneError::NotOffered {
                                name: name.clone(),
                                region: region.to_owned(),
                                names: list(&offered.iter().collect::<Vec<_>>()),
                            });
                        }
                        Some(zone) if EKS_UNSUPPORTED_ZONE_IDS.contains(&zone.id.as_str()) => {
                            return Err(ZoneError::Unsupported {
                                name: zone.name.clone(),
                                id: zone.id.clone(),
                            });
                        }
                        Some(_) => {}
                    }
                }
            }
            Ok(ResolvedZones {
                names: names.clone(),
                assumed: false,
            })
        }
        AvailabilityZones::Count(n) => {
            let count = usize::from(*n);
            let mut names = recorded(state, count);
            let missing = names.iter().filter(|n| n.is_none()).count();
            if missing == 0 {
                return Ok(ResolvedZones {
                    names: names.into_iter().flatten().collect(),
                    assumed: false,
                });
            }
            let used: Vec<String> = names.iter().flatten().cloned().collect();
            let (candidates, assumed): (Vec<String>, bool) = match offered {
                Some(offered) => {
                    let mut usable: Vec<&Zone> = offered
                        .iter()
                        .filter(|z| !EKS_UNSUPPORTED_ZONE_IDS.contains(&z.id.as_str()))
                        .collect();
                    usable.sort_by(|a, b| a.name.cmp(&b.name));
                    let free: Vec<String> = usable
                        .iter()
                        .filter(|z| !used.contains(&z.name))
                        .map(|z| z.name.clone())
                        .collect();
                    if free.len() < missing {
                        return Err(ZoneError::TooFew {
                            wanted: count,
                            region: region.to_owned(),
                            offered: usable.len(),
                            names: list(&usable),
                        });
                    }
                    (free, false)
                }
                None => (
                    azs.names(region)
                        .into_iter()
                        .chain((b'a'..=b'z').map(|c| format!("{region}{}", c as char)))
                        .filter(|name| !used.contains(name))
                        .collect(),
                    true,
                ),
            };
            let mut candidates = candidates.into_iter();
            for slot in names.iter_mut().filter(|n| n.is_none()) {
                *slot = candidates.next();
            }
            Ok(ResolvedZones {
                names: names.into_iter().flatten().collect(),
                assumed,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(name: &str, id: &str) -> Zone {
        Zone {
            name: name.to_owned(),
            id: id.to_owned(),
        }
    }

    #[test]
    fn a_count_takes_the_offered_zones_eks_supports_in_name_order() {
        // An account whose us-east-1 has no `b`, and whose `c` is use1-az3.
        let offered = [
            zone("us-east-1d", "use1-az4"),
            zone("us-east-1a", "use1-az6"),
            zone("us-east-1c", "use1-az3"),
            zone("us-east-1e", "use1-az1"),
        ];
        let zones = resolve(
            &AvailabilityZones::Count(3),
            "us-east-1",
            None,
            Some(&offered),
        )
        .unwrap();
        assert_eq!(zones.names, ["us-east-1a", "us-east-1d", "us-east-1e"]);
        assert!(!zones.assumed);
        let error = resolve(
            &AvailabilityZones::Count(4),
            "us-east-1",
            None,
            Some(&offered),
        )
        .unwrap_err();
        assert!(error.to_string().contains("offers 3"), "{error}");
    }

    #[test]
    fn unknown_offered_zones_are_assumed_from_letters() {
        let zones = resolve(&AvailabilityZones::Count(2), "eu-west-1", None, None).unwrap();
        assert_eq!(zones.names, ["eu-west-1a", "eu-west-1b"]);
        assert!(zones.assumed);
    }

    #[test]
    fn listed_zones_are_checked_against_the_offered_ones() {
        let offered = [
            zone("us-east-1a", "use1-az6"),
            zone("us-east-1e", "use1-az3"),
        ];
        let listed = AvailabilityZones::Names(vec!["us-east-1a".into(), "us-east-1e".into()]);
        assert!(matches!(
            resolve(&listed, "us-east-1", None, Some(&offered)),
            Err(ZoneError::Unsupported { .. })
        ));
        let listed = AvailabilityZones::Names(vec!["us-east-1a".into(), "us-east-1b".into()]);
        assert!(matches!(
            resolve(&listed, "us-east-1", None, Some(&offered)),
            Err(ZoneError::NotOffered { .. })
        ));
    }
}
