//! Row types shared by both backends and their conversion into domain types.

use chrono::{DateTime, Utc};
use mspbridge_domain::auth::StaffRole;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::integration::{Integration, IntegrationStatus};
use mspbridge_domain::model::*;
use mspbridge_domain::*;

use crate::{ApiToken, StoreError};

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("unknown {what} '{value}'"))
}

#[derive(sqlx::FromRow)]
pub struct TenantRow {
    pub id: i64,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

impl From<TenantRow> for Tenant {
    fn from(r: TenantRow) -> Self {
        Tenant {
            id: TenantId(r.id),
            name: r.name,
            created_at: r.created_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct StaffRow {
    pub id: i64,
    pub tenant_id: i64,
    pub email: String,
    pub name: String,
    pub role: String,
    pub active: bool,
    pub origin: String,
    pub created_at: DateTime<Utc>,
}

impl TryFrom<StaffRow> for StaffUser {
    type Error = StoreError;
    fn try_from(r: StaffRow) -> Result<Self, StoreError> {
        Ok(StaffUser {
            id: StaffUserId(r.id),
            tenant_id: TenantId(r.tenant_id),
            role: StaffRole::parse(&r.role).ok_or_else(|| corrupt("staff role", &r.role))?,
            origin: Origin::parse(&r.origin).ok_or_else(|| corrupt("origin", &r.origin))?,
            email: r.email,
            name: r.name,
            active: r.active,
            created_at: r.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct TokenRow {
    pub id: i64,
    pub tenant_id: i64,
    pub name: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl TryFrom<TokenRow> for ApiToken {
    type Error = StoreError;
    fn try_from(r: TokenRow) -> Result<Self, StoreError> {
        Ok(ApiToken {
            id: ApiTokenId(r.id),
            tenant_id: TenantId(r.tenant_id),
            role: StaffRole::parse(&r.role).ok_or_else(|| corrupt("token role", &r.role))?,
            name: r.name,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct RoleRow {
    pub id: i64,
    pub tenant_id: i64,
    pub name: String,
    pub description: String,
}

impl From<RoleRow> for Role {
    fn from(r: RoleRow) -> Self {
        Role {
            id: RoleId(r.id),
            tenant_id: TenantId(r.tenant_id),
            name: r.name,
            description: r.description,
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct CompanyRow {
    pub id: i64,
    pub tenant_id: i64,
    pub name: String,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<CompanyRow> for Company {
    fn from(r: CompanyRow) -> Self {
        Company {
            id: CompanyId(r.id),
            tenant_id: TenantId(r.tenant_id),
            name: r.name,
            active: r.active,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct CompanyUserRow {
    pub id: i64,
    pub tenant_id: i64,
    pub company_id: i64,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub first_name: String,
    pub last_name: String,
    pub role_id: i64,
    pub role_reason: Option<String>,
    pub status: String,
    pub origin: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// One type per line.
    pub contact_types: String,
}

impl TryFrom<CompanyUserRow> for CompanyUser {
    type Error = StoreError;
    fn try_from(r: CompanyUserRow) -> Result<Self, StoreError> {
        Ok(CompanyUser {
            id: CompanyUserId(r.id),
            tenant_id: TenantId(r.tenant_id),
            company_id: CompanyId(r.company_id),
            status: UserStatus::parse(&r.status)
                .ok_or_else(|| corrupt("user status", &r.status))?,
            origin: Origin::parse(&r.origin).ok_or_else(|| corrupt("origin", &r.origin))?,
            email: r.email,
            phone: r.phone,
            first_name: r.first_name,
            last_name: r.last_name,
            role_id: RoleId(r.role_id),
            role_reason: r.role_reason,
            contact_types: r
                .contact_types
                .lines()
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct TicketRow {
    pub id: i64,
    pub tenant_id: i64,
    pub company_id: i64,
    pub summary: String,
    pub description: String,
    pub status: String,
    pub priority: Option<String>,
    pub closed: bool,
    pub board: Option<String>,
    pub ticket_type: Option<String>,
    pub contact_id: Option<i64>,
    pub assignee_id: Option<i64>,
    pub closed_at: Option<DateTime<Utc>>,
    pub psa_status: Option<String>,
    pub removed_upstream_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The columns `TicketRow` reads, in every ticket query.
pub const TICKET_COLUMNS: &str = "id, tenant_id, company_id, summary, description, status, priority, closed, board, ticket_type, \
    contact_id, assignee_id, closed_at, psa_status, removed_upstream_at, created_at, updated_at";

/// The columns `NoteRow` reads.
pub const NOTE_COLUMNS: &str = "id, ticket_id, body, internal, author, origin, created_at";

impl From<TicketRow> for Ticket {
    fn from(r: TicketRow) -> Self {
        Ticket {
            id: TicketId(r.id),
            tenant_id: TenantId(r.tenant_id),
            company_id: CompanyId(r.company_id),
            summary: r.summary,
            description: r.description,
            status: r.status,
            priority: r.priority,
            closed: r.closed,
            board: r.board,
            ticket_type: r.ticket_type,
            contact_id: r.contact_id.map(mspbridge_domain::CompanyUserId),
            assignee_id: r.assignee_id.map(mspbridge_domain::StaffUserId),
            closed_at: r.closed_at,
            psa_status: r.psa_status,
            removed_upstream_at: r.removed_upstream_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct NoteRow {
    pub id: i64,
    pub ticket_id: i64,
    pub body: String,
    pub internal: bool,
    pub author: String,
    pub origin: String,
    pub created_at: DateTime<Utc>,
}

impl From<NoteRow> for TicketNote {
    fn from(r: NoteRow) -> Self {
        TicketNote {
            id: TicketNoteId(r.id),
            ticket_id: TicketId(r.ticket_id),
            body: r.body,
            internal: r.internal,
            author: r.author,
            origin: r.origin,
            created_at: r.created_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct LinkRow {
    pub id: i64,
    pub integration_id: i64,
    pub record_kind: String,
    pub local_id: i64,
    pub external_id: String,
    pub remote_updated_at: Option<DateTime<Utc>>,
    pub content_hash: String,
    pub gone_upstream_at: Option<DateTime<Utc>>,
}

impl TryFrom<LinkRow> for ExternalLink {
    type Error = StoreError;
    fn try_from(r: LinkRow) -> Result<Self, StoreError> {
        Ok(ExternalLink {
            id: ExternalLinkId(r.id),
            integration_id: IntegrationId(r.integration_id),
            record: LinkedRecord::parse(&r.record_kind)
                .ok_or_else(|| corrupt("record kind", &r.record_kind))?,
            local_id: r.local_id,
            external_id: r.external_id,
            remote_updated_at: r.remote_updated_at,
            content_hash: r.content_hash,
            gone_upstream_at: r.gone_upstream_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct IntegrationRow {
    pub id: i64,
    pub tenant_id: i64,
    pub provider: String,
    pub nickname: Option<String>,
    pub status: String,
    pub last_error: Option<String>,
    pub fix_hint: Option<String>,
    pub settings: String,
    pub last_test: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TryFrom<IntegrationRow> for Integration {
    type Error = StoreError;
    fn try_from(r: IntegrationRow) -> Result<Self, StoreError> {
        Ok(Integration {
            id: IntegrationId(r.id),
            tenant_id: TenantId(r.tenant_id),
            provider: ProviderKind::from_slug(&r.provider)
                .ok_or_else(|| corrupt("provider", &r.provider))?,
            status: IntegrationStatus::parse(&r.status)
                .ok_or_else(|| corrupt("status", &r.status))?,
            nickname: r.nickname,
            last_error: r.last_error,
            fix_hint: r.fix_hint,
            settings: serde_json::from_str(&r.settings)
                .map_err(|e| StoreError::Corrupt(format!("integration settings: {e}")))?,
            last_test: match r.last_test {
                Some(t) => Some(
                    serde_json::from_str(&t)
                        .map_err(|e| StoreError::Corrupt(format!("last test: {e}")))?,
                ),
                None => None,
            },
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}
