#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The sync engine reading Datto RMM through its connector and sandbox, on SQLite and
//! (with TEST_DATABASE_URL) PostgreSQL: every site, device and open alert is seen once per
//! run at the engine's page size, and a second run of the same data changes nothing.

mod common;

use common::Portal;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::sync::*;
use mspbridge_providers::ProviderConfig;
use mspbridge_providers::datto_rmm::client::DattoSettings;
use mspbridge_providers::datto_rmm::sandbox::*;
use mspbridge_sandbox::Seed;

#[tokio::test]
async fn the_engine_reads_every_datto_site_device_and_open_alert() {
    for db in mspbridge_store::test_support::all().await.unwrap() {
        let sandbox = DattoSandbox::new(Seed::Companies(20));
        let handle = sandbox
            .serve(mspbridge_sandbox::loopback_listener().await.unwrap())
            .unwrap();
        let portal = Portal::connect(
            db,
            ProviderKind::DattoRmm,
            serde_json::json!({ "platform": DEMO_PLATFORM, "api_key": DEMO_API_KEY }),
            &[("api_secret", DEMO_API_SECRET)],
        )
        .await;
        portal
            .configure(&SyncOptions {
                companies: true,
                contacts: false,
                technicians: false,
                devices: true,
                alerts: true,
                ..portal.standard_options()
            })
            .await;
        let engine = portal.engine(
            ProviderConfig {
                datto_rmm: DattoSettings {
                    api_base: Some(DattoSandbox::api_base(&handle)),
                    ..Default::default()
                },
                ..Default::default()
            },
            common::config(Some(9), false),
        );
        let (sites, devices, alerts) =
            sandbox.with_data(|d| (d.sites.len(), d.devices.len(), d.alerts.len()));
        let first = portal.sync(&engine).await;
        let backend = portal.store().backend();
        assert_eq!(first.result, RunResult::Success, "{backend}: {first:?}");
        let seen =
            |r: &mspbridge_sync::RunSummary, t: RecordType| r.counts.get(&t).map_or(0, |c| c.seen);
        assert_eq!(
            (
                seen(&first, RecordType::Companies),
                seen(&first, RecordType::Devices),
                seen(&first, RecordType::Alerts)
            ),
            (sites as u64, devices as u64, alerts as u64),
            "{backend}: {first:?}"
        );
        assert_eq!(sandbox.token_requests(), 1);
        let second = portal.sync(&engine).await;
        assert_eq!(
            seen(&second, RecordType::Devices),
            devices as u64,
            "{backend}"
        );
        for (r, c) in &second.counts {
            assert_eq!((c.created, c.updated), (0, 0), "{backend} {r:?} {c:?}");
        }
        assert_eq!(sandbox.token_requests(), 1, "the token outlives the run");

        // A device and an alert repeated in one page, both copies changed: one statement per
        // page on PostgreSQL must write each once, and the last copy wins.
        let (uid, alert_uid) = sandbox.with_data(|d| {
            d.devices[0].hostname = Some("FIRST-COPY".into());
            let mut dup = d.devices[0].clone();
            dup.hostname = Some("LAST-COPY".into());
            d.devices.insert(1, dup);
            let open = d
                .alerts
                .iter()
                .position(|a| !a.resolved.unwrap_or(false))
                .unwrap();
            d.alerts[open].diagnostics = Some("first copy".into());
            let mut dup = d.alerts[open].clone();
            dup.diagnostics = Some("last copy".into());
            d.alerts.insert(open + 1, dup);
            (
                d.devices[0].uid.clone().unwrap(),
                d.alerts[open].alert_uid.clone().unwrap(),
            )
        });
        let third = portal.sync(&engine).await;
        assert_eq!(third.result, RunResult::Success, "{backend}: {third:?}");
        let states = portal
            .store()
            .device_states(portal.integration, std::slice::from_ref(&uid))
            .await
            .unwrap();
        assert_eq!(
            states.len(),
            1,
            "{backend}: one device for the repeated uid"
        );
        let device = portal
            .store()
            .device(portal.tenant, states[&uid].id)
            .await
            .unwrap();
        assert_eq!(device.device.hostname, "LAST-COPY", "{backend}");
        let alerts = portal
            .store()
            .alerts(
                portal.tenant,
                &mspbridge_store::rmm::AlertQuery {
                    limit: 500,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let copies: Vec<_> = alerts
            .rows
            .iter()
            .filter(|a| a.external_id == alert_uid)
            .collect();
        assert_eq!(copies.len(), 1, "{backend}");
        assert_eq!(
            copies[0].diagnostics.as_deref(),
            Some("last copy"),
            "{backend}"
        );
    }
}

/// A run longer than a third of the lease renews the lease between pages: with pages in
/// flight (PostgreSQL commits two side by side) the renewal waits for them instead of
/// stalling them, and the page held back meanwhile is committed after it, so every
/// record still arrives (both went wrong once: a deadlock, then passes ending early).
#[tokio::test]
async fn a_run_that_outlasts_a_third_of_the_lease_renews_it_and_reads_everything() {
    for db in mspbridge_store::test_support::all().await.unwrap() {
        let sandbox = DattoSandbox::new(Seed::Companies(20));
        sandbox
            .faults
            .set_latency(std::time::Duration::from_millis(40));
        let handle = sandbox
            .serve(mspbridge_sandbox::loopback_listener().await.unwrap())
            .unwrap();
        let portal = Portal::connect(
            db,
            ProviderKind::DattoRmm,
            serde_json::json!({ "platform": DEMO_PLATFORM, "api_key": DEMO_API_KEY }),
            &[("api_secret", DEMO_API_SECRET)],
        )
        .await;
        portal
            .configure(&SyncOptions {
                companies: true,
                contacts: false,
                technicians: false,
                devices: true,
                alerts: true,
                ..portal.standard_options()
            })
            .await;
        let engine = portal.engine(
            ProviderConfig {
                datto_rmm: DattoSettings {
                    api_base: Some(DattoSandbox::api_base(&handle)),
                    ..Default::default()
                },
                ..Default::default()
            },
            mspbridge_sync::EngineConfig {
                // Renewal due every 10 ms: due while pages are in flight and one waits.
                lease: chrono::Duration::milliseconds(30),
                ..common::config(Some(25), false)
            },
        );
        let (sites, devices, alerts) =
            sandbox.with_data(|d| (d.sites.len(), d.devices.len(), d.alerts.len()));
        let run = tokio::time::timeout(std::time::Duration::from_secs(60), portal.sync(&engine))
            .await
            .expect("the run ends (no deadlock)");
        let backend = portal.store().backend();
        assert_eq!(run.result, RunResult::Success, "{backend}: {run:?}");
        let seen = |t: RecordType| run.counts.get(&t).map_or(0, |c| c.seen);
        assert_eq!(
            (
                seen(RecordType::Companies),
                seen(RecordType::Devices),
                seen(RecordType::Alerts)
            ),
            (sites as u64, devices as u64, alerts as u64),
            "{backend}: {run:?}"
        );
    }
}
