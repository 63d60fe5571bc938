//! Rate limiting (GCRA): per client address (before authentication), per API key and global
//! (after authentication).
//!
//! The per-key and global limits are what the stack states for the whole API, however many
//! replicas serve it: they are kept in Redis, which every replica shares
//! ([`RateLimiters::check_request_shared`]: one Lua script per request checks the client's
//! limit, the key's, then the global one, on Redis's clock, under the server's key prefix).
//! When Redis does not answer in time, each replica falls back to its own in-process limiters
//! (governor), so a Redis outage degrades the limits instead of refusing or admitting
//! everything. The per-client limit, a flood guard before authentication, is shared the same
//! way ([`RateLimiters::check_client_shared`]), so one address gets its stated rate from the whole
//! API, not once per replica. Its key is the client's address: the connection's peer, or, when
//! the peer is a trusted proxy (`rate_limit.trusted_proxies`: the load balancer's subnets), the
//! address that proxy reports in `X-Forwarded-For` ([`client_address`]), so clients behind an
//! Application Load Balancer or an ingress get a bucket each instead of sharing the proxy's.
//!
//! Responses carry the IETF draft headers in their separate-field form
//! (draft-ietf-httpapi-ratelimit-headers up to -06):
//! `RateLimit-Limit` (the burst size: requests allowed at once), `RateLimit-Remaining`
//! (requests allowed right now) and `RateLimit-Reset` (seconds until the quota is full again,
//! or until the next request is allowed when limited). A limited request gets a 429 with
//! `Retry-After` (whole seconds, at least 1) as well. Successful authenticated requests carry the
//! per-key limiter's headers.

use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::{StateInformationMiddleware, StateSnapshot};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use ipnet::IpNet;
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

/// How long a request waits for the shared limits before the in-process ones decide.
pub const SHARED_TIMEOUT: Duration = Duration::from_millis(250);

/// GCRA over Redis. For each limit i: KEYS[i] holds its theoretical arrival time (microseconds on
/// Redis's clock); ARGV[2i-1] is the emission interval (µs per request), ARGV[2i] the burst.
/// Returns {allowed, remaining, µs} per limit checked, and stops after the first refusal (which
/// consumes nothing).
static SHARED_SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local answer = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local next_tat = tat + interval
  local allowed_at = next_tat - interval * burst
  if now < allowed_at then
    table.insert(answer, 0)
    table.insert(answer, 0)
    table.insert(answer, allowed_at - now)
    return answer
  end
  redis.call('SET', key, next_tat, 'PX', math.ceil((next_tat - now) / 1000) + 1)
  table.insert(answer, 1)
  table.insert(answer, math.floor((now - allowed_at) / interval))
  table.insert(answer, next_tat - now)
end
return answer
",
    )
});

/// The address a request comes from, for the per-client limit: the connection's `peer`, unless
/// the peer is one of the `trusted` proxies; then the `X-Forwarded-For` entries are read from the
/// right (each proxy appends the address it received the request from, as the Application Load
/// Balancer does by default), skipping trusted proxies, and the first other address is the
/// client's. An entry that is not an address (or `ip:port`) ends the walk at the last trusted
/// hop, so a forged value can never pick a bucket; an untrusted peer's `X-Forwarded-For` is
/// ignored altogether.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |address: &IpAddr| trusted.iter().any(|net| net.contains(address));
    if !is_trusted(&peer) {
        return peer;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for entry in entries.iter().rev() {
        let Some(address) = entry
            .parse::<IpAddr>()
            .ok()
            .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        else {
            return client;
        };
        client = address;
        if !is_trusted(&address) {
            return address;
        }
    }
    client
}

/// All limiters of one server. A limiter configured with rate 0 is absent.
pub struct RateLimiters {
    per_client: Option<KeyedLimiter<IpAddr>>,
    per_key: Option<KeyedLimiter<Uuid>>,
    global: Option<DirectLimiter>,
    /// The per-client, per-key and global quotas, for the limits shared in Redis.
    per_client_quota: Option<Quota>,
    per_key_quota: Option<Quota>,
    global_quota: Option<Quota>,
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
            per_client_quota: quota(config.per_client_rps, config.per_client_burst),
            per_key_quota: quota(config.per_key_rps, config.burst),
            global_quota: quota(config.global_rps, config.global_rps),
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

    /// [`Self::check_client`] against the limit every replica shares in Redis (key
    /// `prefix:ratelimit:client:<address>`); the in-process limiter answers when Redis fails or
    /// is slower than [`SHARED_TIMEOUT`].
    pub async fn check_client_shared(
        &self,
        redis: &redis::aio::ConnectionManager,
        prefix: &str,
        address: IpAddr,
    ) -> Option<RateStatus> {
        let limit = self.per_client_quota.map(|q| {
            (
                format!("{prefix}:ratelimit:client:{address}"),
                q,
                Scope::Client,
            )
        })?;
        match check_shared(redis, &[limit]).await {
            Some(statuses) => statuses.into_iter().next(),
            None => self.check_client(address),
        }
    }

    /// The limits of an authenticated request against the ones every replica shares in Redis
    /// (keys under `prefix:ratelimit:`), in one call: the client address's (when `client` is
    /// given; [`Self::check_client`]), then the key's and the global one ([`Self::check_key`]).
    /// Returns the refusing limit's status, or else the per-key status (the response headers).
    /// The in-process limiters answer when Redis fails or is slower than [`SHARED_TIMEOUT`].
    pub async fn check_request_shared(
        &self,
        redis: &redis::aio::ConnectionManager,
        prefix: &str,
        client: Option<IpAddr>,
        key_id: Uuid,
    ) -> Option<RateStatus> {
        let limits: Vec<(String, Quota, Scope)> = [
            client.and_then(|address| {
                self.per_client_quota.map(|q| {
                    (
                        format!("{prefix}:ratelimit:client:{address}"),
                        q,
                        Scope::Client,
                    )
                })
            }),
            self.per_key_quota
                .map(|q| (format!("{prefix}:ratelimit:key:{key_id}"), q, Scope::Key)),
            self.global_quota
                .map(|q| (format!("{prefix}:ratelimit:global"), q, Scope::Global)),
        ]
        .into_iter()
        .flatten()
        .collect();
        if limits.is_empty() {
            return None;
        }
        let Some(statuses) = check_shared(redis, &limits).await else {
            if let Some(status) = client.and_then(|address| self.check_client(address))
                && status.is_limited()
            {
                return Some(status);
            }
            return self.check_key(key_id);
        };
        if let Some(refused) = statuses.iter().find(|status| status.is_limited()) {
            return Some(*refused);
        }
        // The per-key status when there is one, else the global one, as in process.
        statuses
            .iter()
            .find(|status| status.scope == Scope::Key)
            .or_else(|| statuses.iter().find(|status| status.scope == Scope::Global))
            .copied()
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

/// Checks `limits` (Redis key, quota, scope) in order in one script run on Redis's clock: the
/// status of each limit checked (checking stops at the first refusal), or `None` when Redis
/// fails or is slower than [`SHARED_TIMEOUT`] (the caller falls back to its in-process limiter).
async fn check_shared(
    redis: &redis::aio::ConnectionManager,
    limits: &[(String, Quota, Scope)],
) -> Option<Vec<RateStatus>> {
    let mut invocation = SHARED_SCRIPT.prepare_invoke();
    for (key, quota, _) in limits {
        invocation
            .key(key)
            .arg(quota.replenish_interval().as_micros() as u64)
            .arg(quota.burst_size().get());
    }
    let mut connection = redis.clone();
    let answer = tokio::time::timeout(
        SHARED_TIMEOUT,
        invocation.invoke_async::<Vec<i64>>(&mut connection),
    )
    .await;
    let Ok(Ok(answer)) = answer else {
        tracing::warn!("Redis did not answer the rate limit check: limits apply per replica");
        return None;
    };
    // Per limit checked: allowed (1/0), remaining, microseconds (until full when allowed, until
    // the next request is allowed when refused).
    Some(
        answer
            .chunks_exact(3)
            .zip(limits)
            .map(|(row, (_, quota, scope))| {
                let micros = Duration::from_micros(row[2].max(0) as u64);
                if row[0] == 1 {
                    RateStatus {
                        limit: quota.burst_size().get(),
                        remaining: u32::try_from(row[1].max(0)).unwrap_or(u32::MAX),
                        reset_seconds: ceil_seconds(micros),
                        retry_after_seconds: None,
                        scope: *scope,
                    }
                } else {
                    refused(*quota, micros, *scope)
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_peer_unless_a_trusted_proxy_forwards_for_it() {
        let trusted: Vec<IpNet> = vec!["10.0.101.0/24".parse().unwrap()];
        let headers = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("x-forwarded-for", HeaderValue::from_str(value).unwrap());
            headers
        };
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        // An untrusted peer's header is ignored: it cannot choose its bucket.
        assert_eq!(
            client_address(ip("198.51.100.7"), &headers("203.0.113.1"), &trusted),
            ip("198.51.100.7")
        );
        // The load balancer appends the address it saw: the rightmost untrusted entry.
        assert_eq!(
            client_address(
                ip("10.0.101.9"),
                &headers("192.0.2.1, 203.0.113.5"),
                &trusted
            ),
            ip("203.0.113.5")
        );
        // Trusted hops are skipped; `ip:port` entries are read as their address.
        assert_eq!(
            client_address(
                ip("10.0.101.9"),
                &headers("203.0.113.5:4711, 10.0.101.20"),
                &trusted
            ),
            ip("203.0.113.5")
        );
        // A value that is no address ends the walk at the last trusted hop.
        assert_eq!(
            client_address(ip("10.0.101.9"), &headers("203.0.113.5, garbage"), &trusted),
            ip("10.0.101.9")
        );
        // No header: the proxy itself.
        assert_eq!(
            client_address(ip("10.0.101.9"), &HeaderMap::new(), &trusted),
            ip("10.0.101.9")
        );
    }

    #[test]
    fn burst_then_refusal_with_retry_after() {
        let limiters = RateLimiters::new(&RateLimitConfig {
            per_key_rps: 1,
            burst: 2,
            global_rps: 0,
            per_client_rps: 0,
            per_client_burst: 0,
            trusted_proxies: Vec::new(),
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
