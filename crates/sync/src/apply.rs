//! Deciding what a page of vendor records changes in the portal: per record create,
//! update, unchanged or skip (with the reason), the role chain for new contacts, and the
//! events an admin reads in the sync log. Pure decisions over a few batched look-ups;
//! the writes happen in one transaction in the store.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use mspbridge_domain::sync::*;
use mspbridge_domain::{IntegrationId, TenantId};
use mspbridge_providers::source::{Rejected, SourcePage};
use mspbridge_store::sync::{AutoLinkRule, CatalogCompany, NewEvent, Op};
use mspbridge_store::{Store, StoreError};

pub struct Context<'a> {
    pub store: &'a dyn Store,
    pub tenant: TenantId,
    pub integration: IntegrationId,
    pub options: &'a SyncOptions,
    pub sync_from: Option<DateTime<Utc>>,
    pub provider: &'static str,
    /// Portal companies a new company may be linked to by name (companies pass).
    pub names: NameIndex,
    /// The record types the integration syncs (its saved options, whatever this run
    /// narrowed them to): a type it does not sync is never waited for.
    pub synced: &'a [RecordType],
}

impl Context<'_> {
    /// Whether records of type `parent` are all in the portal as far as a sync can put
    /// them there (`Cursor::settled`). A record whose parent is missing while the parent's
    /// type is not settled is deferred (read again next run), not skipped for good.
    pub(crate) async fn settled(&self, parent: RecordType) -> Result<bool, StoreError> {
        if !self.synced.contains(&parent) {
            return Ok(true);
        }
        Ok(self.store.cursor(self.integration, parent).await?.settled())
    }
}

/// The active portal companies this integration has no link to, by normalised name
/// (`mspbridge_matching::normalise`: case, accents, punctuation, "&"/"and", legal
/// suffixes). Read once, on the first company the pass would create; each portal company
/// is taken at most once, so two vendor companies are never linked to the same one.
#[derive(Default)]
pub struct NameIndex(tokio::sync::Mutex<Option<ByName>>);

/// Normalised name → the (id, name) of the portal companies carrying it.
type ByName = HashMap<String, Vec<(i64, String)>>;

enum NameMatch {
    None,
    One(i64, String),
    Several(Vec<String>),
}

impl NameIndex {
    async fn take(&self, ctx: &Context<'_>, name: &str) -> Result<NameMatch, StoreError> {
        let key = mspbridge_matching::normalise(name);
        if key.is_empty() {
            return Ok(NameMatch::None);
        }
        let mut guard = self.0.lock().await;
        let index = match &mut *guard {
            Some(index) => index,
            empty => {
                let mut index = ByName::new();
                for (id, n) in ctx
                    .store
                    .linkable_companies(ctx.tenant, ctx.integration)
                    .await?
                {
                    index
                        .entry(mspbridge_matching::normalise(&n))
                        .or_default()
                        .push((id, n));
                }
                empty.insert(index)
            }
        };
        Ok(match index.get(&key).map(Vec::as_slice) {
            None | Some([]) => NameMatch::None,
            Some([_]) => match index.remove(&key).and_then(|mut v| v.pop()) {
                Some((id, n)) => NameMatch::One(id, n),
                None => NameMatch::None,
            },
            Some(several) => NameMatch::Several(several.iter().map(|(_, n)| n.clone()).collect()),
        })
    }
}

/// Removes NUL characters from a page's records and rejections; how many records had any.
fn strip_nul_page<T: StripNul>(p: &mut SourcePage<T>) -> u64 {
    p.rejected.strip_nul();
    p.records.iter_mut().map(|r| u64::from(r.strip_nul())).sum()
}

pub enum Page {
    Companies(SourcePage<ExtCompany>),
    Contacts(SourcePage<ExtContact>),
    Technicians(SourcePage<ExtTechnician>),
    Tickets(SourcePage<ExtTicket>),
    /// An RMM's sites (its companies pass).
    Sites(SourcePage<mspbridge_domain::rmm::ExtSite>),
    Devices(SourcePage<mspbridge_domain::rmm::ExtDevice>),
    Alerts(SourcePage<mspbridge_domain::rmm::ExtAlert>),
}

impl Page {
    pub fn next(&self) -> Option<String> {
        match self {
            Page::Companies(p) => p.next.clone(),
            Page::Contacts(p) => p.next.clone(),
            Page::Technicians(p) => p.next.clone(),
            Page::Tickets(p) => p.next.clone(),
            Page::Sites(p) => p.next.clone(),
            Page::Devices(p) => p.next.clone(),
            Page::Alerts(p) => p.next.clone(),
        }
    }

    /// Removes NUL characters from every text the page carries (no database column can
    /// hold them on PostgreSQL): the record type and how many records had any.
    pub fn record_type(&self) -> RecordType {
        match self {
            Page::Companies(_) => RecordType::Companies,
            Page::Contacts(_) => RecordType::Contacts,
            Page::Technicians(_) => RecordType::Technicians,
            Page::Tickets(_) => RecordType::Tickets,
            Page::Sites(_) => RecordType::Companies,
            Page::Devices(_) => RecordType::Devices,
            Page::Alerts(_) => RecordType::Alerts,
        }
    }

    pub fn strip_nul(&mut self) -> u64 {
        match self {
            Page::Companies(p) => strip_nul_page(p),
            Page::Contacts(p) => strip_nul_page(p),
            Page::Technicians(p) => strip_nul_page(p),
            Page::Tickets(p) => strip_nul_page(p),
            Page::Sites(p) => strip_nul_page(p),
            Page::Devices(p) => strip_nul_page(p),
            Page::Alerts(p) => strip_nul_page(p),
        }
    }

    /// What deciding this page reads that committing an earlier page of the same pass can
    /// change: its records' links (a vendor may repeat a record on a later page) and, for
    /// technicians, the staff users matched by email. The pipeline decides a page before
    /// the previous one is committed only when their keys do not meet.
    pub fn conflict_keys(&self) -> HashSet<String> {
        fn ids<T>(p: &SourcePage<T>, id: impl Fn(&T) -> &str) -> HashSet<String> {
            p.records
                .iter()
                .map(|r| id(r).to_string())
                .chain(p.rejected.iter().filter_map(|r| r.external_id.clone()))
                .collect()
        }
        match self {
            Page::Companies(p) => ids(p, |c| &c.external_id),
            Page::Contacts(p) => ids(p, |c| &c.external_id),
            Page::Tickets(p) => ids(p, |t| &t.external_id),
            Page::Sites(p) => ids(p, |s| &s.external_id),
            Page::Devices(p) => ids(p, |d| &d.external_id),
            Page::Alerts(p) => ids(p, |a| &a.external_id),
            Page::Technicians(p) => {
                let mut keys = ids(p, |t| &t.external_id);
                keys.extend(
                    p.records
                        .iter()
                        .filter_map(|t| t.email.as_ref().map(|e| format!("email:{e}"))),
                );
                keys
            }
        }
    }
}

#[derive(Debug, Default)]
pub struct PageOutcome {
    pub ops: Vec<Op>,
    /// A companies page's every company, for the integration's company list.
    pub companies: Vec<CatalogCompany>,
    pub events: Vec<NewEvent>,
    pub counts: Counts,
    pub max_seen: Option<DateTime<Utc>>,
    /// Companies linked to a portal company by name (external id, portal company id),
    /// recorded in the company link history by the commit.
    pub auto_links: Vec<(String, i64, AutoLinkRule)>,
}

impl PageOutcome {
    pub(crate) fn event(&mut self, level: EventLevel, record: RecordType, ext: &str, msg: String) {
        self.events
            .push(NewEvent::new(level, Some(record), Some(ext), &msg));
    }

    pub(crate) fn skip(
        &mut self,
        record: RecordType,
        ext: &str,
        level: Option<EventLevel>,
        msg: String,
        full: bool,
    ) {
        self.counts.skipped += 1;
        if let Some(level) = level {
            self.event(level, record, ext, msg);
        }
        if full {
            // Skipped records still exist upstream: a full pass must not deactivate them.
            self.ops.push(Op::Seen {
                external_id: ext.to_string(),
            });
        }
    }

    /// A record skipped because something it belongs to is not synced yet while that
    /// record type's pass has not completed: counted as skipped and deferred, kept as seen
    /// in a full pass, and read again by the next run (the pass keeps its starting point).
    pub(crate) fn defer(&mut self, record: RecordType, ext: &str, full: bool) {
        self.counts.deferred += 1;
        self.skip(record, ext, None, String::new(), full);
    }

    /// One log line for the records of a page deferred because their `parent` is missing,
    /// naming up to five of them.
    pub(crate) fn deferred_event(
        &mut self,
        record: RecordType,
        parent: &str,
        pass: &str,
        ids: &[String],
    ) {
        if ids.is_empty() {
            return;
        }
        let shown: Vec<&str> = ids.iter().take(5).map(String::as_str).collect();
        let more = if ids.len() > shown.len() {
            format!(" and {} more", ids.len() - shown.len())
        } else {
            String::new()
        };
        self.events.push(NewEvent::new(
            EventLevel::Warning,
            Some(record),
            None,
            &format!(
                "{} {} wait for their {parent} ({}{more}): it is not in the portal and the {pass} pass has not completed; the next run reads them again",
                ids.len(),
                record.as_str(),
                shown.join(", "),
            ),
        ));
    }

    pub(crate) fn stamp(&mut self, t: Option<DateTime<Utc>>) {
        if let Some(t) = t {
            self.max_seen = Some(self.max_seen.map_or(t, |m| m.max(t)));
        }
    }

    /// A record that exists upstream but could not be synced this run: counted, logged,
    /// and (in a full pass) kept as seen, so it is retried, never deactivated.
    pub(crate) fn failed(&mut self, record: RecordType, ext: &str, msg: String, full: bool) {
        self.counts.failed += 1;
        self.event(EventLevel::Error, record, ext, msg);
        if full {
            self.ops.push(Op::Seen {
                external_id: ext.to_string(),
            });
        }
    }

    pub(crate) fn rejected(&mut self, record: RecordType, rejected: Vec<Rejected>, full: bool) {
        for r in rejected {
            self.counts.seen += 1;
            self.counts.failed += 1;
            let ext = r.external_id.clone().unwrap_or_default();
            self.event(
                EventLevel::Error,
                record,
                &ext,
                format!("skipped an unreadable vendor record: {}", r.reason),
            );
            if full && r.external_id.is_some() {
                self.ops.push(Op::Seen { external_id: ext });
            }
        }
    }
}

fn full_name(first: &str, last: &str) -> String {
    format!("{first} {last}").trim().to_string()
}

/// What a page changes; `cleaned` is how many of its records carried NUL characters
/// (removed by the fetcher, `Page::strip_nul`), for the log.
pub async fn decide(
    ctx: &Context<'_>,
    page: Page,
    full: bool,
    cleaned: u64,
) -> Result<PageOutcome, StoreError> {
    let record = page.record_type();
    let mut out = match page {
        Page::Companies(p) => companies(ctx, p, full).await,
        Page::Contacts(p) => contacts(ctx, p, full).await,
        Page::Technicians(p) => technicians(ctx, p, full).await,
        Page::Tickets(p) => crate::tickets::decide(ctx, p, full).await,
        Page::Sites(p) => crate::rmm::sites(ctx, p, full).await,
        Page::Devices(p) => crate::rmm::devices(ctx, p, full).await,
        Page::Alerts(p) => crate::rmm::alerts(ctx, p, full).await,
    }?;
    if cleaned > 0 {
        out.events.push(NewEvent::new(
            EventLevel::Warning,
            Some(record),
            None,
            &format!(
                "{cleaned} {} on this page carried NUL characters in their text ({} sent them); removed before storing",
                record.as_str(),
                ctx.provider
            ),
        ));
    }
    Ok(out)
}

pub(crate) fn before_sync_from(ctx: &Context<'_>, updated: Option<DateTime<Utc>>) -> bool {
    matches!((ctx.sync_from, updated), (Some(from), Some(u)) if u < from)
}

async fn companies(
    ctx: &Context<'_>,
    p: SourcePage<ExtCompany>,
    full: bool,
) -> Result<PageOutcome, StoreError> {
    let rt = RecordType::Companies;
    let mut out = PageOutcome::default();
    out.rejected(rt, p.rejected, full);
    let ids: Vec<String> = p.records.iter().map(|c| c.external_id.clone()).collect();
    let links = ctx.store.links(ctx.integration, rt, &ids).await?;
    let unlinked = if links.len() < ids.len() {
        ctx.store.unlinked_by_admin(ctx.integration).await?
    } else {
        HashSet::new()
    };
    for c in p.records {
        out.counts.seen += 1;
        out.stamp(c.updated_at);
        out.companies.push(CatalogCompany {
            external_id: c.external_id.clone(),
            name: c.name.clone(),
            active: c.active && !c.deleted,
            domains: identity_domains(&c.domains),
        });
        let link = links.get(&c.external_id);
        let ext = c.external_id.clone();
        if link.is_none() && unlinked.contains(&ext) {
            let msg = format!(
                "'{}' not imported: an admin unlinked it in the company mapping or deleted its portal company; link it there, import it from Settings → Companies, or unblock it under Blocked Companies",
                c.name
            );
            out.skip(rt, &ext, Some(EventLevel::Info), msg, full);
            continue;
        }
        if c.deleted {
            match link {
                Some(l) if !l.gone => {
                    out.counts.updated += 1;
                    out.counts.deactivated += 1;
                    out.event(
                        EventLevel::Info,
                        rt,
                        &ext,
                        format!(
                            "'{}' was deleted in {}; deactivated in the portal",
                            c.name, ctx.provider
                        ),
                    );
                    out.ops.push(Op::Company {
                        existing: Some(l.local_id),
                        external_id: ext,
                        name: c.name.clone(),
                        active: false,
                        hash: content_hash(&c),
                        remote_updated_at: c.updated_at,
                    });
                }
                _ => out.skip(rt, &ext, None, String::new(), false),
            }
            continue;
        }
        if let Some(reason) = ctx.options.company_excluded(&c) {
            let msg = format!("'{}' not synced: {reason}", c.name);
            out.skip(rt, &ext, link.map(|_| EventLevel::Info), msg, full);
            continue;
        }
        if link.is_none() && before_sync_from(ctx, c.updated_at) {
            out.skip(rt, &ext, None, String::new(), full);
            continue;
        }
        let hash = content_hash(&c);
        match link {
            Some(l) if l.content_hash == hash && !l.gone => {
                out.counts.unchanged += 1;
                if full {
                    out.ops.push(Op::Seen { external_id: ext });
                }
            }
            _ => {
                let mut existing = link.map(|l| l.local_id);
                if link.is_some() {
                    out.counts.updated += 1;
                } else {
                    match ctx.names.take(ctx, &c.name).await? {
                        NameMatch::None => out.counts.created += 1,
                        NameMatch::One(id, portal) if ctx.options.auto_link_by_name => {
                            existing = Some(id);
                            out.counts.linked += 1;
                            let msg = format!(
                                "'{}' linked to portal company \"{portal}\" ({}); no company created. Undo it in the company link history; the integration option \"Link a new company to the portal company with the same name\" turns this off",
                                c.name,
                                mspbridge_matching::why_same_name(&portal, &c.name)
                            );
                            out.event(EventLevel::Info, rt, &ext, msg);
                            out.auto_links
                                .push((ext.clone(), id, AutoLinkRule::SameName));
                        }
                        NameMatch::One(_, portal) => {
                            let msg = format!(
                                "'{}' not imported: portal company \"{portal}\" has the same name ({}) and automatic linking by name is off for this integration; it waits for an admin to link it to \"{portal}\" or import it as a new company in the company mapping",
                                c.name,
                                mspbridge_matching::why_same_name(&portal, &c.name)
                            );
                            out.skip(rt, &ext, Some(EventLevel::Info), msg, full);
                            continue;
                        }
                        NameMatch::Several(names) => {
                            let msg = format!(
                                "'{}' not imported: {} portal companies have the same name ({}); link the right one in the company mapping",
                                c.name,
                                names.len(),
                                names.join(", ")
                            );
                            out.skip(rt, &ext, Some(EventLevel::Warning), msg, full);
                            continue;
                        }
                    }
                }
                out.ops.push(Op::Company {
                    existing,
                    external_id: ext,
                    name: c.name.clone(),
                    active: c.active,
                    hash,
                    remote_updated_at: c.updated_at,
                });
            }
        }
    }
    Ok(out)
}

/// The matcher's form of a company's web/email addresses: distinct registrable hosts,
/// free-mail providers and non-domains left out.
fn identity_domains(raw: &[String]) -> Vec<String> {
    let mut out: Vec<String> = raw
        .iter()
        .filter_map(|d| mspbridge_matching::domain_of(d))
        .collect();
    out.sort();
    out.dedup();
    out
}

async fn contacts(
    ctx: &Context<'_>,
    p: SourcePage<ExtContact>,
    full: bool,
) -> Result<PageOutcome, StoreError> {
    let rt = RecordType::Contacts;
    let mut out = PageOutcome::default();
    out.rejected(rt, p.rejected, full);
    let ids: Vec<String> = p.records.iter().map(|c| c.external_id.clone()).collect();
    let company_ids: Vec<String> = p
        .records
        .iter()
        .filter_map(|c| c.company_external_id.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let links = ctx.store.links(ctx.integration, rt, &ids).await?;
    let companies = ctx
        .store
        .links(ctx.integration, RecordType::Companies, &company_ids)
        .await?;
    let local_companies: Vec<i64> = companies.values().map(|l| l.local_id).collect();
    let overrides = ctx
        .store
        .import_role_overrides(ctx.tenant, &local_companies)
        .await?;
    let new_emails: Vec<String> = p
        .records
        .iter()
        .filter(|c| !links.contains_key(&c.external_id))
        .filter_map(|c| c.email.clone())
        .collect();
    let manual = ctx
        .store
        .manual_users_by_email(ctx.tenant, &new_emails)
        .await?;
    let mut emails_in_page: HashMap<String, String> = HashMap::new();
    let mut not_imported_company = 0u64;
    let companies_settled = ctx.settled(RecordType::Companies).await?;
    let mut waiting: Vec<String> = Vec::new();

    for c in p.records {
        out.counts.seen += 1;
        out.stamp(c.updated_at);
        let ext = c.external_id.clone();
        let name = full_name(&c.first_name, &c.last_name);
        if let Some(email) = &c.email
            && let Some(other) = emails_in_page.insert(email.clone(), ext.clone())
        {
            out.event(
                EventLevel::Warning,
                rt,
                &ext,
                format!("duplicate candidate: contacts {other} and {ext} share the email {email}"),
            );
        }
        let company = c
            .company_external_id
            .as_ref()
            .and_then(|e| companies.get(e))
            .filter(|l| !l.gone);
        let link = links.get(&ext);
        let hash = content_hash(&c);
        if let Some(l) = link {
            // Linked users follow the vendor (name, email, active) but keep their role.
            if l.content_hash == hash && !l.gone {
                out.counts.unchanged += 1;
                if full {
                    out.ops.push(Op::Seen { external_id: ext });
                }
                continue;
            }
            let Some(company) = company else {
                if c.company_external_id.is_some() && !companies_settled {
                    out.defer(rt, &ext, full);
                    waiting.push(ext);
                    continue;
                }
                out.skip(
                    rt,
                    &ext,
                    Some(EventLevel::Warning),
                    format!("{name}: company is no longer synced; user left unchanged"),
                    full,
                );
                continue;
            };
            out.counts.updated += 1;
            if !c.active {
                out.counts.deactivated += 1;
                out.event(
                    EventLevel::Info,
                    rt,
                    &ext,
                    format!(
                        "{name} is inactive in {}; portal user disabled",
                        ctx.provider
                    ),
                );
            }
            out.ops.push(Op::CompanyUser {
                existing: Some(l.local_id),
                company_id: company.local_id,
                external_id: ext,
                email: c.email.clone(),
                phone: c.phone.clone(),
                first_name: c.first_name.clone(),
                last_name: c.last_name.clone(),
                role: None,
                contact_types: c.types.clone(),
                active: c.active,
                hash,
                remote_updated_at: c.updated_at,
            });
            continue;
        }
        if !ctx.options.auto_import_contacts {
            out.skip(rt, &ext, None, String::new(), full);
            continue;
        }
        let Some(company) = company else {
            if c.company_external_id.is_some() && !companies_settled {
                out.defer(rt, &ext, full);
                waiting.push(ext);
                continue;
            }
            not_imported_company += 1;
            out.skip(rt, &ext, None, String::new(), full);
            continue;
        };
        if !c.active {
            out.skip(rt, &ext, None, String::new(), full);
            continue;
        }
        if before_sync_from(ctx, c.updated_at) {
            out.skip(rt, &ext, None, String::new(), full);
            continue;
        }
        let Some(email) = c.email.clone() else {
            out.skip(
                rt,
                &ext,
                Some(EventLevel::Warning),
                format!(
                    "{name} has no email address in {}; not imported",
                    ctx.provider
                ),
                full,
            );
            continue;
        };
        if let Some((company_id, user_id)) = manual.get(&email) {
            out.skip(
                rt,
                &ext,
                Some(EventLevel::Warning),
                format!(
                    "duplicate candidate: {email} already belongs to manually created user {user_id} (company {company_id}); not imported and not changed"
                ),
                full,
            );
            continue;
        }
        let Some((role_id, source)) = choose_role(
            overrides.get(&company.local_id).copied(),
            &c.types,
            c.primary,
            ctx.options,
        ) else {
            out.counts.failed += 1;
            out.event(
                EventLevel::Error,
                rt,
                &ext,
                format!("{name}: no role applies and no default role is set"),
            );
            continue;
        };
        out.counts.created += 1;
        out.ops.push(Op::CompanyUser {
            existing: None,
            company_id: company.local_id,
            external_id: ext,
            email: Some(email),
            phone: c.phone.clone(),
            first_name: c.first_name.clone(),
            last_name: c.last_name.clone(),
            role: Some((role_id, source.explain(ctx.provider))),
            contact_types: c.types.clone(),
            active: true,
            hash,
            remote_updated_at: c.updated_at,
        });
    }
    if not_imported_company > 0 {
        out.events.push(NewEvent::new(
            EventLevel::Info,
            Some(rt),
            None,
            &format!("{not_imported_company} contacts skipped on this page: their company is not imported (no company, excluded by filters, unlinked by an admin, or not in the company list {} served)", ctx.provider),
        ));
    }
    out.deferred_event(rt, "company", "companies", &waiting);
    Ok(out)
}

async fn technicians(
    ctx: &Context<'_>,
    p: SourcePage<ExtTechnician>,
    full: bool,
) -> Result<PageOutcome, StoreError> {
    let rt = RecordType::Technicians;
    let mut out = PageOutcome::default();
    out.rejected(rt, p.rejected, full);
    let ids: Vec<String> = p.records.iter().map(|t| t.external_id.clone()).collect();
    let links = ctx.store.links(ctx.integration, rt, &ids).await?;
    let emails: Vec<String> = p
        .records
        .iter()
        .filter(|t| !links.contains_key(&t.external_id))
        .filter_map(|t| t.email.clone())
        .collect();
    let staff = ctx.store.staff_by_email(ctx.tenant, &emails).await?;
    // A staff user can stand for one vendor technician only: two members sharing an email
    // are reported, never linked twice or created twice.
    let candidates: Vec<i64> = staff.values().copied().collect();
    let mut taken = ctx
        .store
        .linked_local_ids(ctx.integration, rt, &candidates)
        .await?;
    let mut new_in_page: HashSet<String> = HashSet::new();
    for t in p.records {
        out.counts.seen += 1;
        out.stamp(t.updated_at);
        let ext = t.external_id.clone();
        let name = full_name(&t.first_name, &t.last_name);
        let hash = content_hash(&t);
        let Some(email) = t.email.clone() else {
            out.skip(
                rt,
                &ext,
                Some(EventLevel::Warning),
                format!("technician {name} has no email address; not imported"),
                full,
            );
            continue;
        };
        let existing = match links.get(&ext) {
            Some(l) if l.content_hash == hash && !l.gone => {
                out.counts.unchanged += 1;
                if full {
                    out.ops.push(Op::Seen { external_id: ext });
                }
                continue;
            }
            Some(l) => {
                out.counts.updated += 1;
                if !t.active {
                    out.counts.deactivated += 1;
                }
                Some(l.local_id)
            }
            None => match staff.get(&email) {
                Some(id) if taken.contains(id) => {
                    out.skip(
                        rt,
                        &ext,
                        Some(EventLevel::Warning),
                        format!("duplicate candidate: technician {name} shares the email {email} with another technician already linked to staff user {id}; not linked"),
                        full,
                    );
                    continue;
                }
                Some(id) => {
                    taken.insert(*id);
                    out.counts.updated += 1;
                    out.event(
                        EventLevel::Info,
                        rt,
                        &ext,
                        format!("technician {name} linked to the existing staff user {email}"),
                    );
                    Some(*id)
                }
                None if !t.active || before_sync_from(ctx, t.updated_at) => {
                    out.skip(rt, &ext, None, String::new(), full);
                    continue;
                }
                None if !new_in_page.insert(email.clone()) => {
                    out.skip(
                        rt,
                        &ext,
                        Some(EventLevel::Warning),
                        format!("duplicate candidate: technician {name} shares the email {email} with another new technician on this page; not imported"),
                        full,
                    );
                    continue;
                }
                None => {
                    out.counts.created += 1;
                    None
                }
            },
        };
        out.ops.push(Op::Staff {
            existing,
            external_id: ext,
            email,
            name,
            active: t.active,
            hash,
            remote_updated_at: t.updated_at,
        });
    }
    Ok(out)
}
