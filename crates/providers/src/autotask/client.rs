//! Autotask HTTP client.
//!
//! * **Zone discovery** first: `GET {lookup}/v1.0/zoneInformation?user={UserName}` names the
//!   API host of the user's database (`https://webservicesN.autotask.net/ATServicesRest/`);
//!   the answer is accepted only for an `*.autotask.net` host (or the lookup's own host,
//!   for labs and the sandbox) that the outbound policy allows.
//! * The three headers on every call: `ApiIntegrationCode`, `UserName`, `Secret`.
//! * Queries are `POST /V1.0/{Entity}/query`; further pages follow `nextPageUrl`, but only
//!   on the zone's own host (credentials never go anywhere else).
//! * **Budget**: the database allows 10,000 requests per rolling hour for every
//!   integration of the tenant together, and suspends the API for all of them at 100 %
//!   (trap 17). The client reads `ThresholdInformation` at the start and every
//!   `threshold_every` requests; above `slow_down_at` of the threshold it spaces its
//!   requests so it alone would take a whole window to reach `stop_at`, and at `stop_at`
//!   it waits for the count to fall. Its own spend is also capped by a rolling window.
//! * At most 3 requests in flight per API tracking identifier and entity endpoint.
//! * HTTP 500 with an `errors` array is a validation failure (trap 20): returned at once,
//!   never retried. 429, other 5xx, timeouts and truncated bodies are retried.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use mspbridge_domain::SecretString;
use reqwest::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::wire::{Errors, QueryCount, QueryPage, ThresholdInfo, ZoneInfo};

/// How long a ticket writer trusts a zone it discovered (zones move only when Autotask
/// migrates a tenant, and a moved zone answers with an error that is retried).
pub const ZONE_TTL: Duration = Duration::from_secs(600);
use crate::http::{
    Expiring, Registry, Retry, RetryPolicy, RollingWindow, describe, message_of, retry_after,
    retrying, shared_by_key, urlencode,
};
use crate::outbound::OutboundPolicy;

/// Autotask's limits and where zone discovery asks.
#[derive(Debug, Clone)]
pub struct AutotaskSettings {
    /// Production: `https://webservices.autotask.net/atservicesrest`.
    pub zone_lookup_url: String,
    /// The database's request threshold per window when `ThresholdInformation` cannot be
    /// read, and this process's own cap (Autotask: 10,000 per rolling hour).
    pub requests: usize,
    pub window: Duration,
    /// Fraction of the threshold above which requests are spaced out.
    pub slow_down_at: f64,
    /// Fraction of the threshold at which the client waits for the count to fall.
    pub stop_at: f64,
    /// Requests between two readings of `ThresholdInformation`.
    pub threshold_every: u64,
    /// A reading older than this is taken again (other integrations spend too).
    pub threshold_max_age: Duration,
    /// Concurrent requests per API tracking identifier and entity endpoint.
    pub threads_per_endpoint: usize,
    /// Shortest wait after a 429.
    pub backoff_floor: Duration,
}

impl Default for AutotaskSettings {
    fn default() -> Self {
        Self {
            zone_lookup_url: "https://webservices.autotask.net/atservicesrest".into(),
            requests: 10_000,
            window: Duration::from_secs(3600),
            slow_down_at: 0.5,
            stop_at: 0.9,
            threshold_every: 100,
            threshold_max_age: Duration::from_secs(300),
            threads_per_endpoint: 3,
            backoff_floor: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AutotaskConfig {
    /// The API-only resource's user name (an email address).
    pub username: String,
    pub secret: SecretString,
    /// The API tracking identifier.
    pub integration_code: SecretString,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AutotaskError {
    #[error("{0}")]
    Refused(String),
    #[error("could not reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("Autotask found no zone for the API user '{user}': {message}")]
    Zone { user: String, message: String },
    #[error("Autotask answered HTTP {status}: {message}")]
    Status {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    /// HTTP 500 with an `errors` array: Autotask refused the request itself.
    #[error("Autotask refused the request: {0}")]
    Validation(String),
    #[error("Autotask's answer could not be read: {0}")]
    Decode(String),
}

impl AutotaskError {
    pub fn status(&self) -> Option<u16> {
        match self {
            AutotaskError::Status { status, .. } => Some(*status),
            AutotaskError::Validation(_) => Some(500),
            _ => None,
        }
    }

    pub fn vendor_message(&self) -> String {
        match self {
            AutotaskError::Status { message, .. }
            | AutotaskError::Validation(message)
            | AutotaskError::Zone { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

/// `scheme://host[:port]/path` split into the host and the rest.
fn split_url(url: &str) -> Option<(&str, &str)> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    Some(match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    })
}

/// The message of an error body: Autotask's `errors` array joined, else the usual shapes.
fn error_message(body: &str) -> (String, bool) {
    match serde_json::from_str::<Errors>(body) {
        Ok(e) if !e.errors.is_empty() => (e.errors.join("; "), true),
        _ => (message_of(body), false),
    }
}

/// How close the database is to its threshold, shared by every client of one API user.
#[derive(Debug, Default)]
struct Usage {
    /// The last reading (`None` when it could not be read) and when it was taken.
    reading: Option<(Option<ThresholdInfo>, Instant)>,
    /// Requests sent since that reading.
    since: u64,
}

pub struct AutotaskClient {
    http: reqwest::Client,
    /// `https://webservices5.autotask.net/ATServicesRest/V1.0` (scheme per policy).
    api_base: String,
    /// The zone's host (`webservices5.autotask.net`): the only one credentials go to.
    api_host: String,
    zone: ZoneInfo,
    cfg: AutotaskConfig,
    policy: OutboundPolicy,
    settings: AutotaskSettings,
    retry: RetryPolicy,
    window: Arc<RollingWindow>,
    usage: Arc<tokio::sync::Mutex<Usage>>,
    requests: AtomicU64,
    /// Response body bytes received (benchmarks report them).
    bytes: AtomicU64,
}

impl std::fmt::Debug for AutotaskClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutotaskClient")
            .field("api_base", &self.api_base)
            .finish_non_exhaustive()
    }
}

impl AutotaskClient {
    /// Discovers the user's zone and builds a client for its API whose requests follow
    /// `retry`; zone discovery takes the same retry policy as every other read.
    pub async fn connect(
        cfg: AutotaskConfig,
        settings: &AutotaskSettings,
        policy: OutboundPolicy,
        retry: RetryPolicy,
    ) -> Result<Self, AutotaskError> {
        let (lookup_host, lookup_path) = split_url(&settings.zone_lookup_url).ok_or_else(|| {
            AutotaskError::Refused(format!(
                "{} is not an https:// URL",
                settings.zone_lookup_url
            ))
        })?;
        policy
            .check_host(lookup_host)
            .map_err(|e| AutotaskError::Refused(e.to_string()))?;
        if cfg.username.trim().is_empty() {
            return Err(AutotaskError::Refused(
                "the API user name is empty".to_string(),
            ));
        }
        let http = policy.client(retry.timeout);
        let url = format!(
            "{}://{lookup_host}{}/v1.0/zoneInformation?user={}",
            policy.scheme_for(lookup_host),
            lookup_path.trim_end_matches('/'),
            urlencode(cfg.username.trim())
        );
        // Zone discovery takes no credentials and does not count against the limits.
        let attempts = AtomicU64::new(0);
        let received = AtomicU64::new(0);
        let zone: ZoneInfo = retrying(
            &retry,
            settings.backoff_floor,
            None,
            "autotask",
            "zoneInformation",
            transient,
            || async {
                attempts.fetch_add(1, Ordering::Relaxed);
                let resp = http
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| AutotaskError::Unreachable {
                        url: url.clone(),
                        reason: describe(&e),
                    })?;
                let status = resp.status();
                let retry_after = retry_after(resp.headers());
                let text = resp
                    .text()
                    .await
                    .map_err(|e| AutotaskError::Decode(describe(&e)))?;
                received.fetch_add(text.len() as u64, Ordering::Relaxed);
                if status.as_u16() == 429 || (status.is_server_error() && !error_message(&text).1) {
                    return Err(AutotaskError::Status {
                        status: status.as_u16(),
                        message: message_of(&text),
                        retry_after,
                    });
                }
                if !status.is_success() {
                    return Err(AutotaskError::Zone {
                        user: cfg.username.clone(),
                        message: error_message(&text).0,
                    });
                }
                serde_json::from_str(&text)
                    .map_err(|e| AutotaskError::Decode(format!("zoneInformation: {e}")))
            },
        )
        .await?;
        let mut client = Self::for_zone(cfg, settings, policy, http, lookup_host, zone)?;
        client.retry = retry;
        client.requests = attempts;
        client.bytes = received;
        Ok(client)
    }

    /// As [`connect`](Self::connect), with the zone remembered for [`ZONE_TTL`] by lookup
    /// URL and user: ticket writers (an outbox drain, each webhook delivery) skip the
    /// discovery request. The zone's host is checked again either way.
    pub async fn connect_cached(
        cfg: AutotaskConfig,
        settings: &AutotaskSettings,
        policy: OutboundPolicy,
        retry: RetryPolicy,
    ) -> Result<Self, AutotaskError> {
        static ZONES: OnceLock<Expiring<ZoneInfo>> = OnceLock::new();
        let zones = ZONES.get_or_init(|| Expiring::new(ZONE_TTL));
        let key = format!(
            "{}|{}",
            settings.zone_lookup_url,
            cfg.username.trim().to_lowercase()
        );
        if let Some(zone) = zones.get(&key)
            && let Some((lookup_host, _)) = split_url(&settings.zone_lookup_url)
        {
            let http = policy.client(retry.timeout);
            return Self::for_zone(cfg, settings, policy, http, lookup_host, zone)
                .map(|c| c.with_retry(retry));
        }
        let client = Self::connect(cfg, settings, policy, retry).await?;
        zones.put(key, client.zone.clone());
        Ok(client)
    }

    /// A client for the API of `zone`, once its host is known to be Autotask's (or the
    /// lookup's own, for sandboxes) and allowed by the policy.
    fn for_zone(
        cfg: AutotaskConfig,
        settings: &AutotaskSettings,
        policy: OutboundPolicy,
        http: reqwest::Client,
        lookup_host: &str,
        zone: ZoneInfo,
    ) -> Result<Self, AutotaskError> {
        let (host, path) = split_url(&zone.url).ok_or_else(|| {
            AutotaskError::Refused(format!("the zone URL {} is not an https:// URL", zone.url))
        })?;
        let host_name = host.split(':').next().unwrap_or_default().to_lowercase();
        if !(host_name.ends_with(".autotask.net") || host.eq_ignore_ascii_case(lookup_host)) {
            return Err(AutotaskError::Refused(format!(
                "zone discovery named {host}, which is not an Autotask host; not sending credentials there"
            )));
        }
        policy
            .check_host(host)
            .map_err(|e| AutotaskError::Refused(e.to_string()))?;
        let api_base = format!(
            "{}://{host}{}/V1.0",
            policy.scheme_for(host),
            path.trim_end_matches('/')
        );
        static USAGE: Registry<tokio::sync::Mutex<Usage>> = OnceLock::new();
        let account = format!("autotask|{host}|{}", cfg.username.to_lowercase());
        Ok(Self {
            http,
            api_host: host.to_string(),
            usage: shared_by_key(&USAGE, account.clone()),
            window: RollingWindow::shared(&account, settings.requests, settings.window),
            api_base,
            zone,
            cfg,
            policy,
            settings: settings.clone(),
            retry: RetryPolicy::default(),
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

    pub fn zone(&self) -> &ZoneInfo {
        &self.zone
    }

    pub fn username(&self) -> &str {
        &self.cfg.username
    }

    /// Vendor requests made so far (zone discovery and threshold readings included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Response body bytes received so far (zone discovery included).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The slot for one more request to `entity` (3 per tracking identifier and endpoint).
    fn endpoint(&self, entity: &str) -> Arc<Semaphore> {
        static ALL: OnceLock<Mutex<HashMap<String, Arc<Semaphore>>>> = OnceLock::new();
        let all = ALL.get_or_init(Default::default);
        let mut all = all.lock().unwrap_or_else(|p| p.into_inner());
        all.entry(format!(
            "{}|{}|{}|{}",
            self.api_host,
            self.cfg.integration_code.expose(),
            entity.to_ascii_lowercase(),
            self.settings.threads_per_endpoint
        ))
        .or_insert_with(|| Arc::new(Semaphore::new(self.settings.threads_per_endpoint.max(1))))
        .clone()
    }

    /// Reads the database's current request count (no pacing of its own).
    pub async fn threshold(&self) -> Result<ThresholdInfo, AutotaskError> {
        let url = format!("{}/ThresholdInformation", self.api_base);
        self.with_retries("ThresholdInformation", || async {
            let bytes = self
                .send(reqwest::Method::GET, &url, None, "ThresholdInformation")
                .await?;
            serde_json::from_slice(&bytes).map_err(|e| AutotaskError::Decode(e.to_string()))
        })
        .await
    }

    /// Waits as long as the database's usage asks before one more request.
    async fn pace(&self) {
        let s = &self.settings;
        loop {
            let mut u = self.usage.lock().await;
            let stale = match &u.reading {
                None => true,
                Some((_, at)) => {
                    u.since >= s.threshold_every || at.elapsed() >= s.threshold_max_age
                }
            };
            if stale {
                let reading = match self.threshold().await {
                    Ok(t) => Some(t),
                    Err(e) => {
                        tracing::warn!(error = %e, "Autotask ThresholdInformation could not be read; pacing by the local window only");
                        None
                    }
                };
                u.reading = Some((reading, Instant::now()));
                u.since = 0;
            }
            let Some((Some(t), _)) = u.reading else {
                u.since += 1;
                return;
            };
            let limit = t.external_request_threshold.max(1) as f64;
            let used = (t.current_timeframe_request_count + u.since) as f64;
            let stop = s.stop_at * limit;
            if used < s.slow_down_at * limit {
                u.since += 1;
                return;
            }
            if used < stop {
                u.since += 1;
                drop(u);
                let spacing = s.window.div_f64((stop - used).max(1.0));
                metrics::counter!("mspbridge_vendor_paced_total", "provider" => "autotask")
                    .increment(1);
                tokio::time::sleep(spacing).await;
                return;
            }
            // At the stop line: wait, then read the count again.
            u.since = s.threshold_every;
            drop(u);
            let wait = s.window / 20;
            tracing::warn!(
                used,
                threshold = limit,
                wait_ms = wait.as_millis() as u64,
                "Autotask database near its request threshold; waiting"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// One request: budget, local window, endpoint slot, the three headers.
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&serde_json::Value>,
        entity: &str,
    ) -> Result<Vec<u8>, AutotaskError> {
        let made = self.requests.fetch_add(1, Ordering::Relaxed);
        if made >= self.retry.budget {
            return Err(AutotaskError::Refused(format!(
                "the request budget of {} Autotask requests for this run is used up",
                self.retry.budget
            )));
        }
        self.window.acquire().await;
        let slots = self.endpoint(entity);
        let _slot = slots
            .acquire()
            .await
            .map_err(|_| AutotaskError::Refused("the endpoint limiter is closed".into()))?;
        metrics::counter!("mspbridge_vendor_requests_total", "provider" => "autotask").increment(1);
        let mut req = self
            .http
            .request(method.clone(), url)
            .header("ApiIntegrationCode", self.cfg.integration_code.expose())
            .header("UserName", &self.cfg.username)
            .header("Secret", self.cfg.secret.expose());
        if let Some(b) = body {
            req = req
                .header(CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        let method_is_read = method == reqwest::Method::GET;
        let resp = req.send().await.map_err(|e| AutotaskError::Unreachable {
            url: url.split('?').next().unwrap_or(url).to_string(),
            reason: describe(&e),
        })?;
        let status = resp.status();
        let retry_after = retry_after(resp.headers());
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| AutotaskError::Decode(describe(&e)))?;
        self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        let (message, listed) = error_message(&String::from_utf8_lossy(&bytes));
        // Autotask answers a write it refuses with HTTP 500 and an `errors` list (trap 20);
        // on a read (a query, a GET) a 500 is the server's trouble and is retried.
        let write = !(method_is_read || entity_is_query(url));
        if status.as_u16() == 500 && listed && write {
            return Err(AutotaskError::Validation(message));
        }
        Err(AutotaskError::Status {
            status: status.as_u16(),
            message,
            retry_after,
        })
    }

    async fn paced<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&serde_json::Value>,
        entity: &str,
    ) -> Result<T, AutotaskError> {
        self.pace().await;
        let bytes = self.send(method, url, body, entity).await?;
        serde_json::from_slice(&bytes).map_err(|e| AutotaskError::Decode(e.to_string()))
    }

    async fn with_retries<T, F, Fut>(&self, what: &str, f: F) -> Result<T, AutotaskError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, AutotaskError>>,
    {
        retrying(
            &self.retry,
            self.settings.backoff_floor,
            Some(&self.window),
            "autotask",
            what,
            transient,
            f,
        )
        .await
    }

    /// `POST /V1.0/{entity}/query` with `body` (`filter`, `MaxRecords`, `IncludeFields`).
    pub async fn query(
        &self,
        entity: &str,
        body: &serde_json::Value,
    ) -> Result<QueryPage, AutotaskError> {
        let url = format!("{}/{entity}/query", self.api_base);
        self.with_retries(entity, || {
            self.paced(reqwest::Method::POST, &url, Some(body), entity)
        })
        .await
    }

    /// The page `next_page_url` names, after checking it is on the zone's host.
    pub async fn follow(&self, next_page_url: &str) -> Result<QueryPage, AutotaskError> {
        let (host, path) = split_url(next_page_url).ok_or_else(|| {
            AutotaskError::Refused(format!("nextPageUrl '{next_page_url}' is not a URL"))
        })?;
        if !host.eq_ignore_ascii_case(&self.api_host) {
            return Err(AutotaskError::Refused(format!(
                "nextPageUrl points at {host}, not the zone's host {}; not sending credentials there",
                self.api_host
            )));
        }
        let entity = path
            .split('/')
            .skip_while(|s| !s.eq_ignore_ascii_case("V1.0"))
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let url = format!("{}://{host}{path}", self.policy.scheme_for(host));
        self.with_retries(&entity, || {
            self.paced(reqwest::Method::GET, &url, None, &entity)
        })
        .await
    }

    /// Every row of `entity` matching `filter` (500 a page, `nextPageUrl` followed);
    /// unreadable rows are left out. For the small lookups of writes and registration.
    pub async fn query_all<T: DeserializeOwned>(
        &self,
        entity: &str,
        filter: serde_json::Value,
    ) -> Result<Vec<T>, AutotaskError> {
        let mut out = Vec::new();
        let mut page = self
            .query(
                entity,
                &serde_json::json!({ "MaxRecords": 500, "filter": filter }),
            )
            .await?;
        loop {
            let (rows, _, _) = crate::source::read_rows::<T>(page.items);
            out.extend(rows);
            match page.page_details.next_page_url {
                Some(next) => page = self.follow(&next).await?,
                None => return Ok(out),
            }
        }
    }

    /// `POST /V1.0/{entity}/query/count` with `filter`.
    pub async fn count(
        &self,
        entity: &str,
        filter: &serde_json::Value,
    ) -> Result<u64, AutotaskError> {
        let url = format!("{}/{entity}/query/count", self.api_base);
        let body = serde_json::json!({ "filter": filter });
        let c: QueryCount = self
            .with_retries(entity, || {
                self.paced(reqwest::Method::POST, &url, Some(&body), entity)
            })
            .await?;
        Ok(c.query_count)
    }

    /// A write (`POST`/`PATCH` on an entity or a parent's child collection): paced, sent
    /// once and never retried here, since an answer lost after Autotask applied the change
    /// is for the caller to look for (the outbox finds before it creates again).
    pub async fn write<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, AutotaskError> {
        let path = path.trim_start_matches('/');
        let url = format!("{}/{path}", self.api_base);
        let entity = path.split('/').next().unwrap_or_default().to_string();
        self.paced(method, &url, Some(body), &entity).await
    }

    /// `GET /V1.0/{path}` (entity information, single records), with retries.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, AutotaskError> {
        let url = format!("{}/{}", self.api_base, path.trim_start_matches('/'));
        let entity = path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        self.with_retries(path, || {
            self.paced(reqwest::Method::GET, &url, None, &entity)
        })
        .await
    }
}

/// How a failed Autotask read is retried: 429 (after `Retry-After`, at least the backoff
/// floor), 5xx, timeouts, resets and truncated or unreadable bodies; other answers (a
/// refused write, an unknown user) not at all.
fn transient(e: &AutotaskError) -> Retry {
    match e {
        AutotaskError::Status {
            status,
            retry_after,
            ..
        } => Retry::of(Some(*status), *retry_after),
        AutotaskError::Unreachable { .. } | AutotaskError::Decode(_) => Retry::of(None, None),
        _ => Retry::No,
    }
}

/// `…/{entity}/query` and `…/query/count` are reads sent as POST.
fn entity_is_query(url: &str) -> bool {
    let path = url.split('?').next().unwrap_or(url);
    path.ends_with("/query") || path.ends_with("/query/count")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_and_error_bodies_read() {
        assert_eq!(
            split_url("https://webservices5.autotask.net/ATServicesRest/"),
            Some(("webservices5.autotask.net", "/ATServicesRest/"))
        );
        assert_eq!(split_url("ftp://x"), None);
        assert_eq!(
            error_message(r#"{"errors":["Invalid filter","MaxRecords too big"]}"#),
            ("Invalid filter; MaxRecords too big".to_string(), true)
        );
        assert_eq!(error_message("\"oops\""), ("oops".to_string(), false));
    }
}
