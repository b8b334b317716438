//! Integrations (one connection of a tenant to a provider), their lifecycle status
//! and the result of a connection test.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalogue::ProviderKind;
use crate::{IntegrationId, TenantId};

/// Spec 2.2 [v1] statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum IntegrationStatus {
    /// Credentials stored and the last test or sync succeeded.
    Connected,
    /// No credentials stored (never connected, or disconnected by an admin).
    Disconnected,
    /// Needs attention: see `last_error` and `fix_hint`.
    Error,
    /// A sync is running now.
    Syncing,
}

impl IntegrationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            IntegrationStatus::Connected => "connected",
            IntegrationStatus::Disconnected => "disconnected",
            IntegrationStatus::Error => "error",
            IntegrationStatus::Syncing => "syncing",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Connected,
            Self::Disconnected,
            Self::Error,
            Self::Syncing,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }

    pub fn label(self) -> &'static str {
        match self {
            IntegrationStatus::Connected => "Connected",
            IntegrationStatus::Disconnected => "Disconnected",
            IntegrationStatus::Error => "Error",
            IntegrationStatus::Syncing => "Syncing",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Integration {
    pub id: IntegrationId,
    pub tenant_id: TenantId,
    pub provider: ProviderKind,
    /// The admin's nickname, or `None` for the provider's default name.
    pub nickname: Option<String>,
    pub status: IntegrationStatus,
    pub last_error: Option<String>,
    pub fix_hint: Option<String>,
    /// Non-secret connection settings (site, company id, ...). Secrets are stored apart, encrypted.
    pub settings: serde_json::Value,
    pub last_test: Option<TestReport>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Integration {
    pub fn display_name(&self) -> &str {
        self.nickname
            .as_deref()
            .unwrap_or(self.provider.descriptor().name)
    }
}

/// The result for one data area of a permission check (spec 2.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum AreaResult {
    Granted,
    GrantedNoData,
    /// The vendor refused: `setting` names where the admin grants it.
    NotPermitted {
        setting: String,
        vendor_message: String,
    },
    /// Slow, unreachable or an unexpected answer. Nothing is switched off.
    CouldNotVerify {
        reason: String,
    },
}

impl AreaResult {
    pub fn label(&self) -> &'static str {
        match self {
            AreaResult::Granted => "Granted",
            AreaResult::GrantedNoData => "Granted, but no data returned",
            AreaResult::NotPermitted { .. } => "Not permitted",
            AreaResult::CouldNotVerify { .. } => "Could not verify",
        }
    }

    pub fn is_granted(&self) -> bool {
        matches!(self, AreaResult::Granted | AreaResult::GrantedNoData)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AreaCheck {
    /// Machine name of the area, e.g. `companies`.
    pub area: String,
    /// What the admin reads, e.g. "Companies".
    pub label: String,
    /// Required areas must be granted before sync can run.
    pub required: bool,
    pub outcome: AreaResult,
}

/// Whether we could reach and authenticate to the vendor at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum ConnectionOutcome {
    Ok,
    /// The vendor rejected the credentials (bad keys, unknown company, missing client id).
    AuthFailed {
        message: String,
        fix_hint: String,
    },
    /// DNS, TCP, TLS or timeout: we never got a usable answer.
    Unreachable {
        message: String,
        fix_hint: String,
    },
    /// The site answered but is not what we expected (wrong host, unknown company id).
    Misconfigured {
        message: String,
        fix_hint: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TestReport {
    pub connection: ConnectionOutcome,
    pub areas: Vec<AreaCheck>,
    pub tested_at: DateTime<Utc>,
    /// Facts learned while testing (e.g. the ConnectWise codebase), for display.
    pub details: Vec<(String, String)>,
}

impl TestReport {
    /// The status an integration has after this test, with its error and hint.
    pub fn verdict(&self) -> (IntegrationStatus, Option<String>, Option<String>) {
        match &self.connection {
            ConnectionOutcome::AuthFailed { message, fix_hint }
            | ConnectionOutcome::Unreachable { message, fix_hint }
            | ConnectionOutcome::Misconfigured { message, fix_hint } => (
                IntegrationStatus::Error,
                Some(message.clone()),
                Some(fix_hint.clone()),
            ),
            ConnectionOutcome::Ok => {
                let denied: Vec<_> = self
                    .areas
                    .iter()
                    .filter(|a| a.required)
                    .filter_map(|a| match &a.outcome {
                        AreaResult::NotPermitted { setting, .. } => {
                            Some((a.label.as_str(), setting.as_str()))
                        }
                        _ => None,
                    })
                    .collect();
                if denied.is_empty() {
                    (IntegrationStatus::Connected, None, None)
                } else {
                    let areas: Vec<_> = denied.iter().map(|(l, _)| *l).collect();
                    let settings: Vec<_> = denied.iter().map(|(_, s)| *s).collect();
                    (
                        IntegrationStatus::Error,
                        Some(format!(
                            "Required data areas are not permitted: {}",
                            areas.join(", ")
                        )),
                        Some(format!(
                            "Grant in the vendor's security role: {}",
                            settings.join("; ")
                        )),
                    )
                }
            }
        }
    }

    /// True when the connection itself works (credentials accepted).
    pub fn connected(&self) -> bool {
        self.connection == ConnectionOutcome::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn area(required: bool, outcome: AreaResult) -> AreaCheck {
        AreaCheck {
            area: "a".into(),
            label: "Companies".into(),
            required,
            outcome,
        }
    }

    fn report(connection: ConnectionOutcome, areas: Vec<AreaCheck>) -> TestReport {
        TestReport {
            connection,
            areas,
            tested_at: Utc::now(),
            details: vec![],
        }
    }

    #[test]
    fn verdicts() {
        let ok = report(ConnectionOutcome::Ok, vec![area(true, AreaResult::Granted)]);
        assert_eq!(ok.verdict().0, IntegrationStatus::Connected);

        let unverified = report(
            ConnectionOutcome::Ok,
            vec![area(
                true,
                AreaResult::CouldNotVerify {
                    reason: "slow".into(),
                },
            )],
        );
        assert_eq!(
            unverified.verdict().0,
            IntegrationStatus::Connected,
            "could-not-verify switches nothing off"
        );

        let denied = report(
            ConnectionOutcome::Ok,
            vec![area(
                true,
                AreaResult::NotPermitted {
                    setting: "Companies > Company Maintenance".into(),
                    vendor_message: String::new(),
                },
            )],
        );
        let (s, e, h) = denied.verdict();
        assert_eq!(s, IntegrationStatus::Error);
        assert!(e.unwrap().contains("Companies"));
        assert!(h.unwrap().contains("Company Maintenance"));

        let optional_denied = report(
            ConnectionOutcome::Ok,
            vec![area(
                false,
                AreaResult::NotPermitted {
                    setting: "x".into(),
                    vendor_message: String::new(),
                },
            )],
        );
        assert_eq!(optional_denied.verdict().0, IntegrationStatus::Connected);

        let auth = report(
            ConnectionOutcome::AuthFailed {
                message: "bad keys".into(),
                fix_hint: "re-copy".into(),
            },
            vec![],
        );
        assert_eq!(
            auth.verdict(),
            (
                IntegrationStatus::Error,
                Some("bad keys".into()),
                Some("re-copy".into())
            )
        );
    }

    #[test]
    fn status_round_trip() {
        for s in [
            IntegrationStatus::Connected,
            IntegrationStatus::Disconnected,
            IntegrationStatus::Error,
            IntegrationStatus::Syncing,
        ] {
            assert_eq!(IntegrationStatus::parse(s.as_str()), Some(s));
        }
    }
}
