//! Property values. Desired properties are JSON trees in which two markers may appear anywhere:
//!
//! * `{"$ref": {"address": "network.vpc", "output": "id"}}`: another resource's output, resolved by
//!   the executor just before the provider call ("known after apply" for the planner while the
//!   dependency is not created yet);
//! * `{"$secret": {"length": 32}}`: a value the executor generates once, stores encrypted in
//!   state and never prints.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Address;

pub const REF_MARKER: &str = "$ref";
pub const SECRET_MARKER: &str = "$secret";

/// A reference to an output of another resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OutputRef {
    pub address: Address,
    pub output: String,
}

impl OutputRef {
    pub fn new(address: &Address, output: &str) -> Self {
        Self {
            address: address.clone(),
            output: output.to_owned(),
        }
    }

    /// The JSON marker that embeds this reference in a property tree.
    pub fn to_value(&self) -> Value {
        serde_json::json!({ REF_MARKER: { "address": self.address, "output": self.output } })
    }
}

impl std::fmt::Display for OutputRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.address, self.output)
    }
}

/// The marker for a generated secret of `length` characters.
pub fn generated_secret(length: usize) -> Value {
    serde_json::json!({ SECRET_MARKER: { "length": length } })
}

fn single_key<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    if map.len() == 1 { map.get(key) } else { None }
}

/// The reference a value is, when it is exactly a `$ref` marker.
pub fn as_reference(value: &Value) -> Option<OutputRef> {
    let map = value.as_object()?;
    let inner = single_key(map, REF_MARKER)?;
    serde_json::from_value(inner.clone()).ok()
}

/// The length of the generated secret a value asks for, when it is a `$secret` marker.
pub fn as_secret_request(value: &Value) -> Option<usize> {
    let map = value.as_object()?;
    let inner = single_key(map, SECRET_MARKER)?;
    inner.get("length")?.as_u64().map(|n| n as usize)
}

/// Every reference inside a value, in document order.
pub fn references(value: &Value) -> Vec<OutputRef> {
    let mut found = Vec::new();
    collect_references(value, &mut found);
    found
}

fn collect_references(value: &Value, found: &mut Vec<OutputRef>) {
    if let Some(reference) = as_reference(value) {
        found.push(reference);
        return;
    }
    match value {
        Value::Array(items) => items
            .iter()
            .for_each(|item| collect_references(item, found)),
        Value::Object(map) => map
            .values()
            .for_each(|item| collect_references(item, found)),
        _ => {}
    }
}

/// Replaces every reference using `lookup`. Returns the references `lookup` could not answer
/// when any is missing.
pub fn resolve(
    value: &Value,
    lookup: &dyn Fn(&OutputRef) -> Option<Value>,
) -> Result<Value, Vec<OutputRef>> {
    let mut missing = Vec::new();
    let resolved = resolve_into(value, lookup, &mut missing);
    if missing.is_empty() {
        Ok(resolved)
    } else {
        Err(missing)
    }
}

fn resolve_into(
    value: &Value,
    lookup: &dyn Fn(&OutputRef) -> Option<Value>,
    missing: &mut Vec<OutputRef>,
) -> Value {
    if let Some(reference) = as_reference(value) {
        return match lookup(&reference) {
            Some(found) => found,
            None => {
                missing.push(reference);
                Value::Null
            }
        };
    }
    match value {
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| resolve_into(item, lookup, missing))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, item)| (key.clone(), resolve_into(item, lookup, missing)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_and_resolves_nested_references() {
        let vpc = Address::new("network.vpc");
        let value = json!({ "ids": [OutputRef::new(&vpc, "id").to_value(), "literal"] });
        assert_eq!(references(&value), vec![OutputRef::new(&vpc, "id")]);
        let resolved = resolve(&value, &|_| Some(json!("vpc-1"))).unwrap();
        assert_eq!(resolved, json!({ "ids": ["vpc-1", "literal"] }));
        let missing = resolve(&value, &|_| None).unwrap_err();
        assert_eq!(missing.len(), 1);
    }

    #[test]
    fn recognises_secret_requests() {
        assert_eq!(as_secret_request(&generated_secret(24)), Some(24));
        assert_eq!(as_secret_request(&json!({"length": 3})), None);
    }
}
