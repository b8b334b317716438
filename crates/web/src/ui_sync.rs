//! UI for syncing: the sync section of an integration page (options, Sync now,
//! reactivation, recent runs), a run's log with filters, and the portal pages that show
//! what a sync produced (companies with their users and role reasons, technicians).

use std::collections::{BTreeMap, HashMap};

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use mspbridge_domain::auth::Permission;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::model::LinkedRecord;
use mspbridge_domain::sync::{ContactTypeRule, Counts, RecordType, RunResult, SyncOptions};
use mspbridge_domain::{CompanyId, IntegrationId, RoleId, StaffUserId};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::sync_api::{EventFilter, parse_filter, validate_options};
use crate::ui::{Shell, UiCaller, error_page, render, script_json, shell};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/settings/integrations/{id}/runs/{run_id}", get(run_page))
        .route("/companies", get(companies_page))
        .route("/companies/{id}", get(company_page))
        .route(
            "/companies/{id}/defaults",
            axum::routing::post(save_defaults),
        )
        .route(
            "/companies/{id}/delete",
            get(delete_confirm_page).post(delete_company_form),
        )
        .route(
            "/companies/{id}/{state}",
            axum::routing::post(company_active_form),
        )
        .route("/companies/blocked", get(blocked_page))
        .route(
            "/companies/blocked/{integration}/{external_id}/unblock",
            axum::routing::post(unblock_form),
        )
        .route("/technicians", get(technicians_page))
        .route("/technicians/{id}", post(technician_form))
        .route("/settings/integrations/companies", get(mapping_page))
        .route("/settings/integrations/companies/history", get(audit_page))
        .route(
            "/settings/integrations/companies/batches/{batch}/undo",
            axum::routing::post(undo_form),
        )
}

#[derive(Template)]
#[template(path = "mapping.html")]
struct MappingPage {
    shell: Shell,
    columns: Vec<crate::mapping_api::ColumnView>,
    columns_json: String,
    csrf_json: String,
    can_write: bool,
}

/// Settings → Integrations → Companies: the mapping grid (rendered by its script from
/// `/api/v1/company-mapping`).
async fn mapping_page(State(state): State<AppState>, UiCaller(c): UiCaller) -> Response {
    let page = async {
        c.require(Permission::Read)?;
        let columns = crate::mapping_api::columns(&state, &c).await?;
        Ok::<_, ApiError>(MappingPage {
            shell: shell(&state, &c).await?,
            columns_json: script_json(&columns),
            csrf_json: script_json(&c.csrf_token.clone().unwrap_or_default()),
            can_write: c.role.allows(Permission::Write),
            columns,
        })
    };
    match page.await {
        Ok(p) => render(p, StatusCode::OK),
        Err(e) => error_page(e),
    }
}

pub struct SyncView {
    pub enabled: bool,
    pub interval: u32,
    pub initial_import: bool,
    pub companies: bool,
    pub contacts: bool,
    pub technicians: bool,
    pub auto_import: bool,
    pub skip_inactive: bool,
    pub auto_link_by_name: bool,
    pub exclude_types: String,
    pub exclude_statuses: String,
    pub rules: String,
    /// Ticket defaults (board, status, priority names; empty when not set).
    pub ticket_board: String,
    pub ticket_status: String,
    pub ticket_priority: String,
    /// Ticket type default (not Syncro's: its issue type is the board).
    pub ticket_type: String,
    pub has_ticket_types: bool,
    /// Halo only: category, impact and urgency defaults.
    pub is_halo: bool,
    pub ticket_category: String,
    pub ticket_impact: String,
    pub ticket_urgency: String,
    /// Closed Statuses (comma separated) and the Client Comment Status.
    pub ticket_closed_statuses: String,
    pub ticket_client_comment_status: String,
    /// Ticket import (PSA → portal) and its scope.
    pub tickets: bool,
    pub imports_tickets: bool,
    pub ticket_boards: String,
    pub ticket_excluded_statuses: String,
    /// "Status = Stage" lines for the resolution stepper.
    pub ticket_stages: String,
    /// What this PSA calls the board: Board, Team, Queue, Issue type.
    pub board_label: &'static str,
    /// Where the admin points the PSA's webhook by hand (Syncro, whose URL carries the
    /// integration's secret token); shown to managers only.
    pub manual_webhook: Option<String>,
    pub primary_role: Option<RoleId>,
    pub default_role: Option<RoleId>,
    pub next_run: Option<String>,
    pub paused: Option<String>,
    /// The vendor's lists, to show beside the fields that name them.
    pub vocabulary: Option<VocabularyView>,
    /// The same lists as choices (select / multi-select); empty: typed as text.
    pub lists: ChoiceLists,
    /// A refused save's errors by form field, in words.
    pub errors: BTreeMap<String, String>,
    /// An RMM (Datto RMM, ConnectWise Asio): sites, devices and alerts instead of the PSA's
    /// records; its device and alert counts.
    pub rmm: Option<mspbridge_store::rmm::RmmCounts>,
    pub devices: bool,
    pub alerts: bool,
}

impl SyncView {
    /// The record types a sync reads, in words ("Companies, Contacts, Technicians"; an
    /// RMM's "Sites, Devices, Alerts").
    pub fn record_summary(&self) -> String {
        let picked: Vec<&str> = if self.rmm.is_some() {
            [
                (true, "Sites"),
                (self.devices, "Devices"),
                (self.alerts, "Alerts"),
            ]
            .into_iter()
            .filter_map(|(on, n)| on.then_some(n))
            .collect()
        } else {
            [
                (self.companies, "Companies"),
                (self.contacts, "Contacts"),
                (self.technicians, "Technicians"),
                (self.tickets, "Tickets"),
            ]
            .into_iter()
            .filter_map(|(on, n)| on.then_some(n))
            .collect()
        };
        if picked.is_empty() {
            "none".to_string()
        } else {
            picked.join(", ")
        }
    }
}

/// The vendor vocabulary the integration stored, as the Options form's choices.
#[derive(Default)]
pub struct ChoiceLists {
    pub company_types: Vec<String>,
    pub company_statuses: Vec<String>,
    pub boards: Vec<String>,
    pub statuses: Vec<String>,
    pub priorities: Vec<String>,
    pub types: Vec<String>,
    pub categories: Vec<String>,
}

/// The names a comma-separated field holds.
fn names(s: &str) -> Vec<String> {
    s.split(',')
        .map(|x| x.trim().to_string())
        .filter(|x| !x.is_empty())
        .collect()
}

impl SyncView {
    /// Whether `name` is among the comma-separated `value` (a multi-select's selection).
    pub fn has(&self, value: &str, name: &str) -> bool {
        names(value).iter().any(|v| v == name)
    }

    /// `value`'s names the PSA's `list` lacks (kept as choices so a save keeps them).
    pub fn extra(&self, value: &str, list: &[String]) -> Vec<String> {
        names(value)
            .into_iter()
            .filter(|v| !list.contains(v))
            .collect()
    }

    /// A refused save shows what the admin entered, not what is stored.
    pub fn keep_input(&mut self, form: &[(String, String)]) {
        let all = |k: &str| {
            form.iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let on = |k: &str| form.iter().any(|(n, _)| n == k);
        self.enabled = on("enabled");
        if let Ok(m) = all("interval_minutes").parse() {
            self.interval = m;
        }
        self.initial_import = on("initial_import");
        self.companies = on("companies");
        self.contacts = on("contacts");
        self.technicians = on("technicians");
        self.tickets = on("tickets");
        self.skip_inactive = on("skip_inactive_companies");
        self.auto_link_by_name = on("auto_link_by_name");
        self.auto_import = on("auto_import_contacts");
        self.exclude_types = all("exclude_company_types");
        self.exclude_statuses = all("exclude_company_statuses");
        self.rules = form
            .iter()
            .find(|(n, _)| n == "contact_type_rules")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        self.ticket_stages = form
            .iter()
            .find(|(n, _)| n == "ticket_stages")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        self.ticket_board = all("ticket_board");
        self.ticket_status = all("ticket_status");
        self.ticket_priority = all("ticket_priority");
        self.ticket_type = all("ticket_type");
        self.ticket_category = all("ticket_category");
        self.ticket_impact = all("ticket_impact");
        self.ticket_urgency = all("ticket_urgency");
        self.ticket_closed_statuses = all("ticket_closed_statuses");
        self.ticket_client_comment_status = all("ticket_client_comment_status");
        self.ticket_boards = all("ticket_boards");
        self.ticket_excluded_statuses = all("ticket_excluded_statuses");
        self.primary_role = all("primary_contact_role_id").parse().ok().map(RoleId);
        self.default_role = all("default_role_id").parse().ok().map(RoleId);
    }
}

/// The Options form field an error's path names (`options.ticket_defaults.board` →
/// `ticket_board`).
pub fn form_field(path: &str) -> String {
    let p = path.strip_prefix("options.").unwrap_or(path);
    let p = p.split('[').next().unwrap_or(p);
    match p.strip_prefix("ticket_defaults.") {
        Some("ticket_type") => "ticket_type".into(),
        Some(rest) => format!("ticket_{}", rest.split('.').next().unwrap_or(rest)),
        None => p.split('.').next().unwrap_or(p).to_string(),
    }
}

pub struct VocabularyView {
    pub contact_types: String,
    pub company_types: String,
    pub company_statuses: String,
    /// The PSA's ticket lists, where read ("Sync PSA Data"); `None` for an empty list.
    pub ticket_boards: Option<String>,
    pub ticket_statuses: Option<String>,
    pub ticket_priorities: Option<String>,
    pub ticket_categories: Option<String>,
    pub ticket_types: Option<String>,
    pub read_at: String,
}

pub struct RunLine {
    pub id: i64,
    pub started: String,
    pub trigger: &'static str,
    pub result: &'static str,
    pub class: &'static str,
    pub companies: String,
    pub contacts: String,
    pub technicians: String,
    pub tickets: String,
    pub devices: String,
    pub alerts: String,
    pub requests: i64,
}

fn result_class(r: RunResult) -> &'static str {
    match r {
        RunResult::Success => "r-granted",
        RunResult::Partial | RunResult::Running => "r-unknown",
        RunResult::Failed => "r-denied",
    }
}

fn summary(c: Option<&Counts>) -> String {
    match c {
        None => "—".into(),
        Some(c) => {
            let linked = if c.linked > 0 {
                format!(" link {}", c.linked)
            } else {
                String::new()
            };
            let deferred = if c.deferred > 0 {
                format!(" wait {}", c.deferred)
            } else {
                String::new()
            };
            format!(
                "+{}{linked} ~{} ={} −{} skip {} fail {}{deferred}",
                c.created, c.updated, c.unchanged, c.deactivated, c.skipped, c.failed
            )
        }
    }
}

fn ts(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

pub async fn sync_parts(
    state: &AppState,
    c: &Caller,
    id: IntegrationId,
) -> Result<(SyncView, Vec<RunLine>, Vec<(RoleId, String)>), ApiError> {
    let o = state.store.sync_options(c.tenant_id, id).await?;
    let integration_provider = state.store.get_integration(c.tenant_id, id).await?.provider;
    let schedule = state.store.schedule(c.tenant_id, id).await?;
    let roles: Vec<(RoleId, String)> = state
        .store
        .list_roles(c.tenant_id)
        .await?
        .into_iter()
        .map(|r| (r.id, r.name))
        .collect();
    let role_name = |id: RoleId| {
        roles
            .iter()
            .find(|r| r.0 == id)
            .map(|r| r.1.clone())
            .unwrap_or_else(|| format!("role {id}"))
    };
    let stored_vocabulary = state.store.vocabulary(c.tenant_id, id).await?;
    let rmm = if integration_provider.descriptor().category
        == mspbridge_domain::catalogue::Category::Rmm
    {
        Some(state.store.rmm_counts(c.tenant_id, id).await?)
    } else {
        None
    };
    let view = SyncView {
        rmm,
        devices: o.devices,
        alerts: o.alerts,
        enabled: o.enabled && schedule.is_some(),
        interval: o.interval_minutes,
        initial_import: o.initial_import,
        companies: o.companies,
        contacts: o.contacts,
        technicians: o.technicians,
        auto_import: o.auto_import_contacts,
        skip_inactive: o.skip_inactive_companies,
        auto_link_by_name: o.auto_link_by_name,
        exclude_types: o.exclude_company_types.join(", "),
        exclude_statuses: o.exclude_company_statuses.join(", "),
        rules: o
            .contact_type_rules
            .iter()
            .map(|r| format!("{} = {}", r.contact_type, role_name(r.role_id)))
            .collect::<Vec<_>>()
            .join("\n"),
        ticket_board: o.ticket_defaults.board.clone().unwrap_or_default(),
        ticket_status: o.ticket_defaults.status.clone().unwrap_or_default(),
        ticket_priority: o.ticket_defaults.priority.clone().unwrap_or_default(),
        ticket_type: o.ticket_defaults.ticket_type.clone().unwrap_or_default(),
        has_ticket_types: integration_provider != ProviderKind::Syncro,
        is_halo: integration_provider == ProviderKind::HaloPsa,
        ticket_category: o.ticket_defaults.category.clone().unwrap_or_default(),
        ticket_impact: o
            .ticket_defaults
            .impact
            .map(|v| v.to_string())
            .unwrap_or_default(),
        ticket_urgency: o
            .ticket_defaults
            .urgency
            .map(|v| v.to_string())
            .unwrap_or_default(),
        ticket_closed_statuses: o.ticket_closed_statuses.join(", "),
        ticket_client_comment_status: o.ticket_client_comment_status.clone().unwrap_or_default(),
        tickets: o.tickets,
        imports_tickets: state.providers.imports_tickets(integration_provider),
        ticket_boards: o.ticket_boards.join(", "),
        ticket_excluded_statuses: o.ticket_excluded_statuses.join(", "),
        ticket_stages: o
            .ticket_stages
            .iter()
            .map(|r| format!("{} = {}", r.status, r.stage.label()))
            .collect::<Vec<_>>()
            .join("\n"),
        board_label: match integration_provider {
            ProviderKind::HaloPsa => "Team",
            ProviderKind::Autotask => "Queue",
            ProviderKind::Syncro => "Issue type",
            _ => "Board",
        },
        manual_webhook: (integration_provider == ProviderKind::Syncro
            && o.tickets
            && c.require(Permission::Manage).is_ok())
        .then(|| crate::webhooks::url(state, integration_provider, c.tenant_id.0, id.0))
        .flatten(),
        primary_role: o.primary_contact_role_id,
        default_role: o.default_role_id,
        next_run: schedule.as_ref().map(|s| {
            if s.running {
                "running now".to_string()
            } else {
                ts(s.next_run_at)
            }
        }),
        paused: schedule.and_then(|s| s.paused_reason),
        errors: BTreeMap::new(),
        lists: match &stored_vocabulary {
            Some(v) => {
                let t = v.tickets.clone().unwrap_or_default();
                ChoiceLists {
                    company_types: v.company_types.clone(),
                    company_statuses: v.company_statuses.clone(),
                    boards: t.boards,
                    statuses: t.statuses,
                    priorities: t.priorities,
                    types: t.types,
                    categories: t.categories,
                }
            }
            None => ChoiceLists::default(),
        },
        vocabulary: stored_vocabulary.map(|v| {
            let list = |l: &[String]| {
                if l.is_empty() {
                    "(none)".to_string()
                } else {
                    l.join(", ")
                }
            };
            let tickets = v.tickets.clone().unwrap_or_default();
            let known = |l: &[String]| (!l.is_empty()).then(|| l.join(", "));
            VocabularyView {
                contact_types: list(&v.contact_types),
                company_types: list(&v.company_types),
                company_statuses: list(&v.company_statuses),
                ticket_boards: known(&tickets.boards),
                ticket_statuses: known(&tickets.statuses),
                ticket_priorities: known(&tickets.priorities),
                ticket_categories: known(&tickets.categories),
                ticket_types: known(&tickets.types),
                read_at: ts(v.fetched_at),
            }
        }),
    };
    let runs = state
        .store
        .list_runs(c.tenant_id, id, 10)
        .await?
        .into_iter()
        .map(|r| RunLine {
            id: r.id,
            started: ts(r.started_at),
            trigger: r.trigger.as_str(),
            result: r.result.as_str(),
            class: result_class(r.result),
            companies: summary(r.counts.get(&RecordType::Companies)),
            contacts: summary(r.counts.get(&RecordType::Contacts)),
            technicians: summary(r.counts.get(&RecordType::Technicians)),
            tickets: summary(r.counts.get(&RecordType::Tickets)),
            devices: summary(r.counts.get(&RecordType::Devices)),
            alerts: summary(r.counts.get(&RecordType::Alerts)),
            requests: r.requests,
        })
        .collect();
    Ok((view, runs, roles))
}

/// Reads the options form. Checkboxes are present only when ticked.
pub async fn save_options(
    state: &AppState,
    c: &Caller,
    id: IntegrationId,
    form: &[(String, String)],
) -> Result<(), ApiError> {
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim().to_string())
    };
    let on = |k: &str| get(k).is_some();
    let roles = state.store.list_roles(c.tenant_id).await?;
    let role = |field: &str| -> Result<Option<RoleId>, ApiError> {
        match get(field).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v.parse::<i64>().map(|n| Some(RoleId(n))).map_err(|_| {
                ApiError::field(&format!("options.{field}"), "pick a role from the list")
            }),
        }
    };
    // A text field (comma separated) or a multi-select (the key repeated).
    let list = |k: &str| {
        form.iter()
            .filter(|(n, _)| n == k)
            .flat_map(|(_, v)| names(v))
            .collect::<Vec<_>>()
    };
    let mut rules = Vec::new();
    for (n, line) in get("contact_type_rules")
        .unwrap_or_default()
        .lines()
        .enumerate()
    {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((t, r)) = line.split_once('=') else {
            return Err(ApiError::field(
                &format!("options.contact_type_rules[{n}]"),
                format!("line {}: write 'Contact type = Role'", n + 1),
            ));
        };
        let role = roles
            .iter()
            .find(|x| x.name.eq_ignore_ascii_case(r.trim()))
            .ok_or_else(|| {
                ApiError::field(
                    &format!("options.contact_type_rules[{n}].role_id"),
                    format!("line {}: no role named '{}'", n + 1, r.trim()),
                )
            })?;
        rules.push(ContactTypeRule {
            contact_type: t.trim().to_string(),
            role_id: role.id,
        });
    }
    let mut stages = Vec::new();
    for (n, line) in get("ticket_stages").unwrap_or_default().lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let stage = line.split_once('=').and_then(|(st, stage)| {
            mspbridge_domain::sync::Stage::ALL
                .into_iter()
                .find(|x| x.label().eq_ignore_ascii_case(stage.trim()))
                .map(|stage| mspbridge_domain::sync::StageRule {
                    status: st.trim().to_string(),
                    stage,
                })
        });
        match stage {
            Some(r) => stages.push(r),
            None => {
                return Err(ApiError::field(
                    &format!("options.ticket_stages[{n}]"),
                    format!(
                        "line {}: write 'Status = Stage', the stage one of New, Triaged, Working, Waiting, Resolved",
                        n + 1
                    ),
                ));
            }
        }
    }
    // Halo's impact and urgency: a level 1–4, or empty for none.
    let level = |name: &str, field: &str| -> Result<Option<u8>, ApiError> {
        match get(name).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v.parse::<u8>().map(Some).map_err(|_| {
                ApiError::field(
                    &format!("options.ticket_defaults.{field}"),
                    "must be a Halo level from 1 (highest) to 4, or left out",
                )
            }),
        }
    };
    let interval = get("interval_minutes")
        .unwrap_or_default()
        .parse::<u32>()
        .map_err(|_| ApiError::field("options.interval_minutes", "must be 5, 15 or 30 minutes"))?;
    let options = SyncOptions {
        enabled: on("enabled"),
        interval_minutes: interval,
        initial_import: on("initial_import"),
        companies: on("companies"),
        contacts: on("contacts"),
        technicians: on("technicians"),
        auto_import_contacts: on("auto_import_contacts"),
        default_role_id: role("default_role_id")?,
        primary_contact_role_id: role("primary_contact_role_id")?,
        contact_type_rules: rules,
        skip_inactive_companies: on("skip_inactive_companies"),
        auto_link_by_name: on("auto_link_by_name"),
        exclude_company_types: list("exclude_company_types"),
        exclude_company_statuses: list("exclude_company_statuses"),
        ticket_defaults: mspbridge_domain::sync::TicketDefaults {
            board: get("ticket_board").filter(|v| !v.is_empty()),
            status: get("ticket_status").filter(|v| !v.is_empty()),
            priority: get("ticket_priority").filter(|v| !v.is_empty()),
            ticket_type: get("ticket_type").filter(|v| !v.is_empty()),
            category: get("ticket_category").filter(|v| !v.is_empty()),
            impact: level("ticket_impact", "impact")?,
            urgency: level("ticket_urgency", "urgency")?,
        },
        tickets: on("tickets"),
        ticket_boards: list("ticket_boards"),
        ticket_excluded_statuses: list("ticket_excluded_statuses"),
        ticket_stages: stages,
        ticket_closed_statuses: list("ticket_closed_statuses"),
        ticket_client_comment_status: get("ticket_client_comment_status").filter(|v| !v.is_empty()),
        devices: on("devices"),
        alerts: on("alerts"),
    };
    validate_options(state, c, id, &options).await?;
    state
        .store
        .set_sync_options(c.tenant_id, id, &options, state.now())
        .await?;
    crate::sync_api::register_webhook(state, c.tenant_id, id, &options).await;
    Ok(())
}

pub struct EventLine {
    pub(crate) at: String,
    pub(crate) level: &'static str,
    pub(crate) class: &'static str,
    pub(crate) record_type: &'static str,
    pub(crate) external_id: String,
    pub(crate) message: String,
}

fn event_line(e: mspbridge_store::sync::SyncEvent) -> EventLine {
    EventLine {
        at: ts(e.at),
        level: e.level.as_str(),
        class: match e.level {
            mspbridge_domain::sync::EventLevel::Info => "",
            mspbridge_domain::sync::EventLevel::Warning => "r-unknown",
            mspbridge_domain::sync::EventLevel::Error => "r-denied",
        },
        record_type: e.record_type.map(|r| r.as_str()).unwrap_or(""),
        external_id: e.external_id.unwrap_or_default(),
        message: e.message,
    }
}

/// The integration page's Log tab: the latest run's events (filtered), with its id.
pub async fn latest_log(
    state: &AppState,
    c: &Caller,
    id: IntegrationId,
    filter: &EventFilter,
) -> Result<(Option<i64>, Vec<EventLine>), ApiError> {
    let (level, record) = parse_filter(filter)?;
    let Some(run) = state
        .store
        .list_runs(c.tenant_id, id, 1)
        .await?
        .into_iter()
        .next()
    else {
        return Ok((None, vec![]));
    };
    let events = state
        .store
        .list_events(c.tenant_id, run.id, level, record, 500)
        .await?;
    Ok((Some(run.id), events.into_iter().map(event_line).collect()))
}

#[derive(Template)]
#[template(path = "run.html")]
struct RunPage {
    shell: Shell,
    integration_id: IntegrationId,
    integration_name: String,
    run_id: i64,
    result: &'static str,
    class: &'static str,
    trigger: &'static str,
    worker: String,
    started: String,
    finished: Option<String>,
    requests: i64,
    error: Option<String>,
    counts: Vec<(&'static str, Counts)>,
    level: String,
    record_type: String,
    events: Vec<EventLine>,
}

async fn run_page(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Path((id, run_id)): Path<(String, String)>,
    Query(filter): Query<EventFilter>,
) -> Response {
    let page = async {
        c.require(Permission::Read)?;
        let id = IntegrationId(id.parse().map_err(|_| ApiError::NotFound)?);
        let run_id: i64 = run_id.parse().map_err(|_| ApiError::NotFound)?;
        let integration = state.store.get_integration(c.tenant_id, id).await?;
        let run = state.store.get_run(c.tenant_id, run_id).await?;
        if run.integration_id != id {
            return Err(ApiError::NotFound);
        }
        let (level, record) = parse_filter(&filter)?;
        let events = state
            .store
            .list_events(c.tenant_id, run_id, level, record, 2000)
            .await?;
        Ok(RunPage {
            shell: shell(&state, &c).await?,
            integration_id: id,
            integration_name: integration.display_name().to_string(),
            run_id,
            result: run.result.as_str(),
            class: match run.result {
                RunResult::Success => "b-connected",
                RunResult::Failed => "b-error",
                _ => "b-na",
            },
            trigger: run.trigger.as_str(),
            worker: run.worker.clone(),
            started: ts(run.started_at),
            finished: run.finished_at.map(ts),
            requests: run.requests,
            error: run.error.clone(),
            counts: run.counts.iter().map(|(k, v)| (k.as_str(), *v)).collect(),
            level: filter.level.clone().unwrap_or_default(),
            record_type: filter.record_type.clone().unwrap_or_default(),
            events: events.into_iter().map(event_line).collect(),
        })
    };
    match page.await {
        Ok(p) => render(p, StatusCode::OK),
        Err(e) => error_page(e),
    }
}

#[derive(Template)]
#[template(path = "companies.html")]
struct CompaniesPage {
    shell: Shell,
    /// Per company shown: the integrations linked to it, its users and its tickets.
    rows: Vec<CompanyRow>,
    /// "12 companies" (all of them) or "3 of 12 companies" when searching.
    count_label: String,
    /// Companies in the tenant at all (the empty state when none).
    total: usize,
    q: String,
    /// `q` encoded for the paging links.
    q_enc: String,
    page: usize,
    pages: usize,
    flash: Option<String>,
    /// Whether an integration is connected (what the empty state asks for first).
    connected: bool,
    /// (integration id, label) for "Import from <provider>".
    integrations: Vec<(i64, String)>,
    companies_json: String,
    csrf_json: String,
    can_write: bool,
    /// Premium Training switches (the Training manage permission: Manage).
    can_manage: bool,
}

/// Rows per page on list pages.
pub(crate) const PAGE_SIZE: usize = 50;

struct CompanyRow {
    id: i64,
    name: String,
    active: bool,
    integrations: Vec<String>,
    users: usize,
    tickets: usize,
    /// Premium Training on (the Bigger Brains add-on), else Standard.
    premium: bool,
}

#[derive(serde::Deserialize, Default)]
struct CompaniesQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: Option<usize>,
    #[serde(default)]
    msg: Option<String>,
    #[serde(default)]
    blocked: Option<usize>,
    #[serde(default)]
    name: Option<String>,
}

async fn companies_page(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Query(q): Query<CompaniesQuery>,
) -> Response {
    let page = async {
        c.require(Permission::Read)?;
        let all = state
            .store
            .list_companies(c.tenant_id)
            .await?
            .into_iter()
            .map(|x| (x.id, x.name, x.active))
            .collect::<Vec<_>>();
        let integrations: Vec<(i64, String)> = crate::mapping_api::columns(&state, &c)
            .await?
            .into_iter()
            .map(|col| (col.integration_id, col.label))
            .collect();
        let list: Vec<serde_json::Value> = all
            .iter()
            .map(|(id, name, _)| serde_json::json!({"id": id.0, "name": name}))
            .collect();
        let needle = q.q.trim().to_lowercase();
        let found: Vec<_> = all
            .iter()
            .filter(|(_, name, _)| needle.is_empty() || name.to_lowercase().contains(&needle))
            .cloned()
            .collect();
        let pages = found.len().div_ceil(PAGE_SIZE).max(1);
        let page = q.page.unwrap_or(1).clamp(1, pages);
        let companies: Vec<_> = found
            .iter()
            .skip((page - 1) * PAGE_SIZE)
            .take(PAGE_SIZE)
            .cloned()
            .collect();
        let names: HashMap<i64, String> = state
            .store
            .list_integrations(c.tenant_id)
            .await?
            .into_iter()
            .map(|i| (i.id.0, i.display_name().to_string()))
            .collect();
        let mut linked: HashMap<i64, Vec<String>> = HashMap::new();
        for l in state
            .store
            .links_of_kind(c.tenant_id, LinkedRecord::Company)
            .await?
        {
            if let Some(n) = names.get(&l.integration_id.0) {
                linked.entry(l.local_id).or_default().push(n.clone());
            }
        }
        let premium: std::collections::HashSet<i64> = state
            .store
            .training_companies(c.tenant_id)
            .await?
            .into_iter()
            .filter(|t| t.premium)
            .map(|t| t.company_id)
            .collect();
        let mut rows = Vec::with_capacity(companies.len());
        for (id, name, active) in &companies {
            rows.push(CompanyRow {
                premium: premium.contains(&id.0),
                id: id.0,
                name: name.clone(),
                active: *active,
                integrations: linked.remove(&id.0).unwrap_or_default(),
                users: state
                    .store
                    .list_company_users(c.tenant_id, *id)
                    .await?
                    .len(),
                tickets: state
                    .store
                    .list_tickets(c.tenant_id, Some(*id), None, None, 100_000)
                    .await?
                    .len(),
            });
        }
        let count_label = if needle.is_empty() {
            crate::ui::plural(all.len(), "company", "companies")
        } else {
            format!(
                "{} of {}",
                found.len(),
                crate::ui::plural(all.len(), "company", "companies")
            )
        };
        let name = q.name.clone().unwrap_or_else(|| "The company".into());
        let flash = match q.msg.as_deref() {
            Some("deleted") => Some(format!(
                "{name} was deleted with its users. {} blocked from re-import (Blocked Companies can unblock).",
                crate::ui::plural(
                    q.blocked.unwrap_or(0),
                    "integration company is",
                    "integration companies are"
                )
            )),
            Some("deactivated") => Some(format!(
                "{name} was deactivated: it keeps its tickets and users and is no longer offered for new work."
            )),
            _ => None,
        };
        Ok::<_, ApiError>(CompaniesPage {
            shell: shell(&state, &c).await?,
            companies_json: script_json(&list),
            csrf_json: script_json(&c.csrf_token.clone().unwrap_or_default()),
            can_write: c.role.allows(Permission::Write),
            can_manage: c.role.allows(Permission::Manage),
            connected: !integrations.is_empty(),
            integrations,
            rows,
            count_label,
            total: all.len(),
            q_enc: crate::ui::query_encode(&q.q),
            q: q.q.clone(),
            page,
            pages,
            flash,
        })
    };
    match page.await {
        Ok(p) => render(p, StatusCode::OK),
        Err(e) => error_page(e),
    }
}

pub struct UserLine {
    name: String,
    email: String,
    phone: String,
    /// The integration the user was imported from, or "Portal".
    source: String,
    /// The user's contact types in that PSA, comma separated ("—" when none).
    contact_types: String,
    role: String,
    reason: String,
    status: &'static str,
    /// When a sync last wrote the user ("—" for portal users).
    last_synced: String,
}

#[derive(Template)]
#[template(path = "company.html")]
struct CompanyPage {
    shell: Shell,
    id: i64,
    name: String,
    active: bool,
    default_role: String,
    /// "Inheriting from ConnectWise Manage: Viewer" per linked integration.
    inherited: String,
    /// (role id, name) for the Default Import Role dropdown.
    roles: Vec<(i64, String)>,
    override_role: Option<i64>,
    can_write: bool,
    flash: Option<String>,
    users: Vec<UserLine>,
    /// One sentence per linked integration: the role its new contacts of this company get,
    /// and why.
    captions: Vec<String>,
    /// The company's imported RMM devices (first page) and how many there are.
    devices: Vec<mspbridge_store::rmm::DeviceRow>,
    devices_total: i64,
}

/// "New Halo PSA contacts of this company get role Viewer because …", per integration
/// linked to `company`: the role chain of spec 2.11 as it applies to this company.
async fn inheritance_captions(
    state: &AppState,
    c: &Caller,
    company: CompanyId,
    override_role: Option<RoleId>,
    roles: &BTreeMap<RoleId, String>,
) -> Result<Vec<String>, ApiError> {
    let role = |r: RoleId| {
        roles
            .get(&r)
            .cloned()
            .unwrap_or_else(|| format!("#{}", r.0))
    };
    let mut out = Vec::new();
    for i in state.store.list_integrations(c.tenant_id).await? {
        if state
            .store
            .find_local_link(c.tenant_id, i.id, LinkedRecord::Company, company.0)
            .await?
            .is_none()
        {
            continue;
        }
        let p = i
            .nickname
            .clone()
            .unwrap_or_else(|| i.provider.descriptor().name.to_string());
        let o = state.store.sync_options(c.tenant_id, i.id).await?;
        if !o.contacts || !o.auto_import_contacts {
            out.push(format!(
                "{p} contacts of this company are not imported as users: contact auto-import is off in {p}'s options."
            ));
            continue;
        }
        if let Some(r) = override_role {
            out.push(format!(
                "New {p} contacts of this company get role {} because this company's Default Import Role overrides {p}'s rules.",
                role(r)
            ));
            continue;
        }
        let mut except: Vec<String> = o
            .contact_type_rules
            .iter()
            .enumerate()
            .map(|(n, r)| {
                format!(
                    "contact type '{}' gets {} (rule {})",
                    r.contact_type,
                    role(r.role_id),
                    n + 1
                )
            })
            .collect();
        if let Some(r) = o.primary_contact_role_id {
            except.push(format!("the primary contact gets {}", role(r)));
        }
        let base = match o.default_role_id {
            Some(r) => format!(
                "New {p} contacts of this company get role {} because that is {p}'s integration default and this company has no Default Import Role",
                role(r)
            ),
            None => format!(
                "New {p} contacts of this company get no role by default ({p} has no default role)"
            ),
        };
        out.push(if except.is_empty() {
            format!("{base}.")
        } else {
            format!("{base}; before that, {}.", except.join("; "))
        });
    }
    Ok(out)
}

/// What a new plain contact of `company` gets from each integration it is linked to
/// (the last step of the fallback chain), as the spec's caption words it.
pub(crate) async fn inherited_roles(
    state: &AppState,
    c: &Caller,
    company: CompanyId,
    roles: &BTreeMap<RoleId, String>,
) -> Result<Vec<String>, ApiError> {
    let mut inherited = Vec::new();
    for i in state.store.list_integrations(c.tenant_id).await? {
        let linked = state
            .store
            .find_local_link(c.tenant_id, i.id, LinkedRecord::Company, company.0)
            .await?;
        if linked.is_none() {
            continue;
        }
        let options = state.store.sync_options(c.tenant_id, i.id).await?;
        let role = options
            .default_role_id
            .and_then(|r| roles.get(&r).cloned())
            .unwrap_or_else(|| "no default role (contacts are not auto-imported)".into());
        inherited.push(format!(
            "Inheriting from {}: {role}",
            i.provider.descriptor().name
        ));
    }
    Ok(inherited)
}

#[derive(serde::Deserialize)]
struct CsrfOnly {
    csrf: String,
}

#[derive(Template)]
#[template(path = "company_delete.html")]
struct DeleteConfirm {
    shell: Shell,
    id: i64,
    name: String,
    active: bool,
    users: String,
    tickets: usize,
    tickets_label: String,
    /// Integration companies linked to it (blocked from re-import on delete).
    links: String,
    /// Why the delete was refused (a 409 from the store), when it was.
    refused: Option<String>,
    can_write: bool,
}

async fn delete_confirm(
    state: &AppState,
    c: &Caller,
    raw: &str,
    refused: Option<String>,
) -> Result<DeleteConfirm, ApiError> {
    c.require(Permission::Read)?;
    let id = CompanyId(raw.parse().map_err(|_| ApiError::NotFound)?);
    let company = state.store.get_company(c.tenant_id, id).await?;
    let users = state.store.list_company_users(c.tenant_id, id).await?.len();
    let tickets = state
        .store
        .list_tickets(c.tenant_id, Some(id), None, None, 100_000)
        .await?
        .len();
    let links = state
        .store
        .links_of_kind(c.tenant_id, LinkedRecord::Company)
        .await?
        .into_iter()
        .filter(|l| l.local_id == id.0)
        .count();
    Ok(DeleteConfirm {
        shell: shell(state, c).await?,
        id: id.0,
        name: company.name,
        active: company.active,
        users: crate::ui::plural(users, "user", "users"),
        tickets,
        tickets_label: crate::ui::plural(tickets, "ticket", "tickets"),
        links: crate::ui::plural(links, "integration company", "integration companies"),
        refused,
        can_write: c.role.allows(Permission::Write),
    })
}

/// Delete asks first: what goes with the company, or why it cannot go (tickets) and
/// Deactivate instead.
async fn delete_confirm_page(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Path(id): Path<String>,
) -> Response {
    match delete_confirm(&state, &c, &id, None).await {
        Ok(p) => render(p, StatusCode::OK),
        Err(e) => error_page(e),
    }
}

/// Deletes a portal company from its page; its integration companies are blocked.
async fn delete_company_form(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<CsrfOnly>,
) -> Response {
    let done = async {
        c.check_csrf(Some(&form.csrf))?;
        let name = state
            .store
            .get_company(
                c.tenant_id,
                CompanyId(id.parse().map_err(|_| ApiError::NotFound)?),
            )
            .await?
            .name;
        let blocked = crate::mapping_api::delete_company_service(&state, &c, &id).await?;
        Ok::<_, ApiError>((name, blocked))
    };
    match done.await {
        Ok((name, blocked)) => axum::response::Redirect::to(&format!(
            "/companies?msg=deleted&blocked={}&name={}",
            blocked.len(),
            crate::ui::query_encode(&name)
        ))
        .into_response(),
        Err(ApiError::Conflict(m)) => match delete_confirm(&state, &c, &id, Some(m)).await {
            Ok(p) => render(p, StatusCode::CONFLICT),
            Err(e) => error_page(e),
        },
        Err(e) => error_page(e),
    }
}

/// Deactivate (or activate again) a company: it keeps its tickets and users.
async fn company_active_form(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Path((id, action)): Path<(String, String)>,
    axum::Form(form): axum::Form<CsrfOnly>,
) -> Response {
    let done = async {
        c.check_csrf(Some(&form.csrf))?;
        c.require(Permission::Write)?;
        let active = match action.as_str() {
            "deactivate" => false,
            "activate" => true,
            _ => return Err(ApiError::NotFound),
        };
        let company = CompanyId(id.parse().map_err(|_| ApiError::NotFound)?);
        state
            .store
            .set_company_active(c.tenant_id, company, active, state.now())
            .await?;
        tracing::info!(tenant_id = %c.tenant_id, company_id = company.0, active, "company active state set");
        Ok(if active { "activated" } else { "deactivated" })
    };
    match done.await {
        Ok(msg) => Redirect::to(&format!("/companies/{id}?msg={msg}")).into_response(),
        Err(e) => error_page(e),
    }
}

struct AuditLine {
    at: String,
    actor: String,
    action: String,
    action_label: &'static str,
    integration: String,
    external: String,
    /// (portal company id while it exists, its name or "#id (deleted)")
    before: Option<(Option<i64>, String)>,
    after: Option<(Option<i64>, String)>,
    batch: Option<String>,
    /// Set on the newest line of a Quick Match batch not undone yet.
    undo_batch: Option<String>,
    /// "Undo Quick Match" or "Undo links by name" (a sync run's batch).
    undo_label: &'static str,
    batch_size: usize,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    shell: Shell,
    rows: Vec<AuditLine>,
    can_write: bool,
    message: Option<String>,
}

#[derive(serde::Deserialize)]
struct AuditQuery {
    undone: Option<usize>,
}

/// The company link history (`company_link_audit`), newest first, with one-click undo of
/// a Quick Match batch.
async fn audit_page(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Query(q): Query<AuditQuery>,
) -> Response {
    let page = async {
        c.require(Permission::Read)?;
        let labels: std::collections::HashMap<i64, String> =
            crate::mapping_api::columns(&state, &c)
                .await?
                .into_iter()
                .map(|col| (col.integration_id, col.label))
                .collect();
        let audit = state.store.company_link_audit(c.tenant_id, 300).await?;
        let undone: std::collections::HashSet<&str> = audit
            .iter()
            .filter(|a| a.action == "undo")
            .filter_map(|a| a.batch.as_deref())
            .collect();
        let mut sizes: std::collections::HashMap<&str, usize> = Default::default();
        let undoable =
            |action: &str| matches!(action, "quick_match" | "auto_link" | "identity_link");
        for a in audit.iter().filter(|a| undoable(&a.action)) {
            if let Some(b) = a.batch.as_deref() {
                *sizes.entry(b).or_default() += 1;
            }
        }
        let mut offered = std::collections::HashSet::new();
        let company = |id: Option<mspbridge_domain::CompanyId>, name: &Option<String>| {
            id.map(|id| match name {
                Some(n) => (Some(id.0), n.clone()),
                None => (None, format!("#{} (deleted)", id.0)),
            })
        };
        let rows = audit
            .iter()
            .map(|a| {
                let batch = a.batch.as_deref();
                let undo_batch = batch
                    .filter(|b| undoable(&a.action) && !undone.contains(b) && offered.insert(*b))
                    .map(str::to_string);
                AuditLine {
                    at: ts(a.at),
                    actor: a.actor.clone(),
                    action: a.action.clone(),
                    action_label: match a.action.as_str() {
                        "link" => "Linked",
                        "unlink" => "Unlinked",
                        "quick_match" => "Quick Match",
                        "auto_link" => "Linked by name (sync)",
                        "identity_link" => "Linked by the PSA id it carries (sync)",
                        "undo" if batch.is_some_and(|b| b.starts_with("run-")) => {
                            "Links made by a sync undone"
                        }
                        "undo" => "Quick Match undone",
                        "import" => "Imported",
                        "block" => "Blocked (company deleted)",
                        "unblock" => "Unblocked",
                        _ => "Changed",
                    },
                    integration: labels
                        .get(&a.integration_id.0)
                        .cloned()
                        .unwrap_or_else(|| format!("Integration {}", a.integration_id.0)),
                    external: a
                        .external_name
                        .clone()
                        .unwrap_or_else(|| a.external_id.clone()),
                    before: company(a.before, &a.before_name),
                    after: company(a.after, &a.after_name),
                    batch: a.batch.clone(),
                    batch_size: batch.and_then(|b| sizes.get(b)).copied().unwrap_or(0),
                    undo_label: if a.action == "auto_link" {
                        "Undo links by name"
                    } else if a.action == "identity_link" {
                        "Undo links by PSA id"
                    } else {
                        "Undo Quick Match"
                    },
                    undo_batch,
                }
            })
            .collect();
        Ok::<_, ApiError>(AuditPage {
            shell: shell(&state, &c).await?,
            rows,
            can_write: c.role.allows(Permission::Write),
            message: q
                .undone
                .map(|n| format!("Undone: {n} link(s) put back as they were.")),
        })
    };
    match page.await {
        Ok(p) => render(p, StatusCode::OK),
        Err(e) => error_page(e),
    }
}

async fn undo_form(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Path(batch): Path<String>,
    axum::Form(form): axum::Form<CsrfOnly>,
) -> Response {
    let done = async {
        c.check_csrf(Some(&form.csrf))?;
        c.require(Permission::Write)?;
        let actor = crate::mapping_api::actor(&c);
        let out = state
            .store
            .undo_company_link_batch(c.tenant_id, batch.trim(), &actor, state.now())
            .await?;
        let changed: Vec<mspbridge_domain::IntegrationId> =
            out.iter().map(|o| o.integration).collect();
        crate::devices::mapping_changed(&state, c.tenant_id, changed).await;
        Ok::<_, ApiError>(out.len())
    };
    match done.await {
        Ok(n) => axum::response::Redirect::to(&format!(
            "/settings/integrations/companies/history?undone={n}"
        ))
        .into_response(),
        Err(e) => error_page(e),
    }
}

#[derive(Template)]
#[template(path = "blocked.html")]
struct BlockedPage {
    shell: Shell,
    /// (integration id, integration label, external id, name)
    blocked: Vec<(i64, String, String, String)>,
    can_write: bool,
}

/// Blocked Companies: integration companies whose portal company was deleted.
async fn blocked_page(State(state): State<AppState>, UiCaller(c): UiCaller) -> Response {
    let page = async {
        c.require(Permission::Read)?;
        let labels: std::collections::HashMap<i64, String> =
            crate::mapping_api::columns(&state, &c)
                .await?
                .into_iter()
                .map(|col| (col.integration_id, col.label))
                .collect();
        let blocked = state
            .store
            .blocked_companies(c.tenant_id)
            .await?
            .into_iter()
            .map(|b| {
                (
                    b.integration_id.0,
                    labels.get(&b.integration_id.0).cloned().unwrap_or_default(),
                    b.external_id,
                    b.name,
                )
            })
            .collect();
        Ok::<_, ApiError>(BlockedPage {
            shell: shell(&state, &c).await?,
            blocked,
            can_write: c.role.allows(Permission::Write),
        })
    };
    match page.await {
        Ok(p) => render(p, StatusCode::OK),
        Err(e) => error_page(e),
    }
}

async fn unblock_form(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Path((integration, external_id)): Path<(String, String)>,
    axum::Form(form): axum::Form<CsrfOnly>,
) -> Response {
    let done = async {
        c.check_csrf(Some(&form.csrf))?;
        crate::mapping_api::unblock_service(&state, &c, &integration, &external_id).await
    };
    match done.await {
        Ok(()) => axum::response::Redirect::to("/companies/blocked").into_response(),
        Err(e) => error_page(e),
    }
}

#[derive(serde::Deserialize)]
struct DefaultsForm {
    csrf: String,
    /// A role id, or empty to inherit.
    default_import_role: String,
}

/// Company Defaults → Default Import Role: saving an override changes only future
/// auto-imports (users already imported keep their role).
async fn save_defaults(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<DefaultsForm>,
) -> Response {
    let saved = async {
        c.check_csrf(Some(&form.csrf))?;
        c.require(Permission::Write)?;
        let id = CompanyId(id.parse().map_err(|_| ApiError::NotFound)?);
        let role = match form.default_import_role.trim() {
            "" => None,
            raw => Some(RoleId(raw.parse().map_err(|_| {
                ApiError::field("default_import_role", format!("'{raw}' is not a role"))
            })?)),
        };
        crate::companies_api::set_default_import_role(&state, &c, id, role).await?;
        Ok::<_, ApiError>(id)
    };
    match saved.await {
        Ok(id) => {
            axum::response::Redirect::to(&format!("/companies/{}?msg=defaults#defaults", id.0))
                .into_response()
        }
        Err(e) => error_page(e),
    }
}

async fn company_page(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Path(id): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let page = async {
        c.require(Permission::Read)?;
        let id = CompanyId(id.parse().map_err(|_| ApiError::NotFound)?);
        let company = state.store.get_company(c.tenant_id, id).await?;
        let roles: BTreeMap<RoleId, String> = state
            .store
            .list_roles(c.tenant_id)
            .await?
            .into_iter()
            .map(|r| (r.id, r.name))
            .collect();
        let defaults = state.store.company_defaults(c.tenant_id, id).await?;
        let inherited = inherited_roles(&state, &c, id, &roles).await?;
        let integrations: HashMap<i64, String> = state
            .store
            .list_integrations(c.tenant_id)
            .await?
            .into_iter()
            .map(|i| {
                let label = i
                    .nickname
                    .clone()
                    .unwrap_or_else(|| i.provider.descriptor().name.to_string());
                (i.id.0, label)
            })
            .collect();
        let users = state.store.list_company_users(c.tenant_id, id).await?;
        let mine: std::collections::HashSet<i64> = users.iter().map(|u| u.id.0).collect();
        // Which integration each user came from (a user is linked to at most one).
        let sources: HashMap<i64, String> = state
            .store
            .links_of_kind(c.tenant_id, LinkedRecord::CompanyUser)
            .await?
            .into_iter()
            .filter(|l| mine.contains(&l.local_id))
            .map(|l| {
                let label = integrations
                    .get(&l.integration_id.0)
                    .cloned()
                    .unwrap_or_else(|| format!("Integration {}", l.integration_id.0));
                (l.local_id, label)
            })
            .collect();
        let users = users
            .into_iter()
            .map(|u| {
                let source = sources.get(&u.id.0).cloned();
                UserLine {
                    name: format!("{} {}", u.first_name, u.last_name),
                    email: u.email.unwrap_or_default(),
                    phone: u.phone.unwrap_or_default(),
                    contact_types: if u.contact_types.is_empty() {
                        "—".into()
                    } else {
                        u.contact_types.join(", ")
                    },
                    role: roles.get(&u.role_id).cloned().unwrap_or_default(),
                    reason: u.role_reason.unwrap_or_else(|| {
                        if source.is_some() {
                            "kept from an earlier import".into()
                        } else {
                            "set by hand in the portal".into()
                        }
                    }),
                    status: u.status.as_str(),
                    last_synced: if source.is_some() {
                        ts(u.updated_at)
                    } else {
                        "—".into()
                    },
                    source: source.unwrap_or_else(|| "Portal".into()),
                }
            })
            .collect();
        let captions =
            inheritance_captions(&state, &c, id, defaults.default_import_role, &roles).await?;
        let devices = state
            .store
            .devices(
                c.tenant_id,
                &mspbridge_store::rmm::DeviceQuery {
                    company: Some(id),
                    limit: 10,
                    ..Default::default()
                },
            )
            .await?;
        Ok::<_, ApiError>(CompanyPage {
            devices_total: devices.total,
            devices: devices.rows,
            shell: shell(&state, &c).await?,
            id: id.0,
            name: company.name,
            active: company.active,
            default_role: match defaults
                .default_import_role
                .and_then(|r| roles.get(&r).cloned())
            {
                Some(role) => format!("{role} (set for this company)"),
                None if inherited.is_empty() => {
                    "none: the company is not linked to an integration".into()
                }
                None => inherited.join("; "),
            },
            inherited: if inherited.is_empty() {
                "Not linked to an integration: nothing to inherit.".into()
            } else {
                inherited.join("; ")
            },
            roles: roles.iter().map(|(k, v)| (k.0, v.clone())).collect(),
            override_role: defaults.default_import_role.map(|r| r.0),
            can_write: c.role.allows(Permission::Write),
            flash: match q.get("msg").map(String::as_str) {
                Some("defaults") => Some(
                    "Default Import Role saved; it applies to contacts imported from now on."
                        .to_string(),
                ),
                Some("deactivated") => Some(
                    "Deactivated: the company keeps its tickets and users and shows as inactive."
                        .to_string(),
                ),
                Some("activated") => Some("Active again.".to_string()),
                _ => None,
            },
            users,
            captions,
        })
    };
    match page.await {
        Ok(p) => render(p, StatusCode::OK),
        Err(e) => error_page(e),
    }
}

#[derive(Template)]
#[template(path = "technicians.html")]
struct TechniciansPage {
    shell: Shell,
    staff: Vec<TechRow>,
    count_label: String,
    can_manage: bool,
    error: Option<String>,
    flash: Option<String>,
    /// The technician whose row is being edited (one at a time).
    edit: Option<i64>,
    /// The refused form's input, kept for the row being edited.
    input: HashMap<String, String>,
    /// The refused form's errors by field (`name`, `email`, `active`).
    errors: BTreeMap<String, String>,
}

struct TechRow {
    t: crate::technicians_api::TechnicianView,
    /// Why a field cannot be edited here (a linked PSA cannot take it), per field.
    name_lock: Option<String>,
    email_lock: Option<String>,
    active_lock: Option<String>,
}

impl TechRow {
    fn editing(&self, edit: &Option<i64>) -> bool {
        *edit == Some(self.t.technician.id.0)
    }
}

fn tech_row(t: crate::technicians_api::TechnicianView) -> TechRow {
    let lock = |field: &str| {
        t.links.iter().find_map(|l| match &l.writes {
            Some(w) if w.refuses(&[field]).is_none() => None,
            Some(w) => Some(format!("{} cannot take it: {}", l.provider, w.how)),
            None => Some(format!(
                "{}'s API cannot edit technicians: change it there",
                l.provider
            )),
        })
    };
    TechRow {
        name_lock: lock("name"),
        email_lock: lock("email"),
        active_lock: lock("active"),
        t,
    }
}

async fn technicians_view(
    state: &AppState,
    c: &crate::auth::Caller,
    error: Option<String>,
    flash: Option<String>,
    edit: Option<i64>,
    input: HashMap<String, String>,
    errors: BTreeMap<String, String>,
) -> Result<TechniciansPage, ApiError> {
    let staff: Vec<TechRow> = crate::technicians_api::list_service(state, c)
        .await?
        .into_iter()
        .map(tech_row)
        .collect();
    Ok(TechniciansPage {
        shell: shell(state, c).await?,
        count_label: crate::ui::plural(staff.len(), "staff user", "staff users"),
        staff,
        can_manage: c.require(Permission::Manage).is_ok(),
        error,
        flash,
        edit,
        input,
        errors,
    })
}

async fn technicians_page(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let flash = (q.get("msg").map(String::as_str) == Some("saved"))
        .then(|| "Technician saved, and written to the PSAs it is linked to.".to_string());
    let edit = q.get("edit").and_then(|v| v.parse::<i64>().ok());
    match technicians_view(
        &state,
        &c,
        None,
        flash,
        edit,
        HashMap::new(),
        BTreeMap::new(),
    )
    .await
    {
        Ok(p) => render(p, StatusCode::OK),
        Err(e) => error_page(e),
    }
}

/// The edit form of one technician (name, email, active).
async fn technician_form(
    State(state): State<AppState>,
    UiCaller(c): UiCaller,
    Path(raw): Path<String>,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    let done = async {
        c.check_csrf(form.get("csrf").map(String::as_str))?;
        let id = crate::api::path_id(&raw, "id", "a technician id").map(StaffUserId)?;
        let body = crate::technicians_api::TechnicianBody {
            name: form.get("name").cloned(),
            email: form.get("email").cloned(),
            active: Some(form.contains_key("active")),
        };
        crate::technicians_api::update_service(&state, &c, id, &body).await
    };
    let result = done.await;
    match result {
        Ok(_) => Redirect::to("/technicians?msg=saved").into_response(),
        Err(
            e @ (ApiError::Validation(_) | ApiError::VendorWrite { .. } | ApiError::Conflict(_)),
        ) => match technicians_view(
            &state,
            &c,
            Some(e.to_string()),
            None,
            raw.parse::<i64>().ok(),
            form,
            match &e {
                ApiError::Validation(v) => v
                    .fields()
                    .iter()
                    .map(|f| (f.field.clone(), f.message.clone()))
                    .collect(),
                _ => BTreeMap::new(),
            },
        )
        .await
        {
            Ok(p) => render(p, e.status()),
            Err(e) => error_page(e),
        },
        Err(e) => error_page(e),
    }
}
