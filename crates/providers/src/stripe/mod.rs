//! Stripe: the MSP's own Stripe account, used to bill its client companies. Customers,
//! invoices, subscriptions and payments are read as a [`crate::billing::BillingSource`]
//! (lists paged by `starting_after`, `expand[]`, `created[gte]` for incremental passes);
//! signed webhooks (`webhooks`) say what changed and the object is read again; the
//! portal creates customers, tags them with the company's id, opens billing-portal
//! sessions and sets seat quantities, each POST idempotent.
//!
//! Credentials: `secret_key` (a restricted `rk_…` key preferred, or `sk_…`),
//! `webhook_secret` (one or more `whsec_…`). `StripeSettings::api_base` replaces
//! `https://api.stripe.com` for labs and the sandbox.

pub mod client;
pub mod sandbox;
pub mod source;
pub mod webhooks;
pub mod wire;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mspbridge_domain::SecretString;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::integration::{AreaCheck, AreaResult, ConnectionOutcome, TestReport};
use mspbridge_domain::validate::Credentials;

use self::client::{StripeClient, StripeError};
use self::source::StripeSource;
use crate::http::RetryPolicy;
use crate::{ConnectionTest, ProviderConfig};

/// The API version every request pins (`Stripe-Version`) and the webhook endpoint is
/// registered with; the wire types are written for it ("Basil": billing periods on
/// subscription items, invoice → subscription under `parent.subscription_details`).
pub const STRIPE_VERSION: &str = "2025-08-27.basil";

/// The permissions a restricted key needs, as Stripe's dashboard names them.
pub const PERMISSIONS: &[(&str, &str)] = &[
    (
        "Customers",
        "Write (read them; create a customer for a company; tag it with the company's id)",
    ),
    ("Invoices", "Read"),
    (
        "Subscriptions",
        "Write (read them; set the Premium Training seat quantity)",
    ),
    ("PaymentIntents", "Read"),
    ("Charges", "Read (a failed payment's reason)"),
    ("Prices and Products", "Read"),
    ("Customer portal", "Write (Manage payment methods)"),
    (
        "Webhook Endpoints",
        "Write (optional: register the webhook for you)",
    ),
];

pub struct Stripe {
    config: Arc<ProviderConfig>,
}

impl Stripe {
    pub fn new(config: Arc<ProviderConfig>) -> Self {
        Self { config }
    }

    pub fn client(
        &self,
        creds: &Credentials,
        retry: RetryPolicy,
    ) -> Result<StripeClient, StripeError> {
        let key = creds
            .get("secret_key")
            .unwrap_or_default()
            .trim()
            .to_string();
        if key.starts_with("pk_") {
            return Err(StripeError::Refused(
                "That is a publishable key (pk_…); the portal needs a restricted key (rk_…) or a secret key (sk_…)".into(),
            ));
        }
        if key.is_empty() {
            return Err(StripeError::Refused("The key is missing".into()));
        }
        StripeClient::new(
            SecretString::new(key),
            &self.config.stripe,
            self.config.outbound,
            retry,
        )
    }

    pub fn source(
        &self,
        creds: &Credentials,
        retry: RetryPolicy,
    ) -> Result<StripeSource, StripeError> {
        Ok(StripeSource {
            client: self.client(creds, retry)?,
        })
    }
}

fn failure(e: StripeError) -> ConnectionOutcome {
    match e {
        StripeError::Refused(message) => ConnectionOutcome::Misconfigured {
            message,
            fix_hint: "Dashboard > Developers > API keys > Create restricted key, with the permissions listed on this page.".into(),
        },
        StripeError::Unreachable { url, reason } => ConnectionOutcome::Unreachable {
            message: format!("Could not reach Stripe at {url}: {reason}"),
            fix_hint: "Check that this server can reach api.stripe.com (DNS, firewall, proxy).".into(),
        },
        e if e.status() == Some(401) => ConnectionOutcome::AuthFailed {
            message: e.vendor_message(),
            fix_hint: "Copy the key again from Dashboard > Developers > API keys; a rolled or deleted key stops working.".into(),
        },
        other => ConnectionOutcome::Unreachable {
            message: format!("Stripe could not be checked: {other}"),
            fix_hint: "Stripe may be busy; test again in a few minutes.".into(),
        },
    }
}

#[async_trait]
impl ConnectionTest for Stripe {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Stripe
    }

    #[tracing::instrument(skip_all, fields(provider = "stripe"))]
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
        let key = creds.get("secret_key").unwrap_or_default();
        let kind = if key.starts_with("rk_") {
            "restricted key"
        } else {
            "secret key"
        };
        let details = vec![
            (
                "Mode".to_string(),
                if client.live() {
                    "Live".to_string()
                } else {
                    "Test".to_string()
                },
            ),
            ("Key".to_string(), kind.to_string()),
            ("API version".to_string(), STRIPE_VERSION.to_string()),
        ];
        let limit = [("limit".to_string(), "1".to_string())];
        // Customers first: a refused key stops here.
        let customers = match client.get("/v1/customers", &limit, "customers").await {
            Ok(v) => v,
            Err(e) if e.status() == Some(401) => return report(failure(e), vec![], details),
            Err(e) if e.status() == Some(403) => {
                serde_json::json!({"forbidden": e.vendor_message()})
            }
            Err(e) => return report(failure(e), vec![], details),
        };
        let area = |v: Result<serde_json::Value, StripeError>, setting: &str| match v {
            Ok(v) if v.get("forbidden").is_some() => AreaResult::NotPermitted {
                setting: setting.to_string(),
                vendor_message: v["forbidden"].as_str().unwrap_or_default().to_string(),
            },
            Ok(v) if v["data"].as_array().is_some_and(|d| d.is_empty()) => {
                AreaResult::GrantedNoData
            }
            Ok(_) => AreaResult::Granted,
            Err(e) if e.status() == Some(403) => AreaResult::NotPermitted {
                setting: setting.to_string(),
                vendor_message: e.vendor_message(),
            },
            Err(e) => AreaResult::CouldNotVerify {
                reason: e.to_string(),
            },
        };
        let mut areas = vec![AreaCheck {
            area: "customers".into(),
            label: "Customers".into(),
            required: true,
            outcome: area(Ok(customers), "Give the key Customers: Write."),
        }];
        for (path, name, label, setting, required) in [
            (
                "/v1/invoices",
                "invoices",
                "Invoices",
                "Give the key Invoices: Read.",
                true,
            ),
            (
                "/v1/subscriptions",
                "subscriptions",
                "Subscriptions",
                "Give the key Subscriptions: Write.",
                false,
            ),
            (
                "/v1/payment_intents",
                "payments",
                "Payments",
                "Give the key PaymentIntents: Read and Charges: Read.",
                false,
            ),
        ] {
            let got = client.get(path, &limit, name).await;
            areas.push(AreaCheck {
                area: name.into(),
                label: label.into(),
                required,
                outcome: area(got, setting),
            });
        }
        if areas.iter().any(|a| a.required && !a.outcome.is_granted()) {
            let missing: Vec<String> = areas
                .iter()
                .filter(|a| a.required && !a.outcome.is_granted())
                .map(|a| a.label.clone())
                .collect();
            return report(
                ConnectionOutcome::AuthFailed {
                    message: format!("The key may not read {}", missing.join(" and ")),
                    fix_hint: "Edit the restricted key in Dashboard > Developers > API keys and give it the permissions listed on this page.".into(),
                },
                areas,
                details,
            );
        }
        report(ConnectionOutcome::Ok, areas, details)
    }
}
