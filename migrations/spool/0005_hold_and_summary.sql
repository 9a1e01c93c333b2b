-- `postern queue hold` keeps a message's recipients from delivery until
-- `release`. Held recipients are left out of the due index's range, so a
-- claim pass never walks over them.
ALTER TABLE recipient ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
DROP INDEX recipient_due;
CREATE INDEX recipient_due ON recipient (status, held, next_attempt);

-- The recipient's domain (after the last '@', lower case), written with the
-- row, so that `postern queue list --summary` counts by destination from one
-- index instead of parsing every address.
ALTER TABLE recipient ADD COLUMN domain TEXT NOT NULL DEFAULT '';
UPDATE recipient SET domain = lower(replace(address, rtrim(address, replace(address, '@', '')), ''))
WHERE instr(address, '@') > 0;
CREATE INDEX recipient_summary ON recipient (status, domain, held, attempts);

-- The oldest message's age without reading the message table.
CREATE INDEX message_created ON message (created);
