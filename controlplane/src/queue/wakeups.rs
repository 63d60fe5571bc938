//! Wake-ups: the server that queued tasks wakes its own long-polling lease requests at once and
//! the other servers' through Redis pub/sub; each server listens for the others' announcements.
//! Also the `task-events` stream.
//!
//! Waiting requests are woken one at a time, per pool ([`Wakeups`]): a request that was woken
//! and leased as many tasks as it asked for wakes the next one (there may be more), so a
//! submission wakes as many workers as it has work for, not every idle worker of every pool (a
//! thundering herd: with 4 idle workers each single submission cost 4 claims).
//!
//! Wake-ups travel through Redis rather than Postgres NOTIFY: a notifying transaction holds a
//! database-wide lock through its commit, which serialized every task submission (768 commits/s
//! with NOTIFY against 8,634 without, 32 clients, on the 2-core test machine).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Notify;

use super::Queue;
use crate::model::task::{Task, TaskState};

/// Long-polling lease requests waiting for tasks, per pool.
#[derive(Default)]
pub struct Wakeups {
    pools: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Wakeups {
    /// Where requests for `pool` wait.
    pub fn pool(&self, pool: &str) -> Arc<Notify> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.entry(pool.to_owned()).or_default().clone()
    }

    /// Wakes one request waiting for `pool` (or the next one to wait). A pool nobody ever waited
    /// for needs nothing: a request claims before it waits.
    pub fn wake(&self, pool: &str) {
        let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(notify) = pools.get(pool) {
            notify.notify_one();
        }
    }

    /// Wakes one waiting request of every pool (when which pools got tasks is not known).
    pub fn wake_every_pool(&self) {
        let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        for notify in pools.values() {
            notify.notify_one();
        }
    }
}

/// The pub/sub channel (under the Redis key prefix) servers announce queued tasks on; the
/// payload is the announcing server's id, then a space and the pool when the announcement is
/// about one pool (without one: every pool; servers of earlier versions send only their id and
/// wake every request on any payload that is not their own id).
pub const QUEUED_CHANNEL: &str = "task-queued";
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

impl Queue {
    /// Tasks of pools not known here became claimable: wakes a waiting lease request of every
    /// pool on this server at once and on the other servers through Redis pub/sub. Losing the
    /// Redis message only delays the others to their next poll (`scheduler.poll_interval_ms`).
    pub async fn announce_queued(&self) {
        let mut pipeline = redis::pipe();
        self.add_queued_announcement(&mut pipeline, None);
        let mut redis = self.redis.clone();
        let published: redis::RedisResult<()> = pipeline.query_async(&mut redis).await;
        if let Err(error) = published {
            tracing::warn!(%error, "cannot announce queued tasks to the other servers");
        }
    }

    /// [`Self::announce_queued`] inside a caller's pipeline (one round trip with its commands),
    /// for `pool` (`None`: every pool): wakes a waiting lease request here now and adds the
    /// PUBLISH for the others.
    pub fn add_queued_announcement(&self, pipeline: &mut redis::Pipeline, pool: Option<&str>) {
        let payload = match pool {
            Some(pool) => {
                self.wakeups.wake(pool);
                format!("{} {pool}", self.server_id)
            }
            None => {
                self.wakeups.wake_every_pool();
                self.server_id.to_string()
            }
        };
        pipeline
            .cmd("PUBLISH")
            .arg(self.redis_key(QUEUED_CHANNEL))
            .arg(payload)
            .ignore();
    }

    /// Adds a `created` event per task to the `task-events` stream and announces them, in one
    /// round trip.
    pub async fn publish_created(&self, tasks: &[&Task]) {
        if tasks.is_empty() {
            return;
        }
        let mut redis = self.redis.clone();
        let mut pipeline = redis::pipe();
        for task in tasks {
            pipeline
                .cmd("XADD")
                .arg(self.redis_key("task-events"))
                .arg("MAXLEN")
                .arg("~")
                .arg(100_000)
                .arg("*")
                .arg("event")
                .arg("created")
                .arg("task_id")
                .arg(task.id.to_string())
                .arg("pool")
                .arg(&task.pool)
                .ignore();
        }
        let pools: BTreeSet<&str> = tasks.iter().map(|task| task.pool.as_str()).collect();
        for pool in pools {
            self.add_queued_announcement(&mut pipeline, Some(pool));
        }
        let result: redis::RedisResult<()> = pipeline.query_async(&mut redis).await;
        if let Err(error) = result {
            // The database is the source of truth; the stream and the announcement only wake
            // schedulers early (the others poll).
            tracing::warn!(%error, tasks = tasks.len(), "cannot publish task events to Redis");
        }
    }

    /// Adds a task event to the `task-events` stream, and announces the task when it is queued.
    pub async fn publish_event(&self, event: &str, task: &Task) {
        let mut redis = self.redis.clone();
        let mut pipeline = redis::pipe();
        pipeline
            .cmd("XADD")
            .arg(self.redis_key("task-events"))
            .arg("MAXLEN")
            .arg("~")
            .arg(100_000)
            .arg("*")
            .arg("event")
            .arg(event)
            .arg("task_id")
            .arg(task.id.to_string())
            .arg("pool")
            .arg(&task.pool)
            .ignore();
        if task.state == TaskState::Queued {
            self.add_queued_announcement(&mut pipeline, Some(&task.pool));
        }
        let result: redis::RedisResult<()> = pipeline.query_async(&mut redis).await;
        if let Err(error) = result {
            // The database is the source of truth; the stream and the announcement only wake
            // schedulers early (the others poll).
            tracing::warn!(%error, task_id = %task.id, "cannot publish the task event to Redis");
        }
    }
}

/// Wakes this server's waiting lease requests when another server announces queued tasks. While
/// Redis is unreachable, waiting requests still poll every `scheduler.poll_interval_ms`.
pub(super) async fn listen(queue: Queue) {
    let channel = queue.redis_key(QUEUED_CHANNEL);
    loop {
        match subscribe(&queue, &channel).await {
            Ok(pubsub) => {
                let mut messages = pubsub.into_on_message();
                while let Some(message) = messages.next().await {
                    let payload: String = message.get_payload().unwrap_or_default();
                    let (from, pool) = match payload.split_once(' ') {
                        Some((from, pool)) => (from, Some(pool)),
                        None => (payload.as_str(), None),
                    };
                    if *from != *queue.server_id {
                        match pool {
                            Some(pool) => queue.wakeups.wake(pool),
                            None => queue.wakeups.wake_every_pool(),
                        }
                    }
                }
                tracing::warn!("task announcements interrupted; lease requests poll meanwhile");
            }
            Err(error) => tracing::warn!(%error, "cannot subscribe to task announcements"),
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

async fn subscribe(queue: &Queue, channel: &str) -> redis::RedisResult<redis::aio::PubSub> {
    let client = redis::Client::open(queue.config.redis_url.expose())?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}
