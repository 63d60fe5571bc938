//! Leader election through a Postgres session-level advisory lock.
//!
//! Every `controlplane serve` replica runs the autoscaler loop; only the one holding the lock
//! acts. The lock is taken with `pg_try_advisory_lock` on a dedicated connection (not one of the
//! pool's, which are shared and recycled) and is held as long as that session lives: it is
//! never unlocked explicitly. Leadership ends when the connection fails (a query on it errors:
//! the server ended the session, so the lock is free for another replica) or when the process
//! stops (dropping the connection ends the session). The leader reads the backlog through this
//! same connection right before scaling, so a leader whose session is gone cannot act on it.

use sqlx::Connection;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};

/// The advisory lock key of the pool autoscaler (advisory locks are scoped to one database).
/// Arbitrary but fixed: the ASCII of "stksmscl".
pub const AUTOSCALER_LOCK_KEY: i64 = 0x73_74_6b_73_6d_73_63_6c;

/// How long a liveness check or a polite close of the leader session may take.
const SESSION_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// One replica's side of the election.
pub struct Leadership {
    options: PgConnectOptions,
    connection: Option<PgConnection>,
    leading: bool,
}

impl Leadership {
    /// `identity` names this replica's session in `pg_stat_activity` (`application_name`).
    pub fn new(options: &PgConnectOptions, identity: &str) -> Self {
        Self {
            options: options
                .clone()
                .application_name(&format!("stacksmith-autoscaler/{identity}")),
            connection: None,
            leading: false,
        }
    }

    pub fn is_leading(&self) -> bool {
        self.leading
    }

    /// Takes the lock when this replica does not hold it and it is free. Returns whether this
    /// replica leads. A leader is not re-checked here: its next query on [`Self::connection`]
    /// is the check.
    pub async fn try_lead(&mut self) -> Result<bool, sqlx::Error> {
        if self.leading {
            return Ok(true);
        }
        if self.connection.is_none() {
            self.connection = Some(PgConnection::connect_with(&self.options).await?);
        }
        let connection = self.connection.as_mut().expect("connected just above");
        match sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
            .bind(AUTOSCALER_LOCK_KEY)
            .fetch_one(&mut *connection)
            .await
        {
            Ok(acquired) => {
                self.leading = acquired;
                Ok(acquired)
            }
            Err(error) => {
                self.connection = None;
                Err(error)
            }
        }
    }

    /// The session holding the lock, while leading.
    pub fn connection(&mut self) -> Option<&mut PgConnection> {
        if self.leading {
            self.connection.as_mut()
        } else {
            None
        }
    }

    /// Whether the session still answers (a query failing with a server error, such as a
    /// missing table, leaves it alive and the lock held).
    pub async fn session_alive(&mut self) -> bool {
        match self.connection.as_mut() {
            Some(connection) => matches!(
                tokio::time::timeout(SESSION_CHECK_TIMEOUT, connection.ping()).await,
                Ok(Ok(()))
            ),
            None => false,
        }
    }

    /// Gives leadership up by ending the session (the server releases the lock with it). Called
    /// when a query on the session failed, and at shutdown.
    pub async fn resign(&mut self) {
        self.leading = false;
        if let Some(connection) = self.connection.take() {
            // A failed session cannot be closed politely; dropping it closes the socket.
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(2), connection.close()).await;
        }
    }
}
