//! `controlplane serve`: the HTTP server with the queue's background work, and the pool
//! autoscaler when configured.

use crate::autoscaler::{self, Autoscaler, AutoscalerSettings};
use crate::config::Config;
use crate::http::server::{ServeError, Server, connect};

/// `controlplane serve`: connect, bind, start the pool autoscaler when configured, serve until
/// SIGTERM/SIGINT.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    let state = connect(config).await?;
    // The pod name in a cluster: names this replica in the autoscaler's logs and leader session.
    let identity = std::env::var("HOSTNAME")
        .unwrap_or_else(|_| format!("controlplane-{}", std::process::id()));
    let autoscaler = match AutoscalerSettings::from_config(&state.config.autoscaler, &identity) {
        Some(settings) => {
            let client = autoscaler::kube_client(state.config.autoscaler.kubeconfig.as_deref())
                .await
                .map_err(|error| ServeError::Autoscaler(Box::new(error)))?;
            Some(Autoscaler::new(
                settings,
                &state.db.connect_options(),
                client,
            ))
        }
        None => None,
    };
    let server = Server::bind(state).await?;
    tracing::info!(address = %server.local_addr()?, "listening");
    let autoscaling = autoscaler.map(|autoscaler| tokio::spawn(autoscaler.run()));
    let outcome = server.run(crate::shutdown::signal()).await;
    if let Some(task) = autoscaling {
        // Ends the leader session, which releases the lock for another replica.
        task.abort();
    }
    outcome
}
