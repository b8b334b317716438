#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The sync engine on Syncro, through the Syncro sandbox, on SQLite and (with
//! TEST_DATABASE_URL) PostgreSQL: import with the customer's own person as primary
//! contact, full listings every run that write nothing when nothing changed, and a
//! deleted contact deactivated by the reconciling pass.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::integration::*;
use mspbridge_domain::sync::*;
use mspbridge_domain::*;
use mspbridge_providers::http::RetryPolicy;
use mspbridge_providers::syncro::client::SyncroSettings;
use mspbridge_providers::syncro::sandbox::*;
use mspbridge_providers::{OutboundPolicy, ProviderConfig, Providers};
use mspbridge_sandbox::{SandboxHandle, Seed};
use mspbridge_store::test_support::TestDb;
use mspbridge_store::*;
use mspbridge_sync::{Engine, EngineConfig, RunSummary};
use mspbridge_vault::Vault;

struct World {
    db: TestDb,
    sandbox: SyncroSandbox,
    handle: SandboxHandle,
    tenant: TenantId,
    integration: IntegrationId,
    roles: BTreeMap<String, RoleId>,
    vault: Arc<Vault>,
}

impl World {
    async fn new(db: TestDb, customers: u32) -> World {
        mspbridge_providers::outbound::install_crypto_provider();
        let sandbox = SyncroSandbox::new(Seed::Companies(customers));
        let handle = sandbox
            .serve(mspbridge_sandbox::loopback_listener().await.unwrap())
            .unwrap();
        let vault = Arc::new(Vault::new(&[7u8; 32]));
        let s = &db.store;
        let t = s.create_tenant("MSP", Utc::now()).await.unwrap();
        let mut secrets = BTreeMap::new();
        secrets.insert("api_token".to_string(), SecretString::new(DEMO_API_TOKEN));
        let i = s
            .create_integration(
                t.id,
                NewIntegration {
                    provider: ProviderKind::Syncro,
                    nickname: None,
                    settings: serde_json::json!({ "subdomain": DEMO_SUBDOMAIN }),
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
        let roles = s
            .list_roles(t.id)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.name, r.id))
            .collect();
        World {
            db,
            sandbox,
            handle,
            tenant: t.id,
            integration: i.id,
            roles,
            vault,
        }
    }

    fn store(&self) -> &dyn Store {
        self.db.store.as_ref()
    }

    fn engine(&self, reconcile: bool) -> Engine {
        let providers = Providers::new(ProviderConfig {
            outbound: OutboundPolicy {
                allow_private: true,
            },
            syncro: SyncroSettings {
                requests: 100_000,
                api_base: SyncroSandbox::api_base(&self.handle),
                ..SyncroSettings::default()
            },
            ..Default::default()
        });
        let config = EngineConfig {
            retry: RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_secs(1),
                budget: 100_000,
                timeout: Duration::from_secs(5),
            },
            reconcile_every: if reconcile {
                chrono::Duration::zero()
            } else {
                chrono::Duration::hours(24)
            },
            ..EngineConfig::default()
        };
        Engine::new(
            self.db.store.clone(),
            self.vault.clone(),
            providers,
            config,
            "w1",
        )
    }

    async fn configure(&self) {
        let o = SyncOptions {
            auto_import_contacts: true,
            default_role_id: Some(self.roles["Viewer"]),
            primary_contact_role_id: Some(self.roles["Admin"]),
            skip_inactive_companies: false,
            ..SyncOptions::default()
        };
        self.store()
            .set_sync_options(self.tenant, self.integration, &o, Utc::now())
            .await
            .unwrap();
    }

    async fn sync(&self, engine: &Engine) -> RunSummary {
        self.store()
            .reactivate(self.tenant, self.integration, Utc::now())
            .await
            .unwrap();
        engine.tick().await.unwrap().expect("due")
    }

    /// (email, role name, status) of every portal user, sorted.
    async fn users(&self) -> Vec<(String, String, String)> {
        let names: BTreeMap<RoleId, String> =
            self.roles.iter().map(|(k, v)| (*v, k.clone())).collect();
        let mut out = Vec::new();
        for c in self.store().list_companies(self.tenant).await.unwrap() {
            for u in self
                .store()
                .list_company_users(self.tenant, c.id)
                .await
                .unwrap()
            {
                out.push((
                    u.email.unwrap_or_default(),
                    names[&u.role_id].clone(),
                    u.status.as_str().to_string(),
                ));
            }
        }
        out.sort();
        out
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
