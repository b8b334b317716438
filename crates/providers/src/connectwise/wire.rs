//! ConnectWise Manage REST 3.0 wire types, field names as the vendor sends them.
//! The client deserialises them and the sandbox serialises them, so both sides
//! agree by construction; tests pin the JSON shape against the vendor's field names.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `GET /login/companyinfo/{companyId}` (no auth): where the API lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CompanyInfo {
    pub company_name: String,
    /// E.g. `v2025_1/` (with the trailing slash, as ConnectWise returns it).
    pub codebase: String,
    pub version_code: String,
    #[serde(rename = "CompanyID")]
    pub company_id: String,
    pub is_cloud: bool,
    pub site_url: String,
}

/// The error body of every ConnectWise error response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub errors: Option<Vec<ErrorItem>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorItem {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// A `{id, name}` reference as ConnectWise embeds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ref {
    pub id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompanyRef {
    pub id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Company {
    pub id: i64,
    pub identifier: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Ref>,
    #[serde(default)]
    pub types: Vec<Ref>,
    #[serde(default)]
    pub deleted_flag: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_contact: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub website: Option<String>,
    #[serde(rename = "_info", default)]
    pub info: Info,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompanyStatus {
    pub id: i64,
    pub name: String,
    #[serde(default)]
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
    pub id: i64,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommunicationItem {
    pub id: i64,
    #[serde(rename = "type")]
    pub kind: Ref,
    pub value: String,
    #[serde(default)]
    pub default_flag: bool,
    /// "Email", "Phone" or "Fax".
    pub communication_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Contact {
    pub id: i64,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<CompanyRef>,
    #[serde(default)]
    pub inactive_flag: bool,
    /// The primary contact of its company.
    #[serde(default)]
    pub default_flag: bool,
    #[serde(default)]
    pub types: Vec<Ref>,
    #[serde(default)]
    pub communication_items: Vec<CommunicationItem>,
    #[serde(rename = "_info", default)]
    pub info: Info,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub id: i64,
    pub identifier: String,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: String,
    #[serde(default)]
    pub inactive_flag: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_email: Option<String>,
    #[serde(rename = "_info", default)]
    pub info: Info,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Board {
    pub id: i64,
    pub name: String,
    #[serde(default)]
    pub inactive_flag: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ticket {
    pub id: i64,
    pub summary: String,
    pub board: Ref,
    pub status: Ref,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<CompanyRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<Ref>,
    #[serde(default)]
    pub closed_flag: bool,
    /// `type` (a ServiceType reference).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
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
    #[serde(rename = "_info", default)]
    pub info: Info,
}

/// `ServiceNote` (`/service/tickets/{id}/notes`): one of the three flags says where it
/// shows (detail description = the customer-visible discussion, internal analysis =
/// staff only, resolution).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceNote {
    pub id: i64,
    #[serde(default)]
    pub ticket_id: i64,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub detail_description_flag: bool,
    #[serde(default)]
    pub internal_analysis_flag: bool,
    #[serde(default)]
    pub resolution_flag: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    #[serde(default)]
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
    #[serde(default)]
    pub id: i64,
    #[serde(default)]
    pub description: String,
    pub url: String,
    #[serde(default)]
    pub object_id: i64,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub level: String,
    #[serde(default)]
    pub inactive_flag: bool,
    #[serde(default)]
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
            identifier: "ContosoLtd".into(),
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
