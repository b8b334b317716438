//! Capability: writing portal-side ticket changes to a PSA.
//!
//! The outbox worker calls these; every write is preceded by a lookup of what an earlier
//! attempt may already have written (`find_*`), because an answer can be lost after the
//! vendor applied the change. Names (board, status, priority) are resolved to the vendor's
//! ids by the connector.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use mspbridge_domain::sync::TicketDefaults;

/// How every outbox marker starts: a vendor ticket carrying one was created by mspbridge.
pub const MARKER_PREFIX: &str = "msb-";

/// A ticket to create in the PSA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewVendorTicket {
    pub company_external_id: String,
    pub summary: String,
    pub description: String,
    /// Ours, unique: stored on the vendor's ticket so a retry can find it.
    pub marker: String,
    pub defaults: TicketDefaults,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The vendor refused the content (validation): retrying will not help.
    #[error("{message}")]
    Rejected {
        field: Option<String>,
        message: String,
    },
    #[error("the vendor rejected the credentials: {0}")]
    Auth(String),
    #[error("not permitted: {message} (grant {setting})")]
    NotPermitted { message: String, setting: String },
    /// Worth another attempt (429, 5xx, timeouts, unreadable answers).
    #[error("{message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
}

impl WriteError {
    pub fn retryable(&self) -> bool {
        matches!(self, WriteError::Transient { .. })
    }

    /// The same error, saying which step met it ("looking for …: the vendor's message"),
    /// so a refused look-up is not read as a refused write.
    pub fn context(self, step: &str) -> Self {
        match self {
            WriteError::Rejected { field, message } => WriteError::Rejected {
                field,
                message: format!("{step}: {message}"),
            },
            WriteError::Auth(m) => WriteError::Auth(format!("{step}: {m}")),
            WriteError::NotPermitted { message, setting } => WriteError::NotPermitted {
                message: format!("{step}: {message}"),
                setting,
            },
            WriteError::Transient {
                message,
                retry_after,
            } => WriteError::Transient {
                message: format!("{step}: {message}"),
                retry_after,
            },
        }
    }

    /// How the outbox reads a vendor's HTTP refusal, the same for every PSA: 429 and 5xx
    /// are worth another attempt (after `retry_after`), 401 is the credentials, 403 a
    /// missing permission (granted at `setting`); any other status refused the content
    /// itself (`rejected`, in the vendor's words). `described` is the whole error,
    /// `vendor_message` the vendor's own message.
    pub fn from_status(
        status: u16,
        retry_after: Option<Duration>,
        described: String,
        vendor_message: String,
        setting: &str,
        rejected: WriteError,
    ) -> WriteError {
        match status {
            429 => WriteError::Transient {
                message: described,
                retry_after,
            },
            s if s >= 500 => WriteError::Transient {
                message: described,
                retry_after: None,
            },
            401 => WriteError::Auth(vendor_message),
            403 => WriteError::NotPermitted {
                message: vendor_message,
                setting: setting.into(),
            },
            _ => rejected,
        }
    }

    /// A failure to reach the vendor or read its answer: worth another attempt.
    pub fn transient(message: String) -> WriteError {
        WriteError::Transient {
            message,
            retry_after: None,
        }
    }
}

#[async_trait]
pub trait TicketWriter: Send + Sync {
    /// The vendor id of the ticket carrying `t.marker`, if an earlier attempt (the first
    /// one at `since`) created it.
    async fn find_ticket(
        &self,
        t: &NewVendorTicket,
        since: DateTime<Utc>,
    ) -> Result<Option<String>, WriteError>;
    async fn create_ticket(&self, t: &NewVendorTicket) -> Result<String, WriteError>;
    /// A note with exactly this text and visibility written on `ticket` since `since`
    /// (an earlier attempt of the same outbox row).
    async fn find_note(
        &self,
        ticket: &str,
        text: &str,
        internal: bool,
        since: DateTime<Utc>,
    ) -> Result<Option<String>, WriteError>;
    async fn add_note(
        &self,
        ticket: &str,
        text: &str,
        internal: bool,
    ) -> Result<String, WriteError>;
    /// Moves the ticket to the status of this name on its board (a no-op when it is there).
    async fn set_status(&self, ticket: &str, status: &str) -> Result<(), WriteError>;
    /// The ticket's status in the PSA now, by name, and whether that status is closed;
    /// `None` when the ticket no longer exists.
    async fn ticket_status(&self, ticket: &str) -> Result<Option<(String, bool)>, WriteError>;
    /// Vendor requests made so far.
    fn requests(&self) -> u64;
}
