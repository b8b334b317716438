//! Billing (spec 2.19, Stripe): the MSP bills its client companies from its own billing
//! account. A billing customer is mapped onto a portal company like any vendor company;
//! its invoices, subscription and payments are then that company's. Amounts are integers
//! in the currency's smallest unit (cents; yen have none), never floats.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The metadata key the portal writes on a billing customer it linked or created: the
/// portal company's id. A customer carrying it is linked to that company by the sync.
pub const COMPANY_METADATA_KEY: &str = "mspbridge_company_id";

/// A billing customer as the vendor has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingCustomer {
    pub external_id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub currency: Option<String>,
    /// Credit (negative) or debt (positive) carried to the next invoice.
    pub balance: i64,
    pub delinquent: bool,
    /// `metadata.mspbridge_company_id`, when it is a number.
    pub company_hint: Option<i64>,
    pub created: Option<DateTime<Utc>>,
}

impl BillingCustomer {
    /// The name shown in the mapping grid: the customer's name, else its e-mail, else its id.
    pub fn display_name(&self) -> String {
        self.name
            .as_deref()
            .filter(|n| !n.trim().is_empty())
            .or(self.email.as_deref())
            .unwrap_or(&self.external_id)
            .trim()
            .to_string()
    }

    /// The e-mail's domain, lower-case (the mapping grid's Quick Match compares it).
    pub fn email_domain(&self) -> Option<String> {
        let email = self.email.as_deref()?;
        let (_, domain) = email.trim().rsplit_once('@')?;
        let d = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        (!d.is_empty() && d.contains('.')).then_some(d)
    }
}

/// An invoice. `status` is the vendor's word (draft, open, paid, uncollectible, void) and
/// is kept when the vendor adds one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingInvoice {
    pub external_id: String,
    pub customer: String,
    pub number: Option<String>,
    pub status: String,
    pub currency: String,
    pub total: i64,
    pub amount_due: i64,
    pub amount_paid: i64,
    pub amount_remaining: i64,
    pub created: Option<DateTime<Utc>>,
    pub due_date: Option<DateTime<Utc>>,
    pub paid_at: Option<DateTime<Utc>>,
    pub hosted_invoice_url: Option<String>,
    pub invoice_pdf: Option<String>,
    pub subscription: Option<String>,
    pub description: Option<String>,
}

impl BillingInvoice {
    /// Open with something left to pay.
    pub fn payable(&self) -> bool {
        self.status == "open" && self.amount_remaining > 0
    }

    /// Open, something left to pay, and its due date passed.
    pub fn past_due(&self, now: DateTime<Utc>) -> bool {
        self.payable() && self.due_date.is_some_and(|d| d < now)
    }
}

/// One priced line of a subscription (a seat count of a price).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionItem {
    pub id: String,
    pub price_id: String,
    pub product_name: Option<String>,
    pub quantity: u64,
    pub unit_amount: Option<i64>,
    pub interval: Option<String>,
    /// Since Stripe's 2025 "Basil" versions the billing period lives on each item.
    pub current_period_start: Option<DateTime<Utc>>,
    pub current_period_end: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingSubscription {
    pub external_id: String,
    pub customer: String,
    /// incomplete, incomplete_expired, trialing, active, past_due, canceled, unpaid,
    /// paused, or a word the vendor adds later (kept).
    pub status: String,
    pub currency: String,
    pub items: Vec<SubscriptionItem>,
    pub trial_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub canceled_at: Option<DateTime<Utc>>,
    pub created: Option<DateTime<Utc>>,
}

impl BillingSubscription {
    /// The current period: the earliest end of its items (they share one in practice).
    pub fn period_end(&self) -> Option<DateTime<Utc>> {
        self.items.iter().filter_map(|i| i.current_period_end).min()
    }

    pub fn period_start(&self) -> Option<DateTime<Utc>> {
        self.items
            .iter()
            .filter_map(|i| i.current_period_start)
            .max()
    }
}

/// A payment (a payment intent with its latest charge).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingPayment {
    pub external_id: String,
    pub customer: Option<String>,
    pub amount: i64,
    pub currency: String,
    /// requires_payment_method, requires_action, processing, succeeded, canceled, …
    pub status: String,
    /// Why it failed, in the vendor's words (the charge's failure message, else the
    /// payment's last error).
    pub failure: Option<String>,
    pub description: Option<String>,
    pub created: Option<DateTime<Utc>>,
    pub receipt_url: Option<String>,
}

/// A recurring price of the billing account (the admin picks the training add-on's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingPrice {
    pub id: String,
    pub product_name: Option<String>,
    pub unit_amount: Option<i64>,
    pub currency: String,
    pub interval: Option<String>,
}

/// Currencies without a minor unit (Stripe's list): an amount of 500 is ¥500, not ¥5.00.
const ZERO_DECIMAL: &[&str] = &[
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];

/// Digits after the decimal point of `currency`.
pub fn minor_digits(currency: &str) -> u32 {
    if ZERO_DECIMAL.contains(&currency.to_ascii_lowercase().as_str()) {
        0
    } else {
        2
    }
}

/// An amount in words an admin reads: `1 234.50 USD`, `¥`-less `500 JPY`. Integer
/// arithmetic only.
pub fn format_amount(amount: i64, currency: &str) -> String {
    let code = currency.to_ascii_uppercase();
    let sign = if amount < 0 { "-" } else { "" };
    let abs = amount.unsigned_abs();
    let digits = minor_digits(currency);
    let (major, minor) = if digits == 0 {
        (abs, None)
    } else {
        let unit = 10u64.pow(digits);
        (abs / unit, Some(abs % unit))
    };
    let mut grouped = String::new();
    let s = major.to_string();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    match minor {
        Some(m) => format!(
            "{sign}{grouped}.{m:0width$} {code}",
            width = digits as usize
        ),
        None => format!("{sign}{grouped} {code}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_formatted_in_the_currency_unit() {
        assert_eq!(format_amount(123450, "usd"), "1,234.50 USD");
        assert_eq!(format_amount(5, "eur"), "0.05 EUR");
        assert_eq!(format_amount(-1000, "usd"), "-10.00 USD");
        assert_eq!(format_amount(500, "jpy"), "500 JPY");
        assert_eq!(format_amount(1234567, "JPY"), "1,234,567 JPY");
    }

    #[test]
    fn a_customer_is_named_by_name_then_email_and_its_domain_read_from_the_email() {
        let mut c = BillingCustomer {
            external_id: "cus_1".into(),
            name: Some("  ".into()),
            email: Some("Billing@Acme.Example".into()),
            currency: None,
            balance: 0,
            delinquent: false,
            company_hint: None,
            created: None,
        };
        assert_eq!(c.display_name(), "Billing@Acme.Example");
        assert_eq!(c.email_domain().as_deref(), Some("acme.example"));
        c.email = Some("nobody".into());
        assert_eq!(c.email_domain(), None);
        c.email = None;
        assert_eq!(c.display_name(), "cus_1");
    }

    #[test]
    fn an_open_invoice_is_past_due_only_after_its_due_date_and_while_something_is_left() {
        let now = Utc::now();
        let mut i = BillingInvoice {
            external_id: "in_1".into(),
            customer: "cus_1".into(),
            number: None,
            status: "open".into(),
            currency: "usd".into(),
            total: 100,
            amount_due: 100,
            amount_paid: 0,
            amount_remaining: 100,
            created: None,
            due_date: Some(now - chrono::Duration::days(1)),
            paid_at: None,
            hosted_invoice_url: None,
            invoice_pdf: None,
            subscription: None,
            description: None,
        };
        assert!(i.past_due(now));
        i.due_date = Some(now + chrono::Duration::days(1));
        assert!(!i.past_due(now) && i.payable());
        i.status = "paid".into();
        i.amount_remaining = 0;
        assert!(!i.payable());
    }
}
