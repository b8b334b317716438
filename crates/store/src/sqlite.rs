//! The embedded default backend: one SQLite file in WAL mode with foreign keys on.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::{Result as StoreResult, StoreError};

pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
}

impl SqliteStore {
    /// Accepts `sqlite://path`, `sqlite:path` or a plain file path; the file is created if missing.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        if path.is_empty() {
            return Err(StoreError::BadUrl(
                "the SQLite database path is empty".into(),
            ));
        }
        if path.contains("://") {
            return Err(StoreError::BadUrl(format!(
                "'{url}' is neither a postgres:// URL nor a SQLite file path"
            )));
        }
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
            .map_err(|e| StoreError::BadUrl(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await?;
        Ok(Self { pool })
    }

    pub async fn migrate(&self) -> StoreResult<()> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    /// A write transaction. `BEGIN IMMEDIATE` takes SQLite's write lock at once (waiting
    /// for it under the busy timeout): a deferred transaction that read first could not
    /// upgrade after another connection committed (SQLITE_BUSY_SNAPSHOT, "database is
    /// locked" at once, no waiting), as when a webhook lands during an outbox drain.
    pub(crate) async fn begin_write(
        &self,
    ) -> StoreResult<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// The journal mode and foreign-key setting in force (for tests and diagnostics).
    pub async fn pragmas(&self) -> StoreResult<(String, bool)> {
        let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
            .fetch_one(&self.pool)
            .await?;
        let (fk,): (i64,) = sqlx::query_as("PRAGMA foreign_keys")
            .fetch_one(&self.pool)
            .await?;
        Ok((mode, fk == 1))
    }
}

impl_store!(SqliteStore, "sqlite");
crate::mapping::impl_mapping_store!(SqliteStore);
crate::outbox::impl_outbox_store!(SqliteStore);
crate::rmm::impl_rmm_store!(SqliteStore);
crate::m365::impl_m365_store!(SqliteStore);
crate::billing::impl_billing_store!(SqliteStore);
crate::training::impl_training_store!(SqliteStore);

/// SQLite has one writer at a time: a claim needs no row locks.
const SKIP_LOCKED: &str = "";

type Db = sqlx::Sqlite;

use crate::sqlite_batch::*;

/// Ids for `n` new rows of `table`. The caller's transaction has already written (the
/// lease fence), so it holds SQLite's single write lock and nobody else can take these.
async fn alloc_ids(
    tx: &mut sqlx::Transaction<'_, Db>,
    table: &'static str,
    n: usize,
) -> crate::Result<Vec<i64>> {
    if n == 0 {
        return Ok(vec![]);
    }
    let (max,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT COALESCE(MAX(id), 0) FROM {table}"
    )))
    .fetch_one(&mut **tx)
    .await?;
    Ok((1..=n as i64).map(|i| max + i).collect())
}

impl_sync_store!(
    SqliteStore,
    "UPDATE sync_schedule SET lease_owner = $1, lease_until = $3 \
     WHERE (lease_until IS NULL OR lease_until < $2) AND integration_id = ( \
       SELECT s.integration_id FROM sync_schedule s JOIN integrations i ON i.id = s.integration_id \
       WHERE s.next_run_at <= $2 AND (s.lease_until IS NULL OR s.lease_until < $2) AND s.paused_reason IS NULL \
         AND i.status <> 'disconnected' ORDER BY s.next_run_at LIMIT 1) \
     RETURNING integration_id, tenant_id, pending_trigger",
    // A write takes SQLite's database lock anyway; one page transaction at a time.
    "UPDATE sync_schedule SET lease_owner = lease_owner WHERE integration_id = $1 AND lease_owner = $2 RETURNING 1",
    1,
    // Runs ANALYZE where SQLite's own heuristics say it would help.
    "PRAGMA optimize"
);
