//! What `down` does inside the cluster before the EKS cluster is deleted: Services of type
//! LoadBalancer make AWS create load balancers, their security groups and ENIs in the stack's
//! VPC, outside Stacksmith's state. Deleting the Services lets the cloud controller remove them
//! (its finalizer holds each Service until its load balancer is gone), so `down` deletes them and
//! waits until they are gone; otherwise the VPC's deletion would fail on those leftovers.
//!
//! How `down` reaches the cluster is a seam ([`ClusterAccess`]): the stack's `cluster.kubeconfig`
//! today; a client authenticated with an EKS token plugs in as [`ClusterAccess::Client`].

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

#[derive(Debug, thiserror::Error)]
pub enum TeardownError {
    #[error("connecting to the cluster through {path}: {message}")]
    Connect { path: String, message: String },
    #[error("{operation}: {source}")]
    Api {
        operation: String,
        source: kube::Error,
    },
    #[error(
        "LoadBalancer Services still present after {waited:?} (their load balancers are not gone): {}",
        remaining.join(", ")
    )]
    StillPresent {
        remaining: Vec<String>,
        waited: Duration,
    },
}

/// How `down` reaches the cluster it is about to delete.
pub enum ClusterAccess {
    /// The stack's `cluster.kubeconfig`.
    Kubeconfig(PathBuf),
    /// A client built elsewhere (e.g. authenticated with an EKS token from the cluster's
    /// endpoint and CA in state).
    Client(kube::Client),
}

impl ClusterAccess {
    pub async fn client(self) -> Result<kube::Client, TeardownError> {
        match self {
            ClusterAccess::Client(client) => Ok(client),
            ClusterAccess::Kubeconfig(path) => {
                let connect = |message: String| TeardownError::Connect {
                    path: path.display().to_string(),
                    message,
                };
                // kube's rustls client needs a process-wide crypto provider (see apply.rs).
                let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
                let file = Kubeconfig::read_from(&path).map_err(|e| connect(e.to_string()))?;
                let config =
                    kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                        .await
                        .map_err(|e| connect(e.to_string()))?;
                kube::Client::try_from(config).map_err(|e| connect(e.to_string()))
            }
        }
    }
}

/// `namespace/name` of every Service of type LoadBalancer.
async fn load_balancer_services(
    client: &kube::Client,
) -> Result<Vec<(String, String)>, TeardownError> {
    let services: Api<Service> = Api::all(client.clone());
    let list = services
        .list(&ListParams::default())
        .await
        .map_err(|source| TeardownError::Api {
            operation: "listing Services".to_owned(),
            source,
        })?;
    Ok(list
        .items
        .into_iter()
        .filter(|service| {
            service.spec.as_ref().and_then(|spec| spec.type_.as_deref()) == Some("LoadBalancer")
        })
        .filter_map(|service| {
            let namespace = service.metadata.namespace?;
            let name = service.metadata.name?;
            Some((namespace, name))
        })
        .collect())
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(response) if response.code == 404)
}

/// Deletes every Service of type LoadBalancer and waits (polling every `poll`, at most `timeout`)
/// until each is gone. Returns the deleted Services as `namespace/name`.
pub async fn delete_load_balancer_services(
    client: &kube::Client,
    timeout: Duration,
    poll: Duration,
) -> Result<Vec<String>, TeardownError> {
    let found = load_balancer_services(client).await?;
    for (namespace, name) in &found {
        let services: Api<Service> = Api::namespaced(client.clone(), namespace);
        match services.delete(name, &DeleteParams::foreground()).await {
            Ok(_) => {}
            Err(error) if is_not_found(&error) => {}
            Err(source) => {
                return Err(TeardownError::Api {
                    operation: format!("deleting Service {namespace}/{name}"),
                    source,
                });
            }
        }
    }
    let started = Instant::now();
    let mut remaining = found.clone();
    loop {
        let mut still = Vec::new();
        for (namespace, name) in remaining {
            let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
            match services.get(&name).await {
                Ok(_) => still.push((namespace, name)),
                Err(error) if is_not_found(&error) => {}
                Err(source) => {
                    return Err(TeardownError::Api {
                        operation: format!("reading Service {namespace}/{name}"),
                        source,
                    });
                }
            }
        }
        if still.is_empty() {
            break;
        }
        if started.elapsed() + poll > timeout {
            return Err(TeardownError::StillPresent {
                remaining: still.iter().map(|(n, s)| format!("{n}/{s}")).collect(),
                waited: started.elapsed(),
            });
        }
        tokio::time::sleep(poll).await;
        remaining = still;
    }
    Ok(found.into_iter().map(|(n, s)| format!("{n}/{s}")).collect())
}
