#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Tickets both ways with the Halo sandbox, on SQLite and (with TEST_DATABASE_URL)
//! PostgreSQL: tickets and their actions imported once (team as board, private notes as
//! internal), a portal ticket, notes and a status change written as Halo's array upserts
//! (updates always with `id`) with lost answers retried without duplicates, a status
//! changed on both sides held as a conflict, Clear & Resync rebuilding the same tickets,
//! and Halo's webhook: registered once with Basic credentials, an agent's change applied
//! within seconds, our own write's echo changing nothing, and forged, replayed and
//! other-tenant deliveries refused with 401.

mod common;

use std::collections::{BTreeMap, HashSet};

use chrono::Duration;
use common::*;
use mspbridge_providers::halo::sandbox::{
    DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_TENANT, HaloSandbox,
};
use mspbridge_providers::halo::wire::CLOSED_STATUS_ID;
use mspbridge_sandbox::{SandboxHandle, Seed, loopback_listener};
use serde_json::{Value, json};

struct Halo {
    sb: HaloSandbox,
    _handle: SandboxHandle,
    id: i64,
}

async fn connect_halo(app: &TestApp) -> Halo {
    let sb = HaloSandbox::new(Seed::Small);
    let handle = sb.serve(loopback_listener().await.unwrap()).unwrap();
    let host = handle.host();
    let (s, v) = app
        .post(
            "/api/v1/integrations",
            &app.a.owner_token,
            json!({"provider": "halo_psa", "credentials": {
                "auth_server_url": format!("https://{host}/auth"),
                "resource_server_url": format!("https://{host}/api"),
                "tenant": DEMO_TENANT,
                "client_id": DEMO_CLIENT_ID,
                "client_secret": DEMO_CLIENT_SECRET,
            }}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    Halo {
        sb,
        _handle: handle,
        id: v["id"].as_i64().unwrap(),
    }
}

async fn set_options(app: &TestApp, id: i64) -> Value {
    let (s, v) = put_options(
        app,
        id,
        json!({"interval_minutes": 5, "tickets": true, "ticket_defaults": {
            "board": "Projects", "status": "New", "priority": "Low"}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v
}

fn halo_status(sb: &HaloSandbox, id: i64) -> i64 {
    sb.with_data(|d| d.tickets.iter().find(|t| t.id == id).unwrap().status_id)
}

/// What the portal should hold: Halo's tickets of the clients it imported.
fn expected(sb: &HaloSandbox) -> BTreeMap<String, Value> {
    sb.with_data(|d| {
        let active: HashSet<i64> = d
            .clients
            .iter()
            .filter(|c| !c.inactive)
            .map(|c| c.id)
            .collect();
        d.tickets
            .iter()
            .filter(|t| t.client_id.is_some_and(|c| active.contains(&c)))
            .map(|t| {
                let status = d.statuses.iter().find(|s| s.id == t.status_id).unwrap();
                let notes: Vec<Value> = d
                    .actions
                    .iter()
                    .filter(|a| a.ticket_id == t.id && !a.note.is_empty())
                    .map(|a| json!([a.note, a.hiddenfromuser, a.who]))
                    .collect();
                (
                    t.id.to_string(),
                    json!([
                        t.summary,
                        status.name,
                        t.team,
                        t.details,
                        t.status_id == CLOSED_STATUS_ID,
                        notes
                    ]),
                )
            })
            .collect()
    })
}

fn actions_requests(sb: &HaloSandbox, from: usize) -> usize {
    sb.seen()[from..]
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/api/Actions")
        .count()
}

#[tokio::test]
async fn halo_tickets_import_and_portal_writes_round_trip_without_duplicates() {
    for app in TestApp::each().await {
        let halo = connect_halo(&app).await;
        set_options(&app, halo.id).await;
        let want = expected(&halo.sb);
        assert!(want.len() >= 10, "the seed has tickets: {}", want.len());
        let before = halo.sb.seen().len();
        sync(&app, halo.id).await;
        let snap = snapshot(&app).await;
        assert_eq!(without_ids(&snap), want, "{}", app.backend());
        assert!(want.values().any(|t| t[4] == true), "a closed ticket");
        assert!(
            want.values()
                .any(|t| t[5].as_array().unwrap().iter().any(|n| n[1] == true)),
            "a private note"
        );
        assert_eq!(actions_requests(&halo.sb, before), want.len());
        // Nothing changed: no action is read again, nothing added.
        let before = halo.sb.seen().len();
        sync(&app, halo.id).await;
        assert_eq!(actions_requests(&halo.sb, before), 0);
        assert_eq!(snapshot(&app).await, snap);

        // A ticket raised in the portal for a Halo client: created once although the
        // answer is lost, with the integration's defaults and our marker.
        let (any_ext, any) = snap.iter().next().unwrap();
        let portal_any = view(&app, any[6].as_i64().unwrap()).await;
        let company = portal_any["ticket"]["company_id"].as_i64().unwrap();
        let client_id = halo.sb.with_data(|d| {
            d.tickets
                .iter()
                .find(|t| t.id.to_string() == *any_ext)
                .unwrap()
                .client_id
        });
        let (s, created) = app
            .post(
                "/api/v1/tickets",
                &app.a.owner_token,
                json!({"company_id": company, "summary": "Scanner jams", "description": "Since Monday."}),
            )
            .await;
        assert_eq!(s, 201, "{created}");
        assert_eq!(created["integration_id"], halo.id);
        let ticket = created["ticket"]["id"].as_i64().unwrap();
        let count = || halo.sb.with_data(|d| d.tickets.len());
        let n_before = count();
        halo.sb.lose_write_answers(1);
        let lookups = |from: usize| {
            halo.sb.seen()[from..]
                .iter()
                .filter(|r| r.method == "GET" && r.path == "/api/Tickets")
                .count()
        };
        let mark = halo.sb.seen().len();
        let first = drain(&app, Duration::zero()).await;
        assert_eq!((first.claimed, first.retrying), (1, 1), "{first:?}");
        assert_eq!(count(), n_before + 1, "applied once");
        assert_eq!(
            lookups(mark),
            0,
            "the first attempt creates without looking"
        );
        let mark = halo.sb.seen().len();
        let second = drain(&app, Duration::minutes(1)).await;
        assert_eq!((second.claimed, second.done), (1, 1), "{second:?}");
        assert!(
            lookups(mark) > 0,
            "the retry looks for the first attempt's ticket"
        );
        assert_eq!(
            count(),
            n_before + 1,
            "found by its marker, not created again"
        );
        let mine = halo.sb.with_data(|d| d.tickets.last().cloned().unwrap());
        assert_eq!(mine.summary, "Scanner jams");
        assert_eq!(mine.details.as_deref(), Some("Since Monday."));
        assert_eq!(mine.client_id, client_id);
        assert_eq!(mine.team.as_deref(), Some("Projects"));
        assert_eq!((mine.status_id, mine.priority_id), (1, Some(4)));
        assert!(mine.third_party_id_string.unwrap().starts_with("msb-"));
        let v = view(&app, ticket).await;
        assert_eq!(v["external_id"], mine.id.to_string());

        // Notes, one private; the first answer is lost again.
        for (text, internal) in [("Tried a restart.", true), ("We are on it.", false)] {
            let (s, v) = app
                .post(
                    &format!("/api/v1/tickets/{ticket}/notes"),
                    &app.a.owner_token,
                    json!({"text": text, "internal": internal}),
                )
                .await;
            assert_eq!(s, 201, "{v}");
        }
        halo.sb.lose_write_answers(1);
        drain(&app, Duration::zero()).await;
        let d = drain(&app, Duration::minutes(2)).await;
        assert_eq!(d.failed, 0, "{d:?}");
        let actions = halo.sb.with_data(|d| {
            d.actions
                .iter()
                .filter(|a| a.ticket_id == mine.id)
                .map(|a| (a.note.clone(), a.hiddenfromuser))
                .collect::<Vec<_>>()
        });
        assert_eq!(
            actions,
            vec![
                ("Tried a restart.".to_string(), true),
                ("We are on it.".to_string(), false)
            ]
        );

        // A status change is an update with `id`: no second ticket.
        assert_eq!(set_status(&app, ticket, "In Progress").await, 200);
        let d = drain(&app, Duration::zero()).await;
        assert_eq!(d.done, 1, "{d:?}");
        assert_eq!(count(), n_before + 1);
        assert_eq!(halo_status(&halo.sb, mine.id), 2);

        // The sync sees our ticket and notes: linked, not imported again.
        sync(&app, halo.id).await;
        let after = snapshot(&app).await;
        assert_eq!(after.len(), snap.len() + 1);
        let ours = &after[&mine.id.to_string()];
        assert_eq!(ours[1], "In Progress");
        assert_eq!(ours[5].as_array().unwrap().len(), 2, "{ours}");

        // Both sides change the status: held as a conflict, not overwritten.
        assert_eq!(set_status(&app, ticket, "With User").await, 200);
        assert!(halo.sb.set_ticket_status(mine.id, "Action Required"));
        let d = drain(&app, Duration::zero()).await;
        assert_eq!(d.failed, 1, "{d:?}");
        let v = view(&app, ticket).await;
        let conflict = v["psa_writes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["state"] == "failed")
            .unwrap();
        assert!(
            conflict["last_error"]
                .as_str()
                .unwrap()
                .starts_with("conflict:"),
            "{conflict}"
        );
        assert_eq!(halo_status(&halo.sb, mine.id), 3, "Halo's change stays");

        // Retry writes it anyway.
        let wid = conflict["id"].as_i64().unwrap();
        let (s, v) = app
            .post(
                &format!("/api/v1/outbox/{wid}/retry"),
                &app.a.owner_token,
                json!({}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let d = drain(&app, Duration::zero()).await;
        assert_eq!(d.done, 1, "{d:?}");
        assert_eq!(halo_status(&halo.sb, mine.id), 4);

        // Clear & Resync rebuilds the same tickets (portal ids aside; the portal's own
        // notes come back as Halo has them, by the API's agent).
        sync(&app, halo.id).await;
        let settled = without_ids(&snapshot(&app).await);
        let (s, v) = app
            .post(
                &format!("/api/v1/integrations/{}/tickets/clear-resync", halo.id),
                &app.a.owner_token,
                json!({}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["deleted"].as_u64().unwrap() as usize, settled.len());
        sync(&app, halo.id).await;
        let rebuilt = without_ids(&snapshot(&app).await);
        for n in rebuilt[&mine.id.to_string()][5].as_array().unwrap() {
            assert_eq!(n[2], "mspbridge API");
        }
        let mut settled = settled;
        for n in settled.get_mut(&mine.id.to_string()).unwrap()[5]
            .as_array_mut()
            .unwrap()
        {
            n[2] = json!("mspbridge API");
        }
        assert_eq!(rebuilt, settled);
    }
}

async fn deliver(app: &TestApp, halo_id: i64, body: &[u8], user: &str, pass: &str) -> u16 {
    app.http
        .post(format!("{}/webhooks/halo/{halo_id}", app.base))
        .basic_auth(user, Some(pass))
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn halo_webhooks_bring_agent_changes_and_refuse_forged_replayed_and_foreign_deliveries() {
    for db in mspbridge_store::test_support::all().await.unwrap() {
        let app = TestApp::start_with(db, true).await;
        let halo = connect_halo(&app).await;
        let v = set_options(&app, halo.id).await;
        let url = format!("{}/webhooks/halo/{}", app.base, halo.id);
        set_options(&app, halo.id).await;
        let hooks = halo.sb.with_data(|d| d.webhooks.clone());
        assert_eq!(hooks.len(), 1, "saved twice, registered once: {hooks:?}");
        // Halo's webhook ids are uuids (schema `Webhook`), kept as Halo gave them.
        assert_eq!(
            v["webhook"].as_str(),
            Some(format!("registered: {url} (callback {})", hooks[0].id).as_str()),
            "{v}"
        );
        assert!(hooks[0].id.len() == 36 && hooks[0].id.matches('-').count() == 4);
        assert_eq!(
            hooks[0].method, None,
            "no string where the schema has an integer"
        );
        assert_eq!(
            (hooks[0].url.as_str(), hooks[0].authentication_type),
            (url.as_str(), 1)
        );
        assert_eq!(hooks[0].basic_username, "mspbridge");
        let secret = mspbridge_vault::Vault::new(&[9u8; 32]).webhook_secret(app.a.id.0, halo.id);
        assert_eq!(hooks[0].basic_password, secret);
        sync(&app, halo.id).await;
        let snap = snapshot(&app).await;
        let (ext, t) = snap.iter().find(|(_, t)| t[1] == "New").unwrap();
        let ext: i64 = ext.parse().unwrap();
        let id = t[6].as_i64().unwrap();

        // An agent moves it in Halo: the webhook brings it, no sync run needed.
        assert!(halo.sb.set_ticket_status(ext, "With User"));
        let mut status = Value::Null;
        for _ in 0..100 {
            status = view(&app, id).await["ticket"]["status"].clone();
            if status == "With User" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(status, "With User");
        assert_eq!(view(&app, id).await["stage"], "waiting");
        // An admin places Halo's "With User" elsewhere on the stepper.
        let (s, v) = put_options(
            &app,
            halo.id,
            json!({"interval_minutes": 5, "tickets": true,
                    "ticket_stages": [{"status": "with user", "stage": "triaged"}]}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(view(&app, id).await["stage"], "triaged");
        options_refused(
            &app,
            halo.id,
            json!({"interval_minutes": 5, "tickets": true,
                    "ticket_stages": [{"status": "", "stage": "triaged"}]}),
            "options.ticket_stages[0].status",
        )
        .await;
        // Names are checked against Halo's lists ("Sync PSA Data", read on connect).
        for (body, field) in [
            (
                json!({"ticket_defaults": {"board": "Helpdesk"}}),
                "options.ticket_defaults.board",
            ),
            (
                json!({"ticket_boards": ["Projects", "Sales"]}),
                "options.ticket_boards[1]",
            ),
            (
                json!({"ticket_stages": [{"status": "Parked", "stage": "waiting"}]}),
                "options.ticket_stages[0].status",
            ),
        ] {
            let mut body = body;
            body["interval_minutes"] = json!(5);
            body["tickets"] = json!(true);
            let v = options_refused(&app, halo.id, body, field).await;
            assert!(v["message"].as_str().unwrap().contains("known: "), "{v}");
        }

        // Our own write comes back (Halo has no self-suppression) and changes nothing.
        assert_eq!(set_status(&app, id, "In Progress").await, 200);
        let sent = halo.sb.webhooks_sent();
        assert_eq!(drain(&app, Duration::zero()).await.done, 1);
        assert_eq!(halo.sb.webhooks_sent(), sent + 1, "the echo was sent");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let v = view(&app, id).await;
        assert_eq!(v["ticket"]["status"], "In Progress");
        assert_eq!(v["ticket"]["psa_status"], "In Progress");

        // Forged, replayed and foreign deliveries are refused.
        let body = halo.sb.webhook_body("Ticket Updated", ext);
        assert_eq!(
            deliver(&app, halo.id, &body, "mspbridge", "guess").await,
            401
        );
        assert_eq!(deliver(&app, halo.id, &body, "admin", &secret).await, 401);
        let unauthenticated = app
            .http
            .post(&url)
            .body(body.clone())
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(unauthenticated, 401);
        let other_tenant =
            mspbridge_vault::Vault::new(&[9u8; 32]).webhook_secret(app.b.id.0, halo.id);
        assert_eq!(
            deliver(&app, halo.id, &body, "mspbridge", &other_tenant).await,
            401
        );
        assert_eq!(
            deliver(&app, halo.id, &body, "mspbridge", &secret).await,
            200
        );
        assert_eq!(
            deliver(&app, halo.id, &body, "mspbridge", &secret).await,
            401,
            "replay"
        );
        assert_eq!(
            deliver(&app, 999_999, &body, "mspbridge", &secret).await,
            404
        );
        let logs = logs();
        assert!(logs.contains("webhook refused"), "refusals are logged");
    }
}

#[tokio::test]
async fn halo_replays_are_recognised_by_the_delivery_not_its_bytes() {
    for app in TestApp::each().await {
        let halo = connect_halo(&app).await;
        let secret = mspbridge_vault::Vault::new(&[9u8; 32]).webhook_secret(app.a.id.0, halo.id);
        let ext = halo.sb.with_data(|d| d.tickets[0].id);
        let send = |body: Vec<u8>| {
            let (app, secret) = (&app, &secret);
            async move { deliver(app, halo.id, &body, "mspbridge", secret).await }
        };
        // With Halo's delivery id.
        let body = halo.sb.webhook_body("Ticket Updated", ext);
        assert_eq!(send(body.clone()).await, 200);
        for variant in reformatted(&body) {
            assert_eq!(
                send(variant.clone()).await,
                401,
                "{}",
                String::from_utf8_lossy(&variant)
            );
        }
        // Halo's next delivery about the same ticket is new.
        assert_eq!(send(halo.sb.webhook_body("Ticket Updated", ext)).await, 200);

        // Without a delivery id: the ticket's update stamp.
        let without_id = |body: Vec<u8>| {
            let mut v: Value = serde_json::from_slice(&body).unwrap();
            v.as_object_mut().unwrap().remove("id");
            serde_json::to_vec(&v).unwrap()
        };
        let stamped = without_id(halo.sb.webhook_body("Ticket Updated", ext));
        assert_eq!(send(stamped.clone()).await, 200);
        for variant in reformatted(&stamped) {
            assert_eq!(send(variant).await, 401);
        }
        assert_eq!(send(stamped.clone()).await, 401, "replay");
        assert_eq!(
            send(without_id(halo.sb.webhook_body("Action Added", ext))).await,
            200,
            "another event about the ticket"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(halo.sb.set_ticket_status(ext, "With User"));
        let changed = without_id(halo.sb.webhook_body("Ticket Updated", ext));
        assert_ne!(changed, stamped);
        assert_eq!(send(changed).await, 200, "the ticket changed again");

        // Neither: the payload itself, in canonical form.
        let bare =
            serde_json::to_vec(&json!({"event": "Ticket Updated", "ticket_id": ext})).unwrap();
        assert_eq!(send(bare.clone()).await, 200);
        for variant in reformatted(&bare) {
            assert_eq!(send(variant).await, 401);
        }
        let other =
            serde_json::to_vec(&json!({"event": "Action Added", "ticket_id": ext})).unwrap();
        assert_eq!(send(other).await, 200);
    }
}

#[tokio::test]
async fn a_delivery_key_is_a_replay_within_the_window_only() {
    for app in TestApp::each().await {
        let halo = connect_halo(&app).await;
        let integration = mspbridge_domain::IntegrationId(halo.id);
        let window = mspbridge_web::webhooks::REPLAY_WINDOW;
        let t0 = chrono::Utc::now();
        let record = |at: chrono::DateTime<chrono::Utc>| {
            let store = app.db.store.clone();
            let tenant = app.a.id;
            async move {
                store
                    .record_webhook(
                        tenant,
                        integration,
                        "k",
                        "ticket",
                        "ticket updated",
                        "7",
                        at,
                        window,
                    )
                    .await
                    .unwrap()
            }
        };
        assert!(record(t0).await, "new");
        assert!(!record(t0 + Duration::minutes(5)).await, "replay");
        assert!(!record(t0 + window - Duration::seconds(1)).await, "replay");
        assert!(
            record(t0 + window + Duration::seconds(1)).await,
            "outside the window"
        );
        assert!(
            !record(t0 + window + Duration::minutes(1)).await,
            "replay again"
        );
    }
}

/// The portal ticket of Halo ticket `ext`, from a snapshot.
fn portal_id(snap: &BTreeMap<String, Value>, ext: i64) -> i64 {
    snap[&ext.to_string()][6].as_i64().unwrap()
}

#[tokio::test]
async fn halo_ticket_defaults_take_category_impact_and_urgency() {
    for app in TestApp::each().await {
        let halo = connect_halo(&app).await;
        // This Halo makes category, impact and urgency mandatory on new tickets.
        halo.sb.with_data(|d| d.require_category = true);
        let base = json!({"interval_minutes": 5, "tickets": true, "ticket_defaults": {
            "board": "Projects", "status": "New", "priority": "Low"}});
        let with = |extra: Value| {
            let mut b = base.clone();
            for (k, v) in extra.as_object().unwrap() {
                if k == "ticket_defaults" {
                    for (dk, dv) in v.as_object().unwrap() {
                        b["ticket_defaults"][dk] = dv.clone();
                    }
                } else {
                    b[k] = v.clone();
                }
            }
            b
        };
        for (extra, field, says) in [
            (
                json!({"ticket_defaults": {"category": "Plumbing"}}),
                "options.ticket_defaults.category",
                "Hardware",
            ),
            (
                json!({"ticket_defaults": {"ticket_type": "Change"}}),
                "options.ticket_defaults.ticket_type",
                "Service Request",
            ),
            (
                json!({"ticket_defaults": {"impact": 7}}),
                "options.ticket_defaults.impact",
                "1 (highest) to 4",
            ),
            (
                json!({"ticket_defaults": {"urgency": 0}}),
                "options.ticket_defaults.urgency",
                "1 (highest) to 4",
            ),
        ] {
            let v = options_refused(&app, halo.id, with(extra), field).await;
            assert!(v["message"].as_str().unwrap().contains(says), "{v}");
        }
        let (s, v) = put_options(&app, halo.id, base.clone()).await;
        assert_eq!(s, 200, "{v}");
        sync(&app, halo.id).await;
        let snap = snapshot(&app).await;
        let company = view(&app, snap.values().next().unwrap()[6].as_i64().unwrap()).await
            ["ticket"]["company_id"]
            .as_i64()
            .unwrap();

        // Without a category the write is refused with Halo's words, kept for Retry.
        let (s, created) = app
            .post(
                "/api/v1/tickets",
                &app.a.owner_token,
                json!({"company_id": company, "summary": "Monitor flickers", "description": "Desk 4."}),
            )
            .await;
        assert_eq!(s, 201, "{created}");
        let ticket = created["ticket"]["id"].as_i64().unwrap();
        let d = drain(&app, Duration::zero()).await;
        assert_eq!(d.failed, 1, "{d:?}");
        let write = view(&app, ticket).await["psa_writes"][0].clone();
        assert_eq!(write["state"], "failed", "{write}");
        assert!(
            write["last_error"]
                .as_str()
                .unwrap()
                .contains("Please select a Category"),
            "{write}"
        );

        // With the defaults set, Retry creates it with them.
        let (s, v) = put_options(
            &app,
            halo.id,
            with(json!({"ticket_defaults": {
                "category": "hardware", "impact": 3, "urgency": 2, "ticket_type": "problem"}})),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let (s, v) = app
            .post(
                &format!("/api/v1/outbox/{}/retry", write["id"]),
                &app.a.owner_token,
                json!({}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let d = drain(&app, Duration::zero()).await;
        assert_eq!(d.done, 1, "{d:?}");
        let mine = halo.sb.with_data(|d| d.tickets.last().cloned().unwrap());
        assert_eq!(mine.summary, "Monitor flickers");
        assert_eq!(
            (mine.category_1.as_deref(), mine.impact, mine.urgency),
            (Some("Hardware"), Some(3), Some(2)),
            "Halo's own spelling of the category"
        );
        assert_eq!(mine.tickettype_id, Some(4), "Problem, by id");
        let sent = halo
            .sb
            .seen()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path == "/api/Category")
            .count();
        assert!(sent >= 1, "categories read from Halo");

        // Other PSAs have no such fields: refused, naming the field.
        let cw = app.connect_cw(&app.a.owner_token).await["id"]
            .as_i64()
            .unwrap();
        let v = options_refused(
            &app,
            cw,
            json!({"interval_minutes": 5, "ticket_defaults": {"urgency": 2}}),
            "options.ticket_defaults.urgency",
        )
        .await;
        assert!(v["message"].as_str().unwrap().contains("only Halo"), "{v}");
    }
}

#[tokio::test]
async fn a_client_comment_sets_the_client_comment_status_and_closed_statuses_close_tickets() {
    for app in TestApp::each().await {
        let halo = connect_halo(&app).await;
        // A status listed as closed cannot be the client comment status.
        options_refused(
            &app,
            halo.id,
            json!({"tickets": true, "ticket_closed_statuses": ["Updated"],
                   "ticket_client_comment_status": "Updated"}),
            "options.ticket_client_comment_status",
        )
        .await;
        options_refused(
            &app,
            halo.id,
            json!({"tickets": true, "ticket_client_comment_status": "Reopened"}),
            "options.ticket_client_comment_status",
        )
        .await;
        let (s, v) = put_options(
            &app,
            halo.id,
            json!({"interval_minutes": 5, "tickets": true,
                   "ticket_defaults": {"board": "Projects", "status": "New", "priority": "Low"},
                   "ticket_closed_statuses": ["With Supplier"],
                   "ticket_client_comment_status": "Updated"}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        // One open Halo ticket goes to a supplier: closed in the portal by the list.
        sync(&app, halo.id).await;
        let open: Vec<i64> = snapshot(&app)
            .await
            .iter()
            .filter(|(_, t)| t[4] == false && t[1] != "With Supplier")
            .map(|(k, _)| k.parse().unwrap())
            .collect();
        let (supplier, open) = (open[0], open[1..].to_vec());
        assert!(halo.sb.set_ticket_status(supplier, "With Supplier"));
        sync(&app, halo.id).await;
        let snap = snapshot(&app).await;
        assert_eq!(snap[&supplier.to_string()][4], true, "closed by the list");
        assert!(
            snap.values()
                .filter(|t| t[1] != "Closed" && t[1] != "With Supplier")
                .all(|t| t[4] == false),
            "no other open status closes"
        );

        // Portal users of the ticket's company and of another one (the client portal's).
        let ext = open[0];
        let ticket = portal_id(&snap, ext);
        let company = view(&app, ticket).await["ticket"]["company_id"]
            .as_i64()
            .unwrap();
        let other = app
            .db
            .store
            .list_companies(app.a.id)
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.id.0 != company)
            .unwrap()
            .id;
        use mspbridge_domain::model::UserStatus;
        let own = mspbridge_domain::CompanyId(company);
        let client = company_user(&app, own, "Dana", UserStatus::Imported).await;
        let stranger = company_user(&app, other, "Sam", UserStatus::Active)
            .await
            .id
            .0;
        let disabled = company_user(&app, own, "Lee", UserStatus::Disabled)
            .await
            .id
            .0;
        let note = |text: &str, internal: bool, user: Option<i64>| json!({"text": text, "internal": internal, "client_user_id": user});
        let url = format!("/api/v1/tickets/{ticket}/notes");
        for (body, field) in [
            (
                note("Still broken.", false, Some(stranger)),
                "client_user_id",
            ),
            (note("Still broken.", true, Some(client.id.0)), "internal"),
            (
                note("Still broken.", false, Some(disabled)),
                "client_user_id",
            ),
        ] {
            let (s, v) = app.post(&url, &app.a.owner_token, body).await;
            assert_eq!((s, v["field"].as_str()), (422, Some(field)), "{v}");
        }
        let halo_actions = |sb: &HaloSandbox| {
            sb.with_data(|d| d.actions.iter().filter(|a| a.ticket_id == ext).count())
        };
        let actions_before = halo_actions(&halo.sb);

        let (s, v) = app
            .post(
                &url,
                &app.a.owner_token,
                note("Still broken.", false, Some(client.id.0)),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        assert_eq!(v["ticket"]["status"], "Updated");
        assert_eq!(v["ticket"]["closed"], false);
        let last = v["notes"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(
            (last["body"].as_str(), last["internal"].as_bool()),
            (Some("Still broken."), Some(false))
        );
        assert_eq!(
            last["author"].as_str().unwrap(),
            format!("{} {}", client.first_name, client.last_name).trim()
        );
        let d = drain(&app, Duration::zero()).await;
        assert_eq!(
            (d.done, d.failed),
            (2, 0),
            "the note, then the status: {d:?}"
        );
        assert_eq!(halo_status(&halo.sb, ext), 6, "Updated in Halo");
        assert_eq!(halo_actions(&halo.sb), actions_before + 1);
        let (note_text, hidden) = halo.sb.with_data(|d| {
            let a = d.actions.iter().rfind(|a| a.ticket_id == ext).unwrap();
            (a.note.clone(), a.hiddenfromuser)
        });
        assert_eq!((note_text.as_str(), hidden), ("Still broken.", false));

        // A second comment: the ticket is already Updated, only the note goes.
        let (s, _) = app
            .post(
                &url,
                &app.a.owner_token,
                note("Any news?", false, Some(client.id.0)),
            )
            .await;
        assert_eq!(s, 201);
        let d = drain(&app, Duration::zero()).await;
        assert_eq!((d.claimed, d.done), (1, 1), "{d:?}");

        // A staff note leaves the status alone.
        assert_eq!(set_status(&app, ticket, "In Progress").await, 200);
        drain(&app, Duration::zero()).await;
        let (s, v) = app
            .post(
                &url,
                &app.a.owner_token,
                note("Ordered a part.", false, None),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        assert_eq!(v["ticket"]["status"], "In Progress");
        let d = drain(&app, Duration::zero()).await;
        assert_eq!((d.claimed, d.done), (1, 1), "{d:?}");
        assert_eq!(halo_status(&halo.sb, ext), 2);

        // A portal status change to a listed status closes the ticket too.
        assert_eq!(set_status(&app, ticket, "With Supplier").await, 200);
        assert_eq!(view(&app, ticket).await["ticket"]["closed"], true);
        drain(&app, Duration::zero()).await;
        assert_eq!(halo_status(&halo.sb, ext), 5);
        assert_eq!(portal_id(&snap, ext), ticket);

        // A status added to the list reaches tickets that did not change, on the next
        // full pass (their stored hash includes the rule).
        sync(&app, halo.id).await;
        let before = snapshot(&app).await;
        let (_, open_one) = before
            .iter()
            .find(|(_, t)| t[4] == false && t[1] != "Updated")
            .expect("an open ticket");
        let status = open_one[1].as_str().unwrap().to_string();
        let (s, v) = put_options(
            &app,
            halo.id,
            json!({"interval_minutes": 5, "tickets": true,
                   "ticket_defaults": {"board": "Projects", "status": "New", "priority": "Low"},
                   "ticket_closed_statuses": ["With Supplier", status],
                   "ticket_client_comment_status": "Updated"}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let run = sync(&app, halo.id).await;
        let after = snapshot(&app).await;
        for (k, t) in &before {
            let now_closed = t[4] == true || t[1] == status.as_str();
            assert_eq!(after[k][4], now_closed, "ticket #{k} in '{}'", t[1]);
        }
        assert!(
            run.counts[&mspbridge_domain::sync::RecordType::Tickets].updated >= 1,
            "{run:?}"
        );
    }
}

#[tokio::test]
async fn quick_sync_reads_only_ticket_changes_and_keeps_the_regular_schedule() {
    for app in TestApp::each().await {
        let halo = connect_halo(&app).await;
        let quick = |id: i64| {
            let app = &app;
            async move {
                app.post(
                    &format!("/api/v1/integrations/{id}/tickets/quick-sync"),
                    &app.a.owner_token,
                    json!({}),
                )
                .await
            }
        };
        let (s, v) = quick(halo.id).await;
        assert_eq!(s, 409, "ticket sync is off: {v}");
        assert!(v["message"].as_str().unwrap().contains("Tickets"), "{v}");
        set_options(&app, halo.id).await;
        let (s, v) = quick(halo.id).await;
        assert_eq!((s, v["state"].as_str()), (202, Some("queued")), "{v}");
        sync(&app, halo.id).await;
        let store = &app.db.store;
        let iid = mspbridge_domain::IntegrationId(halo.id);
        let regular = store
            .schedule(app.a.id, iid)
            .await
            .unwrap()
            .unwrap()
            .next_run_at;

        // An agent's change in Halo and a new client: Quick Sync brings the ticket's change
        // only, and the next full run stays when it was due.
        let snap = snapshot(&app).await;
        let ext: i64 = snap
            .iter()
            .find(|(_, t)| t[1] == "New")
            .map(|(k, _)| k.parse().unwrap())
            .expect("a New ticket");
        assert!(halo.sb.set_ticket_status(ext, "Action Required"));
        let companies_before = store.list_companies(app.a.id).await.unwrap().len();
        halo.sb.with_data(|d| {
            let mut c = d.clients.iter().find(|c| !c.inactive).cloned().unwrap();
            c.id = 99_001;
            c.name = "Quick Sync Newcomer Ltd".into();
            c.alastupdate = Some(chrono::Utc::now());
            d.clients.push(c);
        });
        let ahead = Duration::minutes(1);
        let at = chrono::Utc::now() + ahead;
        let cooldown_from = store
            .schedule(app.a.id, iid)
            .await
            .unwrap()
            .unwrap()
            .manual_requested_at;
        // As a webhook asks (no cooldown): the admins' Sync now cooldown is left alone.
        assert_eq!(
            store
                .request_quick_sync(app.a.id, iid, at, Duration::zero())
                .await
                .unwrap(),
            mspbridge_store::sync::SyncRequest::Queued
        );
        assert_eq!(
            store
                .schedule(app.a.id, iid)
                .await
                .unwrap()
                .unwrap()
                .manual_requested_at,
            cooldown_from
        );
        let run = full_pass_engine(&app)
            .with_clock(std::sync::Arc::new(move || chrono::Utc::now() + ahead))
            .tick()
            .await
            .unwrap()
            .expect("due");
        assert_eq!(
            run.result,
            mspbridge_domain::sync::RunResult::Success,
            "{run:?}"
        );
        assert_eq!(
            run.counts.keys().copied().collect::<Vec<_>>(),
            vec![mspbridge_domain::sync::RecordType::Tickets],
            "the tickets pass alone"
        );
        let portal = portal_id(&snap, ext);
        assert_eq!(
            view(&app, portal).await["ticket"]["status"],
            "Action Required"
        );
        assert_eq!(
            store.list_companies(app.a.id).await.unwrap().len(),
            companies_before,
            "companies wait for the regular run"
        );
        let after = store.schedule(app.a.id, iid).await.unwrap().unwrap();
        assert_eq!(after.next_run_at, regular, "the regular run keeps its time");
        let (s, runs) = app
            .get(
                &format!("/api/v1/integrations/{}/runs", halo.id),
                &app.a.owner_token,
            )
            .await;
        assert_eq!(s, 200, "{runs}");
        assert_eq!(runs[0]["trigger"], "quick", "{}", runs[0]);

        // A full run asked for while a quick one waits wins: everything is read.
        let at2 = at + ahead;
        store
            .request_quick_sync(app.a.id, iid, at2, Duration::zero())
            .await
            .unwrap();
        store
            .request_sync(app.a.id, iid, at2, Duration::zero())
            .await
            .unwrap();
        let run = full_pass_engine(&app)
            .with_clock(std::sync::Arc::new(move || at2))
            .tick()
            .await
            .unwrap()
            .expect("due");
        assert!(
            run.counts
                .contains_key(&mspbridge_domain::sync::RecordType::Companies),
            "{run:?}"
        );
        assert_eq!(
            store.list_companies(app.a.id).await.unwrap().len(),
            companies_before + 1
        );
        let after = store.schedule(app.a.id, iid).await.unwrap().unwrap();
        assert_eq!(
            after.next_run_at.timestamp_micros(),
            (at2 + Duration::minutes(5)).timestamp_micros()
        );
    }
}

/// A retried create whose look-up for the first attempt's ticket is refused says so: the
/// message names the look-up, not the write.
#[tokio::test]
async fn a_refused_look_up_before_a_retried_create_is_reported_as_the_look_up() {
    for app in TestApp::each().await {
        let halo = connect_halo(&app).await;
        set_options(&app, halo.id).await;
        sync(&app, halo.id).await;
        let any = tickets(&app).await[0].clone();
        let company = any["company_id"].as_i64().unwrap();
        let (s, created) = app
            .post(
                "/api/v1/tickets",
                &app.a.owner_token,
                json!({"company_id": company, "summary": "Look-up refused", "description": "x"}),
            )
            .await;
        assert_eq!(s, 201, "{created}");
        halo.sb.lose_write_answers(1);
        let first = drain(&app, Duration::zero()).await;
        assert_eq!(first.retrying, 1, "{first:?}");
        halo.sb.faults.push(
            "/api/Tickets",
            mspbridge_sandbox::Fault::Status {
                status: 403,
                body: "\"You do not have permission to view tickets\"".into(),
                retry_after: None,
            },
        );
        let second = drain(&app, Duration::minutes(1)).await;
        assert_eq!(second.failed, 1, "{second:?}");
        let (s, rows) = app
            .get("/api/v1/outbox?state=failed", &app.a.owner_token)
            .await;
        assert_eq!(s, 200, "{rows}");
        let error = rows.to_string();
        assert!(
            error.contains("looking for the ticket an earlier attempt may have created"),
            "{}: {error}",
            app.backend()
        );
    }
}
