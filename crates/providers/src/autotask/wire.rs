//! Autotask REST (`ATServicesRest/V1.0`) JSON: camelCase fields with Autotask's own
//! spellings (`companyID`, `contactGroupID`), `Contacts.isActive` as an integer while
//! `Companies.isActive` and `Resources.isActive` are booleans (trap 15), picklist values as
//! strings, and UTC times with or without the `Z`.
//!
//! Read leniently (issue 17): Autotask sends `null` for every empty field, so used fields
//! read `null` as their default; fields the product does not use never reject a record,
//! whatever they hold; unknown fields are ignored.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::lenient::{nullable, odd_as_default, true_unless_false, yes};

/// `GET zoneInformation?user=`: where the API user's database lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZoneInfo {
    #[serde(default, deserialize_with = "odd_as_default")]
    pub zone_name: Option<String>,
    /// `https://webservices5.autotask.net/ATServicesRest/` (the API is under `V1.0/`).
    pub url: String,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub web_url: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub ci: Option<i64>,
}

/// `GET /V1.0/ThresholdInformation`: the database's request count in its timeframe
/// (every integration of the tenant counts).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThresholdInfo {
    pub external_request_threshold: u64,
    /// Minutes.
    #[serde(default, deserialize_with = "odd_as_default")]
    pub request_threshold_timeframe: u64,
    pub current_timeframe_request_count: u64,
}

/// A query's page: `{"items":[…],"pageDetails":{…}}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryPage {
    pub items: Vec<Box<RawValue>>,
    pub page_details: PageDetails,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PageDetails {
    #[serde(default, deserialize_with = "odd_as_default")]
    pub count: u64,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub request_count: u64,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub prev_page_url: Option<String>,
    #[serde(default)]
    pub next_page_url: Option<String>,
}

/// `POST /V1.0/{Entity}/query/count`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryCount {
    pub query_count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Udf {
    pub name: String,
    /// A string in Autotask's answers; a number is read as its digits.
    #[serde(default, deserialize_with = "opt_string_or_number")]
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Company {
    pub id: i64,
    #[serde(default, deserialize_with = "nullable")]
    pub company_name: String,
    #[serde(default)]
    pub company_number: Option<String>,
    /// Picklist value (Customer, Lead, Prospect, Vendor… per tenant).
    #[serde(default)]
    pub company_type: Option<i64>,
    #[serde(default = "yes", deserialize_with = "true_unless_false")]
    pub is_active: bool,
    /// Not used by the sync.
    #[serde(default, deserialize_with = "odd_as_default")]
    pub phone: Option<String>,
    #[serde(default)]
    pub web_address: Option<String>,
    #[serde(default, with = "at_time")]
    pub last_activity_date: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Contact {
    pub id: i64,
    #[serde(rename = "companyID", default)]
    pub company_id: Option<i64>,
    #[serde(default, deserialize_with = "nullable")]
    pub first_name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub last_name: String,
    /// Not used by the sync.
    #[serde(default, deserialize_with = "odd_as_default")]
    pub title: Option<String>,
    /// The contact's address: `emailAddress`, else `emailAddress2`, else `emailAddress3`.
    #[serde(default)]
    pub email_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_address2: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_address3: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub mobile_phone: Option<String>,
    /// 1 = active, 0 = inactive: an integer here, a boolean on companies (trap 15);
    /// missing or `null` reads as active, like the booleans.
    #[serde(default = "one", deserialize_with = "int_flag")]
    pub is_active: i64,
    #[serde(default, deserialize_with = "nullable")]
    pub primary_contact: bool,
    #[serde(default, with = "at_time")]
    pub last_activity_date: Option<DateTime<Utc>>,
    #[serde(default, with = "at_time")]
    pub last_modified_date: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "nullable")]
    pub user_defined_fields: Vec<Udf>,
}

/// A resource (an Autotask user): technicians, and API-only users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    pub id: i64,
    #[serde(default, deserialize_with = "nullable")]
    pub first_name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub last_name: String,
    /// The resource's address: `email`, else `email2`, else `email3`.
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email2: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email3: Option<String>,
    #[serde(default)]
    pub user_name: Option<String>,
    /// Not used by the sync.
    #[serde(default, deserialize_with = "odd_as_default")]
    pub title: Option<String>,
    #[serde(default = "yes", deserialize_with = "true_unless_false")]
    pub is_active: bool,
    /// `Employee`, `Contractor`, `Temporary`… (picklist label); not used by the sync.
    #[serde(default, deserialize_with = "odd_as_default")]
    pub resource_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContactGroup {
    pub id: i64,
    pub name: String,
    #[serde(default = "yes", deserialize_with = "true_unless_false")]
    pub is_active: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactGroupContact {
    pub id: i64,
    #[serde(rename = "contactGroupID")]
    pub contact_group_id: i64,
    #[serde(rename = "contactID")]
    pub contact_id: i64,
}

/// A ticket. Status, priority, queue and type are the tenant's picklist values (trap 18):
/// their labels come from `Tickets/entityInformation/fields`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ticket {
    pub id: i64,
    /// Not used by the sync.
    #[serde(default, deserialize_with = "odd_as_default")]
    pub ticket_number: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub status: Option<i64>,
    #[serde(default)]
    pub priority: Option<i64>,
    #[serde(rename = "queueID", default)]
    pub queue_id: Option<i64>,
    #[serde(default)]
    pub ticket_type: Option<i64>,
    #[serde(rename = "companyID", default)]
    pub company_id: Option<i64>,
    #[serde(rename = "contactID", default)]
    pub contact_id: Option<i64>,
    #[serde(rename = "assignedResourceID", default)]
    pub assigned_resource_id: Option<i64>,
    /// Free text for the integrating system (up to 50 characters): mspbridge's marker on
    /// the tickets it creates.
    #[serde(rename = "externalID", default)]
    pub external_id: Option<String>,
    #[serde(default, with = "at_time")]
    pub create_date: Option<DateTime<Utc>>,
    /// Set when the ticket reaches the Complete status (its closed flag).
    #[serde(default, with = "at_time")]
    pub completed_date: Option<DateTime<Utc>>,
    /// Moves with every change and every note.
    #[serde(default, with = "at_time")]
    pub last_activity_date: Option<DateTime<Utc>>,
}

/// A ticket note (a child of Tickets: read at `/TicketNotes/query`, written through
/// `/Tickets/{id}/Notes`). `publish` is a picklist (who may see it), `noteType` too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketNote {
    pub id: i64,
    #[serde(rename = "ticketID")]
    pub ticket_id: i64,
    /// Not used by the sync.
    #[serde(default, deserialize_with = "odd_as_default")]
    pub title: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub description: String,
    /// Not used by the sync.
    #[serde(default, deserialize_with = "odd_as_default")]
    pub note_type: Option<i64>,
    #[serde(default)]
    pub publish: Option<i64>,
    #[serde(rename = "creatorResourceID", default)]
    pub creator_resource_id: Option<i64>,
    #[serde(rename = "createdByContactID", default)]
    pub created_by_contact_id: Option<i64>,
    #[serde(default, with = "at_time")]
    pub create_date_time: Option<DateTime<Utc>>,
    /// Not used by the sync: a value that is not a time reads as none.
    #[serde(
        default,
        serialize_with = "at_time::serialize",
        deserialize_with = "at_time::lenient"
    )]
    pub last_activity_date: Option<DateTime<Utc>>,
}

/// What a create or update answers: `{"itemId": N}`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemId {
    pub item_id: i64,
}

/// `GET /V1.0/{Entity}/{id}`: `{"item": {…}}`, `null` when there is no such record.
#[derive(Debug, Deserialize)]
pub struct Item<T> {
    #[serde(default = "none")]
    pub item: Option<T>,
}

fn none<T>() -> Option<T> {
    None
}

/// `GET /V1.0/{Entity}/entityInformation/fields` (and `…/userDefinedFields`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FieldsInfo {
    #[serde(default)]
    pub fields: Vec<FieldInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldInfo {
    pub name: String,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub data_type: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub is_pick_list: bool,
    #[serde(default)]
    pub picklist_values: Option<Vec<PicklistValue>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PicklistValue {
    /// A string in Autotask's answers (`"1"`); numbers are read too.
    #[serde(deserialize_with = "string_or_number")]
    pub value: String,
    pub label: String,
    #[serde(default = "yes", deserialize_with = "true_unless_false")]
    pub is_active: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub is_default_value: bool,
}

impl FieldsInfo {
    /// The active values of picklist field `name`, whole.
    pub fn picklist_values(&self, name: &str) -> Vec<PicklistValue> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
            .and_then(|f| f.picklist_values.as_ref())
            .map(|vs| vs.iter().filter(|v| v.is_active).cloned().collect())
            .unwrap_or_default()
    }

    /// The active values of picklist field `name` as (value, label).
    pub fn picklist(&self, name: &str) -> Vec<(String, String)> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
            .and_then(|f| f.picklist_values.as_ref())
            .map(|vs| {
                vs.iter()
                    .filter(|v| v.is_active)
                    .map(|v| (v.value.clone(), v.label.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Autotask's error body: `{"errors":["…", …]}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Errors {
    #[serde(default, deserialize_with = "odd_as_default")]
    pub errors: Vec<String>,
}

fn one() -> i64 {
    1
}

fn int_flag<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Int(i64),
        Bool(bool),
    }
    Ok(match Option::<Flag>::deserialize(d)? {
        Some(Flag::Int(i)) => i,
        Some(Flag::Bool(b)) => i64::from(b),
        None => 1,
    })
}

fn opt_string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum V {
        S(String),
        N(i64),
    }
    Ok(Option::<V>::deserialize(d)?.map(|v| match v {
        V::S(s) => s,
        V::N(n) => n.to_string(),
    }))
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum V {
        S(String),
        N(i64),
    }
    Ok(match V::deserialize(d)? {
        V::S(s) => s,
        V::N(n) => n.to_string(),
    })
}

/// Autotask times: UTC, `2026-01-05T10:30:00.123Z` or without the `Z`.
pub mod at_time {
    use super::*;

    pub fn format(t: DateTime<Utc>) -> String {
        t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    }

    pub fn parse(s: &str) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .ok()
            .or_else(|| {
                NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                    .ok()
                    .map(|n| n.and_utc())
            })
    }

    pub fn serialize<S: serde::Serializer>(
        t: &Option<DateTime<Utc>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&format(*t)),
            None => s.serialize_none(),
        }
    }

    /// Any value that is not an Autotask time as none (for fields the sync does not use).
    pub fn lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let v: Option<serde_json::Value> = Option::deserialize(d)?;
        Ok(v.as_ref().and_then(|v| v.as_str()).and_then(parse))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) if s.is_empty() => Ok(None),
            Some(s) => parse(&s)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("not an Autotask time: '{s}'"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contacts_read_the_integer_active_flag_and_times_with_or_without_z() {
        let c: Contact = serde_json::from_str(
            r#"{"id":5,"companyID":9,"firstName":"Ann","lastName":"Lee","isActive":0,
                "primaryContact":true,"lastModifiedDate":"2026-03-01T10:00:00.500"}"#,
        )
        .unwrap();
        assert_eq!(
            (c.is_active, c.company_id, c.primary_contact),
            (0, Some(9), true)
        );
        assert_eq!(
            c.last_modified_date.map(at_time::format).as_deref(),
            Some("2026-03-01T10:00:00.500Z")
        );
        let b: Contact = serde_json::from_str(r#"{"id":6,"isActive":true}"#).unwrap();
        assert_eq!(b.is_active, 1);
        // Serialised as Autotask sends it: an integer.
        assert_eq!(serde_json::to_value(&b).unwrap()["isActive"], 1);
        let bad =
            serde_json::from_str::<Contact>(r#"{"id":7,"isActive":1,"lastActivityDate":"soon"}"#);
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("not an Autotask time")
        );
    }

    #[test]
    fn picklists_give_active_values_with_labels() {
        let f: FieldsInfo = serde_json::from_str(
            r#"{"fields":[{"name":"companyType","dataType":"integer","isPickList":true,
                "picklistValues":[{"value":"1","label":"Customer","isActive":true},
                                  {"value":2,"label":"Lead","isActive":true},
                                  {"value":"9","label":"Old","isActive":false}]}]}"#,
        )
        .unwrap();
        assert_eq!(
            f.picklist("CompanyType"),
            vec![("1".into(), "Customer".into()), ("2".into(), "Lead".into())]
        );
    }
}
