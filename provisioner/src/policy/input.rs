//! The policy input document (`input` in Rego), format version 1, documented with an example in
//! `policies/README.md`.
//!
//! It is built from a plan (resource addresses, types, actions, before/after properties) and the
//! validated stack. In-cluster objects (control plane, namespaces, network policies) are not plan
//! resources yet, so `platform` carries those settings with the stable addresses guardrail
//! messages use (`controlplane.deployment`, `baseline.namespace.<name>`,
//! `baseline.network_policy.default_deny`).

use indexmap::IndexMap;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::engine::plan::{ActionKind, Plan};
use crate::engine::value;
use crate::stack::LoadedStack;
use crate::stack::model::{Baseline, ControlPlane, NetworkPolicyMode};

/// The version of the input document; bumped on any incompatible change.
pub const INPUT_FORMAT_VERSION: u32 = 1;

/// Placeholder put in `before`/`after` for a secret value, which policies never see.
pub const SENSITIVE: &str = "(sensitive)";

/// The address guardrail messages use for the control plane Deployment.
pub const CONTROLPLANE_ADDRESS: &str = "controlplane.deployment";

/// `input`.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyInput {
    pub format_version: u32,
    pub stack: StackInfo,
    pub plan: PlanInfo,
    /// Every resource of the plan, in plan order.
    pub resources: Vec<PolicyResource>,
    /// In-cluster settings that are not plan resources yet.
    pub platform: Platform,
}

/// `input.stack`.
#[derive(Debug, Clone, Serialize)]
pub struct StackInfo {
    /// The stack's `name`.
    pub name: String,
    /// `--instance`, or `null`.
    pub instance: Option<String>,
    /// The instance-qualified name (`<name>-<instance>` or `<name>`).
    pub qualified_name: String,
    /// The `environment` tag, or `null` when the stack has none.
    pub environment: Option<String>,
    pub region: String,
    /// The stack's `tags`.
    pub tags: IndexMap<String, String>,
    /// The whole validated stack (`extends` merged, variables interpolated) as the JSON of the
    /// stack model, with `state.url` redacted.
    pub config: Value,
}

/// `input.plan`.
#[derive(Debug, Clone, Serialize)]
pub struct PlanInfo {
    /// Whether live values were read before planning.
    pub refreshed: bool,
    /// The state serial the plan was made against (0 without state).
    pub state_serial: u64,
    pub summary: Summary,
}

/// `input.plan.summary`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub replace: usize,
    pub delete: usize,
    pub no_op: usize,
}

/// One element of `input.resources`.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyResource {
    pub address: String,
    #[serde(rename = "type")]
    pub resource_type: String,
    /// `create`, `update`, `replace`, `delete` or `no_op`.
    pub action: &'static str,
    /// Properties before the change; `null` for `create`.
    pub before: Option<Map<String, Value>>,
    /// Properties after the change; `null` for `delete`. A value only known after apply is the
    /// reference marker `{"$ref": {"address", "output"}}`; a secret is `"(sensitive)"`.
    pub after: Option<Map<String, Value>>,
    /// Names of the properties whose value is only known after apply.
    pub after_unknown: Vec<String>,
    /// Names of the secret properties (their values are never in the input).
    pub sensitive: Vec<String>,
}

/// `input.platform`.
#[derive(Debug, Clone, Serialize)]
pub struct Platform {
    /// `null` when the stack has no `controlplane`.
    pub controlplane: Option<ControlPlaneInput>,
    /// `null` when the stack has no `baseline`.
    pub baseline: Option<BaselineInput>,
}

/// `input.platform.controlplane`: the stack's `controlplane` settings plus `address`.
#[derive(Debug, Clone, Serialize)]
pub struct ControlPlaneInput {
    pub address: &'static str,
    #[serde(flatten)]
    pub settings: ControlPlane,
}

/// `input.platform.baseline`.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineInput {
    /// One entry per namespace the baseline creates.
    pub namespaces: Vec<NamespaceInput>,
    /// The default-deny network policies, present only when `network_policies: default-deny`.
    pub network_policies: NetworkPoliciesInput,
}

/// `input.platform.baseline.namespaces[_]`.
#[derive(Debug, Clone, Serialize)]
pub struct NamespaceInput {
    /// `baseline.namespace.<name>`.
    pub address: String,
    pub name: String,
    /// `privileged`, `baseline`, `restricted`, or `null` when the stack sets no level.
    pub pod_security: Option<Value>,
}

/// `input.platform.baseline.network_policies`.
#[derive(Debug, Clone, Serialize)]
pub struct NetworkPoliciesInput {
    /// `baseline.network_policy.default_deny`.
    pub address: &'static str,
    /// `default-deny` or `none`.
    pub mode: Value,
}

fn action_name(action: ActionKind) -> &'static str {
    match action {
        ActionKind::NoOp => "no_op",
        ActionKind::Create => "create",
        ActionKind::Update => "update",
        ActionKind::Replace => "replace",
        ActionKind::Delete => "delete",
    }
}

impl PolicyInput {
    /// The input for `plan` of `loaded`.
    pub fn from_plan(loaded: &LoadedStack, plan: &Plan) -> Self {
        let stack = &loaded.stack;
        let mut config = serde_json::to_value(stack).unwrap_or(Value::Null);
        if let Some(url) = config.pointer_mut("/state/url")
            && !url.is_null()
        {
            *url = Value::String(SENSITIVE.to_owned());
        }
        let summary = &plan.summary;
        Self {
            format_version: INPUT_FORMAT_VERSION,
            stack: StackInfo {
                name: stack.name.clone(),
                instance: loaded.names.instance.clone(),
                qualified_name: loaded.names.qualified.clone(),
                environment: stack.tags.get("environment").cloned(),
                region: stack.region.clone(),
                tags: stack.tags.clone(),
                config,
            },
            plan: PlanInfo {
                refreshed: plan.refreshed,
                state_serial: plan.state.serial,
                summary: Summary {
                    create: summary.create,
                    update: summary.update,
                    replace: summary.replace,
                    delete: summary.delete,
                    no_op: summary.no_op,
                },
            },
            resources: plan.actions.iter().map(resource).collect(),
            platform: Platform {
                controlplane: stack
                    .controlplane
                    .clone()
                    .map(|settings| ControlPlaneInput {
                        address: CONTROLPLANE_ADDRESS,
                        settings,
                    }),
                baseline: stack.baseline.as_ref().map(baseline),
            },
        }
    }

    /// The document as a JSON value.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("the policy input always serializes")
    }
}

/// `before`/`after` of one plan action. Unchanged properties (absent from `changes` for update,
/// replace and no-op) are the same before and after: their desired value.
fn resource(action: &crate::engine::plan::ResourceAction) -> PolicyResource {
    let mut after_unknown = Vec::new();
    let mut sensitive = Vec::new();
    let mut before = Map::new();
    let mut after = Map::new();
    if let Some(desired) = &action.desired {
        for (name, value) in desired {
            if value::as_secret_request(value).is_some() {
                before.insert(name.clone(), Value::String(SENSITIVE.to_owned()));
                after.insert(name.clone(), Value::String(SENSITIVE.to_owned()));
                sensitive.push(name.clone());
            } else {
                before.insert(name.clone(), value.clone());
                after.insert(name.clone(), value.clone());
            }
        }
    }
    for change in &action.changes {
        let name = &change.name;
        if change.sensitive {
            if !sensitive.contains(name) {
                sensitive.push(name.clone());
            }
            before.insert(name.clone(), Value::String(SENSITIVE.to_owned()));
            after.insert(name.clone(), Value::String(SENSITIVE.to_owned()));
            continue;
        }
        match &change.before {
            Some(value) => {
                before.insert(name.clone(), value.clone());
            }
            None => {
                before.remove(name);
            }
        }
        if change.after_unknown {
            after_unknown.push(name.clone());
        } else {
            match &change.after {
                Some(value) => {
                    after.insert(name.clone(), value.clone());
                }
                None => {
                    after.remove(name);
                }
            }
        }
    }
    let (before, after) = match action.action {
        ActionKind::Create => (None, Some(after)),
        ActionKind::Delete => (Some(before), None),
        _ => (Some(before), Some(after)),
    };
    PolicyResource {
        address: action.address.to_string(),
        resource_type: action.resource_type.to_string(),
        action: action_name(action.action),
        before,
        after,
        after_unknown,
        sensitive,
    }
}

fn baseline(baseline: &Baseline) -> BaselineInput {
    let namespaces = baseline
        .namespaces
        .iter()
        .map(|name| NamespaceInput {
            address: format!(
                "baseline.namespace.{}",
                crate::engine::desired::segment(name)
            ),
            name: name.clone(),
            pod_security: baseline
                .pod_security
                .get(name)
                .map(|level| serde_json::to_value(level).unwrap_or(Value::Null)),
        })
        .collect();
    let mode = match baseline.network_policies {
        NetworkPolicyMode::DefaultDeny => "default-deny",
        NetworkPolicyMode::None => "none",
    };
    BaselineInput {
        namespaces,
        network_policies: NetworkPoliciesInput {
            address: "baseline.network_policy.default_deny",
            mode: Value::String(mode.to_owned()),
        },
    }
}
