#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The sync engine on Halo PSA, through the Halo sandbox, on SQLite and (with
//! TEST_DATABASE_URL) PostgreSQL: import and idempotence, the role chain with Halo's user
//! roles and main contacts, incremental passes on `lastupdatefromdate`, deactivation after
//! a complete pass, a run interrupted mid-import and resumed, and a persistent 5xx.

mod common;

use std::time::Duration;

use common::Portal;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::sync::*;
use mspbridge_providers::ProviderConfig;
use mspbridge_providers::halo::client::HaloLimits;
use mspbridge_providers::halo::sandbox::*;
use mspbridge_sandbox::{Fault, SandboxHandle, Seed};
use mspbridge_store::test_support::TestDb;
use mspbridge_sync::{Engine, EngineConfig};

struct World {
    portal: Portal,
    sandbox: HaloSandbox,
    _handle: SandboxHandle,
}

impl std::ops::Deref for World {
    type Target = Portal;
    fn deref(&self) -> &Portal {
        &self.portal
    }
}

impl World {
    async fn new(db: TestDb, clients: u32) -> World {
        let sandbox = HaloSandbox::new(Seed::Companies(clients));
        let handle = sandbox
            .serve(mspbridge_sandbox::loopback_listener().await.unwrap())
            .unwrap();
        let host = handle.host();
        let portal = Portal::connect(
            db,
            ProviderKind::HaloPsa,
            serde_json::json!({
                "auth_server_url": format!("https://{host}/auth"),
                "resource_server_url": format!("https://{host}/api"),
                "tenant": DEMO_TENANT,
                "client_id": DEMO_CLIENT_ID,
            }),
            &[("client_secret", DEMO_CLIENT_SECRET)],
        )
        .await;
        World {
            portal,
            sandbox,
            _handle: handle,
        }
    }

    fn engine(&self, config: EngineConfig) -> Engine {
        self.portal.engine(
            ProviderConfig {
                halo_limits: HaloLimits {
                    backoff_floor: Duration::from_millis(50),
                    ..HaloLimits::default()
                },
                ..Default::default()
            },
            config,
        )
    }

    async fn configure(&self) {
        self.portal.configure(&self.portal.standard_options()).await;
    }
}

fn config(page_size: usize) -> EngineConfig {
    common::config(Some(page_size), false)
}

async fn worlds(clients: u32) -> Vec<World> {
    let mut out = Vec::new();
    for db in mspbridge_store::test_support::all().await.unwrap() {
        out.push(World::new(db, clients).await);
    }
    out
}

#[tokio::test]
async fn halo_imports_with_roles_then_a_second_run_changes_nothing() {
    for w in worlds(12).await {
        w.configure().await;
        let e = w.engine(config(25));
        let first = w.sync(&e).await;
        let backend = w.store().backend();
        assert_eq!(first.result, RunResult::Success, "{backend}: {first:?}");
        let data = w.sandbox.with_data(|d| d.clone());
        let c = first.counts[&RecordType::Companies];
        // Inactive clients are skipped (the default option).
        let active = data.clients.iter().filter(|c| !c.inactive).count() as u64;
        assert!(active < 12, "the seed has inactive clients");
        assert_eq!((c.seen, c.created), (12, active), "{backend}");
        let t = first.counts[&RecordType::Technicians];
        assert_eq!(
            t.created as usize,
            data.agents.iter().filter(|a| !a.isdisabled).count()
        );
        let users = w.users().await;
        let active_clients: Vec<i64> = data
            .clients
            .iter()
            .filter(|c| !c.inactive)
            .map(|c| c.id)
            .collect();
        let importable = data
            .users
            .iter()
            .filter(|u| !u.inactive && u.emailaddress.is_some())
            .filter(|u| u.client_id.is_some_and(|c| active_clients.contains(&c)))
            .count();
        assert_eq!(users.len(), importable, "{backend}");
        // The chain: a main contact is Admin, an "IT Contact" role is Standard User
        // (unless the contact is also a main contact), everyone else the default.
        let by_email = |email: &str| users.iter().find(|u| u.0 == email).unwrap();
        let imported = |u: &&mspbridge_providers::halo::wire::User| {
            !u.inactive
                && u.emailaddress.is_some()
                && u.client_id.is_some_and(|c| active_clients.contains(&c))
        };
        let main = data
            .users
            .iter()
            .filter(imported)
            .find(|u| u.ismaincontact)
            .unwrap();
        let m = by_email(main.emailaddress.as_deref().unwrap());
        let it = data
            .users
            .iter()
            .filter(imported)
            .find(|u| u.role_list.as_deref() == Some("IT Contact"));
        let it = it.expect("the seed has an imported user with the IT Contact role");
        let u = by_email(it.emailaddress.as_deref().unwrap());
        assert_eq!(u.1, "Standard User", "{u:?}");
        assert!(u.3.contains("IT Contact"), "{u:?}");
        assert!(
            m.1 == "Admin" || m.3.contains("IT Contact"),
            "main contact: {m:?}"
        );
        assert!(users.iter().any(|u| u.3.contains("Halo PSA")), "{users:?}");

        let second = w.sync(&e).await;
        assert_eq!(second.result, RunResult::Success);
        for (r, c) in &second.counts {
            assert_eq!(
                (c.created, c.updated, c.deactivated),
                (0, 0, 0),
                "{r:?} {c:?}"
            );
        }
        assert_eq!(w.users().await, users, "{backend}: two runs = one");
    }
}

#[tokio::test]
async fn halo_incremental_picks_up_a_change_and_a_full_pass_deactivates_a_removed_user() {
    for w in worlds(6).await {
        w.configure().await;
        let e = w.engine(config(100));
        w.sync(&e).await;
        let (renamed, gone) = w.sandbox.with_data(|d| {
            let latest = d.users.iter().filter_map(|u| u.ulastupdate).max().unwrap();
            let a = d
                .users
                .iter_mut()
                .find(|u| !u.inactive && u.emailaddress.is_some())
                .unwrap();
            a.surname = "Renamed".into();
            a.ulastupdate = Some(latest + chrono::Duration::minutes(10));
            let renamed = a.emailaddress.clone().unwrap();
            let i = d
                .users
                .iter()
                .rposition(|u| !u.inactive && u.emailaddress.is_some())
                .unwrap();
            let gone = d.users.remove(i).emailaddress.unwrap();
            (renamed, gone)
        });
        let run = w.sync(&e).await;
        let c = run.counts[&RecordType::Contacts];
        assert_eq!(c.updated, 1, "{c:?}");
        assert!(c.seen < 5, "only changes are read: {c:?}");
        let users = w.users().await;
        assert!(
            users.iter().any(|u| u.0 == gone && u.2 == "imported"),
            "not yet: an incremental pass cannot see deletions"
        );
        let last = w
            .sandbox
            .seen()
            .into_iter()
            .rfind(|r| r.path == "/api/Users")
            .unwrap();
        assert!(last.query.iter().any(|(k, _)| k == "lastupdatefromdate"));

        // The daily reconcile (forced here) reads everything and deactivates the missing user.
        let mut cfg = config(100);
        cfg.reconcile_every = chrono::Duration::zero();
        let run = w.sync(&w.engine(cfg)).await;
        assert_eq!(run.result, RunResult::Success, "{run:?}");
        let users = w.users().await;
        assert!(
            users.iter().any(|u| u.0 == gone && u.2 == "disabled"),
            "{users:?}"
        );
        assert!(users.iter().any(|u| u.0 == renamed && u.2 == "imported"));
    }
}

#[tokio::test]
async fn halo_import_interrupted_by_a_persistent_error_resumes_to_the_clean_state() {
    for w in worlds(10).await {
        w.configure().await;
        // Users page 3 keeps failing: the run is partial, pages 1-2 stay committed.
        w.sandbox
            .faults
            .push_n("/api/Users", Fault::Delay(Duration::ZERO), 2);
        w.sandbox.faults.push_n(
            "/api/Users",
            Fault::Status {
                status: 503,
                body: "\"Service unavailable\"".into(),
                retry_after: None,
            },
            3,
        );
        let e = w.engine(config(20));
        let run = w.sync(&e).await;
        let backend = w.store().backend();
        assert_eq!(run.result, RunResult::Partial, "{backend}: {run:?}");
        assert!(
            run.error.as_deref().unwrap_or("").contains("503"),
            "{run:?}"
        );
        let partial = w.users().await.len();
        assert!(partial > 0, "the pages before the failure are kept");

        let resumed = w.sync(&e).await;
        assert_eq!(resumed.result, RunResult::Success, "{resumed:?}");
        let after = w.users().await;

        // A clean import of the same data in a fresh database gives the same portal.
        let clean = World::new(mspbridge_store::test_support::sqlite().await.unwrap(), 10).await;
        clean.configure().await;
        clean.sync(&clean.engine(config(20))).await;
        let strip = |v: Vec<(String, String, String, String)>| {
            v.into_iter().map(|u| (u.0, u.1, u.2)).collect::<Vec<_>>()
        };
        assert_eq!(strip(after), strip(clean.users().await), "{backend}");
    }
}

/// A parent endpoint (clients, users, agents) down for one run, then a clean run, gives
/// exactly the state of a clean import: companies, users, technicians, tickets and notes.
#[tokio::test]
async fn halo_a_parent_endpoint_down_for_one_run_then_a_clean_run_gives_the_clean_state() {
    let with_tickets = |w: &World| SyncOptions {
        tickets: true,
        ..w.portal.standard_options()
    };
    let clean = World::new(mspbridge_store::test_support::sqlite().await.unwrap(), 8).await;
    clean.sandbox.with_data(|d| add_tickets(d, 3, 2));
    clean.portal.configure(&with_tickets(&clean)).await;
    let run = clean.sync(&clean.engine(config(20))).await;
    assert_eq!(run.result, RunResult::Success, "{run:?}");
    let clean_state = clean.state().await;
    assert!(!clean_state.tickets.is_empty() && !clean_state.users.is_empty());
    for endpoint in ["/api/Client", "/api/Users", "/api/Agent"] {
        for w in worlds(8).await {
            w.sandbox.with_data(|d| add_tickets(d, 3, 2));
            w.portal.configure(&with_tickets(&w)).await;
            let e = w.engine(config(20));
            common::outage_then_clean_run(&w, &e, &w.sandbox.faults, endpoint, &clean_state).await;
        }
    }
}
