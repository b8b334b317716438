#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The company mapping through the API, on SQLite and (with TEST_DATABASE_URL)
//! PostgreSQL: the grid with search, paging and the Missing values filter, link / swap /
//! unlink with their audit, an unlinked company not imported again by the sync, Advanced
//! Quick Match with its review, one-operation apply and undo, validation naming the
//! field, permissions (read can view, write can link) and tenant isolation.

mod common;

use common::*;
use mspbridge_domain::auth::StaffRole;
use reqwest::Method;
use serde_json::{Value, json};

async fn sync(app: &TestApp) -> mspbridge_sync::RunSummary {
    let id = app.db.store.list_integrations(app.a.id).await.unwrap()[0].id;
    app.db
        .store
        .reactivate(app.a.id, id, chrono::Utc::now())
        .await
        .unwrap();
    full_pass_engine(app).tick().await.unwrap().expect("due")
}

/// The first company of integration `cw` as listed, and the portal company it is linked to.
async fn first_company(app: &TestApp, cw: i64) -> (Value, i64) {
    let (_, list) = app
        .get(
            &format!("/api/v1/integrations/{cw}/companies"),
            &app.a.owner_token,
        )
        .await;
    let x = list[0].clone();
    let home = x["linked_company_id"].as_i64().unwrap();
    (x, home)
}

async fn unlink(app: &TestApp, company: i64, cw: i64) {
    let (s, v) = app
        .call(
            Method::DELETE,
            &format!("/api/v1/company-mapping/{company}/{cw}"),
            &app.a.owner_token,
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
}

fn rows(v: &Value) -> &Vec<Value> {
    v["rows"].as_array().unwrap()
}

#[tokio::test]
async fn the_grid_lists_searches_pages_and_filters_missing_links() {
    for app in TestApp::each().await {
        let t = &app.a.owner_token;
        let cw = imported(&app).await;
        let (s, grid) = app.get("/api/v1/company-mapping?limit=500", t).await;
        assert_eq!(s, 200, "{grid}");
        let companies = app.db.store.list_companies(app.a.id).await.unwrap();
        assert_eq!(grid["total"], companies.len() as i64);
        assert_eq!(grid["columns"][0]["integration_id"], cw);
        assert_eq!(grid["columns"][0]["label"], "ConnectWise Manage");
        for r in rows(&grid) {
            let cell = &r["cells"][0];
            assert!(cell["external_id"].is_string(), "{r}");
            assert_eq!(cell["name"], r["name"], "the integration company's name");
        }
        // Paging: two rows from the second, in name order.
        let (_, page) = app.get("/api/v1/company-mapping?offset=1&limit=2", t).await;
        assert_eq!(rows(&page).len(), 2);
        assert_eq!(rows(&page)[0]["name"], rows(&grid)[1]["name"]);
        assert_eq!(page["total"], grid["total"]);

        // A manual company has no link: Missing values shows it, and only it.
        let (s, manual) = app
            .post(
                "/api/v1/companies",
                t,
                json!({"name": "Zeta Manual Holdings"}),
            )
            .await;
        assert_eq!(s, 201, "{manual}");
        for filter in ["any".to_string(), cw.to_string()] {
            let (_, missing) = app
                .get(&format!("/api/v1/company-mapping?missing={filter}"), t)
                .await;
            assert_eq!(missing["total"], 1, "{missing}");
            assert_eq!(rows(&missing)[0]["name"], "Zeta Manual Holdings");
            assert!(rows(&missing)[0]["cells"][0].is_null());
        }
        // Search is case-insensitive on the portal name; LIKE wildcards are literal.
        let (_, found) = app
            .get("/api/v1/company-mapping?search=zeta%20MAN", t)
            .await;
        assert_eq!(found["total"], 1);
        let (_, none) = app.get("/api/v1/company-mapping?search=%25", t).await;
        assert_eq!(none["total"], 0, "a literal %");

        for (query, field) in [
            ("missing=nope", "missing"),
            ("missing=999999", "missing"),
            ("limit=0", "limit"),
            ("offset=-1", "offset"),
        ] {
            let (s, e) = app
                .get(&format!("/api/v1/company-mapping?{query}"), t)
                .await;
            assert_eq!((s, e["field"].as_str()), (422, Some(field)), "{query}: {e}");
        }
    }
}

#[tokio::test]
async fn link_swap_unlink_are_audited_and_an_unlinked_company_is_not_imported_again() {
    for app in TestApp::each().await {
        let t = &app.a.owner_token;
        let cw = imported(&app).await;
        let (_, list) = app
            .get(&format!("/api/v1/integrations/{cw}/companies"), t)
            .await;
        let list = list.as_array().unwrap().clone();
        assert!(list.len() >= 3);
        let (x, y) = (&list[0], &list[1]);
        let (_, manual) = app
            .post("/api/v1/companies", t, json!({"name": "Manual Target"}))
            .await;
        let target = manual["id"].as_i64().unwrap();
        let companies_before = app.db.store.list_companies(app.a.id).await.unwrap().len();

        // Link X to the manual company: it moves there from the company the sync made.
        let path = format!("/api/v1/company-mapping/{target}/{cw}");
        let (s, o) = app
            .call(
                Method::PUT,
                &path,
                t,
                Some(json!({"external_id": x["external_id"]})),
            )
            .await;
        assert_eq!(s, 200, "{o}");
        assert_eq!(o["before_company_id"], x["linked_company_id"]);
        assert_eq!(o["after_company_id"], target);
        // Swap: Y onto the same portal company unlinks X.
        let (s, o) = app
            .call(
                Method::PUT,
                &path,
                t,
                Some(json!({"external_id": y["external_id"]})),
            )
            .await;
        assert_eq!(s, 200, "{o}");
        assert_eq!(o["displaced_external_id"], x["external_id"]);
        let (_, unlinked) = app
            .get(
                &format!("/api/v1/integrations/{cw}/companies?unlinked=true"),
                t,
            )
            .await;
        let xs: Vec<&Value> = unlinked
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["external_id"] == x["external_id"])
            .collect();
        assert_eq!(xs.len(), 1, "{unlinked}");
        assert_eq!(xs[0]["import_state"], "unlinked");

        // Unlink Y too.
        let (s, o) = app.call(Method::DELETE, &path, t, None).await;
        assert_eq!(s, 200, "{o}");
        assert_eq!(o["after_company_id"], Value::Null);
        let (s, _) = app.call(Method::DELETE, &path, t, None).await;
        assert_eq!(s, 404, "nothing left to unlink");

        let (_, audit) = app.get("/api/v1/company-mapping/audit", t).await;
        let actions: Vec<&str> = audit
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["action"].as_str().unwrap())
            .collect();
        assert_eq!(actions, ["unlink", "link", "unlink", "link"], "{audit}");
        assert_eq!(audit[0]["actor"], "API token 'owner'");
        assert_eq!(audit[0]["before_company_id"], target);

        // The next full sync does not import X or Y again.
        let run = sync(&app).await;
        assert_eq!(
            run.result,
            mspbridge_domain::sync::RunResult::Success,
            "{run:?}"
        );
        let companies_after = app.db.store.list_companies(app.a.id).await.unwrap().len();
        assert_eq!(
            companies_after, companies_before,
            "no company created again"
        );
        let (_, events) = app.get(&format!("/api/v1/runs/{}", run.run_id), t).await;
        assert!(
            events.to_string().contains("an admin unlinked it"),
            "the run log says why: {events}"
        );

        // Unknown integration company, unknown portal company.
        let (s, e) = app
            .call(Method::PUT, &path, t, Some(json!({"external_id": "nope"})))
            .await;
        assert_eq!((s, e["field"].as_str()), (422, Some("external_id")), "{e}");
        let (s, _) = app
            .call(
                Method::PUT,
                &format!("/api/v1/company-mapping/999999/{cw}"),
                t,
                Some(json!({"external_id": x["external_id"]})),
            )
            .await;
        assert_eq!(s, 404);
    }
}

#[tokio::test]
async fn quick_match_proposes_reviews_applies_in_one_operation_and_undoes() {
    for app in TestApp::each().await {
        let t = &app.a.owner_token;
        let cw = imported(&app).await;
        // Unlink X; its portal company keeps its name, so Quick Match finds it again.
        let (x, home) = first_company(&app, cw).await;
        unlink(&app, home, cw).await;

        let (s, qm) = app
            .post("/api/v1/company-mapping/quick-match", t, json!({}))
            .await;
        assert_eq!(s, 200, "{qm}");
        assert_eq!(qm["threshold"], 70);
        // X and the companies the sync skipped (inactive ones) are unlinked.
        assert!(qm["scanned"].as_u64().unwrap() >= 1, "{qm}");
        let p = qm["proposals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["external_id"] == x["external_id"])
            .unwrap();
        assert_eq!(p["company_id"], home);
        assert_eq!(p["reason"], "same name");
        assert_eq!(p["confidence"], 100);
        assert_eq!(p["selected"], true);
        assert_eq!(p["integration"], "ConnectWise Manage");

        for (body, field) in [
            (json!({"threshold": 39}), "threshold"),
            (json!({"threshold": 101}), "threshold"),
        ] {
            let (s, e) = app
                .post("/api/v1/company-mapping/quick-match", t, body)
                .await;
            assert_eq!((s, e["field"].as_str()), (422, Some(field)), "{e}");
        }
        let twice = json!({"links": [
            {"integration_id": cw, "external_id": x["external_id"], "company_id": home},
            {"integration_id": cw, "external_id": x["external_id"], "company_id": home},
        ]});
        let (s, e) = app
            .post("/api/v1/company-mapping/quick-match/apply", t, twice)
            .await;
        assert_eq!(
            (s, e["field"].as_str()),
            (422, Some("links[1].external_id")),
            "{e}"
        );

        let (s, applied) = app
            .post(
                "/api/v1/company-mapping/quick-match/apply",
                t,
                json!({"links": [{"integration_id": cw, "external_id": x["external_id"], "company_id": home}]}),
            )
            .await;
        assert_eq!(s, 200, "{applied}");
        assert_eq!(applied["applied"], 1);
        let batch = applied["batch"].as_str().unwrap().to_string();
        let (_, grid) = app.get("/api/v1/company-mapping?missing=any", t).await;
        assert_eq!(
            grid["total"], 0,
            "every portal company linked again: {grid}"
        );
        let (_, audit) = app.get("/api/v1/company-mapping/audit?limit=1", t).await;
        assert_eq!(audit[0]["action"], "quick_match");
        assert_eq!(audit[0]["batch"], batch.as_str());

        // One click undoes the batch: X is unlinked again, as it was.
        let (s, undo) = app
            .post(
                &format!("/api/v1/company-mapping/batches/{batch}/undo"),
                t,
                json!({}),
            )
            .await;
        assert_eq!((s, undo["undone"].as_u64()), (200, Some(1)), "{undo}");
        // A second undo is refused: links may have changed since.
        let (s, again) = app
            .post(
                &format!("/api/v1/company-mapping/batches/{batch}/undo"),
                t,
                json!({}),
            )
            .await;
        assert_eq!(s, 409, "{again}");
        let (_, audit) = app.get("/api/v1/company-mapping/audit?limit=2", t).await;
        assert_eq!(audit[0]["action"], "undo");
        assert_eq!(audit[0]["after_company_id"], Value::Null);
        assert_eq!(audit[0]["before_company_id"], home);
        assert_eq!(audit[0]["external_name"], x["name"]);
        let (_, grid) = app.get("/api/v1/company-mapping?missing=any", t).await;
        assert_eq!(grid["total"], 1);
        let (_, unlinked) = app
            .get(
                &format!("/api/v1/integrations/{cw}/companies?unlinked=true"),
                t,
            )
            .await;
        assert_eq!(unlinked[0]["import_state"], "unlinked", "{unlinked}");
        let (s, _) = app
            .post("/api/v1/company-mapping/batches/nope/undo", t, json!({}))
            .await;
        assert_eq!(s, 404);
    }
}

#[tokio::test]
async fn read_can_view_write_can_link_and_tenants_are_isolated() {
    for app in TestApp::each().await {
        let cw = imported(&app).await;
        let t = &app.a.owner_token;
        let (x, home) = first_company(&app, cw).await;
        let path = format!("/api/v1/company-mapping/{home}/{cw}");

        let reader = app.token(app.a.id, StaffRole::ReadOnly).await;
        let (s, _) = app.get("/api/v1/company-mapping", &reader).await;
        assert_eq!(s, 200);
        let (s, _) = app
            .post("/api/v1/company-mapping/quick-match", &reader, json!({}))
            .await;
        assert_eq!(s, 200, "a review changes nothing");
        let (s, e) = app.call(Method::DELETE, &path, &reader, None).await;
        assert_eq!((s, e["code"].as_str()), (403, Some("forbidden")));
        let (s, _) = app
            .call(
                Method::PUT,
                &path,
                &reader,
                Some(json!({"external_id": x["external_id"]})),
            )
            .await;
        assert_eq!(s, 403);
        let (s, _) = app
            .post(
                "/api/v1/company-mapping/quick-match/apply",
                &reader,
                json!({"links": [{"integration_id": cw, "external_id": x["external_id"], "company_id": home}]}),
            )
            .await;
        assert_eq!(s, 403);

        // Tenant B sees nothing of A and cannot touch A's links.
        let b = &app.b.owner_token;
        let (_, grid) = app.get("/api/v1/company-mapping", b).await;
        assert_eq!(
            (
                grid["total"].as_i64(),
                grid["columns"].as_array().map(Vec::len)
            ),
            (Some(0), Some(0))
        );
        let (s, _) = app.call(Method::DELETE, &path, b, None).await;
        assert_eq!(s, 404);
        let (s, _) = app
            .call(
                Method::PUT,
                &path,
                b,
                Some(json!({"external_id": x["external_id"]})),
            )
            .await;
        assert_eq!(s, 404);
        let (s, _) = app
            .get(&format!("/api/v1/integrations/{cw}/companies"), b)
            .await;
        assert_eq!(s, 404);
        let (s, e) = app
            .post(
                "/api/v1/company-mapping/quick-match/apply",
                b,
                json!({"links": [{"integration_id": cw, "external_id": x["external_id"], "company_id": home}]}),
            )
            .await;
        assert_eq!((s, e["field"].as_str()), (422, Some("links")), "{e}");
        let (_, audit) = app.get("/api/v1/company-mapping/audit", b).await;
        assert_eq!(audit, json!([]));
        // A's link is untouched.
        let (_, after) = app
            .get(&format!("/api/v1/integrations/{cw}/companies"), t)
            .await;
        assert_eq!(after[0]["linked_company_id"], home);
    }
}

#[tokio::test]
async fn import_links_or_creates_and_refuses_duplicates() {
    for app in TestApp::each().await {
        let t = &app.a.owner_token;
        let cw = imported(&app).await;
        let (x, home) = first_company(&app, cw).await;
        unlink(&app, home, cw).await;
        let path = format!("/api/v1/integrations/{cw}/import");

        // Creating X anew would duplicate its old portal company: refused, naming it.
        let (s, e) = app
            .post(
                &path,
                t,
                json!({"companies": [{"external_id": x["external_id"]}]}),
            )
            .await;
        assert_eq!(
            (s, e["field"].as_str()),
            (422, Some("companies[0].company_id")),
            "{e}"
        );
        assert!(
            e["message"].as_str().unwrap().contains("already exists"),
            "{e}"
        );
        // Linking it to that company imports it.
        let (s, v) = app
            .post(
                &path,
                t,
                json!({"companies": [{"external_id": x["external_id"], "company_id": home}]}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            (v["imported"].as_u64(), v["created"].as_u64()),
            (Some(1), Some(0))
        );
        // Importing it again is refused.
        let (s, e) = app
            .post(
                &path,
                t,
                json!({"companies": [{"external_id": x["external_id"], "company_id": home}]}),
            )
            .await;
        assert_eq!(s, 409, "{e}");
        assert!(
            e["message"].as_str().unwrap().contains("already imported"),
            "{e}"
        );

        // A company the sync skipped (inactive) is not in the portal: import creates it.
        let (_, unlinked) = app
            .get(
                &format!("{}?unlinked=true", path.replace("/import", "/companies")),
                t,
            )
            .await;
        let portal: Vec<String> = app
            .db
            .store
            .list_companies(app.a.id)
            .await
            .unwrap()
            .into_iter()
            .map(|c| mspbridge_matching::normalise(&c.name))
            .collect();
        let fresh = unlinked
            .as_array()
            .unwrap()
            .iter()
            .find(|c| !portal.contains(&mspbridge_matching::normalise(c["name"].as_str().unwrap())))
            .expect("an integration company not in the portal")
            .clone();
        let (s, v) = app
            .post(
                &path,
                t,
                json!({"companies": [{"external_id": fresh["external_id"]}]}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["created"], 1);
        let created = v["companies"][0]["company_id"].as_i64().unwrap();
        let c = app
            .db
            .store
            .get_company(app.a.id, mspbridge_domain::CompanyId(created))
            .await
            .unwrap();
        assert_eq!(c.name, fresh["name"].as_str().unwrap());
        let (_, audit) = app.get("/api/v1/company-mapping/audit?limit=1", t).await;
        assert_eq!(audit[0]["action"], "import");

        for (body, field) in [
            (json!({"companies": []}), "companies"),
            (
                json!({"companies": [{"external_id": "nope"}]}),
                "companies[0].external_id",
            ),
        ] {
            let (s, e) = app.post(&path, t, body).await;
            assert_eq!((s, e["field"].as_str()), (422, Some(field)), "{e}");
        }
        let reader = app.token(app.a.id, StaffRole::ReadOnly).await;
        let (s, _) = app
            .post(
                &path,
                &reader,
                json!({"companies": [{"external_id": fresh["external_id"]}]}),
            )
            .await;
        assert_eq!(s, 403);
    }
}

#[tokio::test]
async fn a_deleted_company_blocks_its_integration_companies_until_unblocked() {
    for app in TestApp::each().await {
        let t = &app.a.owner_token;
        let cw = imported(&app).await;
        let (x, home) = first_company(&app, cw).await;
        let path = format!("/api/v1/companies/{home}");

        let reader = app.token(app.a.id, StaffRole::ReadOnly).await;
        let (s, _) = app.call(Method::DELETE, &path, &reader, None).await;
        assert_eq!(s, 403);
        let (s, _) = app
            .call(Method::DELETE, &path, &app.b.owner_token, None)
            .await;
        assert_eq!(s, 404, "another tenant's company");

        let (s, blocked) = app.call(Method::DELETE, &path, t, None).await;
        assert_eq!(s, 200, "{blocked}");
        assert_eq!(blocked[0]["external_id"], x["external_id"]);
        let (_, listed) = app.get("/api/v1/companies/blocked", t).await;
        assert_eq!(listed[0]["name"], x["name"], "{listed}");
        let (_, other) = app
            .get("/api/v1/companies/blocked", &app.b.owner_token)
            .await;
        assert_eq!(other, json!([]));
        let count = |app: &TestApp| {
            let store = app.db.store.clone();
            let tenant = app.a.id;
            async move { store.list_companies(tenant).await.unwrap().len() }
        };
        let before = count(&app).await;

        // A full sync does not import it again.
        let run = sync(&app).await;
        assert_eq!(
            run.result,
            mspbridge_domain::sync::RunResult::Success,
            "{run:?}"
        );
        assert_eq!(count(&app).await, before, "blocked: not re-imported");

        // Unblocked, the next sync imports it again (as a new company).
        let unblock = format!(
            "/api/v1/integrations/{cw}/companies/{}/unblock",
            x["external_id"].as_str().unwrap()
        );
        let (s, _) = app.post(&unblock, t, json!({})).await;
        assert_eq!(s, 204);
        let (s, _) = app.post(&unblock, t, json!({})).await;
        assert_eq!(s, 404, "no longer blocked");
        let run = sync(&app).await;
        assert_eq!(
            run.result,
            mspbridge_domain::sync::RunResult::Success,
            "{run:?}"
        );
        assert_eq!(count(&app).await, before + 1, "imported again");
        let (_, audit) = app.get("/api/v1/company-mapping/audit?limit=2", t).await;
        let actions: Vec<&str> = audit
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["action"].as_str().unwrap())
            .collect();
        assert_eq!(actions, ["unblock", "block"], "{audit}");
    }
}

/// A second connection's sync links its companies to the portal companies of the same
/// name instead of creating duplicates (a name several portal companies share is left for
/// the admin, with a warning), and Quick Match knows a portal company by the web domains
/// of the integration companies linked to it.
#[tokio::test]
async fn a_second_integration_links_by_name_and_quick_match_uses_domains() {
    for app in TestApp::each().await {
        let t = &app.a.owner_token;
        let a = imported(&app).await;
        let companies_before = app.db.store.list_companies(app.a.id).await.unwrap();
        let b = app.connect_cw(t).await["id"].as_i64().unwrap();
        let (s, v) = app
            .call(
                Method::PUT,
                &format!("/api/v1/integrations/{b}/options"),
                t,
                Some(json!({"interval_minutes": 5})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let run = full_pass_engine(&app).tick().await.unwrap().expect("due");
        assert_eq!(run.integration_id.0, b);
        let c = run.counts[&mspbridge_domain::sync::RecordType::Companies];
        assert_eq!(c.created, 0, "{c:?}");
        assert!(c.linked > 0, "{c:?}");
        let after = app.db.store.list_companies(app.a.id).await.unwrap();
        assert_eq!(after.len(), companies_before.len(), "nothing duplicated");

        let list = |id: i64| {
            let app = &app;
            async move {
                let (_, v) = app
                    .get(&format!("/api/v1/integrations/{id}/companies"), t)
                    .await;
                v.as_array().unwrap().clone()
            }
        };
        let (la, lb) = (list(a).await, list(b).await);
        let home_in_a: std::collections::HashMap<String, Value> = la
            .iter()
            .map(|c| (c["external_id"].as_str().unwrap().to_string(), c.clone()))
            .collect();
        let mut linked = 0;
        for x in &lb {
            let ext = x["external_id"].as_str().unwrap();
            let in_a = &home_in_a[ext];
            if x["linked_company_id"].is_null() {
                continue;
            }
            linked += 1;
            // The same vendor company, so the same portal company as A's link.
            assert_eq!(x["linked_company_id"], in_a["linked_company_id"], "{x}");
            assert!(
                x["domains"].as_array().is_some_and(|d| !d.is_empty()),
                "{x}"
            );
        }
        assert_eq!(linked as u64, c.linked);
        // A company of A's that B did not link shares its name with another portal
        // company: B refused to guess, and its log says so.
        let (_, log) = app
            .get(&format!("/api/v1/runs/{}?level=warning", run.run_id), t)
            .await;
        let warned: std::collections::HashSet<&str> = log["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                e["message"]
                    .as_str()
                    .unwrap()
                    .contains("have the same name")
            })
            .map(|e| e["external_id"].as_str().unwrap())
            .collect();
        for x in &lb {
            let ext = x["external_id"].as_str().unwrap();
            if x["linked_company_id"].is_null() && !home_in_a[ext]["linked_company_id"].is_null() {
                assert!(warned.contains(ext), "{x} neither linked nor explained");
            }
        }

        // B's X unlinked: its home is known by A's link's domain, so Quick Match says why.
        let unique_domain = |x: &Value| {
            let d = &x["domains"];
            lb.iter().filter(|y| &y["domains"] == d).count() == 1
        };
        let x = lb
            .iter()
            .find(|x| !x["linked_company_id"].is_null() && unique_domain(x))
            .expect("a company with a domain of its own");
        let home = x["linked_company_id"].as_i64().unwrap();
        unlink(&app, home, b).await;
        let (s, qm) = app
            .post("/api/v1/company-mapping/quick-match", t, json!({}))
            .await;
        assert_eq!(s, 200, "{qm}");
        let p = qm["proposals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["integration_id"] == b && p["external_id"] == x["external_id"])
            .unwrap_or_else(|| panic!("no proposal for {x}: {qm}"));
        assert_eq!(p["company_id"], home);
        assert_eq!(
            p["reason"],
            format!("same domain ({})", x["domains"][0].as_str().unwrap()),
            "{p}"
        );
    }
}

/// Renames one active ConnectWise company of the app's sandbox to `name`; its id.
fn rename_active_company(app: &TestApp, name: &str) -> String {
    app.sandbox.with_data(|d| {
        let inactive: std::collections::HashSet<i64> = d
            .company_statuses
            .iter()
            .filter(|s| s.inactive_flag)
            .map(|s| s.id)
            .collect();
        let c = d
            .companies
            .iter_mut()
            .find(|c| {
                !c.deleted_flag && c.status.as_ref().is_none_or(|s| !inactive.contains(&s.id))
            })
            .expect("an active company");
        c.name = name.to_string();
        c.id.to_string()
    })
}

/// Connects ConnectWise for tenant A with `options` and runs its first sync.
async fn connect_and_sync(app: &TestApp, options: Value) -> (i64, mspbridge_sync::RunSummary) {
    let t = &app.a.owner_token;
    let id = app.connect_cw(t).await["id"].as_i64().unwrap();
    let (s, v) = put_options(app, id, options).await;
    assert_eq!(s, 200, "{v}");
    let run = full_pass_engine(app).tick().await.unwrap().expect("due");
    assert_eq!(run.integration_id.0, id);
    (id, run)
}

async fn company_events(app: &TestApp, run_id: i64, ext: &str) -> Vec<String> {
    let (s, log) = app
        .get(
            &format!("/api/v1/runs/{run_id}?record_type=companies"),
            &app.a.owner_token,
        )
        .await;
    assert_eq!(s, 200, "{log}");
    log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["external_id"] == ext)
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_link_by_name_says_why_in_the_run_log_is_in_the_link_history_and_undoes() {
    for app in TestApp::each().await {
        let t = &app.a.owner_token;
        let portal = app
            .db
            .store
            .create_company(app.a.id, "Zephyr Quill Architects Ltd", chrono::Utc::now())
            .await
            .unwrap();
        let ext = rename_active_company(&app, "ZEPHYR QUILL ARCHITECTS Inc");
        let (cw, run) = connect_and_sync(&app, json!({"interval_minutes": 5})).await;
        let c = run.counts[&mspbridge_domain::sync::RecordType::Companies];
        assert_eq!(c.linked, 1, "{c:?}");

        // (a) The run log says which portal company and by which rule.
        let lines = company_events(&app, run.run_id, &ext).await;
        assert!(
            lines.iter().any(|m| m.starts_with(
                "'ZEPHYR QUILL ARCHITECTS Inc' linked to portal company \"Zephyr Quill Architects Ltd\" (same name once \"Ltd\"/\"Inc\" and case are ignored); no company created"
            )),
            "{} {lines:?}",
            app.backend()
        );
        let named = app
            .db
            .store
            .list_companies(app.a.id)
            .await
            .unwrap()
            .into_iter()
            .filter(|c| mspbridge_matching::normalise(&c.name) == "zephyr quill architects")
            .count();
        assert_eq!(named, 1, "no second company");

        // (b) The link history has it, by the sync, as the run's batch.
        let (s, audit) = app.get("/api/v1/company-mapping/audit", t).await;
        assert_eq!(s, 200, "{audit}");
        let entry = audit["items"]
            .as_array()
            .or_else(|| audit.as_array())
            .unwrap()
            .iter()
            .find(|a| a["external_id"] == ext.as_str())
            .unwrap_or_else(|| panic!("no audit entry for {ext}: {audit}"))
            .clone();
        assert_eq!(entry["action"], "auto_link", "{entry}");
        assert_eq!(entry["actor"], "sync", "{entry}");
        let batch = format!("run-{}", run.run_id);
        assert_eq!(entry["batch"], batch.as_str(), "{entry}");
        assert_eq!(entry["after_company_id"], portal.id.0, "{entry}");
        assert_eq!(entry["after_company_name"], "Zephyr Quill Architects Ltd");
        assert_eq!(entry["external_name"], "ZEPHYR QUILL ARCHITECTS Inc");

        // Undone like a Quick Match: unlinked, and the sync does not link it again.
        let (s, v) = app
            .post(
                &format!("/api/v1/company-mapping/batches/{batch}/undo"),
                t,
                json!({}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["undone"], 1, "{v}");
        let (s, again) = app
            .post(
                &format!("/api/v1/company-mapping/batches/{batch}/undo"),
                t,
                json!({}),
            )
            .await;
        assert_eq!(s, 409, "undone once: {again}");
        let (_, list) = app
            .get(&format!("/api/v1/integrations/{cw}/companies"), t)
            .await;
        let x = list
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["external_id"] == ext.as_str())
            .unwrap();
        assert!(x["linked_company_id"].is_null(), "{x}");
        assert_eq!(x["import_state"], "unlinked", "{x}");
        let run = sync(&app).await;
        let lines = company_events(&app, run.run_id, &ext).await;
        assert!(
            lines
                .iter()
                .any(|m| m.contains("not imported: an admin unlinked it")),
            "{lines:?}"
        );
        let (_, list) = app
            .get(&format!("/api/v1/integrations/{cw}/companies"), t)
            .await;
        assert!(
            list.as_array()
                .unwrap()
                .iter()
                .any(|x| x["external_id"] == ext.as_str() && x["linked_company_id"].is_null())
        );
    }
}

#[tokio::test]
async fn with_automatic_linking_off_a_same_name_company_waits_for_the_admin() {
    for app in TestApp::each().await {
        let t = &app.a.owner_token;
        app.db
            .store
            .create_company(app.a.id, "Zephyr Quill Architects Ltd", chrono::Utc::now())
            .await
            .unwrap();
        let ext = rename_active_company(&app, "Zephyr Quill Architects Inc");
        let (cw, run) = connect_and_sync(
            &app,
            json!({"interval_minutes": 5, "auto_link_by_name": false}),
        )
        .await;
        let (_, options) = app
            .get(&format!("/api/v1/integrations/{cw}/options"), t)
            .await;
        assert_eq!(options["options"]["auto_link_by_name"], false, "{options}");
        let c = run.counts[&mspbridge_domain::sync::RecordType::Companies];
        assert_eq!(c.linked, 0, "{c:?}");
        assert!(c.created > 0, "the others are imported: {c:?}");
        let lines = company_events(&app, run.run_id, &ext).await;
        assert!(
            lines.iter().any(|m| m.starts_with(
                "'Zephyr Quill Architects Inc' not imported: portal company \"Zephyr Quill Architects Ltd\" has the same name (same name once \"Ltd\"/\"Inc\" are ignored) and automatic linking by name is off"
            ) && m.contains("waits for an admin to link it")),
            "{} {lines:?}",
            app.backend()
        );
        let named = app
            .db
            .store
            .list_companies(app.a.id)
            .await
            .unwrap()
            .into_iter()
            .filter(|c| mspbridge_matching::normalise(&c.name) == "zephyr quill architects")
            .count();
        assert_eq!(named, 1, "no duplicate portal company");
        let (_, list) = app
            .get(&format!("/api/v1/integrations/{cw}/companies"), t)
            .await;
        let x = list
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["external_id"] == ext.as_str())
            .unwrap();
        assert!(
            x["linked_company_id"].is_null(),
            "listed for the admin: {x}"
        );
        let (_, audit) = app.get("/api/v1/company-mapping/audit", t).await;
        assert!(!audit.to_string().contains("auto_link"), "{audit}");
    }
}

/// Follows a list's `Link: <…>; rel="next"` from `first` to the end: every item (taken
/// from each body by `items`), and the `X-Total-Count` of the first page.
async fn walk(app: &TestApp, first: &str, items: fn(&Value) -> Vec<Value>) -> (Vec<Value>, i64) {
    let mut all = Vec::new();
    let mut total = None;
    let mut next = Some(first.to_string());
    let mut pages = 0;
    while let Some(path) = next.take() {
        pages += 1;
        assert!(pages < 100, "paging does not end: {path}");
        let resp = app
            .http
            .get(app.url(&path))
            .bearer_auth(&app.a.owner_token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let h = resp.headers().clone();
        let t: i64 = h["x-total-count"].to_str().unwrap().parse().unwrap();
        assert_eq!(
            *total.get_or_insert(t),
            t,
            "the total is the same on every page"
        );
        if let Some(link) = h.get("link") {
            let link = link.to_str().unwrap();
            assert!(link.ends_with(">; rel=\"next\""), "{link}");
            let target = link.trim_start_matches('<').split('>').next().unwrap();
            let offset = h["x-next-offset"].to_str().unwrap();
            assert!(target.contains(&format!("offset={offset}")), "{link}");
            next = Some(target.to_string());
        } else {
            assert!(h.get("x-next-offset").is_none());
        }
        let body: Value = resp.json().await.unwrap();
        all.extend(items(&body));
    }
    assert!(
        pages > 1,
        "{first} fits one page: the test needs more items"
    );
    (all, total.unwrap())
}

fn array(v: &Value) -> Vec<Value> {
    v.as_array().unwrap().clone()
}

fn ids(items: &[Value], key: &str) -> std::collections::BTreeSet<String> {
    items.iter().map(|i| i[key].to_string()).collect()
}

#[tokio::test]
async fn every_api_list_pages_with_a_total_and_a_next_link_to_the_last_item() {
    for app in TestApp::each().await {
        let t = &app.a.owner_token;
        let cw = imported(&app).await;
        sync(&app).await;
        sync(&app).await;

        // Sync runs.
        let (runs, total) = walk(
            &app,
            &format!("/api/v1/integrations/{cw}/runs?limit=2"),
            array,
        )
        .await;
        assert_eq!((runs.len(), total), (3, 3), "{runs:?}");
        assert_eq!(ids(&runs, "id").len(), 3);
        let first_run = runs.last().unwrap()["id"].as_i64().unwrap();

        // A run's log (the first import's, a few lines added).
        let lines: Vec<mspbridge_store::sync::NewEvent> = (0..5)
            .map(|i| {
                mspbridge_store::sync::NewEvent::new(
                    mspbridge_domain::sync::EventLevel::Info,
                    None,
                    None,
                    &format!("line {i}"),
                )
            })
            .collect();
        app.db
            .store
            .add_events(app.a.id, first_run, &lines, chrono::Utc::now())
            .await
            .unwrap();
        let (events, total) = walk(&app, &format!("/api/v1/runs/{first_run}?limit=1"), |v| {
            array(&v["events"])
        })
        .await;
        assert_eq!(events.len() as i64, total);
        assert_eq!(ids(&events, "id").len(), events.len());

        // The integration's companies.
        let (companies, total) = walk(
            &app,
            &format!("/api/v1/integrations/{cw}/companies?limit=3"),
            array,
        )
        .await;
        let (_, one_page) = app
            .get(
                &format!("/api/v1/integrations/{cw}/companies?limit=1000"),
                t,
            )
            .await;
        assert_eq!(companies.len() as i64, total);
        assert_eq!(
            companies,
            array(&one_page),
            "the same items in the same order"
        );

        // The link history: three unlinks.
        let linked: Vec<i64> = companies
            .iter()
            .filter_map(|c| c["linked_company_id"].as_i64())
            .collect();
        for company in &linked[..3] {
            unlink(&app, *company, cw).await;
        }
        let (audit, total) = walk(&app, "/api/v1/company-mapping/audit?limit=2", array).await;
        assert_eq!((audit.len(), total), (3, 3), "{audit:?}");

        // The outbox: three tickets waiting to be written.
        for (i, company) in linked[3..6].iter().enumerate() {
            let (s, v) = app
                .post(
                    "/api/v1/tickets",
                    t,
                    json!({"company_id": company, "summary": format!("Printer {i}")}),
                )
                .await;
            assert_eq!(s, 201, "{v}");
        }
        let (writes, total) = walk(&app, "/api/v1/outbox?state=pending&limit=2", array).await;
        assert_eq!((writes.len(), total), (3, 3), "{writes:?}");
        assert_eq!(ids(&writes, "id").len(), 3);

        // Paging parameters are checked like any other.
        let (s, e) = app.get("/api/v1/outbox?limit=0", t).await;
        assert_eq!((s, e["field"].as_str()), (422, Some("limit")), "{e}");
        let (s, e) = app.get("/api/v1/company-mapping/audit?offset=-1", t).await;
        assert_eq!((s, e["field"].as_str()), (422, Some("offset")), "{e}");
    }
}
