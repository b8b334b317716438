#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The SSRF guard, from outside: with private vendor hosts not allowed (production's
//! default), a connector configured with any spelling of a loopback address that the URL
//! parser accepts (`2130706433`, `0x7f000001`, `0177.0.0.1`, `127.1`, …, IPv4-mapped
//! IPv6) sends nothing there. Each of the four PSAs, with a sandbox listening on loopback
//! that counts what reaches it.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use chrono::Utc;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::integration::{ConnectionOutcome, TestReport};
use mspbridge_domain::validate::validate_credentials;
use mspbridge_providers::autotask::client::AutotaskSettings;
use mspbridge_providers::syncro::client::SyncroSettings;
use mspbridge_providers::{OutboundPolicy, ProviderConfig, Providers};
use mspbridge_sandbox::{Seed, loopback_listener};

/// Spellings of 127.0.0.1 (and IPv6 forms of it) with the port.
fn spellings(addr: SocketAddr) -> Vec<String> {
    let port = addr.port();
    [
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "017700000001",
        "127.1",
        "127.0.1",
        "0x7f.1",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[::127.0.0.1]",
        "localhost",
    ]
    .iter()
    .map(|h| format!("{h}:{port}"))
    .collect()
}

/// The Test's report, or `None` when the credentials' validation already refused the host.
async fn test(
    kind: ProviderKind,
    config: ProviderConfig,
    input: &[(&str, String)],
) -> Option<TestReport> {
    let input: BTreeMap<String, String> = input
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let creds = validate_credentials(kind.descriptor(), &input, false)
        .ok()?
        .0;
    let report = Providers::new(ProviderConfig {
        outbound: OutboundPolicy {
            allow_private: false,
        },
        ..config
    })
    .connector(kind)
    .unwrap()
    .test(&creds, Utc::now())
    .await;
    Some(report)
}

/// Checks the refusal; whether the Test ran (the guard, not validation, refused it).
fn refused(r: &Option<TestReport>, what: &str) -> bool {
    let Some(r) = r else { return false };
    assert!(
        !matches!(r.connection, ConnectionOutcome::Ok),
        "{what}: {r:?}"
    );
    assert!(
        format!("{:?}", r.connection).contains("private, loopback or link-local"),
        "{what}: the refusal says why: {r:?}"
    );
    true
}

#[tokio::test]
async fn connectwise_sites_in_any_spelling_of_loopback_are_refused() {
    use mspbridge_providers::connectwise::sandbox::*;
    let sb = CwSandbox::new(Seed::Small);
    let h = sb.serve(loopback_listener().await.unwrap()).unwrap();
    let mut tested = 0;
    for site in spellings(h.addr) {
        let r = test(
            ProviderKind::ConnectwiseManage,
            ProviderConfig::default(),
            &[
                ("site", site.clone()),
                ("company_id", DEMO_COMPANY_ID.into()),
                ("public_key", DEMO_PUBLIC_KEY.into()),
                ("private_key", DEMO_PRIVATE_KEY.into()),
                ("client_id", DEMO_CLIENT_ID.into()),
            ],
        )
        .await;
        tested += usize::from(refused(&r, &site));
    }
    assert!(sb.seen().is_empty(), "nothing reached the sandbox");
    assert!(tested >= 7, "the guard itself refused {tested} spellings");
}

#[tokio::test]
async fn halo_urls_in_any_spelling_of_loopback_are_refused() {
    use mspbridge_providers::halo::sandbox::*;
    let sb = HaloSandbox::new(Seed::Small);
    let h = sb.serve(loopback_listener().await.unwrap()).unwrap();
    let mut tested = 0;
    for host in spellings(h.addr) {
        let r = test(
            ProviderKind::HaloPsa,
            ProviderConfig::default(),
            &[
                ("auth_server_url", format!("https://{host}/auth")),
                ("resource_server_url", format!("https://{host}/api")),
                ("tenant", DEMO_TENANT.into()),
                ("client_id", DEMO_CLIENT_ID.into()),
                ("client_secret", DEMO_CLIENT_SECRET.into()),
            ],
        )
        .await;
        tested += usize::from(refused(&r, &host));
    }
    assert!(sb.seen().is_empty(), "nothing reached the sandbox");
    assert!(tested >= 7, "the guard itself refused {tested} spellings");
}

#[tokio::test]
async fn syncro_and_autotask_bases_in_any_spelling_of_loopback_are_refused() {
    use mspbridge_providers::autotask::sandbox::*;
    use mspbridge_providers::syncro::sandbox::*;
    let syncro = SyncroSandbox::new(Seed::Small);
    let sh = syncro.serve(loopback_listener().await.unwrap()).unwrap();
    let mut tested = 0;
    for host in spellings(sh.addr) {
        let config = ProviderConfig {
            syncro: SyncroSettings {
                api_base: format!("https://{host}/{{subdomain}}/api/v1"),
                ..SyncroSettings::default()
            },
            ..Default::default()
        };
        let r = test(
            ProviderKind::Syncro,
            config,
            &[
                ("subdomain", DEMO_SUBDOMAIN.into()),
                ("api_token", DEMO_API_TOKEN.into()),
            ],
        )
        .await;
        tested += usize::from(refused(&r, &host));
    }
    assert!(
        syncro.seen().is_empty(),
        "nothing reached the Syncro sandbox"
    );
    assert!(tested >= 7, "the guard itself refused {tested} spellings");

    let autotask = AutotaskSandbox::new(Seed::Small);
    let ah = autotask.serve(loopback_listener().await.unwrap()).unwrap();
    let mut tested = 0;
    for host in spellings(ah.addr) {
        let config = ProviderConfig {
            autotask: AutotaskSettings {
                zone_lookup_url: format!("https://{host}/atservicesrest"),
                ..AutotaskSettings::default()
            },
            ..Default::default()
        };
        let r = test(
            ProviderKind::Autotask,
            config,
            &[
                ("username", DEMO_USERNAME.into()),
                ("secret", DEMO_SECRET.into()),
                ("integration_code", DEMO_INTEGRATION_CODE.into()),
            ],
        )
        .await;
        tested += usize::from(refused(&r, &host));
    }
    assert!(
        autotask.seen().is_empty(),
        "nothing reached the Autotask sandbox"
    );
    assert!(tested >= 7, "the guard itself refused {tested} spellings");
}
