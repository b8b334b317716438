//! ConnectWise as a sync source: keyset paging on `id` with `conditions`
//! (`id > last AND lastUpdated > [since]`, `orderBy=id asc`, `pageSize=1000`), only the
//! fields the sync reads (`fields=`, nested references as `company/id`), vendor records
//! mapped to the engine's normalised shapes, unreadable records rejected one by one.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mspbridge_domain::sync::{
    ExtCompany, ExtContact, ExtNote, ExtTechnician, ExtTicket, TicketLists, Vocabulary,
};
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio::sync::OnceCell;

use super::AREAS;
use super::client::{CwClient, CwError, next_link};
use super::conditions::date;
use super::wire::{
    Board, BoardStatus, Company, CompanyStatus, CompanyType, Contact, ContactType, Member,
    Priority, ServiceNote, Ticket,
};
use crate::source::*;

pub const PAGE_SIZE: usize = 1000;

/// What each list asks for (`fields=`): exactly what the mapping below reads, references
/// with their `id` (which a reference needs) and the `name` where it is shown.
pub const COMPANY_FIELDS: &str = "id,identifier,name,status/id,status/name,types,deletedFlag,\
defaultContact/id,website,_info/lastUpdated";
pub const CONTACT_FIELDS: &str = "id,firstName,lastName,company/id,inactiveFlag,defaultFlag,\
types,communicationItems,_info/lastUpdated";
pub const MEMBER_FIELDS: &str = "id,identifier,firstName,lastName,inactiveFlag,primaryEmail,\
officeEmail,mobileEmail,homeEmail,defaultEmail,_info/lastUpdated";
pub const TICKET_FIELDS: &str = "id,summary,board/id,board/name,status/id,status/name,\
priority/id,priority/name,company/id,contact/id,closedFlag,type/id,type/name,owner/id,\
closedDate,externalXRef,_info/lastUpdated,_info/dateEntered";
pub const NOTE_FIELDS: &str = "id,text,detailDescriptionFlag,internalAnalysisFlag,member/id,\
member/name,contact/id,contact/name,createdBy,dateCreated";
const STATUS_FIELDS: &str = "id,name,inactiveFlag";

pub struct CwSource {
    client: CwClient,
    page_size: usize,
    /// Company status id → inactive flag, read once per run.
    statuses: OnceCell<HashMap<i64, bool>>,
}

impl CwSource {
    pub fn new(client: CwClient) -> Self {
        Self {
            client,
            page_size: PAGE_SIZE,
            statuses: OnceCell::new(),
        }
    }

    /// Smaller pages (tests exercise paging on small data sets with it).
    pub fn with_page_size(mut self, n: usize) -> Self {
        self.page_size = n.clamp(1, PAGE_SIZE);
        self
    }

    fn error(path: &str, e: CwError) -> SourceError {
        match e {
            CwError::Status { status: 401, .. } => SourceError::Auth(e.vendor_message()),
            CwError::Status { status: 403, .. } => SourceError::NotPermitted {
                message: e.vendor_message(),
                setting: AREAS
                    .iter()
                    .find(|a| path.starts_with(a.path))
                    .map(|a| a.setting)
                    .unwrap_or("the API member's security role")
                    .to_string(),
            },
            CwError::Refused(m) => SourceError::Budget(m),
            other => SourceError::Unavailable(other.to_string()),
        }
    }

    async fn page<T: DeserializeOwned>(
        &self,
        path: &str,
        fields: &str,
        req: &PageRequest,
    ) -> Result<(Vec<T>, Vec<Rejected>, Option<String>), SourceError> {
        self.page_raw(path, fields, req)
            .await
            .map_err(|e| Self::error(path, e))
    }

    async fn page_raw<T: DeserializeOwned>(
        &self,
        path: &str,
        fields: &str,
        req: &PageRequest,
    ) -> Result<(Vec<T>, Vec<Rejected>, Option<String>), CwError> {
        let mut conditions = Vec::new();
        if let Some(after) = &req.after {
            let id: i64 = after
                .parse()
                .map_err(|_| CwError::Decode(format!("bad page token '{after}'")))?;
            conditions.push(format!("id > {id}"));
        }
        if let Some(since) = req.since {
            conditions.push(format!("lastUpdated > {}", date(since)));
        }
        let mut query = vec![
            ("orderBy", "id asc".to_string()),
            ("pageSize", self.page_size.to_string()),
            ("fields", fields.to_string()),
        ];
        if !conditions.is_empty() {
            query.push(("conditions", conditions.join(" AND ")));
        }
        // Rows stay raw until each is read on its own: one unreadable record is rejected
        // with its id while the rest of the page goes on (and no JSON tree is built).
        let (rows, headers) = self.client.get::<Vec<Box<RawValue>>>(path, &query).await?;
        // Keyset paging: a short page is the last one. A full one is the last too when
        // ConnectWise's `Link` header names no next page (it names one only when more
        // rows match), so a count that is a multiple of the page size costs no extra empty
        // request. Without `Link` at all, a full page is followed.
        let more = rows.len() >= self.page_size && next_link(&headers).unwrap_or(true);
        let (records, rejected, last_id) = read_rows::<T>(rows);
        let next = if more {
            last_id.map(|id| id.to_string())
        } else {
            None
        };
        Ok((records, rejected, next))
    }

    /// Every row of a small list (keyset pages until a short one).
    async fn all<T: DeserializeOwned>(
        &self,
        path: &str,
        fields: &str,
    ) -> Result<Vec<T>, SourceError> {
        let mut out = Vec::new();
        let mut req = PageRequest::default();
        loop {
            let (rows, rejected, next) = self.page::<T>(path, fields, &req).await?;
            for r in rejected {
                tracing::warn!(path, id = ?r.external_id, reason = %r.reason, "skipped an unreadable list entry");
            }
            out.extend(rows);
            match next {
                Some(n) => req.after = Some(n),
                None => return Ok(out),
            }
        }
    }

    async fn inactive_statuses(&self) -> Result<&HashMap<i64, bool>, SourceError> {
        self.statuses
            .get_or_try_init(|| async {
                let path = "/company/companies/statuses";
                let query = [
                    ("pageSize", "1000".to_string()),
                    ("fields", STATUS_FIELDS.to_string()),
                ];
                let (rows, _) = self
                    .client
                    .get::<Vec<CompanyStatus>>(path, &query)
                    .await
                    .map_err(|e| Self::error(path, e))?;
                Ok(rows.into_iter().map(|s| (s.id, s.inactive_flag)).collect())
            })
            .await
    }
}

fn names(refs: &[super::wire::Ref]) -> Vec<String> {
    refs.iter().filter_map(|r| r.name.clone()).collect()
}

fn email_of(c: &Contact) -> Option<String> {
    let emails: Vec<_> = c
        .communication_items
        .iter()
        .filter(|i| i.communication_type.eq_ignore_ascii_case("Email"))
        .collect();
    emails
        .iter()
        .find(|i| i.default_flag)
        .or(emails.first())
        .map(|i| i.value.trim().to_lowercase())
        .filter(|v| !v.is_empty())
}

fn phone_of(c: &Contact) -> Option<String> {
    let phones: Vec<_> = c
        .communication_items
        .iter()
        .filter(|i| i.communication_type.eq_ignore_ascii_case("Phone"))
        .collect();
    phones
        .iter()
        .find(|i| i.default_flag)
        .or(phones.first())
        .map(|i| i.value.trim().to_string())
}

#[async_trait]
impl CompanySource for CwSource {
    async fn companies(&self, req: &PageRequest) -> Result<SourcePage<ExtCompany>, SourceError> {
        let statuses = self.inactive_statuses().await?;
        let (rows, rejected, next) = self
            .page::<Company>("/company/companies", COMPANY_FIELDS, req)
            .await?;
        let records = rows
            .into_iter()
            .map(|c| ExtCompany {
                external_id: c.id.to_string(),
                active: !c
                    .status
                    .as_ref()
                    .and_then(|s| statuses.get(&s.id))
                    .copied()
                    .unwrap_or(false),
                status: c.status.as_ref().and_then(|s| s.name.clone()),
                deleted: c.deleted_flag,
                types: names(&c.types),
                primary_contact_id: c.default_contact.as_ref().map(|r| r.id.to_string()),
                identifier: c.identifier.filter(|i| !i.trim().is_empty()),
                domains: c.website.into_iter().collect(),
                name: c.name,
                updated_at: c.info.last_updated,
            })
            .collect();
        Ok(SourcePage {
            records,
            rejected,
            next,
        })
    }
}

#[async_trait]
impl ContactSource for CwSource {
    async fn contacts(&self, req: &PageRequest) -> Result<SourcePage<ExtContact>, SourceError> {
        let (rows, rejected, next) = self
            .page::<Contact>("/company/contacts", CONTACT_FIELDS, req)
            .await?;
        let records = rows
            .into_iter()
            .map(|c| ExtContact {
                external_id: c.id.to_string(),
                company_external_id: c.company.as_ref().map(|r| r.id.to_string()),
                email: email_of(&c),
                phone: phone_of(&c),
                active: !c.inactive_flag,
                primary: c.default_flag,
                types: names(&c.types),
                first_name: c.first_name,
                last_name: c.last_name,
                updated_at: c.info.last_updated,
            })
            .collect();
        Ok(SourcePage {
            records,
            rejected,
            next,
        })
    }
}

#[async_trait]
impl TechnicianSource for CwSource {
    async fn technicians(
        &self,
        req: &PageRequest,
    ) -> Result<SourcePage<ExtTechnician>, SourceError> {
        let (rows, rejected, next) = self
            .page::<Member>("/system/members", MEMBER_FIELDS, req)
            .await?;
        let records = rows
            .into_iter()
            .map(|m| {
                let email = m.email();
                ExtTechnician {
                    external_id: m.id.to_string(),
                    // A member without a login is known by its email, else its id.
                    identifier: m
                        .identifier
                        .filter(|i| !i.trim().is_empty())
                        .or_else(|| email.clone())
                        .unwrap_or_else(|| format!("member {}", m.id)),
                    email,
                    active: !m.inactive_flag,
                    first_name: m.first_name,
                    last_name: m.last_name,
                    updated_at: m.info.last_updated,
                }
            })
            .collect();
        Ok(SourcePage {
            records,
            rejected,
            next,
        })
    }
}

#[async_trait]
impl VocabularySource for CwSource {
    async fn vocabulary(&self, now: DateTime<Utc>) -> Result<Vocabulary, SourceError> {
        let contact_types = self
            .all::<ContactType>("/company/contacts/types", "id,description")
            .await?;
        let company_types = self
            .all::<CompanyType>("/company/companies/types", "id,name")
            .await?;
        let company_statuses = self
            .all::<CompanyStatus>("/company/companies/statuses", STATUS_FIELDS)
            .await?;
        let sorted = |mut v: Vec<String>| {
            v.sort_by_key(|s| s.to_lowercase());
            v.dedup();
            v
        };
        // Ticket reference data: boards, every board's statuses, priorities.
        let boards = self
            .all::<Board>("/service/boards", "id,name,inactiveFlag")
            .await?;
        let mut statuses = Vec::new();
        for b in boards.iter().filter(|b| !b.inactive_flag) {
            let path = format!("/service/boards/{}/statuses", b.id);
            statuses.extend(
                self.all::<BoardStatus>(&path, "id,name,closedStatus")
                    .await?
                    .into_iter()
                    .map(|s| s.name),
            );
        }
        let priorities = self
            .all::<Priority>("/service/priorities", "id,name")
            .await?;
        Ok(Vocabulary {
            contact_types: sorted(contact_types.into_iter().map(|t| t.description).collect()),
            company_types: sorted(company_types.into_iter().map(|t| t.name).collect()),
            company_statuses: sorted(company_statuses.into_iter().map(|s| s.name).collect()),
            tickets: Some(
                TicketLists {
                    boards: boards
                        .into_iter()
                        .filter(|b| !b.inactive_flag)
                        .map(|b| b.name)
                        .collect(),
                    statuses,
                    priorities: priorities.into_iter().map(|p| p.name).collect(),
                    types: vec![],
                    categories: vec![],
                }
                .tidy(),
            ),
            fetched_at: now,
        })
    }
}

/// A ConnectWise ticket, normalised. The description is not a readable field: it is the
/// first detail-description note (trap 8), so it is left to the notes.
fn ticket(t: Ticket) -> ExtTicket {
    let marker = t
        .external_x_ref
        .filter(|x| x.starts_with(crate::tickets::MARKER_PREFIX));
    ExtTicket {
        external_id: t.id.to_string(),
        summary: t.summary,
        description: None,
        status: t
            .status
            .name
            .unwrap_or_else(|| format!("status {}", t.status.id)),
        closed: t.closed_flag,
        priority: t.priority.and_then(|p| p.name),
        board: t.board.name,
        ticket_type: t.ticket_type.and_then(|r| r.name),
        company_external_id: t.company.map(|c| c.id.to_string()),
        contact_external_id: t.contact.map(|c| c.id.to_string()),
        assignee_external_id: t.owner.map(|m| m.id.to_string()),
        created_at: t.info.date_entered,
        closed_at: t.closed_date.filter(|_| t.closed_flag),
        updated_at: t.info.last_updated,
        marker,
        notes: None,
    }
}

/// A ticket's notes, normalised: internal analysis is staff-only; the earliest
/// detail-description note is the ticket's description.
fn notes_of(mut rows: Vec<ServiceNote>) -> Vec<ExtNote> {
    rows.sort_by_key(|n| (n.date_created, n.id));
    let description = rows
        .iter()
        .find(|n| n.detail_description_flag)
        .map(|n| n.id);
    rows.into_iter()
        .map(|n| ExtNote {
            external_id: n.id.to_string(),
            is_description: Some(n.id) == description,
            internal: n.internal_analysis_flag && !n.detail_description_flag,
            author: n
                .member
                .and_then(|m| m.name)
                .or(n.contact.and_then(|c| c.name))
                .or(n.created_by)
                .unwrap_or_default(),
            created_at: n.date_created,
            body: n.text,
        })
        .collect()
}

#[async_trait]
impl TicketSource for CwSource {
    async fn tickets(&self, req: &PageRequest) -> Result<SourcePage<ExtTicket>, SourceError> {
        let (rows, rejected, next) = self
            .page::<Ticket>("/service/tickets", TICKET_FIELDS, req)
            .await?;
        Ok(SourcePage {
            records: rows.into_iter().map(ticket).collect(),
            rejected,
            next,
        })
    }

    /// One keyset-paged `GET /service/tickets/{id}/notes` per ticket (ConnectWise has no
    /// cross-ticket note list). A ticket deleted meanwhile (404) is rejected, not failed.
    async fn ticket_notes(&self, tickets: &[String]) -> Result<TicketNotes, SourceError> {
        let mut out = TicketNotes::default();
        for id in tickets {
            let path = format!("/service/tickets/{id}/notes");
            let mut rows: Vec<ServiceNote> = Vec::new();
            let mut req = PageRequest::default();
            let failed = loop {
                match self.page_raw::<ServiceNote>(&path, NOTE_FIELDS, &req).await {
                    Ok((page, bad, next)) => {
                        if let Some(b) = bad.into_iter().next() {
                            break Some(format!("a note could not be read: {}", b.reason));
                        }
                        rows.extend(page);
                        match next {
                            Some(n) => req.after = Some(n),
                            None => break None,
                        }
                    }
                    Err(e) if e.status() == Some(404) => {
                        break Some("the ticket is gone (its notes answered 404)".into());
                    }
                    Err(e) => return Err(Self::error(&path, e)),
                }
            };
            match failed {
                Some(reason) => out.rejected.push(Rejected {
                    external_id: Some(id.clone()),
                    reason,
                }),
                None => {
                    out.by_ticket.insert(id.clone(), notes_of(rows));
                }
            }
        }
        Ok(out)
    }
}

impl PsaSource for CwSource {
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
