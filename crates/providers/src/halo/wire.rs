//! Halo's JSON, field names as the Halo API v2 spec has them (schemas `Area` for clients,
//! `Users` for end users, `Uname` for agents, `UserRoles`). The spec's types are not
//! usable for code generation (trap 2), so these are written by hand and read leniently:
//! every field the sync does not need may be missing.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::lenient::{integer, nullable, odd_as_default};

/// `POST {auth}/token` answer (client-credentials grant).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    /// Not used (the token is always sent as a Bearer token).
    #[serde(default, deserialize_with = "odd_as_default")]
    pub token_type: String,
    pub expires_in: u64,
}

/// Halo writes dates without a zone (`2025-03-05T10:22:13.123`); they are UTC.
pub mod halo_date {
    use super::*;

    pub fn parse(s: &str) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .ok()
            .or_else(|| {
                NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                    .ok()
                    .map(|n| n.and_utc())
            })
    }

    pub fn format(d: DateTime<Utc>) -> String {
        d.format("%Y-%m-%dT%H:%M:%S%.3f").to_string()
    }

    pub fn serialize<S: Serializer>(d: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let raw: Option<String> = Option::deserialize(d)?;
        match raw.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(s) => parse(s)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("'{s}' is not a Halo date"))),
        }
    }
}

/// A client (company), schema `Area`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    pub id: i64,
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub inactive: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toplevel_name: Option<String>,
    #[serde(
        default,
        deserialize_with = "integer",
        skip_serializing_if = "Option::is_none"
    )]
    pub main_site_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub website: Option<String>,
    #[serde(default, with = "halo_date", skip_serializing_if = "Option::is_none")]
    pub alastupdate: Option<DateTime<Utc>>,
}

/// An end user (contact), schema `Users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: i64,
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub firstname: String,
    #[serde(default, deserialize_with = "nullable")]
    pub surname: String,
    /// The user's address: `emailaddress`, else `email2`, else `email3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emailaddress: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email2: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email3: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phonenumber: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mobilenumber: Option<String>,
    #[serde(
        default,
        deserialize_with = "integer",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_id: Option<i64>,
    #[serde(
        default,
        deserialize_with = "integer",
        skip_serializing_if = "Option::is_none"
    )]
    pub site_id: Option<i64>,
    #[serde(default, deserialize_with = "nullable")]
    pub inactive: bool,
    /// Main contact of the user's site: Halo's primary contact.
    #[serde(default, deserialize_with = "nullable")]
    pub ismaincontact: bool,
    /// The user's roles, comma separated (Halo's contact types).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_list: Option<String>,
    #[serde(default, with = "halo_date", skip_serializing_if = "Option::is_none")]
    pub ulastupdate: Option<DateTime<Utc>>,
}

/// An agent (technician), schema `Uname`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    pub id: i64,
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub firstname: String,
    #[serde(default, deserialize_with = "nullable")]
    pub surname: String,
    /// The agent's only address in the `Uname` schema (`googleemail` and
    /// `pagerduty_email` are integration mailboxes, not a fallback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub isdisabled: bool,
    #[serde(default, with = "halo_date", skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<DateTime<Utc>>,
}

/// A user role (schema `UserRoles`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRole {
    pub id: i64,
    pub name: String,
}

/// A ticket, schema `Faults`. The team is a name on the ticket (there is no `team_id`);
/// status, priority and ticket type are ids resolved through their lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub id: i64,
    #[serde(default, deserialize_with = "nullable")]
    pub summary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub status_id: i64,
    #[serde(
        default,
        deserialize_with = "integer",
        skip_serializing_if = "Option::is_none"
    )]
    pub priority_id: Option<i64>,
    #[serde(
        default,
        deserialize_with = "integer",
        skip_serializing_if = "Option::is_none"
    )]
    pub tickettype_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(
        default,
        deserialize_with = "integer",
        skip_serializing_if = "Option::is_none"
    )]
    pub agent_id: Option<i64>,
    #[serde(
        default,
        deserialize_with = "integer",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_id: Option<i64>,
    #[serde(
        default,
        deserialize_with = "integer",
        skip_serializing_if = "Option::is_none"
    )]
    pub user_id: Option<i64>,
    #[serde(default, with = "halo_date", skip_serializing_if = "Option::is_none")]
    pub dateoccurred: Option<DateTime<Utc>>,
    #[serde(default, with = "halo_date", skip_serializing_if = "Option::is_none")]
    pub dateclosed: Option<DateTime<Utc>>,
    #[serde(default, with = "halo_date", skip_serializing_if = "Option::is_none")]
    pub last_update: Option<DateTime<Utc>>,
    /// An integration's own reference for the ticket: mspbridge's outbox marker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub third_party_id_string: Option<String>,
    /// First-level category, by its value ("Hardware>Laptop").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category_1: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impact: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urgency: Option<i64>,
}

/// A `GET /Tickets` page: `{page_no, page_size, record_count, tickets: [...]}`. Rows stay
/// raw so one unreadable row does not hide the others.
#[derive(Deserialize)]
pub struct TicketPage {
    #[serde(default)]
    pub record_count: Option<u64>,
    #[serde(default)]
    pub tickets: Vec<Box<RawValue>>,
}

/// A `GET /Actions?ticket_id=` answer: `{record_count, actions: [...]}`, rows raw.
#[derive(Deserialize)]
pub struct ActionList {
    #[serde(default)]
    pub actions: Vec<Box<RawValue>>,
}

/// An action (note, email, time entry) on a ticket, schema `Actions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub id: i64,
    /// Not used (actions are read per ticket).
    #[serde(default, deserialize_with = "odd_as_default")]
    pub ticket_id: i64,
    #[serde(default, deserialize_with = "nullable")]
    pub note: String,
    /// A private note: agents only.
    #[serde(default, deserialize_with = "nullable")]
    pub hiddenfromuser: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Who wrote it, by name (lists carry it beside `who_agentid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub who: Option<String>,
    #[serde(default, with = "halo_date", skip_serializing_if = "Option::is_none")]
    pub datetime: Option<DateTime<Utc>>,
}

/// A ticket status, schema `TStatus`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub id: i64,
    pub name: String,
}

/// Halo's built-in Closed status: its id is fixed (a system status every Halo has), and
/// a ticket in it is closed; every other status is open.
pub const CLOSED_STATUS_ID: i64 = 9;

/// A priority, schema `Policy`: priorities belong to SLAs, and a ticket's `priority_id`
/// is the policy's `priorityid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Priority {
    pub priorityid: i64,
    pub name: String,
}

/// A team (`SectionDetail`) or ticket type (`RequestType`): id and name is all we need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Named {
    pub id: i64,
    pub name: String,
}

/// A ticket category (`CategoryDetail`): `value` is the name a ticket's `category_1..4`
/// carries ("Hardware>Laptop"), `type_id` which of the four lists it is in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Category {
    pub id: i64,
    pub value: String,
    #[serde(default)]
    pub type_id: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halo_dates_without_a_zone_are_utc() {
        let d = halo_date::parse("2025-03-05T10:22:13.123").unwrap();
        assert_eq!(d.to_rfc3339(), "2025-03-05T10:22:13.123+00:00");
        assert_eq!(halo_date::format(d), "2025-03-05T10:22:13.123");
        assert!(halo_date::parse("2025-03-05T10:22:13Z").is_some());
        let u: User =
            serde_json::from_str(r#"{"id":5,"ulastupdate":"","ismaincontact":true}"#).unwrap();
        assert_eq!((u.ulastupdate, u.ismaincontact), (None, true));
        assert!(serde_json::from_str::<User>(r#"{"id":5,"ulastupdate":"soon"}"#).is_err());
    }
}
