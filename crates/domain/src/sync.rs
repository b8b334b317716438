//! Pure rules of the sync engine: the normalised shape of vendor records, the options
//! an admin sets per integration, the contact-role fallback chain with its provenance,
//! run counts and results, and content hashing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::catalogue::ProviderKind;
use crate::{FieldError, RoleId, ValidationError};

/// The record types a PSA sync handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RecordType {
    Companies,
    Contacts,
    Technicians,
    Tickets,
    /// RMM devices (their sites are the RMM's companies).
    Devices,
    /// RMM monitoring alerts (open ones; resolved when they leave the open list).
    Alerts,
    /// Billing invoices (their customers are the billing account's companies).
    Invoices,
    /// Billing subscriptions.
    Subscriptions,
    /// Billing payments.
    Payments,
}

impl RecordType {
    /// In dependency order: contacts need their companies first; tickets need companies,
    /// contacts and technicians.
    pub const ALL: [RecordType; 9] = [
        RecordType::Companies,
        RecordType::Contacts,
        RecordType::Technicians,
        RecordType::Tickets,
        RecordType::Devices,
        RecordType::Alerts,
        RecordType::Invoices,
        RecordType::Subscriptions,
        RecordType::Payments,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::Companies => "companies",
            RecordType::Contacts => "contacts",
            RecordType::Technicians => "technicians",
            RecordType::Tickets => "tickets",
            RecordType::Devices => "devices",
            RecordType::Alerts => "alerts",
            RecordType::Invoices => "invoices",
            RecordType::Subscriptions => "subscriptions",
            RecordType::Payments => "payments",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The record types whose synced state deciding this one reads: a contact is placed
    /// in the portal company linked to its vendor company.
    pub fn depends_on(self) -> &'static [RecordType] {
        match self {
            RecordType::Companies | RecordType::Technicians => &[],
            RecordType::Contacts => &[RecordType::Companies],
            RecordType::Tickets => &[
                RecordType::Companies,
                RecordType::Contacts,
                RecordType::Technicians,
            ],
            RecordType::Devices => &[RecordType::Companies],
            RecordType::Alerts => &[RecordType::Companies, RecordType::Devices],
            RecordType::Invoices | RecordType::Subscriptions | RecordType::Payments => {
                &[RecordType::Companies]
            }
        }
    }
}

/// A company as a vendor describes it, normalised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExtCompany {
    pub external_id: String,
    pub name: String,
    pub identifier: Option<String>,
    /// Inactive by the vendor's own rule (for ConnectWise: the status's inactive flag).
    pub active: bool,
    /// Deleted upstream (ConnectWise `deletedFlag`).
    pub deleted: bool,
    pub status: Option<String>,
    pub types: Vec<String>,
    /// The vendor id of the company's primary contact.
    pub primary_contact_id: Option<String>,
    /// Web and email addresses the vendor holds for the company (website, main email), as
    /// identity keys for company matching. Not part of the content hash: they go to the
    /// integration's company list, never onto the portal company.
    #[serde(skip)]
    pub domains: Vec<String>,
    #[serde(skip)]
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExtContact {
    pub external_id: String,
    pub company_external_id: Option<String>,
    pub first_name: String,
    pub last_name: String,
    /// The default email, lower-cased; `None` when the contact has none.
    pub email: Option<String>,
    pub phone: Option<String>,
    pub active: bool,
    /// Flagged primary by the vendor (ConnectWise `defaultFlag`).
    pub primary: bool,
    pub types: Vec<String>,
    #[serde(skip)]
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExtTechnician {
    pub external_id: String,
    pub identifier: String,
    pub first_name: String,
    pub last_name: String,
    pub email: Option<String>,
    pub active: bool,
    #[serde(skip)]
    pub updated_at: Option<DateTime<Utc>>,
}

/// A ticket as a PSA describes it, normalised. Unlike the other records its vendor stamp
/// is part of the content hash: adding a note changes only the ticket's stamp, and the
/// engine reads a ticket's notes again only when its hash changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExtTicket {
    pub external_id: String,
    pub summary: String,
    /// `None` when the vendor keeps the description in the notes (ConnectWise: the first
    /// detail-description note); the engine then takes it from there.
    pub description: Option<String>,
    pub status: String,
    pub closed: bool,
    pub priority: Option<String>,
    /// Board (ConnectWise), queue (Autotask), team (Halo).
    pub board: Option<String>,
    pub ticket_type: Option<String>,
    pub company_external_id: Option<String>,
    pub contact_external_id: Option<String>,
    pub assignee_external_id: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    /// mspbridge's outbox marker when the ticket was created from the portal (ConnectWise
    /// `externalXRef`): such a ticket is linked to its portal ticket, never imported again.
    #[serde(skip)]
    pub marker: Option<String>,
    /// Read separately (`TicketSource::ticket_notes`), only for tickets whose hash changed.
    #[serde(skip)]
    pub notes: Option<Vec<ExtNote>>,
}

/// A ticket note (ConnectWise ServiceNote, Halo action, Autotask TicketNote, Syncro comment).
/// Notes are append-only in the portal, keyed by their vendor id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExtNote {
    pub external_id: String,
    pub body: String,
    /// Staff only (ConnectWise internal analysis, Halo `hiddenfromuser`, Syncro `hidden`).
    pub internal: bool,
    pub author: String,
    pub created_at: Option<DateTime<Utc>>,
    /// The ticket's description, where the vendor keeps it as a note: not stored as a note.
    pub is_description: bool,
}

impl ExtTicket {
    /// The notes the portal keeps (descriptions left out).
    pub fn kept_notes(&self) -> impl Iterator<Item = &ExtNote> {
        self.notes.iter().flatten().filter(|n| !n.is_description)
    }
}

/// Text a database can store: PostgreSQL refuses NUL (U+0000) in text, SQLite keeps it,
/// so a vendor record carrying one is cleaned the same way for both. Each `clean` removes
/// NUL characters from every text field and says whether it found any.
pub trait StripNul {
    fn strip_nul(&mut self) -> bool;
}

impl StripNul for String {
    fn strip_nul(&mut self) -> bool {
        if self.contains('\0') {
            self.retain(|c| c != '\0');
            true
        } else {
            false
        }
    }
}

impl<T: StripNul> StripNul for Option<T> {
    fn strip_nul(&mut self) -> bool {
        self.as_mut().is_some_and(StripNul::strip_nul)
    }
}

impl<T: StripNul> StripNul for Vec<T> {
    fn strip_nul(&mut self) -> bool {
        self.iter_mut()
            .fold(false, |found, x| x.strip_nul() | found)
    }
}

/// `strip_nul` over the named fields, reporting whether any had a NUL.
macro_rules! strip_nul_fields {
    ($t:ty: $($f:ident),+) => {
        impl StripNul for $t {
            fn strip_nul(&mut self) -> bool {
                false $(| self.$f.strip_nul())+
            }
        }
    };
}
strip_nul_fields!(ExtCompany: external_id, name, identifier, status, types, primary_contact_id, domains);
strip_nul_fields!(ExtContact: external_id, company_external_id, first_name, last_name, email, phone, types);
strip_nul_fields!(ExtTechnician: external_id, identifier, first_name, last_name, email);
strip_nul_fields!(ExtTicket: external_id, summary, description, status, priority, board, ticket_type,
    company_external_id, contact_external_id, assignee_external_id, marker, notes);
strip_nul_fields!(ExtNote: external_id, body, author);

/// SHA-256 (hex) of a record's canonical JSON. Vendor timestamps are excluded
/// (`#[serde(skip)]`), so an unchanged record hashes the same whatever its stamp.
pub fn content_hash<T: Serialize>(record: &T) -> String {
    let json = serde_json::to_vec(record).unwrap_or_default();
    Sha256::digest(&json)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The vendor's own lists an admin picks from when writing company filters and
/// contact-type rules, as last read from the vendor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Vocabulary {
    pub contact_types: Vec<String>,
    pub company_types: Vec<String>,
    pub company_statuses: Vec<String>,
    /// The PSA's ticket reference data ("Sync PSA Data"), where the connector reads it.
    #[serde(default)]
    pub tickets: Option<TicketLists>,
    pub fetched_at: DateTime<Utc>,
}

/// A PSA's ticket reference data by name: boards (ConnectWise boards, Halo teams),
/// statuses, priorities and ticket types. An empty list is one the PSA does not have or
/// mspbridge does not read; names are not checked against it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TicketLists {
    pub boards: Vec<String>,
    pub statuses: Vec<String>,
    pub priorities: Vec<String>,
    pub types: Vec<String>,
    /// Halo's first-level ticket categories (`/api/Category?type_id=1`); empty elsewhere.
    #[serde(default)]
    pub categories: Vec<String>,
}

impl TicketLists {
    /// Sorted case-insensitively, duplicates dropped.
    pub fn tidy(mut self) -> Self {
        for l in [
            &mut self.boards,
            &mut self.statuses,
            &mut self.priorities,
            &mut self.types,
            &mut self.categories,
        ] {
            l.retain(|s| !s.trim().is_empty());
            l.sort_by_key(|s| s.to_lowercase());
            l.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
        }
        self
    }
}

impl Vocabulary {
    /// Checks the names an option uses against the vendor's lists (case-insensitively):
    /// `(field, message)` for the first unknown one.
    pub fn check(&self, options: &SyncOptions, provider: &str) -> Result<(), (String, String)> {
        fn find<'a>(
            known: &[String],
            names: impl Iterator<Item = &'a String>,
        ) -> Option<(usize, &'a String)> {
            names
                .enumerate()
                .find(|(_, n)| !known.iter().any(|k| k.eq_ignore_ascii_case(n.trim())))
        }
        let unknown = |what: &str, name: &str, known: &[String]| {
            format!(
                "'{name}' is not a {provider} {what} (known: {}); run Sync PSA Data on the integration's page if it was added recently",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )
        };
        if let Some((i, n)) = find(&self.company_types, options.exclude_company_types.iter()) {
            return Err((
                format!("options.exclude_company_types[{i}]"),
                unknown("company type", n, &self.company_types),
            ));
        }
        if let Some((i, n)) = find(
            &self.company_statuses,
            options.exclude_company_statuses.iter(),
        ) {
            return Err((
                format!("options.exclude_company_statuses[{i}]"),
                unknown("company status", n, &self.company_statuses),
            ));
        }
        if let Some((i, n)) = find(
            &self.contact_types,
            options.contact_type_rules.iter().map(|r| &r.contact_type),
        ) {
            return Err((
                format!("options.contact_type_rules[{i}].contact_type"),
                unknown("contact type", n, &self.contact_types),
            ));
        }
        let Some(t) = &self.tickets else {
            return Ok(());
        };
        // (field, its names, the list, what it is); an empty list is not checked.
        let d = &options.ticket_defaults;
        let named: [(&str, Vec<&String>, &[String], &str); 10] = [
            (
                "options.ticket_defaults.board",
                d.board.iter().collect(),
                &t.boards,
                "board",
            ),
            (
                "options.ticket_defaults.status",
                d.status.iter().collect(),
                &t.statuses,
                "ticket status",
            ),
            (
                "options.ticket_defaults.priority",
                d.priority.iter().collect(),
                &t.priorities,
                "priority",
            ),
            (
                "options.ticket_boards",
                options.ticket_boards.iter().collect(),
                &t.boards,
                "board",
            ),
            (
                "options.ticket_excluded_statuses",
                options.ticket_excluded_statuses.iter().collect(),
                &t.statuses,
                "ticket status",
            ),
            (
                "options.ticket_closed_statuses",
                options.ticket_closed_statuses.iter().collect(),
                &t.statuses,
                "ticket status",
            ),
            (
                "options.ticket_client_comment_status",
                options.ticket_client_comment_status.iter().collect(),
                &t.statuses,
                "ticket status",
            ),
            (
                "options.ticket_defaults.ticket_type",
                d.ticket_type.iter().collect(),
                &t.types,
                "ticket type",
            ),
            (
                "options.ticket_defaults.category",
                d.category.iter().collect(),
                &t.categories,
                "ticket category",
            ),
            (
                "options.ticket_stages",
                options.ticket_stages.iter().map(|r| &r.status).collect(),
                &t.statuses,
                "ticket status",
            ),
        ];
        for (field, names, known, what) in named {
            if known.is_empty() {
                continue;
            }
            if let Some((i, n)) = find(known, names.into_iter()) {
                let field = match field {
                    "options.ticket_stages" => format!("{field}[{i}].status"),
                    f if f.starts_with("options.ticket_defaults")
                        || f == "options.ticket_client_comment_status" =>
                    {
                        f.to_string()
                    }
                    f => format!("{f}[{i}]"),
                };
                return Err((field, unknown(what, n, known)));
            }
        }
        Ok(())
    }
}

/// One rule of the contact-type list: contacts of this vendor type get this role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ContactTypeRule {
    pub contact_type: String,
    pub role_id: RoleId,
}

/// Per-integration sync options (spec 2.2 v1 and 2.5.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct SyncOptions {
    /// Automatic sync on the interval below.
    pub enabled: bool,
    /// 5, 15 or 30 minutes.
    pub interval_minutes: u32,
    /// Import existing records on the first run; off means only records changed after connect.
    pub initial_import: bool,
    pub companies: bool,
    pub contacts: bool,
    pub technicians: bool,
    /// Create portal users for active contacts of imported companies.
    pub auto_import_contacts: bool,
    /// The integration default role (last link of the chain). Required when auto-import is on.
    pub default_role_id: Option<RoleId>,
    /// Role for primary contacts (third link); `None` skips this link.
    pub primary_contact_role_id: Option<RoleId>,
    /// Admin-ordered contact-type rules (second link).
    pub contact_type_rules: Vec<ContactTypeRule>,
    pub skip_inactive_companies: bool,
    /// A company the sync would create is linked instead to the one active portal company
    /// with the same normalised name (the run log says why, the link history records it,
    /// undoable). Off: such a company is not imported; it waits for an admin to link or
    /// import it in the company mapping. Default on.
    pub auto_link_by_name: bool,
    pub exclude_company_types: Vec<String>,
    pub exclude_company_statuses: Vec<String>,
    /// What a ticket created in the portal gets in the PSA (spec 2.20).
    pub ticket_defaults: TicketDefaults,
    /// Import tickets and their notes (PSA → portal).
    pub tickets: bool,
    /// Only tickets on these boards (ConnectWise), queues (Autotask) or teams (Halo); all
    /// when empty.
    pub ticket_boards: Vec<String>,
    /// Tickets in these statuses are not imported.
    pub ticket_excluded_statuses: Vec<String>,
    /// Where each PSA status sits on the five-stage resolution stepper; statuses not listed
    /// are placed by [`stage_of`]'s rules.
    pub ticket_stages: Vec<StageRule>,
    /// PSA statuses that count as closed, besides the PSA's own closed flag (spec 2.5
    /// "Closed Statuses").
    pub ticket_closed_statuses: Vec<String>,
    /// The status a ticket takes when a client comments on it (spec 2.5 "Client Comment
    /// Status", Halo's example "Updated"); `None` leaves the status alone.
    pub ticket_client_comment_status: Option<String>,
    /// RMM: read devices into staging (and import those of auto-sync types).
    pub devices: bool,
    /// RMM: read open monitoring alerts.
    pub alerts: bool,
}

/// The five-stage resolution stepper clients see on a ticket (spec 2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    New,
    Triaged,
    Working,
    Waiting,
    Resolved,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::New,
        Stage::Triaged,
        Stage::Working,
        Stage::Waiting,
        Stage::Resolved,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Stage::New => "New",
            Stage::Triaged => "Triaged",
            Stage::Working => "Working",
            Stage::Waiting => "Waiting",
            Stage::Resolved => "Resolved",
        }
    }
}

/// An admin's placement of one PSA status on the stepper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StageRule {
    /// The PSA's status name (compared without case).
    pub status: String,
    pub stage: Stage,
}

/// The stage of a ticket in `status`: a closed ticket is Resolved; else the integration's
/// rule for the status; else by the words PSAs use in their default status names
/// ("New", "Triage", "Waiting on Client", "With User", "On Hold", "Scheduled", "In
/// Progress", "Completed", …); anything else is Working.
pub fn stage_of(status: &str, closed: bool, rules: &[StageRule]) -> Stage {
    if closed {
        return Stage::Resolved;
    }
    if let Some(r) = rules.iter().find(|r| r.status.eq_ignore_ascii_case(status)) {
        return r.stage;
    }
    let s = status.to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| s.contains(w));
    if has(&["resolved", "complete", "closed", "cancel", "done"]) {
        Stage::Resolved
    } else if has(&[
        "wait",
        "with user",
        "with client",
        "with customer",
        "with supplier",
        "hold",
        "pending",
        "scheduled",
    ]) {
        Stage::Waiting
    } else if has(&["new", "open", "received", "unassigned"]) {
        Stage::New
    } else if has(&["triage", "acknowledg", "assigned", "review"]) {
        Stage::Triaged
    } else {
        Stage::Working
    }
}

/// The ticket defaults of spec 2.20, by the PSA's names: ConnectWise board (Autotask
/// queue, Halo team), status and priority for tickets created in the portal; Halo also
/// category, impact and urgency (a Halo tenant may require them to create a ticket).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct TicketDefaults {
    pub board: Option<String>,
    pub status: Option<String>,
    pub priority: Option<String>,
    /// The ticket type (ConnectWise: a type of the board; Halo: `/TicketType`; Autotask:
    /// the `ticketType` picklist). Syncro has none beyond its issue type, the board here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket_type: Option<String>,
    /// Halo only: the first-level category (`category_1`), as Halo names it ("Hardware>Laptop").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Halo only: impact level, 1 (highest) to 4 (Halo's `impact`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impact: Option<u8>,
    /// Halo only: urgency level, 1 (highest) to 4 (Halo's `urgency`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub urgency: Option<u8>,
}

impl TicketDefaults {
    /// The first set field `provider`'s tickets have no place for, as (JSON field, why):
    /// category, impact and urgency are Halo's; Syncro has no ticket type beyond its issue
    /// type (the board here).
    pub fn refused_by(&self, provider: ProviderKind) -> Option<(&'static str, String)> {
        let name = provider.descriptor().name;
        let halo_only = [
            ("category", self.category.is_some()),
            ("impact", self.impact.is_some()),
            ("urgency", self.urgency.is_some()),
        ];
        if provider != ProviderKind::HaloPsa
            && let Some((field, _)) = halo_only.iter().find(|(_, set)| *set)
        {
            return Some((
                field,
                format!("only Halo tickets take a {field}; {name} does not"),
            ));
        }
        if provider == ProviderKind::Syncro && self.ticket_type.is_some() {
            return Some((
                "ticket_type",
                "Syncro's only ticket type is its issue type: set it as the ticket defaults' issue type (board)".into(),
            ));
        }
        None
    }
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_minutes: 15,
            initial_import: true,
            companies: true,
            contacts: true,
            technicians: true,
            auto_import_contacts: false,
            default_role_id: None,
            primary_contact_role_id: None,
            contact_type_rules: vec![],
            skip_inactive_companies: true,
            auto_link_by_name: true,
            exclude_company_types: vec![],
            exclude_company_statuses: vec![],
            ticket_defaults: TicketDefaults::default(),
            tickets: false,
            ticket_boards: vec![],
            ticket_excluded_statuses: vec![],
            ticket_stages: vec![],
            ticket_closed_statuses: vec![],
            ticket_client_comment_status: None,
            devices: true,
            alerts: true,
        }
    }
}

impl SyncOptions {
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut errors = Vec::new();
        for (field, v) in [
            ("ticket_defaults.board", &self.ticket_defaults.board),
            ("ticket_defaults.status", &self.ticket_defaults.status),
            ("ticket_defaults.priority", &self.ticket_defaults.priority),
            (
                "ticket_defaults.ticket_type",
                &self.ticket_defaults.ticket_type,
            ),
            ("ticket_defaults.category", &self.ticket_defaults.category),
            (
                "ticket_client_comment_status",
                &self.ticket_client_comment_status,
            ),
        ] {
            if v.as_ref()
                .is_some_and(|v| v.trim().is_empty() || v.len() > 100)
            {
                errors.push(FieldError::new(
                    format!("options.{field}"),
                    "must be a name of 1 to 100 characters, or left out",
                ));
            }
        }
        for (field, v) in [
            ("impact", self.ticket_defaults.impact),
            ("urgency", self.ticket_defaults.urgency),
        ] {
            if v.is_some_and(|v| !(1..=4).contains(&v)) {
                errors.push(FieldError::new(
                    format!("options.ticket_defaults.{field}"),
                    "must be a Halo level from 1 (highest) to 4, or left out",
                ));
            }
        }
        if let Some(s) = &self.ticket_client_comment_status
            && self.is_closed_status(s)
        {
            errors.push(FieldError::new(
                "options.ticket_client_comment_status",
                "is one of the closed statuses: a client's comment would close the ticket",
            ));
        }
        if ![5, 15, 30].contains(&self.interval_minutes) {
            errors.push(FieldError::new(
                "options.interval_minutes",
                "must be 5, 15 or 30 minutes",
            ));
        }
        if self.auto_import_contacts && self.default_role_id.is_none() {
            errors.push(FieldError::new(
                "options.default_role_id",
                "a default role for imported contacts is required when contact auto-import is on",
            ));
        }
        if self.auto_import_contacts && !self.contacts {
            errors.push(FieldError::new(
                "options.contacts",
                "contact auto-import needs contact sync switched on",
            ));
        }
        for (field, list) in [
            ("ticket_boards", &self.ticket_boards),
            ("ticket_excluded_statuses", &self.ticket_excluded_statuses),
            ("ticket_closed_statuses", &self.ticket_closed_statuses),
        ] {
            for (i, v) in list.iter().enumerate() {
                if v.trim().is_empty() || v.len() > 100 {
                    errors.push(FieldError::new(
                        format!("options.{field}[{i}]"),
                        "must be a name of 1 to 100 characters",
                    ));
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, r) in self.ticket_stages.iter().enumerate() {
            if r.status.trim().is_empty() || r.status.len() > 100 {
                errors.push(FieldError::new(
                    format!("options.ticket_stages[{i}].status"),
                    "must be a status name of 1 to 100 characters",
                ));
            } else if !seen.insert(r.status.to_lowercase()) {
                errors.push(FieldError::new(
                    format!("options.ticket_stages[{i}].status"),
                    "this status is placed twice",
                ));
            }
        }
        for (i, r) in self.contact_type_rules.iter().enumerate() {
            if r.contact_type.trim().is_empty() {
                errors.push(FieldError::new(
                    format!("options.contact_type_rules[{i}].contact_type"),
                    "must not be empty",
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationError(errors))
        }
    }

    /// Whether `status` is one of the admin's Closed Statuses (compared without case).
    pub fn is_closed_status(&self, status: &str) -> bool {
        self.ticket_closed_statuses
            .iter()
            .any(|c| c.trim().eq_ignore_ascii_case(status.trim()))
    }

    /// Whether a ticket in `status` is closed: the PSA says so, or the admin counts the
    /// status as closed.
    pub fn ticket_closed(&self, status: &str, psa_closed: bool) -> bool {
        psa_closed || self.is_closed_status(status)
    }

    pub fn syncs(&self, r: RecordType) -> bool {
        match r {
            RecordType::Companies => self.companies,
            RecordType::Contacts => self.contacts,
            RecordType::Technicians => self.technicians,
            RecordType::Tickets => self.tickets,
            RecordType::Devices => self.devices,
            RecordType::Alerts => self.alerts,
            // Billing records follow their customers.
            RecordType::Invoices | RecordType::Subscriptions | RecordType::Payments => {
                self.companies
            }
        }
    }

    /// Why a ticket is out of this integration's ticket scope, or `None` when it is synced.
    pub fn ticket_excluded(&self, t: &ExtTicket) -> Option<String> {
        if !self.ticket_boards.is_empty() {
            let board = t.board.as_deref().unwrap_or_default();
            if !self
                .ticket_boards
                .iter()
                .any(|b| b.eq_ignore_ascii_case(board))
            {
                return Some(format!("board/queue/team '{board}' is not synced"));
            }
        }
        self.ticket_excluded_statuses
            .iter()
            .find(|s| s.eq_ignore_ascii_case(&t.status))
            .map(|s| format!("status '{s}' is excluded"))
    }

    /// Why a company is out of scope, or `None` when it is synced.
    pub fn company_excluded(&self, c: &ExtCompany) -> Option<String> {
        if self.skip_inactive_companies && !c.active {
            return Some("company is inactive (Skip Inactive Companies is on)".into());
        }
        if let Some(t) = c.types.iter().find(|t| {
            self.exclude_company_types
                .iter()
                .any(|x| x.eq_ignore_ascii_case(t))
        }) {
            return Some(format!("company type '{t}' is excluded"));
        }
        if let Some(s) = c.status.as_ref().filter(|s| {
            self.exclude_company_statuses
                .iter()
                .any(|x| x.eq_ignore_ascii_case(s))
        }) {
            return Some(format!("company status '{s}' is excluded"));
        }
        None
    }
}

/// Which link of the fallback chain chose a contact's role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", tag = "source")]
pub enum RoleSource {
    /// (1) Company Defaults → Default Import Role.
    CompanyOverride,
    /// (2) The first rule, in the admin's order, matching one of the contact's types.
    ContactTypeRule {
        contact_type: String,
        position: usize,
    },
    /// (3) The contact is the company's primary contact.
    PrimaryContact,
    /// (4) The integration's default role.
    IntegrationDefault,
}

impl RoleSource {
    /// Plain words for the UI and logs, e.g. "contact type 'Owner' (rule 1)".
    pub fn explain(&self, provider: &str) -> String {
        match self {
            RoleSource::CompanyOverride => "company default import role (Company Defaults)".into(),
            RoleSource::ContactTypeRule {
                contact_type,
                position,
            } => {
                format!(
                    "{provider} contact type '{contact_type}' (rule {})",
                    position + 1
                )
            }
            RoleSource::PrimaryContact => format!("primary contact in {provider}"),
            RoleSource::IntegrationDefault => format!("{provider} integration default"),
        }
    }
}

/// The role fallback chain of spec 2.11 [v1], highest first. Returns `None` only when
/// no default role is configured (auto-import then refuses to run).
pub fn choose_role(
    company_override: Option<RoleId>,
    contact_types: &[String],
    is_primary: bool,
    options: &SyncOptions,
) -> Option<(RoleId, RoleSource)> {
    if let Some(r) = company_override {
        return Some((r, RoleSource::CompanyOverride));
    }
    for (position, rule) in options.contact_type_rules.iter().enumerate() {
        if contact_types
            .iter()
            .any(|t| t.trim().eq_ignore_ascii_case(rule.contact_type.trim()))
        {
            return Some((
                rule.role_id,
                RoleSource::ContactTypeRule {
                    contact_type: rule.contact_type.clone(),
                    position,
                },
            ));
        }
    }
    if is_primary && let Some(r) = options.primary_contact_role_id {
        return Some((r, RoleSource::PrimaryContact));
    }
    options
        .default_role_id
        .map(|r| (r, RoleSource::IntegrationDefault))
}

/// Per record type counts of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Counts {
    pub seen: u64,
    pub created: u64,
    /// New to this integration and linked to an existing portal company of the same
    /// name instead of creating another.
    #[serde(default)]
    pub linked: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub deactivated: u64,
    pub skipped: u64,
    pub failed: u64,
    /// Records held for the next run because a record they belong to (a contact's
    /// company, a ticket's company, contact or assignee) was not synced yet while its own
    /// pass had not completed. Skipped ones are also counted in `skipped`; a run with any
    /// is partial and the next run reads them again.
    #[serde(default)]
    pub deferred: u64,
}

impl Counts {
    /// Every record seen was accounted for exactly once (deactivations are extra: they
    /// come from records not seen).
    pub fn add_up(&self) -> bool {
        self.created + self.linked + self.updated + self.unchanged + self.skipped + self.failed
            == self.seen
    }

    pub fn merge(&mut self, o: &Counts) {
        self.seen += o.seen;
        self.created += o.created;
        self.linked += o.linked;
        self.updated += o.updated;
        self.unchanged += o.unchanged;
        self.deactivated += o.deactivated;
        self.skipped += o.skipped;
        self.failed += o.failed;
        self.deferred += o.deferred;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RunResult {
    Running,
    Success,
    /// Some page or record failed, or counts do not add up.
    Partial,
    Failed,
}

impl RunResult {
    pub fn as_str(self) -> &'static str {
        match self {
            RunResult::Running => "running",
            RunResult::Success => "success",
            RunResult::Partial => "partial",
            RunResult::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Running, Self::Success, Self::Partial, Self::Failed]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Schedule,
    Manual,
    Initial,
    /// Quick Sync (spec 2.7): only the tickets pass, from its watermark (recent changes);
    /// the regular schedule keeps its time. Also what a verified webhook queues.
    Quick,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
            Trigger::Initial => "initial",
            Trigger::Quick => "quick",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Schedule, Self::Manual, Self::Initial, Self::Quick]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum EventLevel {
    Info,
    Warning,
    Error,
}

impl EventLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            EventLevel::Info => "info",
            EventLevel::Warning => "warning",
            EventLevel::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Info, Self::Warning, Self::Error]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_statuses_close_and_cannot_be_the_client_comment_status() {
        let o = SyncOptions {
            ticket_closed_statuses: vec![" Resolved ".into(), "Cancelled".into()],
            ticket_client_comment_status: Some("Updated".into()),
            ..SyncOptions::default()
        };
        assert!(o.validate().is_ok());
        assert!(o.ticket_closed("resolved", false));
        assert!(
            o.ticket_closed("In Progress", true),
            "the PSA's flag counts"
        );
        assert!(!o.ticket_closed("In Progress", false));
        assert!(
            !o.ticket_closed("Resolved later", false),
            "whole names only"
        );
        let bad = SyncOptions {
            ticket_client_comment_status: Some("cancelled".into()),
            ..o.clone()
        };
        let e = bad.validate().unwrap_err();
        assert_eq!(e.0[0].field, "options.ticket_client_comment_status");
        let bad = SyncOptions {
            ticket_closed_statuses: vec![" ".into()],
            ticket_defaults: TicketDefaults {
                impact: Some(5),
                urgency: Some(4),
                ..Default::default()
            },
            ..o
        };
        let fields: Vec<String> = bad
            .validate()
            .unwrap_err()
            .0
            .into_iter()
            .map(|f| f.field)
            .collect();
        assert_eq!(
            fields,
            vec![
                "options.ticket_defaults.impact".to_string(),
                "options.ticket_closed_statuses[0]".to_string()
            ]
        );
    }

    #[test]
    fn psa_statuses_land_on_the_stepper_and_admin_rules_win() {
        let cases = [
            // ConnectWise defaults
            ("New", Stage::New),
            ("In Progress", Stage::Working),
            ("Waiting on Client", Stage::Waiting),
            ("Completed", Stage::Resolved),
            // Halo defaults
            ("Action Required", Stage::Working),
            ("With User", Stage::Waiting),
            ("With Supplier", Stage::Waiting),
            // Autotask and Syncro defaults
            ("Waiting Customer", Stage::Waiting),
            // The client answered: someone has to act.
            ("Customer Note Added", Stage::Working),
            ("Scheduled", Stage::Waiting),
            ("Triage", Stage::Triaged),
            ("Assigned", Stage::Triaged),
            ("Escalated", Stage::Working),
        ];
        for (status, stage) in cases {
            assert_eq!(stage_of(status, false, &[]), stage, "{status}");
        }
        assert_eq!(stage_of("In Progress", true, &[]), Stage::Resolved);
        let rules = [StageRule {
            status: "action required".into(),
            stage: Stage::Triaged,
        }];
        assert_eq!(stage_of("Action Required", false, &rules), Stage::Triaged);
        assert_eq!(stage_of("Action Required", true, &rules), Stage::Resolved);
        let mut o = SyncOptions {
            ticket_stages: vec![rules[0].clone(), rules[0].clone()],
            ..SyncOptions::default()
        };
        let e = o.validate().unwrap_err();
        assert_eq!(e.0[0].field, "options.ticket_stages[1].status");
        o.ticket_stages[1].status = " ".into();
        assert_eq!(
            o.validate().unwrap_err().0[0].field,
            "options.ticket_stages[1].status"
        );
        let parsed: SyncOptions =
            serde_json::from_str(r#"{"ticket_stages":[{"status":"On Hold","stage":"waiting"}]}"#)
                .unwrap();
        assert_eq!(parsed.ticket_stages[0].stage, Stage::Waiting);
        assert!(
            serde_json::from_str::<SyncOptions>(
                r#"{"ticket_stages":[{"status":"x","stage":"later"}]}"#
            )
            .is_err()
        );
    }

    const ADMIN: RoleId = RoleId(1);
    const STANDARD: RoleId = RoleId(2);
    const VIEWER: RoleId = RoleId(3);
    const BILLING: RoleId = RoleId(4);

    fn opts() -> SyncOptions {
        SyncOptions {
            auto_import_contacts: true,
            default_role_id: Some(VIEWER),
            primary_contact_role_id: Some(ADMIN),
            contact_type_rules: vec![
                ContactTypeRule {
                    contact_type: "Billing".into(),
                    role_id: BILLING,
                },
                ContactTypeRule {
                    contact_type: "IT Contact".into(),
                    role_id: STANDARD,
                },
            ],
            ..SyncOptions::default()
        }
    }

    fn types(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn company_override_beats_everything() {
        let (r, s) = choose_role(Some(STANDARD), &types(&["Billing"]), true, &opts()).unwrap();
        assert_eq!((r, s), (STANDARD, RoleSource::CompanyOverride));
    }

    #[test]
    fn contact_type_rule_beats_primary() {
        let (r, s) = choose_role(None, &types(&["it contact"]), true, &opts()).unwrap();
        assert_eq!(r, STANDARD);
        assert_eq!(
            s,
            RoleSource::ContactTypeRule {
                contact_type: "IT Contact".into(),
                position: 1
            }
        );
    }

    #[test]
    fn ties_between_contact_types_go_to_the_first_rule_in_admin_order() {
        // The contact lists IT Contact first, but the admin ordered Billing first.
        let (r, s) = choose_role(None, &types(&["IT Contact", "Billing"]), false, &opts()).unwrap();
        assert_eq!(r, BILLING);
        assert_eq!(
            s,
            RoleSource::ContactTypeRule {
                contact_type: "Billing".into(),
                position: 0
            }
        );
        // Reordering the rules flips the winner.
        let mut o = opts();
        o.contact_type_rules.reverse();
        assert_eq!(
            choose_role(None, &types(&["IT Contact", "Billing"]), false, &o)
                .unwrap()
                .0,
            STANDARD
        );
    }

    #[test]
    fn primary_contact_then_default() {
        assert_eq!(
            choose_role(None, &types(&["Owner"]), true, &opts()).unwrap(),
            (ADMIN, RoleSource::PrimaryContact)
        );
        assert_eq!(
            choose_role(None, &types(&["Owner"]), false, &opts()).unwrap(),
            (VIEWER, RoleSource::IntegrationDefault)
        );
        let mut o = opts();
        o.primary_contact_role_id = None;
        assert_eq!(
            choose_role(None, &[], true, &o).unwrap(),
            (VIEWER, RoleSource::IntegrationDefault),
            "no primary rule: default"
        );
        o.default_role_id = None;
        assert_eq!(choose_role(None, &[], false, &o), None);
    }

    #[test]
    fn explanations_name_the_link() {
        assert_eq!(
            RoleSource::IntegrationDefault.explain("ConnectWise"),
            "ConnectWise integration default"
        );
        assert_eq!(
            RoleSource::ContactTypeRule {
                contact_type: "Owner".into(),
                position: 0
            }
            .explain("ConnectWise"),
            "ConnectWise contact type 'Owner' (rule 1)"
        );
    }

    #[test]
    fn options_validate() {
        assert!(SyncOptions::default().validate().is_ok());
        let bad = SyncOptions {
            interval_minutes: 7,
            auto_import_contacts: true,
            ..SyncOptions::default()
        };
        let e = bad.validate().unwrap_err();
        let fields: Vec<_> = e.0.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            ["options.interval_minutes", "options.default_role_id"]
        );
        let parsed: Result<SyncOptions, _> = serde_json::from_str(r#"{"interval":5}"#);
        assert!(parsed.is_err(), "unknown option names are refused");
    }

    #[test]
    fn company_filters() {
        let c = ExtCompany {
            external_id: "1".into(),
            name: "A".into(),
            identifier: None,
            active: true,
            deleted: false,
            status: Some("Credit Hold".into()),
            types: vec!["Vendor".into()],
            primary_contact_id: None,
            domains: vec![],
            updated_at: None,
        };
        let mut o = SyncOptions::default();
        assert_eq!(o.company_excluded(&c), None);
        o.exclude_company_types = vec!["vendor".into()];
        assert!(o.company_excluded(&c).unwrap().contains("Vendor"));
        o.exclude_company_types.clear();
        o.exclude_company_statuses = vec!["Credit Hold".into()];
        assert!(o.company_excluded(&c).unwrap().contains("Credit Hold"));
        let inactive = ExtCompany { active: false, ..c };
        assert!(SyncOptions::default().company_excluded(&inactive).is_some());
    }

    #[test]
    fn content_hash_ignores_timestamps_but_not_content() {
        let a = ExtTechnician {
            external_id: "1".into(),
            identifier: "ann".into(),
            first_name: "Ann".into(),
            last_name: "Lee".into(),
            email: Some("ann@msp.example".into()),
            active: true,
            updated_at: None,
        };
        let b = ExtTechnician {
            updated_at: Some(Utc::now()),
            ..a.clone()
        };
        assert_eq!(content_hash(&a), content_hash(&b));
        let c = ExtTechnician {
            last_name: "Li".into(),
            ..a.clone()
        };
        assert_ne!(content_hash(&a), content_hash(&c));
    }

    #[test]
    fn counts_add_up() {
        let c = Counts {
            seen: 5,
            created: 2,
            updated: 1,
            unchanged: 1,
            skipped: 1,
            ..Counts::default()
        };
        assert!(c.add_up());
        assert!(
            !Counts {
                seen: 5,
                created: 1,
                ..Counts::default()
            }
            .add_up()
        );
    }

    #[test]
    fn vendor_names_are_checked_case_insensitively_and_the_field_is_named() {
        let v = Vocabulary {
            contact_types: vec!["IT Contact".into(), "Owner".into()],
            company_types: vec!["Client".into()],
            company_statuses: vec![],
            tickets: None,
            fetched_at: Utc::now(),
        };
        let rule = |t: &str| ContactTypeRule {
            contact_type: t.into(),
            role_id: RoleId(1),
        };
        let ok = SyncOptions {
            contact_type_rules: vec![rule("it contact"), rule(" Owner ")],
            exclude_company_types: vec!["CLIENT".into()],
            ..SyncOptions::default()
        };
        assert_eq!(v.check(&ok, "ConnectWise Manage"), Ok(()));
        let bad = SyncOptions {
            contact_type_rules: vec![rule("Owner"), rule("Owners")],
            ..SyncOptions::default()
        };
        let (field, msg) = v.check(&bad, "ConnectWise Manage").unwrap_err();
        assert_eq!(field, "options.contact_type_rules[1].contact_type");
        assert!(
            msg.contains(
                "'Owners' is not a ConnectWise Manage contact type (known: IT Contact, Owner)"
            ),
            "{msg}"
        );
        let status = SyncOptions {
            exclude_company_statuses: vec!["Active".into()],
            ..SyncOptions::default()
        };
        let (field, msg) = v.check(&status, "ConnectWise Manage").unwrap_err();
        assert_eq!(field, "options.exclude_company_statuses[0]");
        assert!(msg.contains("(known: none)"), "{msg}");

        // Ticket names are checked against the PSA's ticket lists, where it has them.
        let v = Vocabulary {
            tickets: Some(
                TicketLists {
                    boards: vec!["Service Desk".into(), "Projects".into(), "projects".into()],
                    statuses: vec!["New".into(), "Waiting".into(), "Closed".into()],
                    priorities: vec![],
                    types: vec![],
                    categories: vec![],
                }
                .tidy(),
            ),
            ..v
        };
        assert_eq!(
            v.tickets.as_ref().unwrap().boards,
            vec!["Projects".to_string(), "Service Desk".to_string()]
        );
        let ok = SyncOptions {
            ticket_defaults: TicketDefaults {
                board: Some("service desk".into()),
                status: Some("New".into()),
                priority: Some("Anything: no priorities read".into()),
                ..Default::default()
            },
            ticket_boards: vec!["Projects".into()],
            ticket_excluded_statuses: vec!["closed".into()],
            ticket_stages: vec![StageRule {
                status: "Waiting".into(),
                stage: Stage::Waiting,
            }],
            ..SyncOptions::default()
        };
        assert_eq!(v.check(&ok, "Halo PSA"), Ok(()));
        let cases: [(SyncOptions, &str, &str); 4] = [
            (
                SyncOptions {
                    ticket_defaults: TicketDefaults {
                        board: Some("Helpdesk".into()),
                        ..TicketDefaults::default()
                    },
                    ..ok.clone()
                },
                "options.ticket_defaults.board",
                "'Helpdesk' is not a Halo PSA board (known: Projects, Service Desk)",
            ),
            (
                SyncOptions {
                    ticket_boards: vec!["Projects".into(), "Sales".into()],
                    ..ok.clone()
                },
                "options.ticket_boards[1]",
                "'Sales' is not a Halo PSA board",
            ),
            (
                SyncOptions {
                    ticket_excluded_statuses: vec!["Done".into()],
                    ..ok.clone()
                },
                "options.ticket_excluded_statuses[0]",
                "'Done' is not a Halo PSA ticket status",
            ),
            (
                SyncOptions {
                    ticket_stages: vec![StageRule {
                        status: "Parked".into(),
                        stage: Stage::Waiting,
                    }],
                    ..ok.clone()
                },
                "options.ticket_stages[0].status",
                "'Parked' is not a Halo PSA ticket status",
            ),
        ];
        for (options, field, message) in cases {
            let (f, m) = v.check(&options, "Halo PSA").unwrap_err();
            assert_eq!(f, field);
            assert!(m.contains(message), "{m}");
        }
    }
}
