#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Autotask against its sandbox: Test connection (good credentials, a wrong secret, an
//! unknown API user, a security level without Resources, the outbound policy), zone
//! discovery and the three headers, `nextPageUrl` paging (a full last page, an empty
//! tenant, records added during a run, a next page on a foreign host), incremental
//! filters, picklists, contact groups and the user-defined contact type, the integer
//! `isActive`, unreadable rows, validation errors (HTTP 500 with `errors`) not retried,
//! the database threshold read from `ThresholdInformation`, the thread limit, and every
//! request checked against Autotask's query rules.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use mspbridge_domain::SecretString;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::integration::*;
use mspbridge_domain::validate::{Credentials, validate_credentials};
use mspbridge_providers::autotask::client::{AutotaskClient, AutotaskConfig, AutotaskSettings};
use mspbridge_providers::autotask::sandbox::*;
use mspbridge_providers::autotask::wire::Contact;
use mspbridge_providers::http::RetryPolicy;
use mspbridge_providers::source::{PageRequest, PsaSource, SourceError};
use mspbridge_providers::{OutboundPolicy, ProviderConfig, Providers};
use mspbridge_sandbox::{Fault, SandboxHandle, Seed, loopback_listener};

async fn start(seed: Seed) -> (AutotaskSandbox, SandboxHandle) {
    let sb = AutotaskSandbox::new(seed);
    let handle = sb.serve(loopback_listener().await.unwrap()).unwrap();
    (sb, handle)
}

fn creds(user: &str, secret: &str, type_field: Option<&str>) -> Credentials {
    let mut input = BTreeMap::new();
    input.insert("username".to_string(), user.to_string());
    input.insert("secret".to_string(), secret.to_string());
    input.insert(
        "integration_code".to_string(),
        DEMO_INTEGRATION_CODE.to_string(),
    );
    if let Some(f) = type_field {
        input.insert("contact_type_field".to_string(), f.to_string());
    }
    validate_credentials(ProviderKind::Autotask.descriptor(), &input, false)
        .unwrap()
        .0
}

fn good() -> Credentials {
    creds(DEMO_USERNAME, DEMO_SECRET, None)
}

fn settings(h: &SandboxHandle) -> AutotaskSettings {
    AutotaskSettings {
        zone_lookup_url: AutotaskSandbox::zone_lookup_url(h),
        threshold_max_age: Duration::from_secs(3600),
        backoff_floor: Duration::from_millis(100),
        ..AutotaskSettings::default()
    }
}

fn providers(allow_private: bool, settings: AutotaskSettings) -> Providers {
    Providers::new(ProviderConfig {
        outbound: OutboundPolicy { allow_private },
        autotask: settings,
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

async fn test_with(h: &SandboxHandle, c: &Credentials, allow_private: bool) -> TestReport {
    providers(allow_private, settings(h))
        .connector(ProviderKind::Autotask)
        .unwrap()
        .test(c, Utc::now())
        .await
}

async fn source(h: &SandboxHandle, c: &Credentials, page: Option<usize>) -> Box<dyn PsaSource> {
    source_with(settings(h), c, page).await
}

async fn source_with(
    s: AutotaskSettings,
    c: &Credentials,
    page: Option<usize>,
) -> Box<dyn PsaSource> {
    providers(true, s)
        .psa_source(ProviderKind::Autotask, c, fast_retry(), page)
        .await
        .unwrap()
        .unwrap()
}

/// Every page of a pass.
macro_rules! all_pages {
    ($src:expr, $method:ident, $since:expr) => {{
        let mut req = PageRequest {
            since: $since,
            after: None,
        };
        let mut records = Vec::new();
        let mut pages = 0;
        loop {
            let p = $src.$method(&req).await.unwrap();
            pages += 1;
            records.extend(p.records);
            match p.next {
                Some(n) => req.after = Some(n),
                None => break,
            }
        }
        (records, pages)
    }};
}

#[tokio::test]
async fn test_connection_reports_every_area_and_each_failure_in_words() {
    let (sb, h) = start(Seed::Small).await;
    let r = test_with(&h, &good(), true).await;
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
    assert_eq!(by["contact_groups"], &AreaResult::Granted);
    let details: HashMap<_, _> = r.details.iter().cloned().collect();
    assert!(details["Zone"].contains("Sandbox"), "{details:?}");
    assert!(
        details["API"].ends_with("/ATServicesRest/V1.0"),
        "{details:?}"
    );
    assert!(
        details["API usage"].contains("of 10,000 requests in the last 60 minutes"),
        "{details:?}"
    );
    // Zone discovery first, without credentials; then every call with the three headers.
    let seen = sb.seen();
    assert_eq!(seen[0].path, "/zoneInformation");
    assert_eq!(
        seen[0].query,
        vec![("user".to_string(), DEMO_USERNAME.to_string())]
    );
    assert!(seen[0].headers.is_empty(), "{:?}", seen[0]);
    for r in &seen[1..] {
        let names: Vec<&str> = r.headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["ApiIntegrationCode", "UserName", "Secret"], "{r:?}");
    }

    let r = test_with(&h, &creds(DEMO_USERNAME, "wrong", None), true).await;
    assert!(
        matches!(&r.connection, ConnectionOutcome::AuthFailed { message, fix_hint }
            if message.contains("Authentication failed") && fix_hint.contains("API tracking identifier")),
        "{r:?}"
    );
    let r = test_with(&h, &creds("nobody@acme.example", DEMO_SECRET, None), true).await;
    assert!(
        matches!(&r.connection, ConnectionOutcome::Misconfigured { message, .. }
            if message.contains("no API user named 'nobody@acme.example'") && message.contains("Zone information could not be determined")),
        "{r:?}"
    );
    let r = test_with(&h, &creds(LIMITED_USERNAME, DEMO_SECRET, None), true).await;
    let res = r.areas.iter().find(|a| a.area == "technicians").unwrap();
    assert!(
        matches!(&res.outcome, AreaResult::NotPermitted { setting, vendor_message }
            if setting.contains("Security Level") && vendor_message.contains("does not allow access to Resources")),
        "{res:?}"
    );
    // Zone discovery naming a host that is not Autotask's: no credentials go there.
    sb.set_zone_url(Some(
        "https://webservices5.autotask.evil.example/ATServicesRest/",
    ));
    let before = sb.seen().len();
    let r = test_with(&h, &good(), true).await;
    assert!(
        matches!(&r.connection, ConnectionOutcome::Misconfigured { message, .. }
            if message.contains("webservices5.autotask.evil.example, which is not an Autotask host")),
        "{r:?}"
    );
    assert_eq!(sb.seen().len(), before + 1, "only the zone lookup was made");
    sb.set_zone_url(None);
    // A tenant admin cannot point the connector at this server's own network.
    let r = test_with(&h, &good(), false).await;
    assert!(
        matches!(&r.connection, ConnectionOutcome::Misconfigured { message, .. } if message.contains("loopback")),
        "{r:?}"
    );
}

#[tokio::test]
async fn paging_follows_next_page_url_including_a_full_last_page_and_an_empty_tenant() {
    // 30 companies at 10 per page: three pages and no fourth request.
    let (sb, h) = start(Seed::Companies(30)).await;
    let src = source(&h, &good(), Some(10)).await;
    let (companies, pages) = all_pages!(src, companies, None);
    assert_eq!((companies.len(), pages), (30, 3));
    let seen = sb.seen();
    let first: Vec<_> = seen
        .iter()
        .filter(|r| r.path == "/Companies/query")
        .collect();
    assert_eq!(first.len(), 1);
    let body = first[0].body.as_ref().unwrap();
    assert_eq!(body["MaxRecords"], 10);
    assert_eq!(
        body["filter"],
        serde_json::json!([{"op": "gt", "field": "id", "value": 0}])
    );
    let next = seen
        .iter()
        .filter(|r| r.path == "/Companies/query/next")
        .count();
    assert_eq!(
        next, 2,
        "a full last page is not followed by another request"
    );
    let ids: Vec<&String> = companies.iter().map(|c| &c.external_id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 30, "no duplicates across pages");

    // An empty tenant: one request, nothing, no next page.
    sb.with_data(|d| {
        d.companies.clear();
        d.contacts.clear();
    });
    let p = src.companies(&PageRequest::default()).await.unwrap();
    assert!(p.records.is_empty() && p.next.is_none());
    let p = src.contacts(&PageRequest::default()).await.unwrap();
    assert!(p.records.is_empty() && p.next.is_none());
}

#[tokio::test]
async fn contacts_added_during_a_run_are_read_and_a_foreign_next_page_host_is_refused() {
    let (sb, h) = start(Seed::Companies(2)).await;
    let src = source(&h, &good(), Some(10)).await;
    let p1 = src.contacts(&PageRequest::default()).await.unwrap();
    assert_eq!(p1.records.len(), 10);
    // 15 contacts are added while the run is between pages.
    sb.with_data(|d| {
        let template = d.contacts[0].clone();
        let top = d.contacts.iter().map(|c| c.id).max().unwrap();
        for i in 1..=15 {
            d.contacts.push(Contact {
                id: top + i,
                primary_contact: false,
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
    assert_eq!(n, 35, "every contact, including those added mid-run");

    // Autotask's next page on another host: credentials are not sent there.
    sb.set_next_page_host(Some("webservices.evil.example"));
    let p1 = src.contacts(&PageRequest::default()).await.unwrap();
    assert!(p1.next.is_some());
    let before = sb.seen().len();
    let e = src
        .contacts(&PageRequest {
            since: None,
            after: p1.next,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&e, SourceError::Unavailable(m) if m.contains("webservices.evil.example") && m.contains("not sending credentials")),
        "{e:?}"
    );
    assert_eq!(sb.seen().len(), before, "nothing was sent");
}

#[tokio::test]
async fn incremental_reads_filter_on_the_change_stamps_and_get_only_changes() {
    let (sb, h) = start(Seed::Companies(10)).await;
    let since = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
    let (changed_contact, changed_company) = sb.with_data(|d| {
        d.contacts[3].last_modified_date = Some(since + chrono::Duration::hours(1));
        d.companies[2].last_activity_date = Some(since + chrono::Duration::hours(2));
        (d.contacts[3].id, d.companies[2].id)
    });
    let src = source(&h, &good(), None).await;
    let req = PageRequest {
        since: Some(since),
        after: None,
    };
    let p = src.contacts(&req).await.unwrap();
    assert_eq!(
        p.records
            .iter()
            .map(|c| c.external_id.clone())
            .collect::<Vec<_>>(),
        vec![changed_contact.to_string()]
    );
    let p = src.companies(&req).await.unwrap();
    assert_eq!(p.records.len(), 1);
    assert_eq!(p.records[0].external_id, changed_company.to_string());
    let seen = sb.seen();
    let contacts = seen.iter().rfind(|r| r.path == "/Contacts/query").unwrap();
    assert_eq!(
        contacts.body.as_ref().unwrap()["filter"],
        serde_json::json!([{"op": "or", "items": [
            {"op": "gt", "field": "lastModifiedDate", "value": "2027-01-01T00:00:00.000Z"},
            {"op": "gt", "field": "lastActivityDate", "value": "2027-01-01T00:00:00.000Z"}
        ]}])
    );
    let companies = seen.iter().rfind(|r| r.path == "/Companies/query").unwrap();
    assert_eq!(
        companies.body.as_ref().unwrap()["filter"][0]["field"],
        "lastActivityDate"
    );
}

#[tokio::test]
async fn records_read_with_picklists_groups_flags_and_without_the_api_user() {
    let (sb, h) = start(Seed::Companies(20)).await;
    let data = sb.with_data(|d| d.clone());
    let src = source(&h, &good(), None).await;
    let (companies, _) = all_pages!(src, companies, None);
    let (contacts, _) = all_pages!(src, contacts, None);
    let (techs, _) = all_pages!(src, technicians, None);

    // Company types are the tenant's picklist labels.
    let c0 = &data.companies[0];
    let label = match c0.company_type {
        Some(1) => "Customer",
        Some(2) => "Lead",
        Some(3) => "Prospect",
        _ => "Vendor",
    };
    let got = companies
        .iter()
        .find(|c| c.external_id == c0.id.to_string())
        .unwrap();
    assert_eq!(got.types, vec![label.to_string()]);
    assert_eq!(got.identifier.as_deref(), Some("C00001"));
    assert_eq!(
        companies.iter().filter(|c| !c.active).count(),
        data.companies.iter().filter(|c| !c.is_active).count()
    );

    // isActive 0/1, primaryContact, and groups as contact types.
    let inactive = data.contacts.iter().filter(|c| c.is_active == 0).count();
    assert!(inactive > 0);
    assert_eq!(contacts.iter().filter(|c| !c.active).count(), inactive);
    assert_eq!(contacts.iter().filter(|c| c.primary).count(), 20);
    let m = &data.memberships[0];
    let grouped = contacts
        .iter()
        .find(|c| c.external_id == m.contact_id.to_string())
        .unwrap();
    let group = &data
        .groups
        .iter()
        .find(|g| g.id == m.contact_group_id)
        .unwrap()
        .name;
    assert_eq!(&grouped.types, &vec![group.clone()]);
    assert_eq!(
        contacts.iter().filter(|c| !c.types.is_empty()).count(),
        data.memberships.len()
    );

    // Resources are technicians; the connector's own API user is not.
    assert_eq!(techs.len(), data.resources.len() - 1);
    assert!(techs.iter().all(|t| t.identifier != DEMO_USERNAME));
    assert!(techs.iter().any(|t| !t.active), "an inactive resource");

    // The vocabulary: company types from the picklist, contact types from active groups.
    let v = src.vocabulary(Utc::now()).await.unwrap();
    assert_eq!(v.company_types, ["Customer", "Lead", "Prospect", "Vendor"]);
    assert_eq!(
        v.contact_types,
        ["Billing Contact", "Decision Maker", "IT Contact"]
    );

    // The configured user-defined field instead: its picklist labels.
    let src = source(
        &h,
        &creds(DEMO_USERNAME, DEMO_SECRET, Some("Contact Type")),
        None,
    )
    .await;
    let (by_udf, _) = all_pages!(src, contacts, None);
    let mut a: Vec<_> = contacts
        .iter()
        .map(|c| (c.external_id.clone(), c.types.clone()))
        .collect();
    let mut b: Vec<_> = by_udf
        .iter()
        .map(|c| (c.external_id.clone(), c.types.clone()))
        .collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "the sandbox's field mirrors the groups");
    let v = src.vocabulary(Utc::now()).await.unwrap();
    assert_eq!(
        v.contact_types,
        ["Billing Contact", "Decision Maker", "IT Contact"]
    );
}

#[tokio::test]
async fn an_unreadable_contact_is_rejected_with_its_field_and_the_page_goes_on() {
    let (sb, h) = start(Seed::Companies(3)).await;
    let id = sb.with_data(|d| d.contacts[1].id);
    sb.set_raw_field("contacts", id, "isActive", serde_json::json!("yes"));
    let src = source(&h, &good(), None).await;
    let p = src.contacts(&PageRequest::default()).await.unwrap();
    assert_eq!(p.rejected.len(), 1);
    assert_eq!(p.rejected[0].external_id, Some(id.to_string()));
    assert!(
        p.rejected[0].reason.contains("field `isActive`"),
        "{:?}",
        p.rejected
    );
    assert_eq!(p.records.len(), 29);
}

#[tokio::test]
async fn a_500_on_a_read_is_retried_with_or_without_errors() {
    let (sb, h) = start(Seed::Companies(3)).await;
    let src = source(&h, &good(), None).await;
    src.companies(&PageRequest::default()).await.unwrap();
    let count = |sb: &AutotaskSandbox| {
        sb.seen()
            .iter()
            .filter(|r| r.path == "/Companies/query")
            .count()
    };
    // "500 with an errors array is a refusal" is Autotask's rule for writes (trap 20): a
    // query answered so is the server's trouble, retried like any 5xx, and then succeeds.
    let before = count(&sb);
    sb.faults.push(
        "/Companies/query",
        Fault::Status {
            status: 500,
            body: r#"{"errors":["Object reference not set to an instance of an object."]}"#.into(),
            retry_after: None,
        },
    );
    let p = src.companies(&PageRequest::default()).await.unwrap();
    assert_eq!(p.records.len(), 3);
    assert_eq!(sb.faults.pending(), 0);
    assert_eq!(
        count(&sb),
        before + 1,
        "the retry reached the handler (the fault answered the first attempt)"
    );

    // A 500 without an errors array is an outage: retried, and the read succeeds.
    sb.faults.push(
        "/Companies/query",
        Fault::Status {
            status: 500,
            body: "Internal Server Error".into(),
            retry_after: None,
        },
    );
    let p = src.companies(&PageRequest::default()).await.unwrap();
    assert_eq!(p.records.len(), 3);

    // Wrong credentials are an authentication error for the engine.
    let bad = source(&h, &creds(DEMO_USERNAME, "wrong", None), None).await;
    let e = bad.companies(&PageRequest::default()).await.unwrap_err();
    assert!(matches!(e, SourceError::Auth(_)), "{e:?}");
}

/// Reads every company one per page: 30 requests plus the picklist and readings.
async fn read_companies_one_by_one(src: &dyn PsaSource) -> Result<usize, SourceError> {
    let mut req = PageRequest::default();
    let mut n = 0;
    loop {
        let p = src.companies(&req).await?;
        n += p.records.len();
        match p.next {
            Some(t) => req.after = Some(t),
            None => return Ok(n),
        }
    }
}

#[tokio::test]
async fn the_threshold_is_read_and_the_client_slows_down_before_the_database_suspends() {
    // A database of 60 requests per 3 s, already at 35 from other integrations: 30 more
    // pages would pass the threshold without pacing.
    let window = Duration::from_secs(3);
    let paced = |h: &SandboxHandle| AutotaskSettings {
        requests: 1_000,
        window,
        slow_down_at: 0.5,
        stop_at: 0.9,
        threshold_every: 5,
        ..settings(h)
    };
    let (sb, h) = start(Seed::Companies(30)).await;
    sb.set_threshold(60, window);
    sb.add_external_usage(35);
    let src = source_with(paced(&h), &good(), Some(1)).await;
    let started = std::time::Instant::now();
    assert_eq!(read_companies_one_by_one(src.as_ref()).await.unwrap(), 30);
    let (peak, refused, _) = sb.usage_peak();
    assert_eq!(refused, 0, "never suspended");
    assert!(peak <= 56, "stayed near 90 % of 60 (peak {peak})");
    assert!(
        started.elapsed() >= Duration::from_millis(1_500),
        "slowed down ({:?})",
        started.elapsed()
    );
    let readings = sb
        .seen()
        .iter()
        .filter(|r| r.path == "/ThresholdInformation")
        .count();
    assert!(readings >= 6, "read every 5 requests ({readings})");

    // The same run without pacing runs into the threshold.
    let (sb, h) = start(Seed::Companies(30)).await;
    sb.set_threshold(60, window);
    sb.add_external_usage(35);
    let unpaced = AutotaskSettings {
        slow_down_at: 10.0,
        stop_at: 10.0,
        ..paced(&h)
    };
    let src = source_with(unpaced, &good(), Some(1)).await;
    let _ = read_companies_one_by_one(src.as_ref()).await;
    assert!(sb.usage_peak().1 > 0, "the unpaced run was refused");
}

#[tokio::test]
async fn at_most_three_requests_per_endpoint_are_in_flight() {
    let (sb, h) = start(Seed::Companies(5)).await;
    sb.faults.set_latency(Duration::from_millis(300));
    let connect = |threads: usize| {
        let s = AutotaskSettings {
            threads_per_endpoint: threads,
            ..settings(&h)
        };
        async move {
            AutotaskClient::connect(
                AutotaskConfig {
                    username: DEMO_USERNAME.into(),
                    secret: SecretString::new(DEMO_SECRET),
                    integration_code: SecretString::new(DEMO_INTEGRATION_CODE),
                },
                &s,
                OutboundPolicy {
                    allow_private: true,
                },
                // One attempt: this test shows Autotask's refusal, which a retry would hide.
                RetryPolicy {
                    max_attempts: 1,
                    timeout: Duration::from_secs(5),
                    ..RetryPolicy::default()
                },
            )
            .await
            .unwrap()
        }
    };
    let filter = serde_json::json!([{"op": "gt", "field": "id", "value": 0}]);
    let client = connect(3).await;
    let started = std::time::Instant::now();
    let counts =
        futures_util::future::join_all((0..6).map(|_| client.count("Companies", &filter))).await;
    assert!(counts.iter().all(|c| matches!(c, Ok(5))), "{counts:?}");
    assert_eq!(sb.usage_peak().2, 0, "no thread-limit refusals");
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "two rounds of three"
    );

    // A client allowing six at once is refused by Autotask.
    let client = connect(6).await;
    let counts =
        futures_util::future::join_all((0..6).map(|_| client.count("Companies", &filter))).await;
    assert!(counts.iter().any(|c| c.is_err()));
    assert!(sb.usage_peak().2 > 0);
}

/// Every request follows Autotask's rules (no public spec is carried for Autotask, so the
/// rules of the reference notes are checked): the documented paths only, a filter on every
/// query, `MaxRecords` 1–500, `id` among `IncludeFields`, next pages by GET on the zone,
/// writes on the collection (`POST`/`PATCH /Tickets`, the id in the body, never
/// `/Tickets/{id}`), notes and webhook children through their parent.
#[tokio::test]
async fn every_request_follows_autotasks_query_rules() {
    let (sb, h) = start(Seed::Companies(12)).await;
    sb.with_data(|d| add_tickets(d, 3, 2));
    let c = good();
    test_with(&h, &c, true).await;
    let src = source(&h, &c, Some(7)).await;
    let since = Some(Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap());
    for since in [None, since] {
        all_pages!(src, companies, since);
        all_pages!(src, contacts, since);
    }
    all_pages!(src, technicians, None);
    let vocab = src.vocabulary(Utc::now()).await.unwrap();
    let lists = vocab.tickets.unwrap();
    assert!(
        lists.boards.contains(&"Level I Support".to_string()),
        "{lists:?}"
    );
    assert!(
        lists.statuses.contains(&"Waiting Customer".to_string()),
        "{lists:?}"
    );
    let tickets = src.ticket_source().unwrap();
    let (all, pages) = all_pages!(tickets, tickets, None);
    assert_eq!(all.len(), sb.with_data(|d| d.tickets.len()));
    assert!(pages > 1, "paged");
    let (recent, _) = all_pages!(tickets, tickets, since);
    assert!(!recent.is_empty() && recent.len() < all.len());
    let ids: Vec<String> = all.iter().map(|t| t.external_id.clone()).collect();
    let notes = tickets.ticket_notes(&ids).await.unwrap();
    assert_eq!(
        notes.by_ticket.values().map(Vec::len).sum::<usize>(),
        sb.with_data(|d| d.notes.len())
    );
    // Writes: a ticket, a note, a status, the webhook (twice: updated in place).
    let p = providers(true, settings(&h));
    let w = p
        .ticket_writer(ProviderKind::Autotask, &c, fast_retry())
        .await
        .unwrap()
        .unwrap();
    let company = sb.with_data(|d| d.companies[0].id.to_string());
    let t = mspbridge_providers::tickets::NewVendorTicket {
        company_external_id: company,
        summary: "Scanner jams".into(),
        description: "Since Monday.".into(),
        marker: "msb-contract-1".into(),
        defaults: mspbridge_providers::tickets::TicketDefaults {
            board: Some("Level II Support".into()),
            status: Some("New".into()),
            priority: Some("High".into()),
            ..Default::default()
        },
    };
    assert_eq!(w.find_ticket(&t, Utc::now()).await.unwrap(), None);
    let id = w.create_ticket(&t).await.unwrap();
    assert_eq!(
        w.find_ticket(&t, Utc::now()).await.unwrap(),
        Some(id.clone())
    );
    let since_note = Utc::now();
    let note = w.add_note(&id, "Tried a restart.", true).await.unwrap();
    assert_eq!(
        w.find_note(&id, "Tried a restart.", true, since_note)
            .await
            .unwrap(),
        Some(note)
    );
    assert_eq!(
        w.find_note(&id, "Tried a restart.", false, since_note)
            .await
            .unwrap(),
        None,
        "visibility counts"
    );
    w.set_status(&id, "Complete").await.unwrap();
    assert_eq!(
        w.ticket_status(&id).await.unwrap(),
        Some(("Complete".to_string(), true))
    );
    assert_eq!(w.ticket_status("999999").await.unwrap(), None);
    let secret = "s".repeat(43);
    for _ in 0..2 {
        p.register_ticket_webhook(
            ProviderKind::Autotask,
            &c,
            "https://hooks.example/webhooks/autotask/1",
            &secret,
        )
        .await
        .unwrap()
        .unwrap();
    }
    sb.with_data(|d| {
        assert_eq!(d.webhooks.len(), 1, "updated in place");
        assert_eq!(
            d.webhooks[0].deactivation_url,
            "https://hooks.example/webhooks/autotask/1/deactivated"
        );
        assert_eq!(
            d.webhook_fields.len(),
            6,
            "six subscribed fields, once each"
        );
        assert_eq!(
            d.webhook_excluded
                .iter()
                .map(|e| e.resource_id)
                .collect::<Vec<_>>(),
            vec![d.resource_of(DEMO_USERNAME).unwrap()],
            "the API user is excluded"
        );
    });

    let seen = sb.seen();
    assert!(seen.len() > 20);
    let entities = [
        "Companies",
        "Contacts",
        "Resources",
        "ContactGroups",
        "ContactGroupContacts",
        "Tickets",
        "TicketNotes",
        "TicketWebhooks",
        "TicketWebhookFields",
        "TicketWebhookExcludedResources",
    ];
    let mut writes = HashMap::new();
    for r in seen {
        let what = format!("{} {}", r.method, r.path);
        if r.path == "/zoneInformation" || r.path == "/ThresholdInformation" {
            assert_eq!(r.method, "GET", "{what}");
            continue;
        }
        let parts: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
        assert!(entities.contains(&parts[0]), "{what}");
        match &parts[1..] {
            ["query"] | ["query", "count"] => {
                assert_eq!(r.method, "POST", "{what}");
                let body = r.body.as_ref().unwrap();
                let filter = body["filter"].as_array().unwrap();
                assert!(!filter.is_empty(), "{what}: a filter is mandatory");
                if parts.len() == 2 {
                    let max = body["MaxRecords"].as_u64().unwrap();
                    assert!((1..=500).contains(&max), "{what}: MaxRecords {max}");
                    if let Some(fields) = body["IncludeFields"].as_array() {
                        assert!(fields.iter().any(|f| f == "id"), "{what}: id included");
                    }
                }
            }
            ["query", "next"] => {
                assert_eq!(r.method, "GET", "{what}");
                assert!(r.query.iter().any(|(k, _)| k == "paging"), "{what}");
            }
            ["entityInformation", "fields" | "userDefinedFields"] => {
                assert_eq!(r.method, "GET", "{what}")
            }
            [] => {
                // Create (POST) or update (PATCH with the id in the body) on the collection.
                let body = r.body.as_ref().unwrap();
                match r.method.as_str() {
                    "POST" => assert!(body.get("id").is_none(), "{what}: {body}"),
                    "PATCH" => assert!(body["id"].as_i64().is_some(), "{what}: {body}"),
                    m => panic!("{what}: {m} is not how the connector writes"),
                }
                if parts[0] == "Tickets" && r.method == "POST" {
                    for f in [
                        "companyID",
                        "title",
                        "status",
                        "priority",
                        "queueID",
                        "externalID",
                    ] {
                        assert!(!body[f].is_null(), "{what}: {f} in {body}");
                    }
                }
                *writes.entry(what.clone()).or_insert(0) += 1;
            }
            [id, child] if id.parse::<i64>().is_ok() => {
                assert_eq!(r.method, "POST", "{what}");
                let body = r.body.as_ref().unwrap();
                match (parts[0], *child) {
                    ("Tickets", "Notes") => {
                        for f in ["ticketID", "title", "description", "publish", "noteType"] {
                            assert!(!body[f].is_null(), "{what}: {f} in {body}");
                        }
                    }
                    ("TicketWebhooks", "Fields") => {
                        assert_eq!(body["isSubscribedField"], true, "{what}");
                        assert!(body["fieldID"].as_i64().is_some(), "{what}");
                    }
                    ("TicketWebhooks", "ExcludedResources") => {
                        assert!(body["resourceID"].as_i64().is_some(), "{what}");
                    }
                    _ => panic!("{what} is not a child the connector writes"),
                }
                *writes
                    .entry(format!("POST {}/{{id}}/{child}", parts[0]))
                    .or_insert(0) += 1;
            }
            [id] if id.parse::<i64>().is_ok() => assert_eq!(r.method, "GET", "{what}"),
            _ => panic!("{what} is not an Autotask request the connector should make"),
        }
    }
    let want: HashMap<String, i32> = [
        ("POST /Tickets", 1),
        ("PATCH /Tickets", 1),
        ("POST Tickets/{id}/Notes", 1),
        ("POST /TicketWebhooks", 1),
        ("PATCH /TicketWebhooks", 1),
        ("POST TicketWebhooks/{id}/Fields", 6),
        ("POST TicketWebhooks/{id}/ExcludedResources", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(writes, want);
}

#[tokio::test]
async fn ticket_writers_share_the_zone_and_picklists_and_read_them_again_for_a_new_status() {
    let (sb, h) = start(Seed::Small).await;
    let (c, p) = (good(), providers(true, settings(&h)));
    let writer = || async {
        p.ticket_writer(ProviderKind::Autotask, &c, fast_retry())
            .await
            .unwrap()
            .unwrap()
    };
    let id = sb.with_data(|d| d.tickets[0].id);
    let paths = |from: usize| -> Vec<String> {
        sb.seen()[from..]
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    };
    // The first writer discovers the zone and reads both picklists.
    let from = sb.seen().len();
    let first = writer().await.ticket_status(&id.to_string()).await.unwrap();
    assert!(first.is_some());
    let seen = paths(from);
    assert!(
        seen.iter().any(|p| p.contains("zoneInformation")),
        "{seen:?}"
    );
    assert_eq!(
        seen.iter()
            .filter(|p| p.contains("entityInformation/fields"))
            .count(),
        2,
        "{seen:?}"
    );
    // The next one (the next webhook delivery) reads only the ticket.
    let from = sb.seen().len();
    let again = writer().await.ticket_status(&id.to_string()).await.unwrap();
    assert_eq!(again, first);
    assert_eq!(paths(from), vec![format!("GET /Tickets/{id}")]);

    // A status added in Autotask since: the shared lists lack it, so they are read
    // again once and the ticket shows the new label, not a number.
    sb.with_data(|d| d.added_ticket_statuses.push((14, "Customer Replied")));
    assert!(sb.set_ticket_status(id, "Customer Replied"));
    let from = sb.seen().len();
    let w = writer().await;
    assert_eq!(
        w.ticket_status(&id.to_string()).await.unwrap(),
        Some(("Customer Replied".to_string(), false))
    );
    let seen = paths(from);
    assert_eq!(
        seen.iter()
            .filter(|p| p.contains("entityInformation/fields"))
            .count(),
        2,
        "{seen:?}"
    );
    // The refreshed lists are shared: a portal status change to it is written at once.
    let from = sb.seen().len();
    writer()
        .await
        .set_status(&id.to_string(), "customer replied")
        .await
        .unwrap();
    assert_eq!(paths(from), vec!["PATCH /Tickets".to_string()]);
    assert_eq!(sb.with_data(|d| d.tickets[0].status), Some(14));
}

/// Zone discovery and the Test's count queries take the retry policy like every other
/// request: a 429 on discovery and a 503 on a count are retried and the Test passes.
#[tokio::test]
async fn zone_discovery_and_counts_retry_what_is_transient() {
    let (sb, h) = start(Seed::Companies(3)).await;
    sb.faults.push(
        "/zoneInformation",
        Fault::Status {
            status: 429,
            body: "{}".into(),
            retry_after: Some(0),
        },
    );
    sb.faults.push(
        "/query/count",
        Fault::Status {
            status: 503,
            body: "{}".into(),
            retry_after: None,
        },
    );
    let r = test_with(&h, &good(), true).await;
    assert_eq!(sb.faults.pending(), 0, "both faults were met");
    assert_eq!(r.connection, ConnectionOutcome::Ok, "{r:?}");
    assert!(
        r.areas
            .iter()
            .all(|a| !matches!(a.outcome, AreaResult::CouldNotVerify { .. })),
        "{r:?}"
    );
}

#[tokio::test]
async fn records_with_null_or_odd_unused_fields_are_imported() {
    let (sb, h) = start(Seed::Companies(3)).await;
    let (company, contact, resource) =
        sb.with_data(|d| (d.companies[0].id, d.contacts[1].id, d.resources[0].id));
    // Autotask sends `null` for empty fields; fields the sync does not use may hold
    // anything.
    sb.set_raw_field("companies", company, "phone", serde_json::json!(5_551_234));
    sb.set_raw_field("companies", company, "isActive", serde_json::json!(null));
    sb.set_raw_field("contacts", contact, "isActive", serde_json::json!(null));
    sb.set_raw_field(
        "contacts",
        contact,
        "primaryContact",
        serde_json::json!(null),
    );
    sb.set_raw_field("contacts", contact, "firstName", serde_json::json!(null));
    sb.set_raw_field("resources", resource, "title", serde_json::json!(7));
    sb.set_raw_field("resources", resource, "resourceType", serde_json::json!(3));
    sb.set_raw_field("resources", resource, "isActive", serde_json::json!(null));
    let src = source(&h, &good(), None).await;
    for (what, p) in [
        (
            "companies",
            src.companies(&PageRequest::default())
                .await
                .unwrap()
                .rejected,
        ),
        (
            "contacts",
            src.contacts(&PageRequest::default())
                .await
                .unwrap()
                .rejected,
        ),
        (
            "technicians",
            src.technicians(&PageRequest::default())
                .await
                .unwrap()
                .rejected,
        ),
    ] {
        assert!(p.is_empty(), "{what}: {p:?}");
    }
    let (companies, _) = all_pages!(src, companies, None);
    let c = companies
        .iter()
        .find(|c| c.external_id == company.to_string())
        .unwrap();
    assert!(c.active, "{c:?}");
    let (contacts, _) = all_pages!(src, contacts, None);
    let c = contacts
        .iter()
        .find(|c| c.external_id == contact.to_string())
        .unwrap();
    assert!(c.active && !c.primary && c.first_name.is_empty(), "{c:?}");
    let (techs, _) = all_pages!(src, technicians, None);
    let t = techs
        .iter()
        .find(|t| t.external_id == resource.to_string())
        .unwrap();
    assert!(t.active, "{t:?}");
}

#[tokio::test]
async fn contacts_and_resources_fall_back_to_their_second_and_third_email() {
    let (sb, h) = start(Seed::Companies(3)).await;
    let (a, b, r) = sb.with_data(|d| (d.contacts[0].id, d.contacts[1].id, d.resources[0].id));
    sb.set_raw_field("contacts", a, "emailAddress", serde_json::json!(null));
    sb.set_raw_field(
        "contacts",
        a,
        "emailAddress2",
        serde_json::json!("Second@Acme.example"),
    );
    sb.set_raw_field("contacts", b, "emailAddress", serde_json::json!(" "));
    sb.set_raw_field("contacts", b, "emailAddress2", serde_json::json!(null));
    sb.set_raw_field(
        "contacts",
        b,
        "emailAddress3",
        serde_json::json!("third@acme.example"),
    );
    sb.set_raw_field("resources", r, "email", serde_json::json!(null));
    sb.set_raw_field(
        "resources",
        r,
        "email2",
        serde_json::json!("tech2@msp.example"),
    );
    let src = source(&h, &good(), None).await;
    let (contacts, _) = all_pages!(src, contacts, None);
    let email = |id: i64| {
        contacts
            .iter()
            .find(|c| c.external_id == id.to_string())
            .unwrap()
            .email
            .clone()
    };
    assert_eq!(email(a).as_deref(), Some("second@acme.example"));
    assert_eq!(email(b).as_deref(), Some("third@acme.example"));
    let (techs, _) = all_pages!(src, technicians, None);
    let t = techs
        .iter()
        .find(|t| t.external_id == r.to_string())
        .unwrap();
    assert_eq!(t.email.as_deref(), Some("tech2@msp.example"));
    // The contacts query asks for all three addresses.
    let asked = sb
        .seen()
        .into_iter()
        .rev()
        .find(|s| s.path == "/Contacts/query")
        .and_then(|s| s.body)
        .unwrap();
    for f in ["emailAddress", "emailAddress2", "emailAddress3"] {
        assert!(
            asked["IncludeFields"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v == f),
            "{asked}"
        );
    }
    // The seed has contacts whose only address is the second or the third.
    let seeded = sb.with_data(|d| {
        d.contacts
            .iter()
            .filter(|c| c.email_address.is_none())
            .filter_map(|c| {
                let v = serde_json::to_value(c).unwrap();
                ["emailAddress2", "emailAddress3"]
                    .iter()
                    .find_map(|k| v[*k].as_str().map(|e| (c.id, e.to_string())))
            })
            .collect::<Vec<_>>()
    });
    assert!(!seeded.is_empty(), "the seed has such contacts");
    for (id, e) in seeded {
        assert_eq!(email(id), Some(e));
    }
}

#[tokio::test]
async fn a_ticket_is_closed_by_its_status_not_by_a_stamped_completed_date() {
    let (sb, h) = start(Seed::Small).await;
    let (open, done) = sb.with_data(|d| {
        let stamp = Utc.with_ymd_and_hms(2026, 2, 3, 4, 5, 6).unwrap();
        // Back in "Waiting Customer" after completion: Autotask keeps the stamp.
        let open = &mut d.tickets[0];
        open.status = Some(7);
        open.completed_date = Some(stamp);
        let open = open.id;
        // Complete (5) without a stamp is closed all the same.
        let done = &mut d.tickets[1];
        done.status = Some(COMPLETE);
        done.completed_date = None;
        (open, done.id)
    });
    let src = source(&h, &good(), None).await;
    let tickets = src.ticket_source().unwrap();
    let (all, _) = all_pages!(tickets, tickets, None);
    let by_id = |id: i64| {
        all.iter()
            .find(|t| t.external_id == id.to_string())
            .unwrap()
    };
    let t = by_id(open);
    assert_eq!(
        (t.status.as_str(), t.closed, t.closed_at),
        ("Waiting Customer", false, None),
        "{t:?}"
    );
    let t = by_id(done);
    assert_eq!((t.status.as_str(), t.closed), ("Complete", true), "{t:?}");
    // Every other ticket: closed exactly when its status is Complete.
    let data = sb.with_data(|d| d.tickets.clone());
    for t in &data {
        assert_eq!(
            by_id(t.id).closed,
            t.status == Some(COMPLETE),
            "ticket {}",
            t.id
        );
    }
    // The webhook path reads the ticket again the same way.
    let w = providers(true, settings(&h))
        .ticket_writer(ProviderKind::Autotask, &good(), fast_retry())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        w.ticket_status(&open.to_string()).await.unwrap(),
        Some(("Waiting Customer".to_string(), false))
    );
    assert_eq!(
        w.ticket_status(&done.to_string()).await.unwrap(),
        Some(("Complete".to_string(), true))
    );
}

#[tokio::test]
async fn resources_are_listed_once_per_run() {
    let (sb, h) = start(Seed::Small).await;
    let src = source(&h, &good(), None).await;
    let resource_queries = || {
        sb.seen()
            .iter()
            .filter(|r| r.path.starts_with("/Resources/query"))
            .count()
    };
    // The technicians pass reads Resources; the notes' authors come from the same list.
    let (techs, _) = all_pages!(src, technicians, None);
    assert!(!techs.is_empty());
    let tickets = src.ticket_source().unwrap();
    let (all, _) = all_pages!(tickets, tickets, None);
    let ids: Vec<String> = all.iter().map(|t| t.external_id.clone()).collect();
    let notes = tickets.ticket_notes(&ids).await.unwrap();
    let authors: Vec<&str> = notes
        .by_ticket
        .values()
        .flatten()
        .map(|n| n.author.as_str())
        .collect();
    assert!(!authors.is_empty() && authors.iter().all(|a| !a.is_empty()));
    assert_eq!(resource_queries(), 1, "one Resources listing per run");
    assert!(src.bytes() > 0, "the source counts the bytes it receives");
    // The technicians pass asks only for the fields it reads.
    let asked = sb
        .seen()
        .into_iter()
        .find(|s| s.path == "/Resources/query")
        .and_then(|s| s.body)
        .unwrap();
    assert!(asked["IncludeFields"].is_array(), "{asked}");

    // A run without the technicians pass (a quick tickets sync) reads it for the notes.
    let src = source(&h, &good(), None).await;
    let tickets = src.ticket_source().unwrap();
    let before = resource_queries();
    let notes = tickets.ticket_notes(&ids).await.unwrap();
    assert!(
        notes
            .by_ticket
            .values()
            .flatten()
            .all(|n| !n.author.is_empty())
    );
    assert_eq!(resource_queries(), before + 1);
}
