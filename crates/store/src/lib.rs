//! Storage for mspbridge.
//!
//! [`Store`] is the one interface the rest of the system uses. It has two
//! implementations, [`sqlite::SqliteStore`] (the embedded default) and
//! [`postgres::PgStore`] (production, several instances), each with its own pool,
//! driver types and migrations directory. Their SQL is written once in
//! [`shared`] where both dialects agree; where they differ each backend has its own.
//!
//! Every method that touches tenant data takes the [`TenantId`] first, and every
//! query filters on it: another tenant's id answers `NotFound`.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mspbridge_domain::auth::StaffRole;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::integration::{Integration, IntegrationStatus, TestReport};
use mspbridge_domain::model::*;
use mspbridge_domain::*;
use mspbridge_vault::Vault;

pub mod billing;
pub mod m365;
pub mod mapping;
pub mod outbox;
pub mod rmm;
mod rows;
#[macro_use]
mod shared;
#[macro_use]
mod sync_shared;
pub mod postgres;
mod postgres_batch;
pub mod sqlite;
mod sqlite_batch;
pub mod sync;
pub mod test_support;
pub mod training;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Vault(#[from] mspbridge_vault::VaultError),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("this worker no longer holds the sync lease for the integration")]
    LeaseLost,
    #[error("invalid database URL: {0}")]
    BadUrl(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Maps a unique-constraint violation to a `Conflict` with a message for the user.
pub(crate) fn conflict_on_unique(e: sqlx::Error, message: &str) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(message.to_string())
        }
        _ => StoreError::Database(e),
    }
}

#[derive(Debug, Clone)]
pub struct NewStaffUser {
    pub email: String,
    pub name: String,
    pub role: StaffRole,
    pub password_hash: Option<String>,
    pub origin: Origin,
}

/// A session looked up by its id hash, with the user it belongs to.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub tenant_id: TenantId,
    pub user: StaffUser,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApiToken {
    pub id: ApiTokenId,
    pub tenant_id: TenantId,
    pub name: String,
    pub role: StaffRole,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct NewCompanyUser {
    pub company_id: CompanyId,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub first_name: String,
    pub last_name: String,
    pub role_id: RoleId,
    pub role_reason: Option<String>,
    pub status: UserStatus,
    pub origin: Origin,
}

#[derive(Debug, Clone)]
pub struct NewTicket {
    pub company_id: CompanyId,
    pub summary: String,
    pub description: String,
    pub status: String,
    pub priority: Option<String>,
}

/// What to store when an integration is created by a successful connect.
#[derive(Debug)]
pub struct NewIntegration {
    pub provider: ProviderKind,
    pub nickname: Option<String>,
    pub settings: serde_json::Value,
    pub secrets: BTreeMap<String, SecretString>,
    pub report: TestReport,
}

/// A credential change on an existing integration: new non-secret settings, new
/// secret values, and the secret fields to keep as stored (submitted masked).
#[derive(Debug)]
pub struct CredentialUpdate {
    pub settings: serde_json::Value,
    pub new_secrets: BTreeMap<String, SecretString>,
    pub keep: Vec<String>,
    pub report: TestReport,
}

#[derive(Debug, Clone)]
pub struct LinkUpsert {
    pub integration_id: IntegrationId,
    pub record: LinkedRecord,
    pub local_id: i64,
    pub external_id: String,
    pub remote_updated_at: Option<DateTime<Utc>>,
    pub content_hash: String,
}

#[async_trait]
pub trait Store:
    sync::SyncStore
    + mapping::MappingStore
    + outbox::OutboxStore
    + rmm::RmmStore
    + m365::M365Store
    + billing::BillingStore
    + training::TrainingStore
    + Send
    + Sync
    + 'static
{
    /// "sqlite" or "postgres".
    fn backend(&self) -> &'static str;
    async fn ping(&self) -> Result<()>;

    // Tenants, staff and auth.
    async fn create_tenant(&self, name: &str, now: DateTime<Utc>) -> Result<Tenant>;
    async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>>;
    async fn get_tenant(&self, id: TenantId) -> Result<Tenant>;
    async fn create_staff_user(
        &self,
        tenant: TenantId,
        user: NewStaffUser,
        now: DateTime<Utc>,
    ) -> Result<StaffUser>;
    async fn list_staff_users(&self, tenant: TenantId) -> Result<Vec<StaffUser>>;
    /// Changes a staff user's name, email and active flag (`NotFound` outside `tenant`;
    /// `Conflict` when another staff user has the email).
    async fn update_staff_user(
        &self,
        tenant: TenantId,
        id: StaffUserId,
        name: &str,
        email: &str,
        active: bool,
        now: DateTime<Utc>,
    ) -> Result<StaffUser>;
    /// The active, password-holding staff user with this (lower-case) email, and the hash.
    async fn staff_login(&self, email: &str) -> Result<Option<(StaffUser, String)>>;
    async fn create_session(
        &self,
        id_hash: &str,
        user: &StaffUser,
        csrf_token: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<()>;
    /// The unexpired session with this id hash whose user is still active.
    async fn session(&self, id_hash: &str, now: DateTime<Utc>) -> Result<Option<SessionRecord>>;
    async fn delete_session(&self, id_hash: &str) -> Result<()>;
    async fn create_api_token(
        &self,
        tenant: TenantId,
        name: &str,
        role: StaffRole,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<ApiToken>;
    /// The unrevoked token with this hash; records its use.
    async fn api_token(&self, token_hash: &str, now: DateTime<Utc>) -> Result<Option<ApiToken>>;
    async fn revoke_api_token(
        &self,
        tenant: TenantId,
        id: ApiTokenId,
        now: DateTime<Utc>,
    ) -> Result<()>;

    // Portal core.
    async fn list_roles(&self, tenant: TenantId) -> Result<Vec<Role>>;
    async fn create_company(
        &self,
        tenant: TenantId,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<Company>;
    async fn get_company(&self, tenant: TenantId, id: CompanyId) -> Result<Company>;
    async fn list_companies(&self, tenant: TenantId) -> Result<Vec<Company>>;
    /// Deactivates (or reactivates) a portal company; its tickets and users stay.
    async fn set_company_active(
        &self,
        tenant: TenantId,
        id: CompanyId,
        active: bool,
        now: DateTime<Utc>,
    ) -> Result<Company>;
    async fn set_company_defaults(
        &self,
        tenant: TenantId,
        company: CompanyId,
        default_import_role: Option<RoleId>,
        now: DateTime<Utc>,
    ) -> Result<CompanyDefaults>;
    async fn company_defaults(
        &self,
        tenant: TenantId,
        company: CompanyId,
    ) -> Result<CompanyDefaults>;
    async fn create_company_user(
        &self,
        tenant: TenantId,
        user: NewCompanyUser,
        now: DateTime<Utc>,
    ) -> Result<CompanyUser>;
    async fn list_company_users(
        &self,
        tenant: TenantId,
        company: CompanyId,
    ) -> Result<Vec<CompanyUser>>;
    async fn create_ticket(
        &self,
        tenant: TenantId,
        ticket: NewTicket,
        now: DateTime<Utc>,
    ) -> Result<Ticket>;
    async fn get_ticket(&self, tenant: TenantId, id: TicketId) -> Result<Ticket>;
    /// Tickets newest first (by id), after the keyset `before` (an id), optionally of one
    /// company and open/closed only.
    async fn list_tickets(
        &self,
        tenant: TenantId,
        company: Option<CompanyId>,
        closed: Option<bool>,
        before: Option<TicketId>,
        limit: i64,
    ) -> Result<Vec<Ticket>>;
    /// How many tickets [`Store::list_tickets`] pages through (same filters, no keyset).
    async fn count_tickets(
        &self,
        tenant: TenantId,
        company: Option<CompanyId>,
        closed: Option<bool>,
    ) -> Result<i64>;
    async fn add_ticket_note(
        &self,
        tenant: TenantId,
        ticket: TicketId,
        body: &str,
        internal: bool,
        author: &str,
        now: DateTime<Utc>,
    ) -> Result<TicketNote>;
    async fn list_ticket_notes(
        &self,
        tenant: TenantId,
        ticket: TicketId,
    ) -> Result<Vec<TicketNote>>;

    // External links.
    /// Inserts or updates the link keyed by (integration, record kind, external id).
    async fn upsert_link(
        &self,
        tenant: TenantId,
        link: LinkUpsert,
        now: DateTime<Utc>,
    ) -> Result<ExternalLink>;
    async fn find_link(
        &self,
        tenant: TenantId,
        integration: IntegrationId,
        record: LinkedRecord,
        external_id: &str,
    ) -> Result<Option<ExternalLink>>;

    /// The link of portal record `local_id` to integration `integration`, if any.
    async fn find_local_link(
        &self,
        tenant: TenantId,
        integration: IntegrationId,
        record: LinkedRecord,
        local_id: i64,
    ) -> Result<Option<ExternalLink>>;
    /// Every link of one record kind in the tenant, over all its integrations (one query,
    /// for lists that show each record's links).
    async fn links_of_kind(
        &self,
        tenant: TenantId,
        record: LinkedRecord,
    ) -> Result<Vec<ExternalLink>>;

    // Integrations.
    async fn create_integration(
        &self,
        tenant: TenantId,
        new: NewIntegration,
        vault: &Vault,
        now: DateTime<Utc>,
    ) -> Result<Integration>;
    async fn get_integration(&self, tenant: TenantId, id: IntegrationId) -> Result<Integration>;
    async fn list_integrations(&self, tenant: TenantId) -> Result<Vec<Integration>>;
    /// Records a test result and the status it implies.
    async fn record_test(
        &self,
        tenant: TenantId,
        id: IntegrationId,
        report: &TestReport,
        now: DateTime<Utc>,
    ) -> Result<Integration>;
    async fn set_status(
        &self,
        tenant: TenantId,
        id: IntegrationId,
        status: IntegrationStatus,
        last_error: Option<&str>,
        fix_hint: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Integration>;
    async fn rename_integration(
        &self,
        tenant: TenantId,
        id: IntegrationId,
        nickname: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Integration>;
    /// Replaces settings and secrets in one transaction (reconnect, credential update).
    async fn update_credentials(
        &self,
        tenant: TenantId,
        id: IntegrationId,
        update: CredentialUpdate,
        vault: &Vault,
        now: DateTime<Utc>,
    ) -> Result<Integration>;
    /// Decrypts the stored secrets. Only connectors should see the result.
    async fn load_secrets(
        &self,
        tenant: TenantId,
        id: IntegrationId,
        vault: &Vault,
    ) -> Result<BTreeMap<String, SecretString>>;
    /// Removes the stored credentials and marks the integration Disconnected. Synced data stays.
    async fn disconnect_integration(
        &self,
        tenant: TenantId,
        id: IntegrationId,
        now: DateTime<Utc>,
    ) -> Result<Integration>;
    async fn delete_integration(&self, tenant: TenantId, id: IntegrationId) -> Result<()>;
}

/// Opens the store named by `url`: `postgres://…` / `postgresql://…` selects PostgreSQL,
/// `sqlite:…` or a plain file path selects SQLite (created if missing). Migrations are
/// applied before it is returned.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = postgres::PgStore::connect(url).await?;
        store.migrate().await?;
        Ok(Arc::new(store))
    } else {
        let store = sqlite::SqliteStore::connect(url).await?;
        store.migrate().await?;
        Ok(Arc::new(store))
    }
}

/// Applies migrations only (the `migrate` command). Safe to run from several processes at
/// once on PostgreSQL: the migrator holds an advisory lock while it works.
pub async fn migrate(url: &str) -> Result<&'static str> {
    Ok(open(url).await?.backend())
}

/// The stored credentials of an integration (settings in clear, secrets opened), for a connector.
pub async fn load_credentials(
    store: &dyn Store,
    vault: &Vault,
    i: &Integration,
) -> Result<mspbridge_domain::validate::Credentials> {
    use mspbridge_domain::validate::{CredentialValue, Credentials};
    let mut values = BTreeMap::new();
    if let Some(obj) = i.settings.as_object() {
        for (k, v) in obj {
            if let Some(s) = v.as_str() {
                values.insert(k.clone(), CredentialValue::Plain(s.to_string()));
            }
        }
    }
    for (k, v) in store.load_secrets(i.tenant_id, i.id, vault).await? {
        values.insert(k, CredentialValue::Secret(v));
    }
    Ok(Credentials(values))
}

/// Commits on success, rolls back on failure, and returns `r`: a transaction dropped without
/// either keeps its locks on PostgreSQL until the connection is used again.
pub(crate) async fn finish_tx<DB: sqlx::Database, T>(
    tx: sqlx::Transaction<'_, DB>,
    r: Result<T>,
) -> Result<T> {
    match r {
        Ok(v) => {
            tx.commit().await?;
            Ok(v)
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}
