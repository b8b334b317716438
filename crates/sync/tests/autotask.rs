#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The sync engine on Autotask, through the Autotask sandbox, on SQLite and (with
//! TEST_DATABASE_URL) PostgreSQL: import with roles from the primary flag and contact
//! groups, incremental runs that read only changes, deactivation (an inactive contact,
//! a contact deleted upstream found by the reconciling pass), and an import interrupted
//! by a persistent error resuming to the state of a clean import.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::Portal;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::sync::*;
use mspbridge_providers::ProviderConfig;
use mspbridge_providers::autotask::client::AutotaskSettings;
use mspbridge_providers::autotask::sandbox::*;
use mspbridge_sandbox::{SandboxHandle, Seed};
use mspbridge_store::test_support::TestDb;
use mspbridge_sync::Engine;

struct World {
    portal: Portal,
    sandbox: AutotaskSandbox,
    handle: SandboxHandle,
}

impl std::ops::Deref for World {
    type Target = Portal;
    fn deref(&self) -> &Portal {
        &self.portal
    }
}

impl World {
    async fn new(db: TestDb, companies: u32) -> World {
        let sandbox = AutotaskSandbox::new(Seed::Companies(companies));
        let handle = sandbox
            .serve(mspbridge_sandbox::loopback_listener().await.unwrap())
            .unwrap();
        let portal = Portal::connect(
            db,
            ProviderKind::Autotask,
            serde_json::json!({ "username": DEMO_USERNAME }),
            &[
                ("secret", DEMO_SECRET),
                ("integration_code", DEMO_INTEGRATION_CODE),
            ],
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
                autotask: AutotaskSettings {
                    zone_lookup_url: AutotaskSandbox::zone_lookup_url(&self.handle),
                    ..AutotaskSettings::default()
                },
                ..Default::default()
            },
            common::config(Some(25), reconcile),
        )
    }

    async fn configure(&self) {
        let o = SyncOptions {
            skip_inactive_companies: false,
            ..self.portal.standard_options()
        };
        self.portal.configure(&o).await;
    }
}

#[tokio::test]
async fn autotask_imports_with_roles_reads_only_changes_and_deactivates() {
    for db in mspbridge_store::test_support::all().await.unwrap() {
        let w = World::new(db, 12).await;
        w.configure().await;
        let e = w.engine(false);
        let first = w.sync(&e).await;
        let backend = w.store().backend();
        assert_eq!(first.result, RunResult::Success, "{backend}: {first:?}");
        let data = w.sandbox.with_data(|d| d.clone());
        assert_eq!(first.counts[&RecordType::Companies].created, 12);
        assert_eq!(
            first.counts[&RecordType::Technicians].created as usize,
            data.resources.iter().filter(|r| r.is_active).count() - 1,
            "every active resource but the API user"
        );
        let users = w.users().await;
        let role_of = |email: &str| users.iter().find(|u| u.0 == email).map(|u| u.1.clone());
        let usable = |c: &&mspbridge_providers::autotask::wire::Contact| {
            c.email_address.is_some() && c.is_active == 1
        };
        // primaryContact: Admin by the primary-contact rule.
        let primary = data
            .contacts
            .iter()
            .filter(usable)
            .find(|c| c.primary_contact)
            .unwrap();
        assert_eq!(
            role_of(primary.email_address.as_deref().unwrap()).as_deref(),
            Some("Admin")
        );
        // In the "IT Contact" group: Standard User by the contact-type rule.
        let it = data
            .contacts
            .iter()
            .filter(usable)
            .find(|c| {
                !c.primary_contact
                    && data
                        .memberships
                        .iter()
                        .any(|m| m.contact_id == c.id && m.contact_group_id == 1)
            })
            .unwrap();
        assert_eq!(
            role_of(it.email_address.as_deref().unwrap()).as_deref(),
            Some("Standard User")
        );
        // Everyone else: the integration default.
        let plain = data
            .contacts
            .iter()
            .filter(usable)
            .find(|c| !c.primary_contact && !data.memberships.iter().any(|m| m.contact_id == c.id))
            .unwrap();
        assert_eq!(
            role_of(plain.email_address.as_deref().unwrap()).as_deref(),
            Some("Viewer")
        );

        // Nothing changed: the incremental run reads little and writes nothing.
        let second = w.sync(&e).await;
        assert_eq!(second.result, RunResult::Success);
        for (r, c) in &second.counts {
            assert_eq!(
                (c.created, c.updated, c.deactivated),
                (0, 0, 0),
                "{r:?} {c:?}"
            );
        }
        assert!(
            second.requests * 2 < first.requests,
            "incremental: {} requests vs {} for the import",
            second.requests,
            first.requests
        );
        assert_eq!(w.users().await, users);

        // An edit and a deactivation in Autotask are read by the next incremental run.
        let later = Utc::now();
        let (renamed, disabled) = w.sandbox.with_data(|d| {
            let mut picked = d
                .contacts
                .iter_mut()
                .filter(|c| c.email_address.is_some() && c.is_active == 1 && !c.primary_contact);
            let a = picked.next().unwrap();
            a.last_name = "Renamed".into();
            a.last_modified_date = Some(later);
            let a_email = a.email_address.clone().unwrap();
            let b = picked.next().unwrap();
            b.is_active = 0;
            b.last_modified_date = Some(later);
            (a_email, b.email_address.clone().unwrap())
        });
        let third = w.sync(&e).await;
        let c = &third.counts[&RecordType::Contacts];
        // The two changed (the deactivated one's record changed too), plus whatever the
        // 5-minute overlap before the watermark reads again unchanged.
        assert_eq!(
            (c.seen - c.unchanged, c.updated, c.deactivated, c.created),
            (2, 2, 1, 0),
            "{third:?}"
        );
        let after = w.users().await;
        assert!(
            after.iter().any(|u| u.0 == disabled && u.2 == "disabled"),
            "{after:?}"
        );
        assert!(after.iter().any(|u| u.0 == renamed && u.2 != "disabled"));

        // A contact deleted in Autotask is deactivated by the reconciling pass.
        let gone = w.sandbox.with_data(|d| {
            let i = d
                .contacts
                .iter()
                .position(|c| c.email_address.is_some() && c.is_active == 1)
                .unwrap();
            d.contacts.remove(i).email_address.unwrap()
        });
        let run = w.sync(&w.engine(true)).await;
        assert_eq!(run.result, RunResult::Success, "{run:?}");
        assert_eq!(run.counts[&RecordType::Contacts].deactivated, 1, "{run:?}");
        let after = w.users().await;
        assert!(
            after.iter().any(|u| u.0 == gone && u.2 == "disabled"),
            "{after:?}"
        );
    }
}

#[tokio::test]
async fn autotask_import_interrupted_by_a_persistent_error_resumes_to_the_clean_state() {
    for db in mspbridge_store::test_support::all().await.unwrap() {
        let w = World::new(db, 12).await;
        w.configure().await;
        // Contacts page 3 keeps failing (25 per page): the run is partial.
        w.sandbox.faults.push_n(
            "/Contacts/query",
            mspbridge_sandbox::Fault::Delay(Duration::ZERO),
            2,
        );
        w.sandbox.faults.push_n(
            "/Contacts/query",
            mspbridge_sandbox::Fault::Status {
                status: 502,
                body: "Bad gateway".into(),
                retry_after: None,
            },
            3,
        );
        let e = w.engine(false);
        let run = w.sync(&e).await;
        let backend = w.store().backend();
        assert_eq!(run.result, RunResult::Partial, "{backend}: {run:?}");
        let partial = w.users().await;
        assert!(!partial.is_empty(), "pages before the failure are kept");
        let resumed = w.sync(&e).await;
        assert_eq!(resumed.result, RunResult::Success, "{resumed:?}");
        let after = w.users().await;
        assert!(after.len() > partial.len());

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

/// A parent endpoint (companies, contacts, resources) down for one run, then a clean run,
/// gives exactly the state of a clean import: companies, users, technicians, tickets and
/// notes.
#[tokio::test]
async fn autotask_a_parent_endpoint_down_for_one_run_then_a_clean_run_gives_the_clean_state() {
    let options = |w: &World| SyncOptions {
        tickets: true,
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
    for endpoint in [
        "/V1.0/Companies/query",
        "/V1.0/Contacts/query",
        "/V1.0/Resources/query",
    ] {
        for db in mspbridge_store::test_support::all().await.unwrap() {
            let w = World::new(db, 8).await;
            w.sandbox.with_data(|d| add_tickets(d, 3, 2));
            w.portal.configure(&options(&w)).await;
            let e = w.engine(false);
            common::outage_then_clean_run(&w, &e, &w.sandbox.faults, endpoint, &clean_state).await;
        }
    }
}
