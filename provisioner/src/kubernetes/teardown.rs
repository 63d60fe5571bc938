//! What `down` does inside the cluster before the EKS cluster is deleted: Services of type
//! LoadBalancer make AWS create load balancers, their security groups and ENIs in the stack's
//! VPC, outside Stacksmith's state. Deleting the Services lets the cloud controller remove them
//! (its finalizer holds each Service until its load balancer is gone), so `down` deletes them and
//! waits until they are gone; otherwise the VPC's deletion would fail on those leftovers.
//!
//! The client comes from [`super::access::connect`] (`cluster.kubeconfig`, or the EKS endpoint
//! with a token), as for `up`.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, ListParams};

#[derive(Debug, thiserror::Error)]
pub enum TeardownError {
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
