-- Every verified vendor callback, once: the signature's hash is unique per integration, so a
-- replayed delivery is recognised and refused. `outcome` says what the re-read changed.
CREATE TABLE webhook_events (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    integration_id INTEGER NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    signature_hash TEXT NOT NULL,
    kind TEXT NOT NULL,
    action TEXT NOT NULL,
    record_id TEXT NOT NULL,
    outcome TEXT,
    received_at TEXT NOT NULL,
    UNIQUE (integration_id, signature_hash)
);
