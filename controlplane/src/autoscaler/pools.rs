//! The worker pools as the cluster holds them: the worker Deployments the provisioner renders
//! (`provisioner/templates/kubernetes/70-workers.yaml.tera`), found by their labels, each pool's
//! bounds read from the Deployment's annotations; and resizing one through its `scale`
//! subresource (which the control plane's Role allows: `deployments/scale` get, patch, update).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};

use super::decision::{PolicyError, PoolPolicy};

/// Selects the worker Deployments: the worker app, with a pool label.
pub const WORKER_SELECTOR: &str = "app.kubernetes.io/name=stacksmith-worker,stacksmith.dev/pool";
/// The label naming a Deployment's pool (tasks' `pool`).
pub const POOL_LABEL: &str = "stacksmith.dev/pool";
/// The stack's `worker_pools.<pool>.replicas.min`.
pub const MIN_REPLICAS_ANNOTATION: &str = "stacksmith.dev/min-replicas";
/// The stack's `worker_pools.<pool>.replicas.max`.
pub const MAX_REPLICAS_ANNOTATION: &str = "stacksmith.dev/max-replicas";
/// The stack's `worker_pools.<pool>.tasks_per_replica`.
pub const TASKS_PER_REPLICA_ANNOTATION: &str = "stacksmith.dev/tasks-per-replica";
/// The field manager of the autoscaler's writes (`spec.replicas` through `scale`).
pub const FIELD_MANAGER: &str = "stacksmith-autoscaler";

/// Why a worker Deployment cannot be scaled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolSpecError {
    #[error("it has no {POOL_LABEL} label")]
    MissingPoolLabel,
    #[error("it has no {0} annotation")]
    MissingAnnotation(&'static str),
    #[error("its {annotation} annotation {value:?} is not a whole number")]
    NotANumber {
        annotation: &'static str,
        value: String,
    },
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// One pool's Deployment, its policy and its current size (`spec.replicas`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerPool {
    pub pool: String,
    pub deployment: String,
    pub policy: PoolPolicy,
    pub replicas: u32,
}

impl WorkerPool {
    /// Reads a worker Deployment as rendered by the provisioner.
    pub fn from_deployment(deployment: &Deployment) -> Result<Self, PoolSpecError> {
        let metadata = &deployment.metadata;
        let pool = metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(POOL_LABEL))
            .filter(|pool| !pool.is_empty())
            .ok_or(PoolSpecError::MissingPoolLabel)?
            .clone();
        let empty = BTreeMap::new();
        let annotations = metadata.annotations.as_ref().unwrap_or(&empty);
        let number = |annotation: &'static str| -> Result<u32, PoolSpecError> {
            let value = annotations
                .get(annotation)
                .ok_or(PoolSpecError::MissingAnnotation(annotation))?;
            value.trim().parse().map_err(|_| PoolSpecError::NotANumber {
                annotation,
                value: value.clone(),
            })
        };
        let policy = PoolPolicy::new(
            number(MIN_REPLICAS_ANNOTATION)?,
            number(MAX_REPLICAS_ANNOTATION)?,
            number(TASKS_PER_REPLICA_ANNOTATION)?,
        )?;
        // An absent `spec.replicas` means 1, as in the API server.
        let replicas = deployment
            .spec
            .as_ref()
            .and_then(|spec| spec.replicas)
            .unwrap_or(1);
        Ok(Self {
            pool,
            deployment: metadata.name.clone().unwrap_or_default(),
            policy,
            replicas: u32::try_from(replicas).unwrap_or(0),
        })
    }
}

/// A worker Deployment that could not be read as a pool, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnusableDeployment {
    pub deployment: String,
    pub reason: PoolSpecError,
}

/// The worker Deployments of one namespace.
#[derive(Clone)]
pub struct WorkerDeployments {
    api: Api<Deployment>,
}

impl WorkerDeployments {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
        }
    }

    /// Every worker Deployment of the namespace, as a pool or as the reason it is not one.
    pub async fn list(&self) -> Result<(Vec<WorkerPool>, Vec<UnusableDeployment>), kube::Error> {
        let deployments = self
            .api
            .list(&ListParams::default().labels(WORKER_SELECTOR))
            .await?;
        let mut pools = Vec::new();
        let mut unusable = Vec::new();
        for deployment in &deployments.items {
            match WorkerPool::from_deployment(deployment) {
                Ok(pool) => pools.push(pool),
                Err(reason) => unusable.push(UnusableDeployment {
                    deployment: deployment.metadata.name.clone().unwrap_or_default(),
                    reason,
                }),
            }
        }
        Ok((pools, unusable))
    }

    /// Sets the Deployment's `spec.replicas` through its `scale` subresource.
    pub async fn scale(&self, deployment: &str, replicas: u32) -> Result<(), kube::Error> {
        let patch = serde_json::json!({ "spec": { "replicas": replicas } });
        self.api
            .patch_scale(
                deployment,
                &PatchParams {
                    field_manager: Some(FIELD_MANAGER.to_owned()),
                    ..PatchParams::default()
                },
                &Patch::Merge(&patch),
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Deployment {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "stacksmith-worker-default",
                "labels": map(labels),
                "annotations": map(annotations),
            },
            "spec": {
                "replicas": 3,
                "selector": {},
                "template": {},
            },
        }))
        .unwrap()
    }

    const RENDERED: [(&str, &str); 3] = [
        (MIN_REPLICAS_ANNOTATION, "2"),
        (MAX_REPLICAS_ANNOTATION, "50"),
        (TASKS_PER_REPLICA_ANNOTATION, "10"),
    ];

    #[test]
    fn a_rendered_worker_deployment_is_a_pool() {
        let pool = WorkerPool::from_deployment(&deployment(&[(POOL_LABEL, "default")], &RENDERED))
            .unwrap();
        assert_eq!(pool.pool, "default");
        assert_eq!(pool.deployment, "stacksmith-worker-default");
        assert_eq!(pool.replicas, 3);
        assert_eq!(pool.policy, PoolPolicy::new(2, 50, 10).unwrap());
    }

    #[test]
    fn missing_or_broken_settings_are_named() {
        let no_label = deployment(&[], &RENDERED);
        assert_eq!(
            WorkerPool::from_deployment(&no_label),
            Err(PoolSpecError::MissingPoolLabel)
        );
        let no_max = deployment(
            &[(POOL_LABEL, "default")],
            &[
                (MIN_REPLICAS_ANNOTATION, "2"),
                (TASKS_PER_REPLICA_ANNOTATION, "10"),
            ],
        );
        assert_eq!(
            WorkerPool::from_deployment(&no_max),
            Err(PoolSpecError::MissingAnnotation(MAX_REPLICAS_ANNOTATION))
        );
        let words = deployment(
            &[(POOL_LABEL, "default")],
            &[
                (MIN_REPLICAS_ANNOTATION, "two"),
                (MAX_REPLICAS_ANNOTATION, "50"),
                (TASKS_PER_REPLICA_ANNOTATION, "10"),
            ],
        );
        assert!(matches!(
            WorkerPool::from_deployment(&words),
            Err(PoolSpecError::NotANumber {
                annotation: MIN_REPLICAS_ANNOTATION,
                ..
            })
        ));
        let inverted = deployment(
            &[(POOL_LABEL, "default")],
            &[
                (MIN_REPLICAS_ANNOTATION, "9"),
                (MAX_REPLICAS_ANNOTATION, "5"),
                (TASKS_PER_REPLICA_ANNOTATION, "10"),
            ],
        );
        assert_eq!(
            WorkerPool::from_deployment(&inverted),
            Err(PoolSpecError::Policy(PolicyError::MinAboveMax {
                min: 9,
                max: 5
            }))
        );
    }
}
