//! Batched reports: heartbeats, completions, failures and releases of many leases in one
//! request, each checked and fenced on its own (`store::leases::report_many`), then the metrics
//! and the wake-ups they call for.

use super::Queue;
use crate::model::UnknownState;
use crate::model::lease::{LeaseReportItem, LeaseReportResult, ReportKind, ReportOutcome};
use crate::model::task::TaskState;
use crate::store::leases::{LeaseError, LeaseReport, Report, ReportAction, ReportResult};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    UnknownState(#[from] UnknownState),
}

impl Queue {
    /// Applies the reports (one transaction for the valid ones); the results in order.
    pub async fn report(
        &self,
        items: &[LeaseReportItem],
    ) -> Result<Vec<LeaseReportResult>, ReportError> {
        let mut results: Vec<Option<LeaseReportResult>> = Vec::with_capacity(items.len());
        let mut valid: Vec<(usize, LeaseReport)> = Vec::new();
        for (index, item) in items.iter().enumerate() {
            match item.check() {
                Ok(()) => {
                    results.push(None);
                    valid.push((index, to_store(item)));
                }
                Err(invalid) => results.push(Some(LeaseReportResult {
                    lease_id: item.lease_id,
                    outcome: ReportOutcome::Invalid,
                    detail: Some(invalid.0),
                    lease_expires_at: None,
                    task_state: None,
                })),
            }
        }
        let reports: Vec<LeaseReport> = valid.iter().map(|(_, report)| report.clone()).collect();
        let applied = if reports.is_empty() {
            Vec::new()
        } else {
            crate::store::leases::report_many(&self.db, &reports).await?
        };
        let mut wake = false;
        for ((index, report), result) in valid.into_iter().zip(applied) {
            let lease_id = report.lease_id;
            results[index] = Some(match result {
                ReportResult::Extended(deadline) => LeaseReportResult {
                    lease_id,
                    outcome: ReportOutcome::Ok,
                    detail: None,
                    lease_expires_at: Some(deadline),
                    task_state: None,
                },
                ReportResult::Ended { task, seconds } => {
                    let state = TaskState::parse(&task.state)?;
                    if !matches!(report.action, ReportAction::Release) {
                        super::record_report(&task.pool, state, seconds);
                    }
                    // A retry without backoff, a task given back, or workflow dependents
                    // queued by a completion: claimable now.
                    wake |= (state == TaskState::Queued && task.run_at <= chrono::Utc::now())
                        || (state == TaskState::Succeeded && task.workflow_id.is_some());
                    LeaseReportResult {
                        lease_id,
                        outcome: ReportOutcome::Ok,
                        detail: None,
                        lease_expires_at: None,
                        task_state: Some(state),
                    }
                }
                ReportResult::Refused(LeaseError::NotFound) => LeaseReportResult {
                    lease_id,
                    outcome: ReportOutcome::NotFound,
                    detail: Some("no such lease".to_owned()),
                    lease_expires_at: None,
                    task_state: None,
                },
                ReportResult::Refused(LeaseError::Stale(detail)) => LeaseReportResult {
                    lease_id,
                    outcome: ReportOutcome::Gone,
                    detail: Some(detail),
                    lease_expires_at: None,
                    task_state: None,
                },
                ReportResult::Refused(LeaseError::Database(error)) => return Err(error.into()),
            });
        }
        if wake {
            self.announce_queued().await;
        }
        Ok(results
            .into_iter()
            .map(|result| result.expect("every report answered"))
            .collect())
    }
}

fn to_store(item: &LeaseReportItem) -> LeaseReport {
    let outcome = || Report {
        result: item.result.clone(),
        output: item.output.clone(),
        exit_code: item.exit_code,
        error: item.error.clone(),
    };
    LeaseReport {
        lease_id: item.lease_id,
        fencing_token: item.fencing_token,
        action: match item.kind {
            ReportKind::Heartbeat => ReportAction::Heartbeat {
                lease_seconds: item.lease_seconds.unwrap_or(30) as i32,
            },
            ReportKind::Complete => ReportAction::Complete(outcome()),
            ReportKind::Fail => ReportAction::Fail(outcome()),
            ReportKind::Release => ReportAction::Release,
        },
    }
}
