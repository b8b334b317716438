#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Datto RMM through the portal, on SQLite and (with TEST_DATABASE_URL) PostgreSQL, with
//! the Autotask and Datto sandboxes: sites linked by their `autotaskCompanyId` to the
//! portal companies Autotask's sync linked (the reason in the log), devices of unmapped
//! sites kept out of staging, a type mapped with Auto-Sync imported by the next sync, an
//! ignored type leaving staging and coming back, Import Selected and Ignore Selected, an
//! unchanged sweep that changes nothing, a site removed upstream whose devices are stamped
//! removed only after a complete devices pass, the portal's Resolve written to Datto, an
//! alert resolved in Datto resolved in the portal, and another tenant seeing none of it.

mod common;

use common::*;
use mspbridge_domain::sync::RecordType;
use mspbridge_providers::autotask::sandbox as at;
use mspbridge_providers::datto_rmm::sandbox as datto;
use mspbridge_sandbox::Fault;
use serde_json::{Value, json};

async fn get(app: &TestApp, path: &str) -> Value {
    let (s, v) = app.get(path, &app.a.owner_token).await;
    assert_eq!(s, 200, "{path}: {v}");
    v
}

async fn put(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    app.call(reqwest::Method::PUT, path, &app.a.owner_token, Some(body))
        .await
}

async fn staged_total(app: &TestApp, id: i64) -> i64 {
    get(
        app,
        &format!("/api/v1/integrations/{id}/devices/staged?limit=1"),
    )
    .await["total"]
        .as_i64()
        .unwrap()
}

/// A portal page's HTML as tenant A's owner.
async fn html(app: &TestApp, path: &str) -> String {
    app.http
        .get(app.url(path))
        .bearer_auth(&app.a.owner_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The first two type mappings of integration `id` with staged devices.
async fn two_types_with_staged(app: &TestApp, id: i64) -> (Value, Value) {
    let mappings = get(
        app,
        &format!("/api/v1/integrations/{id}/device-type-mappings"),
    )
    .await;
    let with_staged: Vec<&Value> = mappings
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["staged"].as_i64().unwrap() > 0)
        .collect();
    assert!(with_staged.len() >= 2, "{mappings}");
    (with_staged[0].clone(), with_staged[1].clone())
}

/// A new tenant device type; its id.
async fn new_device_type(app: &TestApp, name: &str) -> i64 {
    let (s, t) = app
        .post(
            "/api/v1/device-types",
            &app.a.owner_token,
            json!({"name": name}),
        )
        .await;
    assert_eq!(s, 201, "{t}");
    t["id"].as_i64().unwrap()
}

/// `PUT` a type mapping of integration `id`.
async fn set_mapping(app: &TestApp, id: i64, mapping: &Value, body: Value) -> (u16, Value) {
    put(
        app,
        &format!(
            "/api/v1/integrations/{id}/device-type-mappings/{}",
            mapping["id"]
        ),
        body,
    )
    .await
}

/// Auto-Sync on `mapping` as `device_type`: the next sync imports its staged devices (the
/// count, checked against the run's updates and the staging total).
async fn auto_sync_imports(app: &TestApp, id: i64, mapping: &Value, device_type: i64) -> i64 {
    let (s, saved) = set_mapping(
        app,
        id,
        mapping,
        json!({"device_type_id": device_type, "auto_sync": true}),
    )
    .await;
    assert_eq!(s, 200, "{saved}");
    let before = staged_total(app, id).await;
    let auto = sync(app, id).await;
    let n = mapping["staged"].as_i64().unwrap();
    assert_eq!(
        auto.counts[&RecordType::Devices].updated as i64,
        n,
        "{}: {auto:?}",
        app.backend()
    );
    assert_eq!(staged_total(app, id).await, before - n);
    n
}

/// A vendor answering 503.
fn outage() -> Fault {
    Fault::Status {
        status: 503,
        body: "{}".into(),
        retry_after: None,
    }
}

/// Queues a sync of integration `id` now (run it with an engine's `tick`).
async fn queue_sync(app: &TestApp, id: i64) {
    app.db
        .store
        .request_sync(
            app.a.id,
            mspbridge_domain::IntegrationId(id),
            chrono::Utc::now(),
            chrono::Duration::zero(),
        )
        .await
        .unwrap();
}

fn changes(run: &mspbridge_sync::RunSummary, r: RecordType) -> (u64, u64, u64) {
    let c = &run.counts[&r];
    (c.created, c.updated, c.deactivated)
}

#[tokio::test]
async fn datto_sites_devices_and_alerts_reach_the_portal_by_mapping_type_and_sweep() {
    for db in mspbridge_store::test_support::all().await.unwrap() {
        let (v, config) = rmm_vendors().await;
        let app = TestApp::start_configured(db, false, config).await;
        let backend = app.backend();

        // Autotask first: its companies become portal companies linked to their ids.
        let autotask = connect_json(
            &app,
            json!({"provider": "autotask", "credentials": {
                "username": at::DEMO_USERNAME, "secret": at::DEMO_SECRET,
                "integration_code": at::DEMO_INTEGRATION_CODE}}),
        )
        .await;
        let (s, o) = put_options(
            &app,
            autotask,
            json!({"interval_minutes": 30, "contacts": false, "technicians": false, "skip_inactive_companies": false}),
        )
        .await;
        assert_eq!(s, 200, "{o}");
        sync(&app, autotask).await;

        let id = connect_json(
            &app,
            json!({"provider": "datto_rmm", "credentials": {
                "platform": datto::DEMO_PLATFORM, "api_key": datto::DEMO_API_KEY,
                "api_secret": datto::DEMO_API_SECRET}}),
        )
        .await;
        let (s, o) = put_options(
            &app,
            id,
            json!({"interval_minutes": 5, "companies": true, "devices": true, "alerts": true,
                   "contacts": false, "technicians": false}),
        )
        .await;
        assert_eq!(s, 200, "{o}");
        // The platform is locked once connected; Update API Key rotates the keys.
        let (s, e) = put(
            &app,
            &format!("/api/v1/integrations/{id}/credentials"),
            json!({"credentials": {"platform": "pinotage", "api_key": datto::DEMO_API_KEY, "api_secret": datto::DEMO_API_SECRET}}),
        )
        .await;
        assert_eq!(
            (s, e["field"].as_str()),
            (422, Some("credentials.platform")),
            "{backend}: {e}"
        );
        let (s, e) = put(
            &app,
            &format!("/api/v1/integrations/{id}/credentials"),
            json!({"credentials": {"platform": datto::DEMO_PLATFORM, "api_key": datto::DEMO_API_KEY, "api_secret": datto::DEMO_API_SECRET}}),
        )
        .await;
        assert_eq!(s, 200, "{backend}: {e}");
        let first = sync(&app, id).await;
        let data = v.datto.with_data(|d| d.clone());

        // Identity: every site naming an Autotask company is mapped to its portal company,
        // and the log says why; the others wait for the admin.
        let with_identity = data
            .sites
            .iter()
            .filter(|s| s.autotask_company_id.is_some())
            .count() as u64;
        let sites = &first.counts[&RecordType::Companies];
        assert_eq!(
            sites.created, 0,
            "{backend}: an RMM never creates companies"
        );
        assert_eq!(sites.linked, with_identity, "{backend}: {sites:?}");
        let run = get(&app, &format!("/api/v1/runs/{}", first.run_id)).await;
        let events = run["events"].as_array().unwrap();
        let why = events
            .iter()
            .filter(|e| {
                e["message"]
                    .as_str()
                    .unwrap()
                    .contains("same Autotask company id")
            })
            .count() as u64;
        assert_eq!(why, with_identity, "{backend}: {events:?}");
        assert!(
            events.iter().any(|e| e["message"]
                .as_str()
                .unwrap()
                .contains("sites are not mapped to a portal company yet")),
            "{backend}: the unmapped sites are named"
        );

        // Every device is read; only those of mapped sites are staged.
        let devices = data
            .devices
            .iter()
            .filter(|d| d.deleted != Some(true))
            .count() as u64;
        assert_eq!(first.counts[&RecordType::Devices].created, devices);
        let open = data
            .alerts
            .iter()
            .filter(|a| a.resolved != Some(true))
            .count() as u64;
        assert_eq!(first.counts[&RecordType::Alerts].created, open);
        let staged = get(
            &app,
            &format!("/api/v1/integrations/{id}/devices/staged?limit=500"),
        )
        .await;
        let rows = staged["devices"].as_array().unwrap();
        assert!(!rows.is_empty(), "{backend}");
        assert!(rows.iter().all(|d| d["company_id"].is_i64()), "{rows:?}");
        let mapped_sites: std::collections::HashSet<String> = data
            .sites
            .iter()
            .filter(|s| s.autotask_company_id.is_some())
            .filter_map(|s| s.uid.clone())
            .collect();
        let expected = data
            .devices
            .iter()
            .filter(|d| d.deleted != Some(true))
            .filter(|d| {
                d.site_uid
                    .as_ref()
                    .is_some_and(|s| mapped_sites.contains(s))
            })
            .count() as i64;
        assert_eq!(staged["total"].as_i64().unwrap(), expected, "{backend}");

        // Map Sites: an unmapped site named like a portal company is suggested (same name,
        // 100 %); Map saves the link, its devices are staged at once.
        let page = html(
            &app,
            &format!("/settings/integrations/{id}/devices?view=sites&filter=unmapped"),
        )
        .await;
        assert!(page.contains("100 % · same name"), "{backend}: {page}");
        let unmapped_named = data
            .sites
            .iter()
            .find(|s| {
                s.autotask_company_id.is_none()
                    && page.contains(&format!("value=\"{}\"", s.uid.clone().unwrap()))
            })
            .expect("an unmapped site with a suggestion");
        let company_of = |html: &str, site: &str| -> String {
            let at = html.find(&format!("value=\"{site}\"")).unwrap();
            let rest = &html[at..];
            let c =
                rest.find("name=\"company\" value=\"").unwrap() + "name=\"company\" value=\"".len();
            rest[c..].split('"').next().unwrap().to_string()
        };
        let site_uid = unmapped_named.uid.clone().unwrap();
        let company = company_of(&page, &site_uid);
        let staged_before = staged_total(&app, id).await;
        let r = app
            .http
            .post(app.url(&format!("/settings/integrations/{id}/devices")))
            .bearer_auth(&app.a.owner_token)
            .form(&[
                ("action", "map_site"),
                ("site", site_uid.as_str()),
                ("company", company.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 303, "{backend}");
        let site_devices = data
            .devices
            .iter()
            .filter(|d| d.deleted != Some(true) && d.site_uid.as_deref() == Some(site_uid.as_str()))
            .count() as i64;
        assert_eq!(
            staged_total(&app, id).await,
            staged_before + site_devices,
            "{backend}"
        );
        let queued = app
            .db
            .store
            .schedule(app.a.id, mspbridge_domain::IntegrationId(id))
            .await
            .unwrap()
            .unwrap();
        assert!(
            queued.manual_requested_at.is_some(),
            "{backend}: a device sync is queued"
        );

        // Map the first type with staged devices and turn Auto-Sync on: the next sync
        // imports them, as that device type.
        let (m1, m2) = two_types_with_staged(&app, id).await;
        let (m1, m2) = (&m1, &m2);
        let workstation = new_device_type(&app, "Workstation").await;
        let (s, e) = set_mapping(
            &app,
            id,
            m1,
            json!({"device_type_id": null, "auto_sync": true}),
        )
        .await;
        assert_eq!((s, e["field"].as_str()), (422, Some("auto_sync")), "{e}");
        let before = staged_total(&app, id).await;
        let n1 = auto_sync_imports(&app, id, m1, workstation).await;
        let imported = get(&app, "/api/v1/devices?limit=500").await;
        assert_eq!(imported["total"].as_i64().unwrap(), n1);
        assert!(
            imported["devices"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d["device_type"] == json!("Workstation")
                    && d["provider_type"] == m1["provider_type"])
        );

        // The company page lists its imported devices.
        let one = &imported["devices"][0];
        let company_page = html(&app, &format!("/companies/{}", one["company_id"])).await;
        assert!(
            company_page.contains("aria-label=\"Company devices\"")
                && company_page.contains(one["hostname"].as_str().unwrap()),
            "{backend}: the company page shows its devices"
        );

        // Ignore: the type's staged devices leave staging at once and come back.
        let n2 = m2["staged"].as_i64().unwrap();
        let path2 = format!(
            "/api/v1/integrations/{id}/device-type-mappings/{}",
            m2["id"]
        );
        let (s, _) = put(
            &app,
            &path2,
            json!({"device_type_id": null, "ignored": true}),
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(staged_total(&app, id).await, before - n1 - n2);
        let (s, _) = put(&app, &path2, json!({"device_type_id": workstation})).await;
        assert_eq!(s, 200);
        assert_eq!(staged_total(&app, id).await, before - n1);

        // Import Selected and Ignore Selected.
        let staged = get(
            &app,
            &format!("/api/v1/integrations/{id}/devices/staged?limit=500"),
        )
        .await;
        let of_m2: Vec<i64> = staged["devices"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                d["provider_type"] == m2["provider_type"] && d["category"] == m2["category"]
            })
            .map(|d| d["id"].as_i64().unwrap())
            .collect();
        assert!(!of_m2.is_empty());
        let (s, r) = app
            .post(
                &format!("/api/v1/integrations/{id}/devices/import"),
                &app.a.owner_token,
                json!({"devices": [of_m2[0]]}),
            )
            .await;
        assert_eq!((s, r["imported"].as_u64()), (200, Some(1)), "{r}");
        let other = staged["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_i64().unwrap())
            .find(|d| *d != of_m2[0])
            .unwrap();
        let (s, r) = app
            .post(
                &format!("/api/v1/integrations/{id}/devices/ignore"),
                &app.a.owner_token,
                json!({"devices": [other]}),
            )
            .await;
        assert_eq!((s, r["ignored"].as_u64()), (200, Some(1)), "{r}");
        assert_eq!(staged_total(&app, id).await, before - n1 - 2);

        // Nothing changed in Datto: a sweep changes nothing (and imports nothing more,
        // since only m1 auto-syncs and all of it is imported).
        let again = sync(&app, id).await;
        for r in [
            RecordType::Companies,
            RecordType::Devices,
            RecordType::Alerts,
        ] {
            assert_eq!(changes(&again, r), (0, 0, 0), "{backend} {r:?}: {again:?}");
        }

        // A site removed in Datto (with its devices): while the devices pass fails, no
        // device is stamped removed; the next complete pass stamps them.
        let gone_site = data
            .sites
            .iter()
            .find(|s| s.autotask_company_id.is_some())
            .unwrap()
            .uid
            .clone()
            .unwrap();
        let gone: Vec<String> = v.datto.with_data(|d| {
            d.sites
                .retain(|s| s.uid.as_deref() != Some(gone_site.as_str()));
            let gone = d
                .devices
                .iter()
                .filter(|x| x.site_uid.as_deref() == Some(gone_site.as_str()))
                .filter_map(|x| x.uid.clone())
                .collect();
            d.devices
                .retain(|x| x.site_uid.as_deref() != Some(gone_site.as_str()));
            gone
        });
        assert!(!gone.is_empty());
        v.datto.faults.push_n("/account/devices", outage(), 100);
        queue_sync(&app, id).await;
        // The default engine (daily reconcile): an RMM's every pass is a full sweep anyway.
        let default_engine = mspbridge_sync::Engine::new(
            app.db.store.clone(),
            std::sync::Arc::new(mspbridge_vault::Vault::new(&[9u8; 32])),
            mspbridge_providers::Providers::new(app.config.clone()),
            mspbridge_sync::EngineConfig::default(),
            "default-worker",
        );
        let failed = default_engine.tick().await.unwrap().expect("due");
        assert_ne!(
            failed.result,
            mspbridge_domain::sync::RunResult::Success,
            "{failed:?}"
        );
        v.datto.faults.clear();
        // (The site is gone from the grid; its devices are still listed until stamped.)
        let all = get(
            &app,
            &format!("/api/v1/integrations/{id}/devices/staged?limit=500&only_unimported=false"),
        )
        .await;
        let ids_of_gone: Vec<i64> = all["devices"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| gone.contains(&d["external_id"].as_str().unwrap().to_string()))
            .map(|d| d["id"].as_i64().unwrap())
            .collect();
        assert!(!ids_of_gone.is_empty(), "{backend}");
        let mut still = 0;
        for d in &ids_of_gone {
            let one = get(&app, &format!("/api/v1/devices/{d}")).await;
            still += usize::from(one["device"]["removed_upstream_at"].is_null());
        }
        assert_eq!(
            still,
            ids_of_gone.len(),
            "{backend}: nothing stamped after a failed pass"
        );
        queue_sync(&app, id).await;
        let clean = default_engine.tick().await.unwrap().expect("due");
        assert_eq!(
            clean.counts[&RecordType::Devices].deactivated as usize,
            gone.len(),
            "{clean:?}"
        );
        for d in &ids_of_gone {
            let one = get(&app, &format!("/api/v1/devices/{d}")).await;
            assert!(!one["device"]["removed_upstream_at"].is_null(), "{one}");
        }

        // The portal's Resolve reaches Datto; an alert resolved in Datto is resolved here.
        let alerts = get(&app, "/api/v1/alerts?limit=500").await;
        let list = alerts["alerts"].as_array().unwrap();
        let first_alert = &list[0];
        let (s, a) = app
            .post(
                &format!("/api/v1/alerts/{}/resolve", first_alert["id"]),
                &app.a.owner_token,
                json!({}),
            )
            .await;
        assert_eq!(s, 202, "{a}");
        assert!(!a["resolve_requested_at"].is_null());
        let done = full_pass_engine(&app).drain_alert_resolves().await.unwrap();
        assert_eq!(done, 1);
        let uid = first_alert["external_id"].as_str().unwrap().to_string();
        assert_eq!(
            v.datto.with_data(|d| d
                .alerts
                .iter()
                .find(|a| a.alert_uid.as_deref() == Some(uid.as_str()))
                .and_then(|a| a.resolved)),
            Some(true),
            "{backend}: resolved in Datto"
        );
        let other_uid = list
            .iter()
            .map(|a| a["external_id"].as_str().unwrap().to_string())
            .find(|u| *u != uid)
            .unwrap();
        // One resolved in Datto by a technician, one deleted there: the sweep resolves both
        // and asks Datto about each (`GET /v2/alert/{uid}`).
        let deleted_uid = list
            .iter()
            .map(|a| a["external_id"].as_str().unwrap().to_string())
            .find(|u| *u != uid && *u != other_uid)
            .unwrap();
        v.datto.with_data(|d| {
            for a in d.alerts.iter_mut() {
                if a.alert_uid.as_deref() == Some(other_uid.as_str()) {
                    a.resolved = Some(true);
                    a.resolved_by = Some("jane.tech".into());
                    a.resolved_on = Some(1_793_500_000_000);
                }
            }
            d.alerts
                .retain(|a| a.alert_uid.as_deref() != Some(deleted_uid.as_str()));
        });
        let explained = sync(&app, id).await;
        let after = get(&app, "/api/v1/alerts?include_resolved=true&limit=500").await;
        let state_of = |u: &str| {
            after["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["external_id"] == json!(u))
                .map(|a| (a["resolved"].as_bool().unwrap(), a["resolved_by"].clone()))
                .unwrap()
        };
        assert_eq!(state_of(&uid), (true, json!("the portal")));
        assert_eq!(
            state_of(&other_uid),
            (true, json!("jane.tech (in Datto RMM)")),
            "{backend}: resolved in Datto, by whom Datto says"
        );
        assert_eq!(
            state_of(&deleted_uid),
            (true, json!("Datto RMM (alert deleted there)")),
            "{backend}"
        );
        let resolved_at = after["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["external_id"] == json!(other_uid))
            .unwrap()["resolved_at"]
            .clone();
        assert_eq!(
            resolved_at.as_str().map(|t| t.starts_with("2026-11-01")),
            Some(true),
            "{backend}: Datto's resolvedOn: {resolved_at}"
        );
        let run = get(&app, &format!("/api/v1/runs/{}", explained.run_id)).await;
        assert!(
            run["events"].as_array().unwrap().iter().any(|e| e["message"]
                .as_str()
                .unwrap()
                .starts_with("2 alerts no longer open in Datto RMM: who resolved them read from Datto RMM for 1, 1 deleted there")),
            "{backend}: {}",
            run["events"]
        );
        assert_eq!(
            get(&app, "/api/v1/alerts?limit=1").await["total"]
                .as_u64()
                .unwrap(),
            open - 3
        );

        // Refresh reads one device alone from Datto now (`GET /api/v2/device/{uid}`) and
        // keeps it; a device Datto no longer has fails with the reason kept on the device,
        // the last good refresh staying.
        let present = all["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| !gone.contains(&d["external_id"].as_str().unwrap().to_string()))
            .unwrap();
        let (pid, puid) = (
            present["id"].as_i64().unwrap(),
            present["external_id"].as_str().unwrap().to_string(),
        );
        let before = v.datto.api_requests();
        v.datto.with_data(|d| {
            let dev = d
                .devices
                .iter_mut()
                .find(|x| x.uid.as_deref() == Some(puid.as_str()))
                .unwrap();
            dev.online = Some(true);
            dev.last_logged_in_user = Some("CORP\\refreshed.user".into());
        });
        let (s, r) = app
            .post(
                &format!("/api/v1/devices/{pid}/refresh"),
                &app.a.owner_token,
                json!({}),
            )
            .await;
        assert_eq!(s, 200, "{backend}: {r}");
        assert_eq!(v.datto.api_requests(), before + 1, "{backend}: one request");
        assert_eq!(r["refresh"]["online"], json!(true), "{r}");
        let facts = r["refresh"]["facts"].as_array().unwrap();
        assert!(
            facts
                .iter()
                .any(|f| f[0] == "Last user" && f[1] == "CORP\\refreshed.user"),
            "{backend}: {facts:?}"
        );
        assert!(!r["refreshed_at"].is_null() && r["refresh_error"].is_null());
        let page = html(&app, &format!("/devices/{pid}")).await;
        assert!(
            page.contains("Now in Datto RMM") && page.contains("CORP\\refreshed.user"),
            "{backend}"
        );
        v.datto.with_data(|d| {
            d.devices
                .retain(|x| x.uid.as_deref() != Some(puid.as_str()))
        });
        let (s, e) = app
            .post(
                &format!("/api/v1/devices/{pid}/refresh"),
                &app.a.owner_token,
                json!({}),
            )
            .await;
        assert_eq!(s, 502, "{backend}: {e}");
        let one = get(&app, &format!("/api/v1/devices/{pid}")).await;
        assert!(
            one["refresh_error"].as_str().unwrap().contains("no device"),
            "{backend}: {one}"
        );
        assert_eq!(
            one["refresh"]["online"],
            json!(true),
            "the last good refresh stays"
        );
        // A reader may look but not refresh.
        let reader = app
            .token(app.a.id, mspbridge_domain::auth::StaffRole::ReadOnly)
            .await;
        let (s, _) = app
            .post(
                &format!("/api/v1/devices/{pid}/refresh"),
                &reader,
                json!({}),
            )
            .await;
        assert_eq!(s, 403, "{backend}");

        // Another tenant sees none of it.
        let (s, _) = app
            .get(
                &format!("/api/v1/devices/{}", ids_of_gone[0]),
                &app.b.owner_token,
            )
            .await;
        assert_eq!(s, 404);
        let (s, _) = app
            .post(
                &format!("/api/v1/devices/{pid}/refresh"),
                &app.b.owner_token,
                json!({}),
            )
            .await;
        assert_eq!(s, 404, "{backend}: not another tenant's device");
        let (s, b) = app.get("/api/v1/alerts", &app.b.owner_token).await;
        assert_eq!((s, b["total"].as_i64()), (200, Some(0)));
    }
}

/// ConnectWise Asio through the portal, on both databases, with the ConnectWise Manage
/// sandbox as the PSA: Asio companies naming a Manage company in `externalIds` are linked
/// to its portal company (reason in the log, the link in the link history, undoable), the
/// others wait; Asio's sites never become portal companies; devices of linked companies
/// are staged, an Auto-Sync type is imported by the next sync, an ignored type leaves
/// staging; open tickets are the alerts; a company removed in Asio stamps its devices
/// removed only after a complete devices pass.
#[tokio::test]
async fn asio_companies_link_by_manage_id_and_devices_stage_import_ignore_and_leave() {
    use mspbridge_providers::connectwise_asio::client::AsioSettings;
    use mspbridge_providers::connectwise_asio::sandbox as asio;
    for db in mspbridge_store::test_support::all().await.unwrap() {
        let sandbox = asio::AsioSandbox::new(mspbridge_sandbox::Seed::Small);
        let _handle = sandbox
            .serve(mspbridge_sandbox::loopback_listener().await.unwrap())
            .unwrap();
        let config = mspbridge_providers::ProviderConfig {
            connectwise_asio: AsioSettings {
                api_base: Some(asio::AsioSandbox::api_base(&_handle)),
                backoff_floor: std::time::Duration::from_millis(100),
                ..Default::default()
            },
            ..Default::default()
        };
        let app = TestApp::start_configured(db, false, config).await;
        let backend = app.backend();
        let cw = app.connect_cw(&app.a.owner_token).await["id"]
            .as_i64()
            .unwrap();
        let (s, o) = put_options(
            &app,
            cw,
            json!({"interval_minutes": 30, "contacts": false, "technicians": false, "skip_inactive_companies": false}),
        )
        .await;
        assert_eq!(s, 200, "{o}");
        sync(&app, cw).await;
        let cw_companies = get(
            &app,
            &format!("/api/v1/integrations/{cw}/companies?limit=1000"),
        )
        .await;
        let portal_of_manage: std::collections::HashMap<String, i64> = cw_companies
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| {
                Some((
                    c["external_id"].as_str()?.to_string(),
                    c["linked_company_id"].as_i64()?,
                ))
            })
            .collect();

        let id = connect_json(
            &app,
            json!({"provider": "connectwise_asio", "credentials": {
                "environment": asio::DEMO_ENVIRONMENT, "client_id": asio::DEMO_CLIENT_ID,
                "client_secret": asio::DEMO_CLIENT_SECRET}}),
        )
        .await;
        let (s, o) = put_options(
            &app,
            id,
            json!({"interval_minutes": 5, "companies": true, "devices": true, "alerts": true,
                   "contacts": false, "technicians": false}),
        )
        .await;
        assert_eq!(s, 200, "{o}");
        let companies_before = get(&app, "/api/v1/companies?limit=1000").await;
        let first = sync(&app, id).await;
        assert_eq!(
            first.result,
            mspbridge_domain::sync::RunResult::Success,
            "{backend}: {first:?}"
        );
        let data = sandbox.with_data(|d| d.clone());
        // Which Asio company should link to which portal company (by its Manage id, whether
        // that company is active or not); a portal company takes one Asio company at most.
        let mut taken = std::collections::HashSet::new();
        let expected: std::collections::HashMap<String, i64> = data
            .companies
            .iter()
            .filter_map(|c| {
                let manage = c
                    .external_ids
                    .as_ref()?
                    .iter()
                    .find(|x| x.product_id.as_deref() == Some(asio::MANAGE_PRODUCT))?;
                let portal = portal_of_manage.get(manage.external_id.as_ref()?)?;
                let id = c.id.clone()?;
                taken.insert(*portal).then_some((id, *portal))
            })
            .collect();
        assert!(!expected.is_empty() && expected.len() < data.companies.len());
        let sites = &first.counts[&RecordType::Companies];
        assert_eq!(
            (sites.created, sites.linked as usize),
            (0, expected.len()),
            "{backend}: linked by Manage id, never created: {sites:?}"
        );
        assert_eq!(
            get(&app, "/api/v1/companies?limit=1000").await,
            companies_before,
            "{backend}: no portal company created or changed"
        );
        let run = get(&app, &format!("/api/v1/runs/{}", first.run_id)).await;
        let why = run["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                e["message"]
                    .as_str()
                    .unwrap()
                    .contains("same ConnectWise Manage company id")
            })
            .count();
        assert_eq!(why, expected.len(), "{backend}");
        let listed = get(
            &app,
            &format!("/api/v1/integrations/{id}/companies?limit=1000"),
        )
        .await;
        for c in listed.as_array().unwrap() {
            let ext = c["external_id"].as_str().unwrap();
            assert_eq!(
                c["linked_company_id"].as_i64(),
                expected.get(ext).copied(),
                "{backend}: {c}"
            );
        }
        // The links are in the link history as the sync's, one batch.
        let audit = get(&app, "/api/v1/company-mapping/audit?limit=500").await;
        let identity: Vec<&Value> = audit
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["action"] == json!("identity_link"))
            .collect();
        assert_eq!(identity.len(), expected.len(), "{backend}: {audit}");
        let batch = format!("run-{}", first.run_id);
        assert!(
            identity
                .iter()
                .all(|a| a["batch"] == json!(batch) && a["actor"] == json!("sync"))
        );
        // A site is never imported as a new company: only linked.
        let unlinked_ext = data
            .companies
            .iter()
            .filter_map(|c| c.id.clone())
            .find(|c| !expected.contains_key(c))
            .unwrap();
        let (s, e) = app
            .post(
                &format!("/api/v1/integrations/{id}/import"),
                &app.a.owner_token,
                json!({"companies": [{"external_id": unlinked_ext}]}),
            )
            .await;
        assert_eq!(
            (s, e["field"].as_str()),
            (422, Some("companies[0].company_id")),
            "{backend}: {e}"
        );

        // Devices of linked companies are staged, the rest are not.
        let staged_expected = data
            .endpoints
            .iter()
            .filter(|p| expected.contains_key(&p.company_id))
            .count() as i64;
        assert_eq!(staged_total(&app, id).await, staged_expected, "{backend}");
        // Open tickets are the alerts.
        let closed: Vec<String> = data
            .statuses
            .iter()
            .filter(|s| s.category.as_deref() == Some("Closed"))
            .filter_map(|s| s.id.clone())
            .collect();
        let open = data
            .tickets
            .iter()
            .filter(|t| !closed.contains(t.status.as_ref().unwrap().id.as_ref().unwrap()))
            .count() as u64;
        assert_eq!(first.counts[&RecordType::Alerts].created, open, "{backend}");
        // Asio's alerts are its tickets: the Alerts page says where to close them, with no
        // Resolve button.
        let page = html(&app, "/alerts").await;
        assert!(
            page.contains("resolve it in ConnectWise Asio by closing ticket 401")
                && !page.contains("/resolve\""),
            "{backend}: {page}"
        );

        // Auto-Sync on a type imports its staged devices at the next sync; Ignore on
        // another takes its devices out of staging.
        let (m1, m2) = two_types_with_staged(&app, id).await;
        let (m1, m2) = (&m1, &m2);
        let endpoint = new_device_type(&app, "Endpoint").await;
        let before = staged_total(&app, id).await;
        let n1 = auto_sync_imports(&app, id, m1, endpoint).await;
        assert_eq!(
            get(&app, "/api/v1/devices?limit=1").await["total"].as_i64(),
            Some(n1)
        );
        let (s, _) = set_mapping(
            &app,
            id,
            m2,
            json!({"device_type_id": null, "ignored": true}),
        )
        .await;
        assert_eq!(s, 200);
        let n2 = m2["staged"].as_i64().unwrap();
        assert_eq!(staged_total(&app, id).await, before - n1 - n2, "{backend}");
        // An unchanged sweep changes nothing.
        let again = sync(&app, id).await;
        for (r, c) in &again.counts {
            assert_eq!(
                (c.created, c.updated, c.deactivated),
                (0, 0, 0),
                "{backend} {r:?}"
            );
        }

        // A linked company removed in Asio: while the devices pass fails, nothing is
        // stamped; after a complete pass its devices are.
        let imported = get(&app, "/api/v1/devices?limit=500").await;
        let one = &imported["devices"][0];
        let gone_company = data
            .endpoints
            .iter()
            .find(|p| p.endpoint.endpoint_id.as_deref() == one["external_id"].as_str())
            .unwrap()
            .company_id
            .clone();
        sandbox.with_data(|d| {
            d.companies
                .retain(|c| c.id.as_deref() != Some(gone_company.as_str()));
            d.endpoints.retain(|p| p.company_id != gone_company);
        });
        sandbox.faults.push_n("/device/categories", outage(), 100);
        queue_sync(&app, id).await;
        let failed = full_pass_engine(&app).tick().await.unwrap().expect("due");
        assert_ne!(
            failed.result,
            mspbridge_domain::sync::RunResult::Success,
            "{backend}: {failed:?}"
        );
        let still = get(&app, &format!("/api/v1/devices/{}", one["id"])).await;
        assert!(
            still["device"]["removed_upstream_at"].is_null(),
            "{backend}: nothing stamped after a failed pass"
        );
        sandbox.faults.clear();
        let clean = sync(&app, id).await;
        assert_eq!(
            clean.result,
            mspbridge_domain::sync::RunResult::Success,
            "{backend}: {clean:?}"
        );
        let after = get(&app, &format!("/api/v1/devices/{}", one["id"])).await;
        assert!(
            !after["device"]["removed_upstream_at"].is_null(),
            "{backend}: {after}"
        );

        // Undoing the sync's identity links leaves those companies unlinked, and the next
        // sync does not link them again.
        let (s, u) = app
            .post(
                &format!("/api/v1/company-mapping/batches/{batch}/undo"),
                &app.a.owner_token,
                json!({}),
            )
            .await;
        assert_eq!(s, 200, "{u}");
        assert_eq!(
            u["undone"].as_u64(),
            Some(expected.len() as u64),
            "{backend}: every link of that run, the removed company's too"
        );
        sync(&app, id).await;
        let listed = get(
            &app,
            &format!("/api/v1/integrations/{id}/companies?limit=1000"),
        )
        .await;
        assert!(
            listed
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["linked_company_id"].is_null()),
            "{backend}: {listed}"
        );
    }
}

/// Keys whose Test found the alerts area not permitted: the Options tab says so beside the
/// Alerts option (grant it, or untick Alerts), instead of every sync ending partial unseen.
#[tokio::test]
async fn alerts_the_keys_may_not_read_are_named_beside_the_option() {
    let (_v, config) = rmm_vendors().await;
    let app = TestApp::start_configured(
        mspbridge_store::test_support::sqlite().await.unwrap(),
        false,
        config,
    )
    .await;
    let (s, body) = app
        .post(
            "/api/v1/integrations",
            &app.a.owner_token,
            json!({"provider": "datto_rmm", "credentials": {
                "platform": datto::DEMO_PLATFORM, "api_key": datto::LIMITED_API_KEY,
                "api_secret": datto::LIMITED_API_SECRET}}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    let id = body["id"].as_i64().unwrap();
    let page = html(&app, &format!("/settings/integrations/{id}?tab=options")).await;
    assert!(
        page.contains("id=\"alerts-note\"") && page.contains("untick Alerts"),
        "{page}"
    );
    // Keys that may read alerts: no note.
    let full = connect_json(
        &app,
        json!({"provider": "datto_rmm", "name": "Second Datto", "credentials": {
            "platform": datto::DEMO_PLATFORM, "api_key": datto::DEMO_API_KEY,
            "api_secret": datto::DEMO_API_SECRET}}),
    )
    .await;
    let page = html(&app, &format!("/settings/integrations/{full}?tab=options")).await;
    assert!(!page.contains("id=\"alerts-note\""));
}
