//! Stripe played on loopback for tests, benchmarks and the demo: the MSP's own Stripe
//! account ("MSP Demo Ltd", `acct_1MspBridgeDemo`) as `https://api.stripe.com/v1` serves
//! it, plus the pages Stripe hosts for the MSP's clients.
//!
//! The API, at `{base}/v1`: secret and restricted keys as `Bearer` or Basic username (401
//! with the key masked, 403 naming the missing `rak_…` permission), test and live mode
//! (25 and 100 requests per rolling second; 429 `rate_limit` with `Stripe-Should-Retry`),
//! form bodies with bracket nesting (`metadata[k]=v`, `items[0][quantity]=3`,
//! `expand[]=…`; a JSON body is refused), `Idempotency-Key` (same key and parameters:
//! the saved answer with `Idempotent-Replayed: true`; other parameters:
//! `idempotency_error`; keys per API key, kept 24 h), a `Request-Id` on every answer and
//! Stripe's `{"error":{type,code,message,param,doc_url,request_log_url}}` errors. Lists
//! (`customers`, `invoices`, `subscriptions`, `payment_intents`, `charges`, `prices`,
//! `products`, `webhook_endpoints`, `events`) page newest first with `limit` (1–100),
//! `starting_after` / `ending_before` and `has_more`, filter on `created[gte|gt|lte|lt]`,
//! `customer`, `status` (subscriptions leave canceled ones out unless asked),
//! `email`, `active`, `type`, `payment_intent`, `types[]`, refuse unknown parameters, and
//! expand `customer`, `latest_charge`, `latest_invoice`, `items.data.price.product`,
//! `product`, `payment_intent` (`data.`-prefixed on lists). Writes: customers
//! (create, update, delete), subscription item quantities (through the item or the
//! subscription), `cancel_at_period_end`, billing portal sessions and webhook endpoints.
//! Objects have the "Basil" (`2025-08-27.basil`) shapes of Stripe's own fixtures: billing
//! periods on subscription items, invoice → subscription under
//! `parent.subscription_details`, no `payment_intent`/`charge` on invoices.
//!
//! Hosted pages, without auth, as a client's browser sees them: the hosted invoice page
//! `{base}/i/{secret}` (with a `Pay` button for open invoices), its PDF
//! (`{base}/i/{secret}/pdf`), the billing portal (`{base}/p/session/{secret}`) and charge
//! receipts (`{base}/r/{charge}`).
//!
//! Webhooks: writes and test actions (pay or fail an invoice, edit or delete a customer)
//! create events, kept for `GET /v1/events` and POSTed in the background to every
//! enabled endpoint of the same mode whose `enabled_events` has the type (or `*`), with
//! `Stripe-Signature: t=…,v1=…[,v1=…],v0=…` (a second `v1` while a rolled secret is still
//! valid), retried after each configured delay on a non-2xx answer or none; every attempt
//! is recorded. Tests can sign with an old timestamp, redeliver an event, lose the answer
//! of a POST after it was carried out, and inject faults.
//!
//! Seeded data (`Seed::Small`): one customer per company of the Autotask sandbox
//! (`billing@<web domain>`), a "Walk-in Customer" without email or subscription and a
//! deleted "Old Client Ltd"; one customer bills in EUR and one in JPY (zero-decimal).
//! Invoices (3–8 per customer) are mostly paid, with open ones due in the future and
//! past due, drafts, one void and one uncollectible; subscriptions are mostly active, with
//! past-due, trialing, canceled and cancel-at-period-end ones; payment intents and charges
//! back every paid invoice, plus declined (insufficient funds) and processing ones. Every
//! object is computed from its position when asked for, and ids encode that position, so
//! `with_size` serves hundreds of thousands of invoices with little memory (a cursor is
//! found in O(1); a customer's objects by arithmetic); only objects changed or created
//! are kept. Unchanged generated invoices, payment intents and charges are written to a
//! list page straight from typed structs (about 1 ms for 100 invoices in a release
//! build), everything else through `serde_json::Value`; both give the same JSON.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get, post};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Months, Utc};
use hmac::{KeyInit, Mac};
use mspbridge_sandbox::names::{company_name, web_domain};
use mspbridge_sandbox::{Faults, Rng, SandboxHandle, Seed, VendorRateLimit};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use super::STRIPE_VERSION;
use crate::outbound::OutboundPolicy;

/// Full access, test mode.
pub const DEMO_SECRET_KEY: &str = "sk_test_51MspBridgeDemoSecretKey";
/// Test mode, with exactly [`DEMO_RESTRICTED_PERMISSIONS`].
pub const DEMO_RESTRICTED_KEY: &str = "rk_test_51MspBridgeDemoRestricted";
/// The signing secret of endpoints the tests add by hand ([`StripeSandbox::add_endpoint`]).
pub const DEMO_WEBHOOK_SECRET: &str = "whsec_mspbridgeDemoSigningSecret";
/// The permissions of [`DEMO_RESTRICTED_KEY`] (a `_write` permission includes its `_read`).
pub const DEMO_RESTRICTED_PERMISSIONS: [&str; 12] = [
    "customer_read",
    "customer_write",
    "invoice_read",
    "subscription_read",
    "subscription_write",
    "payment_intent_read",
    "charge_read",
    "price_read",
    "product_read",
    "billing_portal_write",
    "webhook_endpoint_read",
    "webhook_endpoint_write",
];
/// The sandbox's Stripe account.
pub const ACCOUNT_ID: &str = "acct_1MspBridgeDemo";
/// The account's business name, as the hosted pages show it.
pub const ACCOUNT_NAME: &str = "MSP Demo Ltd";

const TEST_RATE: usize = 25;
const LIVE_RATE: usize = 100;
const DAY: i64 = 86_400;
/// Two years, the span seeded objects are spread over.
const SPAN: i64 = 730 * DAY;
/// Marks the ids of generated objects: `cus_MspB` + the index in base 36.
const TAG: &str = "MspB";
/// Marks the ids of objects created while the sandbox runs.
const NEW_TAG: &str = "MspN";
const ID_DIGITS: usize = 10;
const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);
const RATE_LIMIT_MESSAGE: &str = "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.";

/// One API request as the sandbox received it (hosted pages are not recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    /// The raw query string.
    pub query: String,
    /// The raw form body.
    pub body: String,
    pub stripe_version: Option<String>,
    pub idempotency_key: Option<String>,
    pub status: u16,
}

/// A customer as tests see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxCustomer {
    pub id: String,
    /// Empty when the customer has no name.
    pub name: String,
    pub email: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now() -> i64 {
    Utc::now().timestamp()
}

// ---------------------------------------------------------------------------------------
// Ids and encodings

fn base36(mut n: u64, width: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut buf = vec![b'0'; width];
    let mut i = width;
    while n > 0 && i > 0 {
        i -= 1;
        buf[i] = DIGITS[(n % 36) as usize];
        n /= 36;
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// `len` letters and digits derived from `seed`.
fn alnum(seed: u64, len: usize) -> String {
    const CHARS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut r = Rng::new(seed);
    (0..len)
        .map(|_| CHARS[r.below(62) as usize] as char)
        .collect()
}

/// The id of the generated object at `index`: `cus_MspB000000002s`.
fn gen_id(prefix: &str, index: usize) -> String {
    format!("{prefix}_{TAG}{}", base36(index as u64, ID_DIGITS))
}

fn parse_base36(s: &str) -> Option<usize> {
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    {
        return None;
    }
    usize::from_str_radix(s, 36).ok()
}

/// The index a generated id encodes.
fn decode_gen(prefix: &str, id: &str) -> Option<usize> {
    let rest = id
        .strip_prefix(prefix)?
        .strip_prefix('_')?
        .strip_prefix(TAG)?;
    if rest.len() != ID_DIGITS {
        return None;
    }
    parse_base36(rest)
}

/// A sub-object of a generated object (`si_MspB…` + item number).
fn gen_sub_id(prefix: &str, index: usize, k: usize) -> String {
    format!("{}{k}", gen_id(prefix, index))
}

fn decode_sub_id(prefix: &str, id: &str) -> Option<(usize, usize)> {
    let rest = id
        .strip_prefix(prefix)?
        .strip_prefix('_')?
        .strip_prefix(TAG)?;
    if rest.len() != ID_DIGITS + 1 {
        return None;
    }
    let (idx, k) = rest.split_at(ID_DIGITS);
    Some((parse_base36(idx)?, k.parse().ok()?))
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn hmac_hex(key: &[u8], message: &[u8]) -> String {
    match <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(message);
            hex(&mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

fn sha_hex(s: &str) -> String {
    hex(&Sha256::digest(s.as_bytes()))
}

/// The `Stripe-Signature` header of `body` signed at `t`: a `v1` per valid secret, then a
/// `v0` receivers must ignore.
pub fn signature_header(t: i64, body: &str, secrets: &[&str]) -> String {
    let payload = format!("{t}.{body}");
    let mut out = format!("t={t}");
    for s in secrets {
        let _ = write!(out, ",v1={}", hmac_hex(s.as_bytes(), payload.as_bytes()));
    }
    if let Some(first) = secrets.first() {
        let _ = write!(
            out,
            ",v0={}",
            hmac_hex(format!("v0:{first}").as_bytes(), payload.as_bytes())
        );
    }
    out
}

/// Percent- and `+`-decoding; `None` for malformed escapes or non-UTF-8.
fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Form bodies and query strings with bracket nesting

#[derive(Debug)]
enum Seg {
    Key(String),
    Push,
}

/// `a[b][0][]` → (`a`, [b, 0, push]); `None` when the brackets are malformed.
fn split_key(key: &str) -> Option<(String, Vec<Seg>)> {
    let (base, mut rest) = match key.find('[') {
        Some(i) => (&key[..i], &key[i..]),
        None => (key, ""),
    };
    if base.is_empty() {
        return None;
    }
    let mut segs = Vec::new();
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let end = inner.find(']')?;
        let name = &inner[..end];
        segs.push(if name.is_empty() {
            Seg::Push
        } else {
            Seg::Key(name.to_string())
        });
        rest = &inner[end + 1..];
    }
    Some((base.to_string(), segs))
}

fn put(slot: &mut Value, segs: &[Seg], value: Value) -> bool {
    match segs.split_first() {
        None => {
            if slot.is_object() || slot.is_array() {
                return false;
            }
            *slot = value;
            true
        }
        Some((Seg::Key(k), rest)) => {
            if slot.is_null() {
                *slot = Value::Object(Map::new());
            }
            match slot {
                Value::Object(m) => put(m.entry(k.clone()).or_insert(Value::Null), rest, value),
                _ => false,
            }
        }
        Some((Seg::Push, rest)) => {
            if slot.is_null() {
                *slot = Value::Array(Vec::new());
            }
            let Value::Array(a) = slot else {
                return false;
            };
            if rest.is_empty() {
                a.push(value);
                return true;
            }
            // `a[][b]=1&a[][c]=2` fills one element; a field seen again starts the next.
            let fresh = match (a.last(), rest.first()) {
                (Some(Value::Object(last)), Some(Seg::Key(k))) => last.contains_key(k),
                (Some(_), _) => false,
                (None, _) => true,
            };
            if fresh {
                a.push(Value::Null);
            }
            match a.last_mut() {
                Some(last) => put(last, rest, value),
                None => false,
            }
        }
    }
}

/// Objects whose keys are all indexes become arrays (`a[0][b]=c` → `{"a":[{"b":"c"}]}`),
/// except `metadata`, whose keys are the caller's.
fn normalize(v: Value, under_metadata: bool) -> Value {
    match v {
        Value::Object(m) => {
            let numeric = !under_metadata
                && !m.is_empty()
                && m.keys().all(|k| {
                    !k.is_empty() && k.len() < 10 && k.bytes().all(|b| b.is_ascii_digit())
                });
            if numeric {
                let mut items: Vec<(usize, Value)> = m
                    .into_iter()
                    .map(|(k, v)| (k.parse().unwrap_or(0), normalize(v, false)))
                    .collect();
                items.sort_by_key(|(i, _)| *i);
                Value::Array(items.into_iter().map(|(_, v)| v).collect())
            } else {
                Value::Object(
                    m.into_iter()
                        .map(|(k, v)| {
                            let meta = k == "metadata";
                            (k, normalize(v, meta))
                        })
                        .collect(),
                )
            }
        }
        Value::Array(a) => Value::Array(a.into_iter().map(|x| normalize(x, false)).collect()),
        other => other,
    }
}

/// Parses `application/x-www-form-urlencoded` text with Stripe's bracket nesting into
/// JSON (every leaf a string). `Err` names the key that could not be read.
pub fn parse_form(text: &str) -> Result<Map<String, Value>, String> {
    let mut root = Value::Object(Map::new());
    for part in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let key = decode(k).ok_or_else(|| k.to_string())?;
        let value = decode(v).ok_or_else(|| key.clone())?;
        let (base, segs) = split_key(&key).ok_or_else(|| key.clone())?;
        let mut full = vec![Seg::Key(base)];
        full.extend(segs);
        if !put(&mut root, &full, Value::String(value)) {
            return Err(key);
        }
    }
    match normalize(root, false) {
        Value::Object(m) => Ok(m),
        _ => Ok(Map::new()),
    }
}

/// `application/x-www-form-urlencoded` encoding of one value.
#[cfg(test)]
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            b => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The catalogue: products and prices

struct ProductDef {
    id: &'static str,
    name: &'static str,
    description: &'static str,
    unit_label: Option<&'static str>,
    default_price: &'static str,
    days_ago: i64,
}

struct PriceDef {
    id: &'static str,
    /// Index into [`PRODUCTS`].
    product: usize,
    currency: &'static str,
    unit_amount: i64,
    recurring: bool,
    active: bool,
    lookup_key: Option<&'static str>,
    nickname: Option<&'static str>,
    days_ago: i64,
}

const PRODUCTS: [ProductDef; 5] = [
    ProductDef {
        id: "prod_MspBOnboarding",
        name: "Onboarding Project",
        description: "Onboarding of a new client: documentation, agents, first audit.",
        unit_label: None,
        default_price: "price_1MspBOnboardingUsd",
        days_ago: 400,
    },
    ProductDef {
        id: "prod_MspBOnSiteSupport",
        name: "On-site Support",
        description: "On-site support, billed by the hour.",
        unit_label: Some("hour"),
        default_price: "price_1MspBSupportHourUsd",
        days_ago: 500,
    },
    ProductDef {
        id: "prod_MspBBackupStorage",
        name: "Backup Storage",
        description: "Off-site backup storage, per terabyte.",
        unit_label: Some("TB"),
        default_price: "price_1MspBBackupTbUsd",
        days_ago: 600,
    },
    ProductDef {
        id: "prod_MspBPremiumTraining",
        name: "Premium Training",
        description: "Security awareness and Microsoft 365 training, per user.",
        unit_label: Some("user"),
        default_price: "price_1MspBTrainingUsd",
        days_ago: 700,
    },
    ProductDef {
        id: "prod_MspBManagedServices",
        name: "Managed Services",
        description: "Monitoring, patching, help desk and backup checks, per seat.",
        unit_label: Some("seat"),
        default_price: "price_1MspBManagedUsd",
        days_ago: 800,
    },
];

const P_ONBOARDING: usize = 0;
const P_SUPPORT: usize = 1;
const P_BACKUP: usize = 2;
const P_TRAINING: usize = 3;
const P_MANAGED: usize = 4;

/// Newest first.
const PRICES: [PriceDef; 8] = [
    PriceDef {
        id: "price_1MspBOnboardingUsd",
        product: P_ONBOARDING,
        currency: "usd",
        unit_amount: 150_000,
        recurring: false,
        active: true,
        lookup_key: None,
        nickname: Some("Onboarding project"),
        days_ago: 400,
    },
    PriceDef {
        id: "price_1MspBSupportHourUsd",
        product: P_SUPPORT,
        currency: "usd",
        unit_amount: 12_500,
        recurring: false,
        active: true,
        lookup_key: Some("onsite_support_hour"),
        nickname: Some("Per hour"),
        days_ago: 500,
    },
    PriceDef {
        id: "price_1MspBBackupTbUsd",
        product: P_BACKUP,
        currency: "usd",
        unit_amount: 2_500,
        recurring: true,
        active: true,
        lookup_key: Some("backup_storage_tb"),
        nickname: Some("Per TB, monthly"),
        days_ago: 600,
    },
    PriceDef {
        id: "price_1MspBTrainingUsd",
        product: P_TRAINING,
        currency: "usd",
        unit_amount: 800,
        recurring: true,
        active: true,
        lookup_key: Some("premium_training"),
        nickname: Some("Per user, monthly"),
        days_ago: 700,
    },
    PriceDef {
        id: "price_1MspBManagedJpy",
        product: P_MANAGED,
        currency: "jpy",
        unit_amount: 6_500,
        recurring: true,
        active: true,
        lookup_key: Some("managed_services_jpy"),
        nickname: Some("Per seat, monthly (JPY)"),
        days_ago: 780,
    },
    PriceDef {
        id: "price_1MspBManagedEur",
        product: P_MANAGED,
        currency: "eur",
        unit_amount: 4_200,
        recurring: true,
        active: true,
        lookup_key: Some("managed_services_eur"),
        nickname: Some("Per seat, monthly (EUR)"),
        days_ago: 790,
    },
    PriceDef {
        id: "price_1MspBManagedUsd",
        product: P_MANAGED,
        currency: "usd",
        unit_amount: 4_500,
        recurring: true,
        active: true,
        lookup_key: Some("managed_services"),
        nickname: Some("Per seat, monthly"),
        days_ago: 800,
    },
    PriceDef {
        id: "price_1MspBManagedLegacy",
        product: P_MANAGED,
        currency: "usd",
        unit_amount: 3_900,
        recurring: true,
        active: false,
        lookup_key: None,
        nickname: Some("Per seat, monthly (2023 list price)"),
        days_ago: 1_100,
    },
];

fn price_by_id(id: &str) -> Option<&'static PriceDef> {
    PRICES.iter().find(|p| p.id == id)
}

fn product_by_id(id: &str) -> Option<&'static ProductDef> {
    PRODUCTS.iter().find(|p| p.id == id)
}

/// What an invoice line or subscription item bills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    Managed,
    Training,
    Support,
    Onboarding,
}

impl Line {
    fn price(self, currency: &str) -> &'static PriceDef {
        let id = match (self, currency) {
            (Line::Managed, "eur") => "price_1MspBManagedEur",
            (Line::Managed, "jpy") => "price_1MspBManagedJpy",
            (Line::Managed, _) => "price_1MspBManagedUsd",
            (Line::Training, _) => "price_1MspBTrainingUsd",
            (Line::Support, _) => "price_1MspBSupportHourUsd",
            (Line::Onboarding, _) => "price_1MspBOnboardingUsd",
        };
        price_by_id(id).unwrap_or(&PRICES[6])
    }

    fn recurring(self) -> bool {
        matches!(self, Line::Managed | Line::Training)
    }
}

fn lines_total(lines: &[(Line, u32)], currency: &str) -> i64 {
    lines
        .iter()
        .map(|(l, q)| l.price(currency).unit_amount * i64::from(*q))
        .sum()
}

// ---------------------------------------------------------------------------------------
// Seeded objects, computed from their position

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InvStatus {
    Draft,
    Open,
    Paid,
    Void,
    Uncollectible,
}

impl InvStatus {
    fn as_str(self) -> &'static str {
        match self {
            InvStatus::Draft => "draft",
            InvStatus::Open => "open",
            InvStatus::Paid => "paid",
            InvStatus::Void => "void",
            InvStatus::Uncollectible => "uncollectible",
        }
    }
}

#[derive(Debug, Clone)]
struct CustomerSpec {
    name: String,
    email: Option<String>,
    currency: Option<&'static str>,
    created: i64,
    deleted: bool,
    delinquent: bool,
    invoices: u32,
}

#[derive(Debug, Clone)]
struct InvoiceSpec {
    customer: usize,
    subscription: Option<usize>,
    /// `None` for drafts.
    number: Option<u64>,
    status: InvStatus,
    created: i64,
    due_date: Option<i64>,
    charge_auto: bool,
    currency: &'static str,
    lines: Vec<(Line, u32)>,
    attempt_count: u32,
    paid_at: Option<i64>,
    /// When it was voided or marked uncollectible.
    closed_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PiStatus {
    Succeeded,
    Failed,
    Processing,
}

#[derive(Debug, Clone)]
struct PiSpec {
    customer: usize,
    invoice: Option<usize>,
    amount: i64,
    currency: &'static str,
    status: PiStatus,
    created: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubStatus {
    Active,
    PastDue,
    Trialing,
    Canceled,
}

impl SubStatus {
    fn as_str(self) -> &'static str {
        match self {
            SubStatus::Active => "active",
            SubStatus::PastDue => "past_due",
            SubStatus::Trialing => "trialing",
            SubStatus::Canceled => "canceled",
        }
    }
}

#[derive(Debug, Clone)]
struct SubSpec {
    customer: usize,
    status: SubStatus,
    created: i64,
    currency: &'static str,
    seats: u32,
    training: u32,
    trial: Option<(i64, i64)>,
    cancel_at_period_end: bool,
    canceled_at: Option<i64>,
    latest_invoice: Option<usize>,
    charge_auto: bool,
}

/// The demo's (or a seed size's) objects, sorted newest first, with per-customer indexes.
struct Seeded {
    customers: Vec<CustomerSpec>,
    invoices: Vec<InvoiceSpec>,
    subs: Vec<SubSpec>,
    pis: Vec<PiSpec>,
    inv_of: Vec<Vec<usize>>,
    sub_of: Vec<Vec<usize>>,
    pi_of: Vec<Vec<usize>>,
}

/// Benchmark sizes: every object computed from its index alone.
struct Sized {
    c: usize,
    i: usize,
    p: usize,
    start: i64,
}

enum World {
    Seeded(Seeded),
    Sized(Sized),
}

fn step(n: usize) -> i64 {
    (SPAN / n.max(1) as i64).max(1)
}

impl Sized {
    fn seats(k: usize) -> u32 {
        5 + (k * 7 % 36) as u32
    }

    fn training(k: usize) -> u32 {
        if k % 3 == 1 { 3 + (k % 8) as u32 } else { 0 }
    }

    fn lines(k: usize) -> Vec<(Line, u32)> {
        let mut l = vec![(Line::Managed, Self::seats(k))];
        if Self::training(k) > 0 {
            l.push((Line::Training, Self::training(k)));
        }
        l
    }

    fn customer(&self, k: usize) -> CustomerSpec {
        let mut r = Rng::new(0x5EED_C057 ^ (k as u64).wrapping_mul(0x9E37_79B9));
        let name = company_name(&mut r, k);
        let invoices = self.i / self.c.max(1) + usize::from(k < self.i % self.c.max(1));
        CustomerSpec {
            email: Some(format!("billing@{}", web_domain(&name))),
            name,
            currency: Some("usd"),
            created: self.start - DAY - k as i64 * step(self.c),
            deleted: false,
            delinquent: false,
            invoices: invoices as u32,
        }
    }

    fn invoice(&self, g: usize) -> InvoiceSpec {
        let k = g % self.c.max(1);
        let created = self.start - 3_600 - g as i64 * step(self.i);
        let status = if g % 1_000 == 7 {
            InvStatus::Void
        } else if g % 1_000 == 13 {
            InvStatus::Uncollectible
        } else if g % 97 == 5 {
            InvStatus::Draft
        } else if g.is_multiple_of(17) {
            InvStatus::Open
        } else {
            InvStatus::Paid
        };
        let settled = (created + DAY).min(self.start - 60);
        InvoiceSpec {
            customer: k,
            subscription: Some(k),
            number: (status != InvStatus::Draft).then_some((self.i - g) as u64),
            status,
            created,
            due_date: Some(created + 30 * DAY),
            charge_auto: false,
            currency: "usd",
            lines: Self::lines(k),
            attempt_count: u32::from(matches!(status, InvStatus::Paid | InvStatus::Uncollectible)),
            paid_at: (status == InvStatus::Paid).then_some(settled),
            closed_at: matches!(status, InvStatus::Void | InvStatus::Uncollectible)
                .then_some(settled),
        }
    }

    fn sub(&self, k: usize) -> SubSpec {
        let created = self.start - DAY - k as i64 * step(self.c) + 3_600;
        let status = if k % 50 == 9 {
            SubStatus::Canceled
        } else if k % 20 == 3 {
            SubStatus::PastDue
        } else {
            SubStatus::Active
        };
        SubSpec {
            customer: k,
            status,
            created,
            currency: "usd",
            seats: Self::seats(k),
            training: Self::training(k),
            trial: None,
            cancel_at_period_end: false,
            canceled_at: (status == SubStatus::Canceled)
                .then_some(created + (self.start - created) / 2),
            latest_invoice: (k < self.i).then_some(k),
            charge_auto: false,
        }
    }

    fn pi(&self, q: usize) -> PiSpec {
        let k = q % self.c.max(1);
        let status = if q % 500 == 9 {
            PiStatus::Processing
        } else if q % 50 == 3 {
            PiStatus::Failed
        } else {
            PiStatus::Succeeded
        };
        PiSpec {
            customer: k,
            invoice: (q < self.i).then_some(q),
            amount: lines_total(&Self::lines(k), "usd"),
            currency: "usd",
            status,
            created: self.start - 1_800 - q as i64 * step(self.p),
        }
    }
}

impl World {
    fn customers(&self) -> usize {
        match self {
            World::Seeded(s) => s.customers.len(),
            World::Sized(s) => s.c,
        }
    }

    fn customer(&self, k: usize) -> Option<CustomerSpec> {
        match self {
            World::Seeded(s) => s.customers.get(k).cloned(),
            World::Sized(s) => (k < s.c).then(|| s.customer(k)),
        }
    }

    fn invoices(&self) -> usize {
        match self {
            World::Seeded(s) => s.invoices.len(),
            World::Sized(s) => s.i,
        }
    }

    fn invoice(&self, g: usize) -> Option<InvoiceSpec> {
        match self {
            World::Seeded(s) => s.invoices.get(g).cloned(),
            World::Sized(s) => (g < s.i).then(|| s.invoice(g)),
        }
    }

    fn invoices_of(&self, k: usize) -> Vec<usize> {
        match self {
            World::Seeded(s) => s.inv_of.get(k).cloned().unwrap_or_default(),
            World::Sized(s) if k < s.c => (k..s.i).step_by(s.c).collect(),
            World::Sized(_) => Vec::new(),
        }
    }

    fn subs(&self) -> usize {
        match self {
            World::Seeded(s) => s.subs.len(),
            World::Sized(s) => s.c,
        }
    }

    fn sub(&self, g: usize) -> Option<SubSpec> {
        match self {
            World::Seeded(s) => s.subs.get(g).cloned(),
            World::Sized(s) => (g < s.c).then(|| s.sub(g)),
        }
    }

    fn subs_of(&self, k: usize) -> Vec<usize> {
        match self {
            World::Seeded(s) => s.sub_of.get(k).cloned().unwrap_or_default(),
            World::Sized(s) if k < s.c => vec![k],
            World::Sized(_) => Vec::new(),
        }
    }

    fn pis(&self) -> usize {
        match self {
            World::Seeded(s) => s.pis.len(),
            World::Sized(s) => s.p,
        }
    }

    fn pi(&self, g: usize) -> Option<PiSpec> {
        match self {
            World::Seeded(s) => s.pis.get(g).cloned(),
            World::Sized(s) => (g < s.p).then(|| s.pi(g)),
        }
    }

    fn pis_of(&self, k: usize) -> Vec<usize> {
        match self {
            World::Seeded(s) => s.pi_of.get(k).cloned().unwrap_or_default(),
            World::Sized(s) if k < s.c => (k..s.p).step_by(s.c).collect(),
            World::Sized(_) => Vec::new(),
        }
    }
}

/// An invoice before sorting: customer by seed order.
struct RawInvoice {
    customer: usize,
    spec: InvoiceSpec,
    payments: Vec<(PiStatus, i64)>,
}

/// The demo data (see the module documentation), relative to `start`.
fn seeded(seed: Seed, start: i64) -> Seeded {
    let autotask = crate::autotask::sandbox::generate(Seed::Small).companies;
    let small = seed == Seed::Small;
    let n = match seed {
        Seed::Small => autotask.len(),
        Seed::Large => 2_000,
        Seed::Companies(n) => n as usize,
    };
    let mut rng = Rng::new(0x5791_BE00);
    let mut names = Rng::new(0x5791_0A3E);
    let mut customers: Vec<CustomerSpec> = Vec::new();
    let mut subs: Vec<(usize, SubSpec)> = Vec::new();
    let mut raw: Vec<RawInvoice> = Vec::new();
    for k in 0..n {
        let name = match autotask.get(k) {
            Some(c) => c.company_name.clone(),
            None => company_name(&mut names, k),
        };
        let role = k % 12;
        let currency = match k {
            1 => "eur",
            2 => "jpy",
            _ => "usd",
        };
        let created = start - DAY * (320 + rng.below(400) as i64) - rng.below(DAY as u64) as i64;
        let seats = 5 + rng.below(36) as u32;
        let training = if currency == "usd" && k % 3 != 2 {
            3 + rng.below(8) as u32
        } else {
            0
        };
        let count = 3 + rng.below(6) as usize;
        let cycle = 1 + rng.below(27) as i64;
        let past_due = role == 3 || role == 8;
        let trialing = role == 5;
        let canceled = role == 9;
        let shift = if canceled { 60 } else { 0 };
        let plain = !trialing && !canceled && !past_due;
        for j in 0..count {
            let mut created_j =
                start - DAY * (cycle + 30 * j as i64 + shift) - 3_600 * (1 + rng.below(12) as i64);
            let lines = if trialing {
                vec![(Line::Onboarding, 1)]
            } else {
                let mut l = vec![(Line::Managed, seats.saturating_sub(j as u32 / 2).max(1))];
                if training > 0 {
                    l.push((Line::Training, training));
                }
                l
            };
            let mut spec = InvoiceSpec {
                customer: k,
                subscription: None,
                number: None,
                status: InvStatus::Paid,
                created: created_j,
                due_date: (!past_due).then_some(created_j + 30 * DAY),
                charge_auto: past_due,
                currency,
                lines,
                attempt_count: 0,
                paid_at: None,
                closed_at: None,
            };
            let mut payments = Vec::new();
            if past_due && j == 0 {
                spec.status = InvStatus::Open;
                spec.attempt_count = 2;
                payments.push((PiStatus::Failed, created_j + 3_600));
            } else if plain && k % 5 == 2 && j == 0 {
                spec.status = InvStatus::Draft;
                created_j = start - 3_600 * (2 + rng.below(30) as i64);
                spec.created = created_j;
                spec.due_date = Some(created_j + 30 * DAY);
            } else if plain && matches!(role, 0 | 4 | 6 | 10) && j == 0 {
                spec.status = InvStatus::Open;
                if k % 24 == 0 {
                    payments.push((PiStatus::Processing, start - DAY));
                }
            } else if plain && matches!(role, 1 | 7 | 11) && j == 1 {
                let ago = 10 + rng.below(51) as i64;
                spec.status = InvStatus::Open;
                spec.due_date = Some(start - ago * DAY);
                spec.created = start - (ago + 30) * DAY - 3_600 * (1 + rng.below(12) as i64);
            } else if k % 50 == 1 && j + 1 == count {
                spec.status = InvStatus::Void;
                spec.closed_at = Some(created_j + 2 * DAY);
            } else if k % 50 == 6 && j == 2 {
                spec.status = InvStatus::Uncollectible;
                spec.attempt_count = 1;
                spec.closed_at = Some((created_j + 40 * DAY).min(start - 600));
                payments.push((PiStatus::Failed, created_j + 3 * DAY));
            } else {
                let delay = if past_due {
                    3_600
                } else {
                    DAY * (1 + rng.below(9) as i64)
                };
                let paid = (created_j + delay).min(start - 600);
                spec.paid_at = Some(paid);
                spec.attempt_count = 1;
                if k % 7 == 2 && j == 1 {
                    payments.push((PiStatus::Failed, paid - 1_800));
                    spec.attempt_count = 2;
                }
                payments.push((PiStatus::Succeeded, paid));
            }
            if !trialing {
                spec.subscription = Some(k);
            }
            raw.push(RawInvoice {
                customer: k,
                spec,
                payments,
            });
        }
        let sub_created = if trialing {
            start - 10 * DAY
        } else {
            created + DAY
        };
        subs.push((
            k,
            SubSpec {
                customer: k,
                status: if past_due {
                    SubStatus::PastDue
                } else if trialing {
                    SubStatus::Trialing
                } else if canceled {
                    SubStatus::Canceled
                } else {
                    SubStatus::Active
                },
                created: sub_created,
                currency,
                seats,
                training,
                trial: trialing.then_some((start - 10 * DAY, start + 20 * DAY)),
                cancel_at_period_end: role == 4,
                canceled_at: canceled.then_some(start - 45 * DAY),
                latest_invoice: None,
                charge_auto: past_due,
            },
        ));
        customers.push(CustomerSpec {
            email: Some(format!("billing@{}", web_domain(&name))),
            name,
            currency: Some(currency),
            created,
            deleted: false,
            delinquent: past_due || (plain && matches!(role, 1 | 7 | 11)),
            invoices: count as u32,
        });
    }
    if small {
        let k = customers.len();
        let created = start - 300 * DAY - 7_200;
        for j in 0..3i64 {
            let c = start - DAY * (20 + 45 * j) - 5_400;
            raw.push(RawInvoice {
                customer: k,
                spec: InvoiceSpec {
                    customer: k,
                    subscription: None,
                    number: None,
                    status: InvStatus::Paid,
                    created: c,
                    due_date: None,
                    charge_auto: true,
                    currency: "usd",
                    lines: vec![(Line::Support, 2 + (j as u32 * 3))],
                    attempt_count: 1,
                    paid_at: Some(c + 3_600),
                    closed_at: None,
                },
                payments: vec![(PiStatus::Succeeded, c + 3_600)],
            });
        }
        customers.push(CustomerSpec {
            name: "Walk-in Customer".into(),
            email: None,
            currency: Some("usd"),
            created,
            deleted: false,
            delinquent: false,
            invoices: 3,
        });
        customers.push(CustomerSpec {
            name: "Old Client Ltd".into(),
            email: Some("accounts@oldclient.example".into()),
            currency: Some("usd"),
            created: start - 700 * DAY,
            deleted: true,
            delinquent: false,
            invoices: 0,
        });
    }
    // Newest first, everywhere.
    let mut order: Vec<usize> = (0..customers.len()).collect();
    order.sort_by_key(|&k| (std::cmp::Reverse(customers[k].created), k));
    let mut cpos = vec![0usize; customers.len()];
    for (pos, &k) in order.iter().enumerate() {
        cpos[k] = pos;
    }
    subs.sort_by_key(|(k, s)| (std::cmp::Reverse(s.created), *k));
    let mut spos: HashMap<usize, usize> = HashMap::new();
    for (pos, (k, _)) in subs.iter().enumerate() {
        spos.insert(*k, pos);
    }
    raw.sort_by_key(|r| (std::cmp::Reverse(r.spec.created), r.customer));
    // Numbers in the order invoices were finalized: the oldest is MSPD-0001.
    let mut number = 0u64;
    for r in raw.iter_mut().rev() {
        if r.spec.status != InvStatus::Draft {
            number += 1;
            r.spec.number = Some(number);
        }
    }
    let mut inv_of = vec![Vec::new(); customers.len()];
    let mut latest: HashMap<usize, usize> = HashMap::new();
    let mut pis_raw: Vec<(i64, usize, PiSpec)> = Vec::new();
    let mut invoices = Vec::with_capacity(raw.len());
    for (pos, r) in raw.into_iter().enumerate() {
        let mut spec = r.spec;
        spec.customer = cpos[r.customer];
        spec.subscription = spec.subscription.and_then(|k| spos.get(&k).copied());
        inv_of[spec.customer].push(pos);
        if spec.subscription.is_some() {
            latest.entry(r.customer).or_insert(pos);
        }
        let total = lines_total(&spec.lines, spec.currency);
        for (status, created) in r.payments {
            pis_raw.push((
                created,
                pos,
                PiSpec {
                    customer: spec.customer,
                    invoice: Some(pos),
                    amount: total,
                    currency: spec.currency,
                    status,
                    created,
                },
            ));
        }
        invoices.push(spec);
    }
    let subs: Vec<SubSpec> = subs
        .into_iter()
        .map(|(k, mut s)| {
            s.customer = cpos[k];
            s.latest_invoice = latest.get(&k).copied();
            s
        })
        .collect();
    let mut sub_of = vec![Vec::new(); customers.len()];
    for (pos, s) in subs.iter().enumerate() {
        sub_of[s.customer].push(pos);
    }
    pis_raw.sort_by_key(|(created, inv, _)| (std::cmp::Reverse(*created), *inv));
    let pis: Vec<PiSpec> = pis_raw.into_iter().map(|(_, _, p)| p).collect();
    let mut pi_of = vec![Vec::new(); customers.len()];
    for (pos, p) in pis.iter().enumerate() {
        pi_of[p.customer].push(pos);
    }
    let customers = order.into_iter().map(|k| customers[k].clone()).collect();
    Seeded {
        customers,
        invoices,
        subs,
        pis,
        inv_of,
        sub_of,
        pi_of,
    }
}

// ---------------------------------------------------------------------------------------
// Sandbox state

/// A webhook endpoint.
#[derive(Debug, Clone)]
struct Endpoint {
    id: String,
    url: String,
    enabled_events: Vec<String>,
    api_version: Option<String>,
    description: Option<String>,
    metadata: Map<String, Value>,
    enabled: bool,
    livemode: bool,
    created: i64,
    secret: String,
    /// The secret before the last roll, valid until `expire_old_secrets`.
    old_secret: Option<String>,
}

impl Endpoint {
    fn wants(&self, event_type: &str) -> bool {
        self.enabled
            && self
                .enabled_events
                .iter()
                .any(|e| e == "*" || e == event_type)
    }

    fn json(&self, with_secret: bool) -> Value {
        let mut v = json!({
            "id": self.id,
            "object": "webhook_endpoint",
            "api_version": self.api_version,
            "application": null,
            "created": self.created,
            "description": self.description,
            "enabled_events": self.enabled_events,
            "livemode": self.livemode,
            "metadata": self.metadata,
            "status": if self.enabled { "enabled" } else { "disabled" },
            "url": self.url,
        });
        if with_secret {
            v["secret"] = json!(self.secret);
        }
        v
    }
}

/// A billing portal session.
#[derive(Debug, Clone)]
struct Session {
    customer: String,
    return_url: Option<String>,
}

/// A saved idempotent answer.
#[derive(Debug, Clone)]
struct Saved {
    /// Method, path and parsed parameters of the first request.
    request: Value,
    status: u16,
    body: Vec<u8>,
    request_id: String,
    at: Instant,
}

/// One webhook delivery to make (with its retries).
#[derive(Debug, Clone)]
struct Outgoing {
    event_id: String,
    endpoint_id: String,
    body: String,
}

#[derive(Default)]
struct Store {
    /// Customers changed or created, by id (their current value).
    customers: HashMap<String, Value>,
    deleted: HashSet<String>,
    /// Created customers, oldest first.
    added_customers: Vec<String>,
    invoices: HashMap<String, Value>,
    subs: HashMap<String, Value>,
    pis: HashMap<String, Value>,
    charges: HashMap<String, Value>,
    /// Created payment intents, oldest first, with their charge.
    added_pis: Vec<(String, String)>,
    /// Events, oldest first.
    events: Vec<Value>,
    event_pos: HashMap<String, usize>,
    /// The bodies each event was sent with, per endpoint.
    bodies: HashMap<String, Vec<(String, String)>>,
    /// Endpoints an event has not yet been delivered to.
    pending: HashMap<String, u32>,
    /// Oldest first.
    endpoints: Vec<Endpoint>,
    /// (API key, idempotency key) → the saved answer.
    idempotency: HashMap<(String, String), Saved>,
    /// Restricted keys added by tests → permissions.
    restricted: HashMap<String, BTreeSet<String>>,
    sessions: HashMap<String, Session>,
    lose_next: Vec<String>,
    seen: Vec<SeenRequest>,
    /// Deliveries to start once the state is unlocked.
    outbox: Vec<Outgoing>,
}

struct Inner {
    world: World,
    /// When the sandbox was made: seeded times are relative to it.
    start: i64,
    faults: Faults,
    state: Mutex<Store>,
    public_base: Mutex<Option<String>>,
    test_limit: VendorRateLimit,
    live_limit: VendorRateLimit,
    requests: AtomicU64,
    throttled: AtomicU64,
    quantity_updates: AtomicU64,
    ids: AtomicU64,
    signature_age: AtomicI64,
    retry_delays: Mutex<Vec<Duration>>,
    deliveries: Mutex<Vec<(String, u32, u16)>>,
    client: OnceLock<reqwest::Client>,
}

/// How an object is shown: the mode of the key that asks and the public address.
#[derive(Debug, Clone)]
struct Ctx {
    live: bool,
    base: String,
}

fn add_months(t: i64, m: u32) -> i64 {
    DateTime::from_timestamp(t, 0)
        .and_then(|d| d.checked_add_months(Months::new(m)))
        .map(|d| d.timestamp())
        .unwrap_or(t + i64::from(m) * 30 * DAY)
}

/// The monthly period (anchored at `anchor`) that contains `at`.
fn period_at(anchor: i64, at: i64) -> (i64, i64) {
    if at < anchor {
        return (anchor, add_months(anchor, 1));
    }
    let mut m = ((at - anchor) / (31 * DAY)).max(0) as u32;
    loop {
        let end = add_months(anchor, m + 1);
        if end > at || m > 100_000 {
            return (add_months(anchor, m), end);
        }
        m += 1;
    }
}

fn zero_decimal(currency: &str) -> bool {
    matches!(
        currency,
        "bif"
            | "clp"
            | "djf"
            | "gnf"
            | "jpy"
            | "kmf"
            | "krw"
            | "mga"
            | "pyg"
            | "rwf"
            | "ugx"
            | "vnd"
            | "vuv"
            | "xaf"
            | "xof"
            | "xpf"
    )
}

fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An amount in the smallest unit as a person reads it: `$1,234.50`, `¥6,500`.
pub fn format_money(amount: i64, currency: &str) -> String {
    let sign = if amount < 0 { "-" } else { "" };
    let a = amount.unsigned_abs();
    let symbol = match currency {
        "usd" => "$".to_string(),
        "eur" => "€".to_string(),
        "gbp" => "£".to_string(),
        "jpy" => "¥".to_string(),
        other => format!("{} ", other.to_ascii_uppercase()),
    };
    if zero_decimal(currency) {
        format!("{sign}{symbol}{}", group_thousands(a))
    } else {
        format!("{sign}{symbol}{}.{:02}", group_thousands(a / 100), a % 100)
    }
}

/// The secret in a hosted invoice URL: the invoice id and a check.
fn invoice_secret(id: &str) -> String {
    let check = sha_hex(&format!("mspbridge-hosted-invoice:{id}"));
    format!(
        "test_{}.{}",
        URL_SAFE_NO_PAD.encode(id),
        check.get(..16).unwrap_or_default()
    )
}

fn invoice_of_secret(secret: &str) -> Option<String> {
    let (b64, _) = secret.strip_prefix("test_")?.split_once('.')?;
    let id = String::from_utf8(URL_SAFE_NO_PAD.decode(b64).ok()?).ok()?;
    (invoice_secret(&id) == secret).then_some(id)
}

fn mark_live(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if k == "livemode" {
                    *x = Value::Bool(true);
                } else {
                    mark_live(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(mark_live),
        _ => {}
    }
}

/// A stored object as the asking key sees it: its mode, URLs on the current address.
fn localize(mut v: Value, ctx: &Ctx) -> Value {
    if ctx.live {
        mark_live(&mut v);
    }
    let id = v["id"].as_str().unwrap_or_default().to_string();
    match v["object"].as_str() {
        Some("invoice") if v["status"] != "draft" => {
            let secret = invoice_secret(&id);
            v["hosted_invoice_url"] = json!(format!("{}/i/{secret}", ctx.base));
            v["invoice_pdf"] = json!(format!("{}/i/{secret}/pdf", ctx.base));
        }
        Some("charge") => v["receipt_url"] = json!(format!("{}/r/{id}", ctx.base)),
        _ => {}
    }
    v
}

/// `a` with the fields of `b` added (large objects are built in parts: `json!` nests
/// one macro call per field).
fn merged(mut a: Value, b: Value) -> Value {
    if let (Value::Object(a), Value::Object(b)) = (&mut a, b) {
        a.extend(b);
    }
    a
}

fn deleted_customer(id: &str) -> Value {
    json!({"id": id, "object": "customer", "deleted": true})
}

fn customer_json(id: &str, c: &CustomerSpec, live: bool) -> Value {
    json!({
        "id": id,
        "object": "customer",
        "address": null,
        "balance": 0,
        "created": c.created,
        "currency": c.currency,
        "default_source": null,
        "delinquent": c.delinquent,
        "description": null,
        "discount": null,
        "email": c.email,
        "invoice_prefix": "MSPD",
        "invoice_settings": {
            "custom_fields": null,
            "default_payment_method": null,
            "footer": null,
            "rendering_options": null,
        },
        "livemode": live,
        "metadata": {},
        "name": (!c.name.is_empty()).then_some(c.name.as_str()),
        "next_invoice_sequence": c.invoices + 1,
        "phone": null,
        "preferred_locales": [],
        "shipping": null,
        "tax_exempt": "none",
        "test_clock": null,
    })
}

fn product_json(p: &ProductDef, start: i64, live: bool) -> Value {
    let created = start - p.days_ago * DAY;
    json!({
        "id": p.id,
        "object": "product",
        "active": true,
        "created": created,
        "default_price": p.default_price,
        "description": p.description,
        "images": [],
        "livemode": live,
        "marketing_features": [],
        "metadata": {},
        "name": p.name,
        "package_dimensions": null,
        "shippable": null,
        "statement_descriptor": null,
        "tax_code": null,
        "type": "service",
        "unit_label": p.unit_label,
        "updated": created + DAY,
        "url": null,
    })
}

fn price_json(p: &PriceDef, start: i64, live: bool) -> Value {
    json!({
        "id": p.id,
        "object": "price",
        "active": p.active,
        "billing_scheme": "per_unit",
        "created": start - p.days_ago * DAY,
        "currency": p.currency,
        "custom_unit_amount": null,
        "livemode": live,
        "lookup_key": p.lookup_key,
        "metadata": {},
        "nickname": p.nickname,
        "product": PRODUCTS[p.product].id,
        "recurring": p.recurring.then(|| json!({
            "interval": "month",
            "interval_count": 1,
            "meter": null,
            "trial_period_days": null,
            "usage_type": "licensed",
        })),
        "tax_behavior": "exclusive",
        "tiers_mode": null,
        "transform_quantity": null,
        "type": if p.recurring { "recurring" } else { "one_time" },
        "unit_amount": p.unit_amount,
        "unit_amount_decimal": p.unit_amount.to_string(),
    })
}

/// The legacy `plan` view of a recurring price, as subscription items still carry it.
fn plan_json(p: &PriceDef, start: i64, live: bool) -> Value {
    json!({
        "id": p.id,
        "object": "plan",
        "active": p.active,
        "amount": p.unit_amount,
        "amount_decimal": p.unit_amount.to_string(),
        "billing_scheme": "per_unit",
        "created": start - p.days_ago * DAY,
        "currency": p.currency,
        "interval": "month",
        "interval_count": 1,
        "livemode": live,
        "metadata": {},
        "meter": null,
        "nickname": p.nickname,
        "product": PRODUCTS[p.product].id,
        "tiers_mode": null,
        "transform_usage": null,
        "trial_period_days": null,
        "usage_type": "licensed",
    })
}

/// A subscription item.
struct ItemView<'a> {
    id: String,
    subscription: &'a str,
    price: &'static PriceDef,
    quantity: u32,
    created: i64,
    period: (i64, i64),
}

fn item_json(i: &ItemView<'_>, start: i64, live: bool) -> Value {
    json!({
        "id": i.id,
        "object": "subscription_item",
        "billing_thresholds": null,
        "created": i.created,
        "current_period_end": i.period.1,
        "current_period_start": i.period.0,
        "discounts": [],
        "metadata": {},
        "plan": plan_json(i.price, start, live),
        "price": price_json(i.price, start, live),
        "quantity": i.quantity,
        "subscription": i.subscription,
        "tax_rates": [],
    })
}

// ---------------------------------------------------------------------------------------
// Typed views of the hot objects: list pages serialize them directly (building a
// `serde_json::Value` per invoice costs far more than writing it). Fields are in
// alphabetical order, as a `Value` (a sorted map) would write them.

/// `null`.
type Null = Option<()>;
const NULL: Null = None;

/// `[]`.
#[derive(Debug, Clone, Copy)]
struct EmptyList;

impl Serialize for EmptyList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_seq(Some(0))?.end()
    }
}

/// `{}`.
#[derive(Debug, Clone, Copy)]
struct EmptyMap;

impl Serialize for EmptyMap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_map(Some(0))?.end()
    }
}

/// An id, or the object when expanded.
#[derive(Serialize)]
#[serde(untagged)]
enum Expandable<T> {
    Id(String),
    Object(T),
}

#[derive(Serialize)]
struct Tip {
    tip: EmptyMap,
}

#[derive(Serialize)]
struct CardBrief<'a> {
    brand: &'a str,
    exp_month: u32,
    exp_year: u32,
    last4: &'a str,
}

#[derive(Serialize)]
struct ErrorMethod<'a> {
    card: CardBrief<'a>,
    customer: &'a str,
    id: String,
    object: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct LastError<'a> {
    charge: &'a str,
    code: &'static str,
    decline_code: &'static str,
    doc_url: &'static str,
    message: &'a str,
    param: Null,
    payment_method: ErrorMethod<'a>,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct PiOut<'a> {
    amount: i64,
    amount_capturable: i64,
    amount_details: Tip,
    amount_received: i64,
    application: Null,
    application_fee_amount: Null,
    automatic_payment_methods: Null,
    canceled_at: Null,
    cancellation_reason: Null,
    capture_method: &'static str,
    client_secret: String,
    confirmation_method: &'static str,
    created: i64,
    currency: &'a str,
    customer: &'a str,
    description: &'a str,
    id: &'a str,
    last_payment_error: Option<LastError<'a>>,
    latest_charge: Expandable<ChargeOut<'a>>,
    livemode: bool,
    metadata: EmptyMap,
    next_action: Null,
    object: &'static str,
    on_behalf_of: Null,
    payment_method: Option<String>,
    payment_method_configuration_details: Null,
    payment_method_options: EmptyMap,
    payment_method_types: [&'static str; 1],
    processing: Null,
    receipt_email: Option<&'a str>,
    review: Null,
    setup_future_usage: Null,
    shipping: Null,
    source: Null,
    statement_descriptor: Null,
    statement_descriptor_suffix: Null,
    status: &'static str,
    transfer_data: Null,
    transfer_group: Null,
}

#[derive(Serialize)]
struct Address {
    city: Null,
    country: Null,
    line1: Null,
    line2: Null,
    postal_code: Null,
    state: Null,
}

const NO_ADDRESS: Address = Address {
    city: NULL,
    country: NULL,
    line1: NULL,
    line2: NULL,
    postal_code: NULL,
    state: NULL,
};

#[derive(Serialize)]
struct BillingDetails<'a> {
    address: Address,
    email: Option<&'a str>,
    name: Option<&'a str>,
    phone: Null,
    tax_id: Null,
}

#[derive(Serialize)]
struct Checks {
    address_line1_check: Null,
    address_postal_code_check: &'static str,
    cvc_check: &'static str,
}

#[derive(Serialize)]
struct CardDetails<'a> {
    amount_authorized: Option<i64>,
    brand: &'a str,
    checks: Checks,
    country: &'static str,
    exp_month: u32,
    exp_year: u32,
    fingerprint: String,
    funding: &'static str,
    last4: &'a str,
    mandate: Null,
    network: &'a str,
    three_d_secure: Null,
    wallet: Null,
}

#[derive(Serialize)]
struct BankDetails {
    account_holder_type: &'static str,
    account_type: &'static str,
    bank_name: &'static str,
    fingerprint: String,
    last4: &'static str,
    routing_number: &'static str,
}

#[derive(Serialize)]
struct MethodDetails<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    card: Option<CardDetails<'a>>,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    us_bank_account: Option<BankDetails>,
}

#[derive(Serialize)]
struct Outcome {
    advice_code: Option<&'static str>,
    network_advice_code: Null,
    network_decline_code: Option<&'static str>,
    network_status: &'static str,
    reason: Option<&'static str>,
    risk_level: &'static str,
    risk_score: u64,
    seller_message: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct Refunds {
    data: EmptyList,
    has_more: bool,
    object: &'static str,
    total_count: u32,
    url: String,
}

#[derive(Serialize)]
struct ChargeOut<'a> {
    amount: i64,
    amount_captured: i64,
    amount_refunded: i64,
    application: Null,
    application_fee: Null,
    application_fee_amount: Null,
    balance_transaction: Option<String>,
    billing_details: BillingDetails<'a>,
    calculated_statement_descriptor: &'static str,
    captured: bool,
    created: i64,
    currency: &'a str,
    customer: &'a str,
    description: &'a str,
    disputed: bool,
    failure_balance_transaction: Null,
    failure_code: Option<&'static str>,
    failure_message: Option<&'a str>,
    fraud_details: EmptyMap,
    id: &'a str,
    livemode: bool,
    metadata: EmptyMap,
    object: &'static str,
    on_behalf_of: Null,
    outcome: Outcome,
    paid: bool,
    payment_intent: &'a str,
    payment_method: String,
    payment_method_details: MethodDetails<'a>,
    receipt_email: Option<&'a str>,
    receipt_number: Null,
    receipt_url: String,
    refunded: bool,
    refunds: Refunds,
    review: Null,
    shipping: Null,
    source_transfer: Null,
    statement_descriptor: Null,
    statement_descriptor_suffix: Null,
    status: &'static str,
    transfer_data: Null,
    transfer_group: Null,
}

#[derive(Serialize)]
struct AutomaticTax {
    disabled_reason: Null,
    enabled: bool,
    liability: Null,
    provider: Null,
    status: Null,
}

#[derive(Serialize)]
struct Issuer {
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct PaymentSettings {
    default_mandate: Null,
    payment_method_options: Null,
    payment_method_types: Null,
}

#[derive(Serialize)]
struct Proration {
    credited_items: Null,
}

#[derive(Serialize)]
struct InvoiceItemDetails {
    invoice_item: String,
    proration: bool,
    proration_details: Proration,
    subscription: Null,
}

#[derive(Serialize)]
struct SubItemDetails {
    invoice_item: Null,
    proration: bool,
    proration_details: Proration,
    subscription: String,
    subscription_item: String,
}

#[derive(Serialize)]
struct LineParent {
    invoice_item_details: Option<InvoiceItemDetails>,
    subscription_item_details: Option<SubItemDetails>,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct Period {
    end: i64,
    start: i64,
}

#[derive(Serialize)]
struct PriceDetails {
    price: &'static str,
    product: &'static str,
}

#[derive(Serialize)]
struct Pricing {
    price_details: PriceDetails,
    #[serde(rename = "type")]
    kind: &'static str,
    unit_amount_decimal: String,
}

#[derive(Serialize)]
struct LineOut {
    amount: i64,
    currency: &'static str,
    description: String,
    discount_amounts: EmptyList,
    discountable: bool,
    discounts: EmptyList,
    id: String,
    invoice: String,
    livemode: bool,
    metadata: EmptyMap,
    object: &'static str,
    parent: LineParent,
    period: Period,
    pretax_credit_amounts: EmptyList,
    pricing: Pricing,
    quantity: u32,
    subtotal: i64,
    taxes: EmptyList,
}

#[derive(Serialize)]
struct LinesOut {
    data: Vec<LineOut>,
    has_more: bool,
    object: &'static str,
    total_count: usize,
    url: String,
}

#[derive(Serialize)]
struct SubDetails {
    metadata: EmptyMap,
    subscription: String,
}

#[derive(Serialize)]
struct InvoiceParent {
    quote_details: Null,
    subscription_details: SubDetails,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct StatusTransitions {
    finalized_at: Option<i64>,
    marked_uncollectible_at: Option<i64>,
    paid_at: Option<i64>,
    voided_at: Option<i64>,
}

#[derive(Serialize)]
struct InvoiceOut {
    account_country: &'static str,
    account_name: &'static str,
    account_tax_ids: Null,
    amount_due: i64,
    amount_overpaid: i64,
    amount_paid: i64,
    amount_remaining: i64,
    amount_shipping: i64,
    application: Null,
    attempt_count: u32,
    attempted: bool,
    auto_advance: bool,
    automatic_tax: AutomaticTax,
    automatically_finalizes_at: Option<i64>,
    billing_reason: &'static str,
    collection_method: &'static str,
    created: i64,
    currency: &'static str,
    custom_fields: Null,
    customer: String,
    customer_address: Null,
    customer_email: Option<String>,
    customer_name: Option<String>,
    customer_phone: Null,
    customer_shipping: Null,
    customer_tax_exempt: &'static str,
    customer_tax_ids: EmptyList,
    default_payment_method: Null,
    default_source: Null,
    default_tax_rates: EmptyList,
    description: Null,
    discounts: EmptyList,
    due_date: Option<i64>,
    effective_at: Option<i64>,
    ending_balance: Option<i64>,
    footer: Null,
    from_invoice: Null,
    hosted_invoice_url: Option<String>,
    id: String,
    invoice_pdf: Option<String>,
    issuer: Issuer,
    last_finalization_error: Null,
    latest_revision: Null,
    lines: LinesOut,
    livemode: bool,
    metadata: EmptyMap,
    next_payment_attempt: Option<i64>,
    number: Option<String>,
    object: &'static str,
    on_behalf_of: Null,
    parent: Option<InvoiceParent>,
    payment_settings: PaymentSettings,
    period_end: i64,
    period_start: i64,
    post_payment_credit_notes_amount: i64,
    pre_payment_credit_notes_amount: i64,
    receipt_number: Null,
    rendering: Null,
    shipping_cost: Null,
    shipping_details: Null,
    starting_balance: i64,
    statement_descriptor: Null,
    status: &'static str,
    status_transitions: StatusTransitions,
    subtotal: i64,
    subtotal_excluding_tax: i64,
    test_clock: Null,
    total: i64,
    total_discount_amounts: EmptyList,
    total_excluding_tax: i64,
    total_pretax_credit_amounts: EmptyList,
    total_taxes: EmptyList,
    webhooks_delivered_at: Option<i64>,
}

fn to_json<T: Serialize>(x: &T) -> Value {
    serde_json::to_value(x).unwrap_or(Value::Null)
}

fn to_pretty<T: Serialize>(x: &T) -> String {
    serde_json::to_string_pretty(x).unwrap_or_default()
}

/// A payment intent and its latest charge, as one attempt to pay.
struct Payment {
    pi_id: String,
    ch_id: String,
    customer: String,
    name: Option<String>,
    email: Option<String>,
    amount: i64,
    currency: String,
    status: PiStatus,
    created: i64,
    description: String,
    /// The decline message of a failed attempt.
    message: Option<String>,
    /// Picks the card.
    seed: u64,
    live: bool,
    base: String,
}

const DECLINE_MESSAGE: &str = "Your card has insufficient funds.";

impl Payment {
    fn card(&self) -> (&'static str, &'static str, u32, u32) {
        if self.status == PiStatus::Failed {
            return ("visa", "9995", 4, 2027);
        }
        match self.seed % 3 {
            0 => ("visa", "4242", 12, 2028),
            1 => ("mastercard", "4444", 8, 2027),
            _ => ("amex", "8431", 3, 2029),
        }
    }

    fn payment_method(&self) -> String {
        format!("pm_{TAG}{}", alnum(self.seed ^ 0x0C4D, 14))
    }

    fn message(&self) -> &str {
        self.message.as_deref().unwrap_or(DECLINE_MESSAGE)
    }

    fn method_details(&self) -> MethodDetails<'_> {
        if self.status == PiStatus::Processing {
            return MethodDetails {
                card: None,
                kind: "us_bank_account",
                us_bank_account: Some(BankDetails {
                    account_holder_type: "company",
                    account_type: "checking",
                    bank_name: "STRIPE TEST BANK",
                    fingerprint: alnum(self.seed ^ 0xBA4C, 16),
                    last4: "6789",
                    routing_number: "110000000",
                }),
            };
        }
        let (brand, last4, exp_month, exp_year) = self.card();
        MethodDetails {
            card: Some(CardDetails {
                amount_authorized: (self.status == PiStatus::Succeeded).then_some(self.amount),
                brand,
                checks: Checks {
                    address_line1_check: NULL,
                    address_postal_code_check: "pass",
                    cvc_check: "pass",
                },
                country: "US",
                exp_month,
                exp_year,
                fingerprint: alnum(self.seed ^ 0xF1A9, 16),
                funding: "credit",
                last4,
                mandate: NULL,
                network: brand,
                three_d_secure: NULL,
                wallet: NULL,
            }),
            kind: "card",
            us_bank_account: None,
        }
    }

    /// The payment intent, its latest charge expanded or not.
    fn pi_out(&self, expand_charge: bool) -> PiOut<'_> {
        let (status, received) = match self.status {
            PiStatus::Succeeded => ("succeeded", self.amount),
            PiStatus::Failed => ("requires_payment_method", 0),
            PiStatus::Processing => ("processing", 0),
        };
        let last_payment_error = (self.status == PiStatus::Failed).then(|| {
            let (brand, last4, exp_month, exp_year) = self.card();
            LastError {
                charge: &self.ch_id,
                code: "card_declined",
                decline_code: "insufficient_funds",
                doc_url: "https://stripe.com/docs/error-codes/card-declined",
                message: self.message(),
                param: NULL,
                payment_method: ErrorMethod {
                    card: CardBrief {
                        brand,
                        exp_month,
                        exp_year,
                        last4,
                    },
                    customer: &self.customer,
                    id: self.payment_method(),
                    object: "payment_method",
                    kind: "card",
                },
                kind: "card_error",
            }
        });
        PiOut {
            amount: self.amount,
            amount_capturable: 0,
            amount_details: Tip { tip: EmptyMap },
            amount_received: received,
            application: NULL,
            application_fee_amount: NULL,
            automatic_payment_methods: NULL,
            canceled_at: NULL,
            cancellation_reason: NULL,
            capture_method: "automatic",
            client_secret: format!("{}_secret_{}", self.pi_id, alnum(self.seed ^ 0x5EC7, 25)),
            confirmation_method: "automatic",
            created: self.created,
            currency: &self.currency,
            customer: &self.customer,
            description: &self.description,
            id: &self.pi_id,
            last_payment_error,
            latest_charge: if expand_charge {
                Expandable::Object(self.charge_out())
            } else {
                Expandable::Id(self.ch_id.clone())
            },
            livemode: self.live,
            metadata: EmptyMap,
            next_action: NULL,
            object: "payment_intent",
            on_behalf_of: NULL,
            payment_method: (self.status != PiStatus::Failed).then(|| self.payment_method()),
            payment_method_configuration_details: NULL,
            payment_method_options: EmptyMap,
            payment_method_types: [if self.status == PiStatus::Processing {
                "us_bank_account"
            } else {
                "card"
            }],
            processing: NULL,
            receipt_email: self.email.as_deref(),
            review: NULL,
            setup_future_usage: NULL,
            shipping: NULL,
            source: NULL,
            statement_descriptor: NULL,
            statement_descriptor_suffix: NULL,
            status,
            transfer_data: NULL,
            transfer_group: NULL,
        }
    }

    fn charge_out(&self) -> ChargeOut<'_> {
        let failed = self.status == PiStatus::Failed;
        let (status, paid) = match self.status {
            PiStatus::Succeeded => ("succeeded", true),
            PiStatus::Failed => ("failed", false),
            PiStatus::Processing => ("pending", false),
        };
        let outcome = if failed {
            Outcome {
                advice_code: Some("try_again_later"),
                network_advice_code: NULL,
                network_decline_code: Some("51"),
                network_status: "declined_by_network",
                reason: Some("insufficient_funds"),
                risk_level: "normal",
                risk_score: 31,
                seller_message: "The bank returned the decline code `insufficient_funds`.",
                kind: "issuer_declined",
            }
        } else {
            Outcome {
                advice_code: None,
                network_advice_code: NULL,
                network_decline_code: None,
                network_status: "approved_by_network",
                reason: None,
                risk_level: "normal",
                risk_score: 10 + self.seed % 40,
                seller_message: "Payment complete.",
                kind: "authorized",
            }
        };
        ChargeOut {
            amount: self.amount,
            amount_captured: if paid { self.amount } else { 0 },
            amount_refunded: 0,
            application: NULL,
            application_fee: NULL,
            application_fee_amount: NULL,
            balance_transaction: paid.then(|| format!("txn_{TAG}{}", alnum(self.seed ^ 0x7A4, 14))),
            billing_details: BillingDetails {
                address: NO_ADDRESS,
                email: self.email.as_deref(),
                name: self.name.as_deref(),
                phone: NULL,
                tax_id: NULL,
            },
            calculated_statement_descriptor: "MSP DEMO LTD",
            captured: paid,
            created: self.created,
            currency: &self.currency,
            customer: &self.customer,
            description: &self.description,
            disputed: false,
            failure_balance_transaction: NULL,
            failure_code: failed.then_some("card_declined"),
            failure_message: failed.then(|| self.message()),
            fraud_details: EmptyMap,
            id: &self.ch_id,
            livemode: self.live,
            metadata: EmptyMap,
            object: "charge",
            on_behalf_of: NULL,
            outcome,
            paid,
            payment_intent: &self.pi_id,
            payment_method: self.payment_method(),
            payment_method_details: self.method_details(),
            receipt_email: self.email.as_deref(),
            receipt_number: NULL,
            receipt_url: format!("{}/r/{}", self.base, self.ch_id),
            refunded: false,
            refunds: Refunds {
                data: EmptyList,
                has_more: false,
                object: "list",
                total_count: 0,
                url: format!("/v1/charges/{}/refunds", self.ch_id),
            },
            review: NULL,
            shipping: NULL,
            source_transfer: NULL,
            statement_descriptor: NULL,
            statement_descriptor_suffix: NULL,
            status,
            transfer_data: NULL,
            transfer_group: NULL,
        }
    }

    fn pi_json(&self) -> Value {
        to_json(&self.pi_out(false))
    }

    fn charge_json(&self) -> Value {
        to_json(&self.charge_out())
    }
}

/// What list filters look at, read cheaply from a seed or from a stored object.
#[derive(Debug, Default, Clone)]
struct Facts {
    created: i64,
    live: Option<bool>,
    customer: Option<String>,
    status: Option<String>,
    email: Option<String>,
    active: Option<bool>,
    kind: Option<String>,
    payment_intent: Option<String>,
    subscription: Option<String>,
    collection_method: Option<String>,
    currency: Option<String>,
    product: Option<String>,
    lookup_key: Option<String>,
    pending: bool,
}

fn id_or_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

fn facts_of(v: &Value) -> Facts {
    let s = |k: &str| v.get(k).and_then(id_or_string);
    Facts {
        created: v["created"].as_i64().unwrap_or(0),
        live: v["livemode"].as_bool(),
        customer: s("customer"),
        status: s("status"),
        email: s("email"),
        active: v["active"].as_bool(),
        kind: s("type"),
        payment_intent: s("payment_intent"),
        subscription: id_or_string(&v["parent"]["subscription_details"]["subscription"]),
        collection_method: s("collection_method"),
        currency: s("currency"),
        product: s("product"),
        lookup_key: s("lookup_key"),
        pending: v["pending_webhooks"].as_u64().unwrap_or(0) > 0,
    }
}

fn is_deleted(v: &Value) -> bool {
    v["deleted"] == json!(true)
}

fn pi_status_str(s: PiStatus) -> &'static str {
    match s {
        PiStatus::Succeeded => "succeeded",
        PiStatus::Failed => "requires_payment_method",
        PiStatus::Processing => "processing",
    }
}

fn charge_status_str(s: PiStatus) -> &'static str {
    match s {
        PiStatus::Succeeded => "succeeded",
        PiStatus::Failed => "failed",
        PiStatus::Processing => "pending",
    }
}

impl Inner {
    fn new(world: World, start: i64) -> Self {
        Self {
            world,
            start,
            faults: Faults::default(),
            state: Mutex::new(Store::default()),
            public_base: Mutex::new(None),
            test_limit: VendorRateLimit::new(TEST_RATE, Duration::from_secs(1)),
            live_limit: VendorRateLimit::new(LIVE_RATE, Duration::from_secs(1)),
            requests: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            quantity_updates: AtomicU64::new(0),
            ids: AtomicU64::new(0),
            signature_age: AtomicI64::new(0),
            retry_delays: Mutex::new(vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(30),
            ]),
            deliveries: Mutex::new(Vec::new()),
            client: OnceLock::new(),
        }
    }

    fn base(&self) -> String {
        lock(&self.public_base)
            .clone()
            .unwrap_or_else(|| "http://127.0.0.1".to_string())
    }

    fn ctx(&self, live: bool) -> Ctx {
        Ctx {
            live,
            base: self.base(),
        }
    }

    fn entropy(&self) -> u64 {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        Rng::new(n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ nanos).next_u64()
    }

    /// A fresh id for an object created while the sandbox runs.
    fn new_id(&self, prefix: &str) -> String {
        let n = self.ids.load(Ordering::Relaxed);
        let e = self.entropy();
        format!("{prefix}_{NEW_TAG}{}{}", base36(n, 6), alnum(e, 8))
    }

    fn request_id(&self) -> String {
        format!("req_{}", alnum(self.entropy(), 14))
    }

    // -- generated objects ---------------------------------------------------------------

    /// The generated invoice at `g`, typed.
    fn invoice_out(&self, g: usize, ctx: &Ctx) -> Option<InvoiceOut> {
        let s = self.world.invoice(g)?;
        let c = self.world.customer(s.customer)?;
        let id = gen_id("in", g);
        let mut lines = Vec::with_capacity(s.lines.len());
        let mut subtotal = 0;
        let line_end = add_months(s.created, 1);
        for (n, (line, qty)) in s.lines.iter().enumerate() {
            let price = line.price(s.currency);
            let amount = price.unit_amount * i64::from(*qty);
            subtotal += amount;
            let product = &PRODUCTS[price.product];
            let recurring = line.recurring() && s.subscription.is_some();
            let parent = match s.subscription {
                Some(sub) if recurring => LineParent {
                    invoice_item_details: None,
                    subscription_item_details: Some(SubItemDetails {
                        invoice_item: NULL,
                        proration: false,
                        proration_details: Proration {
                            credited_items: NULL,
                        },
                        subscription: gen_id("sub", sub),
                        subscription_item: gen_sub_id("si", sub, n),
                    }),
                    kind: "subscription_item_details",
                },
                _ => LineParent {
                    invoice_item_details: Some(InvoiceItemDetails {
                        invoice_item: gen_sub_id("ii", g, n),
                        proration: false,
                        proration_details: Proration {
                            credited_items: NULL,
                        },
                        subscription: NULL,
                    }),
                    subscription_item_details: None,
                    kind: "invoice_item_details",
                },
            };
            let description = if recurring {
                format!(
                    "{qty} × {} (at {} / month)",
                    product.name,
                    format_money(price.unit_amount, s.currency)
                )
            } else {
                match line {
                    Line::Support => format!("On-site support ({qty} h)"),
                    _ => product.name.to_string(),
                }
            };
            lines.push(LineOut {
                amount,
                currency: s.currency,
                description,
                discount_amounts: EmptyList,
                discountable: true,
                discounts: EmptyList,
                id: gen_sub_id("il", g, n),
                invoice: id.clone(),
                livemode: ctx.live,
                metadata: EmptyMap,
                object: "line_item",
                parent,
                period: Period {
                    end: if recurring { line_end } else { s.created },
                    start: s.created,
                },
                pretax_credit_amounts: EmptyList,
                pricing: Pricing {
                    price_details: PriceDetails {
                        price: price.id,
                        product: product.id,
                    },
                    kind: "price_details",
                    unit_amount_decimal: price.unit_amount.to_string(),
                },
                quantity: *qty,
                subtotal: amount,
                taxes: EmptyList,
            });
        }
        let total = subtotal;
        let paid = if s.status == InvStatus::Paid {
            total
        } else {
            0
        };
        let finalized = (s.status != InvStatus::Draft)
            .then(|| (s.created + 3_600).min(self.start - 60).max(s.created));
        let (hosted, pdf) = if finalized.is_some() {
            let secret = invoice_secret(&id);
            (
                Some(format!("{}/i/{secret}", ctx.base)),
                Some(format!("{}/i/{secret}/pdf", ctx.base)),
            )
        } else {
            (None, None)
        };
        let open = s.status == InvStatus::Open;
        let subscription = s.subscription.is_some();
        Some(InvoiceOut {
            account_country: "US",
            account_name: ACCOUNT_NAME,
            account_tax_ids: NULL,
            amount_due: total,
            amount_overpaid: 0,
            amount_paid: paid,
            amount_remaining: total - paid,
            amount_shipping: 0,
            application: NULL,
            attempt_count: s.attempt_count,
            attempted: s.attempt_count > 0,
            auto_advance: matches!(s.status, InvStatus::Draft | InvStatus::Open),
            automatic_tax: AutomaticTax {
                disabled_reason: NULL,
                enabled: false,
                liability: NULL,
                provider: NULL,
                status: NULL,
            },
            automatically_finalizes_at: (s.status == InvStatus::Draft).then_some(s.created + 3_600),
            billing_reason: if subscription {
                "subscription_cycle"
            } else {
                "manual"
            },
            collection_method: if s.charge_auto {
                "charge_automatically"
            } else {
                "send_invoice"
            },
            created: s.created,
            currency: s.currency,
            custom_fields: NULL,
            customer: gen_id("cus", s.customer),
            customer_address: NULL,
            customer_email: c.email,
            customer_name: (!c.name.is_empty()).then_some(c.name),
            customer_phone: NULL,
            customer_shipping: NULL,
            customer_tax_exempt: "none",
            customer_tax_ids: EmptyList,
            default_payment_method: NULL,
            default_source: NULL,
            default_tax_rates: EmptyList,
            description: NULL,
            discounts: EmptyList,
            due_date: if s.charge_auto { None } else { s.due_date },
            effective_at: finalized,
            ending_balance: finalized.map(|_| 0),
            footer: NULL,
            from_invoice: NULL,
            hosted_invoice_url: hosted,
            id: id.clone(),
            invoice_pdf: pdf,
            issuer: Issuer { kind: "self" },
            last_finalization_error: NULL,
            latest_revision: NULL,
            lines: LinesOut {
                total_count: lines.len(),
                data: lines,
                has_more: false,
                object: "list",
                url: format!("/v1/invoices/{id}/lines"),
            },
            livemode: ctx.live,
            metadata: EmptyMap,
            next_payment_attempt: (open && s.charge_auto).then_some(self.start + 2 * DAY),
            number: s.number.map(|n| format!("MSPD-{n:04}")),
            object: "invoice",
            on_behalf_of: NULL,
            parent: s.subscription.map(|sub| InvoiceParent {
                quote_details: NULL,
                subscription_details: SubDetails {
                    metadata: EmptyMap,
                    subscription: gen_id("sub", sub),
                },
                kind: "subscription_details",
            }),
            payment_settings: PaymentSettings {
                default_mandate: NULL,
                payment_method_options: NULL,
                payment_method_types: NULL,
            },
            period_end: s.created,
            period_start: if subscription {
                s.created - 30 * DAY
            } else {
                s.created
            },
            post_payment_credit_notes_amount: 0,
            pre_payment_credit_notes_amount: 0,
            receipt_number: NULL,
            rendering: NULL,
            shipping_cost: NULL,
            shipping_details: NULL,
            starting_balance: 0,
            statement_descriptor: NULL,
            status: s.status.as_str(),
            status_transitions: StatusTransitions {
                finalized_at: finalized,
                marked_uncollectible_at: if s.status == InvStatus::Uncollectible {
                    s.closed_at
                } else {
                    None
                },
                paid_at: s.paid_at,
                voided_at: if s.status == InvStatus::Void {
                    s.closed_at
                } else {
                    None
                },
            },
            subtotal,
            subtotal_excluding_tax: subtotal,
            test_clock: NULL,
            total,
            total_discount_amounts: EmptyList,
            total_excluding_tax: total,
            total_pretax_credit_amounts: EmptyList,
            total_taxes: EmptyList,
            webhooks_delivered_at: finalized,
        })
    }

    fn gen_invoice(&self, g: usize, ctx: &Ctx) -> Option<Value> {
        self.invoice_out(g, ctx).map(|i| to_json(&i))
    }

    fn gen_sub(&self, g: usize, ctx: &Ctx) -> Option<Value> {
        let s = self.world.sub(g)?;
        let id = gen_id("sub", g);
        let period = match (s.trial, s.canceled_at) {
            (Some(t), _) => t,
            (None, Some(c)) => period_at(s.created, c),
            _ => period_at(s.created, self.start),
        };
        let mut items = vec![item_json(
            &ItemView {
                id: gen_sub_id("si", g, 0),
                subscription: &id,
                price: Line::Managed.price(s.currency),
                quantity: s.seats,
                created: s.created,
                period,
            },
            self.start,
            ctx.live,
        )];
        if s.training > 0 {
            items.push(item_json(
                &ItemView {
                    id: gen_sub_id("si", g, 1),
                    subscription: &id,
                    price: Line::Training.price(s.currency),
                    quantity: s.training,
                    created: s.created,
                    period,
                },
                self.start,
                ctx.live,
            ));
        }
        let canceled = s.status == SubStatus::Canceled;
        let a = json!({
            "id": id,
            "object": "subscription",
            "application": null,
            "application_fee_percent": null,
            "automatic_tax": {"enabled": false, "liability": null, "disabled_reason": null},
            "billing_cycle_anchor": s.trial.map(|t| t.1).unwrap_or(s.created),
            "billing_cycle_anchor_config": null,
            "billing_mode": {"type": "classic", "flexible": null},
            "billing_thresholds": null,
            "cancel_at": s.cancel_at_period_end.then_some(period.1),
            "cancel_at_period_end": s.cancel_at_period_end,
            "canceled_at": s.canceled_at,
            "cancellation_details": {
                "comment": null,
                "feedback": if canceled { Some("switched_service") } else { None },
                "reason": if canceled { Some("cancellation_requested") } else { None },
            },
            "collection_method": if s.charge_auto { "charge_automatically" } else { "send_invoice" },
            "created": s.created,
            "currency": s.currency,
            "customer": gen_id("cus", s.customer),
            "days_until_due": if s.charge_auto { None } else { Some(30) },
            "default_payment_method": null,
            "default_source": null,
            "default_tax_rates": [],
            "description": null,
            "discounts": [],
            "ended_at": s.canceled_at,
        });
        let b = json!({
            "invoice_settings": {"account_tax_ids": null, "issuer": {"type": "self"}},
            "items": {
                "object": "list",
                "data": items,
                "has_more": false,
                "total_count": if s.training > 0 { 2 } else { 1 },
                "url": format!("/v1/subscription_items?subscription={id}"),
            },
            "latest_invoice": s.latest_invoice.map(|x| gen_id("in", x)),
            "livemode": ctx.live,
            "metadata": {},
            "next_pending_invoice_item_invoice": null,
            "on_behalf_of": null,
            "pause_collection": null,
            "payment_settings": {"payment_method_options": null, "payment_method_types": null, "save_default_payment_method": "off"},
            "pending_invoice_item_interval": null,
            "pending_setup_intent": null,
            "pending_update": null,
            "schedule": null,
            "start_date": s.created,
            "status": s.status.as_str(),
            "test_clock": null,
            "transfer_data": null,
            "trial_end": s.trial.map(|t| t.1),
            "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
            "trial_start": s.trial.map(|t| t.0),
        });
        Some(merged(a, b))
    }

    /// The generated payment at `g` (its payment intent and charge).
    fn gen_payment_spec(&self, g: usize, ctx: &Ctx) -> Option<Payment> {
        let s = self.world.pi(g)?;
        let c = self.world.customer(s.customer)?;
        let description = match s
            .invoice
            .and_then(|i| self.world.invoice(i))
            .and_then(|i| i.number)
        {
            Some(n) => format!("Invoice MSPD-{n:04}"),
            None => "Payment for services".to_string(),
        };
        Some(Payment {
            pi_id: gen_id("pi", g),
            ch_id: gen_id("ch", g),
            customer: gen_id("cus", s.customer),
            name: (!c.name.is_empty()).then_some(c.name),
            email: c.email,
            amount: s.amount,
            currency: s.currency.to_string(),
            status: s.status,
            created: s.created,
            description,
            message: None,
            seed: s.customer as u64,
            live: ctx.live,
            base: ctx.base.clone(),
        })
    }

    /// The generated payment intent (`charge` false) or charge at `g`.
    fn gen_payment(&self, g: usize, charge: bool, ctx: &Ctx) -> Option<Value> {
        let p = self.gen_payment_spec(g, ctx)?;
        Some(if charge { p.charge_json() } else { p.pi_json() })
    }

    // -- current state by id -------------------------------------------------------------

    /// The customer as it is now: the deleted stub when deleted.
    fn customer(&self, st: &Store, id: &str, ctx: &Ctx) -> Option<Value> {
        if st.deleted.contains(id) {
            return Some(deleted_customer(id));
        }
        if let Some(v) = st.customers.get(id) {
            return Some(localize(v.clone(), ctx));
        }
        let k = decode_gen("cus", id)?;
        let spec = self.world.customer(k)?;
        if spec.deleted {
            return Some(deleted_customer(id));
        }
        Some(customer_json(id, &spec, ctx.live))
    }

    fn live_customer(&self, st: &Store, id: &str, ctx: &Ctx) -> Option<Value> {
        self.customer(st, id, ctx).filter(|v| !is_deleted(v))
    }

    fn invoice(&self, st: &Store, id: &str, ctx: &Ctx) -> Option<Value> {
        match st.invoices.get(id) {
            Some(v) => Some(localize(v.clone(), ctx)),
            None => self.gen_invoice(decode_gen("in", id)?, ctx),
        }
    }

    fn sub(&self, st: &Store, id: &str, ctx: &Ctx) -> Option<Value> {
        match st.subs.get(id) {
            Some(v) => Some(localize(v.clone(), ctx)),
            None => self.gen_sub(decode_gen("sub", id)?, ctx),
        }
    }

    fn pi(&self, st: &Store, id: &str, ctx: &Ctx) -> Option<Value> {
        match st.pis.get(id) {
            Some(v) => Some(localize(v.clone(), ctx)),
            None => self.gen_payment(decode_gen("pi", id)?, false, ctx),
        }
    }

    fn charge(&self, st: &Store, id: &str, ctx: &Ctx) -> Option<Value> {
        match st.charges.get(id) {
            Some(v) => Some(localize(v.clone(), ctx)),
            None => self.gen_payment(decode_gen("ch", id)?, true, ctx),
        }
    }

    fn price(&self, id: &str, ctx: &Ctx) -> Option<Value> {
        price_by_id(id).map(|p| price_json(p, self.start, ctx.live))
    }

    fn product(&self, id: &str, ctx: &Ctx) -> Option<Value> {
        product_by_id(id).map(|p| product_json(p, self.start, ctx.live))
    }

    /// Any object by its id, for expansions and test events.
    fn object(&self, st: &Store, id: &str, ctx: &Ctx) -> Option<Value> {
        let prefix = id.split('_').next().unwrap_or_default();
        match prefix {
            "cus" => self.customer(st, id, ctx),
            "in" => self.invoice(st, id, ctx),
            "sub" => self.sub(st, id, ctx),
            "si" => self.item(st, id, ctx),
            "pi" => self.pi(st, id, ctx),
            "ch" => self.charge(st, id, ctx),
            "price" => self.price(id, ctx),
            "prod" => self.product(id, ctx),
            "we" => st
                .endpoints
                .iter()
                .find(|e| e.id == id)
                .map(|e| e.json(false)),
            _ => None,
        }
    }

    /// The subscription an item belongs to (its id), by the item's id.
    fn sub_of_item(&self, st: &Store, item: &str) -> Option<String> {
        if let Some((g, _)) = decode_sub_id("si", item) {
            return Some(gen_id("sub", g));
        }
        st.subs
            .iter()
            .find(|(_, v)| {
                v["items"]["data"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|i| i["id"] == item))
            })
            .map(|(k, _)| k.clone())
    }

    fn item(&self, st: &Store, id: &str, ctx: &Ctx) -> Option<Value> {
        let sub = self.sub(st, &self.sub_of_item(st, id)?, ctx)?;
        sub["items"]["data"]
            .as_array()?
            .iter()
            .find(|i| i["id"] == id)
            .cloned()
    }

    // -- positions in lists (newest first) -----------------------------------------------

    fn customer_count_all(&self, st: &Store) -> usize {
        st.added_customers.len() + self.world.customers()
    }

    fn customer_at(&self, st: &Store, p: usize) -> Option<String> {
        let n = st.added_customers.len();
        if p < n {
            return st.added_customers.get(n - 1 - p).cloned();
        }
        (p - n < self.world.customers()).then(|| gen_id("cus", p - n))
    }

    fn customer_pos(&self, st: &Store, id: &str) -> Option<usize> {
        let n = st.added_customers.len();
        match decode_gen("cus", id) {
            Some(k) if k < self.world.customers() => Some(n + k),
            Some(_) => None,
            None => st
                .added_customers
                .iter()
                .position(|x| x == id)
                .map(|i| n - 1 - i),
        }
    }

    fn customer_facts(&self, st: &Store, p: usize) -> Option<Facts> {
        let id = self.customer_at(st, p)?;
        if st.deleted.contains(&id) {
            return None;
        }
        if let Some(v) = st.customers.get(&id) {
            return Some(facts_of(v));
        }
        let spec = self.world.customer(p - st.added_customers.len())?;
        if spec.deleted {
            return None;
        }
        Some(Facts {
            created: spec.created,
            email: spec.email,
            ..Facts::default()
        })
    }

    fn payment_at(&self, st: &Store, p: usize, charge: bool) -> Option<String> {
        let n = st.added_pis.len();
        if p < n {
            return st
                .added_pis
                .get(n - 1 - p)
                .map(|(pi, ch)| if charge { ch.clone() } else { pi.clone() });
        }
        (p - n < self.world.pis()).then(|| gen_id(if charge { "ch" } else { "pi" }, p - n))
    }

    fn payment_pos(&self, st: &Store, id: &str, charge: bool) -> Option<usize> {
        let n = st.added_pis.len();
        match decode_gen(if charge { "ch" } else { "pi" }, id) {
            Some(k) if k < self.world.pis() => Some(n + k),
            Some(_) => None,
            None => st
                .added_pis
                .iter()
                .position(|(pi, ch)| if charge { ch == id } else { pi == id })
                .map(|i| n - 1 - i),
        }
    }

    fn payment_facts(&self, st: &Store, p: usize, charge: bool) -> Option<Facts> {
        let id = self.payment_at(st, p, charge)?;
        let stored = if charge {
            st.charges.get(&id)
        } else {
            st.pis.get(&id)
        };
        if let Some(v) = stored {
            return Some(facts_of(v));
        }
        let g = p - st.added_pis.len();
        let s = self.world.pi(g)?;
        Some(Facts {
            created: s.created,
            customer: Some(gen_id("cus", s.customer)),
            status: Some(
                if charge {
                    charge_status_str(s.status)
                } else {
                    pi_status_str(s.status)
                }
                .to_string(),
            ),
            payment_intent: charge.then(|| gen_id("pi", g)),
            ..Facts::default()
        })
    }

    fn invoice_facts(&self, st: &Store, g: usize) -> Option<Facts> {
        if let Some(v) = st.invoices.get(&gen_id("in", g)) {
            return Some(facts_of(v));
        }
        let s = self.world.invoice(g)?;
        Some(Facts {
            created: s.created,
            customer: Some(gen_id("cus", s.customer)),
            status: Some(s.status.as_str().to_string()),
            subscription: s.subscription.map(|x| gen_id("sub", x)),
            collection_method: Some(
                if s.charge_auto {
                    "charge_automatically"
                } else {
                    "send_invoice"
                }
                .to_string(),
            ),
            currency: Some(s.currency.to_string()),
            ..Facts::default()
        })
    }

    fn sub_facts(&self, st: &Store, g: usize) -> Option<Facts> {
        if let Some(v) = st.subs.get(&gen_id("sub", g)) {
            return Some(facts_of(v));
        }
        let s = self.world.sub(g)?;
        Some(Facts {
            created: s.created,
            customer: Some(gen_id("cus", s.customer)),
            status: Some(s.status.as_str().to_string()),
            collection_method: Some(
                if s.charge_auto {
                    "charge_automatically"
                } else {
                    "send_invoice"
                }
                .to_string(),
            ),
            currency: Some(s.currency.to_string()),
            ..Facts::default()
        })
    }
}

// ---------------------------------------------------------------------------------------
// Errors

#[derive(Debug, Clone)]
struct ApiError {
    status: StatusCode,
    kind: &'static str,
    code: Option<&'static str>,
    message: String,
    param: Option<String>,
    doc_url: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            code: None,
            message: message.into(),
            param: None,
            doc_url: None,
        }
    }

    fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        let mut e = Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message);
        e.param = param.map(str::to_string);
        e
    }

    fn with_code(mut self, code: &'static str, doc_url: &'static str) -> Self {
        self.code = Some(code);
        self.doc_url = Some(doc_url);
        self
    }

    /// `No such customer: 'cus_x'`, 404 (a path id) or 400 (a parameter).
    fn missing(what: &str, id: &str, param: &str, status: StatusCode) -> Self {
        let mut e = Self::new(
            status,
            "invalid_request_error",
            format!("No such {what}: '{id}'"),
        )
        .with_code(
            "resource_missing",
            "https://stripe.com/docs/error-codes/resource-missing",
        );
        e.param = Some(param.to_string());
        e
    }

    fn not_found(what: &str, id: &str) -> Self {
        Self::missing(what, id, "id", StatusCode::NOT_FOUND)
    }

    fn unknown_param(k: &str) -> Self {
        Self::invalid(format!("Received unknown parameter: {k}"), Some(k))
    }

    fn body(&self, request_id: &str, live: bool) -> Value {
        let mut e = Map::new();
        if let Some(c) = self.code {
            e.insert("code".into(), json!(c));
        }
        if let Some(d) = self.doc_url {
            e.insert("doc_url".into(), json!(d));
        }
        e.insert("message".into(), json!(self.message));
        if let Some(p) = &self.param {
            e.insert("param".into(), json!(p));
        }
        e.insert(
            "request_log_url".into(),
            json!(format!(
                "https://dashboard.stripe.com/{}logs/{request_id}?t={}",
                if live { "" } else { "test/" },
                now()
            )),
        );
        e.insert("type".into(), json!(self.kind));
        json!({ "error": e })
    }
}

/// Shows the key's mode prefix and its last four characters.
fn mask_key(key: &str) -> String {
    let prefix_len = key
        .match_indices('_')
        .nth(1)
        .map(|(i, _)| i + 1)
        .unwrap_or(0);
    let prefix = key.get(..prefix_len).unwrap_or_default();
    let rest = key.get(prefix_len..).unwrap_or_default();
    let chars: Vec<char> = rest.chars().collect();
    if chars.len() <= 4 {
        return format!("{prefix}****");
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{prefix}{}{tail}", "*".repeat(chars.len() - 4))
}

// ---------------------------------------------------------------------------------------
// Lists

/// The parameters every list reads, and its filters.
#[derive(Debug, Default)]
struct ListQuery {
    limit: usize,
    after: Option<String>,
    before: Option<String>,
    /// Inclusive bounds on `created`.
    gte: Option<i64>,
    lte: Option<i64>,
    customer: Option<String>,
    status: Option<String>,
    email: Option<String>,
    active: Option<bool>,
    kind: Option<String>,
    payment_intent: Option<String>,
    subscription: Option<String>,
    collection_method: Option<String>,
    currency: Option<String>,
    product: Option<String>,
    lookup_keys: Vec<String>,
    types: Vec<String>,
    delivery_success: Option<bool>,
    live: bool,
    expand: Vec<String>,
}

fn string_param(params: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match params.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid(
            format!("Invalid string: {key} must be a string"),
            Some(key),
        )),
    }
}

fn int_value(v: &Value, param: &str) -> Result<i64, ApiError> {
    v.as_str()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .ok_or_else(|| {
            let shown = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            ApiError::invalid(format!("Invalid integer: {shown}"), Some(param))
        })
}

fn bool_value(v: &Value, param: &str) -> Result<bool, ApiError> {
    match v.as_str() {
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        _ => Err(ApiError::invalid(
            format!("Invalid boolean: {}", v.as_str().unwrap_or_default()),
            Some(param),
        )),
    }
}

fn string_list(params: &Map<String, Value>, key: &str) -> Result<Vec<String>, ApiError> {
    match params.get(key) {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::invalid(format!("Invalid array: {key}"), Some(key)))
            })
            .collect(),
        Some(_) => Err(ApiError::invalid(
            format!("Invalid array: {key} must be an array, as {key}[]=…"),
            Some(key),
        )),
    }
}

fn check_allowed(params: &Map<String, Value>, allowed: &[&str]) -> Result<(), ApiError> {
    for k in params.keys() {
        if k != "expand" && !allowed.contains(&k.as_str()) {
            return Err(ApiError::unknown_param(k));
        }
    }
    Ok(())
}

fn parse_list(q: &Map<String, Value>, extra: &[&str], live: bool) -> Result<ListQuery, ApiError> {
    let mut allowed = vec!["limit", "starting_after", "ending_before", "created"];
    allowed.extend_from_slice(extra);
    check_allowed(q, &allowed)?;
    let limit = match q.get("limit") {
        None => 10,
        Some(v) => {
            let n = int_value(v, "limit")?;
            if !(1..=100).contains(&n) {
                return Err(ApiError::invalid(
                    "Invalid limit: must be between 1 and 100",
                    Some("limit"),
                ));
            }
            n as usize
        }
    };
    let after = string_param(q, "starting_after")?.filter(|s| !s.is_empty());
    let before = string_param(q, "ending_before")?.filter(|s| !s.is_empty());
    if after.is_some() && before.is_some() {
        return Err(ApiError::invalid(
            "You may only specify one of these parameters: ending_before, starting_after.",
            Some("starting_after"),
        ));
    }
    let mut out = ListQuery {
        limit,
        after,
        before,
        live,
        ..ListQuery::default()
    };
    match q.get("created") {
        None => {}
        Some(v @ Value::String(_)) => {
            let t = int_value(v, "created")?;
            out.gte = Some(t);
            out.lte = Some(t);
        }
        Some(Value::Object(range)) => {
            for (k, v) in range {
                let param = format!("created[{k}]");
                let t = int_value(v, &param)?;
                match k.as_str() {
                    "gte" => out.gte = Some(out.gte.map_or(t, |x| x.max(t))),
                    "gt" => out.gte = Some(out.gte.map_or(t + 1, |x| x.max(t + 1))),
                    "lte" => out.lte = Some(out.lte.map_or(t, |x| x.min(t))),
                    "lt" => out.lte = Some(out.lte.map_or(t - 1, |x| x.min(t - 1))),
                    _ => return Err(ApiError::unknown_param(&param)),
                }
            }
        }
        Some(_) => return Err(ApiError::invalid("Invalid created", Some("created"))),
    }
    out.customer = string_param(q, "customer")?;
    out.status = string_param(q, "status")?;
    out.email = string_param(q, "email")?;
    out.payment_intent = string_param(q, "payment_intent")?;
    out.subscription = string_param(q, "subscription")?;
    out.collection_method = string_param(q, "collection_method")?;
    out.currency = string_param(q, "currency")?.map(|c| c.to_ascii_lowercase());
    out.product = string_param(q, "product")?;
    out.kind = string_param(q, "type")?;
    out.active = match q.get("active") {
        Some(v) => Some(bool_value(v, "active")?),
        None => None,
    };
    out.delivery_success = match q.get("delivery_success") {
        Some(v) => Some(bool_value(v, "delivery_success")?),
        None => None,
    };
    out.lookup_keys = string_list(q, "lookup_keys")?;
    out.types = string_list(q, "types")?;
    if out.types.len() > 20 {
        return Err(ApiError::invalid(
            "You may pass up to 20 types.",
            Some("types"),
        ));
    }
    out.expand = string_list(q, "expand")?;
    Ok(out)
}

/// `invoice.*` matches `invoice.paid`.
fn type_matches(pattern: &str, t: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => t.starts_with(prefix),
        None => pattern == t,
    }
}

impl ListQuery {
    fn validate_status(&self, allowed: &[&str]) -> Result<(), ApiError> {
        match &self.status {
            Some(s) if !allowed.contains(&s.as_str()) => Err(ApiError::invalid(
                format!("Invalid status: must be one of {}", allowed.join(", ")),
                Some("status"),
            )),
            _ => Ok(()),
        }
    }

    fn matches(&self, f: &Facts, what: &str) -> bool {
        let eq = |want: &Option<String>, got: &Option<String>| {
            want.as_ref()
                .is_none_or(|w| got.as_deref() == Some(w.as_str()))
        };
        if self.gte.is_some_and(|t| f.created < t) || self.lte.is_some_and(|t| f.created > t) {
            return false;
        }
        let status_ok = match (what, self.status.as_deref()) {
            ("subscription", None) => {
                !matches!(f.status.as_deref(), Some("canceled" | "incomplete_expired"))
            }
            ("subscription", Some("all")) => true,
            ("subscription", Some("ended")) => {
                matches!(f.status.as_deref(), Some("canceled" | "incomplete_expired"))
            }
            (_, want) => want.is_none_or(|w| f.status.as_deref() == Some(w)),
        };
        status_ok
            && eq(&self.customer, &f.customer)
            && eq(&self.email, &f.email)
            && eq(&self.payment_intent, &f.payment_intent)
            && eq(&self.subscription, &f.subscription)
            && eq(&self.collection_method, &f.collection_method)
            && eq(&self.currency, &f.currency)
            && eq(&self.product, &f.product)
            && self.active.is_none_or(|a| f.active == Some(a))
            && self.kind.as_ref().is_none_or(|k| {
                f.kind
                    .as_deref()
                    .is_some_and(|t| type_matches(k, t))
            })
            && (self.types.is_empty()
                || f.kind
                    .as_deref()
                    .is_some_and(|t| self.types.iter().any(|k| type_matches(k, t))))
            && (self.lookup_keys.is_empty()
                || f.lookup_key
                    .as_ref()
                    .is_some_and(|l| self.lookup_keys.contains(l)))
            && self.delivery_success.is_none_or(|ok| ok != f.pending)
            // Events and endpoints belong to a mode; the billing objects are shared.
            && (!matches!(what, "event" | "webhook endpoint")
                || f.live.is_none_or(|l| l == self.live))
    }
}

/// Writes the object at a position as JSON text.
type TextAt<'a> = Box<dyn Fn(usize) -> Option<String> + 'a>;

/// Finds an id's position in a list.
type PosOf<'a> = Box<dyn Fn(&str) -> Option<usize> + 'a>;

/// A changed object and its previous attributes.
type Changed = (Value, Map<String, Value>);

/// A list to page through: positions `0..len` newest first.
struct Coll<'a> {
    /// "customer", for "No such customer" and the status default.
    what: &'static str,
    url: &'static str,
    len: usize,
    pos_of: PosOf<'a>,
    facts: Box<dyn Fn(usize) -> Option<Facts> + 'a>,
    render: Box<dyn Fn(usize) -> Option<Value> + 'a>,
    /// The object at a position already as (pretty) JSON text, when it can be written
    /// without building a `Value` (a generated object, unchanged, not expanded).
    fast: Option<TextAt<'a>>,
    /// Only these positions (ascending) can match, when known.
    candidates: Option<Vec<usize>>,
}

fn list_page(c: &Coll<'_>, q: &ListQuery) -> Result<Out, ApiError> {
    let cursor = |id: &str, param: &str| {
        (c.pos_of)(id).ok_or_else(|| ApiError::missing(c.what, id, param, StatusCode::BAD_REQUEST))
    };
    let mut found = Vec::with_capacity(q.limit);
    let mut has_more = false;
    if let Some(before) = &q.before {
        let end = cursor(before, "ending_before")?;
        let positions: Box<dyn Iterator<Item = usize>> = match &c.candidates {
            Some(v) => {
                let i = v.partition_point(|&p| p < end);
                Box::new(v[..i].iter().rev().copied())
            }
            None => Box::new((0..end.min(c.len)).rev()),
        };
        for p in positions {
            let Some(f) = (c.facts)(p) else { continue };
            if q.lte.is_some_and(|t| f.created > t) {
                break;
            }
            if !q.matches(&f, c.what) {
                continue;
            }
            if found.len() == q.limit {
                has_more = true;
                break;
            }
            found.push(p);
        }
        found.reverse();
    } else {
        let from = match &q.after {
            Some(a) => cursor(a, "starting_after")? + 1,
            None => 0,
        };
        let positions: Box<dyn Iterator<Item = usize>> = match &c.candidates {
            Some(v) => {
                let i = v.partition_point(|&p| p < from);
                Box::new(v[i..].iter().copied())
            }
            None => Box::new(from..c.len),
        };
        for p in positions {
            let Some(f) = (c.facts)(p) else { continue };
            if q.gte.is_some_and(|t| f.created < t) {
                break;
            }
            if !q.matches(&f, c.what) {
                continue;
            }
            if found.len() == q.limit {
                has_more = true;
                break;
            }
            found.push(p);
        }
    }
    let mut items = Vec::with_capacity(found.len());
    for p in found {
        if let Some(text) = c.fast.as_ref().and_then(|f| f(p)) {
            items.push(text);
        } else if let Some(v) = (c.render)(p) {
            items.push(serde_json::to_string_pretty(&v).unwrap_or_default());
        }
    }
    Ok(Out::Text(list_text(&items, has_more, c.url)))
}

/// A list object as Stripe writes it (pretty, keys sorted) around items already written.
fn list_text(items: &[String], has_more: bool, url: &str) -> Vec<u8> {
    let mut out = String::with_capacity(items.iter().map(|i| i.len() + 64).sum::<usize>() + 128);
    out.push_str("{\n  \"data\": [");
    for (i, item) in items.iter().enumerate() {
        out.push_str(if i == 0 { "\n    " } else { ",\n    " });
        // Strings in JSON cannot hold a raw newline: every one is a line break.
        out.push_str(&item.replace('\n', "\n    "));
    }
    if !items.is_empty() {
        out.push_str("\n  ");
    }
    let _ = write!(
        out,
        "],\n  \"has_more\": {has_more},\n  \"object\": \"list\",\n  \"url\": {}\n}}",
        serde_json::to_string(url).unwrap_or_default()
    );
    out.into_bytes()
}

/// A route's answer: a JSON value, or a list already written.
enum Out {
    Json(Value),
    Text(Vec<u8>),
}

// ---------------------------------------------------------------------------------------
// Keys, permissions, expansions

/// The key a request came with.
#[derive(Debug, Clone)]
struct ApiKey {
    key: String,
    live: bool,
    /// `None`: a secret key, full access.
    permissions: Option<BTreeSet<String>>,
}

impl ApiKey {
    fn allows(&self, permission: &str) -> bool {
        match &self.permissions {
            None => true,
            Some(p) => {
                p.contains(permission)
                    || permission
                        .strip_suffix("_read")
                        .is_some_and(|base| p.contains(&format!("{base}_write")))
            }
        }
    }
}

/// The key of `Authorization: Bearer <key>` or Basic with the key as user name.
fn key_of(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = v.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.to_string()).filter(|k| !k.is_empty());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let raw = String::from_utf8(STANDARD.decode(rest).ok()?).ok()?;
        let user = raw.split_once(':').map(|(u, _)| u).unwrap_or(&raw);
        return Some(user.to_string()).filter(|k| !k.is_empty());
    }
    None
}

/// What each object lets `expand[]` replace (paths without `data.`).
fn allowed_expansions(object: &str) -> &'static [&'static str] {
    match object {
        "invoice" => &["customer"],
        "subscription" => &["customer", "latest_invoice", "items.data.price.product"],
        "subscription_item" => &["price.product"],
        "payment_intent" => &["customer", "latest_charge"],
        "charge" => &["customer", "payment_intent"],
        "price" => &["product"],
        "product" => &["default_price"],
        "billing_portal.session" => &["customer"],
        _ => &[],
    }
}

fn expansion_permission(path: &str) -> Option<&'static str> {
    match path.rsplit('.').next() {
        Some("customer") => Some("customer_read"),
        Some("latest_charge") => Some("charge_read"),
        Some("latest_invoice") => Some("invoice_read"),
        Some("payment_intent") => Some("payment_intent_read"),
        Some("product") => Some("product_read"),
        Some("default_price") => Some("price_read"),
        _ => None,
    }
}

/// Replaces the id at `segs` (through objects and arrays) with what `f` finds for it.
fn expand_at(v: &mut Value, segs: &[&str], f: &mut dyn FnMut(&str) -> Option<Value>) {
    match v {
        Value::Array(a) => {
            for x in a {
                expand_at(x, segs, f);
            }
        }
        Value::Object(m) => {
            let Some((first, rest)) = segs.split_first() else {
                return;
            };
            if rest.is_empty() {
                let found = match m.get(*first) {
                    Some(Value::String(id)) => f(id),
                    _ => None,
                };
                if let Some(x) = found {
                    m.insert((*first).to_string(), x);
                }
            } else if let Some(child) = m.get_mut(*first) {
                expand_at(child, rest, f);
            }
        }
        _ => {}
    }
}

fn valid_version(v: &str) -> bool {
    let b = v.as_bytes();
    let date_ok = b.len() >= 10
        && b[..10].iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        });
    let rest = v.get(10..).unwrap_or_default();
    date_ok
        && (rest.is_empty()
            || rest
                .strip_prefix('.')
                .is_some_and(|r| !r.is_empty() && r.bytes().all(|c| c.is_ascii_alphanumeric())))
}

fn valid_event_type(t: &str) -> bool {
    t == "*"
        || (t.contains('.')
            && !t.starts_with('.')
            && !t.ends_with('.')
            && t.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'_'))
}

fn valid_url(u: &str) -> bool {
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"));
    rest.is_some_and(|r| {
        let host = r.split(['/', '?', '#']).next().unwrap_or_default();
        !host.is_empty() && !r.contains(char::is_whitespace)
    })
}

fn valid_email(e: &str) -> bool {
    match e.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !e.contains(char::is_whitespace)
        }
        None => false,
    }
}

/// The top-level fields of `old` that `new` changed, with their old values.
fn previous(old: &Value, new: &Value) -> Map<String, Value> {
    let mut prev = Map::new();
    if let (Value::Object(o), Value::Object(n)) = (old, new) {
        for (k, v) in o {
            if n.get(k) != Some(v) {
                prev.insert(k.clone(), v.clone());
            }
        }
        for k in n.keys() {
            if !o.contains_key(k) {
                prev.insert(k.clone(), Value::Null);
            }
        }
    }
    prev
}

/// A `metadata` parameter: `metadata=` clears, `metadata[k]=` removes one key.
enum Meta {
    Clear,
    Edits(Vec<(String, Option<String>)>),
}

fn metadata_param(p: &Map<String, Value>) -> Result<Option<Meta>, ApiError> {
    match p.get("metadata") {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(Some(Meta::Clear)),
        Some(Value::Object(m)) => {
            let mut edits = Vec::with_capacity(m.len());
            for (k, v) in m {
                let param = format!("metadata[{k}]");
                let Value::String(s) = v else {
                    return Err(ApiError::invalid(
                        format!("Invalid string: {param} must be a string"),
                        Some(&param),
                    ));
                };
                if k.chars().count() > 40 {
                    return Err(ApiError::invalid(
                        format!("Metadata keys can have up to 40 characters; '{k}' is longer."),
                        Some(&param),
                    ));
                }
                if s.chars().count() > 500 {
                    return Err(ApiError::invalid(
                        "Metadata values can have up to 500 characters.",
                        Some(&param),
                    ));
                }
                edits.push((k.clone(), (!s.is_empty()).then(|| s.clone())));
            }
            Ok(Some(Meta::Edits(edits)))
        }
        Some(_) => Err(ApiError::invalid(
            "Invalid hash: metadata must be a hash, as metadata[key]=value",
            Some("metadata"),
        )),
    }
}

fn apply_meta(target: &mut Value, meta: &Meta) -> Result<(), ApiError> {
    let mut m = match target {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    match meta {
        Meta::Clear => m.clear(),
        Meta::Edits(edits) => {
            for (k, v) in edits {
                match v {
                    Some(v) => m.insert(k.clone(), json!(v)),
                    None => m.remove(k),
                };
            }
        }
    }
    if m.len() > 50 {
        return Err(ApiError::invalid(
            "You can have up to 50 metadata keys.",
            Some("metadata"),
        ));
    }
    *target = Value::Object(m);
    Ok(())
}

fn optional_string(p: &Map<String, Value>, key: &str) -> Result<Option<Option<String>>, ApiError> {
    Ok(string_param(p, key)?.map(|s| (!s.is_empty()).then_some(s)))
}

/// One API request, authenticated and parsed.
struct Call<'a> {
    method: Method,
    segs: Vec<String>,
    query: Map<String, Value>,
    form: Map<String, Value>,
    key: &'a ApiKey,
    ctx: Ctx,
    request_id: &'a str,
    idempotency_key: Option<&'a str>,
}

impl Call<'_> {
    fn need(&self, permission: &str) -> Result<(), ApiError> {
        if self.key.allows(permission) {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            format!(
                "The provided key '{}' does not have the required permissions for this endpoint on account '{ACCOUNT_ID}'. Having the 'rak_{permission}' permission would allow this request to continue.",
                mask_key(&self.key.key)
            ),
        ))
    }

    /// The `request` of the events this call causes.
    fn origin(&self) -> (Option<String>, Option<String>) {
        (
            Some(self.request_id.to_string()),
            self.idempotency_key.map(str::to_string),
        )
    }

    /// The expansions asked for, checked against what `object` allows.
    fn expansions(
        &self,
        wanted: &[String],
        object: &str,
        list: bool,
    ) -> Result<Vec<String>, ApiError> {
        let allowed = allowed_expansions(object);
        let mut out = Vec::with_capacity(wanted.len());
        for e in wanted {
            let path = if list {
                e.strip_prefix("data.")
            } else {
                Some(e.as_str())
            };
            let Some(path) = path.filter(|p| allowed.contains(p)) else {
                return Err(ApiError::invalid(
                    format!("This property cannot be expanded ({e})."),
                    Some("expand"),
                ));
            };
            if let Some(permission) = expansion_permission(path) {
                self.need(permission)?;
            }
            out.push(path.to_string());
        }
        Ok(out)
    }

    /// `expand` of a single-object read (the only parameter it takes).
    fn single(&self, object: &str) -> Result<Vec<String>, ApiError> {
        check_allowed(&self.query, &[])?;
        check_allowed(&self.form, &[])?;
        let mut wanted = string_list(&self.query, "expand")?;
        wanted.extend(string_list(&self.form, "expand")?);
        self.expansions(&wanted, object, false)
    }

    /// `expand` of a write's answer.
    fn write_expansions(&self, object: &str) -> Result<Vec<String>, ApiError> {
        let mut wanted = string_list(&self.form, "expand")?;
        wanted.extend(string_list(&self.query, "expand")?);
        self.expansions(&wanted, object, false)
    }
}

// ---------------------------------------------------------------------------------------
// Routes

impl Inner {
    fn expand(&self, st: &Store, v: &mut Value, paths: &[String], ctx: &Ctx) {
        for p in paths {
            let segs: Vec<&str> = p.split('.').collect();
            expand_at(v, &segs, &mut |id| self.object(st, id, ctx));
        }
    }

    fn classify(&self, st: &Store, key: &str) -> Option<ApiKey> {
        let full = |live| ApiKey {
            key: key.to_string(),
            live,
            permissions: None,
        };
        if key == DEMO_SECRET_KEY || key.starts_with("sk_test_mspbridge") {
            return Some(full(false));
        }
        if key.starts_with("sk_live_mspbridge") {
            return Some(full(true));
        }
        if key == DEMO_RESTRICTED_KEY {
            return Some(ApiKey {
                key: key.to_string(),
                live: false,
                permissions: Some(
                    DEMO_RESTRICTED_PERMISSIONS
                        .iter()
                        .map(|p| p.to_string())
                        .collect(),
                ),
            });
        }
        st.restricted.get(key).map(|p| ApiKey {
            key: key.to_string(),
            live: key.starts_with("rk_live_") || key.starts_with("sk_live_"),
            permissions: Some(p.clone()),
        })
    }

    fn dispatch(&self, st: &mut Store, call: &Call<'_>) -> Result<Out, ApiError> {
        let segs: Vec<&str> = call.segs.iter().map(String::as_str).collect();
        if call.method == Method::GET {
            match segs.as_slice() {
                ["customers"] => return self.list_customers(st, call),
                ["invoices"] => return self.list_invoices(st, call),
                ["subscriptions"] => return self.list_subs(st, call),
                ["subscription_items"] => return self.list_items(st, call),
                ["payment_intents"] => return self.list_payments(st, call, false),
                ["charges"] => return self.list_payments(st, call, true),
                ["prices"] => return self.list_prices(st, call),
                ["products"] => return self.list_products(st, call),
                ["webhook_endpoints"] => return self.list_endpoints(st, call),
                ["events"] => return self.list_events(st, call),
                _ => {}
            }
        }
        self.dispatch_one(st, call).map(Out::Json)
    }

    /// Every route but the lists.
    fn dispatch_one(&self, st: &mut Store, call: &Call<'_>) -> Result<Value, ApiError> {
        let segs: Vec<&str> = call.segs.iter().map(String::as_str).collect();
        let unrecognized = || {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!(
                    "Unrecognized request URL ({}: /v1/{}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/.",
                    call.method,
                    call.segs.join("/")
                ),
            )
        };
        match (call.method.as_str(), segs.as_slice()) {
            ("POST", ["customers"]) => self.create_customer(st, call),
            ("GET", ["customers", id]) => {
                call.need("customer_read")?;
                call.single("customer")?;
                self.customer(st, id, &call.ctx)
                    .ok_or_else(|| ApiError::not_found("customer", id))
            }
            ("POST", ["customers", id]) => self.update_customer_api(st, call, id),
            ("DELETE", ["customers", id]) => {
                call.need("customer_write")?;
                if self.live_customer(st, id, &call.ctx).is_none() {
                    return Err(ApiError::not_found("customer", id));
                }
                self.remove_customer(st, id, call.ctx.live, call.origin());
                Ok(deleted_customer(id))
            }
            ("GET", ["invoices", id]) => {
                call.need("invoice_read")?;
                let exp = call.single("invoice")?;
                let mut v = self
                    .invoice(st, id, &call.ctx)
                    .ok_or_else(|| ApiError::not_found("invoice", id))?;
                self.expand(st, &mut v, &exp, &call.ctx);
                Ok(v)
            }
            ("GET", ["subscriptions", id]) => {
                call.need("subscription_read")?;
                let exp = call.single("subscription")?;
                let mut v = self
                    .sub(st, id, &call.ctx)
                    .ok_or_else(|| ApiError::not_found("subscription", id))?;
                self.expand(st, &mut v, &exp, &call.ctx);
                Ok(v)
            }
            ("POST", ["subscriptions", id]) => self.update_sub_api(st, call, id),
            ("GET", ["subscription_items", id]) => {
                call.need("subscription_read")?;
                let exp = call.single("subscription_item")?;
                let mut v = self
                    .item(st, id, &call.ctx)
                    .ok_or_else(|| ApiError::not_found("subscription item", id))?;
                self.expand(st, &mut v, &exp, &call.ctx);
                Ok(v)
            }
            ("POST", ["subscription_items", id]) => self.update_item_api(st, call, id),
            ("GET", ["payment_intents", id]) => {
                call.need("payment_intent_read")?;
                let exp = call.single("payment_intent")?;
                let mut v = self
                    .pi(st, id, &call.ctx)
                    .ok_or_else(|| ApiError::not_found("payment_intent", id))?;
                self.expand(st, &mut v, &exp, &call.ctx);
                Ok(v)
            }
            ("GET", ["charges", id]) => {
                call.need("charge_read")?;
                let exp = call.single("charge")?;
                let mut v = self
                    .charge(st, id, &call.ctx)
                    .ok_or_else(|| ApiError::not_found("charge", id))?;
                self.expand(st, &mut v, &exp, &call.ctx);
                Ok(v)
            }
            ("GET", ["prices", id]) => {
                call.need("price_read")?;
                let exp = call.single("price")?;
                let mut v = self
                    .price(id, &call.ctx)
                    .ok_or_else(|| ApiError::not_found("price", id))?;
                self.expand(st, &mut v, &exp, &call.ctx);
                Ok(v)
            }
            ("GET", ["products", id]) => {
                call.need("product_read")?;
                let exp = call.single("product")?;
                let mut v = self
                    .product(id, &call.ctx)
                    .ok_or_else(|| ApiError::not_found("product", id))?;
                self.expand(st, &mut v, &exp, &call.ctx);
                Ok(v)
            }
            ("POST", ["billing_portal", "sessions"]) => self.create_session(st, call),
            ("POST", ["webhook_endpoints"]) => self.create_endpoint_api(st, call),
            ("GET", ["webhook_endpoints", id]) => {
                call.need("webhook_endpoint_read")?;
                call.single("webhook_endpoint")?;
                st.endpoints
                    .iter()
                    .find(|e| e.id == *id && e.livemode == call.key.live)
                    .map(|e| e.json(false))
                    .ok_or_else(|| ApiError::not_found("webhook endpoint", id))
            }
            ("POST", ["webhook_endpoints", id]) => self.update_endpoint_api(st, call, id),
            ("DELETE", ["webhook_endpoints", id]) => {
                call.need("webhook_endpoint_write")?;
                let before = st.endpoints.len();
                st.endpoints
                    .retain(|e| !(e.id == *id && e.livemode == call.key.live));
                if st.endpoints.len() == before {
                    return Err(ApiError::not_found("webhook endpoint", id));
                }
                Ok(json!({"id": id, "object": "webhook_endpoint", "deleted": true}))
            }
            ("GET", ["events", id]) => {
                call.need("event_read")?;
                call.single("event")?;
                st.event_pos
                    .get(*id)
                    .and_then(|&i| st.events.get(i))
                    .filter(|e| e["livemode"] == json!(call.key.live))
                    .map(|e| event_view(st, e))
                    .ok_or_else(|| ApiError::not_found("event", id))
            }
            _ => Err(unrecognized()),
        }
    }

    // -- lists ---------------------------------------------------------------------------

    fn list_customers(&self, st: &Store, call: &Call<'_>) -> Result<Out, ApiError> {
        call.need("customer_read")?;
        let q = parse_list(&call.query, &["email", "test_clock"], call.key.live)?;
        let exp = call.expansions(&q.expand, "customer", true)?;
        let ctx = &call.ctx;
        let coll = Coll {
            what: "customer",
            url: "/v1/customers",
            len: self.customer_count_all(st),
            pos_of: Box::new(|id| self.customer_pos(st, id)),
            facts: Box::new(|p| self.customer_facts(st, p)),
            render: Box::new(|p| {
                let mut v = self.customer(st, &self.customer_at(st, p)?, ctx)?;
                self.expand(st, &mut v, &exp, ctx);
                Some(v)
            }),
            candidates: None,
            fast: None,
        };
        list_page(&coll, &q)
    }

    fn list_invoices(&self, st: &Store, call: &Call<'_>) -> Result<Out, ApiError> {
        call.need("invoice_read")?;
        let q = parse_list(
            &call.query,
            &["customer", "status", "subscription", "collection_method"],
            call.key.live,
        )?;
        q.validate_status(&["draft", "open", "paid", "uncollectible", "void"])?;
        let exp = call.expansions(&q.expand, "invoice", true)?;
        let ctx = &call.ctx;
        let n = self.world.invoices();
        let coll = Coll {
            what: "invoice",
            url: "/v1/invoices",
            len: n,
            pos_of: Box::new(|id| decode_gen("in", id).filter(|g| *g < n)),
            facts: Box::new(|g| self.invoice_facts(st, g)),
            render: Box::new(|g| {
                let mut v = self.invoice(st, &gen_id("in", g), ctx)?;
                self.expand(st, &mut v, &exp, ctx);
                Some(v)
            }),
            candidates: q.customer.as_ref().map(|c| {
                decode_gen("cus", c)
                    .map(|k| self.world.invoices_of(k))
                    .unwrap_or_default()
            }),
            fast: Some(Box::new(|g| {
                if !exp.is_empty() || st.invoices.contains_key(&gen_id("in", g)) {
                    return None;
                }
                self.invoice_out(g, ctx).map(|o| to_pretty(&o))
            })),
        };
        list_page(&coll, &q)
    }

    fn list_subs(&self, st: &Store, call: &Call<'_>) -> Result<Out, ApiError> {
        call.need("subscription_read")?;
        let q = parse_list(
            &call.query,
            &["customer", "status", "collection_method", "currency"],
            call.key.live,
        )?;
        q.validate_status(&[
            "active",
            "past_due",
            "unpaid",
            "canceled",
            "incomplete",
            "incomplete_expired",
            "trialing",
            "paused",
            "all",
            "ended",
        ])?;
        let exp = call.expansions(&q.expand, "subscription", true)?;
        let ctx = &call.ctx;
        let n = self.world.subs();
        let coll = Coll {
            what: "subscription",
            url: "/v1/subscriptions",
            len: n,
            pos_of: Box::new(|id| decode_gen("sub", id).filter(|g| *g < n)),
            facts: Box::new(|g| self.sub_facts(st, g)),
            render: Box::new(|g| {
                let mut v = self.sub(st, &gen_id("sub", g), ctx)?;
                self.expand(st, &mut v, &exp, ctx);
                Some(v)
            }),
            candidates: q.customer.as_ref().map(|c| {
                decode_gen("cus", c)
                    .map(|k| self.world.subs_of(k))
                    .unwrap_or_default()
            }),
            fast: None,
        };
        list_page(&coll, &q)
    }

    fn list_items(&self, st: &Store, call: &Call<'_>) -> Result<Out, ApiError> {
        call.need("subscription_read")?;
        let q = parse_list(&call.query, &["subscription"], call.key.live)?;
        let exp = call.expansions(&q.expand, "subscription_item", true)?;
        let Some(sub_id) = &q.subscription else {
            return Err(ApiError::invalid(
                "Missing required param: subscription.",
                Some("subscription"),
            ));
        };
        let sub = self.sub(st, sub_id, &call.ctx).ok_or_else(|| {
            ApiError::missing(
                "subscription",
                sub_id,
                "subscription",
                StatusCode::BAD_REQUEST,
            )
        })?;
        let items: Vec<Value> = sub["items"]["data"].as_array().cloned().unwrap_or_default();
        let ids: Vec<String> = items
            .iter()
            .filter_map(|i| i["id"].as_str().map(str::to_string))
            .collect();
        let ctx = &call.ctx;
        let coll = Coll {
            what: "subscription item",
            url: "/v1/subscription_items",
            len: items.len(),
            pos_of: Box::new(|id| ids.iter().position(|x| x == id)),
            facts: Box::new(|p| {
                items.get(p).map(|i| Facts {
                    created: i["created"].as_i64().unwrap_or(0),
                    ..Facts::default()
                })
            }),
            render: Box::new(|p| {
                let mut v = items.get(p)?.clone();
                self.expand(st, &mut v, &exp, ctx);
                Some(v)
            }),
            candidates: None,
            fast: None,
        };
        let q = ListQuery {
            subscription: None,
            gte: None,
            lte: None,
            ..q
        };
        list_page(&coll, &q)
    }

    fn list_payments(&self, st: &Store, call: &Call<'_>, charges: bool) -> Result<Out, ApiError> {
        let (permission, object, url, extra): (_, _, _, &[&str]) = if charges {
            (
                "charge_read",
                "charge",
                "/v1/charges",
                &["customer", "payment_intent"],
            )
        } else {
            (
                "payment_intent_read",
                "payment_intent",
                "/v1/payment_intents",
                &["customer"],
            )
        };
        call.need(permission)?;
        let q = parse_list(&call.query, extra, call.key.live)?;
        let exp = call.expansions(&q.expand, object, true)?;
        let ctx = &call.ctx;
        let added = st.added_pis.len();
        let by_customer = q.customer.as_ref().map(|c| {
            let mut v: Vec<usize> = (0..added).collect();
            if let Some(k) = decode_gen("cus", c) {
                v.extend(self.world.pis_of(k).into_iter().map(|g| g + added));
            }
            v
        });
        let by_intent = q.payment_intent.as_ref().map(|pi| {
            self.payment_pos(st, pi, false)
                .into_iter()
                .collect::<Vec<_>>()
        });
        let candidates = match (by_customer, by_intent) {
            (Some(a), Some(b)) => Some(a.into_iter().filter(|p| b.contains(p)).collect()),
            (a, b) => a.or(b),
        };
        let coll = Coll {
            what: if charges { "charge" } else { "payment_intent" },
            url,
            len: added + self.world.pis(),
            pos_of: Box::new(|id| self.payment_pos(st, id, charges)),
            facts: Box::new(|p| self.payment_facts(st, p, charges)),
            render: Box::new(|p| {
                let id = self.payment_at(st, p, charges)?;
                let mut v = if charges {
                    self.charge(st, &id, ctx)?
                } else {
                    self.pi(st, &id, ctx)?
                };
                self.expand(st, &mut v, &exp, ctx);
                Some(v)
            }),
            candidates,
            fast: Some(Box::new(|p| {
                // Generated payments, unchanged, with at most their charge expanded.
                let expand_charge = match exp.as_slice() {
                    [] => false,
                    [one] if !charges && one == "latest_charge" => true,
                    _ => return None,
                };
                let g = p.checked_sub(added)?;
                let id = gen_id(if charges { "ch" } else { "pi" }, g);
                if st.pis.contains_key(&id) || st.charges.contains_key(&id) {
                    return None;
                }
                let pay = self.gen_payment_spec(g, ctx)?;
                Some(if charges {
                    to_pretty(&pay.charge_out())
                } else {
                    to_pretty(&pay.pi_out(expand_charge))
                })
            })),
        };
        list_page(&coll, &q)
    }

    fn list_prices(&self, st: &Store, call: &Call<'_>) -> Result<Out, ApiError> {
        call.need("price_read")?;
        let q = parse_list(
            &call.query,
            &[
                "active",
                "type",
                "product",
                "currency",
                "lookup_keys",
                "recurring",
            ],
            call.key.live,
        )?;
        let exp = call.expansions(&q.expand, "price", true)?;
        let ctx = &call.ctx;
        let coll = Coll {
            what: "price",
            url: "/v1/prices",
            len: PRICES.len(),
            pos_of: Box::new(|id| PRICES.iter().position(|p| p.id == id)),
            facts: Box::new(|i| {
                let p = PRICES.get(i)?;
                Some(Facts {
                    created: self.start - p.days_ago * DAY,
                    active: Some(p.active),
                    kind: Some(if p.recurring { "recurring" } else { "one_time" }.to_string()),
                    currency: Some(p.currency.to_string()),
                    product: Some(PRODUCTS[p.product].id.to_string()),
                    lookup_key: p.lookup_key.map(str::to_string),
                    ..Facts::default()
                })
            }),
            render: Box::new(|i| {
                let mut v = price_json(PRICES.get(i)?, self.start, ctx.live);
                self.expand(st, &mut v, &exp, ctx);
                Some(v)
            }),
            candidates: None,
            fast: None,
        };
        list_page(&coll, &q)
    }

    fn list_products(&self, st: &Store, call: &Call<'_>) -> Result<Out, ApiError> {
        call.need("product_read")?;
        let q = parse_list(&call.query, &["active", "shippable", "url"], call.key.live)?;
        let exp = call.expansions(&q.expand, "product", true)?;
        let ctx = &call.ctx;
        let coll = Coll {
            what: "product",
            url: "/v1/products",
            len: PRODUCTS.len(),
            pos_of: Box::new(|id| PRODUCTS.iter().position(|p| p.id == id)),
            facts: Box::new(|i| {
                let p = PRODUCTS.get(i)?;
                Some(Facts {
                    created: self.start - p.days_ago * DAY,
                    active: Some(true),
                    ..Facts::default()
                })
            }),
            render: Box::new(|i| {
                let mut v = product_json(PRODUCTS.get(i)?, self.start, ctx.live);
                self.expand(st, &mut v, &exp, ctx);
                Some(v)
            }),
            candidates: None,
            fast: None,
        };
        list_page(&coll, &q)
    }

    fn list_endpoints(&self, st: &Store, call: &Call<'_>) -> Result<Out, ApiError> {
        call.need("webhook_endpoint_read")?;
        let q = parse_list(&call.query, &[], call.key.live)?;
        call.expansions(&q.expand, "webhook_endpoint", true)?;
        let n = st.endpoints.len();
        let at = |p: usize| (p < n).then(|| &st.endpoints[n - 1 - p]);
        let coll = Coll {
            what: "webhook endpoint",
            url: "/v1/webhook_endpoints",
            len: n,
            pos_of: Box::new(|id| {
                st.endpoints
                    .iter()
                    .position(|e| e.id == id)
                    .map(|i| n - 1 - i)
            }),
            facts: Box::new(|p| {
                at(p).map(|e| Facts {
                    created: e.created,
                    live: Some(e.livemode),
                    ..Facts::default()
                })
            }),
            render: Box::new(|p| at(p).map(|e| e.json(false))),
            candidates: None,
            fast: None,
        };
        list_page(&coll, &q)
    }

    fn list_events(&self, st: &Store, call: &Call<'_>) -> Result<Out, ApiError> {
        call.need("event_read")?;
        let q = parse_list(
            &call.query,
            &["type", "types", "delivery_success"],
            call.key.live,
        )?;
        if q.kind.is_some() && !q.types.is_empty() {
            return Err(ApiError::invalid(
                "You may only specify one of these parameters: type, types.",
                Some("types"),
            ));
        }
        call.expansions(&q.expand, "event", true)?;
        let n = st.events.len();
        let at = |p: usize| (p < n).then(|| &st.events[n - 1 - p]);
        let coll = Coll {
            what: "event",
            url: "/v1/events",
            len: n,
            pos_of: Box::new(|id| st.event_pos.get(id).map(|i| n - 1 - i)),
            facts: Box::new(|p| {
                at(p).map(|e| {
                    let mut f = facts_of(e);
                    f.status = None;
                    f.customer = None;
                    f.pending = e["id"]
                        .as_str()
                        .and_then(|id| st.pending.get(id))
                        .is_some_and(|n| *n > 0);
                    f
                })
            }),
            render: Box::new(|p| at(p).map(|e| event_view(st, e))),
            candidates: None,
            fast: None,
        };
        list_page(&coll, &q)
    }
}

/// An event as `GET /v1/events` shows it: webhooks still pending counted now.
fn event_view(st: &Store, e: &Value) -> Value {
    let mut v = e.clone();
    let pending = e["id"]
        .as_str()
        .and_then(|id| st.pending.get(id))
        .copied()
        .unwrap_or(0);
    v["pending_webhooks"] = json!(pending);
    v
}

// ---------------------------------------------------------------------------------------
// Writes and events

impl Inner {
    /// Records an event and queues its deliveries; returns its id.
    fn event(
        &self,
        st: &mut Store,
        event_type: &str,
        object: Value,
        previous_attributes: Option<Map<String, Value>>,
        live: bool,
        origin: (Option<String>, Option<String>),
    ) -> String {
        let id = self.new_id("evt");
        let targets: Vec<(String, Option<String>)> = st
            .endpoints
            .iter()
            .filter(|e| e.livemode == live && e.wants(event_type))
            .map(|e| (e.id.clone(), e.api_version.clone()))
            .collect();
        let mut object = object;
        if live {
            mark_live(&mut object);
        }
        let mut data = json!({ "object": object });
        if let Some(p) = previous_attributes {
            data["previous_attributes"] = Value::Object(p);
        }
        let event = json!({
            "id": id,
            "object": "event",
            "api_version": STRIPE_VERSION,
            "created": now(),
            "data": data,
            "livemode": live,
            "pending_webhooks": targets.len(),
            "request": {"id": origin.0, "idempotency_key": origin.1},
            "type": event_type,
        });
        let mut bodies = Vec::with_capacity(targets.len());
        for (endpoint_id, version) in targets {
            let mut e = event.clone();
            e["api_version"] = json!(version.unwrap_or_else(|| STRIPE_VERSION.to_string()));
            let body = serde_json::to_string_pretty(&e).unwrap_or_default();
            st.outbox.push(Outgoing {
                event_id: id.clone(),
                endpoint_id: endpoint_id.clone(),
                body: body.clone(),
            });
            bodies.push((endpoint_id, body));
        }
        if !bodies.is_empty() {
            st.pending.insert(id.clone(), bodies.len() as u32);
        }
        st.bodies.insert(id.clone(), bodies);
        st.event_pos.insert(id.clone(), st.events.len());
        st.events.push(event);
        id
    }

    /// Applies `f` to the customer's value; the new value and what changed (`None`:
    /// unknown or deleted).
    fn change_customer(
        &self,
        st: &mut Store,
        id: &str,
        f: impl FnOnce(&mut Value) -> Result<(), ApiError>,
    ) -> Result<Option<Changed>, ApiError> {
        let ctx = self.ctx(false);
        let Some(old) = self.live_customer(st, id, &ctx) else {
            return Ok(None);
        };
        let mut new = old.clone();
        f(&mut new)?;
        let prev = previous(&old, &new);
        st.customers.insert(id.to_string(), new.clone());
        Ok(Some((new, prev)))
    }

    fn remove_customer(
        &self,
        st: &mut Store,
        id: &str,
        live: bool,
        origin: (Option<String>, Option<String>),
    ) -> bool {
        let ctx = self.ctx(false);
        let Some(last) = self.live_customer(st, id, &ctx) else {
            return false;
        };
        st.deleted.insert(id.to_string());
        // Stripe cancels a deleted customer's subscriptions.
        let subs: Vec<usize> = decode_gen("cus", id)
            .map(|k| self.world.subs_of(k))
            .unwrap_or_default();
        let t = now();
        for g in subs {
            let sub_id = gen_id("sub", g);
            let Some(old) = self.sub(st, &sub_id, &ctx) else {
                continue;
            };
            if matches!(
                old["status"].as_str(),
                Some("canceled" | "incomplete_expired")
            ) {
                continue;
            }
            let mut new = old.clone();
            new["status"] = json!("canceled");
            new["canceled_at"] = json!(t);
            new["ended_at"] = json!(t);
            new["cancel_at_period_end"] = json!(false);
            new["cancel_at"] = Value::Null;
            st.subs.insert(sub_id, new.clone());
            self.event(
                st,
                "customer.subscription.deleted",
                new,
                None,
                live,
                origin.clone(),
            );
        }
        self.event(st, "customer.deleted", last, None, live, origin);
        true
    }

    fn create_customer(&self, st: &mut Store, call: &Call<'_>) -> Result<Value, ApiError> {
        call.need("customer_write")?;
        let p = &call.form;
        check_allowed(
            p,
            &[
                "name",
                "email",
                "description",
                "phone",
                "metadata",
                "preferred_locales",
            ],
        )?;
        let exp = call.write_expansions("customer")?;
        let name = optional_string(p, "name")?.flatten();
        let email = optional_string(p, "email")?.flatten();
        if let Some(e) = &email
            && !valid_email(e)
        {
            return Err(ApiError::invalid(
                format!("Invalid email address: {e}"),
                Some("email"),
            ));
        }
        let description = optional_string(p, "description")?.flatten();
        let phone = optional_string(p, "phone")?.flatten();
        let meta = metadata_param(p)?;
        let id = self.new_id("cus");
        let spec = CustomerSpec {
            name: name.unwrap_or_default(),
            email,
            currency: None,
            created: now(),
            deleted: false,
            delinquent: false,
            invoices: 0,
        };
        let mut v = customer_json(&id, &spec, false);
        v["description"] = json!(description);
        v["phone"] = json!(phone);
        if let Some(m) = &meta {
            apply_meta(&mut v["metadata"], m)?;
        }
        st.customers.insert(id.clone(), v.clone());
        st.added_customers.push(id.clone());
        self.event(
            st,
            "customer.created",
            v.clone(),
            None,
            call.key.live,
            call.origin(),
        );
        let mut out = localize(v, &call.ctx);
        self.expand(st, &mut out, &exp, &call.ctx);
        Ok(out)
    }

    fn update_customer_api(
        &self,
        st: &mut Store,
        call: &Call<'_>,
        id: &str,
    ) -> Result<Value, ApiError> {
        call.need("customer_write")?;
        let p = &call.form;
        check_allowed(
            p,
            &[
                "name",
                "email",
                "description",
                "phone",
                "metadata",
                "preferred_locales",
            ],
        )?;
        let exp = call.write_expansions("customer")?;
        let name = optional_string(p, "name")?;
        let email = optional_string(p, "email")?;
        if let Some(Some(e)) = &email
            && !valid_email(e)
        {
            return Err(ApiError::invalid(
                format!("Invalid email address: {e}"),
                Some("email"),
            ));
        }
        let description = optional_string(p, "description")?;
        let phone = optional_string(p, "phone")?;
        let meta = metadata_param(p)?;
        let changed = self.change_customer(st, id, |v| {
            for (k, x) in [
                ("name", name),
                ("email", email),
                ("description", description),
                ("phone", phone),
            ] {
                if let Some(x) = x {
                    v[k] = json!(x);
                }
            }
            if let Some(m) = &meta {
                apply_meta(&mut v["metadata"], m)?;
            }
            Ok(())
        })?;
        let Some((new, prev)) = changed else {
            return Err(ApiError::not_found("customer", id));
        };
        if !prev.is_empty() {
            self.event(
                st,
                "customer.updated",
                new.clone(),
                Some(prev),
                call.key.live,
                call.origin(),
            );
        }
        let mut out = localize(new, &call.ctx);
        self.expand(st, &mut out, &exp, &call.ctx);
        Ok(out)
    }

    /// A subscription as stored (test mode); refuses canceled ones.
    fn sub_for_update(
        &self,
        st: &Store,
        id: &str,
        what: &str,
        shown: &str,
    ) -> Result<Value, ApiError> {
        let ctx = self.ctx(false);
        let sub = self
            .sub(st, id, &ctx)
            .ok_or_else(|| ApiError::not_found(what, shown))?;
        if matches!(
            sub["status"].as_str(),
            Some("canceled" | "incomplete_expired")
        ) {
            return Err(ApiError::invalid(
                format!(
                    "You cannot update a subscription that is `{}`.",
                    sub["status"].as_str().unwrap_or("canceled")
                ),
                None,
            ));
        }
        Ok(sub)
    }

    /// Stores a changed subscription, counts a quantity change and sends the event.
    fn save_sub(
        &self,
        st: &mut Store,
        old: &Value,
        new: Value,
        live: bool,
        origin: (Option<String>, Option<String>),
    ) {
        let prev = previous(old, &new);
        if prev.is_empty() {
            return;
        }
        let quantities = |v: &Value| -> Vec<(Value, Value)> {
            v["items"]["data"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|i| (i["id"].clone(), i["quantity"].clone()))
                        .collect()
                })
                .unwrap_or_default()
        };
        if quantities(old) != quantities(&new) {
            self.quantity_updates.fetch_add(1, Ordering::Relaxed);
        }
        let id = new["id"].as_str().unwrap_or_default().to_string();
        st.subs.insert(id, new.clone());
        self.event(
            st,
            "customer.subscription.updated",
            new,
            Some(prev),
            live,
            origin,
        );
    }

    fn proration(p: &Map<String, Value>) -> Result<(), ApiError> {
        match string_param(p, "proration_behavior")?.as_deref() {
            None | Some("create_prorations" | "none" | "always_invoice") => Ok(()),
            Some(other) => Err(ApiError::invalid(
                format!(
                    "Invalid proration_behavior: must be one of create_prorations, none, or always_invoice (got {other})"
                ),
                Some("proration_behavior"),
            )),
        }
    }

    fn quantity(v: Option<&Value>, param: &str) -> Result<Option<u64>, ApiError> {
        match v {
            None => Ok(None),
            Some(v) => {
                let n = int_value(v, param)?;
                if n < 0 {
                    return Err(ApiError::invalid(
                        "This value must be greater than or equal to 0.",
                        Some(param),
                    ));
                }
                Ok(Some(n as u64))
            }
        }
    }

    fn update_item_api(
        &self,
        st: &mut Store,
        call: &Call<'_>,
        item_id: &str,
    ) -> Result<Value, ApiError> {
        call.need("subscription_write")?;
        let p = &call.form;
        check_allowed(
            p,
            &[
                "quantity",
                "proration_behavior",
                "proration_date",
                "payment_behavior",
                "metadata",
            ],
        )?;
        let exp = call.write_expansions("subscription_item")?;
        let quantity = Self::quantity(p.get("quantity"), "quantity")?;
        Self::proration(p)?;
        let meta = metadata_param(p)?;
        let missing = || ApiError::not_found("subscription item", item_id);
        let sub_id = self.sub_of_item(st, item_id).ok_or_else(missing)?;
        let old = self.sub_for_update(st, &sub_id, "subscription item", item_id)?;
        let mut new = old.clone();
        let Some(item) = new["items"]["data"]
            .as_array_mut()
            .and_then(|a| a.iter_mut().find(|i| i["id"] == item_id))
        else {
            return Err(missing());
        };
        if let Some(q) = quantity {
            item["quantity"] = json!(q);
        }
        if let Some(m) = &meta {
            apply_meta(&mut item["metadata"], m)?;
        }
        let item = item.clone();
        self.save_sub(st, &old, new, call.key.live, call.origin());
        let mut out = localize(item, &call.ctx);
        self.expand(st, &mut out, &exp, &call.ctx);
        Ok(out)
    }

    fn update_sub_api(&self, st: &mut Store, call: &Call<'_>, id: &str) -> Result<Value, ApiError> {
        call.need("subscription_write")?;
        let p = &call.form;
        check_allowed(
            p,
            &[
                "items",
                "proration_behavior",
                "proration_date",
                "payment_behavior",
                "metadata",
                "cancel_at_period_end",
                "description",
            ],
        )?;
        let exp = call.write_expansions("subscription")?;
        Self::proration(p)?;
        let meta = metadata_param(p)?;
        let cancel = match p.get("cancel_at_period_end") {
            Some(v) => Some(bool_value(v, "cancel_at_period_end")?),
            None => None,
        };
        let description = optional_string(p, "description")?;
        let items = match p.get("items") {
            None => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            Some(_) => {
                return Err(ApiError::invalid(
                    "Invalid array: items must be an array, as items[0][id]=…",
                    Some("items"),
                ));
            }
        };
        let old = self.sub_for_update(st, id, "subscription", id)?;
        let mut new = old.clone();
        let currency = old["currency"].as_str().unwrap_or("usd").to_string();
        let period = (
            old["items"]["data"][0]["current_period_start"].clone(),
            old["items"]["data"][0]["current_period_end"].clone(),
        );
        for (n, item) in items.iter().enumerate() {
            let param = |k: &str| format!("items[{n}][{k}]");
            let Value::Object(fields) = item else {
                return Err(ApiError::invalid(
                    format!("Invalid object: items[{n}]"),
                    Some(&format!("items[{n}]")),
                ));
            };
            for k in fields.keys() {
                if !["id", "quantity", "price", "deleted", "metadata"].contains(&k.as_str()) {
                    return Err(ApiError::unknown_param(&param(k)));
                }
            }
            let quantity = Self::quantity(fields.get("quantity"), &param("quantity"))?;
            let deleted = match fields.get("deleted") {
                Some(v) => bool_value(v, &param("deleted"))?,
                None => false,
            };
            let item_meta = metadata_param(fields)?;
            let data = new["items"]["data"].as_array_mut();
            let Some(data) = data else { continue };
            match (string_param(fields, "id")?, string_param(fields, "price")?) {
                (Some(item_id), price) => {
                    let Some(pos) = data.iter().position(|i| i["id"] == item_id.as_str()) else {
                        return Err(ApiError::invalid(
                            format!("No such subscription item: '{item_id}'"),
                            Some(&param("id")),
                        ));
                    };
                    if deleted {
                        data.remove(pos);
                        continue;
                    }
                    let target = &mut data[pos];
                    if let Some(q) = quantity {
                        target["quantity"] = json!(q);
                    }
                    if let Some(price_id) = price {
                        let def = price_by_id(&price_id)
                            .filter(|d| d.recurring && d.active && d.currency == currency)
                            .ok_or_else(|| {
                                ApiError::missing(
                                    "price",
                                    &price_id,
                                    &param("price"),
                                    StatusCode::BAD_REQUEST,
                                )
                            })?;
                        target["price"] = price_json(def, self.start, false);
                        target["plan"] = plan_json(def, self.start, false);
                    }
                    if let Some(m) = &item_meta {
                        apply_meta(&mut target["metadata"], m)?;
                    }
                }
                (None, Some(price_id)) => {
                    let def = price_by_id(&price_id)
                        .filter(|d| d.recurring && d.active && d.currency == currency)
                        .ok_or_else(|| {
                            ApiError::missing(
                                "price",
                                &price_id,
                                &param("price"),
                                StatusCode::BAD_REQUEST,
                            )
                        })?;
                    let mut v = item_json(
                        &ItemView {
                            id: self.new_id("si"),
                            subscription: id,
                            price: def,
                            quantity: quantity.unwrap_or(1) as u32,
                            created: now(),
                            period: (
                                period.0.as_i64().unwrap_or_else(now),
                                period.1.as_i64().unwrap_or_else(now),
                            ),
                        },
                        self.start,
                        false,
                    );
                    if let Some(m) = &item_meta {
                        apply_meta(&mut v["metadata"], m)?;
                    }
                    data.push(v);
                }
                (None, None) => {
                    return Err(ApiError::invalid(
                        format!("Missing required param: items[{n}][id] or items[{n}][price]."),
                        Some(&param("id")),
                    ));
                }
            }
        }
        let count = new["items"]["data"].as_array().map(Vec::len).unwrap_or(0);
        new["items"]["total_count"] = json!(count);
        if let Some(c) = cancel {
            new["cancel_at_period_end"] = json!(c);
            new["cancel_at"] = if c { period.1.clone() } else { Value::Null };
        }
        if let Some(d) = description {
            new["description"] = json!(d);
        }
        if let Some(m) = &meta {
            apply_meta(&mut new["metadata"], m)?;
        }
        self.save_sub(st, &old, new.clone(), call.key.live, call.origin());
        let mut out = localize(new, &call.ctx);
        self.expand(st, &mut out, &exp, &call.ctx);
        Ok(out)
    }

    fn create_session(&self, st: &mut Store, call: &Call<'_>) -> Result<Value, ApiError> {
        call.need("billing_portal_write")?;
        let p = &call.form;
        check_allowed(
            p,
            &[
                "customer",
                "return_url",
                "configuration",
                "locale",
                "on_behalf_of",
                "flow_data",
            ],
        )?;
        let exp = call.write_expansions("billing_portal.session")?;
        let Some(customer) = string_param(p, "customer")?.filter(|c| !c.is_empty()) else {
            return Err(ApiError::invalid(
                "Missing required param: customer.",
                Some("customer"),
            ));
        };
        if self.live_customer(st, &customer, &call.ctx).is_none() {
            return Err(ApiError::missing(
                "customer",
                &customer,
                "customer",
                StatusCode::BAD_REQUEST,
            ));
        }
        let return_url = string_param(p, "return_url")?.filter(|u| !u.is_empty());
        if let Some(u) = &return_url
            && !valid_url(u)
        {
            return Err(ApiError::invalid("Not a valid URL", Some("return_url")));
        }
        let secret = alnum(self.entropy(), 32);
        let id = self.new_id("bps");
        st.sessions.insert(
            secret.clone(),
            Session {
                customer: customer.clone(),
                return_url: return_url.clone(),
            },
        );
        let mut v = json!({
            "id": id,
            "object": "billing_portal.session",
            "configuration": "bpc_1MspBridgeDemoPortal",
            "created": now(),
            "customer": customer,
            "flow": null,
            "livemode": call.key.live,
            "locale": string_param(p, "locale")?,
            "on_behalf_of": null,
            "return_url": return_url,
            "url": format!("{}/p/session/{secret}", call.ctx.base),
        });
        self.expand(st, &mut v, &exp, &call.ctx);
        Ok(v)
    }

    fn endpoint_events(
        p: &Map<String, Value>,
        required: bool,
    ) -> Result<Option<Vec<String>>, ApiError> {
        if !p.contains_key("enabled_events") {
            if required {
                return Err(ApiError::invalid(
                    "Missing required param: enabled_events.",
                    Some("enabled_events"),
                ));
            }
            return Ok(None);
        }
        let events = string_list(p, "enabled_events")?;
        if events.is_empty() {
            return Err(ApiError::invalid(
                "Missing required param: enabled_events.",
                Some("enabled_events"),
            ));
        }
        for (i, e) in events.iter().enumerate() {
            if !valid_event_type(e) {
                return Err(ApiError::invalid(
                    format!("Invalid enabled_events[{i}]: '{e}' is not a valid event type."),
                    Some(&format!("enabled_events[{i}]")),
                ));
            }
        }
        Ok(Some(events))
    }

    fn create_endpoint_api(&self, st: &mut Store, call: &Call<'_>) -> Result<Value, ApiError> {
        call.need("webhook_endpoint_write")?;
        let p = &call.form;
        check_allowed(
            p,
            &[
                "url",
                "enabled_events",
                "api_version",
                "description",
                "metadata",
                "connect",
            ],
        )?;
        call.write_expansions("webhook_endpoint")?;
        let Some(url) = string_param(p, "url")?.filter(|u| !u.is_empty()) else {
            return Err(ApiError::invalid(
                "Missing required param: url.",
                Some("url"),
            ));
        };
        if !valid_url(&url) {
            return Err(ApiError::invalid(
                format!("Invalid URL: {url}. URLs must begin with http:// or https://."),
                Some("url"),
            ));
        }
        let events = Self::endpoint_events(p, true)?.unwrap_or_default();
        let api_version = string_param(p, "api_version")?.filter(|v| !v.is_empty());
        if let Some(v) = &api_version
            && !valid_version(v)
        {
            return Err(ApiError::invalid(
                format!("Invalid API version: {v}"),
                Some("api_version"),
            ));
        }
        let mut metadata = Value::Object(Map::new());
        if let Some(m) = metadata_param(p)? {
            apply_meta(&mut metadata, &m)?;
        }
        let e = Endpoint {
            id: self.new_id("we"),
            url,
            enabled_events: events,
            api_version,
            description: string_param(p, "description")?.filter(|d| !d.is_empty()),
            metadata: match metadata {
                Value::Object(m) => m,
                _ => Map::new(),
            },
            enabled: true,
            livemode: call.key.live,
            created: now(),
            secret: format!("whsec_{}", alnum(self.entropy(), 32)),
            old_secret: None,
        };
        let v = e.json(true);
        st.endpoints.push(e);
        Ok(v)
    }

    fn update_endpoint_api(
        &self,
        st: &mut Store,
        call: &Call<'_>,
        id: &str,
    ) -> Result<Value, ApiError> {
        call.need("webhook_endpoint_write")?;
        let p = &call.form;
        check_allowed(
            p,
            &[
                "url",
                "enabled_events",
                "description",
                "metadata",
                "disabled",
            ],
        )?;
        call.write_expansions("webhook_endpoint")?;
        let url = string_param(p, "url")?;
        if let Some(u) = &url
            && !valid_url(u)
        {
            return Err(ApiError::invalid(
                format!("Invalid URL: {u}. URLs must begin with http:// or https://."),
                Some("url"),
            ));
        }
        let events = Self::endpoint_events(p, false)?;
        let disabled = match p.get("disabled") {
            Some(v) => Some(bool_value(v, "disabled")?),
            None => None,
        };
        let description = optional_string(p, "description")?;
        let meta = metadata_param(p)?;
        let live = call.key.live;
        let Some(e) = st
            .endpoints
            .iter_mut()
            .find(|e| e.id == id && e.livemode == live)
        else {
            return Err(ApiError::not_found("webhook endpoint", id));
        };
        if let Some(u) = url {
            e.url = u;
        }
        if let Some(ev) = events {
            e.enabled_events = ev;
        }
        if let Some(d) = disabled {
            e.enabled = !d;
        }
        if let Some(d) = description {
            e.description = d;
        }
        if let Some(m) = &meta {
            let mut v = Value::Object(e.metadata.clone());
            apply_meta(&mut v, m)?;
            if let Value::Object(m) = v {
                e.metadata = m;
            }
        }
        Ok(e.json(false))
    }

    /// A new payment intent and charge for `inv` (test mode), stored.
    fn new_payment(
        &self,
        st: &mut Store,
        inv: &Value,
        status: PiStatus,
        message: Option<&str>,
    ) -> (Value, Value) {
        let ctx = self.ctx(false);
        let pi_id = self.new_id("pi");
        let ch_id = self.new_id("ch");
        let customer_id = inv["customer"].as_str().unwrap_or_default().to_string();
        let customer = self.customer(st, &customer_id, &ctx).unwrap_or(Value::Null);
        let p = Payment {
            pi_id: pi_id.clone(),
            ch_id: ch_id.clone(),
            customer: customer_id,
            name: customer["name"].as_str().map(str::to_string),
            email: customer["email"].as_str().map(str::to_string),
            amount: inv["amount_remaining"].as_i64().unwrap_or(0),
            currency: inv["currency"].as_str().unwrap_or("usd").to_string(),
            status,
            created: now(),
            description: match inv["number"].as_str() {
                Some(n) => format!("Invoice {n}"),
                None => "Payment for services".to_string(),
            },
            message: message.map(str::to_string),
            seed: self.entropy(),
            live: false,
            base: ctx.base.clone(),
        };
        let (pi, ch) = (p.pi_json(), p.charge_json());
        st.pis.insert(pi_id.clone(), pi.clone());
        st.charges.insert(ch_id.clone(), ch.clone());
        st.added_pis.push((pi_id, ch_id));
        (pi, ch)
    }

    /// The subscription of `inv` moves from `from` to `to` (with its event).
    fn move_sub(&self, st: &mut Store, inv: &Value, from: &str, to: &str) {
        let Some(sub_id) = inv["parent"]["subscription_details"]["subscription"].as_str() else {
            return;
        };
        let ctx = self.ctx(false);
        let Some(old) = self.sub(st, sub_id, &ctx) else {
            return;
        };
        if old["status"] != from {
            return;
        }
        let mut new = old.clone();
        new["status"] = json!(to);
        self.save_sub(st, &old, new, false, (None, None));
    }

    /// The hosted page's Pay: the invoice paid by a new succeeded payment.
    fn pay(&self, st: &mut Store, id: &str) -> bool {
        let ctx = self.ctx(false);
        let Some(old) = self.invoice(st, id, &ctx) else {
            return false;
        };
        if old["status"] != "open" {
            return false;
        }
        let (pi, _) = self.new_payment(st, &old, PiStatus::Succeeded, None);
        let mut inv = old.clone();
        let t = now();
        let due = inv["amount_due"].as_i64().unwrap_or(0);
        inv["status"] = json!("paid");
        inv["amount_paid"] = json!(due);
        inv["amount_remaining"] = json!(0);
        inv["status_transitions"]["paid_at"] = json!(t);
        inv["attempt_count"] = json!(inv["attempt_count"].as_u64().unwrap_or(0) + 1);
        inv["attempted"] = json!(true);
        inv["auto_advance"] = json!(false);
        inv["next_payment_attempt"] = Value::Null;
        let prev = previous(&old, &inv);
        st.invoices.insert(id.to_string(), inv.clone());
        self.event(
            st,
            "payment_intent.succeeded",
            pi,
            None,
            false,
            (None, None),
        );
        self.event(
            st,
            "invoice.paid",
            inv.clone(),
            Some(prev.clone()),
            false,
            (None, None),
        );
        self.event(
            st,
            "invoice.payment_succeeded",
            inv.clone(),
            Some(prev),
            false,
            (None, None),
        );
        self.move_sub(st, &inv, "past_due", "active");
        true
    }

    /// A declined attempt to pay the open invoice `id`.
    fn fail(&self, st: &mut Store, id: &str, message: &str) -> bool {
        let ctx = self.ctx(false);
        let Some(old) = self.invoice(st, id, &ctx) else {
            return false;
        };
        if old["status"] != "open" {
            return false;
        }
        let (pi, _) = self.new_payment(st, &old, PiStatus::Failed, Some(message));
        let mut inv = old.clone();
        inv["attempt_count"] = json!(inv["attempt_count"].as_u64().unwrap_or(0) + 1);
        inv["attempted"] = json!(true);
        let automatic = inv["collection_method"] == "charge_automatically";
        if automatic {
            inv["next_payment_attempt"] = json!(now() + 3 * DAY);
        }
        let prev = previous(&old, &inv);
        st.invoices.insert(id.to_string(), inv.clone());
        self.event(
            st,
            "invoice.payment_failed",
            inv.clone(),
            Some(prev),
            false,
            (None, None),
        );
        self.event(
            st,
            "payment_intent.payment_failed",
            pi,
            None,
            false,
            (None, None),
        );
        if automatic {
            self.move_sub(st, &inv, "active", "past_due");
        }
        true
    }
}

// ---------------------------------------------------------------------------------------
// Requests

/// An answer before it becomes a response.
struct Answer {
    status: StatusCode,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
    /// Cut the body in half (a lost answer).
    truncate: bool,
}

impl Answer {
    fn into_response(self) -> Response {
        let mut body = self.body;
        if self.truncate {
            body.truncate(body.len() / 2);
        }
        let mut resp = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            Body::from(body),
        )
            .into_response();
        for (k, v) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&v) {
                resp.headers_mut().insert(HeaderName::from_static(k), v);
            }
        }
        resp
    }
}

fn pretty(v: &Value) -> Vec<u8> {
    serde_json::to_vec_pretty(v).unwrap_or_default()
}

impl Inner {
    fn handle(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> (Answer, Vec<Outgoing>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let header = |h: &str| {
            headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let version = header("stripe-version").filter(|v| !v.is_empty());
        let idempotency_key = header("idempotency-key").filter(|k| !k.is_empty());
        let mut st = lock(&self.state);
        let answer = self.answer(
            &mut st,
            method,
            uri,
            headers,
            body,
            version.as_deref(),
            idempotency_key.as_deref(),
        );
        st.seen.push(SeenRequest {
            method: method.to_string(),
            path: uri.path().to_string(),
            query: uri.query().unwrap_or_default().to_string(),
            body: String::from_utf8_lossy(body).into_owned(),
            stripe_version: version,
            idempotency_key,
            status: answer.status.as_u16(),
        });
        let out = std::mem::take(&mut st.outbox);
        (answer, out)
    }

    #[allow(clippy::too_many_arguments)]
    fn answer(
        &self,
        st: &mut Store,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
        version: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Answer {
        let request_id = self.request_id();
        let mut out_headers = vec![
            ("request-id", request_id.clone()),
            (
                "stripe-version",
                version.unwrap_or(STRIPE_VERSION).to_string(),
            ),
        ];
        if let Some(k) = idempotency_key {
            out_headers.push(("idempotency-key", k.to_string()));
        }
        let fail = |e: ApiError, live: bool, mut h: Vec<(&'static str, String)>| {
            if e.status == StatusCode::TOO_MANY_REQUESTS {
                h.push(("stripe-should-retry", "true".to_string()));
            }
            Answer {
                status: e.status,
                body: pretty(&e.body(&request_id, live)),
                headers: h,
                truncate: false,
            }
        };
        if let Some(v) = version
            && !valid_version(v)
        {
            return fail(
                ApiError::invalid(format!("Invalid Stripe API version: {v}"), None),
                false,
                out_headers,
            );
        }
        let Some(raw_key) = key_of(headers) else {
            return fail(
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_request_error",
                    "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, or we can help at https://support.stripe.com/.",
                ),
                false,
                out_headers,
            );
        };
        let Some(key) = self.classify(st, &raw_key) else {
            return fail(
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_request_error",
                    format!("Invalid API Key provided: {}", mask_key(&raw_key)),
                ),
                false,
                out_headers,
            );
        };
        let live = key.live;
        let limiter = if live {
            &self.live_limit
        } else {
            &self.test_limit
        };
        if !limiter.admit() {
            self.throttled.fetch_add(1, Ordering::Relaxed);
            return fail(
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "invalid_request_error",
                    RATE_LIMIT_MESSAGE,
                )
                .with_code(
                    "rate_limit",
                    "https://stripe.com/docs/error-codes/rate-limit",
                ),
                live,
                out_headers,
            );
        }
        let query = match parse_form(uri.query().unwrap_or_default()) {
            Ok(q) => q,
            Err(k) => {
                return fail(
                    ApiError::invalid(format!("Invalid query parameter: {k}"), Some(&k)),
                    live,
                    out_headers,
                );
            }
        };
        let post = *method == Method::POST;
        let form = if post || *method == Method::DELETE {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_ascii_lowercase();
            if !body.is_empty() && !content_type.starts_with("application/x-www-form-urlencoded") {
                return fail(
                    ApiError::invalid(
                        format!(
                            "Invalid request: unsupported Content-Type {content_type}. If error persists and you need assistance, please contact support@stripe.com."
                        ),
                        None,
                    ),
                    live,
                    out_headers,
                );
            }
            match std::str::from_utf8(body)
                .map_err(|_| "body".to_string())
                .and_then(parse_form)
            {
                Ok(f) => f,
                Err(k) => {
                    return fail(
                        ApiError::invalid(format!("Invalid request body near: {k}"), Some(&k)),
                        live,
                        out_headers,
                    );
                }
            }
        } else {
            Map::new()
        };
        let path = uri.path();
        let request = json!({"method": method.as_str(), "path": path, "params": form});
        if post && let Some(k) = idempotency_key {
            let slot = (key.key.clone(), k.to_string());
            if st
                .idempotency
                .get(&slot)
                .is_some_and(|s| s.at.elapsed() >= IDEMPOTENCY_TTL)
            {
                st.idempotency.remove(&slot);
            }
            if let Some(saved) = st.idempotency.get(&slot).cloned() {
                if saved.request != request {
                    return fail(
                        ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "idempotency_error",
                            format!(
                                "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{k}' if you meant to execute a different request."
                            ),
                        ),
                        live,
                        out_headers,
                    );
                }
                out_headers.push(("idempotent-replayed", "true".to_string()));
                out_headers.push(("original-request", saved.request_id.clone()));
                let truncate = self.take_lost(st, path);
                return Answer {
                    status: StatusCode::from_u16(saved.status).unwrap_or(StatusCode::OK),
                    body: saved.body,
                    headers: out_headers,
                    truncate,
                };
            }
        }
        let host_base = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| format!("http://{h}"));
        let base = lock(&self.public_base)
            .clone()
            .or(host_base)
            .unwrap_or_else(|| self.base());
        let segs: Vec<String> = path
            .strip_prefix("/v1/")
            .unwrap_or_default()
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| decode(s).unwrap_or_else(|| s.to_string()))
            .collect();
        let call = Call {
            method: method.clone(),
            segs,
            query,
            form,
            key: &key,
            ctx: Ctx { live, base },
            request_id: &request_id,
            idempotency_key,
        };
        let (status, bytes) = match self.dispatch(st, &call) {
            Ok(Out::Json(v)) => (StatusCode::OK, pretty(&v)),
            Ok(Out::Text(t)) => (StatusCode::OK, t),
            Err(e) => (e.status, pretty(&e.body(&request_id, live))),
        };
        if post
            && status.is_success()
            && let Some(k) = idempotency_key
        {
            st.idempotency.insert(
                (key.key.clone(), k.to_string()),
                Saved {
                    request,
                    status: status.as_u16(),
                    body: bytes.clone(),
                    request_id: request_id.clone(),
                    at: Instant::now(),
                },
            );
        }
        let truncate = post && self.take_lost(st, path);
        Answer {
            status,
            body: bytes,
            headers: out_headers,
            truncate,
        }
    }

    /// Whether the answer to this POST is to be lost (consumes the request for it).
    fn take_lost(&self, st: &mut Store, path: &str) -> bool {
        match st.lose_next.iter().position(|f| path.contains(f.as_str())) {
            Some(i) => {
                st.lose_next.remove(i);
                true
            }
            None => false,
        }
    }

    fn client(&self) -> reqwest::Client {
        self.client
            .get_or_init(|| {
                OutboundPolicy {
                    allow_private: true,
                }
                .client(Duration::from_secs(10))
            })
            .clone()
    }
}

async fn api(
    State(s): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (answer, out) = s.handle(&method, &uri, &headers, &body);
    spawn_deliveries(&s, out);
    answer.into_response()
}

// ---------------------------------------------------------------------------------------
// Webhook deliveries

fn spawn_deliveries(inner: &Arc<Inner>, out: Vec<Outgoing>) {
    if out.is_empty() {
        return;
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    for o in out {
        rt.spawn(deliver(inner.clone(), o));
    }
}

/// POSTs one event to one endpoint, retrying after each configured delay on a non-2xx
/// answer or none; every attempt is recorded.
async fn deliver(inner: Arc<Inner>, o: Outgoing) {
    let client = inner.client();
    let delays = lock(&inner.retry_delays).clone();
    let mut attempt: u32 = 1;
    loop {
        let target = {
            let st = lock(&inner.state);
            st.endpoints
                .iter()
                .find(|e| e.id == o.endpoint_id && e.enabled)
                .map(|e| (e.url.clone(), e.secret.clone(), e.old_secret.clone()))
        };
        let Some((url, secret, old)) = target else {
            return;
        };
        let t = now() - inner.signature_age.load(Ordering::Relaxed);
        let mut secrets = vec![secret.as_str()];
        if let Some(old) = &old {
            secrets.push(old.as_str());
        }
        let signature = signature_header(t, &o.body, &secrets);
        let sent = client
            .post(&url)
            .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
            .header(
                header::USER_AGENT,
                "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            )
            .header(header::ACCEPT, "*/*; q=0.5, application/xml")
            .header(header::CACHE_CONTROL, "no-cache")
            .header("Stripe-Signature", signature)
            .body(o.body.clone())
            .send()
            .await;
        let status = match sent {
            Ok(r) => r.status().as_u16(),
            Err(e) => {
                tracing::debug!(url = %url, error = %e, "stripe sandbox: webhook not answered");
                0
            }
        };
        lock(&inner.deliveries).push((o.event_id.clone(), attempt, status));
        if (200..300).contains(&status) {
            let mut st = lock(&inner.state);
            if let Some(n) = st.pending.get_mut(&o.event_id) {
                *n = n.saturating_sub(1);
            }
            return;
        }
        let Some(delay) = delays.get(attempt as usize - 1) else {
            return;
        };
        tokio::time::sleep(*delay).await;
        attempt += 1;
    }
}

// ---------------------------------------------------------------------------------------
// Hosted pages

fn html_page(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title></head>\n<body style=\"font-family: sans-serif; max-width: 40em; margin: 2em auto\">\n<p><strong>{account}</strong></p>\n<h1>{t}</h1>\n{body}\n</body></html>\n",
        t = html_escape(title),
        account = html_escape(ACCOUNT_NAME),
    );
    (status, Html(page)).into_response()
}

fn not_found_page() -> Response {
    html_page(
        StatusCode::NOT_FOUND,
        "Page not found",
        "<p>This link is not valid or has expired.</p>",
    )
}

fn date(t: Option<i64>) -> String {
    t.and_then(|t| DateTime::from_timestamp(t, 0))
        .map(|d| d.format("%B %-d, %Y").to_string())
        .unwrap_or_else(|| "—".to_string())
}

fn invoice_html(inv: &Value, secret: &str, just_paid: bool) -> Response {
    let s = |k: &str| inv[k].as_str().unwrap_or_default().to_string();
    let currency = s("currency");
    let money = |k: &str| format_money(inv[k].as_i64().unwrap_or(0), &currency);
    let number = s("number");
    let status = s("status");
    let mut body = format!(
        "<p>Invoice <strong id=\"number\">{}</strong></p>\n<p>Billed to <span id=\"customer\">{}</span></p>\n<table>\n<tr><td>Amount due</td><td id=\"amount\">{}</td></tr>\n<tr><td>Due date</td><td id=\"due\">{}</td></tr>\n<tr><td>Status</td><td id=\"status\">{}</td></tr>\n</table>\n",
        html_escape(&number),
        html_escape(&s("customer_name")),
        html_escape(&money("amount_due")),
        html_escape(&date(inv["due_date"].as_i64())),
        html_escape(&status),
    );
    let mut lines = String::new();
    for l in inv["lines"]["data"].as_array().into_iter().flatten() {
        let _ = writeln!(
            lines,
            "<li>{} — {}</li>",
            html_escape(l["description"].as_str().unwrap_or_default()),
            html_escape(&format_money(l["amount"].as_i64().unwrap_or(0), &currency)),
        );
    }
    if !lines.is_empty() {
        let _ = write!(body, "<ul>\n{lines}</ul>\n");
    }
    let title = match status.as_str() {
        "open" => {
            let _ = write!(
                body,
                "<form method=\"post\" action=\"/i/{secret}/pay\">\n<p>Pay {} by card.</p>\n<button type=\"submit\" id=\"pay\">Pay</button>\n</form>\n",
                html_escape(&money("amount_remaining")),
            );
            format!("Invoice from {ACCOUNT_NAME}")
        }
        "paid" => {
            let _ = writeln!(
                body,
                "<p id=\"paid\">Invoice paid: {} on {}.</p>",
                html_escape(&money("amount_paid")),
                html_escape(&date(inv["status_transitions"]["paid_at"].as_i64())),
            );
            if just_paid {
                body.push_str("<p>Thank you for your payment.</p>\n");
            }
            "Invoice paid".to_string()
        }
        "void" => {
            body.push_str("<p>This invoice has been voided: nothing is due.</p>\n");
            "Invoice void".to_string()
        }
        "uncollectible" => {
            body.push_str(
                "<p>This invoice is marked uncollectible. Contact MSP Demo Ltd to settle it.</p>\n",
            );
            "Invoice uncollectible".to_string()
        }
        other => format!("Invoice {other}"),
    };
    let _ = write!(
        body,
        "<p><a href=\"/i/{secret}/pdf\">Download invoice</a></p>"
    );
    html_page(StatusCode::OK, &title, &body)
}

/// The finalized invoice a hosted-page secret stands for.
fn hosted_invoice(s: &Inner, st: &Store, secret: &str) -> Option<Value> {
    let id = invoice_of_secret(secret)?;
    let inv = s.invoice(st, &id, &s.ctx(false))?;
    (inv["status"] != "draft").then_some(inv)
}

async fn invoice_page(State(s): State<Arc<Inner>>, Path(secret): Path<String>) -> Response {
    let st = lock(&s.state);
    match hosted_invoice(&s, &st, &secret) {
        Some(inv) => invoice_html(&inv, &secret, false),
        None => not_found_page(),
    }
}

async fn invoice_pay(State(s): State<Arc<Inner>>, Path(secret): Path<String>) -> Response {
    let (resp, out) = {
        let mut st = lock(&s.state);
        let resp = match hosted_invoice(&s, &st, &secret) {
            Some(inv) => {
                let id = inv["id"].as_str().unwrap_or_default().to_string();
                let paid = s.pay(&mut st, &id);
                match s.invoice(&st, &id, &s.ctx(false)) {
                    Some(now) => invoice_html(&now, &secret, paid),
                    None => not_found_page(),
                }
            }
            None => not_found_page(),
        };
        (resp, std::mem::take(&mut st.outbox))
    };
    spawn_deliveries(&s, out);
    resp
}

async fn invoice_pdf(State(s): State<Arc<Inner>>, Path(secret): Path<String>) -> Response {
    let st = lock(&s.state);
    let Some(inv) = hosted_invoice(&s, &st, &secret) else {
        return not_found_page();
    };
    let text = format!(
        "{ACCOUNT_NAME} invoice {} {}",
        inv["number"].as_str().unwrap_or_default(),
        format_money(
            inv["amount_due"].as_i64().unwrap_or(0),
            inv["currency"].as_str().unwrap_or("usd")
        )
    );
    let pdf = format!(
        "%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] >> endobj\n% {}\ntrailer << /Root 1 0 R >>\n%%EOF\n",
        text.replace(['\n', '\r'], " ")
    );
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/pdf"),
            (
                header::CONTENT_DISPOSITION,
                "inline; filename=\"invoice.pdf\"",
            ),
        ],
        pdf,
    )
        .into_response()
}

async fn portal_page(State(s): State<Arc<Inner>>, Path(secret): Path<String>) -> Response {
    let st = lock(&s.state);
    let Some(session) = st.sessions.get(&secret) else {
        return not_found_page();
    };
    let customer = s
        .customer(&st, &session.customer, &s.ctx(false))
        .unwrap_or(Value::Null);
    let name = customer["name"].as_str().unwrap_or("Customer");
    let email = customer["email"].as_str().unwrap_or_default();
    let mut body = format!(
        "<p>Billing details of <strong id=\"customer\">{}</strong> {}</p>\n<h2>Payment methods</h2>\n<ul><li>Visa ending in 4242, expires 12/2028 (default)</li></ul>\n<p><button type=\"button\" id=\"add\">Add payment method</button></p>\n",
        html_escape(name),
        html_escape(email),
    );
    if let Some(url) = &session.return_url {
        let host = url
            .split_once("://")
            .map(|(_, r)| r)
            .unwrap_or(url)
            .split(['/', '?', '#'])
            .next()
            .unwrap_or_default();
        let _ = write!(
            body,
            "<p><a id=\"return\" href=\"{}\">Return to {}</a></p>",
            html_escape(url),
            html_escape(host)
        );
    }
    html_page(StatusCode::OK, "Manage payment methods", &body)
}

async fn receipt_page(State(s): State<Arc<Inner>>, Path(id): Path<String>) -> Response {
    let st = lock(&s.state);
    let Some(ch) = s.charge(&st, &id, &s.ctx(false)) else {
        return not_found_page();
    };
    let currency = ch["currency"].as_str().unwrap_or("usd");
    let body = format!(
        "<p>Amount <strong id=\"amount\">{}</strong></p>\n<p>Status <span id=\"status\">{}</span></p>\n<p>{}</p>",
        html_escape(&format_money(ch["amount"].as_i64().unwrap_or(0), currency)),
        html_escape(ch["status"].as_str().unwrap_or_default()),
        html_escape(ch["description"].as_str().unwrap_or_default()),
    );
    html_page(
        StatusCode::OK,
        &format!("Receipt from {ACCOUNT_NAME}"),
        &body,
    )
}

async fn fallback() -> Response {
    not_found_page()
}

// ---------------------------------------------------------------------------------------
// The sandbox

/// Stripe on loopback (see the module documentation). Cheap to clone.
#[derive(Clone)]
pub struct StripeSandbox {
    inner: Arc<Inner>,
}

impl StripeSandbox {
    /// `Seed::Small`: the demo (one customer per Autotask sandbox company, a walk-in
    /// customer and a deleted one); `Seed::Large`: 2,000 customers; `Seed::Companies(n)`:
    /// n customers.
    pub fn new(seed: Seed) -> Self {
        let start = now();
        Self::from_inner(Inner::new(World::Seeded(seeded(seed, start)), start))
    }

    /// Exactly these counts (benchmarks): invoices and payment intents spread evenly over
    /// the customers, one subscription per customer, all computed from their index.
    pub fn with_size(customers: usize, invoices: usize, payments: usize) -> Self {
        let start = now();
        let (i, p) = if customers == 0 {
            (0, 0)
        } else {
            (invoices, payments)
        };
        Self::from_inner(Inner::new(
            World::Sized(Sized {
                c: customers,
                i,
                p,
                start,
            }),
            start,
        ))
    }

    fn from_inner(inner: Inner) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/{*rest}", any(api))
            .route("/i/{secret}", get(invoice_page))
            .route("/i/{secret}/pay", post(invoice_pay))
            .route("/i/{secret}/pdf", get(invoice_pdf))
            .route("/p/session/{secret}", get(portal_page))
            .route("/r/{charge}", get(receipt_page))
            .fallback(fallback)
            .with_state(self.inner.clone())
            .layer(axum::middleware::from_fn_with_state(
                self.inner.faults.clone(),
                mspbridge_sandbox::inject_faults,
            ))
    }

    /// Serves on `listener`; the hosted pages' links use its address unless
    /// [`Self::set_public_base`] was called.
    pub fn serve(&self, listener: TcpListener) -> std::io::Result<SandboxHandle> {
        let addr = listener.local_addr()?;
        {
            let mut base = lock(&self.inner.public_base);
            if base.is_none() {
                *base = Some(format!("http://{addr}"));
            }
        }
        mspbridge_sandbox::serve(self.router(), listener)
    }

    /// `http://127.0.0.1:port`: the API is at `{base}/v1/…`, the hosted pages at
    /// `{base}/i/…` and `{base}/p/…`.
    pub fn base_url(handle: &SandboxHandle) -> String {
        handle.base_url()
    }

    /// The address the hosted invoice, PDF, receipt and portal URLs use.
    pub fn set_public_base(&self, base: &str) {
        *lock(&self.inner.public_base) = Some(base.trim_end_matches('/').to_string());
    }

    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    fn with_state<R>(&self, f: impl FnOnce(&Inner, &mut Store) -> R) -> R {
        let (r, out) = {
            let mut st = lock(&self.inner.state);
            let r = f(&self.inner, &mut st);
            (r, std::mem::take(&mut st.outbox))
        };
        spawn_deliveries(&self.inner, out);
        r
    }

    /// Customers as they are now (deleted ones left out), newest first.
    pub fn customers(&self) -> Vec<SandboxCustomer> {
        self.with_state(|s, st| {
            let ctx = s.ctx(false);
            (0..s.customer_count_all(st))
                .filter_map(|p| s.customer(st, &s.customer_at(st, p)?, &ctx))
                .filter(|v| !is_deleted(v))
                .map(|v| SandboxCustomer {
                    id: v["id"].as_str().unwrap_or_default().to_string(),
                    name: v["name"].as_str().unwrap_or_default().to_string(),
                    email: v["email"].as_str().map(str::to_string),
                    metadata: v["metadata"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| {
                                    (k.clone(), v.as_str().unwrap_or_default().to_string())
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect()
        })
    }

    /// Customers not deleted.
    pub fn customer_count(&self) -> usize {
        self.with_state(|s, st| {
            let seeded_deleted = match &s.world {
                World::Seeded(w) => w.customers.iter().filter(|c| c.deleted).count(),
                World::Sized(_) => 0,
            };
            s.customer_count_all(st) - seeded_deleted - st.deleted.len()
        })
    }

    /// The invoice as `GET /v1/invoices/{id}` shows it (test mode).
    pub fn invoice(&self, id: &str) -> Option<Value> {
        self.with_state(|s, st| s.invoice(st, id, &s.ctx(false)))
    }

    /// The customer's invoices, newest first.
    pub fn invoices_of(&self, customer: &str) -> Vec<Value> {
        self.with_state(|s, st| {
            let ctx = s.ctx(false);
            decode_gen("cus", customer)
                .map(|k| s.world.invoices_of(k))
                .unwrap_or_default()
                .into_iter()
                .filter_map(|g| s.invoice(st, &gen_id("in", g), &ctx))
                .collect()
        })
    }

    /// The customer's subscriptions (canceled ones included), newest first.
    pub fn subscriptions_of(&self, customer: &str) -> Vec<Value> {
        self.with_state(|s, st| {
            let ctx = s.ctx(false);
            decode_gen("cus", customer)
                .map(|k| s.world.subs_of(k))
                .unwrap_or_default()
                .into_iter()
                .filter_map(|g| s.sub(st, &gen_id("sub", g), &ctx))
                .collect()
        })
    }

    pub fn subscription_item_quantity(&self, item_id: &str) -> Option<u64> {
        self.with_state(|s, st| s.item(st, item_id, &s.ctx(false)))
            .and_then(|i| i["quantity"].as_u64())
    }

    /// POSTs that changed a subscription item's quantity (idempotent replays not counted).
    pub fn quantity_updates(&self) -> u64 {
        self.inner.quantity_updates.load(Ordering::Relaxed)
    }

    /// As the hosted page's Pay: the open invoice paid, a succeeded payment intent and
    /// charge, events `payment_intent.succeeded`, `invoice.paid`,
    /// `invoice.payment_succeeded` (and the subscription back from past due). False when
    /// the invoice is unknown or not open.
    pub fn pay_invoice(&self, id: &str) -> bool {
        self.with_state(|s, st| s.pay(st, id))
    }

    /// A declined attempt on the open invoice: a payment intent `requires_payment_method`
    /// with `last_payment_error`, a failed charge with `failure_message`, events
    /// `invoice.payment_failed` and `payment_intent.payment_failed`.
    pub fn fail_payment(&self, invoice_id: &str, message: &str) -> bool {
        self.with_state(|s, st| s.fail(st, invoice_id, message))
    }

    /// As an edit in the dashboard, with a `customer.updated` event.
    pub fn update_customer(&self, id: &str, name: Option<&str>, email: Option<&str>) {
        self.with_state(|s, st| {
            let changed = s.change_customer(st, id, |v| {
                if let Some(n) = name {
                    v["name"] = json!((!n.is_empty()).then_some(n));
                }
                if let Some(e) = email {
                    v["email"] = json!((!e.is_empty()).then_some(e));
                }
                Ok(())
            });
            if let Ok(Some((new, prev))) = changed
                && !prev.is_empty()
            {
                s.event(st, "customer.updated", new, Some(prev), false, (None, None));
            }
        });
    }

    /// Deletes the customer (and cancels its subscriptions), with `customer.deleted`.
    pub fn delete_customer(&self, id: &str) {
        self.with_state(|s, st| {
            s.remove_customer(st, id, false, (None, None));
        });
    }

    /// A test-mode endpoint the tests register by hand; returns its `we_` id. `*` in
    /// `enabled_events` means every event.
    pub fn add_endpoint(&self, url: &str, secret: &str, enabled_events: &[&str]) -> String {
        self.with_state(|s, st| {
            let id = s.new_id("we");
            st.endpoints.push(Endpoint {
                id: id.clone(),
                url: url.to_string(),
                enabled_events: enabled_events.iter().map(|e| e.to_string()).collect(),
                api_version: Some(STRIPE_VERSION.to_string()),
                description: Some("added by a test".to_string()),
                metadata: Map::new(),
                enabled: true,
                livemode: false,
                created: now(),
                secret: secret.to_string(),
                old_secret: None,
            });
            id
        })
    }

    /// A new signing secret; deliveries carry a `v1` for it and one for the old secret
    /// until [`Self::expire_old_secrets`].
    pub fn roll_secret(&self, endpoint_id: &str) -> Option<String> {
        self.with_state(|s, st| {
            let secret = format!("whsec_{}", alnum(s.entropy(), 32));
            let e = st.endpoints.iter_mut().find(|e| e.id == endpoint_id)?;
            e.old_secret = Some(std::mem::replace(&mut e.secret, secret.clone()));
            Some(secret)
        })
    }

    pub fn expire_old_secrets(&self) {
        self.with_state(|_, st| {
            for e in &mut st.endpoints {
                e.old_secret = None;
            }
        });
    }

    /// As `GET /v1/webhook_endpoints` gives them (both modes), newest first.
    pub fn endpoints(&self) -> Vec<Value> {
        self.with_state(|_, st| st.endpoints.iter().rev().map(|e| e.json(false)).collect())
    }

    /// Sends an event carrying the object's current state to every matching endpoint;
    /// `None` when the object is unknown.
    pub fn emit(&self, event_type: &str, object_id: &str) -> Option<String> {
        self.with_state(|s, st| {
            let object = s.object(st, object_id, &s.ctx(false))?;
            Some(s.event(st, event_type, object, None, false, (None, None)))
        })
    }

    /// The same event (same id and body, a new signature time) once more to the
    /// endpoints it went to.
    pub fn redeliver(&self, event_id: &str) {
        self.with_state(|_, st| {
            let bodies = st.bodies.get(event_id).cloned().unwrap_or_default();
            for (endpoint_id, body) in bodies {
                st.outbox.push(Outgoing {
                    event_id: event_id.to_string(),
                    endpoint_id,
                    body,
                });
            }
        });
    }

    /// Delays between delivery attempts (default 1 s, 5 s, 30 s: three retries).
    pub fn set_retry_delays(&self, delays: Vec<Duration>) {
        *lock(&self.inner.retry_delays) = delays;
    }

    /// Every delivery attempt: (event id, attempt from 1, status; 0 when unanswered).
    pub fn deliveries(&self) -> Vec<(String, u32, u16)> {
        lock(&self.inner.deliveries).clone()
    }

    /// Signs deliveries with `t = now - age` (default 0).
    pub fn set_delivery_signature_age(&self, age_secs: i64) {
        self.inner.signature_age.store(age_secs, Ordering::Relaxed);
    }

    /// The next POST whose path contains `path_fragment` is carried out (its idempotent
    /// result saved) but its answer is cut in half, as if the connection broke.
    pub fn lose_next_answer(&self, path_fragment: &str) {
        self.with_state(|_, st| st.lose_next.push(path_fragment.to_string()));
    }

    /// Requests per rolling second, for test and live keys alike.
    pub fn set_rate_limit(&self, per_second: usize) {
        self.inner
            .test_limit
            .set(per_second, Duration::from_secs(1));
        self.inner
            .live_limit
            .set(per_second, Duration::from_secs(1));
    }

    /// A restricted key with these permissions (`customer_read`, `invoice_read`,
    /// `subscription_write`, …; a `_write` includes its `_read`). `rk_live_` keys are
    /// live mode.
    pub fn add_restricted_key(&self, key: &str, permissions: &[&str]) {
        self.with_state(|_, st| {
            st.restricted.insert(
                key.to_string(),
                permissions.iter().map(|p| p.to_string()).collect(),
            );
        });
    }

    /// Events kept for `GET /v1/events`, oldest first.
    pub fn events(&self) -> Vec<Value> {
        self.with_state(|_, st| st.events.clone())
    }

    /// 429s answered.
    pub fn throttled(&self) -> u64 {
        self.inner.throttled.load(Ordering::Relaxed)
    }

    pub fn seen(&self) -> Vec<SeenRequest> {
        lock(&self.inner.state).seen.clone()
    }

    /// API requests received (hosted pages not included).
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    pub fn clear_seen(&self) {
        lock(&self.inner.state).seen.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mspbridge_sandbox::loopback_listener;
    use tokio::sync::mpsc;

    fn client() -> reqwest::Client {
        OutboundPolicy {
            allow_private: true,
        }
        .client(Duration::from_secs(10))
    }

    async fn start(sb: &StripeSandbox) -> SandboxHandle {
        sb.serve(loopback_listener().await.unwrap()).unwrap()
    }

    struct Got {
        status: StatusCode,
        headers: HeaderMap,
        text: String,
    }

    impl Got {
        fn json(&self) -> Value {
            serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
        }
    }

    async fn send(req: reqwest::RequestBuilder) -> Got {
        let r = req.send().await.unwrap();
        Got {
            status: r.status(),
            headers: r.headers().clone(),
            text: r.text().await.unwrap(),
        }
    }

    async fn get(h: &SandboxHandle, key: &str, path: &str) -> Got {
        send(
            client()
                .get(format!("{}{path}", h.base_url()))
                .bearer_auth(key)
                .header("Stripe-Version", STRIPE_VERSION),
        )
        .await
    }

    async fn post(h: &SandboxHandle, key: &str, path: &str, body: &str, idem: Option<&str>) -> Got {
        let mut req = client()
            .post(format!("{}{path}", h.base_url()))
            .bearer_auth(key)
            .header("Stripe-Version", STRIPE_VERSION)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_string());
        if let Some(k) = idem {
            req = req.header("Idempotency-Key", k);
        }
        send(req).await
    }

    fn ids(page: &Value) -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// The receiver side of webhooks: every delivery's headers and raw body.
    async fn receiver(
        status: StatusCode,
    ) -> (SandboxHandle, mpsc::UnboundedReceiver<(HeaderMap, String)>) {
        let (tx, rx) = mpsc::unbounded_channel::<(HeaderMap, String)>();
        let app = Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send((headers, body));
                    status
                }
            }),
        );
        let h = mspbridge_sandbox::serve(app, loopback_listener().await.unwrap()).unwrap();
        (h, rx)
    }

    /// Verifies a `Stripe-Signature` as a receiver must: the `v1`s over `{t}.{body}`.
    fn verify(header: &str, body: &str, secret: &str) -> bool {
        let mut t = None;
        let mut v1 = Vec::new();
        for part in header.split(',') {
            match part.split_once('=') {
                Some(("t", x)) => t = Some(x.to_string()),
                Some(("v1", x)) => v1.push(x.to_string()),
                _ => {}
            }
        }
        let Some(t) = t else { return false };
        let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.{body}").as_bytes());
        let expected = hex(&mac.finalize().into_bytes());
        v1.contains(&expected)
    }

    async fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> T {
        for _ in 0..200 {
            if let Some(x) = f() {
                return x;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("timed out");
    }

    #[test]
    fn forms_nest_brackets_arrays_and_metadata() {
        let f = parse_form(
            "name=A+B%26C&metadata[mspbridge_company_id]=12&metadata[0]=zero&items[0][id]=si_1&items[0][quantity]=3&items[1][id]=si_2&expand[]=customer&expand[]=data.latest_charge&metadata%5Bx%5D=y",
        )
        .unwrap();
        assert_eq!(f["name"], "A B&C");
        assert_eq!(
            Value::Object(f.clone())["metadata"],
            json!({"mspbridge_company_id": "12", "0": "zero", "x": "y"})
        );
        assert_eq!(
            f["items"],
            json!([{"id": "si_1", "quantity": "3"}, {"id": "si_2"}])
        );
        assert_eq!(f["expand"], json!(["customer", "data.latest_charge"]));
        let g = parse_form("a[][b]=1&a[][c]=2&a[][b]=3&created[gte]=10&e=").unwrap();
        assert_eq!(g["a"], json!([{"b": "1", "c": "2"}, {"b": "3"}]));
        assert_eq!(g["created"], json!({"gte": "10"}));
        assert_eq!(g["e"], "");
        assert!(parse_form("a=1&a[b]=2").is_err());
        assert!(parse_form("a[b=2").is_err());
        assert!(parse_form("a=%zz").is_err());
        assert_eq!(encode("a b&c"), "a+b%26c");
    }

    #[test]
    fn ids_decode_to_their_index_and_money_reads_as_people_write_it() {
        for i in [0, 1, 35, 36, 199_999, 10_000_000] {
            assert_eq!(decode_gen("in", &gen_id("in", i)), Some(i));
        }
        assert_eq!(decode_gen("in", &gen_id("cus", 3)), None);
        assert_eq!(decode_gen("prod", "prod_MspBManagedSvc"), None);
        assert_eq!(decode_sub_id("si", &gen_sub_id("si", 77, 1)), Some((77, 1)));
        assert_eq!(format_money(123_450, "usd"), "$1,234.50");
        assert_eq!(format_money(6_500, "jpy"), "¥6,500");
        assert_eq!(format_money(4_200, "eur"), "€42.00");
        assert_eq!(mask_key("sk_test_nope1234"), "sk_test_****1234");
        let secret = invoice_secret("in_MspB0000000001");
        assert_eq!(
            invoice_of_secret(&secret).as_deref(),
            Some("in_MspB0000000001")
        );
        assert_eq!(invoice_of_secret(&secret.replace("test_", "test_x")), None);
    }

    #[test]
    fn the_demo_seed_has_the_promised_variety() {
        let sb = StripeSandbox::new(Seed::Small);
        let customers = sb.customers();
        let companies = crate::autotask::sandbox::generate(Seed::Small).companies;
        assert_eq!(customers.len(), companies.len() + 1);
        assert_eq!(sb.customer_count(), customers.len());
        for c in &companies {
            let found = customers.iter().find(|x| x.name == c.company_name).unwrap();
            assert_eq!(
                found.email.as_deref(),
                Some(format!("billing@{}", web_domain(&c.company_name)).as_str())
            );
        }
        assert!(
            customers
                .iter()
                .any(|c| c.name == "Walk-in Customer" && c.email.is_none())
        );
        let World::Seeded(w) = &sb.inner.world else {
            panic!("seeded")
        };
        let statuses: Vec<InvStatus> = w.invoices.iter().map(|i| i.status).collect();
        let count = |s: InvStatus| statuses.iter().filter(|x| **x == s).count();
        assert_eq!(count(InvStatus::Void), 1);
        assert_eq!(count(InvStatus::Uncollectible), 1);
        assert!(count(InvStatus::Draft) >= 1);
        assert!(count(InvStatus::Paid) > statuses.len() / 2);
        let start = sb.inner.start;
        assert!(
            w.invoices
                .iter()
                .any(|i| i.status == InvStatus::Open && i.due_date.is_some_and(|d| d > start))
        );
        assert!(w.invoices.iter().any(|i| {
            i.status == InvStatus::Open
                && i.due_date
                    .is_some_and(|d| d < start - 9 * DAY && d > start - 61 * DAY)
        }));
        // About a third of the customers owe an invoice due later, a quarter one past due.
        let owing = |f: &dyn Fn(i64) -> bool| {
            w.invoices
                .iter()
                .filter(|i| i.status == InvStatus::Open && i.due_date.is_some_and(f))
                .map(|i| i.customer)
                .collect::<HashSet<_>>()
                .len()
        };
        assert!(owing(&|d| d > start) >= 3);
        assert!(owing(&|d| d < start) >= 3);
        let currencies: HashSet<&str> = w.invoices.iter().map(|i| i.currency).collect();
        assert_eq!(currencies, HashSet::from(["usd", "eur", "jpy"]));
        let subs: Vec<SubStatus> = w.subs.iter().map(|s| s.status).collect();
        for s in [
            SubStatus::Active,
            SubStatus::PastDue,
            SubStatus::Trialing,
            SubStatus::Canceled,
        ] {
            assert!(subs.contains(&s), "{s:?}");
        }
        assert!(w.subs.iter().any(|s| s.cancel_at_period_end));
        let pis: Vec<PiStatus> = w.pis.iter().map(|p| p.status).collect();
        assert!(pis.contains(&PiStatus::Failed) && pis.contains(&PiStatus::Processing));
        let paid = count(InvStatus::Paid);
        assert_eq!(
            pis.iter().filter(|p| **p == PiStatus::Succeeded).count(),
            paid
        );
        // Newest first everywhere, and every invoice after its customer.
        assert!(w.invoices.windows(2).all(|p| p[0].created >= p[1].created));
        assert!(w.customers.windows(2).all(|p| p[0].created >= p[1].created));
        assert!(
            w.invoices
                .iter()
                .all(|i| i.created > w.customers[i.customer].created)
        );
        assert!(w.customers.iter().all(|c| c.created > start - SPAN));
        // Deterministic apart from the start time.
        let again = StripeSandbox::new(Seed::Small);
        assert_eq!(
            again
                .customers()
                .iter()
                .map(|c| c.name.clone())
                .collect::<Vec<_>>(),
            customers.iter().map(|c| c.name.clone()).collect::<Vec<_>>()
        );
        assert_eq!(StripeSandbox::new(Seed::Large).customer_count(), 2_000);
    }

    #[test]
    fn generated_objects_have_the_fixture_shapes() {
        let Some(spec) = mspbridge_sandbox::vendor_spec("stripe/stripe-fixtures3.json") else {
            return;
        };
        let sb = StripeSandbox::new(Seed::Small);
        let s = &sb.inner;
        let st = lock(&s.state);
        let ctx = s.ctx(false);
        let objects = [
            ("customer", s.customer(&st, &gen_id("cus", 0), &ctx)),
            ("invoice", s.invoice(&st, &gen_id("in", 3), &ctx)),
            ("subscription", s.sub(&st, &gen_id("sub", 0), &ctx)),
            ("payment_intent", s.pi(&st, &gen_id("pi", 0), &ctx)),
            ("charge", s.charge(&st, &gen_id("ch", 0), &ctx)),
            ("price", s.price("price_1MspBManagedUsd", &ctx)),
            ("product", s.product("prod_MspBManagedServices", &ctx)),
        ];
        for (name, v) in objects {
            let v = v.unwrap();
            let fixture = spec["resources"][name].as_object().unwrap();
            let ours = v.as_object().unwrap();
            for k in ours.keys() {
                assert!(
                    fixture.contains_key(k),
                    "{name}.{k} is not in Stripe's fixture"
                );
            }
            assert_eq!(v["object"], fixture["object"], "{name}");
        }
        let item = s.item(&st, &gen_sub_id("si", 0, 0), &ctx).unwrap();
        let fixture = spec["resources"]["subscription_item"].as_object().unwrap();
        for k in item.as_object().unwrap().keys() {
            assert!(fixture.contains_key(k), "subscription_item.{k}");
        }
        let inv = s.invoice(&st, &gen_id("in", 3), &ctx).unwrap();
        let line = &inv["lines"]["data"][0];
        let fixture = spec["resources"]["line_item"].as_object().unwrap();
        for k in line.as_object().unwrap().keys() {
            assert!(fixture.contains_key(k), "line_item.{k}");
        }
        let fixture = spec["resources"]["event"].as_object().unwrap();
        let e = json!({"id": "evt_1", "object": "event", "api_version": STRIPE_VERSION, "created": 1,
            "data": {"object": {}}, "livemode": false, "pending_webhooks": 1,
            "request": {"id": null, "idempotency_key": null}, "type": "customer.updated"});
        for k in e.as_object().unwrap().keys() {
            assert!(fixture.contains_key(k), "event.{k}");
        }
    }

    #[tokio::test]
    async fn list_pages_written_directly_equal_the_objects_read_one_by_one() {
        let sb = StripeSandbox::new(Seed::Small);
        let h = start(&sb).await;
        sb.set_rate_limit(1_000);
        let invoices = get(&h, DEMO_SECRET_KEY, "/v1/invoices?limit=100")
            .await
            .json();
        let pis = get(
            &h,
            DEMO_SECRET_KEY,
            "/v1/payment_intents?limit=100&expand[]=data.latest_charge",
        )
        .await
        .json();
        let charges = get(&h, DEMO_SECRET_KEY, "/v1/charges?limit=100")
            .await
            .json();
        assert!(invoices["data"].as_array().unwrap().len() >= 50);
        let s = &sb.inner;
        let st = lock(&s.state);
        let ctx = s.ctx(false);
        for inv in invoices["data"].as_array().unwrap() {
            let id = inv["id"].as_str().unwrap();
            assert_eq!(Some(inv.clone()), s.invoice(&st, id, &ctx), "{id}");
        }
        for pi in pis["data"].as_array().unwrap() {
            let id = pi["id"].as_str().unwrap();
            let mut one = s.pi(&st, id, &ctx).unwrap();
            s.expand(&st, &mut one, &["latest_charge".to_string()], &ctx);
            assert_eq!(pi, &one, "{id}");
        }
        for ch in charges["data"].as_array().unwrap() {
            let id = ch["id"].as_str().unwrap();
            assert_eq!(Some(ch.clone()), s.charge(&st, id, &ctx), "{id}");
        }
        let text = list_text(&[], false, "/v1/x");
        assert_eq!(
            serde_json::from_slice::<Value>(&text).unwrap(),
            json!({"object": "list", "data": [], "has_more": false, "url": "/v1/x"})
        );
        let v = json!({"object": "list", "data": [{"a": [1, {"b": "x\ny"}]}, {"c": {}}], "has_more": true, "url": "/v1/x"});
        let items: Vec<String> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(to_pretty)
            .collect();
        assert_eq!(
            String::from_utf8(list_text(&items, true, "/v1/x")).unwrap(),
            serde_json::to_string_pretty(&v).unwrap()
        );
    }

    #[tokio::test]
    async fn paging_250_customers_by_100_gives_three_pages() {
        let sb = StripeSandbox::new(Seed::Companies(250));
        let h = start(&sb).await;
        let mut all = Vec::new();
        let mut more = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let path = match &after {
                Some(a) => format!("/v1/customers?limit=100&starting_after={a}"),
                None => "/v1/customers?limit=100".to_string(),
            };
            let r = get(&h, DEMO_SECRET_KEY, &path).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            assert!(
                r.headers["request-id"]
                    .to_str()
                    .unwrap()
                    .starts_with("req_")
            );
            assert_eq!(r.headers["stripe-version"], STRIPE_VERSION);
            let page = r.json();
            assert_eq!(page["object"], "list");
            assert_eq!(page["url"], "/v1/customers");
            let page_ids = ids(&page);
            let created: Vec<i64> = page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["created"].as_i64().unwrap())
                .collect();
            assert!(created.windows(2).all(|w| w[0] >= w[1]));
            more.push(page["has_more"].as_bool().unwrap());
            after = page_ids.last().cloned();
            all.extend(page_ids);
            if !more.last().unwrap() {
                break;
            }
        }
        assert_eq!(more, vec![true, true, false]);
        assert_eq!(all.len(), 250);
        assert_eq!(all.iter().collect::<HashSet<_>>().len(), 250);
        // Backwards from the last page's first object: the page before it.
        let r = get(
            &h,
            DEMO_SECRET_KEY,
            &format!("/v1/customers?limit=100&ending_before={}", all[200]),
        )
        .await;
        let page = r.json();
        assert_eq!(ids(&page), all[100..200].to_vec());
        assert_eq!(page["has_more"], true);
        // Bad limits and cursors.
        for (q, param) in [
            ("limit=0", "limit"),
            ("limit=101", "limit"),
            ("foo=1", "foo"),
        ] {
            let r = get(&h, DEMO_SECRET_KEY, &format!("/v1/customers?{q}")).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST);
            assert_eq!(r.json()["error"]["param"], param, "{q}");
            assert_eq!(r.json()["error"]["type"], "invalid_request_error");
        }
        let r = get(&h, DEMO_SECRET_KEY, "/v1/customers?starting_after=cus_nope").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.json()["error"]["code"], "resource_missing");
        assert_eq!(r.json()["error"]["param"], "starting_after");
        assert_eq!(sb.seen().len() as u64, sb.requests());
        assert_eq!(sb.seen()[0].stripe_version.as_deref(), Some(STRIPE_VERSION));
    }

    #[tokio::test]
    async fn unknown_keys_get_401_and_basic_auth_works() {
        let sb = StripeSandbox::new(Seed::Small);
        let h = start(&sb).await;
        let r = get(&h, "sk_test_nope1234", "/v1/customers").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        let e = r.json();
        assert_eq!(e["error"]["type"], "invalid_request_error");
        assert_eq!(
            e["error"]["message"],
            "Invalid API Key provided: sk_test_****1234"
        );
        let r = send(client().get(format!("{}/v1/customers", h.base_url()))).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        let r = send(
            client()
                .get(format!("{}/v1/customers?limit=1", h.base_url()))
                .basic_auth(DEMO_SECRET_KEY, Some("")),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json()["data"][0]["livemode"], false);
        let r = get(&h, "sk_live_mspbridge_demo", "/v1/customers?limit=1").await;
        assert_eq!(r.json()["data"][0]["livemode"], true);
        let r = get(&h, DEMO_SECRET_KEY, "/v1/nothing").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("Unrecognized request URL")
        );
    }

    #[tokio::test]
    async fn posts_take_nested_forms_and_refuse_json() {
        let sb = StripeSandbox::new(Seed::Small);
        let h = start(&sb).await;
        let r = post(
            &h,
            DEMO_SECRET_KEY,
            "/v1/customers",
            "name=Pioneer+Media&email=billing%40pioneermedia.example&metadata[mspbridge_company_id]=12&metadata[note]=a%26b",
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let c = r.json();
        assert!(c["id"].as_str().unwrap().starts_with("cus_"));
        assert_eq!(c["name"], "Pioneer Media");
        assert_eq!(
            c["metadata"],
            json!({"mspbridge_company_id": "12", "note": "a&b"})
        );
        let id = c["id"].as_str().unwrap().to_string();
        // Newest first: the new customer leads the list.
        let r = get(&h, DEMO_SECRET_KEY, "/v1/customers?limit=1").await;
        assert_eq!(ids(&r.json()), vec![id.clone()]);
        // An empty value removes a key.
        let r = post(
            &h,
            DEMO_SECRET_KEY,
            &format!("/v1/customers/{id}"),
            "metadata[note]=",
            None,
        )
        .await;
        assert_eq!(r.json()["metadata"], json!({"mspbridge_company_id": "12"}));
        let r = send(
            client()
                .post(format!("{}/v1/customers", h.base_url()))
                .bearer_auth(DEMO_SECRET_KEY)
                .json(&json!({"name": "x"})),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
        let r = post(&h, DEMO_SECRET_KEY, "/v1/customers", "nmae=typo", None).await;
        assert_eq!(r.json()["error"]["param"], "nmae");
        let kinds: Vec<String> = sb
            .events()
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(kinds, vec!["customer.created", "customer.updated"]);
        let r = get(&h, DEMO_SECRET_KEY, "/v1/events?types[]=customer.updated").await;
        let events = r.json();
        assert_eq!(events["data"].as_array().unwrap().len(), 1);
        assert_eq!(
            events["data"][0]["data"]["previous_attributes"]["metadata"]["note"],
            "a&b"
        );
    }

    #[tokio::test]
    async fn an_idempotent_post_is_replayed_and_a_changed_reuse_refused() {
        let sb = StripeSandbox::new(Seed::Small);
        let h = start(&sb).await;
        let before = sb.customer_count();
        let body = "name=Harbor+Clinic&metadata[mspbridge_company_id]=7";
        let a = post(&h, DEMO_SECRET_KEY, "/v1/customers", body, Some("key-1")).await;
        let b = post(&h, DEMO_SECRET_KEY, "/v1/customers", body, Some("key-1")).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(b.status, StatusCode::OK);
        assert_eq!(b.headers["idempotent-replayed"], "true");
        assert!(!a.headers.contains_key("idempotent-replayed"));
        assert_eq!(a.json()["id"], b.json()["id"]);
        assert_eq!(sb.customer_count(), before + 1);
        // The same key with other parameters.
        let c = post(
            &h,
            DEMO_SECRET_KEY,
            "/v1/customers",
            "name=Other",
            Some("key-1"),
        )
        .await;
        assert_eq!(c.status, StatusCode::BAD_REQUEST);
        let e = c.json();
        assert_eq!(e["error"]["type"], "idempotency_error");
        assert!(e["error"]["message"].as_str().unwrap().contains("'key-1'"));
        // Keys are per API key.
        let d = post(
            &h,
            "sk_test_mspbridge_other",
            "/v1/customers",
            "name=Other",
            Some("key-1"),
        )
        .await;
        assert_eq!(d.status, StatusCode::OK);
        assert_eq!(sb.customer_count(), before + 2);
        assert_eq!(sb.seen()[1].idempotency_key.as_deref(), Some("key-1"));
    }

    #[tokio::test]
    async fn the_test_mode_limit_answers_429_past_25_a_second() {
        let sb = StripeSandbox::new(Seed::Small);
        let h = start(&sb).await;
        let c = client();
        let url = format!("{}/v1/prices?limit=1", h.base_url());
        let answers = futures_util::future::join_all((0..40).map(|_| {
            let req = c.get(&url).bearer_auth(DEMO_SECRET_KEY);
            async move { send(req).await }
        }))
        .await;
        let ok = answers
            .iter()
            .filter(|a| a.status == StatusCode::OK)
            .count();
        let limited: Vec<&Got> = answers
            .iter()
            .filter(|a| a.status == StatusCode::TOO_MANY_REQUESTS)
            .collect();
        assert!((25..40).contains(&ok), "{ok} answered");
        let e = limited[0].json();
        assert_eq!(e["error"]["code"], "rate_limit");
        assert_eq!(e["error"]["type"], "invalid_request_error");
        assert_eq!(limited[0].headers["stripe-should-retry"], "true");
        assert_eq!(sb.throttled(), limited.len() as u64);
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        sb.set_rate_limit(1_000);
        let r = get(&h, DEMO_SECRET_KEY, "/v1/prices?limit=1").await;
        assert_eq!(r.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn deliveries_are_signed_and_carry_two_v1_after_a_roll() {
        let sb = StripeSandbox::new(Seed::Small);
        let (hook, mut rx) = receiver(StatusCode::OK).await;
        let url = format!("{}/hook", hook.base_url());
        let endpoint = sb.add_endpoint(&url, DEMO_WEBHOOK_SECRET, &["customer.updated"]);
        let customer = sb.customers()[0].id.clone();
        sb.update_customer(&customer, Some("Renamed Ltd"), None);
        let (headers, body) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        let signature = headers["stripe-signature"].to_str().unwrap().to_string();
        assert_eq!(signature.matches("v1=").count(), 1);
        assert!(signature.contains(",v0="));
        assert!(verify(&signature, &body, DEMO_WEBHOOK_SECRET));
        assert!(!verify(
            &signature,
            &body.replace("Renamed", "Renamed!"),
            DEMO_WEBHOOK_SECRET
        ));
        assert_eq!(headers["content-type"], "application/json; charset=utf-8");
        assert_eq!(
            headers["user-agent"],
            "Stripe/1.0 (+https://stripe.com/docs/webhooks)"
        );
        let event: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(event["type"], "customer.updated");
        assert_eq!(event["api_version"], STRIPE_VERSION);
        assert_eq!(event["data"]["object"]["name"], "Renamed Ltd");
        assert!(event["data"]["previous_attributes"]["name"].is_string());
        let t: i64 = signature
            .split(',')
            .find_map(|p| p.strip_prefix("t="))
            .unwrap()
            .parse()
            .unwrap();
        assert!((now() - t).abs() < 5);

        let new_secret = sb.roll_secret(&endpoint).unwrap();
        assert!(new_secret.starts_with("whsec_"));
        let evt = sb.emit("customer.updated", &customer).unwrap();
        let (headers, body) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        let signature = headers["stripe-signature"].to_str().unwrap().to_string();
        assert_eq!(signature.matches("v1=").count(), 2);
        assert!(verify(&signature, &body, &new_secret));
        assert!(verify(&signature, &body, DEMO_WEBHOOK_SECRET));
        assert!(body.contains(&evt));

        // A redelivery: the same body, signed again; only the new secret once expired.
        sb.expire_old_secrets();
        sb.set_delivery_signature_age(400);
        sb.redeliver(&evt);
        let (headers, again) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again, body);
        let signature = headers["stripe-signature"].to_str().unwrap().to_string();
        assert_eq!(signature.matches("v1=").count(), 1);
        assert!(verify(&signature, &again, &new_secret));
        let t: i64 = signature
            .split(',')
            .find_map(|p| p.strip_prefix("t="))
            .unwrap()
            .parse()
            .unwrap();
        assert!(now() - t >= 399);
        // Events of types the endpoint did not ask for are not sent.
        sb.emit("invoice.paid", &gen_id("in", 0)).unwrap();
        wait_for(|| (sb.deliveries().len() == 3).then_some(())).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(rx.try_recv().is_err());
        assert!(
            sb.deliveries()
                .iter()
                .all(|(_, attempt, status)| *attempt == 1 && *status == 200)
        );
        assert_eq!(sb.endpoints()[0]["id"], json!(endpoint));
        assert!(sb.endpoints()[0].get("secret").is_none());
    }

    #[tokio::test]
    async fn failed_deliveries_are_retried_after_each_delay() {
        let sb = StripeSandbox::new(Seed::Small);
        let (hook, mut rx) = receiver(StatusCode::INTERNAL_SERVER_ERROR).await;
        sb.set_retry_delays(vec![Duration::from_millis(10), Duration::from_millis(20)]);
        sb.add_endpoint(
            &format!("{}/hook", hook.base_url()),
            DEMO_WEBHOOK_SECRET,
            &["*"],
        );
        let evt = sb.emit("customer.updated", &sb.customers()[0].id).unwrap();
        let attempts = wait_for(|| {
            let d = sb.deliveries();
            (d.len() == 3).then_some(d)
        })
        .await;
        assert_eq!(
            attempts,
            vec![
                (evt.clone(), 1, 500),
                (evt.clone(), 2, 500),
                (evt.clone(), 3, 500)
            ]
        );
        let mut bodies = Vec::new();
        while let Ok((_, b)) = rx.try_recv() {
            bodies.push(b);
        }
        assert_eq!(bodies.len(), 3);
        assert!(bodies.windows(2).all(|w| w[0] == w[1]));
        // An endpoint nobody answers on: attempts recorded with status 0.
        drop(hook);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let evt = sb.emit("customer.updated", &sb.customers()[0].id).unwrap();
        let d = wait_for(|| {
            let d: Vec<_> = sb.deliveries().into_iter().filter(|x| x.0 == evt).collect();
            (d.len() == 3).then_some(d)
        })
        .await;
        assert!(d.iter().all(|x| x.2 == 0));
        // GET /v1/events?delivery_success=false lists both.
        let h = start(&sb).await;
        let r = get(&h, DEMO_SECRET_KEY, "/v1/events?delivery_success=false").await;
        assert_eq!(r.json()["data"].as_array().unwrap().len(), 2);
        assert_eq!(r.json()["data"][0]["pending_webhooks"], 1);
    }

    #[tokio::test]
    async fn payment_intents_expand_their_latest_charge() {
        let sb = StripeSandbox::new(Seed::Small);
        let h = start(&sb).await;
        let r = get(
            &h,
            DEMO_SECRET_KEY,
            "/v1/payment_intents?limit=100&expand[]=data.latest_charge",
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let page = r.json();
        let data = page["data"].as_array().unwrap();
        assert!(data.len() > 10);
        for pi in data {
            let ch = &pi["latest_charge"];
            assert_eq!(ch["object"], "charge");
            assert_eq!(ch["payment_intent"], pi["id"]);
            assert_eq!(ch["amount"], pi["amount"]);
        }
        let failed = data
            .iter()
            .find(|p| p["status"] == "requires_payment_method")
            .unwrap();
        assert_eq!(
            failed["last_payment_error"]["decline_code"],
            "insufficient_funds"
        );
        assert_eq!(failed["latest_charge"]["status"], "failed");
        assert_eq!(failed["latest_charge"]["failure_code"], "card_declined");
        assert_eq!(
            failed["latest_charge"]["failure_message"],
            "Your card has insufficient funds."
        );
        assert!(data.iter().any(|p| p["status"] == "processing"));
        let ok = data.iter().find(|p| p["status"] == "succeeded").unwrap();
        assert!(
            ok["description"]
                .as_str()
                .unwrap()
                .starts_with("Invoice MSPD-")
        );
        assert_eq!(
            ok["latest_charge"]["payment_method_details"]["card"]["last4"]
                .as_str()
                .unwrap()
                .len(),
            4
        );
        // Single reads expand without `data.`; lists refuse an expansion without it.
        let id = ok["id"].as_str().unwrap();
        let r = get(
            &h,
            DEMO_SECRET_KEY,
            &format!("/v1/payment_intents/{id}?expand[]=latest_charge&expand[]=customer"),
        )
        .await;
        assert_eq!(r.json()["latest_charge"]["object"], "charge");
        assert_eq!(r.json()["customer"]["object"], "customer");
        let r = get(
            &h,
            DEMO_SECRET_KEY,
            "/v1/payment_intents?expand[]=latest_charge",
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            r.json()["error"]["message"],
            "This property cannot be expanded (latest_charge)."
        );
        assert_eq!(r.json()["error"]["param"], "expand");
        let r = get(&h, DEMO_SECRET_KEY, "/v1/subscriptions?status=all&limit=100&expand[]=data.items.data.price.product&expand[]=data.customer").await;
        let subs = r.json();
        let sub = &subs["data"][0];
        assert_eq!(
            sub["items"]["data"][0]["price"]["product"]["object"],
            "product"
        );
        assert_eq!(sub["customer"]["object"], "customer");
        assert!(
            sub["items"]["data"][0]["current_period_end"]
                .as_i64()
                .unwrap()
                > sub["items"]["data"][0]["current_period_start"]
                    .as_i64()
                    .unwrap()
        );
        assert!(sub.get("current_period_end").is_none());
        // Without a status canceled subscriptions are left out.
        let all = subs["data"].as_array().unwrap().len();
        let r = get(&h, DEMO_SECRET_KEY, "/v1/subscriptions?limit=100").await;
        let visible = r.json()["data"].as_array().unwrap().len();
        assert_eq!(visible, all - 1);
    }

    #[tokio::test]
    async fn a_restricted_key_needs_the_permission() {
        let sb = StripeSandbox::new(Seed::Small);
        let h = start(&sb).await;
        let r = get(&h, DEMO_RESTRICTED_KEY, "/v1/invoices?limit=3").await;
        assert_eq!(r.status, StatusCode::OK);
        let r = get(&h, DEMO_RESTRICTED_KEY, "/v1/events").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        sb.add_restricted_key("rk_test_onlycustomers9f3a", &["customer_read"]);
        let r = get(&h, "rk_test_onlycustomers9f3a", "/v1/customers?limit=1").await;
        assert_eq!(r.status, StatusCode::OK);
        let r = get(&h, "rk_test_onlycustomers9f3a", "/v1/invoices").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let e = r.json();
        assert_eq!(e["error"]["type"], "invalid_request_error");
        let m = e["error"]["message"].as_str().unwrap();
        assert!(m.contains("rak_invoice_read"), "{m}");
        assert!(m.contains("'rk_test_"), "{m}");
        assert!(m.contains("9f3a'"), "{m}");
        assert!(!m.contains("onlycustomers"), "{m}");
        let r = post(
            &h,
            "rk_test_onlycustomers9f3a",
            "/v1/customers",
            "name=x",
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("rak_customer_write")
        );
    }

    #[tokio::test]
    async fn a_lost_answer_is_recovered_by_retrying_with_the_same_key() {
        let sb = StripeSandbox::new(Seed::Small);
        let h = start(&sb).await;
        let before = sb.customer_count();
        sb.lose_next_answer("/v1/customers");
        let body = "name=Summit+Dental&metadata[mspbridge_company_id]=3";
        let a = post(&h, DEMO_SECRET_KEY, "/v1/customers", body, Some("lost-1")).await;
        assert!(serde_json::from_str::<Value>(&a.text).is_err());
        assert_eq!(sb.customer_count(), before + 1);
        let b = post(&h, DEMO_SECRET_KEY, "/v1/customers", body, Some("lost-1")).await;
        assert_eq!(b.status, StatusCode::OK);
        assert_eq!(b.headers["idempotent-replayed"], "true");
        let c = b.json();
        assert_eq!(c["name"], "Summit Dental");
        assert_eq!(sb.customer_count(), before + 1);
        assert_eq!(sb.customers()[0].id, c["id"].as_str().unwrap());
        assert_eq!(
            sb.customers()[0]
                .metadata
                .get("mspbridge_company_id")
                .map(String::as_str),
            Some("3")
        );
    }

    #[tokio::test]
    async fn quantities_change_through_items_and_subscriptions() {
        let sb = StripeSandbox::new(Seed::Small);
        let h = start(&sb).await;
        let customer = sb
            .customers()
            .into_iter()
            .find(|c| {
                sb.subscriptions_of(&c.id).first().is_some_and(|s| {
                    s["status"] == "active" && s["items"]["data"].as_array().unwrap().len() == 2
                })
            })
            .unwrap();
        let sub = sb.subscriptions_of(&customer.id)[0].clone();
        let item = sub["items"]["data"][1]["id"].as_str().unwrap().to_string();
        assert_eq!(
            sub["items"]["data"][1]["price"]["lookup_key"],
            "premium_training"
        );
        let path = format!("/v1/subscription_items/{item}");
        let r = post(
            &h,
            DEMO_SECRET_KEY,
            &path,
            "quantity=17&proration_behavior=none",
            Some("q-17"),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json()["quantity"], 17);
        let r = post(
            &h,
            DEMO_SECRET_KEY,
            &path,
            "quantity=17&proration_behavior=none",
            Some("q-17"),
        )
        .await;
        assert_eq!(r.headers["idempotent-replayed"], "true");
        assert_eq!(sb.subscription_item_quantity(&item), Some(17));
        assert_eq!(sb.quantity_updates(), 1);
        // The same quantity again is no change.
        post(&h, DEMO_SECRET_KEY, &path, "quantity=17", None).await;
        assert_eq!(sb.quantity_updates(), 1);
        let sub_id = sub["id"].as_str().unwrap();
        let r = post(
            &h,
            DEMO_SECRET_KEY,
            &format!("/v1/subscriptions/{sub_id}"),
            &format!(
                "items[0][id]={item}&items[0][quantity]=4&proration_behavior=create_prorations"
            ),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(sb.subscription_item_quantity(&item), Some(4));
        assert_eq!(sb.quantity_updates(), 2);
        let r = get(
            &h,
            DEMO_SECRET_KEY,
            &format!("/v1/subscription_items/{item}"),
        )
        .await;
        assert_eq!(r.json()["quantity"], 4);
        let r = post(&h, DEMO_SECRET_KEY, &path, "quantity=-1", None).await;
        assert_eq!(r.json()["error"]["param"], "quantity");
        let r = post(
            &h,
            DEMO_SECRET_KEY,
            &path,
            "proration_behavior=sometimes",
            None,
        )
        .await;
        assert_eq!(r.json()["error"]["param"], "proration_behavior");
        let updates: Vec<Value> = sb
            .events()
            .into_iter()
            .filter(|e| e["type"] == "customer.subscription.updated")
            .collect();
        assert_eq!(updates.len(), 2);
        assert!(updates[0]["data"]["previous_attributes"]["items"].is_object());
    }

    #[tokio::test]
    async fn the_hosted_invoice_page_pays_an_open_invoice() {
        let sb = StripeSandbox::new(Seed::Small);
        let h = start(&sb).await;
        let r = get(&h, DEMO_SECRET_KEY, "/v1/invoices?status=open&limit=100").await;
        let open = r.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["due_date"].as_i64().is_some_and(|d| d > now()))
            .cloned()
            .unwrap();
        let url = open["hosted_invoice_url"].as_str().unwrap().to_string();
        assert!(url.starts_with(&format!("{}/i/", h.base_url())), "{url}");
        let page = send(client().get(&url)).await;
        assert_eq!(page.status, StatusCode::OK);
        for text in [
            ACCOUNT_NAME,
            open["number"].as_str().unwrap(),
            open["customer_name"].as_str().unwrap(),
        ] {
            assert!(
                page.text.contains(&html_escape(text)),
                "{text} in {}",
                page.text
            );
        }
        assert!(
            page.text
                .contains("<button type=\"submit\" id=\"pay\">Pay</button>")
        );
        let due = open["amount_due"].as_i64().unwrap();
        assert!(
            page.text.contains(&format_money(due, "usd")),
            "{}",
            page.text
        );
        let pdf = send(client().get(open["invoice_pdf"].as_str().unwrap())).await;
        assert_eq!(pdf.headers["content-type"], "application/pdf");
        assert!(pdf.text.starts_with("%PDF-"));
        let pis_before = get(&h, DEMO_SECRET_KEY, "/v1/payment_intents?limit=1")
            .await
            .json();
        let paid = send(client().post(format!("{url}/pay"))).await;
        assert_eq!(paid.status, StatusCode::OK);
        assert!(paid.text.contains("Invoice paid"));
        let id = open["id"].as_str().unwrap();
        let inv = sb.invoice(id).unwrap();
        assert_eq!(inv["status"], "paid");
        assert_eq!(inv["amount_remaining"], 0);
        assert_eq!(inv["amount_paid"], open["amount_due"]);
        assert!(inv["status_transitions"]["paid_at"].as_i64().is_some());
        let pis = get(
            &h,
            DEMO_SECRET_KEY,
            "/v1/payment_intents?limit=1&expand[]=data.latest_charge",
        )
        .await
        .json();
        assert_ne!(pis["data"][0]["id"], pis_before["data"][0]["id"]);
        assert_eq!(pis["data"][0]["status"], "succeeded");
        assert_eq!(pis["data"][0]["amount"], open["amount_due"]);
        assert_eq!(pis["data"][0]["latest_charge"]["paid"], true);
        let page = send(client().get(&url)).await;
        assert!(page.text.contains("Invoice paid") && !page.text.contains("id=\"pay\""));
        let kinds: Vec<String> = sb
            .events()
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect();
        for k in [
            "invoice.paid",
            "invoice.payment_succeeded",
            "payment_intent.succeeded",
        ] {
            assert!(kinds.contains(&k.to_string()), "{k}");
        }
        assert!(!sb.pay_invoice(id));
        let bad = send(client().get(format!("{}/i/test_nothing.0000", h.base_url()))).await;
        assert_eq!(bad.status, StatusCode::NOT_FOUND);
        // A declined attempt on another open invoice.
        let other = get(&h, DEMO_SECRET_KEY, "/v1/invoices?status=open&limit=1")
            .await
            .json()["data"][0]
            .clone();
        let other_id = other["id"].as_str().unwrap();
        assert!(sb.fail_payment(other_id, "Your card was declined."));
        let pis = get(
            &h,
            DEMO_SECRET_KEY,
            "/v1/payment_intents?limit=1&expand[]=data.latest_charge",
        )
        .await
        .json();
        let pi = &pis["data"][0];
        assert_eq!(pi["status"], "requires_payment_method");
        assert_eq!(
            pi["last_payment_error"]["message"],
            "Your card was declined."
        );
        assert_eq!(
            pi["latest_charge"]["failure_message"],
            "Your card was declined."
        );
        assert_eq!(sb.invoice(other_id).unwrap()["status"], "open");
    }

    #[tokio::test]
    async fn portal_sessions_deleted_customers_and_webhook_endpoints() {
        let sb = StripeSandbox::new(Seed::Small);
        let h = start(&sb).await;
        let customer = sb.customers()[0].clone();
        let r = post(
            &h,
            DEMO_RESTRICTED_KEY,
            "/v1/billing_portal/sessions",
            &format!(
                "customer={}&return_url={}",
                customer.id,
                encode("https://portal.example/billing")
            ),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let s = r.json();
        assert_eq!(s["object"], "billing_portal.session");
        let url = s["url"].as_str().unwrap();
        assert!(url.starts_with(&format!("{}/p/session/", h.base_url())));
        let page = send(client().get(url)).await;
        assert!(page.text.contains("Manage payment methods"));
        assert!(page.text.contains(&html_escape(&customer.name)));
        assert!(page.text.contains("Return to portal.example"));
        let r = post(
            &h,
            DEMO_SECRET_KEY,
            "/v1/billing_portal/sessions",
            "return_url=https%3A%2F%2Fx.example",
            None,
        )
        .await;
        assert_eq!(r.json()["error"]["param"], "customer");

        sb.delete_customer(&customer.id);
        let r = get(
            &h,
            DEMO_SECRET_KEY,
            &format!("/v1/customers/{}", customer.id),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            r.json(),
            json!({"id": customer.id, "object": "customer", "deleted": true})
        );
        assert!(sb.customers().iter().all(|c| c.id != customer.id));
        let r = get(&h, DEMO_SECRET_KEY, "/v1/customers/cus_nothing").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(
            r.json()["error"]["message"],
            "No such customer: 'cus_nothing'"
        );
        assert_eq!(r.json()["error"]["param"], "id");

        let r = post(
            &h,
            DEMO_RESTRICTED_KEY,
            "/v1/webhook_endpoints",
            &format!(
                "url={}&enabled_events[]=invoice.paid&enabled_events[]=customer.updated&api_version={STRIPE_VERSION}",
                encode("https://portal.example/hooks/stripe")
            ),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let e = r.json();
        assert!(e["secret"].as_str().unwrap().starts_with("whsec_"));
        assert_eq!(
            e["enabled_events"],
            json!(["invoice.paid", "customer.updated"])
        );
        let id = e["id"].as_str().unwrap();
        let r = get(&h, DEMO_RESTRICTED_KEY, "/v1/webhook_endpoints").await;
        assert_eq!(r.json()["data"][0]["id"], json!(id));
        assert!(r.json()["data"][0].get("secret").is_none());
        let r = post(
            &h,
            DEMO_SECRET_KEY,
            &format!("/v1/webhook_endpoints/{id}"),
            "enabled_events[]=*",
            None,
        )
        .await;
        assert_eq!(r.json()["enabled_events"], json!(["*"]));
        let r = send(
            client()
                .delete(format!("{}/v1/webhook_endpoints/{id}", h.base_url()))
                .bearer_auth(DEMO_SECRET_KEY),
        )
        .await;
        assert_eq!(
            r.json(),
            json!({"id": id, "object": "webhook_endpoint", "deleted": true})
        );
        assert!(sb.endpoints().is_empty());
    }

    #[tokio::test]
    async fn a_large_size_pages_fast_from_the_index() {
        let sb = StripeSandbox::with_size(10_000, 200_000, 50_000);
        let h = start(&sb).await;
        let t = Instant::now();
        let first = get(&h, DEMO_SECRET_KEY, "/v1/invoices?limit=100").await;
        let first_took = t.elapsed();
        assert_eq!(first.status, StatusCode::OK);
        let page = first.json();
        assert_eq!(ids(&page)[0], gen_id("in", 0));
        assert_eq!(page["has_more"], true);
        let t = Instant::now();
        let middle = get(
            &h,
            DEMO_SECRET_KEY,
            &format!(
                "/v1/invoices?limit=100&starting_after={}",
                gen_id("in", 99_999)
            ),
        )
        .await;
        let middle_took = t.elapsed();
        let page = middle.json();
        let got = ids(&page);
        assert_eq!(got.len(), 100);
        assert_eq!(got[0], gen_id("in", 100_000));
        assert_eq!(got[99], gen_id("in", 100_099));
        let last = get(
            &h,
            DEMO_SECRET_KEY,
            &format!(
                "/v1/invoices?limit=100&starting_after={}",
                gen_id("in", 199_899)
            ),
        )
        .await;
        assert_eq!(last.json()["has_more"], false);
        assert_eq!(ids(&last.json()).len(), 100);
        // Debug builds are slow; the point is that a page costs the same wherever it is.
        assert!(first_took < Duration::from_millis(1_500), "{first_took:?}");
        assert!(
            middle_took < Duration::from_millis(1_500),
            "{middle_took:?}"
        );
        // A customer's invoices are found from the index too.
        let customer = gen_id("cus", 4_321);
        let r = get(
            &h,
            DEMO_SECRET_KEY,
            &format!("/v1/invoices?limit=100&customer={customer}"),
        )
        .await;
        let page = r.json();
        assert_eq!(page["data"].as_array().unwrap().len(), 20);
        assert!(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .all(|i| i["customer"] == json!(customer))
        );
        // created[gte] stops at the first older invoice.
        let cut = sb.invoice(&gen_id("in", 150)).unwrap()["created"]
            .as_i64()
            .unwrap();
        let r = get(
            &h,
            DEMO_SECRET_KEY,
            &format!(
                "/v1/invoices?limit=100&created[gte]={cut}&starting_after={}",
                gen_id("in", 99)
            ),
        )
        .await;
        assert_eq!(ids(&r.json()).len(), 51);
        assert_eq!(r.json()["has_more"], false);
        assert_eq!(sb.customer_count(), 10_000);
        let r = get(
            &h,
            DEMO_SECRET_KEY,
            &format!(
                "/v1/payment_intents?limit=100&starting_after={}",
                gen_id("pi", 49_950)
            ),
        )
        .await;
        assert_eq!(ids(&r.json()).len(), 49);
    }
}
