//! Autotask PSA (Datto/Kaseya), REST `ATServicesRest/V1.0`: companies, contacts,
//! resources (technicians), contact groups and picklists, tickets both ways and ticket
//! webhooks.

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

use self::client::{AutotaskClient, AutotaskConfig, AutotaskError};
use self::source::ContactTypes;
use crate::http::RetryPolicy;
use crate::{ConnectionTest, ProviderConfig};

/// Where an Autotask admin decides what the API user may read.
pub const PERMISSION_SETTING: &str = "Admin > Account Settings & Users > Resources/Users > (the API user) > Security Level: it must allow viewing Companies, Contacts, Resources and Tickets (a restricted level hides records without an error)";

/// (area key, label, entity, required)
const AREAS: [(&str, &str, &str, bool); 5] = [
    ("companies", "Companies", "Companies", true),
    ("contacts", "Contacts", "Contacts", true),
    ("technicians", "Resources (technicians)", "Resources", true),
    ("tickets", "Tickets", "Tickets", true),
    (
        "contact_groups",
        "Contact groups (contact types)",
        "ContactGroups",
        false,
    ),
];

const CREDENTIALS_HINT: &str = "Check the user name and secret of the API-only user (Admin > Account Settings & Users > Resources/Users, security level API User (system)) and its API tracking identifier (the same screen, Security > API Tracking Identifier).";

pub struct Autotask {
    config: Arc<ProviderConfig>,
}

impl Autotask {
    pub fn new(config: Arc<ProviderConfig>) -> Self {
        Self { config }
    }

    pub fn client_config(creds: &Credentials) -> AutotaskConfig {
        AutotaskConfig {
            username: creds.get("username").unwrap_or_default().trim().to_string(),
            secret: SecretString::new(creds.get("secret").unwrap_or_default()),
            integration_code: SecretString::new(creds.get("integration_code").unwrap_or_default()),
        }
    }

    /// Contact groups, or the user-defined field the admin named.
    pub fn contact_types(creds: &Credentials) -> ContactTypes {
        match creds
            .get("contact_type_field")
            .map(str::trim)
            .filter(|f| !f.is_empty())
        {
            Some(f) => ContactTypes::Udf(f.to_string()),
            None => ContactTypes::Groups,
        }
    }

    /// A client whose every request (zone discovery too) follows `retry`.
    pub async fn client(
        &self,
        creds: &Credentials,
        retry: RetryPolicy,
    ) -> Result<AutotaskClient, AutotaskError> {
        AutotaskClient::connect(
            Self::client_config(creds),
            &self.config.autotask,
            self.config.outbound,
            retry,
        )
        .await
    }

    /// [`client`](Self::client) with the zone shared for [`client::ZONE_TTL`] (ticket
    /// writers: outbox drains and webhook deliveries).
    pub async fn client_cached(
        &self,
        creds: &Credentials,
        retry: RetryPolicy,
    ) -> Result<AutotaskClient, AutotaskError> {
        AutotaskClient::connect_cached(
            Self::client_config(creds),
            &self.config.autotask,
            self.config.outbound,
            retry,
        )
        .await
    }
}

/// Turns a failure of zone discovery into what to do.
fn zone_failure(lookup: &str, e: AutotaskError) -> ConnectionOutcome {
    match e {
        AutotaskError::Zone { user, message } => ConnectionOutcome::Misconfigured {
            message: format!("Autotask has no API user named '{user}' in any zone: {message}"),
            fix_hint: "Enter the API user's user name exactly as Autotask shows it (an email address, e.g. abc123@acme.com).".into(),
        },
        AutotaskError::Unreachable { url, reason } => ConnectionOutcome::Unreachable {
            message: format!("Could not reach Autotask zone discovery at {url}: {reason}"),
            fix_hint: "Check that this server can reach webservices.autotask.net (DNS, firewall, proxy).".into(),
        },
        AutotaskError::Refused(message) => ConnectionOutcome::Misconfigured {
            message,
            fix_hint: "Autotask's zone discovery must name an *.autotask.net host.".into(),
        },
        AutotaskError::Decode(reason) => ConnectionOutcome::Misconfigured {
            message: format!("{lookup} did not answer like Autotask zone discovery: {reason}"),
            fix_hint: "Autotask may be changing its zones; test again later.".into(),
        },
        other => ConnectionOutcome::Unreachable {
            message: format!("Autotask zone discovery failed: {other}"),
            fix_hint: "Autotask may be busy or down; test again in a few minutes.".into(),
        },
    }
}

fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[async_trait]
impl ConnectionTest for Autotask {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Autotask
    }

    #[tracing::instrument(skip_all, fields(provider = "autotask"))]
    async fn test(&self, creds: &Credentials, now: DateTime<Utc>) -> TestReport {
        let report = |connection, areas, details| TestReport {
            connection,
            areas,
            tested_at: now,
            details,
        };
        let client = match self.client(creds, RetryPolicy::interactive()).await {
            Ok(c) => c,
            Err(e) => {
                return report(
                    zone_failure(&self.config.autotask.zone_lookup_url, e),
                    vec![],
                    vec![],
                );
            }
        };
        let mut details = Vec::new();
        if let Some(z) = &client.zone().zone_name {
            details.push(("Zone".to_string(), z.clone()));
        }
        details.push(("API".to_string(), client.api_base().to_string()));
        match client.threshold().await {
            Ok(t) => details.push((
                "API usage".to_string(),
                format!(
                    "{} of {} requests in the last {} minutes (shared by every integration of this Autotask database)",
                    grouped(t.current_timeframe_request_count),
                    grouped(t.external_request_threshold),
                    t.request_threshold_timeframe
                ),
            )),
            Err(e @ AutotaskError::Status { status: 401, .. }) => {
                return report(
                    ConnectionOutcome::AuthFailed {
                        message: format!(
                            "Autotask refused the API user's credentials: {}",
                            e.vendor_message()
                        ),
                        fix_hint: CREDENTIALS_HINT.into(),
                    },
                    vec![],
                    details,
                );
            }
            Err(AutotaskError::Unreachable { url, reason }) => {
                return report(
                    ConnectionOutcome::Unreachable {
                        message: format!("Could not reach the Autotask zone at {url}: {reason}"),
                        fix_hint: "Check that this server can reach *.autotask.net.".into(),
                    },
                    vec![],
                    details,
                );
            }
            Err(e) => details.push(("API usage".to_string(), format!("not readable: {e}"))),
        }
        let all = serde_json::json!([{ "op": "gt", "field": "id", "value": 0 }]);
        let mut areas = Vec::with_capacity(AREAS.len());
        for (key, label, entity, required) in AREAS {
            let outcome = match client.count(entity, &all).await {
                Ok(0) => AreaResult::GrantedNoData,
                Ok(_) => AreaResult::Granted,
                Err(e) if e.status() == Some(403) => AreaResult::NotPermitted {
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

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_are_grouped() {
        assert_eq!(super::grouped(10_000), "10,000");
        assert_eq!(super::grouped(124), "124");
        assert_eq!(super::grouped(1_234_567), "1,234,567");
    }
}
