//! Vendor callbacks: `POST /webhooks/connectwise/{integration_id}`,
//! `POST /webhooks/halo/{integration_id}`, `POST /webhooks/autotask/{integration_id}` and
//! `POST /webhooks/syncro/{integration_id}/{token}`.
//!
//! A callback is a hint. It is verified (ConnectWise: the company it names, its `key_url`
//! on the integration's own site, the signature with the key read there; Halo: the Basic
//! credentials mspbridge registered for this integration of this tenant; Autotask: the
//! `X-Hook-Signature` HMAC-SHA1 of the raw body with the secret key registered for this
//! integration of this tenant; Syncro: the
//! secret token in the URL the admin pasted into Syncro), recorded once (a signature or
//! delivery seen within [`REPLAY_WINDOW`] is a replay and refused; Halo's and Syncro's
//! unsigned deliveries are known by ticket, event and delivery id or update stamp, not by
//! their bytes, see [`delivery_key`]), and the record it names is
//! read again from the PSA before anything changes in the portal. An echo of mspbridge's
//! own write changes nothing. Refusals answer 401 and are logged with the integration.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use mspbridge_domain::IntegrationId;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::integration::IntegrationStatus;
use mspbridge_providers::connectwise::callbacks;
use mspbridge_providers::{autotask, halo, syncro};
use serde_json::json;

use crate::AppState;

fn refuse(integration: i64, why: &str) -> Response {
    tracing::warn!(
        integration_id = integration,
        reason = why,
        "webhook refused"
    );
    unauthorized(why)
}

/// The path segment of `kind`'s webhook (`/webhooks/{route}/{id}`), for the PSAs whose
/// webhooks mspbridge receives.
pub fn route(kind: ProviderKind) -> Option<&'static str> {
    match kind {
        ProviderKind::ConnectwiseManage => Some("connectwise"),
        ProviderKind::HaloPsa => Some("halo"),
        ProviderKind::Syncro => Some("syncro"),
        ProviderKind::Autotask => Some("autotask"),
        _ => None,
    }
}

/// The address `kind`'s webhook for this integration is received at, when this deployment
/// has a public URL. Syncro's carries the integration's secret token (Syncro signs nothing
/// and has no registration API: the admin pastes this URL into Syncro).
pub fn url(state: &AppState, kind: ProviderKind, tenant: i64, integration: i64) -> Option<String> {
    let base = state.public_url.as_ref()?;
    let route = route(kind)?;
    Some(match kind {
        ProviderKind::Syncro => format!(
            "{base}/webhooks/{route}/{integration}/{}",
            state.vault.webhook_secret(tenant, integration)
        ),
        _ => format!("{base}/webhooks/{route}/{integration}"),
    })
}

/// A request path as it may be logged: a Syncro webhook's secret token is masked.
pub fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    match path.strip_prefix("/webhooks/syncro/") {
        Some(rest) if rest.contains('/') => {
            let id = rest.split('/').next().unwrap_or_default();
            format!("/webhooks/syncro/{id}/***").into()
        }
        _ => path.into(),
    }
}

#[tracing::instrument(skip_all, fields(integration_id = ?raw))]
pub async fn connectwise(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    receive(
        state,
        ProviderKind::ConnectwiseManage,
        &raw,
        None,
        headers,
        body,
    )
    .await
}

#[tracing::instrument(skip_all, fields(integration_id = ?raw))]
pub async fn halo(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    receive(state, ProviderKind::HaloPsa, &raw, None, headers, body).await
}

#[tracing::instrument(skip_all, fields(integration_id = ?raw))]
pub async fn autotask(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    receive(state, ProviderKind::Autotask, &raw, None, headers, body).await
}

/// How often an integration's deactivation notice is logged at most.
const DEACTIVATION_LOG_EVERY: chrono::Duration = chrono::Duration::minutes(1);

/// When each integration's deactivation notice was last logged (a signed notice can be
/// replayed: the log must not be flooded).
#[derive(Default)]
pub struct LoggedOnce(
    std::sync::Mutex<std::collections::HashMap<i64, chrono::DateTime<chrono::Utc>>>,
);

impl LoggedOnce {
    /// `Ok` when `key` was not let through within `every` before `now` (and records it),
    /// else the seconds until it may be.
    fn allow(
        &self,
        key: i64,
        now: chrono::DateTime<chrono::Utc>,
        every: chrono::Duration,
    ) -> Result<(), u64> {
        let mut last = match self.0.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        match last.get(&key) {
            Some(at) if now < *at + every => {
                Err((*at + every - now).num_seconds().max(1).unsigned_abs())
            }
            _ => {
                last.insert(key, now);
                Ok(())
            }
        }
    }
}

/// An id from a vendor's body as it may be logged: a number, or a short string (its
/// Debug form, so a newline cannot forge a log line).
fn body_id(body: &[u8], names: &[&str]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let (_, found) = v
        .as_object()?
        .iter()
        .find(|(k, _)| names.iter().any(|n| k.eq_ignore_ascii_case(n)))?;
    match found {
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::String(s) => {
            Some(format!("{:?}", s.chars().take(64).collect::<String>()))
        }
        _ => None,
    }
}

/// Autotask calls the deactivation URL when it turns a webhook off (after repeated failed
/// deliveries). The call must carry the integration's `X-Hook-Signature` like every
/// delivery (else 401, not logged); it changes nothing: it is logged for the admin (once
/// a minute per integration at most, 429 in between; only ids, escaped), polling carries
/// on, and saving the integration's options registers the webhook again.
#[tracing::instrument(skip_all, fields(integration_id = ?raw))]
pub async fn autotask_deactivated(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(id) = raw.parse::<i64>().ok().filter(|n| *n > 0) else {
        return not_found();
    };
    let integration = match state.store.integration_owner(IntegrationId(id)).await {
        Ok(Some(tenant)) => state
            .store
            .get_integration(tenant, IntegrationId(id))
            .await
            .ok(),
        _ => None,
    };
    let Some(integration) = integration.filter(|i| {
        i.provider == ProviderKind::Autotask && i.status != IntegrationStatus::Disconnected
    }) else {
        return not_found();
    };
    let secret = state.vault.webhook_secret(integration.tenant_id.0, id);
    let signature = headers
        .get(autotask::webhooks::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    if let Err(e) = autotask::webhooks::verify_signature(signature, &body, &secret) {
        return unauthorized(&e.to_string());
    }
    if let Err(retry_after) = state
        .deactivations
        .allow(id, state.now(), DEACTIVATION_LOG_EVERY)
    {
        return crate::error::ApiError::RateLimited {
            retry_after,
            what: "this webhook's deactivation was reported a moment ago",
        }
        .into_response();
    }
    tracing::warn!(
        integration_id = id,
        // Already escaped (`Debug`): printed as it is.
        webhook = %body_id(&body, &["WebhookID", "Id", "Guid"]).unwrap_or_else(|| "-".into()),
        "Autotask reports the ticket webhook deactivated; changes arrive with the scheduled sync until the integration's options are saved again"
    );
    StatusCode::NO_CONTENT.into_response()
}

fn unauthorized(why: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"code": "unauthorized", "message": why})),
    )
        .into_response()
}

fn not_found() -> Response {
    crate::error::ApiError::NotFound.into_response()
}

/// Syncro: the secret is the URL's last segment.
#[tracing::instrument(skip_all, fields(integration_id = ?raw))]
pub async fn syncro(
    State(state): State<AppState>,
    Path((raw, token)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    receive(
        state,
        ProviderKind::Syncro,
        &raw,
        Some(token),
        headers,
        body,
    )
    .await
}

async fn receive(
    state: AppState,
    kind: ProviderKind,
    raw: &str,
    token: Option<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(id) = raw.parse::<i64>().ok().filter(|n| *n > 0) else {
        return not_found();
    };
    let request = Request {
        headers: &headers,
        token: token.as_deref(),
        body: &body,
    };
    match handle(&state, kind, IntegrationId(id), &request).await {
        Ok(outcome) => {
            count_delivery(kind, id, "accepted");
            Json(json!({ "outcome": outcome })).into_response()
        }
        Err(Refusal::Unauthorized(why)) => {
            // Only integrations that exist get here (an unknown id is 404, not counted),
            // so a scanner cannot grow the series.
            count_delivery(kind, id, "refused");
            refuse(id, &why)
        }
        Err(Refusal::NotFound) => not_found(),
        Err(Refusal::Unavailable(why)) => {
            tracing::error!(integration_id = id, error = %why, "webhook could not be processed");
            crate::error::ApiError::Rejected {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: "the webhook could not be processed now; deliver it again later".into(),
            }
            .into_response()
        }
    }
}

/// `mspbridge_webhook_deliveries_total{provider, integration_id, result}`.
fn count_delivery(kind: ProviderKind, integration: i64, result: &'static str) {
    metrics::counter!("mspbridge_webhook_deliveries_total",
        "provider" => kind.slug(), "integration_id" => integration.to_string(), "result" => result)
    .increment(1);
}

enum Refusal {
    Unauthorized(String),
    NotFound,
    Unavailable(String),
}

/// What arrived: headers, the URL's token (Syncro) and the body.
struct Request<'a> {
    headers: &'a HeaderMap,
    token: Option<&'a str>,
    body: &'a [u8],
}

/// How long a delivery's key is remembered: the same delivery again within it is a
/// replay (401); after it, it is taken as new (deliveries are hints: the ticket is read
/// again from the PSA either way).
pub const REPLAY_WINDOW: chrono::Duration = chrono::Duration::hours(24);

/// A body that verification has already parsed as JSON.
fn json_body(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or(serde_json::Value::Null)
}

/// `v` as canonical JSON: object keys sorted, no whitespace; two payloads that differ
/// only in formatting or key order give the same text.
fn canonical(v: &serde_json::Value) -> String {
    fn write(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(&serde_json::Value::String(k.clone()), out);
                    out.push(':');
                    if let Some(item) = map.get(k) {
                        write(item, out);
                    }
                }
                out.push('}');
            }
            serde_json::Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// The key of a delivery from a PSA that signs nothing (Halo, Syncro): what it is about
/// (the ticket and the event) and which one it is (`stamp`: the PSA's delivery id or the
/// record's update stamp; without one, the whole payload in canonical form). So the same
/// delivery sent again with a byte changed (a trailing space, keys reordered) is a replay,
/// and a new event about the same ticket is not.
fn delivery_key(
    provider: &str,
    ticket: i64,
    event: &str,
    stamp: Option<String>,
    body: &[u8],
) -> String {
    let which = stamp.unwrap_or_else(|| format!("payload {}", canonical(&json_body(body))));
    mspbridge_vault::hash_token(&format!(
        "{provider}|ticket {ticket}|event {}|{which}",
        event.to_lowercase()
    ))
}

/// A verified delivery: what it is about and the key that makes it unique.
struct Verified {
    /// SHA-256 of what identifies this delivery (ConnectWise: its signature; Autotask: its
    /// signed body; Halo and Syncro: [`delivery_key`]).
    key: String,
    kind: String,
    action: String,
    id: i64,
}

async fn verify(
    state: &AppState,
    kind: ProviderKind,
    tenant: mspbridge_domain::TenantId,
    id: IntegrationId,
    creds: &mspbridge_domain::validate::Credentials,
    req: &Request<'_>,
) -> Result<Verified, Refusal> {
    let (headers, body) = (req.headers, req.body);
    match kind {
        ProviderKind::Syncro => {
            let secret = state.vault.webhook_secret(tenant.0, id.0);
            let d = syncro::webhooks::verify(req.token.unwrap_or_default(), body, &secret)
                .map_err(|e| Refusal::Unauthorized(e.to_string()))?;
            // The record the notification is about (the ticket, or a comment) and its
            // update stamp.
            let v = json_body(body);
            let stamp = v
                .pointer("/attributes/updated_at")
                .filter(|u| !u.is_null())
                .map(|u| {
                    let record = v.pointer("/attributes/id").map(canonical);
                    format!(
                        "record {} updated {}",
                        record.unwrap_or_default(),
                        canonical(u)
                    )
                });
            Ok(Verified {
                key: delivery_key("syncro", d.ticket_id, &d.event, stamp, body),
                kind: "ticket".into(),
                action: d.event.to_lowercase(),
                id: d.ticket_id,
            })
        }
        ProviderKind::Autotask => {
            let secret = state.vault.webhook_secret(tenant.0, id.0);
            let signature = headers
                .get(autotask::webhooks::SIGNATURE_HEADER)
                .and_then(|v| v.to_str().ok());
            let d = autotask::webhooks::verify(signature, body, &secret)
                .map_err(|e| Refusal::Unauthorized(e.to_string()))?;
            Ok(Verified {
                // The body carries the webhook's Guid and a sequence number.
                key: mspbridge_vault::hash_token(&String::from_utf8_lossy(body)),
                kind: d.entity.to_lowercase(),
                action: d.action.to_lowercase(),
                id: d.id,
            })
        }
        ProviderKind::HaloPsa => {
            let secret = state.vault.webhook_secret(tenant.0, id.0);
            let auth = headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            let d = halo::webhooks::verify(auth, body, &secret)
                .map_err(|e| Refusal::Unauthorized(e.to_string()))?;
            // Halo's delivery id (a string: a number there may be the ticket's own), else
            // the ticket's update stamp.
            let v = json_body(body);
            let stamp = v
                .get("id")
                .and_then(serde_json::Value::as_str)
                .map(|id| format!("delivery {}", canonical(&json!(id))))
                .or_else(|| {
                    v.pointer("/ticket/last_update")
                        .filter(|u| !u.is_null())
                        .map(|u| format!("updated {}", canonical(u)))
                });
            Ok(Verified {
                key: delivery_key("halo", d.ticket_id, &d.event, stamp, body),
                kind: "ticket".into(),
                action: d.event.to_lowercase(),
                id: d.ticket_id,
            })
        }
        _ => {
            let signature = headers
                .get(callbacks::SIGNATURE_HEADER)
                .and_then(|v| v.to_str().ok());
            let policy = state.providers.config().outbound;
            let cb = callbacks::verify(
                body,
                signature,
                creds.get("site").unwrap_or_default(),
                creds.get("company_id").unwrap_or_default(),
                &policy,
            )
            .await
            .map_err(|e| Refusal::Unauthorized(e.to_string()))?;
            Ok(Verified {
                key: mspbridge_vault::hash_token(signature.unwrap_or_default()),
                kind: cb.kind.to_lowercase(),
                action: cb.action.to_lowercase(),
                id: cb.id,
            })
        }
    }
}

async fn handle(
    state: &AppState,
    kind: ProviderKind,
    id: IntegrationId,
    req: &Request<'_>,
) -> Result<String, Refusal> {
    let unavailable = |e: &dyn std::fmt::Display| Refusal::Unavailable(e.to_string());
    let tenant = state
        .store
        .integration_owner(id)
        .await
        .map_err(|e| unavailable(&e))?
        .ok_or(Refusal::NotFound)?;
    let integration = state
        .store
        .get_integration(tenant, id)
        .await
        .map_err(|e| unavailable(&e))?;
    if integration.provider != kind || integration.status == IntegrationStatus::Disconnected {
        return Err(Refusal::NotFound);
    }
    let creds = crate::integrations::stored_credentials(state, &integration)
        .await
        .map_err(|e| unavailable(&e))?;
    let cb = verify(state, kind, tenant, id, &creds, req).await?;
    let options = state
        .store
        .sync_options(tenant, id)
        .await
        .map_err(|e| unavailable(&e))?;
    let now = state.now();
    let fresh = state
        .store
        .record_webhook(
            tenant,
            id,
            &cb.key,
            &cb.kind,
            &cb.action,
            &cb.id.to_string(),
            now,
            REPLAY_WINDOW,
        )
        .await
        .map_err(|e| unavailable(&e))?;
    if !fresh {
        return Err(Refusal::Unauthorized(
            "this callback was delivered before (replay)".into(),
        ));
    }
    let mut outcome = apply(state, tenant, &integration, &creds, &options, &cb).await;
    // The rest of the change (new tickets, notes, other fields) comes with a Quick Sync
    // (the tickets pass alone) now, instead of at the next interval.
    if cb.kind == "ticket" && options.tickets {
        match state
            .store
            .request_quick_sync(tenant, id, now, chrono::Duration::zero())
            .await
        {
            Ok(mspbridge_store::sync::SyncRequest::Queued) => {
                outcome.push_str("; ticket sync queued")
            }
            Ok(_) => outcome.push_str("; a sync is already running or just ran"),
            Err(e) => tracing::warn!(error = %e, "could not queue the ticket sync"),
        }
    }
    let _ = state.store.webhook_outcome(id, &cb.key, &outcome).await;
    tracing::info!(kind = %cb.kind, record = cb.id, outcome = %outcome, "webhook applied");
    Ok(outcome)
}

/// Re-reads the record and applies it; the outcome, for the log.
async fn apply(
    state: &AppState,
    tenant: mspbridge_domain::TenantId,
    integration: &mspbridge_domain::integration::Integration,
    creds: &mspbridge_domain::validate::Credentials,
    options: &mspbridge_domain::sync::SyncOptions,
    cb: &Verified,
) -> String {
    if cb.kind != "ticket" {
        return format!("ignored: {} callbacks are not used yet", cb.kind);
    }
    let writer = match state
        .providers
        .ticket_writer(
            integration.provider,
            creds,
            mspbridge_providers::http::RetryPolicy::interactive(),
        )
        .await
    {
        Some(Ok(w)) => w,
        Some(Err(e)) => return format!("not applied: {e}"),
        None => return "ignored: no ticket connector".into(),
    };
    let ext = cb.id.to_string();
    match writer.ticket_status(&ext).await {
        Ok(Some((status, psa_closed))) => match state
            .store
            .apply_ticket_status(
                tenant,
                integration.id,
                &ext,
                &status,
                options.ticket_closed(&status, psa_closed),
                state.now(),
            )
            .await
        {
            Ok(None) => "ignored: the ticket is not in the portal".into(),
            Ok(Some((t, true))) => format!("ticket {} now '{status}'", t.0),
            Ok(Some((t, false))) => format!("ticket {} unchanged (echo or no change)", t.0),
            Err(e) => format!("not applied: {e}"),
        },
        Ok(None) => format!(
            "ignored: the ticket no longer exists in {}",
            integration.provider.descriptor().name
        ),
        Err(e) => format!("not applied: {e}"),
    }
}
