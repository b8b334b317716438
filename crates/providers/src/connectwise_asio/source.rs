//! ConnectWise Asio as an [`RmmSource`]:
//!
//! - `sites` are Asio **companies** (`GET /api/platform/v1/company/companies`, one unpaged
//!   array), each with the PSA company its `externalIds` name as identity (the entry whose
//!   `productId` names a PSA; see [`psa_provider`]).
//! - `devices` are endpoints of every category,
//!   `POST /api/platform/v2/device/categories/all/endpoints?limit=&cursor=&field=` with
//!   `{"resourceType":"company","resources":[…]}`: Asio takes at most 4 companies per
//!   call, so the companies are walked in batches of 4, each batch by the `Link` header's
//!   `rel="next"` cursor (host checked); the page token names the batch's companies and the cursor (`c1,c2,c3,c4:cursor`; a pass resumed after the company list changed restarts that batch rather than skip any). Without
//!   `field` Asio sends minimal metadata only, and it takes at most 15 fields:
//!   [`FIELDS`]. Online state is a separate bulk call (trap 9):
//!   `GET /api/platform/v2/device/endpoints/heartbeat?resourceType=endpoints&resources=…`,
//!   batched by [`HEARTBEAT_BATCH`]; patch state is not read (one call per endpoint).
//! - `open_alerts`: Asio 2.2.8 has no list of open alerts (trap 10; only alert
//!   suspensions); its alerts surface as service tickets. Where the key holds
//!   `platform.tickets.read`, the open tickets are the alerts:
//!   `GET /api/platform/v2/service/ticketing/tickets?pageSize=&pageNum=&statusIds=[notIn],…`
//!   leaving out the statuses whose category is `Closed`
//!   (`GET /api/platform/v1/service/ticketing/statuses`), paged by `pageNum` from 1 up to
//!   `totalCount` (asking past the end answers nothing *and* a total of 0, trap 11). A
//!   ticket's company is the alert's site, its first asset the device. Without the scope the
//!   pass is refused as not permitted, naming the scope.
//!
//! Each row is read on its own: a row that cannot be read is rejected with its id and the
//! field at fault, never the page.

use std::collections::HashMap;

use async_trait::async_trait;
use reqwest::Method;
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;

use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::rmm::{
    DeviceKey, DeviceRefresh, ExtAlert, ExtDevice, ExtSite, PatchState, PatchSummary, PsaIdentity,
};

use super::client::{AsioClient, AsioError, ops};
use super::wire::{
    Company, Endpoint, HeartbeatResponse, RawEndpoints, RawTickets, Ticket, TicketStatus,
    parse_time,
};
use crate::rmm::RmmSource;
use crate::source::{PageRequest, Rejected, SourceError, SourcePage, field_error};

/// Asio's largest (and default) page of endpoints.
pub const MAX_PAGE_SIZE: usize = 500;
/// Companies per endpoints call (Asio's limit for `resourceType: company`).
pub const COMPANIES_PER_CALL: usize = 4;
/// Endpoint ids per heartbeat call.
pub const HEARTBEAT_BATCH: usize = 50;
/// The projected endpoint fields (Asio allows 15 at most).
pub const FIELDS: [&str; 15] = [
    "endpointID",
    "deviceName",
    "friendlyName",
    "resourceType",
    "endpointType",
    "type",
    "virtualType",
    "ipAddress",
    "remoteAddress",
    "os",
    "system",
    "antiViruses",
    "createdAt",
    "modifiedAt",
    "agentInstalledUTC",
];

pub const COMPANIES_PATH: &str = "/api/platform/v1/company/companies";
pub const SITES_PATH: &str = "/api/platform/v1/company/sites";
pub const ENDPOINTS_PATH: &str = "/api/platform/v2/device/categories/all/endpoints";
pub const HEARTBEAT_PATH: &str = "/api/platform/v2/device/endpoints/heartbeat";
/// The fields a device read alone projects (Asio allows 15 at most): hardware, users and
/// agent facts the list does not carry.
pub const DETAIL_FIELDS: [&str; 15] = [
    "deviceName",
    "friendlyName",
    "endpointType",
    "ipAddress",
    "macAddress",
    "os",
    "system",
    "bios",
    "processors",
    "physicalMemory",
    "drives",
    "users",
    "antiViruses",
    "modifiedAt",
    "agentInstalledUTC",
];
pub const STATUSES_PATH: &str = "/api/platform/v1/service/ticketing/statuses";
pub const TICKETS_PATH: &str = "/api/platform/v2/service/ticketing/tickets";
/// Tickets per page (Asio states no maximum).
pub const TICKET_PAGE_SIZE: usize = 100;
/// The scope that lets the key read tickets.
pub const TICKETS_SCOPE: &str = "platform.tickets.read";
/// Where an Asio admin lets the key read tickets.
pub const TICKETS_SETTING: &str =
    "Asio: Integrations > API Access > (this key) > Scopes: Platform - Tickets - Read";

/// Where an Asio admin changes what the API key may read.
pub const PERMISSION_SETTING: &str = "Asio: Integrations > API Access > (this key) > Scopes: Platform - Companies - Read, Platform - Sites - Read and Platform - Devices - Read";

pub struct AsioSource {
    client: AsioClient,
    page_size: usize,
    /// The companies' ids in batch order, read once per source.
    companies: OnceCell<Vec<String>>,
    /// The ids of the ticket statuses whose category is Closed, read once per source.
    closed_statuses: OnceCell<Vec<String>>,
}

impl AsioSource {
    pub fn new(client: AsioClient) -> Self {
        Self {
            client,
            page_size: MAX_PAGE_SIZE,
            companies: OnceCell::new(),
            closed_statuses: OnceCell::new(),
        }
    }

    /// Reads `n` endpoints per page (1 to 500) instead of 500.
    pub fn with_page_size(self, n: usize) -> Self {
        Self {
            page_size: n.clamp(1, MAX_PAGE_SIZE),
            ..self
        }
    }

    pub fn client(&self) -> &AsioClient {
        &self.client
    }

    async fn raw_companies(&self) -> Result<Vec<Box<serde_json::value::RawValue>>, SourceError> {
        let rows: Option<Vec<Box<serde_json::value::RawValue>>> = self
            .client
            .get(COMPANIES_PATH, "companies", ops::COMPANIES)
            .await
            .map_err(source_error)?;
        Ok(rows.unwrap_or_default())
    }

    async fn company_ids(&self) -> Result<&Vec<String>, SourceError> {
        self.companies
            .get_or_try_init(|| async {
                let (sites, _) = read_rows(self.raw_companies().await?, site);
                let mut ids: Vec<String> = sites.into_iter().map(|s| s.external_id).collect();
                ids.sort();
                ids.dedup();
                Ok(ids)
            })
            .await
    }

    /// The ids of the statuses a closed ticket has.
    async fn closed_statuses(&self) -> Result<&Vec<String>, SourceError> {
        self.closed_statuses
            .get_or_try_init(|| async {
                let rows: Option<Vec<Box<serde_json::value::RawValue>>> = self
                    .client
                    .get(STATUSES_PATH, "ticket statuses", ops::TICKETS)
                    .await
                    .map_err(tickets_error)?;
                let mut ids = Vec::new();
                for row in rows.unwrap_or_default() {
                    // A status that cannot be read is not known to be closed: its tickets stay.
                    if let Ok(st) = serde_json::from_str::<TicketStatus>(row.get())
                        && st
                            .category
                            .as_deref()
                            .map(str::to_ascii_lowercase)
                            .as_deref()
                            == Some("closed")
                        && let Some(id) = st.id
                    {
                        ids.push(id);
                    }
                }
                ids.sort();
                Ok(ids)
            })
            .await
    }

    /// Online state and last contact by endpoint id, in batches.
    async fn heartbeats(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, (Option<bool>, Option<String>)>, SourceError> {
        let mut out = HashMap::new();
        for chunk in ids.chunks(HEARTBEAT_BATCH) {
            let list: Vec<String> = chunk.iter().map(|i| crate::http::urlencode(i)).collect();
            let path = format!(
                "{HEARTBEAT_PATH}?resourceType=endpoints&resources={}",
                list.join(",")
            );
            let r: Result<HeartbeatResponse, AsioError> = self
                .client
                .get(&path, "endpoint heartbeats", ops::HEARTBEAT)
                .await;
            let r = match r {
                Ok(r) => r,
                // Online state is not worth the page: the devices keep theirs unknown.
                Err(e @ (AsioError::Forbidden { .. } | AsioError::Status { status: 404, .. })) => {
                    tracing::warn!(vendor = "connectwise_asio", error = %e, "heartbeats not read");
                    continue;
                }
                Err(e) => return Err(source_error(e)),
            };
            for g in r.successful_records.unwrap_or_default() {
                for h in g.endpoints.unwrap_or_default() {
                    if let Some(id) = h.endpoint_id {
                        out.insert(id, (h.availability, h.dc_date_time_utc));
                    }
                }
            }
        }
        Ok(out)
    }
}

/// What went wrong reading tickets: a refusal names the tickets scope.
fn tickets_error(e: AsioError) -> SourceError {
    match e {
        AsioError::Forbidden { .. } => SourceError::NotPermitted {
            message: e.to_string(),
            setting: TICKETS_SETTING.to_string(),
        },
        other => source_error(other),
    }
}

/// An open ticket as an alert: its priority's name (kept as sent), its summary as the
/// diagnostics, its company as the site, its first asset as the device; board, type,
/// status and source as the context.
pub fn ticket_alert(t: Ticket) -> Result<ExtAlert, String> {
    let external_id = t.id.ok_or_else(|| missing("id"))?;
    let name = |r: &Option<super::wire::Reference>| r.as_ref().and_then(|r| r.name.clone());
    let context = serde_json::json!({
        "serviceBoard": name(&t.service_board),
        "type": name(&t.kind),
        "status": name(&t.status),
        "source": name(&t.source),
        "siteId": t.site.as_ref().and_then(|s| s.id.clone()),
        "updatedAt": t.updated_at,
    });
    Ok(ExtAlert {
        external_id,
        priority: name(&t.priority).unwrap_or_else(|| "Unknown".to_string()),
        diagnostics: t.summary.filter(|s| !s.trim().is_empty()),
        device_external_id: t.assets.unwrap_or_default().into_iter().find_map(|a| a.id),
        device_name: None,
        site_external_id: t.company.and_then(|c| c.id),
        resolved: false,
        resolved_by: None,
        resolved_at: None,
        muted: None,
        ticket_number: t.number,
        raised_at: t.created_at,
        context_type: Some("ticket".to_string()),
        context: Some(context.to_string()),
    })
}

/// What went wrong, for the engine.
pub fn source_error(e: AsioError) -> SourceError {
    match e {
        AsioError::Token { ref message, .. } => SourceError::Auth(format!(
            "ConnectWise Asio refused the client ID and secret ({message}). Check them under Integrations > API Access in Asio, and that the environment matches the client ID."
        )),
        AsioError::Status { status: 401, .. } => SourceError::Auth(format!(
            "ConnectWise Asio refused the API token even after a new grant: {}",
            e.vendor_message()
        )),
        AsioError::Forbidden { .. } => SourceError::NotPermitted {
            message: e.to_string(),
            setting: PERMISSION_SETTING.to_string(),
        },
        AsioError::Refused(m) if m.contains("budget") => SourceError::Budget(m),
        other => SourceError::Unavailable(other.to_string()),
    }
}

/// The PSA a `productId` names, from its words (the spec leaves `productId` an open
/// string): ConnectWise Manage (`Manage`, `ConnectWise PSA`, `CWM`), Autotask, Halo PSA,
/// Syncro; anything else (documentation tools, other RMMs) is no PSA.
pub fn psa_provider(product_id: &str) -> Option<ProviderKind> {
    let p: String = product_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    if p.contains("manage") || p.contains("connectwisepsa") || p == "cwpsa" || p == "cwm" {
        Some(ProviderKind::ConnectwiseManage)
    } else if p.contains("autotask") {
        Some(ProviderKind::Autotask)
    } else if p.contains("halo") {
        Some(ProviderKind::HaloPsa)
    } else if p.contains("syncro") {
        Some(ProviderKind::Syncro)
    } else {
        None
    }
}

fn row_id(raw: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(raw).ok()?;
    ["endpointID", "endpointId", "id"]
        .iter()
        .find_map(|k| match v.get(*k)? {
            serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
}

/// Reads rows one by one: the wire type (a wrong value names the field), then the record.
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
    format!("field `{field}`: missing (ConnectWise Asio sent no {field})")
}

/// A company as the engine sees it; the PSA company its `externalIds` name (ConnectWise
/// Manage first) is its identity.
pub fn site(c: Company) -> Result<ExtSite, String> {
    let external_id = c.id.ok_or_else(|| missing("id"))?;
    let ids = c.external_ids.unwrap_or_default();
    let identity = [
        ProviderKind::ConnectwiseManage,
        ProviderKind::Autotask,
        ProviderKind::HaloPsa,
        ProviderKind::Syncro,
    ]
    .into_iter()
    .find_map(|want| {
        ids.iter().find_map(|x| {
            let kind = psa_provider(x.product_id.as_deref()?)?;
            let external_id = x.external_id.clone()?;
            (kind == want).then_some(PsaIdentity {
                provider: kind,
                external_id,
                name: None,
            })
        })
    });
    let name = c
        .name
        .filter(|n| !n.trim().is_empty())
        .or(c.friendly_name.clone())
        .unwrap_or_default();
    let active = c
        .activity_status
        .and_then(|s| s.active_flag)
        .unwrap_or(true)
        && c.deleted_date.is_none_or(|d| d.trim().is_empty());
    Ok(ExtSite {
        external_id,
        name,
        description: c.description.filter(|d| !d.is_empty()),
        device_count: None,
        online_count: None,
        offline_count: None,
        identity,
        portal_url: None,
        active,
    })
}

/// An endpoint of `company` (and its `site` there) as the engine sees it (online state
/// added from heartbeats).
pub fn device(e: Endpoint, company: Option<&str>, site: Option<&str>) -> Result<ExtDevice, String> {
    let external_id = e.endpoint_id.ok_or_else(|| missing("endpointID"))?;
    let os = e.os.unwrap_or_default();
    let system = e.system.unwrap_or_default();
    let av = e.anti_viruses.unwrap_or_default();
    let hostname = e
        .device_name
        .filter(|n| !n.is_empty())
        .or(e.friendly_name)
        .or(system.system_name)
        .unwrap_or_default();
    let operating_system = match (os.product, os.version) {
        (Some(p), Some(v)) if !v.is_empty() && !p.contains(&v) => Some(format!("{p} {v}")),
        (Some(p), _) => Some(p),
        (None, v) => v,
    };
    Ok(ExtDevice {
        external_id,
        site_external_id: company.map(str::to_string),
        sub_site: site.map(str::to_string),
        hostname,
        device_type: e.virtual_type,
        category: e.kind.or(system.category),
        device_class: e.endpoint_type.or(e.resource_type),
        operating_system,
        online: None,
        last_seen: None,
        last_reboot: None,
        last_audit: e.modified_at,
        created_at: e.created_at.or(e.agent_installed_utc),
        reboot_required: None,
        suspended: None,
        deleted: false,
        agent_version: None,
        internal_ip: e
            .ip_address
            .and_then(|ips| ips.into_iter().find(|i| !i.is_empty())),
        external_ip: e.remote_address.filter(|a| !a.is_empty()),
        domain: system.domain,
        last_user: None,
        antivirus_product: av
            .first()
            .and_then(|a| a.name.clone().or(a.application_name.clone())),
        antivirus_status: None,
        patch: PatchState::default(),
        warranty_date: None,
        manufacturer: system.manufacturer.or(os.manufacturer),
        model: system.model,
        serial_number: system.serial_number,
        portal_url: None,
        udfs: Default::default(),
    })
}

/// `company,company,…:cursor`: the batch's companies and the cursor within it.
fn parse_token(t: &str) -> Option<(Vec<&str>, u64)> {
    let (b, c) = t.rsplit_once(':')?;
    let members: Vec<&str> = b.split(',').filter(|m| !m.is_empty()).collect();
    (!members.is_empty()).then_some(())?;
    Some((members, c.parse().ok()?))
}

/// Where a resumed pass goes on: the batch its token names, with its cursor, when the
/// sorted company list still has exactly that batch; otherwise (companies added or gone
/// since) from the start of the batch holding the token's first company, or the first after
/// it, at cursor 0, so nothing unread is skipped (a few endpoints may be read twice, which
/// changes nothing). A token of the earlier form (`batch index:cursor`) is read as an index.
fn resume_at(companies: &[String], members: &[&str], cursor: u64) -> (usize, u64) {
    let first = members[0];
    match companies.binary_search_by(|c| c.as_str().cmp(first)) {
        Ok(i) => {
            let batch: Vec<&str> = companies[i..(i + COMPANIES_PER_CALL).min(companies.len())]
                .iter()
                .map(String::as_str)
                .collect();
            if i % COMPANIES_PER_CALL == 0 && batch == members {
                (i / COMPANIES_PER_CALL, cursor)
            } else {
                (i / COMPANIES_PER_CALL, 0)
            }
        }
        Err(_)
            if members.len() == 1
                && first.len() < 6
                && first.bytes().all(|b| b.is_ascii_digit()) =>
        {
            (first.parse().unwrap_or(usize::MAX), cursor)
        }
        Err(i) => (i / COMPANIES_PER_CALL, 0),
    }
}

/// The `cursor` of a next-page path.
fn cursor_of(path: &str) -> Option<u64> {
    let (_, q) = path.split_once('?')?;
    q.split('&')
        .find_map(|kv| kv.strip_prefix("cursor="))
        .and_then(|c| c.parse().ok())
}

#[async_trait]
impl RmmSource for AsioSource {
    async fn sites(&self, _req: &PageRequest) -> Result<SourcePage<ExtSite>, SourceError> {
        let (records, rejected) = read_rows(self.raw_companies().await?, site);
        Ok(SourcePage {
            records,
            rejected,
            next: None,
        })
    }

    async fn devices(&self, req: &PageRequest) -> Result<SourcePage<ExtDevice>, SourceError> {
        let companies = self.company_ids().await?;
        let (batch, cursor) = match &req.after {
            Some(t) => {
                let (members, cursor) = parse_token(t).ok_or_else(|| {
                    SourceError::Unavailable(format!("'{t}' is not a ConnectWise Asio page token"))
                })?;
                resume_at(companies, &members, cursor)
            }
            None => (0, 0),
        };
        let Some(ids) = companies
            .chunks(COMPANIES_PER_CALL)
            .nth(batch)
            .map(<[String]>::to_vec)
        else {
            return Ok(SourcePage {
                records: vec![],
                rejected: vec![],
                next: None,
            });
        };
        let batches = companies.len().div_ceil(COMPANIES_PER_CALL);
        let path = format!(
            "{ENDPOINTS_PATH}?limit={}&cursor={cursor}&field={}",
            self.page_size,
            FIELDS.join(",")
        );
        let body = serde_json::json!({"resourceType": "company", "resources": ids});
        let answer = self
            .client
            .send::<Option<RawEndpoints>>(
                Method::POST,
                &path,
                Some(&body),
                "devices",
                Some(ops::ENDPOINTS),
            )
            .await
            .map_err(source_error)?;
        let groups = answer.body.unwrap_or_default();
        let mut records = Vec::new();
        let mut rejected = Vec::new();
        let mut rows_seen = 0;
        for g in [groups.platform, groups.network, groups.cloud]
            .into_iter()
            .flatten()
            .flatten()
        {
            let rows = g.endpoints.unwrap_or_default();
            rows_seen += rows.len();
            let (company, site) = (g.company_id, g.site_id);
            let (r, bad) = read_rows(rows, |e: Endpoint| {
                device(e, company.as_deref(), site.as_deref())
            });
            records.extend(r);
            rejected.extend(bad);
        }
        let ids: Vec<String> = records.iter().map(|d| d.external_id.clone()).collect();
        let beats = self.heartbeats(&ids).await?;
        for d in &mut records {
            if let Some((online, seen)) = beats.get(&d.external_id) {
                d.online = *online;
                d.last_seen = seen.as_deref().and_then(parse_time);
            }
        }
        let next_cursor = match answer.next {
            // An empty page naming a next one would never end: the batch is done.
            Some(n) if rows_seen > 0 => {
                let p = self.client.follow(&n).map_err(source_error)?;
                Some(cursor_of(&p).ok_or_else(|| {
                    SourceError::Unavailable(format!(
                        "ConnectWise Asio's next page {n} has no cursor"
                    ))
                })?)
            }
            _ => None,
        };
        let members = |b: usize| {
            companies
                .chunks(COMPANIES_PER_CALL)
                .nth(b)
                .map(|m| m.join(","))
                .unwrap_or_default()
        };
        let next = match next_cursor {
            Some(c) => Some(format!("{}:{c}", members(batch))),
            None if batch + 1 < batches => Some(format!("{}:0", members(batch + 1))),
            None => None,
        };
        Ok(SourcePage {
            records,
            rejected,
            next,
        })
    }

    /// The open service tickets (Asio 2.2.8 has no list of open alerts), where the key may
    /// read tickets.
    async fn open_alerts(&self, req: &PageRequest) -> Result<SourcePage<ExtAlert>, SourceError> {
        let granted = self.client.granted_scopes().await.map_err(source_error)?;
        if !granted.iter().any(|g| g == TICKETS_SCOPE) {
            return Err(SourceError::NotPermitted {
                message: format!(
                    "the API key was not granted {TICKETS_SCOPE}, so Asio's alerts (its open tickets) cannot be read"
                ),
                setting: TICKETS_SETTING.to_string(),
            });
        }
        let page: u64 = match &req.after {
            Some(t) => t.parse().map_err(|_| {
                SourceError::Unavailable(format!("'{t}' is not a ConnectWise Asio ticket page"))
            })?,
            None => 1,
        };
        let closed = self.closed_statuses().await?;
        let mut path = format!(
            "{TICKETS_PATH}?pageSize={TICKET_PAGE_SIZE}&pageNum={page}&sortBy=createdAt&sortDir=asc"
        );
        if !closed.is_empty() {
            let list: Vec<String> = closed.iter().map(|c| crate::http::urlencode(c)).collect();
            path.push_str(&format!("&statusIds={}", crate::http::urlencode("[notIn]")));
            path.push_str(&format!(",{}", list.join(",")));
        }
        let answer: Option<RawTickets> = self
            .client
            .get(&path, "tickets", ops::TICKETS)
            .await
            .map_err(tickets_error)?;
        let answer = answer.unwrap_or_default();
        let rows = answer.tickets.unwrap_or_default();
        let n = rows.len() as u64;
        let (records, rejected) = read_rows(rows, |t: Ticket| {
            // A closed ticket a lenient filter let through is no open alert.
            match t.status.as_ref().and_then(|s| s.id.as_ref()) {
                Some(s) if closed.binary_search(s).is_ok() => Ok(None),
                _ => ticket_alert(t).map(Some),
            }
        });
        let records = records.into_iter().flatten().collect();
        let total = answer.total_count.unwrap_or(0).max(0) as u64;
        let next =
            (n > 0 && page * (TICKET_PAGE_SIZE as u64) < total).then(|| (page + 1).to_string());
        Ok(SourcePage {
            records,
            rejected,
            next,
        })
    }

    /// `GET /api/platform/v2/device/companies/{c}/sites/{s}/endpoints/{e}?field=…` (the
    /// category's object: hardware, users, agent), the heartbeat, and
    /// `GET /api/platform/v2/patching/{e}/patches` (its `summary`; a 404 is "no patch data",
    /// a 401 or 403 that the plan or key does not include patching, both said in words).
    async fn device_refresh(&self, key: &DeviceKey) -> Result<DeviceRefresh, SourceError> {
        let e = &key.external_id;
        let company = key.site_external_id.as_deref().ok_or_else(|| {
            SourceError::Unavailable(format!("device {e} has no ConnectWise Asio company"))
        })?;
        let site = key.sub_site.as_deref().ok_or_else(|| {
            SourceError::Unavailable(format!(
                "device {e} was read before its ConnectWise Asio site was kept: the next sync fills it in, then Refresh works"
            ))
        })?;
        let enc = crate::http::urlencode;
        let path = format!(
            "/api/platform/v2/device/companies/{}/sites/{}/endpoints/{}?field={}",
            enc(company),
            enc(site),
            enc(e),
            DETAIL_FIELDS.join(",")
        );
        let detail: Option<serde_json::Value> =
            match self.client.get(&path, "the device", ops::DETAIL).await {
                Ok(d) => d,
                Err(AsioError::Status { status: 404, .. }) => {
                    return Err(SourceError::Unavailable(format!(
                        "ConnectWise Asio has no device {e} in that company and site any more"
                    )));
                }
                Err(other) => return Err(source_error(other)),
            };
        let detail = detail.unwrap_or_default();
        let body = ["platform", "network", "cloud"]
            .iter()
            .find_map(|k| detail.get(*k).filter(|v| v.is_object()))
            .unwrap_or(&detail);
        let mut out = DeviceRefresh {
            facts: detail_facts(body),
            ..Default::default()
        };
        let beats = self.heartbeats(std::slice::from_ref(e)).await?;
        if let Some((online, seen)) = beats.get(e) {
            out.online = *online;
            out.last_seen = seen.as_deref().and_then(parse_time);
        }
        let patches: Result<Option<serde_json::Value>, AsioError> = self
            .client
            .get(&patches_path(e), "patches", ops::PATCHING)
            .await;
        match patches {
            Ok(p) => {
                let summary = p.as_ref().and_then(|p| p.get("summary"));
                match summary {
                    Some(s) if s.is_object() => out.patch = Some(patch_summary(s)),
                    _ => {
                        out.patch_note =
                            Some("ConnectWise Asio sent no patch summary for this device".into())
                    }
                }
            }
            Err(AsioError::Status { status: 404, .. }) => {
                out.patch_note = Some("ConnectWise Asio has no patch data for this device".into());
            }
            Err(AsioError::Status {
                status: 401,
                message,
                ..
            }) => {
                out.patch_note = Some(format!(
                    "patching is not part of this ConnectWise Asio plan ({message})"
                ));
            }
            Err(AsioError::Forbidden { message, .. }) => {
                out.patch_note = Some(format!("the API key may not read patches ({message})"));
            }
            Err(other) => return Err(source_error(other)),
        }
        Ok(out)
    }

    fn requests(&self) -> u64 {
        self.client.requests()
    }

    fn bytes(&self) -> u64 {
        self.client.bytes()
    }
}

/// `/api/platform/v2/patching/{endpointId}/patches`.
pub fn patches_path(endpoint: &str) -> String {
    format!(
        "/api/platform/v2/patching/{}/patches",
        crate::http::urlencode(endpoint)
    )
}

fn text_of(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(if *b { "yes" } else { "no" }.to_string()),
        _ => None,
    }
}

fn joined(parts: &[Option<String>]) -> Option<String> {
    let p: Vec<&str> = parts.iter().flatten().map(String::as_str).collect();
    (!p.is_empty()).then(|| p.join(" "))
}

fn gib(bytes: f64) -> String {
    format!("{:.1} GiB", bytes / 1_073_741_824.0)
}

/// The facts a device page shows from Asio's endpoint detail, read leniently (a field of
/// an odd type is left out, never fatal).
pub fn detail_facts(d: &serde_json::Value) -> Vec<(String, String)> {
    let t = |v: &serde_json::Value, k: &str| v.get(k).and_then(text_of);
    let list = |k: &str| {
        d.get(k)
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default()
    };
    let mut facts: Vec<(String, Option<String>)> = Vec::new();
    let os = d.get("os").cloned().unwrap_or_default();
    facts.push((
        "Operating system".into(),
        joined(&[
            t(&os, "product"),
            t(&os, "version"),
            t(&os, "buildNumber").map(|b| format!("(build {b})")),
        ]),
    ));
    let sys = d.get("system").cloned().unwrap_or_default();
    facts.push(("Manufacturer".into(), t(&sys, "manufacturer")));
    facts.push(("Model".into(), t(&sys, "model")));
    facts.push(("Serial number".into(), t(&sys, "serialNumber")));
    facts.push(("Domain".into(), t(&sys, "domain")));
    let bios = d.get("bios").cloned().unwrap_or_default();
    facts.push((
        "BIOS".into(),
        joined(&[t(&bios, "manufacturer"), t(&bios, "version")]),
    ));
    let cpus = list("processors");
    facts.push((
        "Processor".into(),
        cpus.first().and_then(|c| {
            joined(&[
                t(c, "product"),
                t(c, "numberOfCores").map(|n| format!("({n} cores)")),
            ])
        }),
    ));
    let memory: f64 = list("physicalMemory")
        .iter()
        .filter_map(|m| m.get("sizeBytes").and_then(serde_json::Value::as_f64))
        .sum();
    facts.push(("Memory".into(), (memory > 0.0).then(|| gib(memory))));
    let drives: Vec<String> = list("drives")
        .iter()
        .filter_map(|x| {
            joined(&[
                t(x, "product").or(t(x, "model")),
                x.get("sizeBytes")
                    .and_then(serde_json::Value::as_f64)
                    .map(gib),
            ])
        })
        .collect();
    facts.push((
        "Disks".into(),
        (!drives.is_empty()).then(|| drives.join("; ")),
    ));
    let texts = |k: &str| {
        let v: Vec<String> = list(k).iter().filter_map(text_of).collect();
        (!v.is_empty()).then(|| v.join(", "))
    };
    facts.push(("IP addresses".into(), texts("ipAddress")));
    facts.push(("MAC addresses".into(), texts("macAddress")));
    let users: Vec<String> = list("users")
        .iter()
        .filter_map(|u| t(u, "username"))
        .take(10)
        .collect();
    facts.push((
        "Users".into(),
        (!users.is_empty()).then(|| users.join(", ")),
    ));
    let av: Vec<String> = list("antiViruses")
        .iter()
        .filter_map(|a| t(a, "name").or(t(a, "applicationName")))
        .collect();
    facts.push(("Antivirus".into(), (!av.is_empty()).then(|| av.join(", "))));
    facts.push(("Agent installed".into(), t(d, "agentInstalledUTC")));
    facts.push(("Changed in Asio".into(), t(d, "modifiedAt")));
    facts
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
}

/// Asio's patch `summary`, read leniently.
pub fn patch_summary(s: &serde_json::Value) -> PatchSummary {
    let int = |k: &str| s.get(k).and_then(serde_json::Value::as_i64);
    let text = |k: &str| s.get(k).and_then(text_of);
    PatchSummary {
        // Asio states counts and compliance, no status word; an out-of-support system says so.
        status: (s.get("outOfSupport").and_then(serde_json::Value::as_bool) == Some(true))
            .then(|| "Out of support".to_string()),
        missing: int("missingCount"),
        approved_pending: None,
        not_approved: None,
        installed: int("installedCount"),
        pending_reboot: int("pendingRebootCount"),
        compliance: s.get("compliance").and_then(serde_json::Value::as_f64),
        policy: text("policyName"),
        assessed_at: text("assessedAt").as_deref().and_then(parse_time),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_pass_skips_nothing_when_the_company_list_changed() {
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<String>>();
        let now = ids(&["a", "b", "c", "d", "e", "f", "g", "h", "i"]);
        // The same batch: its cursor holds.
        assert_eq!(resume_at(&now, &["e", "f", "g", "h"], 500), (1, 500));
        assert_eq!(resume_at(&now, &["i"], 0), (2, 0));
        // "ab" added before the batch: it now starts elsewhere, so it is read from the
        // start of the batch holding "e" (cursor 0), re-reading rather than skipping.
        let added = ids(&["a", "ab", "b", "c", "d", "e", "f", "g", "h", "i"]);
        assert_eq!(resume_at(&added, &["e", "f", "g", "h"], 500), (1, 0));
        // "e" gone: from the batch holding the first company after it.
        let gone = ids(&["a", "b", "c", "d", "f", "g", "h", "i"]);
        assert_eq!(resume_at(&gone, &["e", "f", "g", "h"], 500), (1, 0));
        // A company added inside the batch: cursor 0.
        let inside = ids(&["a", "b", "c", "d", "e", "ee", "f", "g", "h", "i"]);
        assert_eq!(resume_at(&inside, &["e", "f", "g", "h"], 500), (1, 0));
        // An index token of the earlier form.
        assert_eq!(resume_at(&now, &["2"], 7), (2, 7));
    }

    #[test]
    fn psa_products_are_told_apart() {
        assert_eq!(
            psa_provider("ConnectWise Manage"),
            Some(ProviderKind::ConnectwiseManage)
        );
        assert_eq!(
            psa_provider("connectwise-psa"),
            Some(ProviderKind::ConnectwiseManage)
        );
        assert_eq!(psa_provider("AUTOTASK"), Some(ProviderKind::Autotask));
        assert_eq!(psa_provider("IT Glue"), None);
    }

    #[test]
    fn tokens_and_cursors_read() {
        assert_eq!(parse_token("c-1,c-2:500"), Some((vec!["c-1", "c-2"], 500)));
        assert_eq!(parse_token("3:500"), Some((vec!["3"], 500)));
        assert_eq!(parse_token("x"), None);
        assert_eq!(parse_token(":5"), None);
        assert_eq!(
            cursor_of("/api/platform/v2/device/categories/all/endpoints?limit=5&cursor=10"),
            Some(10)
        );
    }
}
