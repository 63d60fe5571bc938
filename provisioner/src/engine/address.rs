//! Stable resource addresses such as `network.subnet.private[1]` or `cluster.node_group.workers`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A resource's stable address: dot-separated lowercase segments, each optionally followed by an
/// index (`[1]`). Addresses never change between runs for the same stack entry, so state keys,
/// plan entries and ownership tags stay comparable.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid resource address `{address}`: {problem}")]
pub struct AddressError {
    pub address: String,
    pub problem: &'static str,
}

impl Address {
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        let fail = |problem| {
            Err(AddressError {
                address: text.to_owned(),
                problem,
            })
        };
        if text.is_empty() {
            return fail("it is empty");
        }
        for segment in text.split('.') {
            let (name, index) = match segment.find('[') {
                Some(open) => (&segment[..open], Some(&segment[open..])),
                None => (segment, None),
            };
            if name.is_empty() {
                return fail("a segment has no name");
            }
            if !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
            {
                return fail("segment names use lowercase letters, digits, `_` and `-`");
            }
            if let Some(index) = index {
                let inner = index.strip_prefix('[').and_then(|i| i.strip_suffix(']'));
                match inner {
                    Some(digits)
                        if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) => {}
                    _ => return fail("an index must be `[<digits>]` at the end of a segment"),
                }
            }
        }
        Ok(Self(text.to_owned()))
    }

    /// Builds an address from trusted parts; panics on a malformed result, which is a bug in the
    /// code deriving addresses, never user input.
    pub fn new(text: impl Into<String>) -> Self {
        let text = text.into();
        match Self::parse(&text) {
            Ok(address) => address,
            Err(error) => panic!("{error}"),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({})", self.0)
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Address::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_indexed_and_named_segments() {
        assert!(Address::parse("network.subnet.private[1]").is_ok());
        assert!(Address::parse("cluster.node_group.workers").is_ok());
        assert!(Address::parse("cluster.addon.aws-ebs-csi-driver").is_ok());
    }

    #[test]
    fn rejects_malformed_addresses() {
        for bad in ["", "a..b", "A.b", "a[x]", "a[1]b", "a[]", "a b"] {
            assert!(Address::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
