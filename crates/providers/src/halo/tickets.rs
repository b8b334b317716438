//! Writing tickets to Halo. Halo has no PUT or PATCH: `POST /Tickets` and `POST /Actions`
//! take a JSON array, an object without `id` creates a record and one with `id` updates it
//! (trap 1: an update sent without `id` silently creates a duplicate, so every update here
//! carries it). New tickets carry mspbridge's marker in `third_party_id_string`; a retry
//! looks for it among the company's tickets changed since the first attempt.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use super::client::{HaloClient, HaloError};
use super::wire::{
    Action, ActionList, CLOSED_STATUS_ID, Category, Named, Priority, Status, Ticket, TicketPage,
    halo_date,
};
use crate::source::read_rows;
use crate::tickets::{NewVendorTicket, TicketWriter, WriteError};

/// Where a Halo admin lets the API application's agent create and edit tickets.
const WRITE_SETTING: &str =
    "Configuration > Integrations > Halo API > (the API application) > Permissions: edit:tickets";

pub struct HaloTicketWriter {
    client: HaloClient,
    /// The lists names are resolved in, read once per writer (one writer serves a drain).
    statuses: OnceCell<Vec<Status>>,
    teams: OnceCell<Vec<Named>>,
    priorities: OnceCell<Vec<Priority>>,
    categories: OnceCell<Vec<Category>>,
    types: OnceCell<Vec<Named>>,
}

/// What a Halo error means for the outbox.
pub fn write_error(e: HaloError) -> WriteError {
    match &e {
        HaloError::Status {
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
                message: format!("Halo refused the write: {message}"),
            },
        ),
        HaloError::Token { .. } => WriteError::Auth(e.vendor_message()),
        HaloError::Unreachable { .. } | HaloError::Decode(_) | HaloError::Refused(_) => {
            WriteError::transient(e.to_string())
        }
    }
}

fn ticket_id(ticket: &str) -> Result<i64, WriteError> {
    ticket.parse().map_err(|_| WriteError::Rejected {
        field: None,
        message: format!("'{ticket}' is not a Halo ticket id"),
    })
}

fn not_found(field: &str, name: &str) -> WriteError {
    WriteError::Rejected {
        field: Some(format!("ticket_defaults.{field}")),
        message: format!("Halo has no {field} named '{name}'"),
    }
}

impl HaloTicketWriter {
    pub fn new(client: HaloClient) -> Self {
        Self {
            client,
            statuses: OnceCell::new(),
            teams: OnceCell::new(),
            priorities: OnceCell::new(),
            categories: OnceCell::new(),
            types: OnceCell::new(),
        }
    }

    /// The list at `path` (with `query`), read on first use.
    async fn list<'a, T: DeserializeOwned>(
        &self,
        cell: &'a OnceCell<Vec<T>>,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<&'a Vec<T>, WriteError> {
        cell.get_or_try_init(|| async {
            self.client
                .get::<Vec<T>>(path, query)
                .await
                .map_err(write_error)
        })
        .await
    }

    async fn statuses(&self) -> Result<&Vec<Status>, WriteError> {
        self.list(&self.statuses, "/Status", &[]).await
    }

    async fn status_id(&self, name: &str) -> Result<i64, WriteError> {
        self.statuses()
            .await?
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
            .map(|s| s.id)
            .ok_or_else(|| WriteError::Rejected {
                field: Some("status".into()),
                message: format!("Halo has no status named '{name}'"),
            })
    }

    async fn status_name(&self, id: i64) -> Result<String, WriteError> {
        Ok(self
            .statuses()
            .await?
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.name.clone())
            .unwrap_or_else(|| format!("Status {id}")))
    }

    async fn read_ticket(&self, id: &str) -> Result<Option<Ticket>, WriteError> {
        match self
            .client
            .get::<Ticket>(&format!("/Tickets/{id}"), &[])
            .await
        {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(write_error(e)),
        }
    }
}

#[async_trait]
impl TicketWriter for HaloTicketWriter {
    /// Halo cannot filter on `third_party_id_string`, so the company's tickets changed
    /// since the first attempt (less five minutes for clocks) are read and compared.
    async fn find_ticket(
        &self,
        t: &NewVendorTicket,
        since: DateTime<Utc>,
    ) -> Result<Option<String>, WriteError> {
        let mut page = 1u64;
        loop {
            let query = [
                ("client_id", t.company_external_id.clone()),
                (
                    "lastupdatefromdate",
                    halo_date::format(since - chrono::Duration::minutes(5)),
                ),
                ("includeclosed", "true".into()),
                ("pageinate", "true".into()),
                ("page_size", "100".into()),
                ("page_no", page.to_string()),
            ];
            let answer: TicketPage = self
                .client
                .get("/Tickets", &query)
                .await
                .map_err(write_error)?;
            let n = answer.tickets.len();
            let (rows, _, _) = read_rows::<Ticket>(answer.tickets);
            if let Some(found) = rows
                .iter()
                .find(|r| r.third_party_id_string.as_deref() == Some(t.marker.as_str()))
            {
                return Ok(Some(found.id.to_string()));
            }
            if n == 0 || page * 100 >= answer.record_count.unwrap_or(0) {
                return Ok(None);
            }
            page += 1;
        }
    }

    async fn create_ticket(&self, t: &NewVendorTicket) -> Result<String, WriteError> {
        let client_id: i64 = t
            .company_external_id
            .parse()
            .map_err(|_| WriteError::Rejected {
                field: Some("company".into()),
                message: format!("'{}' is not a Halo client id", t.company_external_id),
            })?;
        let mut ticket = json!({
            "client_id": client_id,
            "summary": t.summary.trim(),
            "details": t.description,
            "third_party_id_string": t.marker,
        });
        if let Some(team) = &t.defaults.board {
            let found = self
                .list(&self.teams, "/Team", &[])
                .await?
                .iter()
                .find(|x| x.name.eq_ignore_ascii_case(team))
                .ok_or_else(|| not_found("board", team))?;
            ticket["team"] = json!(found.name);
        }
        if let Some(s) = &t.defaults.status {
            ticket["status_id"] = json!(self.status_id(s).await?);
        }
        if let Some(p) = &t.defaults.priority {
            let found = self
                .list(&self.priorities, "/Priority", &[])
                .await?
                .iter()
                .find(|x| x.name.eq_ignore_ascii_case(p))
                .ok_or_else(|| not_found("priority", p))?;
            ticket["priority_id"] = json!(found.priorityid);
        }
        if let Some(ty) = &t.defaults.ticket_type {
            let found = self
                .list(&self.types, "/TicketType", &[])
                .await?
                .iter()
                .find(|x| x.name.eq_ignore_ascii_case(ty))
                .ok_or_else(|| not_found("ticket_type", ty))?;
            ticket["tickettype_id"] = json!(found.id);
        }
        if let Some(c) = &t.defaults.category {
            let found = self
                .list(
                    &self.categories,
                    "/Category",
                    &[("type_id", "1".to_string())],
                )
                .await?
                .iter()
                .find(|x| x.value.eq_ignore_ascii_case(c))
                .ok_or_else(|| not_found("category", c))?;
            ticket["category_1"] = json!(found.value);
        }
        if let Some(i) = t.defaults.impact {
            ticket["impact"] = json!(i);
        }
        if let Some(u) = t.defaults.urgency {
            ticket["urgency"] = json!(u);
        }
        let created: Ticket = self
            .client
            .post_one("/Tickets", ticket)
            .await
            .map_err(write_error)?;
        Ok(created.id.to_string())
    }

    async fn find_note(
        &self,
        ticket: &str,
        text: &str,
        internal: bool,
        since: DateTime<Utc>,
    ) -> Result<Option<String>, WriteError> {
        let query = [
            ("ticket_id", ticket.to_string()),
            ("excludesys", "true".to_string()),
        ];
        let list: ActionList = self
            .client
            .get("/Actions", &query)
            .await
            .map_err(write_error)?;
        let from = since - chrono::Duration::minutes(5);
        let (actions, _, _) = read_rows::<Action>(list.actions);
        Ok(actions
            .into_iter()
            .find(|a| {
                a.note.trim() == text.trim()
                    && a.hiddenfromuser == internal
                    && a.datetime.is_none_or(|d| d >= from)
            })
            .map(|a| a.id.to_string()))
    }

    async fn add_note(
        &self,
        ticket: &str,
        text: &str,
        internal: bool,
    ) -> Result<String, WriteError> {
        let action = json!({
            "ticket_id": ticket_id(ticket)?,
            "outcome": if internal { "Private Note" } else { "Note" },
            "note": text,
            "hiddenfromuser": internal,
        });
        let created: Action = self
            .client
            .post_one("/Actions", action)
            .await
            .map_err(write_error)?;
        Ok(created.id.to_string())
    }

    async fn set_status(&self, ticket: &str, status: &str) -> Result<(), WriteError> {
        let status_id = self.status_id(status).await?;
        // With `id`: an update. Without it Halo would create a second ticket.
        let _: Value = self
            .client
            .post_one(
                "/Tickets",
                json!({ "id": ticket_id(ticket)?, "status_id": status_id }),
            )
            .await
            .map_err(write_error)?;
        Ok(())
    }

    async fn ticket_status(&self, ticket: &str) -> Result<Option<(String, bool)>, WriteError> {
        match self.read_ticket(ticket).await? {
            None => Ok(None),
            Some(t) => Ok(Some((
                self.status_name(t.status_id).await?,
                t.status_id == CLOSED_STATUS_ID,
            ))),
        }
    }

    fn requests(&self) -> u64 {
        self.client.requests()
    }
}

#[async_trait]
impl crate::technicians::TechnicianWriter for HaloTicketWriter {
    /// `POST /api/Agent` with the agent's `id` (an upsert: without it Halo would create a
    /// second agent, trap 1).
    async fn update_technician(
        &self,
        external_id: &str,
        u: &crate::technicians::TechnicianUpdate,
    ) -> Result<(), WriteError> {
        let id: i64 = external_id.parse().map_err(|_| WriteError::Rejected {
            field: None,
            message: format!("'{external_id}' is not a Halo agent id"),
        })?;
        let agent = json!({
            "id": id,
            "name": format!("{} {}", u.first_name, u.last_name).trim(),
            "firstname": u.first_name,
            "surname": u.last_name,
            "email": u.email,
            "isdisabled": !u.active,
        });
        let _: serde_json::Value = self
            .client
            .post_one("/Agent", agent)
            .await
            .map_err(write_error)?;
        Ok(())
    }
}
