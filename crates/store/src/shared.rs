//! SQL that both dialects accept, written once and instantiated for each backend's
//! own pool type by [`impl_store!`]. Both backends support `$N` placeholders,
//! `RETURNING`, `ON CONFLICT … DO UPDATE` and partial indexes, and sqlx maps
//! `bool`, `i64`, `Vec<u8>` and `DateTime<Utc>` on each natively.

use mspbridge_domain::integration::TestReport;

use crate::StoreError;

pub(crate) fn test_json(report: &TestReport) -> Result<String, StoreError> {
    serde_json::to_string(report).map_err(|e| StoreError::Corrupt(format!("test report: {e}")))
}

pub(crate) fn settings_json(v: &serde_json::Value) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(format!("settings: {e}")))
}

#[derive(sqlx::FromRow)]
pub(crate) struct LoginRow {
    #[sqlx(flatten)]
    pub user: crate::rows::StaffRow,
    pub password_hash: String,
}

#[derive(sqlx::FromRow)]
pub(crate) struct SessionRow {
    #[sqlx(flatten)]
    pub user: crate::rows::StaffRow,
    pub csrf_token: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct SecretRow {
    pub field: String,
    pub ciphertext: Vec<u8>,
}

macro_rules! impl_store {
    ($store:ty, $backend:literal) => {
        use std::collections::BTreeMap;

        use async_trait::async_trait;
        use chrono::{DateTime, Utc};
        use mspbridge_domain::auth::StaffRole;
        use mspbridge_domain::integration::{Integration, IntegrationStatus, TestReport};
        use mspbridge_domain::model::*;
        use mspbridge_domain::*;
        use mspbridge_vault::{Binding, Vault};

        use crate::rows::*;
        use crate::shared::{LoginRow, SecretRow, SessionRow, settings_json, test_json};
        use crate::*;

        impl $store {
            async fn fetch_integration(&self, tenant: TenantId, id: IntegrationId) -> Result<Integration> {
                let row: Option<IntegrationRow> = sqlx::query_as(
                    "SELECT id, tenant_id, provider, nickname, status, last_error, fix_hint, settings, last_test, created_at, updated_at \
                     FROM integrations WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant.0)
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await?;
                row.ok_or(StoreError::NotFound)?.try_into()
            }
        }

        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn ping(&self) -> Result<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn create_tenant(&self, name: &str, now: DateTime<Utc>) -> Result<Tenant> {
                let mut tx = self.begin_write().await?;
                let row: TenantRow = sqlx::query_as(
                    "INSERT INTO tenants (name, created_at) VALUES ($1, $2) RETURNING id, name, created_at",
                )
                .bind(name)
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| conflict_on_unique(e, "a tenant with this name already exists"))?;
                for (role, description) in BUILTIN_ROLES {
                    sqlx::query("INSERT INTO roles (tenant_id, name, description) VALUES ($1, $2, $3)")
                        .bind(row.id)
                        .bind(role)
                        .bind(description)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(row.into())
            }

            async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>> {
                let row: Option<TenantRow> =
                    sqlx::query_as("SELECT id, name, created_at FROM tenants WHERE lower(name) = lower($1)")
                        .bind(name)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.map(Into::into))
            }

            async fn get_tenant(&self, id: TenantId) -> Result<Tenant> {
                let row: Option<TenantRow> = sqlx::query_as("SELECT id, name, created_at FROM tenants WHERE id = $1")
                    .bind(id.0)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.ok_or(StoreError::NotFound)?.into())
            }

            async fn create_staff_user(&self, tenant: TenantId, user: NewStaffUser, now: DateTime<Utc>) -> Result<StaffUser> {
                let row: StaffRow = sqlx::query_as(
                    "INSERT INTO staff_users (tenant_id, email, name, role, password_hash, active, origin, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, TRUE, $6, $7, $7) \
                     RETURNING id, tenant_id, email, name, role, active, origin, created_at",
                )
                .bind(tenant.0)
                .bind(user.email.to_lowercase())
                .bind(&user.name)
                .bind(user.role.as_str())
                .bind(&user.password_hash)
                .bind(user.origin.as_str())
                .bind(now)
                .fetch_one(&self.pool)
                .await
                .map_err(|e| conflict_on_unique(e, "a staff user with this email already exists"))?;
                row.try_into()
            }

            async fn list_staff_users(&self, tenant: TenantId) -> Result<Vec<StaffUser>> {
                let rows: Vec<StaffRow> = sqlx::query_as(
                    "SELECT id, tenant_id, email, name, role, active, origin, created_at FROM staff_users WHERE tenant_id = $1 ORDER BY id",
                )
                .bind(tenant.0)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn update_staff_user(
                &self,
                tenant: TenantId,
                id: StaffUserId,
                name: &str,
                email: &str,
                active: bool,
                now: DateTime<Utc>,
            ) -> Result<StaffUser> {
                let row: Option<StaffRow> = sqlx::query_as(
                    "UPDATE staff_users SET name = $1, email = $2, active = $3, updated_at = $4 \
                     WHERE tenant_id = $5 AND id = $6 \
                     RETURNING id, tenant_id, email, name, role, active, origin, created_at",
                )
                .bind(name)
                .bind(email.to_lowercase())
                .bind(active)
                .bind(now)
                .bind(tenant.0)
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| conflict_on_unique(e, "another staff user has this email"))?;
                row.ok_or(StoreError::NotFound)?.try_into()
            }

            async fn staff_login(&self, email: &str) -> Result<Option<(StaffUser, String)>> {
                let row: Option<LoginRow> = sqlx::query_as(
                    "SELECT id, tenant_id, email, name, role, active, origin, created_at, password_hash FROM staff_users \
                     WHERE email = $1 AND password_hash IS NOT NULL AND active",
                )
                .bind(email.to_lowercase())
                .fetch_optional(&self.pool)
                .await?;
                match row {
                    Some(r) => Ok(Some((r.user.try_into()?, r.password_hash))),
                    None => Ok(None),
                }
            }

            async fn create_session(
                &self,
                id_hash: &str,
                user: &StaffUser,
                csrf_token: &str,
                now: DateTime<Utc>,
                expires_at: DateTime<Utc>,
            ) -> Result<()> {
                sqlx::query(
                    "INSERT INTO sessions (id_hash, tenant_id, staff_user_id, csrf_token, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(id_hash)
                .bind(user.tenant_id.0)
                .bind(user.id.0)
                .bind(csrf_token)
                .bind(now)
                .bind(expires_at)
                .execute(&self.pool)
                .await?;
                // Opportunistic cleanup keeps the table small without a separate job.
                sqlx::query("DELETE FROM sessions WHERE expires_at <= $1").bind(now).execute(&self.pool).await?;
                Ok(())
            }

            async fn session(&self, id_hash: &str, now: DateTime<Utc>) -> Result<Option<SessionRecord>> {
                let row: Option<SessionRow> = sqlx::query_as(
                    "SELECT u.id, u.tenant_id, u.email, u.name, u.role, u.active, u.origin, u.created_at, s.csrf_token, s.expires_at \
                     FROM sessions s JOIN staff_users u ON u.id = s.staff_user_id AND u.tenant_id = s.tenant_id \
                     WHERE s.id_hash = $1 AND s.expires_at > $2 AND u.active",
                )
                .bind(id_hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                match row {
                    Some(r) => {
                        let user: StaffUser = r.user.try_into()?;
                        Ok(Some(SessionRecord { tenant_id: user.tenant_id, user, csrf_token: r.csrf_token, expires_at: r.expires_at }))
                    }
                    None => Ok(None),
                }
            }

            async fn delete_session(&self, id_hash: &str) -> Result<()> {
                sqlx::query("DELETE FROM sessions WHERE id_hash = $1").bind(id_hash).execute(&self.pool).await?;
                Ok(())
            }

            async fn create_api_token(
                &self,
                tenant: TenantId,
                name: &str,
                role: StaffRole,
                token_hash: &str,
                now: DateTime<Utc>,
            ) -> Result<ApiToken> {
                let row: TokenRow = sqlx::query_as(
                    "INSERT INTO api_tokens (tenant_id, name, role, token_hash, created_at) VALUES ($1, $2, $3, $4, $5) \
                     RETURNING id, tenant_id, name, role, created_at, last_used_at",
                )
                .bind(tenant.0)
                .bind(name)
                .bind(role.as_str())
                .bind(token_hash)
                .bind(now)
                .fetch_one(&self.pool)
                .await?;
                row.try_into()
            }

            async fn api_token(&self, token_hash: &str, now: DateTime<Utc>) -> Result<Option<ApiToken>> {
                let row: Option<TokenRow> = sqlx::query_as(
                    "UPDATE api_tokens SET last_used_at = $2 WHERE token_hash = $1 AND revoked_at IS NULL \
                     RETURNING id, tenant_id, name, role, created_at, last_used_at",
                )
                .bind(token_hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn revoke_api_token(&self, tenant: TenantId, id: ApiTokenId, now: DateTime<Utc>) -> Result<()> {
                let done = sqlx::query("UPDATE api_tokens SET revoked_at = $3 WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL")
                    .bind(tenant.0)
                    .bind(id.0)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 0 { Err(StoreError::NotFound) } else { Ok(()) }
            }

            async fn list_roles(&self, tenant: TenantId) -> Result<Vec<Role>> {
                let rows: Vec<RoleRow> =
                    sqlx::query_as("SELECT id, tenant_id, name, description FROM roles WHERE tenant_id = $1 ORDER BY id")
                        .bind(tenant.0)
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn create_company(&self, tenant: TenantId, name: &str, now: DateTime<Utc>) -> Result<Company> {
                let row: CompanyRow = sqlx::query_as(
                    "INSERT INTO companies (tenant_id, name, active, created_at, updated_at) VALUES ($1, $2, TRUE, $3, $3) \
                     RETURNING id, tenant_id, name, active, created_at, updated_at",
                )
                .bind(tenant.0)
                .bind(name)
                .bind(now)
                .fetch_one(&self.pool)
                .await?;
                Ok(row.into())
            }

            async fn get_company(&self, tenant: TenantId, id: CompanyId) -> Result<Company> {
                let row: Option<CompanyRow> = sqlx::query_as(
                    "SELECT id, tenant_id, name, active, created_at, updated_at FROM companies WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant.0)
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.ok_or(StoreError::NotFound)?.into())
            }

            async fn set_company_active(&self, tenant: TenantId, id: CompanyId, active: bool, now: DateTime<Utc>) -> Result<Company> {
                let done = sqlx::query("UPDATE companies SET active = $3, updated_at = $4 WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant.0)
                    .bind(id.0)
                    .bind(active)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                self.get_company(tenant, id).await
            }

            async fn list_companies(&self, tenant: TenantId) -> Result<Vec<Company>> {
                let rows: Vec<CompanyRow> = sqlx::query_as(
                    "SELECT id, tenant_id, name, active, created_at, updated_at FROM companies WHERE tenant_id = $1 ORDER BY name, id",
                )
                .bind(tenant.0)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn set_company_defaults(
                &self,
                tenant: TenantId,
                company: CompanyId,
                default_import_role: Option<RoleId>,
                now: DateTime<Utc>,
            ) -> Result<CompanyDefaults> {
                self.get_company(tenant, company).await?;
                if let Some(role) = default_import_role {
                    let found: Option<(i64,)> = sqlx::query_as("SELECT id FROM roles WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant.0)
                        .bind(role.0)
                        .fetch_optional(&self.pool)
                        .await?;
                    if found.is_none() {
                        return Err(StoreError::NotFound);
                    }
                }
                sqlx::query(
                    "INSERT INTO company_defaults (company_id, tenant_id, default_import_role_id, updated_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (company_id) DO UPDATE SET default_import_role_id = excluded.default_import_role_id, updated_at = excluded.updated_at",
                )
                .bind(company.0)
                .bind(tenant.0)
                .bind(default_import_role.map(|r| r.0))
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(CompanyDefaults { company_id: company, default_import_role })
            }

            async fn company_defaults(&self, tenant: TenantId, company: CompanyId) -> Result<CompanyDefaults> {
                self.get_company(tenant, company).await?;
                let row: Option<(Option<i64>,)> = sqlx::query_as(
                    "SELECT default_import_role_id FROM company_defaults WHERE tenant_id = $1 AND company_id = $2",
                )
                .bind(tenant.0)
                .bind(company.0)
                .fetch_optional(&self.pool)
                .await?;
                Ok(CompanyDefaults { company_id: company, default_import_role: row.and_then(|r| r.0).map(RoleId) })
            }

            async fn create_company_user(&self, tenant: TenantId, user: NewCompanyUser, now: DateTime<Utc>) -> Result<CompanyUser> {
                self.get_company(tenant, user.company_id).await?;
                let role_ok: Option<(i64,)> = sqlx::query_as("SELECT id FROM roles WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant.0)
                    .bind(user.role_id.0)
                    .fetch_optional(&self.pool)
                    .await?;
                if role_ok.is_none() {
                    return Err(StoreError::NotFound);
                }
                let row: CompanyUserRow = sqlx::query_as(
                    "INSERT INTO company_users (tenant_id, company_id, email, phone, first_name, last_name, role_id, role_reason, status, origin, created_at, updated_at) \
                     VALUES ($1, $2, $3, $11, $4, $5, $6, $7, $8, $9, $10, $10) \
                     RETURNING id, tenant_id, company_id, email, phone, first_name, last_name, role_id, role_reason, status, origin, created_at, updated_at, contact_types",
                )
                .bind(tenant.0)
                .bind(user.company_id.0)
                .bind(user.email.map(|e| e.to_lowercase()))
                .bind(&user.first_name)
                .bind(&user.last_name)
                .bind(user.role_id.0)
                .bind(&user.role_reason)
                .bind(user.status.as_str())
                .bind(user.origin.as_str())
                .bind(now)
                .bind(&user.phone)
                .fetch_one(&self.pool)
                .await?;
                row.try_into()
            }

            async fn list_company_users(&self, tenant: TenantId, company: CompanyId) -> Result<Vec<CompanyUser>> {
                let rows: Vec<CompanyUserRow> = sqlx::query_as(
                    "SELECT id, tenant_id, company_id, email, phone, first_name, last_name, role_id, role_reason, status, origin, created_at, updated_at, contact_types \
                     FROM company_users WHERE tenant_id = $1 AND company_id = $2 ORDER BY last_name, first_name, id",
                )
                .bind(tenant.0)
                .bind(company.0)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn create_ticket(&self, tenant: TenantId, ticket: NewTicket, now: DateTime<Utc>) -> Result<Ticket> {
                self.get_company(tenant, ticket.company_id).await?;
                let row: TicketRow = sqlx::query_as(crate::sync_shared::sql(format!(
                    "INSERT INTO tickets (tenant_id, company_id, summary, description, status, priority, closed, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, FALSE, $7, $7) RETURNING {}",
                    crate::rows::TICKET_COLUMNS
                )))
                .bind(tenant.0)
                .bind(ticket.company_id.0)
                .bind(&ticket.summary)
                .bind(&ticket.description)
                .bind(&ticket.status)
                .bind(&ticket.priority)
                .bind(now)
                .fetch_one(&self.pool)
                .await?;
                Ok(row.into())
            }

            async fn list_tickets(
                &self,
                tenant: TenantId,
                company: Option<CompanyId>,
                closed: Option<bool>,
                before: Option<TicketId>,
                limit: i64,
            ) -> Result<Vec<Ticket>> {
                let rows: Vec<TicketRow> = sqlx::query_as(crate::sync_shared::sql(format!(
                    "SELECT {} FROM tickets WHERE tenant_id = $1 AND ($2 IS NULL OR company_id = $2) \
                     AND ($3 IS NULL OR closed = $3) AND ($4 IS NULL OR id < $4) ORDER BY id DESC LIMIT $5",
                    crate::rows::TICKET_COLUMNS
                )))
                .bind(tenant.0)
                .bind(company.map(|c| c.0))
                .bind(closed)
                .bind(before.map(|t| t.0))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn count_tickets(
                &self,
                tenant: TenantId,
                company: Option<CompanyId>,
                closed: Option<bool>,
            ) -> Result<i64> {
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM tickets WHERE tenant_id = $1 AND ($2 IS NULL OR company_id = $2) \
                     AND ($3 IS NULL OR closed = $3)",
                )
                .bind(tenant.0)
                .bind(company.map(|c| c.0))
                .bind(closed)
                .fetch_one(&self.pool)
                .await?;
                Ok(n)
            }

            async fn get_ticket(&self, tenant: TenantId, id: TicketId) -> Result<Ticket> {
                let row: Option<TicketRow> = sqlx::query_as(crate::sync_shared::sql(format!(
                    "SELECT {} FROM tickets WHERE tenant_id = $1 AND id = $2",
                    crate::rows::TICKET_COLUMNS
                )))
                .bind(tenant.0)
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.ok_or(StoreError::NotFound)?.into())
            }

            async fn add_ticket_note(
                &self,
                tenant: TenantId,
                ticket: TicketId,
                body: &str,
                internal: bool,
                author: &str,
                now: DateTime<Utc>,
            ) -> Result<TicketNote> {
                self.get_ticket(tenant, ticket).await?;
                let row: NoteRow = sqlx::query_as(crate::sync_shared::sql(format!(
                    "INSERT INTO ticket_notes (tenant_id, ticket_id, body, internal, author, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
                     RETURNING {}",
                    crate::rows::NOTE_COLUMNS
                )))
                .bind(tenant.0)
                .bind(ticket.0)
                .bind(body)
                .bind(internal)
                .bind(author)
                .bind(now)
                .fetch_one(&self.pool)
                .await?;
                Ok(row.into())
            }

            async fn list_ticket_notes(&self, tenant: TenantId, ticket: TicketId) -> Result<Vec<TicketNote>> {
                let rows: Vec<NoteRow> = sqlx::query_as(crate::sync_shared::sql(format!(
                    "SELECT {} FROM ticket_notes WHERE tenant_id = $1 AND ticket_id = $2 ORDER BY created_at, id",
                    crate::rows::NOTE_COLUMNS
                )))
                .bind(tenant.0)
                .bind(ticket.0)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn upsert_link(&self, tenant: TenantId, link: LinkUpsert, now: DateTime<Utc>) -> Result<ExternalLink> {
                self.fetch_integration(tenant, link.integration_id).await?;
                let row: LinkRow = sqlx::query_as(
                    "INSERT INTO external_links (tenant_id, integration_id, record_kind, local_id, external_id, remote_updated_at, content_hash, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
                     ON CONFLICT (integration_id, record_kind, external_id) DO UPDATE SET \
                       local_id = excluded.local_id, remote_updated_at = excluded.remote_updated_at, \
                       content_hash = excluded.content_hash, gone_upstream_at = NULL, updated_at = excluded.updated_at \
                     RETURNING id, integration_id, record_kind, local_id, external_id, remote_updated_at, content_hash, gone_upstream_at",
                )
                .bind(tenant.0)
                .bind(link.integration_id.0)
                .bind(link.record.as_str())
                .bind(link.local_id)
                .bind(&link.external_id)
                .bind(link.remote_updated_at)
                .bind(&link.content_hash)
                .bind(now)
                .fetch_one(&self.pool)
                .await
                .map_err(|e| conflict_on_unique(e, "this portal record is already linked to another external record of the integration"))?;
                row.try_into()
            }

            async fn find_link(
                &self,
                tenant: TenantId,
                integration: IntegrationId,
                record: LinkedRecord,
                external_id: &str,
            ) -> Result<Option<ExternalLink>> {
                let row: Option<LinkRow> = sqlx::query_as(
                    "SELECT id, integration_id, record_kind, local_id, external_id, remote_updated_at, content_hash, gone_upstream_at \
                     FROM external_links WHERE tenant_id = $1 AND integration_id = $2 AND record_kind = $3 AND external_id = $4",
                )
                .bind(tenant.0)
                .bind(integration.0)
                .bind(record.as_str())
                .bind(external_id)
                .fetch_optional(&self.pool)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn find_local_link(
                &self,
                tenant: TenantId,
                integration: IntegrationId,
                record: LinkedRecord,
                local_id: i64,
            ) -> Result<Option<ExternalLink>> {
                let row: Option<LinkRow> = sqlx::query_as(
                    "SELECT id, integration_id, record_kind, local_id, external_id, remote_updated_at, content_hash, gone_upstream_at \
                     FROM external_links WHERE tenant_id = $1 AND integration_id = $2 AND record_kind = $3 AND local_id = $4",
                )
                .bind(tenant.0)
                .bind(integration.0)
                .bind(record.as_str())
                .bind(local_id)
                .fetch_optional(&self.pool)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn links_of_kind(&self, tenant: TenantId, record: LinkedRecord) -> Result<Vec<ExternalLink>> {
                let rows: Vec<LinkRow> = sqlx::query_as(
                    "SELECT id, integration_id, record_kind, local_id, external_id, remote_updated_at, content_hash, gone_upstream_at \
                     FROM external_links WHERE tenant_id = $1 AND record_kind = $2 ORDER BY integration_id, local_id",
                )
                .bind(tenant.0)
                .bind(record.as_str())
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn create_integration(
                &self,
                tenant: TenantId,
                new: NewIntegration,
                vault: &Vault,
                now: DateTime<Utc>,
            ) -> Result<Integration> {
                let (status, error, hint) = new.report.verdict();
                let mut tx = self.begin_write().await?;
                let (id,): (i64,) = sqlx::query_as(
                    "INSERT INTO integrations (tenant_id, provider, nickname, status, last_error, fix_hint, settings, last_test, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING id",
                )
                .bind(tenant.0)
                .bind(new.provider.slug())
                .bind(&new.nickname)
                .bind(status.as_str())
                .bind(&error)
                .bind(&hint)
                .bind(settings_json(&new.settings)?)
                .bind(test_json(&new.report)?)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                for (field, value) in &new.secrets {
                    let blob = vault.seal(Binding { tenant_id: tenant.0, integration_id: id, field }, value.expose())?;
                    sqlx::query(
                        "INSERT INTO integration_secrets (integration_id, tenant_id, field, ciphertext, updated_at) VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(id)
                    .bind(tenant.0)
                    .bind(field)
                    .bind(blob)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                self.fetch_integration(tenant, IntegrationId(id)).await
            }

            async fn get_integration(&self, tenant: TenantId, id: IntegrationId) -> Result<Integration> {
                self.fetch_integration(tenant, id).await
            }

            async fn list_integrations(&self, tenant: TenantId) -> Result<Vec<Integration>> {
                let rows: Vec<IntegrationRow> = sqlx::query_as(
                    "SELECT id, tenant_id, provider, nickname, status, last_error, fix_hint, settings, last_test, created_at, updated_at \
                     FROM integrations WHERE tenant_id = $1 ORDER BY id",
                )
                .bind(tenant.0)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn record_test(&self, tenant: TenantId, id: IntegrationId, report: &TestReport, now: DateTime<Utc>) -> Result<Integration> {
                let (status, error, hint) = report.verdict();
                sqlx::query(
                    "UPDATE integrations SET status = $3, last_error = $4, fix_hint = $5, last_test = $6, updated_at = $7 \
                     WHERE tenant_id = $1 AND id = $2 AND status <> 'disconnected'",
                )
                .bind(tenant.0)
                .bind(id.0)
                .bind(status.as_str())
                .bind(&error)
                .bind(&hint)
                .bind(test_json(report)?)
                .bind(now)
                .execute(&self.pool)
                .await?;
                // A disconnected integration is left as it is; a missing one answers NotFound here.
                self.fetch_integration(tenant, id).await
            }

            async fn set_status(
                &self,
                tenant: TenantId,
                id: IntegrationId,
                status: IntegrationStatus,
                last_error: Option<&str>,
                fix_hint: Option<&str>,
                now: DateTime<Utc>,
            ) -> Result<Integration> {
                let done = sqlx::query(
                    "UPDATE integrations SET status = $3, last_error = $4, fix_hint = $5, updated_at = $6 WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant.0)
                .bind(id.0)
                .bind(status.as_str())
                .bind(last_error)
                .bind(fix_hint)
                .bind(now)
                .execute(&self.pool)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                self.fetch_integration(tenant, id).await
            }

            async fn rename_integration(&self, tenant: TenantId, id: IntegrationId, nickname: Option<&str>, now: DateTime<Utc>) -> Result<Integration> {
                let done = sqlx::query("UPDATE integrations SET nickname = $3, updated_at = $4 WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant.0)
                    .bind(id.0)
                    .bind(nickname)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                self.fetch_integration(tenant, id).await
            }

            async fn update_credentials(
                &self,
                tenant: TenantId,
                id: IntegrationId,
                update: CredentialUpdate,
                vault: &Vault,
                now: DateTime<Utc>,
            ) -> Result<Integration> {
                self.fetch_integration(tenant, id).await?;
                let (status, error, hint) = update.report.verdict();
                let mut tx = self.begin_write().await?;
                let stored: Vec<(String,)> =
                    sqlx::query_as("SELECT field FROM integration_secrets WHERE tenant_id = $1 AND integration_id = $2")
                        .bind(tenant.0)
                        .bind(id.0)
                        .fetch_all(&mut *tx)
                        .await?;
                for (field,) in stored {
                    if !update.keep.contains(&field) {
                        sqlx::query("DELETE FROM integration_secrets WHERE tenant_id = $1 AND integration_id = $2 AND field = $3")
                            .bind(tenant.0)
                            .bind(id.0)
                            .bind(&field)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                for (field, value) in &update.new_secrets {
                    let blob = vault.seal(Binding { tenant_id: tenant.0, integration_id: id.0, field }, value.expose())?;
                    sqlx::query(
                        "INSERT INTO integration_secrets (integration_id, tenant_id, field, ciphertext, updated_at) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (integration_id, field) DO UPDATE SET ciphertext = excluded.ciphertext, updated_at = excluded.updated_at",
                    )
                    .bind(id.0)
                    .bind(tenant.0)
                    .bind(field)
                    .bind(blob)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                sqlx::query(
                    "UPDATE integrations SET settings = $3, status = $4, last_error = $5, fix_hint = $6, last_test = $7, updated_at = $8 \
                     WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant.0)
                .bind(id.0)
                .bind(settings_json(&update.settings)?)
                .bind(status.as_str())
                .bind(&error)
                .bind(&hint)
                .bind(test_json(&update.report)?)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                self.fetch_integration(tenant, id).await
            }

            async fn load_secrets(&self, tenant: TenantId, id: IntegrationId, vault: &Vault) -> Result<BTreeMap<String, SecretString>> {
                self.fetch_integration(tenant, id).await?;
                let rows: Vec<SecretRow> = sqlx::query_as(
                    "SELECT field, ciphertext FROM integration_secrets WHERE tenant_id = $1 AND integration_id = $2",
                )
                .bind(tenant.0)
                .bind(id.0)
                .fetch_all(&self.pool)
                .await?;
                let mut out = BTreeMap::new();
                for r in rows {
                    let value = vault.open(Binding { tenant_id: tenant.0, integration_id: id.0, field: &r.field }, &r.ciphertext)?;
                    out.insert(r.field, SecretString::new(value));
                }
                Ok(out)
            }

            async fn disconnect_integration(&self, tenant: TenantId, id: IntegrationId, now: DateTime<Utc>) -> Result<Integration> {
                self.fetch_integration(tenant, id).await?;
                let mut tx = self.begin_write().await?;
                sqlx::query("DELETE FROM integration_secrets WHERE tenant_id = $1 AND integration_id = $2")
                    .bind(tenant.0)
                    .bind(id.0)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "UPDATE integrations SET status = 'disconnected', last_error = NULL, fix_hint = NULL, updated_at = $3 \
                     WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant.0)
                .bind(id.0)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                self.fetch_integration(tenant, id).await
            }

            async fn delete_integration(&self, tenant: TenantId, id: IntegrationId) -> Result<()> {
                let done = sqlx::query("DELETE FROM integrations WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant.0)
                    .bind(id.0)
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 0 { Err(StoreError::NotFound) } else { Ok(()) }
            }
        }
    };
}
