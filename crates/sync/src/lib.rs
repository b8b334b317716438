//! The sync engine.
//!
//! A worker claims a due integration from the database (a lease, so two processes
//! never sync one integration at once), runs one pass per selected record type in
//! dependency order (companies, contacts, technicians), and gives the lease back with
//! the next due time. A pass reads the vendor page by page; each page's changes, its
//! events and the pass checkpoint are committed in one transaction fenced by the lease,
//! so a crash or kill resumes from the last committed page with nothing duplicated or
//! lost. Upserts are keyed by the external link; a content hash makes unchanged records
//! cost no writes. Incremental passes read records changed since the watermark minus
//! an overlap window; full passes (the first import, and a periodic reconcile) mark what
//! they see and, only when complete, deactivate linked records that have disappeared.

mod apply;
mod billing;
mod m365;
pub mod outbox;
mod pipeline;
mod rmm;
mod tickets;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mspbridge_domain::integration::IntegrationStatus;
use mspbridge_domain::sync::{Counts, RecordType, RunResult, SyncOptions, Trigger};
use mspbridge_domain::{IntegrationId, TenantId};
use mspbridge_providers::Providers;
use mspbridge_providers::connectwise::client::RetryPolicy;
use mspbridge_providers::source::SourceError;
use mspbridge_store::sync::{Claim, Release};
use mspbridge_store::{Store, StoreError};
use mspbridge_vault::Vault;

pub use apply::PageOutcome;

/// A run that writes at least this many records refreshes the database's planner statistics.
const BULK_WRITES: u64 = 5_000;

/// Per-integration run metrics (labels: provider slug and integration id, nothing else
/// about the tenant). Described with HELP lines by `mspbridge_web` where the recorder lives;
/// without a recorder (`mspbridge worker`) they cost nothing.
fn record_run_metrics(
    provider: &'static str,
    id: IntegrationId,
    result: RunResult,
    counts: &BTreeMap<RecordType, Counts>,
    elapsed: Duration,
    now: DateTime<Utc>,
) {
    let integration = id.0.to_string();
    metrics::counter!("mspbridge_sync_runs_total",
        "provider" => provider, "integration_id" => integration.clone(), "result" => result.as_str())
    .increment(1);
    metrics::histogram!("mspbridge_sync_run_duration_seconds",
        "provider" => provider, "integration_id" => integration.clone())
    .record(elapsed.as_secs_f64());
    for (record, c) in counts {
        let written = c.created + c.linked + c.updated + c.deactivated;
        metrics::counter!("mspbridge_sync_records_written_total",
            "provider" => provider, "integration_id" => integration.clone(), "record_type" => record.as_str())
        .increment(written);
    }
    if result == RunResult::Success {
        metrics::gauge!("mspbridge_sync_last_success_timestamp_seconds",
            "provider" => provider, "integration_id" => integration)
        .set(now.timestamp() as f64);
    }
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How far before the watermark an incremental pass starts reading.
    pub overlap: chrono::Duration,
    /// Lease length; renewed between pages once a third of it has passed, when no page
    /// transaction is in flight.
    pub lease: chrono::Duration,
    /// A full (reconciling) pass runs when the last one is older than this.
    pub reconcile_every: chrono::Duration,
    pub retry: RetryPolicy,
    /// Page size override (tests); `None` uses the vendor maximum.
    pub page_size: Option<usize>,
    /// Automatic sync pauses after this many failed runs in a row.
    pub max_failures: i64,
    /// "Sync now" cooldown.
    pub manual_cooldown: chrono::Duration,
    /// Idle wait between claims.
    pub poll: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            overlap: chrono::Duration::minutes(5),
            lease: chrono::Duration::seconds(60),
            reconcile_every: chrono::Duration::hours(24),
            retry: RetryPolicy::default(),
            page_size: None,
            max_failures: 5,
            manual_cooldown: chrono::Duration::seconds(60),
            poll: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    pub run_id: i64,
    pub integration_id: IntegrationId,
    pub result: RunResult,
    pub counts: BTreeMap<RecordType, Counts>,
    pub error: Option<String>,
    pub requests: u64,
    /// Response body bytes received from the vendor.
    pub bytes: u64,
}

pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

#[derive(Clone)]
pub struct Engine {
    store: Arc<dyn Store>,
    vault: Arc<Vault>,
    providers: Providers,
    config: EngineConfig,
    clock: Clock,
    worker: String,
}

/// What a run reads from: a PSA or an RMM.
pub(crate) enum Source {
    Psa(Box<dyn mspbridge_providers::source::PsaSource>),
    Rmm(Box<dyn mspbridge_providers::rmm::RmmSource>),
}

impl Source {
    /// Whether this source has a pass for `record`.
    pub(crate) fn supports(&self, record: RecordType) -> bool {
        match self {
            Source::Psa(s) => match record {
                RecordType::Companies | RecordType::Contacts | RecordType::Technicians => true,
                RecordType::Tickets => s.ticket_source().is_some(),
                RecordType::Devices
                | RecordType::Alerts
                | RecordType::Invoices
                | RecordType::Subscriptions
                | RecordType::Payments => false,
            },
            Source::Rmm(_) => matches!(
                record,
                RecordType::Companies | RecordType::Devices | RecordType::Alerts
            ),
        }
    }

    /// Every pass lists everything (no change feed): each one is a full pass.
    pub(crate) fn full_sweeps(&self) -> bool {
        matches!(self, Source::Rmm(_))
    }

    fn requests(&self) -> u64 {
        match self {
            Source::Psa(s) => s.requests(),
            Source::Rmm(s) => s.requests(),
        }
    }

    fn bytes(&self) -> u64 {
        match self {
            Source::Psa(s) => s.bytes(),
            Source::Rmm(s) => s.bytes(),
        }
    }
}

/// Why a pass stopped before it was complete.
#[derive(Debug)]
enum PassStop {
    Source(SourceError),
    Store(StoreError),
}

impl std::fmt::Display for PassStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PassStop::Source(e) => e.fmt(f),
            PassStop::Store(StoreError::LeaseLost) => {
                f.write_str("the sync lease was lost to another worker")
            }
            PassStop::Store(e) => write!(f, "storage error: {e}"),
        }
    }
}

impl Engine {
    pub fn new(
        store: Arc<dyn Store>,
        vault: Arc<Vault>,
        providers: Providers,
        config: EngineConfig,
        worker: impl Into<String>,
    ) -> Self {
        Self {
            store,
            vault,
            providers,
            config,
            clock: Arc::new(Utc::now),
            worker: worker.into(),
        }
    }

    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn worker(&self) -> &str {
        &self.worker
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// Claims one due integration and syncs it. `None` when nothing is due.
    pub async fn tick(&self) -> Result<Option<RunSummary>, EngineError> {
        let now = self.now();
        let Some(claim) = self
            .store
            .claim_due(&self.worker, now, now + self.config.lease)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(self.run_claimed(claim).await?))
    }

    /// Works until `shutdown` resolves: sync runs and the outbox side by side, so a long
    /// run does not hold back tickets waiting to reach their PSA.
    pub async fn run_worker(&self, shutdown: tokio::sync::watch::Receiver<bool>) {
        tokio::join!(
            self.run_sync_loop(shutdown.clone()),
            self.run_outbox_loop(shutdown)
        );
    }

    /// Drains the outbox every second (at once again while it finds work).
    async fn run_outbox_loop(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let idle = match self.drain_outbox().await {
                Ok(s) => s.claimed == 0,
                Err(e) => {
                    tracing::error!(error = %e, "outbox worker could not claim work");
                    true
                }
            };
            let idle = match self.drain_alert_resolves().await {
                Ok(n) => idle && n == 0,
                Err(e) => {
                    tracing::error!(error = %e, "outbox worker could not claim alert resolves");
                    idle
                }
            };
            if idle {
                tokio::select! {
                    _ = tokio::time::sleep(self.config.poll.min(std::time::Duration::from_secs(1))) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }

    /// Claim, run, repeat; sleep when idle.
    async fn run_sync_loop(&self, shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut shutdown = shutdown;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let idle = match self.tick().await {
                Ok(Some(s)) => {
                    tracing::info!(integration_id = %s.integration_id, run_id = s.run_id, result = s.result.as_str(), "sync run finished");
                    false
                }
                Ok(None) => true,
                Err(e) => {
                    tracing::error!(error = %e, "sync worker could not claim work");
                    true
                }
            };
            if idle {
                tokio::select! {
                    _ = tokio::time::sleep(self.config.poll) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }

    /// Runs an integration whose lease this worker holds, then releases it.
    #[tracing::instrument(skip_all, fields(tenant_id = %claim.tenant_id, integration_id = %claim.integration_id, worker = %self.worker))]
    pub async fn run_claimed(&self, claim: Claim) -> Result<RunSummary, EngineError> {
        let (tenant, id) = (claim.tenant_id, claim.integration_id);
        let started = std::time::Instant::now();
        let integration = self.store.get_integration(tenant, id).await?;
        let mut options = self.store.sync_options(tenant, id).await?;
        let synced: Vec<RecordType> = RecordType::ALL
            .into_iter()
            .filter(|r| options.syncs(*r))
            .collect();
        if claim.trigger == Trigger::Quick && options.tickets {
            // Quick Sync: the tickets pass alone, from its watermark; companies, contacts
            // and technicians keep their schedule.
            options.companies = false;
            options.contacts = false;
            options.technicians = false;
        }
        let now = self.now();
        let run_id = self
            .store
            .start_run(tenant, id, claim.trigger, &self.worker, now)
            .await?;
        self.store
            .set_status(tenant, id, IntegrationStatus::Syncing, None, None, now)
            .await?;

        let outcome = self
            .run_passes(tenant, &integration, &options, &synced, run_id)
            .await;
        let (result, counts, error, requests, bytes) = match outcome {
            Ok((counts, stops, requests, bytes)) => {
                let bad_counts = counts.values().any(|c| !c.add_up());
                let failed_records = counts.values().any(|c| c.failed > 0);
                let waiting: Vec<String> = counts
                    .iter()
                    .filter(|(_, c)| c.deferred > 0)
                    .map(|(r, c)| format!("{} {}", c.deferred, r.as_str()))
                    .collect();
                let result =
                    if stops.is_empty() && !bad_counts && !failed_records && waiting.is_empty() {
                        RunResult::Success
                    } else {
                        RunResult::Partial
                    };
                let mut reasons = stops;
                if failed_records {
                    reasons.push(
                        "some vendor records could not be read; see the run's events".to_string(),
                    );
                }
                if !waiting.is_empty() {
                    reasons.push(format!(
                        "{} wait for records not synced yet; the next run reads them again",
                        waiting.join(", ")
                    ));
                }
                let error = (!reasons.is_empty()).then(|| reasons.join("; "));
                (result, counts, error, requests, bytes)
            }
            Err(msg) => (RunResult::Failed, BTreeMap::new(), Some(msg), 0, 0),
        };
        let now = self.now();
        self.store
            .finish_run(run_id, result, &counts, error.as_deref(), requests, now)
            .await?;

        let schedule = self.store.schedule(tenant, id).await?;
        let failures = schedule
            .as_ref()
            .map(|s| s.consecutive_failures)
            .unwrap_or(0)
            + i64::from(result == RunResult::Failed);
        let interval = chrono::Duration::minutes(i64::from(options.interval_minutes));
        let (status, last_error, hint, pause) = match result {
            RunResult::Success => (IntegrationStatus::Connected, None, None, None),
            RunResult::Partial => (
                IntegrationStatus::Connected,
                error.clone().map(|e| format!("The last sync was partial: {e}")),
                Some("Open the sync log for the records and pages that failed; the next run resumes where this one stopped.".to_string()),
                None,
            ),
            RunResult::Failed | RunResult::Running => {
                let e = error.clone().unwrap_or_default();
                if failures >= self.config.max_failures {
                    (
                        IntegrationStatus::Error,
                        Some(format!("Automatic sync paused after {failures} failed runs: {e}")),
                        Some("Fix the cause (for example reconnect with current credentials), then Reactivate.".to_string()),
                        Some(e),
                    )
                } else {
                    (IntegrationStatus::Error, Some(e), Some("The sync will be retried automatically; see the sync log.".to_string()), None)
                }
            }
        };
        self.store
            .set_status(
                tenant,
                id,
                status,
                last_error.as_deref(),
                hint.as_deref(),
                now,
            )
            .await?;
        let backoff = chrono::Duration::minutes(failures.clamp(1, 30)).min(interval);
        let next = if result == RunResult::Failed {
            now + backoff
        } else {
            now + interval
        };
        self.store
            .release(
                id,
                &self.worker,
                Release {
                    next_run_at: next,
                    failed: result == RunResult::Failed,
                    pause,
                },
            )
            .await?;
        record_run_metrics(
            integration.provider.slug(),
            id,
            result,
            &counts,
            started.elapsed(),
            now,
        );
        let written: u64 = counts
            .values()
            .map(|c| c.created + c.updated + c.deactivated)
            .sum();
        if written >= BULK_WRITES {
            // A bulk import leaves the planner's statistics describing near-empty tables;
            // refreshing them is housekeeping, so it runs after the run, in the background.
            let store = self.store.clone();
            tokio::spawn(async move {
                if let Err(e) = store.refresh_statistics().await {
                    tracing::warn!(error = %e, "could not refresh planner statistics after a bulk sync");
                }
            });
        }
        Ok(RunSummary {
            run_id,
            integration_id: id,
            result,
            counts,
            error,
            requests,
            bytes,
        })
    }

    /// All passes of one run. `Err` is a failed run (nothing could be synced).
    async fn run_passes(
        &self,
        tenant: TenantId,
        integration: &mspbridge_domain::integration::Integration,
        options: &SyncOptions,
        synced: &[RecordType],
        run_id: i64,
    ) -> Result<(BTreeMap<RecordType, Counts>, Vec<String>, u64, u64), String> {
        let creds =
            mspbridge_store::load_credentials(self.store.as_ref(), &self.vault, integration)
                .await
                .map_err(|e| e.to_string())?;
        if self
            .providers
            .training_source(integration.provider, &creds)
            .is_some()
        {
            // A library reached by files (Bigger Brains): nothing to read; imports happen
            // when the admin uploads the files.
            let event = mspbridge_store::sync::NewEvent::new(
                mspbridge_domain::sync::EventLevel::Info,
                None,
                None,
                &format!(
                    "{} has no API: import the catalogue and progress files under Training",
                    integration.provider.descriptor().name
                ),
            );
            if let Err(e) = self
                .store
                .add_events(tenant, run_id, &[event], self.now())
                .await
            {
                tracing::warn!(error = %e, "could not log the run's event");
            }
            return Ok((BTreeMap::new(), vec![], 0, 0));
        }
        if let Some(billing) =
            self.providers
                .billing_source(integration.provider, &creds, self.config.retry)
        {
            let billing = billing?;
            return crate::billing::run(self, tenant, integration, run_id, billing.as_ref()).await;
        }
        if let Some(cloud) =
            self.providers
                .cloud_source(integration.provider, &creds, self.config.retry)
        {
            let cloud = cloud?;
            let concurrency = self.providers.config().microsoft_365.tenant_concurrency;
            return crate::m365::run(
                self,
                tenant,
                integration,
                run_id,
                cloud.as_ref(),
                concurrency,
            )
            .await;
        }
        let psa = self
            .providers
            .psa_source(
                integration.provider,
                &creds,
                self.config.retry,
                self.config.page_size,
            )
            .await
            .map(|r| r.map(Source::Psa));
        let source = match psa {
            Some(s) => Some(s),
            None => self
                .providers
                .rmm_source(
                    integration.provider,
                    &creds,
                    self.config.retry,
                    self.config.page_size,
                )
                .await
                .map(|r| r.map(Source::Rmm)),
        };
        let source = match source {
            None => {
                return Err(format!(
                    "{} has no sync connector yet",
                    integration.provider.descriptor().name
                ));
            }
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(s)) => s,
        };
        let started = self.now();
        let outcome = self
            .run_pipeline(tenant, integration, options, run_id, &source, synced)
            .await?;
        if let Source::Rmm(s) = &source {
            crate::rmm::explain_resolved(self, tenant, integration, run_id, s.as_ref(), started)
                .await;
        }

        if !outcome.any_complete && !outcome.stops.is_empty() {
            return Err(outcome.stops.join("; "));
        }
        Ok((
            outcome.counts,
            outcome.stops,
            source.requests(),
            source.bytes(),
        ))
    }
}
