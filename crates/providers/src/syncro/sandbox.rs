//! Syncro played on loopback for tests, benchmarks and the demo, under
//! `/{subdomain}/api/v1` (the sandbox stands in for `{subdomain}.syncromsp.com`):
//! `/me`, `/customers`, `/contacts`, `/users` (id–name pairs), `/users/{id}`, tickets
//! (`GET/POST /tickets`, `GET/PUT /tickets/{id}`, `/tickets/settings`,
//! `GET /tickets/{id}/comments`, `POST /tickets/{id}/comment`, 422 without a subject);
//! Bearer API tokens (one without the Users permission, answered with Syncro's 401
//! permission message), server-fixed page size with `meta.total_pages`, the per-address
//! rate limit answering 429, and fault injection. Syncro's Notification Center webhooks
//! are played too: once a URL is set (by hand in Syncro; here `set_notification_url` or
//! `POST /_sandbox/notifications?url=`), every ticket change, the API's included, is
//! posted to it as `{"event", "attributes"}`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use chrono::{DateTime, TimeZone, Utc};
use mspbridge_sandbox::names::{FIRST, LAST, TICKET_SUBJECTS, company_name, web_domain};
use mspbridge_sandbox::{
    Faults, RawEdits, Rng, SandboxHandle, Seed, VendorRateLimit, deliver_in_background,
};
use serde::Serialize;
use tokio::net::TcpListener;

use super::wire::{Comment, Contact, Customer, INITIAL_ISSUE, Meta, Ticket, User, is_closed};

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
    /// Stored without their comments (those live in `comments`).
    pub tickets: Vec<Ticket>,
    pub comments: Vec<Comment>,
    /// The account's ticket statuses (`/tickets/settings`).
    pub statuses: Vec<String>,
}

/// Syncro's default ticket statuses.
pub const STATUSES: [&str; 8] = [
    "New",
    "In Progress",
    "Resolved",
    "Invoiced",
    "Waiting for Parts",
    "Waiting on Customer",
    "Scheduled",
    "Customer Reply",
];

/// One request as the sandbox received it (path without the `/{subdomain}/api/v1` prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    /// A write's JSON body.
    pub body: Option<serde_json::Value>,
}

struct Inner {
    data: RwLock<SyncroData>,
    per_page: Mutex<usize>,
    limit: VendorRateLimit,
    seen: Mutex<Vec<SeenRequest>>,
    raw_edits: RawEdits,
    lost_answers: AtomicU32,
    notification_url: Mutex<Option<String>>,
    notifications_sent: AtomicU64,
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
                customer_id: Some(id),
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
    let mut data = SyncroData {
        customers,
        contacts,
        users,
        tickets: vec![],
        comments: vec![],
        statuses: STATUSES.iter().map(|s| s.to_string()).collect(),
    };
    if matches!(seed, Seed::Small) {
        add_tickets(&mut data, 3, 2);
    }
    data
}

/// Up to `per_customer` tickets for each customer (0 to `per_customer`, deterministic),
/// each with its "Initial Issue" comment and `comments_per` more, one in three hidden.
pub fn add_tickets(d: &mut SyncroData, per_customer: usize, comments_per: usize) {
    let mut rng = Rng::new(0x5C71);
    let mut ticket_id = d.tickets.iter().map(|t| t.id).max().unwrap_or(5_000);
    let mut comment_id = d.comments.iter().map(|c| c.id).max().unwrap_or(0);
    let types = ["Hardware", "Network", "Software"];
    for c in &d.customers {
        let contact = d
            .contacts
            .iter()
            .find(|x| x.customer_id == Some(c.id))
            .map(|x| x.id);
        for _ in 0..rng.below(per_customer as u64 + 1) {
            ticket_id += 1;
            let status = rng.pick(&d.statuses).clone();
            let created = base_time() + chrono::Duration::minutes(rng.below(60 * 24 * 300) as i64);
            let updated = created + chrono::Duration::minutes(rng.below(60 * 24 * 5) as i64);
            d.tickets.push(Ticket {
                id: ticket_id,
                subject: rng.pick(&TICKET_SUBJECTS).to_string(),
                priority: Some(rng.pick(&["1 High", "2 Normal", "3 Low"]).to_string()),
                problem_type: Some(rng.pick(&types).to_string()),
                ticket_type_name: None,
                customer_id: Some(c.id),
                contact_id: contact,
                user_id: d.users.first().map(|u| u.id),
                created_at: Some(created),
                updated_at: Some(updated),
                resolved_at: is_closed(&status).then_some(updated),
                status,
                tag_list: vec![],
                comments: vec![],
            });
            comment_id += 1;
            d.comments.push(Comment {
                id: comment_id,
                ticket_id: Some(ticket_id),
                subject: Some(INITIAL_ISSUE.into()),
                body: format!("Reported by the customer (ticket {ticket_id})."),
                tech: Some("Customer".into()),
                hidden: false,
                user_id: None,
                created_at: Some(created),
            });
            for k in 0..comments_per {
                comment_id += 1;
                d.comments.push(Comment {
                    id: comment_id,
                    ticket_id: Some(ticket_id),
                    subject: Some("Update".into()),
                    body: format!("Update {} on ticket {ticket_id}.", k + 1),
                    hidden: comment_id % 3 == 0,
                    tech: Some("Sam Tech".into()),
                    user_id: d.users.first().map(|u| u.id),
                    created_at: Some(created + chrono::Duration::minutes(k as i64 + 1)),
                });
            }
        }
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
                lost_answers: AtomicU32::new(0),
                notification_url: Mutex::new(None),
                notifications_sent: AtomicU64::new(0),
            }),
            faults: Faults::default(),
        }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/{subdomain}/api/v1/{*rest}", any(api))
            .route("/_sandbox/touch-contacts", post(touch_contacts))
            .route("/_sandbox/notifications", post(sandbox_notifications))
            .route("/_sandbox/tickets/{id}/status", post(sandbox_status))
            .route("/_sandbox/tickets/{id}/notes", post(sandbox_note))
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

    /// Where Syncro posts ticket notifications (what an admin sets in the Notification
    /// Center); `None` stops them.
    pub fn set_notification_url(&self, url: Option<String>) {
        if let Ok(mut u) = self.inner.notification_url.lock() {
            *u = url;
        }
    }

    /// Moves ticket `id` to status `name`, as a technician in Syncro would (notified).
    pub fn set_ticket_status(&self, id: i64, name: &str) -> bool {
        set_status(&self.inner, id, name)
    }

    /// A technician comments on a ticket; the comment's id, `None` for an unknown ticket.
    pub fn add_comment(&self, ticket: i64, body: &str, hidden: bool) -> Option<i64> {
        add_comment(&self.inner, ticket, "Update", body, hidden, "Sam Tech")
    }

    /// The next `n` writes are applied but their answers lost (HTTP 504).
    pub fn lose_write_answers(&self, n: u32) {
        self.inner.lost_answers.store(n, Ordering::SeqCst);
    }

    /// Notifications started so far.
    pub fn notifications_sent(&self) -> u64 {
        self.inner.notifications_sent.load(Ordering::Relaxed)
    }

    /// The body Syncro posts when ticket `id` changed (`event` as in the Notification
    /// Center).
    pub fn notification_body(&self, event: &str, id: i64) -> Vec<u8> {
        ticket_notification(&self.inner, event, id)
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
    method: Method,
    body: Bytes,
) -> Response {
    if let Ok(mut seen) = s.seen.lock() {
        let mut query: Vec<(String, String)> =
            q.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        query.sort();
        seen.push(SeenRequest {
            method: method.to_string(),
            path: format!("/{rest}"),
            query,
            body: serde_json::from_slice(&body).ok(),
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
    let parts: Vec<&str> = rest.split('/').collect();
    if method != Method::GET {
        return write(&s, &method, &parts, &body);
    }
    let data = match s.data.read() {
        Ok(d) => d,
        Err(p) => p.into_inner(),
    };
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
                .filter(|c| cid.is_none_or(|id| c.customer_id == Some(id)))
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
        ["tickets"] => {
            let customer = q.get("customer_id").and_then(|c| c.parse::<i64>().ok());
            let created_after = q.get("created_after").and_then(|t| when(t));
            let updated_since = q.get("since_updated_at").and_then(|t| when(t));
            let rows: Vec<serde_json::Value> = data
                .tickets
                .iter()
                .rev()
                .filter(|t| customer.is_none_or(|c| t.customer_id == Some(c)))
                .filter(|t| created_after.is_none_or(|a| t.created_at.is_some_and(|c| c > a)))
                .filter(|t| updated_since.is_none_or(|a| t.updated_at.is_some_and(|u| u > a)))
                .map(|t| ticket_json(&data, t, false))
                .collect();
            page("tickets", &rows, &q, per, &s.raw_edits)
        }
        ["tickets", "settings"] => answer(
            StatusCode::OK,
            serde_json::json!({"ticket_status_list": data.statuses, "users": [], "ticket_types": []}),
        ),
        ["tickets", id] => match data.tickets.iter().find(|t| t.id.to_string() == *id) {
            Some(t) => answer(
                StatusCode::OK,
                serde_json::json!({ "ticket": ticket_json(&data, t, true) }),
            ),
            None => not_found(),
        },
        ["tickets", id, "comments"] => {
            let Some(t) = data.tickets.iter().find(|t| t.id.to_string() == *id) else {
                return not_found();
            };
            let after = q.get("created_after").and_then(|t| when(t));
            let mut rows: Vec<&Comment> = data
                .comments
                .iter()
                .filter(|c| c.ticket_id == Some(t.id))
                .filter(|c| after.is_none_or(|a| c.created_at.is_some_and(|x| x > a)))
                .collect();
            rows.sort_by_key(|c| (c.created_at, c.id));
            if q.get("sort_direction")
                .is_some_and(|d| d.eq_ignore_ascii_case("DESC"))
            {
                rows.reverse();
            }
            let per = q
                .get("per_page")
                .and_then(|p| p.parse::<usize>().ok())
                .unwrap_or(10)
                .clamp(1, 100);
            page("comments", &rows, &q, per, &s.raw_edits)
        }
        _ => answer(
            StatusCode::NOT_FOUND,
            serde_json::json!({"message": "Not found"}),
        ),
    }
}

fn not_found() -> Response {
    answer(
        StatusCode::NOT_FOUND,
        serde_json::json!({"message": "Not found"}),
    )
}

fn unprocessable(messages: &[&str]) -> Response {
    answer(
        StatusCode::UNPROCESSABLE_ENTITY,
        serde_json::json!({"success": false, "message": messages}),
    )
}

/// A date or date-time as Syncro's filters take them ("2019-02-25" or ISO 8601).
fn when(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t)
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|d| d.and_utc())
        })
}

/// A ticket as Syncro serves it: with every comment (`GET /tickets/{id}`) or only the
/// initial one (the listing, since `all_comments` defaults to false).
fn ticket_json(d: &SyncroData, t: &Ticket, all: bool) -> serde_json::Value {
    let mut comments: Vec<&Comment> = d
        .comments
        .iter()
        .filter(|c| c.ticket_id == Some(t.id))
        .collect();
    comments.sort_by_key(|c| c.id);
    if !all {
        comments.truncate(1);
    }
    let mut v = serde_json::to_value(t).unwrap_or_default();
    v["comments"] = serde_json::to_value(comments).unwrap_or_default();
    v
}

fn read(s: &Inner) -> std::sync::RwLockReadGuard<'_, SyncroData> {
    match s.data.read() {
        Ok(d) => d,
        Err(p) => p.into_inner(),
    }
}

fn write_lock(s: &Inner) -> std::sync::RwLockWriteGuard<'_, SyncroData> {
    match s.data.write() {
        Ok(d) => d,
        Err(p) => p.into_inner(),
    }
}

fn text(v: &serde_json::Value, field: &str) -> Option<String> {
    v.get(field)
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
}

/// `POST /tickets`, `PUT /tickets/{id}`, `POST /tickets/{id}/comment`.
fn write(s: &Arc<Inner>, method: &Method, parts: &[&str], body: &[u8]) -> Response {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return answer(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": "The request body is not JSON"}),
        );
    };
    let written = match (method.as_str(), parts) {
        ("POST", ["tickets"]) => create_ticket(s, &v),
        ("PUT", ["tickets", id]) => match id.parse::<i64>() {
            Ok(id) => update_ticket(s, id, &v),
            Err(_) => return not_found(),
        },
        ("POST", ["tickets", id, "comment"]) => {
            let Ok(id) = id.parse::<i64>() else {
                return not_found();
            };
            let subject = text(&v, "subject").unwrap_or_default();
            let body = text(&v, "body").unwrap_or_default();
            let mut missing = Vec::new();
            if body.trim().is_empty() {
                missing.push("Body can't be blank");
            }
            if subject.trim().is_empty() {
                missing.push("Subject can't be blank");
            }
            if !missing.is_empty() {
                return unprocessable(&missing);
            }
            let hidden = v.get("hidden").and_then(serde_json::Value::as_bool) == Some(true);
            let tech = text(&v, "tech").unwrap_or_else(|| "API User".into());
            match add_comment(s, id, &subject, &body, hidden, &tech) {
                Some(cid) => {
                    let d = read(s);
                    Ok(serde_json::json!({"comment": d.comments.iter().find(|c| c.id == cid)}))
                }
                None => return not_found(),
            }
        }
        _ => return not_found(),
    };
    match written {
        Err(r) => *r,
        Ok(_)
            if s.lost_answers
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok() =>
        {
            answer(
                StatusCode::GATEWAY_TIMEOUT,
                serde_json::json!({"error": "Gateway Timeout"}),
            )
        }
        Ok(v) => answer(StatusCode::OK, v),
    }
}

fn create_ticket(
    s: &Arc<Inner>,
    v: &serde_json::Value,
) -> Result<serde_json::Value, Box<Response>> {
    let now = Utc::now();
    let id = {
        let mut d = write_lock(s);
        let customer = v
            .get("customer_id")
            .and_then(serde_json::Value::as_i64)
            .filter(|c| d.customers.iter().any(|x| x.id == *c))
            .ok_or_else(|| {
                Box::new(answer(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    serde_json::json!({"error": "Customer required field"}),
                ))
            })?;
        let subject = text(v, "subject").unwrap_or_default();
        if subject.trim().is_empty() {
            return Err(Box::new(unprocessable(&["Subject can't be blank"])));
        }
        let status = text(v, "status").unwrap_or_else(|| "New".into());
        if !d.statuses.contains(&status) {
            return Err(Box::new(unprocessable(&[
                "Status is not included in the list",
            ])));
        }
        let comments: Vec<serde_json::Value> = v
            .get("comments_attributes")
            .and_then(serde_json::Value::as_array)
            .cloned()
            .unwrap_or_default();
        if comments
            .iter()
            .any(|c| text(c, "subject").unwrap_or_default().trim().is_empty())
        {
            return Err(Box::new(unprocessable(&[
                "Comments subject can't be blank",
            ])));
        }
        let id = d.tickets.iter().map(|t| t.id).max().unwrap_or(5_000) + 1;
        d.tickets.push(Ticket {
            id,
            subject,
            priority: text(v, "priority"),
            problem_type: text(v, "problem_type"),
            ticket_type_name: None,
            customer_id: Some(customer),
            contact_id: v.get("contact_id").and_then(serde_json::Value::as_i64),
            user_id: v.get("user_id").and_then(serde_json::Value::as_i64),
            created_at: Some(now),
            updated_at: Some(now),
            resolved_at: is_closed(&status).then_some(now),
            status,
            tag_list: v
                .get("tag_list")
                .and_then(|t| serde_json::from_value(t.clone()).ok())
                .unwrap_or_default(),
            comments: vec![],
        });
        for c in comments {
            let cid = d.comments.iter().map(|c| c.id).max().unwrap_or(0) + 1;
            d.comments.push(Comment {
                id: cid,
                ticket_id: Some(id),
                subject: text(&c, "subject"),
                body: text(&c, "body").unwrap_or_default(),
                tech: Some(text(&c, "tech").unwrap_or_else(|| "API User".into())),
                hidden: c.get("hidden").and_then(serde_json::Value::as_bool) == Some(true),
                user_id: Some(1),
                created_at: Some(now),
            });
        }
        id
    };
    notify(s, "Ticket - Was created", id);
    let d = read(s);
    let t = d.tickets.iter().find(|t| t.id == id);
    Ok(serde_json::json!({ "ticket": t.map(|t| ticket_json(&d, t, true)) }))
}

fn update_ticket(
    s: &Arc<Inner>,
    id: i64,
    v: &serde_json::Value,
) -> Result<serde_json::Value, Box<Response>> {
    let now = Utc::now();
    let status_changed = {
        let mut d = write_lock(s);
        if let Some(st) = text(v, "status")
            && !d.statuses.contains(&st)
        {
            return Err(Box::new(unprocessable(&[
                "Status is not included in the list",
            ])));
        }
        let t = d
            .tickets
            .iter_mut()
            .find(|t| t.id == id)
            .ok_or_else(|| Box::new(not_found()))?;
        let mut changed = false;
        if let Some(st) = text(v, "status") {
            changed = st != t.status;
            t.resolved_at = is_closed(&st).then_some(now);
            t.status = st;
        }
        if let Some(x) = text(v, "subject") {
            t.subject = x;
        }
        if let Some(x) = text(v, "priority") {
            t.priority = Some(x);
        }
        if let Some(x) = text(v, "problem_type") {
            t.problem_type = Some(x);
        }
        t.updated_at = Some(now);
        changed
    };
    notify(
        s,
        if status_changed {
            "Ticket - Status was changed"
        } else {
            "Ticket - Was updated"
        },
        id,
    );
    let d = read(s);
    let t = d.tickets.iter().find(|t| t.id == id);
    Ok(serde_json::json!({ "ticket": t.map(|t| ticket_json(&d, t, true)) }))
}

fn set_status(s: &Arc<Inner>, id: i64, name: &str) -> bool {
    {
        let mut d = write_lock(s);
        if !d.statuses.iter().any(|x| x == name) {
            return false;
        }
        let Some(t) = d.tickets.iter_mut().find(|t| t.id == id) else {
            return false;
        };
        let now = Utc::now();
        t.status = name.to_string();
        t.resolved_at = is_closed(name).then_some(now);
        t.updated_at = Some(now);
    }
    notify(s, "Ticket - Status was changed", id);
    true
}

/// A comment on `ticket`; the ticket's `updated_at` moves with it **[unverified]**.
fn add_comment(
    s: &Arc<Inner>,
    ticket: i64,
    subject: &str,
    body: &str,
    hidden: bool,
    tech: &str,
) -> Option<i64> {
    let id = {
        let mut d = write_lock(s);
        let now = Utc::now();
        d.tickets.iter_mut().find(|t| t.id == ticket)?.updated_at = Some(now);
        let id = d.comments.iter().map(|c| c.id).max().unwrap_or(0) + 1;
        d.comments.push(Comment {
            id,
            ticket_id: Some(ticket),
            subject: Some(subject.to_string()),
            body: body.to_string(),
            tech: Some(tech.to_string()),
            hidden,
            user_id: Some(1),
            created_at: Some(now),
        });
        id
    };
    notify(s, "Ticket - Comment was added", ticket);
    Some(id)
}

fn ticket_notification(s: &Inner, event: &str, id: i64) -> Vec<u8> {
    let d = read(s);
    let attributes = d.tickets.iter().find(|t| t.id == id).map(|t| {
        let mut v = serde_json::to_value(t).unwrap_or_default();
        if let Some(m) = v.as_object_mut() {
            m.remove("comments");
        }
        v
    });
    serde_json::to_vec(&serde_json::json!({ "event": event, "attributes": attributes }))
        .unwrap_or_default()
}

/// A ticket changed: the notification URL, when set, is posted to in the background.
fn notify(s: &Arc<Inner>, event: &'static str, ticket: i64) {
    let Some(url) = s.notification_url.lock().ok().and_then(|u| u.clone()) else {
        return;
    };
    let req = reqwest::Client::new()
        .post(&url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(ticket_notification(s, event, ticket));
    deliver_in_background(req, &s.notifications_sent, "Syncro notification");
}

async fn sandbox_notifications(
    State(s): State<Arc<Inner>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Ok(mut u) = s.notification_url.lock() {
        *u = q.get("url").cloned().filter(|u| !u.is_empty());
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn sandbox_status(
    State(s): State<Arc<Inner>>,
    Path(id): Path<i64>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let name = q.get("name").cloned().unwrap_or_default();
    if set_status(&s, id, &name) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        answer(
            StatusCode::NOT_FOUND,
            serde_json::json!({"message": "no such ticket or status"}),
        )
    }
}

async fn sandbox_note(
    State(s): State<Arc<Inner>>,
    Path(id): Path<i64>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let text = q.get("text").cloned().unwrap_or_default();
    let hidden = q.get("internal").is_some_and(|v| v == "true" || v == "1");
    match add_comment(&s, id, "Update", &text, hidden, "Sam Tech") {
        Some(n) => axum::Json(serde_json::json!({ "id": n })).into_response(),
        None => not_found(),
    }
}
