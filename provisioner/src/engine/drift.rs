//! Drift: what changed in the cloud behind the stack's back. [`detect`] is a pure comparison of
//! recorded state with refreshed live values ([`super::refresh::read_live`]) and the objects the
//! providers found carrying the deployment's ownership tags
//! ([`super::refresh::list_owned`]); it does no IO.
//!
//! Rules (documented in `provisioner/docs/drift-report.md`):
//! * only attributes the stack manages are compared: the desired resource's property names (or,
//!   for a resource the stack no longer declares, the recorded ones). Attributes the stack does not
//!   set and AWS defaults are never drift;
//! * the expected value is the recorded one (what Stacksmith last applied or a `refresh`
//!   accepted), the actual one is the live value, compared the way the planner compares
//!   ([`super::planner::current_value`]: an attribute a provider does not read back counts as
//!   unchanged); secrets are never compared;
//! * a recorded object that no longer exists is `deleted`;
//! * an object carrying the ownership tags that state does not record is `unmanaged`; a member
//!   of a recorded object (an ingress rule of a security group, a route of a route table) that
//!   state does not record is a change of its parent's attribute (`ingress_rules[sgr-...]`).
//!
//! The report is generic on purpose: an entry is an address, a kind, a status and attribute
//! differences, so in-cluster Kubernetes objects can be appended with [`DriftReport::push`].

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::DesiredSet;
use super::plan::StateVersion;
use super::planner::{LiveSnapshot, current_value};
use super::provider::OwnedObject;
use super::secrets::is_encrypted;
use super::types::satisfies;
use crate::state::{ResourceRecord, StateDocument};

/// The `version` of the JSON report (`provisioner/docs/drift-report.md`).
pub const DRIFT_REPORT_VERSION: u32 = 1;

/// Where an object stands against what Stacksmith recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftStatus {
    /// Every managed attribute has its recorded value.
    InSync,
    /// At least one managed attribute differs (see the entry's `attributes`).
    Modified,
    /// Recorded, but the object no longer exists.
    Deleted,
    /// Carries the deployment's ownership tags, but state does not record it.
    Unmanaged,
}

impl DriftStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InSync => "in_sync",
            Self::Modified => "modified",
            Self::Deleted => "deleted",
            Self::Unmanaged => "unmanaged",
        }
    }

    pub fn is_drift(self) -> bool {
        self != Self::InSync
    }
}

/// One attribute that differs. `null` stands for "absent".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributeDrift {
    /// The attribute, with a path into objects (`tags.team`, `scaling.desired`,
    /// `tags["kubernetes.io/role/elb"]`) or a member key (`ingress_rules[sgr-0a1b]`).
    pub name: String,
    pub expected: Value,
    pub actual: Value,
}

/// One object's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftEntry {
    /// The resource address for recorded objects; `<kind>/<id>` for unmanaged ones.
    pub address: String,
    /// The resource type (`aws.ec2.vpc`), or any other kind of object another module reports
    /// (e.g. `kubernetes:apps/v1/Deployment`).
    pub kind: String,
    /// The provider's id of the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub status: DriftStatus,
    /// The differing attributes (`modified`), or what an `unmanaged` object is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<AttributeDrift>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Counts per status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftSummary {
    pub in_sync: usize,
    pub modified: usize,
    pub deleted: usize,
    pub unmanaged: usize,
}

impl DriftSummary {
    pub fn drifted(&self) -> usize {
        self.modified + self.deleted + self.unmanaged
    }

    fn count(&mut self, status: DriftStatus) {
        match status {
            DriftStatus::InSync => self.in_sync += 1,
            DriftStatus::Modified => self.modified += 1,
            DriftStatus::Deleted => self.deleted += 1,
            DriftStatus::Unmanaged => self.unmanaged += 1,
        }
    }
}

/// The drift report of one deployment (JSON `version` 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftReport {
    pub version: u32,
    pub stack: String,
    pub instance: Option<String>,
    /// The state compared with (`lineage` is `null` when nothing was ever recorded).
    pub state: StateVersion,
    pub summary: DriftSummary,
    pub entries: Vec<DriftEntry>,
}

impl DriftReport {
    pub fn new(stack: &str, instance: Option<&str>, state: StateVersion) -> Self {
        Self {
            version: DRIFT_REPORT_VERSION,
            stack: stack.to_owned(),
            instance: instance.map(str::to_owned),
            state,
            summary: DriftSummary::default(),
            entries: Vec::new(),
        }
    }

    /// Appends an entry and counts it. Other sources of objects (in-cluster Kubernetes objects)
    /// add theirs here.
    pub fn push(&mut self, entry: DriftEntry) {
        self.summary.count(entry.status);
        self.entries.push(entry);
    }

    pub fn has_drift(&self) -> bool {
        self.summary.drifted() > 0
    }

    pub fn drifted(&self) -> impl Iterator<Item = &DriftEntry> {
        self.entries.iter().filter(|e| e.status.is_drift())
    }

    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a drift report is JSON");
        text.push('\n');
        text
    }
}

/// What [`detect`] compares.
pub struct DriftInput<'a> {
    /// The stack's resources: their property names are the attributes it manages.
    pub desired: &'a DesiredSet,
    pub state: &'a StateDocument,
    /// Every recorded resource read back (`None`: the object is gone).
    pub live: &'a LiveSnapshot,
    /// What the providers found carrying the ownership tags (and the members of those objects).
    pub owned: &'a [OwnedObject],
}

/// Compares state with the live objects; entries follow state's order, then unmanaged objects by
/// kind and id.
pub fn detect(input: &DriftInput<'_>) -> DriftReport {
    let state = input.state;
    let mut report = DriftReport::new(
        &state.stack,
        state.instance.as_deref(),
        StateVersion {
            lineage: (state.serial > 0).then(|| state.lineage.clone()),
            serial: state.serial,
        },
    );
    let recorded: HashSet<(&str, &str)> = state
        .resources
        .values()
        .chain(&state.deposed)
        .map(|r| (r.resource_type.as_str(), r.id.as_str()))
        .collect();
    let unrecorded = |object: &&OwnedObject| {
        !recorded.contains(&(object.resource_type.as_str(), object.id.as_str()))
    };

    for record in state.resources.values() {
        let Some(live) = input.live.get(&record.address) else {
            continue;
        };
        let mut entry = DriftEntry {
            address: record.address.to_string(),
            kind: record.resource_type.to_string(),
            id: Some(record.id.clone()),
            status: DriftStatus::InSync,
            attributes: Vec::new(),
            note: None,
        };
        let Some(live) = live else {
            entry.status = DriftStatus::Deleted;
            entry.note = Some("deleted outside Stacksmith; `up` creates it again".to_owned());
            report.push(entry);
            continue;
        };
        for name in managed_attributes(input.desired, record) {
            // Not recorded yet: a stack change `up` has not applied, not drift.
            let Some(expected) = record.properties.get(name) else {
                continue;
            };
            if is_encrypted(expected) {
                continue;
            }
            let actual = current_value(record, Some(live), name);
            if !actual.is_some_and(|a| satisfies(&record.resource_type, name, expected, a)) {
                differences(&mut entry.attributes, name, Some(expected), actual);
            }
        }
        for member in input.owned.iter().filter(unrecorded) {
            let Some(parent) = &member.member_of else {
                continue;
            };
            if parent.resource_type == record.resource_type && parent.id == record.id {
                entry.attributes.push(AttributeDrift {
                    name: format!("{}[{}]", parent.attribute, member.id),
                    expected: Value::Null,
                    actual: Value::Object(member.properties.clone().into_iter().collect()),
                });
            }
        }
        if !entry.attributes.is_empty() {
            entry.status = DriftStatus::Modified;
        }
        report.push(entry);
    }

    let mut unmanaged: Vec<&OwnedObject> = input
        .owned
        .iter()
        .filter(unrecorded)
        .filter(|o| o.member_of.is_none())
        .collect();
    unmanaged.sort_by(|a, b| (&a.resource_type, &a.id).cmp(&(&b.resource_type, &b.id)));
    unmanaged.dedup_by(|a, b| a.resource_type == b.resource_type && a.id == b.id);
    for object in unmanaged {
        let claimed = object
            .tags
            .get("stacksmith:address")
            .map(|address| format!(" (tagged as {address})"))
            .unwrap_or_default();
        report.push(DriftEntry {
            address: format!("{}/{}", object.resource_type, object.id),
            kind: object.resource_type.to_string(),
            id: Some(object.id.clone()),
            status: DriftStatus::Unmanaged,
            attributes: object
                .properties
                .iter()
                .map(|(name, value)| AttributeDrift {
                    name: name.clone(),
                    expected: Value::Null,
                    actual: value.clone(),
                })
                .collect(),
            note: Some(format!(
                "carries this deployment's ownership tags{claimed} but state does not record \
                 it; `up` neither adopts nor deletes it"
            )),
        });
    }
    report
}

/// The attributes the stack manages on a recorded resource: the desired resource's property
/// names, or the recorded ones when the stack no longer declares it.
fn managed_attributes<'a>(desired: &'a DesiredSet, record: &'a ResourceRecord) -> Vec<&'a String> {
    match desired.get(&record.address) {
        Some(resource) => resource.properties.keys().collect(),
        None => record.properties.keys().collect(),
    }
}

/// What [`accept_live`] changed in state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// Records whose managed attributes took their live values (their outputs too).
    pub updated: Vec<String>,
    /// Records of objects that no longer exist: removed, so the next `up` creates them again.
    pub removed: Vec<String>,
}

impl Accepted {
    pub fn is_empty(&self) -> bool {
        self.updated.is_empty() && self.removed.is_empty()
    }
}

/// `refresh`: takes live values into `state` for the attributes the stack manages (the ones
/// [`detect`] compares; secrets are kept as recorded, attributes a provider does not read back
/// too), with the live outputs of the records that changed, and removes the records of objects
/// that no longer exist. Unmanaged objects and unrecorded members are not adopted. Pure; the
/// caller saves the document through the journal.
pub fn accept_live(
    state: &mut StateDocument,
    desired: &DesiredSet,
    live: &LiveSnapshot,
    now: DateTime<Utc>,
) -> Accepted {
    let mut accepted = Accepted::default();
    let mut records = std::mem::take(&mut state.resources);
    records.retain(|address, _| {
        let gone = matches!(live.get(address), Some(None));
        if gone {
            accepted.removed.push(address.to_string());
        }
        !gone
    });
    for record in records.values_mut() {
        let Some(Some(object)) = live.get(&record.address) else {
            continue;
        };
        let names: Vec<String> = managed_attributes(desired, record)
            .into_iter()
            .cloned()
            .collect();
        let mut changed = false;
        for name in names {
            let Some(recorded) = record.properties.get(&name) else {
                continue;
            };
            if is_encrypted(recorded) {
                continue;
            }
            if let Some(value) = object.properties.get(&name)
                && value != recorded
            {
                record.properties.insert(name, value.clone());
                changed = true;
            }
        }
        if changed {
            for (name, value) in &object.outputs {
                if !record.outputs.get(name).is_some_and(is_encrypted) {
                    record.outputs.insert(name.clone(), value.clone());
                }
            }
            record.updated_at = now;
            accepted.updated.push(record.address.to_string());
        }
    }
    state.resources = records;
    accepted
}

/// Appends the differences between two values of attribute `name`: objects key by key (so a
/// removed tag shows as `tags.team`), anything else as a whole.
fn differences(
    out: &mut Vec<AttributeDrift>,
    name: &str,
    expected: Option<&Value>,
    actual: Option<&Value>,
) {
    if let (Some(Value::Object(expected)), Some(Value::Object(actual))) = (expected, actual) {
        let keys = expected
            .keys()
            .chain(actual.keys().filter(|k| !expected.contains_key(*k)));
        for key in keys {
            let (e, a) = (expected.get(key), actual.get(key));
            if e != a {
                differences(out, &member_path(name, key), e, a);
            }
        }
        return;
    }
    out.push(AttributeDrift {
        name: name.to_owned(),
        expected: expected.cloned().unwrap_or(Value::Null),
        actual: actual.cloned().unwrap_or(Value::Null),
    });
}

/// `tags.team`, or `tags["kubernetes.io/role/elb"]` for keys that are not plain words.
fn member_path(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        format!("{parent}.{key}")
    } else {
        format!("{parent}[{}]", Value::String(key.to_owned()))
    }
}
