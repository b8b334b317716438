//! The company mapping: portal companies against every integration's companies (the grid),
//! each integration's company list (the pickers and Quick Match), link / swap / unlink with
//! an audit trail, and the undo of a Quick Match batch. SQL shared by both backends.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mspbridge_domain::{CompanyId, IntegrationId, TenantId};

use crate::Result;

/// Which portal companies the grid lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// All of them.
    No,
    /// Those without a link to at least one of the tenant's integrations.
    Any,
    /// Those without a link to this integration.
    Integration(IntegrationId),
}

#[derive(Debug, Clone)]
pub struct MappingQuery {
    /// Part of the portal company's name (case-insensitive); empty for all.
    pub search: String,
    pub missing: Missing,
    pub offset: i64,
    pub limit: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingCell {
    pub integration_id: IntegrationId,
    pub external_id: String,
    /// The integration company's name as last read (`None` before its first sync).
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingRow {
    pub company_id: CompanyId,
    pub name: String,
    pub active: bool,
    pub cells: Vec<MappingCell>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingPage {
    /// Portal companies matching the query (all pages).
    pub total: i64,
    pub rows: Vec<MappingRow>,
}

/// A company as an integration has it, and the portal company it is linked to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrationCompany {
    pub integration_id: IntegrationId,
    pub external_id: String,
    pub name: String,
    pub active: bool,
    /// `auto` or `unlinked` (an admin unlinked it; the sync does not import it again).
    pub import_state: String,
    pub linked_to: Option<(CompanyId, String)>,
    /// Web/email domains the integration holds for it (identity keys for matching).
    pub domains: Vec<String>,
}

/// Link `external_id` of `integration` to `company`, or unlink it (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRequest {
    pub integration: IntegrationId,
    pub external_id: String,
    pub company: Option<CompanyId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkOutcome {
    pub integration: IntegrationId,
    pub external_id: String,
    pub before: Option<CompanyId>,
    pub after: Option<CompanyId>,
    /// The integration company the target portal company was linked to before (a swap
    /// unlinks it).
    pub displaced: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkAudit {
    pub id: i64,
    pub integration_id: IntegrationId,
    pub external_id: String,
    /// `link`, `unlink`, `quick_match`, `auto_link` (a sync linked it by name), `undo`,
    /// `import`, `block`, `unblock`.
    pub action: String,
    pub before: Option<CompanyId>,
    pub after: Option<CompanyId>,
    pub batch: Option<String>,
    pub actor: String,
    pub at: DateTime<Utc>,
    /// Names as they are now (`None` once a company was deleted).
    pub external_name: Option<String>,
    pub before_name: Option<String>,
    pub after_name: Option<String>,
}

#[async_trait]
pub trait MappingStore: Send + Sync {
    async fn mapping_page(&self, tenant: TenantId, q: &MappingQuery) -> Result<MappingPage>;
    /// An integration's companies (or every integration's, `None`), by name; only the
    /// unlinked ones when `unlinked_only`.
    async fn integration_companies(
        &self,
        tenant: TenantId,
        integration: Option<IntegrationId>,
        search: &str,
        unlinked_only: bool,
        limit: i64,
    ) -> Result<Vec<IntegrationCompany>>;
    /// A page of `integration_companies` (same order and filters) and how many match in all.
    async fn integration_companies_page(
        &self,
        tenant: TenantId,
        integration: Option<IntegrationId>,
        search: &str,
        unlinked_only: bool,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<IntegrationCompany>, i64)>;
    /// Applies every request in one transaction, each audited as `action` by `actor`
    /// (with `batch` for a Quick Match). All or nothing.
    async fn apply_company_links(
        &self,
        tenant: TenantId,
        requests: &[LinkRequest],
        action: &str,
        actor: &str,
        batch: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Vec<LinkOutcome>>;
    /// Puts every link of a Quick Match batch, or of a sync run's links by name (batch
    /// `run-{id}`, action `auto_link`; undone, each is left `unlinked` so the sync does not
    /// link it again), back as it was.
    async fn undo_company_link_batch(
        &self,
        tenant: TenantId,
        batch: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<LinkOutcome>>;
    async fn company_link_audit(&self, tenant: TenantId, limit: i64) -> Result<Vec<LinkAudit>>;
    /// A page of the link history, newest first, and how many entries there are in all.
    async fn company_link_audit_page(
        &self,
        tenant: TenantId,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<LinkAudit>, i64)>;
    /// Imports integration companies in one transaction: each is linked to the portal
    /// company given, or to a new portal company with its name (created for the
    /// integration). An integration company that is already linked is refused
    /// (`Conflict`): nothing is imported twice.
    async fn import_integration_companies(
        &self,
        tenant: TenantId,
        integration: IntegrationId,
        items: &[(String, Option<CompanyId>)],
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<ImportOutcome>>;
    /// Deletes a portal company; every integration company linked to it is blocked from
    /// re-import (listed by `blocked_companies` until unblocked). Refused (`Conflict`) while
    /// tickets belong to the company.
    async fn delete_company(
        &self,
        tenant: TenantId,
        company: CompanyId,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<IntegrationCompany>>;
    async fn blocked_companies(&self, tenant: TenantId) -> Result<Vec<IntegrationCompany>>;
    /// Lets the sync import a blocked integration company again (on its next run).
    async fn unblock_company(
        &self,
        tenant: TenantId,
        integration: IntegrationId,
        external_id: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<()>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOutcome {
    pub external_id: String,
    pub company_id: CompanyId,
    pub created: bool,
}

/// `%part%` for LIKE, lower-cased, with LIKE's own characters escaped (`\`).
pub(crate) fn like(search: &str) -> String {
    let s = search.trim().to_lowercase();
    if s.is_empty() {
        return String::new();
    }
    let escaped: String = s
        .chars()
        .flat_map(|c| match c {
            '%' | '_' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    format!("%{escaped}%")
}

#[derive(sqlx::FromRow)]
pub(crate) struct GridRow {
    pub id: i64,
    pub name: String,
    pub active: bool,
    pub total: i64,
    pub integration_id: Option<i64>,
    pub external_id: Option<String>,
    pub external_name: Option<String>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct ListRow {
    pub integration_id: i64,
    pub external_id: String,
    pub name: String,
    pub active: bool,
    pub import_state: String,
    pub local_id: Option<i64>,
    pub company_name: Option<String>,
    pub domains: String,
}

#[derive(sqlx::FromRow)]
pub(crate) struct AuditRow {
    pub id: i64,
    pub integration_id: i64,
    pub external_id: String,
    pub action: String,
    pub before_company_id: Option<i64>,
    pub after_company_id: Option<i64>,
    pub batch: Option<String>,
    pub actor: String,
    pub at: DateTime<Utc>,
    pub external_name: Option<String>,
    pub before_name: Option<String>,
    pub after_name: Option<String>,
}

impl From<AuditRow> for LinkAudit {
    fn from(r: AuditRow) -> Self {
        LinkAudit {
            id: r.id,
            integration_id: IntegrationId(r.integration_id),
            external_id: r.external_id,
            action: r.action,
            before: r.before_company_id.map(CompanyId),
            after: r.after_company_id.map(CompanyId),
            batch: r.batch,
            actor: r.actor,
            at: r.at,
            external_name: r.external_name,
            before_name: r.before_name,
            after_name: r.after_name,
        }
    }
}

pub(crate) fn grid(rows: Vec<GridRow>) -> MappingPage {
    let total = rows.first().map_or(0, |r| r.total);
    let mut out: Vec<MappingRow> = Vec::new();
    for r in rows {
        if out.last().is_none_or(|l| l.company_id.0 != r.id) {
            out.push(MappingRow {
                company_id: CompanyId(r.id),
                name: r.name.clone(),
                active: r.active,
                cells: vec![],
            });
        }
        if let (Some(i), Some(e), Some(last)) = (r.integration_id, r.external_id, out.last_mut()) {
            last.cells.push(MappingCell {
                integration_id: IntegrationId(i),
                external_id: e,
                name: r.external_name,
            });
        }
    }
    MappingPage { total, rows: out }
}

macro_rules! impl_mapping_store {
    ($store:ident) => {
        mod mapping_impl {
            use async_trait::async_trait;
            use chrono::{DateTime, Utc};
            use mspbridge_domain::{CompanyId, IntegrationId, TenantId};

            use super::Db;
            use crate::mapping::*;
            use crate::{Result, StoreError};

            type Tx<'a> = sqlx::Transaction<'a, Db>;

            /// One link change inside `tx`, audited.
            #[allow(clippy::too_many_arguments)]
            async fn relink(
                tx: &mut Tx<'_>,
                tenant: TenantId,
                r: &LinkRequest,
                action: &str,
                actor: &str,
                batch: Option<&str>,
                restore_state: Option<&str>,
                now: DateTime<Utc>,
            ) -> Result<LinkOutcome> {
                let known: Option<(String,)> = sqlx::query_as(
                    "SELECT import_state FROM integration_companies WHERE tenant_id = $1 AND integration_id = $2 AND external_id = $3",
                )
                .bind(tenant.0)
                .bind(r.integration.0)
                .bind(&r.external_id)
                .fetch_optional(&mut **tx)
                .await?;
                let Some((state_before,)) = known else {
                    return Err(StoreError::NotFound);
                };
                if let Some(c) = r.company {
                    let exists: Option<(i64,)> =
                        sqlx::query_as("SELECT id FROM companies WHERE tenant_id = $1 AND id = $2")
                            .bind(tenant.0)
                            .bind(c.0)
                            .fetch_optional(&mut **tx)
                            .await?;
                    if exists.is_none() {
                        return Err(StoreError::NotFound);
                    }
                }
                let before: Option<(i64,)> = sqlx::query_as(
                    "SELECT local_id FROM external_links WHERE integration_id = $1 AND record_kind = 'company' AND external_id = $2",
                )
                .bind(r.integration.0)
                .bind(&r.external_id)
                .fetch_optional(&mut **tx)
                .await?;
                let before = before.map(|b| CompanyId(b.0));
                let mut out = LinkOutcome {
                    integration: r.integration,
                    external_id: r.external_id.clone(),
                    before,
                    after: r.company,
                    displaced: None,
                };
                if before == r.company {
                    return Ok(out);
                }
                match r.company {
                    Some(target) => {
                        // The target's current link to another company of this integration goes.
                        let displaced: Option<(String,)> = sqlx::query_as(
                            "SELECT external_id FROM external_links WHERE integration_id = $1 AND record_kind = 'company' AND local_id = $2",
                        )
                        .bind(r.integration.0)
                        .bind(target.0)
                        .fetch_optional(&mut **tx)
                        .await?;
                        if let Some((other,)) = displaced {
                            unlink(tx, r.integration, &other, "unlinked").await?;
                            audit(tx, tenant, r.integration, &other, "unlink", Some(target), None, batch, actor, Some("auto"), now).await?;
                            out.displaced = Some(other);
                        }
                        if before.is_some() {
                            sqlx::query(
                                "UPDATE external_links SET local_id = $3, content_hash = '', gone_upstream_at = NULL, updated_at = $4 \
                                 WHERE integration_id = $1 AND record_kind = 'company' AND external_id = $2",
                            )
                            .bind(r.integration.0)
                            .bind(&r.external_id)
                            .bind(target.0)
                            .bind(now)
                            .execute(&mut **tx)
                            .await?;
                        } else {
                            sqlx::query(
                                "INSERT INTO external_links (tenant_id, integration_id, record_kind, local_id, external_id, content_hash, created_at, updated_at) \
                                 VALUES ($1, $2, 'company', $3, $4, '', $5, $5)",
                            )
                            .bind(tenant.0)
                            .bind(r.integration.0)
                            .bind(target.0)
                            .bind(&r.external_id)
                            .bind(now)
                            .execute(&mut **tx)
                            .await?;
                        }
                        set_state(tx, r.integration, &r.external_id, restore_state.unwrap_or("auto")).await?;
                    }
                    None => {
                        unlink(tx, r.integration, &r.external_id, restore_state.unwrap_or("unlinked")).await?;
                    }
                }
                audit(tx, tenant, r.integration, &r.external_id, action, before, r.company, batch, actor, Some(&state_before), now).await?;
                // The integration company's contacts follow it on the next run, which reads
                // every contact once.
                sqlx::query("UPDATE sync_cursors SET last_full_pass_at = NULL WHERE integration_id = $1 AND record_type = 'contacts'")
                    .bind(r.integration.0)
                    .execute(&mut **tx)
                    .await?;
                Ok(out)
            }

            async fn unlink(tx: &mut Tx<'_>, integration: IntegrationId, external_id: &str, state: &str) -> Result<()> {
                sqlx::query("DELETE FROM external_links WHERE integration_id = $1 AND record_kind = 'company' AND external_id = $2")
                    .bind(integration.0)
                    .bind(external_id)
                    .execute(&mut **tx)
                    .await?;
                set_state(tx, integration, external_id, state).await
            }

            async fn set_state(tx: &mut Tx<'_>, integration: IntegrationId, external_id: &str, state: &str) -> Result<()> {
                sqlx::query("UPDATE integration_companies SET import_state = $3 WHERE integration_id = $1 AND external_id = $2")
                    .bind(integration.0)
                    .bind(external_id)
                    .bind(state)
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            }

            #[allow(clippy::too_many_arguments)]
            async fn audit(
                tx: &mut Tx<'_>,
                tenant: TenantId,
                integration: IntegrationId,
                external_id: &str,
                action: &str,
                before: Option<CompanyId>,
                after: Option<CompanyId>,
                batch: Option<&str>,
                actor: &str,
                state_before: Option<&str>,
                now: DateTime<Utc>,
            ) -> Result<()> {
                sqlx::query(
                    "INSERT INTO company_link_audit (tenant_id, integration_id, external_id, action, before_company_id, after_company_id, batch, actor, at, state_before) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(tenant.0)
                .bind(integration.0)
                .bind(external_id)
                .bind(action)
                .bind(before.map(|c| c.0))
                .bind(after.map(|c| c.0))
                .bind(batch)
                .bind(actor)
                .bind(now)
                .bind(state_before)
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            #[async_trait]
            impl MappingStore for super::$store {
                async fn mapping_page(&self, tenant: TenantId, q: &MappingQuery) -> Result<MappingPage> {
                    let (mode, integration) = match q.missing {
                        Missing::No => ("none", 0),
                        Missing::Any => ("any", 0),
                        Missing::Integration(i) => ("integration", i.0),
                    };
                    // Integrations without companies (a training library) are no column.
                    let without: Vec<String> = mspbridge_domain::catalogue::ProviderKind::ALL
                        .into_iter()
                        .filter(|k| !k.descriptor().has_companies())
                        .map(|k| format!("'{}'", k.slug()))
                        .collect();
                    let without = if without.is_empty() { "''".to_string() } else { without.join(", ") };
                    let (columns,): (i64,) = sqlx::query_as(crate::sync_shared::sql(format!("SELECT COUNT(*) FROM integrations WHERE tenant_id = $1 AND provider NOT IN ({without})")))
                        .bind(tenant.0)
                        .fetch_one(&self.pool)
                        .await?;
                    let rows: Vec<GridRow> = sqlx::query_as(
                        "WITH page AS ( \
                           SELECT c.id, c.name, c.active, COUNT(*) OVER () AS total FROM companies c \
                           WHERE c.tenant_id = $1 AND ($2 = '' OR lower(c.name) LIKE $2 ESCAPE '\\') \
                             AND ($3 = 'none' \
                               OR ($3 = 'any' AND (SELECT COUNT(*) FROM external_links l WHERE l.tenant_id = $1 AND l.record_kind = 'company' AND l.local_id = c.id) < $4) \
                               OR ($3 = 'integration' AND NOT EXISTS (SELECT 1 FROM external_links l WHERE l.integration_id = $5 AND l.record_kind = 'company' AND l.local_id = c.id))) \
                           ORDER BY lower(c.name), c.id LIMIT $6 OFFSET $7) \
                         SELECT page.id, page.name, page.active, page.total, l.integration_id, l.external_id, ic.name AS external_name \
                         FROM page \
                         LEFT JOIN external_links l ON l.tenant_id = $1 AND l.record_kind = 'company' AND l.local_id = page.id \
                         LEFT JOIN integration_companies ic ON ic.integration_id = l.integration_id AND ic.external_id = l.external_id \
                         ORDER BY lower(page.name), page.id, l.integration_id",
                    )
                    .bind(tenant.0)
                    .bind(like(&q.search))
                    .bind(mode)
                    .bind(columns)
                    .bind(integration)
                    .bind(q.limit.clamp(1, 500))
                    .bind(q.offset.max(0))
                    .fetch_all(&self.pool)
                    .await?;
                    let mut page = grid(rows);
                    if page.rows.is_empty() && q.offset > 0 {
                        // Past the end: the total still tells the UI where the end is.
                        let (total,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM companies WHERE tenant_id = $1 AND ($2 = '' OR lower(name) LIKE $2 ESCAPE '\\')")
                            .bind(tenant.0)
                            .bind(like(&q.search))
                            .fetch_one(&self.pool)
                            .await?;
                        page.total = total;
                    }
                    Ok(page)
                }

                async fn integration_companies(
                    &self,
                    tenant: TenantId,
                    integration: Option<IntegrationId>,
                    search: &str,
                    unlinked_only: bool,
                    limit: i64,
                ) -> Result<Vec<IntegrationCompany>> {
                    let rows: Vec<ListRow> = sqlx::query_as(
                        "SELECT ic.integration_id, ic.external_id, ic.name, ic.active, ic.import_state, l.local_id, c.name AS company_name, ic.domains \
                         FROM integration_companies ic \
                         LEFT JOIN external_links l ON l.integration_id = ic.integration_id AND l.record_kind = 'company' AND l.external_id = ic.external_id \
                         LEFT JOIN companies c ON c.tenant_id = ic.tenant_id AND c.id = l.local_id \
                         WHERE ic.tenant_id = $1 AND ($2 = 0 OR ic.integration_id = $2) AND ($3 = '' OR lower(ic.name) LIKE $3 ESCAPE '\\') \
                           AND ($4 = FALSE OR l.local_id IS NULL) \
                         ORDER BY lower(ic.name), ic.integration_id, ic.external_id LIMIT $5",
                    )
                    .bind(tenant.0)
                    .bind(integration.map_or(0, |i| i.0))
                    .bind(like(search))
                    .bind(unlinked_only)
                    .bind(limit.max(1))
                    .fetch_all(&self.pool)
                    .await?;
                    Ok(rows
                        .into_iter()
                        .map(|r| IntegrationCompany {
                            integration_id: IntegrationId(r.integration_id),
                            external_id: r.external_id,
                            name: r.name,
                            active: r.active,
                            import_state: r.import_state,
                            linked_to: r.local_id.map(|id| (CompanyId(id), r.company_name.unwrap_or_default())),
                            domains: r.domains.split_whitespace().map(str::to_string).collect(),
                        })
                        .collect())
                }

                async fn integration_companies_page(
                    &self,
                    tenant: TenantId,
                    integration: Option<IntegrationId>,
                    search: &str,
                    unlinked_only: bool,
                    offset: i64,
                    limit: i64,
                ) -> Result<(Vec<IntegrationCompany>, i64)> {
                    let from = "FROM integration_companies ic \
                         LEFT JOIN external_links l ON l.integration_id = ic.integration_id AND l.record_kind = 'company' AND l.external_id = ic.external_id \
                         LEFT JOIN companies c ON c.tenant_id = ic.tenant_id AND c.id = l.local_id \
                         WHERE ic.tenant_id = $1 AND ($2 = 0 OR ic.integration_id = $2) AND ($3 = '' OR lower(ic.name) LIKE $3 ESCAPE '\\') \
                           AND ($4 = FALSE OR l.local_id IS NULL)";
                    let rows: Vec<ListRow> = sqlx::query_as(crate::sync_shared::sql(format!(
                        "SELECT ic.integration_id, ic.external_id, ic.name, ic.active, ic.import_state, l.local_id, c.name AS company_name, ic.domains \
                         {from} ORDER BY lower(ic.name), ic.integration_id, ic.external_id LIMIT $5 OFFSET $6"
                    )))
                    .bind(tenant.0)
                    .bind(integration.map_or(0, |i| i.0))
                    .bind(like(search))
                    .bind(unlinked_only)
                    .bind(limit.clamp(1, 1000))
                    .bind(offset.max(0))
                    .fetch_all(&self.pool)
                    .await?;
                    let (total,): (i64,) = sqlx::query_as(crate::sync_shared::sql(format!("SELECT COUNT(*) {from}")))
                        .bind(tenant.0)
                        .bind(integration.map_or(0, |i| i.0))
                        .bind(like(search))
                        .bind(unlinked_only)
                        .fetch_one(&self.pool)
                        .await?;
                    let list = rows
                        .into_iter()
                        .map(|r| IntegrationCompany {
                            integration_id: IntegrationId(r.integration_id),
                            external_id: r.external_id,
                            name: r.name,
                            active: r.active,
                            import_state: r.import_state,
                            linked_to: r.local_id.map(|id| (CompanyId(id), r.company_name.unwrap_or_default())),
                            domains: r.domains.split_whitespace().map(str::to_string).collect(),
                        })
                        .collect();
                    Ok((list, total))
                }

                async fn apply_company_links(
                    &self,
                    tenant: TenantId,
                    requests: &[LinkRequest],
                    action: &str,
                    actor: &str,
                    batch: Option<&str>,
                    now: DateTime<Utc>,
                ) -> Result<Vec<LinkOutcome>> {
                    let mut tx = self.begin_write().await?;
                    let mut out = Vec::with_capacity(requests.len());
                    for r in requests {
                        out.push(relink(&mut tx, tenant, r, action, actor, batch, None, now).await?);
                    }
                    tx.commit().await?;
                    Ok(out)
                }

                async fn undo_company_link_batch(&self, tenant: TenantId, batch: &str, actor: &str, now: DateTime<Utc>) -> Result<Vec<LinkOutcome>> {
                    let mut tx = self.begin_write().await?;
                    let rows: Vec<(i64, String, Option<i64>, Option<String>)> = sqlx::query_as(
                        "SELECT integration_id, external_id, before_company_id, \
                           CASE WHEN action IN ('auto_link', 'identity_link') THEN 'unlinked' ELSE state_before END FROM company_link_audit \
                         WHERE tenant_id = $1 AND batch = $2 AND action IN ('quick_match', 'auto_link', 'identity_link') ORDER BY id DESC",
                    )
                    .bind(tenant.0)
                    .bind(batch)
                    .fetch_all(&mut *tx)
                    .await?;
                    if rows.is_empty() {
                        tx.rollback().await?;
                        return Err(StoreError::NotFound);
                    }
                    let undone: Option<(i64,)> = sqlx::query_as(
                        "SELECT id FROM company_link_audit WHERE tenant_id = $1 AND batch = $2 AND action = 'undo' LIMIT 1",
                    )
                    .bind(tenant.0)
                    .bind(batch)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if undone.is_some() {
                        tx.rollback().await?;
                        return Err(StoreError::Conflict("these links were already undone".into()));
                    }
                    let mut out = Vec::with_capacity(rows.len());
                    for (integration, external_id, before, state) in rows {
                        let r = LinkRequest {
                            integration: IntegrationId(integration),
                            external_id,
                            company: before.map(CompanyId),
                        };
                        out.push(relink(&mut tx, tenant, &r, "undo", actor, Some(batch), state.as_deref(), now).await?);
                    }
                    tx.commit().await?;
                    Ok(out)
                }

                async fn import_integration_companies(
                    &self,
                    tenant: TenantId,
                    integration: IntegrationId,
                    items: &[(String, Option<CompanyId>)],
                    actor: &str,
                    now: DateTime<Utc>,
                ) -> Result<Vec<ImportOutcome>> {
                    let mut tx = self.begin_write().await?;
                    let mut out = Vec::with_capacity(items.len());
                    for (external_id, target) in items {
                        let row: Option<(String, bool, Option<i64>, Option<String>)> = sqlx::query_as(
                            "SELECT ic.name, ic.active, l.local_id, c.name FROM integration_companies ic \
                             LEFT JOIN external_links l ON l.integration_id = ic.integration_id AND l.record_kind = 'company' AND l.external_id = ic.external_id \
                             LEFT JOIN companies c ON c.id = l.local_id \
                             WHERE ic.tenant_id = $1 AND ic.integration_id = $2 AND ic.external_id = $3",
                        )
                        .bind(tenant.0)
                        .bind(integration.0)
                        .bind(external_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                        let Some((name, active, linked, linked_name)) = row else {
                            return Err(StoreError::NotFound);
                        };
                        if linked.is_some() {
                            return Err(StoreError::Conflict(format!(
                                "'{name}' is already imported (linked to '{}')",
                                linked_name.unwrap_or_default()
                            )));
                        }
                        let (company, created) = match target {
                            Some(c) => (*c, false),
                            None => {
                                let (id,): (i64,) = sqlx::query_as(
                                    "INSERT INTO companies (tenant_id, name, active, created_at, updated_at, source_integration_id) \
                                     VALUES ($1, $2, $3, $4, $4, $5) RETURNING id",
                                )
                                .bind(tenant.0)
                                .bind(&name)
                                .bind(active)
                                .bind(now)
                                .bind(integration.0)
                                .fetch_one(&mut *tx)
                                .await?;
                                (CompanyId(id), true)
                            }
                        };
                        let r = LinkRequest {
                            integration,
                            external_id: external_id.clone(),
                            company: Some(company),
                        };
                        relink(&mut tx, tenant, &r, "import", actor, None, None, now).await?;
                        out.push(ImportOutcome {
                            external_id: external_id.clone(),
                            company_id: company,
                            created,
                        });
                    }
                    tx.commit().await?;
                    Ok(out)
                }

                async fn delete_company(&self, tenant: TenantId, company: CompanyId, actor: &str, now: DateTime<Utc>) -> Result<Vec<IntegrationCompany>> {
                    let mut tx = self.begin_write().await?;
                    let exists: Option<(i64,)> = sqlx::query_as("SELECT id FROM companies WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant.0)
                        .bind(company.0)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if exists.is_none() {
                        return Err(StoreError::NotFound);
                    }
                    let (tickets,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM tickets WHERE tenant_id = $1 AND company_id = $2")
                        .bind(tenant.0)
                        .bind(company.0)
                        .fetch_one(&mut *tx)
                        .await?;
                    if tickets > 0 {
                        return Err(StoreError::Conflict(format!(
                            "the company has {tickets} tickets; deactivate it instead of deleting it"
                        )));
                    }
                    let links: Vec<(i64, String)> = sqlx::query_as(
                        "SELECT integration_id, external_id FROM external_links WHERE tenant_id = $1 AND record_kind = 'company' AND local_id = $2",
                    )
                    .bind(tenant.0)
                    .bind(company.0)
                    .fetch_all(&mut *tx)
                    .await?;
                    let mut blocked = Vec::with_capacity(links.len());
                    for (integration, external_id) in links {
                        let integration = IntegrationId(integration);
                        unlink(&mut tx, integration, &external_id, "blocked").await?;
                        audit(&mut tx, tenant, integration, &external_id, "block", Some(company), None, None, actor, Some("auto"), now).await?;
                        let name: Option<(String, bool)> = sqlx::query_as(
                            "SELECT name, active FROM integration_companies WHERE integration_id = $1 AND external_id = $2",
                        )
                        .bind(integration.0)
                        .bind(&external_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                        let (name, active) = name.unwrap_or_default();
                        blocked.push(IntegrationCompany {
                            integration_id: integration,
                            external_id,
                            name,
                            active,
                            import_state: "blocked".into(),
                            linked_to: None,
                            domains: vec![],
                        });
                    }
                    // The company's users go with it; their links too.
                    sqlx::query(
                        "DELETE FROM external_links WHERE tenant_id = $1 AND record_kind = 'company_user' \
                         AND local_id IN (SELECT id FROM company_users WHERE tenant_id = $1 AND company_id = $2)",
                    )
                    .bind(tenant.0)
                    .bind(company.0)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query("DELETE FROM company_users WHERE tenant_id = $1 AND company_id = $2")
                        .bind(tenant.0)
                        .bind(company.0)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("DELETE FROM companies WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant.0)
                        .bind(company.0)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(blocked)
                }

                async fn blocked_companies(&self, tenant: TenantId) -> Result<Vec<IntegrationCompany>> {
                    let rows: Vec<(i64, String, String, bool)> = sqlx::query_as(
                        "SELECT integration_id, external_id, name, active FROM integration_companies \
                         WHERE tenant_id = $1 AND import_state = 'blocked' ORDER BY lower(name), integration_id, external_id",
                    )
                    .bind(tenant.0)
                    .fetch_all(&self.pool)
                    .await?;
                    Ok(rows
                        .into_iter()
                        .map(|(i, external_id, name, active)| IntegrationCompany {
                            integration_id: IntegrationId(i),
                            external_id,
                            name,
                            active,
                            import_state: "blocked".into(),
                            linked_to: None,
                            domains: vec![],
                        })
                        .collect())
                }

                async fn unblock_company(&self, tenant: TenantId, integration: IntegrationId, external_id: &str, actor: &str, now: DateTime<Utc>) -> Result<()> {
                    let mut tx = self.begin_write().await?;
                    let done = sqlx::query(
                        "UPDATE integration_companies SET import_state = 'auto' \
                         WHERE tenant_id = $1 AND integration_id = $2 AND external_id = $3 AND import_state = 'blocked'",
                    )
                    .bind(tenant.0)
                    .bind(integration.0)
                    .bind(external_id)
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound);
                    }
                    audit(&mut tx, tenant, integration, external_id, "unblock", None, None, None, actor, Some("blocked"), now).await?;
                    // The next run reads every company once, so the unblocked one is imported.
                    sqlx::query("UPDATE sync_cursors SET last_full_pass_at = NULL WHERE integration_id = $1 AND record_type = 'companies'")
                        .bind(integration.0)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn company_link_audit_page(&self, tenant: TenantId, offset: i64, limit: i64) -> Result<(Vec<LinkAudit>, i64)> {
                    let rows: Vec<AuditRow> = sqlx::query_as(
                        "SELECT a.id, a.integration_id, a.external_id, a.action, a.before_company_id, a.after_company_id, a.batch, a.actor, a.at, \
                           ic.name AS external_name, cb.name AS before_name, ca.name AS after_name \
                         FROM company_link_audit a \
                         LEFT JOIN integration_companies ic ON ic.integration_id = a.integration_id AND ic.external_id = a.external_id \
                         LEFT JOIN companies cb ON cb.tenant_id = a.tenant_id AND cb.id = a.before_company_id \
                         LEFT JOIN companies ca ON ca.tenant_id = a.tenant_id AND ca.id = a.after_company_id \
                         WHERE a.tenant_id = $1 ORDER BY a.id DESC LIMIT $2 OFFSET $3",
                    )
                    .bind(tenant.0)
                    .bind(limit.clamp(1, 1000))
                    .bind(offset.max(0))
                    .fetch_all(&self.pool)
                    .await?;
                    let (total,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM company_link_audit WHERE tenant_id = $1")
                        .bind(tenant.0)
                        .fetch_one(&self.pool)
                        .await?;
                    Ok((rows.into_iter().map(Into::into).collect(), total))
                }

                async fn company_link_audit(&self, tenant: TenantId, limit: i64) -> Result<Vec<LinkAudit>> {
                    let rows: Vec<AuditRow> = sqlx::query_as(
                        "SELECT a.id, a.integration_id, a.external_id, a.action, a.before_company_id, a.after_company_id, a.batch, a.actor, a.at, \
                           ic.name AS external_name, cb.name AS before_name, ca.name AS after_name \
                         FROM company_link_audit a \
                         LEFT JOIN integration_companies ic ON ic.integration_id = a.integration_id AND ic.external_id = a.external_id \
                         LEFT JOIN companies cb ON cb.tenant_id = a.tenant_id AND cb.id = a.before_company_id \
                         LEFT JOIN companies ca ON ca.tenant_id = a.tenant_id AND ca.id = a.after_company_id \
                         WHERE a.tenant_id = $1 ORDER BY a.id DESC LIMIT $2",
                    )
                    .bind(tenant.0)
                    .bind(limit.clamp(1, 1000))
                    .fetch_all(&self.pool)
                    .await?;
                    Ok(rows.into_iter().map(Into::into).collect())
                }
            }
        }
    };
}

pub(crate) use impl_mapping_store;

#[cfg(test)]
mod tests {
    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(super::like("  Acme "), "%acme%");
        assert_eq!(super::like("50%_off\\"), "%50\\%\\_off\\\\%");
        assert_eq!(super::like(" "), "");
    }
}
