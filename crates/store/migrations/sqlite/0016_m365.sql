-- Microsoft 365 (spec 2.18): one app registration per integration, connected per client
-- company by each tenant's admin consent. `m365_connections` is one consented tenant of
-- one company (a company may have several; a tenant belongs to one company per
-- integration); `status` is the tenant's own (connected, not_consented, secret_expired,
-- permission_missing, …, disconnected), so one tenant's problem never stops the others.
-- `m365_consents` are the consent requests in flight: a signed `state` names one by its
-- nonce; each works once (`used_at`) until it expires; a consent link for the client's
-- admin lasts 7 days and a newer link revokes it. `expected_ms_tenant`: the tenant the
-- request was for (Reconnect, a tenant found through GDAP); consent from another is refused. Synced data hangs off its connection and
-- carries a content hash, so an unchanged re-sync writes nothing. Secure Score keeps one
-- snapshot per day; a partial (206) answer never replaces a complete one.
CREATE TABLE m365_connections (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    integration_id INTEGER NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    company_id INTEGER NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    ms_tenant_id TEXT NOT NULL,
    display_name TEXT,
    default_domain TEXT,
    status TEXT NOT NULL,
    status_detail TEXT,
    connected_at TEXT NOT NULL,
    connected_by TEXT,
    last_synced_at TEXT,
    users_delta_link TEXT,
    scores_synced_at TEXT,
    profiles_synced_at TEXT,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX m365_connections_ms_tenant ON m365_connections (integration_id, ms_tenant_id);
CREATE INDEX m365_connections_company ON m365_connections (tenant_id, company_id);

CREATE TABLE m365_company_settings (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    integration_id INTEGER NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    company_id INTEGER NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    not_applicable BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX m365_company_settings_key ON m365_company_settings (integration_id, company_id);

CREATE TABLE m365_consents (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    integration_id INTEGER NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    company_id INTEGER NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    connection_id INTEGER REFERENCES m365_connections (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    expected_ms_tenant TEXT,
    nonce TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT,
    revoked_at TEXT
);
CREATE UNIQUE INDEX m365_consents_nonce ON m365_consents (nonce);
CREATE INDEX m365_consents_company ON m365_consents (integration_id, company_id, kind);

CREATE TABLE m365_domains (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    connection_id INTEGER NOT NULL REFERENCES m365_connections (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    is_default BOOLEAN NOT NULL,
    is_initial BOOLEAN NOT NULL,
    is_verified BOOLEAN NOT NULL
);
CREATE UNIQUE INDEX m365_domains_key ON m365_domains (connection_id, name);
CREATE INDEX m365_domains_name ON m365_domains (tenant_id, name);

CREATE TABLE m365_users (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    connection_id INTEGER NOT NULL REFERENCES m365_connections (id) ON DELETE CASCADE,
    external_id TEXT NOT NULL,
    display_name TEXT NOT NULL,
    first_name TEXT,
    last_name TEXT,
    upn TEXT,
    email TEXT,
    enabled BOOLEAN NOT NULL,
    job_title TEXT,
    user_type TEXT,
    sku_ids TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    company_user_id INTEGER REFERENCES company_users (id) ON DELETE SET NULL,
    -- The portal user was created from this user (Import Selected), not matched: removed
    -- from the tenant, it is disabled in the portal.
    imported BOOLEAN NOT NULL DEFAULT FALSE,
    removed_at TEXT,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX m365_users_key ON m365_users (connection_id, external_id);
CREATE INDEX m365_users_email ON m365_users (connection_id, email);

CREATE TABLE m365_groups (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    connection_id INTEGER NOT NULL REFERENCES m365_connections (id) ON DELETE CASCADE,
    external_id TEXT NOT NULL,
    name TEXT NOT NULL,
    mail TEXT,
    kind TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX m365_groups_key ON m365_groups (connection_id, external_id);

CREATE TABLE m365_licences (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    connection_id INTEGER NOT NULL REFERENCES m365_connections (id) ON DELETE CASCADE,
    sku_id TEXT NOT NULL,
    part_number TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    consumed INTEGER NOT NULL,
    enabled INTEGER NOT NULL,
    suspended INTEGER NOT NULL,
    warning INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX m365_licences_key ON m365_licences (connection_id, sku_id);

CREATE TABLE m365_scores (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    connection_id INTEGER NOT NULL REFERENCES m365_connections (id) ON DELETE CASCADE,
    day TEXT NOT NULL,
    external_id TEXT NOT NULL,
    created TEXT NOT NULL,
    current_score REAL NOT NULL,
    max_score REAL NOT NULL,
    active_users INTEGER,
    licensed_users INTEGER,
    averages TEXT NOT NULL,
    controls TEXT NOT NULL,
    partial BOOLEAN NOT NULL,
    content_hash TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX m365_scores_day ON m365_scores (connection_id, day);

CREATE TABLE m365_control_profiles (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    connection_id INTEGER NOT NULL REFERENCES m365_connections (id) ON DELETE CASCADE,
    external_id TEXT NOT NULL,
    title TEXT NOT NULL,
    category TEXT,
    service TEXT,
    max_score REAL,
    rank INTEGER,
    tier TEXT,
    remediation TEXT,
    action_url TEXT,
    deprecated BOOLEAN NOT NULL,
    state TEXT,
    content_hash TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX m365_control_profiles_key ON m365_control_profiles (connection_id, external_id);
