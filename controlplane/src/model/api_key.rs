//! API keys: `sk_` followed by 64 hex digits (32 random bytes); only their SHA-256 is stored.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// What every team key starts with.
pub const KEY_PREFIX: &str = "sk_";

/// A freshly generated API key. Shown once to its creator, never logged.
pub struct ApiKeySecret(String);

impl ApiKeySecret {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self(format!("{KEY_PREFIX}{}", hex::encode(bytes)))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The first characters, stored to let people recognise a key.
    pub fn display_prefix(&self) -> String {
        self.0.chars().take(KEY_PREFIX.len() + 8).collect()
    }
}

impl std::fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeySecret({}...)", self.display_prefix())
    }
}

/// sha256 of a presented key.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}
