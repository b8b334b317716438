//! Microsoft 365 through Microsoft Graph: one multi-tenant app registration of the MSP,
//! consented per customer tenant by that tenant's admin; organization, domains, users (by
//! delta), groups, licences and Secure Score read per tenant as a
//! [`crate::cloud::CloudTenantSource`]; the partner tenant's GDAP relationships list the
//! customer tenants; the connection test proves the secret in the MSP's own tenant.
//!
//! Credentials: `client_id`, `client_secret`, `home_tenant` (the MSP's own tenant id or
//! domain, where the app is registered), optional `redirect_url`.
//! `GraphSettings::{login_base, graph_base}` replace Microsoft's hosts for labs and the
//! sandbox.

pub mod certificate;
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
use mspbridge_domain::m365::{TenantStatus, status_of_token_error};
use mspbridge_domain::validate::Credentials;

use self::client::{AppConfig, GraphClient, GraphError};
use self::source::GraphSource;
use crate::http::RetryPolicy;
use crate::{ConnectionTest, ProviderConfig};

pub struct Microsoft365 {
    config: Arc<ProviderConfig>,
}

impl Microsoft365 {
    pub fn new(config: Arc<ProviderConfig>) -> Self {
        Self { config }
    }

    pub fn client(
        &self,
        creds: &Credentials,
        retry: RetryPolicy,
    ) -> Result<GraphClient, GraphError> {
        let certificate = match (creds.get("certificate"), creds.get("private_key")) {
            (Some(c), Some(k)) if !c.is_empty() && !k.is_empty() => {
                Some(Arc::new(certificate::Certificate::from_pem(c, k).map_err(
                    |e| GraphError::Refused(format!("The certificate cannot be used: {e}")),
                )?))
            }
            _ => None,
        };
        if certificate.is_none() && creds.get("client_secret").unwrap_or_default().is_empty() {
            return Err(GraphError::Refused(
                "The app needs a client secret or a certificate with its private key".into(),
            ));
        }
        GraphClient::new(
            AppConfig {
                client_id: creds.get("client_id").unwrap_or_default().to_string(),
                client_secret: SecretString::new(creds.get("client_secret").unwrap_or_default()),
                certificate,
            },
            &self.config.microsoft_365,
            self.config.outbound,
            retry,
        )
    }

    pub fn source(
        &self,
        creds: &Credentials,
        retry: RetryPolicy,
    ) -> Result<GraphSource, GraphError> {
        Ok(GraphSource {
            client: self.client(creds, retry)?,
        })
    }
}

fn failure(e: GraphError) -> ConnectionOutcome {
    match e {
        GraphError::Token { codes, message, .. } => {
            let status = status_of_token_error(&codes);
            let fix_hint = match status {
                TenantStatus::NotConsented => "The application (client) ID is not registered in your own tenant: copy it from Entra ID > App registrations > (the app) > Overview, and check the tenant ID.".to_string(),
                TenantStatus::TenantNotFound => "Microsoft knows no such tenant: use your tenant ID (Entra ID > Overview) or its .onmicrosoft.com domain.".to_string(),
                TenantStatus::Error => "Check the application ID, the secret and the tenant ID.".to_string(),
                s => s.fix().to_string(),
            };
            ConnectionOutcome::AuthFailed { message, fix_hint }
        }
        GraphError::Refused(message) => ConnectionOutcome::Misconfigured {
            fix_hint: if message.contains("certificate") || message.contains("secret") {
                "Give the client secret's Value, or the certificate uploaded to the app registration with its unencrypted RSA private key, both as PEM text.".into()
            } else {
                "The tenant must be your tenant's ID (a GUID) or its domain, never common.".into()
            },
            message,
        },
        GraphError::Unreachable { url, reason } => ConnectionOutcome::Unreachable {
            message: format!("Could not reach Microsoft at {url}: {reason}"),
            fix_hint: "Check that this server can reach login.microsoftonline.com and graph.microsoft.com (DNS, firewall, proxy).".into(),
        },
        other => ConnectionOutcome::Unreachable {
            message: format!("Microsoft 365 could not be checked: {other}"),
            fix_hint: "Microsoft may be busy; test again in a few minutes.".into(),
        },
    }
}

#[async_trait]
impl ConnectionTest for Microsoft365 {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Microsoft365
    }

    #[tracing::instrument(skip_all, fields(provider = "microsoft_365"))]
    async fn test(&self, creds: &Credentials, now: DateTime<Utc>) -> TestReport {
        let report = |connection, areas, details| TestReport {
            connection,
            areas,
            tested_at: now,
            details,
        };
        let client = match self.client(creds, RetryPolicy::interactive()) {
            Ok(c) => c,
            Err(e) => return report(failure(e), vec![], vec![]),
        };
        let home = creds.get("home_tenant").unwrap_or_default().to_string();
        let details = vec![("Sign-in".to_string(), client.login_base().to_string())];
        if let Err(e) = client.token(&home, None).await {
            return report(failure(e), vec![], details);
        }
        let mut areas = vec![AreaCheck {
            area: "app".into(),
            label: "App secret (a token in your own tenant)".into(),
            required: true,
            outcome: AreaResult::Granted,
        }];
        let gdap = match client
            .get::<serde_json::Value>(
                &home,
                "/v1.0/tenantRelationships/delegatedAdminRelationships?$top=1",
                "delegated admin relationships",
            )
            .await
        {
            Ok(a) => {
                if a.body["value"].as_array().is_some_and(|v| v.is_empty()) {
                    AreaResult::GrantedNoData
                } else {
                    AreaResult::Granted
                }
            }
            Err(GraphError::Forbidden { message, .. }) => AreaResult::NotPermitted {
                setting: "Optional, for finding customer tenants: add the application permission DelegatedAdminRelationship.Read.All to the app and grant admin consent in your own tenant. Without it, connect companies one by one.".into(),
                vendor_message: message,
            },
            Err(e) => AreaResult::CouldNotVerify {
                reason: e.to_string(),
            },
        };
        areas.push(AreaCheck {
            area: "customer_tenants".into(),
            label: "Customer tenants (GDAP relationships)".into(),
            required: false,
            outcome: gdap,
        });
        report(ConnectionOutcome::Ok, areas, details)
    }
}
