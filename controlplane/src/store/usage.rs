//! The counters of leased tasks: per team (`team_usage.active`, all pools, what quotas are
//! checked against) and per team and pool (`team_pool_usage.active`, what fair share ranks by).
//!
//! They change in the transaction that changes a lease: a claim raises them (upserts in team
//! order, `super::leases::claim`), and every end of a lease (report, release, expiry,
//! cancellation) lowers them with [`lease_ended`] after the task rows changed. Team counters are
//! locked in team order, and a team's pool counters only under its team counter, so claims,
//! reports and [`reconcile`] never wait for each other in a cycle.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Lowers the counters for leases that ended: one `(team, pool)` per ended lease.
pub async fn lease_ended(
    connection: &mut PgConnection,
    ended: &[(Uuid, String)],
) -> Result<(), sqlx::Error> {
    if ended.is_empty() {
        return Ok(());
    }
    let teams: Vec<Uuid> = ended.iter().map(|(team, _)| *team).collect();
    let pools: Vec<&str> = ended.iter().map(|(_, pool)| pool.as_str()).collect();
    // Lock first, in team order, in a statement of its own: the updates that follow see the
    // rows as locked (a fresh snapshot), never an older version.
    sqlx::query(
        "SELECT team_id FROM team_usage WHERE team_id = ANY($1)
         ORDER BY team_id FOR NO KEY UPDATE",
    )
    .bind(&teams)
    .execute(&mut *connection)
    .await?;
    sqlx::query(
        "UPDATE team_usage u SET active = greatest(u.active - e.n, 0)
         FROM (SELECT team_id, count(*)::int AS n FROM unnest($1::uuid[]) AS e(team_id)
               GROUP BY team_id) e
         WHERE u.team_id = e.team_id",
    )
    .bind(&teams)
    .execute(&mut *connection)
    .await?;
    sqlx::query(
        "UPDATE team_pool_usage u SET active = greatest(u.active - e.n, 0)
         FROM (SELECT team_id, pool, count(*)::int AS n
               FROM unnest($1::uuid[], $2::text[]) AS e(team_id, pool)
               GROUP BY team_id, pool) e
         WHERE u.team_id = e.team_id AND u.pool = e.pool",
    )
    .bind(&teams)
    .bind(&pools)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Sets every counter to the number of leased tasks it stands for, under every team counter's
/// row lock (so no lease of those teams changes meanwhile). Counters drift only if something
/// changed leases without them (a server of an older version during a rolling upgrade, a
/// manual fix in SQL); the reaper runs this now and then. Returns how many counters were wrong.
pub async fn reconcile(db: &PgPool) -> Result<u64, sqlx::Error> {
    sqlx::query("INSERT INTO team_usage (team_id) SELECT id FROM teams ON CONFLICT DO NOTHING")
        .execute(db)
        .await?;
    let mut transaction = db.begin().await?;
    let locked: Vec<Uuid> =
        sqlx::query_scalar("SELECT team_id FROM team_usage ORDER BY team_id FOR NO KEY UPDATE")
            .fetch_all(&mut *transaction)
            .await?;
    // New statements, new snapshots: every lease change of these teams committed before the
    // locks, none after.
    let teams = sqlx::query(
        "UPDATE team_usage u SET active = s.n
         FROM (SELECT x.team_id,
                      (SELECT count(*)::int FROM tasks a
                       WHERE a.team_id = x.team_id AND a.state IN ('leased', 'running')) AS n
               FROM unnest($1::uuid[]) AS x(team_id)) s
         WHERE u.team_id = s.team_id AND u.active <> s.n",
    )
    .bind(&locked)
    .execute(&mut *transaction)
    .await?
    .rows_affected();
    let pools = sqlx::query(
        "UPDATE team_pool_usage u SET active = s.n
         FROM (SELECT p.team_id, p.pool,
                      (SELECT count(*)::int FROM tasks a
                       WHERE a.team_id = p.team_id AND a.pool = p.pool
                         AND a.state IN ('leased', 'running')) AS n
               FROM team_pool_usage p WHERE p.team_id = ANY($1)) s
         WHERE u.team_id = s.team_id AND u.pool = s.pool AND u.active <> s.n",
    )
    .bind(&locked)
    .execute(&mut *transaction)
    .await?
    .rows_affected();
    let missing = sqlx::query(
        "INSERT INTO team_pool_usage (team_id, pool, last_leased_at, active)
         SELECT team_id, pool, now(), count(*)::int FROM tasks
         WHERE state IN ('leased', 'running') AND team_id = ANY($1)
         GROUP BY team_id, pool
         ON CONFLICT (team_id, pool) DO NOTHING",
    )
    .bind(&locked)
    .execute(&mut *transaction)
    .await?
    .rows_affected();
    transaction.commit().await?;
    Ok(teams + pools + missing)
}
