//! The ConnectWise Manage HTTP client: codebase discovery, Basic auth
//! `companyId+publicKey:privateKey`, the `clientId` header and the version `Accept`
//! header on every call.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use mspbridge_domain::SecretString;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap};
use serde::de::DeserializeOwned;

use super::wire::{CompanyInfo, ErrorBody};
use crate::http::{Retry, describe, retry_after, retrying, urlencode};
use crate::outbound::OutboundPolicy;

/// The REST API version we pin with the `Accept` header.
pub const API_VERSION: &str = "2025.1";

pub fn accept_header() -> String {
    format!("application/vnd.connectwise.com+json; version={API_VERSION}")
}

/// What the client needs to reach one ConnectWise site.
#[derive(Debug, Clone)]
pub struct CwConfig {
    /// Host (and optional port) only, validated by the catalogue.
    pub site: String,
    pub company_id: String,
    pub public_key: String,
    pub private_key: SecretString,
    /// None means no `clientId` header is sent (ConnectWise then refuses the call).
    pub client_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CwError {
    #[error("could not reach {host}: {reason}")]
    Unreachable { host: String, reason: String },
    #[error("ConnectWise answered HTTP {status}: {}", .body.as_ref().map(|b| b.message.as_str()).unwrap_or("(no error body)"))]
    Status {
        status: u16,
        body: Option<ErrorBody>,
        retry_after: Option<Duration>,
    },
    #[error("ConnectWise sent a response we could not read: {0}")]
    Decode(String),
    #[error("{0}")]
    Refused(String),
}

impl CwError {
    pub fn status(&self) -> Option<u16> {
        match self {
            CwError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn vendor_message(&self) -> String {
        match self {
            CwError::Status { body: Some(b), .. } => b.message.clone(),
            other => other.to_string(),
        }
    }
}

pub use crate::http::RetryPolicy;

pub struct CwClient {
    http: reqwest::Client,
    base: String,
    auth: String,
    client_id: Option<String>,
    pub info: CompanyInfo,
    retry: RetryPolicy,
    requests: std::sync::atomic::AtomicU64,
    /// Response body bytes received (benchmarks report them).
    bytes: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for CwClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CwClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl CwClient {
    /// Finds the codebase through `/login/companyinfo/{companyId}` and builds a client
    /// for `https://{api host}/{codebase}apis/3.0` whose requests follow `retry`. The
    /// discovery request takes the same retry policy as every other read.
    pub async fn connect(
        cfg: &CwConfig,
        policy: OutboundPolicy,
        retry: RetryPolicy,
    ) -> Result<Self, CwError> {
        policy
            .check_host(&cfg.site)
            .map_err(|e| CwError::Refused(e.to_string()))?;
        let http = policy.client(retry.timeout);
        let scheme = policy.scheme_for(&cfg.site);
        let url = format!(
            "{scheme}://{}/login/companyinfo/{}",
            cfg.site,
            urlencode(&cfg.company_id)
        );
        let requests = std::sync::atomic::AtomicU64::new(0);
        let text = retrying(
            &retry,
            Duration::ZERO,
            None,
            "connectwise_manage",
            "/login/companyinfo",
            transient,
            || async {
                requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let resp = http
                    .get(&url)
                    .header(ACCEPT, "application/json")
                    .send()
                    .await
                    .map_err(|e| CwError::Unreachable {
                        host: cfg.site.clone(),
                        reason: describe(&e),
                    })?;
                let status = resp.status();
                let retry_after = retry_after(resp.headers());
                let text = resp
                    .text()
                    .await
                    .map_err(|e| CwError::Decode(describe(&e)))?;
                if !status.is_success() {
                    return Err(CwError::Status {
                        status: status.as_u16(),
                        body: serde_json::from_str(&text).ok(),
                        retry_after,
                    });
                }
                Ok(text)
            },
        )
        .await?;
        // ConnectWise answers an unknown company id with an empty body or `null`.
        if text.trim().is_empty() || text.trim() == "null" {
            return Err(CwError::Status {
                status: 404,
                body: None,
                retry_after: None,
            });
        }
        let received = text.len() as u64;
        let info: CompanyInfo =
            serde_json::from_str(&text).map_err(|e| CwError::Decode(e.to_string()))?;
        let api_host = api_host(&cfg.site, &info);
        policy
            .check_host(&api_host)
            .map_err(|e| CwError::Refused(e.to_string()))?;
        let base = format!(
            "{}://{api_host}/{}apis/3.0",
            policy.scheme_for(&api_host),
            info.codebase
        );
        let basic = STANDARD.encode(format!(
            "{}+{}:{}",
            cfg.company_id,
            cfg.public_key,
            cfg.private_key.expose()
        ));
        Ok(Self {
            http,
            base,
            auth: format!("Basic {basic}"),
            client_id: cfg.client_id.clone(),
            info,
            retry,
            // The discovery calls above count: they are vendor requests like any other.
            requests,
            bytes: std::sync::atomic::AtomicU64::new(received),
        })
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Vendor requests made so far, the codebase discovery included.
    pub fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Response body bytes received so far, the codebase discovery included.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `GET {base}{path}` with retries (every read: list pages, look-ups, connection
    /// tests): 429 waits for `Retry-After` (capped), 5xx, timeouts and truncated or
    /// unreadable bodies back off exponentially. 4xx other than 429 are answers, not
    /// failures, and are returned at once.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<(T, HeaderMap), CwError> {
        retrying(
            &self.retry,
            Duration::ZERO,
            None,
            "connectwise_manage",
            path,
            transient,
            || self.get_once(path, query),
        )
        .await
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// One `GET {base}{path}` with query parameters, decoding the JSON answer; not
    /// retried (see [`get`](Self::get)).
    async fn get_once<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<(T, HeaderMap), CwError> {
        self.request(reqwest::Method::GET, path, query, None).await
    }

    /// `POST` or `PATCH {base}{path}` with a JSON body, once: a write is never retried
    /// here (the outbox looks for what a lost attempt wrote before writing again).
    pub async fn send<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, CwError> {
        self.request(method, path, &[], Some(body))
            .await
            .map(|(v, _)| v)
    }

    /// One call: the request budget, the auth and `clientId` headers, any non-2xx answer
    /// as `CwError::Status` with ConnectWise's error body and `Retry-After`.
    async fn request<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<(T, HeaderMap), CwError> {
        let made = self
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if made >= self.retry.budget {
            return Err(CwError::Refused(format!(
                "the request budget of {} ConnectWise requests for this run is used up",
                self.retry.budget
            )));
        }
        metrics::counter!("mspbridge_vendor_requests_total", "provider" => "connectwise_manage")
            .increment(1);
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .query(query)
            .header(AUTHORIZATION, &self.auth)
            .header(ACCEPT, accept_header());
        if let Some(id) = &self.client_id {
            req = req.header("clientId", id);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| CwError::Unreachable {
            host: self.base.clone(),
            reason: describe(&e),
        })?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| CwError::Decode(describe(&e)))?;
        self.bytes
            .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if !status.is_success() {
            return Err(CwError::Status {
                status: status.as_u16(),
                body: serde_json::from_slice(&bytes).ok(),
                retry_after: retry_after(&headers),
            });
        }
        let value = serde_json::from_slice(&bytes).map_err(|e| CwError::Decode(e.to_string()))?;
        Ok((value, headers))
    }
}

/// How a failed ConnectWise read is retried: 429 after `Retry-After`, 5xx, timeouts,
/// resets and truncated or unreadable bodies with backoff; other answers not at all.
fn transient(e: &CwError) -> Retry {
    match e {
        CwError::Status {
            status,
            retry_after,
            ..
        } => Retry::of(Some(*status), *retry_after),
        CwError::Unreachable { .. } | CwError::Decode(_) => Retry::of(None, None),
        CwError::Refused(_) => Retry::No,
    }
}

/// What ConnectWise's `Link` headers (RFC 8288, `<url>; rel="next", <url>; rel="last"`)
/// say about a next page: `Some(true)` when one is named, `Some(false)` when the answer
/// has `Link` but no `rel="next"` (this was the last page), `None` without `Link` (a
/// server or proxy that does not send it: the caller decides by the page's size).
pub fn next_link(headers: &HeaderMap) -> Option<bool> {
    let mut seen = false;
    for value in headers.get_all(reqwest::header::LINK) {
        seen = true;
        let Ok(value) = value.to_str() else {
            continue;
        };
        // A URL cannot hold `<` or `>`: what follows each `>` up to the next `<` is the
        // link's parameters.
        let named_next = value.split('<').any(|link| {
            link.split_once('>').is_some_and(|(_, params)| {
                params.split([';', ',']).any(|p| {
                    p.split_once('=').is_some_and(|(k, v)| {
                        k.trim().eq_ignore_ascii_case("rel")
                            && v.trim()
                                .trim_matches('"')
                                .split_whitespace()
                                .any(|r| r.eq_ignore_ascii_case("next"))
                    })
                })
            })
        });
        if named_next {
            return Some(true);
        }
    }
    seen.then_some(false)
}

/// Cloud sites (`na.myconnectwise.net`) serve the API on `api-na.myconnectwise.net`;
/// on-premise servers serve it on the site itself.
pub fn api_host(site: &str, info: &CompanyInfo) -> String {
    if let Some(region) = site.strip_suffix(".myconnectwise.net")
        && info.is_cloud != Some(false)
        && !region.contains('.')
        && !region.starts_with("api-")
    {
        return format!("api-{region}.myconnectwise.net");
    }
    site.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(cloud: bool) -> CompanyInfo {
        CompanyInfo {
            company_name: "Acme".into(),
            codebase: "v2025_1/".into(),
            version_code: "v2025.1".into(),
            company_id: "acme".into(),
            is_cloud: Some(cloud),
            site_url: String::new(),
        }
    }

    #[test]
    fn link_headers_name_a_next_page_or_not() {
        let h = |values: &[&str]| {
            let mut m = HeaderMap::new();
            for v in values {
                m.append(
                    reqwest::header::LINK,
                    reqwest::header::HeaderValue::from_str(v).unwrap(),
                );
            }
            m
        };
        assert_eq!(next_link(&h(&[])), None);
        let next = r#"<https://x/apis/3.0/company/companies?fields=id,name&page=2>; rel="next", <https://x/apis/3.0/company/companies?page=5>; rel="last""#;
        assert_eq!(next_link(&h(&[next])), Some(true));
        let last = r#"<https://x/company/companies?page=1>; rel="first", <https://x/company/companies?page=4&conditions=a,b>; rel="prev""#;
        assert_eq!(next_link(&h(&[last])), Some(false));
        assert_eq!(next_link(&h(&["<https://x/?p=2>; REL=next"])), Some(true));
        assert_eq!(
            next_link(&h(&[
                "<https://x/?p=5>; rel=\"last\"",
                "<https://x/?p=2>; rel=\"prev next\""
            ])),
            Some(true)
        );
        assert_eq!(
            next_link(&h(&["<https://x/?nextPage=2>; rel=\"last\""])),
            Some(false)
        );
    }

    #[test]
    fn api_hosts() {
        assert_eq!(
            api_host("na.myconnectwise.net", &info(true)),
            "api-na.myconnectwise.net"
        );
        assert_eq!(
            api_host("eu.myconnectwise.net", &info(true)),
            "api-eu.myconnectwise.net"
        );
        assert_eq!(
            api_host("api-na.myconnectwise.net", &info(true)),
            "api-na.myconnectwise.net"
        );
        assert_eq!(api_host("cw.acme.com", &info(false)), "cw.acme.com");
        let mut none = CompanyInfo {
            is_cloud: None,
            ..info(true)
        };
        assert_eq!(
            api_host("eu.myconnectwise.net", &none),
            "api-eu.myconnectwise.net"
        );
        none.is_cloud = Some(false);
        assert_eq!(
            api_host("eu.myconnectwise.net", &none),
            "eu.myconnectwise.net"
        );
        assert_eq!(urlencode("a b/c"), "a%20b%2Fc");
    }
}
