//! ConnectWise Asio HTTP client: the client-credentials grant (`POST {base}/v1/token`
//! with a JSON body), asking only for the scopes the first grant gave (the first asks for
//! every platform read scope the connector uses and reads the granted `scope` back), the
//! token cached for its hour and granted again at 75 % of it and once more on a 401, one
//! token request at a time for every client of the same credentials; Bearer calls with
//! `Origin`, `User-Agent` and a fresh `X-Request-ID` on every request (the spec marks them
//! required on the device endpoints); the per-operation rate buckets of
//! `GET /v1/rate_limits` kept on this side (an empty bucket waits for its `reset`), a 429
//! waits for its `Retry-After`; every transient failure takes the [`RetryPolicy`], the
//! token request's too. Error bodies come in four shapes (`{code,message}`,
//! `{error,description}`, `{message,payload,type}`, `{errors:[…]}`): [`asio_message`]
//! reads them all.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mspbridge_domain::SecretString;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, LINK, ORIGIN, USER_AGENT};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::wire::{RateLimits, TokenResponse};
use crate::http::{Retry, RetryPolicy, describe, retry_after, retrying};
use crate::outbound::OutboundPolicy;

/// The environments Asio runs, by the catalogue's `environment` value.
pub const ENVIRONMENTS: [(&str, &str, &str); 3] = [
    ("na", "0e30", "https://openapi.service.itsupport247.net"),
    (
        "eu",
        "0e31",
        "https://openapi.service.euplatform.connectwise.com",
    ),
    (
        "au",
        "0e32",
        "https://openapi.service.auplatform.connectwise.com",
    ),
];

/// Every scope the connector can use; the first grant asks for them all and keeps what
/// came back.
pub const SCOPES: [&str; 4] = [
    "platform.companies.read",
    "platform.sites.read",
    "platform.devices.read",
    "platform.tickets.read",
];

/// The rate bucket (`group`, `operation` of `GET /v1/rate_limits`) each read counts
/// against.
pub mod ops {
    pub const COMPANIES: (&str, &str) = ("topology", "partner-topology-clients");
    pub const SITES: (&str, &str) = ("topology", "partner-topology-sites");
    pub const ENDPOINTS: (&str, &str) = ("topology", "partner-topology-endpoints");
    pub const HEARTBEAT: (&str, &str) = ("asset", "partner-asset-endpoints-details");
    /// Not in 2.2.8's example of `/v1/rate_limits`: paced by what the buckets say if
    /// Asio names it, and by its 429s otherwise.
    pub const TICKETS: (&str, &str) = ("ticketing", "partner-ticketing-tickets");
    /// A device read alone counts against the endpoint-details bucket, as the heartbeat.
    pub const DETAIL: (&str, &str) = HEARTBEAT;
    /// Not in 2.2.8's example either: paced by its 429s.
    pub const PATCHING: (&str, &str) = ("patching", "partner-patching-endpoint-patches");
}

const USER_AGENT_VALUE: &str = concat!("mspbridge/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone)]
pub struct AsioSettings {
    /// Shortest wait after a 429 without `Retry-After`.
    pub backoff_floor: Duration,
    /// Longest wait for an empty rate bucket's `reset` (a bucket resetting later than
    /// this is treated as a 429 the retry policy handles).
    pub max_bucket_wait: Duration,
    /// Where the API lives for labs and sandboxes, replacing the environment's address:
    /// `https://127.0.0.1:PORT` for `mspbridge sandbox connectwise_asio`. `None`: Asio's
    /// cloud.
    pub api_base: Option<String>,
}

impl Default for AsioSettings {
    fn default() -> Self {
        Self {
            backoff_floor: Duration::from_secs(2),
            max_bucket_wait: Duration::from_secs(120),
            api_base: None,
        }
    }
}

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct AsioConfig {
    /// `https://openapi.service.itsupport247.net`.
    pub base: String,
    pub client_id: String,
    pub client_secret: SecretString,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AsioError {
    /// Not sent: a URL the outbound policy refuses, a next page on another host, the
    /// run's request budget used up.
    #[error("{0}")]
    Refused(String),
    #[error("could not reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The token request was refused (wrong client ID or secret).
    #[error("ConnectWise Asio refused the client ID and secret (HTTP {status}: {message})")]
    Token { status: u16, message: String },
    /// 403: a scope the API key was not given. Never retried.
    #[error("ConnectWise Asio refused the request (403) for {what}: {message}")]
    Forbidden { what: String, message: String },
    #[error("ConnectWise Asio answered HTTP {status}: {message}")]
    Status {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("ConnectWise Asio's answer could not be read: {0}")]
    Decode(String),
    /// The token request kept failing after its own retries.
    #[error("ConnectWise Asio's token endpoint could not be used: {0}")]
    GrantFailed(String),
}

impl AsioError {
    pub fn status(&self) -> Option<u16> {
        match self {
            AsioError::Status { status, .. } | AsioError::Token { status, .. } => Some(*status),
            AsioError::Forbidden { .. } => Some(403),
            _ => None,
        }
    }

    /// Asio's own words.
    pub fn vendor_message(&self) -> String {
        match self {
            AsioError::Status { message, .. }
            | AsioError::Token { message, .. }
            | AsioError::Forbidden { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    fn retry(&self) -> Retry {
        match self {
            AsioError::Status {
                status,
                retry_after,
                ..
            } => Retry::of(Some(*status), *retry_after),
            AsioError::Unreachable { .. } | AsioError::Decode(_) => Retry::of(None, None),
            _ => Retry::No,
        }
    }
}

/// The message of an Asio error body in any of its four shapes: `message`, else `error`,
/// else `description`, else the `errors` list (strings, or objects with one of those);
/// plain text as it came.
pub fn asio_message(body: &str) -> String {
    use serde_json::Value;
    fn text(v: &Value) -> Option<String> {
        match v {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Value::Object(m) => ["message", "error", "description", "detail"]
                .iter()
                .find_map(|k| m.get(*k).and_then(text)),
            Value::Array(items) => {
                let parts: Vec<String> = items.iter().filter_map(text).collect();
                (!parts.is_empty()).then(|| parts.join("; "))
            }
            _ => None,
        }
    }
    let found = match serde_json::from_str::<Value>(body).ok() {
        Some(Value::Object(m)) => ["message", "error", "description", "errors"]
            .iter()
            .find_map(|k| m.get(*k).and_then(text))
            .or_else(|| m.get("code").map(|c| format!("code {c}"))),
        Some(v @ (Value::String(_) | Value::Array(_))) => text(&v),
        _ => None,
    };
    found
        .unwrap_or_else(|| body.trim().chars().take(300).collect())
        .replace('\0', "")
}

/// What a grant gives: the token, when to grant again (75 % of its life) and the scopes
/// it carries.
#[derive(Debug, Clone)]
struct Token {
    value: String,
    renew_at: Instant,
}

#[derive(Debug, Default)]
struct TokenState {
    token: Option<Token>,
    /// What the first grant gave; later grants ask for these only.
    granted: Option<Vec<String>>,
}

type TokenSlot = tokio::sync::Mutex<TokenState>;

fn shared_token(key: String) -> Arc<TokenSlot> {
    static ALL: crate::http::Registry<TokenSlot> = std::sync::OnceLock::new();
    crate::http::shared_by_key(&ALL, key)
}

/// One rate bucket as this side counts it.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    remaining: i64,
    /// Epoch seconds.
    reset: i64,
}

#[derive(Debug, Default)]
struct Buckets {
    /// Read from `/v1/rate_limits` at least once.
    read: bool,
    by_op: HashMap<String, Bucket>,
}

fn shared_buckets(key: String) -> Arc<Mutex<Buckets>> {
    static ALL: crate::http::Registry<Mutex<Buckets>> = std::sync::OnceLock::new();
    crate::http::shared_by_key(&ALL, key)
}

fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// A fresh UUID-shaped id for `X-Request-ID`.
pub fn request_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(n);
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    let a = h.finish();
    h.write_u64(a);
    let b = h.finish();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        (a >> 32) as u32,
        (a >> 16) as u16,
        (a & 0x0fff) as u16,
        0x8000 | ((b >> 48) as u16 & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

/// `https://host[:port]` with the scheme the outbound policy allows, and the host.
pub(crate) fn resolve(url: &str, policy: OutboundPolicy) -> Result<(String, String), AsioError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| AsioError::Refused(format!("{url} is not an https:// URL")))?;
    let rest = rest.trim_end_matches('/');
    let host = rest
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if host.is_empty() {
        return Err(AsioError::Refused(format!("{url} has no host")));
    }
    policy
        .check_host(&host)
        .map_err(|e| AsioError::Refused(e.to_string()))?;
    Ok((format!("{}://{rest}", policy.scheme_for(&host)), host))
}

/// An answer: its body and the next page's URL from a `Link: <…>; rel="next"` header.
pub struct Answer<T> {
    pub body: T,
    pub next: Option<String>,
}

/// The `rel="next"` URL of a `Link` header.
pub fn link_next(headers: &HeaderMap) -> Option<String> {
    headers.get_all(LINK).iter().find_map(|v| {
        let v = v.to_str().ok()?;
        v.split(',').find_map(|part| {
            let (url, params) = part.split_once(';')?;
            let url = url.trim().strip_prefix('<')?.strip_suffix('>')?;
            params
                .split(';')
                .any(|p| {
                    let p = p.trim().replace(' ', "");
                    p.eq_ignore_ascii_case("rel=\"next\"") || p.eq_ignore_ascii_case("rel=next")
                })
                .then(|| url.to_string())
        })
    })
}

pub struct AsioClient {
    http: reqwest::Client,
    base: String,
    host: String,
    cfg: AsioConfig,
    retry: RetryPolicy,
    settings: AsioSettings,
    token: Arc<TokenSlot>,
    buckets: Arc<Mutex<Buckets>>,
    requests: AtomicU64,
    token_requests: AtomicU64,
    bytes: AtomicU64,
}

impl std::fmt::Debug for AsioClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsioClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl AsioClient {
    pub fn new(
        cfg: AsioConfig,
        settings: &AsioSettings,
        policy: OutboundPolicy,
        retry: RetryPolicy,
    ) -> Result<Self, AsioError> {
        let (base, host) = resolve(&cfg.base, policy)?;
        let token = shared_token(format!(
            "{base}|{}|{}",
            cfg.client_id,
            cfg.client_secret.expose()
        ));
        let buckets = shared_buckets(format!("{base}|{}", cfg.client_id));
        Ok(Self {
            http: policy.client(retry.timeout),
            base,
            host,
            cfg,
            retry,
            settings: settings.clone(),
            token,
            buckets,
            requests: AtomicU64::new(0),
            token_requests: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Requests made so far, token and rate-limit requests included.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn token_requests(&self) -> u64 {
        self.token_requests.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn count(&self) -> Result<(), AsioError> {
        let made = self.requests.fetch_add(1, Ordering::Relaxed);
        if made >= self.retry.budget {
            return Err(AsioError::Refused(format!(
                "the request budget of {} ConnectWise Asio requests for this run is used up",
                self.retry.budget
            )));
        }
        metrics::counter!("mspbridge_vendor_requests_total", "provider" => "connectwise_asio")
            .increment(1);
        Ok(())
    }

    fn common(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        rb.header(ORIGIN, &self.base)
            .header(USER_AGENT, USER_AGENT_VALUE)
            .header("X-Request-ID", request_id())
            .header(ACCEPT, "application/json")
    }

    /// One client-credentials grant. Never logged: the body carries the secret.
    async fn grant_once(&self, scopes: &[String]) -> Result<(Token, Vec<String>), AsioError> {
        self.count()?;
        self.token_requests.fetch_add(1, Ordering::Relaxed);
        let url = format!("{}/v1/token", self.base);
        let body = serde_json::json!({
            "grant_type": "client_credentials",
            "client_id": self.cfg.client_id,
            "client_secret": self.cfg.client_secret.expose(),
            "scope": scopes.join(" "),
        });
        let resp = self
            .common(self.http.post(&url))
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| AsioError::Unreachable {
                url: url.clone(),
                reason: describe(&e),
            })?;
        let status = resp.status();
        let after = retry_after(resp.headers());
        let text = resp
            .text()
            .await
            .map_err(|e| AsioError::Decode(describe(&e)))?;
        self.bytes.fetch_add(text.len() as u64, Ordering::Relaxed);
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(AsioError::Status {
                status: status.as_u16(),
                message: asio_message(&text),
                retry_after: after,
            });
        }
        if !status.is_success() {
            return Err(AsioError::Token {
                status: status.as_u16(),
                message: asio_message(&text),
            });
        }
        let t: TokenResponse = serde_json::from_str(&text)
            .map_err(|e| AsioError::Decode(format!("the token answer: {e}")))?;
        let granted: Vec<String> = match t.scope.as_deref().map(str::trim) {
            Some(s) if !s.is_empty() => s
                .split([' ', ','])
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            _ => scopes.to_vec(),
        };
        let life = Duration::from_secs(t.expires_in.unwrap_or(3_599).max(1) as u64);
        Ok((
            Token {
                value: t.access_token,
                renew_at: Instant::now() + life.mul_f64(0.75),
            },
            granted,
        ))
    }

    /// One grant of `scopes`, with the retry policy.
    async fn grant(&self, scopes: &[String]) -> Result<(Token, Vec<String>), AsioError> {
        retrying(
            &self.retry,
            self.settings.backoff_floor,
            None,
            "connectwise_asio",
            "token",
            AsioError::retry,
            || self.grant_once(scopes),
        )
        .await
    }

    /// The scopes the credentials were granted (granting a token first if none was yet).
    pub async fn granted_scopes(&self) -> Result<Vec<String>, AsioError> {
        self.token(None).await?;
        Ok(self.token.lock().await.granted.clone().unwrap_or_default())
    }

    /// The cached token while young enough and not `stale`, else a new grant, one at a
    /// time.
    async fn token(&self, stale: Option<&str>) -> Result<String, AsioError> {
        let mut slot = self.token.lock().await;
        if let Some(t) = slot.token.as_ref()
            && Instant::now() < t.renew_at
            && stale != Some(t.value.as_str())
        {
            return Ok(t.value.clone());
        }
        let ask: Vec<String> = match &slot.granted {
            Some(g) if !g.is_empty() => g.clone(),
            _ => SCOPES.iter().map(|s| s.to_string()).collect(),
        };
        let first = slot.granted.is_none();
        let (t, granted) = match self.grant(&ask).await {
            // An authorisation server that refuses a request naming a scope the key lacks
            // (rather than granting the others): find the granted ones one by one, then
            // ask for those together.
            Err(AsioError::Token { status, message })
                if first
                    && ask.len() > 1
                    && (status == 400 || message.to_ascii_lowercase().contains("scope")) =>
            {
                let mut kept = Vec::new();
                for scope in &ask {
                    if self.grant(std::slice::from_ref(scope)).await.is_ok() {
                        kept.push(scope.clone());
                    }
                }
                if kept.is_empty() {
                    return Err(AsioError::Token { status, message });
                }
                self.grant(&kept).await?
            }
            other => other?,
        };
        let value = t.value.clone();
        slot.token = Some(t);
        slot.granted = Some(granted);
        Ok(value)
    }

    /// Reads `/v1/rate_limits` into the buckets (a failure leaves them unknown: the
    /// 429s then pace this side).
    async fn read_buckets(&self) {
        // Boxed: `send_once` takes from the buckets (not for this call, which names none).
        let read: Result<Answer<RateLimits>, AsioError> =
            Box::pin(self.send_once(Method::GET, "/v1/rate_limits", None, "rate limits", None))
                .await;
        let mut b = lock(&self.buckets);
        b.read = true;
        match read {
            Ok(a) => {
                for (group, ops) in a.body.resources.unwrap_or_default() {
                    for (op, v) in ops {
                        if let (Some(remaining), Some(reset)) = (v.remaining, v.reset) {
                            b.by_op
                                .insert(format!("{group}/{op}"), Bucket { remaining, reset });
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(vendor = "connectwise_asio", error = %e, "rate limits not read")
            }
        }
    }

    /// Takes one request from `op`'s bucket, waiting for its reset when it is empty.
    async fn acquire(&self, op: (&str, &str)) -> Result<(), AsioError> {
        if !lock(&self.buckets).read {
            self.read_buckets().await;
        }
        let key = format!("{}/{}", op.0, op.1);
        loop {
            let wait = {
                let mut b = lock(&self.buckets);
                let now = epoch_now();
                match b.by_op.get_mut(&key) {
                    None => return Ok(()),
                    Some(bucket) if bucket.remaining > 0 => {
                        bucket.remaining -= 1;
                        return Ok(());
                    }
                    Some(bucket) if (bucket.reset as f64) <= now => None,
                    Some(bucket) => Some(Duration::from_secs_f64(bucket.reset as f64 - now)),
                }
            };
            match wait {
                // Reset passed: read the buckets again.
                None => self.read_buckets().await,
                Some(w) if w > self.settings.max_bucket_wait => {
                    return Err(AsioError::Status {
                        status: 429,
                        message: format!("the {key} rate bucket is empty for {w:?}"),
                        retry_after: Some(w),
                    });
                }
                Some(w) => {
                    tracing::info!(vendor = "connectwise_asio", bucket = %key, wait_ms = w.as_millis() as u64, "rate bucket empty; waiting for its reset");
                    tokio::time::sleep(w + Duration::from_millis(50)).await;
                    // The bucket refills at its reset; read the new one.
                    self.read_buckets().await;
                }
            }
        }
    }

    /// A 429's wait: the bucket is empty until `Retry-After` from now.
    fn empty_bucket(&self, op: (&str, &str), after: Option<Duration>) {
        let reset = epoch_now() + after.unwrap_or(self.settings.backoff_floor).as_secs_f64();
        lock(&self.buckets).by_op.insert(
            format!("{}/{}", op.0, op.1),
            Bucket {
                remaining: 0,
                reset: reset.ceil() as i64,
            },
        );
    }

    /// One request, not retried; a 401 re-grants the token once.
    async fn send_once<T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&serde_json::Value>,
        what: &str,
        op: Option<(&str, &str)>,
    ) -> Result<Answer<T>, AsioError> {
        let mut stale: Option<String> = None;
        loop {
            let token = self.token(stale.as_deref()).await.map_err(|e| match e {
                AsioError::Status { .. } | AsioError::Unreachable { .. } | AsioError::Decode(_) => {
                    AsioError::GrantFailed(e.to_string())
                }
                other => other,
            })?;
            if let Some(op) = op {
                self.acquire(op).await?;
            }
            self.count()?;
            let url = format!("{}{path_and_query}", self.base);
            let mut rb = self
                .common(self.http.request(method.clone(), &url))
                .header(AUTHORIZATION, format!("Bearer {token}"));
            if let Some(b) = body {
                rb = rb
                    .header(CONTENT_TYPE, "application/json")
                    .body(b.to_string());
            }
            let resp = rb.send().await.map_err(|e| AsioError::Unreachable {
                url: url.clone(),
                reason: describe(&e),
            })?;
            let status = resp.status();
            let after = retry_after(resp.headers());
            let next = link_next(resp.headers());
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| AsioError::Decode(describe(&e)))?;
            self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            let message = || asio_message(&String::from_utf8_lossy(&bytes));
            if status == StatusCode::UNAUTHORIZED && stale.is_none() {
                tracing::info!(
                    vendor = "connectwise_asio",
                    "token refused; granting a new one"
                );
                stale = Some(token);
                continue;
            }
            if status == StatusCode::FORBIDDEN {
                return Err(AsioError::Forbidden {
                    what: what.to_string(),
                    message: message(),
                });
            }
            if status == StatusCode::TOO_MANY_REQUESTS
                && let Some(op) = op
            {
                self.empty_bucket(op, after);
            }
            if !status.is_success() {
                return Err(AsioError::Status {
                    status: status.as_u16(),
                    message: message(),
                    retry_after: after,
                });
            }
            let bytes = if bytes.is_empty() {
                &b"null"[..]
            } else {
                &bytes[..]
            };
            let body =
                serde_json::from_slice(bytes).map_err(|e| AsioError::Decode(e.to_string()))?;
            return Ok(Answer { body, next });
        }
    }

    /// `method {base}{path_and_query}` (with a JSON `body`) counted against `op`'s rate
    /// bucket, with the retry policy.
    pub async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&serde_json::Value>,
        what: &str,
        op: Option<(&str, &str)>,
    ) -> Result<Answer<T>, AsioError> {
        retrying(
            &self.retry,
            self.settings.backoff_floor,
            None,
            "connectwise_asio",
            what,
            AsioError::retry,
            || self.send_once(method.clone(), path_and_query, body, what, op),
        )
        .await
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        path_and_query: &str,
        what: &str,
        op: (&str, &str),
    ) -> Result<T, AsioError> {
        Ok(self
            .send(Method::GET, path_and_query, None, what, Some(op))
            .await?
            .body)
    }

    /// The path and query of a `Link` next page, once its host is checked to be this
    /// client's (a next page elsewhere is not followed: the token would go with it).
    pub fn follow(&self, next: &str) -> Result<String, AsioError> {
        let refused = || {
            AsioError::Refused(format!(
                "ConnectWise Asio's next page URL {next} is not on {}; not followed",
                self.host
            ))
        };
        // A relative link is on this host.
        if next.starts_with("/api/platform/") {
            return Ok(next.to_string());
        }
        let rest = next
            .strip_prefix("https://")
            .or_else(|| next.strip_prefix("http://"))
            .ok_or_else(refused)?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if !host.eq_ignore_ascii_case(&self.host) || host.contains('@') {
            return Err(refused());
        }
        if !path.starts_with("/api/platform/") {
            return Err(AsioError::Refused(format!(
                "ConnectWise Asio's next page URL {next} is not a platform API address; not followed"
            )));
        }
        Ok(path.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_four_error_shapes_read() {
        assert_eq!(
            asio_message(r#"{"code":"400","message":"too many companies"}"#),
            "too many companies"
        );
        assert_eq!(
            asio_message(r#"{"error":"invalid_client","description":"bad secret"}"#),
            "invalid_client"
        );
        assert_eq!(
            asio_message(r#"{"description":"bad secret"}"#),
            "bad secret"
        );
        assert_eq!(
            asio_message(r#"{"message":"no scope","payload":null,"type":"Forbidden"}"#),
            "no scope"
        );
        assert_eq!(
            asio_message(r#"{"errors":[{"message":"pageSize needs pageNum"},"x"]}"#),
            "pageSize needs pageNum; x"
        );
        assert_eq!(asio_message("Bad Gateway"), "Bad Gateway");
    }

    #[test]
    fn link_headers_give_the_next_page() {
        let mut h = HeaderMap::new();
        h.insert(
            LINK,
            "<https://x.example/api/platform/v2/a?cursor=5&limit=5>; rel=\"next\", <https://x.example/p>; rel=\"prev\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            link_next(&h).as_deref(),
            Some("https://x.example/api/platform/v2/a?cursor=5&limit=5")
        );
        assert_eq!(link_next(&HeaderMap::new()), None);
    }

    #[test]
    fn request_ids_are_fresh_and_uuid_shaped() {
        let (a, b) = (request_id(), request_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
    }
}
