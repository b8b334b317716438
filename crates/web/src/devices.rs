//! RMM devices and alerts (spec 2.14, 2.15): the JSON API and the pages — an RMM
//! integration's Devices page (Device Type Mappings with Quick Match, Quick Create, Enable
//! All Auto-Sync and Import All Mapped; staged devices with search, "show only
//! unimported", Import Selected and Ignore Selected), the imported devices across
//! companies, a device with its open alerts, and the alerts view by priority. The pages
//! and the API call the same services.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use mspbridge_domain::auth::Permission;
use mspbridge_domain::catalogue::Category;
use mspbridge_domain::integration::IntegrationStatus;
use mspbridge_domain::{CompanyId, IntegrationId};
use mspbridge_store::rmm::{
    AlertQuery, AlertRow, DeviceDetail, DeviceQuery, DeviceRow, DeviceType, ImportScope,
    MappingChoice, RmmCounts, TypeMapping,
};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::api::{ApiJson, parse_id, path_id};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiQuery;
use crate::ui::{Shell, UiCaller, error_page, render, shell};

/// Rows per page of the device and alert tables.
pub(crate) const PAGE: i64 = 50;

pub fn api_routes() -> Router<AppState> {
    Router::new()
        .route("/devices", get(list_devices))
        .route("/devices/{device_id}", get(get_device))
        .route("/devices/{device_id}/refresh", post(post_refresh))
        .route("/alerts", get(list_alerts))
        .route("/alerts/{alert_id}/resolve", post(post_resolve))
        .route(
            "/device-types",
            get(list_device_types).post(create_device_type),
        )
        .route(
            "/integrations/{id}/device-type-mappings",
            get(list_type_mappings),
        )
        .route(
            "/integrations/{id}/device-type-mappings/{mapping_id}",
            put(put_type_mapping),
        )
        .route("/integrations/{id}/devices/staged", get(list_staged))
        .route(
            "/integrations/{id}/devices/import",
            post(post_devices_import),
        )
        .route(
            "/integrations/{id}/devices/ignore",
            post(post_devices_ignore),
        )
}

pub fn ui_routes() -> Router<AppState> {
    Router::new()
        .route("/devices", get(devices_page))
        .route("/devices/{device_id}", get(device_page))
        .route("/devices/{device_id}/refresh", post(refresh_form))
        .route("/alerts", get(alerts_page))
        .route("/alerts/{alert_id}/resolve", post(resolve_form))
        .route(
            "/settings/integrations/{id}/devices",
            get(staging_page).post(staging_form),
        )
}

// ---------------------------------------------------------------------------------------
// Services

/// The integration, checked to be an RMM of the caller's tenant.
async fn rmm_integration(
    state: &AppState,
    c: &Caller,
    id: IntegrationId,
) -> Result<mspbridge_domain::integration::Integration, ApiError> {
    let i = state.store.get_integration(c.tenant_id, id).await?;
    if i.provider.descriptor().category != Category::Rmm {
        return Err(ApiError::field(
            "id",
            format!(
                "{} is not an RMM: it has no devices",
                i.provider.descriptor().name
            ),
        ));
    }
    Ok(i)
}

fn normalise(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// The provider types Quick Match and Quick Create work on: not mapped and not ignored
/// (after checking the caller may manage this RMM).
async fn unmapped_types(
    state: &AppState,
    c: &Caller,
    id: IntegrationId,
) -> Result<Vec<TypeMapping>, ApiError> {
    c.require(Permission::Manage)?;
    rmm_integration(state, c, id).await?;
    let all = state.store.type_mappings(c.tenant_id, id).await?;
    Ok(all
        .into_iter()
        .filter(|m| m.device_type_id.is_none() && !m.ignored)
        .collect())
}

/// Maps provider type `m` to device type `to`, keeping its Auto-Sync.
async fn map_type(
    state: &AppState,
    c: &Caller,
    id: IntegrationId,
    m: &TypeMapping,
    to: i64,
) -> Result<(), ApiError> {
    let choice = MappingChoice {
        device_type: Some(to),
        auto_sync: m.auto_sync,
        ignored: false,
    };
    state
        .store
        .set_type_mapping(c.tenant_id, id, m.id, choice, state.now())
        .await?;
    Ok(())
}

/// Maps every unmapped, non-ignored provider type to the tenant's device type of the same
/// name (the type's, or else its category's; case, spaces and punctuation ignored, a
/// plural "s" too). How many were mapped.
pub(crate) async fn quick_match(
    state: &AppState,
    c: &Caller,
    id: IntegrationId,
) -> Result<u64, ApiError> {
    let unmapped = unmapped_types(state, c, id).await?;
    let types = state.store.device_types(c.tenant_id).await?;
    let key = |s: &str| normalise(s).trim_end_matches('s').to_string();
    let mut n = 0;
    for m in &unmapped {
        let found = [&m.provider_type, &m.category]
            .into_iter()
            .filter(|s| !s.is_empty())
            .find_map(|s| types.iter().find(|t| key(&t.name) == key(s)));
        if let Some(t) = found {
            map_type(state, c, id, m, t.id).await?;
            n += 1;
        }
    }
    Ok(n)
}

/// Creates a device type for every provider type still unmapped (named after it, or its
/// category when it has none) and maps it. How many were mapped.
pub(crate) async fn quick_create(
    state: &AppState,
    c: &Caller,
    id: IntegrationId,
) -> Result<u64, ApiError> {
    let unmapped = unmapped_types(state, c, id).await?;
    for m in &unmapped {
        let name = [&m.provider_type, &m.category]
            .into_iter()
            .find(|s| !s.trim().is_empty())
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "Other".to_string());
        let t = state
            .store
            .create_device_type(c.tenant_id, &name, state.now())
            .await?;
        map_type(state, c, id, m, t.id).await?;
    }
    Ok(unmapped.len() as u64)
}

/// After a site mapping changed: a sync of each RMM among `integrations` is queued at
/// once (no cooldown), so a newly mapped site's devices of auto-sync types are imported
/// without waiting for the interval. (Its devices move to the new company at once: a
/// device's company is its site's link.)
pub(crate) async fn mapping_changed(
    state: &AppState,
    tenant: mspbridge_domain::TenantId,
    integrations: impl IntoIterator<Item = IntegrationId>,
) {
    let mut done = std::collections::HashSet::new();
    for id in integrations {
        if !done.insert(id) {
            continue;
        }
        let Ok(i) = state.store.get_integration(tenant, id).await else {
            continue;
        };
        if i.provider.descriptor().category != Category::Rmm {
            continue;
        }
        if let Err(e) = state
            .store
            .request_sync(tenant, id, state.now(), chrono::Duration::zero())
            .await
        {
            tracing::warn!(integration_id = %id, error = %e, "could not queue a device sync after a site mapping change");
        }
    }
}

// ---------------------------------------------------------------------------------------
// JSON API

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeviceListQuery {
    /// Part of the hostname, type, site or company.
    #[serde(default)]
    pub q: String,
    /// Only this company's devices.
    pub company: Option<i64>,
    #[serde(default)]
    pub offset: i64,
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DevicePage {
    /// Devices matching the query.
    pub total: i64,
    pub offset: i64,
    pub limit: i64,
    /// The offset of the next page, when there is one.
    pub next_offset: Option<i64>,
    pub devices: Vec<DeviceRow>,
}

fn page_meta(total: i64, offset: i64, limit: i64, shown: usize) -> Option<i64> {
    let next = offset + shown as i64;
    (next < total).then_some(next).filter(|_| limit > 0)
}

#[utoipa::path(get, path = "/api/v1/devices", tag = "devices",
    params(DeviceListQuery),
    responses((status = 200, description = "Imported RMM devices of the tenant's companies, by hostname", body = DevicePage)))]
pub async fn list_devices(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<DeviceListQuery>,
) -> Result<Json<DevicePage>, ApiError> {
    caller.require(Permission::Read)?;
    let limit = q.limit.unwrap_or(PAGE).clamp(1, 500);
    let page = state
        .store
        .devices(
            caller.tenant_id,
            &DeviceQuery {
                search: q.q,
                only_unimported: false,
                company: q.company.map(CompanyId),
                offset: q.offset.max(0),
                limit,
            },
        )
        .await?;
    Ok(Json(DevicePage {
        next_offset: page_meta(page.total, q.offset.max(0), limit, page.rows.len()),
        total: page.total,
        offset: q.offset.max(0),
        limit,
        devices: page.rows,
    }))
}

#[utoipa::path(get, path = "/api/v1/devices/{device_id}", tag = "devices",
    params(("device_id" = i64, Path, description = "Device id")),
    responses((status = 200, description = "The device with every field its RMM sent and its alerts", body = DeviceDetail),
        (status = 404, description = "No such device in the caller's tenant", body = ErrorBody)))]
pub async fn get_device(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeviceDetail>, ApiError> {
    caller.require(Permission::Read)?;
    let id = path_id(&id, "device_id", "a device id")?;
    Ok(Json(state.store.device(caller.tenant_id, id).await?))
}

/// Reads one device alone from its RMM now (detail, online state, patch summary) and keeps
/// what it said, or why it failed (the last good refresh stays). The device as it is then,
/// or the vendor's failure.
#[tracing::instrument(skip_all, fields(tenant_id = %c.tenant_id, device_id = id))]
pub(crate) async fn refresh(
    state: &AppState,
    c: &Caller,
    id: i64,
) -> Result<DeviceDetail, ApiError> {
    c.require(Permission::Write)?;
    let d = state.store.device(c.tenant_id, id).await?;
    let i = state
        .store
        .get_integration(c.tenant_id, IntegrationId(d.device.integration_id))
        .await?;
    let provider = i.provider.descriptor().name;
    if i.status == IntegrationStatus::Disconnected {
        return Err(ApiError::Conflict(format!(
            "{provider} is disconnected: reconnect it to refresh its devices"
        )));
    }
    let creds = crate::integrations::stored_credentials(state, &i).await?;
    let key = mspbridge_domain::rmm::DeviceKey {
        external_id: d.device.external_id.clone(),
        site_external_id: d.device.site_external_id.clone(),
        sub_site: d
            .details
            .get("sub_site")
            .and_then(|v| v.as_str())
            .map(str::to_string),
    };
    let read = match state
        .providers
        .rmm_source(
            i.provider,
            &creds,
            mspbridge_providers::http::RetryPolicy::interactive(),
            None,
        )
        .await
    {
        None => {
            return Err(ApiError::Conflict(format!(
                "{provider} is not an RMM: its devices cannot be refreshed"
            )));
        }
        Some(Ok(source)) => source.device_refresh(&key).await,
        Some(Err(e)) => Err(e),
    };
    let now = state.now();
    match read {
        Ok(r) => {
            state
                .store
                .record_device_refresh(c.tenant_id, id, Ok(&r), now)
                .await?;
            tracing::info!("device refreshed");
            Ok(state.store.device(c.tenant_id, id).await?)
        }
        Err(e) => {
            let message = e.to_string();
            state
                .store
                .record_device_refresh(c.tenant_id, id, Err(&message), now)
                .await?;
            tracing::warn!(error = %message, "device refresh failed");
            Err(ApiError::Vendor { provider, message })
        }
    }
}

#[utoipa::path(post, path = "/api/v1/devices/{device_id}/refresh", tag = "devices",
    params(("device_id" = i64, Path, description = "Device id")),
    responses((status = 200, description = "The device read alone from its RMM now: `refresh` holds its online state, patch summary and hardware facts", body = DeviceDetail),
        (status = 404, description = "No such device in the caller's tenant", body = ErrorBody),
        (status = 409, description = "The RMM is disconnected", body = ErrorBody),
        (status = 502, description = "The RMM could not be read; `refresh_error` on the device says why", body = ErrorBody)))]
pub async fn post_refresh(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeviceDetail>, ApiError> {
    let id = path_id(&id, "device_id", "a device id")?;
    Ok(Json(refresh(&state, &caller, id).await?))
}

async fn refresh_form(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<Vec<(String, String)>>,
) -> Response {
    let csrf = form
        .iter()
        .find(|(n, _)| n == "csrf")
        .map(|(_, v)| v.clone());
    let done = async {
        c.check_csrf(csrf.as_deref())?;
        let id = path_id(&id, "device_id", "a device id")?;
        Ok::<_, ApiError>((id, refresh(&state, &c, id).await))
    };
    match done.await {
        // A vendor failure is kept on the device and shown there.
        Ok((id, Ok(_))) => {
            Redirect::to(&format!("/devices/{id}?msg=refreshed#refresh")).into_response()
        }
        Ok((id, Err(ApiError::Vendor { .. }))) => {
            Redirect::to(&format!("/devices/{id}#refresh")).into_response()
        }
        Ok((_, Err(e))) | Err(e) => error_page(e),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AlertListQuery {
    /// Only this company's alerts.
    pub company: Option<i64>,
    /// Resolved alerts too (default: open only).
    pub include_resolved: Option<bool>,
    #[serde(default)]
    pub offset: i64,
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AlertPage {
    pub total: i64,
    pub offset: i64,
    pub limit: i64,
    pub next_offset: Option<i64>,
    pub alerts: Vec<AlertRow>,
}

#[utoipa::path(get, path = "/api/v1/alerts", tag = "devices",
    params(AlertListQuery),
    responses((status = 200, description = "RMM alerts, most urgent first (Critical, High, Moderate, Low, Information, others), newest first within a priority", body = AlertPage)))]
pub async fn list_alerts(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AlertListQuery>,
) -> Result<Json<AlertPage>, ApiError> {
    caller.require(Permission::Read)?;
    let limit = q.limit.unwrap_or(PAGE).clamp(1, 500);
    let offset = q.offset.max(0);
    let page = state
        .store
        .alerts(
            caller.tenant_id,
            &AlertQuery {
                company: q.company.map(CompanyId),
                include_resolved: q.include_resolved.unwrap_or(false),
                offset,
                limit,
            },
        )
        .await?;
    Ok(Json(AlertPage {
        next_offset: page_meta(page.total, offset, limit, page.rows.len()),
        total: page.total,
        offset,
        limit,
        alerts: page.rows,
    }))
}

/// Queues the alert's Resolve for its RMM (idempotent). The worker writes it (Datto:
/// `POST /v2/alert/{uid}/resolve`), retrying what is transient; the alert shows
/// "resolving" until the RMM took it, and the RMM's refusal if it did not.
pub(crate) async fn resolve(
    state: &AppState,
    c: &Caller,
    alert: i64,
) -> Result<AlertRow, ApiError> {
    c.require(Permission::Write)?;
    let row = state
        .store
        .request_alert_resolve(c.tenant_id, alert, state.now())
        .await?;
    Ok(row)
}

#[utoipa::path(post, path = "/api/v1/alerts/{alert_id}/resolve", tag = "devices",
    params(("alert_id" = i64, Path, description = "Alert id")),
    responses((status = 202, description = "The Resolve is queued for the RMM (or the alert is already resolved); the alert as it is now", body = AlertRow),
        (status = 404, description = "No such alert in the caller's tenant", body = ErrorBody)))]
pub async fn post_resolve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<AlertRow>), ApiError> {
    let id = path_id(&id, "alert_id", "an alert id")?;
    Ok((
        StatusCode::ACCEPTED,
        Json(resolve(&state, &caller, id).await?),
    ))
}

async fn resolve_form(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<Vec<(String, String)>>,
) -> Response {
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let done = async {
        c.check_csrf(Some(&get("csrf")))?;
        let id = path_id(&id, "alert_id", "an alert id")?;
        resolve(&state, &c, id).await
    };
    match done.await {
        Ok(a) => {
            // Back where the button was: the device page or the alerts list.
            let back = get("back");
            let to = match a.device_id {
                Some(d) if back == "device" => format!("/devices/{d}#alerts"),
                _ => "/alerts".to_string(),
            };
            Redirect::to(&to).into_response()
        }
        Err(e) => error_page(e),
    }
}

#[utoipa::path(get, path = "/api/v1/device-types", tag = "devices",
    responses((status = 200, description = "The tenant's device types, by name", body = [DeviceType])))]
pub async fn list_device_types(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<DeviceType>>, ApiError> {
    caller.require(Permission::Read)?;
    Ok(Json(state.store.device_types(caller.tenant_id).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDeviceType {
    /// 1–80 characters.
    pub name: String,
}

fn device_type_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 80 {
        return Err(ApiError::field("name", "must be 1 to 80 characters"));
    }
    Ok(name.to_string())
}

#[utoipa::path(post, path = "/api/v1/device-types", tag = "devices", request_body = NewDeviceType,
    responses((status = 201, description = "The device type (an existing one of that name is returned as it is)", body = DeviceType)))]
pub async fn create_device_type(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewDeviceType>,
) -> Result<(StatusCode, Json<DeviceType>), ApiError> {
    caller.require(Permission::Manage)?;
    let name = device_type_name(&body.name)?;
    let t = state
        .store
        .create_device_type(caller.tenant_id, &name, state.now())
        .await?;
    Ok((StatusCode::CREATED, Json(t)))
}

#[utoipa::path(get, path = "/api/v1/integrations/{id}/device-type-mappings", tag = "devices",
    params(("id" = i64, Path, description = "RMM integration id")),
    responses((status = 200, description = "Device Type Mappings: each provider type (and Datto category) with its staged and imported counts, mapped type, Auto-Sync and Ignore", body = [TypeMapping]),
        (status = 404, description = "No such integration in the caller's tenant", body = ErrorBody)))]
pub async fn list_type_mappings(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<TypeMapping>>, ApiError> {
    caller.require(Permission::Read)?;
    let id = parse_id(&id)?;
    rmm_integration(&state, &caller, id).await?;
    Ok(Json(state.store.type_mappings(caller.tenant_id, id).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TypeMappingBody {
    /// The tenant's device type; `null` removes the mapping.
    pub device_type_id: Option<i64>,
    /// Import new devices of this type on every sync (needs a mapping).
    #[serde(default)]
    pub auto_sync: bool,
    /// Keep this type's unimported devices out of staging, now and later.
    #[serde(default)]
    pub ignored: bool,
}

pub(crate) async fn set_type_mapping(
    state: &AppState,
    c: &Caller,
    id: IntegrationId,
    mapping: i64,
    body: &TypeMappingBody,
) -> Result<TypeMapping, ApiError> {
    c.require(Permission::Manage)?;
    rmm_integration(state, c, id).await?;
    if body.auto_sync && body.device_type_id.is_none() {
        return Err(ApiError::field(
            "auto_sync",
            "needs a device type to map to first",
        ));
    }
    if body.auto_sync && body.ignored {
        return Err(ApiError::field(
            "auto_sync",
            "an ignored type cannot auto-sync; untick Ignore first",
        ));
    }
    if let Some(t) = body.device_type_id
        && !state
            .store
            .device_types(c.tenant_id)
            .await?
            .iter()
            .any(|x| x.id == t)
    {
        return Err(ApiError::field(
            "device_type_id",
            format!("device type {t} does not exist"),
        ));
    }
    Ok(state
        .store
        .set_type_mapping(
            c.tenant_id,
            id,
            mapping,
            MappingChoice {
                device_type: body.device_type_id,
                auto_sync: body.auto_sync,
                ignored: body.ignored,
            },
            state.now(),
        )
        .await?)
}

#[utoipa::path(put, path = "/api/v1/integrations/{id}/device-type-mappings/{mapping_id}", tag = "devices",
    params(("id" = i64, Path, description = "RMM integration id"), ("mapping_id" = i64, Path, description = "Type mapping id")),
    request_body = TypeMappingBody,
    responses((status = 200, description = "The saved mapping", body = TypeMapping),
        (status = 404, description = "No such integration or mapping in the caller's tenant", body = ErrorBody)))]
pub async fn put_type_mapping(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, mapping)): Path<(String, String)>,
    ApiJson(body): ApiJson<TypeMappingBody>,
) -> Result<Json<TypeMapping>, ApiError> {
    let id = parse_id(&id)?;
    let mapping = path_id(&mapping, "mapping_id", "a type mapping id")?;
    Ok(Json(
        set_type_mapping(&state, &caller, id, mapping, &body).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StagedQuery {
    #[serde(default)]
    pub q: String,
    /// Only devices not imported yet (default true).
    pub only_unimported: Option<bool>,
    #[serde(default)]
    pub offset: i64,
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/integrations/{id}/devices/staged", tag = "devices",
    params(("id" = i64, Path, description = "RMM integration id"), StagedQuery),
    responses((status = 200, description = "Staged devices of mapped sites (and imported ones with only_unimported=false); devices of unmapped sites or ignored types are never staged", body = DevicePage),
        (status = 404, description = "No such integration in the caller's tenant", body = ErrorBody)))]
pub async fn list_staged(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<StagedQuery>,
) -> Result<Json<DevicePage>, ApiError> {
    caller.require(Permission::Read)?;
    let id = parse_id(&id)?;
    rmm_integration(&state, &caller, id).await?;
    let limit = q.limit.unwrap_or(PAGE).clamp(1, 500);
    let offset = q.offset.max(0);
    let page = state
        .store
        .staged_devices(
            caller.tenant_id,
            id,
            &DeviceQuery {
                search: q.q,
                only_unimported: q.only_unimported.unwrap_or(true),
                company: None,
                offset,
                limit,
            },
        )
        .await?;
    Ok(Json(DevicePage {
        next_offset: page_meta(page.total, offset, limit, page.rows.len()),
        total: page.total,
        offset,
        limit,
        devices: page.rows,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportBody {
    /// Import these staged devices (Import Selected).
    #[serde(default)]
    pub devices: Vec<i64>,
    /// Import every staged device of this type mapping (Import All on its row).
    pub type_mapping_id: Option<i64>,
    /// Import every staged device of every mapped, non-ignored type (Import All Mapped).
    #[serde(default)]
    pub all_mapped: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImportResult {
    /// Devices imported.
    pub imported: u64,
    /// Devices asked for that stay staged (their type has no mapping yet).
    pub left: u64,
}

pub(crate) async fn import(
    state: &AppState,
    c: &Caller,
    id: IntegrationId,
    body: &ImportBody,
) -> Result<ImportResult, ApiError> {
    c.require(Permission::Manage)?;
    rmm_integration(state, c, id).await?;
    let scope = match (
        body.devices.is_empty(),
        body.type_mapping_id,
        body.all_mapped,
    ) {
        (false, None, false) => ImportScope::Devices(body.devices.clone()),
        (true, Some(m), false) => ImportScope::Type(m),
        (true, None, true) => ImportScope::AllMapped,
        _ => {
            return Err(ApiError::field(
                "devices",
                "give exactly one of devices, type_mapping_id or all_mapped",
            ));
        }
    };
    let imported = state
        .store
        .import_devices(c.tenant_id, id, &scope, state.now())
        .await?;
    let asked = match &scope {
        ImportScope::Devices(d) => d.len() as u64,
        _ => imported,
    };
    Ok(ImportResult {
        imported,
        left: asked.saturating_sub(imported),
    })
}

#[utoipa::path(post, path = "/api/v1/integrations/{id}/devices/import", tag = "devices",
    params(("id" = i64, Path, description = "RMM integration id")), request_body = ImportBody,
    responses((status = 200, description = "How many devices were imported (as their type's mapped device type)", body = ImportResult),
        (status = 404, description = "No such integration in the caller's tenant", body = ErrorBody)))]
pub async fn post_devices_import(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ImportBody>,
) -> Result<Json<ImportResult>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(import(&state, &caller, id, &body).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IgnoreBody {
    /// Staged devices to ignore (Ignore Selected).
    pub devices: Vec<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IgnoreResult {
    pub ignored: u64,
}

#[utoipa::path(post, path = "/api/v1/integrations/{id}/devices/ignore", tag = "devices",
    params(("id" = i64, Path, description = "RMM integration id")), request_body = IgnoreBody,
    responses((status = 200, description = "How many staged devices were ignored", body = IgnoreResult),
        (status = 404, description = "No such integration in the caller's tenant", body = ErrorBody)))]
pub async fn post_devices_ignore(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<IgnoreBody>,
) -> Result<Json<IgnoreResult>, ApiError> {
    caller.require(Permission::Manage)?;
    let id = parse_id(&id)?;
    rmm_integration(&state, &caller, id).await?;
    let ignored = state
        .store
        .ignore_devices(caller.tenant_id, id, &body.devices, state.now())
        .await?;
    Ok(Json(IgnoreResult { ignored }))
}

// ---------------------------------------------------------------------------------------
// Pages

fn when(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

fn yes_no(b: Option<bool>) -> &'static str {
    match b {
        Some(true) => "yes",
        Some(false) => "no",
        None => "",
    }
}

fn online(b: Option<bool>) -> &'static str {
    match b {
        Some(true) => "online",
        Some(false) => "offline",
        None => "unknown",
    }
}

#[derive(Deserialize, Default)]
struct PageQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    company: String,
    #[serde(default)]
    all: String,
    #[serde(default)]
    page: Option<i64>,
    #[serde(default)]
    done: String,
    /// The RMM page's view: `devices` (default) or `sites` (Map Sites).
    #[serde(default)]
    view: String,
    /// Map Sites: `all` (default), `mapped` or `unmapped`.
    #[serde(default)]
    filter: String,
}

pub(crate) struct Pager {
    pub(crate) page: i64,
    pub(crate) pages: i64,
    /// The filters as a query string for the paging links.
    pub(crate) query: String,
}

impl Pager {
    /// This page's rows of `rows` (all rows, filtered, in order).
    pub(crate) fn slice<T>(&self, rows: Vec<T>) -> Vec<T> {
        rows.into_iter()
            .skip(((self.page - 1) * PAGE) as usize)
            .take(PAGE as usize)
            .collect()
    }
}

pub(crate) fn pager(total: i64, page: Option<i64>, query: String) -> Pager {
    let pages = ((total + PAGE - 1) / PAGE).max(1);
    Pager {
        page: page.unwrap_or(1).clamp(1, pages),
        pages,
        query,
    }
}

pub(crate) fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[derive(Template)]
#[template(path = "devices.html")]
struct DevicesPage {
    shell: Shell,
    rows: Vec<DeviceRow>,
    total: i64,
    companies: Vec<(i64, String)>,
    q: String,
    company: String,
    pager: Pager,
    rmms: Vec<(i64, String)>,
}

async fn devices_page(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    axum::extract::Query(f): axum::extract::Query<PageQuery>,
) -> Response {
    let done = async {
        c.require(Permission::Read)?;
        let company = f.company.parse::<i64>().ok();
        let first = state
            .store
            .devices(
                c.tenant_id,
                &DeviceQuery {
                    search: f.q.clone(),
                    company: company.map(CompanyId),
                    offset: 0,
                    limit: 1,
                    ..Default::default()
                },
            )
            .await?;
        let pager = pager(
            first.total,
            f.page,
            format!("q={}&company={}", enc(&f.q), enc(&f.company)),
        );
        let page = state
            .store
            .devices(
                c.tenant_id,
                &DeviceQuery {
                    search: f.q.clone(),
                    company: company.map(CompanyId),
                    offset: (pager.page - 1) * PAGE,
                    limit: PAGE,
                    ..Default::default()
                },
            )
            .await?;
        let companies = state
            .store
            .list_companies(c.tenant_id)
            .await?
            .into_iter()
            .map(|x| (x.id.0, x.name))
            .collect();
        let rmms = state
            .store
            .list_integrations(c.tenant_id)
            .await?
            .into_iter()
            .filter(|i| i.provider.descriptor().category == Category::Rmm)
            .map(|i| (i.id.0, i.display_name().to_string()))
            .collect();
        Ok::<_, ApiError>(DevicesPage {
            shell: shell(&state, &c).await?,
            total: page.total,
            rows: page.rows,
            companies,
            q: f.q,
            company: f.company,
            pager,
            rmms,
        })
    };
    match done.await {
        Ok(p) => render(p, StatusCode::OK),
        Err(e) => error_page(e),
    }
}

#[derive(Template)]
#[template(path = "device.html")]
struct DevicePageT {
    shell: Shell,
    can_write: bool,
    d: DeviceRow,
    fields: Vec<(String, String)>,
    udfs: Vec<(String, String)>,
    alerts: Vec<AlertRow>,
    /// The RMM's name (for "Refresh from Datto RMM").
    provider: &'static str,
    closed_upstream: HashMap<i64, &'static str>,
    refresh: Option<mspbridge_domain::rmm::DeviceRefresh>,
    refreshed_at: Option<chrono::DateTime<chrono::Utc>>,
    refresh_error: Option<String>,
    flash: Option<&'static str>,
}

/// A patch summary in one line: "FullyPatched · 1 approved, pending install · 65 installed".
pub(crate) fn patch_line(p: &mspbridge_domain::rmm::PatchSummary) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(s) = &p.status {
        parts.push(s.clone());
    }
    let counts = [
        (p.missing, "missing"),
        (p.approved_pending, "approved, pending install"),
        (p.not_approved, "not approved"),
        (p.installed, "installed"),
        (p.pending_reboot, "waiting for a reboot"),
    ];
    for (n, what) in counts {
        if let Some(n) = n {
            parts.push(format!("{n} {what}"));
        }
    }
    if let Some(c) = p.compliance {
        parts.push(format!("{c:.1} % compliant"));
    }
    if parts.is_empty() {
        "no figures".to_string()
    } else {
        parts.join(" · ")
    }
}

/// The device's details as label/value pairs, in the order an admin reads them.
/// Label and value pairs.
type Facts = Vec<(String, String)>;

fn detail_fields(v: &serde_json::Value) -> (Facts, Facts) {
    let text = |k: &str| -> String {
        match v.get(k) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Bool(b)) => if *b { "yes" } else { "no" }.to_string(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => String::new(),
        }
    };
    let patch = v.get("patch").cloned().unwrap_or_default();
    let p = |k: &str| match patch.get(k) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    let fields = [
        ("Operating system", text("operating_system")),
        ("Manufacturer", text("manufacturer")),
        ("Model", text("model")),
        ("Serial number", text("serial_number")),
        ("Domain", text("domain")),
        ("Last user", text("last_user")),
        ("Internal IP", text("internal_ip")),
        ("External IP", text("external_ip")),
        ("Agent version", text("agent_version")),
        ("Last reboot", text("last_reboot")),
        ("Last audit", text("last_audit")),
        ("Created in the RMM", text("created_at")),
        ("Antivirus", text("antivirus_product")),
        ("Antivirus status", text("antivirus_status")),
        ("Patch status", p("status")),
        ("Patches approved, pending", p("approved_pending")),
        ("Patches not approved", p("not_approved")),
        ("Patches installed", p("installed")),
        ("Warranty", text("warranty_date")),
        ("Suspended", text("suspended")),
        ("Open in the RMM", text("portal_url")),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let udfs = v
        .get("udfs")
        .and_then(|u| u.as_object())
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    (fields, udfs)
}

/// The tenant's RMM integrations whose alerts cannot be resolved from the portal (Asio's are
/// service tickets, closed in Asio), by id, with their names: their alerts show where to
/// close them instead of a Resolve button.
fn closed_upstream(
    state: &AppState,
    integrations: &[mspbridge_domain::integration::Integration],
) -> HashMap<i64, &'static str> {
    integrations
        .iter()
        .filter(|i| {
            i.provider.descriptor().category == Category::Rmm
                && !state.providers.resolves_alerts(i.provider)
        })
        .map(|i| (i.id.0, i.provider.descriptor().name))
        .collect()
}

#[derive(Debug, Default, Deserialize)]
struct DevicePageQuery {
    msg: Option<String>,
}

async fn device_page(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<DevicePageQuery>,
) -> Response {
    let done = async {
        c.require(Permission::Read)?;
        let id = path_id(&id, "device_id", "a device id")?;
        let d = state.store.device(c.tenant_id, id).await?;
        let integrations = state.store.list_integrations(c.tenant_id).await?;
        let provider = integrations
            .iter()
            .find(|i| i.id.0 == d.device.integration_id)
            .ok_or(ApiError::NotFound)?
            .provider
            .descriptor()
            .name;
        let (fields, udfs) = detail_fields(&d.details);
        Ok::<_, ApiError>(DevicePageT {
            shell: shell(&state, &c).await?,
            can_write: c.require(Permission::Write).is_ok(),
            d: d.device,
            fields,
            udfs,
            alerts: d.alerts,
            provider,
            closed_upstream: closed_upstream(&state, &integrations),
            refresh: d.refresh,
            refreshed_at: d.refreshed_at,
            refresh_error: d.refresh_error,
            flash: (q.msg.as_deref() == Some("refreshed"))
                .then_some("Refreshed: what the RMM says of this device now is below."),
        })
    };
    match done.await {
        Ok(p) => render(p, StatusCode::OK),
        Err(e) => error_page(e),
    }
}

#[derive(Template)]
#[template(path = "alerts.html")]
struct AlertsPage {
    shell: Shell,
    can_write: bool,
    /// RMM integrations whose alerts are resolved there, not from the portal (their names).
    closed_upstream: HashMap<i64, &'static str>,
    rows: Vec<AlertRow>,
    total: i64,
    companies: Vec<(i64, String)>,
    company: String,
    all: bool,
    pager: Pager,
}

async fn alerts_page(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    axum::extract::Query(f): axum::extract::Query<PageQuery>,
) -> Response {
    let done = async {
        c.require(Permission::Read)?;
        let company = f.company.parse::<i64>().ok().map(CompanyId);
        let all = f.all == "1";
        let q = |offset, limit| AlertQuery {
            company,
            include_resolved: all,
            offset,
            limit,
        };
        let total = state.store.alerts(c.tenant_id, &q(0, 1)).await?.total;
        let pager = pager(
            total,
            f.page,
            format!(
                "company={}&all={}",
                enc(&f.company),
                if all { "1" } else { "" }
            ),
        );
        let page = state
            .store
            .alerts(c.tenant_id, &q((pager.page - 1) * PAGE, PAGE))
            .await?;
        let companies = state
            .store
            .list_companies(c.tenant_id)
            .await?
            .into_iter()
            .map(|x| (x.id.0, x.name))
            .collect();
        Ok::<_, ApiError>(AlertsPage {
            shell: shell(&state, &c).await?,
            can_write: c.require(Permission::Write).is_ok(),
            closed_upstream: closed_upstream(
                &state,
                &state.store.list_integrations(c.tenant_id).await?,
            ),
            total: page.total,
            rows: page.rows,
            companies,
            company: f.company,
            all,
            pager,
        })
    };
    match done.await {
        Ok(p) => render(p, StatusCode::OK),
        Err(e) => error_page(e),
    }
}

#[derive(Template)]
#[template(path = "staging.html")]
struct StagingPage {
    shell: Shell,
    id: i64,
    name: String,
    provider: &'static str,
    datto: bool,
    mappings: Vec<TypeMapping>,
    types: Vec<DeviceType>,
    counts: RmmCounts,
    rows: Vec<DeviceRow>,
    total: i64,
    q: String,
    only_unimported: bool,
    pager: Pager,
    can_manage: bool,
    notice: Option<String>,
    error: Option<String>,
    /// `devices` or `sites`.
    view: &'static str,
    sites: Vec<SiteLine>,
    filter: &'static str,
    sites_total: usize,
}

/// A row of the Map Sites view.
struct SiteLine {
    external_id: String,
    name: String,
    devices: i64,
    mapped_to: Option<(i64, String)>,
    /// For an unmapped site: the best-matching portal company, its confidence and why.
    suggestion: Option<(i64, String, u8, String)>,
}

/// The Map Sites view: every site with its devices, the company it is mapped to, and for
/// an unmapped one the best match among the portal companies not mapped yet (Quick Match's
/// matcher: same name, name similarity), filtered All / Mapped / Unmapped.
async fn site_lines(
    state: &AppState,
    c: &Caller,
    id: IntegrationId,
    filter: &str,
    q: &str,
) -> Result<(Vec<SiteLine>, usize), ApiError> {
    let counts = state.store.site_device_counts(c.tenant_id, id).await?;
    let list = state
        .store
        .integration_companies(c.tenant_id, Some(id), q, false, 5000)
        .await?;
    let taken: std::collections::HashSet<i64> = list
        .iter()
        .filter_map(|s| s.linked_to.as_ref().map(|l| l.0.0))
        .collect();
    let portal: Vec<mspbridge_matching::Candidate<i64>> = state
        .store
        .list_companies(c.tenant_id)
        .await?
        .into_iter()
        .filter(|x| x.active && !taken.contains(&x.id.0))
        .map(|x| mspbridge_matching::Candidate::named(x.id.0, x.name))
        .collect();
    let matcher = mspbridge_matching::Matcher::new(&portal);
    let mut lines: Vec<SiteLine> = list
        .into_iter()
        .filter(|s| s.active)
        .filter(|s| match filter {
            "mapped" => s.linked_to.is_some(),
            "unmapped" => s.linked_to.is_none(),
            _ => true,
        })
        .map(|s| {
            let suggestion = if s.linked_to.is_none() {
                matcher
                    .suggest(&mspbridge_matching::Candidate::named((), s.name.clone()), 1)
                    .into_iter()
                    .next()
                    .map(|g| (g.key, g.name, g.confidence, g.reason.to_string()))
            } else {
                None
            };
            SiteLine {
                devices: counts.get(&s.external_id).copied().unwrap_or(0),
                mapped_to: s.linked_to.map(|l| (l.0.0, l.1)),
                external_id: s.external_id,
                name: s.name,
                suggestion,
            }
        })
        .collect();
    lines.sort_by_key(|l| (l.mapped_to.is_some(), l.name.to_lowercase()));
    let total = lines.len();
    Ok((lines, total))
}

async fn staging(
    state: &AppState,
    c: &Caller,
    id: IntegrationId,
    f: &PageQuery,
    notice: Option<String>,
    error: Option<String>,
) -> Result<StagingPage, ApiError> {
    c.require(Permission::Read)?;
    let i = rmm_integration(state, c, id).await?;
    let only_unimported = f.all != "1";
    let view = if f.view == "sites" {
        "sites"
    } else {
        "devices"
    };
    let filter = match f.filter.as_str() {
        "mapped" => "mapped",
        "unmapped" => "unmapped",
        _ => "all",
    };
    let (mut sites, sites_total) = if view == "sites" {
        site_lines(state, c, id, filter, &f.q).await?
    } else {
        (vec![], 0)
    };
    let query = |offset, limit| DeviceQuery {
        search: f.q.clone(),
        only_unimported,
        company: None,
        offset,
        limit,
    };
    let total = state
        .store
        .staged_devices(c.tenant_id, id, &query(0, 1))
        .await?
        .total;
    let pager = if view == "sites" {
        let p = pager(
            sites_total as i64,
            f.page,
            format!("view=sites&filter={filter}&q={}", enc(&f.q)),
        );
        sites = sites
            .into_iter()
            .skip(((p.page - 1) * PAGE) as usize)
            .take(PAGE as usize)
            .collect();
        p
    } else {
        pager(
            total,
            f.page,
            format!(
                "q={}&all={}",
                enc(&f.q),
                if only_unimported { "" } else { "1" }
            ),
        )
    };
    let page = state
        .store
        .staged_devices(c.tenant_id, id, &query((pager.page - 1) * PAGE, PAGE))
        .await?;
    Ok(StagingPage {
        shell: shell(state, c).await?,
        id: id.0,
        name: i.display_name().to_string(),
        provider: i.provider.descriptor().name,
        datto: i.provider == mspbridge_domain::catalogue::ProviderKind::DattoRmm,
        mappings: state.store.type_mappings(c.tenant_id, id).await?,
        types: state.store.device_types(c.tenant_id).await?,
        counts: state.store.rmm_counts(c.tenant_id, id).await?,
        total: page.total,
        rows: page.rows,
        q: f.q.clone(),
        only_unimported,
        pager,
        can_manage: c.require(Permission::Manage).is_ok(),
        notice,
        error,
        view,
        sites,
        filter,
        sites_total,
    })
}

async fn staging_page(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Path(id): Path<String>,
    axum::extract::Query(f): axum::extract::Query<PageQuery>,
) -> Response {
    let done = async {
        let id = parse_id(&id)?;
        let notice = (!f.done.is_empty()).then(|| f.done.clone());
        staging(&state, &c, id, &f, notice, None).await
    };
    match done.await {
        Ok(p) => render(p, StatusCode::OK),
        Err(e) => error_page(e),
    }
}

/// Every form of the Devices page posts here with an `action`: `map` (one type row),
/// `import_type`, `quick_match`, `quick_create`, `enable_auto_sync`, `import_mapped`,
/// `import_selected`, `ignore_selected`, `new_type`.
async fn staging_form(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<Vec<(String, String)>>,
) -> Response {
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    };
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(e) => return error_page(e),
    };
    let done = async {
        c.check_csrf(Some(get("csrf")))?;
        let selected: Vec<i64> = form
            .iter()
            .filter(|(n, _)| n == "device")
            .filter_map(|(_, v)| v.parse().ok())
            .collect();
        let plural =
            |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let message = match get("action") {
            "map" => {
                let mapping = get("mapping")
                    .parse::<i64>()
                    .map_err(|_| ApiError::field("mapping", "choose a type row"))?;
                let device_type_id = match get("device_type") {
                    "" => None,
                    v => Some(v.parse::<i64>().map_err(|_| {
                        ApiError::field("device_type", "choose a device type from the list")
                    })?),
                };
                let body = TypeMappingBody {
                    device_type_id,
                    auto_sync: get("auto_sync") == "on",
                    ignored: get("ignored") == "on",
                };
                let m = set_type_mapping(&state, &c, id, mapping, &body).await?;
                format!(
                    "Saved '{}': {}{}{}.",
                    if m.provider_type.is_empty() {
                        "(no type)"
                    } else {
                        &m.provider_type
                    },
                    m.device_type
                        .as_deref()
                        .map(|t| format!("maps to {t}"))
                        .unwrap_or_else(|| "not mapped".to_string()),
                    if m.auto_sync { ", auto-sync on" } else { "" },
                    if m.ignored { ", ignored" } else { "" }
                )
            }
            "import_type" => {
                let mapping = get("mapping")
                    .parse::<i64>()
                    .map_err(|_| ApiError::field("mapping", "choose a type row"))?;
                let r = import(
                    &state,
                    &c,
                    id,
                    &ImportBody {
                        devices: vec![],
                        type_mapping_id: Some(mapping),
                        all_mapped: false,
                    },
                )
                .await?;
                format!("Imported {}.", plural(r.imported, "device", "devices"))
            }
            "import_mapped" => {
                let r = import(
                    &state,
                    &c,
                    id,
                    &ImportBody {
                        devices: vec![],
                        type_mapping_id: None,
                        all_mapped: true,
                    },
                )
                .await?;
                format!(
                    "Imported {} of every mapped type.",
                    plural(r.imported, "device", "devices")
                )
            }
            "import_selected" => {
                if selected.is_empty() {
                    return Err(ApiError::field(
                        "device",
                        "tick the devices to import first",
                    ));
                }
                let r = import(
                    &state,
                    &c,
                    id,
                    &ImportBody {
                        devices: selected,
                        type_mapping_id: None,
                        all_mapped: false,
                    },
                )
                .await?;
                let mut m = format!("Imported {}.", plural(r.imported, "device", "devices"));
                if r.left > 0 {
                    m.push_str(&format!(
                        " {} stayed staged: map their type first.",
                        plural(r.left, "device", "devices")
                    ));
                }
                m
            }
            "ignore_selected" => {
                if selected.is_empty() {
                    return Err(ApiError::field(
                        "device",
                        "tick the devices to ignore first",
                    ));
                }
                c.require(Permission::Manage)?;
                let n = state
                    .store
                    .ignore_devices(c.tenant_id, id, &selected, state.now())
                    .await?;
                format!("Ignored {}.", plural(n, "device", "devices"))
            }
            "quick_match" => {
                let n = quick_match(&state, &c, id).await?;
                if n == 0 {
                    "Quick Match found no device type with the same name as an unmapped type; use Quick Create or pick one by hand.".to_string()
                } else {
                    format!("Quick Match mapped {}.", plural(n, "type", "types"))
                }
            }
            "quick_create" => {
                let n = quick_create(&state, &c, id).await?;
                format!(
                    "Quick Create made and mapped {}.",
                    plural(n, "device type", "device types")
                )
            }
            "enable_auto_sync" => {
                c.require(Permission::Manage)?;
                rmm_integration(&state, &c, id).await?;
                let n = state
                    .store
                    .enable_all_auto_sync(c.tenant_id, id, state.now())
                    .await?;
                format!(
                    "Auto-Sync turned on for {}; the next sync imports their new devices.",
                    plural(n, "mapped type", "mapped types")
                )
            }
            "map_site" => {
                c.require(Permission::Write)?;
                rmm_integration(&state, &c, id).await?;
                let company = get("company")
                    .parse::<i64>()
                    .map_err(|_| ApiError::field("company", "choose a portal company"))?;
                let site = get("site").to_string();
                state
                    .store
                    .apply_company_links(
                        c.tenant_id,
                        &[mspbridge_store::mapping::LinkRequest {
                            integration: id,
                            external_id: site.clone(),
                            company: Some(CompanyId(company)),
                        }],
                        "link",
                        &crate::mapping_api::actor(&c),
                        None,
                        state.now(),
                    )
                    .await?;
                mapping_changed(&state, c.tenant_id, [id]).await;
                "Site mapped; its devices are staged now, and a sync was queued so auto-sync types import.".to_string()
            }
            "new_type" => {
                c.require(Permission::Manage)?;
                let name = device_type_name(get("name"))?;
                state
                    .store
                    .create_device_type(c.tenant_id, &name, state.now())
                    .await?;
                format!("Device type '{name}' is ready to map to.")
            }
            other => {
                return Err(ApiError::field(
                    "action",
                    format!("'{other}' is not an action of this page"),
                ));
            }
        };
        Ok::<_, ApiError>(message)
    };
    match done.await {
        Ok(message) => Redirect::to(&format!(
            "/settings/integrations/{}/devices?done={}{}",
            id.0,
            enc(&message),
            if get("action") == "map_site" {
                "&view=sites&filter=unmapped"
            } else {
                ""
            }
        ))
        .into_response(),
        Err(ApiError::Validation(v)) => {
            let error =
                v.0.iter()
                    .map(|e| e.message.clone())
                    .collect::<Vec<_>>()
                    .join("; ");
            match staging(&state, &c, id, &PageQuery::default(), None, Some(error)).await {
                Ok(p) => render(p, StatusCode::UNPROCESSABLE_ENTITY),
                Err(e) => error_page(e),
            }
        }
        Err(e) => error_page(e),
    }
}

impl StagingPage {
    fn has_mapping(&self) -> bool {
        self.mappings.iter().any(|m| m.device_type_id.is_some())
    }
}

// Helpers the templates call.
pub(crate) fn fmt_when(t: &Option<chrono::DateTime<chrono::Utc>>) -> String {
    when(*t)
}
pub(crate) fn fmt_online(b: &Option<bool>) -> &'static str {
    online(*b)
}
pub(crate) fn fmt_yes_no(b: &Option<bool>) -> &'static str {
    yes_no(*b)
}
