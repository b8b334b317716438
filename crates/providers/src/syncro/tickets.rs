//! Writing tickets to Syncro: `POST /tickets` creates (the description as the "Initial
//! Issue" comment, mspbridge's marker as a tag: Syncro has no external-reference field),
//! `PUT /tickets/{id}` updates the status, `POST /tickets/{id}/comment` adds a note, always
//! with a `subject` (trap 26: Syncro answers 422 without one although the spec does not
//! mark it required). Notes are written with `do_not_email`: the client reads them in the
//! portal, and Syncro would mail them a second copy. A retry looks for the marker among the
//! customer's tickets created since the first attempt, and for a comment by its text.

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;
use serde_json::json;
use tokio::sync::OnceCell;

use super::client::{SyncroClient, SyncroError};
use super::wire::{
    Comment, CommentAnswer, Comments, INITIAL_ISSUE, Ticket, TicketAnswer, TicketSettings, Tickets,
    is_closed,
};
use crate::source::read_rows;
use crate::tickets::{NewVendorTicket, TicketWriter, WriteError};

/// Where a Syncro admin lets the API token create and edit tickets.
const WRITE_SETTING: &str =
    "Admin > API > API Tokens > (the token) > permissions: Tickets - Create and Tickets - Edit";

/// The subject of notes mspbridge writes (Syncro requires one).
pub const NOTE_SUBJECT: &str = "Update";

/// How far before the first attempt a retry looks (clocks differ).
const SLACK: chrono::Duration = chrono::Duration::minutes(5);

pub struct SyncroTicketWriter {
    client: SyncroClient,
    /// The account's ticket statuses, read once per writer.
    statuses: OnceCell<Vec<String>>,
}

/// What a Syncro error means for the outbox.
pub fn write_error(e: SyncroError) -> WriteError {
    // Syncro answers 401 for a missing permission too; its message tells them apart.
    if e.is_permission() {
        return WriteError::NotPermitted {
            message: e.vendor_message(),
            setting: WRITE_SETTING.into(),
        };
    }
    match &e {
        SyncroError::Status {
            status,
            retry_after,
            message,
        } => WriteError::from_status(
            *status,
            *retry_after,
            e.to_string(),
            e.vendor_message(),
            WRITE_SETTING,
            WriteError::Rejected {
                field: None,
                message: format!("Syncro refused the write: {message}"),
            },
        ),
        SyncroError::Refused(m) if m.contains("budget") => WriteError::transient(m.clone()),
        SyncroError::Refused(m) => WriteError::Rejected {
            field: None,
            message: m.clone(),
        },
        SyncroError::Unreachable { .. } | SyncroError::Decode(_) => {
            WriteError::transient(e.to_string())
        }
    }
}

fn numeric(id: &str, what: &str) -> Result<i64, WriteError> {
    id.parse().map_err(|_| WriteError::Rejected {
        field: None,
        message: format!("'{id}' is not a Syncro {what} id"),
    })
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl SyncroTicketWriter {
    pub fn new(client: SyncroClient) -> Self {
        Self {
            client,
            statuses: OnceCell::new(),
        }
    }

    /// Syncro's spelling of status `name` (statuses are free text checked against the
    /// account's list; an empty list, as a token without settings access sees, lets the
    /// name through for Syncro to judge).
    async fn status(&self, name: &str) -> Result<String, WriteError> {
        let list = self
            .statuses
            .get_or_try_init(|| async {
                self.client
                    .get::<TicketSettings>("/tickets/settings", &[])
                    .await
                    .map(|s| s.ticket_status_list)
                    .map_err(write_error)
            })
            .await?;
        if list.is_empty() {
            return Ok(name.trim().to_string());
        }
        list.iter()
            .find(|s| s.eq_ignore_ascii_case(name.trim()))
            .cloned()
            .ok_or_else(|| WriteError::Rejected {
                field: Some("status".into()),
                message: format!(
                    "Syncro has no status named '{name}' (it has: {})",
                    list.join(", ")
                ),
            })
    }
}

#[async_trait]
impl TicketWriter for SyncroTicketWriter {
    /// Syncro cannot search tags through the API, so the customer's tickets created since
    /// the first attempt are read and their tags compared.
    async fn find_ticket(
        &self,
        t: &NewVendorTicket,
        since: DateTime<Utc>,
    ) -> Result<Option<String>, WriteError> {
        let customer = numeric(&t.company_external_id, "customer")?;
        let mut page = 1u64;
        loop {
            let query = [
                ("customer_id", customer.to_string()),
                ("created_after", stamp(since - SLACK)),
                ("page", page.to_string()),
            ];
            let answer: Tickets = self
                .client
                .get("/tickets", &query)
                .await
                .map_err(write_error)?;
            let (rows, _, _) = read_rows::<Ticket>(answer.tickets);
            if let Some(found) = rows.iter().find(|r| r.tag_list.contains(&t.marker)) {
                return Ok(Some(found.id.to_string()));
            }
            if page >= answer.meta.total_pages {
                return Ok(None);
            }
            page += 1;
        }
    }

    async fn create_ticket(&self, t: &NewVendorTicket) -> Result<String, WriteError> {
        let customer =
            numeric(&t.company_external_id, "customer").map_err(|_| WriteError::Rejected {
                field: Some("company".into()),
                message: format!("'{}' is not a Syncro customer id", t.company_external_id),
            })?;
        let description = if t.description.trim().is_empty() {
            t.summary.trim()
        } else {
            t.description.as_str()
        };
        let mut ticket = json!({
            "customer_id": customer,
            "subject": t.summary.trim(),
            "tag_list": [t.marker],
            "comments_attributes": [{
                "subject": INITIAL_ISSUE,
                "body": description,
                "hidden": false,
                "do_not_email": true,
            }],
        });
        if let Some(issue) = &t.defaults.board {
            ticket["problem_type"] = json!(issue);
        }
        if let Some(s) = &t.defaults.status {
            ticket["status"] = json!(self.status(s).await?);
        }
        if let Some(p) = &t.defaults.priority {
            ticket["priority"] = json!(p);
        }
        let created: TicketAnswer = self
            .client
            .send(Method::POST, "/tickets", &ticket)
            .await
            .map_err(write_error)?;
        Ok(created.ticket.id.to_string())
    }

    async fn find_note(
        &self,
        ticket: &str,
        text: &str,
        internal: bool,
        since: DateTime<Utc>,
    ) -> Result<Option<String>, WriteError> {
        let path = format!("/tickets/{}/comments", numeric(ticket, "ticket")?);
        let mut page = 1u64;
        loop {
            let query = [
                ("created_after", stamp(since - SLACK)),
                ("per_page", "100".to_string()),
                ("page", page.to_string()),
            ];
            let answer: Comments = self.client.get(&path, &query).await.map_err(write_error)?;
            let (rows, _, _) = read_rows::<Comment>(answer.comments);
            if let Some(c) = rows
                .iter()
                .find(|c| c.body.trim() == text.trim() && c.hidden == internal)
            {
                return Ok(Some(c.id.to_string()));
            }
            if page >= answer.meta.total_pages {
                return Ok(None);
            }
            page += 1;
        }
    }

    async fn add_note(
        &self,
        ticket: &str,
        text: &str,
        internal: bool,
    ) -> Result<String, WriteError> {
        let path = format!("/tickets/{}/comment", numeric(ticket, "ticket")?);
        let comment = json!({
            "subject": NOTE_SUBJECT,
            "body": text,
            "hidden": internal,
            "do_not_email": true,
        });
        let created: CommentAnswer = self
            .client
            .send(Method::POST, &path, &comment)
            .await
            .map_err(write_error)?;
        Ok(created.comment.id.to_string())
    }

    async fn set_status(&self, ticket: &str, status: &str) -> Result<(), WriteError> {
        let status = self.status(status).await?;
        let path = format!("/tickets/{}", numeric(ticket, "ticket")?);
        let _: TicketAnswer = self
            .client
            .send(Method::PUT, &path, &json!({ "status": status }))
            .await
            .map_err(write_error)?;
        Ok(())
    }

    async fn ticket_status(&self, ticket: &str) -> Result<Option<(String, bool)>, WriteError> {
        let path = format!("/tickets/{}", numeric(ticket, "ticket")?);
        match self.client.get::<TicketAnswer>(&path, &[]).await {
            Ok(a) => {
                let closed = is_closed(&a.ticket.status);
                Ok(Some((a.ticket.status, closed)))
            }
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(write_error(e)),
        }
    }

    fn requests(&self) -> u64 {
        self.client.requests()
    }
}

#[async_trait]
impl crate::technicians::TechnicianWriter for SyncroTicketWriter {
    /// Syncro's `/users` is read-only: nothing can be written (the capability table says so
    /// and the portal refuses the edit before it gets here).
    async fn update_technician(
        &self,
        _external_id: &str,
        _u: &crate::technicians::TechnicianUpdate,
    ) -> Result<(), WriteError> {
        Err(WriteError::Rejected {
            field: None,
            message: crate::technicians::capability(
                mspbridge_domain::catalogue::ProviderKind::Syncro,
            )
            .map(|c| c.how.to_string())
            .unwrap_or_default(),
        })
    }
}
