//! Syncro notifications. Syncro has no API to register webhooks and signs nothing it
//! sends: an admin adds a webhook to a notification set in Syncro's Notification Center,
//! pointing at a URL that carries a per-integration secret token
//! (`/webhooks/syncro/{integration_id}/{token}`). The token is checked in constant time and
//! the payload is only a hint: the ticket is read again from Syncro.
//!
//! The payload's shape is not documented in Syncro's API reference **[unverified]**: the
//! ticket id is taken from `attributes.ticket_id` (comment events), `attributes.id`,
//! `ticket.id`, `ticket_id` or `id`, the first present.

use serde_json::Value;

/// The notification events to deliver to mspbridge (Syncro's names in the Notification
/// Center), as shown to the admin.
pub const EVENTS: [&str; 4] = [
    "Ticket - Was created",
    "Ticket - Status was changed",
    "Ticket - Customer replied",
    "Ticket - Comment was added",
];

/// What a delivery says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub event: String,
    pub ticket_id: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("wrong webhook token")]
    WrongToken,
    #[error("the body is not a Syncro ticket notification: {0}")]
    Body(String),
}

/// Checks the URL's `token` against `secret` (constant time) and reads the ticket id.
pub fn verify(token: &str, body: &[u8], secret: &str) -> Result<Delivery, VerifyError> {
    if !crate::http::same_bytes(token.as_bytes(), secret.as_bytes()) {
        return Err(VerifyError::WrongToken);
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| VerifyError::Body(e.to_string()))?;
    let ticket_id = [
        "/attributes/ticket_id",
        "/attributes/id",
        "/ticket/id",
        "/ticket_id",
        "/id",
    ]
    .iter()
    .find_map(|p| v.pointer(p).and_then(Value::as_i64))
    .filter(|id| *id > 0)
    .ok_or_else(|| VerifyError::Body("no ticket id".into()))?;
    let event = ["/event", "/type", "/attributes/event"]
        .iter()
        .find_map(|p| v.pointer(p).and_then(Value::as_str))
        .unwrap_or("ticket notification")
        .to_string();
    Ok(Delivery { event, ticket_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_integrations_token_and_a_ticket_pass() {
        let body = br#"{"event":"Ticket - Status was changed","attributes":{"id":41,"status":"In Progress"}}"#;
        let ok = verify("t0k", body, "t0k").unwrap();
        assert_eq!(
            (ok.event.as_str(), ok.ticket_id),
            ("Ticket - Status was changed", 41)
        );
        assert_eq!(verify("t0j", body, "t0k"), Err(VerifyError::WrongToken));
        assert_eq!(verify("", body, "t0k"), Err(VerifyError::WrongToken));
        assert_eq!(verify("t0k2", body, "t0k"), Err(VerifyError::WrongToken));
        let comment = br#"{"attributes":{"id":900,"ticket_id":41,"body":"hi"}}"#;
        assert_eq!(verify("t0k", comment, "t0k").unwrap().ticket_id, 41);
        assert_eq!(
            verify("t0k", br#"{"ticket_id":7}"#, "t0k")
                .unwrap()
                .ticket_id,
            7
        );
        assert!(matches!(
            verify("t0k", br#"{"attributes":{}}"#, "t0k"),
            Err(VerifyError::Body(_))
        ));
        assert!(matches!(
            verify("t0k", b"not json", "t0k"),
            Err(VerifyError::Body(_))
        ));
    }
}
