//! Halo PSA (HaloPSA / HaloITSM): OAuth2 client credentials, clients, users and agents.

pub mod client;
pub mod sandbox;
pub mod source;
pub mod tickets;
pub mod webhooks;
pub mod wire;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mspbridge_domain::SecretString;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::integration::{AreaCheck, AreaResult, ConnectionOutcome, TestReport};
use mspbridge_domain::validate::Credentials;

use self::client::{HaloClient, HaloConfig, HaloError};
use crate::http::RetryPolicy;
use crate::{ConnectionTest, ProviderConfig};

/// Where a Halo admin grants what the API application may read.
pub const PERMISSION_SETTING: &str = "Configuration > Integrations > Halo API > (the API application) > Permissions, and the permissions of the agent it logs in as";

/// A data area the sync needs and the request that proves read access to it.
struct Area {
    key: &'static str,
    label: &'static str,
    path: &'static str,
    query: &'static [(&'static str, &'static str)],
    required: bool,
}

const PAGE_OF_ONE: &[(&str, &str)] = &[("pageinate", "true"), ("page_size", "1"), ("page_no", "1")];

const AREAS: [Area; 5] = [
    Area {
        key: "companies",
        label: "Clients",
        path: "/Client",
        query: PAGE_OF_ONE,
        required: true,
    },
    Area {
        key: "contacts",
        label: "Users (contacts)",
        path: "/Users",
        query: PAGE_OF_ONE,
        required: true,
    },
    Area {
        key: "technicians",
        label: "Agents (technicians)",
        path: "/Agent",
        query: &[],
        required: true,
    },
    Area {
        key: "tickets",
        label: "Tickets",
        path: "/Tickets",
        query: PAGE_OF_ONE,
        required: true,
    },
    Area {
        key: "user_roles",
        label: "User roles (contact types)",
        path: "/UserRoles",
        query: &[],
        required: false,
    },
];

pub struct Halo {
    config: Arc<ProviderConfig>,
}

impl Halo {
    pub fn new(config: Arc<ProviderConfig>) -> Self {
        Self { config }
    }

    pub fn client_config(creds: &Credentials) -> HaloConfig {
        HaloConfig {
            auth_url: creds.get("auth_server_url").unwrap_or_default().to_string(),
            resource_url: creds
                .get("resource_server_url")
                .unwrap_or_default()
                .to_string(),
            tenant: creds
                .get("tenant")
                .filter(|t| !t.is_empty())
                .map(str::to_string),
            client_id: creds.get("client_id").unwrap_or_default().to_string(),
            client_secret: SecretString::new(creds.get("client_secret").unwrap_or_default()),
        }
    }

    /// A client whose every request (the token's too) follows `retry`.
    pub fn client(&self, creds: &Credentials, retry: RetryPolicy) -> Result<HaloClient, HaloError> {
        HaloClient::new(
            Self::client_config(creds),
            self.config.outbound,
            self.config.halo_limits,
            retry.timeout,
        )
        .map(|c| c.with_retry(retry))
    }
}

/// Turns a failure before any data was read (the token request) into what to do.
fn connection_failure(cfg: &HaloConfig, e: HaloError) -> ConnectionOutcome {
    match e {
        HaloError::Refused(message) => ConnectionOutcome::Misconfigured {
            message,
            fix_hint: "Enter the public https:// URLs shown under Configuration > Integrations > Halo API.".into(),
        },
        HaloError::Unreachable { url, reason } => {
            // The token request goes to the authorisation server; everything else to the
            // resource server: name the one that failed, and a slow one as slow.
            let which = if url.split('?').next().unwrap_or(&url).ends_with("/token") {
                "Authorisation server"
            } else {
                "Resource server"
            };
            let fix_hint = if reason.contains("timed out") {
                format!("Halo's {which} did not answer in time; it may be busy. Test again in a few minutes, and check the {which} URL if it persists.")
            } else {
                format!("Check the {which} URL and that this server can reach it (DNS, firewall, proxy).")
            };
            ConnectionOutcome::Unreachable {
                message: format!("Could not reach Halo's {which} at {url}: {reason}"),
                fix_hint,
            }
        }
        HaloError::Token { status: 404, .. } | HaloError::Status { status: 404, .. } => {
            ConnectionOutcome::Misconfigured {
                message: format!("{} has no Halo token endpoint (HTTP 404)", cfg.auth_url),
                fix_hint: "Copy the Authorisation server URL exactly as Configuration > Integrations > Halo API shows it (usually https://<tenant>.halopsa.com/auth).".into(),
            }
        }
        HaloError::Token { message, .. } => ConnectionOutcome::AuthFailed {
            message: format!("Halo refused the API application's credentials: {message}"),
            fix_hint: "Check the Client ID and Secret of the API application (authentication method 'Client ID and Secret (Services)'), and the Tenant for Halo-hosted instances.".into(),
        },
        HaloError::Status { status, message, .. } => ConnectionOutcome::Unreachable {
            message: format!("Halo's authorisation server answered HTTP {status}: {message}"),
            fix_hint: "Halo may be busy or down; test again in a few minutes.".into(),
        },
        HaloError::Decode(reason) => ConnectionOutcome::Misconfigured {
            message: format!("{} did not answer like a Halo authorisation server: {reason}", cfg.auth_url),
            fix_hint: "Check the Authorisation server URL (it ends in /auth).".into(),
        },
    }
}

#[async_trait]
impl ConnectionTest for Halo {
    fn kind(&self) -> ProviderKind {
        ProviderKind::HaloPsa
    }

    #[tracing::instrument(skip_all, fields(provider = "halo_psa"))]
    async fn test(&self, creds: &Credentials, now: DateTime<Utc>) -> TestReport {
        let cfg = Self::client_config(creds);
        let report = |connection, areas, details| TestReport {
            connection,
            areas,
            tested_at: now,
            details,
        };
        let client = match self.client(creds, RetryPolicy::interactive()) {
            Ok(c) => c,
            Err(e) => return report(connection_failure(&cfg, e), vec![], vec![]),
        };
        let mut details = vec![("API".to_string(), client.api_base().to_string())];
        if let Some(t) = &cfg.tenant {
            details.push(("Tenant".to_string(), t.clone()));
        }
        let mut areas = Vec::with_capacity(AREAS.len());
        for area in &AREAS {
            let query: Vec<(&str, String)> = area
                .query
                .iter()
                .map(|(k, v)| (*k, v.to_string()))
                .collect();
            let outcome = match client.get::<serde_json::Value>(area.path, &query).await {
                Ok(v) => {
                    let empty = match &v {
                        serde_json::Value::Array(a) => a.is_empty(),
                        serde_json::Value::Object(m) => {
                            m.get("record_count").and_then(|c| c.as_u64()) == Some(0)
                        }
                        _ => false,
                    };
                    if empty {
                        AreaResult::GrantedNoData
                    } else {
                        AreaResult::Granted
                    }
                }
                Err(e @ (HaloError::Token { .. } | HaloError::Refused(_)))
                | Err(e @ HaloError::Unreachable { .. })
                    if areas.is_empty() =>
                {
                    return report(connection_failure(&cfg, e), vec![], details);
                }
                Err(e) if e.status() == Some(401) => {
                    return report(
                        ConnectionOutcome::AuthFailed {
                            message: format!("Halo accepted the credentials but refused the token: {}", e.vendor_message()),
                            fix_hint: "Check that the Resource server URL belongs to the same Halo instance as the Authorisation server URL.".into(),
                        },
                        vec![],
                        details,
                    );
                }
                Err(e) if e.status() == Some(403) => AreaResult::NotPermitted {
                    setting: PERMISSION_SETTING.to_string(),
                    vendor_message: e.vendor_message(),
                },
                Err(e) => AreaResult::CouldNotVerify {
                    reason: e.to_string(),
                },
            };
            areas.push(AreaCheck {
                area: area.key.into(),
                label: area.label.into(),
                required: area.required,
                outcome,
            });
        }
        report(ConnectionOutcome::Ok, areas, details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_resource_server_is_not_blamed_on_the_authorisation_server() {
        let cfg = HaloConfig {
            auth_url: "https://acme.halopsa.com/auth".into(),
            resource_url: "https://acme.halopsa.com/api".into(),
            tenant: None,
            client_id: "id".into(),
            client_secret: SecretString::new("s"),
        };
        let slow = connection_failure(
            &cfg,
            HaloError::Unreachable {
                url: "https://acme.halopsa.com/api/Client".into(),
                reason: "the request timed out".into(),
            },
        );
        let ConnectionOutcome::Unreachable { message, fix_hint } = slow else {
            panic!("{slow:?}")
        };
        assert!(message.contains("Resource server"), "{message}");
        assert!(fix_hint.contains("did not answer in time"), "{fix_hint}");
        assert!(!fix_hint.contains("Authorisation"), "{fix_hint}");
        let token = connection_failure(
            &cfg,
            HaloError::Unreachable {
                url: "https://acme.halopsa.com/auth/token?tenant=acme".into(),
                reason: "the connection failed: refused".into(),
            },
        );
        assert!(
            format!("{token:?}").contains("Authorisation server"),
            "{token:?}"
        );
    }
}
