//! Server-side apply of rendered objects: in order, with field manager `stacksmith`, kinds resolved
//! through discovery; then pruning of what the stack's inventory holds but no longer renders; then
//! a wait for every Deployment's rollout, bounded by a timeout.
//!
//! The inventory is the label [`STACK_LABEL`]: every object Stacksmith applies carries it, so the
//! objects a stack owns are found by a label selector, whatever its state file says.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use serde_json::Value as Json;
use tokio::sync::Mutex;

use super::{RenderedFile, RenderedObject, STACK_LABEL};

/// The field manager of every apply.
pub const FIELD_MANAGER: &str = "stacksmith";

/// The field manager that sets an autoscaled Deployment's replica count when `up` must (to hand
/// the field over to the autoscaler, or to bring it within the stack's bounds): the temporary
/// manager of server-side apply's "transferring ownership". Once the autoscaler changes the
/// count, this manager owns nothing and disappears from `managedFields`.
pub const REPLICAS_MANAGER: &str = "stacksmith-replicas";

/// Kinds Stacksmith renders, in apply order; pruning looks for leftovers of these only.
const MANAGED_KINDS: &[(&str, &str, &str)] = &[
    ("", "v1", "Namespace"),
    ("scheduling.k8s.io", "v1", "PriorityClass"),
    ("", "v1", "ResourceQuota"),
    ("networking.k8s.io", "v1", "NetworkPolicy"),
    ("", "v1", "ServiceAccount"),
    ("rbac.authorization.k8s.io", "v1", "Role"),
    ("rbac.authorization.k8s.io", "v1", "RoleBinding"),
    ("", "v1", "ConfigMap"),
    ("", "v1", "Secret"),
    ("apps", "v1", "Deployment"),
    ("", "v1", "Service"),
    ("autoscaling", "v2", "HorizontalPodAutoscaler"),
    ("policy", "v1", "PodDisruptionBudget"),
];

/// Fields the API server refuses to change in an update ("may not be changed in an update"),
/// per kind: an object whose rendered value differs from the live one is deleted and created
/// again. A PriorityClass's `value` and `preemptionPolicy` (pods already running keep the
/// priority they were admitted with; new pods get the new one).
const RECREATE_ON_CHANGE: &[(&str, &str)] = &[
    ("PriorityClass", "value"),
    ("PriorityClass", "preemptionPolicy"),
];

/// How long a deleted object may take to disappear before it is created again.
const RECREATE_TIMEOUT: Duration = Duration::from_secs(60);

/// The first field of [`RECREATE_ON_CHANGE`] whose rendered value differs from `live`'s. Pure.
pub fn immutable_change(object: &RenderedObject, live: &Json) -> Option<&'static str> {
    RECREATE_ON_CHANGE
        .iter()
        .filter(|(kind, _)| *kind == object.kind)
        .map(|(_, field)| *field)
        .find(|field| {
            let rendered = &object.object[*field];
            !rendered.is_null() && live.get(*field).is_some_and(|l| l != rendered)
        })
}

/// What went wrong while applying.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The kubeconfig or the connection.
    #[error("cannot connect to the cluster: {0}")]
    Connect(String),
    /// Discovery does not know a kind.
    #[error("the cluster does not serve {kind}: {message}")]
    Discovery {
        /// `group/version/Kind`.
        kind: String,
        /// Why.
        message: String,
    },
    /// The API refused an object.
    #[error("applying {reference} failed: {message}")]
    Apply {
        /// `Kind/namespace/name`.
        reference: String,
        /// The API's message.
        message: String,
    },
    /// Reading an object or listing the inventory failed.
    #[error("reading {reference} failed: {message}")]
    Read {
        /// What was being read.
        reference: String,
        /// The API's message.
        message: String,
    },
    /// Deleting during pruning failed.
    #[error("pruning {reference} failed: {message}")]
    Prune {
        /// What was being pruned.
        reference: String,
        /// The API's message.
        message: String,
    },
    /// Deployments did not become ready in time.
    #[error("rollout not complete after {}s: {}", timeout.as_secs(), not_ready.join("; "))]
    RolloutTimeout {
        /// The bound.
        timeout: Duration,
        /// One line per Deployment: which, and why (its condition's reason and message).
        not_ready: Vec<String>,
    },
}

/// An object of a stack's inventory, as the cluster lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryObject {
    /// `apps/v1`, `v1`, ...
    pub api_version: String,
    /// `Deployment`, ...
    pub kind: String,
    /// `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    /// `metadata.name`.
    pub name: String,
}

impl InventoryObject {
    /// `Kind/namespace/name` or `Kind/name`, like [`RenderedObject::reference`].
    pub fn reference(&self) -> String {
        match &self.namespace {
            Some(namespace) => format!("{}/{namespace}/{}", self.kind, self.name),
            None => format!("{}/{}", self.kind, self.name),
        }
    }

    /// What identifies the object across rendering and listing ([`identity_of`]).
    pub fn identity(&self) -> String {
        identity(
            &self.api_version,
            &self.kind,
            self.namespace.as_deref(),
            &self.name,
        )
    }
}

/// What identifies a rendered object across rendering and listing.
pub fn identity_of(object: &RenderedObject) -> String {
    identity(
        &object.api_version,
        &object.kind,
        object.namespace.as_deref(),
        &object.name,
    )
}

/// What `apply` did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It did not exist.
    Created,
    /// It existed and the apply changed it.
    Configured,
    /// It existed and the apply changed nothing.
    Unchanged,
}

/// The outcome of an apply.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Each applied object with what happened to it, in apply order.
    pub applied: Vec<(String, Change)>,
    /// Objects of the inventory that were deleted because they are no longer rendered.
    pub pruned: Vec<String>,
}

impl ApplyReport {
    /// Whether the apply changed anything in the cluster.
    pub fn changed(&self) -> bool {
        !self.pruned.is_empty() || self.applied.iter().any(|(_, c)| *c != Change::Unchanged)
    }
}

/// Settings of one apply.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// The inventory label's value: the instance-qualified stack name.
    pub stack: String,
    /// How long Deployments may take to become ready.
    pub rollout_timeout: Duration,
    /// How often rollout status is polled.
    pub poll_interval: Duration,
}

/// A connection to one cluster.
pub struct Applier {
    client: kube::Client,
    kinds: Mutex<HashMap<GroupVersionKind, (ApiResource, ApiCapabilities)>>,
}

impl Applier {
    /// Connects through a kubeconfig file (its current context).
    pub async fn connect(kubeconfig: &Path) -> Result<Self, ApplyError> {
        // kube's rustls client needs a process-wide crypto provider; another caller may have
        // installed it already, which is fine.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let file = Kubeconfig::read_from(kubeconfig)
            .map_err(|e| ApplyError::Connect(format!("{}: {e}", kubeconfig.display())))?;
        let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
            .await
            .map_err(|e| ApplyError::Connect(format!("{}: {e}", kubeconfig.display())))?;
        let client =
            kube::Client::try_from(config).map_err(|e| ApplyError::Connect(e.to_string()))?;
        Ok(Self::new(client))
    }

    /// Works through an already connected client (e.g. one authenticated with an EKS token, see
    /// [`super::access::connect`]).
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            kinds: Mutex::new(HashMap::new()),
        }
    }

    /// The live object `object` renders, or `None` when the cluster does not have it.
    pub async fn get(&self, object: &RenderedObject) -> Result<Option<Json>, ApplyError> {
        let api = self
            .api_for(
                &object.api_version,
                &object.kind,
                object.namespace.as_deref(),
            )
            .await?;
        let live = api
            .get_opt(&object.name)
            .await
            .map_err(|e| ApplyError::Read {
                reference: object.reference(),
                message: api_message(&e),
            })?;
        Ok(live.map(|l| serde_json::to_value(l).unwrap_or(Json::Null)))
    }

    /// Every object of the stack's inventory (label [`STACK_LABEL`]), dependents before the
    /// namespaces and classes they live in.
    pub async fn inventory(&self, stack: &str) -> Result<Vec<InventoryObject>, ApplyError> {
        let selector = ListParams::default().labels(&format!("{STACK_LABEL}={stack}"));
        let mut objects = Vec::new();
        for (group, version, kind) in MANAGED_KINDS.iter().rev() {
            let api_version = if group.is_empty() {
                (*version).to_owned()
            } else {
                format!("{group}/{version}")
            };
            let api = self.api_for(&api_version, kind, None).await?;
            let listed = api.list(&selector).await.map_err(|e| ApplyError::Read {
                reference: format!("{kind} with {STACK_LABEL}={stack}"),
                message: api_message(&e),
            })?;
            for item in listed.items {
                // Some servers ignore label selectors: check the label ourselves too.
                let owned = item
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(STACK_LABEL))
                    .is_some_and(|v| v == stack);
                if owned {
                    objects.push(InventoryObject {
                        api_version: api_version.clone(),
                        kind: (*kind).to_owned(),
                        namespace: item.metadata.namespace.clone(),
                        name: item.metadata.name.clone().unwrap_or_default(),
                    });
                }
            }
        }
        Ok(objects)
    }

    /// Applies `files` in order, prunes the inventory, waits for rollouts.
    pub async fn apply(
        &self,
        files: &[RenderedFile],
        options: &ApplyOptions,
    ) -> Result<ApplyReport, ApplyError> {
        let mut report = ApplyReport::default();
        let mut rendered = BTreeSet::new();
        for object in files.iter().flat_map(|f| &f.objects) {
            let change = self.apply_object(object).await?;
            rendered.insert(identity_of(object));
            report.applied.push((object.reference(), change));
        }
        report.pruned = self.prune(&rendered, &options.stack).await?;
        let deployments: Vec<&RenderedObject> = files
            .iter()
            .flat_map(|f| &f.objects)
            .filter(|o| o.kind == "Deployment")
            .collect();
        self.wait_for_rollouts(&deployments, options).await?;
        Ok(report)
    }

    async fn api_for(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<Api<DynamicObject>, ApplyError> {
        let (group, version) = match api_version.split_once('/') {
            Some((group, version)) => (group, version),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let mut kinds = self.kinds.lock().await;
        if !kinds.contains_key(&gvk) {
            let resolved = kube::discovery::pinned_kind(&self.client, &gvk)
                .await
                .map_err(|e| match &e {
                    kube::Error::Api(status) if matches!(status.code, 401 | 403) => {
                        ApplyError::Connect(format!(
                            "the cluster refused the credentials: {} (for EKS, the AWS identity \
                             needs an access entry on the cluster)",
                            api_message(&e)
                        ))
                    }
                    // The API answered, but does not know the kind.
                    kube::Error::Api(_) | kube::Error::Discovery(_) => ApplyError::Discovery {
                        kind: format!("{api_version}/{kind}"),
                        message: api_message(&e),
                    },
                    // No answer: the connection or TLS failed.
                    _ => ApplyError::Connect(api_message(&e)),
                })?;
            kinds.insert(gvk.clone(), resolved);
        }
        let (resource, capabilities) = &kinds[&gvk];
        Ok(match (&capabilities.scope, namespace) {
            (Scope::Namespaced, Some(namespace)) => {
                Api::namespaced_with(self.client.clone(), namespace, resource)
            }
            _ => Api::all_with(self.client.clone(), resource),
        })
    }

    async fn apply_object(&self, object: &RenderedObject) -> Result<Change, ApplyError> {
        let failed = |e: kube::Error| ApplyError::Apply {
            reference: object.reference(),
            message: api_message(&e),
        };
        let api = self
            .api_for(
                &object.api_version,
                &object.kind,
                object.namespace.as_deref(),
            )
            .await?;
        let mut before = api.get_opt(&object.name).await.map_err(failed)?;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let recreated = match &before {
            Some(live) => {
                let live = serde_json::to_value(live).unwrap_or(Json::Null);
                if let Some(field) = immutable_change(object, &live) {
                    self.recreate(&api, object, field).await?;
                    true
                } else {
                    false
                }
            }
            None => false,
        };
        if recreated {
            before = None;
        }
        let mut live = before
            .as_ref()
            .map(|b| serde_json::to_value(b).unwrap_or(Json::Null));
        if live.is_none() && object.autoscaled() {
            // Created at its rendered size, then handed over below in the same run, so the
            // next `up` changes nothing.
            let created = api
                .patch(&object.name, &params, &Patch::Apply(&object.object))
                .await
                .map_err(failed)?;
            live = Some(serde_json::to_value(created).unwrap_or(Json::Null));
        }
        if let Some(target) = object.replicas_for(live.as_ref()) {
            let current = live.as_ref().and_then(|l| l["spec"]["replicas"].as_u64());
            let ours = live
                .as_ref()
                .is_some_and(|l| owns_field(l, FIELD_MANAGER, &["spec", "replicas"]));
            if current != Some(target) || ours {
                // Another manager must own the count before `stacksmith` stops applying it,
                // or the API server would reset it to 1.
                let count = serde_json::json!({
                    "apiVersion": object.api_version,
                    "kind": object.kind,
                    "metadata": { "name": object.name, "namespace": object.namespace },
                    "spec": { "replicas": target },
                });
                api.patch(
                    &object.name,
                    &PatchParams::apply(REPLICAS_MANAGER).force(),
                    &Patch::Apply(&count),
                )
                .await
                .map_err(failed)?;
            }
        }
        let desired = object.applied_with(live.as_ref());
        let after = api
            .patch(&object.name, &params, &Patch::Apply(&*desired))
            .await
            .map_err(failed)?;
        Ok(match before {
            None if recreated => Change::Configured,
            None => Change::Created,
            Some(before) if before.metadata.resource_version == after.metadata.resource_version => {
                Change::Unchanged
            }
            Some(_) => Change::Configured,
        })
    }

    /// Deletes `object` so that the next apply creates it with a value the API server refuses
    /// to change in an update; waits (bounded) until it is gone.
    async fn recreate(
        &self,
        api: &Api<DynamicObject>,
        object: &RenderedObject,
        field: &str,
    ) -> Result<(), ApplyError> {
        let failed = |e: kube::Error| ApplyError::Apply {
            reference: object.reference(),
            message: format!(
                "`{field}` cannot change in an update, and deleting it to recreate it failed: {}",
                api_message(&e)
            ),
        };
        match api.delete(&object.name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(e) => return Err(failed(e)),
        }
        let deadline = tokio::time::Instant::now() + RECREATE_TIMEOUT;
        while api.get_opt(&object.name).await.map_err(failed)?.is_some() {
            if tokio::time::Instant::now() >= deadline {
                return Err(ApplyError::Apply {
                    reference: object.reference(),
                    message: format!(
                        "deleted to change `{field}` (immutable), but still there after {}s",
                        RECREATE_TIMEOUT.as_secs()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Deletes inventory objects that are not in `rendered`, workloads before namespaces.
    async fn prune(
        &self,
        rendered: &BTreeSet<String>,
        stack: &str,
    ) -> Result<Vec<String>, ApplyError> {
        let mut pruned = Vec::new();
        for object in self.inventory(stack).await? {
            if rendered.contains(&object.identity()) {
                continue;
            }
            let reference = object.reference();
            let scoped = self
                .api_for(
                    &object.api_version,
                    &object.kind,
                    object.namespace.as_deref(),
                )
                .await?;
            match scoped.delete(&object.name, &DeleteParams::default()).await {
                Ok(_) => pruned.push(reference),
                Err(kube::Error::Api(status)) if status.is_not_found() => {}
                Err(e) => {
                    return Err(ApplyError::Prune {
                        reference,
                        message: api_message(&e),
                    });
                }
            }
        }
        Ok(pruned)
    }

    async fn wait_for_rollouts(
        &self,
        deployments: &[&RenderedObject],
        options: &ApplyOptions,
    ) -> Result<(), ApplyError> {
        let deadline = tokio::time::Instant::now() + options.rollout_timeout;
        loop {
            let mut not_ready = Vec::new();
            for deployment in deployments {
                let object = self.get(deployment).await?.unwrap_or(Json::Null);
                if let Some(why) = rollout_problem(&object) {
                    not_ready.push(format!("{}: {why}", deployment.reference()));
                }
            }
            if not_ready.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() + options.poll_interval > deadline {
                return Err(ApplyError::RolloutTimeout {
                    timeout: options.rollout_timeout,
                    not_ready,
                });
            }
            tokio::time::sleep(options.poll_interval).await;
        }
    }
}

/// Why a Deployment is not rolled out yet, or `None` when it is.
///
/// Complete as Kubernetes defines it ("Complete Deployment" in the Deployment docs) and as
/// `kubectl rollout status` checks it: the new spec is observed, every wanted replica is updated
/// (`updatedReplicas >= spec.replicas`), no old replica is left (`status.replicas` is not above
/// `updatedReplicas`), and every updated replica is available.
fn rollout_problem(deployment: &Json) -> Option<String> {
    if deployment.is_null() {
        return Some("it does not exist".to_owned());
    }
    let number = |pointer: &str| {
        deployment
            .pointer(pointer)
            .and_then(Json::as_i64)
            .unwrap_or(0)
    };
    let wanted = deployment
        .pointer("/spec/replicas")
        .and_then(Json::as_i64)
        .unwrap_or(1);
    let generation = number("/metadata/generation");
    let observed = number("/status/observedGeneration");
    let total = number("/status/replicas");
    let updated = number("/status/updatedReplicas");
    let available = number("/status/availableReplicas");
    if observed >= generation && updated >= wanted && total <= updated && available >= updated {
        return None;
    }
    // `Progressing=False` names why a rollout is stuck (ProgressDeadlineExceeded, quota, image);
    // `Available=False` only says that it is.
    let conditions: Vec<&Json> = deployment
        .pointer("/status/conditions")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .collect();
    let failing = |kind: &str| {
        conditions
            .iter()
            .copied()
            .find(|c| c["status"] == "False" && c["type"] == kind)
    };
    // `ReplicaFailure=True` names why pods cannot be created (Pod Security, a quota).
    let refused = conditions
        .iter()
        .copied()
        .find(|c| c["status"] == "True" && c["type"] == "ReplicaFailure");
    let stalled = refused
        .or_else(|| failing("Progressing"))
        .or_else(|| failing("Available"));
    Some(match stalled {
        Some(condition) => format!(
            "{} ({}/{} replicas available)",
            [condition["reason"].as_str(), condition["message"].as_str()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(": "),
            available,
            wanted
        ),
        None if observed < generation => "the new spec is not observed yet".to_owned(),
        None if updated < wanted => {
            format!("{updated} of {wanted} new replicas updated, {available} available")
        }
        None if total > updated => format!(
            "{} old replicas pending termination ({updated} of {wanted} updated, {available} available)",
            total - updated
        ),
        None => format!("{available} of {updated} updated replicas available"),
    })
}

/// Whether `manager`'s Apply entry in the object's `managedFields` owns the field at `path`.
fn owns_field(object: &Json, manager: &str, path: &[&str]) -> bool {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|entry| entry["manager"] == manager && entry["operation"] == "Apply")
        .filter(|entry| entry.get("subresource").is_none_or(Json::is_null))
        .any(|entry| {
            let mut node = &entry["fieldsV1"];
            for key in path {
                node = &node[format!("f:{key}")];
            }
            !node.is_null()
        })
}

fn identity(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> String {
    format!("{api_version}/{kind}/{}/{name}", namespace.unwrap_or(""))
}

/// The API's status message, or the error with its causes (e.g. the DNS or TLS failure behind a
/// "client error (Connect)").
fn api_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            format!("{} ({} {})", status.message, status.code, status.reason)
        }
        other => {
            let mut message = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                let text = cause.to_string();
                if !message.contains(&text) {
                    message.push_str(": ");
                    message.push_str(&text);
                }
                source = cause.source();
            }
            message
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_status_is_read_from_the_deployment() {
        let ready = serde_json::json!({
            "metadata": { "generation": 2 },
            "spec": { "replicas": 2 },
            "status": { "observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2 }
        });
        assert_eq!(rollout_problem(&ready), None);
        let stuck = serde_json::json!({
            "metadata": { "generation": 1 },
            "spec": { "replicas": 2 },
            "status": { "observedGeneration": 1, "updatedReplicas": 2, "availableReplicas": 0,
                "conditions": [{ "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                                 "message": "ReplicaSet has timed out progressing." }] }
        });
        let why = rollout_problem(&stuck).unwrap();
        assert!(
            why.starts_with("ProgressDeadlineExceeded: ReplicaSet has timed out progressing."),
            "{why}"
        );
        assert!(why.ends_with("(0/2 replicas available)"), "{why}");
        let refused = serde_json::json!({
            "metadata": { "generation": 1 },
            "spec": { "replicas": 2 },
            "status": { "observedGeneration": 1, "updatedReplicas": 0, "availableReplicas": 0,
                "conditions": [
                    { "type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable" },
                    { "type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                      "message": "pods \"web-1\" is forbidden: violates PodSecurity \"restricted:latest\"" }] }
        });
        let why = rollout_problem(&refused).unwrap();
        assert!(
            why.starts_with("FailedCreate: pods \"web-1\" is forbidden"),
            "{why}"
        );
        let unobserved = serde_json::json!({ "metadata": { "generation": 3 }, "spec": { "replicas": 1 },
            "status": { "observedGeneration": 2, "updatedReplicas": 1, "availableReplicas": 1 } });
        assert_eq!(
            rollout_problem(&unobserved).unwrap(),
            "the new spec is not observed yet"
        );
    }

    /// `kubectl rollout status` waits while "N old replicas are pending termination" even when
    /// every wanted replica is updated and available (a rolling update with surge, old pods
    /// still running), and while "N of M updated replicas are available".
    #[test]
    fn a_rollout_with_old_replicas_still_running_is_not_complete() {
        let status = |total: i64, updated: i64, available: i64| {
            serde_json::json!({
                "metadata": { "generation": 4 },
                "spec": { "replicas": 2 },
                "status": { "observedGeneration": 4, "replicas": total, "updatedReplicas": updated,
                    "availableReplicas": available,
                    "conditions": [{ "type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated" },
                                   { "type": "Available", "status": "True", "reason": "MinimumReplicasAvailable" }] }
            })
        };
        // Two new replicas ready, one old one still running: not complete.
        assert_eq!(
            rollout_problem(&status(3, 2, 3)).unwrap(),
            "1 old replicas pending termination (2 of 2 updated, 3 available)"
        );
        // One of two new replicas updated; the old ones keep it available.
        assert_eq!(
            rollout_problem(&status(3, 1, 2)).unwrap(),
            "1 of 2 new replicas updated, 2 available"
        );
        // Surge: three updated, two available.
        assert_eq!(
            rollout_problem(&status(3, 3, 2)).unwrap(),
            "2 of 3 updated replicas available"
        );
        assert_eq!(rollout_problem(&status(2, 2, 2)), None);
    }
}
