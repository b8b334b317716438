#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Bigger Brains on both databases: connecting with reseller details (no secret), Premium
//! Training per company (bulk and one by one, Manage only), the course catalogue and a
//! Team's progress imported from BrainStation's files (bad rows reported by line and column,
//! the rest applied, re-imports changing nothing), the users export, and the add-on's
//! usage written to Stripe once per month.

mod common;

use std::time::Duration;

use common::*;
use mspbridge_domain::CompanyId;
use mspbridge_domain::model::UserStatus;
use mspbridge_providers::ProviderConfig;
use mspbridge_providers::bigger_brains::samples;
use mspbridge_providers::stripe::client::StripeSettings;
use mspbridge_providers::stripe::sandbox::{DEMO_RESTRICTED_KEY, StripeSandbox};
use mspbridge_sandbox::{Seed, loopback_listener};
use serde_json::{Value, json};

async fn post_csv(app: &TestApp, path: &str, token: &str, body: &str) -> (u16, Value) {
    let r = app
        .http
        .post(app.url(path))
        .bearer_auth(token)
        .header("content-type", "text/csv")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn company(app: &TestApp, name: &str) -> i64 {
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

async fn connect_bb(app: &TestApp) -> i64 {
    connect_json(
        app,
        json!({"provider": "bigger_brains", "credentials": {"reseller_name": "Demo MSP", "brainstation_url": "https://learn.example.com"}}),
    )
    .await
}

#[tokio::test]
async fn premium_training_catalogue_progress_and_users_export() {
    for app in TestApp::each().await {
        let t = &app.a.owner_token;
        // Nothing to import before Bigger Brains is connected.
        let (s, _) = post_csv(&app, "/api/v1/training/catalogue", t, "Title\n").await;
        assert_eq!(s, 409);
        let id = connect_bb(&app).await;
        let (_, i) = app.get(&format!("/api/v1/integrations/{id}"), t).await;
        assert_eq!(i["status"], "connected", "{i}");

        // Premium Training in bulk and one by one; Manage only; another tenant's company
        // is not found.
        let a = company(&app, "Alpha Dental").await;
        let b = company(&app, "Beta Legal").await;
        let c = company(&app, "Gamma Freight").await;
        let (s, v) = app
            .post(
                "/api/v1/training/premium",
                t,
                json!({"company_ids": [a, b], "premium": true}),
            )
            .await;
        assert_eq!((s, v["changed"].as_i64()), (200, Some(2)), "{v}");
        let (s, v) = app
            .post(
                "/api/v1/training/premium",
                t,
                json!({"company_ids": [a, b], "premium": true}),
            )
            .await;
        assert_eq!(
            (s, v["changed"].as_i64()),
            (200, Some(0)),
            "enabling twice changes nothing"
        );
        let read_only = app
            .token(app.a.id, mspbridge_domain::auth::StaffRole::ReadOnly)
            .await;
        let (s, _) = app
            .post(
                "/api/v1/training/premium",
                &read_only,
                json!({"company_ids": [c], "premium": true}),
            )
            .await;
        assert_eq!(s, 403);
        let other = app
            .post(
                "/api/v1/companies",
                &app.b.owner_token,
                json!({"name": "Tenant B Co"}),
            )
            .await
            .1["id"]
            .as_i64()
            .unwrap();
        let (s, v) = app
            .post(
                "/api/v1/training/premium",
                t,
                json!({"company_ids": [other], "premium": true}),
            )
            .await;
        assert_eq!((s, v["field"].as_str()), (422, Some("company_ids")), "{v}");
        let (_, list) = app.get("/api/v1/training/companies", t).await;
        let premium: Vec<i64> = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["premium"] == true)
            .map(|c| c["company_id"].as_i64().unwrap())
            .collect();
        assert_eq!(premium, vec![a, b]);

        // The catalogue: 280 courses, then the same file again changes nothing.
        let csv = samples::catalogue_csv(280);
        let (s, r) = post_csv(&app, "/api/v1/training/catalogue", t, &csv).await;
        assert_eq!(s, 200, "{r}");
        assert_eq!(
            (
                r["rows"].as_i64(),
                r["applied"].as_i64(),
                r["written"].as_i64()
            ),
            (Some(280), Some(280), Some(280)),
            "{r}"
        );
        assert_eq!(r["errors"], json!([]));
        let (_, r) = post_csv(&app, "/api/v1/training/catalogue", t, &csv).await;
        assert_eq!(
            (r["written"].as_i64(), r["unchanged"].as_i64()),
            (Some(0), Some(280)),
            "{r}"
        );
        // Bad rows are named by line and column; the others are applied.
        let bad = "Title,Category,Duration,Level,URL\r\n\
                   Good One,Excel,30,Beginner,https://learn.example.com/1\r\n\
                   Bad Duration,Excel,soon,Beginner,https://learn.example.com/2\r\n\
                   Plain Http,Excel,30,Beginner,http://learn.example.com/3\r\n\
                   Good One,Excel,31,Beginner,https://learn.example.com/4\r\n\
                   Odd Level,Teams,1h 30m,Expert,https://learn.example.com/5\r\n";
        let (s, r) = post_csv(&app, "/api/v1/training/catalogue", t, bad).await;
        assert_eq!(s, 200, "{r}");
        assert_eq!(r["applied"].as_i64(), Some(2), "{r}");
        let errors = r["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 3, "{r}");
        assert_eq!(
            (
                errors[0]["line"].as_i64(),
                errors[0]["column"].as_str().map(str::to_lowercase)
            ),
            (Some(3), Some("duration".into())),
            "{r}"
        );
        assert_eq!(
            (
                errors[1]["line"].as_i64(),
                errors[1]["column"].as_str().map(str::to_lowercase)
            ),
            (Some(4), Some("url".into())),
            "{r}"
        );
        assert_eq!(errors[2]["line"].as_i64(), Some(5), "the duplicate: {r}");
        let (s, e) = app
            .http
            .post(app.url("/api/v1/training/catalogue"))
            .bearer_auth(t)
            .json(&json!({"title": "x"}))
            .send()
            .await
            .map(|r| (r.status().as_u16(), r))
            .unwrap();
        assert_eq!(s, 422);
        assert_eq!(e.json::<Value>().await.unwrap()["field"], "body");
        let (_, courses) = app
            .get("/api/v1/training/courses?search=pivot&limit=500", t)
            .await;
        assert!(!courses.as_array().unwrap().is_empty());
        assert!(courses.as_array().unwrap().iter().all(|c| {
            c["title"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains("pivot")
        }));
        let (_, odd) = app
            .get("/api/v1/training/courses?search=odd%20level", t)
            .await;
        assert_eq!(
            odd[0]["level"], "Expert",
            "an unknown level is kept as written"
        );

        // A Team's progress: no Team name yet is refused at that field.
        let ann = company_user(&app, CompanyId(a), "Ann", UserStatus::Active).await;
        let bob = company_user(&app, CompanyId(a), "Bob", UserStatus::Active).await;
        let emails = vec![
            ann.email.clone().unwrap(),
            bob.email.clone().unwrap(),
            "stranger@client.example".to_string(),
        ];
        let progress = samples::progress_csv("Alpha Team", &emails, 280, 4, chrono::Utc::now());
        let (s, v) = post_csv(
            &app,
            &format!("/api/v1/companies/{a}/training/progress"),
            t,
            &progress,
        )
        .await;
        assert_eq!((s, v["field"].as_str()), (422, Some("team_name")), "{v}");
        let (s, v) = app
            .call(
                reqwest::Method::PUT,
                &format!("/api/v1/companies/{a}/training"),
                t,
                Some(json!({"team_name": "Alpha Team"})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let (s, v) = app
            .call(
                reqwest::Method::PUT,
                &format!("/api/v1/companies/{b}/training"),
                t,
                Some(json!({"team_name": "alpha team"})),
            )
            .await;
        assert_eq!(
            (s, v["field"].as_str()),
            (422, Some("team_name")),
            "two companies cannot share a Team: {v}"
        );
        let (s, r) = post_csv(
            &app,
            &format!("/api/v1/companies/{a}/training/progress"),
            t,
            &progress,
        )
        .await;
        assert_eq!(s, 200, "{r}");
        assert_eq!(
            (r["applied"].as_i64(), r["written"].as_i64()),
            (Some(12), Some(12)),
            "{r}"
        );
        let (_, r) = post_csv(
            &app,
            &format!("/api/v1/companies/{a}/training/progress"),
            t,
            &progress,
        )
        .await;
        assert_eq!(r["written"].as_i64(), Some(0), "re-import: {r}");
        // The same file routed by its Team from the Training page: the same company, nothing new.
        let (s, r) = post_csv(
            &app,
            "/api/v1/training/progress?team=ALPHA%20TEAM",
            t,
            &progress,
        )
        .await;
        assert_eq!(
            (s, r["written"].as_i64(), r["applied"].as_i64()),
            (200, Some(0), Some(12)),
            "{r}"
        );
        let (s, v) = post_csv(&app, "/api/v1/training/progress?team=Nobody", t, &progress).await;
        assert_eq!((s, v["field"].as_str()), (422, Some("team")), "{v}");
        // A row of another Team is refused at its column, the rest applied.
        let mixed = format!(
            "{progress}\"Beta Team\",{},BB-0001,Completed,90,2026-01-05\r\n",
            emails[0]
        );
        let (_, r) = post_csv(
            &app,
            &format!("/api/v1/companies/{a}/training/progress"),
            t,
            &mixed,
        )
        .await;
        let errs = r["errors"].as_array().unwrap();
        assert_eq!(errs.len(), 1, "{r}");
        assert_eq!(
            (
                errs[0]["line"].as_i64(),
                errs[0]["column"].as_str().map(str::to_lowercase)
            ),
            (Some(14), Some("team".into())),
            "{r}"
        );
        let (_, tr) = app.get(&format!("/api/v1/companies/{a}/training"), t).await;
        assert_eq!(tr["premium"], true);
        assert_eq!(tr["link_out"], "https://learn.example.com");
        let (s, v) = app
            .call(
                reqwest::Method::PUT,
                &format!("/api/v1/companies/{b}/training"),
                t,
                Some(json!({"link_url": "http://beta.example"})),
            )
            .await;
        assert_eq!((s, v["field"].as_str()), (422, Some("link_url")), "{v}");
        let (s, v) = app
            .call(
                reqwest::Method::PUT,
                &format!("/api/v1/companies/{b}/training"),
                t,
                Some(json!({"link_url": "https://learn.beta.example/"})),
            )
            .await;
        assert_eq!(
            (s, v["link_out"].as_str()),
            (200, Some("https://learn.beta.example")),
            "{v}"
        );
        let learners = tr["learners"].as_array().unwrap();
        assert_eq!(learners.len(), 3, "{tr}");
        let ann_row = learners
            .iter()
            .find(|l| l["email"] == emails[0].as_str())
            .unwrap();
        assert_eq!(
            ann_row["user_id"].as_i64(),
            Some(ann.id.0),
            "matched to the portal user by e-mail"
        );
        assert!(
            learners
                .iter()
                .any(|l| l["email"] == "stranger@client.example" && l["user_id"].is_null())
        );
        let rate = tr["completion_rate"].as_i64().unwrap();
        assert!(rate > 0 && rate < 100, "{tr}");

        // The users export, formula injection neutralised.
        company_user(&app, CompanyId(a), "=HYPERLINK(\"x\")", UserStatus::Active).await;
        let r = app
            .http
            .get(app.url(&format!("/api/v1/companies/{a}/training/users.csv")))
            .bearer_auth(t)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.headers()["content-disposition"]
                .to_str()
                .unwrap()
                .contains("brainstation-users-alpha-team.csv")
        );
        let body = r.text().await.unwrap();
        assert!(
            body.starts_with("First Name,Last Name,Email,Team\r\n"),
            "{body}"
        );
        assert!(
            body.contains(&format!("Ann,Client,{},Alpha Team", emails[0])),
            "{body}"
        );
        assert!(body.contains("\"'=HYPERLINK(\"\"x\"\")\""), "{body}");
        let (s, _) = app
            .get(&format!("/api/v1/companies/{other}/training"), t)
            .await;
        assert_eq!(s, 404, "another tenant's company");
    }
}

#[tokio::test]
async fn usage_is_written_to_the_stripe_subscription_once_per_month() {
    for db in mspbridge_store::test_support::all().await.unwrap() {
        let stripe = StripeSandbox::new(Seed::Small);
        let handle = stripe.serve(loopback_listener().await.unwrap()).unwrap();
        let config = ProviderConfig {
            stripe: StripeSettings {
                api_base: Some(StripeSandbox::base_url(&handle)),
                backoff_floor: Duration::from_millis(100),
                ..Default::default()
            },
            ..Default::default()
        };
        let app = TestApp::start_configured(db, false, config).await;
        let t = &app.a.owner_token;
        connect_bb(&app).await;
        let sid = connect_json(
            &app,
            json!({"provider": "stripe", "credentials": {"secret_key": DEMO_RESTRICTED_KEY}}),
        )
        .await;
        sync(&app, sid).await;
        // A premium company billed by a customer with an active subscription.
        let (cus, _) = stripe
            .customers()
            .into_iter()
            .find_map(|c| {
                stripe
                    .subscriptions_of(&c.id)
                    .into_iter()
                    .find(|s| s["status"] == "active")
                    .map(|s| (c.id.clone(), s))
            })
            .unwrap();
        let co = company(&app, "Premium Client").await;
        let (s, v) = app
            .call(
                reqwest::Method::PUT,
                &format!("/api/v1/company-mapping/{co}/{sid}"),
                t,
                Some(json!({"external_id": cus})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        for n in ["Uma", "Vic", "Wes"] {
            company_user(&app, CompanyId(co), n, UserStatus::Active).await;
        }
        company_user(&app, CompanyId(co), "Gone", UserStatus::Disabled).await;
        let (s, _) = app
            .post(
                "/api/v1/training/premium",
                t,
                json!({"company_ids": [co], "premium": true}),
            )
            .await;
        assert_eq!(s, 200);
        let (_, usage) = app.get("/api/v1/training/usage", t).await;
        let row = usage
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["company_id"] == co)
            .cloned()
            .unwrap();
        assert_eq!(
            row["active_users"], 3,
            "disabled users are not charged: {row}"
        );
        let (_, prices) = app.get("/api/v1/training/prices", t).await;
        let price = prices
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["label"].as_str().unwrap().contains("Premium Training"))
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let (s, e) = app
            .post(
                "/api/v1/training/usage/stripe",
                t,
                json!({"price_id": "bogus"}),
            )
            .await;
        assert_eq!((s, e["field"].as_str()), (422, Some("price_id")));
        stripe.clear_seen();
        let (s, out) = app
            .post(
                "/api/v1/training/usage/stripe",
                t,
                json!({"price_id": price}),
            )
            .await;
        assert_eq!(s, 200, "{out}");
        let mine = out
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["company_id"] == co)
            .cloned()
            .unwrap();
        assert_eq!(mine["outcome"], "written", "{mine}");
        let sub = stripe
            .subscriptions_of(&cus)
            .into_iter()
            .find(|s| s["status"] == "active")
            .unwrap();
        let item = sub["items"]["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["price"]["id"] == price.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("no training item on {sub}"));
        assert_eq!(item["quantity"], 3);
        let with_price = sub["items"]["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["price"]["id"] == price.as_str())
            .count();
        assert_eq!(with_price, 1, "one item of the training price");
        // The same month again: nothing is written (never billed twice).
        let (_, again) = app
            .post(
                "/api/v1/training/usage/stripe",
                t,
                json!({"price_id": price}),
            )
            .await;
        let mine = again
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["company_id"] == co)
            .cloned()
            .unwrap();
        assert_eq!(mine["outcome"], "unchanged", "{mine}");
        let writes = stripe
            .seen()
            .into_iter()
            .filter(|r| {
                r.method == "POST"
                    && (r.path.starts_with("/v1/subscriptions/")
                        || r.path.starts_with("/v1/subscription_items"))
            })
            .count();
        assert_eq!(writes, 1, "one write for the month");
        // A new user this month: the quantity is set (not added) to 4, once.
        company_user(&app, CompanyId(co), "Xia", UserStatus::Active).await;
        let (_, third) = app
            .post(
                "/api/v1/training/usage/stripe",
                t,
                json!({"price_id": price}),
            )
            .await;
        let mine = third
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["company_id"] == co)
            .cloned()
            .unwrap();
        assert_eq!(
            (mine["outcome"].as_str(), mine["quantity"].as_i64()),
            (Some("written"), Some(4)),
            "{mine}"
        );
        assert_eq!(
            stripe.subscription_item_quantity(item["id"].as_str().unwrap()),
            Some(4)
        );
        // Premium switched off: the item goes back to 0 (no longer billed).
        let (s, _) = app
            .post(
                "/api/v1/training/premium",
                t,
                json!({"company_ids": [co], "premium": false}),
            )
            .await;
        assert_eq!(s, 200);
        let (_, off) = app
            .post(
                "/api/v1/training/usage/stripe",
                t,
                json!({"price_id": price}),
            )
            .await;
        let mine = off
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["company_id"] == co)
            .cloned()
            .unwrap();
        assert_eq!(
            (mine["outcome"].as_str(), mine["quantity"].as_i64()),
            (Some("written"), Some(0)),
            "{mine}"
        );
        assert_eq!(
            stripe.subscription_item_quantity(item["id"].as_str().unwrap()),
            Some(0)
        );
        let (_, again) = app
            .post(
                "/api/v1/training/usage/stripe",
                t,
                json!({"price_id": price}),
            )
            .await;
        assert!(
            again
                .as_array()
                .unwrap()
                .iter()
                .all(|o| o["company_id"] != co),
            "nothing more for it: {again}"
        );
        handle.stop().await;
    }
}
