//! The `SyncStore` SQL, written once for both backends (see `shared.rs`). The only
//! dialect difference is the claim query, passed in by each backend.

use sqlx::AssertSqlSafe;

/// `$first, $first+1, …` for `n` values.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn sql(s: String) -> AssertSqlSafe<String> {
    AssertSqlSafe(s)
}

/// `(${first}, ${first+1}, …)` groups of `width` for `rows` rows, each shaped by `template`
/// (which may splice fixed parameters in).
pub(crate) fn value_rows(
    rows: usize,
    width: usize,
    first: usize,
    template: &dyn Fn(&[String]) -> String,
) -> String {
    (0..rows)
        .map(|r| {
            let ps: Vec<String> = (0..width)
                .map(|c| format!("${}", first + r * width + c))
                .collect();
            template(&ps)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Each key once, at its last occurrence (a vendor may repeat a record in a page, and one
/// PostgreSQL statement must not touch a row twice).
pub(crate) fn last_of<T>(rows: Vec<&T>, key: impl Fn(&T) -> &str) -> Vec<&T> {
    let mut last = std::collections::HashMap::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        last.insert(key(r), i);
    }
    rows.iter()
        .enumerate()
        .filter(|(i, r)| last.get(key(r)) == Some(i))
        .map(|(_, r)| *r)
        .collect()
}

/// A link to write in a page commit.
#[derive(Clone, Copy)]
pub(crate) struct LinkWrite<'a> {
    pub local: i64,
    pub ext: &'a str,
    pub remote: Option<chrono::DateTime<chrono::Utc>>,
    pub hash: &'a str,
}

pub(crate) struct NewCompanyRow<'a> {
    pub id: i64,
    pub name: &'a str,
    pub active: bool,
}

pub(crate) struct NewUserRow<'a> {
    pub id: i64,
    pub company_id: i64,
    pub email: Option<&'a str>,
    pub phone: Option<&'a str>,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub role_id: i64,
    pub role_reason: &'a str,
    pub status: &'static str,
    /// One per line.
    pub contact_types: String,
}

pub(crate) struct UserUpdateRow<'a> {
    pub id: i64,
    pub company_id: i64,
    pub email: Option<&'a str>,
    pub phone: Option<&'a str>,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub active: bool,
    /// One per line.
    pub contact_types: String,
}

pub(crate) struct NewStaffRow<'a> {
    pub id: i64,
    pub email: &'a str,
    pub name: &'a str,
    pub active: bool,
}

#[derive(sqlx::FromRow)]
pub(crate) struct RunRow {
    pub id: i64,
    pub integration_id: i64,
    pub trigger: String,
    pub worker: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub result: String,
    pub counts: String,
    pub error: Option<String>,
    pub requests: i64,
}

#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
    pub id: i64,
    pub run_id: i64,
    pub at: chrono::DateTime<chrono::Utc>,
    pub level: String,
    pub record_type: Option<String>,
    pub external_id: Option<String>,
    pub message: String,
}

#[derive(sqlx::FromRow)]
pub(crate) struct CursorRow {
    pub watermark: Option<chrono::DateTime<chrono::Utc>>,
    pub sync_from: Option<chrono::DateTime<chrono::Utc>>,
    pub last_full_pass_at: Option<chrono::DateTime<chrono::Utc>>,
    pub pass_run_id: Option<i64>,
    pub pass_full: bool,
    pub pass_since: Option<chrono::DateTime<chrono::Utc>>,
    pub pass_after: Option<String>,
    pub pass_max_seen: Option<chrono::DateTime<chrono::Utc>>,
    pub pass_deferred: i64,
    pub deferred: i64,
    pub last_pass_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct ScheduleRow {
    pub next_run_at: chrono::DateTime<chrono::Utc>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<chrono::DateTime<chrono::Utc>>,
    pub consecutive_failures: i64,
    pub paused_reason: Option<String>,
    pub manual_requested_at: Option<chrono::DateTime<chrono::Utc>>,
}

macro_rules! impl_sync_store {
    ($store:ty, $claim_sql:literal, $fence_sql:literal, $page_commits:literal, $analyze_sql:literal) => {
        mod sync_impl {
            use std::collections::{BTreeMap, HashMap};

            use async_trait::async_trait;
            use chrono::{DateTime, Utc};
            use mspbridge_domain::integration::Integration;
            use mspbridge_domain::sync::*;
            use mspbridge_domain::{IntegrationId, RoleId, TenantId};

            use super::*;
            use crate::sync::*;
            use crate::sync_shared::{CursorRow, EventRow, RunRow, ScheduleRow, sql};
            use crate::{Result, Store, StoreError};

            fn corrupt(what: &str, v: &str) -> StoreError {
                StoreError::Corrupt(format!("unknown {what} '{v}'"))
            }

            fn run_from(r: RunRow) -> Result<SyncRun> {
                Ok(SyncRun {
                    id: r.id,
                    integration_id: IntegrationId(r.integration_id),
                    trigger: Trigger::parse(&r.trigger).ok_or_else(|| corrupt("trigger", &r.trigger))?,
                    result: RunResult::parse(&r.result).ok_or_else(|| corrupt("result", &r.result))?,
                    counts: serde_json::from_str(&r.counts).map_err(|e| StoreError::Corrupt(format!("run counts: {e}")))?,
                    worker: r.worker,
                    started_at: r.started_at,
                    finished_at: r.finished_at,
                    error: r.error,
                    requests: r.requests,
                })
            }

            const RUN_COLS: &str = "id, integration_id, trigger, worker, started_at, finished_at, result, counts, error, requests";

            #[async_trait]
            impl SyncStore for $store {
                async fn sync_options(&self, tenant: TenantId, id: IntegrationId) -> Result<SyncOptions> {
                    let row: Option<(String,)> = sqlx::query_as("SELECT options FROM integrations WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant.0)
                        .bind(id.0)
                        .fetch_optional(&self.pool)
                        .await?;
                    let (json,) = row.ok_or(StoreError::NotFound)?;
                    serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(format!("sync options: {e}")))
                }

                async fn set_sync_options(&self, tenant: TenantId, id: IntegrationId, options: &SyncOptions, now: DateTime<Utc>) -> Result<Integration> {
                    let json = serde_json::to_string(options).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    let mut tx = self.begin_write().await?;
                    let done = sqlx::query("UPDATE integrations SET options = $3, updated_at = $4 WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant.0)
                        .bind(id.0)
                        .bind(json)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound);
                    }
                    if options.enabled {
                        sqlx::query(
                            "INSERT INTO sync_schedule (integration_id, tenant_id, next_run_at, pending_trigger, consecutive_failures) \
                             VALUES ($1, $2, $3, 'schedule', 0) \
                             ON CONFLICT (integration_id) DO UPDATE SET next_run_at = CASE WHEN sync_schedule.next_run_at > excluded.next_run_at \
                               THEN excluded.next_run_at ELSE sync_schedule.next_run_at END",
                        )
                        .bind(id.0)
                        .bind(tenant.0)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    } else {
                        sqlx::query("DELETE FROM sync_schedule WHERE integration_id = $1 AND lease_owner IS NULL").bind(id.0).execute(&mut *tx).await?;
                    }
                    tx.commit().await?;
                    self.get_integration(tenant, id).await
                }

                async fn schedule(&self, tenant: TenantId, id: IntegrationId) -> Result<Option<Schedule>> {
                    let row: Option<ScheduleRow> = sqlx::query_as(
                        "SELECT next_run_at, lease_owner, lease_until, consecutive_failures, paused_reason, manual_requested_at \
                         FROM sync_schedule WHERE tenant_id = $1 AND integration_id = $2",
                    )
                    .bind(tenant.0)
                    .bind(id.0)
                    .fetch_optional(&self.pool)
                    .await?;
                    Ok(row.map(|r| Schedule {
                        next_run_at: r.next_run_at,
                        running: r.lease_owner.is_some() && r.lease_until.is_some(),
                        consecutive_failures: r.consecutive_failures,
                        paused_reason: r.paused_reason,
                        manual_requested_at: r.manual_requested_at,
                    }))
                }

                async fn save_vocabulary(&self, tenant: TenantId, id: IntegrationId, vocabulary: &Vocabulary) -> Result<()> {
                    let json = serde_json::to_string(vocabulary).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    let done = sqlx::query("UPDATE integrations SET vocabulary = $3 WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant.0)
                        .bind(id.0)
                        .bind(json)
                        .execute(&self.pool)
                        .await?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound);
                    }
                    Ok(())
                }

                async fn vocabulary(&self, tenant: TenantId, id: IntegrationId) -> Result<Option<Vocabulary>> {
                    let row: Option<(Option<String>,)> = sqlx::query_as("SELECT vocabulary FROM integrations WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant.0)
                        .bind(id.0)
                        .fetch_optional(&self.pool)
                        .await?;
                    let Some((json,)) = row else { return Err(StoreError::NotFound) };
                    json.map(|j| serde_json::from_str(&j).map_err(|e| corrupt("vocabulary", &e.to_string())))
                        .transpose()
                }

                async fn request_sync(&self, tenant: TenantId, id: IntegrationId, now: DateTime<Utc>, cooldown: chrono::Duration) -> Result<SyncRequest> {
                    self.get_integration(tenant, id).await?;
                    let current = self.schedule(tenant, id).await?;
                    if let Some(s) = &current {
                        if s.running {
                            return Ok(SyncRequest::AlreadyRunning);
                        }
                        if let Some(at) = s.manual_requested_at
                            && at + cooldown > now
                        {
                            return Ok(SyncRequest::CoolingDown(at + cooldown));
                        }
                    }
                    sqlx::query(
                        "INSERT INTO sync_schedule (integration_id, tenant_id, next_run_at, pending_trigger, consecutive_failures, manual_requested_at) \
                         VALUES ($1, $2, $3, 'manual', 0, $3) \
                         ON CONFLICT (integration_id) DO UPDATE SET next_run_at = excluded.next_run_at, pending_trigger = 'manual', \
                           manual_requested_at = excluded.manual_requested_at",
                    )
                    .bind(id.0)
                    .bind(tenant.0)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                    Ok(SyncRequest::Queued)
                }

                async fn request_quick_sync(&self, tenant: TenantId, id: IntegrationId, now: DateTime<Utc>, cooldown: chrono::Duration) -> Result<SyncRequest> {
                    self.get_integration(tenant, id).await?;
                    if let Some(s) = self.schedule(tenant, id).await? {
                        if s.running {
                            return Ok(SyncRequest::AlreadyRunning);
                        }
                        if let Some(at) = s.manual_requested_at
                            && at + cooldown > now
                        {
                            return Ok(SyncRequest::CoolingDown(at + cooldown));
                        }
                    }
                    // A full run due now stays full; otherwise the due time is kept aside
                    // (once: a second quick request keeps the first one's) and restored on release.
                    sqlx::query(
                        "INSERT INTO sync_schedule (integration_id, tenant_id, next_run_at, pending_trigger, consecutive_failures, manual_requested_at) \
                         VALUES ($1, $2, $3, 'quick', 0, CASE WHEN $4 THEN $3 END) \
                         ON CONFLICT (integration_id) DO UPDATE SET \
                           deferred_next_run_at = CASE WHEN sync_schedule.pending_trigger <> 'quick' AND sync_schedule.next_run_at <= excluded.next_run_at \
                             THEN sync_schedule.deferred_next_run_at ELSE COALESCE(sync_schedule.deferred_next_run_at, sync_schedule.next_run_at) END, \
                           pending_trigger = CASE WHEN sync_schedule.pending_trigger <> 'quick' AND sync_schedule.next_run_at <= excluded.next_run_at \
                             THEN sync_schedule.pending_trigger ELSE 'quick' END, \
                           next_run_at = CASE WHEN sync_schedule.next_run_at < excluded.next_run_at THEN sync_schedule.next_run_at ELSE excluded.next_run_at END, \
                           manual_requested_at = COALESCE(excluded.manual_requested_at, sync_schedule.manual_requested_at)",
                    )
                    .bind(id.0)
                    .bind(tenant.0)
                    .bind(now)
                    .bind(cooldown > chrono::Duration::zero())
                    .execute(&self.pool)
                    .await?;
                    Ok(SyncRequest::Queued)
                }

                async fn reactivate(&self, tenant: TenantId, id: IntegrationId, now: DateTime<Utc>) -> Result<()> {
                    self.get_integration(tenant, id).await?;
                    sqlx::query(
                        "INSERT INTO sync_schedule (integration_id, tenant_id, next_run_at, pending_trigger, consecutive_failures) VALUES ($1, $2, $3, 'manual', 0) \
                         ON CONFLICT (integration_id) DO UPDATE SET paused_reason = NULL, consecutive_failures = 0, next_run_at = excluded.next_run_at, pending_trigger = 'manual'",
                    )
                    .bind(id.0)
                    .bind(tenant.0)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                async fn integration_gauges(&self) -> Result<Vec<IntegrationGauges>> {
                    Ok(sqlx::query_as::<_, IntegrationGauges>(
                        "SELECT i.id AS integration_id, i.provider, \
                         (SELECT COUNT(*) FROM sync_schedule s WHERE s.integration_id = i.id AND s.paused_reason IS NOT NULL) AS paused, \
                         (SELECT COUNT(*) FROM outbox o WHERE o.integration_id = i.id AND o.state = 'pending') AS outbox_pending, \
                         (SELECT COUNT(*) FROM outbox o WHERE o.integration_id = i.id AND o.state = 'failed') AS outbox_failed \
                         FROM integrations i ORDER BY i.id",
                    )
                    .fetch_all(&self.pool)
                    .await?)
                }

                async fn claim_due(&self, worker: &str, now: DateTime<Utc>, lease_until: DateTime<Utc>) -> Result<Option<Claim>> {
                    let row: Option<(i64, i64, String)> =
                        sqlx::query_as($claim_sql).bind(worker).bind(now).bind(lease_until).fetch_optional(&self.pool).await?;
                    Ok(row.map(|(integration, tenant, trigger)| Claim {
                        tenant_id: TenantId(tenant),
                        integration_id: IntegrationId(integration),
                        trigger: Trigger::parse(&trigger).unwrap_or(Trigger::Schedule),
                    }))
                }

                async fn renew_lease(&self, id: IntegrationId, worker: &str, until: DateTime<Utc>) -> Result<bool> {
                    let done = sqlx::query("UPDATE sync_schedule SET lease_until = $3 WHERE integration_id = $1 AND lease_owner = $2")
                        .bind(id.0)
                        .bind(worker)
                        .bind(until)
                        .execute(&self.pool)
                        .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn release(&self, id: IntegrationId, worker: &str, r: Release) -> Result<()> {
                    sqlx::query(
                        "UPDATE sync_schedule SET lease_owner = NULL, lease_until = NULL, \
                           next_run_at = CASE WHEN pending_trigger = 'quick' AND deferred_next_run_at IS NOT NULL THEN deferred_next_run_at ELSE $3 END, \
                           deferred_next_run_at = NULL, pending_trigger = 'schedule', \
                           consecutive_failures = CASE WHEN $4 THEN consecutive_failures + 1 ELSE 0 END, \
                           paused_reason = COALESCE($5, paused_reason) \
                         WHERE integration_id = $1 AND lease_owner = $2",
                    )
                    .bind(id.0)
                    .bind(worker)
                    .bind(r.next_run_at)
                    .bind(r.failed)
                    .bind(r.pause)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                async fn start_run(&self, tenant: TenantId, id: IntegrationId, trigger: Trigger, worker: &str, now: DateTime<Utc>) -> Result<i64> {
                    // Only the lease holder starts a run, so any run still marked running was cut off
                    // (process killed, lease lost): say so instead of leaving it running forever.
                    sqlx::query(
                        "UPDATE sync_runs SET result = 'failed', finished_at = $3, \
                           error = 'interrupted: the worker stopped or lost its lease; the next run resumes from the last committed page' \
                         WHERE tenant_id = $1 AND integration_id = $2 AND result = 'running'",
                    )
                    .bind(tenant.0)
                    .bind(id.0)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                    let (run,): (i64,) = sqlx::query_as(
                        "INSERT INTO sync_runs (tenant_id, integration_id, trigger, worker, started_at, result, counts, requests) \
                         VALUES ($1, $2, $3, $4, $5, 'running', '{}', 0) RETURNING id",
                    )
                    .bind(tenant.0)
                    .bind(id.0)
                    .bind(trigger.as_str())
                    .bind(worker)
                    .bind(now)
                    .fetch_one(&self.pool)
                    .await?;
                    Ok(run)
                }

                async fn finish_run(
                    &self,
                    run_id: i64,
                    result: RunResult,
                    counts: &BTreeMap<RecordType, Counts>,
                    error: Option<&str>,
                    requests: u64,
                    now: DateTime<Utc>,
                ) -> Result<()> {
                    let counts = serde_json::to_string(counts).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    sqlx::query("UPDATE sync_runs SET finished_at = $2, result = $3, counts = $4, error = $5, requests = $6 WHERE id = $1")
                        .bind(run_id)
                        .bind(now)
                        .bind(result.as_str())
                        .bind(counts)
                        .bind(error)
                        .bind(requests as i64)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }

                async fn add_events(&self, tenant: TenantId, run_id: i64, events: &[NewEvent], now: DateTime<Utc>) -> Result<()> {
                    let mut tx = self.begin_write().await?;
                    for e in events {
                        insert_event(&mut tx, tenant, run_id, e, now).await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }

                async fn list_runs(&self, tenant: TenantId, id: IntegrationId, limit: i64) -> Result<Vec<SyncRun>> {
                    let rows: Vec<RunRow> = sqlx::query_as(sql(format!(
                        "SELECT {RUN_COLS} FROM sync_runs WHERE tenant_id = $1 AND integration_id = $2 ORDER BY id DESC LIMIT $3"
                    )))
                    .bind(tenant.0)
                    .bind(id.0)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.into_iter().map(run_from).collect()
                }

                async fn list_runs_page(&self, tenant: TenantId, id: IntegrationId, offset: i64, limit: i64) -> Result<(Vec<SyncRun>, i64)> {
                    let rows: Vec<RunRow> = sqlx::query_as(sql(format!(
                        "SELECT {RUN_COLS} FROM sync_runs WHERE tenant_id = $1 AND integration_id = $2 ORDER BY id DESC LIMIT $3 OFFSET $4"
                    )))
                    .bind(tenant.0)
                    .bind(id.0)
                    .bind(limit.clamp(1, 1000))
                    .bind(offset.max(0))
                    .fetch_all(&self.pool)
                    .await?;
                    let (total,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM sync_runs WHERE tenant_id = $1 AND integration_id = $2")
                        .bind(tenant.0)
                        .bind(id.0)
                        .fetch_one(&self.pool)
                        .await?;
                    Ok((rows.into_iter().map(run_from).collect::<Result<_>>()?, total))
                }

                async fn get_run(&self, tenant: TenantId, run_id: i64) -> Result<SyncRun> {
                    let row: Option<RunRow> = sqlx::query_as(sql(format!("SELECT {RUN_COLS} FROM sync_runs WHERE tenant_id = $1 AND id = $2")))
                        .bind(tenant.0)
                        .bind(run_id)
                        .fetch_optional(&self.pool)
                        .await?;
                    run_from(row.ok_or(StoreError::NotFound)?)
                }

                async fn list_events(
                    &self,
                    tenant: TenantId,
                    run_id: i64,
                    level: Option<EventLevel>,
                    record_type: Option<RecordType>,
                    limit: i64,
                ) -> Result<Vec<SyncEvent>> {
                    let rows: Vec<EventRow> = sqlx::query_as(
                        "SELECT id, run_id, at, level, record_type, external_id, message FROM sync_events \
                         WHERE tenant_id = $1 AND run_id = $2 AND ($3 IS NULL OR level = $3) AND ($4 IS NULL OR record_type = $4) \
                         ORDER BY id LIMIT $5",
                    )
                    .bind(tenant.0)
                    .bind(run_id)
                    .bind(level.map(|l| l.as_str()))
                    .bind(record_type.map(|r| r.as_str()))
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.into_iter()
                        .map(|r| {
                            Ok(SyncEvent {
                                id: r.id,
                                run_id: r.run_id,
                                at: r.at,
                                level: EventLevel::parse(&r.level).ok_or_else(|| corrupt("level", &r.level))?,
                                record_type: r.record_type.as_deref().and_then(RecordType::parse),
                                external_id: r.external_id,
                                message: r.message,
                            })
                        })
                        .collect()
                }

                async fn list_events_page(
                    &self,
                    tenant: TenantId,
                    run_id: i64,
                    level: Option<EventLevel>,
                    record_type: Option<RecordType>,
                    offset: i64,
                    limit: i64,
                ) -> Result<(Vec<SyncEvent>, i64)> {
                    let filter = "WHERE tenant_id = $1 AND run_id = $2 AND ($3 IS NULL OR level = $3) AND ($4 IS NULL OR record_type = $4)";
                    let rows: Vec<EventRow> = sqlx::query_as(sql(format!(
                        "SELECT id, run_id, at, level, record_type, external_id, message FROM sync_events {filter} ORDER BY id LIMIT $5 OFFSET $6"
                    )))
                    .bind(tenant.0)
                    .bind(run_id)
                    .bind(level.map(|l| l.as_str()))
                    .bind(record_type.map(|r| r.as_str()))
                    .bind(limit.clamp(1, 5000))
                    .bind(offset.max(0))
                    .fetch_all(&self.pool)
                    .await?;
                    let (total,): (i64,) = sqlx::query_as(sql(format!("SELECT COUNT(*) FROM sync_events {filter}")))
                        .bind(tenant.0)
                        .bind(run_id)
                        .bind(level.map(|l| l.as_str()))
                        .bind(record_type.map(|r| r.as_str()))
                        .fetch_one(&self.pool)
                        .await?;
                    let events = rows
                        .into_iter()
                        .map(|r| {
                            Ok(SyncEvent {
                                id: r.id,
                                run_id: r.run_id,
                                at: r.at,
                                level: EventLevel::parse(&r.level).ok_or_else(|| corrupt("level", &r.level))?,
                                record_type: r.record_type.as_deref().and_then(RecordType::parse),
                                external_id: r.external_id,
                                message: r.message,
                            })
                        })
                        .collect::<Result<Vec<_>>>()?;
                    Ok((events, total))
                }

                async fn cursor(&self, id: IntegrationId, record: RecordType) -> Result<Cursor> {
                    let row: Option<CursorRow> = sqlx::query_as(
                        "SELECT watermark, sync_from, last_full_pass_at, pass_run_id, pass_full, pass_since, pass_after, pass_max_seen, \
                           pass_deferred, deferred, last_pass_at \
                         FROM sync_cursors WHERE integration_id = $1 AND record_type = $2",
                    )
                    .bind(id.0)
                    .bind(record.as_str())
                    .fetch_optional(&self.pool)
                    .await?;
                    Ok(match row {
                        None => Cursor::default(),
                        Some(r) => Cursor {
                            watermark: r.watermark,
                            sync_from: r.sync_from,
                            last_full_pass_at: r.last_full_pass_at,
                            last_pass_at: r.last_pass_at,
                            deferred: u64::try_from(r.deferred).unwrap_or(0),
                            pass: r.pass_run_id.map(|run_id| PassState {
                                run_id,
                                full: r.pass_full,
                                since: r.pass_since,
                                after: r.pass_after,
                                max_seen: r.pass_max_seen,
                                deferred: u64::try_from(r.pass_deferred).unwrap_or(0),
                            }),
                        },
                    })
                }

                async fn begin_pass(&self, id: IntegrationId, record: RecordType, worker: &str, sync_from: Option<DateTime<Utc>>, pass: &PassState) -> Result<()> {
                    let mut tx = self.begin_write().await?;
                    fence(&mut tx, id, worker).await?;
                    upsert_cursor(&mut tx, id, record, pass).await?;
                    if let Some(from) = sync_from {
                        sqlx::query("UPDATE sync_cursors SET sync_from = COALESCE(sync_from, $3) WHERE integration_id = $1 AND record_type = $2")
                            .bind(id.0)
                            .bind(record.as_str())
                            .bind(from)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }

                async fn links(&self, id: IntegrationId, record: RecordType, external_ids: &[String]) -> Result<HashMap<String, LinkState>> {
                    let mut out = HashMap::with_capacity(external_ids.len());
                    for chunk in external_ids.chunks(500) {
                        for (ext, local_id, content_hash, gone) in super::link_rows(&self.pool, id.0, linked_record(record).as_str(), chunk).await? {
                            out.insert(ext, LinkState { local_id, content_hash, gone });
                        }
                    }
                    Ok(out)
                }

                async fn unlinked_by_admin(&self, id: IntegrationId) -> Result<std::collections::HashSet<String>> {
                    let rows: Vec<(String,)> = sqlx::query_as(
                        "SELECT external_id FROM integration_companies WHERE integration_id = $1 AND import_state IN ('unlinked', 'blocked')",
                    )
                    .bind(id.0)
                    .fetch_all(&self.pool)
                    .await?;
                    Ok(rows.into_iter().map(|(e,)| e).collect())
                }

                async fn linkable_companies(&self, tenant: TenantId, id: IntegrationId) -> Result<Vec<(i64, String)>> {
                    Ok(sqlx::query_as(
                        "SELECT c.id, c.name FROM companies c WHERE c.tenant_id = $1 AND c.active \
                         AND NOT EXISTS (SELECT 1 FROM external_links l WHERE l.tenant_id = $1 AND l.record_kind = 'company' AND l.local_id = c.id AND l.integration_id = $2)",
                    )
                    .bind(tenant.0)
                    .bind(id.0)
                    .fetch_all(&self.pool)
                    .await?)
                }

                async fn import_role_overrides(&self, tenant: TenantId, company_ids: &[i64]) -> Result<HashMap<i64, RoleId>> {
                    let mut out = HashMap::new();
                    for chunk in company_ids.chunks(500) {
                        for (c, r) in super::override_rows(&self.pool, tenant.0, chunk).await? {
                            out.insert(c, RoleId(r));
                        }
                    }
                    Ok(out)
                }

                async fn linked_local_ids(&self, id: IntegrationId, record: RecordType, local_ids: &[i64]) -> Result<std::collections::HashSet<i64>> {
                    let mut out = std::collections::HashSet::new();
                    for chunk in local_ids.chunks(500) {
                        let q = format!(
                            "SELECT local_id FROM external_links WHERE integration_id = $1 AND record_kind = $2 AND local_id IN ({})",
                            crate::sync_shared::placeholders(3, chunk.len())
                        );
                        let mut query = sqlx::query_as::<_, (i64,)>(sql(q)).bind(id.0).bind(linked_record(record).as_str());
                        for l in chunk {
                            query = query.bind(l);
                        }
                        out.extend(query.fetch_all(&self.pool).await?.into_iter().map(|r| r.0));
                    }
                    Ok(out)
                }

                async fn staff_by_email(&self, tenant: TenantId, emails: &[String]) -> Result<HashMap<String, i64>> {
                    let mut out = HashMap::new();
                    for chunk in emails.chunks(500) {
                        out.extend(super::staff_rows(&self.pool, tenant.0, chunk).await?);
                    }
                    Ok(out)
                }

                async fn tickets_by_marker(&self, tenant: TenantId, id: IntegrationId, markers: &[String]) -> Result<HashMap<String, i64>> {
                    let mut out = HashMap::new();
                    for chunk in markers.chunks(500) {
                        let q = format!(
                            "SELECT marker, ticket_id FROM outbox WHERE tenant_id = $1 AND integration_id = $2 AND op = 'create_ticket' AND marker IN ({})",
                            crate::sync_shared::placeholders(3, chunk.len())
                        );
                        let mut query = sqlx::query_as::<_, (String, i64)>(sql(q)).bind(tenant.0).bind(id.0);
                        for m in chunk {
                            query = query.bind(m);
                        }
                        out.extend(query.fetch_all(&self.pool).await?);
                    }
                    Ok(out)
                }

                async fn ticket_locals(&self, tenant: TenantId, ticket_ids: &[i64]) -> Result<HashMap<i64, TicketLocal>> {
                    let mut out: HashMap<i64, TicketLocal> = HashMap::new();
                    for chunk in ticket_ids.chunks(500) {
                        let ps = crate::sync_shared::placeholders(2, chunk.len());
                        let mut query = sqlx::query_as::<_, (i64, Option<String>)>(sql(format!(
                            "SELECT id, psa_status FROM tickets WHERE tenant_id = $1 AND id IN ({ps})"
                        )))
                        .bind(tenant.0);
                        for t in chunk {
                            query = query.bind(t);
                        }
                        for (t, psa_status) in query.fetch_all(&self.pool).await? {
                            out.entry(t).or_default().psa_status = psa_status;
                        }
                        // The newest status change not yet written (pending, or refused and kept).
                        let mut query = sqlx::query_as::<_, (i64, String)>(sql(format!(
                            "SELECT ticket_id, payload FROM outbox WHERE tenant_id = $1 AND op = 'set_status' AND state IN ('pending', 'failed') \
                             AND ticket_id IN ({ps}) ORDER BY id"
                        )))
                        .bind(tenant.0);
                        for t in chunk {
                            query = query.bind(t);
                        }
                        for (t, payload) in query.fetch_all(&self.pool).await? {
                            let status = serde_json::from_str::<serde_json::Value>(&payload)
                                .ok()
                                .and_then(|v| v.get("status").and_then(|s| s.as_str()).map(str::to_string));
                            if let Some(status) = status {
                                out.entry(t).or_default().pending_status = Some(status);
                            }
                        }
                    }
                    Ok(out)
                }

                async fn clear_synced_tickets(&self, tenant: TenantId, id: IntegrationId, now: DateTime<Utc>) -> Result<u64> {
                    let mut tx = self.begin_write().await?;
                    let r: Result<u64> = async {
                        let owned: Option<(i64,)> = sqlx::query_as("SELECT id FROM integrations WHERE tenant_id = $1 AND id = $2")
                            .bind(tenant.0)
                            .bind(id.0)
                            .fetch_optional(&mut *tx)
                            .await?;
                        if owned.is_none() {
                            return Err(StoreError::NotFound);
                        }
                        let running: Option<(i64,)> = sqlx::query_as("SELECT integration_id FROM sync_schedule WHERE integration_id = $1 AND lease_until > $2")
                            .bind(id.0)
                            .bind(now)
                            .fetch_optional(&mut *tx)
                            .await?;
                        if running.is_some() {
                            return Err(StoreError::Conflict("a sync of this integration is running; Clear & Resync when it has finished".into()));
                        }
                        let mine = "SELECT local_id FROM external_links WHERE tenant_id = $1 AND integration_id = $2 AND record_kind = 'ticket'";
                        let (waiting,): (i64,) = sqlx::query_as(sql(format!(
                            "SELECT COUNT(*) FROM outbox WHERE tenant_id = $1 AND state IN ('pending', 'failed') AND ticket_id IN ({mine})"
                        )))
                        .bind(tenant.0)
                        .bind(id.0)
                        .fetch_one(&mut *tx)
                        .await?;
                        if waiting > 0 {
                            return Err(StoreError::Conflict(format!(
                                "{waiting} portal change(s) to these tickets are not written to the PSA yet; let them finish (or retry or discard the failed ones) before Clear & Resync"
                            )));
                        }
                        sqlx::query(sql(format!(
                            "DELETE FROM external_links WHERE tenant_id = $1 AND integration_id = $2 AND record_kind = 'ticket_note' \
                             AND local_id IN (SELECT id FROM ticket_notes WHERE ticket_id IN ({mine}))"
                        )))
                        .bind(tenant.0)
                        .bind(id.0)
                        .execute(&mut *tx)
                        .await?;
                        let gone = sqlx::query(sql(format!("DELETE FROM tickets WHERE tenant_id = $1 AND id IN ({mine})")))
                            .bind(tenant.0)
                            .bind(id.0)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                        sqlx::query("DELETE FROM external_links WHERE tenant_id = $1 AND integration_id = $2 AND record_kind = 'ticket'")
                            .bind(tenant.0)
                            .bind(id.0)
                            .execute(&mut *tx)
                            .await?;
                        sqlx::query("DELETE FROM sync_cursors WHERE integration_id = $1 AND record_type = 'tickets'")
                            .bind(id.0)
                            .execute(&mut *tx)
                            .await?;
                        Ok(gone)
                    }
                    .await;
                    crate::finish_tx(tx, r).await
                }

                async fn manual_users_by_email(&self, tenant: TenantId, emails: &[String]) -> Result<HashMap<String, (i64, i64)>> {
                    let mut out = HashMap::new();
                    for chunk in emails.chunks(500) {
                        for (e, c, u) in super::manual_user_rows(&self.pool, tenant.0, chunk).await? {
                            out.insert(e, (c, u));
                        }
                    }
                    Ok(out)
                }

                async fn commit_page(&self, tenant: TenantId, id: IntegrationId, run_id: i64, worker: &str, page: PageCommit, now: DateTime<Utc>) -> Result<()> {
                    use crate::sync_shared::{LinkWrite, NewCompanyRow, NewStaffRow, NewUserRow, UserUpdateRow};
                    let kind = linked_record(page.record).as_str();
                    let seen = if page.pass.full { Some(page.pass.run_id) } else { None };
                    let mut tx = self.begin_write().await?;
                    fence(&mut tx, id, worker).await?;
                    // New rows get their ids allocated first, so they can be inserted in batches.
                    let n_new = page
                        .ops
                        .iter()
                        .filter(|o| match o {
                            Op::Company { existing, .. } | Op::CompanyUser { existing, .. } | Op::Staff { existing, .. } => existing.is_none(),
                            Op::Ticket(t) => t.existing.is_none(),
                            Op::Device(_) | Op::ImportDevice { .. } | Op::Alert(_) | Op::Seen { .. } => false,
                        })
                        .count();
                    let table = match page.record {
                        RecordType::Companies => "companies",
                        RecordType::Contacts => "company_users",
                        RecordType::Technicians => "staff_users",
                        RecordType::Tickets => "tickets",
                        RecordType::Devices => "devices",
                        RecordType::Alerts => "alerts",
                        RecordType::Invoices => "billing_invoices",
                        RecordType::Subscriptions => "billing_subscriptions",
                        RecordType::Payments => "billing_payments",
                    };
                    if page.record == RecordType::Devices {
                        super::rmm_impl::ensure_type_mappings(&mut tx, tenant.0, id.0, &page.ops, now).await?;
                    }
                    let mut new_ids = super::alloc_ids(&mut tx, table, n_new).await?.into_iter();
                    let mut next_id = || new_ids.next().ok_or_else(|| StoreError::Corrupt("id allocation came up short".into()));
                    let mut seen_ids: Vec<String> = Vec::new();
                    let mut links: Vec<LinkWrite<'_>> = Vec::with_capacity(page.ops.len());
                    let mut new_companies: Vec<NewCompanyRow<'_>> = Vec::new();
                    let mut new_users: Vec<NewUserRow<'_>> = Vec::new();
                    let mut user_updates: Vec<UserUpdateRow<'_>> = Vec::new();
                    let mut new_staff: Vec<NewStaffRow<'_>> = Vec::new();
                    let mut tickets: Vec<(i64, &TicketOp)> = Vec::new();
                    let mut devices: Vec<&DeviceOp> = Vec::new();
                    let mut imports: Vec<(i64, i64)> = Vec::new();
                    let mut alerts: Vec<&AlertOp> = Vec::new();
                    for op in &page.ops {
                        match op {
                            Op::Ticket(t) => {
                                let local = match t.existing {
                                    Some(local) => local,
                                    None => next_id()?,
                                };
                                tickets.push((local, t));
                                links.push(LinkWrite { local, ext: &t.external_id, remote: t.remote_updated_at, hash: &t.hash });
                            }
                            Op::Seen { external_id } => seen_ids.push(external_id.clone()),
                            Op::Device(d) => devices.push(d),
                            Op::ImportDevice { local_id, external_id, device_type_id } => {
                                imports.push((*local_id, *device_type_id));
                                seen_ids.push(external_id.clone());
                            }
                            Op::Alert(a) => alerts.push(a),
                            Op::Company { existing: Some(local), external_id, name, active, hash, remote_updated_at } => {
                                // Only the integration that created the company names it; others only link.
                                sqlx::query("UPDATE companies SET name = $3, active = $4, updated_at = $5 WHERE tenant_id = $1 AND id = $2 AND source_integration_id = $6")
                                    .bind(tenant.0)
                                    .bind(local)
                                    .bind(name)
                                    .bind(active)
                                    .bind(now)
                                    .bind(id.0)
                                    .execute(&mut *tx)
                                    .await?;
                                links.push(LinkWrite { local: *local, ext: external_id, remote: *remote_updated_at, hash });
                            }
                            Op::Company { existing: None, external_id, name, active, hash, remote_updated_at } => {
                                let nid = next_id()?;
                                new_companies.push(NewCompanyRow { id: nid, name, active: *active });
                                links.push(LinkWrite { local: nid, ext: external_id, remote: *remote_updated_at, hash });
                            }
                            Op::CompanyUser { existing: Some(local), company_id, external_id, email, phone, first_name, last_name, active, hash, remote_updated_at, contact_types, .. } => {
                                // Only imported users are updated (the batch filters on origin); their role stays.
                                user_updates.push(UserUpdateRow {
                                    id: *local,
                                    company_id: *company_id,
                                    email: email.as_deref(),
                                    phone: phone.as_deref(),
                                    first_name,
                                    last_name,
                                    active: *active,
                                    contact_types: contact_types.join("\n"),
                                });
                                links.push(LinkWrite { local: *local, ext: external_id, remote: *remote_updated_at, hash });
                            }
                            Op::CompanyUser { existing: None, company_id, external_id, email, phone, first_name, last_name, role, active, hash, remote_updated_at, contact_types } => {
                                let Some((role_id, role_reason)) = role else {
                                    return Err(StoreError::Corrupt(format!("new company user {external_id} has no role")));
                                };
                                let nid = next_id()?;
                                new_users.push(NewUserRow {
                                    id: nid,
                                    company_id: *company_id,
                                    email: email.as_deref(),
                                    phone: phone.as_deref(),
                                    first_name,
                                    last_name,
                                    role_id: role_id.0,
                                    role_reason,
                                    status: if *active { "imported" } else { "disabled" },
                                    contact_types: contact_types.join("\n"),
                                });
                                links.push(LinkWrite { local: nid, ext: external_id, remote: *remote_updated_at, hash });
                            }
                            Op::Staff { existing: Some(local), external_id, name, active, hash, remote_updated_at, .. } => {
                                // Manually created staff are linked, never edited.
                                sqlx::query("UPDATE staff_users SET name = $3, active = $4, updated_at = $5 WHERE tenant_id = $1 AND id = $2 AND origin = 'import'")
                                    .bind(tenant.0)
                                    .bind(local)
                                    .bind(name)
                                    .bind(active)
                                    .bind(now)
                                    .execute(&mut *tx)
                                    .await?;
                                links.push(LinkWrite { local: *local, ext: external_id, remote: *remote_updated_at, hash });
                            }
                            Op::Staff { existing: None, external_id, email, name, active, hash, remote_updated_at } => {
                                let nid = next_id()?;
                                new_staff.push(NewStaffRow { id: nid, email, name, active: *active });
                                links.push(LinkWrite { local: nid, ext: external_id, remote: *remote_updated_at, hash });
                            }
                        }
                    }
                    super::insert_companies(&mut tx, tenant.0, id.0, now, &new_companies).await?;
                    super::upsert_integration_companies(&mut tx, tenant.0, id.0, now, &page.companies).await?;
                    super::insert_users(&mut tx, tenant.0, now, &new_users).await?;
                    super::update_users(&mut tx, tenant.0, now, &user_updates).await?;
                    super::insert_staff(&mut tx, tenant.0, now, &new_staff).await?;
                    if !tickets.is_empty() {
                        write_tickets(&mut tx, &self.pool, tenant, id, &tickets, now).await?;
                    }
                    // Devices and alerts in one statement per page (PostgreSQL), each external id
                    // once (the last occurrence, as for the links below).
                    let devices = crate::sync_shared::last_of(devices, |d| d.external_id.as_str());
                    let device_ids = super::write_devices(&mut tx, tenant.0, id.0, now, &devices).await?;
                    for d in &devices {
                        let local = *device_ids.get(&d.external_id).ok_or_else(|| StoreError::Corrupt(format!("device {} was not written", d.external_id)))?;
                        links.push(LinkWrite { local, ext: &d.external_id, remote: None, hash: &d.hash });
                    }
                    super::import_staged(&mut tx, tenant.0, now, &imports).await?;
                    let alerts = crate::sync_shared::last_of(alerts, |a| a.external_id.as_str());
                    let alert_ids = super::write_alerts(&mut tx, tenant.0, id.0, now, &alerts).await?;
                    for a in &alerts {
                        let local = *alert_ids.get(&a.external_id).ok_or_else(|| StoreError::Corrupt(format!("alert {} was not written", a.external_id)))?;
                        links.push(LinkWrite { local, ext: &a.external_id, remote: None, hash: &a.hash });
                    }
                    // A vendor that repeats a record in one page must not make one statement touch a
                    // row twice (PostgreSQL refuses that): keep the last occurrence.
                    let mut last: HashMap<&str, usize> = HashMap::with_capacity(links.len());
                    for (i, l) in links.iter().enumerate() {
                        last.insert(l.ext, i);
                    }
                    let links: Vec<LinkWrite<'_>> = links.iter().enumerate().filter(|(i, l)| last.get(l.ext) == Some(i)).map(|(_, l)| *l).collect();
                    super::upsert_links(&mut tx, tenant.0, id.0, kind, seen, now, &links).await?;
                    if let Some(pass) = seen {
                        super::mark_seen(&mut tx, id.0, kind, pass, &seen_ids).await?;
                    }
                    for e in &page.events {
                        insert_event(&mut tx, tenant, run_id, e, now).await?;
                    }
                    // Links made by name are in the link history, one batch per run, so an admin
                    // can see and undo them like a Quick Match.
                    let batch = format!("run-{run_id}");
                    for (external_id, company, rule) in &page.auto_links {
                        sqlx::query(
                            "INSERT INTO company_link_audit (tenant_id, integration_id, external_id, action, before_company_id, after_company_id, batch, actor, at, state_before) \
                             VALUES ($1, $2, $3, $7, NULL, $4, $5, 'sync', $6, 'auto')",
                        )
                        .bind(tenant.0)
                        .bind(id.0)
                        .bind(external_id)
                        .bind(company)
                        .bind(&batch)
                        .bind(now)
                        .bind(rule.action())
                        .execute(&mut *tx)
                        .await?;
                    }
                    let checkpoint = match &page.checkpoint {
                        None => Some(page.pass.clone()),
                        Some(gate) => gate(),
                    };
                    if let Some(pass) = checkpoint {
                        upsert_cursor(&mut tx, id, page.record, &pass).await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }

                fn concurrent_page_commits(&self) -> usize {
                    $page_commits
                }

                async fn refresh_statistics(&self) -> Result<()> {
                    sqlx::raw_sql($analyze_sql).execute(&self.pool).await?;
                    Ok(())
                }

                async fn finish_pass(&self, tenant: TenantId, id: IntegrationId, record: RecordType, worker: &str, now: DateTime<Utc>) -> Result<u64> {
                    let cursor = self.cursor(id, record).await?;
                    let Some(pass) = cursor.pass else { return Ok(0) };
                    let kind = linked_record(record).as_str();
                    let mut tx = self.begin_write().await?;
                    fence(&mut tx, id, worker).await?;
                    let mut deactivated = 0;
                    if pass.full {
                        let missing = "SELECT local_id FROM external_links WHERE integration_id = $2 AND record_kind = $3 \
                                       AND gone_upstream_at IS NULL AND (last_seen_pass IS NULL OR last_seen_pass <> $4)";
                        let resolve_alerts = format!(
                            "UPDATE alerts SET resolved = TRUE, resolved_at = COALESCE(resolved_at, $5), resolved_by = COALESCE(resolved_by, '{}'), updated_at = $5 WHERE tenant_id = $1 AND resolved = FALSE AND id IN",
                            crate::rmm::NO_LONGER_OPEN
                        );
                        let target = match record {
                            RecordType::Companies => "UPDATE companies SET active = FALSE, updated_at = $5 WHERE tenant_id = $1 AND source_integration_id = $2 AND id IN",
                            RecordType::Contacts => "UPDATE company_users SET status = 'disabled', updated_at = $5 WHERE tenant_id = $1 AND origin = 'import' AND id IN",
                            RecordType::Technicians => "UPDATE staff_users SET active = FALSE, updated_at = $5 WHERE tenant_id = $1 AND origin = 'import' AND id IN",
                            // Tickets are kept (with their notes), stamped as gone from the PSA.
                            RecordType::Tickets => "UPDATE tickets SET removed_upstream_at = $5, updated_at = $5 WHERE tenant_id = $1 AND removed_upstream_at IS NULL AND id IN",
                            // Devices are kept (an imported device's history stays), stamped as gone.
                            RecordType::Devices => "UPDATE devices SET removed_upstream_at = $5, updated_at = $5 WHERE tenant_id = $1 AND removed_upstream_at IS NULL AND id IN",
                            // An alert no longer open in the RMM was resolved there.
                            RecordType::Alerts => resolve_alerts.as_str(),
                            // Billing records are synced by `sync::billing`, outside the
                            // pipeline, and keep no external links.
                            RecordType::Invoices => "UPDATE billing_invoices SET removed_at = $5 WHERE tenant_id = $1 AND integration_id = $2 AND id IN",
                            RecordType::Subscriptions => "UPDATE billing_subscriptions SET removed_at = $5 WHERE tenant_id = $1 AND integration_id = $2 AND id IN",
                            RecordType::Payments => "UPDATE billing_payments SET removed_at = $5 WHERE tenant_id = $1 AND integration_id = $2 AND id IN",
                        };
                        sqlx::query(sql(format!("{target} ({missing})")))
                            .bind(tenant.0)
                            .bind(id.0)
                            .bind(kind)
                            .bind(pass.run_id)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                        let done = sqlx::query(
                            "UPDATE external_links SET gone_upstream_at = $5, updated_at = $5 WHERE tenant_id = $1 AND integration_id = $2 AND record_kind = $3 \
                             AND gone_upstream_at IS NULL AND (last_seen_pass IS NULL OR last_seen_pass <> $4)",
                        )
                        .bind(tenant.0)
                        .bind(id.0)
                        .bind(kind)
                        .bind(pass.run_id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                        deactivated = done.rows_affected();
                    }
                    // A pass that deferred records keeps its starting point: the watermark
                    // stays, and a full pass stays due, so the next run reads them again.
                    let held = pass.deferred > 0;
                    let watermark = match (cursor.watermark, pass.max_seen) {
                        _ if held => cursor.watermark,
                        (Some(a), Some(b)) => Some(a.max(b)),
                        (a, b) => a.or(b),
                    };
                    sqlx::query(
                        "UPDATE sync_cursors SET watermark = $3, last_full_pass_at = CASE WHEN pass_full AND NOT $5 THEN $4 ELSE last_full_pass_at END, \
                           last_pass_at = $4, deferred = $6, \
                           pass_run_id = NULL, pass_full = FALSE, pass_since = NULL, pass_after = NULL, pass_max_seen = NULL, pass_deferred = 0 \
                         WHERE integration_id = $1 AND record_type = $2",
                    )
                    .bind(id.0)
                    .bind(record.as_str())
                    .bind(watermark)
                    .bind(now)
                    .bind(held)
                    .bind(i64::try_from(pass.deferred).unwrap_or(i64::MAX))
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(deactivated)
                }
            }

            /// Writes a page's imported tickets: new ones in multi-row inserts (their ids are
            /// allocated), changed ones one by one (the portal's status kept while a portal
            /// change waits in the outbox), then the notes the portal has no link for. A note
            /// the portal wrote itself and has not linked yet (same ticket, text, visibility)
            /// is linked, not added twice.
            async fn write_tickets(
                tx: &mut sqlx::Transaction<'_, Db>,
                pool: &sqlx::Pool<Db>,
                tenant: TenantId,
                id: IntegrationId,
                tickets: &[(i64, &TicketOp)],
                now: DateTime<Utc>,
            ) -> Result<()> {
                use crate::sync_shared::{placeholders, value_rows, LinkWrite};
                let new: Vec<&(i64, &TicketOp)> = tickets.iter().filter(|(_, t)| t.existing.is_none()).collect();
                for chunk in new.chunks(50) {
                    let values = value_rows(chunk.len(), 14, 3, &|p| {
                        format!("({}, $1, {}, $2)", p[0], p[1..].join(", "))
                    });
                    let q = format!(
                        "INSERT INTO tickets (id, tenant_id, company_id, summary, description, status, priority, closed, board, ticket_type, \
                           contact_id, assignee_id, closed_at, psa_status, created_at, updated_at) VALUES {values}"
                    );
                    let mut query = sqlx::query(sql(q)).bind(tenant.0).bind(now);
                    for (local, t) in chunk {
                        query = query
                            .bind(local)
                            .bind(t.company_id)
                            .bind(&t.summary)
                            .bind(&t.description)
                            .bind(&t.status)
                            .bind(&t.priority)
                            .bind(t.closed)
                            .bind(&t.board)
                            .bind(&t.ticket_type)
                            .bind(t.contact_id)
                            .bind(t.assignee_id)
                            .bind(t.closed_at)
                            .bind(&t.status)
                            .bind(t.created_at.unwrap_or(now));
                    }
                    query.execute(&mut **tx).await?;
                }
                for (local, t) in tickets.iter().filter(|(_, t)| t.existing.is_some()) {
                    sqlx::query(
                        "UPDATE tickets SET company_id = $3, summary = $4, description = $5, \
                           status = CASE WHEN $6 THEN status ELSE $7 END, closed = CASE WHEN $6 THEN closed ELSE $8 END, \
                           priority = $9, board = $10, ticket_type = $11, contact_id = $12, assignee_id = $13, closed_at = $14, \
                           psa_status = $7, removed_upstream_at = NULL, updated_at = $15 \
                         WHERE tenant_id = $1 AND id = $2",
                    )
                    .bind(tenant.0)
                    .bind(local)
                    .bind(t.company_id)
                    .bind(&t.summary)
                    .bind(&t.description)
                    .bind(t.keep_status)
                    .bind(&t.status)
                    .bind(t.closed)
                    .bind(&t.priority)
                    .bind(&t.board)
                    .bind(&t.ticket_type)
                    .bind(t.contact_id)
                    .bind(t.assignee_id)
                    .bind(t.closed_at)
                    .bind(now)
                    .execute(&mut **tx)
                    .await?;
                }
                // Notes: which vendor notes the portal has already.
                let note_ids: Vec<String> = tickets.iter().flat_map(|(_, t)| t.notes.iter().map(|n| n.external_id.clone())).collect();
                if note_ids.is_empty() {
                    return Ok(());
                }
                let mut linked: std::collections::HashSet<String> = std::collections::HashSet::new();
                for chunk in note_ids.chunks(500) {
                    linked.extend(super::link_rows(pool, id.0, "ticket_note", chunk).await?.into_iter().map(|r| r.0));
                }
                // The portal's own notes on these tickets that no vendor note is linked to yet.
                let existing: Vec<i64> = tickets
                    .iter()
                    .filter(|(_, t)| t.existing.is_some() && t.notes.iter().any(|n| !linked.contains(&n.external_id)))
                    .map(|(l, _)| *l)
                    .collect();
                let mut own: HashMap<(i64, String, bool), Vec<i64>> = HashMap::new();
                for chunk in existing.chunks(500) {
                    let q = format!(
                        "SELECT n.id, n.ticket_id, n.body, n.internal FROM ticket_notes n WHERE n.tenant_id = $1 AND n.origin = 'portal' \
                         AND n.ticket_id IN ({}) AND NOT EXISTS (SELECT 1 FROM external_links l WHERE l.integration_id = $2 \
                         AND l.record_kind = 'ticket_note' AND l.local_id = n.id) ORDER BY n.id",
                        placeholders(3, chunk.len())
                    );
                    let mut query = sqlx::query_as::<_, (i64, i64, String, bool)>(sql(q)).bind(tenant.0).bind(id.0);
                    for t in chunk {
                        query = query.bind(t);
                    }
                    for (nid, ticket, body, internal) in query.fetch_all(&mut **tx).await? {
                        own.entry((ticket, body, internal)).or_default().push(nid);
                    }
                }
                let mut adopted: Vec<(i64, &crate::sync::NoteImport)> = Vec::new();
                let mut fresh: Vec<(i64, &crate::sync::NoteImport)> = Vec::new();
                let mut in_page: std::collections::HashSet<&str> = std::collections::HashSet::new();
                for (local, t) in tickets {
                    for n in &t.notes {
                        if linked.contains(&n.external_id) || !in_page.insert(n.external_id.as_str()) {
                            continue;
                        }
                        let key = (*local, n.body.clone(), n.internal);
                        match own.get_mut(&key).and_then(|v| if v.is_empty() { None } else { Some(v.remove(0)) }) {
                            Some(nid) => adopted.push((nid, n)),
                            None => fresh.push((*local, n)),
                        }
                    }
                }
                let ids = super::alloc_ids(tx, "ticket_notes", fresh.len()).await?;
                let fresh: Vec<(i64, i64, &crate::sync::NoteImport)> = fresh.into_iter().zip(ids).map(|((t, n), nid)| (nid, t, n)).collect();
                for chunk in fresh.chunks(100) {
                    let values = value_rows(chunk.len(), 6, 2, &|p| {
                        format!("({}, $1, {}, 'import')", p[0], p[1..].join(", "))
                    });
                    let q = format!(
                        "INSERT INTO ticket_notes (id, tenant_id, ticket_id, body, internal, author, created_at, origin) VALUES {values}"
                    );
                    let mut query = sqlx::query(sql(q)).bind(tenant.0);
                    for (nid, ticket, n) in chunk {
                        query = query
                            .bind(nid)
                            .bind(ticket)
                            .bind(&n.body)
                            .bind(n.internal)
                            .bind(&n.author)
                            .bind(n.created_at.unwrap_or(now));
                    }
                    query.execute(&mut **tx).await?;
                }
                let links: Vec<LinkWrite<'_>> = adopted
                    .iter()
                    .map(|(nid, n)| (*nid, *n))
                    .chain(fresh.iter().map(|(nid, _, n)| (*nid, *n)))
                    .map(|(nid, n)| LinkWrite { local: nid, ext: &n.external_id, remote: n.created_at, hash: "" })
                    .collect();
                super::upsert_links(tx, tenant.0, id.0, "ticket_note", None, now, &links).await?;
                Ok(())
            }

            /// Fails with `LeaseLost` unless `worker` still holds the integration's lease, and
            /// locks the lease row until the transaction ends so it cannot change under it.
            async fn fence(tx: &mut sqlx::Transaction<'_, Db>, id: IntegrationId, worker: &str) -> Result<()> {
                let held: Option<(i64,)> = sqlx::query_as($fence_sql)
                    .bind(id.0)
                    .bind(worker)
                    .fetch_optional(&mut **tx)
                    .await?;
                if held.is_some() { Ok(()) } else { Err(StoreError::LeaseLost) }
            }

            async fn upsert_cursor(tx: &mut sqlx::Transaction<'_, Db>, id: IntegrationId, record: RecordType, p: &PassState) -> Result<()> {
                sqlx::query(
                    "INSERT INTO sync_cursors (integration_id, record_type, pass_run_id, pass_full, pass_since, pass_after, pass_max_seen, pass_deferred) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (integration_id, record_type) DO UPDATE SET pass_run_id = excluded.pass_run_id, pass_full = excluded.pass_full, \
                       pass_since = excluded.pass_since, pass_after = excluded.pass_after, pass_max_seen = excluded.pass_max_seen, \
                       pass_deferred = excluded.pass_deferred",
                )
                .bind(id.0)
                .bind(record.as_str())
                .bind(p.run_id)
                .bind(p.full)
                .bind(p.since)
                .bind(&p.after)
                .bind(p.max_seen)
                .bind(i64::try_from(p.deferred).unwrap_or(i64::MAX))
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            async fn insert_event(tx: &mut sqlx::Transaction<'_, Db>, tenant: TenantId, run_id: i64, e: &NewEvent, now: DateTime<Utc>) -> Result<()> {
                sqlx::query(
                    "INSERT INTO sync_events (tenant_id, run_id, at, level, record_type, external_id, message) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(tenant.0)
                .bind(run_id)
                .bind(now)
                .bind(e.level.as_str())
                .bind(e.record_type.map(|r| r.as_str()))
                .bind(&e.external_id)
                .bind(&e.message)
                .execute(&mut **tx)
                .await?;
                Ok(())
            }
        }
    };
}
