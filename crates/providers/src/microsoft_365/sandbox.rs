//! Microsoft 365 played on loopback for tests and the demo: the Microsoft identity platform
//! and Microsoft Graph v1.0 at the root of one address, as `https://login.microsoftonline.com`
//! and `https://graph.microsoft.com` would be.
//!
//! The identity platform: the admin-consent page `GET /{tenant}/v2.0/adminconsent` (a plain
//! HTML form on which the tester picks which customer tenant's admin they are, then accepts
//! or cancels; the `POST` redirects to the app's `redirect_uri` with `admin_consent=True`,
//! `tenant` and `state`, or with `error=access_denied`), and the client-credentials grant at
//! `POST /{tenant}/oauth2/v2.0/token` (tenant by id or verified domain) with Entra's errors:
//! 90002 for `common`/`organizations` and unknown tenants, 700016 for an unknown app or a
//! tenant whose admin has not consented (or whose consent was revoked), 7000215 for a wrong
//! secret, 7000222 for an expired one, `unsupported_grant_type`. Tokens are opaque and bound
//! to their tenant: Graph always answers with the token's tenant, whatever the URL says.
//!
//! Graph: `/v1.0/organization`, `/domains`, `/users` (`$top` up to 999, opaque
//! `$skiptoken` in absolute `@odata.nextLink`s), `/users/delta` (a per-tenant version: a
//! `deltaLink` returns the users changed or deleted since, `@removed` for deletions),
//! `/groups`, `/subscribedSkus`, `/security/secureScores` (90 daily snapshots, newest first;
//! a partial mode answering 206 with a `Warning` header), `/security/secureScoreControlProfiles`,
//! `/tenantRelationships/delegatedAdminRelationships` (the partner tenant's GDAP
//! relationships, one expired) and `findTenantInformationByTenantId`. `/security/*` has
//! per-tenant limits (4 in flight, 150 per rolling minute by default; 429 with
//! `Retry-After` past either), an added latency tests set to make concurrency observable,
//! and a consent without `SecurityEvents.Read.All` (403). Errors have Graph's
//! `{"error":{"code","message","innerError"}}` shape. Fault injection, request counts and
//! user edits for tests.
//!
//! Seeded tenants carry the names of the Autotask sandbox's companies (so the demo's PSA
//! companies match), with `web_domain(name)` as default domain, an `onmicrosoft.com` initial
//! domain and sometimes a second custom one. Users include one without `mail` (only
//! `otherMails`/`proxyAddresses`), a disabled one and a guest; subscribed SKUs carry real
//! `skuPartNumber`s and one the product does not know. Users, groups and Secure Score data
//! are computed from their position when asked for, so large sizes cost little memory.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use mspbridge_sandbox::names::{FIRST, LAST, company_name, web_domain};
use mspbridge_sandbox::{Faults, Rng, SandboxHandle, Seed};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

/// The MSP's multi-tenant app registration.
pub const DEMO_CLIENT_ID: &str = "6f1c1c5e-8d7a-4c1e-9b51-5a1d0c0ffee1";
/// With `~`, `.` and `_`, as Entra's generated secrets have: the form body must encode them.
pub const DEMO_CLIENT_SECRET: &str = "demo~m365.Secret_2026";
/// The MSP's own (partner) tenant: always consented, no customer data, every customer
/// tenant in its GDAP relationships.
pub const PARTNER_TENANT_ID: &str = "0a1b2c3d-0000-4000-8000-00000000beef";

const PARTNER_NAME: &str = "mspbridge Demo MSP";
const PARTNER_SLUG: &str = "mspbridgedemo";
const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
/// Days of Secure Score history.
const SCORE_DAYS: usize = 90;
/// 2026-12-03T00:00:00Z, the newest Secure Score snapshot.
const NEWEST_DAY_SECS: i64 = 1_796_256_000;
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 999;
const SCORES_PAGE: usize = 30;
const PROFILES_PAGE: usize = 10;
const RELATIONSHIPS_PAGE: usize = 5;
/// Directory Readers, the role the GDAP relationships grant.
const DIRECTORY_READERS: &str = "5d6b6bb7-de71-4623-b4af-96380a352509";

/// (skuPartNumber, skuId): real ones and one the product does not know.
const SKUS: [(&str, &str); 8] = [
    ("SPE_E3", "05e9a617-0261-4cee-bb44-138d3ef5d965"),
    (
        "O365_BUSINESS_PREMIUM",
        "f245ecc8-75af-4f8e-b61f-27d8114de5b3",
    ),
    ("EXCHANGESTANDARD", "4b9405b0-7788-4568-add1-99614e613b69"),
    ("ENTERPRISEPACK", "6fd2c87f-b296-42f0-b197-1e91e994b900"),
    ("POWER_BI_PRO", "f8a1db68-be16-40ed-86d5-cb42ce701560"),
    ("FLOW_FREE", "f30db892-07e9-47e9-837c-80727f46fd3d"),
    ("AAD_PREMIUM", "078d2b04-f1bd-4111-bbd4-b4b1b354cef4"),
    ("CONTOSO_CUSTOM_SKU", "c0c0c0c0-5a5a-4b1d-9e2f-0000000c5c01"),
];

/// A Secure Score control profile: (id, title, category, service, maxScore, tier,
/// actionType, threat).
type ProfileDef = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    u32,
    &'static str,
    &'static str,
    &'static str,
);

const PROFILES: [ProfileDef; 15] = [
    (
        "AdminMFAV2",
        "Ensure multifactor authentication is enabled for all users in administrative roles",
        "Identity",
        "AzureAD",
        10,
        "Core",
        "Config",
        "AccountBreach",
    ),
    (
        "MFARegistrationV2",
        "Ensure multifactor authentication is enabled for all users",
        "Identity",
        "AzureAD",
        9,
        "Core",
        "Config",
        "PasswordCracking",
    ),
    (
        "BlockLegacyAuthentication",
        "Enable Conditional Access policies to block legacy authentication",
        "Identity",
        "AzureAD",
        8,
        "Core",
        "Config",
        "PasswordSpray",
    ),
    (
        "SelfServicePasswordReset",
        "Enable self-service password reset",
        "Identity",
        "AzureAD",
        1,
        "Defense in Depth",
        "Config",
        "AccountBreach",
    ),
    (
        "SigninRiskPolicy",
        "Turn on sign-in risk policy",
        "Identity",
        "AzureAD",
        7,
        "Advanced",
        "Config",
        "AccountBreach",
    ),
    (
        "UserRiskPolicy",
        "Turn on user risk policy",
        "Identity",
        "AzureAD",
        7,
        "Advanced",
        "Config",
        "AccountBreach",
    ),
    (
        "PWAgePolicyNew",
        "Do not expire passwords",
        "Identity",
        "AzureAD",
        8,
        "Defense in Depth",
        "Config",
        "PasswordCracking",
    ),
    (
        "mdo_safelinksforemail",
        "Create Safe Links policies for email messages",
        "Apps",
        "MDO",
        9,
        "Core",
        "Config",
        "Phishing",
    ),
    (
        "mdo_safeattachments",
        "Turn on Safe Attachments in block mode",
        "Apps",
        "MDO",
        8,
        "Core",
        "Config",
        "Malware",
    ),
    (
        "mdo_phishthresholdlevel",
        "Set the phishing email level threshold at 2 or higher",
        "Apps",
        "MDO",
        9,
        "Defense in Depth",
        "Config",
        "Phishing",
    ),
    (
        "exo_mailtipsenabled",
        "Ensure MailTips are enabled for end users",
        "Data",
        "EXO",
        1,
        "Defense in Depth",
        "Config",
        "DataExfiltration",
    ),
    (
        "exo_storageproviderrestricted",
        "Ensure additional storage providers are restricted in Outlook on the web",
        "Data",
        "EXO",
        3,
        "Advanced",
        "Config",
        "DataExfiltration",
    ),
    (
        "spo_idle_session_timeout",
        "Ensure idle session timeout is set for SharePoint and OneDrive",
        "Data",
        "SPO",
        2,
        "Defense in Depth",
        "Config",
        "DataDeletion",
    ),
    (
        "scid_2010",
        "Turn on Microsoft Defender Antivirus",
        "Device",
        "MDE",
        9,
        "Core",
        "Config",
        "Malware",
    ),
    (
        "scid_4001",
        "Disable SMBv1 on servers",
        "Infrastructure",
        "MDE",
        5,
        "Advanced",
        "Config",
        "ElevationOfPrivilege",
    ),
];
/// The profile marked deprecated, the one a third party handles, the one ignored.
const DEPRECATED_PROFILE: usize = 6;
const THIRD_PARTY_PROFILE: usize = 13;
const IGNORED_PROFILE: usize = 11;

const LEVELS: [&str; 3] = ["Low", "Moderate", "High"];

const JOBS: [&str; 7] = [
    "Office Manager",
    "Accountant",
    "Sales Representative",
    "IT Coordinator",
    "Operations Lead",
    "Managing Director",
    "Receptionist",
];

/// A customer tenant as tests see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxTenant {
    /// A GUID.
    pub id: String,
    pub display_name: String,
    pub default_domain: String,
    /// Every verified domain, the default first, then the initial `onmicrosoft.com` one.
    pub domains: Vec<String>,
}

/// One request as the sandbox received it (login endpoints included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    /// The raw query string.
    pub query: String,
    /// The tenant of the bearer token used; `None` for login endpoints and refused tokens.
    pub token_tenant: Option<String>,
}

/// A tenant's fixed data; users and Secure Score are computed from it when asked for.
struct Tenant {
    /// Position in the seed (drives every generated value).
    seq: u64,
    id: String,
    name: String,
    /// Verified: the default first, the initial second, maybe one more custom.
    domains: Vec<String>,
    unverified: String,
    users: usize,
    /// Indexes into [`SKUS`].
    skus: Vec<usize>,
    created: String,
    partner: bool,
}

impl Tenant {
    fn default_domain(&self) -> &str {
        self.domains.first().map(String::as_str).unwrap_or_default()
    }

    fn initial_domain(&self) -> &str {
        self.domains.get(1).map(String::as_str).unwrap_or_default()
    }
}

#[derive(Default)]
struct TenantState {
    consented: bool,
    deny_security: bool,
    partial_scores: bool,
    /// Bumped by every user edit; delta tokens carry it.
    version: u64,
    /// User id → its current value (`None`: deleted). Seeded users not here are as
    /// generated.
    overrides: HashMap<String, Option<Value>>,
    /// Ids of users added by tests, in order.
    added: Vec<String>,
    /// User id → the version at which it last changed.
    changed: HashMap<String, u64>,
    in_flight: usize,
    max_in_flight: usize,
    /// Security requests admitted within the last minute.
    window: VecDeque<Instant>,
}

struct Inner {
    /// Customer tenants in seed order, then the partner tenant.
    tenants: Vec<Tenant>,
    customers: usize,
    /// Lower-cased tenant id or verified domain → index in `tenants`.
    by_key: HashMap<String, usize>,
    state: Vec<Mutex<TenantState>>,
    /// Access token → tenant index.
    tokens: RwLock<HashMap<String, usize>>,
    secret_expired: AtomicBool,
    security_latency: Mutex<Duration>,
    /// (concurrent, per minute), per tenant.
    security_limits: Mutex<(usize, usize)>,
    seen: Mutex<Vec<SeenRequest>>,
    requests: AtomicU64,
    token_requests: AtomicU64,
    throttled: AtomicU64,
    /// Feeds request ids, trace ids and tokens.
    ids: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Clone)]
pub struct M365Sandbox {
    inner: Arc<Inner>,
    pub faults: Faults,
}

/// A deterministic version-4-shaped GUID.
fn guid(seed: u64) -> String {
    let mut r = Rng::new(seed);
    let a = r.next_u64();
    let b = r.next_u64();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:x}{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        8 + (b >> 62),
        (b >> 48) & 0xfff,
        b & 0xffff_ffff_ffff
    )
}

fn day(days_back: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(NEWEST_DAY_SECS - days_back * 86_400, 0).unwrap_or_default()
}

fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A name as it may appear in an address: ASCII letters only, lower case.
fn mailbox(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        match c {
            'ä' | 'Ä' => out.push_str("ae"),
            'ö' | 'Ö' => out.push_str("oe"),
            'ü' | 'Ü' => out.push_str("ue"),
            'ß' => out.push_str("ss"),
            c if c.is_ascii_alphanumeric() => out.push(c.to_ascii_lowercase()),
            _ => {}
        }
    }
    out
}

fn build(n: usize, users: impl Fn(usize) -> usize, skus: impl Fn(usize) -> usize) -> Inner {
    let autotask = crate::autotask::sandbox::generate(Seed::Small).companies;
    let mut rng = Rng::new(0x0365_5EED);
    let mut slugs = HashSet::new();
    slugs.insert(PARTNER_SLUG.to_string());
    let mut tenants = Vec::with_capacity(n + 1);
    for i in 0..n {
        let name = match autotask.get(i) {
            Some(c) => c.company_name.clone(),
            None => company_name(&mut rng, i),
        };
        let web = web_domain(&name);
        let mut slug = web.trim_end_matches(".example").to_string();
        let mut default = web;
        if slug.is_empty() || !slugs.insert(slug.clone()) {
            slug = format!("{slug}{i}");
            slugs.insert(slug.clone());
            default = format!("{slug}.example");
        }
        let mut domains = vec![default, format!("{slug}.onmicrosoft.com")];
        if i % 3 == 1 {
            domains.push(format!("{slug}-group.example"));
        }
        let k = skus(i).min(SKUS.len());
        tenants.push(Tenant {
            seq: i as u64,
            id: guid(0x7E4A_0000_0000 + i as u64),
            name,
            domains,
            unverified: format!("{slug}-old.example"),
            users: users(i),
            skus: (0..k).map(|x| (i + x) % SKUS.len()).collect(),
            created: iso(day(700 + (i as i64 * 37) % 900)),
            partner: false,
        });
    }
    tenants.push(Tenant {
        seq: u64::MAX,
        id: PARTNER_TENANT_ID.to_string(),
        name: PARTNER_NAME.to_string(),
        domains: vec![
            "demomsp.example".to_string(),
            format!("{PARTNER_SLUG}.onmicrosoft.com"),
        ],
        unverified: "demomsp-old.example".to_string(),
        users: 0,
        skus: Vec::new(),
        created: iso(day(2_000)),
        partner: true,
    });
    let mut by_key = HashMap::new();
    for (i, t) in tenants.iter().enumerate() {
        by_key.insert(t.id.to_ascii_lowercase(), i);
        for d in &t.domains {
            by_key.insert(d.to_ascii_lowercase(), i);
        }
    }
    let state = tenants
        .iter()
        .map(|t| {
            Mutex::new(TenantState {
                consented: t.partner,
                ..TenantState::default()
            })
        })
        .collect();
    Inner {
        customers: n,
        tenants,
        by_key,
        state,
        tokens: RwLock::new(HashMap::new()),
        secret_expired: AtomicBool::new(false),
        security_latency: Mutex::new(Duration::ZERO),
        security_limits: Mutex::new((4, 150)),
        seen: Mutex::new(Vec::new()),
        requests: AtomicU64::new(0),
        token_requests: AtomicU64::new(0),
        throttled: AtomicU64::new(0),
        ids: AtomicU64::new(0),
    }
}

fn user_id(t: &Tenant, j: usize) -> String {
    guid(0x05E5_0000_0000_0000 ^ t.seq.wrapping_mul(1_000_003).wrapping_add(j as u64 + 1))
}

/// The `j`-th seeded user of `t`.
fn seeded_user(t: &Tenant, j: usize) -> Value {
    let first = FIRST[j % FIRST.len()];
    let last = LAST[(j / LAST.len() + j + t.seq as usize) % LAST.len()];
    let mut local = format!("{}.{}", mailbox(first), mailbox(last));
    if j >= FIRST.len() * LAST.len() {
        local.push_str(&j.to_string());
    }
    let domain = t.default_domain();
    let initial = t.initial_domain();
    let upn = format!("{local}@{domain}");
    let guest = j == 3;
    let k = t.skus.len();
    let mut licenses = Vec::new();
    if k > 0 && !guest && j % 6 != 5 {
        let a = t.skus[j % k];
        licenses.push(a);
        let b = t.skus[(j / 4 + 1) % k];
        if j.is_multiple_of(4) && b != a {
            licenses.push(b);
        }
    }
    let licenses: Vec<Value> = licenses
        .into_iter()
        .map(|s| json!({"skuId": SKUS[s].1, "disabledPlans": []}))
        .collect();
    let mut u = json!({
        "id": user_id(t, j),
        "displayName": format!("{first} {last}"),
        "givenName": first,
        "surname": last,
        "userPrincipalName": upn,
        "mail": upn,
        "otherMails": [],
        "proxyAddresses": [format!("SMTP:{upn}"), format!("smtp:{local}@{initial}")],
        "accountEnabled": j != 2,
        "jobTitle": (j % 7 != 6).then(|| JOBS[j % JOBS.len()]),
        "assignedLicenses": licenses,
        "userType": "Member",
        "createdDateTime": iso(day(120 + (j as i64 * 13) % 500)),
    });
    match j {
        // Only the addresses Exchange knows: no `mail`.
        1 => {
            u["mail"] = Value::Null;
            u["otherMails"] = json!([format!("{local}.home@outlook.example")]);
            u["proxyAddresses"] = json!([format!("SMTP:{local}@{initial}")]);
        }
        3 => {
            let mail = format!("{local}@partner.example");
            u["displayName"] = json!(format!("{first} {last} (Partner)"));
            u["userPrincipalName"] = json!(format!("{local}_partner.example#EXT#@{initial}"));
            u["mail"] = json!(mail);
            u["otherMails"] = json!([mail]);
            u["proxyAddresses"] = json!([format!("SMTP:{mail}")]);
            u["userType"] = json!("Guest");
            u["jobTitle"] = Value::Null;
        }
        _ => {}
    }
    u
}

fn seeded_groups(t: &Tenant) -> Vec<Value> {
    let domain = t.default_domain();
    let gid = |k: u64| guid(0x6A0C_0000_0000_0000 ^ t.seq.wrapping_mul(31).wrapping_add(k));
    if t.partner {
        return Vec::new();
    }
    vec![
        json!({"id": gid(1), "displayName": "All Staff", "mail": format!("allstaff@{domain}"),
            "groupTypes": ["Unified"], "securityEnabled": false, "mailEnabled": true}),
        json!({"id": gid(2), "displayName": "IT Admins", "mail": null,
            "groupTypes": [], "securityEnabled": true, "mailEnabled": false}),
        json!({"id": gid(3), "displayName": "Finance Team", "mail": format!("finance@{domain}"),
            "groupTypes": [], "securityEnabled": true, "mailEnabled": true}),
    ]
}

fn action_url(service: &str) -> &'static str {
    match service {
        "AzureAD" => {
            "https://entra.microsoft.com/#view/Microsoft_AAD_ConditionalAccess/ConditionalAccessBlade"
        }
        "MDO" => "https://security.microsoft.com/threatpolicy",
        "EXO" => "https://admin.exchange.microsoft.com/#/settings",
        "SPO" => "https://admin.microsoft.com/sharepoint?page=accessControl",
        _ => "https://security.microsoft.com/securescore?viewid=actions",
    }
}

fn vendor() -> Value {
    json!({"provider": "SecureScore", "providerVersion": null, "subProvider": null, "vendor": "Microsoft"})
}

fn control_profile(t: &Tenant, k: usize) -> Value {
    let (id, title, category, service, max, tier, action, threat) = PROFILES[k];
    let url = action_url(service);
    let state = match k {
        THIRD_PARTY_PROFILE => "ThirdParty",
        IGNORED_PROFILE => "Ignored",
        _ => "Default",
    };
    let updated = iso(day(30 + k as i64));
    json!({
        "id": id,
        "azureTenantId": t.id,
        "actionType": action,
        "actionUrl": url,
        "controlCategory": category,
        "title": title,
        "deprecated": k == DEPRECATED_PROFILE,
        "implementationCost": LEVELS[k % 3],
        "lastModifiedDateTime": updated,
        "maxScore": max,
        "rank": k + 1,
        "remediation": format!(
            "<p>{title}.</p><ol><li>Go to the <a href=\"{url}\" target=\"_blank\">admin center</a>.</li><li>Apply the recommended setting and save.</li></ol>"
        ),
        "remediationImpact": format!("<p>Users may notice a change after: {title}.</p>"),
        "service": service,
        "threats": [threat],
        "tier": tier,
        "userImpact": LEVELS[(k + 1) % 3],
        "complianceInformation": [],
        "controlStateUpdates": [{
            "assignedTo": "",
            "comment": if state == "Default" { "" } else { "Handled outside Microsoft 365" },
            "state": state,
            "updatedBy": if state == "Default" { "" } else { "admin@msp.example" },
            "updatedDateTime": updated,
        }],
        "vendorInformation": vendor(),
    })
}

/// Control `k`'s score on the day `d` days before the newest: each tenant starts somewhere
/// and improves over time.
fn control_score(t: &Tenant, k: usize, d: usize) -> f64 {
    let max = f64::from(PROFILES[k].4);
    let mut r = Rng::new(t.seq.wrapping_mul(97).wrapping_add(k as u64) ^ 0x5C0E);
    let start = r.below(70) as f64 / 100.0;
    let slope = r.below(8) as f64 / 1_000.0;
    let frac = (start + (SCORE_DAYS - 1 - d) as f64 * slope).min(1.0);
    (max * frac * 2.0).floor() / 2.0
}

/// Users in the tenant's current state (seeded ones as edited, then added ones).
fn current_users(t: &Tenant, st: &TenantState) -> Vec<Value> {
    let mut out = Vec::with_capacity(t.users + st.added.len());
    for slot in 0..t.users + st.added.len() {
        if let Some(u) = user_at(t, st, slot) {
            out.push(u);
        }
    }
    out
}

/// The user in `slot` (seeded users first, then added ones); `None` when deleted or past
/// the end.
fn user_at(t: &Tenant, st: &TenantState, slot: usize) -> Option<Value> {
    if slot < t.users {
        let id = user_id(t, slot);
        match st.overrides.get(&id) {
            Some(v) => v.clone(),
            None => Some(seeded_user(t, slot)),
        }
    } else {
        let id = st.added.get(slot - t.users)?;
        st.overrides.get(id).cloned().flatten()
    }
}

/// User counts a snapshot reports: (active, licensed).
fn user_counts(t: &Tenant, st: &TenantState) -> (usize, usize) {
    let users = current_users(t, st);
    let active = users
        .iter()
        .filter(|u| u["accountEnabled"] != json!(false))
        .count();
    let licensed = users
        .iter()
        .filter(|u| {
            u["assignedLicenses"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
        })
        .count();
    (active, licensed)
}

fn snapshot(t: &Tenant, d: usize, partial: bool, (active, licensed): (usize, usize)) -> Value {
    let created = day(d as i64);
    let created_s = iso(created);
    let n = if partial {
        PROFILES.len() / 2
    } else {
        PROFILES.len()
    };
    let mut current = 0.0;
    let mut controls = Vec::with_capacity(n);
    for (k, p) in PROFILES.iter().enumerate().take(n) {
        let score = control_score(t, k, d);
        current += score;
        let pct = (score / f64::from(p.4) * 10_000.0).round() / 100.0;
        controls.push(json!({
            "controlCategory": p.2,
            "controlName": p.0,
            "description": p.1,
            "score": score,
            "scoreInPercentage": pct,
            "implementationStatus": format!("{}% of the recommended configuration is in place", pct.round()),
            "lastSynced": created_s,
        }));
    }
    let max: u32 = PROFILES.iter().map(|p| p.4).sum();
    let wobble = (d % 7) as f64 / 10.0;
    json!({
        "id": format!("{}_{}", t.id, created_s),
        "azureTenantId": t.id,
        "activeUserCount": active,
        "createdDateTime": created_s,
        "currentScore": current,
        "enabledServices": ["HasExchange", "HasSharePoint", "HasOD4B", "HasAzureAD"],
        "licensedUserCount": licensed,
        "maxScore": max,
        "averageComparativeScores": [
            {"basis": "AllTenants", "averageScore": 42.9 + wobble},
            {"basis": "TotalSeats", "averageScore": 47.3 + wobble,
                "seatSizeRangeLowerValue": "100", "seatSizeRangeUpperValue": "500"},
            {"basis": "IndustryTypes", "averageScore": 45.1 + wobble,
                "industryName": "Professional services"},
        ],
        "controlScores": controls,
        "vendorInformation": vendor(),
    })
}

impl M365Sandbox {
    /// `Seed::Small`: 8 tenants of 10 to 14 users and 4 to 6 SKUs; `Seed::Large`: 200;
    /// `Seed::Companies(n)`: n. No customer tenant has consented yet.
    pub fn new(seed: Seed) -> Self {
        let n = match seed {
            Seed::Small => 8,
            Seed::Large => 200,
            Seed::Companies(n) => n as usize,
        };
        Self::from_inner(build(n, |i| 10 + (i * 3) % 5, |i| 4 + i % 3))
    }

    /// Exactly these sizes (benchmarks). Users and Secure Score data are computed when
    /// asked for, so memory stays small.
    pub fn with_size(tenants: usize, users_per_tenant: usize, skus_per_tenant: usize) -> Self {
        Self::from_inner(build(tenants, |_| users_per_tenant, |_| skus_per_tenant))
    }

    fn from_inner(inner: Inner) -> Self {
        Self {
            inner: Arc::new(inner),
            faults: Faults::default(),
        }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route(
                "/{tenant}/v2.0/adminconsent",
                get(consent_page).post(consent_post),
            )
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .route("/v1.0/{*rest}", any(graph))
            .with_state(self.inner.clone())
            .layer(axum::middleware::from_fn_with_state(
                self.faults.clone(),
                mspbridge_sandbox::inject_faults,
            ))
    }

    pub fn serve(&self, listener: TcpListener) -> std::io::Result<SandboxHandle> {
        mspbridge_sandbox::serve(self.router(), listener)
    }

    /// The root both the login endpoints and Graph live at.
    pub fn base_url(handle: &SandboxHandle) -> String {
        format!("https://{}", handle.host())
    }

    /// Customer tenants, in seed order.
    pub fn tenants(&self) -> Vec<SandboxTenant> {
        self.inner.tenants[..self.inner.customers]
            .iter()
            .map(|t| SandboxTenant {
                id: t.id.clone(),
                display_name: t.name.clone(),
                default_domain: t.default_domain().to_string(),
                domains: t.domains.clone(),
            })
            .collect()
    }

    fn with_state<R>(
        &self,
        tenant_id: &str,
        f: impl FnOnce(&Tenant, &mut TenantState) -> R,
    ) -> Option<R> {
        let i = self.inner.resolve(tenant_id)?;
        let mut st = lock(&self.inner.state[i]);
        Some(f(&self.inner.tenants[i], &mut st))
    }

    /// As if the tenant's admin had consented.
    pub fn consent(&self, tenant_id: &str) {
        self.with_state(tenant_id, |_, st| st.consented = true);
    }

    /// The app's service principal is removed from the tenant: token requests get 700016,
    /// and tokens already granted are refused by Graph (401).
    pub fn revoke_consent(&self, tenant_id: &str) {
        let Some(i) = self.inner.resolve(tenant_id) else {
            return;
        };
        if self.inner.tenants[i].partner {
            return;
        }
        lock(&self.inner.state[i]).consented = false;
        match self.inner.tokens.write() {
            Ok(mut t) => t.retain(|_, v| *v != i),
            Err(p) => p.into_inner().retain(|_, v| *v != i),
        }
    }

    pub fn is_consented(&self, tenant_id: &str) -> bool {
        self.with_state(tenant_id, |_, st| st.consented)
            .unwrap_or(false)
    }

    /// Token requests are refused with 7000222 while `expired`.
    pub fn expire_secret(&self, expired: bool) {
        self.inner.secret_expired.store(expired, Ordering::Relaxed);
    }

    /// The tenant's consent lacks `SecurityEvents.Read.All`: 403 on `/v1.0/security/*`.
    pub fn deny_security(&self, tenant_id: &str) {
        self.with_state(tenant_id, |_, st| st.deny_security = true);
    }

    /// `secureScores` answers 206 with a `Warning` header, today's snapshot lower and with
    /// half of its control scores.
    pub fn set_partial_scores(&self, tenant_id: &str, partial: bool) {
        self.with_state(tenant_id, |_, st| st.partial_scores = partial);
    }

    /// Added to every `/v1.0/security/*` answer, while the request counts as in flight.
    pub fn set_security_latency(&self, d: Duration) {
        *lock(&self.inner.security_latency) = d;
    }

    /// Per tenant: requests in flight at once and per rolling minute (default 4 and 150).
    pub fn set_security_limits(&self, concurrent: usize, per_minute: usize) {
        *lock(&self.inner.security_limits) = (concurrent, per_minute);
    }

    /// The most `/v1.0/security/*` requests of the tenant in flight at once, counted on
    /// arrival (refused ones included).
    pub fn max_concurrent_security(&self, tenant_id: &str) -> usize {
        self.with_state(tenant_id, |_, st| st.max_in_flight)
            .unwrap_or(0)
    }

    /// 429s answered.
    pub fn throttled(&self) -> u64 {
        self.inner.throttled.load(Ordering::Relaxed)
    }

    /// Edits a user (its `id` stays); delta returns it from then on.
    pub fn update_user(&self, tenant_id: &str, user_id: &str, f: impl FnOnce(&mut Value)) {
        self.with_state(tenant_id, |t, st| {
            let slot = (0..t.users).find(|j| user_id_matches(t, *j, user_id));
            let current = match (st.overrides.get(user_id), slot) {
                (Some(Some(v)), _) => Some(v.clone()),
                (Some(None), _) => None,
                (None, Some(j)) => Some(seeded_user(t, j)),
                (None, None) => None,
            };
            let Some(mut v) = current else {
                return;
            };
            f(&mut v);
            if let Value::Object(o) = &mut v {
                o.insert("id".into(), json!(user_id));
            }
            st.version += 1;
            st.changed.insert(user_id.to_string(), st.version);
            st.overrides.insert(user_id.to_string(), Some(v));
        });
    }

    /// Adds (or replaces) a user; one without an `id` gets one.
    pub fn add_user(&self, tenant_id: &str, user: Value) {
        let n = self.inner.ids.fetch_add(1, Ordering::Relaxed);
        self.with_state(tenant_id, |t, st| {
            let Value::Object(mut o) = user else {
                return;
            };
            let id = match o.get("id").and_then(Value::as_str) {
                Some(id) => id.to_string(),
                None => {
                    let id = guid(0xADD0_0000_0000_0000 ^ t.seq.wrapping_mul(7_919) ^ n);
                    o.insert("id".into(), json!(id));
                    id
                }
            };
            let seeded = (0..t.users).any(|j| user_id_matches(t, j, &id));
            if !seeded && !st.added.contains(&id) {
                st.added.push(id.clone());
            }
            st.version += 1;
            st.changed.insert(id.clone(), st.version);
            st.overrides.insert(id, Some(Value::Object(o)));
        });
    }

    /// Deletes a user; delta returns `{"id":…,"@removed":{"reason":"deleted"}}`.
    pub fn delete_user(&self, tenant_id: &str, user_id: &str) {
        self.with_state(tenant_id, |t, st| {
            let exists = match st.overrides.get(user_id) {
                Some(v) => v.is_some(),
                None => (0..t.users).any(|j| user_id_matches(t, j, user_id)),
            };
            if !exists {
                return;
            }
            st.version += 1;
            st.changed.insert(user_id.to_string(), st.version);
            st.overrides.insert(user_id.to_string(), None);
        });
    }

    /// The tenant's users as Graph serves them (every property).
    pub fn users(&self, tenant_id: &str) -> Vec<Value> {
        self.with_state(tenant_id, |t, st| current_users(t, st))
            .unwrap_or_default()
    }

    pub fn seen(&self) -> Vec<SeenRequest> {
        lock(&self.inner.seen).clone()
    }

    /// Graph requests received (token and consent requests not included).
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// Token requests received (refused ones included).
    pub fn token_requests(&self) -> u64 {
        self.inner.token_requests.load(Ordering::Relaxed)
    }
}

fn user_id_matches(t: &Tenant, j: usize, id: &str) -> bool {
    user_id(t, j) == id
}

impl Inner {
    /// A tenant by id or verified domain (case-insensitive).
    fn resolve(&self, key: &str) -> Option<usize> {
        self.by_key.get(&key.trim().to_ascii_lowercase()).copied()
    }

    fn fresh_id(&self) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        guid(n.wrapping_mul(0x9E37_79B9) ^ nanos)
    }

    fn record(&self, method: &Method, uri: &Uri, tenant: Option<usize>) {
        lock(&self.seen).push(SeenRequest {
            method: method.to_string(),
            path: uri.path().to_string(),
            query: uri.query().unwrap_or_default().to_string(),
            token_tenant: tenant
                .and_then(|i| self.tenants.get(i))
                .map(|t| t.id.clone()),
        });
    }
}

// ---------------------------------------------------------------------------------------
// Encoding helpers

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

/// `a=b&c=d` decoded; `None` when any part is malformed.
fn pairs(text: &str) -> Option<Vec<(String, String)>> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((decode(k)?, decode(v)?))
        })
        .collect()
}

fn form(body: &[u8]) -> Option<HashMap<String, String>> {
    Some(
        pairs(std::str::from_utf8(body).ok()?)?
            .into_iter()
            .collect(),
    )
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
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

fn token_encode(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

fn token_decode(s: &str) -> Option<String> {
    String::from_utf8(URL_SAFE_NO_PAD.decode(s.trim()).ok()?).ok()
}

/// The first path segment, percent-decoded (the tenant of a login URL).
fn first_segment(uri: &Uri) -> String {
    let raw = uri
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    decode(raw).unwrap_or_else(|| raw.to_string())
}

// ---------------------------------------------------------------------------------------
// Identity platform

fn html_page(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title></head>\n<body style=\"font-family: sans-serif; max-width: 40em; margin: 2em auto\">\n<h1>{t}</h1>\n{body}\n</body></html>\n",
        t = html_escape(title)
    );
    (status, Html(page)).into_response()
}

fn consent_error(status: StatusCode, code: u32, message: &str) -> Response {
    html_page(
        status,
        "Sign in to your account",
        &format!(
            "<p>Sorry, but we're having trouble signing you in.</p>\n<p><strong>AADSTS{code}</strong>: {}</p>",
            html_escape(message)
        ),
    )
}

fn app_not_found(client_id: &str, tenant: &str) -> String {
    format!(
        "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
    )
}

async fn consent_page(State(s): State<Arc<Inner>>, method: Method, uri: Uri) -> Response {
    s.record(&method, &uri, None);
    let path_tenant = first_segment(&uri);
    let Some(q) = pairs(uri.query().unwrap_or_default()) else {
        return consent_error(StatusCode::BAD_REQUEST, 900144, "The request is malformed.");
    };
    let q: HashMap<String, String> = q.into_iter().collect();
    let client_id = q.get("client_id").map(String::as_str).unwrap_or_default();
    if client_id != DEMO_CLIENT_ID {
        return consent_error(
            StatusCode::BAD_REQUEST,
            700016,
            &app_not_found(client_id, &path_tenant),
        );
    }
    let Some(redirect_uri) = q.get("redirect_uri").filter(|r| !r.is_empty()) else {
        return consent_error(
            StatusCode::BAD_REQUEST,
            900144,
            "The request body must contain the following parameter: 'redirect_uri'.",
        );
    };
    let generic = matches!(
        path_tenant.to_ascii_lowercase().as_str(),
        "organizations" | "common"
    );
    let preselected = s.resolve(&path_tenant);
    if !generic && preselected.is_none() {
        return consent_error(
            StatusCode::BAD_REQUEST,
            90002,
            &format!(
                "Tenant '{path_tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        );
    }
    let mut options = String::new();
    for (i, t) in s.tenants[..s.customers].iter().enumerate() {
        options.push_str(&format!(
            "<option value=\"{}\"{}>{} ({})</option>\n",
            html_escape(&t.id),
            if preselected == Some(i) {
                " selected"
            } else {
                ""
            },
            html_escape(&t.name),
            html_escape(t.default_domain()),
        ));
    }
    let hidden = |name: &str, value: &str| {
        format!(
            "<input type=\"hidden\" name=\"{name}\" value=\"{}\">\n",
            html_escape(value)
        )
    };
    let scope = q.get("scope").map(String::as_str).unwrap_or_default();
    let mut fields = hidden("client_id", client_id);
    fields.push_str(&hidden("scope", scope));
    fields.push_str(&hidden("redirect_uri", redirect_uri));
    if let Some(state) = q.get("state") {
        fields.push_str(&hidden("state", state));
    }
    let body = format!(
        "<p><strong>mspbridge</strong> (sandbox app {client}) is requesting permissions for your organization:</p>
<ul>
<li>Read directory data (Directory.Read.All)</li>
<li>Read all users' full profiles (User.Read.All)</li>
<li>Read your organization's security events (SecurityEvents.Read.All)</li>
<li>Read all company places and organization information (Organization.Read.All)</li>
</ul>
<p>Scope requested: <code>{scope}</code></p>
<form method=\"post\">
{fields}<p><label for=\"tenant\">Sign in as the administrator of:</label><br>
<select name=\"tenant\" id=\"tenant\">
{options}</select></p>
<p>Accepting grants these permissions for every user of the organization.</p>
<p><button type=\"submit\" name=\"decision\" value=\"accept\">Accept</button>
<button type=\"submit\" name=\"decision\" value=\"cancel\">Cancel</button></p>
</form>",
        client = html_escape(client_id),
        scope = html_escape(scope),
    );
    html_page(StatusCode::OK, "Permissions requested", &body)
}

async fn consent_post(
    State(s): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    s.record(&method, &uri, None);
    let path_tenant = first_segment(&uri);
    let Some(f) = form(&body) else {
        return consent_error(
            StatusCode::BAD_REQUEST,
            900144,
            "The request body is not a form.",
        );
    };
    let field = |k: &str| f.get(k).map(String::as_str);
    let client_id = field("client_id").unwrap_or_default();
    if client_id != DEMO_CLIENT_ID {
        return consent_error(
            StatusCode::BAD_REQUEST,
            700016,
            &app_not_found(client_id, &path_tenant),
        );
    }
    let Some(redirect_uri) = field("redirect_uri").filter(|r| !r.is_empty()) else {
        return consent_error(
            StatusCode::BAD_REQUEST,
            900144,
            "The request body must contain the following parameter: 'redirect_uri'.",
        );
    };
    if !(redirect_uri.starts_with("http://") || redirect_uri.starts_with("https://")) {
        return consent_error(
            StatusCode::BAD_REQUEST,
            50011,
            &format!(
                "The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs configured for the application '{client_id}'."
            ),
        );
    }
    let sep = if redirect_uri.contains('?') { '&' } else { '?' };
    let state = field("state").map(|st| format!("&state={}", encode(st)));
    let location = match field("decision") {
        Some("accept") => {
            let chosen = field("tenant")
                .filter(|t| !t.is_empty())
                .unwrap_or(&path_tenant);
            let Some(i) = s.resolve(chosen) else {
                return consent_error(
                    StatusCode::BAD_REQUEST,
                    90002,
                    &format!("Tenant '{chosen}' not found."),
                );
            };
            lock(&s.state[i]).consented = true;
            format!(
                "{redirect_uri}{sep}admin_consent=True&tenant={}&scope={}{}",
                encode(&s.tenants[i].id),
                encode(field("scope").unwrap_or_default()),
                state.unwrap_or_default()
            )
        }
        Some("cancel") => format!(
            "{redirect_uri}{sep}error=access_denied&error_subcode=cancel&error_description={}{}",
            encode("AADSTS65004: User declined to consent to access the app."),
            state.unwrap_or_default()
        ),
        _ => {
            return consent_error(
                StatusCode::BAD_REQUEST,
                900144,
                "The request body must contain the following parameter: 'decision'.",
            );
        }
    };
    match HeaderValue::from_str(&location) {
        Ok(v) => (StatusCode::FOUND, [(header::LOCATION, v)]).into_response(),
        Err(_) => consent_error(
            StatusCode::BAD_REQUEST,
            50011,
            "The redirect URI specified in the request is not valid.",
        ),
    }
}

fn entra_error(s: &Inner, status: StatusCode, error: &str, code: u32, message: &str) -> Response {
    let now = Utc::now();
    let timestamp = now.format("%Y-%m-%d %H:%M:%SZ").to_string();
    let trace = s.fresh_id();
    let correlation = s.fresh_id();
    let body = json!({
        "error": error,
        "error_description": format!(
            "AADSTS{code}: {message} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {timestamp}"
        ),
        "error_codes": [code],
        "timestamp": timestamp,
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    });
    (status, axum::Json(body)).into_response()
}

/// The secret checks of the token endpoint: missing (7000216), expired (7000222), wrong
/// (7000215); `None` when the secret is the demo app's.
fn check_secret(s: &Arc<Inner>, secret: Option<&str>, client_id: &str) -> Option<Response> {
    let unauthorized = StatusCode::UNAUTHORIZED;
    let Some(secret) = secret.filter(|x| !x.is_empty()) else {
        return Some(entra_error(
            s,
            unauthorized,
            "invalid_client",
            7000216,
            "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
        ));
    };
    if s.secret_expired.load(Ordering::Relaxed) {
        return Some(entra_error(
            s,
            unauthorized,
            "invalid_client",
            7000222,
            &format!(
                "The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds."
            ),
        ));
    }
    if secret != DEMO_CLIENT_SECRET {
        return Some(entra_error(
            s,
            unauthorized,
            "invalid_client",
            7000215,
            &format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
            ),
        ));
    }
    None
}

/// The demo certificate's thumbprint and public key, as the app registration holds them.
fn demo_certificate() -> &'static (String, Vec<u8>) {
    static CERT: std::sync::OnceLock<(String, Vec<u8>)> = std::sync::OnceLock::new();
    CERT.get_or_init(|| {
        use super::certificate::{Certificate, DEMO_CERTIFICATE, DEMO_PRIVATE_KEY, public_key_der};
        let x5t = Certificate::from_pem(DEMO_CERTIFICATE, DEMO_PRIVATE_KEY)
            .map(|c| c.thumbprint().to_string())
            .unwrap_or_default();
        (x5t, public_key_der(DEMO_PRIVATE_KEY).unwrap_or_default())
    })
}

/// A client assertion as Entra checks it: the jwt-bearer type, a signature by a
/// certificate uploaded to the app (700027), the app as issuer and subject (700021), the
/// token endpoint as audience and a valid time range (700024).
fn check_assertion(kind: &str, assertion: &str, client_id: &str) -> Result<(), (u32, String)> {
    if kind != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
        return Err((
            700023,
            format!(
                "The client_assertion_type '{kind}' is not supported: use urn:ietf:params:oauth:client-assertion-type:jwt-bearer."
            ),
        ));
    }
    let (x5t, public) = demo_certificate();
    let Some((header, claims)) = super::certificate::verify(assertion, public) else {
        let used = assertion
            .split('.')
            .next()
            .and_then(|h| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(h)
                    .ok()
            })
            .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
            .and_then(|h| h["x5t"].as_str().map(str::to_string))
            .unwrap_or_default();
        return Err((
            700027,
            format!(
                "Client assertion failed signature validation. [Reason - The key was not found., Thumbprint of key used by client: '{used}']"
            ),
        ));
    };
    if header["x5t"].as_str() != Some(x5t.as_str()) {
        return Err((
            700027,
            "Client assertion failed signature validation. [Reason - The key was not found.]"
                .to_string(),
        ));
    }
    if claims["iss"].as_str() != Some(client_id) || claims["sub"].as_str() != Some(client_id) {
        return Err((
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter."
                .to_string(),
        ));
    }
    let now = chrono::Utc::now().timestamp();
    let exp = claims["exp"].as_i64().unwrap_or(0);
    let nbf = claims["nbf"].as_i64().unwrap_or(now);
    if exp < now
        || nbf > now + 300
        || !claims["aud"]
            .as_str()
            .is_some_and(|a| a.ends_with("/oauth2/v2.0/token"))
    {
        return Err((
            700024,
            "Client assertion is not within its valid time range or its audience is not this token endpoint.".to_string(),
        ));
    }
    Ok(())
}

async fn token(State(s): State<Arc<Inner>>, method: Method, uri: Uri, body: Bytes) -> Response {
    s.token_requests.fetch_add(1, Ordering::Relaxed);
    s.record(&method, &uri, None);
    let tenant = first_segment(&uri);
    let bad = StatusCode::BAD_REQUEST;
    let generic = matches!(
        tenant.to_ascii_lowercase().as_str(),
        "common" | "organizations" | "consumers"
    );
    if generic {
        return entra_error(
            &s,
            bad,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant}' not found. The client credentials grant needs a tenant: use a tenant-specific endpoint (/{{tenant id}}/oauth2/v2.0/token) instead of /{tenant}."
            ),
        );
    }
    let Some(i) = s.resolve(&tenant) else {
        return entra_error(
            &s,
            bad,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
            ),
        );
    };
    let Some(f) = form(&body) else {
        return entra_error(
            &s,
            bad,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        );
    };
    let field = |k: &str| f.get(k).map(String::as_str);
    match field("grant_type") {
        Some("client_credentials") => {}
        None | Some("") => {
            return entra_error(
                &s,
                bad,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            );
        }
        Some(other) => {
            return entra_error(
                &s,
                bad,
                "unsupported_grant_type",
                70003,
                &format!("The app requested an unsupported grant type '{other}'."),
            );
        }
    }
    let client_id = field("client_id").unwrap_or_default();
    if client_id.is_empty() {
        return entra_error(
            &s,
            bad,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    }
    let consented = lock(&s.state[i]).consented;
    if client_id != DEMO_CLIENT_ID || !consented {
        return entra_error(
            &s,
            bad,
            "unauthorized_client",
            700016,
            &app_not_found(client_id, &tenant),
        );
    }
    let unauthorized = StatusCode::UNAUTHORIZED;
    if field("client_assertion").is_some() || field("client_assertion_type").is_some() {
        if let Err((code, message)) = check_assertion(
            field("client_assertion_type").unwrap_or_default(),
            field("client_assertion").unwrap_or_default(),
            client_id,
        ) {
            return entra_error(&s, unauthorized, "invalid_client", code, &message);
        }
    } else if let Some(refused) = check_secret(&s, field("client_secret"), client_id) {
        return refused;
    }
    if field("scope") != Some(GRAPH_SCOPE) {
        return entra_error(
            &s,
            bad,
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope {} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).",
                field("scope").unwrap_or_default()
            ),
        );
    }
    let n = s.ids.fetch_add(1, Ordering::Relaxed);
    let access = format!(
        "eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.{}.{}",
        token_encode(&format!("{{\"tid\":\"{}\",\"n\":{n}}}", s.tenants[i].id)),
        token_encode(&s.fresh_id())
    );
    match s.tokens.write() {
        Ok(mut t) => t.insert(access.clone(), i),
        Err(p) => p.into_inner().insert(access.clone(), i),
    };
    (
        StatusCode::OK,
        axum::Json(json!({
            "token_type": "Bearer",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": access,
        })),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------
// Graph

/// What a Graph handler needs from the request.
struct Req {
    host: String,
    /// The raw path (`/v1.0/users`), as links repeat it.
    path: String,
    raw_query: String,
    query: Vec<(String, String)>,
    client_request_id: Option<String>,
    /// `Prefer: odata.maxpagesize=N`.
    max_page: Option<usize>,
}

impl Req {
    fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// `https://{host}{path}?{query without tokens}&$skiptoken={token}`.
    fn next_link(&self, token: &str) -> String {
        let mut parts: Vec<String> = self
            .raw_query
            .split('&')
            .filter(|p| !p.is_empty())
            .filter(|p| {
                let k = p.split('=').next().unwrap_or_default();
                let k = decode(k).unwrap_or_default();
                !k.eq_ignore_ascii_case("$skiptoken") && !k.eq_ignore_ascii_case("$deltatoken")
            })
            .map(str::to_string)
            .collect();
        parts.push(format!("$skiptoken={token}"));
        format!("https://{}{}?{}", self.host, self.path, parts.join("&"))
    }
}

fn graph_error(s: &Inner, req: &Req, status: StatusCode, code: &str, message: &str) -> Response {
    let request_id = s.fresh_id();
    let client = req
        .client_request_id
        .clone()
        .unwrap_or_else(|| request_id.clone());
    let body = json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string(),
                "request-id": request_id,
                "client-request-id": client,
            },
        },
    });
    (status, axum::Json(body)).into_response()
}

fn ok(body: Value) -> Response {
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn context(entity: &str) -> String {
    format!("https://graph.microsoft.com/v1.0/$metadata#{entity}")
}

fn collection(
    entity: &str,
    items: Vec<Value>,
    next: Option<String>,
    delta: Option<String>,
) -> Value {
    let mut m = Map::new();
    m.insert("@odata.context".into(), json!(context(entity)));
    if let Some(n) = next {
        m.insert("@odata.nextLink".into(), json!(n));
    }
    if let Some(d) = delta {
        m.insert("@odata.deltaLink".into(), json!(d));
    }
    m.insert("value".into(), Value::Array(items));
    Value::Object(m)
}

/// Keeps the `$select`ed properties (and `id`, and `@removed`), case-insensitively.
fn select(v: Value, select: Option<&str>) -> Value {
    let Some(sel) = select.filter(|s| !s.trim().is_empty()) else {
        return v;
    };
    let wanted: Vec<String> = sel
        .split(',')
        .map(|p| p.trim().to_ascii_lowercase())
        .collect();
    match v {
        Value::Object(o) => Value::Object(
            o.into_iter()
                .filter(|(k, _)| {
                    k == "id" || k == "@removed" || wanted.contains(&k.to_ascii_lowercase())
                })
                .collect(),
        ),
        other => other,
    }
}

/// Removes the in-flight count of a security request however its handler ends.
struct SecurityGuard {
    inner: Arc<Inner>,
    tenant: usize,
}

impl Drop for SecurityGuard {
    fn drop(&mut self) {
        let mut st = lock(&self.inner.state[self.tenant]);
        st.in_flight = st.in_flight.saturating_sub(1);
    }
}

/// Counts the request in flight, then refuses it (429 with `Retry-After`) past the
/// tenant's concurrency or per-minute limit.
fn admit_security(s: &Arc<Inner>, tenant: usize) -> Result<SecurityGuard, u64> {
    let (concurrent, per_minute) = *lock(&s.security_limits);
    let mut st = lock(&s.state[tenant]);
    st.in_flight += 1;
    st.max_in_flight = st.max_in_flight.max(st.in_flight);
    let guard = SecurityGuard {
        inner: s.clone(),
        tenant,
    };
    if st.in_flight > concurrent {
        drop(st);
        drop(guard);
        return Err(1);
    }
    let now = Instant::now();
    let window = Duration::from_secs(60);
    while st
        .window
        .front()
        .is_some_and(|t| now.duration_since(*t) >= window)
    {
        st.window.pop_front();
    }
    if st.window.len() >= per_minute {
        let free_in = st
            .window
            .front()
            .map(|t| (*t + window).saturating_duration_since(now))
            .unwrap_or(window);
        drop(st);
        drop(guard);
        return Err(free_in.as_secs_f64().ceil().max(1.0) as u64);
    }
    st.window.push_back(now);
    Ok(guard)
}

async fn graph(
    State(s): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    s.requests.fetch_add(1, Ordering::Relaxed);
    let header_str = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    let max_page = header_str("prefer").and_then(|p| {
        p.split(',').find_map(|part| {
            part.trim()
                .strip_prefix("odata.maxpagesize=")
                .and_then(|n| n.trim().parse::<usize>().ok())
        })
    });
    let raw_query = uri.query().unwrap_or_default().to_string();
    let req = Req {
        host: header_str("host").unwrap_or("127.0.0.1").to_string(),
        path: uri.path().to_string(),
        query: pairs(&raw_query).unwrap_or_default(),
        raw_query,
        client_request_id: header_str("client-request-id").map(str::to_string),
        max_page,
    };
    let bearer = header_str("authorization")
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .unwrap_or_default();
    let tenant = if bearer.is_empty() {
        None
    } else {
        match s.tokens.read() {
            Ok(t) => t.get(bearer).copied(),
            Err(p) => p.into_inner().get(bearer).copied(),
        }
    };
    s.record(&method, &uri, tenant);
    let Some(t) = tenant else {
        let message = if bearer.is_empty() {
            "Access token is empty."
        } else {
            "Access token validation failure. Invalid audience."
        };
        return graph_error(
            &s,
            &req,
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            message,
        );
    };
    if pairs(uri.query().unwrap_or_default()).is_none() {
        return graph_error(
            &s,
            &req,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "The query specified in the URI is not valid.",
        );
    }
    let segments: Vec<String> = uri
        .path()
        .trim_start_matches("/v1.0")
        .split('/')
        .filter(|p| !p.is_empty())
        .map(|p| decode(p).unwrap_or_else(|| p.to_string()))
        .collect();
    let lower: Vec<String> = segments.iter().map(|p| p.to_ascii_lowercase()).collect();
    let parts: Vec<&str> = lower.iter().map(String::as_str).collect();
    if parts.first() == Some(&"security") {
        let guard = match admit_security(&s, t) {
            Ok(g) => g,
            Err(after) => {
                s.throttled.fetch_add(1, Ordering::Relaxed);
                let mut r = graph_error(
                    &s,
                    &req,
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequests",
                    "Too many requests",
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(after));
                return r;
            }
        };
        let latency = *lock(&s.security_latency);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let resp = if lock(&s.state[t]).deny_security {
            graph_error(
                &s,
                &req,
                StatusCode::FORBIDDEN,
                "Forbidden",
                "Insufficient privileges to complete the operation. The application does not have the SecurityEvents.Read.All permission.",
            )
        } else {
            route(&s, &req, &method, t, &parts, &segments)
        };
        drop(guard);
        return resp;
    }
    route(&s, &req, &method, t, &parts, &segments)
}

/// Dispatches on the lower-cased path segments after `/v1.0`.
fn route(
    s: &Inner,
    req: &Req,
    method: &Method,
    t: usize,
    parts: &[&str],
    segments: &[String],
) -> Response {
    let tenant = &s.tenants[t];
    let known = matches!(
        parts,
        ["organization"]
            | ["domains"]
            | ["users"]
            | ["users", _]
            | ["groups"]
            | ["subscribedskus"]
            | ["security", "securescores"]
            | ["security", "securescorecontrolprofiles"]
            | ["tenantrelationships", "delegatedadminrelationships"]
    ) || matches!(parts, ["tenantrelationships", f] if f.starts_with("findtenantinformationbytenantid("));
    if !known {
        return graph_error(
            s,
            req,
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            &format!(
                "Resource not found for the segment '{}'.",
                segments.last().map(String::as_str).unwrap_or_default()
            ),
        );
    }
    if method != Method::GET {
        return graph_error(
            s,
            req,
            StatusCode::METHOD_NOT_ALLOWED,
            "Request_BadRequest",
            "Specified HTTP method is not allowed for the request target.",
        );
    }
    match parts {
        ["organization"] => organization(tenant),
        ["domains"] => domains(tenant),
        ["users"] => users(s, req, t),
        ["users", "delta" | "delta()"] => users_delta(s, req, t),
        ["users", _] => {
            let key = segments.get(1).map(String::as_str).unwrap_or_default();
            let st = lock(&s.state[t]);
            let found = current_users(tenant, &st).into_iter().find(|u| {
                u["id"].as_str() == Some(key)
                    || u["userPrincipalName"]
                        .as_str()
                        .is_some_and(|p| p.eq_ignore_ascii_case(key))
            });
            drop(st);
            match found {
                Some(u) => {
                    let mut u = select(u, req.param("$select"));
                    if let Value::Object(o) = &mut u {
                        o.insert("@odata.context".into(), json!(context("users/$entity")));
                    }
                    ok(u)
                }
                None => graph_error(
                    s,
                    req,
                    StatusCode::NOT_FOUND,
                    "Request_ResourceNotFound",
                    &format!(
                        "Resource '{key}' does not exist or one of its queried reference-property objects are not present."
                    ),
                ),
            }
        }
        ["groups"] => {
            let items = seeded_groups(tenant);
            list(s, req, t, "groups", "g", items, DEFAULT_PAGE)
        }
        ["subscribedskus"] => subscribed_skus(s, t),
        ["security", "securescores"] => secure_scores(s, req, t),
        ["security", "securescorecontrolprofiles"] => {
            let items = (0..PROFILES.len())
                .map(|k| control_profile(tenant, k))
                .collect();
            list(
                s,
                req,
                t,
                "security/secureScoreControlProfiles",
                "p",
                items,
                PROFILES_PAGE,
            )
        }
        ["tenantrelationships", "delegatedadminrelationships"] => {
            let items = if tenant.partner {
                relationships(s)
            } else {
                Vec::new()
            };
            list(
                s,
                req,
                t,
                "tenantRelationships/delegatedAdminRelationships",
                "r",
                items,
                RELATIONSHIPS_PAGE,
            )
        }
        _ => {
            let raw = segments.get(1).map(String::as_str).unwrap_or_default();
            find_tenant(s, req, raw)
        }
    }
}

fn organization(t: &Tenant) -> Response {
    let verified: Vec<Value> = t
        .domains
        .iter()
        .enumerate()
        .map(|(i, d)| {
            json!({
                "capabilities": "Email, OfficeCommunicationsOnline",
                "isDefault": i == 0,
                "isInitial": i == 1,
                "name": d,
                "type": "Managed",
            })
        })
        .collect();
    ok(json!({
        "@odata.context": context("organization"),
        "value": [{
            "id": t.id,
            "displayName": t.name,
            "tenantType": "AAD",
            "countryLetterCode": "US",
            "preferredLanguage": "en",
            "city": "Seattle",
            "state": "WA",
            "postalCode": "98101",
            "street": format!("{} Pine Street", 100 + t.seq % 900),
            "businessPhones": ["+1 206 555 0100"],
            "technicalNotificationMails": [format!("admin@{}", t.default_domain())],
            "createdDateTime": t.created,
            "onPremisesSyncEnabled": null,
            "onPremisesLastSyncDateTime": null,
            "verifiedDomains": verified,
        }],
    }))
}

fn domains(t: &Tenant) -> Response {
    let mut items: Vec<Value> = t
        .domains
        .iter()
        .enumerate()
        .map(|(i, d)| {
            json!({
                "id": d,
                "authenticationType": "Managed",
                "isAdminManaged": true,
                "isDefault": i == 0,
                "isInitial": i == 1,
                "isRoot": true,
                "isVerified": true,
                "supportedServices": if i == 1 { json!(["Email", "OfficeCommunicationsOnline"]) } else { json!(["Email"]) },
            })
        })
        .collect();
    items.push(json!({
        "id": t.unverified,
        "authenticationType": "Managed",
        "isAdminManaged": true,
        "isDefault": false,
        "isInitial": false,
        "isRoot": true,
        "isVerified": false,
        "supportedServices": [],
    }));
    ok(collection("domains", items, None, None))
}

/// The page size from `$top` (1 to 999) or `default`; `Err` with Graph's message.
fn page_size(req: &Req, default: usize) -> Result<usize, String> {
    match req.param("$top") {
        None => Ok(req.max_page.unwrap_or(default).clamp(1, MAX_PAGE)),
        Some(top) => match top.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            _ => Err(format!(
                "Invalid page size specified: '{top}'. Must be between 1 and {MAX_PAGE} inclusive."
            )),
        },
    }
}

/// The position a `$skiptoken` of `kind` for tenant `t` carries; `Ok(0)` without one.
fn skip_position(s: &Inner, req: &Req, t: usize, kind: &str) -> Result<usize, Box<Response>> {
    let Some(token) = req.param("$skiptoken") else {
        return Ok(0);
    };
    let bad = || {
        Box::new(graph_error(
            s,
            req,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "The skip token is not valid.",
        ))
    };
    let text = token_decode(token).ok_or_else(bad)?;
    let mut it = text.splitn(3, '|');
    match (it.next(), it.next(), it.next()) {
        (Some(tid), Some(k), Some(pos)) if tid == s.tenants[t].id && k == kind => {
            pos.parse::<usize>().map_err(|_| bad())
        }
        _ => Err(bad()),
    }
}

fn skip_token(s: &Inner, t: usize, kind: &str, pos: usize) -> String {
    token_encode(&format!("{}|{kind}|{pos}", s.tenants[t].id))
}

/// One page of `items` with an absolute `@odata.nextLink` when more follow.
fn list(
    s: &Inner,
    req: &Req,
    t: usize,
    entity: &str,
    kind: &str,
    items: Vec<Value>,
    default: usize,
) -> Response {
    let size = match page_size(req, default) {
        Ok(n) => n,
        Err(m) => return graph_error(s, req, StatusCode::BAD_REQUEST, "BadRequest", &m),
    };
    let start = match skip_position(s, req, t, kind) {
        Ok(p) => p.min(items.len()),
        Err(r) => return *r,
    };
    let end = start.saturating_add(size).min(items.len());
    let next = (end < items.len()).then(|| req.next_link(&skip_token(s, t, kind, end)));
    let sel = req.param("$select");
    let page = items
        .into_iter()
        .skip(start)
        .take(end - start)
        .map(|v| select(v, sel))
        .collect();
    ok(collection(entity, page, next, None))
}

fn users(s: &Inner, req: &Req, t: usize) -> Response {
    let tenant = &s.tenants[t];
    let size = match page_size(req, DEFAULT_PAGE) {
        Ok(n) => n,
        Err(m) => return graph_error(s, req, StatusCode::BAD_REQUEST, "BadRequest", &m),
    };
    let start = match skip_position(s, req, t, "u") {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let st = lock(&s.state[t]);
    let slots = tenant.users + st.added.len();
    let sel = req.param("$select");
    let mut page = Vec::with_capacity(size.min(slots));
    let mut slot = start;
    while slot < slots && page.len() < size {
        if let Some(u) = user_at(tenant, &st, slot) {
            page.push(select(u, sel));
        }
        slot += 1;
    }
    drop(st);
    let next = (slot < slots).then(|| req.next_link(&skip_token(s, t, "u", slot)));
    ok(collection("users", page, next, None))
}

/// Where a delta round stands: a full sync from `pos`, or the changes after `since` up to
/// `upto`; the `$select` is kept in the tokens, as Graph does.
struct DeltaCursor {
    changes_since: Option<u64>,
    pos: usize,
    upto: u64,
    select: String,
}

fn delta_cursor(
    s: &Inner,
    req: &Req,
    t: usize,
    current: u64,
) -> Result<DeltaCursor, Box<Response>> {
    let tenant_id = &s.tenants[t].id;
    let bad = |m: &str| {
        Box::new(graph_error(
            s,
            req,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            m,
        ))
    };
    if let Some(token) = req.param("$deltatoken") {
        let text = token_decode(token).ok_or_else(|| bad("The delta token is not valid."))?;
        let mut it = text.splitn(3, '|');
        let (Some(tid), Some(ver), Some(sel)) = (it.next(), it.next(), it.next()) else {
            return Err(bad("The delta token is not valid."));
        };
        let ver = ver
            .parse::<u64>()
            .map_err(|_| bad("The delta token is not valid."))?;
        if tid != tenant_id {
            return Err(bad("The delta token was issued for another tenant."));
        }
        if ver > current {
            return Err(bad("The delta token is not valid."));
        }
        return Ok(DeltaCursor {
            changes_since: Some(ver),
            pos: 0,
            upto: current,
            select: sel.to_string(),
        });
    }
    if let Some(token) = req.param("$skiptoken") {
        let text = token_decode(token).ok_or_else(|| bad("The skip token is not valid."))?;
        let mut it = text.splitn(6, '|');
        let fields = (
            it.next(),
            it.next(),
            it.next(),
            it.next(),
            it.next(),
            it.next(),
        );
        let (Some(tid), Some(kind), Some(pos), Some(since), Some(upto), Some(sel)) = fields else {
            return Err(bad("The skip token is not valid."));
        };
        if tid != tenant_id {
            return Err(bad("The skip token was issued for another tenant."));
        }
        let (Ok(pos), Ok(upto)) = (pos.parse::<usize>(), upto.parse::<u64>()) else {
            return Err(bad("The skip token is not valid."));
        };
        let changes_since = match kind {
            "df" => None,
            "dc" => Some(
                since
                    .parse::<u64>()
                    .map_err(|_| bad("The skip token is not valid."))?,
            ),
            _ => return Err(bad("The skip token is not valid.")),
        };
        if upto > current {
            return Err(bad("The skip token is not valid."));
        }
        return Ok(DeltaCursor {
            changes_since,
            pos,
            upto,
            select: sel.to_string(),
        });
    }
    Ok(DeltaCursor {
        changes_since: None,
        pos: 0,
        upto: current,
        select: req.param("$select").unwrap_or_default().to_string(),
    })
}

fn users_delta(s: &Inner, req: &Req, t: usize) -> Response {
    let tenant = &s.tenants[t];
    let st = lock(&s.state[t]);
    let c = match delta_cursor(s, req, t, st.version) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let size = req.max_page.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let sel = Some(c.select.as_str());
    let base = format!("https://{}/v1.0/users/delta", req.host);
    let mut page = Vec::new();
    let (more, next_pos) = match c.changes_since {
        None => {
            let slots = tenant.users + st.added.len();
            let mut slot = c.pos;
            while slot < slots && page.len() < size {
                if let Some(u) = user_at(tenant, &st, slot) {
                    page.push(select(u, sel));
                }
                slot += 1;
            }
            (slot < slots, slot)
        }
        Some(since) => {
            let mut changed: Vec<(u64, &String)> = st
                .changed
                .iter()
                .filter(|(_, v)| **v > since && **v <= c.upto)
                .map(|(id, v)| (*v, id))
                .collect();
            changed.sort();
            let end = c.pos.saturating_add(size).min(changed.len());
            for (_, id) in changed.iter().skip(c.pos).take(end.saturating_sub(c.pos)) {
                match st.overrides.get(*id) {
                    Some(Some(u)) => page.push(select(u.clone(), sel)),
                    _ => page.push(json!({"id": id, "@removed": {"reason": "deleted"}})),
                }
            }
            (end < changed.len(), end)
        }
    };
    drop(st);
    let (next, delta) = if more {
        let (kind, since) = match c.changes_since {
            None => ("df", String::from("-")),
            Some(v) => ("dc", v.to_string()),
        };
        let token = token_encode(&format!(
            "{}|{kind}|{next_pos}|{since}|{}|{}",
            tenant.id, c.upto, c.select
        ));
        (Some(format!("{base}?$skiptoken={token}")), None)
    } else {
        let token = token_encode(&format!("{}|{}|{}", tenant.id, c.upto, c.select));
        (None, Some(format!("{base}?$deltatoken={token}")))
    };
    ok(collection("users", page, next, delta))
}

fn subscribed_skus(s: &Inner, t: usize) -> Response {
    let tenant = &s.tenants[t];
    let users = {
        let st = lock(&s.state[t]);
        current_users(tenant, &st)
    };
    let warning = tenant
        .skus
        .len()
        .checked_sub(1)
        .filter(|_| tenant.seq.is_multiple_of(2));
    let items: Vec<Value> = tenant
        .skus
        .iter()
        .enumerate()
        .map(|(k, &x)| {
            let (part, id) = SKUS[x];
            let consumed = users
                .iter()
                .filter(|u| {
                    u["assignedLicenses"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|l| l["skuId"].as_str() == Some(id)))
                })
                .count();
            let warn = warning == Some(k);
            let enabled = if part == "FLOW_FREE" {
                10_000
            } else if warn {
                0
            } else {
                consumed + 2 + (tenant.seq as usize + k) % 5
            };
            json!({
                "id": format!("{}_{id}", tenant.id),
                "accountId": tenant.id,
                "accountName": tenant.name,
                "appliesTo": "User",
                "capabilityStatus": if warn { "Warning" } else { "Enabled" },
                "consumedUnits": consumed,
                "prepaidUnits": {
                    "enabled": enabled,
                    "suspended": 0,
                    "warning": if warn { consumed + 1 } else { 0 },
                    "lockedOut": 0,
                },
                "servicePlans": [],
                "skuId": id,
                "skuPartNumber": part,
                "subscriptionIds": [guid(0x5AB5_0000_0000_0000 ^ tenant.seq.wrapping_mul(13).wrapping_add(k as u64))],
            })
        })
        .collect();
    ok(collection("subscribedSkus", items, None, None))
}

fn secure_scores(s: &Inner, req: &Req, t: usize) -> Response {
    let tenant = &s.tenants[t];
    let days = if tenant.partner { 0 } else { SCORE_DAYS };
    let (start, end, next) = match req.param("$top") {
        Some(top) => match top.trim().parse::<usize>() {
            Ok(n) if n >= 1 => (0, n.min(days), None),
            _ => {
                return graph_error(
                    s,
                    req,
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("Invalid page size specified: '{top}'."),
                );
            }
        },
        None => {
            let start = match skip_position(s, req, t, "s") {
                Ok(p) => p.min(days),
                Err(r) => return *r,
            };
            let end = (start + SCORES_PAGE).min(days);
            let next = (end < days).then(|| req.next_link(&skip_token(s, t, "s", end)));
            (start, end, next)
        }
    };
    let st = lock(&s.state[t]);
    let partial = st.partial_scores;
    let counts = user_counts(tenant, &st);
    drop(st);
    let items: Vec<Value> = (start..end)
        .map(|d| snapshot(tenant, d, partial && d == 0, counts))
        .collect();
    let body = collection("security/secureScores", items, next, None);
    if partial {
        let mut r = (StatusCode::PARTIAL_CONTENT, axum::Json(body)).into_response();
        r.headers_mut().insert(
            header::WARNING,
            HeaderValue::from_static(
                "199 - \"Partial content: Exchange Online provider timed out\"",
            ),
        );
        r
    } else {
        ok(body)
    }
}

/// The partner's GDAP relationships: one per customer tenant, the last one expired.
fn relationships(s: &Inner) -> Vec<Value> {
    let n = s.customers;
    s.tenants[..n]
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let expired = n > 1 && i == n - 1;
            let created = if expired {
                day(800)
            } else {
                day(300 + (i as i64 * 11) % 200)
            };
            let end = created + chrono::Duration::days(730);
            json!({
                "id": format!("{}-{}", guid(0x6DA9_0000_0000_0000 ^ t.seq), t.id),
                "displayName": format!("GDAP {}", t.name),
                "status": if expired { "expired" } else { "active" },
                "customer": {"tenantId": t.id, "displayName": t.name},
                "duration": "P730D",
                "autoExtendDuration": "PT0S",
                "createdDateTime": iso(created),
                "lastModifiedDateTime": iso(created + chrono::Duration::hours(1)),
                "activatedDateTime": iso(created + chrono::Duration::hours(1)),
                "endDateTime": iso(end),
                "accessDetails": {"unifiedRoles": [{"roleDefinitionId": DIRECTORY_READERS}]},
            })
        })
        .collect()
}

/// `findTenantInformationByTenantId(tenantId='…')`.
fn find_tenant(s: &Inner, req: &Req, segment: &str) -> Response {
    let inside = segment
        .split_once('(')
        .and_then(|(_, rest)| rest.rsplit_once(')'))
        .map(|(inside, _)| inside)
        .unwrap_or_default();
    let value = inside
        .split_once('=')
        .map_or(inside, |(_, v)| v)
        .trim()
        .trim_matches('\'')
        .trim();
    let found = s.tenants.iter().find(|t| t.id.eq_ignore_ascii_case(value));
    match found {
        Some(t) => ok(json!({
            "@odata.context": context("microsoft.graph.tenantInformation"),
            "tenantId": t.id,
            "displayName": t.name,
            "defaultDomainName": t.default_domain(),
            "federationBrandName": null,
        })),
        None => graph_error(
            s,
            req,
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            &format!(
                "Resource '{value}' does not exist or one of its queried reference-property objects are not present."
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::OutboundPolicy;
    use mspbridge_sandbox::loopback_listener;

    fn client() -> reqwest::Client {
        OutboundPolicy {
            allow_private: true,
        }
        .client(Duration::from_secs(10))
    }

    /// The sandbox serves plain http on loopback; its links say https.
    fn local(url: &str, h: &SandboxHandle) -> String {
        url.replace(&M365Sandbox::base_url(h), &h.base_url())
    }

    async fn start(sb: &M365Sandbox) -> SandboxHandle {
        sb.serve(loopback_listener().await.unwrap()).unwrap()
    }

    async fn token_request(h: &SandboxHandle, tenant: &str, secret: &str) -> (StatusCode, Value) {
        let body = format!(
            "grant_type=client_credentials&client_id={}&client_secret={}&scope={}",
            encode(DEMO_CLIENT_ID),
            encode(secret),
            encode(GRAPH_SCOPE)
        );
        let r = client()
            .post(format!("{}/{tenant}/oauth2/v2.0/token", h.base_url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap())
    }

    async fn token_for(h: &SandboxHandle, tenant: &str) -> String {
        let (status, body) = token_request(h, tenant, DEMO_CLIENT_SECRET).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["access_token"].as_str().unwrap().to_string()
    }

    async fn get(h: &SandboxHandle, token: &str, path_or_url: &str) -> reqwest::Response {
        let url = if path_or_url.starts_with("https://") {
            local(path_or_url, h)
        } else {
            format!("{}{path_or_url}", h.base_url())
        };
        client().get(url).bearer_auth(token).send().await.unwrap()
    }

    /// Every item of a paged collection, following `@odata.nextLink`; returns the deltaLink.
    async fn all(h: &SandboxHandle, token: &str, path: &str) -> (Vec<Value>, Option<String>) {
        let mut items = Vec::new();
        let mut url = path.to_string();
        loop {
            let r = get(h, token, &url).await;
            assert_eq!(r.status(), StatusCode::OK);
            let body: Value = r.json().await.unwrap();
            items.extend(body["value"].as_array().unwrap().iter().cloned());
            match body["@odata.nextLink"].as_str() {
                Some(next) => {
                    assert!(next.starts_with("https://"), "{next}");
                    url = next.to_string();
                }
                None => return (items, body["@odata.deltaLink"].as_str().map(str::to_string)),
            }
        }
    }

    #[tokio::test]
    async fn tokens_need_consent_and_are_bound_to_their_tenant() {
        let sb = M365Sandbox::new(Seed::Small);
        let h = start(&sb).await;
        let tenants = sb.tenants();
        assert_eq!(tenants.len(), 8);
        let a = &tenants[0];
        assert!(!sb.is_consented(&a.id));

        let (status, body) = token_request(&h, &a.id, DEMO_CLIENT_SECRET).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"], "unauthorized_client");
        assert_eq!(body["error_codes"], json!([700016]));
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .starts_with("AADSTS700016: Application with identifier")
        );

        let (status, body) = token_request(&h, "organizations", DEMO_CLIENT_SECRET).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error_codes"], json!([90002]));

        sb.consent(&a.id);
        let (status, body) = token_request(&h, &a.id, "wrong").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error_codes"], json!([7000215]));
        sb.expire_secret(true);
        let (_, body) = token_request(&h, &a.id, DEMO_CLIENT_SECRET).await;
        assert_eq!(body["error_codes"], json!([7000222]));
        sb.expire_secret(false);

        // By verified domain too.
        let token = token_for(&h, &a.default_domain).await;
        let r = get(&h, &token, "/v1.0/organization").await;
        assert_eq!(r.status(), StatusCode::OK);
        let org: Value = r.json().await.unwrap();
        assert_eq!(org["value"][0]["id"], json!(a.id));
        assert_eq!(org["value"][0]["displayName"], json!(a.display_name));
        assert_eq!(sb.token_requests(), 5);

        let seen = sb.seen();
        let last = seen.last().unwrap();
        assert_eq!(last.path, "/v1.0/organization");
        assert_eq!(last.token_tenant.as_deref(), Some(a.id.as_str()));

        let r = client()
            .get(format!("{}/v1.0/users", h.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
        assert!(body["error"]["innerError"]["request-id"].is_string());

        sb.revoke_consent(&a.id);
        let r = get(&h, &token, "/v1.0/organization").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let (_, body) = token_request(&h, &a.id, DEMO_CLIENT_SECRET).await;
        assert_eq!(body["error_codes"], json!([700016]));
    }

    #[tokio::test]
    async fn a_tenants_token_never_sees_another_tenants_users() {
        let sb = M365Sandbox::new(Seed::Small);
        let h = start(&sb).await;
        let tenants = sb.tenants();
        let (a, b) = (&tenants[0], &tenants[1]);
        sb.consent(&a.id);
        sb.consent(&b.id);
        let token = token_for(&h, &a.id).await;
        let (users, _) = all(
            &h,
            &token,
            "/v1.0/users?$select=id,userPrincipalName,mail&$top=5",
        )
        .await;
        let mine: Vec<Value> = sb.users(&a.id);
        assert_eq!(users.len(), mine.len());
        assert!(users.len() > 5);
        let theirs: HashSet<String> = sb
            .users(&b.id)
            .iter()
            .map(|u| u["id"].as_str().unwrap().to_string())
            .collect();
        for u in &users {
            assert!(!theirs.contains(u["id"].as_str().unwrap()));
            assert!(u.get("displayName").is_none(), "$select is honoured");
            let upn = u["userPrincipalName"].as_str().unwrap();
            assert!(a.domains.iter().any(|d| upn.ends_with(d.as_str())), "{upn}");
        }
        assert!(users.iter().any(|u| u["mail"].is_null()));
        // A URL naming tenant B still serves A.
        let r = get(
            &h,
            &token,
            &format!(
                "/v1.0/tenantRelationships/findTenantInformationByTenantId(tenantId='{}')",
                b.id
            ),
        )
        .await;
        let info: Value = r.json().await.unwrap();
        assert_eq!(info["displayName"], json!(b.display_name));
        let r = get(&h, &token, "/v1.0/organization").await;
        let org: Value = r.json().await.unwrap();
        assert_eq!(org["value"][0]["id"], json!(a.id));
        let r = get(&h, &token, "/v1.0/nothing/here").await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);

        let skus: Value = get(&h, &token, "/v1.0/subscribedSkus")
            .await
            .json()
            .await
            .unwrap();
        let consumed: u64 = skus["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["consumedUnits"].as_u64().unwrap())
            .sum();
        assert!(consumed > 0);

        // The partner sees every customer in its GDAP relationships.
        let partner = token_for(&h, PARTNER_TENANT_ID).await;
        let (rels, _) = all(
            &h,
            &partner,
            "/v1.0/tenantRelationships/delegatedAdminRelationships",
        )
        .await;
        assert_eq!(rels.len(), 8);
        assert_eq!(rels.iter().filter(|r| r["status"] == "expired").count(), 1);
        let (rels, _) = all(
            &h,
            &token,
            "/v1.0/tenantRelationships/delegatedAdminRelationships",
        )
        .await;
        assert!(rels.is_empty());
    }

    #[tokio::test]
    async fn delta_returns_only_what_changed() {
        let sb = M365Sandbox::new(Seed::Small);
        let h = start(&sb).await;
        let a = sb.tenants()[2].id.clone();
        sb.consent(&a);
        let token = token_for(&h, &a).await;
        let (first, delta) = all(&h, &token, "/v1.0/users/delta?$select=id,displayName").await;
        assert_eq!(first.len(), sb.users(&a).len());
        let delta = delta.unwrap();

        let users = sb.users(&a);
        let changed = users[4]["id"].as_str().unwrap().to_string();
        let deleted = users[5]["id"].as_str().unwrap().to_string();
        sb.update_user(&a, &changed, |u| u["displayName"] = json!("Renamed User"));
        sb.delete_user(&a, &deleted);

        let (items, next) = all(&h, &token, &delta).await;
        assert_eq!(items.len(), 2, "{items:?}");
        assert_eq!(items[0]["id"], json!(changed));
        assert_eq!(items[0]["displayName"], "Renamed User");
        assert!(items[0].get("mail").is_none(), "the $select is kept");
        assert_eq!(
            items[1],
            json!({"id": deleted, "@removed": {"reason": "deleted"}})
        );
        let (items, _) = all(&h, &token, &next.unwrap()).await;
        assert!(items.is_empty());

        let r = get(&h, &token, "/v1.0/users/delta?$deltatoken=garbage!").await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let other = sb.tenants()[3].id.clone();
        sb.consent(&other);
        let other_token = token_for(&h, &other).await;
        let r = get(&h, &other_token, &delta).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn the_fifth_concurrent_security_request_is_refused() {
        let sb = M365Sandbox::new(Seed::Small);
        let h = start(&sb).await;
        let a = sb.tenants()[0].id.clone();
        sb.consent(&a);
        let token = token_for(&h, &a).await;
        sb.set_security_latency(Duration::from_millis(600));
        let mut running = Vec::new();
        for _ in 0..4 {
            let url = format!("{}/v1.0/security/secureScores?$top=1", h.base_url());
            let token = token.clone();
            running.push(tokio::spawn(async move {
                client()
                    .get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap()
                    .status()
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = get(&h, &token, "/v1.0/security/secureScoreControlProfiles").await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "TooManyRequests");
        for t in running {
            assert_eq!(t.await.unwrap(), StatusCode::OK);
        }
        assert_eq!(sb.max_concurrent_security(&a), 5);
        assert_eq!(sb.throttled(), 1);

        sb.set_security_latency(Duration::ZERO);
        let (profiles, _) = all(&h, &token, "/v1.0/security/secureScoreControlProfiles").await;
        assert_eq!(profiles.len(), PROFILES.len());
        let (scores, _) = all(&h, &token, "/v1.0/security/secureScores").await;
        assert_eq!(scores.len(), SCORE_DAYS);
        assert!(
            scores[0]["createdDateTime"].as_str().unwrap()
                > scores[1]["createdDateTime"].as_str().unwrap()
        );

        sb.set_security_limits(4, 1);
        let r = get(&h, &token, "/v1.0/security/secureScores?$top=1").await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let after: u64 = r.headers()[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&after));

        sb.set_security_limits(4, 150);
        sb.deny_security(&a);
        let r = get(&h, &token, "/v1.0/security/secureScores").await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn partial_scores_answer_206_with_a_warning() {
        let sb = M365Sandbox::new(Seed::Small);
        let h = start(&sb).await;
        let a = sb.tenants()[1].id.clone();
        sb.consent(&a);
        let token = token_for(&h, &a).await;
        let full: Value = get(&h, &token, "/v1.0/security/secureScores?$top=1")
            .await
            .json()
            .await
            .unwrap();
        sb.set_partial_scores(&a, true);
        let r = get(&h, &token, "/v1.0/security/secureScores?$top=1").await;
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert!(
            r.headers()[header::WARNING]
                .to_str()
                .unwrap()
                .contains("Partial content")
        );
        let part: Value = r.json().await.unwrap();
        let (f, p) = (&full["value"][0], &part["value"][0]);
        assert!(p["currentScore"].as_f64().unwrap() < f["currentScore"].as_f64().unwrap());
        assert_eq!(
            p["controlScores"].as_array().unwrap().len(),
            f["controlScores"].as_array().unwrap().len() / 2
        );
        let id = f["id"].as_str().unwrap();
        assert!(id.starts_with(&format!("{a}_2026-12-03T")), "{id}");
    }

    #[tokio::test]
    async fn the_consent_page_redirects_with_state_and_tenant() {
        let sb = M365Sandbox::new(Seed::Small);
        let h = start(&sb).await;
        let t = sb.tenants()[4].clone();
        let redirect = "https://msp.example/m365/consent?x=1";
        let query = format!(
            "client_id={}&scope={}&redirect_uri={}&state=abc+123",
            DEMO_CLIENT_ID,
            encode(GRAPH_SCOPE),
            encode(redirect)
        );
        let page = client()
            .get(format!(
                "{}/{}/v2.0/adminconsent?{query}",
                h.base_url(),
                t.id
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.unwrap();
        assert!(html.contains("<form method=\"post\">"));
        assert!(html.contains(&format!("<option value=\"{}\" selected>", t.id)));

        let r = client()
            .get(format!(
                "{}/organizations/v2.0/adminconsent?client_id=nope&redirect_uri=x",
                h.base_url()
            ))
            .send()
            .await
            .unwrap();
        assert!(r.text().await.unwrap().contains("AADSTS700016"));

        let post = |decision: &'static str| {
            let body = format!(
                "client_id={}&scope={}&redirect_uri={}&state=abc+123&tenant={}&decision={decision}",
                DEMO_CLIENT_ID,
                encode(GRAPH_SCOPE),
                encode(redirect),
                t.id
            );
            client()
                .post(format!("{}/organizations/v2.0/adminconsent", h.base_url()))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
        };
        let r = post("cancel").await.unwrap();
        assert_eq!(r.status(), StatusCode::FOUND);
        let loc = r.headers()[header::LOCATION].to_str().unwrap().to_string();
        assert!(loc.starts_with("https://msp.example/m365/consent?x=1&error=access_denied&error_subcode=cancel&error_description=AADSTS65004%3A+User+declined"), "{loc}");
        assert!(loc.ends_with("&state=abc+123"), "{loc}");
        assert!(!sb.is_consented(&t.id));

        let r = post("accept").await.unwrap();
        assert_eq!(r.status(), StatusCode::FOUND);
        let loc = r.headers()[header::LOCATION].to_str().unwrap().to_string();
        assert_eq!(
            loc,
            format!(
                "{redirect}&admin_consent=True&tenant={}&scope=https%3A%2F%2Fgraph.microsoft.com%2F.default&state=abc+123",
                t.id
            )
        );
        assert!(sb.is_consented(&t.id));
        token_for(&h, &t.id).await;
    }

    #[test]
    fn seeds_are_deterministic_and_sized() {
        let a = M365Sandbox::new(Seed::Small);
        let b = M365Sandbox::new(Seed::Small);
        assert_eq!(a.tenants(), b.tenants());
        let t = &a.tenants()[0];
        assert_eq!(a.users(&t.id), b.users(&t.id));
        assert!(t.domains[1].ends_with(".onmicrosoft.com"));
        assert_eq!(t.default_domain, web_domain(&t.display_name));
        let ids: HashSet<String> = M365Sandbox::new(Seed::Large)
            .tenants()
            .into_iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(ids.len(), 200);
        let big = M365Sandbox::with_size(3, 2_000, 6);
        let id = big.tenants()[2].id.clone();
        let users = big.users(&id);
        assert_eq!(users.len(), 2_000);
        let upns: HashSet<&str> = users
            .iter()
            .map(|u| u["userPrincipalName"].as_str().unwrap())
            .collect();
        assert_eq!(upns.len(), 2_000);
    }
}
