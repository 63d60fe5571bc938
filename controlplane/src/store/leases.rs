//! Leasing, retries, the reaper, dead letters and workflow progress: every state change of a
//! task after its submission.
//!
//! A claim is one statement that leases up to N tasks fairly across teams within their quotas
//! ([`claim`]). The leased tasks of each team in each pool (what fair share ranks by) and, for a
//! team with a quota, of the team in all pools are counters (`lease_stripes`, summed over 16
//! stripes; `team_usage.active`), changed in the transaction that changes a lease
//! ([`super::usage`]); claims read them instead of counting tasks.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

use super::tasks::{TaskRow, task_columns};
use crate::model::lease::Lease;

/// Added to a task's timeout to get the latest deadline of any of its leases: a worker that
/// neither finishes nor reports is noticed by the reaper even while it heartbeats.
pub const TIMEOUT_GRACE_SECONDS: i32 = 30;

/// A lease as the claim statement returns it: what the worker is told, nothing more.
#[derive(Debug, FromRow)]
struct LeasedRow {
    lease_id: Uuid,
    fencing_token: i64,
    lease_expires_at: DateTime<Utc>,
    task_id: Uuid,
    team_id: Uuid,
    pool: String,
    command: Vec<String>,
    env: Json<BTreeMap<String, String>>,
    timeout_seconds: i32,
    attempts: i32,
    max_attempts: i32,
    dependency_results: Json<serde_json::Value>,
}

impl From<LeasedRow> for Lease {
    fn from(row: LeasedRow) -> Self {
        Self {
            lease_id: row.lease_id,
            fencing_token: row.fencing_token,
            lease_expires_at: row.lease_expires_at,
            task_id: row.task_id,
            team_id: row.team_id,
            pool: row.pool,
            command: row.command,
            env: row.env.0,
            timeout_seconds: row.timeout_seconds,
            attempt: row.attempts,
            max_attempts: row.max_attempts,
            dependency_results: row.dependency_results.0,
        }
    }
}

/// The claim statement. Parameters: `$1` pool, `$2` most tasks, `$3` lease seconds, `$4` worker,
/// `$5` the timeout grace in seconds, `$6` one new lease id per task (at least `$2`), `$7` the
/// stripe of the fair-share counters to add to. Public so that a test can show its cost does
/// not depend on the backlog (`EXPLAIN (ANALYZE, BUFFERS)`).
pub const CLAIM_STATEMENT: &str = "WITH candidates AS (
             SELECT t.id AS team_id, t.share, t.max_concurrent_tasks,
                    coalesce(s.active, 0) AS pool_active, s.last_leased_at,
                    least($2, coalesce(t.max_concurrent_tasks - coalesce(tu.active, 0), $2))
                        AS room
             FROM teams t
             LEFT JOIN team_usage tu ON tu.team_id = t.id
             LEFT JOIN LATERAL (
                 SELECT sum(active) AS active, max(last_leased_at) AS last_leased_at
                 FROM lease_stripes WHERE team_id = t.id AND pool = $1
             ) s ON true
             WHERE t.max_concurrent_tasks IS NULL
                OR coalesce(tu.active, 0) < t.max_concurrent_tasks
         ),
         ready AS (
             SELECT c.*, r.n
             FROM candidates c
             CROSS JOIN LATERAL (
                 SELECT count(*) AS n FROM (
                     SELECT 1 FROM tasks
                     WHERE team_id = c.team_id AND pool = $1 AND state = 'queued'
                       AND run_at <= now()
                     -- The order of `tasks_claimable`: the probe reads that index whatever the
                     -- parameters (the claim runs with a generic plan, `claim_pool`).
                     ORDER BY priority DESC, run_at, id
                     LIMIT c.room) probe
             ) r
             WHERE r.n > 0
         ),
         slots AS (
             SELECT r.team_id
             FROM ready r CROSS JOIN LATERAL generate_series(1, r.n) AS k
             ORDER BY (r.pool_active + k)::float8 / r.share, r.last_leased_at NULLS FIRST,
                      r.team_id, k
             LIMIT $2
         ),
         allocation AS (SELECT team_id, count(*) AS wanted FROM slots GROUP BY team_id),
         picked AS (
             SELECT p.id, a.team_id
             FROM allocation a
             CROSS JOIN LATERAL (
                 SELECT id FROM tasks
                 WHERE team_id = a.team_id AND pool = $1 AND state = 'queued' AND run_at <= now()
                 ORDER BY priority DESC, run_at, id
                 LIMIT a.wanted
                 FOR UPDATE SKIP LOCKED
             ) p
             -- Bounds the planner's estimate (the lateral limits are unknown to it): with it,
             -- the tasks are updated through their primary key instead of a scan of the table.
             LIMIT $2
         ),
         counts AS (
             SELECT p.team_id, count(*)::int AS n, c.max_concurrent_tasks
             FROM picked p JOIN candidates c ON c.team_id = p.team_id
             GROUP BY p.team_id, c.max_concurrent_tasks
         ),
         capped AS (
             INSERT INTO team_usage AS tu (team_id, active)
             SELECT team_id, n FROM counts
             WHERE max_concurrent_tasks IS NOT NULL AND n <= max_concurrent_tasks
             ORDER BY team_id
             ON CONFLICT (team_id) DO UPDATE SET active = tu.active + EXCLUDED.active
             WHERE tu.active + EXCLUDED.active <= coalesce(
                 (SELECT max_concurrent_tasks FROM teams WHERE id = EXCLUDED.team_id), 2147483647)
             RETURNING tu.team_id
         ),
         granted AS (
             SELECT team_id FROM counts WHERE max_concurrent_tasks IS NULL
             UNION ALL
             SELECT team_id FROM capped
         ),
         pool_usage AS (
             INSERT INTO lease_stripes AS s (team_id, pool, stripe, last_leased_at, active)
             SELECT c.team_id, $1, $7, clock_timestamp(), c.n
             FROM granted g JOIN counts c ON c.team_id = g.team_id
             ORDER BY c.team_id
             ON CONFLICT (team_id, pool, stripe) DO UPDATE
             SET active = s.active + EXCLUDED.active, last_leased_at = EXCLUDED.last_leased_at
         ),
         -- The granted tasks in one row, in id order (the order they are updated in). Paired
         -- with the lease ids by `unnest` below, whose size the planner cannot know, so it
         -- reads each task through its primary key: a join against a CTE of unknown size made
         -- the generic plan hash the whole table.
         granted_ids AS (
             SELECT array_agg(p.id ORDER BY p.id) AS ids
             FROM picked p JOIN granted g ON g.team_id = p.team_id
         ),
         leased AS (
             UPDATE tasks t
             SET state = 'leased', attempts = t.attempts + 1,
                 fencing_token = t.fencing_token + 1, lease_id = l.lease_id, lease_owner = $4,
                 leased_at = now(), updated_at = now(),
                 lease_expires_at = least(now() + make_interval(secs => $3),
                                          now() + make_interval(secs => t.timeout_seconds + $5))
             FROM granted_ids n
             -- Padded with NULL ids past the granted tasks ($6 has at least $2 lease ids).
             CROSS JOIN LATERAL unnest(n.ids, $6::uuid[]) AS l(id, lease_id)
             WHERE t.id = l.id
             RETURNING t.lease_id, t.fencing_token, t.lease_expires_at, t.id AS task_id,
                       t.team_id, t.pool, t.command, t.env, t.timeout_seconds, t.attempts,
                       t.max_attempts, t.dependency_results
         )
         SELECT * FROM leased";

/// The pool claims run on: beside `db`, to the same database, with sessions that plan
/// [`CLAIM_STATEMENT`] once (`plan_cache_mode = force_generic_plan`) instead of at every call.
/// Postgres re-plans a prepared statement for its parameters while its generic plan looks costlier
/// than the custom ones, and this statement's planning took longer than its execution (0.5-0.9
/// ms against 0.4 ms for a 3-task claim, `EXPLAIN (ANALYZE, SUMMARY)`); its generic plan reads
/// the same indexes (each lateral probe is bounded and ordered as `tasks_claimable`) and runs in
/// 0.2 ms. Plans are made again when ANALYZE updates the tables' statistics. A quarter of `db`'s
/// connections (at least 2), on top of them; only claims use them, so no other statement is
/// planned generically.
///
/// The sessions also never scan a table (`enable_seqscan = off`: the tables the claim reads are
/// all read through indexes). A session plans at its first claim, and until ANALYZE runs the
/// plan stays as it was made: made while `tasks` was small (a new database, or one whose
/// autovacuum is off or behind), the generic plan read the granted tasks by scanning the table
/// and hashing it, and kept doing so as it grew: 33 ms for a claim of 500 tasks among 60,000
/// (`EXPLAIN ANALYZE`, `cargo xtask bench queue`), against 0.5 ms through the primary key.
pub fn claim_pool(db: &PgPool) -> PgPool {
    let options = (*db.connect_options()).clone().options([
        ("plan_cache_mode", "force_generic_plan"),
        ("enable_seqscan", "off"),
    ]);
    super::pool_options((db.options().get_max_connections() / 4).max(2)).connect_lazy_with(options)
}

/// Leases up to `max` ready tasks of `pool` in one statement, fairly across teams and within
/// their quotas; the cost does not depend on how many tasks are queued.
///
/// 1. Every team below its quota is a candidate, with its leased tasks in the pool (the sum of
///    its stripes in `lease_stripes`) and, under a quota, in all pools (`team_usage.active`)
///    read from the counters, never by counting tasks.
/// 2. For each, the ready tasks it has, counted only up to what it could get (an index probe
///    bounded by `max` and its room under the quota).
/// 3. Weighted fair queuing across teams: the k-th task a team would get in this claim is ranked
///    by `(leased in the pool + k) / share`, ties to the team served least recently; the first
///    `max` ranks are the allocation.
/// 4. Each team's best tasks (priority, then age), as many as allocated, are locked with
///    `FOR UPDATE SKIP LOCKED`: concurrent claims take different tasks.
/// 5. The quota counters of teams with a quota are raised with upserts in team order, each only
///    while the quota holds on the counter's current row (an upsert locks the newest version and
///    checks its `WHERE` there), so concurrent claims never exceed a quota; a team refused here
///    gets nothing this time. (Locking a row in one part of a statement and updating it in
///    another would follow the row's update chain from a stale snapshot and can deadlock with
///    waiters.) Teams without a quota wait for no other claim: their leases are added to one
///    stripe of their fair-share counter, chosen at random.
/// 6. The granted tasks become leased (a new lease id and fencing token each). A live lease is
///    on its task (`lease_id`, `lease_owner`, `leased_at`); its attempt row is written when it
///    ends ([`record_attempt`], or with the completions of a batch), one write instead of an
///    insert here and an update there.
pub async fn claim(
    db: &PgPool,
    pool: &str,
    max: usize,
    lease_seconds: i32,
    worker: &str,
) -> Result<Vec<Lease>, sqlx::Error> {
    let max = i64::try_from(max.clamp(1, 1000)).unwrap_or(1);
    let lease_ids: Vec<Uuid> = (0..max).map(|_| Uuid::now_v7()).collect();
    let rows = sqlx::query_as::<_, LeasedRow>(CLAIM_STATEMENT)
        .bind(pool)
        .bind(max)
        .bind(f64::from(lease_seconds))
        .bind(worker)
        .bind(TIMEOUT_GRACE_SECONDS)
        .bind(&lease_ids)
        .bind(super::usage::random_stripe())
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().map(Lease::from).collect())
}

/// Why an operation on a lease was refused.
#[derive(Debug)]
pub enum LeaseError {
    /// No lease with this id ever existed.
    NotFound,
    /// The lease ended (expired, completed, failed, released, cancelled) or the token is not
    /// the lease's.
    Stale(String),
    Database(sqlx::Error),
}

impl From<sqlx::Error> for LeaseError {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(error)
    }
}

/// Writes the attempt row of the live lease `lease_id` of the locked task `task_id`, from the
/// task as it is before the lease ends (who held it, since when, the attempt and token), for
/// the statement that ends it to fill in. A lease taken by a server of the previous version
/// already has its row (written when it was claimed): it is kept.
async fn record_attempt(
    connection: &mut PgConnection,
    task_id: Uuid,
    lease_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO task_attempts (lease_id, task_id, attempt, fencing_token, worker, leased_at)
         SELECT lease_id, id, attempts, fencing_token, lease_owner, leased_at
         FROM tasks WHERE id = $1 AND lease_id = $2
         ON CONFLICT (lease_id) DO NOTHING",
    )
    .bind(task_id)
    .bind(lease_id)
    .execute(connection)
    .await?;
    Ok(())
}

/// Locks the task of a live lease whose fencing token matches.
async fn lock_lease(
    connection: &mut PgConnection,
    lease_id: Uuid,
    fencing_token: i64,
) -> Result<TaskRow, LeaseError> {
    let row = sqlx::query_as::<_, TaskRow>(concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks WHERE lease_id = $1 AND state = 'leased' FOR UPDATE"
    ))
    .bind(lease_id)
    .fetch_optional(&mut *connection)
    .await?;
    let Some(row) = row else {
        // How it ended: the same reading as for the refusals of a batch.
        let reasons = refusal_reasons(&mut *connection, &[lease_id]).await?;
        return Err(ended_lease(reasons.ended.get(&lease_id).cloned()));
    };
    check_live(&row, fencing_token)?;
    Ok(row)
}

/// Why a lease that is on no leased task is refused: stale when its attempt is known (with how
/// it ended), unknown otherwise.
fn ended_lease(known_outcome: Option<Option<String>>) -> LeaseError {
    match known_outcome {
        Some(outcome) => LeaseError::Stale(format!(
            "the lease is no longer held (it ended: {})",
            match outcome.as_deref() {
                Some("lost") => "lost, it expired without a heartbeat; the task was queued again",
                Some(outcome) => outcome,
                None => "the task left the leased state",
            }
        )),
        None => LeaseError::NotFound,
    }
}

/// A leased task's lease is live for `fencing_token`: the current token, not expired.
fn check_live(row: &TaskRow, fencing_token: i64) -> Result<(), LeaseError> {
    if row.fencing_token != fencing_token {
        return Err(LeaseError::Stale(format!(
            "fencing token {fencing_token} is stale; the current token is {}",
            row.fencing_token
        )));
    }
    if row
        .lease_expires_at
        .is_none_or(|deadline| deadline <= Utc::now())
    {
        return Err(LeaseError::Stale(
            "the lease expired; the task goes back to the queue".to_owned(),
        ));
    }
    Ok(())
}

/// Extends a live lease by `lease_seconds` (never beyond the task's timeout plus the grace).
pub async fn heartbeat(
    db: &PgPool,
    lease_id: Uuid,
    fencing_token: i64,
    lease_seconds: i32,
) -> Result<DateTime<Utc>, LeaseError> {
    let mut transaction = db.begin().await?;
    let row = lock_lease(&mut transaction, lease_id, fencing_token).await?;
    let deadline: DateTime<Utc> = sqlx::query_scalar(
        "UPDATE tasks
         SET lease_expires_at = least(now() + make_interval(secs => $2),
                                      leased_at + make_interval(secs => timeout_seconds + $3)),
             updated_at = now()
         WHERE id = $1 RETURNING lease_expires_at",
    )
    .bind(row.id)
    .bind(f64::from(lease_seconds))
    .bind(TIMEOUT_GRACE_SECONDS)
    .fetch_one(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(deadline)
}

/// What a worker reports about an attempt.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub result: Option<serde_json::Value>,
    pub output: Option<String>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
}

/// Marks the task of a live lease succeeded and releases the workflow tasks waiting for it.
/// The successful attempt stays on the task (its lease id, worker and times): no attempt row
/// is written for it.
pub async fn complete(
    db: &PgPool,
    lease_id: Uuid,
    fencing_token: i64,
    report: &Report,
) -> Result<(TaskRow, f64), LeaseError> {
    let mut transaction = db.begin().await?;
    let row = lock_lease(&mut transaction, lease_id, fencing_token).await?;
    #[derive(FromRow)]
    struct Completed {
        seconds: f64,
        #[sqlx(flatten)]
        task: TaskRow,
    }
    let Completed { task, seconds } = sqlx::query_as::<_, Completed>(concat!(
        "UPDATE tasks
         SET state = 'succeeded', result = $2, output = $3, exit_code = $4, last_error = NULL,
             finished_at = now(), updated_at = now(), lease_expires_at = NULL
         WHERE id = $1
         RETURNING extract(epoch FROM now() - leased_at)::float8 AS seconds, ",
        task_columns!()
    ))
    .bind(row.id)
    .bind(report.result.as_ref().map(Json))
    .bind(&report.output)
    .bind(report.exit_code)
    .fetch_one(&mut *transaction)
    .await?;
    super::usage::lease_ended(&mut transaction, &[(task.team_id, task.pool.clone())]).await?;
    if task.workflow_id.is_some() {
        release_dependents(&mut transaction, task.id).await?;
    }
    transaction.commit().await?;
    Ok((task, seconds))
}

/// The fenced update of a batch's completions. Parameters, one element per report in lease-id
/// order (the lock order): `$1` lease ids, `$2` fencing tokens, `$3` results, `$4` outputs, `$5`
/// exit codes. Public so that a test can show its plan (`EXPLAIN`).
///
/// The arrays are read through sub-selects, so that Postgres plans for a batch of unknown size:
/// one probe of `tasks_lease` per report, whatever the statistics say. Planned for the real size
/// (500 reports) while the leased tasks looked few (a table without statistics yet), the update
/// hashed every leased task, found through `tasks_lease_expiry` and its dead entries: a cost that
/// grew with every task leased since the last vacuum. The heartbeats' update reads its arrays
/// the same way.
pub const COMPLETION_STATEMENT: &str = "UPDATE tasks t
     SET state = 'succeeded', result = c.result, output = c.output,
         exit_code = c.exit_code, last_error = NULL, finished_at = now(),
         updated_at = now(), lease_expires_at = NULL
     FROM unnest((SELECT $1::uuid[]), (SELECT $2::bigint[]), (SELECT $3::jsonb[]),
                 (SELECT $4::text[]), (SELECT $5::int[]))
          AS c(lease_id, token, result, output, exit_code)
     WHERE t.lease_id = c.lease_id AND t.state = 'leased'
       AND t.fencing_token = c.token AND t.lease_expires_at > now()
     RETURNING c.lease_id AS completed_lease_id,
               extract(epoch FROM now() - t.leased_at)::float8 AS seconds,
               t.id, t.team_id, t.pool, t.state, t.run_at, t.workflow_id";

/// What a report in a batch does.
#[derive(Debug, Clone)]
pub enum ReportAction {
    Heartbeat { lease_seconds: i32 },
    Complete(Report),
    Fail(Report),
    Release,
}

/// One report of a batch.
#[derive(Debug, Clone)]
pub struct LeaseReport {
    pub lease_id: Uuid,
    pub fencing_token: i64,
    pub action: ReportAction,
}

/// What a report that ended a lease tells of the task: where it is now (for the answer, the
/// lease counters, the metrics and the wake-ups), not the whole row.
#[derive(Debug, Clone, FromRow)]
pub struct EndedTask {
    pub id: Uuid,
    pub team_id: Uuid,
    pub pool: String,
    pub state: String,
    pub run_at: DateTime<Utc>,
    pub workflow_id: Option<Uuid>,
}

impl From<&TaskRow> for EndedTask {
    fn from(task: &TaskRow) -> Self {
        Self {
            id: task.id,
            team_id: task.team_id,
            pool: task.pool.clone(),
            state: task.state.clone(),
            run_at: task.run_at,
            workflow_id: task.workflow_id,
        }
    }
}

/// What became of one report.
#[derive(Debug)]
pub enum ReportResult {
    /// A heartbeat: the new deadline.
    Extended(DateTime<Utc>),
    /// The lease ended: the task as it is now, and the attempt's duration.
    Ended {
        task: EndedTask,
        seconds: f64,
    },
    Refused(LeaseError),
}

/// How often a batch of reports that met another transaction in a deadlock is run again.
const DEADLOCK_ATTEMPTS: usize = 3;

/// Applies reports about many leases in one transaction, each fenced by its own token and
/// answered on its own. Heartbeats and completions are one fenced `UPDATE` each (the lease id,
/// the token and the deadline are checked on the row being updated, which locks it; nothing is
/// read first), failures and releases (rare) go one by one, the attempts of the completions are
/// closed in one statement and the lease counters lowered once. A lease that ends in the batch
/// refuses the later reports about it. Reports the fence refused are explained afterwards from
/// the task and its attempts.
pub async fn report_many(
    db: &PgPool,
    reports: &[LeaseReport],
) -> Result<Vec<ReportResult>, sqlx::Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match apply_reports(db, reports).await {
            // Two batches that share leases (a worker sending a batch again while the first
            // copy is still being applied) may lock them in different orders.
            Err(sqlx::Error::Database(error))
                if error.code().as_deref() == Some("40P01") && attempt < DEADLOCK_ATTEMPTS =>
            {
                tracing::debug!(%error, attempt, "a batch of reports met a deadlock; applying it again");
            }
            other => return other,
        }
    }
}

/// One parameter array of a batched update: `value` of each report, in the order of `indexes`.
fn column<T>(indexes: &[usize], value: impl Fn(usize) -> T) -> Vec<T> {
    indexes.iter().map(|&index| value(index)).collect()
}

async fn apply_reports(
    db: &PgPool,
    reports: &[LeaseReport],
) -> Result<Vec<ReportResult>, sqlx::Error> {
    let mut results: Vec<Option<ReportResult>> = reports.iter().map(|_| None).collect();
    // In request order: what each report does, given the ones before it in the batch.
    let mut ended_here: HashSet<Uuid> = HashSet::new();
    let mut heartbeats: Vec<usize> = Vec::new();
    let mut completions: Vec<usize> = Vec::new();
    let mut one_by_one: Vec<usize> = Vec::new();
    for (index, report) in reports.iter().enumerate() {
        if ended_here.contains(&report.lease_id) {
            results[index] = Some(ReportResult::Refused(LeaseError::Stale(
                "the lease ended earlier in this batch".to_owned(),
            )));
            continue;
        }
        match report.action {
            ReportAction::Heartbeat { .. } => heartbeats.push(index),
            ReportAction::Complete(_) => {
                ended_here.insert(report.lease_id);
                completions.push(index);
            }
            ReportAction::Fail(_) | ReportAction::Release => {
                ended_here.insert(report.lease_id);
                one_by_one.push(index);
            }
        }
    }
    let mut transaction = db.begin().await?;
    let mut ended: Vec<(Uuid, String)> = Vec::new();
    if !heartbeats.is_empty() {
        // Lock order: by lease id (see `report_many`).
        let mut sorted = heartbeats.clone();
        sorted.sort_by_key(|&index| reports[index].lease_id);
        let extended: HashMap<Uuid, DateTime<Utc>> = sqlx::query_as::<_, (Uuid, DateTime<Utc>)>(
            "UPDATE tasks t
             SET lease_expires_at = least(now() + make_interval(secs => h.seconds),
                                          t.leased_at + make_interval(secs => t.timeout_seconds + $4)),
                 updated_at = now()
             -- Sub-selects: planned for a batch of unknown size (see COMPLETION_STATEMENT).
             FROM unnest((SELECT $1::uuid[]), (SELECT $2::bigint[]), (SELECT $3::float8[]))
                  AS h(lease_id, token, seconds)
             WHERE t.lease_id = h.lease_id AND t.state = 'leased' AND t.fencing_token = h.token
               AND t.lease_expires_at > now()
             RETURNING t.lease_id, t.lease_expires_at",
        )
        .bind(column(&sorted, |i| reports[i].lease_id))
        .bind(column(&sorted, |i| reports[i].fencing_token))
        .bind(column(&sorted, |i| match reports[i].action {
            ReportAction::Heartbeat { lease_seconds } => f64::from(lease_seconds),
            _ => 0.0,
        }))
        .bind(TIMEOUT_GRACE_SECONDS)
        .fetch_all(&mut *transaction)
        .await?
        .into_iter()
        .collect();
        for &index in &heartbeats {
            if let Some(deadline) = extended.get(&reports[index].lease_id) {
                results[index] = Some(ReportResult::Extended(*deadline));
            }
        }
    }
    if !completions.is_empty() {
        let mut sorted = completions.clone();
        sorted.sort_by_key(|&index| reports[index].lease_id);
        let outcome = |index: usize| match &reports[index].action {
            ReportAction::Complete(report) => Some(report),
            _ => None,
        };
        #[derive(FromRow)]
        struct Completed {
            completed_lease_id: Uuid,
            seconds: f64,
            #[sqlx(flatten)]
            task: EndedTask,
        }
        // The fenced update; the successful attempt stays on the task (lease id, worker,
        // times), so nothing else is written. Only what the answer and the counters need comes
        // back.
        let completed = sqlx::query_as::<_, Completed>(COMPLETION_STATEMENT)
            .bind(column(&sorted, |i| reports[i].lease_id))
            .bind(column(&sorted, |i| reports[i].fencing_token))
            .bind(column(&sorted, |i| {
                outcome(i).and_then(|r| r.result.as_ref().map(Json))
            }))
            .bind(column(&sorted, |i| {
                outcome(i).and_then(|r| r.output.as_deref())
            }))
            .bind(column(&sorted, |i| outcome(i).and_then(|r| r.exit_code)))
            .fetch_all(&mut *transaction)
            .await?;
        let mut completed: HashMap<Uuid, (EndedTask, f64)> = completed
            .into_iter()
            .map(|row| (row.completed_lease_id, (row.task, row.seconds)))
            .collect();
        for &index in &completions {
            let Some((task, seconds)) = completed.remove(&reports[index].lease_id) else {
                continue;
            };
            ended.push((task.team_id, task.pool.clone()));
            if task.workflow_id.is_some() {
                release_dependents(&mut transaction, task.id).await?;
            }
            results[index] = Some(ReportResult::Ended { task, seconds });
        }
    }
    for &index in &one_by_one {
        let report = &reports[index];
        let row = match lock_lease(&mut transaction, report.lease_id, report.fencing_token).await {
            Ok(row) => row,
            Err(LeaseError::Database(error)) => return Err(error),
            Err(refused) => {
                results[index] = Some(ReportResult::Refused(refused));
                continue;
            }
        };
        let (task, seconds) = match &report.action {
            ReportAction::Fail(outcome) => {
                fail_locked(&mut transaction, row.id, report.lease_id, "failed", outcome).await?
            }
            _ => (
                release_locked(&mut transaction, row.id, report.lease_id).await?,
                0.0,
            ),
        };
        ended.push((row.team_id, row.pool.clone()));
        results[index] = Some(ReportResult::Ended {
            task: EndedTask::from(&task),
            seconds,
        });
    }
    super::usage::lease_ended(&mut transaction, &ended).await?;
    // Why the fence refused the others: read within the transaction, after the changes.
    let refused: Vec<Uuid> = results
        .iter()
        .zip(reports)
        .filter(|(result, _)| result.is_none())
        .map(|(_, report)| report.lease_id)
        .collect();
    if !refused.is_empty() {
        let reasons = refusal_reasons(&mut transaction, &refused).await?;
        for (result, report) in results.iter_mut().zip(reports) {
            if result.is_none() {
                *result = Some(ReportResult::Refused(reasons.refusal(report)));
            }
        }
    }
    transaction.commit().await?;
    Ok(results
        .into_iter()
        .map(|result| {
            result.unwrap_or(ReportResult::Refused(LeaseError::Stale(
                "not applied".to_owned(),
            )))
        })
        .collect())
}

/// What is known about leases a fenced update refused: the live ones (token and deadline) and
/// the ended ones (how they ended).
struct RefusalReasons {
    live: HashMap<Uuid, (i64, Option<DateTime<Utc>>)>,
    ended: HashMap<Uuid, Option<String>>,
}

impl RefusalReasons {
    fn refusal(&self, report: &LeaseReport) -> LeaseError {
        if let Some((token, deadline)) = self.live.get(&report.lease_id) {
            if *token != report.fencing_token {
                return LeaseError::Stale(format!(
                    "fencing token {} is stale; the current token is {token}",
                    report.fencing_token
                ));
            }
            if deadline.is_none_or(|deadline| deadline <= Utc::now()) {
                return LeaseError::Stale(
                    "the lease expired; the task goes back to the queue".to_owned(),
                );
            }
            // Live and fenced right now: it expired between the update and this read.
            return LeaseError::Stale("the lease expired while it was reported".to_owned());
        }
        ended_lease(self.ended.get(&report.lease_id).cloned())
    }
}

async fn refusal_reasons(
    connection: &mut PgConnection,
    lease_ids: &[Uuid],
) -> Result<RefusalReasons, sqlx::Error> {
    // A task holds its live lease and, once succeeded, the lease it succeeded with.
    let mut live = HashMap::new();
    let mut ended: HashMap<Uuid, Option<String>> = HashMap::new();
    let on_tasks = sqlx::query_as::<_, (Uuid, String, i64, Option<DateTime<Utc>>)>(
        "SELECT lease_id, state, fencing_token, lease_expires_at FROM tasks
         WHERE lease_id = ANY($1) AND state IN ('leased', 'succeeded')",
    )
    .bind(lease_ids)
    .fetch_all(&mut *connection)
    .await?;
    for (lease_id, state, token, deadline) in on_tasks {
        if state == "leased" {
            live.insert(lease_id, (token, deadline));
        } else {
            ended.insert(lease_id, Some(state));
        }
    }
    let attempts = sqlx::query_as::<_, (Uuid, Option<String>)>(
        "SELECT lease_id, outcome FROM task_attempts WHERE lease_id = ANY($1)",
    )
    .bind(lease_ids)
    .fetch_all(&mut *connection)
    .await?;
    for (lease_id, outcome) in attempts {
        ended.entry(lease_id).or_insert(outcome);
    }
    Ok(RefusalReasons { live, ended })
}

/// Ends the attempt of a locked, leased task as failed: queued again after the retry delay,
/// or dead when it has no attempts left (forgiven lost leases do not count as attempts).
/// `outcome` is `failed` or `expired`.
async fn fail_locked(
    connection: &mut PgConnection,
    task_id: Uuid,
    lease_id: Uuid,
    outcome: &str,
    report: &Report,
) -> Result<(TaskRow, f64), sqlx::Error> {
    record_attempt(connection, task_id, lease_id).await?;
    let task = sqlx::query_as::<_, TaskRow>(concat!(
        "UPDATE tasks
         SET state = CASE WHEN attempts - lease_losses >= max_attempts THEN 'dead' ELSE 'queued' END,
             run_at = CASE WHEN attempts - lease_losses >= max_attempts THEN run_at
                           ELSE now() + stacksmith_retry_delay(retry_backoff_seconds,
                                  retry_max_backoff_seconds, retry_jitter_percent,
                                  attempts - lease_losses) END,
             finished_at = CASE WHEN attempts - lease_losses >= max_attempts THEN now() END,
             last_error = $2, output = coalesce($3, output), exit_code = $4, updated_at = now(),
             lease_id = NULL, lease_owner = NULL, lease_expires_at = NULL
         WHERE id = $1 RETURNING ",
        task_columns!()
    ))
    .bind(task_id)
    .bind(&report.error)
    .bind(&report.output)
    .bind(report.exit_code)
    .fetch_one(&mut *connection)
    .await?;
    let seconds: Option<f64> = sqlx::query_scalar(
        "UPDATE task_attempts
         SET finished_at = now(), outcome = $2, error = $3,
             next_run_at = CASE WHEN $4::text = 'queued' THEN $5::timestamptz END
         WHERE lease_id = $1
         RETURNING extract(epoch FROM finished_at - leased_at)::float8",
    )
    .bind(lease_id)
    .bind(outcome)
    .bind(&report.error)
    .bind(&task.state)
    .bind(task.run_at)
    .fetch_optional(&mut *connection)
    .await?;
    if task.state == "dead" && task.workflow_id.is_some() {
        stop_dependents(connection, task.id).await?;
    }
    Ok((task, seconds.unwrap_or(0.0)))
}

/// A worker reports a failed attempt.
pub async fn fail(
    db: &PgPool,
    lease_id: Uuid,
    fencing_token: i64,
    report: &Report,
) -> Result<(TaskRow, f64), LeaseError> {
    let mut transaction = db.begin().await?;
    let row = lock_lease(&mut transaction, lease_id, fencing_token).await?;
    let task = fail_locked(&mut transaction, row.id, lease_id, "failed", report).await?;
    super::usage::lease_ended(&mut transaction, &[(row.team_id, row.pool.clone())]).await?;
    transaction.commit().await?;
    Ok(task)
}

/// A worker gives a task back without running it to the end (shutdown): queued again at once,
/// and the attempt does not count.
pub async fn release(
    db: &PgPool,
    lease_id: Uuid,
    fencing_token: i64,
) -> Result<TaskRow, LeaseError> {
    let mut transaction = db.begin().await?;
    let row = lock_lease(&mut transaction, lease_id, fencing_token).await?;
    let task = release_locked(&mut transaction, row.id, lease_id).await?;
    super::usage::lease_ended(&mut transaction, &[(task.team_id, task.pool.clone())]).await?;
    transaction.commit().await?;
    Ok(task)
}

/// Queues a locked, leased task again at once; the attempt does not count.
async fn release_locked(
    connection: &mut PgConnection,
    task_id: Uuid,
    lease_id: Uuid,
) -> Result<TaskRow, sqlx::Error> {
    record_attempt(connection, task_id, lease_id).await?;
    let task = sqlx::query_as::<_, TaskRow>(concat!(
        "UPDATE tasks
         SET state = 'queued', attempts = greatest(attempts - 1, 0), run_at = now(),
             updated_at = now(), lease_id = NULL, lease_owner = NULL, lease_expires_at = NULL
         WHERE id = $1 RETURNING ",
        task_columns!()
    ))
    .bind(task_id)
    .fetch_one(&mut *connection)
    .await?;
    sqlx::query(
        "UPDATE task_attempts SET finished_at = now(), outcome = 'released' WHERE lease_id = $1",
    )
    .bind(lease_id)
    .execute(&mut *connection)
    .await?;
    Ok(task)
}

/// Queues a locked, leased task again after a lost lease: its retry delay with the number of
/// leases lost so far as the exponent, the attempt not counted against `max_attempts`.
async fn lose_locked(
    connection: &mut PgConnection,
    task_id: Uuid,
    lease_id: Uuid,
) -> Result<TaskRow, sqlx::Error> {
    record_attempt(connection, task_id, lease_id).await?;
    let task = sqlx::query_as::<_, TaskRow>(concat!(
        "UPDATE tasks
         SET state = 'queued', lease_losses = lease_losses + 1,
             run_at = now() + stacksmith_retry_delay(retry_backoff_seconds,
                        retry_max_backoff_seconds, retry_jitter_percent, lease_losses + 1),
             last_error = format('the lease was lost (no heartbeat or report before its deadline: '
                                 'the worker stopped); queued again, lost lease %s of %s forgiven',
                                 lease_losses + 1, max_lease_losses),
             updated_at = now(), lease_id = NULL, lease_owner = NULL, lease_expires_at = NULL
         WHERE id = $1 RETURNING ",
        task_columns!()
    ))
    .bind(task_id)
    .fetch_one(&mut *connection)
    .await?;
    sqlx::query(
        "UPDATE task_attempts
         SET finished_at = now(), outcome = 'lost', error = $2, next_run_at = $3
         WHERE lease_id = $1",
    )
    .bind(lease_id)
    .bind(&task.last_error)
    .bind(task.run_at)
    .execute(&mut *connection)
    .await?;
    Ok(task)
}

/// How the reaper ended an expired lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Lost and forgiven: the task is queued again, the attempt not counted.
    Lost,
    /// A failed attempt: the task is queued for a retry, or dead.
    Failed,
}

/// Ends expired leases. A lease that expired while its task was within its timeout was lost
/// (the worker vanished): the task is queued again without using an attempt, up to its
/// `max_lease_losses`; beyond them, or when the task ran past its timeout (the lease reached
/// its latest deadline, `leased_at + timeout + grace`), the attempt failed (`expired`: retry or
/// dead letter). Returns the tasks as they are now.
pub async fn reap_expired(db: &PgPool, batch: i64) -> Result<Vec<(TaskRow, Expiry)>, sqlx::Error> {
    let mut transaction = db.begin().await?;
    let expired: Vec<(Uuid, Uuid, bool, bool)> = sqlx::query_as(
        "SELECT id, lease_id,
                lease_expires_at >= leased_at + make_interval(secs => timeout_seconds + $2),
                lease_losses < max_lease_losses
         FROM tasks
         WHERE state = 'leased' AND lease_expires_at <= now()
         ORDER BY lease_expires_at
         LIMIT $1
         FOR UPDATE SKIP LOCKED",
    )
    .bind(batch)
    .bind(TIMEOUT_GRACE_SECONDS)
    .fetch_all(&mut *transaction)
    .await?;
    let overran = Report {
        error: Some(
            "the task ran past its timeout and its worker never reported (the lease reached its \
             latest deadline)"
                .to_owned(),
        ),
        ..Report::default()
    };
    let over_budget = Report {
        error: Some(
            "the lease was lost (no heartbeat or report before its deadline) once more than \
             retry.max_lease_losses allows: this loss counts as a failed attempt"
                .to_owned(),
        ),
        ..Report::default()
    };
    let mut reaped = Vec::with_capacity(expired.len());
    for (task_id, lease_id, ran_past_timeout, forgiven) in &expired {
        let reaped_task = if *ran_past_timeout {
            let (task, _) =
                fail_locked(&mut transaction, *task_id, *lease_id, "expired", &overran).await?;
            (task, Expiry::Failed)
        } else if *forgiven {
            let task = lose_locked(&mut transaction, *task_id, *lease_id).await?;
            (task, Expiry::Lost)
        } else {
            let (task, _) = fail_locked(
                &mut transaction,
                *task_id,
                *lease_id,
                "expired",
                &over_budget,
            )
            .await?;
            (task, Expiry::Failed)
        };
        reaped.push(reaped_task);
    }
    let ended: Vec<(Uuid, String)> = reaped
        .iter()
        .map(|(task, _)| (task.team_id, task.pool.clone()))
        .collect();
    super::usage::lease_ended(&mut transaction, &ended).await?;
    transaction.commit().await?;
    Ok(reaped)
}

/// Outcome of a cancellation request.
#[derive(Debug)]
pub enum CancelOutcome {
    /// The task is cancelled now (or already was).
    Cancelled(TaskRow),
    /// The task had already finished; it keeps its final state.
    AlreadyFinished(TaskRow),
    NotFound,
}

/// Cancels a task of `team_id` that is not final, in one transaction: a leased task's lease
/// ends (its attempt `cancelled`, the lease counters lowered), and a workflow task's dependents
/// that can never run now are stopped.
pub async fn cancel(db: &PgPool, team_id: Uuid, id: Uuid) -> Result<CancelOutcome, sqlx::Error> {
    let mut transaction = db.begin().await?;
    // Lock first, then update in a statement of its own (a fresh snapshot sees the locked row).
    let previous: Option<(String, Option<Uuid>)> = sqlx::query_as(
        "SELECT state, lease_id FROM tasks WHERE id = $1 AND team_id = $2 FOR UPDATE",
    )
    .bind(id)
    .bind(team_id)
    .fetch_optional(&mut *transaction)
    .await?;
    let cancelled = match &previous {
        Some((state, lease_id))
            if matches!(state.as_str(), "pending" | "queued" | "leased" | "running") =>
        {
            if let Some(lease_id) = lease_id {
                record_attempt(&mut transaction, id, *lease_id).await?;
            }
            Some(
                sqlx::query_as::<_, TaskRow>(concat!(
                    "UPDATE tasks
                     SET state = 'cancelled', updated_at = now(), finished_at = now(),
                         lease_owner = NULL, lease_expires_at = NULL, lease_id = NULL
                     WHERE id = $1 RETURNING ",
                    task_columns!()
                ))
                .bind(id)
                .fetch_one(&mut *transaction)
                .await?,
            )
        }
        _ => None,
    };
    let Some(cancelled) = cancelled else {
        transaction.rollback().await?;
        return Ok(match super::tasks::find(db, team_id, id).await? {
            Some(task) if task.state == "cancelled" => CancelOutcome::Cancelled(task),
            Some(task) => CancelOutcome::AlreadyFinished(task),
            None => CancelOutcome::NotFound,
        });
    };
    let (previous_state, previous_lease_id) = previous.unwrap_or_default();
    let task = cancelled;
    if let Some(lease_id) = previous_lease_id {
        sqlx::query(
            "UPDATE task_attempts SET finished_at = now(), outcome = 'cancelled'
             WHERE lease_id = $1 AND outcome IS NULL",
        )
        .bind(lease_id)
        .execute(&mut *transaction)
        .await?;
    }
    if matches!(previous_state.as_str(), "leased" | "running") {
        super::usage::lease_ended(&mut transaction, &[(task.team_id, task.pool.clone())]).await?;
    }
    if task.workflow_id.is_some() {
        // Dependents can never run now.
        stop_dependents(&mut transaction, task.id).await?;
    }
    transaction.commit().await?;
    Ok(CancelOutcome::Cancelled(task))
}

/// Queues the pending dependents of `task_id` whose dependencies all succeeded, with their
/// dependencies' results.
pub async fn release_dependents(
    connection: &mut PgConnection,
    task_id: Uuid,
) -> Result<(), sqlx::Error> {
    // Lock the dependents first: two dependencies finishing at once then check one after the
    // other, and the second sees the first one's success.
    sqlx::query(
        "SELECT id FROM tasks
         WHERE id IN (SELECT task_id FROM task_dependencies WHERE depends_on = $1)
         ORDER BY id FOR UPDATE",
    )
    .bind(task_id)
    .execute(&mut *connection)
    .await?;
    sqlx::query(
        "UPDATE tasks t
         SET state = 'queued', run_at = now(), updated_at = now(),
             dependency_results = coalesce((
                 SELECT jsonb_object_agg(d.workflow_node, coalesce(d.result, 'null'::jsonb))
                 FROM task_dependencies td JOIN tasks d ON d.id = td.depends_on
                 WHERE td.task_id = t.id), '{}'::jsonb)
         WHERE t.state = 'pending'
           AND t.id IN (SELECT task_id FROM task_dependencies WHERE depends_on = $1)
           AND NOT EXISTS (SELECT 1 FROM task_dependencies td JOIN tasks d ON d.id = td.depends_on
                           WHERE td.task_id = t.id AND d.state <> 'succeeded')",
    )
    .bind(task_id)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// A workflow task will never succeed (dead or cancelled): its transitive dependents can never
/// run and are cancelled; under `fail_fast` every task of the workflow that has not started is
/// cancelled too. Returns the number of tasks cancelled.
pub async fn stop_dependents(
    connection: &mut PgConnection,
    task_id: Uuid,
) -> Result<u64, sqlx::Error> {
    let cancelled = sqlx::query(
        "WITH RECURSIVE dependents(id) AS (
             SELECT task_id FROM task_dependencies WHERE depends_on = $1
             UNION
             SELECT td.task_id FROM task_dependencies td JOIN dependents d ON td.depends_on = d.id
         ),
         failed AS (SELECT workflow_id FROM tasks WHERE id = $1)
         UPDATE tasks t
         SET state = 'cancelled', finished_at = now(), updated_at = now(),
             last_error = 'cancelled: a workflow dependency failed or was cancelled'
         WHERE t.state IN ('pending', 'queued')
           AND (t.id IN (SELECT id FROM dependents)
                OR t.workflow_id = (SELECT f.workflow_id FROM failed f JOIN workflows w
                                    ON w.id = f.workflow_id AND w.failure_policy = 'fail_fast'))",
    )
    .bind(task_id)
    .execute(&mut *connection)
    .await?;
    Ok(cancelled.rows_affected())
}

/// Queues dead tasks of `team_id` again with fresh attempts. Returns the tasks redriven.
pub async fn redrive(
    db: &PgPool,
    team_id: Uuid,
    task_ids: &[Uuid],
) -> Result<Vec<TaskRow>, sqlx::Error> {
    sqlx::query_as::<_, TaskRow>(concat!(
        "UPDATE tasks
         SET state = 'queued', attempts = 0, lease_losses = 0, run_at = now(),
             finished_at = NULL, updated_at = now()
         WHERE team_id = $1 AND id = ANY($2) AND state = 'dead'
         RETURNING ",
        task_columns!()
    ))
    .bind(team_id)
    .bind(task_ids)
    .fetch_all(db)
    .await
}

/// One recorded attempt of a task.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttemptRow {
    pub lease_id: Uuid,
    pub attempt: i32,
    pub fencing_token: i64,
    pub worker: Option<String>,
    pub leased_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: Option<String>,
    pub error: Option<String>,
    pub next_run_at: Option<DateTime<Utc>>,
}

/// The attempts of a task of `team_id`, oldest first.
pub async fn attempts(
    db: &PgPool,
    team_id: Uuid,
    task_id: Uuid,
) -> Result<Vec<AttemptRow>, sqlx::Error> {
    // The ended attempts, and from the task its live lease or the lease it succeeded with (no
    // row is written for a success). A lease a server of the previous version claimed has a row
    // from its start: its success is read from the task too.
    sqlx::query_as::<_, AttemptRow>(
        "SELECT a.lease_id, a.attempt, a.fencing_token, a.worker, a.leased_at,
                CASE WHEN a.outcome IS NULL AND succeeded THEN t.finished_at
                     ELSE a.finished_at END,
                CASE WHEN a.outcome IS NULL AND succeeded THEN 'succeeded'
                     ELSE a.outcome END,
                a.error, a.next_run_at
         FROM task_attempts a
         JOIN tasks t ON t.id = a.task_id
         CROSS JOIN LATERAL (SELECT t.state = 'succeeded' AND t.lease_id = a.lease_id) s(succeeded)
         WHERE a.task_id = $1 AND t.team_id = $2
         UNION ALL
         SELECT t.lease_id, t.attempts, t.fencing_token, t.lease_owner, t.leased_at,
                CASE WHEN t.state = 'succeeded' THEN t.finished_at END,
                CASE WHEN t.state = 'succeeded' THEN 'succeeded' END, NULL, NULL
         FROM tasks t
         WHERE t.id = $1 AND t.team_id = $2 AND t.lease_id IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM task_attempts a WHERE a.lease_id = t.lease_id)
         ORDER BY leased_at, attempt",
    )
    .bind(task_id)
    .bind(team_id)
    .fetch_all(db)
    .await
}
