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
        let first = drain(&app, Duration::zero()).await;
        assert_eq!((first.claimed, first.retrying), (1, 1), "{first:?}");
        assert_eq!(count(), n_before + 1, "applied once");
        let second = drain(&app, Duration::minutes(1)).await;
        assert_eq!((second.claimed, second.done), (1, 1), "{second:?}");
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
        assert_eq!(
            v["webhook"].as_str(),
            Some(format!("registered: {url} (callback 1)").as_str()),
            "{v}"
        );
        set_options(&app, halo.id).await;
        let hooks = halo.sb.with_data(|d| d.webhooks.clone());
        assert_eq!(hooks.len(), 1, "saved twice, registered once: {hooks:?}");
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
        let (s, v) = put_options(
            &app,
            halo.id,
            json!({"interval_minutes": 5, "tickets": true,
                    "ticket_stages": [{"status": "", "stage": "triaged"}]}),
        )
        .await;
        assert_eq!(
            (s, v["field"].as_str()),
            (422, Some("options.ticket_stages[0].status")),
            "{v}"
        );
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
            let (s, v) = put_options(&app, halo.id, body).await;
            assert_eq!((s, v["field"].as_str()), (422, Some(field)), "{v}");
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
