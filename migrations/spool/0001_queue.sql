-- One row per accepted message, its body stored once.
CREATE TABLE message (
    id         TEXT PRIMARY KEY NOT NULL,
    created    INTEGER NOT NULL,
    sender     TEXT NOT NULL,
    size       INTEGER NOT NULL,
    auth_user  TEXT,
    smtputf8   INTEGER NOT NULL DEFAULT 0,
    dsn_ret    TEXT,
    dsn_envid  TEXT,
    body       BLOB NOT NULL
);

-- One row per recipient with its own delivery state (OpenSMTPD's per-recipient envelope).
CREATE TABLE recipient (
    message_id   TEXT NOT NULL REFERENCES message(id) ON DELETE CASCADE,
    idx          INTEGER NOT NULL,
    address      TEXT NOT NULL,
    orcpt        TEXT,
    notify       TEXT,
    status       TEXT NOT NULL DEFAULT 'queued',
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL,
    last_reply   TEXT,
    PRIMARY KEY (message_id, idx)
);

CREATE INDEX recipient_due ON recipient (status, next_attempt);
