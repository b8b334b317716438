-- What an RMM said of one device read alone (the device page's Refresh): its state then,
-- its patch summary and hardware facts (JSON of `DeviceRefresh`), when, and why the last
-- refresh failed. The sweep never writes these columns.
ALTER TABLE devices ADD COLUMN refresh TEXT;
ALTER TABLE devices ADD COLUMN refreshed_at TEXT;
ALTER TABLE devices ADD COLUMN refresh_error TEXT;
