//! Resolves pending operations left by an interrupted run, before planning: a create is adopted
//! when an object carrying its ownership tags exists, or, for types without tags (routes, rules,
//! associations), an object with its natural key (and dropped otherwise, so the plan creates it
//! once; a create sent less than [`IN_FLIGHT`] ago is looked for again until then, as its
//! request may still be on its way); an update refreshes the record from the live object; a delete removes the record when
//! the object is gone. No provider call that changes anything is made here; a throttled read is retried.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;

use super::Address;
use super::events::{EventSender, ExecutionEvent, emit};
use super::provider::{CallContext, ProviderError, ProviderRegistry};
use super::refresh::retry_throttled;
use super::secrets::is_encrypted;
use super::types::natural_key;
use crate::state::journal::Journal;
use crate::state::{BackendError, PendingKind, ResourceRecord};

/// How long after a create was sent its object may still appear: AWS answers a create within
/// seconds, and lists the new object by its tags moments later.
pub const IN_FLIGHT: Duration = Duration::from_secs(5);

/// Whether a request sent at `sent` may still be in flight (never for a time in the future:
/// another machine's clock).
fn in_flight(sent: chrono::DateTime<Utc>) -> bool {
    (Utc::now() - sent)
        .to_std()
        .is_ok_and(|age| age < IN_FLIGHT)
}

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    MissingProvider(#[from] super::provider::MissingProvider),
    #[error("reading {address} to settle its pending {kind:?}: {source}")]
    Provider {
        address: Address,
        kind: PendingKind,
        source: ProviderError,
    },
    #[error(transparent)]
    State(#[from] BackendError),
}

/// How one pending operation was settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub address: Address,
    pub outcome: String,
}

pub async fn resolve_pending(
    journal: &Journal,
    registry: &ProviderRegistry,
    events: Option<&EventSender>,
) -> Result<Vec<Recovered>, RecoveryError> {
    let document = journal.snapshot().await;
    let mut recovered = Vec::new();
    for entry in document.pending {
        let provider = registry.get(&entry.resource_type)?;
        let call = CallContext {
            address: entry.address.clone(),
            resource_type: entry.resource_type.clone(),
            taken: Vec::new(),
        };
        let failed = |source| RecoveryError::Provider {
            address: entry.address.clone(),
            kind: entry.kind,
            source,
        };
        let outcome = match entry.kind {
            PendingKind::Create => {
                let known: HashSet<String> = {
                    let current = journal.snapshot().await;
                    current
                        .resources
                        .values()
                        .chain(current.deposed.iter())
                        .map(|r| r.id.clone())
                        .collect()
                };
                let find = || async {
                    let found: Vec<_> =
                        retry_throttled(|| provider.find_by_tags(&call, &entry.ownership_tags))
                            .await?
                            .into_iter()
                            .filter(|live| !known.contains(&live.id))
                            .collect();
                    // Routes, rules and associations carry no tags: they are found by what
                    // identifies them (table and destination, group and permission, subnet).
                    if found.is_empty() && natural_key(&entry.resource_type).is_some() {
                        let found =
                            retry_throttled(|| provider.find_by_key(&call, &entry.properties))
                                .await?
                                .into_iter()
                                .filter(|live| !known.contains(&live.id))
                                .collect();
                        return Ok::<_, ProviderError>((found, "its natural key"));
                    }
                    Ok((found, "its ownership tags"))
                };
                let (mut found, mut how) = find().await.map_err(failed)?;
                // A create sent moments ago may still be in flight (the run was killed while
                // the request was on its way) or not yet listed: look again until it is
                // IN_FLIGHT old, so a rerun started at once does not create a second one.
                while found.is_empty() && in_flight(entry.started_at) {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    (found, how) = find().await.map_err(failed)?;
                }
                let adopted = found.first().cloned();
                let outcome = match (&adopted, found.len()) {
                    (None, _) => {
                        "the interrupted create made nothing; it will be created".to_owned()
                    }
                    (Some(live), 1) => format!("adopted {} by {how}", live.id),
                    (Some(live), n) => {
                        format!("adopted {} by {how}; {} more objects match", live.id, n - 1)
                    }
                };
                journal
                    .record(|doc| {
                        doc.pending.retain(|p| p.id != entry.id);
                        if let Some(mut live) = adopted {
                            // Outputs echoing a secret input keep only its ciphertext.
                            for (name, value) in &entry.properties {
                                if is_encrypted(value) && live.outputs.contains_key(name) {
                                    live.outputs.insert(name.clone(), value.clone());
                                }
                            }
                            let record = ResourceRecord {
                                address: entry.address.clone(),
                                resource_type: entry.resource_type.clone(),
                                id: live.id,
                                properties: entry.properties.clone(),
                                outputs: live.outputs,
                                depends_on: entry.depends_on.clone(),
                                updated_at: Utc::now(),
                            };
                            if let Some(old) = doc.resources.insert(entry.address.clone(), record) {
                                doc.deposed.push(old);
                            }
                        }
                    })
                    .await?;
                outcome
            }
            PendingKind::Update => {
                let id = entry.resource_id.clone().unwrap_or_default();
                let live = retry_throttled(|| provider.read(&call, &id))
                    .await
                    .map_err(failed)?;
                let outcome = match &live {
                    Some(_) => "refreshed after an interrupted update".to_owned(),
                    None => "gone after an interrupted update; it will be created".to_owned(),
                };
                journal
                    .record(|doc| {
                        doc.pending.retain(|p| p.id != entry.id);
                        match live {
                            Some(live) => {
                                if let Some(record) = doc.resources.get_mut(&entry.address) {
                                    for (name, value) in record.properties.iter_mut() {
                                        if !is_encrypted(value)
                                            && let Some(current) = live.properties.get(name)
                                        {
                                            *value = current.clone();
                                        }
                                    }
                                    for (name, value) in live.outputs {
                                        let secret =
                                            record.properties.get(&name).is_some_and(is_encrypted);
                                        if !secret {
                                            record.outputs.insert(name, value);
                                        }
                                    }
                                    record.updated_at = Utc::now();
                                }
                            }
                            None => {
                                if doc
                                    .resources
                                    .get(&entry.address)
                                    .is_some_and(|r| r.id == id)
                                {
                                    doc.resources.shift_remove(&entry.address);
                                }
                            }
                        }
                    })
                    .await?;
                outcome
            }
            PendingKind::Delete => {
                let id = entry.resource_id.clone().unwrap_or_default();
                let live = retry_throttled(|| provider.read(&call, &id))
                    .await
                    .map_err(failed)?;
                let gone = live.is_none();
                journal
                    .record(|doc| {
                        doc.pending.retain(|p| p.id != entry.id);
                        if gone {
                            doc.deposed.retain(|r| r.id != id);
                            if doc
                                .resources
                                .get(&entry.address)
                                .is_some_and(|r| r.id == id)
                            {
                                doc.resources.shift_remove(&entry.address);
                            }
                        }
                    })
                    .await?;
                if gone {
                    "the interrupted delete finished".to_owned()
                } else {
                    "the interrupted delete did not happen; it will be retried".to_owned()
                }
            }
        };
        emit(
            events,
            ExecutionEvent::Recovered {
                address: entry.address.clone(),
                outcome: outcome.clone(),
            },
        );
        recovered.push(Recovered {
            address: entry.address,
            outcome,
        });
    }
    Ok(recovered)
}
