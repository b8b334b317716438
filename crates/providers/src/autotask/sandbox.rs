//! Autotask played on loopback for tests, benchmarks and the demo.
//!
//! * Zone discovery at `/atservicesrest/v1.0/zoneInformation?user=` (no auth), answering
//!   the zone URL `https://{host}/ATServicesRest/` for known API users.
//! * The API under `/ATServicesRest/V1.0/`: the three headers checked on every call;
//!   `POST {Entity}/query` (or `GET …/query?search=`), `GET {Entity}/query/next` (the
//!   `nextPageUrl`), `{Entity}/query/count`, `{Entity}/{id}`,
//!   `{Entity}/entityInformation/fields`, `Contacts/entityInformation/userDefinedFields`
//!   and `ThresholdInformation`, for Companies, Contacts, Resources, ContactGroups,
//!   ContactGroupContacts and Tickets.
//! * Autotask's query rules, refused as HTTP 500 with an `errors` array: a filter is
//!   mandatory, `MaxRecords` 1–500, `IncludeFields` must hold `id` to page, known fields and
//!   operators only, at most 500 values in an `in`. Results come in id order.
//! * The database's request threshold (10,000 per rolling hour; `add_external_usage`
//!   plays other integrations of the tenant), answered with 429 once reached, and 3
//!   requests in flight per tracking identifier and endpoint (429 beyond).
//! * An API user whose security level cannot see Resources (403), and fault injection.
//! * Tickets and ticket notes with the tenant's picklists (status, priority, queue, ticket
//!   type, note type, publish) in `entityInformation/fields`; writes as Autotask takes them:
//!   `POST /Tickets`, `PATCH /Tickets` with the id in the body (`PATCH /Tickets/{id}` is
//!   refused, trap 14), `POST /Tickets/{id}/Notes`, each answering `{"itemId": N}`, with
//!   validation failures as HTTP 500 and an `errors` array (trap 20) and answers that can
//!   be lost after the write (`lose_write_answers`).
//! * Ticket webhooks: `TicketWebhooks` with their `Fields` and `ExcludedResources`; every
//!   ticket change (the API's included) is delivered, signed with `X-Hook-Signature`, to
//!   each active webhook subscribed to it, unless the resource that made it is excluded.
//!   `/_sandbox/tickets/{id}/status?label=` and `/_sandbox/tickets/{id}/notes?text=` play
//!   a technician working in Autotask.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use chrono::{DateTime, TimeZone, Utc};
use mspbridge_sandbox::names::{FIRST, LAST, company_name, web_domain};
use mspbridge_sandbox::{Faults, RawEdits, Rng, SandboxHandle, Seed, deliver_in_background};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::wire::{
    Company, Contact, ContactGroup, ContactGroupContact, PageDetails, Resource, Ticket, TicketNote,
    Udf, at_time,
};
use mspbridge_sandbox::names::TICKET_SUBJECTS;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

pub const DEMO_USERNAME: &str = "mspbridge-api@demo-msp.example";
pub const DEMO_SECRET: &str = "Demo$ecret-autotask-7Q";
pub const DEMO_INTEGRATION_CODE: &str = "MSPBRIDGEDEMO7TRACKINGID";
/// An API user whose security level cannot see Resources.
pub const LIMITED_USERNAME: &str = "limited-api@demo-msp.example";
/// The contact user-defined field the sandbox has (a picklist).
pub const CONTACT_TYPE_UDF: &str = "Contact Type";

const ZONE_PREFIX: &str = "/ATServicesRest";
const BASE_ID: i64 = 29_683_000;

/// The tenant's contact groups; the first three are active.
const GROUPS: [(&str, bool); 4] = [
    ("IT Contact", true),
    ("Billing Contact", true),
    ("Decision Maker", true),
    ("Newsletter", false),
];

/// `companyType` picklist: (value, label).
const COMPANY_TYPES: [(i64, &str); 4] =
    [(1, "Customer"), (2, "Lead"), (3, "Prospect"), (7, "Vendor")];

/// Ticket statuses: (value, label, default). Complete (5) stamps `completedDate`.
pub const TICKET_STATUSES: [(i64, &str, bool); 7] = [
    (1, "New", true),
    (5, "Complete", false),
    (7, "Waiting Customer", false),
    (8, "In Progress", false),
    (9, "Waiting Materials", false),
    (12, "Waiting Vendor", false),
    (13, "On Hold", false),
];
pub const COMPLETE: i64 = 5;
pub const PRIORITIES: [(i64, &str, bool); 4] = [
    (1, "High", false),
    (2, "Medium", true),
    (3, "Low", false),
    (4, "Critical", false),
];
pub const QUEUES: [(i64, &str, bool); 4] = [
    (5, "Client Portal", false),
    (8, "Level I Support", true),
    (9, "Level II Support", false),
    (10, "Monitoring Alert", false),
];
pub const TICKET_TYPES: [(i64, &str, bool); 4] = [
    (1, "Service Request", true),
    (2, "Incident", false),
    (3, "Problem", false),
    (4, "Change Request", false),
];
pub const NOTE_TYPES: [(i64, &str, bool); 3] = [
    (1, "Ticket Detail", false),
    (3, "Ticket Notes", true),
    (13, "Workflow Rule Action Note", false),
];
/// Who may see a note: (value, label, default).
pub const PUBLISH: [(i64, &str, bool); 3] = [
    (1, "All Autotask Users", true),
    (2, "Internal Only", false),
    (4, "Internal Project Team", false),
];
/// The ticket fields a webhook can subscribe to (`TicketWebhookFields.fieldID`), with the
/// API field each stands for.
pub const WEBHOOK_FIELDS: [(i64, &str, &str); 7] = [
    (101, "Status", "status"),
    (102, "Priority", "priority"),
    (103, "Title", "title"),
    (104, "Queue", "queueID"),
    (105, "Assigned Resource", "assignedResourceID"),
    (106, "Last Activity Date", "lastActivityDate"),
    (107, "Due Date", "dueDateTime"),
];
const BASE_TICKET_ID: i64 = 7_000;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketWebhook {
    pub id: i64,
    pub name: String,
    pub webhook_url: String,
    pub deactivation_url: String,
    /// Write-only: never in a query's answer.
    #[serde(skip_serializing, default)]
    pub secret_key: String,
    pub is_active: bool,
    pub is_ready: bool,
    pub is_subscribed_to_create_events: bool,
    pub is_subscribed_to_update_events: bool,
    pub is_subscribed_to_delete_events: bool,
    #[serde(default)]
    pub send_threshold_exceeded_notification: bool,
    /// Identifies the webhook in its deliveries.
    pub guid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketWebhookField {
    pub id: i64,
    #[serde(rename = "webhookID")]
    pub webhook_id: i64,
    #[serde(rename = "fieldID")]
    pub field_id: i64,
    pub is_subscribed_field: bool,
    pub is_display_always_field: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct TicketWebhookExcludedResource {
    pub id: i64,
    #[serde(rename = "webhookID")]
    pub webhook_id: i64,
    #[serde(rename = "resourceID")]
    pub resource_id: i64,
}

#[derive(Debug, Clone, Default)]
pub struct AutotaskData {
    /// Ticket statuses an admin added after [`TICKET_STATUSES`] (value, label).
    pub added_ticket_statuses: Vec<(i64, &'static str)>,
    pub companies: Vec<Company>,
    pub contacts: Vec<Contact>,
    pub resources: Vec<Resource>,
    pub groups: Vec<ContactGroup>,
    pub memberships: Vec<ContactGroupContact>,
    pub tickets: Vec<Ticket>,
    pub notes: Vec<TicketNote>,
    pub webhooks: Vec<TicketWebhook>,
    pub webhook_fields: Vec<TicketWebhookField>,
    pub webhook_excluded: Vec<TicketWebhookExcludedResource>,
}

impl AutotaskData {
    /// The resource id of API user `user_name`.
    pub fn resource_of(&self, user_name: &str) -> Option<i64> {
        self.resources
            .iter()
            .find(|r| {
                r.user_name
                    .as_deref()
                    .is_some_and(|u| u.eq_ignore_ascii_case(user_name))
            })
            .map(|r| r.id)
    }

    /// The technician who works tickets by hand in the sandbox.
    pub fn technician(&self) -> i64 {
        self.resources.first().map(|r| r.id).unwrap_or_default()
    }
}

/// One request as the sandbox received it.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenRequest {
    pub method: String,
    /// Path after `/ATServicesRest/V1.0` (or the zone discovery path).
    pub path: String,
    pub query: Vec<(String, String)>,
    /// The JSON body of a POST.
    pub body: Option<Value>,
    pub headers: Vec<(String, String)>,
}

/// The database's request count over a rolling window.
#[derive(Debug)]
struct Threshold {
    limit: usize,
    window: Duration,
    stamps: VecDeque<Instant>,
}

impl Threshold {
    fn count(&mut self) -> usize {
        let now = Instant::now();
        while self
            .stamps
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            self.stamps.pop_front();
        }
        self.stamps.len()
    }
}

struct Inner {
    data: RwLock<AutotaskData>,
    threshold: Mutex<Threshold>,
    /// Highest count the threshold reached (tests check the client stayed under it).
    peak: Mutex<usize>,
    threshold_hits: Mutex<usize>,
    in_flight: Mutex<HashMap<String, usize>>,
    thread_hits: Mutex<usize>,
    seen: Mutex<Vec<SeenRequest>>,
    raw_edits: RawEdits,
    /// Serve `nextPageUrl`s on this host instead of the request's (tests).
    next_host: Mutex<Option<String>>,
    /// Name this zone URL in zone discovery instead of the sandbox's own (tests).
    zone_url: Mutex<Option<String>>,
    /// Writes whose answer is lost after they were applied.
    lost_answers: AtomicU32,
    deliveries: AtomicU64,
    sequence: AtomicU64,
}

#[derive(Clone)]
pub struct AutotaskSandbox {
    inner: Arc<Inner>,
    pub faults: Faults,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn base_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

/// Companies (mostly customers), contacts (the first of each company primary), contact
/// groups with memberships mirrored by the "Contact Type" field, and resources: the
/// technicians plus the API users themselves.
pub fn generate(seed: Seed) -> AutotaskData {
    let (n, per, n_res) = match seed {
        Seed::Small => (12usize, 3usize, 5usize),
        Seed::Large => (5_000, 10, 200),
        Seed::Companies(n) => (n as usize, 10, (n as usize / 25).max(2)),
    };
    let mut rng = Rng::new(0xA070);
    let mut d = AutotaskData {
        groups: GROUPS
            .iter()
            .enumerate()
            .map(|(i, (name, active))| ContactGroup {
                id: i as i64 + 1,
                name: name.to_string(),
                is_active: *active,
            })
            .collect(),
        ..Default::default()
    };
    let mut contact_id = BASE_ID + 1_000_000;
    for i in 0..n {
        let id = BASE_ID + i as i64;
        let kind = match rng.below(20) {
            0 => 2,
            1 => 3,
            2 => 7,
            _ => 1,
        };
        let name = company_name(&mut rng, i);
        d.companies.push(Company {
            id,
            web_address: Some(format!("www.{}", web_domain(&name))),
            company_name: name,
            company_number: Some(format!("C{:05}", i + 1)),
            company_type: Some(kind),
            is_active: !rng.chance(5),
            phone: Some(format!("555-{:04}", i % 10_000)),
            last_activity_date: Some(
                base_time() + chrono::Duration::minutes(rng.below(60 * 24 * 300) as i64),
            ),
        });
        let k = if matches!(seed, Seed::Small) {
            1 + rng.below(per as u64) as usize
        } else {
            per
        };
        for j in 0..k {
            let f = rng.pick(&FIRST).to_string();
            let l = rng.pick(&LAST).to_string();
            let group = match rng.below(10) {
                0 | 1 => Some(1),
                2 => Some(2),
                _ => None,
            };
            if let Some(g) = group {
                d.memberships.push(ContactGroupContact {
                    id: d.memberships.len() as i64 + 1,
                    contact_group_id: g,
                    contact_id,
                });
            }
            d.contacts.push(Contact {
                id: contact_id,
                company_id: Some(id),
                first_name: f.clone(),
                last_name: l.clone(),
                title: None,
                email_address: (!rng.chance(8)).then(|| {
                    format!(
                        "{}.{}{contact_id}@c{id}.example",
                        f.to_lowercase(),
                        l.to_lowercase()
                    )
                }),
                email_address2: None,
                email_address3: None,
                phone: Some(format!("555-{:04}", contact_id % 10_000)),
                mobile_phone: None,
                is_active: i64::from(!rng.chance(5)),
                primary_contact: j == 0,
                last_activity_date: Some(base_time()),
                last_modified_date: Some(
                    base_time() + chrono::Duration::minutes(rng.below(60 * 24 * 300) as i64),
                ),
                user_defined_fields: vec![Udf {
                    name: CONTACT_TYPE_UDF.into(),
                    value: group.map(|g| g.to_string()),
                }],
            });
            // Some contacts keep their only address in the second or third field (the
            // connector falls back to them).
            if let Some(c) = d.contacts.last_mut() {
                let n = c.id - (BASE_ID + 1_000_000);
                if n % 9 == 4 {
                    c.email_address2 = c.email_address.take();
                } else if n % 13 == 6 {
                    c.email_address3 = c.email_address.take();
                }
            }
            contact_id += 1;
        }
    }
    for i in 0..n_res {
        let f = rng.pick(&FIRST).to_string();
        let l = rng.pick(&LAST).to_string();
        d.resources.push(Resource {
            id: BASE_ID - 100_000 + i as i64,
            user_name: Some(format!("{}{}", &f[..1].to_lowercase(), l.to_lowercase())),
            email: Some(format!(
                "{}.{}{i}@demo-msp.example",
                f.to_lowercase(),
                l.to_lowercase()
            )),
            email2: None,
            email3: None,
            first_name: f,
            last_name: l,
            title: Some("Technician".into()),
            is_active: i + 1 != n_res || n_res < 2,
            resource_type: Some("Employee".into()),
        });
    }
    for (k, user) in [DEMO_USERNAME, LIMITED_USERNAME].iter().enumerate() {
        d.resources.push(Resource {
            id: BASE_ID - 10 + k as i64,
            first_name: "API".into(),
            last_name: "User".into(),
            email: Some(user.to_string()),
            email2: None,
            email3: None,
            user_name: Some(user.to_string()),
            title: None,
            is_active: true,
            resource_type: Some("Employee".into()),
        });
    }
    if matches!(seed, Seed::Small) {
        add_tickets(&mut d, 3, 2);
    }
    d
}

/// Up to `per_company` tickets for each company (0 to `per_company`, deterministic), each
/// with `notes_per` notes, one in three internal.
pub fn add_tickets(d: &mut AutotaskData, per_company: usize, notes_per: usize) {
    let mut rng = Rng::new(0xA7_71C);
    let mut ticket_id = d
        .tickets
        .iter()
        .map(|t| t.id)
        .max()
        .unwrap_or(BASE_TICKET_ID);
    let mut note_id = d
        .notes
        .iter()
        .map(|n| n.id)
        .max()
        .unwrap_or(BASE_TICKET_ID * 10);
    let tech = d.technician();
    let mut contacts: HashMap<i64, i64> = HashMap::new();
    for c in &d.contacts {
        if let Some(co) = c.company_id {
            contacts.entry(co).or_insert(c.id);
        }
    }
    let companies: Vec<i64> = d.companies.iter().map(|c| c.id).collect();
    for company in companies {
        for _ in 0..rng.below(per_company as u64 + 1) {
            ticket_id += 1;
            let status = rng.pick(&TICKET_STATUSES).0;
            let created = base_time() + chrono::Duration::minutes(rng.below(60 * 24 * 300) as i64);
            let updated = created + chrono::Duration::minutes(rng.below(60 * 24 * 5) as i64 + 10);
            d.tickets.push(Ticket {
                id: ticket_id,
                ticket_number: Some(format!("T20260101.{:04}", ticket_id - BASE_TICKET_ID)),
                title: rng.pick(&TICKET_SUBJECTS).to_string(),
                description: Some(format!("Reported by the customer (ticket {ticket_id}).")),
                status: Some(status),
                priority: Some(rng.pick(&PRIORITIES).0),
                queue_id: Some(rng.pick(&QUEUES).0),
                ticket_type: Some(rng.pick(&TICKET_TYPES).0),
                company_id: Some(company),
                contact_id: contacts.get(&company).copied(),
                assigned_resource_id: Some(tech),
                external_id: None,
                create_date: Some(created),
                completed_date: (status == COMPLETE).then_some(updated),
                last_activity_date: Some(updated),
            });
            for k in 0..notes_per {
                note_id += 1;
                d.notes.push(TicketNote {
                    id: note_id,
                    ticket_id,
                    title: Some("Update".into()),
                    description: format!("Update {} on ticket {ticket_id}.", k + 1),
                    note_type: Some(3),
                    publish: Some(if note_id % 3 == 0 { 2 } else { 1 }),
                    creator_resource_id: Some(tech),
                    created_by_contact_id: None,
                    create_date_time: Some(created + chrono::Duration::minutes(k as i64 + 1)),
                    last_activity_date: Some(created + chrono::Duration::minutes(k as i64 + 1)),
                });
            }
        }
    }
}

impl AutotaskSandbox {
    pub fn new(seed: Seed) -> Self {
        Self {
            inner: Arc::new(Inner {
                data: RwLock::new(generate(seed)),
                threshold: Mutex::new(Threshold {
                    limit: 10_000,
                    window: Duration::from_secs(3600),
                    stamps: VecDeque::new(),
                }),
                peak: Mutex::new(0),
                threshold_hits: Mutex::new(0),
                in_flight: Mutex::new(HashMap::new()),
                thread_hits: Mutex::new(0),
                seen: Mutex::new(Vec::new()),
                raw_edits: RawEdits::default(),
                next_host: Mutex::new(None),
                zone_url: Mutex::new(None),
                lost_answers: AtomicU32::new(0),
                deliveries: AtomicU64::new(0),
                sequence: AtomicU64::new(0),
            }),
            faults: Faults::default(),
        }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route(
                "/atservicesrest/v1.0/zoneInformation",
                get(zone_information),
            )
            .route("/ATServicesRest/V1.0/{*rest}", any(api))
            .route("/_sandbox/touch-contacts", post(touch_contacts))
            .route("/_sandbox/tickets/{id}/status", post(sandbox_status))
            .route("/_sandbox/tickets/{id}/notes", post(sandbox_note))
            .with_state(self.inner.clone())
            .layer(axum::middleware::from_fn_with_state(
                self.faults.clone(),
                mspbridge_sandbox::inject_faults,
            ))
            // Outermost, so a request's slot spans its whole response time.
            .layer(axum::middleware::from_fn_with_state(
                self.inner.clone(),
                threads,
            ))
    }

    pub fn serve(&self, listener: TcpListener) -> std::io::Result<SandboxHandle> {
        mspbridge_sandbox::serve(self.router(), listener)
    }

    /// The zone lookup URL to configure the connector with
    /// (`AutotaskSettings::zone_lookup_url`).
    pub fn zone_lookup_url(handle: &SandboxHandle) -> String {
        format!("https://{}/atservicesrest", handle.host())
    }

    /// Mutate the data set (tests simulate Autotask-side changes); records are kept in
    /// id order, as Autotask answers queries.
    pub fn with_data<R>(&self, f: impl FnOnce(&mut AutotaskData) -> R) -> R {
        let mut d = match self.inner.data.write() {
            Ok(d) => d,
            Err(p) => p.into_inner(),
        };
        let r = f(&mut d);
        d.companies.sort_by_key(|r| r.id);
        d.contacts.sort_by_key(|r| r.id);
        d.resources.sort_by_key(|r| r.id);
        d.groups.sort_by_key(|r| r.id);
        d.memberships.sort_by_key(|r| r.id);
        d.tickets.sort_by_key(|r| r.id);
        d.notes.sort_by_key(|r| r.id);
        r
    }

    /// The next `n` ticket writes are applied but their answers lost (504).
    pub fn lose_write_answers(&self, n: u32) {
        self.inner.lost_answers.store(n, Ordering::SeqCst);
    }

    /// Webhook deliveries sent so far.
    pub fn deliveries(&self) -> u64 {
        self.inner.deliveries.load(Ordering::Relaxed)
    }

    /// Moves ticket `id` to the status labelled `label`, as a technician in Autotask would
    /// (webhooks called).
    pub fn set_ticket_status(&self, id: i64, label: &str) -> bool {
        set_status(&self.inner, id, label)
    }

    /// A note on `ticket` by the technician (webhooks called for its activity).
    pub fn add_note(&self, ticket: i64, text: &str, internal: bool) -> Option<i64> {
        let tech = self.with_data(|d| d.technician());
        add_note(
            &self.inner,
            ticket,
            json!({"title": "Update", "description": text, "publish": if internal { 2 } else { 1 }}),
            tech,
        )
        .ok()
    }

    /// What a delivery of `action` on ticket `id` to webhook `webhook` would carry.
    pub fn delivery_body(&self, webhook: i64, action: &str, id: i64) -> Vec<u8> {
        let d = read(&self.inner);
        delivery_body(&self.inner, &d, webhook, action, id, &["status"], 0)
    }

    /// The database's request threshold (default 10,000 per hour).
    pub fn set_threshold(&self, requests: usize, window: Duration) {
        let mut t = lock(&self.inner.threshold);
        t.limit = requests;
        t.window = window;
    }

    /// `n` requests made by other integrations of the tenant, just now.
    pub fn add_external_usage(&self, n: usize) {
        let mut t = lock(&self.inner.threshold);
        let now = Instant::now();
        t.stamps.extend(std::iter::repeat_n(now, n));
    }

    /// The highest request count the database reached, and how many requests it refused
    /// for the threshold and for the thread limit.
    pub fn usage_peak(&self) -> (usize, usize, usize) {
        (
            *lock(&self.inner.peak),
            *lock(&self.inner.threshold_hits),
            *lock(&self.inner.thread_hits),
        )
    }

    /// Serve `nextPageUrl`s on `host` (a host that is not the zone's).
    pub fn set_next_page_host(&self, host: Option<&str>) {
        *lock(&self.inner.next_host) = host.map(str::to_string);
    }

    /// Answer zone discovery with `url` instead of the sandbox's own zone.
    pub fn set_zone_url(&self, url: Option<&str>) {
        *lock(&self.inner.zone_url) = url.map(str::to_string);
    }

    /// Serves `field` of record `id` in `collection` (`companies`, `contacts`,
    /// `resources`) as `value`.
    pub fn set_raw_field(&self, collection: &str, id: i64, field: &str, value: Value) {
        self.inner.raw_edits.push(collection, id, field, value);
    }

    pub fn seen(&self) -> Vec<SeenRequest> {
        lock(&self.inner.seen).clone()
    }
}

fn errors(status: StatusCode, messages: &[&str]) -> Response {
    (status, axum::Json(json!({ "errors": messages }))).into_response()
}

fn record_seen(
    s: &Inner,
    method: &Method,
    path: String,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Option<Value>,
) {
    let mut query: Vec<(String, String)> = q.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    query.sort();
    let headers = ["ApiIntegrationCode", "UserName", "Secret"]
        .iter()
        .filter_map(|h| {
            headers
                .get(*h)
                .and_then(|v| v.to_str().ok())
                .map(|v| (h.to_string(), v.to_string()))
        })
        .collect();
    lock(&s.seen).push(SeenRequest {
        method: method.to_string(),
        path,
        query,
        body,
        headers,
    });
}

async fn zone_information(
    State(s): State<Arc<Inner>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    record_seen(
        &s,
        &Method::GET,
        "/zoneInformation".into(),
        &q,
        &headers,
        None,
    );
    let user = q.get("user").map(|u| u.to_lowercase()).unwrap_or_default();
    if user != DEMO_USERNAME && user != LIMITED_USERNAME {
        return errors(
            StatusCode::INTERNAL_SERVER_ERROR,
            &["Zone information could not be determined"],
        );
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let url = lock(&s.zone_url)
        .clone()
        .unwrap_or_else(|| format!("https://{host}{ZONE_PREFIX}/"));
    axum::Json(json!({
        "zoneName": "Sandbox (America East)",
        "url": url,
        "webUrl": format!("https://{host}/"),
        "ci": 1,
    }))
    .into_response()
}

/// The entity endpoint and tracking identifier of an API request.
fn endpoint_key(req: &Request) -> Option<String> {
    let rest = req.uri().path().strip_prefix("/ATServicesRest/V1.0/")?;
    let entity = rest
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let code = req
        .headers()
        .get("ApiIntegrationCode")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    Some(format!("{code}|{entity}"))
}

/// Autotask's thread limit: 3 requests in flight per tracking identifier and endpoint.
async fn threads(State(s): State<Arc<Inner>>, req: Request, next: Next) -> Response {
    let Some(key) = endpoint_key(&req) else {
        return next.run(req).await;
    };
    {
        let mut f = lock(&s.in_flight);
        let n = f.entry(key.clone()).or_default();
        if *n >= 3 {
            drop(f);
            *lock(&s.thread_hits) += 1;
            return errors(
                StatusCode::TOO_MANY_REQUESTS,
                &[
                    "Thread threshold exceeded: at most 3 concurrent requests per API tracking identifier and endpoint",
                ],
            );
        }
        *n += 1;
    }
    let resp = next.run(req).await;
    if let Some(n) = lock(&s.in_flight).get_mut(&key) {
        *n = n.saturating_sub(1);
    }
    resp
}

#[derive(Debug, Deserialize)]
struct QueryBody {
    #[serde(rename = "MaxRecords", alias = "maxRecords", default)]
    max_records: Option<i64>,
    #[serde(rename = "IncludeFields", alias = "includeFields", default)]
    include_fields: Vec<String>,
    #[serde(alias = "Filter", default)]
    filter: Vec<Value>,
}

/// Continuation state carried in `nextPageUrl`'s `paging` parameter.
#[derive(Debug, serde::Serialize, Deserialize)]
struct Paging {
    #[serde(rename = "pageSize")]
    page_size: i64,
    #[serde(rename = "lastId")]
    last_id: i64,
}

async fn api(
    State(s): State<Arc<Inner>>,
    Path(rest): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json_body: Option<Value> = if body.is_empty() {
        None
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => Some(v),
            Err(e) => {
                record_seen(&s, &method, format!("/{rest}"), &q, &headers, None);
                return errors(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &[&format!("The request body is not valid JSON: {e}")],
                );
            }
        }
    };
    record_seen(
        &s,
        &method,
        format!("/{rest}"),
        &q,
        &headers,
        json_body.clone(),
    );
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let user = h("UserName").to_lowercase();
    if h("ApiIntegrationCode") != DEMO_INTEGRATION_CODE
        || (user != DEMO_USERNAME && user != LIMITED_USERNAME)
        || h("Secret") != DEMO_SECRET
    {
        return errors(
            StatusCode::UNAUTHORIZED,
            &["Authentication failed: check UserName, Secret and ApiIntegrationCode"],
        );
    }
    // The database's threshold counts every authenticated request.
    {
        let mut t = lock(&s.threshold);
        let count = t.count();
        if count >= t.limit {
            drop(t);
            *lock(&s.threshold_hits) += 1;
            return errors(
                StatusCode::TOO_MANY_REQUESTS,
                &[
                    "API request threshold exceeded for this database; requests are suspended until usage drops",
                ],
            );
        }
        t.stamps.push_back(Instant::now());
        let mut peak = lock(&s.peak);
        *peak = (*peak).max(count + 1);
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string();
    let parts: Vec<&str> = rest.split('/').collect();
    if let ["ThresholdInformation"] = parts.as_slice() {
        let mut t = lock(&s.threshold);
        let count = t.count();
        return axum::Json(json!({
            "externalRequestThreshold": t.limit,
            "requestThresholdTimeframe": t.window.as_secs() / 60,
            "currentTimeframeRequestCount": count,
        }))
        .into_response();
    }
    let Some(entity) = parts.first().and_then(|e| Entity::parse(e)) else {
        return errors(
            StatusCode::NOT_FOUND,
            &[&format!("No such entity: {}", parts.first().unwrap_or(&""))],
        );
    };
    if entity == Entity::Resources && user == LIMITED_USERNAME {
        return errors(
            StatusCode::FORBIDDEN,
            &["The security level of this API user does not allow access to Resources"],
        );
    }
    let writes = matches!(method, Method::POST | Method::PATCH | Method::PUT)
        && parts.get(1).is_none_or(|p| *p != "query");
    if writes {
        let actor = read(&s).resource_of(&user).unwrap_or_default();
        return write(&s, entity, &method, &parts[1..], json_body, actor);
    }
    let data = read(&s);
    match (&method, &parts[1..]) {
        (&Method::POST, ["query"]) | (&Method::GET, ["query"]) => {
            let query = match (&method, json_body, q.get("search")) {
                (&Method::POST, Some(b), _) => b,
                (&Method::GET, _, Some(search)) => match serde_json::from_str(search) {
                    Ok(v) => v,
                    Err(e) => {
                        return errors(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            &[&format!("search is not valid JSON: {e}")],
                        );
                    }
                },
                _ => {
                    return errors(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &["A query needs a body (POST) or a search parameter (GET)"],
                    );
                }
            };
            run_query(&s, &data, entity, &query, 0, &host)
        }
        (&Method::GET, ["query", "next"]) => {
            let paging: Option<Paging> = q.get("paging").and_then(|p| serde_json::from_str(p).ok());
            let search: Option<Value> = q.get("search").and_then(|p| serde_json::from_str(p).ok());
            match (paging, search) {
                (Some(p), Some(search)) => run_query(&s, &data, entity, &search, p.last_id, &host),
                _ => errors(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &["The paging or search parameter is missing or invalid"],
                ),
            }
        }
        (_, ["query", "count"]) => {
            let query = json_body
                .or_else(|| q.get("search").and_then(|p| serde_json::from_str(p).ok()))
                .unwrap_or(Value::Null);
            let body: QueryBody = match serde_json::from_value(query) {
                Ok(b) => b,
                Err(e) => {
                    return errors(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &[&format!("The query could not be read: {e}")],
                    );
                }
            };
            match select(&s, &data, entity, &body, 0, usize::MAX) {
                Ok(rows) => axum::Json(json!({ "queryCount": rows.len() })).into_response(),
                Err(m) => errors(StatusCode::INTERNAL_SERVER_ERROR, &[&m]),
            }
        }
        (&Method::GET, ["entityInformation", "fields"]) => {
            let fields: Vec<Value> = entity
                .fields()
                .iter()
                .map(|f| match picklist(entity, f, &data) {
                    Some(values) => json!({"name": f, "dataType": "integer", "isPickList": true,
                        "picklistValues": values.iter().map(|(v, l, default)| json!({
                            "value": v.to_string(), "label": l, "isActive": true,
                            "isDefaultValue": default, "isSystem": true, "sortOrder": v,
                            "parentValue": ""})).collect::<Vec<_>>()}),
                    None => json!({"name": f, "isPickList": false}),
                })
                .collect();
            axum::Json(json!({ "fields": fields })).into_response()
        }
        (&Method::GET, ["entityInformation", "userDefinedFields"])
            if entity == Entity::Contacts =>
        {
            let values: Vec<Value> = GROUPS
                .iter()
                .enumerate()
                .filter(|(_, (_, active))| *active)
                .map(|(i, (label, _))| json!({"value": (i + 1).to_string(), "label": label, "isActive": true}))
                .collect();
            axum::Json(json!({ "fields": [{
                "name": CONTACT_TYPE_UDF, "dataType": "string", "isPickList": true,
                "picklistValues": values,
            }]}))
            .into_response()
        }
        (&Method::GET, [id]) => {
            let id: i64 = id.parse().unwrap_or(-1);
            let mut item = Value::Null;
            entity.each_row(&data, &s.raw_edits, id - 1, |row| {
                if row.get("id").and_then(Value::as_i64) == Some(id) {
                    item = row;
                }
                false
            });
            axum::Json(json!({ "item": item })).into_response()
        }
        _ => errors(
            StatusCode::NOT_FOUND,
            &[&format!("{method} /{rest} is not supported")],
        ),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entity {
    Companies,
    Contacts,
    Resources,
    ContactGroups,
    ContactGroupContacts,
    Tickets,
    TicketNotes,
    TicketWebhooks,
    TicketWebhookFields,
    TicketWebhookExcludedResources,
}

impl Entity {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Companies" => Entity::Companies,
            "Contacts" => Entity::Contacts,
            "Resources" => Entity::Resources,
            "ContactGroups" => Entity::ContactGroups,
            "ContactGroupContacts" => Entity::ContactGroupContacts,
            "Tickets" => Entity::Tickets,
            "TicketNotes" => Entity::TicketNotes,
            "TicketWebhooks" => Entity::TicketWebhooks,
            "TicketWebhookFields" => Entity::TicketWebhookFields,
            "TicketWebhookExcludedResources" => Entity::TicketWebhookExcludedResources,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Entity::Companies => "Companies",
            Entity::Contacts => "Contacts",
            Entity::Resources => "Resources",
            Entity::ContactGroups => "ContactGroups",
            Entity::ContactGroupContacts => "ContactGroupContacts",
            Entity::Tickets => "Tickets",
            Entity::TicketNotes => "TicketNotes",
            Entity::TicketWebhooks => "TicketWebhooks",
            Entity::TicketWebhookFields => "TicketWebhookFields",
            Entity::TicketWebhookExcludedResources => "TicketWebhookExcludedResources",
        }
    }

    /// The fields filters and `IncludeFields` may name.
    fn fields(self) -> &'static [&'static str] {
        match self {
            Entity::Companies => &[
                "id",
                "companyName",
                "companyNumber",
                "companyType",
                "isActive",
                "phone",
                "webAddress",
                "lastActivityDate",
                "createDate",
                "ownerResourceID",
            ],
            Entity::Contacts => &[
                "id",
                "companyID",
                "firstName",
                "lastName",
                "title",
                "emailAddress",
                "emailAddress2",
                "emailAddress3",
                "phone",
                "mobilePhone",
                "isActive",
                "primaryContact",
                "createDate",
                "lastActivityDate",
                "lastModifiedDate",
                "userDefinedFields",
            ],
            Entity::Resources => &[
                "id",
                "firstName",
                "lastName",
                "email",
                "email2",
                "email3",
                "userName",
                "title",
                "isActive",
                "resourceType",
                "locationID",
                "defaultServiceDeskRoleID",
            ],
            Entity::ContactGroups => &["id", "name", "isActive"],
            Entity::ContactGroupContacts => &["id", "contactGroupID", "contactID"],
            Entity::Tickets => &[
                "id",
                "ticketNumber",
                "title",
                "description",
                "status",
                "priority",
                "queueID",
                "ticketType",
                "companyID",
                "contactID",
                "assignedResourceID",
                "externalID",
                "createDate",
                "completedDate",
                "lastActivityDate",
            ],
            Entity::TicketNotes => &[
                "id",
                "ticketID",
                "title",
                "description",
                "noteType",
                "publish",
                "creatorResourceID",
                "createdByContactID",
                "createDateTime",
                "lastActivityDate",
            ],
            Entity::TicketWebhooks => &[
                "id",
                "name",
                "webhookUrl",
                "deactivationUrl",
                "secretKey",
                "isActive",
                "isReady",
                "isSubscribedToCreateEvents",
                "isSubscribedToUpdateEvents",
                "isSubscribedToDeleteEvents",
                "sendThresholdExceededNotification",
            ],
            Entity::TicketWebhookFields => &[
                "id",
                "webhookID",
                "fieldID",
                "isSubscribedField",
                "isDisplayAlwaysField",
            ],
            Entity::TicketWebhookExcludedResources => &["id", "webhookID", "resourceID"],
        }
    }

    /// Records with ids above `after` as Autotask serialises them (raw edits applied), in
    /// id order, handed to `f` until it returns `false`. Serialised one at a time, so a
    /// page costs its own rows, not the table's.
    fn each_row(
        self,
        d: &AutotaskData,
        edits: &RawEdits,
        after: i64,
        f: impl FnMut(Value) -> bool,
    ) {
        fn walk<T: serde::Serialize>(
            v: &[T],
            id: impl Fn(&T) -> i64,
            key: &str,
            edits: &RawEdits,
            after: i64,
            mut f: impl FnMut(Value) -> bool,
        ) {
            let start = v.partition_point(|r| id(r) <= after);
            for r in &v[start..] {
                let Ok(mut row) = serde_json::to_value(r) else {
                    continue;
                };
                edits.apply(key, std::slice::from_mut(&mut row));
                if !f(row) {
                    return;
                }
            }
        }
        match self {
            Entity::Companies => walk(&d.companies, |r| r.id, "companies", edits, after, f),
            Entity::Contacts => walk(&d.contacts, |r| r.id, "contacts", edits, after, f),
            Entity::Resources => walk(&d.resources, |r| r.id, "resources", edits, after, f),
            Entity::ContactGroups => walk(&d.groups, |r| r.id, "groups", edits, after, f),
            Entity::ContactGroupContacts => {
                walk(&d.memberships, |r| r.id, "memberships", edits, after, f)
            }
            Entity::Tickets => walk(&d.tickets, |r| r.id, "tickets", edits, after, f),
            Entity::TicketNotes => walk(&d.notes, |r| r.id, "notes", edits, after, f),
            Entity::TicketWebhooks => walk(&d.webhooks, |r| r.id, "webhooks", edits, after, f),
            Entity::TicketWebhookFields => walk(
                &d.webhook_fields,
                |r| r.id,
                "webhook_fields",
                edits,
                after,
                f,
            ),
            Entity::TicketWebhookExcludedResources => walk(
                &d.webhook_excluded,
                |r| r.id,
                "webhook_excluded",
                edits,
                after,
                f,
            ),
        }
    }
}

/// Up to `limit` rows matching `q` with ids above `after`, validated as Autotask
/// validates queries.
fn select(
    s: &Inner,
    d: &AutotaskData,
    entity: Entity,
    q: &QueryBody,
    after: i64,
    limit: usize,
) -> Result<Vec<Value>, String> {
    if q.filter.is_empty() {
        return Err(
            "A query must contain at least one filter (use id gt 0 to get everything)".into(),
        );
    }
    for c in &q.filter {
        check(entity, c)?;
    }
    let filter: Vec<Filter> = q.filter.iter().map(compile).collect();
    let mut out = Vec::new();
    entity.each_row(d, &s.raw_edits, after, |row| {
        if filter.iter().all(|f| f.eval(&row)) {
            out.push(row);
        }
        out.len() < limit
    });
    Ok(out)
}

fn field_of<'a>(row: &'a Value, field: &str) -> Option<&'a Value> {
    row.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(field))
        .map(|(_, v)| v)
}

const OPS: [&str; 13] = [
    "eq", "noteq", "gt", "gte", "lt", "lte", "begins", "ends", "contains", "exist", "notexist",
    "in", "notin",
];

fn check(entity: Entity, c: &Value) -> Result<(), String> {
    let op = c
        .get("op")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_lowercase();
    if op == "and" || op == "or" {
        let items = c
            .get("items")
            .and_then(Value::as_array)
            .ok_or("and/or needs items")?;
        if items.len() > 500 {
            return Err("A query may contain at most 500 OR conditions".into());
        }
        return items.iter().try_for_each(|i| check(entity, i));
    }
    if !OPS.contains(&op.as_str()) {
        return Err(format!("Invalid filter operator '{op}'"));
    }
    let field = c.get("field").and_then(Value::as_str).unwrap_or_default();
    if !entity
        .fields()
        .iter()
        .any(|f| f.eq_ignore_ascii_case(field))
    {
        return Err(format!(
            "Unable to find field '{field}' in the {} entity",
            entity.name()
        ));
    }
    if (op == "in" || op == "notin")
        && c.get("value")
            .and_then(Value::as_array)
            .is_some_and(|v| v.len() > 500)
    {
        return Err("A query may contain at most 500 OR conditions".into());
    }
    Ok(())
}

fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::Bool(x), Value::Number(y)) => f64::from(u8::from(*x)).partial_cmp(&y.as_f64()?),
        (Value::Number(x), Value::Bool(y)) => x.as_f64()?.partial_cmp(&f64::from(u8::from(*y))),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::String(x), Value::String(y)) => match (at_time::parse(x), at_time::parse(y)) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => Some(x.to_lowercase().cmp(&y.to_lowercase())),
        },
        (Value::String(x), Value::Number(y)) => x.parse::<f64>().ok()?.partial_cmp(&y.as_f64()?),
        _ => None,
    }
}

/// A filter ready to run over many rows: `in` over integers becomes a set lookup (a page
/// of contacts asks for the groups of 500 ids at once).
enum Filter<'a> {
    All(Vec<Filter<'a>>),
    Any(Vec<Filter<'a>>),
    IntSet {
        field: &'a str,
        set: std::collections::HashSet<i64>,
        negate: bool,
    },
    Leaf(&'a Value),
}

fn compile(c: &Value) -> Filter<'_> {
    let op = c
        .get("op")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_lowercase();
    let items = || {
        c.get("items")
            .and_then(Value::as_array)
            .map(|i| i.iter().map(compile).collect())
            .unwrap_or_default()
    };
    match op.as_str() {
        "and" => Filter::All(items()),
        "or" => Filter::Any(items()),
        "in" | "notin" => {
            let field = c.get("field").and_then(Value::as_str).unwrap_or_default();
            let ints: Option<std::collections::HashSet<i64>> = c
                .get("value")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().map(Value::as_i64).collect());
            match ints {
                Some(set) => Filter::IntSet {
                    field,
                    set,
                    negate: op == "notin",
                },
                None => Filter::Leaf(c),
            }
        }
        _ => Filter::Leaf(c),
    }
}

impl Filter<'_> {
    fn eval(&self, row: &Value) -> bool {
        match self {
            Filter::All(fs) => fs.iter().all(|f| f.eval(row)),
            Filter::Any(fs) => fs.iter().any(|f| f.eval(row)),
            Filter::IntSet { field, set, negate } => {
                let hit = field_of(row, field)
                    .and_then(Value::as_i64)
                    .is_some_and(|v| set.contains(&v));
                hit != *negate
            }
            Filter::Leaf(c) => matches(row, c),
        }
    }
}

fn matches(row: &Value, c: &Value) -> bool {
    use std::cmp::Ordering::*;
    let op = c
        .get("op")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_lowercase();
    let items = || {
        c.get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    match op.as_str() {
        "and" => return items().iter().all(|i| matches(row, i)),
        "or" => return items().iter().any(|i| matches(row, i)),
        _ => {}
    }
    let field = c.get("field").and_then(Value::as_str).unwrap_or_default();
    let v = field_of(row, field).filter(|v| !v.is_null());
    let want = c.get("value").unwrap_or(&Value::Null);
    let text = |v: &Value| {
        v.as_str()
            .map(str::to_lowercase)
            .unwrap_or_else(|| v.to_string())
    };
    match (op.as_str(), v) {
        ("exist", v) => v.is_some(),
        ("notexist", v) => v.is_none(),
        ("noteq", None) => true,
        ("notin", None) => true,
        (_, None) => false,
        ("eq", Some(v)) => compare(v, want) == Some(Equal),
        ("noteq", Some(v)) => compare(v, want) != Some(Equal),
        ("gt", Some(v)) => compare(v, want) == Some(Greater),
        ("gte", Some(v)) => matches!(compare(v, want), Some(Greater | Equal)),
        ("lt", Some(v)) => compare(v, want) == Some(Less),
        ("lte", Some(v)) => matches!(compare(v, want), Some(Less | Equal)),
        ("in", Some(v)) => want
            .as_array()
            .is_some_and(|a| a.iter().any(|w| compare(v, w) == Some(Equal))),
        ("notin", Some(v)) => !want
            .as_array()
            .is_some_and(|a| a.iter().any(|w| compare(v, w) == Some(Equal))),
        ("begins", Some(v)) => text(v).starts_with(&text(want)),
        ("ends", Some(v)) => text(v).ends_with(&text(want)),
        ("contains", Some(v)) => text(v).contains(&text(want)),
        _ => false,
    }
}

fn run_query(
    s: &Inner,
    d: &AutotaskData,
    entity: Entity,
    query: &Value,
    after: i64,
    host: &str,
) -> Response {
    let q: QueryBody = match serde_json::from_value(query.clone()) {
        Ok(q) => q,
        Err(e) => {
            return errors(
                StatusCode::INTERNAL_SERVER_ERROR,
                &[&format!("The query could not be read: {e}")],
            );
        }
    };
    let max = q.max_records.unwrap_or(500);
    if !(1..=500).contains(&max) {
        return errors(
            StatusCode::INTERNAL_SERVER_ERROR,
            &["MaxRecords must be between 1 and 500"],
        );
    }
    for f in &q.include_fields {
        if !entity.fields().iter().any(|k| k.eq_ignore_ascii_case(f)) {
            return errors(
                StatusCode::INTERNAL_SERVER_ERROR,
                &[&format!(
                    "Unable to find field '{f}' in the {} entity",
                    entity.name()
                )],
            );
        }
    }
    // One more than the page tells whether another page follows.
    let rows = match select(s, d, entity, &q, after, max as usize + 1) {
        Ok(r) => r,
        Err(m) => return errors(StatusCode::INTERNAL_SERVER_ERROR, &[&m]),
    };
    let more = rows.len() > max as usize;
    let has_id = q.include_fields.is_empty()
        || q.include_fields
            .iter()
            .any(|f| f.eq_ignore_ascii_case("id"));
    if more && !has_id {
        return errors(
            StatusCode::INTERNAL_SERVER_ERROR,
            &["IncludeFields must include id to page past the first page"],
        );
    }
    let page: Vec<Value> = rows
        .into_iter()
        .take(max as usize)
        .map(|r| project(r, &q.include_fields))
        .collect();
    let last_id = page
        .last()
        .and_then(|r| r.get("id"))
        .and_then(Value::as_i64)
        .unwrap_or(after);
    let next = more.then(|| {
        let next_host = lock(&s.next_host)
            .clone()
            .unwrap_or_else(|| host.to_string());
        let paging = json!({ "pageSize": max, "lastId": last_id }).to_string();
        format!(
            "https://{next_host}{ZONE_PREFIX}/V1.0/{}/query/next?paging={}&search={}",
            entity.name(),
            crate::http::urlencode(&paging),
            crate::http::urlencode(&query.to_string())
        )
    });
    let details = PageDetails {
        count: page.len() as u64,
        request_count: max as u64,
        prev_page_url: None,
        next_page_url: next,
    };
    axum::Json(json!({ "items": page, "pageDetails": details })).into_response()
}

fn project(row: Value, fields: &[String]) -> Value {
    if fields.is_empty() {
        return row;
    }
    match row {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(k, _)| fields.iter().any(|f| f.eq_ignore_ascii_case(k)))
                .collect(),
        ),
        other => other,
    }
}

/// Changes every `every`-th contact (a later `lastModifiedDate`), as a user editing them
/// in Autotask would.
async fn touch_contacts(
    State(s): State<Arc<Inner>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let every = mspbridge_sandbox::touch_every(&q);
    let mut d = match s.data.write() {
        Ok(d) => d,
        Err(p) => p.into_inner(),
    };
    let latest = d
        .contacts
        .iter()
        .filter_map(|c| c.last_modified_date)
        .max()
        .unwrap_or_else(base_time);
    let mut n = 0;
    for c in d.contacts.iter_mut().step_by(every) {
        c.last_name.push_str(" Jr");
        c.last_modified_date = Some(latest + chrono::Duration::minutes(60));
        n += 1;
    }
    axum::Json(json!({ "changed": n })).into_response()
}

/// The picklist of `field` on `entity`: (value, label, default).
fn picklist(
    entity: Entity,
    field: &str,
    d: &AutotaskData,
) -> Option<Vec<(i64, &'static str, bool)>> {
    let list: &[(i64, &str, bool)] = match (entity, field) {
        (Entity::Companies, "companyType") => {
            return Some(
                COMPANY_TYPES
                    .iter()
                    .map(|(v, l)| (*v, *l, *v == 1))
                    .collect(),
            );
        }
        (Entity::Tickets, "status") => return Some(ticket_statuses(d)),
        (Entity::Tickets, "priority") => &PRIORITIES,
        (Entity::Tickets, "queueID") => &QUEUES,
        (Entity::Tickets, "ticketType") => &TICKET_TYPES,
        (Entity::TicketNotes, "noteType") => &NOTE_TYPES,
        (Entity::TicketNotes, "publish") => &PUBLISH,
        (Entity::TicketWebhookFields, "fieldID") => {
            return Some(
                WEBHOOK_FIELDS
                    .iter()
                    .map(|(v, l, _)| (*v, *l, false))
                    .collect(),
            );
        }
        _ => return None,
    };
    Some(list.to_vec())
}

fn read(s: &Inner) -> std::sync::RwLockReadGuard<'_, AutotaskData> {
    match s.data.read() {
        Ok(d) => d,
        Err(p) => p.into_inner(),
    }
}

fn write_lock(s: &Inner) -> std::sync::RwLockWriteGuard<'_, AutotaskData> {
    match s.data.write() {
        Ok(d) => d,
        Err(p) => p.into_inner(),
    }
}

fn int(v: &Value, field: &str) -> Option<i64> {
    field_of(v, field).and_then(|x| {
        x.as_i64()
            .or_else(|| x.as_str().and_then(|s| s.trim().parse().ok()))
    })
}

fn string(v: &Value, field: &str) -> Option<String> {
    field_of(v, field)
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn flag(v: &Value, field: &str) -> Option<bool> {
    field_of(v, field).and_then(Value::as_bool)
}

/// The built-in ticket statuses and those added since.
fn ticket_statuses(d: &AutotaskData) -> Vec<(i64, &'static str, bool)> {
    TICKET_STATUSES
        .iter()
        .copied()
        .chain(d.added_ticket_statuses.iter().map(|(v, l)| (*v, *l, false)))
        .collect()
}

fn in_list(list: &[(i64, &str, bool)], v: i64) -> bool {
    list.iter().any(|(x, _, _)| *x == v)
}

fn invalid(messages: &[&str]) -> Box<Response> {
    Box::new(errors(StatusCode::INTERNAL_SERVER_ERROR, messages))
}

/// What changed on a ticket, for the webhooks.
struct Change {
    action: &'static str,
    ticket: i64,
    fields: Vec<&'static str>,
    actor: i64,
}

/// Creates, updates and child writes, as Autotask takes them.
fn write(
    s: &Arc<Inner>,
    entity: Entity,
    method: &Method,
    rest: &[&str],
    body: Option<Value>,
    actor: i64,
) -> Response {
    let Some(body) = body.filter(Value::is_object) else {
        return errors(
            StatusCode::INTERNAL_SERVER_ERROR,
            &["The request body must be a JSON object"],
        );
    };
    let patch = *method == Method::PATCH || *method == Method::PUT;
    let outcome = match (entity, method.as_str(), rest) {
        (Entity::Tickets, "POST", []) => create_ticket(s, &body, actor),
        (Entity::Tickets, "PATCH" | "PUT", []) => update_ticket(s, &body, actor),
        (Entity::Tickets, "POST", [id, child]) if child.eq_ignore_ascii_case("Notes") => {
            match id.parse::<i64>() {
                Ok(id) => add_note_inner(s, id, &body, actor),
                Err(_) => Err(invalid(&["The parent id is not a number"])),
            }
        }
        (Entity::TicketWebhooks, "POST" | "PATCH" | "PUT", []) => webhook(s, &body, patch),
        (Entity::Resources, "PATCH", []) => update_resource(s, &body),
        (Entity::TicketWebhooks, "POST", [id, child]) => match id.parse::<i64>() {
            Ok(id) => webhook_child(s, id, child, &body),
            Err(_) => Err(invalid(&["The parent id is not a number"])),
        },
        (_, m, [_]) if m != "POST" => {
            // Trap 14: updates go to the collection with the id in the body.
            return errors(
                StatusCode::METHOD_NOT_ALLOWED,
                &[&format!(
                    "The requested resource does not support http method '{m}'."
                )],
            );
        }
        _ => {
            return errors(
                StatusCode::NOT_FOUND,
                &[&format!(
                    "{method} {} is not supported",
                    std::iter::once(entity.name())
                        .chain(rest.iter().copied())
                        .collect::<Vec<_>>()
                        .join("/")
                )],
            );
        }
    };
    match outcome {
        Err(r) => *r,
        Ok((id, change)) => {
            if let Some(c) = change {
                deliver(s, c);
            }
            let lost = entity != Entity::TicketWebhooks
                && s.lost_answers
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
            if lost {
                return (StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout").into_response();
            }
            axum::Json(json!({ "itemId": id })).into_response()
        }
    }
}

type Written = Result<(i64, Option<Change>), Box<Response>>;

fn create_ticket(s: &Inner, v: &Value, actor: i64) -> Written {
    let now = Utc::now();
    let mut d = write_lock(s);
    let mut missing = Vec::new();
    let company = int(v, "companyID");
    for (field, present) in [
        ("companyID", company.is_some()),
        (
            "title",
            string(v, "title").is_some_and(|t| !t.trim().is_empty()),
        ),
        ("status", int(v, "status").is_some()),
        ("priority", int(v, "priority").is_some()),
    ] {
        if !present {
            missing.push(format!("Missing Required Field: {field}"));
        }
    }
    if !missing.is_empty() {
        let m: Vec<&str> = missing.iter().map(String::as_str).collect();
        return Err(invalid(&m));
    }
    let company = company.unwrap_or_default();
    if !d.companies.iter().any(|c| c.id == company) {
        return Err(invalid(&[&format!(
            "Value {company} of field companyID does not exist"
        )]));
    }
    let status = int(v, "status").unwrap_or_default();
    let priority = int(v, "priority").unwrap_or_default();
    for (field, value, list) in [
        ("status", Some(status), &ticket_statuses(&d)[..]),
        ("priority", Some(priority), &PRIORITIES[..]),
        ("queueID", int(v, "queueID"), &QUEUES[..]),
        ("ticketType", int(v, "ticketType"), &TICKET_TYPES[..]),
    ] {
        if let Some(x) = value
            && !in_list(list, x)
        {
            return Err(invalid(&[&format!(
                "Value {x} of field {field} is not a valid picklist value"
            )]));
        }
    }
    if string(v, "externalID").is_some_and(|e| e.len() > 50) {
        return Err(invalid(&["externalID is longer than 50 characters"]));
    }
    let id = d
        .tickets
        .iter()
        .map(|t| t.id)
        .max()
        .unwrap_or(BASE_TICKET_ID)
        + 1;
    d.tickets.push(Ticket {
        id,
        ticket_number: Some(format!(
            "T{}.{:04}",
            now.format("%Y%m%d"),
            id - BASE_TICKET_ID
        )),
        title: string(v, "title").unwrap_or_default(),
        description: string(v, "description"),
        status: Some(status),
        priority: Some(priority),
        queue_id: int(v, "queueID"),
        ticket_type: int(v, "ticketType"),
        company_id: Some(company),
        contact_id: int(v, "contactID"),
        assigned_resource_id: int(v, "assignedResourceID"),
        external_id: string(v, "externalID"),
        create_date: Some(now),
        completed_date: (status == COMPLETE).then_some(now),
        last_activity_date: Some(now),
    });
    Ok((
        id,
        Some(Change {
            action: "Create",
            ticket: id,
            fields: vec!["status", "priority", "title", "queueID"],
            actor,
        }),
    ))
}

fn update_ticket(s: &Inner, v: &Value, actor: i64) -> Written {
    let now = Utc::now();
    let mut d = write_lock(s);
    let Some(id) = int(v, "id") else {
        return Err(invalid(&["Missing Required Field: id"]));
    };
    for (field, list) in [
        ("status", &ticket_statuses(&d)[..]),
        ("priority", &PRIORITIES[..]),
        ("queueID", &QUEUES[..]),
    ] {
        if let Some(x) = int(v, field)
            && !in_list(list, x)
        {
            return Err(invalid(&[&format!(
                "Value {x} of field {field} is not a valid picklist value"
            )]));
        }
    }
    let Some(t) = d.tickets.iter_mut().find(|t| t.id == id) else {
        return Err(invalid(&[&format!("Ticket {id} does not exist")]));
    };
    let mut fields = vec!["lastActivityDate"];
    if let Some(st) = int(v, "status")
        && t.status != Some(st)
    {
        t.status = Some(st);
        t.completed_date = (st == COMPLETE).then_some(now);
        fields.push("status");
    }
    if let Some(p) = int(v, "priority")
        && t.priority != Some(p)
    {
        t.priority = Some(p);
        fields.push("priority");
    }
    if let Some(q) = int(v, "queueID")
        && t.queue_id != Some(q)
    {
        t.queue_id = Some(q);
        fields.push("queueID");
    }
    if let Some(x) = string(v, "title")
        && x != t.title
    {
        t.title = x;
        fields.push("title");
    }
    t.last_activity_date = Some(now);
    Ok((
        id,
        Some(Change {
            action: "Update",
            ticket: id,
            fields,
            actor,
        }),
    ))
}

/// `PATCH /Resources` with the id in the body: names, email, active.
fn update_resource(s: &Inner, v: &Value) -> Written {
    let mut d = write_lock(s);
    let Some(id) = int(v, "id") else {
        return Err(invalid(&["Missing Required Field: id"]));
    };
    let Some(r) = d.resources.iter_mut().find(|r| r.id == id) else {
        return Err(invalid(&[&format!("Resource {id} does not exist")]));
    };
    if let Some(e) = string(v, "email") {
        if !e.contains('@') {
            return Err(invalid(&[&format!("'{e}' is not a valid email address")]));
        }
        r.email = Some(e);
    }
    if let Some(x) = string(v, "firstName") {
        r.first_name = x;
    }
    if let Some(x) = string(v, "lastName") {
        r.last_name = x;
    }
    if let Some(x) = flag(v, "isActive") {
        r.is_active = x;
    }
    Ok((id, None))
}

fn set_status(s: &Arc<Inner>, id: i64, label: &str) -> bool {
    let Some(value) = ticket_statuses(&read(s))
        .iter()
        .find(|(_, l, _)| l.eq_ignore_ascii_case(label))
        .map(|(v, _, _)| *v)
    else {
        return false;
    };
    let actor = read(s).technician();
    match update_ticket(s, &json!({"id": id, "status": value}), actor) {
        Ok((_, Some(c))) => {
            deliver(s, c);
            true
        }
        _ => false,
    }
}

/// A note through its parent ticket; the ticket's `lastActivityDate` moves with it.
fn add_note(s: &Arc<Inner>, ticket: i64, v: Value, actor: i64) -> Result<i64, Box<Response>> {
    let (id, change) = add_note_inner(s, ticket, &v, actor)?;
    if let Some(c) = change {
        deliver(s, c);
    }
    Ok(id)
}

fn add_note_inner(s: &Inner, ticket: i64, v: &Value, actor: i64) -> Written {
    let now = Utc::now();
    let mut d = write_lock(s);
    let mut missing = Vec::new();
    for field in ["title", "description", "publish"] {
        let present = match field {
            "publish" => int(v, field).is_some(),
            f => string(v, f).is_some_and(|t| !t.trim().is_empty()),
        };
        if !present {
            missing.push(format!("Missing Required Field: {field}"));
        }
    }
    if !missing.is_empty() {
        let m: Vec<&str> = missing.iter().map(String::as_str).collect();
        return Err(invalid(&m));
    }
    if let Some(given) = int(v, "ticketID")
        && given != ticket
    {
        return Err(invalid(&["ticketID does not match the parent ticket"]));
    }
    let publish = int(v, "publish").unwrap_or_default();
    if !in_list(&PUBLISH, publish) {
        return Err(invalid(&[&format!(
            "Value {publish} of field publish is not a valid picklist value"
        )]));
    }
    let note_type = int(v, "noteType").unwrap_or(3);
    if !in_list(&NOTE_TYPES, note_type) {
        return Err(invalid(&[&format!(
            "Value {note_type} of field noteType is not a valid picklist value"
        )]));
    }
    let Some(t) = d.tickets.iter_mut().find(|t| t.id == ticket) else {
        return Err(invalid(&[&format!("Ticket {ticket} does not exist")]));
    };
    t.last_activity_date = Some(now);
    let id = d
        .notes
        .iter()
        .map(|n| n.id)
        .max()
        .unwrap_or(BASE_TICKET_ID * 10)
        + 1;
    d.notes.push(TicketNote {
        id,
        ticket_id: ticket,
        title: string(v, "title"),
        description: string(v, "description").unwrap_or_default(),
        note_type: Some(note_type),
        publish: Some(publish),
        creator_resource_id: Some(actor),
        created_by_contact_id: None,
        create_date_time: Some(now),
        last_activity_date: Some(now),
    });
    Ok((
        id,
        Some(Change {
            action: "Update",
            ticket,
            fields: vec!["lastActivityDate"],
            actor,
        }),
    ))
}

/// `POST` creates a ticket webhook (a deactivation URL and a secret of at most 64
/// characters required); `PATCH` changes the one named by `id`.
fn webhook(s: &Inner, v: &Value, patch: bool) -> Written {
    let mut d = write_lock(s);
    if let Some(k) = string(v, "secretKey")
        && k.len() > 64
    {
        return Err(invalid(&["secretKey is longer than 64 characters"]));
    }
    if patch {
        let Some(id) = int(v, "id") else {
            return Err(invalid(&["Missing Required Field: id"]));
        };
        let Some(w) = d.webhooks.iter_mut().find(|w| w.id == id) else {
            return Err(invalid(&[&format!("TicketWebhook {id} does not exist")]));
        };
        if let Some(x) = string(v, "webhookUrl") {
            w.webhook_url = x;
        }
        if let Some(x) = string(v, "deactivationUrl") {
            w.deactivation_url = x;
        }
        if let Some(x) = string(v, "secretKey") {
            w.secret_key = x;
        }
        if let Some(x) = string(v, "name") {
            w.name = x;
        }
        for (field, slot) in [
            ("isActive", &mut w.is_active),
            (
                "isSubscribedToCreateEvents",
                &mut w.is_subscribed_to_create_events,
            ),
            (
                "isSubscribedToUpdateEvents",
                &mut w.is_subscribed_to_update_events,
            ),
            (
                "isSubscribedToDeleteEvents",
                &mut w.is_subscribed_to_delete_events,
            ),
        ] {
            if let Some(b) = flag(v, field) {
                *slot = b;
            }
        }
        return Ok((id, None));
    }
    let mut missing = Vec::new();
    for field in ["name", "webhookUrl", "deactivationUrl", "secretKey"] {
        if string(v, field).is_none_or(|x| x.trim().is_empty()) {
            missing.push(format!("Missing Required Field: {field}"));
        }
    }
    if !missing.is_empty() {
        let m: Vec<&str> = missing.iter().map(String::as_str).collect();
        return Err(invalid(&m));
    }
    let id = d.webhooks.iter().map(|w| w.id).max().unwrap_or(0) + 1;
    d.webhooks.push(TicketWebhook {
        id,
        name: string(v, "name").unwrap_or_default(),
        webhook_url: string(v, "webhookUrl").unwrap_or_default(),
        deactivation_url: string(v, "deactivationUrl").unwrap_or_default(),
        secret_key: string(v, "secretKey").unwrap_or_default(),
        is_active: flag(v, "isActive").unwrap_or(false),
        is_ready: true,
        is_subscribed_to_create_events: flag(v, "isSubscribedToCreateEvents").unwrap_or(false),
        is_subscribed_to_update_events: flag(v, "isSubscribedToUpdateEvents").unwrap_or(false),
        is_subscribed_to_delete_events: flag(v, "isSubscribedToDeleteEvents").unwrap_or(false),
        send_threshold_exceeded_notification: flag(v, "sendThresholdExceededNotification")
            .unwrap_or(false),
        guid: format!("5f0c2a7e-0000-4000-8000-{id:012}"),
    });
    Ok((id, None))
}

/// `POST /TicketWebhooks/{id}/Fields` and `/ExcludedResources`.
fn webhook_child(s: &Inner, webhook: i64, child: &str, v: &Value) -> Written {
    let mut d = write_lock(s);
    if !d.webhooks.iter().any(|w| w.id == webhook) {
        return Err(invalid(&[&format!(
            "TicketWebhook {webhook} does not exist"
        )]));
    }
    if int(v, "webhookID").is_some_and(|w| w != webhook) {
        return Err(invalid(&["webhookID does not match the parent webhook"]));
    }
    if child.eq_ignore_ascii_case("Fields") {
        let Some(field) = int(v, "fieldID") else {
            return Err(invalid(&["Missing Required Field: fieldID"]));
        };
        if !WEBHOOK_FIELDS.iter().any(|(f, _, _)| *f == field) {
            return Err(invalid(&[&format!(
                "Value {field} of field fieldID is not a valid picklist value"
            )]));
        }
        if d.webhook_fields
            .iter()
            .any(|f| f.webhook_id == webhook && f.field_id == field)
        {
            return Err(invalid(&["This field is already on the webhook"]));
        }
        let id = d.webhook_fields.iter().map(|f| f.id).max().unwrap_or(0) + 1;
        d.webhook_fields.push(TicketWebhookField {
            id,
            webhook_id: webhook,
            field_id: field,
            is_subscribed_field: flag(v, "isSubscribedField").unwrap_or(false),
            is_display_always_field: flag(v, "isDisplayAlwaysField").unwrap_or(false),
        });
        return Ok((id, None));
    }
    if child.eq_ignore_ascii_case("ExcludedResources") {
        let Some(resource) =
            int(v, "resourceID").filter(|r| d.resources.iter().any(|x| x.id == *r))
        else {
            return Err(invalid(&["Value of field resourceID does not exist"]));
        };
        if d.webhook_excluded
            .iter()
            .any(|e| e.webhook_id == webhook && e.resource_id == resource)
        {
            return Err(invalid(&["This resource is already excluded"]));
        }
        let id = d.webhook_excluded.iter().map(|f| f.id).max().unwrap_or(0) + 1;
        d.webhook_excluded.push(TicketWebhookExcludedResource {
            id,
            webhook_id: webhook,
            resource_id: resource,
        });
        return Ok((id, None));
    }
    Err(Box::new(errors(
        StatusCode::NOT_FOUND,
        &[&format!("TicketWebhooks/{{id}}/{child} is not supported")],
    )))
}

/// A delivery's body: Autotask's `Action`, `Guid`, `EntityType`, `Id`, the changed
/// `Fields` with their values, `EventTime`, `SequenceNumber` and `PersonID`.
fn delivery_body(
    s: &Inner,
    d: &AutotaskData,
    webhook: i64,
    action: &str,
    ticket: i64,
    fields: &[&str],
    actor: i64,
) -> Vec<u8> {
    let guid = d
        .webhooks
        .iter()
        .find(|w| w.id == webhook)
        .map(|w| w.guid.clone())
        .unwrap_or_default();
    let row = d
        .tickets
        .iter()
        .find(|t| t.id == ticket)
        .and_then(|t| serde_json::to_value(t).ok())
        .unwrap_or(Value::Null);
    let changed: serde_json::Map<String, Value> = fields
        .iter()
        .map(|f| {
            (
                f.to_string(),
                field_of(&row, f).cloned().unwrap_or(Value::Null),
            )
        })
        .collect();
    let body = json!({
        "Action": action,
        "Guid": guid,
        "EntityType": "Ticket",
        "Id": ticket,
        "Fields": changed,
        "EventTime": at_time::format(Utc::now()),
        "SequenceNumber": s.sequence.fetch_add(1, Ordering::Relaxed) + 1,
        "PersonID": actor,
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Posts `c` to every active, ready webhook subscribed to it whose excluded resources do
/// not hold the one who made the change, signed with its secret, in the background.
fn deliver(s: &Inner, c: Change) {
    let d = read(s);
    for w in d.webhooks.iter().filter(|w| w.is_active && w.is_ready) {
        let subscribed = match c.action {
            "Create" => w.is_subscribed_to_create_events,
            "Delete" => w.is_subscribed_to_delete_events,
            _ => {
                w.is_subscribed_to_update_events
                    && d.webhook_fields.iter().any(|f| {
                        f.webhook_id == w.id
                            && f.is_subscribed_field
                            && WEBHOOK_FIELDS
                                .iter()
                                .any(|(id, _, api)| *id == f.field_id && c.fields.contains(api))
                    })
            }
        };
        let excluded = d
            .webhook_excluded
            .iter()
            .any(|e| e.webhook_id == w.id && e.resource_id == c.actor);
        if !subscribed || excluded {
            continue;
        }
        let body = delivery_body(s, &d, w.id, c.action, c.ticket, &c.fields, c.actor);
        let signature = super::webhooks::sign(&w.secret_key, &body);
        let req = reqwest::Client::new()
            .post(&w.webhook_url)
            .header(header::CONTENT_TYPE, "application/json")
            .header("X-Hook-Signature", signature)
            .body(body);
        if !deliver_in_background(req, &s.deliveries, "Autotask webhook") {
            return;
        }
    }
}

async fn sandbox_status(
    State(s): State<Arc<Inner>>,
    Path(id): Path<i64>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let label = q.get("label").cloned().unwrap_or_default();
    if set_status(&s, id, &label) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        errors(StatusCode::NOT_FOUND, &["no such ticket or status"])
    }
}

async fn sandbox_note(
    State(s): State<Arc<Inner>>,
    Path(id): Path<i64>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let text = q.get("text").cloned().unwrap_or_default();
    let internal = q.get("internal").is_some_and(|v| v == "true" || v == "1");
    let tech = read(&s).technician();
    let note =
        json!({"title": "Update", "description": text, "publish": if internal { 2 } else { 1 }});
    match add_note(&s, id, note, tech) {
        Ok(n) => axum::Json(json!({ "id": n })).into_response(),
        Err(r) => *r,
    }
}
