-- Company users keep the phone number their PSA contact has.
ALTER TABLE company_users ADD COLUMN phone TEXT;
