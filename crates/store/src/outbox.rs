//! The durable outbox for portal-side ticket changes bound for a PSA.
//!
//! A portal change (new ticket, new note, status change) and its outbox row are written in
//! one transaction, so a change is never saved without being queued nor queued without
//! being saved. A worker claims due rows with a lease, makes the vendor call, and marks
//! the row done together with the external link in one transaction. Each row carries a
//! unique `marker` of ours; the vendor call looks for a record carrying it first, so a
//! retry after a lost answer, or after a crash between the vendor call and the commit,
//! finds what the first attempt wrote instead of writing it again.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mspbridge_domain::model::{LinkedRecord, Ticket, TicketNote};
use mspbridge_domain::{IntegrationId, TenantId, TicketId};
use serde::Serialize;

use crate::{NewTicket, Result};

/// What an outbox row asks the vendor to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxOp {
    CreateTicket,
    AddNote,
    SetStatus,
}

impl OutboxOp {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxOp::CreateTicket => "create_ticket",
            OutboxOp::AddNote => "add_note",
            OutboxOp::SetStatus => "set_status",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "create_ticket" => OutboxOp::CreateTicket,
            "add_note" => OutboxOp::AddNote,
            "set_status" => OutboxOp::SetStatus,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxItem {
    pub id: i64,
    pub tenant_id: TenantId,
    pub integration_id: IntegrationId,
    pub op: OutboxOp,
    pub ticket_id: TicketId,
    pub note_id: Option<i64>,
    pub marker: String,
    pub payload: serde_json::Value,
    /// `pending`, `done`, `failed` (waiting for a manual retry or discard) or `discarded`.
    pub state: String,
    pub attempts: i32,
    /// How often the row was claimed, this claim included: more than one means an earlier
    /// attempt may have reached the PSA (a lost answer, a crash before the commit).
    pub claims: i32,
    /// The vendor's message from the last failed attempt.
    pub last_error: Option<String>,
    /// The vendor's id for what was written (ticket or note id).
    pub external_id: Option<String>,
    /// Write a status change even though the PSA's status moved since (an admin retried a
    /// write refused as a conflict).
    pub force_write: bool,
    pub next_attempt_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The outbox row to write with a portal change.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub integration: IntegrationId,
    pub marker: String,
    pub payload: serde_json::Value,
}

/// How a claimed row ended.
#[derive(Debug, Clone)]
pub enum OutboxResult {
    /// Written (or found already written); link the portal record to `external_id`.
    Done {
        external_id: String,
        link: Option<(LinkedRecord, i64)>,
        /// The ticket's status in the PSA now (a status write): the base the next portal
        /// change is checked against.
        psa_status: Option<String>,
    },
    /// Not written; try again at `retry_at`, or never (`None`: the row is `failed` and
    /// shown with the vendor's message until an admin retries it).
    Failed {
        error: String,
        retry_at: Option<DateTime<Utc>>,
        /// Count the attempt (false while the row only waits for the ticket's create).
        count: bool,
    },
}

/// A status change queued for a PSA: the status, whether it counts as closed, and its row.
#[derive(Debug, Clone)]
pub struct StatusChange {
    pub status: String,
    pub closed: bool,
    pub out: Outgoing,
}

#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// A portal ticket and its `create_ticket` row, in one transaction.
    async fn create_ticket_outboxed(
        &self,
        tenant: TenantId,
        ticket: NewTicket,
        out: Outgoing,
        now: DateTime<Utc>,
    ) -> Result<(Ticket, i64)>;
    /// A portal note and its `add_note` row, in one transaction; with `then_status` (a
    /// client's comment setting the Client Comment Status) also the status change and its
    /// `set_status` row, queued after the note, in the same transaction.
    #[allow(clippy::too_many_arguments)]
    async fn add_note_outboxed(
        &self,
        tenant: TenantId,
        ticket: TicketId,
        body: &str,
        internal: bool,
        author: &str,
        out: Outgoing,
        then_status: Option<StatusChange>,
        now: DateTime<Utc>,
    ) -> Result<(TicketNote, i64)>;
    /// A portal status change and its `set_status` row, in one transaction.
    async fn set_status_outboxed(
        &self,
        tenant: TenantId,
        ticket: TicketId,
        status: &str,
        closed: bool,
        out: Outgoing,
        now: DateTime<Utc>,
    ) -> Result<(Ticket, i64)>;
    /// Leases up to `limit` due pending rows (oldest first) that nobody holds.
    async fn claim_outbox(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<OutboxItem>>;
    /// Ends a claimed row; false when the lease was lost (another worker owns it now).
    async fn finish_outbox(
        &self,
        id: i64,
        worker: &str,
        result: OutboxResult,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    async fn list_outbox(
        &self,
        tenant: TenantId,
        state: Option<&str>,
        limit: i64,
    ) -> Result<Vec<OutboxItem>>;
    /// A page of the outbox, newest first, and how many rows match in all.
    async fn list_outbox_page(
        &self,
        tenant: TenantId,
        state: Option<&str>,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<OutboxItem>, i64)>;
    /// A ticket's rows, oldest first.
    async fn list_outbox_for_ticket(
        &self,
        tenant: TenantId,
        ticket: TicketId,
    ) -> Result<Vec<OutboxItem>>;
    /// A status change of a ticket no PSA takes (nothing queued).
    async fn set_ticket_status(
        &self,
        tenant: TenantId,
        ticket: TicketId,
        status: &str,
        closed: bool,
        now: DateTime<Utc>,
    ) -> Result<Ticket>;
    /// The tenant an integration belongs to (webhooks name only the integration).
    async fn integration_owner(&self, id: IntegrationId) -> Result<Option<TenantId>>;
    /// Records a verified callback by the key that identifies the delivery; false when
    /// that key was recorded less than `replay_window` before `now` (a replay). A key
    /// older than the window is recorded again as new.
    #[allow(clippy::too_many_arguments)]
    async fn record_webhook(
        &self,
        tenant: TenantId,
        integration: IntegrationId,
        signature_hash: &str,
        kind: &str,
        action: &str,
        record_id: &str,
        now: DateTime<Utc>,
        replay_window: chrono::Duration,
    ) -> Result<bool>;
    /// What a callback's re-read changed, for the event log.
    async fn webhook_outcome(
        &self,
        integration: IntegrationId,
        signature_hash: &str,
        outcome: &str,
    ) -> Result<()>;
    /// Applies the PSA's status to the portal ticket linked to `external_id`: `None` when
    /// no portal ticket is linked, else the ticket and whether anything changed (an echo
    /// of our own write changes nothing).
    async fn apply_ticket_status(
        &self,
        tenant: TenantId,
        integration: IntegrationId,
        external_id: &str,
        status: &str,
        closed: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<(TicketId, bool)>>;
    /// Makes a failed row pending again, due now.
    async fn retry_outbox(
        &self,
        tenant: TenantId,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<OutboxItem>;
    /// Gives up on a failed row (it stays listed as `discarded`); a discarded status change
    /// gives the ticket back the status the PSA has.
    async fn discard_outbox(
        &self,
        tenant: TenantId,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<OutboxItem>;
}

#[derive(sqlx::FromRow)]
pub(crate) struct OutboxRow {
    pub id: i64,
    pub tenant_id: i64,
    pub integration_id: i64,
    pub op: String,
    pub ticket_id: i64,
    pub note_id: Option<i64>,
    pub marker: String,
    pub payload: String,
    pub state: String,
    pub attempts: i32,
    pub claims: i32,
    pub last_error: Option<String>,
    pub external_id: Option<String>,
    pub force_write: bool,
    pub next_attempt_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub(crate) const OUTBOX_COLUMNS: &str = "id, tenant_id, integration_id, op, ticket_id, note_id, marker, payload, state, attempts, claims, last_error, external_id, force_write, next_attempt_at, created_at, updated_at";

impl TryFrom<OutboxRow> for OutboxItem {
    type Error = crate::StoreError;
    fn try_from(r: OutboxRow) -> Result<Self> {
        Ok(OutboxItem {
            id: r.id,
            tenant_id: TenantId(r.tenant_id),
            integration_id: IntegrationId(r.integration_id),
            op: OutboxOp::parse(&r.op)
                .ok_or_else(|| crate::StoreError::Corrupt(format!("outbox op '{}'", r.op)))?,
            ticket_id: TicketId(r.ticket_id),
            note_id: r.note_id,
            marker: r.marker,
            payload: serde_json::from_str(&r.payload)
                .map_err(|e| crate::StoreError::Corrupt(format!("outbox payload: {e}")))?,
            state: r.state,
            attempts: r.attempts,
            claims: r.claims,
            last_error: r.last_error,
            external_id: r.external_id,
            force_write: r.force_write,
            next_attempt_at: r.next_attempt_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

macro_rules! impl_outbox_store {
    ($store:ident) => {
        mod outbox_impl {
            use async_trait::async_trait;
            use chrono::{DateTime, Utc};
            use mspbridge_domain::model::{Ticket, TicketNote};
            use mspbridge_domain::{TenantId, TicketId};

            use super::Db;
            use crate::outbox::*;
            use crate::rows::{NoteRow, TicketRow, NOTE_COLUMNS, TICKET_COLUMNS};
            use crate::{NewTicket, Result, StoreError};

            type Tx<'a> = sqlx::Transaction<'a, Db>;

            async fn enqueue(
                tx: &mut Tx<'_>,
                tenant: TenantId,
                op: OutboxOp,
                ticket: i64,
                note: Option<i64>,
                out: &Outgoing,
                now: DateTime<Utc>,
            ) -> Result<i64> {
                // The integration must be the tenant's.
                let owned: Option<(i64,)> =
                    sqlx::query_as("SELECT id FROM integrations WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant.0)
                        .bind(out.integration.0)
                        .fetch_optional(&mut **tx)
                        .await?;
                if owned.is_none() {
                    return Err(StoreError::NotFound);
                }
                let (id,): (i64,) = sqlx::query_as(
                    "INSERT INTO outbox (tenant_id, integration_id, op, ticket_id, note_id, marker, payload, state, attempts, next_attempt_at, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, $8, $8, $8) RETURNING id",
                )
                .bind(tenant.0)
                .bind(out.integration.0)
                .bind(op.as_str())
                .bind(ticket)
                .bind(note)
                .bind(&out.marker)
                .bind(out.payload.to_string())
                .bind(now)
                .fetch_one(&mut **tx)
                .await?;
                Ok(id)
            }

            #[async_trait]
            impl OutboxStore for super::$store {
                async fn create_ticket_outboxed(&self, tenant: TenantId, ticket: NewTicket, out: Outgoing, now: DateTime<Utc>) -> Result<(Ticket, i64)> {
                    let mut tx = self.begin_write().await?;
                    // Any early return or error rolls back at once: a dropped transaction
                    // would keep its locks until the connection is used again.
                    let r: Result<_> = async {
                    let company: Option<(i64,)> = sqlx::query_as("SELECT id FROM companies WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant.0)
                        .bind(ticket.company_id.0)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if company.is_none() {
                        return Err(StoreError::NotFound);
                    }
                    let row: TicketRow = sqlx::query_as(crate::sync_shared::sql(format!(
                        "INSERT INTO tickets (tenant_id, company_id, summary, description, status, priority, closed, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, FALSE, $7, $7) RETURNING {TICKET_COLUMNS}"
                    )))
                    .bind(tenant.0)
                    .bind(ticket.company_id.0)
                    .bind(&ticket.summary)
                    .bind(&ticket.description)
                    .bind(&ticket.status)
                    .bind(&ticket.priority)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                    let id = enqueue(&mut tx, tenant, OutboxOp::CreateTicket, row.id, None, &out, now).await?;
                        Ok((row.into(), id))
                    }
                    .await;
                    crate::finish_tx(tx, r).await
                }

                async fn add_note_outboxed(&self, tenant: TenantId, ticket: TicketId, body: &str, internal: bool, author: &str, out: Outgoing, then_status: Option<StatusChange>, now: DateTime<Utc>) -> Result<(TicketNote, i64)> {
                    let mut tx = self.begin_write().await?;
                    // Any early return or error rolls back at once: a dropped transaction
                    // would keep its locks until the connection is used again.
                    let r: Result<_> = async {
                    let found: Option<(i64,)> = sqlx::query_as("SELECT id FROM tickets WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant.0)
                        .bind(ticket.0)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if found.is_none() {
                        return Err(StoreError::NotFound);
                    }
                    let row: NoteRow = sqlx::query_as(crate::sync_shared::sql(format!(
                        "INSERT INTO ticket_notes (tenant_id, ticket_id, body, internal, author, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
                         RETURNING {NOTE_COLUMNS}"
                    )))
                    .bind(tenant.0)
                    .bind(ticket.0)
                    .bind(body)
                    .bind(internal)
                    .bind(author)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                    let id = enqueue(&mut tx, tenant, OutboxOp::AddNote, ticket.0, Some(row.id), &out, now).await?;
                    if let Some(change) = then_status {
                        sqlx::query("UPDATE tickets SET status = $3, closed = $4, updated_at = $5 WHERE tenant_id = $1 AND id = $2")
                            .bind(tenant.0)
                            .bind(ticket.0)
                            .bind(&change.status)
                            .bind(change.closed)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                        enqueue(&mut tx, tenant, OutboxOp::SetStatus, ticket.0, None, &change.out, now).await?;
                    }
                        Ok((row.into(), id))
                    }
                    .await;
                    crate::finish_tx(tx, r).await
                }

                async fn set_status_outboxed(&self, tenant: TenantId, ticket: TicketId, status: &str, closed: bool, out: Outgoing, now: DateTime<Utc>) -> Result<(Ticket, i64)> {
                    let mut tx = self.begin_write().await?;
                    // Any early return or error rolls back at once: a dropped transaction
                    // would keep its locks until the connection is used again.
                    let r: Result<_> = async {
                    let row: Option<TicketRow> = sqlx::query_as(crate::sync_shared::sql(format!(
                        "UPDATE tickets SET status = $3, closed = $4, updated_at = $5 WHERE tenant_id = $1 AND id = $2 RETURNING {TICKET_COLUMNS}"
                    )))
                    .bind(tenant.0)
                    .bind(ticket.0)
                    .bind(status)
                    .bind(closed)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let row = row.ok_or(StoreError::NotFound)?;
                    let id = enqueue(&mut tx, tenant, OutboxOp::SetStatus, ticket.0, None, &out, now).await?;
                        Ok((row.into(), id))
                    }
                    .await;
                    crate::finish_tx(tx, r).await
                }

                async fn claim_outbox(&self, worker: &str, now: DateTime<Utc>, lease_until: DateTime<Utc>, limit: i64) -> Result<Vec<OutboxItem>> {
                    let rows: Vec<OutboxRow> = sqlx::query_as(crate::sync_shared::sql(format!(
                        "UPDATE outbox SET lease_owner = $1, lease_until = $2, claims = claims + 1 WHERE id IN (\
                           SELECT id FROM outbox WHERE state = 'pending' AND next_attempt_at <= $3 \
                           AND (lease_until IS NULL OR lease_until < $3) ORDER BY id LIMIT $4{}) \
                         RETURNING {OUTBOX_COLUMNS}",
                        super::SKIP_LOCKED
                    )))
                    .bind(worker)
                    .bind(lease_until)
                    .bind(now)
                    .bind(limit.max(1))
                    .fetch_all(&self.pool)
                    .await?;
                    let mut out: Vec<OutboxItem> = rows.into_iter().map(TryInto::try_into).collect::<Result<_>>()?;
                    out.sort_by_key(|o| o.id);
                    Ok(out)
                }

                async fn finish_outbox(&self, id: i64, worker: &str, result: OutboxResult, now: DateTime<Utc>) -> Result<bool> {
                    let mut tx = self.begin_write().await?;
                    // Any early return or error rolls back at once: a dropped transaction
                    // would keep its locks until the connection is used again.
                    let r: Result<_> = async {
                    let held: Option<(i64, i64)> = sqlx::query_as(
                        "SELECT tenant_id, integration_id FROM outbox WHERE id = $1 AND lease_owner = $2 AND state = 'pending'",
                    )
                    .bind(id)
                    .bind(worker)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some((tenant, integration)) = held else {
                        return Ok(false);
                    };
                    match result {
                        OutboxResult::Done { external_id, link, psa_status } => {
                            if let Some(status) = psa_status {
                                sqlx::query("UPDATE tickets SET psa_status = $2 WHERE id = (SELECT ticket_id FROM outbox WHERE id = $1)")
                                    .bind(id)
                                    .bind(status)
                                    .execute(&mut *tx)
                                    .await?;
                            }
                            if let Some((kind, local)) = link {
                                sqlx::query(
                                    "INSERT INTO external_links (tenant_id, integration_id, record_kind, local_id, external_id, content_hash, created_at, updated_at) \
                                     VALUES ($1, $2, $3, $4, $5, '', $6, $6) ON CONFLICT DO NOTHING",
                                )
                                .bind(tenant)
                                .bind(integration)
                                .bind(kind.as_str())
                                .bind(local)
                                .bind(&external_id)
                                .bind(now)
                                .execute(&mut *tx)
                                .await?;
                            }
                            sqlx::query(
                                "UPDATE outbox SET state = 'done', external_id = $2, last_error = NULL, attempts = attempts + 1, \
                                 lease_owner = NULL, lease_until = NULL, updated_at = $3 WHERE id = $1",
                            )
                            .bind(id)
                            .bind(&external_id)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                        }
                        OutboxResult::Failed { error, retry_at, count } => {
                            sqlx::query(
                                "UPDATE outbox SET state = $2, last_error = $3, attempts = attempts + $4, next_attempt_at = $5, \
                                 lease_owner = NULL, lease_until = NULL, updated_at = $6 WHERE id = $1",
                            )
                            .bind(id)
                            .bind(if retry_at.is_some() { "pending" } else { "failed" })
                            .bind(&error)
                            .bind(i32::from(count))
                            .bind(retry_at.unwrap_or(now))
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                        }
                    }
                        Ok(true)
                    }
                    .await;
                    crate::finish_tx(tx, r).await
                }

                async fn list_outbox(&self, tenant: TenantId, state: Option<&str>, limit: i64) -> Result<Vec<OutboxItem>> {
                    let rows: Vec<OutboxRow> = sqlx::query_as(crate::sync_shared::sql(format!(
                        "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE tenant_id = $1 AND ($2 = '' OR state = $2) ORDER BY id DESC LIMIT $3"
                    )))
                    .bind(tenant.0)
                    .bind(state.unwrap_or(""))
                    .bind(limit.clamp(1, 1000))
                    .fetch_all(&self.pool)
                    .await?;
                    rows.into_iter().map(TryInto::try_into).collect()
                }

                async fn list_outbox_page(&self, tenant: TenantId, state: Option<&str>, offset: i64, limit: i64) -> Result<(Vec<OutboxItem>, i64)> {
                    let rows: Vec<OutboxRow> = sqlx::query_as(crate::sync_shared::sql(format!(
                        "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE tenant_id = $1 AND ($2 = '' OR state = $2) ORDER BY id DESC LIMIT $3 OFFSET $4"
                    )))
                    .bind(tenant.0)
                    .bind(state.unwrap_or(""))
                    .bind(limit.clamp(1, 1000))
                    .bind(offset.max(0))
                    .fetch_all(&self.pool)
                    .await?;
                    let (total,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE tenant_id = $1 AND ($2 = '' OR state = $2)")
                        .bind(tenant.0)
                        .bind(state.unwrap_or(""))
                        .fetch_one(&self.pool)
                        .await?;
                    Ok((rows.into_iter().map(TryInto::try_into).collect::<Result<_>>()?, total))
                }

                async fn list_outbox_for_ticket(&self, tenant: TenantId, ticket: TicketId) -> Result<Vec<OutboxItem>> {
                    let rows: Vec<OutboxRow> = sqlx::query_as(crate::sync_shared::sql(format!(
                        "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE tenant_id = $1 AND ticket_id = $2 ORDER BY id"
                    )))
                    .bind(tenant.0)
                    .bind(ticket.0)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.into_iter().map(TryInto::try_into).collect()
                }

                async fn set_ticket_status(&self, tenant: TenantId, ticket: TicketId, status: &str, closed: bool, now: DateTime<Utc>) -> Result<Ticket> {
                    let row: Option<TicketRow> = sqlx::query_as(crate::sync_shared::sql(format!(
                        "UPDATE tickets SET status = $3, closed = $4, updated_at = $5 WHERE tenant_id = $1 AND id = $2 RETURNING {TICKET_COLUMNS}"
                    )))
                    .bind(tenant.0)
                    .bind(ticket.0)
                    .bind(status)
                    .bind(closed)
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await?;
                    Ok(row.ok_or(StoreError::NotFound)?.into())
                }

                async fn integration_owner(&self, id: mspbridge_domain::IntegrationId) -> Result<Option<TenantId>> {
                    let row: Option<(i64,)> = sqlx::query_as("SELECT tenant_id FROM integrations WHERE id = $1")
                        .bind(id.0)
                        .fetch_optional(&self.pool)
                        .await?;
                    Ok(row.map(|r| TenantId(r.0)))
                }

                async fn record_webhook(
                    &self,
                    tenant: TenantId,
                    integration: mspbridge_domain::IntegrationId,
                    signature_hash: &str,
                    kind: &str,
                    action: &str,
                    record_id: &str,
                    now: DateTime<Utc>,
                    replay_window: chrono::Duration,
                ) -> Result<bool> {
                    // One statement: a new key is inserted, a key older than the window is
                    // taken over by this delivery, a recent one is left alone (0 rows).
                    let done = sqlx::query(
                        "INSERT INTO webhook_events (tenant_id, integration_id, signature_hash, kind, action, record_id, received_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (integration_id, signature_hash) DO UPDATE \
                         SET kind = excluded.kind, action = excluded.action, record_id = excluded.record_id, \
                             received_at = excluded.received_at, outcome = NULL \
                         WHERE webhook_events.received_at < $8",
                    )
                    .bind(tenant.0)
                    .bind(integration.0)
                    .bind(signature_hash)
                    .bind(kind)
                    .bind(action)
                    .bind(record_id)
                    .bind(now)
                    .bind(now - replay_window)
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn webhook_outcome(&self, integration: mspbridge_domain::IntegrationId, signature_hash: &str, outcome: &str) -> Result<()> {
                    sqlx::query("UPDATE webhook_events SET outcome = $3 WHERE integration_id = $1 AND signature_hash = $2")
                        .bind(integration.0)
                        .bind(signature_hash)
                        .bind(outcome)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }

                async fn apply_ticket_status(
                    &self,
                    tenant: TenantId,
                    integration: mspbridge_domain::IntegrationId,
                    external_id: &str,
                    status: &str,
                    closed: bool,
                    now: DateTime<Utc>,
                ) -> Result<Option<(TicketId, bool)>> {
                    let local: Option<(i64,)> = sqlx::query_as(
                        "SELECT local_id FROM external_links WHERE tenant_id = $1 AND integration_id = $2 AND record_kind = 'ticket' AND external_id = $3",
                    )
                    .bind(tenant.0)
                    .bind(integration.0)
                    .bind(external_id)
                    .fetch_optional(&self.pool)
                    .await?;
                    let Some((id,)) = local else {
                        return Ok(None);
                    };
                    // A portal status change still waiting to be written owns the status: the
                    // PSA's is only recorded (the outbox checks it before writing).
                    let changed = sqlx::query(
                        "UPDATE tickets SET psa_status = $3, \
                           status = CASE WHEN pending.n > 0 THEN status ELSE $3 END, closed = CASE WHEN pending.n > 0 THEN closed ELSE $4 END, \
                           updated_at = $5 \
                         FROM (SELECT COUNT(*) AS n FROM outbox WHERE ticket_id = $2 AND op = 'set_status' AND state IN ('pending', 'failed')) AS pending \
                         WHERE tenant_id = $1 AND id = $2 AND (psa_status IS NULL OR psa_status <> $3 OR (pending.n = 0 AND (status <> $3 OR closed <> $4)))",
                    )
                    .bind(tenant.0)
                    .bind(id)
                    .bind(status)
                    .bind(closed)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                    Ok(Some((TicketId(id), changed.rows_affected() == 1)))
                }

                async fn discard_outbox(&self, tenant: TenantId, id: i64, now: DateTime<Utc>) -> Result<OutboxItem> {
                    let mut tx = self.begin_write().await?;
                    let row: Option<OutboxRow> = sqlx::query_as(crate::sync_shared::sql(format!(
                        "UPDATE outbox SET state = 'discarded', updated_at = $3 \
                         WHERE tenant_id = $1 AND id = $2 AND state = 'failed' RETURNING {OUTBOX_COLUMNS}"
                    )))
                    .bind(tenant.0)
                    .bind(id)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(row) = row else {
                        tx.rollback().await?;
                        let exists: Option<(String,)> = sqlx::query_as("SELECT state FROM outbox WHERE tenant_id = $1 AND id = $2")
                            .bind(tenant.0)
                            .bind(id)
                            .fetch_optional(&self.pool)
                            .await?;
                        return match exists {
                            None => Err(StoreError::NotFound),
                            Some((s,)) => Err(StoreError::Conflict(format!("only a failed write can be discarded; this one is {s}"))),
                        };
                    };
                    let item: OutboxItem = row.try_into()?;
                    if item.op == OutboxOp::SetStatus {
                        // Nothing else waiting to change it: the ticket shows the PSA's status again.
                        sqlx::query(
                            "UPDATE tickets SET status = COALESCE(psa_status, status), updated_at = $3 \
                             WHERE tenant_id = $1 AND id = $2 AND psa_status IS NOT NULL AND NOT EXISTS \
                               (SELECT 1 FROM outbox WHERE ticket_id = $2 AND op = 'set_status' AND state IN ('pending', 'failed'))",
                        )
                        .bind(tenant.0)
                        .bind(item.ticket_id.0)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok(item)
                }

                async fn retry_outbox(&self, tenant: TenantId, id: i64, now: DateTime<Utc>) -> Result<OutboxItem> {
                    let row: Option<OutboxRow> = sqlx::query_as(crate::sync_shared::sql(format!(
                        "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = $3, updated_at = $3, \
                           force_write = (last_error LIKE 'conflict:%') \
                         WHERE tenant_id = $1 AND id = $2 AND state = 'failed' RETURNING {OUTBOX_COLUMNS}"
                    )))
                    .bind(tenant.0)
                    .bind(id)
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await?;
                    match row {
                        Some(r) => r.try_into(),
                        None => {
                            let exists: Option<(String,)> = sqlx::query_as("SELECT state FROM outbox WHERE tenant_id = $1 AND id = $2")
                                .bind(tenant.0)
                                .bind(id)
                                .fetch_optional(&self.pool)
                                .await?;
                            match exists {
                                None => Err(StoreError::NotFound),
                                Some((s,)) => Err(StoreError::Conflict(format!("only a failed write can be retried; this one is {s}"))),
                            }
                        }
                    }
                }
            }
        }
    };
}

pub(crate) use impl_outbox_store;
