#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Sync engine benchmark against a vendor sandbox (`--provider connectwise_manage |
//! halo_psa | syncro | autotask`, in a child process, on loopback).
//!
//!   cargo bench -p mspbridge-sync --bench sync -- --db sqlite --latency-ms 0
//!   TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench -p mspbridge-sync --bench sync -- --db postgres --latency-ms 50
//!
//! Scenarios: (a) initial import of the `large` seed (5,000 companies, 50,000
//! contacts, 1,000 members), (b) re-sync with 1 % of contacts changed, (c) re-sync
//! with nothing changed, (b) and (c) `--rounds` times (default 5; the median is reported).
//! Prints one Markdown table row per scenario.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::integration::*;
use mspbridge_domain::sync::*;
use mspbridge_domain::*;
use mspbridge_providers::autotask::client::AutotaskSettings;
use mspbridge_providers::autotask::sandbox::{self as autotask, AutotaskSandbox};
use mspbridge_providers::connectwise::sandbox::*;
use mspbridge_providers::halo::client::HaloLimits;
use mspbridge_providers::halo::sandbox::{self as halo, HaloSandbox};
use mspbridge_providers::syncro::client::SyncroSettings;
use mspbridge_providers::syncro::sandbox::{self as syncro, SyncroSandbox};
use mspbridge_providers::{OutboundPolicy, ProviderConfig, Providers};
use mspbridge_sandbox::Seed;
use mspbridge_store::*;
use mspbridge_sync::{Engine, EngineConfig};
use mspbridge_vault::Vault;

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

fn reset_peak() {
    // Linux: writing 5 to clear_refs resets VmHWM to the current RSS.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

/// Child mode: serve the sandbox and print its address and data sizes; the parent
/// measures only the engine.
async fn serve_sandbox(
    provider: &str,
    seed: Seed,
    latency: Duration,
    limit: (usize, Duration),
    per_page: usize,
) {
    let listener = mspbridge_sandbox::loopback_listener().await.unwrap();
    let (handle, sizes) = match provider {
        "syncro" => {
            let sandbox = SyncroSandbox::new(seed);
            sandbox.faults.set_latency(latency);
            sandbox.set_rate_limit(limit.0, limit.1);
            sandbox.set_per_page(per_page);
            let sizes = sandbox.with_data(|d| (d.customers.len(), d.contacts.len(), d.users.len()));
            (sandbox.serve(listener).unwrap(), sizes)
        }
        "autotask" => {
            let sandbox = AutotaskSandbox::new(seed);
            sandbox.faults.set_latency(latency);
            sandbox.set_threshold(limit.0, limit.1);
            let sizes =
                sandbox.with_data(|d| (d.companies.len(), d.contacts.len(), d.resources.len()));
            (sandbox.serve(listener).unwrap(), sizes)
        }
        "halo_psa" => {
            let sandbox = HaloSandbox::new(seed);
            sandbox.faults.set_latency(latency);
            sandbox.set_rate_limit(limit.0, limit.1);
            let sizes = sandbox.with_data(|d| (d.clients.len(), d.users.len(), d.agents.len()));
            (sandbox.serve(listener).unwrap(), sizes)
        }
        _ => {
            let sandbox = CwSandbox::new(seed);
            // `--whole-records`: answer every list with whole records, as before the
            // connector asked for only the fields it reads (`fields=`), to compare bytes.
            sandbox.honour_fields(!std::env::args().any(|a| a == "--whole-records"));
            sandbox.warm();
            sandbox.faults.set_latency(latency);
            let sizes =
                sandbox.with_data(|d| (d.companies.len(), d.contacts.len(), d.members.len()));
            sandbox.warm();
            (sandbox.serve(listener).unwrap(), sizes)
        }
    };
    println!("{} {} {} {}", handle.host(), sizes.0, sizes.1, sizes.2);
    handle.wait().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let latency = Duration::from_millis(arg("--latency-ms", "0").parse().unwrap());
    let seed_arg = arg("--seed", "large");
    let seed: Seed = seed_arg.parse().unwrap();
    let provider = arg("--provider", "connectwise_manage");
    // Halo's hosted limit, enforced by its sandbox and kept by the connector.
    // The vendor's rate limit (Halo: 300 per 5 minutes; Syncro: 180 per minute), enforced
    // by its sandbox and kept by the connector; a shorter window measures in less time.
    let (default_limit, default_window) = match provider.as_str() {
        "syncro" => ("180", "60"),
        // Autotask: 10,000 per rolling hour per database.
        "autotask" => ("10000", "3600"),
        _ => ("300", "300"),
    };
    let rate_limit: usize = arg("--rate-limit", default_limit).parse().unwrap();
    let rate_window = Duration::from_secs(arg("--rate-window-s", default_window).parse().unwrap());
    let per_page: usize = arg("--syncro-per-page", "25").parse().unwrap();
    if std::env::args().any(|a| a == "--serve-sandbox") {
        serve_sandbox(
            &provider,
            seed,
            latency,
            (rate_limit, rate_window),
            per_page,
        )
        .await;
        return;
    }
    let db_kind = arg("--db", "sqlite");
    mspbridge_providers::outbound::install_crypto_provider();

    let db = match db_kind.as_str() {
        "sqlite" => test_support::sqlite().await.unwrap(),
        "postgres" => test_support::postgres()
            .await
            .unwrap()
            .expect("set TEST_DATABASE_URL for --db postgres"),
        other => panic!("--db must be sqlite or postgres, not {other}"),
    };
    // The sandbox runs in a child process so its memory and CPU are not the engine's.
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--serve-sandbox",
            "--provider",
            &provider,
            "--seed",
            &seed_arg,
            "--latency-ms",
            &latency.as_millis().to_string(),
            "--rate-limit",
            &rate_limit.to_string(),
            "--rate-window-s",
            &rate_window.as_secs().to_string(),
            "--syncro-per-page",
            &per_page.to_string(),
        ])
        .args(
            std::env::args()
                .any(|a| a == "--whole-records")
                .then_some("--whole-records"),
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let parts: Vec<&str> = line.split_whitespace().collect();
    let host = parts[0].to_string();
    let (n_companies, n_contacts, n_members): (usize, usize, usize) = (
        parts[1].parse().unwrap(),
        parts[2].parse().unwrap(),
        parts[3].parse().unwrap(),
    );

    let vault = Arc::new(Vault::new(&[1u8; 32]));
    let store = db.store.clone();
    let tenant = store.create_tenant("Bench MSP", Utc::now()).await.unwrap();
    let report = TestReport {
        connection: ConnectionOutcome::Ok,
        areas: vec![],
        tested_at: Utc::now(),
        details: vec![],
    };
    let mut secrets = BTreeMap::new();
    let (kind, settings) = match provider.as_str() {
        "autotask" => {
            secrets.insert(
                "secret".to_string(),
                SecretString::new(autotask::DEMO_SECRET),
            );
            secrets.insert(
                "integration_code".to_string(),
                SecretString::new(autotask::DEMO_INTEGRATION_CODE),
            );
            (
                ProviderKind::Autotask,
                serde_json::json!({"username": autotask::DEMO_USERNAME}),
            )
        }
        "syncro" => {
            secrets.insert(
                "api_token".to_string(),
                SecretString::new(syncro::DEMO_API_TOKEN),
            );
            (
                ProviderKind::Syncro,
                serde_json::json!({"subdomain": syncro::DEMO_SUBDOMAIN}),
            )
        }
        "halo_psa" => {
            secrets.insert(
                "client_secret".to_string(),
                SecretString::new(halo::DEMO_CLIENT_SECRET),
            );
            (
                ProviderKind::HaloPsa,
                serde_json::json!({"auth_server_url": format!("https://{host}/auth"), "resource_server_url": format!("https://{host}/api"), "tenant": halo::DEMO_TENANT, "client_id": halo::DEMO_CLIENT_ID}),
            )
        }
        _ => {
            secrets.insert(
                "private_key".to_string(),
                SecretString::new(DEMO_PRIVATE_KEY),
            );
            (
                ProviderKind::ConnectwiseManage,
                serde_json::json!({"site": host, "company_id": DEMO_COMPANY_ID, "public_key": DEMO_PUBLIC_KEY, "client_id": DEMO_CLIENT_ID}),
            )
        }
    };
    let integration = store
        .create_integration(
            tenant.id,
            NewIntegration {
                provider: kind,
                nickname: None,
                settings,
                secrets,
                report,
            },
            &vault,
            Utc::now(),
        )
        .await
        .unwrap();
    let roles: BTreeMap<String, RoleId> = store
        .list_roles(tenant.id)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.name, r.id))
        .collect();
    let options = SyncOptions {
        auto_import_contacts: true,
        skip_inactive_companies: false,
        default_role_id: Some(roles["Viewer"]),
        primary_contact_role_id: Some(roles["Admin"]),
        contact_type_rules: vec![ContactTypeRule {
            contact_type: "IT Contact".into(),
            role_id: roles["Standard User"],
        }],
        ..SyncOptions::default()
    };
    store
        .set_sync_options(tenant.id, integration.id, &options, Utc::now())
        .await
        .unwrap();
    let providers = Providers::new(ProviderConfig {
        outbound: OutboundPolicy {
            allow_private: true,
        },
        connectwise_client_id: None,
        halo_limits: HaloLimits {
            requests: rate_limit,
            window: rate_window,
            ..HaloLimits::default()
        },
        syncro: SyncroSettings {
            requests: rate_limit,
            window: rate_window,
            api_base: format!("https://{host}/{{subdomain}}/api/v1"),
            ..SyncroSettings::default()
        },
        autotask: AutotaskSettings {
            zone_lookup_url: format!("https://{host}/atservicesrest"),
            requests: rate_limit,
            window: rate_window,
            ..AutotaskSettings::default()
        },
        datto_rmm: Default::default(),
        connectwise_asio: Default::default(),
        microsoft_365: Default::default(),
        stripe: Default::default(),
    });
    let engine = Engine::new(
        store.clone(),
        vault.clone(),
        providers,
        EngineConfig::default(),
        "bench",
    );

    let halo = provider == "halo_psa";
    let syncro = provider == "syncro";
    let autotask = provider == "autotask";
    // Runs that the vendor's rate window binds (Autotask's 10,000 per hour never binds a
    // run of a few hundred requests; its threshold readings are counted below).
    let limited = halo || syncro;
    // The fewest requests that can read `seen` records of each type. ConnectWise:
    // discovery and company statuses, then keyset pages of 1,000 (a full page is the last
    // when its `Link` header names no next page; an empty list is one request). Halo: one token (then cached for an hour),
    // pages of 100 counted from `record_count`, agents in one answer.
    // Syncro lists everything every run: customer pages (reused for the customers' own
    // persons), contact pages, the user pairs and one detail request per technician.
    // Autotask: zone discovery, then pages of 500 (`nextPageUrl` only when more follow),
    // the company-type picklist when there are companies, per contact page one
    // group-membership query (and the group list once), and a ThresholdInformation
    // reading before the first request and after every 100 (an import starts without
    // one; a re-sync usually still has a fresh one: one more request when it does not).
    let minimum = |companies: usize, contacts: usize, technicians: usize, token: bool| {
        if autotask {
            let pages = |n: usize| n.div_ceil(500).max(1);
            let n = usize::from(companies > 0)
                + pages(companies)
                + pages(contacts)
                + if contacts > 0 { pages(contacts) + 1 } else { 0 }
                + pages(technicians);
            let readings = if token { n.div_ceil(100) } else { 0 };
            1 + n + readings
        } else if syncro {
            let pages = |n: usize| n.div_ceil(per_page).max(1);
            pages(n_companies) + pages(n_contacts) + 1 + n_members
        } else if halo {
            let pages = |n: usize| n.div_ceil(100).max(1);
            usize::from(token) + pages(companies) + pages(contacts) + 1
        } else {
            let pages = |n: usize| n.div_ceil(1000).max(1);
            2 + pages(companies) + pages(contacts) + pages(technicians)
        }
    };
    let minimum_initial = minimum(n_companies, n_contacts, n_members, true);
    // Halo's hosted limit: the (k × limit + j)-th request of a run cannot leave before k
    // windows have passed, and the j requests after it still follow one another.
    let rate_bound = |requests: u64| {
        if limited && requests > 0 {
            let (k, j) = (
                (requests - 1) / rate_limit as u64,
                (requests - 1) % rate_limit as u64 + 1,
            );
            k as f64 * rate_window.as_secs_f64() + j as f64 * latency.as_secs_f64()
        } else {
            0.0
        }
    };
    println!(
        "| db | latency | scenario | runs | records seen | wall s, median (min–max) | records/s | requests (min) | KiB received | latency bound s | wall/bound | record writes | RSS before MiB | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");

    let rounds: usize = arg("--rounds", "5").parse().unwrap();
    let run = || {
        let engine = engine.clone();
        let store = store.clone();
        let (tenant, id) = (tenant.id, integration.id);
        async move {
            if limited {
                // Each run starts with the vendor's whole budget: the previous run's requests
                // age out of the window first (not counted in the wall time).
                tokio::time::sleep(rate_window).await;
            }
            store.reactivate(tenant, id, Utc::now()).await.unwrap();
            let before_rss = rss_kib("VmRSS:");
            reset_peak();
            let started = Utc::now();
            let t = Instant::now();
            let summary = engine.tick().await.unwrap().expect("due");
            let wall = t.elapsed().as_secs_f64();
            let peak = rss_kib("VmHWM:");
            assert_eq!(summary.result, RunResult::Success, "{summary:?}");
            let writes: u64 = summary
                .counts
                .values()
                .map(|c| c.created + c.updated + c.deactivated)
                .sum();
            let changed = count_changed(store.as_ref(), tenant, started).await;
            assert_eq!(
                writes, changed,
                "records written per the counts and per the database agree"
            );
            Measured {
                summary,
                wall,
                changed,
                before_rss,
                peak,
            }
        }
    };
    let row = |label: &str, minimum: &dyn Fn(&Measured) -> usize, runs: &[Measured]| {
        let mut walls: Vec<f64> = runs.iter().map(|m| m.wall).collect();
        walls.sort_by(f64::total_cmp);
        let wall = walls[walls.len() / 2];
        // Seen records, requests and the bound are those of the median run (the first
        // re-sync after the import re-reads one more record than the later ones).
        let m = runs.iter().find(|m| m.wall == wall).unwrap_or(&runs[0]);
        let seen: u64 = m.summary.counts.values().map(|c| c.seen).sum();
        let bound =
            (m.summary.requests as f64 * latency.as_secs_f64()).max(rate_bound(m.summary.requests));
        let minimum = minimum(m);
        let range = if runs.len() > 1 {
            format!(" ({:.2}–{:.2})", walls[0], walls[walls.len() - 1])
        } else {
            String::new()
        };
        println!(
            "| {db_kind} | {} ms | {label} | {} | {seen} | {wall:.2}{range} | {:.0} | {} ({minimum}) | {:.0} | {bound:.2} | {} | {} | {:.0} | {:.0} |",
            latency.as_millis(),
            runs.len(),
            seen as f64 / wall,
            m.summary.requests,
            m.summary.bytes as f64 / 1024.0,
            if bound > 0.0 {
                format!("{:.2}", wall / bound)
            } else {
                "n/a".into()
            },
            runs.iter().map(|m| m.changed).max().unwrap_or(0),
            runs.iter().map(|m| m.before_rss).max().unwrap_or(0) as f64 / 1024.0,
            runs.iter().map(|m| m.peak).max().unwrap_or(0) as f64 / 1024.0,
        );
    };

    let a = run().await;
    assert_eq!(
        a.summary.requests as usize, minimum_initial,
        "the initial import makes the minimum number of requests"
    );
    row(
        "(a) initial import",
        &|_| minimum_initial,
        std::slice::from_ref(&a),
    );

    // (b) 1 % of contacts change (through the sandbox's control endpoint), then (c) a
    // re-sync with nothing changed; each `rounds` times.
    let (mut bs, mut cs) = (Vec::new(), Vec::new());
    let mut changed = 0;
    for _ in 0..rounds {
        let answer: serde_json::Value = reqwest::Client::new()
            .post(format!(
                "http://{host}/_sandbox/{}?every=100",
                if halo {
                    "touch-users"
                } else {
                    "touch-contacts"
                }
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        changed = answer["changed"].as_u64().unwrap();
        let b = run().await;
        let bc = b.summary.counts[&RecordType::Contacts];
        assert!(
            bc.updated + bc.skipped + bc.unchanged >= changed - 1,
            "{bc:?}"
        );
        bs.push(b);
        let c = run().await;
        assert_eq!(c.changed, 0, "a no-change re-sync writes nothing");
        cs.push(c);
    }
    // An incremental run reads the pages of what changed.
    let minimum_incremental = |m: &Measured| {
        let seen = |r: RecordType| m.summary.counts.get(&r).map_or(0, |c| c.seen as usize);
        minimum(
            seen(RecordType::Companies),
            seen(RecordType::Contacts),
            seen(RecordType::Technicians),
            false,
        )
    };
    row("(b) 1 % changed", &minimum_incremental, &bs);
    row("(c) nothing changed", &minimum_incremental, &cs);
    eprintln!(
        "data set: {n_companies} companies, {n_contacts} contacts, {n_members} members; contacts changed in (b): {changed}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

struct Measured {
    summary: mspbridge_sync::RunSummary,
    wall: f64,
    changed: u64,
    before_rss: u64,
    peak: u64,
}

/// Portal records and links written since `since` (what a run really changed).
async fn count_changed(store: &dyn Store, tenant: TenantId, since: chrono::DateTime<Utc>) -> u64 {
    let companies = store.list_companies(tenant).await.unwrap();
    let mut n = companies.iter().filter(|c| c.updated_at >= since).count() as u64;
    for c in &companies {
        n += store
            .list_company_users(tenant, c.id)
            .await
            .unwrap()
            .iter()
            .filter(|u| u.updated_at >= since)
            .count() as u64;
    }
    let staff = store.list_staff_users(tenant).await.unwrap();
    // Staff rows carry created_at only in the domain type; count the new ones.
    n += staff.iter().filter(|s| s.created_at >= since).count() as u64;
    n
}
