#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Tickets both ways with the Syncro sandbox, on SQLite and (with TEST_DATABASE_URL)
//! PostgreSQL: tickets and their comments imported once (the initial comment as the
//! description, the issue type as board, hidden comments internal), a portal ticket,
//! notes (always with a subject) and a status change written with Syncro's POST / PUT /
//! comment, lost answers retried without duplicates, a refused status shown with the
//! reason, a status changed on both sides held as a conflict, Clear & Resync rebuilding
//! the same tickets, and Syncro's notifications: the secret URL the admin pastes into
//! Syncro, a technician's change applied within seconds, our own write's echo changing
//! nothing, and wrong-token, replayed and other-tenant deliveries refused with 401.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration as StdDuration;

use chrono::Duration;
use common::*;
use mspbridge_providers::ProviderConfig;
use mspbridge_providers::syncro::client::SyncroSettings;
use mspbridge_providers::syncro::sandbox::{DEMO_API_TOKEN, DEMO_SUBDOMAIN, SyncroSandbox};
use mspbridge_providers::syncro::wire::{Ticket, is_closed};
use mspbridge_sandbox::{SandboxHandle, Seed, loopback_listener};
use serde_json::{Value, json};

struct Syncro {
    sb: SyncroSandbox,
    _handle: SandboxHandle,
}

async fn sandbox() -> (Syncro, ProviderConfig) {
    let sb = SyncroSandbox::new(Seed::Small);
    sb.set_rate_limit(100_000, StdDuration::from_secs(60));
    let handle = sb.serve(loopback_listener().await.unwrap()).unwrap();
    let config = ProviderConfig {
        syncro: SyncroSettings {
            requests: 100_000,
            window: StdDuration::from_secs(60),
            backoff_floor: StdDuration::from_millis(200),
            api_base: SyncroSandbox::api_base(&handle),
        },
        ..Default::default()
    };
    (
        Syncro {
            sb,
            _handle: handle,
        },
        config,
    )
}

async fn connect(app: &TestApp) -> i64 {
    let (s, v) = app
        .post(
            "/api/v1/integrations",
            &app.a.owner_token,
            json!({"provider": "syncro", "credentials": {
                "subdomain": DEMO_SUBDOMAIN,
                "api_token": DEMO_API_TOKEN,
            }}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    v["id"].as_i64().unwrap()
}

async fn set_options(app: &TestApp, id: i64, status: &str) -> Value {
    let (s, v) = put_options(
        app,
        id,
        json!({"interval_minutes": 5, "tickets": true, "ticket_defaults": {
            "board": "Hardware", "status": status, "priority": "1 High"}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v
}

fn ticket(sb: &SyncroSandbox, id: i64) -> Ticket {
    sb.with_data(|d| d.tickets.iter().find(|t| t.id == id).cloned().unwrap())
}

/// What the portal should hold: Syncro's tickets of the customers it imported.
fn expected(sb: &SyncroSandbox) -> BTreeMap<String, Value> {
    sb.with_data(|d| {
        let active: HashSet<i64> = d
            .customers
            .iter()
            .filter(|c| !c.disabled)
            .map(|c| c.id)
            .collect();
        d.tickets
            .iter()
            .filter(|t| t.customer_id.is_some_and(|c| active.contains(&c)))
            .map(|t| {
                let mut comments: Vec<_> = d
                    .comments
                    .iter()
                    .filter(|c| c.ticket_id == Some(t.id))
                    .collect();
                comments.sort_by_key(|c| c.id);
                let description = comments[0].body.clone();
                let notes: Vec<Value> = comments[1..]
                    .iter()
                    .map(|c| json!([c.body, c.hidden, c.tech]))
                    .collect();
                (
                    t.id.to_string(),
                    json!([
                        t.subject,
                        t.status,
                        t.problem_type,
                        description,
                        is_closed(&t.status),
                        notes
                    ]),
                )
            })
            .collect()
    })
}

fn comment_reads(sb: &SyncroSandbox, from: usize) -> usize {
    sb.seen()[from..]
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/comments"))
        .count()
}

#[tokio::test]
async fn syncro_tickets_import_and_portal_writes_round_trip_without_duplicates() {
    for db in mspbridge_store::test_support::all().await.unwrap() {
        let (syncro, config) = sandbox().await;
        let app = TestApp::start_configured(db, false, config).await;
        let sb = &syncro.sb;
        let id = connect(&app).await;
        set_options(&app, id, "New").await;
        let want = expected(sb);
        assert!(want.len() >= 10, "the seed has tickets: {}", want.len());
        let before = sb.seen().len();
        sync(&app, id).await;
        let snap = snapshot(&app).await;
        assert_eq!(without_ids(&snap), want, "{}", app.backend());
        assert!(want.values().any(|t| t[4] == true), "a closed ticket");
        assert!(
            want.values()
                .any(|t| t[5].as_array().unwrap().iter().any(|n| n[1] == true)),
            "a hidden comment"
        );
        assert_eq!(comment_reads(sb, before), want.len());
        // Nothing changed: no comment is read again, nothing added.
        let before = sb.seen().len();
        sync(&app, id).await;
        assert_eq!(comment_reads(sb, before), 0);
        assert_eq!(snapshot(&app).await, snap);

        // A ticket raised in the portal: created once although the answer is lost, with
        // the defaults, the description as the initial comment and our marker as a tag.
        let (any_ext, any) = snap.iter().next().unwrap();
        let company = view(&app, any[6].as_i64().unwrap()).await["ticket"]["company_id"]
            .as_i64()
            .unwrap();
        let customer = ticket(sb, any_ext.parse().unwrap()).customer_id;
        let (s, created) = app
            .post(
                "/api/v1/tickets",
                &app.a.owner_token,
                json!({"company_id": company, "summary": "Scanner jams", "description": "Since Monday."}),
            )
            .await;
        assert_eq!(s, 201, "{created}");
        assert_eq!(created["integration_id"], id);
        let portal = created["ticket"]["id"].as_i64().unwrap();
        let count = || sb.with_data(|d| d.tickets.len());
        let n_before = count();
        sb.lose_write_answers(1);
        let first = drain(&app, Duration::zero()).await;
        assert_eq!((first.claimed, first.retrying), (1, 1), "{first:?}");
        assert_eq!(count(), n_before + 1, "applied once");
        let second = drain(&app, Duration::minutes(1)).await;
        assert_eq!((second.claimed, second.done), (1, 1), "{second:?}");
        assert_eq!(count(), n_before + 1, "found by its tag, not created again");
        let mine = sb.with_data(|d| d.tickets.last().cloned().unwrap());
        assert_eq!(mine.subject, "Scanner jams");
        assert_eq!(mine.customer_id, customer);
        assert_eq!(
            (
                mine.problem_type.as_deref(),
                mine.status.as_str(),
                mine.priority.as_deref()
            ),
            (Some("Hardware"), "New", Some("1 High"))
        );
        assert!(mine.tag_list[0].starts_with("msb-"), "{:?}", mine.tag_list);
        let initial = sb.with_data(|d| {
            d.comments
                .iter()
                .find(|c| c.ticket_id == Some(mine.id))
                .cloned()
                .unwrap()
        });
        assert_eq!(
            (initial.subject.as_deref(), initial.body.as_str()),
            (Some("Initial Issue"), "Since Monday.")
        );
        assert_eq!(view(&app, portal).await["external_id"], mine.id.to_string());

        // Notes, one hidden; the first answer is lost again.
        for (text, internal) in [("Tried a restart.", true), ("We are on it.", false)] {
            let (s, v) = app
                .post(
                    &format!("/api/v1/tickets/{portal}/notes"),
                    &app.a.owner_token,
                    json!({"text": text, "internal": internal}),
                )
                .await;
            assert_eq!(s, 201, "{v}");
        }
        sb.lose_write_answers(1);
        drain(&app, Duration::zero()).await;
        let d = drain(&app, Duration::minutes(2)).await;
        assert_eq!(d.failed, 0, "{d:?}");
        let comments = sb.with_data(|d| {
            d.comments
                .iter()
                .filter(|c| c.ticket_id == Some(mine.id) && !c.is_initial())
                .map(|c| (c.subject.clone().unwrap(), c.body.clone(), c.hidden))
                .collect::<Vec<_>>()
        });
        assert_eq!(
            comments,
            vec![
                ("Update".to_string(), "Tried a restart.".to_string(), true),
                ("Update".to_string(), "We are on it.".to_string(), false)
            ]
        );

        // A status change is a PUT on the ticket: no second ticket.
        assert_eq!(set_status(&app, portal, "In Progress").await, 200);
        assert_eq!(drain(&app, Duration::zero()).await.done, 1);
        assert_eq!(count(), n_before + 1);
        assert_eq!(ticket(sb, mine.id).status, "In Progress");

        // A status Syncro does not have is refused with the reason, nothing sent.
        assert_eq!(set_status(&app, portal, "Parked").await, 200);
        let d = drain(&app, Duration::zero()).await;
        assert_eq!(d.failed, 1, "{d:?}");
        let v = view(&app, portal).await;
        let refused = v["psa_writes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["state"] == "failed")
            .unwrap()
            .clone();
        assert!(
            refused["last_error"]
                .as_str()
                .unwrap()
                .contains("Syncro has no status named 'Parked'"),
            "{refused}"
        );
        assert_eq!(ticket(sb, mine.id).status, "In Progress");
        assert!(
            !sb.seen()
                .iter()
                .any(|r| r.method == "PUT"
                    && r.body.as_ref().is_some_and(|b| b["status"] == "Parked")),
            "never sent"
        );
        // The admin gives up on it: listed as discarded, the ticket shows Syncro's status
        // again, and it no longer blocks Clear & Resync.
        let (s, v) = app
            .post(
                &format!("/api/v1/outbox/{}/discard", refused["id"]),
                &app.a.owner_token,
                json!({}),
            )
            .await;
        assert_eq!((s, v["state"].as_str()), (200, Some("discarded")), "{v}");
        assert_eq!(view(&app, portal).await["ticket"]["status"], "In Progress");
        let (s, _) = app
            .post(
                &format!("/api/v1/outbox/{}/discard", refused["id"]),
                &app.a.owner_token,
                json!({}),
            )
            .await;
        assert_eq!(s, 409, "only a failed write can be discarded");

        // The sync sees our ticket and comments: linked, not imported again.
        sync(&app, id).await;
        let after = snapshot(&app).await;
        assert_eq!(after.len(), snap.len() + 1);
        let ours = &after[&mine.id.to_string()];
        assert_eq!(ours[1], "In Progress");
        assert_eq!(ours[3], "Since Monday.");
        assert_eq!(ours[5].as_array().unwrap().len(), 2, "{ours}");

        // Both sides change the status: held as a conflict, not overwritten.
        assert_eq!(set_status(&app, portal, "Waiting on Customer").await, 200);
        assert!(sb.set_ticket_status(mine.id, "Scheduled"));
        let d = drain(&app, Duration::zero()).await;
        assert_eq!(d.failed, 1, "{d:?}");
        let v = view(&app, portal).await;
        let conflict = v["psa_writes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["state"] == "failed" && w["id"] != refused["id"])
            .unwrap()
            .clone();
        assert!(
            conflict["last_error"]
                .as_str()
                .unwrap()
                .starts_with("conflict:"),
            "{conflict}"
        );
        assert_eq!(
            ticket(sb, mine.id).status,
            "Scheduled",
            "Syncro's change stays"
        );
        let (s, v) = app
            .post(
                &format!("/api/v1/outbox/{}/retry", conflict["id"]),
                &app.a.owner_token,
                json!({}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(drain(&app, Duration::zero()).await.done, 1);
        assert_eq!(ticket(sb, mine.id).status, "Waiting on Customer");

        // Clear & Resync rebuilds the same tickets (the portal's notes come back as
        // Syncro has them, by the token's user).
        sync(&app, id).await;
        let settled = without_ids(&snapshot(&app).await);
        let (s, v) = app
            .post(
                &format!("/api/v1/integrations/{id}/tickets/clear-resync"),
                &app.a.owner_token,
                json!({}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["deleted"].as_u64().unwrap() as usize, settled.len());
        sync(&app, id).await;
        let rebuilt = without_ids(&snapshot(&app).await);
        let mut settled = settled;
        for n in settled.get_mut(&mine.id.to_string()).unwrap()[5]
            .as_array_mut()
            .unwrap()
        {
            n[2] = json!("API User");
        }
        assert_eq!(rebuilt, settled);
    }
}

async fn deliver(app: &TestApp, path: &str, body: &[u8]) -> u16 {
    app.http
        .post(format!("{}{path}", app.base))
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn syncro_replays_are_recognised_by_the_notification_not_its_bytes() {
    for db in mspbridge_store::test_support::all().await.unwrap() {
        let (syncro, config) = sandbox().await;
        let app = TestApp::start_configured(db, false, config).await;
        let sb = &syncro.sb;
        let id = connect(&app).await;
        let secret = mspbridge_vault::Vault::new(&[9u8; 32]).webhook_secret(app.a.id.0, id);
        let path = format!("/webhooks/syncro/{id}/{secret}");
        let ext = sb.with_data(|d| d.tickets[0].id);

        // The ticket's update stamp identifies the notification.
        let body = sb.notification_body("Ticket - Status was changed", ext);
        assert_eq!(deliver(&app, &path, &body).await, 200);
        for variant in reformatted(&body) {
            assert_eq!(
                deliver(&app, &path, &variant).await,
                401,
                "{}",
                String::from_utf8_lossy(&variant)
            );
        }
        // Another event about the same ticket, and the ticket changed again: new.
        let replied = sb.notification_body("Ticket - Customer replied", ext);
        assert_eq!(deliver(&app, &path, &replied).await, 200);
        tokio::time::sleep(StdDuration::from_millis(20)).await;
        assert!(sb.set_ticket_status(ext, "Waiting on Customer"));
        let changed = sb.notification_body("Ticket - Status was changed", ext);
        assert_ne!(changed, body);
        assert_eq!(deliver(&app, &path, &changed).await, 200);
        assert_eq!(deliver(&app, &path, &changed).await, 401, "replay");

        // Without a stamp: the payload itself, in canonical form.
        let bare =
            serde_json::to_vec(&json!({"event": "Ticket - Status was changed", "ticket_id": ext}))
                .unwrap();
        assert_eq!(deliver(&app, &path, &bare).await, 200);
        for variant in reformatted(&bare) {
            assert_eq!(deliver(&app, &path, &variant).await, 401);
        }
    }
}

#[tokio::test]
async fn syncro_notifications_bring_technician_changes_and_refuse_wrong_replayed_and_foreign_ones()
{
    for db in mspbridge_store::test_support::all().await.unwrap() {
        let (syncro, config) = sandbox().await;
        let app = TestApp::start_configured(db, true, config).await;
        let sb = &syncro.sb;
        let id = connect(&app).await;
        let v = set_options(&app, id, "New").await;
        let hint = v["webhook"].as_str().unwrap();
        assert!(
            hint.starts_with("not registered: Syncro has no API"),
            "{hint}"
        );
        assert!(hint.contains("Notification Center"), "{hint}");
        let vault = mspbridge_vault::Vault::new(&[9u8; 32]);
        let secret = vault.webhook_secret(app.a.id.0, id);
        assert!(
            !hint.contains(&secret),
            "the secret is not in the API answer"
        );
        let path = format!("/webhooks/syncro/{id}/{secret}");
        // Ticket defaults are checked against Syncro's statuses (read on connect).
        let v = options_refused(&app, id, json!({"interval_minutes": 5, "tickets": true, "ticket_defaults": {"status": "Parked"}}), "options.ticket_defaults.status").await;
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .contains("Waiting on Customer"),
            "the PSA's names are listed: {v}"
        );
        // Syncro has no ticket type beyond its issue type (the board).
        options_refused(&app, id, json!({"interval_minutes": 5, "tickets": true, "ticket_defaults": {"ticket_type": "Incident"}}), "options.ticket_defaults.ticket_type").await;
        // What the admin pastes into Syncro's Notification Center.
        sb.set_notification_url(Some(format!("{}{path}", app.base)));
        sync(&app, id).await;
        let snap = snapshot(&app).await;
        let (ext, t) = snap.iter().find(|(_, t)| t[1] == "New").unwrap();
        let ext: i64 = ext.parse().unwrap();
        let portal = t[6].as_i64().unwrap();

        // A technician moves it in Syncro: the notification brings it, no sync run.
        assert!(sb.set_ticket_status(ext, "Waiting on Customer"));
        let mut status = Value::Null;
        for _ in 0..100 {
            status = view(&app, portal).await["ticket"]["status"].clone();
            if status == "Waiting on Customer" {
                break;
            }
            tokio::time::sleep(StdDuration::from_millis(50)).await;
        }
        assert_eq!(status, "Waiting on Customer");
        assert_eq!(view(&app, portal).await["stage"], "waiting");

        // Our own write comes back (Syncro notifies API changes too) and changes nothing.
        assert_eq!(set_status(&app, portal, "In Progress").await, 200);
        let sent = sb.notifications_sent();
        assert_eq!(drain(&app, Duration::zero()).await.done, 1);
        assert_eq!(sb.notifications_sent(), sent + 1, "the echo was sent");
        tokio::time::sleep(StdDuration::from_millis(500)).await;
        let v = view(&app, portal).await;
        assert_eq!(v["ticket"]["status"], "In Progress");
        assert_eq!(v["ticket"]["psa_status"], "In Progress");

        // Wrong, foreign and replayed deliveries are refused.
        let body = sb.notification_body("Ticket - Customer replied", ext);
        let wrong = format!("/webhooks/syncro/{id}/{}x", &secret[..secret.len() - 1]);
        assert_eq!(deliver(&app, &wrong, &body).await, 401);
        let foreign = vault.webhook_secret(app.b.id.0, id);
        assert_eq!(
            deliver(&app, &format!("/webhooks/syncro/{id}/{foreign}"), &body).await,
            401
        );
        assert_eq!(
            deliver(&app, &format!("/webhooks/syncro/{id}"), &body).await,
            404,
            "no token, no route"
        );
        assert_eq!(deliver(&app, &path, &body).await, 200);
        assert_eq!(deliver(&app, &path, &body).await, 401, "replay");
        assert_eq!(
            deliver(&app, &format!("/webhooks/syncro/999999/{secret}"), &body).await,
            404
        );
        let logs = logs();
        assert!(logs.contains("webhook refused"), "refusals are logged");
        assert!(
            logs.contains(&format!("/webhooks/syncro/{id}/***")),
            "requests are logged with the token masked"
        );
        assert!(!logs.contains(&secret), "the token is never logged");
    }
}
