//! Microsoft 365 rules, pure: what a tenant connection's state is and how an admin fixes
//! it (from Entra's AADSTS codes and Graph's answers), Secure Score arithmetic, control
//! severity and status, licence friendly names, the permissions the app asks for.

use serde::{Deserialize, Serialize};

/// The application permissions the mspbridge app registration needs, and why.
pub const PERMISSIONS: [(&str, &str); 4] = [
    (
        "Organization.Read.All",
        "the tenant's name, id and verified domains (domains match the tenant to its company)",
    ),
    (
        "User.Read.All",
        "users with their licences, importable as the company's portal users",
    ),
    (
        "Directory.Read.All",
        "groups, domains and subscribed licences (seats bought and used)",
    ),
    (
        "SecurityEvents.Read.All",
        "Secure Score and its control profiles (Microsoft also asks a Global or Security Administrator to consent)",
    ),
];

/// Where one tenant connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    /// Consented; the last sync of it worked (or none ran yet).
    Connected,
    /// AADSTS700016: the app is not in that tenant (never consented, or removed there).
    NotConsented,
    /// AADSTS7000215: the client secret is wrong.
    SecretInvalid,
    /// AADSTS7000222: the client secret expired.
    SecretExpired,
    /// A 403 from Graph: consent lacks a permission (Secure Score, usually).
    PermissionMissing,
    /// AADSTS90002: no such tenant.
    TenantNotFound,
    /// Anything else; the detail says what.
    Error,
    /// The admin disconnected it; kept for its history, never synced.
    Disconnected,
}

impl TenantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Connected => "connected",
            TenantStatus::NotConsented => "not_consented",
            TenantStatus::SecretInvalid => "secret_invalid",
            TenantStatus::SecretExpired => "secret_expired",
            TenantStatus::PermissionMissing => "permission_missing",
            TenantStatus::TenantNotFound => "tenant_not_found",
            TenantStatus::Error => "error",
            TenantStatus::Disconnected => "disconnected",
        }
    }

    /// Unknown words read as `Error` (a newer version may have written them).
    pub fn parse(s: &str) -> Self {
        [
            TenantStatus::Connected,
            TenantStatus::NotConsented,
            TenantStatus::SecretInvalid,
            TenantStatus::SecretExpired,
            TenantStatus::PermissionMissing,
            TenantStatus::TenantNotFound,
            TenantStatus::Disconnected,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
        .unwrap_or(TenantStatus::Error)
    }

    pub fn label(self) -> &'static str {
        match self {
            TenantStatus::Connected => "Connected",
            TenantStatus::NotConsented => "Consent missing",
            TenantStatus::SecretInvalid => "Credential refused",
            TenantStatus::SecretExpired => "Secret expired",
            TenantStatus::PermissionMissing => "Permission missing",
            TenantStatus::TenantNotFound => "Tenant not found",
            TenantStatus::Error => "Error",
            TenantStatus::Disconnected => "Disconnected",
        }
    }

    /// What the admin does about it, in words.
    pub fn fix(self) -> &'static str {
        match self {
            TenantStatus::Connected | TenantStatus::Disconnected => "",
            TenantStatus::NotConsented => {
                "The app is not installed in this tenant (AADSTS700016): the tenant's admin must consent again — use Reconnect, or Generate link for the client's admin."
            }
            TenantStatus::SecretInvalid => {
                "Microsoft refused the app's credential (AADSTS7000215: a wrong secret, paste the secret's Value, not its ID; AADSTS700027: a certificate not uploaded to the app registration, or a key that does not match it): fix it under Microsoft 365 > Update credentials."
            }
            TenantStatus::SecretExpired => {
                "The client secret expired (AADSTS7000222): create a new secret under Entra ID > App registrations > Certificates & secrets and paste it under Update credentials."
            }
            TenantStatus::PermissionMissing => {
                "The consent lacks a permission Secure Score needs (SecurityEvents.Read.All): add it to the app registration, then Reconnect so a Global or Security Administrator consents again."
            }
            TenantStatus::TenantNotFound => {
                "Microsoft knows no such tenant (AADSTS90002): Disconnect it and connect the company again."
            }
            TenantStatus::Error => {
                "The last sync of this tenant failed; see the detail and the sync log. It is retried at the next run."
            }
        }
    }

    /// A status no sync of this tenant can change: retried only after the admin acts
    /// (new consent or credentials), never blindly at every run. Secret problems are
    /// the app's, so they clear when the credentials change.
    pub fn waits_for_admin(self) -> bool {
        matches!(
            self,
            TenantStatus::NotConsented
                | TenantStatus::TenantNotFound
                | TenantStatus::SecretInvalid
                | TenantStatus::SecretExpired
                | TenantStatus::Disconnected
        )
    }
}

/// The tenant status an Entra token error means, by its AADSTS codes.
pub fn status_of_token_error(codes: &[u64]) -> TenantStatus {
    if codes.contains(&700016) {
        TenantStatus::NotConsented
    } else if codes.contains(&7000222) {
        TenantStatus::SecretExpired
    } else if [7000215, 7000216, 700027, 700024, 700023]
        .iter()
        .any(|c| codes.contains(c))
    {
        TenantStatus::SecretInvalid
    } else if codes.contains(&90002) {
        TenantStatus::TenantNotFound
    } else {
        TenantStatus::Error
    }
}

/// Secure Score as a share of its maximum, in percent with one decimal.
pub fn score_percent(current: f64, max: f64) -> f64 {
    if max <= 0.0 || !current.is_finite() || !max.is_finite() {
        return 0.0;
    }
    ((current / max * 100.0) * 10.0).round() / 10.0
}

/// A control's severity, from Microsoft's rank (1 = the most important control) and tier.
/// Microsoft publishes no severity; this is the product's reading, stated in the docs:
/// a Core control in the first 10 is Critical, the first 25 High, the first 50 Medium,
/// the rest Low; a "Defense in Depth" or "Advanced" control is one step lower.
pub fn severity(rank: Option<i64>, tier: Option<&str>) -> &'static str {
    const LEVELS: [&str; 4] = ["Critical", "High", "Medium", "Low"];
    let by_rank = match rank {
        Some(r) if r <= 10 => 0,
        Some(r) if r <= 25 => 1,
        Some(r) if r <= 50 => 2,
        Some(_) => 3,
        None => 2,
    };
    let core = tier.is_none_or(|t| t.eq_ignore_ascii_case("core"));
    LEVELS[if core { by_rank } else { (by_rank + 1).min(3) }]
}

/// A control's status: Completed at full marks, "Third party" / "Risk accepted" where the
/// admin said so in Microsoft's portal (the last `controlStateUpdates` entry), In progress
/// with some points, else Open.
pub fn control_status(score: Option<f64>, max: Option<f64>, state: Option<&str>) -> &'static str {
    match state.map(str::to_ascii_lowercase).as_deref() {
        Some("thirdparty") => return "Third party",
        Some("ignored") | Some("ignore") => return "Risk accepted",
        _ => {}
    }
    match (score, max) {
        (Some(s), Some(m)) if m > 0.0 && s >= m => "Completed",
        (Some(s), _) if s > 0.0 => "In progress",
        _ => "Open",
    }
}

/// Microsoft's product names for the SKUs MSPs meet most (from Microsoft's "product names
/// and service plan identifiers for licensing" list); `None` for others, shown by their
/// part number.
pub fn sku_friendly_name(part_number: &str) -> Option<&'static str> {
    Some(match part_number {
        "O365_BUSINESS_ESSENTIALS" => "Microsoft 365 Business Basic",
        "O365_BUSINESS_PREMIUM" => "Microsoft 365 Business Standard",
        "SPB" => "Microsoft 365 Business Premium",
        "O365_BUSINESS" => "Microsoft 365 Apps for business",
        "SPE_E3" => "Microsoft 365 E3",
        "SPE_E5" => "Microsoft 365 E5",
        "SPE_F1" => "Microsoft 365 F3",
        "STANDARDPACK" => "Office 365 E1",
        "ENTERPRISEPACK" => "Office 365 E3",
        "ENTERPRISEPREMIUM" => "Office 365 E5",
        "DESKLESSPACK" => "Office 365 F3",
        "EXCHANGESTANDARD" => "Exchange Online (Plan 1)",
        "EXCHANGEENTERPRISE" => "Exchange Online (Plan 2)",
        "EXCHANGEARCHIVE_ADDON" => "Exchange Online Archiving for Exchange Online",
        "AAD_PREMIUM" => "Microsoft Entra ID P1",
        "AAD_PREMIUM_P2" => "Microsoft Entra ID P2",
        "EMS" => "Enterprise Mobility + Security E3",
        "INTUNE_A" => "Intune Plan 1",
        "POWER_BI_STANDARD" => "Power BI (free)",
        "POWER_BI_PRO" => "Power BI Pro",
        "FLOW_FREE" => "Microsoft Power Automate Free",
        "PROJECTPROFESSIONAL" => "Project Plan 3",
        "VISIOCLIENT" => "Visio Plan 2",
        "TEAMS_EXPLORATORY" => "Microsoft Teams Exploratory",
        "Microsoft_Teams_Premium" => "Microsoft Teams Premium",
        "ATP_ENTERPRISE" => "Microsoft Defender for Office 365 (Plan 1)",
        "WIN_DEF_ATP" => "Microsoft Defender for Endpoint P2",
        _ => return None,
    })
}

/// A licence's name for people: the friendly name, else the part number.
pub fn sku_display_name(part_number: &str) -> String {
    sku_friendly_name(part_number)
        .map(str::to_string)
        .unwrap_or_else(|| part_number.to_string())
}

/// How long a consent started from the portal (Connect, Reconnect, Add tenant) may take.
pub const SESSION_CONSENT_MINUTES: i64 = 15;
/// How long a consent link for the client's own admin works.
pub const LINK_CONSENT_DAYS: i64 = 7;

/// A tenant as its organization record describes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantOrg {
    pub tenant_id: String,
    pub display_name: String,
    pub domains: Vec<TenantDomain>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantDomain {
    pub name: String,
    pub is_default: bool,
    pub is_initial: bool,
    pub is_verified: bool,
}

/// A tenant's user, normalised (e-mail from `mail` or its documented fallbacks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantUser {
    pub external_id: String,
    pub display_name: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub user_principal_name: Option<String>,
    pub email: Option<String>,
    pub enabled: bool,
    pub job_title: Option<String>,
    pub user_type: Option<String>,
    /// `skuId`s of the licences assigned.
    pub sku_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantGroup {
    pub external_id: String,
    pub name: String,
    pub mail: Option<String>,
    /// "Microsoft 365", "Security", "Mail-enabled security" or "Distribution".
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantLicence {
    pub sku_id: String,
    pub part_number: String,
    pub name: String,
    pub status: String,
    pub consumed: i64,
    pub enabled: i64,
    pub suspended: i64,
    pub warning: i64,
}

/// One daily Secure Score snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreSnapshot {
    pub external_id: String,
    pub created: chrono::DateTime<chrono::Utc>,
    pub current: f64,
    pub max: f64,
    pub active_users: Option<i64>,
    pub licensed_users: Option<i64>,
    /// (basis, average score): AllTenants, TotalSeats, IndustryTypes.
    pub averages: Vec<(String, f64)>,
    pub controls: Vec<ControlScore>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ControlScore {
    pub name: String,
    pub category: Option<String>,
    pub score: Option<f64>,
}

/// A Secure Score control's profile: what it is and how to fix it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlProfile {
    pub external_id: String,
    pub title: String,
    pub category: Option<String>,
    pub service: Option<String>,
    pub max_score: Option<f64>,
    pub rank: Option<i64>,
    pub tier: Option<String>,
    pub remediation: Option<String>,
    pub action_url: Option<String>,
    pub deprecated: bool,
    /// The last state an admin set in Microsoft's portal (Default, Ignored, ThirdParty…).
    pub state: Option<String>,
}

/// A customer tenant the partner tenant has a delegated admin relationship with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CustomerTenant {
    pub tenant_id: String,
    pub display_name: String,
    pub default_domain: Option<String>,
    pub relationship_status: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_errors_name_the_fix() {
        assert_eq!(status_of_token_error(&[700016]), TenantStatus::NotConsented);
        assert_eq!(
            status_of_token_error(&[7000222]),
            TenantStatus::SecretExpired
        );
        assert_eq!(
            status_of_token_error(&[7000215]),
            TenantStatus::SecretInvalid
        );
        assert_eq!(
            status_of_token_error(&[90002]),
            TenantStatus::TenantNotFound
        );
        assert_eq!(status_of_token_error(&[50058]), TenantStatus::Error);
        for s in [
            TenantStatus::NotConsented,
            TenantStatus::SecretExpired,
            TenantStatus::SecretInvalid,
            TenantStatus::PermissionMissing,
        ] {
            assert!(!s.fix().is_empty());
            assert_eq!(TenantStatus::parse(s.as_str()), s);
        }
        assert_eq!(TenantStatus::parse("something new"), TenantStatus::Error);
    }

    #[test]
    fn severity_follows_rank_and_tier() {
        assert_eq!(severity(Some(1), Some("Core")), "Critical");
        assert_eq!(severity(Some(1), Some("Defense in Depth")), "High");
        assert_eq!(severity(Some(20), Some("Core")), "High");
        assert_eq!(severity(Some(40), Some("Advanced")), "Low");
        assert_eq!(severity(Some(90), None), "Low");
        assert_eq!(severity(None, None), "Medium");
    }

    #[test]
    fn control_status_reads_state_then_points() {
        assert_eq!(control_status(Some(10.0), Some(10.0), None), "Completed");
        assert_eq!(
            control_status(Some(3.0), Some(10.0), Some("Default")),
            "In progress"
        );
        assert_eq!(control_status(Some(0.0), Some(10.0), None), "Open");
        assert_eq!(
            control_status(Some(0.0), Some(10.0), Some("thirdParty")),
            "Third party"
        );
        assert_eq!(control_status(None, None, Some("ignored")), "Risk accepted");
    }

    #[test]
    fn percent_and_names() {
        assert_eq!(score_percent(45.5, 91.0), 50.0);
        assert_eq!(score_percent(1.0, 0.0), 0.0);
        assert_eq!(sku_display_name("SPE_E3"), "Microsoft 365 E3");
        assert_eq!(sku_display_name("CONTOSO_X"), "CONTOSO_X");
    }
}
