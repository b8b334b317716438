#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Datto RMM connector against Datto's own OpenAPI document and sample payloads
//! (`MSPBRIDGE_SPECS_DIR`, `../shared/specs` by default; skipped with one line when they
//! are not there, failing under `CI=true`): every request the client sends is a
//! documented path, method and query parameter, and the samples read.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::validate::validate_credentials;
use mspbridge_providers::datto_rmm::client::DattoSettings;
use mspbridge_providers::datto_rmm::sandbox::*;
use mspbridge_providers::datto_rmm::source::{alert, device};
use mspbridge_providers::datto_rmm::wire::{Alert, Device, RawPage};
use mspbridge_providers::http::RetryPolicy;
use mspbridge_providers::source::PageRequest;
use mspbridge_providers::{OutboundPolicy, ProviderConfig, Providers};
use mspbridge_sandbox::{Seed, loopback_listener};

/// The spec path a request path is an instance of (`/v2/alert/abc/resolve` →
/// `/v2/alert/{alertUid}/resolve`).
fn spec_path<'a>(spec: &'a serde_json::Value, path: &str) -> Option<&'a str> {
    let want: Vec<&str> = path.split('/').collect();
    spec["paths"].as_object()?.keys().find_map(|p| {
        let have: Vec<&str> = p.split('/').collect();
        (have.len() == want.len()
            && have
                .iter()
                .zip(&want)
                .all(|(h, w)| h == w || (h.starts_with('{') && h.ends_with('}'))))
        .then_some(p.as_str())
    })
}

#[tokio::test]
async fn every_request_matches_the_datto_rmm_openapi_document() {
    let Some(spec) = mspbridge_sandbox::vendor_spec("datto-rmm/datto-rmm-api-v2.openapi.json")
    else {
        return;
    };
    assert_eq!(
        spec["servers"][0]["url"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next(),
        Some("api"),
        "paths are under /api"
    );
    let sb = DattoSandbox::new(Seed::Companies(12));
    sb.set_page_size(7);
    let h = sb.serve(loopback_listener().await.unwrap()).unwrap();
    let p = Providers::new(ProviderConfig {
        outbound: OutboundPolicy {
            allow_private: true,
        },
        datto_rmm: DattoSettings {
            api_base: Some(DattoSandbox::api_base(&h)),
            ..Default::default()
        },
        ..Default::default()
    });
    let mut input = BTreeMap::new();
    input.insert("platform".to_string(), DEMO_PLATFORM.to_string());
    input.insert("api_key".to_string(), DEMO_API_KEY.to_string());
    input.insert("api_secret".to_string(), DEMO_API_SECRET.to_string());
    let c = validate_credentials(ProviderKind::DattoRmm.descriptor(), &input, false)
        .unwrap()
        .0;
    p.connector(ProviderKind::DattoRmm)
        .unwrap()
        .test(&c, Utc::now())
        .await;
    let retry = RetryPolicy {
        timeout: Duration::from_secs(10),
        ..RetryPolicy::interactive()
    };
    let src = p
        .rmm_source(ProviderKind::DattoRmm, &c, retry, None)
        .await
        .unwrap()
        .unwrap();
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
    assert!(pages > 1, "more than one page");
    src.sites(&PageRequest::default()).await.unwrap();
    let alerts = src.open_alerts(&PageRequest::default()).await.unwrap();
    let one = sb.with_data(|d| d.devices[0].uid.clone().unwrap());
    src.device_refresh(&mspbridge_domain::rmm::DeviceKey {
        external_id: one,
        ..Default::default()
    })
    .await
    .unwrap();
    let w = p.alert_writer(ProviderKind::DattoRmm, &c).unwrap().unwrap();
    let uid = &alerts.records[0].external_id;
    w.resolve_alert(uid).await.unwrap();
    // Resolved already: the writer reads the alert.
    w.resolve_alert(uid).await.unwrap();

    let seen = sb.seen();
    let mut checked = 0;
    for r in &seen {
        if r.path == "/auth/oauth/token" {
            // The token endpoint is the OAuth server's, outside the API document (which
            // declares no security scheme).
            assert_eq!(r.method, "POST");
            continue;
        }
        let path = r.path.strip_prefix("/api").unwrap();
        let Some(template) = spec_path(&spec, path) else {
            panic!("{} {} is not in the Datto RMM spec", r.method, r.path);
        };
        let op = &spec["paths"][template][r.method.to_lowercase()];
        assert!(
            op.is_object(),
            "{} {template} is not in the Datto RMM spec",
            r.method
        );
        let declared: Vec<&str> = op["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["in"] == "query")
                    .filter_map(|p| p["name"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        for (k, v) in &r.query {
            assert!(
                declared.contains(&k.as_str()),
                "{} {}: query parameter '{k}' is not declared",
                r.method,
                r.path
            );
            if k == "page" || k == "max" {
                assert!(v.parse::<i32>().is_ok(), "{k}={v} is an int32");
            }
        }
        checked += 1;
    }
    for want in [
        ("GET", "/v2/account/sites"),
        ("GET", "/v2/account/devices"),
        ("GET", "/v2/account/alerts/open"),
        ("GET", "/v2/system/pagination"),
        ("POST", "/v2/alert/{alertUid}/resolve"),
        ("GET", "/v2/alert/{alertUid}"),
    ] {
        assert!(
            seen.iter().any(|r| r.method == want.0
                && r.path
                    .strip_prefix("/api")
                    .and_then(|p| spec_path(&spec, p))
                    == Some(want.1)),
            "the client never sent {want:?}"
        );
    }
    assert!(checked > 8, "{checked}");
}

fn sample(name: &str) -> Option<serde_json::Value> {
    mspbridge_sandbox::vendor_spec(&format!("datto-rmm/samples/{name}"))
}

#[test]
fn the_sample_payloads_read() {
    let Some(page1) = sample("devicesPage1.json") else {
        return;
    };
    let page2 = sample("devicesPage2.json").unwrap();
    let mut uids = Vec::new();
    for (page, has_next) in [(page1, true), (page2, false)] {
        let raw: RawPage = serde_json::from_str(&page.to_string()).unwrap();
        let details = raw.page_details.unwrap();
        assert_eq!(
            details
                .next_page_url
                .as_deref()
                .is_some_and(|u| !u.is_empty()),
            has_next
        );
        for row in raw.items.unwrap() {
            let d = device(serde_json::from_str::<Device>(row.get()).unwrap()).unwrap();
            assert_eq!(d.last_seen.unwrap().timestamp_millis(), 1_721_131_200_000);
            assert_eq!(d.patch.status.as_deref(), Some("FullyPatched"));
            assert_eq!(d.warranty_date, chrono::NaiveDate::from_ymd_opt(2026, 1, 1));
            assert_eq!(d.udfs.len(), 1, "nulls dropped: {:?}", d.udfs);
            uids.push(d.external_id);
        }
    }
    assert_eq!(uids, ["device-uid-1", "device-uid-2"]);

    let net = sample("device-rmmnetworkdevice.json").unwrap();
    let d = device(serde_json::from_value::<Device>(net).unwrap()).unwrap();
    assert_eq!(d.device_class.as_deref(), Some("rmmnetworkdevice"));
    assert_eq!(d.operating_system, None);
    assert_eq!(
        d.udfs.get("udf300").map(String::as_str),
        Some("SYNTHETIC-UDF-300")
    );

    for (file, class, priority) in [
        ("alert-context-antivirus.json", "antivirus_ctx", "Critical"),
        (
            "alert-context-comp-script.json",
            "comp_script_ctx",
            "Moderate",
        ),
        ("alert-context-eventlog.json", "eventlog_ctx", "High"),
        (
            "alert-context-online-offline-status.json",
            "online_offline_status_ctx",
            "Information",
        ),
        ("alert-context-patch.json", "patch_ctx", "Low"),
        (
            "alert-context-perf-resource-usage.json",
            "perf_resource_usage_ctx",
            "Unknown",
        ),
    ] {
        let v = sample(file).unwrap();
        let a = alert(serde_json::from_value::<Alert>(v.clone()).unwrap()).unwrap();
        assert_eq!(a.context_type.as_deref(), Some(class), "{file}");
        assert_eq!(a.priority, priority, "{file}");
        assert_eq!(
            a.device_external_id,
            v["alertSourceInfo"]["deviceUid"]
                .as_str()
                .map(str::to_string)
        );
        let ctx: serde_json::Value = serde_json::from_str(a.context.as_deref().unwrap()).unwrap();
        assert_eq!(ctx, v["alertContext"], "{file}: the context as sent");
        assert_eq!(
            a.raised_at.map(|t| t.timestamp_millis()),
            v["timestamp"].as_i64(),
            "{file}"
        );
        assert_eq!(a.resolved, v["resolved"].as_bool().unwrap(), "{file}");
    }
}
