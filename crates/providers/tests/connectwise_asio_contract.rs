#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The ConnectWise Asio connector against Asio's own OpenAPI document (2.2.8, YAML;
//! `MSPBRIDGE_SPECS_DIR`, `../shared/specs` by default; skipped with one line when it is
//! not there, failing under `CI=true`): every request the connector sends (the token and
//! rate-limit calls, the connection test and a full read) is a documented path, method and
//! query parameter, path parameters are within their enums, and the endpoints body has the
//! required fields.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::validate::validate_credentials;
use mspbridge_providers::connectwise_asio::client::AsioSettings;
use mspbridge_providers::connectwise_asio::sandbox::*;
use mspbridge_providers::http::RetryPolicy;
use mspbridge_providers::source::PageRequest;
use mspbridge_providers::{OutboundPolicy, ProviderConfig, Providers};
use mspbridge_sandbox::{Seed, loopback_listener};
use serde_json::Value;

const SPEC: &str = "connectwise-asio/connectwise-asio-platform-api-2.2.8.openapi.yaml";

/// The YAML document as JSON, like `mspbridge_sandbox::vendor_spec` does for JSON ones.
fn yaml_spec(relative: &str) -> Option<Value> {
    let dir = std::env::var_os("MSPBRIDGE_SPECS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../../shared/specs"
            ))
        });
    let path = dir.join(relative);
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(
            serde_norway::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display())),
        ),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!(
            "CI=true and the vendor document {} cannot be read ({e}); set MSPBRIDGE_SPECS_DIR",
            path.display()
        ),
        Err(_) => {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "skipped: the vendor document {} is not there (set MSPBRIDGE_SPECS_DIR to the specs folder)",
                path.display()
            );
            None
        }
    }
}

/// The spec path a request path is an instance of, with its path parameters' values.
fn spec_path<'a>(spec: &'a Value, path: &str) -> Option<(&'a str, Vec<(String, String)>)> {
    let want: Vec<&str> = path.split('/').collect();
    spec["paths"].as_object()?.keys().find_map(|p| {
        let have: Vec<&str> = p.split('/').collect();
        if have.len() != want.len() {
            return None;
        }
        let mut params = Vec::new();
        for (h, w) in have.iter().zip(&want) {
            if h.starts_with('{') && h.ends_with('}') {
                params.push((h.trim_matches(['{', '}']).to_string(), w.to_string()));
            } else if h != w {
                return None;
            }
        }
        Some((p.as_str(), params))
    })
}

/// An operation's parameters, `$ref`s resolved.
fn parameters(spec: &Value, op: &Value) -> Vec<Value> {
    op["parameters"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| match p["$ref"].as_str() {
                    Some(r) => {
                        let name = r.rsplit('/').next().unwrap();
                        spec["components"]["parameters"][name].clone()
                    }
                    None => p.clone(),
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn every_request_matches_the_connectwise_asio_openapi_document() {
    let Some(spec) = yaml_spec(SPEC) else {
        return;
    };
    assert_eq!(
        spec["servers"][0]["url"].as_str(),
        Some("https://openapi.service.itsupport247.net"),
        "the NA address is the spec's first server"
    );
    let sb = AsioSandbox::new(Seed::Companies(9));
    let h = sb.serve(loopback_listener().await.unwrap()).unwrap();
    let p = Providers::new(ProviderConfig {
        outbound: OutboundPolicy {
            allow_private: true,
        },
        connectwise_asio: AsioSettings {
            api_base: Some(AsioSandbox::api_base(&h)),
            ..Default::default()
        },
        ..Default::default()
    });
    let mut input = BTreeMap::new();
    input.insert("environment".to_string(), DEMO_ENVIRONMENT.to_string());
    input.insert("client_id".to_string(), DEMO_CLIENT_ID.to_string());
    input.insert("client_secret".to_string(), DEMO_CLIENT_SECRET.to_string());
    let c = validate_credentials(ProviderKind::ConnectwiseAsio.descriptor(), &input, false)
        .unwrap()
        .0;
    p.connector(ProviderKind::ConnectwiseAsio)
        .unwrap()
        .test(&c, Utc::now())
        .await;
    let retry = RetryPolicy {
        timeout: Duration::from_secs(10),
        ..RetryPolicy::default()
    };
    let src = p
        .rmm_source(ProviderKind::ConnectwiseAsio, &c, retry, Some(4))
        .await
        .unwrap()
        .unwrap();
    src.sites(&PageRequest::default()).await.unwrap();
    let mut req = PageRequest::default();
    let mut pages = 0;
    loop {
        let page = src.devices(&req).await.unwrap();
        pages += 1;
        match page.next {
            Some(n) => req.after = Some(n),
            None => break,
        }
    }
    assert!(pages > 3, "several pages and batches");
    let mut req = PageRequest::default();
    let mut alerts = 0;
    loop {
        let page = src.open_alerts(&req).await.unwrap();
        alerts += page.records.len();
        match page.next {
            Some(n) => req.after = Some(n),
            None => break,
        }
    }
    assert!(alerts > 0, "open tickets read as alerts");
    let placed = sb.with_data(|d| d.endpoints[0].clone());
    src.device_refresh(&mspbridge_domain::rmm::DeviceKey {
        external_id: placed.endpoint.endpoint_id.clone().unwrap(),
        site_external_id: Some(placed.company_id.clone()),
        sub_site: Some(placed.site_id.clone()),
    })
    .await
    .unwrap();

    let seen = sb.seen();
    let mut checked = 0;
    for r in &seen {
        let Some((template, path_params)) = spec_path(&spec, &r.path) else {
            panic!("{} {} is not in the Asio spec", r.method, r.path);
        };
        let op = &spec["paths"][template][r.method.to_lowercase()];
        assert!(
            op.is_object(),
            "{} {template} is not in the Asio spec",
            r.method
        );
        let params = parameters(&spec, op);
        let declared: Vec<&str> = params
            .iter()
            .filter(|p| p["in"] == "query")
            .filter_map(|p| p["name"].as_str())
            .collect();
        for (k, v) in &r.query {
            assert!(
                declared.contains(&k.as_str()),
                "{} {}: query parameter '{k}' is not declared",
                r.method,
                r.path
            );
            if k == "limit" || k == "cursor" {
                let n: i64 = v.parse().unwrap();
                assert!(n >= 0 && (k != "limit" || n <= 500), "{k}={v}");
            }
            if k == "field" {
                assert!(v.split(',').count() <= 15, "at most 15 fields: {v}");
            }
        }
        for (name, value) in &path_params {
            // The document spells one name two ways (`{endpointId}` in the patches path,
            // `endpointID` in its parameter): names match regardless of case.
            let p = params
                .iter()
                .find(|p| {
                    p["in"] == "path"
                        && p["name"]
                            .as_str()
                            .is_some_and(|n| n.eq_ignore_ascii_case(name))
                })
                .unwrap_or_else(|| panic!("{template}: path parameter {name} is not declared"));
            if let Some(allowed) = p["schema"]["enum"].as_array() {
                assert!(
                    allowed.iter().any(|a| a == value.as_str()),
                    "{template}: {name}={value} is not one of {allowed:?}"
                );
            }
        }
        if let Some(schema_ref) =
            op["requestBody"]["content"]["application/json"]["schema"]["$ref"].as_str()
        {
            let schema = &spec["components"]["schemas"][schema_ref.rsplit('/').next().unwrap()];
            let body = r.body.as_ref().expect("a body where the spec requires one");
            for field in schema["required"].as_array().into_iter().flatten() {
                assert!(
                    !body[field.as_str().unwrap()].is_null(),
                    "{template}: body lacks {field}"
                );
            }
        }
        assert!(r.request_id.is_some(), "X-Request-ID on {}", r.path);
        checked += 1;
    }
    for want in [
        ("POST", "/v1/token"),
        ("GET", "/v1/rate_limits"),
        ("GET", "/api/platform/v1/company/companies"),
        ("GET", "/api/platform/v1/company/sites"),
        (
            "POST",
            "/api/platform/v2/device/categories/{category}/endpoints",
        ),
        ("GET", "/api/platform/v2/device/endpoints/heartbeat"),
    ] {
        assert!(
            seen.iter()
                .any(|r| r.method == want.0
                    && spec_path(&spec, &r.path).map(|(t, _)| t) == Some(want.1)),
            "the connector never sent {want:?}"
        );
    }
    assert!(checked > 10, "{checked}");
}
