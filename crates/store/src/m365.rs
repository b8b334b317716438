//! Microsoft 365 (spec 2.18): tenant connections per company, consent requests, and what
//! each tenant's sync keeps (domains, users, groups, licences, Secure Score snapshots and
//! control profiles). SQL shared by both backends; every write of synced data compares a
//! content hash, so an unchanged re-sync writes nothing (the counts say how many rows
//! changed).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mspbridge_domain::m365::{
    ControlProfile, ScoreSnapshot, TenantGroup, TenantLicence, TenantOrg, TenantStatus, TenantUser,
};
use mspbridge_domain::{CompanyId, IntegrationId, TenantId};
use serde::Serialize;

use crate::Result;

/// One consented tenant of one company.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Connection {
    pub id: i64,
    pub integration_id: i64,
    pub company_id: i64,
    pub company_name: String,
    pub ms_tenant_id: String,
    pub display_name: Option<String>,
    pub default_domain: Option<String>,
    /// `connected`, `not_consented`, `secret_expired`, … (`TenantStatus`).
    pub status: String,
    pub status_detail: Option<String>,
    pub connected_at: DateTime<Utc>,
    pub connected_by: Option<String>,
    pub last_synced_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub users_delta_link: Option<String>,
    pub scores_synced_at: Option<DateTime<Utc>>,
    pub profiles_synced_at: Option<DateTime<Utc>>,
}

impl Connection {
    pub fn tenant_status(&self) -> TenantStatus {
        TenantStatus::parse(&self.status)
    }
}

/// A company as Company M365 Setup lists it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SetupCompany {
    pub company_id: i64,
    pub name: String,
    pub not_applicable: bool,
    /// An unused, unexpired consent link exists (its expiry).
    pub link_expires_at: Option<DateTime<Utc>>,
}

/// A consent request in flight.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Consent {
    pub id: i64,
    pub tenant_id: i64,
    pub integration_id: i64,
    pub company_id: i64,
    pub connection_id: Option<i64>,
    /// `session` (started in the portal) or `link` (for the client's own admin).
    pub kind: String,
    /// The tenant this request was for, when it was for one (Reconnect, a tenant found
    /// through GDAP): consent given in another tenant is refused.
    pub expected_ms_tenant: Option<String>,
    pub nonce: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct NewConsent<'a> {
    pub integration: IntegrationId,
    pub company: CompanyId,
    pub connection: Option<i64>,
    pub kind: &'a str,
    pub expected_tenant: Option<&'a str>,
    pub nonce: &'a str,
    pub created_by: &'a str,
    pub expires_at: DateTime<Utc>,
}

/// Why a consent `state` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsentRefusal {
    #[error("this consent request is unknown")]
    Unknown,
    #[error("this consent request was already used")]
    Used,
    #[error("this consent request expired")]
    Expired,
    #[error("a newer consent link replaced this one")]
    Revoked,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DomainRow {
    pub connection_id: i64,
    pub name: String,
    pub is_default: bool,
    pub is_initial: bool,
    pub is_verified: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserRow {
    pub id: i64,
    pub connection_id: i64,
    pub external_id: String,
    pub display_name: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub upn: Option<String>,
    pub email: Option<String>,
    pub enabled: bool,
    pub job_title: Option<String>,
    pub user_type: Option<String>,
    /// JSON array of the licences' `skuId`s.
    #[serde(skip)]
    pub sku_ids: String,
    /// The portal user this Microsoft 365 user is (imported, or matched by e-mail).
    pub company_user_id: Option<i64>,
    pub removed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LicenceRow {
    pub connection_id: i64,
    pub sku_id: String,
    pub part_number: String,
    pub name: String,
    pub status: String,
    pub consumed: i64,
    pub enabled: i64,
    pub suspended: i64,
    pub warning: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupRow {
    pub connection_id: i64,
    pub external_id: String,
    pub name: String,
    pub mail: Option<String>,
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScoreRow {
    pub connection_id: i64,
    pub day: String,
    pub created: DateTime<Utc>,
    pub current_score: f64,
    pub max_score: f64,
    pub active_users: Option<i64>,
    pub licensed_users: Option<i64>,
    /// JSON `[[basis, average], …]`.
    pub averages: String,
    /// JSON of the day's control scores.
    #[serde(skip)]
    pub controls: String,
    pub partial: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProfileRow {
    pub connection_id: i64,
    pub external_id: String,
    pub title: String,
    pub category: Option<String>,
    pub service: Option<String>,
    pub max_score: Option<f64>,
    pub rank: Option<i64>,
    pub tier: Option<String>,
    pub remediation: Option<String>,
    pub action_url: Option<String>,
    pub deprecated: bool,
    pub state: Option<String>,
}

/// One company's latest Secure Score, for the overview across companies.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScoreOverviewRow {
    pub company_id: i64,
    pub company_name: String,
    pub connection_id: i64,
    pub ms_tenant_id: String,
    pub display_name: Option<String>,
    pub day: String,
    pub current_score: f64,
    pub max_score: f64,
    /// The score 30 or more days before the latest one, when kept.
    pub previous_score: Option<f64>,
}

/// Users read in full (`full`: those not read are marked removed) or as changes since
/// the last delta link, and where the next read starts.
#[derive(Debug, Clone, Copy)]
pub struct UserChanges<'a> {
    pub users: &'a [TenantUser],
    pub removed: &'a [String],
    pub full: bool,
    pub delta_link: Option<&'a str>,
}

/// What one save changed.
pub type Written = u64;

#[async_trait]
pub trait M365Store: Send + Sync {
    /// Every active company with its Microsoft 365 setting and open consent link.
    async fn m365_setup_companies(
        &self,
        tenant: TenantId,
        integration: IntegrationId,
    ) -> Result<Vec<SetupCompany>>;
    /// The integration's tenant connections (disconnected ones included), by company name.
    async fn m365_connections(
        &self,
        tenant: TenantId,
        integration: IntegrationId,
    ) -> Result<Vec<Connection>>;
    async fn m365_connection(&self, tenant: TenantId, id: i64) -> Result<Connection>;
    async fn m365_company_connections(
        &self,
        tenant: TenantId,
        company: CompanyId,
    ) -> Result<Vec<Connection>>;
    async fn m365_set_not_applicable(
        &self,
        tenant: TenantId,
        integration: IntegrationId,
        company: CompanyId,
        value: bool,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// Records a consent request; a new link revokes the company's previous unused links.
    async fn m365_create_consent(
        &self,
        tenant: TenantId,
        c: NewConsent<'_>,
        now: DateTime<Utc>,
    ) -> Result<Consent>;
    /// The consent request a `state` names, marked used: once only, before it expires.
    async fn m365_use_consent(
        &self,
        tenant: TenantId,
        nonce: &str,
        now: DateTime<Utc>,
    ) -> Result<std::result::Result<Consent, ConsentRefusal>>;
    /// A consent request by nonce, unchanged (a link opened before consent).
    async fn m365_consent(&self, tenant: TenantId, nonce: &str) -> Result<Option<Consent>>;
    /// The tenant connected to the company (a new connection, or the existing one of that
    /// tenant reconnected). `Conflict` when the tenant is connected to another company.
    async fn m365_connect(
        &self,
        tenant: TenantId,
        integration: IntegrationId,
        company: CompanyId,
        ms_tenant: &str,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<Connection>;
    async fn m365_disconnect(
        &self,
        tenant: TenantId,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<Connection>;
    async fn m365_set_status(
        &self,
        tenant: TenantId,
        id: i64,
        status: TenantStatus,
        detail: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// Back to `connected` every tenant whose status came from the app's secret (the
    /// credentials changed).
    async fn m365_clear_secret_statuses(
        &self,
        tenant: TenantId,
        integration: IntegrationId,
        now: DateTime<Utc>,
    ) -> Result<u64>;
    async fn m365_save_org(
        &self,
        tenant: TenantId,
        connection: i64,
        org: &TenantOrg,
        now: DateTime<Utc>,
    ) -> Result<Written>;
    /// Users read in full (`full`: those not read are marked removed) or as changes.
    async fn m365_save_users(
        &self,
        tenant: TenantId,
        connection: i64,
        changes: UserChanges<'_>,
        now: DateTime<Utc>,
    ) -> Result<Written>;
    async fn m365_save_groups(
        &self,
        tenant: TenantId,
        connection: i64,
        groups: &[TenantGroup],
        complete: bool,
        now: DateTime<Utc>,
    ) -> Result<Written>;
    async fn m365_save_licences(
        &self,
        tenant: TenantId,
        connection: i64,
        licences: &[TenantLicence],
        complete: bool,
        now: DateTime<Utc>,
    ) -> Result<Written>;
    /// Snapshots by day; a `partial` answer only fills days not kept yet.
    async fn m365_save_scores(
        &self,
        tenant: TenantId,
        connection: i64,
        snapshots: &[ScoreSnapshot],
        partial: bool,
        now: DateTime<Utc>,
    ) -> Result<Written>;
    async fn m365_save_profiles(
        &self,
        tenant: TenantId,
        connection: i64,
        profiles: &[ControlProfile],
        now: DateTime<Utc>,
    ) -> Result<Written>;
    /// Stamps what the run read: `last_synced_at` always, scores and profiles when read.
    async fn m365_mark_synced(
        &self,
        tenant: TenantId,
        connection: i64,
        scores: bool,
        profiles: bool,
        now: DateTime<Utc>,
    ) -> Result<()>;
    async fn m365_domains(&self, tenant: TenantId, company: CompanyId) -> Result<Vec<DomainRow>>;
    async fn m365_users(&self, tenant: TenantId, company: CompanyId) -> Result<Vec<UserRow>>;
    async fn m365_groups(&self, tenant: TenantId, company: CompanyId) -> Result<Vec<GroupRow>>;
    async fn m365_licences(&self, tenant: TenantId, company: CompanyId) -> Result<Vec<LicenceRow>>;
    /// A connection's snapshots, newest first.
    async fn m365_scores(
        &self,
        tenant: TenantId,
        connection: i64,
        limit: i64,
    ) -> Result<Vec<ScoreRow>>;
    async fn m365_profiles(&self, tenant: TenantId, connection: i64) -> Result<Vec<ProfileRow>>;
    /// Each connected tenant's latest complete snapshot with the one 30 days before.
    async fn m365_score_overview(&self, tenant: TenantId) -> Result<Vec<ScoreOverviewRow>>;
    /// Links Microsoft 365 users to portal users of their company with the same e-mail
    /// (users imported from a PSA are matched, never duplicated); how many were linked.
    async fn m365_match_users(&self, tenant: TenantId, company: CompanyId) -> Result<u64>;
    /// Verified domains of every connected tenant, by company (they feed company matching).
    async fn m365_company_domains(&self, tenant: TenantId) -> Result<Vec<(i64, String)>>;
    /// Sets the portal user a Microsoft 365 user is; `imported`: created from it (then its
    /// removal from the tenant disables the portal user).
    async fn m365_link_user(
        &self,
        tenant: TenantId,
        user: i64,
        company_user: i64,
        imported: bool,
    ) -> Result<()>;
}

macro_rules! impl_m365_store {
    ($store:ident) => {
        pub(super) mod m365_impl {
            use async_trait::async_trait;
            use chrono::{DateTime, Utc};
            use mspbridge_domain::m365::{ControlProfile, ScoreSnapshot, TenantGroup, TenantLicence, TenantOrg, TenantStatus};
            use mspbridge_domain::sync::content_hash;
            use mspbridge_domain::{CompanyId, IntegrationId, TenantId};

            use crate::m365::*;
            use crate::{Result, StoreError};

            const CONNECTION: &str = "SELECT m.id, m.integration_id, m.company_id, c.name AS company_name, m.ms_tenant_id, m.display_name, m.default_domain, \
                m.status, m.status_detail, m.connected_at, m.connected_by, m.last_synced_at, m.users_delta_link, m.scores_synced_at, m.profiles_synced_at \
                FROM m365_connections m JOIN companies c ON c.id = m.company_id";

            const CONSENT: &str = "SELECT id, tenant_id, integration_id, company_id, connection_id, kind, expected_ms_tenant, nonce, created_by, created_at, expires_at, used_at, revoked_at FROM m365_consents";

            /// Deletes the connection's rows of `table` whose `key` is not in `read` (a
            /// complete read of a list the vendor replaces whole: groups, licences).
            async fn delete_missing(
                tx: &mut sqlx::Transaction<'static, super::Db>,
                table: &'static str,
                key: &'static str,
                tenant: TenantId,
                connection: i64,
                read: &[&str],
            ) -> Result<u64> {
                let kept: Vec<(String,)> = sqlx::query_as(crate::sync_shared::sql(format!(
                    "SELECT {key} FROM {table} WHERE tenant_id = $1 AND connection_id = $2"
                )))
                .bind(tenant.0)
                .bind(connection)
                .fetch_all(&mut **tx)
                .await?;
                let mut deleted = 0;
                for (id,) in kept.iter().filter(|(id,)| !read.contains(&id.as_str())) {
                    deleted += sqlx::query(crate::sync_shared::sql(format!(
                        "DELETE FROM {table} WHERE tenant_id = $1 AND connection_id = $2 AND {key} = $3"
                    )))
                    .bind(tenant.0)
                    .bind(connection)
                    .bind(id)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected();
                }
                Ok(deleted)
            }

            #[async_trait]
            impl M365Store for super::$store {
                async fn m365_setup_companies(&self, tenant: TenantId, integration: IntegrationId) -> Result<Vec<SetupCompany>> {
                    Ok(sqlx::query_as(
                        "SELECT c.id AS company_id, c.name, COALESCE(s.not_applicable, FALSE) AS not_applicable, \
                           (SELECT MAX(k.expires_at) FROM m365_consents k WHERE k.integration_id = $2 AND k.company_id = c.id AND k.kind = 'link' \
                              AND k.used_at IS NULL AND k.revoked_at IS NULL) AS link_expires_at \
                         FROM companies c LEFT JOIN m365_company_settings s ON s.company_id = c.id AND s.integration_id = $2 \
                         WHERE c.tenant_id = $1 AND c.active = TRUE ORDER BY LOWER(c.name), c.id",
                    )
                    .bind(tenant.0)
                    .bind(integration.0)
                    .fetch_all(&self.pool)
                    .await?)
                }

                async fn m365_connections(&self, tenant: TenantId, integration: IntegrationId) -> Result<Vec<Connection>> {
                    Ok(sqlx::query_as(crate::sync_shared::sql(format!(
                        "{CONNECTION} WHERE m.tenant_id = $1 AND m.integration_id = $2 ORDER BY LOWER(c.name), m.id"
                    )))
                    .bind(tenant.0)
                    .bind(integration.0)
                    .fetch_all(&self.pool)
                    .await?)
                }

                async fn m365_connection(&self, tenant: TenantId, id: i64) -> Result<Connection> {
                    sqlx::query_as(crate::sync_shared::sql(format!("{CONNECTION} WHERE m.tenant_id = $1 AND m.id = $2")))
                        .bind(tenant.0)
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?
                        .ok_or(StoreError::NotFound)
                }

                async fn m365_company_connections(&self, tenant: TenantId, company: CompanyId) -> Result<Vec<Connection>> {
                    Ok(sqlx::query_as(crate::sync_shared::sql(format!(
                        "{CONNECTION} WHERE m.tenant_id = $1 AND m.company_id = $2 ORDER BY m.id"
                    )))
                    .bind(tenant.0)
                    .bind(company.0)
                    .fetch_all(&self.pool)
                    .await?)
                }

                async fn m365_set_not_applicable(&self, tenant: TenantId, integration: IntegrationId, company: CompanyId, value: bool, now: DateTime<Utc>) -> Result<()> {
                    let done = sqlx::query(
                        "INSERT INTO m365_company_settings (tenant_id, integration_id, company_id, not_applicable, updated_at) \
                         SELECT $1, $2, c.id, $4, $5 FROM companies c WHERE c.tenant_id = $1 AND c.id = $3 \
                         ON CONFLICT (integration_id, company_id) DO UPDATE SET not_applicable = excluded.not_applicable, updated_at = excluded.updated_at",
                    )
                    .bind(tenant.0)
                    .bind(integration.0)
                    .bind(company.0)
                    .bind(value)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound);
                    }
                    Ok(())
                }

                async fn m365_create_consent(&self, tenant: TenantId, c: NewConsent<'_>, now: DateTime<Utc>) -> Result<Consent> {
                    let mut tx = self.begin_write().await?;
                    let (owned,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM companies WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant.0)
                        .bind(c.company.0)
                        .fetch_one(&mut *tx)
                        .await?;
                    if owned == 0 {
                        return Err(StoreError::NotFound);
                    }
                    if c.kind == "link" {
                        sqlx::query(
                            "UPDATE m365_consents SET revoked_at = $4 WHERE tenant_id = $1 AND integration_id = $2 AND company_id = $3 \
                             AND kind = 'link' AND used_at IS NULL AND revoked_at IS NULL",
                        )
                        .bind(tenant.0)
                        .bind(c.integration.0)
                        .bind(c.company.0)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    }
                    sqlx::query(
                        "INSERT INTO m365_consents (tenant_id, integration_id, company_id, connection_id, kind, nonce, created_by, created_at, expires_at, expected_ms_tenant) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    )
                    .bind(tenant.0)
                    .bind(c.integration.0)
                    .bind(c.company.0)
                    .bind(c.connection)
                    .bind(c.kind)
                    .bind(c.nonce)
                    .bind(c.created_by)
                    .bind(now)
                    .bind(c.expires_at)
                    .bind(c.expected_tenant.map(str::to_ascii_lowercase))
                    .execute(&mut *tx)
                    .await?;
                    let row: Consent = sqlx::query_as(crate::sync_shared::sql(format!("{CONSENT} WHERE tenant_id = $1 AND nonce = $2")))
                        .bind(tenant.0)
                        .bind(c.nonce)
                        .fetch_one(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(row)
                }

                async fn m365_consent(&self, tenant: TenantId, nonce: &str) -> Result<Option<Consent>> {
                    Ok(sqlx::query_as(crate::sync_shared::sql(format!("{CONSENT} WHERE tenant_id = $1 AND nonce = $2")))
                        .bind(tenant.0)
                        .bind(nonce)
                        .fetch_optional(&self.pool)
                        .await?)
                }

                async fn m365_use_consent(&self, tenant: TenantId, nonce: &str, now: DateTime<Utc>) -> Result<std::result::Result<Consent, ConsentRefusal>> {
                    let mut tx = self.begin_write().await?;
                    let done = sqlx::query(
                        "UPDATE m365_consents SET used_at = $3 WHERE tenant_id = $1 AND nonce = $2 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $3",
                    )
                    .bind(tenant.0)
                    .bind(nonce)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    let row: Option<Consent> = sqlx::query_as(crate::sync_shared::sql(format!("{CONSENT} WHERE tenant_id = $1 AND nonce = $2")))
                        .bind(tenant.0)
                        .bind(nonce)
                        .fetch_optional(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(match row {
                        None => Err(ConsentRefusal::Unknown),
                        Some(r) if done.rows_affected() == 1 => Ok(r),
                        Some(r) if r.revoked_at.is_some() => Err(ConsentRefusal::Revoked),
                        Some(r) if r.used_at.is_some() => Err(ConsentRefusal::Used),
                        Some(_) => Err(ConsentRefusal::Expired),
                    })
                }

                async fn m365_connect(&self, tenant: TenantId, integration: IntegrationId, company: CompanyId, ms_tenant: &str, by: &str, now: DateTime<Utc>) -> Result<Connection> {
                    let ms_tenant = ms_tenant.to_ascii_lowercase();
                    let mut tx = self.begin_write().await?;
                    let existing: Option<(i64, i64, String, String)> = sqlx::query_as(
                        "SELECT m.id, m.company_id, m.status, c.name FROM m365_connections m JOIN companies c ON c.id = m.company_id \
                         WHERE m.tenant_id = $1 AND m.integration_id = $2 AND m.ms_tenant_id = $3",
                    )
                    .bind(tenant.0)
                    .bind(integration.0)
                    .bind(&ms_tenant)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let id = match existing {
                        Some((_, other, status, name)) if other != company.0 && status != TenantStatus::Disconnected.as_str() => {
                            return Err(StoreError::Conflict(format!(
                                "this Microsoft 365 tenant is already connected to {name}; disconnect it there first"
                            )));
                        }
                        Some((id, previous, _, _)) => {
                            if previous != company.0 {
                                // Another company now: its users are not the previous company's portal users.
                                sqlx::query("UPDATE m365_users SET company_user_id = NULL WHERE tenant_id = $1 AND connection_id = $2")
                                    .bind(tenant.0)
                                    .bind(id)
                                    .execute(&mut *tx)
                                    .await?;
                            }
                            sqlx::query(
                                "UPDATE m365_connections SET company_id = $3, status = 'connected', status_detail = NULL, connected_at = $4, connected_by = $5, updated_at = $4 \
                                 WHERE tenant_id = $1 AND id = $2",
                            )
                            .bind(tenant.0)
                            .bind(id)
                            .bind(company.0)
                            .bind(now)
                            .bind(by)
                            .execute(&mut *tx)
                            .await?;
                            id
                        }
                        None => {
                            let (id,): (i64,) = sqlx::query_as(
                                "INSERT INTO m365_connections (tenant_id, integration_id, company_id, ms_tenant_id, status, connected_at, connected_by, updated_at) \
                                 SELECT $1, $2, c.id, $4, 'connected', $5, $6, $5 FROM companies c WHERE c.tenant_id = $1 AND c.id = $3 RETURNING id",
                            )
                            .bind(tenant.0)
                            .bind(integration.0)
                            .bind(company.0)
                            .bind(&ms_tenant)
                            .bind(now)
                            .bind(by)
                            .fetch_optional(&mut *tx)
                            .await?
                            .ok_or(StoreError::NotFound)?;
                            id
                        }
                    };
                    sqlx::query("UPDATE m365_company_settings SET not_applicable = FALSE, updated_at = $3 WHERE integration_id = $1 AND company_id = $2 AND tenant_id = $4")
                        .bind(integration.0)
                        .bind(company.0)
                        .bind(now)
                        .bind(tenant.0)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    self.m365_connection(tenant, id).await
                }

                async fn m365_disconnect(&self, tenant: TenantId, id: i64, now: DateTime<Utc>) -> Result<Connection> {
                    let done = sqlx::query(
                        "UPDATE m365_connections SET status = 'disconnected', status_detail = NULL, users_delta_link = NULL, updated_at = $3 WHERE tenant_id = $1 AND id = $2",
                    )
                    .bind(tenant.0)
                    .bind(id)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound);
                    }
                    self.m365_connection(tenant, id).await
                }

                async fn m365_set_status(&self, tenant: TenantId, id: i64, status: TenantStatus, detail: Option<&str>, now: DateTime<Utc>) -> Result<()> {
                    sqlx::query(
                        "UPDATE m365_connections SET status = $3, status_detail = $4, updated_at = $5 WHERE tenant_id = $1 AND id = $2 AND status <> 'disconnected'",
                    )
                    .bind(tenant.0)
                    .bind(id)
                    .bind(status.as_str())
                    .bind(detail)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                async fn m365_clear_secret_statuses(&self, tenant: TenantId, integration: IntegrationId, now: DateTime<Utc>) -> Result<u64> {
                    Ok(sqlx::query(
                        "UPDATE m365_connections SET status = 'connected', status_detail = NULL, updated_at = $3 \
                         WHERE tenant_id = $1 AND integration_id = $2 AND status IN ('secret_invalid', 'secret_expired')",
                    )
                    .bind(tenant.0)
                    .bind(integration.0)
                    .bind(now)
                    .execute(&self.pool)
                    .await?
                    .rows_affected())
                }

                async fn m365_save_org(&self, tenant: TenantId, connection: i64, org: &TenantOrg, now: DateTime<Utc>) -> Result<Written> {
                    let default = org.domains.iter().find(|d| d.is_default).map(|d| d.name.clone());
                    let mut tx = self.begin_write().await?;
                    let mut written = sqlx::query(
                        "UPDATE m365_connections SET display_name = $3, default_domain = $4, updated_at = $5 \
                         WHERE tenant_id = $1 AND id = $2 AND (display_name IS NULL OR display_name <> $3 OR COALESCE(default_domain, '') <> COALESCE($4, ''))",
                    )
                    .bind(tenant.0)
                    .bind(connection)
                    .bind(&org.display_name)
                    .bind(&default)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    let kept: Vec<(String, bool, bool, bool)> =
                        sqlx::query_as("SELECT name, is_default, is_initial, is_verified FROM m365_domains WHERE tenant_id = $1 AND connection_id = $2")
                            .bind(tenant.0)
                            .bind(connection)
                            .fetch_all(&mut *tx)
                            .await?;
                    for d in &org.domains {
                        let same = kept.iter().any(|k| k.0 == d.name && k.1 == d.is_default && k.2 == d.is_initial && k.3 == d.is_verified);
                        if same {
                            continue;
                        }
                        written += sqlx::query(
                            "INSERT INTO m365_domains (tenant_id, connection_id, name, is_default, is_initial, is_verified) VALUES ($1, $2, $3, $4, $5, $6) \
                             ON CONFLICT (connection_id, name) DO UPDATE SET is_default = excluded.is_default, is_initial = excluded.is_initial, is_verified = excluded.is_verified",
                        )
                        .bind(tenant.0)
                        .bind(connection)
                        .bind(&d.name)
                        .bind(d.is_default)
                        .bind(d.is_initial)
                        .bind(d.is_verified)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    }
                    for k in kept.iter().filter(|k| !org.domains.iter().any(|d| d.name == k.0)) {
                        written += sqlx::query("DELETE FROM m365_domains WHERE tenant_id = $1 AND connection_id = $2 AND name = $3")
                            .bind(tenant.0)
                            .bind(connection)
                            .bind(&k.0)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                    }
                    tx.commit().await?;
                    Ok(written)
                }

                async fn m365_save_users(&self, tenant: TenantId, connection: i64, changes: UserChanges<'_>, now: DateTime<Utc>) -> Result<Written> {
                    let UserChanges { users, removed, full, delta_link } = changes;
                    let mut tx = self.begin_write().await?;
                    let mut written = 0;
                    // Each user once (the last copy), 50 rows a statement.
                    let users = crate::sync_shared::last_of(users.iter().collect(), |u: &mspbridge_domain::m365::TenantUser| u.external_id.as_str());
                    for chunk in users.chunks(50) {
                        let q = format!(
                            "INSERT INTO m365_users (tenant_id, connection_id, external_id, display_name, first_name, last_name, upn, email, enabled, job_title, user_type, sku_ids, content_hash, removed_at, updated_at) \
                             VALUES {} \
                             ON CONFLICT (connection_id, external_id) DO UPDATE SET display_name = excluded.display_name, first_name = excluded.first_name, \
                               last_name = excluded.last_name, upn = excluded.upn, email = excluded.email, enabled = excluded.enabled, job_title = excluded.job_title, \
                               user_type = excluded.user_type, sku_ids = excluded.sku_ids, content_hash = excluded.content_hash, removed_at = NULL, updated_at = excluded.updated_at \
                             WHERE m365_users.content_hash <> excluded.content_hash OR m365_users.removed_at IS NOT NULL",
                            crate::sync_shared::value_rows(chunk.len(), 11, 4, &|p| format!("($1, $2, {}, NULL, $3)", p.join(", ")))
                        );
                        let mut query = sqlx::query(crate::sync_shared::sql(q)).bind(tenant.0).bind(connection).bind(now);
                        for u in chunk {
                            query = query
                                .bind(&u.external_id)
                                .bind(&u.display_name)
                                .bind(&u.first_name)
                                .bind(&u.last_name)
                                .bind(&u.user_principal_name)
                                .bind(&u.email)
                                .bind(u.enabled)
                                .bind(&u.job_title)
                                .bind(&u.user_type)
                                .bind(serde_json::to_string(&u.sku_ids).unwrap_or_else(|_| "[]".into()))
                                .bind(content_hash(*u));
                        }
                        written += query.execute(&mut *tx).await?.rows_affected();
                    }
                    for id in removed {
                        written += sqlx::query("UPDATE m365_users SET removed_at = $4, updated_at = $4 WHERE tenant_id = $1 AND connection_id = $2 AND external_id = $3 AND removed_at IS NULL")
                            .bind(tenant.0)
                            .bind(connection)
                            .bind(id)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                    }
                    if full {
                        let kept: Vec<(String,)> = sqlx::query_as("SELECT external_id FROM m365_users WHERE tenant_id = $1 AND connection_id = $2 AND removed_at IS NULL")
                            .bind(tenant.0)
                            .bind(connection)
                            .fetch_all(&mut *tx)
                            .await?;
                        let read: std::collections::HashSet<&str> = users.iter().map(|u| u.external_id.as_str()).collect();
                        for (id,) in kept.iter().filter(|(id,)| !read.contains(id.as_str())) {
                            written += sqlx::query("UPDATE m365_users SET removed_at = $4, updated_at = $4 WHERE tenant_id = $1 AND connection_id = $2 AND external_id = $3")
                                .bind(tenant.0)
                                .bind(connection)
                                .bind(id)
                                .bind(now)
                                .execute(&mut *tx)
                                .await?
                                .rows_affected();
                        }
                    }
                    // Deletions upstream become deactivations: a portal user created from a
                    // Microsoft 365 user that left the tenant is disabled (a matched one, a
                    // PSA's, follows its PSA).
                    written += sqlx::query(
                        "UPDATE company_users SET status = 'disabled', updated_at = $3 WHERE tenant_id = $1 AND status <> 'disabled' AND id IN \
                           (SELECT company_user_id FROM m365_users WHERE tenant_id = $1 AND connection_id = $2 AND imported = TRUE AND removed_at IS NOT NULL)",
                    )
                    .bind(tenant.0)
                    .bind(connection)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    sqlx::query("UPDATE m365_connections SET users_delta_link = $3 WHERE tenant_id = $1 AND id = $2 AND COALESCE(users_delta_link, '') <> COALESCE($3, '')")
                        .bind(tenant.0)
                        .bind(connection)
                        .bind(delta_link)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(written)
                }

                async fn m365_save_groups(&self, tenant: TenantId, connection: i64, groups: &[TenantGroup], complete: bool, now: DateTime<Utc>) -> Result<Written> {
                    let mut tx = self.begin_write().await?;
                    let mut written = 0;
                    for g in groups {
                        written += sqlx::query(
                            "INSERT INTO m365_groups (tenant_id, connection_id, external_id, name, mail, kind, content_hash, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                             ON CONFLICT (connection_id, external_id) DO UPDATE SET name = excluded.name, mail = excluded.mail, kind = excluded.kind, \
                               content_hash = excluded.content_hash, updated_at = excluded.updated_at WHERE m365_groups.content_hash <> excluded.content_hash",
                        )
                        .bind(tenant.0)
                        .bind(connection)
                        .bind(&g.external_id)
                        .bind(&g.name)
                        .bind(&g.mail)
                        .bind(&g.kind)
                        .bind(content_hash(g))
                        .bind(now)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    }
                    if complete {
                        let read: Vec<&str> = groups.iter().map(|g| g.external_id.as_str()).collect();
                        written += delete_missing(&mut tx, "m365_groups", "external_id", tenant, connection, &read).await?;
                    }
                    tx.commit().await?;
                    Ok(written)
                }

                async fn m365_save_licences(&self, tenant: TenantId, connection: i64, licences: &[TenantLicence], complete: bool, now: DateTime<Utc>) -> Result<Written> {
                    let mut tx = self.begin_write().await?;
                    let mut written = 0;
                    for l in licences {
                        written += sqlx::query(
                            "INSERT INTO m365_licences (tenant_id, connection_id, sku_id, part_number, name, status, consumed, enabled, suspended, warning, content_hash, updated_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                             ON CONFLICT (connection_id, sku_id) DO UPDATE SET part_number = excluded.part_number, name = excluded.name, status = excluded.status, \
                               consumed = excluded.consumed, enabled = excluded.enabled, suspended = excluded.suspended, warning = excluded.warning, \
                               content_hash = excluded.content_hash, updated_at = excluded.updated_at WHERE m365_licences.content_hash <> excluded.content_hash",
                        )
                        .bind(tenant.0)
                        .bind(connection)
                        .bind(&l.sku_id)
                        .bind(&l.part_number)
                        .bind(&l.name)
                        .bind(&l.status)
                        .bind(l.consumed)
                        .bind(l.enabled)
                        .bind(l.suspended)
                        .bind(l.warning)
                        .bind(content_hash(l))
                        .bind(now)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    }
                    if complete {
                        let read: Vec<&str> = licences.iter().map(|l| l.sku_id.as_str()).collect();
                        written += delete_missing(&mut tx, "m365_licences", "sku_id", tenant, connection, &read).await?;
                    }
                    tx.commit().await?;
                    Ok(written)
                }

                async fn m365_save_scores(&self, tenant: TenantId, connection: i64, snapshots: &[ScoreSnapshot], partial: bool, now: DateTime<Utc>) -> Result<Written> {
                    let mut tx = self.begin_write().await?;
                    let mut written = 0;
                    // A partial answer fills a day not kept yet and never replaces a kept one;
                    // a complete answer replaces what changed (a partial day included).
                    let conflict = if partial {
                        " ON CONFLICT (connection_id, day) DO NOTHING"
                    } else {
                        " ON CONFLICT (connection_id, day) DO UPDATE SET external_id = excluded.external_id, created = excluded.created, \
                           current_score = excluded.current_score, max_score = excluded.max_score, active_users = excluded.active_users, \
                           licensed_users = excluded.licensed_users, averages = excluded.averages, controls = excluded.controls, partial = FALSE, \
                           content_hash = excluded.content_hash, updated_at = excluded.updated_at \
                           WHERE m365_scores.content_hash <> excluded.content_hash OR m365_scores.partial = TRUE"
                    };
                    // Each day once (the newest copy), 30 rows a statement.
                    let mut by_day: std::collections::BTreeMap<String, &ScoreSnapshot> = std::collections::BTreeMap::new();
                    for s in snapshots {
                        let day = s.created.format("%Y-%m-%d").to_string();
                        if by_day.get(&day).is_none_or(|k| k.created <= s.created) {
                            by_day.insert(day, s);
                        }
                    }
                    let days: Vec<(String, &ScoreSnapshot)> = by_day.into_iter().collect();
                    // The controls of the newest day only: the pages show today's controls and
                    // the history's totals (90 days of controls would be most of the bytes).
                    let newest = days.last().map(|(d, _)| d.clone());
                    for chunk in days.chunks(30) {
                        let q = format!(
                            "INSERT INTO m365_scores (tenant_id, connection_id, partial, updated_at, day, external_id, created, current_score, max_score, active_users, licensed_users, \
                               averages, controls, content_hash) VALUES {}{conflict}",
                            crate::sync_shared::value_rows(chunk.len(), 10, 5, &|p| format!("($1, $2, $3, $4, {})", p.join(", ")))
                        );
                        let mut query = sqlx::query(crate::sync_shared::sql(q)).bind(tenant.0).bind(connection).bind(partial).bind(now);
                        for (day, s) in chunk {
                            let stored = if Some(day) == newest.as_ref() {
                                std::borrow::Cow::Borrowed(*s)
                            } else {
                                std::borrow::Cow::Owned(ScoreSnapshot { controls: vec![], ..(*s).clone() })
                            };
                            let s = stored.as_ref();
                            query = query
                                .bind(day)
                                .bind(&s.external_id)
                                .bind(s.created)
                                .bind(s.current)
                                .bind(s.max)
                                .bind(s.active_users)
                                .bind(s.licensed_users)
                                .bind(serde_json::to_string(&s.averages).unwrap_or_else(|_| "[]".into()))
                                .bind(serde_json::to_string(&s.controls).unwrap_or_else(|_| "[]".into()))
                                .bind(content_hash(s));
                        }
                        written += query.execute(&mut *tx).await?.rows_affected();
                    }
                    tx.commit().await?;
                    Ok(written)
                }

                async fn m365_save_profiles(&self, tenant: TenantId, connection: i64, profiles: &[ControlProfile], now: DateTime<Utc>) -> Result<Written> {
                    let mut tx = self.begin_write().await?;
                    let mut written = 0;
                    for p in profiles {
                        written += sqlx::query(
                            "INSERT INTO m365_control_profiles (tenant_id, connection_id, external_id, title, category, service, max_score, rank, tier, remediation, \
                               action_url, deprecated, state, content_hash, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
                             ON CONFLICT (connection_id, external_id) DO UPDATE SET title = excluded.title, category = excluded.category, service = excluded.service, \
                               max_score = excluded.max_score, rank = excluded.rank, tier = excluded.tier, remediation = excluded.remediation, action_url = excluded.action_url, \
                               deprecated = excluded.deprecated, state = excluded.state, content_hash = excluded.content_hash, updated_at = excluded.updated_at \
                             WHERE m365_control_profiles.content_hash <> excluded.content_hash",
                        )
                        .bind(tenant.0)
                        .bind(connection)
                        .bind(&p.external_id)
                        .bind(&p.title)
                        .bind(&p.category)
                        .bind(&p.service)
                        .bind(p.max_score)
                        .bind(p.rank)
                        .bind(&p.tier)
                        .bind(&p.remediation)
                        .bind(&p.action_url)
                        .bind(p.deprecated)
                        .bind(&p.state)
                        .bind(content_hash(p))
                        .bind(now)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    }
                    tx.commit().await?;
                    Ok(written)
                }

                async fn m365_mark_synced(&self, tenant: TenantId, connection: i64, scores: bool, profiles: bool, now: DateTime<Utc>) -> Result<()> {
                    sqlx::query(
                        "UPDATE m365_connections SET last_synced_at = $3, \
                           scores_synced_at = CASE WHEN $4 THEN $3 ELSE scores_synced_at END, \
                           profiles_synced_at = CASE WHEN $5 THEN $3 ELSE profiles_synced_at END \
                         WHERE tenant_id = $1 AND id = $2",
                    )
                    .bind(tenant.0)
                    .bind(connection)
                    .bind(now)
                    .bind(scores)
                    .bind(profiles)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                async fn m365_domains(&self, tenant: TenantId, company: CompanyId) -> Result<Vec<DomainRow>> {
                    Ok(sqlx::query_as(
                        "SELECT d.connection_id, d.name, d.is_default, d.is_initial, d.is_verified FROM m365_domains d \
                         JOIN m365_connections m ON m.id = d.connection_id \
                         WHERE d.tenant_id = $1 AND m.company_id = $2 AND m.status <> 'disconnected' ORDER BY d.is_default DESC, d.name",
                    )
                    .bind(tenant.0)
                    .bind(company.0)
                    .fetch_all(&self.pool)
                    .await?)
                }

                async fn m365_users(&self, tenant: TenantId, company: CompanyId) -> Result<Vec<UserRow>> {
                    Ok(sqlx::query_as(
                        "SELECT u.id, u.connection_id, u.external_id, u.display_name, u.first_name, u.last_name, u.upn, u.email, u.enabled, u.job_title, u.user_type, u.sku_ids, \
                           u.company_user_id, u.removed_at FROM m365_users u JOIN m365_connections m ON m.id = u.connection_id \
                         WHERE u.tenant_id = $1 AND m.company_id = $2 AND m.status <> 'disconnected' ORDER BY u.removed_at IS NOT NULL, LOWER(u.display_name), u.id",
                    )
                    .bind(tenant.0)
                    .bind(company.0)
                    .fetch_all(&self.pool)
                    .await?)
                }

                async fn m365_groups(&self, tenant: TenantId, company: CompanyId) -> Result<Vec<GroupRow>> {
                    Ok(sqlx::query_as(
                        "SELECT g.connection_id, g.external_id, g.name, g.mail, g.kind FROM m365_groups g JOIN m365_connections m ON m.id = g.connection_id \
                         WHERE g.tenant_id = $1 AND m.company_id = $2 AND m.status <> 'disconnected' ORDER BY LOWER(g.name)",
                    )
                    .bind(tenant.0)
                    .bind(company.0)
                    .fetch_all(&self.pool)
                    .await?)
                }

                async fn m365_licences(&self, tenant: TenantId, company: CompanyId) -> Result<Vec<LicenceRow>> {
                    Ok(sqlx::query_as(
                        "SELECT l.connection_id, l.sku_id, l.part_number, l.name, l.status, l.consumed, l.enabled, l.suspended, l.warning \
                         FROM m365_licences l JOIN m365_connections m ON m.id = l.connection_id \
                         WHERE l.tenant_id = $1 AND m.company_id = $2 AND m.status <> 'disconnected' ORDER BY LOWER(l.name)",
                    )
                    .bind(tenant.0)
                    .bind(company.0)
                    .fetch_all(&self.pool)
                    .await?)
                }

                async fn m365_scores(&self, tenant: TenantId, connection: i64, limit: i64) -> Result<Vec<ScoreRow>> {
                    Ok(sqlx::query_as(
                        "SELECT connection_id, day, created, current_score, max_score, active_users, licensed_users, averages, controls, partial \
                         FROM m365_scores WHERE tenant_id = $1 AND connection_id = $2 ORDER BY day DESC LIMIT $3",
                    )
                    .bind(tenant.0)
                    .bind(connection)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?)
                }

                async fn m365_profiles(&self, tenant: TenantId, connection: i64) -> Result<Vec<ProfileRow>> {
                    Ok(sqlx::query_as(
                        "SELECT connection_id, external_id, title, category, service, max_score, rank, tier, remediation, action_url, deprecated, state \
                         FROM m365_control_profiles WHERE tenant_id = $1 AND connection_id = $2 ORDER BY rank IS NULL, rank, title",
                    )
                    .bind(tenant.0)
                    .bind(connection)
                    .fetch_all(&self.pool)
                    .await?)
                }

                async fn m365_score_overview(&self, tenant: TenantId) -> Result<Vec<ScoreOverviewRow>> {
                    let mut rows: Vec<ScoreOverviewRow> = sqlx::query_as(
                        "SELECT m.company_id, c.name AS company_name, m.id AS connection_id, m.ms_tenant_id, m.display_name, s.day, s.current_score, s.max_score, \
                           CAST(NULL AS DOUBLE PRECISION) AS previous_score \
                         FROM m365_connections m JOIN companies c ON c.id = m.company_id \
                         JOIN m365_scores s ON s.connection_id = m.id AND s.day = (SELECT MAX(day) FROM m365_scores WHERE connection_id = m.id AND partial = FALSE) \
                         WHERE m.tenant_id = $1 AND m.status <> 'disconnected' \
                         ORDER BY CASE WHEN s.max_score > 0 THEN s.current_score / s.max_score ELSE 0 END, LOWER(c.name)",
                    )
                    .bind(tenant.0)
                    .fetch_all(&self.pool)
                    .await?;
                    // The complete snapshot 30 days (or more) before each latest one.
                    for r in &mut rows {
                        let Ok(day) = chrono::NaiveDate::parse_from_str(&r.day, "%Y-%m-%d") else { continue };
                        let cutoff = (day - chrono::Duration::days(30)).format("%Y-%m-%d").to_string();
                        r.previous_score = sqlx::query_as::<_, (f64,)>(
                            "SELECT current_score FROM m365_scores WHERE tenant_id = $1 AND connection_id = $2 AND day <= $3 AND partial = FALSE ORDER BY day DESC LIMIT 1",
                        )
                        .bind(tenant.0)
                        .bind(r.connection_id)
                        .bind(cutoff)
                        .fetch_optional(&self.pool)
                        .await?
                        .map(|(v,)| v);
                    }
                    Ok(rows)
                }

                async fn m365_match_users(&self, tenant: TenantId, company: CompanyId) -> Result<u64> {
                    // Per connection (a company has one or a few), so each statement reads
                    // that tenant's users by index, whatever the other tenants hold.
                    let connections: Vec<(i64,)> = sqlx::query_as("SELECT id FROM m365_connections WHERE tenant_id = $1 AND company_id = $2")
                        .bind(tenant.0)
                        .bind(company.0)
                        .fetch_all(&self.pool)
                        .await?;
                    let mut matched = 0;
                    for (connection,) in connections {
                        matched += sqlx::query(
                            "UPDATE m365_users SET company_user_id = (SELECT MIN(cu.id) FROM company_users cu \
                                WHERE cu.tenant_id = $1 AND cu.company_id = $2 AND LOWER(cu.email) = m365_users.email) \
                             WHERE connection_id = $3 AND tenant_id = $1 AND company_user_id IS NULL AND email IS NOT NULL \
                               AND EXISTS (SELECT 1 FROM company_users cu WHERE cu.tenant_id = $1 AND cu.company_id = $2 AND LOWER(cu.email) = m365_users.email)",
                        )
                        .bind(tenant.0)
                        .bind(company.0)
                        .bind(connection)
                        .execute(&self.pool)
                        .await?
                        .rows_affected();
                    }
                    Ok(matched)
                }

                async fn m365_company_domains(&self, tenant: TenantId) -> Result<Vec<(i64, String)>> {
                    Ok(sqlx::query_as(
                        "SELECT m.company_id, d.name FROM m365_domains d JOIN m365_connections m ON m.id = d.connection_id \
                         WHERE d.tenant_id = $1 AND d.is_verified = TRUE AND m.status <> 'disconnected' ORDER BY m.company_id, d.name",
                    )
                    .bind(tenant.0)
                    .fetch_all(&self.pool)
                    .await?)
                }

                async fn m365_link_user(&self, tenant: TenantId, user: i64, company_user: i64, imported: bool) -> Result<()> {
                    let done = sqlx::query("UPDATE m365_users SET company_user_id = $3, imported = $4 WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant.0)
                        .bind(user)
                        .bind(company_user)
                        .bind(imported)
                        .execute(&self.pool)
                        .await?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound);
                    }
                    Ok(())
                }
            }
        }
    };
}
pub(crate) use impl_m365_store;
