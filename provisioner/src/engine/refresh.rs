//! Refresh: reads every recorded resource from its provider, concurrently, for the planner's
//! `live` input, and lists the objects carrying a deployment's ownership tags for `drift`.
//! Read-only. A call the provider throttles is retried with backoff a few times.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use indexmap::IndexMap;

use super::Address;
use super::planner::LiveSnapshot;
use super::provider::{CallContext, MissingProvider, OwnedObject, ProviderError, ProviderRegistry};
use crate::state::StateDocument;

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error(transparent)]
    MissingProvider(#[from] MissingProvider),
    #[error("listing the objects that carry the ownership tags: {0}")]
    Listing(ProviderError),
    #[error("refreshing {address}: {source}")]
    Provider {
        address: Address,
        source: ProviderError,
    },
}

/// How often a read-only call the provider throttled is made in all.
pub const THROTTLED_ATTEMPTS: u32 = 6;

/// Makes `call` again while the provider answers "throttled" (after its `retry_after`, else with
/// exponential backoff from 200 ms up to 5 s), at most [`THROTTLED_ATTEMPTS`] times in all.
async fn retry_throttled<T, F, Fut>(mut call: F) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match call().await {
            Err(ProviderError::Throttled { retry_after }) if attempt < THROTTLED_ATTEMPTS => {
                tokio::time::sleep(retry_after.unwrap_or(delay)).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
            other => return other,
        }
    }
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
            let live = retry_throttled(|| provider.read(&context, &id)).await;
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

/// Every object carrying `ownership` (the `stacksmith:stack` and `stacksmith:instance` tags), and
/// the members of those objects, from each registered provider (concurrently).
pub async fn list_owned(
    registry: &ProviderRegistry,
    ownership: &IndexMap<String, String>,
) -> Result<Vec<OwnedObject>, RefreshError> {
    let mut listings = JoinSet::new();
    for provider in registry.distinct_providers() {
        let ownership = ownership.clone();
        listings.spawn(async move { retry_throttled(|| provider.list_owned(&ownership)).await });
    }
    let mut owned = Vec::new();
    while let Some(joined) = listings.join_next().await {
        owned.extend(
            joined
                .expect("a listing does not panic")
                .map_err(RefreshError::Listing)?,
        );
    }
    Ok(owned)
}

/// The members of every recorded object (a security group's rules, a route table's routes; see
/// [`super::provider::Provider::list_members`]), at most `parallelism` calls at once, for `up` to
/// remove the ones state does not record.
pub async fn read_members(
    state: &StateDocument,
    registry: &ProviderRegistry,
    parallelism: usize,
) -> Result<Vec<OwnedObject>, RefreshError> {
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
            let members = retry_throttled(|| provider.list_members(&context, &id)).await;
            (context.address, members)
        });
    }
    let mut members = Vec::new();
    while let Some(joined) = reads.join_next().await {
        let (address, found) = joined.expect("a member listing does not panic");
        members.extend(found.map_err(|source| RefreshError::Provider { address, source })?);
    }
    Ok(members)
}
