#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Halo against its sandbox: Test connection (good credentials, a wrong secret, an
//! unknown tenant, a wrong authorisation URL, an application without agent permission,
//! the outbound policy), paging driven by `record_count` (a full last page, an empty
//! tenant, a count that grows during a run), incremental reads, the token cache and its
//! renewal after a 401, the rate limit (spreading and 429 back-off), unreadable rows, and
//! every request checked against Halo's OpenAPI document.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::integration::*;
use mspbridge_domain::validate::{Credentials, validate_credentials};
use mspbridge_providers::halo::client::{HaloError, HaloLimits};
use mspbridge_providers::halo::sandbox::*;
use mspbridge_providers::halo::wire::User;
use mspbridge_providers::http::RetryPolicy;
use mspbridge_providers::source::{PageRequest, PsaSource, SourceError};
use mspbridge_providers::tickets::{NewVendorTicket, TicketDefaults};
use mspbridge_providers::{OutboundPolicy, ProviderConfig, Providers};
use mspbridge_sandbox::{SandboxHandle, Seed, loopback_listener};

async fn start(seed: Seed) -> (HaloSandbox, SandboxHandle) {
    let sb = HaloSandbox::new(seed);
    let handle = sb.serve(loopback_listener().await.unwrap()).unwrap();
    (sb, handle)
}

fn creds(h: &SandboxHandle, auth_path: &str, tenant: &str, id: &str, secret: &str) -> Credentials {
    let mut input = BTreeMap::new();
    let host = h.host();
    input.insert(
        "auth_server_url".to_string(),
        format!("https://{host}{auth_path}"),
    );
    input.insert(
        "resource_server_url".to_string(),
        format!("https://{host}/api"),
    );
    input.insert("tenant".to_string(), tenant.to_string());
    input.insert("client_id".to_string(), id.to_string());
    input.insert("client_secret".to_string(), secret.to_string());
    validate_credentials(ProviderKind::HaloPsa.descriptor(), &input, false)
        .unwrap()
        .0
}

fn good(h: &SandboxHandle) -> Credentials {
    creds(h, "/auth", DEMO_TENANT, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)
}

/// Each test gets its own rolling window (the window is shared per sandbox address).
fn providers(allow_private: bool, limits: HaloLimits) -> Providers {
    Providers::new(ProviderConfig {
        outbound: OutboundPolicy { allow_private },
        halo_limits: limits,
        ..Default::default()
    })
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_secs(5),
        budget: 10_000,
        timeout: Duration::from_secs(5),
    }
}

async fn test_with(c: &Credentials, allow_private: bool) -> TestReport {
    providers(allow_private, HaloLimits::default())
        .connector(ProviderKind::HaloPsa)
        .unwrap()
        .test(c, Utc::now())
        .await
}

async fn source(c: &Credentials, limits: HaloLimits, page: Option<usize>) -> Box<dyn PsaSource> {
    providers(true, limits)
        .psa_source(ProviderKind::HaloPsa, c, fast_retry(), page)
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn test_connection_reports_every_area_and_each_failure_in_words() {
    let (sb, h) = start(Seed::Small).await;
    let r = test_with(&good(&h), true).await;
    assert_eq!(r.connection, ConnectionOutcome::Ok, "{r:?}");
    let by: HashMap<_, _> = r
        .areas
        .iter()
        .map(|a| (a.area.as_str(), &a.outcome))
        .collect();
    assert_eq!(by["companies"], &AreaResult::Granted);
    assert_eq!(by["contacts"], &AreaResult::Granted);
    assert_eq!(by["technicians"], &AreaResult::Granted);
    assert_eq!(by["tickets"], &AreaResult::Granted);
    // An empty ticket list is reported as such.
    sb.with_data(|d| d.tickets.clear());
    let r = test_with(&good(&h), true).await;
    let tickets = r.areas.iter().find(|a| a.area == "tickets").unwrap();
    assert_eq!(tickets.outcome, AreaResult::GrantedNoData);

    let wrong_secret = creds(&h, "/auth", DEMO_TENANT, DEMO_CLIENT_ID, "nope");
    let r = test_with(&wrong_secret, true).await;
    assert!(
        matches!(&r.connection, ConnectionOutcome::AuthFailed { message, fix_hint }
            if message.contains("Invalid client_id or client_secret") && fix_hint.contains("Client ID and Secret")),
        "{r:?}"
    );
    let wrong_tenant = creds(&h, "/auth", "acme", DEMO_CLIENT_ID, DEMO_CLIENT_SECRET);
    let r = test_with(&wrong_tenant, true).await;
    assert!(
        matches!(&r.connection, ConnectionOutcome::AuthFailed { message, .. } if message.contains("Unknown tenant 'acme'")),
        "{r:?}"
    );
    let wrong_url = creds(
        &h,
        "/oauth",
        DEMO_TENANT,
        DEMO_CLIENT_ID,
        DEMO_CLIENT_SECRET,
    );
    let r = test_with(&wrong_url, true).await;
    assert!(
        matches!(&r.connection, ConnectionOutcome::Misconfigured { fix_hint, .. } if fix_hint.contains("/auth")),
        "{r:?}"
    );
    let limited = creds(
        &h,
        "/auth",
        DEMO_TENANT,
        LIMITED_CLIENT_ID,
        LIMITED_CLIENT_SECRET,
    );
    let r = test_with(&limited, true).await;
    let agents = r.areas.iter().find(|a| a.area == "technicians").unwrap();
    assert!(
        matches!(&agents.outcome, AreaResult::NotPermitted { setting, vendor_message }
            if setting.contains("Halo API") && vendor_message.contains("permission to view agents")),
        "{agents:?}"
    );
    // A tenant admin cannot point the connector at this server's own network.
    let r = test_with(&good(&h), false).await;
    assert!(
        matches!(&r.connection, ConnectionOutcome::Misconfigured { message, .. } if message.contains("loopback")),
        "{r:?}"
    );
}

#[tokio::test]
async fn paging_follows_record_count_including_a_full_last_page_and_an_empty_tenant() {
    // 30 clients at page size 10: three full pages and no fourth request.
    let (sb, h) = start(Seed::Companies(30)).await;
    let src = source(&good(&h), HaloLimits::default(), Some(10)).await;
    let mut req = PageRequest::default();
    let mut ids = Vec::new();
    loop {
        let p = src.companies(&req).await.unwrap();
        ids.extend(p.records.iter().map(|c| c.external_id.clone()));
        match p.next {
            Some(n) => req.after = Some(n),
            None => break,
        }
    }
    assert_eq!(ids.len(), 30);
    let client_calls = sb.seen().iter().filter(|r| r.path == "/api/Client").count();
    assert_eq!(
        client_calls, 3,
        "a full last page is not followed by an empty request"
    );
    assert_eq!(sb.tokens_issued(), 1, "one token for the whole run");

    // An empty tenant: one request, nothing, no next page.
    sb.with_data(|d| {
        d.clients.clear();
        d.users.clear();
    });
    let p = src.companies(&PageRequest::default()).await.unwrap();
    assert!(p.records.is_empty() && p.next.is_none());
}

#[tokio::test]
async fn a_record_count_that_grows_during_a_run_is_followed() {
    let (sb, h) = start(Seed::Companies(2)).await;
    let src = source(&good(&h), HaloLimits::default(), Some(10)).await;
    let p1 = src.contacts(&PageRequest::default()).await.unwrap();
    assert_eq!((p1.records.len(), p1.next.as_deref()), (10, Some("2")));
    // 15 users are added while the run is between pages.
    sb.with_data(|d| {
        let template = d.users[0].clone();
        for i in 0..15 {
            d.users.push(User {
                id: 10_000 + i,
                ..template.clone()
            });
        }
    });
    let mut req = PageRequest {
        since: None,
        after: p1.next,
    };
    let mut n = p1.records.len();
    loop {
        let p = src.contacts(&req).await.unwrap();
        n += p.records.len();
        match p.next {
            Some(t) => req.after = Some(t),
            None => break,
        }
    }
    assert_eq!(n, 35, "every user, including those added mid-run");
}

#[tokio::test]
async fn incremental_reads_send_lastupdatefromdate_and_get_only_changes() {
    let (sb, h) = start(Seed::Companies(10)).await;
    let since = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
    sb.with_data(|d| d.users[3].ulastupdate = Some(since + chrono::Duration::hours(1)));
    let src = source(&good(&h), HaloLimits::default(), None).await;
    let p = src
        .contacts(&PageRequest {
            since: Some(since),
            after: None,
        })
        .await
        .unwrap();
    assert_eq!(p.records.len(), 1);
    let last = sb
        .seen()
        .into_iter()
        .rfind(|r| r.path == "/api/Users")
        .unwrap();
    assert!(
        last.query.contains(&(
            "lastupdatefromdate".into(),
            "2027-01-01T00%3A00%3A00.000".into()
        )),
        "{last:?}"
    );
}

#[tokio::test]
async fn a_revoked_token_is_renewed_once_and_a_refused_one_is_an_auth_error() {
    let (sb, h) = start(Seed::Small).await;
    let src = source(&good(&h), HaloLimits::default(), None).await;
    src.companies(&PageRequest::default()).await.unwrap();
    sb.revoke_tokens();
    src.companies(&PageRequest::default()).await.unwrap();
    assert_eq!(sb.tokens_issued(), 2, "renewed after the 401");

    let bad = creds(&h, "/auth", DEMO_TENANT, DEMO_CLIENT_ID, "wrong");
    let src = source(&bad, HaloLimits::default(), None).await;
    let e = src.companies(&PageRequest::default()).await.unwrap_err();
    assert!(matches!(e, SourceError::Auth(_)), "{e:?}");
}

#[tokio::test]
async fn the_rate_limit_is_spread_and_a_429_backs_off_the_whole_window() {
    let (sb, h) = start(Seed::Companies(30)).await;
    // The connector keeps to 8 requests per 400 ms by itself: no 429 from a sandbox with
    // the same limit, and the 12 requests take at least one window.
    sb.set_rate_limit(8, Duration::from_millis(400));
    let limits = HaloLimits {
        requests: 8,
        window: Duration::from_millis(400),
        backoff_floor: Duration::from_millis(300),
    };
    let src = source(&good(&h), limits, Some(3)).await;
    let started = std::time::Instant::now();
    let mut req = PageRequest::default();
    let mut pages = 0;
    loop {
        let p = src.companies(&req).await.unwrap();
        pages += 1;
        match p.next {
            Some(n) => req.after = Some(n),
            None => break,
        }
    }
    assert_eq!(pages, 10);
    assert!(started.elapsed() >= Duration::from_millis(400));

    // A sandbox stricter than the connector thinks: 429s, backed off, and still complete.
    let (sb2, h2) = start(Seed::Companies(30)).await;
    sb2.set_rate_limit(4, Duration::from_millis(300));
    let limits = HaloLimits {
        requests: 50,
        window: Duration::from_millis(300),
        backoff_floor: Duration::from_millis(300),
    };
    let src = source(&good(&h2), limits, Some(3)).await;
    let mut req = PageRequest::default();
    let mut n = 0;
    loop {
        let p = src.companies(&req).await.unwrap();
        n += p.records.len();
        match p.next {
            Some(t) => req.after = Some(t),
            None => break,
        }
    }
    assert_eq!(n, 30, "every page read despite the 429s");
    assert!(
        sb2.seen().len() > 11,
        "the 429s were retried (requests: {})",
        sb2.seen().len()
    );
}

#[tokio::test]
async fn an_unreadable_user_is_rejected_with_its_field_and_the_page_goes_on() {
    let (sb, h) = start(Seed::Companies(3)).await;
    sb.with_data(|d| {
        d.users[1].ulastupdate = None;
    });
    // Halo sends a date the connector cannot read.
    sb.set_raw_field("users", 2, "ulastupdate", serde_json::json!("yesterday"));
    let src = source(&good(&h), HaloLimits::default(), None).await;
    let p = src.contacts(&PageRequest::default()).await.unwrap();
    assert_eq!(p.rejected.len(), 1);
    assert_eq!(p.rejected[0].external_id.as_deref(), Some("2"));
    assert!(
        p.rejected[0].reason.contains("field `ulastupdate`"),
        "{:?}",
        p.rejected
    );
    assert_eq!(p.records.len(), 29);
}

/// Every request the connector makes is one Halo documents: the path exists with its method
/// and every query parameter is declared for it (`MSPBRIDGE_SPECS_DIR`, ../shared/specs by default); tickets, notes,
/// writes and the webhook registration included.
#[tokio::test]
async fn every_request_matches_the_halo_openapi_document() {
    let Some(spec) = mspbridge_sandbox::vendor_spec("halo/halo-api-v2.openapi.json") else {
        return;
    };
    let (sb, h) = start(Seed::Companies(12)).await;
    let c = good(&h);
    test_with(&c, true).await;
    let src = source(&c, HaloLimits::default(), Some(5)).await;
    let since = Some(Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap());
    for since in [None, since] {
        let mut req = PageRequest { since, after: None };
        loop {
            let p = src.contacts(&req).await.unwrap();
            match p.next {
                Some(n) => req.after = Some(n),
                None => break,
            }
        }
        src.companies(&PageRequest { since, after: None })
            .await
            .unwrap();
    }
    src.technicians(&PageRequest::default()).await.unwrap();
    src.vocabulary(Utc::now()).await.unwrap();
    // Tickets: import with notes, every write, the webhook registration.
    sb.with_data(|d| add_tickets(d, 3, 2));
    let ts = src.ticket_source().unwrap();
    for since in [None, since] {
        let p = ts
            .tickets(&PageRequest { since, after: None })
            .await
            .unwrap();
        let ids: Vec<String> = p.records.iter().map(|t| t.external_id.clone()).collect();
        ts.ticket_notes(&ids[..2.min(ids.len())]).await.unwrap();
    }
    let p = providers(true, HaloLimits::default());
    let w = p
        .ticket_writer(ProviderKind::HaloPsa, &c, fast_retry())
        .await
        .unwrap()
        .unwrap();
    let new = NewVendorTicket {
        company_external_id: "10".into(),
        summary: "Spec check".into(),
        description: "d".into(),
        marker: "msb-spec-1".into(),
        defaults: TicketDefaults {
            board: Some("Projects".into()),
            status: Some("New".into()),
            priority: Some("Low".into()),
            ticket_type: Some("Service Request".into()),
            category: Some("Software".into()),
            impact: Some(2),
            urgency: Some(1),
        },
    };
    let id = w.create_ticket(&new).await.unwrap();
    assert_eq!(
        w.find_ticket(&new, Utc::now()).await.unwrap().as_deref(),
        Some(id.as_str())
    );
    w.add_note(&id, "n", true).await.unwrap();
    assert!(
        w.find_note(&id, "n", true, Utc::now())
            .await
            .unwrap()
            .is_some()
    );
    w.set_status(&id, "In Progress").await.unwrap();
    assert_eq!(
        w.ticket_status(&id).await.unwrap(),
        Some(("In Progress".to_string(), false))
    );
    p.register_ticket_webhook(ProviderKind::HaloPsa, &c, "https://portal.example/w/1", "s")
        .await
        .unwrap()
        .unwrap();

    let seen = sb.seen();
    assert!(seen.len() > 10);
    let mut checked_bodies = 0;
    for r in seen {
        if r.path == "/auth/token" {
            assert_eq!(r.method, "POST");
            continue;
        }
        let path = r.path.strip_prefix("/api").unwrap();
        // `/Tickets/1042` is the spec's `/Tickets/{id}`.
        let templated: String = path
            .split('/')
            .map(|seg| {
                if !seg.is_empty() && seg.chars().all(|c| c.is_ascii_digit()) {
                    "{id}"
                } else {
                    seg
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let op = &spec["paths"][templated.as_str()][r.method.to_lowercase()];
        assert!(
            op.is_object(),
            "{} {} is not in the Halo spec",
            r.method,
            r.path
        );
        let declared: Vec<&str> = op["parameters"]
            .as_array()
            .map(|ps| ps.iter().filter_map(|p| p["name"].as_str()).collect())
            .unwrap_or_default();
        for (k, _) in &r.query {
            assert!(
                declared.contains(&k.as_str()),
                "{} {}: parameter '{k}' is not declared in the spec ({declared:?})",
                r.method,
                r.path
            );
        }
        // A write's records: every field is a property of the schema the spec names.
        if let Some(body) = &r.body {
            let schema =
                op["requestBody"]["content"]["application/json"]["schema"]["items"]["$ref"]
                    .as_str()
                    .and_then(|s| s.rsplit('/').next())
                    .unwrap_or_else(|| {
                        panic!("{} {}: no array body in the spec", r.method, r.path)
                    });
            let props = &spec["components"]["schemas"][schema]["properties"];
            for record in body.as_array().expect("Halo writes are arrays") {
                for (k, v) in record.as_object().unwrap() {
                    assert!(
                        props[k.as_str()].is_object(),
                        "{} {}: field '{k}' is not in the spec's {schema}",
                        r.method,
                        r.path
                    );
                    // And its value has the type the spec gives it.
                    if let Err(why) = conforms(v, &props[k.as_str()], &spec) {
                        panic!("{} {}: {schema}.{k} = {v}: {why}", r.method, r.path);
                    }
                }
            }
            checked_bodies += 1;
        }
    }
    assert!(
        checked_bodies >= 4,
        "the writes' bodies were checked: {checked_bodies}"
    );
}

/// The token request takes the retry policy like every other: a 503 and a 429 on it are
/// retried, for a read and for a write (a write is sent once, its token is not).
#[tokio::test]
async fn a_transient_failure_of_the_token_request_is_retried_for_reads_and_writes() {
    let (sb, h) = start(Seed::Companies(3)).await;
    let transient = |status| mspbridge_sandbox::Fault::Status {
        status,
        body: "{}".into(),
        retry_after: Some(0),
    };
    sb.faults.push("/auth/token", transient(503));
    sb.faults.push("/auth/token", transient(429));
    let limits = HaloLimits {
        backoff_floor: Duration::from_millis(10),
        ..HaloLimits::default()
    };
    // A fresh API application id: the token cache is per application.
    let c = creds(&h, "/auth", DEMO_TENANT, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET);
    let src = source(&c, limits, None).await;
    let page = src.companies(&PageRequest::default()).await.unwrap();
    assert_eq!(page.records.len(), 3);
    assert_eq!(sb.faults.pending(), 0, "both token faults were met");

    // A write is sent once, but the token it needs is retried: the write meets a 401
    // (a revoked token), so it asks for a new one, which fails once with a 502.
    let client = mspbridge_providers::halo::Halo::new(std::sync::Arc::new(ProviderConfig {
        outbound: OutboundPolicy {
            allow_private: true,
        },
        halo_limits: limits,
        ..Default::default()
    }))
    .client(&c, fast_retry())
    .unwrap();
    sb.faults.push(
        "/api/Actions",
        mspbridge_sandbox::Fault::Status {
            status: 401,
            body: "{}".into(),
            retry_after: None,
        },
    );
    sb.faults.push("/auth/token", transient(502));
    let written: Result<serde_json::Value, HaloError> = client
        .post_one("/Actions", serde_json::json!({"ticket_id": 1, "note": "x"}))
        .await;
    assert_eq!(
        sb.faults.pending(),
        0,
        "the 401 and the token's 502 were met"
    );
    assert!(
        !matches!(&written, Err(HaloError::Status { status: 502, .. })),
        "the token's 502 was retried: {written:?}"
    );
}

/// Whether `v` has the type the spec's property `prop` declares: integer, number, string
/// (a uuid where the format says so), boolean, array of its items, or a referenced object's
/// properties; `null` where the property is nullable. The Halo document also spells types
/// as C# (`int`, `bool`, `double`, `DateTime`, `List<int>`); those are read the same way.
fn conforms(
    v: &serde_json::Value,
    prop: &serde_json::Value,
    spec: &serde_json::Value,
) -> Result<(), String> {
    use serde_json::Value;
    if let Some(r) = prop["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap_or_default();
        let schema = &spec["components"]["schemas"][name];
        return match v {
            Value::Object(m) => m.iter().try_for_each(|(k, x)| {
                let p = &schema["properties"][k.as_str()];
                if p.is_object() {
                    conforms(x, p, spec).map_err(|e| format!("{name}.{k}: {e}"))
                } else {
                    Err(format!("'{k}' is not a property of {name}"))
                }
            }),
            Value::Null => Ok(()),
            other => Err(format!("{other} is not an object ({name})")),
        };
    }
    let nullable = prop["nullable"].as_bool().unwrap_or(false);
    let kind = prop["type"].as_str().unwrap_or("");
    let ok = match (kind, v) {
        (_, Value::Null) => nullable || kind.is_empty(),
        ("integer" | "int" | "long", Value::Number(n)) => n.is_i64() || n.is_u64(),
        ("number" | "double" | "float" | "decimal", Value::Number(_)) => true,
        ("boolean" | "bool", Value::Bool(_)) => true,
        ("string" | "DateTime", Value::String(s)) => {
            if prop["format"].as_str() == Some("uuid") {
                let parts: Vec<usize> = s.split('-').map(str::len).collect();
                return if parts == [8, 4, 4, 4, 12]
                    && s.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
                {
                    Ok(())
                } else {
                    Err(format!("'{s}' is not a uuid"))
                };
            }
            true
        }
        ("array", Value::Array(items)) => {
            return items
                .iter()
                .try_for_each(|x| conforms(x, &prop["items"], spec));
        }
        (k, Value::Array(_)) if k.starts_with("List<") => true,
        ("", _) => true,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "not a {kind}{}",
            if nullable { " or null" } else { "" }
        ))
    }
}

#[tokio::test]
async fn users_without_an_emailaddress_fall_back_to_email2_then_email3() {
    let (sb, h) = start(Seed::Companies(3)).await;
    sb.set_raw_field("users", 1, "emailaddress", serde_json::json!(null));
    sb.set_raw_field(
        "users",
        1,
        "email2",
        serde_json::json!("Second@Client.example"),
    );
    sb.set_raw_field("users", 2, "emailaddress", serde_json::json!(""));
    sb.set_raw_field("users", 2, "email2", serde_json::json!(" "));
    sb.set_raw_field(
        "users",
        2,
        "email3",
        serde_json::json!("third@client.example"),
    );
    let src = source(&good(&h), HaloLimits::default(), None).await;
    let p = src.contacts(&PageRequest::default()).await.unwrap();
    let email = |id: &str| {
        p.records
            .iter()
            .find(|c| c.external_id == id)
            .unwrap()
            .email
            .clone()
    };
    assert_eq!(email("1").as_deref(), Some("second@client.example"));
    assert_eq!(email("2").as_deref(), Some("third@client.example"));
}

/// Fields the Halo document declares nullable arrive as `null` in real payloads, and
/// `site_id` (a `number` in places) as a float: every such record is read, defaults taken;
/// only a client without a name is rejected, alone.
#[tokio::test]
async fn nullable_fields_sent_as_null_and_float_ids_are_read() {
    use serde_json::json;
    let (sb, h) = start(Seed::Small).await;
    sb.with_data(|d| mspbridge_providers::halo::sandbox::add_tickets(d, 2, 1));
    let (client, named_client, user, agent, ticket) = sb.with_data(|d| {
        (
            d.clients[0].id,
            d.clients[1].id,
            d.users[0].id,
            d.agents[0].id,
            d.tickets[0].id,
        )
    });
    sb.set_raw_field("clients", client, "name", json!(null));
    sb.set_raw_field("clients", named_client, "inactive", json!(null));
    for f in ["name", "firstname", "surname", "ismaincontact", "inactive"] {
        sb.set_raw_field("users", user, f, json!(null));
    }
    sb.set_raw_field("users", user, "site_id", json!(12.0));
    sb.set_raw_field("users", user, "client_id", json!(named_client as f64));
    for f in ["name", "firstname", "surname", "isdisabled"] {
        sb.set_raw_field("agents", agent, f, json!(null));
    }
    sb.set_raw_field("tickets", ticket, "summary", json!(null));
    sb.set_raw_field("tickets", ticket, "status_id", json!(null));
    let src = source(&good(&h), HaloLimits::default(), None).await;

    let companies = src.companies(&PageRequest::default()).await.unwrap();
    assert!(
        companies
            .records
            .iter()
            .any(|c| c.external_id == named_client.to_string() && c.active),
        "a null inactive is active"
    );
    assert_eq!(companies.rejected.len(), 1, "{:?}", companies.rejected);
    assert_eq!(companies.rejected[0].external_id, Some(client.to_string()));
    assert!(companies.rejected[0].reason.contains("no name"));

    let contacts = src.contacts(&PageRequest::default()).await.unwrap();
    assert!(contacts.rejected.is_empty(), "{:?}", contacts.rejected);
    let c = contacts
        .records
        .iter()
        .find(|c| c.external_id == user.to_string())
        .expect("the user with nulls is read");
    assert!(c.active && !c.primary, "{c:?}");
    assert_eq!(c.company_external_id, Some(named_client.to_string()));

    let techs = src.technicians(&PageRequest::default()).await.unwrap();
    assert!(techs.rejected.is_empty(), "{:?}", techs.rejected);
    assert!(
        techs
            .records
            .iter()
            .any(|t| t.external_id == agent.to_string() && t.active)
    );

    let tickets = src
        .ticket_source()
        .unwrap()
        .tickets(&PageRequest::default())
        .await
        .unwrap();
    assert!(tickets.rejected.is_empty(), "{:?}", tickets.rejected);
    assert!(
        tickets
            .records
            .iter()
            .any(|t| t.external_id == ticket.to_string())
    );
}
