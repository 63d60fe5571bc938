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
use tokio::time::Instant;

use super::Queue;
use crate::model::task::{Task, TaskState};

/// Long-polling lease requests waiting for tasks, per pool.
#[derive(Default)]
pub struct Wakeups {
    pools: Mutex<HashMap<String, Arc<PoolWaiters>>>,
}

/// The lease requests of one pool on this server: where they wait, and how far apart their
/// claims go while the pool is drained.
#[derive(Default)]
pub struct PoolWaiters {
    pub notify: Notify,
    /// While the pool is drained (the last claim found fewer tasks than it asked for): when the
    /// next claim may run.
    next_claim: Mutex<Option<Instant>>,
}

impl PoolWaiters {
    /// When a claim may run now: at once, unless the pool was drained, then `spacing` after the
    /// previous claim (the slot is taken: concurrent requests get successive slots).
    pub fn claim_slot(&self, spacing: Duration) -> Instant {
        self.claim_slot_at(Instant::now(), spacing)
    }

    fn claim_slot_at(&self, now: Instant, spacing: Duration) -> Instant {
        let mut next = self.next_claim.lock().unwrap_or_else(|e| e.into_inner());
        match *next {
            Some(slot) if slot > now => {
                *next = Some(slot + spacing);
                slot
            }
            Some(_) => {
                *next = Some(now + spacing);
                now
            }
            None => now,
        }
    }

    /// After a claim: a full one lifts the spacing (there is a backlog), a partial one starts it.
    pub fn claimed(&self, full: bool, spacing: Duration) {
        self.claimed_at(Instant::now(), full, spacing);
    }

    fn claimed_at(&self, now: Instant, full: bool, spacing: Duration) {
        let mut next = self.next_claim.lock().unwrap_or_else(|e| e.into_inner());
        if full || spacing.is_zero() {
            *next = None;
        } else {
            let earliest = now + spacing;
            *next = Some(next.map_or(earliest, |slot| slot.max(earliest)));
        }
    }
}

impl Wakeups {
    /// The requests of `pool`.
    pub fn pool(&self, pool: &str) -> Arc<PoolWaiters> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        // Every lease request asks: no new key unless the pool is new.
        if let Some(waiters) = pools.get(pool) {
            return waiters.clone();
        }
        pools.entry(pool.to_owned()).or_default().clone()
    }

    /// Wakes one request waiting for `pool` (or the next one to wait). A pool nobody ever waited
    /// for needs nothing: a request claims before it waits.
    pub fn wake(&self, pool: &str) {
        let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(waiters) = pools.get(pool) {
            waiters.notify.notify_one();
        }
    }

    /// Wakes one waiting request of every pool (when which pools got tasks is not known).
    pub fn wake_every_pool(&self) {
        let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        for waiters in pools.values() {
            waiters.notify.notify_one();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_go_apart_only_while_the_pool_is_drained() {
        let waiters = PoolWaiters::default();
        let spacing = Duration::from_millis(10);
        let start = Instant::now();
        // Nothing claimed yet: at once.
        assert_eq!(waiters.claim_slot_at(start, spacing), start);
        // A partial claim: the next claims go 10 ms apart, each request its own slot.
        waiters.claimed_at(start, false, spacing);
        assert_eq!(waiters.claim_slot_at(start, spacing), start + spacing);
        assert_eq!(waiters.claim_slot_at(start, spacing), start + spacing * 2);
        // A full claim (a backlog): at once again.
        waiters.claimed_at(start, true, spacing);
        assert_eq!(waiters.claim_slot_at(start, spacing), start);
        // Long after a partial claim (an idle pool): at once.
        waiters.claimed_at(start, false, spacing);
        let later = start + Duration::from_secs(1);
        assert_eq!(waiters.claim_slot_at(later, spacing), later);
        // Off.
        let off = PoolWaiters::default();
        off.claimed_at(start, false, Duration::ZERO);
        assert_eq!(off.claim_slot_at(start, Duration::ZERO), start);
    }

    #[tokio::test]
    async fn a_wake_up_reaches_one_request_of_its_pool_only() {
        let wakeups = Wakeups::default();
        let a = wakeups.pool("a");
        let b = wakeups.pool("b");
        let (first, second, other) = (
            a.notify.notified(),
            a.notify.notified(),
            b.notify.notified(),
        );
        tokio::pin!(first, second, other);
        first.as_mut().enable();
        second.as_mut().enable();
        other.as_mut().enable();
        wakeups.wake("a");
        wakeups.wake("nobody-waits-here");
        let ready = |future: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>| {
            let waker = futures_util::task::noop_waker();
            let mut context = std::task::Context::from_waker(&waker);
            future.poll(&mut context).is_ready()
        };
        use std::future::Future;
        assert!(ready(first.as_mut()));
        assert!(!ready(second.as_mut()));
        assert!(!ready(other.as_mut()));
        wakeups.wake_every_pool();
        assert!(ready(second.as_mut()));
        assert!(ready(other.as_mut()));
    }
}
