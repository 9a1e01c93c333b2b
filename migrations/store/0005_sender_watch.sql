-- What the compromised-account watch (src/watch) keeps across restarts.

-- A user's own limit of first-time recipients per day (`postern user limits
-- --new-recipients-per-day`); NULL: [limits] new_recipients_per_day_per_user.
ALTER TABLE account ADD COLUMN new_recipients_per_day INTEGER;
-- Set while the account's outgoing mail is held (accepted, kept, not
-- delivered): when (Unix seconds) and why. Cleared by `postern user release`
-- and by a password change.
ALTER TABLE account ADD COLUMN held_since INTEGER;
ALTER TABLE account ADD COLUMN held_reason TEXT;

-- Whom each user has sent to, and when last: a recipient without a row is a
-- first-time one. Rows older than a year are forgotten.
CREATE TABLE correspondent (
    address   TEXT NOT NULL REFERENCES account(address) ON DELETE CASCADE,
    recipient TEXT NOT NULL,
    last_sent INTEGER NOT NULL,
    PRIMARY KEY (address, recipient)
) WITHOUT ROWID;

-- Each user's sending per clock hour (Unix seconds / 3600), the history a
-- burst is measured against. Kept eight days.
CREATE TABLE sending_hour (
    address        TEXT NOT NULL REFERENCES account(address) ON DELETE CASCADE,
    hour           INTEGER NOT NULL,
    messages       INTEGER NOT NULL DEFAULT 0,
    new_recipients INTEGER NOT NULL DEFAULT 0,
    bounces        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (address, hour)
) WITHOUT ROWID;
