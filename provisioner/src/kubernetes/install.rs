//! The in-cluster half of `up`: after the AWS side converged, the baseline and the control plane
//! are rendered with the provisioned outputs and applied to the cluster.
//!
//! Secrets reach the cluster and nothing else: the database password and cache auth token are
//! decrypted from state, the API's bootstrap admin key and the workers' key are derived from the
//! state key ([`StateCipher::derive_secret`]), so they are the same on every run and stored
//! nowhere in plain text.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::apply::{Applier, ApplyError, ApplyOptions, ApplyReport};
use super::{CloudOutputs, RenderError, SecretValues};
use crate::engine::Address;
use crate::engine::secrets::StateCipher;
use crate::stack::LoadedStack;
use crate::state::StateDocument;

/// The resource whose outputs give the database URL.
pub const DATABASE_ADDRESS: &str = "database.instance";
/// The resource whose outputs give the Redis URL.
pub const CACHE_ADDRESS: &str = "cache.replication_group";
/// The Cluster Autoscaler's IAM role, whose ARN its service account names.
pub const CLUSTER_AUTOSCALER_ROLE_ADDRESS: &str = "iam.role.cluster_autoscaler";

/// Why the in-cluster install could not run or failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A value the manifests need is not in state.
    #[error("{address} has no `{field}` in state; run `up` again to let it converge")]
    MissingOutput {
        address: &'static str,
        field: &'static str,
    },
    /// A secret in state could not be decrypted.
    #[error("cannot decrypt {address}.{field}: {message}")]
    Decrypt {
        address: &'static str,
        field: &'static str,
        message: String,
    },
    /// Rendering failed.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// Applying failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

/// How `up` reaches the cluster: `cluster.kubeconfig` of the stack when set and not empty (an
/// empty value, e.g. `${env:STACKSMITH_KUBECONFIG:-}` with the variable unset, means none).
pub fn kubeconfig_of(loaded: &LoadedStack) -> Option<PathBuf> {
    loaded
        .stack
        .cluster
        .kubeconfig
        .as_deref()
        .filter(|path| !path.trim().is_empty())
        .map(PathBuf::from)
}

/// The secret values of the manifests, from state and the state key.
pub fn secret_values(
    loaded: &LoadedStack,
    state: &StateDocument,
    cipher: &StateCipher,
) -> Result<SecretValues, InstallError> {
    let qualified = &loaded.names.qualified;
    let database_url = match &loaded.stack.database {
        None => String::new(),
        Some(_) => {
            let record = Record::find(state, DATABASE_ADDRESS)?;
            let host = record.output(&["address", "endpoint"])?;
            let port = record.port(5432);
            let user = record.property("master_username")?;
            let password = record.secret("master_password", cipher)?;
            format!(
                "postgres://{}:{}@{host}:{port}/postgres?sslmode=require",
                percent_encode(&user),
                percent_encode(&password)
            )
        }
    };
    let redis_url = match &loaded.stack.cache {
        None => String::new(),
        Some(cache) => {
            let record = Record::find(state, CACHE_ADDRESS)?;
            let host = record.output(&["primary_endpoint", "endpoint"])?;
            let port = record.port(6379);
            let scheme = if cache.transit_encryption {
                "rediss"
            } else {
                "redis"
            };
            match record.optional_secret("auth_token", cipher)? {
                Some(token) => format!("{scheme}://:{}@{host}:{port}", percent_encode(&token)),
                None => format!("{scheme}://{host}:{port}"),
            }
        }
    };
    Ok(SecretValues {
        database_url,
        redis_url,
        admin_key: cipher.derive_secret(&format!("controlplane-admin-key:{qualified}")),
        worker_key: cipher.derive_secret(&format!("controlplane-worker-key:{qualified}")),
    })
}

/// What the in-cluster objects need from the cloud side, from state: the ARN the Cluster
/// Autoscaler's role got (`None` until `up` created it, or when the stack has none).
pub fn cloud_outputs(state: Option<&StateDocument>) -> CloudOutputs {
    let role_arn = state.and_then(|state| {
        let address = Address::parse(CLUSTER_AUTOSCALER_ROLE_ADDRESS).ok()?;
        state
            .resources
            .get(&address)?
            .outputs
            .get("arn")?
            .as_str()
            .map(str::to_owned)
    });
    CloudOutputs {
        cluster_autoscaler_role_arn: role_arn,
    }
}

/// Renders the stack with `secrets` and the cloud `outputs`, and applies it through `applier`.
pub async fn install(
    applier: &Applier,
    loaded: &LoadedStack,
    secrets: &SecretValues,
    outputs: &CloudOutputs,
    rollout_timeout: Duration,
) -> Result<ApplyReport, InstallError> {
    if loaded.stack.cluster.autoscaler_enabled() && outputs.cluster_autoscaler_role_arn.is_none() {
        return Err(InstallError::MissingOutput {
            address: CLUSTER_AUTOSCALER_ROLE_ADDRESS,
            field: "arn",
        });
    }
    let files = super::render_with(loaded, Some(secrets), outputs)?;
    let options = ApplyOptions {
        stack: loaded.names.qualified.clone(),
        rollout_timeout,
        poll_interval: Duration::from_secs(1).min(rollout_timeout / 10),
    };
    Ok(applier.apply(&files, &options).await?)
}

/// Percent-encodes everything but RFC 3986 unreserved characters (URL userinfo, query values).
pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

struct Record<'a> {
    address: &'static str,
    properties: &'a indexmap::IndexMap<String, Value>,
    outputs: &'a indexmap::IndexMap<String, Value>,
}

impl<'a> Record<'a> {
    fn find(state: &'a StateDocument, address: &'static str) -> Result<Self, InstallError> {
        let missing = InstallError::MissingOutput {
            address,
            field: "id",
        };
        let parsed = Address::parse(address).map_err(|_| missing)?;
        let record = state
            .resources
            .get(&parsed)
            .ok_or(InstallError::MissingOutput {
                address,
                field: "id",
            })?;
        Ok(Self {
            address,
            properties: &record.properties,
            outputs: &record.outputs,
        })
    }

    /// The first of `names` present among the outputs, as text.
    fn output(&self, names: &[&'static str]) -> Result<String, InstallError> {
        names
            .iter()
            .find_map(|name| self.outputs.get(*name).and_then(Value::as_str))
            .map(str::to_owned)
            .ok_or(InstallError::MissingOutput {
                address: self.address,
                field: names[0],
            })
    }

    fn port(&self, default: u16) -> u64 {
        self.outputs
            .get("port")
            .and_then(Value::as_u64)
            .unwrap_or(u64::from(default))
    }

    fn property(&self, field: &'static str) -> Result<String, InstallError> {
        self.properties
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or(InstallError::MissingOutput {
                address: self.address,
                field,
            })
    }

    fn optional_secret(
        &self,
        field: &'static str,
        cipher: &StateCipher,
    ) -> Result<Option<String>, InstallError> {
        match self.properties.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(sealed) => cipher
                .decrypt(sealed)
                .map(Some)
                .map_err(|e| InstallError::Decrypt {
                    address: self.address,
                    field,
                    message: e.to_string(),
                }),
        }
    }

    fn secret(&self, field: &'static str, cipher: &StateCipher) -> Result<String, InstallError> {
        self.optional_secret(field, cipher)?
            .ok_or(InstallError::MissingOutput {
                address: self.address,
                field,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::percent_encode;

    #[test]
    fn userinfo_is_percent_encoded() {
        assert_eq!(percent_encode("a-Z_0.~"), "a-Z_0.~");
        assert_eq!(percent_encode("p@ss:w/rd%"), "p%40ss%3Aw%2Frd%25");
    }
}
