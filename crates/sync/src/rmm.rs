//! Deciding RMM pages: sites (linked to portal companies, never creating them), devices
//! (staged; imported at once when their type auto-syncs and their site is mapped) and
//! open alerts. RMMs have no change feed, so every pass is a full sweep and the content
//! hash makes an unchanged record cost nothing but its seen mark.

use std::collections::{HashMap, HashSet};

use mspbridge_domain::rmm::{ExtAlert, ExtDevice, ExtSite};
use mspbridge_domain::sync::{EventLevel, RecordType, content_hash};
use mspbridge_providers::source::SourcePage;
use mspbridge_store::StoreError;
use mspbridge_store::sync::{AlertOp, AutoLinkRule, CatalogCompany, DeviceOp, NewEvent, Op};

use crate::apply::{Context, PageOutcome};

/// Up to five names and "and N more".
fn some_of(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
    if names.len() > shown.len() {
        format!(
            "{} and {} more",
            shown.join(", "),
            names.len() - shown.len()
        )
    } else {
        shown.join(", ")
    }
}

pub(crate) async fn sites(
    ctx: &Context<'_>,
    p: SourcePage<ExtSite>,
    full: bool,
) -> Result<PageOutcome, StoreError> {
    let rt = RecordType::Companies;
    let mut out = PageOutcome::default();
    out.rejected(rt, p.rejected, full);
    let ids: Vec<String> = p.records.iter().map(|s| s.external_id.clone()).collect();
    let links = ctx.store.links(ctx.integration, rt, &ids).await?;
    let unlinked = if links.len() < ids.len() {
        ctx.store.unlinked_by_admin(ctx.integration).await?
    } else {
        HashSet::new()
    };
    // Portal companies a site of this page claimed by identity: a portal company is linked
    // to one site of an integration at most (active or not: the PSA says it is the same
    // company).
    let mut claimed: HashSet<i64> = HashSet::new();
    let mut unmapped = Vec::new();
    for s in p.records {
        out.counts.seen += 1;
        out.companies.push(CatalogCompany {
            external_id: s.external_id.clone(),
            name: s.name.clone(),
            active: s.active,
            domains: vec![],
        });
        let ext = s.external_id.clone();
        let hash = content_hash(&s);
        match links.get(&ext) {
            Some(l) if !l.gone && l.content_hash == hash => {
                out.counts.unchanged += 1;
                if full {
                    out.ops.push(Op::Seen { external_id: ext });
                }
            }
            Some(l) => {
                out.counts.updated += 1;
                out.ops.push(Op::Company {
                    existing: Some(l.local_id),
                    external_id: ext,
                    name: s.name.clone(),
                    active: s.active,
                    hash,
                    remote_updated_at: None,
                });
            }
            None if unlinked.contains(&ext) => {
                let msg = format!(
                    "site '{}' not mapped: an admin unlinked it in the company mapping; map it there",
                    s.name
                );
                out.skip(rt, &ext, Some(EventLevel::Info), msg, full);
            }
            None => {
                let mut linked = None;
                let found = match &s.identity {
                    Some(identity) => ctx
                        .store
                        .company_by_psa_identity(
                            ctx.tenant,
                            identity.provider.slug(),
                            &identity.external_id,
                        )
                        .await?
                        .map(|found| (identity, found)),
                    None => None,
                };
                {
                    if let Some((identity, (company, name))) = found {
                        let vendor = identity.provider.descriptor().name;
                        let taken = claimed.contains(&company)
                            || !ctx
                                .store
                                .linked_local_ids(ctx.integration, rt, &[company])
                                .await?
                                .is_empty();
                        if !taken {
                            claimed.insert(company);
                            linked = Some(company);
                            out.counts.linked += 1;
                            out.auto_links
                                .push((ext.clone(), company, AutoLinkRule::PsaIdentity));
                            out.event(
                                EventLevel::Info,
                                rt,
                                &ext,
                                format!(
                                    "site '{}' mapped to portal company '{name}' (same {vendor} company id {})",
                                    s.name, identity.external_id
                                ),
                            );
                        } else {
                            let msg = format!(
                                "site '{}' names {vendor} company id {}, whose portal company '{name}' is already mapped to another site of this integration; map this site on the company mapping grid",
                                s.name, identity.external_id
                            );
                            out.skip(rt, &ext, Some(EventLevel::Warning), msg, full);
                            continue;
                        }
                    }
                }
                match linked {
                    Some(company) => out.ops.push(Op::Company {
                        existing: Some(company),
                        external_id: ext,
                        name: s.name.clone(),
                        active: s.active,
                        hash,
                        remote_updated_at: None,
                    }),
                    None => {
                        unmapped.push(s.name.clone());
                        out.skip(rt, &ext, None, String::new(), full);
                    }
                }
            }
        }
    }
    if !unmapped.is_empty() {
        out.events.push(NewEvent::new(
            EventLevel::Info,
            Some(rt),
            None,
            &format!(
                "{} sites are not mapped to a portal company yet ({}): map them on the company mapping grid (Quick Match suggests matches); their devices stay out of staging until then",
                unmapped.len(),
                some_of(&unmapped)
            ),
        ));
    }
    Ok(out)
}

pub(crate) async fn devices(
    ctx: &Context<'_>,
    p: SourcePage<ExtDevice>,
    full: bool,
) -> Result<PageOutcome, StoreError> {
    let rt = RecordType::Devices;
    let mut out = PageOutcome::default();
    out.rejected(rt, p.rejected, full);
    let ids: Vec<String> = p.records.iter().map(|d| d.external_id.clone()).collect();
    let links = ctx.store.links(ctx.integration, rt, &ids).await?;
    let states = ctx.store.device_states(ctx.integration, &ids).await?;
    let site_ids: Vec<String> = p
        .records
        .iter()
        .filter_map(|d| d.site_external_id.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let sites = ctx
        .store
        .links(ctx.integration, RecordType::Companies, &site_ids)
        .await?;
    // The admin's choice per (type, category); their counts are not needed here.
    let mappings = ctx.store.type_choices(ctx.integration).await?;
    let mut unmapped_site = 0u64;
    let mut auto_imported: HashMap<String, u64> = HashMap::new();
    for d in p.records {
        out.counts.seen += 1;
        let ext = d.external_id.clone();
        let provider_type = d.device_type.clone().unwrap_or_default();
        let category = d.category.clone().unwrap_or_default();
        let site_mapped = d
            .site_external_id
            .as_ref()
            .and_then(|s| sites.get(s))
            .is_some_and(|l| !l.gone);
        let auto_type = match mappings.get(&(provider_type.clone(), category.clone())) {
            Some(m) if m.auto_sync && !m.ignored && site_mapped => m.device_type,
            _ => None,
        };
        let state = states.get(&ext);
        let import_as =
            auto_type.filter(|_| !d.deleted && state.is_none_or(|s| s.import_state == "staged"));
        let hash = d.change_hash();
        let link = links.get(&ext);
        if d.deleted {
            match link {
                Some(l) if !l.gone => {
                    out.counts.updated += 1;
                    out.counts.deactivated += 1;
                    out.event(
                        EventLevel::Info,
                        rt,
                        &ext,
                        format!(
                            "device '{}' was deleted in {}; marked removed",
                            d.hostname, ctx.provider
                        ),
                    );
                }
                _ => {
                    out.skip(rt, &ext, None, String::new(), false);
                    continue;
                }
            }
        }
        if let Some(t) = import_as {
            *auto_imported
                .entry(if provider_type.is_empty() {
                    "(no type)".to_string()
                } else {
                    provider_type.clone()
                })
                .or_default() += 1;
            if let (Some(l), Some(s)) = (link, state)
                && !l.gone
                && l.content_hash == hash
            {
                out.counts.updated += 1;
                out.ops.push(Op::ImportDevice {
                    local_id: s.id,
                    external_id: ext,
                    device_type_id: t,
                });
                continue;
            }
        }
        match link {
            Some(l) if !l.gone && l.content_hash == hash && !d.deleted => {
                out.counts.unchanged += 1;
                if full {
                    out.ops.push(Op::Seen { external_id: ext });
                }
                continue;
            }
            Some(_) if !d.deleted => out.counts.updated += 1,
            Some(_) => {}
            None => out.counts.created += 1,
        }
        // Counted where the device is written (new or changed): an unchanged sweep says
        // nothing more than the sites pass's line naming the unmapped sites.
        if !site_mapped && !d.deleted {
            unmapped_site += 1;
        }
        let details = serde_json::to_string(&d).unwrap_or_else(|_| "{}".to_string());
        out.ops.push(Op::Device(Box::new(DeviceOp {
            existing: state.map(|s| s.id),
            external_id: ext,
            site_external_id: d.site_external_id.clone(),
            hostname: d.hostname.clone(),
            provider_type,
            category,
            device_class: d.device_class.clone(),
            operating_system: d.operating_system.clone(),
            online: d.online,
            last_seen: d.last_seen,
            reboot_required: d.reboot_required,
            patch_status: d.patch.status.clone(),
            antivirus_status: d.antivirus_status.clone(),
            warranty_date: d.warranty_date,
            details,
            import_as,
            removed: d.deleted,
            hash,
        })));
    }
    if unmapped_site > 0 {
        out.events.push(NewEvent::new(
            EventLevel::Info,
            Some(rt),
            None,
            &format!(
                "{unmapped_site} new or changed devices on this page belong to sites not mapped to a portal company: kept, but out of staging until their site is mapped"
            ),
        ));
    }
    for (t, n) in auto_imported {
        out.events.push(NewEvent::new(
            EventLevel::Info,
            Some(rt),
            None,
            &format!("{n} '{t}' devices imported: the type auto-syncs"),
        ));
    }
    Ok(out)
}

pub(crate) async fn alerts(
    ctx: &Context<'_>,
    p: SourcePage<ExtAlert>,
    full: bool,
) -> Result<PageOutcome, StoreError> {
    let rt = RecordType::Alerts;
    let mut out = PageOutcome::default();
    out.rejected(rt, p.rejected, full);
    let ids: Vec<String> = p.records.iter().map(|a| a.external_id.clone()).collect();
    let links = ctx.store.links(ctx.integration, rt, &ids).await?;
    for a in p.records {
        out.counts.seen += 1;
        out.stamp(a.raised_at);
        let ext = a.external_id.clone();
        let hash = content_hash(&a);
        match links.get(&ext) {
            Some(l) if !l.gone && l.content_hash == hash => {
                out.counts.unchanged += 1;
                if full {
                    out.ops.push(Op::Seen { external_id: ext });
                }
                continue;
            }
            Some(_) => out.counts.updated += 1,
            None => out.counts.created += 1,
        }
        out.ops.push(Op::Alert(Box::new(AlertOp {
            existing: links.get(&ext).map(|l| l.local_id),
            external_id: ext,
            device_external_id: a.device_external_id.clone(),
            device_name: a.device_name.clone(),
            site_external_id: a.site_external_id.clone(),
            priority_rank: i64::from(ExtAlert::priority_rank(&a.priority)),
            priority: a.priority.clone(),
            diagnostics: a.diagnostics.clone(),
            raised_at: a.raised_at,
            resolved: a.resolved,
            resolved_at: a.resolved_at,
            resolved_by: a.resolved_by.clone(),
            muted: a.muted,
            ticket_number: a.ticket_number.clone(),
            context_type: a.context_type.clone(),
            context: a.context.clone(),
            hash,
        })));
    }
    Ok(out)
}

/// Alerts read alone after a run, at most (newest first; the rest keep "no longer open").
pub const EXPLAIN_PER_RUN: i64 = 50;

/// The alerts this run resolved because the RMM stopped listing them open: where the RMM
/// reads one alert alone, it is asked who resolved each and when (at most
/// [`EXPLAIN_PER_RUN`]); one run log line says how many. A failure leaves the rest "no
/// longer open" (logged), never the run.
pub(crate) async fn explain_resolved(
    engine: &crate::Engine,
    tenant: mspbridge_domain::TenantId,
    integration: &mspbridge_domain::integration::Integration,
    run_id: i64,
    source: &dyn mspbridge_providers::rmm::RmmSource,
    since: chrono::DateTime<chrono::Utc>,
) {
    if !source.reads_single_alerts() {
        return;
    }
    let name = integration.provider.descriptor().name;
    let ids = match engine
        .store
        .alerts_to_explain(integration.id, since, EXPLAIN_PER_RUN)
        .await
    {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(error = %e, "alerts no longer open could not be listed");
            return;
        }
    };
    if ids.is_empty() {
        return;
    }
    let (mut explained, mut deleted, mut failed) = (0usize, 0usize, None);
    for ext in &ids {
        let (by, at, gone) = match source.alert(ext).await {
            Ok(Some(a)) if a.resolved => (
                a.resolved_by
                    .filter(|b| !b.trim().is_empty())
                    .map(|b| format!("{b} (in {name})"))
                    .unwrap_or_else(|| name.to_string()),
                a.resolved_at,
                false,
            ),
            // Listed as not resolved yet missing from the open list (muted, say): left.
            Ok(Some(_)) => continue,
            Ok(None) => (format!("{name} (alert deleted there)"), None, true),
            Err(e) => {
                failed = Some(e.to_string());
                break;
            }
        };
        match engine
            .store
            .explain_alert(integration.id, ext, &by, at, engine.now())
            .await
        {
            Ok(()) if gone => deleted += 1,
            Ok(()) => explained += 1,
            Err(e) => {
                failed = Some(e.to_string());
                break;
            }
        }
    }
    let mut line = format!(
        "{} alerts no longer open in {name}: who resolved them read from {name} for {explained}",
        ids.len()
    );
    if deleted > 0 {
        line.push_str(&format!(", {deleted} deleted there"));
    }
    let level = match &failed {
        Some(e) => {
            line.push_str(&format!("; the rest stay \"no longer open\" ({e})"));
            EventLevel::Warning
        }
        None => EventLevel::Info,
    };
    if let Err(e) = engine
        .store
        .add_events(
            tenant,
            run_id,
            &[NewEvent::new(level, Some(RecordType::Alerts), None, &line)],
            engine.now(),
        )
        .await
    {
        tracing::warn!(error = %e, "could not log the alerts explained");
    }
}

impl crate::Engine {
    /// Writes the portal's queued alert Resolves to their RMMs (`POST
    /// /v2/alert/{uid}/resolve` for Datto): done → resolved in the portal; a transient
    /// failure is tried again with back-off (8 tries); a refusal is shown on the alert and
    /// Resolve can be pressed again. How many were handled.
    pub async fn drain_alert_resolves(&self) -> Result<usize, crate::EngineError> {
        use mspbridge_providers::rmm::RmmWriteError;
        use mspbridge_store::rmm::ResolveOutcome;
        let now = self.now();
        let due = self
            .store
            .claim_alert_resolves(now, now + chrono::Duration::minutes(2), 20)
            .await?;
        let n = due.len();
        for d in due {
            let tenant = mspbridge_domain::TenantId(d.tenant_id);
            let id = mspbridge_domain::IntegrationId(d.integration_id);
            let outcome = match self.store.get_integration(tenant, id).await {
                Err(e) => ResolveOutcome::Refused(format!("the integration cannot be read: {e}")),
                Ok(integration) => {
                    let name = integration.provider.descriptor().name;
                    match mspbridge_store::load_credentials(
                        self.store.as_ref(),
                        &self.vault,
                        &integration,
                    )
                    .await
                    {
                        Err(e) => ResolveOutcome::Refused(format!("{name} is not connected: {e}")),
                        Ok(creds) => {
                            match self.providers.alert_writer(integration.provider, &creds) {
                                None => ResolveOutcome::Refused(format!(
                                    "{name} alerts cannot be resolved from the portal: resolve it in {name} (close its ticket where the alert is a ticket); the next sync shows it resolved"
                                )),
                                Some(Err(e)) => ResolveOutcome::Refused(e.to_string()),
                                Some(Ok(writer)) => {
                                    match writer.resolve_alert(&d.external_id).await {
                                        Ok(()) => ResolveOutcome::Done,
                                        Err(RmmWriteError::Transient(m)) if d.attempts < 8 => {
                                            let wait = chrono::Duration::seconds(
                                                30 << d.attempts.clamp(0, 6),
                                            );
                                            ResolveOutcome::Retry(self.now() + wait, m)
                                        }
                                        Err(RmmWriteError::Transient(m)) => {
                                            ResolveOutcome::Refused(format!(
                                                "{name} could not be reached after {} tries: {m}",
                                                d.attempts + 1
                                            ))
                                        }
                                        Err(RmmWriteError::Refused(m)) => {
                                            ResolveOutcome::Refused(m)
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            };
            tracing::info!(alert_id = d.alert_id, integration_id = d.integration_id, outcome = ?outcome, "alert resolve written");
            self.store
                .finish_alert_resolve(d.alert_id, &outcome, self.now())
                .await?;
        }
        Ok(n)
    }
}
