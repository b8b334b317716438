//! The integration lifecycle (spec 2.2, 2.3 PSA pattern): connect with credentials
//! (validated, then tested; a connection that does not authenticate is not saved),
//! test, rename, update credentials (a masked secret keeps its stored value),
//! disconnect (credentials removed, synced data kept), reconnect and delete.
//! API and UI handlers both call these functions.

use std::collections::BTreeMap;

use mspbridge_domain::catalogue::{Availability, ProviderDescriptor, ProviderKind};
use mspbridge_domain::integration::{
    ConnectionOutcome, Integration, IntegrationStatus, TestReport,
};
use mspbridge_domain::sync::Vocabulary;
use mspbridge_domain::validate::{
    CredentialValue, Credentials, SECRET_MASK, parse_name, validate_credentials,
};
use mspbridge_domain::{IntegrationId, SecretString, TenantId};
use mspbridge_providers::connectwise::client::RetryPolicy;
use mspbridge_providers::source::{PsaSource, SourceError};
use mspbridge_store::{CredentialUpdate, NewIntegration};
use serde::Serialize;

use crate::AppState;
use crate::error::ApiError;

/// An integration as the API and UI show it: secrets masked, never returned.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IntegrationView {
    pub id: IntegrationId,
    pub provider: ProviderKind,
    pub provider_name: &'static str,
    /// The nickname, or the provider's name when none is set.
    pub name: String,
    pub nickname: Option<String>,
    pub status: IntegrationStatus,
    pub status_label: &'static str,
    pub last_error: Option<String>,
    pub fix_hint: Option<String>,
    /// Every credential field: non-secret values in clear, stored secrets as the mask.
    pub credentials: BTreeMap<String, String>,
    pub last_test: Option<TestReport>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl IntegrationView {
    pub fn new(i: &Integration, stored_secret_fields: &[String]) -> Self {
        let d = i.provider.descriptor();
        let credentials = d
            .fields
            .iter()
            .filter_map(|f| {
                if f.secret {
                    stored_secret_fields
                        .contains(&f.name.to_string())
                        .then(|| (f.name.to_string(), SECRET_MASK.to_string()))
                } else {
                    i.settings
                        .get(f.name)
                        .and_then(|v| v.as_str())
                        .map(|v| (f.name.to_string(), v.to_string()))
                }
            })
            .collect();
        IntegrationView {
            id: i.id,
            provider: i.provider,
            provider_name: d.name,
            name: i.display_name().to_string(),
            nickname: i.nickname.clone(),
            status: i.status,
            status_label: i.status.label(),
            last_error: i.last_error.clone(),
            fix_hint: i.fix_hint.clone(),
            credentials,
            last_test: i.last_test.clone(),
            created_at: i.created_at,
            updated_at: i.updated_at,
        }
    }
}

pub async fn view(state: &AppState, i: &Integration) -> Result<IntegrationView, ApiError> {
    let stored = if i.status == IntegrationStatus::Disconnected {
        vec![]
    } else {
        state
            .store
            .load_secrets(i.tenant_id, i.id, &state.vault)
            .await?
            .into_keys()
            .collect()
    };
    Ok(IntegrationView::new(i, &stored))
}

pub fn provider(slug: &str) -> Result<&'static ProviderDescriptor, ApiError> {
    ProviderKind::from_slug(slug)
        .map(|k| k.descriptor())
        .ok_or_else(|| {
            let known: Vec<_> = ProviderKind::ALL.iter().map(|k| k.slug()).collect();
            ApiError::field(
                "provider",
                format!(
                    "unknown provider '{slug}'; expected one of: {}",
                    known.join(", ")
                ),
            )
        })
}

fn split(creds: &Credentials) -> (serde_json::Value, BTreeMap<String, SecretString>) {
    let mut settings = serde_json::Map::new();
    let mut secrets = BTreeMap::new();
    for (k, v) in &creds.0 {
        match v {
            CredentialValue::Plain(p) => {
                settings.insert(k.clone(), serde_json::Value::String(p.clone()));
            }
            CredentialValue::Secret(s) => {
                secrets.insert(k.clone(), s.clone());
            }
        }
    }
    (serde_json::Value::Object(settings), secrets)
}

fn nickname(raw: Option<&str>) -> Result<Option<String>, ApiError> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(n) => Ok(Some(parse_name("name", n)?)),
    }
}

fn failure(report: TestReport) -> ApiError {
    let (message, fix_hint) = match &report.connection {
        ConnectionOutcome::AuthFailed { message, fix_hint }
        | ConnectionOutcome::Unreachable { message, fix_hint }
        | ConnectionOutcome::Misconfigured { message, fix_hint } => {
            (message.clone(), fix_hint.clone())
        }
        ConnectionOutcome::Ok => (String::new(), String::new()),
    };
    ApiError::ConnectionFailed {
        message,
        fix_hint,
        report: Box::new(report),
    }
}

async fn run_test(
    state: &AppState,
    descriptor: &ProviderDescriptor,
    creds: &Credentials,
) -> Result<TestReport, ApiError> {
    let connector = match descriptor.availability {
        Availability::NotYetBuilt(note) => {
            return Err(ApiError::ConnectorNotAvailable {
                provider: descriptor.name,
                note,
            });
        }
        Availability::Available => state.providers.connector(descriptor.kind),
    };
    let connector = connector.ok_or(ApiError::ConnectorNotAvailable {
        provider: descriptor.name,
        note: "this build has no connector for it",
    })?;
    Ok(connector.test(creds, state.now()).await)
}

/// Connect: validate, test, and save only when the vendor accepted the credentials.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant, provider = slug))]
pub async fn connect(
    state: &AppState,
    tenant: TenantId,
    slug: &str,
    name: Option<&str>,
    input: &BTreeMap<String, String>,
) -> Result<Integration, ApiError> {
    let descriptor = provider(slug)?;
    if let Availability::NotYetBuilt(note) = descriptor.availability {
        return Err(ApiError::ConnectorNotAvailable {
            provider: descriptor.name,
            note,
        });
    }
    let nickname = nickname(name)?;
    let (creds, _) = validate_credentials(descriptor, input, false)?;
    let report = run_test(state, descriptor, &creds).await?;
    if !report.connected() {
        tracing::info!("connect refused: the vendor did not accept the connection");
        return Err(failure(report));
    }
    let (settings, secrets) = split(&creds);
    let integration = state
        .store
        .create_integration(
            tenant,
            NewIntegration {
                provider: descriptor.kind,
                nickname,
                settings,
                secrets,
                report,
            },
            &state.vault,
            state.now(),
        )
        .await?;
    tracing::info!(integration_id = %integration.id, status = integration.status.as_str(), "integration connected");
    if integration.status == IntegrationStatus::Connected {
        refresh_vocabulary_quietly(state, tenant, integration.id).await;
    }
    if descriptor.kind == mspbridge_domain::catalogue::ProviderKind::Stripe {
        // Where this deployment has a public URL and the admin gave no signing secret,
        // Stripe is asked to post to it; otherwise the billing page says what to add.
        let has_secret = input
            .get("webhook_secret")
            .is_some_and(|s| !s.trim().is_empty());
        if !has_secret {
            crate::billing::register_webhook(state, tenant, integration.id).await;
        }
    }
    Ok(integration)
}

/// Reads the vendor's lists (contact types, company types, company statuses) with the
/// stored credentials and keeps them for the options form and its validation.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant, integration_id = %id))]
pub async fn refresh_vocabulary(
    state: &AppState,
    tenant: TenantId,
    id: IntegrationId,
) -> Result<Vocabulary, ApiError> {
    let i = state.store.get_integration(tenant, id).await?;
    if i.status == IntegrationStatus::Disconnected {
        return Err(ApiError::Conflict(
            "this integration is disconnected: reconnect it with credentials first".into(),
        ));
    }
    let source = open_source(state, &i, None).await?;
    let vocabulary = source
        .vocabulary(state.now())
        .await
        .map_err(vendor(i.provider))?;
    state.store.save_vocabulary(tenant, id, &vocabulary).await?;
    tracing::info!(
        contact_types = vocabulary.contact_types.len(),
        company_types = vocabulary.company_types.len(),
        company_statuses = vocabulary.company_statuses.len(),
        "vendor lists read"
    );
    Ok(vocabulary)
}

fn vendor(kind: ProviderKind) -> impl Fn(SourceError) -> ApiError {
    move |e| ApiError::Vendor {
        provider: kind.descriptor().name,
        message: e.to_string(),
    }
}

/// A sync source over the integration's stored credentials, for an interactive request.
async fn open_source(
    state: &AppState,
    i: &Integration,
    page_size: Option<usize>,
) -> Result<Box<dyn PsaSource>, ApiError> {
    let creds = stored_credentials(state, i).await?;
    match state
        .providers
        .psa_source(i.provider, &creds, RetryPolicy::interactive(), page_size)
        .await
    {
        None => Err(ApiError::ConnectorNotAvailable {
            provider: i.provider.descriptor().name,
            note: "it has no sync connector yet",
        }),
        Some(s) => s.map_err(vendor(i.provider)),
    }
}

/// How many of the vendor's contacts the role preview reads (one page).
pub const PREVIEW_CONTACTS: usize = 25;

/// One contact of the role preview and what auto-import would give it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PreviewRow {
    pub name: String,
    pub email: Option<String>,
    /// The portal company the contact would join; `None` when its company is not imported.
    pub company: Option<String>,
    pub contact_types: Vec<String>,
    pub primary: bool,
    /// The role a new import would get; `None` when it would not be imported.
    pub role: Option<String>,
    /// Which rule decided ("Halo PSA contact type 'IT Contact' (rule 1)"), or why the
    /// contact would not be imported.
    pub reason: String,
    /// Already imported: it keeps the role it has (rules only affect new imports).
    pub already_imported: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RolePreview {
    /// Contacts read from the vendor for the preview (its first page, at most 25).
    pub read: usize,
    pub rows: Vec<PreviewRow>,
}

/// Reads a sample of real contacts (the vendor's first page) and shows the role each
/// would get through the fallback chain with `options` (Company Defaults overrides as
/// saved). Nothing is written.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant, integration_id = %id))]
pub async fn role_preview(
    state: &AppState,
    tenant: TenantId,
    id: IntegrationId,
    options: &mspbridge_domain::sync::SyncOptions,
) -> Result<RolePreview, ApiError> {
    use mspbridge_domain::sync::{RecordType, choose_role};
    let i = state.store.get_integration(tenant, id).await?;
    if i.status == IntegrationStatus::Disconnected {
        return Err(ApiError::Conflict(
            "this integration is disconnected: reconnect it with credentials first".into(),
        ));
    }
    let provider = i.provider.descriptor().name;
    let source = open_source(state, &i, Some(PREVIEW_CONTACTS)).await?;
    let page = source
        .contacts(&mspbridge_providers::source::PageRequest::default())
        .await
        .map_err(vendor(i.provider))?;
    let contacts: Vec<_> = page.records.into_iter().take(PREVIEW_CONTACTS).collect();
    let company_ids: Vec<String> = contacts
        .iter()
        .filter_map(|c| c.company_external_id.clone())
        .collect();
    let companies = state
        .store
        .links(id, RecordType::Companies, &company_ids)
        .await?;
    let contact_ids: Vec<String> = contacts.iter().map(|c| c.external_id.clone()).collect();
    let existing = state
        .store
        .links(id, RecordType::Contacts, &contact_ids)
        .await?;
    let local: Vec<i64> = companies.values().map(|l| l.local_id).collect();
    let overrides = state.store.import_role_overrides(tenant, &local).await?;
    // Only the (at most 25) companies of the sample, not the tenant's whole list.
    let mut names: std::collections::HashMap<i64, String> = std::collections::HashMap::new();
    for &l in &local {
        let c = state
            .store
            .get_company(tenant, mspbridge_domain::CompanyId(l))
            .await?;
        names.insert(l, c.name);
    }
    let roles: std::collections::HashMap<mspbridge_domain::RoleId, String> = state
        .store
        .list_roles(tenant)
        .await?
        .into_iter()
        .map(|r| (r.id, r.name))
        .collect();
    let rows = contacts
        .into_iter()
        .map(|c| {
            let company = c
                .company_external_id
                .as_ref()
                .and_then(|e| companies.get(e));
            let mut row = PreviewRow {
                name: format!("{} {}", c.first_name, c.last_name)
                    .trim()
                    .to_string(),
                email: c.email.clone(),
                company: company.and_then(|l| names.get(&l.local_id).cloned()),
                contact_types: c.types.clone(),
                primary: c.primary,
                role: None,
                reason: String::new(),
                already_imported: existing.contains_key(&c.external_id),
            };
            row.reason = if !c.active {
                format!("inactive in {provider}: not imported")
            } else if c.email.is_none() {
                format!("no email address in {provider}: not imported")
            } else if let Some(l) = company {
                match choose_role(
                    overrides.get(&l.local_id).copied(),
                    &c.types,
                    c.primary,
                    options,
                ) {
                    Some((role, why)) => {
                        row.role = roles.get(&role).cloned();
                        why.explain(provider)
                    }
                    None => "no rule applies and no default role is set: not imported".into(),
                }
            } else {
                "its company is not imported: not imported".into()
            };
            row
        })
        .collect::<Vec<_>>();
    Ok(RolePreview {
        read: rows.len(),
        rows,
    })
}

/// After a connect or a test that reached the vendor: read its lists too. A failure here
/// is logged and does not undo the connect or the test.
async fn refresh_vocabulary_quietly(state: &AppState, tenant: TenantId, id: IntegrationId) {
    // Only PSAs have the lists (contact types, company types and statuses, boards).
    let psa = match state.store.get_integration(tenant, id).await {
        Ok(i) => i.provider.descriptor().category == mspbridge_domain::catalogue::Category::Psa,
        Err(_) => false,
    };
    if !psa {
        return;
    }
    if let Err(e) = refresh_vocabulary(state, tenant, id).await {
        tracing::warn!(error = %e, "could not read the vendor's lists");
    }
}

/// The stored credentials of an integration, for a connector.
pub async fn stored_credentials(
    state: &AppState,
    i: &Integration,
) -> Result<Credentials, ApiError> {
    Ok(mspbridge_store::load_credentials(state.store.as_ref(), &state.vault, i).await?)
}

/// Test: re-run the connection test with the stored credentials and record the result.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant, integration_id = %id))]
pub async fn test(
    state: &AppState,
    tenant: TenantId,
    id: IntegrationId,
) -> Result<Integration, ApiError> {
    let i = state.store.get_integration(tenant, id).await?;
    if i.status == IntegrationStatus::Disconnected {
        return Err(ApiError::Conflict(
            "this integration is disconnected: reconnect it with credentials first".into(),
        ));
    }
    let creds = stored_credentials(state, &i).await?;
    let report = run_test(state, i.provider.descriptor(), &creds).await?;
    let updated = state
        .store
        .record_test(tenant, id, &report, state.now())
        .await?;
    tracing::info!(status = updated.status.as_str(), "integration tested");
    if updated.status == IntegrationStatus::Connected {
        refresh_vocabulary_quietly(state, tenant, id).await;
    }
    Ok(updated)
}

/// Update credentials (or reconnect a disconnected integration). Secret fields left as
/// the mask keep their stored value. New credentials that do not authenticate are not
/// saved; the stored ones stay in force.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant, integration_id = %id))]
pub async fn update_credentials(
    state: &AppState,
    tenant: TenantId,
    id: IntegrationId,
    input: &BTreeMap<String, String>,
) -> Result<Integration, ApiError> {
    let i = state.store.get_integration(tenant, id).await?;
    let descriptor = i.provider.descriptor();
    let stored = state.store.load_secrets(tenant, id, &state.vault).await?;
    let can_keep = i.status != IntegrationStatus::Disconnected && !stored.is_empty();
    let (mut creds, kept) = validate_credentials(descriptor, input, can_keep)?;
    if i.status != IntegrationStatus::Disconnected {
        for field in descriptor.locked_fields() {
            let before = i
                .settings
                .get(*field)
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            let after = match creds.0.get(*field) {
                Some(CredentialValue::Plain(v)) => v.as_str(),
                _ => "",
            };
            if before != after {
                let label = descriptor.field(field).map(|f| f.label).unwrap_or(field);
                return Err(ApiError::field(
                    &format!("credentials.{field}"),
                    format!(
                        "{label} is locked once connected (it names another {} account): keep '{before}', or connect a new integration",
                        descriptor.name
                    ),
                ));
            }
        }
    }
    // A kept secret that is required but was never stored is still missing.
    for field in &kept {
        match stored.get(field) {
            Some(v) => {
                creds
                    .0
                    .insert(field.clone(), CredentialValue::Secret(v.clone()));
            }
            None => {
                if descriptor.field(field).is_some_and(|f| f.required) {
                    let label = descriptor.field(field).map(|f| f.label).unwrap_or("value");
                    return Err(ApiError::field(
                        &format!("credentials.{field}"),
                        format!("{label} is required"),
                    ));
                }
            }
        }
    }
    let report = run_test(state, descriptor, &creds).await?;
    if !report.connected() {
        return Err(failure(report));
    }
    let (settings, mut secrets) = split(&creds);
    let keep: Vec<String> = kept
        .into_iter()
        .filter(|f| stored.contains_key(f))
        .collect();
    for f in &keep {
        secrets.remove(f);
    }
    let updated = state
        .store
        .update_credentials(
            tenant,
            id,
            CredentialUpdate {
                settings,
                new_secrets: secrets,
                keep,
                report,
            },
            &state.vault,
            state.now(),
        )
        .await?;
    // Tenants that failed for the app's secret are tried again with the new one (they
    // wait for the admin otherwise).
    if updated.provider == mspbridge_domain::catalogue::ProviderKind::Microsoft365 {
        let cleared = state
            .store
            .m365_clear_secret_statuses(tenant, id, state.now())
            .await?;
        if cleared > 0 {
            tracing::info!(cleared, "tenants waiting for a new secret are synced again");
        }
    }
    tracing::info!(
        status = updated.status.as_str(),
        "integration credentials updated"
    );
    Ok(updated)
}

#[tracing::instrument(skip_all, fields(tenant_id = %tenant, integration_id = %id))]
pub async fn rename(
    state: &AppState,
    tenant: TenantId,
    id: IntegrationId,
    name: Option<&str>,
) -> Result<Integration, ApiError> {
    let nickname = nickname(name)?;
    Ok(state
        .store
        .rename_integration(tenant, id, nickname.as_deref(), state.now())
        .await?)
}

#[tracing::instrument(skip_all, fields(tenant_id = %tenant, integration_id = %id))]
pub async fn disconnect(
    state: &AppState,
    tenant: TenantId,
    id: IntegrationId,
) -> Result<Integration, ApiError> {
    let i = state
        .store
        .disconnect_integration(tenant, id, state.now())
        .await?;
    tracing::info!("integration disconnected; credentials removed");
    Ok(i)
}

#[tracing::instrument(skip_all, fields(tenant_id = %tenant, integration_id = %id))]
pub async fn delete(state: &AppState, tenant: TenantId, id: IntegrationId) -> Result<(), ApiError> {
    state.store.delete_integration(tenant, id).await?;
    tracing::info!("integration deleted");
    Ok(())
}
