//! Throwaway databases for tests: a temporary SQLite file always, and a fresh schema
//! in the PostgreSQL named by `TEST_DATABASE_URL` when that is set.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use crate::{Result, Store, StoreError};

/// A test database that is removed when dropped (best effort).
pub struct TestDb {
    pub store: Arc<dyn Store>,
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    File(PathBuf),
    Schema { admin_url: String, schema: String },
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::File(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
            Cleanup::Schema { admin_url, schema } => {
                let (admin_url, schema) = (admin_url.clone(), schema.clone());
                // Dropping a schema needs async IO; do it on a helper thread with its own runtime.
                let _ = std::thread::spawn(move || {
                    let rt = tokio_runtime();
                    if let Some(rt) = rt {
                        rt.block_on(async {
                            if let Ok(mut c) = PgConnection::connect(&admin_url).await {
                                let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
                                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                                    .execute(&mut c)
                                    .await;
                            }
                        });
                    }
                })
                .join();
            }
        }
    }
}

fn tokio_runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()
}

fn unique_suffix() -> String {
    let mut b = [0u8; 8];
    // A failing system RNG would only make a name collision possible, never wrong data.
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A fresh, migrated SQLite database in the system temp directory.
pub async fn sqlite() -> Result<TestDb> {
    let path = std::env::temp_dir().join(format!(
        "mspbridge-test-{}-{}.db",
        std::process::id(),
        unique_suffix()
    ));
    let url = format!("sqlite://{}", path.display());
    let store = crate::open(&url).await?;
    Ok(TestDb {
        store,
        url,
        cleanup: Cleanup::File(path),
    })
}

/// A fresh, migrated schema in `TEST_DATABASE_URL`, or `None` when it is not set.
pub async fn postgres() -> Result<Option<TestDb>> {
    let Ok(admin_url) = std::env::var("TEST_DATABASE_URL") else {
        return Ok(None);
    };
    let schema = format!("t_{}", unique_suffix());
    let mut admin = PgConnection::connect(&admin_url).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    let opts = PgConnectOptions::from_str(&admin_url)
        .map_err(|e| StoreError::BadUrl(e.to_string()))?
        .options([("search_path", schema.as_str())]);
    let store = crate::postgres::PgStore::connect_with(opts).await?;
    store.migrate().await?;
    let url = schema_url(&admin_url, &schema);
    Ok(Some(TestDb {
        store: Arc::new(store),
        url,
        cleanup: Cleanup::Schema { admin_url, schema },
    }))
}

/// `admin_url` with `options=-c search_path=<schema>` added, so that another process
/// (e.g. a spawned `mspbridge serve`) lands in the same schema.
pub fn schema_url(admin_url: &str, schema: &str) -> String {
    let sep = if admin_url.contains('?') { '&' } else { '?' };
    format!("{admin_url}{sep}options=-c%20search_path%3D{schema}")
}

/// Every backend available to this test run: SQLite always, PostgreSQL when configured.
pub async fn all() -> Result<Vec<TestDb>> {
    let mut dbs = vec![sqlite().await?];
    if let Some(pg) = postgres().await? {
        dbs.push(pg);
    }
    Ok(dbs)
}
