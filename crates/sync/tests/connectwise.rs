#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The sync engine on ConnectWise Manage with tickets, through the ConnectWise sandbox, on
//! SQLite and (with TEST_DATABASE_URL) PostgreSQL: a parent endpoint down for one run,
//! then a clean run, gives exactly the state of a clean import.

mod common;

use common::Portal;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::sync::*;
use mspbridge_providers::ProviderConfig;
use mspbridge_providers::connectwise::sandbox::*;
use mspbridge_sandbox::{SandboxHandle, Seed};
use mspbridge_store::test_support::TestDb;
use mspbridge_sync::Engine;

struct World {
    portal: Portal,
    sandbox: CwSandbox,
    _handle: SandboxHandle,
}

impl std::ops::Deref for World {
    type Target = Portal;
    fn deref(&self) -> &Portal {
        &self.portal
    }
}

impl World {
    async fn new(db: TestDb, companies: u32) -> World {
        let sandbox = CwSandbox::new(Seed::Companies(companies));
        let handle = sandbox
            .serve(mspbridge_sandbox::loopback_listener().await.unwrap())
            .unwrap();
        let portal = Portal::connect(
            db,
            ProviderKind::ConnectwiseManage,
            serde_json::json!({"site": handle.host(), "company_id": DEMO_COMPANY_ID,
                "public_key": DEMO_PUBLIC_KEY, "client_id": DEMO_CLIENT_ID}),
            &[("private_key", DEMO_PRIVATE_KEY)],
        )
        .await;
        World {
            portal,
            sandbox,
            _handle: handle,
        }
    }

    fn engine(&self) -> Engine {
        self.portal
            .engine(ProviderConfig::default(), common::config(Some(20), false))
    }

    async fn configure(&self) {
        let o = SyncOptions {
            tickets: true,
            ..self.portal.standard_options()
        };
        self.portal.configure(&o).await;
    }
}

/// A parent endpoint (companies, contacts, members) down for one run, then a clean run,
/// gives exactly the state of a clean import: companies, users, technicians, tickets and
/// notes.
#[tokio::test]
async fn connectwise_a_parent_endpoint_down_for_one_run_then_a_clean_run_gives_the_clean_state() {
    let clean = World::new(mspbridge_store::test_support::sqlite().await.unwrap(), 8).await;
    clean.configure().await;
    let run = clean.sync(&clean.engine()).await;
    assert_eq!(run.result, RunResult::Success, "{run:?}");
    let clean_state = clean.state().await;
    assert!(!clean_state.tickets.is_empty() && !clean_state.users.is_empty());
    assert!(
        clean_state.tickets.iter().any(|t| t.5.is_some()),
        "some tickets have an assignee"
    );
    for endpoint in ["/company/companies", "/company/contacts", "/system/members"] {
        for db in mspbridge_store::test_support::all().await.unwrap() {
            let w = World::new(db, 8).await;
            w.configure().await;
            common::outage_then_clean_run(
                &w,
                &w.engine(),
                &w.sandbox.faults,
                endpoint,
                &clean_state,
            )
            .await;
        }
    }
}

/// A NUL character in vendor text (PostgreSQL refuses it in text) is removed from that
/// record alone, logged, and the rest of the page syncs; SQLite and PostgreSQL store the
/// same.
#[tokio::test]
async fn nul_characters_in_vendor_text_are_removed_and_logged_on_both_databases() {
    let mut states = Vec::new();
    for db in mspbridge_store::test_support::all().await.unwrap() {
        let w = World::new(db, 8).await;
        w.configure().await;
        let ticket_id = w.sandbox.with_data(|d| {
            d.companies[0].name = "Nul\0 Industries".into();
            let c = d
                .contacts
                .iter_mut()
                .find(|c| !c.inactive_flag && !c.communication_items.is_empty())
                .unwrap();
            c.last_name = "O\0Brien".into();
            let company = d.companies[1].id;
            let t = d
                .tickets
                .iter_mut()
                .find(|t| t.company.as_ref().is_some_and(|c| c.id == company))
                .unwrap();
            t.summary = "Printer\0 on fire".into();
            let id = t.id;
            // Its last note (the first discussion note is the ticket's description).
            let n = d.notes.iter_mut().rfind(|n| n.ticket_id == id).unwrap();
            n.text = "Restarted\0 it".into();
            id
        });
        let run = w.sync(&w.engine()).await;
        let backend = w.store().backend();
        assert_eq!(run.result, RunResult::Success, "{backend}: {run:?}");
        let state = w.state().await;
        assert!(
            state.companies.iter().any(|c| c.0 == "Nul Industries"),
            "{backend}: {:?}",
            state.companies
        );
        let ticket = state
            .tickets
            .iter()
            .find(|t| t.0 == "Printer on fire")
            .unwrap_or_else(|| panic!("{backend}: ticket {ticket_id}: {:?}", state.tickets));
        assert!(ticket.6.iter().all(|n| !n.0.contains('\0')));
        assert!(
            ticket.6.iter().any(|n| n.0 == "Restarted it"),
            "{backend}: {:?}",
            ticket.6
        );
        let events = w
            .store()
            .list_events(w.tenant, run.run_id, Some(EventLevel::Warning), None, 100)
            .await
            .unwrap();
        for record in ["companies", "contacts", "tickets"] {
            assert!(
                events.iter().any(|e| e
                    .message
                    .contains(&format!("1 {record} on this page carried NUL"))),
                "{backend}: {record}: {events:?}"
            );
        }
        states.push(state);
    }
    assert!(
        states.windows(2).all(|w| w[0] == w[1]),
        "both databases store the same"
    );
}
