//! Plumbing every vendor client shares: the retry policy, readable transport errors, and
//! a rolling-window request limiter for vendors that count requests per time window.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

/// How transient failures (429, 5xx, timeouts, truncated bodies) are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// First backoff; doubles per attempt.
    pub base_delay: Duration,
    /// Cap for backoff and for a vendor's `Retry-After`.
    pub max_delay: Duration,
    /// Requests one client (one sync run) may make.
    pub budget: u64,
    /// Time allowed for one request, connect and body included.
    pub timeout: Duration,
}

impl RetryPolicy {
    /// For a request an admin is waiting on (a button in the UI): one retry, short waits.
    pub fn interactive() -> Self {
        Self {
            max_attempts: 2,
            base_delay: Duration::from_millis(300),
            max_delay: Duration::from_secs(3),
            budget: 50,
            timeout: Duration::from_secs(15),
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
            budget: 20_000,
            timeout: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1`: the vendor's `Retry-After` when it sent one,
    /// else exponential backoff from `base_delay`; never more than `max_delay`, never
    /// less than `floor`.
    pub fn wait(&self, attempt: u32, retry_after: Option<Duration>, floor: Duration) -> Duration {
        let backoff = self
            .base_delay
            .saturating_mul(1 << (attempt.saturating_sub(1)).min(16));
        retry_after
            .unwrap_or(backoff)
            .max(floor)
            .min(self.max_delay)
    }
}

/// How a failed request may be retried.
pub enum Retry {
    /// An answer (4xx other than 429, bad credentials, a refused budget): do not retry.
    No,
    /// 5xx, a timeout, a truncated or unreadable body: back off exponentially.
    Backoff,
    /// The vendor's rate limit (429), with its `Retry-After` if it sent one.
    RateLimited(Option<Duration>),
}

impl Retry {
    /// The one classification every vendor client uses: an HTTP `status` (with the
    /// vendor's `Retry-After`) or, for `None`, a failure before an answer was read (a
    /// timeout, a reset, a truncated or unreadable body). 429 is the rate limit, 5xx and
    /// transport failures back off, any other answer is final.
    pub fn of(status: Option<u16>, retry_after: Option<Duration>) -> Retry {
        match status {
            Some(429) => Retry::RateLimited(retry_after),
            Some(s) if s >= 500 => Retry::Backoff,
            Some(_) => Retry::No,
            None => Retry::Backoff,
        }
    }
}

/// Runs `attempt` until it succeeds, fails for good, or `policy.max_attempts` is used up.
/// A 429 waits at least `rate_floor` and holds `window` (every client of the vendor
/// account then waits too); other transient failures back off exponentially. Every wait
/// gets up to a quarter more at random (jitter).
pub async fn retrying<T, E, F, Fut>(
    policy: &RetryPolicy,
    rate_floor: Duration,
    window: Option<&RollingWindow>,
    vendor: &str,
    what: &str,
    classify: impl Fn(&E) -> Retry,
    mut attempt: F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut n = 1;
    loop {
        let result = attempt().await;
        let Err(e) = &result else { return result };
        let (floor, retry_after) = match classify(e) {
            Retry::No => return result,
            Retry::Backoff => (Duration::ZERO, None),
            Retry::RateLimited(after) => (rate_floor, after),
        };
        if n >= policy.max_attempts {
            return result;
        }
        let wait = policy.wait(n, retry_after, floor);
        if let (Some(w), true) = (window, floor > Duration::ZERO) {
            w.hold(wait);
        }
        // Up to a quarter more, at random, so clients that failed together do not all come
        // back in the same instant.
        let wait = wait + jitter(wait / 4);
        tracing::warn!(vendor, what, attempt = n, wait_ms = wait.as_millis() as u64, error = %e, "vendor request failed; retrying");
        tokio::time::sleep(wait).await;
        n += 1;
    }
}

/// A random duration from zero to `up_to`.
pub fn jitter(up_to: Duration) -> Duration {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 4];
    if up_to.is_zero() || ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        return Duration::ZERO;
    }
    up_to.mul_f64(f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX))
}

/// What went wrong with a request, in words (reqwest's own messages hide the cause).
pub fn describe(e: &reqwest::Error) -> String {
    let mut msg = if e.is_timeout() {
        "the request timed out".to_string()
    } else if e.is_connect() {
        "the connection failed".to_string()
    } else {
        "the request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// A vendor's `Retry-After` in seconds.
pub fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    h.get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// A vendor's error message from its body: a JSON string, an object with `message`,
/// `error_description`, `error` or `title`, or plain text.
pub fn message_of(body: &str) -> String {
    let v: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let found = match &v {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Object(m)) => {
            ["message", "error_description", "error", "title", "errors"]
                .iter()
                .find_map(|k| m.get(*k).and_then(text_of))
        }
        _ => None,
    };
    // A vendor's message is stored (outbox errors, logs): no NUL, which PostgreSQL refuses.
    found
        .unwrap_or_else(|| body.trim().chars().take(300).collect())
        .trim()
        .replace('\0', "")
}

/// A message field's text: a string, or a list of strings (Syncro's
/// `{"message": ["Subject can't be blank"]}`, Autotask's `{"errors": [...]}`) joined.
fn text_of(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(items) => {
            let parts: Vec<&str> = items.iter().filter_map(|x| x.as_str()).collect();
            (!parts.is_empty()).then(|| parts.join("; "))
        }
        _ => None,
    }
}

/// Equal, compared in constant time for equal lengths (webhook secrets).
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Percent-encodes a query or form value (RFC 3986 unreserved characters stay).
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A process-wide registry of values shared by key (one vendor account's token, rate
/// budget or usage reading, whichever client of it asks).
pub type Registry<T> = OnceLock<Mutex<HashMap<String, Arc<T>>>>;

/// The value of `key` in `registry`, made on first use.
pub fn shared_by_key<T: Default>(registry: &'static Registry<T>, key: String) -> Arc<T> {
    let all = registry.get_or_init(Default::default);
    let mut all = all.lock().unwrap_or_else(|p| p.into_inner());
    all.entry(key).or_default().clone()
}

/// Values shared by key across the process for `ttl` (Autotask zones and picklists: ticket
/// writers need not read them again for every webhook delivery or outbox drain).
#[derive(Debug)]
pub struct Expiring<T> {
    ttl: Duration,
    map: Mutex<HashMap<String, (Instant, T)>>,
}

impl<T: Clone> Expiring<T> {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The value of `key` if it was put less than `ttl` ago.
    pub fn get(&self, key: &str) -> Option<T> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, v)| v.clone())
    }

    pub fn put(&self, key: String, value: T) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (Instant::now(), value));
    }
}

/// A vendor limit of `requests` per rolling `window` (Halo: about 300 per 5 minutes per
/// tenant). `acquire` waits until sending one more stays within it, so a long import is
/// spread over the window instead of running into 429s.
#[derive(Debug)]
pub struct RollingWindow {
    requests: usize,
    window: Duration,
    /// From this many requests in the window on, the rest are spaced out evenly over the
    /// time until the oldest ages out (`requests` when not paced).
    pace_from: usize,
    sent: Mutex<VecDeque<Instant>>,
}

impl RollingWindow {
    pub fn new(requests: usize, window: Duration) -> Self {
        Self {
            requests: requests.max(1),
            window,
            pace_from: requests.max(1),
            sent: Mutex::new(VecDeque::new()),
        }
    }

    /// A window of at most `requests` that starts spacing requests out once `pace_from`
    /// of them are in it (Datto RMM slows every answer down past 90 % of its limit, so a
    /// client should arrive there slowly, if at all).
    pub fn paced(requests: usize, window: Duration, pace_from: usize) -> Self {
        let mut w = Self::new(requests, window);
        w.pace_from = pace_from.clamp(1, w.requests);
        w
    }

    /// [`paced`](Self::paced), shared by every client of one vendor account (`key`).
    pub fn shared_paced(
        key: &str,
        requests: usize,
        window: Duration,
        pace_from: usize,
    ) -> Arc<RollingWindow> {
        static ALL: OnceLock<Mutex<HashMap<String, Arc<RollingWindow>>>> = OnceLock::new();
        let all = ALL.get_or_init(|| Mutex::new(HashMap::new()));
        let mut all = all.lock().unwrap_or_else(|p| p.into_inner());
        all.entry(format!(
            "{key}|{requests}|{}|{pace_from}",
            window.as_millis()
        ))
        .or_insert_with(|| Arc::new(RollingWindow::paced(requests, window, pace_from)))
        .clone()
    }

    /// Requests in the window now (for tests and logs).
    pub fn in_window(&self) -> usize {
        let span = self.window + self.margin();
        let sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        sent.iter()
            .filter(|t| now.duration_since(**t) < span)
            .count()
    }

    /// The limiter shared by every client of one vendor account (`key`), so two syncs
    /// of one tenant, or a sync and a connection test, count against one budget.
    pub fn shared(key: &str, requests: usize, window: Duration) -> Arc<RollingWindow> {
        static ALL: OnceLock<Mutex<HashMap<String, Arc<RollingWindow>>>> = OnceLock::new();
        let all = ALL.get_or_init(|| Mutex::new(HashMap::new()));
        let mut all = all.lock().unwrap_or_else(|p| p.into_inner());
        all.entry(format!("{key}|{requests}|{}", window.as_millis()))
            .or_insert_with(|| Arc::new(RollingWindow::new(requests, window)))
            .clone()
    }

    /// How much longer than the vendor's window this side waits: the vendor stamps a
    /// request when it arrives, after a transit this side cannot see, so a slot counted
    /// free here to the millisecond can still be taken there (2 % of the window, at most
    /// a second).
    fn margin(&self) -> Duration {
        (self.window / 50).min(Duration::from_secs(1))
    }

    /// Waits for a free slot and takes it.
    pub async fn acquire(&self) {
        let span = self.window + self.margin();
        loop {
            let wait = {
                let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                while sent.front().is_some_and(|t| now.duration_since(*t) >= span) {
                    sent.pop_front();
                }
                if sent.len() >= self.requests {
                    sent.front().map(|t| *t + span - now).unwrap_or_default()
                } else if sent.len() < self.pace_from {
                    sent.push_back(now);
                    return;
                } else {
                    // Paced: the slots left are spread over the time until the oldest
                    // request ages out, each at least that share after the last one.
                    let left = (self.requests - sent.len()) as u32;
                    let until_free = sent
                        .front()
                        .map(|t| (*t + span).saturating_duration_since(now))
                        .unwrap_or_default();
                    let gap = until_free / (left + 1);
                    let next = sent.back().map(|t| *t + gap).unwrap_or(now);
                    if next <= now {
                        sent.push_back(now);
                        return;
                    }
                    next - now
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// The vendor's own count of requests in the window (every client of the account,
    /// this side's included, e.g. Datto's `accountCount`): those this side did not send
    /// are stamped now, so they leave room only once a whole window has passed.
    pub fn observe_account_count(&self, count: usize) {
        let span = self.window + self.margin();
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        while sent.front().is_some_and(|t| now.duration_since(*t) >= span) {
            sent.pop_front();
        }
        let others = count.saturating_sub(sent.len()).min(self.requests);
        sent.extend(std::iter::repeat_n(now, others));
    }

    /// After a 429 the vendor's count is ahead of ours: treat the window as full for `d`.
    pub fn hold(&self, d: Duration) {
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        let until = Instant::now() + d;
        let stamp = until
            .checked_sub(self.window + self.margin())
            .unwrap_or_else(Instant::now);
        sent.clear();
        sent.extend(std::iter::repeat_n(stamp, self.requests));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_its_bound_and_varies() {
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
        let d = Duration::from_millis(400);
        let draws: Vec<Duration> = (0..50).map(|_| jitter(d)).collect();
        assert!(draws.iter().all(|j| *j <= d));
        assert!(draws.iter().any(|j| *j != draws[0]), "random, not constant");
    }

    #[test]
    fn vendor_messages_in_lists_are_joined() {
        assert_eq!(
            message_of(
                r#"{"success":false,"message":["Body can't be blank","Subject can't be blank"]}"#
            ),
            "Body can't be blank; Subject can't be blank"
        );
        assert_eq!(
            message_of(r#"{"errors":["Missing Required Field: title."]}"#),
            "Missing Required Field: title."
        );
        assert_eq!(
            message_of(r#"{"error":"Customer required field"}"#),
            "Customer required field"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_spreads_requests_over_time() {
        let w = RollingWindow::new(3, Duration::from_secs(10));
        let start = Instant::now();
        for _ in 0..3 {
            w.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        w.acquire().await;
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(10_200),
            "the 4th waits for the 1st to age out, plus the 2 % margin"
        );
        w.hold(Duration::from_secs(30));
        let held = Instant::now();
        w.acquire().await;
        assert_eq!(held.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_paced_window_spaces_requests_out_and_never_exceeds_its_limit() {
        let w = RollingWindow::paced(10, Duration::from_secs(10), 5);
        let start = Instant::now();
        let mut stamps = Vec::new();
        for _ in 0..40 {
            w.acquire().await;
            stamps.push(start.elapsed());
        }
        assert!(
            stamps[..5].iter().all(|t| t.is_zero()),
            "below pace_from nothing waits: {stamps:?}"
        );
        assert!(stamps[5] > Duration::ZERO, "the 6th is spaced: {stamps:?}");
        for (i, t) in stamps.iter().enumerate() {
            let within = stamps[i..]
                .iter()
                .take_while(|u| **u < *t + Duration::from_secs(10))
                .count();
            assert!(within <= 10, "{within} requests within 10 s from {t:?}");
        }
    }

    #[test]
    fn waits_follow_retry_after_backoff_floor_and_cap() {
        let p = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(60),
            budget: 10,
            timeout: Duration::from_secs(1),
        };
        assert_eq!(p.wait(1, None, Duration::ZERO), Duration::from_millis(100));
        assert_eq!(p.wait(3, None, Duration::ZERO), Duration::from_millis(400));
        assert_eq!(
            p.wait(1, Some(Duration::from_secs(7)), Duration::ZERO),
            Duration::from_secs(7)
        );
        assert_eq!(
            p.wait(1, None, Duration::from_secs(30)),
            Duration::from_secs(30)
        );
        assert_eq!(
            p.wait(1, Some(Duration::from_secs(600)), Duration::ZERO),
            Duration::from_secs(60)
        );
    }
}
