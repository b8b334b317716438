#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Stripe billing sync benchmark against the sandbox (in a child process, on loopback),
//! which keeps Stripe's test-mode limit of 25 requests a second (429 `rate_limit` past it).
//!
//!   cargo bench -p mspbridge-sync --bench stripe -- --db sqlite
//!   TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench -p mspbridge-sync --bench stripe -- --db postgres
//!
//! Data (`--customers`, `--invoices`, `--payments`; default 10,000 / 200,000 / 50,000).
//! Scenarios: (a) the first sync (every list whole), (b) the daily reconcile with nothing
//! changed, (c) an incremental run (what was created since the watermark, and every open
//! invoice again). Requests must be ⌈records / 100⌉ per list (`limit=100`, `expand[]`
//! instead of per-object reads); the bound is requests ÷ 25 a second. Prints one Markdown
//! table row per scenario and exits 1 naming any target missed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::integration::*;
use mspbridge_domain::sync::*;
use mspbridge_domain::*;
use mspbridge_providers::stripe::client::StripeSettings;
use mspbridge_providers::stripe::sandbox::{DEMO_RESTRICTED_KEY, StripeSandbox};
use mspbridge_providers::{OutboundPolicy, ProviderConfig, Providers};
use mspbridge_store::*;
use mspbridge_sync::{Engine, EngineConfig};
use mspbridge_vault::Vault;

mod support;
use support::{arg, reset_peak, rss_kib};

/// Child mode: the sandbox; prints its address.
async fn serve(customers: usize, invoices: usize, payments: usize) {
    let sandbox = StripeSandbox::with_size(customers, invoices, payments);
    let handle = sandbox
        .serve(mspbridge_sandbox::loopback_listener().await.unwrap())
        .unwrap();
    println!("{}", StripeSandbox::base_url(&handle));
    tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
}

#[tokio::main]
async fn main() {
    let customers: usize = arg("--customers", "10000").parse().unwrap();
    let invoices: usize = arg("--invoices", "200000").parse().unwrap();
    let payments: usize = arg("--payments", "50000").parse().unwrap();
    let rate: f64 = 25.0;
    if std::env::args().any(|a| a == "--serve") {
        serve(customers, invoices, payments).await;
        return;
    }
    mspbridge_providers::outbound::install_crypto_provider();
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args([
            "--serve",
            "--customers",
            &customers.to_string(),
            "--invoices",
            &invoices.to_string(),
            "--payments",
            &payments.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let base = {
        use std::io::BufRead;
        let out = child.stdout.as_mut().unwrap();
        let mut r = std::io::BufReader::new(out);
        let mut a = String::new();
        r.read_line(&mut a).unwrap();
        a.trim().to_string()
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
                provider: ProviderKind::Stripe,
                nickname: None,
                settings: serde_json::json!({}),
                secrets: [(
                    "secret_key".to_string(),
                    SecretString::new(DEMO_RESTRICTED_KEY),
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
    let providers = Providers::new(ProviderConfig {
        outbound: OutboundPolicy {
            allow_private: true,
        },
        stripe: StripeSettings {
            api_base: Some(base),
            ..StripeSettings::default()
        },
        ..Default::default()
    });
    let full = Engine::new(
        store.clone(),
        vault.clone(),
        providers.clone(),
        EngineConfig {
            reconcile_every: chrono::Duration::zero(),
            ..EngineConfig::default()
        },
        "bench",
    );
    let incremental = Engine::new(
        store.clone(),
        vault,
        providers,
        EngineConfig::default(),
        "bench",
    );

    println!(
        "| db | scenario | customers / invoices / subscriptions / payments read | wall s | requests (min) | bound s (25 requests/s) | wall/bound | rows written | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut missed: Vec<String> = Vec::new();
    for (scenario, engine) in [
        ("first sync", &full),
        ("daily reconcile, nothing changed", &full),
        ("incremental run", &incremental),
    ] {
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
        let (c, i, s, p) = (
            seen(RecordType::Companies),
            seen(RecordType::Invoices),
            seen(RecordType::Subscriptions),
            seen(RecordType::Payments),
        );
        if scenario == "first sync" {
            assert_eq!(c, customers as u64, "every customer read");
            assert_eq!(i, invoices as u64, "every invoice read");
            assert_eq!(p, payments as u64, "every payment read");
        }
        let written: u64 = summary
            .counts
            .values()
            .map(|c| c.created + c.updated + c.deactivated)
            .sum();
        // One page per 100 records of each list (at least one page each); the
        // incremental run reads the open invoices as a list of its own.
        let pages = |n: u64| n.div_ceil(100).max(1);
        let minimum = if scenario == "incremental run" {
            let open = i; // every invoice it saw: new ones (none) and the open ones
            pages(0) + pages(0) + pages(open) + pages(0) + pages(0)
        } else {
            pages(c) + pages(i) + pages(s) + pages(p)
        };
        let requests = summary.requests;
        // The bound is the minimum's: retries (429s) count against the wall time, not in
        // its favour.
        let bound = minimum as f64 / rate;
        println!(
            "| {db} | {scenario} | {c} / {i} / {s} / {p} | {wall:.1} | {requests} ({minimum}) | {bound:.1} | {:.2} | {written} | {:.0} |",
            wall / bound,
            peak as f64 / 1024.0
        );
        if requests > minimum {
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
        if scenario != "first sync" && written != 0 {
            missed.push(format!("{scenario}: {written} rows written (target 0)"));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    if missed.is_empty() {
        println!(
            "\nevery target met: requests at ⌈records/100⌉ per list, wall ≤ 1.25× the 25 requests/s bound, peak RSS < 100 MiB, an unchanged re-read writes nothing"
        );
    } else {
        eprintln!("\ntargets missed:\n  {}", missed.join("\n  "));
        std::process::exit(1);
    }
}
