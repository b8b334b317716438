#![allow(clippy::unwrap_used, clippy::expect_used)]
//! RMM sweep benchmark against the Datto RMM sandbox (in a child process, on loopback),
//! with Datto's account limit of 600 requests per rolling 60 s played by the sandbox and
//! kept by the connector.
//!
//!   cargo bench -p mspbridge-sync --bench rmm -- --db sqlite
//!   TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench -p mspbridge-sync --bench rmm -- --db postgres
//!
//! Data (`--sites`, `--devices`, `--alerts`; default 2,000 / 100,000 / 20,000) at the
//! account's page size (`--page`, default 250). Scenarios: (a) the first sweep (every
//! site, device and open alert imported), (b) a sweep with nothing changed. Each starts
//! with the whole rate budget (the previous sweep's requests age out first). Prints one
//! Markdown table row per scenario: requests against ⌈records / page⌉ per list (+ the
//! page-size reading and the request rate at each list's start), wall time against the bound the limit sets, record writes, peak RSS.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::integration::*;
use mspbridge_domain::sync::*;
use mspbridge_domain::*;
use mspbridge_providers::datto_rmm::client::DattoSettings;
use mspbridge_providers::datto_rmm::sandbox::{self as datto, DattoSandbox};
use mspbridge_providers::{OutboundPolicy, ProviderConfig, Providers};
use mspbridge_sandbox::Seed;
use mspbridge_store::*;
use mspbridge_sync::{Engine, EngineConfig};
use mspbridge_vault::Vault;

mod support;
use support::{arg, reset_peak, rss_kib};

/// Child mode: the sandbox with `sites` sites, `devices` devices spread over them and
/// `alerts` open alerts; prints its address.
async fn serve(sites: usize, devices: usize, alerts: usize, page: usize) {
    let sandbox = DattoSandbox::new(Seed::Companies(sites as u32));
    sandbox.set_page_size(page);
    sandbox.with_data(|d| {
        let template = d.devices.clone();
        d.devices.clear();
        for i in 0..devices {
            let mut x = template[i % template.len()].clone();
            let site = &d.sites[i % d.sites.len()];
            x.id = Some(1_000_000 + i as i64);
            x.uid = Some(format!("bench-dev-{i:07}"));
            x.hostname = Some(format!("HOST-{i:07}"));
            x.site_id = site.id;
            x.site_uid = site.uid.clone();
            x.site_name = site.name.clone();
            x.deleted = Some(false);
            d.devices.push(x);
        }
        let template = d.alerts.clone();
        d.alerts.clear();
        for i in 0..alerts {
            let mut a = template[i % template.len()].clone();
            a.alert_uid = Some(format!("bench-alert-{i:07}"));
            a.resolved = Some(false);
            if let Some(src) = a.alert_source_info.as_mut() {
                let dev = &d.devices[i % d.devices.len()];
                src.device_uid = dev.uid.clone();
                src.device_name = dev.hostname.clone();
                src.site_uid = dev.site_uid.clone();
                src.site_name = dev.site_name.clone();
            }
            d.alerts.push(a);
        }
    });
    let handle = sandbox
        .serve(mspbridge_sandbox::loopback_listener().await.unwrap())
        .unwrap();
    println!("{}", DattoSandbox::api_base(&handle));
    tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
}

#[tokio::main]
async fn main() {
    let sites: usize = arg("--sites", "2000").parse().unwrap();
    let devices: usize = arg("--devices", "100000").parse().unwrap();
    let alerts: usize = arg("--alerts", "20000").parse().unwrap();
    let page: usize = arg("--page", "250").parse().unwrap();
    if std::env::args().any(|a| a == "--serve") {
        serve(sites, devices, alerts, page).await;
        return;
    }
    mspbridge_providers::outbound::install_crypto_provider();
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args([
            "--serve",
            "--sites",
            &sites.to_string(),
            "--devices",
            &devices.to_string(),
            "--alerts",
            &alerts.to_string(),
            "--page",
            &page.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    {
        use std::io::BufRead;
        let out = child.stdout.as_mut().unwrap();
        std::io::BufReader::new(out).read_line(&mut line).unwrap();
    }
    let api_base = line.trim().to_string();

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
                provider: ProviderKind::DattoRmm,
                nickname: None,
                settings: serde_json::json!({ "platform": datto::DEMO_PLATFORM }),
                secrets: [
                    (
                        "api_key".to_string(),
                        SecretString::new(datto::DEMO_API_KEY),
                    ),
                    (
                        "api_secret".to_string(),
                        SecretString::new(datto::DEMO_API_SECRET),
                    ),
                ]
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
    let options = SyncOptions {
        companies: true,
        contacts: false,
        technicians: false,
        tickets: false,
        devices: true,
        alerts: true,
        ..SyncOptions::default()
    };
    store
        .set_sync_options(tenant.id, integration.id, &options, Utc::now())
        .await
        .unwrap();
    let engine = Engine::new(
        store.clone(),
        vault,
        Providers::new(ProviderConfig {
            outbound: OutboundPolicy {
                allow_private: true,
            },
            datto_rmm: DattoSettings {
                api_base: Some(api_base),
                ..DattoSettings::default()
            },
            ..Default::default()
        }),
        EngineConfig::default(),
        "bench",
    );

    // ⌈records / page⌉ per list (an empty list is one request) + the account's request
    // rate as each of the three lists starts + the page-size reading (+ the token on the
    // first sweep; it lives 100 hours).
    let pages = |n: usize| n.div_ceil(page).max(1);
    let minimum = pages(sites) + pages(devices) + pages(alerts) + 3 + 1;
    let limit = DattoSettings::default();
    println!(
        "| db | scenario | sites / devices / open alerts | wall s | requests (min) | bound s (600 / 60 s) | wall/bound | record writes | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut missed: Vec<String> = Vec::new();
    for scenario in ["first sweep", "sweep, nothing changed"] {
        // Every sweep starts with the account's whole budget.
        if scenario != "first sweep" {
            tokio::time::sleep(limit.window + Duration::from_secs(1)).await;
        }
        store
            .reactivate(tenant.id, integration.id, Utc::now())
            .await
            .unwrap();
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
        let seen = |r: RecordType| summary.counts.get(&r).map_or(0, |c| c.seen);
        assert_eq!(
            (
                seen(RecordType::Companies) as usize,
                seen(RecordType::Devices) as usize,
                seen(RecordType::Alerts) as usize
            ),
            (sites, devices, alerts),
            "every record seen"
        );
        let writes: u64 = summary
            .counts
            .values()
            .map(|c| c.created + c.updated + c.deactivated)
            .sum();
        // Requests past the account's free 90 % wait for the window; below it none do.
        let requests = summary.requests;
        let minimum = minimum + usize::from(scenario == "first sweep");
        let bound = requests as f64 / limit.requests as f64 * limit.window.as_secs_f64();
        println!(
            "| {db} | {scenario} | {sites} / {devices} / {alerts} | {wall:.1} | {requests} ({minimum}) | {bound:.1} | {:.2} | {writes} | {:.0} |",
            wall / bound,
            peak as f64 / 1024.0
        );
        // The targets.
        if requests as usize != minimum {
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
        if peak >= 100 * 1024 {
            missed.push(format!(
                "{scenario}: peak RSS {} MiB (target < 100)",
                peak / 1024
            ));
        }
        if scenario != "first sweep" && writes != 0 {
            missed.push(format!("{scenario}: {writes} record writes (target 0)"));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    if missed.is_empty() {
        println!(
            "\nevery target met: requests at the minimum, wall ≤ 1.25× the bound, peak RSS < 100 MiB, an unchanged sweep writes nothing"
        );
    } else {
        eprintln!("\ntargets missed:\n  {}", missed.join("\n  "));
        std::process::exit(1);
    }
}
