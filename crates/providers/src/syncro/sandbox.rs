//! Syncro played on loopback for tests, benchmarks and the demo, under
//! `/{subdomain}/api/v1` (the sandbox stands in for `{subdomain}.syncromsp.com`):
//! `/me`, `/customers`, `/contacts`, `/users` (id–name pairs), `/users/{id}`, `/tickets`;
//! Bearer API tokens (one without the Users permission, answered with Syncro's 401
//! permission message), server-fixed page size with `meta.total_pages`, the per-address
//! rate limit answering 429, and fault injection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, TimeZone, Utc};
use mspbridge_sandbox::names::{FIRST, LAST, company_name, web_domain};
use mspbridge_sandbox::{Faults, RawEdits, Rng, SandboxHandle, Seed, VendorRateLimit};
use serde::Serialize;
use tokio::net::TcpListener;

use super::wire::{Contact, Customer, Meta, User};

pub const DEMO_SUBDOMAIN: &str = "mspbridge";
pub const DEMO_API_TOKEN: &str = "T2f6c1d0-demo-syncro-token";
/// A token whose group may not read users.
pub const LIMITED_API_TOKEN: &str = "T9a8b7c6-limited-syncro-token";

const PERMISSION_MESSAGE: &str =
    "Not authorized. Please ask account admin to update your group permissions.";

#[derive(Debug, Clone, Default)]
pub struct SyncroData {
    pub customers: Vec<Customer>,
    pub contacts: Vec<Contact>,
    pub users: Vec<User>,
}

/// One request as the sandbox received it (path without the `/{subdomain}/api/v1` prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
}

struct Inner {
    data: RwLock<SyncroData>,
    per_page: Mutex<usize>,
    limit: VendorRateLimit,
    seen: Mutex<Vec<SeenRequest>>,
    raw_edits: RawEdits,
}

#[derive(Clone)]
pub struct SyncroSandbox {
    inner: Arc<Inner>,
    pub faults: Faults,
}

fn base_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

/// Customers (most businesses with an owner person, some persons alone), ten contacts per
/// customer, technicians.
pub fn generate(seed: Seed) -> SyncroData {
    let (n, per, n_users) = match seed {
        Seed::Small => (15usize, 3usize, 5usize),
        Seed::Large => (5_000, 10, 200),
        Seed::Companies(n) => (n as usize, 10, (n as usize / 25).max(2)),
    };
    let mut rng = Rng::new(0x5C20);
    let mut customers = Vec::with_capacity(n);
    let mut contacts = Vec::with_capacity(n * per);
    let mut contact_id = 1i64;
    for i in 0..n {
        let id = 1000 + i as i64;
        let first = rng.pick(&FIRST).to_string();
        let last = rng.pick(&LAST).to_string();
        let business = (!rng.chance(10)).then(|| company_name(&mut rng, i));
        let domain = format!("c{id}.example");
        let updated = base_time() + chrono::Duration::minutes(rng.below(60 * 24 * 300) as i64);
        let site = business
            .as_deref()
            .map_or_else(|| domain.clone(), web_domain);
        customers.push(Customer {
            id,
            email: Some(format!(
                "{}.{}@{site}",
                first.to_lowercase(),
                last.to_lowercase()
            )),
            firstname: Some(first),
            lastname: Some(last),
            business_name: business,
            phone: Some(format!("555-{:04}", id % 10_000)),
            mobile: None,
            disabled: rng.chance(5),
            no_email: rng.chance(5),
            updated_at: Some(updated),
        });
        let k = if matches!(seed, Seed::Small) {
            1 + rng.below(per as u64) as usize
        } else {
            per
        };
        for _ in 0..k {
            let f = rng.pick(&FIRST).to_string();
            let l = rng.pick(&LAST).to_string();
            contacts.push(Contact {
                id: contact_id,
                customer_id: id,
                email: (!rng.chance(4)).then(|| {
                    format!(
                        "{}.{}{contact_id}@{domain}",
                        f.to_lowercase(),
                        l.to_lowercase()
                    )
                }),
                name: format!("{f} {l}"),
                phone: Some(format!("555-{:04}", contact_id % 10_000)),
                mobile: None,
                updated_at: Some(base_time()),
            });
            contact_id += 1;
        }
    }
    let users = (0..n_users)
        .map(|i| {
            let f = rng.pick(&FIRST).to_string();
            let l = rng.pick(&LAST).to_string();
            User {
                id: i as i64 + 1,
                email: Some(format!(
                    "{}.{}{i}@msp.example",
                    f.to_lowercase(),
                    l.to_lowercase()
                )),
                full_name: format!("{f} {l}"),
                group: Some(if i == 0 { "Admins" } else { "Technicians" }.into()),
                updated_at: Some(base_time()),
            }
        })
        .collect();
    SyncroData {
        customers,
        contacts,
        users,
    }
}

impl SyncroSandbox {
    pub fn new(seed: Seed) -> Self {
        Self {
            inner: Arc::new(Inner {
                data: RwLock::new(generate(seed)),
                per_page: Mutex::new(25),
                limit: VendorRateLimit::new(180, Duration::from_secs(60)),
                seen: Mutex::new(Vec::new()),
                raw_edits: RawEdits::default(),
            }),
            faults: Faults::default(),
        }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/{subdomain}/api/v1/{*rest}", get(api))
            .route("/_sandbox/touch-contacts", post(touch_contacts))
            .with_state(self.inner.clone())
            .layer(axum::middleware::from_fn_with_state(
                self.faults.clone(),
                mspbridge_sandbox::inject_faults,
            ))
    }

    pub fn serve(&self, listener: TcpListener) -> std::io::Result<SandboxHandle> {
        mspbridge_sandbox::serve(self.router(), listener)
    }

    /// The API base to configure the connector with (`SyncroSettings::api_base`).
    pub fn api_base(handle: &SandboxHandle) -> String {
        format!("https://{}/{{subdomain}}/api/v1", handle.host())
    }

    pub fn with_data<R>(&self, f: impl FnOnce(&mut SyncroData) -> R) -> R {
        match self.inner.data.write() {
            Ok(mut d) => f(&mut d),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// The server's page size (Syncro documents 25; 50 and 100 are seen in practice).
    pub fn set_per_page(&self, n: usize) {
        if let Ok(mut p) = self.inner.per_page.lock() {
            *p = n.max(1);
        }
    }

    pub fn set_rate_limit(&self, requests: usize, window: Duration) {
        self.inner.limit.set(requests, window);
    }

    /// Serves `field` of record `id` in `key` (`customers`, `contacts`) as `value`: tests
    /// send rows the connector cannot read with it.
    pub fn set_raw_field(&self, key: &str, id: i64, field: &str, value: serde_json::Value) {
        self.inner.raw_edits.push(key, id, field, value);
    }

    pub fn seen(&self) -> Vec<SeenRequest> {
        self.inner
            .seen
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
}

async fn touch_contacts(
    State(s): State<Arc<Inner>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let every = mspbridge_sandbox::touch_every(&q);
    let mut d = match s.data.write() {
        Ok(d) => d,
        Err(p) => p.into_inner(),
    };
    let mut n = 0;
    for c in d.contacts.iter_mut().step_by(every) {
        c.name.push_str(" Jr");
        c.updated_at = c.updated_at.map(|t| t + chrono::Duration::minutes(1));
        n += 1;
    }
    axum::Json(serde_json::json!({ "changed": n })).into_response()
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn page<T: Serialize>(
    key: &str,
    rows: &[T],
    q: &HashMap<String, String>,
    per: usize,
    edits: &RawEdits,
) -> Response {
    let total = rows.len();
    let total_pages = total.div_ceil(per).max(1);
    let page = q
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let start = (page - 1).saturating_mul(per).min(total);
    let end = (start + per).min(total);
    let mut m = serde_json::Map::new();
    let mut rows = serde_json::to_value(&rows[start..end]).unwrap_or_default();
    if let serde_json::Value::Array(rows) = &mut rows {
        edits.apply(key, rows);
    }
    m.insert(key.into(), rows);
    m.insert(
        "meta".into(),
        serde_json::to_value(Meta {
            total_pages: total_pages as u64,
            total_entries: total as u64,
            per_page: per as u64,
            page: page as u64,
        })
        .unwrap_or_default(),
    );
    answer(StatusCode::OK, serde_json::Value::Object(m))
}

async fn api(
    State(s): State<Arc<Inner>>,
    Path((subdomain, rest)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    req: Request,
) -> Response {
    if let Ok(mut seen) = s.seen.lock() {
        let mut query: Vec<(String, String)> =
            q.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        query.sort();
        seen.push(SeenRequest {
            method: req.method().to_string(),
            path: format!("/{rest}"),
            query,
        });
    }
    // Counted per source address over a rolling minute.
    let over = !s.limit.admit();
    if over {
        return answer(
            StatusCode::TOO_MANY_REQUESTS,
            serde_json::json!({"error": "Rate limit exceeded: 180 requests per minute"}),
        );
    }
    if subdomain != DEMO_SUBDOMAIN {
        return answer(
            StatusCode::NOT_FOUND,
            serde_json::json!({"message": "Not found"}),
        );
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let limited = token == LIMITED_API_TOKEN;
    if token != DEMO_API_TOKEN && !limited {
        return answer(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"error": "Not authorized"}),
        );
    }
    let per = s.per_page.lock().map(|p| *p).unwrap_or(25);
    let data = match s.data.read() {
        Ok(d) => d,
        Err(p) => p.into_inner(),
    };
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        ["me"] => answer(
            StatusCode::OK,
            serde_json::json!({"user_email": "api@msp.example", "user_name": "API User", "user_id": 1, "subdomain": subdomain}),
        ),
        ["customers"] => {
            let all = q.get("include_disabled").is_some_and(|v| v == "true");
            let rows: Vec<&Customer> = data
                .customers
                .iter()
                .filter(|c| all || !c.disabled)
                .collect();
            page("customers", &rows, &q, per, &s.raw_edits)
        }
        ["contacts"] => {
            let cid = q.get("customer_id").and_then(|c| c.parse::<i64>().ok());
            let rows: Vec<&Contact> = data
                .contacts
                .iter()
                .filter(|c| cid.is_none_or(|id| c.customer_id == id))
                .collect();
            page("contacts", &rows, &q, per, &s.raw_edits)
        }
        ["users", ..] if limited => answer(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"error": PERMISSION_MESSAGE}),
        ),
        ["users"] => {
            let pairs: Vec<(i64, &str)> = data
                .users
                .iter()
                .map(|u| (u.id, u.full_name.as_str()))
                .collect();
            answer(StatusCode::OK, serde_json::json!({ "users": pairs }))
        }
        ["users", id] => match data.users.iter().find(|u| u.id.to_string() == *id) {
            Some(u) => answer(StatusCode::OK, serde_json::json!({ "user": u })),
            None => answer(
                StatusCode::NOT_FOUND,
                serde_json::json!({"message": "Not found"}),
            ),
        },
        ["tickets"] => page::<serde_json::Value>("tickets", &[], &q, per, &RawEdits::default()),
        _ => answer(
            StatusCode::NOT_FOUND,
            serde_json::json!({"message": "Not found"}),
        ),
    }
}
