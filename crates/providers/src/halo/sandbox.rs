//! Halo played on loopback for tests, benchmarks and the demo: `POST /auth/token`
//! (client credentials, optional `?tenant=`), Bearer-protected `/api/Client`,
//! `/api/Users`, `/api/Agent` and `/api/UserRoles` with Halo's paging (`pageinate`,
//! `page_no`, `page_size` capped at 100, `record_count`), `order`/`orderdesc`,
//! `lastupdatefromdate`, `includeinactive`; a rolling-window rate limit answering 429;
//! an API application without agent permission (403); and fault injection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, TimeZone, Utc};
use mspbridge_sandbox::names::{FIRST, LAST, company_name, web_domain};
use mspbridge_sandbox::{Faults, RawEdits, Rng, SandboxHandle, Seed, VendorRateLimit};
use serde::Serialize;
use tokio::net::TcpListener;

use super::wire::{Agent, Client, User, UserRole, halo_date};

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
}

/// One request as the sandbox received it (contract tests check them against the spec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
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
    HaloData {
        clients,
        users,
        agents,
        roles,
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
            }),
            faults: Faults::default(),
        }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/auth/token", post(token))
            .route("/api/{entity}", get(list))
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

    /// Serves `field` of record `id` in the answer list `collection` (`clients`, `users`)
    /// as `value`, whatever the typed data says: tests send rows the connector cannot read
    /// with it.
    pub fn set_raw_field(&self, collection: &str, id: i64, field: &str, value: serde_json::Value) {
        self.state.raw_edits.push(collection, id, field, value);
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
    if let Ok(mut seen) = s.seen.lock() {
        seen.push(SeenRequest {
            method: req.method().to_string(),
            path: req.uri().path().to_string(),
            query,
        });
    }
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
            axum::Json(rows).into_response()
        }
        "UserRoles" => axum::Json(&data.roles).into_response(),
        // Tickets sync comes with the ticket issue; the connection test only needs access.
        "Tickets" => paged::<serde_json::Value>("tickets", vec![], &q, &RawEdits::default()),
        _ => (
            StatusCode::NOT_FOUND,
            axum::Json(format!("No such endpoint: /api/{entity}")),
        )
            .into_response(),
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
