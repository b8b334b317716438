//! Graph read as a [`CloudTenantSource`]: one app, any consented tenant.

use std::collections::HashSet;

use async_trait::async_trait;
use mspbridge_domain::m365::{
    ControlProfile, ControlScore, CustomerTenant, ScoreSnapshot, TenantDomain, TenantGroup,
    TenantLicence, TenantOrg, TenantStatus, TenantUser, sku_display_name, status_of_token_error,
};

use super::client::{GraphClient, GraphError};
use super::wire::{self, records};
use crate::cloud::{CloudError, CloudTenantSource, Read, ScoresRead, UsersRead};
use crate::http::urlencode;

/// The user fields read (`$select`): Graph returns few by default.
pub const USER_FIELDS: &str = "id,displayName,givenName,surname,userPrincipalName,mail,otherMails,proxyAddresses,accountEnabled,jobTitle,userType,assignedLicenses";

/// The properties a delta item must carry to be taken as the whole user.
const COMPLETE_USER: [&str; 5] = [
    "displayName",
    "userPrincipalName",
    "mail",
    "accountEnabled",
    "assignedLicenses",
];

pub struct GraphSource {
    pub(crate) client: GraphClient,
}

/// A Graph failure as a tenant's problem where it is one.
pub fn cloud_error(e: GraphError) -> CloudError {
    match e {
        GraphError::Token { codes, message, .. } => {
            let status = status_of_token_error(&codes);
            if status == TenantStatus::Error {
                CloudError::Other(message)
            } else {
                CloudError::Tenant { status, message }
            }
        }
        // Secure Score refused: the consent lacks SecurityEvents.Read.All (the tenant's
        // status says so and Secure Score waits for a new consent).
        GraphError::Forbidden {
            what,
            code,
            message,
        } if what.starts_with("Secure Score") => CloudError::Tenant {
            status: TenantStatus::PermissionMissing,
            message: format!("Microsoft Graph refused {what} (403 {code}): {message}"),
        },
        // Anything else refused names the permission it needs; retried at the next run.
        GraphError::Forbidden {
            what,
            code,
            message,
        } => CloudError::Other(format!(
            "Microsoft Graph refused {what} (403 {code}: {message}); the app's consent in this tenant lacks {}: add it to the app registration and Reconnect",
            match what.as_str() {
                "users" => "User.Read.All",
                "the organization" => "Organization.Read.All",
                _ => "Directory.Read.All",
            }
        )),
        GraphError::Status { status: 410, .. } => CloudError::DeltaExpired(e.to_string()),
        other => CloudError::Other(other.to_string()),
    }
}

fn user(u: wire::User) -> TenantUser {
    let email = u.email();
    let display_name = u
        .display_name
        .clone()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| u.user_principal_name.clone())
        .unwrap_or_else(|| u.id.clone());
    TenantUser {
        external_id: u.id,
        display_name,
        first_name: u.given_name,
        last_name: u.surname,
        user_principal_name: u.user_principal_name,
        email,
        enabled: u.account_enabled.unwrap_or(true),
        job_title: u.job_title,
        user_type: u.user_type,
        sku_ids: u
            .assigned_licenses
            .into_iter()
            .filter_map(|l| l.sku_id)
            .collect(),
    }
}

fn group_kind(g: &wire::Group) -> &'static str {
    if g.group_types
        .iter()
        .any(|t| t.eq_ignore_ascii_case("Unified"))
    {
        "Microsoft 365"
    } else if g.security_enabled == Some(true) && g.mail.is_some() {
        "Mail-enabled security"
    } else if g.security_enabled == Some(true) {
        "Security"
    } else {
        "Distribution"
    }
}

#[async_trait]
impl CloudTenantSource for GraphSource {
    async fn organization(&self, tenant: &str) -> Result<TenantOrg, CloudError> {
        let page = self
            .client
            .collect(
                tenant,
                "/v1.0/organization?$select=id,displayName,verifiedDomains",
                "the organization",
            )
            .await
            .map_err(cloud_error)?;
        let (orgs, rejected) = records::<wire::Organization>(page.values);
        let org = orgs.into_iter().next().ok_or_else(|| {
            CloudError::Other(format!(
                "the organization record could not be read{}",
                rejected
                    .first()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ))
        })?;
        // `/domains` adds unverified domains and whether each is verified; the
        // organization's list is the verified ones.
        let mut domains: Vec<TenantDomain> = match self
            .client
            .collect(tenant, "/v1.0/domains", "domains")
            .await
        {
            Ok(d) => records::<wire::Domain>(d.values)
                .0
                .into_iter()
                .map(|d| TenantDomain {
                    name: d.id.to_lowercase(),
                    is_default: d.is_default,
                    is_initial: d.is_initial,
                    is_verified: d.is_verified,
                })
                .collect(),
            Err(GraphError::Forbidden { .. }) => vec![],
            Err(e) => return Err(cloud_error(e)),
        };
        let known: HashSet<String> = domains.iter().map(|d| d.name.clone()).collect();
        for v in org.verified_domains {
            if let Some(name) = v.name.map(|n| n.to_lowercase())
                && !known.contains(&name)
            {
                domains.push(TenantDomain {
                    name,
                    is_default: v.is_default,
                    is_initial: v.is_initial,
                    is_verified: true,
                });
            }
        }
        domains.sort_by(|a, b| b.is_default.cmp(&a.is_default).then(a.name.cmp(&b.name)));
        Ok(TenantOrg {
            display_name: org.display_name.unwrap_or_else(|| org.id.clone()),
            tenant_id: org.id,
            domains,
        })
    }

    async fn users(&self, tenant: &str, delta_link: Option<&str>) -> Result<UsersRead, CloudError> {
        let first = format!("/v1.0/users/delta?$select={USER_FIELDS}");
        let link = delta_link.unwrap_or(&first);
        let got = self
            .client
            .collect(tenant, link, "users")
            .await
            .map_err(cloud_error)?;
        let mut removed = Vec::new();
        let mut values = Vec::with_capacity(got.values.len());
        let mut rejected = Vec::new();
        for v in got.values {
            if v.get("@removed").is_some() {
                if let Some(id) = v.get("id").and_then(|i| i.as_str()) {
                    removed.push(id.to_string());
                }
            } else if delta_link.is_some() && !COMPLETE_USER.iter().all(|k| v.get(*k).is_some()) {
                // A delta item may carry only the properties that changed: the user is
                // read whole, so nothing it did not send is taken as emptied.
                let Some(id) = v.get("id").and_then(|i| i.as_str()) else {
                    rejected.push("(no id): a changed user without an id".to_string());
                    continue;
                };
                match self
                    .client
                    .get::<serde_json::Value>(
                        tenant,
                        &format!("/v1.0/users/{}?$select={USER_FIELDS}", urlencode(id)),
                        "users",
                    )
                    .await
                {
                    Ok(a) => values.push(a.body),
                    Err(GraphError::Status { status: 404, .. }) => removed.push(id.to_string()),
                    Err(e) => return Err(cloud_error(e)),
                }
            } else {
                values.push(v);
            }
        }
        let (users, more) = records::<wire::User>(values);
        rejected.extend(more);
        Ok(UsersRead {
            users: users.into_iter().map(user).collect(),
            removed,
            rejected,
            full: delta_link.is_none(),
            delta_link: got.delta_link,
        })
    }

    async fn groups(&self, tenant: &str) -> Result<Read<TenantGroup>, CloudError> {
        let got = self
            .client
            .collect(
                tenant,
                "/v1.0/groups?$select=id,displayName,mail,groupTypes,securityEnabled,mailEnabled&$top=999",
                "groups",
            )
            .await
            .map_err(cloud_error)?;
        let (groups, mut rejected) = records::<wire::Group>(got.values);
        if let Some(w) = got.partial {
            rejected.push(format!("partial answer from Microsoft ({w})"));
        }
        Ok(Read {
            records: groups
                .into_iter()
                .map(|g| TenantGroup {
                    kind: group_kind(&g).to_string(),
                    name: g.display_name.clone().unwrap_or_else(|| g.id.clone()),
                    external_id: g.id,
                    mail: g.mail,
                })
                .collect(),
            rejected,
        })
    }

    async fn licences(&self, tenant: &str) -> Result<Read<TenantLicence>, CloudError> {
        let got = self
            .client
            .collect(tenant, "/v1.0/subscribedSkus", "subscribed licences")
            .await
            .map_err(cloud_error)?;
        let (skus, mut rejected) = records::<wire::SubscribedSku>(got.values);
        if let Some(w) = got.partial {
            rejected.push(format!("partial answer from Microsoft ({w})"));
        }
        Ok(Read {
            records: skus
                .into_iter()
                .map(|s| {
                    let part = s.sku_part_number.unwrap_or_else(|| s.sku_id.clone());
                    TenantLicence {
                        name: sku_display_name(&part),
                        part_number: part,
                        sku_id: s.sku_id,
                        status: s.capability_status.unwrap_or_else(|| "Enabled".into()),
                        consumed: s.consumed_units,
                        enabled: s.prepaid_units.enabled,
                        suspended: s.prepaid_units.suspended,
                        warning: s.prepaid_units.warning,
                    }
                })
                .collect(),
            rejected,
        })
    }

    async fn secure_scores(&self, tenant: &str, days: usize) -> Result<ScoresRead, CloudError> {
        let got = self
            .client
            .collect(
                tenant,
                &format!("/v1.0/security/secureScores?$top={}", days.clamp(1, 90)),
                "Secure Score",
            )
            .await
            .map_err(cloud_error)?;
        let (scores, rejected) = records::<wire::SecureScore>(got.values);
        let mut snapshots: Vec<ScoreSnapshot> = scores
            .into_iter()
            .map(|s| ScoreSnapshot {
                external_id: s.id,
                created: s.created,
                current: s.current_score,
                max: s.max_score,
                active_users: s.active_user_count,
                licensed_users: s.licensed_user_count,
                averages: s
                    .averages
                    .into_iter()
                    .filter_map(|a| Some((a.basis?, a.average_score?)))
                    .collect(),
                controls: s
                    .control_scores
                    .into_iter()
                    .filter_map(|c| {
                        Some(ControlScore {
                            name: c.control_name?,
                            category: c.control_category,
                            score: c.score,
                        })
                    })
                    .collect(),
            })
            .collect();
        snapshots.sort_by_key(|s| std::cmp::Reverse(s.created));
        Ok(ScoresRead {
            snapshots,
            rejected,
            partial: got.partial,
        })
    }

    async fn control_profiles(&self, tenant: &str) -> Result<Read<ControlProfile>, CloudError> {
        let got = self
            .client
            .collect(
                tenant,
                "/v1.0/security/secureScoreControlProfiles?$top=999",
                "Secure Score control profiles",
            )
            .await
            .map_err(cloud_error)?;
        let (profiles, rejected) = records::<wire::ControlProfile>(got.values);
        Ok(Read {
            records: profiles
                .into_iter()
                .map(|p| ControlProfile {
                    title: p.title.clone().unwrap_or_else(|| p.id.clone()),
                    external_id: p.id,
                    category: p.control_category,
                    service: p.service,
                    max_score: p.max_score,
                    rank: p.rank,
                    tier: p.tier,
                    remediation: p.remediation,
                    action_url: p.action_url,
                    deprecated: p.deprecated,
                    state: p.state_updates.into_iter().last().and_then(|u| u.state),
                })
                .collect(),
            rejected,
        })
    }

    async fn customer_tenants(
        &self,
        partner_tenant: &str,
    ) -> Result<Vec<CustomerTenant>, CloudError> {
        let got = self
            .client
            .collect(
                partner_tenant,
                "/v1.0/tenantRelationships/delegatedAdminRelationships",
                "delegated admin relationships",
            )
            .await
            .map_err(cloud_error)?;
        let (rels, _) = records::<wire::DelegatedAdminRelationship>(got.values);
        // One row per customer (several relationships each: an active one wins).
        let mut customers: Vec<(wire::RelationshipCustomer, String)> = Vec::new();
        for r in rels {
            let status = r.status.unwrap_or_else(|| "unknown".into());
            match customers
                .iter_mut()
                .find(|(c, _)| c.tenant_id == r.customer.tenant_id)
            {
                Some((_, s)) if status == "active" => *s = status,
                Some(_) => {}
                None => customers.push((r.customer, status)),
            }
        }
        // Names and default domains, eight lookups at a time; a lookup that fails leaves
        // the relationship's name and no domain (logged).
        use futures_util::StreamExt as _;
        let mut out: Vec<CustomerTenant> = futures_util::stream::iter(customers)
            .map(|(customer, status)| async move {
                let info = match self
                    .client
                    .get::<wire::TenantInformation>(
                        partner_tenant,
                        &format!(
                            "/v1.0/tenantRelationships/findTenantInformationByTenantId(tenantId='{}')",
                            urlencode(&customer.tenant_id)
                        ),
                        "tenant information",
                    )
                    .await
                {
                    Ok(a) => Some(a.body),
                    Err(e) => {
                        tracing::warn!(customer = %customer.tenant_id, error = %e, "customer tenant's name and domain could not be read");
                        None
                    }
                };
                CustomerTenant {
                    display_name: info
                        .as_ref()
                        .and_then(|i| i.display_name.clone())
                        .or(customer.display_name)
                        .unwrap_or_else(|| customer.tenant_id.clone()),
                    default_domain: info.and_then(|i| i.default_domain_name),
                    tenant_id: customer.tenant_id,
                    relationship_status: status,
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        out.sort_by(|a, b| {
            a.display_name
                .to_lowercase()
                .cmp(&b.display_name.to_lowercase())
        });
        Ok(out)
    }

    fn requests(&self) -> u64 {
        self.client.requests()
    }

    fn bytes(&self) -> u64 {
        self.client.bytes()
    }
}
