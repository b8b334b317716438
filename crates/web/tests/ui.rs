#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The HTML UI over HTTP: sign-in with CSRF and rate limiting, session cookies, the
//! Integrations page, the connect form with its errors, and CSRF on every form post.

mod common;

use std::collections::BTreeMap;

use common::*;
use mspbridge_providers::connectwise::sandbox::*;

/// A minimal browser: keeps cookies, does not follow redirects.
struct Browser<'a> {
    app: &'a TestApp,
    cookies: BTreeMap<String, String>,
}

struct Page {
    status: u16,
    location: Option<String>,
    set_cookies: Vec<String>,
    body: String,
}

impl<'a> Browser<'a> {
    fn new(app: &'a TestApp) -> Self {
        Self {
            app,
            cookies: BTreeMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let resp = req
            .header("cookie", self.cookie_header())
            .header("accept", "text/html,application/xhtml+xml")
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string());
        let set_cookies: Vec<String> = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        for c in &set_cookies {
            let (kv, _) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = kv.split_once('=').unwrap();
            if v.is_empty() {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), v.to_string());
            }
        }
        Page {
            status,
            location,
            set_cookies,
            body: resp.text().await.unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let req = self.app.http.get(self.app.url(path));
        self.send(req).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let req = self.app.http.post(self.app.url(path)).form(form);
        self.send(req).await
    }

    async fn login(&mut self, email: &str, password: &str) -> Page {
        let page = self.get("/login").await;
        let csrf = hidden(&page.body, "csrf");
        self.post(
            "/login",
            &[("csrf", &csrf), ("email", email), ("password", password)],
        )
        .await
    }
}

fn hidden(body: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body
        .find(&marker)
        .unwrap_or_else(|| panic!("no hidden {name} in {body}"))
        + marker.len();
    body[start..].split('"').next().unwrap().to_string()
}

async fn app() -> TestApp {
    TestApp::start(mspbridge_store::test_support::sqlite().await.unwrap()).await
}

#[tokio::test]
async fn sign_in_needs_the_form_token_and_the_right_password() {
    let app = app().await;
    let mut b = Browser::new(&app);
    let anon = b.get("/settings/integrations").await;
    assert_eq!(
        (anon.status, anon.location.as_deref()),
        (303, Some("/login"))
    );

    // No form token: refused.
    let p = b
        .post(
            "/login",
            &[("email", &app.a.email), ("password", ADMIN_PASSWORD)],
        )
        .await;
    assert_eq!(p.status, 403);

    let p = b.login(&app.a.email, "wrong password!!").await;
    assert_eq!(p.status, 401);
    assert!(p.body.contains("Email or password is incorrect"));
    let p = b.login("nobody@nowhere.example", ADMIN_PASSWORD).await;
    assert_eq!(p.status, 401, "an unknown email gets the same answer");
    assert!(p.body.contains("Email or password is incorrect"));

    let p = b.login(&app.a.email, ADMIN_PASSWORD).await;
    assert_eq!(
        (p.status, p.location.as_deref()),
        (303, Some("/settings/integrations"))
    );
    let session = p
        .set_cookies
        .iter()
        .find(|c| c.starts_with("msb_session="))
        .unwrap();
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Lax"),
        "{session}"
    );

    let page = b.get("/settings/integrations").await;
    assert_eq!(page.status, 200);
    for name in [
        "Halo PSA",
        "ConnectWise Manage",
        "Autotask",
        "Syncro",
        "Datto RMM",
        "ConnectWise Asio",
        "Microsoft 365",
        "Stripe",
        "Bigger Brains",
    ] {
        assert!(page.body.contains(name), "{name} missing");
    }
    assert!(
        page.body
            .contains("/settings/integrations/connect/connectwise_manage")
    );
    assert!(
        !page.body.contains("Not available yet"),
        "every provider is built"
    );
    assert!(page.body.contains("Tenant A"));

    // Sign out ends the session.
    let csrf = hidden(&page.body, "csrf");
    let out = b.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303);
    assert_eq!(b.get("/settings/integrations").await.status, 303);
}

#[tokio::test]
async fn repeated_failed_sign_ins_are_rate_limited() {
    let app = app().await;
    let mut b = Browser::new(&app);
    for _ in 0..5 {
        assert_eq!(b.login(&app.a.email, "not the password").await.status, 401);
    }
    let p = b.login(&app.a.email, ADMIN_PASSWORD).await;
    assert_eq!(
        p.status, 429,
        "even the right password waits once the email is locked"
    );
    assert!(p.body.contains("Too many failed sign-ins"));
    // Another account is not affected.
    assert_eq!(b.login(&app.b.email, ADMIN_PASSWORD).await.status, 303);
}

#[tokio::test]
async fn the_connect_form_shows_errors_tests_and_connects() {
    let app = app().await;
    let mut b = Browser::new(&app);
    b.login(&app.a.email, ADMIN_PASSWORD).await;
    let form = b
        .get("/settings/integrations/connect/connectwise_manage")
        .await;
    assert_eq!(form.status, 200);
    for label in [
        "API URL (site)",
        "Company ID",
        "Public key",
        "Private key",
        "Client ID",
    ] {
        assert!(form.body.contains(label), "{label}");
    }
    let csrf = hidden(&form.body, "csrf");
    let site = app.sandbox_handle.host();

    // Without the form token nothing happens.
    let p = b
        .post(
            "/settings/integrations/connect/connectwise_manage",
            &[("cred_site", &site)],
        )
        .await;
    assert_eq!(p.status, 403);

    // A URL with a scheme: the field error is shown and the typed secret is not echoed.
    let p = b
        .post(
            "/settings/integrations/connect/connectwise_manage",
            &[
                ("csrf", &csrf),
                ("cred_site", "https://na.myconnectwise.net"),
                ("cred_company_id", DEMO_COMPANY_ID),
                ("cred_public_key", DEMO_PUBLIC_KEY),
                ("cred_private_key", DEMO_PRIVATE_KEY),
            ],
        )
        .await;
    assert_eq!(p.status, 422);
    assert!(
        p.body.contains("without &#39;https://&#39;") || p.body.contains("without 'https://'"),
        "{}",
        p.body
    );
    assert!(!p.body.contains(DEMO_PRIVATE_KEY));

    // Wrong keys: the test result and the fix hint are shown, nothing is saved.
    let p = b
        .post(
            "/settings/integrations/connect/connectwise_manage",
            &[
                ("csrf", &csrf),
                ("cred_site", &site),
                ("cred_company_id", DEMO_COMPANY_ID),
                ("cred_public_key", DEMO_PUBLIC_KEY),
                ("cred_private_key", "nope"),
                ("cred_client_id", DEMO_CLIENT_ID),
            ],
        )
        .await;
    assert_eq!(p.status, 422);
    assert!(p.body.contains("Authentication failed"), "{}", p.body);
    assert!(p.body.contains("How to fix"));

    // Wrong keys and no Client ID (a newcomer trying the demo's sandbox by hand): the keys
    // are named as the cause, and the message and its fix are shown once.
    let p = b
        .post(
            "/settings/integrations/connect/connectwise_manage",
            &[
                ("csrf", &csrf),
                ("cred_site", &site),
                ("cred_company_id", DEMO_COMPANY_ID),
                ("cred_public_key", DEMO_PUBLIC_KEY),
                ("cred_private_key", "nope"),
            ],
        )
        .await;
    assert_eq!(p.status, 422);
    assert_eq!(
        p.body.matches("rejected the API keys").count(),
        1,
        "{}",
        p.body
    );
    assert_eq!(p.body.matches("How to fix").count(), 1, "{}", p.body);
    assert_eq!(p.body.matches("Authentication failed").count(), 1);
    assert!(
        !p.body.contains("because no clientId was sent"),
        "{}",
        p.body
    );

    // A limited role: connected, with the per-area result naming the setting.
    let p = b
        .post(
            "/settings/integrations/connect/connectwise_manage",
            &[
                ("csrf", &csrf),
                ("name", "CW limited"),
                ("cred_site", &site),
                ("cred_company_id", DEMO_COMPANY_ID),
                ("cred_public_key", LIMITED_PUBLIC_KEY),
                ("cred_private_key", LIMITED_PRIVATE_KEY),
                ("cred_client_id", DEMO_CLIENT_ID),
            ],
        )
        .await;
    assert_eq!(p.status, 303);
    let detail = b.get(p.location.as_deref().unwrap()).await;
    assert!(detail.body.contains("CW limited"));
    assert!(detail.body.contains("data-status=\"error\""));
    assert!(detail.body.contains("Not permitted"));
    assert!(detail.body.contains("Member Maintenance"));
    assert!(detail.body.contains("Granted"));
    assert!(
        !detail.body.contains(LIMITED_PRIVATE_KEY),
        "secrets are only ever masked"
    );
    assert!(detail.body.contains("••••••••"));

    // Good keys.
    let p = b
        .post(
            "/settings/integrations/connect/connectwise_manage",
            &[
                ("csrf", &csrf),
                ("cred_site", &site),
                ("cred_company_id", DEMO_COMPANY_ID),
                ("cred_public_key", DEMO_PUBLIC_KEY),
                ("cred_private_key", DEMO_PRIVATE_KEY),
                ("cred_client_id", DEMO_CLIENT_ID),
            ],
        )
        .await;
    assert_eq!(p.status, 303);
    let location = p.location.unwrap();
    let detail = b.get(&location).await;
    assert!(detail.body.contains("data-status=\"connected\""));
    assert!(
        detail
            .body
            .contains("Connected. The connection test passed.")
    );

    // Test, rename and disconnect from the page, each with the form token.
    let id = location
        .trim_start_matches("/settings/integrations/")
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let p = b
        .post(
            &format!("/settings/integrations/{id}/test"),
            &[("csrf", "forged")],
        )
        .await;
    assert_eq!(p.status, 403);
    let p = b
        .post(
            &format!("/settings/integrations/{id}/test"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(p.status, 303);
    let p = b
        .post(
            &format!("/settings/integrations/{id}/rename"),
            &[("csrf", &csrf), ("name", "Main PSA")],
        )
        .await;
    assert_eq!(p.status, 303);
    let list = b.get("/settings/integrations").await;
    assert!(list.body.contains("Main PSA"));
    assert!(list.body.contains("Connect another"));
    let p = b
        .post(
            &format!("/settings/integrations/{id}/disconnect"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(p.status, 303);
    let detail = b.get(&format!("/settings/integrations/{id}")).await;
    assert!(detail.body.contains("data-status=\"disconnected\""));
    assert!(
        !detail.body.contains("Connection test"),
        "no stale test result after Disconnect"
    );
    assert!(detail.body.contains("Test and reconnect"));
}

#[tokio::test]
async fn session_api_calls_need_the_csrf_header() {
    let app = app().await;
    let mut b = Browser::new(&app);
    b.login(&app.a.email, ADMIN_PASSWORD).await;
    let page = b.get("/settings/integrations").await;
    let csrf = hidden(&page.body, "csrf");
    let body = serde_json::json!({"name": "Contoso"});
    let req = app.http.post(app.url("/api/v1/companies")).json(&body);
    let p = b.send(req).await;
    assert_eq!(p.status, 403);
    assert!(p.body.contains("csrf_failed"));
    let req = app
        .http
        .post(app.url("/api/v1/companies"))
        .header("x-csrf-token", csrf)
        .json(&body);
    assert_eq!(b.send(req).await.status, 201);
    // Reads need no token.
    let req = app.http.get(app.url("/api/v1/companies"));
    assert_eq!(b.send(req).await.status, 200);
}

#[tokio::test]
async fn ticket_pages_list_create_note_and_status_through_the_outbox() {
    let app = app().await;
    let cw = imported(&app).await;
    let (s, v) = app
        .call(
            reqwest::Method::PUT,
            &format!("/api/v1/integrations/{cw}/options"),
            &app.a.owner_token,
            Some(serde_json::json!({"interval_minutes": 5, "tickets": true, "ticket_defaults": {
                "board": "Service Desk", "status": "New", "priority": "Priority 3 - Normal Response"}})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    app.db
        .store
        .request_sync(
            app.a.id,
            mspbridge_domain::IntegrationId(cw),
            chrono::Utc::now(),
            chrono::Duration::zero(),
        )
        .await
        .unwrap();
    full_pass_engine(&app).tick().await.unwrap().expect("due");
    let mut b = Browser::new(&app);
    b.login(&app.a.email, ADMIN_PASSWORD).await;
    let list = b.get("/tickets").await;
    assert_eq!(list.status, 200);
    let imported = app.sandbox.with_data(|d| {
        d.tickets
            .iter()
            .find(|t| !t.closed_flag)
            .unwrap()
            .summary
            .clone()
    });
    assert!(list.body.contains(&imported), "imported tickets are listed");
    let integration_page = b.get(&format!("/settings/integrations/{cw}")).await;
    assert!(integration_page.body.contains("Clear &amp; Resync tickets"));
    assert!(integration_page.body.contains("Quick Sync tickets"));
    let integration_page = b
        .get(&format!("/settings/integrations/{cw}?tab=options"))
        .await;
    assert!(integration_page.body.contains("Client comment status"));
    assert!(
        !integration_page.body.contains("ticket_category"),
        "category, impact and urgency are Halo's"
    );

    // The Options form offers the PSA's lists as choices (select, multi-select).
    assert!(
        integration_page.body.contains(
            r#"<select multiple size="5" id="exclude_company_types" name="exclude_company_types""#
        ),
        "{}",
        integration_page.body
    );
    assert!(
        integration_page
            .body
            .contains(r#"<select id="ticket_board" name="ticket_board""#)
    );
    let opts_csrf = hidden(&integration_page.body, "csrf");
    let options_form = |board: &'static str| {
        vec![
            ("csrf", opts_csrf.clone()),
            ("enabled", "on".to_string()),
            ("interval_minutes", "30".to_string()),
            ("companies", "on".to_string()),
            ("contacts", "on".to_string()),
            ("tickets", "on".to_string()),
            ("exclude_company_types", "Vendor".to_string()),
            ("exclude_company_types", "Prospect".to_string()),
            ("ticket_board", board.to_string()),
            ("ticket_status", "New".to_string()),
            (
                "ticket_priority",
                "Priority 3 - Normal Response".to_string(),
            ),
        ]
    };
    // A refused save keeps the input and says what is wrong at the field.
    let form = options_form("No Such Board");
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let refused = b
        .post(&format!("/settings/integrations/{cw}/options"), &form)
        .await;
    assert_eq!(refused.status, 422);
    assert!(
        refused.body.contains(r#"id="ticket_board-error""#)
            && refused.body.contains(r#"<option value="No Such Board" selected>No Such Board (not in ConnectWise Manage)</option>"#)
            && refused.body.contains(r#"<option value="30" selected>"#)
            && refused.body.contains("<option selected>Prospect</option>")
            && refused.body.contains(r#"aria-current="page">Options"#),
        "{}",
        refused.body
    );
    let form = options_form("Service Desk");
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let saved = b
        .post(&format!("/settings/integrations/{cw}/options"), &form)
        .await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    let (_, o) = app
        .get(
            &format!("/api/v1/integrations/{cw}/options"),
            &app.a.owner_token,
        )
        .await;
    assert_eq!(
        o["options"]["exclude_company_types"],
        serde_json::json!(["Vendor", "Prospect"]),
        "{o}"
    );

    let csrf = hidden(&list.body, "csrf");
    let company = {
        let marker = "<option value=\"";
        let at = list.body.find(marker).unwrap() + marker.len();
        list.body[at..].split('"').next().unwrap().to_string()
    };
    // No summary: the form says which field.
    let p = b
        .post(
            "/tickets",
            &[("csrf", &csrf), ("company_id", &company), ("summary", " ")],
        )
        .await;
    assert_eq!(p.status, 422);
    assert!(p.body.contains("summary"), "{}", p.body);
    let p = b
        .post(
            "/tickets",
            &[
                ("csrf", &csrf),
                ("company_id", &company),
                ("summary", "Outlook keeps asking for the password"),
                ("description", "Since this morning."),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let page_url = p.location.unwrap();
    let page = b.get(&page_url).await;
    assert!(page.body.contains("(not written yet)"), "{}", page.body);
    let p = b
        .post(
            &format!("{page_url}/notes"),
            &[
                ("csrf", &csrf),
                ("text", "Tried a new profile."),
                ("internal", "on"),
            ],
        )
        .await;
    assert_eq!(p.status, 303);
    // Without the form token nothing is written.
    let p = b
        .post(&format!("{page_url}/status"), &[("status", "Completed")])
        .await;
    assert_eq!(p.status, 403);
    let d = full_pass_engine(&app).drain_outbox().await.unwrap();
    assert_eq!(d.done, 2, "{d:?}");
    let page = b.get(&page_url).await;
    assert!(page.body.contains("ConnectWise Manage #"), "{}", page.body);
    assert!(page.body.contains("Tried a new profile."));
    assert!(page.body.contains("internal"));
    let p = b
        .post(
            &format!("{page_url}/status"),
            &[("csrf", &csrf), ("status", "Waiting on Client")],
        )
        .await;
    assert_eq!(p.status, 303);
    full_pass_engine(&app).drain_outbox().await.unwrap();
    let in_cw = app.sandbox.with_data(|d| {
        d.tickets
            .iter()
            .find(|t| t.summary == "Outlook keeps asking for the password")
            .and_then(|t| t.status.name.clone())
    });
    assert_eq!(in_cw.as_deref(), Some("Waiting on Client"));
    // The resolution stepper: New and Triaged done, Working skipped past, Waiting current.
    let page = b.get(&page_url).await;
    assert!(
        page.body
            .contains(r#"<li class="current" aria-current="step">Waiting</li>"#),
        "{}",
        page.body
    );
    assert!(page.body.contains(r#"<li class="done">Triaged</li>"#));
    assert!(page.body.contains(r#"<li class="ahead">Resolved</li>"#));

    // A client's comment, entered for them: the ticket takes the client comment status.
    let (s, v) = app
        .call(
            reqwest::Method::PUT,
            &format!("/api/v1/integrations/{cw}/options"),
            &app.a.owner_token,
            Some(serde_json::json!({"interval_minutes": 5, "tickets": true, "ticket_defaults": {
                "board": "Service Desk", "status": "New", "priority": "Priority 3 - Normal Response"},
                "ticket_client_comment_status": "In Progress"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let ticket_id: i64 = page_url.rsplit('/').next().unwrap().parse().unwrap();
    let (_, t) = app
        .get(&format!("/api/v1/tickets/{ticket_id}"), &app.a.owner_token)
        .await;
    company_user(
        &app,
        mspbridge_domain::CompanyId(t["ticket"]["company_id"].as_i64().unwrap()),
        "Dana",
        mspbridge_domain::model::UserStatus::Active,
    )
    .await;
    let page = b.get(&page_url).await;
    assert!(page.body.contains("Written by"), "{}", page.body);
    assert!(page.body.contains("Dana Client (client"), "{}", page.body);
    assert!(page.body.contains("status becomes In Progress"));
    let client = {
        let marker = "<select id=\"client_user_id\" name=\"client_user_id\"><option value=\"\">me</option><option value=\"";
        let at = page.body.find(marker).expect("the company's users") + marker.len();
        page.body[at..].split('"').next().unwrap().to_string()
    };
    let p = b
        .post(
            &format!("{page_url}/notes"),
            &[
                ("csrf", &csrf),
                ("text", "It works on my laptop now."),
                ("client_user_id", &client),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let d = full_pass_engine(&app).drain_outbox().await.unwrap();
    assert_eq!(d.done, 2, "the note and the status: {d:?}");
    let in_cw = app.sandbox.with_data(|d| {
        d.tickets
            .iter()
            .find(|t| t.summary == "Outlook keeps asking for the password")
            .and_then(|t| t.status.name.clone())
    });
    assert_eq!(in_cw.as_deref(), Some("In Progress"));
    // The status form offers ConnectWise's own statuses (the vocabulary the integration
    // stored), not free text.
    assert!(
        page.body.contains(r#"<select id="status" name="status">"#)
            && page.body.contains("<option>Completed</option>"),
        "{}",
        page.body
    );

    // The list: PSA and its ticket number, filters, search.
    let list = b.get("/tickets?state=all&q=outlook").await;
    assert!(list.body.contains("1 ticket,"), "{}", list.body);
    assert!(list.body.contains("ConnectWise Manage #"));
    let none = b.get("/tickets?q=no-such-ticket-anywhere").await;
    assert!(none.body.contains("No ticket matches these filters"));

    // A write ConnectWise refuses is never hidden: Attention lists it (with the sidebar's
    // badge) and Retry / Discard act on it.
    app.sandbox
        .with_data(|d| d.boards.retain(|b| b.name != "Service Desk"));
    let p = b
        .post(
            "/tickets",
            &[
                ("csrf", &csrf),
                ("company_id", &company),
                ("summary", "Printer on fire"),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let d = full_pass_engine(&app).drain_outbox().await.unwrap();
    assert_eq!(d.failed, 1, "{d:?}");
    let att = b.get("/attention").await;
    assert!(
        att.body.contains("Printer on fire") && att.body.contains("no board named"),
        "{}",
        att.body
    );
    assert!(att.body.contains("1 write needs you"));
    assert!(
        att.body
            .contains(r#"<span class="count" aria-label="1 failed write">1</span>"#)
    );
    assert!(
        att.body
            .contains(r#"href="/attention" class="active" aria-current="page""#)
    );
    let write = att
        .body
        .split("data-write=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let p = b
        .post(&format!("/attention/{write}/retry"), &[("csrf", &csrf)])
        .await;
    assert_eq!(p.location.as_deref(), Some("/attention?done=retry"));
    full_pass_engine(&app).drain_outbox().await.unwrap();
    let p = b
        .post(&format!("/attention/{write}/discard"), &[("csrf", &csrf)])
        .await;
    assert_eq!(p.location.as_deref(), Some("/attention?done=discard"));
    let att = b.get("/attention?done=discard").await;
    assert!(att.body.contains("Nothing needs you") && att.body.contains("Discarded"));
    assert!(!att.body.contains(r#"<span class="count""#));
}

#[tokio::test]
async fn errors_render_in_the_shell_and_lists_count_in_words() {
    for app in TestApp::each().await {
        let mut b = Browser::new(&app);
        b.login(&app.a.email, ADMIN_PASSWORD).await;
        // No companies yet: the page says what to do first.
        let empty = b.get("/companies").await;
        assert!(empty.body.contains("0 companies"), "{}", empty.body);
        assert!(empty.body.contains("Connect a PSA under"));
        assert!(
            empty
                .body
                .contains(r#"href="/companies" class="active" aria-current="page""#)
        );
        // 404 (an unknown page, another tenant's or a missing id) in the app shell.
        for path in ["/no-such-page", "/companies/999999", "/tickets/999999"] {
            let p = b.get(path).await;
            assert_eq!(p.status, 404, "{path}");
            assert!(
                p.body.contains("Page not found")
                    && p.body.contains(r#"<nav class="side""#)
                    && p.body.contains("Go back"),
                "{path}: {}",
                p.body
            );
        }
        // The API keeps answering JSON.
        let (s, e) = app.get("/api/v1/nope", &app.a.owner_token).await;
        assert_eq!((s, e["code"].as_str()), (404, Some("not_found")));
        // Signed out: the error page without the menu.
        let anon = app
            .http
            .get(app.url("/no-such-page"))
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(anon.status(), 404);
        let body = anon.text().await.unwrap();
        assert!(body.contains("Page not found") && body.contains("Sign in"));

        let t = &app.a.owner_token;
        let (_, one) = app
            .post(
                "/api/v1/companies",
                t,
                serde_json::json!({ "name": "Acme" }),
            )
            .await;
        let page = b.get("/companies").await;
        assert!(page.body.contains(">1 company<"), "{}", page.body);
        app.post(
            "/api/v1/companies",
            t,
            serde_json::json!({ "name": "Beta" }),
        )
        .await;
        let page = b.get("/companies?q=bet").await;
        assert!(page.body.contains(">1 of 2 companies<"), "{}", page.body);
        assert!(page.body.contains("Beta") && !page.body.contains(">Acme<"));

        // Delete asks first and says what happened.
        let id = one["id"].as_i64().unwrap();
        let confirm = b.get(&format!("/companies/{id}/delete")).await;
        assert!(confirm.body.contains("Delete Acme?"), "{}", confirm.body);
        let csrf = hidden(&confirm.body, "csrf");
        // A 409 from a form (a company with tickets) offers Deactivate instead.
        let beta = page
            .body
            .split("href=\"/companies/")
            .find_map(|s| s.split('"').next()?.parse::<i64>().ok())
            .unwrap();
        let (s, v) = app
            .post(
                "/api/v1/tickets",
                t,
                serde_json::json!({ "company_id": beta, "summary": "Keep me" }),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        let refused = b
            .post(&format!("/companies/{beta}/delete"), &[("csrf", &csrf)])
            .await;
        assert_eq!(refused.status, 409);
        assert!(
            refused.body.contains("Beta cannot be deleted")
                && refused.body.contains("Deactivate Beta")
                && refused.body.contains("1 ticket"),
            "{}",
            refused.body
        );
        let p = b
            .post(&format!("/companies/{beta}/deactivate"), &[("csrf", &csrf)])
            .await;
        assert_eq!(p.status, 303);
        let company = b.get(p.location.as_deref().unwrap()).await;
        assert!(company.body.contains("Deactivated") && company.body.contains("Inactive"));
        let list = b.get("/companies").await;
        assert!(
            list.body.contains(&format!(
                r#"<a href="/tickets?state=all&amp;company={beta}">1</a>"#
            )),
            "the ticket count links to the company's tickets: {}",
            list.body
        );
        let p = b
            .post(&format!("/companies/{id}/delete"), &[("csrf", &csrf)])
            .await;
        assert_eq!(p.status, 303);
        let after = b.get(p.location.as_deref().unwrap()).await;
        assert!(
            after.body.contains("Acme was deleted with its users")
                && after.body.contains("1 company"),
            "{}",
            after.body
        );
        // A conflict anywhere else renders in the shell too.
        let p = b
            .post(&format!("/companies/{id}/delete"), &[("csrf", &csrf)])
            .await;
        assert_eq!(p.status, 404);
        assert!(p.body.contains("Page not found"));
    }
}

#[tokio::test]
async fn the_technicians_page_shows_links_and_saves_an_edit_written_to_the_psa() {
    let app = app().await;
    imported(&app).await;
    let mut b = Browser::new(&app);
    b.login(&app.a.email, ADMIN_PASSWORD).await;
    let page = b.get("/technicians").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("edits written back"), "{}", page.body);
    assert!(page.body.contains("portal only"), "the owner is not linked");
    let (_, list) = app.get("/api/v1/technicians", &app.a.owner_token).await;
    let tech = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| !t["links"].as_array().unwrap().is_empty())
        .unwrap()
        .clone();
    let id = tech["technician"]["id"].as_i64().unwrap();
    let member: i64 = tech["links"][0]["external_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let csrf = hidden(&page.body, "csrf");
    // A bad email: the page says which field, nothing is written.
    let bad = b
        .post(
            &format!("/technicians/{id}"),
            &[
                ("csrf", &csrf),
                ("name", "Pat Field"),
                ("email", "nope"),
                ("active", "on"),
            ],
        )
        .await;
    assert_eq!(bad.status, 422);
    assert!(bad.body.contains("enter an email address"), "{}", bad.body);
    // The refused edit stays open with the input kept and the error at its field.
    assert!(
        bad.body.contains(r#"value="nope""#)
            && bad
                .body
                .contains(r#"<div class="field-error" role="alert">enter an email address</div>"#),
        "{}",
        bad.body
    );
    let saved = b
        .post(
            &format!("/technicians/{id}"),
            &[
                ("csrf", &csrf),
                ("name", "Pat Field"),
                ("email", "pat.field@demo-msp.example"),
            ],
        )
        .await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    let m = app
        .sandbox
        .with_data(|d| d.members.iter().find(|m| m.id == member).cloned().unwrap());
    assert_eq!(
        (m.first_name.as_str(), m.last_name.as_str(), m.inactive_flag),
        ("Pat", "Field", true),
        "an unticked Active box deactivates"
    );
    let forged = b
        .post(
            &format!("/technicians/{id}"),
            &[("csrf", "forged"), ("name", "X")],
        )
        .await;
    assert_eq!(forged.status, 403);
}

/// The JSON literal a page's script assigns after `marker` (up to the end of the line).
fn inline_json<'b>(body: &'b str, marker: &str) -> &'b str {
    let start = body
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in {body}"))
        + marker.len();
    body[start..].split(";\n").next().unwrap()
}

#[tokio::test]
async fn inline_json_escapes_markup_so_names_cannot_break_the_page() {
    let app = app().await;
    let t = &app.a.owner_token;
    let names = ["<!--<script>", "</script>", "a & b > c <!-- d"];
    for name in names {
        let (s, v) = app
            .post("/api/v1/companies", t, serde_json::json!({ "name": name }))
            .await;
        assert_eq!(s, 201, "{v}");
    }
    let id = app.connect_cw(t).await["id"].as_i64().unwrap();
    let (s, v) = app
        .call(
            reqwest::Method::PATCH,
            &format!("/api/v1/integrations/{id}"),
            t,
            Some(serde_json::json!({"name": "<!--<script></script>"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let mut b = Browser::new(&app);
    b.login(&app.a.email, ADMIN_PASSWORD).await;
    for (path, marker) in [
        ("/companies", "const portal = "),
        ("/settings/integrations/companies", "const columns = "),
    ] {
        let page = b.get(path).await;
        assert_eq!(page.status, 200, "{path}");
        // The page's script is one block: its first `</script>` is its own end.
        let script = page.body.split("<script>").nth(1).unwrap();
        let script = script.split("</script>").next().unwrap();
        assert!(script.trim_end().ends_with("})();"), "{path}: cut short");
        assert!(!script.contains("<!--"), "{path}: {script}");
        for marker in [marker, "const csrf = "] {
            let json = inline_json(&page.body, marker);
            assert!(
                !json.contains(['<', '>', '&']),
                "{path}: raw markup in the inline JSON: {json}"
            );
            let parsed: serde_json::Value = serde_json::from_str(json).unwrap();
            if marker == "const portal = " {
                let got: Vec<&str> = parsed
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["name"].as_str().unwrap())
                    .collect();
                for name in names {
                    assert!(got.contains(&name), "{name} in {got:?}");
                }
            } else if marker == "const columns = " {
                assert_eq!(parsed[0]["label"], "<!--<script></script>", "{parsed}");
            }
        }
    }
}

/// The connect wizard over HTTP (spec 2.3): credentials → Test (the permission report) →
/// options (saved with sync off; a refusal keeps the input and says why at the field) →
/// enable sync. The same walk in Chromium is `browser::the_connect_wizard_in_chromium`.
#[tokio::test]
async fn connecting_is_a_four_step_wizard() {
    for app in TestApp::each().await {
        let mut b = Browser::new(&app);
        b.login(&app.a.email, ADMIN_PASSWORD).await;
        let form = b
            .get("/settings/integrations/connect/connectwise_manage")
            .await;
        assert!(
            form.body.contains(
                r#"class="current" aria-current="step"><span class="n">1</span> Credentials"#
            ),
            "{}",
            form.body
        );
        let csrf = hidden(&form.body, "csrf");
        let site = app.sandbox_handle.host();
        let p = b
            .post(
                "/settings/integrations/connect/connectwise_manage",
                &[
                    ("csrf", &csrf),
                    ("cred_site", &site),
                    ("cred_company_id", DEMO_COMPANY_ID),
                    ("cred_public_key", DEMO_PUBLIC_KEY),
                    ("cred_private_key", DEMO_PRIVATE_KEY),
                    ("cred_client_id", DEMO_CLIENT_ID),
                ],
            )
            .await;
        assert_eq!(p.status, 303);
        let location = p.location.unwrap();
        assert!(
            location.ends_with("?setup=test&msg=connected"),
            "{location}"
        );
        let id = location
            .trim_start_matches("/settings/integrations/")
            .split('?')
            .next()
            .unwrap()
            .to_string();
        let test = b.get(&location).await;
        assert!(
            test.body
                .contains(r#"aria-current="step"><span class="n">2</span> Test"#)
                && test.body.contains(r#"aria-label="Permission check""#)
                && test.body.contains(r#"name="setup" value="test""#)
                && test.body.contains("Next: options"),
            "{}",
            test.body
        );
        // Test again stays in the wizard.
        let p = b
            .post(
                &format!("/settings/integrations/{id}/test"),
                &[("csrf", &csrf), ("setup", "test")],
            )
            .await;
        assert_eq!(
            p.location.as_deref(),
            Some(format!("/settings/integrations/{id}?setup=test&msg=tested").as_str())
        );

        let options = b
            .get(&format!("/settings/integrations/{id}?setup=options"))
            .await;
        assert!(
            options
                .body
                .contains(r#"aria-current="step"><span class="n">3</span> Options"#)
                && !options.body.contains(r#"name="enabled""#)
                && options.body.contains("Save and continue"),
            "{}",
            options.body
        );
        let base = [
            ("csrf", csrf.as_str()),
            ("setup", "options"),
            ("interval_minutes", "30"),
            ("companies", "on"),
            ("contacts", "on"),
            ("auto_import_contacts", "on"),
            ("auto_link_by_name", "on"),
        ];
        let refused = b
            .post(&format!("/settings/integrations/{id}/options"), &base)
            .await;
        assert_eq!(refused.status, 422);
        assert!(
            refused.body.contains(r#"id="default_role_id-error""#)
                && refused
                    .body
                    .contains("Not saved: a default role for imported contacts is required")
                && !refused.body.contains("options.default_role_id")
                && refused.body.contains(r#"<option value="30" selected>"#)
                && refused
                    .body
                    .contains(r#"aria-current="step"><span class="n">3</span> Options"#),
            "{}",
            refused.body
        );
        let viewer = app
            .db
            .store
            .list_roles(app.a.id)
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.name == "Viewer")
            .unwrap()
            .id
            .0
            .to_string();
        let mut good = base.to_vec();
        good.push(("default_role_id", &viewer));
        let p = b
            .post(&format!("/settings/integrations/{id}/options"), &good)
            .await;
        assert_eq!(p.status, 303);
        let location = p.location.unwrap();
        assert!(
            location.ends_with("?setup=enable&msg=setup_options"),
            "{location}"
        );
        let (_, o) = app
            .get(
                &format!("/api/v1/integrations/{id}/options"),
                &app.a.owner_token,
            )
            .await;
        assert_eq!(o["options"]["enabled"], false, "saved with sync off: {o}");
        assert_eq!(o["options"]["interval_minutes"], 30);
        let enable = b.get(&location).await;
        assert!(
            enable
                .body
                .contains(r#"aria-current="step"><span class="n">4</span> Enable sync"#)
                && enable.body.contains("every 30 minutes"),
            "{}",
            enable.body
        );
        let p = b
            .post(
                &format!("/settings/integrations/{id}/enable"),
                &[("csrf", &csrf), ("setup", "enable")],
            )
            .await;
        assert_eq!(
            p.location.as_deref(),
            Some(format!("/settings/integrations/{id}?tab=runs&msg=sync_enabled").as_str())
        );
        let (_, o) = app
            .get(
                &format!("/api/v1/integrations/{id}/options"),
                &app.a.owner_token,
            )
            .await;
        assert_eq!(o["options"]["enabled"], true, "{o}");
        assert_eq!(o["options"]["auto_import_contacts"], true);
        let runs = b.get(p.location.as_deref().unwrap()).await;
        assert!(runs.body.contains("Sync enabled: the first import starts"));
    }
}

/// A 409 from a form (undoing a sync's links by name twice, from the link history) and a
/// 500 (an integration whose stored options cannot be read) render inside the app shell
/// with a way back; the 500 says nothing of the internal detail.
#[tokio::test]
async fn a_409_and_a_500_render_in_the_shell_with_a_way_back() {
    let app = app().await;
    app.db
        .store
        .create_company(app.a.id, "Zephyr Quill Architects Ltd", chrono::Utc::now())
        .await
        .unwrap();
    app.sandbox.with_data(|d| {
        let inactive: Vec<i64> = d
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
            .unwrap();
        c.name = "Zephyr Quill Architects Inc".into();
    });
    let cw = imported(&app).await;
    let mut b = Browser::new(&app);
    b.login(&app.a.email, ADMIN_PASSWORD).await;

    // The link history shows the sync's link by name with its own Undo.
    let history = b.get("/settings/integrations/companies/history").await;
    assert!(
        history.body.contains("Linked by name (sync)")
            && history.body.contains("Undo links by name (1)"),
        "{}",
        history.body
    );
    let batch = history
        .body
        .split("/settings/integrations/companies/batches/")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert!(batch.starts_with("run-"), "{batch}");
    let csrf = hidden(&history.body, "csrf");
    let undo = format!("/settings/integrations/companies/batches/{batch}/undo");
    let p = b.post(&undo, &[("csrf", &csrf)]).await;
    assert_eq!(p.status, 303);
    let after = b.get(p.location.as_deref().unwrap()).await;
    assert!(
        after
            .body
            .contains("Undone: 1 link(s) put back as they were.")
            && after.body.contains("Links made by a sync undone"),
        "{}",
        after.body
    );

    // 409: the same undo again.
    let p = b.post(&undo, &[("csrf", &csrf)]).await;
    assert_eq!(p.status, 409);
    for part in [
        "That cannot be done right now",
        "these links were already undone",
        r#"<nav class="side""#,
        "Go back",
        "Reload and try again",
    ] {
        assert!(
            p.body.to_lowercase().contains(&part.to_lowercase()),
            "{part}: {}",
            p.body
        );
    }

    // 500: the integration's stored options are unreadable.
    let pool = sqlx::SqlitePool::connect(&app.db.url).await.unwrap();
    sqlx::query("UPDATE integrations SET options = '{not json' WHERE id = ?")
        .bind(cw)
        .execute(&pool)
        .await
        .unwrap();
    let p = b
        .get(&format!("/settings/integrations/{cw}?tab=options"))
        .await;
    assert_eq!(p.status, 500);
    for part in [
        "Something went wrong",
        "Something went wrong on our side. It has been logged",
        r#"<nav class="side""#,
        "Go back",
        r#"href="/settings/integrations""#,
    ] {
        assert!(p.body.contains(part), "{part}: {}", p.body);
    }
    assert!(
        !p.body.contains("not json"),
        "no internal detail: {}",
        p.body
    );
    assert!(logs().contains("internal error"), "the 500 is logged");
}
