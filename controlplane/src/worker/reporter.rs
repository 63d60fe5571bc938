//! The worker's reporter: one loop sends the reports and heartbeats of every lease the worker
//! holds, batched (`POST /v1/leases/reports`).
//!
//! A task that ends hands its report over and frees its slot at once; the reporter sends it
//! with whatever else is waiting (reports that arrive while a batch is in flight form the
//! next one). Every third of the lease, the leases still running are heartbeated in the same
//! request. A batch that cannot be delivered (the control plane restarting, the network) is
//! retried with backoff for as long as its leases can still be extended: until the deadline the
//! last successful extension gave them (estimated on this side, from when the request was
//! sent), a few seconds more, and not beyond the task's timeout plus the server's grace. A
//! lease the server answers `gone` or `not_found` for is lost: the task is told to stop without
//! a report.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use uuid::Uuid;

use super::api::{Api, Reply};
use crate::model::lease::{
    Lease, LeaseReportItem, LeaseReportsResponse, MAX_REPORTS, ReportKind, ReportOutcome,
};

/// Added by the server to a task's timeout for the latest deadline of its leases
/// (`store::leases::TIMEOUT_GRACE_SECONDS`, which the worker cannot import).
const SERVER_GRACE: Duration = Duration::from_secs(30);
/// How long after the estimated deadline a report is still tried (clock and latency slack).
const DEADLINE_SLACK: Duration = Duration::from_secs(5);
/// Most bytes of reports in one request (outputs are up to 64 KiB each), well below the server's
/// batch body limit (8 MiB by default).
const MAX_BATCH_BYTES: usize = 1024 * 1024;
const FIRST_RETRY: Duration = Duration::from_millis(200);
const LAST_RETRY: Duration = Duration::from_secs(2);

struct Held {
    fencing_token: i64,
    /// The server ends the lease then unless it is extended (estimated: from when the request
    /// that set it was sent).
    deadline: Instant,
    /// No extension goes beyond this (the task's timeout plus the server's grace).
    cap: Instant,
    /// Told `true` when the lease is lost.
    lost: watch::Sender<bool>,
    /// The final report, once the task ended.
    report: Option<LeaseReportItem>,
}

#[derive(Default)]
struct Shared {
    held: Mutex<HashMap<Uuid, Held>>,
    wake: Notify,
}

/// The handle tasks and the lease loop use; cheap to clone.
#[derive(Clone)]
pub struct Reporter {
    shared: Arc<Shared>,
    lease_seconds: u32,
}

impl Reporter {
    pub fn new(lease_seconds: u32) -> Self {
        Self {
            shared: Arc::default(),
            lease_seconds,
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Held>> {
        self.shared
            .held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts heartbeating a lease obtained by a request sent at `requested`. The receiver is
    /// told `true` when the lease is lost.
    pub fn hold(&self, lease: &Lease, requested: Instant) -> watch::Receiver<bool> {
        let (lost, receiver) = watch::channel(false);
        let timeout = Duration::from_secs(u64::try_from(lease.timeout_seconds).unwrap_or(0));
        let cap = requested + timeout + SERVER_GRACE;
        self.held().insert(
            lease.lease_id,
            Held {
                fencing_token: lease.fencing_token,
                deadline: (requested + Duration::from_secs(u64::from(self.lease_seconds))).min(cap),
                cap,
                lost,
                report: None,
            },
        );
        receiver
    }

    /// Hands over a task's final report (`complete`, `fail` or `release`); sent at once with
    /// whatever else waits.
    pub fn finish(&self, lease_id: Uuid, mut report: LeaseReportItem) {
        if let Some(held) = self.held().get_mut(&lease_id) {
            report.lease_id = lease_id;
            report.fencing_token = held.fencing_token;
            held.report = Some(report);
        }
        self.shared.wake.notify_one();
    }

    /// Stops tracking a lease without a report (it was lost).
    pub fn forget(&self, lease_id: Uuid) {
        self.held().remove(&lease_id);
    }

    /// Leases still held (running, or with a report not yet delivered).
    pub fn pending(&self) -> usize {
        self.held().len()
    }

    /// Waits until every report was delivered or given up, at most `limit`.
    pub async fn flush(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        // Bounded by `limit`.
        while self.pending() > 0 && Instant::now() < deadline {
            self.shared.wake.notify_one();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The batches: runs until aborted.
    pub async fn run(self, api: Arc<Api>) {
        let period = Duration::from_millis(u64::from(self.lease_seconds) * 1000 / 3)
            .max(Duration::from_millis(200));
        let mut next_heartbeat = Instant::now() + period;
        let mut retry: Option<(Instant, Duration)> = None;
        loop {
            match retry {
                Some((at, _)) => tokio::time::sleep_until(at).await,
                None => {
                    tokio::select! {
                        () = self.shared.wake.notified() => {}
                        () = tokio::time::sleep_until(next_heartbeat) => {}
                    }
                }
            }
            let now = Instant::now();
            let heartbeat_due = now >= next_heartbeat;
            let batch = self.batch(now, heartbeat_due);
            if batch.is_empty() {
                if heartbeat_due {
                    next_heartbeat = now + period;
                }
                retry = None;
                continue;
            }
            let sent = Instant::now();
            let body = serde_json::json!({ "reports": batch });
            match api
                .post::<_, LeaseReportsResponse>("/v1/leases/reports", &body)
                .await
            {
                Ok(Reply::Ok(answer)) if answer.results.len() == batch.len() => {
                    self.settle(&batch, &answer, sent);
                    if heartbeat_due {
                        next_heartbeat = now + period;
                    }
                    retry = None;
                    if self.held().values().any(|lease| lease.report.is_some()) {
                        // More than one batch was waiting: send the rest now.
                        self.shared.wake.notify_one();
                    }
                }
                Ok(Reply::Ok(answer)) => {
                    tracing::error!(
                        sent = batch.len(),
                        answered = answer.results.len(),
                        "the control plane answered a report batch item for item wrongly"
                    );
                    retry = Some(next_retry(retry));
                }
                Ok(Reply::Gone(detail)) => {
                    tracing::error!(detail, "the control plane refused a report batch");
                    retry = Some(next_retry(retry));
                }
                Err(error) => {
                    let (at, delay) = next_retry(retry);
                    tracing::warn!(
                        %error,
                        reports = batch.iter().filter(|r| r.kind != ReportKind::Heartbeat).count(),
                        retry_ms = delay.as_millis() as u64,
                        "cannot deliver reports; retrying while their leases last"
                    );
                    retry = Some((at, delay));
                }
            }
        }
    }

    /// The next batch: every final report, then (when due) a heartbeat for every running lease,
    /// at most `MAX_REPORTS`. Reports whose leases can no longer be extended are given up.
    fn batch(&self, now: Instant, heartbeat_due: bool) -> Vec<LeaseReportItem> {
        let mut held = self.held();
        held.retain(|lease_id, lease| {
            let expired = now >= (lease.deadline + DEADLINE_SLACK).min(lease.cap + DEADLINE_SLACK);
            if expired && lease.report.is_some() {
                tracing::error!(
                    %lease_id,
                    "giving up a report: its lease expired before it could be delivered"
                );
            }
            if expired && lease.report.is_none() {
                let _ = lease.lost.send(true);
            }
            !expired
        });
        let mut bytes = 0;
        let mut batch: Vec<LeaseReportItem> = held
            .values()
            .filter_map(|lease| lease.report.clone())
            .take_while(|report| {
                bytes += serde_json::to_vec(report).map_or(0, |encoded| encoded.len());
                bytes <= MAX_BATCH_BYTES
            })
            .take(MAX_REPORTS)
            .collect();
        if batch.is_empty()
            && let Some(report) = held.values().find_map(|lease| lease.report.clone())
        {
            // One report larger than the bound goes alone.
            batch.push(report);
        }
        if heartbeat_due {
            let room = MAX_REPORTS - batch.len();
            batch.extend(
                held.iter()
                    .filter(|(_, lease)| lease.report.is_none())
                    .take(room)
                    .map(|(lease_id, lease)| LeaseReportItem {
                        lease_id: *lease_id,
                        fencing_token: lease.fencing_token,
                        kind: ReportKind::Heartbeat,
                        lease_seconds: Some(self.lease_seconds),
                        result: None,
                        output: None,
                        exit_code: None,
                        error: None,
                    }),
            );
        }
        batch
    }

    /// Applies the answer to a batch sent at `sent`.
    fn settle(&self, batch: &[LeaseReportItem], answer: &LeaseReportsResponse, sent: Instant) {
        let mut held = self.held();
        for (item, result) in batch.iter().zip(&answer.results) {
            let detail = result.detail.as_deref().unwrap_or_default();
            match (item.kind, result.outcome) {
                (ReportKind::Heartbeat, ReportOutcome::Ok) => {
                    if let Some(lease) = held.get_mut(&item.lease_id) {
                        lease.deadline = (sent
                            + Duration::from_secs(u64::from(self.lease_seconds)))
                        .min(lease.cap);
                    }
                }
                (ReportKind::Heartbeat, outcome) => {
                    if let Some(lease) = held.remove(&item.lease_id) {
                        tracing::warn!(lease_id = %item.lease_id, ?outcome, detail, "lease lost: stopping the task");
                        let _ = lease.lost.send(true);
                    }
                }
                (kind, ReportOutcome::Ok) => {
                    held.remove(&item.lease_id);
                    tracing::debug!(lease_id = %item.lease_id, ?kind, "reported");
                }
                (kind, outcome) => {
                    held.remove(&item.lease_id);
                    tracing::warn!(lease_id = %item.lease_id, ?kind, ?outcome, detail, "the server refused a report");
                }
            }
        }
    }
}

/// The retry after `previous` (doubling from 200 ms to 2 s).
fn next_retry(previous: Option<(Instant, Duration)>) -> (Instant, Duration) {
    let delay = previous.map_or(FIRST_RETRY, |(_, delay)| (delay * 2).min(LAST_RETRY));
    (Instant::now() + delay, delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(timeout_seconds: i32) -> Lease {
        Lease {
            lease_id: Uuid::now_v7(),
            fencing_token: 1,
            lease_expires_at: chrono::Utc::now(),
            task_id: Uuid::now_v7(),
            team_id: Uuid::now_v7(),
            pool: "p".to_owned(),
            command: vec!["true".to_owned()],
            env: Default::default(),
            timeout_seconds,
            attempt: 1,
            max_attempts: 1,
            dependency_results: serde_json::json!({}),
        }
    }

    fn complete(output_bytes: usize) -> LeaseReportItem {
        LeaseReportItem {
            lease_id: Uuid::nil(),
            fencing_token: 0,
            kind: ReportKind::Complete,
            lease_seconds: None,
            result: None,
            output: Some("x".repeat(output_bytes)),
            exit_code: Some(0),
            error: None,
        }
    }

    #[tokio::test]
    async fn reports_go_in_batches_of_at_most_a_megabyte_with_heartbeats_when_due() {
        let reporter = Reporter::new(30);
        let now = Instant::now();
        let running = lease(3600);
        let _lost = reporter.hold(&running, now);
        for _ in 0..40 {
            let finished = lease(3600);
            let _ = reporter.hold(&finished, now);
            reporter.finish(finished.lease_id, complete(60 * 1024));
        }
        let first = reporter.batch(now, true);
        let bytes: usize = first
            .iter()
            .map(|item| serde_json::to_vec(item).unwrap().len())
            .sum();
        assert!(bytes <= MAX_BATCH_BYTES + 64 * 1024, "{bytes} bytes");
        let reports = first
            .iter()
            .filter(|item| item.kind == ReportKind::Complete)
            .count();
        assert!(
            (10..40).contains(&reports),
            "{reports} reports in the first batch"
        );
        assert_eq!(
            first
                .iter()
                .filter(|item| item.kind == ReportKind::Heartbeat)
                .map(|item| item.lease_id)
                .collect::<Vec<_>>(),
            [running.lease_id],
            "the running lease is heartbeated, the finished ones are not"
        );
        assert!(
            first
                .iter()
                .all(|item| item.fencing_token == 1 && !item.lease_id.is_nil()),
            "the reporter fills in the lease and its token"
        );
    }

    #[tokio::test]
    async fn a_report_is_given_up_only_once_its_lease_can_no_longer_be_extended() {
        let reporter = Reporter::new(10);
        let requested = Instant::now();
        let finished = lease(3600);
        let mut lost = reporter.hold(&finished, requested);
        reporter.finish(finished.lease_id, complete(10));
        // Within the lease (10 s) and the slack (5 s): still tried.
        assert_eq!(
            reporter
                .batch(requested + Duration::from_secs(14), false)
                .len(),
            1
        );
        // Beyond: given up, and nothing is killed (the task already ended).
        assert!(
            reporter
                .batch(requested + Duration::from_secs(16), false)
                .is_empty()
        );
        assert_eq!(reporter.pending(), 0);
        assert!(!*lost.borrow_and_update());

        // A running lease past its deadline is lost: its task is told to stop.
        let running = lease(3600);
        let mut lost = reporter.hold(&running, requested);
        let _ = reporter.batch(requested + Duration::from_secs(16), true);
        assert!(*lost.borrow_and_update());
        // The cap: a lease never outlives the task's timeout plus the server's grace.
        let long_leases = Reporter::new(600);
        let short = lease(1);
        let _ = long_leases.hold(&short, requested);
        long_leases.finish(short.lease_id, complete(10));
        let cap = requested + Duration::from_secs(1) + SERVER_GRACE;
        assert_eq!(long_leases.batch(cap, false).len(), 1);
        assert!(
            long_leases
                .batch(cap + DEADLINE_SLACK + Duration::from_millis(1), false)
                .is_empty()
        );
    }
}
