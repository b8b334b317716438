//! Halo HTTP client: OAuth2 client credentials against the authorisation server (token
//! cached and renewed a minute before it expires, or at once after a 401), Bearer calls
//! to the resource server, the hosted rate limit (a rolling window per tenant; 429 holds
//! the window for at least 30 s, trap 5), retries for 5xx, timeouts and truncated bodies,
//! and a per-run request budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mspbridge_domain::SecretString;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::wire::TokenResponse;
use crate::http::{
    Retry, RetryPolicy, RollingWindow, describe, message_of, retry_after, retrying, urlencode,
};
use crate::outbound::OutboundPolicy;

/// Halo's hosted limit and how hard to back off when it is hit.
#[derive(Debug, Clone, Copy)]
pub struct HaloLimits {
    /// Requests per rolling window per tenant (hosted Halo: about 300 per 5 minutes).
    pub requests: usize,
    pub window: Duration,
    /// Shortest wait after a 429: short sleeps never clear a rolling window.
    pub backoff_floor: Duration,
}

impl Default for HaloLimits {
    fn default() -> Self {
        Self {
            requests: 300,
            window: Duration::from_secs(300),
            backoff_floor: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
pub struct HaloConfig {
    /// `https://acme.halopsa.com/auth` (token endpoint: `{auth}/token`).
    pub auth_url: String,
    /// `https://acme.halopsa.com/api`.
    pub resource_url: String,
    /// For Halo-hosted authorisation servers shared between tenants.
    pub tenant: Option<String>,
    pub client_id: String,
    pub client_secret: SecretString,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum HaloError {
    #[error("{0}")]
    Refused(String),
    #[error("could not reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the authorisation server refused the client credentials (HTTP {status}: {message})")]
    Token { status: u16, message: String },
    #[error("Halo answered HTTP {status}: {message}")]
    Status {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("Halo's answer could not be read: {0}")]
    Decode(String),
}

impl HaloError {
    pub fn status(&self) -> Option<u16> {
        match self {
            HaloError::Status { status, .. } | HaloError::Token { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Halo's own words (its error bodies are often a plain string).
    pub fn vendor_message(&self) -> String {
        match self {
            HaloError::Status { message, .. } | HaloError::Token { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

/// `https://host[:port]/path` with the scheme the outbound policy allows for the host
/// (plain http only for loopback sandboxes when private hosts are allowed).
fn resolve(url: &str, policy: OutboundPolicy) -> Result<String, HaloError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| HaloError::Refused(format!("{url} is not an https:// URL")))?;
    let host = rest.split('/').next().unwrap_or_default();
    policy
        .check_host(host)
        .map_err(|e| HaloError::Refused(e.to_string()))?;
    Ok(format!(
        "{}://{}",
        policy.scheme_for(host),
        rest.trim_end_matches('/')
    ))
}

pub struct HaloClient {
    http: reqwest::Client,
    token_url: String,
    api_base: String,
    cfg: HaloConfig,
    retry: RetryPolicy,
    limits: HaloLimits,
    window: Arc<RollingWindow>,
    token: Arc<TokenSlot>,
    requests: AtomicU64,
    /// Response body bytes received (benchmarks report them).
    bytes: AtomicU64,
}

type TokenSlot = tokio::sync::Mutex<Option<(String, Instant)>>;

/// The token of one API application, shared by every client of it in this process, so a
/// sync every few minutes does not spend a request of the rate budget on a new token.
fn shared_token(key: String) -> Arc<TokenSlot> {
    static ALL: crate::http::Registry<TokenSlot> = std::sync::OnceLock::new();
    crate::http::shared_by_key(&ALL, key)
}

impl std::fmt::Debug for HaloClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HaloClient")
            .field("api_base", &self.api_base)
            .finish_non_exhaustive()
    }
}

impl HaloClient {
    pub fn new(
        cfg: HaloConfig,
        policy: OutboundPolicy,
        limits: HaloLimits,
        timeout: Duration,
    ) -> Result<Self, HaloError> {
        let auth = resolve(&cfg.auth_url, policy)?;
        let api_base = resolve(&cfg.resource_url, policy)?;
        let token_url = match &cfg.tenant {
            Some(t) if !t.is_empty() => format!("{auth}/token?tenant={}", urlencode(t)),
            _ => format!("{auth}/token"),
        };
        // One budget per Halo tenant: every client of it in this process shares the window.
        let key = format!("halo|{api_base}|{}", cfg.tenant.as_deref().unwrap_or(""));
        // One token per API application and secret (a changed secret gets its own).
        let token = shared_token(format!(
            "{token_url}|{}|{}",
            cfg.client_id,
            cfg.client_secret.expose()
        ));
        Ok(Self {
            http: policy.client(timeout),
            token,
            token_url,
            api_base,
            window: RollingWindow::shared(&key, limits.requests, limits.window),
            limits,
            retry: RetryPolicy::default(),
            cfg,
            requests: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        })
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn api_base(&self) -> &str {
        &self.api_base
    }

    /// Vendor requests made so far (token requests included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Response body bytes received so far (token answers included).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Counts a request against the run's budget and waits for room in the rate window.
    async fn admit(&self) -> Result<(), HaloError> {
        let made = self.requests.fetch_add(1, Ordering::Relaxed);
        if made >= self.retry.budget {
            return Err(HaloError::Refused(format!(
                "the request budget of {} Halo requests for this run is used up",
                self.retry.budget
            )));
        }
        self.window.acquire().await;
        metrics::counter!("mspbridge_vendor_requests_total", "provider" => "halo_psa").increment(1);
        Ok(())
    }

    async fn fetch_token(&self) -> Result<(String, Instant), HaloError> {
        self.admit().await?;
        let body = format!(
            "grant_type=client_credentials&client_id={}&client_secret={}&scope=all",
            urlencode(&self.cfg.client_id),
            urlencode(self.cfg.client_secret.expose())
        );
        let resp = self
            .http
            .post(&self.token_url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| HaloError::Unreachable {
                url: self.token_url.clone(),
                reason: describe(&e),
            })?;
        let status = resp.status();
        let retry_after = retry_after(resp.headers());
        let text = resp
            .text()
            .await
            .map_err(|e| HaloError::Decode(describe(&e)))?;
        self.bytes.fetch_add(text.len() as u64, Ordering::Relaxed);
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(HaloError::Status {
                status: status.as_u16(),
                message: message_of(&text),
                retry_after,
            });
        }
        if !status.is_success() {
            return Err(HaloError::Token {
                status: status.as_u16(),
                message: message_of(&text),
            });
        }
        let t: TokenResponse =
            serde_json::from_str(&text).map_err(|e| HaloError::Decode(e.to_string()))?;
        // Renewed a minute early so no request carries a token that expires in flight.
        let life = Duration::from_secs(t.expires_in.saturating_sub(60).max(1));
        Ok((t.access_token, Instant::now() + life))
    }

    /// The API application's token, fetched when there is none or `renew`. With
    /// `retried`, a transient failure of the token request is retried here (for writes,
    /// which are not retried as a whole); reads retry the whole request instead.
    async fn token(&self, renew: bool, retried: bool) -> Result<String, HaloError> {
        let mut cached = self.token.lock().await;
        match cached.as_ref() {
            Some((t, until)) if !renew && Instant::now() < *until => Ok(t.clone()),
            _ => {
                let (t, until) = if retried {
                    self.with_retries("token", || self.fetch_token()).await?
                } else {
                    self.fetch_token().await?
                };
                *cached = Some((t.clone(), until));
                Ok(t)
            }
        }
    }

    /// One `GET {api}{path}`, not retried (see [`get`](Self::get)); a 401 renews the
    /// token once (it may have been revoked early).
    async fn get_once<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, HaloError> {
        self.request(reqwest::Method::GET, path, query, None).await
    }

    /// One `POST {api}{path}` with a JSON body (Halo writes are POSTs of arrays: an object
    /// without `id` creates, one with `id` updates). Not retried here: the outbox decides.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, HaloError> {
        self.request(reqwest::Method::POST, path, &[], Some(body))
            .await
    }

    /// Writes one record: Halo takes a JSON array even for one (trap 1: an object with
    /// `id` updates that record, one without creates a new one) and answers with the record
    /// written, some versions as a one-element array.
    pub async fn post_one<T: DeserializeOwned>(
        &self,
        path: &str,
        record: serde_json::Value,
    ) -> Result<T, HaloError> {
        let answer: serde_json::Value = self.post(path, &serde_json::json!([record])).await?;
        let one = match answer {
            serde_json::Value::Array(mut a) if !a.is_empty() => a.swap_remove(0),
            other => other,
        };
        serde_json::from_value(one)
            .map_err(|e| HaloError::Decode(format!("the answer to a write could not be read: {e}")))
    }

    async fn request<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<T, HaloError> {
        let mut renewed = false;
        // A read is retried as a whole by `get`; a write is sent once, but the token it
        // needs is an idempotent read and takes the retry policy here.
        let retried_token = method != reqwest::Method::GET;
        loop {
            let token = self.token(renewed, retried_token).await?;
            self.admit().await?;
            let url = format!("{}{path}", self.api_base);
            let mut req = self
                .http
                .request(method.clone(), &url)
                .query(query)
                .header(AUTHORIZATION, format!("Bearer {token}"));
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await.map_err(|e| HaloError::Unreachable {
                url: url.clone(),
                reason: describe(&e),
            })?;
            let status = resp.status();
            let retry_after = retry_after(resp.headers());
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| HaloError::Decode(describe(&e)))?;
            self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            if status == StatusCode::UNAUTHORIZED && !renewed {
                renewed = true;
                continue;
            }
            if !status.is_success() {
                return Err(HaloError::Status {
                    status: status.as_u16(),
                    message: message_of(&String::from_utf8_lossy(&bytes)),
                    retry_after,
                });
            }
            return serde_json::from_slice(&bytes).map_err(|e| HaloError::Decode(e.to_string()));
        }
    }

    /// `GET {api}{path}` with retries (every read: list pages, look-ups, connection
    /// tests; the token request inside it too): a 429 holds the whole tenant's window (at least
    /// `backoff_floor`, longer if Halo says so); 5xx, timeouts and unreadable bodies back
    /// off exponentially. Other 4xx are answers and return at once.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, HaloError> {
        self.with_retries(path, || self.get_once(path, query)).await
    }

    async fn with_retries<T, F, Fut>(&self, what: &str, f: F) -> Result<T, HaloError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, HaloError>>,
    {
        retrying(
            &self.retry,
            self.limits.backoff_floor,
            Some(&self.window),
            "halo_psa",
            what,
            |e: &HaloError| match e {
                HaloError::Status {
                    status,
                    retry_after,
                    ..
                } => Retry::of(Some(*status), *retry_after),
                HaloError::Unreachable { .. } | HaloError::Decode(_) => Retry::of(None, None),
                _ => Retry::No,
            },
            f,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_take_the_scheme_the_policy_allows() {
        let open = OutboundPolicy {
            allow_private: true,
        };
        let strict = OutboundPolicy::default();
        assert_eq!(
            resolve("https://127.0.0.1:9000/auth/", open).unwrap(),
            "http://127.0.0.1:9000/auth"
        );
        assert_eq!(
            resolve("https://acme.halopsa.com/api", strict).unwrap(),
            "https://acme.halopsa.com/api"
        );
        assert!(matches!(
            resolve("https://127.0.0.1:9000/auth", strict),
            Err(HaloError::Refused(_))
        ));
        assert!(resolve("ftp://acme.halopsa.com", open).is_err());
    }

    #[test]
    fn error_bodies_in_every_shape_give_a_message() {
        assert_eq!(message_of("\"Client not found\""), "Client not found");
        assert_eq!(
            message_of(r#"{"error":"invalid_client","error_description":"bad secret"}"#),
            "bad secret"
        );
        assert_eq!(message_of("plain text"), "plain text");
    }
}
