//! Syncro HTTP client: `Authorization: Bearer <API token>` against
//! `https://{subdomain}.syncromsp.com/api/v1`, the 180-requests-per-minute limit counted per
//! source address (one window shared by every Syncro tenant this process talks to, trap
//! 25), retries and a per-run request budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mspbridge_domain::SecretString;
use reqwest::Method;
use reqwest::header::AUTHORIZATION;
use serde::de::DeserializeOwned;

use crate::http::{Retry, RetryPolicy, RollingWindow, describe, message_of, retry_after, retrying};
use crate::outbound::OutboundPolicy;

/// Syncro's limit and where its API lives.
#[derive(Debug, Clone)]
pub struct SyncroSettings {
    /// Requests per window per source address (Syncro: 180 per minute).
    pub requests: usize,
    pub window: Duration,
    /// Shortest wait after a 429.
    pub backoff_floor: Duration,
    /// The API base with `{subdomain}` in it. Production: Syncro's cloud; the demo and tests
    /// point it at the sandbox (`https://127.0.0.1:PORT/{subdomain}/api/v1`).
    pub api_base: String,
}

impl Default for SyncroSettings {
    fn default() -> Self {
        Self {
            requests: 180,
            window: Duration::from_secs(60),
            backoff_floor: Duration::from_secs(10),
            api_base: "https://{subdomain}.syncromsp.com/api/v1".into(),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SyncroError {
    #[error("{0}")]
    Refused(String),
    #[error("could not reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("Syncro answered HTTP {status}: {message}")]
    Status {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("Syncro's answer could not be read: {0}")]
    Decode(String),
}

impl SyncroError {
    pub fn status(&self) -> Option<u16> {
        match self {
            SyncroError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn vendor_message(&self) -> String {
        match self {
            SyncroError::Status { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// Syncro answers 401 both for a bad token and for a token whose permissions miss the
    /// resource; only the message tells them apart.
    pub fn is_permission(&self) -> bool {
        matches!(self, SyncroError::Status { status: 401 | 403, message, .. }
            if message.to_ascii_lowercase().contains("permission"))
    }
}

pub struct SyncroClient {
    http: reqwest::Client,
    base: String,
    token: SecretString,
    retry: RetryPolicy,
    floor: Duration,
    window: Arc<RollingWindow>,
    requests: AtomicU64,
    /// Response body bytes received (benchmarks report them).
    bytes: AtomicU64,
}

impl std::fmt::Debug for SyncroClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncroClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl SyncroClient {
    pub fn new(
        subdomain: &str,
        token: SecretString,
        settings: &SyncroSettings,
        policy: OutboundPolicy,
        timeout: Duration,
    ) -> Result<Self, SyncroError> {
        let url = settings.api_base.replace("{subdomain}", subdomain);
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| SyncroError::Refused(format!("{url} is not an https:// URL")))?;
        let host = rest.split('/').next().unwrap_or_default();
        policy
            .check_host(host)
            .map_err(|e| SyncroError::Refused(e.to_string()))?;
        Ok(Self {
            http: policy.client(timeout),
            base: format!(
                "{}://{}",
                policy.scheme_for(host),
                rest.trim_end_matches('/')
            ),
            token,
            retry: RetryPolicy::default(),
            floor: settings.backoff_floor,
            // Counted per source address: one window for every Syncro tenant.
            window: RollingWindow::shared("syncro|egress", settings.requests, settings.window),
            requests: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        })
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Response body bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// One `GET {base}{path}`, not retried (see [`get`](Self::get)).
    async fn get_once<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, SyncroError> {
        self.request(Method::GET, path, query, None).await
    }

    /// One `POST` (create, comment) or `PUT` (update) with a JSON body, sent once: a write
    /// is never repeated here (the outbox decides, after looking for what the first
    /// attempt may have done).
    pub async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, SyncroError> {
        self.request(method, path, &[], Some(body)).await
    }

    async fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<T, SyncroError> {
        let made = self.requests.fetch_add(1, Ordering::Relaxed);
        if made >= self.retry.budget {
            return Err(SyncroError::Refused(format!(
                "the request budget of {} Syncro requests for this run is used up",
                self.retry.budget
            )));
        }
        self.window.acquire().await;
        metrics::counter!("mspbridge_vendor_requests_total", "provider" => "syncro").increment(1);
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method, &url)
            .query(query)
            .header(AUTHORIZATION, format!("Bearer {}", self.token.expose()));
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| SyncroError::Unreachable {
            url: url.clone(),
            reason: describe(&e),
        })?;
        let status = resp.status();
        let retry_after = retry_after(resp.headers());
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| SyncroError::Decode(describe(&e)))?;
        self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        if !status.is_success() {
            return Err(SyncroError::Status {
                status: status.as_u16(),
                message: message_of(&String::from_utf8_lossy(&bytes)),
                retry_after,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| SyncroError::Decode(e.to_string()))
    }

    /// `GET {base}{path}` with retries for 429 (holding the shared window), 5xx, timeouts
    /// and unreadable bodies: every read, whether a list page, a look-up or a connection
    /// test, takes the same policy.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, SyncroError> {
        retrying(
            &self.retry,
            self.floor,
            Some(&self.window),
            "syncro",
            path,
            |e: &SyncroError| match e {
                SyncroError::Status {
                    status,
                    retry_after,
                    ..
                } => Retry::of(Some(*status), *retry_after),
                SyncroError::Unreachable { .. } | SyncroError::Decode(_) => Retry::of(None, None),
                _ => Retry::No,
            },
            || self.get_once(path, query),
        )
        .await
    }
}
