#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Ticket import benchmark against the ConnectWise sandbox (in a child process, on
//! loopback): `--companies` companies with `--tickets-per` tickets each, every ticket with
//! a description note and `--notes-per` more notes.
//!
//!   cargo bench -p mspbridge-sync --bench tickets -- --db sqlite
//!   TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench -p mspbridge-sync --bench tickets -- --db postgres
//!
//! Defaults: 20,000 companies × 10 tickets = 200,000 tickets with 600,000 notes kept
//! (800,000 ServiceNotes in ConnectWise: one per ticket is its description). Scenarios:
//! (a) the first run (companies, technicians and tickets), (b) a run with 1 % of the
//! tickets given a new note, (c) a run with nothing changed. Prints one Markdown row each.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::integration::*;
use mspbridge_domain::sync::*;
use mspbridge_domain::*;
use mspbridge_providers::connectwise::sandbox::*;
use mspbridge_providers::{OutboundPolicy, ProviderConfig, Providers};
use mspbridge_sandbox::Seed;
use mspbridge_store::*;
use mspbridge_sync::{Engine, EngineConfig};
use mspbridge_vault::Vault;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Child: serves the sandbox; reads "touch N" lines on stdin (N tickets get a note) and
/// answers "ok" once done.
async fn serve(companies: u32, tickets_per: usize, notes_per: usize) {
    let data = generate_sized(Seed::Companies(companies), tickets_per, notes_per);
    let (t, n) = (data.tickets.len(), data.notes.len());
    let sandbox = CwSandbox::from_data(data);
    sandbox.warm();
    let listener = mspbridge_sandbox::loopback_listener().await.unwrap();
    let handle = sandbox.serve(listener).unwrap();
    println!("{} {t} {n}", handle.host());
    let sb = sandbox.clone();
    tokio::task::spawn_blocking(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if let Some(k) = line.strip_prefix("touch ") {
                let k: usize = k.trim().parse().unwrap_or(0);
                let ids: Vec<i64> = sb.with_data(|d| {
                    let step = (d.tickets.len() / k.max(1)).max(1);
                    d.tickets
                        .iter()
                        .step_by(step)
                        .take(k)
                        .map(|t| t.id)
                        .collect()
                });
                for id in ids {
                    sb.add_note(id, "Benchmark follow-up.", true);
                }
                sb.warm();
                println!("ok");
            }
        }
    })
    .await
    .unwrap();
    drop(handle);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let companies: u32 = arg("--companies", "20000").parse().unwrap();
    let tickets_per: usize = arg("--tickets-per", "10").parse().unwrap();
    let notes_per: usize = arg("--notes-per", "3").parse().unwrap();
    if std::env::args().any(|a| a == "--serve-sandbox") {
        serve(companies, tickets_per, notes_per).await;
        return;
    }
    mspbridge_providers::outbound::install_crypto_provider();
    let db_kind = arg("--db", "sqlite");
    let db = match db_kind.as_str() {
        "sqlite" => test_support::sqlite().await.unwrap(),
        "postgres" => test_support::postgres()
            .await
            .unwrap()
            .expect("set TEST_DATABASE_URL for --db postgres"),
        other => panic!("--db must be sqlite or postgres, not {other}"),
    };
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--serve-sandbox",
            "--companies",
            &companies.to_string(),
            "--tickets-per",
            &tickets_per.to_string(),
            "--notes-per",
            &notes_per.to_string(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_child = child.stdin.take().unwrap();
    let mut from_child = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut from_child, &mut line).unwrap();
    let parts: Vec<&str> = line.split_whitespace().collect();
    let host = parts[0].to_string();
    let (n_tickets, n_vendor_notes): (usize, usize) =
        (parts[1].parse().unwrap(), parts[2].parse().unwrap());

    let vault = Arc::new(Vault::new(&[1u8; 32]));
    let store = db.store.clone();
    let tenant = store.create_tenant("Bench MSP", Utc::now()).await.unwrap();
    let mut secrets = BTreeMap::new();
    secrets.insert(
        "private_key".to_string(),
        SecretString::new(DEMO_PRIVATE_KEY),
    );
    let integration = store
        .create_integration(
            tenant.id,
            NewIntegration {
                provider: ProviderKind::ConnectwiseManage,
                nickname: None,
                settings: serde_json::json!({"site": host, "company_id": DEMO_COMPANY_ID, "public_key": DEMO_PUBLIC_KEY, "client_id": DEMO_CLIENT_ID}),
                secrets,
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
        contacts: false,
        skip_inactive_companies: false,
        tickets: true,
        ..SyncOptions::default()
    };
    store
        .set_sync_options(tenant.id, integration.id, &options, Utc::now())
        .await
        .unwrap();
    let engine = Engine::new(
        store.clone(),
        vault.clone(),
        Providers::new(ProviderConfig {
            outbound: OutboundPolicy {
                allow_private: true,
            },
            ..Default::default()
        }),
        EngineConfig::default(),
        "bench",
    );
    println!(
        "{n_tickets} tickets, {n_vendor_notes} ConnectWise notes ({} kept as notes), {db_kind}",
        n_vendor_notes - n_tickets
    );
    println!(
        "| Scenario | Wall time | Requests | Minimum | Tickets created/updated/unchanged | Tickets/s | Peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|");
    let members = (companies as usize / 5).max(1);
    let pages = |n: usize| n / 1000 + 1;
    for (scenario, touched) in [
        ("(a) first run", None),
        ("(b) 1 % of tickets get a note", Some(n_tickets / 100)),
        ("(c) nothing changed", Some(0)),
    ] {
        if let Some(k) = touched {
            use std::io::Write;
            writeln!(to_child, "touch {k}").unwrap();
            line.clear();
            std::io::BufRead::read_line(&mut from_child, &mut line).unwrap();
            store
                .request_sync(
                    tenant.id,
                    integration.id,
                    Utc::now(),
                    chrono::Duration::zero(),
                )
                .await
                .unwrap();
        }
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let start = Instant::now();
        // A run stops at the engine's request budget (20,000 ConnectWise requests) and the
        // next run resumes the pass where it stopped: run until one succeeds.
        let mut t = Counts::default();
        let mut requests = 0u64;
        let mut runs = 0;
        loop {
            let run = engine.tick().await.unwrap().expect("due");
            runs += 1;
            requests += run.requests;
            if let Some(c) = run.counts.get(&RecordType::Tickets) {
                t.merge(c);
            }
            match run.result {
                RunResult::Success => break,
                RunResult::Partial
                    if run.error.as_deref().is_some_and(|e| e.contains("budget")) =>
                {
                    store
                        .request_sync(
                            tenant.id,
                            integration.id,
                            Utc::now(),
                            chrono::Duration::zero(),
                        )
                        .await
                        .unwrap();
                }
                _ => panic!("{run:?}"),
            }
        }
        let wall = start.elapsed();
        // ConnectWise: codebase discovery, company statuses, keyset pages of 1,000 per
        // record type (a full last page needs one more request), and one notes request per
        // new or changed ticket (ConnectWise has no cross-ticket note list).
        let minimum = match touched {
            None => 2 + pages(companies as usize) + pages(members) + pages(n_tickets) + n_tickets,
            // Incremental: one (short) page per record type plus the changed tickets' notes.
            Some(k) => 2 + 1 + 1 + k.div_ceil(1000).max(1) + k,
        };
        println!(
            "| {scenario} ({runs} run(s)) | {:.2} s | {requests} | {} | {}/{}/{} | {:.0} | {} MiB |",
            wall.as_secs_f64(),
            minimum,
            t.created,
            t.updated,
            t.unchanged,
            t.seen as f64
                / wall
                    .as_secs_f64()
                    .max(Duration::from_millis(1).as_secs_f64()),
            rss_kib("VmHWM") / 1024,
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}
