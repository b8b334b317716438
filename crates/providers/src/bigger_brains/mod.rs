//! Bigger Brains (BrainStation), the training library an MSP resells: no public API, so
//! [`FileExchange`] implements [`crate::training::TrainingSource`] with the files
//! BrainStation's Reseller Portal exports and imports (formats in
//! `mspbridge_domain::training`). Credentials: `reseller_name`, `brainstation_url` — no
//! secret, nothing is called. `samples` plays the vendor for tests and the demo: the files
//! its portal would export.

pub mod samples;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::integration::{AreaCheck, AreaResult, ConnectionOutcome, TestReport};
use mspbridge_domain::training::{
    Course, CsvImport, ExportUser, Progress, parse_catalogue, parse_progress, users_csv,
};
use mspbridge_domain::validate::Credentials;

use crate::ConnectionTest;
use crate::training::{Delivery, Exchange, TrainingError, TrainingSource};

/// Files larger than this are refused whole (a catalogue of 280 courses is ~60 KB).
pub const MAX_FILE_BYTES: usize = 20 * 1024 * 1024;

pub struct FileExchange {
    pub reseller: String,
    pub url: String,
}

impl FileExchange {
    pub fn from_credentials(creds: &Credentials) -> Self {
        Self {
            reseller: creds
                .get("reseller_name")
                .unwrap_or_default()
                .trim()
                .to_string(),
            url: creds
                .get("brainstation_url")
                .unwrap_or("https://getbiggerbrains.com")
                .trim()
                .trim_end_matches('/')
                .to_string(),
        }
    }
}

fn text(input: Exchange<'_>) -> Result<&str, TrainingError> {
    let Exchange::File(t) = input;
    if t.len() > MAX_FILE_BYTES {
        return Err(TrainingError::Unusable(format!(
            "the file is {} MB; the largest accepted is {} MB",
            t.len() / (1024 * 1024),
            MAX_FILE_BYTES / (1024 * 1024)
        )));
    }
    Ok(t)
}

/// A file name from a team name (letters, digits and dashes).
pub fn file_name(team: &str) -> String {
    let slug: String = team
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let slug = slug
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    format!(
        "brainstation-users-{}.csv",
        if slug.is_empty() { "team".into() } else { slug }
    )
}

#[async_trait]
impl TrainingSource for FileExchange {
    async fn catalogue(&self, input: Exchange<'_>) -> Result<CsvImport<Course>, TrainingError> {
        Ok(parse_catalogue(text(input)?))
    }

    async fn progress(
        &self,
        team: &str,
        input: Exchange<'_>,
        now: DateTime<Utc>,
    ) -> Result<CsvImport<Progress>, TrainingError> {
        Ok(parse_progress(text(input)?, Some(team), now))
    }

    async fn deliver_users(
        &self,
        team: &str,
        users: &[ExportUser],
    ) -> Result<Delivery, TrainingError> {
        Ok(Delivery::File {
            name: file_name(team),
            content_type: "text/csv; charset=utf-8",
            body: users_csv(users),
        })
    }

    fn link_out(&self) -> String {
        self.url.clone()
    }

    fn by_files(&self) -> bool {
        true
    }
}

pub struct BiggerBrains;

#[async_trait]
impl ConnectionTest for BiggerBrains {
    fn kind(&self) -> ProviderKind {
        ProviderKind::BiggerBrains
    }

    async fn test(&self, creds: &Credentials, now: DateTime<Utc>) -> TestReport {
        let x = FileExchange::from_credentials(creds);
        TestReport {
            connection: ConnectionOutcome::Ok,
            areas: vec![AreaCheck {
                area: "files".into(),
                label: "File exchange (Bigger Brains has no API: catalogue and progress are imported from BrainStation's exports)".into(),
                required: true,
                outcome: AreaResult::Granted,
            }],
            tested_at: now,
            details: vec![
                ("Reseller".to_string(), x.reseller),
                ("BrainStation".to_string(), x.url),
                ("Secret".to_string(), "none: nothing is called".to_string()),
            ],
        }
    }
}
