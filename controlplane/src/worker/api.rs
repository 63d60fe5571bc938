//! The worker's HTTP client of the control plane API.

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
}
