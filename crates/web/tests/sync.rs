#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Sync through the API: options validation, Sync now with its cooldown, runs and
//! filtered run logs, tenant isolation; and the pages that show the result.

mod common;

use std::sync::Arc;

use common::*;
use mspbridge_providers::{OutboundPolicy, ProviderConfig, Providers};
use mspbridge_sync::{Engine, EngineConfig};
use mspbridge_vault::Vault;
use reqwest::Method;
use serde_json::json;

fn engine(app: &TestApp) -> Engine {
    let providers = Providers::new(ProviderConfig {
        outbound: OutboundPolicy {
            allow_private: true,
        },
        connectwise_client_id: None,
        ..Default::default()
    });
    Engine::new(
        app.db.store.clone(),
        Arc::new(Vault::new(&[9u8; 32])),
        providers,
        EngineConfig::default(),
        "test-worker",
    )
}

async fn role_id(app: &TestApp, name: &str) -> i64 {
    app.db
        .store
        .list_roles(app.a.id)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.name == name)
        .unwrap()
        .id
        .0
}

#[tokio::test]
async fn options_sync_now_runs_and_logs() {
    for app in TestApp::each().await {
        let t = &app.a.owner_token;
        let id = app.connect_cw(t).await["id"].as_i64().unwrap();
        let path = format!("/api/v1/integrations/{id}/options");
        let viewer = role_id(&app, "Viewer").await;

        for (body, field) in [
            (json!({"interval_minutes": 7}), "options.interval_minutes"),
            (
                json!({"auto_import_contacts": true}),
                "options.default_role_id",
            ),
            (
                json!({"auto_import_contacts": true, "default_role_id": 99999}),
                "options.default_role_id",
            ),
            (json!({"interval": 5}), "interval"),
            (
                json!({"contact_type_rules": [{"contact_type": "Owner", "role_id": 99999}]}),
                "options.contact_type_rules[0].role_id",
            ),
        ] {
            let (s, e) = app.call(Method::PUT, &path, t, Some(body.clone())).await;
            assert_eq!(
                (s, e["field"].as_str()),
                (422, Some(field)),
                "{body} -> {e}"
            );
        }
        let opts =
            json!({"interval_minutes": 5, "auto_import_contacts": true, "default_role_id": viewer});
        let (s, v) = app.call(Method::PUT, &path, t, Some(opts)).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["options"]["interval_minutes"], 5);
        assert!(v["schedule"]["next_run_at"].is_string());

        let (s, q) = app
            .post(&format!("/api/v1/integrations/{id}/sync"), t, json!({}))
            .await;
        assert_eq!((s, q["state"].as_str()), (202, Some("queued")));
        let resp = app
            .http
            .post(app.url(&format!("/api/v1/integrations/{id}/sync")))
            .bearer_auth(t)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 429, "a second click within the cooldown");
        assert!(resp.headers().get("retry-after").is_some());

        let run = engine(&app).tick().await.unwrap().expect("due");
        assert_eq!(run.result, mspbridge_domain::sync::RunResult::Success);

        let (s, runs) = app.get(&format!("/api/v1/integrations/{id}/runs"), t).await;
        assert_eq!(s, 200);
        let runs = runs.as_array().unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0]["result"], "success");
        assert!(runs[0]["counts"]["companies"]["created"].as_u64().unwrap() > 0);
        let run_id = runs[0]["id"].as_i64().unwrap();

        let (_, log) = app
            .get(
                &format!("/api/v1/runs/{run_id}?level=warning&record_type=contacts"),
                t,
            )
            .await;
        let events = log["events"].as_array().unwrap();
        assert!(!events.is_empty());
        assert!(
            events
                .iter()
                .all(|e| e["level"] == "warning" && e["record_type"] == "contacts"),
            "{events:?}"
        );
        let (s, e) = app
            .get(&format!("/api/v1/runs/{run_id}?level=loud"), t)
            .await;
        assert_eq!((s, e["field"].as_str()), (422, Some("level")));

        // Another tenant sees none of it.
        let b = &app.b.owner_token;
        assert_eq!(app.get(&format!("/api/v1/runs/{run_id}"), b).await.0, 404);
        assert_eq!(app.get(&path, b).await.0, 404);
        assert_eq!(
            app.post(&format!("/api/v1/integrations/{id}/sync"), b, json!({}))
                .await
                .0,
            404
        );

        // The integration is back to Connected after the run.
        let (_, i) = app.get(&format!("/api/v1/integrations/{id}"), t).await;
        assert_eq!(i["status"], "connected");
    }
}

#[tokio::test]
async fn the_pages_show_runs_companies_users_with_role_reasons_and_technicians() {
    let app = TestApp::start(mspbridge_store::test_support::sqlite().await.unwrap()).await;
    let t = &app.a.owner_token;
    let id = app.connect_cw(t).await["id"].as_i64().unwrap();
    let viewer = role_id(&app, "Viewer").await;
    let admin = role_id(&app, "Admin").await;
    let opts = json!({"auto_import_contacts": true, "default_role_id": viewer, "primary_contact_role_id": admin});
    assert_eq!(
        app.call(
            Method::PUT,
            &format!("/api/v1/integrations/{id}/options"),
            t,
            Some(opts)
        )
        .await
        .0,
        200
    );
    engine(&app).tick().await.unwrap().unwrap();

    // Sign in as the owner and read the pages.
    let client = &app.http;
    let login = client.get(app.url("/login")).send().await.unwrap();
    let cookie = login
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let body = login.text().await.unwrap();
    let csrf = body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let resp = client
        .post(app.url("/login"))
        .header("cookie", &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("email", app.a.email.as_str()),
            ("password", ADMIN_PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    let session = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with("msb_session="))
        .unwrap();
    let session = session.split(';').next().unwrap().to_string();
    let app = &app;
    let get = |path: String| {
        let session = session.clone();
        async move {
            client
                .get(app.url(&path))
                .header("cookie", session)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };

    let list = get("/settings/integrations".to_string()).await;
    assert!(
        list.contains("Last sync: ") && list.contains("(success)"),
        "the card shows the last sync"
    );
    // The page is in tabs: Overview (status, Test, Sync now), Options, Runs (with the
    // counts' legend) and Log (the latest run's events).
    let overview = get(format!("/settings/integrations/{id}")).await;
    assert!(overview.contains("Sync now") && overview.contains("aria-current=\"page\">Overview"));
    let runs = get(format!("/settings/integrations/{id}?tab=runs")).await;
    assert!(
        runs.contains("id=\"legend\"") && runs.contains("unchanged") && runs.contains("waiting")
    );
    let log = get(format!("/settings/integrations/{id}?tab=log")).await;
    assert!(
        log.contains("aria-label=\"Events\"") && log.contains("data-level="),
        "{log}"
    );
    let detail = get(format!("/settings/integrations/{id}?tab=options")).await;
    assert!(detail.contains("Save options"));
    assert!(
        detail.contains(
            "Contact types in ConnectWise Manage: Approver, Billing, Employee, IT Contact, Owner"
        ) && detail.contains("In ConnectWise Manage: Client, Partner, Prospect, Vendor")
            && detail.contains("Sync PSA Data")
            && detail.contains("In ConnectWise Manage: Alerts, Projects, Service Desk")
            && detail
                .contains("In ConnectWise Manage: Completed, In Progress, New, Waiting on Client"),
        "the options show the vendor's lists beside the fields that name them"
    );
    let run_id = runs
        .split("data-run=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let run = get(format!("/settings/integrations/{id}/runs/{run_id}")).await;
    assert!(run.contains("success") && run.contains("data-record=\"companies\""));
    assert!(
        run.contains("has no email address"),
        "the log explains skipped contacts"
    );
    let filtered = get(format!(
        "/settings/integrations/{id}/runs/{run_id}?level=error"
    ))
    .await;
    assert!(!filtered.contains("data-level=\"warning\""));

    let companies = get("/companies".into()).await;
    let company_id = companies
        .split("href=\"/companies/")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().to_string())
        .find(|id| id.parse::<i64>().is_ok())
        .unwrap();
    let company = get(format!("/companies/{company_id}")).await;
    assert!(company.contains("Why this role"));
    assert!(
        company.contains("Inheriting from ConnectWise Manage: Viewer"),
        "the caption names the integration the company inherits from: {company}"
    );
    assert!(
        company.contains("primary contact in ConnectWise Manage")
            || company.contains("ConnectWise Manage integration default"),
        "{company}"
    );
    // Spec 2.10: each user's Source, contact type, role, why and last sync, and one
    // inheritance caption per linked provider.
    for column in ["Source", "Contact type", "Why this role", "Last synced"] {
        assert!(company.contains(&format!("<th>{column}</th>")), "{column}");
    }
    assert!(
        company.contains(r#"<td class="source">ConnectWise Manage</td>"#),
        "{company}"
    );
    let types = ["Approver", "Billing", "Employee", "IT Contact", "Owner"];
    assert!(
        company
            .split(r#"<td class="contact-types">"#)
            .skip(1)
            .any(|cell| types.iter().any(|t| cell.starts_with(t))),
        "contact types shown: {company}"
    );
    assert!(
        company.contains(r#"<li class="caption">New ConnectWise Manage contacts of this company get role Viewer because that is ConnectWise Manage&#39;s integration default and this company has no Default Import Role; before that, the primary contact gets Admin.</li>"#),
        "the inheritance caption: {company}"
    );
    let techs = get("/technicians".into()).await;
    assert!(techs.contains("@msp.example") && techs.contains("import"));
}

#[tokio::test]
async fn the_vendor_lists_are_read_on_connect_refreshed_on_demand_and_checked() {
    for app in TestApp::each().await {
        let t = &app.a.owner_token;
        let id = app.connect_cw(t).await["id"].as_i64().unwrap();
        let path = format!("/api/v1/integrations/{id}/options");
        let (s, v) = app.get(&path, t).await;
        assert_eq!(s, 200, "{v}");
        let vocab = &v["vocabulary"];
        assert_eq!(
            vocab["contact_types"],
            json!(["Approver", "Billing", "Employee", "IT Contact", "Owner"]),
            "read from ConnectWise on connect: {v}"
        );
        assert_eq!(
            vocab["company_types"],
            json!(["Client", "Partner", "Prospect", "Vendor"])
        );
        assert!(
            vocab["company_statuses"]
                .as_array()
                .unwrap()
                .contains(&json!("Credit Hold"))
        );

        // Names are checked against the lists, case-insensitively, and the field is named.
        let admin = role_id(&app, "Admin").await;
        for (body, field) in [
            (
                json!({"contact_type_rules": [{"contact_type": "it contact", "role_id": admin}, {"contact_type": "IT Contcat", "role_id": admin}]}),
                "options.contact_type_rules[1].contact_type",
            ),
            (
                json!({"exclude_company_types": ["Vendors"]}),
                "options.exclude_company_types[0]",
            ),
            (
                json!({"exclude_company_statuses": ["Credit hold", "Gone"]}),
                "options.exclude_company_statuses[1]",
            ),
        ] {
            let (s, e) = app.call(Method::PUT, &path, t, Some(body.clone())).await;
            assert_eq!(
                (s, e["field"].as_str()),
                (422, Some(field)),
                "{body} -> {e}"
            );
            assert!(
                e["message"]
                    .as_str()
                    .unwrap()
                    .contains("ConnectWise Manage"),
                "{e}"
            );
        }
        let ok = json!({"contact_type_rules": [{"contact_type": "it contact", "role_id": admin}],
            "exclude_company_types": ["vendor"], "exclude_company_statuses": ["Credit Hold"]});
        let (s, e) = app.call(Method::PUT, &path, t, Some(ok)).await;
        assert_eq!(s, 200, "{e}");

        // A type added in ConnectWise is known after "Refresh lists".
        app.sandbox.with_data(|d| {
            d.contact_types
                .push(mspbridge_providers::connectwise::wire::ContactType {
                    id: 99,
                    description: "Decision Maker".into(),
                })
        });
        let rule =
            json!({"contact_type_rules": [{"contact_type": "Decision Maker", "role_id": admin}]});
        let (s, _) = app.call(Method::PUT, &path, t, Some(rule.clone())).await;
        assert_eq!(s, 422, "not in the lists read on connect");
        let (s, v) = app
            .post(
                &format!("/api/v1/integrations/{id}/vocabulary"),
                t,
                json!({}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert!(
            v["contact_types"]
                .as_array()
                .unwrap()
                .contains(&json!("Decision Maker"))
        );
        let (s, e) = app.call(Method::PUT, &path, t, Some(rule)).await;
        assert_eq!(s, 200, "{e}");

        // A read-only token cannot make vendor requests; the vendor's failures are a 502.
        let reader = app
            .token(app.a.id, mspbridge_domain::auth::StaffRole::ReadOnly)
            .await;
        let (s, _) = app
            .post(
                &format!("/api/v1/integrations/{id}/vocabulary"),
                &reader,
                json!({}),
            )
            .await;
        assert_eq!(s, 403);
        app.sandbox.faults.push_n(
            "/company/contacts/types",
            mspbridge_sandbox::Fault::Status {
                status: 500,
                body: "{\"code\":\"Internal\",\"message\":\"boom\"}".into(),
                retry_after: None,
            },
            10,
        );
        let (s, e) = app
            .post(
                &format!("/api/v1/integrations/{id}/vocabulary"),
                t,
                json!({}),
            )
            .await;
        assert_eq!((s, e["code"].as_str()), (502, Some("vendor_error")), "{e}");
        app.sandbox.faults.clear();
    }
}

/// The contact-type rule editor's preview: real contacts from the vendor's first page,
/// the role each would get through the chain with the rules being edited (Company Defaults
/// overrides included), why, and nothing saved; role ids checked; manage only.
#[tokio::test]
async fn the_role_preview_shows_what_real_contacts_would_get() {
    for app in TestApp::each().await {
        let t = &app.a.owner_token;
        let cw = imported(&app).await;
        let (admin, standard, viewer) = (
            role_id(&app, "Admin").await,
            role_id(&app, "Standard User").await,
            role_id(&app, "Viewer").await,
        );
        let url = format!("/api/v1/integrations/{cw}/role-preview");
        // First with the default only, to see the sample.
        let (s, p) = app.post(&url, t, json!({"default_role_id": viewer})).await;
        assert_eq!(s, 200, "{p}");
        let rows = p["rows"].as_array().unwrap().clone();
        assert!(!rows.is_empty() && rows.len() <= 25, "{p}");
        assert_eq!(p["read"].as_u64(), Some(rows.len() as u64));
        let importable = |r: &serde_json::Value| !r["company"].is_null() && r["role"].is_string();
        assert!(rows.iter().any(importable), "{p}");
        for r in rows.iter().filter(|r| importable(r)) {
            assert_eq!(r["role"], "Viewer", "{r}");
            assert!(
                r["reason"]
                    .as_str()
                    .unwrap()
                    .contains("integration default"),
                "{r}"
            );
        }
        let typed = rows
            .iter()
            .find(|r| importable(r) && !r["contact_types"].as_array().unwrap().is_empty())
            .expect("a contact with a type")
            .clone();
        let ty = typed["contact_types"][0].as_str().unwrap().to_string();

        // Now with a rule for that type and a primary-contact role.
        let (s, p) = app
            .post(
                &url,
                t,
                json!({
                    "contact_type_rules": [{"contact_type": ty.to_uppercase(), "role_id": admin}],
                    "primary_contact_role_id": standard,
                    "default_role_id": viewer,
                }),
            )
            .await;
        assert_eq!(s, 200, "{p}");
        for r in p["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| importable(r))
        {
            let has_type = r["contact_types"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x.as_str().unwrap().eq_ignore_ascii_case(&ty));
            let want = if has_type {
                "Admin"
            } else if r["primary"] == true {
                "Standard User"
            } else {
                "Viewer"
            };
            assert_eq!(r["role"], want, "{r}");
            if has_type {
                assert!(r["reason"].as_str().unwrap().contains("(rule 1)"), "{r}");
            }
        }

        // A Company Defaults override wins over every rule for that company's contacts.
        let company = app
            .db
            .store
            .list_companies(app.a.id)
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.name == typed["company"].as_str().unwrap())
            .unwrap();
        app.db
            .store
            .set_company_defaults(
                app.a.id,
                company.id,
                Some(mspbridge_domain::RoleId(standard)),
                chrono::Utc::now(),
            )
            .await
            .unwrap();
        let (_, p) = app
            .post(
                &url,
                t,
                json!({"contact_type_rules": [{"contact_type": ty, "role_id": admin}]}),
            )
            .await;
        let row = p["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == typed["name"] && r["email"] == typed["email"])
            .unwrap()
            .clone();
        assert_eq!(row["role"], "Standard User", "{row}");

        // Nothing was saved; a role of nobody's is refused with its field; read cannot.
        let (_, o) = app
            .get(&format!("/api/v1/integrations/{cw}/options"), t)
            .await;
        assert!(
            o["options"]["contact_type_rules"]
                .as_array()
                .unwrap()
                .is_empty(),
            "{o}"
        );
        let (s, e) = app
            .post(
                &url,
                t,
                json!({"contact_type_rules": [{"contact_type": ty, "role_id": 987654}]}),
            )
            .await;
        assert_eq!(
            (s, e["field"].as_str()),
            (422, Some("options.contact_type_rules[0].role_id")),
            "{e}"
        );
        let (s, e) = app.post(&url, t, json!({"default_role": viewer})).await;
        assert_eq!(s, 422, "unknown fields are refused: {e}");
        let reader = app
            .token(app.a.id, mspbridge_domain::auth::StaffRole::ReadOnly)
            .await;
        let (s, _) = app.post(&url, &reader, json!({})).await;
        assert_eq!(s, 403);
        let other = app.b.owner_token.clone();
        let (s, _) = app.post(&url, &other, json!({})).await;
        assert_eq!(s, 404, "another tenant's integration");
    }
}
