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
use super::types::{TypeCatalog, natural_key, same_natural_key, satisfies};
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
    /// The invariant of [`check_no_delete_and_create`]: one plan never deletes and creates (or
    /// keeps) the same cloud object.
    #[error(
        "the plan would delete {deleted} ({id}) and also {verb} {kept}, the same cloud object; \
         this is a bug in Stacksmith's planner, nothing was changed"
    )]
    DeletesWhatItKeeps {
        deleted: Address,
        id: String,
        verb: &'static str,
        kept: Address,
    },
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
    check_no_delete_and_create(&actions)?;

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
        // A property neither recorded nor read back is one the resource was recorded without
        // (added to its type later): its value is not known to differ, so it is updated (the
        // provider records the live value), never a reason to replace.
        let unrecorded = before.is_none();
        let forces = spec
            .replacement_reason(name)
            .filter(|_| !unrecorded)
            .map(|reason| {
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
/// members of the recorded objects). An unrecorded member that is the object a declared resource
/// describes (same natural key: a route left by an interrupted create, a rule authorized just
/// before a kill) is adopted by that resource's create, never deleted; the result is checked
/// against [`check_no_delete_and_create`].
pub fn with_member_removals(
    mut plan: Plan,
    state: &StateDocument,
    members: &[OwnedObject],
) -> Result<Plan, PlanError> {
    let removals = plan_member_removals(state, members);
    let mut kept = Vec::new();
    for removal in removals {
        let adopter = plan.actions.iter().position(|action| {
            matches!(action.action, ActionKind::Create | ActionKind::Replace)
                && action.resource_type == removal.resource_type
                && same_natural_key(
                    &action.resource_type,
                    |name| after_value(action, name),
                    |name| before_value(&removal, name),
                )
        });
        match adopter {
            Some(index) => {
                let action = &mut plan.actions[index];
                let id = removal.resource_id.clone().unwrap_or_default();
                let note = format!("adopts the existing {id}, which the stack declares");
                action.note = Some(match action.note.take() {
                    Some(previous) => format!("{previous}; {note}"),
                    None => note,
                });
            }
            None => kept.push(removal),
        }
    }
    if !kept.is_empty() {
        plan.actions.extend(kept);
    }
    plan.summary = Summary::of(&plan.actions);
    check_no_delete_and_create(&plan.actions)?;
    Ok(plan)
}

/// An attribute's value after a create or update: `None` absent, `Some(None)` not known yet.
fn after_value<'a>(action: &'a ResourceAction, name: &str) -> Option<Option<&'a Value>> {
    let change = action.changes.iter().find(|c| c.name == name);
    match change {
        Some(change) if change.after_unknown || change.sensitive => Some(None),
        Some(change) => change.after.as_ref().map(Some),
        // An unchanged attribute of an update is its recorded value; a create lists them all.
        None if action.action == ActionKind::Create => None,
        None => Some(None),
    }
}

/// An attribute's value before a delete.
fn before_value<'a>(action: &'a ResourceAction, name: &str) -> Option<Option<&'a Value>> {
    action
        .changes
        .iter()
        .find(|c| c.name == name)
        .and_then(|c| c.before.as_ref())
        .map(Some)
}

/// The planner's invariant: one plan never deletes and creates the same cloud object. A delete
/// may not name the id of an object another action keeps (no-op, update), and a delete of a
/// tag-less object (route, rule, association) may not share its natural key with an object the
/// plan creates: the create would adopt the object the delete then removes, leaving the stack
/// without it while state says it exists.
pub fn check_no_delete_and_create(actions: &[ResourceAction]) -> Result<(), PlanError> {
    for deleted in actions.iter().filter(|a| a.action == ActionKind::Delete) {
        let Some(id) = deleted.resource_id.as_deref() else {
            continue;
        };
        for other in actions.iter().filter(|a| a.action != ActionKind::Delete) {
            let keeps = matches!(other.action, ActionKind::NoOp | ActionKind::Update)
                && other.resource_type == deleted.resource_type
                && other.resource_id.as_deref() == Some(id);
            let creates = matches!(other.action, ActionKind::Create | ActionKind::Replace)
                && other.resource_type == deleted.resource_type
                && natural_key(&other.resource_type).is_some()
                && same_natural_key(
                    &other.resource_type,
                    |name| after_value(other, name),
                    |name| before_value(deleted, name),
                );
            if keeps || creates {
                return Err(PlanError::DeletesWhatItKeeps {
                    deleted: deleted.address.clone(),
                    id: id.to_owned(),
                    verb: if keeps { "keep" } else { "create" },
                    kept: other.address.clone(),
                });
            }
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;

    use super::*;
    use crate::engine::ResourceType;
    use crate::engine::provider::MemberOf;

    fn record(address: &str, kind: &str, id: &str, properties: Value) -> ResourceRecord {
        ResourceRecord {
            address: Address::new(address),
            resource_type: ResourceType::new(kind),
            id: id.to_owned(),
            properties: serde_json::from_value(properties).unwrap(),
            outputs: serde_json::from_value(json!({ "id": id })).unwrap(),
            depends_on: Vec::new(),
            updated_at: Utc::now(),
        }
    }

    /// A recorded route table and security group; the stack declares a route and a rule in them.
    fn scenario() -> (DesiredSet, StateDocument) {
        let table = Address::new("network.route_table.public");
        let group = Address::new("network.security_group.database");
        let desired = DesiredSet {
            stack: "s".into(),
            instance: None,
            resources: vec![
                DesiredResource::new("network.route_table.public", "aws.ec2.route_table")
                    .with("vpc_id", json!("vpc-1")),
                DesiredResource::new("network.route.public_internet", "aws.ec2.route")
                    .with("route_table_id", OutputRef::new(&table, "id").to_value())
                    .with("destination_cidr_block", json!("0.0.0.0/0"))
                    .with("gateway_id", json!("igw-1")),
                DesiredResource::new("network.security_group.database", "aws.ec2.security_group")
                    .with("name", json!("db")),
                DesiredResource::new(
                    "network.security_group_rule.database_from_cluster",
                    "aws.ec2.security_group_rule",
                )
                .with("security_group_id", OutputRef::new(&group, "id").to_value())
                .with("direction", json!("ingress"))
                .with("protocol", json!("tcp"))
                .with("from_port", json!(5432))
                .with("to_port", json!(5432))
                .with("source_security_group_id", json!("sg-cluster")),
            ],
        };
        let mut state = StateDocument::new("s", None);
        state.serial = 3;
        for r in [
            record(
                "network.route_table.public",
                "aws.ec2.route_table",
                "rtb-1",
                json!({ "vpc_id": "vpc-1" }),
            ),
            record(
                "network.security_group.database",
                "aws.ec2.security_group",
                "sg-db",
                json!({ "name": "db" }),
            ),
        ] {
            state.resources.insert(r.address.clone(), r);
        }
        (desired, state)
    }

    fn member(kind: &str, id: &str, parent: (&str, &str, &str), properties: Value) -> OwnedObject {
        OwnedObject {
            resource_type: ResourceType::new(kind),
            id: id.to_owned(),
            tags: IndexMap::new(),
            properties: serde_json::from_value(properties).unwrap(),
            member_of: Some(MemberOf {
                resource_type: ResourceType::new(parent.0),
                id: parent.1.to_owned(),
                attribute: parent.2.to_owned(),
            }),
        }
    }

    fn planned(desired: &DesiredSet, state: &StateDocument, members: &[OwnedObject]) -> Plan {
        let catalog = TypeCatalog::builtin();
        let plan = plan(&PlanInput {
            desired,
            state: Some(state),
            live: None,
            catalog: &catalog,
        })
        .unwrap();
        with_member_removals(plan, state, members).unwrap()
    }

    fn action<'a>(plan: &'a Plan, address: &str) -> &'a ResourceAction {
        plan.actions
            .iter()
            .find(|a| a.address.to_string() == address)
            .unwrap_or_else(|| panic!("no action for {address}"))
    }

    /// The reported case: a kill after AuthorizeSecurityGroupIngress (and after CreateRoute) was
    /// sent, before state recorded it. The rerun's plan creates the rule and the route (the
    /// creates adopt them) and deletes neither as an unrecorded member.
    #[test]
    fn an_unrecorded_member_the_stack_declares_is_adopted_never_deleted() {
        let (desired, state) = scenario();
        let members = vec![
            member(
                "aws.ec2.route",
                "rtb-1_0.0.0.0/0",
                ("aws.ec2.route_table", "rtb-1", "routes"),
                json!({
                    "route_table_id": "rtb-1",
                    "destination_cidr_block": "0.0.0.0/0",
                    "gateway_id": "igw-1",
                }),
            ),
            member(
                "aws.ec2.security_group_rule",
                "sgr-1",
                ("aws.ec2.security_group", "sg-db", "ingress_rules"),
                json!({
                    "security_group_id": "sg-db",
                    "direction": "ingress",
                    "protocol": "tcp",
                    "from_port": 5432,
                    "to_port": 5432,
                    "source_security_group_id": "sg-cluster",
                }),
            ),
            // A rule added by hand: not declared, so removed.
            member(
                "aws.ec2.security_group_rule",
                "sgr-2",
                ("aws.ec2.security_group", "sg-db", "ingress_rules"),
                json!({
                    "security_group_id": "sg-db",
                    "direction": "ingress",
                    "protocol": "tcp",
                    "from_port": 22,
                    "to_port": 22,
                    "cidr_blocks": ["0.0.0.0/0"],
                }),
            ),
        ];
        let plan = planned(&desired, &state, &members);
        let deletes: Vec<_> = plan
            .actions
            .iter()
            .filter(|a| a.action == ActionKind::Delete)
            .map(|a| a.resource_id.clone().unwrap())
            .collect();
        assert_eq!(deletes, vec!["sgr-2".to_owned()]);
        let route = action(&plan, "network.route.public_internet");
        assert_eq!(route.action, ActionKind::Create);
        assert!(
            route
                .note
                .as_deref()
                .unwrap()
                .contains("adopts the existing rtb-1_0.0.0.0/0"),
            "{:?}",
            route.note
        );
        let rule = action(&plan, "network.security_group_rule.database_from_cluster");
        assert!(rule.note.as_deref().unwrap().contains("sgr-1"));
        check_no_delete_and_create(&plan.actions).unwrap();
    }

    /// A member with the declared key but another target (a route to a NAT instead of the
    /// gateway) is still the same cloud object: adopted, and the create converges its target.
    #[test]
    fn a_member_with_the_same_key_and_another_target_is_adopted_too() {
        let (desired, state) = scenario();
        let members = vec![member(
            "aws.ec2.route",
            "rtb-1_0.0.0.0/0",
            ("aws.ec2.route_table", "rtb-1", "routes"),
            json!({
                "route_table_id": "rtb-1",
                "destination_cidr_block": "0.0.0.0/0",
                "nat_gateway_id": "nat-9",
            }),
        )];
        let plan = planned(&desired, &state, &members);
        assert!(plan.actions.iter().all(|a| a.action != ActionKind::Delete));
    }

    #[test]
    fn the_invariant_refuses_a_plan_that_deletes_what_it_creates_or_keeps() {
        let (desired, state) = scenario();
        let catalog = TypeCatalog::builtin();
        let plan = plan(&PlanInput {
            desired: &desired,
            state: Some(&state),
            live: None,
            catalog: &catalog,
        })
        .unwrap();
        // A member removal added behind the planner's back, same key as the route's create.
        let mut actions = plan.actions.clone();
        let mut removal = plan_member_removals(
            &state,
            &[member(
                "aws.ec2.route",
                "rtb-1_0.0.0.0/0",
                ("aws.ec2.route_table", "rtb-1", "routes"),
                json!({ "route_table_id": "rtb-1", "destination_cidr_block": "0.0.0.0/0" }),
            )],
        );
        actions.append(&mut removal);
        let error = check_no_delete_and_create(&actions).unwrap_err();
        assert!(
            error.to_string().contains("network.route.public_internet"),
            "{error}"
        );
        // A delete of an id that a no-op keeps.
        let mut actions = plan.actions.clone();
        let mut delete = action(&plan, "network.route_table.public").clone();
        delete.address = Address::new("network.route_table.public.unrecorded_routes[0]");
        delete.action = ActionKind::Delete;
        actions.push(delete);
        assert!(matches!(
            check_no_delete_and_create(&actions),
            Err(PlanError::DeletesWhatItKeeps { verb: "keep", .. })
        ));
    }
}
