//! Microsoft 365 (spec 2.18): Company M365 Setup (every company with its tenants, the
//! progress bar, Connect / Generate link / Add tenant / Reconnect / Disconnect / Not
//! applicable / Restore), the admin-consent round trip (a signed, single-use, expiring
//! `state`; links for the client's own admin that work once within 7 days), a company's
//! Microsoft 365 tab and the Secure Score overview. The pages and the JSON API call the
//! same services.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use mspbridge_domain::auth::Permission;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::integration::Integration;
use mspbridge_domain::m365::{
    LINK_CONSENT_DAYS, PERMISSIONS, SESSION_CONSENT_MINUTES, TenantStatus, control_status,
    score_percent, severity,
};
use mspbridge_domain::{CompanyId, IntegrationId, TenantId};
use mspbridge_store::m365::{
    Connection, ConsentRefusal, DomainRow, GroupRow, LicenceRow, NewConsent, ScoreOverviewRow,
    SetupCompany, UserRow,
};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::api::{ApiJson, parse_id, path_id};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::ui::{Shell, UiCaller, error_page, render, shell};

/// What a signed consent `state` is for.
const PURPOSE: &str = "m365-consent";

pub fn api_routes() -> Router<AppState> {
    Router::new()
        .route("/integrations/{id}/m365/companies", get(list_setup))
        .route(
            "/integrations/{id}/m365/customer-tenants",
            get(list_customer_tenants),
        )
        .route(
            "/integrations/{id}/m365/companies/{company_id}/consent",
            post(post_consent),
        )
        .route(
            "/integrations/{id}/m365/companies/{company_id}/applicable",
            put(put_applicable),
        )
        .route(
            "/integrations/{id}/m365/tenants/{connection_id}/disconnect",
            post(post_disconnect),
        )
        .route("/companies/{company_id}/m365", get(get_company))
        .route(
            "/companies/{company_id}/m365/users/import",
            post(post_import_users),
        )
        .route("/m365/secure-scores", get(get_overview))
}

pub fn ui_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/settings/integrations/{id}/m365",
            get(setup_page).post(setup_form),
        )
        .route("/m365/consent/callback", get(callback_page))
        .route("/m365/consent/link/{token}", get(link_page))
        .route(
            "/companies/{company_id}/m365",
            get(company_page).post(company_form),
        )
        .route("/secure-score", get(overview_page))
}

// ---------------------------------------------------------------------------------------
// Services

async fn m365_integration(
    state: &AppState,
    tenant: TenantId,
    id: IntegrationId,
) -> Result<Integration, ApiError> {
    let i = state.store.get_integration(tenant, id).await?;
    if i.provider != ProviderKind::Microsoft365 {
        return Err(ApiError::field(
            "id",
            format!(
                "{} is not Microsoft 365: it has no tenant connections",
                i.provider.descriptor().name
            ),
        ));
    }
    Ok(i)
}

/// Where Microsoft sends the admin back: the integration's redirect URL, else this
/// deployment's public address, else the address the browser used.
fn redirect_uri(
    state: &AppState,
    creds: &mspbridge_domain::validate::Credentials,
    headers: &HeaderMap,
) -> String {
    if let Some(u) = creds.get("redirect_url").filter(|u| !u.is_empty()) {
        return u.to_string();
    }
    format!("{}/m365/consent/callback", base_url(state, headers))
}

fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(p) = &state.public_url {
        return p.clone();
    }
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = if state.cookie_secure { "https" } else { "http" };
    format!("{scheme}://{host}")
}

/// What an admin starts from Company M365 Setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConsentKind {
    /// Consent now, in this browser (Connect, Add tenant).
    Connect,
    /// Consent again for a connected tenant (Reconnect): `connection_id` names it.
    Reconnect,
    /// A link for the client's own admin: works once, for 7 days.
    Link,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentRequest {
    pub kind: ConsentKind,
    /// For `reconnect`: the tenant connection to renew.
    pub connection_id: Option<i64>,
    /// For `connect`: the tenant to connect (a GUID, as partner discovery lists them);
    /// consent given in another tenant is then refused.
    pub tenant_id: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConsentAnswer {
    /// Where to send the admin: Microsoft's consent page, or (for a link) the link to give
    /// the client's admin.
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

fn new_nonce() -> Result<String, ApiError> {
    let (token, _) =
        mspbridge_vault::new_token("c").map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(token.replace(['-', '_'], "x"))
}

/// Starts an admin consent for `company`: a consent request recorded and its signed
/// `state`, with Microsoft's consent address (or the link for the client's admin).
async fn start_consent(
    state: &AppState,
    c: &Caller,
    id: IntegrationId,
    company: CompanyId,
    req: &ConsentRequest,
    headers: &HeaderMap,
) -> Result<ConsentAnswer, ApiError> {
    c.require(Permission::Manage)?;
    let i = m365_integration(state, c.tenant_id, id).await?;
    let creds = mspbridge_store::load_credentials(state.store.as_ref(), &state.vault, &i).await?;
    let reconnect = match (req.kind, req.connection_id) {
        (ConsentKind::Reconnect, None) => {
            return Err(ApiError::field(
                "connection_id",
                "Reconnect names the tenant connection to renew",
            ));
        }
        (_, Some(conn)) => {
            let conn = state.store.m365_connection(c.tenant_id, conn).await?;
            if conn.company_id != company.0 || conn.integration_id != id.0 {
                return Err(ApiError::field(
                    "connection_id",
                    "that tenant connection belongs to another company",
                ));
            }
            Some(conn)
        }
        (_, None) => None,
    };
    let expected: Option<String> = match (&reconnect, req.tenant_id.as_deref()) {
        (Some(r), _) => Some(r.ms_tenant_id.clone()),
        (None, Some(t)) if valid_tenant_id(&t.to_ascii_lowercase()) => Some(t.to_ascii_lowercase()),
        (None, Some(_)) => {
            return Err(ApiError::field(
                "tenant_id",
                "a Microsoft 365 tenant id is a GUID (00000000-0000-0000-0000-000000000000)",
            ));
        }
        (None, None) => None,
    };
    let now = state.now();
    let (kind, expires_at) = match req.kind {
        ConsentKind::Link => ("link", now + Duration::days(LINK_CONSENT_DAYS)),
        _ => ("session", now + Duration::minutes(SESSION_CONSENT_MINUTES)),
    };
    let nonce = new_nonce()?;
    state
        .store
        .m365_create_consent(
            c.tenant_id,
            NewConsent {
                integration: id,
                company,
                connection: reconnect.as_ref().map(|r| r.id),
                kind,
                expected_tenant: expected.as_deref(),
                nonce: &nonce,
                created_by: &c.label(),
                expires_at,
            },
            now,
        )
        .await?;
    let signed = state
        .vault
        .sign(PURPOSE, &format!("{}:{nonce}", c.tenant_id.0));
    let url = if req.kind == ConsentKind::Link {
        format!("{}/m365/consent/link/{signed}", base_url(state, headers))
    } else {
        consent_url(state, &i, &creds, expected.as_deref(), &signed, headers)?
    };
    tracing::info!(tenant_id = %c.tenant_id, integration_id = %id, company_id = company.0, kind, "Microsoft 365 consent started");
    Ok(ConsentAnswer { url, expires_at })
}

fn consent_url(
    state: &AppState,
    i: &Integration,
    creds: &mspbridge_domain::validate::Credentials,
    tenant_hint: Option<&str>,
    signed: &str,
    headers: &HeaderMap,
) -> Result<String, ApiError> {
    state
        .providers
        .consent_url(
            i.provider,
            creds,
            tenant_hint,
            &redirect_uri(state, creds, headers),
            signed,
        )
        .ok_or(ApiError::NotFound)?
        .map_err(ApiError::Internal)
}

/// The consent a signed `state` names: `(tenant, nonce)` when the signature holds.
fn verify_state(state: &AppState, signed: &str) -> Option<(TenantId, String)> {
    let payload = state.vault.verify_signed(PURPOSE, signed)?;
    let (tenant, nonce) = payload.split_once(':')?;
    Some((TenantId(tenant.parse().ok()?), nonce.to_string()))
}

/// Why a consent round trip did not connect a tenant, in words for whoever is looking.
#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    #[error(
        "This consent request is not valid: it was not issued by this portal or was changed on the way."
    )]
    Forged,
    #[error("{0}")]
    Refused(ConsentRefusal),
    #[error("Microsoft did not grant consent: {0}")]
    Declined(String),
    #[error("Microsoft's answer named no tenant.")]
    NoTenant,
    #[error(
        "The app could not read that tenant yet, so it was not connected ({0}). If its admin has just consented, Microsoft may still be installing the app: try again in a minute."
    )]
    NotConsented(String),
    #[error(
        "Consent was given in another tenant ({got}) than the one this request was for ({expected}): sign in to Microsoft as an administrator of {expected}."
    )]
    WrongTenant { expected: String, got: String },
    #[error("{0}")]
    Conflict(String),
    #[error("The consent could not be recorded: {0}")]
    Internal(String),
}

fn advice(r: &ConsentRefusal) -> &'static str {
    {
        match r {
            ConsentRefusal::Expired => {
                "Ask your managed service provider for a new link (links work for 7 days)."
            }
            ConsentRefusal::Used => {
                "Each consent link works once. If the tenant still shows as not connected, ask for a new link."
            }
            ConsentRefusal::Revoked => "A newer link was generated; use that one.",
            ConsentRefusal::Unknown => "Start again from Company M365 Setup.",
        }
    }
}

/// The callback's query as Microsoft sends it.
#[derive(Debug, Default, Deserialize)]
pub struct CallbackQuery {
    #[serde(default)]
    pub admin_consent: Option<String>,
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub error_description: Option<String>,
    #[serde(default)]
    pub error_subcode: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub error_uri: Option<String>,
    #[serde(default)]
    pub admin_consent_error: Option<String>,
}

fn valid_tenant_id(t: &str) -> bool {
    t.len() == 36
        && t.chars().enumerate().all(|(i, ch)| {
            if [8, 13, 18, 23].contains(&i) {
                ch == '-'
            } else {
                ch.is_ascii_hexdigit()
            }
        })
}

/// Microsoft's answer to an admin consent: the `state` verified and used (once, before it
/// expires), the tenant connected to the company it was started for, a sync queued.
pub async fn finish_consent(
    state: &AppState,
    q: &CallbackQuery,
) -> Result<(Connection, String), ConsentError> {
    let signed = q.state.as_deref().unwrap_or_default();
    let (tenant, nonce) = verify_state(state, signed).ok_or(ConsentError::Forged)?;
    if let Some(e) = &q.error {
        let words = q
            .error_description
            .as_deref()
            .map(|d| d.split(" Trace ID").next().unwrap_or(d).to_string())
            .unwrap_or_else(|| e.clone());
        return Err(ConsentError::Declined(words));
    }
    let ms_tenant = q
        .tenant
        .as_deref()
        .map(str::to_ascii_lowercase)
        .filter(|t| valid_tenant_id(t))
        .ok_or(ConsentError::NoTenant)?;
    let now = state.now();
    let pending = state
        .store
        .m365_consent(tenant, &nonce)
        .await
        .map_err(|e| ConsentError::Internal(e.to_string()))?
        .ok_or(ConsentError::Refused(ConsentRefusal::Unknown))?;
    if let Some(expected) = pending.expected_ms_tenant.clone()
        && expected != ms_tenant
    {
        return Err(ConsentError::WrongTenant {
            expected,
            got: ms_tenant,
        });
    }
    // The tenant in the redirect is only a claim: the app must now get a token there and
    // read that very organization (a valid `state` with another tenant's id gets nowhere).
    verify_tenant(
        state,
        tenant,
        IntegrationId(pending.integration_id),
        &ms_tenant,
    )
    .await?;
    let consent = state
        .store
        .m365_use_consent(tenant, &nonce, now)
        .await
        .map_err(|e| ConsentError::Internal(e.to_string()))?
        .map_err(ConsentError::Refused)?;
    let by = format!(
        "{} ({})",
        consent.created_by,
        if consent.kind == "link" {
            "consent link"
        } else {
            "consent"
        }
    );
    let conn = state
        .store
        .m365_connect(
            tenant,
            IntegrationId(consent.integration_id),
            CompanyId(consent.company_id),
            &ms_tenant,
            &by,
            now,
        )
        .await
        .map_err(|e| match e {
            mspbridge_store::StoreError::Conflict(m) => {
                // The public callback never names another client's company.
                tracing::warn!(detail = %m, "consent for a tenant connected to another company");
                ConsentError::Conflict(
                    "This Microsoft 365 tenant is already connected to another company of your managed service provider.".into(),
                )
            }
            other => ConsentError::Internal(other.to_string()),
        })?;
    // The new tenant's data: a sync now rather than at the next interval.
    let _ = state
        .store
        .request_sync(
            tenant,
            IntegrationId(consent.integration_id),
            now,
            Duration::zero(),
        )
        .await;
    tracing::info!(tenant_id = %tenant, integration_id = consent.integration_id, company_id = consent.company_id, ms_tenant = %ms_tenant, "Microsoft 365 tenant connected");
    Ok((conn, consent.kind))
}

/// Proves the app is consented in `ms_tenant`: an app-only token there and its
/// organization's id. Microsoft may need a few seconds after consent to install the app,
/// so a missing app is asked again twice before the consent is refused (unused: the same
/// request works again).
async fn verify_tenant(
    state: &AppState,
    tenant: TenantId,
    integration: IntegrationId,
    ms_tenant: &str,
) -> Result<(), ConsentError> {
    let i = state
        .store
        .get_integration(tenant, integration)
        .await
        .map_err(|e| ConsentError::Internal(e.to_string()))?;
    let creds = mspbridge_store::load_credentials(state.store.as_ref(), &state.vault, &i)
        .await
        .map_err(|e| ConsentError::Internal(e.to_string()))?;
    let source = state
        .providers
        .cloud_source(
            i.provider,
            &creds,
            mspbridge_providers::http::RetryPolicy::interactive(),
        )
        .ok_or_else(|| ConsentError::Internal("not a cloud integration".into()))?
        .map_err(ConsentError::Internal)?;
    let mut last = String::new();
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
        match source.organization(ms_tenant).await {
            Ok(org) if org.tenant_id.eq_ignore_ascii_case(ms_tenant) => return Ok(()),
            Ok(org) => {
                return Err(ConsentError::NotConsented(format!(
                    "Microsoft answered for tenant {} instead of {ms_tenant}",
                    org.tenant_id
                )));
            }
            Err(mspbridge_providers::cloud::CloudError::Tenant {
                status: TenantStatus::NotConsented,
                message,
            }) => last = message,
            Err(e) => return Err(ConsentError::NotConsented(e.to_string())),
        }
    }
    Err(ConsentError::NotConsented(last))
}

/// A consent link opened by the client's admin: where to send them (Microsoft's consent
/// page) while the link is unused, unrevoked and not expired.
pub async fn open_link(
    state: &AppState,
    signed: &str,
    headers: &HeaderMap,
) -> Result<(String, String), ConsentError> {
    let (tenant, nonce) = verify_state(state, signed).ok_or(ConsentError::Forged)?;
    let consent = state
        .store
        .m365_consent(tenant, &nonce)
        .await
        .map_err(|e| ConsentError::Internal(e.to_string()))?
        .filter(|k| k.kind == "link")
        .ok_or(ConsentError::Refused(ConsentRefusal::Unknown))?;
    if consent.revoked_at.is_some() {
        return Err(ConsentError::Refused(ConsentRefusal::Revoked));
    }
    if consent.used_at.is_some() {
        return Err(ConsentError::Refused(ConsentRefusal::Used));
    }
    if consent.expires_at <= state.now() {
        return Err(ConsentError::Refused(ConsentRefusal::Expired));
    }
    let i = state
        .store
        .get_integration(tenant, IntegrationId(consent.integration_id))
        .await
        .map_err(|e| ConsentError::Internal(e.to_string()))?;
    let creds = mspbridge_store::load_credentials(state.store.as_ref(), &state.vault, &i)
        .await
        .map_err(|e| ConsentError::Internal(e.to_string()))?;
    let company = state
        .store
        .get_company(tenant, CompanyId(consent.company_id))
        .await
        .map_err(|e| ConsentError::Internal(e.to_string()))?;
    let url = consent_url(
        state,
        &i,
        &creds,
        consent.expected_ms_tenant.as_deref(),
        signed,
        headers,
    )
    .map_err(|e| ConsentError::Internal(e.to_string()))?;
    Ok((url, company.name))
}

/// One company of Company M365 Setup.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SetupRow {
    pub company_id: i64,
    pub name: String,
    /// `connected`, `attention` (a tenant needs the admin), `not_connected`,
    /// `not_applicable`.
    pub state: &'static str,
    pub not_applicable: bool,
    /// An unused consent link's expiry.
    pub link_expires_at: Option<DateTime<Utc>>,
    pub tenants: Vec<Connection>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SetupView {
    /// Companies with at least one connected tenant (a company counts once).
    pub connected: usize,
    /// Companies that count: every active company but "Not applicable" ones.
    pub total: usize,
    pub companies: Vec<SetupRow>,
}

async fn setup_view(
    state: &AppState,
    c: &Caller,
    id: IntegrationId,
) -> Result<SetupView, ApiError> {
    c.require(Permission::Read)?;
    m365_integration(state, c.tenant_id, id).await?;
    let companies: Vec<SetupCompany> = state.store.m365_setup_companies(c.tenant_id, id).await?;
    let connections = state.store.m365_connections(c.tenant_id, id).await?;
    let mut rows = Vec::with_capacity(companies.len());
    for co in companies {
        let tenants: Vec<Connection> = connections
            .iter()
            .filter(|t| {
                t.company_id == co.company_id && t.tenant_status() != TenantStatus::Disconnected
            })
            .cloned()
            .collect();
        let state_word = if co.not_applicable {
            "not_applicable"
        } else if tenants
            .iter()
            .any(|t| t.tenant_status() != TenantStatus::Connected)
        {
            "attention"
        } else if !tenants.is_empty() {
            "connected"
        } else {
            "not_connected"
        };
        rows.push(SetupRow {
            company_id: co.company_id,
            name: co.name,
            state: state_word,
            not_applicable: co.not_applicable,
            link_expires_at: co.link_expires_at.filter(|t| *t > state.now()),
            tenants,
        });
    }
    let total = rows.iter().filter(|r| !r.not_applicable).count();
    let connected = rows
        .iter()
        .filter(|r| {
            !r.not_applicable
                && r.tenants
                    .iter()
                    .any(|t| t.tenant_status() == TenantStatus::Connected)
        })
        .count();
    Ok(SetupView {
        connected,
        total,
        companies: rows,
    })
}

async fn set_applicable(
    state: &AppState,
    c: &Caller,
    id: IntegrationId,
    company: CompanyId,
    not_applicable: bool,
) -> Result<(), ApiError> {
    c.require(Permission::Manage)?;
    m365_integration(state, c.tenant_id, id).await?;
    Ok(state
        .store
        .m365_set_not_applicable(c.tenant_id, id, company, not_applicable, state.now())
        .await?)
}

async fn disconnect(
    state: &AppState,
    c: &Caller,
    id: IntegrationId,
    connection: i64,
) -> Result<Connection, ApiError> {
    c.require(Permission::Manage)?;
    m365_integration(state, c.tenant_id, id).await?;
    let conn = state.store.m365_connection(c.tenant_id, connection).await?;
    if conn.integration_id != id.0 {
        return Err(ApiError::NotFound);
    }
    Ok(state
        .store
        .m365_disconnect(c.tenant_id, connection, state.now())
        .await?)
}

/// A control of the latest snapshot joined with its profile.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ControlView {
    pub id: String,
    pub title: String,
    pub category: String,
    pub service: String,
    pub severity: &'static str,
    pub status: &'static str,
    pub score: Option<f64>,
    pub max_score: Option<f64>,
    pub remediation: Option<String>,
    pub action_url: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ScorePoint {
    pub day: String,
    pub current_score: f64,
    pub max_score: f64,
    pub percent: f64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TenantScore {
    pub connection_id: i64,
    pub latest: Option<ScorePoint>,
    pub partial: bool,
    pub active_users: Option<i64>,
    pub licensed_users: Option<i64>,
    /// (basis, average score): how comparable tenants score.
    pub averages: Vec<(String, f64)>,
    /// Oldest first.
    pub history: Vec<ScorePoint>,
    pub controls: Vec<ControlView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CompanyM365 {
    pub tenants: Vec<Connection>,
    pub domains: Vec<DomainRow>,
    pub licences: Vec<LicenceRow>,
    pub users: Vec<UserRow>,
    pub groups: Vec<GroupRow>,
    pub secure_scores: Vec<TenantScore>,
}

/// Stored text without markup (Microsoft's remediation texts are HTML).
fn plain(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for ch in html.chars() {
        match ch {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

async fn company_view(
    state: &AppState,
    c: &Caller,
    company: CompanyId,
) -> Result<CompanyM365, ApiError> {
    c.require(Permission::Read)?;
    state.store.get_company(c.tenant_id, company).await?;
    let tenants: Vec<Connection> = state
        .store
        .m365_company_connections(c.tenant_id, company)
        .await?
        .into_iter()
        .filter(|t| t.tenant_status() != TenantStatus::Disconnected)
        .collect();
    let mut secure_scores = Vec::new();
    for t in &tenants {
        let rows = state.store.m365_scores(c.tenant_id, t.id, 180).await?;
        let profiles = state.store.m365_profiles(c.tenant_id, t.id).await?;
        let point = |r: &mspbridge_store::m365::ScoreRow| ScorePoint {
            day: r.day.clone(),
            current_score: r.current_score,
            max_score: r.max_score,
            percent: score_percent(r.current_score, r.max_score),
        };
        let latest = rows.first();
        let controls_now: Vec<mspbridge_domain::m365::ControlScore> = latest
            .and_then(|r| serde_json::from_str(&r.controls).ok())
            .unwrap_or_default();
        let mut controls: Vec<ControlView> = profiles
            .iter()
            .filter(|p| !p.deprecated)
            .map(|p| {
                let score = controls_now
                    .iter()
                    .find(|s| s.name == p.external_id)
                    .and_then(|s| s.score);
                ControlView {
                    id: p.external_id.clone(),
                    title: p.title.clone(),
                    category: p.category.clone().unwrap_or_default(),
                    service: p.service.clone().unwrap_or_default(),
                    severity: severity(p.rank, p.tier.as_deref()),
                    status: control_status(score, p.max_score, p.state.as_deref()),
                    score,
                    max_score: p.max_score,
                    remediation: p.remediation.as_deref().map(plain),
                    action_url: p.action_url.clone(),
                }
            })
            .collect();
        // Controls scored but without a profile yet (profiles are read weekly).
        for s in &controls_now {
            if !profiles.iter().any(|p| p.external_id == s.name) {
                controls.push(ControlView {
                    id: s.name.clone(),
                    title: s.name.clone(),
                    category: s.category.clone().unwrap_or_default(),
                    service: String::new(),
                    severity: severity(None, None),
                    status: control_status(s.score, None, None),
                    score: s.score,
                    max_score: None,
                    remediation: None,
                    action_url: None,
                });
            }
        }
        secure_scores.push(TenantScore {
            connection_id: t.id,
            latest: latest.map(point),
            partial: latest.is_some_and(|r| r.partial),
            active_users: latest.and_then(|r| r.active_users),
            licensed_users: latest.and_then(|r| r.licensed_users),
            averages: latest
                .and_then(|r| serde_json::from_str(&r.averages).ok())
                .unwrap_or_default(),
            history: rows.iter().rev().map(point).collect(),
            controls,
        });
    }
    Ok(CompanyM365 {
        domains: state.store.m365_domains(c.tenant_id, company).await?,
        licences: state.store.m365_licences(c.tenant_id, company).await?,
        users: state.store.m365_users(c.tenant_id, company).await?,
        groups: state.store.m365_groups(c.tenant_id, company).await?,
        secure_scores,
        tenants,
    })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OverviewRow {
    #[serde(flatten)]
    pub row: ScoreOverviewRow,
    pub percent: f64,
    /// Percentage points since the score 30 days before.
    pub trend: Option<f64>,
}

async fn overview(state: &AppState, c: &Caller) -> Result<Vec<OverviewRow>, ApiError> {
    c.require(Permission::Read)?;
    Ok(state
        .store
        .m365_score_overview(c.tenant_id)
        .await?
        .into_iter()
        .map(|row| {
            let percent = score_percent(row.current_score, row.max_score);
            let trend = row
                .previous_score
                .map(|p| ((percent - score_percent(p, row.max_score)) * 10.0).round() / 10.0);
            OverviewRow {
                row,
                percent,
                trend,
            }
        })
        .collect())
}

/// A customer tenant found through the partner tenant's GDAP relationships, with the
/// company it belongs to (connected) or the company proposed for it, and why.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DiscoveredTenant {
    #[serde(flatten)]
    pub tenant: mspbridge_domain::m365::CustomerTenant,
    /// The company this tenant is connected to already.
    pub connected_company: Option<(i64, String)>,
    /// The company proposed for it: verified domain first, then name.
    pub proposed_company: Option<(i64, String)>,
    /// Why ("same domain (acme.example)", "same name", "name 84 %").
    pub reason: Option<String>,
    pub confidence: Option<u8>,
}

/// The partner tenant's customer tenants (GDAP), each with its company or a proposal.
async fn discover(
    state: &AppState,
    c: &Caller,
    id: IntegrationId,
) -> Result<Vec<DiscoveredTenant>, ApiError> {
    c.require(Permission::Manage)?;
    let i = m365_integration(state, c.tenant_id, id).await?;
    let creds = mspbridge_store::load_credentials(state.store.as_ref(), &state.vault, &i).await?;
    let home = creds.get("home_tenant").unwrap_or_default().to_string();
    let source = state
        .providers
        .cloud_source(
            i.provider,
            &creds,
            // One lookup per customer tenant: room for a large partner.
            mspbridge_providers::http::RetryPolicy {
                budget: 5_000,
                ..mspbridge_providers::http::RetryPolicy::interactive()
            },
        )
        .ok_or(ApiError::NotFound)?
        .map_err(ApiError::Internal)?;
    let found = source.customer_tenants(&home).await.map_err(|e| ApiError::Vendor {
        provider: "Microsoft 365",
        message: format!(
            "{e}. Finding customer tenants needs the application permission DelegatedAdminRelationship.Read.All in your own tenant; without it, connect companies one by one."
        ),
    })?;
    let connections = state.store.m365_connections(c.tenant_id, id).await?;
    let companies = state.store.list_companies(c.tenant_id).await?;
    let domains = crate::mapping_api::portal_domains(state, c.tenant_id).await?;
    let taken: std::collections::HashSet<i64> = connections
        .iter()
        .filter(|t| t.tenant_status() != TenantStatus::Disconnected)
        .map(|t| t.company_id)
        .collect();
    let portal: Vec<mspbridge_matching::Candidate<CompanyId>> = companies
        .iter()
        .filter(|co| co.active && !taken.contains(&co.id.0))
        .map(|co| mspbridge_matching::Candidate {
            domains: domains.get(&co.id).cloned().unwrap_or_default(),
            ..mspbridge_matching::Candidate::named(co.id, co.name.clone())
        })
        .collect();
    let matcher = mspbridge_matching::Matcher::new(&portal);
    let mut rows: Vec<DiscoveredTenant> = found
        .into_iter()
        .map(|t| {
            let connected_company = connections
                .iter()
                .find(|x| {
                    x.ms_tenant_id == t.tenant_id.to_ascii_lowercase()
                        && x.tenant_status() != TenantStatus::Disconnected
                })
                .map(|x| (x.company_id, x.company_name.clone()));
            let best = if connected_company.is_some() {
                None
            } else {
                matcher
                    .suggest(
                        &mspbridge_matching::Candidate {
                            domains: t.default_domain.clone().into_iter().collect(),
                            ..mspbridge_matching::Candidate::named(
                                t.tenant_id.clone(),
                                t.display_name.clone(),
                            )
                        },
                        1,
                    )
                    .into_iter()
                    .next()
                    .filter(|b| b.confidence >= PROPOSE_FROM)
            };
            DiscoveredTenant {
                proposed_company: best.as_ref().map(|b| (b.key.0, b.name.clone())),
                reason: best.as_ref().map(|b| b.reason.to_string()),
                confidence: best.as_ref().map(|b| b.confidence),
                connected_company,
                tenant: t,
            }
        })
        .collect();
    // One proposal per company: the tenant it fits best keeps it.
    let mut best: std::collections::HashMap<i64, (u8, usize)> = std::collections::HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        if let (Some((company, _)), Some(conf)) = (&r.proposed_company, r.confidence) {
            let e = best.entry(*company).or_insert((conf, i));
            if conf > e.0 {
                *e = (conf, i);
            }
        }
    }
    for (i, r) in rows.iter_mut().enumerate() {
        if let Some((company, _)) = &r.proposed_company
            && best.get(company).is_some_and(|(_, j)| *j != i)
        {
            r.proposed_company = None;
            r.reason = None;
            r.confidence = None;
        }
    }
    Ok(rows)
}

/// The least confidence a proposal needs (Quick Match's default threshold).
const PROPOSE_FROM: u8 = 70;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportUsersRequest {
    /// Ids of the company's Microsoft 365 users (`users[].id` of `GET /companies/{id}/m365`).
    pub user_ids: Vec<i64>,
}

#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct ImportUsersAnswer {
    /// Portal users created.
    pub imported: u64,
    /// Users already in the portal with the same e-mail, linked instead of created.
    pub matched: u64,
    /// `(user id, why)` of users not imported.
    pub skipped: Vec<(i64, String)>,
}

/// Imports Microsoft 365 users of `company` as portal users: a portal user of the company
/// with the same e-mail (a PSA's, say) is linked instead, never duplicated; a new one gets
/// its role by the same chain as PSA contacts (the company's Default Import Role, else the
/// integration's default role), with the reason kept.
async fn import_users(
    state: &AppState,
    c: &Caller,
    company: CompanyId,
    ids: &[i64],
) -> Result<ImportUsersAnswer, ApiError> {
    c.require(Permission::Write)?;
    if ids.is_empty() {
        return Err(ApiError::field("user_ids", "select at least one user"));
    }
    state.store.get_company(c.tenant_id, company).await?;
    let before = state.store.m365_users(c.tenant_id, company).await?;
    for id in ids {
        if !before.iter().any(|u| u.id == *id) {
            return Err(ApiError::field(
                "user_ids",
                format!("{id} is not a Microsoft 365 user of this company"),
            ));
        }
    }
    let mut answer = ImportUsersAnswer::default();
    // Portal users with the same e-mail first (a PSA's contact): linked, not duplicated.
    state.store.m365_match_users(c.tenant_id, company).await?;
    let users = state.store.m365_users(c.tenant_id, company).await?;
    let overrides = state
        .store
        .import_role_overrides(c.tenant_id, &[company.0])
        .await?;
    let connections = state
        .store
        .m365_company_connections(c.tenant_id, company)
        .await?;
    let now = state.now();
    // E-mails already in the company (checked again as users are created, so two
    // selected users with one e-mail — say in two tenants — make one portal user).
    let mut taken: std::collections::HashSet<String> = state
        .store
        .list_company_users(c.tenant_id, company)
        .await?
        .into_iter()
        .filter_map(|u| u.email.map(|e| e.to_lowercase()))
        .collect();
    for u in users.iter().filter(|u| ids.contains(&u.id)) {
        let was = before
            .iter()
            .find(|b| b.id == u.id)
            .and_then(|b| b.company_user_id);
        if u.company_user_id.is_some() {
            if was.is_none() {
                answer.matched += 1;
            } else {
                answer.skipped.push((u.id, "already in the portal".into()));
            }
            continue;
        }
        if u.removed_at.is_some() {
            answer
                .skipped
                .push((u.id, "removed from the tenant".into()));
            continue;
        }
        let Some(email) = u.email.clone() else {
            answer
                .skipped
                .push((u.id, "no e-mail address in Microsoft 365".into()));
            continue;
        };
        if !taken.insert(email.to_lowercase()) {
            answer.skipped.push((
                u.id,
                format!("{email} is already a portal user of this company"),
            ));
            continue;
        }
        let Some(integration) = connections
            .iter()
            .find(|x| x.id == u.connection_id)
            .map(|x| x.integration_id)
        else {
            continue;
        };
        let options = state
            .store
            .sync_options(c.tenant_id, IntegrationId(integration))
            .await?;
        let Some((role, source)) = mspbridge_domain::sync::choose_role(
            overrides.get(&company.0).copied(),
            &[],
            false,
            &options,
        ) else {
            answer.skipped.push((u.id, "no role applies: set the company's Default Import Role or the integration's default role".into()));
            continue;
        };
        let (first, last) = split_name(u);
        let created = state
            .store
            .create_company_user(
                c.tenant_id,
                mspbridge_store::NewCompanyUser {
                    company_id: company,
                    email: Some(email),
                    phone: None,
                    first_name: first,
                    last_name: last,
                    role_id: role,
                    role_reason: Some(format!(
                        "{} (imported from Microsoft 365)",
                        source.explain("Microsoft 365")
                    )),
                    status: if u.enabled {
                        mspbridge_domain::model::UserStatus::Imported
                    } else {
                        mspbridge_domain::model::UserStatus::Disabled
                    },
                    origin: mspbridge_domain::model::Origin::Import,
                },
                now,
            )
            .await?;
        state
            .store
            .m365_link_user(c.tenant_id, u.id, created.id.0, true)
            .await?;
        answer.imported += 1;
    }
    tracing::info!(tenant_id = %c.tenant_id, company_id = company.0, imported = answer.imported, matched = answer.matched, "Microsoft 365 users imported");
    Ok(answer)
}

/// First and last name: Graph's given name and surname, else the display name split at
/// its last space.
fn split_name(u: &UserRow) -> (String, String) {
    match (&u.first_name, &u.last_name) {
        (Some(f), Some(l)) if !f.trim().is_empty() => (f.clone(), l.clone()),
        _ => match u.display_name.trim().rsplit_once(' ') {
            Some((f, l)) => (f.to_string(), l.to_string()),
            None => (u.display_name.clone(), String::new()),
        },
    }
}

// ---------------------------------------------------------------------------------------
// API

#[utoipa::path(post, path = "/api/v1/companies/{company_id}/m365/users/import", tag = "microsoft_365",
    params(("company_id" = i64, Path, description = "Company id")),
    request_body = ImportUsersRequest,
    responses((status = 200, description = "Users imported (role by the import chain), matched to portal users of the same e-mail, or skipped with the reason", body = ImportUsersAnswer),
        (status = 422, description = "Invalid request", body = ErrorBody)))]
pub async fn post_import_users(
    State(state): State<AppState>,
    caller: Caller,
    Path(company): Path<String>,
    ApiJson(req): ApiJson<ImportUsersRequest>,
) -> Result<Json<ImportUsersAnswer>, ApiError> {
    Ok(Json(
        import_users(&state, &caller, company_path(&company)?, &req.user_ids).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/integrations/{id}/m365/customer-tenants", tag = "microsoft_365",
    params(("id" = i64, Path, description = "Microsoft 365 integration id")),
    responses((status = 200, description = "Customer tenants of your partner tenant (GDAP relationships), each with its connected company or the company proposed for it and why", body = [DiscoveredTenant]),
        (status = 502, description = "Microsoft refused or could not be reached (the permission to grant is named)", body = ErrorBody)))]
pub async fn list_customer_tenants(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<DiscoveredTenant>>, ApiError> {
    Ok(Json(discover(&state, &caller, parse_id(&id)?).await?))
}

fn company_path(raw: &str) -> Result<CompanyId, ApiError> {
    path_id(raw, "company_id", "a company id").map(CompanyId)
}

#[utoipa::path(get, path = "/api/v1/integrations/{id}/m365/companies", tag = "microsoft_365",
    params(("id" = i64, Path, description = "Microsoft 365 integration id")),
    responses((status = 200, description = "Company M365 Setup: every company with its tenants and the connected / total count", body = SetupView),
        (status = 404, description = "No such integration", body = ErrorBody)))]
pub async fn list_setup(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<SetupView>, ApiError> {
    Ok(Json(setup_view(&state, &caller, parse_id(&id)?).await?))
}

#[utoipa::path(post, path = "/api/v1/integrations/{id}/m365/companies/{company_id}/consent", tag = "microsoft_365",
    params(("id" = i64, Path, description = "Microsoft 365 integration id"), ("company_id" = i64, Path, description = "Company id")),
    request_body = ConsentRequest,
    responses((status = 200, description = "Microsoft's admin-consent address (connect, reconnect) or a consent link for the client's admin, with its expiry", body = ConsentAnswer),
        (status = 422, description = "Invalid request", body = ErrorBody)))]
pub async fn post_consent(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path((id, company)): Path<(String, String)>,
    ApiJson(req): ApiJson<ConsentRequest>,
) -> Result<Json<ConsentAnswer>, ApiError> {
    let (id, company) = (parse_id(&id)?, company_path(&company)?);
    Ok(Json(
        start_consent(&state, &caller, id, company, &req, &headers).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplicableRequest {
    /// True: Microsoft 365 does not apply to this company (left out of the progress).
    pub not_applicable: bool,
}

#[utoipa::path(put, path = "/api/v1/integrations/{id}/m365/companies/{company_id}/applicable", tag = "microsoft_365",
    params(("id" = i64, Path, description = "Microsoft 365 integration id"), ("company_id" = i64, Path, description = "Company id")),
    request_body = ApplicableRequest,
    responses((status = 204, description = "Saved"), (status = 404, description = "No such company", body = ErrorBody)))]
pub async fn put_applicable(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, company)): Path<(String, String)>,
    ApiJson(req): ApiJson<ApplicableRequest>,
) -> Result<StatusCode, ApiError> {
    set_applicable(
        &state,
        &caller,
        parse_id(&id)?,
        company_path(&company)?,
        req.not_applicable,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/integrations/{id}/m365/tenants/{connection_id}/disconnect", tag = "microsoft_365",
    params(("id" = i64, Path, description = "Microsoft 365 integration id"), ("connection_id" = i64, Path, description = "Tenant connection id")),
    responses((status = 200, description = "The tenant connection, disconnected (its data kept, no longer synced)", body = Connection),
        (status = 404, description = "No such tenant connection", body = ErrorBody)))]
pub async fn post_disconnect(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, conn)): Path<(String, String)>,
) -> Result<Json<Connection>, ApiError> {
    let conn = path_id(&conn, "connection_id", "a tenant connection id")?;
    Ok(Json(
        disconnect(&state, &caller, parse_id(&id)?, conn).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/companies/{company_id}/m365", tag = "microsoft_365",
    params(("company_id" = i64, Path, description = "Company id")),
    responses((status = 200, description = "The company's tenants, domains, licences, users, groups and Secure Score with history and controls", body = CompanyM365),
        (status = 404, description = "No such company", body = ErrorBody)))]
pub async fn get_company(
    State(state): State<AppState>,
    caller: Caller,
    Path(company): Path<String>,
) -> Result<Json<CompanyM365>, ApiError> {
    Ok(Json(
        company_view(&state, &caller, company_path(&company)?).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/m365/secure-scores", tag = "microsoft_365",
    responses((status = 200, description = "Each connected tenant's latest Secure Score, lowest percentage first, with its 30-day trend", body = [OverviewRow])))]
pub async fn get_overview(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<OverviewRow>>, ApiError> {
    Ok(Json(overview(&state, &caller).await?))
}

// ---------------------------------------------------------------------------------------
// Pages

#[derive(Template)]
#[template(path = "m365_setup.html")]
struct SetupPage {
    shell: Shell,
    id: i64,
    name: String,
    can_manage: bool,
    view: SetupView,
    /// The rows of this page after search and filter.
    rows: Vec<SetupRow>,
    /// Customer tenants found through GDAP (when asked for), or why not.
    discovered: Option<Result<Vec<DiscoveredTenant>, String>>,
    /// Companies to pick from for a discovered tenant.
    company_choices: Vec<(i64, String)>,
    shown: usize,
    pager: crate::devices::Pager,
    q: SetupQuery,
    percent: usize,
    flash: Option<String>,
    link: Option<String>,
    error: Option<String>,
    permissions: Vec<(&'static str, &'static str)>,
}

#[derive(Debug, Default, Clone, Deserialize)]
struct SetupQuery {
    #[serde(default)]
    q: String,
    /// `connected`, `attention`, `not_connected`, `not_applicable` or empty (all).
    #[serde(default)]
    state: String,
    #[serde(default)]
    page: Option<i64>,
    /// `1`: list the partner tenant's customer tenants (GDAP) with proposals.
    #[serde(default)]
    discover: String,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    error: String,
}

pub(crate) fn status_label(s: &str) -> &'static str {
    TenantStatus::parse(s).label()
}

pub(crate) fn status_fix(s: &str) -> &'static str {
    TenantStatus::parse(s).fix()
}

async fn setup_page(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Path(id): Path<String>,
    Query(q): Query<SetupQuery>,
) -> Response {
    setup_render(&state, &c, &id, &q, None).await
}

/// The setup page; `link` is a consent link just generated (shown once, never put in a
/// URL: it is a bearer credential for 7 days).
async fn setup_render(
    state: &AppState,
    c: &Caller,
    id: &str,
    q: &SetupQuery,
    link: Option<String>,
) -> Response {
    let done = async {
        let id = parse_id(id)?;
        let mut view = setup_view(state, c, id).await?;
        let i = state.store.get_integration(c.tenant_id, id).await?;
        let percent = (view.connected * 100).checked_div(view.total).unwrap_or(0);
        let needle = q.q.trim().to_lowercase();
        let matching: Vec<SetupRow> = std::mem::take(&mut view.companies)
            .into_iter()
            .filter(|r| {
                (q.state.is_empty() || r.state == q.state)
                    && (needle.is_empty()
                        || r.name.to_lowercase().contains(&needle)
                        || r.tenants.iter().any(|t| {
                            t.default_domain
                                .as_deref()
                                .unwrap_or_default()
                                .contains(&needle)
                                || t.display_name
                                    .as_deref()
                                    .unwrap_or_default()
                                    .to_lowercase()
                                    .contains(&needle)
                        }))
            })
            .collect();
        let shown = matching.len();
        let pager = crate::devices::pager(
            shown as i64,
            q.page,
            format!(
                "q={}&state={}",
                crate::devices::enc(&q.q),
                crate::devices::enc(&q.state)
            ),
        );
        let rows: Vec<SetupRow> = pager.slice(matching);
        let discovered = if q.discover == "1" && c.require(Permission::Manage).is_ok() {
            Some(discover(state, c, id).await.map_err(|e| e.to_string()))
        } else {
            None
        };
        let company_choices = if discovered.is_some() {
            state
                .store
                .list_companies(c.tenant_id)
                .await?
                .into_iter()
                .filter(|co| co.active)
                .map(|co| (co.id.0, co.name))
                .collect()
        } else {
            vec![]
        };
        Ok::<_, ApiError>(SetupPage {
            discovered,
            company_choices,
            rows,
            shown,
            pager,
            q: q.clone(),
            shell: shell(state, c).await?,
            id: id.0,
            name: i
                .nickname
                .clone()
                .unwrap_or_else(|| i.provider.descriptor().name.to_string()),
            can_manage: c.require(Permission::Manage).is_ok(),
            percent,
            view,
            flash: (!q.msg.is_empty()).then(|| q.msg.clone()),
            link,
            error: (!q.error.is_empty()).then(|| q.error.clone()),
            permissions: PERMISSIONS.to_vec(),
        })
    };
    match done.await {
        Ok(p) => render(p, StatusCode::OK),
        Err(e) => error_page(e),
    }
}

async fn setup_form(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<Vec<(String, String)>>,
) -> Response {
    let get = |n: &str| {
        form.iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let done = async {
        c.check_csrf(Some(&get("csrf")))?;
        let id = parse_id(&id)?;
        let company = || path_id(&get("company"), "company", "a company id").map(CompanyId);
        let connection = get("connection").parse::<i64>().ok();
        let back = format!("/settings/integrations/{}/m365", id.0);
        let r = match get("action").as_str() {
            "connect" | "add" => {
                let a = start_consent(
                    &state,
                    &c,
                    id,
                    company()?,
                    &ConsentRequest {
                        kind: ConsentKind::Connect,
                        connection_id: None,
                        tenant_id: Some(get("tenant")).filter(|t| !t.is_empty()),
                    },
                    &headers,
                )
                .await?;
                Redirect::to(&a.url)
            }
            "reconnect" => {
                let a = start_consent(
                    &state,
                    &c,
                    id,
                    company()?,
                    &ConsentRequest {
                        kind: ConsentKind::Reconnect,
                        connection_id: connection,
                        tenant_id: None,
                    },
                    &headers,
                )
                .await?;
                Redirect::to(&a.url)
            }
            "link" => {
                let company = company()?;
                let a = start_consent(
                    &state,
                    &c,
                    id,
                    company,
                    &ConsentRequest {
                        kind: ConsentKind::Link,
                        connection_id: None,
                        tenant_id: None,
                    },
                    &headers,
                )
                .await?;
                return Ok(setup_render(
                    &state,
                    &c,
                    &id.0.to_string(),
                    &SetupQuery::default(),
                    Some(a.url),
                )
                .await);
            }
            "na" | "restore" => {
                let na = get("action") == "na";
                set_applicable(&state, &c, id, company()?, na).await?;
                let msg = if na {
                    "Marked Not applicable: left out of the progress."
                } else {
                    "Restored."
                };
                Redirect::to(&format!("{back}?msg={}", crate::devices::enc(msg)))
            }
            "disconnect" => {
                let conn = connection.ok_or_else(|| {
                    ApiError::field("connection", "name the tenant to disconnect")
                })?;
                let t = disconnect(&state, &c, id, conn).await?;
                let msg = format!(
                    "Disconnected {} from {}: its data is kept and no longer synced.",
                    t.default_domain.as_deref().unwrap_or(&t.ms_tenant_id),
                    t.company_name
                );
                Redirect::to(&format!("{back}?msg={}", crate::devices::enc(&msg)))
            }
            _ => return Err(ApiError::field("action", "unknown action")),
        };
        Ok::<Response, ApiError>(r.into_response())
    };
    match done.await {
        Ok(r) => r.into_response(),
        Err(e) => error_page(e),
    }
}

#[derive(Template)]
#[template(path = "m365_consent.html")]
struct ConsentPage {
    ok: bool,
    title: String,
    message: String,
    advice: String,
    back: Option<String>,
}

async fn callback_page(State(state): State<AppState>, Query(q): Query<CallbackQuery>) -> Response {
    let page = match finish_consent(&state, &q).await {
        Ok((conn, kind)) => {
            let domain = conn
                .display_name
                .clone()
                .unwrap_or_else(|| conn.ms_tenant_id.clone());
            if kind == "session" {
                // The admin who started it goes back to the setup page.
                let msg = format!(
                    "Connected {} to {}. Its data arrives with the sync now queued.",
                    domain, conn.company_name
                );
                return Redirect::to(&format!(
                    "/settings/integrations/{}/m365?msg={}#company-{}",
                    conn.integration_id,
                    crate::devices::enc(&msg),
                    conn.company_id
                ))
                .into_response();
            }
            ConsentPage {
                ok: true,
                title: "Microsoft 365 connected".into(),
                message: format!(
                    "Thank you: {} is now connected for {}.",
                    domain, conn.company_name
                ),
                advice: "You can close this page.".into(),
                back: None,
            }
        }
        Err(e) => {
            let advice = match &e {
                ConsentError::Refused(r) => advice(r).to_string(),
                ConsentError::Declined(_) => "A Global Administrator of the tenant must accept. Try again from the same link or Connect button.".to_string(),
                ConsentError::Conflict(_) => "Disconnect the tenant from the other company on Company M365 Setup first.".to_string(),
                _ => "Start again from Company M365 Setup.".to_string(),
            };
            ConsentPage {
                ok: false,
                title: "Microsoft 365 was not connected".into(),
                message: e.to_string(),
                advice,
                back: None,
            }
        }
    };
    let status = if page.ok {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    render(page, status)
}

async fn link_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    match open_link(&state, &token, &headers).await {
        Ok((url, _company)) => Redirect::to(&url).into_response(),
        Err(e) => {
            let advice = match &e {
                ConsentError::Refused(r) => advice(r).to_string(),
                _ => "Ask your managed service provider for a new link.".to_string(),
            };
            render(
                ConsentPage {
                    ok: false,
                    title: "This consent link cannot be used".into(),
                    message: e.to_string(),
                    advice,
                    back: None,
                },
                StatusCode::BAD_REQUEST,
            )
        }
    }
}

#[derive(Template)]
#[template(path = "m365_company.html")]
struct CompanyPage {
    shell: Shell,
    company_id: i64,
    company_name: String,
    view: CompanyM365,
    sku_names: std::collections::HashMap<String, String>,
    filter: ControlFilter,
    categories: Vec<String>,
    setup: Option<i64>,
    can_write: bool,
    users_shown: usize,
    users_pager: crate::devices::Pager,
    groups_shown: usize,
    groups_pager: crate::devices::Pager,
}

#[derive(Debug, Default, Deserialize)]
struct ControlFilter {
    #[serde(default)]
    tab: String,
    #[serde(default)]
    msg: String,
    /// Users tab: search (name, e-mail, UPN) and page.
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: Option<i64>,
    #[serde(default)]
    category: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    severity: String,
}

impl ControlFilter {
    fn keeps(&self, c: &ControlView) -> bool {
        (self.category.is_empty() || c.category == self.category)
            && (self.status.is_empty() || c.status == self.status)
            && (self.severity.is_empty() || c.severity == self.severity)
    }
}

/// A history chart, 600 × 120: the percentage between `bottom` and `top` (the data's
/// range with a margin, in whole tens), the points of its line, and a grid line's height.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Chart {
    pub points: String,
    pub top: f64,
    pub bottom: f64,
}

pub(crate) fn chart(history: &[ScorePoint]) -> Chart {
    let lo = history
        .iter()
        .map(|p| p.percent)
        .fold(f64::INFINITY, f64::min);
    let hi = history
        .iter()
        .map(|p| p.percent)
        .fold(f64::NEG_INFINITY, f64::max);
    let (bottom, top) = if lo.is_finite() && hi.is_finite() {
        (
            ((lo - 5.0) / 10.0).floor().max(0.0) * 10.0,
            ((hi + 5.0) / 10.0).ceil().min(10.0) * 10.0,
        )
    } else {
        (0.0, 100.0)
    };
    let span = (top - bottom).max(1.0);
    let n = history.len().max(2) - 1;
    let points = history
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let x = i as f64 * 600.0 / n as f64;
            let y = 115.0 - (p.percent.clamp(bottom, top) - bottom) / span * 110.0;
            format!("{x:.1},{y:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ");
    Chart {
        points,
        top,
        bottom,
    }
}

/// "first day → last day" of a history.
pub(crate) fn span_of(history: &[ScorePoint]) -> String {
    match (history.first(), history.last()) {
        (Some(a), Some(b)) => format!("{} → {}", a.day, b.day),
        _ => String::new(),
    }
}

/// A 30-day trend in words.
pub(crate) fn trend_text(t: &Option<f64>) -> String {
    match t {
        Some(t) if *t > 0.0 => format!("▲ +{t} points"),
        Some(t) if *t < 0.0 => format!("▼ {t} points"),
        Some(_) => "no change".into(),
        None => "—".into(),
    }
}

pub(crate) fn licences_of(
    u: &UserRow,
    names: &std::collections::HashMap<String, String>,
) -> String {
    let ids: Vec<String> = serde_json::from_str(&u.sku_ids).unwrap_or_default();
    ids.iter()
        .map(|id| names.get(id).cloned().unwrap_or_else(|| id.clone()))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn company_page(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Path(company): Path<String>,
    Query(filter): Query<ControlFilter>,
) -> Response {
    let done = async {
        let company = company_path(&company)?;
        let mut view = company_view(&state, &c, company).await?;
        let needle = filter.q.trim().to_lowercase();
        let users: Vec<UserRow> = std::mem::take(&mut view.users)
            .into_iter()
            .filter(|u| {
                needle.is_empty()
                    || u.display_name.to_lowercase().contains(&needle)
                    || u.email.as_deref().unwrap_or_default().contains(&needle)
                    || u.upn
                        .as_deref()
                        .unwrap_or_default()
                        .to_lowercase()
                        .contains(&needle)
            })
            .collect();
        let users_shown = users.len();
        let users_pager = crate::devices::pager(
            users_shown as i64,
            filter.page,
            format!("tab=users&q={}", crate::devices::enc(&filter.q)),
        );
        view.users = users_pager.slice(users);
        let groups: Vec<GroupRow> = std::mem::take(&mut view.groups)
            .into_iter()
            .filter(|g| {
                needle.is_empty()
                    || g.name.to_lowercase().contains(&needle)
                    || g.mail
                        .as_deref()
                        .unwrap_or_default()
                        .to_lowercase()
                        .contains(&needle)
            })
            .collect();
        let groups_shown = groups.len();
        let groups_pager = crate::devices::pager(
            groups_shown as i64,
            filter.page,
            format!("tab=groups&q={}", crate::devices::enc(&filter.q)),
        );
        view.groups = groups_pager.slice(groups);
        let co = state.store.get_company(c.tenant_id, company).await?;
        let sku_names = view
            .licences
            .iter()
            .map(|l| (l.sku_id.clone(), l.name.clone()))
            .collect();
        let mut categories: Vec<String> = view
            .secure_scores
            .iter()
            .flat_map(|s| s.controls.iter().map(|c| c.category.clone()))
            .filter(|c| !c.is_empty())
            .collect();
        categories.sort();
        categories.dedup();
        let setup = state
            .store
            .list_integrations(c.tenant_id)
            .await?
            .into_iter()
            .find(|i| i.provider == ProviderKind::Microsoft365)
            .map(|i| i.id.0);
        Ok::<_, ApiError>(CompanyPage {
            shell: shell(&state, &c).await?,
            company_id: company.0,
            company_name: co.name,
            view,
            sku_names,
            filter,
            categories,
            setup,
            can_write: c.require(Permission::Write).is_ok(),
            users_shown,
            users_pager,
            groups_shown,
            groups_pager,
        })
    };
    match done.await {
        Ok(p) => render(p, StatusCode::OK),
        Err(e) => error_page(e),
    }
}

async fn company_form(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Path(company): Path<String>,
    axum::Form(form): axum::Form<Vec<(String, String)>>,
) -> Response {
    let csrf = form
        .iter()
        .find(|(n, _)| n == "csrf")
        .map(|(_, v)| v.clone());
    let done = async {
        c.check_csrf(csrf.as_deref())?;
        let company = company_path(&company)?;
        let mut ids = Vec::new();
        for (_, v) in form.iter().filter(|(n, _)| n == "user") {
            ids.push(path_id(v, "user", "a user id")?);
        }
        let a = import_users(&state, &c, company, &ids).await?;
        let mut msg = format!(
            "{} imported, {} matched to portal users by e-mail",
            a.imported, a.matched
        );
        if !a.skipped.is_empty() {
            let why: Vec<String> = a.skipped.iter().take(3).map(|(_, w)| w.clone()).collect();
            msg.push_str(&format!(
                "; {} not imported ({})",
                a.skipped.len(),
                why.join("; ")
            ));
        }
        Ok::<_, ApiError>(Redirect::to(&format!(
            "/companies/{}/m365?tab=users&msg={}",
            company.0,
            crate::devices::enc(&msg)
        )))
    };
    match done.await {
        Ok(r) => r.into_response(),
        Err(e) => error_page(e),
    }
}

#[derive(Template)]
#[template(path = "m365_scores.html")]
struct OverviewPage {
    shell: Shell,
    rows: Vec<OverviewRow>,
    search: String,
}

#[derive(Debug, Default, Deserialize)]
struct OverviewQuery {
    #[serde(default)]
    q: String,
}

async fn overview_page(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Query(q): Query<OverviewQuery>,
) -> Response {
    let done = async {
        let needle = q.q.trim().to_lowercase();
        let rows = overview(&state, &c)
            .await?
            .into_iter()
            .filter(|r| {
                needle.is_empty()
                    || r.row.company_name.to_lowercase().contains(&needle)
                    || r.row
                        .display_name
                        .as_deref()
                        .unwrap_or_default()
                        .to_lowercase()
                        .contains(&needle)
            })
            .collect();
        Ok::<_, ApiError>(OverviewPage {
            shell: shell(&state, &c).await?,
            rows,
            search: q.q.clone(),
        })
    };
    match done.await {
        Ok(p) => render(p, StatusCode::OK),
        Err(e) => error_page(e),
    }
}
