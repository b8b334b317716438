//! Sync options, "Sync now", reactivation, run history and run logs under `/api/v1`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use mspbridge_domain::IntegrationId;
use mspbridge_domain::auth::Permission;
use mspbridge_domain::sync::{EventLevel, RecordType, SyncOptions, Vocabulary};
use mspbridge_store::sync::{Schedule, SyncEvent, SyncRequest, SyncRun};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::api::{ApiJson, parse_id};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiQuery;

/// Seconds between two "Sync now" requests for one integration.
pub const SYNC_NOW_COOLDOWN_SECS: i64 = 60;

/// Checks options against the tenant's roles and the record types the provider syncs.
pub async fn validate_options(
    state: &AppState,
    caller: &Caller,
    id: IntegrationId,
    o: &SyncOptions,
) -> Result<(), ApiError> {
    o.validate()?;
    let roles = state.store.list_roles(caller.tenant_id).await?;
    let known = |r: mspbridge_domain::RoleId| roles.iter().any(|x| x.id == r);
    if let Some(r) = o.default_role_id.filter(|r| !known(*r)) {
        return Err(ApiError::field(
            "options.default_role_id",
            format!("role {r} does not exist"),
        ));
    }
    if let Some(r) = o.primary_contact_role_id.filter(|r| !known(*r)) {
        return Err(ApiError::field(
            "options.primary_contact_role_id",
            format!("role {r} does not exist"),
        ));
    }
    for (i, rule) in o.contact_type_rules.iter().enumerate() {
        if !known(rule.role_id) {
            return Err(ApiError::field(
                &format!("options.contact_type_rules[{i}].role_id"),
                format!("role {} does not exist", rule.role_id),
            ));
        }
    }
    let provider = state
        .store
        .get_integration(caller.tenant_id, id)
        .await?
        .provider;
    if let Some((field, message)) = o.ticket_defaults.refused_by(provider) {
        return Err(ApiError::field(
            &format!("options.ticket_defaults.{field}"),
            message,
        ));
    }
    // Names of vendor types and statuses are checked against the vendor's lists, when read.
    if let Some(v) = state.store.vocabulary(caller.tenant_id, id).await? {
        v.check(o, provider.descriptor().name)
            .map_err(|(field, message)| ApiError::field(&field, message))?;
    }
    Ok(())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OptionsView {
    pub options: SyncOptions,
    #[schema(value_type = Option<Object>)]
    pub schedule: Option<Schedule>,
    /// The vendor's contact types, company types and statuses, as last read (on connect,
    /// on Test, or with `POST …/vocabulary`).
    pub vocabulary: Option<Vocabulary>,
    /// With ticket import on and a public URL configured: the PSA webhook registration
    /// ("registered: …" or why it was not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
}

/// Registers the ticket webhook with the PSA when ticket import is on and this deployment
/// has a public URL (polling stays the safety net either way). What happened, for the
/// admin; `None` when there was nothing to do.
pub async fn register_webhook(
    state: &AppState,
    tenant: mspbridge_domain::TenantId,
    id: IntegrationId,
    options: &SyncOptions,
) -> Option<String> {
    if !options.tickets {
        return None;
    }
    let integration = state.store.get_integration(tenant, id).await.ok()?;
    let url = crate::webhooks::url(state, integration.provider, tenant.0, id.0)?;
    if integration.provider == mspbridge_domain::catalogue::ProviderKind::Syncro {
        return Some(syncro_instructions());
    }
    let creds = crate::integrations::stored_credentials(state, &integration)
        .await
        .ok()?;
    let secret = state.vault.webhook_secret(tenant.0, id.0);
    let outcome = state
        .providers
        .register_ticket_webhook(integration.provider, &creds, &url, &secret)
        .await?;
    Some(match outcome {
        Ok(vendor_id) => {
            tracing::info!(
                integration_id = id.0,
                url,
                vendor_id,
                "ticket webhook registered"
            );
            format!("registered: {url} (callback {vendor_id})")
        }
        Err(e) => {
            tracing::warn!(integration_id = id.0, url, error = %e, "ticket webhook not registered");
            format!("not registered ({e}); changes arrive with the scheduled sync")
        }
    })
}

/// Syncro has no API to register webhooks: what the admin does in Syncro (the URL itself,
/// which carries a secret, is shown on the integration page, not here).
pub fn syncro_instructions() -> String {
    format!(
        "not registered: Syncro has no API for it. In Syncro, Admin > Notification Center > (a notification set) > add a webhook with the URL shown on this integration's page, for the events {}; until then changes arrive with the scheduled sync",
        mspbridge_providers::syncro::webhooks::EVENTS.join(", ")
    )
}

#[utoipa::path(get, path = "/api/v1/integrations/{id}/options", tag = "sync",
    params(("id" = i64, Path, description = "Integration id")),
    responses((status = 200, body = OptionsView), (status = 404, body = ErrorBody)))]
pub async fn get_options(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<OptionsView>, ApiError> {
    caller.require(Permission::Read)?;
    let id = parse_id(&raw)?;
    let options = state.store.sync_options(caller.tenant_id, id).await?;
    let schedule = state.store.schedule(caller.tenant_id, id).await?;
    let vocabulary = state.store.vocabulary(caller.tenant_id, id).await?;
    Ok(Json(OptionsView {
        options,
        schedule,
        vocabulary,
        webhook: None,
    }))
}

/// Saves the sync options; enabling sync makes the integration due at once.
#[utoipa::path(put, path = "/api/v1/integrations/{id}/options", tag = "sync", request_body = SyncOptions,
    params(("id" = i64, Path, description = "Integration id")),
    responses((status = 200, body = OptionsView), (status = 422, body = ErrorBody)))]
pub async fn put_options(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    ApiJson(options): ApiJson<SyncOptions>,
) -> Result<Json<OptionsView>, ApiError> {
    caller.require(Permission::Manage)?;
    let id = parse_id(&raw)?;
    validate_options(&state, &caller, id, &options).await?;
    state
        .store
        .set_sync_options(caller.tenant_id, id, &options, state.now())
        .await?;
    let webhook = register_webhook(&state, caller.tenant_id, id, &options).await;
    let schedule = state.store.schedule(caller.tenant_id, id).await?;
    let vocabulary = state.store.vocabulary(caller.tenant_id, id).await?;
    Ok(Json(OptionsView {
        options,
        schedule,
        vocabulary,
        webhook,
    }))
}

/// Role rules to preview; each field left out keeps the saved value (`null` clears it).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewBody {
    pub contact_type_rules: Option<Vec<mspbridge_domain::sync::ContactTypeRule>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub primary_contact_role_id: Option<Option<mspbridge_domain::RoleId>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub default_role_id: Option<Option<mspbridge_domain::RoleId>>,
}

/// `Some(value)` for a field that is present (`Some(None)` for `null`), `None` when absent.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// The contact-type rule editor's preview: the role a sample of real contacts (the
/// vendor's first page, at most 25) would get with these rules. Nothing is saved.
#[utoipa::path(post, path = "/api/v1/integrations/{id}/role-preview", tag = "sync",
    request_body = PreviewBody,
    params(("id" = i64, Path, description = "Integration id")),
    responses((status = 200, body = crate::integrations::RolePreview), (status = 422, body = ErrorBody),
        (status = 502, body = ErrorBody)))]
pub async fn role_preview(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<PreviewBody>,
) -> Result<Json<crate::integrations::RolePreview>, ApiError> {
    caller.require(Permission::Manage)?;
    let id = parse_id(&raw)?;
    let mut options = state.store.sync_options(caller.tenant_id, id).await?;
    if let Some(rules) = body.contact_type_rules {
        options.contact_type_rules = rules;
    }
    if let Some(r) = body.primary_contact_role_id {
        options.primary_contact_role_id = r;
    }
    if let Some(r) = body.default_role_id {
        options.default_role_id = r;
    }
    validate_options(&state, &caller, id, &options).await?;
    Ok(Json(
        crate::integrations::role_preview(&state, caller.tenant_id, id, &options).await?,
    ))
}

/// Reads the vendor's lists of contact types, company types and company statuses again.
#[utoipa::path(post, path = "/api/v1/integrations/{id}/vocabulary", tag = "sync",
    params(("id" = i64, Path, description = "Integration id")),
    responses((status = 200, body = Vocabulary), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn refresh_vocabulary(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<Vocabulary>, ApiError> {
    caller.require(Permission::Write)?;
    let id = parse_id(&raw)?;
    Ok(Json(
        crate::integrations::refresh_vocabulary(&state, caller.tenant_id, id).await?,
    ))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SyncNowAnswer {
    /// `queued`, `cooling_down` or `already_running`.
    pub state: &'static str,
    pub retry_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Sync now: queues a run at once (a second click within a minute is refused).
#[utoipa::path(post, path = "/api/v1/integrations/{id}/sync", tag = "sync",
    params(("id" = i64, Path, description = "Integration id")),
    responses((status = 202, body = SyncNowAnswer), (status = 429, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn sync_now(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<(StatusCode, Json<SyncNowAnswer>), ApiError> {
    caller.require(Permission::Write)?;
    let answer = request_sync(&state, &caller, parse_id(&raw)?).await?;
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

pub async fn request_sync(
    state: &AppState,
    caller: &Caller,
    id: IntegrationId,
) -> Result<SyncNowAnswer, ApiError> {
    queue(state, caller, id, false).await
}

/// Quick Sync (spec 2.7): only recent ticket changes, now; needs ticket sync on.
pub async fn request_quick_sync(
    state: &AppState,
    caller: &Caller,
    id: IntegrationId,
) -> Result<SyncNowAnswer, ApiError> {
    if !state
        .store
        .sync_options(caller.tenant_id, id)
        .await?
        .tickets
    {
        return Err(ApiError::Conflict(
            "ticket sync is off for this integration: switch on Tickets in its sync options first"
                .into(),
        ));
    }
    queue(state, caller, id, true).await
}

async fn queue(
    state: &AppState,
    caller: &Caller,
    id: IntegrationId,
    quick: bool,
) -> Result<SyncNowAnswer, ApiError> {
    let i = state.store.get_integration(caller.tenant_id, id).await?;
    if i.status == mspbridge_domain::integration::IntegrationStatus::Disconnected {
        return Err(ApiError::Conflict(
            "this integration is disconnected: reconnect it before syncing".into(),
        ));
    }
    let now = state.now();
    let cooldown = chrono::Duration::seconds(SYNC_NOW_COOLDOWN_SECS);
    let answer = if quick {
        state
            .store
            .request_quick_sync(caller.tenant_id, id, now, cooldown)
            .await?
    } else {
        state
            .store
            .request_sync(caller.tenant_id, id, now, cooldown)
            .await?
    };
    match answer {
        SyncRequest::Queued => Ok(SyncNowAnswer {
            state: "queued",
            retry_at: None,
        }),
        SyncRequest::AlreadyRunning => Err(ApiError::Conflict(
            "a sync is running for this integration now".into(),
        )),
        SyncRequest::CoolingDown(at) => Err(ApiError::RateLimited {
            what: "a sync was requested less than a minute ago",
            retry_after: (at - now).num_seconds().max(1) as u64,
        }),
    }
}

/// Quick Sync: a run of the tickets pass alone, from where the last one stopped (recent
/// ticket changes; existing tickets kept). The next regular run keeps its time.
#[utoipa::path(post, path = "/api/v1/integrations/{id}/tickets/quick-sync", tag = "sync",
    params(("id" = i64, Path, description = "Integration id")),
    responses((status = 202, body = SyncNowAnswer), (status = 429, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn quick_sync(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<(StatusCode, Json<SyncNowAnswer>), ApiError> {
    caller.require(Permission::Write)?;
    let answer = request_quick_sync(&state, &caller, parse_id(&raw)?).await?;
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

/// Clears a pause after repeated failures and queues a run.
#[utoipa::path(post, path = "/api/v1/integrations/{id}/reactivate", tag = "sync",
    params(("id" = i64, Path, description = "Integration id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn reactivate(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Permission::Manage)?;
    state
        .store
        .reactivate(caller.tenant_id, parse_id(&raw)?, state.now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Clear & Resync (spec 2.7): deletes the tickets this integration synced and queues a run
/// that imports them again. Refused (409) while a sync runs or portal changes to those
/// tickets still wait to be written.
pub async fn clear_and_resync(
    state: &AppState,
    caller: &Caller,
    id: IntegrationId,
) -> Result<u64, ApiError> {
    let now = state.now();
    let deleted = state
        .store
        .clear_synced_tickets(caller.tenant_id, id, now)
        .await?;
    tracing::info!(
        integration_id = id.0,
        deleted,
        "tickets cleared for a resync"
    );
    state
        .store
        .request_sync(caller.tenant_id, id, now, chrono::Duration::zero())
        .await?;
    Ok(deleted)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClearedTickets {
    /// Portal tickets deleted; the queued run imports them again.
    pub deleted: u64,
}

/// Clear & Resync the integration's tickets.
#[utoipa::path(post, path = "/api/v1/integrations/{id}/tickets/clear-resync", tag = "sync",
    params(("id" = i64, Path, description = "Integration id")),
    responses((status = 200, body = ClearedTickets), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn clear_tickets(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<ClearedTickets>, ApiError> {
    caller.require(Permission::Manage)?;
    let deleted = clear_and_resync(&state, &caller, parse_id(&raw)?).await?;
    Ok(Json(ClearedTickets { deleted }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunView {
    #[schema(value_type = Object)]
    #[serde(flatten)]
    pub run: SyncRun,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunsParams {
    /// Runs to skip (the `X-Next-Offset` of the previous page); default 0.
    pub offset: Option<i64>,
    /// 1–500, default 50.
    pub limit: Option<i64>,
}

/// The integration's sync runs, newest first.
///
/// The body is one page (a bare array). `X-Total-Count` says how many runs there are;
/// while more follow, `X-Next-Offset` and `Link: <…?offset=…&limit=…>; rel="next"`.
#[utoipa::path(get, path = "/api/v1/integrations/{id}/runs", tag = "sync",
    params(("id" = i64, Path, description = "Integration id"), RunsParams),
    responses(
        (status = 200, description = "One page of runs, newest first", body = Vec<RunView>,
            headers(
                ("X-Total-Count" = i64, description = "The integration's runs, on every page"),
                ("X-Next-Offset" = i64, description = "`offset` of the next page; absent on the last page"),
                ("Link" = String, description = "`<…>; rel=\"next\"` for the next page; absent on the last page"),
            )),
        (status = 404, description = "No such integration", body = ErrorBody),
        (status = 422, description = "A query parameter is invalid (names it)", body = ErrorBody)))]
pub async fn list_runs(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    ApiQuery(p): ApiQuery<RunsParams>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    caller.require(Permission::Read)?;
    let id = parse_id(&raw)?;
    let page = crate::paging::Paging::new(p.offset, p.limit, 50, 500)?;
    state.store.get_integration(caller.tenant_id, id).await?;
    let (runs, total) = state
        .store
        .list_runs_page(caller.tenant_id, id, page.offset, page.limit)
        .await?;
    let headers = page.headers(
        &format!("/api/v1/integrations/{}/runs", id.0),
        &[],
        runs.len(),
        total,
    );
    let runs: Vec<RunView> = runs.into_iter().map(|run| RunView { run }).collect();
    Ok((headers, Json(runs)).into_response())
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventFilter {
    /// info | warning | error
    pub level: Option<String>,
    /// companies | contacts | technicians | tickets
    pub record_type: Option<String>,
    /// Events to skip (the `X-Next-Offset` of the previous page); default 0.
    pub offset: Option<i64>,
    /// Events per page, 1–5000, default 2000.
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunLog {
    #[schema(value_type = Object)]
    pub run: SyncRun,
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<SyncEvent>,
}

pub fn parse_filter(f: &EventFilter) -> Result<(Option<EventLevel>, Option<RecordType>), ApiError> {
    let level = match f.level.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(l) => Some(
            EventLevel::parse(l)
                .ok_or_else(|| ApiError::field("level", "must be info, warning or error"))?,
        ),
    };
    let record = match f.record_type.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(r) => Some(RecordType::parse(r).ok_or_else(|| {
            ApiError::field("record_type", "must be companies, contacts or technicians")
        })?),
    };
    Ok((level, record))
}

/// A run and a page of its log, oldest line first.
///
/// `events` is one page: `X-Total-Count` says how many lines match the filters; while
/// more follow, `X-Next-Offset` and `Link: <…?offset=…&limit=…>; rel="next"`.
#[utoipa::path(get, path = "/api/v1/runs/{run_id}", tag = "sync",
    params(("run_id" = i64, Path, description = "Run id"), EventFilter),
    responses(
        (status = 200, description = "The run and one page of its log", body = RunLog,
            headers(
                ("X-Total-Count" = i64, description = "Log lines matching the filters, on every page"),
                ("X-Next-Offset" = i64, description = "`offset` of the next page; absent on the last page"),
                ("Link" = String, description = "`<…>; rel=\"next\"` for the next page; absent on the last page"),
            )),
        (status = 404, description = "No such run", body = ErrorBody),
        (status = 422, description = "A query parameter is invalid (names it)", body = ErrorBody)))]
pub async fn get_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(run_id): Path<String>,
    ApiQuery(filter): ApiQuery<EventFilter>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    caller.require(Permission::Read)?;
    let run_id: i64 = run_id
        .parse()
        .map_err(|_| ApiError::field("run_id", "must be a number"))?;
    let (level, record) = parse_filter(&filter)?;
    let page = crate::paging::Paging::new(filter.offset, filter.limit, 2000, 5000)?;
    let run = state.store.get_run(caller.tenant_id, run_id).await?;
    let (events, total) = state
        .store
        .list_events_page(
            caller.tenant_id,
            run_id,
            level,
            record,
            page.offset,
            page.limit,
        )
        .await?;
    let mut filters = Vec::new();
    if let Some(l) = level {
        filters.push(("level", l.as_str().to_string()));
    }
    if let Some(r) = record {
        filters.push(("record_type", r.as_str().to_string()));
    }
    let headers = page.headers(
        &format!("/api/v1/runs/{run_id}"),
        &filters,
        events.len(),
        total,
    );
    Ok((headers, Json(RunLog { run, events })).into_response())
}
