#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Microsoft 365 end to end on both databases, against the sandbox that plays Microsoft's
//! sign-in service and Graph: connecting the app, admin consent per company (signed,
//! single-use, expiring `state`; links for the client's admin), the tenant sync (users by
//! delta, licences, domains, Secure Score with a 206 that keeps the good snapshot), each
//! tenant's own status while the others sync, and users already in the portal matched by
//! e-mail.

mod common;

use std::sync::Arc;

use chrono::Duration;
use common::*;
use mspbridge_domain::CompanyId;
use mspbridge_domain::model::UserStatus;
use mspbridge_domain::sync::{Counts, RecordType, RunResult};
use mspbridge_providers::ProviderConfig;
use mspbridge_providers::microsoft_365::client::GraphSettings;
use mspbridge_providers::microsoft_365::sandbox::{
    DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, M365Sandbox, PARTNER_TENANT_ID,
};
use mspbridge_sandbox::{SandboxHandle, Seed, loopback_listener};
use serde_json::{Value, json};

struct Vendor {
    m365: M365Sandbox,
    base: String,
    _handle: SandboxHandle,
}

async fn vendor() -> (Vendor, ProviderConfig) {
    let m365 = M365Sandbox::new(Seed::Small);
    let handle = m365.serve(loopback_listener().await.unwrap()).unwrap();
    let base = M365Sandbox::base_url(&handle);
    let config = ProviderConfig {
        microsoft_365: GraphSettings {
            login_base: Some(base.clone()),
            graph_base: Some(base.clone()),
            backoff_floor: std::time::Duration::from_millis(100),
            ..Default::default()
        },
        ..Default::default()
    };
    (
        Vendor {
            m365,
            base,
            _handle: handle,
        },
        config,
    )
}

/// The sandbox serves plain http on loopback; its own links say https.
fn http(url: &str) -> String {
    url.replacen("https://", "http://", 1)
}

fn query_of(url: &str, name: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.replace('+', " ").into_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%' && i + 2 < b.len() + 1)
            .then(|| std::str::from_utf8(b.get(i + 1..i + 3)?).ok())
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(x) => {
                out.push(x);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// The admin of `tenant` accepts (or cancels) at the sandbox's consent page reached from
/// `consent_url`; Microsoft's redirect back (the callback URL with its query).
async fn consent_at_microsoft(
    app: &TestApp,
    consent_url: &str,
    tenant: &str,
    accept: bool,
) -> String {
    let page = app.http.get(http(consent_url)).send().await.unwrap();
    assert_eq!(page.status(), 200, "the consent page");
    let form: Vec<(&str, String)> = vec![
        ("client_id", query_of(consent_url, "client_id").unwrap()),
        ("scope", query_of(consent_url, "scope").unwrap()),
        (
            "redirect_uri",
            query_of(consent_url, "redirect_uri").unwrap(),
        ),
        ("state", query_of(consent_url, "state").unwrap()),
        ("tenant", tenant.to_string()),
        (
            "decision",
            if accept { "accept" } else { "cancel" }.to_string(),
        ),
    ];
    let post_url = http(consent_url.split('?').next().unwrap());
    let r = app.http.post(post_url).form(&form).send().await.unwrap();
    assert_eq!(r.status(), 302);
    r.headers()["location"].to_str().unwrap().to_string()
}

/// The app's answer to Microsoft's redirect: (status, Location or body).
async fn callback(app: &TestApp, redirect: &str) -> (u16, String) {
    let path = &redirect[redirect.find("/m365/consent/callback").unwrap()..];
    let r = app.http.get(app.url(path)).send().await.unwrap();
    let status = r.status().as_u16();
    let text = match r.headers().get("location") {
        Some(l) => l.to_str().unwrap().to_string(),
        None => r.text().await.unwrap(),
    };
    (status, text)
}

async fn create_company(app: &TestApp, name: &str) -> i64 {
    let (s, v) = app
        .post(
            "/api/v1/companies",
            &app.a.owner_token,
            json!({"name": name}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    v["id"].as_i64().unwrap()
}

async fn consent(app: &TestApp, id: i64, company: i64, body: Value) -> (u16, Value) {
    app.post(
        &format!("/api/v1/integrations/{id}/m365/companies/{company}/consent"),
        &app.a.owner_token,
        body,
    )
    .await
}

async fn run(app: &TestApp, id: i64, ahead: Duration) -> mspbridge_sync::RunSummary {
    app.db
        .store
        .request_sync(
            app.a.id,
            mspbridge_domain::IntegrationId(id),
            chrono::Utc::now() + ahead,
            Duration::zero(),
        )
        .await
        .unwrap();
    full_pass_engine(app)
        .with_clock(Arc::new(move || chrono::Utc::now() + ahead))
        .tick()
        .await
        .unwrap()
        .expect("due")
}

fn counts(run: &mspbridge_sync::RunSummary, r: RecordType) -> Counts {
    run.counts.get(&r).cloned().unwrap_or_default()
}

#[tokio::test]
async fn companies_connect_by_admin_consent_and_their_tenants_sync_each_with_its_own_status() {
    for db in mspbridge_store::test_support::all().await.unwrap() {
        let (v, config) = vendor().await;
        let app = TestApp::start_configured(db, false, config).await;
        let t = app.a.owner_token.clone();
        let tenants = v.m365.tenants();

        // Connect: the Test proves the secret in the MSP's own tenant.
        let (s, bad) = app
            .post(
                "/api/v1/integrations",
                &t,
                json!({"provider": "microsoft_365", "credentials": {
                    "client_id": DEMO_CLIENT_ID, "client_secret": "wrong", "home_tenant": PARTNER_TENANT_ID}}),
            )
            .await;
        assert_eq!(s, 422, "{bad}");
        assert!(
            bad.to_string().contains("7000215") || bad.to_string().contains("secret"),
            "{bad}"
        );
        let id = connect_json(
            &app,
            json!({"provider": "microsoft_365", "credentials": {
                "client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET, "home_tenant": PARTNER_TENANT_ID}}),
        )
        .await;

        // Companies named like the tenants; one user already in the portal (from a PSA).
        let mut companies = Vec::new();
        for st in tenants.iter().take(4) {
            companies.push(create_company(&app, &st.display_name).await);
        }
        let (s, setup) = app
            .get(&format!("/api/v1/integrations/{id}/m365/companies"), &t)
            .await;
        assert_eq!(s, 200, "{setup}");
        assert_eq!(setup["connected"], 0);
        assert_eq!(setup["total"], 4);

        // Connect company 0 in this browser: Microsoft's consent page, back to the portal.
        let (s, a) = consent(&app, id, companies[0], json!({"kind": "connect"})).await;
        assert_eq!(s, 200, "{a}");
        let url = a["url"].as_str().unwrap().to_string();
        assert!(url.contains(v.base.trim_start_matches("https://")), "{url}");
        assert!(
            url.contains("/organizations/v2.0/adminconsent?client_id="),
            "{url}"
        );
        let back = consent_at_microsoft(&app, &url, &tenants[0].id, true).await;
        let (s, to) = callback(&app, &back).await;
        assert_eq!(s, 303, "{to}");
        assert!(
            to.contains(&format!("/settings/integrations/{id}/m365")),
            "{to}"
        );
        // Replayed: refused, nothing changes.
        let (s, page) = callback(&app, &back).await;
        assert_eq!(s, 400);
        assert!(page.contains("already used"), "{page}");
        // A valid state naming a tenant that never consented: refused, nothing connected.
        let (_, a) = consent(&app, id, companies[1], json!({"kind": "connect"})).await;
        let state = query_of(a["url"].as_str().unwrap(), "state").unwrap();
        let claimed = format!(
            "{}/m365/consent/callback?admin_consent=True&tenant={}&state={}",
            app.base,
            tenants[6].id,
            mspbridge_providers::http::urlencode(&state)
        );
        let (s, page) = callback(&app, &claimed).await;
        assert_eq!(s, 400, "{page}");
        assert!(page.contains("could not read that tenant"), "{page}");
        // Forged: a state this portal did not sign.
        let forged = back.replace("state=", "state=1%3Aforged.");
        let (s, page) = callback(&app, &forged).await;
        assert_eq!(s, 400);
        assert!(page.contains("not valid"), "{page}");
        // Declined at Microsoft: said in words, nothing connected.
        let (_, a) = consent(&app, id, companies[3], json!({"kind": "connect"})).await;
        let back =
            consent_at_microsoft(&app, a["url"].as_str().unwrap(), &tenants[3].id, false).await;
        let (s, page) = callback(&app, &back).await;
        assert_eq!(s, 400);
        assert!(page.contains("did not grant consent"), "{page}");

        // Expired: a session consent lives 15 minutes.
        let (_, a) = consent(&app, id, companies[1], json!({"kind": "connect"})).await;
        let state = query_of(a["url"].as_str().unwrap(), "state").unwrap();
        let nonce = state
            .split_once(':')
            .unwrap()
            .1
            .rsplit_once('.')
            .unwrap()
            .0
            .to_string();
        let late = app
            .db
            .store
            .m365_use_consent(app.a.id, &nonce, chrono::Utc::now() + Duration::minutes(16))
            .await
            .unwrap();
        assert_eq!(late, Err(mspbridge_store::m365::ConsentRefusal::Expired));

        // A link for the client's admin: works once; a newer one replaces it; 7 days.
        let (_, old) = consent(&app, id, companies[1], json!({"kind": "link"})).await;
        let (_, link) = consent(&app, id, companies[1], json!({"kind": "link"})).await;
        let expires =
            chrono::DateTime::parse_from_rfc3339(link["expires_at"].as_str().unwrap()).unwrap();
        let days = (expires.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_hours();
        assert!((167..=168).contains(&days), "{days}");
        let open = |u: &str| {
            let path = u[u.find("/m365/consent/link/").unwrap()..].to_string();
            let app = &app;
            async move { app.http.get(app.url(&path)).send().await.unwrap() }
        };
        let r = open(old["url"].as_str().unwrap()).await;
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains("newer consent link"));
        let r = open(link["url"].as_str().unwrap()).await;
        assert_eq!(r.status(), 303);
        let to_ms = r.headers()["location"].to_str().unwrap().to_string();
        let back = consent_at_microsoft(&app, &to_ms, &tenants[1].id, true).await;
        let (s, page) = callback(&app, &back).await;
        assert_eq!(s, 200, "{page}");
        assert!(page.contains("is now connected"), "{page}");
        let r = open(link["url"].as_str().unwrap()).await;
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains("already used"));
        // A link's consent 8 days on: expired.
        let (_, late) = consent(&app, id, companies[2], json!({"kind": "link"})).await;
        let signed = late["url"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_string();
        let nonce = signed
            .split_once(':')
            .unwrap()
            .1
            .rsplit_once('.')
            .unwrap()
            .0
            .to_string();
        let refused = app
            .db
            .store
            .m365_use_consent(app.a.id, &nonce, chrono::Utc::now() + Duration::days(8))
            .await
            .unwrap();
        assert_eq!(refused, Err(mspbridge_store::m365::ConsentRefusal::Expired));

        // Company 2 connected too (consent given in the sandbox), then its permission
        // for Secure Score is missing; company 3 never consented in its tenant.
        for (i, company) in [(2usize, companies[2]), (3, companies[3])] {
            let (_, a) = consent(&app, id, company, json!({"kind": "connect"})).await;
            let back =
                consent_at_microsoft(&app, a["url"].as_str().unwrap(), &tenants[i].id, true).await;
            assert_eq!(callback(&app, &back).await.0, 303);
        }
        v.m365.deny_security(&tenants[2].id);
        v.m365.revoke_consent(&tenants[3].id);

        // A portal user of company 0 (as a PSA would have imported) whose e-mail one of the
        // tenant's Microsoft 365 users has.
        let cu = company_user(&app, CompanyId(companies[0]), "Known", UserStatus::Active).await;
        let known = v.m365.users(&tenants[0].id);
        let known_id = known.iter().find(|u| u["mail"].is_string()).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        v.m365.update_user(&tenants[0].id, &known_id, |u| {
            u["mail"] = json!("Known@Client.example")
        });

        let first = run(&app, id, Duration::zero()).await;
        assert_eq!(first.result, RunResult::Partial, "{first:?}");
        let tenants_counted = counts(&first, RecordType::Companies);
        assert_eq!(tenants_counted.seen, 4, "{first:?}");
        assert_eq!(
            tenants_counted.skipped, 2,
            "consent missing, permission missing: {first:?}"
        );
        assert!(
            first
                .error
                .as_deref()
                .unwrap_or_default()
                .contains("AADSTS700016"),
            "{first:?}"
        );

        let company = |i: usize| {
            let app = &app;
            let t = t.clone();
            let c = companies[i];
            async move {
                let (s, v) = app.get(&format!("/api/v1/companies/{c}/m365"), &t).await;
                assert_eq!(s, 200, "{v}");
                v
            }
        };
        let c0 = company(0).await;
        assert_eq!(c0["tenants"][0]["status"], "connected");
        assert_eq!(
            c0["tenants"][0]["display_name"],
            tenants[0].display_name.as_str()
        );
        assert!(c0["domains"].as_array().unwrap().iter().any(|d| d["name"] == tenants[0].default_domain.as_str() && d["is_default"] == true));
        assert!(!c0["licences"].as_array().unwrap().is_empty());
        assert!(
            c0["licences"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["name"] == "Microsoft 365 E3"
                    || l["name"] == "Microsoft 365 Business Standard"),
            "{}",
            c0["licences"]
        );
        let users = c0["users"].as_array().unwrap();
        assert_eq!(users.len(), known.len());
        let matched: Vec<&Value> = users
            .iter()
            .filter(|u| u["company_user_id"].is_i64())
            .collect();
        assert_eq!(
            matched.len(),
            1,
            "the portal user is matched by e-mail, once"
        );
        assert_eq!(matched[0]["company_user_id"], cu.id.0);
        let score = &c0["secure_scores"][0];
        assert_eq!(score["history"].as_array().unwrap().len(), 90);
        assert!(score["latest"]["percent"].as_f64().unwrap() > 0.0);
        let controls = score["controls"].as_array().unwrap();
        assert!(controls.len() >= 10, "{controls:?}");
        assert!(controls.iter().all(|c| {
            ["Critical", "High", "Medium", "Low"].contains(&c["severity"].as_str().unwrap())
        }));
        // Tokens never cross tenants: every tenant's data is its own.
        let c1 = company(1).await;
        assert_eq!(
            c1["tenants"][0]["display_name"],
            tenants[1].display_name.as_str()
        );
        assert!(
            c1["users"]
                .as_array()
                .unwrap()
                .iter()
                .all(|u| !users.iter().any(|x| x["external_id"] == u["external_id"]))
        );
        // Company 2: users and licences synced; Secure Score refused → its status says why.
        let c2 = company(2).await;
        assert_eq!(
            c2["tenants"][0]["status"], "permission_missing",
            "{}",
            c2["tenants"]
        );
        assert!(!c2["users"].as_array().unwrap().is_empty());
        // Company 3: consent missing, said so; not retried at the next run.
        let c3 = company(3).await;
        assert_eq!(
            c3["tenants"][0]["status"], "not_consented",
            "{}",
            c3["tenants"]
        );
        let token_requests = v.m365.token_requests();

        // Within Microsoft's limits: never more than 4 Secure Score calls of a tenant at once.
        for st in tenants.iter().take(3) {
            assert!(v.m365.max_concurrent_security(&st.id) <= 4);
        }

        // Next run: users by delta — one change read, and only it.
        v.m365.update_user(&tenants[0].id, &known_id, |u| {
            u["jobTitle"] = json!("Head of Changes")
        });
        let before = v.m365.seen().len();
        let second = run(&app, id, Duration::minutes(30)).await;
        let users_counted = counts(&second, RecordType::Contacts);
        assert_eq!(users_counted.updated, 1, "{second:?}");
        assert_eq!(
            users_counted.seen, 1,
            "only the changed user is read: {second:?}"
        );
        let seen: Vec<_> = v.m365.seen().into_iter().skip(before).collect();
        assert!(
            seen.iter()
                .any(|r| r.path.contains("/users/delta") && r.query.contains("deltatoken")),
            "{seen:?}"
        );
        assert!(
            !seen.iter().any(|r| r.path.contains("/security/")),
            "Secure Score is read daily, not every run"
        );
        assert!(
            !seen
                .iter()
                .any(|r| r.token_tenant.as_deref() == Some(tenants[3].id.as_str()))
        );
        assert_eq!(
            v.m365.token_requests(),
            token_requests,
            "tokens are reused, the unconsented tenant is not retried"
        );
        let c0 = company(0).await;
        assert!(
            c0["users"]
                .as_array()
                .unwrap()
                .iter()
                .any(|u| u["job_title"] == "Head of Changes")
        );

        // A day later Microsoft answers Secure Score in part (206): the kept snapshot stays.
        let latest = c0["secure_scores"][0]["latest"].clone();
        v.m365.set_partial_scores(&tenants[0].id, true);
        let third = run(&app, id, Duration::hours(25)).await;
        assert_eq!(third.result, RunResult::Partial, "{third:?}");
        let c0 = company(0).await;
        assert_eq!(
            c0["secure_scores"][0]["latest"], latest,
            "a partial answer never replaces a good snapshot"
        );

        // Import Selected: the portal user with the same e-mail is not duplicated; two
        // others become portal users with the company's Default Import Role and the reason.
        let role = app.db.store.list_roles(app.a.id).await.unwrap()[0].id;
        let (s, _) = app
            .call(
                reqwest::Method::PUT,
                &format!("/api/v1/companies/{}/default-import-role", companies[0]),
                &t,
                Some(json!({"default_import_role": role.0})),
            )
            .await;
        assert_eq!(s, 200);
        let users = c0["users"].as_array().unwrap();
        let matched_id = users
            .iter()
            .find(|u| u["company_user_id"].is_i64())
            .unwrap()["id"]
            .as_i64()
            .unwrap();
        let others: Vec<i64> = users
            .iter()
            .filter(|u| u["company_user_id"].is_null() && u["email"].is_string())
            .take(2)
            .map(|u| u["id"].as_i64().unwrap())
            .collect();
        let (s, imported) = app
            .post(
                &format!("/api/v1/companies/{}/m365/users/import", companies[0]),
                &t,
                json!({"user_ids": [matched_id, others[0], others[1]]}),
            )
            .await;
        assert_eq!(s, 200, "{imported}");
        assert_eq!(imported["imported"], 2, "{imported}");
        assert_eq!(
            imported["skipped"][0][1], "already in the portal",
            "{imported}"
        );
        let portal = app
            .db
            .store
            .list_company_users(app.a.id, CompanyId(companies[0]))
            .await
            .unwrap();
        assert_eq!(
            portal.len(),
            3,
            "one matched, two imported, none duplicated"
        );
        assert!(portal.iter().filter(|u| u.id != cu.id).all(|u| {
            u.role_id == role
                && u.role_reason
                    .as_deref()
                    .unwrap_or_default()
                    .contains("Microsoft 365")
        }));
        let (s, again) = app
            .post(
                &format!("/api/v1/companies/{}/m365/users/import", companies[0]),
                &t,
                json!({"user_ids": [others[0]]}),
            )
            .await;
        assert_eq!(s, 200);
        assert_eq!(
            again["imported"], 0,
            "importing again creates nothing: {again}"
        );
        // One imported user leaves the tenant: its portal user is disabled at the next run.
        let leaver = users.iter().find(|u| u["id"] == others[0]).unwrap()["external_id"]
            .as_str()
            .unwrap()
            .to_string();
        v.m365.delete_user(&tenants[0].id, &leaver);
        let (s, bad) = app
            .post(
                &format!("/api/v1/companies/{}/m365/users/import", companies[1]),
                &t,
                json!({"user_ids": [others[0]]}),
            )
            .await;
        assert_eq!(s, 422, "another company's user: {bad}");
        assert!(bad.to_string().contains("user_ids"), "{bad}");

        // Partner discovery: the customer tenants with their company or a proposal, why.
        let (s, found) = app
            .get(
                &format!("/api/v1/integrations/{id}/m365/customer-tenants"),
                &t,
            )
            .await;
        assert_eq!(s, 200, "{found}");
        let found = found.as_array().unwrap();
        assert_eq!(found.len(), tenants.len(), "every GDAP customer, once");
        let row = |tid: &str| {
            found
                .iter()
                .find(|f| f["tenant_id"] == tid)
                .unwrap()
                .clone()
        };
        assert_eq!(
            row(&tenants[0].id)["connected_company"][1],
            tenants[0].display_name.as_str()
        );
        let fifth = create_company(&app, &tenants[4].display_name).await;
        let (_, found) = app
            .get(
                &format!("/api/v1/integrations/{id}/m365/customer-tenants"),
                &t,
            )
            .await;
        let f4 = found
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["tenant_id"] == tenants[4].id.as_str())
            .unwrap()
            .clone();
        assert_eq!(f4["proposed_company"][0], fifth, "{f4}");
        assert_eq!(f4["reason"], "same name", "{f4}");
        let mut proposed: Vec<i64> = found
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f["proposed_company"][0].as_i64())
            .collect();
        let n = proposed.len();
        proposed.sort_unstable();
        proposed.dedup();
        assert_eq!(
            proposed.len(),
            n,
            "a company is proposed for one tenant at most"
        );
        assert!(
            found
                .as_array()
                .unwrap()
                .iter()
                .all(|f| f["confidence"].is_null() || f["confidence"].as_u64() >= Some(70))
        );
        // Connecting the found tenant: consent given in another tenant is refused.
        let (_, a) = consent(
            &app,
            id,
            fifth,
            json!({"kind": "connect", "tenant_id": tenants[4].id}),
        )
        .await;
        let url = a["url"].as_str().unwrap().to_string();
        assert!(
            url.contains(&format!("/{}/v2.0/adminconsent", tenants[4].id)),
            "{url}"
        );
        let back = consent_at_microsoft(&app, &url, &tenants[5].id, true).await;
        let (s, page) = callback(&app, &back).await;
        assert_eq!(s, 400);
        assert!(page.contains("another tenant"), "{page}");
        let (s, bad) = consent(
            &app,
            id,
            fifth,
            json!({"kind": "connect", "tenant_id": "not-a-guid"}),
        )
        .await;
        assert_eq!(s, 422);
        assert!(bad.to_string().contains("tenant_id"), "{bad}");

        // The overview across companies, lowest first.
        let (s, o) = app.get("/api/v1/m365/secure-scores", &t).await;
        assert_eq!(s, 200, "{o}");
        let rows = o.as_array().unwrap();
        assert_eq!(rows.len(), 2, "{o}");
        assert!(rows[0]["percent"].as_f64() <= rows[1]["percent"].as_f64());

        // Another tenant's caller sees nothing of it.
        let (s, _) = app
            .get(
                &format!("/api/v1/companies/{}/m365", companies[0]),
                &app.b.owner_token,
            )
            .await;
        assert_eq!(s, 404);

        // Disconnect: kept, no longer synced, no longer counted.
        let conn = c3["tenants"][0]["id"].as_i64().unwrap();
        let (s, d) = app
            .post(
                &format!("/api/v1/integrations/{id}/m365/tenants/{conn}/disconnect"),
                &t,
                json!({}),
            )
            .await;
        assert_eq!(s, 200, "{d}");
        assert_eq!(d["status"], "disconnected");
        let (_, setup) = app
            .get(&format!("/api/v1/integrations/{id}/m365/companies"), &t)
            .await;
        // Connected: companies whose tenant is; one missing a permission needs attention.
        assert_eq!(setup["connected"], 2, "{setup}");
        let attention: Vec<_> = setup["companies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["state"] == "attention")
            .collect();
        assert_eq!(attention.len(), 1, "{setup}");
        // Not applicable leaves a company out of the denominator.
        let (s, _) = app
            .call(
                reqwest::Method::PUT,
                &format!(
                    "/api/v1/integrations/{id}/m365/companies/{}/applicable",
                    companies[3]
                ),
                &t,
                Some(json!({"not_applicable": true})),
            )
            .await;
        assert_eq!(s, 204);
        let (_, setup) = app
            .get(&format!("/api/v1/integrations/{id}/m365/companies"), &t)
            .await;
        assert_eq!(
            setup["total"], 4,
            "five companies, one not applicable: {setup}"
        );

        // An expired secret: a tenant that needs a new token says so, with the fix (tokens
        // already granted keep working until they expire, as Entra's do). Company 1's
        // tokens are cancelled (its admin consented again), so it needs a new one.
        v.m365.expire_secret(true);
        v.m365.revoke_consent(&tenants[1].id);
        v.m365.consent(&tenants[1].id);
        let fourth = run(&app, id, Duration::hours(50)).await;
        assert_ne!(fourth.result, RunResult::Success);
        assert!(
            fourth
                .error
                .as_deref()
                .unwrap_or_default()
                .contains("Secret expired"),
            "{fourth:?}"
        );
        let c1 = company(1).await;
        assert_eq!(
            c1["tenants"][0]["status"], "secret_expired",
            "{}",
            c1["tenants"]
        );
        let portal = app
            .db
            .store
            .list_company_users(app.a.id, CompanyId(companies[0]))
            .await
            .unwrap();
        let disabled: Vec<_> = portal
            .iter()
            .filter(|u| u.status == UserStatus::Disabled)
            .collect();
        assert_eq!(
            disabled.len(),
            1,
            "the leaver's portal user is disabled, the others kept: {portal:?}"
        );
        assert_ne!(disabled[0].id, cu.id, "the PSA's user follows its PSA");
        assert_eq!(company(0).await["tenants"][0]["status"], "connected");
        // While the secret is expired a consent cannot be verified: refused, in words.
        let (_, a) = consent(&app, id, companies[3], json!({"kind": "connect"})).await;
        let back =
            consent_at_microsoft(&app, a["url"].as_str().unwrap(), &tenants[3].id, true).await;
        let (s, page) = callback(&app, &back).await;
        assert_eq!(s, 400);
        assert!(page.contains("could not read that tenant"), "{page}");
        // A new secret (Update credentials): the tenant is synced again.
        v.m365.expire_secret(false);
        let (s, u) = app
            .call(
                reqwest::Method::PUT,
                &format!("/api/v1/integrations/{id}/credentials"),
                &t,
                Some(json!({"credentials": {"client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET, "home_tenant": PARTNER_TENANT_ID}})),
            )
            .await;
        assert_eq!(s, 200, "{u}");
        assert_eq!(company(1).await["tenants"][0]["status"], "connected");
        run(&app, id, Duration::hours(51)).await;
        let c1 = company(1).await;
        assert_eq!(c1["tenants"][0]["status"], "connected", "{}", c1["tenants"]);
        assert!(!c1["users"].as_array().unwrap().is_empty());
        // The refused consent of company 3 was not used up: once Microsoft answers, it works.
        let (s, to) = callback(&app, &back).await;
        assert_eq!(s, 303, "{to}");
    }
}

/// 500 tenants synced 16 at once: Microsoft's Secure Score limits (4 in flight, 150 a
/// minute per tenant) are never crossed — no 429 — and every tenant is read.
#[tokio::test]
async fn five_hundred_tenants_sync_within_each_tenants_secure_score_limits() {
    for db in mspbridge_store::test_support::all().await.unwrap() {
        let sandbox = M365Sandbox::with_size(500, 3, 2);
        sandbox.set_security_latency(std::time::Duration::from_millis(20));
        let handle = sandbox.serve(loopback_listener().await.unwrap()).unwrap();
        let base = M365Sandbox::base_url(&handle);
        let config = ProviderConfig {
            microsoft_365: GraphSettings {
                login_base: Some(base.clone()),
                graph_base: Some(base),
                tenant_concurrency: 16,
                ..Default::default()
            },
            ..Default::default()
        };
        let app = TestApp::start_configured(db, false, config).await;
        let id = connect_json(
            &app,
            json!({"provider": "microsoft_365", "credentials": {
                "client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET, "home_tenant": PARTNER_TENANT_ID}}),
        )
        .await;
        let tenants = sandbox.tenants();
        for (i, t) in tenants.iter().enumerate() {
            sandbox.consent(&t.id);
            let company = app
                .db
                .store
                .create_company(app.a.id, &format!("Company {i:03}"), chrono::Utc::now())
                .await
                .unwrap();
            app.db
                .store
                .m365_connect(
                    app.a.id,
                    mspbridge_domain::IntegrationId(id),
                    company.id,
                    &t.id,
                    "test",
                    chrono::Utc::now(),
                )
                .await
                .unwrap();
        }
        let summary = run(&app, id, Duration::zero()).await;
        assert_eq!(summary.result, RunResult::Success, "{summary:?}");
        assert_eq!(counts(&summary, RecordType::Companies).seen, 500);
        assert_eq!(sandbox.throttled(), 0, "no 429 from Microsoft's limits");
        for t in &tenants {
            assert!(sandbox.max_concurrent_security(&t.id) <= 4, "{}", t.id);
        }
        handle.stop().await;
    }
}

/// The app authenticates with a certificate instead of a secret: a signed client assertion
/// per token request; a certificate the app registration does not hold is refused with
/// AADSTS700027 as the tenant's status; half a certificate credential is refused at its field.
#[tokio::test]
async fn the_app_can_authenticate_with_a_certificate() {
    use mspbridge_providers::microsoft_365::certificate::{DEMO_CERTIFICATE, DEMO_PRIVATE_KEY};
    for db in mspbridge_store::test_support::all().await.unwrap() {
        let (v, config) = vendor().await;
        let app = TestApp::start_configured(db, false, config).await;
        let t = app.a.owner_token.clone();
        let (s, e) = app
            .post(
                "/api/v1/integrations",
                &t,
                json!({"provider": "microsoft_365", "credentials": {
                    "client_id": DEMO_CLIENT_ID, "certificate": DEMO_CERTIFICATE, "home_tenant": PARTNER_TENANT_ID}}),
            )
            .await;
        assert_eq!(s, 422, "{e}");
        assert!(e.to_string().contains("credentials.private_key"), "{e}");
        let (s, e) = app
            .post(
                "/api/v1/integrations",
                &t,
                json!({"provider": "microsoft_365", "credentials": {
                    "client_id": DEMO_CLIENT_ID, "home_tenant": PARTNER_TENANT_ID}}),
            )
            .await;
        assert_eq!(s, 422, "{e}");
        assert!(e.to_string().contains("credentials.client_secret"), "{e}");
        // A certificate the app registration does not hold: refused at Test.
        let (s, e) = app
            .post(
                "/api/v1/integrations",
                &t,
                json!({"provider": "microsoft_365", "credentials": {
                    "client_id": DEMO_CLIENT_ID, "home_tenant": PARTNER_TENANT_ID,
                    "certificate": include_str!("fixtures/other_cert.pem"),
                    "private_key": include_str!("fixtures/other_key.pem")}}),
            )
            .await;
        assert_eq!(s, 422, "{e}");
        assert!(e.to_string().contains("700027"), "{e}");
        // The uploaded one, pasted into one-line fields (newlines lost): connects and syncs.
        let flat = |p: &str| p.lines().collect::<Vec<_>>().join("");
        let id = connect_json(
            &app,
            json!({"provider": "microsoft_365", "credentials": {
                "client_id": DEMO_CLIENT_ID, "home_tenant": PARTNER_TENANT_ID,
                "certificate": flat(DEMO_CERTIFICATE), "private_key": flat(DEMO_PRIVATE_KEY)}}),
        )
        .await;
        let (_, shown) = app.get(&format!("/api/v1/integrations/{id}"), &t).await;
        let key_part = &flat(DEMO_PRIVATE_KEY)[40..80];
        assert!(
            !shown.to_string().contains(key_part),
            "the private key is never shown: {shown}"
        );
        let tenant = &v.m365.tenants()[0];
        let company = create_company(&app, &tenant.display_name).await;
        let (_, a) = consent(&app, id, company, json!({"kind": "connect"})).await;
        let back = consent_at_microsoft(&app, a["url"].as_str().unwrap(), &tenant.id, true).await;
        assert_eq!(callback(&app, &back).await.0, 303);
        let first = run(&app, id, Duration::zero()).await;
        assert_eq!(first.result, RunResult::Success, "{first:?}");
        assert!(counts(&first, RecordType::Contacts).seen > 0);
    }
}

/// The client holds a tenant's Secure Score calls to Microsoft's 4 in flight: twelve at
/// once all succeed without a 429; the same twelve with the hold at 8 draw 429s (so the
/// hold is what keeps them in).
#[tokio::test]
async fn a_tenants_secure_score_calls_are_held_to_four_in_flight() {
    use mspbridge_providers::microsoft_365::client::{AppConfig, GraphClient};
    let (v, _) = vendor().await;
    mspbridge_providers::outbound::install_crypto_provider();
    v.m365
        .set_security_latency(std::time::Duration::from_millis(150));
    let tenants = v.m365.tenants();
    let burst = |tenant: String, limit: usize| {
        let base = v.base.clone();
        async move {
            let client = GraphClient::new(
                AppConfig {
                    client_id: DEMO_CLIENT_ID.into(),
                    client_secret: mspbridge_domain::SecretString::new(DEMO_CLIENT_SECRET),
                    certificate: None,
                },
                &GraphSettings {
                    login_base: Some(base.clone()),
                    graph_base: Some(base),
                    security_concurrency: limit,
                    ..Default::default()
                },
                mspbridge_providers::OutboundPolicy {
                    allow_private: true,
                },
                mspbridge_providers::http::RetryPolicy {
                    max_attempts: 1,
                    ..Default::default()
                },
            )
            .unwrap();
            client.token(&tenant, None).await.unwrap();
            let calls = (0..12).map(|_| {
                client.get::<Value>(
                    &tenant,
                    "/v1.0/security/secureScores?$top=1",
                    "Secure Score",
                )
            });
            futures_util::future::join_all(calls).await
        }
    };
    v.m365.consent(&tenants[0].id);
    let held = burst(tenants[0].id.clone(), 4).await;
    assert!(held.iter().all(|r| r.is_ok()), "{held:?}");
    assert_eq!(v.m365.throttled(), 0);
    assert!(v.m365.max_concurrent_security(&tenants[0].id) <= 4);
    v.m365.consent(&tenants[1].id);
    let loose = burst(tenants[1].id.clone(), 8).await;
    assert!(
        loose.iter().any(|r| r.is_err()),
        "eight at once must draw 429s"
    );
    assert!(v.m365.throttled() > 0);
    assert!(v.m365.max_concurrent_security(&tenants[1].id) > 4);
}
