#![allow(clippy::unwrap_used, clippy::expect_used)]
//! ConnectWise Asio against its sandbox: the client ID prefix checked against the
//! environment, Test connection per scope, the token (cached, re-granted at 75 % of its
//! life and on a 401, one grant for concurrent pages, later grants asking only for the
//! granted scopes), the required headers, companies with their ConnectWise Manage
//! identity, endpoints paged by `Link` cursor at a non-default page size across company
//! batches of 4, heartbeats, open tickets as alerts (paged by page number, closed statuses
//! left out, the scope named when missing), lenient rows and a bad row rejected alone, rate
//! buckets and 429, and the four error shapes.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::Utc;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::integration::*;
use mspbridge_domain::validate::{Credentials, validate_credentials};
use mspbridge_providers::connectwise_asio::client::AsioSettings;
use mspbridge_providers::connectwise_asio::sandbox::*;
use mspbridge_providers::connectwise_asio::source::TICKET_PAGE_SIZE;
use mspbridge_providers::http::RetryPolicy;
use mspbridge_providers::rmm::RmmSource;
use mspbridge_providers::source::{PageRequest, SourceError, SourcePage};
use mspbridge_providers::{OutboundPolicy, ProviderConfig, Providers};
use mspbridge_sandbox::{Fault, SandboxHandle, Seed, loopback_listener};
use serde_json::json;

async fn start(seed: Seed) -> (AsioSandbox, SandboxHandle) {
    let sb = AsioSandbox::new(seed);
    let handle = sb.serve(loopback_listener().await.unwrap()).unwrap();
    (sb, handle)
}

fn creds(id: &str, secret: &str) -> Credentials {
    let mut input = BTreeMap::new();
    input.insert("environment".to_string(), DEMO_ENVIRONMENT.to_string());
    input.insert("client_id".to_string(), id.to_string());
    input.insert("client_secret".to_string(), secret.to_string());
    validate_credentials(ProviderKind::ConnectwiseAsio.descriptor(), &input, false)
        .unwrap()
        .0
}

fn demo() -> Credentials {
    creds(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)
}

fn providers(h: &SandboxHandle) -> Providers {
    Providers::new(ProviderConfig {
        outbound: OutboundPolicy {
            allow_private: true,
        },
        connectwise_asio: AsioSettings {
            backoff_floor: Duration::from_millis(100),
            api_base: Some(AsioSandbox::api_base(h)),
            ..Default::default()
        },
        ..Default::default()
    })
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
    p.rmm_source(ProviderKind::ConnectwiseAsio, c, retry(), page_size)
        .await
        .unwrap()
        .unwrap()
}

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

/// A token of the demo client for `scope`, asked of the sandbox directly (for tests of the
/// sandbox's own rules).
async fn raw_token(client: &reqwest::Client, base: &str, scope: &str) -> String {
    let t: serde_json::Value = client
        .post(format!("{base}/v1/token"))
        .header("Origin", "t")
        .header("User-Agent", "t")
        .header("X-Request-ID", "1")
        .json(&json!({"grant_type": "client_credentials", "client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET, "scope": scope}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    t["access_token"].as_str().unwrap().to_string()
}

#[test]
fn the_client_id_prefix_must_match_the_environment() {
    let check = |env: &str, id: &str| {
        let mut input = BTreeMap::new();
        input.insert("environment".to_string(), env.to_string());
        input.insert("client_id".to_string(), id.to_string());
        input.insert("client_secret".to_string(), "s".to_string());
        validate_credentials(ProviderKind::ConnectwiseAsio.descriptor(), &input, false)
    };
    assert!(check("na", "0e30abcd").is_ok());
    assert!(check("eu", "0E31abcd").is_ok());
    assert!(check("au", "0e32abcd").is_ok());
    let e = check("eu", "0e30abcd").unwrap_err();
    assert_eq!(e.0.len(), 1, "{e:?}");
    assert_eq!(e.0[0].field, "credentials.client_id");
    assert!(
        e.0[0].message.contains("NA") && e.0[0].message.contains("EU"),
        "names both: {}",
        e.0[0].message
    );
    let e = check("na", "12345").unwrap_err();
    assert!(e.0[0].message.contains("0e30"), "{}", e.0[0].message);
    assert!(check("mars", "0e30abcd").is_err(), "not an environment");
}

#[tokio::test]
async fn test_connection_names_each_scope_not_granted_and_wrong_secrets() {
    let (_sb, h) = start(Seed::Small).await;
    let p = providers(&h);
    let t = p.connector(ProviderKind::ConnectwiseAsio).unwrap();
    let ok = t.test(&demo(), Utc::now()).await;
    assert_eq!(ok.connection, ConnectionOutcome::Ok, "{ok:?}");
    assert_eq!(
        ok.areas.iter().map(|a| a.area.as_str()).collect::<Vec<_>>(),
        ["companies", "sites", "devices", "tickets"]
    );
    assert!(
        ok.areas.iter().all(|a| a.outcome == AreaResult::Granted),
        "{ok:?}"
    );

    let limited = t
        .test(&creds(LIMITED_CLIENT_ID, LIMITED_CLIENT_SECRET), Utc::now())
        .await;
    assert_eq!(limited.connection, ConnectionOutcome::Ok);
    let by = |a: &str| {
        limited
            .areas
            .iter()
            .find(|x| x.area == a)
            .unwrap()
            .outcome
            .clone()
    };
    assert_eq!(by("companies"), AreaResult::Granted);
    match by("devices") {
        AreaResult::NotPermitted {
            setting,
            vendor_message,
        } => {
            assert!(setting.contains("Platform - Devices - Read"), "{setting}");
            assert!(
                vendor_message.contains("platform.devices.read"),
                "{vendor_message}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(by("tickets"), AreaResult::NotPermitted { .. }));

    let wrong = t
        .test(&creds(DEMO_CLIENT_ID, "wrong-secret"), Utc::now())
        .await;
    match wrong.connection {
        ConnectionOutcome::AuthFailed { message, .. } => {
            assert!(message.contains("invalid_client"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_token_is_cached_regranted_at_75_percent_and_on_a_401_asking_for_granted_scopes() {
    let (sb, h) = start(Seed::Small).await;
    sb.set_token_life(Duration::from_secs(4));
    let p = providers(&h);
    let limited = creds(LIMITED_CLIENT_ID, LIMITED_CLIENT_SECRET);
    let src = source(&p, &limited, Some(5)).await;
    src.sites(&PageRequest::default()).await.unwrap();
    src.sites(&PageRequest::default()).await.unwrap();
    let other = source(&p, &limited, Some(5)).await;
    other.sites(&PageRequest::default()).await.unwrap();
    assert_eq!(sb.token_requests(), 1, "one grant for every call");
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    src.sites(&PageRequest::default()).await.unwrap();
    assert_eq!(sb.token_requests(), 2, "re-granted at 75 % of its life");
    sb.set_token_life(Duration::from_secs(3600));
    sb.revoke_tokens();
    let before = sb.api_requests();
    let page = src.sites(&PageRequest::default()).await.unwrap();
    assert_eq!(page.records.len(), 14);
    assert_eq!(sb.token_requests(), 3, "one new grant after the 401");
    assert_eq!(sb.api_requests() - before, 2, "the 401 and its repeat");
    let scopes: Vec<String> = sb
        .seen()
        .iter()
        .filter(|r| r.path == "/v1/token")
        .map(|r| {
            r.body.as_ref().unwrap()["scope"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        scopes[0].contains("platform.devices.read"),
        "the first asks for all: {scopes:?}"
    );
    for later in &scopes[1..] {
        assert_eq!(
            later, "platform.companies.read platform.sites.read",
            "later grants ask for what was granted"
        );
    }
}

#[tokio::test]
async fn a_server_refusing_ungranted_scopes_still_gives_the_granted_ones() {
    let (sb, h) = start(Seed::Small).await;
    sb.set_strict_scopes(true);
    let p = providers(&h);
    let report = p
        .connector(ProviderKind::ConnectwiseAsio)
        .unwrap()
        .test(&creds(LIMITED_CLIENT_ID, LIMITED_CLIENT_SECRET), Utc::now())
        .await;
    assert_eq!(report.connection, ConnectionOutcome::Ok, "{report:?}");
    let outcome = |a: &str| {
        report
            .areas
            .iter()
            .find(|x| x.area == a)
            .unwrap()
            .outcome
            .clone()
    };
    assert_eq!(outcome("companies"), AreaResult::Granted);
    assert!(matches!(
        outcome("devices"),
        AreaResult::NotPermitted { .. }
    ));
    let asked = sb.token_requests();
    let src = source(&p, &creds(LIMITED_CLIENT_ID, LIMITED_CLIENT_SECRET), None).await;
    src.sites(&PageRequest::default()).await.unwrap();
    assert_eq!(sb.token_requests(), asked, "the token is reused");
    // A wrong secret is not probed scope by scope.
    let before = sb.token_requests();
    let wrong = p
        .connector(ProviderKind::ConnectwiseAsio)
        .unwrap()
        .test(&creds(DEMO_CLIENT_ID, "nope"), Utc::now())
        .await;
    assert!(matches!(
        wrong.connection,
        ConnectionOutcome::AuthFailed { .. }
    ));
    assert!(
        sb.token_requests() - before <= 2,
        "interactive retry at most"
    );
}

#[tokio::test]
async fn concurrent_pages_wait_for_one_token_request() {
    let (sb, h) = start(Seed::Small).await;
    let p = providers(&h);
    let src = source(&p, &demo(), Some(3)).await;
    let src: &dyn RmmSource = &*src;
    let reqs = vec![PageRequest::default(); 8];
    let pages = futures_util::future::join_all(reqs.iter().map(|r| src.devices(r))).await;
    assert!(pages.iter().all(|p| p.is_ok()), "{pages:?}");
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
async fn every_call_sends_origin_user_agent_and_a_fresh_request_id() {
    let (sb, h) = start(Seed::Small).await;
    let p = providers(&h);
    let src = source(&p, &demo(), Some(4)).await;
    walk(|r| {
        let src = &src;
        async move { src.devices(&r).await }
    })
    .await;
    let seen = sb.seen();
    // The sandbox answers 400 without the headers: every request went through.
    let ids: Vec<String> = seen.iter().map(|r| r.request_id.clone().unwrap()).collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a fresh X-Request-ID per call");
    assert!(ids.len() > 5);
}

#[tokio::test]
async fn companies_map_with_their_connectwise_manage_identity() {
    let (sb, h) = start(Seed::Small).await;
    let p = providers(&h);
    let src = source(&p, &demo(), None).await;
    let page = src.sites(&PageRequest::default()).await.unwrap();
    assert_eq!(page.next, None, "companies are one unpaged list");
    assert_eq!(page.records.len(), 14);
    let cw = mspbridge_providers::connectwise::sandbox::generate(Seed::Small).companies;
    for (i, s) in page.records.iter().enumerate() {
        let c = sb.with_data(|d| {
            d.companies
                .iter()
                .position(|c| c.id.as_deref() == Some(s.external_id.as_str()))
                .unwrap()
        });
        assert_eq!(s.name, cw[c].name, "{i}");
        match &s.identity {
            Some(id) => {
                assert_eq!(id.provider, ProviderKind::ConnectwiseManage);
                assert_eq!(id.external_id, cw[c].id.to_string());
                assert_ne!(c % 3, 2);
            }
            // The IT Glue id of some is not a PSA.
            None => assert_eq!(c % 3, 2, "{s:?}"),
        }
        assert!(s.active);
    }
}

#[tokio::test]
async fn open_tickets_are_the_alerts_paged_by_page_number_and_closed_ones_are_left_out() {
    let (sb, h) = start(Seed::Companies(150)).await;
    let p = providers(&h);
    let src = source(&p, &demo(), None).await;
    let (tickets, statuses) = sb.with_data(|d| (d.tickets.clone(), d.statuses.clone()));
    let closed: Vec<String> = statuses
        .iter()
        .filter(|s| s.category.as_deref() == Some("Closed"))
        .filter_map(|s| s.id.clone())
        .collect();
    assert_eq!(closed.len(), 2);
    let open: Vec<_> = tickets
        .iter()
        .filter(|t| !closed.contains(t.status.as_ref().unwrap().id.as_ref().unwrap()))
        .collect();
    assert!(
        open.len() > TICKET_PAGE_SIZE && open.len() < tickets.len(),
        "more than a page of open tickets, and closed ones: {} of {}",
        open.len(),
        tickets.len()
    );
    let (alerts, rejected, pages) = walk(|r| {
        let src = &src;
        async move { src.open_alerts(&r).await }
    })
    .await;
    assert!(rejected.is_empty());
    assert_eq!(pages, open.len().div_ceil(TICKET_PAGE_SIZE));
    assert_eq!(alerts.len(), open.len(), "every open ticket once");
    let t = open[0];
    let a = alerts
        .iter()
        .find(|a| Some(&a.external_id) == t.id.as_ref())
        .unwrap();
    assert_eq!(
        Some(&a.priority),
        t.priority.as_ref().unwrap().name.as_ref()
    );
    assert_eq!(a.diagnostics, t.summary);
    assert_eq!(a.ticket_number, t.number);
    assert_eq!(a.site_external_id, t.company.as_ref().unwrap().id);
    assert_eq!(a.device_external_id, t.assets.as_ref().unwrap()[0].id);
    assert_eq!(a.raised_at, t.created_at);
    assert_eq!(a.context_type.as_deref(), Some("ticket"));
    assert!(!a.resolved);
    // An unknown priority word and a status category the spec does not list are kept.
    assert!(alerts.iter().any(|a| a.priority == "P5 - Planning"));
    assert!(alerts.iter().any(|a| {
        a.context
            .as_deref()
            .is_some_and(|c| c.contains("Waiting on Vendor"))
    }));
    let asked: Vec<_> = sb
        .seen()
        .into_iter()
        .filter(|r| r.path.ends_with("/ticketing/tickets"))
        .collect();
    assert_eq!(asked.len(), pages);
    for (i, r) in asked.iter().enumerate() {
        let q: BTreeMap<_, _> = r.query.iter().cloned().collect();
        assert_eq!(q["pageSize"], TICKET_PAGE_SIZE.to_string());
        assert_eq!(q["pageNum"], (i + 1).to_string(), "pages from 1");
        assert_eq!(q["statusIds"], format!("[notIn],{}", closed.join(",")));
    }

    // A key without the tickets scope: refused, naming the scope.
    let limited = source(&p, &creds(LIMITED_CLIENT_ID, LIMITED_CLIENT_SECRET), None).await;
    match limited.open_alerts(&PageRequest::default()).await {
        Err(SourceError::NotPermitted { message, setting }) => {
            assert!(message.contains("platform.tickets.read"), "{message}");
            assert!(setting.contains("Platform - Tickets - Read"), "{setting}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_ticket_list_refuses_half_a_page_and_answers_nothing_past_the_end() {
    let (_sb, h) = start(Seed::Small).await;
    let http = reqwest::Client::new();
    let base = h.base_url();
    let token = raw_token(&http, &base, "platform.tickets.read").await;
    let get = |q: &'static str| {
        let http = http.clone();
        let url = format!("{base}/api/platform/v2/service/ticketing/tickets{q}");
        let bearer = format!("Bearer {token}");
        async move {
            let r = http
                .get(url)
                .header("Authorization", bearer)
                .header("Origin", "http://test")
                .header("User-Agent", "test")
                .header("X-Request-ID", "00000000-0000-4000-8000-000000000000")
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    let (status, body) = get("?pageSize=10").await;
    assert_eq!(status, 400);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("together")
    );
    let (status, body) = get("?pageSize=2&pageNum=1").await;
    assert_eq!(status, 200);
    assert!(body["totalCount"].as_i64().unwrap() > 2);
    assert_eq!(body["tickets"].as_array().unwrap().len(), 2);
    let (status, body) = get("?pageSize=2&pageNum=999").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"tickets": [], "totalCount": 0}));
}

#[tokio::test]
async fn paging_at_a_non_default_page_size_gives_every_endpoint_once_across_batches_of_4() {
    let (sb, h) = start(Seed::Companies(13)).await;
    sb.set_page_size(50);
    let p = providers(&h);
    let src = source(&p, &demo(), Some(3)).await;
    let (devices, rejected, pages) = walk(|r| {
        let src = &src;
        async move { src.devices(&r).await }
    })
    .await;
    assert!(rejected.is_empty(), "{rejected:?}");
    let want: Vec<(String, String)> = sb.with_data(|d| {
        d.endpoints
            .iter()
            .map(|p| {
                (
                    p.endpoint.endpoint_id.clone().unwrap(),
                    p.company_id.clone(),
                )
            })
            .collect()
    });
    let mut got: Vec<(String, String)> = devices
        .iter()
        .map(|d| (d.external_id.clone(), d.site_external_id.clone().unwrap()))
        .collect();
    let unique: HashSet<&(String, String)> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "no endpoint twice");
    got.sort();
    let mut want = want;
    want.sort();
    assert_eq!(got, want, "every endpoint, with its company");
    assert!(pages > 4, "{pages}");
    let posts: Vec<_> = sb
        .seen()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/endpoints"))
        .collect();
    let mut batches = HashSet::new();
    for r in &posts {
        let q: BTreeMap<_, _> = r.query.iter().cloned().collect();
        assert_eq!(q["limit"], "3");
        assert!(q["field"].split(',').count() <= 15);
        let body = r.body.as_ref().unwrap();
        assert_eq!(body["resourceType"], "company");
        let n = body["resources"].as_array().unwrap().len();
        assert!((1..=4).contains(&n), "{n}");
        batches.insert(body["resources"].to_string());
    }
    assert_eq!(batches.len(), 4, "13 companies in batches of 4");
    assert!(
        posts
            .iter()
            .any(|r| r.query.iter().any(|(k, v)| k == "cursor" && v != "0"))
    );
    // Online state from the heartbeats, where Asio has one.
    let beats = sb.with_data(|d| d.heartbeats.clone());
    for d in &devices {
        match beats.get(&d.external_id) {
            Some((online, _)) => {
                assert_eq!(d.online, *online);
                assert!(d.last_seen.is_some());
            }
            None => assert_eq!(d.online, None),
        }
    }
    assert!(devices.iter().any(|d| d.online == Some(true)));
}

#[tokio::test]
async fn nulls_and_unknown_enum_values_keep_the_row() {
    let (sb, h) = start(Seed::Companies(3)).await;
    let p = providers(&h);
    let id = sb.with_data(|d| d.endpoints[0].endpoint.endpoint_id.clone().unwrap());
    for (field, value) in [
        ("endpointType", json!("HolographicTerminal")),
        ("type", json!("Quantum")),
        ("virtualType", json!(null)),
        ("os", json!(null)),
        ("system", json!("not an object")),
        ("ipAddress", json!(null)),
        ("antiViruses", json!([{"name": null}])),
        ("friendlyName", json!(null)),
        ("createdAt", json!(null)),
        ("deviceName", json!(null)),
    ] {
        sb.set_raw_field("endpoints", &id, field, value);
    }
    let cid = sb.with_data(|d| d.companies[0].id.clone().unwrap());
    sb.set_raw_field("companies", &cid, "externalIds", json!(null));
    sb.set_raw_field(
        "companies",
        &cid,
        "activityStatus",
        json!({"activeFlag": null, "name": "Onboarding"}),
    );
    let src = source(&p, &demo(), None).await;
    let (devices, rejected, _) = walk(|r| {
        let src = &src;
        async move { src.devices(&r).await }
    })
    .await;
    assert!(rejected.is_empty(), "{rejected:?}");
    let d = devices.iter().find(|d| d.external_id == id).unwrap();
    assert_eq!(d.device_class.as_deref(), Some("HolographicTerminal"));
    assert_eq!(d.category.as_deref(), Some("Quantum"));
    assert_eq!(
        (
            d.operating_system.as_deref(),
            d.model.as_deref(),
            d.internal_ip.as_deref()
        ),
        (None, None, None)
    );
    assert_eq!(d.created_at, None);
    let sites = src.sites(&PageRequest::default()).await.unwrap();
    assert!(sites.rejected.is_empty());
    let s = sites.records.iter().find(|s| s.external_id == cid).unwrap();
    assert_eq!(s.identity, None);
    assert!(s.active);
}

#[tokio::test]
async fn a_bad_row_is_rejected_alone_with_its_id_and_field() {
    let (sb, h) = start(Seed::Companies(4)).await;
    let p = providers(&h);
    let (a, b, total) = sb.with_data(|d| {
        (
            d.endpoints[0].endpoint.endpoint_id.clone().unwrap(),
            d.endpoints[1].endpoint.endpoint_id.clone().unwrap(),
            d.endpoints.len(),
        )
    });
    sb.set_raw_field("endpoints", &a, "createdAt", json!("yesterday"));
    sb.set_raw_field("endpoints", &b, "deviceName", json!(42));
    let cid = sb.with_data(|d| d.companies[1].id.clone().unwrap());
    sb.remove_raw_field("companies", &cid, "id");
    let src = source(&p, &demo(), Some(2)).await;
    let sites = src.sites(&PageRequest::default()).await.unwrap();
    assert_eq!(sites.records.len(), 3);
    assert_eq!(sites.rejected.len(), 1);
    assert!(
        sites.rejected[0].reason.contains("`id`"),
        "{:?}",
        sites.rejected
    );
    let (devices, rejected, _) = walk(|r| {
        let src = &src;
        async move { src.devices(&r).await }
    })
    .await;
    // The company without an id cannot be asked for: its endpoints are not read.
    let of_cid = sb.with_data(|d| d.endpoints.iter().filter(|p| p.company_id == cid).count());
    let lost = [&a, &b]
        .iter()
        .filter(|x| {
            sb.with_data(|d| {
                d.endpoints.iter().any(|p| {
                    p.company_id == cid && p.endpoint.endpoint_id.as_deref() == Some(x.as_str())
                })
            })
        })
        .count();
    assert_eq!(devices.len() + rejected.len(), total - of_cid);
    assert_eq!(rejected.len(), 2 - lost, "{rejected:?}");
    for r in &rejected {
        let id = r.external_id.clone().unwrap();
        if id == a {
            assert!(r.reason.contains("`createdAt`"), "{}", r.reason);
        } else {
            assert_eq!(id, b);
            assert!(r.reason.contains("`deviceName`"), "{}", r.reason);
        }
    }
}

#[tokio::test]
async fn rate_buckets_are_respected_and_a_429_is_retried() {
    let (sb, h) = start(Seed::Companies(8)).await;
    sb.set_bucket_limit(BucketLimit {
        limit: 3,
        window: Duration::from_secs(1),
    });
    let p = providers(&h);
    let src = source(&p, &demo(), Some(4)).await;
    let (devices, _, pages) = walk(|r| {
        let src = &src;
        async move { src.devices(&r).await }
    })
    .await;
    let total = sb.with_data(|d| d.endpoints.len());
    assert_eq!(devices.len(), total);
    assert!(pages > 3, "more calls than one bucket holds: {pages}");
    assert_eq!(sb.too_many_requests(), 0, "waited for the reset instead");
    assert!(sb.seen().iter().any(|r| r.path == "/v1/rate_limits"));

    // A 429 the buckets did not predict: retried after its Retry-After.
    sb.set_bucket_limit(BucketLimit::default());
    sb.faults.push(
        "/company/companies",
        Fault::Status {
            status: 429,
            body: r#"{"code":"429","message":"slow down"}"#.into(),
            retry_after: Some(1),
        },
    );
    let started = std::time::Instant::now();
    let page = src.sites(&PageRequest::default()).await.unwrap();
    assert_eq!(page.records.len(), 8);
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(sb.faults.pending(), 0);
}

#[tokio::test]
async fn the_four_error_shapes_are_read() {
    let (sb, h) = start(Seed::Small).await;
    let p = providers(&h);
    let src = source(&p, &demo(), None).await;
    for (body, want) in [
        (r#"{"code":"400","message":"shape one"}"#, "shape one"),
        (
            r#"{"error":"shape_two","description":"described"}"#,
            "shape_two",
        ),
        (r#"{"description":"only described"}"#, "only described"),
        (
            r#"{"message":"shape three","payload":null,"type":"BadRequest"}"#,
            "shape three",
        ),
        (r#"{"errors":[{"message":"shape four"}]}"#, "shape four"),
    ] {
        sb.faults.push(
            "/company/companies",
            Fault::Status {
                status: 400,
                body: body.into(),
                retry_after: None,
            },
        );
        let e = src.sites(&PageRequest::default()).await.unwrap_err();
        assert!(e.to_string().contains(want), "{body}: {e}");
    }
    let wrong = source(&p, &creds(DEMO_CLIENT_ID, "nope"), None).await;
    match wrong.sites(&PageRequest::default()).await.unwrap_err() {
        SourceError::Auth(m) => assert!(m.contains("invalid_client"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_sandbox_enforces_fan_in_and_field_limits() {
    let (sb, h) = start(Seed::Companies(6)).await;
    let client = reqwest::Client::new();
    let base = h.base_url();
    let token = raw_token(&client, &base, "platform.devices.read").await;
    let token = token.as_str();
    let ids: Vec<String> =
        sb.with_data(|d| d.companies.iter().map(|c| c.id.clone().unwrap()).collect());
    let post = |resources: &[String], field: String| {
        client
            .post(format!(
                "{base}/api/platform/v2/device/categories/all/endpoints?field={field}"
            ))
            .header("Origin", "t")
            .header("User-Agent", "t")
            .header("X-Request-ID", "2")
            .bearer_auth(token)
            .json(&json!({"resourceType": "company", "resources": resources}))
            .send()
    };
    assert_eq!(
        post(&ids[..4], "friendlyName".into())
            .await
            .unwrap()
            .status(),
        200
    );
    let five = post(&ids[..5], "friendlyName".into()).await.unwrap();
    assert_eq!(five.status(), 400);
    let sixteen: Vec<String> = (0..16).map(|i| format!("f{i}")).collect();
    assert_eq!(
        post(&ids[..1], sixteen.join(",")).await.unwrap().status(),
        400
    );
}

#[tokio::test]
async fn a_device_read_alone_gives_its_hardware_heartbeat_and_patch_summary() {
    let (sb, h) = start(Seed::Small).await;
    let p = providers(&h);
    let src = source(&p, &demo(), None).await;
    let (devices, _, _) = walk(|r| {
        let src = &src;
        async move { src.devices(&r).await }
    })
    .await;
    let key = |d: &mspbridge_domain::rmm::ExtDevice| mspbridge_domain::rmm::DeviceKey {
        external_id: d.external_id.clone(),
        site_external_id: d.site_external_id.clone(),
        sub_site: d.sub_site.clone(),
    };
    // The list keeps each endpoint's Asio site: reading it alone needs it.
    for d in &devices {
        let placed = sb.with_data(|x| {
            x.endpoints
                .iter()
                .find(|p| p.endpoint.endpoint_id.as_ref() == Some(&d.external_id))
                .unwrap()
                .clone()
        });
        assert_eq!(d.sub_site.as_deref(), Some(placed.site_id.as_str()));
    }
    let pc = devices
        .iter()
        .find(|d| {
            d.operating_system.is_some()
                && sb.with_data(|x| {
                    x.heartbeats
                        .get(&d.external_id)
                        .is_some_and(|h| h.0.is_some())
                })
        })
        .unwrap();
    let r = src.device_refresh(&key(pc)).await.unwrap();
    let beat = sb.with_data(|x| x.heartbeats[&pc.external_id].clone());
    assert_eq!(r.online, beat.0);
    assert!(r.last_seen.is_some());
    let fact = |k: &str| {
        r.facts
            .iter()
            .find(|(l, _)| l == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {k} in {:?}", r.facts))
    };
    assert_eq!(fact("Memory"), "16.0 GiB");
    assert!(fact("Processor").contains("(8 cores)"));
    assert!(fact("MAC addresses").starts_with("00:1A:2B:3C"));
    assert!(fact("Users").contains("Administrator"));
    assert!(fact("Disks").contains("476.9 GiB"));
    let patch = r.patch.clone().expect("a patch summary");
    assert!(patch.installed.unwrap() >= 40);
    assert!(patch.compliance.is_some() && patch.policy.is_some() && patch.assessed_at.is_some());
    let seen = sb.seen();
    let detail = seen
        .iter()
        .find(|s| s.path.contains("/device/companies/"))
        .unwrap();
    assert_eq!(
        detail.path,
        format!(
            "/api/platform/v2/device/companies/{}/sites/{}/endpoints/{}",
            pc.site_external_id.as_deref().unwrap(),
            pc.sub_site.as_deref().unwrap(),
            pc.external_id
        )
    );
    let field = detail.query.iter().find(|(k, _)| k == "field").unwrap();
    assert_eq!(field.1.split(',').count(), 15);
    assert!(
        seen.iter()
            .any(|s| s.path == format!("/api/platform/v2/patching/{}/patches", pc.external_id))
    );

    // A firewall has no patch data (404): said in words, the rest still read.
    let fw = devices
        .iter()
        .find(|d| d.device_class.as_deref() == Some("Firewall"))
        .unwrap();
    let r = src.device_refresh(&key(fw)).await.unwrap();
    assert!(r.patch.is_none());
    assert_eq!(
        r.patch_note.as_deref(),
        Some("ConnectWise Asio has no patch data for this device")
    );
    // A device stored before its site was kept; one Asio no longer has.
    let mut old = key(pc);
    old.sub_site = None;
    match src.device_refresh(&old).await {
        Err(SourceError::Unavailable(m)) => assert!(m.contains("next sync"), "{m}"),
        other => panic!("{other:?}"),
    }
    let mut gone = key(pc);
    gone.external_id = "00000000-0000-4000-8000-00000000dead".into();
    match src.device_refresh(&gone).await {
        Err(SourceError::Unavailable(m)) => assert!(m.contains("no device"), "{m}"),
        other => panic!("{other:?}"),
    }
}
