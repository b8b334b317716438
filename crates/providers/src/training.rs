//! The training capability (Bigger Brains' BrainStation): the course catalogue, a team's
//! learner progress, and a team's users handed to the library. Bigger Brains has no public
//! API, so the first implementation (`bigger_brains::FileExchange`) exchanges files: the
//! admin uploads the exports of BrainStation's Reseller Portal and downloads the users file
//! for its user import. A partner API would implement the same trait, reading instead of
//! being handed a file, and nothing above it would change.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mspbridge_domain::training::{Course, CsvImport, ExportUser, Progress};

/// What an import reads: today a file the admin uploaded.
#[derive(Debug, Clone, Copy)]
pub enum Exchange<'a> {
    File(&'a str),
}

/// How a team's users reach the library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A file the admin uploads to BrainStation (Team Management > Users > Import).
    File {
        name: String,
        content_type: &'static str,
        body: String,
    },
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum TrainingError {
    /// The input cannot be used at all (not text, too large); rows with problems are not
    /// errors but `CsvImport::errors`.
    #[error("{0}")]
    Unusable(String),
}

#[async_trait]
pub trait TrainingSource: Send + Sync {
    async fn catalogue(&self, input: Exchange<'_>) -> Result<CsvImport<Course>, TrainingError>;
    /// One team's progress; a row naming another team is refused at its column.
    async fn progress(
        &self,
        team: &str,
        input: Exchange<'_>,
        now: DateTime<Utc>,
    ) -> Result<CsvImport<Progress>, TrainingError>;
    async fn deliver_users(
        &self,
        team: &str,
        users: &[ExportUser],
    ) -> Result<Delivery, TrainingError>;
    /// Where a company's people learn (the reseller's BrainStation address).
    fn link_out(&self) -> String;
    /// Whether the library is reached through files the admin moves (no API).
    fn by_files(&self) -> bool;
}
