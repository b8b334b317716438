//! ConnectWise Asio platform API 2.2.8 wire types. Every field is optional and read
//! leniently (an odd value in a field the product does not rely on reads as absent), enum
//! values are kept as sent, ids may come as numbers. Endpoints come grouped by category
//! (`platform`, `network`, `cloud`) and by company and site. The sandbox serialises the
//! same types.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

use crate::lenient::odd_as_default;

/// `POST /v1/token` answer.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    /// The granted scopes, space-separated.
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default, deserialize_with = "crate::lenient::integer")]
    pub expires_in: Option<i64>,
}

/// One bucket of `GET /v1/rate_limits`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RateBucket {
    #[serde(default, deserialize_with = "crate::lenient::integer")]
    pub limit: Option<i64>,
    #[serde(default, deserialize_with = "crate::lenient::integer")]
    pub remaining: Option<i64>,
    /// Epoch seconds.
    #[serde(default, deserialize_with = "crate::lenient::integer")]
    pub reset: Option<i64>,
}

/// `GET /v1/rate_limits`: `{resources: {group: {operation: bucket}}}`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RateLimits {
    #[serde(default, deserialize_with = "odd_as_default")]
    pub resources: Option<BTreeMap<String, BTreeMap<String, RateBucket>>>,
}

/// A company's id in another product (`CompanyIdMappingReference`): `productId` names the
/// product (a PSA for the identities the engine uses), `externalId` the id there.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalId {
    #[serde(default, deserialize_with = "id_text")]
    pub company_id: Option<String>,
    #[serde(default, deserialize_with = "id_text")]
    pub external_id: Option<String>,
    #[serde(default, deserialize_with = "id_text")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "id_text")]
    pub product_id: Option<String>,
    #[serde(default, deserialize_with = "id_text")]
    pub product_instance_id: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ActivityStatus {
    #[serde(default, deserialize_with = "odd_as_default")]
    pub active_flag: Option<bool>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Reference {
    #[serde(default, deserialize_with = "id_text")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub name: Option<String>,
}

/// A company (`GET /api/platform/v1/company/companies`, an unpaged array).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Company {
    #[serde(default, deserialize_with = "id_text")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub friendly_name: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub description: Option<String>,
    /// Entries that cannot be read are dropped, not the company.
    #[serde(default, deserialize_with = "external_ids")]
    pub external_ids: Option<Vec<ExternalId>>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub activity_status: Option<ActivityStatus>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub primary_site: Option<Reference>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub created_date: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub updated_date: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub deleted_date: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub inactive_date: Option<String>,
}

/// A site (`GET /api/platform/v1/company/sites`); read by the connection test only.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Site {
    #[serde(default, deserialize_with = "id_text")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub company: Option<Reference>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub time_zone: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Os {
    #[serde(default, deserialize_with = "odd_as_default")]
    pub product: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub version: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub build_number: Option<String>,
    #[serde(default, rename = "type", deserialize_with = "odd_as_default")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub manufacturer: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct System {
    #[serde(default, deserialize_with = "odd_as_default")]
    pub product: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub manufacturer: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub model: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub serial_number: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub system_name: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub domain: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub category: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Antivirus {
    #[serde(default, deserialize_with = "odd_as_default")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub version: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub application_name: Option<String>,
}

/// An endpoint of any category (`platformEndpoint`, `networkEndpoint`, `cloudEndpoint`),
/// the projected fields only.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    #[serde(
        default,
        rename = "endpointID",
        alias = "endpointId",
        deserialize_with = "id_text"
    )]
    pub endpoint_id: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub device_name: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub friendly_name: Option<String>,
    /// Kept as sent (`MANAGED_ENDPOINT`, …).
    #[serde(default, deserialize_with = "odd_as_default")]
    pub resource_type: Option<String>,
    /// Kept as sent (`Desktop`, `Server`, `Firewall`, whatever comes next).
    #[serde(default, deserialize_with = "odd_as_default")]
    pub endpoint_type: Option<String>,
    /// Desktop / Server / Firewall / Mobile / whatever comes next.
    #[serde(default, rename = "type", deserialize_with = "odd_as_default")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub sub_resource_type: Option<String>,
    /// Host / Physical / Guest.
    #[serde(default, deserialize_with = "odd_as_default")]
    pub virtual_type: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub ip_address: Option<Vec<String>>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub remote_address: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub os: Option<Os>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub system: Option<System>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub anti_viruses: Option<Vec<Antivirus>>,
    /// A timestamp that cannot be read rejects the row, naming the field.
    #[serde(default, deserialize_with = "timestamp")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "timestamp")]
    pub modified_at: Option<DateTime<Utc>>,
    #[serde(default, rename = "agentInstalledUTC", deserialize_with = "timestamp")]
    pub agent_installed_utc: Option<DateTime<Utc>>,
}

/// One company/site group of an endpoints page, its endpoints unread: each is read on its
/// own so one bad row is rejected alone.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawGroup {
    #[serde(
        default,
        rename = "companyID",
        alias = "companyId",
        deserialize_with = "id_text"
    )]
    pub company_id: Option<String>,
    #[serde(
        default,
        rename = "siteID",
        alias = "siteId",
        deserialize_with = "id_text"
    )]
    pub site_id: Option<String>,
    #[serde(default)]
    pub endpoints: Option<Vec<Box<serde_json::value::RawValue>>>,
}

/// `POST /api/platform/v2/device/categories/{category}/endpoints`.
#[derive(Debug, Default, Deserialize)]
pub struct RawEndpoints {
    #[serde(default)]
    pub platform: Option<Vec<RawGroup>>,
    #[serde(default)]
    pub network: Option<Vec<RawGroup>>,
    #[serde(default)]
    pub cloud: Option<Vec<RawGroup>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Heartbeat {
    #[serde(default, rename = "EndpointID", deserialize_with = "id_text")]
    pub endpoint_id: Option<String>,
    #[serde(default, rename = "DcDateTimeUTC", deserialize_with = "odd_as_default")]
    pub dc_date_time_utc: Option<String>,
    #[serde(default, rename = "Availability", deserialize_with = "odd_as_default")]
    pub availability: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct HeartbeatGroup {
    #[serde(default, rename = "clientID", deserialize_with = "id_text")]
    pub client_id: Option<String>,
    #[serde(default, rename = "siteID", deserialize_with = "id_text")]
    pub site_id: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub endpoints: Option<Vec<Heartbeat>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct HeartbeatFailure {
    #[serde(default, rename = "resourceType", deserialize_with = "odd_as_default")]
    pub resource_type: Option<String>,
    #[serde(default, deserialize_with = "id_text")]
    pub resource: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub error: Option<String>,
}

/// `GET /api/platform/v2/device/endpoints/heartbeat`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatResponse {
    /// success | partial_success | failed | whatever comes next.
    #[serde(default, deserialize_with = "odd_as_default")]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub successful_records: Option<Vec<HeartbeatGroup>>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub failed_records: Option<Vec<HeartbeatFailure>>,
}

/// A ticket status (`GET /api/platform/v1/service/ticketing/statuses`, an unpaged array):
/// `category` New | InProgress | Closed (kept as sent).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TicketStatus {
    #[serde(default, deserialize_with = "id_text")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub category: Option<String>,
}

/// A service ticket (`GET /api/platform/v2/service/ticketing/tickets`), as far as an alert
/// needs it; `assets` are the endpoints it concerns.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Ticket {
    #[serde(default, deserialize_with = "id_text")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "id_text")]
    pub number: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub summary: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub priority: Option<Reference>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub status: Option<Reference>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub company: Option<Reference>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub site: Option<Reference>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub assets: Option<Vec<Reference>>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub source: Option<Reference>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub service_board: Option<Reference>,
    #[serde(default, rename = "type", deserialize_with = "odd_as_default")]
    pub kind: Option<Reference>,
    /// A timestamp that cannot be read rejects the row, naming the field.
    #[serde(default, deserialize_with = "timestamp")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "timestamp")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// One page of tickets: the rows (read one by one) and how many match in all. Asking past
/// the end answers no rows *and* a total of 0.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawTickets {
    #[serde(default)]
    pub tickets: Option<Vec<Box<serde_json::value::RawValue>>>,
    #[serde(default, deserialize_with = "crate::lenient::integer")]
    pub total_count: Option<i64>,
}

/// Text, `null` as `None`; another type is refused (the field names what went wrong).
fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    crate::lenient::nullable::<D, Option<String>>(d)
}

/// An identifier as text: a string, or a number as its digits; `""` as `None`.
pub fn id_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    use serde_json::Value;
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => Ok(Some(s.trim().to_string())),
        Value::Number(n) => Ok(Some(n.to_string())),
        other => Err(serde::de::Error::custom(format!(
            "{other} is not an identifier"
        ))),
    }
}

/// External ids: entries that do not read as one are dropped.
fn external_ids<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<ExternalId>>, D::Error> {
    use serde_json::Value;
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => Some(
            items
                .into_iter()
                .filter_map(|v| serde_json::from_value(v).ok())
                .collect(),
        ),
        _ => None,
    })
}

/// An RFC 3339 timestamp; `null` and `""` as `None`, anything else refused.
pub fn timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    use serde_json::Value;
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => parse_time(&s)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("'{s}' is not an RFC 3339 timestamp"))),
        other => Err(serde::de::Error::custom(format!(
            "{other} is not an RFC 3339 timestamp"
        ))),
    }
}

/// RFC 3339, or the same without an offset (read as UTC).
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|n| n.and_utc())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn companies_keep_readable_external_ids_and_odd_values_read_as_absent() {
        let c: Company = serde_json::from_str(
            r#"{"id":"c1","name":"Acme","externalIds":[{"productId":"ConnectWise Manage","externalId":19},7,{"productId":null}],"activityStatus":"weird","friendlyName":3}"#,
        )
        .unwrap();
        let ids = c.external_ids.unwrap();
        assert_eq!(ids.len(), 2);
        assert_eq!(ids[0].external_id.as_deref(), Some("19"));
        assert_eq!(c.activity_status, None);
        assert_eq!(c.friendly_name, None);
    }

    #[test]
    fn timestamps_read_rfc3339_and_refuse_words() {
        assert!(parse_time("2026-11-28T05:16:43.565Z").is_some());
        assert!(parse_time("2026-11-28T05:16:43").is_some());
        assert!(parse_time("yesterday").is_none());
    }
}
