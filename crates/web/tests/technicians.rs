#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Technicians both ways, on SQLite and (with TEST_DATABASE_URL) PostgreSQL: technicians
//! imported from ConnectWise, Halo, Autotask and Syncro are listed with their PSA links
//! and what each PSA takes back; a portal edit of a linked technician is written to its PSA
//! (ConnectWise `PATCH /system/members/{id}`, Halo `POST /api/Agent` with the id, Autotask
//! `PATCH /Resources`) and survives the next sync; Syncro's read-only users refuse the edit
//! with the reason before anything changes; a vendor's refusal leaves the portal unchanged;
//! an unlinked technician is edited in the portal only; other tenants, roles without Manage and bad
//! input are refused.

mod common;

use std::time::Duration as StdDuration;

use common::*;
use mspbridge_domain::auth::StaffRole;
use mspbridge_providers::ProviderConfig;
use mspbridge_providers::autotask::client::AutotaskSettings;
use mspbridge_providers::autotask::sandbox::{
    AutotaskSandbox, DEMO_INTEGRATION_CODE, DEMO_SECRET, DEMO_USERNAME,
};
use mspbridge_providers::halo::sandbox::{
    DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_TENANT, HaloSandbox,
};
use mspbridge_providers::syncro::client::SyncroSettings;
use mspbridge_providers::syncro::sandbox::{DEMO_API_TOKEN, DEMO_SUBDOMAIN, SyncroSandbox};
use mspbridge_sandbox::{Fault, Seed, loopback_listener};
use serde_json::{Value, json};

async fn add(app: &TestApp, provider: &str, credentials: Value) -> i64 {
    let (s, v) = app
        .post(
            "/api/v1/integrations",
            &app.a.owner_token,
            json!({"provider": provider, "credentials": credentials}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    v["id"].as_i64().unwrap()
}

async fn technicians(app: &TestApp) -> Vec<Value> {
    let (s, v) = app.get("/api/v1/technicians", &app.a.owner_token).await;
    assert_eq!(s, 200, "{v}");
    v.as_array().unwrap().clone()
}

/// The first technician linked to `provider`: (portal id, PSA id).
async fn linked_to(app: &TestApp, provider: &str) -> (i64, String) {
    technicians(app)
        .await
        .iter()
        .find(|t| {
            t["links"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["provider"] == provider)
        })
        .map(|t| {
            let l = t["links"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["provider"] == provider)
                .unwrap();
            (
                t["technician"]["id"].as_i64().unwrap(),
                l["external_id"].as_str().unwrap().to_string(),
            )
        })
        .unwrap_or_else(|| panic!("no technician linked to {provider}"))
}

async fn patch(app: &TestApp, token: &str, id: i64, body: Value) -> (u16, Value) {
    app.call(
        reqwest::Method::PATCH,
        &format!("/api/v1/technicians/{id}"),
        token,
        Some(body),
    )
    .await
}

async fn technician(app: &TestApp, id: i64) -> Value {
    technicians(app)
        .await
        .into_iter()
        .find(|t| t["technician"]["id"] == id)
        .unwrap()["technician"]
        .clone()
}

#[tokio::test]
async fn technician_edits_are_written_back_where_the_psa_allows_and_refused_where_not() {
    for db in mspbridge_store::test_support::all().await.unwrap() {
        let at = AutotaskSandbox::new(Seed::Small);
        let at_handle = at.serve(loopback_listener().await.unwrap()).unwrap();
        let sy = SyncroSandbox::new(Seed::Small);
        sy.set_rate_limit(100_000, StdDuration::from_secs(60));
        let sy_handle = sy.serve(loopback_listener().await.unwrap()).unwrap();
        let halo = HaloSandbox::new(Seed::Small);
        let halo_handle = halo.serve(loopback_listener().await.unwrap()).unwrap();
        let config = ProviderConfig {
            autotask: AutotaskSettings {
                zone_lookup_url: AutotaskSandbox::zone_lookup_url(&at_handle),
                ..Default::default()
            },
            syncro: SyncroSettings {
                requests: 100_000,
                api_base: SyncroSandbox::api_base(&sy_handle),
                backoff_floor: StdDuration::from_millis(200),
                ..Default::default()
            },
            ..Default::default()
        };
        let app = TestApp::start_configured(db, false, config).await;
        let cw_id = app.connect_cw(&app.a.owner_token).await["id"]
            .as_i64()
            .unwrap();
        let host = halo_handle.host();
        let halo_id = add(
            &app,
            "halo_psa",
            json!({"auth_server_url": format!("https://{host}/auth"),
                "resource_server_url": format!("https://{host}/api"),
                "tenant": DEMO_TENANT, "client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET}),
        )
        .await;
        let at_id = add(
            &app,
            "autotask",
            json!({"username": DEMO_USERNAME, "secret": DEMO_SECRET, "integration_code": DEMO_INTEGRATION_CODE}),
        )
        .await;
        let sy_id = add(
            &app,
            "syncro",
            json!({"subdomain": DEMO_SUBDOMAIN, "api_token": DEMO_API_TOKEN}),
        )
        .await;
        for id in [cw_id, halo_id, at_id, sy_id] {
            sync(&app, id).await;
        }
        let list = technicians(&app).await;
        let owner = list
            .iter()
            .find(|t| t["technician"]["email"] == app.a.email)
            .unwrap();
        assert_eq!(owner["links"], json!([]), "the owner is portal only");

        // ConnectWise: name, email and active written with a JSON-Patch PATCH.
        let (cw_tech, member) = linked_to(&app, "ConnectWise Manage").await;
        let links = technicians(&app).await;
        let cw_links = links
            .iter()
            .find(|t| t["technician"]["id"] == cw_tech)
            .unwrap()["links"]
            .clone();
        assert_eq!(cw_links[0]["writes"]["email"], true, "{cw_links}");
        let (s, v) = patch(
            &app,
            &app.a.owner_token,
            cw_tech,
            json!({"name": "Rene Moreau-Lutz", "email": "Rene.ML@Demo-MSP.example", "active": false}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["technician"]["email"], "rene.ml@demo-msp.example");
        let m = app.sandbox.with_data(|d| {
            d.members
                .iter()
                .find(|m| m.id.to_string() == member)
                .cloned()
                .unwrap()
        });
        assert_eq!(
            (
                m.first_name.as_str(),
                m.last_name.as_str(),
                m.primary_email.as_deref(),
                m.inactive_flag
            ),
            (
                "Rene",
                "Moreau-Lutz",
                Some("rene.ml@demo-msp.example"),
                true
            )
        );
        // The next sync reads the same values back: nothing reverts.
        sync(&app, cw_id).await;
        let t = technician(&app, cw_tech).await;
        assert_eq!(
            (
                t["name"].as_str(),
                t["email"].as_str(),
                t["active"].as_bool()
            ),
            (
                Some("Rene Moreau-Lutz"),
                Some("rene.ml@demo-msp.example"),
                Some(false)
            )
        );

        // Halo: an upsert with the agent's id, never a second agent.
        let (halo_tech, agent) = linked_to(&app, "Halo PSA").await;
        let agents = halo.with_data(|d| d.agents.len());
        let (s, v) = patch(
            &app,
            &app.a.owner_token,
            halo_tech,
            json!({"email": "agent.new@demo-msp.example"}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        halo.with_data(|d| {
            assert_eq!(d.agents.len(), agents, "no second agent");
            let a = d.agents.iter().find(|a| a.id.to_string() == agent).unwrap();
            assert_eq!(a.email.as_deref(), Some("agent.new@demo-msp.example"));
        });
        // Halo refuses: the portal keeps the old values and says why.
        halo.faults.push(
            "/Agent",
            Fault::Status {
                status: 400,
                body: r#"{"ClassName":"HaloException","Message":"Agent email is in use"}"#.into(),
                retry_after: None,
            },
        );
        let (s, v) = patch(
            &app,
            &app.a.owner_token,
            halo_tech,
            json!({"email": "taken@demo-msp.example"}),
        )
        .await;
        assert_eq!(s, 502, "{v}");
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .contains("nothing was changed"),
            "{v}"
        );
        assert_eq!(
            technician(&app, halo_tech).await["email"],
            "agent.new@demo-msp.example"
        );

        // Autotask: PATCH on the collection with the id in the body.
        let (at_tech, resource) = linked_to(&app, "Autotask").await;
        let (s, v) = patch(
            &app,
            &app.a.owner_token,
            at_tech,
            json!({"name": "Kim Resource"}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        at.with_data(|d| {
            let r = d
                .resources
                .iter()
                .find(|r| r.id.to_string() == resource)
                .unwrap();
            assert_eq!(
                (r.first_name.as_str(), r.last_name.as_str()),
                ("Kim", "Resource")
            );
        });
        assert!(
            at.seen().iter().any(|r| r.method == "PATCH"
                && r.path == "/Resources"
                && r.body.as_ref().is_some_and(|b| b["id"]
                    .as_i64()
                    .map(|i| i.to_string())
                    .as_deref()
                    == Some(resource.as_str()))),
            "PATCH /Resources with the id in the body"
        );

        // Syncro's users are read-only: refused before anything changes.
        let (sy_tech, _) = linked_to(&app, "Syncro").await;
        let before = technician(&app, sy_tech).await;
        let sent = sy.seen().len();
        let (s, v) = patch(
            &app,
            &app.a.owner_token,
            sy_tech,
            json!({"name": "New Name"}),
        )
        .await;
        assert_eq!((s, v["field"].as_str()), (422, Some("name")), "{v}");
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .contains("change it in Syncro"),
            "{v}"
        );
        assert_eq!(technician(&app, sy_tech).await, before);
        assert_eq!(sy.seen().len(), sent, "nothing sent to Syncro");
        // The same value is no change, so nothing is refused.
        let (s, _) = patch(
            &app,
            &app.a.owner_token,
            sy_tech,
            json!({"name": before["name"]}),
        )
        .await;
        assert_eq!(s, 200);

        // A portal-only technician is edited in the portal.
        let owner_id = owner["technician"]["id"].as_i64().unwrap();
        let (s, v) = patch(
            &app,
            &app.a.owner_token,
            owner_id,
            json!({"name": "Olga Owner"}),
        )
        .await;
        assert_eq!(
            (s, v["technician"]["name"].as_str()),
            (200, Some("Olga Owner")),
            "{v}"
        );

        // Bad input, other tenants and roles without Manage.
        let (s, v) = patch(&app, &app.a.owner_token, owner_id, json!({"email": "nope"})).await;
        assert_eq!((s, v["field"].as_str()), (422, Some("email")), "{v}");
        let (s, v) = patch(&app, &app.a.owner_token, owner_id, json!({"name": "  "})).await;
        assert_eq!((s, v["field"].as_str()), (422, Some("name")), "{v}");
        let (s, _) = patch(&app, &app.b.owner_token, owner_id, json!({"name": "X"})).await;
        assert_eq!(s, 404, "another tenant's technician");
        let technician_token = app.token(app.a.id, StaffRole::Technician).await;
        let (s, _) = patch(&app, &technician_token, owner_id, json!({"name": "X"})).await;
        assert_eq!(s, 403);
        let admin = app.token(app.a.id, StaffRole::Admin).await;
        let (s, _) = patch(&app, &admin, owner_id, json!({"active": false})).await;
        assert_eq!(s, 403, "an admin cannot lock the owner out");
        let (s, _) = app.get("/api/v1/technicians", &technician_token).await;
        assert_eq!(s, 200, "technicians can read the list");
        drop((at_handle, sy_handle, halo_handle));
    }
}
