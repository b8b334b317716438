#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Storage conformance: every scenario runs against SQLite, and against PostgreSQL
//! when `TEST_DATABASE_URL` is set. Both backends must behave identically.

use std::collections::BTreeMap;

use chrono::{Duration, TimeZone, Utc};
use mspbridge_domain::auth::StaffRole;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::integration::*;
use mspbridge_domain::model::*;
use mspbridge_domain::*;
use mspbridge_store::test_support::{self, TestDb};
use mspbridge_store::*;
use mspbridge_vault::Vault;

fn t0() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0).unwrap()
}

fn vault() -> Vault {
    Vault::new(&[42u8; 32])
}

fn ok_report() -> TestReport {
    TestReport {
        connection: ConnectionOutcome::Ok,
        areas: vec![AreaCheck {
            area: "companies".into(),
            label: "Companies".into(),
            required: true,
            outcome: AreaResult::Granted,
        }],
        tested_at: t0(),
        details: vec![("codebase".into(), "v2025_1/".into())],
    }
}

fn denied_report() -> TestReport {
    TestReport {
        connection: ConnectionOutcome::Ok,
        areas: vec![AreaCheck {
            area: "members".into(),
            label: "Technicians".into(),
            required: true,
            outcome: AreaResult::NotPermitted {
                setting: "System > Member Maintenance".into(),
                vendor_message: "no access".into(),
            },
        }],
        tested_at: t0(),
        details: vec![],
    }
}

async fn each_backend() -> Vec<TestDb> {
    test_support::all().await.expect("test databases")
}

fn staff(email: &str, role: StaffRole, pw: Option<&str>) -> NewStaffUser {
    NewStaffUser {
        email: email.into(),
        name: "Ann Admin".into(),
        role,
        password_hash: pw.map(Into::into),
        origin: Origin::Manual,
    }
}

fn new_cw(secret: &str) -> NewIntegration {
    let mut secrets = BTreeMap::new();
    secrets.insert("private_key".to_string(), SecretString::new(secret));
    NewIntegration {
        provider: ProviderKind::ConnectwiseManage,
        nickname: None,
        settings: serde_json::json!({"site": "na.myconnectwise.net", "company_id": "acme", "public_key": "pub"}),
        secrets,
        report: ok_report(),
    }
}

#[tokio::test]
async fn tenants_are_unique_by_name_and_start_with_builtin_roles() {
    for db in each_backend().await {
        let s = &db.store;
        let t = s.create_tenant("Acme MSP", t0()).await.unwrap();
        assert_eq!(t.name, "Acme MSP");
        assert_eq!(
            t.created_at,
            t0(),
            "{}: timestamps round-trip exactly",
            s.backend()
        );
        let dup = s.create_tenant("acme msp", t0()).await;
        assert!(
            matches!(dup, Err(StoreError::Conflict(_))),
            "{}: {dup:?}",
            s.backend()
        );
        assert_eq!(
            s.tenant_by_name("ACME MSP").await.unwrap().unwrap().id,
            t.id
        );
        assert!(s.tenant_by_name("nobody").await.unwrap().is_none());
        let roles: Vec<_> = s
            .list_roles(t.id)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(roles, ["Admin", "Standard User", "Viewer"]);
        assert!(matches!(
            s.get_tenant(TenantId(9999)).await,
            Err(StoreError::NotFound)
        ));
    }
}

#[tokio::test]
async fn staff_users_sessions_and_tokens() {
    for db in each_backend().await {
        let s = &db.store;
        let t = s.create_tenant("T", t0()).await.unwrap();
        let u = s
            .create_staff_user(
                t.id,
                staff("Ann@Example.com", StaffRole::Owner, Some("$argon2id$x")),
                t0(),
            )
            .await
            .unwrap();
        assert_eq!(u.email, "ann@example.com", "emails are stored lower-case");
        let dup = s
            .create_staff_user(t.id, staff("ann@example.com", StaffRole::Admin, None), t0())
            .await;
        assert!(matches!(dup, Err(StoreError::Conflict(_))));

        // A login email is unique across tenants.
        let t2 = s.create_tenant("T2", t0()).await.unwrap();
        let clash = s
            .create_staff_user(
                t2.id,
                staff("ann@example.com", StaffRole::Owner, Some("h")),
                t0(),
            )
            .await;
        assert!(matches!(clash, Err(StoreError::Conflict(_))));
        // Without a password (an imported technician) the same email may exist in another tenant.
        s.create_staff_user(
            t2.id,
            staff("ann@example.com", StaffRole::Technician, None),
            t0(),
        )
        .await
        .unwrap();

        let (found, hash) = s.staff_login("ANN@example.com").await.unwrap().unwrap();
        assert_eq!((found.id, hash.as_str()), (u.id, "$argon2id$x"));
        assert!(s.staff_login("bob@example.com").await.unwrap().is_none());

        s.create_session("h1", &u, "csrf1", t0(), t0() + Duration::hours(1))
            .await
            .unwrap();
        let sess = s
            .session("h1", t0() + Duration::minutes(5))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (sess.tenant_id, sess.user.id, sess.csrf_token.as_str()),
            (t.id, u.id, "csrf1")
        );
        assert!(
            s.session("h1", t0() + Duration::hours(2))
                .await
                .unwrap()
                .is_none(),
            "expired"
        );
        assert!(s.session("nope", t0()).await.unwrap().is_none());
        s.delete_session("h1").await.unwrap();
        assert!(s.session("h1", t0()).await.unwrap().is_none());

        let tok = s
            .create_api_token(t.id, "ci", StaffRole::ReadOnly, "tokhash", t0())
            .await
            .unwrap();
        let seen = s
            .api_token("tokhash", t0() + Duration::minutes(1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((seen.id, seen.role), (tok.id, StaffRole::ReadOnly));
        assert_eq!(seen.last_used_at, Some(t0() + Duration::minutes(1)));
        assert!(
            matches!(
                s.revoke_api_token(t2.id, tok.id, t0()).await,
                Err(StoreError::NotFound)
            ),
            "other tenant"
        );
        s.revoke_api_token(t.id, tok.id, t0()).await.unwrap();
        assert!(s.api_token("tokhash", t0()).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn portal_core_records() {
    for db in each_backend().await {
        let s = &db.store;
        let t = s.create_tenant("T", t0()).await.unwrap();
        let c = s.create_company(t.id, "Contoso Ltd", t0()).await.unwrap();
        assert!(c.active);
        let roles = s.list_roles(t.id).await.unwrap();
        let viewer = roles.iter().find(|r| r.name == "Viewer").unwrap().id;

        assert_eq!(
            s.company_defaults(t.id, c.id)
                .await
                .unwrap()
                .default_import_role,
            None
        );
        s.set_company_defaults(t.id, c.id, Some(viewer), t0())
            .await
            .unwrap();
        assert_eq!(
            s.company_defaults(t.id, c.id)
                .await
                .unwrap()
                .default_import_role,
            Some(viewer)
        );
        s.set_company_defaults(t.id, c.id, None, t0())
            .await
            .unwrap();
        assert_eq!(
            s.company_defaults(t.id, c.id)
                .await
                .unwrap()
                .default_import_role,
            None
        );

        let u = s
            .create_company_user(
                t.id,
                NewCompanyUser {
                    company_id: c.id,
                    email: Some("Pat@Contoso.com".into()),
                    phone: Some("+1 555 0100".into()),
                    first_name: "Pat".into(),
                    last_name: "Lee".into(),
                    role_id: viewer,
                    role_reason: Some("integration default".into()),
                    status: UserStatus::Imported,
                    origin: Origin::Import,
                },
                t0(),
            )
            .await
            .unwrap();
        assert_eq!(u.email.as_deref(), Some("pat@contoso.com"));
        assert_eq!(u.phone.as_deref(), Some("+1 555 0100"));
        assert_eq!(s.list_company_users(t.id, c.id).await.unwrap(), vec![u]);

        let ticket = s
            .create_ticket(
                t.id,
                NewTicket {
                    company_id: c.id,
                    summary: "Printer".into(),
                    description: "Jammed".into(),
                    status: "New".into(),
                    priority: None,
                },
                t0(),
            )
            .await
            .unwrap();
        assert!(!ticket.closed);
        s.add_ticket_note(t.id, ticket.id, "Looking", true, "tech", t0())
            .await
            .unwrap();
        s.add_ticket_note(
            t.id,
            ticket.id,
            "Fixed",
            false,
            "tech",
            t0() + Duration::minutes(1),
        )
        .await
        .unwrap();
        let notes = s.list_ticket_notes(t.id, ticket.id).await.unwrap();
        assert_eq!(
            notes
                .iter()
                .map(|n| (n.body.as_str(), n.internal))
                .collect::<Vec<_>>(),
            [("Looking", true), ("Fixed", false)]
        );
    }
}

#[tokio::test]
async fn every_tenant_query_is_scoped() {
    for db in each_backend().await {
        let s = &db.store;
        let a = s.create_tenant("A", t0()).await.unwrap();
        let b = s.create_tenant("B", t0()).await.unwrap();
        let c = s.create_company(a.id, "A's client", t0()).await.unwrap();
        let ticket = s
            .create_ticket(
                a.id,
                NewTicket {
                    company_id: c.id,
                    summary: "x".into(),
                    description: String::new(),
                    status: "New".into(),
                    priority: None,
                },
                t0(),
            )
            .await
            .unwrap();
        let i = s
            .create_integration(a.id, new_cw("sekret"), &vault(), t0())
            .await
            .unwrap();
        let b_role = s.list_roles(b.id).await.unwrap()[0].id;

        assert!(matches!(
            s.get_company(b.id, c.id).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            s.get_ticket(b.id, ticket.id).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            s.get_integration(b.id, i.id).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            s.load_secrets(b.id, i.id, &vault()).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            s.disconnect_integration(b.id, i.id, t0()).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            s.rename_integration(b.id, i.id, Some("x"), t0()).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            s.delete_integration(b.id, i.id).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            s.add_ticket_note(b.id, ticket.id, "x", false, "x", t0())
                .await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            s.company_defaults(b.id, c.id).await,
            Err(StoreError::NotFound)
        ));
        // A role of tenant B cannot become a default of tenant A's company.
        assert!(matches!(
            s.set_company_defaults(a.id, c.id, Some(b_role), t0()).await,
            Err(StoreError::NotFound)
        ));
        assert!(s.list_companies(b.id).await.unwrap().is_empty());
        assert!(s.list_integrations(b.id).await.unwrap().is_empty());
        // Tenant A still sees its records, untouched.
        assert_eq!(s.list_integrations(a.id).await.unwrap().len(), 1);
        assert_eq!(
            s.load_secrets(a.id, i.id, &vault()).await.unwrap()["private_key"].expose(),
            "sekret"
        );
    }
}

#[tokio::test]
async fn integration_lifecycle_and_secrets() {
    for db in each_backend().await {
        let s = &db.store;
        let v = vault();
        let t = s.create_tenant("T", t0()).await.unwrap();
        let i = s
            .create_integration(t.id, new_cw("first-secret"), &v, t0())
            .await
            .unwrap();
        assert_eq!(i.status, IntegrationStatus::Connected);
        assert_eq!(i.display_name(), "ConnectWise Manage");
        assert_eq!(i.last_test.as_ref().unwrap(), &ok_report());
        assert_eq!(
            s.load_secrets(t.id, i.id, &v).await.unwrap()["private_key"].expose(),
            "first-secret"
        );

        // A failed permission check turns the status to Error with the reason.
        let e = s
            .record_test(t.id, i.id, &denied_report(), t0())
            .await
            .unwrap();
        assert_eq!(e.status, IntegrationStatus::Error);
        assert!(e.last_error.unwrap().contains("Technicians"));
        assert!(e.fix_hint.unwrap().contains("Member Maintenance"));

        let r = s
            .rename_integration(t.id, i.id, Some("CW production"), t0())
            .await
            .unwrap();
        assert_eq!(r.display_name(), "CW production");
        let r = s.rename_integration(t.id, i.id, None, t0()).await.unwrap();
        assert_eq!(r.display_name(), "ConnectWise Manage");

        // Keeping a masked secret keeps the stored value; the settings change.
        let upd = s
            .update_credentials(
                t.id,
                i.id,
                CredentialUpdate {
                    settings: serde_json::json!({"site": "eu.myconnectwise.net"}),
                    new_secrets: BTreeMap::new(),
                    keep: vec!["private_key".into()],
                    report: ok_report(),
                },
                &v,
                t0(),
            )
            .await
            .unwrap();
        assert_eq!(upd.settings["site"], "eu.myconnectwise.net");
        assert_eq!(upd.status, IntegrationStatus::Connected);
        assert_eq!(
            s.load_secrets(t.id, i.id, &v).await.unwrap()["private_key"].expose(),
            "first-secret"
        );

        // A new value replaces it.
        let mut new_secrets = BTreeMap::new();
        new_secrets.insert(
            "private_key".to_string(),
            SecretString::new("second-secret"),
        );
        s.update_credentials(
            t.id,
            i.id,
            CredentialUpdate {
                settings: upd.settings.clone(),
                new_secrets,
                keep: vec![],
                report: ok_report(),
            },
            &v,
            t0(),
        )
        .await
        .unwrap();
        assert_eq!(
            s.load_secrets(t.id, i.id, &v).await.unwrap()["private_key"].expose(),
            "second-secret"
        );

        // Another master key cannot read the secrets.
        assert!(matches!(
            s.load_secrets(t.id, i.id, &Vault::new(&[1u8; 32])).await,
            Err(StoreError::Vault(_))
        ));

        // Disconnect removes the credentials; a test of a disconnected integration changes nothing.
        let d = s.disconnect_integration(t.id, i.id, t0()).await.unwrap();
        assert_eq!(d.status, IntegrationStatus::Disconnected);
        assert!(s.load_secrets(t.id, i.id, &v).await.unwrap().is_empty());
        let after = s.record_test(t.id, i.id, &ok_report(), t0()).await.unwrap();
        assert_eq!(after.status, IntegrationStatus::Disconnected);

        s.delete_integration(t.id, i.id).await.unwrap();
        assert!(matches!(
            s.get_integration(t.id, i.id).await,
            Err(StoreError::NotFound)
        ));
    }
}

#[tokio::test]
async fn external_links_are_unique_per_integration_record_and_external_id() {
    for db in each_backend().await {
        let s = &db.store;
        let t = s.create_tenant("T", t0()).await.unwrap();
        let i = s
            .create_integration(t.id, new_cw("k"), &vault(), t0())
            .await
            .unwrap();
        let c1 = s.create_company(t.id, "One", t0()).await.unwrap();
        let c2 = s.create_company(t.id, "Two", t0()).await.unwrap();
        let link = |local: i64, ext: &str, hash: &str| LinkUpsert {
            integration_id: i.id,
            record: LinkedRecord::Company,
            local_id: local,
            external_id: ext.into(),
            remote_updated_at: Some(t0()),
            content_hash: hash.into(),
        };
        let a = s
            .upsert_link(t.id, link(c1.id.0, "250", "h1"), t0())
            .await
            .unwrap();
        let b = s
            .upsert_link(t.id, link(c1.id.0, "250", "h2"), t0())
            .await
            .unwrap();
        assert_eq!(a.id, b.id, "{}: same external id, same link", s.backend());
        assert_eq!(b.content_hash, "h2");
        let found = s
            .find_link(t.id, i.id, LinkedRecord::Company, "250")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found, b);
        assert!(
            s.find_link(t.id, i.id, LinkedRecord::CompanyUser, "250")
                .await
                .unwrap()
                .is_none()
        );
        // One portal company cannot be linked to two external companies of one integration.
        let clash = s.upsert_link(t.id, link(c1.id.0, "251", "h"), t0()).await;
        assert!(matches!(clash, Err(StoreError::Conflict(_))), "{clash:?}");
        s.upsert_link(t.id, link(c2.id.0, "251", "h"), t0())
            .await
            .unwrap();
        // Another tenant cannot write links for this integration.
        let other = s.create_tenant("Other", t0()).await.unwrap();
        assert!(matches!(
            s.upsert_link(other.id, link(c2.id.0, "252", "h"), t0())
                .await,
            Err(StoreError::NotFound)
        ));
    }
}

#[tokio::test]
async fn secrets_are_not_stored_in_clear() {
    let db = test_support::sqlite().await.unwrap();
    let s = &db.store;
    let t = s.create_tenant("T", t0()).await.unwrap();
    s.create_integration(t.id, new_cw("plaintext-canary-7f3a"), &vault(), t0())
        .await
        .unwrap();
    drop(db.store.clone());
    let path = db.url.trim_start_matches("sqlite://");
    let mut bytes = std::fs::read(path).unwrap();
    bytes.extend(std::fs::read(format!("{path}-wal")).unwrap_or_default());
    let canary = b"plaintext-canary-7f3a";
    assert!(
        !bytes.windows(canary.len()).any(|w| w == canary),
        "the secret appears in clear in the database files"
    );
    // The non-secret settings are there (proves the scan reads the right files).
    let site = b"na.myconnectwise.net";
    assert!(bytes.windows(site.len()).any(|w| w == site));
}

#[tokio::test]
async fn sqlite_runs_in_wal_mode_with_foreign_keys() {
    let path = std::env::temp_dir().join(format!("mspbridge-pragma-{}.db", std::process::id()));
    let store = mspbridge_store::sqlite::SqliteStore::connect(&path.display().to_string())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let (mode, fk) = store.pragmas().await.unwrap();
    assert_eq!(mode, "wal");
    assert!(fk);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[tokio::test]
async fn bad_database_urls_are_explained() {
    let e = mspbridge_store::open("mysql://localhost/db")
        .await
        .err()
        .unwrap();
    assert!(
        e.to_string()
            .contains("neither a postgres:// URL nor a SQLite file path"),
        "{e}"
    );
    let e = mspbridge_store::open("").await.err().unwrap();
    assert!(e.to_string().contains("empty"), "{e}");
}

/// Several processes starting at once against one PostgreSQL must apply the
/// migrations exactly once and all come up.
#[tokio::test]
async fn concurrent_migrations_on_postgres() {
    let Ok(admin) = std::env::var("TEST_DATABASE_URL") else {
        eprintln!("TEST_DATABASE_URL not set: PostgreSQL part skipped");
        return;
    };
    use sqlx::Connection;
    let schema = format!("mig_{}", std::process::id());
    let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
    )))
    .execute(&mut c)
    .await
    .unwrap();
    let url = test_support::schema_url(&admin, &schema);
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { mspbridge_store::open(&url).await.map(|s| s.backend()) })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), "postgres");
    }
    let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {schema}._sqlx_migrations"
    )))
    .fetch_one(&mut c)
    .await
    .unwrap();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .count() as i64;
    assert_eq!(n, files, "each migration applied exactly once");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&mut c)
        .await
        .unwrap();
}

#[tokio::test]
async fn refreshing_statistics_analyzes_the_synced_tables() {
    for db in each_backend().await {
        let s = &db.store;
        s.refresh_statistics().await.unwrap();
        if s.backend() != "postgres" {
            // SQLite: `PRAGMA optimize` decides itself whether ANALYZE is worth it.
            continue;
        }
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
            .await
            .unwrap();
        let analyzed: Vec<(String,)> = sqlx::query_as(
            "SELECT relname::TEXT FROM pg_stat_user_tables \
             WHERE schemaname = current_schema() AND analyze_count > 0 ORDER BY relname",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let analyzed: Vec<&str> = analyzed.iter().map(|r| r.0.as_str()).collect();
        for table in [
            "companies",
            "company_users",
            "external_links",
            "staff_users",
        ] {
            assert!(
                analyzed.contains(&table),
                "{table} not analyzed: {analyzed:?}"
            );
        }
    }
}
