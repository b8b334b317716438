#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Server time of the company mapping grid with many companies and integrations.
//!
//!   cargo bench -p mspbridge-store --bench mapping_grid -- --db sqlite --companies 5000 --integrations 9
//!   TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench -p mspbridge-store --bench mapping_grid -- --db postgres
//!
//! Every portal company is linked to each integration except one in ten per integration
//! (so "Missing values" has rows to find). Prints one Markdown row per query: the median
//! and the slowest of `--rounds` calls of `MappingStore::mapping_page` (50 rows).

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::Utc;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::integration::{ConnectionOutcome, TestReport};
use mspbridge_store::mapping::{MappingQuery, Missing};
use mspbridge_store::{NewIntegration, test_support};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

/// Runs `sql` statements (literal values only: ids and generated names) on the bench's
/// own connection to the same database.
async fn exec(url: &str, postgres: bool, statements: &[String]) {
    if postgres {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .unwrap();
        for s in statements {
            sqlx::raw_sql(sqlx::AssertSqlSafe(s.clone()))
                .execute(&pool)
                .await
                .unwrap();
        }
    } else {
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .unwrap();
        for s in statements {
            sqlx::raw_sql(sqlx::AssertSqlSafe(s.clone()))
                .execute(&pool)
                .await
                .unwrap();
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let db_kind = arg("--db", "sqlite");
    let n: i64 = arg("--companies", "5000").parse().unwrap();
    let k: usize = arg("--integrations", "9").parse().unwrap();
    let rounds: usize = arg("--rounds", "20").parse().unwrap();
    let postgres = db_kind == "postgres";
    let db = if postgres {
        test_support::postgres()
            .await
            .unwrap()
            .expect("set TEST_DATABASE_URL for --db postgres")
    } else {
        test_support::sqlite().await.unwrap()
    };
    let store = db.store.clone();
    let vault = mspbridge_vault::Vault::new(&[3u8; 32]);
    let tenant = store.create_tenant("Bench MSP", Utc::now()).await.unwrap();
    let mut integrations = Vec::new();
    for i in 0..k {
        let kind = ProviderKind::ALL[i % ProviderKind::ALL.len()];
        let it = store
            .create_integration(
                tenant.id,
                NewIntegration {
                    provider: kind,
                    nickname: Some(format!("Integration {i}")),
                    settings: serde_json::json!({}),
                    secrets: BTreeMap::new(),
                    report: TestReport {
                        connection: ConnectionOutcome::Ok,
                        areas: vec![],
                        tested_at: Utc::now(),
                        details: vec![],
                    },
                },
                &vault,
                Utc::now(),
            )
            .await
            .unwrap();
        integrations.push(it.id.0);
    }
    let now = "'2026-11-24T00:00:00Z'";
    let words = [
        "Oak", "Summit", "Harbor", "Cedar", "Golden", "Pioneer", "Maple", "Iron",
    ];
    let trades = [
        "Dental",
        "Logistics",
        "Law Group",
        "Motors",
        "Realty",
        "Bakery",
    ];
    let mut sql = Vec::new();
    let t = tenant.id.0;
    // Portal companies with ids above anything the store made.
    for chunk in (1..=n).collect::<Vec<_>>().chunks(500) {
        let rows: Vec<String> = chunk
            .iter()
            .map(|i| {
                let name = format!(
                    "{} {} {i}",
                    words[(*i as usize) % words.len()],
                    trades[(*i as usize / 8) % trades.len()]
                );
                format!("({}, {t}, '{name}', TRUE, {now}, {now})", 1_000_000 + i)
            })
            .collect();
        sql.push(format!(
            "INSERT INTO companies (id, tenant_id, name, active, created_at, updated_at) VALUES {}",
            rows.join(", ")
        ));
    }
    for (j, integration) in integrations.iter().enumerate() {
        for chunk in (1..=n).collect::<Vec<_>>().chunks(500) {
            let listed: Vec<String> = chunk
                .iter()
                .map(|i| {
                    format!(
                        "({t}, {integration}, 'x{i}', 'Company {i} of {j}', TRUE, 'auto', {now})"
                    )
                })
                .collect();
            sql.push(format!(
                "INSERT INTO integration_companies (tenant_id, integration_id, external_id, name, active, import_state, updated_at) VALUES {}",
                listed.join(", ")
            ));
            let links: Vec<String> = chunk
                .iter()
                .filter(|i| (**i + j as i64) % 10 != 0)
                .map(|i| {
                    format!(
                        "({t}, {integration}, 'company', {}, 'x{i}', '', {now}, {now})",
                        1_000_000 + i
                    )
                })
                .collect();
            sql.push(format!(
                "INSERT INTO external_links (tenant_id, integration_id, record_kind, local_id, external_id, content_hash, created_at, updated_at) VALUES {}",
                links.join(", ")
            ));
        }
    }
    sql.push("ANALYZE".into());
    exec(&db.url, postgres, &sql).await;

    println!("| db | companies × integrations | query | rows | total | median ms | slowest ms |");
    println!("|---|---|---|---|---|---|---|");
    let queries: Vec<(&str, MappingQuery)> = vec![
        ("first page", q("", Missing::No, 0)),
        ("page 50 (offset 2,450)", q("", Missing::No, 2_450)),
        ("search \"harbor\"", q("harbor", Missing::No, 0)),
        ("Missing values: any", q("", Missing::Any, 0)),
        (
            "Missing values: one integration",
            q(
                "",
                Missing::Integration(mspbridge_domain::IntegrationId(integrations[0])),
                0,
            ),
        ),
    ];
    for (label, query) in queries {
        let mut times = Vec::with_capacity(rounds);
        let mut last = None;
        for _ in 0..rounds {
            let started = Instant::now();
            let page = store.mapping_page(tenant.id, &query).await.unwrap();
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            last = Some(page);
        }
        times.sort_by(f64::total_cmp);
        let page = last.unwrap();
        println!(
            "| {db_kind} | {n} × {k} | {label} | {} | {} | {:.1} | {:.1} |",
            page.rows.len(),
            page.total,
            times[times.len() / 2],
            times[times.len() - 1]
        );
    }
}

fn q(search: &str, missing: Missing, offset: i64) -> MappingQuery {
    MappingQuery {
        search: search.into(),
        missing,
        offset,
        limit: 50,
    }
}
