-- Quick Sync (spec 2.7) runs only the tickets pass now and must not move the regular
-- schedule: the time the next full run was due is kept here while a quick run is pending
-- and restored when it releases its lease.
ALTER TABLE sync_schedule ADD COLUMN deferred_next_run_at TEXT;
