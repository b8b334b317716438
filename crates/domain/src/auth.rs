//! Staff roles and the permission levels of spec 2.24 (Read < Write < Manage).

use serde::{Deserialize, Serialize};

/// Permission level on a settings area. `Manage` includes `Write`, which includes `Read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    Read,
    Write,
    Manage,
}

/// The role of an MSP staff member or an API token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StaffRole {
    /// Primary Admin: always full access.
    Owner,
    /// Manage on integration settings: connect, configure, disconnect, credential tests.
    Admin,
    /// Write on integration settings: resync, import, rename, company links.
    Technician,
    /// Read on integration settings: see connections and their status.
    ReadOnly,
}

impl StaffRole {
    pub const ALL: [StaffRole; 4] = [
        StaffRole::Owner,
        StaffRole::Admin,
        StaffRole::Technician,
        StaffRole::ReadOnly,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StaffRole::Owner => "owner",
            StaffRole::Admin => "admin",
            StaffRole::Technician => "technician",
            StaffRole::ReadOnly => "read_only",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Highest permission this role holds on Settings → Integrations.
    pub fn integration_permission(self) -> Permission {
        match self {
            StaffRole::Owner | StaffRole::Admin => Permission::Manage,
            StaffRole::Technician => Permission::Write,
            StaffRole::ReadOnly => Permission::Read,
        }
    }

    pub fn allows(self, needed: Permission) -> bool {
        self.integration_permission() >= needed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_ordered_and_inclusive() {
        assert!(StaffRole::Owner.allows(Permission::Manage));
        assert!(StaffRole::Admin.allows(Permission::Write));
        assert!(StaffRole::Technician.allows(Permission::Write));
        assert!(!StaffRole::Technician.allows(Permission::Manage));
        assert!(StaffRole::ReadOnly.allows(Permission::Read));
        assert!(!StaffRole::ReadOnly.allows(Permission::Write));
    }

    #[test]
    fn role_names_round_trip() {
        for r in StaffRole::ALL {
            assert_eq!(StaffRole::parse(r.as_str()), Some(r));
        }
        assert_eq!(StaffRole::parse("superuser"), None);
    }
}
