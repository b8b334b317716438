//! Capability traits the sync engine reads from: companies, contacts and technicians
//! as normalised records, one page at a time. A provider implements the ones it has.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mspbridge_domain::sync::{ExtCompany, ExtContact, ExtTechnician, Vocabulary};

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

/// Everything a PSA gives the engine.
pub trait PsaSource: CompanySource + ContactSource + TechnicianSource + VocabularySource {
    /// Vendor requests made through this source so far.
    fn requests(&self) -> u64;
}
