//! Team API keys found valid recently, so that a request with a known key costs no database
//! round trip (`super::auth`). Only valid keys are kept, each for `api_key_cache_ms`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// A valid team key: its team and its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownKey {
    pub team_id: Uuid,
    pub key_id: Uuid,
}

/// Team keys recently found valid, by digest, with when they were looked up. Only valid keys
/// are kept (a bad key cannot grow the map), each for the configured time; a key revoked
/// through this server is forgotten at once ([`Self::forget_key`]).
#[derive(Debug)]
pub struct KeyCache {
    ttl: Duration,
    entries: Mutex<HashMap<[u8; 32], (KnownKey, Instant)>>,
}

/// Most keys remembered; beyond it, the expired entries go (or all, when none has expired).
const MAX_CACHED_KEYS: usize = 10_000;

impl KeyCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::default(),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (KnownKey, Instant)>> {
        // The map holds no invariant a panic could break.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn get(&self, digest: &[u8; 32]) -> Option<KnownKey> {
        if self.ttl.is_zero() {
            return None;
        }
        self.entries()
            .get(digest)
            .filter(|(_, looked_up)| looked_up.elapsed() < self.ttl)
            .map(|(key, _)| *key)
    }

    pub fn insert(&self, digest: [u8; 32], key: KnownKey) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries();
        if entries.len() >= MAX_CACHED_KEYS {
            entries.retain(|_, (_, looked_up)| looked_up.elapsed() < self.ttl);
            if entries.len() >= MAX_CACHED_KEYS {
                entries.clear();
            }
        }
        entries.insert(digest, (key, Instant::now()));
    }

    /// Forgets a key (it was revoked): its next request asks the database.
    pub fn forget_key(&self, key_id: Uuid) {
        self.entries().retain(|_, (key, _)| key.key_id != key_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_kept_for_their_time_and_forgotten_when_revoked() {
        let key = KnownKey {
            team_id: Uuid::now_v7(),
            key_id: Uuid::now_v7(),
        };
        let cache = KeyCache::new(Duration::from_millis(50));
        cache.insert([1; 32], key);
        assert_eq!(cache.get(&[1; 32]), Some(key));
        assert_eq!(cache.get(&[2; 32]), None);
        cache.forget_key(key.key_id);
        assert_eq!(cache.get(&[1; 32]), None);
        cache.insert([1; 32], key);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get(&[1; 32]), None, "expired");
        // Off: nothing is kept.
        let off = KeyCache::new(Duration::ZERO);
        off.insert([1; 32], key);
        assert_eq!(off.get(&[1; 32]), None);
    }
}
