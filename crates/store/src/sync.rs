//! Storage for the sync engine: per-integration options and schedule (jobs leased from
//! the database), cursors with in-pass checkpoints, runs and their events, and the
//! batched page commit that applies a page of changes, its checkpoint and its events in
//! one transaction, fenced by the caller's lease.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mspbridge_domain::integration::Integration;
use mspbridge_domain::model::LinkedRecord;
use mspbridge_domain::sync::{
    Counts, EventLevel, RecordType, RunResult, SyncOptions, Trigger, Vocabulary,
};
use mspbridge_domain::{IntegrationId, RoleId, TenantId};
use serde::Serialize;

use crate::Result;

/// A due integration claimed by a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub tenant_id: TenantId,
    pub integration_id: IntegrationId,
    pub trigger: Trigger,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Schedule {
    pub next_run_at: DateTime<Utc>,
    pub running: bool,
    pub consecutive_failures: i64,
    pub paused_reason: Option<String>,
    pub manual_requested_at: Option<DateTime<Utc>>,
}

/// One integration's database-state gauges for `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct IntegrationGauges {
    pub integration_id: i64,
    /// Provider slug.
    pub provider: String,
    /// 1 when automatic sync is paused after repeated failures, else 0.
    pub paused: i64,
    pub outbox_pending: i64,
    pub outbox_failed: i64,
}

/// What the worker reports when it gives a lease back.
#[derive(Debug, Clone)]
pub struct Release {
    pub next_run_at: DateTime<Utc>,
    /// True when the run failed; the failure counter grows, else it resets.
    pub failed: bool,
    /// Pause automatic sync with this reason (after repeated failures).
    pub pause: Option<String>,
}

/// Answer to "Sync now".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncRequest {
    Queued,
    /// Asked again too soon: allowed again at this time.
    CoolingDown(DateTime<Utc>),
    AlreadyRunning,
}

/// A pass in progress, saved with every committed page so a crash resumes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassState {
    pub run_id: i64,
    /// A full pass lists everything and deactivates what it did not see at the end.
    pub full: bool,
    pub since: Option<DateTime<Utc>>,
    /// The source's token for the next page.
    pub after: Option<String>,
    pub max_seen: Option<DateTime<Utc>>,
    /// Records this pass deferred so far: skipped because a record they belong to was
    /// not synced while its own pass had not completed. A pass that deferred any ends
    /// without moving its watermark (or, for a full pass, its reconcile time), so the next
    /// run reads them again.
    pub deferred: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Highest vendor `updated_at` of the last complete pass.
    pub watermark: Option<DateTime<Utc>>,
    /// With initial import off: only records changed after this are imported.
    pub sync_from: Option<DateTime<Utc>>,
    pub last_full_pass_at: Option<DateTime<Utc>>,
    /// When a pass of this record type last completed (full or incremental).
    pub last_pass_at: Option<DateTime<Utc>>,
    /// Records the last completed pass deferred (see [`PassState::deferred`]).
    pub deferred: u64,
    pub pass: Option<PassState>,
}

impl Cursor {
    /// Every record of this type the vendor serves is in the portal as far as a sync can
    /// put it there: a pass completed, none is in progress or interrupted, and the last one
    /// deferred nothing. Records that belong to an unsettled type's record are deferred,
    /// not skipped for good.
    pub fn settled(&self) -> bool {
        self.pass.is_none() && self.last_pass_at.is_some() && self.deferred == 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncRun {
    pub id: i64,
    pub integration_id: IntegrationId,
    pub trigger: Trigger,
    pub worker: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub result: RunResult,
    pub counts: BTreeMap<RecordType, Counts>,
    pub error: Option<String>,
    pub requests: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncEvent {
    pub id: i64,
    pub run_id: i64,
    pub at: DateTime<Utc>,
    pub level: EventLevel,
    pub record_type: Option<RecordType>,
    pub external_id: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub level: EventLevel,
    pub record_type: Option<RecordType>,
    pub external_id: Option<String>,
    pub message: String,
}

/// What the engine knows of an already linked record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub local_id: i64,
    pub content_hash: String,
    pub gone: bool,
}

/// One change of a page, decided by the engine, applied by the store.
#[derive(Debug, Clone)]
pub enum Op {
    Company {
        existing: Option<i64>,
        external_id: String,
        name: String,
        active: bool,
        hash: String,
        remote_updated_at: Option<DateTime<Utc>>,
    },
    CompanyUser {
        existing: Option<i64>,
        company_id: i64,
        external_id: String,
        email: Option<String>,
        phone: Option<String>,
        first_name: String,
        last_name: String,
        /// The role and why it was chosen: set on create only, because existing users keep
        /// the role they were given at import.
        role: Option<(RoleId, String)>,
        /// The contact's types in the PSA (shown on the company page).
        contact_types: Vec<String>,
        active: bool,
        hash: String,
        remote_updated_at: Option<DateTime<Utc>>,
    },
    /// Create a staff user, or link and update an existing one (matched by email).
    Staff {
        existing: Option<i64>,
        external_id: String,
        email: String,
        name: String,
        active: bool,
        hash: String,
        remote_updated_at: Option<DateTime<Utc>>,
    },
    /// Create or update a ticket read from the PSA, with the notes the portal lacks.
    Ticket(Box<TicketOp>),
    /// Create or update an RMM device (staging), possibly importing it.
    Device(Box<DeviceOp>),
    /// An unchanged staged device whose type now auto-syncs: import it as that type.
    ImportDevice {
        local_id: i64,
        external_id: String,
        device_type_id: i64,
    },
    /// Create or update an RMM alert.
    Alert(Box<AlertOp>),
    /// Seen in a full pass, unchanged: only mark it seen.
    Seen { external_id: String },
}

/// A device as the RMM has it. Which portal company it belongs to is its site's company
/// link, read when it is shown, so mapping a site moves its devices at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceOp {
    pub existing: Option<i64>,
    pub external_id: String,
    pub site_external_id: Option<String>,
    pub hostname: String,
    pub provider_type: String,
    pub category: String,
    pub device_class: Option<String>,
    pub operating_system: Option<String>,
    pub online: Option<bool>,
    pub last_seen: Option<DateTime<Utc>>,
    pub reboot_required: Option<bool>,
    pub patch_status: Option<String>,
    pub antivirus_status: Option<String>,
    pub warranty_date: Option<chrono::NaiveDate>,
    /// Every field the RMM sent, as JSON (`mspbridge_domain::rmm::ExtDevice`).
    pub details: String,
    /// Import it now as this device type (its type auto-syncs).
    pub import_as: Option<i64>,
    /// Deleted in the RMM: stamped removed.
    pub removed: bool,
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertOp {
    pub existing: Option<i64>,
    pub external_id: String,
    pub device_external_id: Option<String>,
    pub device_name: Option<String>,
    pub site_external_id: Option<String>,
    pub priority: String,
    pub priority_rank: i64,
    pub diagnostics: Option<String>,
    pub raised_at: Option<DateTime<Utc>>,
    pub resolved: bool,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<String>,
    pub muted: Option<bool>,
    pub ticket_number: Option<String>,
    pub context_type: Option<String>,
    pub context: Option<String>,
    pub hash: String,
}

/// Why the sync linked an integration company to an existing portal company.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoLinkRule {
    /// The same normalised name (audit action `auto_link`).
    SameName,
    /// The PSA company id the record carries (an RMM site's; audit action `identity_link`).
    PsaIdentity,
}

impl AutoLinkRule {
    /// The `company_link_audit.action` it is recorded as.
    pub fn action(self) -> &'static str {
        match self {
            AutoLinkRule::SameName => "auto_link",
            AutoLinkRule::PsaIdentity => "identity_link",
        }
    }
}

/// A ticket as the PSA has it, placed in the portal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketOp {
    /// The portal ticket: linked before, or created from the portal (found by its marker).
    pub existing: Option<i64>,
    pub external_id: String,
    pub company_id: i64,
    pub summary: String,
    pub description: String,
    pub status: String,
    pub closed: bool,
    /// A portal status change is waiting to be written: the portal's status stays (the
    /// PSA's is still recorded as `psa_status`).
    pub keep_status: bool,
    pub priority: Option<String>,
    pub board: Option<String>,
    pub ticket_type: Option<String>,
    pub contact_id: Option<i64>,
    pub assignee_id: Option<i64>,
    pub created_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    /// Notes to add when the portal has no note linked to their vendor id (a note the
    /// portal wrote itself, same ticket, text and visibility, not yet linked, is linked
    /// instead of added twice).
    pub notes: Vec<NoteImport>,
    pub hash: String,
    pub remote_updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteImport {
    pub external_id: String,
    pub body: String,
    pub internal: bool,
    pub author: String,
    pub created_at: Option<DateTime<Utc>>,
}

/// What deciding an imported ticket needs to know of its portal ticket.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TicketLocal {
    /// The status the PSA had when last read or written.
    pub psa_status: Option<String>,
    /// The status a portal change waiting in the outbox will write.
    pub pending_status: Option<String>,
}

/// Chooses, inside a page's transaction and just before the checkpoint is written, which
/// pass state to write: `None` leaves the checkpoint as it is. Pages committed side by side
/// use it so the checkpoint only ever covers pages that are all committed.
pub type CheckpointGate = Arc<dyn Fn() -> Option<PassState> + Send + Sync>;

/// A page to commit atomically.
#[derive(Clone)]
pub struct PageCommit {
    pub record: RecordType,
    pub ops: Vec<Op>,
    /// A companies page's every company (linked, skipped or not), for the integration's
    /// company list.
    pub companies: Vec<CatalogCompany>,
    pub events: Vec<NewEvent>,
    /// Integration companies this page links to an existing portal company by a rule
    /// (external id, portal company id, rule): each is written to `company_link_audit` with
    /// the rule's action by actor `sync`, batch `run-{run_id}`, undoable like a Quick Match.
    pub auto_links: Vec<(String, i64, AutoLinkRule)>,
    /// The pass state after this page.
    pub pass: PassState,
    /// `None`: `pass` is written as the checkpoint.
    pub checkpoint: Option<CheckpointGate>,
}

impl std::fmt::Debug for PageCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageCommit")
            .field("record", &self.record)
            .field("ops", &self.ops.len())
            .field("events", &self.events.len())
            .field("pass", &self.pass)
            .field("gated", &self.checkpoint.is_some())
            .finish()
    }
}

/// A company as its integration has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogCompany {
    pub external_id: String,
    pub name: String,
    pub active: bool,
    /// Normalised web/email domains (`acme.com`), for matching.
    pub domains: Vec<String>,
}

pub fn linked_record(r: RecordType) -> LinkedRecord {
    match r {
        RecordType::Companies => LinkedRecord::Company,
        RecordType::Contacts => LinkedRecord::CompanyUser,
        RecordType::Technicians => LinkedRecord::StaffUser,
        RecordType::Tickets => LinkedRecord::Ticket,
        RecordType::Devices => LinkedRecord::Device,
        RecordType::Alerts => LinkedRecord::Alert,
        RecordType::Invoices => LinkedRecord::Invoice,
        RecordType::Subscriptions => LinkedRecord::Subscription,
        RecordType::Payments => LinkedRecord::Payment,
    }
}

#[async_trait]
pub trait SyncStore: Send + Sync {
    async fn sync_options(&self, tenant: TenantId, id: IntegrationId) -> Result<SyncOptions>;
    /// Saves options and (re)schedules the integration: enabled → due now, else unscheduled.
    async fn set_sync_options(
        &self,
        tenant: TenantId,
        id: IntegrationId,
        options: &SyncOptions,
        now: DateTime<Utc>,
    ) -> Result<Integration>;
    async fn schedule(&self, tenant: TenantId, id: IntegrationId) -> Result<Option<Schedule>>;
    /// Keeps the vendor's lists (contact types, company types, company statuses).
    async fn save_vocabulary(
        &self,
        tenant: TenantId,
        id: IntegrationId,
        vocabulary: &Vocabulary,
    ) -> Result<()>;
    /// The vendor's lists as last read; `None` before they were read.
    async fn vocabulary(&self, tenant: TenantId, id: IntegrationId) -> Result<Option<Vocabulary>>;
    /// "Sync now", with a cooldown against repeated clicks.
    async fn request_sync(
        &self,
        tenant: TenantId,
        id: IntegrationId,
        now: DateTime<Utc>,
        cooldown: chrono::Duration,
    ) -> Result<SyncRequest>;
    /// Quick Sync: a tickets-only run due now, without moving the next regular run (a
    /// full run already due now is left as it is: it covers the tickets too). A zero
    /// `cooldown` (a webhook's follow-up) neither checks nor starts the users' cooldown, so
    /// webhooks never hold back an admin's Sync now.
    async fn request_quick_sync(
        &self,
        tenant: TenantId,
        id: IntegrationId,
        now: DateTime<Utc>,
        cooldown: chrono::Duration,
    ) -> Result<SyncRequest>;
    /// Clears a pause after repeated failures and makes the integration due now.
    async fn reactivate(
        &self,
        tenant: TenantId,
        id: IntegrationId,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// Per integration of every tenant: what `/metrics` reports from the database
    /// (paused automatic sync, outbox rows pending and failed). No secrets, no tenant names.
    async fn integration_gauges(&self) -> Result<Vec<IntegrationGauges>>;
    /// Leases the most overdue integration that nobody holds (or whose lease expired).
    async fn claim_due(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<Claim>>;
    /// Extends a lease; false when the lease was lost (expired and taken by another worker).
    async fn renew_lease(
        &self,
        id: IntegrationId,
        worker: &str,
        until: DateTime<Utc>,
    ) -> Result<bool>;
    async fn release(&self, id: IntegrationId, worker: &str, release: Release) -> Result<()>;

    async fn start_run(
        &self,
        tenant: TenantId,
        id: IntegrationId,
        trigger: Trigger,
        worker: &str,
        now: DateTime<Utc>,
    ) -> Result<i64>;
    async fn finish_run(
        &self,
        run_id: i64,
        result: RunResult,
        counts: &BTreeMap<RecordType, Counts>,
        error: Option<&str>,
        requests: u64,
        now: DateTime<Utc>,
    ) -> Result<()>;
    async fn add_events(
        &self,
        tenant: TenantId,
        run_id: i64,
        events: &[NewEvent],
        now: DateTime<Utc>,
    ) -> Result<()>;
    async fn list_runs(
        &self,
        tenant: TenantId,
        id: IntegrationId,
        limit: i64,
    ) -> Result<Vec<SyncRun>>;
    /// A page of the integration's runs, newest first, and how many there are in all.
    async fn list_runs_page(
        &self,
        tenant: TenantId,
        id: IntegrationId,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<SyncRun>, i64)>;
    async fn get_run(&self, tenant: TenantId, run_id: i64) -> Result<SyncRun>;
    async fn list_events(
        &self,
        tenant: TenantId,
        run_id: i64,
        level: Option<EventLevel>,
        record_type: Option<RecordType>,
        limit: i64,
    ) -> Result<Vec<SyncEvent>>;
    /// A page of a run's events, oldest first, and how many match in all.
    async fn list_events_page(
        &self,
        tenant: TenantId,
        run_id: i64,
        level: Option<EventLevel>,
        record_type: Option<RecordType>,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<SyncEvent>, i64)>;

    async fn cursor(&self, id: IntegrationId, record: RecordType) -> Result<Cursor>;
    /// Starts a pass (or records `sync_from`), fenced by the lease.
    async fn begin_pass(
        &self,
        id: IntegrationId,
        record: RecordType,
        worker: &str,
        sync_from: Option<DateTime<Utc>>,
        pass: &PassState,
    ) -> Result<()>;
    async fn links(
        &self,
        id: IntegrationId,
        record: RecordType,
        external_ids: &[String],
    ) -> Result<HashMap<String, LinkState>>;
    /// The integration's companies an admin unlinked in the mapping, or blocked by deleting
    /// their portal company (the sync does not import them again).
    async fn unlinked_by_admin(&self, id: IntegrationId) -> Result<HashSet<String>>;
    /// Active portal companies with no company link from this integration, as
    /// (id, name): the ones its sync may link a new company to by name instead of
    /// creating a duplicate.
    async fn linkable_companies(
        &self,
        tenant: TenantId,
        id: IntegrationId,
    ) -> Result<Vec<(i64, String)>>;
    /// Company overrides (Default Import Role) for these portal companies.
    async fn import_role_overrides(
        &self,
        tenant: TenantId,
        company_ids: &[i64],
    ) -> Result<HashMap<i64, RoleId>>;
    /// Which of these portal record ids are already linked to a record of the integration.
    async fn linked_local_ids(
        &self,
        id: IntegrationId,
        record: RecordType,
        local_ids: &[i64],
    ) -> Result<std::collections::HashSet<i64>>;
    /// Staff users with these emails (lower-case) → id.
    async fn staff_by_email(
        &self,
        tenant: TenantId,
        emails: &[String],
    ) -> Result<HashMap<String, i64>>;
    /// The portal tickets created from the portal whose outbox marker is one of these
    /// (written to this integration): marker → ticket id.
    async fn tickets_by_marker(
        &self,
        tenant: TenantId,
        id: IntegrationId,
        markers: &[String],
    ) -> Result<HashMap<String, i64>>;
    /// For these portal tickets: the PSA status last seen and any status change still
    /// waiting in the outbox.
    async fn ticket_locals(
        &self,
        tenant: TenantId,
        ticket_ids: &[i64],
    ) -> Result<HashMap<i64, TicketLocal>>;
    /// Clear & Resync: deletes the tickets (and their notes) this integration imported or
    /// wrote, and forgets the ticket cursor so the next run imports them again. Refused
    /// (`Conflict`) while portal changes to them wait in the outbox. Returns how many went.
    async fn clear_synced_tickets(
        &self,
        tenant: TenantId,
        id: IntegrationId,
        now: DateTime<Utc>,
    ) -> Result<u64>;
    /// Manually created company users with these emails (lower-case) → (company id, user id).
    async fn manual_users_by_email(
        &self,
        tenant: TenantId,
        emails: &[String],
    ) -> Result<HashMap<String, (i64, i64)>>;
    /// Applies a page: its ops, events and new pass state, in one transaction, only while
    /// `worker` holds the lease (else `StoreError::LeaseLost`, and nothing is written).
    ///
    /// Several pages of one pass may be committed at once (up to
    /// [`SyncStore::concurrent_page_commits`]); the fence does not make them wait for
    /// each other.
    async fn commit_page(
        &self,
        tenant: TenantId,
        id: IntegrationId,
        run_id: i64,
        worker: &str,
        page: PageCommit,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// How many page transactions of one run are worth running side by side: SQLite has
    /// one writer at a time; PostgreSQL writes in parallel.
    fn concurrent_page_commits(&self) -> usize;
    /// Refreshes the query planner's statistics of the synced tables. After a bulk import
    /// they describe nearly empty tables, and PostgreSQL then plans joins over tens of
    /// thousands of rows as if there were a handful (measured: 85–140 ms instead of a few
    /// for one 500-row update, and seconds without an index condition).
    async fn refresh_statistics(&self) -> Result<()>;
    /// Ends a complete pass: a full pass deactivates every linked record it did not see;
    /// the watermark advances. Returns the number of records deactivated.
    async fn finish_pass(
        &self,
        tenant: TenantId,
        id: IntegrationId,
        record: RecordType,
        worker: &str,
        now: DateTime<Utc>,
    ) -> Result<u64>;
}

impl NewEvent {
    pub fn new(
        level: EventLevel,
        record_type: Option<RecordType>,
        external_id: Option<&str>,
        message: &str,
    ) -> Self {
        Self {
            level,
            record_type,
            external_id: external_id.map(str::to_string),
            message: message.to_string(),
        }
    }
}
