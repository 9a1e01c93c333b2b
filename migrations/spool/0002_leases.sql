-- A recipient being delivered is leased until this time (unix seconds), so that
-- it is claimed once; a lease left by a crash runs out and the recipient is tried again.
ALTER TABLE recipient ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0;
