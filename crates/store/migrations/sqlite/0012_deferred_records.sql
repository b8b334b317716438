-- Records a pass skipped because a record they belong to (a contact's company, a ticket's
-- company, contact or assignee) was not synced yet, while that record's own pass had not
-- completed: the pass that deferred them does not advance its watermark, so the next run
-- reads them again. `pass_deferred` counts them during a pass, `deferred` after the last
-- completed one; `last_pass_at` is when a pass of this record type last completed.
ALTER TABLE sync_cursors ADD COLUMN pass_deferred INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sync_cursors ADD COLUMN deferred INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sync_cursors ADD COLUMN last_pass_at TEXT;
UPDATE sync_cursors SET last_pass_at = COALESCE(last_full_pass_at, watermark)
 WHERE pass_run_id IS NULL AND (last_full_pass_at IS NOT NULL OR watermark IS NOT NULL);

-- How often an outbox row was claimed: a create looks in the PSA for what an earlier
-- attempt may have written only when there was an earlier attempt (a lost answer, a
-- crash), never before the first. Rows an earlier version already tried count as claimed.
ALTER TABLE outbox ADD COLUMN claims INTEGER NOT NULL DEFAULT 0;
UPDATE outbox SET claims = 1 WHERE attempts > 0 OR last_error IS NOT NULL OR lease_owner IS NOT NULL;
