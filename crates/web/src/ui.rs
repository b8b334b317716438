//! Server-rendered admin UI (askama templates, plain HTML forms, no build step).
//! Every form post carries the session's CSRF token in a hidden field.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use askama::Template;
use axum::Router;
use axum::extract::{ConnectInfo, Form, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use mspbridge_domain::IntegrationId;
use mspbridge_domain::auth::Permission;
use mspbridge_domain::catalogue::{Availability, CATALOGUE, Direction, ProviderDescriptor};
use mspbridge_domain::integration::{AreaResult, ConnectionOutcome, TestReport};
use mspbridge_domain::validate::parse_email;
use serde::Deserialize;

use crate::AppState;
use crate::auth::{Actor, Caller, LOGIN_CSRF_COOKIE, SESSION_COOKIE, SESSION_HOURS, cookie_value};
use crate::error::ApiError;
use crate::integrations::{self, IntegrationView};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(|| async { Redirect::to("/settings/integrations") }),
        )
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/settings/integrations", get(integrations_page))
        .route(
            "/settings/integrations/connect/{provider}",
            get(connect_page).post(connect),
        )
        .route("/settings/integrations/{id}", get(integration_page))
        .route(
            "/settings/integrations/{id}/{action}",
            post(integration_action),
        )
        .merge(crate::ui_sync::routes())
        .merge(crate::ui_tickets::routes())
        .merge(crate::devices::ui_routes())
        .merge(crate::m365::ui_routes())
        .merge(crate::billing::ui_routes())
        .merge(crate::training::ui_routes())
}

pub(crate) fn render(t: impl Template, status: StatusCode) -> Response {
    match t.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template rendering failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "The page could not be rendered.",
            )
                .into_response()
        }
    }
}

/// An error a page handler answers with: the status and the message of the one
/// `ApiError` mapping (`crate::error`), rendered inside the app shell by [`html_errors`].
#[derive(Clone, Debug)]
pub(crate) struct PageError {
    pub message: String,
}

pub(crate) fn error_page(e: ApiError) -> Response {
    if let ApiError::Internal(detail) = &e {
        tracing::error!(detail = %detail, "internal error");
    }
    let status = e.status();
    let message = e.to_string();
    // A bare fallback for a response that never passes through `html_errors`.
    let body = format!(
        "<!doctype html><meta charset=utf-8><title>Error</title><h1>{}</h1><p>{}</p><p><a href=\"/settings/integrations\">Back to Integrations</a></p>",
        status.canonical_reason().unwrap_or("Error"),
        escape_html(&message)
    );
    let mut resp = (status, Html(body)).into_response();
    resp.extensions_mut().insert(PageError { message });
    resp
}

tokio::task_local! {
    /// The path of the page being rendered, for the sidebar's current item.
    static PAGE_PATH: String;
}

/// Paths that answer machines (JSON, webhooks, probes): their errors stay JSON.
fn machine_path(path: &str) -> bool {
    ["/api/", "/webhooks/", "/healthz", "/metrics"]
        .iter()
        .any(|p| path.starts_with(p) || path == p.trim_end_matches('/'))
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorView {
    shell: Shell,
    status: u16,
    title: &'static str,
    message: String,
    hint: &'static str,
}

/// For browser routes: remembers the page's path (the sidebar marks it) and renders every
/// error answer — a handler's `error_page`, and for clients that accept `text/html` an
/// unknown path or a refused query or form — inside the app shell with a way back. Signed-out visitors get the page without the
/// sidebar. API, webhook and probe paths are left alone (their errors are JSON).
pub async fn html_errors(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path().to_string();
    if machine_path(&path) {
        return next.run(req).await;
    }
    let headers = req.headers().clone();
    let resp = PAGE_PATH.scope(path.clone(), next.run(req)).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let kind = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    // Browsers ask for HTML; other clients of these paths keep the JSON error body.
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    let message = if let Some(p) = resp.extensions().get::<PageError>() {
        p.message.clone()
    } else if kind.starts_with("text/html") || !wants_html {
        // A page that shows its own error (a form with its input kept), or a client
        // that did not ask for HTML.
        return resp;
    } else {
        let (_, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 64 * 1024)
            .await
            .unwrap_or_default();
        serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let message = if status == StatusCode::NOT_FOUND {
        "There is no such page, or it belongs to another account.".to_string()
    } else if status.is_server_error() && status != StatusCode::BAD_GATEWAY {
        "Something went wrong on our side. It has been logged; try again in a moment.".to_string()
    } else {
        message
    };
    let (title, hint) = match status {
        StatusCode::NOT_FOUND => (
            "Page not found",
            "Check the address, or pick a page from the menu.",
        ),
        StatusCode::CONFLICT => (
            "That cannot be done right now",
            "Something else depends on it or changed it meanwhile. Go back, reload and try again.",
        ),
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST => (
            "That input was refused",
            "Go back, correct it and send it again.",
        ),
        StatusCode::FORBIDDEN => (
            "Not allowed",
            "Your role does not allow this; ask an owner or admin.",
        ),
        StatusCode::UNAUTHORIZED => ("Sign in first", "Sign in, then open the page again."),
        StatusCode::BAD_GATEWAY => (
            "The PSA did not answer as expected",
            "Check the integration's status and try again.",
        ),
        s if s.is_server_error() => ("Something went wrong", "Go back and try again."),
        _ => ("That did not work", "Go back and try again."),
    };
    let mut parts = axum::http::Request::new(()).into_parts().0;
    parts.headers = headers;
    let shell = match Caller::from_request_parts(&mut parts, &state).await {
        Ok(c) => PAGE_PATH
            .scope(path, async { shell(&state, &c).await })
            .await
            .ok(),
        Err(_) => None,
    };
    let shell = shell.unwrap_or_else(|| Shell {
        tenant_name: String::new(),
        user_label: String::new(),
        role_label: "",
        csrf: String::new(),
        section: "",
        attention: 0,
        signed_in: false,
    });
    let view = ErrorView {
        shell,
        status: status.as_u16(),
        title,
        message,
        hint,
    };
    let mut out = render(view, status);
    if status == StatusCode::TOO_MANY_REQUESTS {
        out.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    }
    out
}

/// `s` percent-encoded for a query string value.
pub(crate) fn query_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `n` with the noun in the right number: "1 company", "2 companies".
pub(crate) fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

pub(crate) fn escape_html(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '&' => "&amp;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// JSON for an inline `<script>` block: the one way pages embed data. `<`, `>` and `&`
/// (and the JavaScript line separators U+2028/U+2029) are written as `\uXXXX` escapes, so
/// no value can end the block (`</script>`), open a comment (`<!--`) or turn the script
/// data into its "double escaped" state (`<script>`); the JSON parses back unchanged.
/// They can only occur inside JSON strings, where the escapes mean the same characters.
pub(crate) fn script_json<T: serde::Serialize>(v: &T) -> String {
    let json = serde_json::to_string(v).unwrap_or_else(|_| "null".into());
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// The caller of an HTML page; anonymous visitors are sent to the login page.
pub struct UiCaller(pub Caller);

impl FromRequestParts<AppState> for UiCaller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match Caller::from_request_parts(parts, state).await {
            Ok(c) => Ok(UiCaller(c)),
            Err(ApiError::Unauthenticated) => Err(Redirect::to("/login").into_response()),
            Err(e) => Err(error_page(e)),
        }
    }
}

pub struct Shell {
    pub tenant_name: String,
    pub user_label: String,
    pub role_label: &'static str,
    pub csrf: String,
    /// The sidebar item of the page (`companies`, `technicians`, `tickets`, `attention`,
    /// `integrations`), marked `aria-current="page"`.
    pub section: &'static str,
    /// Failed or conflicting writes to PSAs waiting for the admin (the sidebar's badge).
    pub attention: usize,
    pub signed_in: bool,
}

/// The sidebar item a path belongs to.
fn section_of(path: &str) -> &'static str {
    if path.starts_with("/companies") {
        "companies"
    } else if path.starts_with("/technicians") {
        "technicians"
    } else if path.starts_with("/tickets") {
        "tickets"
    } else if path.starts_with("/attention") {
        "attention"
    } else if path.starts_with("/devices") {
        "devices"
    } else if path.starts_with("/alerts") {
        "alerts"
    } else if path.starts_with("/secure-score") {
        "secure-score"
    } else if path.starts_with("/billing") {
        "billing"
    } else if path.starts_with("/training") {
        "training"
    } else if path.starts_with("/settings/integrations") {
        "integrations"
    } else {
        ""
    }
}

/// At most this many failed writes are listed on the Attention page (all are counted).
pub(crate) const ATTENTION_LIMIT: i64 = 500;

pub(crate) async fn shell(state: &AppState, c: &Caller) -> Result<Shell, ApiError> {
    let tenant = state.store.get_tenant(c.tenant_id).await?;
    let user_label = match &c.actor {
        Actor::Staff { name, .. } => name.clone(),
        Actor::Token { name } => name.clone(),
    };
    let path = PAGE_PATH.try_with(String::clone).unwrap_or_default();
    // The sidebar's count: every failed write (one row read, the total counted).
    let attention = state
        .store
        .list_outbox_page(c.tenant_id, Some("failed"), 0, 1)
        .await?
        .1
        .max(0) as usize;
    Ok(Shell {
        tenant_name: tenant.name,
        user_label,
        role_label: c.role.as_str(),
        csrf: c.csrf_token.clone().unwrap_or_default(),
        section: section_of(&path),
        attention,
        signed_in: true,
    })
}

pub(crate) fn cookie(
    state: &AppState,
    name: &str,
    value: &str,
    max_age: i64,
    path: &str,
    same_site: &str,
) -> HeaderValue {
    let secure = if state.cookie_secure { "; Secure" } else { "" };
    let v = format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite={same_site}; Max-Age={max_age}{secure}"
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

// ---------- login ----------

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    email: String,
    error: Option<String>,
}

/// A sign-in form with a fresh CSRF token, also set as the cookie `cookie_name` (path
/// `path`) the form's post must echo.
pub(crate) fn sign_in_form<T: Template>(
    state: &AppState,
    cookie_name: &str,
    path: &str,
    page: impl FnOnce(String) -> T,
    status: StatusCode,
) -> Response {
    let csrf = match mspbridge_vault::new_token("lc") {
        Ok((t, _)) => t,
        Err(e) => return error_page(ApiError::Internal(e.to_string())),
    };
    let mut resp = render(page(csrf.clone()), status);
    resp.headers_mut().append(
        header::SET_COOKIE,
        cookie(state, cookie_name, &csrf, 3600, path, "Strict"),
    );
    resp
}

fn login_form(
    state: &AppState,
    email: String,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    sign_in_form(
        state,
        LOGIN_CSRF_COOKIE,
        "/login",
        |csrf| LoginPage { csrf, email, error },
        status,
    )
}

async fn login_page(State(state): State<AppState>) -> Response {
    login_form(&state, String::new(), None, StatusCode::OK)
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

/// The client's address, when the server was started with connect info.
pub struct ClientAddr(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let addr = parts
            .extensions
            .get::<ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip().to_string())
            .unwrap_or_else(|| "unknown".into());
        Ok(ClientAddr(addr))
    }
}

/// A valid Argon2id hash of a random string, verified when the email is unknown so
/// that response time does not reveal which emails have accounts.
fn dummy_hash() -> &'static str {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| {
        mspbridge_vault::hash_password("mspbridge-timing-equaliser").unwrap_or_default()
    })
}

async fn login(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let cookie_csrf = cookie_value(&headers, LOGIN_CSRF_COOKIE);
    let csrf_ok = cookie_csrf.is_some_and(|c| {
        !form.csrf.is_empty()
            && mspbridge_vault::constant_time_eq(c.as_bytes(), form.csrf.as_bytes())
    });
    if !csrf_ok {
        return login_form(
            &state,
            form.email,
            Some(ApiError::Csrf.to_string()),
            StatusCode::FORBIDDEN,
        );
    }
    let email = match parse_email(&form.email) {
        Ok(e) => e,
        Err(m) => {
            return login_form(
                &state,
                form.email,
                Some(format!("Email: {m}")),
                StatusCode::UNPROCESSABLE_ENTITY,
            );
        }
    };
    if let Err(wait) = state.limiter.check(&email, &addr) {
        let mut resp = login_form(
            &state,
            email,
            Some(format!(
                "Too many failed sign-ins. Try again in {} minutes.",
                wait.div_ceil(60)
            )),
            StatusCode::TOO_MANY_REQUESTS,
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return resp;
    }
    let found = match state.store.staff_login(&email).await {
        Ok(f) => f,
        Err(e) => return error_page(e.into()),
    };
    let password = form.password;
    let hash = found
        .as_ref()
        .map(|(_, h)| h.clone())
        .unwrap_or_else(|| dummy_hash().to_string());
    let verified =
        tokio::task::spawn_blocking(move || mspbridge_vault::verify_password(&password, &hash))
            .await
            .unwrap_or(false);
    let user = match found {
        Some((user, _)) if verified => user,
        _ => {
            state.limiter.failed(&email, &addr);
            tracing::info!(email = %email, "failed sign-in");
            return login_form(
                &state,
                email,
                Some("Email or password is incorrect.".into()),
                StatusCode::UNAUTHORIZED,
            );
        }
    };
    state.limiter.succeeded(&email);
    let (Ok((sid, sid_hash)), Ok((csrf, _))) = (
        mspbridge_vault::new_token("s"),
        mspbridge_vault::new_token("c"),
    ) else {
        return error_page(ApiError::Internal("random generator failed".into()));
    };
    let now = state.now();
    if let Err(e) = state
        .store
        .create_session(
            &sid_hash,
            &user,
            &csrf,
            now,
            now + chrono::Duration::hours(SESSION_HOURS),
        )
        .await
    {
        return error_page(e.into());
    }
    tracing::info!(tenant_id = %user.tenant_id, user = %user.email, "signed in");
    let mut resp = Redirect::to("/settings/integrations").into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        cookie(
            &state,
            SESSION_COOKIE,
            &sid,
            SESSION_HOURS * 3600,
            "/",
            "Lax",
        ),
    );
    resp.headers_mut().append(
        header::SET_COOKIE,
        cookie(&state, LOGIN_CSRF_COOKIE, "", 0, "/login", "Strict"),
    );
    resp
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(e) = c.check_csrf(Some(&form.csrf)) {
        return error_page(e);
    }
    if let Some(sid) = cookie_value(&headers, SESSION_COOKIE) {
        let _ = state
            .store
            .delete_session(&mspbridge_vault::hash_token(sid))
            .await;
    }
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        cookie(&state, SESSION_COOKIE, "", 0, "/", "Lax"),
    );
    resp
}

// ---------- integrations catalogue ----------

struct ConnRow {
    id: IntegrationId,
    name: String,
    status: &'static str,
    status_label: &'static str,
    last_error: Option<String>,
    /// "2026-11-24 09:00 UTC (success)" for the latest sync run, if any.
    last_sync: Option<String>,
    /// An RMM's devices and open alerts ("312 devices (280 imported) · 14 open alerts").
    rmm: Option<String>,
    /// A billing account's mode from its last Test ("Test mode" / "Live mode").
    mode: Option<String>,
}

struct Card {
    slug: &'static str,
    name: &'static str,
    category: &'static str,
    description: &'static str,
    syncs: String,
    available: bool,
    note: &'static str,
    connections: Vec<ConnRow>,
}

#[derive(Template)]
#[template(path = "integrations.html")]
struct IntegrationsPage {
    shell: Shell,
    cards: Vec<Card>,
    can_manage: bool,
    flash: Option<String>,
}

fn syncs(d: &ProviderDescriptor) -> String {
    d.syncs
        .iter()
        .map(|s| {
            let rec = serde_json::to_value(s.record)
                .ok()
                .and_then(|v| v.as_str().map(|x| x.replace('_', " ")))
                .unwrap_or_default();
            match s.direction {
                Direction::Inbound => format!("{rec} (from {})", d.name),
                Direction::Bidirectional => format!("{rec} (both ways)"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Deserialize, Default)]
struct FlashQuery {
    msg: Option<String>,
    tab: Option<String>,
    level: Option<String>,
    record_type: Option<String>,
    setup: Option<String>,
}

fn flash_text(code: Option<&str>) -> Option<String> {
    Some(
        match code? {
            "deleted" => "The integration was deleted.",
            "connected" => "Connected. The connection test passed.",
            "tested" => "Connection tested.",
            "renamed" => "Name saved.",
            "credentials" => "Credentials saved and tested.",
            "disconnected" => "Disconnected. The stored credentials were removed.",
            "sync_queued" => "Sync queued; it starts within seconds.",
            "quick_sync_queued" => "Quick Sync queued: recent ticket changes are read within seconds; the regular schedule is unchanged.",
            "reactivated" => "Automatic sync reactivated; a run is queued.",
            "tickets_cleared" => "Synced tickets cleared; a run re-imports them now.",
            "options" => "Sync options saved.",
            "vocabulary" => "Type and status lists read again.",
            "setup_options" => "Options saved. Sync is still off: enable it below.",
            "sync_enabled" => "Sync enabled: the first import starts within seconds (see Runs).",
            _ => return None,
        }
        .to_string(),
    )
}

async fn integrations_page(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Query(q): Query<FlashQuery>,
) -> Response {
    if let Err(e) = c.require(Permission::Read) {
        return error_page(e);
    }
    let build = async {
        let shell = shell(&state, &c).await?;
        let all = state.store.list_integrations(c.tenant_id).await?;
        let mut last_sync = std::collections::HashMap::new();
        for i in &all {
            if let Some(r) = state
                .store
                .list_runs(c.tenant_id, i.id, 1)
                .await?
                .into_iter()
                .next()
            {
                last_sync.insert(
                    i.id,
                    format!(
                        "{} ({})",
                        r.started_at.format("%Y-%m-%d %H:%M UTC"),
                        r.result.as_str()
                    ),
                );
            }
        }
        let mut rmm = std::collections::HashMap::new();
        for i in all.iter().filter(|i| {
            i.provider.descriptor().category == mspbridge_domain::catalogue::Category::Rmm
        }) {
            let n = state.store.rmm_counts(c.tenant_id, i.id).await?;
            rmm.insert(
                i.id,
                format!(
                    "{} {} ({} imported) · {} open {}",
                    n.devices,
                    if n.devices == 1 { "device" } else { "devices" },
                    n.imported,
                    n.open_alerts,
                    if n.open_alerts == 1 {
                        "alert"
                    } else {
                        "alerts"
                    }
                ),
            );
        }
        let cards = CATALOGUE
            .iter()
            .map(|d| Card {
                slug: d.kind.slug(),
                name: d.name,
                category: d.category.label(),
                description: d.description,
                syncs: syncs(d),
                available: d.is_available(),
                note: match d.availability {
                    Availability::NotYetBuilt(n) => n,
                    Availability::Available => "",
                },
                connections: all
                    .iter()
                    .filter(|i| i.provider == d.kind)
                    .map(|i| ConnRow {
                        id: i.id,
                        name: i.display_name().to_string(),
                        status: i.status.as_str(),
                        status_label: i.status.label(),
                        last_error: i.last_error.clone(),
                        last_sync: last_sync.get(&i.id).cloned(),
                        rmm: rmm.get(&i.id).cloned(),
                        mode: i.last_test.as_ref().and_then(|t| {
                            t.details
                                .iter()
                                .find(|(k, _)| k == "Mode")
                                .map(|(_, v)| format!("{v} mode"))
                        }),
                    })
                    .collect(),
            })
            .collect();
        Ok::<_, ApiError>(IntegrationsPage {
            shell,
            cards,
            can_manage: c.role.allows(Permission::Manage),
            flash: flash_text(q.msg.as_deref()),
        })
    };
    match build.await {
        Ok(page) => render(page, StatusCode::OK),
        Err(e) => error_page(e),
    }
}

// ---------- connect form ----------

pub struct FormField {
    name: &'static str,
    label: &'static str,
    secret: bool,
    required: bool,
    help: &'static str,
    example: &'static str,
    /// The values the product knows for the field (Datto's platforms, Asio's environments):
    /// a list to pick from instead of free text.
    choices: &'static [&'static str],
    /// PEM text: a text area.
    multiline: bool,
    value: String,
    error: Option<String>,
}

fn form_fields(
    d: &ProviderDescriptor,
    values: &BTreeMap<String, String>,
    errors: &BTreeMap<String, String>,
) -> Vec<FormField> {
    d.fields
        .iter()
        .map(|f| FormField {
            name: f.name,
            label: f.label,
            secret: f.secret,
            required: f.required,
            help: f.help,
            example: f.example,
            choices: match f.format {
                mspbridge_domain::catalogue::FieldFormat::Choice(c) => c,
                _ => &[],
            },
            multiline: f.format == mspbridge_domain::catalogue::FieldFormat::Pem,
            // A typed secret is never echoed back into the page.
            value: if f.secret {
                values
                    .get(f.name)
                    .filter(|v| v.as_str() == mspbridge_domain::validate::SECRET_MASK)
                    .cloned()
                    .unwrap_or_default()
            } else {
                values.get(f.name).cloned().unwrap_or_default()
            },
            error: errors.get(&format!("credentials.{}", f.name)).cloned(),
        })
        .collect()
}

pub struct ReportView {
    tested_at: String,
    class: &'static str,
    headline: &'static str,
    message: Option<String>,
    fix_hint: Option<String>,
    details: Vec<(String, String)>,
    areas: Vec<AreaRow>,
}

pub struct AreaRow {
    key: String,
    label: String,
    required: bool,
    result: &'static str,
    class: &'static str,
    detail: String,
}

fn report_view(r: &TestReport) -> ReportView {
    let (class, headline, message, fix_hint) = match &r.connection {
        ConnectionOutcome::Ok => {
            let (status, error, hint) = r.verdict();
            if status == mspbridge_domain::integration::IntegrationStatus::Connected {
                ("ok", "Connected", None, None)
            } else {
                (
                    "error",
                    "Connected, but permissions are missing",
                    error,
                    hint,
                )
            }
        }
        ConnectionOutcome::AuthFailed { message, fix_hint } => (
            "error",
            "Authentication failed",
            Some(message.clone()),
            Some(fix_hint.clone()),
        ),
        ConnectionOutcome::Unreachable { message, fix_hint } => (
            "error",
            "Could not connect",
            Some(message.clone()),
            Some(fix_hint.clone()),
        ),
        ConnectionOutcome::Misconfigured { message, fix_hint } => (
            "error",
            "Check the settings",
            Some(message.clone()),
            Some(fix_hint.clone()),
        ),
    };
    ReportView {
        tested_at: r.tested_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        class,
        headline,
        message,
        fix_hint,
        details: r.details.clone(),
        areas: r
            .areas
            .iter()
            .map(|a| AreaRow {
                key: a.area.clone(),
                label: a.label.clone(),
                required: a.required,
                result: a.outcome.label(),
                class: match a.outcome {
                    AreaResult::Granted | AreaResult::GrantedNoData => "r-granted",
                    AreaResult::NotPermitted { .. } => "r-denied",
                    AreaResult::CouldNotVerify { .. } => "r-unknown",
                },
                detail: match &a.outcome {
                    AreaResult::NotPermitted {
                        setting,
                        vendor_message,
                    } => format!("Grant: {setting}. ConnectWise said: {vendor_message}"),
                    AreaResult::CouldNotVerify { reason } => {
                        format!("{reason}. Nothing was switched off; test again later.")
                    }
                    AreaResult::GrantedNoData => "Readable, but no records exist yet.".into(),
                    AreaResult::Granted => String::new(),
                },
            })
            .collect(),
    }
}

#[derive(Template)]
#[template(path = "connect.html")]
struct ConnectPage {
    shell: Shell,
    provider_slug: &'static str,
    provider_name: &'static str,
    setup_hint: &'static str,
    name_value: String,
    fields: Vec<FormField>,
    error: Option<String>,
    fix_hint: Option<String>,
    report: Option<ReportView>,
}

/// The connect wizard's steps after the credentials (spec 2.3), shown on the integration
/// page with `?setup=`: `test` (the per-area permission report, Test again), `options`
/// (the options form, saved with sync off), `enable` (turn sync on, first import now).
const SETUP: [&str; 3] = ["test", "options", "enable"];

fn setup_of(raw: Option<&str>) -> &'static str {
    SETUP.into_iter().find(|s| Some(*s) == raw).unwrap_or("")
}

/// The stepper's number of a setup step (Credentials is 1).
fn setup_step(setup: &str) -> usize {
    SETUP.iter().position(|s| *s == setup).map_or(0, |i| i + 2)
}

async fn connect_page(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Path(slug): Path<String>,
) -> Response {
    let page = async {
        c.require(Permission::Manage)?;
        let d = integrations::provider(&slug)?;
        if let Availability::NotYetBuilt(note) = d.availability {
            return Err(ApiError::ConnectorNotAvailable {
                provider: d.name,
                note,
            });
        }
        Ok(ConnectPage {
            shell: shell(&state, &c).await?,
            provider_slug: d.kind.slug(),
            provider_name: d.name,
            setup_hint: d.setup_hint,
            name_value: String::new(),
            fields: form_fields(d, &BTreeMap::new(), &BTreeMap::new()),
            error: None,
            fix_hint: None,
            report: None,
        })
    };
    match page.await {
        Ok(p) => render(p, StatusCode::OK),
        Err(e) => error_page(e),
    }
}

/// Splits a posted form into the CSRF token, the name and the `cred_*` fields.
fn parse_form(form: Vec<(String, String)>) -> (String, Option<String>, BTreeMap<String, String>) {
    let mut csrf = String::new();
    let mut name = None;
    let mut creds = BTreeMap::new();
    for (k, v) in form {
        match k.as_str() {
            "csrf" => csrf = v,
            "name" => name = Some(v),
            _ => {
                if let Some(f) = k.strip_prefix("cred_") {
                    creds.insert(f.to_string(), v);
                }
            }
        }
    }
    (csrf, name, creds)
}

fn field_errors(e: &ApiError) -> BTreeMap<String, String> {
    match e {
        ApiError::Validation(v) => v
            .fields()
            .iter()
            .map(|f| (f.field.clone(), f.message.clone()))
            .collect(),
        _ => BTreeMap::new(),
    }
}

fn error_summary(e: &ApiError) -> (String, Option<String>, Option<ReportView>) {
    match e {
        ApiError::Validation(_) => ("Some fields need attention.".to_string(), None, None),
        ApiError::ConnectionFailed {
            message,
            fix_hint,
            report,
        } => {
            // The alert above the form says what failed and how to fix it; the report
            // below keeps its headline and per-area table without saying it again.
            let mut view = report_view(report);
            view.message = None;
            view.fix_hint = None;
            (message.clone(), Some(fix_hint.clone()), Some(view))
        }
        other => (other.to_string(), None, None),
    }
}

async fn connect(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Path(slug): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let (csrf, name, creds) = parse_form(form);
    if let Err(e) = c
        .check_csrf(Some(&csrf))
        .and_then(|_| c.require(Permission::Manage))
    {
        return error_page(e);
    }
    let d = match integrations::provider(&slug) {
        Ok(d) => d,
        Err(e) => return error_page(e),
    };
    match integrations::connect(&state, c.tenant_id, &slug, name.as_deref(), &creds).await {
        Ok(i) => Redirect::to(&format!(
            "/settings/integrations/{}?setup=test&msg=connected",
            i.id
        ))
        .into_response(),
        Err(e @ (ApiError::Validation(_) | ApiError::ConnectionFailed { .. })) => {
            let shell = match shell(&state, &c).await {
                Ok(s) => s,
                Err(e) => return error_page(e),
            };
            let errors = field_errors(&e);
            let (error, fix_hint, report) = error_summary(&e);
            let mut errors = errors;
            if let Some(m) = errors.remove("name") {
                errors.insert("credentials.name".into(), m);
            }
            render(
                ConnectPage {
                    shell,
                    provider_slug: d.kind.slug(),
                    provider_name: d.name,
                    setup_hint: d.setup_hint,
                    name_value: name.unwrap_or_default(),
                    fields: form_fields(d, &creds, &errors),
                    error: Some(error),
                    fix_hint,
                    report,
                },
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
        Err(e) => error_page(e),
    }
}

// ---------- one integration ----------

#[derive(Template)]
#[template(path = "integration.html")]
struct IntegrationPage {
    shell: Shell,
    id: IntegrationId,
    /// Why an RMM's alerts cannot be read with these credentials (the last Test found the
    /// alerts or tickets area not permitted), said beside the Alerts option.
    alerts_note: Option<String>,
    name: String,
    nickname: String,
    provider_name: &'static str,
    status: &'static str,
    status_label: &'static str,
    last_error: Option<String>,
    fix_hint: Option<String>,
    fields: Vec<FormField>,
    report: Option<ReportView>,
    can_manage: bool,
    can_write: bool,
    flash: Option<String>,
    error: Option<String>,
    error_hint: Option<String>,
    sync: crate::ui_sync::SyncView,
    runs: Vec<crate::ui_sync::RunLine>,
    roles: Vec<(mspbridge_domain::RoleId, String)>,
    options_error: Option<String>,
    /// The open tab: `overview`, `options`, `runs` or `log`.
    tab: &'static str,
    /// The Log tab: the latest run's id and its events, and the filter.
    log_run: Option<i64>,
    log: Vec<crate::ui_sync::EventLine>,
    level: String,
    record_type: String,
    /// The connect wizard's step (`test`, `options`, `enable`), or empty.
    setup: &'static str,
    setup_step: usize,
}

/// The integration page's tabs.
const TABS: [&str; 4] = ["overview", "options", "runs", "log"];

fn tab_of(raw: Option<&str>) -> &'static str {
    TABS.into_iter()
        .find(|t| Some(*t) == raw)
        .unwrap_or("overview")
}

async fn detail(
    state: &AppState,
    c: &Caller,
    id: IntegrationId,
    flash: Option<String>,
    failure: Option<(ApiError, BTreeMap<String, String>)>,
    (tab, filter): (&'static str, &crate::sync_api::EventFilter),
    options_input: Option<&[(String, String)]>,
) -> Result<IntegrationPage, ApiError> {
    let i = state.store.get_integration(c.tenant_id, id).await?;
    let view: IntegrationView = integrations::view(state, &i).await?;
    let options_error = match &failure {
        // In words above the form; each message also sits at its field below.
        Some((ApiError::Validation(v), _))
            if v.fields().iter().any(|f| f.field.starts_with("options")) =>
        {
            let messages: Vec<&str> = v.fields().iter().map(|f| f.message.as_str()).collect();
            Some(format!(
                "Not saved: {} (marked at the field below).",
                messages.join("; ")
            ))
        }
        _ => None,
    };
    let (mut sync, runs, roles) = crate::ui_sync::sync_parts(state, c, id).await?;
    if let Some((ApiError::Validation(v), _)) = &failure
        && options_error.is_some()
    {
        if let Some(input) = options_input {
            sync.keep_input(input);
        }
        for f in v.fields() {
            sync.errors
                .entry(crate::ui_sync::form_field(&f.field))
                .or_insert_with(|| f.message.clone());
        }
    }
    let (log_run, log) = if tab == "log" {
        crate::ui_sync::latest_log(state, c, id, filter).await?
    } else {
        (None, vec![])
    };
    // A refused options form opens on its tab, with the admin's input.
    let tab = if options_error.is_some() {
        "options"
    } else {
        tab
    };
    let disconnected = view.status.as_str() == "disconnected";
    let (values, errors, error, error_hint, failed_report) = match &failure {
        Some((e, submitted)) => {
            let (msg, hint, report) = error_summary(e);
            (submitted.clone(), field_errors(e), Some(msg), hint, report)
        }
        None => (view.credentials.clone(), BTreeMap::new(), None, None, None),
    };
    Ok(IntegrationPage {
        shell: shell(state, c).await?,
        id,
        name: view.name.clone(),
        nickname: view.nickname.clone().unwrap_or_default(),
        provider_name: view.provider_name,
        status: view.status.as_str(),
        status_label: view.status_label,
        last_error: view.last_error.clone(),
        fix_hint: view.fix_hint.clone(),
        fields: form_fields(i.provider.descriptor(), &values, &errors),
        alerts_note: view.last_test.as_ref().and_then(|t| {
            t.areas.iter().find_map(|a| match &a.outcome {
                mspbridge_domain::integration::AreaResult::NotPermitted { setting, .. }
                    if a.area == "alerts" || a.area == "tickets" =>
                {
                    Some(format!(
                        "The last Test found these credentials may not read {}: grant it ({setting}), or untick Alerts to sync without them (otherwise every sync ends partial).",
                        a.label.to_lowercase()
                    ))
                }
                _ => None,
            })
        }),
        // After Disconnect the last test (of credentials now removed) is not shown.
        report: failed_report.or_else(|| {
            if disconnected {
                None
            } else {
                view.last_test.as_ref().map(report_view)
            }
        }),
        can_manage: c.role.allows(Permission::Manage),
        can_write: c.role.allows(Permission::Write),
        flash,
        error: if options_error.is_some() { None } else { error },
        error_hint,
        sync,
        runs,
        roles,
        options_error,
        tab,
        log_run,
        log,
        level: filter.level.clone().unwrap_or_default(),
        record_type: filter.record_type.clone().unwrap_or_default(),
        setup: "",
        setup_step: 0,
    })
}

/// The page in the connect wizard's step `setup` (none when empty).
fn in_setup(mut p: IntegrationPage, setup: &'static str) -> IntegrationPage {
    p.setup = setup;
    p.setup_step = setup_step(setup);
    if setup == "options" {
        p.tab = "options";
    }
    p
}

fn parse_id(raw: &str) -> Result<IntegrationId, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .map(IntegrationId)
        .ok_or(ApiError::NotFound)
}

async fn integration_page(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Path(id): Path<String>,
    Query(q): Query<FlashQuery>,
) -> Response {
    let page = async {
        c.require(Permission::Read)?;
        let filter = crate::sync_api::EventFilter {
            level: q.level.clone(),
            record_type: q.record_type.clone(),
            ..Default::default()
        };
        let setup = setup_of(q.setup.as_deref());
        let tab = if setup == "options" {
            "options"
        } else {
            tab_of(q.tab.as_deref())
        };
        detail(
            &state,
            &c,
            parse_id(&id)?,
            flash_text(q.msg.as_deref()),
            None,
            (tab, &filter),
            None,
        )
        .await
        .map(|p| in_setup(p, setup))
    };
    match page.await {
        Ok(p) => render(p, StatusCode::OK),
        Err(e) => error_page(e),
    }
}

async fn integration_action(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let raw_form = form.clone();
    let setup = setup_of(
        raw_form
            .iter()
            .find(|(k, _)| k == "setup")
            .map(|(_, v)| v.as_str()),
    );
    let (csrf, name, creds) = parse_form(form);
    if let Err(e) = c.check_csrf(Some(&csrf)) {
        return error_page(e);
    }
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(e) => return error_page(e),
    };
    let t = c.tenant_id;
    let result = match action.as_str() {
        "test" => match c.require(Permission::Manage) {
            Ok(()) => integrations::test(&state, t, id).await.map(|_| "tested"),
            Err(e) => Err(e),
        },
        "rename" => match c.require(Permission::Write) {
            Ok(()) => integrations::rename(&state, t, id, name.as_deref())
                .await
                .map(|_| "renamed"),
            Err(e) => Err(e),
        },
        "credentials" => match c.require(Permission::Manage) {
            Ok(()) => integrations::update_credentials(&state, t, id, &creds)
                .await
                .map(|_| "credentials"),
            Err(e) => Err(e),
        },
        "disconnect" => match c.require(Permission::Manage) {
            Ok(()) => integrations::disconnect(&state, t, id)
                .await
                .map(|_| "disconnected"),
            Err(e) => Err(e),
        },
        "sync" => match c.require(Permission::Write) {
            Ok(()) => crate::sync_api::request_sync(&state, &c, id)
                .await
                .map(|_| "sync_queued"),
            Err(e) => Err(e),
        },
        "quick-sync" => match c.require(Permission::Write) {
            Ok(()) => crate::sync_api::request_quick_sync(&state, &c, id)
                .await
                .map(|_| "quick_sync_queued"),
            Err(e) => Err(e),
        },
        "vocabulary" => match c.require(Permission::Write) {
            Ok(()) => integrations::refresh_vocabulary(&state, t, id)
                .await
                .map(|_| "vocabulary"),
            Err(e) => Err(e),
        },
        "clear-tickets" => match c.require(Permission::Manage) {
            Ok(()) => crate::sync_api::clear_and_resync(&state, &c, id)
                .await
                .map(|_| "tickets_cleared"),
            Err(e) => Err(e),
        },
        "reactivate" => match c.require(Permission::Manage) {
            Ok(()) => state
                .store
                .reactivate(t, id, state.now())
                .await
                .map(|_| "reactivated")
                .map_err(ApiError::from),
            Err(e) => Err(e),
        },
        "options" => match c.require(Permission::Manage) {
            Ok(()) => crate::ui_sync::save_options(&state, &c, id, &raw_form)
                .await
                .map(|_| "options"),
            Err(e) => Err(e),
        },
        // The wizard's last step: sync on (due at once, so the first import starts).
        "enable" => match c.require(Permission::Manage) {
            Ok(()) => {
                async {
                    let mut o = state.store.sync_options(t, id).await?;
                    o.enabled = true;
                    state.store.set_sync_options(t, id, &o, state.now()).await?;
                    Ok::<_, ApiError>("sync_enabled")
                }
                .await
            }
            Err(e) => Err(e),
        },
        "delete" => {
            return match c.require(Permission::Manage) {
                Ok(()) => match integrations::delete(&state, t, id).await {
                    Ok(()) => Redirect::to("/settings/integrations?msg=deleted").into_response(),
                    Err(e) => error_page(e),
                },
                Err(e) => error_page(e),
            };
        }
        _ => return error_page(ApiError::NotFound),
    };
    match result {
        Ok(msg) if !setup.is_empty() => {
            let next = match msg {
                "options" => "?setup=enable&msg=setup_options".to_string(),
                "sync_enabled" => "?tab=runs&msg=sync_enabled".to_string(),
                other => format!("?setup={setup}&msg={other}"),
            };
            Redirect::to(&format!("/settings/integrations/{id}{next}")).into_response()
        }
        Ok(msg) => {
            let tab = if msg == "options" || msg == "vocabulary" {
                "&tab=options"
            } else {
                ""
            };
            Redirect::to(&format!("/settings/integrations/{id}?msg={msg}{tab}")).into_response()
        }
        Err(
            e @ (ApiError::Validation(_)
            | ApiError::ConnectionFailed { .. }
            | ApiError::Conflict(_)
            | ApiError::Vendor { .. }
            | ApiError::RateLimited { .. }),
        ) => match detail(
            &state,
            &c,
            id,
            None,
            Some((e, creds)),
            (
                if action == "vocabulary" {
                    "options"
                } else {
                    "overview"
                },
                &crate::sync_api::EventFilter::default(),
            ),
            (action == "options").then_some(raw_form.as_slice()),
        )
        .await
        {
            Ok(p) => render(in_setup(p, setup), StatusCode::UNPROCESSABLE_ENTITY),
            Err(e) => error_page(e),
        },
        Err(e) => error_page(e),
    }
}
