//! The billing capability (Stripe): lists of customers, invoices, subscriptions and
//! payments a page at a time, single objects re-read after a webhook, and the writes the
//! portal makes (a customer for a company, the company's id on a customer, a billing
//! portal session, a seat quantity, the webhook endpoint).

use async_trait::async_trait;
use mspbridge_domain::billing::{
    BillingCustomer, BillingInvoice, BillingPayment, BillingPrice, BillingSubscription,
};

#[derive(Debug, Clone, thiserror::Error)]
pub enum BillingError {
    /// The key was refused (401) or lacks a permission (403): an admin must act.
    #[error("{0}")]
    Refused(String),
    /// The object does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// A request the vendor rejected (400): names the parameter.
    #[error("{0}")]
    Invalid(String),
    /// Anything transient, after the retry policy gave up.
    #[error("{0}")]
    Transient(String),
}

/// Which objects a list reads.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Created at or after (Unix seconds): an incremental pass.
    pub created_gte: Option<i64>,
    /// Only this status (invoices: `open` re-reads what may have been paid).
    pub status: Option<String>,
    /// Continue after this object id.
    pub starting_after: Option<String>,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct BillingPage<T> {
    pub records: Vec<T>,
    /// `id: reason` of every object that could not be read (the rest of the page stands).
    pub rejected: Vec<String>,
    /// Where the next page starts; `None` at the end.
    pub next: Option<String>,
    /// The newest `created` on the page (Unix seconds).
    pub newest: Option<i64>,
}

/// A single object as it is now; `Gone` when the vendor deleted it.
#[derive(Debug, Clone)]
pub enum Current<T> {
    Found(T),
    Gone,
}

#[async_trait]
pub trait BillingSource: Send + Sync {
    async fn customers(&self, q: &ListQuery) -> Result<BillingPage<BillingCustomer>, BillingError>;
    async fn invoices(&self, q: &ListQuery) -> Result<BillingPage<BillingInvoice>, BillingError>;
    async fn subscriptions(
        &self,
        q: &ListQuery,
    ) -> Result<BillingPage<BillingSubscription>, BillingError>;
    async fn payments(&self, q: &ListQuery) -> Result<BillingPage<BillingPayment>, BillingError>;

    async fn customer(&self, id: &str) -> Result<Current<BillingCustomer>, BillingError>;
    async fn invoice(&self, id: &str) -> Result<Current<BillingInvoice>, BillingError>;
    async fn subscription(&self, id: &str) -> Result<Current<BillingSubscription>, BillingError>;
    async fn payment(&self, id: &str) -> Result<Current<BillingPayment>, BillingError>;

    /// Creates a customer for a portal company, its id in the metadata. `key` makes the
    /// request idempotent: the same key never creates a second customer.
    async fn create_customer(
        &self,
        name: &str,
        email: Option<&str>,
        company_id: i64,
        key: &str,
    ) -> Result<BillingCustomer, BillingError>;
    /// Writes (or with `None` removes) the portal company's id on a customer.
    async fn tag_customer(
        &self,
        id: &str,
        company_id: Option<i64>,
    ) -> Result<BillingCustomer, BillingError>;
    /// A short-lived page where the customer manages payment methods; its URL.
    async fn portal_session(
        &self,
        customer: &str,
        return_url: &str,
    ) -> Result<String, BillingError>;
    /// Registers the webhook endpoint for [`crate::stripe::webhooks::EVENTS`]: its id and
    /// signing secret.
    async fn register_webhook(&self, url: &str) -> Result<(String, String), BillingError>;
    /// Sets a subscription item's quantity (idempotent under `key`).
    async fn set_quantity(&self, item: &str, quantity: u64, key: &str) -> Result<(), BillingError>;
    /// Adds a price to a subscription with a quantity (idempotent under `key`); the new
    /// item's id.
    async fn add_item(
        &self,
        subscription: &str,
        price: &str,
        quantity: u64,
        key: &str,
    ) -> Result<String, BillingError>;
    /// Active recurring prices, with their products' names.
    async fn prices(&self) -> Result<Vec<BillingPrice>, BillingError>;
    fn requests(&self) -> u64;
    fn bytes(&self) -> u64 {
        0
    }
}
