//! The pool autoscaler: sizes each worker pool's Deployment by its backlog.
//!
//! It runs inside `controlplane serve` when `autoscaler.namespace` is set (the provisioner's
//! ConfigMap sets `CONTROLPLANE_AUTOSCALER_NAMESPACE` to the worker namespace). Every replica
//! runs the loop; one leads ([`leader`]: a Postgres advisory lock on a dedicated session). Every
//! `autoscaler.interval_ms` the leader:
//! 1. lists the worker Deployments of the namespace ([`pools`]: label
//!    `app.kubernetes.io/name=stacksmith-worker`, the pool in `stacksmith.dev/pool`, its
//!    `replicas.min`, `replicas.max` and `tasks_per_replica` in `stacksmith.dev/*` annotations,
//!    all rendered by the provisioner from the stack's `controlplane.worker_pools`);
//! 2. reads each pool's backlog through its leader session ([`crate::store::backlog`]): queued tasks
//!    whose `run_at` has come plus leased or running ones, the work the pool has to hold (counting
//!    running tasks keeps a pool that keeps up with its queue from being shrunk under its tasks);
//! 3. decides ([`decision`]: `clamp(ceil(backlog / tasks_per_replica), min, max)`, stabilized by
//!    the scale-up and scale-down windows) and patches `spec.replicas` through the Deployment's
//!    `scale` subresource when the decision differs from it, logging every change.
//!
//! Metrics: `controlplane_autoscaler_leader`, and per pool `controlplane_autoscaler_backlog_tasks`,
//! `controlplane_autoscaler_current_replicas`, `controlplane_autoscaler_desired_replicas` and
//! `controlplane_autoscaler_scaling_events_total` (by direction) and
//! `controlplane_autoscaler_scale_failures_total` (by reason: a scale the cluster refused, e.g.
//! `Forbidden` by the Role, is logged and counted, and retried next round).

pub mod decision;
pub mod leader;
pub mod pools;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use sqlx::postgres::PgConnectOptions;

use crate::config::AutoscalerConfig;
use crate::metrics;
use decision::{StabilizationWindows, Stabilizer};
use leader::Leadership;
use pools::WorkerDeployments;

/// Why the autoscaler could not start, or one round failed.
#[derive(Debug, thiserror::Error)]
pub enum AutoscalerError {
    #[error("cannot read the kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        source: kube::config::KubeconfigError,
    },
    #[error("no Kubernetes configuration found (KUBECONFIG, ~/.kube/config, in-cluster): {0}")]
    InferConfig(#[from] kube::config::InferConfigError),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("Postgres: {0}")]
    Database(#[from] sqlx::Error),
}

/// What the loop needs besides its connections.
#[derive(Debug, Clone)]
pub struct AutoscalerSettings {
    /// The namespace of the worker Deployments.
    pub namespace: String,
    pub interval: Duration,
    pub windows: StabilizationWindows,
    /// This replica's name in logs and in `pg_stat_activity` (the pod name in a cluster).
    pub identity: String,
}

impl AutoscalerSettings {
    /// `None` when the configuration leaves the autoscaler off.
    pub fn from_config(config: &AutoscalerConfig, identity: &str) -> Option<Self> {
        Some(Self {
            namespace: config.namespace.clone()?,
            interval: Duration::from_millis(config.interval_ms),
            windows: StabilizationWindows {
                scale_up: Duration::from_millis(config.scale_up_window_ms),
                scale_down: Duration::from_millis(config.scale_down_window_ms),
            },
            identity: identity.to_owned(),
        })
    }
}

/// What one replica's autoscaler is doing, readable while it runs.
#[derive(Debug, Default)]
pub struct AutoscalerStatus {
    leading: AtomicBool,
    scalings: AtomicU64,
}

impl AutoscalerStatus {
    /// Whether this replica holds the leader lock.
    pub fn is_leading(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    /// How many times this replica patched a Deployment's replicas.
    pub fn scalings(&self) -> u64 {
        self.scalings.load(Ordering::SeqCst)
    }

    fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::SeqCst);
        ::metrics::gauge!(metrics::AUTOSCALER_LEADER).set(if leading { 1.0 } else { 0.0 });
    }
}

/// Builds a Kubernetes client from `kubeconfig`, or else from `KUBECONFIG` / `~/.kube/config`,
/// or else from the in-cluster service account.
pub async fn kube_client(kubeconfig: Option<&Path>) -> Result<kube::Client, AutoscalerError> {
    // kube's rustls client needs a process-wide crypto provider; it may be installed already.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig_error = |source| AutoscalerError::Kubeconfig {
                path: path.display().to_string(),
                source,
            };
            let file = Kubeconfig::read_from(path).map_err(kubeconfig_error)?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(kubeconfig_error)?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}

/// The label of a failed scale: the API server's status reason (`Forbidden`, `NotFound`,
/// `Conflict`...), or `Unreachable` when no answer came.
fn failure_reason(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.reason.is_empty() => status.reason.clone(),
        kube::Error::Api(status) => format!("HTTP{}", status.code),
        _ => "Unreachable".to_owned(),
    }
}

/// One replica's autoscaler loop.
pub struct Autoscaler {
    settings: AutoscalerSettings,
    deployments: WorkerDeployments,
    leadership: Leadership,
    stabilizers: HashMap<String, Stabilizer>,
    status: Arc<AutoscalerStatus>,
}

impl Autoscaler {
    /// `database` names the control plane's database (the leader session connects to it).
    pub fn new(
        settings: AutoscalerSettings,
        database: &PgConnectOptions,
        client: kube::Client,
    ) -> Self {
        Self {
            deployments: WorkerDeployments::new(client, &settings.namespace),
            leadership: Leadership::new(database, &settings.identity),
            settings,
            stabilizers: HashMap::new(),
            status: Arc::default(),
        }
    }

    /// A handle on what this autoscaler is doing.
    pub fn status(&self) -> Arc<AutoscalerStatus> {
        self.status.clone()
    }

    /// Runs until the task is aborted (dropping the leader session gives leadership up).
    pub async fn run(mut self) {
        tracing::info!(
            namespace = %self.settings.namespace,
            identity = %self.settings.identity,
            interval_ms = self.settings.interval.as_millis() as u64,
            scale_up_window_ms = self.settings.windows.scale_up.as_millis() as u64,
            scale_down_window_ms = self.settings.windows.scale_down.as_millis() as u64,
            "pool autoscaler started"
        );
        // Followers report 0 from the start, not nothing.
        self.status.set_leading(false);
        let mut interval = tokio::time::interval(self.settings.interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            self.round(Instant::now()).await;
        }
    }

    /// One round: keep or take leadership, then, when leading, scale every pool.
    pub async fn round(&mut self, now: Instant) {
        let was_leading = self.leadership.is_leading();
        match self.leadership.try_lead().await {
            Ok(true) => {
                if !was_leading {
                    tracing::info!(identity = %self.settings.identity, "leading the pool autoscaler");
                    self.status.set_leading(true);
                }
            }
            Ok(false) => return,
            Err(error) => {
                tracing::warn!(%error, "cannot take part in the autoscaler's leader election");
                return;
            }
        }
        if let Err(error) = self.scale_pools(now).await {
            tracing::warn!(%error, "pool autoscaling round failed");
            if matches!(error, AutoscalerError::Database(_))
                && !self.leadership.session_alive().await
            {
                // The leader session is gone, and the lock with it: stop acting until the lock
                // is taken again. Another replica may have it by then.
                self.leadership.resign().await;
                self.stabilizers.clear();
                self.status.set_leading(false);
                tracing::warn!(identity = %self.settings.identity, "gave up leading the pool autoscaler");
            }
        }
    }

    async fn scale_pools(&mut self, now: Instant) -> Result<(), AutoscalerError> {
        let (pools, unusable) = self.deployments.list().await?;
        for deployment in &unusable {
            tracing::warn!(
                deployment = %deployment.deployment,
                reason = %deployment.reason,
                "worker Deployment not autoscaled"
            );
        }
        let names: Vec<String> = pools.iter().map(|pool| pool.pool.clone()).collect();
        let Some(connection) = self.leadership.connection() else {
            return Ok(());
        };
        let backlogs = crate::store::backlog::by_pool(connection, &names).await?;
        self.stabilizers.retain(|pool, _| names.contains(pool));
        for pool in &pools {
            let backlog = backlogs.get(&pool.pool).copied().unwrap_or_default();
            let windows = self.settings.windows;
            let stabilizer = self
                .stabilizers
                .entry(pool.pool.clone())
                .or_insert_with(|| Stabilizer::new(windows, &pool.policy, now, pool.replicas));
            let decision = stabilizer.decide(now, &pool.policy, backlog.total(), pool.replicas);
            let label = pool.pool.clone();
            ::metrics::gauge!(metrics::AUTOSCALER_BACKLOG, "pool" => label.clone())
                .set(backlog.total() as f64);
            ::metrics::gauge!(metrics::AUTOSCALER_CURRENT_REPLICAS, "pool" => label.clone())
                .set(f64::from(decision.current));
            ::metrics::gauge!(metrics::AUTOSCALER_DESIRED_REPLICAS, "pool" => label.clone())
                .set(f64::from(decision.desired));
            let Some(direction) = decision.direction() else {
                continue;
            };
            match self
                .deployments
                .scale(&pool.deployment, decision.desired)
                .await
            {
                Ok(()) => {
                    self.status.scalings.fetch_add(1, Ordering::SeqCst);
                    ::metrics::counter!(metrics::AUTOSCALER_SCALINGS, "pool" => label, "direction" => direction.as_str())
                        .increment(1);
                    tracing::info!(
                        pool = %pool.pool,
                        deployment = %pool.deployment,
                        direction = direction.as_str(),
                        from = decision.current,
                        to = decision.desired,
                        recommended = decision.recommended,
                        ready_tasks = backlog.ready,
                        running_tasks = backlog.in_flight,
                        min = pool.policy.min_replicas(),
                        max = pool.policy.max_replicas(),
                        tasks_per_replica = pool.policy.tasks_per_replica(),
                        "scaled worker pool"
                    );
                }
                Err(error) => {
                    let reason = failure_reason(&error);
                    ::metrics::counter!(metrics::AUTOSCALER_SCALE_FAILURES, "pool" => label, "reason" => reason.clone())
                        .increment(1);
                    tracing::warn!(
                        pool = %pool.pool,
                        deployment = %pool.deployment,
                        to = decision.desired,
                        %reason,
                        %error,
                        "cannot scale worker pool"
                    );
                }
            }
        }
        Ok(())
    }
}
