//! Autotask ticket webhooks.
//!
//! * **Registration** through the API: `POST /V1.0/TicketWebhooks` (URL, deactivation URL,
//!   a per-integration `secretKey` of at most 64 characters, create / update / delete
//!   events), then the ticket fields whose change fires an update
//!   (`POST /TicketWebhooks/{id}/Fields`, field ids from the `fieldID` picklist of
//!   `TicketWebhookFields/entityInformation/fields` **[unverified]**), and the API user
//!   itself in `POST /TicketWebhooks/{id}/ExcludedResources`, so mspbridge's own writes are
//!   never called back (trap 13). A webhook already pointing at the URL is updated in place
//!   (`PATCH /TicketWebhooks` with its id) and only missing fields and exclusions are added:
//!   saving the options again never adds a second webhook.
//! * **Deliveries** carry `X-Hook-Signature: sha1=<base64(HMAC-SHA1(secretKey, raw body))>`,
//!   checked in constant time against the raw bytes; the body (`Action`, `EntityType`,
//!   `Id`, `Fields`, …) is only a hint: the ticket is read again from Autotask. The call to
//!   the deactivation URL is checked the same way ([`verify_signature`]).

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use sha1::Sha1;

use super::client::{AutotaskClient, AutotaskError};
use super::wire::{FieldsInfo, ItemId};

pub const SIGNATURE_HEADER: &str = "x-hook-signature";

/// The ticket fields whose change calls the webhook, each with the names Autotask may
/// label it with in the `fieldID` picklist.
pub const FIELDS: [&[&str]; 6] = [
    &["Status"],
    &["Priority"],
    &["Title"],
    &["Queue", "Queue ID", "queueID"],
    &[
        "Assigned Resource",
        "Primary Resource",
        "assignedResourceID",
    ],
    &["Last Activity Date", "lastActivityDate"],
];

#[derive(Deserialize)]
struct Row {
    id: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FieldRow {
    #[serde(rename = "fieldID")]
    field_id: i64,
}

#[derive(Deserialize)]
struct ExcludedRow {
    #[serde(rename = "resourceID")]
    resource_id: i64,
}

fn folded(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_lowercase()
}

/// What registration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub id: i64,
    /// Fields subscribed (by their picklist labels).
    pub fields: Vec<String>,
    /// Whether the API user is excluded (no echo of mspbridge's own writes).
    pub api_user_excluded: bool,
}

/// Creates or updates the ticket webhook posting to `url`, signed with `secret`.
pub async fn register(
    client: &AutotaskClient,
    url: &str,
    deactivation_url: &str,
    secret: &str,
) -> Result<Registered, AutotaskError> {
    if secret.len() > 64 {
        return Err(AutotaskError::Refused(
            "the webhook secret is longer than Autotask's 64 characters".into(),
        ));
    }
    let existing: Vec<Row> = client
        .query_all(
            "TicketWebhooks",
            json!([{ "op": "eq", "field": "webhookUrl", "value": url }]),
        )
        .await?;
    let mut hook = json!({
        "name": "mspbridge tickets",
        "webhookUrl": url,
        "deactivationUrl": deactivation_url,
        "secretKey": secret,
        "isActive": true,
        "isSubscribedToCreateEvents": true,
        "isSubscribedToUpdateEvents": true,
        "isSubscribedToDeleteEvents": true,
        "sendThresholdExceededNotification": false,
    });
    let id = match existing.first() {
        Some(found) => {
            hook["id"] = json!(found.id);
            let _: ItemId = client.write(Method::PATCH, "TicketWebhooks", &hook).await?;
            found.id
        }
        None => {
            let created: ItemId = client.write(Method::POST, "TicketWebhooks", &hook).await?;
            created.item_id
        }
    };

    let info: FieldsInfo = client
        .get("TicketWebhookFields/entityInformation/fields")
        .await?;
    let offered = info.picklist_values("fieldID");
    let wanted: Vec<(i64, String)> = FIELDS
        .iter()
        .filter_map(|names| {
            offered.iter().find(|p| {
                names
                    .iter()
                    .any(|n| folded(n) == folded(&p.label) || folded(n) == folded(&p.value))
            })
        })
        .filter_map(|p| p.value.parse().ok().map(|v| (v, p.label.clone())))
        .collect();
    if wanted.is_empty() {
        return Err(AutotaskError::Refused(
            "Autotask offers none of the ticket fields a webhook subscribes to (Status, Priority, Title, Queue, Assigned Resource, Last Activity Date)".into(),
        ));
    }
    let have: Vec<FieldRow> = client
        .query_all(
            "TicketWebhookFields",
            json!([{ "op": "eq", "field": "webhookID", "value": id }]),
        )
        .await?;
    for (field, _) in &wanted {
        if have.iter().any(|h| h.field_id == *field) {
            continue;
        }
        let _: ItemId = client
            .write(
                Method::POST,
                &format!("TicketWebhooks/{id}/Fields"),
                &json!({
                    "webhookID": id,
                    "fieldID": field,
                    "isSubscribedField": true,
                    "isDisplayAlwaysField": false,
                }),
            )
            .await?;
    }

    // The API user's own changes are not called back.
    let user = client.username().trim().to_string();
    let me: Vec<Row> = client
        .query_all(
            "Resources",
            json!([{ "op": "or", "items": [
                { "op": "eq", "field": "userName", "value": user },
                { "op": "eq", "field": "email", "value": user },
            ]}]),
        )
        .await?;
    let api_user_excluded = match me.first() {
        None => {
            tracing::warn!(
                user,
                "the Autotask API user was not found among the resources; its own changes will be called back (and recognised as echoes)"
            );
            false
        }
        Some(me) => {
            let excluded: Vec<ExcludedRow> = client
                .query_all(
                    "TicketWebhookExcludedResources",
                    json!([{ "op": "eq", "field": "webhookID", "value": id }]),
                )
                .await?;
            if !excluded.iter().any(|e| e.resource_id == me.id) {
                let _: ItemId = client
                    .write(
                        Method::POST,
                        &format!("TicketWebhooks/{id}/ExcludedResources"),
                        &json!({ "webhookID": id, "resourceID": me.id }),
                    )
                    .await?;
            }
            true
        }
    };
    Ok(Registered {
        id,
        fields: wanted.into_iter().map(|(_, l)| l).collect(),
        api_user_excluded,
    })
}

/// `sha1=` and the base64 HMAC-SHA1 of `body` with `secret`, as Autotask signs.
pub fn sign(secret: &str, body: &[u8]) -> String {
    match <hmac::Hmac<Sha1> as KeyInit>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(body);
            format!(
                "sha1={}",
                base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
            )
        }
        Err(_) => String::new(),
    }
}

/// What a delivery says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// `Create`, `Update` or `Delete`.
    pub action: String,
    /// `Ticket` for ticket webhooks.
    pub entity: String,
    pub id: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("no X-Hook-Signature header")]
    NoSignature,
    #[error("the signature does not match")]
    BadSignature,
    #[error("the body is not an Autotask webhook delivery: {0}")]
    Body(String),
}

/// Checks `signature` (the `X-Hook-Signature` header) over the raw `body` with `secret`
/// (constant time) and reads what the delivery is about.
pub fn verify(signature: Option<&str>, body: &[u8], secret: &str) -> Result<Delivery, VerifyError> {
    verify_signature(signature, body, secret)?;
    let v: Value = serde_json::from_slice(body).map_err(|e| VerifyError::Body(e.to_string()))?;
    delivery(&v)
}

/// Checks only the signature (constant time): for Autotask's calls that are not
/// deliveries, such as the deactivation notice.
pub fn verify_signature(
    signature: Option<&str>,
    body: &[u8],
    secret: &str,
) -> Result<(), VerifyError> {
    let given = signature
        .map(str::trim)
        .and_then(|s| s.strip_prefix("sha1="))
        .ok_or(VerifyError::NoSignature)?;
    let given = base64::engine::general_purpose::STANDARD
        .decode(given)
        .map_err(|_| VerifyError::BadSignature)?;
    let mut mac = <hmac::Hmac<Sha1> as KeyInit>::new_from_slice(secret.as_bytes())
        .map_err(|_| VerifyError::BadSignature)?;
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| VerifyError::BadSignature)?;
    Ok(())
}

fn delivery(v: &Value) -> Result<Delivery, VerifyError> {
    let field = |names: &[&str]| {
        v.as_object().and_then(|o| {
            o.iter()
                .find(|(k, _)| names.iter().any(|n| k.eq_ignore_ascii_case(n)))
                .map(|(_, v)| v.clone())
        })
    };
    let id = field(&["Id", "EntityId"])
        .and_then(|v| v.as_i64())
        .filter(|id| *id > 0)
        .ok_or_else(|| VerifyError::Body("no Id".into()))?;
    let text = |names: &[&str], or: &str| {
        field(names)
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| or.to_string())
    };
    Ok(Delivery {
        action: text(&["Action"], "Update"),
        entity: text(&["EntityType"], "Ticket"),
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bodies_signed_with_the_integrations_secret_pass() {
        let body = br#"{"Action":"Update","Guid":"5d1c","EntityType":"Ticket","Id":7031,"Fields":{"status":8},"SequenceNumber":4}"#;
        let sig = sign("k3y", body);
        assert!(sig.starts_with("sha1="), "{sig}");
        let ok = verify(Some(&sig), body, "k3y").unwrap();
        assert_eq!(
            (ok.action.as_str(), ok.entity.as_str(), ok.id),
            ("Update", "Ticket", 7031)
        );
        assert_eq!(
            verify(Some(&sig), body, "k3z"),
            Err(VerifyError::BadSignature)
        );
        let mut tampered = body.to_vec();
        tampered[30] ^= 1;
        assert_eq!(
            verify(Some(&sig), &tampered, "k3y"),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(verify(None, body, "k3y"), Err(VerifyError::NoSignature));
        assert_eq!(
            verify(Some(sig.trim_start_matches("sha1=")), body, "k3y"),
            Err(VerifyError::NoSignature)
        );
        assert_eq!(
            verify(Some("sha1=???"), body, "k3y"),
            Err(VerifyError::BadSignature)
        );
        let no_id = br#"{"Action":"Update","EntityType":"Ticket"}"#;
        assert!(matches!(
            verify(Some(&sign("k3y", no_id)), no_id, "k3y"),
            Err(VerifyError::Body(_))
        ));
        // A known HMAC-SHA1 vector (RFC 2202 case 2), base64.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha1=7/zfauXrL6LSdBbV8YTfnCWafHk="
        );
    }
}
