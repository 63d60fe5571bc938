//! The worker's probe endpoints (`controlplane worker --health-listen ADDR`), where a worker
//! pod's liveness and readiness probes look:
//!
//! - `GET /healthz`: 200 while the worker runs (its event loop answers);
//! - `GET /readyz`: 200 once the control plane has answered a lease request with this worker's
//!   key, and until a lease request fails or the worker stops leasing (shutdown); 503 otherwise,
//!   with the reason. A pool whose workers cannot reach the API, or hold a key it refuses, never
//!   becomes ready, so `provisioner up`'s rollout wait reports it instead of passing.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

/// What `/readyz` answers, updated by the lease loop.
#[derive(Debug, Clone)]
pub struct Readiness(Arc<Mutex<Result<(), String>>>);

impl Default for Readiness {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(Err(
            "no lease request has been answered yet".to_owned(),
        ))))
    }
}

impl Readiness {
    /// The control plane answered a lease request.
    pub fn reached(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Ok(());
    }

    /// The worker is not ready, for `why`.
    pub fn not_ready(&self, why: impl Into<String>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Err(why.into());
    }

    fn get(&self) -> Result<(), String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Binds `address` and serves the probes until the returned task is aborted.
pub async fn serve(
    address: SocketAddr,
    readiness: Readiness,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!(address = %listener.local_addr()?, "worker probes on /healthz and /readyz");
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(readiness);
    Ok(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::warn!(%error, "the worker's probe server stopped");
        }
    }))
}

async fn ready(State(readiness): State<Readiness>) -> (StatusCode, String) {
    match readiness.get() {
        Ok(()) => (StatusCode::OK, "ready".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}
