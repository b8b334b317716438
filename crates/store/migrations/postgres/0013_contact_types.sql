-- The contact types an imported user has in its PSA, as last synced (one per line), for the
-- company page's user table (spec 2.10: Source, contact type, role and why).
ALTER TABLE company_users ADD COLUMN contact_types TEXT NOT NULL DEFAULT '';
