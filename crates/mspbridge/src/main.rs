//! The `mspbridge` binary: wires storage, vault, connectors and the web layer together.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, Parser, Subcommand};
use mspbridge_domain::auth::StaffRole;
use mspbridge_domain::catalogue::ProviderKind;
use mspbridge_domain::model::Origin;
use mspbridge_domain::validate::{check_password, parse_email, parse_name};
use mspbridge_providers::autotask::sandbox as autotask;
use mspbridge_providers::connectwise::sandbox as cw;
use mspbridge_providers::connectwise_asio::sandbox as asio;
use mspbridge_providers::datto_rmm::sandbox as datto;
use mspbridge_providers::halo::sandbox as halo;
use mspbridge_providers::microsoft_365::sandbox as m365;
use mspbridge_providers::stripe::sandbox as stripe;
use mspbridge_providers::syncro::sandbox as syncro;
use mspbridge_providers::{OutboundPolicy, ProviderConfig, Providers};
use mspbridge_sandbox::Seed;
use mspbridge_store::{NewStaffUser, Store};
use mspbridge_vault::Vault;
use mspbridge_web::AppState;
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    name = "mspbridge",
    version,
    about = "Integrations hub for MSP client portals"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct DbArgs {
    /// Database URL: a SQLite file path (created on first run) or postgres://user@host/db.
    #[arg(long, env = "MSPBRIDGE_DATABASE", default_value = "./mspbridge.db")]
    database: String,
}

#[derive(Args, Clone)]
struct KeyArgs {
    /// File holding the master key; created with mode 0600 on first run. The key can
    /// instead be given in MSPBRIDGE_MASTER_KEY (64 hex characters or base64 of 32 bytes).
    #[arg(
        long,
        env = "MSPBRIDGE_MASTER_KEY_FILE",
        default_value = "./mspbridge.key"
    )]
    master_key_file: PathBuf,
}

#[derive(Args, Clone)]
struct SyncArgs {
    /// Hours between full (reconciling) passes, which find records deleted upstream; the
    /// runs in between read only what changed.
    #[arg(long, env = "MSPBRIDGE_RECONCILE_HOURS", default_value_t = 24,
          value_parser = clap::value_parser!(u32).range(1..=720))]
    reconcile_hours: u32,
    /// Where Syncro's API lives, with `{subdomain}` in it (a lab or `mspbridge sandbox
    /// syncro`); default `https://{subdomain}.syncromsp.com/api/v1`.
    #[arg(long, env = "MSPBRIDGE_SYNCRO_API_BASE")]
    syncro_api_base: Option<String>,
    /// Where Autotask zone discovery asks (a lab or `mspbridge sandbox autotask`);
    /// default `https://webservices.autotask.net/atservicesrest`.
    #[arg(long, env = "MSPBRIDGE_AUTOTASK_ZONE_URL")]
    autotask_zone_url: Option<String>,
    /// Where Datto RMM's API lives for every Datto integration, replacing its platform and
    /// API URL (a lab or `mspbridge sandbox datto_rmm`; `{platform}` in it is replaced by
    /// the integration's platform); default `https://{platform}-api.centrastage.net`.
    #[arg(long, env = "MSPBRIDGE_DATTO_RMM_API_BASE")]
    datto_rmm_api_base: Option<String>,
    /// Where ConnectWise Asio's API lives for every Asio integration, replacing its
    /// environment's address (a lab or `mspbridge sandbox connectwise_asio`;
    /// `{environment}` in it is replaced by the integration's environment); default the
    /// environment's (NA `https://openapi.service.itsupport247.net`).
    #[arg(long, env = "MSPBRIDGE_CONNECTWISE_ASIO_API_BASE")]
    connectwise_asio_api_base: Option<String>,
    /// Where Microsoft's sign-in service lives (token endpoint, admin consent) for a lab or
    /// `mspbridge sandbox microsoft_365`; default `https://login.microsoftonline.com`.
    #[arg(long, env = "MSPBRIDGE_M365_LOGIN_URL")]
    m365_login_url: Option<String>,
    /// Where Microsoft Graph lives for a lab or `mspbridge sandbox microsoft_365`; default
    /// `https://graph.microsoft.com`.
    #[arg(long, env = "MSPBRIDGE_M365_GRAPH_URL")]
    m365_graph_url: Option<String>,
    /// Where Stripe's API lives for a lab or `mspbridge sandbox stripe`; default
    /// `https://api.stripe.com`.
    #[arg(long, env = "MSPBRIDGE_STRIPE_API_URL")]
    stripe_api_url: Option<String>,
}

impl SyncArgs {
    fn engine_config(&self) -> mspbridge_sync::EngineConfig {
        mspbridge_sync::EngineConfig {
            reconcile_every: chrono::Duration::hours(i64::from(self.reconcile_hours)),
            ..Default::default()
        }
    }
}

#[derive(Args, Clone)]
struct ServerArgs {
    /// Seconds a client has to send a request's headers; half-sent headers and idle
    /// keep-alive connections are closed after it.
    #[arg(long, env = "MSPBRIDGE_HEADER_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    header_timeout_secs: u64,
    /// Seconds a client has to send a request's whole body (408 after it).
    #[arg(long, env = "MSPBRIDGE_BODY_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    body_timeout_secs: u64,
    /// Connections served at once; more wait in the listen queue. Keep it below the
    /// process's open-file limit (`ulimit -n`).
    #[arg(long, env = "MSPBRIDGE_MAX_CONNECTIONS", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_connections: u32,
}

impl ServerArgs {
    fn limits(&self) -> mspbridge_web::ServerLimits {
        mspbridge_web::ServerLimits {
            header_read_timeout: std::time::Duration::from_secs(self.header_timeout_secs),
            body_read_timeout: std::time::Duration::from_secs(self.body_timeout_secs),
            max_connections: self.max_connections as usize,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the API, the web UI and background work.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "MSPBRIDGE_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        key: KeyArgs,
        /// Allow connectors to reach private and loopback addresses (sandboxes, labs). Off in production.
        #[arg(long, env = "MSPBRIDGE_ALLOW_PRIVATE_VENDOR_HOSTS", action = ArgAction::SetTrue,
              value_parser = BoolishValueParser::new())]
        allow_private_vendor_hosts: bool,
        /// The ConnectWise clientId registered for this deployment at developer.connectwise.com.
        #[arg(long, env = "MSPBRIDGE_CONNECTWISE_CLIENT_ID")]
        connectwise_client_id: Option<String>,
        /// This deployment's address as PSAs reach it (https://portal.example.com): with it,
        /// ticket webhooks are registered with the PSA (ConnectWise callbacks).
        #[arg(long, env = "MSPBRIDGE_PUBLIC_URL", value_parser = public_url)]
        public_url: Option<String>,
        /// Serve only; leave syncing to `mspbridge worker` processes.
        #[arg(long, env = "MSPBRIDGE_NO_WORKER", action = ArgAction::SetTrue,
              value_parser = BoolishValueParser::new())]
        no_worker: bool,
        #[command(flatten)]
        sync: SyncArgs,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Run sync jobs only (several workers may share one PostgreSQL database).
    Worker {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        key: KeyArgs,
        #[arg(long, env = "MSPBRIDGE_ALLOW_PRIVATE_VENDOR_HOSTS", action = ArgAction::SetTrue,
              value_parser = BoolishValueParser::new())]
        allow_private_vendor_hosts: bool,
        #[arg(long, env = "MSPBRIDGE_CONNECTWISE_CLIENT_ID")]
        connectwise_client_id: Option<String>,
        #[command(flatten)]
        sync: SyncArgs,
    },
    /// Start the product on a fresh SQLite file with the built-in vendor sandboxes, a demo tenant and admin.
    Demo {
        #[arg(long, env = "MSPBRIDGE_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Folder for the demo database and key (recreated on every start).
        #[arg(long, env = "MSPBRIDGE_DEMO_DIR", default_value = "./mspbridge-demo")]
        data_dir: PathBuf,
    },
    /// Run one vendor sandbox alone.
    Sandbox {
        /// Provider slug, e.g. connectwise_manage.
        provider: String,
        #[arg(long, env = "MSPBRIDGE_SANDBOX_LISTEN", default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// small | large | <number of companies>
        #[arg(long, env = "MSPBRIDGE_SANDBOX_SEED", default_value = "small")]
        seed: String,
    },
    /// Apply the database migrations and exit.
    Migrate {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Print the API's OpenAPI document (what `/api/v1/openapi.json` serves) and exit.
    Openapi,
    /// Administration.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create a tenant (one per MSP) and its primary admin. The password is read from
    /// MSPBRIDGE_ADMIN_PASSWORD or standard input.
    CreateTenant {
        name: String,
        #[arg(long, env = "MSPBRIDGE_ADMIN_EMAIL")]
        admin_email: String,
        #[arg(long, env = "MSPBRIDGE_ADMIN_NAME", default_value = "Primary Admin")]
        admin_name: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Create an API token and print it (it is shown only once).
    CreateToken {
        #[arg(long, env = "MSPBRIDGE_TENANT")]
        tenant: String,
        /// owner | admin | technician | read_only
        #[arg(long, env = "MSPBRIDGE_TOKEN_ROLE")]
        role: String,
        #[arg(long, env = "MSPBRIDGE_TOKEN_NAME", default_value = "api")]
        name: String,
        #[command(flatten)]
        db: DbArgs,
    },
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MSPBRIDGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_http=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

#[tokio::main]
async fn main() {
    init_tracing();
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve {
            listen,
            db,
            key,
            allow_private_vendor_hosts,
            connectwise_client_id,
            public_url,
            no_worker,
            sync,
            server,
        } => {
            let providers = providers(allow_private_vendor_hosts, connectwise_client_id, &sync)?;
            let store = open_store(&db.database).await?;
            let vault = load_vault(&key.master_key_file)?;
            let state = AppState::new(
                store.clone(),
                vault.clone(),
                providers.clone(),
                !listen.ip().is_loopback(),
            )
            .with_public_url(public_url);
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("could not listen on {listen}"))?;
            tracing::info!(address = %listen, database = state.store.backend(), "mspbridge serving");
            let worker =
                (!no_worker).then(|| start_worker(store, vault, providers, sync.engine_config()));
            mspbridge_web::serve_with(listener, state, server.limits(), shutdown_signal()).await?;
            if let Some((tx, task)) = worker {
                let _ = tx.send(true);
                let _ = task.await;
            }
            Ok(())
        }
        Command::Worker {
            db,
            key,
            allow_private_vendor_hosts,
            connectwise_client_id,
            sync,
        } => {
            let providers = providers(allow_private_vendor_hosts, connectwise_client_id, &sync)?;
            let store = open_store(&db.database).await?;
            let vault = load_vault(&key.master_key_file)?;
            let (tx, task) = start_worker(store, vault, providers, sync.engine_config());
            shutdown_signal().await;
            let _ = tx.send(true);
            let _ = task.await;
            Ok(())
        }
        Command::Demo { listen, data_dir } => demo(listen, &data_dir).await,
        Command::Openapi => {
            println!("{}", mspbridge_web::api::openapi_json()?);
            Ok(())
        }
        Command::Sandbox {
            provider,
            listen,
            seed,
        } => {
            let seed: Seed = seed.parse().map_err(|e: String| anyhow!(e))?;
            let kind = ProviderKind::from_slug(&provider).ok_or_else(|| {
                anyhow!(
                    "unknown provider '{provider}'; expected one of: {}",
                    slugs()
                )
            })?;
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("could not listen on {listen}"))?;
            match kind {
                ProviderKind::ConnectwiseManage => {
                    let sb = cw::CwSandbox::new(seed);
                    let handle = sb.serve(listener)?;
                    println!("ConnectWise Manage sandbox on http://{}", handle.addr);
                    println!("  site (API URL): {}", handle.host());
                    println!("  company id:     {}", cw::DEMO_COMPANY_ID);
                    println!("  public key:     {}", cw::DEMO_PUBLIC_KEY);
                    println!("  private key:    {}", cw::DEMO_PRIVATE_KEY);
                    println!("  client id:      {}", cw::DEMO_CLIENT_ID);
                    tokio::select! {
                        _ = handle.wait() => {}
                        _ = shutdown_signal() => {}
                    }
                    Ok(())
                }
                ProviderKind::HaloPsa => {
                    let sb = halo::HaloSandbox::new(seed);
                    let handle = sb.serve(listener)?;
                    println!("Halo PSA sandbox on http://{}", handle.addr);
                    println!(
                        "  authorisation server URL: https://{}/auth (plain http on loopback)",
                        handle.host()
                    );
                    println!("  resource server URL:      https://{}/api", handle.host());
                    println!("  tenant:                   {}", halo::DEMO_TENANT);
                    println!("  client id:                {}", halo::DEMO_CLIENT_ID);
                    println!("  client secret:            {}", halo::DEMO_CLIENT_SECRET);
                    tokio::select! {
                        _ = handle.wait() => {}
                        _ = shutdown_signal() => {}
                    }
                    Ok(())
                }
                ProviderKind::Autotask => {
                    let sb = autotask::AutotaskSandbox::new(seed);
                    let handle = sb.serve(listener)?;
                    println!("Autotask sandbox on http://{}", handle.addr);
                    println!(
                        "  zone lookup URL: {} (start serve/worker with --autotask-zone-url set to it)",
                        autotask::AutotaskSandbox::zone_lookup_url(&handle)
                    );
                    println!("  API user name:   {}", autotask::DEMO_USERNAME);
                    println!("  secret:          {}", autotask::DEMO_SECRET);
                    println!("  tracking id:     {}", autotask::DEMO_INTEGRATION_CODE);
                    tokio::select! {
                        _ = handle.wait() => {}
                        _ = shutdown_signal() => {}
                    }
                    Ok(())
                }
                ProviderKind::Syncro => {
                    let sb = syncro::SyncroSandbox::new(seed);
                    let handle = sb.serve(listener)?;
                    println!("Syncro sandbox on http://{}", handle.addr);
                    println!(
                        "  API base:  {} (start serve/worker with --syncro-api-base set to it)",
                        syncro::SyncroSandbox::api_base(&handle)
                    );
                    println!("  subdomain: {}", syncro::DEMO_SUBDOMAIN);
                    println!("  API token: {}", syncro::DEMO_API_TOKEN);
                    tokio::select! {
                        _ = handle.wait() => {}
                        _ = shutdown_signal() => {}
                    }
                    Ok(())
                }
                ProviderKind::Stripe => {
                    let sb = stripe::StripeSandbox::new(seed);
                    let handle = sb.serve(listener)?;
                    println!(
                        "Stripe sandbox (API, hosted invoice pages, billing portal) on http://{}",
                        handle.addr
                    );
                    println!(
                        "  start serve/worker with --stripe-api-url https://{} (plain http on loopback)",
                        handle.addr
                    );
                    println!("  restricted key: {}", stripe::DEMO_RESTRICTED_KEY);
                    println!("  secret key:     {}", stripe::DEMO_SECRET_KEY);
                    println!(
                        "  {} customers; webhooks are registered by the portal (its public URL) and signed",
                        sb.customer_count()
                    );
                    tokio::select! {
                        _ = handle.wait() => {}
                        _ = shutdown_signal() => {}
                    }
                    Ok(())
                }
                ProviderKind::Microsoft365 => {
                    let sb = m365::M365Sandbox::new(seed);
                    let handle = sb.serve(listener)?;
                    let base = m365::M365Sandbox::base_url(&handle);
                    println!(
                        "Microsoft 365 sandbox (sign-in service and Graph) on http://{}",
                        handle.addr
                    );
                    println!(
                        "  start serve/worker with --m365-login-url {base} --m365-graph-url {base}"
                    );
                    println!("  application (client) ID: {}", m365::DEMO_CLIENT_ID);
                    println!("  client secret:           {}", m365::DEMO_CLIENT_SECRET);
                    println!("  your tenant ID:          {}", m365::PARTNER_TENANT_ID);
                    for t in sb.tenants() {
                        println!(
                            "  customer tenant {} {} ({})",
                            t.id, t.display_name, t.default_domain
                        );
                    }
                    tokio::select! {
                        _ = handle.wait() => {}
                        _ = shutdown_signal() => {}
                    }
                    Ok(())
                }
                ProviderKind::DattoRmm => {
                    let sb = datto::DattoSandbox::new(seed);
                    let handle = sb.serve(listener)?;
                    println!("Datto RMM sandbox on http://{}", handle.addr);
                    println!(
                        "  API base:   {} (start serve/worker with --datto-rmm-api-base set to it)",
                        datto::DattoSandbox::api_base(&handle)
                    );
                    println!("  platform:   {}", datto::DEMO_PLATFORM);
                    println!("  API key:    {}", datto::DEMO_API_KEY);
                    println!("  API secret: {}", datto::DEMO_API_SECRET);
                    tokio::select! {
                        _ = handle.wait() => {}
                        _ = shutdown_signal() => {}
                    }
                    Ok(())
                }
                ProviderKind::ConnectwiseAsio => {
                    let sb = asio::AsioSandbox::new(seed);
                    let handle = sb.serve(listener)?;
                    println!("ConnectWise Asio sandbox on http://{}", handle.addr);
                    println!(
                        "  API base:      {} (start serve/worker with --connectwise-asio-api-base set to it)",
                        asio::AsioSandbox::api_base(&handle)
                    );
                    println!("  environment:   {}", asio::DEMO_ENVIRONMENT);
                    println!("  client ID:     {}", asio::DEMO_CLIENT_ID);
                    println!("  client secret: {}", asio::DEMO_CLIENT_SECRET);
                    tokio::select! {
                        _ = handle.wait() => {}
                        _ = shutdown_signal() => {}
                    }
                    Ok(())
                }
                other => bail!(
                    "{} has no sandbox yet (its connector is not built)",
                    other.descriptor().name
                ),
            }
        }
        Command::Migrate { db } => {
            let backend = mspbridge_store::migrate(&db.database)
                .await
                .context("migration failed")?;
            println!("migrations applied ({backend})");
            Ok(())
        }
        Command::Admin {
            command:
                AdminCommand::CreateTenant {
                    name,
                    admin_email,
                    admin_name,
                    db,
                },
        } => {
            let name = parse_name("name", &name)
                .map_err(|e| anyhow!("tenant {}: {}", e.field, e.message))?;
            let email = parse_email(&admin_email).map_err(|e| anyhow!("--admin-email: {e}"))?;
            let admin_name = parse_name("admin name", &admin_name)
                .map_err(|e| anyhow!("--admin-name: {}", e.message))?;
            let password = read_password()?;
            check_password("password", &password).map_err(|e| anyhow!("password {}", e.message))?;
            let store = open_store(&db.database).await?;
            let (tenant, _) =
                create_tenant(store.as_ref(), &name, &email, &admin_name, &password).await?;
            println!(
                "created tenant '{}' (id {}) with admin {email}",
                tenant.name, tenant.id
            );
            Ok(())
        }
        Command::Admin {
            command:
                AdminCommand::CreateToken {
                    tenant,
                    role,
                    name,
                    db,
                },
        } => {
            let role = StaffRole::parse(&role).ok_or_else(|| {
                anyhow!("--role must be one of: owner, admin, technician, read_only (not '{role}')")
            })?;
            let name = parse_name("name", &name).map_err(|e| anyhow!("--name: {}", e.message))?;
            let store = open_store(&db.database).await?;
            let t = store
                .tenant_by_name(&tenant)
                .await?
                .ok_or_else(|| anyhow!("no tenant named '{tenant}'"))?;
            let (token, hash) = mspbridge_vault::new_token("msb")?;
            store
                .create_api_token(t.id, &name, role, &hash, chrono::Utc::now())
                .await?;
            println!("{token}");
            Ok(())
        }
    }
}

fn providers(
    allow_private: bool,
    connectwise_client_id: Option<String>,
    sync: &SyncArgs,
) -> Result<Providers> {
    if let Some(id) = &connectwise_client_id
        && !mspbridge_domain::validate::is_guid(id)
    {
        bail!("--connectwise-client-id must be a GUID like 8c0e1a52-4c1b-4f60-9d5a-2a9f4f1f0b11");
    }
    let mut syncro = mspbridge_providers::syncro::client::SyncroSettings::default();
    if let Some(base) = &sync.syncro_api_base {
        if !base.starts_with("https://") || !base.contains("{subdomain}") {
            bail!(
                "--syncro-api-base must be an https:// URL containing {{subdomain}}, like https://{{subdomain}}.syncromsp.com/api/v1"
            );
        }
        syncro.api_base = base.clone();
    }
    let mut autotask = mspbridge_providers::autotask::client::AutotaskSettings::default();
    if let Some(url) = &sync.autotask_zone_url {
        if !url.starts_with("https://") {
            bail!(
                "--autotask-zone-url must be an https:// URL, like https://webservices.autotask.net/atservicesrest"
            );
        }
        autotask.zone_lookup_url = url.trim_end_matches('/').to_string();
    }
    let mut datto_rmm = mspbridge_providers::datto_rmm::client::DattoSettings::default();
    if let Some(base) = &sync.datto_rmm_api_base {
        if !base.starts_with("https://") {
            bail!(
                "--datto-rmm-api-base must be an https:// URL, like https://{{platform}}-api.centrastage.net"
            );
        }
        datto_rmm.api_base = Some(base.trim_end_matches('/').to_string());
    }
    let mut connectwise_asio =
        mspbridge_providers::connectwise_asio::client::AsioSettings::default();
    if let Some(base) = &sync.connectwise_asio_api_base {
        if !base.starts_with("https://") {
            bail!(
                "--connectwise-asio-api-base must be an https:// URL, like https://openapi.service.itsupport247.net"
            );
        }
        connectwise_asio.api_base = Some(base.trim_end_matches('/').to_string());
    }
    let mut microsoft_365 = mspbridge_providers::microsoft_365::client::GraphSettings::default();
    for (flag, value, slot) in [
        (
            "--m365-login-url",
            &sync.m365_login_url,
            &mut microsoft_365.login_base,
        ),
        (
            "--m365-graph-url",
            &sync.m365_graph_url,
            &mut microsoft_365.graph_base,
        ),
    ] {
        if let Some(url) = value {
            if !url.starts_with("https://") {
                bail!(
                    "{flag} must be an https:// URL (scheme and host), like https://login.microsoftonline.com"
                );
            }
            *slot = Some(url.trim_end_matches('/').to_string());
        }
    }
    let mut stripe_settings = mspbridge_providers::stripe::client::StripeSettings::default();
    if let Some(url) = &sync.stripe_api_url {
        if !url.starts_with("https://") {
            bail!(
                "--stripe-api-url must be an https:// URL (scheme and host), like https://api.stripe.com"
            );
        }
        stripe_settings.api_base = Some(url.trim_end_matches('/').to_string());
    }
    Ok(Providers::new(ProviderConfig {
        outbound: OutboundPolicy { allow_private },
        connectwise_client_id,
        syncro,
        autotask,
        datto_rmm,
        connectwise_asio,
        microsoft_365,
        stripe: stripe_settings,
        ..Default::default()
    }))
}

/// Starts a sync worker; send `true` on the returned channel to stop it after its current page.
fn start_worker(
    store: Arc<dyn Store>,
    vault: Arc<Vault>,
    providers: Providers,
    config: mspbridge_sync::EngineConfig,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
    let suffix = mspbridge_vault::new_token("w")
        .map(|(t, _)| t.chars().skip(2).take(6).collect::<String>())
        .unwrap_or_default();
    let worker = format!("{host}-{}-{suffix}", std::process::id());
    tracing::info!(worker = %worker, "sync worker started");
    let engine = mspbridge_sync::Engine::new(store, vault, providers, config, worker);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move { engine.run_worker(rx).await });
    (tx, task)
}

fn slugs() -> String {
    ProviderKind::ALL
        .iter()
        .map(|k| k.slug())
        .collect::<Vec<_>>()
        .join(", ")
}

async fn open_store(url: &str) -> Result<Arc<dyn Store>> {
    mspbridge_store::open(url)
        .await
        .with_context(|| format!("could not open the database {}", redact_url(url)))
}

/// Hides a password in a database URL before it is printed.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

fn load_vault(key_file: &Path) -> Result<Arc<Vault>> {
    let key = match std::env::var("MSPBRIDGE_MASTER_KEY") {
        Ok(k) if !k.trim().is_empty() => {
            mspbridge_vault::parse_master_key(&k).context("MSPBRIDGE_MASTER_KEY")?
        }
        _ => mspbridge_vault::load_or_create_key_file(key_file)?,
    };
    let vault = Vault::new(&key);
    tracing::info!(key_id = vault.key_id(), "master key loaded");
    Ok(Arc::new(vault))
}

fn read_password() -> Result<String> {
    if let Ok(p) = std::env::var("MSPBRIDGE_ADMIN_PASSWORD") {
        return Ok(p);
    }
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("reading the password from standard input")?;
    let p = s.lines().next().unwrap_or("").to_string();
    if p.is_empty() {
        bail!("no password: set MSPBRIDGE_ADMIN_PASSWORD or pipe it on standard input");
    }
    Ok(p)
}

async fn create_tenant(
    store: &dyn Store,
    name: &str,
    email: &str,
    admin_name: &str,
    password: &str,
) -> Result<(
    mspbridge_domain::model::Tenant,
    mspbridge_domain::model::StaffUser,
)> {
    let pw = password.to_string();
    let hash = tokio::task::spawn_blocking(move || mspbridge_vault::hash_password(&pw)).await??;
    let now = chrono::Utc::now();
    let tenant = store.create_tenant(name, now).await?;
    let user = store
        .create_staff_user(
            tenant.id,
            NewStaffUser {
                email: email.into(),
                name: admin_name.into(),
                role: StaffRole::Owner,
                password_hash: Some(hash),
                origin: Origin::Manual,
            },
            now,
        )
        .await?;
    Ok((tenant, user))
}

async fn demo(listen: SocketAddr, data_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("could not create {}", data_dir.display()))?;
    let db = data_dir.join("demo.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let store = open_store(&db.display().to_string()).await?;
    let vault = load_vault(&data_dir.join("demo.key"))?;

    // Vendor sandboxes on loopback.
    let cw_sandbox = cw::CwSandbox::new(Seed::Small);
    let cw_handle = cw_sandbox.serve(TcpListener::bind("127.0.0.1:0").await?)?;
    let halo_sandbox = halo::HaloSandbox::new(Seed::Small);
    let halo_handle = halo_sandbox.serve(TcpListener::bind("127.0.0.1:0").await?)?;
    let syncro_sandbox = syncro::SyncroSandbox::new(Seed::Small);
    let syncro_handle = syncro_sandbox.serve(TcpListener::bind("127.0.0.1:0").await?)?;
    let autotask_sandbox = autotask::AutotaskSandbox::new(Seed::Small);
    let autotask_handle = autotask_sandbox.serve(TcpListener::bind("127.0.0.1:0").await?)?;
    // Datto RMM's sites carry the Autotask sandbox's company ids and names, so the first
    // sweep maps most of them by identity and the mapping grid suggests the rest.
    let datto_sandbox = datto::DattoSandbox::new(Seed::Small);
    let datto_handle = datto_sandbox.serve(TcpListener::bind("127.0.0.1:0").await?)?;
    // ConnectWise Asio's companies carry the ConnectWise sandbox's company ids.
    let asio_sandbox = asio::AsioSandbox::new(Seed::Small);
    let asio_handle = asio_sandbox.serve(TcpListener::bind("127.0.0.1:0").await?)?;
    // Microsoft 365: tenants named like the Autotask companies, consented from the
    // portal's Company M365 Setup through the sandbox's consent page.
    let m365_sandbox = m365::M365Sandbox::new(Seed::Small);
    let m365_handle = m365_sandbox.serve(TcpListener::bind("127.0.0.1:0").await?)?;
    let m365_base = m365::M365Sandbox::base_url(&m365_handle);
    // Stripe: one customer per Autotask company (same names), open and past-due invoices.
    let stripe_sandbox = stripe::StripeSandbox::new(Seed::Small);
    let stripe_handle = stripe_sandbox.serve(TcpListener::bind("127.0.0.1:0").await?)?;

    let providers = Providers::new(ProviderConfig {
        outbound: OutboundPolicy {
            allow_private: true,
        },
        connectwise_client_id: None,
        syncro: mspbridge_providers::syncro::client::SyncroSettings {
            api_base: syncro::SyncroSandbox::api_base(&syncro_handle),
            ..Default::default()
        },
        autotask: mspbridge_providers::autotask::client::AutotaskSettings {
            zone_lookup_url: autotask::AutotaskSandbox::zone_lookup_url(&autotask_handle),
            ..Default::default()
        },
        datto_rmm: mspbridge_providers::datto_rmm::client::DattoSettings {
            api_base: Some(datto::DattoSandbox::api_base(&datto_handle)),
            ..Default::default()
        },
        connectwise_asio: mspbridge_providers::connectwise_asio::client::AsioSettings {
            api_base: Some(asio::AsioSandbox::api_base(&asio_handle)),
            ..Default::default()
        },
        microsoft_365: mspbridge_providers::microsoft_365::client::GraphSettings {
            login_base: Some(m365_base.clone()),
            graph_base: Some(m365_base.clone()),
            ..Default::default()
        },
        stripe: mspbridge_providers::stripe::client::StripeSettings {
            api_base: Some(format!("https://{}", stripe_handle.host())),
            ..Default::default()
        },
        ..Default::default()
    });
    // The sandboxes call back to this server (ConnectWise callbacks registered through
    // its `/system/callbacks`).
    let state = AppState::new(store.clone(), vault, providers, false)
        .with_public_url(Some(format!("http://{listen}")));

    let (password, _) = mspbridge_vault::new_token("demo")?;
    let password: String = password.chars().skip(5).take(16).collect();
    let email = "admin@demo.example";
    let (tenant, _) =
        create_tenant(store.as_ref(), "Demo MSP", email, "Demo Admin", &password).await?;
    // An API token for the demo, printed in the banner (like `admin create-token`).
    let (api_token, token_hash) = mspbridge_vault::new_token("msb")?;
    store
        .create_api_token(
            tenant.id,
            "demo",
            StaffRole::Admin,
            &token_hash,
            chrono::Utc::now(),
        )
        .await?;

    let mut creds = BTreeMap::new();
    creds.insert("site".to_string(), cw_handle.host());
    creds.insert("company_id".to_string(), cw::DEMO_COMPANY_ID.to_string());
    creds.insert("public_key".to_string(), cw::DEMO_PUBLIC_KEY.to_string());
    creds.insert("private_key".to_string(), cw::DEMO_PRIVATE_KEY.to_string());
    creds.insert("client_id".to_string(), cw::DEMO_CLIENT_ID.to_string());
    let cw_integration = mspbridge_web::integrations::connect(
        &state,
        tenant.id,
        ProviderKind::ConnectwiseManage.slug(),
        None,
        &creds,
    )
    .await
    .map_err(|e| anyhow!("connecting the ConnectWise sandbox failed: {e}"))?;

    let mut creds = BTreeMap::new();
    let host = halo_handle.host();
    creds.insert(
        "auth_server_url".to_string(),
        format!("https://{host}/auth"),
    );
    creds.insert(
        "resource_server_url".to_string(),
        format!("https://{host}/api"),
    );
    creds.insert("tenant".to_string(), halo::DEMO_TENANT.to_string());
    creds.insert("client_id".to_string(), halo::DEMO_CLIENT_ID.to_string());
    creds.insert(
        "client_secret".to_string(),
        halo::DEMO_CLIENT_SECRET.to_string(),
    );
    let halo_integration = mspbridge_web::integrations::connect(
        &state,
        tenant.id,
        ProviderKind::HaloPsa.slug(),
        None,
        &creds,
    )
    .await
    .map_err(|e| anyhow!("connecting the Halo sandbox failed: {e}"))?;

    let mut creds = BTreeMap::new();
    creds.insert("subdomain".to_string(), syncro::DEMO_SUBDOMAIN.to_string());
    creds.insert("api_token".to_string(), syncro::DEMO_API_TOKEN.to_string());
    let syncro_integration = mspbridge_web::integrations::connect(
        &state,
        tenant.id,
        ProviderKind::Syncro.slug(),
        None,
        &creds,
    )
    .await
    .map_err(|e| anyhow!("connecting the Syncro sandbox failed: {e}"))?;

    let mut creds = BTreeMap::new();
    creds.insert("username".to_string(), autotask::DEMO_USERNAME.to_string());
    creds.insert("secret".to_string(), autotask::DEMO_SECRET.to_string());
    creds.insert(
        "integration_code".to_string(),
        autotask::DEMO_INTEGRATION_CODE.to_string(),
    );
    let autotask_integration = mspbridge_web::integrations::connect(
        &state,
        tenant.id,
        ProviderKind::Autotask.slug(),
        None,
        &creds,
    )
    .await
    .map_err(|e| anyhow!("connecting the Autotask sandbox failed: {e}"))?;

    // Contacts auto-import with the full role chain, so the demo shows roles and their reasons.
    let roles: std::collections::HashMap<String, mspbridge_domain::RoleId> = store
        .list_roles(tenant.id)
        .await?
        .into_iter()
        .map(|r| (r.name, r.id))
        .collect();
    let options = mspbridge_domain::sync::SyncOptions {
        interval_minutes: 5,
        auto_import_contacts: true,
        default_role_id: roles.get("Viewer").copied(),
        primary_contact_role_id: roles.get("Admin").copied(),
        contact_type_rules: vec![mspbridge_domain::sync::ContactTypeRule {
            contact_type: "IT Contact".into(),
            role_id: roles
                .get("Standard User")
                .copied()
                .ok_or_else(|| anyhow!("built-in role missing"))?,
        }],
        ..Default::default()
    };
    // ConnectWise tickets are imported; tickets raised in the portal for its companies go
    // to its sandbox.
    let cw_options = mspbridge_domain::sync::SyncOptions {
        tickets: true,
        ticket_defaults: mspbridge_domain::sync::TicketDefaults {
            board: Some("Service Desk".into()),
            status: Some("New".into()),
            priority: Some("Priority 3 - Normal Response".into()),
            ticket_type: Some("Request".into()),
            ..Default::default()
        },
        ..options.clone()
    };
    store
        .set_sync_options(
            tenant.id,
            cw_integration.id,
            &cw_options,
            chrono::Utc::now(),
        )
        .await?;
    if let Some(outcome) =
        mspbridge_web::sync_api::register_webhook(&state, tenant.id, cw_integration.id, &cw_options)
            .await
    {
        println!("ConnectWise ticket callback {outcome}");
    }
    // The Halo sandbox has an "IT Contact" user role too: the same options fit it. Its
    // tickets are imported too, and its webhook (Basic authentication) is registered.
    let halo_options = mspbridge_domain::sync::SyncOptions {
        tickets: true,
        ticket_defaults: mspbridge_domain::sync::TicketDefaults {
            board: Some("1st Line Support".into()),
            status: Some("New".into()),
            priority: Some("Medium".into()),
            ticket_type: Some("Incident".into()),
            category: Some("Hardware".into()),
            impact: Some(3),
            urgency: Some(2),
        },
        ..options.clone()
    };
    store
        .set_sync_options(
            tenant.id,
            halo_integration.id,
            &halo_options,
            chrono::Utc::now(),
        )
        .await?;
    if let Some(outcome) = mspbridge_web::sync_api::register_webhook(
        &state,
        tenant.id,
        halo_integration.id,
        &halo_options,
    )
    .await
    {
        println!("Halo PSA ticket webhook {outcome}");
    }
    // The Autotask sandbox has an "IT Contact" contact group: the same options fit it. Its
    // tickets are imported too, and its ticket webhook is registered through the API
    // (`TicketWebhooks`, signed, the API user excluded).
    let autotask_options = mspbridge_domain::sync::SyncOptions {
        tickets: true,
        ticket_defaults: mspbridge_domain::sync::TicketDefaults {
            board: Some("Level I Support".into()),
            status: Some("New".into()),
            priority: Some("Medium".into()),
            ticket_type: Some("Service Request".into()),
            ..Default::default()
        },
        ..options.clone()
    };
    store
        .set_sync_options(
            tenant.id,
            autotask_integration.id,
            &autotask_options,
            chrono::Utc::now(),
        )
        .await?;
    if let Some(outcome) = mspbridge_web::sync_api::register_webhook(
        &state,
        tenant.id,
        autotask_integration.id,
        &autotask_options,
    )
    .await
    {
        println!("Autotask ticket webhook {outcome}");
    }
    // Syncro has no contact types: the primary-contact rule and the default role apply.
    // Its tickets are imported too; Syncro has no webhook API, so the demo plays the admin
    // who pastes the integration's secret URL into Syncro's Notification Center.
    let syncro_options = mspbridge_domain::sync::SyncOptions {
        contact_type_rules: vec![],
        tickets: true,
        ticket_defaults: mspbridge_domain::sync::TicketDefaults {
            board: Some("Hardware".into()),
            status: Some("New".into()),
            priority: Some("2 Normal".into()),
            ..Default::default()
        },
        ..options.clone()
    };
    store
        .set_sync_options(
            tenant.id,
            syncro_integration.id,
            &syncro_options,
            chrono::Utc::now(),
        )
        .await?;
    if let Some(url) = mspbridge_web::webhooks::url(
        &state,
        ProviderKind::Syncro,
        tenant.id.0,
        syncro_integration.id.0,
    ) {
        syncro_sandbox.set_notification_url(Some(url));
        println!("Syncro notifications set up in the sandbox's Notification Center");
    }
    // Datto RMM last, so its first sweep finds the Autotask companies already imported
    // (one worker takes due integrations in the order they became due).
    let mut creds = BTreeMap::new();
    creds.insert("platform".to_string(), datto::DEMO_PLATFORM.to_string());
    creds.insert("api_key".to_string(), datto::DEMO_API_KEY.to_string());
    creds.insert("api_secret".to_string(), datto::DEMO_API_SECRET.to_string());
    let datto_integration = mspbridge_web::integrations::connect(
        &state,
        tenant.id,
        ProviderKind::DattoRmm.slug(),
        None,
        &creds,
    )
    .await
    .map_err(|e| anyhow!("connecting the Datto RMM sandbox failed: {e}"))?;
    let datto_options = mspbridge_domain::sync::SyncOptions {
        interval_minutes: 5,
        companies: true,
        contacts: false,
        technicians: false,
        tickets: false,
        devices: true,
        alerts: true,
        ..Default::default()
    };
    store
        .set_sync_options(
            tenant.id,
            datto_integration.id,
            &datto_options,
            chrono::Utc::now() + chrono::Duration::seconds(1),
        )
        .await?;
    let mut creds = BTreeMap::new();
    creds.insert(
        "environment".to_string(),
        asio::DEMO_ENVIRONMENT.to_string(),
    );
    creds.insert("client_id".to_string(), asio::DEMO_CLIENT_ID.to_string());
    creds.insert(
        "client_secret".to_string(),
        asio::DEMO_CLIENT_SECRET.to_string(),
    );
    let asio_integration = mspbridge_web::integrations::connect(
        &state,
        tenant.id,
        ProviderKind::ConnectwiseAsio.slug(),
        None,
        &creds,
    )
    .await
    .map_err(|e| anyhow!("connecting the ConnectWise Asio sandbox failed: {e}"))?;
    store
        .set_sync_options(
            tenant.id,
            asio_integration.id,
            &datto_options,
            chrono::Utc::now() + chrono::Duration::seconds(2),
        )
        .await?;
    let mut creds = BTreeMap::new();
    creds.insert("client_id".to_string(), m365::DEMO_CLIENT_ID.to_string());
    creds.insert(
        "client_secret".to_string(),
        m365::DEMO_CLIENT_SECRET.to_string(),
    );
    creds.insert(
        "home_tenant".to_string(),
        m365::PARTNER_TENANT_ID.to_string(),
    );
    let m365_integration = mspbridge_web::integrations::connect(
        &state,
        tenant.id,
        ProviderKind::Microsoft365.slug(),
        None,
        &creds,
    )
    .await
    .map_err(|e| anyhow!("connecting the Microsoft 365 sandbox failed: {e}"))?;
    store
        .set_sync_options(
            tenant.id,
            m365_integration.id,
            &mspbridge_domain::sync::SyncOptions {
                interval_minutes: 15,
                companies: true,
                contacts: false,
                technicians: false,
                tickets: false,
                ..Default::default()
            },
            chrono::Utc::now() + chrono::Duration::seconds(3),
        )
        .await?;
    let mut creds = BTreeMap::new();
    creds.insert(
        "secret_key".to_string(),
        stripe::DEMO_RESTRICTED_KEY.to_string(),
    );
    let stripe_integration = mspbridge_web::integrations::connect(
        &state,
        tenant.id,
        ProviderKind::Stripe.slug(),
        None,
        &creds,
    )
    .await
    .map_err(|e| anyhow!("connecting the Stripe sandbox failed: {e}"))?;
    store
        .set_sync_options(
            tenant.id,
            stripe_integration.id,
            &mspbridge_domain::sync::SyncOptions {
                interval_minutes: 15,
                companies: true,
                contacts: false,
                technicians: false,
                tickets: false,
                ..Default::default()
            },
            chrono::Utc::now() + chrono::Duration::seconds(4),
        )
        .await?;
    // Bigger Brains: reseller details (no secret) and the library's catalogue file.
    let mut creds = BTreeMap::new();
    creds.insert("reseller_name".to_string(), "Demo MSP".to_string());
    creds.insert(
        "brainstation_url".to_string(),
        "https://getbiggerbrains.com".to_string(),
    );
    let bb_integration = mspbridge_web::integrations::connect(
        &state,
        tenant.id,
        ProviderKind::BiggerBrains.slug(),
        None,
        &creds,
    )
    .await
    .map_err(|e| anyhow!("connecting Bigger Brains failed: {e}"))?;
    let catalogue = mspbridge_providers::bigger_brains::samples::catalogue_csv(280);
    mspbridge_web::training::import_catalogue(&state, tenant.id, &catalogue)
        .await
        .map_err(|e| anyhow!("importing the demo course catalogue failed: {e}"))?;
    let (worker_tx, worker_task) = start_worker(
        store.clone(),
        state.vault.clone(),
        state.providers.clone(),
        mspbridge_sync::EngineConfig::default(),
    );

    let listener = TcpListener::bind(listen).await.with_context(|| {
        format!("could not listen on {listen} (is another mspbridge running? use --listen)")
    })?;
    let addr = listener.local_addr()?;
    println!();
    println!("mspbridge demo is running");
    println!("  open:      http://{addr}/settings/integrations");
    println!("  tenant:    {}", tenant.name);
    println!("  login:     {email}");
    println!("  password:  {password}");
    println!(
        "  API token: {api_token} (role admin; try: curl -H \"Authorization: Bearer {api_token}\" http://{addr}/api/v1/integrations)"
    );
    println!(
        "  database:  {} (SQLite, recreated on every start; more tokens: mspbridge admin create-token --database {} --tenant \"{}\" --role admin)",
        db.display(),
        db.display(),
        tenant.name
    );
    println!("Sandboxes (already connected; to try Connect by hand, delete one and enter these):");
    println!(
        "  ConnectWise Manage ({}): site {}, company id {}, public key {}, private key {}, client id {}",
        cw_integration.status.label(),
        cw_handle.host(),
        cw::DEMO_COMPANY_ID,
        cw::DEMO_PUBLIC_KEY,
        cw::DEMO_PRIVATE_KEY,
        cw::DEMO_CLIENT_ID
    );
    println!(
        "  Halo PSA ({}): authorisation server URL https://{host}/auth, resource server URL https://{host}/api, tenant {}, client id {}, client secret {} (plain http on loopback)",
        halo_integration.status.label(),
        halo::DEMO_TENANT,
        halo::DEMO_CLIENT_ID,
        halo::DEMO_CLIENT_SECRET,
        host = halo_handle.host()
    );
    println!(
        "  Syncro ({}) on http://{}: subdomain {}, API token {}",
        syncro_integration.status.label(),
        syncro_handle.host(),
        syncro::DEMO_SUBDOMAIN,
        syncro::DEMO_API_TOKEN
    );
    println!(
        "  Autotask ({}) on http://{}: API user name {}, secret {}, tracking id {}",
        autotask_integration.status.label(),
        autotask_handle.host(),
        autotask::DEMO_USERNAME,
        autotask::DEMO_SECRET,
        autotask::DEMO_INTEGRATION_CODE
    );
    println!(
        "  Datto RMM ({}) on http://{}: platform {}, API key {}, secret key {} (devices: Settings → Integrations → Datto RMM → Device types and staging)",
        datto_integration.status.label(),
        datto_handle.host(),
        datto::DEMO_PLATFORM,
        datto::DEMO_API_KEY,
        datto::DEMO_API_SECRET
    );
    println!(
        "  ConnectWise Asio ({}) on http://{}: environment {}, client ID {}, client secret {}",
        asio_integration.status.label(),
        asio_handle.host(),
        asio::DEMO_ENVIRONMENT,
        asio::DEMO_CLIENT_ID,
        asio::DEMO_CLIENT_SECRET
    );
    println!(
        "  Microsoft 365 ({}) on http://{}: application ID {}, secret {}, your tenant {} (connect companies: Settings → Integrations → Microsoft 365 → Companies; the sandbox's consent page lets you pick the tenant)",
        m365_integration.status.label(),
        m365_handle.host(),
        m365::DEMO_CLIENT_ID,
        m365::DEMO_CLIENT_SECRET,
        m365::PARTNER_TENANT_ID
    );
    println!(
        "  Stripe ({}) on http://{}: restricted key {} (link customers: Settings → Integrations → Companies, Quick Match; bills: Billing; a company's Billing tab gives its users a sign-in at /client/login)",
        stripe_integration.status.label(),
        stripe_handle.host(),
        stripe::DEMO_RESTRICTED_KEY
    );
    println!(
        "  Bigger Brains ({}): no API, files (280 courses imported; Training in the sidebar; Premium Training per company on Companies)",
        bb_integration.status.label()
    );
    println!("Press Ctrl-C to stop.");
    println!();
    mspbridge_web::serve(listener, state, shutdown_signal()).await?;
    let _ = worker_tx.send(true);
    let _ = worker_task.await;
    cw_handle.stop().await;
    halo_handle.stop().await;
    syncro_handle.stop().await;
    autotask_handle.stop().await;
    datto_handle.stop().await;
    asio_handle.stop().await;
    m365_handle.stop().await;
    stripe_handle.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}

/// `--public-url`: an absolute http(s) URL without query or fragment.
fn public_url(v: &str) -> Result<String, String> {
    let ok = (v.starts_with("https://") || v.starts_with("http://"))
        && !v.contains(['?', '#', ' '])
        && v.split("://").nth(1).is_some_and(|rest| !rest.is_empty());
    if ok {
        Ok(v.trim_end_matches('/').to_string())
    } else {
        Err("must be an absolute http(s) URL such as https://portal.example.com".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("./mspbridge.db"), "./mspbridge.db");
    }

    /// Every boolean flag read from the environment takes 1/0, true/false, yes/no and
    /// on/off in any case (clap's default for flags takes only `true`/`false`).
    #[test]
    fn boolean_environment_flags_take_the_usual_spellings() {
        use clap::CommandFactory;
        let cli = Cli::command();
        let mut flags = Vec::new();
        for sub in cli.get_subcommands() {
            for arg in sub.get_arguments() {
                if matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
                    assert!(
                        arg.get_env().is_some(),
                        "{} --{:?} has no variable",
                        sub.get_name(),
                        arg.get_long()
                    );
                    flags.push((sub.get_name().to_string(), arg.clone()));
                }
            }
        }
        assert_eq!(flags.len(), 3, "serve: 2, worker: 1");
        for (sub, arg) in flags {
            // The variable's value goes through the flag's value parser: try it on an
            // option with the same parser.
            let probe = clap::Command::new("probe").arg(
                clap::Arg::new("v")
                    .long("v")
                    .action(ArgAction::Set)
                    .value_parser(arg.get_value_parser().clone()),
            );
            for (given, want) in [
                ("1", true),
                ("0", false),
                ("true", true),
                ("FALSE", false),
                ("True", true),
                ("yes", true),
                ("No", false),
                ("YES", true),
                ("on", true),
                ("off", false),
            ] {
                let m = probe
                    .clone()
                    .try_get_matches_from(["probe", "--v", given])
                    .unwrap_or_else(|e| panic!("{sub} {:?}={given}: {e}", arg.get_env()));
                assert_eq!(m.get_one::<bool>("v"), Some(&want), "{sub} {given}");
            }
            assert!(
                probe
                    .clone()
                    .try_get_matches_from(["probe", "--v", "maybe"])
                    .is_err()
            );
        }
        // The flags themselves still work without a value.
        let Ok(Cli {
            command:
                Command::Serve {
                    no_worker: true,
                    allow_private_vendor_hosts: true,
                    ..
                },
        }) = Cli::try_parse_from([
            "mspbridge",
            "serve",
            "--no-worker",
            "--allow-private-vendor-hosts",
        ])
        else {
            panic!("serve flags")
        };
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn server_limits_default_to_the_web_layers_and_parse() {
        let limits = |args: &[&str]| match Cli::try_parse_from(args) {
            Ok(Cli {
                command: Command::Serve { server, .. },
            }) => server.limits(),
            _ => panic!("{args:?}"),
        };
        assert_eq!(
            limits(&["mspbridge", "serve"]),
            mspbridge_web::ServerLimits::default()
        );
        let set = limits(&[
            "mspbridge",
            "serve",
            "--header-timeout-secs",
            "3",
            "--body-timeout-secs",
            "4",
            "--max-connections",
            "5",
        ]);
        assert_eq!(
            (
                set.header_read_timeout.as_secs(),
                set.body_read_timeout.as_secs(),
                set.max_connections
            ),
            (3, 4, 5)
        );
        assert!(Cli::try_parse_from(["mspbridge", "serve", "--header-timeout-secs", "0"]).is_err());
    }
}
