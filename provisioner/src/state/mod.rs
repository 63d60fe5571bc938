//! Deployment state: what exists, as recorded after each provider call, plus the journal of
//! operations in flight. Stored behind [`StateBackend`] (a local file or Postgres).
//!
//! Invariants:
//! * every save increments `serial`; `lineage` is fixed when a deployment's state is first
//!   created, so a plan can tell whether state moved since it was made;
//! * a [`PendingOperation`] is saved before every provider call and removed (settled) in the same
//!   save that records its outcome, so after a crash the state says exactly which calls may have
//!   happened;
//! * secret values only appear as [`crate::engine::secrets`] ciphertext.

pub mod backend;
pub mod journal;
pub mod local;
pub mod lock;
pub mod postgres;

use chrono::{DateTime, Utc};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{Address, ResourceType};

pub use backend::{BackendError, StateBackend};
pub use lock::LockInfo;

pub const STATE_FORMAT_VERSION: u32 = 1;

/// One deployment's state document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateDocument {
    pub format_version: u32,
    pub stack: String,
    #[serde(default)]
    pub instance: Option<String>,
    pub lineage: String,
    pub serial: u64,
    #[serde(default)]
    pub resources: IndexMap<Address, ResourceRecord>,
    /// Objects replaced with create-before-delete whose deletion has not finished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deposed: Vec<ResourceRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<PendingOperation>,
    /// For an instance of a template stack: when it was first created and when it expires
    /// (fixed at the first `up`, so later runs tag resources with the same `stacksmith:expires-at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<InstanceLifetime>,
}

/// When an instance was created and when `provisioner gc` may tear it down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceLifetime {
    pub created_at: DateTime<Utc>,
    /// `created_at` plus the stack's `instances.ttl`; `None` when the stack sets no TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

impl InstanceLifetime {
    /// The lifetime of an instance created at `now` under a stack whose TTL is `ttl`.
    pub fn starting(now: DateTime<Utc>, ttl: Option<std::time::Duration>) -> Self {
        let expires_at = ttl
            .and_then(|ttl| chrono::Duration::from_std(ttl).ok())
            .and_then(|ttl| now.checked_add_signed(ttl));
        Self {
            created_at: now,
            expires_at,
        }
    }

    /// Whether `gc` may tear the instance down at `now`.
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

impl StateDocument {
    /// A new, empty document with a fresh lineage (serial 0: never saved).
    pub fn new(stack: &str, instance: Option<&str>) -> Self {
        Self {
            format_version: STATE_FORMAT_VERSION,
            stack: stack.to_owned(),
            instance: instance.map(str::to_owned),
            lineage: uuid::Uuid::new_v4().to_string(),
            serial: 0,
            resources: IndexMap::new(),
            deposed: Vec::new(),
            pending: Vec::new(),
            lifetime: None,
        }
    }

    /// Whether the document records nothing that exists or may exist (after `down`).
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty() && self.deposed.is_empty() && self.pending.is_empty()
    }
}

/// One deployment found in a backend's store ([`StateBackend::list_deployments`]).
#[derive(Debug, Clone)]
pub struct StoredDeployment {
    /// The deployment's name (`<stack>[-<instance>]`).
    pub name: String,
    pub document: StateDocument,
}

/// A resource that exists, as last recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceRecord {
    pub address: Address,
    #[serde(rename = "type")]
    pub resource_type: ResourceType,
    /// The provider's id of the resource.
    pub id: String,
    /// The resolved properties the resource was created or last updated with. Secret properties
    /// hold ciphertext objects, never plain text.
    #[serde(default)]
    pub properties: IndexMap<String, Value>,
    /// Values the provider reported (ids, ARNs, endpoints).
    #[serde(default)]
    pub outputs: IndexMap<String, Value>,
    #[serde(default)]
    pub depends_on: Vec<Address>,
    pub updated_at: DateTime<Utc>,
}

/// What a pending provider call was doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingKind {
    Create,
    Update,
    Delete,
}

/// A provider call that started and has not been settled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingOperation {
    pub id: String,
    pub kind: PendingKind,
    pub address: Address,
    #[serde(rename = "type")]
    pub resource_type: ResourceType,
    /// The id of the object the call acts on (update/delete), absent for creates.
    #[serde(default)]
    pub resource_id: Option<String>,
    /// The tags a create carries, used to adopt the object if it was created.
    #[serde(default)]
    pub ownership_tags: IndexMap<String, String>,
    /// The resolved properties sent (secrets encrypted).
    #[serde(default)]
    pub properties: IndexMap<String, Value>,
    #[serde(default)]
    pub depends_on: Vec<Address>,
    pub started_at: DateTime<Utc>,
}

/// A state backend locator: the file path, or the Postgres deployment name.
pub fn deployment_name(stack: &str, instance: Option<&str>) -> String {
    match instance {
        Some(instance) => format!("{stack}-{instance}"),
        None => stack.to_owned(),
    }
}
