//! The JSON API under `/api/v1`. Handlers are thin: authenticate, check the
//! permission, parse, call the service, shape the answer.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use mspbridge_domain::auth::{Permission, StaffRole};
use mspbridge_domain::catalogue::{CATALOGUE, ProviderDescriptor};
use mspbridge_domain::model::Company;
use mspbridge_domain::validate::parse_name;
use mspbridge_domain::{IntegrationId, TenantId};
use serde::Deserialize;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::integrations::{self, IntegrationView};

pub use crate::extract::ApiJson;

/// A positive id from a URL path; anything else is a validation error naming `field`
/// ("'x' is not {what}").
pub(crate) fn path_id(raw: &str, field: &str, what: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::field(field, format!("'{raw}' is not {what}")))
}

/// An integration id from a URL path; anything else names the `id` field.
pub(crate) fn parse_id(raw: &str) -> Result<IntegrationId, ApiError> {
    path_id(raw, "id", "an integration id").map(IntegrationId)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectRequest {
    /// Provider slug from `GET /api/v1/providers`, e.g. `connectwise_manage`.
    pub provider: String,
    /// Optional nickname; empty or absent uses the provider's name.
    #[serde(default)]
    pub name: Option<String>,
    /// Credential fields as the provider's catalogue entry lists them.
    pub credentials: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameRequest {
    /// New nickname; empty or null restores the provider's name.
    pub name: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialsRequest {
    /// Credential fields; a secret sent back as the mask `••••••••` (or empty) keeps its stored value.
    pub credentials: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCompanyRequest {
    pub name: String,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Me {
    pub tenant_id: TenantId,
    pub tenant_name: String,
    pub role: StaffRole,
    pub actor: String,
}

#[utoipa::path(get, path = "/api/v1/me", tag = "session",
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
pub async fn me(State(state): State<AppState>, caller: Caller) -> Result<Json<Me>, ApiError> {
    let tenant = state.store.get_tenant(caller.tenant_id).await?;
    Ok(Json(Me {
        tenant_id: tenant.id,
        tenant_name: tenant.name,
        role: caller.role,
        actor: caller.label(),
    }))
}

/// The provider catalogue: the nine providers, their credential fields and what each syncs.
#[utoipa::path(get, path = "/api/v1/providers", tag = "integrations",
    responses((status = 200, body = Vec<ProviderDescriptor>), (status = 401, body = ErrorBody)))]
pub async fn list_providers(
    caller: Caller,
) -> Result<Json<&'static [ProviderDescriptor]>, ApiError> {
    caller.require(Permission::Read)?;
    Ok(Json(&CATALOGUE))
}

#[utoipa::path(get, path = "/api/v1/integrations", tag = "integrations",
    responses((status = 200, body = Vec<IntegrationView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_integrations(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<IntegrationView>>, ApiError> {
    caller.require(Permission::Read)?;
    let mut out = Vec::new();
    for i in state.store.list_integrations(caller.tenant_id).await? {
        out.push(integrations::view(&state, &i).await?);
    }
    Ok(Json(out))
}

/// Connect: validates the credentials, tests them against the vendor and creates the
/// integration only if the vendor accepted them.
#[utoipa::path(post, path = "/api/v1/integrations", tag = "integrations", request_body = ConnectRequest,
    responses((status = 201, body = IntegrationView), (status = 422, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn connect(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<ConnectRequest>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Permission::Manage)?;
    let i = integrations::connect(
        &state,
        caller.tenant_id,
        &req.provider,
        req.name.as_deref(),
        &req.credentials,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(integrations::view(&state, &i).await?),
    ))
}

#[utoipa::path(get, path = "/api/v1/integrations/{id}", tag = "integrations",
    params(("id" = i64, Path, description = "Integration id")),
    responses((status = 200, body = IntegrationView), (status = 404, body = ErrorBody)))]
pub async fn get_integration(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<IntegrationView>, ApiError> {
    caller.require(Permission::Read)?;
    let i = state
        .store
        .get_integration(caller.tenant_id, parse_id(&id)?)
        .await?;
    Ok(Json(integrations::view(&state, &i).await?))
}

#[utoipa::path(patch, path = "/api/v1/integrations/{id}", tag = "integrations", request_body = RenameRequest,
    params(("id" = i64, Path, description = "Integration id")),
    responses((status = 200, body = IntegrationView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn rename(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<RenameRequest>,
) -> Result<Json<IntegrationView>, ApiError> {
    caller.require(Permission::Write)?;
    let i = integrations::rename(
        &state,
        caller.tenant_id,
        parse_id(&id)?,
        req.name.as_deref(),
    )
    .await?;
    Ok(Json(integrations::view(&state, &i).await?))
}

/// Re-runs the connection test with the stored credentials; the status follows the result.
#[utoipa::path(post, path = "/api/v1/integrations/{id}/test", tag = "integrations",
    params(("id" = i64, Path, description = "Integration id")),
    responses((status = 200, body = IntegrationView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn test(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<IntegrationView>, ApiError> {
    caller.require(Permission::Manage)?;
    let i = integrations::test(&state, caller.tenant_id, parse_id(&id)?).await?;
    Ok(Json(integrations::view(&state, &i).await?))
}

/// Replaces credentials, or reconnects a disconnected integration.
#[utoipa::path(put, path = "/api/v1/integrations/{id}/credentials", tag = "integrations", request_body = CredentialsRequest,
    params(("id" = i64, Path, description = "Integration id")),
    responses((status = 200, body = IntegrationView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_credentials(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<CredentialsRequest>,
) -> Result<Json<IntegrationView>, ApiError> {
    caller.require(Permission::Manage)?;
    let i = integrations::update_credentials(
        &state,
        caller.tenant_id,
        parse_id(&id)?,
        &req.credentials,
    )
    .await?;
    Ok(Json(integrations::view(&state, &i).await?))
}

/// Removes the stored credentials; the integration shows Disconnected and keeps its synced data.
#[utoipa::path(post, path = "/api/v1/integrations/{id}/disconnect", tag = "integrations",
    params(("id" = i64, Path, description = "Integration id")),
    responses((status = 200, body = IntegrationView), (status = 404, body = ErrorBody)))]
pub async fn disconnect(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<IntegrationView>, ApiError> {
    caller.require(Permission::Manage)?;
    let i = integrations::disconnect(&state, caller.tenant_id, parse_id(&id)?).await?;
    Ok(Json(integrations::view(&state, &i).await?))
}

#[utoipa::path(delete, path = "/api/v1/integrations/{id}", tag = "integrations",
    params(("id" = i64, Path, description = "Integration id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Permission::Manage)?;
    integrations::delete(&state, caller.tenant_id, parse_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/companies", tag = "companies",
    responses((status = 200, body = Vec<Company>), (status = 401, body = ErrorBody)))]
pub async fn list_companies(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<Company>>, ApiError> {
    caller.require(Permission::Read)?;
    Ok(Json(state.store.list_companies(caller.tenant_id).await?))
}

#[utoipa::path(post, path = "/api/v1/companies", tag = "companies", request_body = CreateCompanyRequest,
    responses((status = 201, body = Company), (status = 422, body = ErrorBody)))]
pub async fn create_company(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateCompanyRequest>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Permission::Write)?;
    let name = parse_name("name", &req.name)?;
    let c = state
        .store
        .create_company(caller.tenant_id, &name, state.now())
        .await?;
    Ok((StatusCode::CREATED, Json(c)))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "mspbridge API", description = "Integrations hub for MSP client portals. Authenticate with `Authorization: Bearer <token>` (see `mspbridge admin create-token`)."),
    paths(me, list_providers, list_integrations, connect, get_integration, rename, test, update_credentials, disconnect, delete, list_companies, create_company,
        crate::sync_api::get_options, crate::sync_api::put_options, crate::sync_api::sync_now, crate::sync_api::refresh_vocabulary, crate::sync_api::role_preview, crate::sync_api::reactivate, crate::sync_api::quick_sync, crate::sync_api::clear_tickets, crate::sync_api::list_runs, crate::sync_api::get_run,
        crate::mapping_api::get_mapping, crate::mapping_api::list_integration_companies, crate::mapping_api::put_link, crate::mapping_api::delete_link,
        crate::mapping_api::post_quick_match, crate::mapping_api::post_apply, crate::mapping_api::post_undo, crate::mapping_api::get_audit, crate::tickets_api::create_ticket, crate::tickets_api::list_tickets, crate::tickets_api::get_ticket, crate::tickets_api::add_note, crate::tickets_api::set_status, crate::tickets_api::list_outbox, crate::tickets_api::retry_outbox, crate::tickets_api::discard_outbox, crate::technicians_api::list, crate::technicians_api::update, crate::mapping_api::post_import,
        crate::mapping_api::delete_company, crate::mapping_api::list_blocked, crate::mapping_api::post_unblock,
        crate::companies_api::list_users, crate::companies_api::get_default_import_role, crate::companies_api::put_default_import_role,
        crate::devices::list_devices, crate::devices::get_device, crate::devices::post_refresh, crate::devices::list_alerts, crate::devices::post_resolve, crate::devices::list_device_types, crate::devices::create_device_type,
        crate::devices::list_type_mappings, crate::devices::put_type_mapping, crate::devices::list_staged, crate::devices::post_devices_import, crate::devices::post_devices_ignore,
        crate::m365::list_setup, crate::m365::list_customer_tenants, crate::m365::post_consent, crate::m365::put_applicable, crate::m365::post_disconnect, crate::m365::get_company, crate::m365::post_import_users, crate::m365::get_overview,
        crate::billing::get_company_billing, crate::billing::post_create_customer, crate::billing::post_portal, crate::billing::post_portal_access, crate::billing::delete_portal_access,
        crate::billing::get_past_due, crate::billing::get_invoices, crate::billing::get_webhook, crate::billing::client_get_billing, crate::billing::client_get_invoice, crate::billing::client_post_portal,
        crate::training::post_catalogue, crate::training::post_team_progress, crate::training::get_courses, crate::training::get_training_companies, crate::training::post_premium, crate::training::get_company_training, crate::training::put_company_training,
        crate::training::post_progress, crate::training::get_users_csv, crate::training::get_training_usage, crate::training::post_usage_stripe, crate::training::get_prices),
    components(schemas(ErrorBody, IntegrationView, ConnectRequest, RenameRequest, CredentialsRequest, CreateCompanyRequest, Me)),
    modifiers(&BearerAuth, &Complete),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Completes every operation the same way, so the document passes
/// `openapi-spec-validator` and says what a client must handle: a summary (from the
/// handler's doc comment, else its name), a description on every response, and the error
/// answers (`ErrorBody`) every operation can give — 401 (no or unknown token), 403 (the
/// role lacks the permission), 404 with a path id, 422 with parameters or a body.
struct Complete;

fn error_response(description: &str) -> utoipa::openapi::Response {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

fn status_description(status: &str) -> &'static str {
    match status {
        "200" => "OK",
        "201" => "Created",
        "202" => "Accepted",
        "204" => "Done; no body",
        "400" => "The request is malformed",
        "401" => "No token, or a token that is unknown or revoked",
        "403" => "The caller's role lacks the permission",
        "404" => "No such record in the caller's tenant",
        "409" => "The record's state does not allow it now (the message says why)",
        "422" => "Invalid input; `field` names it",
        "429" => "Too many requests; retry later",
        "502" => "The PSA refused or failed; the message is the vendor's",
        _ => "See the error body",
    }
}

impl utoipa::Modify for Complete {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::path::ParameterIn;
        for (path, item) in openapi.paths.paths.iter_mut() {
            let has_path_id = path.contains('{');
            let ops = [
                item.get.as_mut(),
                item.put.as_mut(),
                item.post.as_mut(),
                item.delete.as_mut(),
                item.patch.as_mut(),
            ];
            for op in ops.into_iter().flatten() {
                if op.summary.as_deref().is_none_or(|s| s.trim().is_empty()) {
                    let name = op.operation_id.clone().unwrap_or_else(|| path.clone());
                    let mut summary = name.replace('_', " ");
                    if let Some(first) = summary.get(..1) {
                        summary = first.to_uppercase() + &summary[1..];
                    }
                    op.summary = Some(summary);
                }
                let mut has_input = op.request_body.is_some();
                for p in op.parameters.iter_mut().flatten() {
                    if let RefOr::T(p) = p {
                        // A parameter not in the path template is a query parameter.
                        if matches!(p.parameter_in, ParameterIn::Path)
                            && !path.contains(&format!("{{{}}}", p.name))
                        {
                            p.parameter_in = ParameterIn::Query;
                        }
                        has_input = true;
                    }
                }
                let responses = &mut op.responses.responses;
                for (status, r) in responses.iter_mut() {
                    if let RefOr::T(r) = r
                        && r.description.trim().is_empty()
                    {
                        r.description = status_description(status).to_string();
                    }
                }
                let mut wanted = vec!["401", "403"];
                if has_path_id {
                    wanted.push("404");
                }
                if has_input {
                    wanted.push("422");
                }
                for status in wanted {
                    responses
                        .entry(status.to_string())
                        .or_insert_with(|| RefOr::T(error_response(status_description(status))));
                }
            }
        }
    }
}

/// The OpenAPI document as pretty JSON (`mspbridge openapi`, validated in CI).
pub fn openapi_json() -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(&<ApiDoc as utoipa::OpenApi>::openapi())
}

pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(<ApiDoc as utoipa::OpenApi>::openapi())
}
