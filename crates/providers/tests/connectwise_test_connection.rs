#![allow(clippy::unwrap_used, clippy::expect_used)]
//! ConnectWise "Test connection" against the ConnectWise sandbox: good keys, bad keys
//! (401), a missing clientId, a role without a permission (403), an unreachable host,
//! an unknown company, a vendor 5xx on one area, and the outbound address policy.

use std::collections::BTreeMap;

use chrono::Utc;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::integration::*;
use mspbridge_domain::validate::{Credentials, validate_credentials};
use mspbridge_providers::connectwise::sandbox::*;
use mspbridge_providers::{OutboundPolicy, ProviderConfig, Providers};
use mspbridge_sandbox::{Fault, SandboxHandle, Seed, loopback_listener};

async fn start() -> (CwSandbox, SandboxHandle) {
    let sb = CwSandbox::new(Seed::Small);
    let handle = sb.serve(loopback_listener().await.unwrap()).unwrap();
    (sb, handle)
}

fn creds(
    site: &str,
    company: &str,
    public: &str,
    private: &str,
    client_id: Option<&str>,
) -> Credentials {
    let mut input = BTreeMap::new();
    input.insert("site".to_string(), site.to_string());
    input.insert("company_id".to_string(), company.to_string());
    input.insert("public_key".to_string(), public.to_string());
    input.insert("private_key".to_string(), private.to_string());
    if let Some(id) = client_id {
        input.insert("client_id".to_string(), id.to_string());
    }
    validate_credentials(ProviderKind::ConnectwiseManage.descriptor(), &input, false)
        .unwrap()
        .0
}

fn providers(allow_private: bool) -> Providers {
    Providers::new(ProviderConfig {
        outbound: OutboundPolicy { allow_private },
        connectwise_client_id: None,
        ..Default::default()
    })
}

async fn test(c: &Credentials) -> TestReport {
    providers(true)
        .connector(ProviderKind::ConnectwiseManage)
        .unwrap()
        .test(c, Utc::now())
        .await
}

#[tokio::test]
async fn good_keys_grant_every_area_and_requests_carry_cw_headers() {
    let (sb, h) = start().await;
    let r = test(&creds(
        &h.host(),
        DEMO_COMPANY_ID,
        DEMO_PUBLIC_KEY,
        DEMO_PRIVATE_KEY,
        Some(DEMO_CLIENT_ID),
    ))
    .await;
    assert_eq!(r.connection, ConnectionOutcome::Ok, "{r:?}");
    assert_eq!(r.areas.len(), 6);
    assert!(
        r.areas.iter().all(|a| a.outcome == AreaResult::Granted),
        "{:?}",
        r.areas
    );
    assert_eq!(r.verdict().0, IntegrationStatus::Connected);
    assert!(
        r.details
            .iter()
            .any(|(k, v)| k == "Codebase" && v == "v2025_1/")
    );

    let seen = sb.seen();
    assert_eq!(seen.len(), 6);
    for req in &seen {
        assert!(req.path.starts_with("/v2025_1/apis/3.0/"), "{req:?}");
        assert!(req.authorized, "{req:?}");
        assert_eq!(req.client_id.as_deref(), Some(DEMO_CLIENT_ID));
        assert_eq!(
            req.accept.as_deref(),
            Some("application/vnd.connectwise.com+json; version=2025.1")
        );
        assert!(
            req.query.contains(&("pageSize".into(), "1".into())),
            "reads one record per area"
        );
    }
}

#[tokio::test]
async fn bad_keys_are_an_auth_failure_that_says_what_to_check() {
    let (_sb, h) = start().await;
    let r = test(&creds(
        &h.host(),
        DEMO_COMPANY_ID,
        DEMO_PUBLIC_KEY,
        "wrong-private",
        Some(DEMO_CLIENT_ID),
    ))
    .await;
    let ConnectionOutcome::AuthFailed { message, fix_hint } = &r.connection else {
        panic!("{r:?}")
    };
    assert!(message.contains("401"), "{message}");
    assert!(fix_hint.contains("public and private keys"), "{fix_hint}");
    assert!(
        !message.contains("wrong-private") && !fix_hint.contains("wrong-private"),
        "secrets never in messages"
    );
    assert_eq!(r.verdict().0, IntegrationStatus::Error);
}

#[tokio::test]
async fn wrong_keys_without_a_client_id_report_the_keys_once() {
    // What a newcomer does by hand in the demo's Connect form: the sandbox's site, a
    // mistyped key and no Client ID. The keys are the cause, not the clientId.
    let (_sb, h) = start().await;
    let r = test(&creds(
        &h.host(),
        DEMO_COMPANY_ID,
        DEMO_PUBLIC_KEY,
        "wrong-private",
        None,
    ))
    .await;
    let ConnectionOutcome::AuthFailed { message, fix_hint } = &r.connection else {
        panic!("{r:?}")
    };
    assert!(message.contains("401"), "{message}");
    assert!(message.contains("rejected the API keys"), "{message}");
    assert!(message.contains(DEMO_COMPANY_ID), "{message}");
    assert!(message.contains(DEMO_PUBLIC_KEY), "{message}");
    assert!(!message.contains("clientId"), "{message}");
    assert!(!message.contains("wrong-private") && !fix_hint.contains("wrong-private"));
    assert_eq!(
        fix_hint.matches("public and private keys").count(),
        1,
        "{fix_hint}"
    );
    assert_eq!(fix_hint.matches("clientId").count(), 1, "{fix_hint}");
    assert!(
        r.areas.is_empty(),
        "the failure is reported once, not per area"
    );
    let (_, error, hint) = r.verdict();
    assert_eq!(error.as_deref(), Some(message.as_str()));
    assert_eq!(hint.as_deref(), Some(fix_hint.as_str()));
}

#[tokio::test]
async fn a_missing_client_id_is_named_as_the_cause() {
    let (sb, h) = start().await;
    let r = test(&creds(
        &h.host(),
        DEMO_COMPANY_ID,
        DEMO_PUBLIC_KEY,
        DEMO_PRIVATE_KEY,
        None,
    ))
    .await;
    let ConnectionOutcome::AuthFailed { message, fix_hint } = &r.connection else {
        panic!("{r:?}")
    };
    assert!(message.contains("no clientId was sent"), "{message}");
    assert!(fix_hint.contains("developer.connectwise.com"), "{fix_hint}");
    assert!(sb.seen().iter().all(|s| s.client_id.is_none()));
}

#[tokio::test]
async fn the_server_wide_client_id_is_used_when_the_form_has_none() {
    let (sb, h) = start().await;
    let p = Providers::new(ProviderConfig {
        outbound: OutboundPolicy {
            allow_private: true,
        },
        connectwise_client_id: Some(DEMO_CLIENT_ID.into()),
        ..Default::default()
    });
    let c = creds(
        &h.host(),
        DEMO_COMPANY_ID,
        DEMO_PUBLIC_KEY,
        DEMO_PRIVATE_KEY,
        None,
    );
    let r = p
        .connector(ProviderKind::ConnectwiseManage)
        .unwrap()
        .test(&c, Utc::now())
        .await;
    assert_eq!(r.connection, ConnectionOutcome::Ok);
    assert!(
        sb.seen()
            .iter()
            .all(|s| s.client_id.as_deref() == Some(DEMO_CLIENT_ID))
    );
}

#[tokio::test]
async fn a_role_without_a_permission_is_not_permitted_naming_the_setting() {
    let (_sb, h) = start().await;
    let r = test(&creds(
        &h.host(),
        DEMO_COMPANY_ID,
        LIMITED_PUBLIC_KEY,
        LIMITED_PRIVATE_KEY,
        Some(DEMO_CLIENT_ID),
    ))
    .await;
    assert_eq!(r.connection, ConnectionOutcome::Ok);
    let by_key = |k: &str| {
        r.areas
            .iter()
            .find(|a| a.area == k)
            .unwrap()
            .outcome
            .clone()
    };
    assert_eq!(by_key("companies"), AreaResult::Granted);
    let AreaResult::NotPermitted {
        setting,
        vendor_message,
    } = by_key("members")
    else {
        panic!("{r:?}")
    };
    assert!(setting.contains("Member Maintenance"), "{setting}");
    assert!(
        vendor_message.contains("Member Maintenance"),
        "{vendor_message}"
    );
    let AreaResult::NotPermitted { setting, .. } = by_key("tickets") else {
        panic!()
    };
    assert!(setting.contains("Service Tickets"));
    let (status, error, hint) = r.verdict();
    assert_eq!(status, IntegrationStatus::Error);
    assert!(error.unwrap().contains("Tickets"));
    assert!(hint.unwrap().contains("Member Maintenance"));
}

#[tokio::test]
async fn an_unreachable_host_is_reported_as_such() {
    // Bind and drop a listener to get a port nobody listens on.
    let port = loopback_listener()
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = test(&creds(
        &format!("127.0.0.1:{port}"),
        DEMO_COMPANY_ID,
        DEMO_PUBLIC_KEY,
        DEMO_PRIVATE_KEY,
        Some(DEMO_CLIENT_ID),
    ))
    .await;
    let ConnectionOutcome::Unreachable { message, fix_hint } = &r.connection else {
        panic!("{r:?}")
    };
    assert!(message.contains("Could not reach ConnectWise"), "{message}");
    assert!(fix_hint.contains("firewall"), "{fix_hint}");
    assert!(r.areas.is_empty());
}

#[tokio::test]
async fn an_unknown_company_id_is_a_misconfiguration() {
    let (_sb, h) = start().await;
    let r = test(&creds(
        &h.host(),
        "nosuchco",
        DEMO_PUBLIC_KEY,
        DEMO_PRIVATE_KEY,
        Some(DEMO_CLIENT_ID),
    ))
    .await;
    let ConnectionOutcome::Misconfigured { message, .. } = &r.connection else {
        panic!("{r:?}")
    };
    assert!(
        message.contains("does not know the company ID 'nosuchco'"),
        "{message}"
    );
}

#[tokio::test]
async fn a_vendor_error_on_one_area_is_could_not_verify_and_switches_nothing_off() {
    let (sb, h) = start().await;
    // The Test retries once (the interactive policy): a 503 on both attempts.
    sb.faults.push_n(
        "/system/members",
        Fault::Status {
            status: 503,
            body: r#"{"code":"ServiceUnavailable","message":"Maintenance","errors":null}"#.into(),
            retry_after: None,
        },
        2,
    );
    let r = test(&creds(
        &h.host(),
        DEMO_COMPANY_ID,
        DEMO_PUBLIC_KEY,
        DEMO_PRIVATE_KEY,
        Some(DEMO_CLIENT_ID),
    ))
    .await;
    let members = r.areas.iter().find(|a| a.area == "members").unwrap();
    let AreaResult::CouldNotVerify { reason } = &members.outcome else {
        panic!("{r:?}")
    };
    assert!(reason.contains("503"), "{reason}");
    assert_eq!(r.verdict().0, IntegrationStatus::Connected);
}

#[tokio::test]
async fn a_truncated_answer_is_could_not_verify() {
    let (sb, h) = start().await;
    sb.faults.push_n("/company/companies", Fault::Truncate, 2);
    let r = test(&creds(
        &h.host(),
        DEMO_COMPANY_ID,
        DEMO_PUBLIC_KEY,
        DEMO_PRIVATE_KEY,
        Some(DEMO_CLIENT_ID),
    ))
    .await;
    let companies = r.areas.iter().find(|a| a.area == "companies").unwrap();
    assert!(
        matches!(companies.outcome, AreaResult::CouldNotVerify { .. }),
        "{r:?}"
    );
}

#[tokio::test]
async fn loopback_hosts_are_refused_outside_demo_mode() {
    let (sb, h) = start().await;
    let c = creds(
        &h.host(),
        DEMO_COMPANY_ID,
        DEMO_PUBLIC_KEY,
        DEMO_PRIVATE_KEY,
        Some(DEMO_CLIENT_ID),
    );
    let r = providers(false)
        .connector(ProviderKind::ConnectwiseManage)
        .unwrap()
        .test(&c, Utc::now())
        .await;
    let ConnectionOutcome::Misconfigured { message, .. } = &r.connection else {
        panic!("{r:?}")
    };
    assert!(message.contains("private, loopback"), "{message}");
    assert!(sb.seen().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn a_companyinfo_without_site_url_or_other_unused_fields_connects() {
    let (sb, h) = start().await;
    let c = creds(
        &h.host(),
        DEMO_COMPANY_ID,
        DEMO_PUBLIC_KEY,
        DEMO_PRIVATE_KEY,
        Some(DEMO_CLIENT_ID),
    );
    // A real answer that lacks `SiteUrl` and carries fields the connector does not know.
    sb.set_company_info(Some(serde_json::json!({
        "CompanyName": "mspbridge Demo MSP",
        "Codebase": "v2025_1/",
        "VersionCode": "v2025.1",
        "VersionNumber": "v4.6.104512",
        "CompanyID": DEMO_COMPANY_ID,
        "IsCloud": false,
        "AllowAccessToAll": true
    })));
    let r = test(&c).await;
    assert_eq!(r.connection, ConnectionOutcome::Ok, "{r:?}");
    assert!(
        r.details
            .iter()
            .any(|(k, v)| k == "Company" && v == "mspbridge Demo MSP"),
        "{r:?}"
    );
    // Only the codebase is needed: the rest may be missing or null.
    sb.set_company_info(Some(serde_json::json!({
        "Codebase": "v2025_1/",
        "CompanyName": null,
        "IsCloud": null
    })));
    let r = test(&c).await;
    assert_eq!(r.connection, ConnectionOutcome::Ok, "{r:?}");
    assert!(
        r.details
            .iter()
            .any(|(k, v)| k == "Company" && v == DEMO_COMPANY_ID),
        "{r:?}"
    );
}

/// Every request of a Test takes the retry policy: codebase discovery and an area that
/// fail once (429, 503) are retried and the Test passes.
#[tokio::test]
async fn a_transient_failure_of_discovery_or_an_area_is_retried() {
    let (sb, h) = start().await;
    sb.faults.push(
        "/login/companyinfo",
        Fault::Status {
            status: 429,
            body: "{}".into(),
            retry_after: Some(0),
        },
    );
    sb.faults.push(
        "/system/members",
        Fault::Status {
            status: 503,
            body: "{}".into(),
            retry_after: None,
        },
    );
    let r = test(&creds(
        &h.host(),
        DEMO_COMPANY_ID,
        DEMO_PUBLIC_KEY,
        DEMO_PRIVATE_KEY,
        Some(DEMO_CLIENT_ID),
    ))
    .await;
    assert_eq!(sb.faults.pending(), 0, "both faults were met");
    assert_eq!(r.connection, ConnectionOutcome::Ok, "{r:?}");
    assert!(
        r.areas
            .iter()
            .all(|a| matches!(a.outcome, AreaResult::Granted)),
        "{r:?}"
    );
}
