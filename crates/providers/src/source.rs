//! Capability traits the sync engine reads from: companies, contacts and technicians
//! as normalised records, one page at a time. A provider implements the ones it has.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

use mspbridge_domain::sync::{
    ExtCompany, ExtContact, ExtNote, ExtTechnician, ExtTicket, Vocabulary,
};

/// Which page to read: records changed after `since` (all when `None`), continuing
/// after the opaque `after` token of the previous page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    pub since: Option<DateTime<Utc>>,
    pub after: Option<String>,
}

/// A vendor record that could not be read; the rest of the page goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub external_id: Option<String>,
    pub reason: String,
}

impl mspbridge_domain::sync::StripNul for Rejected {
    fn strip_nul(&mut self) -> bool {
        self.external_id.strip_nul() | self.reason.strip_nul()
    }
}

#[derive(Debug, Clone)]
pub struct SourcePage<T> {
    pub records: Vec<T>,
    pub rejected: Vec<Rejected>,
    /// Token for the next page; `None` when this was the last.
    pub next: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    #[error("the vendor rejected the credentials: {0}")]
    Auth(String),
    #[error("not permitted: {message} (grant {setting})")]
    NotPermitted { message: String, setting: String },
    #[error("the vendor could not be read: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Budget(String),
}

#[async_trait]
pub trait CompanySource: Send + Sync {
    async fn companies(&self, req: &PageRequest) -> Result<SourcePage<ExtCompany>, SourceError>;
}

#[async_trait]
pub trait ContactSource: Send + Sync {
    async fn contacts(&self, req: &PageRequest) -> Result<SourcePage<ExtContact>, SourceError>;
}

#[async_trait]
pub trait TechnicianSource: Send + Sync {
    async fn technicians(
        &self,
        req: &PageRequest,
    ) -> Result<SourcePage<ExtTechnician>, SourceError>;
}

/// The vendor's lists of contact types, company types and company statuses, which the
/// admin picks from for company filters and contact-type rules.
#[async_trait]
pub trait VocabularySource: Send + Sync {
    async fn vocabulary(&self, now: DateTime<Utc>) -> Result<Vocabulary, SourceError>;
}

/// The notes of some tickets: per ticket id, every note; tickets whose notes could not
/// be read are rejected (with the reason) and the rest go on.
#[derive(Debug, Clone, Default)]
pub struct TicketNotes {
    pub by_ticket: HashMap<String, Vec<ExtNote>>,
    pub rejected: Vec<Rejected>,
}

/// Tickets and their notes. Tickets are paged like the other records; notes are read for
/// the tickets the engine asks for (new or changed ones), so an unchanged ticket costs
/// nothing beyond its row.
#[async_trait]
pub trait TicketSource: Send + Sync {
    async fn tickets(&self, req: &PageRequest) -> Result<SourcePage<ExtTicket>, SourceError>;
    async fn ticket_notes(&self, tickets: &[String]) -> Result<TicketNotes, SourceError>;
}

/// Everything a PSA gives the engine.
pub trait PsaSource: CompanySource + ContactSource + TechnicianSource + VocabularySource {
    /// Vendor requests made through this source so far.
    fn requests(&self) -> u64;
    /// Response body bytes received through this source so far (0 where not counted).
    fn bytes(&self) -> u64 {
        0
    }
    /// Tickets, where this connector imports them.
    fn ticket_source(&self) -> Option<&dyn TicketSource> {
        None
    }
}

/// A row's `id` alone (every other field is skipped unread).
#[derive(serde::Deserialize)]
struct RowId {
    #[serde(default)]
    id: Option<i64>,
}

/// Reads a page's raw rows one by one into `T`: an unreadable row is rejected with its id
/// and the field at fault while the rest go on. Also returns the highest id seen.
pub(crate) fn read_rows<T: serde::de::DeserializeOwned>(
    rows: Vec<Box<serde_json::value::RawValue>>,
) -> (Vec<T>, Vec<Rejected>, Option<i64>) {
    let mut records = Vec::with_capacity(rows.len());
    let mut rejected = Vec::new();
    let mut max_id = None;
    for row in rows {
        let id = serde_json::from_str::<RowId>(row.get())
            .ok()
            .and_then(|r| r.id);
        max_id = max_id.max(id);
        let mut de = serde_json::Deserializer::from_str(row.get());
        match serde_path_to_error::deserialize::<_, T>(&mut de) {
            Ok(r) => records.push(r),
            Err(e) => rejected.push(Rejected {
                external_id: id.map(|i| i.to_string()),
                reason: field_error(&e),
            }),
        }
    }
    (records, rejected, max_id)
}

/// "field `firstName`: invalid type: integer `42`, expected a string" (the position in
/// the body means nothing to an admin; the field does).
pub(crate) fn field_error(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let inner = e.inner().to_string();
    let inner = inner.split(" at line ").next().unwrap_or(&inner);
    match e.path().to_string().as_str() {
        "." | "" => inner.to_string(),
        path => format!("field `{path}`: {inner}"),
    }
}
