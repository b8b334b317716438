//! Syncing a billing integration (Stripe): customers, invoices, subscriptions and
//! payments, each list read page by page (the next page is read while the last one is
//! saved) and saved by content hash, so an unchanged re-read writes nothing.
//!
//! The first run and then one a day read every list whole (the reconcile): what the
//! vendor no longer lists is marked removed, a removed customer's company goes inactive
//! in the mapping grid. Runs in between read what was created since the watermark (less
//! five minutes) and every open invoice again, and read one by one the invoices kept as
//! open that Stripe no longer lists open (paid or voided while a webhook was missed);
//! webhooks bring the rest as it happens. A customer carrying a portal company's id in its metadata is
//! linked to that company (in the link history, undoable), unless an admin unlinked it or
//! the company is linked to another customer. A page that cannot be read stops its list:
//! the run is partial and the watermark stays, so the next run reads the window again.

use std::collections::{BTreeMap, HashSet};

use mspbridge_domain::billing::BillingCustomer;
use mspbridge_domain::sync::{Counts, EventLevel, RecordType};
use mspbridge_domain::{CompanyId, IntegrationId, TenantId};
use mspbridge_providers::billing::{BillingError, BillingPage, BillingSource, ListQuery};
use mspbridge_store::mapping::LinkRequest;
use mspbridge_store::sync::NewEvent;

use crate::Engine;

pub(crate) type RunOutcome = (BTreeMap<RecordType, Counts>, Vec<String>, u64, u64);

/// What an incremental read starts before the watermark (objects created while the last
/// run was reading).
const OVERLAP_SECS: i64 = 300;

#[derive(Clone, Copy, PartialEq, Eq)]
enum List {
    Customers,
    Invoices,
    OpenInvoices,
    Subscriptions,
    Payments,
}

impl List {
    fn record(self) -> RecordType {
        match self {
            List::Customers => RecordType::Companies,
            List::Invoices | List::OpenInvoices => RecordType::Invoices,
            List::Subscriptions => RecordType::Subscriptions,
            List::Payments => RecordType::Payments,
        }
    }

    fn table(self) -> &'static str {
        match self {
            List::Customers => "customers",
            List::Invoices | List::OpenInvoices => "invoices",
            List::Subscriptions => "subscriptions",
            List::Payments => "payments",
        }
    }
}

/// One page, whatever its kind.
enum Page {
    Customers(BillingPage<BillingCustomer>),
    Invoices(BillingPage<mspbridge_domain::billing::BillingInvoice>),
    Subscriptions(BillingPage<mspbridge_domain::billing::BillingSubscription>),
    Payments(BillingPage<mspbridge_domain::billing::BillingPayment>),
}

impl Page {
    fn next(&self) -> Option<String> {
        match self {
            Page::Customers(p) => p.next.clone(),
            Page::Invoices(p) => p.next.clone(),
            Page::Subscriptions(p) => p.next.clone(),
            Page::Payments(p) => p.next.clone(),
        }
    }
}

async fn fetch(
    source: &dyn BillingSource,
    list: List,
    q: &ListQuery,
) -> Result<Page, BillingError> {
    Ok(match list {
        List::Customers => Page::Customers(source.customers(q).await?),
        List::Invoices | List::OpenInvoices => Page::Invoices(source.invoices(q).await?),
        List::Subscriptions => Page::Subscriptions(source.subscriptions(q).await?),
        List::Payments => Page::Payments(source.payments(q).await?),
    })
}

/// What one list gave.
#[derive(Default)]
struct ListOutcome {
    counts: Counts,
    seen_ids: Vec<String>,
    /// The list was read to its end.
    complete: bool,
    stop: Option<String>,
    events: Vec<NewEvent>,
    customers: Vec<BillingCustomer>,
}

pub(crate) async fn run(
    engine: &Engine,
    tenant: TenantId,
    integration: &mspbridge_domain::integration::Integration,
    run_id: i64,
    source: &dyn BillingSource,
) -> Result<RunOutcome, String> {
    let id = integration.id;
    let started = engine.now();
    let account = engine
        .store
        .billing_account(tenant, id)
        .await
        .map_err(|e| e.to_string())?;
    let full = account.watermark.is_none()
        || account
            .last_full_at
            .is_none_or(|t| started - t >= engine.config.reconcile_every);
    let since = if full {
        None
    } else {
        account.watermark.map(|w| w - OVERLAP_SECS)
    };
    let mut lists = vec![List::Customers, List::Invoices];
    if !full {
        lists.push(List::OpenInvoices);
    }
    lists.extend([List::Subscriptions, List::Payments]);

    let mut counts: BTreeMap<RecordType, Counts> = BTreeMap::new();
    let mut stops = Vec::new();
    let mut events = Vec::new();
    events.push(NewEvent::new(
        EventLevel::Info,
        None,
        None,
        &if full {
            "Reading every customer, invoice, subscription and payment (the daily reconcile)"
                .to_string()
        } else {
            "Reading what was created since the last run, and every open invoice again".to_string()
        },
    ));
    let mut all_complete = true;
    for list in lists {
        let q = ListQuery {
            created_gte: if list == List::OpenInvoices {
                None
            } else {
                since
            },
            status: (list == List::OpenInvoices).then(|| "open".to_string()),
            starting_after: None,
        };
        let mut o = read_list(engine, tenant, id, source, list, q).await;
        if full && o.complete {
            match engine
                .store
                .billing_remove_unseen(tenant, id, list.table(), &o.seen_ids, engine.now())
                .await
            {
                Ok(n) => {
                    o.counts.deactivated += n;
                    if n > 0 {
                        o.events.push(NewEvent::new(
                            EventLevel::Info,
                            Some(list.record()),
                            None,
                            &format!("{n} {} no longer in Stripe: marked removed", list.table()),
                        ));
                    }
                }
                Err(e) => o.stop = Some(format!("{}: {e}", list.table())),
            }
        }
        if list == List::OpenInvoices && o.complete {
            let open_now = std::mem::take(&mut o.seen_ids);
            reread_closed(engine, tenant, id, source, &open_now, &mut o).await;
            o.seen_ids = open_now;
        }
        if list == List::Customers && !o.customers.is_empty() {
            let customers = std::mem::take(&mut o.customers);
            link_by_identity(engine, tenant, id, run_id, &customers, &mut o).await;
        }
        all_complete &= o.complete && o.stop.is_none();
        if let Some(s) = o.stop {
            stops.push(s);
        }
        events.extend(o.events);
        counts.entry(list.record()).or_default().merge(&o.counts);
    }
    if all_complete {
        if let Err(e) = engine
            .store
            .billing_mark_read(
                tenant,
                id,
                started.timestamp(),
                full.then_some(started),
                engine.now(),
            )
            .await
        {
            stops.push(format!("the watermark could not be saved: {e}"));
        }
    } else {
        events.push(NewEvent::new(
            EventLevel::Warning,
            None,
            None,
            "Not every list was read to its end: the next run reads the same window again",
        ));
    }
    if let Err(e) = engine
        .store
        .add_events(tenant, run_id, &events, engine.now())
        .await
    {
        tracing::warn!(error = %e, "could not log the billing sync's events");
    }
    Ok((counts, stops, source.requests(), source.bytes()))
}

/// One list to its end (or its first failure), the next page read while the last one
/// is saved.
async fn read_list(
    engine: &Engine,
    tenant: TenantId,
    id: IntegrationId,
    source: &dyn BillingSource,
    list: List,
    q: ListQuery,
) -> ListOutcome {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Page, BillingError>>(1);
    let reading = async move {
        let mut q = q;
        loop {
            let page = fetch(source, list, &q).await;
            let next = page.as_ref().ok().and_then(Page::next);
            let failed = page.is_err();
            if tx.send(page).await.is_err() || failed {
                break;
            }
            match next {
                Some(after) => q.starting_after = Some(after),
                None => break,
            }
        }
    };
    let saving = async {
        let mut o = ListOutcome::default();
        let rt = list.record();
        while let Some(page) = rx.recv().await {
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    o.stop = Some(format!("{}: {e}", list.table()));
                    o.events.push(NewEvent::new(
                        EventLevel::Error,
                        Some(rt),
                        None,
                        &format!("Reading {} stopped: {e}", list.table()),
                    ));
                    return o;
                }
            };
            let last = page.next().is_none();
            let now = engine.now();
            let (seen, rejected, written) = match &page {
                Page::Customers(p) => {
                    o.seen_ids
                        .extend(p.records.iter().map(|r| r.external_id.clone()));
                    o.customers.extend(p.records.iter().cloned());
                    let w = engine
                        .store
                        .billing_save_customers(tenant, id, &p.records, now)
                        .await;
                    (p.records.len(), &p.rejected, w)
                }
                Page::Invoices(p) => {
                    o.seen_ids
                        .extend(p.records.iter().map(|r| r.external_id.clone()));
                    let w = engine
                        .store
                        .billing_save_invoices(tenant, id, &p.records, now)
                        .await;
                    (p.records.len(), &p.rejected, w)
                }
                Page::Subscriptions(p) => {
                    o.seen_ids
                        .extend(p.records.iter().map(|r| r.external_id.clone()));
                    let w = engine
                        .store
                        .billing_save_subscriptions(tenant, id, &p.records, now)
                        .await;
                    (p.records.len(), &p.rejected, w)
                }
                Page::Payments(p) => {
                    o.seen_ids
                        .extend(p.records.iter().map(|r| r.external_id.clone()));
                    let w = engine
                        .store
                        .billing_save_payments(tenant, id, &p.records, now)
                        .await;
                    (p.records.len(), &p.rejected, w)
                }
            };
            let written = match written {
                Ok(w) => (w as usize).min(seen) as u64,
                Err(e) => {
                    o.stop = Some(format!("{}: could not be saved: {e}", list.table()));
                    return o;
                }
            };
            o.counts.seen += (seen + rejected.len()) as u64;
            o.counts.updated += written;
            o.counts.unchanged += seen as u64 - written;
            o.counts.failed += rejected.len() as u64;
            // An unreadable record is still there: a reconcile must not mark it removed.
            o.seen_ids.extend(
                rejected
                    .iter()
                    .filter_map(|r| r.split_once(": ").map(|(id, _)| id.to_string()))
                    .filter(|id| !id.is_empty() && id != "(no id)"),
            );
            for r in rejected {
                let (ext, why) = r.split_once(": ").unwrap_or(("", r.as_str()));
                o.events.push(NewEvent::new(
                    EventLevel::Warning,
                    Some(rt),
                    (!ext.is_empty()).then_some(ext),
                    &format!("skipped: Stripe's {} {ext} could not be read ({why}); the next run reads it again", list.table()),
                ));
            }
            if last {
                o.complete = true;
            }
        }
        o
    };
    let ((), o) = tokio::join!(reading, saving);
    o
}

/// Invoices kept here as open that Stripe no longer lists as open (paid, voided or marked
/// uncollectible while a webhook was missed) are read again one by one (at most
/// [`REREAD_LIMIT`] a run; the daily reconcile reads everything).
async fn reread_closed(
    engine: &Engine,
    tenant: TenantId,
    id: IntegrationId,
    source: &dyn BillingSource,
    open_now: &[String],
    o: &mut ListOutcome,
) {
    let open_now: HashSet<&str> = open_now.iter().map(String::as_str).collect();
    let kept = match engine
        .store
        .billing_open_invoice_ids(tenant, id, 10_000)
        .await
    {
        Ok(k) => k,
        Err(e) => {
            o.stop = Some(format!("open invoices: {e}"));
            return;
        }
    };
    let closed: Vec<String> = kept
        .into_iter()
        .filter(|x| !open_now.contains(x.as_str()))
        .take(REREAD_LIMIT)
        .collect();
    for x in closed {
        o.counts.seen += 1;
        match source.invoice(&x).await {
            Ok(mspbridge_providers::billing::Current::Found(inv)) => {
                match engine
                    .store
                    .billing_save_invoices(tenant, id, &[inv], engine.now())
                    .await
                {
                    Ok(w) if w > 0 => o.counts.updated += 1,
                    Ok(_) => o.counts.unchanged += 1,
                    Err(e) => {
                        o.counts.failed += 1;
                        o.stop = Some(format!("invoice {x}: {e}"));
                    }
                }
            }
            Ok(mspbridge_providers::billing::Current::Gone) => {
                o.counts.unchanged += 1;
                if let Ok(n) = engine
                    .store
                    .billing_remove(tenant, id, "invoices", &x, engine.now())
                    .await
                {
                    o.counts.deactivated += n;
                }
            }
            Err(e) => {
                o.counts.failed += 1;
                o.events.push(NewEvent::new(
                    EventLevel::Warning,
                    Some(RecordType::Invoices),
                    Some(&x),
                    &format!("skipped: invoice {x} is no longer listed open and could not be read again ({e}); the next run tries again"),
                ));
            }
        }
    }
}

/// Invoices no longer listed open that one run reads again.
const REREAD_LIMIT: usize = 500;

/// Links customers that carry a portal company's id (written by the portal when an admin
/// linked or created them) to that company.
async fn link_by_identity(
    engine: &Engine,
    tenant: TenantId,
    id: IntegrationId,
    run_id: i64,
    customers: &[BillingCustomer],
    o: &mut ListOutcome,
) {
    let hinted: Vec<&BillingCustomer> = customers
        .iter()
        .filter(|c| c.company_hint.is_some())
        .collect();
    if hinted.is_empty() {
        return;
    }
    let ids: Vec<String> = hinted.iter().map(|c| c.external_id.clone()).collect();
    let Ok(links) = engine.store.links(id, RecordType::Companies, &ids).await else {
        return;
    };
    let unlinked = engine.store.unlinked_by_admin(id).await.unwrap_or_default();
    let mut claimed: HashSet<i64> = HashSet::new();
    let mut requests = Vec::new();
    for c in hinted {
        let Some(company) = c.company_hint else {
            continue;
        };
        if links.contains_key(&c.external_id) || unlinked.contains(&c.external_id) {
            continue;
        }
        let name = match engine.store.get_company(tenant, CompanyId(company)).await {
            Ok(co) if co.active => co.name,
            _ => {
                o.events.push(NewEvent::new(
                    EventLevel::Warning,
                    Some(RecordType::Companies),
                    Some(&c.external_id),
                    &format!(
                        "customer '{}' names portal company {company}, which does not exist here or is inactive; map it on the company mapping grid",
                        c.display_name()
                    ),
                ));
                continue;
            }
        };
        let taken = claimed.contains(&company)
            || !engine
                .store
                .linked_local_ids(id, RecordType::Companies, &[company])
                .await
                .unwrap_or_default()
                .is_empty();
        if taken {
            o.events.push(NewEvent::new(
                EventLevel::Warning,
                Some(RecordType::Companies),
                Some(&c.external_id),
                &format!(
                    "customer '{}' names portal company '{name}', which is already linked to another Stripe customer; choose one on the company mapping grid",
                    c.display_name()
                ),
            ));
            continue;
        }
        claimed.insert(company);
        o.events.push(NewEvent::new(
            EventLevel::Info,
            Some(RecordType::Companies),
            Some(&c.external_id),
            &format!(
                "customer '{}' linked to portal company '{name}' (its metadata names it)",
                c.display_name()
            ),
        ));
        requests.push(LinkRequest {
            integration: id,
            external_id: c.external_id.clone(),
            company: Some(CompanyId(company)),
        });
    }
    if requests.is_empty() {
        return;
    }
    match engine
        .store
        .apply_company_links(
            tenant,
            &requests,
            "identity_link",
            "sync",
            Some(&format!("run-{run_id}")),
            engine.now(),
        )
        .await
    {
        Ok(_) => {}
        Err(e) => o.events.push(NewEvent::new(
            EventLevel::Warning,
            Some(RecordType::Companies),
            None,
            &format!("customers could not be linked by their metadata: {e}"),
        )),
    }
}
