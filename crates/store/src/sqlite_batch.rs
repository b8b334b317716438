//! SQLite's batched statements for the sync engine: look-ups with one placeholder per
//! value and multi-row `VALUES` inserts, chunked under SQLite's parameter limit.

use chrono::{DateTime, Utc};
use sqlx::{Sqlite, SqlitePool, Transaction};

use crate::Result;
use crate::sync::{AlertOp, CatalogCompany, DeviceOp};
use crate::sync_shared::{
    LinkWrite, NewCompanyRow, NewStaffRow, NewUserRow, UserUpdateRow, placeholders, sql, value_rows,
};

type Tx<'t> = Transaction<'t, Sqlite>;

pub(crate) async fn link_rows(
    pool: &SqlitePool,
    integration: i64,
    kind: &str,
    ids: &[String],
) -> Result<Vec<(String, i64, String, bool)>> {
    let q = format!(
        "SELECT external_id, local_id, content_hash, gone_upstream_at IS NOT NULL FROM external_links \
         WHERE integration_id = $1 AND record_kind = $2 AND external_id IN ({})",
        placeholders(3, ids.len())
    );
    let mut query = sqlx::query_as(sql(q)).bind(integration).bind(kind);
    for e in ids {
        query = query.bind(e);
    }
    Ok(query.fetch_all(pool).await?)
}

pub(crate) async fn override_rows(
    pool: &SqlitePool,
    tenant: i64,
    company_ids: &[i64],
) -> Result<Vec<(i64, i64)>> {
    let q = format!(
        "SELECT company_id, default_import_role_id FROM company_defaults \
         WHERE tenant_id = $1 AND default_import_role_id IS NOT NULL AND company_id IN ({})",
        placeholders(2, company_ids.len())
    );
    let mut query = sqlx::query_as(sql(q)).bind(tenant);
    for c in company_ids {
        query = query.bind(c);
    }
    Ok(query.fetch_all(pool).await?)
}

pub(crate) async fn staff_rows(
    pool: &SqlitePool,
    tenant: i64,
    emails: &[String],
) -> Result<Vec<(String, i64)>> {
    let q = format!(
        "SELECT email, id FROM staff_users WHERE tenant_id = $1 AND email IN ({})",
        placeholders(2, emails.len())
    );
    let mut query = sqlx::query_as(sql(q)).bind(tenant);
    for e in emails {
        query = query.bind(e);
    }
    Ok(query.fetch_all(pool).await?)
}

pub(crate) async fn manual_user_rows(
    pool: &SqlitePool,
    tenant: i64,
    emails: &[String],
) -> Result<Vec<(String, i64, i64)>> {
    let q = format!(
        "SELECT email, company_id, id FROM company_users WHERE tenant_id = $1 AND origin = 'manual' AND email IN ({})",
        placeholders(2, emails.len())
    );
    let mut query = sqlx::query_as(sql(q)).bind(tenant);
    for e in emails {
        query = query.bind(e);
    }
    Ok(query.fetch_all(pool).await?)
}

pub(crate) async fn insert_companies(
    tx: &mut Tx<'_>,
    tenant: i64,
    integration: i64,
    now: DateTime<Utc>,
    rows: &[NewCompanyRow<'_>],
) -> Result<()> {
    for chunk in rows.chunks(100) {
        let values = value_rows(chunk.len(), 3, 4, &|p| {
            format!("({}, $1, {}, {}, $2, $2, $3)", p[0], p[1], p[2])
        });
        let q = format!(
            "INSERT INTO companies (id, tenant_id, name, active, created_at, updated_at, source_integration_id) VALUES {values}"
        );
        let mut query = sqlx::query(sql(q)).bind(tenant).bind(now).bind(integration);
        for r in chunk {
            query = query.bind(r.id).bind(r.name).bind(r.active);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Every company of a page into the integration's company list (only changed rows are
/// written).
pub(crate) async fn upsert_integration_companies(
    tx: &mut Tx<'_>,
    tenant: i64,
    integration: i64,
    now: DateTime<Utc>,
    rows: &[CatalogCompany],
) -> Result<()> {
    for chunk in rows.chunks(100) {
        let values = value_rows(chunk.len(), 4, 4, &|p| {
            format!("($1, $2, {}, {}, {}, {}, $3)", p[0], p[1], p[2], p[3])
        });
        let q = format!(
            "INSERT INTO integration_companies (tenant_id, integration_id, external_id, name, active, domains, updated_at) VALUES {values} \
             ON CONFLICT (integration_id, external_id) DO UPDATE SET name = excluded.name, active = excluded.active, domains = excluded.domains, updated_at = excluded.updated_at \
             WHERE integration_companies.name <> excluded.name OR integration_companies.active <> excluded.active OR integration_companies.domains <> excluded.domains"
        );
        let mut query = sqlx::query(sql(q)).bind(tenant).bind(integration).bind(now);
        for r in chunk {
            query = query
                .bind(&r.external_id)
                .bind(&r.name)
                .bind(r.active)
                .bind(r.domains.join(" "));
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

pub(crate) async fn insert_users(
    tx: &mut Tx<'_>,
    tenant: i64,
    now: DateTime<Utc>,
    rows: &[NewUserRow<'_>],
) -> Result<()> {
    for chunk in rows.chunks(100) {
        let values = value_rows(chunk.len(), 10, 3, &|p| {
            format!("({}, $1, {}, 'import', $2, $2)", p[0], p[1..].join(", "))
        });
        let q = format!(
            "INSERT INTO company_users (id, tenant_id, company_id, email, phone, first_name, last_name, role_id, role_reason, status, contact_types, origin, created_at, updated_at) \
             VALUES {values}"
        );
        let mut query = sqlx::query(sql(q)).bind(tenant).bind(now);
        for r in chunk {
            query = query
                .bind(r.id)
                .bind(r.company_id)
                .bind(r.email)
                .bind(r.phone)
                .bind(r.first_name)
                .bind(r.last_name)
                .bind(r.role_id)
                .bind(r.role_reason)
                .bind(r.status)
                .bind(&r.contact_types);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

pub(crate) async fn update_users(
    tx: &mut Tx<'_>,
    tenant: i64,
    now: DateTime<Utc>,
    rows: &[UserUpdateRow<'_>],
) -> Result<()> {
    // 100 rows per statement: UPDATE … FROM a VALUES list (SQLite 3.33+); sqlx hands every
    // statement to SQLite's worker thread, so one statement per row adds up.
    for chunk in rows.chunks(100) {
        let values = value_rows(chunk.len(), 8, 3, &|p| format!("({})", p.join(", ")));
        let q = format!(
            "UPDATE company_users AS c SET email = u.column3, first_name = u.column4, last_name = u.column5, \
               company_id = u.column2, phone = u.column7, contact_types = u.column8, \
               status = CASE WHEN u.column6 THEN (CASE WHEN c.status = 'disabled' THEN 'imported' ELSE c.status END) ELSE 'disabled' END, \
               updated_at = $2 \
             FROM (VALUES {values}) AS u \
             WHERE c.id = u.column1 AND c.tenant_id = $1 AND c.origin = 'import'"
        );
        let mut query = sqlx::query(sql(q)).bind(tenant).bind(now);
        for r in chunk {
            query = query
                .bind(r.id)
                .bind(r.company_id)
                .bind(r.email)
                .bind(r.first_name)
                .bind(r.last_name)
                .bind(r.active)
                .bind(r.phone)
                .bind(&r.contact_types);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

pub(crate) async fn insert_staff(
    tx: &mut Tx<'_>,
    tenant: i64,
    now: DateTime<Utc>,
    rows: &[NewStaffRow<'_>],
) -> Result<()> {
    for chunk in rows.chunks(100) {
        let values = value_rows(chunk.len(), 4, 3, &|p| {
            format!(
                "({}, $1, {}, {}, 'technician', NULL, {}, 'import', $2, $2)",
                p[0], p[1], p[2], p[3]
            )
        });
        let q = format!(
            "INSERT INTO staff_users (id, tenant_id, email, name, role, password_hash, active, origin, created_at, updated_at) VALUES {values}"
        );
        let mut query = sqlx::query(sql(q)).bind(tenant).bind(now);
        for r in chunk {
            query = query.bind(r.id).bind(r.email).bind(r.name).bind(r.active);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn upsert_links(
    tx: &mut Tx<'_>,
    tenant: i64,
    integration: i64,
    kind: &str,
    seen: Option<i64>,
    now: DateTime<Utc>,
    rows: &[LinkWrite<'_>],
) -> Result<()> {
    for chunk in rows.chunks(100) {
        let values = value_rows(chunk.len(), 4, 6, &|p| {
            format!("($1, $2, $3, {}, $4, $5, $5)", p.join(", "))
        });
        let q = format!(
            "INSERT INTO external_links (tenant_id, integration_id, record_kind, local_id, external_id, remote_updated_at, content_hash, last_seen_pass, created_at, updated_at) \
             VALUES {values} \
             ON CONFLICT (integration_id, record_kind, external_id) DO UPDATE SET local_id = excluded.local_id, \
               remote_updated_at = excluded.remote_updated_at, content_hash = excluded.content_hash, gone_upstream_at = NULL, \
               last_seen_pass = COALESCE(excluded.last_seen_pass, external_links.last_seen_pass), updated_at = excluded.updated_at"
        );
        let mut query = sqlx::query(sql(q))
            .bind(tenant)
            .bind(integration)
            .bind(kind)
            .bind(seen)
            .bind(now);
        for l in chunk {
            query = query.bind(l.local).bind(l.ext).bind(l.remote).bind(l.hash);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

pub(crate) async fn mark_seen(
    tx: &mut Tx<'_>,
    integration: i64,
    kind: &str,
    pass: i64,
    ids: &[String],
) -> Result<()> {
    for chunk in ids.chunks(500) {
        let q = format!(
            "UPDATE external_links SET last_seen_pass = $1 WHERE integration_id = $2 AND record_kind = $3 AND external_id IN ({})",
            placeholders(4, chunk.len())
        );
        let mut query = sqlx::query(sql(q)).bind(pass).bind(integration).bind(kind);
        for e in chunk {
            query = query.bind(e);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// A page of devices, one upsert each (in-process, so a statement costs no round trip);
/// their ids by external id.
pub(crate) async fn write_devices(
    tx: &mut Tx<'_>,
    tenant: i64,
    integration: i64,
    now: DateTime<Utc>,
    rows: &[&DeviceOp],
) -> Result<std::collections::HashMap<String, i64>> {
    let mut ids = std::collections::HashMap::with_capacity(rows.len());
    for d in rows {
        // The import state changes only to import the device (`import_as`); a device
        // deleted upstream is stamped removed.
        let (id,): (i64,) = sqlx::query_as(
            concat!(
                "INSERT INTO devices (tenant_id, integration_id, external_id, site_external_id, hostname, provider_type, category, device_class, \
           operating_system, online, last_seen, reboot_required, patch_status, antivirus_status, warranty_date, details, import_state, \
           device_type_id, imported_at, removed_upstream_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
           CASE WHEN $17 IS NULL THEN 'staged' ELSE 'imported' END, $17, CASE WHEN $17 IS NULL THEN NULL ELSE $18 END, \
           CASE WHEN $19 THEN $18 ELSE NULL END, $18, $18)",
                crate::rmm::device_upsert_conflict!(),
                "RETURNING id"
            ),
        )
        .bind(tenant)
        .bind(integration)
        .bind(&d.external_id)
        .bind(&d.site_external_id)
        .bind(&d.hostname)
        .bind(&d.provider_type)
        .bind(&d.category)
        .bind(&d.device_class)
        .bind(&d.operating_system)
        .bind(d.online)
        .bind(d.last_seen)
        .bind(d.reboot_required)
        .bind(&d.patch_status)
        .bind(&d.antivirus_status)
        .bind(d.warranty_date)
        .bind(&d.details)
        .bind(d.import_as)
        .bind(now)
        .bind(d.removed)
        .fetch_one(&mut **tx)
        .await?;
        ids.insert(d.external_id.clone(), id);
    }
    Ok(ids)
}

/// Staged devices imported as their auto-sync type: `(device id, device type id)`.
pub(crate) async fn import_staged(
    tx: &mut Tx<'_>,
    tenant: i64,
    now: DateTime<Utc>,
    rows: &[(i64, i64)],
) -> Result<()> {
    for (device, device_type) in rows {
        sqlx::query(
            "UPDATE devices SET import_state = 'imported', device_type_id = $3, imported_at = $4, updated_at = $4 \
         WHERE tenant_id = $1 AND id = $2 AND import_state = 'staged'",
        )
        .bind(tenant)
        .bind(*device)
        .bind(*device_type)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// A page of alerts, one upsert each; their ids by external id.
pub(crate) async fn write_alerts(
    tx: &mut Tx<'_>,
    tenant: i64,
    integration: i64,
    now: DateTime<Utc>,
    rows: &[&AlertOp],
) -> Result<std::collections::HashMap<String, i64>> {
    let mut ids = std::collections::HashMap::with_capacity(rows.len());
    for a in rows {
        let (id,): (i64,) = sqlx::query_as(
            concat!(
                "INSERT INTO alerts (tenant_id, integration_id, external_id, device_external_id, device_name, site_external_id, priority, priority_rank, \
           diagnostics, raised_at, resolved, resolved_at, resolved_by, muted, ticket_number, context_type, context, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $18)",
                crate::rmm::alert_upsert_conflict!(),
                "RETURNING id"
            ),
        )
        .bind(tenant)
        .bind(integration)
        .bind(&a.external_id)
        .bind(&a.device_external_id)
        .bind(&a.device_name)
        .bind(&a.site_external_id)
        .bind(&a.priority)
        .bind(a.priority_rank)
        .bind(&a.diagnostics)
        .bind(a.raised_at)
        .bind(a.resolved)
        .bind(a.resolved_at)
        .bind(&a.resolved_by)
        .bind(a.muted)
        .bind(&a.ticket_number)
        .bind(&a.context_type)
        .bind(&a.context)
        .bind(now)
        .fetch_one(&mut **tx)
        .await?;
        ids.insert(a.external_id.clone(), id);
    }
    Ok(ids)
}
