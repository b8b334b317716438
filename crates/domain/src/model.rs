//! The portal's core records: tenants (one per MSP), client companies and their users,
//! staff (technicians), portal roles, tickets with notes, company defaults, and the
//! link from every synced record to its external source.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::auth::StaffRole;
use crate::ids::*;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Company {
    pub id: CompanyId,
    pub tenant_id: TenantId,
    pub name: String,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A portal role given to client contacts ("Admin", "Standard User", "Viewer", ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Role {
    pub id: RoleId,
    pub tenant_id: TenantId,
    pub name: String,
    pub description: String,
}

/// The roles every new tenant starts with.
pub const BUILTIN_ROLES: [(&str, &str); 3] = [
    (
        "Admin",
        "Manages the company's users and sees all its tickets.",
    ),
    ("Standard User", "Raises and follows their own tickets."),
    ("Viewer", "Read-only access; the least privilege."),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    Active,
    Disabled,
    /// Created by an import and not yet signed in.
    Imported,
}

impl UserStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Disabled => "disabled",
            UserStatus::Imported => "imported",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Active, Self::Disabled, Self::Imported]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// Who created a record: an admin by hand, or a sync/import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Manual,
    Import,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Manual => "manual",
            Origin::Import => "import",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Manual, Self::Import]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// A client contact with portal access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CompanyUser {
    pub id: CompanyUserId,
    pub tenant_id: TenantId,
    pub company_id: CompanyId,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub first_name: String,
    pub last_name: String,
    pub role_id: RoleId,
    /// Why this role was chosen (which link of the import fallback chain), for imported users.
    pub role_reason: Option<String>,
    /// The contact types the user has in its PSA, as last synced (empty for manual users).
    pub contact_types: Vec<String>,
    pub status: UserStatus,
    pub origin: Origin,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An MSP staff member (technician or admin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StaffUser {
    pub id: StaffUserId,
    pub tenant_id: TenantId,
    pub email: String,
    pub name: String,
    pub role: StaffRole,
    pub active: bool,
    pub origin: Origin,
    pub created_at: DateTime<Utc>,
}

/// Per-company settings; `default_import_role` overrides the whole fallback chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CompanyDefaults {
    pub company_id: CompanyId,
    pub default_import_role: Option<RoleId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Ticket {
    pub id: TicketId,
    pub tenant_id: TenantId,
    pub company_id: CompanyId,
    pub summary: String,
    pub description: String,
    pub status: String,
    pub priority: Option<String>,
    pub closed: bool,
    /// Board (ConnectWise), queue (Autotask), team (Halo), as the PSA names it.
    pub board: Option<String>,
    pub ticket_type: Option<String>,
    /// The portal user linked to the PSA ticket's contact.
    pub contact_id: Option<CompanyUserId>,
    /// The staff user linked to the PSA ticket's assignee.
    pub assignee_id: Option<StaffUserId>,
    pub closed_at: Option<DateTime<Utc>>,
    /// The status the PSA had when last read or written (`None`: never read from a PSA).
    pub psa_status: Option<String>,
    /// Deleted in the PSA (seen missing by a complete pass): kept, not lost.
    pub removed_upstream_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TicketNote {
    pub id: TicketNoteId,
    pub ticket_id: TicketId,
    pub body: String,
    /// Internal notes are visible to staff only.
    pub internal: bool,
    pub author: String,
    /// `portal` (written here) or `import` (read from the PSA).
    pub origin: String,
    pub created_at: DateTime<Utc>,
}

/// The kinds of portal record that can be linked to an external record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LinkedRecord {
    Company,
    CompanyUser,
    StaffUser,
    Ticket,
    TicketNote,
    Device,
    Alert,
    Invoice,
    Subscription,
    Payment,
}

impl LinkedRecord {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkedRecord::Company => "company",
            LinkedRecord::CompanyUser => "company_user",
            LinkedRecord::StaffUser => "staff_user",
            LinkedRecord::Ticket => "ticket",
            LinkedRecord::TicketNote => "ticket_note",
            LinkedRecord::Device => "device",
            LinkedRecord::Alert => "alert",
            LinkedRecord::Invoice => "invoice",
            LinkedRecord::Subscription => "subscription",
            LinkedRecord::Payment => "payment",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Company,
            Self::CompanyUser,
            Self::StaffUser,
            Self::Ticket,
            Self::TicketNote,
            Self::Device,
            Self::Alert,
            Self::Invoice,
            Self::Subscription,
            Self::Payment,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// The link between a portal record and the vendor record it was synced from.
/// Unique per (integration, record kind, external id): this is what makes syncs idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExternalLink {
    pub id: ExternalLinkId,
    pub integration_id: IntegrationId,
    pub record: LinkedRecord,
    pub local_id: i64,
    pub external_id: String,
    /// The vendor's last-updated stamp for the record, as last seen.
    pub remote_updated_at: Option<DateTime<Utc>>,
    /// Hash of the mapped content; an unchanged hash means no write.
    pub content_hash: String,
    /// Set when the record disappeared upstream and the portal record was deactivated.
    pub gone_upstream_at: Option<DateTime<Utc>>,
}
