//! Stripe as a [`BillingSource`]: lists at `limit=100` paged by `starting_after`, each
//! with the `expand[]` that saves per-object reads (a subscription's prices and products,
//! a payment intent's latest charge), `created[gte]` for incremental passes; single
//! objects re-read after a webhook; the portal's writes with idempotency keys.

use async_trait::async_trait;
use mspbridge_domain::billing::{
    BillingCustomer, BillingInvoice, BillingPayment, BillingPrice, BillingSubscription,
    COMPANY_METADATA_KEY,
};
use serde_json::Value;

use super::client::{StripeClient, StripeError};
use super::webhooks::EVENTS;
use super::{STRIPE_VERSION, wire};
use crate::billing::{BillingError, BillingPage, BillingSource, Current, ListQuery};

pub struct StripeSource {
    pub client: StripeClient,
}

pub fn billing_error(e: StripeError) -> BillingError {
    match e.status() {
        Some(401) => BillingError::Refused(format!(
            "Stripe refused the key: {}. Create a new restricted key and update the integration's credentials.",
            e.vendor_message()
        )),
        Some(403) => BillingError::Refused(format!(
            "The key lacks a permission: {}",
            e.vendor_message()
        )),
        Some(404) => BillingError::NotFound(e.vendor_message()),
        Some(400) | Some(402) | Some(409) => BillingError::Invalid(e.to_string()),
        _ => match e {
            StripeError::Refused(m) => BillingError::Refused(m),
            other => BillingError::Transient(other.to_string()),
        },
    }
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl StripeSource {
    async fn list<T>(
        &self,
        path: &str,
        q: &ListQuery,
        expand: &[&str],
        what: &str,
        read: fn(&Value) -> Result<T, String>,
    ) -> Result<BillingPage<T>, BillingError> {
        let mut query = vec![("limit".to_string(), "100".to_string())];
        if let Some(after) = &q.starting_after {
            query.push(("starting_after".into(), after.clone()));
        }
        if let Some(gte) = q.created_gte {
            query.push(("created[gte]".into(), gte.to_string()));
        }
        if let Some(status) = &q.status {
            query.push(("status".into(), status.clone()));
        }
        for e in expand {
            query.push(("expand[]".into(), e.to_string()));
        }
        let v = self
            .client
            .get(path, &query, what)
            .await
            .map_err(billing_error)?;
        let page = wire::list(v).map_err(|e| BillingError::Transient(format!("{what}: {e}")))?;
        let next = if page.has_more {
            page.data.last().and_then(|o| wire::id_of(&o["id"]))
        } else {
            None
        };
        let newest = page.data.iter().filter_map(|o| o["created"].as_i64()).max();
        let mut records = Vec::with_capacity(page.data.len());
        let mut rejected = Vec::new();
        for o in &page.data {
            match read(o) {
                Ok(r) => records.push(r),
                Err(e) => rejected.push(format!(
                    "{}: {e}",
                    wire::id_of(&o["id"]).unwrap_or_else(|| "(no id)".into())
                )),
            }
        }
        Ok(BillingPage {
            records,
            rejected,
            next,
            newest,
        })
    }

    async fn one<T>(
        &self,
        path: &str,
        expand: &[&str],
        what: &str,
        read: fn(&Value) -> Result<T, String>,
    ) -> Result<Current<T>, BillingError> {
        let query: Vec<(String, String)> = expand
            .iter()
            .map(|e| ("expand[]".to_string(), e.to_string()))
            .collect();
        match self.client.get(path, &query, what).await {
            Ok(v) if wire::is_deleted(&v) => Ok(Current::Gone),
            Ok(v) => read(&v)
                .map(Current::Found)
                .map_err(|e| BillingError::Invalid(format!("{what}: {e}"))),
            Err(e) if e.status() == Some(404) => Ok(Current::Gone),
            Err(e) => Err(billing_error(e)),
        }
    }
}

/// Object ids are letters, digits and underscores: anything else never reaches a path.
fn checked(id: &str) -> Result<&str, BillingError> {
    if !id.is_empty()
        && id.len() <= 255
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        Ok(id)
    } else {
        Err(BillingError::Invalid(format!("'{id}' is not a Stripe id")))
    }
}

const SUBSCRIPTION_EXPAND: &str = "data.items.data.price.product";
const PAYMENT_EXPAND: &str = "data.latest_charge";

#[async_trait]
impl BillingSource for StripeSource {
    async fn customers(&self, q: &ListQuery) -> Result<BillingPage<BillingCustomer>, BillingError> {
        self.list("/v1/customers", q, &[], "customers", wire::customer)
            .await
    }

    async fn invoices(&self, q: &ListQuery) -> Result<BillingPage<BillingInvoice>, BillingError> {
        self.list("/v1/invoices", q, &[], "invoices", wire::invoice)
            .await
    }

    async fn subscriptions(
        &self,
        q: &ListQuery,
    ) -> Result<BillingPage<BillingSubscription>, BillingError> {
        // Without a status Stripe leaves canceled subscriptions out.
        let mut q = q.clone();
        if q.status.is_none() {
            q.status = Some("all".into());
        }
        self.list(
            "/v1/subscriptions",
            &q,
            &[SUBSCRIPTION_EXPAND],
            "subscriptions",
            wire::subscription,
        )
        .await
    }

    async fn payments(&self, q: &ListQuery) -> Result<BillingPage<BillingPayment>, BillingError> {
        self.list(
            "/v1/payment_intents",
            q,
            &[PAYMENT_EXPAND],
            "payment intents",
            wire::payment,
        )
        .await
    }

    async fn customer(&self, id: &str) -> Result<Current<BillingCustomer>, BillingError> {
        let path = format!("/v1/customers/{}", checked(id)?);
        self.one(&path, &[], "customer", wire::customer).await
    }

    async fn invoice(&self, id: &str) -> Result<Current<BillingInvoice>, BillingError> {
        let path = format!("/v1/invoices/{}", checked(id)?);
        self.one(&path, &[], "invoice", wire::invoice).await
    }

    async fn subscription(&self, id: &str) -> Result<Current<BillingSubscription>, BillingError> {
        let path = format!("/v1/subscriptions/{}", checked(id)?);
        self.one(
            &path,
            &["items.data.price.product"],
            "subscription",
            wire::subscription,
        )
        .await
    }

    async fn payment(&self, id: &str) -> Result<Current<BillingPayment>, BillingError> {
        let path = format!("/v1/payment_intents/{}", checked(id)?);
        self.one(&path, &["latest_charge"], "payment intent", wire::payment)
            .await
    }

    async fn create_customer(
        &self,
        name: &str,
        email: Option<&str>,
        company_id: i64,
        key: &str,
    ) -> Result<BillingCustomer, BillingError> {
        let company = company_id.to_string();
        let meta = format!("metadata[{COMPANY_METADATA_KEY}]");
        let mut body = pairs(&[("name", name), (meta.as_str(), company.as_str())]);
        if let Some(e) = email {
            body.push(("email".into(), e.to_string()));
        }
        let v = self
            .client
            .post("/v1/customers", &body, Some(key), "create customer")
            .await
            .map_err(billing_error)?;
        wire::customer(&v).map_err(BillingError::Invalid)
    }

    async fn tag_customer(
        &self,
        id: &str,
        company_id: Option<i64>,
    ) -> Result<BillingCustomer, BillingError> {
        let path = format!("/v1/customers/{}", checked(id)?);
        let value = company_id.map(|c| c.to_string()).unwrap_or_default();
        let meta = format!("metadata[{COMPANY_METADATA_KEY}]");
        // Writing the value is idempotent by itself; each write gets its own key (reused by
        // its retries), so a later write of an earlier value is carried out, not replayed.
        let v = self
            .client
            .post(
                &path,
                &pairs(&[(meta.as_str(), value.as_str())]),
                None,
                "update customer metadata",
            )
            .await
            .map_err(billing_error)?;
        wire::customer(&v).map_err(BillingError::Invalid)
    }

    async fn portal_session(
        &self,
        customer: &str,
        return_url: &str,
    ) -> Result<String, BillingError> {
        let v = self
            .client
            .post(
                "/v1/billing_portal/sessions",
                &pairs(&[("customer", checked(customer)?), ("return_url", return_url)]),
                None,
                "billing portal session",
            )
            .await
            .map_err(billing_error)?;
        v["url"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| BillingError::Invalid("the billing portal session has no url".into()))
    }

    async fn register_webhook(&self, url: &str) -> Result<(String, String), BillingError> {
        let mut body = pairs(&[
            ("url", url),
            ("api_version", STRIPE_VERSION),
            (
                "description",
                "mspbridge: billing updates for the client portal",
            ),
        ]);
        for e in EVENTS {
            body.push(("enabled_events[]".into(), e.to_string()));
        }
        let v = self
            .client
            .post("/v1/webhook_endpoints", &body, None, "register webhook")
            .await
            .map_err(billing_error)?;
        match (wire::id_of(&v["id"]), v["secret"].as_str()) {
            (Some(id), Some(secret)) => Ok((id, secret.to_string())),
            _ => Err(BillingError::Invalid(
                "the webhook endpoint came back without its id or secret".into(),
            )),
        }
    }

    async fn set_quantity(&self, item: &str, quantity: u64, key: &str) -> Result<(), BillingError> {
        let path = format!("/v1/subscription_items/{}", checked(item)?);
        let q = quantity.to_string();
        self.client
            .post(
                &path,
                &pairs(&[("quantity", q.as_str()), ("proration_behavior", "none")]),
                Some(key),
                "subscription item quantity",
            )
            .await
            .map_err(billing_error)?;
        Ok(())
    }

    async fn add_item(
        &self,
        subscription: &str,
        price: &str,
        quantity: u64,
        key: &str,
    ) -> Result<String, BillingError> {
        // Added through the subscription (`items[0][price]`), which answers with every item.
        let path = format!("/v1/subscriptions/{}", checked(subscription)?);
        let q = quantity.to_string();
        let v = self
            .client
            .post(
                &path,
                &pairs(&[
                    ("items[0][price]", checked(price)?),
                    ("items[0][quantity]", q.as_str()),
                    ("proration_behavior", "none"),
                ]),
                Some(key),
                "add subscription item",
            )
            .await
            .map_err(billing_error)?;
        v["items"]["data"]
            .as_array()
            .and_then(|items| {
                items
                    .iter()
                    .find(|i| wire::id_of(&i["price"]).as_deref() == Some(price))
            })
            .and_then(|i| wire::id_of(&i["id"]))
            .ok_or_else(|| {
                BillingError::Invalid("the subscription came back without the new item".into())
            })
    }

    async fn prices(&self) -> Result<Vec<BillingPrice>, BillingError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        // At most 10 pages (1,000 prices): the picker lists recurring prices only.
        for _ in 0..10 {
            let mut query = vec![
                ("limit".to_string(), "100".to_string()),
                ("active".to_string(), "true".to_string()),
                ("type".to_string(), "recurring".to_string()),
                ("expand[]".to_string(), "data.product".to_string()),
            ];
            if let Some(a) = &after {
                query.push(("starting_after".into(), a.clone()));
            }
            let v = self
                .client
                .get("/v1/prices", &query, "prices")
                .await
                .map_err(billing_error)?;
            let page = wire::list(v).map_err(BillingError::Transient)?;
            after = if page.has_more {
                page.data.last().and_then(|o| wire::id_of(&o["id"]))
            } else {
                None
            };
            out.extend(page.data.iter().filter_map(|o| wire::price(o).ok()));
            if after.is_none() {
                break;
            }
        }
        Ok(out)
    }

    fn requests(&self) -> u64 {
        self.client.requests()
    }

    fn bytes(&self) -> u64 {
        self.client.bytes()
    }
}
