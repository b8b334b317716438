//! Capabilities of cloud tenant providers (Microsoft 365): reading one customer tenant's
//! organization, users (by delta after the first full read), groups, licences and
//! Secure Score, and listing a partner's customer tenants. One connector serves every
//! tenant its app is consented in; every call names the tenant it reads.

use async_trait::async_trait;
use mspbridge_domain::m365::{
    ControlProfile, CustomerTenant, ScoreSnapshot, TenantGroup, TenantLicence, TenantOrg,
    TenantStatus, TenantUser,
};

#[derive(Debug, Clone, thiserror::Error)]
pub enum CloudError {
    /// The tenant cannot be read until the admin acts; `status` says what to fix.
    #[error("{message}")]
    Tenant {
        status: TenantStatus,
        message: String,
    },
    /// A delta link the vendor no longer knows: read everything again.
    #[error("the change feed expired ({0}); reading everything again")]
    DeltaExpired(String),
    /// Anything else (the vendor's words); retried at the next run.
    #[error("{0}")]
    Other(String),
}

/// What one read of a collection gave: records, and records that could not be read.
#[derive(Debug, Clone)]
pub struct Read<T> {
    pub records: Vec<T>,
    /// `id: reason` of each value that did not read.
    pub rejected: Vec<String>,
}

/// Users read in full (`full`) or as changes since a delta link.
#[derive(Debug, Clone)]
pub struct UsersRead {
    pub users: Vec<TenantUser>,
    /// Ids of users removed since the delta link.
    pub removed: Vec<String>,
    pub rejected: Vec<String>,
    pub full: bool,
    /// Where the next read starts.
    pub delta_link: Option<String>,
}

/// Secure Score snapshots, newest first; `partial` when the vendor said the answer was
/// incomplete (the snapshot must not replace a good one).
#[derive(Debug, Clone)]
pub struct ScoresRead {
    pub snapshots: Vec<ScoreSnapshot>,
    pub rejected: Vec<String>,
    pub partial: Option<String>,
}

#[async_trait]
pub trait CloudTenantSource: Send + Sync {
    async fn organization(&self, tenant: &str) -> Result<TenantOrg, CloudError>;
    /// Every user when `delta_link` is `None`, else the changes since it.
    async fn users(&self, tenant: &str, delta_link: Option<&str>) -> Result<UsersRead, CloudError>;
    async fn groups(&self, tenant: &str) -> Result<Read<TenantGroup>, CloudError>;
    async fn licences(&self, tenant: &str) -> Result<Read<TenantLicence>, CloudError>;
    /// The newest `days` daily snapshots.
    async fn secure_scores(&self, tenant: &str, days: usize) -> Result<ScoresRead, CloudError>;
    async fn control_profiles(&self, tenant: &str) -> Result<Read<ControlProfile>, CloudError>;
    /// The customer tenants of a partner tenant (GDAP relationships), names and default
    /// domains resolved.
    async fn customer_tenants(
        &self,
        partner_tenant: &str,
    ) -> Result<Vec<CustomerTenant>, CloudError>;
    /// Requests made so far (tokens included) and bytes read.
    fn requests(&self) -> u64;
    fn bytes(&self) -> u64;
}
