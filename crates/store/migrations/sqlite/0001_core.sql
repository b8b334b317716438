-- Portal core, auth and integrations (SQLite dialect). Timestamps are RFC 3339 UTC text.
CREATE TABLE tenants (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX tenants_name ON tenants (lower(name));

CREATE TABLE staff_users (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email TEXT NOT NULL,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    password_hash TEXT,
    active BOOLEAN NOT NULL,
    origin TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX staff_users_email ON staff_users (tenant_id, email);
CREATE UNIQUE INDEX staff_users_login ON staff_users (email) WHERE password_hash IS NOT NULL;

CREATE TABLE sessions (
    id_hash TEXT PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    staff_user_id INTEGER NOT NULL REFERENCES staff_users (id) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);

CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at TEXT
);

CREATE TABLE roles (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT NOT NULL
);
CREATE UNIQUE INDEX roles_name ON roles (tenant_id, name);

CREATE TABLE companies (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    active BOOLEAN NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX companies_tenant_name ON companies (tenant_id, name);

CREATE TABLE company_defaults (
    company_id INTEGER PRIMARY KEY REFERENCES companies (id) ON DELETE CASCADE,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    default_import_role_id INTEGER REFERENCES roles (id) ON DELETE SET NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE company_users (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    company_id INTEGER NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    email TEXT,
    first_name TEXT NOT NULL,
    last_name TEXT NOT NULL,
    role_id INTEGER NOT NULL REFERENCES roles (id),
    role_reason TEXT,
    status TEXT NOT NULL,
    origin TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX company_users_company ON company_users (tenant_id, company_id);
CREATE INDEX company_users_email ON company_users (tenant_id, email);

CREATE TABLE tickets (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    company_id INTEGER NOT NULL REFERENCES companies (id),
    summary TEXT NOT NULL,
    description TEXT NOT NULL,
    status TEXT NOT NULL,
    priority TEXT,
    closed BOOLEAN NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX tickets_company ON tickets (tenant_id, company_id);

CREATE TABLE ticket_notes (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    ticket_id INTEGER NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
    body TEXT NOT NULL,
    internal BOOLEAN NOT NULL,
    author TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX ticket_notes_ticket ON ticket_notes (ticket_id);

CREATE TABLE integrations (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    provider TEXT NOT NULL,
    nickname TEXT,
    status TEXT NOT NULL,
    last_error TEXT,
    fix_hint TEXT,
    settings TEXT NOT NULL,
    last_test TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX integrations_tenant ON integrations (tenant_id);

CREATE TABLE integration_secrets (
    integration_id INTEGER NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    field TEXT NOT NULL,
    ciphertext BLOB NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (integration_id, field)
);

CREATE TABLE external_links (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    integration_id INTEGER NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    record_kind TEXT NOT NULL,
    local_id INTEGER NOT NULL,
    external_id TEXT NOT NULL,
    remote_updated_at TEXT,
    content_hash TEXT NOT NULL,
    gone_upstream_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX external_links_external ON external_links (integration_id, record_kind, external_id);
CREATE UNIQUE INDEX external_links_local ON external_links (integration_id, record_kind, local_id);
