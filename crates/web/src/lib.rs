//! The HTTP layer of mspbridge: JSON API under `/api/v1` (OpenAPI at
//! `/api/v1/openapi.json`), the server-rendered admin UI, `/healthz` and `/metrics`.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use mspbridge_providers::Providers;
use mspbridge_store::Store;
use mspbridge_vault::Vault;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_http::trace::TraceLayer;

pub mod api;
pub mod auth;
pub mod billing;
pub mod companies_api;
pub mod devices;
pub mod error;
pub mod extract;
pub mod integrations;
pub mod m365;
pub mod mapping_api;
pub mod paging;
pub mod sync_api;
pub mod technicians_api;
pub mod tickets_api;
pub mod training;
pub mod ui;
pub mod ui_sync;
mod ui_tickets;
pub mod webhooks;

/// Everything a request handler may use. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub vault: Arc<Vault>,
    pub providers: Providers,
    pub limiter: Arc<auth::LoginLimiter>,
    /// Mark cookies `Secure` (on unless the server listens on loopback only).
    pub cookie_secure: bool,
    /// This deployment's address as PSAs reach it (`https://portal.example`): webhooks
    /// are registered with the PSA only when it is set.
    pub public_url: Option<String>,
    /// When each integration's Autotask deactivation notice was last logged.
    pub(crate) deactivations: Arc<webhooks::LoggedOnce>,
    clock: Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>,
}

impl AppState {
    pub fn new(
        store: Arc<dyn Store>,
        vault: Arc<Vault>,
        providers: Providers,
        cookie_secure: bool,
    ) -> Self {
        Self {
            store,
            vault,
            providers,
            limiter: Arc::default(),
            cookie_secure,
            public_url: None,
            deactivations: Arc::default(),
            clock: Arc::new(Utc::now),
        }
    }

    /// Registers PSA webhooks to `url` (trailing `/` dropped).
    pub fn with_public_url(mut self, url: Option<String>) -> Self {
        self.public_url = url.map(|u| u.trim_end_matches('/').to_string());
        self
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, clock: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }
}

fn metrics_handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok().map(|_| {
                describe_metrics();
                handle
            })
        })
        .as_ref()
}

/// `# HELP` for every metric the process records (web, sync engine, connectors). The
/// database-state gauges are described where they are rendered ([`database_gauges`]).
fn describe_metrics() {
    use metrics::Unit;
    metrics::describe_counter!(
        "mspbridge_http_requests_total",
        "HTTP requests answered, by method, route template and status."
    );
    metrics::describe_histogram!(
        "mspbridge_http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request, by method, route template and status."
    );
    metrics::describe_counter!(
        "mspbridge_vendor_requests_total",
        "Requests sent to a PSA's API, by provider."
    );
    metrics::describe_counter!(
        "mspbridge_vendor_paced_total",
        "Requests a connector delayed to stay under the vendor's rate threshold, by provider."
    );
    metrics::describe_counter!(
        "mspbridge_sync_runs_total",
        "Sync runs finished, by provider, integration id and result (success, partial, failed)."
    );
    metrics::describe_histogram!(
        "mspbridge_sync_run_duration_seconds",
        Unit::Seconds,
        "Wall time of a sync run, by provider and integration id."
    );
    metrics::describe_counter!(
        "mspbridge_sync_records_written_total",
        "Portal records a sync created, linked, updated or deactivated, by provider, integration id and record type."
    );
    metrics::describe_gauge!(
        "mspbridge_sync_last_success_timestamp_seconds",
        Unit::Seconds,
        "Unix time of the integration's last successful sync run (since this process started), by provider and integration id."
    );
    metrics::describe_counter!(
        "mspbridge_webhook_deliveries_total",
        "PSA webhook deliveries to a known integration, by provider, integration id and result (accepted, refused)."
    );
}

/// A database-state gauge: name, help, value of one integration.
type Gauge = (
    &'static str,
    &'static str,
    fn(&mspbridge_store::sync::IntegrationGauges) -> i64,
);

/// Gauges read from the database at scrape time (one query over every tenant's
/// integrations; labels are provider and integration id only).
async fn database_gauges(state: &AppState) -> Result<String, mspbridge_store::StoreError> {
    use std::fmt::Write as _;
    let rows = state.store.integration_gauges().await?;
    let mut out = String::new();
    let series: [Gauge; 3] = [
        (
            "mspbridge_integration_paused",
            "1 when the integration's automatic sync is paused after repeated failures (Reactivate resumes it), else 0.",
            |g| g.paused,
        ),
        (
            "mspbridge_outbox_pending",
            "Writes to the PSA waiting in the outbox, by provider and integration id.",
            |g| g.outbox_pending,
        ),
        (
            "mspbridge_outbox_failed",
            "Writes the PSA refused, listed until Retry or Discard, by provider and integration id.",
            |g| g.outbox_failed,
        ),
    ];
    for (name, help, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for g in &rows {
            let _ = writeln!(
                out,
                "{name}{{provider=\"{}\",integration_id=\"{}\"}} {}",
                g.provider,
                g.integration_id,
                value(g)
            );
        }
    }
    Ok(out)
}

async fn track_metrics(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("mspbridge_http_requests_total", &labels).increment(1);
    metrics::histogram!("mspbridge_http_request_duration_seconds", &labels)
        .record(start.elapsed().as_secs_f64());
    resp
}

async fn healthz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({"status": "ok", "database": state.store.backend()})),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "health check: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(
                    serde_json::json!({"status": "unavailable", "database": state.store.backend()}),
                ),
            )
                .into_response()
        }
    }
}

async fn metrics_endpoint(State(state): State<AppState>) -> Response {
    let Some(h) = metrics_handle() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder unavailable",
        )
            .into_response();
    };
    let mut body = h.render();
    match database_gauges(&state).await {
        Ok(gauges) => {
            if !body.is_empty() && !body.ends_with('\n') {
                body.push('\n');
            }
            body.push_str(&gauges);
        }
        Err(e) => tracing::warn!(error = %e, "metrics: could not read the database gauges"),
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
        .into_response()
}

/// The favicon: a small inline SVG (a bridge arc in the UI's brand blue).
const FAVICON_SVG: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="6" fill="#2457d6"/><path d="M5 22h22M8 22v-5a8 8 0 0 1 16 0v5M12 22v-4M16 22v-5M20 22v-4" stroke="#fff" stroke-width="2.5" fill="none" stroke-linecap="round"/></svg>"##;

async fn favicon() -> Response {
    (
        [
            (axum::http::header::CONTENT_TYPE, "image/svg+xml"),
            (axum::http::header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        FAVICON_SVG,
    )
        .into_response()
}

async fn api_not_found() -> error::ApiError {
    error::ApiError::NotFound
}

/// The whole application router, with the default [`ServerLimits`].
pub fn router(state: AppState) -> Router {
    app(state, &ServerLimits::default())
}

fn app(state: AppState, limits: &ServerLimits) -> Router {
    let _ = metrics_handle();
    let api = Router::new()
        .route("/me", get(api::me))
        .route("/providers", get(api::list_providers))
        .route(
            "/integrations",
            get(api::list_integrations).post(api::connect),
        )
        .route(
            "/integrations/{id}",
            get(api::get_integration)
                .patch(api::rename)
                .delete(api::delete),
        )
        .route("/integrations/{id}/test", post(api::test))
        .route(
            "/integrations/{id}/credentials",
            axum::routing::put(api::update_credentials),
        )
        .route("/integrations/{id}/disconnect", post(api::disconnect))
        .route(
            "/companies",
            get(api::list_companies).post(api::create_company),
        )
        .route(
            "/integrations/{id}/options",
            get(sync_api::get_options).put(sync_api::put_options),
        )
        .route("/integrations/{id}/sync", post(sync_api::sync_now))
        .route(
            "/integrations/{id}/vocabulary",
            post(sync_api::refresh_vocabulary),
        )
        .route("/integrations/{id}/reactivate", post(sync_api::reactivate))
        .route(
            "/integrations/{id}/tickets/quick-sync",
            post(sync_api::quick_sync),
        )
        .route(
            "/integrations/{id}/tickets/clear-resync",
            post(sync_api::clear_tickets),
        )
        .route(
            "/integrations/{id}/role-preview",
            post(sync_api::role_preview),
        )
        .route("/integrations/{id}/runs", get(sync_api::list_runs))
        .route("/runs/{run_id}", get(sync_api::get_run))
        .route("/company-mapping", get(mapping_api::get_mapping))
        .route(
            "/company-mapping/{company_id}/{integration_id}",
            axum::routing::put(mapping_api::put_link).delete(mapping_api::delete_link),
        )
        .route(
            "/company-mapping/quick-match",
            post(mapping_api::post_quick_match),
        )
        .route(
            "/company-mapping/quick-match/apply",
            post(mapping_api::post_apply),
        )
        .route(
            "/company-mapping/batches/{batch}/undo",
            post(mapping_api::post_undo),
        )
        .route("/company-mapping/audit", get(mapping_api::get_audit))
        .route(
            "/integrations/{id}/companies",
            get(mapping_api::list_integration_companies),
        )
        .route("/integrations/{id}/import", post(mapping_api::post_import))
        .route("/companies/blocked", get(mapping_api::list_blocked))
        .route(
            "/tickets",
            get(tickets_api::list_tickets).post(tickets_api::create_ticket),
        )
        .route(
            "/tickets/{id}",
            get(tickets_api::get_ticket).patch(tickets_api::set_status),
        )
        .route("/tickets/{id}/notes", post(tickets_api::add_note))
        .route("/outbox", get(tickets_api::list_outbox))
        .route("/outbox/{id}/retry", post(tickets_api::retry_outbox))
        .route("/outbox/{id}/discard", post(tickets_api::discard_outbox))
        .route("/technicians", get(technicians_api::list))
        .route(
            "/technicians/{id}",
            axum::routing::patch(technicians_api::update),
        )
        .route(
            "/companies/{company_id}",
            axum::routing::delete(mapping_api::delete_company),
        )
        .route(
            "/companies/{company_id}/users",
            get(companies_api::list_users),
        )
        .route(
            "/companies/{company_id}/default-import-role",
            get(companies_api::get_default_import_role).put(companies_api::put_default_import_role),
        )
        .route(
            "/integrations/{id}/companies/{external_id}/unblock",
            post(mapping_api::post_unblock),
        )
        .route("/openapi.json", get(api::openapi))
        .merge(devices::api_routes())
        .merge(m365::api_routes())
        .merge(billing::api_routes())
        .merge(training::api_routes())
        .fallback(api_not_found);
    Router::new()
        .nest("/api/v1", api)
        .merge(ui::routes())
        .route(
            "/webhooks/connectwise/{integration_id}",
            post(webhooks::connectwise),
        )
        .route(
            "/webhooks/halo/{integration_id}",
            post(webhooks::halo),
        )
        .route(
            "/webhooks/syncro/{integration_id}/{token}",
            post(webhooks::syncro),
        )
        .route(
            "/webhooks/autotask/{integration_id}",
            post(webhooks::autotask),
        )
        .route(
            "/webhooks/autotask/{integration_id}/deactivated",
            post(webhooks::autotask_deactivated),
        )
        .merge(billing::webhook_routes())
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_endpoint))
        .route("/favicon.svg", get(favicon))
        .route("/favicon.ico", get(favicon))
        .layer(axum::middleware::from_fn(extract::reject_nul))
        .layer(axum::middleware::from_fn_with_state(
            limits.body_read_timeout,
            extract::read_body,
        ))
        .layer(axum::middleware::from_fn(extract::json_errors))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ui::html_errors,
        ))
        .layer(axum::middleware::from_fn(track_metrics))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            tracing::info_span!("http", method = %req.method(), path = %webhooks::loggable_path(req.uri().path()), tenant_id = tracing::field::Empty)
        }))
        .with_state(state)
}

/// What one client may hold of the server, so that slow or idle clients cannot starve the
/// others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Time a client has to send a request's headers, counted from the connection's
    /// start or the end of its previous response: idle keep-alive connections and
    /// half-sent headers are closed after it.
    pub header_read_timeout: Duration,
    /// Time a client has to send a request's whole body (408 after it, however slowly the
    /// bytes keep coming).
    pub body_read_timeout: Duration,
    /// Connections served at once; further ones wait in the listen queue until one ends.
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 512,
        }
    }
}

/// Serves the application on `listener` until `shutdown` resolves, with the default
/// [`ServerLimits`].
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, state, ServerLimits::default(), shutdown).await
}

/// Serves the application on `listener` (HTTP/1.1) until `shutdown` resolves: at most
/// `limits.max_connections` at once, each given `limits.header_read_timeout` for every
/// request's headers and `limits.body_read_timeout` for its body. On shutdown it stops
/// accepting, lets requests in flight finish, closes idle connections and returns once
/// every connection has ended.
pub async fn serve_with(
    listener: TcpListener,
    state: AppState,
    limits: ServerLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt as _;

    let app = app(state, &limits);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        // A free slot first: beyond the limit, connections wait in the listen queue.
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    if !matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionAborted
                            | std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::ConnectionRefused
                    ) {
                        tracing::error!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    continue;
                }
            },
        };
        let service =
            app.clone()
                .map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    req
                });
        let conn = http.serve_connection(
            TokioIo::new(stream),
            hyper_util::service::TowerToHyperService::new(service),
        );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection closed");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
