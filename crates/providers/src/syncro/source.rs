//! Syncro as a sync source. Pages are the server's size and the loop follows
//! `meta.total_pages`. Customers and contacts have no updated-since filter (trap 24), so
//! every pass lists them all and the engine's content hash keeps unchanged records free.
//! Contacts have no primary flag (trap 22): a customer's own person (its first and last
//! name and email) is read as the customer's primary contact, with the external id
//! `customer-{id}`. Technicians come as id–name pairs from `/users` (trap 21) with the
//! email from `/users/{id}`, 25 details per page. Tickets come from `/tickets`
//! (`since_updated_at` on incremental passes) with the issue type as the board and the
//! initial comment as the description; their other comments are the notes.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mspbridge_domain::sync::{
    ExtCompany, ExtContact, ExtNote, ExtTechnician, ExtTicket, TicketLists, Vocabulary,
};
use serde_json::value::RawValue;

use super::client::{SyncroClient, SyncroError};
use super::wire::{
    Comment, Comments, Contact, Contacts, Customer, Customers, Ticket, TicketSettings, Tickets,
    UserAnswer, Users, is_closed, split_name,
};
use crate::source::*;

/// A page of raw customer rows and the listing's total number of pages.
type CustomerPage = (Vec<Box<RawValue>>, u64);

/// Technician details fetched per page of the technicians pass.
const USERS_PER_PAGE: usize = 25;

pub struct SyncroSource {
    client: SyncroClient,
    /// Customer pages read by the companies pass, reused by the contacts pass of the
    /// same run for the customers' own persons (so they are not fetched twice).
    customer_pages: Mutex<HashMap<u64, CustomerPage>>,
    users: tokio::sync::Mutex<Option<Vec<(i64, String)>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn email(e: Option<&str>) -> Option<String> {
    e.map(|e| e.trim().to_lowercase())
        .filter(|e| e.contains('@'))
}

fn phone(p: Option<&str>, m: Option<&str>) -> Option<String> {
    p.or(m)
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
}

impl SyncroSource {
    pub fn new(client: SyncroClient) -> Self {
        Self {
            client,
            customer_pages: Mutex::new(HashMap::new()),
            users: tokio::sync::Mutex::new(None),
        }
    }

    fn error(path: &str, e: SyncroError) -> SourceError {
        if e.is_permission() {
            return SourceError::NotPermitted {
                message: format!("{path}: {}", e.vendor_message()),
                setting: super::PERMISSION_SETTING.into(),
            };
        }
        match e {
            SyncroError::Status { status: 401, .. } => SourceError::Auth(e.vendor_message()),
            SyncroError::Refused(m) if m.contains("budget") => SourceError::Budget(m),
            other => SourceError::Unavailable(other.to_string()),
        }
    }

    fn page_no(token: Option<&str>, prefix: &str) -> Result<u64, SourceError> {
        match token {
            None => Ok(1),
            Some(t) => t
                .strip_prefix(prefix)
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| SourceError::Unavailable(format!("bad page token '{t}'"))),
        }
    }

    /// Customers page `page` (rows and total pages), from this run's cache when the
    /// companies pass already read it.
    async fn customers_page(
        &self,
        page: u64,
        keep: bool,
    ) -> Result<(Vec<Box<RawValue>>, u64), SourceError> {
        if let Some(hit) = lock(&self.customer_pages).remove(&page) {
            return Ok(hit);
        }
        let query = [
            ("page", page.to_string()),
            ("include_disabled", "true".to_string()),
        ];
        let answer: Customers = self
            .client
            .get("/customers", &query)
            .await
            .map_err(|e| Self::error("/customers", e))?;
        let got = (answer.customers, answer.meta.total_pages);
        if keep {
            lock(&self.customer_pages).insert(page, got.clone());
        }
        Ok(got)
    }
}

#[async_trait]
impl CompanySource for SyncroSource {
    async fn companies(&self, req: &PageRequest) -> Result<SourcePage<ExtCompany>, SourceError> {
        let page = Self::page_no(req.after.as_deref(), "")?;
        let (rows, total_pages) = self.customers_page(page, true).await?;
        let (customers, rejected, _) = read_rows::<Customer>(rows);
        let records = customers
            .into_iter()
            .map(|c| ExtCompany {
                external_id: c.id.to_string(),
                name: c.display_name(),
                active: !c.disabled,
                status: None,
                deleted: false,
                types: vec![],
                primary_contact_id: email(c.email.as_deref())
                    .filter(|_| !c.no_email)
                    .map(|_| format!("customer-{}", c.id)),
                identifier: None,
                domains: c.email.clone().into_iter().collect(),
                updated_at: c.updated_at,
            })
            .collect();
        Ok(SourcePage {
            records,
            rejected,
            next: (page < total_pages).then(|| (page + 1).to_string()),
        })
    }
}

#[async_trait]
impl ContactSource for SyncroSource {
    async fn contacts(&self, req: &PageRequest) -> Result<SourcePage<ExtContact>, SourceError> {
        // First every page of /contacts, then the customers' own persons.
        if let Some(t) = req.after.as_deref().filter(|t| t.starts_with("persons:")) {
            let page = Self::page_no(Some(t), "persons:")?;
            let (rows, total_pages) = self.customers_page(page, false).await?;
            let (customers, rejected, _) = read_rows::<Customer>(rows);
            let records = customers
                .into_iter()
                .filter(|c| !c.no_email)
                .filter(|c| c.firstname.is_some() || c.lastname.is_some())
                .map(|c| ExtContact {
                    external_id: format!("customer-{}", c.id),
                    company_external_id: Some(c.id.to_string()),
                    email: email(c.email.as_deref()),
                    phone: phone(c.phone.as_deref(), c.mobile.as_deref()),
                    active: !c.disabled,
                    primary: true,
                    types: vec![],
                    first_name: c.firstname.unwrap_or_default(),
                    last_name: c.lastname.unwrap_or_default(),
                    updated_at: c.updated_at,
                })
                .collect();
            return Ok(SourcePage {
                records,
                rejected,
                next: (page < total_pages).then(|| format!("persons:{}", page + 1)),
            });
        }
        let page = Self::page_no(req.after.as_deref(), "contacts:")?;
        let query = [("page", page.to_string())];
        let answer: Contacts = self
            .client
            .get("/contacts", &query)
            .await
            .map_err(|e| Self::error("/contacts", e))?;
        let (contacts, rejected, _) = read_rows::<Contact>(answer.contacts);
        let records = contacts
            .into_iter()
            .map(|c| {
                let (first, last) = split_name(&c.name);
                ExtContact {
                    external_id: c.id.to_string(),
                    company_external_id: c.customer_id.map(|c| c.to_string()),
                    email: email(c.email.as_deref()),
                    phone: phone(c.phone.as_deref(), c.mobile.as_deref()),
                    active: true,
                    primary: false,
                    types: vec![],
                    first_name: first,
                    last_name: last,
                    updated_at: c.updated_at,
                }
            })
            .collect();
        let next = if page < answer.meta.total_pages {
            format!("contacts:{}", page + 1)
        } else {
            "persons:1".to_string()
        };
        Ok(SourcePage {
            records,
            rejected,
            next: Some(next),
        })
    }
}

#[async_trait]
impl TechnicianSource for SyncroSource {
    async fn technicians(
        &self,
        req: &PageRequest,
    ) -> Result<SourcePage<ExtTechnician>, SourceError> {
        let offset: usize = match &req.after {
            None => 0,
            Some(t) => t
                .parse()
                .map_err(|_| SourceError::Unavailable(format!("bad page token '{t}'")))?,
        };
        let mut cached = self.users.lock().await;
        if offset == 0 || cached.is_none() {
            let answer: Users = self
                .client
                .get("/users", &[])
                .await
                .map_err(|e| Self::error("/users", e))?;
            let mut pairs = answer.users;
            pairs.sort_by_key(|p| p.0);
            *cached = Some(pairs);
        }
        let pairs = cached.as_ref().map(|p| p.as_slice()).unwrap_or_default();
        let chunk = pairs.iter().skip(offset).take(USERS_PER_PAGE);
        let mut records = Vec::new();
        let mut rejected = Vec::new();
        for (id, name) in chunk {
            let path = format!("/users/{id}");
            match self.client.get::<UserAnswer>(&path, &[]).await {
                Ok(a) => {
                    let (first, last) = split_name(if a.user.full_name.is_empty() {
                        name
                    } else {
                        &a.user.full_name
                    });
                    records.push(ExtTechnician {
                        external_id: id.to_string(),
                        email: email(a.user.email.as_deref()),
                        active: true,
                        identifier: name.clone(),
                        first_name: first,
                        last_name: last,
                        updated_at: a.user.updated_at,
                    });
                }
                Err(SyncroError::Decode(reason)) => rejected.push(Rejected {
                    external_id: Some(id.to_string()),
                    reason,
                }),
                Err(e) => return Err(Self::error(&path, e)),
            }
        }
        let end = offset + USERS_PER_PAGE;
        Ok(SourcePage {
            records,
            rejected,
            next: (end < pairs.len()).then(|| end.to_string()),
        })
    }
}

#[async_trait]
impl VocabularySource for SyncroSource {
    /// Syncro has no contact types, company types or company statuses; its ticket
    /// statuses come from `/tickets/settings` (issue types and priorities are free text).
    async fn vocabulary(&self, now: DateTime<Utc>) -> Result<Vocabulary, SourceError> {
        let settings: TicketSettings = self
            .client
            .get("/tickets/settings", &[])
            .await
            .map_err(|e| Self::error("/tickets/settings", e))?;
        Ok(Vocabulary {
            contact_types: vec![],
            company_types: vec![],
            company_statuses: vec![],
            tickets: Some(
                TicketLists {
                    statuses: settings.ticket_status_list,
                    ..TicketLists::default()
                }
                .tidy(),
            ),
            fetched_at: now,
        })
    }
}

/// A Syncro ticket as the engine sees it: the issue type (`problem_type`) plays the board,
/// the initial comment is the description.
fn ticket(t: Ticket) -> ExtTicket {
    let marker = t
        .tag_list
        .iter()
        .find(|m| m.starts_with(crate::tickets::MARKER_PREFIX))
        .cloned();
    let description = t.description().map(|c| c.body.trim().to_string());
    let closed = is_closed(&t.status);
    ExtTicket {
        external_id: t.id.to_string(),
        summary: t.subject,
        // When the listing lacks the initial comment, the engine takes it from the notes.
        description,
        status: t.status,
        closed,
        priority: t.priority.filter(|p| !p.is_empty()),
        board: t.problem_type.filter(|p| !p.is_empty()),
        ticket_type: t.ticket_type_name.filter(|p| !p.is_empty()),
        company_external_id: t.customer_id.map(|c| c.to_string()),
        contact_external_id: t.contact_id.map(|c| c.to_string()),
        assignee_external_id: t.user_id.map(|u| u.to_string()),
        created_at: t.created_at,
        closed_at: t.resolved_at.filter(|_| closed),
        updated_at: t.updated_at,
        marker,
        notes: None,
    }
}

/// A comment as a note; the initial comment is the description, not a note.
fn note(c: Comment, initial: Option<i64>) -> Option<ExtNote> {
    let body = c.body.trim();
    (!body.is_empty()).then(|| ExtNote {
        external_id: c.id.to_string(),
        body: body.to_string(),
        internal: c.hidden,
        author: c.tech.unwrap_or_default(),
        created_at: c.created_at,
        is_description: Some(c.id) == initial,
    })
}

/// Comments per page asked for (Syncro's default is 10).
const COMMENTS_PER_PAGE: u32 = 100;

#[async_trait]
impl TicketSource for SyncroSource {
    /// `GET /tickets?page=N` (with `since_updated_at` on incremental passes), the loop
    /// following `meta.total_pages`.
    async fn tickets(&self, req: &PageRequest) -> Result<SourcePage<ExtTicket>, SourceError> {
        let page = Self::page_no(req.after.as_deref(), "")?;
        let mut query = vec![("page", page.to_string())];
        if let Some(since) = req.since {
            query.push((
                "since_updated_at",
                since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ));
        }
        let answer: Tickets = self
            .client
            .get("/tickets", &query)
            .await
            .map_err(|e| Self::error("/tickets", e))?;
        let (rows, rejected, _) = read_rows::<Ticket>(answer.tickets);
        Ok(SourcePage {
            records: rows.into_iter().map(ticket).collect(),
            rejected,
            next: (page < answer.meta.total_pages).then(|| (page + 1).to_string()),
        })
    }

    /// `GET /tickets/{id}/comments`, oldest first, 100 a page, every page.
    async fn ticket_notes(&self, tickets: &[String]) -> Result<TicketNotes, SourceError> {
        let mut out = TicketNotes::default();
        'tickets: for id in tickets {
            let path = format!("/tickets/{id}/comments");
            let mut comments = Vec::new();
            let mut page = 1u64;
            loop {
                let query = [
                    ("sort_by", "created_at".to_string()),
                    ("sort_direction", "ASC".to_string()),
                    ("per_page", COMMENTS_PER_PAGE.to_string()),
                    ("page", page.to_string()),
                ];
                match self.client.get::<Comments>(&path, &query).await {
                    Ok(answer) => {
                        let (rows, bad, _) = read_rows::<Comment>(answer.comments);
                        if let Some(b) = bad.into_iter().next() {
                            out.rejected.push(Rejected {
                                external_id: Some(id.clone()),
                                reason: format!("a comment could not be read: {}", b.reason),
                            });
                            continue 'tickets;
                        }
                        comments.extend(rows);
                        if page >= answer.meta.total_pages {
                            break;
                        }
                        page += 1;
                    }
                    Err(e) if e.status() == Some(404) => {
                        out.rejected.push(Rejected {
                            external_id: Some(id.clone()),
                            reason: "the ticket is gone (its comments answered 404)".into(),
                        });
                        continue 'tickets;
                    }
                    Err(e) => return Err(Self::error("/tickets/{id}/comments", e)),
                }
            }
            let initial = comments
                .iter()
                .min_by_key(|c| c.id)
                .filter(|c| c.is_initial())
                .map(|c| c.id);
            out.by_ticket.insert(
                id.clone(),
                comments
                    .into_iter()
                    .filter_map(|c| note(c, initial))
                    .collect(),
            );
        }
        Ok(out)
    }
}

impl PsaSource for SyncroSource {
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
