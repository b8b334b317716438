-- Training (spec 2.19, Bigger Brains): a per-company premium add-on and the library's files.
-- `training_companies`: Premium Training on or off per company, its Team name in BrainStation
-- (progress files are matched to companies by it), its own link-out address when it has one
-- (else the integration's BrainStation URL) and who changed it. `training_courses`: the
-- catalogue as last imported (key: the vendor's course id, else the normalised title).
-- `training_progress`: one learner's state of one course, matched to a portal user by e-mail
-- when one exists. Each carries a content hash: re-importing the same file writes nothing.
-- `training_usage`: premium companies' active users per month (the per-user-per-month charge),
-- and what was written to Stripe for that month (quantity, item, when), so a month is never
-- billed twice.
CREATE TABLE training_companies (
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    company_id INTEGER NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    premium BOOLEAN NOT NULL DEFAULT FALSE,
    team_name TEXT,
    link_url TEXT,
    updated_by TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (company_id)
);
CREATE INDEX training_companies_tenant ON training_companies (tenant_id, premium);

CREATE TABLE training_courses (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    course_key TEXT NOT NULL,
    course_id TEXT,
    title TEXT NOT NULL,
    category TEXT NOT NULL,
    duration_minutes INTEGER NOT NULL,
    level TEXT NOT NULL,
    url TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX training_courses_key ON training_courses (tenant_id, course_key);

CREATE TABLE training_progress (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    company_id INTEGER NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    email TEXT NOT NULL,
    user_id INTEGER REFERENCES company_users (id) ON DELETE SET NULL,
    course_key TEXT NOT NULL,
    course_title TEXT NOT NULL,
    status TEXT NOT NULL,
    score REAL,
    completed_at TEXT,
    content_hash TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX training_progress_key ON training_progress (company_id, email, course_key);
CREATE INDEX training_progress_tenant ON training_progress (tenant_id, company_id);

CREATE TABLE training_usage (
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    company_id INTEGER NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    month TEXT NOT NULL,
    active_users INTEGER NOT NULL,
    written_quantity INTEGER,
    written_item TEXT,
    written_at TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (company_id, month)
);
CREATE INDEX training_usage_tenant ON training_usage (tenant_id, month);
