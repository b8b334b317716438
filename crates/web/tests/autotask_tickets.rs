#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Tickets both ways with the Autotask sandbox, on SQLite and (with TEST_DATABASE_URL)
//! PostgreSQL: tickets and their notes imported once (picklist values as the tenant's
//! labels, the queue as board, notes published internally as internal, closed once
//! Autotask stamps `completedDate`), a portal ticket created with `POST /Tickets` carrying
//! our marker in `externalID`, notes through the parent (`POST /Tickets/{id}/Notes`), a
//! status change as `PATCH /Tickets` with the id in the body, lost answers retried without
//! duplicates, a status the tenant lacks refused with the reason, a status changed on both
//! sides held as a conflict, Clear & Resync rebuilding the same tickets; and Autotask's
//! ticket webhook registered through `TicketWebhooks` (fields, the API user excluded, once
//! however often the options are saved), a technician's change applied within seconds,
//! no echo of our own writes, and forged, replayed and other-tenant deliveries refused.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration as StdDuration;

use chrono::Duration;
use common::*;
use mspbridge_providers::ProviderConfig;
use mspbridge_providers::autotask::client::AutotaskSettings;
use mspbridge_providers::autotask::sandbox::*;
use mspbridge_providers::autotask::webhooks::sign;
use mspbridge_providers::autotask::wire::Ticket;
use mspbridge_sandbox::{SandboxHandle, Seed, loopback_listener};
use serde_json::{Value, json};

struct Autotask {
    sb: AutotaskSandbox,
    _handle: SandboxHandle,
}

async fn sandbox() -> (Autotask, ProviderConfig) {
    let sb = AutotaskSandbox::new(Seed::Small);
    let handle = sb.serve(loopback_listener().await.unwrap()).unwrap();
    let config = ProviderConfig {
        autotask: AutotaskSettings {
            zone_lookup_url: AutotaskSandbox::zone_lookup_url(&handle),
            backoff_floor: StdDuration::from_millis(200),
            ..Default::default()
        },
        ..Default::default()
    };
    (
        Autotask {
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
            json!({"provider": "autotask", "credentials": {
                "username": DEMO_USERNAME,
                "secret": DEMO_SECRET,
                "integration_code": DEMO_INTEGRATION_CODE,
            }}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    v["id"].as_i64().unwrap()
}

async fn set_options(app: &TestApp, id: i64) -> Value {
    let (s, v) = put_options(
        app,
        id,
        json!({"interval_minutes": 5, "tickets": true, "ticket_defaults": {
            "board": "Level II Support", "status": "New", "priority": "High",
            "ticket_type": "Incident"}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v
}

fn ticket(sb: &AutotaskSandbox, id: i64) -> Ticket {
    sb.with_data(|d| d.tickets.iter().find(|t| t.id == id).cloned().unwrap())
}

fn label(list: &[(i64, &str, bool)], v: Option<i64>) -> Value {
    list.iter()
        .find(|(x, _, _)| Some(*x) == v)
        .map(|(_, l, _)| json!(l))
        .unwrap_or(Value::Null)
}

/// What the portal should hold: Autotask's tickets of the active companies.
fn expected(sb: &AutotaskSandbox) -> BTreeMap<String, Value> {
    sb.with_data(|d| {
        let active: HashSet<i64> = d
            .companies
            .iter()
            .filter(|c| c.is_active)
            .map(|c| c.id)
            .collect();
        let names: HashMap<i64, String> = d
            .resources
            .iter()
            .map(|r| (r.id, format!("{} {}", r.first_name, r.last_name)))
            .collect();
        d.tickets
            .iter()
            .filter(|t| t.company_id.is_some_and(|c| active.contains(&c)))
            .map(|t| {
                let notes: Vec<Value> = d
                    .notes
                    .iter()
                    .filter(|n| n.ticket_id == t.id)
                    .map(|n| {
                        json!([
                            n.description,
                            n.publish != Some(1),
                            names[&n.creator_resource_id.unwrap()]
                        ])
                    })
                    .collect();
                (
                    t.id.to_string(),
                    json!([
                        t.title,
                        label(&TICKET_STATUSES, t.status),
                        label(&QUEUES, t.queue_id),
                        t.description,
                        t.completed_date.is_some(),
                        notes
                    ]),
                )
            })
            .collect()
    })
}

fn note_queries(sb: &AutotaskSandbox, from: usize) -> usize {
    sb.seen()[from..]
        .iter()
        .filter(|r| r.path == "/TicketNotes/query")
        .count()
}

#[tokio::test]
async fn autotask_tickets_import_and_portal_writes_round_trip_without_duplicates() {
    for db in mspbridge_store::test_support::all().await.unwrap() {
        let (autotask, config) = sandbox().await;
        let app = TestApp::start_configured(db, false, config).await;
        let sb = &autotask.sb;
        let id = connect(&app).await;
        set_options(&app, id).await;
        let want = expected(sb);
        assert!(want.len() >= 10, "the seed has tickets: {}", want.len());
        let before = sb.seen().len();
        sync(&app, id).await;
        let snap = snapshot(&app).await;
        assert_eq!(without_ids(&snap), want, "{}", app.backend());
        assert!(want.values().any(|t| t[4] == true), "a completed ticket");
        assert!(
            want.values()
                .any(|t| t[5].as_array().unwrap().iter().any(|n| n[1] == true)),
            "an internal note"
        );
        assert_eq!(note_queries(sb, before), 1, "one notes query for the page");
        // Nothing changed: no note is read again, nothing added.
        let before = sb.seen().len();
        sync(&app, id).await;
        assert_eq!(note_queries(sb, before), 0);
        assert_eq!(snapshot(&app).await, snap);

        // A ticket raised in the portal: created once although the answer is lost, with
        // the defaults as the tenant's picklist values and our marker in externalID.
        let (any_ext, any) = snap.iter().next().unwrap();
        let company = view(&app, any[6].as_i64().unwrap()).await["ticket"]["company_id"]
            .as_i64()
            .unwrap();
        let at_company = ticket(sb, any_ext.parse().unwrap()).company_id;
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
        assert_eq!(
            count(),
            n_before + 1,
            "found by externalID, not created again"
        );
        let mine = sb.with_data(|d| d.tickets.last().cloned().unwrap());
        assert_eq!(mine.title, "Scanner jams");
        assert_eq!(mine.description.as_deref(), Some("Since Monday."));
        assert_eq!(mine.company_id, at_company);
        assert_eq!(
            (mine.queue_id, mine.status, mine.priority),
            (Some(9), Some(1), Some(1)),
            "Level II Support, New, High"
        );
        assert_eq!(mine.ticket_type, Some(2), "Incident, by its picklist value");
        assert!(
            mine.external_id.as_deref().unwrap().starts_with("msb-"),
            "{:?}",
            mine.external_id
        );
        assert_eq!(view(&app, portal).await["external_id"], mine.id.to_string());

        // Notes through the parent ticket, one internal; the first answer is lost again.
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
        let notes = sb.with_data(|d| {
            d.notes
                .iter()
                .filter(|n| n.ticket_id == mine.id)
                .map(|n| (n.title.clone().unwrap(), n.description.clone(), n.publish))
                .collect::<Vec<_>>()
        });
        assert_eq!(
            notes,
            vec![
                (
                    "Update".to_string(),
                    "Tried a restart.".to_string(),
                    Some(2)
                ),
                ("Update".to_string(), "We are on it.".to_string(), Some(1))
            ]
        );

        // A status change is a PATCH on the collection with the id in the body.
        assert_eq!(set_status(&app, portal, "In Progress").await, 200);
        assert_eq!(drain(&app, Duration::zero()).await.done, 1);
        assert_eq!(count(), n_before + 1);
        assert_eq!(ticket(sb, mine.id).status, Some(8));
        assert!(
            sb.seen().iter().any(|r| r.method == "PATCH"
                && r.path == "/Tickets"
                && r.body.as_ref().is_some_and(|b| b["id"] == mine.id)),
            "PATCH /Tickets with the id in the body"
        );

        // A status the tenant does not have is refused with the reason, nothing sent.
        let patches = || {
            sb.seen()
                .iter()
                .filter(|r| r.method == "PATCH" && r.path == "/Tickets")
                .count()
        };
        let sent = patches();
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
                .contains("Autotask has no ticket status named 'Parked'"),
            "{refused}"
        );
        assert_eq!(patches(), sent, "never sent");
        let (s, v) = app
            .post(
                &format!("/api/v1/outbox/{}/discard", refused["id"]),
                &app.a.owner_token,
                json!({}),
            )
            .await;
        assert_eq!((s, v["state"].as_str()), (200, Some("discarded")), "{v}");
        assert_eq!(view(&app, portal).await["ticket"]["status"], "In Progress");

        // The sync sees our ticket and notes: linked, not imported again.
        sync(&app, id).await;
        let after = snapshot(&app).await;
        assert_eq!(after.len(), snap.len() + 1);
        let ours = &after[&mine.id.to_string()];
        assert_eq!(ours[1], "In Progress");
        assert_eq!(ours[2], "Level II Support");
        assert_eq!(ours[3], "Since Monday.");
        assert_eq!(ours[5].as_array().unwrap().len(), 2, "{ours}");

        // Both sides change the status: held as a conflict, not overwritten.
        assert_eq!(set_status(&app, portal, "Waiting Customer").await, 200);
        assert!(sb.set_ticket_status(mine.id, "On Hold"));
        let d = drain(&app, Duration::zero()).await;
        assert_eq!(d.failed, 1, "{d:?}");
        let v = view(&app, portal).await;
        let conflict = v["psa_writes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["state"] == "failed")
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
            Some(13),
            "Autotask's change stays"
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
        assert_eq!(ticket(sb, mine.id).status, Some(7));

        // Completing it in Autotask closes it in the portal.
        assert!(sb.set_ticket_status(mine.id, "Complete"));
        sync(&app, id).await;
        let v = view(&app, portal).await;
        assert_eq!(
            (
                v["ticket"]["status"].as_str(),
                v["ticket"]["closed"].as_bool()
            ),
            (Some("Complete"), Some(true))
        );

        // Clear & Resync rebuilds the same tickets (the portal's notes come back as
        // Autotask has them, by the API user).
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

async fn deliver(app: &TestApp, id: i64, body: &[u8], signature: Option<&str>) -> u16 {
    let mut req = app
        .http
        .post(format!("{}/webhooks/autotask/{id}", app.base))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(s) = signature {
        req = req.header("X-Hook-Signature", s);
    }
    req.send().await.unwrap().status().as_u16()
}

/// `POST …/deactivated` with `body`, signed with `signature`; the status.
async fn deactivated(app: &TestApp, id: &str, body: &[u8], signature: Option<&str>) -> u16 {
    let mut req = app
        .http
        .post(format!("{}/webhooks/autotask/{id}/deactivated", app.base))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(s) = signature {
        req = req.header("X-Hook-Signature", s);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn autotask_deactivation_notices_must_be_signed_are_rate_limited_and_logged_escaped() {
    for db in mspbridge_store::test_support::all().await.unwrap() {
        let (_autotask, config) = sandbox().await;
        let app = TestApp::start_configured(db, true, config).await;
        let id = connect(&app).await;
        let path_id = id.to_string();
        let secret = mspbridge_vault::Vault::new(&[9u8; 32]).webhook_secret(app.a.id.0, id);
        let run = mspbridge_vault::new_token("r").unwrap().0;
        let tag = |what: &str| format!("{what}-{}", &run[2..14]);
        let body =
            |guid: &str| serde_json::to_vec(&json!({"Guid": guid, "IsActive": false})).unwrap();

        // Unsigned, wrongly signed, another tenant's signature: 401, nothing logged.
        let unsigned = body(&tag("unsigned"));
        assert_eq!(deactivated(&app, &path_id, &unsigned, None).await, 401);
        let wrong = body(&tag("wrong"));
        let forged = sign(&format!("{secret}x"), &wrong);
        assert_eq!(
            deactivated(&app, &path_id, &wrong, Some(&forged)).await,
            401
        );
        let foreign = mspbridge_vault::Vault::new(&[9u8; 32]).webhook_secret(app.b.id.0, id);
        assert_eq!(
            deactivated(&app, &path_id, &wrong, Some(&sign(&foreign, &wrong))).await,
            401
        );
        // Only POST, and only for an Autotask integration that exists.
        let get = app
            .http
            .get(format!("{}/webhooks/autotask/{id}/deactivated", app.base))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(get, 405);
        let ghost = body(&tag("ghost"));
        assert_eq!(
            deactivated(&app, "999999", &ghost, Some(&sign(&secret, &ghost))).await,
            404
        );
        // An id carrying a newline never reaches the log raw.
        let injected = format!("1%0A{}", tag("INJECTED-PATH"));
        assert_eq!(deactivated(&app, &injected, &unsigned, None).await, 404);

        // Signed: accepted and logged once, its id escaped.
        let guid = format!("abc\n{}", tag("INJECTED-BODY"));
        let signed = body(&guid);
        assert_eq!(
            deactivated(&app, &path_id, &signed, Some(&sign(&secret, &signed))).await,
            204
        );
        // Another within the minute: refused (429), not logged.
        let again = body(&tag("again"));
        assert_eq!(
            deactivated(&app, &path_id, &again, Some(&sign(&secret, &again))).await,
            429
        );
        assert_eq!(
            deactivated(&app, &path_id, &signed, Some(&sign(&secret, &signed))).await,
            429
        );

        let logs = logs();
        let reported: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains(&tag("INJECTED-BODY")))
            .collect();
        assert_eq!(reported.len(), 1, "logged once: {reported:?}");
        assert!(
            reported[0].contains("Autotask reports the ticket webhook deactivated")
                && reported[0].contains(&format!("abc\\n{}", tag("INJECTED-BODY"))),
            "{}",
            reported[0]
        );
        for line in logs.lines() {
            for marker in ["INJECTED-BODY", "INJECTED-PATH"] {
                assert!(!line.starts_with(&tag(marker)), "a forged log line: {line}");
            }
        }
        // The request line is logged (debug), percent-encoded as it came.
        assert!(
            logs.lines()
                .filter(|l| l.contains(&tag("INJECTED-PATH")))
                .all(
                    |l| l.contains(&format!("1%0A{}", tag("INJECTED-PATH"))) && !l.contains("WARN")
                ),
            "the path's id is logged raw"
        );
        for what in ["unsigned", "wrong", "ghost", "again"] {
            assert!(!logs.contains(&tag(what)), "{what} was logged");
        }
        assert!(!logs.contains(&secret));
    }
}

#[tokio::test]
async fn autotask_webhooks_are_registered_once_bring_technician_changes_and_refuse_forgeries() {
    for db in mspbridge_store::test_support::all().await.unwrap() {
        let (autotask, config) = sandbox().await;
        let app = TestApp::start_configured(db, true, config).await;
        let sb = &autotask.sb;
        let id = connect(&app).await;
        let v = set_options(&app, id).await;
        let outcome = v["webhook"].as_str().unwrap();
        assert!(
            outcome.starts_with(&format!("registered: {}/webhooks/autotask/{id}", app.base)),
            "{outcome}"
        );
        let vault = mspbridge_vault::Vault::new(&[9u8; 32]);
        let secret = vault.webhook_secret(app.a.id.0, id);
        assert!(
            !outcome.contains(&secret),
            "the secret is not in the answer"
        );
        // Saved again: the same webhook, updated in place.
        set_options(&app, id).await;
        let hook = sb.with_data(|d| {
            assert_eq!(d.webhooks.len(), 1, "one webhook however often saved");
            assert_eq!(d.webhook_fields.len(), 6);
            assert_eq!(d.webhook_excluded.len(), 1, "the API user excluded once");
            d.webhooks[0].clone()
        });
        assert_eq!(hook.secret_key, secret);
        assert!(hook.is_active && hook.is_subscribed_to_update_events);
        assert_eq!(
            hook.deactivation_url,
            format!("{}/webhooks/autotask/{id}/deactivated", app.base)
        );
        // Ticket defaults are checked against the tenant's picklists.
        let v = options_refused(&app, id, json!({"interval_minutes": 5, "tickets": true, "ticket_defaults": {"board": "Level III"}}), "options.ticket_defaults.board").await;
        assert!(
            v["message"].as_str().unwrap().contains("Level I Support"),
            "the tenant's queues are listed: {v}"
        );

        sync(&app, id).await;
        let snap = snapshot(&app).await;
        let (ext, t) = snap.iter().find(|(_, t)| t[1] == "New").unwrap();
        let ext: i64 = ext.parse().unwrap();
        let portal = t[6].as_i64().unwrap();

        // A technician moves it in Autotask: the webhook brings it, no sync run.
        let sent = sb.deliveries();
        assert!(sb.set_ticket_status(ext, "Waiting Customer"));
        assert_eq!(sb.deliveries(), sent + 1);
        let mut status = Value::Null;
        for _ in 0..100 {
            status = view(&app, portal).await["ticket"]["status"].clone();
            if status == "Waiting Customer" {
                break;
            }
            tokio::time::sleep(StdDuration::from_millis(50)).await;
        }
        assert_eq!(status, "Waiting Customer");
        assert_eq!(view(&app, portal).await["stage"], "waiting");

        // Our own write is not called back: the API user is excluded.
        assert_eq!(set_status(&app, portal, "In Progress").await, 200);
        let sent = sb.deliveries();
        assert_eq!(drain(&app, Duration::zero()).await.done, 1);
        assert_eq!(ticket(sb, ext).status, Some(8));
        assert_eq!(sb.deliveries(), sent, "no echo of our own write");

        // Forged, foreign and replayed deliveries are refused.
        let body = sb.delivery_body(hook.id, "Update", ext);
        assert_eq!(deliver(&app, id, &body, None).await, 401, "unsigned");
        let forged = sign(&format!("{secret}x"), &body);
        assert_eq!(deliver(&app, id, &body, Some(&forged)).await, 401);
        let foreign = sign(&vault.webhook_secret(app.b.id.0, id), &body);
        assert_eq!(deliver(&app, id, &body, Some(&foreign)).await, 401);
        let mut tampered = body.clone();
        tampered.extend_from_slice(b" ");
        let good = sign(&secret, &body);
        assert_eq!(deliver(&app, id, &tampered, Some(&good)).await, 401);
        assert_eq!(deliver(&app, id, &body, Some(&good)).await, 200);
        assert_eq!(deliver(&app, id, &body, Some(&good)).await, 401, "replay");
        assert_eq!(deliver(&app, 999_999, &body, Some(&good)).await, 404);
        let notice = format!(r#"{{"WebhookID":{},"IsActive":false}}"#, hook.id);
        let gone = deactivated(
            &app,
            &id.to_string(),
            notice.as_bytes(),
            Some(&sign(&secret, notice.as_bytes())),
        )
        .await;
        assert_eq!(gone, 204);
        let logs = logs();
        assert!(logs.contains("webhook refused"), "refusals are logged");
        assert!(
            logs.contains("Autotask reports the ticket webhook deactivated"),
            "the deactivation is logged"
        );
        assert!(!logs.contains(&secret), "the secret is never logged");
    }
}
