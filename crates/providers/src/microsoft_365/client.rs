//! Microsoft Graph client for one multi-tenant app registration: an app-only token per
//! customer tenant (`POST {login}/{tenantId}/oauth2/v2.0/token`, client credentials,
//! scope `https://graph.microsoft.com/.default`; never `common`), cached per tenant for
//! its life and requested again at 75 % of it or once on a 401; Graph GETs whose
//! `@odata.nextLink` / `@odata.deltaLink` are followed verbatim (refused if they leave
//! Graph's host); Secure Score requests limited per tenant to 4 in flight and 150 per
//! rolling minute (Microsoft's limits per app per tenant), shared by every client of the
//! tenant in this process; 429/503/504 wait for `Retry-After`, other transient failures
//! take the [`RetryPolicy`], the token request's too. Token errors keep their AADSTS codes
//! so a tenant's status can say what to fix, and are never retried.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use mspbridge_domain::SecretString;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::wire::{GraphErrorBody, Page, TokenError, TokenResponse};
use crate::http::{
    Retry, RetryPolicy, RollingWindow, describe, message_of, retry_after, retrying, urlencode,
};
use crate::outbound::OutboundPolicy;

pub const LOGIN_BASE: &str = "https://login.microsoftonline.com";
pub const GRAPH_BASE: &str = "https://graph.microsoft.com";

/// Microsoft's limits as this side keeps them, and where the services live.
#[derive(Debug, Clone)]
pub struct GraphSettings {
    /// Secure Score requests in flight per tenant (Microsoft: 4 per app per tenant).
    pub security_concurrency: usize,
    /// Secure Score requests per rolling minute per tenant (Microsoft: 150).
    pub security_per_minute: usize,
    /// Shortest wait after a 429 without `Retry-After`.
    pub backoff_floor: Duration,
    /// The sign-in service (token, admin consent) for labs and sandboxes; `None`:
    /// `https://login.microsoftonline.com`.
    pub login_base: Option<String>,
    /// Graph for labs and sandboxes; `None`: `https://graph.microsoft.com`.
    pub graph_base: Option<String>,
    /// Tenants synced at once in one run.
    pub tenant_concurrency: usize,
}

impl Default for GraphSettings {
    fn default() -> Self {
        Self {
            security_concurrency: 4,
            security_per_minute: 150,
            backoff_floor: Duration::from_secs(1),
            login_base: None,
            graph_base: None,
            tenant_concurrency: 8,
        }
    }
}

/// The app registration and its credential: a client secret, or a certificate (then
/// every token request carries a signed client assertion instead of the secret).
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub client_id: String,
    pub client_secret: SecretString,
    pub certificate: Option<Arc<super::certificate::Certificate>>,
}

impl AppConfig {
    /// What names this credential in the process-wide token cache (never the secret in
    /// clear: its hash).
    fn credential_key(&self) -> String {
        match &self.certificate {
            Some(c) => format!("x5t:{}", c.thumbprint()),
            None => {
                use sha2::Digest as _;
                let h = sha2::Sha256::digest(self.client_secret.expose().as_bytes());
                format!(
                    "secret:{}",
                    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, h)
                )
            }
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum GraphError {
    /// Not sent: a URL the outbound policy refuses, a next link off Graph's host, the
    /// run's request budget used up.
    #[error("{0}")]
    Refused(String),
    #[error("could not reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The token request was refused; `codes` are Entra's AADSTS codes.
    #[error("Microsoft refused a token for tenant {tenant} (HTTP {status}, {error}): {message}")]
    Token {
        tenant: String,
        status: u16,
        error: String,
        codes: Vec<u64>,
        message: String,
    },
    /// 403: consent lacks a permission. Never retried.
    #[error("Microsoft Graph refused {what} (403 {code}): {message}")]
    Forbidden {
        what: String,
        code: String,
        message: String,
    },
    #[error("Microsoft Graph answered HTTP {status} {code}: {message}{}", request_id.as_deref().map(|r| format!(" (request-id {r})")).unwrap_or_default())]
    Status {
        status: u16,
        code: String,
        message: String,
        retry_after: Option<Duration>,
        request_id: Option<String>,
    },
    #[error("Microsoft Graph's answer could not be read: {0}")]
    Decode(String),
}

impl GraphError {
    fn retry(&self) -> Retry {
        match self {
            GraphError::Status {
                status,
                retry_after,
                ..
            } => match status {
                // Graph says 503/504 are throttling too and may carry Retry-After.
                503 | 504 if retry_after.is_some() => Retry::RateLimited(*retry_after),
                s => Retry::of(Some(*s), *retry_after),
            },
            GraphError::Unreachable { .. } | GraphError::Decode(_) => Retry::of(None, None),
            _ => Retry::No,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            GraphError::Status { status, .. } | GraphError::Token { status, .. } => Some(*status),
            GraphError::Forbidden { .. } => Some(403),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    value: String,
    renew_at: Instant,
}

type TokenSlot = tokio::sync::Mutex<Option<Token>>;

fn shared_token(key: String) -> Arc<TokenSlot> {
    static ALL: crate::http::Registry<TokenSlot> = OnceLock::new();
    crate::http::shared_by_key(&ALL, key)
}

/// The Secure Score permits of one tenant, shared by every client in this process.
fn shared_permits(key: String, permits: usize) -> Arc<Semaphore> {
    static ALL: OnceLock<Mutex<HashMap<String, Arc<Semaphore>>>> = OnceLock::new();
    let map = ALL.get_or_init(Default::default);
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    map.entry(key)
        .or_insert_with(|| Arc::new(Semaphore::new(permits.max(1))))
        .clone()
}

/// `scheme://host[:port]` the outbound policy allows, and the host.
fn resolve(url: &str, policy: OutboundPolicy) -> Result<(String, String), GraphError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| GraphError::Refused(format!("{url} is not an https:// URL")))?;
    let rest = rest.trim_end_matches('/');
    let host = rest
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if host.is_empty() || rest.contains('/') {
        return Err(GraphError::Refused(format!(
            "{url} must be a scheme and host only"
        )));
    }
    policy
        .check_host(&host)
        .map_err(|e| GraphError::Refused(e.to_string()))?;
    Ok((format!("{}://{rest}", policy.scheme_for(&host)), host))
}

/// A Graph answer: the JSON and whether it was partial (206: a provider behind Graph
/// timed out; the `Warning` header says which).
#[derive(Debug)]
pub struct Answer<T> {
    pub body: T,
    pub partial: Option<String>,
}

pub struct GraphClient {
    http: reqwest::Client,
    login: String,
    graph: String,
    graph_host: String,
    app: AppConfig,
    settings: GraphSettings,
    retry: RetryPolicy,
    requests: AtomicU64,
    token_requests: AtomicU64,
    bytes: AtomicU64,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphClient")
            .field("graph", &self.graph)
            .finish_non_exhaustive()
    }
}

/// A tenant segment Entra accepts for app-only tokens: a GUID or a domain name; never
/// `common`, `organizations` or `consumers`.
pub fn valid_tenant(tenant: &str) -> bool {
    let t = tenant.to_ascii_lowercase();
    !t.is_empty()
        && !["common", "organizations", "consumers"].contains(&t.as_str())
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

impl GraphClient {
    pub fn new(
        app: AppConfig,
        settings: &GraphSettings,
        policy: OutboundPolicy,
        retry: RetryPolicy,
    ) -> Result<Self, GraphError> {
        let (login, _) = resolve(settings.login_base.as_deref().unwrap_or(LOGIN_BASE), policy)?;
        let (graph, graph_host) =
            resolve(settings.graph_base.as_deref().unwrap_or(GRAPH_BASE), policy)?;
        Ok(Self {
            http: policy.client(retry.timeout),
            login,
            graph,
            graph_host,
            app,
            settings: settings.clone(),
            retry,
            requests: AtomicU64::new(0),
            token_requests: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        })
    }

    pub fn login_base(&self) -> &str {
        &self.login
    }

    /// Requests made so far, token requests included.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn token_requests(&self) -> u64 {
        self.token_requests.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The admin-consent address a tenant's administrator approves the app at
    /// (`organizations` when the tenant is not known yet).
    pub fn admin_consent_url(
        &self,
        tenant: Option<&str>,
        redirect_uri: &str,
        state: &str,
    ) -> String {
        format!(
            "{}/{}/v2.0/adminconsent?client_id={}&scope={}&redirect_uri={}&state={}",
            self.login,
            urlencode(
                tenant
                    .filter(|t| valid_tenant(t))
                    .unwrap_or("organizations")
            ),
            urlencode(&self.app.client_id),
            urlencode("https://graph.microsoft.com/.default"),
            urlencode(redirect_uri),
            urlencode(state)
        )
    }

    fn count(&self) -> Result<(), GraphError> {
        let made = self.requests.fetch_add(1, Ordering::Relaxed);
        if made >= self.retry.budget {
            return Err(GraphError::Refused(format!(
                "the request budget of {} Microsoft 365 requests for this run is used up",
                self.retry.budget
            )));
        }
        metrics::counter!("mspbridge_vendor_requests_total", "provider" => "microsoft_365")
            .increment(1);
        Ok(())
    }

    async fn grant_once(&self, tenant: &str) -> Result<Token, GraphError> {
        self.count()?;
        self.token_requests.fetch_add(1, Ordering::Relaxed);
        let url = format!("{}/{}/oauth2/v2.0/token", self.login, urlencode(tenant));
        let credential = match &self.app.certificate {
            Some(cert) => format!(
                "client_assertion_type={}&client_assertion={}",
                urlencode("urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                urlencode(
                    &cert
                        .assertion(&self.app.client_id, &url)
                        .map_err(GraphError::Refused)?
                )
            ),
            None => format!(
                "client_secret={}",
                urlencode(self.app.client_secret.expose())
            ),
        };
        let body = format!(
            "grant_type=client_credentials&client_id={}&{credential}&scope={}",
            urlencode(&self.app.client_id),
            urlencode("https://graph.microsoft.com/.default")
        );
        let resp = self
            .http
            .post(&url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| GraphError::Unreachable {
                url: url.clone(),
                reason: describe(&e),
            })?;
        let status = resp.status();
        let after = retry_after(resp.headers());
        let text = resp
            .text()
            .await
            .map_err(|e| GraphError::Decode(describe(&e)))?;
        self.bytes.fetch_add(text.len() as u64, Ordering::Relaxed);
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(GraphError::Status {
                status: status.as_u16(),
                code: "token".into(),
                message: message_of(&text),
                retry_after: after,
                request_id: None,
            });
        }
        if !status.is_success() {
            let e: TokenError = serde_json::from_str(&text).unwrap_or_default();
            return Err(GraphError::Token {
                tenant: tenant.to_string(),
                status: status.as_u16(),
                error: e.error.unwrap_or_else(|| "error".into()),
                codes: e.error_codes,
                message: e
                    .error_description
                    .map(|d| d.lines().next().unwrap_or_default().to_string())
                    .unwrap_or_else(|| message_of(&text)),
            });
        }
        let t: TokenResponse = serde_json::from_str(&text)
            .map_err(|e| GraphError::Decode(format!("the token answer: {e}")))?;
        let life = Duration::from_secs(t.expires_in.unwrap_or(3599).max(1));
        Ok(Token {
            value: t.access_token,
            renew_at: Instant::now() + life.mul_f64(0.75),
        })
    }

    /// The tenant's token: cached while young and not the `stale` one a 401 came back
    /// for, else a new grant (one at a time per tenant).
    pub async fn token(&self, tenant: &str, stale: Option<&str>) -> Result<String, GraphError> {
        if !valid_tenant(tenant) {
            return Err(GraphError::Refused(format!(
                "'{tenant}' is not a tenant id or domain (app-only tokens need the customer's tenant, never common)"
            )));
        }
        let slot = shared_token(format!(
            "{}|{}|{}|{}",
            self.login,
            self.app.client_id,
            self.app.credential_key(),
            tenant.to_ascii_lowercase()
        ));
        let mut slot = slot.lock().await;
        if let Some(t) = slot.as_ref()
            && Instant::now() < t.renew_at
            && stale != Some(t.value.as_str())
        {
            return Ok(t.value.clone());
        }
        let t = retrying(
            &self.retry,
            self.settings.backoff_floor,
            None,
            "microsoft_365",
            "token",
            GraphError::retry,
            || self.grant_once(tenant),
        )
        .await?;
        let value = t.value.clone();
        *slot = Some(t);
        Ok(value)
    }

    fn url_of(&self, path_or_link: &str) -> Result<String, GraphError> {
        if path_or_link.starts_with('/') {
            return Ok(format!("{}{path_or_link}", self.graph));
        }
        // A next or delta link, followed verbatim when it stays on Graph's host.
        let rest = path_or_link
            .strip_prefix("https://")
            .or_else(|| path_or_link.strip_prefix("http://"))
            .ok_or_else(|| GraphError::Refused(format!("{path_or_link} is not a Graph link")))?;
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if !host.eq_ignore_ascii_case(&self.graph_host) {
            return Err(GraphError::Refused(format!(
                "a next link pointed away from Microsoft Graph ({host})"
            )));
        }
        Ok(format!("{}{path}", self.graph))
    }

    async fn get_once(
        &self,
        tenant: &str,
        url: &str,
        what: &str,
    ) -> Result<Answer<axum::body::Bytes>, GraphError> {
        let mut stale: Option<String> = None;
        loop {
            let token = self.token(tenant, stale.as_deref()).await?;
            self.count()?;
            let resp = self
                .http
                .get(url)
                .header(AUTHORIZATION, format!("Bearer {token}"))
                .header(ACCEPT, "application/json")
                // The largest pages Graph serves (delta queries take no `$top`).
                .header("Prefer", "odata.maxpagesize=999")
                .send()
                .await
                .map_err(|e| GraphError::Unreachable {
                    url: url.to_string(),
                    reason: describe(&e),
                })?;
            let status = resp.status();
            let after = retry_after(resp.headers());
            let warning = resp
                .headers()
                .get("warning")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| GraphError::Decode(describe(&e)))?;
            self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            if status == StatusCode::UNAUTHORIZED && stale.is_none() {
                stale = Some(token);
                continue;
            }
            if !status.is_success() {
                let body: GraphErrorBody = serde_json::from_slice(&bytes).unwrap_or_default();
                let detail = body.error.unwrap_or_default();
                let code = detail.code.unwrap_or_default();
                let message = detail
                    .message
                    .unwrap_or_else(|| message_of(&String::from_utf8_lossy(&bytes)));
                if status == StatusCode::FORBIDDEN {
                    return Err(GraphError::Forbidden {
                        what: what.to_string(),
                        code,
                        message,
                    });
                }
                return Err(GraphError::Status {
                    status: status.as_u16(),
                    code,
                    message,
                    retry_after: after,
                    request_id: detail.inner_error.and_then(|i| i.request_id),
                });
            }
            let partial = (status == StatusCode::PARTIAL_CONTENT)
                .then(|| warning.unwrap_or_else(|| "206 Partial Content".to_string()));
            return Ok(Answer {
                body: bytes,
                partial,
            });
        }
    }

    /// One GET of a Graph path (`/v1.0/…`) or a next/delta link, retried as the policy
    /// says; Secure Score paths wait for the tenant's permits first.
    pub async fn get<T: DeserializeOwned>(
        &self,
        tenant: &str,
        path_or_link: &str,
        what: &str,
    ) -> Result<Answer<T>, GraphError> {
        let url = self.url_of(path_or_link)?;
        let security = url.contains("/security/");
        let key = format!(
            "{}|{}|{}",
            self.graph,
            self.app.client_id,
            tenant.to_ascii_lowercase()
        );
        let answer = retrying(
            &self.retry,
            self.settings.backoff_floor,
            None,
            "microsoft_365",
            what,
            GraphError::retry,
            || async {
                if security {
                    let permits = shared_permits(key.clone(), self.settings.security_concurrency);
                    let window = RollingWindow::shared(
                        &format!("m365-security|{key}"),
                        self.settings.security_per_minute.max(1),
                        Duration::from_secs(60),
                    );
                    window.acquire().await;
                    let _permit = permits
                        .acquire_owned()
                        .await
                        .map_err(|_| GraphError::Refused("shutting down".into()))?;
                    self.get_once(tenant, &url, what).await
                } else {
                    self.get_once(tenant, &url, what).await
                }
            },
        )
        .await?;
        let body = serde_json::from_slice(&answer.body)
            .map_err(|e| GraphError::Decode(format!("{what}: {e}")))?;
        Ok(Answer {
            body,
            partial: answer.partial,
        })
    }

    /// A collection followed to its end: the raw values, the delta link when the
    /// collection is a delta query, and whether any page was partial.
    pub async fn collect(
        &self,
        tenant: &str,
        path_or_link: &str,
        what: &str,
    ) -> Result<Collected, GraphError> {
        let mut out = Collected::default();
        let mut next = Some(path_or_link.to_string());
        while let Some(link) = next.take() {
            let a: Answer<Page> = self.get(tenant, &link, what).await?;
            out.partial = out.partial.or(a.partial);
            out.values.extend(a.body.value);
            out.delta_link = a.body.delta_link.or(out.delta_link);
            next = a.body.next_link;
        }
        Ok(out)
    }
}

#[derive(Debug, Default)]
pub struct Collected {
    pub values: Vec<serde_json::Value>,
    pub delta_link: Option<String>,
    pub partial: Option<String>,
}
