//! The worker's HTTP client of the control plane API.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The answer to a request about a lease.
pub enum Reply<T> {
    Ok(T),
    /// 404 or 409: the lease is gone; nothing more to do with it.
    Gone(String),
}

pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub key: String,
}

impl Api {
    pub async fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<Reply<R>> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await?;
        let status = response.status();
        if status.is_success() {
            return Ok(Reply::Ok(response.json().await?));
        }
        let text = response.text().await.unwrap_or_default();
        if status.as_u16() == 404 || status.as_u16() == 409 {
            return Ok(Reply::Gone(text));
        }
        anyhow::bail!("{path}: HTTP {status}: {text}")
    }

    /// A report, retried a few times on network and server errors.
    pub async fn report<B: Serialize>(&self, path: &str, body: &B) {
        for attempt in 1..=5u32 {
            match self.post::<B, serde_json::Value>(path, body).await {
                Ok(Reply::Ok(_)) => return,
                Ok(Reply::Gone(detail)) => {
                    tracing::warn!(
                        path,
                        detail,
                        "the server refused the report: the lease ended"
                    );
                    return;
                }
                Err(error) => {
                    tracing::warn!(path, %error, attempt, "cannot report; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
            }
        }
        tracing::error!(path, "giving up on the report; the lease will expire");
    }
}
