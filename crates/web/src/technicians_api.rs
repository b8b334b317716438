//! Technicians (staff users) with their PSA links, and portal edits written back.
//!
//! An imported technician is owned by its PSA: the next sync brings the PSA's name, email
//! and active flag. So a portal edit of a linked technician is first written to every PSA
//! it is linked to, as far as that PSA's API allows (`technicians::capability`); a field a
//! linked PSA cannot take is refused before anything is written (the sync would undo it),
//! and a vendor's refusal leaves the portal unchanged. A technician linked to nothing is
//! edited in the portal only.

use axum::Json;
use axum::extract::{Path, State};
use mspbridge_domain::StaffUserId;
use mspbridge_domain::auth::{Permission, StaffRole};
use mspbridge_domain::integration::IntegrationStatus;
use mspbridge_domain::model::{LinkedRecord, StaffUser};
use mspbridge_providers::technicians::{self, TechnicianCapability, TechnicianUpdate};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::api::{ApiJson, path_id};
use crate::auth::{Actor, Caller};
use crate::error::{ApiError, ErrorBody};

/// A technician's link to one PSA and what that PSA takes from the portal.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TechnicianLink {
    pub integration_id: i64,
    pub provider: String,
    pub external_id: String,
    #[schema(value_type = Object)]
    pub writes: Option<TechnicianCapability>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TechnicianView {
    #[schema(value_type = Object)]
    pub technician: StaffUser,
    pub links: Vec<TechnicianLink>,
}

/// Any of the three; the others stay as they are.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TechnicianBody {
    pub name: Option<String>,
    pub email: Option<String>,
    pub active: Option<bool>,
}

async fn links(
    state: &AppState,
    caller: &Caller,
    id: StaffUserId,
) -> Result<Vec<(mspbridge_domain::integration::Integration, TechnicianLink)>, ApiError> {
    let mut out = Vec::new();
    for i in state.store.list_integrations(caller.tenant_id).await? {
        if i.status == IntegrationStatus::Disconnected {
            continue;
        }
        if let Some(l) = state
            .store
            .find_local_link(caller.tenant_id, i.id, LinkedRecord::StaffUser, id.0)
            .await?
        {
            let link = TechnicianLink {
                integration_id: i.id.0,
                provider: i.provider.descriptor().name.to_string(),
                external_id: l.external_id,
                writes: technicians::capability(i.provider),
            };
            out.push((i, link));
        }
    }
    Ok(out)
}

async fn find(state: &AppState, caller: &Caller, id: StaffUserId) -> Result<StaffUser, ApiError> {
    state
        .store
        .list_staff_users(caller.tenant_id)
        .await?
        .into_iter()
        .find(|s| s.id == id)
        .ok_or(ApiError::NotFound)
}

/// Every technician with its PSA links.
pub async fn list_service(
    state: &AppState,
    caller: &Caller,
) -> Result<Vec<TechnicianView>, ApiError> {
    caller.require(Permission::Read)?;
    // Three queries whatever the number of technicians and integrations.
    let integrations: std::collections::HashMap<_, _> = state
        .store
        .list_integrations(caller.tenant_id)
        .await?
        .into_iter()
        .filter(|i| i.status != IntegrationStatus::Disconnected)
        .map(|i| (i.id, i))
        .collect();
    let mut by_user: std::collections::HashMap<i64, Vec<TechnicianLink>> =
        std::collections::HashMap::new();
    for l in state
        .store
        .links_of_kind(caller.tenant_id, LinkedRecord::StaffUser)
        .await?
    {
        let Some(i) = integrations.get(&l.integration_id) else {
            continue;
        };
        by_user.entry(l.local_id).or_default().push(TechnicianLink {
            integration_id: i.id.0,
            provider: i.provider.descriptor().name.to_string(),
            external_id: l.external_id,
            writes: technicians::capability(i.provider),
        });
    }
    Ok(state
        .store
        .list_staff_users(caller.tenant_id)
        .await?
        .into_iter()
        .map(|s| TechnicianView {
            links: by_user.remove(&s.id.0).unwrap_or_default(),
            technician: s,
        })
        .collect())
}

#[utoipa::path(get, path = "/api/v1/technicians", tag = "technicians",
    responses((status = 200, body = [TechnicianView])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<TechnicianView>>, ApiError> {
    Ok(Json(list_service(&state, &caller).await?))
}

/// Changes a technician's name, email or active flag, written first to each PSA it is
/// linked to that allows it.
#[utoipa::path(patch, path = "/api/v1/technicians/{id}", tag = "technicians", request_body = TechnicianBody,
    params(("id" = i64, Path)),
    responses((status = 200, body = TechnicianView), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<TechnicianBody>,
) -> Result<Json<TechnicianView>, ApiError> {
    let id = path_id(&raw, "id", "a technician id").map(StaffUserId)?;
    Ok(Json(update_service(&state, &caller, id, &body).await?))
}

/// The edit (API and form).
pub async fn update_service(
    state: &AppState,
    caller: &Caller,
    id: StaffUserId,
    body: &TechnicianBody,
) -> Result<TechnicianView, ApiError> {
    caller.require(Permission::Manage)?;
    let current = find(state, caller, id).await?;
    // An owner's account is changed by an owner only (an admin cannot lock the owner out).
    if current.role == StaffRole::Owner && caller.role != StaffRole::Owner {
        return Err(ApiError::Forbidden("Owner"));
    }
    let name = match &body.name {
        Some(n) if n.trim().is_empty() => return Err(ApiError::field("name", "enter a name")),
        Some(n) if n.trim().chars().count() > 200 => {
            return Err(ApiError::field("name", "at most 200 characters"));
        }
        Some(n) => n.trim().to_string(),
        None => current.name.clone(),
    };
    let email = match &body.email {
        Some(e) => {
            let e = e.trim().to_lowercase();
            let ok = e.len() <= 254
                && e.split_once('@').is_some_and(|(local, domain)| {
                    !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
                })
                && !e.chars().any(char::is_whitespace);
            if !ok {
                return Err(ApiError::field("email", "enter an email address"));
            }
            e
        }
        None => current.email.clone(),
    };
    let active = body.active.unwrap_or(current.active);
    let mut changed = Vec::new();
    if name != current.name {
        changed.push("name");
    }
    if email != current.email {
        changed.push("email");
    }
    if active != current.active {
        changed.push("active");
    }
    let linked = links(state, caller, id).await?;
    let view = |technician| TechnicianView {
        technician,
        links: linked.iter().map(|(_, l)| l.clone()).collect(),
    };
    if changed.is_empty() {
        return Ok(view(current));
    }
    if !active && matches!(&caller.actor, Actor::Staff { id: me, .. } if *me == id) {
        return Err(ApiError::Conflict(
            "you cannot deactivate yourself; ask another admin".into(),
        ));
    }
    // Every linked PSA must take every changed field, or the next sync would undo it.
    for (_, l) in &linked {
        let refused = match &l.writes {
            Some(c) => c.refuses(&changed).map(|f| (f, c.how)),
            None => changed
                .first()
                .map(|f| (*f, "its connector cannot write technicians")),
        };
        if let Some((field, how)) = refused {
            return Err(ApiError::field(
                field,
                format!(
                    "{} cannot take this change from the portal ({how}); the technician is linked to it, so change it in {} and the next sync brings it here",
                    l.provider, l.provider
                ),
            ));
        }
    }
    let (first_name, last_name) = TechnicianUpdate::split_name(&name);
    let update = TechnicianUpdate {
        first_name,
        last_name,
        email: email.clone(),
        active,
    };
    let mut written: Vec<String> = Vec::new();
    for (integration, l) in &linked {
        let provider = integration.provider.descriptor().name;
        let failed = |message: String| {
            let done = if written.is_empty() {
                "nothing was changed".to_string()
            } else {
                format!(
                    "{} already took it and the next sync brings it here",
                    written.join(", ")
                )
            };
            ApiError::VendorWrite {
                provider,
                message: format!("{message}; the portal keeps the old values ({done})"),
            }
        };
        let creds = crate::integrations::stored_credentials(state, integration).await?;
        let writer = match state
            .providers
            .technician_writer(
                integration.provider,
                &creds,
                mspbridge_providers::http::RetryPolicy::interactive(),
            )
            .await
        {
            Some(Ok(w)) => w,
            Some(Err(e)) => return Err(failed(e.to_string())),
            None => return Err(failed("no connector".into())),
        };
        if let Err(e) = writer.update_technician(&l.external_id, &update).await {
            tracing::warn!(integration_id = integration.id.0, technician = id.0, error = %e, "technician not written back");
            return Err(failed(e.to_string()));
        }
        tracing::info!(
            integration_id = integration.id.0,
            technician = id.0,
            fields = ?changed,
            "technician written back"
        );
        written.push(provider.to_string());
    }
    let saved = state
        .store
        .update_staff_user(caller.tenant_id, id, &name, &email, active, state.now())
        .await?;
    Ok(view(saved))
}
