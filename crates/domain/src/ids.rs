//! Typed identifiers. Every id is a database row id wrapped in its own type so that
//! a company id can never be passed where a tenant id is expected.

macro_rules! id_type {
    ($($name:ident),* $(,)?) => {$(
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    )*};
}

id_type!(
    TenantId,
    CompanyId,
    CompanyUserId,
    StaffUserId,
    RoleId,
    TicketId,
    TicketNoteId,
    IntegrationId,
    ApiTokenId,
    ExternalLinkId,
);
