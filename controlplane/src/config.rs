//! Server configuration: defaults, then an optional JSON file, then environment variables.
//!
//! | Environment variable                | Field                          | Default                 |
//! |-------------------------------------|--------------------------------|-------------------------|
//! | `CONTROLPLANE_LISTEN`               | `listen`                       | `0.0.0.0:8080`          |
//! | `DATABASE_URL`                      | `database_url`                 | (required)              |
//! | `REDIS_URL`                         | `redis_url`                    | `redis://127.0.0.1:6379`|
//! | `CONTROLPLANE_REDIS_PREFIX`         | `redis_key_prefix`             | `stacksmith`            |
//! | `CONTROLPLANE_ADMIN_KEY`            | `admin_key`                    | (none: admin API off)   |
//! | `CONTROLPLANE_RATE_PER_KEY_RPS`     | `rate_limit.per_key_rps`       | `50`                    |
//! | `CONTROLPLANE_RATE_BURST`           | `rate_limit.burst`             | `100`                   |
//! | `CONTROLPLANE_RATE_GLOBAL_RPS`      | `rate_limit.global_rps`        | `1000`                  |
//! | `CONTROLPLANE_RATE_PER_CLIENT_RPS`  | `rate_limit.per_client_rps`    | `200`                   |
//! | `CONTROLPLANE_RATE_PER_CLIENT_BURST`| `rate_limit.per_client_burst`  | `400`                   |
//! | `CONTROLPLANE_TRUSTED_PROXIES`      | `rate_limit.trusted_proxies`   | (none: the peer is the client) |
//! | `CONTROLPLANE_BODY_LIMIT_BYTES`     | `limits.body_limit_bytes`      | `262144`                |
//! | `CONTROLPLANE_BATCH_BODY_LIMIT_BYTES` | `limits.batch_body_limit_bytes` | `8388608` (`POST /v1/tasks/batch`) |
//! | `CONTROLPLANE_REQUEST_TIMEOUT_MS`   | `limits.request_timeout_ms`    | `10000`                 |
//! | `CONTROLPLANE_CONCURRENCY_LIMIT`    | `limits.concurrency_limit`     | `512`                   |
//! | `CONTROLPLANE_SHUTDOWN_GRACE_MS`    | `shutdown_grace_ms`            | `20000`                 |
//! | `CONTROLPLANE_API_KEY_CACHE_MS`     | `api_key_cache_ms`             | `2000` (`0`: off)       |
//! | `CONTROLPLANE_DB_MAX_CONNECTIONS`   | `database_max_connections`     | `20` (claims: a quarter more) |
//! | `CONTROLPLANE_WORKER_KEY`           | `worker_key`                   | (none: only the admin key leases) |
//! | `CONTROLPLANE_MAX_LEASE_WAIT_MS`    | `scheduler.max_lease_wait_ms`  | `20000`                 |
//! | `CONTROLPLANE_LEASE_POLL_MS`        | `scheduler.poll_interval_ms`   | `1000`                  |
//! | `CONTROLPLANE_REAPER_INTERVAL_MS`   | `scheduler.reaper_interval_ms` | `1000`                  |
//! | `CONTROLPLANE_SUBMIT_GROUP_MAX`     | `scheduler.submit_group_max`   | `500`                   |
//! | `CONTROLPLANE_SUBMIT_GROUP_FLUSHES` | `scheduler.submit_group_flushes` | `4`                   |
//! | `CONTROLPLANE_CLAIM_SPACING_MS`     | `scheduler.claim_spacing_ms`   | `10` (`0`: off)         |
//! | `CONTROLPLANE_AUTOSCALER_NAMESPACE` | `autoscaler.namespace`         | (none: autoscaler off)  |
//! | `CONTROLPLANE_AUTOSCALER_KUBECONFIG`| `autoscaler.kubeconfig`        | (none: `KUBECONFIG`, then in-cluster) |
//! | `CONTROLPLANE_AUTOSCALER_INTERVAL_MS` | `autoscaler.interval_ms`     | `15000`                 |
//! | `CONTROLPLANE_AUTOSCALER_SCALE_UP_WINDOW_MS` | `autoscaler.scale_up_window_ms` | `0`       |
//! | `CONTROLPLANE_AUTOSCALER_SCALE_DOWN_WINDOW_MS` | `autoscaler.scale_down_window_ms` | `300000` |
//!
//! A rate of `0` switches that limiter off. The global limiter's burst equals its rate.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    ReadFile {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid configuration file {path}: {source}")]
    ParseFile {
        path: String,
        source: serde_json::Error,
    },
    #[error("environment variable {name} has an invalid value")]
    InvalidEnv { name: &'static str },
    #[error("{0} is not set (environment or configuration file)")]
    Missing(&'static str),
    #[error("invalid configuration: {0}")]
    Invalid(&'static str),
}

/// A secret string that never shows in `Debug` output or logs.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Rates in requests per second; `0` switches a limiter off.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained rate allowed to one API key (the stack's `rate_limit.per_key_rps`).
    pub per_key_rps: u32,
    /// Burst allowed to one API key above its sustained rate (the stack's `rate_limit.burst`).
    pub burst: u32,
    /// Rate for all authenticated requests together (the stack's `rate_limit.global_rps`).
    pub global_rps: u32,
    /// Rate per client IP address, checked before authentication.
    pub per_client_rps: u32,
    /// Burst per client IP address.
    pub per_client_burst: u32,
    /// Proxies (CIDR blocks, comma-separated in the environment) whose `X-Forwarded-For` names
    /// the client: the load balancers' subnets. Anyone else's header is ignored.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_key_rps: 50,
            burst: 100,
            global_rps: 1000,
            per_client_rps: 200,
            per_client_burst: 400,
            trusted_proxies: Vec::new(),
        }
    }
}

impl RateLimitConfig {
    /// No limiter at all (for tests that do not exercise rate limiting).
    pub fn disabled() -> Self {
        Self {
            per_key_rps: 0,
            burst: 0,
            global_rps: 0,
            per_client_rps: 0,
            per_client_burst: 0,
            trusted_proxies: Vec::new(),
        }
    }
}

/// Protections of the HTTP server itself.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpLimits {
    pub body_limit_bytes: usize,
    /// The body limit of `POST /v1/tasks/batch` and `POST /v1/leases/reports` (up to 1,000
    /// items).
    pub batch_body_limit_bytes: usize,
    pub request_timeout_ms: u64,
    pub concurrency_limit: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            body_limit_bytes: 256 * 1024,
            batch_body_limit_bytes: 8 * 1024 * 1024,
            request_timeout_ms: 10_000,
            concurrency_limit: 512,
        }
    }
}

/// Leasing: long-poll bounds and the reaper of expired leases.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Longest long-poll of `POST /v1/leases` (also kept below the request timeout).
    pub max_lease_wait_ms: u64,
    /// How often a waiting long-poll looks again without a wake-up (the fallback of
    /// LISTEN/NOTIFY, and how retries whose `run_at` arrives are noticed).
    pub poll_interval_ms: u64,
    /// How often expired leases are returned to the queue.
    pub reaper_interval_ms: u64,
    /// Group commit of `POST /v1/tasks`: most submissions stored by one statement.
    pub submit_group_max: usize,
    /// Group commit: most groups being stored at once (each holds a database connection).
    pub submit_group_flushes: usize,
    /// After a claim found fewer tasks than it asked for (the pool is drained), this server's
    /// next claims of the pool are this far apart, so tasks that trickle in are leased a few at
    /// a time instead of one claim each; a full claim lifts it. `0`: off.
    pub claim_spacing_ms: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_lease_wait_ms: 20_000,
            poll_interval_ms: 1_000,
            reaper_interval_ms: 1_000,
            submit_group_max: 500,
            submit_group_flushes: 4,
            claim_spacing_ms: 10,
        }
    }
}

/// The pool autoscaler (`crate::autoscaler`): on when a namespace is set.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AutoscalerConfig {
    /// The namespace of the worker Deployments (the stack's `controlplane.worker_namespace`).
    /// `None` switches the autoscaler off.
    pub namespace: Option<String>,
    /// A kubeconfig file (its current context). Without it: `KUBECONFIG` or `~/.kube/config`,
    /// then the in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// How often the leader reads the backlog and scales.
    pub interval_ms: u64,
    /// Scale up only to the lowest recommendation of this window (`0`: follow at once).
    pub scale_up_window_ms: u64,
    /// Scale down only to the highest recommendation of this window.
    pub scale_down_window_ms: u64,
}

impl Default for AutoscalerConfig {
    fn default() -> Self {
        Self {
            namespace: None,
            kubeconfig: None,
            interval_ms: 15_000,
            scale_up_window_ms: 0,
            scale_down_window_ms: 300_000,
        }
    }
}

/// Everything `controlplane serve` needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    /// Postgres URL; may contain a password, so it is a [`Secret`].
    pub database_url: Secret,
    pub database_max_connections: u32,
    pub redis_url: Secret,
    /// Prefix of every Redis key this server writes (`{prefix}:...`).
    pub redis_key_prefix: String,
    /// Bearer key of the administrator (team and key management). `None` turns the admin API off.
    pub admin_key: Option<Secret>,
    /// Bearer key of workers (leases). The admin key may lease as well.
    pub worker_key: Option<Secret>,
    pub scheduler: SchedulerConfig,
    pub autoscaler: AutoscalerConfig,
    pub rate_limit: RateLimitConfig,
    pub limits: HttpLimits,
    pub shutdown_grace_ms: u64,
    /// How long a team key found valid is trusted without asking the database again. A key
    /// revoked through this server stops working at once; one revoked elsewhere (another
    /// replica, `controlplane keys revoke`) within this time. `0`: every request asks.
    pub api_key_cache_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            database_url: Secret::default(),
            database_max_connections: 20,
            redis_url: Secret::new("redis://127.0.0.1:6379"),
            redis_key_prefix: "stacksmith".to_owned(),
            admin_key: None,
            worker_key: None,
            scheduler: SchedulerConfig::default(),
            autoscaler: AutoscalerConfig::default(),
            rate_limit: RateLimitConfig::default(),
            limits: HttpLimits::default(),
            shutdown_grace_ms: 20_000,
            api_key_cache_ms: 2_000,
        }
    }
}

impl Config {
    /// Defaults, overridden by `file` (JSON) when given, overridden by the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        config.validate()?;
        Ok(config)
    }

    fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: display.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ConfigError::ParseFile {
            path: display,
            source,
        })
    }

    /// Overrides fields from environment variables read through `lookup`.
    pub fn apply_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        fn parse<T: FromStr>(
            lookup: &impl Fn(&str) -> Option<String>,
            name: &'static str,
            target: &mut T,
        ) -> Result<(), ConfigError> {
            if let Some(value) = lookup(name) {
                *target = value
                    .trim()
                    .parse()
                    .map_err(|_| ConfigError::InvalidEnv { name })?;
            }
            Ok(())
        }
        parse(&lookup, "CONTROLPLANE_LISTEN", &mut self.listen)?;
        if let Some(url) = lookup("DATABASE_URL") {
            self.database_url = Secret::new(url);
        }
        if let Some(url) = lookup("REDIS_URL") {
            self.redis_url = Secret::new(url);
        }
        if let Some(prefix) = lookup("CONTROLPLANE_REDIS_PREFIX") {
            self.redis_key_prefix = prefix;
        }
        if let Some(key) = lookup("CONTROLPLANE_ADMIN_KEY") {
            self.admin_key = Some(Secret::new(key));
        }
        if let Some(key) = lookup("CONTROLPLANE_WORKER_KEY") {
            self.worker_key = Some(Secret::new(key));
        }
        parse(
            &lookup,
            "CONTROLPLANE_MAX_LEASE_WAIT_MS",
            &mut self.scheduler.max_lease_wait_ms,
        )?;
        parse(
            &lookup,
            "CONTROLPLANE_LEASE_POLL_MS",
            &mut self.scheduler.poll_interval_ms,
        )?;
        parse(
            &lookup,
            "CONTROLPLANE_REAPER_INTERVAL_MS",
            &mut self.scheduler.reaper_interval_ms,
        )?;
        parse(
            &lookup,
            "CONTROLPLANE_SUBMIT_GROUP_MAX",
            &mut self.scheduler.submit_group_max,
        )?;
        parse(
            &lookup,
            "CONTROLPLANE_SUBMIT_GROUP_FLUSHES",
            &mut self.scheduler.submit_group_flushes,
        )?;
        parse(
            &lookup,
            "CONTROLPLANE_CLAIM_SPACING_MS",
            &mut self.scheduler.claim_spacing_ms,
        )?;
        let autoscaler = &mut self.autoscaler;
        if let Some(namespace) = lookup("CONTROLPLANE_AUTOSCALER_NAMESPACE") {
            autoscaler.namespace = Some(namespace.trim().to_owned()).filter(|n| !n.is_empty());
        }
        if let Some(path) = lookup("CONTROLPLANE_AUTOSCALER_KUBECONFIG") {
            autoscaler.kubeconfig = Some(PathBuf::from(path)).filter(|p| !p.as_os_str().is_empty());
        }
        parse(
            &lookup,
            "CONTROLPLANE_AUTOSCALER_INTERVAL_MS",
            &mut autoscaler.interval_ms,
        )?;
        parse(
            &lookup,
            "CONTROLPLANE_AUTOSCALER_SCALE_UP_WINDOW_MS",
            &mut autoscaler.scale_up_window_ms,
        )?;
        parse(
            &lookup,
            "CONTROLPLANE_AUTOSCALER_SCALE_DOWN_WINDOW_MS",
            &mut autoscaler.scale_down_window_ms,
        )?;
        let rate = &mut self.rate_limit;
        parse(
            &lookup,
            "CONTROLPLANE_RATE_PER_KEY_RPS",
            &mut rate.per_key_rps,
        )?;
        parse(&lookup, "CONTROLPLANE_RATE_BURST", &mut rate.burst)?;
        parse(
            &lookup,
            "CONTROLPLANE_RATE_GLOBAL_RPS",
            &mut rate.global_rps,
        )?;
        parse(
            &lookup,
            "CONTROLPLANE_RATE_PER_CLIENT_RPS",
            &mut rate.per_client_rps,
        )?;
        parse(
            &lookup,
            "CONTROLPLANE_RATE_PER_CLIENT_BURST",
            &mut rate.per_client_burst,
        )?;
        if let Some(list) = lookup("CONTROLPLANE_TRUSTED_PROXIES") {
            rate.trusted_proxies = list
                .split(',')
                .map(str::trim)
                .filter(|entry| !entry.is_empty())
                .map(|entry| {
                    entry
                        .parse::<ipnet::IpNet>()
                        .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| ConfigError::InvalidEnv {
                            name: "CONTROLPLANE_TRUSTED_PROXIES",
                        })
                })
                .collect::<Result<_, _>>()?;
        }
        let limits = &mut self.limits;
        parse(
            &lookup,
            "CONTROLPLANE_BODY_LIMIT_BYTES",
            &mut limits.body_limit_bytes,
        )?;
        parse(
            &lookup,
            "CONTROLPLANE_BATCH_BODY_LIMIT_BYTES",
            &mut limits.batch_body_limit_bytes,
        )?;
        parse(
            &lookup,
            "CONTROLPLANE_REQUEST_TIMEOUT_MS",
            &mut limits.request_timeout_ms,
        )?;
        parse(
            &lookup,
            "CONTROLPLANE_CONCURRENCY_LIMIT",
            &mut limits.concurrency_limit,
        )?;
        parse(
            &lookup,
            "CONTROLPLANE_SHUTDOWN_GRACE_MS",
            &mut self.shutdown_grace_ms,
        )?;
        parse(
            &lookup,
            "CONTROLPLANE_API_KEY_CACHE_MS",
            &mut self.api_key_cache_ms,
        )?;
        parse(
            &lookup,
            "CONTROLPLANE_DB_MAX_CONNECTIONS",
            &mut self.database_max_connections,
        )?;
        Ok(())
    }

    /// Rejects configurations the server cannot run with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.database_url.expose().is_empty() {
            return Err(ConfigError::Missing("DATABASE_URL"));
        }
        if self.redis_key_prefix.is_empty() {
            return Err(ConfigError::Invalid("the Redis key prefix is empty"));
        }
        if self
            .admin_key
            .as_ref()
            .is_some_and(|key| key.expose().len() < 32)
        {
            return Err(ConfigError::Invalid(
                "the admin key must be at least 32 characters long",
            ));
        }
        if self
            .worker_key
            .as_ref()
            .is_some_and(|key| key.expose().len() < 32)
        {
            return Err(ConfigError::Invalid(
                "the worker key must be at least 32 characters long",
            ));
        }
        if self.scheduler.poll_interval_ms == 0 || self.scheduler.reaper_interval_ms == 0 {
            return Err(ConfigError::Invalid(
                "the lease poll and reaper intervals must be positive",
            ));
        }
        if self.autoscaler.interval_ms == 0 {
            return Err(ConfigError::Invalid(
                "the autoscaler interval must be positive",
            ));
        }
        if self
            .autoscaler
            .namespace
            .as_ref()
            .is_some_and(|namespace| namespace.is_empty())
        {
            return Err(ConfigError::Invalid("the autoscaler namespace is empty"));
        }
        if self.api_key_cache_ms > 60_000 {
            return Err(ConfigError::Invalid(
                "api_key_cache_ms must be at most 60000 (a revoked key must stop working soon)",
            ));
        }
        if self.scheduler.claim_spacing_ms > 1_000 {
            return Err(ConfigError::Invalid(
                "claim_spacing_ms must be at most 1000",
            ));
        }
        if !(1..=10_000).contains(&self.scheduler.submit_group_max)
            || !(1..=64).contains(&self.scheduler.submit_group_flushes)
        {
            return Err(ConfigError::Invalid(
                "submit_group_max must be 1-10000 and submit_group_flushes 1-64",
            ));
        }
        if self.limits.body_limit_bytes == 0
            || self.limits.batch_body_limit_bytes == 0
            || self.limits.request_timeout_ms == 0
            || self.limits.concurrency_limit == 0
            || self.database_max_connections == 0
        {
            return Err(ConfigError::Invalid(
                "body limit, request timeout, concurrency limit and database connections must be positive",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn environment_overrides_file_values_and_secrets_stay_hidden() {
        let mut config: Config = serde_json::from_str(
            r#"{"database_url":"postgres://u:hunter2@db/x","rate_limit":{"per_key_rps":5,"burst":7}}"#,
        )
        .unwrap();
        let env = HashMap::from([
            ("CONTROLPLANE_RATE_BURST", "9"),
            (
                "CONTROLPLANE_ADMIN_KEY",
                "a-very-long-admin-key-of-32-chars!!",
            ),
        ]);
        config
            .apply_env(|name| env.get(name).map(|v| (*v).to_owned()))
            .unwrap();
        config.validate().unwrap();
        assert_eq!(config.rate_limit.per_key_rps, 5);
        assert_eq!(config.rate_limit.burst, 9);
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!debug.contains("a-very-long-admin-key"), "{debug}");
    }

    #[test]
    fn the_autoscaler_is_off_until_a_namespace_is_given() {
        let mut config: Config =
            serde_json::from_str(r#"{"database_url":"postgres://db/x"}"#).unwrap();
        assert_eq!(config.autoscaler.namespace, None);
        let env = HashMap::from([
            ("CONTROLPLANE_AUTOSCALER_NAMESPACE", "workers"),
            ("CONTROLPLANE_AUTOSCALER_SCALE_DOWN_WINDOW_MS", "60000"),
        ]);
        config
            .apply_env(|name| env.get(name).map(|v| (*v).to_owned()))
            .unwrap();
        config.validate().unwrap();
        assert_eq!(config.autoscaler.namespace.as_deref(), Some("workers"));
        assert_eq!(config.autoscaler.scale_down_window_ms, 60_000);
        assert_eq!(config.autoscaler.scale_up_window_ms, 0);
        assert_eq!(config.autoscaler.interval_ms, 15_000);
        config.autoscaler.interval_ms = 0;
        assert!(matches!(config.validate(), Err(ConfigError::Invalid(_))));
    }

    #[test]
    fn invalid_values_are_rejected() {
        let mut config = Config::default();
        let err = config
            .apply_env(|name| (name == "CONTROLPLANE_RATE_BURST").then(|| "lots".to_owned()))
            .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::InvalidEnv {
                name: "CONTROLPLANE_RATE_BURST"
            }
        ));
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Missing("DATABASE_URL"))
        ));
        let unknown = serde_json::from_str::<Config>(r#"{"listn":"1.2.3.4:5"}"#);
        assert!(unknown.is_err());
    }
}
