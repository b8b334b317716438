-- Web and email domains each integration holds for its companies (space-separated, already
-- normalised: lower case, no "www.", free-mail domains left out). Company matching uses them
-- as identity keys ("same domain (acme.com)") before it compares names.
ALTER TABLE integration_companies ADD COLUMN domains TEXT NOT NULL DEFAULT '';
