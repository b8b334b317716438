//! Datto RMM API v2 wire types. The OpenAPI document declares no nullability and closed
//! enums, and types timestamps as date-time strings; in practice every field may be
//! `null` (booleans too, trap 2), timestamps are epoch milliseconds (trap 1; ISO 8601
//! strings are read too), enum values are kept as sent (a new `deviceClass` must not drop
//! a page), user-defined fields run to `udf300` (trap 4) and `alertContext` is polymorphic
//! with a Jackson `@class` tag (trap 3). The sandbox serialises the same types.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize};

use crate::lenient::{nullable, odd_as_default};

/// `POST /auth/oauth/token` answer.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub token_type: Option<String>,
    /// Seconds (Datto: 100 hours).
    #[serde(default, deserialize_with = "crate::lenient::integer")]
    pub expires_in: Option<i64>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub jti: Option<String>,
}

/// Spring OAuth's error body: `{"error": "invalid_grant", "error_description": "Bad credentials"}`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct OAuthError {
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub error_description: Option<String>,
}

/// `GET /v2/system/pagination`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct PaginationConfiguration {
    #[serde(default, deserialize_with = "crate::lenient::integer")]
    pub max: Option<i64>,
}

/// `GET /v2/system/request_rate`: the account's requests in its sliding window (every user
/// and key together) and its limit.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RateStatus {
    #[serde(default, deserialize_with = "crate::lenient::integer")]
    pub sliding_time_window_size_seconds: Option<i64>,
    #[serde(default, deserialize_with = "crate::lenient::integer")]
    pub account_count: Option<i64>,
    #[serde(default, deserialize_with = "crate::lenient::integer")]
    pub account_rate_limit: Option<i64>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub account_cut_off_ratio: Option<f64>,
}

/// `pageDetails` of every list.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PageDetails {
    #[serde(default, deserialize_with = "odd_as_default")]
    pub count: Option<i64>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub total_count: Option<i64>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub prev_page_url: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub next_page_url: Option<String>,
}

/// A list page with its rows unread: each is read on its own so one bad row is rejected
/// alone (`items` is `sites`, `devices` or `alerts`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawPage {
    #[serde(default)]
    pub page_details: Option<PageDetails>,
    #[serde(default, alias = "sites", alias = "devices", alias = "alerts")]
    pub items: Option<Vec<Box<serde_json::value::RawValue>>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DevicesStatus {
    #[serde(default, deserialize_with = "crate::lenient::integer")]
    pub number_of_devices: Option<i64>,
    #[serde(default, deserialize_with = "crate::lenient::integer")]
    pub number_of_online_devices: Option<i64>,
    #[serde(default, deserialize_with = "crate::lenient::integer")]
    pub number_of_offline_devices: Option<i64>,
}

/// A site (`GET /v2/account/sites`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Site {
    #[serde(default, deserialize_with = "crate::lenient::integer")]
    pub id: Option<i64>,
    #[serde(default, deserialize_with = "id_text")]
    pub uid: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub account_uid: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub notes: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub on_demand: Option<bool>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub devices_status: Option<DevicesStatus>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub autotask_company_name: Option<String>,
    /// A string in the spec; numbers are read too.
    #[serde(default, deserialize_with = "id_text")]
    pub autotask_company_id: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub portal_url: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct DeviceType {
    #[serde(default, deserialize_with = "odd_as_default")]
    pub category: Option<String>,
    #[serde(default, rename = "type", deserialize_with = "odd_as_default")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Antivirus {
    #[serde(default, deserialize_with = "odd_as_default")]
    pub antivirus_product: Option<String>,
    /// RunningAndUpToDate | RunningAndNotUpToDate | NotRunning | NotDetected | whatever comes next.
    #[serde(default, deserialize_with = "odd_as_default")]
    pub antivirus_status: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PatchManagement {
    /// NoPolicy | NoData | RebootRequired | InstallError | ApprovedPending | FullyPatched | ….
    #[serde(default, deserialize_with = "odd_as_default")]
    pub patch_status: Option<String>,
    #[serde(default, deserialize_with = "crate::lenient::integer")]
    pub patches_approved_pending: Option<i64>,
    #[serde(default, deserialize_with = "crate::lenient::integer")]
    pub patches_not_approved: Option<i64>,
    #[serde(default, deserialize_with = "crate::lenient::integer")]
    pub patches_installed: Option<i64>,
}

/// A device (`GET /v2/account/devices`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    #[serde(default, deserialize_with = "crate::lenient::integer")]
    pub id: Option<i64>,
    #[serde(default, deserialize_with = "id_text")]
    pub uid: Option<String>,
    #[serde(default, deserialize_with = "crate::lenient::integer")]
    pub site_id: Option<i64>,
    #[serde(default, deserialize_with = "id_text")]
    pub site_uid: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub site_name: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub device_type: Option<DeviceType>,
    #[serde(default, deserialize_with = "text")]
    pub hostname: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub int_ip_address: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub operating_system: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub last_logged_in_user: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub domain: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub cag_version: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub display_version: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub ext_ip_address: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub a64_bit: Option<bool>,
    #[serde(default, deserialize_with = "flag")]
    pub reboot_required: Option<bool>,
    #[serde(default, deserialize_with = "flag")]
    pub online: Option<bool>,
    #[serde(default, deserialize_with = "flag")]
    pub suspended: Option<bool>,
    #[serde(default, deserialize_with = "flag")]
    pub deleted: Option<bool>,
    #[serde(default, deserialize_with = "epoch_ms")]
    pub last_seen: Option<i64>,
    #[serde(default, deserialize_with = "epoch_ms")]
    pub last_reboot: Option<i64>,
    #[serde(default, deserialize_with = "epoch_ms")]
    pub last_audit_date: Option<i64>,
    #[serde(default, deserialize_with = "epoch_ms")]
    pub creation_date: Option<i64>,
    /// `udf1` … `udf300`; values as text (numbers kept as their digits), nulls dropped.
    #[serde(default, deserialize_with = "udfs")]
    pub udf: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub snmp_enabled: Option<bool>,
    /// device | printer | esxihost | rmmnetworkdevice | unknown | whatever comes next.
    #[serde(default, deserialize_with = "odd_as_default")]
    pub device_class: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub portal_url: Option<String>,
    /// `2026-01-01` (sometimes with a time).
    #[serde(default, deserialize_with = "odd_as_default")]
    pub warranty_date: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub antivirus: Option<Antivirus>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub patch_management: Option<PatchManagement>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub software_status: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub web_remote_url: Option<String>,
    /// Manufacturer and model are not in the list answer (they are in the audit); kept
    /// for vendors' future versions and the sandbox.
    #[serde(
        default,
        deserialize_with = "odd_as_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub manufacturer: Option<String>,
    #[serde(
        default,
        deserialize_with = "odd_as_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub model: Option<String>,
    #[serde(
        default,
        deserialize_with = "odd_as_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub serial_number: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AlertSourceInfo {
    #[serde(default, deserialize_with = "id_text")]
    pub device_uid: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub device_name: Option<String>,
    #[serde(default, deserialize_with = "id_text")]
    pub site_uid: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub site_name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AlertMonitorInfo {
    #[serde(default, deserialize_with = "odd_as_default")]
    pub sends_emails: Option<bool>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub creates_ticket: Option<bool>,
}

/// An alert (`GET /v2/account/alerts/open`, `GET /v2/alert/{alertUid}`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    #[serde(default, deserialize_with = "id_text")]
    pub alert_uid: Option<String>,
    /// Critical | High | Moderate | Low | Information | Unknown | whatever comes next.
    #[serde(default, deserialize_with = "odd_as_default")]
    pub priority: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub diagnostics: Option<String>,
    #[serde(default, deserialize_with = "flag")]
    pub resolved: Option<bool>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub resolved_by: Option<String>,
    #[serde(default, deserialize_with = "epoch_ms")]
    pub resolved_on: Option<i64>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub muted: Option<bool>,
    #[serde(default, deserialize_with = "id_text")]
    pub ticket_number: Option<String>,
    #[serde(default, deserialize_with = "epoch_ms")]
    pub timestamp: Option<i64>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub alert_monitor_info: Option<AlertMonitorInfo>,
    /// Kept as sent, `@class` tag included: its fields do not match the spec's schemas.
    #[serde(default)]
    pub alert_context: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub alert_source_info: Option<AlertSourceInfo>,
    #[serde(default)]
    pub response_actions: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub autoresolve_mins: Option<i64>,
}

impl Alert {
    /// The context's Jackson type tag (`patch_ctx`, `antivirus_ctx`, …).
    pub fn context_class(&self) -> Option<&str> {
        self.alert_context
            .as_ref()
            .and_then(|c| c.get("@class"))
            .and_then(|c| c.as_str())
    }
}

/// Text, `null` as `None`; a number is refused (the field names what went wrong).
fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    nullable::<D, Option<String>>(d)
}

/// An identifier as text: a string, or a number as its digits; `""` as `None`.
fn id_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
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

/// A boolean, `null` as `None`; `"true"`/`"false"` read too, anything else refused.
fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    use serde_json::Value;
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(b)),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        other => Err(serde::de::Error::custom(format!(
            "{other} is not true or false"
        ))),
    }
}

/// A timestamp as epoch milliseconds: a number (trap 1), a numeric string or an ISO 8601
/// / RFC 3339 string; `null` and `""` as `None`, anything else refused.
pub fn epoch_ms<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    use serde_json::Value;
    let bad = |v: &dyn std::fmt::Display| {
        serde::de::Error::custom(format!(
            "{v} is not an epoch-millisecond or ISO 8601 timestamp"
        ))
    };
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(Some(i)),
            (None, Some(f)) if f.is_finite() && f.abs() < 9.0e15 => Ok(Some(f as i64)),
            _ => Err(bad(&n)),
        },
        Value::String(s) => {
            let s = s.trim();
            if s.is_empty() {
                return Ok(None);
            }
            if let Ok(i) = s.parse::<i64>() {
                return Ok(Some(i));
            }
            if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                return Ok(Some(t.timestamp_millis()));
            }
            // Spring's `2024-07-16T12:00:00` without a zone: UTC.
            if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
                return Ok(Some(t.and_utc().timestamp_millis()));
            }
            Err(bad(&format!("'{s}'")))
        }
        other => Err(bad(&other)),
    }
}

/// The `udf` object: every non-empty value as text (numbers and booleans as written),
/// `null` dropped; anything but an object (or `null`) is refused.
fn udfs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    use serde_json::Value;
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Object(m) => Ok(Some(
            m.into_iter()
                .filter_map(|(k, v)| {
                    let text = match v {
                        Value::Null => return None,
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (!text.trim().is_empty()).then_some((k, text))
                })
                .collect(),
        )),
        other => Err(serde::de::Error::custom(format!(
            "{other} is not an object of user-defined fields"
        ))),
    }
}

/// Epoch milliseconds as UTC (`None` out of range).
pub fn utc(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single())
}

/// `warrantyDate`'s day (`2026-01-01`, or the date part of a timestamp).
pub fn day(s: Option<&str>) -> Option<NaiveDate> {
    let s = s?.trim();
    let head = s.get(..10).unwrap_or(s);
    NaiveDate::parse_from_str(head, "%Y-%m-%d").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_read_milliseconds_numeric_and_iso_strings() {
        #[derive(Deserialize)]
        struct T {
            #[serde(default, deserialize_with = "epoch_ms")]
            t: Option<i64>,
        }
        let t = |j: &str| serde_json::from_str::<T>(j).map(|r| r.t);
        assert_eq!(
            t(r#"{"t":1721131200000}"#).unwrap(),
            Some(1_721_131_200_000)
        );
        assert_eq!(
            t(r#"{"t":"1721131200000"}"#).unwrap(),
            Some(1_721_131_200_000)
        );
        assert_eq!(
            t(r#"{"t":"2024-07-16T12:00:00Z"}"#).unwrap(),
            Some(1_721_131_200_000)
        );
        assert_eq!(
            t(r#"{"t":"2024-07-16T12:00:00"}"#).unwrap(),
            Some(1_721_131_200_000)
        );
        assert_eq!(t(r#"{"t":null}"#).unwrap(), None);
        assert_eq!(t(r#"{}"#).unwrap(), None);
        assert!(t(r#"{"t":"yesterday"}"#).is_err());
        assert!(t(r#"{"t":[1]}"#).is_err());
    }

    #[test]
    fn udfs_keep_values_to_udf300_and_drop_nulls() {
        let d: Device = serde_json::from_str(
            r#"{"uid":"d","udf":{"udf1":"a","udf2":null,"udf7":42,"udf300":"z","udf9":"  "}}"#,
        )
        .unwrap();
        let udf = d.udf.unwrap();
        assert_eq!(udf.get("udf1").map(String::as_str), Some("a"));
        assert_eq!(udf.get("udf7").map(String::as_str), Some("42"));
        assert_eq!(udf.get("udf300").map(String::as_str), Some("z"));
        assert_eq!(udf.len(), 3);
    }

    #[test]
    fn warranty_days() {
        assert_eq!(day(Some("2026-01-01")), NaiveDate::from_ymd_opt(2026, 1, 1));
        assert_eq!(
            day(Some("2026-01-01T00:00:00Z")),
            NaiveDate::from_ymd_opt(2026, 1, 1)
        );
        assert_eq!(day(Some("soon")), None);
        assert_eq!(day(None), None);
    }
}
