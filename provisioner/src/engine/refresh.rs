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
use super::provider::{
    CallContext, MissingProvider, OwnedObject, Provider, ProviderError, ProviderRegistry,
};
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
pub(crate) async fn retry_throttled<T, F, Fut>(mut call: F) -> Result<T, ProviderError>
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

/// Makes one read-only `call` per resource in `state` (at most `parallelism` at once, each
/// retried while throttled) and returns the answers by address.
async fn per_record<T, F, Fut>(
    state: &StateDocument,
    registry: &ProviderRegistry,
    parallelism: usize,
    call: F,
) -> Result<Vec<(Address, T)>, RefreshError>
where
    T: Send + 'static,
    F: Fn(Arc<dyn Provider>, CallContext, String) -> Fut,
    Fut: Future<Output = Result<T, ProviderError>> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(parallelism.max(1)));
    let mut calls = JoinSet::new();
    for record in state.resources.values() {
        let provider = registry.get(&record.resource_type)?;
        let context = CallContext {
            address: record.address.clone(),
            resource_type: record.resource_type.clone(),
            taken: Vec::new(),
        };
        let address = record.address.clone();
        let answer = call(provider, context, record.id.clone());
        let limit = limit.clone();
        calls.spawn(async move {
            let _permit = limit
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            (address, answer.await)
        });
    }
    let mut answers = Vec::with_capacity(state.resources.len());
    while let Some(joined) = calls.join_next().await {
        let (address, answer) = joined.expect("a read-only provider call does not panic");
        match answer {
            Ok(value) => answers.push((address, value)),
            Err(source) => return Err(RefreshError::Provider { address, source }),
        }
    }
    Ok(answers)
}

/// Reads each resource in `state` (at most `parallelism` reads at once).
pub async fn read_live(
    state: &StateDocument,
    registry: &ProviderRegistry,
    parallelism: usize,
) -> Result<LiveSnapshot, RefreshError> {
    let reads =
        per_record(
            state,
            registry,
            parallelism,
            |provider, context, id| async move {
                retry_throttled(|| provider.read(&context, &id)).await
            },
        )
        .await?;
    let mut snapshot = LiveSnapshot::new();
    for (address, live) in reads {
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
    let listings = per_record(
        state,
        registry,
        parallelism,
        |provider, context, id| async move {
            retry_throttled(|| provider.list_members(&context, &id)).await
        },
    )
    .await?;
    Ok(listings
        .into_iter()
        .flat_map(|(_, members)| members)
        .collect())
}
