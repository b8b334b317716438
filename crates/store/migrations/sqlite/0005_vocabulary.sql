-- The vendor's lists of contact types, company types and company statuses (JSON), as last read.
ALTER TABLE integrations ADD COLUMN vocabulary TEXT;
