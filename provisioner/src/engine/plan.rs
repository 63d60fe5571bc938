//! The plan: what `up` will do, per resource and per attribute. Serialized as the versioned JSON
//! format documented in `provisioner/docs/plan-json.md`; `up --plan FILE` applies a saved plan.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::types::ReplacementOrder;
use super::{Address, ResourceType};

pub const PLAN_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: u32,
    pub stack: String,
    #[serde(default)]
    pub instance: Option<String>,
    /// The state the plan was made against; `up --plan` refuses when state moved since.
    pub state: StateVersion,
    /// Whether live values were read from the providers before planning.
    pub refreshed: bool,
    /// Every resource, desired ones in dependency order then deletions in reverse order.
    pub actions: Vec<ResourceAction>,
    pub summary: Summary,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateVersion {
    /// `null` when the deployment has no state yet.
    pub lineage: Option<String>,
    pub serial: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    NoOp,
    Create,
    Update,
    Replace,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceAction {
    pub address: Address,
    #[serde(rename = "type")]
    pub resource_type: ResourceType,
    pub action: ActionKind,
    /// Set for `replace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement_order: Option<ReplacementOrder>,
    /// Why a replacement is needed, one sentence per forcing attribute.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replacement_reasons: Vec<String>,
    /// For a replacement caused by a type change: the type of the object being replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_type: Option<ResourceType>,
    /// The provider id of the existing object (update, replace, delete, no-op).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// For deletions: the object is a leftover of an interrupted create-before-delete replacement.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deposed: bool,
    /// Resources that must be applied before this one (for deletions: that this one depended on).
    #[serde(default)]
    pub depends_on: Vec<Address>,
    /// Changed attributes only (all attributes for create and delete).
    #[serde(default)]
    pub changes: Vec<AttributeChange>,
    /// The desired properties, references unresolved, for create/update/replace/no-op.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<IndexMap<String, Value>>,
    /// A note for the reader, e.g. that the object was deleted outside Stacksmith.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributeChange {
    pub name: String,
    /// `null` when absent before (or sensitive).
    pub before: Option<Value>,
    /// `null` when absent after, unknown until apply, or sensitive.
    pub after: Option<Value>,
    /// The value depends on outputs of resources not created yet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub after_unknown: bool,
    /// A secret: neither value is ever shown.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sensitive: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forces_replacement: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub replace: usize,
    pub delete: usize,
    pub no_op: usize,
}

impl Summary {
    pub fn of(actions: &[ResourceAction]) -> Self {
        let mut summary = Self::default();
        for action in actions {
            match action.action {
                ActionKind::NoOp => summary.no_op += 1,
                ActionKind::Create => summary.create += 1,
                ActionKind::Update => summary.update += 1,
                ActionKind::Replace => summary.replace += 1,
                ActionKind::Delete => summary.delete += 1,
            }
        }
        summary
    }

    pub fn has_changes(&self) -> bool {
        self.create + self.update + self.replace + self.delete > 0
    }
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        self.summary.has_changes()
    }

    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a plan always serializes");
        text.push('\n');
        text
    }

    pub fn from_json(text: &str) -> Result<Self, PlanFileError> {
        let raw: Value = serde_json::from_str(text)?;
        match raw.get("format_version").and_then(Value::as_u64) {
            Some(v) if v == u64::from(PLAN_FORMAT_VERSION) => Ok(serde_json::from_value(raw)?),
            Some(v) => Err(PlanFileError::UnsupportedVersion(v)),
            None => Err(PlanFileError::UnsupportedVersion(0)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlanFileError {
    #[error("the plan file is not valid plan JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("plan format_version {0} is not supported (this provisioner reads version 1)")]
    UnsupportedVersion(u64),
}
