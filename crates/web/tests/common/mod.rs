#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]
//! Test harness: the real server on 127.0.0.1:0 over a throwaway database (SQLite, and
//! PostgreSQL when TEST_DATABASE_URL is set), with the ConnectWise sandbox beside it and
//! every log line captured so tests can assert what was (not) logged.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use mspbridge_domain::TenantId;
use mspbridge_domain::auth::StaffRole;
use mspbridge_domain::model::Origin;
use mspbridge_providers::autotask::client::AutotaskSettings;
use mspbridge_providers::autotask::sandbox::AutotaskSandbox;
use mspbridge_providers::connectwise::sandbox::*;
use mspbridge_providers::datto_rmm::client::DattoSettings;
use mspbridge_providers::datto_rmm::sandbox::DattoSandbox;
use mspbridge_providers::{OutboundPolicy, ProviderConfig, Providers};
use mspbridge_sandbox::{SandboxHandle, Seed, loopback_listener};
use mspbridge_store::NewStaffUser;
use mspbridge_store::test_support::TestDb;
use mspbridge_vault::Vault;
use mspbridge_web::AppState;
use serde_json::{Value, json};

pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

/// Every log line written by any test in this binary.
pub fn logs() -> String {
    String::from_utf8_lossy(&LOG.lock().unwrap()).to_string()
}

static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;
impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let sub = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_ansi(false)
            .with_writer(|| LogWriter)
            .finish();
        let _ = tracing::subscriber::set_global_default(sub);
    });
}

pub struct Tenant {
    pub id: TenantId,
    pub owner_token: String,
    pub email: String,
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub db: TestDb,
    pub sandbox: CwSandbox,
    pub sandbox_handle: SandboxHandle,
    pub a: Tenant,
    pub b: Tenant,
    /// The connectors' settings the app (and `full_pass_engine`) run with.
    pub config: ProviderConfig,
    _server: tokio::task::JoinHandle<()>,
}

impl TestApp {
    pub async fn start(db: TestDb) -> TestApp {
        Self::start_with(db, false).await
    }

    /// With `public`, the app knows its own address, so PSA webhooks get registered.
    pub async fn start_with(db: TestDb, public: bool) -> TestApp {
        Self::start_configured(db, public, ProviderConfig::default()).await
    }

    /// With the connectors' settings of `config` (a sandbox's API base, a rate limit);
    /// private addresses are always allowed (the sandboxes are on loopback).
    pub async fn start_configured(db: TestDb, public: bool, config: ProviderConfig) -> TestApp {
        init_logs();
        mspbridge_providers::outbound::install_crypto_provider();
        let sandbox = CwSandbox::new(Seed::Small);
        let sandbox_handle = sandbox
            .serve(mspbridge_sandbox::loopback_listener().await.unwrap())
            .unwrap();
        let config = ProviderConfig {
            outbound: OutboundPolicy {
                allow_private: true,
            },
            ..config
        };
        let providers = Providers::new(config.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = AppState::new(
            db.store.clone(),
            Arc::new(Vault::new(&[9u8; 32])),
            providers,
            false,
        )
        .with_public_url(public.then(|| base.clone()));
        let a = make_tenant(&state, "Tenant A", "owner@a.example").await;
        let b = make_tenant(&state, "Tenant B", "owner@b.example").await;
        let server = tokio::spawn(async move {
            mspbridge_web::serve(listener, state, std::future::pending())
                .await
                .unwrap();
        });
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        TestApp {
            base,
            http,
            db,
            sandbox,
            sandbox_handle,
            a,
            b,
            config,
            _server: server,
        }
    }

    /// One app per available backend.
    pub async fn each() -> Vec<TestApp> {
        let mut apps = Vec::new();
        for db in mspbridge_store::test_support::all().await.unwrap() {
            apps.push(TestApp::start(db).await);
        }
        apps
    }

    pub fn backend(&self) -> &'static str {
        self.db.store.backend()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn token(&self, tenant: TenantId, role: StaffRole) -> String {
        let (token, hash) = mspbridge_vault::new_token("msb").unwrap();
        self.db
            .store
            .create_api_token(tenant, "test", role, &hash, chrono::Utc::now())
            .await
            .unwrap();
        token
    }

    pub fn good_credentials(&self) -> Value {
        json!({
            "site": self.sandbox_handle.host(),
            "company_id": DEMO_COMPANY_ID,
            "public_key": DEMO_PUBLIC_KEY,
            "private_key": DEMO_PRIVATE_KEY,
            "client_id": DEMO_CLIENT_ID,
        })
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    /// Connects ConnectWise for tenant A and returns the integration JSON.
    pub async fn connect_cw(&self, token: &str) -> Value {
        let (status, body) = self
            .post(
                "/api/v1/integrations",
                token,
                json!({"provider": "connectwise_manage", "credentials": self.good_credentials()}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }
}

async fn make_tenant(state: &AppState, name: &str, email: &str) -> Tenant {
    let now = chrono::Utc::now();
    let t = state.store.create_tenant(name, now).await.unwrap();
    let hash = mspbridge_vault::hash_password(ADMIN_PASSWORD).unwrap();
    state
        .store
        .create_staff_user(
            t.id,
            NewStaffUser {
                email: email.into(),
                name: "Owner".into(),
                role: StaffRole::Owner,
                password_hash: Some(hash),
                origin: Origin::Manual,
            },
            now,
        )
        .await
        .unwrap();
    let (token, thash) = mspbridge_vault::new_token("msb").unwrap();
    state
        .store
        .create_api_token(t.id, "owner", StaffRole::Owner, &thash, now)
        .await
        .unwrap();
    Tenant {
        id: t.id,
        owner_token: token,
        email: email.into(),
    }
}

pub fn map(v: &Value) -> BTreeMap<String, Value> {
    v.as_object().unwrap().clone().into_iter().collect()
}

/// A sync engine over the app's database whose every run is a full pass.
pub fn full_pass_engine(app: &TestApp) -> mspbridge_sync::Engine {
    let providers = Providers::new(app.config.clone());
    mspbridge_sync::Engine::new(
        app.db.store.clone(),
        Arc::new(Vault::new(&[9u8; 32])),
        providers,
        mspbridge_sync::EngineConfig {
            reconcile_every: chrono::Duration::zero(),
            ..mspbridge_sync::EngineConfig::default()
        },
        "test-worker",
    )
}

/// Connects ConnectWise for tenant A and imports its companies; the integration id.
pub async fn imported(app: &TestApp) -> i64 {
    let t = &app.a.owner_token;
    let id = app.connect_cw(t).await["id"].as_i64().unwrap();
    let (s, v) = app
        .call(
            reqwest::Method::PUT,
            &format!("/api/v1/integrations/{id}/options"),
            t,
            Some(json!({"interval_minutes": 5})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let run = full_pass_engine(app).tick().await.unwrap().expect("due");
    assert_eq!(
        run.result,
        mspbridge_domain::sync::RunResult::Success,
        "{run:?}"
    );
    id
}

// ---- Tickets: what the per-PSA ticket tests share ----

/// `PUT /api/v1/integrations/{id}/options` as tenant A's owner.
pub async fn put_options(app: &TestApp, id: i64, body: Value) -> (u16, Value) {
    app.call(
        reqwest::Method::PUT,
        &format!("/api/v1/integrations/{id}/options"),
        &app.a.owner_token,
        Some(body),
    )
    .await
}

/// `PUT …/options` that must be refused with 422 naming `field`; the answer, for its message.
pub async fn options_refused(app: &TestApp, id: i64, body: Value, field: &str) -> Value {
    let (s, v) = put_options(app, id, body).await;
    assert_eq!((s, v["field"].as_str()), (422, Some(field)), "{v}");
    v
}

/// A portal user of `company` (as the client portal or an import makes them).
pub async fn company_user(
    app: &TestApp,
    company: mspbridge_domain::CompanyId,
    first: &str,
    status: mspbridge_domain::model::UserStatus,
) -> mspbridge_domain::model::CompanyUser {
    let role = app.db.store.list_roles(app.a.id).await.unwrap()[0].id;
    app.db
        .store
        .create_company_user(
            app.a.id,
            mspbridge_store::NewCompanyUser {
                company_id: company,
                email: Some(format!("{}@client.example", first.to_lowercase())),
                phone: None,
                first_name: first.into(),
                last_name: "Client".into(),
                role_id: role,
                role_reason: None,
                status,
                origin: mspbridge_domain::model::Origin::Manual,
            },
            chrono::Utc::now(),
        )
        .await
        .unwrap()
}

/// A portal status change of ticket `id`; the answer's status code.
pub async fn set_status(app: &TestApp, id: i64, status: &str) -> u16 {
    app.call(
        reqwest::Method::PATCH,
        &format!("/api/v1/tickets/{id}"),
        &app.a.owner_token,
        Some(json!({ "status": status })),
    )
    .await
    .0
}

/// Queues a sync of integration `id` and runs it (a full pass) as if `ahead` later; it
/// must succeed.
pub async fn sync_at(
    app: &TestApp,
    id: i64,
    ahead: chrono::Duration,
) -> mspbridge_sync::RunSummary {
    app.db
        .store
        .request_sync(
            app.a.id,
            mspbridge_domain::IntegrationId(id),
            chrono::Utc::now() + ahead,
            chrono::Duration::zero(),
        )
        .await
        .unwrap();
    let run = full_pass_engine(app)
        .with_clock(Arc::new(move || chrono::Utc::now() + ahead))
        .tick()
        .await
        .unwrap()
        .expect("due");
    assert_eq!(
        run.result,
        mspbridge_domain::sync::RunResult::Success,
        "{run:?}"
    );
    run
}

/// `sync_at` now.
pub async fn sync(app: &TestApp, id: i64) -> mspbridge_sync::RunSummary {
    sync_at(app, id, chrono::Duration::zero()).await
}

/// Drains the outbox as if `ahead` later.
pub async fn drain(
    app: &TestApp,
    ahead: chrono::Duration,
) -> mspbridge_sync::outbox::OutboxSummary {
    full_pass_engine(app)
        .with_clock(Arc::new(move || chrono::Utc::now() + ahead))
        .drain_outbox()
        .await
        .unwrap()
}

/// `GET /api/v1/tickets` (up to 500) as tenant A's owner.
pub async fn tickets(app: &TestApp) -> Vec<Value> {
    let (s, v) = app
        .get("/api/v1/tickets?limit=500", &app.a.owner_token)
        .await;
    assert_eq!(s, 200, "{v}");
    v.as_array().unwrap().clone()
}

/// `GET /api/v1/tickets/{id}`, which must answer 200.
pub async fn view(app: &TestApp, id: i64) -> Value {
    let (s, v) = app
        .get(&format!("/api/v1/tickets/{id}"), &app.a.owner_token)
        .await;
    assert_eq!(s, 200, "{v}");
    v
}

/// Every portal ticket by its PSA id: [summary, status, board, description, closed, notes
/// as [body, internal, author], portal id]; two portal tickets for one PSA ticket fail.
pub async fn snapshot(app: &TestApp) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for t in tickets(app).await {
        let v = view(app, t["id"].as_i64().unwrap()).await;
        let notes: Vec<Value> = v["notes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| json!([n["body"], n["internal"], n["author"]]))
            .collect();
        let t = &v["ticket"];
        let key = v["external_id"].as_str().unwrap_or("none").to_string();
        let prev = out.insert(
            key.clone(),
            json!([
                t["summary"],
                t["status"],
                t["board"],
                t["description"],
                t["closed"],
                notes,
                t["id"]
            ]),
        );
        assert!(prev.is_none(), "two portal tickets for PSA ticket #{key}");
    }
    out
}

/// A snapshot without the portal ids (what a rebuild must reproduce).
pub fn without_ids(m: &BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    m.iter()
        .map(|(k, v)| (k.clone(), json!(v.as_array().unwrap()[..6])))
        .collect()
}

/// The same JSON delivery written differently: a trailing space, a leading newline,
/// pretty-printed, and with every object's keys in reverse order. A replay check keyed on
/// the delivery must refuse each once the original was accepted.
pub fn reformatted(body: &[u8]) -> Vec<Vec<u8>> {
    fn reversed(v: &Value, out: &mut String) {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                keys.reverse();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(&serde_json::to_string(k).unwrap());
                    out.push_str(": ");
                    reversed(&map[k], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    reversed(item, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let v: Value = serde_json::from_slice(body).unwrap();
    let mut trailing = body.to_vec();
    trailing.push(b' ');
    let mut leading = b"\n".to_vec();
    leading.extend_from_slice(body);
    let mut swapped = String::new();
    reversed(&v, &mut swapped);
    let variants = vec![
        trailing,
        leading,
        serde_json::to_vec_pretty(&v).unwrap(),
        swapped.into_bytes(),
    ];
    for variant in &variants {
        assert_ne!(variant.as_slice(), body);
        assert_eq!(serde_json::from_slice::<Value>(variant).unwrap(), v);
    }
    variants
}

// ---- RMM: what the RMM API and browser tests share ----

/// The Autotask and Datto RMM sandboxes (Datto's sites carry the Autotask sandbox's
/// company ids and names) and the connectors' settings pointing at them.
pub struct RmmVendors {
    pub datto: DattoSandbox,
    _handles: (SandboxHandle, SandboxHandle),
}

pub async fn rmm_vendors() -> (RmmVendors, ProviderConfig) {
    let autotask = AutotaskSandbox::new(Seed::Small);
    let ah = autotask.serve(loopback_listener().await.unwrap()).unwrap();
    let datto = DattoSandbox::new(Seed::Small);
    let dh = datto.serve(loopback_listener().await.unwrap()).unwrap();
    let config = ProviderConfig {
        autotask: AutotaskSettings {
            zone_lookup_url: AutotaskSandbox::zone_lookup_url(&ah),
            backoff_floor: std::time::Duration::from_millis(200),
            ..Default::default()
        },
        datto_rmm: DattoSettings {
            api_base: Some(DattoSandbox::api_base(&dh)),
            backoff_floor: std::time::Duration::from_millis(200),
            ..Default::default()
        },
        ..Default::default()
    };
    (
        RmmVendors {
            datto,
            _handles: (ah, dh),
        },
        config,
    )
}

/// `POST /api/v1/integrations` as tenant A's owner (must be 201); the id.
pub async fn connect_json(app: &TestApp, body: Value) -> i64 {
    let (s, v) = app
        .post("/api/v1/integrations", &app.a.owner_token, body)
        .await;
    assert_eq!(s, 201, "{v}");
    v["id"].as_i64().unwrap()
}
