//! Microsoft Graph v1.0 and Entra token wire types: only the fields the product uses are
//! required; everything else is optional, `null`-tolerant or ignored, and a record that
//! does not read is rejected alone (see [`records`]).

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::lenient::{nullable, odd_as_default};

#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

/// Entra's token error: `{"error","error_description","error_codes":[…]}`.
#[derive(Debug, Default, Deserialize)]
pub struct TokenError {
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub error_description: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub error_codes: Vec<u64>,
}

/// Graph's error: `{"error":{"code","message","innerError":{"request-id"}}}`.
#[derive(Debug, Default, Deserialize)]
pub struct GraphErrorBody {
    #[serde(default)]
    pub error: Option<GraphErrorDetail>,
}

#[derive(Debug, Default, Deserialize)]
pub struct GraphErrorDetail {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default, rename = "innerError")]
    pub inner_error: Option<InnerError>,
}

#[derive(Debug, Default, Deserialize)]
pub struct InnerError {
    #[serde(default, rename = "request-id")]
    pub request_id: Option<String>,
}

/// A collection page: `value`, `@odata.nextLink`, `@odata.deltaLink`.
#[derive(Debug, Deserialize)]
pub struct Page {
    #[serde(default, deserialize_with = "nullable")]
    pub value: Vec<Value>,
    #[serde(default, rename = "@odata.nextLink")]
    pub next_link: Option<String>,
    #[serde(default, rename = "@odata.deltaLink")]
    pub delta_link: Option<String>,
}

/// Each value read as `T`, those that do not read rejected with the reason (and their `id`
/// where they have one): one odd record never fails a page.
pub fn records<T: DeserializeOwned>(values: Vec<Value>) -> (Vec<T>, Vec<String>) {
    let mut ok = Vec::with_capacity(values.len());
    let mut rejected = Vec::new();
    for v in values {
        let id = v
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("(no id)")
            .to_string();
        match serde_json::from_value::<T>(v) {
            Ok(t) => ok.push(t),
            Err(e) => rejected.push(format!("{id}: {e}")),
        }
    }
    (ok, rejected)
}

#[derive(Debug, Clone, Deserialize)]
pub struct Organization {
    pub id: String,
    #[serde(default, rename = "displayName")]
    pub display_name: Option<String>,
    #[serde(
        default,
        rename = "verifiedDomains",
        deserialize_with = "odd_as_default"
    )]
    pub verified_domains: Vec<VerifiedDomain>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct VerifiedDomain {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "isDefault", deserialize_with = "nullable")]
    pub is_default: bool,
    #[serde(default, rename = "isInitial", deserialize_with = "nullable")]
    pub is_initial: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Domain {
    pub id: String,
    #[serde(default, rename = "isDefault", deserialize_with = "nullable")]
    pub is_default: bool,
    #[serde(default, rename = "isInitial", deserialize_with = "nullable")]
    pub is_initial: bool,
    #[serde(default, rename = "isVerified", deserialize_with = "nullable")]
    pub is_verified: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub id: String,
    #[serde(default, rename = "displayName")]
    pub display_name: Option<String>,
    #[serde(default, rename = "givenName")]
    pub given_name: Option<String>,
    #[serde(default)]
    pub surname: Option<String>,
    #[serde(default, rename = "userPrincipalName")]
    pub user_principal_name: Option<String>,
    #[serde(default)]
    pub mail: Option<String>,
    /// The second e-mail field: where `mail` is empty.
    #[serde(default, rename = "otherMails", deserialize_with = "odd_as_default")]
    pub other_mails: Vec<String>,
    /// `SMTP:primary@…` (upper-case prefix = primary), `smtp:alias@…`.
    #[serde(
        default,
        rename = "proxyAddresses",
        deserialize_with = "odd_as_default"
    )]
    pub proxy_addresses: Vec<String>,
    #[serde(default, rename = "accountEnabled")]
    pub account_enabled: Option<bool>,
    #[serde(default, rename = "jobTitle")]
    pub job_title: Option<String>,
    #[serde(default, rename = "userType")]
    pub user_type: Option<String>,
    #[serde(
        default,
        rename = "assignedLicenses",
        deserialize_with = "odd_as_default"
    )]
    pub assigned_licenses: Vec<AssignedLicense>,
    /// Delta: `{"reason": "deleted" | "changed"}` for a user gone from the tenant.
    #[serde(default, rename = "@removed")]
    pub removed: Option<Value>,
}

impl User {
    /// The user's e-mail: `mail`, else the primary SMTP proxy address, else the first of
    /// `otherMails`, else a UPN that is not a guest's `#EXT#` one.
    pub fn email(&self) -> Option<String> {
        let clean = |s: &str| Some(s.trim().to_lowercase()).filter(|s| s.contains('@'));
        self.mail
            .as_deref()
            .and_then(clean)
            .or_else(|| {
                self.proxy_addresses
                    .iter()
                    .find_map(|p| p.strip_prefix("SMTP:").and_then(clean))
            })
            .or_else(|| self.other_mails.iter().find_map(|m| clean(m)))
            .or_else(|| {
                self.user_principal_name
                    .as_deref()
                    .filter(|u| !u.contains("#EXT#"))
                    .and_then(clean)
            })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct AssignedLicense {
    #[serde(default, rename = "skuId")]
    pub sku_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Group {
    pub id: String,
    #[serde(default, rename = "displayName")]
    pub display_name: Option<String>,
    #[serde(default)]
    pub mail: Option<String>,
    #[serde(default, rename = "groupTypes", deserialize_with = "odd_as_default")]
    pub group_types: Vec<String>,
    #[serde(default, rename = "securityEnabled")]
    pub security_enabled: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SubscribedSku {
    #[serde(rename = "skuId")]
    pub sku_id: String,
    #[serde(default, rename = "skuPartNumber")]
    pub sku_part_number: Option<String>,
    #[serde(default, rename = "capabilityStatus")]
    pub capability_status: Option<String>,
    #[serde(default, rename = "consumedUnits", deserialize_with = "odd_as_default")]
    pub consumed_units: i64,
    #[serde(default, rename = "prepaidUnits", deserialize_with = "odd_as_default")]
    pub prepaid_units: PrepaidUnits,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PrepaidUnits {
    #[serde(default, deserialize_with = "odd_as_default")]
    pub enabled: i64,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub suspended: i64,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub warning: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SecureScore {
    pub id: String,
    #[serde(rename = "createdDateTime")]
    pub created: chrono::DateTime<chrono::Utc>,
    #[serde(default, rename = "currentScore", deserialize_with = "odd_as_default")]
    pub current_score: f64,
    #[serde(default, rename = "maxScore", deserialize_with = "odd_as_default")]
    pub max_score: f64,
    #[serde(default, rename = "activeUserCount")]
    pub active_user_count: Option<i64>,
    #[serde(default, rename = "licensedUserCount")]
    pub licensed_user_count: Option<i64>,
    #[serde(
        default,
        rename = "averageComparativeScores",
        deserialize_with = "odd_as_default"
    )]
    pub averages: Vec<AverageScore>,
    #[serde(default, rename = "controlScores", deserialize_with = "odd_as_default")]
    pub control_scores: Vec<ControlScore>,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
pub struct AverageScore {
    #[serde(default)]
    pub basis: Option<String>,
    #[serde(default, rename = "averageScore")]
    pub average_score: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
pub struct ControlScore {
    #[serde(default, rename = "controlName")]
    pub control_name: Option<String>,
    #[serde(default, rename = "controlCategory")]
    pub control_category: Option<String>,
    #[serde(default)]
    pub score: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ControlProfile {
    pub id: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default, rename = "controlCategory")]
    pub control_category: Option<String>,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default, rename = "maxScore", deserialize_with = "odd_as_default")]
    pub max_score: Option<f64>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub rank: Option<i64>,
    #[serde(default)]
    pub tier: Option<String>,
    #[serde(default)]
    pub remediation: Option<String>,
    #[serde(default, rename = "actionUrl")]
    pub action_url: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub deprecated: bool,
    #[serde(
        default,
        rename = "controlStateUpdates",
        deserialize_with = "odd_as_default"
    )]
    pub state_updates: Vec<ControlStateUpdate>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ControlStateUpdate {
    #[serde(default)]
    pub state: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DelegatedAdminRelationship {
    pub id: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default, rename = "endDateTime")]
    pub end: Option<String>,
    pub customer: RelationshipCustomer,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RelationshipCustomer {
    #[serde(rename = "tenantId")]
    pub tenant_id: String,
    #[serde(default, rename = "displayName")]
    pub display_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TenantInformation {
    #[serde(rename = "tenantId")]
    pub tenant_id: String,
    #[serde(default, rename = "displayName")]
    pub display_name: Option<String>,
    #[serde(default, rename = "defaultDomainName")]
    pub default_domain_name: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_user_without_mail_takes_the_documented_fallbacks() {
        let u: User = serde_json::from_value(json!({"id": "1", "mail": null,
            "proxyAddresses": ["smtp:alias@x.example", "SMTP:Pat.Kim@X.example"], "otherMails": ["p@home.example"]}))
        .unwrap();
        assert_eq!(u.email().as_deref(), Some("pat.kim@x.example"));
        let u: User = serde_json::from_value(json!({"id": "2", "otherMails": ["p@home.example"], "userPrincipalName": "p@x.example"})).unwrap();
        assert_eq!(u.email().as_deref(), Some("p@home.example"));
        let u: User = serde_json::from_value(
            json!({"id": "3", "userPrincipalName": "g_ext.com#EXT#@x.onmicrosoft.com"}),
        )
        .unwrap();
        assert_eq!(u.email(), None);
    }

    #[test]
    fn one_odd_record_is_rejected_alone() {
        let (ok, bad): (Vec<User>, _) = records(vec![
            json!({"id": "1", "assignedLicenses": "weird", "accountEnabled": true}),
            json!({"displayName": "no id"}),
        ]);
        assert_eq!(ok.len(), 1);
        assert_eq!(bad.len(), 1);
        assert!(bad[0].contains("id"), "{bad:?}");
    }
}
