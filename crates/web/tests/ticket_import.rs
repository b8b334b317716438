#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Tickets PSA → portal from the ConnectWise sandbox, on SQLite and (with
//! TEST_DATABASE_URL) PostgreSQL: tickets and notes imported once and followed as they
//! change (notes re-read only for changed tickets), scope by board and status, tickets
//! deleted upstream kept and stamped, a ticket the portal created linked rather than
//! imported again (and its notes not duplicated) when the sync sees it before the outbox
//! committed, a status changed on both sides held as a conflict, and Clear & Resync
//! rebuilding the same tickets.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{Duration, Utc};
use common::*;
use mspbridge_domain::sync::{RecordType, RunResult};
use reqwest::Method;
use serde_json::{Value, json};

async fn set_options(app: &TestApp, cw: i64, extra: Value) {
    let mut body = json!({"interval_minutes": 5, "tickets": true, "ticket_defaults": {
        "board": "Service Desk", "status": "New", "priority": "Priority 3 - Normal Response"}});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (s, v) = app
        .call(
            Method::PUT,
            &format!("/api/v1/integrations/{cw}/options"),
            &app.a.owner_token,
            Some(body),
        )
        .await;
    assert_eq!(s, 200, "{v}");
}

async fn sync(app: &TestApp) -> mspbridge_sync::RunSummary {
    sync_at(app, Duration::zero()).await
}

async fn sync_at(app: &TestApp, ahead: Duration) -> mspbridge_sync::RunSummary {
    let cw = app
        .db
        .store
        .list_integrations(app.a.id)
        .await
        .unwrap()
        .into_iter()
        .next()
        .unwrap()
        .id;
    common::sync_at(app, cw.0, ahead).await
}

fn ticket_counts(run: &mspbridge_sync::RunSummary) -> mspbridge_domain::sync::Counts {
    run.counts
        .get(&RecordType::Tickets)
        .copied()
        .unwrap_or_default()
}

/// Every portal ticket by its ConnectWise id: (summary, status, board, description,
/// closed, notes as (body, internal, author)).
async fn snapshot(app: &TestApp) -> BTreeMap<String, Value> {
    without_ids(&common::snapshot(app).await)
}

/// The portal ticket imported from ConnectWise ticket `ext`.
async fn portal_ticket(app: &TestApp, ext: i64) -> Value {
    for t in tickets(app).await {
        let v = view(app, t["id"].as_i64().unwrap()).await;
        if v["external_id"]
            .as_str()
            .and_then(|s| s.parse::<i64>().ok())
            == Some(ext)
        {
            return v;
        }
    }
    panic!("ConnectWise ticket {ext} is not in the portal");
}

fn note_requests(app: &TestApp, from: usize) -> usize {
    app.sandbox.seen()[from..]
        .iter()
        .filter(|r| r.path.ends_with("/notes"))
        .count()
}

#[tokio::test]
async fn connectwise_tickets_and_notes_import_once_and_follow_changes() {
    for app in TestApp::each().await {
        let cw = imported(&app).await;
        set_options(&app, cw, json!({})).await;
        let before = app.sandbox.seen().len();
        let first = sync(&app).await;
        let c = ticket_counts(&first);
        // The tickets of every imported company (inactive companies are skipped).
        let linked: std::collections::HashSet<String> = app
            .get(
                &format!("/api/v1/integrations/{cw}/companies"),
                &app.a.owner_token,
            )
            .await
            .1
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| !c["linked_company_id"].is_null())
            .map(|c| c["external_id"].as_str().unwrap().to_string())
            .collect();
        let expected = app.sandbox.with_data(|d| {
            d.tickets
                .iter()
                .filter(|t| {
                    t.company
                        .as_ref()
                        .is_some_and(|c| linked.contains(&c.id.to_string()))
                })
                .count()
        });
        assert!(expected > 10, "the seed has tickets: {expected}");
        assert_eq!(c.created as usize, expected, "{c:?}");
        assert_eq!(c.seen, c.created + c.skipped, "{c:?}");
        assert!(c.add_up());
        // One notes request per imported ticket, none for the skipped ones.
        assert_eq!(note_requests(&app, before), expected);
        let snap = snapshot(&app).await;
        assert_eq!(snap.len(), expected);
        // Owners are linked to their staff users (those imported as technicians).
        assert!(
            tickets(&app)
                .await
                .iter()
                .any(|t| t["assignee_id"].is_i64())
        );

        // A ticket as ConnectWise has it: description from the first discussion note (not
        // kept as a note), the other notes with their visibility and author.
        let sample = app.sandbox.with_data(|d| {
            d.tickets
                .iter()
                .find(|t| {
                    t.company
                        .as_ref()
                        .is_some_and(|c| linked.contains(&c.id.to_string()))
                })
                .cloned()
                .unwrap()
        });
        let v = portal_ticket(&app, sample.id).await;
        let t = &v["ticket"];
        assert_eq!(t["summary"], sample.summary.as_str());
        assert_eq!(t["status"], sample.status.name.clone().unwrap().as_str());
        assert_eq!(t["psa_status"], t["status"]);
        assert_eq!(t["board"], sample.board.name.clone().unwrap().as_str());
        assert!(t["ticket_type"].is_string());
        assert_eq!(t["closed"], sample.closed_flag);
        assert!(
            t["description"]
                .as_str()
                .unwrap()
                .starts_with("Reported by the customer"),
            "{t}"
        );
        let notes = v["notes"].as_array().unwrap();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert_eq!(notes[0]["internal"], true);
        assert_eq!(notes[1]["internal"], false);
        assert_eq!(notes[0]["origin"], "import");
        assert!(notes[0]["author"].as_str().unwrap().starts_with("Member "));

        // Nothing changed: nothing written, no notes read.
        let before = app.sandbox.seen().len();
        let again = ticket_counts(&sync(&app).await);
        assert_eq!((again.created, again.updated), (0, 0), "{again:?}");
        assert_eq!(again.unchanged as usize, expected);
        assert_eq!(note_requests(&app, before), 0);
        assert_eq!(snapshot(&app).await, snap);

        // A technician adds a note and another ticket's status moves: exactly those two
        // tickets are read again and updated; the note is added once.
        let other = app.sandbox.with_data(|d| {
            d.tickets
                .iter()
                .filter(|t| {
                    t.company
                        .as_ref()
                        .is_some_and(|c| linked.contains(&c.id.to_string()))
                })
                .find(|t| t.id != sample.id && t.status.name.as_deref() != Some("Completed"))
                .unwrap()
                .id
        });
        app.sandbox
            .add_note(sample.id, "Replaced the toner; printing again.", false)
            .unwrap();
        assert!(app.sandbox.set_ticket_status(other, "Completed"));
        let before = app.sandbox.seen().len();
        for _ in 0..2 {
            let c = ticket_counts(&sync_at(&app, Duration::seconds(1)).await);
            assert!(c.add_up(), "{c:?}");
        }
        assert_eq!(
            note_requests(&app, before),
            2,
            "only the two changed tickets"
        );
        let v = portal_ticket(&app, sample.id).await;
        let bodies: Vec<&str> = v["notes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["body"].as_str().unwrap())
            .collect();
        assert_eq!(bodies.len(), 3, "{bodies:?}");
        assert_eq!(bodies[2], "Replaced the toner; printing again.");
        let o = portal_ticket(&app, other).await;
        assert_eq!(o["ticket"]["status"], "Completed");
        assert_eq!(o["ticket"]["closed"], true);
        assert!(o["ticket"]["closed_at"].is_string());

        // Deleted in ConnectWise: kept in the portal, stamped by the next complete pass.
        assert!(app.sandbox.delete_ticket(other));
        let c = ticket_counts(&sync_at(&app, Duration::seconds(2)).await);
        assert_eq!(c.deactivated, 1, "{c:?}");
        let o = view(&app, o["ticket"]["id"].as_i64().unwrap()).await;
        assert!(o["ticket"]["removed_upstream_at"].is_string(), "{o}");
        assert_eq!(tickets(&app).await.len(), expected);

        // Tenant B sees none of them.
        let (s, v) = app.get("/api/v1/tickets", &app.b.owner_token).await;
        assert_eq!((s, v.as_array().unwrap().len()), (200, 0));
    }
}

#[tokio::test]
async fn ticket_scope_by_board_and_excluded_status() {
    for app in TestApp::each().await {
        let cw = imported(&app).await;
        set_options(
            &app,
            cw,
            json!({"ticket_boards": ["service desk"], "ticket_excluded_statuses": ["Completed"]}),
        )
        .await;
        sync(&app).await;
        let all = tickets(&app).await;
        assert!(!all.is_empty());
        for t in &all {
            assert_eq!(t["board"], "Service Desk", "{t}");
            assert_ne!(t["status"], "Completed", "{t}");
        }
        // Bad scope names are refused with the field named.
        let (s, v) = app
            .call(
                Method::PUT,
                &format!("/api/v1/integrations/{cw}/options"),
                &app.a.owner_token,
                Some(json!({"interval_minutes": 5, "ticket_boards": [" "]})),
            )
            .await;
        assert_eq!(s, 422, "{v}");
        assert_eq!(v["field"], "options.ticket_boards[0]", "{v}");
    }
}

#[tokio::test]
async fn a_portal_ticket_seen_by_the_sync_before_its_outbox_commit_is_linked_not_duplicated() {
    for app in TestApp::each().await {
        let cw = imported(&app).await;
        set_options(&app, cw, json!({})).await;
        sync(&app).await;
        let company = tickets(&app).await[0]["company_id"].as_i64().unwrap();
        let (s, created) = app
            .post(
                "/api/v1/tickets",
                &app.a.owner_token,
                json!({"company_id": company, "summary": "VPN drops every hour", "description": "Since the update."}),
            )
            .await;
        assert_eq!(s, 201, "{created}");
        let id = created["ticket"]["id"].as_i64().unwrap();
        let (s, v) = app
            .post(
                &format!("/api/v1/tickets/{id}/notes"),
                &app.a.owner_token,
                json!({"text": "Happens on Wi-Fi only.", "internal": false}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        let engine =
            |ahead| full_pass_engine(&app).with_clock(Arc::new(move || Utc::now() + ahead));
        // ConnectWise applies the create but the answer is lost: the portal has no link yet.
        app.sandbox.lose_write_answers(1);
        let d = engine(Duration::zero()).drain_outbox().await.unwrap();
        assert_eq!(d.retrying, 2, "{d:?}");
        // The sync sees the new ConnectWise ticket first: it carries our marker, so it is
        // linked to the portal ticket, not imported as another.
        let count = tickets(&app).await.len();
        let run = sync_at(&app, Duration::seconds(1)).await;
        assert_eq!(tickets(&app).await.len(), count, "{run:?}");
        let v = view(&app, id).await;
        assert!(v["external_id"].is_string(), "linked: {v}");
        // Now the note is written but its answer is lost too; the next sync finds it
        // in ConnectWise and links the portal's own note instead of adding it again.
        app.sandbox.lose_write_answers(1);
        let d = engine(Duration::minutes(1)).drain_outbox().await.unwrap();
        assert_eq!(d.retrying, 1, "{d:?}");
        sync_at(&app, Duration::minutes(2)).await;
        let d = engine(Duration::minutes(5)).drain_outbox().await.unwrap();
        assert_eq!(d.done, 1, "{d:?}");
        sync_at(&app, Duration::minutes(6)).await;
        let v = view(&app, id).await;
        let notes = v["notes"].as_array().unwrap();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(notes[0]["origin"], "portal");
        assert_eq!(v["ticket"]["description"], "Since the update.");
        let ext: i64 = v["external_id"].as_str().unwrap().parse().unwrap();
        let in_cw = app.sandbox.with_data(|d| {
            (
                d.tickets
                    .iter()
                    .filter(|t| t.summary == "VPN drops every hour")
                    .count(),
                d.notes.iter().filter(|n| n.ticket_id == ext).count(),
            )
        });
        assert_eq!(in_cw, (1, 2), "one ticket; its description and one note");
        assert!(
            v["psa_writes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|w| w["state"] == "done"),
            "{v}"
        );
    }
}

#[tokio::test]
async fn a_status_changed_on_both_sides_is_held_as_a_conflict_until_retried() {
    for app in TestApp::each().await {
        let cw = imported(&app).await;
        set_options(&app, cw, json!({})).await;
        sync(&app).await;
        let ext = app.sandbox.with_data(|d| {
            d.tickets
                .iter()
                .find(|t| t.status.name.as_deref() == Some("New"))
                .map(|t| t.id)
                .unwrap()
        });
        let v = portal_ticket(&app, ext).await;
        let id = v["ticket"]["id"].as_i64().unwrap();
        // The portal moves it to In Progress while a technician sets Waiting on Client.
        let (s, v) = app
            .call(
                Method::PATCH,
                &format!("/api/v1/tickets/{id}"),
                &app.a.owner_token,
                Some(json!({"status": "In Progress"})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert!(app.sandbox.set_ticket_status(ext, "Waiting on Client"));
        let run = sync_at(&app, Duration::seconds(1)).await;
        let v = view(&app, id).await;
        assert_eq!(
            v["ticket"]["status"], "In Progress",
            "the waiting portal change owns it"
        );
        assert_eq!(v["ticket"]["psa_status"], "Waiting on Client");
        let (_, events) = app
            .get(
                &format!(
                    "/api/v1/runs/{}?level=warning&record_type=tickets",
                    run.run_id
                ),
                &app.a.owner_token,
            )
            .await;
        assert!(
            events.to_string().contains("conflict on ticket"),
            "{events}"
        );
        // The write is refused by the optimistic check: ConnectWise keeps its status.
        let d = full_pass_engine(&app).drain_outbox().await.unwrap();
        assert_eq!(d.failed, 1, "{d:?}");
        let status = |app: &TestApp| {
            app.sandbox.with_data(|d| {
                d.tickets
                    .iter()
                    .find(|t| t.id == ext)
                    .and_then(|t| t.status.name.clone())
                    .unwrap()
            })
        };
        assert_eq!(status(&app), "Waiting on Client");
        let v = view(&app, id).await;
        let w = &v["psa_writes"][0];
        assert_eq!(w["state"], "failed");
        assert!(
            w["last_error"].as_str().unwrap().starts_with("conflict:"),
            "{w}"
        );
        // Clear & Resync is refused while the change waits.
        let (s, body) = app
            .post(
                &format!("/api/v1/integrations/{cw}/tickets/clear-resync"),
                &app.a.owner_token,
                json!({}),
            )
            .await;
        assert_eq!(s, 409, "{body}");
        // The admin decides: Retry writes the portal's status anyway.
        let (s, body) = app
            .post(
                &format!("/api/v1/outbox/{}/retry", w["id"]),
                &app.a.owner_token,
                json!({}),
            )
            .await;
        assert_eq!(s, 200, "{body}");
        let d = full_pass_engine(&app).drain_outbox().await.unwrap();
        assert_eq!(d.done, 1, "{d:?}");
        assert_eq!(status(&app), "In Progress");
        sync_at(&app, Duration::seconds(2)).await;
        let v = view(&app, id).await;
        assert_eq!(v["ticket"]["status"], "In Progress");
        assert_eq!(v["ticket"]["psa_status"], "In Progress");
        // A later portal change made against that status goes straight through.
        let (s, _) = app
            .call(
                Method::PATCH,
                &format!("/api/v1/tickets/{id}"),
                &app.a.owner_token,
                Some(json!({"status": "Completed", "closed": true})),
            )
            .await;
        assert_eq!(s, 200);
        let d = full_pass_engine(&app).drain_outbox().await.unwrap();
        assert_eq!(d.done, 1, "{d:?}");
        assert_eq!(status(&app), "Completed");
    }
}

#[tokio::test]
async fn clear_and_resync_rebuilds_the_same_tickets() {
    for app in TestApp::each().await {
        let cw = imported(&app).await;
        set_options(&app, cw, json!({})).await;
        sync(&app).await;
        let first = tickets(&app).await[0]["id"].as_i64().unwrap();
        app.post(
            &format!("/api/v1/tickets/{first}/notes"),
            &app.a.owner_token,
            json!({"text": "Written in the portal.", "internal": true}),
        )
        .await;
        full_pass_engine(&app).drain_outbox().await.unwrap();
        let before = snapshot(&app).await;
        // Another tenant's integration is not found.
        let (s, _) = app
            .post(
                &format!("/api/v1/integrations/{cw}/tickets/clear-resync"),
                &app.b.owner_token,
                json!({}),
            )
            .await;
        assert_eq!(s, 404);
        let (s, v) = app
            .post(
                &format!("/api/v1/integrations/{cw}/tickets/clear-resync"),
                &app.a.owner_token,
                json!({}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["deleted"].as_u64().unwrap() as usize, before.len());
        assert!(tickets(&app).await.is_empty());
        let run = sync_at(&app, Duration::seconds(1)).await;
        assert_eq!(ticket_counts(&run).created as usize, before.len());
        assert_eq!(
            snapshot(&app).await,
            before
                .clone()
                .into_iter()
                .map(|(k, mut v)| {
                    // The portal's own note comes back as an imported one, by the API member.
                    for n in v[5].as_array_mut().unwrap() {
                        if n[0] == "Written in the portal." {
                            n[2] = json!("mspbridge API");
                        }
                    }
                    (k, v)
                })
                .collect::<BTreeMap<_, _>>()
        );
    }
}

#[tokio::test]
async fn a_registered_callback_brings_a_technicians_change_within_seconds_and_our_own_writes_do_not_call_back()
 {
    for db in mspbridge_store::test_support::all().await.unwrap() {
        let app = TestApp::start_with(db, true).await;
        let cw = imported(&app).await;
        let (s, v) = app
            .call(
                Method::PUT,
                &format!("/api/v1/integrations/{cw}/options"),
                &app.a.owner_token,
                Some(json!({"interval_minutes": 5, "tickets": true})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert!(
            v["webhook"].as_str().unwrap().starts_with("registered: "),
            "{v}"
        );
        // Saving again does not register a second callback.
        app.call(
            Method::PUT,
            &format!("/api/v1/integrations/{cw}/options"),
            &app.a.owner_token,
            Some(json!({"interval_minutes": 5, "tickets": true})),
        )
        .await;
        let callbacks = app.sandbox.with_data(|d| d.callbacks.clone());
        assert_eq!(callbacks.len(), 1, "{callbacks:?}");
        assert!(callbacks[0].is_self_suppressed_flag);
        assert_eq!(
            callbacks[0].url,
            format!("{}/webhooks/connectwise/{cw}", app.base)
        );
        sync(&app).await;
        let ext = app.sandbox.with_data(|d| {
            d.tickets
                .iter()
                .find(|t| t.status.name.as_deref() == Some("New"))
                .map(|t| t.id)
                .unwrap()
        });
        let id = portal_ticket(&app, ext).await["ticket"]["id"]
            .as_i64()
            .unwrap();
        let writes_before = app
            .db
            .store
            .list_outbox(app.a.id, None, 10)
            .await
            .unwrap()
            .len();
        // A technician completes it in ConnectWise: the callback reaches the portal.
        assert!(app.sandbox.set_ticket_status(ext, "Completed"));
        let mut status = Value::Null;
        for _ in 0..100 {
            status = view(&app, id).await["ticket"]["status"].clone();
            if status == "Completed" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(
            status, "Completed",
            "applied from the callback, without a sync run"
        );
        assert_eq!(app.sandbox.callbacks_sent(), 1);
        // Our own write does not call back (self-suppressed).
        let (s, _) = app
            .call(
                Method::PATCH,
                &format!("/api/v1/tickets/{id}"),
                &app.a.owner_token,
                Some(json!({"status": "In Progress"})),
            )
            .await;
        assert_eq!(s, 200);
        let d = full_pass_engine(&app).drain_outbox().await.unwrap();
        assert_eq!(d.done, 1, "{d:?}");
        assert_eq!(
            app.sandbox.callbacks_sent(),
            1,
            "no callback for our own write"
        );
        assert!(
            app.db
                .store
                .list_outbox(app.a.id, None, 10)
                .await
                .unwrap()
                .len()
                > writes_before
        );
        // A technician's note calls back too (its sync brings the note).
        app.sandbox
            .add_note(ext, "Customer confirmed it works.", false)
            .unwrap();
        assert_eq!(app.sandbox.callbacks_sent(), 2);
    }
}

#[tokio::test]
async fn a_first_run_imports_companies_and_their_tickets_together() {
    for app in TestApp::each().await {
        let id = app.connect_cw(&app.a.owner_token).await["id"]
            .as_i64()
            .unwrap();
        set_options(&app, id, json!({})).await;
        let run = full_pass_engine(&app).tick().await.unwrap().expect("due");
        assert_eq!(run.result, RunResult::Success, "{run:?}");
        let c = ticket_counts(&run);
        assert_eq!(c.failed, 0, "{c:?}");
        assert!(c.created > 10, "{c:?}");
        assert_eq!(tickets(&app).await.len() as u64, c.created);
        let v = view(&app, tickets(&app).await[0]["id"].as_i64().unwrap()).await;
        assert_eq!(v["notes"].as_array().unwrap().len(), 2, "{v}");
    }
}

#[tokio::test]
async fn a_callback_does_not_overwrite_a_portal_status_change_still_waiting() {
    for db in mspbridge_store::test_support::all().await.unwrap() {
        let app = TestApp::start_with(db, true).await;
        let cw = imported(&app).await;
        set_options(&app, cw, json!({})).await;
        sync(&app).await;
        let ext = app.sandbox.with_data(|d| {
            d.tickets
                .iter()
                .find(|t| t.status.name.as_deref() == Some("New"))
                .map(|t| t.id)
                .unwrap()
        });
        let id = portal_ticket(&app, ext).await["ticket"]["id"]
            .as_i64()
            .unwrap();
        let (s, _) = app
            .call(
                Method::PATCH,
                &format!("/api/v1/tickets/{id}"),
                &app.a.owner_token,
                Some(json!({"status": "In Progress"})),
            )
            .await;
        assert_eq!(s, 200);
        assert!(app.sandbox.set_ticket_status(ext, "Waiting on Client"));
        let mut v = Value::Null;
        for _ in 0..100 {
            v = view(&app, id).await;
            if v["ticket"]["psa_status"] == "Waiting on Client" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(v["ticket"]["psa_status"], "Waiting on Client", "{v}");
        assert_eq!(
            v["ticket"]["status"], "In Progress",
            "the waiting change owns it"
        );
    }
}

#[tokio::test]
async fn a_ticket_whose_notes_fail_in_a_full_pass_is_retried_not_stamped_removed() {
    for app in TestApp::each().await {
        let cw = imported(&app).await;
        set_options(&app, cw, json!({})).await;
        sync(&app).await;
        let snap = snapshot(&app).await;
        let ext: i64 = snap
            .iter()
            .find(|(_, t)| t[4] == false && t[1] != "In Progress")
            .map(|(k, _)| k.parse().unwrap())
            .expect("an open ticket");
        // The ticket changes, and reading its notes fails this run (every run of these
        // tests is a full pass).
        assert!(app.sandbox.set_ticket_status(ext, "In Progress"));
        app.sandbox.faults.push(
            &format!("/service/tickets/{ext}/notes"),
            mspbridge_sandbox::Fault::Status {
                status: 404,
                body: r#"{"code":"NotFound","message":"gone for a moment"}"#.into(),
                retry_after: None,
            },
        );
        let i = mspbridge_domain::IntegrationId(cw);
        app.db
            .store
            .request_sync(app.a.id, i, Utc::now(), Duration::zero())
            .await
            .unwrap();
        let run = full_pass_engine(&app).tick().await.unwrap().expect("due");
        assert_eq!(run.result, RunResult::Partial, "{run:?}");
        let c = ticket_counts(&run);
        assert_eq!((c.failed, c.deactivated), (1, 0), "{c:?}");
        let t = portal_ticket(&app, ext).await;
        assert!(t["ticket"]["removed_upstream_at"].is_null(), "{t}");
        // The next run reads it.
        sync_at(&app, Duration::minutes(1)).await;
        let t = portal_ticket(&app, ext).await;
        assert_eq!(t["ticket"]["status"], "In Progress", "{t}");
    }
}
