//! Storing submissions: one statement inserts every task of a batch (or of a group of single
//! submissions, `super::group_commit`), in one transaction with their idempotency records.
//!
//! An idempotency key belongs to a team and is bound to the submission's fingerprint: a key
//! seen before (in an earlier request, or earlier in the same batch) with the same fingerprint
//! gives the task created first (`Replayed`) and creates nothing; with another fingerprint it is
//! `KeyReused`. Two requests racing with a new key: the second one's record insert finds the
//! first one's key, and its transaction is rolled back and run again (bounded), when it finds
//! the key stored.

use std::collections::HashMap;

use uuid::Uuid;

use super::Queue;
use crate::model::UnknownState;
use crate::model::submission::Submission;
use crate::model::task::Task;
use crate::store;
use crate::store::idempotency::{NewRecord, StoredResponse};

/// How often a transaction that lost a race for an idempotency key is run again.
const KEY_RACE_ATTEMPTS: usize = 5;

/// What became of one submission.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A new task.
    Created(Box<Task>),
    /// The key was used before with the same task: the response stored then.
    Replayed {
        status: u16,
        body: serde_json::Value,
    },
    /// The key was used before with another task: nothing was stored for this submission.
    KeyReused,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    UnknownState(#[from] UnknownState),
    #[error("cannot encode a task: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("an idempotency key stayed contended after {KEY_RACE_ATTEMPTS} attempts")]
    KeyContended,
    /// With [`OnKeyReused::StoreNothing`]: the positions of the submissions whose key was used
    /// before with another task. Nothing was stored.
    #[error("idempotency keys reused with other tasks")]
    KeysReused(Vec<usize>),
    #[error("the submission committer stopped (the server is shutting down)")]
    CommitterStopped,
}

/// What to do when a submission reuses a key with another task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnKeyReused {
    /// Store nothing at all (a batch is all or nothing).
    StoreNothing,
    /// Store the other submissions (independent requests committed together).
    StoreTheOthers,
}

/// The plan for one submission, before the insert.
enum Plan {
    Create,
    Replay(StoredResponse),
    /// Same key and fingerprint as an earlier submission of this call.
    SameAs(usize),
    KeyReused,
}

impl Queue {
    /// Stores submissions (each with its team) in one transaction: the outcomes in order.
    /// Announces the created tasks after the commit.
    pub async fn submit(
        &self,
        submissions: &[(Uuid, &Submission)],
        on_key_reused: OnKeyReused,
    ) -> Result<Vec<Outcome>, SubmitError> {
        for _ in 0..KEY_RACE_ATTEMPTS {
            if let Some(outcomes) = self.try_submit(submissions, on_key_reused).await? {
                let created: Vec<&Task> = outcomes
                    .iter()
                    .filter_map(|outcome| match outcome {
                        Outcome::Created(task) => Some(task.as_ref()),
                        _ => None,
                    })
                    .collect();
                self.publish_created(&created).await;
                return Ok(outcomes);
            }
        }
        Err(SubmitError::KeyContended)
    }

    /// One attempt; `None` when a key was recorded concurrently (rolled back: run it again).
    async fn try_submit(
        &self,
        submissions: &[(Uuid, &Submission)],
        on_key_reused: OnKeyReused,
    ) -> Result<Option<Vec<Outcome>>, SubmitError> {
        if submissions
            .iter()
            .all(|(_, submission)| submission.idempotency_key.is_none())
        {
            // No key to look up or record: one statement, committed on its own (a round trip
            // instead of three).
            let tasks: Vec<(Uuid, &crate::model::task::NewTask)> = submissions
                .iter()
                .map(|(team, submission)| (*team, &submission.task))
                .collect();
            let created = store::tasks::insert_many(&self.db, &tasks).await?;
            return Ok(Some(
                created
                    .into_iter()
                    .map(|task| Outcome::Created(Box::new(task)))
                    .collect(),
            ));
        }
        let mut transaction = self.db.begin().await?;
        let stored = stored_responses(&mut transaction, submissions).await?;
        let mut first_with_key: HashMap<(Uuid, &str), usize> = HashMap::new();
        let plans: Vec<Plan> = submissions
            .iter()
            .enumerate()
            .map(|(index, (team, submission))| {
                let Some(key) = submission.idempotency_key.as_deref() else {
                    return Plan::Create;
                };
                if let Some(response) = stored.get(&(*team, key)) {
                    return if submission
                        .fingerprint
                        .is_some_and(|fingerprint| response.request_hash == fingerprint)
                    {
                        Plan::Replay(response.clone())
                    } else {
                        Plan::KeyReused
                    };
                }
                match first_with_key.get(&(*team, key)) {
                    Some(&first) if submissions[first].1.fingerprint == submission.fingerprint => {
                        Plan::SameAs(first)
                    }
                    Some(_) => Plan::KeyReused,
                    None => {
                        first_with_key.insert((*team, key), index);
                        Plan::Create
                    }
                }
            })
            .collect();
        let reused: Vec<usize> = plans
            .iter()
            .enumerate()
            .filter(|(_, plan)| matches!(plan, Plan::KeyReused))
            .map(|(index, _)| index)
            .collect();
        if on_key_reused == OnKeyReused::StoreNothing && !reused.is_empty() {
            transaction.rollback().await?;
            return Err(SubmitError::KeysReused(reused));
        }
        let to_create: Vec<(Uuid, &crate::model::task::NewTask)> = submissions
            .iter()
            .zip(&plans)
            .filter(|(_, plan)| matches!(plan, Plan::Create))
            .map(|((team, submission), _)| (*team, &submission.task))
            .collect();
        let rows = if to_create.is_empty() {
            Vec::new()
        } else {
            store::tasks::insert_many(&mut *transaction, &to_create).await?
        };
        let mut created = rows.into_iter();
        let mut outcomes: Vec<Outcome> = Vec::with_capacity(submissions.len());
        let mut bodies: Vec<(usize, serde_json::Value)> = Vec::new();
        for (index, plan) in plans.into_iter().enumerate() {
            outcomes.push(match plan {
                Plan::Create => {
                    let task = created.next().ok_or(sqlx::Error::RowNotFound)?;
                    if submissions[index].1.idempotency_key.is_some() {
                        bodies.push((index, serde_json::to_value(&task)?));
                    }
                    Outcome::Created(Box::new(task))
                }
                Plan::Replay(response) => Outcome::Replayed {
                    status: u16::try_from(response.response_status).unwrap_or(200),
                    body: response.response_body.0,
                },
                Plan::SameAs(first) => match &outcomes[first] {
                    Outcome::Created(task) => Outcome::Replayed {
                        status: 201,
                        body: serde_json::to_value(task)?,
                    },
                    other => other.clone(),
                },
                Plan::KeyReused => Outcome::KeyReused,
            });
        }
        if !bodies.is_empty() {
            let records: Vec<NewRecord<'_>> = bodies
                .iter()
                .map(|(index, body)| {
                    let (team_id, submission) = submissions[*index];
                    NewRecord {
                        team_id,
                        key: submission.idempotency_key.as_deref().unwrap_or_default(),
                        request_hash: submission.fingerprint.as_ref().map_or(&[], |f| f),
                        status: 201,
                        body,
                    }
                })
                .collect();
            let recorded = store::idempotency::record_many(&mut *transaction, &records).await?;
            if recorded < records.len() as u64 {
                // Another request recorded one of these keys meanwhile.
                transaction.rollback().await?;
                return Ok(None);
            }
        }
        transaction.commit().await?;
        Ok(Some(outcomes))
    }
}

/// The responses stored under the keys of `submissions`, by team and key.
async fn stored_responses<'a>(
    connection: &mut sqlx::PgConnection,
    submissions: &'a [(Uuid, &Submission)],
) -> Result<HashMap<(Uuid, &'a str), StoredResponse>, sqlx::Error> {
    let mut keys_by_team: HashMap<Uuid, Vec<&str>> = HashMap::new();
    for (team, submission) in submissions {
        if let Some(key) = submission.idempotency_key.as_deref() {
            keys_by_team.entry(*team).or_default().push(key);
        }
    }
    let mut stored = HashMap::new();
    for (team, keys) in keys_by_team {
        for (key, response) in store::idempotency::find_many(&mut *connection, team, &keys).await? {
            // The key as borrowed from the submissions, to key the map without copies.
            if let Some(borrowed) = keys.iter().find(|candidate| **candidate == key) {
                stored.insert((team, *borrowed), response);
            }
        }
    }
    Ok(stored)
}
