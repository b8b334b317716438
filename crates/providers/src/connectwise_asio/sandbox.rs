//! ConnectWise Asio played on loopback for tests and `mspbridge sandbox connectwise_asio`,
//! at the root of its address as `https://openapi.service.itsupport247.net` would be:
//!
//! - `POST /v1/token` (JSON body, client credentials; a wrong secret → 401
//!   `{error, description}`; the granted scopes are the requested ones the client has;
//!   tokens live an hour, a life tests can shorten, and can be revoked);
//! - `GET /v1/rate_limits` and per-operation rate buckets (fixed windows; an empty bucket
//!   answers 429 with `Retry-After`);
//! - `GET /api/platform/v1/company/companies` and `/company/sites` (unpaged arrays);
//! - `POST /api/platform/v2/device/categories/{category}/endpoints` with its mandatory body
//!   (at most 4 companies: 400 `{code, message}` past it), `field` projection (minimal
//!   fields without it, 400 past 15 fields), `limit`/`cursor` paging up to a page size
//!   tests can set, the next page in a `Link` header;
//! - `GET /api/platform/v2/device/endpoints/heartbeat` (bulk, at most 100 ids);
//! - `GET /api/platform/v2/device/companies/{c}/sites/{s}/endpoints/{e}` (the category's
//!   object with hardware, users and MAC addresses; `field` projection, 400 past 15
//!   fields; 404 for an endpoint not in that company and site);
//! - `GET /api/platform/v2/patching/{e}/patches` (`summary` and `patches` for platform
//!   endpoints with an OS, 404 `Endpoint patches not found` otherwise);
//! - `GET /api/platform/v1/service/ticketing/statuses` (unpaged) and
//!   `GET /api/platform/v2/service/ticketing/tickets` with `pageSize` and `pageNum` (one
//!   without the other: 400 `{errors: [...]}`; a page past the end: no rows and
//!   `totalCount` 0) and the `statusIds=[notIn],…` filter;
//! - a missing scope → 403 `{message, payload, type}`; `Origin`, `User-Agent` and
//!   `X-Request-ID` are required on every call (400 without them);
//! - fault injection, request counts and recording, raw field edits.
//!
//! Seeded companies carry the names of the ConnectWise sandbox's companies (the demo's
//! PSA), two in three with an `externalIds` entry naming that company's ConnectWise
//! Manage id; endpoints of every category and several types (one the spec does not know),
//! with nulls; heartbeats for most of them.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use mspbridge_sandbox::names::company_name;
use mspbridge_sandbox::{Faults, Rng, SandboxHandle, Seed};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::client::{SCOPES, ops};
use super::wire::{
    ActivityStatus, Antivirus, Company, Endpoint, ExternalId, Os, Reference, Site, System, Ticket,
    TicketStatus,
};

pub const DEMO_ENVIRONMENT: &str = "na";
pub const DEMO_CLIENT_ID: &str = "0e30d3m0-a510-4c1e-8e77-c11e47a510d0";
pub const DEMO_CLIENT_SECRET: &str = "demo-asio-secret/with+symbols=";
/// An API key granted companies and sites but not devices.
pub const LIMITED_CLIENT_ID: &str = "0e30117d-a510-4c1e-8e77-11m17edc11e0";
pub const LIMITED_CLIENT_SECRET: &str = "limited-asio-secret";
/// The `productId` seeded external ids carry for ConnectWise Manage.
pub const MANAGE_PRODUCT: &str = "ConnectWise Manage";

/// Asio's largest endpoints page.
pub const DEFAULT_PAGE_SIZE: usize = 500;

/// One endpoint where Asio keeps it.
#[derive(Debug, Clone)]
pub struct Placed {
    pub company_id: String,
    pub site_id: String,
    /// platform | network | cloud
    pub category: String,
    pub endpoint: Endpoint,
}

#[derive(Debug, Clone, Default)]
pub struct AsioData {
    pub companies: Vec<Company>,
    pub sites: Vec<Site>,
    pub endpoints: Vec<Placed>,
    /// endpoint id → (availability, last contact); endpoints without one are "Not Found".
    pub heartbeats: HashMap<String, (Option<bool>, String)>,
    pub statuses: Vec<TicketStatus>,
    pub tickets: Vec<Ticket>,
}

/// (id, name, category): one category the spec does not list.
const STATUSES: [(&str, &str, &str); 5] = [
    ("5a7e0000-0000-4000-8000-000000000001", "New", "New"),
    (
        "5a7e0000-0000-4000-8000-000000000002",
        "In Progress",
        "InProgress",
    ),
    (
        "5a7e0000-0000-4000-8000-000000000003",
        "Waiting on Vendor",
        "Pending",
    ),
    ("5a7e0000-0000-4000-8000-000000000004", "Closed", "Closed"),
    ("5a7e0000-0000-4000-8000-000000000005", "Resolved", "Closed"),
];

const TICKET_PRIORITIES: [&str; 5] = ["Critical", "High", "Medium", "Low", "P5 - Planning"];
const TICKET_SUMMARIES: [&str; 4] = [
    "Disk C: below 10% free space",
    "Agent offline for more than 24 hours",
    "Critical Windows updates missing",
    "Backup job failed",
];

/// One request as the sandbox received it (token requests included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub request_id: Option<String>,
    /// JSON body, when one came.
    pub body: Option<Value>,
}

/// Each rate bucket's size and window.
#[derive(Debug, Clone, Copy)]
pub struct BucketLimit {
    pub limit: i64,
    pub window: Duration,
}

impl Default for BucketLimit {
    fn default() -> Self {
        Self {
            limit: 10_000,
            window: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct BucketState {
    used: i64,
    /// Epoch seconds.
    reset: i64,
}

struct Inner {
    data: RwLock<AsioData>,
    page_size: Mutex<usize>,
    token_life: Mutex<Duration>,
    /// token → (expiry, scopes)
    tokens: Mutex<HashMap<String, (Instant, Vec<String>)>>,
    token_requests: AtomicU64,
    api_requests: AtomicU64,
    too_many: AtomicU64,
    /// A token request naming a scope the client lacks is refused (400 `invalid_scope`)
    /// instead of granting the others.
    strict_scopes: std::sync::atomic::AtomicBool,
    seen: Mutex<Vec<SeenRequest>>,
    bucket_limit: Mutex<BucketLimit>,
    buckets: Mutex<HashMap<String, BucketState>>,
    raw: Mutex<Vec<RawEdit>>,
}

/// (collection, id, field, value; `None` removes the field)
type RawEdit = (String, String, String, Option<Value>);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Clone)]
pub struct AsioSandbox {
    inner: Arc<Inner>,
    pub faults: Faults,
}

const OS: [(&str, &str); 5] = [
    ("Microsoft Windows 11 Pro", "10.0.22631"),
    ("Microsoft Windows 10 Pro", "10.0.19045"),
    ("Microsoft Windows Server 2022 Standard", "10.0.20348"),
    ("macOS", "14.5"),
    ("Ubuntu", "22.04.4 LTS"),
];

/// (category, endpointType, type, virtualType): every category, one type the spec does
/// not know.
const KINDS: [(&str, &str, &str, Option<&str>); 7] = [
    ("platform", "Desktop", "Desktop", Some("Physical")),
    ("platform", "Laptop", "Desktop", Some("Physical")),
    ("platform", "Server", "Server", Some("Guest")),
    ("platform", "Server", "Server", Some("Host")),
    ("network", "Firewall", "Firewall", None),
    ("cloud", "CloudTenant", "Cloud", None),
    ("platform", "QuantumNode", "Quantum", None),
];

fn uuid(rng: &mut Rng, tag: u32) -> String {
    let a = rng.next_u64();
    let b = rng.next_u64();
    format!(
        "{tag:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        (a >> 48) as u16,
        (a & 0xfff) as u16,
        0x8000 | ((b >> 48) as u16 & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

/// Companies named like the ConnectWise sandbox's companies, their sites, endpoints and
/// heartbeats.
pub fn generate(seed: Seed) -> AsioData {
    let (n, per) = match seed {
        Seed::Small => (14usize, 6u64),
        Seed::Large => (1_000, 10),
        Seed::Companies(n) => (n as usize, 6),
    };
    let cw = crate::connectwise::sandbox::generate(Seed::Small).companies;
    let mut rng = Rng::new(0x0A51_0000);
    let mut d = AsioData {
        statuses: STATUSES
            .iter()
            .map(|(id, name, category)| TicketStatus {
                id: Some((*id).into()),
                name: Some((*name).into()),
                category: Some((*category).into()),
            })
            .collect(),
        ..Default::default()
    };
    for i in 0..n {
        let id = uuid(&mut rng, 0xC0_0000 + i as u32);
        let site_id = uuid(&mut rng, 0x51_0000 + i as u32);
        let (name, manage_id) = match cw.get(i) {
            // Two in three carry their ConnectWise Manage company; the third only its name.
            Some(c) if i % 3 != 2 => (c.name.clone(), Some(c.id.to_string())),
            Some(c) => (c.name.clone(), None),
            None => (company_name(&mut rng, i), None),
        };
        let mut external_ids = Vec::new();
        if i % 5 == 1 {
            external_ids.push(ExternalId {
                product_id: Some("IT Glue".into()),
                external_id: Some(format!("itg-{i}")),
                ..Default::default()
            });
        }
        if let Some(m) = manage_id {
            external_ids.push(ExternalId {
                company_id: Some(id.clone()),
                external_id: Some(m),
                id: Some(format!("map-{i}")),
                product_id: Some(MANAGE_PRODUCT.into()),
                product_instance_id: Some("cw-demo".into()),
            });
        }
        d.companies.push(Company {
            id: Some(id.clone()),
            name: Some(name.clone()),
            friendly_name: (i % 4 == 0).then(|| name.clone()),
            description: (i % 4 == 0).then(|| "Managed since 2024".to_string()),
            external_ids: Some(external_ids),
            activity_status: Some(ActivityStatus {
                active_flag: Some(true),
                name: Some("Active".into()),
            }),
            primary_site: Some(Reference {
                id: Some(site_id.clone()),
                name: Some("Main Office".into()),
            }),
            created_date: Some("2024-03-01T00:00:00Z".into()),
            updated_date: None,
            deleted_date: None,
            inactive_date: None,
        });
        d.sites.push(Site {
            id: Some(site_id.clone()),
            name: Some("Main Office".into()),
            company: Some(Reference {
                id: Some(id.clone()),
                name: Some(name),
            }),
            time_zone: Some("America/New_York".into()),
        });
        let k = if matches!(seed, Seed::Small) {
            1 + rng.below(per)
        } else {
            per
        };
        for _ in 0..k {
            let n_dev = d.endpoints.len();
            let (category, etype, kind, virt) = KINDS[n_dev % KINDS.len()];
            let eid = uuid(&mut rng, 0xE0_0000 + n_dev as u32);
            let sparse = category != "platform" || etype == "QuantumNode";
            let (os, ver) = *rng.pick(&OS);
            let host = format!("{}-{:04}", etype.to_uppercase(), n_dev);
            d.endpoints.push(Placed {
                company_id: id.clone(),
                site_id: site_id.clone(),
                category: category.into(),
                endpoint: Endpoint {
                    endpoint_id: Some(eid.clone()),
                    device_name: Some(host.clone()),
                    friendly_name: n_dev
                        .is_multiple_of(3)
                        .then(|| format!("{host} (front desk)")),
                    resource_type: Some("MANAGED_ENDPOINT".into()),
                    endpoint_type: Some(etype.into()),
                    kind: Some(kind.into()),
                    sub_resource_type: None,
                    virtual_type: virt.map(str::to_string),
                    ip_address: (!sparse).then(|| {
                        vec![format!(
                            "10.{}.{}.{}",
                            i % 250,
                            n_dev % 250,
                            10 + n_dev % 200
                        )]
                    }),
                    remote_address: (!sparse).then(|| format!("203.0.113.{}", n_dev % 250)),
                    os: (!sparse).then(|| Os {
                        product: Some(os.into()),
                        version: Some(ver.into()),
                        build_number: None,
                        kind: None,
                        manufacturer: None,
                    }),
                    system: (!sparse).then(|| System {
                        product: None,
                        manufacturer: Some("Dell Inc.".into()),
                        model: Some("OptiPlex 7090".into()),
                        serial_number: Some(format!("SN{n_dev:06}")),
                        system_name: Some(host.clone()),
                        domain: Some("corp.local".into()),
                        category: None,
                    }),
                    anti_viruses: (!sparse).then(|| {
                        vec![Antivirus {
                            name: Some("Microsoft Defender".into()),
                            version: Some("4.18".into()),
                            application_name: None,
                        }]
                    }),
                    created_at: chrono::DateTime::from_timestamp(
                        1_720_000_000 + n_dev as i64 * 3_600,
                        0,
                    ),
                    modified_at: None,
                    agent_installed_utc: None,
                },
            });
            // One ticket in four endpoints (not on the large seed): open or closed.
            if !matches!(seed, Seed::Large) && n_dev.is_multiple_of(4) {
                let t = d.tickets.len();
                let (sid, sname, _) = STATUSES[t % STATUSES.len()];
                d.tickets.push(Ticket {
                    id: Some(uuid(&mut rng, 0x7C_0000 + t as u32)),
                    number: Some(format!("{}", 40_100 + t)),
                    summary: Some(format!(
                        "{} on {host}",
                        TICKET_SUMMARIES[t % TICKET_SUMMARIES.len()]
                    )),
                    priority: Some(Reference {
                        id: Some(format!("p{}", (t + t / 5) % TICKET_PRIORITIES.len())),
                        name: Some(TICKET_PRIORITIES[(t + t / 5) % TICKET_PRIORITIES.len()].into()),
                    }),
                    status: Some(Reference {
                        id: Some(sid.into()),
                        name: Some(sname.into()),
                    }),
                    company: Some(Reference {
                        id: Some(id.clone()),
                        name: None,
                    }),
                    site: Some(Reference {
                        id: Some(site_id.clone()),
                        name: None,
                    }),
                    assets: Some(vec![Reference {
                        id: Some(eid.clone()),
                        name: None,
                    }]),
                    source: Some(Reference {
                        id: None,
                        name: Some("Monitoring".into()),
                    }),
                    service_board: Some(Reference {
                        id: None,
                        name: Some("NOC".into()),
                    }),
                    kind: Some(Reference {
                        id: None,
                        name: Some("Alert".into()),
                    }),
                    created_at: chrono::DateTime::from_timestamp(1_764_000_000 + t as i64 * 600, 0),
                    updated_at: None,
                });
            }
            if !rng.chance(10) {
                let online = if rng.chance(10) {
                    None
                } else {
                    Some(rng.chance(75))
                };
                d.heartbeats
                    .insert(eid, (online, "2026-11-28T05:16:43.565Z".to_string()));
            }
        }
    }
    d
}

impl AsioSandbox {
    pub fn new(seed: Seed) -> Self {
        Self::with(generate(seed))
    }

    pub fn with(data: AsioData) -> Self {
        Self {
            inner: Arc::new(Inner {
                data: RwLock::new(data),
                page_size: Mutex::new(DEFAULT_PAGE_SIZE),
                token_life: Mutex::new(Duration::from_secs(3_599)),
                tokens: Mutex::new(HashMap::new()),
                token_requests: AtomicU64::new(0),
                api_requests: AtomicU64::new(0),
                too_many: AtomicU64::new(0),
                strict_scopes: std::sync::atomic::AtomicBool::new(false),
                seen: Mutex::new(Vec::new()),
                bucket_limit: Mutex::new(BucketLimit::default()),
                buckets: Mutex::new(HashMap::new()),
                raw: Mutex::new(Vec::new()),
            }),
            faults: Faults::default(),
        }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/token", post(token))
            .route("/v1/rate_limits", get(rate_limits))
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

    /// The API base to configure the connector with (`AsioSettings::api_base`).
    pub fn api_base(handle: &SandboxHandle) -> String {
        format!("https://{}", handle.host())
    }

    pub fn with_data<R>(&self, f: impl FnOnce(&mut AsioData) -> R) -> R {
        match self.inner.data.write() {
            Ok(mut d) => f(&mut d),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// The largest `limit` served.
    pub fn set_page_size(&self, n: usize) {
        *lock(&self.inner.page_size) = n.max(1);
    }

    pub fn set_token_life(&self, life: Duration) {
        *lock(&self.inner.token_life) = life;
    }

    /// Every token granted so far is refused from now on (401).
    pub fn revoke_tokens(&self) {
        lock(&self.inner.tokens).clear();
    }

    /// Every operation's bucket from now on (buckets start full).
    pub fn set_bucket_limit(&self, limit: BucketLimit) {
        *lock(&self.inner.bucket_limit) = limit;
        lock(&self.inner.buckets).clear();
    }

    /// Refuse token requests naming a scope the client lacks (400 `invalid_scope`).
    pub fn set_strict_scopes(&self, strict: bool) {
        self.inner.strict_scopes.store(strict, Ordering::Relaxed);
    }

    pub fn token_requests(&self) -> u64 {
        self.inner.token_requests.load(Ordering::Relaxed)
    }

    pub fn api_requests(&self) -> u64 {
        self.inner.api_requests.load(Ordering::Relaxed)
    }

    /// 429s answered because a bucket was empty.
    pub fn too_many_requests(&self) -> u64 {
        self.inner.too_many.load(Ordering::Relaxed)
    }

    pub fn seen(&self) -> Vec<SeenRequest> {
        lock(&self.inner.seen).clone()
    }

    /// Serves `field` of the record `id` in `collection` (`companies`, `endpoints`) as
    /// `value`.
    pub fn set_raw_field(&self, collection: &str, id: &str, field: &str, value: Value) {
        lock(&self.inner.raw).push((collection.into(), id.into(), field.into(), Some(value)));
    }

    pub fn remove_raw_field(&self, collection: &str, id: &str, field: &str) {
        lock(&self.inner.raw).push((collection.into(), id.into(), field.into(), None));
    }
}

fn answer(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// `{code, message}`: the device service's shape.
fn bad_request(message: &str) -> Response {
    answer(
        StatusCode::BAD_REQUEST,
        json!({"code": "400", "message": message}),
    )
}

fn epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

fn record(
    s: &Inner,
    method: &str,
    path: &str,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Option<Value>,
) {
    let mut query: Vec<(String, String)> = q.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    query.sort();
    lock(&s.seen).push(SeenRequest {
        method: method.into(),
        path: path.into(),
        query,
        request_id: headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body,
    });
}

/// The headers the spec requires on every call.
fn missing_headers(headers: &HeaderMap) -> Option<Response> {
    for h in ["origin", "user-agent", "x-request-id"] {
        if headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| v.trim().is_empty())
        {
            return Some(bad_request(&format!("missing required header {h}")));
        }
    }
    None
}

async fn token(State(s): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    s.token_requests.fetch_add(1, Ordering::Relaxed);
    // The scope asked for is kept; the secret is not.
    let asked_scope = serde_json::from_slice::<Value>(&body)
        .ok()
        .map(|v| json!({"grant_type": v["grant_type"], "client_id": v["client_id"], "scope": v["scope"]}));
    record(
        &s,
        "POST",
        "/v1/token",
        &HashMap::new(),
        &headers,
        asked_scope,
    );
    if let Some(r) = missing_headers(&headers) {
        return r;
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_request", "description": "The body is not JSON"}),
        );
    };
    if v["grant_type"] != "client_credentials" {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"error": "unsupported_grant_type", "description": "grant_type must be client_credentials"}),
        );
    }
    let allowed: Vec<&str> = match (v["client_id"].as_str(), v["client_secret"].as_str()) {
        (Some(DEMO_CLIENT_ID), Some(DEMO_CLIENT_SECRET)) => SCOPES.to_vec(),
        (Some(LIMITED_CLIENT_ID), Some(LIMITED_CLIENT_SECRET)) => {
            vec!["platform.companies.read", "platform.sites.read"]
        }
        _ => {
            return answer(
                StatusCode::UNAUTHORIZED,
                json!({"error": "invalid_client", "description": "Client authentication failed"}),
            );
        }
    };
    let asked: Vec<&str> = v["scope"]
        .as_str()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    if s.strict_scopes.load(Ordering::Relaxed)
        && let Some(lacking) = asked.iter().find(|a| !allowed.contains(a))
    {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_scope", "description": format!("scope {lacking} is not granted to this client")}),
        );
    }
    let granted: Vec<String> = asked
        .iter()
        .filter(|a| allowed.contains(a))
        .map(|a| a.to_string())
        .collect();
    if granted.is_empty() {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_scope", "description": "None of the requested scopes is granted to this client"}),
        );
    }
    let life = *lock(&s.token_life);
    let n = s.token_requests.load(Ordering::Relaxed);
    let value = format!("asio-sandbox-{n}-{:016x}", Rng::new(n).next_u64());
    lock(&s.tokens).insert(value.clone(), (Instant::now() + life, granted.clone()));
    answer(
        StatusCode::OK,
        json!({
            "access_token": value,
            "scope": granted.join(" "),
            "token_type": "Bearer",
            "expires_in": life.as_secs().max(1),
        }),
    )
}

fn bucket_key(path: &str) -> Option<(&'static str, &'static str)> {
    if path.ends_with("/company/companies") {
        Some(ops::COMPANIES)
    } else if path.ends_with("/company/sites") {
        Some(ops::SITES)
    } else if path.ends_with("/endpoints/heartbeat") {
        Some(ops::HEARTBEAT)
    } else if path.contains("/device/categories/") {
        Some(ops::ENDPOINTS)
    } else if path.contains("/device/companies/") {
        Some(ops::DETAIL)
    } else if path.contains("/patching/") {
        Some(ops::PATCHING)
    } else if path.contains("/service/ticketing/") {
        Some(ops::TICKETS)
    } else {
        None
    }
}

/// The bucket's state now (a passed window starts a new one).
fn bucket(s: &Inner, key: &str) -> (BucketLimit, BucketState) {
    let limit = *lock(&s.bucket_limit);
    let mut all = lock(&s.buckets);
    let now = epoch();
    let b = all.entry(key.to_string()).or_insert(BucketState {
        used: 0,
        reset: (now + limit.window.as_secs_f64()).ceil() as i64,
    });
    if (b.reset as f64) <= now {
        *b = BucketState {
            used: 0,
            reset: (now + limit.window.as_secs_f64()).ceil() as i64,
        };
    }
    (limit, *b)
}

async fn rate_limits(State(s): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    record(
        &s,
        "GET",
        "/v1/rate_limits",
        &HashMap::new(),
        &headers,
        None,
    );
    if let Some(r) = missing_headers(&headers) {
        return r;
    }
    if authorised(&s, &headers).is_err() {
        return unauthorised();
    }
    let mut resources: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for (group, op) in [ops::COMPANIES, ops::SITES, ops::ENDPOINTS, ops::HEARTBEAT] {
        let (limit, b) = bucket(&s, &format!("{group}/{op}"));
        resources.entry(group.into()).or_default().insert(
            op.into(),
            json!({"limit": limit.limit, "remaining": (limit.limit - b.used).max(0), "reset": b.reset}),
        );
    }
    answer(StatusCode::OK, json!({"resources": resources}))
}

fn unauthorised() -> Response {
    answer(
        StatusCode::UNAUTHORIZED,
        json!({"code": "401", "message": "invalid or expired token"}),
    )
}

fn authorised(s: &Inner, headers: &HeaderMap) -> Result<Vec<String>, ()> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let mut tokens = lock(&s.tokens);
    match tokens.get(bearer) {
        Some((until, scopes)) if Instant::now() < *until => Ok(scopes.clone()),
        Some(_) => {
            tokens.remove(bearer);
            Err(())
        }
        None => Err(()),
    }
}

async fn api(
    State(s): State<Arc<Inner>>,
    Path(rest): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    method: Method,
    body: Bytes,
) -> Response {
    s.api_requests.fetch_add(1, Ordering::Relaxed);
    let path = format!("/api/{rest}");
    let json_body: Option<Value> = serde_json::from_slice(&body).ok();
    record(&s, method.as_str(), &path, &q, &headers, json_body.clone());
    if let Some(r) = missing_headers(&headers) {
        return r;
    }
    let Ok(scopes) = authorised(&s, &headers) else {
        return unauthorised();
    };
    if let Some((group, op)) = bucket_key(&path) {
        let key = format!("{group}/{op}");
        let (limit, b) = bucket(&s, &key);
        if b.used >= limit.limit {
            s.too_many.fetch_add(1, Ordering::Relaxed);
            let after = ((b.reset as f64 - epoch()).ceil().max(1.0)) as u64;
            let mut r = answer(
                StatusCode::TOO_MANY_REQUESTS,
                json!({"code": "429", "message": format!("rate limit exceeded for {op}")}),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(after));
            return r;
        }
        if let Some(st) = lock(&s.buckets).get_mut(&key) {
            st.used += 1;
        }
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string();
    let need = |scope: &str| -> Option<Response> {
        (!scopes.iter().any(|g| g == scope)).then(|| {
            answer(
                StatusCode::FORBIDDEN,
                json!({"message": format!("the token lacks the scope {scope}"), "payload": null, "type": "Forbidden"}),
            )
        })
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let data = match s.data.read() {
        Ok(d) => d,
        Err(p) => p.into_inner(),
    };
    match (method.clone(), parts.as_slice()) {
        (Method::GET, ["platform", "v1", "company", "companies"]) => {
            if let Some(r) = need("platform.companies.read") {
                return r;
            }
            let rows = edited(
                &s,
                "companies",
                "id",
                serde_json::to_value(&data.companies).unwrap_or_default(),
            );
            answer(StatusCode::OK, rows)
        }
        (Method::GET, ["platform", "v1", "company", "sites"]) => {
            if let Some(r) = need("platform.sites.read") {
                return r;
            }
            answer(
                StatusCode::OK,
                serde_json::to_value(&data.sites).unwrap_or_default(),
            )
        }
        (
            Method::POST,
            [
                "platform",
                "v2",
                "device",
                "categories",
                category,
                "endpoints",
            ],
        ) => {
            if let Some(r) = need("platform.devices.read") {
                return r;
            }
            endpoints(&s, &data, &host, category, &q, json_body)
        }
        (Method::GET, ["platform", "v2", "device", "endpoints", "heartbeat"]) => {
            if let Some(r) = need("platform.devices.read") {
                return r;
            }
            heartbeat(&data, &q)
        }
        (
            Method::GET,
            [
                "platform",
                "v2",
                "device",
                "companies",
                company,
                "sites",
                site,
                "endpoints",
                endpoint,
            ],
        ) => {
            if let Some(r) = need("platform.devices.read") {
                return r;
            }
            endpoint_detail(&data, company, site, endpoint, &q)
        }
        (Method::GET, ["platform", "v2", "patching", endpoint, "patches"]) => {
            if let Some(r) = need("platform.devices.read") {
                return r;
            }
            patches(&data, endpoint)
        }
        (Method::GET, ["platform", "v1", "service", "ticketing", "statuses"]) => {
            if let Some(r) = need("platform.tickets.read") {
                return r;
            }
            answer(
                StatusCode::OK,
                serde_json::to_value(&data.statuses).unwrap_or_default(),
            )
        }
        (Method::GET, ["platform", "v2", "service", "ticketing", "tickets"]) => {
            if let Some(r) = need("platform.tickets.read") {
                return r;
            }
            tickets(&s, &data, &q)
        }
        _ => answer(
            StatusCode::NOT_FOUND,
            json!({"code": "404", "message": "Not Found"}),
        ),
    }
}

/// Raw edits applied to the rows of `collection` (a JSON array), matched by `id_field`.
fn edited(s: &Inner, collection: &str, id_field: &str, mut rows: Value) -> Value {
    let raw = lock(&s.raw);
    if let Value::Array(items) = &mut rows {
        for row in items {
            let id = row
                .get(id_field)
                .and_then(|u| u.as_str())
                .map(str::to_string);
            for (c, u, field, value) in raw.iter() {
                if c == collection
                    && id.as_deref() == Some(u.as_str())
                    && let Value::Object(o) = row
                {
                    match value {
                        Some(v) => o.insert(field.clone(), v.clone()),
                        None => o.remove(field),
                    };
                }
            }
        }
    }
    rows
}

fn endpoints(
    s: &Inner,
    data: &AsioData,
    host: &str,
    category: &str,
    q: &HashMap<String, String>,
    body: Option<Value>,
) -> Response {
    if !["platform", "network", "cloud", "all"].contains(&category) {
        return bad_request(&format!("unknown category {category}"));
    }
    let Some(body) = body else {
        return bad_request("the request body is mandatory");
    };
    let kind = body["resourceType"].as_str().unwrap_or_default();
    let Some(resources) = body["resources"].as_array() else {
        return bad_request("resources is required");
    };
    let ids: Vec<&str> = resources.iter().filter_map(|r| r.as_str()).collect();
    let cap = match kind {
        "company" => 4,
        "site" => 10,
        "endpoint" => 500,
        _ => return bad_request("resourceType must be company, site or endpoint"),
    };
    if ids.len() > cap {
        return bad_request(&format!(
            "only {cap} values are allowed in resources for resourceType {kind}"
        ));
    }
    let fields: Option<Vec<&str>> = q.get("field").map(|f| {
        f.split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .collect()
    });
    if fields.as_ref().is_some_and(|f| f.len() > 15) {
        return bad_request("maximum of 15 fields are allowed in field");
    }
    let page_size = *lock(&s.page_size);
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        .unwrap_or(page_size)
        .min(page_size);
    let cursor = match q.get("cursor").map(|c| c.parse::<usize>()) {
        None => 0,
        Some(Ok(c)) => c,
        Some(Err(_)) => return bad_request("cursor must be an integer"),
    };
    let mut matching: Vec<&Placed> = data
        .endpoints
        .iter()
        .filter(|p| category == "all" || p.category == category)
        .filter(|p| match kind {
            "company" => ids.contains(&p.company_id.as_str()),
            "site" => ids.contains(&p.site_id.as_str()),
            _ => p
                .endpoint
                .endpoint_id
                .as_deref()
                .is_some_and(|e| ids.contains(&e)),
        })
        .collect();
    matching.sort_by(|a, b| {
        (
            a.category.as_str(),
            a.company_id.as_str(),
            a.site_id.as_str(),
        )
            .cmp(&(
                b.category.as_str(),
                b.company_id.as_str(),
                b.site_id.as_str(),
            ))
    });
    let total = matching.len();
    let start = cursor.min(total);
    let end = (start + limit).min(total);
    // Grouped by category, then company and site, in order.
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let raw_rows: Vec<Value> = matching[start..end]
        .iter()
        .map(|p| serde_json::to_value(&p.endpoint).unwrap_or_default())
        .collect();
    let raw_rows = edited(s, "endpoints", "endpointID", Value::Array(raw_rows));
    let rows = raw_rows.as_array().cloned().unwrap_or_default();
    for (p, mut row) in matching[start..end].iter().zip(rows) {
        if let Value::Object(o) = &mut row {
            let keep = |k: &str| match &fields {
                Some(f) => k == "endpointID" || f.contains(&k),
                None => ["endpointID", "deviceName", "resourceType"].contains(&k),
            };
            o.retain(|k, v| keep(k) && !v.is_null());
        }
        let groups = out.entry(p.category.clone()).or_default();
        let same = groups.last().is_some_and(|g| {
            g["companyID"] == p.company_id.as_str() && g["siteID"] == p.site_id.as_str()
        });
        if !same {
            groups.push(json!({"companyID": p.company_id, "siteID": p.site_id, "endpoints": []}));
        }
        if let Some(Value::Array(e)) = groups.last_mut().map(|g| &mut g["endpoints"]) {
            e.push(row);
        }
    }
    let mut r = answer(StatusCode::OK, json!(out));
    if end < total {
        let link = format!(
            "<http://{host}/api/platform/v2/device/categories/{category}/endpoints?cursor={end}&limit={limit}>; rel=\"next\""
        );
        if let Ok(v) = HeaderValue::from_str(&link) {
            r.headers_mut().insert(header::LINK, v);
        }
    }
    r
}

fn heartbeat(data: &AsioData, q: &HashMap<String, String>) -> Response {
    if q.get("resourceType").map(String::as_str) != Some("endpoints") {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"message": "resourceType should be passed as endpoints", "payload": null, "type": "BadRequest"}),
        );
    }
    let ids: Vec<&str> = q
        .get("resources")
        .map(|r| {
            r.split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if ids.is_empty() || ids.len() > 100 {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"message": "resources must name 1 to 100 endpoints", "payload": null, "type": "BadRequest"}),
        );
    }
    let mut groups: Vec<Value> = Vec::new();
    let mut failed = Vec::new();
    for id in &ids {
        let placed = data
            .endpoints
            .iter()
            .find(|p| p.endpoint.endpoint_id.as_deref() == Some(*id));
        match (placed, data.heartbeats.get(*id)) {
            (Some(p), Some((online, at))) => {
                let beat = json!({"EndpointID": id, "DcDateTimeUTC": at, "Availability": online});
                match groups.iter_mut().find(|g| {
                    g["clientID"] == p.company_id.as_str() && g["siteID"] == p.site_id.as_str()
                }) {
                    Some(g) => {
                        if let Some(e) = g["endpoints"].as_array_mut() {
                            e.push(beat);
                        }
                    }
                    None => groups.push(
                        json!({"clientID": p.company_id, "siteID": p.site_id, "endpoints": [beat]}),
                    ),
                }
            }
            _ => failed
                .push(json!({"resourceType": "Endpoint", "resource": id, "error": "Not Found"})),
        }
    }
    let status = if failed.is_empty() {
        "success"
    } else if groups.is_empty() {
        "failed"
    } else {
        "partial_success"
    };
    answer(
        StatusCode::OK,
        json!({"status": status, "successfulRecords": groups, "failedRecords": failed}),
    )
}

/// `{errors: [{code, message}]}`: the ticketing service's shape.
fn ticketing_error(status: StatusCode, message: &str) -> Response {
    answer(
        status,
        json!({"errors": [{"code": status.as_u16().to_string(), "message": message}]}),
    )
}

fn tickets(s: &Inner, data: &AsioData, q: &HashMap<String, String>) -> Response {
    let num = |k: &str| q.get(k).map(|v| v.parse::<i64>().ok());
    let (size, page) = match (num("pageSize"), num("pageNum")) {
        (Some(Some(size)), Some(Some(page))) if size > 0 && page > 0 => {
            (size as usize, page as usize)
        }
        (None, None) => (usize::MAX, 1),
        (Some(_), None) | (None, Some(_)) => {
            return ticketing_error(
                StatusCode::BAD_REQUEST,
                "pageSize and pageNum must be sent together",
            );
        }
        // Invalid values are ignored, both of them.
        _ => (usize::MAX, 1),
    };
    // `statusIds=id1,id2` keeps those statuses, `statusIds=[notIn],id1,id2` leaves them out.
    let (not_in, ids): (bool, Vec<&str>) = match q.get("statusIds") {
        None => (true, vec![]),
        Some(v) => match v.strip_prefix("[notIn]") {
            Some(rest) => (true, rest.split(',').filter(|x| !x.is_empty()).collect()),
            None => (false, v.split(',').filter(|x| !x.is_empty()).collect()),
        },
    };
    let rows: Vec<&Ticket> = data
        .tickets
        .iter()
        .filter(|t| {
            let st = t
                .status
                .as_ref()
                .and_then(|s| s.id.as_deref())
                .unwrap_or_default();
            ids.contains(&st) != not_in
        })
        .collect();
    let start = size.saturating_mul(page - 1);
    if start >= rows.len() && page > 1 {
        // Past the end: nothing, and a total of 0 (trap 11).
        return answer(StatusCode::OK, json!({"tickets": [], "totalCount": 0}));
    }
    let total = rows.len();
    let page_rows: Vec<&Ticket> = rows.into_iter().skip(start).take(size).collect();
    let page_rows = edited(
        s,
        "tickets",
        "id",
        serde_json::to_value(&page_rows).unwrap_or_default(),
    );
    answer(
        StatusCode::OK,
        json!({"tickets": page_rows, "totalCount": total}),
    )
}

fn endpoint_detail(
    data: &AsioData,
    company: &str,
    site: &str,
    endpoint: &str,
    q: &HashMap<String, String>,
) -> Response {
    let fields: Vec<&str> = q
        .get("field")
        .map(|f| f.split(',').filter(|x| !x.is_empty()).collect())
        .unwrap_or_default();
    if fields.len() > 15 {
        return bad_request("at most 15 fields can be projected");
    }
    let Some((n, p)) = data.endpoints.iter().enumerate().find(|(_, p)| {
        p.company_id == company
            && p.site_id == site
            && p.endpoint.endpoint_id.as_deref() == Some(endpoint)
    }) else {
        return answer(
            StatusCode::NOT_FOUND,
            json!({"code": "404", "message": "Endpoint not found"}),
        );
    };
    let mut body = serde_json::to_value(&p.endpoint).unwrap_or_default();
    if let Value::Object(o) = &mut body
        && p.endpoint.os.is_some()
    {
        o.insert(
            "macAddress".into(),
            json!([format!("00:1A:2B:3C:{:02X}:{:02X}", n / 256 % 256, n % 256)]),
        );
        o.insert("bios".into(), json!({"manufacturer": "Dell Inc.", "version": "1.21.0", "serialNumber": format!("SN{n:06}")}));
        o.insert("processors".into(), json!([{"product": "Intel(R) Core(TM) i7-11700 @ 2.50GHz", "numberOfCores": 8, "numberOfLogicalProcessors": 16}]));
        o.insert("physicalMemory".into(), json!([{"sizeBytes": 8_589_934_592u64, "slot": "DIMM1"}, {"sizeBytes": 8_589_934_592u64, "slot": "DIMM2"}]));
        o.insert("drives".into(), json!([{"product": "NVMe PC SN730", "sizeBytes": 512_110_190_592u64, "mediaType": "SSD"}]));
        o.insert("users".into(), json!([{"username": "Administrator", "userType": "Local"}, {"username": format!("user{n}"), "userType": "Domain"}]));
    }
    if !fields.is_empty()
        && let Value::Object(o) = &mut body
    {
        o.retain(|k, _| fields.contains(&k.as_str()));
    }
    answer(
        StatusCode::OK,
        json!({
            "companyID": p.company_id,
            "siteID": p.site_id,
            "endpointID": endpoint,
            "endpointType": p.endpoint.endpoint_type,
            p.category.clone(): body,
        }),
    )
}

fn patches(data: &AsioData, endpoint: &str) -> Response {
    let found = data
        .endpoints
        .iter()
        .enumerate()
        .find(|(_, p)| p.endpoint.endpoint_id.as_deref() == Some(endpoint));
    match found {
        Some((n, p)) if p.category == "platform" && p.endpoint.os.is_some() => {
            let missing = (n % 4) as i64;
            answer(
                StatusCode::OK,
                json!({
                    "summary": {
                        "assessedAt": "2026-11-28T04:00:00Z",
                        "missingCount": missing,
                        "pendingRebootCount": (n % 2) as i64,
                        "installedCount": 40 + n as i64 % 20,
                        "compliance": if missing == 0 { 100.0 } else { 92.5 },
                        "outOfSupport": false,
                        "policyName": "Standard workstation patching",
                    },
                    "patches": (0..missing).map(|i| json!({"kbArticleID": format!("KB50{i:05}"), "status": "Missing", "classification": "Security Updates", "msrcSeverity": "Critical"})).collect::<Vec<_>>(),
                }),
            )
        }
        _ => answer(
            StatusCode::NOT_FOUND,
            json!({"code": "404", "message": "Endpoint patches not found"}),
        ),
    }
}
