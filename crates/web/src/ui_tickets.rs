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
}

struct Line {
    id: i64,
    summary: String,
    company: String,
    status: String,
    board: String,
    closed: bool,
    removed: bool,
    updated: String,
}

#[derive(Template)]
#[template(path = "tickets.html")]
struct ListPage {
    shell: Shell,
    lines: Vec<Line>,
    companies: Vec<(i64, String)>,
    open_only: bool,
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
    can_write: bool,
    error: Option<String>,
}

fn ts(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

#[derive(Deserialize, Default)]
struct ListQuery {
    #[serde(default)]
    all: Option<String>,
}

async fn list(
    state: &AppState,
    c: &crate::auth::Caller,
    open_only: bool,
    error: Option<String>,
) -> Result<ListPage, ApiError> {
    c.require(Permission::Read)?;
    let companies: HashMap<i64, String> = state
        .store
        .list_companies(c.tenant_id)
        .await?
        .into_iter()
        .map(|x| (x.id.0, x.name))
        .collect();
    let tickets = state
        .store
        .list_tickets(c.tenant_id, None, open_only.then_some(false), None, 200)
        .await?;
    let lines = tickets
        .into_iter()
        .map(|t| Line {
            id: t.id.0,
            company: companies.get(&t.company_id.0).cloned().unwrap_or_default(),
            summary: t.summary,
            status: t.status,
            board: t.board.unwrap_or_default(),
            closed: t.closed,
            removed: t.removed_upstream_at.is_some(),
            updated: ts(t.updated_at),
        })
        .collect();
    let mut companies: Vec<(i64, String)> = companies.into_iter().collect();
    companies.sort_by_key(|c| c.1.to_lowercase());
    Ok(ListPage {
        shell: shell(state, c).await?,
        lines,
        companies,
        open_only,
        can_write: c.role.allows(Permission::Write),
        error,
    })
}

async fn list_page(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Query(q): Query<ListQuery>,
) -> Response {
    match list(&state, &c, q.all.is_none(), None).await {
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
        Err(e @ ApiError::Validation(_)) => match list(&state, &c, true, Some(e.to_string())).await
        {
            Ok(p) => render(p, StatusCode::UNPROCESSABLE_ENTITY),
            Err(e) => error_page(e),
        },
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
