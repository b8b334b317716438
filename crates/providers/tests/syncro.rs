#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Syncro against its sandbox: Test connection (good token, bad token, unknown subdomain,
//! a token without the Users permission), paging on `meta.total_pages` whatever the
//! server's page size, the customer's own person as primary contact, technicians from
//! id–name pairs and details, the rate limit, and every request checked against Syncro's
//! OpenAPI document.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::Utc;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::integration::*;
use mspbridge_domain::validate::{Credentials, validate_credentials};
use mspbridge_providers::http::RetryPolicy;
use mspbridge_providers::source::{PageRequest, PsaSource};
use mspbridge_providers::syncro::client::SyncroSettings;
use mspbridge_providers::syncro::sandbox::*;
use mspbridge_providers::tickets::{NewVendorTicket, TicketDefaults, WriteError};
use mspbridge_providers::{OutboundPolicy, ProviderConfig, Providers};
use mspbridge_sandbox::{SandboxHandle, Seed, loopback_listener};

async fn start(seed: Seed) -> (SyncroSandbox, SandboxHandle) {
    let sb = SyncroSandbox::new(seed);
    let handle = sb.serve(loopback_listener().await.unwrap()).unwrap();
    (sb, handle)
}

fn creds(subdomain: &str, token: &str) -> Credentials {
    let mut input = BTreeMap::new();
    input.insert("subdomain".to_string(), subdomain.to_string());
    input.insert("api_token".to_string(), token.to_string());
    validate_credentials(ProviderKind::Syncro.descriptor(), &input, false)
        .unwrap()
        .0
}

fn providers(h: &SandboxHandle, requests: usize, window: Duration) -> Providers {
    Providers::new(ProviderConfig {
        outbound: OutboundPolicy {
            allow_private: true,
        },
        syncro: SyncroSettings {
            requests,
            window,
            backoff_floor: Duration::from_millis(200),
            api_base: SyncroSandbox::api_base(h),
        },
        ..Default::default()
    })
}

fn roomy(h: &SandboxHandle) -> Providers {
    providers(h, 100_000, Duration::from_secs(60))
}

async fn source(p: &Providers, c: &Credentials) -> Box<dyn PsaSource> {
    let retry = RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_secs(2),
        budget: 100_000,
        timeout: Duration::from_secs(5),
    };
    p.psa_source(ProviderKind::Syncro, c, retry, None)
        .await
        .unwrap()
        .unwrap()
}

async fn all_contacts(src: &dyn PsaSource) -> Vec<mspbridge_domain::sync::ExtContact> {
    let mut req = PageRequest::default();
    let mut out = Vec::new();
    loop {
        let p = src.contacts(&req).await.unwrap();
        out.extend(p.records);
        match p.next {
            Some(n) => req.after = Some(n),
            None => return out,
        }
    }
}

#[tokio::test]
async fn test_connection_names_each_failure() {
    let (_sb, h) = start(Seed::Small).await;
    let p = roomy(&h);
    let test = |c: Credentials| {
        let p = p.clone();
        async move {
            p.connector(ProviderKind::Syncro)
                .unwrap()
                .test(&c, Utc::now())
                .await
        }
    };
    let r = test(creds(DEMO_SUBDOMAIN, DEMO_API_TOKEN)).await;
    assert_eq!(r.connection, ConnectionOutcome::Ok, "{r:?}");
    let by: HashMap<_, _> = r
        .areas
        .iter()
        .map(|a| (a.area.as_str(), &a.outcome))
        .collect();
    assert_eq!(by["companies"], &AreaResult::Granted);
    assert_eq!(by["technicians"], &AreaResult::Granted);
    assert_eq!(by["tickets"], &AreaResult::Granted);

    let r = test(creds(DEMO_SUBDOMAIN, "wrong-token")).await;
    assert!(
        matches!(&r.connection, ConnectionOutcome::AuthFailed { fix_hint, .. } if fix_hint.contains("API Tokens")),
        "{r:?}"
    );
    let r = test(creds("acme", DEMO_API_TOKEN)).await;
    assert!(
        matches!(&r.connection, ConnectionOutcome::Misconfigured { message, .. } if message.contains("'acme'")),
        "{r:?}"
    );
    let r = test(creds(DEMO_SUBDOMAIN, LIMITED_API_TOKEN)).await;
    let tech = r.areas.iter().find(|a| a.area == "technicians").unwrap();
    assert!(
        matches!(&tech.outcome, AreaResult::NotPermitted { setting, vendor_message }
            if setting.contains("API Tokens") && vendor_message.contains("group permissions")),
        "{tech:?}"
    );
}

#[tokio::test]
async fn paging_follows_total_pages_whatever_the_server_page_size() {
    let (sb, h) = start(Seed::Companies(12)).await;
    let c = creds(DEMO_SUBDOMAIN, DEMO_API_TOKEN);
    let expected_contacts = sb.with_data(|d| d.contacts.len());
    let persons = sb.with_data(|d| {
        d.customers
            .iter()
            .filter(|c| !c.no_email && (c.firstname.is_some() || c.lastname.is_some()))
            .count()
    });
    for per_page in [25, 100, 7] {
        sb.set_per_page(per_page);
        let src = source(&roomy(&h), &c).await;
        let contacts = all_contacts(src.as_ref()).await;
        assert_eq!(
            contacts.len(),
            expected_contacts + persons,
            "page size {per_page}"
        );
        let before = sb.seen().len();
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
        assert_eq!(n, 12);
        assert_eq!(
            sb.seen().len() - before,
            12usize.div_ceil(per_page),
            "one request per page, none past total_pages"
        );
    }
}

#[tokio::test]
async fn a_customers_own_person_is_its_primary_contact_and_customers_are_read_once_per_run() {
    let (sb, h) = start(Seed::Companies(4)).await;
    let c = creds(DEMO_SUBDOMAIN, DEMO_API_TOKEN);
    let src = source(&roomy(&h), &c).await;
    let p = src.companies(&PageRequest::default()).await.unwrap();
    let customer = sb.with_data(|d| d.customers.iter().find(|c| !c.no_email).cloned().unwrap());
    let company = p
        .records
        .iter()
        .find(|r| r.external_id == customer.id.to_string())
        .unwrap();
    let person_id = format!("customer-{}", customer.id);
    assert_eq!(
        company.primary_contact_id.as_deref(),
        Some(person_id.as_str())
    );
    let before = sb.seen().len();
    let contacts = all_contacts(src.as_ref()).await;
    let person = contacts
        .iter()
        .find(|c| c.external_id == person_id)
        .unwrap();
    assert!(person.primary);
    assert_eq!(person.email, customer.email.map(|e| e.to_lowercase()));
    assert!(
        contacts
            .iter()
            .filter(|c| !c.external_id.starts_with("customer-"))
            .all(|c| !c.primary)
    );
    let customer_reads = sb.seen()[before..]
        .iter()
        .filter(|r| r.path == "/customers")
        .count();
    assert_eq!(customer_reads, 0, "the companies pass's pages are reused");
}

#[tokio::test]
async fn technicians_come_from_pairs_and_details() {
    let (sb, h) = start(Seed::Companies(1000)).await;
    let c = creds(DEMO_SUBDOMAIN, DEMO_API_TOKEN);
    let src = source(&roomy(&h), &c).await;
    let mut req = PageRequest::default();
    let mut techs = Vec::new();
    loop {
        let p = src.technicians(&req).await.unwrap();
        techs.extend(p.records);
        match p.next {
            Some(n) => req.after = Some(n),
            None => break,
        }
    }
    let users = sb.with_data(|d| d.users.clone());
    assert_eq!(techs.len(), users.len());
    assert!(techs.iter().all(|t| {
        t.email
            .as_deref()
            .is_some_and(|e| e.ends_with("@msp.example"))
    }));
    let pair_reads = sb.seen().iter().filter(|r| r.path == "/users").count();
    assert_eq!(pair_reads, 1, "the pairs are read once per pass");
}

#[tokio::test]
async fn a_429_is_retried_and_the_page_still_arrives() {
    let (sb, h) = start(Seed::Companies(30)).await;
    sb.set_per_page(5);
    sb.set_rate_limit(3, Duration::from_millis(300));
    let c = creds(DEMO_SUBDOMAIN, DEMO_API_TOKEN);
    // The connector believes in a looser limit than the server applies: 429s follow.
    let src = source(&providers(&h, 1000, Duration::from_millis(300)), &c).await;
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
    assert_eq!(n, 30);
    assert!(src.requests() > 6, "429s were retried: {}", src.requests());
}

/// Every request the connector makes is one Syncro documents (`MSPBRIDGE_SPECS_DIR`, ../shared/specs by default).
#[tokio::test]
async fn every_request_matches_the_syncro_openapi_document() {
    let Some(spec) = mspbridge_sandbox::vendor_spec("syncro/syncro-api-v1.openapi.json") else {
        return;
    };
    let (sb, h) = start(Seed::Companies(60)).await;
    sb.with_data(|d| add_tickets(d, 2, 1));
    let c = creds(DEMO_SUBDOMAIN, DEMO_API_TOKEN);
    let p = roomy(&h);
    p.connector(ProviderKind::Syncro)
        .unwrap()
        .test(&c, Utc::now())
        .await;
    let src = source(&p, &c).await;
    src.companies(&PageRequest::default()).await.unwrap();
    all_contacts(src.as_ref()).await;
    src.technicians(&PageRequest::default()).await.unwrap();
    // Tickets: every page, incremental, comments; then every write.
    let tickets = src.ticket_source().unwrap();
    let mut req = PageRequest::default();
    let mut ids = Vec::new();
    loop {
        let page = tickets.tickets(&req).await.unwrap();
        ids.extend(page.records.iter().map(|t| t.external_id.clone()));
        match page.next {
            Some(n) => req.after = Some(n),
            None => break,
        }
    }
    assert!(ids.len() > 25, "more than one page: {}", ids.len());
    tickets
        .tickets(&PageRequest {
            since: Some(Utc::now() - chrono::Duration::days(1)),
            after: None,
        })
        .await
        .unwrap();
    let notes = tickets.ticket_notes(&ids[..3]).await.unwrap();
    assert_eq!(notes.by_ticket.len(), 3);
    let w = p
        .ticket_writer(ProviderKind::Syncro, &c, RetryPolicy::interactive())
        .await
        .unwrap()
        .unwrap();
    let customer = sb.with_data(|d| d.customers[0].id.to_string());
    let new = NewVendorTicket {
        company_external_id: customer,
        summary: "Scanner jams".into(),
        description: "Since Monday.".into(),
        marker: "msb-contract".into(),
        defaults: TicketDefaults {
            board: Some("Hardware".into()),
            status: Some("new".into()),
            priority: Some("2 Normal".into()),
            ..Default::default()
        },
    };
    let since = Utc::now();
    assert_eq!(w.find_ticket(&new, since).await.unwrap(), None);
    let id = w.create_ticket(&new).await.unwrap();
    assert_eq!(w.find_ticket(&new, since).await.unwrap(), Some(id.clone()));
    assert_eq!(w.find_note(&id, "Hello", true, since).await.unwrap(), None);
    let note = w.add_note(&id, "Hello", true).await.unwrap();
    assert_eq!(
        w.find_note(&id, "Hello", true, since).await.unwrap(),
        Some(note)
    );
    assert_eq!(w.find_note(&id, "Hello", false, since).await.unwrap(), None);
    w.set_status(&id, "resolved").await.unwrap();
    assert_eq!(
        w.ticket_status(&id).await.unwrap(),
        Some(("Resolved".to_string(), true))
    );
    let refused = w.set_status(&id, "Parked").await.unwrap_err();
    assert!(
        matches!(&refused, WriteError::Rejected { field: Some(f), message } if f == "status" && message.contains("Waiting on Customer")),
        "{refused:?}"
    );
    let seen = sb.seen();
    assert!(seen.len() > 10);
    let schema_of = |op: &serde_json::Value| -> serde_json::Value {
        let body = &op["requestBody"];
        let body = match body["$ref"].as_str() {
            Some(r) => &spec["components"]["requestBodies"][r.rsplit('/').next().unwrap()],
            None => body,
        };
        body["content"]["application/json"]["schema"].clone()
    };
    let mut writes = 0;
    for r in seen {
        // `/users/7` is the documented `/users/{id}`, `/tickets/5001/comments` is
        // `/tickets/{id}/comments`.
        let segments: Vec<&str> = r.path.split('/').collect();
        let path = segments
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if i == 2 && s.parse::<i64>().is_ok() {
                    "{id}"
                } else {
                    s
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        if let Some(body) = &r.body {
            writes += 1;
            let op = &spec["paths"][&path][r.method.to_lowercase()];
            let schema = schema_of(op);
            for (k, v) in body.as_object().unwrap() {
                let declared = &schema["properties"][k];
                assert!(
                    declared.is_object(),
                    "{} {}: body field '{k}' is not in the spec",
                    r.method,
                    r.path
                );
                if let Some(items) = v
                    .as_array()
                    .and_then(|a| a.first())
                    .and_then(|x| x.as_object())
                {
                    for k2 in items.keys() {
                        assert!(
                            declared["items"]["properties"][k2].is_object(),
                            "{} {}: '{k}.{k2}' is not in the spec",
                            r.method,
                            r.path
                        );
                    }
                }
            }
        }
        let op = &spec["paths"][&path][r.method.to_lowercase()];
        assert!(
            op.is_object(),
            "{} {} is not in the Syncro spec",
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
                "{} {}: parameter '{k}' is not declared ({declared:?})",
                r.method,
                r.path
            );
        }
    }
    assert_eq!(
        writes, 3,
        "create, comment and status; the refused status is never sent"
    );
}

#[tokio::test]
async fn an_empty_account_a_bad_token_and_an_unreadable_contact() {
    let (sb, h) = start(Seed::Companies(3)).await;
    let c = creds(DEMO_SUBDOMAIN, DEMO_API_TOKEN);
    let p = roomy(&h);

    // An unreadable contact is rejected with its field; the rest of the page goes on.
    let (id, total) = sb.with_data(|d| (d.contacts[1].id, d.contacts.len()));
    sb.set_raw_field("contacts", id, "customer_id", serde_json::json!("twelve"));
    let src = source(&p, &c).await;
    let first = src.contacts(&PageRequest::default()).await.unwrap();
    assert_eq!(first.rejected.len(), 1);
    assert_eq!(first.rejected[0].external_id, Some(id.to_string()));
    assert!(
        first.rejected[0].reason.contains("field `customer_id`"),
        "{:?}",
        first.rejected
    );
    assert_eq!(first.records.len(), total.min(25) - 1);

    // A revoked token is an authentication error, not an empty account.
    let bad = source(&p, &creds(DEMO_SUBDOMAIN, "revoked")).await;
    let e = bad.companies(&PageRequest::default()).await.unwrap_err();
    assert!(
        matches!(e, mspbridge_providers::source::SourceError::Auth(_)),
        "{e:?}"
    );

    // An empty account: one request per listing and no further pages.
    sb.with_data(|d| {
        d.customers.clear();
        d.contacts.clear();
    });
    let src = source(&p, &c).await;
    let before = sb.seen().len();
    let companies = src.companies(&PageRequest::default()).await.unwrap();
    assert!(companies.records.is_empty() && companies.next.is_none());
    assert!(all_contacts(src.as_ref()).await.is_empty());
    assert_eq!(
        sb.seen().len() - before,
        2,
        "customers once (reused for persons), contacts once"
    );
}

#[tokio::test]
async fn contacts_added_during_a_run_are_followed_to_the_new_last_page() {
    let (sb, h) = start(Seed::Companies(3)).await;
    sb.set_per_page(10);
    let c = creds(DEMO_SUBDOMAIN, DEMO_API_TOKEN);
    let src = source(&roomy(&h), &c).await;
    let first = src.contacts(&PageRequest::default()).await.unwrap();
    assert_eq!(first.next.as_deref(), Some("contacts:2"));
    let before = sb.with_data(|d| {
        let template = d.contacts[0].clone();
        for i in 0..15 {
            d.contacts.push(mspbridge_providers::syncro::wire::Contact {
                id: 90_000 + i,
                ..template.clone()
            });
        }
        d.contacts.len()
    });
    let mut req = PageRequest {
        since: None,
        after: first.next,
    };
    let mut n = first.records.len();
    while req
        .after
        .as_deref()
        .is_some_and(|t| t.starts_with("contacts:"))
    {
        let p = src.contacts(&req).await.unwrap();
        n += p.records.len();
        req.after = p.next;
    }
    assert_eq!(n, before, "every contact, including those added mid-run");
}

#[tokio::test]
async fn records_with_null_or_odd_unused_fields_are_imported() {
    let (sb, h) = start(Seed::Companies(3)).await;
    let c = creds(DEMO_SUBDOMAIN, DEMO_API_TOKEN);
    let (customer, contact) = sb.with_data(|d| (d.customers[0].id, d.contacts[0].id));
    // The spec has a contact's `customer_id` nullable; unused fields may hold anything.
    sb.set_raw_field("contacts", contact, "customer_id", serde_json::json!(null));
    sb.set_raw_field("contacts", contact, "latitude", serde_json::json!("n/a"));
    sb.set_raw_field("contacts", contact, "name", serde_json::json!(null));
    sb.set_raw_field("customers", customer, "disabled", serde_json::json!(null));
    sb.set_raw_field("customers", customer, "no_email", serde_json::json!(null));
    sb.set_raw_field(
        "customers",
        customer,
        "properties",
        serde_json::json!([1, 2]),
    );
    let src = source(&roomy(&h), &c).await;
    let companies = src.companies(&PageRequest::default()).await.unwrap();
    assert!(companies.rejected.is_empty(), "{:?}", companies.rejected);
    let got = companies
        .records
        .iter()
        .find(|r| r.external_id == customer.to_string())
        .unwrap();
    assert!(got.active, "{got:?}");
    let contacts = src.contacts(&PageRequest::default()).await.unwrap();
    assert!(contacts.rejected.is_empty(), "{:?}", contacts.rejected);
    let got = contacts
        .records
        .iter()
        .find(|r| r.external_id == contact.to_string())
        .unwrap();
    assert_eq!(got.company_external_id, None, "{got:?}");
}
