#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Microsoft 365 tenant sync benchmark against the sandbox (in a child process, on
//! loopback), which answers every request after `--latency` ms (default 100, about what
//! Graph takes) and keeps Microsoft's Secure Score limits per tenant (4 in flight, 150 a
//! minute).
//!
//!   cargo bench -p mspbridge-sync --bench m365 -- --db sqlite
//!   TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench -p mspbridge-sync --bench m365 -- --db postgres
//!
//! Data (`--tenants`, `--users`, `--skus`; default 500 / 300 / 20) with 90 days of Secure
//! Score and the control profiles per tenant, every tenant consented and connected to its
//! company. Scenarios: (a) the first sync, (b) a re-sync with nothing changed. Tenants are
//! synced `--concurrency` at once (default 16); each tenant's requests go one after the
//! other, so the bound is ⌈requests / concurrency⌉ × latency (Secure Score's 150 a minute
//! per tenant never binds at two requests a tenant). Prints one Markdown table row per
//! scenario and exits 1 naming any target missed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::integration::*;
use mspbridge_domain::sync::*;
use mspbridge_domain::*;
use mspbridge_providers::microsoft_365::client::GraphSettings;
use mspbridge_providers::microsoft_365::sandbox::{self as m365, M365Sandbox};
use mspbridge_providers::{OutboundPolicy, ProviderConfig, Providers};
use mspbridge_store::*;
use mspbridge_sync::{Engine, EngineConfig};
use mspbridge_vault::Vault;

mod support;
use support::{arg, reset_peak, rss_kib};

/// Child mode: the sandbox, every tenant consented; prints its address, then the tenant
/// ids on one line.
async fn serve(tenants: usize, users: usize, skus: usize, latency: u64) {
    let sandbox = M365Sandbox::with_size(tenants, users, skus);
    let ids: Vec<String> = sandbox.tenants().into_iter().map(|t| t.id).collect();
    for t in &ids {
        sandbox.consent(t);
    }
    sandbox.faults.set_latency(Duration::from_millis(latency));
    let handle = sandbox
        .serve(mspbridge_sandbox::loopback_listener().await.unwrap())
        .unwrap();
    println!("{}", M365Sandbox::base_url(&handle));
    println!("{}", ids.join(","));
    tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
}

#[tokio::main]
async fn main() {
    let tenants: usize = arg("--tenants", "500").parse().unwrap();
    let users: usize = arg("--users", "300").parse().unwrap();
    let skus: usize = arg("--skus", "20").parse().unwrap();
    let latency: u64 = arg("--latency", "100").parse().unwrap();
    let concurrency: usize = arg("--concurrency", "16").parse().unwrap();
    if std::env::args().any(|a| a == "--serve") {
        serve(tenants, users, skus, latency).await;
        return;
    }
    mspbridge_providers::outbound::install_crypto_provider();
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args([
            "--serve",
            "--tenants",
            &tenants.to_string(),
            "--users",
            &users.to_string(),
            "--skus",
            &skus.to_string(),
            "--latency",
            &latency.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (base, ids) = {
        use std::io::BufRead;
        let out = child.stdout.as_mut().unwrap();
        let mut r = std::io::BufReader::new(out);
        let (mut a, mut b) = (String::new(), String::new());
        r.read_line(&mut a).unwrap();
        r.read_line(&mut b).unwrap();
        (
            a.trim().to_string(),
            b.trim().split(',').map(str::to_string).collect::<Vec<_>>(),
        )
    };

    let db = arg("--db", "sqlite");
    let test_db = match db.as_str() {
        "postgres" => mspbridge_store::test_support::postgres()
            .await
            .unwrap()
            .expect("TEST_DATABASE_URL"),
        _ => mspbridge_store::test_support::sqlite().await.unwrap(),
    };
    let store: Arc<dyn Store> = test_db.store.clone();
    let vault = Arc::new(Vault::new(&[3u8; 32]));
    let tenant = store.create_tenant("Bench", Utc::now()).await.unwrap();
    let integration = store
        .create_integration(
            tenant.id,
            NewIntegration {
                provider: ProviderKind::Microsoft365,
                nickname: None,
                settings: serde_json::json!({
                    "client_id": m365::DEMO_CLIENT_ID,
                    "home_tenant": m365::PARTNER_TENANT_ID,
                }),
                secrets: [(
                    "client_secret".to_string(),
                    SecretString::new(m365::DEMO_CLIENT_SECRET),
                )]
                .into_iter()
                .collect(),
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
    store
        .set_sync_options(
            tenant.id,
            integration.id,
            &SyncOptions::default(),
            Utc::now(),
        )
        .await
        .unwrap();
    for (i, t) in ids.iter().enumerate() {
        let company = store
            .create_company(tenant.id, &format!("Company {i:04}"), Utc::now())
            .await
            .unwrap();
        store
            .m365_connect(
                tenant.id,
                integration.id,
                company.id,
                t,
                "bench",
                Utc::now(),
            )
            .await
            .unwrap();
    }
    let engine = Engine::new(
        store.clone(),
        vault,
        Providers::new(ProviderConfig {
            outbound: OutboundPolicy {
                allow_private: true,
            },
            microsoft_365: GraphSettings {
                login_base: Some(base.clone()),
                graph_base: Some(base),
                tenant_concurrency: concurrency,
                ..GraphSettings::default()
            },
            ..Default::default()
        }),
        EngineConfig::default(),
        "bench",
    );

    // Per tenant: organization, domains, users (one delta page of up to 999), groups
    // ($top=999), subscribed SKUs; on the first sync also its token, Secure Score
    // (`$top=90`, one page) and the control profiles (`$top=999`). Tokens live an hour
    // and Secure Score is read daily, so the re-sync asks for neither.
    let n = ids.len() as u64;
    println!(
        "| db | scenario | tenants × users × SKUs | wall s | requests (min) | bound s ({concurrency} tenants at once, {latency} ms a request) | wall/bound | rows written | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut missed: Vec<String> = Vec::new();
    for (scenario, per_tenant) in [("first sync", 8u64), ("re-sync, nothing changed", 5)] {
        store
            .request_sync(
                tenant.id,
                integration.id,
                Utc::now(),
                chrono::Duration::zero(),
            )
            .await
            .unwrap();
        reset_peak();
        let t = Instant::now();
        let summary = engine.tick().await.unwrap().expect("due");
        let wall = t.elapsed().as_secs_f64();
        let peak = rss_kib("VmHWM:");
        assert_eq!(summary.result, RunResult::Success, "{summary:?}");
        let tenants_seen = summary
            .counts
            .get(&RecordType::Companies)
            .map_or(0, |c| c.seen);
        assert_eq!(tenants_seen, n, "every tenant synced");
        let written: u64 = summary
            .counts
            .values()
            .map(|c| c.created + c.updated + c.deactivated)
            .sum();
        let users_seen = summary
            .counts
            .get(&RecordType::Contacts)
            .map_or(0, |c| c.seen);
        if scenario == "first sync" {
            assert_eq!(users_seen, n * users as u64, "every user read");
        }
        let minimum = n * per_tenant;
        let requests = summary.requests;
        let bound = (requests.div_ceil(concurrency as u64)) as f64 * latency as f64 / 1000.0;
        println!(
            "| {db} | {scenario} | {tenants} × {users} × {skus} | {wall:.1} | {requests} ({minimum}) | {bound:.1} | {:.2} | {written} | {:.0} |",
            wall / bound,
            peak as f64 / 1024.0
        );
        if requests != minimum {
            missed.push(format!(
                "{scenario}: {requests} requests, the minimum is {minimum}"
            ));
        }
        if wall / bound > 1.25 {
            missed.push(format!(
                "{scenario}: wall {wall:.1} s is {:.2}× the bound (target ≤ 1.25×)",
                wall / bound
            ));
        }
        if peak >= 150 * 1024 {
            missed.push(format!(
                "{scenario}: peak RSS {} MiB (target < 150)",
                peak / 1024
            ));
        }
        if scenario != "first sync" && written != 0 {
            missed.push(format!("{scenario}: {written} rows written (target 0)"));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    if missed.is_empty() {
        println!(
            "\nevery target met: requests at the minimum, wall ≤ 1.25× the bound, peak RSS < 150 MiB, an unchanged re-sync writes nothing"
        );
    } else {
        eprintln!("\ntargets missed:\n  {}", missed.join("\n  "));
        std::process::exit(1);
    }
}
