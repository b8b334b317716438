//! ConnectWise callbacks (webhooks): the body ConnectWise posts, and its verification.
//!
//! The body names the record (`Type`, `ID`, `Action`), the ConnectWise company id of the
//! site (`CompanyId`) and `Metadata.key_url`, where the signing key is read. The header
//! `x-content-signature` is `base64(HMAC-SHA256(key = SHA-256(signing_key), message =
//! raw body))`. `key_url` comes from the request itself, so before it is fetched its host
//! must be the integration's own ConnectWise site (an attacker would otherwise choose the
//! key). A callback is only a hint: the record is read again from the API.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::OutboundPolicy;

pub const SIGNATURE_HEADER: &str = "x-content-signature";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackMetadata {
    pub key_url: String,
}

/// The fields of a callback body mspbridge reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Callback {
    /// `added`, `updated` or `deleted`.
    pub action: String,
    /// `ticket`, `company`, `contact`, …
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "ID")]
    pub id: i64,
    /// The ConnectWise company id of the site (the login company, not a client).
    #[serde(default)]
    pub company_id: Option<String>,
    #[serde(default)]
    pub member_id: Option<String>,
    /// The record as a JSON string (not trusted: the record is read again).
    #[serde(default)]
    pub entity: Option<String>,
    pub metadata: CallbackMetadata,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("the callback body could not be read: {0}")]
    Body(String),
    #[error("no {SIGNATURE_HEADER} header")]
    NoSignature,
    #[error("the callback is for ConnectWise company '{got}', not this integration's '{want}'")]
    OtherSite { got: String, want: String },
    #[error("key_url {0} is not on this integration's ConnectWise site")]
    ForeignKeyUrl(String),
    #[error("the signing key could not be read from ConnectWise: {0}")]
    Key(String),
    #[error("the signature does not match the body")]
    Forged,
}

/// The signature ConnectWise sends for `body` with `signing_key`.
pub fn sign(signing_key: &str, body: &[u8]) -> String {
    let key = Sha256::digest(signing_key.as_bytes());
    match <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&key) {
        Ok(mut mac) => {
            mac.update(body);
            STANDARD.encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// Whether `signature` is the signature of `body` (compared in constant time).
pub fn signature_matches(signing_key: &str, body: &[u8], signature: &str) -> bool {
    let Ok(given) = STANDARD.decode(signature.trim()) else {
        return false;
    };
    let key = Sha256::digest(signing_key.as_bytes());
    match <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&key) {
        Ok(mut mac) => {
            mac.update(body);
            mac.verify_slice(&given).is_ok()
        }
        Err(_) => false,
    }
}

pub fn parse(body: &[u8]) -> Result<Callback, CallbackError> {
    serde_json::from_slice(body).map_err(|e| CallbackError::Body(e.to_string()))
}

/// `key_url` if it is on `site` (host and port, case-insensitive) with the scheme the
/// outbound policy uses for that site.
pub fn check_key_url(
    key_url: &str,
    site: &str,
    policy: &OutboundPolicy,
) -> Result<reqwest::Url, CallbackError> {
    let foreign = || CallbackError::ForeignKeyUrl(key_url.to_string());
    let url = reqwest::Url::parse(key_url).map_err(|_| foreign())?;
    let host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => return Err(foreign()),
    };
    if !host.eq_ignore_ascii_case(site)
        || url.scheme() != policy.scheme_for(site)
        || !url.username().is_empty()
        || policy.check_host(site).is_err()
    {
        return Err(foreign());
    }
    Ok(url)
}

/// Verifies a callback for the integration on `site` with ConnectWise company
/// `company_id`: the site named in the body, the key URL's host, then the signature
/// with the key read from it.
pub async fn verify(
    body: &[u8],
    signature: Option<&str>,
    site: &str,
    company_id: &str,
    policy: &OutboundPolicy,
) -> Result<Callback, CallbackError> {
    let signature = signature.ok_or(CallbackError::NoSignature)?;
    let cb = parse(body)?;
    if let Some(got) = &cb.company_id
        && !got.eq_ignore_ascii_case(company_id)
    {
        return Err(CallbackError::OtherSite {
            got: got.clone(),
            want: company_id.to_string(),
        });
    }
    let url = check_key_url(&cb.metadata.key_url, site, policy)?;
    #[derive(Deserialize)]
    struct Key {
        signing_key: String,
    }
    let key: Key = policy
        .client(Duration::from_secs(10))
        .get(url)
        .send()
        .await
        .map_err(|e| CallbackError::Key(e.to_string()))?
        .error_for_status()
        .map_err(|e| CallbackError::Key(e.to_string()))?
        .json()
        .await
        .map_err(|e| CallbackError::Key(e.to_string()))?;
    if !signature_matches(&key.signing_key, body, signature) {
        return Err(CallbackError::Forged);
    }
    Ok(cb)
}

/// Registers (once) a Ticket callback to `url` with `/system/callbacks`: an entry with this
/// URL already there is kept; else one is created, self-suppressed so mspbridge's own writes
/// do not call back. Returns the callback's id.
pub async fn register(
    client: &super::client::CwClient,
    url: &str,
) -> Result<i64, super::client::CwError> {
    let path = "/system/callbacks";
    let query = [
        (
            "conditions",
            format!("url=\"{}\"", url.replace('"', "\\\"")),
        ),
        ("pageSize", "100".to_string()),
    ];
    let (existing, _) = client
        .get::<Vec<super::wire::CallbackEntry>>(path, &query)
        .await?;
    if let Some(cb) = existing
        .iter()
        .find(|c| c.kind.eq_ignore_ascii_case("ticket") && !c.inactive_flag)
    {
        return Ok(cb.id);
    }
    let entry = super::wire::CallbackEntry {
        id: 0,
        description: "mspbridge ticket sync".into(),
        url: url.to_string(),
        object_id: 0,
        kind: "Ticket".into(),
        level: "Owner".into(),
        inactive_flag: false,
        is_self_suppressed_flag: true,
    };
    let body =
        serde_json::to_value(&entry).map_err(|e| super::client::CwError::Decode(e.to_string()))?;
    let created: super::wire::CallbackEntry =
        client.send(reqwest::Method::POST, path, &body).await?;
    Ok(created.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_only_their_body_and_key() {
        let body =
            br#"{"Action":"updated","Type":"ticket","ID":5,"Metadata":{"key_url":"https://x/k"}}"#;
        let sig = sign("k1", body);
        assert!(signature_matches("k1", body, &sig));
        assert!(!signature_matches("k2", body, &sig));
        assert!(!signature_matches("k1", b"{}", &sig));
        assert!(!signature_matches("k1", body, "not base64!"));
    }

    #[test]
    fn the_key_url_must_be_on_the_integrations_site() {
        let strict = OutboundPolicy {
            allow_private: false,
        };
        assert!(check_key_url("https://cw.example.com/k/1", "cw.example.com", &strict).is_ok());
        assert!(check_key_url("https://CW.example.com/k/1", "cw.example.com", &strict).is_ok());
        for bad in [
            "https://evil.example/k",
            "http://cw.example.com/k",
            "https://cw.example.com.evil.example/k",
            "https://user@cw.example.com/k",
            "not a url",
        ] {
            assert!(
                check_key_url(bad, "cw.example.com", &strict).is_err(),
                "{bad}"
            );
        }
    }
}
