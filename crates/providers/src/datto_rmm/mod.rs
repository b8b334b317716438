//! Datto RMM (API v2): sites (mapped onto portal companies, with their Autotask company as
//! PSA identity), devices and open alerts read as an [`crate::rmm::RmmSource`], alerts
//! resolved through [`crate::rmm::AlertWriter`], and the connection test.
//!
//! Credentials: `platform` (pinotage, merlot, concord, vidal, zinfandel, syrah →
//! `https://{platform}-api.centrastage.net`), or the exact `api_url` the RMM shows beside
//! the keys (which wins), `api_key` and `api_secret`. `DattoSettings::api_base` replaces
//! both for labs and the sandbox.

pub mod client;
pub mod sandbox;
pub mod source;
pub mod wire;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mspbridge_domain::SecretString;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::integration::{AreaCheck, AreaResult, ConnectionOutcome, TestReport};
use mspbridge_domain::validate::Credentials;

use self::client::{DattoClient, DattoConfig, DattoError};
use self::source::{DattoAlertWriter, DattoSource, PERMISSION_SETTING};
use crate::http::RetryPolicy;
use crate::{ConnectionTest, ProviderConfig};

/// The data areas the sync reads and the request that proves the API user may read them.
const AREAS: [(&str, &str, &str); 3] = [
    ("sites", "Sites", "/api/v2/account/sites?max=1&page=0"),
    ("devices", "Devices", "/api/v2/account/devices?max=1&page=0"),
    (
        "alerts",
        "Open alerts",
        "/api/v2/account/alerts/open?max=1&page=0",
    ),
];

pub struct DattoRmm {
    config: Arc<ProviderConfig>,
}

impl DattoRmm {
    pub fn new(config: Arc<ProviderConfig>) -> Self {
        Self { config }
    }

    /// Where the integration's API lives: the settings' lab address, else the API URL the
    /// admin copied, else the platform's.
    pub fn client_config(&self, creds: &Credentials) -> DattoConfig {
        let platform = creds.get("platform").unwrap_or("merlot");
        let base = match (&self.config.datto_rmm.api_base, creds.get("api_url")) {
            (Some(lab), _) => lab.replace("{platform}", platform),
            (None, Some(url)) => url.to_string(),
            (None, None) => format!("https://{platform}-api.centrastage.net"),
        };
        DattoConfig {
            base,
            api_key: creds.get("api_key").unwrap_or_default().to_string(),
            api_secret: SecretString::new(creds.get("api_secret").unwrap_or_default()),
        }
    }

    /// A client whose every request (the token's too) follows `retry`.
    pub fn client(
        &self,
        creds: &Credentials,
        retry: RetryPolicy,
    ) -> Result<DattoClient, DattoError> {
        DattoClient::new(
            self.client_config(creds),
            &self.config.datto_rmm,
            self.config.outbound,
            retry,
        )
    }

    /// The sync source; `page_size` replaces the account's page size.
    pub fn source(
        &self,
        creds: &Credentials,
        retry: RetryPolicy,
        page_size: Option<usize>,
    ) -> Result<DattoSource, DattoError> {
        let src = DattoSource::new(self.client(creds, retry)?);
        Ok(match page_size {
            Some(n) => src.with_page_size(n),
            None => src,
        })
    }

    pub fn alert_writer(&self, creds: &Credentials) -> Result<DattoAlertWriter, DattoError> {
        Ok(DattoAlertWriter::new(
            self.client(creds, RetryPolicy::interactive())?,
        ))
    }
}

/// A failure before any area could be checked, in words an admin can act on.
fn connection_failure(base: &str, e: DattoError) -> ConnectionOutcome {
    match e {
        DattoError::Token { status: 404, .. } | DattoError::Status { status: 404, .. } => {
            ConnectionOutcome::Misconfigured {
                message: format!("{base} has no Datto RMM token endpoint (HTTP 404)"),
                fix_hint: "Pick the platform, or copy the API URL exactly as Setup > Users > (the API user) shows it next to the keys (https://<platform>-api.centrastage.net).".into(),
            }
        }
        DattoError::Token { error, message, .. } => ConnectionOutcome::AuthFailed {
            message: format!("Datto RMM refused the API key and secret ({error}: {message})"),
            fix_hint: "Copy the API key and secret key again (Setup > Users > (the API user) > Generate API Keys; the secret is shown once), check that Setup > Global Settings > Access Control > Enable API Access is on, and that the platform matches the API URL shown next to the keys.".into(),
        },
        DattoError::Status { status: 401, message, .. } => ConnectionOutcome::AuthFailed {
            message: format!("Datto RMM granted a token but refused it: {message}"),
            fix_hint: "Check that the API user is not disabled and that the platform matches the API URL shown next to the keys.".into(),
        },
        DattoError::Refused(message) => ConnectionOutcome::Misconfigured {
            message,
            fix_hint: "The API URL must be https://<platform>-api.centrastage.net.".into(),
        },
        DattoError::GrantFailed(reason) => ConnectionOutcome::Unreachable {
            message: format!("Datto RMM's token endpoint at {base} did not answer usably: {reason}"),
            fix_hint: "Datto RMM may be busy or down; test again in a few minutes, and check the platform if it persists.".into(),
        },
        DattoError::Unreachable { url, reason } => ConnectionOutcome::Unreachable {
            message: format!("Could not reach Datto RMM at {url}: {reason}"),
            fix_hint: "Check the platform and that this server can reach centrastage.net (DNS, firewall, proxy).".into(),
        },
        other => ConnectionOutcome::Unreachable {
            message: format!("Datto RMM could not be checked: {other}"),
            fix_hint: "Datto RMM may be busy or down; test again in a few minutes.".into(),
        },
    }
}

#[async_trait]
impl ConnectionTest for DattoRmm {
    fn kind(&self) -> ProviderKind {
        ProviderKind::DattoRmm
    }

    #[tracing::instrument(skip_all, fields(provider = "datto_rmm"))]
    async fn test(&self, creds: &Credentials, now: DateTime<Utc>) -> TestReport {
        let cfg = self.client_config(creds);
        let report = |connection, areas, details| TestReport {
            connection,
            areas,
            tested_at: now,
            details,
        };
        let client = match self.client(creds, RetryPolicy::interactive()) {
            Ok(c) => c,
            Err(e) => return report(connection_failure(&cfg.base, e), vec![], vec![]),
        };
        let details = vec![("API".to_string(), client.base_url().to_string())];
        let mut areas = Vec::with_capacity(AREAS.len());
        for (key, label, path) in AREAS {
            let outcome = match client.get::<serde_json::Value>(path, label).await {
                Ok(v) => {
                    let empty = ["sites", "devices", "alerts"].iter().any(|k| {
                        v.get(*k)
                            .and_then(|a| a.as_array())
                            .is_some_and(|a| a.is_empty())
                    });
                    if empty {
                        AreaResult::GrantedNoData
                    } else {
                        AreaResult::Granted
                    }
                }
                Err(
                    e @ (DattoError::Token { .. }
                    | DattoError::Refused(_)
                    | DattoError::Unreachable { .. }
                    | DattoError::GrantFailed(_)
                    | DattoError::Status { status: 401, .. }),
                ) if areas.is_empty() => {
                    return report(connection_failure(&cfg.base, e), vec![], details);
                }
                Err(e @ DattoError::Forbidden { .. }) => AreaResult::NotPermitted {
                    setting: format!(
                        "{PERMISSION_SETTING}. If the API user may see {label}, Datto may have blocked this IP for a while after too many requests: test again in a few minutes."
                    ),
                    vendor_message: format!(
                        "The API user's security level does not allow {} ({})",
                        label.to_lowercase(),
                        e.vendor_message()
                    ),
                },
                Err(e) => AreaResult::CouldNotVerify {
                    reason: e.to_string(),
                },
            };
            areas.push(AreaCheck {
                area: key.into(),
                label: label.into(),
                required: true,
                outcome,
            });
        }
        let mut details = details;
        details.extend(account_details(&client).await);
        report(ConnectionOutcome::Ok, areas, details)
    }
}

/// The account the keys belong to (`GET /v2/account`), for the Test's report: its name and
/// uid, its devices (online / offline) and device limit. Nothing when it cannot be read
/// (the areas above say why).
async fn account_details(client: &DattoClient) -> Vec<(String, String)> {
    let Ok(a) = client
        .get::<serde_json::Value>("/api/v2/account", "the account")
        .await
    else {
        return vec![];
    };
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let mut out = Vec::new();
    if let Some(name) = text(&a["name"]) {
        let uid = text(&a["uid"])
            .map(|u| format!(" ({u})"))
            .unwrap_or_default();
        out.push(("Account".to_string(), format!("{name}{uid}")));
    }
    let st = &a["devicesStatus"];
    if let Some(n) = text(&st["numberOfDevices"]) {
        let online = text(&st["numberOfOnlineDevices"]).unwrap_or_else(|| "?".into());
        let offline = text(&st["numberOfOfflineDevices"]).unwrap_or_else(|| "?".into());
        out.push((
            "Devices".to_string(),
            format!("{n} ({online} online, {offline} offline)"),
        ));
    }
    if let Some(limit) = text(&a["descriptor"]["deviceLimit"]) {
        out.push(("Device limit".to_string(), limit));
    }
    out
}
