//! Training (spec 2.19, Bigger Brains): Premium Training per company (one by one or in
//! bulk, Training manage permission = Manage), each company's BrainStation Team and link-out,
//! the course catalogue and learners' progress imported from BrainStation's files (validated
//! row by row: bad rows reported by line and column, the rest applied, the same file again
//! changes nothing), a company's users exported for BrainStation's user import, and the
//! add-on's usage (premium companies × active users per month), exportable and written to
//! each company's Stripe subscription as the quantity of the training price the admin picks
//! (the same month and quantity never twice).
//!
//! The library is reached through `providers::training::TrainingSource`; its first
//! implementation exchanges files. CSV bodies are posted raw (`Content-Type: text/csv`), so
//! an API client can `curl --data-binary @file.csv`, and the pages read the chosen file in
//! the browser and post it the same way.

use std::collections::{BTreeMap, HashMap};

use askama::Template;
use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Datelike;
use mspbridge_domain::auth::Permission;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::integration::{Integration, IntegrationStatus};
use mspbridge_domain::training::{
    ExportUser, ProgressStatus, RowError, UsageRow, course_key, normalise_title, usage_csv,
};
use mspbridge_domain::{CompanyId, TenantId};
use mspbridge_providers::training::{Delivery, Exchange, TrainingSource};
use mspbridge_store::training::{
    CourseRow, CourseWrite, ProgressRow, ProgressWrite, TrainingCompany, UsageRecord,
};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::api::ApiJson;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiQuery;
use crate::ui::{Shell, UiCaller, error_page, render, shell};

pub fn api_routes() -> Router<AppState> {
    Router::new()
        .route("/training/catalogue", post(post_catalogue))
        .route("/training/progress", post(post_team_progress))
        .route("/training/courses", get(get_courses))
        .route("/training/companies", get(get_training_companies))
        .route("/training/premium", post(post_premium))
        .route("/training/usage", get(get_training_usage))
        .route("/training/usage/stripe", post(post_usage_stripe))
        .route("/training/prices", get(get_prices))
        .route(
            "/companies/{company_id}/training",
            get(get_company_training).put(put_company_training),
        )
        .route(
            "/companies/{company_id}/training/progress",
            post(post_progress),
        )
        .route(
            "/companies/{company_id}/training/users.csv",
            get(get_users_csv),
        )
}

pub fn ui_routes() -> Router<AppState> {
    Router::new()
        .route("/training", get(catalogue_page))
        .route("/training/usage", get(usage_page))
        .route("/training/usage.csv", get(usage_csv_download))
        .route("/companies/{company_id}/training", get(company_page))
}

// ---------------------------------------------------------------------------------------
// Services

/// The tenant's Bigger Brains integration, if connected.
pub async fn training_integration(
    state: &AppState,
    tenant: TenantId,
) -> Result<Option<Integration>, ApiError> {
    Ok(state
        .store
        .list_integrations(tenant)
        .await?
        .into_iter()
        .filter(|i| {
            i.provider == ProviderKind::BiggerBrains && i.status != IntegrationStatus::Disconnected
        })
        .min_by_key(|i| i.id.0))
}

async fn source(state: &AppState, tenant: TenantId) -> Result<Box<dyn TrainingSource>, ApiError> {
    let i = training_integration(state, tenant).await?.ok_or_else(|| {
        ApiError::Conflict(
            "Connect Bigger Brains first (Settings → Integrations): it holds your reseller details"
                .into(),
        )
    })?;
    let creds = crate::integrations::stored_credentials(state, &i).await?;
    state
        .providers
        .training_source(i.provider, &creds)
        .ok_or(ApiError::NotFound)
}

/// What an import did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImportReport {
    /// Data rows read.
    pub rows: usize,
    /// Rows applied (valid), of which `written` changed something.
    pub applied: usize,
    pub written: u64,
    pub unchanged: u64,
    /// Rows refused, each with its line and column.
    pub errors: Vec<RowErrorView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RowErrorView {
    pub line: usize,
    pub column: Option<String>,
    pub message: String,
    /// The whole sentence (`line 7, column "duration": …`).
    pub text: String,
}

impl From<&RowError> for RowErrorView {
    fn from(e: &RowError) -> Self {
        RowErrorView {
            line: e.line,
            column: e.column.clone(),
            message: e.message.clone(),
            text: e.to_string(),
        }
    }
}

fn csv_text(headers: &HeaderMap, body: &[u8]) -> Result<String, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if !(ct.starts_with("text/csv") || ct.starts_with("text/plain")) {
        return Err(ApiError::field(
            "body",
            "send the CSV file itself with Content-Type: text/csv",
        ));
    }
    String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::field("body", "the file is not UTF-8 text (save it as CSV UTF-8)"))
}

/// Imports the course catalogue.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant))]
pub async fn import_catalogue(
    state: &AppState,
    tenant: TenantId,
    text: &str,
) -> Result<ImportReport, ApiError> {
    let src = source(state, tenant).await?;
    let parsed = src
        .catalogue(Exchange::File(text))
        .await
        .map_err(|e| ApiError::field("body", e.to_string()))?;
    let rows: Vec<CourseWrite> = parsed
        .records
        .iter()
        .map(|(_, c)| CourseWrite {
            course_key: c.key.clone(),
            course_id: c.course_id.clone(),
            title: c.title.clone(),
            category: c.category.clone(),
            duration_minutes: i64::from(c.duration_minutes),
            level: c.level.as_str().to_string(),
            url: c.url.clone(),
        })
        .collect();
    let written = state.store.save_courses(tenant, &rows, state.now()).await?;
    tracing::info!(
        rows = parsed.rows,
        applied = rows.len(),
        written,
        refused = parsed.errors.len(),
        "catalogue imported"
    );
    Ok(ImportReport {
        rows: parsed.rows,
        applied: rows.len(),
        written,
        unchanged: rows.len() as u64 - written.min(rows.len() as u64),
        errors: parsed.errors.iter().map(RowErrorView::from).collect(),
    })
}

/// Imports one company's progress file (its Team's export). Learners are matched to the
/// company's portal users by e-mail; courses to the catalogue by id or title.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant, company_id = company.0))]
pub async fn import_progress(
    state: &AppState,
    tenant: TenantId,
    company: CompanyId,
    text: &str,
) -> Result<ImportReport, ApiError> {
    let settings = company_settings(state, tenant, company).await?;
    let team = settings.team_name.clone().filter(|t| !t.trim().is_empty()).ok_or_else(|| {
        ApiError::field(
            "team_name",
            "set the company's BrainStation Team name first: progress files are matched to companies by it",
        )
    })?;
    let src = source(state, tenant).await?;
    let parsed = src
        .progress(&team, Exchange::File(text), state.now())
        .await
        .map_err(|e| ApiError::field("body", e.to_string()))?;
    let courses = state.store.all_courses(tenant).await?;
    let mut by_id: HashMap<String, &CourseRow> = HashMap::new();
    let mut by_title: HashMap<String, &CourseRow> = HashMap::new();
    for c in &courses {
        if let Some(id) = &c.course_id {
            by_id.insert(id.to_ascii_lowercase(), c);
        }
        by_title.insert(normalise_title(&c.title), c);
    }
    let users: HashMap<String, i64> = state
        .store
        .list_company_users(tenant, company)
        .await?
        .into_iter()
        .filter_map(|u| u.email.map(|e| (e.to_lowercase(), u.id.0)))
        .collect();
    let mut errors: Vec<RowErrorView> = parsed.errors.iter().map(RowErrorView::from).collect();
    let mut rows = Vec::new();
    for (line, p) in &parsed.records {
        let course = by_id
            .get(&p.course.to_ascii_lowercase())
            .or_else(|| by_title.get(&normalise_title(&p.course)))
            .copied();
        let (key, title) = match course {
            Some(c) => (c.course_key.clone(), c.title.clone()),
            // A course the catalogue does not have (yet): kept by its name, so the learner's
            // work is not lost; importing the catalogue later does not merge it.
            None => (course_key(None, &p.course), p.course.clone()),
        };
        if course.is_none() && !courses.is_empty() {
            errors.push(RowErrorView {
                line: *line,
                column: Some("course".into()),
                message: format!("'{}' is not in the catalogue; kept under that name", p.course),
                text: format!("line {line}, column \"course\": '{}' is not in the catalogue; kept under that name (import the catalogue to match it)", p.course),
            });
        }
        rows.push(ProgressWrite {
            email: p.email.clone(),
            user_id: users.get(&p.email).copied(),
            course_key: key,
            course_title: title,
            status: p.status.as_str().to_string(),
            score: p.score.map(|s| s.percent()),
            completed_at: p.completed_at,
        });
    }
    let written = state
        .store
        .save_progress(tenant, company, &rows, state.now())
        .await?;
    Ok(ImportReport {
        rows: parsed.rows,
        applied: rows.len(),
        written,
        unchanged: rows.len() as u64 - written.min(rows.len() as u64),
        errors,
    })
}

async fn company_settings(
    state: &AppState,
    tenant: TenantId,
    company: CompanyId,
) -> Result<TrainingCompany, ApiError> {
    state.store.get_company(tenant, company).await?;
    state
        .store
        .training_companies(tenant)
        .await?
        .into_iter()
        .find(|c| c.company_id == company.0)
        .ok_or(ApiError::NotFound)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Learner {
    pub email: String,
    pub user_id: Option<i64>,
    pub name: Option<String>,
    pub courses: usize,
    pub completed: usize,
    /// Completed of all the learner's courses, in percent.
    pub completion_rate: u32,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CompanyTraining {
    pub company_id: i64,
    pub company_name: String,
    /// Premium (the add-on) or Standard.
    pub premium: bool,
    pub team_name: Option<String>,
    /// The company's own link-out address, when set.
    pub link_url: Option<String>,
    /// Where the company's people learn (its own address, else the integration's).
    pub link_out: Option<String>,
    pub learners: Vec<Learner>,
    /// Completed of all courses started or assigned, in percent.
    pub completion_rate: u32,
    pub progress: Vec<ProgressRow>,
}

fn rate(done: usize, of: usize) -> u32 {
    (done * 100).checked_div(of).unwrap_or(0) as u32
}

pub async fn company_training(
    state: &AppState,
    tenant: TenantId,
    company: CompanyId,
) -> Result<CompanyTraining, ApiError> {
    let s = company_settings(state, tenant, company).await?;
    let progress = state.store.company_progress(tenant, company).await?;
    let mut learners: BTreeMap<String, Learner> = BTreeMap::new();
    for p in &progress {
        let l = learners.entry(p.email.clone()).or_insert_with(|| Learner {
            email: p.email.clone(),
            user_id: p.user_id,
            name: p.user_name.clone(),
            courses: 0,
            completed: 0,
            completion_rate: 0,
        });
        l.courses += 1;
        if p.status == ProgressStatus::Completed.as_str() {
            l.completed += 1;
        }
    }
    let mut learners: Vec<Learner> = learners.into_values().collect();
    for l in &mut learners {
        l.completion_rate = rate(l.completed, l.courses);
    }
    let done = progress
        .iter()
        .filter(|p| p.status == ProgressStatus::Completed.as_str())
        .count();
    let link_out = match (&s.link_url, training_integration(state, tenant).await?) {
        (Some(own), _) => Some(own.clone()),
        (None, Some(_)) => Some(source(state, tenant).await?.link_out()),
        (None, None) => None,
    };
    Ok(CompanyTraining {
        company_id: s.company_id,
        company_name: s.company_name,
        premium: s.premium,
        team_name: s.team_name,
        link_url: s.link_url,
        link_out,
        completion_rate: rate(done, progress.len()),
        learners,
        progress,
    })
}

/// The month a date falls in, `YYYY-MM`.
fn month_of(t: chrono::DateTime<chrono::Utc>) -> String {
    format!("{:04}-{:02}", t.year(), t.month())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WriteOutcome {
    pub company_id: i64,
    pub company_name: String,
    pub month: String,
    pub quantity: i64,
    /// `written`, `unchanged` (already written for this month), `skipped` (why in `detail`)
    /// or `failed`.
    pub outcome: String,
    pub detail: String,
}

/// Writes the month's active users of every premium company to its Stripe subscription
/// as the quantity of `price`: the item of that price is set (or added), each write keyed
/// by company, month and quantity, and recorded; a month already written with the same
/// quantity is left alone.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant, price))]
pub async fn write_usage_to_stripe(
    state: &AppState,
    tenant: TenantId,
    price: &str,
) -> Result<Vec<WriteOutcome>, ApiError> {
    if price.is_empty()
        || !price.starts_with("price_")
        || !price.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(ApiError::field(
            "price_id",
            "choose one of your Stripe prices (price_…)",
        ));
    }
    let stripe = crate::billing::stripe_integration(state, tenant)
        .await?
        .filter(|i| i.status != IntegrationStatus::Disconnected)
        .ok_or_else(|| {
            ApiError::Conflict(
                "Connect Stripe first: the usage is written to its subscriptions".into(),
            )
        })?;
    let now = state.now();
    let month = month_of(now);
    let usage = state.store.usage(tenant, &month, now).await?;
    let src = crate::billing::source(state, &stripe).await?;
    let premium: std::collections::HashSet<i64> = state
        .store
        .training_companies(tenant)
        .await?
        .into_iter()
        .filter(|c| c.premium)
        .map(|c| c.company_id)
        .collect();
    let mut out = Vec::new();
    for u in usage.into_iter().filter(|u| u.month == month) {
        let company = CompanyId(u.company_id);
        if !premium.contains(&u.company_id) {
            // Premium switched off this month: what was written is set back to 0, so the
            // add-on stops being billed.
            if let (Some(item), Some(q)) = (&u.written_item, u.written_quantity)
                && q > 0
            {
                let key = mspbridge_providers::stripe::client::idempotency_key();
                let (outcome, detail) = match src.set_quantity(item, 0, &key).await {
                    Ok(()) => {
                        state
                            .store
                            .mark_usage_written(tenant, company, &month, 0, item, now)
                            .await?;
                        ("written", format!("Premium Training is off: 0 on {item}"))
                    }
                    Err(e) => ("failed", e.to_string()),
                };
                out.push(WriteOutcome {
                    company_id: u.company_id,
                    company_name: u.company_name.clone(),
                    month: month.clone(),
                    quantity: 0,
                    outcome: outcome.into(),
                    detail,
                });
            }
            continue;
        }
        let mut o = WriteOutcome {
            company_id: u.company_id,
            company_name: u.company_name.clone(),
            month: month.clone(),
            quantity: u.active_users,
            outcome: "skipped".into(),
            detail: String::new(),
        };
        if u.written_quantity == Some(u.active_users) && u.written_at.is_some() {
            o.outcome = "unchanged".into();
            o.detail = format!("already written for {month}");
            out.push(o);
            continue;
        }
        let Some(customer) = state
            .store
            .billing_customer_of(tenant, stripe.id, company)
            .await?
        else {
            o.detail = "no Stripe customer is linked to this company (Billing tab: Create Stripe customer, or link one on the company mapping)".into();
            out.push(o);
            continue;
        };
        let subs = state.store.billing_subscriptions(tenant, company).await?;
        let live = subs
            .iter()
            .find(|s| !matches!(s.status.as_str(), "canceled" | "incomplete_expired"));
        let Some(sub) = live else {
            o.detail = format!(
                "customer {} has no active subscription to add the training price to",
                customer.external_id
            );
            out.push(o);
            continue;
        };
        // The subscription as Stripe has it now: an item added by a write whose answer was
        // lost is found and set, never added a second time.
        let current = match src.subscription(&sub.external_id).await {
            Ok(mspbridge_providers::billing::Current::Found(s)) => s,
            Ok(mspbridge_providers::billing::Current::Gone) => {
                o.detail = format!(
                    "subscription {} no longer exists in Stripe",
                    sub.external_id
                );
                out.push(o);
                continue;
            }
            Err(e) => {
                o.outcome = "failed".into();
                o.detail = e.to_string();
                out.push(o);
                continue;
            }
        };
        let qty = u.active_users.max(0) as u64;
        // One key per write (its retries reuse it); the quantity is set, never added to.
        let key = mspbridge_providers::stripe::client::idempotency_key();
        // Another training price written before (the admin picked another): its item goes
        // back to 0, so the month is billed once.
        if let Some(old_item) = &u.written_item
            && u.written_quantity.unwrap_or(0) > 0
            && current
                .items
                .iter()
                .any(|i| &i.id == old_item && i.price_id != price && i.quantity > 0)
        {
            let k = mspbridge_providers::stripe::client::idempotency_key();
            if let Err(e) = src.set_quantity(old_item, 0, &k).await {
                o.outcome = "failed".into();
                o.detail = format!(
                    "the item of the training price written before ({old_item}) could not be set to 0: {e}"
                );
                out.push(o);
                continue;
            }
        }
        let result = match current.items.iter().find(|i| i.price_id == price) {
            Some(item) if item.quantity == qty => Ok(item.id.clone()),
            Some(item) => src
                .set_quantity(&item.id, qty, &key)
                .await
                .map(|()| item.id.clone()),
            None => src.add_item(&current.external_id, price, qty, &key).await,
        };
        match result {
            Ok(item) => {
                state
                    .store
                    .mark_usage_written(tenant, company, &month, u.active_users, &item, now)
                    .await?;
                o.outcome = "written".into();
                o.detail = format!("{qty} on {item} ({})", sub.external_id);
            }
            Err(e) => {
                o.outcome = "failed".into();
                o.detail = e.to_string();
            }
        }
        out.push(o);
    }
    tracing::info!(companies = out.len(), "training usage written to Stripe");
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// API

use crate::billing::company_of;

#[utoipa::path(post, path = "/api/v1/training/catalogue", tag = "training",
    request_body(content = String, content_type = "text/csv", description = "The catalogue CSV (Title, Category, Duration, Level, URL; optional Course ID)"),
    responses((status = 200, body = ImportReport), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn post_catalogue(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<ImportReport>, ApiError> {
    caller.require(Permission::Manage)?;
    let text = csv_text(&headers, &body)?;
    Ok(Json(
        import_catalogue(&state, caller.tenant_id, &text).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CourseParams {
    pub search: Option<String>,
    pub category: Option<String>,
    pub offset: Option<i64>,
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/training/courses", tag = "training", params(CourseParams),
    responses((status = 200, body = Vec<CourseRow>)))]
pub async fn get_courses(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<CourseParams>,
) -> Result<Response, ApiError> {
    caller.require(Permission::Read)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::field("limit", "must be from 1 to 500"));
    }
    let page = state
        .store
        .courses(
            caller.tenant_id,
            q.search.as_deref().unwrap_or_default(),
            q.category.as_deref().filter(|c| !c.is_empty()),
            q.offset.unwrap_or(0).max(0),
            limit,
        )
        .await?;
    let mut resp = Json(page.rows).into_response();
    if let Ok(v) = HeaderValue::from_str(&page.total.to_string()) {
        resp.headers_mut().insert("x-total-count", v);
    }
    Ok(resp)
}

#[utoipa::path(get, path = "/api/v1/training/companies", tag = "training",
    responses((status = 200, body = Vec<TrainingCompany>)))]
pub async fn get_training_companies(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<TrainingCompany>>, ApiError> {
    caller.require(Permission::Read)?;
    Ok(Json(
        state.store.training_companies(caller.tenant_id).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PremiumBody {
    pub company_ids: Vec<i64>,
    pub premium: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PremiumView {
    /// Companies whose setting changed.
    pub changed: u64,
}

/// Enable or Disable Premium Training for several companies (needs Manage).
#[utoipa::path(post, path = "/api/v1/training/premium", tag = "training", request_body = PremiumBody,
    responses((status = 200, body = PremiumView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn post_premium(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<PremiumBody>,
) -> Result<Json<PremiumView>, ApiError> {
    caller.require(Permission::Manage)?;
    if body.company_ids.is_empty() || body.company_ids.len() > 1000 {
        return Err(ApiError::field(
            "company_ids",
            "choose from 1 to 1000 companies",
        ));
    }
    let ids: Vec<CompanyId> = body.company_ids.iter().map(|i| CompanyId(*i)).collect();
    let changed = state
        .store
        .set_premium(
            caller.tenant_id,
            &ids,
            body.premium,
            &crate::mapping_api::actor(&caller),
            state.now(),
        )
        .await
        .map_err(|e| match ApiError::from(e) {
            ApiError::NotFound => {
                ApiError::field("company_ids", "a company in the list does not exist")
            }
            other => other,
        })?;
    Ok(Json(PremiumView { changed }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompanyTrainingBody {
    pub premium: Option<bool>,
    /// The company's Team in BrainStation; empty to clear.
    pub team_name: Option<String>,
    /// The company's own BrainStation address (https), where its people learn; empty for
    /// the integration's.
    pub link_url: Option<String>,
}

#[utoipa::path(put, path = "/api/v1/companies/{company_id}/training", tag = "training", request_body = CompanyTrainingBody,
    params(("company_id" = i64, Path, description = "Portal company id")),
    responses((status = 200, body = CompanyTraining), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_company_training(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<CompanyTrainingBody>,
) -> Result<Json<CompanyTraining>, ApiError> {
    caller.require(Permission::Manage)?;
    let company = company_of(&raw)?;
    save_company(
        &state,
        &caller,
        company,
        body.premium,
        body.team_name.as_deref(),
        body.link_url.as_deref(),
    )
    .await?;
    Ok(Json(
        company_training(&state, caller.tenant_id, company).await?,
    ))
}

async fn save_company(
    state: &AppState,
    caller: &Caller,
    company: CompanyId,
    premium: Option<bool>,
    team: Option<&str>,
    link: Option<&str>,
) -> Result<(), ApiError> {
    let actor = crate::mapping_api::actor(caller);
    if let Some(l) = link {
        let l = l.trim();
        let url = if l.is_empty() {
            None
        } else {
            Some(
                mspbridge_domain::validate::parse_https_url(l)
                    .map_err(|m| ApiError::field("link_url", m))?,
            )
        };
        state
            .store
            .set_link(
                caller.tenant_id,
                company,
                url.as_deref(),
                &actor,
                state.now(),
            )
            .await?;
    }
    if let Some(t) = team {
        let t = t.trim();
        if t.chars().count() > 100 {
            return Err(ApiError::field("team_name", "at most 100 characters"));
        }
        if !t.is_empty()
            && let Some(other) = state.store.company_by_team(caller.tenant_id, t).await?
            && other != company
        {
            return Err(ApiError::field(
                "team_name",
                "another company already has this Team name",
            ));
        }
        state
            .store
            .set_team(
                caller.tenant_id,
                company,
                Some(t).filter(|t| !t.is_empty()),
                &actor,
                state.now(),
            )
            .await?;
    }
    if let Some(p) = premium {
        state
            .store
            .set_premium(caller.tenant_id, &[company], p, &actor, state.now())
            .await?;
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/companies/{company_id}/training", tag = "training",
    params(("company_id" = i64, Path, description = "Portal company id")),
    responses((status = 200, body = CompanyTraining), (status = 404, body = ErrorBody)))]
pub async fn get_company_training(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<CompanyTraining>, ApiError> {
    caller.require(Permission::Read)?;
    Ok(Json(
        company_training(&state, caller.tenant_id, company_of(&raw)?).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/companies/{company_id}/training/progress", tag = "training",
    request_body(content = String, content_type = "text/csv", description = "The Team's progress CSV (Email, Course, Status; optional Score, Completed At, Team)"),
    params(("company_id" = i64, Path, description = "Portal company id")),
    responses((status = 200, body = ImportReport), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn post_progress(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(raw): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<ImportReport>, ApiError> {
    caller.require(Permission::Manage)?;
    let company = company_of(&raw)?;
    let text = csv_text(&headers, &body)?;
    Ok(Json(
        import_progress(&state, caller.tenant_id, company, &text).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TeamParams {
    /// The BrainStation Team the file was exported for: the company whose Team name it is
    /// gets the progress.
    pub team: String,
}

/// A Team's progress file, routed to the company whose Team name it is.
#[utoipa::path(post, path = "/api/v1/training/progress", tag = "training", params(TeamParams),
    request_body(content = String, content_type = "text/csv", description = "The Team's progress CSV"),
    responses((status = 200, body = ImportReport), (status = 422, body = ErrorBody)))]
pub async fn post_team_progress(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<TeamParams>,
    body: axum::body::Bytes,
) -> Result<Json<ImportReport>, ApiError> {
    caller.require(Permission::Manage)?;
    let team = q.team.trim();
    if team.is_empty() {
        return Err(ApiError::field(
            "team",
            "name the BrainStation Team the file is for",
        ));
    }
    let company = state
        .store
        .company_by_team(caller.tenant_id, team)
        .await?
        .ok_or_else(|| {
            ApiError::field(
                "team",
                format!(
                    "no company has the Team name '{team}': set it on the company's Training page"
                ),
            )
        })?;
    let text = csv_text(&headers, &body)?;
    Ok(Json(
        import_progress(&state, caller.tenant_id, company, &text).await?,
    ))
}

/// The company's users for BrainStation's user import (CSV).
#[utoipa::path(get, path = "/api/v1/companies/{company_id}/training/users.csv", tag = "training",
    params(("company_id" = i64, Path, description = "Portal company id")),
    responses((status = 200, description = "First Name,Last Name,Email,Team", content_type = "text/csv"), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn get_users_csv(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Permission::Read)?;
    users_csv_response(&state, caller.tenant_id, company_of(&raw)?).await
}

async fn users_csv_response(
    state: &AppState,
    tenant: TenantId,
    company: CompanyId,
) -> Result<Response, ApiError> {
    let s = company_settings(state, tenant, company).await?;
    let team = s.team_name.filter(|t| !t.is_empty()).ok_or_else(|| {
        ApiError::field(
            "team_name",
            "set the company's BrainStation Team name first",
        )
    })?;
    let users: Vec<ExportUser> = state
        .store
        .list_company_users(tenant, company)
        .await?
        .into_iter()
        .filter(|u| u.status != mspbridge_domain::model::UserStatus::Disabled)
        .filter_map(|u| {
            Some(ExportUser {
                first_name: u.first_name,
                last_name: u.last_name,
                email: u.email.filter(|e| e.contains('@'))?,
                team: team.clone(),
            })
        })
        .collect();
    let Delivery::File {
        name,
        content_type,
        body,
    } = source(state, tenant)
        .await?
        .deliver_users(&team, &users)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(download(&name, content_type, body))
}

fn download(name: &str, content_type: &'static str, body: String) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

#[utoipa::path(get, path = "/api/v1/training/usage", tag = "training",
    responses((status = 200, body = Vec<UsageRecord>)))]
pub async fn get_training_usage(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<UsageRecord>>, ApiError> {
    caller.require(Permission::Read)?;
    let now = state.now();
    Ok(Json(
        state
            .store
            .usage(caller.tenant_id, &month_of(now), now)
            .await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageWriteBody {
    /// The Stripe price of the training add-on (per user per month).
    pub price_id: String,
}

/// Writes this month's active users of premium companies to their Stripe subscriptions.
#[utoipa::path(post, path = "/api/v1/training/usage/stripe", tag = "training", request_body = UsageWriteBody,
    responses((status = 200, body = Vec<WriteOutcome>), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn post_usage_stripe(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<UsageWriteBody>,
) -> Result<Json<Vec<WriteOutcome>>, ApiError> {
    caller.require(Permission::Manage)?;
    Ok(Json(
        write_usage_to_stripe(&state, caller.tenant_id, body.price_id.trim()).await?,
    ))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PriceView {
    pub id: String,
    /// Product name, amount and interval in words.
    pub label: String,
}

async fn prices(state: &AppState, tenant: TenantId) -> Result<Vec<PriceView>, ApiError> {
    let Some(stripe) = crate::billing::stripe_integration(state, tenant)
        .await?
        .filter(|i| i.status != IntegrationStatus::Disconnected)
    else {
        return Ok(vec![]);
    };
    let src = crate::billing::source(state, &stripe).await?;
    let list = src.prices().await.map_err(|e| ApiError::Vendor {
        provider: "Stripe",
        message: e.to_string(),
    })?;
    Ok(list
        .into_iter()
        .map(|p| PriceView {
            label: format!(
                "{} — {}{}",
                p.product_name.as_deref().unwrap_or(&p.id),
                p.unit_amount
                    .map(|a| mspbridge_domain::billing::format_amount(a, &p.currency))
                    .unwrap_or_else(|| "metered".into()),
                p.interval
                    .as_deref()
                    .map(|i| format!(" per {i}"))
                    .unwrap_or_default()
            ),
            id: p.id,
        })
        .collect())
}

#[utoipa::path(get, path = "/api/v1/training/prices", tag = "training",
    responses((status = 200, body = Vec<PriceView>)))]
pub async fn get_prices(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<PriceView>>, ApiError> {
    caller.require(Permission::Read)?;
    Ok(Json(prices(&state, caller.tenant_id).await?))
}

// ---------------------------------------------------------------------------------------
// Pages

#[derive(Template)]
#[template(path = "training.html")]
struct CataloguePage {
    shell: Shell,
    connected: bool,
    rows: Vec<CourseRow>,
    categories: Vec<(String, i64)>,
    total: i64,
    /// Courses in the library (whatever the search).
    library: i64,
    search: String,
    category: String,
    pager: crate::devices::Pager,
    can_manage: bool,
    /// Team names of the tenant's companies (the progress import's choices).
    teams: Vec<String>,
}

#[derive(Debug, Deserialize, Default)]
struct CatalogueQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    category: String,
    page: Option<i64>,
}

async fn catalogue_page(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Query(q): Query<CatalogueQuery>,
) -> Response {
    let done = async {
        let category = Some(q.category.as_str()).filter(|c| !c.is_empty());
        let total = state
            .store
            .courses(c.tenant_id, &q.q, category, 0, 1)
            .await?
            .total;
        let pager = crate::devices::pager(
            total,
            q.page,
            format!(
                "q={}&amp;category={}",
                crate::devices::enc(&q.q),
                crate::devices::enc(&q.category)
            ),
        );
        let rows = state
            .store
            .courses(
                c.tenant_id,
                &q.q,
                category,
                (pager.page - 1) * crate::devices::PAGE,
                crate::devices::PAGE,
            )
            .await?
            .rows;
        let categories = state.store.course_categories(c.tenant_id).await?;
        Ok::<_, ApiError>(CataloguePage {
            shell: shell(&state, &c).await?,
            connected: training_integration(&state, c.tenant_id).await?.is_some(),
            rows,
            library: categories.iter().map(|(_, n)| n).sum(),
            teams: {
                let mut t: Vec<String> = state
                    .store
                    .training_companies(c.tenant_id)
                    .await?
                    .into_iter()
                    .filter_map(|c| c.team_name)
                    .collect();
                t.sort_by_key(|x| x.to_lowercase());
                t
            },
            categories,
            total,
            search: q.q.clone(),
            category: q.category.clone(),
            pager,
            can_manage: c.role.allows(Permission::Manage),
        })
    };
    match done.await {
        Ok(p) => render(p, StatusCode::OK),
        Err(e) => error_page(e),
    }
}

#[derive(Template)]
#[template(path = "training_company.html")]
struct CompanyPage {
    shell: Shell,
    t: CompanyTraining,
    connected: bool,
    user: String,
    can_manage: bool,
}

#[derive(Debug, Deserialize, Default)]
struct CompanyQuery {
    #[serde(default)]
    user: String,
}

async fn company_page(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Path(raw): Path<String>,
    Query(q): Query<CompanyQuery>,
) -> Response {
    let done = async {
        let company = company_of(&raw)?;
        let mut t = company_training(&state, c.tenant_id, company).await?;
        if !q.user.is_empty() {
            let u = q.user.to_lowercase();
            t.progress.retain(|p| p.email == u);
        }
        Ok::<_, ApiError>(CompanyPage {
            shell: shell(&state, &c).await?,
            connected: training_integration(&state, c.tenant_id).await?.is_some(),
            t,
            user: q.user.clone(),
            can_manage: c.role.allows(Permission::Manage),
        })
    };
    match done.await {
        Ok(p) => render(p, StatusCode::OK),
        Err(e) => error_page(e),
    }
}

#[derive(Template)]
#[template(path = "training_usage.html")]
struct UsagePage {
    shell: Shell,
    rows: Vec<UsageRecord>,
    month: String,
    prices: Vec<PriceView>,
    price_error: Option<String>,
    stripe: bool,
    can_manage: bool,
}

async fn usage_page(State(state): State<AppState>, UiCaller(c): UiCaller) -> Response {
    let done = async {
        let now = state.now();
        let month = month_of(now);
        let rows = state.store.usage(c.tenant_id, &month, now).await?;
        let stripe = crate::billing::stripe_integration(&state, c.tenant_id)
            .await?
            .is_some_and(|i| i.status != IntegrationStatus::Disconnected);
        let (prices, price_error) = match prices(&state, c.tenant_id).await {
            Ok(p) => (p, None),
            Err(e) => (vec![], Some(e.to_string())),
        };
        Ok::<_, ApiError>(UsagePage {
            shell: shell(&state, &c).await?,
            rows,
            month,
            prices,
            price_error,
            stripe,
            can_manage: c.role.allows(Permission::Manage),
        })
    };
    match done.await {
        Ok(p) => render(p, StatusCode::OK),
        Err(e) => error_page(e),
    }
}

async fn usage_csv_download(State(state): State<AppState>, UiCaller(c): UiCaller) -> Response {
    let now = state.now();
    match state.store.usage(c.tenant_id, &month_of(now), now).await {
        Ok(rows) => {
            let rows: Vec<UsageRow> = rows
                .into_iter()
                .map(|r| UsageRow {
                    company_id: r.company_id,
                    company: r.company_name,
                    month: r.month,
                    active_users: u32::try_from(r.active_users).unwrap_or(0),
                })
                .collect();
            download(
                "training-usage.csv",
                "text/csv; charset=utf-8",
                usage_csv(&rows),
            )
        }
        Err(e) => error_page(e.into()),
    }
}

pub fn status_label(s: &str) -> String {
    ProgressStatus::parse(s).label().to_string()
}

pub fn level_label(s: &str) -> String {
    mspbridge_domain::training::Level::parse(s)
        .label()
        .to_string()
}

pub fn score_text(s: &Option<f64>) -> String {
    s.map(|v| format!("{v:.1} %")).unwrap_or_default()
}

pub fn progress_url(company: &i64) -> String {
    format!("/api/v1/companies/{company}/training/progress")
}

pub fn team_progress_url(team: &str) -> String {
    format!(
        "/api/v1/training/progress?team={}",
        crate::devices::enc(team)
    )
}
