#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]
//! The portal side the provider engine tests share: a tenant with one connected
//! integration on a throwaway database, the standard contact options, an engine over a
//! provider configuration, a run, and the users a run produced.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::integration::{ConnectionOutcome, TestReport};
use mspbridge_domain::sync::{ContactTypeRule, RunResult, SyncOptions};
use mspbridge_domain::{IntegrationId, RoleId, SecretString, TenantId};
use mspbridge_providers::http::RetryPolicy;
use mspbridge_providers::{OutboundPolicy, ProviderConfig, Providers};
use mspbridge_store::test_support::TestDb;
use mspbridge_store::{NewIntegration, Store};
use mspbridge_sync::{Engine, EngineConfig, RunSummary};
use mspbridge_vault::Vault;

pub struct Portal {
    pub db: TestDb,
    pub tenant: TenantId,
    pub integration: IntegrationId,
    pub roles: BTreeMap<String, RoleId>,
    pub vault: Arc<Vault>,
}

impl Portal {
    /// A tenant with `provider` connected with these settings and secrets.
    pub async fn connect(
        db: TestDb,
        provider: ProviderKind,
        settings: serde_json::Value,
        secrets: &[(&str, &str)],
    ) -> Portal {
        mspbridge_providers::outbound::install_crypto_provider();
        let vault = Arc::new(Vault::new(&[7u8; 32]));
        let s = &db.store;
        let t = s.create_tenant("MSP", Utc::now()).await.unwrap();
        let secrets = secrets
            .iter()
            .map(|(k, v)| (k.to_string(), SecretString::new(*v)))
            .collect();
        let i = s
            .create_integration(
                t.id,
                NewIntegration {
                    provider,
                    nickname: None,
                    settings,
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
        Portal {
            db,
            tenant: t.id,
            integration: i.id,
            roles,
            vault,
        }
    }

    pub fn store(&self) -> &dyn Store {
        self.db.store.as_ref()
    }

    /// An engine over this database with `providers` (loopback allowed).
    pub fn engine(&self, providers: ProviderConfig, config: EngineConfig) -> Engine {
        Engine::new(
            self.db.store.clone(),
            self.vault.clone(),
            Providers::new(ProviderConfig {
                outbound: OutboundPolicy {
                    allow_private: true,
                },
                ..providers
            }),
            config,
            "w1",
        )
    }

    /// Auto-import with Viewer by default, Admin for primary contacts and Standard User
    /// for the "IT Contact" type.
    pub fn standard_options(&self) -> SyncOptions {
        SyncOptions {
            auto_import_contacts: true,
            default_role_id: Some(self.roles["Viewer"]),
            primary_contact_role_id: Some(self.roles["Admin"]),
            contact_type_rules: vec![ContactTypeRule {
                contact_type: "IT Contact".into(),
                role_id: self.roles["Standard User"],
            }],
            ..SyncOptions::default()
        }
    }

    pub async fn configure(&self, options: &SyncOptions) {
        self.store()
            .set_sync_options(self.tenant, self.integration, options, Utc::now())
            .await
            .unwrap();
    }

    pub async fn sync(&self, engine: &Engine) -> RunSummary {
        self.store()
            .reactivate(self.tenant, self.integration, Utc::now())
            .await
            .unwrap();
        engine.tick().await.unwrap().expect("due")
    }

    /// (email, role name, status, role reason) of every portal user, sorted.
    pub async fn users(&self) -> Vec<(String, String, String, String)> {
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
                    u.role_reason.unwrap_or_default(),
                ));
            }
        }
        out.sort();
        out
    }
}

/// Everything a sync puts in the portal, in a comparable form: companies (name, active),
/// users (email, role, status), staff (email, active) and tickets (summary, status,
/// closed, company, contact's and assignee's emails, notes as body and visibility).
#[derive(Debug, PartialEq, Eq)]
pub struct State {
    pub companies: Vec<(String, bool)>,
    pub users: Vec<(String, String, String)>,
    pub staff: Vec<(String, bool)>,
    pub tickets: Vec<TicketState>,
}

pub type TicketState = (
    String,
    String,
    bool,
    String,
    Option<String>,
    Option<String>,
    Vec<(String, bool)>,
);

impl Portal {
    pub async fn state(&self) -> State {
        let s = self.store();
        let companies = s.list_companies(self.tenant).await.unwrap();
        let company_names: BTreeMap<_, _> =
            companies.iter().map(|c| (c.id, c.name.clone())).collect();
        let mut user_emails = BTreeMap::new();
        for c in &companies {
            for u in s.list_company_users(self.tenant, c.id).await.unwrap() {
                user_emails.insert(u.id, u.email.unwrap_or_default());
            }
        }
        let staff_users = s.list_staff_users(self.tenant).await.unwrap();
        let staff_emails: BTreeMap<_, _> = staff_users
            .iter()
            .map(|u| (u.id, u.email.clone()))
            .collect();
        let mut tickets = Vec::new();
        for t in s
            .list_tickets(self.tenant, None, None, None, 10_000)
            .await
            .unwrap()
        {
            let mut notes: Vec<(String, bool)> = s
                .list_ticket_notes(self.tenant, t.id)
                .await
                .unwrap()
                .into_iter()
                .map(|n| (n.body, n.internal))
                .collect();
            notes.sort();
            tickets.push((
                t.summary,
                t.status,
                t.closed,
                company_names[&t.company_id].clone(),
                t.contact_id.map(|c| user_emails[&c].clone()),
                t.assignee_id.map(|a| staff_emails[&a].clone()),
                notes,
            ));
        }
        tickets.sort();
        let mut companies: Vec<_> = companies.into_iter().map(|c| (c.name, c.active)).collect();
        companies.sort();
        let mut staff: Vec<_> = staff_users
            .into_iter()
            .map(|u| (u.email, u.active))
            .collect();
        staff.sort();
        State {
            companies,
            users: self
                .users()
                .await
                .into_iter()
                .map(|u| (u.0, u.1, u.2))
                .collect(),
            staff,
            tickets,
        }
    }
}

/// A vendor endpoint down for a whole run: every request to it answers 503.
pub fn outage() -> mspbridge_sandbox::Fault {
    mspbridge_sandbox::Fault::Status {
        status: 503,
        body: "{}".into(),
        retry_after: None,
    }
}

/// The fault test every PSA runs: `endpoint` answers 503 for one whole run (partial: what
/// belongs to its records waits), then a clean run must give exactly `clean`, the state
/// of a clean import of the same data, and a run after that must change nothing.
pub async fn outage_then_clean_run(
    portal: &Portal,
    engine: &Engine,
    faults: &mspbridge_sandbox::Faults,
    endpoint: &str,
    clean: &State,
) {
    let backend = portal.store().backend();
    faults.push_n(endpoint, outage(), 10_000);
    let run = portal.sync(engine).await;
    assert_eq!(
        run.result,
        RunResult::Partial,
        "{backend}: {endpoint} down: {run:?}"
    );
    faults.clear();
    let run = portal.sync(engine).await;
    assert_eq!(
        run.result,
        RunResult::Success,
        "{backend}: after {endpoint} came back: {run:?}"
    );
    assert_eq!(
        &portal.state().await,
        clean,
        "{backend}: {endpoint} down for one run, then a clean run"
    );
    let run = portal.sync(engine).await;
    let created: u64 = run.counts.values().map(|c| c.created).sum();
    assert_eq!(
        (run.result, created),
        (RunResult::Success, 0),
        "{backend}: {run:?}"
    );
}

/// Quick retries for sandboxes on loopback; `page_size` for the source; a reconciling
/// (full) pass on every run when `reconcile`, else once a day.
pub fn config(page_size: Option<usize>, reconcile: bool) -> EngineConfig {
    EngineConfig {
        page_size,
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
    }
}
