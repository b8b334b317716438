//! Vendor connectors. One folder per provider holds its HTTP client (`client.rs`),
//! wire types (`wire.rs`), sandbox (`sandbox.rs`) and the capability traits it
//! implements (`mod.rs`). Adding a provider means adding a folder and one line in
//! [`Providers::connector`]; the catalogue entry lives in the domain crate.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::integration::TestReport;
use mspbridge_domain::validate::Credentials;

pub mod autotask;
pub mod bigger_brains;
pub mod billing;
pub mod cloud;
pub mod connectwise;
pub mod connectwise_asio;
pub mod datto_rmm;
pub mod halo;
pub mod http;
pub mod lenient;
pub mod microsoft_365;
pub mod outbound;
pub mod rmm;
pub mod source;
pub mod stripe;
pub mod syncro;
pub mod technicians;
pub mod tickets;
pub mod training;

pub use outbound::OutboundPolicy;

/// Connection testing: reachability, authentication and a per-area permission check
/// (spec 2.4). Every connector implements it; sync capabilities are further traits.
#[async_trait]
pub trait ConnectionTest: Send + Sync {
    fn kind(&self) -> ProviderKind;
    /// Never fails: every problem becomes part of the report, in words an admin can act on.
    async fn test(&self, credentials: &Credentials, now: DateTime<Utc>) -> TestReport;
}

/// Server-wide connector configuration.
#[derive(Debug, Clone, Default)]
pub struct ProviderConfig {
    pub outbound: OutboundPolicy,
    /// The ConnectWise `clientId` registered for this mspbridge deployment, used when an
    /// integration does not set its own.
    pub connectwise_client_id: Option<String>,
    /// Halo's hosted rate limit and 429 back-off.
    pub halo_limits: halo::client::HaloLimits,
    /// Autotask's zone discovery and request threshold.
    pub autotask: autotask::client::AutotaskSettings,
    /// Syncro's per-address rate limit and API location.
    pub syncro: syncro::client::SyncroSettings,
    /// Datto RMM's per-account rate limit and, for labs and sandboxes, its API location.
    pub datto_rmm: datto_rmm::client::DattoSettings,
    /// ConnectWise Asio's back-off and, for labs and sandboxes, its API location.
    pub connectwise_asio: connectwise_asio::client::AsioSettings,
    /// Microsoft's per-tenant Secure Score limits and, for labs and sandboxes, where the
    /// sign-in service and Graph live.
    pub microsoft_365: microsoft_365::client::GraphSettings,
    /// Stripe's address and its rate limits as this side keeps them.
    pub stripe: stripe::client::StripeSettings,
}

/// The connectors this build has, by provider.
/// What the portal writes to a PSA: tickets and technicians.
pub trait PsaWriter: tickets::TicketWriter + technicians::TechnicianWriter {}
impl<T: tickets::TicketWriter + technicians::TechnicianWriter> PsaWriter for T {}

#[derive(Debug, Clone)]
pub struct Providers {
    config: Arc<ProviderConfig>,
}

impl Providers {
    pub fn new(config: ProviderConfig) -> Self {
        Self {
            config: Arc::new(config),
        }
    }

    pub fn config(&self) -> &ProviderConfig {
        &self.config
    }

    /// The connection tester for `kind`, or `None` where the connector is not built yet
    /// (the catalogue says so too).
    /// A sync source for `kind` with these credentials (codebase discovery and the like
    /// happen here), or `None` where the provider has no sync connector yet.
    pub async fn psa_source(
        &self,
        kind: ProviderKind,
        credentials: &Credentials,
        retry: connectwise::client::RetryPolicy,
        page_size: Option<usize>,
    ) -> Option<Result<Box<dyn source::PsaSource>, source::SourceError>> {
        match kind {
            ProviderKind::ConnectwiseManage => {
                let cw = connectwise::ConnectWise::new(self.config.clone());
                let cfg = cw.client_config(credentials);
                let client =
                    match connectwise::client::CwClient::connect(&cfg, self.config.outbound, retry)
                        .await
                    {
                        Ok(c) => c,
                        Err(e) => {
                            return Some(Err(source::SourceError::Unavailable(e.to_string())));
                        }
                    };
                let mut src = connectwise::source::CwSource::new(client);
                if let Some(n) = page_size {
                    src = src.with_page_size(n);
                }
                Some(Ok(Box::new(src)))
            }
            ProviderKind::HaloPsa => {
                let halo = halo::Halo::new(self.config.clone());
                let client = match halo.client(credentials, retry) {
                    Ok(c) => c,
                    Err(e) => return Some(Err(source::SourceError::Unavailable(e.to_string()))),
                };
                let mut src = halo::source::HaloSource::new(client);
                if let Some(n) = page_size {
                    src = src.with_page_size(n);
                }
                Some(Ok(Box::new(src)))
            }
            ProviderKind::Autotask => {
                let client = match autotask::Autotask::new(self.config.clone())
                    .client(credentials, retry)
                    .await
                {
                    Ok(c) => c,
                    Err(e) => return Some(Err(source::SourceError::Unavailable(e.to_string()))),
                };
                let mut src = autotask::source::AutotaskSource::new(
                    client,
                    autotask::Autotask::contact_types(credentials),
                );
                if let Some(n) = page_size {
                    src = src.with_page_size(n);
                }
                Some(Ok(Box::new(src)))
            }
            ProviderKind::Syncro => {
                let client = match syncro::Syncro::new(self.config.clone())
                    .client(credentials, retry)
                {
                    Ok(c) => c,
                    Err(e) => return Some(Err(source::SourceError::Unavailable(e.to_string()))),
                };
                // Syncro's page size is the server's; `page_size` does not apply.
                let _ = page_size;
                Some(Ok(Box::new(syncro::source::SyncroSource::new(client))))
            }
            _ => None,
        }
    }

    /// Whether the sync imports `kind`'s tickets (its source offers a `TicketSource`).
    pub fn imports_tickets(&self, kind: ProviderKind) -> bool {
        matches!(
            kind,
            ProviderKind::ConnectwiseManage
                | ProviderKind::HaloPsa
                | ProviderKind::Syncro
                | ProviderKind::Autotask
        )
    }

    /// Whether tickets created in the portal can be written to `kind`.
    pub fn writes_tickets(&self, kind: ProviderKind) -> bool {
        matches!(
            kind,
            ProviderKind::ConnectwiseManage
                | ProviderKind::HaloPsa
                | ProviderKind::Syncro
                | ProviderKind::Autotask
        )
    }

    /// A ticket writer for `kind` with these credentials, or `None` where writing tickets
    /// back is not built for the provider yet.
    pub async fn ticket_writer(
        &self,
        kind: ProviderKind,
        credentials: &Credentials,
        retry: connectwise::client::RetryPolicy,
    ) -> Option<Result<Box<dyn tickets::TicketWriter>, tickets::WriteError>> {
        self.writer(kind, credentials, retry)
            .await
            .map(|r| r.map(|w| w as Box<dyn tickets::TicketWriter>))
    }

    /// A technician writer for `kind` (see `technicians::capability` for what it takes).
    pub async fn technician_writer(
        &self,
        kind: ProviderKind,
        credentials: &Credentials,
        retry: connectwise::client::RetryPolicy,
    ) -> Option<Result<Box<dyn technicians::TechnicianWriter>, tickets::WriteError>> {
        self.writer(kind, credentials, retry)
            .await
            .map(|r| r.map(|w| w as Box<dyn technicians::TechnicianWriter>))
    }

    async fn writer(
        &self,
        kind: ProviderKind,
        credentials: &Credentials,
        retry: connectwise::client::RetryPolicy,
    ) -> Option<Result<Box<dyn PsaWriter>, tickets::WriteError>> {
        match kind {
            ProviderKind::ConnectwiseManage => {
                let cw = connectwise::ConnectWise::new(self.config.clone());
                let cfg = cw.client_config(credentials);
                Some(
                    connectwise::client::CwClient::connect(&cfg, self.config.outbound, retry)
                        .await
                        .map(|c| {
                            Box::new(connectwise::tickets::CwTicketWriter::new(c))
                                as Box<dyn PsaWriter>
                        })
                        .map_err(connectwise::tickets::write_error),
                )
            }
            ProviderKind::HaloPsa => Some(
                halo::Halo::new(self.config.clone())
                    .client(credentials, retry)
                    .map(|c| {
                        Box::new(halo::tickets::HaloTicketWriter::new(c)) as Box<dyn PsaWriter>
                    })
                    .map_err(halo::tickets::write_error),
            ),
            ProviderKind::Syncro => Some(
                syncro::Syncro::new(self.config.clone())
                    .client(credentials, retry)
                    .map(|c| {
                        Box::new(syncro::tickets::SyncroTicketWriter::new(c)) as Box<dyn PsaWriter>
                    })
                    .map_err(syncro::tickets::write_error),
            ),
            ProviderKind::Autotask => Some(
                autotask::Autotask::new(self.config.clone())
                    .client_cached(credentials, retry)
                    .await
                    .map(|c| {
                        Box::new(autotask::tickets::AutotaskTicketWriter::new(c))
                            as Box<dyn PsaWriter>
                    })
                    .map_err(autotask::tickets::write_error),
            ),
            _ => None,
        }
    }

    /// Registers the PSA's ticket webhook to `url` where its API allows it (ConnectWise
    /// `/system/callbacks`, self-suppressed; Halo `/api/Webhook` with Basic authentication,
    /// `secret` as its password; Autotask `TicketWebhooks` signed with `secret`, the API user
    /// excluded): `None` where it does not (yet), else the vendor's id for
    /// the registration or why it failed.
    pub async fn register_ticket_webhook(
        &self,
        kind: ProviderKind,
        credentials: &Credentials,
        url: &str,
        secret: &str,
    ) -> Option<Result<String, String>> {
        match kind {
            ProviderKind::HaloPsa => {
                let retry = connectwise::client::RetryPolicy::interactive();
                let client = match halo::Halo::new(self.config.clone()).client(credentials, retry) {
                    Ok(c) => c,
                    Err(e) => return Some(Err(e.to_string())),
                };
                Some(
                    halo::webhooks::register(&client, url, secret)
                        .await
                        .map_err(|e| e.to_string()),
                )
            }
            ProviderKind::ConnectwiseManage => {
                let cw = connectwise::ConnectWise::new(self.config.clone());
                let cfg = cw.client_config(credentials);
                let retry = connectwise::client::RetryPolicy::interactive();
                let client =
                    match connectwise::client::CwClient::connect(&cfg, self.config.outbound, retry)
                        .await
                    {
                        Ok(c) => c,
                        Err(e) => return Some(Err(e.to_string())),
                    };
                Some(
                    connectwise::callbacks::register(&client, url)
                        .await
                        .map(|id| id.to_string())
                        .map_err(|e| e.to_string()),
                )
            }
            ProviderKind::Autotask => {
                let retry = connectwise::client::RetryPolicy::interactive();
                let client = match autotask::Autotask::new(self.config.clone())
                    .client(credentials, retry)
                    .await
                {
                    Ok(c) => c,
                    Err(e) => return Some(Err(e.to_string())),
                };
                Some(
                    autotask::webhooks::register(
                        &client,
                        url,
                        &format!("{url}/deactivated"),
                        secret,
                    )
                    .await
                    .map(|r| {
                        if r.api_user_excluded {
                            r.id.to_string()
                        } else {
                            format!("{}, API user not excluded", r.id)
                        }
                    })
                    .map_err(|e| e.to_string()),
                )
            }
            _ => None,
        }
    }

    pub fn connector(&self, kind: ProviderKind) -> Option<Box<dyn ConnectionTest>> {
        match kind {
            ProviderKind::ConnectwiseManage => {
                Some(Box::new(connectwise::ConnectWise::new(self.config.clone())))
            }
            ProviderKind::HaloPsa => Some(Box::new(halo::Halo::new(self.config.clone()))),
            ProviderKind::Autotask => Some(Box::new(autotask::Autotask::new(self.config.clone()))),
            ProviderKind::Syncro => Some(Box::new(syncro::Syncro::new(self.config.clone()))),
            ProviderKind::DattoRmm => Some(Box::new(datto_rmm::DattoRmm::new(self.config.clone()))),
            ProviderKind::ConnectwiseAsio => Some(Box::new(
                connectwise_asio::ConnectwiseAsio::new(self.config.clone()),
            )),
            ProviderKind::Microsoft365 => Some(Box::new(microsoft_365::Microsoft365::new(
                self.config.clone(),
            ))),
            ProviderKind::Stripe => Some(Box::new(stripe::Stripe::new(self.config.clone()))),
            ProviderKind::BiggerBrains => Some(Box::new(bigger_brains::BiggerBrains)),
        }
    }

    /// A training source for `kind` (Bigger Brains: files), or `None` where the provider is
    /// not one.
    pub fn training_source(
        &self,
        kind: ProviderKind,
        credentials: &Credentials,
    ) -> Option<Box<dyn training::TrainingSource>> {
        match kind {
            ProviderKind::BiggerBrains => Some(Box::new(
                bigger_brains::FileExchange::from_credentials(credentials),
            )),
            _ => None,
        }
    }

    /// A billing source for `kind` (Stripe), or `None` where the provider is not one.
    pub fn billing_source(
        &self,
        kind: ProviderKind,
        credentials: &Credentials,
        retry: http::RetryPolicy,
    ) -> Option<Result<Box<dyn billing::BillingSource>, String>> {
        match kind {
            ProviderKind::Stripe => Some(
                stripe::Stripe::new(self.config.clone())
                    .source(credentials, retry)
                    .map(|s| Box::new(s) as Box<dyn billing::BillingSource>)
                    .map_err(|e| e.to_string()),
            ),
            _ => None,
        }
    }

    /// An RMM source for `kind` with these credentials (`page_size` replaces the vendor
    /// account's page size), or `None` where the provider is not an RMM built yet.
    pub async fn rmm_source(
        &self,
        kind: ProviderKind,
        credentials: &Credentials,
        retry: http::RetryPolicy,
        page_size: Option<usize>,
    ) -> Option<Result<Box<dyn rmm::RmmSource>, source::SourceError>> {
        match kind {
            ProviderKind::DattoRmm => Some(
                datto_rmm::DattoRmm::new(self.config.clone())
                    .source(credentials, retry, page_size)
                    .map(|s| Box::new(s) as Box<dyn rmm::RmmSource>)
                    .map_err(datto_rmm::source::source_error),
            ),
            ProviderKind::ConnectwiseAsio => Some(
                connectwise_asio::ConnectwiseAsio::new(self.config.clone())
                    .source(credentials, retry, page_size)
                    .map(|s| Box::new(s) as Box<dyn rmm::RmmSource>)
                    .map_err(connectwise_asio::source::source_error),
            ),
            _ => None,
        }
    }

    /// A cloud tenant source for `kind` (one app, any consented tenant), or `None` where
    /// the provider is not one.
    pub fn cloud_source(
        &self,
        kind: ProviderKind,
        credentials: &Credentials,
        retry: http::RetryPolicy,
    ) -> Option<Result<Box<dyn cloud::CloudTenantSource>, String>> {
        match kind {
            ProviderKind::Microsoft365 => Some(
                microsoft_365::Microsoft365::new(self.config.clone())
                    .source(credentials, retry)
                    .map(|s| Box::new(s) as Box<dyn cloud::CloudTenantSource>)
                    .map_err(|e| e.to_string()),
            ),
            _ => None,
        }
    }

    /// The admin-consent address for `kind`'s app (Microsoft 365), or `None`.
    pub fn consent_url(
        &self,
        kind: ProviderKind,
        credentials: &Credentials,
        tenant: Option<&str>,
        redirect_uri: &str,
        state: &str,
    ) -> Option<Result<String, String>> {
        match kind {
            ProviderKind::Microsoft365 => Some(
                microsoft_365::Microsoft365::new(self.config.clone())
                    .client(credentials, http::RetryPolicy::interactive())
                    .map(|c| c.admin_consent_url(tenant, redirect_uri, state))
                    .map_err(|e| e.to_string()),
            ),
            _ => None,
        }
    }

    /// Whether `kind` is an RMM whose sites, devices and alerts the sync reads.
    pub fn reads_rmm(&self, kind: ProviderKind) -> bool {
        matches!(kind, ProviderKind::DattoRmm | ProviderKind::ConnectwiseAsio)
    }

    /// Whether the portal can resolve `kind`'s alerts (it has an [`alert_writer`](Self::alert_writer)).
    pub fn resolves_alerts(&self, kind: ProviderKind) -> bool {
        matches!(kind, ProviderKind::DattoRmm)
    }

    /// An alert writer for `kind` (resolving alerts), or `None` where the provider has none.
    pub fn alert_writer(
        &self,
        kind: ProviderKind,
        credentials: &Credentials,
    ) -> Option<Result<Box<dyn rmm::AlertWriter>, rmm::RmmWriteError>> {
        if !self.resolves_alerts(kind) {
            return None;
        }
        match kind {
            ProviderKind::DattoRmm => Some(
                datto_rmm::DattoRmm::new(self.config.clone())
                    .alert_writer(credentials)
                    .map(|w| Box::new(w) as Box<dyn rmm::AlertWriter>)
                    .map_err(|e| rmm::RmmWriteError::Refused(e.to_string())),
            ),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_writer_exists_exactly_where_alerts_are_said_resolvable() {
        let p = Providers::new(ProviderConfig::default());
        for kind in ProviderKind::ALL {
            assert_eq!(
                p.alert_writer(kind, &Credentials::default()).is_some(),
                p.resolves_alerts(kind),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn connectors_exist_exactly_for_available_catalogue_entries() {
        let p = Providers::new(ProviderConfig::default());
        for kind in ProviderKind::ALL {
            assert_eq!(
                p.connector(kind).is_some(),
                kind.descriptor().is_available(),
                "{kind:?}"
            );
        }
    }
}
