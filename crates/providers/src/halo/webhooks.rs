//! Halo webhooks. Halo signs nothing it sends (no HMAC is documented for outbound
//! webhooks); it authenticates to the receiver with Basic credentials or a header. So
//! mspbridge registers each integration's webhook with Basic authentication, user
//! [`USERNAME`] and a per-integration secret as password, checks it on every delivery, and
//! treats the payload only as a hint: the ticket is read again from Halo.
//!
//! Registration goes through `POST /api/Webhook` (an array upsert like every Halo write):
//! a webhook already pointing at the URL is updated in place (with its `id`), so saving
//! the options again never adds a second one.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::client::{HaloClient, HaloError};

/// The Basic user name mspbridge's webhooks authenticate with.
pub const USERNAME: &str = "mspbridge";

/// Halo's `authentication_type` for Basic authentication.
pub const BASIC_AUTH: i64 = 1;

/// The notifications the webhook subscribes to (Halo's notification names).
pub const EVENTS: [&str; 3] = ["New Ticket Logged", "Ticket Updated", "Action Added"];

/// A registered webhook as `GET /api/Webhook` lists it. Its `id` is a uuid (schema
/// `Webhook`: `string`, format `uuid`); a number from an older Halo is read as text too.
#[derive(Deserialize)]
struct Registered {
    #[serde(deserialize_with = "id_text")]
    id: String,
    #[serde(default)]
    url: Option<String>,
}

fn id_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "a webhook id is a uuid, not {other}"
        ))),
    }
}

/// Creates or updates the webhook posting ticket events to `url`; Halo's id for it (a
/// uuid). The schema types `method` as an integer whose values Halo does not document, so
/// it is not sent: Halo's webhooks post by default [unverified against a live tenant].
pub async fn register(client: &HaloClient, url: &str, secret: &str) -> Result<String, HaloError> {
    let existing: Vec<Registered> = client.get("/Webhook", &[]).await?;
    let mut hook = json!({
        "name": "mspbridge tickets",
        "url": url,
        "content_type": "application/json",
        "authentication_type": BASIC_AUTH,
        "basic_username": USERNAME,
        "basic_password": secret,
        "events": EVENTS.iter().map(|e| json!({"name": e})).collect::<Vec<_>>(),
        "active": true,
    });
    if let Some(found) = existing.iter().find(|w| w.url.as_deref() == Some(url)) {
        hook["id"] = json!(found.id);
    }
    let written: Registered = client.post_one("/Webhook", hook).await?;
    Ok(written.id)
}

/// What a delivery says: the event and the ticket it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub event: String,
    pub ticket_id: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("no Basic credentials")]
    NoCredentials,
    #[error("wrong webhook credentials")]
    WrongCredentials,
    #[error("the body is not a Halo ticket event: {0}")]
    Body(String),
}

/// Checks the `Authorization` header against `secret` (constant time) and reads the
/// ticket id from the body (`ticket.id`, or `ticket_id` in custom payloads).
pub fn verify(
    authorization: Option<&str>,
    body: &[u8],
    secret: &str,
) -> Result<Delivery, VerifyError> {
    let encoded = authorization
        .and_then(|a| a.strip_prefix("Basic "))
        .ok_or(VerifyError::NoCredentials)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| VerifyError::NoCredentials)?;
    let expected = format!("{USERNAME}:{secret}");
    if !crate::http::same_bytes(&decoded, expected.as_bytes()) {
        return Err(VerifyError::WrongCredentials);
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| VerifyError::Body(e.to_string()))?;
    let ticket_id = v
        .pointer("/ticket/id")
        .or_else(|| v.get("ticket_id"))
        .and_then(Value::as_i64)
        .filter(|id| *id > 0)
        .ok_or_else(|| VerifyError::Body("no ticket id".into()))?;
    Ok(Delivery {
        event: v
            .get("event")
            .and_then(Value::as_str)
            .unwrap_or("ticket event")
            .to_string(),
        ticket_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
    }

    #[test]
    fn only_the_integrations_credentials_and_a_ticket_pass() {
        let body = br#"{"event":"Ticket Updated","ticket":{"id":1042}}"#;
        let ok = verify(Some(&basic(USERNAME, "s3")), body, "s3").unwrap();
        assert_eq!((ok.event.as_str(), ok.ticket_id), ("Ticket Updated", 1042));
        assert_eq!(
            verify(Some(&basic(USERNAME, "s4")), body, "s3"),
            Err(VerifyError::WrongCredentials)
        );
        assert_eq!(
            verify(Some(&basic("admin", "s3")), body, "s3"),
            Err(VerifyError::WrongCredentials)
        );
        assert_eq!(verify(None, body, "s3"), Err(VerifyError::NoCredentials));
        assert_eq!(
            verify(Some("Bearer s3"), body, "s3"),
            Err(VerifyError::NoCredentials)
        );
        assert!(matches!(
            verify(Some(&basic(USERNAME, "s3")), b"{\"ticket\":{}}", "s3"),
            Err(VerifyError::Body(_))
        ));
        assert_eq!(
            verify(Some(&basic(USERNAME, "s3")), br#"{"ticket_id":7}"#, "s3")
                .unwrap()
                .ticket_id,
            7
        );
    }
}
