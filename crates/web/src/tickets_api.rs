//! Tickets raised and worked in the portal, under `/api/v1/tickets`, and the outbox that
//! carries them to the company's PSA (`/api/v1/outbox`). A change is saved and queued in
//! one transaction; the sync worker writes it to the PSA (see `mspbridge_sync::outbox`),
//! and a write the PSA refused stays listed with the vendor's message until retried.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use mspbridge_domain::auth::Permission;
use mspbridge_domain::integration::IntegrationStatus;
use mspbridge_domain::model::{LinkedRecord, Ticket, TicketNote};
use mspbridge_domain::{CompanyId, IntegrationId, TicketId};
use mspbridge_providers::tickets::NewVendorTicket;
use mspbridge_store::NewTicket;
use mspbridge_store::outbox::{OutboxItem, Outgoing, StatusChange};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::api::{ApiJson, path_id};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiQuery;
use crate::mapping_api::actor;

/// The longest summary the portal takes (a PSA with a shorter limit gets it cut, with the
/// whole text in the description).
pub const SUMMARY_MAX: usize = 200;
pub const TEXT_MAX: usize = 20_000;

/// A write waiting for, or done in, the PSA.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PsaWrite {
    pub id: i64,
    pub integration_id: i64,
    /// `create_ticket`, `add_note` or `set_status`.
    pub op: String,
    /// `pending`, `done` or `failed`.
    pub state: String,
    pub attempts: i32,
    /// The PSA's message when the last attempt failed.
    pub last_error: Option<String>,
    /// The PSA's id of what was written.
    pub external_id: Option<String>,
    pub ticket_id: i64,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<OutboxItem> for PsaWrite {
    fn from(o: OutboxItem) -> Self {
        PsaWrite {
            id: o.id,
            integration_id: o.integration_id.0,
            op: o.op.as_str().into(),
            state: o.state,
            attempts: o.attempts,
            last_error: o.last_error,
            external_id: o.external_id,
            ticket_id: o.ticket_id.0,
            created_at: o.created_at,
            updated_at: o.updated_at,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TicketView {
    pub ticket: Ticket,
    pub notes: Vec<TicketNote>,
    /// The PSA this ticket is written to, if its company is linked to one that takes
    /// tickets from the portal.
    pub integration_id: Option<i64>,
    /// The ticket's id in that PSA, once it exists there.
    pub external_id: Option<String>,
    /// Where the ticket is on the five-stage resolution stepper (its status placed by the
    /// integration's `ticket_stages`, else by the default rules).
    pub stage: mspbridge_domain::sync::Stage,
    pub psa_writes: Vec<PsaWrite>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTicketBody {
    pub company_id: i64,
    pub summary: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewNoteBody {
    pub text: String,
    /// Internal notes are for staff only (ConnectWise: internal analysis).
    #[serde(default)]
    pub internal: bool,
    /// The client portal user (a user of the ticket's company) who wrote this comment,
    /// when the portal posts it for them: the note is client-visible, theirs, and the
    /// ticket takes its integration's Client Comment Status.
    #[serde(default)]
    pub client_user_id: Option<i64>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusBody {
    /// The PSA's status name ("In Progress", "Completed", …).
    pub status: String,
    #[serde(default)]
    pub closed: bool,
}

fn marker() -> Result<String, ApiError> {
    let (_, hash) =
        mspbridge_vault::new_token("msb").map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(format!(
        "{}{}",
        mspbridge_providers::tickets::MARKER_PREFIX,
        &hash[..24]
    ))
}

fn text(field: &str, v: &str, max: usize) -> Result<String, ApiError> {
    let v = v.trim();
    if v.is_empty() {
        return Err(ApiError::field(field, "must not be empty"));
    }
    if v.chars().count() > max {
        return Err(ApiError::field(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(v.to_string())
}

/// The PSA integration that takes this company's tickets: the first connected
/// integration, by id, that links the company and writes tickets, with its link.
async fn psa_for(
    state: &AppState,
    caller: &Caller,
    company: CompanyId,
) -> Result<Option<(mspbridge_domain::integration::Integration, String)>, ApiError> {
    for i in state.store.list_integrations(caller.tenant_id).await? {
        if i.status == IntegrationStatus::Disconnected
            || !state.providers.writes_tickets(i.provider)
        {
            continue;
        }
        if let Some(link) = state
            .store
            .find_local_link(caller.tenant_id, i.id, LinkedRecord::Company, company.0)
            .await?
        {
            return Ok(Some((i, link.external_id)));
        }
    }
    Ok(None)
}

/// The PSA integration a ticket's changes go to: the one its ticket is linked to (imported
/// from it, or already written to it), else the one that takes its company's tickets; with
/// the ticket's id there once it exists.
async fn psa_for_ticket(
    state: &AppState,
    caller: &Caller,
    ticket: &Ticket,
) -> Result<Option<(mspbridge_domain::integration::Integration, Option<String>)>, ApiError> {
    for i in state.store.list_integrations(caller.tenant_id).await? {
        if i.status == IntegrationStatus::Disconnected
            || !state.providers.writes_tickets(i.provider)
        {
            continue;
        }
        if let Some(link) = state
            .store
            .find_local_link(caller.tenant_id, i.id, LinkedRecord::Ticket, ticket.id.0)
            .await?
        {
            return Ok(Some((i, Some(link.external_id))));
        }
    }
    Ok(psa_for(state, caller, ticket.company_id)
        .await?
        .map(|(i, _)| (i, None)))
}

pub(crate) async fn view(
    state: &AppState,
    caller: &Caller,
    id: TicketId,
) -> Result<TicketView, ApiError> {
    let ticket = state.store.get_ticket(caller.tenant_id, id).await?;
    let notes = state.store.list_ticket_notes(caller.tenant_id, id).await?;
    let psa_writes: Vec<PsaWrite> = state
        .store
        .list_outbox_for_ticket(caller.tenant_id, id)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    let (integration_id, external_id) = match psa_writes.first() {
        Some(w) => (
            Some(w.integration_id),
            state
                .store
                .find_local_link(
                    caller.tenant_id,
                    IntegrationId(w.integration_id),
                    LinkedRecord::Ticket,
                    id.0,
                )
                .await?
                .map(|l| l.external_id),
        ),
        None => match psa_for_ticket(state, caller, &ticket).await? {
            Some((i, ext)) => (Some(i.id.0), ext),
            None => (None, None),
        },
    };
    let rules = match integration_id {
        Some(i) => {
            state
                .store
                .sync_options(caller.tenant_id, IntegrationId(i))
                .await?
                .ticket_stages
        }
        None => vec![],
    };
    let stage = mspbridge_domain::sync::stage_of(&ticket.status, ticket.closed, &rules);
    Ok(TicketView {
        stage,
        ticket,
        notes,
        integration_id,
        external_id,
        psa_writes,
    })
}

/// Creates a ticket in the portal; when the company is linked to a PSA that takes
/// tickets, it is queued for that PSA with the integration's ticket defaults.
#[utoipa::path(post, path = "/api/v1/tickets", tag = "tickets", request_body = NewTicketBody,
    responses((status = 201, body = TicketView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_ticket(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewTicketBody>,
) -> Result<(StatusCode, Json<TicketView>), ApiError> {
    let id = create_service(&state, &caller, &body).await?;
    Ok((StatusCode::CREATED, Json(view(&state, &caller, id).await?)))
}

/// Creates a ticket (API and form): queued for the company's PSA when there is one.
pub async fn create_service(
    state: &AppState,
    caller: &Caller,
    body: &NewTicketBody,
) -> Result<TicketId, ApiError> {
    caller.require(Permission::Write)?;
    let summary = text("summary", &body.summary, SUMMARY_MAX)?;
    let description = body.description.trim().to_string();
    if description.chars().count() > TEXT_MAX {
        return Err(ApiError::field(
            "description",
            format!("must be at most {TEXT_MAX} characters"),
        ));
    }
    let company = CompanyId(body.company_id);
    let new = NewTicket {
        company_id: company,
        summary: summary.clone(),
        description: description.clone(),
        status: "New".into(),
        priority: None,
    };
    let now = state.now();
    let ticket = match psa_for(state, caller, company).await? {
        None => {
            state
                .store
                .create_ticket(caller.tenant_id, new, now)
                .await?
        }
        Some((i, company_external_id)) => {
            let options = state.store.sync_options(caller.tenant_id, i.id).await?;
            let marker = marker()?;
            let payload = NewVendorTicket {
                company_external_id,
                summary,
                description,
                marker: marker.clone(),
                defaults: options.ticket_defaults,
            };
            let out = Outgoing {
                integration: i.id,
                marker,
                payload: serde_json::to_value(&payload)
                    .map_err(|e| ApiError::Internal(e.to_string()))?,
            };
            let (t, outbox) = state
                .store
                .create_ticket_outboxed(caller.tenant_id, new, out, now)
                .await?;
            tracing::info!(tenant_id = %caller.tenant_id, integration_id = %i.id, ticket_id = t.id.0, outbox_id = outbox, "ticket queued for the PSA");
            t
        }
    };
    Ok(ticket.id)
}

/// A ticket with its notes and its writes to the PSA.
#[utoipa::path(get, path = "/api/v1/tickets/{id}", tag = "tickets",
    params(("id" = i64, Path)), responses((status = 200, body = TicketView), (status = 404, body = ErrorBody)))]
pub async fn get_ticket(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<TicketView>, ApiError> {
    caller.require(Permission::Read)?;
    let id = path_id(&raw, "id", "a ticket id").map(TicketId)?;
    Ok(Json(view(&state, &caller, id).await?))
}

/// Adds a note (internal or for the client); queued for the PSA with the ticket.
#[utoipa::path(post, path = "/api/v1/tickets/{id}/notes", tag = "tickets", request_body = NewNoteBody,
    params(("id" = i64, Path)),
    responses((status = 201, body = TicketView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn add_note(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<NewNoteBody>,
) -> Result<(StatusCode, Json<TicketView>), ApiError> {
    let id = path_id(&raw, "id", "a ticket id").map(TicketId)?;
    note_service(&state, &caller, id, &body).await?;
    Ok((StatusCode::CREATED, Json(view(&state, &caller, id).await?)))
}

/// Adds a note (API and form), queued for the ticket's PSA when there is one.
pub async fn note_service(
    state: &AppState,
    caller: &Caller,
    id: TicketId,
    body: &NewNoteBody,
) -> Result<(), ApiError> {
    caller.require(Permission::Write)?;
    let body_text = text("text", &body.text, TEXT_MAX)?;
    let ticket = state.store.get_ticket(caller.tenant_id, id).await?;
    let author = match body.client_user_id {
        None => actor(caller),
        Some(user) => client_author(state, caller, &ticket, user, body.internal).await?,
    };
    let now = state.now();
    match psa_for_ticket(state, caller, &ticket)
        .await?
        .map(|(i, _)| i)
    {
        None => {
            state
                .store
                .add_ticket_note(
                    caller.tenant_id,
                    id,
                    &body_text,
                    body.internal,
                    &author,
                    now,
                )
                .await?;
        }
        Some(i) => {
            let out = Outgoing {
                integration: i.id,
                marker: marker()?,
                payload: serde_json::json!({"text": body_text, "internal": body.internal}),
            };
            // A client's comment sets the Client Comment Status (spec 2.5), queued after
            // the note in the same transaction; a ticket already in it is left alone.
            let then_status = match body.client_user_id {
                None => None,
                Some(_) => {
                    let options = state.store.sync_options(caller.tenant_id, i.id).await?;
                    match options.ticket_client_comment_status.clone() {
                        Some(status) if !status.eq_ignore_ascii_case(&ticket.status) => {
                            Some(StatusChange {
                                closed: options.is_closed_status(&status),
                                out: Outgoing {
                                    integration: i.id,
                                    marker: marker()?,
                                    payload: serde_json::json!({"status": status, "base": ticket.psa_status}),
                                },
                                status,
                            })
                        }
                        _ => None,
                    }
                }
            };
            state
                .store
                .add_note_outboxed(
                    caller.tenant_id,
                    id,
                    &body_text,
                    body.internal,
                    &author,
                    out,
                    then_status,
                    now,
                )
                .await?;
        }
    }
    Ok(())
}

/// The author of a client's comment: a user of the ticket's company; refused for an
/// internal note (a client's comment is client-visible).
async fn client_author(
    state: &AppState,
    caller: &Caller,
    ticket: &Ticket,
    user: i64,
    internal: bool,
) -> Result<String, ApiError> {
    if internal {
        return Err(ApiError::field(
            "internal",
            "a client's comment is client-visible: it cannot be internal",
        ));
    }
    let users = state
        .store
        .list_company_users(caller.tenant_id, ticket.company_id)
        .await?;
    let u = users.iter().find(|u| u.id.0 == user).ok_or_else(|| {
        ApiError::field(
            "client_user_id",
            format!("user {user} is not a user of this ticket's company"),
        )
    })?;
    if u.status == mspbridge_domain::model::UserStatus::Disabled {
        return Err(ApiError::field(
            "client_user_id",
            format!("user {user} is disabled: a disabled user cannot comment"),
        ));
    }
    Ok(format!("{} {}", u.first_name, u.last_name)
        .trim()
        .to_string())
}

/// Changes the status; queued for the PSA, where it is set by name on the ticket's board.
#[utoipa::path(patch, path = "/api/v1/tickets/{id}", tag = "tickets", request_body = StatusBody,
    params(("id" = i64, Path)),
    responses((status = 200, body = TicketView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn set_status(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<StatusBody>,
) -> Result<Json<TicketView>, ApiError> {
    let id = path_id(&raw, "id", "a ticket id").map(TicketId)?;
    status_service(&state, &caller, id, &body).await?;
    Ok(Json(view(&state, &caller, id).await?))
}

/// Changes a ticket's status (API and form), queued for its PSA when there is one.
pub async fn status_service(
    state: &AppState,
    caller: &Caller,
    id: TicketId,
    body: &StatusBody,
) -> Result<(), ApiError> {
    caller.require(Permission::Write)?;
    let status = text("status", &body.status, 100)?;
    let ticket = state.store.get_ticket(caller.tenant_id, id).await?;
    let now = state.now();
    match psa_for_ticket(state, caller, &ticket)
        .await?
        .map(|(i, _)| i)
    {
        None => {
            state
                .store
                .set_ticket_status(caller.tenant_id, id, &status, body.closed, now)
                .await?;
        }
        Some(i) => {
            // The admin's Closed Statuses close a ticket too.
            let closed = body.closed
                || state
                    .store
                    .sync_options(caller.tenant_id, i.id)
                    .await?
                    .is_closed_status(&status);
            // The PSA status this change is made against: the outbox checks the PSA still
            // has it before writing (a change on both sides is a conflict, not overwritten).
            let out = Outgoing {
                integration: i.id,
                marker: marker()?,
                payload: serde_json::json!({"status": status, "base": ticket.psa_status}),
            };
            state
                .store
                .set_status_outboxed(caller.tenant_id, id, &status, closed, out, now)
                .await?;
        }
    }
    Ok(())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TicketListParams {
    /// Only this portal company's tickets.
    pub company_id: Option<i64>,
    /// `true`: closed only; `false`: open only.
    pub closed: Option<bool>,
    /// Keyset: tickets with a smaller id than this (the last id of the previous page).
    pub before: Option<i64>,
    /// 1–500, default 100.
    pub limit: Option<i64>,
}

/// Tickets, newest first (imported from PSAs and raised in the portal).
///
/// The body is one page (a bare array, `limit` long at most). The headers say how many
/// tickets match (`X-Total-Count`) and, when there are more, where the next page is:
/// `Link: </api/v1/tickets?before=…&limit=…>; rel="next"` and `X-Next-Before` (the keyset).
#[utoipa::path(get, path = "/api/v1/tickets", tag = "tickets", params(TicketListParams),
    responses(
        (status = 200, description = "One page of tickets, newest first", body = [Ticket],
            headers(
                ("X-Total-Count" = i64, description = "Tickets matching the filters, on every page"),
                ("X-Next-Before" = i64, description = "`before` of the next page; absent on the last page"),
                ("Link" = String, description = "`<…>; rel=\"next\"` for the next page; absent on the last page"),
            )),
        (status = 401, description = "No or an unknown token", body = ErrorBody),
        (status = 403, description = "The role may not read tickets", body = ErrorBody),
        (status = 422, description = "A query parameter is invalid (names it)", body = ErrorBody)))]
pub async fn list_tickets(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<TicketListParams>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    caller.require(Permission::Read)?;
    let limit = p.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::field("limit", "must be 1 to 500"));
    }
    let company = p.company_id.map(CompanyId);
    let mut rows = state
        .store
        .list_tickets(
            caller.tenant_id,
            company,
            p.closed,
            p.before.map(TicketId),
            limit + 1,
        )
        .await?;
    let total = state
        .store
        .count_tickets(caller.tenant_id, company, p.closed)
        .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let mut headers = axum::http::HeaderMap::new();
    headers.insert("x-total-count", axum::http::HeaderValue::from(total));
    if let Some(last) = rows.last().filter(|_| more) {
        let mut next = format!("/api/v1/tickets?before={}&limit={limit}", last.id.0);
        if let Some(c) = p.company_id {
            next.push_str(&format!("&company_id={c}"));
        }
        if let Some(closed) = p.closed {
            next.push_str(&format!("&closed={closed}"));
        }
        headers.insert("x-next-before", axum::http::HeaderValue::from(last.id.0));
        if let Ok(link) = axum::http::HeaderValue::from_str(&format!("<{next}>; rel=\"next\"")) {
            headers.insert(axum::http::header::LINK, link);
        }
    }
    Ok((headers, Json(rows)).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutboxParams {
    /// `pending`, `done`, `failed` or `discarded`; all when left out.
    pub state: Option<String>,
    /// Rows to skip (the `X-Next-Offset` of the previous page); default 0.
    pub offset: Option<i64>,
    /// 1–500, default 100.
    pub limit: Option<i64>,
}

/// Writes to PSAs, newest first: what is waiting, what went through, what was refused.
///
/// The body is one page (a bare array). `X-Total-Count` says how many rows match; while
/// more follow, `X-Next-Offset` and `Link: <…?offset=…&limit=…>; rel="next"` say where.
#[utoipa::path(get, path = "/api/v1/outbox", tag = "tickets", params(OutboxParams),
    responses(
        (status = 200, description = "One page of PSA writes, newest first", body = [PsaWrite],
            headers(
                ("X-Total-Count" = i64, description = "Rows matching the filter, on every page"),
                ("X-Next-Offset" = i64, description = "`offset` of the next page; absent on the last page"),
                ("Link" = String, description = "`<…>; rel=\"next\"` for the next page; absent on the last page"),
            )),
        (status = 422, description = "A query parameter is invalid (names it)", body = ErrorBody)))]
pub async fn list_outbox(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<OutboxParams>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    caller.require(Permission::Read)?;
    let wanted = p.state.as_deref().filter(|s| !s.is_empty());
    if let Some(s) = wanted
        && !["pending", "done", "failed", "discarded"].contains(&s)
    {
        return Err(ApiError::field(
            "state",
            "must be pending, done, failed or discarded",
        ));
    }
    let page = crate::paging::Paging::new(p.offset, p.limit, 100, 500)?;
    let (rows, total) = state
        .store
        .list_outbox_page(caller.tenant_id, wanted, page.offset, page.limit)
        .await?;
    let filters: Vec<(&str, String)> = wanted
        .map(|s| ("state", s.to_string()))
        .into_iter()
        .collect();
    let headers = page.headers("/api/v1/outbox", &filters, rows.len(), total);
    let rows: Vec<PsaWrite> = rows.into_iter().map(Into::into).collect();
    Ok((headers, Json(rows)).into_response())
}

/// What an admin can do with a failed write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteAction {
    Retry,
    Discard,
}

impl WriteAction {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "retry" => Some(WriteAction::Retry),
            "discard" => Some(WriteAction::Discard),
            _ => None,
        }
    }
}

/// Retries or discards the failed write `raw` (an outbox id) of the caller's tenant; the
/// API and the ticket page's buttons both come here.
pub async fn act_on_write(
    state: &AppState,
    caller: &Caller,
    raw: &str,
    action: WriteAction,
) -> Result<PsaWrite, ApiError> {
    caller.require(Permission::Write)?;
    let id = path_id(raw, "id", "an outbox id")?;
    let (tenant, now) = (caller.tenant_id, state.now());
    let item = match action {
        WriteAction::Retry => state.store.retry_outbox(tenant, id, now).await?,
        WriteAction::Discard => state.store.discard_outbox(tenant, id, now).await?,
    };
    Ok(item.into())
}

/// Gives up on a failed write: it stays listed as `discarded`, no longer blocks Clear &
/// Resync, and a discarded status change gives the ticket back the PSA's status.
#[utoipa::path(post, path = "/api/v1/outbox/{id}/discard", tag = "tickets", params(("id" = i64, Path)),
    responses((status = 200, body = PsaWrite), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn discard_outbox(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<PsaWrite>, ApiError> {
    Ok(Json(
        act_on_write(&state, &caller, &raw, WriteAction::Discard).await?,
    ))
}

/// Tries a failed write again (the worker picks it up within a second or so).
#[utoipa::path(post, path = "/api/v1/outbox/{id}/retry", tag = "tickets", params(("id" = i64, Path)),
    responses((status = 200, body = PsaWrite), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn retry_outbox(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<PsaWrite>, ApiError> {
    Ok(Json(
        act_on_write(&state, &caller, &raw, WriteAction::Retry).await?,
    ))
}
