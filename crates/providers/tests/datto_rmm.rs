#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Datto RMM against its sandbox: Test connection (good keys, wrong keys, an API user that
//! may not see alerts), the token (cached, re-granted after 75 % of its life and on a 401,
//! one grant for concurrent pages), paging by `nextPageUrl` at a page size other than the
//! default, lenient rows (nulls and unknown enum values everywhere) and a bad row rejected
//! alone, the account's rate window, 429 retried and 403 not, and resolving alerts.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::Utc;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::integration::*;
use mspbridge_domain::validate::{Credentials, validate_credentials};
use mspbridge_providers::datto_rmm::client::DattoSettings;
use mspbridge_providers::datto_rmm::sandbox::*;
use mspbridge_providers::http::RetryPolicy;
use mspbridge_providers::rmm::{RmmSource, RmmWriteError};
use mspbridge_providers::source::{PageRequest, SourceError, SourcePage};
use mspbridge_providers::{OutboundPolicy, ProviderConfig, Providers};
use mspbridge_sandbox::{Fault, SandboxHandle, Seed, loopback_listener};
use serde_json::json;

async fn start(seed: Seed) -> (DattoSandbox, SandboxHandle) {
    let sb = DattoSandbox::new(seed);
    let handle = sb.serve(loopback_listener().await.unwrap()).unwrap();
    (sb, handle)
}

fn creds(key: &str, secret: &str) -> Credentials {
    let mut input = BTreeMap::new();
    input.insert("platform".to_string(), DEMO_PLATFORM.to_string());
    input.insert("api_key".to_string(), key.to_string());
    input.insert("api_secret".to_string(), secret.to_string());
    validate_credentials(ProviderKind::DattoRmm.descriptor(), &input, false)
        .unwrap()
        .0
}

fn demo() -> Credentials {
    creds(DEMO_API_KEY, DEMO_API_SECRET)
}

fn providers_with(h: &SandboxHandle, requests: usize, window: Duration) -> Providers {
    Providers::new(ProviderConfig {
        outbound: OutboundPolicy {
            allow_private: true,
        },
        datto_rmm: DattoSettings {
            requests,
            window,
            backoff_floor: Duration::from_millis(100),
            api_base: Some(DattoSandbox::api_base(h)),
            ..Default::default()
        },
        ..Default::default()
    })
}

fn roomy(h: &SandboxHandle) -> Providers {
    providers_with(h, 100_000, Duration::from_secs(60))
}

fn retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_secs(3),
        budget: 100_000,
        timeout: Duration::from_secs(10),
    }
}

async fn source(p: &Providers, c: &Credentials, page_size: Option<usize>) -> Box<dyn RmmSource> {
    p.rmm_source(ProviderKind::DattoRmm, c, retry(), page_size)
        .await
        .unwrap()
        .unwrap()
}

/// Every page of one list, rejections included.
async fn walk<T, F, Fut>(f: F) -> (Vec<T>, Vec<mspbridge_providers::source::Rejected>, usize)
where
    F: Fn(PageRequest) -> Fut,
    Fut: std::future::Future<Output = Result<SourcePage<T>, SourceError>>,
{
    let mut req = PageRequest::default();
    let (mut all, mut rejected, mut pages) = (Vec::new(), Vec::new(), 0);
    loop {
        let p = f(req.clone()).await.unwrap();
        pages += 1;
        all.extend(p.records);
        rejected.extend(p.rejected);
        match p.next {
            Some(n) => req.after = Some(n),
            None => return (all, rejected, pages),
        }
    }
}

#[tokio::test]
async fn test_connection_tells_wrong_keys_from_a_security_level_without_alerts() {
    let (sb, h) = start(Seed::Small).await;
    let p = roomy(&h);
    let t = p.connector(ProviderKind::DattoRmm).unwrap();
    let ok = t.test(&demo(), Utc::now()).await;
    assert_eq!(ok.connection, ConnectionOutcome::Ok, "{ok:?}");
    assert_eq!(
        ok.areas.iter().map(|a| a.area.as_str()).collect::<Vec<_>>(),
        ["sites", "devices", "alerts"]
    );
    assert!(
        ok.areas.iter().all(|a| a.outcome == AreaResult::Granted),
        "{ok:?}"
    );
    // The account the keys belong to, from `GET /v2/account`.
    let detail = |k: &str| {
        ok.details
            .iter()
            .find(|(l, _)| l == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {k}: {:?}", ok.details))
    };
    assert_eq!(detail("Account"), "mspbridge Demo MSP (demo-account)");
    let live = sb.with_data(|d| d.devices.iter().filter(|x| x.deleted != Some(true)).count());
    assert!(
        detail("Devices").starts_with(&format!("{live} (")),
        "{:?}",
        ok.details
    );
    assert_eq!(detail("Device limit"), "5000");

    let wrong = t
        .test(&creds(DEMO_API_KEY, "not-the-secret"), Utc::now())
        .await;
    let ConnectionOutcome::AuthFailed { message, fix_hint } = &wrong.connection else {
        panic!("{wrong:?}")
    };
    assert!(message.contains("invalid_grant"), "{message}");
    assert!(fix_hint.contains("Generate API Keys"), "{fix_hint}");
    assert!(wrong.areas.is_empty());

    let limited = t
        .test(&creds(LIMITED_API_KEY, LIMITED_API_SECRET), Utc::now())
        .await;
    assert_eq!(limited.connection, ConnectionOutcome::Ok);
    assert_eq!(limited.areas[0].outcome, AreaResult::Granted);
    let AreaResult::NotPermitted {
        setting,
        vendor_message,
    } = &limited.areas[2].outcome
    else {
        panic!("{limited:?}")
    };
    assert!(setting.contains("Security Level"), "{setting}");
    assert!(vendor_message.contains("open alerts"), "{vendor_message}");
}

#[tokio::test]
async fn the_token_is_cached_regranted_after_three_quarters_of_its_life_and_on_a_401() {
    let (sb, h) = start(Seed::Small).await;
    sb.set_token_life(Duration::from_secs(4));
    let p = roomy(&h);
    let src = source(&p, &demo(), Some(5)).await;
    let src: &dyn RmmSource = &*src;
    src.sites(&PageRequest::default()).await.unwrap();
    src.devices(&PageRequest::default()).await.unwrap();
    // A second source of the same keys takes the same token.
    let other = source(&p, &demo(), Some(5)).await;
    other.open_alerts(&PageRequest::default()).await.unwrap();
    assert_eq!(sb.token_requests(), 1, "one grant for every call");
    // Past 75 % of the 4 s life (3 s), before it expires: granted again.
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    src.sites(&PageRequest::default()).await.unwrap();
    assert_eq!(sb.token_requests(), 2, "re-granted at 75 % of its life");
    // Revoked (a 401): granted again once and the request goes through.
    sb.set_token_life(Duration::from_secs(3600));
    sb.revoke_tokens();
    let before = sb.api_requests();
    let page = src.sites(&PageRequest::default()).await.unwrap();
    assert_eq!(page.records.len(), 5);
    assert_eq!(sb.token_requests(), 3, "one new grant after the 401");
    assert_eq!(
        sb.api_requests() - before,
        3,
        "the request rate's 401 and its repeat, then the page"
    );
    assert!(src.requests() >= 5, "token requests are counted too");
}

#[tokio::test]
async fn concurrent_pages_wait_for_one_token_request() {
    let (sb, h) = start(Seed::Small).await;
    let p = roomy(&h);
    let src = source(&p, &demo(), Some(3)).await;
    let src: &dyn RmmSource = &*src;
    let reqs = vec![PageRequest::default(); 8];
    let pages = futures_util::future::join_all(reqs.iter().map(|r| src.devices(r))).await;
    assert!(pages.iter().all(|p| p.is_ok()));
    assert_eq!(sb.token_requests(), 1, "single flight");
    sb.revoke_tokens();
    let pages = futures_util::future::join_all(reqs.iter().map(|r| src.sites(r))).await;
    assert!(pages.iter().all(|p| p.is_ok()));
    assert_eq!(
        sb.token_requests(),
        2,
        "eight 401s, one new grant shared by all"
    );
}

#[tokio::test]
async fn paging_at_a_non_default_page_size_gives_every_record_exactly_once() {
    let (sb, h) = start(Seed::Companies(40)).await;
    // The account's page size, read from /v2/system/pagination.
    sb.set_page_size(13);
    let p = roomy(&h);
    let src = source(&p, &demo(), None).await;
    let src: &dyn RmmSource = &*src;
    let (sites, rej, pages) = walk(|r| async move { src.sites(&r).await }).await;
    assert!(rej.is_empty());
    assert_eq!(pages, 40usize.div_ceil(13));
    let (devices, rej, dpages) = walk(|r| async move { src.devices(&r).await }).await;
    assert!(rej.is_empty());
    let (alerts, rej, _) = walk(|r| async move { src.open_alerts(&r).await }).await;
    assert!(rej.is_empty());
    let (want_sites, want_devices, want_alerts) = sb.with_data(|d| {
        (
            d.sites
                .iter()
                .filter_map(|s| s.uid.clone())
                .collect::<Vec<_>>(),
            d.devices
                .iter()
                .filter_map(|s| s.uid.clone())
                .collect::<Vec<_>>(),
            d.alerts
                .iter()
                .filter_map(|s| s.alert_uid.clone())
                .collect::<Vec<_>>(),
        )
    });
    let once = |got: Vec<String>, want: Vec<String>| {
        let set: HashSet<&String> = got.iter().collect();
        assert_eq!(set.len(), got.len(), "no record twice");
        assert_eq!(set, want.iter().collect::<HashSet<_>>());
    };
    once(
        sites.iter().map(|s| s.external_id.clone()).collect(),
        want_sites,
    );
    assert_eq!(dpages, want_devices.len().div_ceil(13));
    once(
        devices.iter().map(|d| d.external_id.clone()).collect(),
        want_devices,
    );
    once(
        alerts.iter().map(|a| a.external_id.clone()).collect(),
        want_alerts,
    );
    let seen = sb.seen();
    assert_eq!(
        seen.iter()
            .filter(|r| r.path == "/api/v2/system/pagination")
            .count(),
        1,
        "the page size is read once per source"
    );
    assert!(
        seen.iter()
            .filter(|r| r.path.starts_with("/api/v2/account/"))
            .all(|r| r.query.contains(&("max".into(), "13".into())))
    );

    // An override: 7 per page, no pagination request.
    let before = sb.seen().len();
    let src = source(&p, &demo(), Some(7)).await;
    let src: &dyn RmmSource = &*src;
    let (sites, _, pages) = walk(|r| async move { src.sites(&r).await }).await;
    assert_eq!((sites.len(), pages), (40, 6));
    assert!(
        sb.seen()[before..]
            .iter()
            .all(|r| r.path != "/api/v2/system/pagination")
    );
}

#[tokio::test]
async fn records_map_identity_udfs_contexts_and_epoch_milliseconds() {
    let (sb, h) = start(Seed::Small).await;
    let p = roomy(&h);
    let src = source(&p, &demo(), Some(100)).await;
    let src: &dyn RmmSource = &*src;
    let sites = src.sites(&PageRequest::default()).await.unwrap().records;
    let with_identity = sites.iter().filter(|s| s.identity.is_some()).count();
    assert!(with_identity >= 6, "{with_identity}");
    let first = &sites[0];
    let id = first.identity.as_ref().unwrap();
    assert_eq!(id.provider, ProviderKind::Autotask);
    let at = mspbridge_providers::autotask::sandbox::generate(Seed::Small);
    assert_eq!(id.external_id, at.companies[0].id.to_string());
    assert_eq!(first.name, at.companies[0].company_name);
    assert!(first.device_count.is_some());
    let devices = src.devices(&PageRequest::default()).await.unwrap().records;
    let classes: HashSet<&str> = devices
        .iter()
        .filter_map(|d| d.device_class.as_deref())
        .collect();
    for c in [
        "device",
        "printer",
        "esxihost",
        "rmmnetworkdevice",
        "mobiledevice",
    ] {
        assert!(classes.contains(c), "{c}: {classes:?}");
    }
    assert!(devices.iter().all(|d| d.udfs.contains_key("udf1")));
    assert!(
        devices
            .iter()
            .all(|d| d.last_seen.unwrap().timestamp() > 1_700_000_000)
    );
    let want_seen = sb.with_data(|d| d.devices[0].last_seen.unwrap());
    assert_eq!(devices[0].last_seen.unwrap().timestamp_millis(), want_seen);
    let alerts = src
        .open_alerts(&PageRequest::default())
        .await
        .unwrap()
        .records;
    let classes: HashSet<&str> = alerts
        .iter()
        .filter_map(|a| a.context_type.as_deref())
        .collect();
    assert!(classes.contains("patch_ctx") && classes.contains("antivirus_ctx"));
    let a = alerts
        .iter()
        .find(|a| a.context_type.as_deref() == Some("eventlog_ctx"))
        .unwrap();
    let ctx: serde_json::Value = serde_json::from_str(a.context.as_deref().unwrap()).unwrap();
    assert_eq!(ctx["@class"], "eventlog_ctx");
    assert_eq!(ctx["eventId"], 1000);
}

#[tokio::test]
async fn nulls_and_unknown_enum_values_in_every_field_keep_the_row() {
    let (sb, h) = start(Seed::Small).await;
    let (site, dev, dev2, alert) = sb.with_data(|d| {
        (
            d.sites[0].uid.clone().unwrap(),
            d.devices[0].uid.clone().unwrap(),
            d.devices[1].uid.clone().unwrap(),
            d.alerts[0].alert_uid.clone().unwrap(),
        )
    });
    let null_everything = |collection: &str, uid: &str, keep: &str| {
        let row = sb.with_data(|d| match collection {
            "sites" => serde_json::to_value(&d.sites[0]).unwrap(),
            "devices" => serde_json::to_value(&d.devices[0]).unwrap(),
            _ => serde_json::to_value(&d.alerts[0]).unwrap(),
        });
        for k in row.as_object().unwrap().keys() {
            if k != keep {
                sb.set_raw_field(collection, uid, k, serde_json::Value::Null);
            }
        }
    };
    null_everything("sites", &site, "uid");
    null_everything("devices", &dev, "uid");
    null_everything("alerts", &alert, "alertUid");
    for (field, value) in [
        ("deviceClass", json!("quantumcomputer")),
        (
            "deviceType",
            json!({"category": "Drone", "type": null, "new": 1}),
        ),
        (
            "antivirus",
            json!({"antivirusProduct": null, "antivirusStatus": "OnFire"}),
        ),
        (
            "patchManagement",
            json!({"patchStatus": "PatchedTwice", "patchesInstalled": null}),
        ),
        ("udf", json!({"udf1": null, "udf42": 7, "udf300": "last"})),
        ("warrantyDate", json!("not a date")),
        ("lastSeen", json!("2026-11-02T10:00:00Z")),
        ("brandNewField", json!({"x": [1, 2]})),
    ] {
        sb.set_raw_field("devices", &dev2, field, value);
    }
    sb.set_raw_field("alerts", &alert, "priority", json!("Apocalyptic"));
    let p = roomy(&h);
    let src = source(&p, &demo(), Some(500)).await;
    let src: &dyn RmmSource = &*src;
    let sites = src.sites(&PageRequest::default()).await.unwrap();
    assert!(sites.rejected.is_empty(), "{:?}", sites.rejected);
    let s = sites
        .records
        .iter()
        .find(|s| s.external_id == site)
        .unwrap();
    assert_eq!((s.name.as_str(), s.identity.as_ref()), ("", None));
    let devices = src.devices(&PageRequest::default()).await.unwrap();
    assert!(devices.rejected.is_empty(), "{:?}", devices.rejected);
    let d = devices
        .records
        .iter()
        .find(|d| d.external_id == dev)
        .unwrap();
    assert_eq!(d.hostname, "");
    assert_eq!((d.online, d.last_seen, d.deleted), (None, None, false));
    assert!(d.udfs.is_empty());
    let d2 = devices
        .records
        .iter()
        .find(|d| d.external_id == dev2)
        .unwrap();
    assert_eq!(d2.device_class.as_deref(), Some("quantumcomputer"));
    assert_eq!(d2.category.as_deref(), Some("Drone"));
    assert_eq!(d2.antivirus_status.as_deref(), Some("OnFire"));
    assert_eq!(d2.patch.status.as_deref(), Some("PatchedTwice"));
    assert_eq!(d2.udfs.get("udf42").map(String::as_str), Some("7"));
    assert_eq!(d2.udfs.get("udf300").map(String::as_str), Some("last"));
    assert_eq!(d2.warranty_date, None);
    assert_eq!(
        d2.last_seen.unwrap().to_rfc3339(),
        "2026-11-02T10:00:00+00:00"
    );
    let alerts = src.open_alerts(&PageRequest::default()).await.unwrap();
    assert!(alerts.rejected.is_empty(), "{:?}", alerts.rejected);
    let a = alerts
        .records
        .iter()
        .find(|a| a.external_id == alert)
        .unwrap();
    assert_eq!(a.priority, "Apocalyptic");
    assert_eq!((a.context.as_deref(), a.raised_at), (None, None));
}

#[tokio::test]
async fn a_bad_row_is_rejected_alone_with_its_id_and_field() {
    let (sb, h) = start(Seed::Small).await;
    let (total, bad, no_uid_id, alert) = sb.with_data(|d| {
        (
            d.devices.len(),
            d.devices[2].uid.clone().unwrap(),
            d.devices[3].id.unwrap(),
            d.alerts[1].alert_uid.clone().unwrap(),
        )
    });
    let no_uid = sb.with_data(|d| d.devices[3].uid.clone().unwrap());
    sb.set_raw_field("devices", &bad, "lastSeen", json!("yesterday"));
    sb.remove_raw_field("devices", &no_uid, "uid");
    sb.set_raw_field("alerts", &alert, "resolved", json!({"maybe": true}));
    let p = roomy(&h);
    let src = source(&p, &demo(), Some(5)).await;
    let src: &dyn RmmSource = &*src;
    let (devices, rejected, _) = walk(|r| async move { src.devices(&r).await }).await;
    assert_eq!(devices.len(), total - 2);
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert_eq!(rejected[0].external_id.as_deref(), Some(bad.as_str()));
    assert!(rejected[0].reason.contains("`lastSeen`"), "{rejected:?}");
    assert!(rejected[0].reason.contains("yesterday"), "{rejected:?}");
    assert_eq!(
        rejected[1].external_id.as_deref(),
        Some(no_uid_id.to_string().as_str())
    );
    assert!(rejected[1].reason.contains("`uid`"), "{rejected:?}");
    let (_, rejected, _) = walk(|r| async move { src.open_alerts(&r).await }).await;
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].external_id.as_deref(), Some(alert.as_str()));
    assert!(rejected[0].reason.contains("`resolved`"), "{rejected:?}");
}

#[tokio::test]
async fn the_rate_window_never_exceeds_the_account_limit() {
    let (sb, h) = start(Seed::Companies(60)).await;
    let window = Duration::from_secs(2);
    sb.set_limit(AccountLimit {
        requests: 20,
        window,
        slow_delay: Duration::from_secs(1),
        block_after: 2,
        block_for: Duration::from_secs(60),
    });
    let p = providers_with(&h, 20, window);
    // Two sources of the same account side by side (two syncs, or a sync and a Test)
    // share one window.
    let a = source(&p, &demo(), Some(2)).await;
    let b = source(&p, &demo(), Some(2)).await;
    let (a, b): (&dyn RmmSource, &dyn RmmSource) = (&*a, &*b);
    let started = std::time::Instant::now();
    let ((sa, _, pa), (sb_, _, pb)) = tokio::join!(
        walk(|r| async move { a.sites(&r).await }),
        walk(|r| async move { b.sites(&r).await }),
    );
    assert_eq!((sa.len(), pa, sb_.len(), pb), (60, 30, 60, 30));
    let most = sb.max_in_any(window);
    assert!(most <= 18, "at most 90 % of 20 in any 2 s: {most}");
    assert_eq!(
        sb.api_requests(),
        62,
        "30 pages and the request rate per source: no 429, no repeat"
    );
    assert_eq!(
        sb.token_requests(),
        1,
        "the token is not part of the window"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "spread over the window: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn requests_of_the_msps_other_tools_leave_this_side_less_of_the_window() {
    let (sb, h) = start(Seed::Companies(24)).await;
    let window = Duration::from_secs(2);
    sb.set_limit(AccountLimit {
        requests: 20,
        window,
        // No slow-down past 90 % (it would let the other tool's requests age out and hide
        // a client that ignores them): past the limit is a 429.
        slow_delay: Duration::ZERO,
        block_after: 100,
        block_for: Duration::from_secs(60),
    });
    let p = providers_with(&h, 20, window);
    let src = source(&p, &demo(), Some(2)).await;
    // Another tool of the account has used 14 of the 20: this side may send 4 more (its
    // cap is 18) before the window moves on, where alone it would send 18 at once.
    sb.other_tools(14);
    let started = std::time::Instant::now();
    let (sites, _, pages) = walk(|r| {
        let src = &src;
        async move { src.sites(&r).await }
    })
    .await;
    assert_eq!((sites.len(), pages), (24, 12));
    assert_eq!(
        sb.api_requests(),
        13,
        "the request rate and 12 pages: no 429, nothing repeated"
    );
    assert!(
        started.elapsed() >= window,
        "it waited for the other tool's requests to age out: {:?}",
        started.elapsed()
    );
    let rate = sb
        .seen()
        .into_iter()
        .filter(|r| r.path == "/api/v2/system/request_rate")
        .count();
    assert_eq!(rate, 1, "read once, as the list starts");
}

#[tokio::test]
async fn wrong_keys_during_a_sync_say_what_to_check() {
    let (sb, h) = start(Seed::Small).await;
    let p = roomy(&h);
    let src = source(&p, &creds(DEMO_API_KEY, "revoked-secret"), Some(5)).await;
    let e = src.sites(&PageRequest::default()).await.unwrap_err();
    let SourceError::Auth(m) = &e else {
        panic!("{e:?}")
    };
    assert!(
        m.contains("invalid_grant") && m.contains("Generate API Keys"),
        "{m}"
    );
    assert_eq!(sb.token_requests(), 1, "a refused grant is not retried");
    assert_eq!(sb.api_requests(), 0);
}

#[tokio::test]
async fn a_429_is_retried_after_retry_after_and_a_403_never() {
    let (sb, h) = start(Seed::Small).await;
    let p = roomy(&h);
    let src = source(&p, &demo(), Some(5)).await;
    let src: &dyn RmmSource = &*src;
    src.sites(&PageRequest::default()).await.unwrap();
    sb.faults.push(
        "/account/devices",
        Fault::Status {
            status: 429,
            body: r#"{"message":"Rate limit exceeded"}"#.into(),
            retry_after: Some(1),
        },
    );
    let started = std::time::Instant::now();
    let before = sb.api_requests();
    src.devices(&PageRequest::default()).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    assert_eq!(
        sb.api_requests() - before,
        2,
        "the request rate, then the page: the 429 came from the fault, its repeat reached the API"
    );
    sb.faults.push_n(
        "/account/alerts",
        Fault::Status {
            status: 403,
            body: r#"{"message":"Access denied"}"#.into(),
            retry_after: None,
        },
        3,
    );
    let e = src.open_alerts(&PageRequest::default()).await.unwrap_err();
    let SourceError::NotPermitted { message, setting } = &e else {
        panic!("{e:?}")
    };
    assert!(
        message.contains("Datto RMM refused the request (403): the API user lacks permission for alerts, or Datto has temporarily blocked this IP after too many requests"),
        "{message}"
    );
    assert!(setting.contains("Security Level"));
    assert_eq!(sb.faults.pending(), 2, "the 403 was not retried");
    // 5xx backs off and is retried.
    sb.faults.clear();
    sb.faults.push_n(
        "/account/sites",
        Fault::Status {
            status: 503,
            body: "{}".into(),
            retry_after: None,
        },
        2,
    );
    src.sites(&PageRequest::default()).await.unwrap();
    assert_eq!(sb.faults.pending(), 0);
}

#[tokio::test]
async fn the_sandbox_answers_429_past_the_limit_then_blocks_with_403() {
    let (sb, h) = start(Seed::Small).await;
    sb.set_limit(AccountLimit {
        requests: 3,
        window: Duration::from_secs(30),
        slow_delay: Duration::from_millis(10),
        block_after: 2,
        block_for: Duration::from_secs(30),
    });
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let r = http
            .get(format!("{}/api/v2/system/pagination", h.base_url()))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429, 403, 403]);
}

#[tokio::test]
async fn a_next_page_on_another_host_is_not_followed() {
    let (sb, h) = start(Seed::Small).await;
    let p = roomy(&h);
    let src = source(&p, &demo(), Some(5)).await;
    let src: &dyn RmmSource = &*src;
    let e = src
        .sites(&PageRequest {
            since: None,
            after: Some("https://evil.example/api/v2/account/sites?page=1".into()),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&e, SourceError::Unavailable(m) if m.contains("not followed")),
        "{e:?}"
    );
    assert_eq!(sb.api_requests(), 0);
}

#[tokio::test]
async fn resolving_an_alert_is_idempotent_and_an_unknown_alert_is_refused() {
    let (sb, h) = start(Seed::Small).await;
    let p = roomy(&h);
    let uid = sb.with_data(|d| d.alerts[0].alert_uid.clone().unwrap());
    let w = p
        .alert_writer(ProviderKind::DattoRmm, &demo())
        .unwrap()
        .unwrap();
    w.resolve_alert(&uid).await.unwrap();
    assert!(sb.with_data(|d| d.alerts[0].resolved == Some(true)));
    w.resolve_alert(&uid).await.unwrap();
    let e = w.resolve_alert("no-such-alert").await.unwrap_err();
    assert!(
        matches!(&e, RmmWriteError::Refused(m) if m.contains("no alert no-such-alert")),
        "{e:?}"
    );
    let src = source(&p, &demo(), Some(500)).await;
    let src: &dyn RmmSource = &*src;
    let open = src.open_alerts(&PageRequest::default()).await.unwrap();
    assert!(open.records.iter().all(|a| a.external_id != uid));
    let seen = sb.seen();
    assert!(
        seen.iter()
            .any(|r| r.method == "POST" && r.path == format!("/api/v2/alert/{uid}/resolve"))
    );
}
