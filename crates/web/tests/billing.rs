#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Stripe billing end to end on both databases, against the sandbox that plays Stripe:
//! connecting (a publishable key refused at its field), the sync (paging, expand, the
//! 25 requests/s test-mode limit retried), customers in the mapping grid with the company
//! id written back on link, an idempotent "Create Stripe customer" after a lost answer,
//! signed webhooks (valid, tampered, stale, unsigned, rolled secret, replayed event id,
//! events out of order), the past-due overview, and a client user who sees and pays their
//! own company's invoices only.

mod common;

use std::time::Duration;

use common::*;
use mspbridge_providers::ProviderConfig;
use mspbridge_providers::stripe::client::StripeSettings;
use mspbridge_providers::stripe::sandbox::{DEMO_RESTRICTED_KEY, StripeSandbox};
use mspbridge_providers::stripe::webhooks::sign;
use mspbridge_sandbox::{SandboxHandle, Seed, loopback_listener};
use serde_json::{Value, json};

struct Vendor {
    stripe: StripeSandbox,
    base: String,
    _handle: SandboxHandle,
}

async fn vendor(seed: Seed) -> (Vendor, ProviderConfig) {
    let stripe = StripeSandbox::new(seed);
    stripe.set_retry_delays(vec![Duration::from_millis(50), Duration::from_millis(100)]);
    let handle = stripe.serve(loopback_listener().await.unwrap()).unwrap();
    let base = StripeSandbox::base_url(&handle);
    let config = ProviderConfig {
        stripe: StripeSettings {
            api_base: Some(base.clone()),
            backoff_floor: Duration::from_millis(100),
            ..Default::default()
        },
        ..Default::default()
    };
    (
        Vendor {
            stripe,
            base,
            _handle: handle,
        },
        config,
    )
}

async fn apps(seed: Seed) -> Vec<(TestApp, Vendor)> {
    let mut out = Vec::new();
    for db in mspbridge_store::test_support::all().await.unwrap() {
        let (v, config) = vendor(seed).await;
        out.push((TestApp::start_configured(db, true, config).await, v));
    }
    out
}

async fn connect(app: &TestApp) -> i64 {
    connect_json(
        app,
        json!({"provider": "stripe", "credentials": {"secret_key": DEMO_RESTRICTED_KEY}}),
    )
    .await
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

async fn link(app: &TestApp, company: i64, integration: i64, external: &str) {
    let (s, v) = app
        .call(
            reqwest::Method::PUT,
            &format!("/api/v1/company-mapping/{company}/{integration}"),
            &app.a.owner_token,
            Some(json!({"external_id": external})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
}

/// Waits until `check` holds (webhooks and write-backs run in the background).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn billing(app: &TestApp, company: i64) -> Value {
    let (s, v) = app
        .get(
            &format!("/api/v1/companies/{company}/billing"),
            &app.a.owner_token,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v
}

/// A customer with an open invoice, and that invoice's id.
fn customer_with_open_invoice(stripe: &StripeSandbox) -> (String, String, String) {
    for c in stripe.customers() {
        if let Some(i) = stripe
            .invoices_of(&c.id)
            .into_iter()
            .find(|i| i["status"] == "open" && i["hosted_invoice_url"].is_string())
        {
            return (c.id, c.name, i["id"].as_str().unwrap().to_string());
        }
    }
    panic!("the sandbox has no open invoice");
}

async fn post_webhook(
    app: &TestApp,
    id: i64,
    body: &str,
    signature: Option<String>,
) -> (u16, Value) {
    let mut r = app
        .http
        .post(app.url(&format!("/webhooks/stripe/{id}")))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(s) = signature {
        r = r.header("stripe-signature", s);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn stripe_billing_syncs_links_and_is_paid_by_the_clients_own_users() {
    for (app, v) in apps(Seed::Small).await {
        let t = &app.a.owner_token;
        // A publishable key is refused at its field, before Stripe is asked.
        let (s, e) = app
            .post(
                "/api/v1/integrations",
                t,
                json!({"provider": "stripe", "credentials": {"secret_key": "pk_test_abcdefghijkl"}}),
            )
            .await;
        assert_eq!(
            (s, e["field"].as_str()),
            (422, Some("credentials.secret_key")),
            "{e}"
        );
        let id = connect(&app).await;
        // With a public URL the endpoint was registered with Stripe, its secret kept.
        let endpoints = v.stripe.endpoints();
        assert_eq!(endpoints.len(), 1, "{endpoints:?}");
        assert!(
            endpoints[0]["url"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/webhooks/stripe/{id}"))
        );
        assert_eq!(
            endpoints[0]["api_version"],
            mspbridge_providers::stripe::STRIPE_VERSION
        );

        // The first sync reads every list; the sandbox's 25 requests a second in test mode
        // is kept to (a lower limit set here shows the 429 retried).
        v.stripe.set_rate_limit(4);
        let run = sync(&app, id).await;
        assert!(
            v.stripe.throttled() > 0,
            "the lowered limit was hit and retried"
        );
        let companies = run.counts[&mspbridge_domain::sync::RecordType::Companies];
        assert_eq!(
            companies.seen as usize,
            v.stripe.customer_count(),
            "{run:?}"
        );
        assert!(run.counts[&mspbridge_domain::sync::RecordType::Invoices].seen > 0);
        // Every request pinned the version, every POST carried an idempotency key.
        let seen = v.stripe.seen();
        assert!(
            seen.iter().all(|r| r.stripe_version.as_deref()
                == Some(mspbridge_providers::stripe::STRIPE_VERSION)),
            "{:?}",
            seen.iter()
                .find(|r| r.stripe_version.is_none())
                .map(|r| &r.path)
        );
        assert!(
            seen.iter()
                .filter(|r| r.method == "POST")
                .all(|r| r.idempotency_key.is_some())
        );
        assert!(
            seen.iter()
                .any(|r| r.path == "/v1/subscriptions" && r.query.contains("expand"))
        );
        v.stripe.set_rate_limit(25);

        // A no-change re-sync writes nothing.
        let again = sync(&app, id).await;
        for (rt, c) in &again.counts {
            assert_eq!(c.updated + c.created, 0, "{rt:?} {c:?}");
        }

        // Link a customer to a portal company: its id is written to the customer.
        let (cus, name, invoice) = customer_with_open_invoice(&v.stripe);
        let company = create_company(&app, &format!("{name} (portal)")).await;
        link(&app, company, id, &cus).await;
        eventually("the company id on the customer", || async {
            v.stripe.customers().iter().any(|c| {
                c.id == cus && c.metadata.get("mspbridge_company_id") == Some(&company.to_string())
            })
        })
        .await;
        let b = billing(&app, company).await;
        assert_eq!(b["customer"]["external_id"], cus.as_str());
        let open: Vec<&Value> = b["open_invoices"].as_array().unwrap().iter().collect();
        let mine = open
            .iter()
            .find(|i| i["external_id"] == invoice.as_str())
            .expect("the open invoice");
        let invoice_row = mine["id"].as_i64().unwrap();

        // The past-due overview lists the company with its open invoice, most past due first.
        let (s, pd) = app.get("/api/v1/billing/past-due", t).await;
        assert_eq!(s, 200, "{pd}");
        let rows = pd.as_array().unwrap();
        assert!(rows.iter().any(|r| r["company_id"] == company), "{pd}");
        assert!(
            rows.windows(2)
                .all(|w| w[0]["past_due"].as_i64() >= w[1]["past_due"].as_i64())
        );

        // Another company, with another customer's invoice.
        let other_cus = v
            .stripe
            .customers()
            .into_iter()
            .find(|c| c.id != cus && !v.stripe.invoices_of(&c.id).is_empty())
            .unwrap();
        let other = create_company(&app, "Other Client").await;
        link(&app, other, id, &other_cus.id).await;
        let ob = billing(&app, other).await;
        let other_invoice = ob["recent_invoices"][0]["id"].as_i64().unwrap();

        // A client user of the first company signs in and sees their company only.
        let user = company_user(
            &app,
            mspbridge_domain::CompanyId(company),
            "Pat",
            mspbridge_domain::model::UserStatus::Active,
        )
        .await;
        let (s, access) = app
            .post(
                &format!(
                    "/api/v1/companies/{company}/users/{}/portal-access",
                    user.id.0
                ),
                t,
                json!({}),
            )
            .await;
        assert_eq!(s, 200, "{access}");
        let cookie = client_login(
            &app,
            access["email"].as_str().unwrap(),
            access["password"].as_str().unwrap(),
        )
        .await;
        let get = |path: String| {
            let cookie = cookie.clone();
            let app = &app;
            async move {
                let r = app
                    .http
                    .get(app.url(&path))
                    .header("cookie", cookie)
                    .send()
                    .await
                    .unwrap();
                (
                    r.status().as_u16(),
                    r.headers()
                        .get("location")
                        .map(|l| l.to_str().unwrap().to_string()),
                    r.text().await.unwrap(),
                )
            }
        };
        let (s, _, body) = get("/api/v1/client/billing".into()).await;
        assert_eq!(s, 200, "{body}");
        let mine: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(mine["company_id"], company);
        assert_eq!(
            get(format!("/api/v1/client/invoices/{invoice_row}"))
                .await
                .0,
            200
        );
        assert_eq!(
            get(format!("/api/v1/client/invoices/{other_invoice}"))
                .await
                .0,
            404,
            "another company's invoice"
        );
        assert_eq!(
            get(format!("/client/invoices/{other_invoice}/pay")).await.0,
            404
        );
        // Staff API refuses a client session.
        assert_eq!(
            get(format!("/api/v1/companies/{other}/billing")).await.0,
            401
        );
        let (s, loc, _) = get(format!("/client/invoices/{invoice_row}/pay")).await;
        assert_eq!(s, 303);
        let hosted = loc.unwrap();
        assert!(hosted.contains("/i/"), "{hosted}");

        // The client pays on Stripe's hosted page; the signed webhook brings it here.
        let page = app
            .http
            .get(&hosted)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains("Pay"), "{page}");
        let paid = app.http.post(format!("{hosted}/pay")).send().await.unwrap();
        assert!(paid.status().is_success() || paid.status().is_redirection());
        eventually("the paid invoice in the portal", || async {
            let b = billing(&app, company).await;
            b["recent_invoices"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["external_id"] == invoice.as_str() && i["status"] == "paid")
        })
        .await;
        assert!(
            v.stripe.deliveries().iter().any(|d| d.2 == 200),
            "{:?}",
            v.stripe.deliveries()
        );

        // Out of order: an older "payment failed" event for the same invoice arrives late;
        // the invoice is read again and stays paid.
        let secret = endpoint_secret(&app, id).await;
        let late = json!({"id": "evt_late_1", "object": "event", "type": "invoice.payment_failed",
            "created": 1, "data": {"object": {"id": invoice, "object": "invoice", "status": "open"}}}).to_string();
        let now = chrono::Utc::now().timestamp();
        let reads = |v: &Vendor| {
            v.stripe
                .seen()
                .iter()
                .filter(|r| r.method == "GET" && r.path == format!("/v1/invoices/{invoice}"))
                .count()
        };
        let reads_before = reads(&v);
        let (s, _) = post_webhook(
            &app,
            id,
            &late,
            Some(format!(
                "t={now},v1={}",
                sign(&secret, now, late.as_bytes())
            )),
        )
        .await;
        assert_eq!(s, 200);
        eventually("the late event's re-read of the invoice", || async {
            reads(&v) > reads_before
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let b = billing(&app, company).await;
        assert!(
            b["recent_invoices"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["external_id"] == invoice.as_str() && i["status"] == "paid")
        );
        // The same event id again: recorded once, a no-op.
        let (s, r) = post_webhook(
            &app,
            id,
            &late,
            Some(format!(
                "t={now},v1={}",
                sign(&secret, now, late.as_bytes())
            )),
        )
        .await;
        assert_eq!((s, r["duplicate"].as_bool()), (200, Some(true)));
        // Tampered, stale, unsigned and wrongly signed deliveries are refused.
        let tampered = late.replace("evt_late_1", "evt_late_2");
        assert_eq!(
            post_webhook(
                &app,
                id,
                &tampered,
                Some(format!(
                    "t={now},v1={}",
                    sign(&secret, now, late.as_bytes())
                ))
            )
            .await
            .0,
            400
        );
        let old = now - 301;
        assert_eq!(
            post_webhook(
                &app,
                id,
                &tampered,
                Some(format!(
                    "t={old},v1={}",
                    sign(&secret, old, tampered.as_bytes())
                ))
            )
            .await
            .0,
            400
        );
        assert_eq!(post_webhook(&app, id, &tampered, None).await.0, 400);
        assert_eq!(
            post_webhook(
                &app,
                id,
                &tampered,
                Some(format!(
                    "t={now},v1={}",
                    sign("whsec_wrong", now, tampered.as_bytes())
                ))
            )
            .await
            .0,
            400
        );
        // A rolled secret: Stripe signs with the new and the old one; the old one stored
        // here still verifies.
        let endpoint = v.stripe.endpoints()[0]["id"].as_str().unwrap().to_string();
        v.stripe.roll_secret(&endpoint).unwrap();
        let before = v.stripe.deliveries().len();
        v.stripe
            .update_customer(&cus, Some("Renamed Client Ltd"), None);
        eventually("the renamed customer", || async {
            let (_, list) = app
                .get(
                    &format!("/api/v1/integrations/{id}/companies?search=renamed"),
                    t,
                )
                .await;
            list.to_string().contains("Renamed Client Ltd")
        })
        .await;
        assert!(v.stripe.deliveries()[before..].iter().any(|d| d.2 == 200));

        // Tenant B sees none of it.
        let (_, none) = app
            .get("/api/v1/billing/past-due", &app.b.owner_token)
            .await;
        assert_eq!(none, json!([]));
        let (s, _) = app
            .get(
                &format!("/api/v1/companies/{company}/billing"),
                &app.b.owner_token,
            )
            .await;
        assert_eq!(s, 404, "another tenant's company");

        // Manage payment methods: a billing-portal session per click.
        let (s, u) = app
            .post(
                &format!("/api/v1/companies/{company}/billing/portal"),
                t,
                json!({}),
            )
            .await;
        assert_eq!(s, 200, "{u}");
        assert!(u["url"].as_str().unwrap().contains("/p/session/"));
        let (s, e) = app
            .post(
                &format!("/api/v1/companies/{company}/billing/portal"),
                t,
                json!({"return_url": "https://evil.example/"}),
            )
            .await;
        assert_eq!((s, e["field"].as_str()), (422, Some("return_url")));
    }
}

async fn endpoint_secret(app: &TestApp, id: i64) -> String {
    let i = app
        .db
        .store
        .get_integration(app.a.id, mspbridge_domain::IntegrationId(id))
        .await
        .unwrap();
    let vault = mspbridge_vault::Vault::new(&[9u8; 32]);
    let creds = mspbridge_store::load_credentials(app.db.store.as_ref(), &vault, &i)
        .await
        .unwrap();
    mspbridge_providers::stripe::webhooks::secrets_of(creds.get("webhook_secret").unwrap())[0]
        .to_string()
}

/// Signs a client user in through `/client/login`; the session cookie.
async fn client_login(app: &TestApp, email: &str, password: &str) -> String {
    let page = app.http.get(app.url("/client/login")).send().await.unwrap();
    let login_cookie = page.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let html = page.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let wrong = app
        .http
        .post(app.url("/client/login"))
        .header("cookie", &login_cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("email", email),
            ("password", "not it"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let r = app
        .http
        .post(app.url("/client/login"))
        .header("cookie", &login_cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("email", email),
            ("password", password),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn lists_are_paged_and_a_lost_answer_creates_one_customer() {
    for (app, v) in apps(Seed::Companies(230)).await {
        let t = &app.a.owner_token;
        // A restricted key that may not read invoices is refused, naming what is missing.
        v.stripe.add_restricted_key(
            "rk_test_mspbridgeNoInvoices",
            &[
                "customer_read",
                "customer_write",
                "subscription_read",
                "payment_intent_read",
            ],
        );
        let (s, e) = app
            .post(
                "/api/v1/integrations",
                t,
                json!({"provider": "stripe", "credentials": {"secret_key": "rk_test_mspbridgeNoInvoices"}}),
            )
            .await;
        assert_eq!(
            (s, e["code"].as_str()),
            (422, Some("connection_failed")),
            "{e}"
        );
        assert!(e.to_string().contains("Invoices"), "{e}");
        let id = connect(&app).await;
        v.stripe.clear_seen();
        let run = sync(&app, id).await;
        let customers = v.stripe.customer_count();
        assert!(customers > 200);
        let pages = v
            .stripe
            .seen()
            .iter()
            .filter(|r| r.path == "/v1/customers")
            .count();
        assert_eq!(
            pages,
            customers.div_ceil(100),
            "one request per 100 customers"
        );
        assert_eq!(
            run.counts[&mspbridge_domain::sync::RecordType::Companies].seen as usize,
            customers
        );
        let (_, list) = app
            .get(&format!("/api/v1/integrations/{id}/companies?limit=500"), t)
            .await;
        assert_eq!(
            list.as_array().map(Vec::len),
            Some(customers),
            "every customer in the mapping grid's list"
        );

        // The answer to "create customer" is lost; the retry carries the same key and
        // Stripe answers with the customer it made: one customer, linked.
        let company = create_company(&app, "Brand New Client").await;
        v.stripe.lose_next_answer("/v1/customers");
        let (s, c) = app
            .post(
                &format!("/api/v1/companies/{company}/billing/customer"),
                t,
                json!({"email": "ap@brandnew.example"}),
            )
            .await;
        assert_eq!(s, 201, "{c}");
        assert_eq!(
            v.stripe.customer_count(),
            customers + 1,
            "exactly one customer created"
        );
        let made = v
            .stripe
            .customers()
            .into_iter()
            .find(|x| x.name == "Brand New Client")
            .unwrap();
        assert_eq!(
            made.metadata.get("mspbridge_company_id"),
            Some(&company.to_string())
        );
        assert_eq!(
            billing(&app, company).await["customer"]["external_id"],
            made.id.as_str()
        );
        // A second click: the company has its customer.
        let (s, _) = app
            .post(
                &format!("/api/v1/companies/{company}/billing/customer"),
                t,
                json!({}),
            )
            .await;
        assert_eq!(s, 409);
        assert_eq!(v.stripe.customer_count(), customers + 1);

        // Quick Match proposes an unlinked customer for the portal company of its name.
        let all = v.stripe.customers();
        let unlinked = all
            .iter()
            .find(|x| {
                x.id != made.id
                    && x.name.len() > 8
                    && all.iter().filter(|y| y.name == x.name).count() == 1
            })
            .cloned()
            .unwrap();
        let namesake = create_company(&app, &unlinked.name).await;
        let (s, qm) = app
            .post("/api/v1/company-mapping/quick-match", t, json!({}))
            .await;
        assert_eq!(s, 200, "{qm}");
        let p = qm["proposals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["company_id"] == namesake)
            .cloned();
        let p = p.unwrap_or_else(|| panic!("no proposal for {}: {qm}", unlinked.name));
        assert_eq!(
            (p["integration_id"].as_i64(), p["external_id"].as_str()),
            (Some(id), Some(unlinked.id.as_str())),
            "{p}"
        );

        // A customer tagged with a company's id (by another portal session, or Stripe's
        // dashboard) is linked by the next sync; a deleted one goes inactive.
        let tagged_company = create_company(&app, "Tagged Client").await;
        let target = v
            .stripe
            .customers()
            .into_iter()
            .find(|x| x.id != made.id)
            .unwrap();
        dashboard_tag(&v, &target.id, tagged_company).await;
        sync(&app, id).await;
        assert_eq!(
            billing(&app, tagged_company).await["customer"]["external_id"],
            target.id.as_str()
        );
        let gone = v
            .stripe
            .customers()
            .into_iter()
            .find(|x| x.id != made.id && x.id != target.id)
            .unwrap();
        v.stripe.delete_customer(&gone.id);
        sync(&app, id).await;
        let (_, list) = app
            .get(&format!("/api/v1/integrations/{id}/companies?limit=500"), t)
            .await;
        let row = list
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["external_id"] == gone.id.as_str())
            .unwrap()
            .clone();
        assert_eq!(row["active"], false, "{row}");
    }
}

/// Writes a company id on a customer through Stripe's API, as another tool would.
async fn dashboard_tag(v: &Vendor, customer: &str, company: i64) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/customers/{customer}", v.base))
        .bearer_auth(mspbridge_providers::stripe::sandbox::DEMO_SECRET_KEY)
        .form(&[("metadata[mspbridge_company_id]", company.to_string())])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

#[tokio::test]
async fn an_invoice_paid_while_no_webhook_arrives_is_read_again_by_the_next_incremental_run() {
    for db in mspbridge_store::test_support::all().await.unwrap() {
        let (v, config) = vendor(Seed::Small).await;
        // No public URL: no endpoint registered, so Stripe's events reach nobody.
        let app = TestApp::start_configured(db, false, config).await;
        let id = connect(&app).await;
        assert!(v.stripe.endpoints().is_empty());
        let (cus, name, invoice) = customer_with_open_invoice(&v.stripe);
        let company = create_company(&app, &name).await;
        let engine = mspbridge_sync::Engine::new(
            app.db.store.clone(),
            std::sync::Arc::new(mspbridge_vault::Vault::new(&[9u8; 32])),
            mspbridge_providers::Providers::new(app.config.clone()),
            mspbridge_sync::EngineConfig::default(),
            "test-worker",
        );
        let run = || {
            let engine = engine.clone();
            let store = app.db.store.clone();
            let tenant = app.a.id;
            async move {
                store
                    .request_sync(
                        tenant,
                        mspbridge_domain::IntegrationId(id),
                        chrono::Utc::now(),
                        chrono::Duration::zero(),
                    )
                    .await
                    .unwrap();
                engine.tick().await.unwrap().expect("due")
            }
        };
        let first = run().await;
        assert_eq!(
            first.result,
            mspbridge_domain::sync::RunResult::Success,
            "{first:?}"
        );
        link(&app, company, id, &cus).await;
        let open = |b: &Value| {
            b["open_invoices"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["external_id"] == invoice.as_str())
        };
        assert!(open(&billing(&app, company).await));
        assert!(v.stripe.pay_invoice(&invoice));
        v.stripe.clear_seen();
        let second = run().await;
        assert_eq!(
            second.result,
            mspbridge_domain::sync::RunResult::Success,
            "{second:?}"
        );
        let seen = v.stripe.seen();
        assert!(
            seen.iter()
                .any(|r| r.path == "/v1/customers" && r.query.contains("created")),
            "an incremental run: {:?}",
            seen.iter()
                .map(|r| format!("{} {}", r.path, r.query))
                .collect::<Vec<_>>()
        );
        assert!(
            seen.iter()
                .any(|r| r.path == format!("/v1/invoices/{invoice}")),
            "the invoice no longer open was read again"
        );
        let b = billing(&app, company).await;
        assert!(!open(&b), "{b}");
        assert!(
            b["recent_invoices"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["external_id"] == invoice.as_str() && i["status"] == "paid"),
            "{b}"
        );
    }
}
