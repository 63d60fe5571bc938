//! The kubelet's client of the Kubernetes API (the emulator, plain HTTP, as cluster
//! administrator): lists by label, reads, writes Deployment, Job and Pod status, creates and
//! deletes the Pods of Jobs, its Node and finished Jobs (`ttlSecondsAfterFinished`), requests
//! service-account tokens.

use serde_json::{Value, json};

/// A failed call.
#[derive(Debug)]
pub struct ApiError(pub String);

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ApiError {}

/// The field manager the kubelet writes status as.
pub const FIELD_MANAGER: &str = "stacksmith-kubelet";

#[derive(Debug, Clone)]
pub struct KubeApi {
    http: reqwest::Client,
    base: String,
}

impl KubeApi {
    pub fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .expect("an HTTP client"),
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&str, Value)>,
    ) -> Result<Option<Value>, ApiError> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth("stacksmith-kubelet");
        if let Some((content_type, body)) = body {
            request = request
                .header("Content-Type", content_type)
                .body(body.to_string());
        }
        let response = request
            .send()
            .await
            .map_err(|e| ApiError(format!("{method} {path}: {e}")))?;
        let status = response.status();
        if status.as_u16() == 404 {
            return Ok(None);
        }
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(ApiError(format!("{method} {path}: HTTP {status}: {text}")));
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| ApiError(format!("{method} {path}: {e}")))
    }

    /// Items of a collection (all namespaces), filtered by a label selector.
    pub async fn list(&self, collection: &str, selector: &str) -> Result<Vec<Value>, ApiError> {
        let path = format!("{collection}?labelSelector={}", encode(selector));
        let list = self
            .call(reqwest::Method::GET, &path, None)
            .await?
            .unwrap_or(Value::Null);
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    pub async fn get(&self, path: &str) -> Result<Option<Value>, ApiError> {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// A merge patch of an object's `status` subresource.
    pub async fn patch_status(&self, path: &str, status: &Value) -> Result<(), ApiError> {
        self.call(
            reqwest::Method::PATCH,
            &format!("{path}/status?fieldManager={FIELD_MANAGER}"),
            Some(("application/merge-patch+json", json!({ "status": status }))),
        )
        .await
        .map(drop)
    }

    /// Creates an object in `collection` (a 409 Conflict is an error).
    pub async fn create(&self, collection: &str, object: &Value) -> Result<(), ApiError> {
        self.call(
            reqwest::Method::POST,
            &format!("{collection}?fieldManager={FIELD_MANAGER}"),
            Some(("application/json", object.clone())),
        )
        .await
        .map(drop)
    }

    /// Registers the kubelet's Node: Ready, with its endpoint (`daemonEndpoints`), where the
    /// API server asks for container logs. A Node of the same name is replaced.
    pub async fn register_node(&self, name: &str, port: u16) -> Result<(), ApiError> {
        let path = format!("/api/v1/nodes/{name}");
        self.delete(&path).await?;
        let node = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "node.kubernetes.io/instance-type": "stacksmith-kubelet",
            }},
            "spec": {},
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "message": "kubelet is posting ready status"}],
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                              {"type": "Hostname", "address": name}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
                "nodeInfo": {"kubeletVersion": "v1.33.0-stacksmith", "operatingSystem": "linux"},
            },
        });
        self.create("/api/v1/nodes", &node).await
    }

    /// Deletes an object (background propagation); gone already is fine.
    pub async fn delete(&self, path: &str) -> Result<(), ApiError> {
        self.call(
            reqwest::Method::DELETE,
            path,
            Some((
                "application/json",
                json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}),
            )),
        )
        .await
        .map(drop)
    }

    /// A bound token of a service account (TokenRequest), as the kubelet projects it.
    pub async fn token(&self, namespace: &str, account: &str) -> Result<String, ApiError> {
        let path = format!("/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token");
        let body = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": { "audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600 }
        });
        let answer = self
            .call(
                reqwest::Method::POST,
                &path,
                Some(("application/json", body)),
            )
            .await?
            .ok_or_else(|| ApiError(format!("no service account {namespace}/{account}")))?;
        answer["status"]["token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ApiError(format!("TokenRequest for {namespace}/{account}: {answer}")))
    }
}

/// Percent-encodes a query value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
