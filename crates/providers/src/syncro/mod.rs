//! Syncro (SyncroMSP): customers, contacts, technicians, tickets both ways and
//! notifications.

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

use self::client::{SyncroClient, SyncroError};
use crate::http::RetryPolicy;
use crate::{ConnectionTest, ProviderConfig};

/// Where a Syncro admin grants what the API token may read.
pub const PERMISSION_SETTING: &str = "Admin > API > API Tokens > (the token) > permissions: Customers, Contacts, Users and Tickets (List/Search, View Details)";

const AREAS: [(&str, &str, &str, bool); 4] = [
    ("companies", "Customers", "/customers", true),
    ("contacts", "Contacts", "/contacts", true),
    ("technicians", "Technicians (users)", "/users", true),
    ("tickets", "Tickets", "/tickets", true),
];

pub struct Syncro {
    config: Arc<ProviderConfig>,
}

impl Syncro {
    pub fn new(config: Arc<ProviderConfig>) -> Self {
        Self { config }
    }

    pub fn client(
        &self,
        creds: &Credentials,
        retry: RetryPolicy,
    ) -> Result<SyncroClient, SyncroError> {
        SyncroClient::new(
            creds.get("subdomain").unwrap_or_default(),
            SecretString::new(creds.get("api_token").unwrap_or_default()),
            &self.config.syncro,
            self.config.outbound,
            retry.timeout,
        )
        .map(|c| c.with_retry(retry))
    }
}

#[async_trait]
impl ConnectionTest for Syncro {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Syncro
    }

    #[tracing::instrument(skip_all, fields(provider = "syncro"))]
    async fn test(&self, creds: &Credentials, now: DateTime<Utc>) -> TestReport {
        let subdomain = creds.get("subdomain").unwrap_or_default().to_string();
        let report = |connection, areas, details| TestReport {
            connection,
            areas,
            tested_at: now,
            details,
        };
        let client = match self.client(creds, RetryPolicy::interactive()) {
            Ok(c) => c,
            Err(e) => {
                return report(
                    ConnectionOutcome::Misconfigured {
                        message: e.to_string(),
                        fix_hint: "Enter only the subdomain, the part before .syncromsp.com."
                            .into(),
                    },
                    vec![],
                    vec![],
                );
            }
        };
        let details = vec![("API".to_string(), client.base_url().to_string())];
        let me: Result<wire::Me, _> = client.get("/me", &[]).await;
        if let Err(e) = me {
            let outcome = match e {
                SyncroError::Status { status: 401, .. } => ConnectionOutcome::AuthFailed {
                    message: format!("Syncro refused the API token: {}", e.vendor_message()),
                    fix_hint: "Copy the token again from Admin > API > API Tokens (it is shown once), and check it was not revoked.".into(),
                },
                SyncroError::Status { status: 404, .. } => ConnectionOutcome::Misconfigured {
                    message: format!("Syncro has no account at the subdomain '{subdomain}'"),
                    fix_hint: "Use the subdomain you sign in with: acme for acme.syncromsp.com.".into(),
                },
                SyncroError::Unreachable { url, reason } => ConnectionOutcome::Unreachable {
                    message: format!("Could not reach Syncro at {url}: {reason}"),
                    fix_hint: "Check the subdomain and that this server can reach syncromsp.com (DNS, firewall, proxy).".into(),
                },
                other => ConnectionOutcome::Unreachable {
                    message: format!("Syncro could not be checked: {other}"),
                    fix_hint: "Syncro may be busy or down; test again in a few minutes.".into(),
                },
            };
            return report(outcome, vec![], details);
        }
        let mut areas = Vec::with_capacity(AREAS.len());
        for (key, label, path, required) in AREAS {
            let outcome = match client.get::<serde_json::Value>(path, &[]).await {
                Ok(v) => {
                    let empty = v
                        .get("meta")
                        .and_then(|m| m.get("total_entries"))
                        .and_then(|n| n.as_u64())
                        == Some(0)
                        || v.get("users")
                            .and_then(|u| u.as_array())
                            .is_some_and(|u| u.is_empty());
                    if empty {
                        AreaResult::GrantedNoData
                    } else {
                        AreaResult::Granted
                    }
                }
                Err(e) if e.is_permission() => AreaResult::NotPermitted {
                    setting: PERMISSION_SETTING.to_string(),
                    vendor_message: e.vendor_message(),
                },
                Err(e) => AreaResult::CouldNotVerify {
                    reason: e.to_string(),
                },
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
