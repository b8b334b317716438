#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The sync engine on Syncro, through the Syncro sandbox, on SQLite and (with
//! TEST_DATABASE_URL) PostgreSQL: import with the customer's own person as primary
//! contact, full listings every run that write nothing when nothing changed, and a
//! deleted contact deactivated by the reconciling pass.

mod common;

use std::time::Duration;

use common::Portal;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::sync::*;
use mspbridge_providers::ProviderConfig;
use mspbridge_providers::syncro::client::SyncroSettings;
use mspbridge_providers::syncro::sandbox::*;
use mspbridge_sandbox::{SandboxHandle, Seed};
use mspbridge_store::test_support::TestDb;
use mspbridge_sync::Engine;

struct World {
    portal: Portal,
    sandbox: SyncroSandbox,
    handle: SandboxHandle,
}

impl std::ops::Deref for World {
    type Target = Portal;
    fn deref(&self) -> &Portal {
        &self.portal
    }
}

impl World {
    async fn new(db: TestDb, customers: u32) -> World {
        let sandbox = SyncroSandbox::new(Seed::Companies(customers));
        let handle = sandbox
            .serve(mspbridge_sandbox::loopback_listener().await.unwrap())
            .unwrap();
        let portal = Portal::connect(
            db,
            ProviderKind::Syncro,
            serde_json::json!({ "subdomain": DEMO_SUBDOMAIN }),
            &[("api_token", DEMO_API_TOKEN)],
        )
        .await;
        World {
            portal,
            sandbox,
            handle,
        }
    }

    fn engine(&self, reconcile: bool) -> Engine {
        self.portal.engine(
            ProviderConfig {
                syncro: SyncroSettings {
                    requests: 100_000,
                    api_base: SyncroSandbox::api_base(&self.handle),
                    ..SyncroSettings::default()
                },
                ..Default::default()
            },
            common::config(None, reconcile),
        )
    }

    /// Syncro has no contact types: the primary-contact rule and the default role apply.
    async fn configure(&self) {
        let o = SyncOptions {
            contact_type_rules: vec![],
            skip_inactive_companies: false,
            ..self.portal.standard_options()
        };
        self.portal.configure(&o).await;
    }
}

#[tokio::test]
async fn syncro_imports_persons_as_primary_contacts_and_a_full_listing_of_nothing_new_writes_nothing()
 {
    for db in mspbridge_store::test_support::all().await.unwrap() {
        let w = World::new(db, 10).await;
        w.configure().await;
        let e = w.engine(false);
        let first = w.sync(&e).await;
        let backend = w.store().backend();
        assert_eq!(first.result, RunResult::Success, "{backend}: {first:?}");
        let data = w.sandbox.with_data(|d| d.clone());
        assert_eq!(
            first.counts[&RecordType::Companies].created,
            10,
            "{backend}"
        );
        assert_eq!(
            first.counts[&RecordType::Technicians].created as usize,
            data.users.len()
        );
        let users = w.users().await;
        // The customer's own person is its primary contact: Admin by the primary rule.
        let person = data
            .customers
            .iter()
            .find(|c| !c.no_email && !c.disabled)
            .unwrap();
        let email = person.email.clone().unwrap().to_lowercase();
        let u = users.iter().find(|u| u.0 == email).unwrap();
        assert_eq!(u.1, "Admin", "{u:?}");
        // Contacts are Viewers (the default role).
        let contact = data.contacts.iter().find(|c| c.email.is_some()).unwrap();
        let c = users
            .iter()
            .find(|u| Some(u.0.as_str()) == contact.email.as_deref())
            .unwrap();
        assert_eq!(c.1, "Viewer");

        // Syncro cannot filter by update time: the next run lists everything again and
        // the content hash keeps it from writing anything.
        let second = w.sync(&e).await;
        assert_eq!(second.result, RunResult::Success);
        let seen: u64 = second.counts.values().map(|c| c.seen).sum();
        let first_seen: u64 = first.counts.values().map(|c| c.seen).sum();
        assert_eq!(seen, first_seen, "a full listing");
        for (r, c) in &second.counts {
            assert_eq!(
                (c.created, c.updated, c.deactivated),
                (0, 0, 0),
                "{r:?} {c:?}"
            );
        }
        assert_eq!(w.users().await, users);

        // A contact deleted in Syncro is deactivated by the reconciling pass.
        let gone = w.sandbox.with_data(|d| {
            let i = d.contacts.iter().position(|c| c.email.is_some()).unwrap();
            d.contacts.remove(i).email.unwrap().to_lowercase()
        });
        let run = w.sync(&w.engine(true)).await;
        assert_eq!(run.counts[&RecordType::Contacts].deactivated, 1, "{run:?}");
        let after = w.users().await;
        assert!(
            after.iter().any(|u| u.0 == gone && u.2 == "disabled"),
            "{after:?}"
        );
    }
}

#[tokio::test]
async fn syncro_import_interrupted_by_a_persistent_error_resumes_to_the_clean_state() {
    for db in mspbridge_store::test_support::all().await.unwrap() {
        let w = World::new(db, 12).await;
        w.configure().await;
        // Contacts page 3 keeps failing (page size 25): the run is partial.
        w.sandbox.faults.push_n(
            "/contacts",
            mspbridge_sandbox::Fault::Delay(Duration::ZERO),
            2,
        );
        w.sandbox.faults.push_n(
            "/contacts",
            mspbridge_sandbox::Fault::Status {
                status: 502,
                body: "{\"error\":\"Bad gateway\"}".into(),
                retry_after: None,
            },
            3,
        );
        let e = w.engine(false);
        let run = w.sync(&e).await;
        let backend = w.store().backend();
        assert_eq!(run.result, RunResult::Partial, "{backend}: {run:?}");
        assert!(
            !w.users().await.is_empty(),
            "pages before the failure are kept"
        );
        let resumed = w.sync(&e).await;
        assert_eq!(resumed.result, RunResult::Success, "{resumed:?}");
        let after = w.users().await;

        let clean = World::new(mspbridge_store::test_support::sqlite().await.unwrap(), 12).await;
        clean.configure().await;
        clean.sync(&clean.engine(false)).await;
        assert_eq!(
            after,
            clean.users().await,
            "{backend}: same as a clean import"
        );
    }
}

/// A parent endpoint (customers, contacts, users) down for one run, then a clean run,
/// gives exactly the state of a clean import: companies, users, technicians, tickets and
/// comments.
#[tokio::test]
async fn syncro_a_parent_endpoint_down_for_one_run_then_a_clean_run_gives_the_clean_state() {
    let options = |w: &World| SyncOptions {
        tickets: true,
        contact_type_rules: vec![],
        skip_inactive_companies: false,
        ..w.portal.standard_options()
    };
    let clean = World::new(mspbridge_store::test_support::sqlite().await.unwrap(), 8).await;
    clean.sandbox.with_data(|d| add_tickets(d, 3, 2));
    clean.portal.configure(&options(&clean)).await;
    let run = clean.sync(&clean.engine(false)).await;
    assert_eq!(run.result, RunResult::Success, "{run:?}");
    let clean_state = clean.state().await;
    assert!(!clean_state.tickets.is_empty() && !clean_state.users.is_empty());
    for endpoint in ["/customers", "/contacts", "/users"] {
        for db in mspbridge_store::test_support::all().await.unwrap() {
            let w = World::new(db, 8).await;
            w.sandbox.with_data(|d| add_tickets(d, 3, 2));
            w.portal.configure(&options(&w)).await;
            let e = w.engine(false);
            common::outage_then_clean_run(&w, &e, &w.sandbox.faults, endpoint, &clean_state).await;
        }
    }
}
