//! Halo played on loopback for tests, benchmarks and the demo: `POST /auth/token`
//! (client credentials, optional `?tenant=`), Bearer-protected `/api/Client`,
//! `/api/Users`, `/api/Agent` and `/api/UserRoles` with Halo's paging (`pageinate`,
//! `page_no`, `page_size` capped at 100, `record_count`), `order`/`orderdesc`,
//! `lastupdatefromdate`, `includeinactive`; a rolling-window rate limit answering 429;
//! an API application without agent permission (403); and fault injection.
//!
//! Tickets: `GET /api/Tickets` (paged, `lastupdatefromdate`, `client_id`, closed tickets only
//! with `includeclosed`), `GET /api/Tickets/{id}`, `POST /api/Tickets` and `POST /api/Actions`
//! as upserts of arrays (no `id` creates, `id` updates; an unknown `id` is refused),
//! `GET /api/Actions?ticket_id=`, the status / priority / team / ticket type lists, and
//! `GET`/`POST /api/Webhook`. Every ticket change, the API's own included (Halo has no
//! self-suppression), is posted to the active webhooks with their Basic credentials.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, TimeZone, Utc};
use mspbridge_sandbox::names::{FIRST, LAST, TICKET_SUBJECTS, company_name, web_domain};
use mspbridge_sandbox::{
    Faults, RawEdits, Rng, SandboxHandle, Seed, VendorRateLimit, deliver_in_background,
};
use serde::Serialize;
use tokio::net::TcpListener;

use super::wire::{
    Action, Agent, CLOSED_STATUS_ID, Category, Client, Named, Priority, Status, Ticket, User,
    UserRole, halo_date,
};

pub const DEMO_TENANT: &str = "mspbridge";
pub const DEMO_CLIENT_ID: &str = "mspbridge-demo";
pub const DEMO_CLIENT_SECRET: &str = "demo-secret-halo";
/// An API application whose agent may not read agents.
pub const LIMITED_CLIENT_ID: &str = "mspbridge-limited";
pub const LIMITED_CLIENT_SECRET: &str = "limited-secret-halo";

#[derive(Debug, Clone, Default)]
pub struct HaloData {
    pub clients: Vec<Client>,
    pub users: Vec<User>,
    pub agents: Vec<Agent>,
    pub roles: Vec<UserRole>,
    pub tickets: Vec<Ticket>,
    pub actions: Vec<Action>,
    pub statuses: Vec<Status>,
    pub priorities: Vec<Priority>,
    pub teams: Vec<Named>,
    pub ticket_types: Vec<Named>,
    /// Ticket categories of the four lists (`type_id` 1–4).
    pub categories: Vec<Category>,
    /// The tenant makes category, impact and urgency mandatory on new tickets (Halo's
    /// ticket type field settings): a create without them is refused.
    pub require_category: bool,
    pub webhooks: Vec<Webhook>,
}

/// A webhook as registered through `POST /api/Webhook` (schema `Webhook`; Basic
/// authentication is `authentication_type` 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Webhook {
    /// A uuid (schema `Webhook`); empty on a create.
    #[serde(default)]
    pub id: String,
    /// The schema's integer `method`, when a client sends one (a string is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<i64>,
    #[serde(default)]
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub authentication_type: i64,
    #[serde(default)]
    pub basic_username: String,
    /// Write-only: never served back.
    #[serde(default, skip_serializing)]
    pub basic_password: String,
    #[serde(default)]
    pub events: Vec<serde_json::Value>,
    #[serde(default = "yes")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

/// One request as the sandbox received it (contract tests check them against the spec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    /// A write's JSON body (the `/auth/token` form is not kept: it carries the secret).
    pub body: Option<serde_json::Value>,
}

struct State_ {
    data: RwLock<HaloData>,
    /// token → (client id, expiry)
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    token_life: Mutex<Duration>,
    limit: VendorRateLimit,
    seen: Mutex<Vec<SeenRequest>>,
    issued: Mutex<u64>,
    raw_edits: RawEdits,
    webhooks_sent: std::sync::atomic::AtomicU64,
    /// Bodies built so far: each delivery's `id` is unique.
    bodies: std::sync::atomic::AtomicU64,
    /// Writes still to apply with their answer lost (a 504 after the change is made).
    lost_answers: std::sync::atomic::AtomicU32,
}

/// A Halo sandbox. Clone it to keep a handle on its data and faults while it serves.
#[derive(Clone)]
pub struct HaloSandbox {
    state: Arc<State_>,
    pub faults: Faults,
}

fn base_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

/// The deterministic data set for `seed`: clients, ten users per client (fewer in the
/// demo), agents, user roles.
pub fn generate(seed: Seed) -> HaloData {
    let (n_clients, users_per, n_agents) = match seed {
        Seed::Small => (20usize, 4usize, 6usize),
        Seed::Large => (5_000, 10, 1_000),
        Seed::Companies(n) => (n as usize, 10, (n as usize / 5).max(1)),
    };
    let mut rng = Rng::new(0x4A10);
    let roles: Vec<UserRole> = ["Approver", "Billing Contact", "IT Contact", "Standard"]
        .iter()
        .enumerate()
        .map(|(i, n)| UserRole {
            id: i as i64 + 1,
            name: n.to_string(),
        })
        .collect();
    let mut clients = Vec::with_capacity(n_clients);
    let mut users = Vec::with_capacity(n_clients * users_per);
    let mut user_id = 1i64;
    for i in 0..n_clients {
        let id = 10 + i as i64;
        let name = company_name(&mut rng, i);
        let domain: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(16)
            .collect::<String>()
            .to_lowercase();
        let updated = base_time() + chrono::Duration::minutes(rng.below(60 * 24 * 300) as i64);
        clients.push(Client {
            id,
            website: Some(format!("www.{}", web_domain(&name))),
            name,
            inactive: rng.chance(6),
            toplevel_name: Some("Clients".into()),
            main_site_id: Some(id * 10),
            alastupdate: Some(updated),
        });
        let k = if matches!(seed, Seed::Small) {
            1 + rng.below(users_per as u64 + 2) as usize
        } else {
            users_per
        };
        for j in 0..k {
            let first = rng.pick(&FIRST).to_string();
            let last = rng.pick(&LAST).to_string();
            let email = (!rng.chance(4)).then(|| {
                format!(
                    "{}.{}{user_id}@{domain}{id}.example",
                    first.to_lowercase(),
                    last.to_lowercase()
                )
            });
            let role = if rng.chance(30) {
                Some(rng.pick(&roles).name.clone())
            } else {
                None
            };
            users.push(User {
                id: user_id,
                name: format!("{first} {last}"),
                firstname: first,
                surname: last,
                emailaddress: email,
                email2: None,
                email3: None,
                phonenumber: Some(format!("+1 555 {:04}", user_id % 10_000)),
                mobilenumber: None,
                client_id: Some(id),
                site_id: Some(id * 10),
                inactive: rng.chance(5),
                ismaincontact: j == 0,
                role_list: role,
                ulastupdate: Some(
                    base_time() + chrono::Duration::minutes(rng.below(60 * 24 * 300) as i64),
                ),
            });
            user_id += 1;
        }
    }
    let agents = (0..n_agents)
        .map(|i| {
            let first = rng.pick(&FIRST).to_string();
            let last = rng.pick(&LAST).to_string();
            Agent {
                id: i as i64 + 2,
                name: format!("{first} {last}"),
                email: Some(format!(
                    "{}.{}{}@msp.example",
                    first.to_lowercase(),
                    last.to_lowercase(),
                    i
                )),
                firstname: first,
                surname: last,
                isdisabled: rng.chance(5),
                last_modified: Some(base_time()),
            }
        })
        .collect();
    let mut data = HaloData {
        clients,
        users,
        agents,
        roles,
        statuses: [
            (1, "New"),
            (2, "In Progress"),
            (3, "Action Required"),
            (4, "With User"),
            (5, "With Supplier"),
            (6, "Updated"),
            (CLOSED_STATUS_ID, "Closed"),
        ]
        .into_iter()
        .map(|(id, n)| Status { id, name: n.into() })
        .collect(),
        priorities: ["Critical", "High", "Medium", "Low"]
            .iter()
            .enumerate()
            .map(|(i, n)| Priority {
                priorityid: i as i64 + 1,
                name: n.to_string(),
            })
            .collect(),
        teams: named(&[
            (1, "1st Line Support"),
            (2, "2nd Line Support"),
            (3, "Projects"),
        ]),
        ticket_types: named(&[(1, "Incident"), (3, "Service Request"), (4, "Problem")]),
        categories: [
            (1, "Hardware", 1),
            (2, "Software", 1),
            (3, "Network", 1),
            (4, "Hardware>Laptop", 2),
        ]
        .into_iter()
        .map(|(id, v, t)| Category {
            id,
            value: v.into(),
            type_id: Some(t),
        })
        .collect(),
        ..HaloData::default()
    };
    if matches!(seed, Seed::Small) {
        add_tickets(&mut data, 3, 2);
    }
    data
}

fn named(rows: &[(i64, &str)]) -> Vec<Named> {
    rows.iter()
        .map(|(id, n)| Named {
            id: *id,
            name: n.to_string(),
        })
        .collect()
}

/// Up to `per_client` tickets for each client (0 to `per_client`, deterministic) with
/// `notes_per` actions each, one in three of them private.
pub fn add_tickets(d: &mut HaloData, per_client: usize, notes_per: usize) {
    let mut rng = Rng::new(0x71C7);
    let mut ticket_id = d.tickets.iter().map(|t| t.id).max().unwrap_or(1_000);
    let mut action_id = d.actions.iter().map(|a| a.id).max().unwrap_or(0);
    let statuses: Vec<i64> = d.statuses.iter().map(|s| s.id).collect();
    for c in &d.clients {
        let users: Vec<i64> = d
            .users
            .iter()
            .filter(|u| u.client_id == Some(c.id))
            .map(|u| u.id)
            .collect();
        for _ in 0..rng.below(per_client as u64 + 1) {
            ticket_id += 1;
            let status_id = *rng.pick(&statuses);
            let occurred = base_time() + chrono::Duration::minutes(rng.below(60 * 24 * 300) as i64);
            let updated = occurred + chrono::Duration::minutes(rng.below(60 * 24 * 5) as i64);
            d.tickets.push(Ticket {
                id: ticket_id,
                summary: rng.pick(&TICKET_SUBJECTS).to_string(),
                details: Some(format!("Reported by the client (ticket {ticket_id}).")),
                status_id,
                priority_id: Some(1 + rng.below(4) as i64),
                tickettype_id: Some(*rng.pick(&[1i64, 3, 4])),
                team: Some(rng.pick(&d.teams).name.clone()),
                agent_id: d.agents.first().map(|a| a.id),
                client_id: Some(c.id),
                user_id: users.first().copied(),
                dateoccurred: Some(occurred),
                dateclosed: (status_id == CLOSED_STATUS_ID).then_some(updated),
                last_update: Some(updated),
                third_party_id_string: None,
                category_1: None,
                impact: None,
                urgency: None,
            });
            for k in 0..notes_per {
                action_id += 1;
                d.actions.push(Action {
                    id: action_id,
                    ticket_id,
                    note: format!("Update {} on ticket {ticket_id}.", k + 1),
                    hiddenfromuser: action_id % 3 == 0,
                    outcome: Some("Note".into()),
                    who: Some("Sam Agent".into()),
                    datetime: Some(occurred + chrono::Duration::minutes(k as i64 + 1)),
                });
            }
        }
    }
}

impl HaloSandbox {
    pub fn new(seed: Seed) -> Self {
        Self {
            state: Arc::new(State_ {
                data: RwLock::new(generate(seed)),
                tokens: Mutex::new(HashMap::new()),
                token_life: Mutex::new(Duration::from_secs(3600)),
                limit: VendorRateLimit::new(300, Duration::from_secs(300)),
                seen: Mutex::new(Vec::new()),
                issued: Mutex::new(0),
                raw_edits: RawEdits::default(),
                webhooks_sent: std::sync::atomic::AtomicU64::new(0),
                bodies: std::sync::atomic::AtomicU64::new(0),
                lost_answers: std::sync::atomic::AtomicU32::new(0),
            }),
            faults: Faults::default(),
        }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/auth/token", post(token))
            .route("/api/{entity}", get(list).post(upsert))
            .route("/api/{entity}/{id}", get(one))
            .route("/_sandbox/tickets/{id}/status", post(sandbox_status))
            .route("/_sandbox/tickets/{id}/notes", post(sandbox_note))
            .route("/_sandbox/touch-users", post(touch_users))
            .with_state(self.state.clone())
            .layer(axum::middleware::from_fn_with_state(
                self.state.clone(),
                record,
            ))
            .layer(axum::middleware::from_fn_with_state(
                self.faults.clone(),
                mspbridge_sandbox::inject_faults,
            ))
    }

    pub fn serve(&self, listener: TcpListener) -> std::io::Result<SandboxHandle> {
        mspbridge_sandbox::serve(self.router(), listener)
    }

    /// Mutate the data set (tests simulate Halo-side changes with it).
    pub fn with_data<R>(&self, f: impl FnOnce(&mut HaloData) -> R) -> R {
        match self.state.data.write() {
            Ok(mut d) => f(&mut d),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// The hosted limit this sandbox enforces (default 300 per 5 minutes).
    pub fn set_rate_limit(&self, requests: usize, window: Duration) {
        self.state.limit.set(requests, window);
    }

    /// How long issued tokens live (default an hour, as Halo's).
    pub fn set_token_life(&self, life: Duration) {
        if let Ok(mut l) = self.state.token_life.lock() {
            *l = life;
        }
    }

    /// Forgets every issued token (as if they were revoked): the next call gets a 401.
    pub fn revoke_tokens(&self) {
        if let Ok(mut t) = self.state.tokens.lock() {
            t.clear();
        }
    }

    /// Serves `field` of record `id` in the answer list `collection` (`clients`, `users`,
    /// `agents`, `tickets`)
    /// as `value`, whatever the typed data says: tests send rows the connector cannot read
    /// with it.
    pub fn set_raw_field(&self, collection: &str, id: i64, field: &str, value: serde_json::Value) {
        self.state.raw_edits.push(collection, id, field, value);
    }

    /// Moves ticket `id` to the status named `name`, as an agent in Halo would (the
    /// webhooks are told).
    pub fn set_ticket_status(&self, id: i64, name: &str) -> bool {
        set_status(&self.state, id, name)
    }

    /// An agent writes a note on a ticket; the action's id, `None` for an unknown ticket.
    pub fn add_note(&self, ticket: i64, text: &str, internal: bool) -> Option<i64> {
        add_action(&self.state, ticket, text, internal, "Sam Agent")
    }

    /// Deletes a ticket and its actions, as an admin can in Halo.
    pub fn delete_ticket(&self, id: i64) -> bool {
        self.with_data(|d| {
            let before = d.tickets.len();
            d.tickets.retain(|t| t.id != id);
            d.actions.retain(|a| a.ticket_id != id);
            d.tickets.len() < before
        })
    }

    /// The next `n` writes are applied but their answers lost (HTTP 504), as when a
    /// gateway times out after Halo committed.
    pub fn lose_write_answers(&self, n: u32) {
        self.state
            .lost_answers
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many webhook deliveries this sandbox has started.
    pub fn webhooks_sent(&self) -> u64 {
        self.state
            .webhooks_sent
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The body Halo posts to a webhook when ticket `id` changed (`event` names the
    /// notification, e.g. "Ticket Updated"); every delivery has its own `id`.
    pub fn webhook_body(&self, event: &str, id: i64) -> Vec<u8> {
        webhook_body(&self.state, event, id)
    }

    pub fn tokens_issued(&self) -> u64 {
        self.state.issued.lock().map(|n| *n).unwrap_or(0)
    }

    pub fn seen(&self) -> Vec<SeenRequest> {
        self.state
            .seen
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
}

async fn record(
    State(s): State<Arc<State_>>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let query = req
        .uri()
        .query()
        .map(|q| {
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (k.to_string(), v.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let json = (parts.uri.path().starts_with("/api/"))
        .then(|| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .flatten();
    if let Ok(mut seen) = s.seen.lock() {
        seen.push(SeenRequest {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query,
            body: json,
        });
    }
    let req = Request::from_parts(parts, axum::body::Body::from(bytes));
    // Hosted Halo counts every request of the tenant over a rolling window.
    let over = !s.limit.admit();
    if over {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json("Too many requests: the API rate limit was reached"),
        )
            .into_response();
    }
    next.run(req).await
}

/// Control endpoint for benchmarks run against a sandbox in another process: changes
/// every `every`-th user (surname and last-update stamp) and says how many.
async fn touch_users(
    State(s): State<Arc<State_>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let every = mspbridge_sandbox::touch_every(&q);
    let mut d = match s.data.write() {
        Ok(d) => d,
        Err(p) => p.into_inner(),
    };
    let latest = d
        .users
        .iter()
        .filter_map(|u| u.ulastupdate)
        .max()
        .unwrap_or_else(base_time);
    let mut n = 0;
    for u in d.users.iter_mut().step_by(every) {
        u.surname.push_str(" Jr");
        u.ulastupdate = Some(latest + chrono::Duration::minutes(60));
        n += 1;
    }
    axum::Json(serde_json::json!({ "changed": n })).into_response()
}

#[derive(Serialize)]
struct TokenAnswer {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
}

async fn token(
    State(s): State<Arc<State_>>,
    Query(q): Query<HashMap<String, String>>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let bad = |code: &str, desc: &str| {
        (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({"error": code, "error_description": desc})),
        )
            .into_response()
    };
    if f.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({"error": "unsupported_grant_type"})),
        )
            .into_response();
    }
    if let Some(t) = q.get("tenant")
        && t != DEMO_TENANT
    {
        return bad("invalid_request", &format!("Unknown tenant '{t}'"));
    }
    let id = f.get("client_id").cloned().unwrap_or_default();
    let secret = f.get("client_secret").cloned().unwrap_or_default();
    let valid = (id == DEMO_CLIENT_ID && secret == DEMO_CLIENT_SECRET)
        || (id == LIMITED_CLIENT_ID && secret == LIMITED_CLIENT_SECRET);
    if !valid {
        return bad("invalid_client", "Invalid client_id or client_secret");
    }
    let n = {
        let mut issued = match s.issued.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *issued += 1;
        *issued
    };
    let life = s
        .token_life
        .lock()
        .map(|l| *l)
        .unwrap_or(Duration::from_secs(3600));
    let access_token = format!("halo-sandbox-{n}-{}", Rng::new(n).next_u64());
    if let Ok(mut t) = s.tokens.lock() {
        t.insert(access_token.clone(), (id, Instant::now() + life));
    }
    axum::Json(TokenAnswer {
        access_token,
        token_type: "Bearer",
        expires_in: life.as_secs(),
    })
    .into_response()
}

/// The API application behind the request's Bearer token, if the token is valid.
fn caller(s: &State_, headers: &HeaderMap) -> Option<String> {
    let token = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    let tokens = s.tokens.lock().ok()?;
    let (id, until) = tokens.get(token)?;
    (Instant::now() < *until).then(|| id.clone())
}

fn flag(q: &HashMap<String, String>, k: &str) -> bool {
    q.get(k).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Paging, ordering, `lastupdatefromdate` and active/inactive as Halo applies them.
fn paged<T: Serialize + Clone>(
    key: &str,
    rows: Vec<&T>,
    q: &HashMap<String, String>,
    edits: &RawEdits,
) -> Response {
    let total = rows.len();
    let answer = |page: Option<(usize, usize)>, rows: &[&T]| {
        let mut m = serde_json::Map::new();
        if let Some((no, size)) = page {
            m.insert("page_no".into(), no.into());
            m.insert("page_size".into(), size.into());
        }
        m.insert("record_count".into(), total.into());
        let mut rows = serde_json::to_value(rows).unwrap_or(serde_json::Value::Null);
        if let serde_json::Value::Array(rows) = &mut rows {
            edits.apply(key, rows);
        }
        m.insert(key.into(), rows);
        axum::Json(serde_json::Value::Object(m)).into_response()
    };
    if !flag(q, "pageinate") {
        let count = q
            .get("count")
            .and_then(|c| c.parse::<usize>().ok())
            .unwrap_or(total);
        return answer(None, &rows[..count.min(total)]);
    }
    let size = q
        .get("page_size")
        .and_then(|c| c.parse::<usize>().ok())
        .unwrap_or(50)
        .clamp(1, 100);
    let page = q
        .get("page_no")
        .and_then(|c| c.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let start = (page - 1).saturating_mul(size).min(total);
    let end = (start + size).min(total);
    answer(Some((page, size)), &rows[start..end])
}

async fn list(
    State(s): State<Arc<State_>>,
    Path(entity): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let Some(app) = caller(&s, &headers) else {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json("The access token is missing, invalid or expired"),
        )
            .into_response();
    };
    let since = match q.get("lastupdatefromdate").map(|d| halo_date::parse(d)) {
        None => None,
        Some(Some(d)) => Some(d),
        Some(None) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json("lastupdatefromdate is not a valid date"),
            )
                .into_response();
        }
    };
    let inactive_too = flag(&q, "includeinactive");
    let desc = flag(&q, "orderdesc");
    let data = match s.data.read() {
        Ok(d) => d,
        Err(p) => p.into_inner(),
    };
    let keep = |updated: Option<DateTime<Utc>>, inactive: bool| {
        (inactive_too || !inactive) && since.is_none_or(|s| updated.is_some_and(|u| u >= s))
    };
    match entity.as_str() {
        "Client" => {
            let mut rows: Vec<&Client> = data
                .clients
                .iter()
                .filter(|c| keep(c.alastupdate, c.inactive))
                .collect();
            rows.sort_by_key(|c| c.id);
            if desc {
                rows.reverse();
            }
            paged("clients", rows, &q, &s.raw_edits)
        }
        "Users" => {
            let mut rows: Vec<&User> = data
                .users
                .iter()
                .filter(|u| keep(u.ulastupdate, u.inactive))
                .filter(|u| {
                    q.get("client_id")
                        .and_then(|c| c.parse::<i64>().ok())
                        .is_none_or(|c| u.client_id == Some(c))
                })
                .collect();
            rows.sort_by_key(|u| u.id);
            if desc {
                rows.reverse();
            }
            paged("users", rows, &q, &s.raw_edits)
        }
        "Agent" if app == LIMITED_CLIENT_ID => (
            StatusCode::FORBIDDEN,
            axum::Json("You do not have permission to view agents"),
        )
            .into_response(),
        "Agent" => {
            let disabled_too = flag(&q, "includedisabled");
            let rows: Vec<&Agent> = data
                .agents
                .iter()
                .filter(|a| disabled_too || !a.isdisabled)
                .collect();
            let mut rows = serde_json::to_value(rows).unwrap_or(serde_json::Value::Null);
            if let serde_json::Value::Array(rows) = &mut rows {
                s.raw_edits.apply("agents", rows);
            }
            axum::Json(rows).into_response()
        }
        "UserRoles" => axum::Json(&data.roles).into_response(),
        "Tickets" => {
            let closed_too = flag(&q, "includeclosed");
            let client = q.get("client_id").and_then(|c| c.parse::<i64>().ok());
            let mut rows: Vec<&Ticket> = data
                .tickets
                .iter()
                .filter(|t| keep(t.last_update, false))
                .filter(|t| closed_too || t.status_id != CLOSED_STATUS_ID)
                .filter(|t| client.is_none_or(|c| t.client_id == Some(c)))
                .collect();
            rows.sort_by_key(|t| t.id);
            if desc {
                rows.reverse();
            }
            paged("tickets", rows, &q, &s.raw_edits)
        }
        "Actions" => {
            let Some(ticket) = q.get("ticket_id").and_then(|t| t.parse::<i64>().ok()) else {
                return (StatusCode::BAD_REQUEST, axum::Json("ticket_id is required"))
                    .into_response();
            };
            let rows: Vec<&Action> = data
                .actions
                .iter()
                .filter(|a| a.ticket_id == ticket)
                .collect();
            axum::Json(serde_json::json!({"record_count": rows.len(), "actions": rows}))
                .into_response()
        }
        "Status" => axum::Json(&data.statuses).into_response(),
        "Priority" => axum::Json(&data.priorities).into_response(),
        "Team" => axum::Json(&data.teams).into_response(),
        "TicketType" => axum::Json(&data.ticket_types).into_response(),
        "Category" => {
            let list = q.get("type_id").and_then(|t| t.parse::<i64>().ok());
            let rows: Vec<&Category> = data
                .categories
                .iter()
                .filter(|c| list.is_none_or(|l| c.type_id == Some(l)))
                .collect();
            axum::Json(rows).into_response()
        }
        "Webhook" => axum::Json(&data.webhooks).into_response(),
        _ => (
            StatusCode::NOT_FOUND,
            axum::Json(format!("No such endpoint: /api/{entity}")),
        )
            .into_response(),
    }
}

fn refused(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(message.to_string())).into_response()
}

fn unauthorised() -> Response {
    refused(
        StatusCode::UNAUTHORIZED,
        "The access token is missing, invalid or expired",
    )
}

/// `GET /api/Tickets/{id}`.
async fn one(
    State(s): State<Arc<State_>>,
    Path((entity, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if caller(&s, &headers).is_none() {
        return unauthorised();
    }
    let data = match s.data.read() {
        Ok(d) => d,
        Err(p) => p.into_inner(),
    };
    let id = id.parse::<i64>().unwrap_or(-1);
    match entity.as_str() {
        "Tickets" => match data.tickets.iter().find(|t| t.id == id) {
            Some(t) => axum::Json(t).into_response(),
            None => refused(StatusCode::NOT_FOUND, &format!("Ticket {id} not found")),
        },
        _ => refused(
            StatusCode::NOT_FOUND,
            &format!("No such endpoint: /api/{entity}/{id}"),
        ),
    }
}

/// `POST /api/{Tickets|Actions|Webhook}`: a JSON array of upserts. Halo answers with the
/// record written (one object for one record).
async fn upsert(
    State(s): State<Arc<State_>>,
    Path(entity): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(app) = caller(&s, &headers) else {
        return unauthorised();
    };
    let rows: Vec<serde_json::Value> = match serde_json::from_slice(&body) {
        Ok(serde_json::Value::Array(rows)) if !rows.is_empty() => rows,
        _ => {
            return refused(
                StatusCode::BAD_REQUEST,
                "The request body must be a JSON array of records",
            );
        }
    };
    if app == LIMITED_CLIENT_ID {
        return refused(
            StatusCode::FORBIDDEN,
            &format!("You do not have permission to edit {entity}"),
        );
    }
    let mut written = Vec::new();
    for row in rows {
        let result = match entity.as_str() {
            "Tickets" => upsert_ticket(&s, &row),
            "Actions" => upsert_action(&s, &row),
            "Webhook" => upsert_webhook(&s, row),
            "Agent" => update_agent(&s, &row),
            _ => Err(format!("No such endpoint: /api/{entity}")),
        };
        match result {
            Ok(v) => written.push(v),
            Err(m) => return refused(StatusCode::BAD_REQUEST, &m),
        }
    }
    let lost = s.lost_answers.fetch_update(
        std::sync::atomic::Ordering::SeqCst,
        std::sync::atomic::Ordering::SeqCst,
        |n| n.checked_sub(1),
    );
    if lost.is_ok() {
        return refused(StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout");
    }
    if written.len() == 1 {
        axum::Json(written.swap_remove(0)).into_response()
    } else {
        axum::Json(written).into_response()
    }
}

fn int(v: &serde_json::Value, field: &str) -> Option<i64> {
    v.get(field).and_then(serde_json::Value::as_i64)
}

fn text(v: &serde_json::Value, field: &str) -> Option<String> {
    v.get(field)
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
}

fn upsert_ticket(s: &Arc<State_>, row: &serde_json::Value) -> Result<serde_json::Value, String> {
    let now = Utc::now();
    let (id, event) = {
        let mut d = match s.data.write() {
            Ok(d) => d,
            Err(p) => p.into_inner(),
        };
        if let Some(st) = int(row, "status_id")
            && !d.statuses.iter().any(|x| x.id == st)
        {
            return Err(format!("Status {st} does not exist"));
        }
        match int(row, "id").filter(|id| *id > 0) {
            Some(id) => {
                let t = d
                    .tickets
                    .iter_mut()
                    .find(|t| t.id == id)
                    .ok_or_else(|| format!("Ticket {id} not found"))?;
                if let Some(st) = int(row, "status_id") {
                    t.status_id = st;
                    t.dateclosed = (st == CLOSED_STATUS_ID).then_some(now);
                }
                if let Some(x) = text(row, "summary") {
                    t.summary = x;
                }
                if let Some(x) = text(row, "details") {
                    t.details = Some(x);
                }
                if let Some(x) = int(row, "priority_id") {
                    t.priority_id = Some(x);
                }
                t.last_update = Some(now);
                (id, "Ticket Updated")
            }
            None => {
                let summary = text(row, "summary").unwrap_or_default();
                if summary.trim().is_empty() {
                    return Err("Please enter a summary".into());
                }
                let client_id = int(row, "client_id")
                    .filter(|c| d.clients.iter().any(|x| x.id == *c))
                    .ok_or("Please select a valid client")?;
                let team = text(row, "team");
                if let Some(t) = &team
                    && !d.teams.iter().any(|x| &x.name == t)
                {
                    return Err(format!("Team '{t}' does not exist"));
                }
                if let Some(ty) = int(row, "tickettype_id")
                    && !d.ticket_types.iter().any(|x| x.id == ty)
                {
                    return Err(format!("Ticket Type {ty} does not exist"));
                }
                let category_1 = text(row, "category_1");
                if let Some(c) = &category_1
                    && !d
                        .categories
                        .iter()
                        .any(|x| x.type_id == Some(1) && &x.value == c)
                {
                    return Err(format!("Category '{c}' does not exist"));
                }
                let (impact, urgency) = (int(row, "impact"), int(row, "urgency"));
                for (name, v) in [("Impact", impact), ("Urgency", urgency)] {
                    if v.is_some_and(|v| !(1..=4).contains(&v)) {
                        return Err(format!("{name} must be between 1 and 4"));
                    }
                }
                if d.require_category {
                    for (name, missing) in [
                        ("Category", category_1.is_none()),
                        ("Impact", impact.is_none()),
                        ("Urgency", urgency.is_none()),
                    ] {
                        if missing {
                            return Err(format!("Please select a {name}"));
                        }
                    }
                }
                let id = d.tickets.iter().map(|t| t.id).max().unwrap_or(1_000) + 1;
                let status_id = int(row, "status_id").unwrap_or(1);
                d.tickets.push(Ticket {
                    id,
                    summary,
                    details: text(row, "details"),
                    status_id,
                    priority_id: int(row, "priority_id").or(Some(3)),
                    tickettype_id: int(row, "tickettype_id").or(Some(1)),
                    team,
                    agent_id: None,
                    client_id: Some(client_id),
                    user_id: int(row, "user_id"),
                    dateoccurred: Some(now),
                    dateclosed: (status_id == CLOSED_STATUS_ID).then_some(now),
                    last_update: Some(now),
                    third_party_id_string: text(row, "third_party_id_string"),
                    category_1,
                    impact,
                    urgency,
                });
                (id, "New Ticket Logged")
            }
        }
    };
    notify(s, event, id);
    let d = match s.data.read() {
        Ok(d) => d,
        Err(p) => p.into_inner(),
    };
    let t = d.tickets.iter().find(|t| t.id == id);
    Ok(serde_json::to_value(t).unwrap_or_default())
}

/// `POST /api/Agent` for an existing agent (with its `id`): name, names, email, disabled.
fn update_agent(s: &Arc<State_>, row: &serde_json::Value) -> Result<serde_json::Value, String> {
    let mut d = match s.data.write() {
        Ok(d) => d,
        Err(p) => p.into_inner(),
    };
    let id = int(row, "id").ok_or("this sandbox only updates agents: send their id")?;
    let a = d
        .agents
        .iter_mut()
        .find(|a| a.id == id)
        .ok_or_else(|| format!("Agent {id} not found"))?;
    if let Some(e) = text(row, "email") {
        if !e.contains('@') {
            return Err(format!("'{e}' is not an email address"));
        }
        a.email = Some(e);
    }
    if let Some(v) = text(row, "name") {
        a.name = v;
    }
    if let Some(v) = text(row, "firstname") {
        a.firstname = v;
    }
    if let Some(v) = text(row, "surname") {
        a.surname = v;
    }
    if let Some(v) = row.get("isdisabled").and_then(serde_json::Value::as_bool) {
        a.isdisabled = v;
    }
    a.last_modified = Some(Utc::now());
    Ok(serde_json::to_value(&*a).unwrap_or_default())
}

fn upsert_action(s: &Arc<State_>, row: &serde_json::Value) -> Result<serde_json::Value, String> {
    if int(row, "id").is_some_and(|id| id > 0) {
        return Err("Editing actions is not supported by this sandbox".into());
    }
    let ticket = int(row, "ticket_id").ok_or("ticket_id is required")?;
    let note = text(row, "note").unwrap_or_default();
    let hidden = row
        .get("hiddenfromuser")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let id = add_action(s, ticket, &note, hidden, "mspbridge API")
        .ok_or_else(|| format!("Ticket {ticket} not found"))?;
    let d = match s.data.read() {
        Ok(d) => d,
        Err(p) => p.into_inner(),
    };
    Ok(serde_json::to_value(d.actions.iter().find(|a| a.id == id)).unwrap_or_default())
}

fn upsert_webhook(s: &Arc<State_>, row: serde_json::Value) -> Result<serde_json::Value, String> {
    let mut w: Webhook =
        serde_json::from_value(row).map_err(|e| format!("Invalid webhook: {e}"))?;
    if !(w.url.starts_with("https://") || w.url.starts_with("http://")) {
        return Err("Please enter a valid URL".into());
    }
    let mut d = match s.data.write() {
        Ok(d) => d,
        Err(p) => p.into_inner(),
    };
    if !w.id.is_empty() {
        let slot = d
            .webhooks
            .iter_mut()
            .find(|x| x.id == w.id)
            .ok_or_else(|| format!("Webhook {} not found", w.id))?;
        *slot = w.clone();
    } else {
        w.id = format!("6f1c2a9e-0b7d-4c3e-9a51-{:012x}", d.webhooks.len() + 1);
        d.webhooks.push(w.clone());
    }
    Ok(serde_json::to_value(&w).unwrap_or_default())
}

fn set_status(s: &Arc<State_>, id: i64, name: &str) -> bool {
    let changed = {
        let mut d = match s.data.write() {
            Ok(d) => d,
            Err(p) => p.into_inner(),
        };
        let Some(st) = d.statuses.iter().find(|x| x.name == name).map(|x| x.id) else {
            return false;
        };
        match d.tickets.iter_mut().find(|t| t.id == id) {
            Some(t) => {
                let now = Utc::now();
                t.status_id = st;
                t.dateclosed = (st == CLOSED_STATUS_ID).then_some(now);
                t.last_update = Some(now);
                true
            }
            None => false,
        }
    };
    if changed {
        notify(s, "Ticket Updated", id);
    }
    changed
}

/// A note on `ticket` by `who`; the ticket's `last_update` moves with it.
fn add_action(s: &Arc<State_>, ticket: i64, note: &str, hidden: bool, who: &str) -> Option<i64> {
    let id = {
        let mut d = match s.data.write() {
            Ok(d) => d,
            Err(p) => p.into_inner(),
        };
        let now = Utc::now();
        d.tickets.iter_mut().find(|t| t.id == ticket)?.last_update = Some(now);
        let id = d.actions.iter().map(|a| a.id).max().unwrap_or(0) + 1;
        d.actions.push(Action {
            id,
            ticket_id: ticket,
            note: note.to_string(),
            hiddenfromuser: hidden,
            outcome: Some(if hidden { "Private Note" } else { "Note" }.into()),
            who: Some(who.to_string()),
            datetime: Some(now),
        });
        id
    };
    notify(s, "Action Added", ticket);
    Some(id)
}

fn webhook_body(s: &State_, event: &str, id: i64) -> Vec<u8> {
    let n = s.bodies.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = match s.data.read() {
        Ok(d) => d,
        Err(p) => p.into_inner(),
    };
    let ticket = d.tickets.iter().find(|t| t.id == id);
    serde_json::to_vec(&serde_json::json!({
        "id": format!("{:016x}-{n}", Rng::new(id as u64 ^ n).next_u64()),
        "event": event,
        "ticket": ticket,
    }))
    .unwrap_or_default()
}

/// A ticket changed: every active webhook is posted to, in the background, with its Basic
/// credentials.
fn notify(s: &Arc<State_>, event: &'static str, ticket: i64) {
    let hooks: Vec<Webhook> = {
        let d = match s.data.read() {
            Ok(d) => d,
            Err(p) => p.into_inner(),
        };
        d.webhooks.iter().filter(|w| w.active).cloned().collect()
    };
    for hook in hooks {
        let mut req = reqwest::Client::new()
            .post(&hook.url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(webhook_body(s, event, ticket));
        if hook.authentication_type == 1 {
            req = req.basic_auth(&hook.basic_username, Some(&hook.basic_password));
        }
        if !deliver_in_background(req, &s.webhooks_sent, "Halo webhook") {
            return;
        }
    }
}

async fn sandbox_status(
    State(s): State<Arc<State_>>,
    Path(id): Path<i64>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let name = q.get("name").cloned().unwrap_or_default();
    if set_status(&s, id, &name) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        refused(StatusCode::NOT_FOUND, "no such ticket or status")
    }
}

async fn sandbox_note(
    State(s): State<Arc<State_>>,
    Path(id): Path<i64>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let text = q.get("text").cloned().unwrap_or_default();
    let internal = flag(&q, "internal");
    match add_action(&s, id, &text, internal, "Sam Agent") {
        Some(n) => axum::Json(serde_json::json!({ "id": n })).into_response(),
        None => refused(StatusCode::NOT_FOUND, "no such ticket"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_deterministic_and_sized() {
        let a = generate(Seed::Companies(30));
        let b = generate(Seed::Companies(30));
        assert_eq!(a.clients, b.clients);
        assert_eq!(a.users.len(), 300);
        assert_eq!(a.agents.len(), 6);
    }
}
