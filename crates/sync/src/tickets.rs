//! Tickets PSA → portal: reading a page of tickets with the notes of those that changed,
//! and deciding what the page changes in the portal.
//!
//! Field ownership (ARCHITECTURE.md "Tickets"): the PSA owns every ticket field except the
//! status while a portal status change waits in the outbox (the portal's stays; the PSA's
//! is recorded as `psa_status`, the base the outbox checks before writing). Notes are
//! append-only on both sides, keyed by the vendor's note id. A ticket the portal created
//! carries our marker in the PSA and is linked to its portal ticket, never imported twice.

use std::collections::{HashMap, HashSet};

use mspbridge_domain::IntegrationId;
use mspbridge_domain::sync::*;
use mspbridge_providers::source::{PageRequest, SourceError, SourcePage, TicketSource};
use mspbridge_store::sync::{NoteImport, Op, TicketOp};
use mspbridge_store::{Store, StoreError};

use crate::apply::{Context, PageOutcome, before_sync_from};

/// Whether the ticket is closed (by the PSA, or by the integration's Closed Statuses) and
/// its content hash. A ticket closed by the admin's list hashes differently, so changing the
/// list reaches unchanged tickets on a full pass; the fetch (which tickets need their notes
/// read) and the decision must agree on it.
fn ticket_hash(options: &SyncOptions, t: &ExtTicket) -> (bool, String) {
    let closed = options.ticket_closed(&t.status, t.closed);
    let hash = if closed && !t.closed {
        content_hash(&(t, "closed by the integration's closed statuses"))
    } else {
        content_hash(t)
    };
    (closed, hash)
}

/// One page of tickets; the notes are read for the tickets that are new or changed and
/// will be synced (in scope, company imported). An unchanged ticket's stamp and fields
/// hash the same, so its notes cannot have changed either: adding a note moves the
/// ticket's stamp. A ticket whose notes cannot be read is rejected, so it is neither
/// linked nor marked and comes again next run.
pub(crate) async fn fetch(
    store: &dyn Store,
    integration: IntegrationId,
    options: &SyncOptions,
    source: &dyn TicketSource,
    req: &PageRequest,
) -> Result<(SourcePage<ExtTicket>, u64), SourceError> {
    let db = |e: StoreError| SourceError::Unavailable(format!("the portal database: {e}"));
    let mut page = source.tickets(req).await?;
    // Before any look-up: PostgreSQL refuses NUL in a text parameter.
    // `noted`: the tickets that carried NUL characters, in their fields or notes.
    let mut noted: HashSet<String> = HashSet::new();
    page.rejected.strip_nul();
    for t in &mut page.records {
        if t.strip_nul() {
            noted.insert(t.external_id.clone());
        }
    }
    let ids: Vec<String> = page.records.iter().map(|t| t.external_id.clone()).collect();
    let links = store
        .links(integration, RecordType::Tickets, &ids)
        .await
        .map_err(db)?;
    let company_ids: Vec<String> = page
        .records
        .iter()
        .filter_map(|t| t.company_external_id.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let companies = store
        .links(integration, RecordType::Companies, &company_ids)
        .await
        .map_err(db)?;
    let changed: Vec<String> = page
        .records
        .iter()
        .filter(|t| {
            links
                .get(&t.external_id)
                .is_none_or(|l| l.gone || l.content_hash != ticket_hash(options, t).1)
        })
        .filter(|t| options.ticket_excluded(t).is_none())
        .filter(|t| {
            t.company_external_id
                .as_ref()
                .and_then(|c| companies.get(c))
                .is_some_and(|c| !c.gone)
        })
        .map(|t| t.external_id.clone())
        .collect();
    if changed.is_empty() {
        return Ok((page, noted.len() as u64));
    }
    let mut notes = source.ticket_notes(&changed).await?;
    for (ticket, n) in notes.by_ticket.iter_mut() {
        if n.strip_nul() {
            noted.insert(ticket.clone());
        }
    }
    notes.rejected.strip_nul();
    let failed: HashSet<String> = notes
        .rejected
        .iter()
        .filter_map(|r| r.external_id.clone())
        .collect();
    page.records.retain(|t| !failed.contains(&t.external_id));
    for t in &mut page.records {
        if let Some(n) = notes.by_ticket.remove(&t.external_id) {
            t.notes = Some(n);
        }
    }
    page.rejected.append(&mut notes.rejected);
    Ok((page, noted.len() as u64))
}

/// What a page of tickets changes: creates, updates (notes the portal lacks included),
/// unchanged, skips with their reasons.
pub(crate) async fn decide(
    ctx: &Context<'_>,
    p: SourcePage<ExtTicket>,
    full: bool,
) -> Result<PageOutcome, StoreError> {
    let rt = RecordType::Tickets;
    let mut out = PageOutcome::default();
    out.rejected(rt, p.rejected, full);
    let ids: Vec<String> = p.records.iter().map(|t| t.external_id.clone()).collect();
    let links = ctx.store.links(ctx.integration, rt, &ids).await?;
    let refs = |f: fn(&ExtTicket) -> Option<&String>| -> Vec<String> {
        let set: HashSet<&String> = p.records.iter().filter_map(f).collect();
        set.into_iter().cloned().collect()
    };
    let companies = ctx
        .store
        .links(
            ctx.integration,
            RecordType::Companies,
            &refs(|t| t.company_external_id.as_ref()),
        )
        .await?;
    let contacts = ctx
        .store
        .links(
            ctx.integration,
            RecordType::Contacts,
            &refs(|t| t.contact_external_id.as_ref()),
        )
        .await?;
    let techs = ctx
        .store
        .links(
            ctx.integration,
            RecordType::Technicians,
            &refs(|t| t.assignee_external_id.as_ref()),
        )
        .await?;
    let markers: Vec<String> = p
        .records
        .iter()
        .filter(|t| !links.contains_key(&t.external_id))
        .filter_map(|t| t.marker.clone())
        .collect();
    let ours = if markers.is_empty() {
        HashMap::new()
    } else {
        ctx.store
            .tickets_by_marker(ctx.tenant, ctx.integration, &markers)
            .await?
    };
    let local_ids: Vec<i64> = links
        .values()
        .map(|l| l.local_id)
        .chain(ours.values().copied())
        .collect();
    let locals = ctx.store.ticket_locals(ctx.tenant, &local_ids).await?;
    let mut no_company = 0u64;
    let settled = |r: RecordType| ctx.settled(r);
    let companies_settled = settled(RecordType::Companies).await?;
    let contacts_settled = settled(RecordType::Contacts).await?;
    let techs_settled = settled(RecordType::Technicians).await?;
    let mut waiting: Vec<String> = Vec::new();
    let mut waiting_refs: Vec<String> = Vec::new();
    for t in p.records {
        out.counts.seen += 1;
        out.stamp(t.updated_at);
        let ext = t.external_id.clone();
        let (closed, hash) = ticket_hash(ctx.options, &t);
        let link = links.get(&ext);
        if let Some(l) = link
            && l.content_hash == hash
            && !l.gone
        {
            out.counts.unchanged += 1;
            if full {
                out.ops.push(Op::Seen { external_id: ext });
            }
            continue;
        }
        if let Some(reason) = ctx.options.ticket_excluded(&t) {
            let level = link.map(|_| EventLevel::Info);
            let msg = format!(
                "ticket #{ext} '{}' not synced: {reason}{}",
                t.summary,
                if link.is_some() {
                    "; the portal keeps it as it was"
                } else {
                    ""
                }
            );
            out.skip(rt, &ext, level, msg, full);
            continue;
        }
        let Some(company) = t
            .company_external_id
            .as_ref()
            .and_then(|c| companies.get(c))
            .filter(|c| !c.gone)
        else {
            if t.company_external_id.is_some() && !companies_settled {
                out.defer(rt, &ext, full);
                waiting.push(ext);
                continue;
            }
            no_company += 1;
            out.skip(rt, &ext, None, String::new(), full);
            continue;
        };
        let existing = match link {
            Some(l) => Some(l.local_id),
            None => match t.marker.as_ref().and_then(|m| ours.get(m)) {
                Some(local) => {
                    out.event(
                        EventLevel::Info,
                        rt,
                        &ext,
                        format!(
                            "ticket #{ext} is the portal's ticket {local}, created from the portal; linked, not imported again"
                        ),
                    );
                    Some(*local)
                }
                None => None,
            },
        };
        if existing.is_none() && before_sync_from(ctx, t.updated_at) {
            out.skip(rt, &ext, None, String::new(), full);
            continue;
        }
        let Some(notes) = t.notes.as_ref() else {
            out.failed(
                rt,
                &ext,
                format!("ticket #{ext}: its notes were not read; it is tried again next run"),
                full,
            );
            continue;
        };
        let local = existing.and_then(|l| locals.get(&l));
        let pending = local.and_then(|l| l.pending_status.clone());
        if let Some(wanted) = &pending {
            let base = local.and_then(|l| l.psa_status.as_deref());
            if base.is_some_and(|b| b != t.status) && *wanted != t.status {
                out.event(
                    EventLevel::Warning,
                    rt,
                    &ext,
                    format!(
                        "conflict on ticket #{ext}: its status changed in {} to '{}' (was '{}') while a portal change to '{wanted}' waits to be written; the portal keeps '{wanted}' and the write is held for an admin (Retry writes it anyway)",
                        ctx.provider,
                        t.status,
                        base.unwrap_or_default()
                    ),
                );
            }
        }
        if existing.is_some() {
            out.counts.updated += 1;
        } else {
            out.counts.created += 1;
        }
        let kept: Vec<NoteImport> = t
            .kept_notes()
            .map(|n| NoteImport {
                external_id: n.external_id.clone(),
                body: n.body.clone(),
                internal: n.internal,
                author: n.author.clone(),
                created_at: n.created_at,
            })
            .collect();
        let description = t.description.clone().unwrap_or_else(|| {
            notes
                .iter()
                .find(|n| n.is_description)
                .map(|n| n.body.clone())
                .unwrap_or_default()
        });
        let id_of = |links: &HashMap<String, mspbridge_store::sync::LinkState>,
                     ext: &Option<String>| {
            ext.as_ref()
                .and_then(|e| links.get(e))
                .filter(|l| !l.gone)
                .map(|l| l.local_id)
        };
        let contact_id = id_of(&contacts, &t.contact_external_id);
        let assignee_id = id_of(&techs, &t.assignee_external_id);
        // A contact or assignee whose pass has not completed may still arrive: the ticket
        // is imported without it, counted as waiting, and stored with a hash that differs
        // from the vendor's, so the next run (which reads this window again) updates it.
        let refs_wait =
            (t.contact_external_id.is_some() && contact_id.is_none() && !contacts_settled)
                || (t.assignee_external_id.is_some() && assignee_id.is_none() && !techs_settled);
        let hash = if refs_wait {
            out.counts.deferred += 1;
            waiting_refs.push(ext.clone());
            content_hash(&(hash, "contact or assignee not synced yet"))
        } else {
            hash
        };
        out.ops.push(Op::Ticket(Box::new(TicketOp {
            existing,
            company_id: company.local_id,
            contact_id,
            assignee_id,
            summary: t.summary.clone(),
            description,
            keep_status: pending.is_some(),
            status: t.status.clone(),
            closed,
            priority: t.priority.clone(),
            board: t.board.clone(),
            ticket_type: t.ticket_type.clone(),
            created_at: t.created_at,
            closed_at: t.closed_at.or(if closed { t.updated_at } else { None }),
            notes: kept,
            hash,
            remote_updated_at: t.updated_at,
            external_id: ext,
        })));
    }
    if no_company > 0 {
        out.events.push(mspbridge_store::sync::NewEvent::new(
            EventLevel::Info,
            Some(rt),
            None,
            &format!(
                "{no_company} tickets skipped on this page: their company is not imported (no company, excluded by filters, unlinked by an admin, or not in the company list {} served); a full pass picks them up once it is imported",
                ctx.provider
            ),
        ));
    }
    out.deferred_event(rt, "company", "companies", &waiting);
    out.deferred_event(
        rt,
        "contact or assignee",
        "contacts or technicians",
        &waiting_refs,
    );
    Ok(out)
}
