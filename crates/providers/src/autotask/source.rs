//! Autotask as a sync source. Every list is a query (`POST /V1.0/{Entity}/query`) with a
//! filter, which Autotask requires (trap 16): `id gt 0` for a full listing, the change
//! stamps for an incremental one (companies `lastActivityDate`; contacts
//! `lastModifiedDate` or `lastActivityDate`). Pages hold up to 500 records
//! (`MaxRecords`), only the fields the sync reads (`IncludeFields`, `id` always among
//! them), and the page token is Autotask's `nextPageUrl` (followed only on the zone's
//! host). Resources are technicians (a full scan: a small table); the API user itself is
//! left out. Company types are the tenant's `companyType` picklist labels; contact types
//! are the contact's groups (`ContactGroupContacts`, one query per page of contacts) or,
//! when configured, one contact user-defined field.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mspbridge_domain::sync::{ExtCompany, ExtContact, ExtTechnician, Vocabulary};
use serde_json::json;

use super::client::{AutotaskClient, AutotaskError};
use super::wire::{
    Company, Contact, ContactGroup, ContactGroupContact, FieldsInfo, QueryPage, Resource, at_time,
};
use crate::source::*;

/// Autotask's largest page (`MaxRecords` 1–500).
pub const MAX_RECORDS: usize = 500;

const COMPANY_FIELDS: &[&str] = &[
    "id",
    "companyName",
    "companyNumber",
    "companyType",
    "isActive",
    "phone",
    "webAddress",
    "lastActivityDate",
];

const CONTACT_FIELDS: &[&str] = &[
    "id",
    "companyID",
    "firstName",
    "lastName",
    "emailAddress",
    "phone",
    "mobilePhone",
    "isActive",
    "primaryContact",
    "lastActivityDate",
    "lastModifiedDate",
];

/// Where contact types come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactTypes {
    /// The contact groups a contact belongs to.
    Groups,
    /// The value of this contact user-defined field.
    Udf(String),
}

pub struct AutotaskSource {
    client: AutotaskClient,
    page_size: usize,
    contact_types: ContactTypes,
    /// `companyType` picklist (value → label), read once per run.
    company_types: tokio::sync::Mutex<Option<HashMap<String, String>>>,
    /// Contact groups (id → name), read once per run.
    groups: tokio::sync::Mutex<Option<HashMap<i64, String>>>,
    /// The contact-type field's picklist (value → label), read once per run.
    udf_labels: tokio::sync::Mutex<Option<HashMap<String, String>>>,
}

fn everything() -> serde_json::Value {
    json!([{ "op": "gt", "field": "id", "value": 0 }])
}

fn email(e: Option<&str>) -> Option<String> {
    e.map(|e| e.trim().to_lowercase())
        .filter(|e| !e.is_empty() && e.contains('@'))
}

fn text(s: Option<&str>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

impl AutotaskSource {
    pub fn new(client: AutotaskClient, contact_types: ContactTypes) -> Self {
        Self {
            client,
            page_size: MAX_RECORDS,
            contact_types,
            company_types: tokio::sync::Mutex::new(None),
            groups: tokio::sync::Mutex::new(None),
            udf_labels: tokio::sync::Mutex::new(None),
        }
    }

    pub fn with_page_size(mut self, n: usize) -> Self {
        self.page_size = n.clamp(1, MAX_RECORDS);
        self
    }

    pub fn client(&self) -> &AutotaskClient {
        &self.client
    }

    fn error(entity: &str, e: AutotaskError) -> SourceError {
        match e {
            AutotaskError::Status { status: 401, .. } => SourceError::Auth(e.vendor_message()),
            AutotaskError::Status { status: 403, .. } => SourceError::NotPermitted {
                message: format!("{entity}: {}", e.vendor_message()),
                setting: super::PERMISSION_SETTING.into(),
            },
            AutotaskError::Refused(m) if m.contains("budget") => SourceError::Budget(m),
            AutotaskError::Validation(m) => {
                SourceError::Unavailable(format!("Autotask refused the {entity} query: {m}"))
            }
            other => SourceError::Unavailable(other.to_string()),
        }
    }

    /// The first page of `entity` for `filter`, or the page `after` names.
    async fn page(
        &self,
        entity: &str,
        filter: serde_json::Value,
        fields: Option<&[&str]>,
        after: Option<&str>,
    ) -> Result<QueryPage, SourceError> {
        let r = match after {
            Some(url) => self.client.follow(url).await,
            None => {
                let mut body = json!({ "MaxRecords": self.page_size, "filter": filter });
                if let Some(f) = fields {
                    body["IncludeFields"] = json!(f);
                }
                self.client.query(entity, &body).await
            }
        };
        r.map_err(|e| Self::error(entity, e))
    }

    async fn company_types(&self) -> Result<HashMap<String, String>, SourceError> {
        let mut cached = self.company_types.lock().await;
        if let Some(m) = cached.as_ref() {
            return Ok(m.clone());
        }
        let info: FieldsInfo = self
            .client
            .get("Companies/entityInformation/fields")
            .await
            .map_err(|e| Self::error("Companies", e))?;
        let m: HashMap<String, String> = info.picklist("companyType").into_iter().collect();
        *cached = Some(m.clone());
        Ok(m)
    }

    /// The picklist of contact user-defined field `name` (empty for a free-text field).
    async fn udf_labels(&self, name: &str) -> Result<HashMap<String, String>, SourceError> {
        let mut cached = self.udf_labels.lock().await;
        if let Some(m) = cached.as_ref() {
            return Ok(m.clone());
        }
        let info: FieldsInfo = self
            .client
            .get("Contacts/entityInformation/userDefinedFields")
            .await
            .map_err(|e| Self::error("Contacts", e))?;
        let m: HashMap<String, String> = info.picklist(name).into_iter().collect();
        *cached = Some(m.clone());
        Ok(m)
    }

    async fn group_names(&self) -> Result<HashMap<i64, String>, SourceError> {
        let mut cached = self.groups.lock().await;
        if let Some(m) = cached.as_ref() {
            return Ok(m.clone());
        }
        let mut names = HashMap::new();
        let mut after: Option<String> = None;
        loop {
            let p = self
                .page("ContactGroups", everything(), None, after.as_deref())
                .await?;
            let (groups, _, _) = read_rows::<ContactGroup>(p.items);
            names.extend(
                groups
                    .into_iter()
                    .filter(|g| g.is_active)
                    .map(|g| (g.id, g.name)),
            );
            match p.page_details.next_page_url {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        *cached = Some(names.clone());
        Ok(names)
    }

    /// The group names of each contact in `ids` (one query, more pages if they are
    /// members of more than 500 groups together).
    async fn groups_of(&self, ids: &[i64]) -> Result<HashMap<i64, Vec<String>>, SourceError> {
        let mut out: HashMap<i64, Vec<String>> = HashMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let names = self.group_names().await?;
        let filter = json!([{ "op": "in", "field": "contactID", "value": ids }]);
        let mut after: Option<String> = None;
        loop {
            let p = self
                .page(
                    "ContactGroupContacts",
                    filter.clone(),
                    None,
                    after.as_deref(),
                )
                .await?;
            let (rows, _, _) = read_rows::<ContactGroupContact>(p.items);
            for r in rows {
                if let Some(n) = names.get(&r.contact_group_id) {
                    out.entry(r.contact_id).or_default().push(n.clone());
                }
            }
            match p.page_details.next_page_url {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        for v in out.values_mut() {
            v.sort();
            v.dedup();
        }
        Ok(out)
    }
}

#[async_trait]
impl CompanySource for AutotaskSource {
    async fn companies(&self, req: &PageRequest) -> Result<SourcePage<ExtCompany>, SourceError> {
        let filter = match req.since {
            None => everything(),
            Some(t) => {
                json!([{ "op": "gt", "field": "lastActivityDate", "value": at_time::format(t) }])
            }
        };
        let p = self
            .page(
                "Companies",
                filter,
                Some(COMPANY_FIELDS),
                req.after.as_deref(),
            )
            .await?;
        let (rows, rejected, _) = read_rows::<Company>(p.items);
        // The picklist is read once per run, and only when there is a company to label.
        let types = if rows.is_empty() {
            HashMap::new()
        } else {
            self.company_types().await?
        };
        let records = rows
            .into_iter()
            .map(|c| ExtCompany {
                external_id: c.id.to_string(),
                name: c.company_name.trim().to_string(),
                identifier: text(c.company_number.as_deref()),
                active: c.is_active,
                deleted: false,
                status: None,
                types: c
                    .company_type
                    .and_then(|t| types.get(&t.to_string()).cloned())
                    .into_iter()
                    .collect(),
                primary_contact_id: None,
                domains: c.web_address.into_iter().collect(),
                updated_at: c.last_activity_date,
            })
            .collect();
        Ok(SourcePage {
            records,
            rejected,
            next: p.page_details.next_page_url,
        })
    }
}

#[async_trait]
impl ContactSource for AutotaskSource {
    async fn contacts(&self, req: &PageRequest) -> Result<SourcePage<ExtContact>, SourceError> {
        let filter = match req.since {
            None => everything(),
            Some(t) => {
                let t = at_time::format(t);
                json!([{ "op": "or", "items": [
                    { "op": "gt", "field": "lastModifiedDate", "value": t },
                    { "op": "gt", "field": "lastActivityDate", "value": t },
                ]}])
            }
        };
        // A user-defined field comes only with the whole record.
        let fields = match self.contact_types {
            ContactTypes::Groups => Some(CONTACT_FIELDS),
            ContactTypes::Udf(_) => None,
        };
        let p = self
            .page("Contacts", filter, fields, req.after.as_deref())
            .await?;
        let (rows, rejected, _) = read_rows::<Contact>(p.items);
        let (mut groups, labels) = match &self.contact_types {
            ContactTypes::Groups => {
                let ids: Vec<i64> = rows.iter().map(|c| c.id).collect();
                (self.groups_of(&ids).await?, HashMap::new())
            }
            ContactTypes::Udf(name) => (HashMap::new(), self.udf_labels(name).await?),
        };
        let records = rows
            .into_iter()
            .map(|c| {
                let types = match &self.contact_types {
                    ContactTypes::Groups => groups.remove(&c.id).unwrap_or_default(),
                    ContactTypes::Udf(name) => c
                        .user_defined_fields
                        .iter()
                        .find(|u| u.name.eq_ignore_ascii_case(name))
                        .and_then(|u| text(u.value.as_deref()))
                        // A picklist field holds the value; the admin knows the label.
                        .map(|v| labels.get(&v).cloned().unwrap_or(v))
                        .into_iter()
                        .collect(),
                };
                ExtContact {
                    external_id: c.id.to_string(),
                    company_external_id: c.company_id.map(|i| i.to_string()),
                    first_name: c.first_name.trim().to_string(),
                    last_name: c.last_name.trim().to_string(),
                    email: email(c.email_address.as_deref()),
                    phone: text(c.phone.as_deref()).or_else(|| text(c.mobile_phone.as_deref())),
                    active: c.is_active != 0,
                    primary: c.primary_contact,
                    types,
                    updated_at: c.last_modified_date.max(c.last_activity_date),
                }
            })
            .collect();
        Ok(SourcePage {
            records,
            rejected,
            next: p.page_details.next_page_url,
        })
    }
}

#[async_trait]
impl TechnicianSource for AutotaskSource {
    /// Resources are read in full every pass (a small table without a change stamp); the
    /// content hash keeps unchanged ones free.
    async fn technicians(
        &self,
        req: &PageRequest,
    ) -> Result<SourcePage<ExtTechnician>, SourceError> {
        let p = self
            .page("Resources", everything(), None, req.after.as_deref())
            .await?;
        let (rows, rejected, _) = read_rows::<Resource>(p.items);
        let me = self.client.username().trim().to_lowercase();
        let records = rows
            .into_iter()
            .filter(|r| r.user_name.as_deref().map(|u| u.trim().to_lowercase()) != Some(me.clone()))
            .map(|r| ExtTechnician {
                external_id: r.id.to_string(),
                identifier: r
                    .user_name
                    .clone()
                    .unwrap_or_else(|| format!("{} {}", r.first_name, r.last_name)),
                first_name: r.first_name,
                last_name: r.last_name,
                email: email(r.email.as_deref()),
                active: r.is_active,
                updated_at: None,
            })
            .collect();
        Ok(SourcePage {
            records,
            rejected,
            next: p.page_details.next_page_url,
        })
    }
}

#[async_trait]
impl VocabularySource for AutotaskSource {
    /// Company types from the tenant's `companyType` picklist; contact types from its
    /// contact groups, or from the configured user-defined field's picklist. Autotask
    /// companies have no statuses beyond active and inactive.
    async fn vocabulary(&self, now: DateTime<Utc>) -> Result<Vocabulary, SourceError> {
        let mut company_types: Vec<String> = self.company_types().await?.into_values().collect();
        let mut contact_types: Vec<String> = match &self.contact_types {
            ContactTypes::Groups => self.group_names().await?.into_values().collect(),
            ContactTypes::Udf(name) => self.udf_labels(name).await?.into_values().collect(),
        };
        for v in [&mut company_types, &mut contact_types] {
            v.sort_by_key(|s| s.to_lowercase());
            v.dedup();
        }
        Ok(Vocabulary {
            contact_types,
            company_types,
            company_statuses: vec![],
            // Ticket picklists are read when Autotask tickets are (not yet).
            tickets: None,
            fetched_at: now,
        })
    }
}

impl PsaSource for AutotaskSource {
    fn requests(&self) -> u64 {
        self.client.requests()
    }
}
