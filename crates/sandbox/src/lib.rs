//! Shared harness for the vendor sandboxes that play the vendors in tests, benchmarks
//! and `mspbridge demo`. Each provider's own sandbox (paths, auth, payloads) lives in
//! its provider folder; this crate gives them what they have in common:
//!
//! * [`serve`]: run an axum router on a loopback listener with graceful shutdown;
//! * [`Seed`]: the `small | large | <n>` data-set sizes and a deterministic generator;
//! * [`Faults`]: fault injection (errors with bodies, 429 with `Retry-After`,
//!   latency, truncated bodies) that tests switch on per request path.

pub mod names;
mod shared;

pub use shared::{RawEdits, VendorRateLimit, touch_every};

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// How much data a sandbox is seeded with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seed {
    /// A few dozen companies: the demo.
    Small,
    /// Benchmark size (the provider decides what "large" means for its record types).
    Large,
    /// Exactly this many companies (contacts and others scale from it).
    Companies(u32),
}

impl FromStr for Seed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "small" => Ok(Seed::Small),
            "large" => Ok(Seed::Large),
            n => match n.parse::<u32>() {
                Ok(n) if n > 0 && n <= 1_000_000 => Ok(Seed::Companies(n)),
                _ => Err(format!(
                    "seed must be 'small', 'large' or a number of companies from 1 to 1000000, not '{s}'"
                )),
            },
        }
    }
}

/// A small deterministic generator (SplitMix64) so seeded data is identical on every run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and JSON body instead of calling the handler.
    Status {
        status: u16,
        body: String,
        retry_after: Option<u64>,
    },
    /// Delay the real answer.
    Delay(Duration),
    /// Call the handler, then cut its body in half (a truncated transfer).
    Truncate,
}

#[derive(Debug, Default)]
struct FaultState {
    /// Faults consumed one per matching request, in order.
    queue: VecDeque<(String, Fault)>,
    /// Response time of every request (see [`Faults::set_latency`]).
    latency: Duration,
}

/// Fault injection shared between a sandbox and the test that drives it.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Mutex<FaultState>>);

impl Faults {
    /// Queues `fault` for the next request whose path contains `path_fragment`
    /// (an empty fragment matches every request).
    pub fn push(&self, path_fragment: &str, fault: Fault) {
        if let Ok(mut s) = self.0.lock() {
            s.queue.push_back((path_fragment.to_string(), fault));
        }
    }

    /// Queues the same fault `n` times.
    pub fn push_n(&self, path_fragment: &str, fault: Fault, n: usize) {
        for _ in 0..n {
            self.push(path_fragment, fault.clone());
        }
    }

    /// Every answer leaves no earlier than `latency` after its request arrived, as from a
    /// vendor whose response time is `latency`: the sandbox's own work counts inside it
    /// (and shows only when it takes longer).
    pub fn set_latency(&self, latency: Duration) {
        if let Ok(mut s) = self.0.lock() {
            s.latency = latency;
        }
    }

    pub fn clear(&self) {
        if let Ok(mut s) = self.0.lock() {
            s.queue.clear();
            s.latency = Duration::ZERO;
        }
    }

    pub fn pending(&self) -> usize {
        self.0.lock().map(|s| s.queue.len()).unwrap_or(0)
    }

    fn take(&self, path: &str) -> (Option<Fault>, Duration) {
        let Ok(mut s) = self.0.lock() else {
            return (None, Duration::ZERO);
        };
        let latency = s.latency;
        let idx = s
            .queue
            .iter()
            .position(|(frag, _)| path.contains(frag.as_str()));
        (idx.and_then(|i| s.queue.remove(i)).map(|(_, f)| f), latency)
    }
}

/// Middleware applying [`Faults`]. Install with
/// `router.layer(axum::middleware::from_fn_with_state(faults, inject_faults))`.
pub async fn inject_faults(State(faults): State<Faults>, req: Request, next: Next) -> Response {
    let (fault, latency) = faults.take(req.uri().path());
    let due = tokio::time::Instant::now() + latency;
    let resp = apply_fault(fault, req, next).await;
    tokio::time::sleep_until(due).await;
    resp
}

async fn apply_fault(fault: Option<Fault>, req: Request, next: Next) -> Response {
    match fault {
        None => next.run(req).await,
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            next.run(req).await
        }
        Some(Fault::Status {
            status,
            body,
            retry_after,
        }) => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp =
                (code, [(header::CONTENT_TYPE, "application/json")], body).into_response();
            if let Some(secs) = retry_after {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            resp
        }
        Some(Fault::Truncate) => {
            let resp = next.run(req).await;
            let (mut parts, body) = resp.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            let cut = bytes.slice(..bytes.len() / 2);
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(cut))
        }
    }
}

/// A running sandbox. Dropping it stops the server.
pub struct SandboxHandle {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SandboxHandle {
    /// `host:port` as a connector's site/host field expects it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Waits until the server ends (used by `mspbridge sandbox`, which runs until killed).
    pub async fn wait(mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SandboxHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Serves `router` on `listener` until the handle is stopped or dropped.
/// Sends `req` (a vendor's webhook or notification) in the background, as a vendor does: a
/// failure is logged, never answered. `sent` counts what was handed over. Nothing is sent
/// (false) outside a Tokio runtime.
pub fn deliver_in_background(
    req: reqwest::RequestBuilder,
    sent: &AtomicU64,
    what: &'static str,
) -> bool {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return false;
    };
    sent.fetch_add(1, Ordering::Relaxed);
    rt.spawn(async move {
        if let Err(e) = req.send().await {
            tracing::warn!(what, error = %e, "sandbox delivery failed");
        }
    });
    true
}

pub fn serve(router: Router, listener: TcpListener) -> std::io::Result<SandboxHandle> {
    let addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let server = axum::serve(listener, router).with_graceful_shutdown(async {
            let _ = rx.await;
        });
        if let Err(e) = server.await {
            tracing::warn!(error = %e, "sandbox server stopped with an error");
        }
    });
    Ok(SandboxHandle {
        addr,
        shutdown: Some(tx),
        task: Some(task),
    })
}

/// Binds a loopback listener on a free port.
pub async fn loopback_listener() -> std::io::Result<TcpListener> {
    TcpListener::bind("127.0.0.1:0").await
}

/// A vendor's published API document for contract tests, read from the specs folder:
/// `MSPBRIDGE_SPECS_DIR`, by default `../shared/specs` beside the repository. Vendors'
/// licences keep these documents out of the repository, so on a machine without them the
/// test is skipped with one line saying so, except under `CI=true`, where a missing
/// document fails the test.
pub fn vendor_spec(relative: &str) -> Option<serde_json::Value> {
    let dir = std::env::var_os("MSPBRIDGE_SPECS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../../shared/specs"
            ))
        });
    let path = dir.join(relative);
    match std::fs::read_to_string(&path) {
        Ok(text) => match serde_json::from_str(&text) {
            Ok(spec) => Some(spec),
            Err(e) => panic!("{} is not JSON: {e}", path.display()),
        },
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!(
            "CI=true and the vendor document {} cannot be read ({e}); set MSPBRIDGE_SPECS_DIR",
            path.display()
        ),
        Err(_) => {
            // Straight to stderr, past the test harness's capture, so the skip is seen.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "skipped: the vendor document {} is not there (set MSPBRIDGE_SPECS_DIR to the specs folder)",
                path.display()
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse() {
        assert_eq!("small".parse::<Seed>().unwrap(), Seed::Small);
        assert_eq!("large".parse::<Seed>().unwrap(), Seed::Large);
        assert_eq!("5000".parse::<Seed>().unwrap(), Seed::Companies(5000));
        assert!("0".parse::<Seed>().is_err());
        assert!("huge".parse::<Seed>().unwrap_err().contains("'huge'"));
    }

    #[test]
    fn rng_is_deterministic() {
        let a: Vec<_> = (0..5)
            .map({
                let mut r = Rng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<_> = (0..5)
            .map({
                let mut r = Rng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(a[0], a[1]);
    }

    #[test]
    fn faults_are_consumed_in_order_by_path() {
        let f = Faults::default();
        f.push("/companies", Fault::Truncate);
        f.push("", Fault::Delay(Duration::from_millis(1)));
        assert_eq!(
            f.take("/contacts").0,
            Some(Fault::Delay(Duration::from_millis(1)))
        );
        assert_eq!(f.take("/company/companies").0, Some(Fault::Truncate));
        assert_eq!(f.take("/company/companies").0, None);
    }
}
