//! Stripe API client for one account key: `Authorization: Bearer`, `Stripe-Version`
//! pinned on every request, form-encoded bodies with bracket nesting, an
//! `Idempotency-Key` on every POST (the same key on every retry of that POST, so a lost
//! answer never creates twice), lists paged by `starting_after` while `has_more`.
//! Requests are paced to Stripe's account limit (25 a second in test mode, 100 live),
//! shared by every client of the key in this process; `rate_limit` and `lock_timeout`
//! answers and transport failures take the shared [`RetryPolicy`] with jittered backoff;
//! `Stripe-Should-Retry: false` is final.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mspbridge_domain::SecretString;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde_json::Value;

use super::STRIPE_VERSION;
use crate::http::{Retry, RetryPolicy, RollingWindow, describe, retry_after, retrying, urlencode};
use crate::outbound::OutboundPolicy;

pub const API_BASE: &str = "https://api.stripe.com";

/// Where Stripe lives and the limits this side keeps.
#[derive(Debug, Clone)]
pub struct StripeSettings {
    /// The API for labs and sandboxes; `None`: `https://api.stripe.com`.
    pub api_base: Option<String>,
    /// Requests a second this side sends in test mode and live mode: a little under
    /// Stripe's 25 and 100, so that requests bunched in transit (a busy machine delays some
    /// and not others) do not arrive as 26 within Stripe's second.
    pub test_rate: usize,
    pub live_rate: usize,
    /// Shortest wait after a 429.
    pub backoff_floor: Duration,
}

impl Default for StripeSettings {
    fn default() -> Self {
        Self {
            api_base: None,
            test_rate: 24,
            live_rate: 96,
            backoff_floor: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StripeError {
    /// Not sent: a URL the outbound policy refuses, the run's request budget used up.
    #[error("{0}")]
    Refused(String),
    #[error("could not reach Stripe at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// Stripe's error object.
    #[error("{0}")]
    Api(Box<ApiFailure>),
    #[error("Stripe's answer could not be read: {0}")]
    Decode(String),
}

/// Stripe's error object and the answer's headers.
#[derive(Debug, Clone, thiserror::Error)]
#[error("Stripe answered HTTP {status} ({kind}{}): {message}{}", code.as_deref().map(|c| format!(", {c}")).unwrap_or_default(), request_id.as_deref().map(|r| format!(" (request {r})")).unwrap_or_default())]
pub struct ApiFailure {
    pub status: u16,
    pub kind: String,
    pub code: Option<String>,
    pub message: String,
    pub param: Option<String>,
    pub request_id: Option<String>,
    pub retry_after: Option<Duration>,
    /// `Stripe-Should-Retry`, when Stripe said.
    pub should_retry: Option<bool>,
}

impl StripeError {
    fn retry(&self) -> Retry {
        match self {
            StripeError::Api(a) if a.should_retry == Some(false) => Retry::No,
            StripeError::Api(a) => match (a.status, a.code.as_deref()) {
                (429, _) => Retry::RateLimited(a.retry_after),
                // Another request holds the object's lock: it frees within a second.
                (_, Some("lock_timeout")) => Retry::Backoff,
                (409, _) if a.should_retry == Some(true) => Retry::Backoff,
                (s, _) => Retry::of(Some(s), a.retry_after),
            },
            StripeError::Unreachable { .. } | StripeError::Decode(_) => Retry::of(None, None),
            StripeError::Refused(_) => Retry::No,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            StripeError::Api(a) => Some(a.status),
            _ => None,
        }
    }

    /// Stripe's own words (the message of its error object).
    pub fn vendor_message(&self) -> String {
        match self {
            StripeError::Api(a) => a.message.clone(),
            other => other.to_string(),
        }
    }
}

/// Whether a key is a live-mode key (`sk_live_…`, `rk_live_…`).
pub fn is_live_key(key: &str) -> bool {
    key.starts_with("sk_live_") || key.starts_with("rk_live_")
}

/// A fresh idempotency key (128 random bits, hex).
pub fn idempotency_key() -> String {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        // No system randomness: a key unique to this process and moment still never
        // repeats another request's.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        b = t.to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A form body with Stripe's bracket nesting: pairs are sent in order, keys and values
/// percent-encoded.
pub fn form(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

pub struct StripeClient {
    http: reqwest::Client,
    base: String,
    key: SecretString,
    live: bool,
    window: Arc<RollingWindow>,
    settings: StripeSettings,
    retry: RetryPolicy,
    requests: AtomicU64,
    bytes: AtomicU64,
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeClient")
            .field("base", &self.base)
            .field("live", &self.live)
            .finish_non_exhaustive()
    }
}

/// `scheme://host[:port]` the outbound policy allows.
fn resolve(url: &str, policy: OutboundPolicy) -> Result<String, StripeError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| StripeError::Refused(format!("{url} is not an https:// URL")))?
        .trim_end_matches('/');
    let host = rest.to_ascii_lowercase();
    if host.is_empty() || host.contains('/') {
        return Err(StripeError::Refused(format!(
            "{url} must be a scheme and host only"
        )));
    }
    policy
        .check_host(&host)
        .map_err(|e| StripeError::Refused(e.to_string()))?;
    Ok(format!("{}://{rest}", policy.scheme_for(&host)))
}

impl StripeClient {
    pub fn new(
        key: SecretString,
        settings: &StripeSettings,
        policy: OutboundPolicy,
        retry: RetryPolicy,
    ) -> Result<Self, StripeError> {
        let base = resolve(settings.api_base.as_deref().unwrap_or(API_BASE), policy)?;
        let live = is_live_key(key.expose());
        let rate = if live {
            settings.live_rate
        } else {
            settings.test_rate
        };
        // One window per account key (its hash names it, never the key).
        let account = {
            use sha2::Digest as _;
            let h = sha2::Sha256::digest(key.expose().as_bytes());
            h.iter()
                .take(12)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let window = RollingWindow::shared(
            &format!("stripe|{base}|{account}"),
            rate.max(1),
            Duration::from_secs(1),
        );
        Ok(Self {
            http: policy.client(retry.timeout),
            base,
            key,
            live,
            window,
            settings: settings.clone(),
            retry,
            requests: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn live(&self) -> bool {
        self.live
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn count(&self) -> Result<(), StripeError> {
        let made = self.requests.fetch_add(1, Ordering::Relaxed);
        if made >= self.retry.budget {
            return Err(StripeError::Refused(format!(
                "the request budget of {} Stripe requests for this run is used up",
                self.retry.budget
            )));
        }
        metrics::counter!("mspbridge_vendor_requests_total", "provider" => "stripe").increment(1);
        Ok(())
    }

    async fn once(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(String, String)],
        body: Option<&str>,
        idempotency: Option<&str>,
    ) -> Result<Value, StripeError> {
        self.window.acquire().await;
        self.count()?;
        let mut url = format!("{}{path}", self.base);
        if !query.is_empty() {
            url.push('?');
            url.push_str(&form(query));
        }
        let mut req = self
            .http
            .request(method, &url)
            .header(AUTHORIZATION, format!("Bearer {}", self.key.expose()))
            .header("Stripe-Version", STRIPE_VERSION)
            .header(ACCEPT, "application/json");
        if let Some(key) = idempotency {
            req = req.header("Idempotency-Key", key);
        }
        if let Some(b) = body {
            req = req
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(b.to_string());
        }
        let resp = req.send().await.map_err(|e| StripeError::Unreachable {
            url: format!("{}{path}", self.base),
            reason: describe(&e),
        })?;
        let status = resp.status();
        let after = retry_after(resp.headers());
        let request_id = resp
            .headers()
            .get("request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let should_retry = resp
            .headers()
            .get("stripe-should-retry")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.eq_ignore_ascii_case("true"));
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| StripeError::Decode(describe(&e)))?;
        self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let value: Result<Value, _> = serde_json::from_slice(&bytes);
        if status.is_success() {
            return value.map_err(|e| StripeError::Decode(format!("{path}: {e}")));
        }
        let err = value.ok();
        let e = err.as_ref().map(|v| &v["error"]);
        let text = |k: &str| e.and_then(|e| e[k].as_str()).map(str::to_string);
        Err(StripeError::Api(Box::new(ApiFailure {
            status: status.as_u16(),
            kind: text("type").unwrap_or_else(|| "api_error".into()),
            code: text("code"),
            message: text("message").unwrap_or_else(|| {
                format!(
                    "HTTP {} {}",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or_default()
                )
            }),
            param: text("param"),
            request_id,
            retry_after: after,
            should_retry,
        })))
    }

    /// A GET with the retry policy.
    pub async fn get(
        &self,
        path: &str,
        query: &[(String, String)],
        what: &str,
    ) -> Result<Value, StripeError> {
        retrying(
            &self.retry,
            self.settings.backoff_floor,
            Some(&self.window),
            "stripe",
            what,
            StripeError::retry,
            || self.once(reqwest::Method::GET, path, query, None, None),
        )
        .await
    }

    /// A POST with the retry policy and one idempotency key for all its attempts
    /// (`key`, or a fresh one).
    pub async fn post(
        &self,
        path: &str,
        pairs: &[(String, String)],
        key: Option<&str>,
        what: &str,
    ) -> Result<Value, StripeError> {
        let key = key.map(str::to_string).unwrap_or_else(idempotency_key);
        let body = form(pairs);
        retrying(
            &self.retry,
            self.settings.backoff_floor,
            Some(&self.window),
            "stripe",
            what,
            StripeError::retry,
            || self.once(reqwest::Method::POST, path, &[], Some(&body), Some(&key)),
        )
        .await
    }

    pub async fn delete(&self, path: &str, what: &str) -> Result<Value, StripeError> {
        retrying(
            &self.retry,
            self.settings.backoff_floor,
            Some(&self.window),
            "stripe",
            what,
            StripeError::retry,
            || self.once(reqwest::Method::DELETE, path, &[], None, None),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_keep_brackets_and_encode_values() {
        let body = form(&[
            ("metadata[mspbridge_company_id]".into(), "12".into()),
            ("name".into(), "Acme & Sons".into()),
            ("expand[]".into(), "data.customer".into()),
        ]);
        assert_eq!(
            body,
            "metadata%5Bmspbridge_company_id%5D=12&name=Acme%20%26%20Sons&expand%5B%5D=data.customer"
        );
    }

    #[test]
    fn idempotency_keys_differ_and_live_keys_are_known() {
        assert_ne!(idempotency_key(), idempotency_key());
        assert_eq!(idempotency_key().len(), 32);
        assert!(is_live_key("rk_live_x") && is_live_key("sk_live_x"));
        assert!(!is_live_key("sk_test_x") && !is_live_key("rk_test_x"));
    }

    #[test]
    fn rate_limits_and_lock_timeouts_are_retried_and_refusals_are_not() {
        let api = |status, code: Option<&str>, should| {
            StripeError::Api(Box::new(ApiFailure {
                status,
                kind: "invalid_request_error".into(),
                code: code.map(str::to_string),
                message: String::new(),
                param: None,
                request_id: None,
                retry_after: None,
                should_retry: should,
            }))
        };
        assert!(matches!(
            api(429, Some("rate_limit"), None).retry(),
            Retry::RateLimited(_)
        ));
        assert!(matches!(
            api(409, Some("lock_timeout"), None).retry(),
            Retry::Backoff
        ));
        assert!(matches!(api(400, None, None).retry(), Retry::No));
        assert!(matches!(api(500, None, Some(false)).retry(), Retry::No));
        assert!(matches!(api(503, None, None).retry(), Retry::Backoff));
    }
}
