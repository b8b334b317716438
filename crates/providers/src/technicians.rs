//! Capability: writing a portal edit of an imported technician back to its PSA.
//!
//! What each PSA's API lets mspbridge change on its technicians (the table is also in
//! ARCHITECTURE.md and on the Technicians page):
//!
//! | PSA | name | email | active | how |
//! |---|---|---|---|---|
//! | ConnectWise Manage | yes | yes | yes | `PATCH /system/members/{id}` (JSON Patch: `firstName`, `lastName`, `primaryEmail`, `inactiveFlag`) |
//! | Halo PSA | yes | yes | yes | `POST /api/Agent` (array upsert with `id`: `name`, `firstname`, `surname`, `email`, `isdisabled`) |
//! | Autotask | yes | yes | yes | `PATCH /V1.0/Resources` (id in the body: `firstName`, `lastName`, `email`, `isActive`) **[unverified: the API user's security level must allow editing resources]** |
//! | Syncro | no | no | no | `/users` is read-only in Syncro's API: edit the user in Syncro |
//!
//! An update is idempotent (the same values written twice leave the same record), so it
//! needs no outbox: the portal writes it at once and shows the vendor's answer.

use async_trait::async_trait;
use mspbridge_domain::catalogue::ProviderKind;
use serde::Serialize;

pub use crate::tickets::WriteError;

/// Which technician fields a PSA takes from the portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TechnicianCapability {
    pub name: bool,
    pub email: bool,
    pub active: bool,
    /// How the write goes, or why there is none.
    pub how: &'static str,
}

impl TechnicianCapability {
    /// The first of `fields` ("name", "email", "active") the PSA cannot take.
    pub fn refuses<'a>(&self, fields: &[&'a str]) -> Option<&'a str> {
        fields.iter().copied().find(|f| match *f {
            "name" => !self.name,
            "email" => !self.email,
            "active" => !self.active,
            _ => true,
        })
    }
}

/// The capability table.
pub fn capability(kind: ProviderKind) -> Option<TechnicianCapability> {
    let all = |how| TechnicianCapability {
        name: true,
        email: true,
        active: true,
        how,
    };
    match kind {
        ProviderKind::ConnectwiseManage => Some(all("PATCH /system/members/{id}")),
        ProviderKind::HaloPsa => Some(all("POST /api/Agent")),
        ProviderKind::Autotask => Some(all("PATCH /Resources")),
        ProviderKind::Syncro => Some(TechnicianCapability {
            name: false,
            email: false,
            active: false,
            how: "Syncro's API cannot edit users (/users is read-only): change them in Syncro",
        }),
        _ => None,
    }
}

/// The technician as the portal has it after the edit (every field is sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TechnicianUpdate {
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub active: bool,
}

impl TechnicianUpdate {
    /// "Ann Lee Smith" → ("Ann", "Lee Smith").
    pub fn split_name(name: &str) -> (String, String) {
        let name = name.trim();
        match name.split_once(char::is_whitespace) {
            Some((f, l)) => (f.to_string(), l.trim().to_string()),
            None => (name.to_string(), String::new()),
        }
    }
}

#[async_trait]
pub trait TechnicianWriter: Send + Sync {
    /// Writes `u` to the PSA's technician `external_id`.
    async fn update_technician(
        &self,
        external_id: &str,
        u: &TechnicianUpdate,
    ) -> Result<(), WriteError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_and_names() {
        let s = capability(ProviderKind::Syncro).unwrap();
        assert_eq!(s.refuses(&["active", "name"]), Some("active"));
        let c = capability(ProviderKind::ConnectwiseManage).unwrap();
        assert_eq!(c.refuses(&["name", "email", "active"]), None);
        assert!(capability(ProviderKind::DattoRmm).is_none());
        assert_eq!(
            TechnicianUpdate::split_name(" Ann  Lee Smith "),
            ("Ann".into(), "Lee Smith".into())
        );
        assert_eq!(
            TechnicianUpdate::split_name("Cher"),
            ("Cher".into(), String::new())
        );
    }
}
