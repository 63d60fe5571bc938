//! Rate limiting with governor (GCRA), in process: per client address (before authentication),
//! per API key and global (after authentication).
//!
//! Responses carry the IETF draft headers in their separate-field form
//! (draft-ietf-httpapi-ratelimit-headers up to -06):
//! `RateLimit-Limit` (the burst size: requests allowed at once), `RateLimit-Remaining`
//! (requests allowed right now) and `RateLimit-Reset` (seconds until the quota is full again,
//! or until the next request is allowed when limited). A limited request gets a 429 with
//! `Retry-After` (whole seconds, at least 1) as well. Successful authenticated requests carry the
//! per-key limiter's headers.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::{StateInformationMiddleware, StateSnapshot};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use uuid::Uuid;

use crate::config::RateLimitConfig;

type KeyedLimiter<K> =
    RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;
type DirectLimiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// Which limiter refused a request (the `scope` label of the rate-limited metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Client,
    Key,
    Global,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Key => "key",
            Self::Global => "global",
        }
    }
}

/// The state of one limiter after a check, rendered as response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateStatus {
    pub limit: u32,
    pub remaining: u32,
    pub reset_seconds: u64,
    /// `Some` when the request was refused: whole seconds to wait.
    pub retry_after_seconds: Option<u64>,
    pub scope: Scope,
}

impl RateStatus {
    pub fn is_limited(&self) -> bool {
        self.retry_after_seconds.is_some()
    }

    pub fn write_headers(&self, headers: &mut HeaderMap) {
        headers.insert("ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("ratelimit-remaining", HeaderValue::from(self.remaining));
        headers.insert("ratelimit-reset", HeaderValue::from(self.reset_seconds));
        if let Some(seconds) = self.retry_after_seconds {
            headers.insert("retry-after", HeaderValue::from(seconds));
        }
    }
}

fn ceil_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

fn quota(rps: u32, burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(rps)?;
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(rate);
    Some(Quota::per_second(rate).allow_burst(burst))
}

fn allowed(snapshot: &StateSnapshot, scope: Scope) -> RateStatus {
    let quota = snapshot.quota();
    let remaining = snapshot.remaining_burst_capacity();
    let used = quota.burst_size().get().saturating_sub(remaining);
    RateStatus {
        limit: quota.burst_size().get(),
        remaining,
        reset_seconds: ceil_seconds(quota.replenish_interval() * used),
        retry_after_seconds: None,
        scope,
    }
}

fn refused(quota: Quota, wait: Duration, scope: Scope) -> RateStatus {
    let wait_seconds = ceil_seconds(wait).max(1);
    RateStatus {
        limit: quota.burst_size().get(),
        remaining: 0,
        reset_seconds: wait_seconds,
        retry_after_seconds: Some(wait_seconds),
        scope,
    }
}

/// All limiters of one server. A limiter configured with rate 0 is absent.
pub struct RateLimiters {
    per_client: Option<KeyedLimiter<IpAddr>>,
    per_key: Option<KeyedLimiter<Uuid>>,
    global: Option<DirectLimiter>,
    clock: DefaultClock,
}

impl RateLimiters {
    pub fn new(config: &RateLimitConfig) -> Self {
        Self {
            per_client: quota(config.per_client_rps, config.per_client_burst)
                .map(|q| RateLimiter::keyed(q).with_middleware()),
            per_key: quota(config.per_key_rps, config.burst)
                .map(|q| RateLimiter::keyed(q).with_middleware()),
            global: quota(config.global_rps, config.global_rps)
                .map(|q| RateLimiter::direct(q).with_middleware()),
            clock: DefaultClock::default(),
        }
    }

    fn check_keyed<K: Hash + Eq + Clone>(
        &self,
        limiter: Option<&KeyedLimiter<K>>,
        key: &K,
        scope: Scope,
    ) -> Option<RateStatus> {
        let limiter = limiter?;
        Some(match limiter.check_key(key) {
            Ok(snapshot) => allowed(&snapshot, scope),
            Err(not_until) => refused(
                not_until.quota(),
                not_until.wait_time_from(self.clock.now()),
                scope,
            ),
        })
    }

    /// The per-client-address check, done before authentication.
    pub fn check_client(&self, address: IpAddr) -> Option<RateStatus> {
        self.check_keyed(self.per_client.as_ref(), &address, Scope::Client)
    }

    /// The per-key check, then the global one. Returns the refusing limiter's status, or the
    /// per-key status when both allow the request.
    pub fn check_key(&self, key_id: Uuid) -> Option<RateStatus> {
        let per_key = self.check_keyed(self.per_key.as_ref(), &key_id, Scope::Key);
        if per_key.is_some_and(|status| status.is_limited()) {
            return per_key;
        }
        let global = self.global.as_ref().map(|limiter| match limiter.check() {
            Ok(snapshot) => allowed(&snapshot, Scope::Global),
            Err(not_until) => refused(
                not_until.quota(),
                not_until.wait_time_from(self.clock.now()),
                Scope::Global,
            ),
        });
        match global {
            Some(status) if status.is_limited() => Some(status),
            _ => per_key.or(global),
        }
    }

    /// Forgets the state of keys that are back to a full quota (bounds memory).
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.per_client {
            limiter.retain_recent();
        }
        if let Some(limiter) = &self.per_key {
            limiter.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_with_retry_after() {
        let limiters = RateLimiters::new(&RateLimitConfig {
            per_key_rps: 1,
            burst: 2,
            global_rps: 0,
            per_client_rps: 0,
            per_client_burst: 0,
        });
        let key = Uuid::now_v7();
        let first = limiters.check_key(key).unwrap();
        assert_eq!(
            (first.limit, first.remaining, first.is_limited()),
            (2, 1, false)
        );
        assert!(!limiters.check_key(key).unwrap().is_limited());
        let third = limiters.check_key(key).unwrap();
        assert_eq!(third.retry_after_seconds, Some(1));
        assert_eq!((third.remaining, third.scope), (0, Scope::Key));
        // Another key has its own quota; the client limiter is off.
        assert!(!limiters.check_key(Uuid::now_v7()).unwrap().is_limited());
        assert!(
            limiters
                .check_client(IpAddr::from([127, 0, 0, 1]))
                .is_none()
        );
    }
}
