#![allow(clippy::unwrap_used, clippy::expect_used)]
//! ConnectWise as a sync source against its sandbox: records whose unused fields are
//! missing, null or odd are imported, not rejected.

use std::collections::BTreeMap;
use std::time::Duration;

use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::validate::{Credentials, validate_credentials};
use mspbridge_providers::connectwise::sandbox::*;
use mspbridge_providers::http::RetryPolicy;
use mspbridge_providers::source::{PageRequest, PsaSource};
use mspbridge_providers::{OutboundPolicy, ProviderConfig, Providers};
use mspbridge_sandbox::{SandboxHandle, Seed, loopback_listener};
use serde_json::json;

async fn serve(sb: CwSandbox) -> (CwSandbox, SandboxHandle) {
    let handle = sb.serve(loopback_listener().await.unwrap()).unwrap();
    (sb, handle)
}

fn creds(h: &SandboxHandle) -> Credentials {
    let mut input = BTreeMap::new();
    input.insert("site".to_string(), h.host());
    input.insert("company_id".to_string(), DEMO_COMPANY_ID.to_string());
    input.insert("public_key".to_string(), DEMO_PUBLIC_KEY.to_string());
    input.insert("private_key".to_string(), DEMO_PRIVATE_KEY.to_string());
    input.insert("client_id".to_string(), DEMO_CLIENT_ID.to_string());
    validate_credentials(ProviderKind::ConnectwiseManage.descriptor(), &input, false)
        .unwrap()
        .0
}

fn retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(1),
        budget: 100_000,
        timeout: Duration::from_secs(10),
    }
}

async fn source(h: &SandboxHandle, page: Option<usize>) -> Box<dyn PsaSource> {
    Providers::new(ProviderConfig {
        outbound: OutboundPolicy {
            allow_private: true,
        },
        ..Default::default()
    })
    .psa_source(ProviderKind::ConnectwiseManage, &creds(h), retry(), page)
    .await
    .unwrap()
    .unwrap()
}

/// Every page of a pass: the records and the rejected rows.
macro_rules! all_pages {
    ($src:expr, $method:ident) => {{
        let mut req = PageRequest::default();
        let mut records = Vec::new();
        let mut rejected = Vec::new();
        loop {
            let p = $src.$method(&req).await.unwrap();
            records.extend(p.records);
            rejected.extend(p.rejected);
            match p.next {
                Some(n) => req.after = Some(n),
                None => break,
            }
        }
        (records, rejected)
    }};
}

#[tokio::test]
async fn records_with_odd_or_missing_unused_fields_are_imported() {
    let (sb, h) = serve(CwSandbox::new(Seed::Small)).await;
    let (company, contact, member, ticket) = sb.with_data(|d| {
        (
            d.companies[0].id,
            d.contacts[0].id,
            d.members[0].id,
            d.tickets[0].id,
        )
    });
    // A company without an identifier, with a null flag, a number for a phone and
    // fields the connector does not know.
    sb.remove_raw_field("company/companies", company, "identifier");
    sb.set_raw_field("company/companies", company, "deletedFlag", json!(null));
    sb.set_raw_field("company/companies", company, "website", json!(null));
    sb.set_raw_field(
        "company/companies",
        company,
        "phoneNumber",
        json!(5_551_234),
    );
    sb.set_raw_field(
        "company/companies",
        company,
        "customFields",
        json!([{"id": 1, "caption": "Tier", "type": "Text", "value": null}]),
    );
    // A contact whose communication items lack their id and type, with a kind the
    // connector does not know, and a null name and flag.
    sb.set_raw_field(
        "company/contacts",
        contact,
        "communicationItems",
        json!([
            {"value": "+1 555 0101", "communicationType": "Phone", "defaultFlag": true},
            {"type": {"id": 9, "name": "Pager"}, "value": "pager-77", "communicationType": "Pager"},
            {"value": " Pat.Lee@Example.com ", "communicationType": "Email"}
        ]),
    );
    sb.set_raw_field("company/contacts", contact, "firstName", json!(null));
    sb.set_raw_field("company/contacts", contact, "inactiveFlag", json!(null));
    sb.set_raw_field(
        "company/contacts",
        contact,
        "site",
        json!({"id": 3, "name": "Main", "_info": {"site_href": "x"}}),
    );
    // A member without an identifier, a null flag and an unknown license class.
    sb.remove_raw_field("system/members", member, "identifier");
    sb.set_raw_field("system/members", member, "inactiveFlag", json!(null));
    sb.set_raw_field("system/members", member, "licenseClass", json!("Z"));
    // A ticket without a board, with a null priority and summary.
    sb.remove_raw_field("service/tickets", ticket, "board");
    sb.set_raw_field("service/tickets", ticket, "priority", json!(null));
    sb.set_raw_field("service/tickets", ticket, "summary", json!(null));
    sb.set_raw_field("service/tickets", ticket, "severity", json!("Extreme"));

    let src = source(&h, None).await;
    let (companies, rejected) = all_pages!(src, companies);
    assert!(rejected.is_empty(), "{rejected:?}");
    let c = companies
        .iter()
        .find(|c| c.external_id == company.to_string())
        .unwrap();
    assert_eq!((c.identifier.as_deref(), c.deleted), (None, false), "{c:?}");
    assert!(c.domains.is_empty(), "{c:?}");

    let (contacts, rejected) = all_pages!(src, contacts);
    assert!(rejected.is_empty(), "{rejected:?}");
    let c = contacts
        .iter()
        .find(|c| c.external_id == contact.to_string())
        .unwrap();
    assert_eq!(c.email.as_deref(), Some("pat.lee@example.com"), "{c:?}");
    assert_eq!(c.phone.as_deref(), Some("+1 555 0101"), "{c:?}");
    assert_eq!((c.first_name.as_str(), c.active), ("", true), "{c:?}");

    let (members, rejected) = all_pages!(src, technicians);
    assert!(rejected.is_empty(), "{rejected:?}");
    let m = members
        .iter()
        .find(|m| m.external_id == member.to_string())
        .unwrap();
    assert!(m.active && m.email.is_some(), "{m:?}");
    assert_eq!(Some(m.identifier.as_str()), m.email.as_deref(), "{m:?}");

    let tickets_src = src.ticket_source().unwrap();
    let (tickets, rejected) = all_pages!(tickets_src, tickets);
    assert!(rejected.is_empty(), "{rejected:?}");
    let t = tickets
        .iter()
        .find(|t| t.external_id == ticket.to_string())
        .unwrap();
    assert_eq!((t.board.as_deref(), t.priority.as_deref()), (None, None));
    assert_eq!(t.summary, "");
}

#[tokio::test]
async fn members_without_a_primary_email_are_imported_with_their_office_or_default_email() {
    let (sb, h) = serve(CwSandbox::new(Seed::Small)).await;
    let ids: Vec<i64> = sb.with_data(|d| d.members.iter().map(|m| m.id).collect());
    // Only `officeEmail`, as many ConnectWise members carry.
    sb.remove_raw_field("system/members", ids[1], "primaryEmail");
    sb.set_raw_field(
        "system/members",
        ids[1],
        "officeEmail",
        json!(" Office.Two@MSP.example "),
    );
    // An empty primary and office email: the one `defaultEmail` names.
    sb.set_raw_field("system/members", ids[2], "primaryEmail", json!(""));
    sb.set_raw_field("system/members", ids[2], "officeEmail", json!(null));
    sb.set_raw_field("system/members", ids[2], "defaultEmail", json!("Mobile"));
    sb.set_raw_field(
        "system/members",
        ids[2],
        "mobileEmail",
        json!("three@mobile.example"),
    );
    sb.set_raw_field(
        "system/members",
        ids[2],
        "homeEmail",
        json!("three@home.example"),
    );
    sb.remove_raw_field("system/members", ids[3], "primaryEmail");
    sb.set_raw_field("system/members", ids[3], "defaultEmail", json!("Home"));
    sb.set_raw_field(
        "system/members",
        ids[3],
        "homeEmail",
        json!("four@home.example"),
    );
    // A default kind ConnectWise may add later names nothing we know: no email, no failure.
    sb.remove_raw_field("system/members", ids[4], "primaryEmail");
    sb.remove_raw_field("system/members", ids[4], "officeEmail");
    sb.set_raw_field("system/members", ids[4], "defaultEmail", json!("Pager"));

    let src = source(&h, None).await;
    let (techs, rejected) = all_pages!(src, technicians);
    assert!(rejected.is_empty(), "{rejected:?}");
    let email = |id: i64| {
        techs
            .iter()
            .find(|t| t.external_id == id.to_string())
            .unwrap()
            .email
            .clone()
    };
    assert_eq!(email(ids[1]).as_deref(), Some("office.two@msp.example"));
    assert_eq!(email(ids[2]).as_deref(), Some("three@mobile.example"));
    assert_eq!(email(ids[3]).as_deref(), Some("four@home.example"));
    assert_eq!(email(ids[4]), None);
    // The seed has members with only an office or a default (mobile) email: every other
    // member is imported with an address.
    let others: Vec<_> = techs
        .iter()
        .filter(|t| !ids[1..5].contains(&t.external_id.parse().unwrap()))
        .collect();
    assert_eq!(others.len(), ids.len() - 4);
    assert!(others.iter().all(|t| t.email.is_some()), "{others:?}");
}

/// Everything the source gives the engine from one sandbox (every pass, the notes of
/// every ticket, the vocabulary), and the response bytes it took.
async fn read_everything(h: &SandboxHandle) -> (String, u64) {
    let src = source(h, Some(7)).await;
    let (companies, r1) = all_pages!(src, companies);
    let (contacts, r2) = all_pages!(src, contacts);
    let (techs, r3) = all_pages!(src, technicians);
    let tickets_src = src.ticket_source().unwrap();
    let (tickets, r4) = all_pages!(tickets_src, tickets);
    let ids: Vec<String> = tickets.iter().map(|t| t.external_id.clone()).collect();
    let mut notes: Vec<_> = tickets_src
        .ticket_notes(&ids)
        .await
        .unwrap()
        .by_ticket
        .into_iter()
        .collect();
    notes.sort_by(|a, b| a.0.cmp(&b.0));
    let mut vocabulary = src.vocabulary(chrono::DateTime::UNIX_EPOCH).await.unwrap();
    vocabulary.fetched_at = chrono::DateTime::UNIX_EPOCH;
    for r in [&r1, &r2, &r3, &r4] {
        assert!(r.is_empty(), "{r:?}");
    }
    (
        format!(
            "{companies:#?}\n{contacts:#?}\n{techs:#?}\n{tickets:#?}\n{notes:#?}\n{vocabulary:#?}"
        ),
        src.bytes(),
    )
}

#[tokio::test]
async fn lists_ask_only_for_the_fields_the_sync_reads_and_the_sync_gets_all_it_needs() {
    let (sb, h) = serve(CwSandbox::new(Seed::Small)).await;
    // Every field the source maps holds something other than its default somewhere.
    sb.with_data(|d| {
        d.companies[1].deleted_flag = true;
        d.tickets[0].external_x_ref = Some(format!(
            "{}0000000000000001",
            mspbridge_providers::tickets::MARKER_PREFIX
        ));
        let t = d.tickets[1].id;
        let n = d.notes.iter_mut().find(|n| n.ticket_id == t).unwrap();
        n.member = None;
        n.contact = Some(mspbridge_providers::connectwise::wire::Ref {
            id: 1,
            name: Some("Pat Customer".into()),
        });
        d.notes
            .iter_mut()
            .filter(|n| n.ticket_id == d.tickets[2].id)
            .for_each(|n| {
                n.member = None;
            });
    });
    let (projected, projected_bytes) = read_everything(&h).await;
    // The record lists carry `fields=` (nested references as `company/id`).
    let seen = sb.seen();
    for path in [
        "/company/companies",
        "/company/contacts",
        "/system/members",
        "/service/tickets",
    ] {
        let asked: Vec<_> = seen.iter().filter(|r| r.path.ends_with(path)).collect();
        assert!(!asked.is_empty(), "{path}");
        for r in asked {
            let fields = r.query.iter().find(|(k, _)| k == "fields");
            assert!(fields.is_some(), "{path} without fields=: {r:?}");
        }
    }
    let notes = seen
        .iter()
        .filter(|r| r.path.ends_with("/notes"))
        .collect::<Vec<_>>();
    assert!(!notes.is_empty());
    assert!(
        notes
            .iter()
            .all(|r| r.query.iter().any(|(k, _)| k == "fields"))
    );
    let tickets = seen
        .iter()
        .find(|r| r.path.ends_with("/service/tickets"))
        .unwrap();
    let fields = &tickets.query.iter().find(|(k, _)| k == "fields").unwrap().1;
    assert!(fields.split(',').any(|f| f == "company/id"), "{fields}");

    // The guard: what the sync gets through a sandbox that honours `fields=` is what it
    // gets from whole records. A field the source maps but does not ask for differs here.
    sb.honour_fields(false);
    let (whole, whole_bytes) = read_everything(&h).await;
    assert_eq!(projected, whole);
    // And it costs fewer bytes (the source counts what it receives; the sandbox's records
    // are leaner than ConnectWise's, so the saving here is small).
    assert!(
        0 < projected_bytes && projected_bytes < whole_bytes,
        "{projected_bytes} bytes projected, {whole_bytes} whole"
    );
}

#[tokio::test]
async fn a_count_that_is_a_multiple_of_the_page_size_costs_no_extra_request() {
    let mut data = generate(Seed::Companies(5_000));
    data.contacts.clear();
    data.tickets.clear();
    data.notes.clear();
    assert_eq!((data.companies.len(), data.members.len()), (5_000, 1_000));
    let (sb, h) = serve(CwSandbox::from_data(data)).await;
    let src = source(&h, Some(1_000)).await;
    let (companies, _) = all_pages!(src, companies);
    let (members, _) = all_pages!(src, technicians);
    assert_eq!((companies.len(), members.len()), (5_000, 1_000));
    let asked = |path: &str| sb.seen().iter().filter(|r| r.path.ends_with(path)).count();
    // ConnectWise names a next page in `Link` only when more rows match: the fifth full
    // page of companies is the last, the one full page of members too.
    assert_eq!(asked("/company/companies"), 5);
    assert_eq!(asked("/system/members"), 1);
}
