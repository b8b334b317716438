//! Billing (spec 2.19, Stripe): a company's Billing tab (balance, open and past-due
//! invoices with Pay, recent payments, the subscription, Manage payment methods), the
//! MSP's past-due overview, "Create Stripe customer", the metadata write-back when an
//! admin links a customer, the signed webhook receiver, and client users' own sign-in
//! (`/client`), where a company's people see and pay their own company's bills only.
//!
//! The webhook (`POST /webhooks/stripe/{integration_id}`) is verified over the raw body
//! with the integration's signing secrets (several while one is rolled), recorded once by
//! event id (a replay or duplicate is answered 200 and changes nothing), answered at once,
//! and the object it names is read again from Stripe before anything changes: events
//! arrive out of order, the object as it is now does not.

use std::collections::BTreeMap;

use askama::Template;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use mspbridge_domain::auth::Permission;
use mspbridge_domain::billing::format_amount;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::integration::{Integration, IntegrationStatus};
use mspbridge_domain::{CompanyId, IntegrationId, SecretString, TenantId};
use mspbridge_providers::billing::{BillingError, BillingSource, Current};
use mspbridge_providers::stripe::webhooks;
use mspbridge_store::billing::{
    CustomerRow, InvoiceFilter, InvoiceRow, PastDueRow, PaymentRow, SubscriptionRow,
};
use mspbridge_store::mapping::{LinkOutcome, LinkRequest};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::AppState;
use crate::api::path_id;
use crate::auth::{Caller, cookie_value};
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiQuery;
use crate::ui::{Shell, UiCaller, error_page, render, shell};
use axum::Form;

/// Client sessions' cookie: never a staff session's.
pub const CLIENT_COOKIE: &str = "msb_client";
const CLIENT_LOGIN_CSRF: &str = "msb_client_login";
const CLIENT_SESSION_HOURS: i64 = 8;
/// An event id seen within this window is a duplicate (Stripe retries for 3 days).
const EVENT_WINDOW_DAYS: i64 = 30;

pub fn api_routes() -> Router<AppState> {
    Router::new()
        .route("/companies/{company_id}/billing", get(get_company_billing))
        .route(
            "/companies/{company_id}/billing/customer",
            post(post_create_customer),
        )
        .route("/companies/{company_id}/billing/portal", post(post_portal))
        .route(
            "/companies/{company_id}/users/{user_id}/portal-access",
            post(post_portal_access).delete(delete_portal_access),
        )
        .route("/billing/past-due", get(get_past_due))
        .route("/billing/invoices", get(get_invoices))
        .route("/billing/webhook", get(get_webhook))
        .route("/client/billing", get(client_get_billing))
        .route("/client/billing/portal", post(client_post_portal))
        .route("/client/invoices/{invoice_id}", get(client_get_invoice))
}

pub fn ui_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/companies/{company_id}/billing",
            get(company_page).post(company_form),
        )
        .route("/billing", get(overview_page))
        .route("/client", get(client_page))
        .route("/client/login", get(client_login_page).post(client_login))
        .route("/client/logout", post(client_logout))
        .route("/client/invoices/{invoice_id}/pay", get(client_pay))
        .route("/client/billing/portal", post(client_portal_form))
        .route("/billing/invoices/{invoice_id}/pay", get(staff_pay))
}

pub fn webhook_routes() -> Router<AppState> {
    Router::new().route("/webhooks/stripe/{integration_id}", post(webhook))
}

// ---------------------------------------------------------------------------------------
// Services

/// The tenant's Stripe integration (the first connected one), if any.
pub async fn stripe_integration(
    state: &AppState,
    tenant: TenantId,
) -> Result<Option<Integration>, ApiError> {
    Ok(state
        .store
        .list_integrations(tenant)
        .await?
        .into_iter()
        .filter(|i| i.provider == ProviderKind::Stripe)
        .min_by_key(|i| (i.status == IntegrationStatus::Disconnected, i.id.0)))
}

/// The billing source of a connected Stripe integration, for a request an admin waits on.
pub(crate) async fn source(
    state: &AppState,
    i: &Integration,
) -> Result<Box<dyn BillingSource>, ApiError> {
    if i.status == IntegrationStatus::Disconnected {
        return Err(ApiError::Conflict(
            "Stripe is disconnected: reconnect it under Settings → Integrations".into(),
        ));
    }
    let creds = crate::integrations::stored_credentials(state, i).await?;
    state
        .providers
        .billing_source(
            i.provider,
            &creds,
            mspbridge_providers::http::RetryPolicy::interactive(),
        )
        .ok_or(ApiError::NotFound)?
        .map_err(|m| ApiError::Vendor {
            provider: "Stripe",
            message: m,
        })
}

fn vendor(e: BillingError) -> ApiError {
    match e {
        BillingError::Invalid(m) => ApiError::Rejected {
            status: StatusCode::BAD_GATEWAY,
            message: format!("Stripe refused the request: {m}"),
        },
        other => ApiError::Vendor {
            provider: "Stripe",
            message: other.to_string(),
        },
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InvoiceView {
    #[serde(flatten)]
    pub row: InvoiceRow,
    pub past_due: bool,
    pub payable: bool,
    /// `amount_remaining` in words (`1,234.50 USD`).
    pub remaining_text: String,
    pub total_text: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PaymentView {
    #[serde(flatten)]
    pub row: PaymentRow,
    pub amount_text: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CompanyBilling {
    pub company_id: i64,
    pub company_name: String,
    /// `null` when no Stripe integration is connected.
    pub integration_id: Option<i64>,
    /// The Stripe customer linked to the company.
    pub customer: Option<CustomerRow>,
    /// Left to pay on open invoices, per currency, in words.
    pub open_total: Vec<String>,
    pub past_due_total: Vec<String>,
    pub open_invoices: Vec<InvoiceView>,
    pub recent_invoices: Vec<InvoiceView>,
    pub payments: Vec<PaymentView>,
    pub subscriptions: Vec<SubscriptionRow>,
}

fn invoice_view(row: InvoiceRow, now: chrono::DateTime<chrono::Utc>) -> InvoiceView {
    let payable = row.status == "open" && row.amount_remaining > 0;
    InvoiceView {
        past_due: payable && row.due_date.is_some_and(|d| d < now),
        payable,
        remaining_text: format_amount(row.amount_remaining, &row.currency),
        total_text: format_amount(row.total, &row.currency),
        row,
    }
}

fn totals(rows: &[&InvoiceView]) -> Vec<String> {
    let mut by: BTreeMap<String, i64> = BTreeMap::new();
    for r in rows {
        *by.entry(r.row.currency.clone()).or_default() += r.row.amount_remaining;
    }
    by.into_iter().map(|(c, a)| format_amount(a, &c)).collect()
}

/// Everything a company's Billing tab shows.
pub async fn company_billing(
    state: &AppState,
    tenant: TenantId,
    company: CompanyId,
) -> Result<CompanyBilling, ApiError> {
    let c = state.store.get_company(tenant, company).await?;
    let now = state.now();
    let integration = stripe_integration(state, tenant).await?;
    let customer = match &integration {
        Some(i) => {
            state
                .store
                .billing_customer_of(tenant, i.id, company)
                .await?
        }
        None => None,
    };
    let open = state
        .store
        .billing_invoices(tenant, Some(company), InvoiceFilter::Open, now, 0, 200)
        .await?;
    let recent = state
        .store
        .billing_invoices(tenant, Some(company), InvoiceFilter::All, now, 0, 24)
        .await?;
    let open_invoices: Vec<InvoiceView> = open
        .rows
        .into_iter()
        .map(|r| invoice_view(r, now))
        .collect();
    let open_refs: Vec<&InvoiceView> = open_invoices.iter().collect();
    let past_refs: Vec<&InvoiceView> = open_invoices.iter().filter(|i| i.past_due).collect();
    let payments = state
        .store
        .billing_payments(tenant, company, 20)
        .await?
        .into_iter()
        .map(|row| PaymentView {
            amount_text: format_amount(row.amount, &row.currency),
            row,
        })
        .collect();
    Ok(CompanyBilling {
        company_id: company.0,
        company_name: c.name,
        integration_id: integration.as_ref().map(|i| i.id.0),
        customer,
        open_total: totals(&open_refs),
        past_due_total: totals(&past_refs),
        recent_invoices: recent
            .rows
            .into_iter()
            .map(|r| invoice_view(r, now))
            .collect(),
        open_invoices,
        payments,
        subscriptions: state.store.billing_subscriptions(tenant, company).await?,
    })
}

/// The hosted invoice page of an invoice of `company` (any company for staff).
pub async fn pay_url(
    state: &AppState,
    tenant: TenantId,
    company: Option<CompanyId>,
    invoice: i64,
) -> Result<String, ApiError> {
    let row = state
        .store
        .billing_invoice(tenant, invoice)
        .await?
        .ok_or(ApiError::NotFound)?;
    if company.is_some_and(|c| row.company_id != Some(c.0)) {
        return Err(ApiError::NotFound);
    }
    if !(row.status == "open" && row.amount_remaining > 0) {
        return Err(ApiError::Conflict(format!(
            "Invoice {} is {}: nothing is left to pay",
            row.number.as_deref().unwrap_or(&row.external_id),
            row.status
        )));
    }
    row.hosted_invoice_url
        .filter(|u| stripe_page(state, u))
        .ok_or_else(|| ApiError::Conflict("Stripe gave this invoice no payment page".into()))
}

/// Whether `url` is one of Stripe's pages a user may be sent to: https on Stripe's own hosts
/// (`invoice.stripe.com`, `pay.stripe.com`, `billing.stripe.com`, …), or on the host of the
/// Stripe API this deployment was pointed at (a lab or the sandbox).
pub fn stripe_page(state: &AppState, url: &str) -> bool {
    let host_of = |u: &str| -> Option<(String, String)> {
        let (scheme, rest) = u.split_once("://")?;
        let host = rest.split(['/', '?', '#']).next()?.to_ascii_lowercase();
        (!host.is_empty() && !host.contains('@')).then(|| (scheme.to_ascii_lowercase(), host))
    };
    let Some((scheme, host)) = host_of(url) else {
        return false;
    };
    let bare = host.split(':').next().unwrap_or_default();
    if scheme == "https" && (bare == "stripe.com" || bare.ends_with(".stripe.com")) {
        return true;
    }
    state
        .providers
        .config()
        .stripe
        .api_base
        .as_deref()
        .and_then(host_of)
        .is_some_and(|(_, api)| api == host && (scheme == "https" || scheme == "http"))
}

/// A link from Stripe's data shown on a page (a PDF, a receipt): only Stripe's own pages.
pub fn safe_link(state: &AppState, url: &Option<String>) -> Option<String> {
    url.as_ref().filter(|u| stripe_page(state, u)).cloned()
}

/// A billing-portal session for the company's customer (created per click).
pub async fn portal_session(
    state: &AppState,
    tenant: TenantId,
    company: CompanyId,
    return_url: &str,
) -> Result<String, ApiError> {
    let i = stripe_integration(state, tenant)
        .await?
        .ok_or_else(|| ApiError::Conflict("Stripe is not connected".into()))?;
    let customer = state
        .store
        .billing_customer_of(tenant, i.id, company)
        .await?
        .ok_or_else(|| ApiError::Conflict("This company has no Stripe customer yet".into()))?;
    source(state, &i)
        .await?
        .portal_session(&customer.external_id, return_url)
        .await
        .map_err(vendor)
}

/// Creates the company's Stripe customer (named after the company, its id in the
/// metadata) and links it. Idempotent: the key names the tenant and company, so a
/// retried or repeated request finds the same customer.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant, company_id = company.0))]
pub async fn create_customer(
    state: &AppState,
    tenant: TenantId,
    company: CompanyId,
    email: Option<&str>,
    actor: &str,
) -> Result<CustomerRow, ApiError> {
    let c = state.store.get_company(tenant, company).await?;
    let i = stripe_integration(state, tenant)
        .await?
        .ok_or_else(|| ApiError::Conflict("Connect Stripe first".into()))?;
    if let Some(existing) = state
        .store
        .billing_customer_of(tenant, i.id, company)
        .await?
    {
        return Err(ApiError::Conflict(format!(
            "{} already has the Stripe customer {}",
            c.name, existing.external_id
        )));
    }
    if let Some(e) = email
        && (!e.contains('@') || e.len() > 254)
    {
        return Err(ApiError::field("email", "must be an e-mail address"));
    }
    // The same request (tenant, company, name, e-mail) always carries the same key, so a
    // retry or a second click finds the customer the first made; another request differs.
    let key = {
        let h = mspbridge_domain::sync::content_hash(&(tenant.0, company.0, &c.name, email));
        format!("mspbridge-customer-{}-{}-{}", tenant.0, company.0, &h[..24])
    };
    let created = source(state, &i)
        .await?
        .create_customer(&c.name, email, company.0, &key)
        .await
        .map_err(vendor)?;
    let now = state.now();
    state
        .store
        .billing_save_customers(tenant, i.id, std::slice::from_ref(&created), now)
        .await?;
    state
        .store
        .apply_company_links(
            tenant,
            &[LinkRequest {
                integration: i.id,
                external_id: created.external_id.clone(),
                company: Some(company),
            }],
            "link",
            actor,
            None,
            now,
        )
        .await?;
    tracing::info!(customer = %created.external_id, "Stripe customer created and linked");
    state
        .store
        .billing_customer(tenant, i.id, &created.external_id)
        .await?
        .ok_or(ApiError::NotFound)
}

/// After links changed in the mapping: each Stripe customer linked gets its company's id
/// in its metadata, each one unlinked loses it (idempotent writes, in the background: the
/// link stands whatever Stripe says; a failure is logged, and the sync links by metadata
/// only what it can).
pub fn write_back(state: &AppState, tenant: TenantId, outcomes: &[LinkOutcome]) {
    let outcomes = outcomes.to_vec();
    let state = state.clone();
    tokio::spawn(async move {
        let Ok(Some(i)) = stripe_integration(&state, tenant).await else {
            return;
        };
        let mine: Vec<&LinkOutcome> = outcomes.iter().filter(|o| o.integration == i.id).collect();
        if mine.is_empty() {
            return;
        }
        let Ok(src) = source(&state, &i).await else {
            return;
        };
        for o in mine {
            let value = o.after.map(|c| c.0);
            match src.tag_customer(&o.external_id, value).await {
                Ok(_) => {
                    tracing::info!(customer = %o.external_id, company = ?value, "Stripe customer metadata written")
                }
                Err(e) => {
                    tracing::warn!(customer = %o.external_id, error = %e, "Stripe customer metadata not written")
                }
            }
            if let Some(d) = &o.displaced
                && let Err(e) = src.tag_customer(d, None).await
            {
                tracing::warn!(customer = %d, error = %e, "Stripe customer metadata not removed");
            }
        }
    });
}

/// The address Stripe posts to, and whether this deployment can register it.
pub fn webhook_url(state: &AppState, integration: IntegrationId) -> Option<String> {
    state
        .public_url
        .as_ref()
        .map(|b| format!("{b}/webhooks/stripe/{}", integration.0))
}

/// Registers the webhook endpoint with Stripe where this deployment has a public URL, and
/// keeps its signing secret (sealed) beside the key. What happened, in words.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant, integration_id = %id))]
pub async fn register_webhook(state: &AppState, tenant: TenantId, id: IntegrationId) -> String {
    let Some(url) = webhook_url(state, id) else {
        return format!(
            "not registered: this deployment has no public URL. In Stripe, Developers > Webhooks > Add endpoint: the URL https://<this portal>/webhooks/stripe/{}, API version {}, events {}; then paste its signing secret into the integration's Webhook signing secret",
            id.0,
            mspbridge_providers::stripe::STRIPE_VERSION,
            webhooks::EVENTS.join(", ")
        );
    };
    let outcome = async {
        let i = state.store.get_integration(tenant, id).await?;
        let src = source(state, &i).await?;
        let (endpoint, secret) = src.register_webhook(&url).await.map_err(vendor)?;
        let report = i.last_test.clone().ok_or(ApiError::NotFound)?;
        let mut new_secrets = BTreeMap::new();
        new_secrets.insert("webhook_secret".to_string(), SecretString::new(secret));
        state
            .store
            .update_credentials(
                tenant,
                id,
                mspbridge_store::CredentialUpdate {
                    settings: i.settings.clone(),
                    new_secrets,
                    keep: vec!["secret_key".into()],
                    report,
                },
                &state.vault,
                state.now(),
            )
            .await?;
        Ok::<_, ApiError>(endpoint)
    }
    .await;
    let status = match &outcome {
        Ok(endpoint) => format!("registered: {url} (endpoint {endpoint})"),
        Err(e) => format!("not registered ({e}); changes arrive with the scheduled sync"),
    };
    let endpoint = outcome.as_ref().ok().map(String::as_str);
    if let Err(e) = state
        .store
        .billing_set_webhook(tenant, id, endpoint, Some(&url), &status, state.now())
        .await
    {
        tracing::warn!(error = %e, "webhook status not kept");
    }
    tracing::info!(status, "Stripe webhook registration");
    status
}

// ---------------------------------------------------------------------------------------
// Webhook

fn webhook_refused(integration: i64, status: StatusCode, why: &str) -> Response {
    tracing::warn!(
        integration_id = integration,
        reason = why,
        "Stripe webhook refused"
    );
    (status, Json(json!({ "error": why }))).into_response()
}

#[tracing::instrument(skip_all, fields(integration_id = %raw))]
pub async fn webhook(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Whatever is wrong before the signature is checked gets one answer, so the endpoint
    // does not tell which integration ids exist.
    const UNVERIFIED: &str = "the delivery could not be verified";
    let Ok(id) = raw.parse::<i64>() else {
        return webhook_refused(0, StatusCode::BAD_REQUEST, UNVERIFIED);
    };
    let tenant = match state.store.integration_owner(IntegrationId(id)).await {
        Ok(Some(t)) => t,
        _ => return webhook_refused(id, StatusCode::BAD_REQUEST, UNVERIFIED),
    };
    let Ok(i) = state.store.get_integration(tenant, IntegrationId(id)).await else {
        return webhook_refused(id, StatusCode::BAD_REQUEST, UNVERIFIED);
    };
    if i.provider != ProviderKind::Stripe || i.status == IntegrationStatus::Disconnected {
        return webhook_refused(id, StatusCode::BAD_REQUEST, UNVERIFIED);
    }
    let Ok(creds) = crate::integrations::stored_credentials(&state, &i).await else {
        return webhook_refused(id, StatusCode::BAD_REQUEST, UNVERIFIED);
    };
    let stored = creds.get("webhook_secret").unwrap_or_default();
    let secrets = webhooks::secrets_of(stored);
    let header = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    // Signatures are checked on the raw bytes, before any parsing.
    if let Err(e) = webhooks::verify(
        header,
        &body,
        &secrets,
        state.now().timestamp(),
        webhooks::TOLERANCE_SECS,
    ) {
        return webhook_refused(id, StatusCode::BAD_REQUEST, &e.to_string());
    }
    let event: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return webhook_refused(id, StatusCode::BAD_REQUEST, "the body is not JSON"),
    };
    let (Some(event_id), Some(kind)) = (event["id"].as_str(), event["type"].as_str()) else {
        return webhook_refused(id, StatusCode::BAD_REQUEST, "not a Stripe event");
    };
    // The endpoint's version decides the event's shape; the object is read again with the
    // pinned version whatever it is, but a mismatch is said so the admin can align them.
    let version_note = match event["api_version"].as_str() {
        Some(v) if v != mspbridge_providers::stripe::STRIPE_VERSION => {
            tracing::warn!(
                event_version = v,
                pinned = mspbridge_providers::stripe::STRIPE_VERSION,
                "Stripe webhook endpoint on another API version"
            );
            Some(format!(
                " (the endpoint sends API version {v}, mspbridge reads {}: set the endpoint's version to match)",
                mspbridge_providers::stripe::STRIPE_VERSION
            ))
        }
        _ => None,
    };
    let object = &event["data"]["object"];
    let object_id = object["id"].as_str().unwrap_or_default().to_string();
    let object_kind = object["object"].as_str().unwrap_or_default().to_string();
    let first = match state
        .store
        .record_webhook(
            tenant,
            i.id,
            &format!("stripe:{event_id}"),
            "stripe",
            kind,
            &object_id,
            state.now(),
            chrono::Duration::days(EVENT_WINDOW_DAYS),
        )
        .await
    {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "Stripe event not recorded");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "try again"})),
            )
                .into_response();
        }
    };
    if !first {
        tracing::info!(event_id, "Stripe event already received: nothing to do");
        return (
            StatusCode::OK,
            Json(json!({"received": true, "duplicate": true})),
        )
            .into_response();
    }
    let event_id = event_id.to_string();
    let kind = kind.to_string();
    tokio::spawn(async move {
        // Events of one object are applied one at a time: each reads the object again, so
        // the last read (the newest state) is the one saved.
        let lock = object_lock(i.id.0, &object_id);
        let _held = lock.lock().await;
        let outcome = apply_event(&state, tenant, &i, &kind, &object_kind, &object_id).await;
        let mut text = match &outcome {
            Ok(t) => t.clone(),
            Err(e) => format!("not applied: {e}; the next sync reads it"),
        };
        if let Some(n) = &version_note {
            text.push_str(n);
        }
        tracing::info!(event_id, kind, outcome = %text, "Stripe event applied");
        let _ = state
            .store
            .webhook_outcome(i.id, &format!("stripe:{event_id}"), &text)
            .await;
    });
    (StatusCode::OK, Json(json!({"received": true}))).into_response()
}

type ObjectLocks =
    std::sync::Mutex<std::collections::HashMap<String, std::sync::Weak<tokio::sync::Mutex<()>>>>;

/// The lock of one Stripe object of one integration (kept while someone holds it).
fn object_lock(integration: i64, object: &str) -> std::sync::Arc<tokio::sync::Mutex<()>> {
    static LOCKS: std::sync::OnceLock<ObjectLocks> = std::sync::OnceLock::new();
    let locks = LOCKS.get_or_init(Default::default);
    let mut map = locks.lock().unwrap_or_else(|p| p.into_inner());
    map.retain(|_, w| w.strong_count() > 0);
    let key = format!("{integration}:{object}");
    if let Some(l) = map.get(&key).and_then(std::sync::Weak::upgrade) {
        return l;
    }
    let l = std::sync::Arc::new(tokio::sync::Mutex::new(()));
    map.insert(key, std::sync::Arc::downgrade(&l));
    l
}

/// Reads the object an event names as Stripe has it now and saves it.
async fn apply_event(
    state: &AppState,
    tenant: TenantId,
    i: &Integration,
    kind: &str,
    object_kind: &str,
    object_id: &str,
) -> Result<String, ApiError> {
    let src = source(state, i).await?;
    let now = state.now();
    let store = &state.store;
    let gone = |table: &'static str| async move {
        store
            .billing_remove(tenant, i.id, table, object_id, now)
            .await
            .map(|n| format!("{object_id} removed ({n})"))
            .map_err(ApiError::from)
    };
    match object_kind {
        "customer" => match src.customer(object_id).await.map_err(vendor)? {
            Current::Found(c) => {
                store
                    .billing_save_customers(tenant, i.id, &[c], now)
                    .await?;
                Ok(format!("customer {object_id} read again"))
            }
            Current::Gone => gone("customers").await,
        },
        "invoice" => match src.invoice(object_id).await.map_err(vendor)? {
            Current::Found(v) => {
                store.billing_save_invoices(tenant, i.id, &[v], now).await?;
                Ok(format!("invoice {object_id} read again"))
            }
            Current::Gone => gone("invoices").await,
        },
        "subscription" => match src.subscription(object_id).await.map_err(vendor)? {
            Current::Found(v) => {
                store
                    .billing_save_subscriptions(tenant, i.id, &[v], now)
                    .await?;
                Ok(format!("subscription {object_id} read again"))
            }
            Current::Gone => gone("subscriptions").await,
        },
        "payment_intent" => match src.payment(object_id).await.map_err(vendor)? {
            Current::Found(v) => {
                store.billing_save_payments(tenant, i.id, &[v], now).await?;
                Ok(format!("payment {object_id} read again"))
            }
            Current::Gone => gone("payments").await,
        },
        _ => Ok(format!("{kind}: not used by the portal")),
    }
}

// ---------------------------------------------------------------------------------------
// Client users

/// A signed-in client user: sees their own company's billing only.
#[derive(Debug, Clone)]
pub struct ClientCaller {
    pub tenant_id: TenantId,
    pub user_id: i64,
    pub company_id: CompanyId,
    pub company_name: String,
    pub email: String,
    pub name: String,
    pub csrf: String,
}

impl FromRequestParts<AppState> for ClientCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let sid = cookie_value(&parts.headers, CLIENT_COOKIE).ok_or(ApiError::Unauthenticated)?;
        let s = state
            .store
            .client_session(&mspbridge_vault::hash_token(sid), state.now())
            .await?
            .ok_or(ApiError::Unauthenticated)?;
        tracing::Span::current().record("tenant_id", s.tenant_id);
        Ok(ClientCaller {
            tenant_id: TenantId(s.tenant_id),
            user_id: s.user_id,
            company_id: CompanyId(s.company_id),
            company_name: s.company_name,
            email: s.email,
            name: s.name,
            csrf: s.csrf_token,
        })
    }
}

impl axum::extract::OptionalFromRequestParts<AppState> for ClientCaller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(
            <ClientCaller as FromRequestParts<AppState>>::from_request_parts(parts, state)
                .await
                .ok(),
        )
    }
}

impl ClientCaller {
    fn check_csrf(&self, got: &str) -> Result<(), ApiError> {
        if !got.is_empty()
            && mspbridge_vault::constant_time_eq(self.csrf.as_bytes(), got.as_bytes())
        {
            Ok(())
        } else {
            Err(ApiError::Csrf)
        }
    }
}

/// A random password for a client user, shown once.
fn new_password() -> Result<String, ApiError> {
    let (t, _) = mspbridge_vault::new_token("").map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(t.trim_start_matches('_').chars().take(20).collect())
}

/// Gives a company's user a sign-in at `/client/login` (a new password, returned once).
pub async fn grant_portal_access(
    state: &AppState,
    tenant: TenantId,
    company: CompanyId,
    user: i64,
) -> Result<(String, String), ApiError> {
    let users = state.store.list_company_users(tenant, company).await?;
    let u = users
        .into_iter()
        .find(|u| u.id.0 == user)
        .ok_or(ApiError::NotFound)?;
    let email = u.email.clone().filter(|e| e.contains('@')).ok_or_else(|| {
        ApiError::field("user_id", "this user has no e-mail address to sign in with")
    })?;
    let password = new_password()?;
    let p = password.clone();
    let hash = tokio::task::spawn_blocking(move || mspbridge_vault::hash_password(&p))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    state
        .store
        .set_client_password(tenant, user, Some(&hash), state.now())
        .await?;
    Ok((email, password))
}

// ---------------------------------------------------------------------------------------
// API

pub(crate) fn company_of(raw: &str) -> Result<CompanyId, ApiError> {
    path_id(raw, "company_id", "a company id").map(CompanyId)
}

#[utoipa::path(get, path = "/api/v1/companies/{company_id}/billing", tag = "billing",
    params(("company_id" = i64, Path, description = "Portal company id")),
    responses((status = 200, body = CompanyBilling), (status = 404, body = ErrorBody)))]
pub async fn get_company_billing(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<CompanyBilling>, ApiError> {
    caller.require(Permission::Read)?;
    Ok(Json(
        company_billing(&state, caller.tenant_id, company_of(&raw)?).await?,
    ))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCustomer {
    /// The billing e-mail (optional).
    #[serde(default)]
    pub email: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/companies/{company_id}/billing/customer", tag = "billing",
    request_body = CreateCustomer,
    params(("company_id" = i64, Path, description = "Portal company id")),
    responses((status = 201, body = CustomerRow), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn post_create_customer(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    crate::api::ApiJson(body): crate::api::ApiJson<CreateCustomer>,
) -> Result<(StatusCode, Json<CustomerRow>), ApiError> {
    caller.require(Permission::Manage)?;
    let company = company_of(&raw)?;
    let actor = crate::mapping_api::actor(&caller);
    let c = create_customer(
        &state,
        caller.tenant_id,
        company,
        body.email.as_deref().filter(|e| !e.trim().is_empty()),
        &actor,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(c)))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UrlView {
    pub url: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortalRequest {
    /// Where Stripe's page sends the user back (this portal's own pages only).
    #[serde(default)]
    pub return_url: Option<String>,
}

fn return_url(
    state: &AppState,
    headers: &HeaderMap,
    asked: Option<&str>,
    path: &str,
) -> Result<String, ApiError> {
    let base = match &state.public_url {
        Some(b) => b.clone(),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            format!("http://{host}")
        }
    };
    match asked {
        None => Ok(format!("{base}{path}")),
        Some(u) if u.starts_with(&format!("{base}/")) => Ok(u.to_string()),
        Some(_) => Err(ApiError::field(
            "return_url",
            format!("must be an address of this portal ({base}/…)"),
        )),
    }
}

#[utoipa::path(post, path = "/api/v1/companies/{company_id}/billing/portal", tag = "billing",
    request_body = PortalRequest,
    params(("company_id" = i64, Path, description = "Portal company id")),
    responses((status = 200, body = UrlView), (status = 409, body = ErrorBody)))]
pub async fn post_portal(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(raw): Path<String>,
    crate::api::ApiJson(body): crate::api::ApiJson<PortalRequest>,
) -> Result<Json<UrlView>, ApiError> {
    caller.require(Permission::Write)?;
    let company = company_of(&raw)?;
    let back = return_url(
        &state,
        &headers,
        body.return_url.as_deref(),
        &format!("/companies/{}/billing", company.0),
    )?;
    Ok(Json(UrlView {
        url: portal_session(&state, caller.tenant_id, company, &back).await?,
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PortalAccess {
    pub email: String,
    /// Shown once: give it to the user; they sign in at `/client/login`.
    pub password: String,
    pub sign_in: String,
}

#[utoipa::path(post, path = "/api/v1/companies/{company_id}/users/{user_id}/portal-access", tag = "billing",
    params(("company_id" = i64, Path, description = "Portal company id"), ("user_id" = i64, Path, description = "The company's user")),
    responses((status = 200, body = PortalAccess), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn post_portal_access(
    State(state): State<AppState>,
    caller: Caller,
    Path((raw, user)): Path<(String, String)>,
) -> Result<Json<PortalAccess>, ApiError> {
    caller.require(Permission::Manage)?;
    let company = company_of(&raw)?;
    let user = path_id(&user, "user_id", "a user id")?;
    let (email, password) = grant_portal_access(&state, caller.tenant_id, company, user).await?;
    Ok(Json(PortalAccess {
        email,
        password,
        sign_in: "/client/login".into(),
    }))
}

#[utoipa::path(delete, path = "/api/v1/companies/{company_id}/users/{user_id}/portal-access", tag = "billing",
    params(("company_id" = i64, Path, description = "Portal company id"), ("user_id" = i64, Path, description = "The company's user")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_portal_access(
    State(state): State<AppState>,
    caller: Caller,
    Path((raw, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.require(Permission::Manage)?;
    let company = company_of(&raw)?;
    let user = path_id(&user, "user_id", "a user id")?;
    let users = state
        .store
        .list_company_users(caller.tenant_id, company)
        .await?;
    if !users.iter().any(|u| u.id.0 == user) {
        return Err(ApiError::NotFound);
    }
    state
        .store
        .set_client_password(caller.tenant_id, user, None, state.now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PastDueView {
    #[serde(flatten)]
    pub row: PastDueRow,
    pub past_due_text: String,
    pub open_text: String,
}

async fn past_due(state: &AppState, tenant: TenantId) -> Result<Vec<PastDueView>, ApiError> {
    Ok(state
        .store
        .billing_past_due(tenant, state.now())
        .await?
        .into_iter()
        .map(|row| PastDueView {
            past_due_text: format_amount(row.past_due, &row.currency),
            open_text: format_amount(row.open, &row.currency),
            row,
        })
        .collect())
}

#[utoipa::path(get, path = "/api/v1/billing/past-due", tag = "billing",
    responses((status = 200, body = Vec<PastDueView>)))]
pub async fn get_past_due(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<PastDueView>>, ApiError> {
    caller.require(Permission::Read)?;
    Ok(Json(past_due(&state, caller.tenant_id).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InvoiceParams {
    pub company_id: Option<i64>,
    /// `all` (default), `open`, `past_due`, `paid`.
    pub status: Option<String>,
    pub offset: Option<i64>,
    pub limit: Option<i64>,
}

fn invoice_filter(s: Option<&str>) -> Result<InvoiceFilter, ApiError> {
    match s.unwrap_or("all") {
        "all" => Ok(InvoiceFilter::All),
        "open" => Ok(InvoiceFilter::Open),
        "past_due" => Ok(InvoiceFilter::PastDue),
        "paid" => Ok(InvoiceFilter::Paid),
        other => Err(ApiError::field(
            "status",
            format!("must be all, open, past_due or paid, not '{other}'"),
        )),
    }
}

#[utoipa::path(get, path = "/api/v1/billing/invoices", tag = "billing", params(InvoiceParams),
    responses((status = 200, body = Vec<InvoiceView>), (status = 422, body = ErrorBody)))]
pub async fn get_invoices(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<InvoiceParams>,
) -> Result<Response, ApiError> {
    caller.require(Permission::Read)?;
    let filter = invoice_filter(q.status.as_deref())?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::field("limit", "must be from 1 to 500"));
    }
    let offset = q.offset.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::field("offset", "must be 0 or more"));
    }
    let now = state.now();
    let page = state
        .store
        .billing_invoices(
            caller.tenant_id,
            q.company_id.map(CompanyId),
            filter,
            now,
            offset,
            limit,
        )
        .await?;
    let rows: Vec<InvoiceView> = page
        .rows
        .into_iter()
        .map(|r| invoice_view(r, now))
        .collect();
    let mut resp = Json(rows).into_response();
    if let Ok(v) = HeaderValue::from_str(&page.total.to_string()) {
        resp.headers_mut().insert("x-total-count", v);
    }
    Ok(resp)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookView {
    pub integration_id: Option<i64>,
    /// The address to give Stripe (this deployment's public URL), if it has one.
    pub url: Option<String>,
    pub events: Vec<&'static str>,
    pub api_version: &'static str,
    pub status: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/billing/webhook", tag = "billing",
    responses((status = 200, body = WebhookView)))]
pub async fn get_webhook(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<WebhookView>, ApiError> {
    caller.require(Permission::Read)?;
    Ok(Json(webhook_view(&state, caller.tenant_id).await?))
}

async fn webhook_view(state: &AppState, tenant: TenantId) -> Result<WebhookView, ApiError> {
    let i = stripe_integration(state, tenant).await?;
    let status = match &i {
        Some(i) => {
            state
                .store
                .billing_account(tenant, i.id)
                .await?
                .webhook_status
        }
        None => None,
    };
    Ok(WebhookView {
        integration_id: i.as_ref().map(|i| i.id.0),
        url: i.as_ref().and_then(|i| webhook_url(state, i.id)),
        events: webhooks::EVENTS.to_vec(),
        api_version: mspbridge_providers::stripe::STRIPE_VERSION,
        status,
    })
}

#[utoipa::path(get, path = "/api/v1/client/billing", tag = "billing",
    responses((status = 200, body = CompanyBilling), (status = 401, body = ErrorBody)))]
pub async fn client_get_billing(
    State(state): State<AppState>,
    c: ClientCaller,
) -> Result<Json<CompanyBilling>, ApiError> {
    Ok(Json(
        company_billing(&state, c.tenant_id, c.company_id).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/client/invoices/{invoice_id}", tag = "billing",
    params(("invoice_id" = i64, Path, description = "Invoice id (the portal's)")),
    responses((status = 200, body = InvoiceView), (status = 404, body = ErrorBody)))]
pub async fn client_get_invoice(
    State(state): State<AppState>,
    c: ClientCaller,
    Path(raw): Path<String>,
) -> Result<Json<InvoiceView>, ApiError> {
    let id = path_id(&raw, "invoice_id", "an invoice id")?;
    let row = state
        .store
        .billing_invoice(c.tenant_id, id)
        .await?
        .filter(|r| r.company_id == Some(c.company_id.0) && r.status != "draft")
        .ok_or(ApiError::NotFound)?;
    Ok(Json(invoice_view(row, state.now())))
}

#[utoipa::path(post, path = "/api/v1/client/billing/portal", tag = "billing",
    request_body = PortalRequest,
    responses((status = 200, body = UrlView), (status = 409, body = ErrorBody)))]
pub async fn client_post_portal(
    State(state): State<AppState>,
    c: ClientCaller,
    headers: HeaderMap,
    crate::api::ApiJson(body): crate::api::ApiJson<PortalRequest>,
) -> Result<Json<UrlView>, ApiError> {
    let csrf = headers
        .get(crate::auth::CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    c.check_csrf(csrf)?;
    let back = return_url(&state, &headers, body.return_url.as_deref(), "/client")?;
    Ok(Json(UrlView {
        url: portal_session(&state, c.tenant_id, c.company_id, &back).await?,
    }))
}

// ---------------------------------------------------------------------------------------
// Pages

#[derive(Template)]
#[template(path = "billing_company.html")]
struct CompanyPage {
    shell: Shell,
    state: AppState,
    b: CompanyBilling,
    users: Vec<(i64, String, String)>,
    notice: Option<String>,
    error: Option<String>,
    password: Option<(String, String)>,
    can_manage: bool,
}

#[derive(Debug, Deserialize, Default)]
struct CompanyQuery {
    #[serde(default)]
    notice: Option<String>,
}

async fn company_view(
    state: &AppState,
    c: &Caller,
    company: CompanyId,
    notice: Option<String>,
    error: Option<String>,
    password: Option<(String, String)>,
) -> Result<CompanyPage, ApiError> {
    let b = company_billing(state, c.tenant_id, company).await?;
    let users = state
        .store
        .list_company_users(c.tenant_id, company)
        .await?
        .into_iter()
        .filter(|u| u.email.is_some())
        .map(|u| {
            (
                u.id.0,
                format!("{} {}", u.first_name, u.last_name)
                    .trim()
                    .to_string(),
                u.email.unwrap_or_default(),
            )
        })
        .collect();
    Ok(CompanyPage {
        shell: shell(state, c).await?,
        state: state.clone(),
        b,
        users,
        notice,
        error,
        password,
        can_manage: c.role.allows(Permission::Manage),
    })
}

async fn company_page(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Path(raw): Path<String>,
    Query(q): Query<CompanyQuery>,
) -> Response {
    let done = async {
        let company = company_of(&raw)?;
        company_view(&state, &c, company, q.notice, None, None).await
    };
    match done.await {
        Ok(p) => render(p, StatusCode::OK),
        Err(e) => error_page(e),
    }
}

#[derive(Debug, Deserialize)]
struct CompanyForm {
    #[serde(default)]
    csrf: String,
    action: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    user_id: String,
}

async fn company_form(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    headers: HeaderMap,
    Path(raw): Path<String>,
    Form(f): Form<CompanyForm>,
) -> Response {
    let company = match company_of(&raw) {
        Ok(c) => c,
        Err(e) => return error_page(e),
    };
    if let Err(e) = c.check_csrf(Some(&f.csrf)) {
        return error_page(e);
    }
    let back = format!("/companies/{}/billing", company.0);
    let result: Result<Response, ApiError> = async {
        match f.action.as_str() {
            "create_customer" => {
                c.require(Permission::Manage)?;
                let email = Some(f.email.trim()).filter(|e| !e.is_empty());
                let actor = crate::mapping_api::actor(&c);
                let made = create_customer(&state, c.tenant_id, company, email, &actor).await?;
                Ok(Redirect::to(&format!(
                    "{back}?notice={}",
                    crate::devices::enc(&format!(
                        "Stripe customer {} created and linked",
                        made.external_id
                    ))
                ))
                .into_response())
            }
            "portal" => {
                c.require(Permission::Write)?;
                let ret = return_url(&state, &headers, None, &back)?;
                let url = portal_session(&state, c.tenant_id, company, &ret).await?;
                Ok(Redirect::to(&url).into_response())
            }
            "portal_access" => {
                c.require(Permission::Manage)?;
                let user = path_id(&f.user_id, "user_id", "a user id")?;
                let (email, password) =
                    grant_portal_access(&state, c.tenant_id, company, user).await?;
                Ok(render(
                    company_view(&state, &c, company, None, None, Some((email, password))).await?,
                    StatusCode::OK,
                ))
            }
            other => Err(ApiError::field(
                "action",
                format!("'{other}' is not an action here"),
            )),
        }
    }
    .await;
    match result {
        Ok(r) => r,
        Err(
            e @ (ApiError::Validation(_)
            | ApiError::Conflict(_)
            | ApiError::Vendor { .. }
            | ApiError::Rejected { .. }),
        ) => match company_view(&state, &c, company, None, Some(e.to_string()), None).await {
            Ok(p) => render(p, StatusCode::UNPROCESSABLE_ENTITY),
            Err(e) => error_page(e),
        },
        Err(e) => error_page(e),
    }
}

#[derive(Template)]
#[template(path = "billing_overview.html")]
struct OverviewPage {
    shell: Shell,
    rows: Vec<PastDueView>,
    pager: crate::devices::Pager,
    search: String,
    webhook: WebhookView,
    connected: bool,
}

#[derive(Debug, Deserialize, Default)]
struct OverviewQuery {
    #[serde(default)]
    q: String,
    page: Option<i64>,
}

async fn overview_page(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Query(q): Query<OverviewQuery>,
) -> Response {
    let done = async {
        let needle = q.q.trim().to_lowercase();
        let rows: Vec<PastDueView> = past_due(&state, c.tenant_id)
            .await?
            .into_iter()
            .filter(|r| needle.is_empty() || r.row.company_name.to_lowercase().contains(&needle))
            .collect();
        let pager = crate::devices::pager(
            rows.len() as i64,
            q.page,
            format!("q={}", crate::devices::enc(&q.q)),
        );
        let webhook = webhook_view(&state, c.tenant_id).await?;
        Ok::<_, ApiError>(OverviewPage {
            shell: shell(&state, &c).await?,
            connected: webhook.integration_id.is_some(),
            rows: pager.slice(rows),
            pager,
            search: q.q.clone(),
            webhook,
        })
    };
    match done.await {
        Ok(p) => render(p, StatusCode::OK),
        Err(e) => error_page(e),
    }
}

#[derive(Template)]
#[template(path = "client_billing.html")]
struct ClientPage {
    state: AppState,
    c: ClientCaller,
    b: CompanyBilling,
    error: Option<String>,
}

async fn client_page(State(state): State<AppState>, c: Option<ClientCaller>) -> Response {
    let Some(c) = c else {
        return Redirect::to("/client/login").into_response();
    };
    match company_billing(&state, c.tenant_id, c.company_id).await {
        Ok(b) => render(
            ClientPage {
                state: state.clone(),
                c,
                b,
                error: None,
            },
            StatusCode::OK,
        ),
        Err(e) => error_page(e),
    }
}

async fn client_pay(
    State(state): State<AppState>,
    c: Option<ClientCaller>,
    Path(raw): Path<String>,
) -> Response {
    let Some(c) = c else {
        return Redirect::to("/client/login").into_response();
    };
    let id = match path_id(&raw, "invoice_id", "an invoice id") {
        Ok(i) => i,
        Err(e) => return error_page(e),
    };
    match pay_url(&state, c.tenant_id, Some(c.company_id), id).await {
        Ok(url) => Redirect::to(&url).into_response(),
        Err(e) => error_page(e),
    }
}

async fn staff_pay(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Path(raw): Path<String>,
) -> Response {
    let done = async {
        c.require(Permission::Read)?;
        let id = path_id(&raw, "invoice_id", "an invoice id")?;
        pay_url(&state, c.tenant_id, None, id).await
    };
    match done.await {
        Ok(url) => Redirect::to(&url).into_response(),
        Err(e) => error_page(e),
    }
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn client_portal_form(
    State(state): State<AppState>,
    c: Option<ClientCaller>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    let Some(c) = c else {
        return Redirect::to("/client/login").into_response();
    };
    if let Err(e) = c.check_csrf(&f.csrf) {
        return error_page(e);
    }
    let result = async {
        let back = return_url(&state, &headers, None, "/client")?;
        portal_session(&state, c.tenant_id, c.company_id, &back).await
    }
    .await;
    match result {
        Ok(url) => Redirect::to(&url).into_response(),
        Err(e) => match company_billing(&state, c.tenant_id, c.company_id).await {
            Ok(b) => render(
                ClientPage {
                    state: state.clone(),
                    c,
                    b,
                    error: Some(e.to_string()),
                },
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            Err(e) => error_page(e),
        },
    }
}

#[derive(Template)]
#[template(path = "client_login.html")]
struct ClientLoginPage {
    csrf: String,
    email: String,
    error: Option<String>,
}

fn client_login_form(
    state: &AppState,
    email: String,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    crate::ui::sign_in_form(
        state,
        CLIENT_LOGIN_CSRF,
        "/client/login",
        |csrf| ClientLoginPage { csrf, email, error },
        status,
    )
}

async fn client_login_page(State(state): State<AppState>) -> Response {
    client_login_form(&state, String::new(), None, StatusCode::OK)
}

#[derive(Deserialize)]
struct ClientLoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

async fn client_login(
    State(state): State<AppState>,
    crate::ui::ClientAddr(addr): crate::ui::ClientAddr,
    headers: HeaderMap,
    axum::Form(form): axum::Form<ClientLoginForm>,
) -> Response {
    let csrf_ok = cookie_value(&headers, CLIENT_LOGIN_CSRF).is_some_and(|c| {
        !form.csrf.is_empty()
            && mspbridge_vault::constant_time_eq(c.as_bytes(), form.csrf.as_bytes())
    });
    if !csrf_ok {
        return client_login_form(
            &state,
            form.email,
            Some(ApiError::Csrf.to_string()),
            StatusCode::FORBIDDEN,
        );
    }
    let email = form.email.trim().to_lowercase();
    if !email.contains('@') {
        return client_login_form(
            &state,
            form.email,
            Some("Email: must be an e-mail address".into()),
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    }
    let key = format!("client:{email}");
    if let Err(wait) = state.limiter.check(&key, &addr) {
        return client_login_form(
            &state,
            email,
            Some(format!(
                "Too many failed sign-ins. Try again in {} minutes.",
                wait.div_ceil(60)
            )),
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let candidates = match state.store.client_logins(&email).await {
        Ok(c) => c,
        Err(e) => return error_page(e.into()),
    };
    let password = form.password;
    let found = tokio::task::spawn_blocking(move || {
        if candidates.is_empty() {
            // The same work as a real check, so timing does not say which e-mails exist.
            let _ = mspbridge_vault::hash_password(&password);
            return None;
        }
        candidates
            .into_iter()
            .find(|c| mspbridge_vault::verify_password(&password, &c.password_hash))
    })
    .await
    .ok()
    .flatten();
    let Some(user) = found else {
        state.limiter.failed(&key, &addr);
        return client_login_form(
            &state,
            email,
            Some("Email or password is incorrect.".into()),
            StatusCode::UNAUTHORIZED,
        );
    };
    state.limiter.succeeded(&key);
    let (Ok((sid, sid_hash)), Ok((csrf, _))) = (
        mspbridge_vault::new_token("cs"),
        mspbridge_vault::new_token("cc"),
    ) else {
        return error_page(ApiError::Internal("random generator failed".into()));
    };
    let now = state.now();
    if let Err(e) = state
        .store
        .create_client_session(
            &sid_hash,
            user.tenant_id,
            user.user_id,
            &csrf,
            now,
            now + chrono::Duration::hours(CLIENT_SESSION_HOURS),
        )
        .await
    {
        return error_page(e.into());
    }
    tracing::info!(
        tenant_id = user.tenant_id,
        user_id = user.user_id,
        "client user signed in"
    );
    let mut resp = Redirect::to("/client").into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        crate::ui::cookie(
            &state,
            CLIENT_COOKIE,
            &sid,
            CLIENT_SESSION_HOURS * 3600,
            "/",
            "Lax",
        ),
    );
    resp
}

async fn client_logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    c: Option<ClientCaller>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Some(c) = &c
        && c.check_csrf(&f.csrf).is_ok()
        && let Some(sid) = cookie_value(&headers, CLIENT_COOKIE)
    {
        let _ = state
            .store
            .delete_client_session(&mspbridge_vault::hash_token(sid))
            .await;
    }
    let mut resp = Redirect::to("/client/login").into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        crate::ui::cookie(&state, CLIENT_COOKIE, "", 0, "/", "Lax"),
    );
    resp
}

/// Dates as the pages show them.
pub fn day(t: &Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "—".into())
}

pub fn status_class(s: &str) -> &'static str {
    match s {
        "paid" | "succeeded" | "active" | "trialing" => "ok",
        "open" | "processing" | "requires_action" => "warn",
        "past_due" | "unpaid" | "uncollectible" | "requires_payment_method" | "canceled" => "bad",
        _ => "",
    }
}

pub fn amount(a: &i64, currency: &str) -> String {
    format_amount(*a, currency)
}
