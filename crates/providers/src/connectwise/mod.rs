//! ConnectWise Manage (ConnectWise PSA).

pub mod callbacks;
pub mod client;
pub mod conditions;
pub mod sandbox;
pub mod source;
pub mod tickets;
pub mod wire;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mspbridge_domain::SecretString;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::integration::{AreaCheck, AreaResult, ConnectionOutcome, TestReport};
use mspbridge_domain::validate::Credentials;

use self::client::{CwClient, CwConfig, CwError};
use crate::http::RetryPolicy;
use crate::{ConnectionTest, ProviderConfig};

/// A data area the sync needs, the endpoint that proves read access to it, and the
/// ConnectWise security-role setting that grants it.
pub struct Area {
    pub key: &'static str,
    pub label: &'static str,
    pub path: &'static str,
    pub setting: &'static str,
    pub required: bool,
}

pub const AREAS: [Area; 6] = [
    Area {
        key: "companies",
        label: "Companies",
        path: "/company/companies",
        setting: "System > Security Roles > Companies > Company Maintenance: Inquire Level All",
        required: true,
    },
    Area {
        key: "contacts",
        label: "Contacts",
        path: "/company/contacts",
        setting: "System > Security Roles > Companies > Contacts: Inquire Level All",
        required: true,
    },
    Area {
        key: "members",
        label: "Technicians (members)",
        path: "/system/members",
        setting: "System > Security Roles > System > Member Maintenance: Inquire Level All",
        required: true,
    },
    Area {
        key: "tickets",
        label: "Tickets",
        path: "/service/tickets",
        setting: "System > Security Roles > Service Desk > Service Tickets: Inquire Level All",
        required: true,
    },
    Area {
        key: "ticket_reference",
        label: "Ticket reference data (boards, statuses)",
        path: "/service/boards",
        setting: "System > Security Roles > System > Table Setup: Inquire Level All",
        required: true,
    },
    Area {
        key: "company_reference",
        label: "Company types and statuses",
        path: "/company/companies/statuses",
        setting: "System > Security Roles > System > Table Setup: Inquire Level All",
        required: false,
    },
];

pub struct ConnectWise {
    config: Arc<ProviderConfig>,
}

impl ConnectWise {
    pub fn new(config: Arc<ProviderConfig>) -> Self {
        Self { config }
    }

    /// Builds the client configuration from validated credentials.
    pub fn client_config(&self, creds: &Credentials) -> CwConfig {
        CwConfig {
            site: creds.get("site").unwrap_or_default().to_string(),
            company_id: creds.get("company_id").unwrap_or_default().to_string(),
            public_key: creds.get("public_key").unwrap_or_default().to_string(),
            private_key: SecretString::new(creds.get("private_key").unwrap_or_default()),
            client_id: creds
                .get("client_id")
                .map(str::to_string)
                .or_else(|| self.config.connectwise_client_id.clone()),
        }
    }
}

fn report(
    connection: ConnectionOutcome,
    areas: Vec<AreaCheck>,
    now: DateTime<Utc>,
    details: Vec<(String, String)>,
) -> TestReport {
    TestReport {
        connection,
        areas,
        tested_at: now,
        details,
    }
}

/// Turns a discovery failure into what the admin should do about it.
fn discovery_outcome(cfg: &CwConfig, e: CwError) -> ConnectionOutcome {
    match e {
        CwError::Refused(msg) => ConnectionOutcome::Misconfigured {
            message: msg,
            fix_hint: "Enter the public ConnectWise host, e.g. na.myconnectwise.net or your on-premise server's name.".into(),
        },
        CwError::Unreachable { reason, .. } => ConnectionOutcome::Unreachable {
            message: format!("Could not reach ConnectWise at {}: {reason}", cfg.site),
            fix_hint: "Check the API URL (host only, e.g. na.myconnectwise.net) and that this server can reach it (DNS, firewall, proxy).".into(),
        },
        CwError::Status { status: 404, .. } => ConnectionOutcome::Misconfigured {
            message: format!("ConnectWise at {} does not know the company ID '{}'", cfg.site, cfg.company_id),
            fix_hint: "Use the Company ID you type on the ConnectWise login screen, and check that the site is the one your company uses.".into(),
        },
        CwError::Status { status, .. } if status >= 500 => ConnectionOutcome::Unreachable {
            message: format!("ConnectWise at {} answered HTTP {status} while looking up the company", cfg.site),
            fix_hint: "ConnectWise may be down or under maintenance; test again in a few minutes.".into(),
        },
        other => ConnectionOutcome::Misconfigured {
            message: format!("{} did not answer like a ConnectWise server: {other}", cfg.site),
            fix_hint: "Check the API URL: it must be the ConnectWise site host, e.g. na.myconnectwise.net.".into(),
        },
    }
}

/// Whether a 401's message says the keys were refused (the sandbox answers "Invalid
/// authentication" / "Authentication required" for them and a bare "Unauthorized" for a
/// missing clientId; ConnectWise's own wording is [unverified]).
fn keys_refused(e: &CwError) -> bool {
    e.vendor_message()
        .to_ascii_lowercase()
        .contains("authentication")
}

fn auth_failure(cfg: &CwConfig, e: &CwError) -> ConnectionOutcome {
    if cfg.client_id.is_none() && !keys_refused(e) {
        return ConnectionOutcome::AuthFailed {
            message: format!(
                "ConnectWise refused the request because no clientId was sent ({})",
                e.vendor_message()
            ),
            fix_hint: "Register mspbridge at developer.connectwise.com and enter its Client ID on this form, or set MSPBRIDGE_CONNECTWISE_CLIENT_ID on the server.".into(),
        };
    }
    let mut fix_hint = String::from(
        "Check the Company ID and copy the public and private keys again from System > Members > API Members > API Keys (the private key is shown only once); make sure the API member has a security role.",
    );
    if cfg.client_id.is_none() {
        fix_hint.push_str(" No clientId was sent either: enter mspbridge's Client ID from developer.connectwise.com on this form, or set MSPBRIDGE_CONNECTWISE_CLIENT_ID on the server.");
    }
    ConnectionOutcome::AuthFailed {
        message: format!(
            "ConnectWise rejected the API keys of company '{}' (public key '{}'): HTTP 401, {}",
            cfg.company_id,
            cfg.public_key,
            e.vendor_message()
        ),
        fix_hint,
    }
}

#[async_trait]
impl ConnectionTest for ConnectWise {
    fn kind(&self) -> ProviderKind {
        ProviderKind::ConnectwiseManage
    }

    #[tracing::instrument(skip_all, fields(provider = "connectwise_manage"))]
    async fn test(&self, creds: &Credentials, now: DateTime<Utc>) -> TestReport {
        let cfg = self.client_config(creds);
        let client =
            match CwClient::connect(&cfg, self.config.outbound, RetryPolicy::interactive()).await {
                Ok(c) => c,
                Err(e) => return report(discovery_outcome(&cfg, e), vec![], now, vec![]),
            };
        let details = vec![
            (
                "Company".to_string(),
                Some(client.info.company_name.trim())
                    .filter(|n| !n.is_empty())
                    .unwrap_or(&cfg.company_id)
                    .to_string(),
            ),
            ("Codebase".to_string(), client.info.codebase.clone()),
            ("API".to_string(), client.base_url().to_string()),
        ];
        let mut areas = Vec::with_capacity(AREAS.len());
        for area in &AREAS {
            let query = [("pageSize", "1".to_string()), ("fields", "id".to_string())];
            let outcome = match client
                .get::<Vec<serde_json::Value>>(area.path, &query)
                .await
            {
                Ok((rows, _)) if rows.is_empty() => AreaResult::GrantedNoData,
                Ok(_) => AreaResult::Granted,
                Err(e) if e.status() == Some(401) => {
                    return report(auth_failure(&cfg, &e), vec![], now, details);
                }
                Err(e) if e.status() == Some(403) => AreaResult::NotPermitted {
                    setting: area.setting.to_string(),
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
        report(ConnectionOutcome::Ok, areas, now, details)
    }
}
