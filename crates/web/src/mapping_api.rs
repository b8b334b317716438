//! The company mapping under `/api/v1`: the grid (portal companies × integrations), each
//! integration's company list, link / swap / unlink, Advanced Quick Match with its review
//! and one-operation apply, the undo of an applied batch, and the audit trail.

use std::collections::{HashMap, HashSet};

use axum::Json;
use axum::extract::{Path, State};
use mspbridge_domain::auth::Permission;
use mspbridge_domain::catalogue::Category;
use mspbridge_domain::model::LinkedRecord;
use mspbridge_domain::{CompanyId, IntegrationId};
use mspbridge_matching::{Candidate, DEFAULT_THRESHOLD, quick_match};
use mspbridge_store::mapping::{LinkOutcome, LinkRequest, MappingQuery, Missing};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::api::{ApiJson, parse_id};
use crate::auth::{Actor, Caller};
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiQuery;

/// Rows per grid page unless asked otherwise.
pub const PAGE: i64 = 50;

pub(crate) fn actor(c: &Caller) -> String {
    match &c.actor {
        Actor::Staff { name, email, .. } => format!("{name} <{email}>"),
        Actor::Token { name } => format!("API token '{name}'"),
    }
}

fn company_id(raw: &str) -> Result<CompanyId, ApiError> {
    crate::api::path_id(raw, "company_id", "a company id").map(CompanyId)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ColumnView {
    pub integration_id: i64,
    pub provider: String,
    /// The nickname, or the provider's name.
    pub label: String,
    pub status: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CellView {
    pub external_id: String,
    pub name: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RowView {
    pub company_id: i64,
    pub name: String,
    pub active: bool,
    /// One cell per column, in column order; `null` where the company has no link.
    pub cells: Vec<Option<CellView>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MappingView {
    /// Portal companies matching the search and filter (every page).
    pub total: i64,
    pub offset: i64,
    pub limit: i64,
    pub columns: Vec<ColumnView>,
    pub rows: Vec<RowView>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MappingParams {
    /// Part of the portal company name.
    pub search: Option<String>,
    /// `any` (missing a link to any integration) or an integration id.
    pub missing: Option<String>,
    pub offset: Option<i64>,
    pub limit: Option<i64>,
}

pub async fn columns(state: &AppState, caller: &Caller) -> Result<Vec<ColumnView>, ApiError> {
    Ok(state
        .store
        .list_integrations(caller.tenant_id)
        .await?
        .into_iter()
        .filter(|i| i.provider.descriptor().has_companies())
        .map(|i| ColumnView {
            integration_id: i.id.0,
            provider: i.provider.slug().to_string(),
            label: i
                .nickname
                .clone()
                .unwrap_or_else(|| i.provider.descriptor().name.to_string()),
            status: i.status.label().to_string(),
        })
        .collect())
}

pub async fn mapping_view(
    state: &AppState,
    caller: &Caller,
    p: &MappingParams,
) -> Result<MappingView, ApiError> {
    let columns = columns(state, caller).await?;
    let missing = match p.missing.as_deref().map(str::trim) {
        None | Some("") | Some("none") => Missing::No,
        Some("any") => Missing::Any,
        Some(raw) => {
            let id = parse_id(raw).map_err(|_| {
                ApiError::field(
                    "missing",
                    format!("'{raw}' is neither 'any' nor an integration id"),
                )
            })?;
            if !columns.iter().any(|c| c.integration_id == id.0) {
                return Err(ApiError::field(
                    "missing",
                    format!("integration {raw} does not exist"),
                ));
            }
            Missing::Integration(id)
        }
    };
    let limit = p.limit.unwrap_or(PAGE);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::field("limit", "must be from 1 to 500"));
    }
    let offset = p.offset.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::field("offset", "must not be negative"));
    }
    let page = state
        .store
        .mapping_page(
            caller.tenant_id,
            &MappingQuery {
                search: p.search.clone().unwrap_or_default(),
                missing,
                offset,
                limit,
            },
        )
        .await?;
    let rows = page
        .rows
        .into_iter()
        .map(|r| {
            let mut by: HashMap<i64, CellView> = r
                .cells
                .into_iter()
                .map(|c| {
                    (
                        c.integration_id.0,
                        CellView {
                            external_id: c.external_id,
                            name: c.name,
                        },
                    )
                })
                .collect();
            RowView {
                company_id: r.company_id.0,
                name: r.name,
                active: r.active,
                cells: columns
                    .iter()
                    .map(|c| by.remove(&c.integration_id))
                    .collect(),
            }
        })
        .collect();
    Ok(MappingView {
        total: page.total,
        offset,
        limit,
        columns,
        rows,
    })
}

/// The grid: portal companies (rows) against every integration (columns).
#[utoipa::path(get, path = "/api/v1/company-mapping", tag = "mapping", params(MappingParams),
    responses((status = 200, body = MappingView), (status = 422, body = ErrorBody)))]
pub async fn get_mapping(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<MappingParams>,
) -> Result<Json<MappingView>, ApiError> {
    caller.require(Permission::Read)?;
    Ok(Json(mapping_view(&state, &caller, &p).await?))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IntegrationCompanyView {
    pub integration_id: i64,
    pub external_id: String,
    pub name: String,
    pub active: bool,
    /// `auto`, or `unlinked` when an admin unlinked it (the sync does not import it again).
    pub import_state: String,
    pub linked_company_id: Option<i64>,
    pub linked_company_name: Option<String>,
    /// Web/email domains the integration holds for the company (matched before names).
    pub domains: Vec<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    pub search: Option<String>,
    /// Only companies not linked to a portal company.
    pub unlinked: Option<bool>,
    /// Companies to skip (the `X-Next-Offset` of the previous page); default 0.
    pub offset: Option<i64>,
    /// 1–1000, default 100.
    pub limit: Option<i64>,
}

/// One integration's companies as last synced (the grid's picker), by name.
///
/// The body is one page (a bare array). `X-Total-Count` says how many match; while more
/// follow, `X-Next-Offset` and `Link: <…?offset=…&limit=…>; rel="next"`.
#[utoipa::path(get, path = "/api/v1/integrations/{id}/companies", tag = "mapping",
    params(("id" = i64, Path, description = "Integration id"), ListParams),
    responses(
        (status = 200, description = "One page of the integration's companies", body = [IntegrationCompanyView],
            headers(
                ("X-Total-Count" = i64, description = "Companies matching the filters, on every page"),
                ("X-Next-Offset" = i64, description = "`offset` of the next page; absent on the last page"),
                ("Link" = String, description = "`<…>; rel=\"next\"` for the next page; absent on the last page"),
            )),
        (status = 404, description = "No such integration", body = ErrorBody),
        (status = 422, description = "A query parameter is invalid (names it)", body = ErrorBody)))]
pub async fn list_integration_companies(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    ApiQuery(p): ApiQuery<ListParams>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    caller.require(Permission::Read)?;
    let id = parse_id(&raw)?;
    state.store.get_integration(caller.tenant_id, id).await?;
    let page = crate::paging::Paging::new(p.offset, p.limit, 100, 1000)?;
    let search = p.search.as_deref().unwrap_or_default();
    let unlinked = p.unlinked.unwrap_or(false);
    let (list, total) = state
        .store
        .integration_companies_page(
            caller.tenant_id,
            Some(id),
            search,
            unlinked,
            page.offset,
            page.limit,
        )
        .await?;
    let mut filters = Vec::new();
    if !search.is_empty() {
        filters.push(("search", search.to_string()));
    }
    if unlinked {
        filters.push(("unlinked", "true".to_string()));
    }
    let headers = page.headers(
        &format!("/api/v1/integrations/{}/companies", id.0),
        &filters,
        list.len(),
        total,
    );
    let list: Vec<IntegrationCompanyView> = list
        .into_iter()
        .map(|c| IntegrationCompanyView {
            integration_id: c.integration_id.0,
            external_id: c.external_id,
            name: c.name,
            active: c.active,
            import_state: c.import_state,
            linked_company_id: c.linked_to.as_ref().map(|l| l.0.0),
            linked_company_name: c.linked_to.map(|l| l.1),
            domains: c.domains,
        })
        .collect();
    Ok((headers, Json(list)).into_response())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LinkOutcomeView {
    pub integration_id: i64,
    pub external_id: String,
    pub before_company_id: Option<i64>,
    pub after_company_id: Option<i64>,
    /// The integration company the portal company was linked to before (now unlinked).
    pub displaced_external_id: Option<String>,
}

impl From<LinkOutcome> for LinkOutcomeView {
    fn from(o: LinkOutcome) -> Self {
        Self {
            integration_id: o.integration.0,
            external_id: o.external_id,
            before_company_id: o.before.map(|c| c.0),
            after_company_id: o.after.map(|c| c.0),
            displaced_external_id: o.displaced,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkBody {
    /// The integration company to link to the portal company.
    pub external_id: String,
}

fn not_known(e: ApiError, what: String) -> ApiError {
    match e {
        ApiError::NotFound => ApiError::field("external_id", what),
        other => other,
    }
}

/// Links an integration company to a portal company (saved at once). If the portal company
/// was linked to another company of that integration, that one is unlinked (a swap); if
/// the integration company was linked to another portal company, it moves.
#[utoipa::path(put, path = "/api/v1/company-mapping/{company_id}/{integration_id}", tag = "mapping",
    request_body = LinkBody,
    params(("company_id" = i64, Path), ("integration_id" = i64, Path)),
    responses((status = 200, body = LinkOutcomeView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_link(
    State(state): State<AppState>,
    caller: Caller,
    Path((company, integration)): Path<(String, String)>,
    ApiJson(body): ApiJson<LinkBody>,
) -> Result<Json<LinkOutcomeView>, ApiError> {
    caller.require(Permission::Write)?;
    let company = company_id(&company)?;
    let integration = parse_id(&integration)?;
    state.store.get_company(caller.tenant_id, company).await?;
    state
        .store
        .get_integration(caller.tenant_id, integration)
        .await?;
    let external_id = body.external_id.trim().to_string();
    if external_id.is_empty() {
        return Err(ApiError::field("external_id", "must not be empty"));
    }
    let mut out = state
        .store
        .apply_company_links(
            caller.tenant_id,
            &[LinkRequest {
                integration,
                external_id: external_id.clone(),
                company: Some(company),
            }],
            "link",
            &actor(&caller),
            None,
            state.now(),
        )
        .await
        .map_err(ApiError::from)
        .map_err(|e| {
            not_known(
                e,
                format!("the integration has no company '{external_id}' (sync it first)"),
            )
        })?;
    crate::devices::mapping_changed(&state, caller.tenant_id, [integration]).await;
    crate::billing::write_back(&state, caller.tenant_id, &out);
    let o = out
        .pop()
        .ok_or_else(|| ApiError::Internal("no link outcome".into()))?;
    Ok(Json(o.into()))
}

/// Unlinks the portal company's link to the integration. The sync will not import the
/// integration company again on its own.
#[utoipa::path(delete, path = "/api/v1/company-mapping/{company_id}/{integration_id}", tag = "mapping",
    params(("company_id" = i64, Path), ("integration_id" = i64, Path)),
    responses((status = 200, body = LinkOutcomeView), (status = 404, body = ErrorBody)))]
pub async fn delete_link(
    State(state): State<AppState>,
    caller: Caller,
    Path((company, integration)): Path<(String, String)>,
) -> Result<Json<LinkOutcomeView>, ApiError> {
    caller.require(Permission::Write)?;
    let company = company_id(&company)?;
    let integration = parse_id(&integration)?;
    let link = state
        .store
        .find_local_link(
            caller.tenant_id,
            integration,
            LinkedRecord::Company,
            company.0,
        )
        .await?
        .ok_or(ApiError::NotFound)?;
    let mut out = state
        .store
        .apply_company_links(
            caller.tenant_id,
            &[LinkRequest {
                integration,
                external_id: link.external_id,
                company: None,
            }],
            "unlink",
            &actor(&caller),
            None,
            state.now(),
        )
        .await?;
    crate::devices::mapping_changed(&state, caller.tenant_id, [integration]).await;
    crate::billing::write_back(&state, caller.tenant_id, &out);
    let o = out
        .pop()
        .ok_or_else(|| ApiError::Internal("no link outcome".into()))?;
    Ok(Json(o.into()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuickMatchBody {
    /// Lowest confidence to propose, 40–100 (default 70).
    pub threshold: Option<u8>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProposalView {
    pub integration_id: i64,
    pub integration: String,
    pub external_id: String,
    pub integration_company: String,
    pub company_id: i64,
    pub company_name: String,
    pub confidence: u8,
    /// "same name", "name 86 %", "same domain (acme.com)".
    pub reason: String,
    /// Why the proposal is doubtful (another integration company wants the same portal
    /// company, or another portal company is almost as close).
    pub ambiguity: Option<String>,
    /// Ticked in the review unless doubtful.
    pub selected: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QuickMatchView {
    pub threshold: u8,
    /// Unlinked integration companies scanned.
    pub scanned: usize,
    pub proposals: Vec<ProposalView>,
}

/// A portal company is known by the domains of every integration company linked to it and
/// the verified domains of its connected Microsoft 365 tenants.
async fn domains_of(
    state: &AppState,
    tenant: mspbridge_domain::TenantId,
    all: &[mspbridge_store::mapping::IntegrationCompany],
) -> Result<HashMap<CompanyId, Vec<String>>, ApiError> {
    let mut portal_domains: HashMap<CompanyId, Vec<String>> = HashMap::new();
    for c in all {
        if let Some((company, _)) = &c.linked_to {
            portal_domains
                .entry(*company)
                .or_default()
                .extend(c.domains.iter().cloned());
        }
    }
    for (company, domain) in state.store.m365_company_domains(tenant).await? {
        portal_domains
            .entry(CompanyId(company))
            .or_default()
            .push(domain);
    }
    Ok(portal_domains)
}

/// [`domains_of`] every integration company.
pub(crate) async fn portal_domains(
    state: &AppState,
    tenant: mspbridge_domain::TenantId,
) -> Result<HashMap<CompanyId, Vec<String>>, ApiError> {
    let all = state
        .store
        .integration_companies(tenant, None, "", false, i64::MAX)
        .await?;
    domains_of(state, tenant, &all).await
}

pub async fn quick_match_view(
    state: &AppState,
    caller: &Caller,
    threshold: u8,
) -> Result<QuickMatchView, ApiError> {
    let integrations = state.store.list_integrations(caller.tenant_id).await?;
    let companies = state.store.list_companies(caller.tenant_id).await?;
    let all = state
        .store
        .integration_companies(caller.tenant_id, None, "", false, i64::MAX)
        .await?;
    let portal_domains = domains_of(state, caller.tenant_id, &all).await?;
    let mut proposals = Vec::new();
    let mut scanned = 0;
    for i in integrations
        .iter()
        .filter(|i| i.status != mspbridge_domain::integration::IntegrationStatus::Disconnected)
    {
        let mine: Vec<_> = all.iter().filter(|c| c.integration_id == i.id).collect();
        let linked: HashSet<CompanyId> = mine
            .iter()
            .filter_map(|c| c.linked_to.as_ref().map(|l| l.0))
            .collect();
        let portal: Vec<Candidate<CompanyId>> = companies
            .iter()
            .filter(|c| !linked.contains(&c.id))
            .map(|c| Candidate {
                domains: portal_domains.get(&c.id).cloned().unwrap_or_default(),
                ..Candidate::named(c.id, c.name.clone())
            })
            .collect();
        let incoming: Vec<Candidate<String>> = mine
            .iter()
            .filter(|c| c.linked_to.is_none())
            .map(|c| Candidate {
                domains: c.domains.clone(),
                ..Candidate::named(c.external_id.clone(), c.name.clone())
            })
            .collect();
        scanned += incoming.len();
        let label = i
            .nickname
            .clone()
            .unwrap_or_else(|| i.provider.descriptor().name.to_string());
        for p in quick_match(&portal, &incoming, threshold) {
            proposals.push(ProposalView {
                integration_id: i.id.0,
                integration: label.clone(),
                selected: p.selected(),
                external_id: p.incoming,
                integration_company: p.incoming_name,
                company_id: p.portal.0,
                company_name: p.portal_name,
                confidence: p.confidence,
                reason: p.reason.to_string(),
                ambiguity: p.ambiguity,
            });
        }
    }
    proposals.sort_by(|a, b| {
        b.confidence
            .cmp(&a.confidence)
            .then(a.integration_company.cmp(&b.integration_company))
    });
    Ok(QuickMatchView {
        threshold,
        scanned,
        proposals,
    })
}

/// Advanced Quick Match: scans every active integration for unlinked companies and
/// proposes portal companies at or above the threshold, for review (nothing is saved).
#[utoipa::path(post, path = "/api/v1/company-mapping/quick-match", tag = "mapping",
    request_body = QuickMatchBody,
    responses((status = 200, body = QuickMatchView), (status = 422, body = ErrorBody)))]
pub async fn post_quick_match(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<QuickMatchBody>,
) -> Result<Json<QuickMatchView>, ApiError> {
    caller.require(Permission::Read)?;
    let threshold = body.threshold.unwrap_or(DEFAULT_THRESHOLD);
    if !(40..=100).contains(&threshold) {
        return Err(ApiError::field("threshold", "must be from 40 to 100"));
    }
    Ok(Json(quick_match_view(&state, &caller, threshold).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyLink {
    pub integration_id: i64,
    pub external_id: String,
    pub company_id: i64,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyBody {
    pub links: Vec<ApplyLink>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApplyView {
    /// Undo it with `POST /api/v1/company-mapping/batches/{batch}/undo`.
    pub batch: String,
    pub applied: usize,
    pub outcomes: Vec<LinkOutcomeView>,
}

/// Checks a batch is one-to-one per integration before anything is written.
pub fn check_batch(links: &[ApplyLink]) -> Result<Vec<LinkRequest>, ApiError> {
    if links.is_empty() {
        return Err(ApiError::field("links", "select at least one proposal"));
    }
    let mut externals = HashSet::new();
    let mut portals = HashSet::new();
    let mut out = Vec::with_capacity(links.len());
    for (n, l) in links.iter().enumerate() {
        if !externals.insert((l.integration_id, l.external_id.as_str())) {
            return Err(ApiError::field(
                &format!("links[{n}].external_id"),
                format!(
                    "'{}' of integration {} is in the batch twice",
                    l.external_id, l.integration_id
                ),
            ));
        }
        if !portals.insert((l.integration_id, l.company_id)) {
            return Err(ApiError::field(
                &format!("links[{n}].company_id"),
                format!(
                    "portal company {} would get two companies of integration {}",
                    l.company_id, l.integration_id
                ),
            ));
        }
        out.push(LinkRequest {
            integration: IntegrationId(l.integration_id),
            external_id: l.external_id.clone(),
            company: Some(CompanyId(l.company_id)),
        });
    }
    Ok(out)
}

/// Applies the accepted proposals in one operation (all or nothing), as one undoable batch.
#[utoipa::path(post, path = "/api/v1/company-mapping/quick-match/apply", tag = "mapping",
    request_body = ApplyBody,
    responses((status = 200, body = ApplyView), (status = 422, body = ErrorBody)))]
pub async fn post_apply(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<ApplyBody>,
) -> Result<Json<ApplyView>, ApiError> {
    caller.require(Permission::Write)?;
    Ok(Json(apply(&state, &caller, &body.links).await?))
}

pub async fn apply(
    state: &AppState,
    caller: &Caller,
    links: &[ApplyLink],
) -> Result<ApplyView, ApiError> {
    let requests = check_batch(links)?;
    let (token, _) = mspbridge_vault::new_token("qm")
        .map_err(|e| ApiError::Internal(format!("batch id: {e}")))?;
    let batch: String = token.chars().take(19).collect();
    let outcomes = state
        .store
        .apply_company_links(
            caller.tenant_id,
            &requests,
            "quick_match",
            &actor(caller),
            Some(&batch),
            state.now(),
        )
        .await
        .map_err(|e| match ApiError::from(e) {
            ApiError::NotFound => ApiError::field(
                "links",
                "a company or integration company in the batch does not exist (any more); run Quick Match again",
            ),
            other => other,
        })?;
    let changed: Vec<IntegrationId> = requests.iter().map(|r| r.integration).collect();
    crate::devices::mapping_changed(state, caller.tenant_id, changed).await;
    crate::billing::write_back(state, caller.tenant_id, &outcomes);
    Ok(ApplyView {
        applied: outcomes.len(),
        batch,
        outcomes: outcomes.into_iter().map(Into::into).collect(),
    })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UndoView {
    pub undone: usize,
}

/// Puts every link of an applied Quick Match batch back as it was before; a sync run's
/// links by name (batch `run-{run id}`, action `auto_link` in the audit) are undone the same
/// way and left unlinked, so the next sync does not link them again.
#[utoipa::path(post, path = "/api/v1/company-mapping/batches/{batch}/undo", tag = "mapping",
    params(("batch" = String, Path)),
    responses((status = 200, body = UndoView), (status = 404, body = ErrorBody)))]
pub async fn post_undo(
    State(state): State<AppState>,
    caller: Caller,
    Path(batch): Path<String>,
) -> Result<Json<UndoView>, ApiError> {
    caller.require(Permission::Write)?;
    let out = state
        .store
        .undo_company_link_batch(caller.tenant_id, batch.trim(), &actor(&caller), state.now())
        .await?;
    let changed: Vec<IntegrationId> = out.iter().map(|o| o.integration).collect();
    crate::devices::mapping_changed(&state, caller.tenant_id, changed).await;
    crate::billing::write_back(&state, caller.tenant_id, &out);
    Ok(Json(UndoView { undone: out.len() }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditView {
    pub at: chrono::DateTime<chrono::Utc>,
    pub actor: String,
    pub action: String,
    pub integration_id: i64,
    pub external_id: String,
    pub before_company_id: Option<i64>,
    pub after_company_id: Option<i64>,
    pub batch: Option<String>,
    /// The integration company's and portal companies' names as they are now (absent once
    /// deleted).
    pub external_name: Option<String>,
    pub before_company_name: Option<String>,
    pub after_company_name: Option<String>,
}

impl From<mspbridge_store::mapping::LinkAudit> for AuditView {
    fn from(a: mspbridge_store::mapping::LinkAudit) -> Self {
        AuditView {
            at: a.at,
            actor: a.actor,
            action: a.action,
            integration_id: a.integration_id.0,
            external_id: a.external_id,
            before_company_id: a.before.map(|c| c.0),
            after_company_id: a.after.map(|c| c.0),
            batch: a.batch,
            external_name: a.external_name,
            before_company_name: a.before_name,
            after_company_name: a.after_name,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Entries to skip (the `X-Next-Offset` of the previous page); default 0.
    pub offset: Option<i64>,
    /// 1–1000, default 100.
    pub limit: Option<i64>,
}

/// Who linked, unlinked or applied a Quick Match (and what a sync linked by name), when,
/// and the before and after; newest first.
///
/// The body is one page (a bare array). `X-Total-Count` says how many entries there are;
/// while more follow, `X-Next-Offset` and `Link: <…?offset=…&limit=…>; rel="next"`.
#[utoipa::path(get, path = "/api/v1/company-mapping/audit", tag = "mapping", params(AuditParams),
    responses(
        (status = 200, description = "One page of the link history, newest first", body = [AuditView],
            headers(
                ("X-Total-Count" = i64, description = "Entries in the link history, on every page"),
                ("X-Next-Offset" = i64, description = "`offset` of the next page; absent on the last page"),
                ("Link" = String, description = "`<…>; rel=\"next\"` for the next page; absent on the last page"),
            )),
        (status = 422, description = "A query parameter is invalid (names it)", body = ErrorBody)))]
pub async fn get_audit(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<AuditParams>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    caller.require(Permission::Read)?;
    let page = crate::paging::Paging::new(p.offset, p.limit, 100, 1000)?;
    let (rows, total) = state
        .store
        .company_link_audit_page(caller.tenant_id, page.offset, page.limit)
        .await?;
    let headers = page.headers("/api/v1/company-mapping/audit", &[], rows.len(), total);
    let rows: Vec<AuditView> = rows.into_iter().map(Into::into).collect();
    Ok((headers, Json(rows)).into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportItem {
    pub external_id: String,
    /// Link to this portal company; leave out to create a new one with the integration
    /// company's name.
    pub company_id: Option<i64>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportBody {
    pub companies: Vec<ImportItem>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImportedView {
    pub external_id: String,
    pub company_id: i64,
    pub created: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImportView {
    pub imported: usize,
    pub created: usize,
    pub companies: Vec<ImportedView>,
}

/// Import companies from an integration (Settings → Companies → Import): each selected
/// integration company is linked to an existing portal company or becomes a new one, in
/// one operation. Duplicates are refused: an integration company already imported, or a
/// new company whose name a portal company already has (link that one instead).
#[utoipa::path(post, path = "/api/v1/integrations/{id}/import", tag = "mapping",
    request_body = ImportBody,
    params(("id" = i64, Path, description = "Integration id")),
    responses((status = 200, body = ImportView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn post_import(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<ImportBody>,
) -> Result<Json<ImportView>, ApiError> {
    caller.require(Permission::Write)?;
    let id = parse_id(&raw)?;
    let integration = state.store.get_integration(caller.tenant_id, id).await?;
    // An RMM's sites map onto existing portal companies only (spec 2.15).
    let links_only = integration.provider.descriptor().category == Category::Rmm;
    if body.companies.is_empty() {
        return Err(ApiError::field("companies", "select at least one company"));
    }
    let listed: HashMap<String, String> = state
        .store
        .integration_companies(caller.tenant_id, Some(id), "", false, i64::MAX)
        .await?
        .into_iter()
        .map(|c| (c.external_id, c.name))
        .collect();
    let portal: HashMap<String, String> = state
        .store
        .list_companies(caller.tenant_id)
        .await?
        .into_iter()
        .map(|c| (mspbridge_matching::normalise(&c.name), c.name))
        .collect();
    let mut seen = HashSet::new();
    let mut new_names: HashMap<String, usize> = HashMap::new();
    let mut items = Vec::with_capacity(body.companies.len());
    for (n, c) in body.companies.iter().enumerate() {
        let field = format!("companies[{n}]");
        let Some(name) = listed.get(&c.external_id) else {
            return Err(ApiError::field(
                &format!("{field}.external_id"),
                format!(
                    "the integration has no company '{}' (sync it first)",
                    c.external_id
                ),
            ));
        };
        if !seen.insert(c.external_id.as_str()) {
            return Err(ApiError::field(
                &format!("{field}.external_id"),
                format!("'{name}' is selected twice"),
            ));
        }
        match c.company_id {
            Some(company) if company <= 0 => {
                return Err(ApiError::field(
                    &format!("{field}.company_id"),
                    "not a company id",
                ));
            }
            Some(_) => {}
            None if links_only => {
                return Err(ApiError::field(
                    &format!("{field}.company_id"),
                    format!(
                        "{}'s sites map onto existing portal companies only: pick the company '{name}' belongs to",
                        integration.provider.descriptor().name
                    ),
                ));
            }
            None => {
                let key = mspbridge_matching::normalise(name);
                if let Some(existing) = portal.get(&key) {
                    return Err(ApiError::field(
                        &format!("{field}.company_id"),
                        format!(
                            "a portal company named '{existing}' already exists: link '{name}' to it instead of creating a duplicate"
                        ),
                    ));
                }
                if let Some(first) = new_names.insert(key, n) {
                    return Err(ApiError::field(
                        &format!("{field}.company_id"),
                        format!(
                            "companies[{first}] would create the same company: link one to the other"
                        ),
                    ));
                }
            }
        }
        items.push((c.external_id.clone(), c.company_id.map(CompanyId)));
    }
    let out = state
        .store
        .import_integration_companies(caller.tenant_id, id, &items, &actor(&caller), state.now())
        .await
        .map_err(|e| match ApiError::from(e) {
            ApiError::NotFound => ApiError::field(
                "companies",
                "a selected company or portal company does not exist (any more)",
            ),
            other => other,
        })?;
    crate::devices::mapping_changed(&state, caller.tenant_id, [id]).await;
    Ok(Json(ImportView {
        imported: out.len(),
        created: out.iter().filter(|o| o.created).count(),
        companies: out
            .into_iter()
            .map(|o| ImportedView {
                external_id: o.external_id,
                company_id: o.company_id.0,
                created: o.created,
            })
            .collect(),
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BlockedView {
    pub integration_id: i64,
    pub external_id: String,
    pub name: String,
}

impl From<mspbridge_store::mapping::IntegrationCompany> for BlockedView {
    fn from(c: mspbridge_store::mapping::IntegrationCompany) -> Self {
        Self {
            integration_id: c.integration_id.0,
            external_id: c.external_id,
            name: c.name,
        }
    }
}

pub async fn delete_company_service(
    state: &AppState,
    caller: &Caller,
    raw: &str,
) -> Result<Vec<BlockedView>, ApiError> {
    caller.require(Permission::Write)?;
    let id = company_id(raw)?;
    let blocked = state
        .store
        .delete_company(caller.tenant_id, id, &actor(caller), state.now())
        .await?;
    Ok(blocked.into_iter().map(Into::into).collect())
}

/// Deletes a portal company (its users with it). Every integration company linked to it
/// is blocked, so later syncs do not import it again; `GET /api/v1/companies/blocked` lists
/// them and each can be unblocked.
#[utoipa::path(delete, path = "/api/v1/companies/{company_id}", tag = "mapping",
    params(("company_id" = i64, Path)),
    responses((status = 200, body = [BlockedView]), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_company(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<Vec<BlockedView>>, ApiError> {
    Ok(Json(delete_company_service(&state, &caller, &raw).await?))
}

/// Blocked Companies: integration companies whose portal company was deleted.
#[utoipa::path(get, path = "/api/v1/companies/blocked", tag = "mapping",
    responses((status = 200, body = [BlockedView])))]
pub async fn list_blocked(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<BlockedView>>, ApiError> {
    caller.require(Permission::Read)?;
    Ok(Json(
        state
            .store
            .blocked_companies(caller.tenant_id)
            .await?
            .into_iter()
            .map(Into::into)
            .collect(),
    ))
}

pub async fn unblock_service(
    state: &AppState,
    caller: &Caller,
    integration: &str,
    external_id: &str,
) -> Result<(), ApiError> {
    caller.require(Permission::Write)?;
    let integration = parse_id(integration)?;
    state
        .store
        .unblock_company(
            caller.tenant_id,
            integration,
            external_id,
            &actor(caller),
            state.now(),
        )
        .await?;
    Ok(())
}

/// Allows a blocked integration company to be imported again (by the next sync); no data
/// comes back with it.
#[utoipa::path(post, path = "/api/v1/integrations/{id}/companies/{external_id}/unblock", tag = "mapping",
    params(("id" = i64, Path), ("external_id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn post_unblock(
    State(state): State<AppState>,
    caller: Caller,
    Path((raw, external_id)): Path<(String, String)>,
) -> Result<axum::http::StatusCode, ApiError> {
    unblock_service(&state, &caller, &raw, &external_id).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}
