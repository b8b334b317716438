//! Pieces every vendor sandbox needs besides its routes: a vendor-side rate limit over a
//! rolling window, and raw JSON edits that let tests send records a connector cannot read.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A vendor's limit of `requests` per rolling window, as the vendor counts it: a request
/// is stamped when it arrives.
#[derive(Debug)]
pub struct VendorRateLimit {
    limit: Mutex<(usize, Duration)>,
    sent: Mutex<VecDeque<Instant>>,
}

impl VendorRateLimit {
    pub fn new(requests: usize, window: Duration) -> Self {
        Self {
            limit: Mutex::new((requests, window)),
            sent: Mutex::new(VecDeque::new()),
        }
    }

    pub fn set(&self, requests: usize, window: Duration) {
        *lock(&self.limit) = (requests, window);
    }

    /// Counts a request that just arrived; `false` when it is over the limit (a 429).
    pub fn admit(&self) -> bool {
        let (limit, window) = *lock(&self.limit);
        let mut sent = lock(&self.sent);
        let now = Instant::now();
        while sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            sent.pop_front();
        }
        if sent.len() >= limit {
            return false;
        }
        sent.push_back(now);
        true
    }
}

/// The `every` of a sandbox's touch endpoint (`/_sandbox/touch-…?every=n`): every n-th
/// record changes; 100 (1 %) when missing or not a positive number.
pub fn touch_every(q: &std::collections::HashMap<String, String>) -> usize {
    q.get("every")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(100)
}

/// One raw edit: (collection, record id, field, value), a `None` value leaving the field
/// out.
type RawEdit = (String, i64, String, Option<serde_json::Value>);

/// Raw JSON edits on top of a sandbox's typed data.
#[derive(Debug, Default)]
pub struct RawEdits(Mutex<Vec<RawEdit>>);

impl RawEdits {
    /// Serves `field` of record `id` in `collection` as `value` from now on.
    pub fn push(&self, collection: &str, id: i64, field: &str, value: serde_json::Value) {
        lock(&self.0).push((collection.to_string(), id, field.to_string(), Some(value)));
    }

    /// Leaves `field` out of record `id` in `collection` from now on (as a vendor that
    /// does not send it).
    pub fn remove(&self, collection: &str, id: i64, field: &str) {
        lock(&self.0).push((collection.to_string(), id, field.to_string(), None));
    }

    /// Applies the edits of `collection` to `rows` (a JSON array of records with `id`).
    pub fn apply(&self, collection: &str, rows: &mut [serde_json::Value]) {
        let edits = lock(&self.0);
        for row in rows.iter_mut() {
            let id = row.get("id").and_then(|v| v.as_i64());
            for (c, eid, field, value) in edits.iter() {
                if c == collection
                    && Some(*eid) == id
                    && let serde_json::Value::Object(o) = row
                {
                    match value {
                        Some(v) => o.insert(field.clone(), v.clone()),
                        None => o.remove(field),
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_refuses_over_the_window_and_edits_hit_only_their_record() {
        let l = VendorRateLimit::new(2, Duration::from_secs(60));
        assert!(l.admit() && l.admit());
        assert!(!l.admit());
        l.set(3, Duration::from_secs(60));
        assert!(l.admit());

        let e = RawEdits::default();
        e.push("users", 2, "name", serde_json::json!(42));
        let mut rows = vec![
            serde_json::json!({"id": 1, "name": "a"}),
            serde_json::json!({"id": 2, "name": "b"}),
        ];
        e.apply("clients", &mut rows);
        assert_eq!(rows[1]["name"], "b");
        e.apply("users", &mut rows);
        assert_eq!(
            (rows[0]["name"].clone(), rows[1]["name"].clone()),
            (serde_json::json!("a"), serde_json::json!(42))
        );
        e.remove("users", 1, "name");
        e.apply("users", &mut rows);
        assert_eq!(rows[0], serde_json::json!({"id": 1}));
    }
}
