-- The integration whose sync created a portal company: only its sync writes the company's
-- name and active flag (other integrations linked to the company do not rename it).
ALTER TABLE companies ADD COLUMN source_integration_id INTEGER;
UPDATE companies SET source_integration_id = (
    SELECT l.integration_id FROM external_links l
    WHERE l.tenant_id = companies.tenant_id AND l.record_kind = 'company' AND l.local_id = companies.id
    ORDER BY l.id LIMIT 1);

-- Every company each integration has, as last read, linked or not (the mapping grid's
-- pickers and Quick Match read it). import_state: 'auto' (the sync may import it),
-- 'unlinked' (an admin unlinked it: the sync does not import it again).
CREATE TABLE integration_companies (
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    integration_id INTEGER NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    external_id TEXT NOT NULL,
    name TEXT NOT NULL,
    active BOOLEAN NOT NULL,
    import_state TEXT NOT NULL DEFAULT 'auto',
    updated_at TEXT NOT NULL,
    PRIMARY KEY (integration_id, external_id)
);
-- The grid's "missing a link" filter counts a company's links.
CREATE INDEX external_links_tenant_local ON external_links (tenant_id, record_kind, local_id);

CREATE INDEX integration_companies_tenant ON integration_companies (tenant_id, integration_id, name);
INSERT INTO integration_companies (tenant_id, integration_id, external_id, name, active, updated_at)
    SELECT l.tenant_id, l.integration_id, l.external_id, c.name, c.active, l.updated_at
    FROM external_links l JOIN companies c ON c.id = l.local_id
    WHERE l.record_kind = 'company';

-- Who linked, unlinked or applied a Quick Match, when, before and after.
CREATE TABLE company_link_audit (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    integration_id INTEGER NOT NULL,
    external_id TEXT NOT NULL,
    action TEXT NOT NULL,
    before_company_id INTEGER,
    after_company_id INTEGER,
    batch TEXT,
    actor TEXT NOT NULL,
    -- the integration company's import state before the change (an undo restores it)
    state_before TEXT,
    at TEXT NOT NULL
);
CREATE INDEX company_link_audit_tenant ON company_link_audit (tenant_id, at);
CREATE INDEX company_link_audit_batch ON company_link_audit (tenant_id, batch);
