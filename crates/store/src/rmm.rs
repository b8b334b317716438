//! RMM devices, device types and their mappings, and alerts (spec 2.14, 2.15): what the
//! devices pass writes (staging, auto-sync imports), what the staging and device pages
//! read, and the admin's imports and ignores. SQL shared by both backends.
//!
//! A device belongs to the portal company its site is linked to (`external_links`, kind
//! `company`, of the same integration), joined when read: mapping a site moves its devices
//! at once and unmapping hides them. A device is *staged* when it is not imported, not
//! ignored by hand, its type is not ignored and its site is mapped; devices of unmapped
//! sites never reach staging (the page counts them and says why).

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use mspbridge_domain::{CompanyId, IntegrationId, TenantId};
use serde::Serialize;

use crate::Result;

/// The devices upsert's conflict rule, one text for SQLite's row-by-row statement and
/// PostgreSQL's batch: every field from the RMM; the import state moves only from staged to
/// imported (an auto-sync type), never back.
macro_rules! device_upsert_conflict {
    () => {
        " ON CONFLICT (integration_id, external_id) DO UPDATE SET site_external_id = excluded.site_external_id, hostname = excluded.hostname, \
           provider_type = excluded.provider_type, category = excluded.category, device_class = excluded.device_class, \
           operating_system = excluded.operating_system, online = excluded.online, last_seen = excluded.last_seen, \
           reboot_required = excluded.reboot_required, patch_status = excluded.patch_status, antivirus_status = excluded.antivirus_status, \
           warranty_date = excluded.warranty_date, details = excluded.details, \
           import_state = CASE WHEN excluded.device_type_id IS NOT NULL AND devices.import_state = 'staged' THEN 'imported' ELSE devices.import_state END, \
           device_type_id = CASE WHEN excluded.device_type_id IS NOT NULL AND devices.import_state = 'staged' THEN excluded.device_type_id ELSE devices.device_type_id END, \
           imported_at = CASE WHEN excluded.device_type_id IS NOT NULL AND devices.import_state = 'staged' THEN excluded.updated_at ELSE devices.imported_at END, \
           removed_upstream_at = excluded.removed_upstream_at, updated_at = excluded.updated_at "
    };
}
pub(crate) use device_upsert_conflict;

/// The alerts upsert's conflict rule, shared the same way.
macro_rules! alert_upsert_conflict {
    () => {
        " ON CONFLICT (integration_id, external_id) DO UPDATE SET device_external_id = excluded.device_external_id, \
           device_name = excluded.device_name, site_external_id = excluded.site_external_id, priority = excluded.priority, \
           priority_rank = excluded.priority_rank, diagnostics = excluded.diagnostics, raised_at = excluded.raised_at, \
           resolved = excluded.resolved, resolved_at = excluded.resolved_at, resolved_by = excluded.resolved_by, muted = excluded.muted, \
           ticket_number = excluded.ticket_number, context_type = excluded.context_type, context = excluded.context, updated_at = excluded.updated_at "
    };
}
pub(crate) use alert_upsert_conflict;

/// A provider type (and Datto category) with what the admin chose for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TypeMapping {
    pub id: i64,
    pub provider_type: String,
    pub category: String,
    pub device_type_id: Option<i64>,
    pub device_type: Option<String>,
    pub auto_sync: bool,
    pub ignored: bool,
    /// Devices of this type waiting in staging (mapped sites, not imported or ignored).
    pub staged: i64,
    /// Devices of this type already imported.
    pub imported: i64,
}

/// A tenant-defined device type (Workstation, Server, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceType {
    pub id: i64,
    pub name: String,
}

/// A device row for tables (staging, a company's devices).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceRow {
    pub id: i64,
    pub integration_id: i64,
    pub external_id: String,
    pub hostname: String,
    pub provider_type: String,
    pub category: String,
    pub device_class: Option<String>,
    pub operating_system: Option<String>,
    pub online: Option<bool>,
    pub last_seen: Option<DateTime<Utc>>,
    pub reboot_required: Option<bool>,
    pub patch_status: Option<String>,
    pub antivirus_status: Option<String>,
    pub warranty_date: Option<NaiveDate>,
    pub import_state: String,
    pub device_type: Option<String>,
    pub site_external_id: Option<String>,
    pub site_name: Option<String>,
    pub company_id: Option<i64>,
    pub company_name: Option<String>,
    pub removed_upstream_at: Option<DateTime<Utc>>,
    pub open_alerts: i64,
}

/// One device with every field the RMM sent (`details`, JSON of `ExtDevice`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceDetail {
    pub device: DeviceRow,
    /// Every field the RMM sent for the device.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub details: serde_json::Value,
    pub alerts: Vec<AlertRow>,
    /// What the RMM said when the device was last read alone (Refresh): state, patch
    /// summary, facts. `None` until refreshed.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub refresh: Option<mspbridge_domain::rmm::DeviceRefresh>,
    pub refreshed_at: Option<DateTime<Utc>>,
    /// Why the last Refresh failed (cleared by one that works).
    pub refresh_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertRow {
    pub id: i64,
    pub integration_id: i64,
    pub external_id: String,
    pub priority: String,
    pub diagnostics: Option<String>,
    pub device_id: Option<i64>,
    pub device_name: Option<String>,
    pub company_id: Option<i64>,
    pub company_name: Option<String>,
    pub raised_at: Option<DateTime<Utc>>,
    pub resolved: bool,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<String>,
    pub ticket_number: Option<String>,
    pub context_type: Option<String>,
    pub resolve_requested_at: Option<DateTime<Utc>>,
    pub resolve_error: Option<String>,
}

/// Who resolved an alert that a complete sweep no longer saw open, until the RMM says
/// who did (`RmmStore::alerts_to_explain`).
pub const NO_LONGER_OPEN: &str = "the RMM (no longer open)";

/// Which staged devices a listing shows.
#[derive(Debug, Clone, Default)]
pub struct DeviceQuery {
    /// Part of the hostname, type, site or company (case-insensitive).
    pub search: String,
    /// Only devices not imported yet (staging).
    pub only_unimported: bool,
    pub company: Option<CompanyId>,
    pub offset: i64,
    pub limit: i64,
}

#[derive(Debug, Clone, Default)]
pub struct AlertQuery {
    pub company: Option<CompanyId>,
    /// Resolved ones too.
    pub include_resolved: bool,
    pub offset: i64,
    pub limit: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Paged<T> {
    pub total: i64,
    pub rows: Vec<T>,
}

/// What an RMM integration holds, for its card and pages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RmmCounts {
    pub devices: i64,
    pub imported: i64,
    pub staged: i64,
    /// Devices whose site is not mapped to a portal company (never staged).
    pub unmapped_devices: i64,
    pub unmapped_sites: i64,
    pub open_alerts: i64,
}

/// What an admin chose for a provider type: a device type (`None`: not mapped), Auto-Sync
/// (needs a device type) and Ignore.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MappingChoice {
    pub device_type: Option<i64>,
    pub auto_sync: bool,
    pub ignored: bool,
}

/// What deciding a device needs to know of its stored row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceState {
    pub id: i64,
    pub import_state: String,
}

/// An alert whose Resolve waits to be written to its RMM.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DueResolve {
    pub alert_id: i64,
    pub tenant_id: i64,
    pub integration_id: i64,
    pub external_id: String,
    pub attempts: i64,
}

/// How writing a Resolve went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveOutcome {
    Done,
    /// Transient: try again at this time.
    Retry(DateTime<Utc>, String),
    /// Refused by the RMM: the admin sees why; Resolve can be pressed again.
    Refused(String),
}

/// Which devices an import takes.
#[derive(Debug, Clone)]
pub enum ImportScope {
    /// These devices (Import Selected).
    Devices(Vec<i64>),
    /// Every staged device of this type mapping (Import All on a row).
    Type(i64),
    /// Every staged device of every mapped, non-ignored type (Import All Mapped).
    AllMapped,
}

#[async_trait]
pub trait RmmStore: Send + Sync {
    /// Stored devices of this integration by external id.
    async fn device_states(
        &self,
        id: IntegrationId,
        external_ids: &[String],
    ) -> Result<std::collections::HashMap<String, DeviceState>>;
    /// The portal company linked to this PSA company (by an integration of `provider`,
    /// slug), with its name.
    async fn company_by_psa_identity(
        &self,
        tenant: TenantId,
        provider: &str,
        external_id: &str,
    ) -> Result<Option<(i64, String)>>;
    async fn type_mappings(&self, tenant: TenantId, id: IntegrationId) -> Result<Vec<TypeMapping>>;
    /// What the devices pass needs of the type mappings, without their counts: per
    /// (provider type, category) the admin's choice.
    async fn type_choices(
        &self,
        id: IntegrationId,
    ) -> Result<std::collections::HashMap<(String, String), MappingChoice>>;
    /// Maps a provider type to a device type (`None` removes it) and sets its flags.
    /// Auto-sync needs a mapping; ignoring clears auto-sync.
    async fn set_type_mapping(
        &self,
        tenant: TenantId,
        id: IntegrationId,
        mapping: i64,
        choice: MappingChoice,
        now: DateTime<Utc>,
    ) -> Result<TypeMapping>;
    /// Turns auto-sync on for every mapped, non-ignored type; how many changed.
    async fn enable_all_auto_sync(
        &self,
        tenant: TenantId,
        id: IntegrationId,
        now: DateTime<Utc>,
    ) -> Result<u64>;
    async fn device_types(&self, tenant: TenantId) -> Result<Vec<DeviceType>>;
    /// Creates a device type (or returns the one with that name).
    async fn create_device_type(
        &self,
        tenant: TenantId,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<DeviceType>;
    /// Staged (or, with `only_unimported` off, staged and imported) devices of mapped sites.
    async fn staged_devices(
        &self,
        tenant: TenantId,
        id: IntegrationId,
        q: &DeviceQuery,
    ) -> Result<Paged<DeviceRow>>;
    /// Imports staged devices as their type's device type; devices whose type has no
    /// mapping are left staged. How many were imported.
    async fn import_devices(
        &self,
        tenant: TenantId,
        id: IntegrationId,
        scope: &ImportScope,
        now: DateTime<Utc>,
    ) -> Result<u64>;
    /// Ignores staged devices one by one (Ignore Selected); how many.
    async fn ignore_devices(
        &self,
        tenant: TenantId,
        id: IntegrationId,
        devices: &[i64],
        now: DateTime<Utc>,
    ) -> Result<u64>;
    /// Imported devices across the tenant's RMMs (a company's, with `q.company`).
    async fn devices(&self, tenant: TenantId, q: &DeviceQuery) -> Result<Paged<DeviceRow>>;
    async fn device(&self, tenant: TenantId, device: i64) -> Result<DeviceDetail>;
    /// Keeps what a Refresh read (`Ok`) or why it failed (`Err`, the last good refresh
    /// stays).
    async fn record_device_refresh(
        &self,
        tenant: TenantId,
        device: i64,
        outcome: std::result::Result<&mspbridge_domain::rmm::DeviceRefresh, &str>,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// Alerts across the tenant's RMMs, most urgent first.
    async fn alerts(&self, tenant: TenantId, q: &AlertQuery) -> Result<Paged<AlertRow>>;
    async fn rmm_counts(&self, tenant: TenantId, id: IntegrationId) -> Result<RmmCounts>;
    /// Devices still in the RMM per site (external id).
    async fn site_device_counts(
        &self,
        tenant: TenantId,
        id: IntegrationId,
    ) -> Result<std::collections::HashMap<String, i64>>;
    /// Alerts of this integration a sweep resolved because the RMM stopped listing them open
    /// (resolved by [`NO_LONGER_OPEN`]) since `since`, newest first: the RMM is asked who
    /// resolved them and when.
    async fn alerts_to_explain(
        &self,
        id: IntegrationId,
        since: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<String>>;
    /// What the RMM said of an alert it no longer lists open: who resolved it and when.
    async fn explain_alert(
        &self,
        id: IntegrationId,
        external_id: &str,
        resolved_by: &str,
        resolved_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// Queues the portal's Resolve of an open alert (idempotent); the alert as it is now.
    async fn request_alert_resolve(
        &self,
        tenant: TenantId,
        alert: i64,
        now: DateTime<Utc>,
    ) -> Result<AlertRow>;
    /// Resolves due now, oldest first; each is pushed `lease` ahead so another worker
    /// does not take it meanwhile.
    async fn claim_alert_resolves(
        &self,
        now: DateTime<Utc>,
        lease: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<DueResolve>>;
    async fn finish_alert_resolve(
        &self,
        alert: i64,
        outcome: &ResolveOutcome,
        now: DateTime<Utc>,
    ) -> Result<()>;
}

pub(crate) const DEVICE_COLS: &str = "d.id, d.integration_id, d.external_id, d.hostname, d.provider_type, d.category, d.device_class, \
    d.operating_system, d.online, d.last_seen, d.reboot_required, d.patch_status, d.antivirus_status, d.warranty_date, d.import_state, \
    t.name AS device_type, d.site_external_id, ic.name AS site_name, c.id AS company_id, c.name AS company_name, d.removed_upstream_at, \
    (SELECT COUNT(*) FROM alerts a WHERE a.integration_id = d.integration_id AND a.device_external_id = d.external_id AND a.resolved = FALSE) AS open_alerts";

/// Devices joined to their type, site (the integration's company list) and the portal
/// company the site is linked to.
pub(crate) const DEVICE_FROM: &str = "devices d \
    LEFT JOIN device_types t ON t.id = d.device_type_id \
    LEFT JOIN integration_companies ic ON ic.integration_id = d.integration_id AND ic.external_id = d.site_external_id \
    LEFT JOIN external_links l ON l.integration_id = d.integration_id AND l.record_kind = 'company' AND l.external_id = d.site_external_id AND l.gone_upstream_at IS NULL \
    LEFT JOIN companies c ON c.id = l.local_id \
    LEFT JOIN device_type_mappings m ON m.integration_id = d.integration_id AND m.provider_type = d.provider_type AND m.category = d.category";

pub(crate) const ALERT_COLS: &str = "a.id, a.integration_id, a.external_id, a.priority, a.diagnostics, d.id AS device_id, \
    COALESCE(d.hostname, a.device_name) AS device_name, c.id AS company_id, c.name AS company_name, a.raised_at, a.resolved, \
    a.resolved_at, a.resolved_by, a.ticket_number, a.context_type, a.resolve_requested_at, a.resolve_error";

pub(crate) const ALERT_FROM: &str = "alerts a \
    LEFT JOIN devices d ON d.integration_id = a.integration_id AND d.external_id = a.device_external_id \
    LEFT JOIN external_links l ON l.integration_id = a.integration_id AND l.record_kind = 'company' AND l.external_id = a.site_external_id AND l.gone_upstream_at IS NULL \
    LEFT JOIN companies c ON c.id = l.local_id";

macro_rules! impl_rmm_store {
    ($store:ident) => {
        pub(super) mod rmm_impl {
            use std::collections::HashMap;

            use async_trait::async_trait;
            use chrono::{DateTime, Utc};
            use mspbridge_domain::{IntegrationId, TenantId};

            use super::Db;
            use crate::rmm::*;
            use crate::sync_shared::sql;
            use crate::{Result, StoreError};

            type Tx<'a> = sqlx::Transaction<'a, Db>;

            /// The type mappings a devices page needs, created in one order (sorted): pages
            /// committed side by side then wait for each other on a shared type instead of
            /// deadlocking.
            pub(crate) async fn ensure_type_mappings(tx: &mut Tx<'_>, tenant: i64, integration: i64, ops: &[crate::sync::Op], now: DateTime<Utc>) -> Result<()> {
                let types: std::collections::BTreeSet<(&str, &str)> = ops
                    .iter()
                    .filter_map(|o| match o {
                        crate::sync::Op::Device(d) => Some((d.provider_type.as_str(), d.category.as_str())),
                        _ => None,
                    })
                    .collect();
                for (provider_type, category) in types {
                    sqlx::query(
                        "INSERT INTO device_type_mappings (tenant_id, integration_id, provider_type, category, updated_at) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (integration_id, provider_type, category) DO NOTHING",
                    )
                    .bind(tenant)
                    .bind(integration)
                    .bind(provider_type)
                    .bind(category)
                    .bind(now)
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(())
            }

            /// `(… AND …)` filter of staged devices: not imported or ignored by hand, type
            /// not ignored, site mapped to a portal company, still in the RMM.
            const STAGED: &str = "d.import_state = 'staged' AND COALESCE(m.ignored, FALSE) = FALSE AND c.id IS NOT NULL AND d.removed_upstream_at IS NULL";

            fn like(search: &str) -> String {
                let s = search.trim().to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
                format!("%{s}%")
            }

            const SEARCH: &str = "(LOWER(d.hostname) LIKE $3 ESCAPE '\\' OR LOWER(d.provider_type) LIKE $3 ESCAPE '\\' OR LOWER(COALESCE(ic.name, '')) LIKE $3 ESCAPE '\\' OR LOWER(COALESCE(c.name, '')) LIKE $3 ESCAPE '\\')";

            async fn paged_devices(pool: &sqlx::Pool<Db>, tenant: TenantId, filter: String, integration: Option<i64>, q: &DeviceQuery) -> Result<Paged<DeviceRow>> {
                let (company, search, offset, limit) = (q.company.map(|c| c.0), q.search.as_str(), q.offset, q.limit);
                let scope = "d.tenant_id = $1 AND ($2 IS NULL OR d.integration_id = $2) AND ($4 IS NULL OR c.id = $4)";
                let (total,): (i64,) = sqlx::query_as(sql(format!("SELECT COUNT(*) FROM {DEVICE_FROM} WHERE {scope} AND {SEARCH} AND {filter}")))
                    .bind(tenant.0)
                    .bind(integration)
                    .bind(like(search))
                    .bind(company)
                    .fetch_one(pool)
                    .await?;
                let rows: Vec<DeviceRow> = sqlx::query_as(sql(format!(
                    "SELECT {DEVICE_COLS} FROM {DEVICE_FROM} WHERE {scope} AND {SEARCH} AND {filter} ORDER BY LOWER(d.hostname), d.id LIMIT $5 OFFSET $6"
                )))
                .bind(tenant.0)
                .bind(integration)
                .bind(like(search))
                .bind(company)
                .bind(limit.clamp(1, 500))
                .bind(offset.max(0))
                .fetch_all(pool)
                .await?;
                Ok(Paged { total, rows })
            }

            async fn mapping_by_id(pool: &sqlx::Pool<Db>, tenant: TenantId, id: IntegrationId, mapping: i64) -> Result<TypeMapping> {
                let all = type_mappings(pool, tenant, id).await?;
                all.into_iter().find(|m| m.id == mapping).ok_or(StoreError::NotFound)
            }

            async fn type_mappings(pool: &sqlx::Pool<Db>, tenant: TenantId, id: IntegrationId) -> Result<Vec<TypeMapping>> {
                Ok(sqlx::query_as(sql(format!(
                    "SELECT m.id, m.provider_type, m.category, m.device_type_id, t.name AS device_type, m.auto_sync, m.ignored, \
                       (SELECT COUNT(*) FROM {DEVICE_FROM} WHERE d.integration_id = mm.integration_id AND d.provider_type = mm.provider_type \
                          AND d.category = mm.category AND {STAGED}) AS staged, \
                       (SELECT COUNT(*) FROM devices d WHERE d.integration_id = mm.integration_id AND d.provider_type = mm.provider_type \
                          AND d.category = mm.category AND d.import_state = 'imported') AS imported \
                     FROM device_type_mappings m JOIN device_type_mappings mm ON mm.id = m.id LEFT JOIN device_types t ON t.id = m.device_type_id \
                     WHERE m.tenant_id = $1 AND m.integration_id = $2 ORDER BY LOWER(m.category), LOWER(m.provider_type)"
                )))
                .bind(tenant.0)
                .bind(id.0)
                .fetch_all(pool)
                .await?)
            }

            #[async_trait]
            impl RmmStore for super::$store {
                async fn device_states(&self, id: IntegrationId, external_ids: &[String]) -> Result<HashMap<String, DeviceState>> {
                    let mut out = HashMap::with_capacity(external_ids.len());
                    for chunk in external_ids.chunks(500) {
                        let q = format!(
                            "SELECT external_id, id, import_state FROM devices WHERE integration_id = $1 AND external_id IN ({})",
                            crate::sync_shared::placeholders(2, chunk.len())
                        );
                        let mut query = sqlx::query_as::<_, (String, i64, String)>(sql(q)).bind(id.0);
                        for e in chunk {
                            query = query.bind(e);
                        }
                        for (ext, id, import_state) in query.fetch_all(&self.pool).await? {
                            out.insert(ext, DeviceState { id, import_state });
                        }
                    }
                    Ok(out)
                }

                async fn company_by_psa_identity(&self, tenant: TenantId, provider: &str, external_id: &str) -> Result<Option<(i64, String)>> {
                    Ok(sqlx::query_as(
                        "SELECT c.id, c.name FROM external_links l JOIN integrations i ON i.id = l.integration_id JOIN companies c ON c.id = l.local_id \
                         WHERE l.tenant_id = $1 AND i.provider = $2 AND l.record_kind = 'company' AND l.external_id = $3 AND l.gone_upstream_at IS NULL \
                         ORDER BY i.id LIMIT 1",
                    )
                    .bind(tenant.0)
                    .bind(provider)
                    .bind(external_id)
                    .fetch_optional(&self.pool)
                    .await?)
                }

                async fn type_mappings(&self, tenant: TenantId, id: IntegrationId) -> Result<Vec<TypeMapping>> {
                    type_mappings(&self.pool, tenant, id).await
                }

                async fn type_choices(&self, id: IntegrationId) -> Result<HashMap<(String, String), MappingChoice>> {
                    let rows: Vec<(String, String, Option<i64>, bool, bool)> = sqlx::query_as(
                        "SELECT provider_type, category, device_type_id, auto_sync, ignored FROM device_type_mappings WHERE integration_id = $1",
                    )
                    .bind(id.0)
                    .fetch_all(&self.pool)
                    .await?;
                    Ok(rows
                        .into_iter()
                        .map(|(t, c, device_type, auto_sync, ignored)| ((t, c), MappingChoice { device_type, auto_sync, ignored }))
                        .collect())
                }

                async fn set_type_mapping(&self, tenant: TenantId, id: IntegrationId, mapping: i64, choice: MappingChoice, now: DateTime<Utc>) -> Result<TypeMapping> {
                    let MappingChoice { device_type, auto_sync, ignored } = choice;
                    if let Some(t) = device_type {
                        let found: Option<(i64,)> = sqlx::query_as("SELECT id FROM device_types WHERE tenant_id = $1 AND id = $2")
                            .bind(tenant.0)
                            .bind(t)
                            .fetch_optional(&self.pool)
                            .await?;
                        if found.is_none() {
                            return Err(StoreError::NotFound);
                        }
                    }
                    let auto_sync = auto_sync && device_type.is_some() && !ignored;
                    let done = sqlx::query(
                        "UPDATE device_type_mappings SET device_type_id = $4, auto_sync = $5, ignored = $6, updated_at = $7 \
                         WHERE tenant_id = $1 AND integration_id = $2 AND id = $3",
                    )
                    .bind(tenant.0)
                    .bind(id.0)
                    .bind(mapping)
                    .bind(device_type)
                    .bind(auto_sync)
                    .bind(ignored)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound);
                    }
                    mapping_by_id(&self.pool, tenant, id, mapping).await
                }

                async fn enable_all_auto_sync(&self, tenant: TenantId, id: IntegrationId, now: DateTime<Utc>) -> Result<u64> {
                    Ok(sqlx::query(
                        "UPDATE device_type_mappings SET auto_sync = TRUE, updated_at = $3 \
                         WHERE tenant_id = $1 AND integration_id = $2 AND device_type_id IS NOT NULL AND ignored = FALSE AND auto_sync = FALSE",
                    )
                    .bind(tenant.0)
                    .bind(id.0)
                    .bind(now)
                    .execute(&self.pool)
                    .await?
                    .rows_affected())
                }

                async fn device_types(&self, tenant: TenantId) -> Result<Vec<DeviceType>> {
                    Ok(sqlx::query_as("SELECT id, name FROM device_types WHERE tenant_id = $1 ORDER BY LOWER(name)")
                        .bind(tenant.0)
                        .fetch_all(&self.pool)
                        .await?)
                }

                async fn create_device_type(&self, tenant: TenantId, name: &str, now: DateTime<Utc>) -> Result<DeviceType> {
                    sqlx::query("INSERT INTO device_types (tenant_id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (tenant_id, name) DO NOTHING")
                        .bind(tenant.0)
                        .bind(name)
                        .bind(now)
                        .execute(&self.pool)
                        .await?;
                    Ok(sqlx::query_as("SELECT id, name FROM device_types WHERE tenant_id = $1 AND name = $2")
                        .bind(tenant.0)
                        .bind(name)
                        .fetch_one(&self.pool)
                        .await?)
                }

                async fn staged_devices(&self, tenant: TenantId, id: IntegrationId, q: &DeviceQuery) -> Result<Paged<DeviceRow>> {
                    let filter = if q.only_unimported {
                        format!("({STAGED})")
                    } else {
                        format!("(({STAGED}) OR d.import_state = 'imported')")
                    };
                    paged_devices(&self.pool, tenant, filter, Some(id.0), q).await
                }

                async fn import_devices(&self, tenant: TenantId, id: IntegrationId, scope: &ImportScope, now: DateTime<Utc>) -> Result<u64> {
                    let (extra, ids): (String, Vec<i64>) = match scope {
                        ImportScope::Devices(ids) if ids.is_empty() => return Ok(0),
                        ImportScope::Devices(ids) => (format!("d.id IN ({})", crate::sync_shared::placeholders(4, ids.len())), ids.clone()),
                        ImportScope::Type(m) => ("m.id = $4".to_string(), vec![*m]),
                        ImportScope::AllMapped => ("TRUE".to_string(), vec![]),
                    };
                    let q = format!(
                        "UPDATE devices SET import_state = 'imported', imported_at = $3, updated_at = $3, \
                           device_type_id = (SELECT m2.device_type_id FROM device_type_mappings m2 WHERE m2.integration_id = devices.integration_id \
                             AND m2.provider_type = devices.provider_type AND m2.category = devices.category) \
                         WHERE id IN (SELECT d.id FROM {DEVICE_FROM} WHERE d.tenant_id = $1 AND d.integration_id = $2 AND {STAGED} \
                           AND m.device_type_id IS NOT NULL AND {extra})"
                    );
                    let mut query = sqlx::query(sql(q)).bind(tenant.0).bind(id.0).bind(now);
                    for i in ids {
                        query = query.bind(i);
                    }
                    Ok(query.execute(&self.pool).await?.rows_affected())
                }

                async fn ignore_devices(&self, tenant: TenantId, id: IntegrationId, devices: &[i64], now: DateTime<Utc>) -> Result<u64> {
                    if devices.is_empty() {
                        return Ok(0);
                    }
                    let q = format!(
                        "UPDATE devices SET import_state = 'ignored', updated_at = $3 WHERE tenant_id = $1 AND integration_id = $2 \
                         AND import_state = 'staged' AND id IN ({})",
                        crate::sync_shared::placeholders(4, devices.len())
                    );
                    let mut query = sqlx::query(sql(q)).bind(tenant.0).bind(id.0).bind(now);
                    for d in devices {
                        query = query.bind(d);
                    }
                    Ok(query.execute(&self.pool).await?.rows_affected())
                }

                async fn devices(&self, tenant: TenantId, q: &DeviceQuery) -> Result<Paged<DeviceRow>> {
                    let filter = "(d.import_state = 'imported' AND c.id IS NOT NULL)".to_string();
                    paged_devices(&self.pool, tenant, filter, None, q).await
                }

                async fn device(&self, tenant: TenantId, device: i64) -> Result<DeviceDetail> {
                    let row: Option<DeviceRow> = sqlx::query_as(sql(format!(
                        "SELECT {DEVICE_COLS} FROM {DEVICE_FROM} WHERE d.tenant_id = $1 AND d.id = $2"
                    )))
                    .bind(tenant.0)
                    .bind(device)
                    .fetch_optional(&self.pool)
                    .await?;
                    let device = row.ok_or(StoreError::NotFound)?;
                    let (details, refresh, refreshed_at, refresh_error): (String, Option<String>, Option<DateTime<Utc>>, Option<String>) =
                        sqlx::query_as("SELECT details, refresh, refreshed_at, refresh_error FROM devices WHERE tenant_id = $1 AND id = $2")
                            .bind(tenant.0)
                            .bind(device.id)
                            .fetch_one(&self.pool)
                            .await?;
                    let details = serde_json::from_str(&details).map_err(|e| StoreError::Corrupt(format!("device details: {e}")))?;
                    // A refresh stored by another version that cannot be read is shown as none.
                    let refresh = refresh.and_then(|r| serde_json::from_str(&r).ok());
                    let alerts: Vec<AlertRow> = sqlx::query_as(sql(format!(
                        "SELECT {ALERT_COLS} FROM {ALERT_FROM} WHERE a.tenant_id = $1 AND a.integration_id = $2 AND a.device_external_id = $3 \
                         ORDER BY a.resolved, a.priority_rank, a.raised_at DESC LIMIT 100"
                    )))
                    .bind(tenant.0)
                    .bind(device.integration_id)
                    .bind(&device.external_id)
                    .fetch_all(&self.pool)
                    .await?;
                    Ok(DeviceDetail { device, details, alerts, refresh, refreshed_at, refresh_error })
                }

                async fn alerts_to_explain(&self, id: IntegrationId, since: DateTime<Utc>, limit: i64) -> Result<Vec<String>> {
                    let rows: Vec<(String,)> = sqlx::query_as(
                        "SELECT external_id FROM alerts WHERE integration_id = $1 AND resolved = TRUE AND resolved_by = $2 AND resolved_at >= $3 \
                         ORDER BY resolved_at DESC, id DESC LIMIT $4",
                    )
                    .bind(id.0)
                    .bind(NO_LONGER_OPEN)
                    .bind(since)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                    Ok(rows.into_iter().map(|(e,)| e).collect())
                }

                async fn explain_alert(
                    &self,
                    id: IntegrationId,
                    external_id: &str,
                    resolved_by: &str,
                    resolved_at: Option<DateTime<Utc>>,
                    now: DateTime<Utc>,
                ) -> Result<()> {
                    sqlx::query(
                        "UPDATE alerts SET resolved_by = $3, resolved_at = COALESCE($4, resolved_at), updated_at = $5 \
                         WHERE integration_id = $1 AND external_id = $2 AND resolved = TRUE AND resolved_by = $6",
                    )
                    .bind(id.0)
                    .bind(external_id)
                    .bind(resolved_by)
                    .bind(resolved_at)
                    .bind(now)
                    .bind(NO_LONGER_OPEN)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                async fn record_device_refresh(
                    &self,
                    tenant: TenantId,
                    device: i64,
                    outcome: std::result::Result<&mspbridge_domain::rmm::DeviceRefresh, &str>,
                    now: DateTime<Utc>,
                ) -> Result<()> {
                    let done = match outcome {
                        Ok(r) => {
                            let json = serde_json::to_string(r).map_err(|e| StoreError::Corrupt(format!("device refresh: {e}")))?;
                            sqlx::query("UPDATE devices SET refresh = $3, refreshed_at = $4, refresh_error = NULL WHERE tenant_id = $1 AND id = $2")
                                .bind(tenant.0)
                                .bind(device)
                                .bind(json)
                                .bind(now)
                                .execute(&self.pool)
                                .await?
                        }
                        Err(why) => {
                            sqlx::query("UPDATE devices SET refresh_error = $3 WHERE tenant_id = $1 AND id = $2")
                                .bind(tenant.0)
                                .bind(device)
                                .bind(why)
                                .execute(&self.pool)
                                .await?
                        }
                    };
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound);
                    }
                    Ok(())
                }

                async fn alerts(&self, tenant: TenantId, q: &AlertQuery) -> Result<Paged<AlertRow>> {
                    let filter = "a.tenant_id = $1 AND ($2 IS NULL OR c.id = $2) AND ($3 OR a.resolved = FALSE)";
                    let company = q.company.map(|c| c.0);
                    let (total,): (i64,) = sqlx::query_as(sql(format!("SELECT COUNT(*) FROM {ALERT_FROM} WHERE {filter}")))
                        .bind(tenant.0)
                        .bind(company)
                        .bind(q.include_resolved)
                        .fetch_one(&self.pool)
                        .await?;
                    let rows = sqlx::query_as(sql(format!(
                        "SELECT {ALERT_COLS} FROM {ALERT_FROM} WHERE {filter} ORDER BY a.resolved, a.priority_rank, a.raised_at DESC, a.id LIMIT $4 OFFSET $5"
                    )))
                    .bind(tenant.0)
                    .bind(company)
                    .bind(q.include_resolved)
                    .bind(q.limit.clamp(1, 500))
                    .bind(q.offset.max(0))
                    .fetch_all(&self.pool)
                    .await?;
                    Ok(Paged { total, rows })
                }

                async fn rmm_counts(&self, tenant: TenantId, id: IntegrationId) -> Result<RmmCounts> {
                    let (devices, imported, staged, unmapped_devices): (i64, i64, i64, i64) = sqlx::query_as(sql(format!(
                        "SELECT COUNT(*), \
                           COALESCE(SUM(CASE WHEN d.import_state = 'imported' THEN 1 ELSE 0 END), 0), \
                           COALESCE(SUM(CASE WHEN {STAGED} THEN 1 ELSE 0 END), 0), \
                           COALESCE(SUM(CASE WHEN c.id IS NULL AND d.removed_upstream_at IS NULL THEN 1 ELSE 0 END), 0) \
                         FROM {DEVICE_FROM} WHERE d.tenant_id = $1 AND d.integration_id = $2 AND d.removed_upstream_at IS NULL"
                    )))
                    .bind(tenant.0)
                    .bind(id.0)
                    .fetch_one(&self.pool)
                    .await?;
                    let (unmapped_sites,): (i64,) = sqlx::query_as(
                        "SELECT COUNT(*) FROM integration_companies ic WHERE ic.tenant_id = $1 AND ic.integration_id = $2 AND ic.active = TRUE \
                         AND NOT EXISTS (SELECT 1 FROM external_links l WHERE l.integration_id = ic.integration_id AND l.record_kind = 'company' \
                           AND l.external_id = ic.external_id AND l.gone_upstream_at IS NULL)",
                    )
                    .bind(tenant.0)
                    .bind(id.0)
                    .fetch_one(&self.pool)
                    .await?;
                    let (open_alerts,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM alerts WHERE tenant_id = $1 AND integration_id = $2 AND resolved = FALSE")
                        .bind(tenant.0)
                        .bind(id.0)
                        .fetch_one(&self.pool)
                        .await?;
                    Ok(RmmCounts { devices, imported, staged, unmapped_devices, unmapped_sites, open_alerts })
                }

                async fn site_device_counts(&self, tenant: TenantId, id: IntegrationId) -> Result<HashMap<String, i64>> {
                    let rows: Vec<(Option<String>, i64)> = sqlx::query_as(
                        "SELECT site_external_id, COUNT(*) FROM devices WHERE tenant_id = $1 AND integration_id = $2 AND removed_upstream_at IS NULL GROUP BY site_external_id",
                    )
                    .bind(tenant.0)
                    .bind(id.0)
                    .fetch_all(&self.pool)
                    .await?;
                    Ok(rows.into_iter().filter_map(|(s, n)| s.map(|s| (s, n))).collect())
                }

                async fn request_alert_resolve(&self, tenant: TenantId, alert: i64, now: DateTime<Utc>) -> Result<AlertRow> {
                    sqlx::query(
                        "UPDATE alerts SET resolve_requested_at = COALESCE(resolve_requested_at, $3), resolve_error = NULL, resolve_attempts = 0, \
                           resolve_next_at = $3, updated_at = $3 WHERE tenant_id = $1 AND id = $2 AND resolved = FALSE",
                    )
                    .bind(tenant.0)
                    .bind(alert)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                    let row: Option<AlertRow> = sqlx::query_as(sql(format!("SELECT {ALERT_COLS} FROM {ALERT_FROM} WHERE a.tenant_id = $1 AND a.id = $2")))
                        .bind(tenant.0)
                        .bind(alert)
                        .fetch_optional(&self.pool)
                        .await?;
                    row.ok_or(StoreError::NotFound)
                }

                async fn claim_alert_resolves(&self, now: DateTime<Utc>, lease: DateTime<Utc>, limit: i64) -> Result<Vec<DueResolve>> {
                    let mut tx = self.begin_write().await?;
                    let due: Vec<DueResolve> = sqlx::query_as(
                        "SELECT id AS alert_id, tenant_id, integration_id, external_id, resolve_attempts AS attempts FROM alerts \
                         WHERE resolve_next_at IS NOT NULL AND resolve_next_at <= $1 AND resolved = FALSE ORDER BY resolve_next_at LIMIT $2",
                    )
                    .bind(now)
                    .bind(limit)
                    .fetch_all(&mut *tx)
                    .await?;
                    for d in &due {
                        sqlx::query("UPDATE alerts SET resolve_next_at = $2, resolve_attempts = resolve_attempts + 1 WHERE id = $1")
                            .bind(d.alert_id)
                            .bind(lease)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok(due)
                }

                async fn finish_alert_resolve(&self, alert: i64, outcome: &ResolveOutcome, now: DateTime<Utc>) -> Result<()> {
                    let q = match outcome {
                        ResolveOutcome::Done => sqlx::query(
                            "UPDATE alerts SET resolved = TRUE, resolved_at = $2, resolved_by = 'the portal', resolve_next_at = NULL, resolve_error = NULL, updated_at = $2 WHERE id = $1",
                        )
                        .bind(alert)
                        .bind(now),
                        ResolveOutcome::Retry(at, why) => sqlx::query(
                            "UPDATE alerts SET resolve_next_at = $3, resolve_error = $4, updated_at = $2 WHERE id = $1",
                        )
                        .bind(alert)
                        .bind(now)
                        .bind(*at)
                        .bind(why),
                        ResolveOutcome::Refused(why) => sqlx::query(
                            "UPDATE alerts SET resolve_next_at = NULL, resolve_requested_at = NULL, resolve_error = $3, updated_at = $2 WHERE id = $1",
                        )
                        .bind(alert)
                        .bind(now)
                        .bind(why),
                    };
                    q.execute(&self.pool).await?;
                    Ok(())
                }
            }
        }
    };
}

pub(crate) use impl_rmm_store;
