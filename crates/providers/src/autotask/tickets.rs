//! Writing tickets to Autotask, and the ticket picklists both directions need.
//!
//! Autotask's writes are not RESTful by id (trap 14): a ticket is created with
//! `POST /V1.0/Tickets` and changed with `PATCH /V1.0/Tickets` carrying its `id` in the body
//! (`PATCH /Tickets/{id}` fails); a note is a child written through its parent,
//! `POST /V1.0/Tickets/{id}/Notes`. Every answer is `{"itemId": N}`. Status, priority, queue,
//! ticket type, note type and note visibility (`publish`) are the tenant's picklist
//! integers (trap 18): names are turned into values with `entityInformation/fields`, read
//! once per writer, and a name the tenant does not have is refused before anything is
//! sent. mspbridge's marker goes into the ticket's `externalID`, which a retry queries
//! (`externalID eq …`) before it creates again; a note is looked for by its text and
//! visibility among the ticket's notes created since the first attempt.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::json;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::client::{AutotaskClient, AutotaskError};
use super::wire::{FieldsInfo, Item, ItemId, PicklistValue, Ticket, TicketNote, at_time};
use crate::http::Expiring;
use crate::tickets::{NewVendorTicket, TicketWriter, WriteError};

/// Where an Autotask admin lets the API user create and edit tickets and notes.
const WRITE_SETTING: &str = "Admin > Account Settings & Users > Resources/Users > (the API user) > Security Level: Service Desk (Tickets) add and edit, and ticket notes add";

/// The title of notes mspbridge writes (Autotask requires one).
pub const NOTE_TITLE: &str = "Update";

/// How far before the first attempt a retry looks (clocks differ).
const SLACK: chrono::Duration = chrono::Duration::minutes(5);

/// Autotask's built-in Complete ticket status: its value and label.
pub const COMPLETE: i64 = 5;
pub const COMPLETE_LABEL: &str = "Complete";

/// The tenant's ticket and note picklists (value → label), trap 18.
#[derive(Debug, Clone, Default)]
pub struct Picklists {
    pub status: Vec<PicklistValue>,
    pub priority: Vec<PicklistValue>,
    pub queue: Vec<PicklistValue>,
    pub ticket_type: Vec<PicklistValue>,
    pub note_type: Vec<PicklistValue>,
    pub publish: Vec<PicklistValue>,
}

impl Picklists {
    /// `Tickets/entityInformation/fields` and `TicketNotes/entityInformation/fields`.
    pub async fn load(client: &AutotaskClient) -> Result<Self, AutotaskError> {
        let tickets: FieldsInfo = client.get("Tickets/entityInformation/fields").await?;
        let notes: FieldsInfo = client.get("TicketNotes/entityInformation/fields").await?;
        Ok(Self {
            status: tickets.picklist_values("status"),
            priority: tickets.picklist_values("priority"),
            queue: tickets.picklist_values("queueID"),
            ticket_type: tickets.picklist_values("ticketType"),
            note_type: notes.picklist_values("noteType"),
            publish: notes.picklist_values("publish"),
        })
    }

    /// The label of `value` in `list` (`None` for a value the tenant no longer has).
    pub fn label(list: &[PicklistValue], value: Option<i64>) -> Option<String> {
        let v = value?.to_string();
        list.iter().find(|p| p.value == v).map(|p| p.label.clone())
    }

    /// The value labelled `name` (case-insensitive).
    pub fn value(list: &[PicklistValue], name: &str) -> Option<i64> {
        list.iter()
            .find(|p| p.label.eq_ignore_ascii_case(name.trim()))
            .and_then(|p| p.value.parse().ok())
    }

    /// Whether a ticket in `status` is closed: Autotask's built-in Complete status (value
    /// 5, a system status every tenant has), found by its value or, should a tenant's
    /// list say otherwise, by its label. `completedDate` alone does not close a ticket:
    /// Autotask keeps the stamp when a completed ticket goes back to another status. The
    /// integration's own closed statuses are added by the engine
    /// (`SyncOptions::ticket_closed`).
    pub fn is_complete(&self, status: Option<i64>) -> bool {
        status == Some(COMPLETE)
            || Self::label(&self.status, status)
                .is_some_and(|l| l.trim().eq_ignore_ascii_case(COMPLETE_LABEL))
    }

    pub fn labels(list: &[PicklistValue]) -> Vec<String> {
        list.iter().map(|p| p.label.clone()).collect()
    }

    /// The tenant's default value of `list`, else its first.
    pub fn default_of(list: &[PicklistValue]) -> Option<i64> {
        list.iter()
            .find(|p| p.is_default_value)
            .or_else(|| list.first())
            .and_then(|p| p.value.parse().ok())
    }

    /// Whether a note published to `publish` is for staff only: its label names an
    /// internal audience ("Internal Only", "Internal Project Team") **[unverified]**.
    pub fn is_internal(&self, publish: Option<i64>) -> bool {
        Self::label(&self.publish, publish).is_some_and(|l| l.to_lowercase().contains("internal"))
    }

    /// The `publish` value for a note that is (or is not) internal: "Internal Only" or
    /// "All Autotask Users" where the tenant has them, else the first of the kind.
    pub fn publish_for(&self, internal: bool) -> Option<i64> {
        let preferred = if internal {
            "Internal Only"
        } else {
            "All Autotask Users"
        };
        Self::value(&self.publish, preferred).or_else(|| {
            self.publish
                .iter()
                .find(|p| p.label.to_lowercase().contains("internal") == internal)
                .and_then(|p| p.value.parse().ok())
        })
    }
}

/// What an Autotask error means for the outbox. A 500 with an `errors` array is Autotask
/// refusing the content (trap 20): never retried.
pub fn write_error(e: AutotaskError) -> WriteError {
    match &e {
        AutotaskError::Validation(m) => WriteError::Rejected {
            field: None,
            message: format!("Autotask refused the write: {m}"),
        },
        AutotaskError::Status {
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
                message: format!("Autotask refused the write: {message}"),
            },
        ),
        AutotaskError::Refused(m) if m.contains("budget") => WriteError::transient(m.clone()),
        AutotaskError::Refused(m) | AutotaskError::Zone { message: m, .. } => {
            WriteError::Rejected {
                field: None,
                message: m.clone(),
            }
        }
        AutotaskError::Unreachable { .. } | AutotaskError::Decode(_) => {
            WriteError::transient(e.to_string())
        }
    }
}

fn numeric(id: &str, what: &str) -> Result<i64, WriteError> {
    id.parse().map_err(|_| WriteError::Rejected {
        field: None,
        message: format!("'{id}' is not an Autotask {what} id"),
    })
}

pub struct AutotaskTicketWriter {
    client: AutotaskClient,
    /// The lists this writer uses, and whether they came from the shared cache (and may
    /// miss a value added in Autotask since).
    lists: tokio::sync::Mutex<Option<(Arc<Picklists>, bool)>>,
}

/// How long ticket writers share a tenant's picklists: an outbox drain or a webhook
/// delivery reads the two `entityInformation/fields` lists once per this, not per writer.
pub const PICKLIST_TTL: Duration = Duration::from_secs(600);

fn picklist_cache() -> &'static Expiring<Arc<Picklists>> {
    static CACHE: OnceLock<Expiring<Arc<Picklists>>> = OnceLock::new();
    CACHE.get_or_init(|| Expiring::new(PICKLIST_TTL))
}

impl AutotaskTicketWriter {
    pub fn new(client: AutotaskClient) -> Self {
        Self {
            client,
            lists: tokio::sync::Mutex::new(None),
        }
    }

    /// The zone's API and the user: whose picklists these are.
    fn cache_key(&self) -> String {
        format!(
            "{}|{}",
            self.client.api_base(),
            self.client.username().to_lowercase()
        )
    }

    async fn lists(&self) -> Result<(Arc<Picklists>, bool), WriteError> {
        let mut mine = self.lists.lock().await;
        if let Some((l, cached)) = &*mine {
            return Ok((l.clone(), *cached));
        }
        if let Some(l) = picklist_cache().get(&self.cache_key()) {
            *mine = Some((l.clone(), true));
            return Ok((l, true));
        }
        drop(mine);
        Ok((self.reload().await?, false))
    }

    /// Reads the picklists from Autotask and shares them.
    async fn reload(&self) -> Result<Arc<Picklists>, WriteError> {
        let l = Arc::new(Picklists::load(&self.client).await.map_err(write_error)?);
        picklist_cache().put(self.cache_key(), l.clone());
        *self.lists.lock().await = Some((l.clone(), false));
        Ok(l)
    }

    /// `f` over the picklists; when it refuses a name or value and the lists came from
    /// the shared cache, they are read again and `f` tried once more (a status added in
    /// Autotask a minute ago is found, not refused).
    async fn with_lists<T>(
        &self,
        f: impl Fn(&Picklists) -> Result<T, WriteError>,
    ) -> Result<T, WriteError> {
        let (lists, cached) = self.lists().await?;
        match f(&lists) {
            Err(WriteError::Rejected { .. }) if cached => f(&*self.reload().await?),
            r => r,
        }
    }

    /// The value of `name` in `list`, or a refusal naming the field and the tenant's labels.
    fn pick(
        list: &[PicklistValue],
        name: &str,
        field: &str,
        what: &str,
    ) -> Result<i64, WriteError> {
        Picklists::value(list, name).ok_or_else(|| WriteError::Rejected {
            field: Some(field.into()),
            message: format!(
                "Autotask has no {what} named '{name}' (it has: {})",
                Picklists::labels(list).join(", ")
            ),
        })
    }
}

#[async_trait]
impl TicketWriter for AutotaskTicketWriter {
    /// `externalID eq {marker}` on the company's tickets.
    async fn find_ticket(
        &self,
        t: &NewVendorTicket,
        _since: DateTime<Utc>,
    ) -> Result<Option<String>, WriteError> {
        let company = numeric(&t.company_external_id, "company")?;
        let found: Vec<Ticket> = self
            .client
            .query_all(
                "Tickets",
                json!([
                    { "op": "eq", "field": "externalID", "value": t.marker },
                    { "op": "eq", "field": "companyID", "value": company },
                ]),
            )
            .await
            .map_err(write_error)?;
        Ok(found.first().map(|t| t.id.to_string()))
    }

    async fn create_ticket(&self, t: &NewVendorTicket) -> Result<String, WriteError> {
        let company =
            numeric(&t.company_external_id, "company").map_err(|_| WriteError::Rejected {
                field: Some("company".into()),
                message: format!("'{}' is not an Autotask company id", t.company_external_id),
            })?;
        let ticket = self
            .with_lists(|lists| {
                // Status and priority are required; the tenant's defaults stand in for
                // unset ones.
                let status = match &t.defaults.status {
                    Some(s) => Self::pick(&lists.status, s, "status", "ticket status")?,
                    None => Picklists::default_of(&lists.status).ok_or_else(|| {
                        WriteError::Rejected {
                            field: Some("status".into()),
                            message: "Autotask lists no ticket statuses".into(),
                        }
                    })?,
                };
                let priority = match &t.defaults.priority {
                    Some(p) => Self::pick(&lists.priority, p, "priority", "priority")?,
                    None => Picklists::default_of(&lists.priority).ok_or_else(|| {
                        WriteError::Rejected {
                            field: Some("priority".into()),
                            message: "Autotask lists no ticket priorities".into(),
                        }
                    })?,
                };
                let mut ticket = json!({
                    "companyID": company,
                    "title": t.summary.trim(),
                    "description": t.description,
                    "status": status,
                    "priority": priority,
                    "externalID": t.marker,
                });
                if let Some(q) = &t.defaults.board {
                    ticket["queueID"] = json!(Self::pick(&lists.queue, q, "board", "queue")?);
                }
                if let Some(ty) = &t.defaults.ticket_type {
                    ticket["ticketType"] = json!(Self::pick(
                        &lists.ticket_type,
                        ty,
                        "ticket_type",
                        "ticket type"
                    )?);
                }
                Ok(ticket)
            })
            .await?;
        let created: ItemId = self
            .client
            .write(Method::POST, "Tickets", &ticket)
            .await
            .map_err(write_error)?;
        Ok(created.item_id.to_string())
    }

    async fn find_note(
        &self,
        ticket: &str,
        text: &str,
        internal: bool,
        since: DateTime<Utc>,
    ) -> Result<Option<String>, WriteError> {
        let id = numeric(ticket, "ticket")?;
        let (lists, _) = self.lists().await?;
        let notes: Vec<TicketNote> = self
            .client
            .query_all(
                "TicketNotes",
                json!([
                    { "op": "eq", "field": "ticketID", "value": id },
                    { "op": "gte", "field": "createDateTime", "value": at_time::format(since - SLACK) },
                ]),
            )
            .await
            .map_err(write_error)?;
        Ok(notes
            .iter()
            .find(|n| {
                n.description.trim() == text.trim() && lists.is_internal(n.publish) == internal
            })
            .map(|n| n.id.to_string()))
    }

    async fn add_note(
        &self,
        ticket: &str,
        text: &str,
        internal: bool,
    ) -> Result<String, WriteError> {
        let id = numeric(ticket, "ticket")?;
        let note = self
            .with_lists(|lists| {
                let publish = lists
                    .publish_for(internal)
                    .ok_or_else(|| WriteError::Rejected {
                        field: Some("internal".into()),
                        message: format!(
                            "Autotask has no note visibility for {} notes (it has: {})",
                            if internal {
                                "internal"
                            } else {
                                "client-visible"
                            },
                            Picklists::labels(&lists.publish).join(", ")
                        ),
                    })?;
                let mut note = json!({
                    "ticketID": id,
                    "title": NOTE_TITLE,
                    "description": text,
                    "publish": publish,
                });
                if let Some(kind) = Picklists::default_of(&lists.note_type) {
                    note["noteType"] = json!(kind);
                }
                Ok(note)
            })
            .await?;
        let created: ItemId = self
            .client
            .write(Method::POST, &format!("Tickets/{id}/Notes"), &note)
            .await
            .map_err(write_error)?;
        Ok(created.item_id.to_string())
    }

    /// `PATCH /Tickets` with the id in the body (never `/Tickets/{id}`).
    async fn set_status(&self, ticket: &str, status: &str) -> Result<(), WriteError> {
        let id = numeric(ticket, "ticket")?;
        let value = self
            .with_lists(|lists| Self::pick(&lists.status, status, "status", "ticket status"))
            .await?;
        let _: ItemId = self
            .client
            .write(
                Method::PATCH,
                "Tickets",
                &json!({ "id": id, "status": value }),
            )
            .await
            .map_err(write_error)?;
        Ok(())
    }

    async fn ticket_status(&self, ticket: &str) -> Result<Option<(String, bool)>, WriteError> {
        let id = numeric(ticket, "ticket")?;
        let found: Item<Ticket> = match self.client.get(&format!("Tickets/{id}")).await {
            Ok(f) => f,
            Err(e) if e.status() == Some(404) => return Ok(None),
            Err(e) => return Err(write_error(e)),
        };
        let Some(t) = found.item else {
            return Ok(None);
        };
        // A value the (cached) lists lack reads them again once; still unknown, it is
        // shown by its number. Closed follows the status, not `completedDate`.
        let (label, closed) = match self
            .with_lists(|lists| {
                Picklists::label(&lists.status, t.status)
                    .map(|l| (l, lists.is_complete(t.status)))
                    .ok_or(WriteError::Rejected {
                        field: None,
                        message: String::new(),
                    })
            })
            .await
        {
            Ok(l) => l,
            Err(WriteError::Rejected { .. }) => (
                format!("Status {}", t.status.unwrap_or_default()),
                t.status == Some(COMPLETE),
            ),
            Err(e) => return Err(e),
        };
        Ok(Some((label, closed)))
    }

    fn requests(&self) -> u64 {
        self.client.requests()
    }
}

#[async_trait]
impl crate::technicians::TechnicianWriter for AutotaskTicketWriter {
    /// `PATCH /Resources` with the id in the body (writes are not RESTful by id, trap 14).
    async fn update_technician(
        &self,
        external_id: &str,
        u: &crate::technicians::TechnicianUpdate,
    ) -> Result<(), WriteError> {
        let id = numeric(external_id, "resource")?;
        let resource = json!({
            "id": id,
            "firstName": u.first_name,
            "lastName": u.last_name,
            "email": u.email,
            "isActive": u.active,
        });
        let _: ItemId = self
            .client
            .write(Method::PATCH, "Resources", &resource)
            .await
            .map_err(write_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(v: i64, label: &str, default: bool) -> PicklistValue {
        PicklistValue {
            value: v.to_string(),
            label: label.into(),
            is_active: true,
            is_default_value: default,
        }
    }

    #[test]
    fn picklists_map_names_values_and_visibility() {
        let lists = Picklists {
            status: vec![value(1, "New", true), value(5, "Complete", false)],
            publish: vec![
                value(1, "All Autotask Users", false),
                value(2, "Internal Only", false),
                value(4, "Internal Project Team", false),
            ],
            ..Default::default()
        };
        assert_eq!(Picklists::value(&lists.status, " complete "), Some(5));
        assert_eq!(
            Picklists::label(&lists.status, Some(1)).as_deref(),
            Some("New")
        );
        assert_eq!(Picklists::label(&lists.status, Some(9)), None);
        assert_eq!(Picklists::default_of(&lists.status), Some(1));
        assert!(lists.is_complete(Some(5)) && !lists.is_complete(Some(1)));
        assert!(!lists.is_complete(None));
        let relabelled = Picklists {
            status: vec![value(1, "New", true), value(17, "complete ", false)],
            ..Default::default()
        };
        assert!(relabelled.is_complete(Some(17)) && relabelled.is_complete(Some(5)));
        assert!(lists.is_internal(Some(4)) && lists.is_internal(Some(2)));
        assert!(!lists.is_internal(Some(1)) && !lists.is_internal(None));
        assert_eq!(
            (lists.publish_for(true), lists.publish_for(false)),
            (Some(2), Some(1))
        );
        let err = AutotaskTicketWriter::pick(&lists.status, "Parked", "status", "ticket status")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Autotask has no ticket status named 'Parked' (it has: New, Complete)"
        );
    }

    #[test]
    fn validation_failures_are_not_retried() {
        let e = write_error(AutotaskError::Validation(
            "Missing Required Field: title".into(),
        ));
        assert!(!e.retryable(), "{e}");
        let busy = write_error(AutotaskError::Status {
            status: 429,
            message: "threshold".into(),
            retry_after: None,
        });
        assert!(busy.retryable());
    }
}
