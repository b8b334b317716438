//! The ConnectWise Manage sandbox: plays ConnectWise on loopback for tests, benchmarks
//! and the demo, with CW's real paths (`/login/companyinfo/{id}`,
//! `/{codebase}apis/3.0/...`), Basic auth `companyId+public:private`, the mandatory
//! `clientId` header, per-member security-role denials (403 `Security`), paging with
//! `page`/`pageSize` (max 1000) and `Link` headers, `fields`, and the error body
//! `{"code","message","errors"}`. Fault injection comes from the shared harness.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Duration, TimeZone, Utc};
use mspbridge_sandbox::names::{ADJECTIVES, FIRST, LAST, NOUNS, SUFFIXES, web_domain};
use mspbridge_sandbox::{Faults, RawEdits, Rng, SandboxHandle, Seed};
use serde::Serialize;
use tokio::net::TcpListener;

use super::wire::*;

pub const DEMO_COMPANY_ID: &str = "mspbridge";
pub const DEMO_PUBLIC_KEY: &str = "demo-public-key";
pub const DEMO_PRIVATE_KEY: &str = "demo-private-key";
/// An API member whose security role lacks Member Maintenance and Service Tickets.
pub const LIMITED_PUBLIC_KEY: &str = "limited-public-key";
pub const LIMITED_PRIVATE_KEY: &str = "limited-private-key";
pub const DEMO_CLIENT_ID: &str = "0b5e1c8a-6f0d-4c55-9a3e-2f9d7c1b4e60";
pub const CODEBASE: &str = "v2025_1/";
/// The key the sandbox signs its callbacks with (served at `key_url`).
pub const SIGNING_KEY: &str = "cw-sandbox-signing-key-1";

#[derive(Debug, Clone)]
pub struct ApiMemberKey {
    pub public: String,
    pub private: String,
    /// Area keys (see [`super::AREAS`]) this member's security role does not grant.
    pub denied: Vec<&'static str>,
}

/// A request the sandbox received, for contract assertions in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub client_id: Option<String>,
    pub accept: Option<String>,
    pub authorized: bool,
}

/// The seeded data set.
#[derive(Debug, Clone, Default)]
pub struct CwData {
    pub companies: Vec<Company>,
    pub company_statuses: Vec<CompanyStatus>,
    pub company_types: Vec<CompanyType>,
    pub contacts: Vec<Contact>,
    pub contact_types: Vec<ContactType>,
    pub members: Vec<Member>,
    pub boards: Vec<Board>,
    /// Every board offers these statuses.
    pub board_statuses: Vec<BoardStatus>,
    /// Every board offers these ticket types (`/service/boards/{id}/types`).
    pub board_types: Vec<BoardType>,
    pub priorities: Vec<Priority>,
    pub tickets: Vec<Ticket>,
    pub notes: Vec<ServiceNote>,
    /// Registered callbacks (`/system/callbacks`).
    pub callbacks: Vec<CallbackEntry>,
}

struct SandboxState {
    company_id: String,
    company_name: String,
    keys: Vec<ApiMemberKey>,
    data: RwLock<CwData>,
    /// The data set as vendor JSON sorted by id, rebuilt after every change.
    json: RwLock<Option<Arc<JsonData>>>,
    /// Raw JSON edits applied on top of the typed data: (collection, id, field, value).
    raw_edits: RawEdits,
    seen: Mutex<Vec<SeenRequest>>,
    /// Writes whose answer is lost: the change is applied, the client gets a 502.
    lost_answers: std::sync::atomic::AtomicU32,
    /// Where this sandbox serves (`http://127.0.0.1:port`), once serving: callbacks name it.
    base: std::sync::OnceLock<String>,
    /// Callbacks delivered so far.
    callbacks_sent: std::sync::atomic::AtomicU64,
    /// `/login/companyinfo` answers this body instead of the sandbox's own (tests).
    company_info: RwLock<Option<serde_json::Value>>,
    /// Whether lists answer only the keys `fields=` names (as ConnectWise does).
    honour_fields: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct JsonData {
    collections: HashMap<&'static str, Vec<serde_json::Value>>,
    /// Each ticket's notes, sorted by id.
    notes: HashMap<i64, Vec<serde_json::Value>>,
}

fn to_sorted_json<T: Serialize>(items: &[T]) -> Vec<serde_json::Value> {
    let mut rows: Vec<serde_json::Value> = items
        .iter()
        .filter_map(|i| serde_json::to_value(i).ok())
        .collect();
    rows.sort_by_key(|v| v.get("id").and_then(|i| i.as_i64()).unwrap_or(0));
    rows
}

impl SandboxState {
    fn json(&self) -> Arc<JsonData> {
        if let Some(j) = self.json.read().ok().and_then(|g| g.clone()) {
            return j;
        }
        let data = match self.data.read() {
            Ok(d) => d,
            Err(p) => p.into_inner(),
        };
        let mut collections = HashMap::new();
        collections.insert("company/companies", to_sorted_json(&data.companies));
        collections.insert(
            "company/companies/statuses",
            to_sorted_json(&data.company_statuses),
        );
        collections.insert(
            "company/companies/types",
            to_sorted_json(&data.company_types),
        );
        collections.insert("company/contacts", to_sorted_json(&data.contacts));
        collections.insert(
            "company/contacts/types",
            to_sorted_json(&data.contact_types),
        );
        collections.insert("system/members", to_sorted_json(&data.members));
        collections.insert("service/boards", to_sorted_json(&data.boards));
        collections.insert("service/tickets", to_sorted_json(&data.tickets));
        collections.insert("service/priorities", to_sorted_json(&data.priorities));
        collections.insert("system/callbacks", to_sorted_json(&data.callbacks));
        for (name, rows) in collections.iter_mut() {
            self.raw_edits.apply(name, rows);
        }
        let mut notes: HashMap<i64, Vec<serde_json::Value>> = HashMap::new();
        for n in &data.notes {
            if let Ok(v) = serde_json::to_value(n) {
                notes.entry(n.ticket_id).or_default().push(v);
            }
        }
        for rows in notes.values_mut() {
            rows.sort_by_key(|v| v.get("id").and_then(|i| i.as_i64()).unwrap_or(0));
        }
        let j = Arc::new(JsonData { collections, notes });
        if let Ok(mut g) = self.json.write() {
            *g = Some(j.clone());
        }
        j
    }
}

/// A ConnectWise sandbox. Clone it to keep a handle on its data and faults while it serves.
#[derive(Clone)]
pub struct CwSandbox {
    state: Arc<SandboxState>,
    pub faults: Faults,
}

impl CwSandbox {
    /// The demo site: company `mspbridge`, a full-access key and a limited key.
    pub fn new(seed: Seed) -> Self {
        Self::from_data(generate(seed))
    }

    /// The demo site serving this data set.
    pub fn from_data(data: CwData) -> Self {
        Self {
            state: Arc::new(SandboxState {
                company_id: DEMO_COMPANY_ID.into(),
                company_name: "mspbridge Demo MSP".into(),
                keys: vec![
                    ApiMemberKey {
                        public: DEMO_PUBLIC_KEY.into(),
                        private: DEMO_PRIVATE_KEY.into(),
                        denied: vec![],
                    },
                    ApiMemberKey {
                        public: LIMITED_PUBLIC_KEY.into(),
                        private: LIMITED_PRIVATE_KEY.into(),
                        denied: vec!["members", "tickets"],
                    },
                ],
                data: RwLock::new(data),
                json: RwLock::new(None),
                raw_edits: RawEdits::default(),
                seen: Mutex::new(Vec::new()),
                lost_answers: std::sync::atomic::AtomicU32::new(0),
                base: std::sync::OnceLock::new(),
                callbacks_sent: std::sync::atomic::AtomicU64::new(0),
                company_info: RwLock::new(None),
                honour_fields: std::sync::atomic::AtomicBool::new(true),
            }),
            faults: Faults::default(),
        }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/login/companyinfo/{company_id}", get(company_info))
            .route(
                "/callbackkeys/{n}",
                get(|| async { axum::Json(serde_json::json!({ "signing_key": SIGNING_KEY })) }),
            )
            .route(
                "/{codebase}/apis/3.0/{*rest}",
                get(api_get).post(api_post).patch(api_patch).put(api_put),
            )
            .route(
                "/_sandbox/touch-contacts",
                axum::routing::post(touch_contacts),
            )
            .route(
                "/_sandbox/tickets/{id}/{what}",
                axum::routing::post(technician_action),
            )
            .with_state(self.state.clone())
            .layer(axum::middleware::from_fn_with_state(
                self.faults.clone(),
                mspbridge_sandbox::inject_faults,
            ))
    }

    pub fn serve(&self, listener: TcpListener) -> std::io::Result<SandboxHandle> {
        if let Ok(addr) = listener.local_addr() {
            let _ = self.state.base.set(format!("http://{addr}"));
        }
        mspbridge_sandbox::serve(self.router(), listener)
    }

    /// Mutate the data set (tests simulate vendor-side changes with it).
    pub fn with_data<R>(&self, f: impl FnOnce(&mut CwData) -> R) -> R {
        let r = match self.state.data.write() {
            Ok(mut d) => f(&mut d),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        };
        if let Ok(mut g) = self.state.json.write() {
            *g = None;
        }
        r
    }

    /// Serves `field` of the record `id` in `collection` (for example `company/contacts`)
    /// as `value`, whatever the typed data says: tests use it to send records the
    /// connector cannot read (a number where ConnectWise sends a string, …).
    pub fn set_raw_field(&self, collection: &str, id: i64, field: &str, value: serde_json::Value) {
        self.state.raw_edits.push(collection, id, field, value);
        if let Ok(mut g) = self.state.json.write() {
            *g = None;
        }
    }

    /// Leaves `field` out of the record `id` in `collection`, as a ConnectWise that does
    /// not send it.
    pub fn remove_raw_field(&self, collection: &str, id: i64, field: &str) {
        self.state.raw_edits.remove(collection, id, field);
        if let Ok(mut g) = self.state.json.write() {
            *g = None;
        }
    }

    /// Whether lists answer only what `fields=` asks for (the default, as ConnectWise
    /// does) or whole records (tests compare the two).
    pub fn honour_fields(&self, on: bool) {
        self.state
            .honour_fields
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Answers `/login/companyinfo/{id}` for the demo company with `body` (`None`: the
    /// sandbox's own answer); tests play other ConnectWise versions with it.
    pub fn set_company_info(&self, body: Option<serde_json::Value>) {
        if let Ok(mut g) = self.state.company_info.write() {
            *g = body;
        }
    }

    /// Builds the JSON form of the data set now (benchmarks warm it before timing).
    pub fn warm(&self) {
        let _ = self.state.json();
    }

    /// A callback body as ConnectWise posts it for `id` of `kind` (`ticket`), with
    /// `key_url` on this sandbox (`base` is its base URL).
    pub fn callback_body(&self, base: &str, action: &str, kind: &str, id: i64) -> Vec<u8> {
        callback_body(&self.state, base, action, kind, id)
    }

    /// Posts a signed callback for ticket `id` to `url`, as ConnectWise does (with
    /// `?action=…&id=…` appended); the HTTP status of the answer.
    pub async fn deliver_callback(
        &self,
        base: &str,
        url: &str,
        action: &str,
        id: i64,
    ) -> Result<u16, String> {
        deliver(&self.state, base, url, action, id).await
    }

    /// Moves ticket `id` to the status named `name` (as a technician in ConnectWise would).
    pub fn set_ticket_status(&self, id: i64, name: &str) -> bool {
        self.with_data(|d| {
            let Some(st) = d.board_statuses.iter().find(|s| s.name == name).cloned() else {
                return false;
            };
            match d.tickets.iter_mut().find(|t| t.id == id) {
                Some(t) => {
                    t.status = Ref {
                        id: st.id,
                        name: Some(st.name),
                    };
                    t.closed_flag = st.closed_status;
                    t.closed_date = st.closed_status.then(Utc::now);
                    t.info.last_updated = Some(Utc::now());
                    true
                }
                None => false,
            }
        }) && {
            notify(&self.state, id, "updated", false);
            true
        }
    }

    /// A technician writes a note on a ticket in ConnectWise (the ticket's `lastUpdated`
    /// moves, as ConnectWise does). Returns the note's id, `None` for an unknown ticket.
    pub fn add_note(&self, ticket: i64, text: &str, internal: bool) -> Option<i64> {
        self.with_data(|d| {
            let t = d.tickets.iter_mut().find(|t| t.id == ticket)?;
            t.info.last_updated = Some(Utc::now());
            let id = d.notes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
            d.notes.push(ServiceNote {
                id,
                ticket_id: ticket,
                text: text.into(),
                detail_description_flag: !internal,
                internal_analysis_flag: internal,
                resolution_flag: false,
                created_by: Some("jsmith".into()),
                date_created: Some(Utc::now()),
                member: Some(Ref {
                    id: 1,
                    name: Some("John Smith".into()),
                }),
                contact: None,
            });
            Some(id)
        })
        .inspect(|_| notify(&self.state, ticket, "updated", false))
    }

    /// How many callbacks this sandbox has sent to registered URLs.
    pub fn callbacks_sent(&self) -> u64 {
        self.state
            .callbacks_sent
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Deletes a ticket and its notes, as an admin can in ConnectWise.
    pub fn delete_ticket(&self, ticket: i64) -> bool {
        self.with_data(|d| {
            let before = d.tickets.len();
            d.tickets.retain(|t| t.id != ticket);
            d.notes.retain(|n| n.ticket_id != ticket);
            d.tickets.len() < before
        })
    }

    /// The next `n` writes are applied but answered with a 502, as when a connection
    /// drops after ConnectWise committed: the client cannot tell whether it worked.
    pub fn lose_write_answers(&self, n: u32) {
        self.state
            .lost_answers
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn seen(&self) -> Vec<SeenRequest> {
        self.state
            .seen
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
}

/// Sandbox control (not a ConnectWise path): renames every `every`-th contact and stamps
/// it one hour after the newest change, so benchmarks in another process can simulate
/// vendor-side edits. Answers the number of contacts changed.
/// A technician's action in ConnectWise, for the demo and manual checks:
/// `POST /_sandbox/tickets/{id}/status?name=Completed` or `…/notes?text=…&internal=true`.
/// Registered callbacks are delivered as for any change not made by the API member.
async fn technician_action(
    State(s): State<Arc<SandboxState>>,
    Path((id, what)): Path<(i64, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let sb = CwSandbox {
        state: s,
        faults: Faults::default(),
    };
    let done = match what.as_str() {
        "status" => sb
            .set_ticket_status(id, q.get("name").map(String::as_str).unwrap_or_default())
            .then_some(id),
        "notes" => sb.add_note(
            id,
            q.get("text")
                .map(String::as_str)
                .unwrap_or("Checked by a technician."),
            q.get("internal").is_some_and(|v| v == "true"),
        ),
        _ => None,
    };
    match done {
        Some(n) => axum::Json(serde_json::json!({ "done": n })).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "NotFound",
            "no such ticket, status or action",
        ),
    }
}

async fn touch_contacts(
    State(s): State<Arc<SandboxState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let every = mspbridge_sandbox::touch_every(&q);
    let n = {
        let mut d = match s.data.write() {
            Ok(d) => d,
            Err(p) => p.into_inner(),
        };
        let wm = d
            .contacts
            .iter()
            .filter_map(|c| c.info.last_updated)
            .max()
            .unwrap_or_else(base_time);
        let mut n = 0;
        for c in d.contacts.iter_mut().step_by(every) {
            c.last_name.push_str(" Jr");
            c.info.last_updated = Some(wm + Duration::minutes(60));
            n += 1;
        }
        n
    };
    if let Ok(mut g) = s.json.write() {
        *g = None;
    }
    let _ = s.json();
    axum::Json(serde_json::json!({ "changed": n })).into_response()
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = ErrorBody {
        code: code.into(),
        message: message.into(),
        errors: None,
    };
    (status, axum::Json(body)).into_response()
}

async fn company_info(
    State(s): State<Arc<SandboxState>>,
    Path(company_id): Path<String>,
) -> Response {
    if !company_id.eq_ignore_ascii_case(&s.company_id) {
        // ConnectWise answers an unknown company with an empty 200; we mirror that.
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "null",
        )
            .into_response();
    }
    if let Some(body) = s.company_info.read().ok().and_then(|g| g.clone()) {
        return axum::Json(body).into_response();
    }
    axum::Json(CompanyInfo {
        company_name: s.company_name.clone(),
        codebase: CODEBASE.into(),
        version_code: "v2025.1".into(),
        company_id: s.company_id.clone(),
        is_cloud: Some(false),
        site_url: String::new(),
    })
    .into_response()
}

fn is_guid(s: &str) -> bool {
    mspbridge_domain::validate::is_guid(s)
}

/// Checks Basic auth, then the clientId header; on failure returns the 401 message.
fn authenticate<'a>(
    s: &'a SandboxState,
    headers: &HeaderMap,
) -> Result<&'a ApiMemberKey, &'static str> {
    let creds = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or("Authentication required")?;
    let (user, private) = creds.split_once(':').ok_or("Invalid authentication")?;
    let (company, public) = user.split_once('+').ok_or("Invalid authentication")?;
    let key = s
        .keys
        .iter()
        .find(|k| {
            company.eq_ignore_ascii_case(&s.company_id)
                && k.public == public
                && k.private == private
        })
        .ok_or("Invalid authentication")?;
    // Keys first, then the clientId: wrong keys are reported as such whether or not a
    // clientId came with them. ConnectWise's answer to a missing clientId does not say
    // what is missing.
    let client_id = headers.get("clientId").and_then(|v| v.to_str().ok());
    if !client_id.is_some_and(is_guid) {
        return Err("Unauthorized");
    }
    Ok(key)
}

fn area_of(rest: &str) -> Option<&'static str> {
    Some(match rest {
        "company/companies" | "company/companies/count" => "companies",
        "company/companies/statuses" | "company/companies/types" => "company_reference",
        "company/contacts" | "company/contacts/count" | "company/contacts/types" => "contacts",
        "system/members" | "system/members/count" => "members",
        "system/callbacks" => "callbacks",
        "service/tickets" | "service/tickets/count" => "tickets",
        "service/boards" | "service/priorities" => "ticket_reference",
        r if r.starts_with("service/boards/")
            && (r.ends_with("/statuses") || r.ends_with("/types")) =>
        {
            "ticket_reference"
        }
        r if r.starts_with("service/tickets/") => "tickets",
        _ => return None,
    })
}

fn setting_name(area: &str) -> &'static str {
    match area {
        "companies" => "Company Maintenance",
        "contacts" => "Contacts",
        "members" => "Member Maintenance",
        "tickets" => "Service Tickets",
        _ => "Table Setup",
    }
}

async fn api_get(
    State(s): State<Arc<SandboxState>>,
    Path((codebase, rest)): Path<(String, String)>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let auth = authenticate(&s, &headers);
    record(
        &s,
        "GET",
        &codebase,
        &rest,
        query.clone(),
        &headers,
        auth.is_ok(),
    );
    if format!("{codebase}/") != CODEBASE && codebase != "v4_6_release" {
        return error(StatusCode::NOT_FOUND, "NotFound", "Not found");
    }
    let key = match auth {
        Ok(k) => k,
        Err(message) => return error(StatusCode::UNAUTHORIZED, "Unauthorized", message),
    };
    let Some(area) = area_of(&rest) else {
        return error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("The resource '{rest}' was not found"),
        );
    };
    if key.denied.contains(&area) {
        return error(
            StatusCode::FORBIDDEN,
            "Security",
            &format!(
                "You do not have access to {} ({}). Please contact your administrator.",
                rest,
                setting_name(area)
            ),
        );
    }
    let q: HashMap<&str, &str> = query
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if q.contains_key("childConditions") || q.contains_key("customFieldConditions") {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidObject",
            "This sandbox evaluates conditions and orderBy only.",
        );
    }
    let terms = match q.get("conditions").map(|c| super::conditions::parse(c)) {
        None => vec![],
        Some(Ok(t)) => t,
        Some(Err(msg)) => return error(StatusCode::BAD_REQUEST, "InvalidObject", &msg),
    };
    let order = match q.get("orderBy").map(|o| o.trim()) {
        None | Some("id asc") | Some("id") => Order::IdAsc,
        Some("id desc") => Order::IdDesc,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidObject",
                &format!("orderBy '{other}' is not supported by this sandbox"),
            );
        }
    };
    let fields = if s.honour_fields.load(std::sync::atomic::Ordering::Relaxed) {
        q.get("fields").map(|f| Fields::parse(f))
    } else {
        None
    };
    if let Some(resp) = ticket_paths(&s, &rest, &q, &terms, order, fields.as_ref()) {
        return resp;
    }
    let json = s.json();
    let (collection, counting) = match rest.strip_suffix("/count") {
        Some(c) => (c, true),
        None => (rest.as_str(), false),
    };
    let Some(rows) = json.collections.get(collection) else {
        return error(StatusCode::NOT_FOUND, "NotFound", "Not found");
    };
    if counting {
        return count(rows, &terms);
    }
    list(rows, &q, &rest, &terms, order, fields.as_ref())
}

#[derive(Clone, Copy)]
enum Order {
    IdAsc,
    IdDesc,
}

/// The rows matching `terms`, in `order`. Rows are sorted by id, so an `id > N`
/// (or `>=`) term seeks instead of scanning everything before N.
fn filtered<'a>(
    rows: &'a [serde_json::Value],
    terms: &[super::conditions::Term],
    order: Order,
) -> Vec<&'a serde_json::Value> {
    use super::conditions::{Op, Operand};
    let start = terms
        .iter()
        .filter_map(|t| match (&t.path[..], t.op, &t.value) {
            ("id", Op::Gt, Operand::Number(n)) => Some(
                rows.partition_point(|r| r.get("id").and_then(|v| v.as_f64()).unwrap_or(0.0) <= *n),
            ),
            ("id", Op::Ge, Operand::Number(n)) => Some(
                rows.partition_point(|r| r.get("id").and_then(|v| v.as_f64()).unwrap_or(0.0) < *n),
            ),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    // When the seek is the only condition, every row after it matches: no scan needed.
    let only_seek = terms
        .iter()
        .all(|t| t.path == "id" && matches!(t.op, Op::Gt | Op::Ge));
    let mut out: Vec<&serde_json::Value> = if only_seek {
        rows[start..].iter().collect()
    } else {
        rows[start..]
            .iter()
            .filter(|v| super::conditions::matches(v, terms))
            .collect()
    };
    if let Order::IdDesc = order {
        out.reverse();
    }
    out
}

fn count(rows: &[serde_json::Value], terms: &[super::conditions::Term]) -> Response {
    let n = filtered(rows, terms, Order::IdAsc).len();
    axum::Json(serde_json::json!({ "count": n })).into_response()
}

/// What `fields=` asks for, as a tree: `id,company/id,company/name,_info/lastUpdated`
/// keeps `id` whole, `company` with only its `id` and `name`, `_info` with only
/// `lastUpdated`. Names match case-insensitively; a path into an array applies to each
/// of its elements.
#[derive(Debug, Default)]
struct Fields(Vec<(String, Option<Fields>)>);

impl Fields {
    fn parse(list: &str) -> Fields {
        let mut root = Fields::default();
        for path in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            root.add(path.split('/').map(str::trim));
        }
        root
    }

    fn add<'a>(&mut self, mut parts: impl Iterator<Item = &'a str>) {
        let Some(head) = parts.next() else {
            return;
        };
        let rest: Vec<&str> = parts.collect();
        let i = match self
            .0
            .iter()
            .position(|(k, _)| k.eq_ignore_ascii_case(head))
        {
            Some(i) => i,
            None => {
                self.0.push((head.to_string(), Some(Fields::default())));
                self.0.len() - 1
            }
        };
        let node = &mut self.0[i].1;
        if rest.is_empty() {
            // The whole field (even when parts of it were asked for too).
            *node = None;
        } else if let Some(children) = node {
            children.add(rest.into_iter());
        }
    }

    /// `v` with only these fields.
    fn project(&self, v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(map) => serde_json::Value::Object(
                map.into_iter()
                    .filter_map(|(k, v)| {
                        let (_, sub) = self.0.iter().find(|(f, _)| f.eq_ignore_ascii_case(&k))?;
                        Some(match sub {
                            None => (k, v),
                            Some(sub) => (k, sub.project(v)),
                        })
                    })
                    .collect(),
            ),
            serde_json::Value::Array(rows) => {
                serde_json::Value::Array(rows.into_iter().map(|r| self.project(r)).collect())
            }
            v => v,
        }
    }
}

/// A record with only `fields` (all of it when `None`).
fn project(v: serde_json::Value, fields: Option<&Fields>) -> serde_json::Value {
    match fields {
        Some(f) => f.project(v),
        None => v,
    }
}

/// Navigable paging as ConnectWise does it: `page` (1-based) and `pageSize`
/// (default 25, capped at 1000), with a `Link` header carrying `next` and `last`.
fn list(
    items: &[serde_json::Value],
    q: &HashMap<&str, &str>,
    rest: &str,
    terms: &[super::conditions::Term],
    order: Order,
    fields: Option<&Fields>,
) -> Response {
    let items = filtered(items, terms, order);
    let page_size = match q.get("pageSize").map(|v| v.parse::<usize>()) {
        None => 25,
        Some(Ok(n)) if n >= 1 => n.min(1000),
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidObject",
                "pageSize must be a positive integer",
            );
        }
    };
    let page = match q.get("page").map(|v| v.parse::<usize>()) {
        None => 1,
        Some(Ok(n)) if n >= 1 => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidObject",
                "page must be a positive integer",
            );
        }
    };
    let start = (page - 1).saturating_mul(page_size).min(items.len());
    let end = (start + page_size).min(items.len());
    let rows: Vec<serde_json::Value> = items[start..end]
        .iter()
        .map(|v| project((*v).clone(), fields))
        .collect();
    let last = items.len().div_ceil(page_size).max(1);
    let mut resp = axum::Json(rows).into_response();
    let mut links = Vec::new();
    if page < last {
        links.push(format!(
            "</{rest}?page={}&pageSize={page_size}>; rel=\"next\"",
            page + 1
        ));
    }
    links.push(format!(
        "</{rest}?page={last}&pageSize={page_size}>; rel=\"last\""
    ));
    if let Ok(v) = HeaderValue::from_str(&links.join(", ")) {
        resp.headers_mut().insert(header::LINK, v);
    }
    resp
}

/// GETs under tickets and boards that are not plain collections: one ticket, a ticket's
/// notes, a board's statuses. `None` for every other path.
fn ticket_paths(
    s: &SandboxState,
    rest: &str,
    q: &HashMap<&str, &str>,
    terms: &[super::conditions::Term],
    order: Order,
    fields: Option<&Fields>,
) -> Option<Response> {
    let parts: Vec<&str> = rest.split('/').collect();
    let data = match s.data.read() {
        Ok(d) => d,
        Err(p) => p.into_inner(),
    };
    let number = |p: &str| p.parse::<i64>().ok();
    match parts.as_slice() {
        ["service", "boards", board, what @ ("statuses" | "types")] => {
            let board = number(board)?;
            if !data.boards.iter().any(|b| b.id == board) {
                return Some(error(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    "Service Board not found",
                ));
            }
            let rows = if *what == "statuses" {
                to_sorted_json(&data.board_statuses)
            } else {
                to_sorted_json(&data.board_types)
            };
            Some(list(&rows, q, rest, terms, order, fields))
        }
        ["service", "tickets", id, "notes"] => {
            let id = number(id)?;
            drop(data);
            let json = s.json();
            let exists = json.collections.get("service/tickets").is_some_and(|rows| {
                rows.binary_search_by_key(&id, |t| t["id"].as_i64().unwrap_or(0))
                    .is_ok()
            });
            if !exists {
                return Some(error(StatusCode::NOT_FOUND, "NotFound", "Ticket not found"));
            }
            let notes = json.notes.get(&id).map(Vec::as_slice).unwrap_or_default();
            Some(list(notes, q, rest, terms, order, fields))
        }
        ["service", "tickets", id] => {
            let id = number(id)?;
            drop(data);
            let json = s.json();
            let row = json
                .collections
                .get("service/tickets")?
                .iter()
                .find(|t| t["id"].as_i64() == Some(id))
                .cloned();
            Some(match row {
                None => error(StatusCode::NOT_FOUND, "NotFound", "Ticket not found"),
                Some(v) => axum::Json(project(v, fields)).into_response(),
            })
        }
        _ => None,
    }
}

fn invalid(field: &str, message: &str) -> Response {
    let body = ErrorBody {
        code: "InvalidObject".into(),
        message: "ticket object is invalid".into(),
        errors: Some(vec![ErrorItem {
            code: "InvalidField".into(),
            message: message.into(),
            resource: Some("ticket".into()),
            field: Some(field.into()),
        }]),
    };
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

/// Keeps a request for `seen()`.
fn record(
    s: &SandboxState,
    method: &str,
    codebase: &str,
    rest: &str,
    query: Vec<(String, String)>,
    headers: &HeaderMap,
    authorized: bool,
) {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    if let Ok(mut seen) = s.seen.lock() {
        seen.push(SeenRequest {
            method: method.into(),
            path: format!("/{codebase}/apis/3.0/{rest}"),
            query,
            client_id: header("clientId"),
            accept: header(header::ACCEPT.as_str()),
            authorized,
        });
    }
}

/// Records a write and checks what every call checks; `Err` is the answer to send.
#[allow(clippy::result_large_err)] // the error is the HTTP answer itself, sent at once
fn admit_write(
    s: &SandboxState,
    method: &str,
    codebase: &str,
    rest: &str,
    headers: &HeaderMap,
) -> Result<(), Response> {
    let auth = authenticate(s, headers);
    record(s, method, codebase, rest, vec![], headers, auth.is_ok());
    if format!("{codebase}/") != CODEBASE && codebase != "v4_6_release" {
        return Err(error(StatusCode::NOT_FOUND, "NotFound", "Not found"));
    }
    let key = auth.map_err(|m| error(StatusCode::UNAUTHORIZED, "Unauthorized", m))?;
    if !(rest.starts_with("service/tickets")
        || rest == "system/callbacks"
        || (method == "PATCH" && rest.starts_with("system/members/")))
    {
        return Err(error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("This sandbox does not write '{rest}'"),
        ));
    }
    if rest.starts_with("service/tickets") && key.denied.contains(&"tickets") {
        return Err(error(
            StatusCode::FORBIDDEN,
            "Security",
            "You do not have access to service/tickets (Service Tickets). Please contact your administrator.",
        ));
    }
    Ok(())
}

/// The answer to a write that was applied: lost (502) while `lose_write_answers` lasts.
fn applied(s: &SandboxState, status: StatusCode, body: serde_json::Value) -> Response {
    if let Ok(mut g) = s.json.write() {
        *g = None;
    }
    let lost = s
        .lost_answers
        .fetch_update(
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
            |n| n.checked_sub(1),
        )
        .is_ok();
    if lost {
        return error(
            StatusCode::BAD_GATEWAY,
            "BadGateway",
            "upstream connection reset",
        );
    }
    (status, axum::Json(body)).into_response()
}

fn callback_body(s: &SandboxState, base: &str, action: &str, kind: &str, id: i64) -> Vec<u8> {
    let entity = {
        let d = match s.data.read() {
            Ok(d) => d,
            Err(p) => p.into_inner(),
        };
        d.tickets
            .iter()
            .find(|t| t.id == id)
            .and_then(|t| serde_json::to_string(t).ok())
    };
    serde_json::to_vec(&serde_json::json!({
        "MessageId": format!("{id}-{action}-{}", Utc::now().timestamp_nanos_opt().unwrap_or(0)),
        "FromUrl": base,
        "CompanyId": s.company_id,
        "MemberId": "mspbridge-api",
        "Action": action,
        "Type": kind,
        "ID": id,
        "Entity": entity,
        "Metadata": { "key_url": format!("{base}/callbackkeys/1") },
    }))
    .unwrap_or_default()
}

async fn deliver(
    s: &SandboxState,
    base: &str,
    url: &str,
    action: &str,
    id: i64,
) -> Result<u16, String> {
    let body = callback_body(s, base, action, "ticket", id);
    let sig = super::callbacks::sign(SIGNING_KEY, &body);
    let sep = if url.contains('?') { '&' } else { '?' };
    reqwest::Client::new()
        .post(format!("{url}{sep}action={action}&id={id}"))
        .header(super::callbacks::SIGNATURE_HEADER, sig)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

/// A ticket changed: every active Ticket callback is delivered (in the background), except
/// to self-suppressed ones when the API member made the change.
fn notify(s: &Arc<SandboxState>, ticket: i64, action: &'static str, by_api: bool) {
    let Some(base) = s.base.get().cloned() else {
        return;
    };
    let urls: Vec<String> = {
        let d = match s.data.read() {
            Ok(d) => d,
            Err(p) => p.into_inner(),
        };
        d.callbacks
            .iter()
            .filter(|c| c.kind.eq_ignore_ascii_case("ticket") && !c.inactive_flag)
            .filter(|c| !(by_api && c.is_self_suppressed_flag))
            .map(|c| c.url.clone())
            .collect()
    };
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    for url in urls {
        s.callbacks_sent
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let s = s.clone();
        let base = base.clone();
        rt.spawn(async move {
            if let Err(e) = deliver(&s, &base, &url, action, ticket).await {
                tracing::warn!(url, error = %e, "sandbox callback not delivered");
            }
        });
    }
}

/// The API member writes carry as their author.
fn api_member() -> Ref {
    Ref {
        id: 9_999,
        name: Some("mspbridge API".into()),
    }
}

fn ref_id(v: &serde_json::Value, field: &str) -> Option<i64> {
    v.get(field)
        .and_then(|r| r.get("id"))
        .and_then(|i| i.as_i64())
}

/// `POST service/tickets` and `POST service/tickets/{id}/notes`.
async fn api_post(
    State(s): State<Arc<SandboxState>>,
    Path((codebase, rest)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = admit_write(&s, "POST", &codebase, &rest, &headers) {
        return r;
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidObject",
            "The request body is not JSON",
        );
    };
    let now = Utc::now();
    let parts: Vec<&str> = rest.split('/').collect();
    let mut d = match s.data.write() {
        Ok(d) => d,
        Err(p) => p.into_inner(),
    };
    match parts.as_slice() {
        ["service", "tickets"] => {
            let summary = v["summary"].as_str().unwrap_or_default().trim().to_string();
            if summary.is_empty() {
                return invalid("summary", "Summary is required");
            }
            if summary.chars().count() > 100 {
                return invalid("summary", "Summary may not exceed 100 characters");
            }
            let Some(board) =
                ref_id(&v, "board").and_then(|b| d.boards.iter().find(|x| x.id == b).cloned())
            else {
                return invalid("board/id", "Service Board not found");
            };
            let Some(company) =
                ref_id(&v, "company").and_then(|c| d.companies.iter().find(|x| x.id == c).cloned())
            else {
                return invalid("company/id", "Company not found");
            };
            let status = match ref_id(&v, "status") {
                None => d.board_statuses.first().cloned(),
                Some(id) => match d.board_statuses.iter().find(|x| x.id == id) {
                    Some(st) => Some(st.clone()),
                    None => {
                        return invalid(
                            "status/id",
                            &format!(
                                "Service Status {id} not found for Service Board {}",
                                board.id
                            ),
                        );
                    }
                },
            };
            let Some(status) = status else {
                return invalid("status/id", "the board has no statuses");
            };
            let priority = match ref_id(&v, "priority") {
                None => None,
                Some(id) => match d.priorities.iter().find(|p| p.id == id) {
                    Some(p) => Some(Ref {
                        id,
                        name: Some(p.name.clone()),
                    }),
                    None => return invalid("priority/id", &format!("Priority {id} not found")),
                },
            };
            let ticket_type = match ref_id(&v, "type") {
                None => None,
                Some(id) => match d.board_types.iter().find(|x| x.id == id) {
                    Some(ty) => Some(Ref {
                        id,
                        name: Some(ty.name.clone()),
                    }),
                    None => {
                        return invalid(
                            "type/id",
                            &format!("Service Type {id} not found for Service Board {}", board.id),
                        );
                    }
                },
            };
            let id = d.tickets.iter().map(|t| t.id).max().unwrap_or(5000) + 1;
            let ticket = Ticket {
                id,
                summary,
                board: Ref {
                    id: board.id,
                    name: Some(board.name),
                },
                status: Ref {
                    id: status.id,
                    name: Some(status.name),
                },
                priority,
                company: Some(CompanyRef {
                    id: company.id,
                    identifier: company.identifier,
                    name: Some(company.name),
                }),
                contact: None,
                closed_flag: status.closed_status,
                ticket_type,
                owner: None,
                closed_date: status.closed_status.then_some(now),
                external_x_ref: v["externalXRef"].as_str().map(str::to_string),
                info: Info {
                    last_updated: Some(now),
                    date_entered: Some(now),
                },
            };
            if let Some(text) = v["initialDescription"].as_str().filter(|t| !t.is_empty()) {
                let nid = d.notes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
                d.notes.push(ServiceNote {
                    id: nid,
                    ticket_id: id,
                    text: text.into(),
                    detail_description_flag: true,
                    internal_analysis_flag: false,
                    resolution_flag: false,
                    created_by: Some("mspbridge-api".into()),
                    date_created: Some(now),
                    member: Some(api_member()),
                    contact: None,
                });
            }
            let body = serde_json::to_value(&ticket).unwrap_or_default();
            d.tickets.push(ticket);
            drop(d);
            applied(&s, StatusCode::CREATED, body)
        }
        ["service", "tickets", id, "notes"] => {
            let Some(id) = id
                .parse::<i64>()
                .ok()
                .filter(|id| d.tickets.iter().any(|t| t.id == *id))
            else {
                return error(StatusCode::NOT_FOUND, "NotFound", "Ticket not found");
            };
            let text = v["text"].as_str().unwrap_or_default().to_string();
            if text.trim().is_empty() {
                return invalid("text", "Text is required");
            }
            let flag = |f: &str| v[f].as_bool().unwrap_or(false);
            let (detail, internal, resolution) = (
                flag("detailDescriptionFlag"),
                flag("internalAnalysisFlag"),
                flag("resolutionFlag"),
            );
            if !(detail || internal || resolution) {
                return invalid(
                    "detailDescriptionFlag",
                    "One of detailDescriptionFlag, internalAnalysisFlag or resolutionFlag must be true",
                );
            }
            let nid = d.notes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
            let note = ServiceNote {
                id: nid,
                ticket_id: id,
                text,
                detail_description_flag: detail,
                internal_analysis_flag: internal,
                resolution_flag: resolution,
                created_by: Some("mspbridge-api".into()),
                date_created: Some(now),
                member: Some(api_member()),
                contact: None,
            };
            if let Some(t) = d.tickets.iter_mut().find(|t| t.id == id) {
                t.info.last_updated = Some(now);
            }
            let body = serde_json::to_value(&note).unwrap_or_default();
            d.notes.push(note);
            drop(d);
            notify(&s, id, "updated", true);
            applied(&s, StatusCode::CREATED, body)
        }
        ["system", "callbacks"] => {
            let mut cb: CallbackEntry = match serde_json::from_value(v) {
                Ok(cb) => cb,
                Err(e) => return invalid("url", &format!("The callback is invalid: {e}")),
            };
            if !(cb.url.starts_with("https://") || cb.url.starts_with("http://")) {
                return invalid("url", "URL must be an http(s) address");
            }
            cb.id = d.callbacks.iter().map(|c| c.id).max().unwrap_or(0) + 1;
            let body = serde_json::to_value(&cb).unwrap_or_default();
            d.callbacks.push(cb);
            drop(d);
            applied(&s, StatusCode::CREATED, body)
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("Cannot POST to '{rest}'"),
        ),
    }
}

/// `PATCH service/tickets/{id}` with a JSON-Patch array (`replace` of status, priority
/// or summary).
async fn api_patch(
    State(s): State<Arc<SandboxState>>,
    Path((codebase, rest)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = admit_write(&s, "PATCH", &codebase, &rest, &headers) {
        return r;
    }
    let Ok(ops) = serde_json::from_slice::<Vec<PatchOperation>>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidObject",
            "PATCH expects a JSON-Patch array of {op, path, value}",
        );
    };
    if let Some(member) = rest.strip_prefix("system/members/") {
        return patch_member(&s, member, &ops);
    }
    let Some(id) = rest
        .strip_prefix("service/tickets/")
        .and_then(|i| i.parse::<i64>().ok())
    else {
        return error(StatusCode::NOT_FOUND, "NotFound", "Ticket not found");
    };
    let mut d = match s.data.write() {
        Ok(d) => d,
        Err(p) => p.into_inner(),
    };
    let statuses = d.board_statuses.clone();
    let priorities = d.priorities.clone();
    let Some(t) = d.tickets.iter_mut().find(|t| t.id == id) else {
        return error(StatusCode::NOT_FOUND, "NotFound", "Ticket not found");
    };
    for op in &ops {
        if op.op != "replace" {
            return invalid(
                &op.path,
                &format!("operation '{}' is not supported here", op.op),
            );
        }
        match op.path.trim_start_matches('/') {
            "status" => {
                let sid = op.value.get("id").and_then(|i| i.as_i64()).unwrap_or(-1);
                let Some(st) = statuses.iter().find(|x| x.id == sid) else {
                    return invalid(
                        "status/id",
                        &format!(
                            "Service Status {sid} not found for Service Board {}",
                            t.board.id
                        ),
                    );
                };
                t.status = Ref {
                    id: st.id,
                    name: Some(st.name.clone()),
                };
                t.closed_flag = st.closed_status;
                t.closed_date = st.closed_status.then(Utc::now);
            }
            "priority" => {
                let pid = op.value.get("id").and_then(|i| i.as_i64()).unwrap_or(-1);
                let Some(p) = priorities.iter().find(|x| x.id == pid) else {
                    return invalid("priority/id", &format!("Priority {pid} not found"));
                };
                t.priority = Some(Ref {
                    id: p.id,
                    name: Some(p.name.clone()),
                });
            }
            "summary" => match op.value.as_str() {
                Some(v) if !v.trim().is_empty() && v.chars().count() <= 100 => t.summary = v.into(),
                _ => return invalid("summary", "Summary must be 1 to 100 characters"),
            },
            other => {
                return invalid(
                    other,
                    &format!("'{other}' cannot be patched in this sandbox"),
                );
            }
        }
    }
    t.info.last_updated = Some(Utc::now());
    let id = t.id;
    let body = serde_json::to_value(&*t).unwrap_or_default();
    drop(d);
    notify(&s, id, "updated", true);
    applied(&s, StatusCode::OK, body)
}

/// `PATCH system/members/{id}`: `replace` of firstName, lastName, primaryEmail or
/// inactiveFlag.
fn patch_member(s: &Arc<SandboxState>, raw: &str, ops: &[PatchOperation]) -> Response {
    let mut d = match s.data.write() {
        Ok(d) => d,
        Err(p) => p.into_inner(),
    };
    let Some(m) = raw
        .parse::<i64>()
        .ok()
        .and_then(|id| d.members.iter_mut().find(|m| m.id == id))
    else {
        return error(StatusCode::NOT_FOUND, "NotFound", "Member not found");
    };
    for op in ops {
        if op.op != "replace" {
            return invalid(
                &op.path,
                &format!("operation '{}' is not supported here", op.op),
            );
        }
        match (op.path.trim_start_matches('/'), &op.value) {
            ("firstName", serde_json::Value::String(v)) if !v.trim().is_empty() => {
                m.first_name = v.clone()
            }
            ("lastName", serde_json::Value::String(v)) => m.last_name = v.clone(),
            ("primaryEmail", serde_json::Value::String(v)) if v.contains('@') => {
                m.primary_email = Some(v.clone())
            }
            ("inactiveFlag", serde_json::Value::Bool(v)) => m.inactive_flag = *v,
            (path, _) => return invalid(path, &format!("'{path}' cannot be set to that value")),
        }
    }
    m.info.last_updated = Some(Utc::now());
    let body = serde_json::to_value(&*m).unwrap_or_default();
    drop(d);
    applied(s, StatusCode::OK, body)
}

/// `PUT` replaces the whole record in ConnectWise and clears what it is not sent; the
/// connector never uses it. The sandbox records the call and refuses it so a test sees it.
async fn api_put(
    State(s): State<Arc<SandboxState>>,
    Path((codebase, rest)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit_write(&s, "PUT", &codebase, &rest, &headers) {
        return r;
    }
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "this sandbox refuses PUT: it would clear every field not sent; use PATCH",
    )
}

fn base_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

/// The deterministic data set for `seed`.
pub fn generate(seed: Seed) -> CwData {
    generate_sized(seed, 2, 2)
}

/// The seed's companies, contacts and members with `tickets_per` tickets per company, each
/// with a description note and `notes_per` more (alternately discussion and internal).
pub fn generate_sized(seed: Seed, tickets_per: usize, notes_per: usize) -> CwData {
    let (n_companies, contacts_per, n_members) = match seed {
        Seed::Small => (25usize, 4usize, 8usize),
        Seed::Large => (5_000, 10, 1_000),
        Seed::Companies(n) => (n as usize, 10, (n as usize / 5).max(1)),
    };
    let mut notes = Vec::with_capacity(n_companies * tickets_per * (notes_per + 1));
    let mut rng = Rng::new(0x00C0_FFEE);
    let company_statuses = vec![
        CompanyStatus {
            id: 1,
            name: "Active".into(),
            inactive_flag: false,
        },
        CompanyStatus {
            id: 2,
            name: "Inactive".into(),
            inactive_flag: true,
        },
        CompanyStatus {
            id: 3,
            name: "Credit Hold".into(),
            inactive_flag: false,
        },
    ];
    let company_types = vec![
        CompanyType {
            id: 1,
            name: "Client".into(),
        },
        CompanyType {
            id: 2,
            name: "Prospect".into(),
        },
        CompanyType {
            id: 3,
            name: "Vendor".into(),
        },
        CompanyType {
            id: 4,
            name: "Partner".into(),
        },
    ];
    let contact_types = vec![
        ContactType {
            id: 1,
            description: "Owner".into(),
        },
        ContactType {
            id: 2,
            description: "IT Contact".into(),
        },
        ContactType {
            id: 3,
            description: "Billing".into(),
        },
        ContactType {
            id: 4,
            description: "Employee".into(),
        },
        ContactType {
            id: 5,
            description: "Approver".into(),
        },
    ];
    let boards = vec![
        Board {
            id: 1,
            name: "Service Desk".into(),
            inactive_flag: false,
        },
        Board {
            id: 2,
            name: "Projects".into(),
            inactive_flag: false,
        },
        Board {
            id: 3,
            name: "Alerts".into(),
            inactive_flag: false,
        },
    ];
    let statuses = [
        (1, "New", false),
        (2, "In Progress", false),
        (3, "Waiting on Client", false),
        (4, "Completed", true),
    ];

    let mut companies = Vec::with_capacity(n_companies);
    let mut contacts = Vec::with_capacity(n_companies * contacts_per);
    let mut tickets = Vec::with_capacity(n_companies * tickets_per);
    let mut contact_id = 1i64;
    for i in 0..n_companies {
        let id = 100 + i as i64;
        let name = format!(
            "{} {} {}",
            rng.pick(&ADJECTIVES),
            rng.pick(&NOUNS),
            rng.pick(&SUFFIXES)
        );
        let name = if i < ADJECTIVES.len() * NOUNS.len() {
            name
        } else {
            format!("{name} {}", i)
        };
        let identifier: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(20)
            .collect::<String>()
            + &id.to_string();
        let domain = format!("{}.example", identifier.to_lowercase());
        let status = if rng.chance(8) {
            2
        } else if rng.chance(3) {
            3
        } else {
            1
        };
        let type_id = if rng.chance(85) {
            1
        } else {
            2 + rng.below(3) as i64
        };
        let updated = base_time() + Duration::minutes(rng.below(60 * 24 * 300) as i64);
        let k = if matches!(seed, Seed::Small) {
            1 + rng.below(7) as usize
        } else {
            contacts_per
        };
        let first_contact = contact_id;
        for j in 0..k {
            let first = rng.pick(&FIRST).to_string();
            let last = rng.pick(&LAST).to_string();
            let local: String = format!(
                "{}.{}{}",
                first.to_lowercase(),
                last.to_lowercase(),
                contact_id
            )
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
            .collect();
            let mut items = vec![CommunicationItem {
                id: contact_id * 10 + 1,
                kind: Some(Ref {
                    id: 2,
                    name: Some("Direct".into()),
                }),
                value: format!("+1 555 {:04}", contact_id % 10_000),
                default_flag: true,
                communication_type: "Phone".into(),
            }];
            // A few contacts have no email: the sync must report them, not drop them silently.
            if !rng.chance(3) {
                items.push(CommunicationItem {
                    id: contact_id * 10 + 2,
                    kind: Some(Ref {
                        id: 1,
                        name: Some("Email".into()),
                    }),
                    value: format!("{local}@{domain}"),
                    default_flag: true,
                    communication_type: "Email".into(),
                });
            }
            let mut types = vec![];
            if j == 0 {
                types.push(Ref {
                    id: 1,
                    name: Some("Owner".into()),
                });
            }
            if rng.chance(30) {
                let t = &contact_types[1 + rng.below(4) as usize];
                types.push(Ref {
                    id: t.id,
                    name: Some(t.description.clone()),
                });
            }
            contacts.push(Contact {
                id: contact_id,
                first_name: first,
                last_name: last,
                company: Some(CompanyRef {
                    id,
                    identifier: Some(identifier.clone()),
                    name: Some(name.clone()),
                }),
                inactive_flag: j > 0 && rng.chance(5),
                default_flag: j == 0,
                types,
                communication_items: items,
                info: Info {
                    last_updated: Some(updated + Duration::minutes(j as i64)),
                    date_entered: Some(base_time()),
                },
            });
            contact_id += 1;
        }
        let first_name = contacts
            .iter()
            .rev()
            .nth(k - 1)
            .map(|c| format!("{} {}", c.first_name, c.last_name));
        companies.push(Company {
            id,
            identifier: Some(identifier.clone()),
            name: name.clone(),
            status: Some(Ref {
                id: status,
                name: Some(company_statuses[(status - 1) as usize].name.clone()),
            }),
            types: vec![Ref {
                id: type_id,
                name: Some(company_types[(type_id - 1) as usize].name.clone()),
            }],
            deleted_flag: false,
            default_contact: Some(Ref {
                id: first_contact,
                name: first_name,
            }),
            phone_number: Some(format!("+1 555 {:04}", id % 10_000)),
            website: Some(format!("https://www.{}/", web_domain(&name))),
            info: Info {
                last_updated: Some(updated),
                date_entered: Some(base_time()),
            },
        });
        for t in 0..tickets_per {
            let (sid, sname, closed) = *rng.pick(&statuses);
            let board = rng.pick(&boards);
            let ticket_id = 5000 + tickets.len() as i64;
            let opened = base_time() + Duration::minutes(rng.below(60 * 24 * 200) as i64);
            let owner = 1 + rng.below(n_members as u64) as i64;
            for k in 0..=notes_per {
                notes.push(ServiceNote {
                    id: notes.len() as i64 + 1,
                    ticket_id,
                    text: if k == 0 {
                        format!("Reported by the customer: ticket {t} of {name}.")
                    } else {
                        format!(
                            "Update {k}: {}",
                            rng.pick(&[
                                "Called the user back.",
                                "Rebooted the device.",
                                "Waiting for the vendor.",
                                "Replaced the cable."
                            ])
                        )
                    },
                    detail_description_flag: k % 2 == 0,
                    internal_analysis_flag: k % 2 == 1,
                    resolution_flag: false,
                    created_by: Some(format!("member{owner}")),
                    date_created: Some(opened + Duration::minutes(k as i64 * 30)),
                    member: Some(Ref {
                        id: owner,
                        name: Some(format!("Member {owner}")),
                    }),
                    contact: None,
                });
            }
            tickets.push(Ticket {
                id: ticket_id,
                summary: format!(
                    "{} issue #{t} at {}",
                    rng.pick(&["Printer", "Email", "VPN", "Laptop", "Wi-Fi"]),
                    name
                ),
                board: Ref {
                    id: board.id,
                    name: Some(board.name.clone()),
                },
                status: Ref {
                    id: sid,
                    name: Some(sname.into()),
                },
                priority: Some(Ref {
                    id: 3,
                    name: Some("Priority 3 - Normal Response".into()),
                }),
                company: Some(CompanyRef {
                    id,
                    identifier: Some(identifier.clone()),
                    name: Some(name.clone()),
                }),
                contact: Some(Ref {
                    id: first_contact,
                    name: None,
                }),
                closed_flag: closed,
                ticket_type: Some(Ref {
                    id: 1 + (ticket_id % 3),
                    name: Some(["Incident", "Request", "Problem"][(ticket_id % 3) as usize].into()),
                }),
                owner: Some(Ref {
                    id: owner,
                    name: None,
                }),
                closed_date: closed.then_some(updated),
                external_x_ref: None,
                info: Info {
                    last_updated: Some(
                        updated.max(opened + Duration::minutes(notes_per as i64 * 30)),
                    ),
                    date_entered: Some(opened),
                },
            });
        }
    }
    let members = (0..n_members)
        .map(|i| {
            let first = FIRST[i % FIRST.len()].to_string();
            let last = LAST[(i / FIRST.len()) % LAST.len()].to_string();
            let identifier = format!("{}{}{}", &first[..1].to_lowercase(), last.to_lowercase(), i);
            let email = Some(format!("{identifier}@msp.example"));
            // Many members carry only an office email, some only the one `defaultEmail`
            // names (the connector falls back to them).
            let (primary_email, office_email, mobile_email, default_email) = match i {
                i if i % 5 == 4 => (None, email, None, Some("Office".to_string())),
                i if i % 7 == 6 => (None, None, email, Some("Mobile".to_string())),
                _ => (email, None, None, None),
            };
            Member {
                id: 1 + i as i64,
                primary_email,
                office_email,
                mobile_email,
                home_email: None,
                default_email,
                identifier: Some(identifier),
                first_name: first,
                last_name: last,
                inactive_flag: i % 17 == 16,
                info: Info {
                    last_updated: Some(base_time() + Duration::hours(i as i64)),
                    date_entered: Some(base_time()),
                },
            }
        })
        .collect();
    CwData {
        companies,
        company_statuses,
        company_types,
        contacts,
        contact_types,
        members,
        boards,
        board_types: [(1, "Incident"), (2, "Request"), (3, "Problem")]
            .into_iter()
            .map(|(id, name)| BoardType {
                id,
                name: name.into(),
            })
            .collect(),
        board_statuses: statuses
            .iter()
            .map(|(id, name, closed)| BoardStatus {
                id: *id,
                name: name.to_string(),
                closed_status: *closed,
            })
            .collect(),
        priorities: [
            (1, "Priority 1 - Emergency Response"),
            (2, "Priority 2 - Quick Response"),
            (3, "Priority 3 - Normal Response"),
            (4, "Priority 4 - Schedule Maintenance"),
        ]
        .iter()
        .map(|(id, name)| Priority {
            id: *id,
            name: name.to_string(),
        })
        .collect(),
        tickets,
        notes,
        callbacks: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_whole_fields_nested_paths_and_array_elements() {
        let f = Fields::parse("id, company/id,_INFO/lastUpdated,items/value,board,board/id");
        let v = serde_json::json!({
            "id": 1, "name": "x",
            "company": {"id": 2, "name": "Acme", "_info": {}},
            "_info": {"lastUpdated": "2026-01-01T00:00:00Z", "updatedBy": "me"},
            "items": [{"value": "a", "type": 1}, {"value": "b"}],
            "board": {"id": 3, "name": "Desk"}
        });
        assert_eq!(
            f.project(v),
            serde_json::json!({
                "id": 1,
                "company": {"id": 2},
                "_info": {"lastUpdated": "2026-01-01T00:00:00Z"},
                "items": [{"value": "a"}, {"value": "b"}],
                "board": {"id": 3, "name": "Desk"}
            })
        );
    }

    #[test]
    fn seeds_have_the_promised_sizes_and_are_deterministic() {
        let large = generate(Seed::Large);
        assert_eq!(large.companies.len(), 5_000);
        assert_eq!(large.contacts.len(), 50_000);
        assert_eq!(large.members.len(), 1_000);
        let small = generate(Seed::Small);
        assert_eq!(small.companies.len(), 25);
        assert_eq!(generate(Seed::Small).contacts, small.contacts);
        // Every company's default contact is one of its contacts and has defaultFlag.
        for c in &small.companies {
            let dc = c.default_contact.as_ref().unwrap().id;
            let contact = small.contacts.iter().find(|x| x.id == dc).unwrap();
            assert!(contact.default_flag);
            assert_eq!(contact.company.as_ref().unwrap().id, c.id);
        }
        // Identifiers are unique.
        let mut ids: Vec<_> = large
            .companies
            .iter()
            .filter_map(|c| c.identifier.as_deref())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 5_000);
    }
}
