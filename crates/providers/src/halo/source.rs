//! Halo as a sync source. Clients and users are read with `pageinate=true`,
//! `page_size=100`, `page_no`, ordered by id, and the next page is decided by
//! `record_count` (never by a short page); incremental passes add `lastupdatefromdate`.
//! Agents come as one bare array. Unreadable rows are rejected one by one.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mspbridge_domain::sync::{
    ExtCompany, ExtContact, ExtNote, ExtTechnician, ExtTicket, TicketLists, Vocabulary,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::client::{HaloClient, HaloError};
use super::wire::{
    Action, ActionList, Agent, CLOSED_STATUS_ID, Category, Client, Named, Priority, Status, Ticket,
    User, UserRole, halo_date,
};
use crate::source::*;

/// Halo's documented maximum page size.
pub const PAGE_SIZE: usize = 100;

/// A paged list answer: `{page_no, page_size, record_count, clients|users: [...]}`.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    record_count: Option<u64>,
    #[serde(default)]
    clients: Option<Vec<Box<RawValue>>>,
    #[serde(default)]
    users: Option<Vec<Box<RawValue>>>,
    #[serde(default)]
    tickets: Option<Vec<Box<RawValue>>>,
}

/// Names of the ids a ticket carries, read once per source.
#[derive(Default)]
struct Lookups {
    statuses: HashMap<i64, String>,
    priorities: HashMap<i64, String>,
    ticket_types: HashMap<i64, String>,
}

pub struct HaloSource {
    client: HaloClient,
    page_size: usize,
    lookups: tokio::sync::OnceCell<Lookups>,
}

impl HaloSource {
    pub fn new(client: HaloClient) -> Self {
        Self {
            client,
            page_size: PAGE_SIZE,
            lookups: tokio::sync::OnceCell::new(),
        }
    }

    pub fn with_page_size(mut self, n: usize) -> Self {
        self.page_size = n.clamp(1, PAGE_SIZE);
        self
    }

    fn error(path: &str, e: HaloError) -> SourceError {
        match e.status() {
            Some(401) => SourceError::Auth(e.vendor_message()),
            Some(403) => SourceError::NotPermitted {
                message: format!("{path}: {}", e.vendor_message()),
                setting: super::PERMISSION_SETTING.into(),
            },
            _ => match e {
                HaloError::Token { .. } => SourceError::Auth(e.to_string()),
                HaloError::Refused(m) if m.contains("budget") => SourceError::Budget(m),
                other => SourceError::Unavailable(other.to_string()),
            },
        }
    }

    /// One page of a paged list. The token is the next `page_no`.
    async fn page<T: DeserializeOwned>(
        &self,
        path: &str,
        req: &PageRequest,
        extra: &[(&str, &str)],
    ) -> Result<(Vec<T>, Vec<Rejected>, Option<String>), SourceError> {
        let page_no: u64 = match &req.after {
            None => 1,
            Some(t) => t
                .parse()
                .map_err(|_| SourceError::Unavailable(format!("bad page token '{t}'")))?,
        };
        let mut query = vec![
            ("pageinate", "true".to_string()),
            ("page_size", self.page_size.to_string()),
            ("page_no", page_no.to_string()),
            ("order", "id".to_string()),
            ("orderdesc", "false".to_string()),
        ];
        query.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        if let Some(since) = req.since {
            query.push(("lastupdatefromdate", halo_date::format(since)));
        }
        let env: Envelope = self
            .client
            .get(path, &query)
            .await
            .map_err(|e| Self::error(path, e))?;
        let rows = env
            .clients
            .or(env.users)
            .or(env.tickets)
            .unwrap_or_default();
        let (records, rejected, _) = read_rows(rows);
        // Stop on the count, never on a short page: a page can be short while more
        // records exist, and a full last page is not followed by an empty request.
        let seen = page_no.saturating_mul(self.page_size as u64);
        let next = match env.record_count {
            Some(total) if seen < total && !(records.is_empty() && rejected.is_empty()) => {
                Some((page_no + 1).to_string())
            }
            _ => None,
        };
        Ok((records, rejected, next))
    }
}

fn clean_email(e: Option<&str>) -> Option<String> {
    e.map(|e| e.trim().to_lowercase())
        .filter(|e| !e.is_empty() && e.contains('@'))
}

fn split_roles(list: Option<&str>) -> Vec<String> {
    list.unwrap_or_default()
        .split(',')
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .collect()
}

#[async_trait]
impl CompanySource for HaloSource {
    async fn companies(&self, req: &PageRequest) -> Result<SourcePage<ExtCompany>, SourceError> {
        let extra = [("includeinactive", "true"), ("includeactive", "true")];
        let (rows, mut rejected, next) = self.page::<Client>("/Client", req, &extra).await?;
        // `name` is nullable in the schema: a client without one is rejected alone.
        let (rows, nameless): (Vec<Client>, Vec<Client>) =
            rows.into_iter().partition(|c| !c.name.trim().is_empty());
        rejected.extend(nameless.into_iter().map(|c| Rejected {
            external_id: Some(c.id.to_string()),
            reason: format!("client {} has no name", c.id),
        }));
        let records = rows
            .into_iter()
            .map(|c| ExtCompany {
                external_id: c.id.to_string(),
                active: !c.inactive,
                status: None,
                deleted: false,
                types: vec![],
                primary_contact_id: None,
                identifier: None,
                domains: c.website.into_iter().collect(),
                name: c.name,
                updated_at: c.alastupdate,
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
impl ContactSource for HaloSource {
    async fn contacts(&self, req: &PageRequest) -> Result<SourcePage<ExtContact>, SourceError> {
        let extra = [
            ("includeinactive", "true"),
            ("includeactive", "true"),
            ("exclude_agents", "true"),
        ];
        let (rows, rejected, next) = self.page::<User>("/Users", req, &extra).await?;
        let records = rows
            .into_iter()
            .map(|u| {
                let (first, last) = if u.firstname.is_empty() && u.surname.is_empty() {
                    (u.name.clone(), String::new())
                } else {
                    (u.firstname, u.surname)
                };
                ExtContact {
                    external_id: u.id.to_string(),
                    company_external_id: u.client_id.map(|c| c.to_string()),
                    email: [&u.emailaddress, &u.email2, &u.email3]
                        .into_iter()
                        .find_map(|e| clean_email(e.as_deref())),
                    phone: u
                        .phonenumber
                        .or(u.mobilenumber)
                        .map(|p| p.trim().to_string())
                        .filter(|p| !p.is_empty()),
                    active: !u.inactive,
                    primary: u.ismaincontact,
                    types: split_roles(u.role_list.as_deref()),
                    first_name: first,
                    last_name: last,
                    updated_at: u.ulastupdate,
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
impl TechnicianSource for HaloSource {
    /// Agents come in one bare array (no paging, no incremental filter): every pass reads
    /// them all, and the content hash keeps unchanged agents free.
    async fn technicians(
        &self,
        _req: &PageRequest,
    ) -> Result<SourcePage<ExtTechnician>, SourceError> {
        let query = [("includedisabled", "true".to_string())];
        let rows: Vec<Box<RawValue>> = self
            .client
            .get("/Agent", &query)
            .await
            .map_err(|e| Self::error("/Agent", e))?;
        let (rows, rejected, _) = read_rows::<Agent>(rows);
        let records = rows
            .into_iter()
            .map(|a| ExtTechnician {
                external_id: a.id.to_string(),
                email: clean_email(a.email.as_deref()),
                active: !a.isdisabled,
                identifier: a.name.clone(),
                first_name: if a.firstname.is_empty() {
                    a.name
                } else {
                    a.firstname
                },
                last_name: a.surname,
                updated_at: a.last_modified,
            })
            .collect();
        Ok(SourcePage {
            records,
            rejected,
            next: None,
        })
    }
}

#[async_trait]
impl VocabularySource for HaloSource {
    /// Halo's contact types are its user roles; clients have neither types nor statuses
    /// beyond active/inactive.
    async fn vocabulary(&self, now: DateTime<Utc>) -> Result<Vocabulary, SourceError> {
        let roles: Vec<Box<RawValue>> = self
            .client
            .get("/UserRoles", &[])
            .await
            .map_err(|e| Self::error("/UserRoles", e))?;
        let (roles, _, _) = read_rows::<UserRole>(roles);
        let mut contact_types: Vec<String> = roles.into_iter().map(|r| r.name).collect();
        contact_types.sort_by_key(|s| s.to_lowercase());
        contact_types.dedup();
        let tickets = TicketLists {
            boards: self
                .list::<Named>("/Team", &[])
                .await?
                .into_iter()
                .map(|t| t.name)
                .collect(),
            statuses: self
                .list::<Status>("/Status", &[])
                .await?
                .into_iter()
                .map(|s| s.name)
                .collect(),
            priorities: self
                .list::<Priority>("/Priority", &[])
                .await?
                .into_iter()
                .map(|p| p.name)
                .collect(),
            types: self
                .list::<Named>("/TicketType", &[])
                .await?
                .into_iter()
                .map(|t| t.name)
                .collect(),
            categories: self
                .list::<Category>("/Category", &[("type_id", "1".to_string())])
                .await?
                .into_iter()
                .map(|c| c.value)
                .collect(),
        };
        Ok(Vocabulary {
            contact_types,
            company_types: vec![],
            company_statuses: vec![],
            tickets: Some(tickets.tidy()),
            fetched_at: now,
        })
    }
}

impl HaloSource {
    /// A bare-array list (`/Status`, `/Priority`, `/TicketType`, `/Team`); unreadable rows
    /// are left out.
    async fn list<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Vec<T>, SourceError> {
        let rows: Vec<Box<RawValue>> = self
            .client
            .get(path, query)
            .await
            .map_err(|e| Self::error(path, e))?;
        Ok(read_rows::<T>(rows).0)
    }

    async fn lookups(&self) -> Result<&Lookups, SourceError> {
        self.lookups
            .get_or_try_init(|| async {
                let statuses = self.list::<Status>("/Status", &[]).await?;
                let priorities = self.list::<Priority>("/Priority", &[]).await?;
                let types = self
                    .list::<Named>("/TicketType", &[("showinactive", "true".into())])
                    .await?;
                Ok::<_, SourceError>(Lookups {
                    statuses: statuses.into_iter().map(|s| (s.id, s.name)).collect(),
                    priorities: priorities
                        .into_iter()
                        .map(|p| (p.priorityid, p.name))
                        .collect(),
                    ticket_types: types.into_iter().map(|t| (t.id, t.name)).collect(),
                })
            })
            .await
    }
}

/// A Halo ticket as the engine sees it: the team is the "board", names replace ids.
fn ticket(t: Ticket, l: &Lookups) -> ExtTicket {
    let marker = t
        .third_party_id_string
        .filter(|m| m.starts_with(crate::tickets::MARKER_PREFIX));
    ExtTicket {
        external_id: t.id.to_string(),
        summary: t.summary,
        description: Some(t.details.unwrap_or_default()),
        status: l
            .statuses
            .get(&t.status_id)
            .cloned()
            .unwrap_or_else(|| format!("Status {}", t.status_id)),
        closed: t.status_id == CLOSED_STATUS_ID,
        priority: t.priority_id.and_then(|p| l.priorities.get(&p).cloned()),
        board: t.team.filter(|s| !s.is_empty()),
        ticket_type: t
            .tickettype_id
            .and_then(|p| l.ticket_types.get(&p).cloned()),
        company_external_id: t.client_id.map(|c| c.to_string()),
        contact_external_id: t.user_id.filter(|u| *u > 0).map(|u| u.to_string()),
        assignee_external_id: t.agent_id.filter(|a| *a > 0).map(|a| a.to_string()),
        created_at: t.dateoccurred,
        closed_at: t.dateclosed.filter(|_| t.status_id == CLOSED_STATUS_ID),
        updated_at: t.last_update,
        marker,
        notes: None,
    }
}

/// Actions that are notes (an action without text is a status change or time entry).
pub(crate) fn note(a: Action) -> Option<ExtNote> {
    let body = a.note.trim();
    (!body.is_empty()).then(|| ExtNote {
        external_id: a.id.to_string(),
        body: body.to_string(),
        internal: a.hiddenfromuser,
        author: a.who.unwrap_or_default(),
        created_at: a.datetime,
        is_description: false,
    })
}

#[async_trait]
impl TicketSource for HaloSource {
    /// Paged like clients (`record_count` decides the next page), closed tickets included.
    async fn tickets(&self, req: &PageRequest) -> Result<SourcePage<ExtTicket>, SourceError> {
        let lookups = self.lookups().await?;
        let extra = [("includeclosed", "true")];
        let (rows, rejected, next) = self.page::<Ticket>("/Tickets", req, &extra).await?;
        Ok(SourcePage {
            records: rows.into_iter().map(|t| ticket(t, lookups)).collect(),
            rejected,
            next,
        })
    }

    /// One `GET /Actions?ticket_id=…&excludesys=true` per ticket (system actions such as
    /// SLA events are not notes).
    async fn ticket_notes(&self, tickets: &[String]) -> Result<TicketNotes, SourceError> {
        let mut out = TicketNotes::default();
        for id in tickets {
            let query = [
                ("ticket_id", id.clone()),
                ("excludesys", "true".to_string()),
            ];
            match self.client.get::<ActionList>("/Actions", &query).await {
                Ok(list) => {
                    let (rows, bad, _) = read_rows::<Action>(list.actions);
                    if let Some(b) = bad.into_iter().next() {
                        out.rejected.push(Rejected {
                            external_id: Some(id.clone()),
                            reason: format!("an action could not be read: {}", b.reason),
                        });
                        continue;
                    }
                    out.by_ticket
                        .insert(id.clone(), rows.into_iter().filter_map(note).collect());
                }
                Err(e) if e.status() == Some(404) => out.rejected.push(Rejected {
                    external_id: Some(id.clone()),
                    reason: "the ticket is gone (its actions answered 404)".into(),
                }),
                Err(e) => return Err(Self::error("/Actions", e)),
            }
        }
        Ok(out)
    }
}

impl PsaSource for HaloSource {
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
