//! Datto RMM as an [`RmmSource`]: sites, devices and open alerts of the account, pages of
//! `max` records (the account's page size from `GET /v2/system/pagination`, read once per
//! source, or [`DattoSource::with_page_size`]) walked by Datto's own `nextPageUrl`, which
//! is the opaque next-page token (its host checked before it is followed). Each row is
//! read on its own: a row that cannot be read is rejected with its uid and the field at
//! fault, never the page. And the [`AlertWriter`]: `POST /v2/alert/{alertUid}/resolve`.

use async_trait::async_trait;
use reqwest::Method;
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;

use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::rmm::{
    DeviceKey, DeviceRefresh, ExtAlert, ExtDevice, ExtSite, PatchState, PatchSummary, PsaIdentity,
};

use super::client::{DattoClient, DattoError};
use super::wire::{Alert, Device, PaginationConfiguration, RawPage, Site, day, utc};
use crate::rmm::{AlertWriter, RmmSource, RmmWriteError};
use crate::source::{PageRequest, Rejected, SourceError, SourcePage, field_error};

/// Datto's documented default page size, used when the account's cannot be read.
pub const DEFAULT_PAGE_SIZE: usize = 50;

/// Where a Datto admin changes what the API user may see.
pub const PERMISSION_SETTING: &str = "Setup > Users > (the API user) > Security Level: allow viewing sites, devices and alerts; and Setup > Global Settings > Access Control > Enable API Access";

pub struct DattoSource {
    client: DattoClient,
    page_size: OnceCell<usize>,
}

impl DattoSource {
    pub fn new(client: DattoClient) -> Self {
        Self {
            client,
            page_size: OnceCell::new(),
        }
    }

    /// Reads `n` records per page instead of the account's page size.
    pub fn with_page_size(self, n: usize) -> Self {
        Self {
            page_size: OnceCell::new_with(Some(n.max(1))),
            ..self
        }
    }

    pub fn client(&self) -> &DattoClient {
        &self.client
    }

    /// The page size: the override, else the account's (`/v2/system/pagination`, read
    /// once), else Datto's default of 50.
    pub async fn page_size(&self) -> Result<usize, SourceError> {
        self.page_size
            .get_or_try_init(|| async {
                let p: PaginationConfiguration = self
                    .client
                    .get("/api/v2/system/pagination", "the pagination settings")
                    .await
                    .map_err(source_error)?;
                Ok(p.max
                    .filter(|m| *m > 0)
                    .map_or(DEFAULT_PAGE_SIZE, |m| m as usize))
            })
            .await
            .copied()
    }

    async fn page<W, T>(
        &self,
        path: &str,
        what: &str,
        req: &PageRequest,
        convert: impl Fn(W) -> Result<T, String>,
    ) -> Result<SourcePage<T>, SourceError>
    where
        W: DeserializeOwned,
    {
        let path_and_query = match &req.after {
            Some(next) => self.client.follow(next).map_err(source_error)?,
            None => {
                // Each list starts by asking how much of the account's window other tools
                // use (the limit is per account, not per key).
                self.client
                    .observe_account_rate()
                    .await
                    .map_err(source_error)?;
                format!("{path}?max={}&page=0", self.page_size().await?)
            }
        };
        let page: RawPage = self
            .client
            .get(&path_and_query, what)
            .await
            .map_err(source_error)?;
        let rows = page.items.unwrap_or_default();
        let empty = rows.is_empty();
        let (records, rejected) = read_rows(rows, convert);
        let next = page
            .page_details
            .and_then(|d| d.next_page_url)
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            // An empty page naming a next one would never end: the list is done.
            .filter(|_| !empty);
        Ok(SourcePage {
            records,
            rejected,
            next,
        })
    }
}

/// What went wrong, for the engine: credentials, a permission (or an IP block), or
/// Datto being unavailable.
pub fn source_error(e: DattoError) -> SourceError {
    match e {
        DattoError::Token {
            ref error,
            ref message,
            ..
        } => SourceError::Auth(format!(
            "Datto RMM refused the API key and secret ({error}: {message}). Generate new keys under Setup > Users > (the API user) > Generate API Keys, check that API access is enabled (Setup > Global Settings > Access Control) and that the platform or API URL is the one shown next to the keys."
        )),
        DattoError::Status { status: 401, .. } => SourceError::Auth(format!(
            "Datto RMM refused the API token even after a new grant: {}. Check that the API user is not disabled.",
            e.vendor_message()
        )),
        DattoError::Forbidden { .. } => SourceError::NotPermitted {
            message: e.to_string(),
            setting: PERMISSION_SETTING.to_string(),
        },
        DattoError::Refused(m) if m.contains("budget") => SourceError::Budget(m),
        other => SourceError::Unavailable(other.to_string()),
    }
}

/// The row's id for a rejection: `uid`, `alertUid`, else the numeric `id`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RowId {
    #[serde(default)]
    uid: Option<serde_json::Value>,
    #[serde(default)]
    alert_uid: Option<serde_json::Value>,
    #[serde(default)]
    id: Option<serde_json::Value>,
}

fn row_id(raw: &str) -> Option<String> {
    let r: RowId = serde_json::from_str(raw).ok()?;
    [r.uid, r.alert_uid, r.id]
        .into_iter()
        .flatten()
        .find_map(|v| match v {
            serde_json::Value::String(s) if !s.is_empty() => Some(s),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
}

/// Reads rows one by one: the wire type first (a field's value wrong for its type names
/// the field), then the record (a row without its uid).
fn read_rows<W: DeserializeOwned, T>(
    rows: Vec<Box<serde_json::value::RawValue>>,
    convert: impl Fn(W) -> Result<T, String>,
) -> (Vec<T>, Vec<Rejected>) {
    let mut records = Vec::with_capacity(rows.len());
    let mut rejected = Vec::new();
    for row in rows {
        let mut de = serde_json::Deserializer::from_str(row.get());
        let read = serde_path_to_error::deserialize::<_, W>(&mut de)
            .map_err(|e| field_error(&e))
            .and_then(&convert);
        match read {
            Ok(r) => records.push(r),
            Err(reason) => rejected.push(Rejected {
                external_id: row_id(row.get()),
                reason,
            }),
        }
    }
    (records, rejected)
}

fn missing(field: &str) -> String {
    format!("field `{field}`: missing (Datto RMM sent no {field})")
}

/// A site as the engine sees it; its Autotask company, when Datto's Autotask integration
/// set one, is its PSA identity.
pub fn site(s: Site) -> Result<ExtSite, String> {
    let external_id = s.uid.ok_or_else(|| missing("uid"))?;
    let status = s.devices_status.unwrap_or_default();
    Ok(ExtSite {
        external_id,
        name: s.name.unwrap_or_default(),
        description: s.description.filter(|d| !d.is_empty()),
        device_count: status.number_of_devices,
        online_count: status.number_of_online_devices,
        offline_count: status.number_of_offline_devices,
        identity: s.autotask_company_id.map(|id| PsaIdentity {
            provider: ProviderKind::Autotask,
            external_id: id,
            name: s.autotask_company_name.filter(|n| !n.is_empty()),
        }),
        portal_url: s.portal_url.filter(|u| !u.is_empty()),
        active: true,
    })
}

pub fn device(d: Device) -> Result<ExtDevice, String> {
    let external_id = d.uid.ok_or_else(|| missing("uid"))?;
    let kind = d.device_type.unwrap_or_default();
    let av = d.antivirus.unwrap_or_default();
    let patch = d.patch_management.unwrap_or_default();
    Ok(ExtDevice {
        external_id,
        site_external_id: d.site_uid,
        sub_site: None,
        hostname: d.hostname.unwrap_or_default(),
        device_type: kind.kind,
        category: kind.category,
        device_class: d.device_class,
        operating_system: d.operating_system,
        online: d.online,
        last_seen: utc(d.last_seen),
        last_reboot: utc(d.last_reboot),
        last_audit: utc(d.last_audit_date),
        created_at: utc(d.creation_date),
        reboot_required: d.reboot_required,
        suspended: d.suspended,
        deleted: d.deleted.unwrap_or(false),
        agent_version: d.display_version.or(d.cag_version),
        internal_ip: d.int_ip_address,
        external_ip: d.ext_ip_address,
        domain: d.domain,
        last_user: d.last_logged_in_user,
        antivirus_product: av.antivirus_product,
        antivirus_status: av.antivirus_status,
        patch: PatchState {
            status: patch.patch_status,
            approved_pending: patch.patches_approved_pending,
            not_approved: patch.patches_not_approved,
            installed: patch.patches_installed,
        },
        warranty_date: day(d.warranty_date.as_deref()),
        manufacturer: d.manufacturer,
        model: d.model,
        serial_number: d.serial_number,
        portal_url: d.portal_url,
        udfs: d.udf.unwrap_or_default(),
    })
}

/// A device read alone as the page's Refresh shows it: state now, patch counts, facts.
pub fn refresh_of(d: ExtDevice) -> DeviceRefresh {
    let fmt_time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
    };
    let facts: Vec<(String, Option<String>)> = vec![
        ("Operating system".into(), d.operating_system.clone()),
        ("Manufacturer".into(), d.manufacturer.clone()),
        ("Model".into(), d.model.clone()),
        ("Serial number".into(), d.serial_number.clone()),
        ("Domain".into(), d.domain.clone()),
        ("Internal IP".into(), d.internal_ip.clone()),
        ("External IP".into(), d.external_ip.clone()),
        ("Last user".into(), d.last_user.clone()),
        ("Agent version".into(), d.agent_version.clone()),
        (
            "Antivirus".into(),
            match (&d.antivirus_product, &d.antivirus_status) {
                (Some(p), Some(s)) => Some(format!("{p} ({s})")),
                (p, s) => p.clone().or(s.clone()),
            },
        ),
        ("Last reboot".into(), fmt_time(d.last_reboot)),
        ("Last audit".into(), fmt_time(d.last_audit)),
        (
            "Reboot required".into(),
            d.reboot_required
                .map(|r| if r { "yes" } else { "no" }.to_string()),
        ),
        (
            "Warranty until".into(),
            d.warranty_date.map(|w| w.to_string()),
        ),
    ];
    let p = &d.patch;
    let has_patch = p.status.is_some()
        || p.installed.is_some()
        || p.approved_pending.is_some()
        || p.not_approved.is_some();
    DeviceRefresh {
        online: d.online,
        last_seen: d.last_seen,
        patch: has_patch.then(|| PatchSummary {
            status: p.status.clone(),
            missing: None,
            approved_pending: p.approved_pending,
            not_approved: p.not_approved,
            installed: p.installed,
            pending_reboot: None,
            compliance: None,
            policy: None,
            assessed_at: None,
        }),
        patch_note: (!has_patch)
            .then(|| "Datto RMM reports no patch management for this device".to_string()),
        facts: facts
            .into_iter()
            .filter_map(|(k, v)| v.filter(|v| !v.is_empty()).map(|v| (k, v)))
            .collect(),
    }
}

pub fn alert(a: Alert) -> Result<ExtAlert, String> {
    let external_id = a.alert_uid.clone().ok_or_else(|| missing("alertUid"))?;
    let context_type = a.context_class().map(str::to_string);
    let source = a.alert_source_info.unwrap_or_default();
    Ok(ExtAlert {
        external_id,
        priority: a
            .priority
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "Unknown".into()),
        diagnostics: a.diagnostics,
        device_external_id: source.device_uid,
        device_name: source.device_name,
        site_external_id: source.site_uid,
        resolved: a.resolved.unwrap_or(false),
        resolved_by: a.resolved_by,
        resolved_at: utc(a.resolved_on),
        muted: a.muted,
        ticket_number: a.ticket_number,
        raised_at: utc(a.timestamp),
        context_type,
        context: a
            .alert_context
            .filter(|c| !c.is_null())
            .map(|c| c.to_string()),
    })
}

#[async_trait]
impl RmmSource for DattoSource {
    async fn sites(&self, req: &PageRequest) -> Result<SourcePage<ExtSite>, SourceError> {
        self.page("/api/v2/account/sites", "sites", req, site).await
    }

    async fn devices(&self, req: &PageRequest) -> Result<SourcePage<ExtDevice>, SourceError> {
        self.page("/api/v2/account/devices", "devices", req, device)
            .await
    }

    async fn open_alerts(&self, req: &PageRequest) -> Result<SourcePage<ExtAlert>, SourceError> {
        self.page("/api/v2/account/alerts/open", "alerts", req, alert)
            .await
    }

    fn reads_single_alerts(&self) -> bool {
        true
    }

    /// `GET /api/v2/alert/{alertUid}`: who resolved it and when.
    async fn alert(&self, id: &str) -> Result<Option<ExtAlert>, SourceError> {
        let path = format!("/api/v2/alert/{}", path_segment(id));
        match self.client.get::<Alert>(&path, "alerts").await {
            Ok(a) => Ok(alert(a).ok()),
            Err(DattoError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(source_error(e)),
        }
    }

    /// `GET /api/v2/device/{deviceUid}`: the device as Datto has it now.
    async fn device_refresh(&self, key: &DeviceKey) -> Result<DeviceRefresh, SourceError> {
        let uid = &key.external_id;
        let path = format!("/api/v2/device/{}", path_segment(uid));
        let raw: Box<serde_json::value::RawValue> = match self.client.get(&path, "devices").await {
            Ok(v) => v,
            Err(DattoError::Status { status: 404, .. }) => {
                return Err(SourceError::Unavailable(format!(
                    "Datto RMM has no device {uid} any more"
                )));
            }
            Err(e) => return Err(source_error(e)),
        };
        let mut de = serde_json::Deserializer::from_str(raw.get());
        let d: Device = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            SourceError::Unavailable(format!(
                "Datto RMM's answer for device {uid} could not be read: {}",
                field_error(&e)
            ))
        })?;
        let d = device(d).map_err(|reason| {
            SourceError::Unavailable(format!("Datto RMM's device {uid}: {reason}"))
        })?;
        Ok(refresh_of(d))
    }

    fn requests(&self) -> u64 {
        self.client.requests()
    }

    fn bytes(&self) -> u64 {
        self.client.bytes()
    }
}

/// Resolves alerts in Datto RMM.
pub struct DattoAlertWriter {
    client: DattoClient,
}

impl DattoAlertWriter {
    pub fn new(client: DattoClient) -> Self {
        Self { client }
    }

    pub fn client(&self) -> &DattoClient {
        &self.client
    }
}

fn path_segment(s: &str) -> String {
    crate::http::urlencode(s)
}

fn write_error(e: DattoError) -> RmmWriteError {
    match e {
        DattoError::Status { status, .. } if status == 429 || status >= 500 => {
            RmmWriteError::Transient(e.to_string())
        }
        DattoError::Unreachable { .. } | DattoError::Decode(_) => {
            RmmWriteError::Transient(e.to_string())
        }
        other => RmmWriteError::Refused(other.to_string()),
    }
}

#[async_trait]
impl AlertWriter for DattoAlertWriter {
    /// `POST /v2/alert/{alertUid}/resolve`; an alert already resolved is success (Datto
    /// may refuse resolving it again: the alert is read, and a resolved one is done);
    /// an unknown alert is refused.
    async fn resolve_alert(&self, alert_id: &str) -> Result<(), RmmWriteError> {
        let uid = path_segment(alert_id);
        let path = format!("/api/v2/alert/{uid}/resolve");
        match self
            .client
            .send::<serde_json::Value>(Method::POST, &path, "resolving alerts")
            .await
        {
            Ok(_) => Ok(()),
            Err(DattoError::Status { status: 404, .. }) => Err(RmmWriteError::Refused(format!(
                "Datto RMM has no alert {alert_id} (HTTP 404); it may have been deleted"
            ))),
            Err(e @ DattoError::Status { status, .. }) if (400..500).contains(&status) => {
                let now: Result<Alert, _> = self
                    .client
                    .get(&format!("/api/v2/alert/{uid}"), "alerts")
                    .await;
                match now {
                    Ok(a) if a.resolved == Some(true) => Ok(()),
                    Ok(_) => Err(RmmWriteError::Refused(format!(
                        "Datto RMM did not resolve alert {alert_id}: {}",
                        e.vendor_message()
                    ))),
                    Err(DattoError::Status { status: 404, .. }) => Err(RmmWriteError::Refused(
                        format!("Datto RMM has no alert {alert_id} (HTTP 404)"),
                    )),
                    Err(read) => Err(write_error(read)),
                }
            }
            Err(e) => Err(write_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_without_uid_or_with_a_bad_field_is_rejected_alone() {
        let rows: Vec<Box<serde_json::value::RawValue>> = serde_json::from_str(
            r#"[{"uid":"a","hostname":"pc1"},{"id":7,"hostname":"pc2"},{"uid":"c","lastSeen":"yesterday"},{"uid":"d","online":null,"deviceClass":"quantumcomputer"}]"#,
        )
        .unwrap();
        let (ok, bad) = read_rows(rows, device);
        assert_eq!(
            ok.iter()
                .map(|d| d.external_id.as_str())
                .collect::<Vec<_>>(),
            ["a", "d"]
        );
        assert_eq!(ok[1].device_class.as_deref(), Some("quantumcomputer"));
        assert_eq!(bad.len(), 2);
        assert_eq!(bad[0].external_id.as_deref(), Some("7"));
        assert!(bad[0].reason.contains("`uid`"), "{}", bad[0].reason);
        assert_eq!(bad[1].external_id.as_deref(), Some("c"));
        assert!(bad[1].reason.contains("`lastSeen`"), "{}", bad[1].reason);
    }
}
