//! Syncing a cloud tenant integration (Microsoft 365): every connected tenant of the
//! integration, several tenants at once (bounded), each read in order — organization and
//! domains, users (by delta after the first full read), groups, licences, Secure Score
//! (daily: the 90 days Microsoft keeps the first time, then the days since the last read)
//! and its control profiles (weekly). A tenant's problem is that tenant's status with the
//! fix in words (consent missing, secret expired, permission missing); it is not tried
//! again until the admin acts, and the other tenants keep syncing. Counts: tenants under
//! `companies`, users under `contacts`.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use futures_util::StreamExt;
use mspbridge_domain::TenantId;
use mspbridge_domain::m365::{TenantStatus, score_percent};
use mspbridge_domain::sync::{Counts, EventLevel, RecordType};
use mspbridge_providers::cloud::{CloudError, CloudTenantSource};
use mspbridge_store::m365::Connection;
use mspbridge_store::sync::NewEvent;

use crate::Engine;

/// Secure Score is recomputed about once a day.
const SCORES_EVERY: Duration = Duration::hours(20);
/// Control profiles change rarely.
const PROFILES_EVERY: Duration = Duration::days(7);
/// What Microsoft keeps.
const SCORE_DAYS: i64 = 90;

/// What one tenant's sync did.
#[derive(Debug, Default)]
struct TenantOutcome {
    users_seen: u64,
    users_failed: u64,
    users_written: u64,
    users_removed: u64,
    written: u64,
    failed: Option<String>,
    /// Secure Score refused (a 403): the rest was read and is saved; the tenant's status
    /// says what to grant.
    denied: Option<String>,
    events: Vec<NewEvent>,
}

pub(crate) type RunOutcome = (BTreeMap<RecordType, Counts>, Vec<String>, u64, u64);

/// Every connected tenant of the integration, `concurrency` at once.
pub(crate) async fn run(
    engine: &Engine,
    tenant: TenantId,
    integration: &mspbridge_domain::integration::Integration,
    run_id: i64,
    source: &dyn CloudTenantSource,
    concurrency: usize,
) -> Result<RunOutcome, String> {
    let connections = engine
        .store
        .m365_connections(tenant, integration.id)
        .await
        .map_err(|e| e.to_string())?;
    let (due, waiting): (Vec<Connection>, Vec<Connection>) = connections
        .into_iter()
        .filter(|c| c.tenant_status() != TenantStatus::Disconnected)
        .partition(|c| !c.tenant_status().waits_for_admin());
    let mut events = Vec::new();
    for c in &waiting {
        events.push(NewEvent::new(
            EventLevel::Warning,
            Some(RecordType::Companies),
            Some(&c.ms_tenant_id),
            &format!(
                "{} ({}) not synced: {}",
                c.company_name,
                c.default_domain.as_deref().unwrap_or(&c.ms_tenant_id),
                c.tenant_status().fix()
            ),
        ));
    }
    if due.is_empty() && waiting.is_empty() {
        events.push(NewEvent::new(
            EventLevel::Info,
            Some(RecordType::Companies),
            None,
            "No company is connected yet: open Microsoft 365 > Companies and Connect one.",
        ));
    }
    // Two stages: tenants are read `concurrency` at once, and each read tenant is handed
    // to the saving stage, so a tenant's save never holds a reading slot. SQLite has one
    // writer: its saves take turns (a queue of waiting writers would outlast its busy
    // timeout); PostgreSQL saves side by side (each tenant's rows are its own).
    let writers = if engine.store.backend() == "sqlite" {
        1
    } else {
        4
    };
    let (tx, rx) =
        tokio::sync::mpsc::channel::<(Connection, TenantOutcome, Result<Fetched, Failure>)>(
            concurrency.max(1) * 2,
        );
    let reading = async move {
        let mut read = futures_util::stream::iter(due)
            .map(|c| async move {
                let mut o = TenantOutcome::default();
                let f = fetch_tenant(engine, &c, source, &mut o).await;
                (c, o, f)
            })
            .buffer_unordered(concurrency.max(1));
        while let Some(item) = read.next().await {
            if tx.send(item).await.is_err() {
                break;
            }
        }
    };
    let saving = async {
        let mut rx = rx;
        let mut running = futures_util::stream::FuturesUnordered::new();
        let mut outcomes: Vec<(Connection, TenantOutcome)> = Vec::new();
        let mut open = true;
        while open || !running.is_empty() {
            if open && running.len() < writers {
                tokio::select! {
                    item = rx.recv() => match item {
                        Some((c, o, f)) => running.push(save_one(engine, tenant, c, o, f)),
                        None => open = false,
                    },
                    Some(done) = running.next(), if !running.is_empty() => outcomes.push(done),
                }
            } else if let Some(done) = running.next().await {
                outcomes.push(done);
            }
        }
        outcomes
    };
    let ((), outcomes) = tokio::join!(reading, saving);

    let mut tenants = Counts::default();
    let mut users = Counts::default();
    let mut stops = Vec::new();
    tenants.seen = (outcomes.len() + waiting.len()) as u64;
    tenants.skipped = waiting.len() as u64;
    for (c, o) in outcomes {
        events.extend(o.events);
        users.seen += o.users_seen;
        users.failed += o.users_failed;
        let changed = o
            .users_written
            .saturating_sub(o.users_removed)
            .min(o.users_seen - o.users_failed);
        users.updated += changed;
        users.unchanged += o.users_seen - o.users_failed - changed;
        users.deactivated += o.users_removed;
        match o.failed {
            // Said in the stops (and the tenant's status), not as unreadable records.
            Some(e) => {
                tenants.skipped += 1;
                stops.push(format!("{}: {e}", c.company_name));
            }
            None if o.written > 0 => tenants.updated += 1,
            None => tenants.unchanged += 1,
        }
    }
    if !waiting.is_empty() {
        stops.push(format!(
            "{} tenant(s) wait for the admin (see their status on Microsoft 365 > Companies)",
            waiting.len()
        ));
    }
    if let Err(e) = engine
        .store
        .add_events(tenant, run_id, &events, engine.now())
        .await
    {
        tracing::warn!(error = %e, "could not log the tenants' events");
    }
    let mut counts = BTreeMap::new();
    counts.insert(RecordType::Companies, tenants);
    counts.insert(RecordType::Contacts, users);
    Ok((counts, stops, source.requests(), source.bytes()))
}

fn due(last: Option<DateTime<Utc>>, every: Duration, now: DateTime<Utc>) -> bool {
    last.is_none_or(|t| now - t >= every)
}

async fn save_one(
    engine: &Engine,
    tenant: TenantId,
    c: Connection,
    mut o: TenantOutcome,
    f: Result<Fetched, Failure>,
) -> (Connection, TenantOutcome) {
    finish_tenant(engine, tenant, &c, f, &mut o).await;
    (c, o)
}

/// A read tenant saved (or its failure recorded as its status, with the fix).
#[tracing::instrument(skip_all, fields(connection = c.id, ms_tenant = %c.ms_tenant_id))]
async fn finish_tenant(
    engine: &Engine,
    tenant: TenantId,
    c: &Connection,
    fetched: Result<Fetched, Failure>,
    o: &mut TenantOutcome,
) {
    let name = format!(
        "{} ({})",
        c.company_name,
        c.default_domain.as_deref().unwrap_or(&c.ms_tenant_id)
    );
    let result = match fetched {
        Ok(f) => match save_tenant(engine, tenant, c, f, o).await {
            // Saved what was read; the status says what Secure Score needs.
            Ok(()) => match o.denied.take() {
                Some(message) => Err(Failure::Tenant(TenantStatus::PermissionMissing, message)),
                None => Ok(()),
            },
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => {
            // A missing permission stays until the admin reconnects (consents again).
            if !matches!(
                c.tenant_status(),
                TenantStatus::Connected | TenantStatus::PermissionMissing
            ) {
                let _ = engine
                    .store
                    .m365_set_status(tenant, c.id, TenantStatus::Connected, None, engine.now())
                    .await;
            }
        }
        Err(Failure::Tenant(status, message)) => {
            let _ = engine
                .store
                .m365_set_status(tenant, c.id, status, Some(&message), engine.now())
                .await;
            o.events.push(NewEvent::new(
                EventLevel::Error,
                Some(RecordType::Companies),
                Some(&c.ms_tenant_id),
                &format!("{name}: {} — {message}. {}", status.label(), status.fix()),
            ));
            o.failed = Some(format!("{} ({})", status.label(), status.fix()));
        }
        Err(Failure::Other(message)) => {
            let _ = engine
                .store
                .m365_set_status(
                    tenant,
                    c.id,
                    TenantStatus::Error,
                    Some(&message),
                    engine.now(),
                )
                .await;
            o.events.push(NewEvent::new(
                EventLevel::Error,
                Some(RecordType::Companies),
                Some(&c.ms_tenant_id),
                &format!("{name}: {message}; retried at the next run"),
            ));
            o.failed = Some(message);
        }
    }
}

enum Failure {
    Tenant(TenantStatus, String),
    Other(String),
}

impl From<CloudError> for Failure {
    fn from(e: CloudError) -> Self {
        match e {
            CloudError::Tenant { status, message } => Failure::Tenant(status, message),
            other => Failure::Other(other.to_string()),
        }
    }
}

impl From<mspbridge_store::StoreError> for Failure {
    fn from(e: mspbridge_store::StoreError) -> Self {
        Failure::Other(format!("could not save: {e}"))
    }
}

/// What one tenant's read gave, before any of it is saved.
struct Fetched {
    org: mspbridge_domain::m365::TenantOrg,
    name: String,
    users: mspbridge_providers::cloud::UsersRead,
    groups: mspbridge_providers::cloud::Read<mspbridge_domain::m365::TenantGroup>,
    licences: mspbridge_providers::cloud::Read<mspbridge_domain::m365::TenantLicence>,
    /// Snapshots and whether the answer was partial (its warning).
    scores: Option<(Vec<mspbridge_domain::m365::ScoreSnapshot>, Option<String>)>,
    profiles: Option<Vec<mspbridge_domain::m365::ControlProfile>>,
}

/// Reads the tenant, every request in order, nothing saved yet.
async fn fetch_tenant(
    engine: &Engine,
    c: &Connection,
    source: &dyn CloudTenantSource,
    o: &mut TenantOutcome,
) -> Result<Fetched, Failure> {
    let t = c.ms_tenant_id.as_str();
    let org = source.organization(t).await?;
    let name = format!(
        "{} ({})",
        c.company_name,
        org.domains
            .iter()
            .find(|d| d.is_default)
            .map(|d| d.name.as_str())
            .unwrap_or(t)
    );
    let users = match source.users(t, c.users_delta_link.as_deref()).await {
        Err(CloudError::DeltaExpired(why)) => {
            o.events.push(NewEvent::new(
                EventLevel::Info,
                Some(RecordType::Contacts),
                Some(t),
                &format!("{name}: {why}"),
            ));
            source.users(t, None).await?
        }
        other => other?,
    };
    for r in &users.rejected {
        o.events.push(NewEvent::new(
            EventLevel::Warning,
            Some(RecordType::Contacts),
            Some(t),
            &format!("{name}: a user could not be read and was skipped ({r})"),
        ));
    }
    let groups = source.groups(t).await?;
    let licences = source.licences(t).await?;
    for (what, rejected) in [("group", &groups.rejected), ("licence", &licences.rejected)] {
        for r in rejected {
            o.events.push(NewEvent::new(
                EventLevel::Warning,
                Some(RecordType::Companies),
                Some(t),
                &format!("{name}: a {what} could not be read and was skipped; none is removed until a complete read ({r})"),
            ));
        }
    }
    let now = engine.now();
    let security = c.tenant_status() != TenantStatus::PermissionMissing;
    if !security {
        o.events.push(NewEvent::new(
            EventLevel::Warning,
            Some(RecordType::Companies),
            Some(t),
            &format!(
                "{name}: Secure Score not read: {}",
                TenantStatus::PermissionMissing.fix()
            ),
        ));
    }
    let scores = if security && due(c.scores_synced_at, SCORES_EVERY, now) {
        let days = match c.scores_synced_at {
            None => SCORE_DAYS,
            Some(t) => ((now - t).num_days() + 2).clamp(2, SCORE_DAYS),
        };
        match source.secure_scores(t, days as usize).await {
            Ok(read) => Some((read.snapshots, read.partial)),
            Err(CloudError::Tenant {
                status: TenantStatus::PermissionMissing,
                message,
            }) => {
                o.denied = Some(message);
                None
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    let profiles =
        if security && o.denied.is_none() && due(c.profiles_synced_at, PROFILES_EVERY, now) {
            match source.control_profiles(t).await {
                Ok(read) => Some(read.records),
                Err(CloudError::Tenant {
                    status: TenantStatus::PermissionMissing,
                    message,
                }) => {
                    o.denied = Some(message);
                    None
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            None
        };
    Ok(Fetched {
        org,
        name,
        users,
        groups,
        licences,
        scores,
        profiles,
    })
}

async fn save_tenant(
    engine: &Engine,
    tenant: TenantId,
    c: &Connection,
    f: Fetched,
    o: &mut TenantOutcome,
) -> Result<(), Failure> {
    let store = &engine.store;
    let t = c.ms_tenant_id.as_str();
    let name = &f.name;
    let now = engine.now();
    o.written += store.m365_save_org(tenant, c.id, &f.org, now).await?;
    let users = &f.users;
    o.users_seen = (users.users.len() + users.rejected.len()) as u64;
    o.users_failed = users.rejected.len() as u64;
    o.users_removed = users.removed.len() as u64;
    let w = store
        .m365_save_users(
            tenant,
            c.id,
            mspbridge_store::m365::UserChanges {
                users: &users.users,
                removed: &users.removed,
                // A user that could not be read is not gone: a full read with rejected
                // users marks nobody removed.
                full: users.full && users.rejected.is_empty(),
                delta_link: users.delta_link.as_deref(),
            },
            now,
        )
        .await?;
    o.users_written = w;
    o.written += w;
    store
        .m365_match_users(tenant, mspbridge_domain::CompanyId(c.company_id))
        .await?;
    o.written += store
        .m365_save_groups(
            tenant,
            c.id,
            &f.groups.records,
            f.groups.rejected.is_empty(),
            now,
        )
        .await?;
    o.written += store
        .m365_save_licences(
            tenant,
            c.id,
            &f.licences.records,
            f.licences.rejected.is_empty(),
            now,
        )
        .await?;
    let mut read_scores = false;
    let mut score_line = String::new();
    if let Some((snapshots, partial)) = &f.scores {
        o.written += store
            .m365_save_scores(tenant, c.id, snapshots, partial.is_some(), now)
            .await?;
        if let Some(warning) = partial {
            o.events.push(NewEvent::new(
                EventLevel::Warning,
                Some(RecordType::Companies),
                Some(t),
                &format!(
                    "{name}: Microsoft answered Secure Score in part ({warning}); the kept snapshots stay as they were and the next run reads it again"
                ),
            ));
        } else {
            read_scores = true;
        }
        if let Some(s) = snapshots.first() {
            score_line = format!(
                ", Secure Score {:.1} of {:.1} ({} %)",
                s.current,
                s.max,
                score_percent(s.current, s.max)
            );
        }
    }
    if let Some(profiles) = &f.profiles {
        o.written += store
            .m365_save_profiles(tenant, c.id, profiles, now)
            .await?;
    }
    store
        .m365_mark_synced(tenant, c.id, read_scores, f.profiles.is_some(), now)
        .await?;
    o.events.push(NewEvent::new(
        EventLevel::Info,
        Some(RecordType::Companies),
        Some(t),
        &format!(
            "{name}: {} users read ({}), {} groups, {} licences{score_line}; {} rows changed",
            users.users.len(),
            if users.full { "all" } else { "changes only" },
            f.groups.records.len(),
            f.licences.records.len(),
            o.written
        ),
    ));
    Ok(())
}
