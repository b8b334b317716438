-- Billing (spec 2.19, Stripe): what the MSP's billing account holds for its client
-- companies. A customer is an integration company (mapping grid, Quick Match, links);
-- `billing_customers` keeps what the Billing tab shows of it. Invoices, subscriptions and
-- payments belong to a customer; the company is the one the customer is linked to now,
-- so linking later shows them without a re-read. Every row carries a content hash: an
-- unchanged re-sync writes nothing. `removed_at`: the vendor no longer has it.
-- `billing_accounts`: one row per integration (the incremental watermark, the last full
-- read, the registered webhook endpoint).
CREATE TABLE billing_accounts (
    integration_id INTEGER PRIMARY KEY REFERENCES integrations (id) ON DELETE CASCADE,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    watermark INTEGER,
    last_full_at TEXT,
    webhook_endpoint_id TEXT,
    webhook_url TEXT,
    webhook_status TEXT,
    updated_at TEXT NOT NULL
);

CREATE TABLE billing_customers (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    integration_id INTEGER NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    external_id TEXT NOT NULL,
    name TEXT,
    email TEXT,
    currency TEXT,
    balance INTEGER NOT NULL DEFAULT 0,
    delinquent BOOLEAN NOT NULL DEFAULT FALSE,
    company_hint INTEGER,
    created_remote TEXT,
    content_hash TEXT NOT NULL,
    removed_at TEXT,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX billing_customers_key ON billing_customers (integration_id, external_id);

CREATE TABLE billing_invoices (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    integration_id INTEGER NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    external_id TEXT NOT NULL,
    customer_external_id TEXT NOT NULL,
    number TEXT,
    status TEXT NOT NULL,
    currency TEXT NOT NULL,
    total INTEGER NOT NULL,
    amount_due INTEGER NOT NULL,
    amount_paid INTEGER NOT NULL,
    amount_remaining INTEGER NOT NULL,
    created_remote TEXT,
    due_date TEXT,
    paid_at TEXT,
    hosted_invoice_url TEXT,
    invoice_pdf TEXT,
    subscription_external_id TEXT,
    description TEXT,
    content_hash TEXT NOT NULL,
    removed_at TEXT,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX billing_invoices_key ON billing_invoices (integration_id, external_id);
CREATE INDEX billing_invoices_customer ON billing_invoices (integration_id, customer_external_id, status);

CREATE TABLE billing_subscriptions (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    integration_id INTEGER NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    external_id TEXT NOT NULL,
    customer_external_id TEXT NOT NULL,
    status TEXT NOT NULL,
    currency TEXT NOT NULL,
    items TEXT NOT NULL,
    trial_end TEXT,
    cancel_at_period_end BOOLEAN NOT NULL DEFAULT FALSE,
    canceled_at TEXT,
    period_start TEXT,
    period_end TEXT,
    created_remote TEXT,
    content_hash TEXT NOT NULL,
    removed_at TEXT,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX billing_subscriptions_key ON billing_subscriptions (integration_id, external_id);
CREATE INDEX billing_subscriptions_customer ON billing_subscriptions (integration_id, customer_external_id);

CREATE TABLE billing_payments (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    integration_id INTEGER NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    external_id TEXT NOT NULL,
    customer_external_id TEXT,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    failure TEXT,
    description TEXT,
    receipt_url TEXT,
    created_remote TEXT,
    content_hash TEXT NOT NULL,
    removed_at TEXT,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX billing_payments_key ON billing_payments (integration_id, external_id);
CREATE INDEX billing_payments_customer ON billing_payments (integration_id, customer_external_id, created_remote);

-- Client users (a company's own people) may sign in to see their company's billing: only
-- the hash of the password an admin gave them is kept, and their sessions are their own
-- table, never a staff session.
ALTER TABLE company_users ADD COLUMN password_hash TEXT;
CREATE TABLE client_sessions (
    id_hash TEXT PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    company_user_id INTEGER NOT NULL REFERENCES company_users (id) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
