-- RMM devices and alerts (Datto RMM, ConnectWise Asio). A device belongs to the portal
-- company its site is linked to (the site's company link, read at query time, so mapping a
-- site moves its devices at once). `import_state`: `staged` (waits for an admin or an
-- auto-sync type), `imported`, `ignored` (one device ignored by hand). A device type an
-- admin ignores hides its staged devices through `device_type_mappings.ignored`, so
-- unticking it brings them back. Devices and alerts gone from the RMM after a complete
-- sweep are kept, stamped `removed_upstream_at` / resolved.
CREATE TABLE device_types (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX device_types_name ON device_types (tenant_id, name);

CREATE TABLE device_type_mappings (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    integration_id INTEGER NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    provider_type TEXT NOT NULL,
    category TEXT NOT NULL DEFAULT '',
    device_type_id INTEGER REFERENCES device_types (id) ON DELETE SET NULL,
    auto_sync BOOLEAN NOT NULL DEFAULT FALSE,
    ignored BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX device_type_mappings_key ON device_type_mappings (integration_id, provider_type, category);

CREATE TABLE devices (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    integration_id INTEGER NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    external_id TEXT NOT NULL,
    site_external_id TEXT,
    hostname TEXT NOT NULL,
    provider_type TEXT NOT NULL DEFAULT '',
    category TEXT NOT NULL DEFAULT '',
    device_class TEXT,
    operating_system TEXT,
    online BOOLEAN,
    last_seen TEXT,
    reboot_required BOOLEAN,
    patch_status TEXT,
    antivirus_status TEXT,
    warranty_date TEXT,
    details TEXT NOT NULL,
    import_state TEXT NOT NULL DEFAULT 'staged',
    device_type_id INTEGER REFERENCES device_types (id) ON DELETE SET NULL,
    imported_at TEXT,
    removed_upstream_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX devices_external ON devices (integration_id, external_id);
CREATE INDEX devices_site ON devices (integration_id, site_external_id);
CREATE INDEX devices_tenant ON devices (tenant_id, import_state);

CREATE TABLE alerts (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    integration_id INTEGER NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    external_id TEXT NOT NULL,
    device_external_id TEXT,
    device_name TEXT,
    site_external_id TEXT,
    priority TEXT NOT NULL,
    priority_rank INTEGER NOT NULL,
    diagnostics TEXT,
    raised_at TEXT,
    resolved BOOLEAN NOT NULL DEFAULT FALSE,
    resolved_at TEXT,
    resolved_by TEXT,
    muted BOOLEAN,
    ticket_number TEXT,
    context_type TEXT,
    context TEXT,
    resolve_requested_at TEXT,
    resolve_error TEXT,
    -- The portal's Resolve waits here for the worker (an outbox in the alert's row): tries so
    -- far and when to try again after a transient failure.
    resolve_attempts INTEGER NOT NULL DEFAULT 0,
    resolve_next_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX alerts_external ON alerts (integration_id, external_id);
CREATE INDEX alerts_open ON alerts (tenant_id, resolved, priority_rank);
CREATE INDEX alerts_resolve_due ON alerts (resolve_next_at) WHERE resolve_next_at IS NOT NULL;
