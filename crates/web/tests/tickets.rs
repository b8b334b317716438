#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Tickets raised in the portal reach ConnectWise (its sandbox) through the outbox, on
//! SQLite and (with TEST_DATABASE_URL) PostgreSQL: one ticket and one note each however
//! often the answer is lost or the worker dies between the vendor call and the commit;
//! status changes as JSON-Patch, never PUT; a refused write stays visible with
//! ConnectWise's message and goes through on Retry once the admin fixed the defaults;
//! validation, permissions and tenant isolation.

mod common;

use std::sync::Arc;

use chrono::{Duration, Utc};
use common::*;
use mspbridge_providers::connectwise::sandbox::CwSandbox;
use reqwest::Method;
use serde_json::{Value, json};

/// An engine whose clock is `ahead` in the future (to pass a retry's back-off or a lease).
fn engine_at(app: &TestApp, ahead: Duration) -> mspbridge_sync::Engine {
    full_pass_engine(app).with_clock(Arc::new(move || Utc::now() + ahead))
}

async fn drain(app: &TestApp, ahead: Duration) -> mspbridge_sync::outbox::OutboxSummary {
    engine_at(app, ahead).drain_outbox().await.unwrap()
}

async fn set_defaults(app: &TestApp, cw: i64, board: &str) {
    let (s, v) = app
        .call(
            Method::PUT,
            &format!("/api/v1/integrations/{cw}/options"),
            &app.a.owner_token,
            Some(json!({"interval_minutes": 5, "ticket_defaults": {
                "board": board, "status": "New", "priority": "Priority 3 - Normal Response",
                "ticket_type": "Problem"}})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
}

/// A portal company linked to ConnectWise: (portal id, ConnectWise company id).
async fn linked_company(app: &TestApp, cw: i64) -> (i64, i64) {
    let (_, list) = app
        .get(
            &format!("/api/v1/integrations/{cw}/companies"),
            &app.a.owner_token,
        )
        .await;
    let c = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| !c["linked_company_id"].is_null())
        .unwrap();
    (
        c["linked_company_id"].as_i64().unwrap(),
        c["external_id"].as_str().unwrap().parse().unwrap(),
    )
}

fn cw_tickets(
    sb: &CwSandbox,
    marker_of: &str,
) -> Vec<mspbridge_providers::connectwise::wire::Ticket> {
    sb.with_data(|d| {
        d.tickets
            .iter()
            .filter(|t| t.external_x_ref.as_deref() == Some(marker_of))
            .cloned()
            .collect()
    })
}

async fn marker(app: &TestApp, outbox_id: i64) -> String {
    app.db
        .store
        .list_outbox(app.a.id, None, 1000)
        .await
        .unwrap()
        .into_iter()
        .find(|o| o.id == outbox_id)
        .unwrap()
        .marker
}

/// ConnectWise imported with ticket defaults on `board`: (integration, linked portal
/// company, its ConnectWise id).
async fn ready(app: &TestApp, board: &str) -> (i64, i64, i64) {
    let cw = imported(app).await;
    set_defaults(app, cw, board).await;
    let (company, cw_company) = linked_company(app, cw).await;
    (cw, company, cw_company)
}

/// Raises a ticket in the portal; the answer (ticket, PSA writes).
async fn raise(app: &TestApp, company: i64, summary: &str) -> Value {
    let (s, v) = app
        .post(
            "/api/v1/tickets",
            &app.a.owner_token,
            json!({"company_id": company, "summary": summary}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    v
}

fn writes(v: &Value) -> &Vec<Value> {
    v["psa_writes"].as_array().unwrap()
}

#[tokio::test]
async fn a_portal_ticket_reaches_connectwise_once_with_its_notes_and_status() {
    for app in TestApp::each().await {
        let t = &app.a.owner_token;
        let (cw, company, cw_company) = ready(&app, "Service Desk").await;
        let summary = format!("Printer on floor 2 prints blank pages {}", "x".repeat(120));
        let (s, created) = app
            .post(
                "/api/v1/tickets",
                t,
                json!({"company_id": company, "summary": summary, "description": "Since Monday."}),
            )
            .await;
        assert_eq!(s, 201, "{created}");
        assert_eq!(created["integration_id"], cw);
        assert_eq!(writes(&created)[0]["state"], "pending");
        let ticket = created["ticket"]["id"].as_i64().unwrap();
        let create_row = writes(&created)[0]["id"].as_i64().unwrap();
        let m = marker(&app, create_row).await;

        // ConnectWise applies the create but the answer is lost: retried later, found by
        // its marker, not created again.
        app.sandbox.lose_write_answers(1);
        let first = drain(&app, Duration::zero()).await;
        assert_eq!((first.claimed, first.retrying), (1, 1), "{first:?}");
        assert_eq!(cw_tickets(&app.sandbox, &m).len(), 1, "applied once");
        let early = drain(&app, Duration::zero()).await;
        assert_eq!(early.claimed, 0, "backing off");
        let second = drain(&app, Duration::minutes(1)).await;
        assert_eq!((second.claimed, second.done), (1, 1), "{second:?}");
        let in_cw = cw_tickets(&app.sandbox, &m);
        assert_eq!(in_cw.len(), 1, "still one ticket");
        let x = &in_cw[0];
        assert_eq!(x.summary.chars().count(), 100);
        assert!(x.summary.ends_with('…') && summary.starts_with(x.summary.trim_end_matches('…')));
        assert_eq!(x.board.name.as_deref(), Some("Service Desk"));
        assert_eq!(x.company.as_ref().unwrap().id, cw_company);
        assert_eq!(x.status.name.as_deref(), Some("New"));
        assert_eq!(x.priority.as_ref().unwrap().id, 3);
        assert_eq!(
            x.ticket_type.as_ref().and_then(|t| t.name.as_deref()),
            Some("Problem"),
            "a type of the board, by id"
        );
        let (_, v) = app.get(&format!("/api/v1/tickets/{ticket}"), t).await;
        let w = &writes(&v)[0];
        assert_eq!(w["state"], "done", "{v}");
        assert_eq!(w["external_id"], x.id.to_string());
        assert_eq!(w["attempts"], 2);
        let link = app
            .db
            .store
            .find_local_link(
                app.a.id,
                mspbridge_domain::IntegrationId(cw),
                mspbridge_domain::model::LinkedRecord::Ticket,
                ticket,
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(link.external_id, x.id.to_string());
        let cw_id = x.id;
        let notes_of = |internal: bool, text: &str| {
            let text = text.to_string();
            app.sandbox.with_data(|d| {
                d.notes
                    .iter()
                    .filter(|n| {
                        n.ticket_id == cw_id
                            && n.internal_analysis_flag == internal
                            && n.text == text
                    })
                    .count()
            })
        };
        assert_eq!(notes_of(false, "Since Monday."), 1, "the description");

        // Two notes, one internal; the first answer is lost again.
        for (text, internal) in [("Checked the toner.", true), ("We are on it.", false)] {
            let (s, v) = app
                .post(
                    &format!("/api/v1/tickets/{ticket}/notes"),
                    t,
                    json!({"text": text, "internal": internal}),
                )
                .await;
            assert_eq!(s, 201, "{v}");
        }
        app.sandbox.lose_write_answers(1);
        let d1 = drain(&app, Duration::minutes(2)).await;
        assert_eq!((d1.done, d1.retrying), (1, 1), "{d1:?}");
        let d2 = drain(&app, Duration::minutes(4)).await;
        assert_eq!(d2.done, 1, "{d2:?}");
        assert_eq!(notes_of(true, "Checked the toner."), 1);
        assert_eq!(notes_of(false, "We are on it."), 1);

        // A status change is a JSON-Patch; nothing is ever PUT.
        let (s, v) = app
            .call(
                Method::PATCH,
                &format!("/api/v1/tickets/{ticket}"),
                t,
                Some(json!({"status": "In Progress"})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["ticket"]["status"], "In Progress");
        assert_eq!(drain(&app, Duration::minutes(5)).await.done, 1);
        let status = app.sandbox.with_data(|d| {
            d.tickets
                .iter()
                .find(|t| t.id == cw_id)
                .unwrap()
                .status
                .name
                .clone()
        });
        assert_eq!(status.as_deref(), Some("In Progress"));
        let seen = app.sandbox.seen();
        assert!(
            seen.iter()
                .any(|r| r.method == "PATCH"
                    && r.path.ends_with(&format!("service/tickets/{cw_id}")))
        );
        assert!(!seen.iter().any(|r| r.method == "PUT"));
        let (_, v) = app.get(&format!("/api/v1/tickets/{ticket}"), t).await;
        assert!(writes(&v).iter().all(|w| w["state"] == "done"), "{v}");
        assert_eq!(v["notes"].as_array().unwrap().len(), 2);
    }
}

/// The worker dies after ConnectWise created the ticket and before the commit: its lease
/// runs out, the next worker finds the ticket by its marker and only commits.
#[tokio::test]
async fn a_crash_between_the_vendor_call_and_the_commit_creates_nothing_twice() {
    for app in TestApp::each().await {
        let (cw, company, _) = ready(&app, "Service Desk").await;
        let created = raise(&app, company, "VPN drops").await;
        let row = writes(&created)[0]["id"].as_i64().unwrap();
        let m = marker(&app, row).await;
        // The doomed worker claims the row and writes to ConnectWise, then dies.
        let now = Utc::now();
        let claimed = app
            .db
            .store
            .claim_outbox("doomed", now, now + Duration::minutes(2), 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        let providers = mspbridge_providers::Providers::new(mspbridge_providers::ProviderConfig {
            outbound: mspbridge_providers::OutboundPolicy {
                allow_private: true,
            },
            ..Default::default()
        });
        let integration = app
            .db
            .store
            .get_integration(app.a.id, mspbridge_domain::IntegrationId(cw))
            .await
            .unwrap();
        let vault = mspbridge_vault::Vault::new(&[9u8; 32]);
        let creds = mspbridge_store::load_credentials(app.db.store.as_ref(), &vault, &integration)
            .await
            .unwrap();
        let writer = providers
            .ticket_writer(integration.provider, &creds, Default::default())
            .await
            .unwrap()
            .unwrap();
        let mut payload: mspbridge_providers::tickets::NewVendorTicket =
            serde_json::from_value(claimed[0].payload.clone()).unwrap();
        payload.defaults.board = Some("Service Desk".into());
        writer.create_ticket(&payload).await.unwrap();
        assert_eq!(cw_tickets(&app.sandbox, &m).len(), 1);

        // While the lease runs, nobody else takes the row.
        assert_eq!(drain(&app, Duration::zero()).await.claimed, 0);
        let after = drain(&app, Duration::minutes(3)).await;
        assert_eq!((after.claimed, after.done), (1, 1), "{after:?}");
        assert_eq!(
            cw_tickets(&app.sandbox, &m).len(),
            1,
            "nothing created twice"
        );
        // The doomed worker's late result is not taken.
        let late = app
            .db
            .store
            .finish_outbox(
                row,
                "doomed",
                mspbridge_store::outbox::OutboxResult::Done {
                    external_id: "999".into(),
                    link: None,
                    psa_status: None,
                },
                Utc::now(),
            )
            .await
            .unwrap();
        assert!(!late);
    }
}

/// A create ConnectWise refuses fails at once with its message, stays listed, and goes
/// through on Retry after the admin fixed the ticket defaults.
#[tokio::test]
async fn a_refused_write_is_shown_and_retried_after_the_fix() {
    for app in TestApp::each().await {
        let t = &app.a.owner_token;
        // The board was in ConnectWise's lists when the defaults were saved, and is
        // deleted there before the ticket is written.
        let (cw, company, _) = ready(&app, "Alerts").await;
        app.sandbox
            .with_data(|d| d.boards.retain(|b| b.name != "Alerts"));
        let created = raise(&app, company, "Laptop screen").await;
        let row = writes(&created)[0]["id"].as_i64().unwrap();
        let d = drain(&app, Duration::zero()).await;
        assert_eq!(d.failed, 1, "{d:?}");
        let (s, failed) = app.get("/api/v1/outbox?state=failed", t).await;
        assert_eq!(s, 200);
        let f = &failed[0];
        assert_eq!(f["id"], row);
        assert!(
            f["last_error"]
                .as_str()
                .unwrap()
                .contains("no board named 'Alerts'"),
            "{f}"
        );
        // Not retried by itself.
        assert_eq!(drain(&app, Duration::hours(1)).await.claimed, 0);
        set_defaults(&app, cw, "Service Desk").await;
        let (s, r) = app
            .post(&format!("/api/v1/outbox/{row}/retry"), t, json!({}))
            .await;
        assert_eq!((s, r["state"].as_str()), (200, Some("pending")), "{r}");
        let (s, _) = app
            .post(&format!("/api/v1/outbox/{row}/retry"), t, json!({}))
            .await;
        assert_eq!(s, 409, "only failed writes are retried");
        assert_eq!(drain(&app, Duration::minutes(1)).await.done, 1);
        let (_, done) = app.get("/api/v1/outbox?state=done", t).await;
        assert!(done.as_array().unwrap().iter().any(|o| o["id"] == row));
        let (s, e) = app.get("/api/v1/outbox?state=nope", t).await;
        assert_eq!((s, e["field"].as_str()), (422, Some("state")));
    }
}

#[tokio::test]
async fn tickets_are_validated_permissioned_and_tenant_scoped() {
    for app in TestApp::each().await {
        let t = &app.a.owner_token;
        let cw = imported(&app).await;
        let (company, _) = linked_company(&app, cw).await;
        for (body, field) in [
            (json!({"company_id": company, "summary": "  "}), "summary"),
            (
                json!({"company_id": company, "summary": "x".repeat(201)}),
                "summary",
            ),
            (json!({"company_id": company}), "summary"),
        ] {
            let (s, e) = app.post("/api/v1/tickets", t, body).await;
            assert_eq!((s, e["field"].as_str()), (422, Some(field)), "{e}");
        }
        let (s, _) = app
            .post(
                "/api/v1/tickets",
                t,
                json!({"company_id": 999_999, "summary": "x"}),
            )
            .await;
        assert_eq!(s, 404);
        let reader = app
            .token(app.a.id, mspbridge_domain::auth::StaffRole::ReadOnly)
            .await;
        let (s, _) = app
            .post(
                "/api/v1/tickets",
                &reader,
                json!({"company_id": company, "summary": "x"}),
            )
            .await;
        assert_eq!(s, 403);
        let (_, v) = app
            .post(
                "/api/v1/tickets",
                t,
                json!({"company_id": company, "summary": "Mine"}),
            )
            .await;
        let id = v["ticket"]["id"].as_i64().unwrap();
        let (s, _) = app.get(&format!("/api/v1/tickets/{id}"), &reader).await;
        assert_eq!(s, 200, "read can view");
        let other = app.b.owner_token.clone();
        let (s, _) = app.get(&format!("/api/v1/tickets/{id}"), &other).await;
        assert_eq!(s, 404, "another tenant's ticket");
        let (s, _) = app
            .post(
                &format!("/api/v1/tickets/{id}/notes"),
                &other,
                json!({"text": "hi"}),
            )
            .await;
        assert_eq!(s, 404);
        let (_, list) = app.get("/api/v1/outbox", &other).await;
        assert_eq!(list.as_array().unwrap().len(), 0);
        let (s, e) = app
            .post(
                &format!("/api/v1/tickets/{id}/notes"),
                t,
                json!({"text": ""}),
            )
            .await;
        assert_eq!((s, e["field"].as_str()), (422, Some("text")));
    }
}

/// ConnectWise callbacks: a signed callback re-reads the ticket and moves the portal's
/// status within the request; forged, replayed, foreign-key and other-site callbacks are
/// refused with 401; an echo of our own change changes nothing.
#[tokio::test]
async fn connectwise_callbacks_are_verified_replays_refused_and_applied() {
    use mspbridge_providers::connectwise::callbacks::{SIGNATURE_HEADER, sign};
    use mspbridge_providers::connectwise::sandbox::SIGNING_KEY;
    for app in TestApp::each().await {
        let t = &app.a.owner_token;
        let (cw, company, _) = ready(&app, "Service Desk").await;
        let created = raise(&app, company, "Email bounces").await;
        let ticket = created["ticket"]["id"].as_i64().unwrap();
        drain(&app, Duration::zero()).await;
        let (_, v) = app.get(&format!("/api/v1/tickets/{ticket}"), t).await;
        let cw_id: i64 = writes(&v)[0]["external_id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let hook = app.url(&format!("/webhooks/connectwise/{cw}"));
        let base = app.sandbox_handle.base_url();

        // A technician moves it in ConnectWise; the callback brings it over.
        assert!(app.sandbox.set_ticket_status(cw_id, "Waiting on Client"));
        let s = app
            .sandbox
            .deliver_callback(&base, &hook, "updated", cw_id)
            .await
            .unwrap();
        assert_eq!(s, 200);
        let (_, v) = app.get(&format!("/api/v1/tickets/{ticket}"), t).await;
        assert_eq!(v["ticket"]["status"], "Waiting on Client", "{v}");

        let post = |body: Vec<u8>, sig: Option<String>, url: String| {
            let http = app.http.clone();
            async move {
                let mut r = http
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body);
                if let Some(s) = sig {
                    r = r.header(SIGNATURE_HEADER, s);
                }
                r.send().await.unwrap().status().as_u16()
            }
        };
        // Replayed: the same delivery twice.
        let body = app.sandbox.callback_body(&base, "updated", "ticket", cw_id);
        let sig = sign(SIGNING_KEY, &body);
        assert_eq!(
            post(body.clone(), Some(sig.clone()), hook.clone()).await,
            200
        );
        assert_eq!(
            post(body.clone(), Some(sig), hook.clone()).await,
            401,
            "replay"
        );
        // Forged, unsigned.
        let body = app.sandbox.callback_body(&base, "updated", "ticket", cw_id);
        assert_eq!(
            post(body.clone(), Some(sign("guess", &body)), hook.clone()).await,
            401
        );
        assert_eq!(post(body, None, hook.clone()).await, 401);
        // A key_url off the integration's site, even with a matching signature.
        let mut v: Value =
            serde_json::from_slice(&app.sandbox.callback_body(&base, "updated", "ticket", cw_id))
                .unwrap();
        v["Metadata"]["key_url"] = json!("http://127.0.0.1:9/callbackkeys/1");
        let body = serde_json::to_vec(&v).unwrap();
        assert_eq!(
            post(body.clone(), Some(sign(SIGNING_KEY, &body)), hook.clone()).await,
            401
        );
        // Another ConnectWise site (another MSP's callbacks pointed at us).
        v["Metadata"]["key_url"] = json!(format!("{base}/callbackkeys/1"));
        v["CompanyId"] = json!("another-msp");
        let body = serde_json::to_vec(&v).unwrap();
        assert_eq!(
            post(body.clone(), Some(sign(SIGNING_KEY, &body)), hook.clone()).await,
            401
        );
        // An integration that is not ConnectWise's, or none at all.
        assert_eq!(
            post(
                b"{}".to_vec(),
                None,
                app.url("/webhooks/connectwise/999999")
            )
            .await,
            404
        );

        // Our own change comes back as a callback: an echo, nothing changes.
        let (s, _) = app
            .call(
                Method::PATCH,
                &format!("/api/v1/tickets/{ticket}"),
                t,
                Some(json!({"status": "In Progress"})),
            )
            .await;
        assert_eq!(s, 200);
        assert_eq!(drain(&app, Duration::minutes(1)).await.done, 1);
        let before = app
            .db
            .store
            .get_ticket(app.a.id, mspbridge_domain::TicketId(ticket))
            .await
            .unwrap();
        let body = app.sandbox.callback_body(&base, "updated", "ticket", cw_id);
        let sig = sign(SIGNING_KEY, &body);
        let r = app
            .http
            .post(&hook)
            .header(SIGNATURE_HEADER, sig)
            .body(body)
            .send()
            .await
            .unwrap();
        let answer: Value = r.json().await.unwrap();
        assert!(
            answer["outcome"].as_str().unwrap().contains("unchanged"),
            "{answer}"
        );
        let after = app
            .db
            .store
            .get_ticket(app.a.id, mspbridge_domain::TicketId(ticket))
            .await
            .unwrap();
        assert_eq!(
            before.updated_at, after.updated_at,
            "an echo writes nothing"
        );
        assert_eq!(after.status, "In Progress");
    }
}
