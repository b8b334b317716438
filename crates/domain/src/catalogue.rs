//! The provider catalogue of spec 2.1 (v1 table): nine providers, what each needs to
//! connect and what each syncs in which direction. The catalogue is data: connectors
//! register against a [`ProviderKind`], and the UI and API render from it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    HaloPsa,
    ConnectwiseManage,
    Autotask,
    Syncro,
    DattoRmm,
    ConnectwiseAsio,
    Microsoft365,
    Stripe,
    BiggerBrains,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 9] = [
        ProviderKind::HaloPsa,
        ProviderKind::ConnectwiseManage,
        ProviderKind::Autotask,
        ProviderKind::Syncro,
        ProviderKind::DattoRmm,
        ProviderKind::ConnectwiseAsio,
        ProviderKind::Microsoft365,
        ProviderKind::Stripe,
        ProviderKind::BiggerBrains,
    ];

    /// Stable machine name, used in URLs, the database and the CLI.
    pub fn slug(self) -> &'static str {
        match self {
            ProviderKind::HaloPsa => "halo_psa",
            ProviderKind::ConnectwiseManage => "connectwise_manage",
            ProviderKind::Autotask => "autotask",
            ProviderKind::Syncro => "syncro",
            ProviderKind::DattoRmm => "datto_rmm",
            ProviderKind::ConnectwiseAsio => "connectwise_asio",
            ProviderKind::Microsoft365 => "microsoft_365",
            ProviderKind::Stripe => "stripe",
            ProviderKind::BiggerBrains => "bigger_brains",
        }
    }

    pub fn from_slug(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.slug() == s)
    }

    pub fn descriptor(self) -> &'static ProviderDescriptor {
        CATALOGUE
            .iter()
            .find(|d| d.kind == self)
            .unwrap_or(&CATALOGUE[0])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Psa,
    Rmm,
    Cloud,
    Payments,
    Training,
}

impl Category {
    pub fn label(self) -> &'static str {
        match self {
            Category::Psa => "PSA",
            Category::Rmm => "RMM",
            Category::Cloud => "Cloud",
            Category::Payments => "Payments",
            Category::Training => "Training",
        }
    }
}

/// ConnectWise Asio's environments (the client ID's prefix names one: see
/// [`asio_client_id_prefix`]).
pub const ASIO_ENVIRONMENTS: [&str; 3] = ["na", "eu", "au"];

/// The prefix a ConnectWise Asio client ID of `environment` starts with.
pub fn asio_client_id_prefix(environment: &str) -> Option<&'static str> {
    match environment {
        "na" => Some("0e30"),
        "eu" => Some("0e31"),
        "au" => Some("0e32"),
        _ => None,
    }
}

/// Datto RMM's platforms, each at `https://{platform}-api.centrastage.net`.
pub const DATTO_PLATFORMS: [&str; 6] = [
    "pinotage",
    "merlot",
    "concord",
    "vidal",
    "zinfandel",
    "syrah",
];

/// What shape a credential value must have. Validation lives in [`crate::validate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", tag = "type", content = "values")]
pub enum FieldFormat {
    /// A host name (optionally with :port), no scheme and no path.
    Host,
    /// An absolute `https://` URL.
    HttpsUrl,
    /// A GUID such as `8c0e1a52-4c1b-4f60-9d5a-2a9f4f1f0b11`.
    Guid,
    /// A DNS label (the `acme` of `acme.syncromsp.com`).
    Subdomain,
    Email,
    /// Free text on one line.
    Text,
    /// One of a fixed list of values.
    Choice(&'static [&'static str]),
    /// PEM text (a certificate or a key): several lines; a form shows a text area.
    Pem,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CredentialField {
    pub name: &'static str,
    pub label: &'static str,
    /// Secret values are encrypted at rest and only ever shown masked.
    pub secret: bool,
    pub required: bool,
    pub format: FieldFormat,
    pub help: &'static str,
    pub example: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Companies,
    Contacts,
    Technicians,
    Tickets,
    Devices,
    Alerts,
    SecureScores,
    Invoices,
    Courses,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Vendor → portal.
    Inbound,
    /// Both ways.
    Bidirectional,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SyncCapability {
    pub record: RecordKind,
    pub direction: Direction,
}

/// Whether mspbridge can talk to this provider yet. Nothing pretends to work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", tag = "state", content = "note")]
pub enum Availability {
    /// Connect and Test work against the real API.
    Available,
    /// The connector is not built yet; the catalogue lists the provider but connecting is refused.
    NotYetBuilt(&'static str),
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProviderDescriptor {
    pub kind: ProviderKind,
    pub name: &'static str,
    pub category: Category,
    pub description: &'static str,
    pub fields: &'static [CredentialField],
    pub syncs: &'static [SyncCapability],
    pub availability: Availability,
    /// Where in the vendor's UI the admin creates these credentials.
    pub setup_hint: &'static str,
}

impl ProviderDescriptor {
    /// Whether the provider has companies to map onto portal companies (a column of the
    /// company mapping); a training library does not.
    pub fn has_companies(&self) -> bool {
        self.syncs.iter().any(|s| s.record == RecordKind::Companies)
    }

    /// Fields that cannot change once connected (spec 2.15: Datto's platform, Asio's
    /// environment and client id): another value means another account, so it is a new
    /// integration, not an update.
    pub fn locked_fields(&self) -> &'static [&'static str] {
        match self.kind {
            ProviderKind::DattoRmm => &["platform", "api_url"],
            ProviderKind::ConnectwiseAsio => &["region", "environment", "client_id"],
            _ => &[],
        }
    }

    pub fn field(&self, name: &str) -> Option<&'static CredentialField> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub fn is_available(&self) -> bool {
        self.availability == Availability::Available
    }

    pub fn default_name(&self) -> &'static str {
        self.name
    }
}

const fn f(
    name: &'static str,
    label: &'static str,
    secret: bool,
    required: bool,
    format: FieldFormat,
    help: &'static str,
    example: &'static str,
) -> CredentialField {
    CredentialField {
        name,
        label,
        secret,
        required,
        format,
        help,
        example,
    }
}

const fn sync(record: RecordKind, direction: Direction) -> SyncCapability {
    SyncCapability { record, direction }
}

use Direction::{Bidirectional, Inbound};
use FieldFormat::*;
use RecordKind::*;

const PSA_SYNCS: &[SyncCapability] = &[
    sync(Companies, Inbound),
    sync(Contacts, Inbound),
    sync(Technicians, Bidirectional),
    sync(Tickets, Bidirectional),
];

pub static CATALOGUE: [ProviderDescriptor; 9] = [
    ProviderDescriptor {
        kind: ProviderKind::HaloPsa,
        name: "Halo PSA",
        category: Category::Psa,
        description: "Tickets, companies (clients and sites), users and agents from HaloPSA.",
        fields: &[
            f(
                "auth_server_url",
                "Authorisation server URL",
                false,
                true,
                HttpsUrl,
                "Shown under Configuration > Integrations > Halo API.",
                "https://acme.halopsa.com/auth",
            ),
            f(
                "resource_server_url",
                "Resource server URL",
                false,
                true,
                HttpsUrl,
                "Shown next to the authorisation server URL.",
                "https://acme.halopsa.com/api",
            ),
            f(
                "tenant",
                "Tenant",
                false,
                false,
                Text,
                "Only for Halo-hosted instances that share an authorisation server.",
                "acme",
            ),
            f(
                "client_id",
                "Client ID",
                false,
                true,
                Text,
                "From the API application (Client ID and Secret (Services)).",
                "",
            ),
            f(
                "client_secret",
                "Client secret",
                true,
                true,
                Text,
                "Shown once when the API application is created.",
                "",
            ),
        ],
        syncs: PSA_SYNCS,
        availability: Availability::Available,
        setup_hint: "Configuration > Integrations > Halo API > View Applications > New.",
    },
    ProviderDescriptor {
        kind: ProviderKind::ConnectwiseManage,
        name: "ConnectWise Manage",
        category: Category::Psa,
        description: "Tickets, companies, contacts, members and service boards from ConnectWise PSA.",
        fields: &[
            f(
                "site",
                "API URL (site)",
                false,
                true,
                Host,
                "The host only, without https:// and without a path. Cloud: na.myconnectwise.net, eu.myconnectwise.net, aus.myconnectwise.net.",
                "na.myconnectwise.net",
            ),
            f(
                "company_id",
                "Company ID",
                false,
                true,
                Text,
                "The company id you type on the ConnectWise login screen.",
                "acme",
            ),
            f(
                "public_key",
                "Public key",
                false,
                true,
                Text,
                "API member > API Keys tab.",
                "",
            ),
            f(
                "private_key",
                "Private key",
                true,
                true,
                Text,
                "Shown once when the API key is created.",
                "",
            ),
            f(
                "client_id",
                "Client ID",
                false,
                false,
                Guid,
                "The clientId registered at developer.connectwise.com. Leave empty to use the server's configured clientId.",
                "8c0e1a52-4c1b-4f60-9d5a-2a9f4f1f0b11",
            ),
        ],
        syncs: PSA_SYNCS,
        availability: Availability::Available,
        setup_hint: "System > Security Roles (role \"MSPortal\"), then System > Members > API Members > API Keys.",
    },
    ProviderDescriptor {
        kind: ProviderKind::Autotask,
        name: "Autotask",
        category: Category::Psa,
        description: "Accounts (companies), contacts, resources and tickets from Autotask PSA.",
        fields: &[
            f(
                "username",
                "API user name",
                false,
                true,
                Email,
                "The API-only resource's user name (an email address).",
                "api@acme.com",
            ),
            f(
                "secret",
                "Secret",
                true,
                true,
                Text,
                "The API user's password.",
                "",
            ),
            f(
                "integration_code",
                "API tracking identifier",
                true,
                true,
                Text,
                "The tracking identifier chosen when the API user was created.",
                "",
            ),
            f(
                "contact_type_field",
                "Contact type field",
                false,
                false,
                Text,
                "Leave blank to use contact groups as contact types, or name a contact user-defined field.",
                "Contact Type",
            ),
        ],
        syncs: PSA_SYNCS,
        availability: Availability::Available,
        setup_hint: "Admin > Resources/Users > New API User (API-only).",
    },
    ProviderDescriptor {
        kind: ProviderKind::Syncro,
        name: "Syncro",
        category: Category::Psa,
        description: "Customers, contacts, technicians and tickets from SyncroMSP.",
        fields: &[
            f(
                "subdomain",
                "Subdomain",
                false,
                true,
                Subdomain,
                "The part before .syncromsp.com.",
                "acme",
            ),
            f(
                "api_token",
                "API token",
                true,
                true,
                Text,
                "Admin > API > API Tokens; needs Customers, Contacts, Users and Tickets permissions.",
                "",
            ),
        ],
        syncs: PSA_SYNCS,
        availability: Availability::Available,
        setup_hint: "Admin > API > API Tokens > New Token.",
    },
    ProviderDescriptor {
        kind: ProviderKind::DattoRmm,
        name: "Datto RMM",
        category: Category::Rmm,
        description: "Sites, devices and monitoring alerts from Datto RMM.",
        fields: &[
            f(
                "platform",
                "Platform",
                false,
                true,
                Choice(&DATTO_PLATFORMS),
                "The platform of your Datto RMM account: the first word of the API URL shown next to the generated keys (https://merlot-api.centrastage.net → merlot).",
                "merlot",
            ),
            f(
                "api_url",
                "API URL",
                false,
                false,
                HttpsUrl,
                "Optional: the API URL exactly as shown next to the generated keys; it takes precedence over the platform.",
                "https://merlot-api.centrastage.net",
            ),
            f(
                "api_key",
                "API key",
                false,
                true,
                Text,
                "Setup > Users > (the API user) > Generate API Keys.",
                "",
            ),
            f(
                "api_secret",
                "API secret key",
                true,
                true,
                Text,
                "Shown once with the API key.",
                "",
            ),
        ],
        syncs: &[
            sync(Companies, Inbound),
            sync(Devices, Inbound),
            sync(Alerts, Inbound),
        ],
        availability: Availability::Available,
        setup_hint: "Setup > Global Settings > Access Control > Enable API Access.",
    },
    ProviderDescriptor {
        kind: ProviderKind::ConnectwiseAsio,
        name: "ConnectWise Asio",
        category: Category::Rmm,
        description: "Companies, devices and alerts (its open service tickets) from the ConnectWise Asio platform.",
        fields: &[
            f(
                "environment",
                "Environment",
                false,
                true,
                Choice(&ASIO_ENVIRONMENTS),
                "The environment of your Asio partner account; the client ID's first four characters name it (0e30 NA, 0e31 EU, 0e32 AU).",
                "na",
            ),
            f(
                "client_id",
                "Client ID",
                false,
                true,
                Text,
                "Asio: Integrations > API Access > Generate API Access, with the scopes Platform - Companies - Read, Platform - Sites - Read and Platform - Devices - Read, and Platform - Tickets - Read for alerts (Asio's alerts are its service tickets).",
                "",
            ),
            f(
                "client_secret",
                "Client secret",
                true,
                true,
                Text,
                "Shown once with the client ID.",
                "",
            ),
        ],
        syncs: &[
            sync(Companies, Inbound),
            sync(Devices, Inbound),
            sync(Alerts, Inbound),
        ],
        availability: Availability::Available,
        setup_hint: "Asio portal: Integrations > API Access > Generate API Access.",
    },
    ProviderDescriptor {
        kind: ProviderKind::Microsoft365,
        name: "Microsoft 365",
        category: Category::Cloud,
        description: "Per client company, through its admin's consent: users, licences, domains, groups and Secure Score with its controls.",
        fields: &[
            f(
                "client_id",
                "Application (client) ID",
                false,
                true,
                Guid,
                "Of your multi-tenant app registration: Entra ID > App registrations > New registration, \"Accounts in any organizational directory\"; application permissions Organization.Read.All, User.Read.All, Directory.Read.All, SecurityEvents.Read.All.",
                "00000000-0000-0000-0000-000000000000",
            ),
            f(
                "client_secret",
                "Client secret",
                true,
                false,
                Text,
                "The secret's Value (not its ID), from Certificates & secrets of the app registration. Or leave it empty and use a certificate below (Microsoft recommends certificates).",
                "",
            ),
            f(
                "certificate",
                "Certificate (PEM)",
                false,
                false,
                Pem,
                "Instead of a secret: the certificate uploaded under Certificates & secrets > Certificates, as PEM text (-----BEGIN CERTIFICATE----- …).",
                "-----BEGIN CERTIFICATE----- …",
            ),
            f(
                "private_key",
                "Certificate private key (PEM)",
                true,
                false,
                Pem,
                "The certificate's private key, unencrypted PKCS#8 (-----BEGIN PRIVATE KEY-----) or PKCS#1 (-----BEGIN RSA PRIVATE KEY-----), RSA 2048 bits or more.",
                "",
            ),
            f(
                "home_tenant",
                "Your tenant ID",
                false,
                true,
                Text,
                "Your own (MSP) tenant, where the app is registered: its ID (Entra ID > Overview) or its .onmicrosoft.com domain. Test proves the secret there; with GDAP it lists your customers' tenants.",
                "contoso.onmicrosoft.com",
            ),
            f(
                "redirect_url",
                "Redirect URL",
                false,
                false,
                HttpsUrl,
                "Optional: the redirect URI registered on the app (Authentication > Web). Default: this portal's /m365/consent/callback.",
                "https://portal.example.com/m365/consent/callback",
            ),
        ],
        syncs: &[sync(Companies, Inbound), sync(SecureScores, Inbound)],
        availability: Availability::Available,
        setup_hint: "Entra ID > App registrations > New registration (multi-tenant), then connect each company on Microsoft 365 > Companies.",
    },
    ProviderDescriptor {
        kind: ProviderKind::Stripe,
        name: "Stripe",
        category: Category::Payments,
        description: "Your own Stripe account billing your clients: each company sees and pays its invoices from the portal; you see who is past due.",
        fields: &[
            f(
                "secret_key",
                "Restricted key (preferred) or secret key",
                true,
                true,
                Text,
                "Preferred: a restricted key (rk_live_… or rk_test_…) from Developers > API keys > Create restricted key, with Customers: Write, Invoices: Read, Subscriptions: Write, PaymentIntents: Read, Charges: Read, Prices and Products: Read, Customer portal: Write, Webhook Endpoints: Write. A secret key (sk_…) also works but can do everything. Test-mode keys (…_test_…) read your test data.",
                "rk_live_…",
            ),
            f(
                "webhook_secret",
                "Webhook signing secret",
                true,
                false,
                Text,
                "Leave empty where this portal has a public address: the endpoint is registered for you. Otherwise add the endpoint shown on the Billing page in Developers > Webhooks and paste its whsec_… here; while you roll a secret, give the old and the new one separated by a space.",
                "whsec_…",
            ),
        ],
        syncs: &[sync(Companies, Inbound), sync(Invoices, Inbound)],
        availability: Availability::Available,
        setup_hint: "Developers > API keys > Create restricted key.",
    },
    ProviderDescriptor {
        kind: ProviderKind::BiggerBrains,
        name: "Bigger Brains",
        category: Category::Training,
        description: "Premium training per company from the BrainStation library: the course catalogue, learners' progress and the per-user add-on, by file exchange (Bigger Brains has no public API).",
        fields: &[
            f(
                "reseller_name",
                "Reseller name",
                false,
                true,
                Text,
                "Your reseller account's name in BrainStation's Reseller Portal. No secret is needed: Bigger Brains has no API, so nothing is called; the catalogue and progress are imported from the portal's exports.",
                "Contoso IT",
            ),
            f(
                "brainstation_url",
                "BrainStation URL",
                false,
                true,
                HttpsUrl,
                "Where your clients' people sign in to learn (your branded BrainStation address, or https://getbiggerbrains.com); companies' Training pages link out to it.",
                "https://getbiggerbrains.com",
            ),
        ],
        syncs: &[sync(Courses, Inbound)],
        availability: Availability::Available,
        setup_hint: "BrainStation Reseller Portal: export the course catalogue and each Team's progress; import them under Training.",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_has_the_nine_providers_of_the_spec_once_each() {
        assert_eq!(CATALOGUE.len(), 9);
        for kind in ProviderKind::ALL {
            assert_eq!(
                CATALOGUE.iter().filter(|d| d.kind == kind).count(),
                1,
                "{kind:?}"
            );
            assert_eq!(kind.descriptor().kind, kind);
            assert_eq!(ProviderKind::from_slug(kind.slug()), Some(kind));
        }
    }

    #[test]
    fn every_provider_has_a_secret_field_and_unique_field_names() {
        for d in &CATALOGUE {
            assert!(
                d.fields.iter().any(|f| f.secret) || d.kind == ProviderKind::BiggerBrains,
                "{}",
                d.name
            );
            let mut names: Vec<_> = d.fields.iter().map(|f| f.name).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), d.fields.len(), "{}", d.name);
        }
    }
}
