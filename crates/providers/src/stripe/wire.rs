//! Stripe's objects read leniently into the billing model: only `id` (and an invoice's,
//! subscription's or payment's customer where it is the owner) is required; every other
//! field may be missing, null or of an unexpected type, and an expanded object is read
//! where an id was expected (and the other way round). Unknown status words are kept.
//! Timestamps are Unix seconds; amounts integers in the smallest currency unit.

use chrono::{DateTime, TimeZone, Utc};
use mspbridge_domain::billing::{
    BillingCustomer, BillingInvoice, BillingPayment, BillingPrice, BillingSubscription,
    COMPANY_METADATA_KEY, SubscriptionItem,
};
use serde_json::Value;

fn s(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn time(v: &Value) -> Option<DateTime<Utc>> {
    int(v).and_then(|t| Utc.timestamp_opt(t, 0).single())
}

/// An id, whether the field holds the id or the expanded object.
pub fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::String(_) => s(v),
        Value::Object(_) => s(&v["id"]),
        _ => None,
    }
}

fn required_id(v: &Value) -> Result<String, String> {
    id_of(&v["id"]).ok_or_else(|| "no id".to_string())
}

/// Whether Stripe says the object was deleted (`{"id","object","deleted":true}`).
pub fn is_deleted(v: &Value) -> bool {
    v["deleted"].as_bool() == Some(true)
}

pub fn customer(v: &Value) -> Result<BillingCustomer, String> {
    let id = required_id(v)?;
    let hint = match &v["metadata"][COMPANY_METADATA_KEY] {
        Value::String(s) => s.trim().parse().ok(),
        other => int(other),
    };
    Ok(BillingCustomer {
        external_id: id,
        name: s(&v["name"]),
        email: s(&v["email"]),
        currency: s(&v["currency"]),
        balance: int(&v["balance"]).unwrap_or(0),
        delinquent: v["delinquent"].as_bool().unwrap_or(false),
        company_hint: hint.filter(|h: &i64| *h > 0),
        created: time(&v["created"]),
    })
}

pub fn invoice(v: &Value) -> Result<BillingInvoice, String> {
    let id = required_id(v)?;
    let customer = id_of(&v["customer"]).ok_or_else(|| format!("{id}: no customer"))?;
    // Basil: the subscription under parent.subscription_details; older versions: on the
    // invoice itself.
    let subscription = id_of(&v["parent"]["subscription_details"]["subscription"])
        .or_else(|| id_of(&v["subscription"]));
    let amount_due = int(&v["amount_due"]).unwrap_or(0);
    let amount_paid = int(&v["amount_paid"]).unwrap_or(0);
    Ok(BillingInvoice {
        external_id: id,
        customer,
        number: s(&v["number"]),
        status: s(&v["status"]).unwrap_or_else(|| "draft".into()),
        currency: s(&v["currency"]).unwrap_or_else(|| "usd".into()),
        total: int(&v["total"]).unwrap_or(amount_due),
        amount_due,
        amount_paid,
        amount_remaining: int(&v["amount_remaining"]).unwrap_or((amount_due - amount_paid).max(0)),
        created: time(&v["created"]),
        due_date: time(&v["due_date"]),
        paid_at: time(&v["status_transitions"]["paid_at"]),
        hosted_invoice_url: s(&v["hosted_invoice_url"]),
        invoice_pdf: s(&v["invoice_pdf"]),
        subscription,
        description: s(&v["description"]).or_else(|| {
            v["lines"]["data"]
                .as_array()
                .and_then(|l| l.first())
                .and_then(|l| s(&l["description"]))
        }),
    })
}

fn item(v: &Value) -> Option<SubscriptionItem> {
    let price = &v["price"];
    let product = &price["product"];
    Some(SubscriptionItem {
        id: s(&v["id"])?,
        price_id: id_of(price).unwrap_or_default(),
        product_name: s(&product["name"]).or_else(|| s(&price["nickname"])),
        quantity: int(&v["quantity"]).unwrap_or(1).max(0) as u64,
        unit_amount: int(&price["unit_amount"]),
        interval: s(&price["recurring"]["interval"]),
        current_period_start: time(&v["current_period_start"]),
        current_period_end: time(&v["current_period_end"]),
    })
}

pub fn subscription(v: &Value) -> Result<BillingSubscription, String> {
    let id = required_id(v)?;
    let customer = id_of(&v["customer"]).ok_or_else(|| format!("{id}: no customer"))?;
    let mut items: Vec<SubscriptionItem> = v["items"]["data"]
        .as_array()
        .map(|a| a.iter().filter_map(item).collect())
        .unwrap_or_default();
    // Versions before Basil keep the period on the subscription.
    for i in &mut items {
        if i.current_period_end.is_none() {
            i.current_period_start = time(&v["current_period_start"]);
            i.current_period_end = time(&v["current_period_end"]);
        }
    }
    Ok(BillingSubscription {
        external_id: id,
        customer,
        status: s(&v["status"]).unwrap_or_else(|| "active".into()),
        currency: s(&v["currency"]).unwrap_or_else(|| "usd".into()),
        items,
        trial_end: time(&v["trial_end"]),
        cancel_at_period_end: v["cancel_at_period_end"].as_bool().unwrap_or(false),
        canceled_at: time(&v["canceled_at"]),
        created: time(&v["created"]),
    })
}

/// A payment intent, its failure read from the expanded latest charge when there is one.
pub fn payment(v: &Value) -> Result<BillingPayment, String> {
    let id = required_id(v)?;
    let charge = &v["latest_charge"];
    let failure = s(&charge["failure_message"])
        .or_else(|| s(&v["last_payment_error"]["message"]))
        .or_else(|| {
            s(&charge["outcome"]["seller_message"]).filter(|_| s(&charge["failure_code"]).is_some())
        });
    Ok(BillingPayment {
        external_id: id,
        customer: id_of(&v["customer"]),
        amount: int(&v["amount"]).unwrap_or(0),
        currency: s(&v["currency"]).unwrap_or_else(|| "usd".into()),
        status: s(&v["status"]).unwrap_or_else(|| "processing".into()),
        failure,
        description: s(&v["description"]),
        created: time(&v["created"]),
        receipt_url: s(&charge["receipt_url"]),
    })
}

pub fn price(v: &Value) -> Result<BillingPrice, String> {
    Ok(BillingPrice {
        id: required_id(v)?,
        product_name: s(&v["product"]["name"]).or_else(|| s(&v["nickname"])),
        unit_amount: int(&v["unit_amount"]),
        currency: s(&v["currency"]).unwrap_or_else(|| "usd".into()),
        interval: s(&v["recurring"]["interval"]),
    })
}

/// A list page: the objects, whether more follow, and the last object's id.
pub struct ListPage {
    pub data: Vec<Value>,
    pub has_more: bool,
}

pub fn list(v: Value) -> Result<ListPage, String> {
    let has_more = v["has_more"].as_bool().unwrap_or(false);
    match v {
        Value::Object(mut m) => match m.remove("data") {
            Some(Value::Array(data)) => Ok(ListPage { data, has_more }),
            _ => Err("a list without data".into()),
        },
        _ => Err("a list that is not an object".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn odd_fields_do_not_fail_a_record_and_unknown_statuses_are_kept() {
        let c = customer(
            &json!({"id": "cus_1", "name": null, "email": 7, "balance": "12",
            "metadata": {"mspbridge_company_id": "42"}}),
        )
        .unwrap();
        assert_eq!(
            (c.name, c.email, c.balance, c.company_hint),
            (None, None, 12, Some(42))
        );
        let i = invoice(
            &json!({"id": "in_1", "customer": {"id": "cus_1", "object": "customer"},
            "status": "in_review", "amount_due": 500, "amount_paid": 100,
            "parent": {"subscription_details": {"subscription": "sub_1"}}}),
        )
        .unwrap();
        assert_eq!(i.status, "in_review");
        assert_eq!(i.amount_remaining, 400);
        assert_eq!(i.customer, "cus_1");
        assert_eq!(i.subscription.as_deref(), Some("sub_1"));
        assert!(invoice(&json!({"id": "in_2"})).is_err());
        assert!(customer(&json!({"name": "x"})).is_err());
    }

    #[test]
    fn a_subscriptions_period_is_read_from_its_items_and_a_payments_failure_from_its_charge() {
        let s = subscription(&json!({"id": "sub_1", "customer": "cus_1", "status": "active",
            "items": {"data": [{"id": "si_1", "quantity": 3, "current_period_end": 1_800_000_000,
              "price": {"id": "price_1", "unit_amount": 800, "product": {"id": "prod_1", "name": "Premium Training"}}}]}}))
        .unwrap();
        assert_eq!(s.items[0].quantity, 3);
        assert_eq!(s.items[0].product_name.as_deref(), Some("Premium Training"));
        assert_eq!(s.period_end().map(|t| t.timestamp()), Some(1_800_000_000));
        let p = payment(&json!({"id": "pi_1", "amount": 100, "status": "requires_payment_method",
            "latest_charge": {"id": "ch_1", "failure_code": "card_declined", "failure_message": "Your card was declined."}}))
        .unwrap();
        assert_eq!(p.failure.as_deref(), Some("Your card was declined."));
        assert_eq!(p.customer, None);
    }
}
