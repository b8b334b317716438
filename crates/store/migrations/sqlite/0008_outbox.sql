-- Portal-side ticket changes waiting to be written to the PSA. A row is written in the same
-- transaction as the portal change; a worker claims it (lease), calls the vendor and marks it
-- done together with the external link in one transaction. `marker` is ours and unique: the
-- vendor call first looks for a record carrying it (or, for notes, the same text written since
-- the row was created), so a retry after a lost answer or a crash never writes twice.
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    integration_id INTEGER NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    op TEXT NOT NULL,                 -- create_ticket | add_note | set_status
    ticket_id INTEGER NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
    note_id INTEGER,
    marker TEXT NOT NULL UNIQUE,
    payload TEXT NOT NULL,            -- JSON: what to write
    state TEXT NOT NULL DEFAULT 'pending',   -- pending | done | failed
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    external_id TEXT,
    next_attempt_at TEXT NOT NULL,
    lease_owner TEXT,
    lease_until TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
CREATE INDEX outbox_tenant ON outbox (tenant_id, state, id);
