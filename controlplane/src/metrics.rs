//! Prometheus metrics: their names, the process-wide recorder, and the recording functions every
//! layer calls (HTTP requests and rate limiting, leases, attempts, retries, dead letters, the
//! reaper, the pool autoscaler's gauges and scaling events). `crate::http::metrics` serves them
//! and adds the task gauges read from Postgres at scrape time.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS: &str = "controlplane_http_requests_total";
pub const HTTP_DURATION: &str = "controlplane_http_request_duration_seconds";
pub const RATE_LIMITED: &str = "controlplane_rate_limited_requests_total";
pub const TASKS: &str = "controlplane_tasks";
pub const QUEUE_DEPTH: &str = "controlplane_queue_depth";
pub const LEASES: &str = "controlplane_leased_tasks_total";
pub const LEASE_LATENCY: &str = "controlplane_lease_request_duration_seconds";
pub const TASK_DURATION: &str = "controlplane_task_attempt_duration_seconds";
pub const RETRIES: &str = "controlplane_task_retries_total";
pub const DEAD_LETTERS: &str = "controlplane_dead_letters_total";
pub const REAPED: &str = "controlplane_expired_leases_total";
/// Submissions of `POST /v1/tasks` stored by one statement (group commit).
pub const SUBMIT_GROUP_SIZE: &str = "controlplane_submit_group_size";
/// Per pool: expired leases forgiven as lost (the task queued again, the attempt not counted).
pub const LEASES_LOST: &str = "controlplane_lost_leases_total";
/// 1 on the replica leading the pool autoscaler, 0 on the others.
pub const AUTOSCALER_LEADER: &str = "controlplane_autoscaler_leader";
/// Per pool: the backlog the autoscaler sized the pool for (ready plus running tasks).
pub const AUTOSCALER_BACKLOG: &str = "controlplane_autoscaler_backlog_tasks";
/// Per pool: the worker Deployment's `spec.replicas` as the autoscaler found it.
pub const AUTOSCALER_CURRENT_REPLICAS: &str = "controlplane_autoscaler_current_replicas";
/// Per pool: the stabilized replica count the autoscaler decided.
pub const AUTOSCALER_DESIRED_REPLICAS: &str = "controlplane_autoscaler_desired_replicas";
/// Per pool and direction (`up`, `down`): replica changes the autoscaler made.
pub const AUTOSCALER_SCALINGS: &str = "controlplane_autoscaler_scaling_events_total";
/// Per pool and reason (the Kubernetes API's status reason, e.g. `Forbidden` when the Role no
/// longer allows `deployments/scale`, or `Unreachable`): scalings the cluster refused or that
/// never reached it.
pub const AUTOSCALER_SCALE_FAILURES: &str = "controlplane_autoscaler_scale_failures_total";

/// The process-wide Prometheus recorder (installed once, shared by every server in the process).
pub fn prometheus_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(HTTP_DURATION.to_owned()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0,
                    ],
                )
                .expect("bucket list is not empty")
                .set_buckets_for_metric(
                    Matcher::Full(LEASE_LATENCY.to_owned()),
                    &[
                        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 20.0,
                    ],
                )
                .expect("bucket list is not empty")
                .set_buckets_for_metric(
                    Matcher::Full(SUBMIT_GROUP_SIZE.to_owned()),
                    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
                )
                .expect("bucket list is not empty")
                .set_buckets_for_metric(
                    Matcher::Full(TASK_DURATION.to_owned()),
                    &[0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0],
                )
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a global metrics recorder was already installed");
            }
            handle
        })
        .clone()
}

/// A lease request answered: how many tasks it leased and how long it took (long polls included).
pub fn record_leases(pool: &str, leased: usize, elapsed: std::time::Duration) {
    metrics::counter!(LEASES, "pool" => pool.to_owned()).increment(leased as u64);
    metrics::histogram!(LEASE_LATENCY, "pool" => pool.to_owned()).record(elapsed.as_secs_f64());
}

/// A failed attempt queued again for a retry.
pub fn record_retry(pool: &str) {
    metrics::counter!(RETRIES, "pool" => pool.to_owned()).increment(1);
}

/// A group of single submissions stored together.
pub fn record_submit_group(size: usize) {
    metrics::histogram!(SUBMIT_GROUP_SIZE).record(size as f64);
}

/// A lost lease forgiven: the task queued again without using an attempt.
pub fn record_lease_lost(pool: &str) {
    metrics::counter!(LEASES_LOST, "pool" => pool.to_owned()).increment(1);
}

/// A task out of attempts: a dead letter.
pub fn record_dead_letter(pool: &str) {
    metrics::counter!(DEAD_LETTERS, "pool" => pool.to_owned()).increment(1);
}

/// Duration of one attempt, from its lease to its report.
pub fn record_attempt_duration(pool: &str, seconds: f64) {
    metrics::histogram!(TASK_DURATION, "pool" => pool.to_owned()).record(seconds);
}

/// Leases the reaper ended.
pub fn record_reaped(count: usize) {
    metrics::counter!(REAPED).increment(count as u64);
}

/// A request refused by the rate limiter of `scope` (`client`, `key`, `global`).
pub fn record_rate_limited(scope: &'static str) {
    metrics::counter!(RATE_LIMITED, "scope" => scope).increment(1);
}
