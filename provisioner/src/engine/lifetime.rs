//! Instance lifetimes: every taggable resource of an instance of a template stack carries
//! `stacksmith:expires-at` (RFC 3339), its creation time plus the stack's `instances.ttl`.
//!
//! The lifetime is fixed at the instance's first `up` and recorded in state
//! ([`crate::state::InstanceLifetime`]), so later runs stamp the same value and plan no change;
//! `provisioner instances` shows it and `provisioner gc` tears down the instances past it.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use super::DesiredSet;
use super::plan::Plan;
use crate::state::{InstanceLifetime, StateDocument};

/// The tag holding an instance's expiry.
pub const EXPIRES_AT_TAG: &str = "stacksmith:expires-at";

/// The lifetime of the deployment `desired` describes: `None` for a stack deployed without
/// `--instance`; the one `state` records while the instance exists; otherwise a new one
/// starting at `now` (the first `up`, or an `up` after `down` emptied the state).
pub fn lifetime_for(
    desired: &DesiredSet,
    ttl: Option<Duration>,
    state: Option<&StateDocument>,
    now: DateTime<Utc>,
) -> Option<InstanceLifetime> {
    desired.instance.as_ref()?;
    let recorded = state
        .filter(|state| !state.is_empty())
        .and_then(|state| state.lifetime);
    Some(recorded.unwrap_or_else(|| InstanceLifetime::starting(now, ttl)))
}

/// The tag's value: RFC 3339 in UTC with whole seconds (`2026-12-03T20:00:00Z`).
pub fn format_expiry(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Adds `stacksmith:expires-at` to the `tags` of every resource that has tags. A lifetime
/// without expiry (no TTL) adds nothing.
pub fn stamp(desired: &mut DesiredSet, lifetime: &InstanceLifetime) {
    let Some(expires_at) = lifetime.expires_at else {
        return;
    };
    let value = Value::String(format_expiry(expires_at));
    for resource in &mut desired.resources {
        if let Some(Value::Object(tags)) = resource.properties.get_mut("tags") {
            tags.insert(EXPIRES_AT_TAG.to_owned(), value.clone());
        }
    }
}

/// The expiry a saved plan stamped on its resources, if any (`up --plan FILE` records the
/// lifetime the plan was made with).
pub fn expiry_in_plan(plan: &Plan) -> Option<DateTime<Utc>> {
    plan.actions
        .iter()
        .filter_map(|action| action.desired.as_ref()?.get("tags")?.get(EXPIRES_AT_TAG))
        .filter_map(Value::as_str)
        .find_map(|text| DateTime::parse_from_rfc3339(text).ok())
        .map(|at| at.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::DesiredResource;
    use serde_json::json;

    fn set(instance: Option<&str>) -> DesiredSet {
        DesiredSet {
            stack: "staging".to_owned(),
            instance: instance.map(str::to_owned),
            resources: vec![
                DesiredResource::new("network.vpc", "aws.ec2.vpc")
                    .with("tags", json!({ "Name": "staging-pr-1" })),
                DesiredResource::new("network.route.public_internet", "aws.ec2.route")
                    .with("destination_cidr_block", json!("0.0.0.0/0")),
            ],
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().into()
    }

    #[test]
    fn a_stack_without_instance_has_no_lifetime() {
        let lifetime = lifetime_for(&set(None), Some(Duration::from_secs(60)), None, Utc::now());
        assert_eq!(lifetime, None);
    }

    #[test]
    fn the_first_up_starts_the_lifetime_and_later_ones_keep_it() {
        let desired = set(Some("pr-1"));
        let ttl = Some(Duration::from_secs(48 * 3600));
        let first = lifetime_for(&desired, ttl, None, at("2026-12-01T20:00:00Z")).unwrap();
        assert_eq!(first.expires_at, Some(at("2026-12-03T20:00:00Z")));

        let mut state = StateDocument::new("staging", Some("pr-1"));
        state.lifetime = Some(first);
        state.resources.insert(
            crate::engine::Address::new("network.vpc"),
            crate::state::ResourceRecord {
                address: crate::engine::Address::new("network.vpc"),
                resource_type: crate::engine::ResourceType::new("aws.ec2.vpc"),
                id: "vpc-1".to_owned(),
                properties: Default::default(),
                outputs: Default::default(),
                depends_on: Vec::new(),
                updated_at: Utc::now(),
            },
        );
        let later = lifetime_for(&desired, ttl, Some(&state), at("2026-12-02T09:00:00Z"));
        assert_eq!(later, Some(first), "kept from state");

        state.resources.clear();
        let again = lifetime_for(&desired, ttl, Some(&state), at("2026-12-05T00:00:00Z")).unwrap();
        assert_eq!(
            again.expires_at,
            Some(at("2026-12-07T00:00:00Z")),
            "an emptied instance starts a new lifetime"
        );
    }

    #[test]
    fn stamping_tags_only_taggable_resources_and_plans_carry_it() {
        let mut desired = set(Some("pr-1"));
        let lifetime = InstanceLifetime::starting(
            at("2026-12-01T20:00:00.123Z"),
            Some(Duration::from_secs(3600)),
        );
        stamp(&mut desired, &lifetime);
        assert_eq!(
            desired.resources[0].properties["tags"][EXPIRES_AT_TAG],
            "2026-12-01T21:00:00Z"
        );
        assert!(!desired.resources[1].properties.contains_key("tags"));

        let mut unstamped = set(Some("pr-1"));
        stamp(
            &mut unstamped,
            &InstanceLifetime::starting(Utc::now(), None),
        );
        assert_eq!(unstamped, set(Some("pr-1")), "no TTL, no tag");
    }
}
