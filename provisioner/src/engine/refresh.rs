//! Refresh: reads every recorded resource from its provider, concurrently, for the planner's
//! `live` input. Read-only.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::Address;
use super::planner::LiveSnapshot;
use super::provider::{CallContext, MissingProvider, ProviderError, ProviderRegistry};
use crate::state::StateDocument;

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error(transparent)]
    MissingProvider(#[from] MissingProvider),
    #[error("refreshing {address}: {source}")]
    Provider {
        address: Address,
        source: ProviderError,
    },
}

/// Reads each resource in `state` (at most `parallelism` reads at once).
pub async fn read_live(
    state: &StateDocument,
    registry: &ProviderRegistry,
    parallelism: usize,
) -> Result<LiveSnapshot, RefreshError> {
    let limit = Arc::new(Semaphore::new(parallelism.max(1)));
    let mut reads = JoinSet::new();
    for record in state.resources.values() {
        let provider = registry.get(&record.resource_type)?;
        let limit = limit.clone();
        let context = CallContext {
            address: record.address.clone(),
            resource_type: record.resource_type.clone(),
        };
        let id = record.id.clone();
        reads.spawn(async move {
            let _permit = limit
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let live = provider.read(&context, &id).await;
            (context.address, live)
        });
    }
    let mut snapshot = LiveSnapshot::new();
    while let Some(joined) = reads.join_next().await {
        let (address, live) = joined.expect("a refresh read does not panic");
        let live = live.map_err(|source| RefreshError::Provider {
            address: address.clone(),
            source,
        })?;
        snapshot.insert(address, live);
    }
    Ok(snapshot)
}
