//! Writing tickets to ConnectWise: `POST /service/tickets` (board, company, status and
//! priority by id, `initialDescription`, our marker in `externalXRef`), notes with
//! `POST /service/tickets/{id}/notes` (`detailDescriptionFlag` for notes the client sees,
//! `internalAnalysisFlag` for internal ones) and status changes with `PATCH` and a
//! JSON-Patch array (never `PUT`, which clears every field it is not sent).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::json;

use super::client::{CwClient, CwError};
use super::wire::{BoardStatus, PatchOperation, ServiceNote, Ticket};
use crate::tickets::{NewVendorTicket, TicketWriter, WriteError};

/// ConnectWise cuts nothing: a summary over 100 characters is refused, so ours are cut
/// to fit and the full text goes to the description.
pub const SUMMARY_MAX: usize = 100;

pub struct CwTicketWriter {
    client: CwClient,
    /// Names resolved to ids during this writer's life ("board:Service Desk" → 1).
    ids: Mutex<HashMap<String, i64>>,
}

#[derive(serde::Deserialize)]
struct Named {
    id: i64,
    #[serde(default)]
    name: String,
}

impl CwTicketWriter {
    pub fn new(client: CwClient) -> Self {
        Self {
            client,
            ids: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, key: &str) -> Option<i64> {
        self.ids.lock().ok().and_then(|m| m.get(key).copied())
    }

    fn remember(&self, key: String, id: i64) {
        if let Ok(mut m) = self.ids.lock() {
            m.insert(key, id);
        }
    }

    /// The id of the record named `name` in the list at `path` (case-insensitive).
    async fn id_by_name(&self, path: &str, name: &str, field: &str) -> Result<i64, WriteError> {
        let key = format!("{path}:{}", name.to_lowercase());
        if let Some(id) = self.cached(&key) {
            return Ok(id);
        }
        // Boards and priorities are short lists: read them whole and compare here, so a
        // name needs no quoting inside `conditions`.
        let query = [
            ("fields", "id,name".to_string()),
            ("pageSize", "1000".to_string()),
        ];
        let (rows, _): (Vec<Named>, _) =
            self.client.get(path, &query).await.map_err(write_error)?;
        let id = rows
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(name))
            .map(|r| r.id)
            .ok_or_else(|| WriteError::Rejected {
                field: Some(field.into()),
                message: format!("ConnectWise has no {field} named '{name}'"),
            })?;
        self.remember(key, id);
        Ok(id)
    }

    async fn board_id(&self, name: &str) -> Result<i64, WriteError> {
        self.id_by_name("/service/boards", name, "board").await
    }

    async fn status_id(&self, board: i64, name: &str) -> Result<i64, WriteError> {
        let key = format!("status:{board}:{}", name.to_lowercase());
        if let Some(id) = self.cached(&key) {
            return Ok(id);
        }
        let query = [("pageSize", "1000".to_string())];
        let (rows, _): (Vec<BoardStatus>, _) = self
            .client
            .get(&format!("/service/boards/{board}/statuses"), &query)
            .await
            .map_err(write_error)?;
        let id = rows
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
            .map(|s| s.id)
            .ok_or_else(|| WriteError::Rejected {
                field: Some("status".into()),
                message: format!("board {board} in ConnectWise has no status named '{name}'"),
            })?;
        self.remember(key, id);
        Ok(id)
    }
}

/// What a ConnectWise error means for the outbox.
pub fn write_error(e: CwError) -> WriteError {
    match &e {
        CwError::Status {
            status,
            body,
            retry_after,
        } => {
            let first = body
                .as_ref()
                .and_then(|b| b.errors.as_ref())
                .and_then(|e| e.first());
            let rejected = WriteError::Rejected {
                field: first.and_then(|e| e.field.clone()),
                message: match (body, first) {
                    (Some(b), Some(first)) => format!("{}: {}", b.message, first.message),
                    (Some(b), None) => b.message.clone(),
                    (None, _) => e.to_string(),
                },
            };
            WriteError::from_status(
                *status,
                *retry_after,
                e.to_string(),
                e.vendor_message(),
                "Service Desk > Service Tickets (Add, Edit) in the API member's security role",
                rejected,
            )
        }
        CwError::Unreachable { .. } | CwError::Decode(_) => WriteError::transient(e.to_string()),
        CwError::Refused(m) => WriteError::transient(m.clone()),
    }
}

/// A summary ConnectWise accepts: at most 100 characters, cut at a character boundary.
pub fn fit_summary(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() <= SUMMARY_MAX {
        return s.to_string();
    }
    let mut out: String = s.chars().take(SUMMARY_MAX - 1).collect();
    out.push('…');
    out
}

#[async_trait]
impl TicketWriter for CwTicketWriter {
    async fn find_ticket(
        &self,
        t: &NewVendorTicket,
        _since: DateTime<Utc>,
    ) -> Result<Option<String>, WriteError> {
        let marker = &t.marker;
        let query = [
            // Markers are ours: letters, digits and '-', nothing to escape.
            ("conditions", format!("externalXRef=\"{marker}\"")),
            ("fields", "id".to_string()),
            ("pageSize", "2".to_string()),
        ];
        let (rows, _): (Vec<Named>, _) = self
            .client
            .get("/service/tickets", &query)
            .await
            .map_err(write_error)?;
        Ok(rows.first().map(|r| r.id.to_string()))
    }

    async fn create_ticket(&self, t: &NewVendorTicket) -> Result<String, WriteError> {
        let board_name = t.defaults.board.as_deref().ok_or(WriteError::Rejected {
            field: Some("ticket_defaults.board".into()),
            message: "no board for new tickets: set one in the integration's ticket defaults"
                .into(),
        })?;
        let board = self.board_id(board_name).await?;
        let company: i64 = t
            .company_external_id
            .parse()
            .map_err(|_| WriteError::Rejected {
                field: Some("company".into()),
                message: format!(
                    "'{}' is not a ConnectWise company id",
                    t.company_external_id
                ),
            })?;
        let mut body = json!({
            "summary": fit_summary(&t.summary),
            "board": {"id": board},
            "company": {"id": company},
            "initialDescription": t.description,
            "externalXRef": t.marker,
        });
        if let Some(s) = &t.defaults.status {
            body["status"] = json!({"id": self.status_id(board, s).await?});
        }
        if let Some(p) = &t.defaults.priority {
            let id = self
                .id_by_name("/service/priorities", p, "priority")
                .await?;
            body["priority"] = json!({ "id": id });
        }
        if let Some(ty) = &t.defaults.ticket_type {
            // Types belong to a board: `/service/boards/{id}/types`.
            let id = self
                .id_by_name(&format!("/service/boards/{board}/types"), ty, "ticket type")
                .await
                .map_err(|e| match e {
                    WriteError::Rejected { .. } => WriteError::Rejected {
                        field: Some("ticket_defaults.ticket_type".into()),
                        message: format!(
                            "board {board_name} in ConnectWise has no ticket type named '{ty}'"
                        ),
                    },
                    e => e,
                })?;
            body["type"] = json!({ "id": id });
        }
        let created: Ticket = self
            .client
            .send(Method::POST, "/service/tickets", &body)
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
            ("orderBy", "id desc".to_string()),
            ("pageSize", "100".to_string()),
        ];
        let (rows, _): (Vec<ServiceNote>, _) = self
            .client
            .get(&format!("/service/tickets/{ticket}/notes"), &query)
            .await
            .map_err(write_error)?;
        // A clock difference of a few minutes between us and ConnectWise is tolerated.
        let from = since - chrono::Duration::minutes(5);
        Ok(rows
            .iter()
            .find(|n| {
                n.text == text
                    && n.internal_analysis_flag == internal
                    && n.date_created.is_none_or(|d| d >= from)
            })
            .map(|n| n.id.to_string()))
    }

    async fn add_note(
        &self,
        ticket: &str,
        text: &str,
        internal: bool,
    ) -> Result<String, WriteError> {
        let body = json!({
            "text": text,
            "detailDescriptionFlag": !internal,
            "internalAnalysisFlag": internal,
        });
        let note: ServiceNote = self
            .client
            .send(
                Method::POST,
                &format!("/service/tickets/{ticket}/notes"),
                &body,
            )
            .await
            .map_err(write_error)?;
        Ok(note.id.to_string())
    }

    async fn set_status(&self, ticket: &str, status: &str) -> Result<(), WriteError> {
        let query = [("fields", "id,board,status".to_string())];
        let (current, _): (serde_json::Value, _) = self
            .client
            .get(&format!("/service/tickets/{ticket}"), &query)
            .await
            .map_err(write_error)?;
        let board = current["board"]["id"]
            .as_i64()
            .ok_or_else(|| WriteError::Transient {
                message: format!("ConnectWise ticket {ticket} came without its board"),
                retry_after: None,
            })?;
        if current["status"]["name"]
            .as_str()
            .is_some_and(|n| n.eq_ignore_ascii_case(status))
        {
            return Ok(());
        }
        let id = self.status_id(board, status).await?;
        let patch = vec![PatchOperation {
            op: "replace".into(),
            path: "status".into(),
            value: json!({ "id": id }),
        }];
        let body = serde_json::to_value(patch).map_err(|e| WriteError::Rejected {
            field: None,
            message: e.to_string(),
        })?;
        let _: serde_json::Value = self
            .client
            .send(Method::PATCH, &format!("/service/tickets/{ticket}"), &body)
            .await
            .map_err(write_error)?;
        Ok(())
    }

    async fn ticket_status(&self, ticket: &str) -> Result<Option<(String, bool)>, WriteError> {
        let query = [("fields", "id,status,closedFlag".to_string())];
        match self
            .client
            .get::<serde_json::Value>(&format!("/service/tickets/{ticket}"), &query)
            .await
        {
            Ok((t, _)) => Ok(t["status"]["name"]
                .as_str()
                .map(|name| (name.to_string(), t["closedFlag"].as_bool().unwrap_or(false)))),
            Err(CwError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(write_error(e)),
        }
    }

    fn requests(&self) -> u64 {
        self.client.requests()
    }
}

#[async_trait]
impl crate::technicians::TechnicianWriter for CwTicketWriter {
    /// `PATCH /system/members/{id}` with a JSON-Patch array (never PUT, trap 7).
    async fn update_technician(
        &self,
        external_id: &str,
        u: &crate::technicians::TechnicianUpdate,
    ) -> Result<(), WriteError> {
        let id: i64 = external_id.parse().map_err(|_| WriteError::Rejected {
            field: None,
            message: format!("'{external_id}' is not a ConnectWise member id"),
        })?;
        let patch: Vec<PatchOperation> = [
            ("firstName", json!(u.first_name)),
            ("lastName", json!(u.last_name)),
            ("primaryEmail", json!(u.email)),
            ("inactiveFlag", json!(!u.active)),
        ]
        .into_iter()
        .map(|(path, value)| PatchOperation {
            op: "replace".into(),
            path: path.into(),
            value,
        })
        .collect();
        let body = serde_json::to_value(patch).map_err(|e| WriteError::Rejected {
            field: None,
            message: e.to_string(),
        })?;
        let _: serde_json::Value = self
            .client
            .send(
                reqwest::Method::PATCH,
                &format!("/system/members/{id}"),
                &body,
            )
            .await
            .map_err(write_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_are_cut_to_what_connectwise_accepts() {
        assert_eq!(fit_summary("  Printer  "), "Printer");
        let long = "é".repeat(150);
        let cut = fit_summary(&long);
        assert_eq!(cut.chars().count(), SUMMARY_MAX);
        assert!(cut.ends_with('…'));
    }
}
