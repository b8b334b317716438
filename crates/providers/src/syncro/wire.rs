//! Syncro's JSON (API v1), field names as the Syncro OpenAPI examples have them.
//!
//! Read leniently (issue 17): Syncro sends `null` for empty fields, so used fields read
//! `null` as their default; fields the product does not use never reject a record; unknown
//! fields are ignored.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

use crate::lenient::{nullable, odd_as_default};

/// `meta` of a paged answer; the page size is the server's, so loops follow `total_pages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub total_pages: u64,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub total_entries: u64,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub per_page: u64,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub page: u64,
}

/// A customer: a business, a person, or both (`business_name` plus the person's names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub id: i64,
    #[serde(default)]
    pub firstname: Option<String>,
    #[serde(default)]
    pub lastname: Option<String>,
    #[serde(default)]
    pub business_name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub mobile: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub disabled: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub no_email: bool,
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
}

impl Customer {
    /// The company name the portal shows: the business, else the person.
    pub fn display_name(&self) -> String {
        let person = format!(
            "{} {}",
            self.firstname.as_deref().unwrap_or_default(),
            self.lastname.as_deref().unwrap_or_default()
        );
        self.business_name
            .as_deref()
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| person.trim().to_string())
    }
}

/// A contact of a customer: one `name`, no primary flag, no type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub id: i64,
    /// `null` in the spec for a contact of no customer: imported without a company.
    #[serde(default)]
    pub customer_id: Option<i64>,
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub mobile: Option<String>,
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Customers {
    pub customers: Vec<Box<serde_json::value::RawValue>>,
    pub meta: Meta,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Contacts {
    pub contacts: Vec<Box<serde_json::value::RawValue>>,
    pub meta: Meta,
}

/// `GET /users`: id–name pairs (trap 21). A pair without a name (or with more than two
/// items) is read; one without an id is left out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Users {
    #[serde(deserialize_with = "user_pairs")]
    pub users: Vec<(i64, String)>,
}

fn user_pairs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(i64, String)>, D::Error> {
    let rows: Vec<Vec<serde_json::Value>> = nullable(d)?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let id = row.first()?.as_i64()?;
            let name = row.get(1).and_then(|n| n.as_str()).unwrap_or_default();
            Some((id, name.to_string()))
        })
        .collect())
}

/// `GET /users/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: i64,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub full_name: String,
    /// Not used by the sync.
    #[serde(default, deserialize_with = "odd_as_default")]
    pub group: Option<String>,
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserAnswer {
    pub user: User,
}

/// `GET /me`: who the token belongs to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Me {
    #[serde(default, deserialize_with = "odd_as_default")]
    pub user_email: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub user_name: Option<String>,
    #[serde(default, deserialize_with = "odd_as_default")]
    pub subdomain: Option<String>,
}

/// A ticket. The listing embeds the initial comment (the description; since March 2026
/// only that one, `all_comments` being sunset); `tag_list` carries mspbridge's marker on
/// tickets it created (Syncro has no external-reference field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub id: i64,
    #[serde(default, deserialize_with = "nullable")]
    pub subject: String,
    /// A status name as the account has it (kept as sent, whatever it is).
    #[serde(default, deserialize_with = "nullable")]
    pub status: String,
    #[serde(default)]
    pub priority: Option<String>,
    /// The issue type ("Virus", "Network"): plays the board in mspbridge.
    #[serde(default)]
    pub problem_type: Option<String>,
    #[serde(default)]
    pub ticket_type_name: Option<String>,
    #[serde(default)]
    pub customer_id: Option<i64>,
    #[serde(default)]
    pub contact_id: Option<i64>,
    /// The assigned technician.
    #[serde(default)]
    pub user_id: Option<i64>,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub resolved_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "nullable")]
    pub tag_list: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub comments: Vec<Comment>,
}

/// Where Syncro keeps a ticket's description: its first comment, with this subject.
pub const INITIAL_ISSUE: &str = "Initial Issue";

/// Syncro's built-in statuses past which a ticket is done.
pub fn is_closed(status: &str) -> bool {
    ["Resolved", "Invoiced", "Closed"]
        .iter()
        .any(|s| s.eq_ignore_ascii_case(status.trim()))
}

impl Ticket {
    /// The description: the initial comment's body (the earliest comment, when its subject
    /// says so).
    pub fn description(&self) -> Option<&Comment> {
        self.comments
            .iter()
            .min_by_key(|c| c.id)
            .filter(|c| c.is_initial())
    }
}

/// A ticket comment; `hidden` = private (staff only), `tech` = who wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    pub id: i64,
    /// Not used by the sync.
    #[serde(default, deserialize_with = "odd_as_default")]
    pub ticket_id: Option<i64>,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub body: String,
    #[serde(default)]
    pub tech: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub hidden: bool,
    /// Not used by the sync.
    #[serde(default, deserialize_with = "odd_as_default")]
    pub user_id: Option<i64>,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
}

impl Comment {
    pub fn is_initial(&self) -> bool {
        self.subject
            .as_deref()
            .is_some_and(|s| s.trim().eq_ignore_ascii_case(INITIAL_ISSUE))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tickets {
    pub tickets: Vec<Box<serde_json::value::RawValue>>,
    pub meta: Meta,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comments {
    pub comments: Vec<Box<serde_json::value::RawValue>>,
    pub meta: Meta,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TicketAnswer {
    pub ticket: Ticket,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommentAnswer {
    pub comment: Comment,
}

/// `GET /tickets/settings`: the account's ticket statuses (and more, unread).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TicketSettings {
    #[serde(default, deserialize_with = "nullable")]
    pub ticket_status_list: Vec<String>,
}

/// Splits Syncro's single contact `name` into first and last (the last word is the
/// surname; a one-word name is a first name).
pub fn split_name(name: &str) -> (String, String) {
    let name = name.trim();
    match name.rsplit_once(' ') {
        Some((first, last)) => (first.trim().to_string(), last.to_string()),
        None => (name.to_string(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(split_name(" Boba Fett "), ("Boba".into(), "Fett".into()));
        assert_eq!(
            split_name("Mary Ann Lee"),
            ("Mary Ann".into(), "Lee".into())
        );
        assert_eq!(split_name("Cher"), ("Cher".into(), String::new()));
        let c: Customer = serde_json::from_str(
            r#"{"id":1,"firstname":"Walkin","lastname":"Customer","business_name":null}"#,
        )
        .unwrap();
        assert_eq!(c.display_name(), "Walkin Customer");
        let b: Customer =
            serde_json::from_str(r#"{"id":2,"business_name":"Acme Ltd","firstname":"Pat"}"#)
                .unwrap();
        assert_eq!(b.display_name(), "Acme Ltd");
    }
}
