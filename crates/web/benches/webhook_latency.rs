#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Webhook-to-portal latency: the time from an agent's status change in a PSA sandbox to
//! the portal ticket showing it, through the webhook mspbridge registered (ConnectWise
//! callback: signature fetched and checked; Halo webhook: Basic credentials; Autotask
//! webhook: HMAC-SHA1 signature; Syncro notification: the URL's token), with no
//! sync run involved. The web app, the store and the sandboxes run in this process on
//! loopback; changes are made one after another and the store is polled every 2 ms.
//!
//!   cargo bench -p mspbridge-web --bench webhook_latency -- --db sqlite --changes 200
//!   TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench -p mspbridge-web --bench webhook_latency -- --db postgres
//!
//! Halo's hosted limit (300 requests per 5 minutes) is lifted in its sandbox and client
//! here: a webhook costs two Halo reads, and the point is our path, not Halo's budget.
//! Syncro's 180 requests a minute are lifted the same way.
//! Stripe's row: a customer renamed in the sandbox until the portal's copy shows it
//! (`customer.updated`, signed; the customer read again). `--only <slug>` runs one.
//! Prints one Markdown row per provider.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::model::LinkedRecord;
use mspbridge_domain::sync::{RunResult, SyncOptions};
use mspbridge_domain::{IntegrationId, TenantId, TicketId};
use mspbridge_providers::halo::client::HaloLimits;
use mspbridge_providers::{
    OutboundPolicy, ProviderConfig, Providers, autotask, connectwise, halo, syncro,
};
use mspbridge_sandbox::Seed;
use mspbridge_store::Store;
use mspbridge_vault::Vault;
use mspbridge_web::AppState;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn providers(config: &ProviderConfig) -> Providers {
    Providers::new(ProviderConfig {
        outbound: OutboundPolicy {
            allow_private: true,
        },
        halo_limits: HaloLimits {
            requests: 1_000_000,
            window: Duration::from_secs(300),
            backoff_floor: Duration::from_secs(1),
        },
        ..config.clone()
    })
}

/// A sandbox whose tickets change on demand.
enum Psa {
    Cw(connectwise::sandbox::CwSandbox),
    Halo(halo::sandbox::HaloSandbox),
    Autotask(autotask::sandbox::AutotaskSandbox),
    Syncro(syncro::sandbox::SyncroSandbox),
}

impl Psa {
    fn set_status(&self, id: i64, name: &str) -> bool {
        match self {
            Psa::Cw(s) => s.set_ticket_status(id, name),
            Psa::Halo(s) => s.set_ticket_status(id, name),
            Psa::Autotask(s) => s.set_ticket_status(id, name),
            Psa::Syncro(s) => s.set_ticket_status(id, name),
        }
    }

    fn ticket_ids(&self) -> Vec<i64> {
        match self {
            Psa::Cw(s) => s.with_data(|d| d.tickets.iter().map(|t| t.id).collect()),
            Psa::Halo(s) => s.with_data(|d| d.tickets.iter().map(|t| t.id).collect()),
            Psa::Autotask(s) => s.with_data(|d| d.tickets.iter().map(|t| t.id).collect()),
            Psa::Syncro(s) => s.with_data(|d| d.tickets.iter().map(|t| t.id).collect()),
        }
    }
}

struct Setup {
    psa: Psa,
    _handle: mspbridge_sandbox::SandboxHandle,
    credentials: BTreeMap<String, String>,
    /// Two open statuses a ticket is moved between.
    statuses: [&'static str; 2],
    /// Where the connectors find this sandbox.
    config: ProviderConfig,
}

async fn sandbox(kind: ProviderKind) -> Setup {
    let listener = mspbridge_sandbox::loopback_listener().await.unwrap();
    let mut c = BTreeMap::new();
    match kind {
        ProviderKind::ConnectwiseManage => {
            use connectwise::sandbox::*;
            let sb = CwSandbox::new(Seed::Small);
            let handle = sb.serve(listener).unwrap();
            c.insert("site".into(), handle.host());
            c.insert("company_id".into(), DEMO_COMPANY_ID.into());
            c.insert("public_key".into(), DEMO_PUBLIC_KEY.into());
            c.insert("private_key".into(), DEMO_PRIVATE_KEY.into());
            c.insert("client_id".into(), DEMO_CLIENT_ID.into());
            Setup {
                psa: Psa::Cw(sb),
                _handle: handle,
                credentials: c,
                statuses: ["In Progress", "Waiting on Client"],
                config: ProviderConfig::default(),
            }
        }
        ProviderKind::Autotask => {
            use autotask::sandbox::*;
            let sb = AutotaskSandbox::new(Seed::Small);
            let handle = sb.serve(listener).unwrap();
            c.insert("username".into(), DEMO_USERNAME.into());
            c.insert("secret".into(), DEMO_SECRET.into());
            c.insert("integration_code".into(), DEMO_INTEGRATION_CODE.into());
            let config = ProviderConfig {
                autotask: autotask::client::AutotaskSettings {
                    zone_lookup_url: AutotaskSandbox::zone_lookup_url(&handle),
                    ..Default::default()
                },
                ..Default::default()
            };
            Setup {
                psa: Psa::Autotask(sb),
                _handle: handle,
                credentials: c,
                statuses: ["In Progress", "Waiting Customer"],
                config,
            }
        }
        ProviderKind::Syncro => {
            use syncro::sandbox::*;
            let sb = SyncroSandbox::new(Seed::Small);
            sb.set_rate_limit(1_000_000, Duration::from_secs(60));
            let handle = sb.serve(listener).unwrap();
            c.insert("subdomain".into(), DEMO_SUBDOMAIN.into());
            c.insert("api_token".into(), DEMO_API_TOKEN.into());
            let config = ProviderConfig {
                syncro: syncro::client::SyncroSettings {
                    requests: 1_000_000,
                    api_base: SyncroSandbox::api_base(&handle),
                    ..Default::default()
                },
                ..Default::default()
            };
            Setup {
                psa: Psa::Syncro(sb),
                _handle: handle,
                credentials: c,
                statuses: ["In Progress", "Waiting on Customer"],
                config,
            }
        }
        _ => {
            use halo::sandbox::*;
            let sb = HaloSandbox::new(Seed::Small);
            sb.set_rate_limit(1_000_000, Duration::from_secs(300));
            let handle = sb.serve(listener).unwrap();
            let host = handle.host();
            c.insert("auth_server_url".into(), format!("https://{host}/auth"));
            c.insert("resource_server_url".into(), format!("https://{host}/api"));
            c.insert("tenant".into(), DEMO_TENANT.into());
            c.insert("client_id".into(), DEMO_CLIENT_ID.into());
            c.insert("client_secret".into(), DEMO_CLIENT_SECRET.into());
            Setup {
                psa: Psa::Halo(sb),
                _handle: handle,
                credentials: c,
                statuses: ["In Progress", "With User"],
                config: ProviderConfig::default(),
            }
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn measure(store: Arc<dyn Store>, kind: ProviderKind, changes: usize, backend: &str) {
    let vault = Arc::new(Vault::new(&[5u8; 32]));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let setup = sandbox(kind).await;
    let state = AppState::new(
        store.clone(),
        vault.clone(),
        providers(&setup.config),
        false,
    )
    .with_public_url(Some(base));
    let server_state = state.clone();
    tokio::spawn(async move {
        mspbridge_web::serve(listener, server_state, std::future::pending())
            .await
            .unwrap();
    });
    let now = Utc::now();
    let tenant = store
        .create_tenant(&format!("Bench {}", kind.slug()), now)
        .await
        .unwrap();
    let integration = mspbridge_web::integrations::connect(
        &state,
        tenant.id,
        kind.slug(),
        None,
        &setup.credentials,
    )
    .await
    .unwrap();
    let options = SyncOptions {
        interval_minutes: 5,
        tickets: true,
        ..SyncOptions::default()
    };
    store
        .set_sync_options(tenant.id, integration.id, &options, now)
        .await
        .unwrap();
    let registered =
        mspbridge_web::sync_api::register_webhook(&state, tenant.id, integration.id, &options)
            .await
            .unwrap();
    match &setup.psa {
        // Syncro has no registration API: the admin pastes the URL into Syncro.
        Psa::Syncro(sb) => sb.set_notification_url(mspbridge_web::webhooks::url(
            &state,
            kind,
            tenant.id.0,
            integration.id.0,
        )),
        _ => assert!(registered.starts_with("registered"), "{registered}"),
    }
    store
        .request_sync(tenant.id, integration.id, now, chrono::Duration::zero())
        .await
        .unwrap();
    let engine = mspbridge_sync::Engine::new(
        store.clone(),
        vault.clone(),
        providers(&setup.config),
        mspbridge_sync::EngineConfig::default(),
        "bench",
    );
    let run = engine.tick().await.unwrap().expect("due");
    assert_eq!(run.result, RunResult::Success, "{run:?}");

    // Open tickets in the portal, by their PSA id.
    let links = open_tickets(&store, tenant.id, integration.id, setup.psa.ticket_ids()).await;
    assert!(!links.is_empty(), "no open tickets imported");
    let mut samples = Vec::with_capacity(changes);
    for i in 0..changes {
        let (ext, local) = links[i % links.len()];
        let ticket = store.get_ticket(tenant.id, local).await.unwrap();
        let target = if ticket.status == setup.statuses[0] {
            setup.statuses[1]
        } else {
            setup.statuses[0]
        };
        let t0 = Instant::now();
        assert!(setup.psa.set_status(ext, target));
        loop {
            if store.get_ticket(tenant.id, local).await.unwrap().status == target {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "change {i} never arrived"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        samples.push(t0.elapsed());
    }
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!(
        "| {} | {backend} | {changes} | {} | {} | {} | {} | {} |",
        kind.descriptor().name,
        links.len(),
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.95)),
        ms(*samples.last().unwrap()),
        ms(mean),
    );
}

/// Stripe: from a customer's change in the sandbox (renamed, `customer.updated`) to the
/// portal's copy showing it, through the endpoint mspbridge registered: signature checked
/// over the raw body, the event id recorded once, the customer read again from Stripe.
async fn measure_stripe(store: Arc<dyn Store>, changes: usize, backend: &str) {
    use mspbridge_providers::stripe::sandbox::{DEMO_RESTRICTED_KEY, StripeSandbox};
    let vault = Arc::new(Vault::new(&[5u8; 32]));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let sb = StripeSandbox::new(Seed::Small);
    let handle = sb
        .serve(mspbridge_sandbox::loopback_listener().await.unwrap())
        .unwrap();
    let config = ProviderConfig {
        stripe: mspbridge_providers::stripe::client::StripeSettings {
            api_base: Some(StripeSandbox::base_url(&handle)),
            ..Default::default()
        },
        ..Default::default()
    };
    let state = AppState::new(store.clone(), vault.clone(), providers(&config), false)
        .with_public_url(Some(base));
    let server_state = state.clone();
    tokio::spawn(async move {
        mspbridge_web::serve(listener, server_state, std::future::pending())
            .await
            .unwrap();
    });
    let now = Utc::now();
    let tenant = store.create_tenant("Bench stripe", now).await.unwrap();
    let mut creds = BTreeMap::new();
    creds.insert("secret_key".to_string(), DEMO_RESTRICTED_KEY.to_string());
    let integration =
        mspbridge_web::integrations::connect(&state, tenant.id, "stripe", None, &creds)
            .await
            .unwrap();
    assert_eq!(
        sb.endpoints().len(),
        1,
        "the webhook endpoint was registered"
    );
    store
        .set_sync_options(tenant.id, integration.id, &SyncOptions::default(), now)
        .await
        .unwrap();
    store
        .request_sync(tenant.id, integration.id, now, chrono::Duration::zero())
        .await
        .unwrap();
    let engine = mspbridge_sync::Engine::new(
        store.clone(),
        vault,
        providers(&config),
        mspbridge_sync::EngineConfig::default(),
        "bench",
    );
    let run = engine.tick().await.unwrap().expect("due");
    assert_eq!(run.result, RunResult::Success, "{run:?}");
    let customers: Vec<String> = sb.customers().into_iter().map(|c| c.id).take(20).collect();
    let mut samples = Vec::with_capacity(changes);
    for i in 0..changes {
        let id = &customers[i % customers.len()];
        let name = format!("Renamed {i}");
        let t0 = Instant::now();
        sb.update_customer(id, Some(&name), None);
        loop {
            let c = store
                .billing_customer(tenant.id, integration.id, id)
                .await
                .unwrap();
            if c.and_then(|c| c.name).as_deref() == Some(name.as_str()) {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "change {i} never arrived"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        samples.push(t0.elapsed());
    }
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!(
        "| Stripe | {backend} | {changes} | {} | {} | {} | {} | {} |",
        customers.len(),
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.95)),
        ms(*samples.last().unwrap()),
        ms(mean),
    );
}

/// (PSA id, portal id) of every imported open ticket.
async fn open_tickets(
    store: &Arc<dyn Store>,
    tenant: TenantId,
    integration: IntegrationId,
    ids: Vec<i64>,
) -> Vec<(i64, TicketId)> {
    let mut out = Vec::new();
    for ext in ids {
        if let Some(link) = store
            .find_link(tenant, integration, LinkedRecord::Ticket, &ext.to_string())
            .await
            .unwrap()
        {
            let id = TicketId(link.local_id);
            if !store.get_ticket(tenant, id).await.unwrap().closed {
                out.push((ext, id));
            }
        }
    }
    out
}

#[tokio::main]
async fn main() {
    mspbridge_providers::outbound::install_crypto_provider();
    let changes: usize = arg("--changes", "200").parse().unwrap();
    let db = arg("--db", "sqlite");
    println!(
        "| PSA | database | changes | open tickets cycled | p50 | p95 | max | mean |\n|---|---|---|---|---|---|---|---|"
    );
    let only = arg("--only", "");
    let fresh = |db: String| async move {
        match db.as_str() {
            "postgres" => mspbridge_store::test_support::postgres()
                .await
                .unwrap()
                .expect("set TEST_DATABASE_URL for --db postgres"),
            _ => mspbridge_store::test_support::sqlite().await.unwrap(),
        }
    };
    for kind in [
        ProviderKind::ConnectwiseManage,
        ProviderKind::HaloPsa,
        ProviderKind::Autotask,
        ProviderKind::Syncro,
    ] {
        if !only.is_empty() && only != kind.slug() {
            continue;
        }
        let test_db = match db.as_str() {
            "postgres" => mspbridge_store::test_support::postgres()
                .await
                .unwrap()
                .expect("set TEST_DATABASE_URL for --db postgres"),
            _ => mspbridge_store::test_support::sqlite().await.unwrap(),
        };
        measure(test_db.store.clone(), kind, changes, &db).await;
    }
    if only.is_empty() || only == "stripe" {
        let test_db = fresh(db.clone()).await;
        measure_stripe(test_db.store.clone(), changes, &db).await;
    }
}
