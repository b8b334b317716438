#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The JSON API end to end: catalogue, connect (with every validation error), the
//! integration lifecycle, permissions, tenant isolation, and secrets never leaking.

mod common;

use common::*;
use mspbridge_domain::auth::StaffRole;
use mspbridge_providers::connectwise::sandbox::*;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn the_catalogue_lists_the_nine_providers_and_says_which_work() {
    for app in TestApp::each().await {
        let (status, _) = app.get("/api/v1/providers", "not-a-token").await;
        assert_eq!(status, 401);
        let (status, body) = app.get("/api/v1/providers", &app.a.owner_token).await;
        assert_eq!(status, 200);
        let list = body.as_array().unwrap();
        let names: Vec<_> = list.iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "Halo PSA",
                "ConnectWise Manage",
                "Autotask",
                "Syncro",
                "Datto RMM",
                "ConnectWise Asio",
                "Microsoft 365",
                "Stripe",
                "Bigger Brains"
            ]
        );
        let cw = list
            .iter()
            .find(|p| p["kind"] == "connectwise_manage")
            .unwrap();
        assert_eq!(cw["category"], "psa");
        assert_eq!(cw["availability"]["state"], "available");
        let private = cw["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "private_key")
            .unwrap();
        assert_eq!(private["secret"], true);
        assert!(
            cw["syncs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["record"] == "tickets" && s["direction"] == "bidirectional")
        );
        let halo = list.iter().find(|p| p["kind"] == "halo_psa").unwrap();
        assert_eq!(halo["availability"]["state"], "available");
        let autotask = list.iter().find(|p| p["kind"] == "autotask").unwrap();
        assert_eq!(autotask["availability"]["state"], "available");
        let datto = list.iter().find(|p| p["kind"] == "datto_rmm").unwrap();
        assert_eq!(datto["availability"]["state"], "available");
        let asio = list
            .iter()
            .find(|p| p["kind"] == "connectwise_asio")
            .unwrap();
        assert_eq!(asio["availability"]["state"], "available");
        let stripe = list.iter().find(|p| p["kind"] == "stripe").unwrap();
        assert_eq!(stripe["availability"]["state"], "available");
        let bb = list.iter().find(|p| p["kind"] == "bigger_brains").unwrap();
        assert_eq!(bb["availability"]["state"], "available");
    }
}

#[tokio::test]
async fn connect_test_rename_update_disconnect_reconnect_delete() {
    for app in TestApp::each().await {
        let t = &app.a.owner_token;
        let created = app.connect_cw(t).await;
        let id = created["id"].as_i64().unwrap();
        assert_eq!(created["status"], "connected", "{}", app.backend());
        assert_eq!(created["name"], "ConnectWise Manage");
        assert_eq!(created["credentials"]["private_key"], "••••••••");
        assert_eq!(created["credentials"]["site"], app.sandbox_handle.host());
        assert_eq!(created["last_test"]["areas"].as_array().unwrap().len(), 6);

        let (s, tested) = app
            .post(&format!("/api/v1/integrations/{id}/test"), t, json!({}))
            .await;
        assert_eq!((s, tested["status"].as_str()), (200, Some("connected")));

        let (s, renamed) = app
            .call(
                Method::PATCH,
                &format!("/api/v1/integrations/{id}"),
                t,
                Some(json!({"name": "CW prod"})),
            )
            .await;
        assert_eq!((s, renamed["name"].as_str()), (200, Some("CW prod")));
        let (_, renamed) = app
            .call(
                Method::PATCH,
                &format!("/api/v1/integrations/{id}"),
                t,
                Some(json!({"name": ""})),
            )
            .await;
        assert_eq!(
            renamed["name"], "ConnectWise Manage",
            "empty name restores the default"
        );

        // Saving with the mask unchanged keeps the stored secret (the test still passes).
        let mut creds = app.good_credentials();
        creds["private_key"] = json!("••••••••");
        let (s, kept) = app
            .call(
                Method::PUT,
                &format!("/api/v1/integrations/{id}/credentials"),
                t,
                Some(json!({"credentials": creds})),
            )
            .await;
        assert_eq!(
            (s, kept["status"].as_str()),
            (200, Some("connected")),
            "{kept}"
        );

        // New credentials the vendor rejects are not saved; the stored ones keep working.
        let mut bad = app.good_credentials();
        bad["private_key"] = json!("rejected-key-4711");
        let (s, err) = app
            .call(
                Method::PUT,
                &format!("/api/v1/integrations/{id}/credentials"),
                t,
                Some(json!({"credentials": bad})),
            )
            .await;
        assert_eq!(
            (s, err["code"].as_str()),
            (422, Some("connection_failed")),
            "{err}"
        );
        let (_, still) = app
            .post(&format!("/api/v1/integrations/{id}/test"), t, json!({}))
            .await;
        assert_eq!(still["status"], "connected");

        // Disconnect removes the credentials.
        let (s, d) = app
            .post(
                &format!("/api/v1/integrations/{id}/disconnect"),
                t,
                json!({}),
            )
            .await;
        assert_eq!((s, d["status"].as_str()), (200, Some("disconnected")));
        assert!(
            d["credentials"].get("private_key").is_none(),
            "no secret is stored any more"
        );
        let (s, e) = app
            .post(&format!("/api/v1/integrations/{id}/test"), t, json!({}))
            .await;
        assert_eq!((s, e["code"].as_str()), (409, Some("conflict")));
        // Reconnecting needs the secret itself: the mask is refused.
        let (s, e) = app
            .call(
                Method::PUT,
                &format!("/api/v1/integrations/{id}/credentials"),
                t,
                Some(json!({"credentials": creds})),
            )
            .await;
        assert_eq!(
            (s, e["field"].as_str()),
            (422, Some("credentials.private_key")),
            "{e}"
        );
        let (s, r) = app
            .call(
                Method::PUT,
                &format!("/api/v1/integrations/{id}/credentials"),
                t,
                Some(json!({"credentials": app.good_credentials()})),
            )
            .await;
        assert_eq!((s, r["status"].as_str()), (200, Some("connected")), "{r}");

        let (s, _) = app
            .call(
                Method::DELETE,
                &format!("/api/v1/integrations/{id}"),
                t,
                None,
            )
            .await;
        assert_eq!(s, 204);
        let (s, e) = app.get(&format!("/api/v1/integrations/{id}"), t).await;
        assert_eq!((s, e["code"].as_str()), (404, Some("not_found")));
    }
}

/// Every connect-form validation error names its field and saves nothing.
#[tokio::test]
async fn every_connect_form_validation_error_names_the_field() {
    let app = TestApp::start(mspbridge_store::test_support::sqlite().await.unwrap()).await;
    let t = &app.a.owner_token;
    let good = app.good_credentials();
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let without = |k: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({"credentials": good}), "provider", "missing field"),
        (
            json!({"provider": "acme_psa", "credentials": good}),
            "provider",
            "unknown provider 'acme_psa'",
        ),
        (
            json!({"provider": "connectwise_manage"}),
            "credentials",
            "missing field",
        ),
        (
            json!({"provider": "connectwise_manage", "credentials": good, "colour": 1}),
            "colour",
            "unknown field",
        ),
        (
            json!({"provider": "connectwise_manage", "credentials": with("site", json!("https://na.myconnectwise.net"))}),
            "credentials.site",
            "without 'https://'",
        ),
        (
            json!({"provider": "connectwise_manage", "credentials": with("site", json!("na.myconnectwise.net/v4_6_release"))}),
            "credentials.site",
            "without a path",
        ),
        (
            json!({"provider": "connectwise_manage", "credentials": with("site", json!("not a host"))}),
            "credentials.site",
            "not a valid host",
        ),
        (
            json!({"provider": "connectwise_manage", "credentials": without("company_id")}),
            "credentials.company_id",
            "Company ID is required",
        ),
        (
            json!({"provider": "connectwise_manage", "credentials": without("public_key")}),
            "credentials.public_key",
            "Public key is required",
        ),
        (
            json!({"provider": "connectwise_manage", "credentials": with("private_key", json!(""))}),
            "credentials.private_key",
            "Private key is required",
        ),
        (
            json!({"provider": "connectwise_manage", "credentials": with("private_key", json!("••••••••"))}),
            "credentials.private_key",
            "not the mask",
        ),
        (
            json!({"provider": "connectwise_manage", "credentials": with("client_id", json!("abc"))}),
            "credentials.client_id",
            "must be a GUID",
        ),
        (
            json!({"provider": "connectwise_manage", "credentials": with("region", json!("na"))}),
            "credentials.region",
            "has no field 'region'",
        ),
        (
            json!({"provider": "connectwise_manage", "credentials": with("company_id", json!("ac\nme"))}),
            "credentials.company_id",
            "one line",
        ),
        (
            json!({"provider": "connectwise_manage", "credentials": with("site", json!(42))}),
            "credentials.site",
            "invalid type",
        ),
        (
            json!({"provider": "connectwise_manage", "name": "x".repeat(201), "credentials": good}),
            "name",
            "at most 200",
        ),
    ];
    for (body, field, message) in cases {
        let (status, err) = app.post("/api/v1/integrations", t, body.clone()).await;
        assert_eq!(status, 422, "{body} -> {err}");
        assert_eq!(err["code"], "validation_failed", "{err}");
        assert_eq!(err["field"], field, "{body} -> {err}");
        assert!(
            err["message"].as_str().unwrap().contains(message),
            "{body} -> {err}"
        );
    }
    // Not JSON at all, or the wrong content type.
    let resp = app
        .http
        .post(app.url("/api/v1/integrations"))
        .bearer_auth(t)
        .body("{oops")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["field"], "body");
    let resp = app
        .http
        .post(app.url("/api/v1/integrations"))
        .bearer_auth(t)
        .body("provider=x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);

    // Rejected keys: a connection_failed with the test report and a fix hint.
    let (s, e) = app.post("/api/v1/integrations", t, json!({"provider": "connectwise_manage", "credentials": with("private_key", json!("wrong"))})).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (422, Some("connection_failed")),
        "{e}"
    );
    assert_eq!(e["test"]["connection"]["result"], "auth_failed");
    assert!(e["fix_hint"].as_str().unwrap().contains("private key"));

    let (_, list) = app.get("/api/v1/integrations", t).await;
    assert_eq!(list, json!([]), "nothing was saved by any failed attempt");
}

#[tokio::test]
async fn a_role_missing_permissions_connects_with_status_error_and_the_setting_named() {
    let app = TestApp::start(mspbridge_store::test_support::sqlite().await.unwrap()).await;
    let mut creds = app.good_credentials();
    creds["public_key"] = json!(LIMITED_PUBLIC_KEY);
    creds["private_key"] = json!(LIMITED_PRIVATE_KEY);
    let (s, body) = app
        .post(
            "/api/v1/integrations",
            &app.a.owner_token,
            json!({"provider": "connectwise_manage", "credentials": creds}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["status"], "error");
    assert!(body["last_error"].as_str().unwrap().contains("Technicians"));
    assert!(
        body["fix_hint"]
            .as_str()
            .unwrap()
            .contains("Member Maintenance")
    );
}

#[tokio::test]
async fn another_tenants_ids_answer_404() {
    for app in TestApp::each().await {
        let created = app.connect_cw(&app.a.owner_token).await;
        let id = created["id"].as_i64().unwrap();
        let b = &app.b.owner_token;
        for (method, path, body) in [
            (Method::GET, format!("/api/v1/integrations/{id}"), None),
            (
                Method::PATCH,
                format!("/api/v1/integrations/{id}"),
                Some(json!({"name": "mine now"})),
            ),
            (
                Method::POST,
                format!("/api/v1/integrations/{id}/test"),
                Some(json!({})),
            ),
            (
                Method::PUT,
                format!("/api/v1/integrations/{id}/credentials"),
                Some(json!({"credentials": app.good_credentials()})),
            ),
            (
                Method::POST,
                format!("/api/v1/integrations/{id}/disconnect"),
                Some(json!({})),
            ),
            (Method::DELETE, format!("/api/v1/integrations/{id}"), None),
        ] {
            let (s, e) = app.call(method.clone(), &path, b, body).await;
            assert_eq!(
                (s, e["code"].as_str()),
                (404, Some("not_found")),
                "{} {method} {path}: {e}",
                app.backend()
            );
        }
        let (_, list) = app.get("/api/v1/integrations", b).await;
        assert_eq!(list, json!([]));
        // Tenant A's integration is untouched.
        let (s, mine) = app
            .get(&format!("/api/v1/integrations/{id}"), &app.a.owner_token)
            .await;
        assert_eq!(
            (s, mine["status"].as_str(), mine["name"].as_str()),
            (200, Some("connected"), Some("ConnectWise Manage"))
        );
    }
}

#[tokio::test]
async fn permissions_follow_read_write_manage() {
    let app = TestApp::start(mspbridge_store::test_support::sqlite().await.unwrap()).await;
    let id = app.connect_cw(&app.a.owner_token).await["id"]
        .as_i64()
        .unwrap();
    let reader = app.token(app.a.id, StaffRole::ReadOnly).await;
    let tech = app.token(app.a.id, StaffRole::Technician).await;

    assert_eq!(app.get("/api/v1/integrations", &reader).await.0, 200);
    let (s, e) = app
        .post(
            &format!("/api/v1/integrations/{id}/test"),
            &reader,
            json!({}),
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (403, Some("forbidden")));
    assert!(e["message"].as_str().unwrap().contains("manage"));
    let (s, _) = app
        .call(
            Method::PATCH,
            &format!("/api/v1/integrations/{id}"),
            &reader,
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(s, 403);

    let (s, _) = app
        .call(
            Method::PATCH,
            &format!("/api/v1/integrations/{id}"),
            &tech,
            Some(json!({"name": "by tech"})),
        )
        .await;
    assert_eq!(s, 200, "write may rename");
    let (s, _) = app
        .post(
            "/api/v1/integrations",
            &tech,
            json!({"provider": "connectwise_manage", "credentials": app.good_credentials()}),
        )
        .await;
    assert_eq!(s, 403, "connecting needs manage");
    let (s, _) = app
        .post(
            &format!("/api/v1/integrations/{id}/disconnect"),
            &tech,
            json!({}),
        )
        .await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn the_secret_never_shows_in_api_output_logs_or_the_database_file() {
    let app = TestApp::start(mspbridge_store::test_support::sqlite().await.unwrap()).await;
    let t = &app.a.owner_token;
    let created = app.connect_cw(t).await;
    let id = created["id"].as_i64().unwrap();
    // A rejected key must not leak either.
    let mut bad = app.good_credentials();
    bad["private_key"] = json!("leak-canary-0xBADC0DE");
    let (_, failed) = app
        .post(
            "/api/v1/integrations",
            t,
            json!({"provider": "connectwise_manage", "credentials": bad}),
        )
        .await;

    let mut outputs = vec![created.to_string(), failed.to_string()];
    for path in [
        "/api/v1/integrations".to_string(),
        format!("/api/v1/integrations/{id}"),
    ] {
        outputs.push(app.get(&path, t).await.1.to_string());
    }
    outputs.push(
        app.post(&format!("/api/v1/integrations/{id}/test"), t, json!({}))
            .await
            .1
            .to_string(),
    );
    for out in &outputs {
        assert!(
            !out.contains(DEMO_PRIVATE_KEY),
            "API output leaks the secret: {out}"
        );
        assert!(
            !out.contains("leak-canary-0xBADC0DE"),
            "API output leaks a rejected secret: {out}"
        );
    }
    let logs = logs();
    assert!(
        logs.contains("integration connected"),
        "the log capture works"
    );
    assert!(
        !logs.contains(DEMO_PRIVATE_KEY) && !logs.contains("leak-canary-0xBADC0DE"),
        "logs leak a secret"
    );

    let path = app.db.url.trim_start_matches("sqlite://").to_string();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend(std::fs::read(format!("{path}-wal")).unwrap_or_default());
    let needle = DEMO_PRIVATE_KEY.as_bytes();
    assert!(
        !bytes.windows(needle.len()).any(|w| w == needle),
        "the database file holds the secret in clear"
    );
    let site = app.sandbox_handle.host();
    assert!(
        bytes.windows(site.len()).any(|w| w == site.as_bytes()),
        "the scan sees the stored settings"
    );
}

#[tokio::test]
async fn health_metrics_openapi_and_json_404() {
    let app = TestApp::start(mspbridge_store::test_support::sqlite().await.unwrap()).await;
    let health: Value = app
        .http
        .get(app.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health, json!({"status": "ok", "database": "sqlite"}));

    app.get("/api/v1/providers", &app.a.owner_token).await;
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("mspbridge_http_requests_total"),
        "{metrics}"
    );
    assert!(metrics.contains("route=\"/api/v1/providers\""), "{metrics}");

    let doc: Value = app
        .http
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/providers",
        "/api/v1/integrations",
        "/api/v1/integrations/{id}/test",
        "/api/v1/integrations/{id}/credentials",
    ] {
        assert!(doc["paths"].get(path).is_some(), "missing {path}");
    }
    assert!(doc["components"]["schemas"].get("ErrorBody").is_some());

    let (s, e) = app.get("/api/v1/nope", &app.a.owner_token).await;
    assert_eq!((s, e["code"].as_str()), (404, Some("not_found")));
    let (s, e) = app
        .get("/api/v1/integrations/abc", &app.a.owner_token)
        .await;
    assert_eq!((s, e["field"].as_str()), (422, Some("id")));
}

#[tokio::test]
async fn companies_are_created_and_listed_per_tenant() {
    for app in TestApp::each().await {
        let (s, c) = app
            .post(
                "/api/v1/companies",
                &app.a.owner_token,
                json!({"name": "  Contoso Ltd "}),
            )
            .await;
        assert_eq!((s, c["name"].as_str()), (201, Some("Contoso Ltd")));
        let (s, e) = app
            .post("/api/v1/companies", &app.a.owner_token, json!({"name": ""}))
            .await;
        assert_eq!((s, e["field"].as_str()), (422, Some("name")));
        assert_eq!(
            app.get("/api/v1/companies", &app.a.owner_token)
                .await
                .1
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            app.get("/api/v1/companies", &app.b.owner_token).await.1,
            json!([])
        );
    }
}

/// A request with a raw body; the status and the answer parsed as JSON (a plain-text
/// answer fails the test: every error must be the JSON error body).
async fn raw(
    app: &TestApp,
    method: Method,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let resp = app
        .http
        .request(method, app.url(path))
        .bearer_auth(&app.a.owner_token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let kind = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let text = resp.text().await.unwrap();
    assert_eq!(
        kind.as_deref(),
        Some("application/json"),
        "{path}: {status} {text}"
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(
        v["code"].is_string() && v["message"].is_string(),
        "{path}: {v}"
    );
    (status, v)
}

#[tokio::test]
async fn bad_input_answers_the_json_error_naming_the_field_and_nul_is_refused() {
    for app in TestApp::each().await {
        let t = &app.a.owner_token;
        let id = app.connect_cw(t).await["id"].as_i64().unwrap();
        let options = format!("/api/v1/integrations/{id}/options");
        let (s, v) = app
            .call(
                Method::PUT,
                &options,
                t,
                Some(json!({"interval_minutes": 15})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        // A body that is not an object resets nothing.
        for body in ["[]", "[15]", "null", "\"x\"", "5"] {
            let (s, v) = raw(&app, Method::PUT, &options, "application/json", body.into()).await;
            assert_eq!((s, v["field"].as_str()), (422, Some("body")), "{body}: {v}");
        }
        let (_, v) = app.get(&options, t).await;
        assert_eq!(v["options"]["interval_minutes"], 15, "{v}");

        // Query strings, paths, methods and sizes answer the JSON error body.
        let (s, v) = raw(
            &app,
            Method::GET,
            "/api/v1/tickets?limit=many",
            "text/plain",
            vec![],
        )
        .await;
        assert_eq!((s, v["field"].as_str()), (422, Some("limit")), "{v}");
        let (s, v) = raw(
            &app,
            Method::GET,
            "/api/v1/tickets?colour=red",
            "text/plain",
            vec![],
        )
        .await;
        assert_eq!((s, v["field"].as_str()), (422, Some("colour")), "{v}");
        let (s, v) = raw(
            &app,
            Method::GET,
            "/api/v1/company-mapping/audit?limit=-x",
            "text/plain",
            vec![],
        )
        .await;
        assert_eq!((s, v["field"].as_str()), (422, Some("limit")), "{v}");
        let (s, v) = raw(
            &app,
            Method::DELETE,
            "/api/v1/providers",
            "text/plain",
            vec![],
        )
        .await;
        assert_eq!(
            (s, v["code"].as_str()),
            (405, Some("method_not_allowed")),
            "{v}"
        );
        let (s, _) = raw(
            &app,
            Method::GET,
            "/api/v1/integrations/%FF",
            "text/plain",
            vec![],
        )
        .await;
        assert!(s == 400 || s == 422, "{s}");
        let big = format!("{{\"name\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
        let (s, v) = raw(
            &app,
            Method::POST,
            "/api/v1/companies",
            "application/json",
            big.into(),
        )
        .await;
        assert_eq!(
            (s, v["code"].as_str()),
            (413, Some("payload_too_large")),
            "{v}"
        );
        let (s, v) = raw(
            &app,
            Method::POST,
            "/api/v1/companies",
            "application/json",
            b"{\"name\":".to_vec(),
        )
        .await;
        assert_eq!((s, v["field"].as_str()), (422, Some("body")), "{v}");

        // NUL characters: refused with 422 naming the field, on every backend.
        let (s, v) = raw(
            &app,
            Method::GET,
            "/api/v1/company-mapping?search=a%00b",
            "text/plain",
            vec![],
        )
        .await;
        assert_eq!((s, v["field"].as_str()), (422, Some("search")), "{v}");
        let (s, v) = raw(
            &app,
            Method::GET,
            &format!("/api/v1/integrations/{id}/companies?search=%00"),
            "text/plain",
            vec![],
        )
        .await;
        assert_eq!((s, v["field"].as_str()), (422, Some("search")), "{v}");
        let (s, v) = raw(
            &app,
            Method::POST,
            &format!("/api/v1/integrations/{id}/companies/a%00b/unblock"),
            "text/plain",
            vec![],
        )
        .await;
        assert_eq!((s, v["field"].as_str()), (422, Some("external_id")), "{v}");
        let (s, v) = app
            .post("/api/v1/companies", t, json!({"name": "Contoso\u{0}"}))
            .await;
        assert_eq!((s, v["field"].as_str()), (422, Some("name")), "{v}");
        let (s, v) = app
            .call(
                Method::PUT,
                &options,
                t,
                Some(json!({"interval_minutes": 5, "ticket_boards": ["Service", "Pro\u{0}jects"]})),
            )
            .await;
        assert_eq!(
            (s, v["field"].as_str()),
            (422, Some("ticket_boards[1]")),
            "{v}"
        );
        let (s, v) = app
            .call(
                Method::PATCH,
                &format!("/api/v1/integrations/{id}"),
                t,
                Some(json!({"name": "\u{0}"})),
            )
            .await;
        assert_eq!((s, v["field"].as_str()), (422, Some("name")), "{v}");
        let (s, v) = raw(
            &app,
            Method::POST,
            "/login",
            "application/x-www-form-urlencoded",
            b"email=a%00b&password=x".to_vec(),
        )
        .await;
        assert_eq!((s, v["field"].as_str()), (422, Some("email")), "{v}");
        assert_eq!(
            app.get("/api/v1/companies", t).await.1,
            json!([]),
            "nothing was written"
        );
    }
}

/// The OpenAPI document says what a client needs (what `openapi-spec-validator` checks in
/// CI, plus the rules of this API): every operation has a summary and its error answers
/// with the error body, every response a description, query parameters are `in: query`.
#[tokio::test]
async fn the_openapi_document_is_complete() {
    let app = TestApp::start(mspbridge_store::test_support::sqlite().await.unwrap()).await;
    let doc: Value = app
        .http
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/api/v1/companies/{company_id}/users",
        "/api/v1/companies/{company_id}/default-import-role",
    ] {
        assert!(paths.contains_key(path), "missing {path}");
    }
    let mut operations = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let Some(responses) = op.get("responses").and_then(Value::as_object) else {
                continue;
            };
            operations += 1;
            let here = format!("{method} {path}");
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.trim().is_empty()),
                "{here}: no summary"
            );
            for (status, r) in responses {
                assert!(
                    r["description"]
                        .as_str()
                        .is_some_and(|d| !d.trim().is_empty()),
                    "{here} {status}: no description"
                );
            }
            let mut wanted = vec!["401", "403"];
            if path.contains('{') {
                wanted.push("404");
            }
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            if !params.is_empty() || op.get("requestBody").is_some() {
                wanted.push("422");
            }
            for status in wanted {
                assert_eq!(
                    responses[status]["content"]["application/json"]["schema"]["$ref"],
                    json!("#/components/schemas/ErrorBody"),
                    "{here}: no {status} with the error body"
                );
            }
            for p in params {
                let name = p["name"].as_str().unwrap();
                let in_path = path.contains(&format!("{{{name}}}"));
                assert_eq!(
                    p["in"].as_str(),
                    Some(if in_path { "path" } else { "query" }),
                    "{here}: parameter {name}"
                );
            }
        }
    }
    assert!(operations > 40, "{operations}");
    let list = &doc["paths"]["/api/v1/tickets"]["get"];
    assert!(
        list["responses"]["200"]["headers"]
            .get("X-Total-Count")
            .is_some(),
        "{list}"
    );
}

/// `GET /api/v1/tickets` pages: a bare array of at most `limit`, the total in
/// `X-Total-Count`, the next page in `Link` (`rel="next"`) and `X-Next-Before`.
#[tokio::test]
async fn the_ticket_list_pages_with_a_total_and_a_next_link() {
    for app in TestApp::each().await {
        let company = app
            .db
            .store
            .create_company(app.a.id, "Paged Ltd", chrono::Utc::now())
            .await
            .unwrap();
        for n in 0..5 {
            app.db
                .store
                .create_ticket(
                    app.a.id,
                    mspbridge_store::NewTicket {
                        company_id: company.id,
                        summary: format!("Ticket {n}"),
                        description: String::new(),
                        status: "New".into(),
                        priority: None,
                    },
                    chrono::Utc::now(),
                )
                .await
                .unwrap();
        }
        let mut next = Some("/api/v1/tickets?limit=2".to_string());
        let mut seen = Vec::new();
        let mut pages = 0;
        while let Some(path) = next.take() {
            let resp = app
                .http
                .get(app.url(&path))
                .bearer_auth(&app.a.owner_token)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{}", app.backend());
            assert_eq!(resp.headers()["x-total-count"], "5");
            next = resp.headers().get("link").map(|l| {
                let l = l.to_str().unwrap();
                assert!(l.ends_with(">; rel=\"next\""), "{l}");
                l[1..l.find('>').unwrap()].to_string()
            });
            assert_eq!(
                next.is_some(),
                resp.headers().get("x-next-before").is_some()
            );
            let page: Vec<Value> = resp.json().await.unwrap();
            assert!(page.len() <= 2);
            seen.extend(page.iter().map(|t| t["id"].as_i64().unwrap()));
            pages += 1;
        }
        assert_eq!(pages, 3, "{}", app.backend());
        let mut sorted = seen.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        sorted.dedup();
        assert_eq!(seen, sorted, "newest first, each once");
        assert_eq!(seen.len(), 5);
        // Tenant B sees none of them.
        let resp = app
            .http
            .get(app.url("/api/v1/tickets"))
            .bearer_auth(&app.b.owner_token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["x-total-count"], "0");
        assert!(resp.headers().get("link").is_none());
    }
}

/// A company's users and its Default Import Role, as the company page has them.
#[tokio::test]
async fn a_companys_users_and_default_import_role_through_the_api() {
    for app in TestApp::each().await {
        let t = &app.a.owner_token;
        let (s, c) = app
            .post("/api/v1/companies", t, json!({"name": "Fabrikam"}))
            .await;
        assert_eq!(s, 201, "{c}");
        let id = c["id"].as_i64().unwrap();
        let user = company_user(
            &app,
            mspbridge_domain::CompanyId(id),
            "Ada",
            mspbridge_domain::model::UserStatus::Active,
        )
        .await;
        let roles = app.db.store.list_roles(app.a.id).await.unwrap();

        let (s, users) = app.get(&format!("/api/v1/companies/{id}/users"), t).await;
        assert_eq!(s, 200, "{users}");
        assert_eq!(users.as_array().unwrap().len(), 1);
        assert_eq!(users[0]["id"], json!(user.id.0));
        assert_eq!(users[0]["first_name"], "Ada");
        assert_eq!(users[0]["role"], json!(roles[0].name));

        let path = format!("/api/v1/companies/{id}/default-import-role");
        let (s, d) = app.get(&path, t).await;
        assert_eq!(s, 200, "{d}");
        assert_eq!(d["default_import_role"], Value::Null);
        assert_eq!(d["inherited"], json!([]));

        let put = |body: Value, token: String| {
            let app = &app;
            let path = path.clone();
            async move { app.call(Method::PUT, &path, &token, Some(body)).await }
        };
        let role = roles[1].id.0;
        let (s, d) = put(json!({"default_import_role": role}), t.clone()).await;
        assert_eq!(s, 200, "{d}");
        assert_eq!(d["default_import_role"], json!(role));
        assert_eq!(d["role_name"], json!(roles[1].name));
        assert_eq!(
            app.get(&path, t).await.1["default_import_role"],
            json!(role)
        );
        // The UI reads the same value.
        assert_eq!(
            app.db
                .store
                .company_defaults(app.a.id, mspbridge_domain::CompanyId(id))
                .await
                .unwrap()
                .default_import_role
                .map(|r| r.0),
            Some(role)
        );

        let (s, e) = put(json!({"default_import_role": 999_999}), t.clone()).await;
        assert_eq!((s, e["field"].as_str()), (422, Some("default_import_role")));
        let (s, e) = put(json!({"role": role}), t.clone()).await;
        assert_eq!(s, 422, "{e}");
        let reader = app.token(app.a.id, StaffRole::ReadOnly).await;
        assert_eq!(app.get(&path, &reader).await.0, 200);
        let (s, _) = put(json!({"default_import_role": null}), reader).await;
        assert_eq!(s, 403);
        // Another tenant's company is not found.
        let b = app.b.owner_token.clone();
        assert_eq!(app.get(&path, &b).await.0, 404);
        assert_eq!(
            app.get(&format!("/api/v1/companies/{id}/users"), &b)
                .await
                .0,
            404
        );
        let (s, _) = put(json!({"default_import_role": role}), b).await;
        assert_eq!(s, 404);
        let (s, e) = app.get("/api/v1/companies/abc/users", t).await;
        assert_eq!((s, e["field"].as_str()), (422, Some("id")));

        let (s, d) = put(json!({"default_import_role": null}), t.clone()).await;
        assert_eq!((s, &d["default_import_role"]), (200, &Value::Null));
    }
}

/// `/metrics` describes every metric and reports per integration: runs by result, run
/// duration, records written, last success, paused, outbox, webhook deliveries.
#[tokio::test]
async fn metrics_have_help_lines_and_per_integration_series() {
    for app in TestApp::each().await {
        let i = app.connect_cw(&app.a.owner_token).await;
        let id = i["id"].as_i64().unwrap();
        sync(&app, id).await;
        let refused = app
            .http
            .post(app.url(&format!("/webhooks/connectwise/{id}")))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401);

        let text = app
            .http
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let labels = format!("provider=\"connectwise_manage\",integration_id=\"{id}\"");
        let has = |name: &str, extra: &str| {
            text.lines().any(|l| {
                l.starts_with(name)
                    && l.contains(&format!("integration_id=\"{id}\""))
                    && l.contains(extra)
            })
        };
        assert!(
            has("mspbridge_sync_runs_total", "result=\"success\""),
            "{text}"
        );
        assert!(has("mspbridge_sync_run_duration_seconds", ""), "{text}");
        assert!(
            has(
                "mspbridge_sync_records_written_total",
                "record_type=\"companies\""
            ),
            "{text}"
        );
        assert!(
            has("mspbridge_sync_last_success_timestamp_seconds", ""),
            "{text}"
        );
        assert!(
            has("mspbridge_webhook_deliveries_total", "result=\"refused\""),
            "{text}"
        );
        for gauge in [
            "mspbridge_integration_paused",
            "mspbridge_outbox_pending",
            "mspbridge_outbox_failed",
        ] {
            assert!(
                text.contains(&format!("{gauge}{{{labels}}} 0")),
                "{gauge}: {text}"
            );
        }
        // Every series has its HELP line; no tenant name or secret is a label.
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let name = line.split(['{', ' ']).next().unwrap();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|b| text.contains(&format!("# HELP {b} ")))
                .unwrap_or(name);
            assert!(
                text.contains(&format!("# HELP {base} ")),
                "no HELP for {line}"
            );
        }
        assert!(!text.contains(DEMO_PRIVATE_KEY) && !text.contains("tenant"));
    }
}

#[tokio::test]
async fn the_favicon_is_an_svg_image_linked_from_every_page() {
    let app = TestApp::start(mspbridge_store::test_support::sqlite().await.unwrap()).await;
    for path in ["/favicon.ico", "/favicon.svg"] {
        let resp = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "image/svg+xml");
        assert!(resp.text().await.unwrap().starts_with("<svg"));
    }
    let login = app
        .http
        .get(app.url("/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        login.contains(r#"<link rel="icon" href="/favicon.svg" type="image/svg+xml">"#),
        "{login}"
    );
}
