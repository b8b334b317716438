//! One run's passes as a three-stage pipeline, so vendor latency and database work overlap:
//!
//! ```text
//! fetch ──page──▶ decide ──ops──▶ commit (one transaction per page, fenced by the lease)
//! ```
//!
//! The fetcher walks every planned pass in order (companies, contacts, technicians), one
//! request at a time, at most one page ahead of the decider. The decider reads what it needs
//! from the store and turns a page into writes; it starts on a page before the previous one
//! is committed only when that cannot change its answer (the pages' conflict keys do not
//! meet, and the pages belong to one pass: contacts are decided only after every company
//! page is committed). The committer writes page by page in order, with the pass checkpoint
//! in the same transaction, so a crash resumes exactly as it would from a sequential run.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use chrono::{DateTime, Utc};
use mspbridge_domain::TenantId;
use mspbridge_domain::integration::Integration;
use mspbridge_domain::sync::{Counts, EventLevel, RecordType, SyncOptions};
use mspbridge_providers::source::{PageRequest, SourceError};
use mspbridge_store::StoreError;
use mspbridge_store::sync::{CheckpointGate, NewEvent, PageCommit, PassState};
use tokio::sync::{mpsc, watch};

use crate::apply::{self, Page, PageOutcome};
use crate::{Engine, PassStop, Source};

/// One record type's pass, planned (and its checkpoint written) before any page is fetched.
struct Plan {
    record: RecordType,
    pass: PassState,
    sync_from: Option<DateTime<Utc>>,
}

enum Fetched {
    /// A page of pass `.0`, and how many of its records carried NUL characters (removed).
    Page(usize, Page, u64),
    Failed(usize, SourceError),
}

enum Decided {
    Page {
        pass: usize,
        seq: u64,
        /// The page's place in its pass (0, 1, …), for the checkpoint gate.
        page_no: u64,
        out: Box<PageOutcome>,
        state: PassState,
        last: bool,
    },
    Failed {
        pass: usize,
        seq: u64,
        stop: PassStop,
    },
}

/// Which pages of a pass are committed, for the checkpoint gate: pages may commit out of
/// order, and the checkpoint may only name a page when every page before it is committed.
#[derive(Default)]
struct Progress {
    /// Every page below this number is committed.
    head: u64,
    /// Committed pages at or above `head`, with the pass state after each.
    ahead: BTreeMap<u64, PassState>,
}

impl Progress {
    fn committed(&mut self, page_no: u64, state: PassState) {
        self.ahead.insert(page_no, state);
        while self.ahead.remove(&self.head).is_some() {
            self.head += 1;
        }
    }

    /// Page `page_no` (state `state`) is about to commit: the checkpoint may name it, or a
    /// later page already committed right after it, only if every earlier page is committed.
    fn gate(this: &Arc<Mutex<Progress>>, page_no: u64, state: PassState) -> CheckpointGate {
        let this = this.clone();
        Arc::new(move || {
            let p = lock(&this);
            if p.head != page_no {
                return None;
            }
            let mut last = state.clone();
            let mut next = page_no + 1;
            while let Some(s) = p.ahead.get(&next) {
                last = s.clone();
                next += 1;
            }
            Some(last)
        })
    }
}

fn lock(m: &Mutex<Progress>) -> std::sync::MutexGuard<'_, Progress> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Items the committer has finished (committed, skipped or logged), possibly out of order;
/// `finish` returns the highest number below which all are finished.
#[derive(Default)]
struct Done {
    contiguous: u64,
    ahead: std::collections::BTreeSet<u64>,
}

impl Done {
    fn finish(&mut self, seq: u64) -> u64 {
        self.ahead.insert(seq);
        while self.ahead.remove(&(self.contiguous + 1)) {
            self.contiguous += 1;
        }
        self.contiguous
    }
}

/// What the passes of one run did: counts per record type, and why passes stopped early.
pub(crate) struct PassesOutcome {
    pub counts: BTreeMap<RecordType, Counts>,
    pub stops: Vec<String>,
    pub any_complete: bool,
}

impl PassStop {
    /// Stops the whole run, not only this pass.
    fn is_fatal(&self) -> bool {
        matches!(
            self,
            PassStop::Source(SourceError::Auth(_)) | PassStop::Store(StoreError::LeaseLost)
        )
    }
}

impl Engine {
    /// Reads each selected record type's cursor and writes where its pass starts: a pass
    /// interrupted by a crash, a kill or a vendor outage continues where it stopped.
    async fn plan(
        &self,
        integration: &Integration,
        options: &SyncOptions,
        run_id: i64,
        source: &Source,
    ) -> Result<Vec<Plan>, StoreError> {
        let id = integration.id;
        let now = self.now();
        let mut plans = Vec::new();
        let planned = RecordType::ALL
            .into_iter()
            .filter(|r| options.syncs(*r) && source.supports(*r));
        for record in planned {
            let cursor = self.store.cursor(id, record).await?;
            let sync_from = if options.initial_import {
                None
            } else {
                Some(cursor.sync_from.unwrap_or(integration.created_at))
            };
            let pass = match cursor.pass {
                // Records the interrupted pass deferred lie on pages it has done: it starts
                // again from its first page (same window), so this run reads them again.
                Some(p) if p.deferred > 0 => {
                    tracing::info!(
                        record = record.as_str(),
                        deferred = p.deferred,
                        "restarting an interrupted pass that deferred records"
                    );
                    PassState {
                        after: None,
                        deferred: 0,
                        ..p
                    }
                }
                Some(p) => {
                    tracing::info!(record = record.as_str(), after = ?p.after, "resuming an interrupted pass");
                    p
                }
                None => {
                    let due_full = cursor
                        .last_full_pass_at
                        .is_none_or(|t| t + self.config.reconcile_every <= now);
                    // An RMM has no change feed: every pass lists everything, so every
                    // pass is full (what it did not see is gone once it completes).
                    let full = source.full_sweeps()
                        || (due_full && (options.initial_import || cursor.watermark.is_some()));
                    let since = if full {
                        None
                    } else {
                        cursor
                            .watermark
                            .or(sync_from)
                            .map(|w| w - self.config.overlap)
                    };
                    PassState {
                        run_id,
                        full,
                        since,
                        after: None,
                        max_seen: None,
                        deferred: 0,
                    }
                }
            };
            self.store
                .begin_pass(id, record, &self.worker, sync_from, &pass)
                .await?;
            plans.push(Plan {
                record,
                pass,
                sync_from,
            });
        }
        Ok(plans)
    }

    /// Runs every selected pass through the pipeline. `Err` only when nothing could start.
    pub(crate) async fn run_pipeline(
        &self,
        tenant: TenantId,
        integration: &Integration,
        options: &SyncOptions,
        run_id: i64,
        source: &Source,
        synced: &[RecordType],
    ) -> Result<PassesOutcome, String> {
        let plans = self
            .plan(integration, options, run_id, source)
            .await
            .map_err(|e| PassStop::Store(e).to_string())?;
        let plans = &plans;
        let stopped: Vec<AtomicBool> = plans.iter().map(|_| AtomicBool::new(false)).collect();
        let stopped = &stopped;
        let provider = integration.provider.descriptor().name;
        let (fetched_tx, mut fetched_rx) = mpsc::channel::<Fetched>(1);
        let (decided_tx, mut decided_rx) = mpsc::channel::<Decided>(1);
        let (committed_tx, mut committed_rx) = watch::channel(0u64);
        // Which passes have ended (committed to the end, or stopped): the tickets pass reads
        // company links while fetching, so it starts fetching once the passes it depends on
        // have ended.
        let (ended_tx, mut ended_rx) = watch::channel(vec![false; plans.len()]);

        let fetcher = async move {
            for (i, plan) in plans.iter().enumerate() {
                if plan.record == RecordType::Tickets {
                    let deps: Vec<usize> = plans
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| plan.record.depends_on().contains(&p.record))
                        .map(|(j, _)| j)
                        .collect();
                    if ended_rx
                        .wait_for(|v| deps.iter().all(|j| v[*j]))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                let mut after = plan.pass.after.clone();
                loop {
                    if stopped[i].load(Ordering::Acquire) {
                        break;
                    }
                    let req = PageRequest {
                        since: plan.pass.since,
                        after: after.take(),
                    };
                    // Each page with how many of its records carried NUL characters, which
                    // are removed here, before the store sees any of its text.
                    let cleaned = |mut page: Page| {
                        let n = page.strip_nul();
                        (page, n)
                    };
                    let page = match (plan.record, source) {
                        (RecordType::Companies, Source::Psa(s)) => {
                            s.companies(&req).await.map(Page::Companies).map(cleaned)
                        }
                        (RecordType::Contacts, Source::Psa(s)) => {
                            s.contacts(&req).await.map(Page::Contacts).map(cleaned)
                        }
                        (RecordType::Technicians, Source::Psa(s)) => s
                            .technicians(&req)
                            .await
                            .map(Page::Technicians)
                            .map(cleaned),
                        (RecordType::Tickets, Source::Psa(s)) => match s.ticket_source() {
                            Some(tickets) => crate::tickets::fetch(
                                self.store.as_ref(),
                                integration.id,
                                options,
                                tickets,
                                &req,
                            )
                            .await
                            .map(|(page, n)| (Page::Tickets(page), n)),
                            None => Err(SourceError::Unavailable(format!(
                                "{provider} tickets are not imported by this connector"
                            ))),
                        },
                        (RecordType::Companies, Source::Rmm(s)) => {
                            s.sites(&req).await.map(Page::Sites).map(cleaned)
                        }
                        (RecordType::Devices, Source::Rmm(s)) => {
                            s.devices(&req).await.map(Page::Devices).map(cleaned)
                        }
                        (RecordType::Alerts, Source::Rmm(s)) => {
                            s.open_alerts(&req).await.map(Page::Alerts).map(cleaned)
                        }
                        (record, _) => Err(SourceError::Unavailable(format!(
                            "{provider} has no {} to sync",
                            record.as_str()
                        ))),
                    };
                    match page {
                        Ok((page, cleaned)) => {
                            after = page.next();
                            let done = after.is_none();
                            if fetched_tx
                                .send(Fetched::Page(i, page, cleaned))
                                .await
                                .is_err()
                                || done
                            {
                                break;
                            }
                        }
                        Err(e) => {
                            let fatal = matches!(e, SourceError::Auth(_));
                            if fetched_tx.send(Fetched::Failed(i, e)).await.is_err() || fatal {
                                return;
                            }
                            break;
                        }
                    }
                }
                if fetched_tx.is_closed() {
                    return;
                }
            }
        };

        let decider = async move {
            let contexts: Vec<apply::Context<'_>> = plans
                .iter()
                .map(|p| apply::Context {
                    store: self.store.as_ref(),
                    tenant,
                    integration: integration.id,
                    options,
                    sync_from: p.sync_from,
                    provider,
                    names: Default::default(),
                    synced,
                })
                .collect();
            let mut states: Vec<PassState> = plans.iter().map(|p| p.pass.clone()).collect();
            // Pages handed to the committer and not yet committed: (seq, pass, conflict keys).
            let mut in_flight: VecDeque<(u64, usize, HashSet<String>)> = VecDeque::new();
            // Every item sent to the committer gets the next number; the committer
            // publishes the highest number below which everything is committed.
            let mut seq = 0u64;
            let mut page_nos: Vec<u64> = plans.iter().map(|_| 0).collect();
            while let Some(item) = fetched_rx.recv().await {
                let (i, page, cleaned) = match item {
                    Fetched::Failed(i, e) => {
                        seq += 1;
                        let stop = PassStop::Source(e);
                        if decided_tx
                            .send(Decided::Failed { pass: i, seq, stop })
                            .await
                            .is_err()
                        {
                            return;
                        }
                        continue;
                    }
                    Fetched::Page(i, page, cleaned) => (i, page, cleaned),
                };
                if stopped[i].load(Ordering::Acquire) {
                    continue;
                }
                let keys = page.conflict_keys();
                let done = *committed_rx.borrow();
                in_flight.retain(|(s, _, _)| *s > done);
                let needs = plans[i].record.depends_on();
                let wait_for = in_flight
                    .iter()
                    .filter(|(_, pass, k)| {
                        if *pass == i {
                            !k.is_disjoint(&keys)
                        } else {
                            needs.contains(&plans[*pass].record)
                        }
                    })
                    .map(|(s, _, _)| *s)
                    .max();
                if let Some(target) = wait_for {
                    if committed_rx.wait_for(|c| *c >= target).await.is_err() {
                        return;
                    }
                    in_flight.retain(|(s, _, _)| *s > target);
                }
                let next = page.next();
                let state = &mut states[i];
                let out = match apply::decide(&contexts[i], page, state.full, cleaned).await {
                    Ok(out) => out,
                    Err(e) => {
                        stopped[i].store(true, Ordering::Release);
                        seq += 1;
                        let stop = PassStop::Store(e);
                        if decided_tx
                            .send(Decided::Failed { pass: i, seq, stop })
                            .await
                            .is_err()
                        {
                            return;
                        }
                        continue;
                    }
                };
                state.after = next.clone();
                state.deferred += out.counts.deferred;
                state.max_seen = match (state.max_seen, out.max_seen) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                seq += 1;
                in_flight.push_back((seq, i, keys));
                let page_no = page_nos[i];
                page_nos[i] += 1;
                let decided = Decided::Page {
                    pass: i,
                    seq,
                    page_no,
                    out: Box::new(out),
                    state: state.clone(),
                    last: next.is_none(),
                };
                if decided_tx.send(decided).await.is_err() {
                    return;
                }
            }
        };

        let lanes = self.store.concurrent_page_commits().max(1);
        let committer = async move {
            let mut counts: Vec<Counts> = plans.iter().map(|_| Counts::default()).collect();
            let mut ended: Vec<Option<Result<(), String>>> = plans.iter().map(|_| None).collect();
            let progress: Vec<Arc<Mutex<Progress>>> =
                plans.iter().map(|_| Arc::default()).collect();
            let mut done = Done::default();
            let mut commits = FuturesUnordered::new();
            let mut in_flight: Vec<usize> = plans.iter().map(|_| 0).collect();
            let mut pending: Option<Decided> = None;
            let mut input_open = true;
            let mut renewed_at = self.now();
            let mut renew_due = false;
            loop {
                if renew_due && commits.is_empty() {
                    renew_due = false;
                    match self
                        .store
                        .renew_lease(integration.id, &self.worker, self.now() + self.config.lease)
                        .await
                    {
                        Ok(true) => renewed_at = self.now(),
                        Ok(false) => {
                            // Every pass's next page is fenced out; stop them all.
                            for (pass, plan) in plans.iter().enumerate() {
                                if ended[pass].is_none() {
                                    let stop = PassStop::Store(StoreError::LeaseLost);
                                    self.stop_pass(
                                        tenant,
                                        run_id,
                                        plan.record,
                                        stop,
                                        &mut ended[pass],
                                        &stopped[pass],
                                    )
                                    .await;
                                }
                            }
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "could not renew the sync lease; the next page's fence decides")
                        }
                    }
                }
                ended_tx.send_if_modified(|v| {
                    let now: Vec<bool> = ended.iter().map(Option::is_some).collect();
                    let changed = *v != now;
                    *v = now;
                    changed
                });
                let take = input_open && pending.is_none() && commits.len() < lanes;
                // A page held back for a renewal starts as soon as nothing is in flight
                // (with nothing to wait for, the select below would end the loop).
                let idle_with_pending = pending.is_some() && commits.is_empty();
                if !idle_with_pending {
                    tokio::select! {
                        finished = commits.next(), if !commits.is_empty() => {
                            let Some((pass, seq, page_no, state, last, result)) = finished else { continue };
                            let (pass, page_no, state, last): (usize, u64, PassState, bool) = (pass, page_no, state, last);
                            let result: Result<(Counts, u64), PassStop> = result;
                            in_flight[pass] -= 1;
                            let mut fatal = false;
                            match result {
                                Ok((page_counts, deactivated)) => {
                                    counts[pass].merge(&page_counts);
                                    counts[pass].deactivated += deactivated;
                                    lock(progress[pass].as_ref()).committed(page_no, state);
                                    if last && ended[pass].is_none() {
                                        ended[pass] = Some(Ok(()));
                                    }
                                }
                                Err(stop) => {
                                    fatal = stop.is_fatal();
                                    self.stop_pass(tenant, run_id, plans[pass].record, stop, &mut ended[pass], &stopped[pass]).await;
                                }
                            }
                            committed_tx.send_replace(done.finish(seq));
                            if fatal {
                                break;
                            }
                            // Renewing waits for the page transactions in flight (they hold the
                            // lease row in share mode): it is due once a third of the lease has
                            // passed, and runs when no page transaction is in flight (no new one
                            // starts meanwhile); every page transaction is fenced anyway.
                            if self.now() - renewed_at > self.config.lease / 3 {
                                renew_due = true;
                            }
                        }
                        item = decided_rx.recv(), if take => match item {
                            None => input_open = false,
                            Some(item) => pending = Some(item),
                        },
                        else => break,
                    }
                }
                // The last page of a pass, and a pass that stopped, wait until every earlier
                // page of the pass is committed: the final checkpoint and the end of the pass
                // cover them all.
                let ready = !renew_due
                    && match &pending {
                        Some(Decided::Page { last: false, .. }) => true,
                        Some(Decided::Page { pass, .. } | Decided::Failed { pass, .. }) => {
                            in_flight[*pass] == 0
                        }
                        None => false,
                    };
                if !ready {
                    continue;
                }
                match pending.take() {
                    Some(Decided::Failed { pass, seq, stop }) => {
                        let fatal = stop.is_fatal();
                        self.stop_pass(
                            tenant,
                            run_id,
                            plans[pass].record,
                            stop,
                            &mut ended[pass],
                            &stopped[pass],
                        )
                        .await;
                        committed_tx.send_replace(done.finish(seq));
                        if fatal {
                            break;
                        }
                    }
                    Some(Decided::Page { pass, seq, .. }) if ended[pass].is_some() => {
                        committed_tx.send_replace(done.finish(seq));
                    }
                    Some(Decided::Page {
                        pass,
                        seq,
                        page_no,
                        out,
                        state,
                        last,
                    }) => {
                        let record = plans[pass].record;
                        let gate = (lanes > 1)
                            .then(|| Progress::gate(&progress[pass], page_no, state.clone()));
                        in_flight[pass] += 1;
                        commits.push(async move {
                            let result = self
                                .commit(
                                    tenant,
                                    integration,
                                    run_id,
                                    record,
                                    *out,
                                    state.clone(),
                                    gate,
                                    last,
                                )
                                .await;
                            (pass, seq, page_no, state, last, result)
                        });
                    }
                    None => {}
                }
            }
            (counts, ended)
        };

        let ((), (), (counts, ended)) = tokio::join!(fetcher, decider, committer);
        let mut outcome = PassesOutcome {
            counts: BTreeMap::new(),
            stops: Vec::new(),
            any_complete: false,
        };
        let mut unfinished = Vec::new();
        for ((plan, c), end) in plans.iter().zip(counts).zip(ended) {
            match end {
                Some(Ok(())) => outcome.any_complete = true,
                Some(Err(msg)) => outcome.stops.push(msg),
                // Not reached: an earlier pass stopped the run (its stop says why), or the
                // pipeline ended without the pass ending, which must not pass for success.
                None => {
                    unfinished.push(plan.record.as_str());
                    continue;
                }
            }
            outcome.counts.insert(plan.record, c);
        }
        if outcome.stops.is_empty() && !unfinished.is_empty() {
            tracing::error!(passes = ?unfinished, "sync passes ended without finishing");
            outcome.stops.push(format!(
                "{}: the pass did not finish in this run; the next run continues where it stopped",
                unfinished.join(", ")
            ));
        }
        Ok(outcome)
    }

    /// Records why a pass stopped (once) and tells the other stages to leave it.
    async fn stop_pass(
        &self,
        tenant: TenantId,
        run_id: i64,
        record: RecordType,
        stop: PassStop,
        ended: &mut Option<Result<(), String>>,
        stopped: &AtomicBool,
    ) {
        stopped.store(true, Ordering::Release);
        if ended.is_some() {
            return;
        }
        let msg = format!("{}: {stop}", record.as_str());
        tracing::warn!(record = record.as_str(), error = %stop, "pass stopped");
        let event = NewEvent::new(EventLevel::Error, Some(record), None, &msg);
        if let Err(e) = self
            .store
            .add_events(tenant, run_id, &[event], self.now())
            .await
        {
            tracing::error!(error = %e, "could not log why a pass stopped");
        }
        *ended = Some(Err(msg));
    }

    /// Commits one decided page with its checkpoint and, after the last page of a pass,
    /// finishes the pass (a complete full pass deactivates what it did not see).
    #[allow(clippy::too_many_arguments)]
    async fn commit(
        &self,
        tenant: TenantId,
        integration: &Integration,
        run_id: i64,
        record: RecordType,
        out: PageOutcome,
        state: PassState,
        checkpoint: Option<CheckpointGate>,
        last: bool,
    ) -> Result<(Counts, u64), PassStop> {
        let id = integration.id;
        let writes = !out.ops.is_empty() || !out.events.is_empty();
        // The last page of an incremental pass with nothing to write needs no checkpoint:
        // finishing the pass below moves the watermark.
        if writes || !last || state.full {
            let commit = PageCommit {
                record,
                ops: out.ops,
                companies: out.companies,
                events: out.events,
                auto_links: out.auto_links,
                pass: state,
                checkpoint,
            };
            self.store
                .commit_page(tenant, id, run_id, &self.worker, commit, self.now())
                .await
                .map_err(PassStop::Store)?;
        }
        let deactivated = if last {
            self.store
                .finish_pass(tenant, id, record, &self.worker, self.now())
                .await
                .map_err(PassStop::Store)?
        } else {
            0
        };
        Ok((out.counts, deactivated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(after: &str) -> PassState {
        PassState {
            run_id: 1,
            full: true,
            since: None,
            after: Some(after.to_string()),
            max_seen: None,
            deferred: 0,
        }
    }

    #[test]
    fn finished_items_count_only_without_gaps() {
        let mut done = Done::default();
        assert_eq!(done.finish(2), 0);
        assert_eq!(done.finish(3), 0);
        assert_eq!(done.finish(1), 3);
        assert_eq!(done.finish(4), 4);
    }

    #[test]
    fn the_checkpoint_never_names_a_page_before_an_uncommitted_one() {
        let progress = Arc::new(Mutex::new(Progress::default()));
        let after = |g: CheckpointGate| g().and_then(|s| s.after);
        // Pages 0 and 1 commit side by side; 1 finishes first.
        let gate0 = Progress::gate(&progress, 0, state("p0"));
        let gate1 = Progress::gate(&progress, 1, state("p1"));
        assert_eq!(after(gate1), None, "page 0 is still being committed");
        lock(&progress).committed(1, state("p1"));
        // Page 0 commits last: its checkpoint may cover page 1 too.
        assert_eq!(after(gate0), Some("p1".to_string()));
        lock(&progress).committed(0, state("p0"));
        assert_eq!(lock(&progress).head, 2);
        // Page 2 finds everything before it committed.
        let gate2 = Progress::gate(&progress, 2, state("p2"));
        assert_eq!(after(gate2), Some("p2".to_string()));
        // Page 4 while page 3 is in flight: no checkpoint.
        let gate4 = Progress::gate(&progress, 4, state("p4"));
        assert_eq!(after(gate4), None);
    }
}
