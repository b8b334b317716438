#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The sync engine against the ConnectWise sandbox, on SQLite and (with
//! TEST_DATABASE_URL) PostgreSQL.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use mspbridge_domain::auth::StaffRole;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::integration::*;
use mspbridge_domain::model::*;
use mspbridge_domain::sync::*;
use mspbridge_domain::*;
use mspbridge_providers::connectwise::client::RetryPolicy;
use mspbridge_providers::connectwise::sandbox::*;
use mspbridge_providers::{OutboundPolicy, ProviderConfig, Providers};
use mspbridge_sandbox::{Fault, SandboxHandle, Seed};
use mspbridge_store::test_support::TestDb;
use mspbridge_store::*;
use mspbridge_sync::{Engine, EngineConfig, RunSummary};
use mspbridge_vault::Vault;

struct World {
    db: TestDb,
    sandbox: CwSandbox,
    _handle: SandboxHandle,
    tenant: TenantId,
    integration: IntegrationId,
    roles: BTreeMap<String, RoleId>,
    vault: Arc<Vault>,
    offset: Arc<AtomicI64>,
}

fn ok_report() -> TestReport {
    TestReport {
        connection: ConnectionOutcome::Ok,
        areas: vec![],
        tested_at: Utc::now(),
        details: vec![],
    }
}

impl World {
    async fn new(db: TestDb, companies: u32) -> World {
        mspbridge_providers::outbound::install_crypto_provider();
        let sandbox = CwSandbox::new(Seed::Companies(companies));
        let handle = sandbox
            .serve(mspbridge_sandbox::loopback_listener().await.unwrap())
            .unwrap();
        let vault = Arc::new(Vault::new(&[5u8; 32]));
        let s = &db.store;
        let t = s.create_tenant("MSP", Utc::now()).await.unwrap();
        let mut secrets = BTreeMap::new();
        secrets.insert(
            "private_key".to_string(),
            SecretString::new(DEMO_PRIVATE_KEY),
        );
        let i = s
            .create_integration(
                t.id,
                NewIntegration {
                    provider: ProviderKind::ConnectwiseManage,
                    nickname: None,
                    settings: serde_json::json!({"site": handle.host(), "company_id": DEMO_COMPANY_ID, "public_key": DEMO_PUBLIC_KEY, "client_id": DEMO_CLIENT_ID}),
                    secrets,
                    report: ok_report(),
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
            _handle: handle,
            tenant: t.id,
            integration: i.id,
            roles,
            vault,
            offset: Arc::new(AtomicI64::new(0)),
        }
    }

    fn store(&self) -> &dyn Store {
        self.db.store.as_ref()
    }

    fn options(&self) -> SyncOptions {
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

    fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::seconds(self.offset.load(Ordering::SeqCst))
    }

    fn engine(&self, worker: &str, config: EngineConfig) -> Engine {
        let providers = Providers::new(ProviderConfig {
            outbound: OutboundPolicy {
                allow_private: true,
            },
            connectwise_client_id: None,
            ..Default::default()
        });
        let offset = self.offset.clone();
        Engine::new(
            self.db.store.clone(),
            self.vault.clone(),
            providers,
            config,
            worker,
        )
        .with_clock(Arc::new(move || {
            Utc::now() + chrono::Duration::seconds(offset.load(Ordering::SeqCst))
        }))
    }

    async fn configure(&self, o: SyncOptions) {
        self.store()
            .set_sync_options(self.tenant, self.integration, &o, self.now())
            .await
            .unwrap();
    }

    async fn sync(&self, engine: &Engine) -> RunSummary {
        self.store()
            .reactivate(self.tenant, self.integration, self.now())
            .await
            .unwrap();
        engine
            .tick()
            .await
            .unwrap()
            .expect("the integration was due")
    }

    /// The portal state a user sees, in a comparable form.
    async fn snapshot(
        &self,
    ) -> (
        Vec<(String, bool)>,
        Vec<(String, String, String, String)>,
        Vec<(String, bool)>,
    ) {
        let s = self.store();
        let companies = s.list_companies(self.tenant).await.unwrap();
        let role_names: BTreeMap<RoleId, String> =
            self.roles.iter().map(|(k, v)| (*v, k.clone())).collect();
        let mut users = Vec::new();
        for c in &companies {
            for u in s.list_company_users(self.tenant, c.id).await.unwrap() {
                users.push((
                    u.email.unwrap_or_default(),
                    role_names[&u.role_id].clone(),
                    u.status.as_str().to_string(),
                    u.role_reason.unwrap_or_default(),
                ));
            }
        }
        users.sort();
        let mut cs: Vec<_> = companies.into_iter().map(|c| (c.name, c.active)).collect();
        cs.sort();
        let mut staff: Vec<_> = s
            .list_staff_users(self.tenant)
            .await
            .unwrap()
            .into_iter()
            .map(|u| (u.email, u.active))
            .collect();
        staff.sort();
        (cs, users, staff)
    }
}

fn fast() -> EngineConfig {
    EngineConfig {
        page_size: Some(100),
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_secs(2),
            budget: 10_000,
            timeout: Duration::from_secs(2),
        },
        ..EngineConfig::default()
    }
}

async fn worlds(companies: u32) -> Vec<World> {
    let mut out = Vec::new();
    for db in mspbridge_store::test_support::all().await.unwrap() {
        out.push(World::new(db, companies).await);
    }
    out
}

#[tokio::test]
async fn initial_import_then_a_second_run_changes_nothing() {
    for w in worlds(30).await {
        w.configure(w.options()).await;
        let e = w.engine("w1", fast());
        let first = w.sync(&e).await;
        assert_eq!(first.result, RunResult::Success, "{:?}", first);
        let data = w.sandbox.with_data(|d| d.clone());
        let inactive_statuses = [2i64];
        let active_companies = data
            .companies
            .iter()
            .filter(|c| !inactive_statuses.contains(&c.status.as_ref().unwrap().id))
            .count();
        let c = first.counts[&RecordType::Companies];
        assert_eq!(
            (c.seen as usize, c.created as usize),
            (data.companies.len(), active_companies)
        );
        assert!(first.counts.values().all(|c| c.add_up()));
        let snap1 = w.snapshot().await;
        assert_eq!(snap1.0.len(), active_companies);
        assert_eq!(
            snap1.2.len(),
            data.members.iter().filter(|m| !m.inactive_flag).count()
        );
        assert!(!snap1.1.is_empty());
        let mut users = Vec::new();
        for company in w.store().list_companies(w.tenant).await.unwrap() {
            users.extend(
                w.store()
                    .list_company_users(w.tenant, company.id)
                    .await
                    .unwrap(),
            );
        }
        assert!(
            !users.is_empty() && users.iter().all(|u| u.phone.is_some()),
            "{}: phones are stored",
            w.store().backend()
        );

        let second = w.sync(&e).await;
        assert_eq!(second.result, RunResult::Success);
        for (r, c) in &second.counts {
            assert_eq!(
                (c.created, c.updated, c.deactivated),
                (0, 0, 0),
                "{r:?} {c:?}"
            );
        }
        assert_eq!(
            w.snapshot().await,
            snap1,
            "{}: two runs = one",
            w.store().backend()
        );
    }
}

#[tokio::test]
async fn roles_follow_the_fallback_chain_and_say_why() {
    let w = World::new(mspbridge_store::test_support::sqlite().await.unwrap(), 20).await;
    // Company override for the first active company.
    let e = w.engine("w1", fast());
    let mut o = w.options();
    o.auto_import_contacts = false;
    w.configure(o).await;
    w.sync(&e).await;
    let first_company = w
        .store()
        .list_companies(w.tenant)
        .await
        .unwrap()
        .into_iter()
        .next()
        .unwrap();
    w.store()
        .set_company_defaults(
            w.tenant,
            first_company.id,
            Some(w.roles["Standard User"]),
            w.now(),
        )
        .await
        .unwrap();
    w.configure(w.options()).await;
    // Contacts are only imported on a pass that sees them; force a full pass.
    let mut cfg = fast();
    cfg.reconcile_every = chrono::Duration::zero();
    let e = w.engine("w1", cfg);
    let run = w.sync(&e).await;
    assert_eq!(run.result, RunResult::Success, "{run:?}");
    let users = w
        .store()
        .list_company_users(w.tenant, first_company.id)
        .await
        .unwrap();
    assert!(!users.is_empty());
    assert!(
        users
            .iter()
            .all(|u| u.phone.as_deref().is_some_and(|p| p.starts_with("+1 555"))),
        "phones come from communicationItems"
    );
    assert!(users.iter().all(|u| u.role_id == w.roles["Standard User"]
        && u.role_reason.as_deref() == Some("company default import role (Company Defaults)")));
    let (_, all, _) = w.snapshot().await;
    assert!(
        all.iter()
            .any(|u| u.1 == "Admin" && u.3 == "primary contact in ConnectWise Manage"),
        "{all:?}"
    );
    assert!(all.iter().any(|u| u.1 == "Standard User"
        && u.3 == "ConnectWise Manage contact type 'IT Contact' (rule 1)"));
    assert!(
        all.iter()
            .any(|u| u.1 == "Viewer" && u.3 == "ConnectWise Manage integration default")
    );
}

#[tokio::test]
async fn incremental_picks_up_a_change_and_only_the_change_including_a_late_stamp() {
    for w in worlds(20).await {
        w.configure(w.options()).await;
        let e = w.engine("w1", fast());
        w.sync(&e).await;
        let before = w.snapshot().await;
        // A contact renamed now, and another whose stamp lags 2 minutes behind the watermark.
        let (renamed, late) = w.sandbox.with_data(|d| {
            let watermark = d
                .contacts
                .iter()
                .filter_map(|c| c.info.last_updated)
                .max()
                .unwrap();
            let a = d
                .contacts
                .iter_mut()
                .find(|c| c.default_flag && !c.inactive_flag)
                .unwrap();
            a.last_name = "Renamed".into();
            a.info.last_updated = Some(watermark + chrono::Duration::minutes(10));
            let a_email = a
                .communication_items
                .iter()
                .find(|i| i.communication_type == "Email")
                .map(|i| i.value.clone());
            let b = d
                .contacts
                .iter_mut()
                .rev()
                .find(|c| c.default_flag && !c.inactive_flag)
                .unwrap();
            b.first_name = "Late".into();
            b.info.last_updated = Some(watermark - chrono::Duration::minutes(2));
            (a_email, b.id)
        });
        let run = w.sync(&e).await;
        let c = run.counts[&RecordType::Contacts];
        assert_eq!(c.updated, 2, "{}: {c:?}", w.store().backend());
        assert_eq!(c.created, 0);
        assert!(
            c.seen < 20,
            "an incremental pass reads only recent changes, saw {}",
            c.seen
        );
        let after = w.snapshot().await;
        assert_eq!(before.0, after.0);
        let users: Vec<_> = w.store().list_companies(w.tenant).await.unwrap();
        let mut names = Vec::new();
        for co in users {
            for u in w.store().list_company_users(w.tenant, co.id).await.unwrap() {
                names.push((u.email.clone(), u.first_name.clone(), u.last_name.clone()));
            }
        }
        assert!(
            names
                .iter()
                .any(|(e, _, l)| *e == renamed && l == "Renamed")
        );
        assert!(
            names.iter().any(|(_, f, _)| f == "Late"),
            "the overlap window caught the late-stamped update of contact {late}"
        );
        // The vendor was asked only for changes.
        let seen = w.sandbox.seen();
        let last = seen
            .iter()
            .rev()
            .find(|r| r.path.ends_with("/company/contacts"))
            .unwrap();
        let cond = last
            .query
            .iter()
            .find(|(k, _)| k == "conditions")
            .map(|(_, v)| v.clone())
            .unwrap();
        assert!(cond.contains("lastUpdated > ["), "{cond}");
    }
}

#[tokio::test]
async fn deactivation_after_a_complete_pass_and_never_after_a_partial_one() {
    for w in worlds(30).await {
        w.configure(w.options()).await;
        let mut cfg = fast();
        cfg.page_size = Some(10);
        let e = w.engine("w1", cfg.clone());
        w.sync(&e).await;
        let mut full = cfg.clone();
        full.reconcile_every = chrono::Duration::zero();
        let e = w.engine("w1", full);

        // Remove one imported company upstream; the companies pass fails on a later page.
        let gone = w.sandbox.with_data(|d| {
            let idx = d
                .companies
                .iter()
                .position(|c| c.status.as_ref().unwrap().id == 1)
                .unwrap();
            d.companies.remove(idx).name
        });
        // Let the statuses call and two pages through, then fail every retry of the third page.
        w.sandbox
            .faults
            .push_n("/company/companies", Fault::Delay(Duration::ZERO), 3);
        w.sandbox.faults.push_n(
            "/company/companies",
            Fault::Status {
                status: 500,
                body: r#"{"code":"Error","message":"boom","errors":null}"#.into(),
                retry_after: None,
            },
            10,
        );
        let run = w.sync(&e).await;
        assert_ne!(run.result, RunResult::Success, "{run:?}");
        let still = w
            .store()
            .list_companies(w.tenant)
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.name == gone)
            .unwrap();
        assert!(
            still.active,
            "{}: a partial pass deactivates nothing",
            w.store().backend()
        );

        w.sandbox.faults.clear();
        let run = w.sync(&e).await;
        assert_eq!(run.result, RunResult::Success, "{run:?}");
        assert!(run.counts[&RecordType::Companies].deactivated >= 1);
        let now_gone = w
            .store()
            .list_companies(w.tenant)
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.name == gone)
            .unwrap();
        assert!(
            !now_gone.active,
            "deactivated after the complete pass, not deleted"
        );
    }
}

#[tokio::test]
async fn manual_users_are_untouched_and_staff_are_matched_by_email() {
    let w = World::new(mspbridge_store::test_support::sqlite().await.unwrap(), 10).await;
    let (email, member_email) = w.sandbox.with_data(|d| {
        let c = d
            .contacts
            .iter()
            .find(|c| {
                c.default_flag
                    && !c.inactive_flag
                    && c.communication_items
                        .iter()
                        .any(|i| i.communication_type == "Email")
            })
            .unwrap();
        (
            c.communication_items
                .iter()
                .find(|i| i.communication_type == "Email")
                .unwrap()
                .value
                .clone(),
            d.members[0].primary_email.clone().unwrap(),
        )
    });
    let co = w
        .store()
        .create_company(w.tenant, "Hand made", w.now())
        .await
        .unwrap();
    let manual = w
        .store()
        .create_company_user(
            w.tenant,
            NewCompanyUser {
                company_id: co.id,
                email: Some(email.clone()),
                phone: None,
                first_name: "Hand".into(),
                last_name: "Made".into(),
                role_id: w.roles["Admin"],
                role_reason: None,
                status: UserStatus::Active,
                origin: Origin::Manual,
            },
            w.now(),
        )
        .await
        .unwrap();
    let staff = w
        .store()
        .create_staff_user(
            w.tenant,
            NewStaffUser {
                email: member_email.clone(),
                name: "Existing Tech".into(),
                role: StaffRole::Admin,
                password_hash: None,
                origin: Origin::Manual,
            },
            w.now(),
        )
        .await
        .unwrap();
    w.configure(w.options()).await;
    let e = w.engine("w1", fast());
    let run = w.sync(&e).await;
    assert_eq!(run.result, RunResult::Success);
    assert_eq!(
        w.store().list_company_users(w.tenant, co.id).await.unwrap(),
        vec![manual],
        "the manual user is untouched"
    );
    let (_, users, staff_list) = w.snapshot().await;
    assert!(
        users.iter().all(|u| u.0 != email || u.3.is_empty()),
        "no imported duplicate of the manual user"
    );
    assert_eq!(
        staff_list.iter().filter(|s| s.0 == member_email).count(),
        1,
        "the technician was linked, not duplicated"
    );
    let all_staff = w.store().list_staff_users(w.tenant).await.unwrap();
    let linked = all_staff.iter().find(|s| s.email == member_email).unwrap();
    assert_eq!(
        (linked.id, linked.name.as_str(), linked.role),
        (staff.id, "Existing Tech", StaffRole::Admin)
    );
    let events = w
        .store()
        .list_events(w.tenant, run.run_id, Some(EventLevel::Warning), None, 1000)
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.message.contains("duplicate candidate") && e.message.contains(&email)),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.message.contains("has no email address")),
        "contacts without email are reported"
    );
}

#[tokio::test]
async fn existing_users_keep_their_role() {
    let w = World::new(mspbridge_store::test_support::sqlite().await.unwrap(), 10).await;
    w.configure(w.options()).await;
    let e = w.engine("w1", fast());
    w.sync(&e).await;
    let before = w.snapshot().await;
    // Every contact becomes an "IT Contact" upstream, which would map to Standard User for new imports.
    w.sandbox.with_data(|d| {
        let wm = d
            .contacts
            .iter()
            .filter_map(|c| c.info.last_updated)
            .max()
            .unwrap();
        for c in &mut d.contacts {
            c.types = vec![mspbridge_providers::connectwise::wire::Ref {
                id: 2,
                name: Some("IT Contact".into()),
            }];
            c.info.last_updated = Some(wm + chrono::Duration::minutes(30));
        }
    });
    let run = w.sync(&e).await;
    assert!(run.counts[&RecordType::Contacts].updated > 0);
    let after = w.snapshot().await;
    let roles = |s: &Vec<(String, String, String, String)>| {
        s.iter()
            .map(|u| (u.0.clone(), u.1.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        roles(&before.1),
        roles(&after.1),
        "roles given at import stay"
    );
}

#[tokio::test]
async fn transient_vendor_errors_are_retried_and_persistent_ones_make_the_run_partial() {
    let w = World::new(mspbridge_store::test_support::sqlite().await.unwrap(), 15).await;
    w.configure(w.options()).await;
    let e = w.engine("w1", fast());
    w.sandbox.faults.push(
        "/company/contacts",
        Fault::Status {
            status: 429,
            body: "{}".into(),
            retry_after: Some(1),
        },
    );
    w.sandbox.faults.push(
        "/company/contacts",
        Fault::Status {
            status: 503,
            body: "{}".into(),
            retry_after: None,
        },
    );
    w.sandbox.faults.push("/system/members", Fault::Truncate);
    w.sandbox.faults.push(
        "/company/companies",
        Fault::Delay(Duration::from_millis(50)),
    );
    let run = w.sync(&e).await;
    assert_eq!(run.result, RunResult::Success, "{run:?}");
    assert_eq!(
        w.sandbox.faults.pending(),
        0,
        "every injected fault was met and retried"
    );
    let clean = w.snapshot().await;

    // A fresh world where contacts keep failing: partial, companies complete, nothing half-written.
    let w2 = World::new(mspbridge_store::test_support::sqlite().await.unwrap(), 15).await;
    w2.configure(w2.options()).await;
    let e2 = w2.engine("w1", fast());
    w2.sandbox.faults.push_n(
        "/company/contacts",
        Fault::Status {
            status: 502,
            body: "{}".into(),
            retry_after: None,
        },
        50,
    );
    let run = w2.sync(&e2).await;
    assert_eq!(run.result, RunResult::Partial, "{run:?}");
    let integ = w2
        .store()
        .get_integration(w2.tenant, w2.integration)
        .await
        .unwrap();
    assert!(integ.last_error.unwrap().contains("partial"));
    let snap = w2.snapshot().await;
    assert_eq!(snap.0, clean.0, "companies complete");
    assert!(snap.1.is_empty(), "no contact half-written");
    assert_eq!(snap.2, clean.2, "technicians still synced");
    w2.sandbox.faults.clear();
    let run = w2.sync(&e2).await;
    assert_eq!(run.result, RunResult::Success);
    assert_eq!(w2.snapshot().await, clean);
}

#[tokio::test]
async fn a_killed_import_resumes_to_exactly_the_state_of_a_clean_run() {
    for w in worlds(40).await {
        w.configure(w.options()).await;
        let mut cfg = fast();
        cfg.page_size = Some(20);
        w.sandbox.faults.set_latency(Duration::from_millis(15));
        let a = w.engine("worker-a", cfg.clone());
        w.store()
            .reactivate(w.tenant, w.integration, w.now())
            .await
            .unwrap();
        let task = tokio::spawn({
            let a = a.clone();
            async move { a.tick().await }
        });
        // Kill it in the middle of the contacts pass, after at least one page committed.
        let mut waited = 0;
        loop {
            let c = w
                .store()
                .cursor(w.integration, RecordType::Contacts)
                .await
                .unwrap();
            if c.pass.as_ref().is_some_and(|p| p.after.is_some()) {
                break;
            }
            assert!(
                !task.is_finished(),
                "the run ended before it could be killed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
            waited += 1;
            assert!(waited < 4000, "no progress");
        }
        task.abort();
        let _ = task.await;
        let partial = w.snapshot().await;
        assert!(
            !partial.1.is_empty() || !partial.0.is_empty(),
            "the kill came after some pages were committed"
        );

        // Worker B cannot take over while A's lease is live; after it expires it resumes.
        let b = w.engine("worker-b", cfg.clone());
        assert!(
            b.tick().await.unwrap().is_none(),
            "a live lease is respected"
        );
        w.offset.store(120, Ordering::SeqCst);
        w.sandbox.faults.set_latency(Duration::ZERO);
        let resumed = b
            .tick()
            .await
            .unwrap()
            .expect("the expired lease is taken over");
        assert_eq!(resumed.result, RunResult::Success, "{resumed:?}");
        let runs = w
            .store()
            .list_runs(w.tenant, w.integration, 10)
            .await
            .unwrap();
        let killed = runs.iter().find(|r| r.id != resumed.run_id).unwrap();
        assert_eq!(
            killed.result,
            RunResult::Failed,
            "the killed run does not stay 'running'"
        );
        assert!(killed.error.as_deref().unwrap().contains("interrupted"));
        let after_resume = w.snapshot().await;

        // A clean run on a fresh database against the same data.
        let clean = World::new(mspbridge_store::test_support::sqlite().await.unwrap(), 40).await;
        clean.configure(clean.options()).await;
        let c = clean.engine("clean", cfg);
        assert_eq!(clean.sync(&c).await.result, RunResult::Success);
        assert_eq!(
            after_resume,
            clean.snapshot().await,
            "{}: resumed = clean",
            w.store().backend()
        );
    }
}

#[tokio::test]
async fn repeated_failures_pause_automatic_sync_until_reactivated() {
    let w = World::new(mspbridge_store::test_support::sqlite().await.unwrap(), 5).await;
    w.configure(w.options()).await;
    let mut cfg = fast();
    cfg.max_failures = 2;
    let e = w.engine("w1", cfg);
    // Rotate the sandbox's keys out from under the integration: every run fails with 401.
    let mut secrets = BTreeMap::new();
    secrets.insert("private_key".to_string(), SecretString::new("revoked"));
    let i = w
        .store()
        .get_integration(w.tenant, w.integration)
        .await
        .unwrap();
    w.store()
        .update_credentials(
            w.tenant,
            w.integration,
            CredentialUpdate {
                settings: i.settings.clone(),
                new_secrets: secrets,
                keep: vec![],
                report: ok_report(),
            },
            &w.vault,
            w.now(),
        )
        .await
        .unwrap();
    for n in 1..=2 {
        w.offset.store(600 * n, Ordering::SeqCst);
        w.store()
            .request_sync(w.tenant, w.integration, w.now(), chrono::Duration::zero())
            .await
            .unwrap();
        let run = e.tick().await.unwrap().unwrap();
        assert_eq!(run.result, RunResult::Failed);
    }
    let sched = w
        .store()
        .schedule(w.tenant, w.integration)
        .await
        .unwrap()
        .unwrap();
    assert!(sched.paused_reason.is_some());
    let integ = w
        .store()
        .get_integration(w.tenant, w.integration)
        .await
        .unwrap();
    assert_eq!(integ.status, IntegrationStatus::Error);
    assert!(
        integ
            .last_error
            .unwrap()
            .contains("paused after 2 failed runs")
    );
    w.offset.store(100_000, Ordering::SeqCst);
    assert!(e.tick().await.unwrap().is_none(), "paused: nothing runs");
    w.store()
        .reactivate(w.tenant, w.integration, w.now())
        .await
        .unwrap();
    assert!(e.tick().await.unwrap().is_some(), "reactivated: runs again");
}

#[tokio::test]
async fn sync_now_has_a_cooldown() {
    let w = World::new(mspbridge_store::test_support::sqlite().await.unwrap(), 3).await;
    let s = w.store();
    let t0 = w.now();
    assert_eq!(
        s.request_sync(w.tenant, w.integration, t0, chrono::Duration::seconds(60))
            .await
            .unwrap(),
        mspbridge_store::sync::SyncRequest::Queued
    );
    let again = s
        .request_sync(
            w.tenant,
            w.integration,
            t0 + chrono::Duration::seconds(5),
            chrono::Duration::seconds(60),
        )
        .await
        .unwrap();
    assert_eq!(
        again,
        mspbridge_store::sync::SyncRequest::CoolingDown(t0 + chrono::Duration::seconds(60))
    );
}

/// Two workers on one PostgreSQL never run the same integration at the same time.
#[tokio::test]
async fn two_workers_on_postgres_never_sync_one_integration_at_once() {
    let Some(db) = mspbridge_store::test_support::postgres().await.unwrap() else {
        eprintln!("TEST_DATABASE_URL not set: skipped");
        return;
    };
    let w = World::new(db, 10).await;
    w.sandbox.faults.set_latency(Duration::from_millis(5));
    w.configure(w.options()).await;
    let a = w.engine("worker-a", fast());
    let b = w.engine("worker-b", fast());
    let mut handles = Vec::new();
    for eng in [a, b] {
        let store = w.db.store.clone();
        let (tenant, id) = (w.tenant, w.integration);
        handles.push(tokio::spawn(async move {
            let mut runs = 0;
            for _ in 0..12 {
                let _ = store
                    .request_sync(tenant, id, Utc::now(), chrono::Duration::zero())
                    .await;
                if eng.tick().await.unwrap().is_some() {
                    runs += 1;
                }
            }
            runs
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    assert!(total >= 2);
    let mut runs = w
        .store()
        .list_runs(w.tenant, w.integration, 1000)
        .await
        .unwrap();
    runs.sort_by_key(|r| r.started_at);
    for pair in runs.windows(2) {
        let end = pair[0].finished_at.unwrap();
        assert!(
            pair[1].started_at >= end,
            "runs {} and {} overlap",
            pair[0].id,
            pair[1].id
        );
    }
    assert!(
        runs.iter().all(|r| r.result == RunResult::Success),
        "{runs:?}"
    );
}

#[tokio::test]
async fn initial_import_off_syncs_only_what_changes_after_connecting() {
    let w = World::new(mspbridge_store::test_support::sqlite().await.unwrap(), 10).await;
    let mut o = w.options();
    o.initial_import = false;
    w.configure(o).await;
    let e = w.engine("w1", fast());
    let run = w.sync(&e).await;
    assert_eq!(run.result, RunResult::Success, "{run:?}");
    assert!(
        run.counts.values().all(|c| c.created == 0),
        "nothing older than the connection is imported: {run:?}"
    );
    assert!(w.snapshot().await.0.is_empty());
    // A company edited after connecting is imported on the next run.
    let name = w.sandbox.with_data(|d| {
        let c = d
            .companies
            .iter_mut()
            .find(|c| c.status.as_ref().unwrap().id == 1)
            .unwrap();
        c.name = "Edited After Connect Ltd".into();
        c.info.last_updated = Some(Utc::now() + chrono::Duration::minutes(1));
        c.name.clone()
    });
    let run = w.sync(&e).await;
    assert_eq!(run.counts[&RecordType::Companies].created, 1, "{run:?}");
    assert_eq!(w.snapshot().await.0, vec![(name, true)]);
}

#[tokio::test]
async fn selective_sync_reads_only_the_chosen_record_types() {
    let w = World::new(mspbridge_store::test_support::sqlite().await.unwrap(), 10).await;
    let mut o = w.options();
    o.companies = false;
    o.contacts = false;
    o.auto_import_contacts = false;
    w.configure(o).await;
    let e = w.engine("w1", fast());
    let run = w.sync(&e).await;
    assert_eq!(
        run.counts.keys().copied().collect::<Vec<_>>(),
        vec![RecordType::Technicians]
    );
    let snap = w.snapshot().await;
    assert!(snap.0.is_empty() && snap.1.is_empty());
    assert!(!snap.2.is_empty());
    assert!(
        w.sandbox
            .seen()
            .iter()
            .all(|r| !r.path.ends_with("/company/contacts")
                && !r.path.ends_with("/company/companies"))
    );
}

#[tokio::test]
async fn a_slow_answer_times_out_and_is_retried() {
    let w = World::new(mspbridge_store::test_support::sqlite().await.unwrap(), 5).await;
    w.configure(w.options()).await;
    let mut cfg = fast();
    cfg.retry.timeout = Duration::from_millis(300);
    let e = w.engine("w1", cfg);
    w.sandbox
        .faults
        .push("/system/members", Fault::Delay(Duration::from_secs(2)));
    let run = w.sync(&e).await;
    assert_eq!(run.result, RunResult::Success, "{run:?}");
    // Discovery, statuses and one page per record type, plus the one retry of the slow page.
    // (The sandbox never records the abandoned request: its handler is cancelled with it.)
    assert_eq!(run.requests, 6, "{run:?}");
    assert_eq!(w.sandbox.faults.pending(), 0);
}

#[tokio::test]
async fn the_request_budget_stops_a_run_that_would_exceed_it() {
    let w = World::new(mspbridge_store::test_support::sqlite().await.unwrap(), 30).await;
    w.configure(w.options()).await;
    let mut cfg = fast();
    cfg.page_size = Some(10);
    cfg.retry.budget = 6;
    let e = w.engine("w1", cfg);
    let run = w.sync(&e).await;
    assert_ne!(run.result, RunResult::Success, "{run:?}");
    assert!(
        run.error
            .as_deref()
            .unwrap_or_default()
            .contains("request budget"),
        "{run:?}"
    );
    assert!(w.sandbox.seen().len() <= 6);
}

#[tokio::test]
async fn a_company_deleted_upstream_is_deactivated_by_an_incremental_pass() {
    let w = World::new(mspbridge_store::test_support::sqlite().await.unwrap(), 10).await;
    w.configure(w.options()).await;
    let e = w.engine("w1", fast());
    w.sync(&e).await;
    let name = w.sandbox.with_data(|d| {
        let wm = d
            .companies
            .iter()
            .filter_map(|c| c.info.last_updated)
            .max()
            .unwrap();
        let c = d
            .companies
            .iter_mut()
            .find(|c| c.status.as_ref().unwrap().id == 1)
            .unwrap();
        c.deleted_flag = true;
        c.info.last_updated = Some(wm + chrono::Duration::minutes(10));
        c.name.clone()
    });
    let run = w.sync(&e).await;
    assert_eq!(run.counts[&RecordType::Companies].deactivated, 1, "{run:?}");
    let c = w
        .store()
        .list_companies(w.tenant)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap();
    assert!(!c.active, "deactivated, not deleted");
    let events = w
        .store()
        .list_events(w.tenant, run.run_id, None, Some(RecordType::Companies), 100)
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.message.contains("was deleted in ConnectWise Manage"))
    );
}

#[tokio::test]
async fn two_technicians_with_one_email_are_reported_not_linked_twice() {
    // Page size 1 puts the three members on three pages: the pipeline must not decide a
    // page before the page that creates the shared staff user is committed.
    for page_size in [100, 1] {
        for w in worlds(20).await {
            let shared = w.sandbox.with_data(|d| {
                let email = d.members[0].primary_email.clone();
                d.members[1].primary_email = email.clone();
                d.members[2].primary_email = email.clone();
                email.unwrap()
            });
            w.configure(SyncOptions {
                companies: false,
                contacts: false,
                ..w.options()
            })
            .await;
            let cfg = EngineConfig {
                page_size: Some(page_size),
                ..fast()
            };
            let run = w.sync(&w.engine("w1", cfg.clone())).await;
            assert_eq!(
                run.result,
                RunResult::Success,
                "{} page size {page_size}: {run:?}",
                w.store().backend()
            );
            let staff = w.store().list_staff_users(w.tenant).await.unwrap();
            assert_eq!(staff.iter().filter(|s| s.email == shared).count(), 1);
            let events = w
                .store()
                .list_events(
                    w.tenant,
                    run.run_id,
                    Some(EventLevel::Warning),
                    Some(RecordType::Technicians),
                    100,
                )
                .await
                .unwrap();
            assert_eq!(
                events
                    .iter()
                    .filter(|e| e.message.contains("duplicate candidate"))
                    .count(),
                2,
                "{events:?}"
            );
            // The next run (a full pass) neither fails nor duplicates.
            let mut cfg = cfg;
            cfg.reconcile_every = chrono::Duration::zero();
            let run = w.sync(&w.engine("w1", cfg)).await;
            assert_eq!(run.result, RunResult::Success, "{run:?}");
            assert_eq!(
                w.store().list_staff_users(w.tenant).await.unwrap().len(),
                staff.len()
            );
        }
    }
}

#[tokio::test]
async fn an_unreadable_vendor_record_is_logged_and_skipped_while_the_rest_syncs() {
    for w in worlds(10).await {
        // An active contact with an email, of a company that is imported.
        let (target, email) = w.sandbox.with_data(|d| {
            let active: Vec<i64> = d
                .companies
                .iter()
                .filter(|c| c.status.as_ref().is_some_and(|s| s.id != 2))
                .map(|c| c.id)
                .collect();
            d.contacts
                .iter()
                .filter(|c| !c.inactive_flag)
                .filter(|c| c.company.as_ref().is_some_and(|r| active.contains(&r.id)))
                .find_map(|c| {
                    let email = c
                        .communication_items
                        .iter()
                        .find(|i| i.communication_type == "Email")?;
                    Some((c.id, email.value.to_lowercase()))
                })
                .unwrap()
        });
        // ConnectWise sends a number where a name belongs.
        w.sandbox.set_raw_field(
            "company/contacts",
            target,
            "firstName",
            serde_json::json!(42),
        );
        w.configure(w.options()).await;
        let run = w.sync(&w.engine("w1", fast())).await;
        let backend = w.store().backend();
        assert_eq!(run.result, RunResult::Partial, "{backend}: {run:?}");
        let contacts = run.counts[&RecordType::Contacts];
        assert_eq!(contacts.failed, 1, "{backend}: {contacts:?}");
        assert!(contacts.add_up() && contacts.created > 0, "{contacts:?}");
        let users = w.snapshot().await.1;
        assert_eq!(users.len() as u64, contacts.created, "{backend}");
        assert!(!users.iter().any(|u| u.0 == email), "{backend}: {email}");
        let events = w
            .store()
            .list_events(
                w.tenant,
                run.run_id,
                Some(EventLevel::Error),
                Some(RecordType::Contacts),
                100,
            )
            .await
            .unwrap();
        assert!(
            events.iter().any(
                |e| e.external_id.as_deref() == Some(target.to_string().as_str())
                    && e.message.contains("unreadable")
                    && e.message.contains("firstName")
            ),
            "{backend}: {events:?}"
        );
    }
}

#[tokio::test]
async fn a_contact_made_inactive_and_active_again_upstream_is_disabled_then_restored() {
    for w in worlds(10).await {
        w.configure(w.options()).await;
        let e = w.engine("w1", fast());
        w.sync(&e).await;
        let status_of = |email: String| {
            let w = &w;
            async move {
                for co in w.store().list_companies(w.tenant).await.unwrap() {
                    for u in w.store().list_company_users(w.tenant, co.id).await.unwrap() {
                        if u.email.as_deref() == Some(email.as_str()) {
                            return Some((u.status.as_str().to_string(), u.role_id));
                        }
                    }
                }
                None
            }
        };
        let flip = |inactive: bool| {
            w.sandbox.with_data(|d| {
                let latest = d.contacts.iter().filter_map(|c| c.info.last_updated).max();
                let c = d.contacts.iter_mut().find(|c| c.default_flag).unwrap();
                c.inactive_flag = inactive;
                c.info.last_updated = latest.map(|t| t + chrono::Duration::minutes(10));
                c.communication_items
                    .iter()
                    .find(|i| i.communication_type == "Email")
                    .map(|i| i.value.to_lowercase())
                    .unwrap()
            })
        };
        let email = flip(false);
        let (status, role) = status_of(email.clone()).await.unwrap();
        assert_eq!(status, "imported");

        flip(true);
        let run = w.sync(&e).await;
        let backend = w.store().backend();
        assert_eq!(
            run.counts[&RecordType::Contacts].deactivated,
            1,
            "{backend}"
        );
        assert_eq!(
            status_of(email.clone()).await,
            Some(("disabled".to_string(), role)),
            "{backend}"
        );

        flip(false);
        w.sync(&e).await;
        assert_eq!(
            status_of(email.clone()).await,
            Some(("imported".to_string(), role)),
            "{backend}: active again upstream, active again in the portal, same role"
        );
    }
}

/// A company pass that fails for a whole run must not hide its contacts: they wait
/// (counted, logged, the run partial) and the next run reads them again, on a first import
/// and on an incremental run alike, reaching exactly the state of a clean run.
#[tokio::test]
async fn contacts_of_a_failed_company_pass_wait_and_arrive_with_the_next_run() {
    let outage = |w: &World| {
        w.sandbox.faults.push_n(
            "/company/companies",
            Fault::Status {
                status: 503,
                body: "{}".into(),
                retry_after: None,
            },
            50,
        )
    };
    for w in worlds(30).await {
        let backend = w.store().backend();
        w.configure(w.options()).await;
        let e = w.engine("w1", fast());

        // A first import whose companies endpoint is down for the whole run.
        outage(&w);
        let run = w.sync(&e).await;
        assert_eq!(run.result, RunResult::Partial, "{backend}: {run:?}");
        let c = run.counts[&RecordType::Contacts];
        assert!(c.deferred > 0, "{backend}: {c:?}");
        assert_eq!(c.created, 0);
        assert!(
            run.error.as_deref().unwrap().contains("contacts wait"),
            "{run:?}"
        );
        let events = w
            .store()
            .list_events(w.tenant, run.run_id, None, None, 500)
            .await
            .unwrap();
        assert!(
            events
                .iter()
                .any(|e| e.message.contains("wait for their company")),
            "the log explains the wait"
        );
        w.sandbox.faults.clear();
        let run = w.sync(&e).await;
        assert_eq!(run.result, RunResult::Success, "{backend}: {run:?}");

        let clean = World::new(mspbridge_store::test_support::sqlite().await.unwrap(), 30).await;
        clean.configure(clean.options()).await;
        assert_eq!(
            clean.sync(&clean.engine("clean", fast())).await.result,
            RunResult::Success
        );
        assert_eq!(w.snapshot().await, clean.snapshot().await, "{backend}");

        // Later: a new company with two contacts, and another contact changed well after
        // them, so a watermark moved past the new contacts would leave them outside the
        // overlap window. The companies endpoint is down for that run.
        let new_emails = w.sandbox.with_data(|d| {
            let t0 = d
                .contacts
                .iter()
                .filter_map(|c| c.info.last_updated)
                .chain(d.companies.iter().filter_map(|c| c.info.last_updated))
                .max()
                .unwrap();
            let mut company = d.companies[0].clone();
            company.id = d.companies.iter().map(|c| c.id).max().unwrap() + 1;
            company.identifier = Some("LateArrivals".into());
            company.name = "Late Arrivals Ltd".into();
            company.deleted_flag = false;
            company.info.last_updated = Some(t0 + chrono::Duration::minutes(1));
            let mut emails = Vec::new();
            let template = d
                .contacts
                .iter()
                .find(|c| !c.inactive_flag && !c.communication_items.is_empty())
                .unwrap()
                .clone();
            let next_id = d.contacts.iter().map(|c| c.id).max().unwrap();
            for n in 1..=2 {
                let mut c = template.clone();
                c.id = next_id + n;
                c.first_name = format!("Late{n}");
                c.default_flag = false;
                c.company = Some(mspbridge_providers::connectwise::wire::CompanyRef {
                    id: company.id,
                    identifier: company.identifier.clone(),
                    name: Some(company.name.clone()),
                });
                let email = format!("late{n}@late-arrivals.example");
                for item in &mut c.communication_items {
                    if item.communication_type == "Email" {
                        item.value = email.clone();
                    }
                }
                c.info.last_updated = Some(t0 + chrono::Duration::minutes(1));
                emails.push(email);
                d.contacts.push(c);
            }
            let other = d
                .contacts
                .iter_mut()
                .find(|c| !c.inactive_flag && c.first_name != "Late1")
                .unwrap();
            other.last_name = "Changed".into();
            other.info.last_updated = Some(t0 + chrono::Duration::minutes(30));
            d.companies.push(company);
            emails
        });
        outage(&w);
        let run = w.sync(&e).await;
        assert_eq!(run.result, RunResult::Partial, "{backend}: {run:?}");
        assert_eq!(run.counts[&RecordType::Contacts].deferred, 2, "{run:?}");
        w.sandbox.faults.clear();
        let run = w.sync(&e).await;
        assert_eq!(run.result, RunResult::Success, "{backend}: {run:?}");
        let users = w.snapshot().await.1;
        for email in &new_emails {
            assert!(
                users.iter().any(|u| &u.0 == email),
                "{backend}: {email} arrived after the outage: {users:?}"
            );
        }
        // And a run after that changes nothing.
        let run = w.sync(&e).await;
        let c = run.counts[&RecordType::Contacts];
        assert_eq!(
            (run.result, c.created, c.deferred),
            (RunResult::Success, 0, 0)
        );
    }
}
