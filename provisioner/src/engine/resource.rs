//! Desired resources: what the stack asks for, before any provider call.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Address, value};

/// A resource type such as `aws.ec2.vpc` or `aws.eks.node_group`; the provider registry maps each
/// type to its provider.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ResourceType(pub String);

impl ResourceType {
    pub fn new(name: &str) -> Self {
        Self(name.to_owned())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ResourceType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One resource the stack wants, with its properties (which may embed references and secret
/// requests, see [`value`]) and explicit dependencies beyond those its references imply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredResource {
    pub address: Address,
    #[serde(rename = "type")]
    pub resource_type: ResourceType,
    #[serde(default)]
    pub properties: IndexMap<String, Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<Address>,
}

impl DesiredResource {
    pub fn new(address: &str, resource_type: &str) -> Self {
        Self {
            address: Address::new(address),
            resource_type: ResourceType::new(resource_type),
            properties: IndexMap::new(),
            depends_on: Vec::new(),
        }
    }

    pub fn with(mut self, name: &str, value: Value) -> Self {
        self.properties.insert(name.to_owned(), value);
        self
    }

    pub fn after(mut self, dependency: &Address) -> Self {
        if !self.depends_on.contains(dependency) {
            self.depends_on.push(dependency.clone());
        }
        self
    }

    /// Explicit dependencies plus every resource a property references, sorted and deduplicated.
    pub fn all_dependencies(&self) -> Vec<Address> {
        let mut all: Vec<Address> = self.depends_on.clone();
        for property in self.properties.values() {
            all.extend(value::references(property).into_iter().map(|r| r.address));
        }
        all.sort();
        all.dedup();
        all
    }
}

/// The full desired resource set of one stack (and instance).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredSet {
    pub stack: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    pub resources: Vec<DesiredResource>,
}

impl DesiredSet {
    pub fn get(&self, address: &Address) -> Option<&DesiredResource> {
        self.resources.iter().find(|r| &r.address == address)
    }
}

/// The ownership tags the executor adds to every resource it creates, used to adopt a resource
/// whose creation was interrupted before state recorded it.
pub fn ownership_tags(
    stack: &str,
    instance: Option<&str>,
    address: &Address,
) -> IndexMap<String, String> {
    let mut tags = deployment_tags(stack, instance);
    tags.insert("stacksmith:address".to_owned(), address.to_string());
    tags
}

/// The ownership tags every object of one deployment carries (`stacksmith:stack` and
/// `stacksmith:instance`, empty for the stack itself): how `drift` finds unmanaged objects.
pub fn deployment_tags(stack: &str, instance: Option<&str>) -> IndexMap<String, String> {
    let mut tags = IndexMap::new();
    tags.insert("stacksmith:stack".to_owned(), stack.to_owned());
    tags.insert(
        "stacksmith:instance".to_owned(),
        instance.unwrap_or("").to_owned(),
    );
    tags
}
