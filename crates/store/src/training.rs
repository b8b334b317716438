//! Training (spec 2.19, Bigger Brains): Premium Training per company with its BrainStation
//! Team, the course catalogue and learners' progress as last imported from files, and the
//! add-on's usage per month with what was written to Stripe. SQL shared by both backends;
//! imports compare content hashes, so the same file imported again writes nothing.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mspbridge_domain::{CompanyId, TenantId};
use serde::Serialize;

use crate::Result;
use crate::rmm::Paged;

/// A company's training settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TrainingCompany {
    pub company_id: i64,
    pub company_name: String,
    pub premium: bool,
    pub team_name: Option<String>,
    /// The company's own BrainStation address (a branded site), if set.
    pub link_url: Option<String>,
}

/// A course as the catalogue page lists it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CourseRow {
    pub course_key: String,
    pub course_id: Option<String>,
    pub title: String,
    pub category: String,
    pub duration_minutes: i64,
    pub level: String,
    pub url: String,
}

/// A course to save (from an import).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CourseWrite {
    pub course_key: String,
    pub course_id: Option<String>,
    pub title: String,
    pub category: String,
    pub duration_minutes: i64,
    pub level: String,
    pub url: String,
}

/// One learner's state of one course, to save.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgressWrite {
    pub email: String,
    pub user_id: Option<i64>,
    pub course_key: String,
    pub course_title: String,
    pub status: String,
    pub score: Option<f64>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// A learner's course as the company's training page shows it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProgressRow {
    pub email: String,
    pub user_id: Option<i64>,
    pub user_name: Option<String>,
    pub course_key: String,
    pub course_title: String,
    pub status: String,
    pub score: Option<f64>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// A premium company's active users in a month, and what Stripe was told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageRecord {
    pub company_id: i64,
    pub company_name: String,
    /// `YYYY-MM`.
    pub month: String,
    pub active_users: i64,
    pub written_quantity: Option<i64>,
    pub written_item: Option<String>,
    pub written_at: Option<DateTime<Utc>>,
}

pub type Written = u64;

#[async_trait]
pub trait TrainingStore: Send + Sync {
    /// Every active company with its training settings (Standard where none is kept).
    async fn training_companies(&self, tenant: TenantId) -> Result<Vec<TrainingCompany>>;
    /// Premium Training on or off for these companies (of this tenant); how many changed.
    async fn set_premium(
        &self,
        tenant: TenantId,
        companies: &[CompanyId],
        premium: bool,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<u64>;
    async fn set_team(
        &self,
        tenant: TenantId,
        company: CompanyId,
        team: Option<&str>,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<()>;
    async fn set_link(
        &self,
        tenant: TenantId,
        company: CompanyId,
        url: Option<&str>,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// The company whose Team name is `team` (case-insensitive), if exactly one.
    async fn company_by_team(&self, tenant: TenantId, team: &str) -> Result<Option<CompanyId>>;
    async fn save_courses(
        &self,
        tenant: TenantId,
        courses: &[CourseWrite],
        now: DateTime<Utc>,
    ) -> Result<Written>;
    async fn courses(
        &self,
        tenant: TenantId,
        search: &str,
        category: Option<&str>,
        offset: i64,
        limit: i64,
    ) -> Result<Paged<CourseRow>>;
    /// Categories with their number of courses, by name.
    async fn course_categories(&self, tenant: TenantId) -> Result<Vec<(String, i64)>>;
    /// Every course (to match a progress file's course names and ids).
    async fn all_courses(&self, tenant: TenantId) -> Result<Vec<CourseRow>>;
    async fn save_progress(
        &self,
        tenant: TenantId,
        company: CompanyId,
        rows: &[ProgressWrite],
        now: DateTime<Utc>,
    ) -> Result<Written>;
    async fn company_progress(
        &self,
        tenant: TenantId,
        company: CompanyId,
    ) -> Result<Vec<ProgressRow>>;
    /// Counts `month`'s (the current month's) active users of every premium company again
    /// (past months keep their count), then every month kept, newest first.
    async fn usage(
        &self,
        tenant: TenantId,
        month: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<UsageRecord>>;
    async fn mark_usage_written(
        &self,
        tenant: TenantId,
        company: CompanyId,
        month: &str,
        quantity: i64,
        item: &str,
        now: DateTime<Utc>,
    ) -> Result<()>;
}

macro_rules! impl_training_store {
    ($store:ident) => {
        pub(super) mod training_impl {
            use async_trait::async_trait;
            use chrono::{DateTime, Utc};
            use mspbridge_domain::sync::content_hash;
            use mspbridge_domain::{CompanyId, TenantId};

            use crate::rmm::Paged;
            use crate::mapping::like;
            use crate::sync_shared::{sql, value_rows};
            use crate::training::*;
            use crate::{Result, StoreError};

            const COURSE: &str = "SELECT course_key, course_id, title, category, duration_minutes, level, url FROM training_courses";

            #[async_trait]
            impl TrainingStore for super::$store {
                async fn training_companies(&self, tenant: TenantId) -> Result<Vec<TrainingCompany>> {
                    Ok(sqlx::query_as(
                        "SELECT c.id AS company_id, c.name AS company_name, COALESCE(t.premium, FALSE) AS premium, t.team_name, t.link_url \
                         FROM companies c LEFT JOIN training_companies t ON t.company_id = c.id AND t.tenant_id = c.tenant_id \
                         WHERE c.tenant_id = $1 AND c.active = TRUE ORDER BY lower(c.name), c.id",
                    )
                    .bind(tenant.0)
                    .fetch_all(&self.pool)
                    .await?)
                }

                async fn set_premium(&self, tenant: TenantId, companies: &[CompanyId], premium: bool, actor: &str, now: DateTime<Utc>) -> Result<u64> {
                    let mut tx = self.begin_write().await?;
                    let mut changed = 0;
                    for c in companies {
                        let (owned,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM companies WHERE tenant_id = $1 AND id = $2")
                            .bind(tenant.0)
                            .bind(c.0)
                            .fetch_one(&mut *tx)
                            .await?;
                        if owned == 0 {
                            return Err(StoreError::NotFound);
                        }
                        changed += sqlx::query(
                            "INSERT INTO training_companies (tenant_id, company_id, premium, updated_by, updated_at) VALUES ($1, $2, $3, $4, $5) \
                             ON CONFLICT (company_id) DO UPDATE SET premium = excluded.premium, updated_by = excluded.updated_by, updated_at = excluded.updated_at \
                             WHERE training_companies.premium <> excluded.premium",
                        )
                        .bind(tenant.0)
                        .bind(c.0)
                        .bind(premium)
                        .bind(actor)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    }
                    tx.commit().await?;
                    Ok(changed)
                }

                async fn set_team(&self, tenant: TenantId, company: CompanyId, team: Option<&str>, actor: &str, now: DateTime<Utc>) -> Result<()> {
                    let mut tx = self.begin_write().await?;
                    let (owned,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM companies WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant.0)
                        .bind(company.0)
                        .fetch_one(&mut *tx)
                        .await?;
                    if owned == 0 {
                        return Err(StoreError::NotFound);
                    }
                    sqlx::query(
                        "INSERT INTO training_companies (tenant_id, company_id, team_name, updated_by, updated_at) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (company_id) DO UPDATE SET team_name = excluded.team_name, updated_by = excluded.updated_by, updated_at = excluded.updated_at",
                    )
                    .bind(tenant.0)
                    .bind(company.0)
                    .bind(team)
                    .bind(actor)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn set_link(&self, tenant: TenantId, company: CompanyId, url: Option<&str>, actor: &str, now: DateTime<Utc>) -> Result<()> {
                    let mut tx = self.begin_write().await?;
                    let (owned,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM companies WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant.0)
                        .bind(company.0)
                        .fetch_one(&mut *tx)
                        .await?;
                    if owned == 0 {
                        return Err(StoreError::NotFound);
                    }
                    sqlx::query(
                        "INSERT INTO training_companies (tenant_id, company_id, link_url, updated_by, updated_at) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (company_id) DO UPDATE SET link_url = excluded.link_url, updated_by = excluded.updated_by, updated_at = excluded.updated_at",
                    )
                    .bind(tenant.0)
                    .bind(company.0)
                    .bind(url)
                    .bind(actor)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn company_by_team(&self, tenant: TenantId, team: &str) -> Result<Option<CompanyId>> {
                    let rows: Vec<(i64,)> = sqlx::query_as(
                        "SELECT t.company_id FROM training_companies t JOIN companies c ON c.id = t.company_id \
                         WHERE t.tenant_id = $1 AND lower(t.team_name) = lower($2) AND c.active = TRUE LIMIT 2",
                    )
                    .bind(tenant.0)
                    .bind(team.trim())
                    .fetch_all(&self.pool)
                    .await?;
                    Ok(match rows.as_slice() {
                        [(id,)] => Some(CompanyId(*id)),
                        _ => None,
                    })
                }

                async fn save_courses(&self, tenant: TenantId, courses: &[CourseWrite], now: DateTime<Utc>) -> Result<Written> {
                    let mut tx = self.begin_write().await?;
                    let mut written = 0;
                    for chunk in courses.chunks(100) {
                        let q = format!(
                            "INSERT INTO training_courses (tenant_id, updated_at, course_key, course_id, title, category, duration_minutes, level, url, content_hash) VALUES {} \
                             ON CONFLICT (tenant_id, course_key) DO UPDATE SET course_id = excluded.course_id, title = excluded.title, category = excluded.category, \
                               duration_minutes = excluded.duration_minutes, level = excluded.level, url = excluded.url, content_hash = excluded.content_hash, updated_at = excluded.updated_at \
                             WHERE training_courses.content_hash <> excluded.content_hash",
                            value_rows(chunk.len(), 8, 3, &|p| format!("($1, $2, {})", p.join(", ")))
                        );
                        let mut query = sqlx::query(sql(q)).bind(tenant.0).bind(now);
                        for c in chunk {
                            query = query
                                .bind(&c.course_key)
                                .bind(&c.course_id)
                                .bind(&c.title)
                                .bind(&c.category)
                                .bind(c.duration_minutes)
                                .bind(&c.level)
                                .bind(&c.url)
                                .bind(content_hash(c));
                        }
                        written += query.execute(&mut *tx).await?.rows_affected();
                    }
                    tx.commit().await?;
                    Ok(written)
                }

                async fn courses(&self, tenant: TenantId, search: &str, category: Option<&str>, offset: i64, limit: i64) -> Result<Paged<CourseRow>> {
                    let cond = "tenant_id = $1 AND ($2 = '' OR lower(title) LIKE $2 ESCAPE '\\' OR lower(category) LIKE $2 ESCAPE '\\') AND ($3 = '' OR category = $3)";
                    let (total,): (i64,) = sqlx::query_as(sql(format!("SELECT COUNT(*) FROM training_courses WHERE {cond}")))
                        .bind(tenant.0)
                        .bind(like(search))
                        .bind(category.unwrap_or_default())
                        .fetch_one(&self.pool)
                        .await?;
                    let rows = sqlx::query_as(sql(format!("{COURSE} WHERE {cond} ORDER BY category, lower(title) LIMIT $4 OFFSET $5")))
                        .bind(tenant.0)
                        .bind(like(search))
                        .bind(category.unwrap_or_default())
                        .bind(limit.clamp(1, 500))
                        .bind(offset.max(0))
                        .fetch_all(&self.pool)
                        .await?;
                    Ok(Paged { total, rows })
                }

                async fn course_categories(&self, tenant: TenantId) -> Result<Vec<(String, i64)>> {
                    Ok(sqlx::query_as("SELECT category, COUNT(*) FROM training_courses WHERE tenant_id = $1 GROUP BY category ORDER BY category")
                        .bind(tenant.0)
                        .fetch_all(&self.pool)
                        .await?)
                }

                async fn all_courses(&self, tenant: TenantId) -> Result<Vec<CourseRow>> {
                    Ok(sqlx::query_as(sql(format!("{COURSE} WHERE tenant_id = $1")))
                        .bind(tenant.0)
                        .fetch_all(&self.pool)
                        .await?)
                }

                async fn save_progress(&self, tenant: TenantId, company: CompanyId, rows: &[ProgressWrite], now: DateTime<Utc>) -> Result<Written> {
                    let mut tx = self.begin_write().await?;
                    let mut written = 0;
                    for chunk in rows.chunks(100) {
                        let q = format!(
                            "INSERT INTO training_progress (tenant_id, company_id, updated_at, email, user_id, course_key, course_title, status, score, completed_at, content_hash) VALUES {} \
                             ON CONFLICT (company_id, email, course_key) DO UPDATE SET user_id = excluded.user_id, course_title = excluded.course_title, status = excluded.status, \
                               score = excluded.score, completed_at = excluded.completed_at, content_hash = excluded.content_hash, updated_at = excluded.updated_at \
                             WHERE training_progress.content_hash <> excluded.content_hash",
                            value_rows(chunk.len(), 8, 4, &|p| format!("($1, $2, $3, {})", p.join(", ")))
                        );
                        let mut query = sqlx::query(sql(q)).bind(tenant.0).bind(company.0).bind(now);
                        for r in chunk {
                            query = query
                                .bind(&r.email)
                                .bind(r.user_id)
                                .bind(&r.course_key)
                                .bind(&r.course_title)
                                .bind(&r.status)
                                .bind(r.score)
                                .bind(r.completed_at)
                                .bind(content_hash(r));
                        }
                        written += query.execute(&mut *tx).await?.rows_affected();
                    }
                    tx.commit().await?;
                    Ok(written)
                }

                async fn company_progress(&self, tenant: TenantId, company: CompanyId) -> Result<Vec<ProgressRow>> {
                    Ok(sqlx::query_as(
                        "SELECT p.email, p.user_id, CASE WHEN u.id IS NULL THEN NULL ELSE TRIM(u.first_name || ' ' || u.last_name) END AS user_name, \
                           p.course_key, p.course_title, p.status, p.score, p.completed_at \
                         FROM training_progress p LEFT JOIN company_users u ON u.id = p.user_id AND u.tenant_id = p.tenant_id \
                         WHERE p.tenant_id = $1 AND p.company_id = $2 ORDER BY p.email, lower(p.course_title)",
                    )
                    .bind(tenant.0)
                    .bind(company.0)
                    .fetch_all(&self.pool)
                    .await?)
                }

                async fn usage(&self, tenant: TenantId, month: &str, now: DateTime<Utc>) -> Result<Vec<UsageRecord>> {
                    let mut tx = self.begin_write().await?;
                    // The current month's count for every premium company; past months stay.
                    let counts: Vec<(i64, i64)> = sqlx::query_as(
                        "SELECT t.company_id, (SELECT COUNT(*) FROM company_users u WHERE u.tenant_id = t.tenant_id AND u.company_id = t.company_id AND u.status <> 'disabled') \
                         FROM training_companies t JOIN companies c ON c.id = t.company_id WHERE t.tenant_id = $1 AND t.premium = TRUE AND c.active = TRUE",
                    )
                    .bind(tenant.0)
                    .fetch_all(&mut *tx)
                    .await?;
                    for (company, n) in counts {
                        sqlx::query(
                            "INSERT INTO training_usage (tenant_id, company_id, month, active_users, updated_at) VALUES ($1, $2, $3, $4, $5) \
                             ON CONFLICT (company_id, month) DO UPDATE SET active_users = excluded.active_users, updated_at = excluded.updated_at \
                             WHERE training_usage.active_users <> excluded.active_users",
                        )
                        .bind(tenant.0)
                        .bind(company)
                        .bind(month)
                        .bind(n)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok(sqlx::query_as(
                        "SELECT x.company_id, c.name AS company_name, x.month, x.active_users, x.written_quantity, x.written_item, x.written_at \
                         FROM training_usage x JOIN companies c ON c.id = x.company_id WHERE x.tenant_id = $1 ORDER BY x.month DESC, lower(c.name)",
                    )
                    .bind(tenant.0)
                    .fetch_all(&self.pool)
                    .await?)
                }

                async fn mark_usage_written(&self, tenant: TenantId, company: CompanyId, month: &str, quantity: i64, item: &str, now: DateTime<Utc>) -> Result<()> {
                    sqlx::query(
                        "UPDATE training_usage SET written_quantity = $4, written_item = $5, written_at = $6, updated_at = $6 \
                         WHERE tenant_id = $1 AND company_id = $2 AND month = $3",
                    )
                    .bind(tenant.0)
                    .bind(company.0)
                    .bind(month)
                    .bind(quantity)
                    .bind(item)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }
            }
        }
    };
}
pub(crate) use impl_training_store;
