//! Ticket pages: the list (imported from PSAs and raised here) with a "New ticket" form,
//! and a ticket with its notes, status and writes to the PSA (pending, done, refused with
//! the PSA's message and a Retry). Forms call the same services as the JSON API.

use std::collections::HashMap;

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use mspbridge_domain::TicketId;
use mspbridge_domain::auth::Permission;
use mspbridge_domain::model::{Ticket, TicketNote};
use serde::Deserialize;

use crate::AppState;
use crate::error::ApiError;
use crate::tickets_api::{
    self, NewNoteBody, NewTicketBody, PsaWrite, StatusBody, WriteAction, act_on_write,
};
use crate::ui::{Shell, UiCaller, error_page, render, shell};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/tickets", get(list_page).post(create_form))
        .route("/tickets/{id}", get(ticket_page))
        .route("/tickets/{id}/{action}", post(ticket_form))
        .route("/tickets/{id}/writes/{write}/{action}", post(write_form))
        .route("/attention", get(attention_page))
        .route("/attention/{write}/{action}", post(attention_form))
}

struct Line {
    id: i64,
    summary: String,
    company: String,
    status: String,
    board: String,
    closed: bool,
    removed: bool,
    /// The PSA the ticket lives in and its number there ("" when portal only).
    psa: String,
    number: String,
    assignee: String,
    contact: String,
    created: String,
    updated: String,
}

#[derive(Template)]
#[template(path = "tickets.html")]
struct ListPage {
    shell: Shell,
    lines: Vec<Line>,
    companies: Vec<(i64, String)>,
    /// (integration id, name) for the PSA filter.
    psas: Vec<(i64, String)>,
    statuses: Vec<String>,
    f: ListQuery,
    /// The filters as a query string (for the paging links).
    f_query: String,
    count_label: String,
    page: usize,
    pages: usize,
    /// Tickets in the tenant at all (the empty state when none).
    any: bool,
    can_write: bool,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "ticket.html")]
struct TicketPage {
    shell: Shell,
    ticket: Ticket,
    company: String,
    notes: Vec<TicketNote>,
    psa: Option<String>,
    external_id: Option<String>,
    writes: Vec<PsaWrite>,
    /// The five stages, each with whether it is the ticket's, done, or ahead.
    stages: Vec<(&'static str, &'static str)>,
    /// The company's users a note can be written for (a client's comment), by id and name.
    clients: Vec<(i64, String)>,
    /// The status a client's comment sets (the ticket's integration's option).
    client_comment_status: Option<String>,
    /// The statuses the ticket's PSA has (the vocabulary its integration stored); empty:
    /// unknown, the status is typed.
    statuses: Vec<String>,
    can_write: bool,
    error: Option<String>,
}

fn ts(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

#[derive(Deserialize, Default, Clone)]
struct ListQuery {
    /// `open` (default), `closed` or `all`; `all=1` (older links) is `all`.
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    all: Option<String>,
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    company: String,
    #[serde(default)]
    psa: String,
    #[serde(default)]
    page: Option<usize>,
}

impl ListQuery {
    fn state(&self) -> &str {
        match (self.state.as_deref(), self.all.is_some()) {
            (Some(s @ ("open" | "closed" | "all")), _) => s,
            (_, true) => "all",
            _ => "open",
        }
    }
}

/// Tickets the list filters over (newest first); beyond it, narrow by company.
const TICKET_SCAN: i64 = 5000;

async fn list(
    state: &AppState,
    c: &crate::auth::Caller,
    f: ListQuery,
    error: Option<String>,
) -> Result<ListPage, ApiError> {
    c.require(Permission::Read)?;
    let t = c.tenant_id;
    let companies: HashMap<i64, String> = state
        .store
        .list_companies(t)
        .await?
        .into_iter()
        .map(|x| (x.id.0, x.name))
        .collect();
    let psas: Vec<(i64, String)> = state
        .store
        .list_integrations(t)
        .await?
        .into_iter()
        .map(|i| (i.id.0, i.display_name().to_string()))
        .collect();
    let links: HashMap<i64, (i64, String)> = state
        .store
        .links_of_kind(t, mspbridge_domain::model::LinkedRecord::Ticket)
        .await?
        .into_iter()
        .map(|l| (l.local_id, (l.integration_id.0, l.external_id)))
        .collect();
    // Tickets written to a PSA but not linked yet (pending or refused writes).
    let mut queued: HashMap<i64, i64> = HashMap::new();
    for st in ["pending", "failed"] {
        for o in state
            .store
            .list_outbox(t, Some(st), crate::ui::ATTENTION_LIMIT)
            .await?
        {
            queued.insert(o.ticket_id.0, o.integration_id.0);
        }
    }
    let staff: HashMap<i64, String> = state
        .store
        .list_staff_users(t)
        .await?
        .into_iter()
        .map(|u| (u.id.0, u.name))
        .collect();
    let company_filter = f.company.parse::<i64>().ok();
    let closed = match f.state() {
        "open" => Some(false),
        "closed" => Some(true),
        _ => None,
    };
    let all = state
        .store
        .list_tickets(
            t,
            company_filter.map(mspbridge_domain::CompanyId),
            closed,
            None,
            TICKET_SCAN,
        )
        .await?;
    let any = !all.is_empty()
        || !state
            .store
            .list_tickets(t, None, None, None, 1)
            .await?
            .is_empty();
    let mut statuses: Vec<String> = all.iter().map(|t| t.status.clone()).collect();
    statuses.sort_by_key(|s| s.to_lowercase());
    statuses.dedup();
    let psa_filter = f.psa.parse::<i64>().ok();
    let needle = f.q.trim().to_lowercase();
    let found: Vec<Ticket> = all
        .into_iter()
        .filter(|x| f.status.is_empty() || x.status == f.status)
        .filter(|x| match psa_filter {
            None => true,
            Some(p) => {
                links.get(&x.id.0).is_some_and(|l| l.0 == p) || queued.get(&x.id.0) == Some(&p)
            }
        })
        .filter(|x| {
            needle.is_empty()
                || x.summary.to_lowercase().contains(&needle)
                || x.id.0.to_string() == needle
                || links
                    .get(&x.id.0)
                    .is_some_and(|l| l.1.to_lowercase() == needle.trim_start_matches('#'))
        })
        .collect();
    let size = crate::ui_sync::PAGE_SIZE;
    let pages = found.len().div_ceil(size).max(1);
    let page = f.page.unwrap_or(1).clamp(1, pages);
    let shown: Vec<Ticket> = found
        .iter()
        .skip((page - 1) * size)
        .take(size)
        .cloned()
        .collect();
    // Contacts: the users of the companies on this page.
    let mut contacts: HashMap<i64, String> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for x in &shown {
        if x.contact_id.is_some() && seen.insert(x.company_id.0) {
            for u in state.store.list_company_users(t, x.company_id).await? {
                let name = format!("{} {}", u.first_name, u.last_name);
                contacts.insert(u.id.0, name.trim().to_string());
            }
        }
    }
    let psa_name = |i: i64| {
        psas.iter()
            .find(|p| p.0 == i)
            .map(|p| p.1.clone())
            .unwrap_or_default()
    };
    let lines = shown
        .into_iter()
        .map(|x| {
            let link = links.get(&x.id.0);
            Line {
                id: x.id.0,
                company: companies.get(&x.company_id.0).cloned().unwrap_or_default(),
                psa: link
                    .map(|l| l.0)
                    .or_else(|| queued.get(&x.id.0).copied())
                    .map(psa_name)
                    .unwrap_or_default(),
                number: link.map(|l| l.1.clone()).unwrap_or_default(),
                assignee: x
                    .assignee_id
                    .and_then(|a| staff.get(&a.0).cloned())
                    .unwrap_or_default(),
                contact: x
                    .contact_id
                    .and_then(|u| contacts.get(&u.0).cloned())
                    .unwrap_or_default(),
                summary: x.summary,
                status: x.status,
                board: x.board.unwrap_or_default(),
                closed: x.closed,
                removed: x.removed_upstream_at.is_some(),
                created: ts(x.created_at),
                updated: ts(x.updated_at),
            }
        })
        .collect();
    let mut companies: Vec<(i64, String)> = companies.into_iter().collect();
    companies.sort_by_key(|c| c.1.to_lowercase());
    let noun = match f.state() {
        "open" => ("open ticket", "open tickets"),
        "closed" => ("closed ticket", "closed tickets"),
        _ => ("ticket", "tickets"),
    };
    let f_query = format!(
        "state={}&q={}&status={}&company={}&psa={}",
        f.state(),
        crate::ui::query_encode(&f.q),
        crate::ui::query_encode(&f.status),
        crate::ui::query_encode(&f.company),
        crate::ui::query_encode(&f.psa)
    );
    Ok(ListPage {
        shell: shell(state, c).await?,
        count_label: crate::ui::plural(found.len(), noun.0, noun.1),
        lines,
        companies,
        psas,
        statuses,
        f,
        f_query,
        page,
        pages,
        any,
        can_write: c.role.allows(Permission::Write),
        error,
    })
}

async fn list_page(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Query(q): Query<ListQuery>,
) -> Response {
    match list(&state, &c, q, None).await {
        Ok(p) => render(p, StatusCode::OK),
        Err(e) => error_page(e),
    }
}

fn field<'a>(form: &'a HashMap<String, String>, name: &str) -> &'a str {
    form.get(name).map(String::as_str).unwrap_or_default()
}

async fn create_form(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    let done = async {
        c.check_csrf(form.get("csrf").map(String::as_str))?;
        let company_id = field(&form, "company_id")
            .parse::<i64>()
            .map_err(|_| ApiError::field("company_id", "choose a company"))?;
        let body = NewTicketBody {
            company_id,
            summary: field(&form, "summary").to_string(),
            description: field(&form, "description").to_string(),
        };
        tickets_api::create_service(&state, &c, &body).await
    };
    match done.await {
        Ok(id) => Redirect::to(&format!("/tickets/{}", id.0)).into_response(),
        Err(e @ ApiError::Validation(_)) => {
            match list(&state, &c, ListQuery::default(), Some(e.to_string())).await {
                Ok(p) => render(p, StatusCode::UNPROCESSABLE_ENTITY),
                Err(e) => error_page(e),
            }
        }
        Err(e) => error_page(e),
    }
}

async fn detail(
    state: &AppState,
    c: &crate::auth::Caller,
    raw: &str,
    error: Option<String>,
) -> Result<TicketPage, ApiError> {
    c.require(Permission::Read)?;
    let id = crate::api::path_id(raw, "id", "a ticket id").map(TicketId)?;
    let v = tickets_api::view(state, c, id).await?;
    let company = state
        .store
        .get_company(c.tenant_id, v.ticket.company_id)
        .await?
        .name;
    let psa = match v.integration_id {
        Some(i) => Some(
            state
                .store
                .get_integration(c.tenant_id, mspbridge_domain::IntegrationId(i))
                .await?
                .provider
                .descriptor()
                .name
                .to_string(),
        ),
        None => None,
    };
    let mut statuses = match v.integration_id {
        Some(i) => state
            .store
            .vocabulary(c.tenant_id, mspbridge_domain::IntegrationId(i))
            .await?
            .and_then(|v| v.tickets)
            .map(|t| t.statuses)
            .unwrap_or_default(),
        None => vec![],
    };
    if !statuses.is_empty() && !statuses.iter().any(|s| s == &v.ticket.status) {
        statuses.insert(0, v.ticket.status.clone());
    }
    let client_comment_status = match v.integration_id {
        Some(i) => {
            state
                .store
                .sync_options(c.tenant_id, mspbridge_domain::IntegrationId(i))
                .await?
                .ticket_client_comment_status
        }
        None => None,
    };
    let clients = state
        .store
        .list_company_users(c.tenant_id, v.ticket.company_id)
        .await?
        .into_iter()
        .filter(|u| u.status != mspbridge_domain::model::UserStatus::Disabled)
        .map(|u| {
            let name = format!("{} {}", u.first_name, u.last_name);
            (u.id.0, name.trim().to_string())
        })
        .collect();
    Ok(TicketPage {
        shell: shell(state, c).await?,
        ticket: v.ticket,
        company,
        notes: v.notes,
        psa,
        external_id: v.external_id,
        writes: v.psa_writes,
        stages: mspbridge_domain::sync::Stage::ALL
            .into_iter()
            .map(|s| {
                let state = match s.cmp(&v.stage) {
                    std::cmp::Ordering::Less => "done",
                    std::cmp::Ordering::Equal => "current",
                    std::cmp::Ordering::Greater => "ahead",
                };
                (s.label(), state)
            })
            .collect(),
        clients,
        client_comment_status,
        statuses,
        can_write: c.role.allows(Permission::Write),
        error,
    })
}

async fn ticket_page(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Path(raw): Path<String>,
) -> Response {
    match detail(&state, &c, &raw, None).await {
        Ok(p) => render(p, StatusCode::OK),
        Err(e) => error_page(e),
    }
}

/// Runs a ticket form and goes back to the ticket, or shows the page with the error.
async fn after_form(
    state: &AppState,
    c: &crate::auth::Caller,
    raw: &str,
    result: Result<(), ApiError>,
) -> Response {
    match result {
        Ok(()) => Redirect::to(&format!("/tickets/{raw}")).into_response(),
        Err(e @ (ApiError::Validation(_) | ApiError::Conflict(_))) => {
            match detail(state, c, raw, Some(e.to_string())).await {
                Ok(p) => render(p, StatusCode::UNPROCESSABLE_ENTITY),
                Err(e) => error_page(e),
            }
        }
        Err(e) => error_page(e),
    }
}

/// The ticket page's forms: `notes` (add a note) and `status` (change the status).
async fn ticket_form(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Path((raw, action)): Path<(String, String)>,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    let done = async {
        c.check_csrf(form.get("csrf").map(String::as_str))?;
        let id = crate::api::path_id(&raw, "id", "a ticket id").map(TicketId)?;
        match action.as_str() {
            "notes" => {
                let body = NewNoteBody {
                    text: field(&form, "text").to_string(),
                    internal: form.contains_key("internal"),
                    client_user_id: match field(&form, "client_user_id") {
                        "" => None,
                        v => Some(v.parse::<i64>().map_err(|_| {
                            ApiError::field("client_user_id", "must be a user of the company")
                        })?),
                    },
                };
                tickets_api::note_service(&state, &c, id, &body).await
            }
            "status" => {
                let body = StatusBody {
                    status: field(&form, "status").to_string(),
                    closed: form.contains_key("closed"),
                };
                tickets_api::status_service(&state, &c, id, &body).await
            }
            _ => Err(ApiError::NotFound),
        }
    };
    let r = done.await;
    after_form(&state, &c, &raw, r).await
}

/// Retry or Discard a failed write.
async fn write_form(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Path((raw, write, action)): Path<(String, String, String)>,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    let done = async {
        c.check_csrf(form.get("csrf").map(String::as_str))?;
        let action = WriteAction::parse(&action).ok_or(ApiError::NotFound)?;
        act_on_write(&state, &c, &write, action).await?;
        Ok(())
    };
    let r = done.await;
    after_form(&state, &c, &raw, r).await
}

struct AttentionLine {
    id: i64,
    ticket_id: i64,
    summary: String,
    company: String,
    psa: String,
    what: &'static str,
    /// A status changed on both sides (held until Retry writes it anyway).
    conflict: bool,
    message: String,
    attempts: i32,
    updated: String,
}

#[derive(Template)]
#[template(path = "attention.html")]
struct AttentionPage {
    shell: Shell,
    lines: Vec<AttentionLine>,
    count_label: String,
    can_write: bool,
    flash: Option<String>,
    /// Said when more failed writes exist than the page lists.
    more: Option<String>,
}

#[derive(Deserialize, Default)]
struct AttentionQuery {
    #[serde(default)]
    done: Option<String>,
}

/// Attention: every write to a PSA that failed or is held as a conflict, across tickets,
/// with Retry and Discard (the ticket page's service).
async fn attention_page(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Query(q): Query<AttentionQuery>,
) -> Response {
    let page = async {
        c.require(Permission::Read)?;
        let (items, total) = state
            .store
            .list_outbox_page(c.tenant_id, Some("failed"), 0, crate::ui::ATTENTION_LIMIT)
            .await?;
        let companies: HashMap<i64, String> = state
            .store
            .list_companies(c.tenant_id)
            .await?
            .into_iter()
            .map(|x| (x.id.0, x.name))
            .collect();
        let psas: HashMap<i64, String> = state
            .store
            .list_integrations(c.tenant_id)
            .await?
            .into_iter()
            .map(|i| (i.id.0, i.display_name().to_string()))
            .collect();
        let mut tickets: HashMap<i64, (String, String)> = HashMap::new();
        let mut lines = Vec::with_capacity(items.len());
        for o in items {
            let t = match tickets.get(&o.ticket_id.0) {
                Some(t) => t.clone(),
                None => {
                    let t = state.store.get_ticket(c.tenant_id, o.ticket_id).await?;
                    let v = (
                        t.summary,
                        companies.get(&t.company_id.0).cloned().unwrap_or_default(),
                    );
                    tickets.insert(o.ticket_id.0, v.clone());
                    v
                }
            };
            let message = o.last_error.unwrap_or_default();
            lines.push(AttentionLine {
                id: o.id,
                ticket_id: o.ticket_id.0,
                summary: t.0,
                company: t.1,
                psa: psas.get(&o.integration_id.0).cloned().unwrap_or_default(),
                what: match o.op.as_str() {
                    "create_ticket" => "Create the ticket",
                    "add_note" => "Add a note",
                    _ => "Change the status",
                },
                conflict: message.starts_with("conflict"),
                message,
                attempts: o.attempts,
                updated: ts(o.updated_at),
            });
        }
        let flash = match q.done.as_deref() {
            Some("retry") => Some("Queued again: the worker writes it to the PSA within seconds.".to_string()),
            Some("discard") => Some("Discarded: the PSA keeps what it has; a discarded status change gives the ticket back the PSA's status.".to_string()),
            _ => None,
        };
        Ok::<_, ApiError>(AttentionPage {
            shell: shell(&state, &c).await?,
            count_label: crate::ui::plural(total.max(0) as usize, "write needs", "writes need"),
            more: (total > lines.len() as i64).then(|| {
                format!(
                    "The oldest {} are not listed here: retry or discard these first, or read them all with GET /api/v1/outbox?state=failed (paged).",
                    total - lines.len() as i64
                )
            }),
            lines,
            can_write: c.role.allows(Permission::Write),
            flash,
        })
    };
    match page.await {
        Ok(p) => render(p, StatusCode::OK),
        Err(e) => error_page(e),
    }
}

/// Retry or Discard from the Attention page.
async fn attention_form(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Path((write, action)): Path<(String, String)>,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    let done = async {
        c.check_csrf(form.get("csrf").map(String::as_str))?;
        let parsed = WriteAction::parse(&action).ok_or(ApiError::NotFound)?;
        act_on_write(&state, &c, &write, parsed).await?;
        Ok::<_, ApiError>(())
    };
    match done.await {
        Ok(()) => Redirect::to(&format!("/attention?done={action}")).into_response(),
        Err(e) => error_page(e),
    }
}
