//! Group commit of single submissions (`POST /v1/tasks`): concurrent requests wait in a channel
//! and are stored together by [`Queue::submit`] (one `INSERT`, one transaction, one commit),
//! each answered only after that commit.
//!
//! There is no timer: a committer takes whatever is waiting (up to `submit_group_max`) as soon
//! as one of its `submit_group_flushes` slots is free, so a lone request is stored at once and,
//! under load, requests that arrive while groups are being stored form the next group. One
//! commit per request no longer bounds the throughput; a group's latency is one insert and one
//! commit.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

use super::Queue;
use super::submit::{OnKeyReused, Outcome, SubmitError};
use crate::model::submission::Submission;

/// Requests waiting for a committer; senders wait (backpressure) when it is full.
const CHANNEL_CAPACITY: usize = 10_000;

struct Pending {
    team_id: Uuid,
    submission: Submission,
    reply: oneshot::Sender<Result<Outcome, SubmitError>>,
}

/// The entrance of the committer, started by the first submission.
#[derive(Default)]
pub struct GroupCommit {
    sender: std::sync::OnceLock<mpsc::Sender<Pending>>,
}

impl Queue {
    /// Stores one submission together with the others waiting (see the module documentation).
    /// Returns after the commit.
    pub async fn submit_one(
        &self,
        team_id: Uuid,
        submission: Submission,
    ) -> Result<Outcome, SubmitError> {
        let sender = self
            .group_commit
            .sender
            .get_or_init(|| self.start_committer());
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            team_id,
            submission,
            reply,
        };
        if let Err(mpsc::error::SendError(pending)) = sender.send(pending).await {
            // The committer is gone (its runtime is shutting down): store this one alone.
            return self
                .submit_alone(pending.team_id, &pending.submission)
                .await;
        }
        answer.await.unwrap_or(Err(SubmitError::CommitterStopped))
    }

    fn start_committer(&self) -> mpsc::Sender<Pending> {
        let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        // The committer's own handle has no entrance of its own: when every server handle is
        // dropped, the channel closes and the committer ends.
        let committer = Queue {
            group_commit: Arc::default(),
            ..self.clone()
        };
        tokio::spawn(commit_groups(committer, receiver));
        sender
    }

    async fn submit_alone(
        &self,
        team_id: Uuid,
        submission: &Submission,
    ) -> Result<Outcome, SubmitError> {
        let mut outcomes = self
            .submit(&[(team_id, submission)], OnKeyReused::StoreTheOthers)
            .await?;
        outcomes.pop().ok_or(SubmitError::CommitterStopped)
    }
}

/// Takes groups off the channel until it closes.
async fn commit_groups(queue: Queue, mut receiver: mpsc::Receiver<Pending>) {
    let max = queue.config.scheduler.submit_group_max.max(1);
    let slots = Arc::new(Semaphore::new(
        queue.config.scheduler.submit_group_flushes.max(1),
    ));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = receiver.recv().await else {
            return;
        };
        let mut group = vec![first];
        while group.len() < max {
            match receiver.try_recv() {
                Ok(pending) => group.push(pending),
                Err(_) => break,
            }
        }
        let queue = queue.clone();
        tokio::spawn(async move {
            store_group(&queue, group).await;
            drop(slot);
        });
    }
}

/// Stores a group and answers each request. When the group as a whole fails, each submission
/// is tried alone, so that one bad row cannot fail the others.
async fn store_group(queue: &Queue, group: Vec<Pending>) {
    crate::metrics::record_submit_group(group.len());
    let items: Vec<(Uuid, &Submission)> = group
        .iter()
        .map(|pending| (pending.team_id, &pending.submission))
        .collect();
    match queue.submit(&items, OnKeyReused::StoreTheOthers).await {
        Ok(outcomes) => {
            for (pending, outcome) in group.into_iter().zip(outcomes) {
                let _ = pending.reply.send(Ok(outcome));
            }
        }
        Err(error) if group.len() == 1 => {
            if let Some(pending) = group.into_iter().next() {
                let _ = pending.reply.send(Err(error));
            }
        }
        Err(error) => {
            tracing::warn!(%error, size = group.len(), "a submission group failed; storing each alone");
            for pending in group {
                let outcome = queue
                    .submit_alone(pending.team_id, &pending.submission)
                    .await;
                let _ = pending.reply.send(outcome);
            }
        }
    }
}
