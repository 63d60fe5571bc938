//! How Stacksmith reaches a stack's cluster: through `cluster.kubeconfig` when the stack sets one
//! (bring your own cluster; the `local` stack's emulator), otherwise through the EKS cluster the
//! deployment's state records (its endpoint and CA) with a bearer token from [`super::eks_auth`].
//!
//! [`resolve`] decides the [`ClusterRoute`] without IO; [`connect`] opens the client. The same EKS
//! description becomes the kubeconfig `provisioner kubeconfig` writes ([`eks_kubeconfig`], with an
//! exec user that runs `provisioner token`).

use std::path::{Path, PathBuf};

use kube::config::{
    AuthInfo, Context, ExecConfig, KubeConfigOptions, Kubeconfig, NamedAuthInfo, NamedCluster,
    NamedContext,
};
use serde_json::Value;

use super::eks_auth::{self, TokenError};
use crate::aws::AwsTarget;
use crate::engine::Address;
use crate::stack::LoadedStack;
use crate::state::StateDocument;

/// The address of the EKS cluster in state.
pub const CLUSTER_ADDRESS: &str = "cluster.control_plane";

/// The exec credential API version kubeconfigs written here use.
pub const EXEC_API_VERSION: &str = "client.authentication.k8s.io/v1beta1";

/// An EKS cluster as state records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EksCluster {
    /// The cluster's name (what the token is signed for).
    pub name: String,
    /// The API server URL (`https://...`).
    pub endpoint: String,
    /// The cluster CA: base64 of its PEM, as DescribeCluster returns it.
    pub certificate_authority: String,
}

/// How to reach a stack's cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterRoute {
    /// `cluster.kubeconfig` (its current context).
    Kubeconfig(PathBuf),
    /// The EKS cluster of the deployment, with a token signed by the AWS credentials.
    Eks(EksCluster),
    /// No way to reach a cluster; the sentence says why.
    Unavailable(String),
}

impl ClusterRoute {
    /// How the cluster is reached, for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Kubeconfig(path) => path.display().to_string(),
            Self::Eks(cluster) => format!("EKS cluster {} at {}", cluster.name, cluster.endpoint),
            Self::Unavailable(why) => why.clone(),
        }
    }
}

/// Why a cluster could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// State lacks what the connection needs.
    #[error("{0}")]
    NotInState(String),
    /// The route says there is no cluster to reach.
    #[error("no cluster to reach: {0}")]
    Unavailable(String),
    /// No token could be made.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The kubeconfig could not be read or used.
    #[error("cannot connect to the cluster through {target}: {message}")]
    Connect {
        /// The kubeconfig or the endpoint.
        target: String,
        /// Why.
        message: String,
    },
}

/// The EKS cluster state records: its name, endpoint and CA.
pub fn eks_cluster(state: &StateDocument) -> Result<EksCluster, AccessError> {
    let address = Address::parse(CLUSTER_ADDRESS).expect("a valid address");
    let record = state.resources.get(&address).ok_or_else(|| {
        AccessError::NotInState(format!(
            "the deployment records no EKS cluster ({CLUSTER_ADDRESS}); run `provisioner up` first"
        ))
    })?;
    let text = |name: &str| {
        record
            .outputs
            .get(name)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let missing = |field: &str| {
        AccessError::NotInState(format!(
            "{CLUSTER_ADDRESS} has no `{field}` in state; run `provisioner up` (or `plan --refresh`) \
             to record it"
        ))
    };
    let endpoint = text("endpoint").ok_or_else(|| missing("endpoint"))?;
    Ok(EksCluster {
        name: text("name")
            .or_else(|| {
                record
                    .properties
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .ok_or_else(|| missing("name"))?,
        endpoint: if endpoint.contains("://") {
            endpoint
        } else {
            format!("https://{endpoint}")
        },
        certificate_authority: text("certificate_authority")
            .ok_or_else(|| missing("certificate_authority"))?,
    })
}

/// How `up` and `plan` reach the stack's cluster: `cluster.kubeconfig` first; otherwise the EKS
/// cluster in `state`, unless `fake_cloud` (the test-only fake provider records clusters that
/// have no API server). No IO.
pub fn resolve(
    loaded: &LoadedStack,
    state: Option<&StateDocument>,
    fake_cloud: bool,
) -> ClusterRoute {
    if let Some(path) = super::install::kubeconfig_of(loaded) {
        return ClusterRoute::Kubeconfig(path);
    }
    if fake_cloud {
        return ClusterRoute::Unavailable(
            "the stack sets no `cluster.kubeconfig` and the fake provider's cluster has no API server"
                .to_owned(),
        );
    }
    match state.map(eks_cluster) {
        Some(Ok(cluster)) => ClusterRoute::Eks(cluster),
        Some(Err(error)) => ClusterRoute::Unavailable(format!(
            "the stack sets no `cluster.kubeconfig` and {error}"
        )),
        None => ClusterRoute::Unavailable(
            "the stack sets no `cluster.kubeconfig` and no EKS cluster is deployed yet".to_owned(),
        ),
    }
}

/// A one-context kubeconfig for an EKS cluster with `user` as its credentials.
pub fn eks_kubeconfig(cluster: &EksCluster, user: AuthInfo) -> Kubeconfig {
    let name = cluster.name.clone();
    Kubeconfig {
        api_version: Some("v1".to_owned()),
        kind: Some("Config".to_owned()),
        clusters: vec![NamedCluster {
            name: name.clone(),
            cluster: Some(kube::config::Cluster {
                server: Some(cluster.endpoint.clone()),
                certificate_authority_data: Some(cluster.certificate_authority.clone()),
                ..Default::default()
            }),
            ..Default::default()
        }],
        auth_infos: vec![NamedAuthInfo {
            name: name.clone(),
            auth_info: Some(user),
            ..Default::default()
        }],
        contexts: vec![NamedContext {
            name: name.clone(),
            context: Some(Context {
                cluster: name.clone(),
                user: Some(name.clone()),
                ..Default::default()
            }),
            ..Default::default()
        }],
        current_context: Some(name),
        ..Default::default()
    }
}

/// A user whose credentials come from `<program> [--stacks-dir DIR] token --stack S
/// [--instance I]`.
pub fn exec_user(
    program: &Path,
    stacks_dir: Option<&Path>,
    stack: &str,
    instance: Option<&str>,
) -> AuthInfo {
    let mut args = Vec::new();
    if let Some(dir) = stacks_dir {
        args.extend(["--stacks-dir".to_owned(), dir.display().to_string()]);
    }
    args.extend(["token".to_owned(), "--stack".to_owned(), stack.to_owned()]);
    if let Some(instance) = instance {
        args.extend(["--instance".to_owned(), instance.to_owned()]);
    }
    AuthInfo {
        exec: Some(ExecConfig {
            api_version: Some(EXEC_API_VERSION.to_owned()),
            command: Some(program.display().to_string()),
            args: Some(args),
            install_hint: Some(
                "provisioner (Stacksmith) makes EKS tokens from your AWS credentials".to_owned(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Opens a client: through the kubeconfig, or to the EKS endpoint with a fresh token (valid for
/// [`eks_auth::TOKEN_LIFETIME`], which bounds how long one `up` may talk to the cluster).
pub async fn connect(route: &ClusterRoute, aws: &AwsTarget) -> Result<kube::Client, AccessError> {
    // kube's rustls client needs a process-wide crypto provider; another caller may have
    // installed it already, which is fine.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let (kubeconfig, target) = match route {
        ClusterRoute::Kubeconfig(path) => {
            let file = Kubeconfig::read_from(path).map_err(|e| AccessError::Connect {
                target: path.display().to_string(),
                message: e.to_string(),
            })?;
            (file, path.display().to_string())
        }
        ClusterRoute::Eks(cluster) => {
            let token = eks_auth::token(aws, &cluster.name).await?;
            let user = AuthInfo {
                token: Some(token.token.into()),
                ..Default::default()
            };
            (eks_kubeconfig(cluster, user), cluster.endpoint.clone())
        }
        ClusterRoute::Unavailable(why) => return Err(AccessError::Unavailable(why.clone())),
    };
    let failed = |message: String| AccessError::Connect {
        target: target.clone(),
        message,
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| failed(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| failed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> EksCluster {
        EksCluster {
            name: "stacksmith-prod".into(),
            endpoint: "https://ABC.gr7.eu-west-1.eks.amazonaws.com".into(),
            certificate_authority: "LS0tLS1CRUdJTg==".into(),
        }
    }

    #[test]
    fn the_kubeconfig_names_the_endpoint_ca_and_an_exec_user() {
        let user = exec_user(
            Path::new("/usr/bin/provisioner"),
            Some(Path::new("/srv/stacks")),
            "production",
            Some("pr-7"),
        );
        let config = serde_json::to_value(eks_kubeconfig(&cluster(), user)).unwrap();
        assert_eq!(config["current-context"], "stacksmith-prod");
        let server = &config["clusters"][0]["cluster"];
        assert_eq!(
            server["server"],
            "https://ABC.gr7.eu-west-1.eks.amazonaws.com"
        );
        assert_eq!(server["certificate-authority-data"], "LS0tLS1CRUdJTg==");
        let exec = &config["users"][0]["user"]["exec"];
        assert_eq!(exec["apiVersion"], EXEC_API_VERSION);
        assert_eq!(exec["command"], "/usr/bin/provisioner");
        assert_eq!(
            exec["args"],
            serde_json::json!([
                "--stacks-dir",
                "/srv/stacks",
                "token",
                "--stack",
                "production",
                "--instance",
                "pr-7"
            ])
        );
        assert_eq!(config["contexts"][0]["context"]["user"], "stacksmith-prod");
    }
}
