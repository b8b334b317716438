#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The sync engine reading ConnectWise Asio through its connector and sandbox, on SQLite
//! and (with TEST_DATABASE_URL) PostgreSQL: every company and endpoint is seen once per run
//! at the engine's page size (across company batches of 4), the open service tickets as
//! alerts (Asio 2.2.8 has no open-alerts list), a second run of the same data changes
//! nothing, and a ticket closed in Asio resolves its alert at the next sweep.

mod common;

use common::Portal;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::sync::*;
use mspbridge_providers::ProviderConfig;
use mspbridge_providers::connectwise_asio::client::AsioSettings;
use mspbridge_providers::connectwise_asio::sandbox::*;
use mspbridge_sandbox::Seed;

#[tokio::test]
async fn the_engine_reads_every_asio_company_and_endpoint() {
    for db in mspbridge_store::test_support::all().await.unwrap() {
        let sandbox = AsioSandbox::new(Seed::Companies(20));
        let handle = sandbox
            .serve(mspbridge_sandbox::loopback_listener().await.unwrap())
            .unwrap();
        let portal = Portal::connect(
            db,
            ProviderKind::ConnectwiseAsio,
            serde_json::json!({ "environment": DEMO_ENVIRONMENT, "client_id": DEMO_CLIENT_ID }),
            &[("client_secret", DEMO_CLIENT_SECRET)],
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
                connectwise_asio: AsioSettings {
                    api_base: Some(AsioSandbox::api_base(&handle)),
                    ..Default::default()
                },
                ..Default::default()
            },
            common::config(Some(9), false),
        );
        let (companies, endpoints) = sandbox.with_data(|d| (d.companies.len(), d.endpoints.len()));
        let closed: Vec<String> = sandbox.with_data(|d| {
            d.statuses
                .iter()
                .filter(|s| s.category.as_deref() == Some("Closed"))
                .filter_map(|s| s.id.clone())
                .collect()
        });
        let is_open = |t: &mspbridge_providers::connectwise_asio::wire::Ticket| {
            !closed.contains(t.status.as_ref().unwrap().id.as_ref().unwrap())
        };
        let open = sandbox.with_data(|d| d.tickets.iter().filter(|t| is_open(t)).count());
        assert!(open > 0);
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
            (companies as u64, endpoints as u64, open as u64),
            "{backend}: {first:?}"
        );
        assert_eq!(sandbox.token_requests(), 1);
        let second = portal.sync(&engine).await;
        assert_eq!(second.result, RunResult::Success, "{backend}: {second:?}");
        assert_eq!(
            seen(&second, RecordType::Devices),
            endpoints as u64,
            "{backend}"
        );
        for (r, c) in &second.counts {
            assert_eq!((c.created, c.updated), (0, 0), "{backend} {r:?} {c:?}");
        }
        assert_eq!(sandbox.token_requests(), 1, "the token outlives the run");
        // A ticket closed in Asio: its alert is resolved after the next complete sweep.
        let closed_one = sandbox.with_data(|d| {
            let t = d.tickets.iter_mut().find(|t| is_open(t)).unwrap();
            t.status.as_mut().unwrap().id = Some(closed[0].clone());
            t.id.clone().unwrap()
        });
        let third = portal.sync(&engine).await;
        assert_eq!(third.result, RunResult::Success, "{backend}: {third:?}");
        assert_eq!(
            seen(&third, RecordType::Alerts),
            open as u64 - 1,
            "{backend}"
        );
        let all = portal
            .store()
            .alerts(
                portal.tenant,
                &mspbridge_store::rmm::AlertQuery {
                    include_resolved: true,
                    limit: 500,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(all.total, open as i64, "{backend}");
        let a = all
            .rows
            .iter()
            .find(|a| a.external_id == closed_one)
            .unwrap();
        assert!(
            a.resolved,
            "{backend}: the closed ticket's alert is resolved"
        );
        assert_eq!(
            all.rows.iter().filter(|a| a.resolved).count(),
            1,
            "{backend}"
        );
    }
}
