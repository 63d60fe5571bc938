//! The fake provider, for tests only. Its "cloud" is a directory with one JSON file per object
//! (id, type, tags, properties, outputs), so a new process can count objects and adopt them by
//! ownership tag after a crash. Latency, failures and throttling are configurable in code or via
//! environment variables (see `provisioner/docs/testing.md`):
//!
//! * `STACKSMITH_FAKE_CLOUD_DIR`: the directory (required);
//! * `STACKSMITH_FAKE_LATENCY_MS`: latency of every call (default 0); half is spent before the
//!   object is written and half after, so a kill can land on either side of the write;
//! * `STACKSMITH_FAKE_LATENCY_BY_TYPE`: `aws.eks.cluster=900,aws.ec2.nat_gateway=120`;
//! * `STACKSMITH_FAKE_FAIL`: comma-separated addresses whose calls fail;
//! * `STACKSMITH_FAKE_THROTTLE`: the first N calls answer "throttled".

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::provider::{BoxFuture, CallContext, LiveResource, OwnedObject, Provider, ProviderError};
use super::types::{TypeCatalog, TypeSpec};
use super::{Address, ResourceType};

pub const CLOUD_DIR_VAR: &str = "STACKSMITH_FAKE_CLOUD_DIR";
pub const LATENCY_VAR: &str = "STACKSMITH_FAKE_LATENCY_MS";
pub const LATENCY_BY_TYPE_VAR: &str = "STACKSMITH_FAKE_LATENCY_BY_TYPE";
pub const FAIL_VAR: &str = "STACKSMITH_FAKE_FAIL";
pub const THROTTLE_VAR: &str = "STACKSMITH_FAKE_THROTTLE";

#[derive(Debug, Clone, Default)]
pub struct FakeConfig {
    pub latency: Duration,
    pub latency_by_type: HashMap<String, Duration>,
    pub latency_by_address: HashMap<String, Duration>,
    pub fail_addresses: HashSet<String>,
    pub throttle_first_calls: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum FakeConfigError {
    #[error("{CLOUD_DIR_VAR} must name the fake cloud's directory")]
    MissingDir,
    #[error("{variable} has a malformed value `{value}`")]
    Malformed {
        variable: &'static str,
        value: String,
    },
}

impl FakeConfig {
    pub fn from_environment() -> Result<(PathBuf, Self), FakeConfigError> {
        let dir = std::env::var(CLOUD_DIR_VAR)
            .ok()
            .filter(|d| !d.is_empty())
            .ok_or(FakeConfigError::MissingDir)?;
        let millis = |variable: &'static str, text: &str| {
            text.trim()
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| FakeConfigError::Malformed {
                    variable,
                    value: text.to_owned(),
                })
        };
        let mut config = Self::default();
        if let Ok(text) = std::env::var(LATENCY_VAR) {
            config.latency = millis(LATENCY_VAR, &text)?;
        }
        if let Ok(text) = std::env::var(LATENCY_BY_TYPE_VAR) {
            for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
                let (name, ms) = pair.split_once('=').ok_or(FakeConfigError::Malformed {
                    variable: LATENCY_BY_TYPE_VAR,
                    value: text.clone(),
                })?;
                config
                    .latency_by_type
                    .insert(name.trim().to_owned(), millis(LATENCY_BY_TYPE_VAR, ms)?);
            }
        }
        if let Ok(text) = std::env::var(FAIL_VAR) {
            config.fail_addresses = text
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Ok(text) = std::env::var(THROTTLE_VAR) {
            config.throttle_first_calls =
                text.trim()
                    .parse()
                    .map_err(|_| FakeConfigError::Malformed {
                        variable: THROTTLE_VAR,
                        value: text.clone(),
                    })?;
        }
        Ok((PathBuf::from(dir), config))
    }
}

/// One provider call as the fake saw it, for ordering and concurrency assertions.
#[derive(Debug, Clone)]
pub struct CallRecord {
    pub address: Address,
    pub operation: &'static str,
    pub started: Instant,
    pub finished: Instant,
}

#[derive(Debug, Default)]
pub struct FakeStats {
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    calls_seen: AtomicUsize,
    calls: Mutex<Vec<CallRecord>>,
}

impl FakeStats {
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }
    pub fn calls(&self) -> Vec<CallRecord> {
        self.calls.lock().expect("call log lock").clone()
    }
}

/// A stored object in the fake cloud.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FakeObject {
    pub id: String,
    #[serde(rename = "type")]
    pub resource_type: ResourceType,
    pub tags: IndexMap<String, String>,
    pub properties: IndexMap<String, Value>,
    pub outputs: IndexMap<String, Value>,
}

impl FakeObject {
    fn live(&self) -> LiveResource {
        LiveResource {
            id: self.id.clone(),
            properties: self.properties.clone(),
            outputs: self.outputs.clone(),
            tags: self.tags.clone(),
        }
    }
}

pub struct FakeProvider {
    dir: PathBuf,
    config: FakeConfig,
    catalog: TypeCatalog,
    stats: std::sync::Arc<FakeStats>,
}

struct InFlight<'a>(&'a FakeStats);

impl<'a> InFlight<'a> {
    fn enter(stats: &'a FakeStats) -> Self {
        let now = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        stats.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(stats)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl FakeProvider {
    pub fn new(dir: &Path, config: FakeConfig) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            config,
            catalog: TypeCatalog::builtin(),
            stats: Default::default(),
        })
    }

    pub fn from_environment() -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let (dir, config) = FakeConfig::from_environment()?;
        Ok(Self::new(&dir, config)?)
    }

    pub fn stats(&self) -> std::sync::Arc<FakeStats> {
        self.stats.clone()
    }

    /// Every object in the cloud directory.
    pub fn objects(dir: &Path) -> std::io::Result<Vec<FakeObject>> {
        let mut objects = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let text = std::fs::read_to_string(&path)?;
                let object = serde_json::from_str(&text).map_err(std::io::Error::other)?;
                objects.push(object);
            }
        }
        objects.sort_by(|a: &FakeObject, b| a.id.cmp(&b.id));
        Ok(objects)
    }

    fn latency(&self, context: &CallContext) -> Duration {
        self.config
            .latency_by_address
            .get(context.address.as_str())
            .or_else(|| {
                self.config
                    .latency_by_type
                    .get(context.resource_type.as_str())
            })
            .copied()
            .unwrap_or(self.config.latency)
    }

    /// Common prologue: throttling, then the first half of the latency.
    async fn begin(&self, context: &CallContext) -> Result<(), ProviderError> {
        let seen = self.stats.calls_seen.fetch_add(1, Ordering::SeqCst);
        if seen < self.config.throttle_first_calls {
            return Err(ProviderError::Throttled {
                retry_after: Some(Duration::from_millis(20)),
            });
        }
        tokio::time::sleep(self.latency(context) / 2).await;
        if self
            .config
            .fail_addresses
            .contains(context.address.as_str())
        {
            return Err(ProviderError::Failed(format!(
                "injected failure for {}",
                context.address
            )));
        }
        Ok(())
    }

    async fn finish(&self, context: &CallContext) {
        tokio::time::sleep(self.latency(context) - self.latency(context) / 2).await;
    }

    fn record(&self, context: &CallContext, operation: &'static str, started: Instant) {
        self.stats
            .calls
            .lock()
            .expect("call log lock")
            .push(CallRecord {
                address: context.address.clone(),
                operation,
                started,
                finished: Instant::now(),
            });
    }

    fn path_of(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn load(&self, id: &str) -> Result<Option<FakeObject>, ProviderError> {
        match std::fs::read_to_string(self.path_of(id)) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| ProviderError::Failed(format!("fake cloud object {id}: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ProviderError::Failed(format!(
                "fake cloud object {id}: {e}"
            ))),
        }
    }

    /// Writes atomically (temp file + rename) so a kill never leaves half an object.
    fn store(&self, object: &FakeObject) -> Result<(), ProviderError> {
        let failed = |e: std::io::Error| ProviderError::Failed(format!("fake cloud write: {e}"));
        let temp = self.dir.join(format!(".{}.tmp", object.id));
        std::fs::write(
            &temp,
            serde_json::to_vec_pretty(object).expect("object serializes"),
        )
        .map_err(failed)?;
        std::fs::rename(&temp, self.path_of(&object.id)).map_err(failed)
    }

    fn outputs(
        resource_type: &ResourceType,
        id: &str,
        properties: &IndexMap<String, Value>,
    ) -> IndexMap<String, Value> {
        let mut outputs = properties.clone();
        outputs.insert("id".into(), Value::String(id.to_owned()));
        outputs.insert(
            "arn".into(),
            Value::String(format!("arn:fake:{resource_type}:{id}")),
        );
        if matches!(
            resource_type.as_str(),
            "aws.eks.cluster" | "aws.rds.instance" | "aws.elasticache.replication_group"
        ) {
            outputs.insert(
                "endpoint".into(),
                Value::String(format!("{id}.fake.internal")),
            );
        }
        if resource_type.as_str() == "aws.eks.cluster" {
            // The group EKS makes for the cluster and puts on managed nodes.
            outputs.insert(
                "cluster_security_group_id".into(),
                Value::String(format!("sg-eks-cluster-{id}")),
            );
            outputs.insert(
                "oidc_issuer".into(),
                Value::String(format!("https://oidc.fake.internal/id/{id}")),
            );
            // Base64 like EKS's, but no certificate: the fake cluster has no API server.
            outputs.insert(
                "certificate_authority".into(),
                Value::String(base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    format!("fake certificate authority of {id}"),
                )),
            );
        }
        outputs
    }
}

impl Provider for FakeProvider {
    fn type_spec(&self, resource_type: &ResourceType) -> TypeSpec {
        self.catalog.spec(resource_type)
    }

    fn create<'a>(
        &'a self,
        context: &'a CallContext,
        properties: &'a IndexMap<String, Value>,
        tags: &'a IndexMap<String, String>,
    ) -> BoxFuture<'a, Result<LiveResource, ProviderError>> {
        Box::pin(async move {
            let _in_flight = InFlight::enter(&self.stats);
            let started = Instant::now();
            self.begin(context).await?;
            let prefix: String = context
                .resource_type
                .as_str()
                .rsplit('.')
                .next()
                .unwrap_or("obj")
                .replace('_', "-");
            let id = format!(
                "{prefix}-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            );
            let object = FakeObject {
                id: id.clone(),
                resource_type: context.resource_type.clone(),
                tags: tags.clone(),
                properties: properties.clone(),
                outputs: Self::outputs(&context.resource_type, &id, properties),
            };
            self.store(&object)?;
            self.finish(context).await;
            self.record(context, "create", started);
            Ok(object.live())
        })
    }

    fn read<'a>(
        &'a self,
        _context: &'a CallContext,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<LiveResource>, ProviderError>> {
        Box::pin(async move { Ok(self.load(id)?.map(|o| o.live())) })
    }

    fn find_by_tags<'a>(
        &'a self,
        context: &'a CallContext,
        tags: &'a IndexMap<String, String>,
    ) -> BoxFuture<'a, Result<Vec<LiveResource>, ProviderError>> {
        Box::pin(async move {
            let objects = Self::objects(&self.dir)
                .map_err(|e| ProviderError::Failed(format!("fake cloud scan: {e}")))?;
            Ok(objects
                .into_iter()
                .filter(|o| o.resource_type == context.resource_type)
                .filter(|o| tags.iter().all(|(k, v)| o.tags.get(k) == Some(v)))
                .map(|o| o.live())
                .collect())
        })
    }

    /// Every object in the cloud directory carrying the tags (the fake has no member objects).
    fn list_owned<'a>(
        &'a self,
        ownership: &'a IndexMap<String, String>,
    ) -> BoxFuture<'a, Result<Vec<OwnedObject>, ProviderError>> {
        Box::pin(async move {
            let objects = Self::objects(&self.dir)
                .map_err(|e| ProviderError::Failed(format!("fake cloud scan: {e}")))?;
            Ok(objects
                .into_iter()
                .filter(|o| ownership.iter().all(|(k, v)| o.tags.get(k) == Some(v)))
                .map(|o| OwnedObject {
                    resource_type: o.resource_type,
                    id: o.id,
                    tags: o.tags,
                    properties: o.properties,
                    member_of: None,
                })
                .collect())
        })
    }

    fn update<'a>(
        &'a self,
        context: &'a CallContext,
        id: &'a str,
        properties: &'a IndexMap<String, Value>,
    ) -> BoxFuture<'a, Result<LiveResource, ProviderError>> {
        Box::pin(async move {
            let _in_flight = InFlight::enter(&self.stats);
            let started = Instant::now();
            self.begin(context).await?;
            let mut object = self
                .load(id)?
                .ok_or_else(|| ProviderError::NotFound(id.to_owned()))?;
            object.properties = properties.clone();
            object.outputs = Self::outputs(&object.resource_type, id, properties);
            self.store(&object)?;
            self.finish(context).await;
            self.record(context, "update", started);
            Ok(object.live())
        })
    }

    fn delete<'a>(
        &'a self,
        context: &'a CallContext,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let _in_flight = InFlight::enter(&self.stats);
            let started = Instant::now();
            self.begin(context).await?;
            match std::fs::remove_file(self.path_of(id)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ProviderError::Failed(format!("fake cloud delete: {e}"))),
            }
            self.finish(context).await;
            self.record(context, "delete", started);
            Ok(())
        })
    }
}
