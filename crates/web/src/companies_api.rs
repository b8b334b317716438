//! A company's users and its Default Import Role (Company Defaults), as the company page
//! shows them: `GET /api/v1/companies/{company_id}/users`,
//! `GET`/`PUT /api/v1/companies/{company_id}/default-import-role`. The UI saves the role through
//! [`set_default_import_role`] too.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use mspbridge_domain::auth::Permission;
use mspbridge_domain::model::{CompanyDefaults, CompanyUser};
use mspbridge_domain::{CompanyId, RoleId};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::api::{ApiJson, path_id};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};

fn company_id(raw: &str) -> Result<CompanyId, ApiError> {
    path_id(raw, "id", "a company id").map(CompanyId)
}

/// Saves a company's Default Import Role (`None`: inherit from its integrations). The role
/// must be one of the tenant's; only future auto-imports use it (users already imported
/// keep their role).
pub(crate) async fn set_default_import_role(
    state: &AppState,
    caller: &Caller,
    company: CompanyId,
    role: Option<RoleId>,
) -> Result<CompanyDefaults, ApiError> {
    caller.require(Permission::Write)?;
    state.store.get_company(caller.tenant_id, company).await?;
    if let Some(r) = role
        && !state
            .store
            .list_roles(caller.tenant_id)
            .await?
            .iter()
            .any(|x| x.id == r)
    {
        return Err(ApiError::field(
            "default_import_role",
            format!("role {} does not exist", r.0),
        ));
    }
    Ok(state
        .store
        .set_company_defaults(caller.tenant_id, company, role, state.now())
        .await?)
}

/// A company user with its role's name.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CompanyUserView {
    #[serde(flatten)]
    pub user: CompanyUser,
    /// The name of `role_id`.
    pub role: String,
}

/// A company's users (imported and manual), with the role each has and why.
#[utoipa::path(get, path = "/api/v1/companies/{company_id}/users", tag = "companies",
    params(("company_id" = i64, Path, description = "Company id")),
    responses((status = 200, description = "The company's users, by last and first name", body = [CompanyUserView]),
        (status = 404, description = "No such company in the caller's tenant", body = ErrorBody)))]
pub async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<CompanyUserView>>, ApiError> {
    caller.require(Permission::Read)?;
    let id = company_id(&id)?;
    state.store.get_company(caller.tenant_id, id).await?;
    let roles: BTreeMap<RoleId, String> = state
        .store
        .list_roles(caller.tenant_id)
        .await?
        .into_iter()
        .map(|r| (r.id, r.name))
        .collect();
    let users = state
        .store
        .list_company_users(caller.tenant_id, id)
        .await?
        .into_iter()
        .map(|u| CompanyUserView {
            role: roles.get(&u.role_id).cloned().unwrap_or_default(),
            user: u,
        })
        .collect();
    Ok(Json(users))
}

/// A company's Default Import Role: its own override, or what it inherits.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DefaultImportRole {
    pub company_id: CompanyId,
    /// The company's own role for auto-imported contacts; null: inherited.
    pub default_import_role: Option<RoleId>,
    /// The name of `default_import_role`.
    pub role_name: Option<String>,
    /// What it inherits otherwise, per linked integration ("Inheriting from Halo PSA: Viewer").
    pub inherited: Vec<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DefaultImportRoleRequest {
    /// A role id from the tenant's roles, or null to inherit.
    pub default_import_role: Option<RoleId>,
}

async fn view(
    state: &AppState,
    caller: &Caller,
    company: CompanyId,
    role: Option<RoleId>,
) -> Result<DefaultImportRole, ApiError> {
    let roles: BTreeMap<RoleId, String> = state
        .store
        .list_roles(caller.tenant_id)
        .await?
        .into_iter()
        .map(|r| (r.id, r.name))
        .collect();
    Ok(DefaultImportRole {
        company_id: company,
        default_import_role: role,
        role_name: role.and_then(|r| roles.get(&r).cloned()),
        inherited: crate::ui_sync::inherited_roles(state, caller, company, &roles).await?,
    })
}

/// The company's Default Import Role (Company Defaults), or what it inherits.
#[utoipa::path(get, path = "/api/v1/companies/{company_id}/default-import-role", tag = "companies",
    params(("company_id" = i64, Path, description = "Company id")),
    responses((status = 200, description = "The company's Default Import Role", body = DefaultImportRole),
        (status = 404, description = "No such company in the caller's tenant", body = ErrorBody)))]
pub async fn get_default_import_role(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DefaultImportRole>, ApiError> {
    caller.require(Permission::Read)?;
    let id = company_id(&id)?;
    state.store.get_company(caller.tenant_id, id).await?;
    let defaults = state.store.company_defaults(caller.tenant_id, id).await?;
    Ok(Json(
        view(&state, &caller, id, defaults.default_import_role).await?,
    ))
}

/// Sets (or, with null, clears) the company's Default Import Role; it applies to contacts
/// imported from now on.
#[utoipa::path(put, path = "/api/v1/companies/{company_id}/default-import-role", tag = "companies",
    params(("company_id" = i64, Path, description = "Company id")),
    request_body = DefaultImportRoleRequest,
    responses((status = 200, description = "Saved", body = DefaultImportRole),
        (status = 404, description = "No such company in the caller's tenant", body = ErrorBody),
        (status = 422, description = "Not one of the tenant's roles (`field`: default_import_role)", body = ErrorBody)))]
pub async fn put_default_import_role(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<DefaultImportRoleRequest>,
) -> Result<Json<DefaultImportRole>, ApiError> {
    let id = company_id(&id)?;
    let saved = set_default_import_role(&state, &caller, id, req.default_import_role).await?;
    Ok(Json(
        view(&state, &caller, id, saved.default_import_role).await?,
    ))
}
