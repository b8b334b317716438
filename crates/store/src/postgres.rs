//! The production backend. Several mspbridge processes may share one database.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::{Result as StoreResult, StoreError};

pub struct PgStore {
    pub(crate) pool: PgPool,
}

impl PgStore {
    /// A write transaction (row locks are taken as rows are touched).
    pub(crate) async fn begin_write(
        &self,
    ) -> StoreResult<sqlx::Transaction<'static, sqlx::Postgres>> {
        Ok(self.pool.begin().await?)
    }

    pub async fn connect(url: &str) -> StoreResult<Self> {
        let opts =
            PgConnectOptions::from_str(url).map_err(|e| StoreError::BadUrl(e.to_string()))?;
        Self::connect_with(opts).await
    }

    pub async fn connect_with(opts: PgConnectOptions) -> StoreResult<Self> {
        // An import grows `external_links` from empty to tens of thousands of rows in seconds.
        // A plan cached while the table was small (a sequential scan) would stay in use as it
        // grows; planning each execution sees the table's current size and uses the indexes.
        let opts = opts.options([("plan_cache_mode", "force_custom_plan")]);
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        Ok(Self { pool })
    }

    /// Applies the embedded migrations. sqlx's migrator takes a PostgreSQL advisory
    /// lock for the duration, so processes starting together apply them exactly once.
    pub async fn migrate(&self) -> StoreResult<()> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }
}

impl_store!(PgStore, "postgres");
crate::mapping::impl_mapping_store!(PgStore);
crate::outbox::impl_outbox_store!(PgStore);
crate::rmm::impl_rmm_store!(PgStore);
crate::m365::impl_m365_store!(PgStore);
crate::billing::impl_billing_store!(PgStore);
crate::training::impl_training_store!(PgStore);

/// Workers claiming outbox rows side by side skip the rows another one is claiming.
const SKIP_LOCKED: &str = " FOR UPDATE SKIP LOCKED";

type Db = sqlx::Postgres;

use crate::postgres_batch::*;

/// Ids for `n` new rows of `table`, drawn from its identity sequence (safe with any
/// number of concurrent writers).
async fn alloc_ids(
    tx: &mut sqlx::Transaction<'_, Db>,
    table: &'static str,
    n: usize,
) -> crate::Result<Vec<i64>> {
    if n == 0 {
        return Ok(vec![]);
    }
    let rows: Vec<(i64,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT nextval(pg_get_serial_sequence('{table}', 'id')) FROM generate_series(1, $1)"
    )))
    .bind(n as i64)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

// SKIP LOCKED lets several workers claim different integrations at once without waiting.
impl_sync_store!(
    PgStore,
    "UPDATE sync_schedule SET lease_owner = $1, lease_until = $3 \
     WHERE (lease_until IS NULL OR lease_until < $2) AND integration_id = ( \
       SELECT s.integration_id FROM sync_schedule s JOIN integrations i ON i.id = s.integration_id \
       WHERE s.next_run_at <= $2 AND (s.lease_until IS NULL OR s.lease_until < $2) AND s.paused_reason IS NULL \
         AND i.status <> 'disconnected' ORDER BY s.next_run_at LIMIT 1 FOR UPDATE OF s SKIP LOCKED) \
     RETURNING integration_id, tenant_id, pending_trigger",
    // A shared lock: page transactions of one run go side by side, while a claim that
    // would take the lease over waits for them and then finds them fenced out.
    "SELECT 1::BIGINT FROM sync_schedule WHERE integration_id = $1 AND lease_owner = $2 FOR SHARE",
    2,
    "ANALYZE companies, company_users, staff_users, external_links"
);
