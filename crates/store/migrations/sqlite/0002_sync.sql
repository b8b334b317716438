-- Sync engine: options, schedule with leases, cursors with checkpoints, runs and events.
ALTER TABLE integrations ADD COLUMN options TEXT NOT NULL DEFAULT '{}';
ALTER TABLE external_links ADD COLUMN last_seen_pass INTEGER;

CREATE TABLE sync_schedule (
    integration_id INTEGER PRIMARY KEY REFERENCES integrations (id) ON DELETE CASCADE,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    next_run_at TEXT NOT NULL,
    pending_trigger TEXT NOT NULL,
    lease_owner TEXT,
    lease_until TEXT,
    consecutive_failures INTEGER NOT NULL,
    paused_reason TEXT,
    manual_requested_at TEXT
);
CREATE INDEX sync_schedule_due ON sync_schedule (next_run_at);

CREATE TABLE sync_cursors (
    integration_id INTEGER NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    record_type TEXT NOT NULL,
    watermark TEXT,
    sync_from TEXT,
    last_full_pass_at TEXT,
    pass_run_id INTEGER,
    pass_full BOOLEAN NOT NULL,
    pass_since TEXT,
    pass_after TEXT,
    pass_max_seen TEXT,
    PRIMARY KEY (integration_id, record_type)
);

CREATE TABLE sync_runs (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    integration_id INTEGER NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    trigger TEXT NOT NULL,
    worker TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    result TEXT NOT NULL,
    counts TEXT NOT NULL,
    error TEXT,
    requests INTEGER NOT NULL
);
CREATE INDEX sync_runs_integration ON sync_runs (integration_id, id);

CREATE TABLE sync_events (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    run_id INTEGER NOT NULL REFERENCES sync_runs (id) ON DELETE CASCADE,
    at TEXT NOT NULL,
    level TEXT NOT NULL,
    record_type TEXT,
    external_id TEXT,
    message TEXT NOT NULL
);
CREATE INDEX sync_events_run ON sync_events (run_id, id);
