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
        let page = app
            .http
            .get(app.url(&format!(
                "/settings/integrations/{id}/devices?view=sites&filter=unmapped"
            )))
            .bearer_auth(&app.a.owner_token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
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
        let mappings = get(
            &app,
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
        let (m1, m2) = (with_staged[0], with_staged[1]);
        let (s, t) = app
            .post(
                "/api/v1/device-types",
                &app.a.owner_token,
                json!({"name": "Workstation"}),
            )
            .await;
        assert_eq!(s, 201, "{t}");
        let workstation = t["id"].as_i64().unwrap();
        let (s, e) = put(
            &app,
            &format!(
                "/api/v1/integrations/{id}/device-type-mappings/{}",
                m1["id"]
            ),
            json!({"device_type_id": null, "auto_sync": true}),
        )
        .await;
        assert_eq!((s, e["field"].as_str()), (422, Some("auto_sync")), "{e}");
        let (s, saved) = put(
            &app,
            &format!(
                "/api/v1/integrations/{id}/device-type-mappings/{}",
                m1["id"]
            ),
            json!({"device_type_id": workstation, "auto_sync": true}),
        )
        .await;
        assert_eq!(s, 200, "{saved}");
        let before = staged_total(&app, id).await;
        let auto = sync(&app, id).await;
        let n1 = m1["staged"].as_i64().unwrap();
        assert_eq!(
            auto.counts[&RecordType::Devices].updated as i64,
            n1,
            "{auto:?}"
        );
        assert_eq!(staged_total(&app, id).await, before - n1);
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
        let html = app
            .http
            .get(app.url(&format!("/companies/{}", one["company_id"])))
            .bearer_auth(&app.a.owner_token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            html.contains("aria-label=\"Company devices\"")
                && html.contains(one["hostname"].as_str().unwrap()),
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
        v.datto.faults.push_n(
            "/account/devices",
            Fault::Status {
                status: 503,
                body: "{}".into(),
                retry_after: None,
            },
            100,
        );
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
        v.datto.with_data(|d| {
            for a in d.alerts.iter_mut() {
                if a.alert_uid.as_deref() == Some(other_uid.as_str()) {
                    a.resolved = Some(true);
                }
            }
        });
        sync(&app, id).await;
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
        assert!(state_of(&other_uid).0, "{backend}: resolved in Datto");
        assert_eq!(
            get(&app, "/api/v1/alerts?limit=1").await["total"]
                .as_u64()
                .unwrap(),
            open - 2
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
        let page = app
            .http
            .get(app.url(&format!("/devices/{pid}")))
            .bearer_auth(&app.a.owner_token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
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
