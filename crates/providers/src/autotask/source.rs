//! Autotask as a sync source. Every list is a query (`POST /V1.0/{Entity}/query`) with a
//! filter, which Autotask requires (trap 16): `id gt 0` for a full listing, the change
//! stamps for an incremental one (companies `lastActivityDate`; contacts
//! `lastModifiedDate` or `lastActivityDate`). Pages hold up to 500 records
//! (`MaxRecords`), only the fields the sync reads (`IncludeFields`, `id` always among
//! them), and the page token is Autotask's `nextPageUrl` (followed only on the zone's
//! host). Resources are technicians (a full scan: a small table); the API user itself is
//! left out. Company types are the tenant's `companyType` picklist labels; contact types
//! are the contact's groups (`ContactGroupContacts`, one query per page of contacts) or,
//! when configured, one contact user-defined field. Tickets are queried by
//! `lastActivityDate` (which every change and note moves) with their picklist integers
//! turned into the tenant's labels (queue = board); their notes come from
//! `TicketNotes/query` with `ticketID in […]` (at most 500 ids a query), `publish` telling
//! internal notes from client-visible ones.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mspbridge_domain::sync::{
    ExtCompany, ExtContact, ExtNote, ExtTechnician, ExtTicket, TicketLists, Vocabulary,
};
use serde_json::json;

use super::client::{AutotaskClient, AutotaskError};
use super::tickets::Picklists;
use super::wire::{
    Company, Contact, ContactGroup, ContactGroupContact, FieldsInfo, QueryPage, Resource, Ticket,
    TicketNote, at_time,
};
use crate::source::*;

/// Autotask's largest page (`MaxRecords` 1–500).
pub const MAX_RECORDS: usize = 500;

const COMPANY_FIELDS: &[&str] = &[
    "id",
    "companyName",
    "companyNumber",
    "companyType",
    "isActive",
    "phone",
    "webAddress",
    "lastActivityDate",
];

const CONTACT_FIELDS: &[&str] = &[
    "id",
    "companyID",
    "firstName",
    "lastName",
    "emailAddress",
    "emailAddress2",
    "emailAddress3",
    "phone",
    "mobilePhone",
    "isActive",
    "primaryContact",
    "lastActivityDate",
    "lastModifiedDate",
];

/// What the technicians pass reads of a resource (note authors need only the names).
const RESOURCE_FIELDS: &[&str] = &[
    "id",
    "firstName",
    "lastName",
    "email",
    "email2",
    "email3",
    "userName",
    "isActive",
];

const TICKET_FIELDS: &[&str] = &[
    "id",
    "ticketNumber",
    "title",
    "description",
    "status",
    "priority",
    "queueID",
    "ticketType",
    "companyID",
    "contactID",
    "assignedResourceID",
    "externalID",
    "createDate",
    "completedDate",
    "lastActivityDate",
];

/// Ticket ids per `TicketNotes` query (Autotask allows at most 500 values in an `in`).
const NOTES_PER_QUERY: usize = 500;

/// Where contact types come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactTypes {
    /// The contact groups a contact belongs to.
    Groups,
    /// The value of this contact user-defined field.
    Udf(String),
}

pub struct AutotaskSource {
    client: AutotaskClient,
    page_size: usize,
    contact_types: ContactTypes,
    /// `companyType` picklist (value → label), read once per run.
    company_types: tokio::sync::Mutex<Option<HashMap<String, String>>>,
    /// Contact groups (id → name), read once per run.
    groups: tokio::sync::Mutex<Option<HashMap<i64, String>>>,
    /// The contact-type field's picklist (value → label), read once per run.
    udf_labels: tokio::sync::Mutex<Option<HashMap<String, String>>>,
    /// Ticket and note picklists, read once per run.
    lists: tokio::sync::OnceCell<Picklists>,
    /// Resource names (id → "First Last") for note authors, read once per run.
    names: tokio::sync::OnceCell<HashMap<i64, String>>,
    /// Resource names the technicians pass read: when it listed every page from the
    /// first, note authors take them from here instead of listing Resources again.
    listed: std::sync::Mutex<ListedResources>,
}

#[derive(Default)]
struct ListedResources {
    names: HashMap<i64, String>,
    /// The pass started at the first page (a resumed pass saw only part of the list).
    from_start: bool,
    complete: bool,
}

fn full_name(r: &Resource) -> String {
    format!("{} {}", r.first_name, r.last_name)
        .trim()
        .to_string()
}

fn everything() -> serde_json::Value {
    json!([{ "op": "gt", "field": "id", "value": 0 }])
}

fn email(e: Option<&str>) -> Option<String> {
    e.map(|e| e.trim().to_lowercase())
        .filter(|e| !e.is_empty() && e.contains('@'))
}

/// The first usable address of several (Autotask's `emailAddress`, `emailAddress2`,
/// `emailAddress3`; a resource's `email`, `email2`, `email3`).
fn first_email(all: [&Option<String>; 3]) -> Option<String> {
    all.into_iter().find_map(|e| email(e.as_deref()))
}

fn text(s: Option<&str>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

impl AutotaskSource {
    pub fn new(client: AutotaskClient, contact_types: ContactTypes) -> Self {
        Self {
            client,
            page_size: MAX_RECORDS,
            contact_types,
            company_types: tokio::sync::Mutex::new(None),
            groups: tokio::sync::Mutex::new(None),
            udf_labels: tokio::sync::Mutex::new(None),
            lists: tokio::sync::OnceCell::new(),
            names: tokio::sync::OnceCell::new(),
            listed: std::sync::Mutex::new(ListedResources::default()),
        }
    }

    pub fn with_page_size(mut self, n: usize) -> Self {
        self.page_size = n.clamp(1, MAX_RECORDS);
        self
    }

    pub fn client(&self) -> &AutotaskClient {
        &self.client
    }

    fn error(entity: &str, e: AutotaskError) -> SourceError {
        match e {
            AutotaskError::Status { status: 401, .. } => SourceError::Auth(e.vendor_message()),
            AutotaskError::Status { status: 403, .. } => SourceError::NotPermitted {
                message: format!("{entity}: {}", e.vendor_message()),
                setting: super::PERMISSION_SETTING.into(),
            },
            AutotaskError::Refused(m) if m.contains("budget") => SourceError::Budget(m),
            AutotaskError::Validation(m) => {
                SourceError::Unavailable(format!("Autotask refused the {entity} query: {m}"))
            }
            other => SourceError::Unavailable(other.to_string()),
        }
    }

    /// The first page of `entity` for `filter`, or the page `after` names.
    async fn page(
        &self,
        entity: &str,
        filter: serde_json::Value,
        fields: Option<&[&str]>,
        after: Option<&str>,
    ) -> Result<QueryPage, SourceError> {
        let r = match after {
            Some(url) => self.client.follow(url).await,
            None => {
                let mut body = json!({ "MaxRecords": self.page_size, "filter": filter });
                if let Some(f) = fields {
                    body["IncludeFields"] = json!(f);
                }
                self.client.query(entity, &body).await
            }
        };
        r.map_err(|e| Self::error(entity, e))
    }

    async fn company_types(&self) -> Result<HashMap<String, String>, SourceError> {
        let mut cached = self.company_types.lock().await;
        if let Some(m) = cached.as_ref() {
            return Ok(m.clone());
        }
        let info: FieldsInfo = self
            .client
            .get("Companies/entityInformation/fields")
            .await
            .map_err(|e| Self::error("Companies", e))?;
        let m: HashMap<String, String> = info.picklist("companyType").into_iter().collect();
        *cached = Some(m.clone());
        Ok(m)
    }

    /// The picklist of contact user-defined field `name` (empty for a free-text field).
    async fn udf_labels(&self, name: &str) -> Result<HashMap<String, String>, SourceError> {
        let mut cached = self.udf_labels.lock().await;
        if let Some(m) = cached.as_ref() {
            return Ok(m.clone());
        }
        let info: FieldsInfo = self
            .client
            .get("Contacts/entityInformation/userDefinedFields")
            .await
            .map_err(|e| Self::error("Contacts", e))?;
        let m: HashMap<String, String> = info.picklist(name).into_iter().collect();
        *cached = Some(m.clone());
        Ok(m)
    }

    async fn lists(&self) -> Result<&Picklists, SourceError> {
        self.lists
            .get_or_try_init(|| async {
                Picklists::load(&self.client)
                    .await
                    .map_err(|e| Self::error("Tickets", e))
            })
            .await
    }

    /// Every resource's name, for note authors: the technicians pass's list when it read
    /// the whole of it in this run, else one listing of Resources.
    async fn resource_names(&self) -> Result<&HashMap<i64, String>, SourceError> {
        self.names
            .get_or_try_init(|| async {
                {
                    let listed = self.listed.lock().unwrap_or_else(|p| p.into_inner());
                    if listed.complete {
                        return Ok(listed.names.clone());
                    }
                }
                let mut names = HashMap::new();
                let mut after: Option<String> = None;
                loop {
                    let p = self
                        .page(
                            "Resources",
                            everything(),
                            Some(&["id", "firstName", "lastName"]),
                            after.as_deref(),
                        )
                        .await?;
                    let (rows, _, _) = read_rows::<Resource>(p.items);
                    names.extend(rows.iter().map(|r| (r.id, full_name(r))));
                    match p.page_details.next_page_url {
                        Some(n) => after = Some(n),
                        None => return Ok(names),
                    }
                }
            })
            .await
    }

    async fn group_names(&self) -> Result<HashMap<i64, String>, SourceError> {
        let mut cached = self.groups.lock().await;
        if let Some(m) = cached.as_ref() {
            return Ok(m.clone());
        }
        let mut names = HashMap::new();
        let mut after: Option<String> = None;
        loop {
            let p = self
                .page("ContactGroups", everything(), None, after.as_deref())
                .await?;
            let (groups, _, _) = read_rows::<ContactGroup>(p.items);
            names.extend(
                groups
                    .into_iter()
                    .filter(|g| g.is_active)
                    .map(|g| (g.id, g.name)),
            );
            match p.page_details.next_page_url {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        *cached = Some(names.clone());
        Ok(names)
    }

    /// The group names of each contact in `ids` (one query, more pages if they are
    /// members of more than 500 groups together).
    async fn groups_of(&self, ids: &[i64]) -> Result<HashMap<i64, Vec<String>>, SourceError> {
        let mut out: HashMap<i64, Vec<String>> = HashMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let names = self.group_names().await?;
        let filter = json!([{ "op": "in", "field": "contactID", "value": ids }]);
        let mut after: Option<String> = None;
        loop {
            let p = self
                .page(
                    "ContactGroupContacts",
                    filter.clone(),
                    None,
                    after.as_deref(),
                )
                .await?;
            let (rows, _, _) = read_rows::<ContactGroupContact>(p.items);
            for r in rows {
                if let Some(n) = names.get(&r.contact_group_id) {
                    out.entry(r.contact_id).or_default().push(n.clone());
                }
            }
            match p.page_details.next_page_url {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        for v in out.values_mut() {
            v.sort();
            v.dedup();
        }
        Ok(out)
    }
}

#[async_trait]
impl CompanySource for AutotaskSource {
    async fn companies(&self, req: &PageRequest) -> Result<SourcePage<ExtCompany>, SourceError> {
        let filter = match req.since {
            None => everything(),
            Some(t) => {
                json!([{ "op": "gt", "field": "lastActivityDate", "value": at_time::format(t) }])
            }
        };
        let p = self
            .page(
                "Companies",
                filter,
                Some(COMPANY_FIELDS),
                req.after.as_deref(),
            )
            .await?;
        let (rows, rejected, _) = read_rows::<Company>(p.items);
        // The picklist is read once per run, and only when there is a company to label.
        let types = if rows.is_empty() {
            HashMap::new()
        } else {
            self.company_types().await?
        };
        let records = rows
            .into_iter()
            .map(|c| ExtCompany {
                external_id: c.id.to_string(),
                name: c.company_name.trim().to_string(),
                identifier: text(c.company_number.as_deref()),
                active: c.is_active,
                deleted: false,
                status: None,
                types: c
                    .company_type
                    .and_then(|t| types.get(&t.to_string()).cloned())
                    .into_iter()
                    .collect(),
                primary_contact_id: None,
                domains: c.web_address.into_iter().collect(),
                updated_at: c.last_activity_date,
            })
            .collect();
        Ok(SourcePage {
            records,
            rejected,
            next: p.page_details.next_page_url,
        })
    }
}

#[async_trait]
impl ContactSource for AutotaskSource {
    async fn contacts(&self, req: &PageRequest) -> Result<SourcePage<ExtContact>, SourceError> {
        let filter = match req.since {
            None => everything(),
            Some(t) => {
                let t = at_time::format(t);
                json!([{ "op": "or", "items": [
                    { "op": "gt", "field": "lastModifiedDate", "value": t },
                    { "op": "gt", "field": "lastActivityDate", "value": t },
                ]}])
            }
        };
        // A user-defined field comes only with the whole record.
        let fields = match self.contact_types {
            ContactTypes::Groups => Some(CONTACT_FIELDS),
            ContactTypes::Udf(_) => None,
        };
        let p = self
            .page("Contacts", filter, fields, req.after.as_deref())
            .await?;
        let (rows, rejected, _) = read_rows::<Contact>(p.items);
        let (mut groups, labels) = match &self.contact_types {
            ContactTypes::Groups => {
                let ids: Vec<i64> = rows.iter().map(|c| c.id).collect();
                (self.groups_of(&ids).await?, HashMap::new())
            }
            ContactTypes::Udf(name) => (HashMap::new(), self.udf_labels(name).await?),
        };
        let records = rows
            .into_iter()
            .map(|c| {
                let types = match &self.contact_types {
                    ContactTypes::Groups => groups.remove(&c.id).unwrap_or_default(),
                    ContactTypes::Udf(name) => c
                        .user_defined_fields
                        .iter()
                        .find(|u| u.name.eq_ignore_ascii_case(name))
                        .and_then(|u| text(u.value.as_deref()))
                        // A picklist field holds the value; the admin knows the label.
                        .map(|v| labels.get(&v).cloned().unwrap_or(v))
                        .into_iter()
                        .collect(),
                };
                ExtContact {
                    external_id: c.id.to_string(),
                    company_external_id: c.company_id.map(|i| i.to_string()),
                    first_name: c.first_name.trim().to_string(),
                    last_name: c.last_name.trim().to_string(),
                    email: first_email([&c.email_address, &c.email_address2, &c.email_address3]),
                    phone: text(c.phone.as_deref()).or_else(|| text(c.mobile_phone.as_deref())),
                    active: c.is_active != 0,
                    primary: c.primary_contact,
                    types,
                    updated_at: c.last_modified_date.max(c.last_activity_date),
                }
            })
            .collect();
        Ok(SourcePage {
            records,
            rejected,
            next: p.page_details.next_page_url,
        })
    }
}

#[async_trait]
impl TechnicianSource for AutotaskSource {
    /// Resources are read in full every pass (a small table without a change stamp); the
    /// content hash keeps unchanged ones free.
    async fn technicians(
        &self,
        req: &PageRequest,
    ) -> Result<SourcePage<ExtTechnician>, SourceError> {
        let p = self
            .page(
                "Resources",
                everything(),
                Some(RESOURCE_FIELDS),
                req.after.as_deref(),
            )
            .await?;
        let (rows, rejected, _) = read_rows::<Resource>(p.items);
        {
            let mut listed = self.listed.lock().unwrap_or_else(|p| p.into_inner());
            if req.after.is_none() {
                *listed = ListedResources {
                    from_start: true,
                    ..ListedResources::default()
                };
            }
            listed
                .names
                .extend(rows.iter().map(|r| (r.id, full_name(r))));
            listed.complete = listed.from_start && p.page_details.next_page_url.is_none();
        }
        let me = self.client.username().trim().to_lowercase();
        let records = rows
            .into_iter()
            .filter(|r| r.user_name.as_deref().map(|u| u.trim().to_lowercase()) != Some(me.clone()))
            .map(|r| ExtTechnician {
                external_id: r.id.to_string(),
                identifier: r
                    .user_name
                    .clone()
                    .unwrap_or_else(|| format!("{} {}", r.first_name, r.last_name)),
                first_name: r.first_name,
                last_name: r.last_name,
                email: first_email([&r.email, &r.email2, &r.email3]),
                active: r.is_active,
                updated_at: None,
            })
            .collect();
        Ok(SourcePage {
            records,
            rejected,
            next: p.page_details.next_page_url,
        })
    }
}

#[async_trait]
impl VocabularySource for AutotaskSource {
    /// Company types from the tenant's `companyType` picklist; contact types from its
    /// contact groups, or from the configured user-defined field's picklist. Autotask
    /// companies have no statuses beyond active and inactive.
    async fn vocabulary(&self, now: DateTime<Utc>) -> Result<Vocabulary, SourceError> {
        let mut company_types: Vec<String> = self.company_types().await?.into_values().collect();
        let mut contact_types: Vec<String> = match &self.contact_types {
            ContactTypes::Groups => self.group_names().await?.into_values().collect(),
            ContactTypes::Udf(name) => self.udf_labels(name).await?.into_values().collect(),
        };
        for v in [&mut company_types, &mut contact_types] {
            v.sort_by_key(|s| s.to_lowercase());
            v.dedup();
        }
        Ok(Vocabulary {
            contact_types,
            company_types,
            company_statuses: vec![],
            // Contact and company types stay usable when the ticket picklists are not.
            tickets: match self.ticket_lists().await {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::warn!(error = %e, "Autotask ticket picklists could not be read");
                    None
                }
            },
            fetched_at: now,
        })
    }
}

impl AutotaskSource {
    /// Queues, statuses, priorities and ticket types: the tenant's picklists.
    async fn ticket_lists(&self) -> Result<TicketLists, SourceError> {
        let l = self.lists().await?;
        Ok(TicketLists {
            boards: Picklists::labels(&l.queue),
            statuses: Picklists::labels(&l.status),
            priorities: Picklists::labels(&l.priority),
            types: Picklists::labels(&l.ticket_type),
            categories: vec![],
        }
        .tidy())
    }
}

/// An Autotask ticket as the engine sees it: picklist values as the tenant's labels, the
/// queue as the board, closed when its status is Complete (`completedDate` stays stamped
/// when a completed ticket is reopened, so it is the closing time only of a closed one).
fn ticket(t: Ticket, l: &Picklists) -> ExtTicket {
    let closed = l.is_complete(t.status);
    let marker = t
        .external_id
        .filter(|m| m.starts_with(crate::tickets::MARKER_PREFIX));
    ExtTicket {
        external_id: t.id.to_string(),
        summary: t.title.trim().to_string(),
        description: Some(t.description.unwrap_or_default().trim().to_string()),
        status: Picklists::label(&l.status, t.status)
            .unwrap_or_else(|| format!("Status {}", t.status.unwrap_or_default())),
        closed,
        priority: Picklists::label(&l.priority, t.priority),
        board: Picklists::label(&l.queue, t.queue_id),
        ticket_type: Picklists::label(&l.ticket_type, t.ticket_type),
        company_external_id: t.company_id.map(|c| c.to_string()),
        contact_external_id: t.contact_id.map(|c| c.to_string()),
        assignee_external_id: t.assigned_resource_id.map(|r| r.to_string()),
        created_at: t.create_date,
        closed_at: t.completed_date.filter(|_| closed),
        updated_at: t.last_activity_date,
        marker,
        notes: None,
    }
}

#[async_trait]
impl TicketSource for AutotaskSource {
    /// `POST /Tickets/query`: everything (`id gt 0`) or `lastActivityDate gt` the watermark.
    async fn tickets(&self, req: &PageRequest) -> Result<SourcePage<ExtTicket>, SourceError> {
        let filter = match req.since {
            None => everything(),
            Some(t) => {
                json!([{ "op": "gt", "field": "lastActivityDate", "value": at_time::format(t) }])
            }
        };
        let p = self
            .page("Tickets", filter, Some(TICKET_FIELDS), req.after.as_deref())
            .await?;
        let (rows, rejected, _) = read_rows::<Ticket>(p.items);
        let records = if rows.is_empty() {
            vec![]
        } else {
            let l = self.lists().await?;
            rows.into_iter().map(|t| ticket(t, l)).collect()
        };
        Ok(SourcePage {
            records,
            rejected,
            next: p.page_details.next_page_url,
        })
    }

    /// `POST /TicketNotes/query` with `ticketID in […]`, 500 tickets a query, every page.
    async fn ticket_notes(&self, tickets: &[String]) -> Result<TicketNotes, SourceError> {
        let mut out = TicketNotes::default();
        let mut ids = Vec::with_capacity(tickets.len());
        for t in tickets {
            match t.parse::<i64>() {
                Ok(id) => {
                    ids.push(id);
                    out.by_ticket.insert(t.clone(), Vec::new());
                }
                Err(_) => out.rejected.push(Rejected {
                    external_id: Some(t.clone()),
                    reason: "not an Autotask ticket id".into(),
                }),
            }
        }
        let mut notes: Vec<TicketNote> = Vec::new();
        for chunk in ids.chunks(NOTES_PER_QUERY) {
            let filter = json!([{ "op": "in", "field": "ticketID", "value": chunk }]);
            let mut after: Option<String> = None;
            loop {
                let p = self
                    .page("TicketNotes", filter.clone(), None, after.as_deref())
                    .await?;
                let (rows, bad, _) = read_rows::<TicketNote>(p.items);
                // A note that cannot be read is reported; its ticket keeps the others.
                out.rejected.extend(bad.into_iter().map(|b| Rejected {
                    external_id: None,
                    reason: format!(
                        "ticket note {}: {}",
                        b.external_id.unwrap_or_default(),
                        b.reason
                    ),
                }));
                notes.extend(rows);
                match p.page_details.next_page_url {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
        }
        if notes.is_empty() {
            return Ok(out);
        }
        let l = self.lists().await?;
        let names = self.resource_names().await?;
        notes.sort_by_key(|n| n.id);
        for n in notes {
            let body = n.description.trim();
            if body.is_empty() {
                continue;
            }
            let author = match (n.creator_resource_id, n.created_by_contact_id) {
                (Some(r), _) => names.get(&r).cloned().unwrap_or_default(),
                (None, Some(_)) => "Contact".to_string(),
                _ => String::new(),
            };
            if let Some(v) = out.by_ticket.get_mut(&n.ticket_id.to_string()) {
                v.push(ExtNote {
                    external_id: n.id.to_string(),
                    body: body.to_string(),
                    internal: l.is_internal(n.publish),
                    author,
                    created_at: n.create_date_time,
                    is_description: false,
                });
            }
        }
        Ok(out)
    }
}

impl PsaSource for AutotaskSource {
    fn requests(&self) -> u64 {
        self.client.requests()
    }

    fn bytes(&self) -> u64 {
        self.client.bytes()
    }

    fn ticket_source(&self) -> Option<&dyn TicketSource> {
        Some(self)
    }
}
