//! The provider seam: one [`Provider`] per resource type, looked up in a [`ProviderRegistry`].
//! Only the executor (and crash recovery) call providers; the planner reads [`TypeSpec`]s only.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::types::{TypeCatalog, TypeSpec};
use super::zones::Zone;
use super::{Address, ResourceType};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An object as a provider sees it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LiveResource {
    pub id: String,
    pub properties: IndexMap<String, Value>,
    pub outputs: IndexMap<String, Value>,
    pub tags: IndexMap<String, String>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ProviderError {
    /// The API asked us to slow down; the executor backs off and retries.
    #[error("throttled by the provider API")]
    Throttled { retry_after: Option<Duration> },
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Failed(String),
}

/// An object a provider found carrying a deployment's ownership tags (`stacksmith:stack` and
/// `stacksmith:instance`), or living inside such an object (a security group's rules, a route
/// table's routes), for drift's search for objects state does not record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnedObject {
    pub resource_type: ResourceType,
    pub id: String,
    /// The object's tags (empty for members, which carry none).
    pub tags: IndexMap<String, String>,
    /// What the object is, in the type's property names (shown for unmanaged objects).
    pub properties: IndexMap<String, Value>,
    /// Set for an object that is part of another: drift reports an unrecorded member as a change
    /// of its parent's `attribute` when state records the parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_of: Option<MemberOf>,
}

/// The parent of a member object and the parent's attribute the member belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberOf {
    pub resource_type: ResourceType,
    pub id: String,
    /// e.g. `ingress_rules`, `routes`.
    pub attribute: String,
}

/// The request context every call gets.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub address: Address,
    pub resource_type: ResourceType,
    /// Ids state already records for this address (the object a create-before-delete
    /// replacement replaces, deposed objects). A create that looks for an object an earlier
    /// attempt made (by ownership tags or natural key) never adopts one of these: they carry the
    /// same tags, and the plan deletes them once the new object exists.
    pub taken: Vec<String>,
}

/// Create, read, update and delete for the types a provider serves.
///
/// Contract with the executor: an `Err` from `create` means nothing was created (on an ambiguous
/// outcome such as a timeout, the provider looks the object up by its ownership tags before
/// answering); `Throttled` is retried with backoff; `delete` of a missing object succeeds.
pub trait Provider: Send + Sync {
    /// Replacement rules and duration estimate of a type this provider serves.
    fn type_spec(&self, resource_type: &ResourceType) -> TypeSpec;

    /// Creates the object with resolved `properties`; `tags` are the ownership tags to attach
    /// (stack, instance, address) so an interrupted create can be adopted.
    fn create<'a>(
        &'a self,
        context: &'a CallContext,
        properties: &'a IndexMap<String, Value>,
        tags: &'a IndexMap<String, String>,
    ) -> BoxFuture<'a, Result<LiveResource, ProviderError>>;

    /// Reads an object by id: `None` when it no longer exists.
    fn read<'a>(
        &'a self,
        context: &'a CallContext,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<LiveResource>, ProviderError>>;

    /// Finds objects carrying all of `tags` (adoption after an interrupted create).
    fn find_by_tags<'a>(
        &'a self,
        context: &'a CallContext,
        tags: &'a IndexMap<String, String>,
    ) -> BoxFuture<'a, Result<Vec<LiveResource>, ProviderError>>;

    /// Finds the object of a type that carries no tags (route, security group rule, route table
    /// association) by its natural key, read from the `properties` an interrupted create was
    /// given (see [`super::types::natural_key`]). Read-only. Types with tags find nothing here.
    fn find_by_key<'a>(
        &'a self,
        context: &'a CallContext,
        properties: &'a IndexMap<String, Value>,
    ) -> BoxFuture<'a, Result<Vec<LiveResource>, ProviderError>> {
        let _ = (context, properties);
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Updates an object in place to `properties`.
    fn update<'a>(
        &'a self,
        context: &'a CallContext,
        id: &'a str,
        properties: &'a IndexMap<String, Value>,
    ) -> BoxFuture<'a, Result<LiveResource, ProviderError>>;

    /// Deletes an object; deleting one that is already gone succeeds.
    fn delete<'a>(
        &'a self,
        context: &'a CallContext,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;

    /// The members of one recorded object that are not AWS defaults (a security group's rules, a
    /// route table's routes), with `member_of` set: `up` removes the ones state does not record.
    /// Read-only. Types without members have none.
    fn list_members<'a>(
        &'a self,
        context: &'a CallContext,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<OwnedObject>, ProviderError>> {
        let _ = (context, id);
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Every object of this provider's types that carries all of `ownership` (the stack and
    /// instance tags), recorded in state or not, plus the members of those objects that are not
    /// AWS defaults (rules of owned security groups, routes of owned route tables). Read-only;
    /// used by `drift` to find unmanaged objects. Providers that cannot list find nothing.
    fn list_owned<'a>(
        &'a self,
        ownership: &'a IndexMap<String, String>,
    ) -> BoxFuture<'a, Result<Vec<OwnedObject>, ProviderError>> {
        let _ = ownership;
        Box::pin(async { Ok(Vec::new()) })
    }

    /// The availability zones the region offers to subnets (read-only), for
    /// [`super::zones::resolve`]; `None` when this provider cannot tell (the names are then
    /// assumed).
    fn availability_zones(&self) -> BoxFuture<'_, Result<Option<Vec<Zone>>, ProviderError>> {
        Box::pin(async { Ok(None) })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("no provider is registered for resource type `{0}`")]
pub struct MissingProvider(pub ResourceType);

/// Resource type -> provider. The real AWS/Kubernetes providers register here; tests register the
/// fake provider for every type.
#[derive(Clone, Default)]
pub struct ProviderRegistry {
    by_type: HashMap<ResourceType, Arc<dyn Provider>>,
    fallback: Option<Arc<dyn Provider>>,
}

impl ProviderRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, resource_type: ResourceType, provider: Arc<dyn Provider>) {
        self.by_type.insert(resource_type, provider);
    }

    /// A provider for every type not registered explicitly (the fake provider in tests).
    pub fn register_fallback(&mut self, provider: Arc<dyn Provider>) {
        self.fallback = Some(provider);
    }

    pub fn get(&self, resource_type: &ResourceType) -> Result<Arc<dyn Provider>, MissingProvider> {
        self.by_type
            .get(resource_type)
            .or(self.fallback.as_ref())
            .cloned()
            .ok_or_else(|| MissingProvider(resource_type.clone()))
    }

    /// Each registered provider once (the fallback included), for calls that are not per type.
    pub fn distinct_providers(&self) -> Vec<Arc<dyn Provider>> {
        let mut distinct: Vec<Arc<dyn Provider>> = Vec::new();
        for provider in self.by_type.values().chain(self.fallback.iter()) {
            if !distinct.iter().any(|known| Arc::ptr_eq(known, provider)) {
                distinct.push(provider.clone());
            }
        }
        distinct
    }

    /// The type specs the planner uses: each registered provider's own, over the built-in catalog.
    pub fn catalog(&self) -> TypeCatalog {
        let mut catalog = TypeCatalog::builtin();
        for (resource_type, provider) in &self.by_type {
            catalog.insert(provider.type_spec(resource_type));
        }
        catalog
    }
}
