//! ConnectWise Asio (platform API 2.2.8): companies (mapped onto portal companies, with
//! the PSA company their `externalIds` name as identity) and endpoints read as an
//! [`crate::rmm::RmmSource`], and the connection test, one area per scope. Asio 2.2.8 has
//! no open-alerts list: its alerts surface as service tickets, so the open tickets are the
//! source's alerts where the key may read tickets; one device can be read alone (detail,
//! heartbeat, patch summary).
//!
//! Credentials: `environment` (na, eu, au → the environment's API address, see
//! [`client::ENVIRONMENTS`]), `client_id` (its prefix names the environment: 0e30 NA, 0e31
//! EU, 0e32 AU, checked by the validation) and `client_secret`.
//! `AsioSettings::api_base` replaces the address for labs and the sandbox.

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
use reqwest::Method;

use self::client::{AsioClient, AsioConfig, AsioError, ENVIRONMENTS, ops};
use self::source::{AsioSource, COMPANIES_PATH, ENDPOINTS_PATH, SITES_PATH};
use crate::http::RetryPolicy;
use crate::{ConnectionTest, ProviderConfig};

/// (area, label, scope, required, Asio's name for the scope)
const AREAS: [(&str, &str, &str, bool, &str); 4] = [
    (
        "companies",
        "Companies",
        "platform.companies.read",
        true,
        "Platform - Companies - Read",
    ),
    (
        "sites",
        "Sites",
        "platform.sites.read",
        true,
        "Platform - Sites - Read",
    ),
    (
        "devices",
        "Devices",
        "platform.devices.read",
        true,
        "Platform - Devices - Read",
    ),
    (
        "tickets",
        "Tickets",
        "platform.tickets.read",
        false,
        "Platform - Tickets - Read",
    ),
];

pub struct ConnectwiseAsio {
    config: Arc<ProviderConfig>,
}

impl ConnectwiseAsio {
    pub fn new(config: Arc<ProviderConfig>) -> Self {
        Self { config }
    }

    /// The settings' lab address, else the environment's.
    pub fn client_config(&self, creds: &Credentials) -> AsioConfig {
        let env = creds.get("environment").unwrap_or("na");
        let base = match &self.config.connectwise_asio.api_base {
            Some(lab) => lab.replace("{environment}", env),
            None => ENVIRONMENTS
                .iter()
                .find(|(e, _, _)| *e == env)
                .map_or(ENVIRONMENTS[0].2, |(_, _, b)| b)
                .to_string(),
        };
        AsioConfig {
            base,
            client_id: creds.get("client_id").unwrap_or_default().to_string(),
            client_secret: SecretString::new(creds.get("client_secret").unwrap_or_default()),
        }
    }

    pub fn client(&self, creds: &Credentials, retry: RetryPolicy) -> Result<AsioClient, AsioError> {
        AsioClient::new(
            self.client_config(creds),
            &self.config.connectwise_asio,
            self.config.outbound,
            retry,
        )
    }

    /// The sync source; `page_size` replaces Asio's 500 endpoints per page.
    pub fn source(
        &self,
        creds: &Credentials,
        retry: RetryPolicy,
        page_size: Option<usize>,
    ) -> Result<AsioSource, AsioError> {
        let src = AsioSource::new(self.client(creds, retry)?);
        Ok(match page_size {
            Some(n) => src.with_page_size(n),
            None => src,
        })
    }
}

fn connection_failure(base: &str, e: AsioError) -> ConnectionOutcome {
    match e {
        AsioError::Token { status: 404, .. } | AsioError::Status { status: 404, .. } => {
            ConnectionOutcome::Misconfigured {
                message: format!("{base} has no ConnectWise Asio token endpoint (HTTP 404)"),
                fix_hint: "Pick the environment your Asio partner account is in (NA, EU or AU).".into(),
            }
        }
        AsioError::Token { message, .. } => ConnectionOutcome::AuthFailed {
            message: format!("ConnectWise Asio refused the client ID and secret: {message}"),
            fix_hint: "Copy the client ID and secret again from Asio (Integrations > API Access > Generate API Access; the secret is shown once) and check that the environment matches the client ID.".into(),
        },
        AsioError::Status { status: 401, message, .. } => ConnectionOutcome::AuthFailed {
            message: format!("ConnectWise Asio granted a token but refused it: {message}"),
            fix_hint: "Check that the API access is not revoked in Asio and that the environment matches the client ID.".into(),
        },
        AsioError::Refused(message) => ConnectionOutcome::Misconfigured {
            message,
            fix_hint: "The API address must be the environment's https:// address.".into(),
        },
        AsioError::GrantFailed(reason) => ConnectionOutcome::Unreachable {
            message: format!("ConnectWise Asio's token endpoint at {base} did not answer usably: {reason}"),
            fix_hint: "ConnectWise Asio may be busy or down; test again in a few minutes.".into(),
        },
        AsioError::Unreachable { url, reason } => ConnectionOutcome::Unreachable {
            message: format!("Could not reach ConnectWise Asio at {url}: {reason}"),
            fix_hint: "Check the environment and that this server can reach the Asio API (DNS, firewall, proxy).".into(),
        },
        other => ConnectionOutcome::Unreachable {
            message: format!("ConnectWise Asio could not be checked: {other}"),
            fix_hint: "ConnectWise Asio may be busy or down; test again in a few minutes.".into(),
        },
    }
}

#[async_trait]
impl ConnectionTest for ConnectwiseAsio {
    fn kind(&self) -> ProviderKind {
        ProviderKind::ConnectwiseAsio
    }

    #[tracing::instrument(skip_all, fields(provider = "connectwise_asio"))]
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
        let granted = match client.granted_scopes().await {
            Ok(g) => g,
            Err(e) => return report(connection_failure(&cfg.base, e), vec![], vec![]),
        };
        let details = vec![
            ("API".to_string(), client.base_url().to_string()),
            ("Scopes granted".to_string(), granted.join(" ")),
        ];
        let mut first_company: Option<String> = None;
        let mut areas = Vec::with_capacity(AREAS.len());
        for (key, label, scope, required, scope_name) in AREAS {
            let outcome = if !granted.iter().any(|g| g == scope) {
                AreaResult::NotPermitted {
                    setting: format!(
                        "Asio: Integrations > API Access > (this key) > Scopes: {scope_name}"
                    ),
                    vendor_message: format!("The API key was not granted {scope}"),
                }
            } else {
                let checked: Result<bool, AsioError> = match key {
                    "companies" => client
                        .get::<serde_json::Value>(COMPANIES_PATH, label, ops::COMPANIES)
                        .await
                        .map(|v| {
                            first_company = v
                                .as_array()
                                .and_then(|a| a.first())
                                .and_then(|c| c.get("id"))
                                .and_then(|i| i.as_str())
                                .map(str::to_string);
                            v.as_array().is_some_and(|a| !a.is_empty())
                        }),
                    "sites" => client
                        .get::<serde_json::Value>(SITES_PATH, label, ops::SITES)
                        .await
                        .map(|v| v.as_array().is_some_and(|a| !a.is_empty())),
                    "devices" => match &first_company {
                        None => Ok(false),
                        Some(c) => client
                            .send::<serde_json::Value>(
                                Method::POST,
                                &format!("{ENDPOINTS_PATH}?limit=1&cursor=0&field=endpointID"),
                                Some(&serde_json::json!({"resourceType": "company", "resources": [c]})),
                                label,
                                Some(ops::ENDPOINTS),
                            )
                            .await
                            .map(|a| {
                                ["platform", "network", "cloud"].iter().any(|k| {
                                    a.body[*k].as_array().is_some_and(|g| !g.is_empty())
                                })
                            }),
                    },
                    // Not read by the sync: the scope is enough.
                    _ => Ok(true),
                };
                match checked {
                    Ok(true) => AreaResult::Granted,
                    Ok(false) => AreaResult::GrantedNoData,
                    Err(e @ AsioError::Forbidden { .. }) => AreaResult::NotPermitted {
                        setting: format!(
                            "Asio: Integrations > API Access > (this key) > Scopes: {scope_name}"
                        ),
                        vendor_message: e.vendor_message(),
                    },
                    Err(
                        e @ (AsioError::Token { .. }
                        | AsioError::Refused(_)
                        | AsioError::Unreachable { .. }
                        | AsioError::GrantFailed(_)
                        | AsioError::Status { status: 401, .. }),
                    ) if areas.is_empty() => {
                        return report(connection_failure(&cfg.base, e), vec![], details);
                    }
                    Err(e) => AreaResult::CouldNotVerify {
                        reason: e.to_string(),
                    },
                }
            };
            areas.push(AreaCheck {
                area: key.into(),
                label: label.into(),
                required,
                outcome,
            });
        }
        report(ConnectionOutcome::Ok, areas, details)
    }
}
