//! The planner: a pure function from desired resources, recorded state and (optionally) refreshed
//! live values to a [`Plan`]. No IO, no async, no clock: the same inputs give the same plan.

use std::collections::{HashMap, HashSet};

use indexmap::IndexMap;
use serde_json::Value;

use super::graph::{GraphError, ResourceGraph};
use super::plan::{
    ActionKind, AttributeChange, PLAN_FORMAT_VERSION, Plan, ResourceAction, StateVersion, Summary,
};
use super::provider::{LiveResource, OwnedObject};
use super::secrets::is_encrypted;
use super::types::{TypeCatalog, satisfies};
use super::value::{self, OutputRef};
use super::{Address, DesiredResource, DesiredSet};
use crate::state::{ResourceRecord, StateDocument};

/// Live values read from the providers: `None` means the object no longer exists.
pub type LiveSnapshot = HashMap<Address, Option<LiveResource>>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error("state belongs to stack `{found}`, not `{expected}`")]
    WrongStack { expected: String, found: String },
}

pub struct PlanInput<'a> {
    pub desired: &'a DesiredSet,
    pub state: Option<&'a StateDocument>,
    pub live: Option<&'a LiveSnapshot>,
    pub catalog: &'a TypeCatalog,
}

/// Plans the changes that take `state` to `desired`.
pub fn plan(input: &PlanInput<'_>) -> Result<Plan, PlanError> {
    let desired = input.desired;
    if let Some(state) = input.state
        && state.stack != desired.stack
    {
        return Err(PlanError::WrongStack {
            expected: desired.stack.clone(),
            found: state.stack.clone(),
        });
    }
    let graph = ResourceGraph::build(desired)?;
    let empty = IndexMap::new();
    let recorded = input.state.map(|s| &s.resources).unwrap_or(&empty);

    // Resources whose outputs are unknown until apply (created or replaced).
    let mut changing: HashSet<Address> = HashSet::new();
    let mut actions = Vec::new();

    for address in graph.ordered() {
        let resource = desired
            .get(address)
            .expect("graph nodes come from the desired set");
        let live = input.live.and_then(|l| l.get(address));
        let deleted_out_of_band = matches!(live, Some(None));
        let record = recorded.get(address).filter(|_| !deleted_out_of_band);
        let lookup = |reference: &OutputRef| -> Option<Value> {
            if changing.contains(&reference.address) {
                return None;
            }
            let live_outputs = input
                .live
                .and_then(|l| l.get(&reference.address))
                .and_then(|l| l.as_ref())
                .and_then(|l| l.outputs.get(&reference.output));
            live_outputs
                .or_else(|| {
                    recorded
                        .get(&reference.address)
                        .and_then(|r| r.outputs.get(&reference.output))
                })
                .cloned()
        };
        let action = match record {
            None => {
                let mut action = plan_create(resource, &lookup);
                if deleted_out_of_band {
                    action.note =
                        Some("deleted outside Stacksmith; it will be created again".into());
                }
                action
            }
            Some(record) => {
                let live = live.and_then(|l| l.as_ref());
                plan_existing(resource, record, live, input.catalog, &lookup)
            }
        };
        if matches!(action.action, ActionKind::Create | ActionKind::Replace) {
            changing.insert(address.clone());
        }
        actions.push(action);
    }

    actions.extend(plan_deletions(desired, input.state));

    let summary = Summary::of(&actions);
    Ok(Plan {
        format_version: PLAN_FORMAT_VERSION,
        stack: desired.stack.clone(),
        instance: desired.instance.clone(),
        state: StateVersion {
            lineage: input.state.map(|s| s.lineage.clone()),
            serial: input.state.map_or(0, |s| s.serial),
        },
        refreshed: input.live.is_some(),
        actions,
        summary,
    })
}

enum Planned {
    Known(Value),
    Unknown,
    Secret,
}

fn plan_value(value: &Value, lookup: &dyn Fn(&OutputRef) -> Option<Value>) -> Planned {
    if value::as_secret_request(value).is_some() {
        return Planned::Secret;
    }
    match value::resolve(value, lookup) {
        Ok(resolved) => Planned::Known(resolved),
        Err(_) => Planned::Unknown,
    }
}

fn plan_create(
    resource: &DesiredResource,
    lookup: &dyn Fn(&OutputRef) -> Option<Value>,
) -> ResourceAction {
    let changes = resource
        .properties
        .iter()
        .map(|(name, value)| {
            let (after, after_unknown, sensitive) = match plan_value(value, lookup) {
                Planned::Known(v) => (Some(v), false, false),
                Planned::Unknown => (None, true, false),
                Planned::Secret => (None, false, true),
            };
            AttributeChange {
                name: name.clone(),
                before: None,
                after,
                after_unknown,
                sensitive,
                forces_replacement: None,
            }
        })
        .collect();
    ResourceAction {
        address: resource.address.clone(),
        resource_type: resource.resource_type.clone(),
        action: ActionKind::Create,
        replacement_order: None,
        replacement_reasons: Vec::new(),
        previous_type: None,
        resource_id: None,
        deposed: false,
        depends_on: resource.all_dependencies(),
        changes,
        desired: Some(resource.properties.clone()),
        note: None,
    }
}

fn plan_existing(
    resource: &DesiredResource,
    record: &ResourceRecord,
    live: Option<&LiveResource>,
    catalog: &TypeCatalog,
    lookup: &dyn Fn(&OutputRef) -> Option<Value>,
) -> ResourceAction {
    let spec = catalog.spec(&resource.resource_type);
    let current = |name: &str| current_value(record, live, name);
    let mut changes = Vec::new();
    let mut reasons = Vec::new();
    let type_changed = record.resource_type != resource.resource_type;
    if type_changed {
        reasons.push(format!(
            "the resource type changed from {} to {}",
            record.resource_type, resource.resource_type
        ));
    }
    for (name, value) in &resource.properties {
        let before = current(name);
        let change = match plan_value(value, lookup) {
            Planned::Secret if before.is_some() => None,
            Planned::Secret => Some((None, false, true)),
            Planned::Known(after)
                if before.is_some_and(|b| satisfies(&resource.resource_type, name, &after, b)) =>
            {
                None
            }
            Planned::Known(after) => Some((Some(after), false, false)),
            Planned::Unknown => Some((None, true, false)),
        };
        let Some((after, after_unknown, sensitive)) = change else {
            continue;
        };
        let forces = spec.replacement_reason(name).map(|reason| {
            let why = if after_unknown {
                let refs = value::references(value)
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("{reason} (it takes {refs}, replaced in this plan)")
            } else {
                reason.to_owned()
            };
            reasons.push(format!("{name}: {why}"));
            why
        });
        let sensitive = sensitive || before.is_some_and(is_encrypted);
        changes.push(AttributeChange {
            name: name.clone(),
            before: if sensitive { None } else { before.cloned() },
            after: if sensitive { None } else { after },
            after_unknown,
            sensitive,
            forces_replacement: forces,
        });
    }
    for (name, before) in &record.properties {
        if resource.properties.contains_key(name) {
            continue;
        }
        let forces = spec.replacement_reason(name).map(|reason| {
            reasons.push(format!("{name}: {reason}"));
            reason.to_owned()
        });
        let sensitive = is_encrypted(before);
        changes.push(AttributeChange {
            name: name.clone(),
            before: if sensitive {
                None
            } else {
                Some(before.clone())
            },
            after: None,
            after_unknown: false,
            sensitive,
            forces_replacement: forces,
        });
    }
    let action = if !reasons.is_empty() {
        ActionKind::Replace
    } else if !changes.is_empty() {
        ActionKind::Update
    } else {
        ActionKind::NoOp
    };
    ResourceAction {
        address: resource.address.clone(),
        resource_type: resource.resource_type.clone(),
        action,
        replacement_order: (action == ActionKind::Replace).then_some(spec.replacement_order),
        replacement_reasons: reasons,
        previous_type: type_changed.then(|| record.resource_type.clone()),
        resource_id: Some(record.id.clone()),
        deposed: false,
        depends_on: resource.all_dependencies(),
        changes,
        desired: Some(resource.properties.clone()),
        note: None,
    }
}

/// Deletions of the members of recorded objects that state does not record (an ingress rule
/// added by hand to a recorded security group, a route added to a recorded route table): the
/// stack declares all of a group's rules and all of a table's routes, so `up` removes the others.
/// Addressed `<parent>.unrecorded_<attribute>[n]`, in the order of their parents in state, then
/// by id.
pub fn plan_member_removals(state: &StateDocument, members: &[OwnedObject]) -> Vec<ResourceAction> {
    let recorded: HashSet<(&str, &str)> = state
        .resources
        .values()
        .chain(&state.deposed)
        .map(|r| (r.resource_type.as_str(), r.id.as_str()))
        .collect();
    let mut actions = Vec::new();
    for parent in state.resources.values() {
        let mut unrecorded: Vec<&OwnedObject> = members
            .iter()
            .filter(|m| {
                m.member_of.as_ref().is_some_and(|of| {
                    of.resource_type == parent.resource_type && of.id == parent.id
                })
            })
            .filter(|m| !recorded.contains(&(m.resource_type.as_str(), m.id.as_str())))
            .collect();
        unrecorded.sort_by(|a, b| {
            let attribute = |m: &OwnedObject| m.member_of.as_ref().map(|of| of.attribute.clone());
            (attribute(a), &a.id).cmp(&(attribute(b), &b.id))
        });
        unrecorded.dedup_by(|a, b| a.id == b.id && a.resource_type == b.resource_type);
        let mut counts: HashMap<String, usize> = HashMap::new();
        for member in unrecorded {
            let attribute = &member.member_of.as_ref().expect("filtered on").attribute;
            let index = counts.entry(attribute.clone()).or_default();
            let address = Address::parse(&format!(
                "{}.unrecorded_{attribute}[{index}]",
                parent.address
            ));
            *index += 1;
            let Ok(address) = address else {
                continue;
            };
            actions.push(ResourceAction {
                address,
                resource_type: member.resource_type.clone(),
                action: ActionKind::Delete,
                replacement_order: None,
                replacement_reasons: Vec::new(),
                previous_type: None,
                resource_id: Some(member.id.clone()),
                deposed: false,
                depends_on: Vec::new(),
                changes: member
                    .properties
                    .iter()
                    .map(|(name, value)| AttributeChange {
                        name: name.clone(),
                        before: Some(value.clone()),
                        after: None,
                        after_unknown: false,
                        sensitive: false,
                        forces_replacement: None,
                    })
                    .collect(),
                desired: None,
                note: Some(format!(
                    "{} {} of {} is not declared by the stack",
                    attribute.trim_end_matches('s').replace('_', " "),
                    member.id,
                    parent.address
                )),
            });
        }
    }
    actions
}

/// `plan` plus [`plan_member_removals`] (what `up` and `plan --refresh` show after reading the
/// members of the recorded objects).
pub fn with_member_removals(
    mut plan: Plan,
    state: &StateDocument,
    members: &[OwnedObject],
) -> Plan {
    let removals = plan_member_removals(state, members);
    if !removals.is_empty() {
        plan.actions.extend(removals);
        plan.summary = Summary::of(&plan.actions);
    }
    plan
}

/// An attribute's current value: the live one when the provider reports it, else the recorded
/// one (providers do not read back every attribute, e.g. secrets). The planner compares desired
/// values with this; `drift` compares recorded values with it.
pub fn current_value<'a>(
    record: &'a ResourceRecord,
    live: Option<&'a LiveResource>,
    name: &str,
) -> Option<&'a Value> {
    live.and_then(|l| l.properties.get(name))
        .or_else(|| record.properties.get(name))
}

fn deletion(record: &ResourceRecord, deposed: bool, depends_on: Vec<Address>) -> ResourceAction {
    let changes = record
        .properties
        .iter()
        .map(|(name, before)| {
            let sensitive = is_encrypted(before);
            AttributeChange {
                name: name.clone(),
                before: if sensitive {
                    None
                } else {
                    Some(before.clone())
                },
                after: None,
                after_unknown: false,
                sensitive,
                forces_replacement: None,
            }
        })
        .collect();
    ResourceAction {
        address: record.address.clone(),
        resource_type: record.resource_type.clone(),
        action: ActionKind::Delete,
        replacement_order: None,
        replacement_reasons: Vec::new(),
        previous_type: None,
        resource_id: Some(record.id.clone()),
        deposed,
        depends_on,
        changes,
        desired: None,
        note: deposed.then(|| "left over from an interrupted replacement".to_owned()),
    }
}

/// Deposed objects first, then resources the stack no longer declares, dependents before their
/// dependencies (reverse of the recorded dependency order).
fn plan_deletions(desired: &DesiredSet, state: Option<&StateDocument>) -> Vec<ResourceAction> {
    let Some(state) = state else {
        return Vec::new();
    };
    let mut actions: Vec<ResourceAction> = state
        .deposed
        .iter()
        .map(|record| deletion(record, true, Vec::new()))
        .collect();
    let removed: Vec<&ResourceRecord> = state
        .resources
        .values()
        .filter(|record| desired.get(&record.address).is_none())
        .collect();
    let removed_set: HashSet<&Address> = removed.iter().map(|r| &r.address).collect();
    let edges = removed
        .iter()
        .map(|record| {
            let deps = record
                .depends_on
                .iter()
                .filter(|d| removed_set.contains(d))
                .cloned()
                .collect();
            (record.address.clone(), deps)
        })
        .collect();
    let order: Vec<Address> = match ResourceGraph::from_edges(edges) {
        Ok(graph) => graph.ordered().into_iter().rev().cloned().collect(),
        // A corrupt recorded graph still deletes, in reverse record order.
        Err(_) => removed.iter().rev().map(|r| r.address.clone()).collect(),
    };
    for address in order {
        let record = &state.resources[&address];
        actions.push(deletion(record, false, record.depends_on.clone()));
    }
    actions
}
