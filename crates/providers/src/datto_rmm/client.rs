//! Datto RMM HTTP client: the OAuth2 password grant with Datto's fixed public client
//! (`POST {base}/auth/oauth/token`, Basic `public-client:public`, the API key and secret as
//! user name and password), the token cached for its life (100 hours), re-granted at 75 %
//! of it and once more on a 401, one token request at a time for every client of the same
//! keys; Bearer calls to `{base}/api/v2/...`; the account's limit of 600 requests per
//! rolling 60 s, shared with the MSP's other tools (a paced window: requests are spaced out
//! from 75 % of it and this side never goes past 90 %, where Datto slows every answer by a
//! second); 429 holds the window for its `Retry-After`; a 403 is never retried (a missing
//! permission, or Datto blocking this IP after too many requests); every other transient
//! failure takes the [`RetryPolicy`], the token request's too, which does not count
//! against the window.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use mspbridge_domain::SecretString;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::wire::{OAuthError, TokenResponse};
use crate::http::{
    Retry, RetryPolicy, RollingWindow, describe, message_of, retry_after, retrying, urlencode,
};
use crate::outbound::OutboundPolicy;

/// The platforms Datto runs, each at `https://{platform}-api.centrastage.net`.
pub const PLATFORMS: [&str; 6] = [
    "pinotage",
    "merlot",
    "concord",
    "vidal",
    "zinfandel",
    "syrah",
];

/// Datto's limit as this side keeps it, and where the API lives.
#[derive(Debug, Clone)]
pub struct DattoSettings {
    /// Requests per rolling window per account (Datto: 600 per 60 s, every user and key
    /// of the account together).
    pub requests: usize,
    pub window: Duration,
    /// From this share of `requests` (percent) on, requests are spaced out.
    pub pace_from_percent: usize,
    /// This side never has more than this share (percent) of `requests` in the window:
    /// past 90 % Datto delays every answer by a second, and other tools share the limit.
    pub cap_percent: usize,
    /// Shortest wait after a 429 without `Retry-After`.
    pub backoff_floor: Duration,
    /// Where the API lives for labs and sandboxes, replacing the integration's platform
    /// and API URL (`{platform}` in it is replaced by the platform):
    /// `https://127.0.0.1:PORT` for `mspbridge sandbox datto_rmm`. `None`: Datto's cloud.
    pub api_base: Option<String>,
}

impl Default for DattoSettings {
    fn default() -> Self {
        Self {
            requests: 600,
            window: Duration::from_secs(60),
            pace_from_percent: 75,
            cap_percent: 90,
            backoff_floor: Duration::from_secs(5),
            api_base: None,
        }
    }
}

impl DattoSettings {
    /// The window's cap and where pacing starts, in requests.
    fn window_sizes(&self) -> (usize, usize) {
        let cap = (self.requests * self.cap_percent.clamp(1, 100) / 100).max(1);
        let pace = (self.requests * self.pace_from_percent.clamp(1, 100) / 100).clamp(1, cap);
        (cap, pace)
    }
}

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct DattoConfig {
    /// `https://merlot-api.centrastage.net` (no `/api`).
    pub base: String,
    pub api_key: String,
    pub api_secret: SecretString,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum DattoError {
    /// Not sent: a URL the outbound policy refuses, a next-page URL on another host, the
    /// run's request budget used up.
    #[error("{0}")]
    Refused(String),
    #[error("could not reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The token request was refused (`invalid_grant`: wrong key or secret, or API
    /// access switched off).
    #[error("Datto RMM refused the API key and secret (HTTP {status}, {error}: {message})")]
    Token {
        status: u16,
        error: String,
        message: String,
    },
    /// 403: never retried.
    #[error(
        "Datto RMM refused the request (403): the API user lacks permission for {what}, or Datto has temporarily blocked this IP after too many requests ({message})"
    )]
    Forbidden { what: String, message: String },
    #[error("Datto RMM answered HTTP {status}: {message}")]
    Status {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("Datto RMM's answer could not be read: {0}")]
    Decode(String),
    /// The token request kept failing (after its own retries): not retried again as
    /// part of the request that needed it.
    #[error("Datto RMM's token endpoint could not be used: {0}")]
    GrantFailed(String),
}

impl DattoError {
    pub fn status(&self) -> Option<u16> {
        match self {
            DattoError::Status { status, .. } | DattoError::Token { status, .. } => Some(*status),
            DattoError::Forbidden { .. } => Some(403),
            _ => None,
        }
    }

    /// Datto's own words.
    pub fn vendor_message(&self) -> String {
        match self {
            DattoError::Status { message, .. }
            | DattoError::Token { message, .. }
            | DattoError::Forbidden { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    fn retry(&self) -> Retry {
        match self {
            DattoError::Status {
                status,
                retry_after,
                ..
            } => Retry::of(Some(*status), *retry_after),
            DattoError::Unreachable { .. } | DattoError::Decode(_) => Retry::of(None, None),
            _ => Retry::No,
        }
    }
}

/// What a grant gives: the token and when to grant again (at 75 % of its life).
#[derive(Debug, Clone)]
struct Token {
    value: String,
    renew_at: Instant,
}

type TokenSlot = tokio::sync::Mutex<Option<Token>>;

/// The token of one API key, shared by every client of it in this process: one grant
/// per 75 hours, not one per sync run.
fn shared_token(key: String) -> Arc<TokenSlot> {
    static ALL: crate::http::Registry<TokenSlot> = std::sync::OnceLock::new();
    crate::http::shared_by_key(&ALL, key)
}

/// `https://host[:port]` with the scheme the outbound policy allows (plain http only to
/// loopback sandboxes when private hosts are allowed), and the host.
pub(crate) fn resolve(url: &str, policy: OutboundPolicy) -> Result<(String, String), DattoError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| DattoError::Refused(format!("{url} is not an https:// URL")))?;
    let rest = rest.trim_end_matches('/');
    let rest = rest.strip_suffix("/api").unwrap_or(rest);
    let host = rest
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if host.is_empty() {
        return Err(DattoError::Refused(format!("{url} has no host")));
    }
    policy
        .check_host(&host)
        .map_err(|e| DattoError::Refused(e.to_string()))?;
    Ok((format!("{}://{rest}", policy.scheme_for(&host)), host))
}

pub struct DattoClient {
    http: reqwest::Client,
    base: String,
    host: String,
    cfg: DattoConfig,
    retry: RetryPolicy,
    floor: Duration,
    window: Arc<RollingWindow>,
    token: Arc<TokenSlot>,
    requests: AtomicU64,
    token_requests: AtomicU64,
    bytes: AtomicU64,
}

impl std::fmt::Debug for DattoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DattoClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl DattoClient {
    pub fn new(
        cfg: DattoConfig,
        settings: &DattoSettings,
        policy: OutboundPolicy,
        retry: RetryPolicy,
    ) -> Result<Self, DattoError> {
        let (base, host) = resolve(&cfg.base, policy)?;
        let (cap, pace_from) = settings.window_sizes();
        // Datto counts per account; the key is what this side knows of it.
        let window = RollingWindow::shared_paced(
            &format!("datto_rmm|{base}|{}", cfg.api_key),
            cap,
            settings.window,
            pace_from,
        );
        let token = shared_token(format!(
            "{base}|{}|{}",
            cfg.api_key,
            cfg.api_secret.expose()
        ));
        Ok(Self {
            http: policy.client(retry.timeout),
            base,
            host,
            cfg,
            retry,
            floor: settings.backoff_floor,
            window,
            token,
            requests: AtomicU64::new(0),
            token_requests: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        })
    }

    /// `https://merlot-api.centrastage.net`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Requests made so far, token requests included.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Token requests made so far by this client.
    pub fn token_requests(&self) -> u64 {
        self.token_requests.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn count(&self) -> Result<(), DattoError> {
        let made = self.requests.fetch_add(1, Ordering::Relaxed);
        if made >= self.retry.budget {
            return Err(DattoError::Refused(format!(
                "the request budget of {} Datto RMM requests for this run is used up",
                self.retry.budget
            )));
        }
        metrics::counter!("mspbridge_vendor_requests_total", "provider" => "datto_rmm")
            .increment(1);
        Ok(())
    }

    /// One password grant. Never logged: the body carries the secret.
    async fn grant_once(&self) -> Result<Token, DattoError> {
        self.count()?;
        self.token_requests.fetch_add(1, Ordering::Relaxed);
        let url = format!("{}/auth/oauth/token", self.base);
        let basic = base64::engine::general_purpose::STANDARD.encode("public-client:public");
        let body = format!(
            "grant_type=password&username={}&password={}",
            urlencode(&self.cfg.api_key),
            urlencode(self.cfg.api_secret.expose())
        );
        let resp = self
            .http
            .post(&url)
            .header(AUTHORIZATION, format!("Basic {basic}"))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| DattoError::Unreachable {
                url: url.clone(),
                reason: describe(&e),
            })?;
        let status = resp.status();
        let after = retry_after(resp.headers());
        let text = resp
            .text()
            .await
            .map_err(|e| DattoError::Decode(describe(&e)))?;
        self.bytes.fetch_add(text.len() as u64, Ordering::Relaxed);
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(DattoError::Status {
                status: status.as_u16(),
                message: message_of(&text),
                retry_after: after,
            });
        }
        if !status.is_success() {
            let e: OAuthError = serde_json::from_str(&text).unwrap_or_default();
            return Err(DattoError::Token {
                status: status.as_u16(),
                error: e.error.unwrap_or_else(|| "error".into()),
                message: e.error_description.unwrap_or_else(|| message_of(&text)),
            });
        }
        let t: TokenResponse = serde_json::from_str(&text)
            .map_err(|e| DattoError::Decode(format!("the token answer: {e}")))?;
        // Datto: 100 hours. Granted again at 75 % of its life.
        let life = Duration::from_secs(t.expires_in.unwrap_or(360_000).max(1) as u64);
        Ok(Token {
            value: t.access_token,
            renew_at: Instant::now() + life.mul_f64(0.75),
        })
    }

    /// The key's token: the cached one while it is young enough and not `stale` (the one
    /// a 401 came back for), else a new grant, one at a time: callers waiting meanwhile
    /// take the grant the first one made.
    async fn token(&self, stale: Option<&str>) -> Result<String, DattoError> {
        let mut slot = self.token.lock().await;
        if let Some(t) = slot.as_ref()
            && Instant::now() < t.renew_at
            && stale != Some(t.value.as_str())
        {
            return Ok(t.value.clone());
        }
        let t = retrying(
            &self.retry,
            self.floor,
            None,
            "datto_rmm",
            "token",
            DattoError::retry,
            || self.grant_once(),
        )
        .await?;
        let value = t.value.clone();
        *slot = Some(t);
        Ok(value)
    }

    /// One request to `{base}{path_and_query}`, not retried; a 401 re-grants the token
    /// once. `what` names the data for a 403's message.
    async fn send_once<T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        what: &str,
    ) -> Result<T, DattoError> {
        let mut stale: Option<String> = None;
        loop {
            let token = self.token(stale.as_deref()).await.map_err(|e| match e {
                // Retried already inside `token`.
                DattoError::Status { .. }
                | DattoError::Unreachable { .. }
                | DattoError::Decode(_) => DattoError::GrantFailed(e.to_string()),
                other => other,
            })?;
            self.count()?;
            self.window.acquire().await;
            let url = format!("{}{path_and_query}", self.base);
            let resp = self
                .http
                .request(method.clone(), &url)
                .header(AUTHORIZATION, format!("Bearer {token}"))
                .header(ACCEPT, "application/json")
                .send()
                .await
                .map_err(|e| DattoError::Unreachable {
                    url: url.clone(),
                    reason: describe(&e),
                })?;
            let status = resp.status();
            let after = retry_after(resp.headers());
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| DattoError::Decode(describe(&e)))?;
            self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            let message = || message_of(&String::from_utf8_lossy(&bytes));
            if status == StatusCode::UNAUTHORIZED && stale.is_none() {
                tracing::info!(vendor = "datto_rmm", "token refused; granting a new one");
                stale = Some(token);
                continue;
            }
            if status == StatusCode::FORBIDDEN {
                return Err(DattoError::Forbidden {
                    what: what.to_string(),
                    message: message(),
                });
            }
            if !status.is_success() {
                return Err(DattoError::Status {
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
            return serde_json::from_slice(bytes).map_err(|e| DattoError::Decode(e.to_string()));
        }
    }

    /// `method {base}{path_and_query}` with the retry policy: 429 holds the account's
    /// window (its `Retry-After`, at least `backoff_floor`), 5xx, timeouts and unreadable
    /// bodies back off; a 403 and every other answer return at once.
    pub async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        what: &str,
    ) -> Result<T, DattoError> {
        retrying(
            &self.retry,
            self.floor,
            Some(&self.window),
            "datto_rmm",
            what,
            DattoError::retry,
            || self.send_once(method.clone(), path_and_query, what),
        )
        .await
    }

    /// Reads the account's request count (`GET /v2/system/request_rate`) into the window,
    /// so requests the MSP's other tools made in it leave this side less room. A count
    /// that cannot be read leaves the window as it is (logged).
    /// A refused token is the caller's to report (`Err`); anything else is logged.
    pub async fn observe_account_rate(&self) -> Result<(), DattoError> {
        match self
            .get::<super::wire::RateStatus>("/api/v2/system/request_rate", "the request rate")
            .await
        {
            Ok(r) => {
                let count = r.account_count.unwrap_or(0).max(0) as usize;
                let before = self.window.in_window();
                self.window.observe_account_count(count);
                tracing::debug!(
                    vendor = "datto_rmm",
                    account_count = count,
                    this_side = before,
                    limit = ?r.account_rate_limit,
                    "account request rate read"
                );
            }
            Err(e @ DattoError::Token { .. }) => return Err(e),
            Err(e) => {
                tracing::warn!(vendor = "datto_rmm", error = %e, "the account's request rate could not be read; pacing by this side's count");
            }
        }
        Ok(())
    }

    /// Requests in this account's window as this side counts them (its own and those the
    /// account reported).
    pub fn window_in_use(&self) -> usize {
        self.window.in_window()
    }

    /// `GET {base}{path_and_query}` (`/api/v2/...`) with retries.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path_and_query: &str,
        what: &str,
    ) -> Result<T, DattoError> {
        self.send(Method::GET, path_and_query, what).await
    }

    /// The path and query of a `nextPageUrl` Datto sent, once its host is checked to be
    /// this client's (a next page elsewhere is not followed: the token would go with it).
    pub fn follow(&self, next: &str) -> Result<String, DattoError> {
        let refused = || {
            DattoError::Refused(format!(
                "Datto RMM's next page URL {next} is not on {}; not followed",
                self.host
            ))
        };
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
        if !path.starts_with("/api/v2/") {
            return Err(DattoError::Refused(format!(
                "Datto RMM's next page URL {next} is not an API v2 address; not followed"
            )));
        }
        Ok(path.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_take_the_policy_scheme_and_drop_a_pasted_api_suffix() {
        let open = OutboundPolicy {
            allow_private: true,
        };
        let strict = OutboundPolicy::default();
        assert_eq!(
            resolve("https://merlot-api.centrastage.net/api/", strict).unwrap(),
            (
                "https://merlot-api.centrastage.net".to_string(),
                "merlot-api.centrastage.net".to_string()
            )
        );
        assert_eq!(
            resolve("https://127.0.0.1:9000", open).unwrap().0,
            "http://127.0.0.1:9000"
        );
        assert!(resolve("https://127.0.0.1:9000", strict).is_err());
        assert!(resolve("ftp://merlot-api.centrastage.net", strict).is_err());
    }

    #[test]
    fn a_next_page_is_followed_only_on_the_api_host_under_api_v2() {
        let c = DattoClient::new(
            DattoConfig {
                base: "https://merlot-api.centrastage.net".into(),
                api_key: "k".into(),
                api_secret: SecretString::new("s"),
            },
            &DattoSettings::default(),
            OutboundPolicy::default(),
            RetryPolicy::default(),
        )
        .unwrap();
        assert_eq!(
            c.follow("https://Merlot-API.centrastage.net/api/v2/account/devices?max=250&page=1")
                .unwrap(),
            "/api/v2/account/devices?max=250&page=1"
        );
        for bad in [
            "https://evil.example/api/v2/account/devices?page=1",
            "https://merlot-api.centrastage.net.evil.example/api/v2/account/devices",
            "https://user@merlot-api.centrastage.net/api/v2/account/devices",
            "https://merlot-api.centrastage.net/auth/oauth/token",
            "/api/v2/account/devices?page=1",
        ] {
            assert!(c.follow(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_window_caps_at_90_percent_and_paces_from_75() {
        assert_eq!(DattoSettings::default().window_sizes(), (540, 450));
    }
}
