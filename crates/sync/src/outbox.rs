//! Drains the outbox: portal-side ticket changes written to their PSA.
//!
//! Each claimed row is leased, so two workers never write the same change; the vendor
//! call looks first for what an earlier attempt of the same row wrote (the ticket carrying
//! the row's marker; a note with the same text since the row was created) and only writes
//! when it finds nothing; the row and the external link are then committed together. A
//! crash after the vendor call leaves the row pending with its lease running out; the next
//! attempt finds the write and only commits it. Transient failures back off; refusals
//! (validation, permissions) fail the row at once with the vendor's message, and a failed
//! row waits for an admin's Retry.

use chrono::{DateTime, Duration, Utc};
use mspbridge_domain::integration::IntegrationStatus;
use mspbridge_domain::model::LinkedRecord;
use mspbridge_providers::tickets::{NewVendorTicket, TicketWriter, WriteError};
use mspbridge_store::outbox::{OutboxItem, OutboxOp, OutboxResult};

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use mspbridge_domain::IntegrationId;

use crate::{Engine, EngineError};

/// An integration's writer and provider name, or the result its rows get without one.
type Writer = Result<(Box<dyn TicketWriter>, &'static str), OutboxResult>;

/// Attempts before a row that keeps failing transiently is marked failed.
pub const MAX_ATTEMPTS: i32 = 8;
/// How long a claimed row is held by its worker.
pub const OUTBOX_LEASE_SECS: i64 = 120;

/// What one drain did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OutboxSummary {
    pub claimed: usize,
    pub done: usize,
    pub retrying: usize,
    pub failed: usize,
}

fn backoff(attempts: i32) -> Duration {
    Duration::seconds(5 * (1i64 << attempts.clamp(0, 8)))
}

/// When a row waiting for its ticket to reach the PSA (a note or status change queued
/// behind a create) looks again: soon at first, then less often the longer it has waited
/// (a quarter of its age, 10 s to 10 min), so a create held for an admin does not make
/// its queued changes poll every few seconds.
fn waiting_backoff(age: Duration) -> Duration {
    (age / 4).clamp(Duration::seconds(10), Duration::minutes(10))
}

impl Engine {
    /// Claims due outbox rows (up to 50) and writes each to its PSA.
    pub async fn drain_outbox(&self) -> Result<OutboxSummary, EngineError> {
        let now = self.now();
        let items = self
            .store
            .claim_outbox(
                &self.worker,
                now,
                now + Duration::seconds(OUTBOX_LEASE_SECS),
                50,
            )
            .await?;
        let mut summary = OutboxSummary {
            claimed: items.len(),
            ..Default::default()
        };
        // One writer per integration for the whole drain: ConnectWise's codebase discovery
        // and the names resolved to ids are paid once, not per row.
        let mut writers: HashMap<IntegrationId, Writer> = HashMap::new();
        for item in items {
            let writer = match writers.entry(item.integration_id) {
                Entry::Occupied(o) => o.into_mut(),
                Entry::Vacant(v) => v.insert(self.writer_for(&item).await),
            };
            let result = match writer {
                Ok((writer, provider)) => self.write_one(&item, writer.as_ref(), provider).await,
                Err(failed) => failed.clone(),
            };
            match &result {
                OutboxResult::Done { .. } => summary.done += 1,
                OutboxResult::Failed { retry_at: None, .. } => summary.failed += 1,
                OutboxResult::Failed { .. } => summary.retrying += 1,
            }
            match &result {
                // Waiting behind its ticket's create is not a failure: no attempt was made.
                OutboxResult::Failed {
                    error,
                    count: false,
                    ..
                } => {
                    tracing::debug!(outbox_id = item.id, tenant_id = %item.tenant_id, integration_id = %item.integration_id, op = item.op.as_str(), reason = %error, "ticket write waits");
                }
                OutboxResult::Failed { error, .. } => {
                    tracing::warn!(outbox_id = item.id, tenant_id = %item.tenant_id, integration_id = %item.integration_id, op = item.op.as_str(), error = %error, "ticket write to the PSA did not go through");
                }
                OutboxResult::Done { .. } => {}
            }
            if !self
                .store
                .finish_outbox(item.id, &self.worker, result, self.now())
                .await?
            {
                tracing::warn!(
                    outbox_id = item.id,
                    "outbox lease lost before the result was saved"
                );
            }
        }
        Ok(summary)
    }

    /// The integration's ticket writer, or what every row of it gets in this drain when
    /// there is none (disconnected, no connector, credentials or connection failing).
    async fn writer_for(&self, item: &OutboxItem) -> Writer {
        let now = self.now();
        let wait = |error: String, count: bool, after: Duration| OutboxResult::Failed {
            error,
            retry_at: Some(now + after),
            count,
        };
        let integration = match self
            .store
            .get_integration(item.tenant_id, item.integration_id)
            .await
        {
            Ok(i) => i,
            Err(e) => return Err(wait(format!("storage: {e}"), true, backoff(item.attempts))),
        };
        let provider = integration.provider.descriptor().name;
        if integration.status == IntegrationStatus::Disconnected {
            return Err(wait(
                format!("{provider} is disconnected: the change is kept until it is reconnected"),
                false,
                Duration::minutes(5),
            ));
        }
        let creds =
            match mspbridge_store::load_credentials(self.store.as_ref(), &self.vault, &integration)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    return Err(wait(
                        format!("credentials: {e}"),
                        true,
                        backoff(item.attempts),
                    ));
                }
            };
        match self
            .providers
            .ticket_writer(integration.provider, &creds, self.config.retry)
            .await
        {
            None => Err(OutboxResult::Failed {
                error: format!("writing tickets to {provider} is not built yet"),
                retry_at: None,
                count: true,
            }),
            Some(Err(e)) => Err(self.failure(item, provider, e, now)),
            Some(Ok(w)) => Ok((w, provider)),
        }
    }

    #[tracing::instrument(skip_all, fields(tenant_id = %item.tenant_id, integration_id = %item.integration_id, outbox_id = item.id))]
    async fn write_one(
        &self,
        item: &OutboxItem,
        writer: &dyn TicketWriter,
        provider: &str,
    ) -> OutboxResult {
        let now = self.now();
        match self.apply(item, writer).await {
            Ok(Ok(done)) => done,
            Ok(Err(waiting)) => OutboxResult::Failed {
                error: waiting,
                retry_at: Some(now + waiting_backoff(now - item.created_at)),
                count: false,
            },
            Err(e) => self.failure(item, provider, e, now),
        }
    }

    fn failure(
        &self,
        item: &OutboxItem,
        provider: &str,
        e: WriteError,
        now: DateTime<Utc>,
    ) -> OutboxResult {
        let error = format!("{provider}: {e}");
        match e {
            WriteError::Transient { retry_after, .. } if item.attempts + 1 < MAX_ATTEMPTS => {
                let after = retry_after
                    .and_then(|d| Duration::from_std(d).ok())
                    .unwrap_or_else(|| backoff(item.attempts));
                OutboxResult::Failed {
                    error,
                    retry_at: Some(now + after),
                    count: true,
                }
            }
            _ => OutboxResult::Failed {
                error,
                retry_at: None,
                count: true,
            },
        }
    }

    /// `Ok(Err(why))`: not written yet and not an attempt (the ticket it belongs to is not
    /// in the PSA yet).
    async fn apply(
        &self,
        item: &OutboxItem,
        w: &dyn TicketWriter,
    ) -> Result<Result<OutboxResult, String>, WriteError> {
        let bad = |m: &str| WriteError::Rejected {
            field: None,
            message: format!("outbox row {} is unreadable: {m}", item.id),
        };
        match item.op {
            OutboxOp::CreateTicket => {
                let mut t: NewVendorTicket = serde_json::from_value(item.payload.clone())
                    .map_err(|e| bad(&e.to_string()))?;
                // The defaults as they are now, so fixing them and retrying a refused create works.
                if let Ok(o) = self
                    .store
                    .sync_options(item.tenant_id, item.integration_id)
                    .await
                {
                    t.defaults = o.ticket_defaults;
                }
                t.marker.clone_from(&item.marker);
                // Only an earlier claim can have created it (a lost answer, a crash before
                // the commit): the first attempt creates without looking.
                let found = if item.claims > 1 {
                    w.find_ticket(&t, item.created_at).await.map_err(|e| {
                        e.context("looking for the ticket an earlier attempt may have created")
                    })?
                } else {
                    None
                };
                let external_id = match found {
                    Some(found) => {
                        tracing::info!(ticket = %found, "the ticket was created by an earlier attempt; not creating it again");
                        found
                    }
                    None => w.create_ticket(&t).await?,
                };
                Ok(Ok(OutboxResult::Done {
                    external_id,
                    link: Some((LinkedRecord::Ticket, item.ticket_id.0)),
                    psa_status: None,
                }))
            }
            OutboxOp::AddNote | OutboxOp::SetStatus => {
                let Some(ticket) = self
                    .store
                    .find_local_link(
                        item.tenant_id,
                        item.integration_id,
                        LinkedRecord::Ticket,
                        item.ticket_id.0,
                    )
                    .await
                    .map_err(|e| WriteError::Transient {
                        message: format!("storage: {e}"),
                        retry_after: None,
                    })?
                else {
                    return Ok(Err(
                        "waiting for the ticket to be created in the PSA first".into()
                    ));
                };
                let ext = ticket.external_id;
                if item.op == OutboxOp::SetStatus {
                    let status = item.payload["status"]
                        .as_str()
                        .ok_or_else(|| bad("no status"))?;
                    // Optimistic check: the PSA's status must still be the one the portal
                    // change was made against, else both sides changed it: a conflict, held
                    // for an admin (Retry writes it anyway), never overwritten silently.
                    if let Some(base) = item.payload["base"].as_str().filter(|_| !item.force_write)
                    {
                        match w.ticket_status(&ext).await? {
                            None => {
                                return Err(WriteError::Rejected {
                                    field: None,
                                    message: format!("ticket {ext} no longer exists in the PSA"),
                                });
                            }
                            Some((now_status, _)) if now_status != base && now_status != status => {
                                return Ok(Ok(OutboxResult::Failed {
                                    error: format!(
                                        "conflict: the status changed in the PSA to '{now_status}' (was '{base}') since this change to '{status}' was made; Retry writes '{status}' anyway"
                                    ),
                                    retry_at: None,
                                    count: true,
                                }));
                            }
                            Some(_) => {}
                        }
                    }
                    w.set_status(&ext, status).await?;
                    return Ok(Ok(OutboxResult::Done {
                        external_id: ext,
                        link: None,
                        psa_status: Some(status.to_string()),
                    }));
                }
                let text = item.payload["text"]
                    .as_str()
                    .ok_or_else(|| bad("no text"))?;
                let internal = item.payload["internal"].as_bool().unwrap_or(false);
                let note = match w.find_note(&ext, text, internal, item.created_at).await? {
                    Some(found) => found,
                    None => w.add_note(&ext, text, internal).await?,
                };
                Ok(Ok(OutboxResult::Done {
                    external_id: note,
                    link: item.note_id.map(|n| (LinkedRecord::TicketNote, n)),
                    psa_status: None,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_waiting_for_their_ticket_look_again_less_often() {
        assert_eq!(waiting_backoff(Duration::seconds(1)), Duration::seconds(10));
        assert_eq!(waiting_backoff(Duration::minutes(4)), Duration::minutes(1));
        assert_eq!(waiting_backoff(Duration::hours(5)), Duration::minutes(10));
    }
}
