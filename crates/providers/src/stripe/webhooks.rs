//! Stripe webhook signatures: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`, each
//! `v1` the HMAC-SHA256 of `"{t}.{raw body}"` under an endpoint secret (`whsec_…`).
//! A delivery is accepted when any `v1` matches any of the integration's secrets
//! (constant-time; several while a rolled secret is still valid) and `t` is within the
//! tolerance of now; `v0` and other schemes are ignored. Verification runs on the raw
//! bytes, before any parsing.

use hmac::{KeyInit, Mac};
use sha2::Sha256;

/// Stripe's libraries' default.
pub const TOLERANCE_SECS: i64 = 300;

/// The events the portal listens to: registered with the endpoint, or ticked by the
/// admin where this deployment has no public URL.
pub const EVENTS: &[&str] = &[
    "customer.created",
    "customer.updated",
    "customer.deleted",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.created",
    "invoice.finalized",
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.payment_succeeded",
    "invoice.updated",
    "invoice.voided",
    "invoice.marked_uncollectible",
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.processing",
    "payment_intent.canceled",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Stripe-Signature header")]
    Missing,
    #[error("the Stripe-Signature header has no timestamp or no v1 signature")]
    Malformed,
    #[error("the signature is {0} s away from now (more than {TOLERANCE_SECS} s)")]
    Stale(i64),
    #[error("no v1 signature matches the endpoint's signing secret")]
    Mismatch,
    #[error("no webhook signing secret is stored for this integration")]
    NoSecret,
}

fn mac(secret: &str, t: i64, body: &[u8]) -> Option<Vec<u8>> {
    let mut m = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).ok()?;
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    Some(m.finalize().into_bytes().to_vec())
}

/// The `v1` value for `body` signed at `t` (Stripe's side; tests and the sandbox).
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    mac(secret, t, body)
        .unwrap_or_default()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The secrets stored in the integration's field: one or more `whsec_…` values separated
/// by spaces, commas or lines (the old one kept while a rolled secret is valid).
pub fn secrets_of(stored: &str) -> Vec<&str> {
    stored
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|s| !s.is_empty())
        .collect()
}

/// Checks a delivery; `now` in Unix seconds.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secrets: &[&str],
    now: i64,
    tolerance: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    if secrets.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.trim().parse::<i64>().ok(),
            Some(("v1", v)) => {
                if let Some(b) = unhex(v.trim()) {
                    v1.push(b);
                }
            }
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if v1.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let age = now - t;
    if age.abs() > tolerance {
        return Err(SignatureError::Stale(age));
    }
    let mut ok = false;
    for secret in secrets {
        let Some(expected) = mac(secret, t, body) else {
            continue;
        };
        for got in &v1 {
            // Constant time per comparison; every pair is compared.
            ok |= crate::http::same_bytes(&expected, got);
        }
    }
    if ok {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_1","type":"invoice.paid"}"#;

    #[test]
    fn a_valid_signature_is_accepted_and_a_tampered_body_refused() {
        let t = 1_700_000_000;
        let header = format!("t={t},v1={},v0=deadbeef", sign(SECRET, t, BODY));
        assert_eq!(verify(Some(&header), BODY, &[SECRET], t + 10, 300), Ok(()));
        let tampered = br#"{"id":"evt_1","type":"invoice.paid" }"#;
        assert_eq!(
            verify(Some(&header), tampered, &[SECRET], t, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some(&header), BODY, &["whsec_other"], t, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn stale_unsigned_and_malformed_deliveries_are_refused() {
        let t = 1_700_000_000;
        let header = format!("t={t},v1={}", sign(SECRET, t, BODY));
        assert_eq!(
            verify(Some(&header), BODY, &[SECRET], t + 301, 300),
            Err(SignatureError::Stale(301))
        );
        assert_eq!(
            verify(Some(&header), BODY, &[SECRET], t - 301, 300),
            Err(SignatureError::Stale(-301))
        );
        assert_eq!(
            verify(None, BODY, &[SECRET], t, 300),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(Some("v1=abcd"), BODY, &[SECRET], t, 300),
            Err(SignatureError::Malformed)
        );
        let v0_only = format!("t={t},v0={}", sign(SECRET, t, BODY));
        assert_eq!(
            verify(Some(&v0_only), BODY, &[SECRET], t, 300),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(Some(&header), BODY, &[], t, 300),
            Err(SignatureError::NoSecret)
        );
    }

    #[test]
    fn while_a_secret_is_rolled_either_secret_verifies() {
        let t = 1_700_000_000;
        let old = "whsec_old";
        let new = "whsec_new";
        let header = format!("t={t},v1={},v1={}", sign(new, t, BODY), sign(old, t, BODY));
        assert_eq!(verify(Some(&header), BODY, &[old], t, 300), Ok(()));
        assert_eq!(verify(Some(&header), BODY, &[new], t, 300), Ok(()));
        assert_eq!(
            secrets_of("whsec_a,\nwhsec_b  whsec_c"),
            vec!["whsec_a", "whsec_b", "whsec_c"]
        );
        // A header signed only with the new secret, checked against both stored.
        let header = format!("t={t},v1={}", sign(new, t, BODY));
        assert_eq!(verify(Some(&header), BODY, &[old, new], t, 300), Ok(()));
    }
}
