-- Bodies of more than 1,000 octets that live in the database (not in a
-- segment file) are kept in rows of at most 980 octets, four to a 4 KiB page,
-- instead of in their message's row: a row just over half a page left the
-- rest of its page empty, and the spool took 1.98 times the message bytes
-- for ~2 KiB messages (bench/README.md). WITHOUT ROWID keeps a message's
-- chunks together in key order, with no index beside them.
CREATE TABLE body_chunk (
    message_id TEXT NOT NULL REFERENCES message(id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    data       BLOB NOT NULL,
    PRIMARY KEY (message_id, seq)
) WITHOUT ROWID;
