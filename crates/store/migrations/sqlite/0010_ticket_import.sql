-- Tickets imported from a PSA carry what the PSA says about them: board/queue/team, type,
-- the contact and assignee (portal users linked to the vendor's), when they closed, and the
-- status the PSA last had (`psa_status`, the base a portal status change is checked against
-- before it is written). A ticket gone from the PSA is kept, stamped `removed_upstream_at`.
ALTER TABLE tickets ADD COLUMN board TEXT;
ALTER TABLE tickets ADD COLUMN ticket_type TEXT;
ALTER TABLE tickets ADD COLUMN contact_id INTEGER REFERENCES company_users (id) ON DELETE SET NULL;
ALTER TABLE tickets ADD COLUMN assignee_id INTEGER REFERENCES staff_users (id) ON DELETE SET NULL;
ALTER TABLE tickets ADD COLUMN closed_at TEXT;
ALTER TABLE tickets ADD COLUMN psa_status TEXT;
ALTER TABLE tickets ADD COLUMN removed_upstream_at TEXT;
ALTER TABLE ticket_notes ADD COLUMN origin TEXT NOT NULL DEFAULT 'portal';
-- A status write refused as a conflict and retried by an admin is written without the check.
ALTER TABLE outbox ADD COLUMN force_write BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX tickets_updated ON tickets (tenant_id, updated_at);
