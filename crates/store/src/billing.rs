//! Billing (spec 2.19, Stripe): customers (also the integration's companies in the mapping
//! grid), invoices, subscriptions and payments as the billing account last gave them, the
//! account's sync state, and client users' sign-in for their own company's billing. SQL
//! shared by both backends; every synced write compares a content hash, so an unchanged
//! re-sync writes nothing. A record's company is the one its customer is linked to now.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mspbridge_domain::billing::{
    BillingCustomer, BillingInvoice, BillingPayment, BillingSubscription, SubscriptionItem,
};
use mspbridge_domain::{CompanyId, IntegrationId, TenantId};
use serde::Serialize;

use crate::Result;
use crate::rmm::Paged;

/// One integration's sync state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct BillingAccount {
    /// Unix seconds: incremental reads ask for objects created since (less an overlap).
    pub watermark: Option<i64>,
    pub last_full_at: Option<DateTime<Utc>>,
    pub webhook_endpoint_id: Option<String>,
    pub webhook_url: Option<String>,
    /// What registering the webhook endpoint gave, in words.
    pub webhook_status: Option<String>,
}

/// What a company sees of one invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvoiceRow {
    pub id: i64,
    pub integration_id: i64,
    pub external_id: String,
    pub customer_external_id: String,
    pub company_id: Option<i64>,
    pub company_name: Option<String>,
    pub number: Option<String>,
    pub status: String,
    pub currency: String,
    pub total: i64,
    pub amount_due: i64,
    pub amount_paid: i64,
    pub amount_remaining: i64,
    pub created_remote: Option<DateTime<Utc>>,
    pub due_date: Option<DateTime<Utc>>,
    pub paid_at: Option<DateTime<Utc>>,
    pub hosted_invoice_url: Option<String>,
    pub invoice_pdf: Option<String>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PaymentRow {
    pub id: i64,
    pub external_id: String,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub failure: Option<String>,
    pub description: Option<String>,
    pub receipt_url: Option<String>,
    pub created_remote: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubscriptionRow {
    pub external_id: String,
    pub status: String,
    pub currency: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub items: Vec<SubscriptionItem>,
    pub trial_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub canceled_at: Option<DateTime<Utc>>,
    pub period_start: Option<DateTime<Utc>>,
    pub period_end: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CustomerRow {
    pub integration_id: i64,
    pub external_id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub currency: Option<String>,
    pub balance: i64,
    pub delinquent: bool,
}

/// A company in the MSP's past-due overview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PastDueRow {
    pub company_id: i64,
    pub company_name: String,
    pub currency: String,
    /// Left to pay on open invoices whose due date passed.
    pub past_due: i64,
    /// Left to pay on every open invoice.
    pub open: i64,
    pub past_due_invoices: i64,
    pub oldest_due: Option<DateTime<Utc>>,
}

/// Which invoices a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvoiceFilter {
    All,
    /// Open with something left to pay.
    Open,
    PastDue,
    Paid,
}

/// A client user allowed to sign in (their password hash set by an admin).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClientLogin {
    pub tenant_id: i64,
    pub user_id: i64,
    pub company_id: i64,
    pub password_hash: String,
}

/// A signed-in client user.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClientSession {
    pub tenant_id: i64,
    pub user_id: i64,
    pub company_id: i64,
    pub company_name: String,
    pub email: String,
    pub name: String,
    pub csrf_token: String,
}

/// Records a save wrote (created or changed); unchanged records are not counted.
pub type Written = u64;

#[async_trait]
pub trait BillingStore: Send + Sync {
    async fn billing_account(
        &self,
        tenant: TenantId,
        integration: IntegrationId,
    ) -> Result<BillingAccount>;
    /// After a read: the new watermark, and the time of a complete full read.
    async fn billing_mark_read(
        &self,
        tenant: TenantId,
        integration: IntegrationId,
        watermark: i64,
        full_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<()>;
    async fn billing_set_webhook(
        &self,
        tenant: TenantId,
        integration: IntegrationId,
        endpoint_id: Option<&str>,
        url: Option<&str>,
        status: &str,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// Customers, and the integration's companies for the mapping grid (name, e-mail
    /// domain, active).
    async fn billing_save_customers(
        &self,
        tenant: TenantId,
        integration: IntegrationId,
        customers: &[BillingCustomer],
        now: DateTime<Utc>,
    ) -> Result<Written>;
    async fn billing_save_invoices(
        &self,
        tenant: TenantId,
        integration: IntegrationId,
        invoices: &[BillingInvoice],
        now: DateTime<Utc>,
    ) -> Result<Written>;
    async fn billing_save_subscriptions(
        &self,
        tenant: TenantId,
        integration: IntegrationId,
        subscriptions: &[BillingSubscription],
        now: DateTime<Utc>,
    ) -> Result<Written>;
    async fn billing_save_payments(
        &self,
        tenant: TenantId,
        integration: IntegrationId,
        payments: &[BillingPayment],
        now: DateTime<Utc>,
    ) -> Result<Written>;
    /// After a complete full read of `table` (`customers`, `invoices`, `subscriptions`,
    /// `payments`): rows not in `seen` are marked removed (a customer's company goes
    /// inactive in the grid). Returns how many.
    async fn billing_remove_unseen(
        &self,
        tenant: TenantId,
        integration: IntegrationId,
        table: &str,
        seen: &[String],
        now: DateTime<Utc>,
    ) -> Result<u64>;
    /// One record deleted upstream (a `customer.deleted` event).
    async fn billing_remove(
        &self,
        tenant: TenantId,
        integration: IntegrationId,
        table: &str,
        external_id: &str,
        now: DateTime<Utc>,
    ) -> Result<u64>;
    /// The customer linked to `company`, if any.
    async fn billing_customer_of(
        &self,
        tenant: TenantId,
        integration: IntegrationId,
        company: CompanyId,
    ) -> Result<Option<CustomerRow>>;
    async fn billing_customer(
        &self,
        tenant: TenantId,
        integration: IntegrationId,
        external_id: &str,
    ) -> Result<Option<CustomerRow>>;
    /// Invoices of the tenant (`company` for one company), newest first.
    async fn billing_invoices(
        &self,
        tenant: TenantId,
        company: Option<CompanyId>,
        filter: InvoiceFilter,
        now: DateTime<Utc>,
        offset: i64,
        limit: i64,
    ) -> Result<Paged<InvoiceRow>>;
    /// External ids of the invoices kept as open (to re-read those Stripe no longer lists
    /// as open), at most `limit`.
    async fn billing_open_invoice_ids(
        &self,
        tenant: TenantId,
        integration: IntegrationId,
        limit: i64,
    ) -> Result<Vec<String>>;
    /// One invoice, with its company (through its customer's link).
    async fn billing_invoice(&self, tenant: TenantId, id: i64) -> Result<Option<InvoiceRow>>;
    async fn billing_payments(
        &self,
        tenant: TenantId,
        company: CompanyId,
        limit: i64,
    ) -> Result<Vec<PaymentRow>>;
    async fn billing_subscriptions(
        &self,
        tenant: TenantId,
        company: CompanyId,
    ) -> Result<Vec<SubscriptionRow>>;
    /// Companies with open invoices, most past due first.
    async fn billing_past_due(
        &self,
        tenant: TenantId,
        now: DateTime<Utc>,
    ) -> Result<Vec<PastDueRow>>;

    // Client users' sign-in.
    async fn set_client_password(
        &self,
        tenant: TenantId,
        user: i64,
        hash: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// Active client users with this e-mail and a password, in any tenant.
    async fn client_logins(&self, email: &str) -> Result<Vec<ClientLogin>>;
    async fn create_client_session(
        &self,
        id_hash: &str,
        tenant: i64,
        user: i64,
        csrf: &str,
        now: DateTime<Utc>,
        expires: DateTime<Utc>,
    ) -> Result<()>;
    /// The session, while it and its user are valid (the user active, with a password).
    async fn client_session(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ClientSession>>;
    async fn delete_client_session(&self, id_hash: &str) -> Result<()>;
}

/// The tables `billing_remove*` accept.
pub fn billing_table(kind: &str) -> Option<&'static str> {
    match kind {
        "customers" => Some("billing_customers"),
        "invoices" => Some("billing_invoices"),
        "subscriptions" => Some("billing_subscriptions"),
        "payments" => Some("billing_payments"),
        _ => None,
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct SubscriptionDbRow {
    pub external_id: String,
    pub status: String,
    pub currency: String,
    pub items: String,
    pub trial_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub canceled_at: Option<DateTime<Utc>>,
    pub period_start: Option<DateTime<Utc>>,
    pub period_end: Option<DateTime<Utc>>,
}

impl From<SubscriptionDbRow> for SubscriptionRow {
    fn from(r: SubscriptionDbRow) -> Self {
        SubscriptionRow {
            external_id: r.external_id,
            status: r.status,
            currency: r.currency,
            items: serde_json::from_str(&r.items).unwrap_or_default(),
            trial_end: r.trial_end,
            cancel_at_period_end: r.cancel_at_period_end,
            canceled_at: r.canceled_at,
            period_start: r.period_start,
            period_end: r.period_end,
        }
    }
}

macro_rules! impl_billing_store {
    ($store:ident) => {
        pub(super) mod billing_impl {
            use async_trait::async_trait;
            use chrono::{DateTime, Utc};
            use mspbridge_domain::billing::{BillingCustomer, BillingInvoice, BillingPayment, BillingSubscription};
            use mspbridge_domain::sync::content_hash;
            use mspbridge_domain::{CompanyId, IntegrationId, TenantId};

            use crate::billing::*;
            use crate::rmm::Paged;
            use crate::sync::CatalogCompany;
            use crate::sync_shared::{last_of, sql, value_rows};
            use crate::{Result, StoreError};

            /// The customer → company link every company-scoped read goes through.
            const LINKED: &str = "LEFT JOIN external_links l ON l.integration_id = x.integration_id AND l.record_kind = 'company' AND l.external_id = x.customer_external_id \
                                  LEFT JOIN companies c ON c.tenant_id = x.tenant_id AND c.id = l.local_id";

            const INVOICE: &str = "SELECT x.id, x.integration_id, x.external_id, x.customer_external_id, l.local_id AS company_id, c.name AS company_name, x.number, x.status, x.currency, \
                x.total, x.amount_due, x.amount_paid, x.amount_remaining, x.created_remote, x.due_date, x.paid_at, x.hosted_invoice_url, x.invoice_pdf, x.description FROM billing_invoices x";

            fn filter_sql(f: InvoiceFilter) -> &'static str {
                match f {
                    InvoiceFilter::All => "x.status <> 'draft'",
                    InvoiceFilter::Open | InvoiceFilter::PastDue => "x.status = 'open' AND x.amount_remaining > 0",
                    InvoiceFilter::Paid => "x.status = 'paid'",
                }
            }

            #[async_trait]
            impl BillingStore for super::$store {
                async fn billing_account(&self, tenant: TenantId, integration: IntegrationId) -> Result<BillingAccount> {
                    let row: Option<BillingAccount> = sqlx::query_as(
                        "SELECT watermark, last_full_at, webhook_endpoint_id, webhook_url, webhook_status FROM billing_accounts WHERE tenant_id = $1 AND integration_id = $2",
                    )
                    .bind(tenant.0)
                    .bind(integration.0)
                    .fetch_optional(&self.pool)
                    .await?;
                    Ok(row.unwrap_or_default())
                }

                async fn billing_mark_read(&self, tenant: TenantId, integration: IntegrationId, watermark: i64, full_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Result<()> {
                    sqlx::query(
                        "INSERT INTO billing_accounts (integration_id, tenant_id, watermark, last_full_at, updated_at) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (integration_id) DO UPDATE SET watermark = excluded.watermark, \
                           last_full_at = COALESCE(excluded.last_full_at, billing_accounts.last_full_at), updated_at = excluded.updated_at",
                    )
                    .bind(integration.0)
                    .bind(tenant.0)
                    .bind(watermark)
                    .bind(full_at)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                async fn billing_set_webhook(&self, tenant: TenantId, integration: IntegrationId, endpoint_id: Option<&str>, url: Option<&str>, status: &str, now: DateTime<Utc>) -> Result<()> {
                    sqlx::query(
                        "INSERT INTO billing_accounts (integration_id, tenant_id, webhook_endpoint_id, webhook_url, webhook_status, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (integration_id) DO UPDATE SET webhook_endpoint_id = COALESCE(excluded.webhook_endpoint_id, billing_accounts.webhook_endpoint_id), \
                           webhook_url = COALESCE(excluded.webhook_url, billing_accounts.webhook_url), webhook_status = excluded.webhook_status, updated_at = excluded.updated_at",
                    )
                    .bind(integration.0)
                    .bind(tenant.0)
                    .bind(endpoint_id)
                    .bind(url)
                    .bind(status)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                async fn billing_save_customers(&self, tenant: TenantId, integration: IntegrationId, customers: &[BillingCustomer], now: DateTime<Utc>) -> Result<Written> {
                    let customers = last_of(customers.iter().collect(), |c: &BillingCustomer| c.external_id.as_str());
                    let mut tx = self.begin_write().await?;
                    let mut written = 0;
                    for chunk in customers.chunks(100) {
                        let q = format!(
                            "INSERT INTO billing_customers (tenant_id, integration_id, updated_at, external_id, name, email, currency, balance, delinquent, company_hint, created_remote, content_hash) \
                             VALUES {} ON CONFLICT (integration_id, external_id) DO UPDATE SET name = excluded.name, email = excluded.email, currency = excluded.currency, \
                               balance = excluded.balance, delinquent = excluded.delinquent, company_hint = excluded.company_hint, created_remote = excluded.created_remote, \
                               content_hash = excluded.content_hash, removed_at = NULL, updated_at = excluded.updated_at \
                             WHERE billing_customers.content_hash <> excluded.content_hash OR billing_customers.removed_at IS NOT NULL",
                            value_rows(chunk.len(), 9, 4, &|p| format!("($1, $2, $3, {})", p.join(", ")))
                        );
                        let mut query = sqlx::query(sql(q)).bind(tenant.0).bind(integration.0).bind(now);
                        for c in chunk {
                            query = query
                                .bind(&c.external_id)
                                .bind(&c.name)
                                .bind(&c.email)
                                .bind(&c.currency)
                                .bind(c.balance)
                                .bind(c.delinquent)
                                .bind(c.company_hint)
                                .bind(c.created)
                                .bind(content_hash(*c));
                        }
                        written += query.execute(&mut *tx).await?.rows_affected();
                    }
                    let companies: Vec<CatalogCompany> = customers
                        .iter()
                        .map(|c| CatalogCompany {
                            external_id: c.external_id.clone(),
                            name: c.display_name(),
                            active: true,
                            domains: c.email_domain().into_iter().collect(),
                        })
                        .collect();
                    super::upsert_integration_companies(&mut tx, tenant.0, integration.0, now, &companies).await?;
                    tx.commit().await?;
                    Ok(written)
                }

                async fn billing_save_invoices(&self, tenant: TenantId, integration: IntegrationId, invoices: &[BillingInvoice], now: DateTime<Utc>) -> Result<Written> {
                    let invoices = last_of(invoices.iter().collect(), |i: &BillingInvoice| i.external_id.as_str());
                    let mut tx = self.begin_write().await?;
                    let mut written = 0;
                    for chunk in invoices.chunks(100) {
                        let q = format!(
                            "INSERT INTO billing_invoices (tenant_id, integration_id, updated_at, external_id, customer_external_id, number, status, currency, total, amount_due, amount_paid, \
                               amount_remaining, created_remote, due_date, paid_at, hosted_invoice_url, invoice_pdf, subscription_external_id, description, content_hash) \
                             VALUES {} ON CONFLICT (integration_id, external_id) DO UPDATE SET customer_external_id = excluded.customer_external_id, number = excluded.number, \
                               status = excluded.status, currency = excluded.currency, total = excluded.total, amount_due = excluded.amount_due, amount_paid = excluded.amount_paid, \
                               amount_remaining = excluded.amount_remaining, created_remote = excluded.created_remote, due_date = excluded.due_date, paid_at = excluded.paid_at, \
                               hosted_invoice_url = excluded.hosted_invoice_url, invoice_pdf = excluded.invoice_pdf, subscription_external_id = excluded.subscription_external_id, \
                               description = excluded.description, content_hash = excluded.content_hash, removed_at = NULL, updated_at = excluded.updated_at \
                             WHERE billing_invoices.content_hash <> excluded.content_hash OR billing_invoices.removed_at IS NOT NULL",
                            value_rows(chunk.len(), 17, 4, &|p| format!("($1, $2, $3, {})", p.join(", ")))
                        );
                        let mut query = sqlx::query(sql(q)).bind(tenant.0).bind(integration.0).bind(now);
                        for i in chunk {
                            query = query
                                .bind(&i.external_id)
                                .bind(&i.customer)
                                .bind(&i.number)
                                .bind(&i.status)
                                .bind(&i.currency)
                                .bind(i.total)
                                .bind(i.amount_due)
                                .bind(i.amount_paid)
                                .bind(i.amount_remaining)
                                .bind(i.created)
                                .bind(i.due_date)
                                .bind(i.paid_at)
                                .bind(&i.hosted_invoice_url)
                                .bind(&i.invoice_pdf)
                                .bind(&i.subscription)
                                .bind(&i.description)
                                .bind(content_hash(*i));
                        }
                        written += query.execute(&mut *tx).await?.rows_affected();
                    }
                    tx.commit().await?;
                    Ok(written)
                }

                async fn billing_save_subscriptions(&self, tenant: TenantId, integration: IntegrationId, subscriptions: &[BillingSubscription], now: DateTime<Utc>) -> Result<Written> {
                    let subscriptions = last_of(subscriptions.iter().collect(), |s: &BillingSubscription| s.external_id.as_str());
                    let mut tx = self.begin_write().await?;
                    let mut written = 0;
                    for chunk in subscriptions.chunks(100) {
                        let q = format!(
                            "INSERT INTO billing_subscriptions (tenant_id, integration_id, updated_at, external_id, customer_external_id, status, currency, items, trial_end, \
                               cancel_at_period_end, canceled_at, period_start, period_end, created_remote, content_hash) \
                             VALUES {} ON CONFLICT (integration_id, external_id) DO UPDATE SET customer_external_id = excluded.customer_external_id, status = excluded.status, \
                               currency = excluded.currency, items = excluded.items, trial_end = excluded.trial_end, cancel_at_period_end = excluded.cancel_at_period_end, \
                               canceled_at = excluded.canceled_at, period_start = excluded.period_start, period_end = excluded.period_end, created_remote = excluded.created_remote, \
                               content_hash = excluded.content_hash, removed_at = NULL, updated_at = excluded.updated_at \
                             WHERE billing_subscriptions.content_hash <> excluded.content_hash OR billing_subscriptions.removed_at IS NOT NULL",
                            value_rows(chunk.len(), 12, 4, &|p| format!("($1, $2, $3, {})", p.join(", ")))
                        );
                        let mut query = sqlx::query(sql(q)).bind(tenant.0).bind(integration.0).bind(now);
                        for s in chunk {
                            query = query
                                .bind(&s.external_id)
                                .bind(&s.customer)
                                .bind(&s.status)
                                .bind(&s.currency)
                                .bind(serde_json::to_string(&s.items).unwrap_or_else(|_| "[]".into()))
                                .bind(s.trial_end)
                                .bind(s.cancel_at_period_end)
                                .bind(s.canceled_at)
                                .bind(s.period_start())
                                .bind(s.period_end())
                                .bind(s.created)
                                .bind(content_hash(*s));
                        }
                        written += query.execute(&mut *tx).await?.rows_affected();
                    }
                    tx.commit().await?;
                    Ok(written)
                }

                async fn billing_save_payments(&self, tenant: TenantId, integration: IntegrationId, payments: &[BillingPayment], now: DateTime<Utc>) -> Result<Written> {
                    let payments = last_of(payments.iter().collect(), |p: &BillingPayment| p.external_id.as_str());
                    let mut tx = self.begin_write().await?;
                    let mut written = 0;
                    for chunk in payments.chunks(100) {
                        let q = format!(
                            "INSERT INTO billing_payments (tenant_id, integration_id, updated_at, external_id, customer_external_id, amount, currency, status, failure, description, \
                               receipt_url, created_remote, content_hash) \
                             VALUES {} ON CONFLICT (integration_id, external_id) DO UPDATE SET customer_external_id = excluded.customer_external_id, amount = excluded.amount, \
                               currency = excluded.currency, status = excluded.status, failure = excluded.failure, description = excluded.description, receipt_url = excluded.receipt_url, \
                               created_remote = excluded.created_remote, content_hash = excluded.content_hash, removed_at = NULL, updated_at = excluded.updated_at \
                             WHERE billing_payments.content_hash <> excluded.content_hash OR billing_payments.removed_at IS NOT NULL",
                            value_rows(chunk.len(), 10, 4, &|p| format!("($1, $2, $3, {})", p.join(", ")))
                        );
                        let mut query = sqlx::query(sql(q)).bind(tenant.0).bind(integration.0).bind(now);
                        for p in chunk {
                            query = query
                                .bind(&p.external_id)
                                .bind(&p.customer)
                                .bind(p.amount)
                                .bind(&p.currency)
                                .bind(&p.status)
                                .bind(&p.failure)
                                .bind(&p.description)
                                .bind(&p.receipt_url)
                                .bind(p.created)
                                .bind(content_hash(*p));
                        }
                        written += query.execute(&mut *tx).await?.rows_affected();
                    }
                    tx.commit().await?;
                    Ok(written)
                }

                async fn billing_remove_unseen(&self, tenant: TenantId, integration: IntegrationId, table: &str, seen: &[String], now: DateTime<Utc>) -> Result<u64> {
                    let table = billing_table(table).ok_or_else(|| StoreError::Corrupt(format!("no billing table {table}")))?;
                    let kept: Vec<(String,)> = sqlx::query_as(sql(format!("SELECT external_id FROM {table} WHERE tenant_id = $1 AND integration_id = $2 AND removed_at IS NULL")))
                        .bind(tenant.0)
                        .bind(integration.0)
                        .fetch_all(&self.pool)
                        .await?;
                    let seen: std::collections::HashSet<&str> = seen.iter().map(String::as_str).collect();
                    let gone: Vec<String> = kept.into_iter().map(|(id,)| id).filter(|id| !seen.contains(id.as_str())).collect();
                    if gone.is_empty() {
                        return Ok(0);
                    }
                    let mut tx = self.begin_write().await?;
                    let mut removed = 0;
                    for chunk in gone.chunks(200) {
                        removed += remove_ids(&mut tx, tenant, integration, table, chunk, now).await?;
                    }
                    tx.commit().await?;
                    Ok(removed)
                }

                async fn billing_remove(&self, tenant: TenantId, integration: IntegrationId, table: &str, external_id: &str, now: DateTime<Utc>) -> Result<u64> {
                    let table = billing_table(table).ok_or_else(|| StoreError::Corrupt(format!("no billing table {table}")))?;
                    let mut tx = self.begin_write().await?;
                    let removed = remove_ids(&mut tx, tenant, integration, table, &[external_id.to_string()], now).await?;
                    tx.commit().await?;
                    Ok(removed)
                }

                async fn billing_customer_of(&self, tenant: TenantId, integration: IntegrationId, company: CompanyId) -> Result<Option<CustomerRow>> {
                    Ok(sqlx::query_as(
                        "SELECT b.integration_id, b.external_id, b.name, b.email, b.currency, b.balance, b.delinquent FROM external_links l \
                         JOIN billing_customers b ON b.integration_id = l.integration_id AND b.external_id = l.external_id \
                         WHERE l.tenant_id = $1 AND l.integration_id = $2 AND l.record_kind = 'company' AND l.local_id = $3 AND b.removed_at IS NULL",
                    )
                    .bind(tenant.0)
                    .bind(integration.0)
                    .bind(company.0)
                    .fetch_optional(&self.pool)
                    .await?)
                }

                async fn billing_customer(&self, tenant: TenantId, integration: IntegrationId, external_id: &str) -> Result<Option<CustomerRow>> {
                    Ok(sqlx::query_as(
                        "SELECT integration_id, external_id, name, email, currency, balance, delinquent FROM billing_customers \
                         WHERE tenant_id = $1 AND integration_id = $2 AND external_id = $3",
                    )
                    .bind(tenant.0)
                    .bind(integration.0)
                    .bind(external_id)
                    .fetch_optional(&self.pool)
                    .await?)
                }

                async fn billing_invoices(&self, tenant: TenantId, company: Option<CompanyId>, filter: InvoiceFilter, now: DateTime<Utc>, offset: i64, limit: i64) -> Result<Paged<InvoiceRow>> {
                    let cond = format!(
                        "x.tenant_id = $1 AND x.removed_at IS NULL AND ($2 = 0 OR l.local_id = $2) AND ($4 = 0 OR x.due_date < $3) AND {}",
                        filter_sql(filter)
                    );
                    let company = company.map_or(0, |c| c.0);
                    let past_due = i64::from(filter == InvoiceFilter::PastDue);
                    let (total,): (i64,) = sqlx::query_as(sql(format!("SELECT COUNT(*) FROM billing_invoices x {LINKED} WHERE {cond}")))
                        .bind(tenant.0)
                        .bind(company)
                        .bind(now)
                        .bind(past_due)
                        .fetch_one(&self.pool)
                        .await?;
                    let rows = sqlx::query_as(sql(format!("{INVOICE} {LINKED} WHERE {cond} ORDER BY x.created_remote DESC, x.id DESC LIMIT $5 OFFSET $6")))
                        .bind(tenant.0)
                        .bind(company)
                        .bind(now)
                        .bind(past_due)
                        .bind(limit.clamp(1, 500))
                        .bind(offset.max(0))
                        .fetch_all(&self.pool)
                        .await?;
                    Ok(Paged { total, rows })
                }

                async fn billing_open_invoice_ids(&self, tenant: TenantId, integration: IntegrationId, limit: i64) -> Result<Vec<String>> {
                    let rows: Vec<(String,)> = sqlx::query_as(
                        "SELECT external_id FROM billing_invoices WHERE tenant_id = $1 AND integration_id = $2 AND status = 'open' AND removed_at IS NULL ORDER BY id LIMIT $3",
                    )
                    .bind(tenant.0)
                    .bind(integration.0)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                    Ok(rows.into_iter().map(|(id,)| id).collect())
                }

                async fn billing_invoice(&self, tenant: TenantId, id: i64) -> Result<Option<InvoiceRow>> {
                    Ok(sqlx::query_as(sql(format!("{INVOICE} {LINKED} WHERE x.tenant_id = $1 AND x.id = $2")))
                        .bind(tenant.0)
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?)
                }

                async fn billing_payments(&self, tenant: TenantId, company: CompanyId, limit: i64) -> Result<Vec<PaymentRow>> {
                    Ok(sqlx::query_as(sql(format!(
                        "SELECT x.id, x.external_id, x.amount, x.currency, x.status, x.failure, x.description, x.receipt_url, x.created_remote FROM billing_payments x {LINKED} \
                         WHERE x.tenant_id = $1 AND l.local_id = $2 AND x.removed_at IS NULL ORDER BY x.created_remote DESC, x.id DESC LIMIT $3"
                    )))
                    .bind(tenant.0)
                    .bind(company.0)
                    .bind(limit.clamp(1, 200))
                    .fetch_all(&self.pool)
                    .await?)
                }

                async fn billing_subscriptions(&self, tenant: TenantId, company: CompanyId) -> Result<Vec<SubscriptionRow>> {
                    let rows: Vec<SubscriptionDbRow> = sqlx::query_as(sql(format!(
                        "SELECT x.external_id, x.status, x.currency, x.items, x.trial_end, x.cancel_at_period_end, x.canceled_at, x.period_start, x.period_end \
                         FROM billing_subscriptions x {LINKED} WHERE x.tenant_id = $1 AND l.local_id = $2 AND x.removed_at IS NULL \
                         ORDER BY CASE WHEN x.status = 'canceled' THEN 1 ELSE 0 END, x.created_remote DESC"
                    )))
                    .bind(tenant.0)
                    .bind(company.0)
                    .fetch_all(&self.pool)
                    .await?;
                    Ok(rows.into_iter().map(SubscriptionRow::from).collect())
                }

                async fn billing_past_due(&self, tenant: TenantId, now: DateTime<Utc>) -> Result<Vec<PastDueRow>> {
                    Ok(sqlx::query_as(sql(format!(
                        "SELECT l.local_id AS company_id, c.name AS company_name, x.currency, \
                           CAST(SUM(CASE WHEN x.due_date < $2 THEN x.amount_remaining ELSE 0 END) AS BIGINT) AS past_due, CAST(SUM(x.amount_remaining) AS BIGINT) AS open, \
                           CAST(SUM(CASE WHEN x.due_date < $2 THEN 1 ELSE 0 END) AS BIGINT) AS past_due_invoices, MIN(CASE WHEN x.due_date < $2 THEN x.due_date END) AS oldest_due \
                         FROM billing_invoices x {LINKED} \
                         WHERE x.tenant_id = $1 AND x.removed_at IS NULL AND x.status = 'open' AND x.amount_remaining > 0 AND l.local_id IS NOT NULL \
                         GROUP BY l.local_id, c.name, x.currency ORDER BY past_due DESC, open DESC, c.name"
                    )))
                    .bind(tenant.0)
                    .bind(now)
                    .fetch_all(&self.pool)
                    .await?)
                }

                async fn set_client_password(&self, tenant: TenantId, user: i64, hash: Option<&str>, now: DateTime<Utc>) -> Result<()> {
                    let done = sqlx::query("UPDATE company_users SET password_hash = $3, updated_at = $4 WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant.0)
                        .bind(user)
                        .bind(hash)
                        .bind(now)
                        .execute(&self.pool)
                        .await?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound);
                    }
                    // A new password (or none) ends the user's sessions.
                    sqlx::query("DELETE FROM client_sessions WHERE tenant_id = $1 AND company_user_id = $2")
                        .bind(tenant.0)
                        .bind(user)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }

                async fn client_logins(&self, email: &str) -> Result<Vec<ClientLogin>> {
                    Ok(sqlx::query_as(
                        "SELECT u.tenant_id, u.id AS user_id, u.company_id, u.password_hash FROM company_users u JOIN companies c ON c.id = u.company_id \
                         WHERE lower(u.email) = lower($1) AND u.password_hash IS NOT NULL AND u.status <> 'disabled' AND c.active = TRUE ORDER BY u.id LIMIT 10",
                    )
                    .bind(email.trim())
                    .fetch_all(&self.pool)
                    .await?)
                }

                async fn create_client_session(&self, id_hash: &str, tenant: i64, user: i64, csrf: &str, now: DateTime<Utc>, expires: DateTime<Utc>) -> Result<()> {
                    sqlx::query("DELETE FROM client_sessions WHERE expires_at < $1").bind(now).execute(&self.pool).await?;
                    sqlx::query("INSERT INTO client_sessions (id_hash, tenant_id, company_user_id, csrf_token, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)")
                        .bind(id_hash)
                        .bind(tenant)
                        .bind(user)
                        .bind(csrf)
                        .bind(now)
                        .bind(expires)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }

                async fn client_session(&self, id_hash: &str, now: DateTime<Utc>) -> Result<Option<ClientSession>> {
                    Ok(sqlx::query_as(
                        "SELECT s.tenant_id, u.id AS user_id, u.company_id, c.name AS company_name, COALESCE(u.email, '') AS email, \
                           TRIM(u.first_name || ' ' || u.last_name) AS name, s.csrf_token \
                         FROM client_sessions s JOIN company_users u ON u.id = s.company_user_id AND u.tenant_id = s.tenant_id \
                         JOIN companies c ON c.id = u.company_id \
                         WHERE s.id_hash = $1 AND s.expires_at > $2 AND u.password_hash IS NOT NULL AND u.status <> 'disabled' AND c.active = TRUE",
                    )
                    .bind(id_hash)
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await?)
                }

                async fn delete_client_session(&self, id_hash: &str) -> Result<()> {
                    sqlx::query("DELETE FROM client_sessions WHERE id_hash = $1").bind(id_hash).execute(&self.pool).await?;
                    Ok(())
                }
            }

            async fn remove_ids(
                tx: &mut sqlx::Transaction<'static, super::Db>,
                tenant: TenantId,
                integration: IntegrationId,
                table: &'static str,
                ids: &[String],
                now: DateTime<Utc>,
            ) -> Result<u64> {
                let marks: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 4)).collect();
                let list = marks.join(", ");
                let mut q = sqlx::query(sql(format!(
                    "UPDATE {table} SET removed_at = $3, updated_at = $3 WHERE tenant_id = $1 AND integration_id = $2 AND removed_at IS NULL AND external_id IN ({list})"
                )))
                .bind(tenant.0)
                .bind(integration.0)
                .bind(now);
                for id in ids {
                    q = q.bind(id);
                }
                let removed = q.execute(&mut **tx).await?.rows_affected();
                if table == "billing_customers" {
                    // A customer deleted upstream is an inactive company of the integration.
                    let mut q = sqlx::query(sql(format!(
                        "UPDATE integration_companies SET active = FALSE, updated_at = $3 WHERE tenant_id = $1 AND integration_id = $2 AND active = TRUE AND external_id IN ({list})"
                    )))
                    .bind(tenant.0)
                    .bind(integration.0)
                    .bind(now);
                    for id in ids {
                        q = q.bind(id);
                    }
                    q.execute(&mut **tx).await?;
                }
                Ok(removed)
            }
        }
    };
}
pub(crate) use impl_billing_store;
