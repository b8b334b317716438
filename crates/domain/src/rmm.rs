//! RMM records as the sync engine sees them, normalised from any RMM (Datto RMM sites,
//! devices and alerts; ConnectWise Asio companies/sites and endpoints): every vendor field
//! may be missing, enum values are kept as the vendor spelled them, and timestamps are
//! UTC. Pure: no IO.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::catalogue::ProviderKind;
use crate::sync::StripNul;

/// A PSA company an RMM record names as its own (Datto: a site's `autotaskCompanyId`;
/// Asio: a company's `externalIds`). The engine links the RMM site to the portal company
/// already linked to that PSA company.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PsaIdentity {
    pub provider: ProviderKind,
    pub external_id: String,
    /// The PSA's name for it, when the RMM gives one (for the log line).
    pub name: Option<String>,
}

/// A site (Datto) or company (Asio): the RMM's unit that maps onto a portal company.
/// RMM sites never create portal companies; they are linked (identity, Quick Match or by
/// hand) on the mapping grid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExtSite {
    pub external_id: String,
    pub name: String,
    pub description: Option<String>,
    pub device_count: Option<i64>,
    pub online_count: Option<i64>,
    pub offline_count: Option<i64>,
    pub identity: Option<PsaIdentity>,
    pub portal_url: Option<String>,
    /// False for a site the vendor marks deleted/inactive (Datto has no such flag: true).
    pub active: bool,
}

/// Patch state of a device as the RMM reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PatchState {
    /// Vendor status word kept as sent (Datto: `FullyPatched`, `RebootRequired`, …).
    pub status: Option<String>,
    pub approved_pending: Option<i64>,
    pub not_approved: Option<i64>,
    pub installed: Option<i64>,
}

/// A device (Datto device, Asio endpoint).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExtDevice {
    /// The vendor's stable id (Datto `uid`, Asio `endpointId`).
    pub external_id: String,
    /// The site (Datto `siteUid`) or company (Asio) the device belongs to.
    pub site_external_id: Option<String>,
    /// The site inside that company, where the RMM has one (Asio `siteId`): reading the
    /// device alone names it.
    pub sub_site: Option<String>,
    pub hostname: String,
    /// Provider type (Datto `deviceType.type`, e.g. "Laptop", "Virtual Machine").
    pub device_type: Option<String>,
    /// Provider category (Datto `deviceType.category`, e.g. "Desktop", "Server").
    pub category: Option<String>,
    /// Datto `deviceClass` (device, printer, esxihost, rmmnetworkdevice, …) kept as sent.
    pub device_class: Option<String>,
    pub operating_system: Option<String>,
    pub online: Option<bool>,
    pub last_seen: Option<DateTime<Utc>>,
    pub last_reboot: Option<DateTime<Utc>>,
    pub last_audit: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
    pub reboot_required: Option<bool>,
    pub suspended: Option<bool>,
    /// Deleted upstream (Datto `deleted`): treated like a device gone from the list.
    pub deleted: bool,
    pub agent_version: Option<String>,
    pub internal_ip: Option<String>,
    pub external_ip: Option<String>,
    pub domain: Option<String>,
    pub last_user: Option<String>,
    pub antivirus_product: Option<String>,
    /// Vendor status word kept as sent (Datto: `RunningAndUpToDate`, `NotDetected`, …).
    pub antivirus_status: Option<String>,
    pub patch: PatchState,
    pub warranty_date: Option<NaiveDate>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub serial_number: Option<String>,
    pub portal_url: Option<String>,
    /// User-defined fields by name (`udf1` … `udf300`), non-empty values only. They often
    /// hold customer data: never logged.
    pub udfs: BTreeMap<String, String>,
}

impl ExtDevice {
    /// The content hash that decides whether a sweep writes the device. `last_seen` counts
    /// to the hour: an online device's last contact moves every few minutes, and rewriting
    /// every online device on every sweep would make a 5-minute interval write the whole
    /// fleet; the hour still shows when a device went quiet (with `online`, which counts at
    /// once), and the device page's Refresh reads the exact time.
    pub fn change_hash(&self) -> String {
        let coarse = Self {
            last_seen: self.last_seen.and_then(|t| {
                DateTime::from_timestamp(t.timestamp() - t.timestamp().rem_euclid(3_600), 0)
            }),
            ..self.clone()
        };
        crate::sync::content_hash(&coarse)
    }
}

/// Which device to read alone: its id, its site (Datto) or company (Asio), and the site
/// inside that company (Asio).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceKey {
    pub external_id: String,
    pub site_external_id: Option<String>,
    pub sub_site: Option<String>,
}

/// A device's patch summary as its RMM reports it (Asio `summary` of
/// `/patching/{endpointId}/patches`; Datto's patch management state).
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct PatchSummary {
    /// Vendor status word kept as sent (Datto `FullyPatched`…), if any.
    pub status: Option<String>,
    /// Applicable patches not installed (Asio `missingCount`).
    pub missing: Option<i64>,
    /// Approved, waiting to be installed (Datto `patchesApprovedPending`).
    pub approved_pending: Option<i64>,
    /// Not approved by the patch policy (Datto `patchesNotApproved`).
    pub not_approved: Option<i64>,
    pub installed: Option<i64>,
    pub pending_reboot: Option<i64>,
    /// Percent of applicable patches installed (Asio `compliance`).
    pub compliance: Option<f64>,
    pub policy: Option<String>,
    pub assessed_at: Option<DateTime<Utc>>,
}

/// What an RMM says of one device read alone (the device page's Refresh): its state now,
/// its patch summary and facts the sweep's list does not carry (hardware, users, agent).
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct DeviceRefresh {
    pub online: Option<bool>,
    pub last_seen: Option<DateTime<Utc>>,
    pub patch: Option<PatchSummary>,
    /// Why the patch summary is missing, in words ("Asio has no patch data for this
    /// device").
    pub patch_note: Option<String>,
    /// (label, value) in the order the page shows them.
    pub facts: Vec<(String, String)>,
}

/// A monitoring alert.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExtAlert {
    pub external_id: String,
    /// Critical, High, Moderate, Low, Information, Unknown — or whatever the vendor sent.
    pub priority: String,
    pub diagnostics: Option<String>,
    pub device_external_id: Option<String>,
    pub device_name: Option<String>,
    pub site_external_id: Option<String>,
    pub resolved: bool,
    pub resolved_by: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub muted: Option<bool>,
    pub ticket_number: Option<String>,
    pub raised_at: Option<DateTime<Utc>>,
    /// The context's type tag (Datto's Jackson `@class`, e.g. `patch_ctx`).
    pub context_type: Option<String>,
    /// The context as the vendor sent it (canonical JSON text).
    pub context: Option<String>,
}

impl ExtAlert {
    /// Priorities in the order an alerts view sorts them (unknown words last).
    pub fn priority_rank(priority: &str) -> u8 {
        match priority.to_ascii_lowercase().as_str() {
            "critical" => 0,
            "high" => 1,
            "moderate" | "medium" => 2,
            "low" => 3,
            "information" | "informational" => 4,
            _ => 5,
        }
    }
}

impl StripNul for ExtSite {
    fn strip_nul(&mut self) -> bool {
        self.external_id.strip_nul()
            | self.name.strip_nul()
            | self.description.strip_nul()
            | self.portal_url.strip_nul()
    }
}

impl StripNul for ExtDevice {
    fn strip_nul(&mut self) -> bool {
        let mut hit = self.external_id.strip_nul()
            | self.site_external_id.strip_nul()
            | self.sub_site.strip_nul()
            | self.hostname.strip_nul()
            | self.device_type.strip_nul()
            | self.category.strip_nul()
            | self.device_class.strip_nul()
            | self.operating_system.strip_nul()
            | self.agent_version.strip_nul()
            | self.internal_ip.strip_nul()
            | self.external_ip.strip_nul()
            | self.domain.strip_nul()
            | self.last_user.strip_nul()
            | self.antivirus_product.strip_nul()
            | self.antivirus_status.strip_nul()
            | self.patch.status.strip_nul()
            | self.manufacturer.strip_nul()
            | self.model.strip_nul()
            | self.serial_number.strip_nul()
            | self.portal_url.strip_nul();
        let udfs = std::mem::take(&mut self.udfs);
        for (mut k, mut v) in udfs {
            hit |= k.strip_nul() | v.strip_nul();
            self.udfs.insert(k, v);
        }
        hit
    }
}

impl StripNul for ExtAlert {
    fn strip_nul(&mut self) -> bool {
        self.external_id.strip_nul()
            | self.priority.strip_nul()
            | self.diagnostics.strip_nul()
            | self.device_external_id.strip_nul()
            | self.device_name.strip_nul()
            | self.site_external_id.strip_nul()
            | self.resolved_by.strip_nul()
            | self.ticket_number.strip_nul()
            | self.context_type.strip_nul()
            | self.context.strip_nul()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_seen_moving_within_the_hour_is_no_change_but_online_and_the_hour_are() {
        let at = |s: &str| Some(DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc));
        let d = ExtDevice {
            external_id: "d1".into(),
            hostname: "PC-1".into(),
            online: Some(true),
            last_seen: at("2026-12-03T10:05:00Z"),
            ..Default::default()
        };
        let later = ExtDevice {
            last_seen: at("2026-12-03T10:55:00Z"),
            ..d.clone()
        };
        assert_eq!(d.change_hash(), later.change_hash());
        let next_hour = ExtDevice {
            last_seen: at("2026-12-03T11:01:00Z"),
            ..d.clone()
        };
        assert_ne!(d.change_hash(), next_hour.change_hash());
        let offline = ExtDevice {
            online: Some(false),
            ..d.clone()
        };
        assert_ne!(d.change_hash(), offline.change_hash());
    }
}
