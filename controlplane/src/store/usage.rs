//! The counters of leased tasks: per team and pool (`lease_stripes`, what fair share ranks by:
//! the sum of 16 stripes, so that claims and reports of one team mostly change different rows)
//! and, for a team with a quota, per team (`team_usage.active`, all pools, what the quota is
//! checked against).
//!
//! They change in the transaction that changes a lease: a claim raises them (upserts in team
//! order, `super::leases::claim`), and every end of a lease (report, release, expiry,
//! cancellation) lowers them with [`lease_ended`] after the task rows changed. Quota counters are
//! locked in team order before any stripe, and stripes in team and pool order, so claims,
//! reports and [`reconcile`] never wait for each other in a cycle.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Stripes of the fair-share counters (`lease_stripes`); each claim and report picks one.
pub const STRIPES: i16 = 16;

/// A stripe of the fair-share counters, at random: concurrent claims and reports of one team
/// mostly change different rows.
pub fn random_stripe() -> i16 {
    i16::try_from(Uuid::new_v4().as_u128() % STRIPES as u128).unwrap_or(0)
}

/// Lowers the counters for leases that ended: one `(team, pool)` per ended lease. Call it last
/// before the commit: quota counters stay locked until then.
pub async fn lease_ended(
    connection: &mut PgConnection,
    ended: &[(Uuid, String)],
) -> Result<(), sqlx::Error> {
    if ended.is_empty() {
        return Ok(());
    }
    let teams: Vec<Uuid> = ended.iter().map(|(team, _)| *team).collect();
    let pools: Vec<&str> = ended.iter().map(|(_, pool)| pool.as_str()).collect();
    if teams.iter().any(|team| *team != teams[0]) {
        // Several teams: lock the quota counters among them first, in team order, in a
        // statement of its own (the update that follows sees the rows as locked, a fresh
        // snapshot), so that two such batches never wait for each other in a cycle.
        sqlx::query(
            "SELECT u.team_id FROM team_usage u JOIN teams t ON t.id = u.team_id
             WHERE u.team_id = ANY($1) AND t.max_concurrent_tasks IS NOT NULL
             ORDER BY u.team_id FOR NO KEY UPDATE OF u",
        )
        .bind(&teams)
        .execute(&mut *connection)
        .await?;
    }
    // One statement: the quota counters of teams with a quota, then one stripe of the
    // fair-share counters (the order claims change them in; a stripe may go below zero).
    sqlx::query(
        "WITH ended AS (
             SELECT team_id, pool, count(*)::int AS n
             FROM unnest($1::uuid[], $2::text[]) AS e(team_id, pool)
             GROUP BY team_id, pool
         ),
         lowered AS (
             UPDATE team_usage u SET active = greatest(u.active - e.n, 0)
             FROM (SELECT e.team_id, sum(e.n)::int AS n FROM ended e
                   JOIN teams t ON t.id = e.team_id AND t.max_concurrent_tasks IS NOT NULL
                   GROUP BY e.team_id) e
             WHERE u.team_id = e.team_id
             RETURNING u.team_id
         )
         INSERT INTO lease_stripes AS s (team_id, pool, stripe, active)
         SELECT e.team_id, e.pool, $3, -e.n
         FROM ended e
         -- An init plan: every quota counter is lowered before the first stripe is touched.
         WHERE (SELECT count(*) FROM lowered) >= 0
         ORDER BY e.team_id, e.pool
         ON CONFLICT (team_id, pool, stripe) DO UPDATE SET active = s.active + EXCLUDED.active",
    )
    .bind(&teams)
    .bind(&pools)
    .bind(random_stripe())
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Sets every counter to the number of leased tasks it stands for: the quota counter of each
/// team with a quota (zero for the others) and, per team and pool, the stripes of the
/// fair-share counter (stripe 0 the count, the others zero). The quota counters are locked
/// first and `lease_stripes` is locked against writes (for milliseconds), so no lease of any
/// team changes meanwhile and the counts, read afterwards, are exact. Counters drift only if
/// something changed leases without them (a server of an older version during a rolling
/// upgrade, a manual fix in SQL); the reaper runs this every minute. Returns how many counters
/// were wrong.
pub async fn reconcile(db: &PgPool) -> Result<u64, sqlx::Error> {
    sqlx::query("INSERT INTO team_usage (team_id) SELECT id FROM teams ON CONFLICT DO NOTHING")
        .execute(db)
        .await?;
    let mut transaction = db.begin().await?;
    // Claims of teams with a quota lock their counter before the stripes; taking them in the
    // same order never waits in a cycle.
    let locked: Vec<Uuid> =
        sqlx::query_scalar("SELECT team_id FROM team_usage ORDER BY team_id FOR NO KEY UPDATE")
            .fetch_all(&mut *transaction)
            .await?;
    sqlx::query("LOCK TABLE lease_stripes IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *transaction)
        .await?;
    // New statements, new snapshots: every lease change committed before the locks, none after.
    let teams = sqlx::query(
        "UPDATE team_usage u SET active = s.n
         FROM (SELECT x.team_id,
                      CASE WHEN t.max_concurrent_tasks IS NULL THEN 0 ELSE
                          (SELECT count(*)::int FROM tasks a
                           WHERE a.team_id = x.team_id AND a.state IN ('leased', 'running'))
                      END AS n
               FROM unnest($1::uuid[]) AS x(team_id) JOIN teams t ON t.id = x.team_id) s
         WHERE u.team_id = s.team_id AND u.active <> s.n",
    )
    .bind(&locked)
    .execute(&mut *transaction)
    .await?
    .rows_affected();
    let pools = sqlx::query(
        "WITH truth AS (
             SELECT team_id, pool, count(*)::int AS n FROM tasks
             WHERE state IN ('leased', 'running') GROUP BY team_id, pool
         ),
         counted AS (
             SELECT team_id, pool, sum(active)::int AS n, count(*) AS stripes
             FROM lease_stripes GROUP BY team_id, pool
         ),
         wrong AS (
             SELECT coalesce(t.team_id, c.team_id) AS team_id, coalesce(t.pool, c.pool) AS pool,
                    coalesce(t.n, 0) AS n
             FROM truth t FULL JOIN counted c ON c.team_id = t.team_id AND c.pool = t.pool
             WHERE coalesce(t.n, 0) <> coalesce(c.n, 0)
                OR (c.stripes > 1 AND coalesce(t.n, 0) = 0)
         ),
         cleared AS (
             DELETE FROM lease_stripes s USING wrong w
             WHERE s.team_id = w.team_id AND s.pool = w.pool AND s.stripe <> 0
         )
         INSERT INTO lease_stripes AS s (team_id, pool, stripe, active, last_leased_at)
         SELECT team_id, pool, 0, n, now() FROM wrong
         WHERE EXISTS (SELECT 1 FROM teams WHERE id = wrong.team_id)
         ON CONFLICT (team_id, pool, stripe) DO UPDATE SET active = EXCLUDED.active",
    )
    .execute(&mut *transaction)
    .await?
    .rows_affected();
    transaction.commit().await?;
    Ok(teams + pools)
}

/// Sets a team's quota counter to its leased tasks, in the caller's transaction, which changes
/// the team's quota: claims that start after the commit check the new quota against an exact
/// count (the counter is not kept while a team has no quota). The counter is locked first and
/// the tasks counted in a later statement, so claims that held it are counted.
pub async fn recount_team(connection: &mut PgConnection, team_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO team_usage (team_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(team_id)
        .execute(&mut *connection)
        .await?;
    sqlx::query("SELECT 1 FROM team_usage WHERE team_id = $1 FOR NO KEY UPDATE")
        .bind(team_id)
        .execute(&mut *connection)
        .await?;
    sqlx::query(
        "UPDATE team_usage SET active = (SELECT count(*)::int FROM tasks
                                         WHERE team_id = $1 AND state IN ('leased', 'running'))
         WHERE team_id = $1",
    )
    .bind(team_id)
    .execute(&mut *connection)
    .await?;
    Ok(())
}
