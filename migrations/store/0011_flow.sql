-- Mail flow per minute (Unix minutes) over the last day, for the
-- dashboard's chart: messages accepted, recipients delivered, deferred and
-- bounced. Rows older than a day are deleted as new ones are written.
CREATE TABLE flow_minute (
    minute INTEGER PRIMARY KEY,
    accepted INTEGER NOT NULL DEFAULT 0,
    delivered INTEGER NOT NULL DEFAULT 0,
    deferred INTEGER NOT NULL DEFAULT 0,
    bounced INTEGER NOT NULL DEFAULT 0
);
