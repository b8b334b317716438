//! ConnectWise Manage REST 3.0 wire types, field names as the vendor sends them.
//! The client deserialises them and the sandbox serialises them, so both sides
//! agree by construction; tests pin the JSON shape against the vendor's field names.
//!
//! Read leniently (issue 17): only what the product cannot do without is required (ids,
//! a company's name, a ticket's status, a communication item's value); a used field sent
//! as `null` reads as its default; fields the product does not use never reject a record
//! whatever they hold, and unknown fields are ignored.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::lenient::{nullable, odd_as_default};

/// `GET /login/companyinfo/{companyId}` (no auth): where the API lives. Only the codebase
/// is needed; `SiteUrl` and the versions are not used and may be missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CompanyInfo {
    /// Shown in the test report (the company id stands in when it is missing).
    #[serde(default, deserialize_with = "nullable")]
    pub company_name: String,
    /// E.g. `v2025_1/` (with the trailing slash, as ConnectWise returns it).
    pub codebase: String,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub version_code: String,
    #[serde(rename = "CompanyID", default, deserialize_with = "odd_as_default")]
    pub company_id: String,
    /// `None` when not sent: a `*.myconnectwise.net` site is then taken as cloud.
    #[serde(
        default,
        deserialize_with = "odd_as_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub is_cloud: Option<bool>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub site_url: String,
}

/// The error body of every ConnectWise error response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(default, deserialize_with = "odd_as_default")]
    pub code: String,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub message: String,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub errors: Option<Vec<ErrorItem>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorItem {
    #[serde(default, deserialize_with = "odd_as_default")]
    pub code: String,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// A `{id, name}` reference as ConnectWise embeds them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ref {
    pub id: i64,
    #[serde(
        default,
        deserialize_with = "odd_as_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompanyRef {
    pub id: i64,
    /// Not used (the id is).
    #[serde(
        default,
        deserialize_with = "odd_as_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub identifier: Option<String>,
    #[serde(
        default,
        deserialize_with = "odd_as_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub name: Option<String>,
}

/// `_info` metadata; `lastUpdated` drives incremental sync.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Info {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_entered: Option<DateTime<Utc>>,
}

/// `_info` as a record carries it: `null` or missing reads as empty.
fn info<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Info, D::Error> {
    nullable(d)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Company {
    pub id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Ref>,
    #[serde(default, deserialize_with = "nullable")]
    pub types: Vec<Ref>,
    #[serde(default, deserialize_with = "nullable")]
    pub deleted_flag: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_contact: Option<Ref>,
    /// Not used by the sync.
    #[serde(
        default,
        deserialize_with = "odd_as_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub phone_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub website: Option<String>,
    #[serde(rename = "_info", default, deserialize_with = "info")]
    pub info: Info,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompanyStatus {
    pub id: i64,
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub inactive_flag: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompanyType {
    pub id: i64,
    pub name: String,
}

/// Contact types carry `description`, not `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContactType {
    /// Not used (types are matched by name).
    #[serde(default, deserialize_with = "odd_as_default")]
    pub id: i64,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommunicationItem {
    /// Not used.
    #[serde(default, deserialize_with = "odd_as_default")]
    pub id: i64,
    /// Not used (`communicationType` says what the item is).
    #[serde(
        rename = "type",
        default,
        deserialize_with = "odd_as_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub kind: Option<Ref>,
    #[serde(default, deserialize_with = "nullable")]
    pub value: String,
    #[serde(default, deserialize_with = "nullable")]
    pub default_flag: bool,
    /// "Email", "Phone", "Fax" or any other kind (kept as sent; only "Email" and "Phone"
    /// are read).
    #[serde(default, deserialize_with = "nullable")]
    pub communication_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Contact {
    pub id: i64,
    #[serde(default, deserialize_with = "nullable")]
    pub first_name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub last_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<CompanyRef>,
    #[serde(default, deserialize_with = "nullable")]
    pub inactive_flag: bool,
    /// The primary contact of its company.
    #[serde(default, deserialize_with = "nullable")]
    pub default_flag: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub types: Vec<Ref>,
    #[serde(default, deserialize_with = "nullable")]
    pub communication_items: Vec<CommunicationItem>,
    #[serde(rename = "_info", default, deserialize_with = "info")]
    pub info: Info,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub id: i64,
    /// The login; when missing, the technician is known by its email (or id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub first_name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub last_name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub inactive_flag: bool,
    /// The technician's address: `primaryEmail`, else `officeEmail`, else the address
    /// `defaultEmail` names (members carry no communication items).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub office_email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mobile_email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_email: Option<String>,
    /// Which of the office, mobile and home addresses is the default: "Office",
    /// "Mobile" or "Home" (any other value is kept and names none).
    #[serde(
        default,
        deserialize_with = "odd_as_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub default_email: Option<String>,
    #[serde(rename = "_info", default, deserialize_with = "info")]
    pub info: Info,
}

impl Member {
    /// The member's email, lower-cased: `primaryEmail`, else `officeEmail`, else the
    /// address `defaultEmail` names; `None` when all are empty.
    pub fn email(&self) -> Option<String> {
        let clean = |e: &Option<String>| {
            e.as_deref()
                .map(|e| e.trim().to_lowercase())
                .filter(|e| !e.is_empty())
        };
        let by_default = match self.default_email.as_deref().map(str::trim) {
            Some(k) if k.eq_ignore_ascii_case("mobile") => &self.mobile_email,
            Some(k) if k.eq_ignore_ascii_case("home") => &self.home_email,
            Some(k) if k.eq_ignore_ascii_case("office") => &self.office_email,
            _ => &None,
        };
        clean(&self.primary_email)
            .or_else(|| clean(&self.office_email))
            .or_else(|| clean(by_default))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Board {
    pub id: i64,
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub inactive_flag: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ticket {
    pub id: i64,
    #[serde(default, deserialize_with = "nullable")]
    pub summary: String,
    /// A ticket without a board reads as one with no board name.
    #[serde(default, deserialize_with = "nullable")]
    pub board: Ref,
    pub status: Ref,
    /// Only its name is used: a reference without an id reads as none.
    #[serde(
        default,
        deserialize_with = "odd_as_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub priority: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<CompanyRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<Ref>,
    #[serde(default, deserialize_with = "nullable")]
    pub closed_flag: bool,
    /// `type` (a ServiceType reference); only its name is used.
    #[serde(
        rename = "type",
        default,
        deserialize_with = "odd_as_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub ticket_type: Option<Ref>,
    /// The member who owns the ticket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_date: Option<DateTime<Utc>>,
    /// Free cross-reference text; mspbridge stores its outbox marker here to find a ticket
    /// it created when the answer to the create was lost.
    #[serde(
        rename = "externalXRef",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub external_x_ref: Option<String>,
    #[serde(rename = "_info", default, deserialize_with = "info")]
    pub info: Info,
}

/// `ServiceNote` (`/service/tickets/{id}/notes`): one of the three flags says where it
/// shows (detail description = the customer-visible discussion, internal analysis =
/// staff only, resolution).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceNote {
    pub id: i64,
    /// Not used (notes are read per ticket).
    #[serde(default, deserialize_with = "odd_as_default")]
    pub ticket_id: i64,
    #[serde(default, deserialize_with = "nullable")]
    pub text: String,
    #[serde(default, deserialize_with = "nullable")]
    pub detail_description_flag: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub internal_analysis_flag: bool,
    /// Not used.
    #[serde(default, deserialize_with = "odd_as_default")]
    pub resolution_flag: bool,
    #[serde(
        default,
        deserialize_with = "odd_as_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_created: Option<DateTime<Utc>>,
    /// The member who wrote it (member notes) or the contact (customer updates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<Ref>,
}

/// A board's status (`/service/boards/{id}/statuses`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BoardStatus {
    pub id: i64,
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub closed_status: bool,
}

/// `/service/boards/{id}/types`: a ticket type of a board.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoardType {
    pub id: i64,
    pub name: String,
}

/// `/service/priorities`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Priority {
    pub id: i64,
    pub name: String,
}

/// `/system/callbacks` (CallbackEntry): ConnectWise POSTs to `url` when a record of `type`
/// changes; `isSelfSuppressedFlag` leaves out changes made by the registering member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallbackEntry {
    #[serde(default, deserialize_with = "nullable")]
    pub id: i64,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub description: String,
    pub url: String,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub object_id: i64,
    #[serde(rename = "type", default, deserialize_with = "nullable")]
    pub kind: String,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub level: String,
    #[serde(default, deserialize_with = "nullable")]
    pub inactive_flag: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub is_self_suppressed_flag: bool,
}

/// One JSON-Patch operation (`PatchOperation`): ConnectWise updates with PATCH and an
/// array of these, never PUT (which would clear every field left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchOperation {
    pub op: String,
    pub path: String,
    pub value: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn company_uses_connectwise_field_names() {
        let c = Company {
            id: 250,
            identifier: Some("ContosoLtd".into()),
            name: "Contoso Ltd".into(),
            status: Some(Ref {
                id: 1,
                name: Some("Active".into()),
            }),
            types: vec![Ref {
                id: 5,
                name: Some("Client".into()),
            }],
            deleted_flag: false,
            default_contact: Some(Ref {
                id: 7,
                name: Some("Pat Lee".into()),
            }),
            phone_number: None,
            website: None,
            info: Info {
                last_updated: "2025-01-02T03:04:05Z".parse().ok(),
                date_entered: None,
            },
        };
        let v = serde_json::to_value(&c).unwrap();
        for key in [
            "id",
            "identifier",
            "name",
            "status",
            "types",
            "deletedFlag",
            "defaultContact",
            "_info",
        ] {
            assert!(v.get(key).is_some(), "missing {key}: {v}");
        }
        assert_eq!(v["_info"]["lastUpdated"], "2025-01-02T03:04:05Z");
    }

    #[test]
    fn parses_a_vendor_contact_and_error_body() {
        let contact: Contact = serde_json::from_str(
            r#"{"id":1,"firstName":"Pat","lastName":"Lee","company":{"id":250,"identifier":"ContosoLtd","name":"Contoso"},
               "inactiveFlag":false,"defaultFlag":true,"types":[{"id":3,"name":"Owner"}],
               "communicationItems":[{"id":9,"type":{"id":1,"name":"Email"},"value":"pat@contoso.com","defaultFlag":true,"communicationType":"Email"}],
               "_info":{"lastUpdated":"2025-01-02T03:04:05Z","updatedBy":"x"}, "unknownField": 1}"#,
        )
        .unwrap();
        assert!(contact.default_flag);
        assert_eq!(contact.communication_items[0].communication_type, "Email");
        let e: ErrorBody = serde_json::from_str(
            r#"{"code":"InvalidObject","message":"ticket object is invalid","errors":[{"code":"NotFound","message":"Service Status 17 not found","resource":"ticket","field":"status/id"}]}"#,
        )
        .unwrap();
        assert_eq!(e.errors.unwrap()[0].field.as_deref(), Some("status/id"));
        let info: CompanyInfo = serde_json::from_str(
            r#"{"CompanyName":"Acme","Codebase":"v2025_1/","VersionCode":"v2025.1","VersionNumber":"v4.6.1","CompanyID":"acme","IsCloud":true,"SiteUrl":"na.myconnectwise.net"}"#,
        )
        .unwrap();
        assert_eq!(info.codebase, "v2025_1/");
    }
}
