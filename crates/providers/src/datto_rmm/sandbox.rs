//! Datto RMM played on loopback for tests and `mspbridge sandbox datto_rmm`, at the root of
//! its address as `https://{platform}-api.centrastage.net` would be: the password grant at
//! `POST /auth/oauth/token` (Basic `public-client:public`; wrong keys → 401
//! `invalid_grant`; tokens expire after a life tests can shorten, and can be revoked),
//! `GET /api/v2/account`, `/api/v2/system/pagination`, `/api/v2/system/request_rate` (the account's count, other
//! tools' requests included), `/api/v2/account/sites`, `/api/v2/account/devices`,
//! `/api/v2/account/alerts/open` (0-based `page`, `max` up to the account's page size,
//! `pageDetails.nextPageUrl`), `GET /api/v2/device/{uid}`, `GET /api/v2/alert/{uid}`, `POST /api/v2/alert/{uid}/resolve`
//! (409 when already resolved, 404 unknown); an API user whose security level cannot see
//! alerts (403); the account's limit (600 requests per rolling 60 s, token requests not
//! counted): past 90 % every answer is delayed by a second, past the limit 429 with
//! `Retry-After`, and a client that keeps going is blocked with 403 for a while; fault
//! injection; request counts and raw field edits for tests.
//!
//! Seeded sites carry the names of the Autotask sandbox's companies (so the mapping grid
//! shows matches), two in three with `autotaskCompanyId` set to that company's id; devices
//! of every class (`rmmnetworkdevice` and one the spec does not know included), with nulls
//! and user-defined fields up to `udf300`; open alerts with the polymorphic contexts of
//! Datto's samples.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use base64::Engine as _;
use mspbridge_sandbox::names::company_name;
use mspbridge_sandbox::{Faults, Rng, SandboxHandle, Seed};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::wire::{
    Alert, AlertMonitorInfo, AlertSourceInfo, Antivirus, Device, DeviceType, DevicesStatus,
    PatchManagement, Site,
};

pub const DEMO_PLATFORM: &str = "merlot";
pub const DEMO_API_KEY: &str = "DEMO7QXDATTOAPIKEY2026";
/// With `+` and `/`, as Datto's secrets have: the form body must encode them.
pub const DEMO_API_SECRET: &str = "demo+datto/secret=key";
/// An API user whose security level cannot see alerts.
pub const LIMITED_API_KEY: &str = "LIMITEDDATTOAPIKEY";
pub const LIMITED_API_SECRET: &str = "limited-datto-secret";

/// Datto's documented default page size.
pub const DEFAULT_PAGE_SIZE: usize = 50;

#[derive(Debug, Clone, Default)]
pub struct DattoData {
    pub sites: Vec<Site>,
    pub devices: Vec<Device>,
    /// Open and resolved; the open list shows the open ones.
    pub alerts: Vec<Alert>,
}

/// One API request as the sandbox received it (token requests included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
}

/// The account's limit as Datto plays it.
#[derive(Debug, Clone, Copy)]
pub struct AccountLimit {
    pub requests: usize,
    pub window: Duration,
    /// Added to every answer past 90 % of `requests`.
    pub slow_delay: Duration,
    /// 429s within a window before the address is blocked.
    pub block_after: usize,
    pub block_for: Duration,
}

impl Default for AccountLimit {
    fn default() -> Self {
        Self {
            requests: 600,
            window: Duration::from_secs(60),
            slow_delay: Duration::from_secs(1),
            block_after: 20,
            block_for: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Default)]
struct RateState {
    admitted: VecDeque<Instant>,
    refused: VecDeque<Instant>,
    blocked_until: Option<Instant>,
}

enum Admission {
    Go,
    Slow(Duration),
    TooMany(u64),
    Blocked,
}

struct Inner {
    data: RwLock<DattoData>,
    page_size: Mutex<usize>,
    token_life: Mutex<Duration>,
    /// token → (expiry, limited user)
    tokens: Mutex<HashMap<String, (Instant, bool)>>,
    token_requests: AtomicU64,
    api_requests: AtomicU64,
    seen: Mutex<Vec<SeenRequest>>,
    /// When every API request the limit admitted arrived.
    arrivals: Mutex<Vec<Instant>>,
    limit: Mutex<AccountLimit>,
    rate: Mutex<RateState>,
    raw: Mutex<Vec<RawEdit>>,
}

/// (collection, uid, field, value; `None` removes the field)
type RawEdit = (String, String, String, Option<Value>);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Clone)]
pub struct DattoSandbox {
    inner: Arc<Inner>,
    pub faults: Faults,
}

/// 2026-11-01T00:00:00Z in epoch milliseconds.
const BASE_MS: i64 = 1_793_491_200_000;

const OS: [&str; 6] = [
    "Microsoft Windows 11 Pro 23H2",
    "Microsoft Windows 10 Pro 22H2",
    "Microsoft Windows Server 2022 Standard",
    "macOS Sonoma 14.5",
    "Ubuntu 22.04.4 LTS",
    "Microsoft Windows Server 2019 Datacenter",
];

/// (category, type, deviceClass): every class, one the spec does not list.
const KINDS: [(&str, &str, &str); 8] = [
    ("Desktop", "Desktop", "device"),
    ("Laptop", "Laptop", "device"),
    ("Server", "Physical", "device"),
    ("Server", "Virtual Machine", "device"),
    ("Printer", "Printer", "printer"),
    ("ESXi Host", "ESXi", "esxihost"),
    ("network", "physical", "rmmnetworkdevice"),
    ("Mobile", "Phone", "mobiledevice"),
];

const AV: [&str; 5] = [
    "RunningAndUpToDate",
    "RunningAndNotUpToDate",
    "NotRunning",
    "NotDetected",
    "RunningAndExpired",
];
const PATCH: [&str; 6] = [
    "FullyPatched",
    "ApprovedPending",
    "RebootRequired",
    "InstallError",
    "NoPolicy",
    "NoData",
];
const PRIORITIES: [&str; 7] = [
    "Critical",
    "High",
    "Moderate",
    "Low",
    "Information",
    "Unknown",
    "Emergency",
];

/// The alert contexts of Datto's samples, by `@class`.
fn context(i: usize) -> Value {
    match i % 7 {
        0 => {
            json!({"@class": "antivirus_ctx", "threatName": "Trojan.GenericKD.12345", "action": "Quarantined", "product": "Windows Defender"})
        }
        1 => {
            json!({"@class": "comp_script_ctx", "componentName": "Disk Cleanup", "exitCode": 1, "stdOut": "Cleanup failed: insufficient permissions"})
        }
        2 => {
            json!({"@class": "eventlog_ctx", "eventId": 1000, "eventSource": "Application Error", "eventLogName": "Application", "message": "Faulting application name: app.exe"})
        }
        3 => {
            json!({"@class": "online_offline_status_ctx", "previousStatus": "online", "currentStatus": "offline", "offlineDurationMinutes": 15})
        }
        4 => {
            json!({"@class": "patch_ctx", "patchTitle": "KB5001330", "severity": "Critical", "patchStatus": "InstallError"})
        }
        5 => {
            json!({"@class": "perf_resource_usage_ctx", "metric": "cpu", "thresholdPercent": 90, "observedPercent": 97.5, "durationMinutes": 5})
        }
        _ => json!({"@class": "disk_health_ctx_v2", "disk": "C:", "smart": {"reallocated": 12}}),
    }
}

const DIAGNOSTICS: [&str; 7] = [
    "Threat quarantined by antivirus",
    "Component script completed with a non-zero exit code",
    "Application crashed",
    "Device went offline",
    "Patch failed to install",
    "CPU usage above 90 % for 5 minutes",
    "Disk health warning",
];

/// Sites named like the Autotask sandbox's companies (the demo's PSA), devices and open
/// alerts.
pub fn generate(seed: Seed) -> DattoData {
    let (n, per_site) = match seed {
        Seed::Small => (14usize, 6u64),
        Seed::Large => (1_000, 10),
        Seed::Companies(n) => (n as usize, 6),
    };
    let autotask = crate::autotask::sandbox::generate(Seed::Small).companies;
    let mut rng = Rng::new(0x000D_A770);
    let mut d = DattoData::default();
    for i in 0..n {
        let id = 100 + i as i64;
        let uid = format!("{:08x}-{:04x}-4d1a-9c1e-{:012x}", 0x5173_0000 + i, i, id);
        let (name, identity) = match autotask.get(i) {
            // Two in three carry their Autotask company; the third only its name.
            Some(c) if i % 3 != 2 => (
                c.company_name.clone(),
                Some((c.id.to_string(), c.company_name.clone())),
            ),
            Some(c) => (c.company_name.clone(), None),
            None if i == autotask.len() => ("Main Site".to_string(), None),
            None if i == autotask.len() + 1 => ("MSP Internal - Lab".to_string(), None),
            None => (company_name(&mut rng, i), None),
        };
        d.sites.push(Site {
            id: Some(id),
            uid: Some(uid.clone()),
            account_uid: Some("demo-account".into()),
            name: Some(name),
            description: (i % 4 == 0).then(|| "Managed since 2024".to_string()),
            notes: None,
            on_demand: Some(i % 9 == 8),
            devices_status: None,
            autotask_company_id: identity.as_ref().map(|(id, _)| id.clone()),
            autotask_company_name: identity.map(|(_, n)| n),
            portal_url: Some(format!("https://merlot.centrastage.net/csm/site/{id}")),
        });
        let k = if matches!(seed, Seed::Small) {
            1 + rng.below(per_site)
        } else {
            per_site
        };
        for _ in 0..k {
            let did = 1_000 + d.devices.len() as i64;
            let (category, kind, class) = KINDS[d.devices.len() % KINDS.len()];
            let sparse = matches!(class, "rmmnetworkdevice" | "printer" | "mobiledevice");
            let online = if rng.chance(10) {
                None
            } else {
                Some(rng.chance(75))
            };
            let mut udf = std::collections::BTreeMap::new();
            udf.insert("udf1".to_string(), format!("CUST-{id}"));
            if rng.chance(30) {
                udf.insert("udf5".to_string(), "Finance".to_string());
            }
            if rng.chance(10) {
                udf.insert("udf300".to_string(), format!("asset-{did}"));
            }
            let seen = BASE_MS - rng.below(7 * 24 * 3_600_000) as i64;
            d.devices.push(Device {
                id: Some(did),
                uid: Some(format!("dev-{did:06}-{:08x}", rng.next_u64() as u32)),
                site_id: Some(id),
                site_uid: Some(uid.clone()),
                site_name: d.sites.last().and_then(|s| s.name.clone()),
                device_type: Some(DeviceType {
                    category: Some(category.into()),
                    kind: Some(kind.into()),
                }),
                hostname: Some(format!("{}-{did}", kind.replace(' ', "").to_uppercase())),
                int_ip_address: Some(format!("10.{}.{}.{}", i % 250, did % 250, 10 + did % 200)),
                operating_system: (!sparse).then(|| rng.pick(&OS).to_string()),
                last_logged_in_user: (!sparse).then(|| format!("CORP\\user{did}")),
                domain: (!sparse).then(|| "corp.local".to_string()),
                cag_version: (!sparse).then(|| "4.4.2208.2208".to_string()),
                display_version: (!sparse).then(|| "13.3.0".to_string()),
                ext_ip_address: (!sparse).then(|| format!("203.0.113.{}", did % 250)),
                description: None,
                a64_bit: (!sparse).then_some(true),
                reboot_required: (!sparse).then(|| rng.chance(20)),
                online,
                suspended: Some(false),
                deleted: Some(false),
                last_seen: Some(seen),
                last_reboot: (!sparse).then_some(seen - 86_400_000),
                last_audit_date: Some(seen - 3_600_000),
                creation_date: Some(BASE_MS - 200 * 86_400_000),
                udf: Some(udf),
                snmp_enabled: Some(class == "rmmnetworkdevice"),
                device_class: Some(class.into()),
                portal_url: Some(format!("https://merlot.centrastage.net/csm/device/{did}")),
                warranty_date: (!sparse).then(|| "2027-06-30".to_string()),
                antivirus: (!sparse).then(|| Antivirus {
                    antivirus_product: Some("Windows Defender".into()),
                    antivirus_status: Some(rng.pick(&AV).to_string()),
                }),
                patch_management: (!sparse).then(|| PatchManagement {
                    patch_status: Some(rng.pick(&PATCH).to_string()),
                    patches_approved_pending: Some(rng.below(5) as i64),
                    patches_not_approved: Some(rng.below(3) as i64),
                    patches_installed: Some(50 + rng.below(100) as i64),
                }),
                software_status: None,
                web_remote_url: None,
                manufacturer: None,
                model: None,
                serial_number: None,
            });
        }
    }
    // Site device counts as Datto reports them.
    for s in &mut d.sites {
        let mine: Vec<&Device> = d.devices.iter().filter(|x| x.site_uid == s.uid).collect();
        let online = mine.iter().filter(|x| x.online == Some(true)).count() as i64;
        s.devices_status = Some(DevicesStatus {
            number_of_devices: Some(mine.len() as i64),
            number_of_online_devices: Some(online),
            number_of_offline_devices: Some(mine.len() as i64 - online),
        });
    }
    let devices: Vec<(String, String, String, String)> = d
        .devices
        .iter()
        .step_by(3)
        .map(|x| {
            (
                x.uid.clone().unwrap_or_default(),
                x.hostname.clone().unwrap_or_default(),
                x.site_uid.clone().unwrap_or_default(),
                x.site_name.clone().unwrap_or_default(),
            )
        })
        .collect();
    for (i, (dev, host, site, site_name)) in devices.into_iter().enumerate() {
        d.alerts.push(Alert {
            alert_uid: Some(format!("alert-{i:05}-{:08x}", rng.next_u64() as u32)),
            priority: Some(PRIORITIES[i % PRIORITIES.len()].to_string()),
            diagnostics: (i % 5 != 4).then(|| DIAGNOSTICS[i % 7].to_string()),
            resolved: Some(false),
            resolved_by: None,
            resolved_on: None,
            muted: Some(i % 6 == 5),
            ticket_number: (i % 4 == 0).then(|| format!("T2026110{}.00{i:02}", i % 10)),
            timestamp: Some(BASE_MS - (i as i64) * 600_000),
            alert_monitor_info: Some(AlertMonitorInfo {
                sends_emails: Some(true),
                creates_ticket: Some(i % 4 == 0),
            }),
            alert_context: Some(context(i)),
            alert_source_info: Some(AlertSourceInfo {
                device_uid: Some(dev),
                device_name: Some(host),
                site_uid: Some(site),
                site_name: Some(site_name),
            }),
            response_actions: None,
            autoresolve_mins: (i % 3 == 0).then_some(60),
        });
    }
    d
}

impl DattoSandbox {
    pub fn new(seed: Seed) -> Self {
        Self {
            inner: Arc::new(Inner {
                data: RwLock::new(generate(seed)),
                page_size: Mutex::new(DEFAULT_PAGE_SIZE),
                token_life: Mutex::new(Duration::from_secs(100 * 3600)),
                tokens: Mutex::new(HashMap::new()),
                token_requests: AtomicU64::new(0),
                api_requests: AtomicU64::new(0),
                seen: Mutex::new(Vec::new()),
                arrivals: Mutex::new(Vec::new()),
                limit: Mutex::new(AccountLimit::default()),
                rate: Mutex::new(RateState::default()),
                raw: Mutex::new(Vec::new()),
            }),
            faults: Faults::default(),
        }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/auth/oauth/token", post(token))
            .route("/api/{*rest}", any(api))
            .with_state(self.inner.clone())
            .layer(axum::middleware::from_fn_with_state(
                self.faults.clone(),
                mspbridge_sandbox::inject_faults,
            ))
    }

    pub fn serve(&self, listener: TcpListener) -> std::io::Result<SandboxHandle> {
        mspbridge_sandbox::serve(self.router(), listener)
    }

    /// The API base to configure the connector with (`DattoSettings::api_base`).
    pub fn api_base(handle: &SandboxHandle) -> String {
        format!("https://{}", handle.host())
    }

    pub fn with_data<R>(&self, f: impl FnOnce(&mut DattoData) -> R) -> R {
        match self.inner.data.write() {
            Ok(mut d) => f(&mut d),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// The account's page size (`/v2/system/pagination`), also the largest `max` served.
    pub fn set_page_size(&self, n: usize) {
        *lock(&self.inner.page_size) = n.max(1);
    }

    /// How long tokens granted from now on live.
    pub fn set_token_life(&self, life: Duration) {
        *lock(&self.inner.token_life) = life;
    }

    /// Every token granted so far is refused from now on (401).
    pub fn revoke_tokens(&self) {
        lock(&self.inner.tokens).clear();
    }

    pub fn set_limit(&self, limit: AccountLimit) {
        *lock(&self.inner.limit) = limit;
        *lock(&self.inner.rate) = RateState::default();
    }

    /// Token requests received (refused ones included).
    pub fn token_requests(&self) -> u64 {
        self.inner.token_requests.load(Ordering::Relaxed)
    }

    /// API requests received (everything but token requests).
    pub fn api_requests(&self) -> u64 {
        self.inner.api_requests.load(Ordering::Relaxed)
    }

    pub fn seen(&self) -> Vec<SeenRequest> {
        lock(&self.inner.seen).clone()
    }

    /// `n` requests of the MSP's other tools, arriving now: they count against the account's
    /// window (and show in `/v2/system/request_rate`), not as this client's.
    pub fn other_tools(&self, n: usize) {
        let now = Instant::now();
        lock(&self.inner.rate)
            .admitted
            .extend(std::iter::repeat_n(now, n));
    }

    /// The most API requests the limit admitted within any `window`.
    pub fn max_in_any(&self, window: Duration) -> usize {
        let a = lock(&self.inner.arrivals);
        let mut best = 0;
        let mut start = 0;
        for end in 0..a.len() {
            while a[end].duration_since(a[start]) >= window {
                start += 1;
            }
            best = best.max(end + 1 - start);
        }
        best
    }

    /// Serves `field` of the record `uid` in `collection` (`sites`, `devices`, `alerts`) as
    /// `value`: tests send rows a connector cannot read with it.
    pub fn set_raw_field(&self, collection: &str, uid: &str, field: &str, value: Value) {
        lock(&self.inner.raw).push((collection.into(), uid.into(), field.into(), Some(value)));
    }

    /// Leaves `field` out of the record `uid` in `collection`.
    pub fn remove_raw_field(&self, collection: &str, uid: &str, field: &str) {
        lock(&self.inner.raw).push((collection.into(), uid.into(), field.into(), None));
    }
}

fn answer(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    answer(
        status,
        json!({"error": error, "error_description": description}),
    )
}

async fn token(State(s): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    s.token_requests.fetch_add(1, Ordering::Relaxed);
    lock(&s.seen).push(SeenRequest {
        method: "POST".into(),
        path: "/auth/oauth/token".into(),
        query: vec![],
    });
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("public-client:public")
    );
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(basic.as_str())
    {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Full authentication is required to access this resource",
        );
    }
    let form: HashMap<String, String> = match serde_urlencoded_pairs(&body) {
        Some(f) => f,
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "The body is not a form",
            );
        }
    };
    if form.get("grant_type").map(String::as_str) != Some("password") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Unsupported grant type",
        );
    }
    let user = form.get("username").map(String::as_str).unwrap_or_default();
    let pass = form.get("password").map(String::as_str).unwrap_or_default();
    let limited = match (user, pass) {
        (DEMO_API_KEY, DEMO_API_SECRET) => false,
        (LIMITED_API_KEY, LIMITED_API_SECRET) => true,
        _ => {
            return oauth_error(StatusCode::UNAUTHORIZED, "invalid_grant", "Bad credentials");
        }
    };
    let life = *lock(&s.token_life);
    let n = s.token_requests.load(Ordering::Relaxed);
    let value = format!("datto-sandbox-{n}-{:016x}", Rng::new(n).next_u64());
    lock(&s.tokens).insert(value.clone(), (Instant::now() + life, limited));
    answer(
        StatusCode::OK,
        json!({
            "access_token": value,
            "token_type": "bearer",
            "expires_in": life.as_secs().max(1),
            "scope": "default",
            "jti": format!("jti-{n}"),
        }),
    )
}

/// `a=b&c=d` with percent- and `+`-decoding.
fn serde_urlencoded_pairs(body: &[u8]) -> Option<HashMap<String, String>> {
    let text = std::str::from_utf8(body).ok()?;
    let decode = |s: &str| -> Option<String> {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = s.get(i + 1..i + 3)?;
                    out.push(u8::from_str_radix(hex, 16).ok()?);
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).ok()
    };
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((decode(k)?, decode(v)?))
        })
        .collect()
}

fn admit(s: &Inner) -> Admission {
    let limit = *lock(&s.limit);
    let mut r = lock(&s.rate);
    let now = Instant::now();
    if let Some(until) = r.blocked_until {
        if now < until {
            return Admission::Blocked;
        }
        r.blocked_until = None;
    }
    while r
        .admitted
        .front()
        .is_some_and(|t| now.duration_since(*t) >= limit.window)
    {
        r.admitted.pop_front();
    }
    while r
        .refused
        .front()
        .is_some_and(|t| now.duration_since(*t) >= limit.window)
    {
        r.refused.pop_front();
    }
    if r.admitted.len() >= limit.requests {
        r.refused.push_back(now);
        if r.refused.len() > limit.block_after {
            r.blocked_until = Some(now + limit.block_for);
            r.refused.clear();
            return Admission::Blocked;
        }
        let free_in = r
            .admitted
            .front()
            .map(|t| (*t + limit.window).saturating_duration_since(now))
            .unwrap_or_default();
        return Admission::TooMany(free_in.as_secs_f64().ceil().max(1.0) as u64);
    }
    r.admitted.push_back(now);
    let mut arrivals = lock(&s.arrivals);
    // A long-running sandbox keeps the recent past only.
    if arrivals.len() >= 200_000 {
        arrivals.drain(..100_000);
    }
    arrivals.push(now);
    drop(arrivals);
    if r.admitted.len() * 10 > limit.requests * 9 {
        Admission::Slow(limit.slow_delay)
    } else {
        Admission::Go
    }
}

async fn api(
    State(s): State<Arc<Inner>>,
    Path(rest): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    method: Method,
) -> Response {
    s.api_requests.fetch_add(1, Ordering::Relaxed);
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string();
    {
        let mut query: Vec<(String, String)> =
            q.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        query.sort();
        lock(&s.seen).push(SeenRequest {
            method: method.to_string(),
            path: format!("/api/{rest}"),
            query,
        });
    }
    match admit(&s) {
        Admission::Blocked => {
            return answer(
                StatusCode::FORBIDDEN,
                json!({"message": "Access denied: too many requests from this IP address"}),
            );
        }
        Admission::TooMany(after) => {
            let mut r = answer(
                StatusCode::TOO_MANY_REQUESTS,
                json!({"message": "Rate limit exceeded"}),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(after));
            return r;
        }
        Admission::Slow(d) => tokio::time::sleep(d).await,
        Admission::Go => {}
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let limited = {
        let mut tokens = lock(&s.tokens);
        match tokens.get(bearer) {
            Some((until, limited)) if Instant::now() < *until => *limited,
            Some(_) => {
                tokens.remove(bearer);
                return oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_token",
                    "Access token expired",
                );
            }
            None => {
                return oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_token",
                    "Invalid access token",
                );
            }
        }
    };
    let parts: Vec<&str> = rest.split('/').collect();
    if limited && parts.iter().any(|p| p.starts_with("alert")) {
        return answer(
            StatusCode::FORBIDDEN,
            json!({"message": "Authenticated user doesn't have access to this resource."}),
        );
    }
    let page_size = *lock(&s.page_size);
    if method == Method::POST {
        return match parts.as_slice() {
            ["v2", "alert", uid, "resolve"] => resolve(&s, uid),
            _ => answer(StatusCode::NOT_FOUND, json!({"message": "Not Found"})),
        };
    }
    if method != Method::GET {
        return answer(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"message": "Method Not Allowed"}),
        );
    }
    let data = match s.data.read() {
        Ok(d) => d,
        Err(p) => p.into_inner(),
    };
    match parts.as_slice() {
        ["v2", "system", "pagination"] => answer(StatusCode::OK, json!({"max": page_size})),
        ["v2", "account"] => {
            let live: Vec<&Device> = data
                .devices
                .iter()
                .filter(|d| d.deleted != Some(true))
                .collect();
            let online = live.iter().filter(|d| d.online == Some(true)).count();
            answer(
                StatusCode::OK,
                json!({
                    "id": 4242,
                    "uid": "demo-account",
                    "name": "mspbridge Demo MSP",
                    "currency": "USD",
                    "descriptor": {"bilingEmail": "billing@msp.example", "deviceLimit": 5000, "timeZone": "Europe/London"},
                    "devicesStatus": {
                        "numberOfDevices": live.len(),
                        "numberOfOnlineDevices": online,
                        "numberOfOfflineDevices": live.len() - online,
                        "numberOfOnDemandDevices": 0,
                        "numberOfManagedDevices": live.len(),
                    },
                }),
            )
        }
        ["v2", "system", "request_rate"] => {
            let limit = *lock(&s.limit);
            let count = lock(&s.rate).admitted.len();
            answer(
                StatusCode::OK,
                json!({
                    "slidingTimeWindowSizeSeconds": limit.window.as_secs(),
                    "accountUid": "demo-account",
                    "accountCount": count,
                    "accountRateLimit": limit.requests,
                    "accountCutOffRatio": 0.9,
                    "accountWriteRateLimit": 600,
                    "accountWriteCount": 0,
                    "operationWriteStatus": {},
                }),
            )
        }
        ["v2", "account", "sites"] => list(&s, &host, &rest, "sites", &data.sites, &q, page_size),
        ["v2", "account", "devices"] => {
            list(&s, &host, &rest, "devices", &data.devices, &q, page_size)
        }
        ["v2", "account", "alerts", "open"] => {
            let muted = q.get("muted").map(|m| m == "true");
            let open: Vec<&Alert> = data
                .alerts
                .iter()
                .filter(|a| a.resolved != Some(true))
                .filter(|a| muted.is_none_or(|m| a.muted.unwrap_or(false) == m))
                .collect();
            list(&s, &host, &rest, "alerts", &open, &q, page_size)
        }
        ["v2", "device", uid] => match data.devices.iter().find(|d| d.uid.as_deref() == Some(*uid))
        {
            Some(d) => answer(StatusCode::OK, serde_json::to_value(d).unwrap_or_default()),
            None => answer(
                StatusCode::NOT_FOUND,
                json!({"message": "Device not found"}),
            ),
        },
        ["v2", "alert", uid] => match data
            .alerts
            .iter()
            .find(|a| a.alert_uid.as_deref() == Some(*uid))
        {
            Some(a) => answer(StatusCode::OK, serde_json::to_value(a).unwrap_or_default()),
            None => answer(StatusCode::NOT_FOUND, json!({"message": "Alert not found"})),
        },
        _ => answer(StatusCode::NOT_FOUND, json!({"message": "Not Found"})),
    }
}

fn resolve(s: &Inner, uid: &str) -> Response {
    let mut data = match s.data.write() {
        Ok(d) => d,
        Err(p) => p.into_inner(),
    };
    match data
        .alerts
        .iter_mut()
        .find(|a| a.alert_uid.as_deref() == Some(uid))
    {
        None => answer(StatusCode::NOT_FOUND, json!({"message": "Alert not found"})),
        Some(a) if a.resolved == Some(true) => answer(
            StatusCode::CONFLICT,
            json!({"message": "Alert is already resolved"}),
        ),
        Some(a) => {
            a.resolved = Some(true);
            a.resolved_by = Some("API".into());
            a.resolved_on = Some(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or_default(),
            );
            StatusCode::OK.into_response()
        }
    }
}

/// One 0-based page of `rows`, raw edits applied, with Datto's `pageDetails`. Only the
/// page is turned into JSON, so a page costs the same however long the list is.
fn list<T: serde::Serialize>(
    s: &Inner,
    host: &str,
    rest: &str,
    key: &str,
    rows: &[T],
    q: &HashMap<String, String>,
    page_size: usize,
) -> Response {
    let max = q
        .get("max")
        .and_then(|m| m.parse::<usize>().ok())
        .filter(|m| *m > 0)
        .unwrap_or(page_size)
        .min(page_size);
    let page = q
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(0);
    let total = rows.len();
    let start = page.saturating_mul(max).min(total);
    let end = (start + max).min(total);
    let Ok(Value::Array(mut out)) = serde_json::to_value(&rows[start..end]) else {
        return answer(StatusCode::INTERNAL_SERVER_ERROR, json!({}));
    };
    let raw = lock(&s.raw);
    for row in &mut out {
        let uid = row
            .get("uid")
            .or_else(|| row.get("alertUid"))
            .and_then(|u| u.as_str())
            .map(str::to_string);
        for (c, u, field, value) in raw.iter() {
            if c == key
                && uid.as_deref() == Some(u.as_str())
                && let Value::Object(o) = row
            {
                match value {
                    Some(v) => o.insert(field.clone(), v.clone()),
                    None => o.remove(field),
                };
            }
        }
    }
    let url = |p: usize| format!("http://{host}/api/{rest}?max={max}&page={p}");
    let mut m = serde_json::Map::new();
    m.insert(
        "pageDetails".into(),
        json!({
            "count": out.len(),
            "totalCount": total,
            "prevPageUrl": if page > 0 { Value::from(url(page - 1)) } else { Value::Null },
            "nextPageUrl": if end < total { Value::from(url(page + 1)) } else { Value::Null },
        }),
    );
    m.insert(key.into(), Value::Array(out));
    answer(StatusCode::OK, Value::Object(m))
}
